"""Exact output laws on grids in d = 1 and 2 (THEORY.md 3.6): no Monte Carlo, no noise floor.

A Gaussian-kernel sampler moves a law p through steps x' = m_k(x) + s_k z. The evaluator follows
the law with the sampler's own step function, in segments that end at each step adding noise:

* the current law is a *source* with a closed-form density: the initial mixture, or after a
  noisy step the kernel sum p(y) = sum_j w_j N(y; c_j, s^2 I) (``analytic.quadrature``) whose
  weights w_j = p_src(u_j) h^d are the trapezoid rule over a uniform grid u_j of the source;
* deterministic steps only move the nodes, u_j -> Phi(u_j), carrying their mass;
* a noisy step turns the moved nodes into the next kernel sum, c_j = m_k(Phi(u_j)), s = s_k.

The grid spacing is h = sigma_min / RESOLUTION with sigma_min the smallest width the integrand has
in u: the source's smallest standard deviation and the kernel's width seen from u, s_k /
max|dc/du| (checked, and the segment is redone on a finer grid when violated). The trapezoid
error is then of order exp(-2 pi^2 RESOLUTION^2): round-off level.

The last segment ends with the output: y_j = Phi(u_j) with log |det dPhi/du| tracked exactly
(``convergence.evaluators.flow``), so the output density is known at every y_j:
log p_out(y_j) = log p_src(u_j) - logdet_j. With r_j = log q(y_j) - log p_out(y_j) (q the
reference) every divergence is a trapezoid sum over the source grid, in forms without
cancellation:

    KL(q || p_out) = sum_j w_j [(r_j - 1) expm1(r_j) + r_j]   (= E_p[rho log rho - rho + 1]),
    H^2            = sum_j w_j expm1(r_j / 2)^2 / 2,
    TV             = sum_j w_j |expm1(r_j)| / 2.

TV's integrand has kinks where p_out = q, which would limit the trapezoid rule to second order.
In 1-D the evaluator integrates exactly between the crossing points instead:
TV = 1/2 sum_I |P(I) - Q(I)| over the intervals I between crossings, with P(I) from the source CDF
at the crossing nodes u* and Q(I) from the reference CDF at Phi(u*), so crossing-point errors enter
only at second order. In 2-D, TV = 1/2 int |q(Phi(u)) |det dPhi(u)| - p_src(u)| du by cut-cell
quadrature (``analytic.abs_quadrature``: Gauss-Legendre on cells of one sign, refined cells with the
zero line located where the sign changes; relative error about 1e-10 against a semi-analytic
reference). W2 in 1-D is exact through quantile functions,

    W2^2 = int_0^1 (Q_out(a) - Q_ref(a))^2 da = sum_j w_j (Phi(u_j) - Q_ref(F_src(u_j)))^2,

since Phi is increasing (checked). W2 in 2-D comes from the semi-dual of optimal transport over
windowed Hermite potentials of increasing degree (``analytic.transport``): each degree gives a
lower bound, exact for Gaussian pairs (affine maps); for mixtures the last increase is reported as
the method's uncertainty on top of the refinement.

Every value is computed twice, at RESOLUTION and at a finer REFINED spacing; the finer value is
returned and the difference is its uncertainty.

``memo_grid_metrics`` is ``grid_metrics`` with the propagation remembered within one process
(like ``functools.lru_cache``, keyed by the values of its arguments except the metrics): the
sweep runner hands a worker the tasks that differ only in the metric together, and the tensor
evaluator asks for the same 1-D factor at every d, so one propagation serves them all; a metric
already computed for a remembered propagation is not computed again.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch

from analytic.abs_quadrature import integrate_abs_2d
from analytic.gmm import GaussianMixture
from analytic.processes import Process
from analytic.quadrature import (
    TAIL,
    Grid,
    KernelSum,
    mixture_cdf,
    mixture_quantile,
    uniform_grid,
)
from analytic.transport import semidual_w2sq, w2_from_w2sq
from convergence.evaluators.flow import ReplayLedger, mixture_jacobian_score, push
from convergence.samplers.base import (
    CountingScore,
    DivergenceError,
    SamplerSpec,
    Score,
    Stage,
    context_kwargs,
    plan,
    prepare,
)

Tensor = torch.Tensor

RESOLUTION = 1.5  # nodes per smallest standard deviation of the integrand
REFINED = 2.0
MAX_NODES = {1: 400_000, 2: 1_500_000}
# the output integrands (density ratios, their square roots and logs) vary faster than the
# reference's components: the output grid has this many times more nodes per standard deviation
OUTPUT_RESOLUTION = {1: 3.0, 2: 1.0}
NEGLIGIBLE = 1e-22  # nodes whose source density is below this fraction of the peak are dropped
METRICS = ("kl", "tv", "hellinger", "w2")


@dataclass(frozen=True)
class GridResult:
    """The metrics of one grid propagation: KL, TV, H^2 (so that products can combine them) and
    W2^2 (None when not requested: the 2-D TV and W2 cost more than the rest), the score calls
    per trajectory, the final node count, and the methods' own error bounds beyond the
    quadrature (2-D: the semi-dual W2^2 interval half-width, the box's missing mass for TV)."""

    kl: float
    tv: float | None
    h2: float
    w2sq: float | None
    nfe: int
    nodes: int
    mass: float
    tv_uncertainty: float = 0.0
    w2sq_uncertainty: float = 0.0
    reference_missing: float = 0.0  # 1 - (reference mass on the grid): outside the source's box
    edge_log_ratio: float = 0.0  # max over the nodes of log(q / p_out)
    diameter: float = 0.0  # of the output nodes


# ---- sources: the law at the start of a segment ----------------------------------------------


class _Source:
    """A law with a closed-form density, a bounding box and its smallest standard deviation."""

    def __init__(self, law: GaussianMixture | KernelSum) -> None:
        self.law = law
        if isinstance(law, KernelSum):
            self.lo, self.hi = law.box()
            self.sigma = law.std
        else:
            cov = law.covariance_matrices()
            sd = torch.diagonal(cov, dim1=1, dim2=2).sqrt()
            self.lo = (law.means - TAIL * sd).min(0).values
            self.hi = (law.means + TAIL * sd).max(0).values
            self.sigma = float(torch.linalg.eigvalsh(cov).min().sqrt())

    def density(self, grid: Grid) -> Tensor:
        if isinstance(self.law, KernelSum):
            return self.law.density_on(grid).reshape(-1)
        return torch.exp(self.law.log_prob(grid.points()))

    def log_density(self, u: Tensor) -> Tensor:
        return self.law.log_density(u) if isinstance(self.law, KernelSum) else self.law.log_prob(u)

    def density_at(self, u: Tensor) -> Tensor:
        if isinstance(self.law, KernelSum):
            return self.law.density_at(u)
        return torch.exp(self.law.log_prob(u))

    def cdf(self, u: Tensor, upper: bool = False) -> Tensor:
        if isinstance(self.law, KernelSum):
            return self.law.cdf(u, upper)
        return mixture_cdf(self.law, u, upper)


@dataclass
class _Nodes:
    """Significant grid nodes of a source (positions, densities p_src(u_j), kept among the nodes
    of ``grid``) and where the sampler has moved them (x, multistep state)."""

    u: Tensor
    p: Tensor
    h: float
    x: Tensor
    state: Tensor | None


def _nodes(source: _Source, h: float, d: int) -> _Nodes:
    grid = uniform_grid(source.lo, source.hi, h, MAX_NODES[d])
    p = source.density(grid)
    keep = p > NEGLIGIBLE * p.max()
    u = grid.points()[keep]
    return _Nodes(u, p[keep], h, u, None)


# ---- propagation ------------------------------------------------------------------------------


def _propagate(
    spec: SamplerSpec,
    score: Score,
    process: Process,
    start: GaussianMixture,
    stages: list[Stage],
    opts: dict,
    t_end: float,
    resolution: float,
) -> tuple[_Source, list[Stage], _Nodes, int]:
    """Run all stages on grid nodes; returns the last source, the deterministic stages after it,
    the source's nodes and the score calls per trajectory."""
    d = start.dim
    counted = CountingScore(score)
    source = _Source(start)
    nodes = _nodes(source, source.sigma / resolution, d)
    pending: list[Stage] = []
    for st in stages:
        tr = spec.step(
            counted,
            process,
            nodes.x,
            st.t,
            st.t_next,
            **context_kwargs(spec, st, nodes.state, t_end),
            **opts,
        )
        if not torch.isfinite(tr.mean).all():
            raise DivergenceError(spec.name, st.k + 1, st.t, st.t_next)
        if not (st.noisy and tr.std > 0):
            nodes.x, nodes.state = tr.mean, tr.state
            pending.append(st)
            continue
        if tr.state is not None:
            raise ValueError(
                f"sampler {spec.name!r} carries multistep state through a noisy step; the grid "
                "evaluator cannot follow it"
            )
        stretch = _max_stretch(nodes.u, tr.mean, nodes.h)
        if nodes.h > tr.std / (resolution * stretch):  # kernel too narrow for the grid: refine
            h = min(nodes.h, source.sigma / resolution) * 0.999
            h = min(h, tr.std / (resolution * stretch * 1.05))
            nodes = _nodes(source, h, d)
            mean, std = _replay(spec, counted, process, nodes.x, pending, st, opts, t_end)
        else:
            mean, std = tr.mean, tr.std
        source = _Source(KernelSum(nodes.p * nodes.h**d, mean, std))
        nodes = _nodes(source, source.sigma / resolution, d)
        pending = []
    return source, pending, nodes, counted.calls


def _replay(spec, score, process, x, pending, st, opts, t_end) -> tuple[Tensor, float]:
    """Mean and std of a segment's noisy stage, re-run with its deterministic stages from new
    nodes x (the score calls are not counted again)."""
    calls = score.calls
    state = None
    for s in [*pending, st]:
        tr = spec.step(
            score, process, x, s.t, s.t_next, **context_kwargs(spec, s, state, t_end), **opts
        )
        x, state = tr.mean, tr.state
    score.calls = calls  # a replay does not cost the sampler anything
    return tr.mean, tr.std


def _max_stretch(u: Tensor, c: Tensor, h: float) -> float:
    """max |dc/du| over the nodes, estimated from the largest displacement of near neighbours."""
    if u.shape[0] < 2:
        return 1.0
    if u.shape[1] == 1:
        order = torch.argsort(u[:, 0])
        du = torch.diff(u[order, 0])
        dc = torch.diff(c[order, 0]).abs()
        ok = du < 1.5 * h
        return max(1.0, float((dc[ok] / du[ok]).max())) if bool(ok.any()) else 1.0
    # 2-D: nodes are in row-major grid order among the kept ones; compare consecutive rows
    du = (u[1:] - u[:-1]).norm(dim=1)
    dc = (c[1:] - c[:-1]).norm(dim=1)
    ok = du < 1.5 * h
    return max(1.0, float((dc[ok] / du[ok]).max())) if bool(ok.any()) else 1.0


def _max_gain(jacobian: Tensor) -> float:
    """max over nodes of the largest singular value of dPhi/du, at least 1."""
    return max(1.0, float(torch.linalg.matrix_norm(jacobian, ord=2).max()))


# ---- metrics ---------------------------------------------------------------------------------


def _kl_integrand(r: Tensor) -> Tensor:
    """rho log rho - rho + 1 at rho = e^r, as (r - 1) expm1(r) + r, with its series for small r
    (r^2/2 + r^3/3 + r^4/8 + r^5/30) where the closed form cancels."""
    closed = (r - 1.0) * torch.expm1(r) + r
    series = r * r * (0.5 + r * (1.0 / 3.0 + r * (0.125 + r / 30.0)))
    return torch.where(r.abs() < 1e-3, series, closed)


ROOT_TOL = 1e-6  # crossing points are located to this fraction of the grid spacing
STENCIL = 1e-3  # spacing of the exact stencil around a first guess, in grid spacings
Y_RTOL = 1e-15  # interpolated end points Phi(u*) are accepted at this a-posteriori accuracy


def _interpolant(xs: Tensor, ys: Tensor) -> Callable[[Tensor], Tensor]:
    """The polynomial through the points (xs[i, j], ys[i, j]), j < k, of each row i (Newton's
    divided differences), as a function of one abscissa per row."""
    k = xs.shape[1]
    c = ys.clone()
    for j in range(1, k):
        c[:, j:] = (c[:, j:] - c[:, j - 1 : k - 1]) / (xs[:, j:] - xs[:, : k - j])

    def value(x: Tensor) -> Tensor:
        out = c[:, k - 1]
        for j in range(k - 2, -1, -1):
            out = out * (x - xs[:, j]) + c[:, j]
        return out

    return value


def _polynomial_root(xs: Tensor, ys: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """A root in [lo, hi] (one bracket per row, with a sign change at its ends) of the polynomial
    interpolating each row's points, by bisection on the polynomial (no exact evaluations)."""
    poly = _interpolant(xs, ys)
    s_lo = torch.sign(poly(lo))
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        same = torch.sign(poly(mid)) == s_lo
        lo, hi = torch.where(same, mid, lo), torch.where(same, hi, mid)
    return 0.5 * (lo + hi)


@dataclass
class _Crossings:
    """Brackets [a, b] with r(a), r(b) of opposite signs, the current iterate u* in each, its end
    point Phi(u*) where already known, and whether u* and Phi(u*) are final."""

    a: Tensor
    b: Tensor
    ra: Tensor
    rb: Tensor
    root: Tensor
    y: Tensor
    done: Tensor


def _stencil_crossings(u: Tensor, r: Tensor, idx: Tensor, h: float, exact_r) -> _Crossings:
    """The crossings between nodes idx and idx + 1, from one exact evaluation of a stencil.

    The cubic through the four nodes around a crossing guesses it to about 1e-3 h (measured:
    at most 1.2e-3 h over the samplers and mixtures of the test suite); r and Phi at five points
    STENCIL h apart around the guess (one push for all crossings) bracket it, the quartic through
    the stencil's r places u* there (to round-off in r), and the quartic through the stencil's
    Phi gives Phi(u*), accepted where it differs from the two cubics (stencil without its first
    or last point) by at most Y_RTOL (1 + |Phi|): a difference that enters TV at first order.
    Rows that are not accepted keep a bracket for the regula falsi loop: the stencil interval
    with the sign change, or [u_idx, u_idx+1] where the stencil missed it."""
    a, b, ra, rb = u[idx], u[idx + 1], r[idx], r[idx + 1]
    falsi = (a * rb - b * ra) / (rb - ra)
    if u.numel() < 4:
        return _Crossings(a, b, ra, rb, falsi, falsi, torch.zeros_like(a, dtype=torch.bool))
    first = (idx - 1).clamp(0, u.numel() - 4)  # nodes idx - 1 .. idx + 2, inwards at the ends
    around = first[:, None] + torch.arange(4, device=u.device)
    guess = _polynomial_root(u[around], r[around], a.clone(), b.clone())
    points = guess[:, None] + STENCIL * h * torch.arange(-2, 3, dtype=u.dtype, device=u.device)
    values, ends = exact_r(points.reshape(-1))
    values, ends = values.reshape(points.shape), ends.reshape(points.shape)
    change = torch.sign(values[:, :-1]) * torch.sign(values[:, 1:]) <= 0
    found = change.any(dim=1)
    j = torch.argmax(change.to(torch.int8), dim=1)
    rows = torch.arange(points.shape[0], device=u.device)
    lo, hi, r_lo, r_hi = points[rows, j], points[rows, j + 1], values[rows, j], values[rows, j + 1]
    root = _polynomial_root(points, values, lo.clone(), hi.clone())
    root = torch.where(r_lo == 0, lo, torch.where(r_hi == 0, hi, root))
    y = _interpolant(points, ends)(root)
    spread = torch.maximum(
        (_interpolant(points[:, :4], ends[:, :4])(root) - y).abs(),
        (_interpolant(points[:, 1:], ends[:, 1:])(root) - y).abs(),
    )
    done = found & (spread <= Y_RTOL * (1.0 + y.abs()))
    return _Crossings(
        torch.where(found, lo, a),
        torch.where(found, hi, b),
        torch.where(found, r_lo, ra),
        torch.where(found, r_hi, rb),
        torch.where(found, root, falsi),
        y,
        done,
    )


def _tv_1d(source: _Source, nodes: _Nodes, r: Tensor, w: Tensor, final, reference) -> float:
    """1-D TV = 1/2 sum_I |P(I) - Q(I)| over the intervals I between crossings of p_out and q.

    Crossings u* (r(u*) = 0) are bracketed by sign changes of r on significant nodes and located
    from an exact stencil (``_stencil_crossings``); any the stencil does not settle are solved by
    the Illinois variant of regula falsi on the exact r (each iterate pushed through the final
    deterministic stretch) until known to ROOT_TOL h (about where round-off in r stops improving
    them). P(I) comes from the source CDF at u*, Q(I) from the reference CDF at Phi(u*). A root
    off by e moves TV by about |p' - q'| e^2 / 2, a relative change of order (e / sigma)^2, below
    1e-12 at ROOT_TOL. Usually one push in all: the stencil."""
    u = nodes.u[:, 0]
    significant = w > 1e-12 * w.max()
    s = torch.sign(r)
    idx = torch.nonzero(((s[:-1] * s[1:]) < 0) & significant[:-1] & significant[1:]).reshape(-1)
    if idx.numel() == 0:
        return 0.5 * float((w * torch.expm1(r).abs()).sum())

    def exact_r(v: Tensor) -> tuple[Tensor, Tensor]:
        y, logdet = final(v[:, None])
        return reference.log_prob(y) - (source.log_density(v[:, None]) - logdet), y[:, 0]

    tol = ROOT_TOL * nodes.h
    c = _stencil_crossings(u, r, idx, nodes.h, exact_r)
    a, b, ra, rb, root, ys = c.a, c.b, c.ra, c.rb, c.root, c.y
    side = torch.zeros_like(a)
    for _ in range(0 if bool(c.done.all()) else 60):
        rr, ys = exact_r(root)
        slope = (rb - ra).abs() / (b - a).abs().clamp(min=1e-300)  # |r'| near the root
        if bool(((rr.abs() <= slope * tol) | (rr == 0)).all()):
            break
        left = torch.sign(rr) == torch.sign(ra)
        # Illinois: halve the function value at the end point that stays twice in a row
        rb = torch.where(left & (side > 0), 0.5 * rb, rb)
        ra = torch.where(~left & (side < 0), 0.5 * ra, ra)
        a, ra = torch.where(left, root, a), torch.where(left, rr, ra)
        b, rb = torch.where(left, b, root), torch.where(left, rb, rr)
        side = torch.where(left, 1.0, -1.0)
        if bool(((b - a).abs() < tol).all()):
            break  # the last iterate is an end of a bracket narrower than tol
        root = (a * rb - b * ra) / (rb - ra)
    lower_p, upper_p = source.cdf(root), source.cdf(root, upper=True)
    lower_q, upper_q = mixture_cdf(reference, ys), mixture_cdf(reference, ys, upper=True)
    tv = abs(float(lower_p[0] - lower_q[0])) + abs(float(upper_p[-1] - upper_q[-1]))
    for i in range(root.numel() - 1):
        # each interval's masses from the tail in which they are small (fewer cancelling digits)
        if float(upper_p[i]) < 0.5:
            dp, dq = upper_p[i] - upper_p[i + 1], upper_q[i] - upper_q[i + 1]
        else:
            dp, dq = lower_p[i + 1] - lower_p[i], lower_q[i + 1] - lower_q[i]
        tv += abs(float(dp - dq))
    return 0.5 * tv


def _law_scale(source: _Source) -> float:
    """The smallest scale on which a source law varies: its components' smallest standard deviation
    for a mixture. A kernel sum is the previous law carried by a step and smoothed by the kernel,
    with no cheaper bound than the reference it approximates (the kernel width only bounds it from
    below); there the reference's scale decides and the refinement check reports the rest."""
    return source.sigma if not isinstance(source.law, KernelSum) else math.inf


TV_2D_BUDGET = 2e7  # point-steps: quadrature points x deterministic steps each is pushed through


def _tv_2d(source: _Source, h: float, final, reference, steps: int) -> tuple[float, float]:
    """2-D TV = 1/2 int |f| du over the source box, f(u) = q(Phi(u)) |det dPhi(u)| - p_src(u),
    by cut-cell quadrature (``analytic.abs_quadrature``): Gauss-Legendre cells where f keeps its
    sign, refined cells with the zero line located where it changes; f is evaluated exactly at
    every quadrature point (each point pushed through the final deterministic stretch).

    The cells have the side h given by the caller: the scale on which f varies, i.e. the
    reference's smallest standard deviation pulled back through Phi (not the width of the source's
    kernels, which only the kernel-sum representation needs). Returns (TV, |int f|), the second
    being the mass difference that the box misses (0 when both laws lie inside it).

    Cost: every quadrature point is pushed through the ``steps`` deterministic steps after the
    last noisy one, about 20 points per cell. Stochastic samplers (one deterministic step at the
    end) cost seconds; a deterministic sampler whose map stretches much (few steps) needs small
    cells and all its steps per point, so runs above TV_2D_BUDGET point-steps are refused with a
    pointer to the log-det evaluator (measured: ddim on gmm:d=2,k=3,seed=0, T = 8, 70 s)."""

    def parts(u: Tensor, axes=None, mask=None) -> tuple[Tensor, Tensor]:
        y, logdet = final(u)
        if axes is None:
            src = source.density_at(u)
        else:  # banded evaluation on the tensor grid, then the selected nodes
            src = source.density(Grid(axes, float(axes[0][1] - axes[0][0]))).reshape(mask.shape)[
                mask
            ]
        return torch.exp(reference.log_prob(y) + logdet), src

    def f(u: Tensor, axes=None, mask=None) -> Tensor:
        pulled, src = parts(u, axes, mask)
        return pulled - src

    def envelope(u: Tensor, axes=None, mask=None) -> Tensor:
        pulled, src = parts(u, axes, mask)
        return pulled + src

    lo, hi = source.lo, source.hi
    shape = tuple(int(math.ceil(float(b - a) / h)) for a, b in zip(lo, hi, strict=True))
    cost = 20 * math.prod(shape) * max(steps, 1)  # 4 x 4 Gauss points + 4 corners per cell
    if cost > TV_2D_BUDGET:
        raise ValueError(
            f"2-D TV by cut cells would push about {cost:.2g} point-steps ({shape[0]} x "
            f"{shape[1]} cells through {steps} deterministic steps); use evaluator 'logdet' "
            "(TV with a CI, any d) or fewer steps"
        )
    total_abs, total, _ = integrate_abs_2d(
        f,
        (float(lo[0]), float(lo[1])),
        h,
        shape,
        magnitude=envelope,
        dtype=lo.dtype,
        device=lo.device,
    )
    return 0.5 * total_abs, abs(total)


def _w2sq_1d(source: _Source, nodes: _Nodes, y: Tensor, w: Tensor, reference) -> float:
    u = nodes.u[:, 0]
    lower = source.cdf(u)
    upper = source.cdf(u, upper=True)
    use_upper = upper < lower
    level = torch.where(use_upper, upper, lower)
    qref = mixture_quantile(reference, level, use_upper)
    return float((w * (y[:, 0] - qref) ** 2).sum())


@dataclass
class _Output:
    """One grid propagation up to the output law, before any metric: the last source and its
    nodes, their end points y with log-ratios r_j = log q(y_j) - log p_out(y_j) and weights w_j,
    the final deterministic stretch u -> (Phi(u), log |det dPhi/du|) for TV's exact evaluations,
    and the metrics computed so far (TV and W2 are computed on first request and kept)."""

    spec: SamplerSpec
    source: _Source
    nodes: _Nodes
    y: Tensor
    r: Tensor
    w: Tensor
    nfe: int
    final: Callable[[Tensor], tuple[Tensor, Tensor]]
    reference: GaussianMixture
    steps_after: int  # deterministic steps in the final stretch
    increasing: bool  # 1-D: Phi' > 0 at every node (needed by the quantile form of W2)
    tv_gain: float  # 2-D: Phi's largest stretch where |f| can matter
    computed: dict


def _output(
    spec: SamplerSpec,
    target: GaussianMixture,
    process: Process,
    steps: int,
    *,
    start: GaussianMixture,
    reference: GaussianMixture,
    t_end: float | None = None,
    perturbation=None,
    final_noise: bool = False,
    resolution: float = RESOLUTION,
    **options,
) -> _Output:
    """Propagate the law on grid nodes to the output (module docstring); no metric yet."""
    from convergence.scores import perturbed_score

    d = target.dim
    if d not in (1, 2):
        raise ValueError(f"the grid evaluator needs d = 1 or 2, got d = {d}")
    if spec.step is None:
        raise ValueError(
            f"sampler {spec.name!r} is not a chain of Gaussian kernels; the grid evaluator "
            "cannot follow it (use evaluator 'samples')"
        )
    t_end, opts, schedule = prepare(spec, process, steps, t_end, options)
    stages = plan(schedule, final_noise)
    score = perturbed_score(target, process, perturbation)
    source, pending, nodes, nfe = _propagate(
        spec, score, process, start, stages, opts, t_end, resolution
    )
    jscore = mixture_jacobian_score(target, process, perturbation)
    ledger = ReplayLedger()  # every push below runs the same stages: check each one once

    def final(u: Tensor) -> tuple[Tensor, Tensor]:
        if not pending:
            return u, torch.zeros(u.shape[0], dtype=u.dtype, device=u.device)
        out = push(spec, jscore, process, u, pending, opts, t_end, ledger=ledger)
        return out.y, out.logdet

    pushed = None
    if pending:
        # the output integrand varies on the reference's smallest scale pulled back through Phi:
        # refine the source grid once if its spacing does not resolve that
        pushed = push(spec, jscore, process, nodes.u, pending, opts, t_end, ledger=ledger)
        h = _Source(reference).sigma / (
            OUTPUT_RESOLUTION[d] * resolution * _max_gain(pushed.jacobian)
        )
        if nodes.h > h:
            nodes = _nodes(source, h * 0.999, d)
            pushed = push(spec, jscore, process, nodes.u, pending, opts, t_end, ledger=ledger)
    y = nodes.u if pushed is None else pushed.y
    logdet = torch.zeros_like(nodes.p) if pushed is None else pushed.logdet
    w = nodes.p * nodes.h**d
    r = reference.log_prob(y) - (torch.log(nodes.p) - logdet)
    increasing = pushed is None or d != 1 or bool((pushed.jacobian[:, 0, 0] > 0).all())
    tv_gain = 1.0
    if pushed is not None and d == 2:
        env = w * (1.0 + torch.exp(r))
        tv_gain = _max_gain(pushed.jacobian[env > 1e-10 * env.max()])
    return _Output(
        spec, source, nodes, y, r, w, nfe, final, reference, len(pending), increasing, tv_gain, {}
    )


def _metrics_of(out: _Output, metrics: tuple[str, ...], resolution: float) -> GridResult:
    """The grid result of a propagated output with TV and W2^2 if named in ``metrics``
    (computed on first request, then kept on ``out``); KL and H^2 always."""
    d, w, r, y = out.nodes.u.shape[1], out.w, out.r, out.y
    if "kl" not in out.computed:
        out.computed["kl"] = float((w * _kl_integrand(r)).sum())
        out.computed["h2"] = 0.5 * float((w * torch.expm1(0.5 * r).square()).sum())
    if "tv" in metrics and "tv" not in out.computed:
        if d == 1:
            tv = _tv_1d(out.source, out.nodes, r, w, out.final, out.reference)
            out.computed["tv"] = (tv, 0.0)
        else:
            h_tv = min(_Source(out.reference).sigma / out.tv_gain, _law_scale(out.source))
            out.computed["tv"] = _tv_2d(
                out.source, h_tv / resolution, out.final, out.reference, out.steps_after
            )
    if "w2" in metrics and "w2" not in out.computed:
        if d == 1:
            if not out.increasing:
                raise ValueError(f"sampler {out.spec.name!r}: the output map is not increasing")
            out.computed["w2"] = (_w2sq_1d(out.source, out.nodes, y, w, out.reference), 0.0)
        else:
            semi = semidual_w2sq(y, w, out.reference)
            out.computed["w2"] = (semi.w2sq, semi.uncertainty)
    tv, tv_unc = out.computed["tv"] if "tv" in metrics else (None, 0.0)
    w2sq, w2sq_unc = out.computed["w2"] if "w2" in metrics else (None, 0.0)
    return GridResult(
        out.computed["kl"],
        tv,
        out.computed["h2"],
        w2sq,
        out.nfe,
        int(out.nodes.u.shape[0]),
        float(w.sum()),
        tv_unc,
        w2sq_unc,
        max(0.0, 1.0 - float((w * torch.exp(r)).sum())),
        float(r.max()),
        float((y.max(0).values - y.min(0).values).norm()),
    )


def grid_metrics(
    spec: SamplerSpec,
    target: GaussianMixture,
    process: Process,
    steps: int,
    *,
    metrics: tuple[str, ...] = METRICS,
    resolution: float = RESOLUTION,
    **run,
) -> GridResult:
    """The grid metrics of one sampler run at one resolution (see the module docstring); TV and
    W2 only when named in ``metrics`` (KL and Hellinger come at no extra cost). ``run``: the
    keywords of ``_output`` (start and reference laws, t_end, perturbation, final_noise, sampler
    options)."""
    out = _output(spec, target, process, steps, resolution=resolution, **run)
    return _metrics_of(out, metrics, resolution)


def metric_value(result: GridResult, metric: str) -> float:
    """The named metric of a grid result (Hellinger H = sqrt(H^2), W2 = sqrt(W2^2))."""
    if metric == "kl":
        return result.kl
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; allowed: {', '.join(METRICS)}")
    if metric == "hellinger":
        return math.sqrt(max(result.h2, 0.0))
    value = result.tv if metric == "tv" else result.w2sq
    if value is None:
        raise ValueError(f"metric {metric!r} was not computed (pass it in metrics=)")
    return value if metric == "tv" else math.sqrt(max(value, 0.0))


UNRESOLVED = 1e-3  # reference mass outside the grid above which KL and W2 are not resolved


def method_uncertainty(result: GridResult, metric: str) -> float:
    """The metric's error bound from its method (beyond the grid refinement).

    The grid covers the output law's box; reference mass m outside it (a sampler whose output is
    narrower than the reference) changes TV and H^2 by at most m. For KL(q || p_out) it adds
    about m (1 + r_edge), r_edge the largest log-ratio log(q / p_out) on the grid (the log-ratio
    grows outwards), for W2^2 at most m times the squared diameter of the output nodes; above
    m = UNRESOLVED KL and W2 are reported as unresolved (uncertainty >= value)."""
    m = result.reference_missing
    if metric == "tv":
        return result.tv_uncertainty + m
    if metric == "hellinger":
        return math.sqrt(result.h2 + m) - math.sqrt(result.h2)
    value = metric_value(result, metric)
    if m > UNRESOLVED:
        return max(value, 1.0)
    if metric == "kl":
        return m * (1.0 + max(result.edge_log_ratio, 0.0))
    if result.w2sq is None:
        return 0.0
    w2sq_unc = result.w2sq_uncertainty + m * result.diameter**2
    return w2_from_w2sq(result.w2sq, w2sq_unc)[1]


def refined_pair(run: Callable[[float], GridResult]) -> tuple[GridResult, GridResult]:
    """The same evaluation at the default and the refined resolution."""
    return run(RESOLUTION), run(REFINED)


MEMO_SIZE = 32
MEMO_NODES = 4_000_000  # and at most this many output nodes held in all (2-D grids are large)
# the propagation is pure: a value cache of outputs, keyed without the metrics, so that W2 asked
# after TV reuses the propagation (and TV itself) instead of running the sampler again
_memo: OrderedDict[tuple, _Output] = OrderedDict()


def _law_key(m: GaussianMixture) -> tuple:
    return (
        tuple(m.weights.tolist()),
        tuple(map(tuple, m.means.tolist())),
        tuple(m.covariance_matrices().flatten().tolist()),
    )


def memo_grid_metrics(
    spec: SamplerSpec,
    target: GaussianMixture,
    process: Process,
    steps: int,
    *,
    start: GaussianMixture,
    reference: GaussianMixture,
    perturbation=None,
    metrics: tuple[str, ...] = METRICS,
    resolution: float = RESOLUTION,
    **kwargs,
) -> GridResult:
    """``grid_metrics`` with the propagation remembered for the same argument values (whatever
    the metrics; module docstring); the least recently used output is forgotten first, beyond
    MEMO_SIZE outputs or MEMO_NODES nodes in all."""
    key = (
        spec.name,
        _law_key(target),
        repr(process),
        steps,
        _law_key(start),
        _law_key(reference),
        None if perturbation is None else perturbation.spec,
        resolution,
        tuple(sorted((k, repr(v)) for k, v in kwargs.items())),
    )
    if key in _memo:
        _memo.move_to_end(key)
    else:
        _memo[key] = _output(
            spec,
            target,
            process,
            steps,
            start=start,
            reference=reference,
            perturbation=perturbation,
            resolution=resolution,
            **kwargs,
        )
        while len(_memo) > 1 and (
            len(_memo) > MEMO_SIZE or sum(o.nodes.u.shape[0] for o in _memo.values()) > MEMO_NODES
        ):
            _memo.popitem(last=False)
    return _metrics_of(_memo[key], metrics, resolution)
