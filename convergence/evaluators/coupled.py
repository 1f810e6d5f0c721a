"""Coupled error estimates for samplers whose output law is not known in closed form (any d).

All runs start from the same initial points x_i ~ ``start`` (i < n) and, when the sampler adds
noise, read the same Brownian path per sample (``convergence.noise.BrownianNoise``): the runs with
T_l = T 2^l steps, l = 0..L, are coupled, the increment of a coarse step being the sum of the fine
increments it covers (THEORY.md 4.7; multilevel Monte Carlo, Giles, arXiv 1304.5472). Y_l is the
output of the run with T_l steps, T_ref = T_L = T 2^L (``ref_factor`` = 2^L), q the reference law
(the exact marginal at t_end), h = 1 / T.

**w2** (THEORY.md 4.7, last sentence): any coupling bounds W2 from above and W2 obeys the triangle
inequality, so with delta_l = sqrt(E|Y_l - Y_{l+1}|^2) and Y_l -> Y_inf in L2,

    W2(law Y_0, q) <= sqrt(E|Y_0 - Y_L|^2) + sum_{l >= L} delta_l + W2(law Y_inf, q).

The sum is bounded by its geometric tail: if delta_{l+1} <= rho delta_l for l >= L - 1, it is at
most delta_{L-1} rho / (1 - rho). rho is the measured ratio delta_{L-1} / delta_{L-2} (so
L >= 2), never below 2^-p with p the strong order of the coupling (``strong_order``): the
declared order of the sampler (its noise is additive, so the strong error is O(h^p) like the
weak one, THEORY.md 4.7), but at most 1/2 when the sampler adds noise and its last step does not
(``final_noise=False``, the default): the fine run then adds the noise g sqrt(h / 2) of its
second-to-last step, which the coarse run never sees, so |Y_l - Y_{l+1}| = O(h^{1/2}) although
W2 itself is O(h) [measured, em on gmm:d=4,k=3,seed=0, VP, n = 2000, T = 80..1280: local slopes
of delta_l -1.35, -0.98, -0.97 with final_noise=True; n = 4000 without: -0.79, -0.74, -0.65,
-0.60 up to T = 5120]. Use final_noise=True when the slope of the bound matters. rho >= 1 means
the levels are not converging: the bound is +inf. The last term is NOT bounded: it is 0 when the
score is exact and the initial law is the exact marginal at t = 1 (then law Y_inf = q); with a
perturbed score or the prior as initial law it is the score/initialisation error of the limit.

**weak** (THEORY.md 4.7): f is the vector of closed-form test functions of the reference (see
``ClosedFormFunctions``): the coordinates x_j (``mean``), the second moments x_i x_j, i <= j
(``second``) and Gaussian-kernel mean embeddings exp(-|x - c|^2 / (2 l^2)) at fixed centres c
(``kernel``). The weak error e_T = E f(Y_0) - E_q f is the multilevel sum

    e_T = sum_{l < L} D_l + e_{T_ref},  D_l = E[f(Y_l) - f(Y_{l+1})],  e_{T_ref} = E f(Y_L) - E_q f

The coupled differences D_l have a small variance (strong convergence; with final_noise=False
their relative error grows like sqrt(T / n), see above). The fine term is estimated by
``fine_term``:

The default (``fine_term=None``) is ``"richardson"`` for samplers with a declared order and
``"monte-carlo"`` otherwise.

* ``"monte-carlo"``: mean f(Y_L) - E_q f with E_q f exact; unbiased, but its noise
  sd(f) / sqrt(n) is the floor of the estimate. With all levels on the same samples the sum
  telescopes to mean f(Y_0) - E_q f, so the weak error is never resolved below that floor;
* ``"richardson"``: the Talay-Tubaro extrapolation e_{T_ref} = D_{L-1} / (2^p - 1) (exact when
  e_T = C T^-p, p the declared weak order; THEORY.md 4.7), so every term is a coupled difference:
  no Monte Carlo floor, a model error of higher order in 1 / T_ref.

[measured, em on gmm:d=4,k=3,seed=0, VP, n = 4000, ref_factor 16, T = 20..320: richardson
|e_T|_2 from 0.316 to 0.021 with CI half-widths of 8-9% and slope -0.96 (final_noise=True);
monte-carlo: every value (0.32 .. 0.14) below its floor 0.32.]

Cost: n samples times (T + 2T + ... + 2^L T) < 2 T_ref sampler steps, plus the Brownian path
(about log2 T_ref + odd part of T normal draws per step, which dominates for n <= 10^3).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import torch

from analytic.gmm import GaussianMixture
from analytic.processes import Process
from convergence.evaluators import ErrorEstimate
from convergence.noise import BrownianNoise, RefusedNoise
from convergence.samplers import SamplerSpec, get_spec
from convergence.samplers.base import Score, prepare, run_sampler

Tensor = torch.Tensor

METRICS = ("w2", "weak")
FUNCTIONS = ("mean", "second", "kernel")
FINE_TERMS = ("monte-carlo", "richardson")
DEFAULT_REF_FACTOR = 16
Z95 = NormalDist().inv_cdf(0.975)  # two-sided 95% normal quantile


# ---- closed-form test functions --------------------------------------------------------------


def gaussian_kernel_mean(mixture: GaussianMixture, centres: Tensor, length_scale: float) -> Tensor:
    """E_{X ~ mixture} exp(-|X - c|^2 / (2 l^2)) for each centre c: shape (J,) for centres (J, d).

    Per component N(m, C), with S = C + l^2 I (the kernel is (2 pi l^2)^{d/2} N(c; X, l^2 I), and
    the Gaussian convolution gives E N(c; X, l^2 I) = N(c; m, S)):

        l^d det(S)^{-1/2} exp(-(c - m)^T S^{-1} (c - m) / 2),

    summed with the weights in log space, through Cholesky factors of S (the closed-form mixture
    kernel terms of THEORY.md 4.4). Cost O(K d^3 + K J d^2).
    """
    d = mixture.dim
    centres = centres.to(torch.float64)
    S = mixture.covariance_matrices() + length_scale**2 * torch.eye(d, dtype=torch.float64)
    L = torch.linalg.cholesky(S)  # (K, d, d)
    diff = (centres[None] - mixture.means[:, None]).transpose(1, 2)  # (K, d, J)
    quad = torch.linalg.solve_triangular(L, diff, upper=False).square().sum(1)  # (K, J)
    log_det = 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)  # (K,)
    log_terms = (
        torch.log(mixture.weights)[:, None]
        + d * math.log(length_scale)
        - 0.5 * log_det[:, None]
        - 0.5 * quad
    )
    return torch.logsumexp(log_terms, dim=0).exp()


@dataclass(frozen=True)
class ClosedFormFunctions:
    """A vector f = (f_1, ..., f_m) of test functions with exact expectations under a mixture q.

    Groups, in this order: ``mean`` f = x_j (E_q = sum_k w_k m_k); ``second`` f = x_i x_j, i <= j
    in row-major upper-triangle order (E_q = sum_k w_k (C_k + m_k m_k^T)_{ij}); ``kernel``
    f = exp(-|x - c|^2 / (2 l^2)) per centre c (``gaussian_kernel_mean``).
    """

    names: tuple[str, ...]
    exact: Tensor  # (m,)
    groups: tuple[str, ...]
    centres: Tensor  # (J, d)
    length_scale: float

    def __call__(self, x: Tensor) -> Tensor:
        """f(x) for states x (n, d): shape (n, m), dtype and device of x."""
        parts = []
        if "mean" in self.groups:
            parts.append(x)
        if "second" in self.groups:
            i, j = torch.triu_indices(x.shape[1], x.shape[1], device=x.device)
            parts.append(x[:, i] * x[:, j])
        if "kernel" in self.groups:
            c = self.centres.to(dtype=x.dtype, device=x.device)
            parts.append(torch.exp(-torch.cdist(x, c).square() / (2.0 * self.length_scale**2)))
        return torch.cat(parts, dim=1)


def closed_form_functions(
    reference: GaussianMixture,
    groups: Sequence[str] = FUNCTIONS,
    *,
    centres: Tensor | None = None,
    length_scale: float | None = None,
) -> ClosedFormFunctions:
    """Test functions with their exact expectations under ``reference``.

    Default kernel centres: the component means of the reference and m_q +- s (1, ..., 1) / sqrt(d)
    (m_q its mean, s = sqrt(tr Cov_q / d) its RMS standard deviation); default length scale l = s.
    """
    groups = tuple(groups)
    bad = [g for g in groups if g not in FUNCTIONS]
    if not groups or bad or len(set(groups)) != len(groups):
        raise ValueError(f"functions must be distinct names from {FUNCTIONS}, got {groups!r}")
    groups = tuple(g for g in FUNCTIONS if g in groups)
    d = reference.dim
    mean = reference.mean()
    s = math.sqrt(float(torch.trace(reference.covariance())) / d)
    if centres is None:
        shift = s * torch.ones(d, dtype=torch.float64) / math.sqrt(d)
        centres = torch.cat([reference.means, (mean + shift)[None], (mean - shift)[None]])
    centres = torch.as_tensor(centres, dtype=torch.float64)
    if centres.ndim != 2 or centres.shape[1] != d or not torch.isfinite(centres).all():
        raise ValueError(f"centres must be finite with shape (J, {d}), got {tuple(centres.shape)}")
    length_scale = s if length_scale is None else float(length_scale)
    if not (length_scale > 0.0 and math.isfinite(length_scale)):
        raise ValueError(f"length_scale must be a positive number, got {length_scale!r}")
    names: list[str] = []
    exact: list[Tensor] = []
    if "mean" in groups:
        names += [f"x{j}" for j in range(d)]
        exact.append(mean)
    if "second" in groups:
        i, j = torch.triu_indices(d, d)
        second = reference.covariance() + torch.outer(mean, mean)
        names += [f"x{a}x{b}" for a, b in zip(i.tolist(), j.tolist(), strict=True)]
        exact.append(second[i, j])
    if "kernel" in groups:
        names += [f"k(c{c})" for c in range(len(centres))]
        exact.append(gaussian_kernel_mean(reference, centres, length_scale))
    return ClosedFormFunctions(tuple(names), torch.cat(exact), groups, centres, length_scale)


# ---- coupled runs ----------------------------------------------------------------------------


def _is_uniform(schedule) -> bool:
    widths = [t - t_next for t, t_next in schedule]
    return max(widths) - min(widths) <= 1e-9 * max(abs(w) for w in widths)


def resolve_levels(ref_factor: int | None, levels: int | None) -> int:
    """The number of doublings L from ``ref_factor`` = 2^L (default 16) or ``levels`` = L."""
    if levels is not None:
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
            raise ValueError(f"levels must be an integer >= 1, got {levels!r}")
        if ref_factor is not None and ref_factor != 2**levels:
            raise ValueError(f"ref_factor={ref_factor!r} contradicts levels={levels} (2^levels)")
        return levels
    ref_factor = DEFAULT_REF_FACTOR if ref_factor is None else ref_factor
    if (
        isinstance(ref_factor, bool)
        or not isinstance(ref_factor, int)
        or ref_factor < 2
        or ref_factor & (ref_factor - 1)
    ):
        raise ValueError(f"ref_factor must be a power of two >= 2, got {ref_factor!r}")
    return ref_factor.bit_length() - 1


def check_coupling(
    spec: SamplerSpec,
    process: Process,
    steps: int,
    t_end: float | None,
    options: dict,
    *,
    denoise: bool = False,
) -> bool:
    """Refuse what the coupled evaluator cannot handle; True when Brownian noise applies.

    Refused: adaptive samplers, samplers that are not a chain of Gaussian kernels (their own run
    function), a final denoise (the Tweedie push-forward of a mixture is not a mixture), and
    stochastic samplers on a non-uniform schedule (Brownian-consistent noise needs a uniform one).
    Deterministic samplers may use any schedule: the same initial points couple the runs.
    """
    if spec.adaptive:
        raise ValueError(f"sampler {spec.name!r} is adaptive; the coupled evaluator needs a chain")
    if spec.run is not None:
        raise ValueError(
            f"sampler {spec.name!r} is not a chain of Gaussian kernels; the coupled evaluator "
            "cannot couple its runs"
        )
    _, opts, schedule = prepare(spec, process, steps, t_end, options)
    if spec.output_is_denoised(opts, denoise):
        raise ValueError(
            "the coupled evaluator needs denoise=False: the Tweedie push-forward of a mixture "
            "has no closed-form reference"
        )
    uniform = _is_uniform(schedule)
    if spec.stochastic and not uniform:
        raise ValueError(
            f"sampler {spec.name!r} runs on a non-uniform schedule; the coupled evaluator needs a "
            "uniform schedule (Brownian-consistent noise)"
        )
    return uniform


class _DrawCounter:
    """Wraps a noise source and counts the draws of the runs it serves (local to one call)."""

    def __init__(self, source) -> None:
        self.source, self.draws, self._run = source, 0, None

    def for_schedule(self, schedule) -> _DrawCounter:
        self._run = self.source.for_schedule(schedule)
        return self

    def draw(self, step: int, like: Tensor) -> Tensor:
        self.draws += 1
        return self._run.draw(step, like)


@dataclass(frozen=True)
class Levels:
    """Coupled outputs ``outputs[l]`` (n, d) of the runs with ``steps[l]`` = T 2^l steps; ``nfe``
    of the run with T steps; ``noisy``: the runs drew noise; ``final_noise``: as run."""

    outputs: tuple[Tensor, ...]
    steps: tuple[int, ...]
    nfe: int
    noisy: bool
    final_noise: bool


def run_levels(
    spec: str | SamplerSpec,
    score: Score,
    process: Process,
    x0: Tensor,
    steps: int,
    levels: int,
    *,
    seed: int,
    t_end: float | None = None,
    final_noise: bool = False,
    **options,
) -> Levels:
    """The runs with T 2^l steps, l = 0..levels, from the same initial points x0 (n, d) and on
    one Brownian path per sample (BrownianNoise(seed), shared by all levels). Cost: n (2^(L+1) - 1)
    T sampler steps."""
    spec = get_spec(spec)
    uniform = check_coupling(spec, process, steps, t_end, options)
    refused = RefusedNoise(
        f"sampler {spec.name!r} adds noise on a non-uniform schedule; the coupled evaluator "
        "needs a uniform schedule for Brownian-consistent noise"
    )
    noise = _DrawCounter(BrownianNoise(seed) if uniform else refused)
    outputs, nfe = [], 0
    for level in range(levels + 1):
        res = run_sampler(
            spec,
            score,
            process,
            x0,
            steps << level,
            noise=noise,
            t_end=t_end,
            final_noise=final_noise,
            **options,
        )
        outputs.append(res.x)
        nfe = nfe or res.nfe
    ladder = tuple(steps << level for level in range(levels + 1))
    return Levels(tuple(outputs), ladder, nfe, noise.draws > 0, final_noise)


def strong_order(spec: SamplerSpec, levels: Levels) -> float | None:
    """Order p of the coupled level distances delta_l ~ h^p (module docstring): the declared order,
    at most 1/2 when noise was drawn but not at the last step; None when no order is declared."""
    p = spec.expected_order
    if p is not None and levels.noisy and not levels.final_noise:
        return min(p, 0.5)
    return p


# ---- estimators ------------------------------------------------------------------------------


def delta_method(per_sample: Tensor, fn: Callable[[Tensor], Tensor]) -> tuple[float, float]:
    """fn(mean of the rows of per_sample (n, k)) and the half-width of its 95% confidence interval
    by the delta method: Z95 sqrt(grad^T Cov grad / n), grad = the gradient of fn at the mean
    (autograd), Cov the sample covariance of the rows. Cost O(n k^2)."""
    n = per_sample.shape[0]
    mean = per_sample.mean(0).detach().requires_grad_(True)
    value = fn(mean)
    (grad,) = torch.autograd.grad(value, mean)
    cov = torch.atleast_2d(torch.cov(per_sample.T.detach()))
    var = float(grad @ cov @ grad) / n
    return float(value.detach()), Z95 * math.sqrt(max(var, 0.0))


W2_LEVELS = "the coupled W2 bound needs ref_factor >= 4: two level differences measure the tail"


@dataclass(frozen=True)
class CoupledW2:
    """Synchronous-coupling W2 bound: ``value`` = ``distance`` + ``tail`` (module docstring) and
    the half-width of its 95% CI; ``distance`` = sqrt(mean |Y_0 - Y_L|^2), ``deltas`` the level
    distances delta_l (l < L), ``ratio`` the rho used for the tail."""

    value: float
    half_width: float
    distance: float
    tail: float
    ratio: float
    deltas: tuple[float, ...]


def coupled_w2(outputs: Sequence[Tensor], order: float | None) -> CoupledW2:
    """The W2 upper bound of the module docstring from the coupled outputs Y_0..Y_L, with the
    tail ratio never below 2^-order (``strong_order``; no floor when order is None)."""
    L = len(outputs) - 1
    if L < 2:
        raise ValueError(W2_LEVELS)
    sq = [(outputs[k] - outputs[k + 1]).square().sum(1) for k in range(L)]
    deltas = tuple(math.sqrt(float(s.mean())) for s in sq)
    columns = [(outputs[0] - outputs[L]).square().sum(1), sq[L - 1], sq[L - 2]]
    rho_min = 2.0 ** (-order) if order is not None else 0.0

    def ratio_of(m: Tensor) -> Tensor:
        return torch.clamp(torch.sqrt(m[1] / m[2]), min=rho_min)

    def bound(m: Tensor) -> Tensor:
        rho = ratio_of(m)
        return torch.sqrt(m[0]) + torch.sqrt(m[1]) * rho / (1.0 - rho)

    per_sample = torch.stack(columns, dim=1)
    means = per_sample.mean(0)
    distance = math.sqrt(float(means[0]))
    if float(means[1]) == 0.0:  # the finest levels agree exactly: no tail
        return CoupledW2(distance, 0.0, distance, 0.0, 0.0, deltas)
    if float(means[2]) == 0.0:
        return CoupledW2(math.inf, math.inf, distance, math.inf, math.inf, deltas)
    rho = float(ratio_of(means))
    if rho >= 1.0:
        return CoupledW2(math.inf, math.inf, distance, math.inf, rho, deltas)
    value, half = delta_method(per_sample, bound)
    if distance == 0.0:
        half = 0.0
    return CoupledW2(value, half, distance, value - distance, rho, deltas)


@dataclass(frozen=True)
class WeakErrors:
    """Multilevel weak-error estimates, one column per test function (``names``), each with the
    half-width ``*_half`` of its 95% CI (Z95 sd / sqrt(n) of the per-sample terms).

    ``differences`` (L, m): D_l = mean f(Y_l) - f(Y_{l+1}); ``coupled`` (m,): their sum
    mean f(Y_0) - f(Y_L), the estimate of e_T - e_{T_ref}; ``fine`` (m,): mean f(Y_L) - E_q f;
    ``total`` (m,): coupled + fine = mean f(Y_0) - E_q f; ``extrapolated`` (m,): coupled +
    D_{L-1} / (2^p - 1) (Richardson, None without an order p). ``steps`` = (T_0, ..., T_L).
    """

    names: tuple[str, ...]
    exact: Tensor
    steps: tuple[int, ...]
    differences: Tensor
    differences_half: Tensor
    coupled: Tensor
    coupled_half: Tensor
    fine: Tensor
    fine_half: Tensor
    total: Tensor
    total_half: Tensor
    extrapolated: Tensor | None = None
    extrapolated_half: Tensor | None = None


def _mean_half(x: Tensor) -> tuple[Tensor, Tensor]:
    return x.mean(0), Z95 * x.std(0) / math.sqrt(x.shape[0])


def richardson_terms(F: Sequence[Tensor], order: float) -> Tensor:
    """Per-sample terms (n, m) of the Richardson estimate of e_T from f(Y_0), ..., f(Y_L):
    f(Y_0) - f(Y_L) + (f(Y_{L-1}) - f(Y_L)) / (2^p - 1)."""
    L = len(F) - 1
    return F[0] - F[L] + (F[L - 1] - F[L]) / (2.0**order - 1.0)


def weak_errors(
    outputs: Sequence[Tensor],
    functions: ClosedFormFunctions,
    steps: int,
    order: float | None = None,
) -> WeakErrors:
    """The multilevel decomposition of the module docstring for the coupled outputs Y_0..Y_L of
    the runs with steps 2^l steps; ``order`` p > 0 adds the Richardson estimate."""
    F = [functions(y) for y in outputs]
    L = len(F) - 1
    exact = functions.exact.to(dtype=F[0].dtype, device=F[0].device)
    pairs = [_mean_half(F[k] - F[k + 1]) for k in range(L)]
    coupled, coupled_half = _mean_half(F[0] - F[L])
    fine, fine_half = _mean_half(F[L])
    total, total_half = _mean_half(F[0])
    extra = (None, None) if order is None else _mean_half(richardson_terms(F, order))
    return WeakErrors(
        functions.names,
        exact,
        tuple(steps << k for k in range(L + 1)),
        torch.stack([p[0] for p in pairs]),
        torch.stack([p[1] for p in pairs]),
        coupled,
        coupled_half,
        fine - exact,
        fine_half,
        total - exact,
        total_half,
        *extra,
    )


# ---- the evaluator ---------------------------------------------------------------------------


def coupled_error(
    spec: str | SamplerSpec,
    target: GaussianMixture,
    process: Process,
    steps: int,
    *,
    metric: str,
    score: Score,
    start: GaussianMixture,
    reference: GaussianMixture,
    n: int,
    seed: int,
    t_end: float,
    final_noise: bool = False,
    denoise: bool = False,
    ref_factor: int | None = None,
    levels: int | None = None,
    functions: Sequence[str] = FUNCTIONS,
    centres: Tensor | None = None,
    length_scale: float | None = None,
    fine_term: str | None = None,
    **options,
) -> ErrorEstimate:
    """Coupled estimate (evaluator ``coupled``) of the error of ``spec`` after ``steps`` steps.

    Runs the sampler with score(x, t) from n initial points x ~ ``start`` (seed 2 seed, as the
    samples evaluator) for T 2^l steps, l = 0..L (L = log2 ``ref_factor``, default 16, or
    ``levels``), coupled through the initial points and BrownianNoise(seed). ``reference`` is the
    exact law at t_end (``target`` is only checked for its dimension). Metrics (module docstring):

    * ``w2``: value = the bound sqrt(E|Y_T - Y_ref|^2) + geometric tail on W2(output, reference),
      uncertainty = half-width of its 95% CI (delta method on the per-sample squared distances),
      floor = a round-off estimate eps sqrt(T_ref) rms|Y_ref| (no Monte Carlo floor);
    * ``weak``: value = the Euclidean norm |e_T|_2 of the vector of weak errors of the test
      functions ``functions`` (mean, second, kernel; ``centres``, ``length_scale`` as in
      ``closed_form_functions``), uncertainty = half-width of its 95% CI (delta method on the
      per-sample terms, all Monte Carlo noise included). ``fine_term="monte-carlo"``: floor =
      Z95 sqrt(tr Cov f(Y_ref) / n), the 95% noise level of the uncoupled fine-level term (values
      near it are noise); ``"richardson"``: floor 0 (every term is a coupled difference).

    ``nfe`` is the score-call count of the run with T steps. Refusals (ValueError, one line): an
    unknown metric, n < 2, denoise (or a sampler's own denoised output), adaptive or non-chain
    samplers, noise on a non-uniform schedule, ref_factor not a power of two (w2: not >= 4),
    richardson without a declared order. ``coupled_errors`` gives several metrics from one run.
    """
    if metric not in METRICS:
        raise ValueError(f"the coupled evaluator measures {' or '.join(METRICS)}, not {metric!r}")
    return coupled_errors(
        spec,
        target,
        process,
        steps,
        metrics=(metric,),
        score=score,
        start=start,
        reference=reference,
        n=n,
        seed=seed,
        t_end=t_end,
        final_noise=final_noise,
        denoise=denoise,
        ref_factor=ref_factor,
        levels=levels,
        functions=functions,
        centres=centres,
        length_scale=length_scale,
        fine_term=fine_term,
        **options,
    )[metric]


def coupled_errors(
    spec: str | SamplerSpec,
    target: GaussianMixture,
    process: Process,
    steps: int,
    *,
    metrics: Sequence[str],
    score: Score,
    start: GaussianMixture,
    reference: GaussianMixture,
    n: int,
    seed: int,
    t_end: float,
    final_noise: bool = False,
    denoise: bool = False,
    ref_factor: int | None = None,
    levels: int | None = None,
    functions: Sequence[str] = FUNCTIONS,
    centres: Tensor | None = None,
    length_scale: float | None = None,
    fine_term: str | None = None,
    **options,
) -> dict[str, ErrorEstimate]:
    """``coupled_error`` for several metrics from one set of coupled runs: {metric: estimate}."""
    spec = get_spec(spec)
    metrics = tuple(metrics)
    bad = [m for m in metrics if m not in METRICS]
    if bad or not metrics:
        raise ValueError(f"the coupled evaluator measures {' or '.join(METRICS)}, not {bad!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"the coupled evaluator needs n >= 2 samples, got {n!r}")
    if not start.dim == reference.dim == target.dim:
        raise ValueError(
            f"start, reference and target must share one dimension, got "
            f"{start.dim}, {reference.dim}, {target.dim}"
        )
    if fine_term is None:  # the extrapolation resolves rates; plain Monte Carlo has a floor
        fine_term = "monte-carlo" if spec.expected_order is None else "richardson"
    if fine_term not in FINE_TERMS:
        raise ValueError(f"fine_term must be one of {FINE_TERMS}, got {fine_term!r}")
    if fine_term == "richardson" and spec.expected_order is None:
        raise ValueError(f"fine_term='richardson' needs a declared order; {spec.name!r} has none")
    L = resolve_levels(ref_factor, levels)
    if "w2" in metrics and L < 2:
        raise ValueError(W2_LEVELS)
    check_coupling(spec, process, steps, t_end, options, denoise=denoise)
    fns = closed_form_functions(reference, functions, centres=centres, length_scale=length_scale)
    x0 = start.sample(n, seed=2 * seed)
    ladder = run_levels(
        spec,
        score,
        process,
        x0,
        steps,
        L,
        seed=seed,
        t_end=t_end,
        final_noise=final_noise,
        **options,
    )
    return estimates_from_levels(ladder, metrics, spec, t_end, fns, fine_term=fine_term)


def estimates_from_levels(
    levels: Levels,
    metrics: Sequence[str],
    spec: SamplerSpec,
    t_end: float,
    functions: ClosedFormFunctions,
    *,
    fine_term: str = "monte-carlo",
) -> dict[str, ErrorEstimate]:
    """The ErrorEstimates of ``coupled_error`` from coupled runs (``run_levels``)."""
    outputs, steps = levels.outputs, levels.steps[0]
    L, n = len(outputs) - 1, outputs[0].shape[0]
    T_ref = steps << L
    common = dict(n_samples=n, reference=f"exact marginal at t_end={t_end:.4g}")
    found = {}
    if "w2" in metrics:
        est = coupled_w2(outputs, strong_order(spec, levels))
        rms = math.sqrt(float(outputs[L].square().sum(1).mean()))
        floor = torch.finfo(outputs[L].dtype).eps * math.sqrt(T_ref) * rms
        note = (
            f"upper bound: sqrt(E|Y_T - Y_ref|^2) = {est.distance:.4g} (T_ref = {T_ref}) + "
            f"geometric tail {est.tail:.3g} (ratio {est.ratio:.3g}); assumes the sampler's "
            "T -> inf limit has the reference law (exact score and initial law): a score or "
            "initialisation error of that limit is not bounded"
        )
        found["w2"] = ErrorEstimate(
            est.value,
            est.half_width,
            "coupled",
            "w2",
            steps,
            levels.nfe,
            t_end,
            False,
            floor=floor,
            note=note,
            **common,
        )
    if "weak" in metrics:
        F = [functions(y) for y in outputs]
        exact = functions.exact.to(dtype=F[0].dtype, device=F[0].device)
        if fine_term == "richardson":
            terms, floor = richardson_terms(F, spec.expected_order), 0.0
            how = f"Richardson reference term, order {spec.expected_order:g}"
        else:
            terms = F[0] - exact
            floor = Z95 * math.sqrt(float(torch.atleast_2d(torch.cov(F[L].T)).trace()) / n)
            how = "Monte Carlo reference term (sets the floor)"
        value, half = delta_method(terms, torch.linalg.vector_norm)
        coupled = (F[0] - F[L]).mean(0)
        note = (
            f"|e_T|_2 over {len(functions.names)} test functions ({', '.join(functions.groups)})"
            f", T_ref = {T_ref}, {how}; coupled part |e_T - e_Tref|_2 = "
            f"{float(torch.linalg.vector_norm(coupled)):.4g}"
        )
        found["weak"] = ErrorEstimate(
            value,
            half,
            "coupled",
            "weak",
            steps,
            levels.nfe,
            t_end,
            False,
            floor=floor,
            note=note,
            **common,
        )
    return found
