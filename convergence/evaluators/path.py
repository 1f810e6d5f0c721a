"""Exact path-space KL and marginal KL of a Gaussian-kernel sampler on a single-Gaussian target.

The Girsanov bounds (Li, Huang, Efimov, Wei, Chi & Chen 2024, arXiv 2403.03852) control the KL
between the *paths* of the true reverse process and of the sampler; data processing then bounds the
KL of the final marginals. For a Gaussian target q_0 = N(m, S) both are closed form on the sampler's
own grid t_0 = 1 > t_1 > ... > t_T = t_end, so the loss of the data-processing step can be measured
(issue 6, claim 3).


True chain. Under x_t = alpha(t) x_0 + sigma(t) xi the marginals are q_t = N(mu_t, C_t),
mu_t = alpha(t) m, C_t = alpha(t)^2 S + sigma(t)^2 I, and the forward transition
from t' = t_{k+1} to t = t_k > t' is x_t = rho x_t' + sqrt(beta) xi with (rho, beta) =
``process.transition(t', t)``. The joint of (x_t', x_t) is Gaussian with Cov(x_t', x_t) = rho C_t',
so the reverse kernel is (Gaussian conditioning)

    q(x' | x) = N(mu_t' + G (x - mu_t), Gamma),   G = rho C_t' C_t^{-1},
    Gamma = C_t' - rho^2 C_t' C_t^{-1} C_t' = beta C_t' C_t^{-1},

the last form (from C_t = rho^2 C_t' + beta I) free of cancellation. The true path restricted to
the grid is the Markov chain q_{t_0} q(x_1 | x_0) ... q(x_T | x_{T-1}).

Sampler chain. Its stages are read off its own step function (``gaussian.read_stage``, the affine
read-off of the exact Gaussian evaluator): stage j maps x to M_j x + c_j + std_j xi. Consecutive
stages between two grid times (e.g. the pre-noise and main stages of ``li-accel-ddpm``, EDM's churn
and Heun stages) compose into one kernel p(x' | x) = N(A x + b, Sigma) with
A = M_J ... M_1 and Sigma = sum_j (M_J ... M_{j+1}) std_j^2 (M_J ... M_{j+1})^T: a full
covariance, not std^2 I, in general. A grid step ends after a stage whose end time is below the
step's start time and at which the next stage begins (``grid_steps``).

Path KL (chain rule of KL for Markov chains):

    KL(Q || P) = KL(q_{t_0} || p_{t_0}) + sum_k E_{x ~ q_{t_k}} KL(q(. | x) || p(. | x)),

and the reverse direction KL(P || Q) likewise with the expectation under the sampler's marginals
p_{t_k} = N(m_k, P_k), m_{k+1} = A m_k + b, P_{k+1} = A P_k A^T + Sigma. Each
term is closed form (``expected_kl``). The marginal KL is KL(q_{t_end} || p_T) by
``gaussian.distance``.

Refusals (ValueError, one line): targets other than one Gaussian; samplers that are not chains of
affine Gaussian kernels; a grid step without noise (deterministic samplers, or the noiseless last
step of DDPM with ``final_noise=False``: the sampler's path law is then singular with respect to
the true one and the path KL is infinite); stages that stay at one time (Langevin steps: no
reverse-time transition to compare with); multistep state (``Transition.state``): the sampler's
kernel then depends on earlier states, not on x alone. Only the deterministic ``li-accel-ddim``
carries state among the registered samplers, so no stochastic sampler is lost by this refusal.

Cost: per grid step one step call per stage on 2 d + 2 points, and a few O(d^3) factorisations;
O(T d^3) in all.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from analytic import gaussian as closed
from analytic.gmm import GaussianMixture
from analytic.processes import Process
from convergence.evaluators import gaussian as exact
from convergence.samplers import SamplerSpec, get_spec
from convergence.samplers.base import CountingScore, Score, Stage, plan, prepare

Tensor = torch.Tensor


@dataclass(frozen=True)
class PathKL:
    """Path-space and marginal KL of one sampler run (float64 values).

    ``path`` = KL(true path || sampler path) = ``initial`` + sum(``per_step``); ``per_step[k]`` =
    E_{x ~ q_{t_k}} KL(q(. | x) || p(. | x)) for the grid step t_k -> t_{k+1} (``times``);
    ``marginal`` = KL(q_{t_end} || p_T); ``reverse`` = KL(sampler path || true path), its
    per-step terms in ``reverse_per_step``; ``initial`` = KL(q_{t_0} || p_{t_0}) (0 for the exact
    initialisation). ``steps`` is the step count asked for; ``per_step`` has one term per grid
    step of the sampler (= ``steps`` for every registered chain).
    """

    path: float
    marginal: float
    steps: int
    per_step: tuple[float, ...]
    reverse: float
    reverse_per_step: tuple[float, ...]
    initial: float
    times: tuple[float, ...]


@dataclass(frozen=True)
class Kernel:
    """Gaussian kernels x -> N(A_k x + b_k, cov_k), one per grid step k: A (T, d, d), b (T, d),
    cov (T, d, d)."""

    A: Tensor
    b: Tensor
    cov: Tensor


@dataclass(frozen=True)
class Chain:
    """A sampler on its grid against the true process: ``times`` t_0 > ... > t_T, the true
    marginals q_{t_k} = N(mean[k], cov[k]) (k = 0..T), the true reverse kernels ``true`` and the
    sampler's kernels ``model`` (one per grid step), and the score calls made reading them."""

    times: tuple[float, ...]
    mean: Tensor
    cov: Tensor
    true: Kernel
    model: Kernel
    nfe: int


def marginals(target: GaussianMixture, process: Process, times) -> tuple[Tensor, Tensor]:
    """Means (n, d) and covariances (n, d, d) of the true marginals q_t at the given times
    (``GaussianMixture.noised``)."""
    laws = [exact.law_of(target.noised(process, t)) for t in times]
    return torch.stack([q.mean for q in laws]), torch.stack([q.full_cov() for q in laws])


def reverse_kernels(process: Process, times, mean: Tensor, cov: Tensor) -> Kernel:
    """True reverse kernels q(x_{t_{k+1}} | x_{t_k}) from the marginals N(mean[k], cov[k]) at
    ``times`` (module docstring): A = rho C' C^{-1}, b = mu' - A mu, cov = beta C' C^{-1}, with
    (rho, beta) = process.transition(t_{k+1}, t_k). Batched over k; O(T d^3)."""
    pairs = [process.transition(t_next, t) for t, t_next in zip(times[:-1], times[1:], strict=True)]
    rho, beta = (
        torch.tensor(v, dtype=cov.dtype, device=cov.device)[:, None, None]
        for v in zip(*pairs, strict=True)
    )
    ratio = torch.linalg.solve(cov[:-1], cov[1:]).mT  # C' C^{-1} (C, C' symmetric)
    ratio = 0.5 * (ratio + ratio.mT)  # symmetric: C and C' are functions of the same S
    A = rho * ratio
    return Kernel(A, mean[1:] - (A @ mean[:-1, :, None])[..., 0], beta * ratio)


def expected_kl(a: Kernel, b: Kernel, mean: Tensor, cov: Tensor) -> Tensor:
    """E_{x ~ N(mean_k, cov_k)} KL(N(A_a x + b_a, S_a) || N(A_b x + b_b, S_b)) for every k,

        = 1/2 [ sum_i (u_i - log1p(u_i)) + |L^{-1} delta|^2 + tr(K cov K^T) ],

    L L^T = S_b, 1 + u_i the eigenvalues of L^{-1} S_a L^{-T} (obtained from S_a - S_b without
    cancellation, as in ``analytic.gaussian.kl``), D = A_a - A_b,
    delta = D mean + b_a - b_b, K = L^{-1} D: the Gaussian KL at equal inputs plus the expected
    Mahalanobis term of the mean difference D x + b_a - b_b under N(mean, cov).
    Shapes: kernels batched over k (T, ...), mean (T, d), cov (T, d, d); returns (T,). O(T d^3).
    """
    D = a.A - b.A
    delta = (D @ mean[..., None])[..., 0] + a.b - b.b
    u, _, w = closed._relative_spectrum(torch.zeros_like(delta), delta, b.cov, a.cov - b.cov)
    K = torch.linalg.solve_triangular(torch.linalg.cholesky(b.cov), D, upper=False)
    spread = ((K @ cov) * K).sum((-2, -1))
    return 0.5 * (closed._u_minus_log1p(u).sum(-1) + (w * w).sum(-1) + spread)


def grid_steps(spec: SamplerSpec, stages: list[Stage]) -> list[list[Stage]]:
    """Stages grouped into grid steps t_k -> t_{k+1} < t_k (module docstring); refuses stages
    that stay at one time and a schedule that does not end below where its last step began."""
    groups: list[list[Stage]] = []
    current: list[Stage] = []
    for i, st in enumerate(stages):
        if st.t_next == st.t:
            raise ValueError(
                f"sampler {spec.name!r} has a stage that stays at t={st.t:.4g} (a Langevin step): "
                "the path KL needs every stage to move along the reverse-time grid"
            )
        current.append(st)
        start = current[0].t
        nxt = stages[i + 1] if i + 1 < len(stages) else None
        if nxt is None or (nxt.t == st.t_next and st.t_next < start):
            if not st.t_next < start:
                raise ValueError(
                    f"sampler {spec.name!r}: its last grid step ends at t={st.t_next:.4g}, not "
                    f"below its start t={start:.4g}"
                )
            groups.append(current)
            current = []
    return groups


def _composed_kernel(spec, score, process, target, group, start, opts, t_end) -> tuple[Tensor, ...]:
    """(A, b, cov) of one grid step's stages composed, each read off by ``gaussian.read_stage``
    around the true marginal at the stage's time (``start``, the law at the step's first time,
    or any probe law: the step is affine)."""
    d = target.dim
    eye = torch.eye(d, dtype=torch.float64)
    A, b, cov = eye, torch.zeros(d, dtype=torch.float64), torch.zeros(d, d, dtype=torch.float64)
    for st in group:
        probe = start if st.t == group[0].t else exact.law_of(target.noised(process, st.t))
        out, M, std, width = exact.read_stage(
            spec, score, process, st, probe.mean, probe.full_cov(), d, 0, opts, t_end
        )
        if width:
            raise ValueError(
                f"sampler {spec.name!r} carries multistep state (Transition.state): its kernel "
                "is not Markov in x alone, so the path KL is not defined here"
            )
        A, b, cov = M @ A, M @ b + out - M @ probe.mean, M @ cov @ M.T
        if st.noisy and std > 0:
            cov = cov + std**2 * eye
    cov = 0.5 * (cov + cov.T)
    if int(torch.linalg.cholesky_ex(cov).info) != 0:
        last = group[-1]
        hint = " (its last step adds no noise: pass final_noise=True)" if last.last else ""
        raise ValueError(
            f"sampler {spec.name!r} moves from t={group[0].t:.4g} to t={last.t_next:.4g} without "
            f"full-rank noise{hint}: its path law is singular and the path KL is infinite"
        )
    return A, b, cov


def chain(
    spec: SamplerSpec,
    score: Score,
    process: Process,
    target: GaussianMixture,
    steps: int,
    *,
    t_end: float | None = None,
    final_noise: bool = True,
    **options,
) -> Chain:
    """The sampler's kernels on its own grid and the true process's on the same grid. ``score``
    drives the sampler (it may be a perturbed score); the true kernels come from ``target``."""
    _check(spec, target)
    t_end, opts, schedule = prepare(spec, process, steps, t_end, options)
    groups = grid_steps(spec, plan(schedule, final_noise))
    times = (groups[0][0].t, *(g[-1].t_next for g in groups))
    mean, cov = marginals(target, process, times)
    counted = CountingScore(score)
    parts = [
        _composed_kernel(spec, counted, process, target, g, exact.GaussianLaw(m, c), opts, t_end)
        for g, m, c in zip(groups, mean[:-1], cov[:-1], strict=True)
    ]
    model = Kernel(*(torch.stack(x) for x in zip(*parts, strict=True)))
    return Chain(times, mean, cov, reverse_kernels(process, times, mean, cov), model, counted.calls)


def _check(spec: SamplerSpec, target) -> None:
    if not isinstance(target, GaussianMixture) or target.n_components != 1:
        parts = getattr(target, "n_components", None)
        got = f"{parts} components" if parts else f"a {type(target).__name__}"
        raise ValueError(
            f"the path KL needs a single-Gaussian target (closed-form reverse kernels), got {got}"
        )
    if spec.step is None or spec.adaptive or not spec.affine:
        raise ValueError(
            f"sampler {spec.name!r} is not a fixed chain of affine Gaussian kernels; the path KL "
            "needs one"
        )


def path_divergences(ch: Chain, start: GaussianMixture, steps: int) -> PathKL:
    """Both path KLs and the marginal KL of a chain started from the law ``start``: the forward
    terms under the true marginals, the reverse ones under the sampler's marginals
    p_{k+1} = N(A m_k + b, A P_k A^T + cov)."""
    q0 = exact.GaussianLaw(ch.mean[0], ch.cov[0])
    p = exact.law_of(start)
    means, covs = [p.mean], [p.full_cov()]
    for A, b, cov in zip(ch.model.A, ch.model.b, ch.model.cov, strict=True):
        nxt = A @ covs[-1] @ A.T + cov
        means.append(A @ means[-1] + b)
        covs.append(0.5 * (nxt + nxt.T))
    forward = expected_kl(ch.true, ch.model, ch.mean[:-1], ch.cov[:-1])
    backward = expected_kl(ch.model, ch.true, torch.stack(means[:-1]), torch.stack(covs[:-1]))
    initial = exact.distance("kl", q0, p).value
    q_end = exact.GaussianLaw(ch.mean[-1], ch.cov[-1])
    return PathKL(
        path=initial + float(forward.sum()),
        marginal=exact.distance("kl", q_end, exact.GaussianLaw(means[-1], covs[-1])).value,
        steps=steps,
        per_step=tuple(forward.tolist()),
        reverse=exact.distance("kl", p, q0).value + float(backward.sum()),
        reverse_per_step=tuple(backward.tolist()),
        initial=initial,
        times=ch.times,
    )


def path_kl(
    sampler: str | SamplerSpec,
    target: GaussianMixture | str,
    process: Process,
    steps: int,
    *,
    t_end: float | None = None,
    init: str = "exact",
    final_noise: bool = True,
    **options,
) -> PathKL:
    """Exact KL(true path || sampler path) on the sampler's grid and KL(q_{t_end} || p_T) for a
    single-Gaussian ``target`` (a GaussianMixture with one component or a spec string such as
    "gaussian:d=2") with its exact score.

    ``init`` "exact" starts from q_{t_0} (the initial term is 0), "prior" from the process prior.
    ``final_noise`` (default True) keeps the noise of the last step: without it DDPM's last
    kernel is deterministic and the path KL infinite (refused). ``options`` are the sampler's.
    """
    from convergence.evaluators import initial_law
    from convergence.targets import parse_target

    spec = get_spec(sampler)
    target = parse_target(target) if isinstance(target, str) else target
    _check(spec, target)
    ch = chain(
        spec,
        target.score_fn(process),
        process,
        target,
        steps,
        t_end=t_end,
        final_noise=final_noise,
        **options,
    )
    return path_divergences(ch, initial_law(target, process, init), steps)


PATH_NOTE = (
    "path KL KL(true path || sampler path) on the sampler's grid, every step noised "
    "(final_noise on); marginal KL of the same chain {marginal:.6g}, reverse path KL {reverse:.6g}"
)


def path_error(spec, target, process, steps, score, start, common):
    """The ``error(..., metric="path-kl")`` estimate of the exact Gaussian evaluator: the path KL
    of the chain with noise at every step (the last one included, whatever ``final_noise`` says:
    without it DDPM's path KL is infinite); uncertainty = the KL round-off floor of
    ``gaussian.roundoff_floor``."""
    from convergence.evaluators import ErrorEstimate

    opts = {k: v for k, v in common.items() if k not in ("t_end", "final_noise", "denoise")}
    ch = chain(spec, score, process, target, steps, t_end=common["t_end"], **opts)
    res = path_divergences(ch, start, steps)
    ref = exact.GaussianLaw(ch.mean[-1], ch.cov[-1])
    floor = exact.roundoff_floor("kl", res.path, ref, steps)
    return ErrorEstimate(
        res.path,
        floor,
        "gaussian",
        "path-kl",
        steps,
        ch.nfe,
        common["t_end"],
        True,
        floor=floor,
        note=PATH_NOTE.format(marginal=res.marginal, reverse=res.reverse),
        reference=f"the true reverse chain on the sampler's grid t = 1 ... {common['t_end']:.6g}",
    )
