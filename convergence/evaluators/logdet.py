"""Log-det density tracking for deterministic samplers in any d (evaluator ``logdet``).

A deterministic sampler is a map Phi = Phi_S o ... o Phi_1 of its stages. For initial points
x_i ~ p_0 (``start``, i < n) the output y_i = Phi(x_i) has the exact density (THEORY.md 3.6)

    log p_out(y_i) = log p_0(x_i) - log |det dPhi/dx (x_i)|,

with the Jacobian of the *discrete* map built from the closed-form mixture Hessian
(``convergence.evaluators.flow.push``). With q the reference law (the exact marginal at t_end)
and the density ratio at the output points

    rho_i = q(y_i) / p_out(y_i),     log rho_i = log q(y_i) - log p_out(y_i),

the distances are expectations under the output law p_out, estimated by sample means over the
y_i (THEORY.md 4.6, "density-aware Monte Carlo"), every term written through expm1 of
u = log rho so that it keeps its accuracy when rho is close to 1 (the rounding error of a term,
about 2 eps |u| absolute, stays below the one u inherits from the two log-densities):

* ``kl`` = KL(q || p_out), the package's convention KL(reference || output) (as
  ``convergence.evaluators.gaussian.distance``):

      KL(q || p) = E_p[rho log rho - rho + 1],   term = rho (u + expm1(-u)) >= 0.

  Why not the naive mean of rho log rho (whose expectation is also KL(q || p); likewise -log rho
  for KL(p || q)): with rho = 1 + eps g, E_p g = 0, its term is eps g + O(eps^2) while
  KL = O(eps^2). The Monte Carlo noise of that first-order, zero-mean part, eps sd(g) / sqrt(n),
  swamps the eps^2 signal, and with common random numbers across step counts (the same x_i for
  every T) it is proportional to eps itself, so the fitted slope is pulled towards that of eps,
  about half the true one (THEORY.md 4.6; measured on ``gmm:d=8,k=4,seed=0``, DDIM, n = 10^4,
  T = 20 .. 320: -1.74 with a CI of +-0.67 and unsettled local slopes, against -2.03 +- 0.02).
  Subtracting rho - 1 (mean zero under p exactly, since E_p rho = 1) removes the first-order
  part: the term is eps^2 g^2 / 2 + O(eps^3), non-negative, with a relative error
  ~ sd(g^2) / (E g^2 sqrt(n)) independent of the KL level.
  The other direction KL(p || q) = E_p[rho - 1 - log rho] (the "k3" form of THEORY.md 4.6,
  ``k3_terms``) is second order in the same way, with the same leading term eps^2 g^2 / 2; the
  two differ at O(eps^3) (rho log rho - rho + 1 weights large rho more, rho - 1 - log rho small
  rho). Measured on ``gmm:d=8,k=4,seed=0`` (VP, DDIM, exact start, n = 10^4, T = 20 .. 320):
  relative CI half-widths 0.118, 0.067, 0.052, 0.047, 0.044 for KL(q || p) against 0.067, 0.051,
  0.046, 0.045, 0.043 for k3, i.e. k3 has the smaller variance at coarse T (heavy upper tail of
  rho) and the two agree once the error is small; both fit slope -2 (-2.03 and -1.99). The
  evaluator reports the package's direction KL(q || p).
* ``tv`` = 0.5 E_p |1 - rho|,                  term = 0.5 |expm1(u)|.
* ``hellinger``: H^2 = 1 - BC with BC = E_p sqrt(rho) (the convention of
  ``analytic.gaussian.hellinger``), estimated in the second-order form
  H^2 = 0.5 E_p (1 - sqrt(rho))^2 (equal to 1 - E_p sqrt(rho) because E_p rho = 1; same
  cancellation as for KL), term = 0.5 expm1(u / 2)^2; reported H = sqrt(H^2), its CI by the
  delta method.
* ``w2`` is not a functional of the densities at the sample points and is refused.

Uncertainty: half-width of the 95% confidence interval, 1.96 sd(term) / sqrt(n) (delta method
for H). There is no dimension-dependent floor (``floor`` = 0): the CI is the resolution. The same
seed gives the same x_i for every step count (common random numbers), so the errors of a sweep are
strongly correlated across T and its slope is sharper than the per-point CIs suggest.

Scope: samplers that are a chain of deterministic steps (``SamplerSpec.step``), with no stage that
adds noise (``stochastic`` specs, ``eta`` > 0, EDM churn, ``final_noise`` with a noisy last step
are refused), and no final Tweedie denoise (the push-forward of q by the exact denoiser, the
reference the output then approximates, has no closed-form density).

Cost: the push (``flow.push``: per stage one closed-form score and Hessian on n points and
O(n d^3) tangent products) plus O(n K d^2) for the two mixture log-densities; memory a few
(n d, d + width) tensors, bounded by working in chunks of points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from analytic.gmm import GaussianMixture
from analytic.processes import Process
from convergence.evaluators import ErrorEstimate
from convergence.evaluators.coupled import Z95, delta_method
from convergence.evaluators.flow import ReplayLedger, mixture_jacobian_score, push
from convergence.noise import RefusedNoise
from convergence.samplers import SamplerSpec, get_spec
from convergence.samplers.base import plan, prepare, run_sampler
from convergence.scores import Perturbation, parse_perturbation, perturbed_score

Tensor = torch.Tensor

METRICS = ("kl", "tv", "hellinger")
W2_REFUSED = (
    "the logdet evaluator measures kl, tv and hellinger (functionals of the density ratio); "
    "w2 is given by the gaussian, grid, tensor and coupled evaluators"
)
# points per push: n_chunk d x 3 d (a state of width up to 2 d) float64 entries stay below this
# (32 MB per tensor); measured on d = 32, n = 10^4, T = 100 with one thread: 38.5 s CPU against
# 51.5 s in one batch (memory traffic), on a shared 2-core machine
CHUNK_ELEMENTS = 2**22
NOTE = (
    "density-aware Monte Carlo over n output points with exact log-det densities; uncertainty = "
    "95% CI half-width; common random numbers (the same initial points for every T), so errors "
    "are correlated across T and a fitted slope is sharper than the per-point CIs suggest"
)


# ---- per-sample terms ------------------------------------------------------------------------


def kl_terms(log_rho: Tensor) -> Tensor:
    """rho log rho - rho + 1, u = log rho: mean = KL(q || p) under p. Evaluated as
    rho (u + expm1(-u)) for u > 0 and u rho - expm1(u) for u <= 0, so a point where the output
    density dwarfs the reference's (u -> -oo, term -> 1) gives 1, not 0 * inf."""
    u = log_rho
    pos = torch.exp(u.clamp(min=0)) * (u + torch.expm1(-u.clamp(min=0)))
    neg = u.clamp(max=0) * torch.exp(u.clamp(max=0)) - torch.expm1(u.clamp(max=0))
    return torch.where(u > 0, pos, neg)


def k3_terms(log_rho: Tensor) -> Tensor:
    """rho - 1 - log rho = expm1(u) - u ("k3", THEORY.md 4.6): mean = KL(p || q) under p."""
    return torch.expm1(log_rho) - log_rho


def tv_terms(log_rho: Tensor) -> Tensor:
    """0.5 |1 - rho| = 0.5 |expm1(u)|: mean = TV(p, q) under p."""
    return 0.5 * torch.expm1(log_rho).abs()


def hellinger_squared_terms(log_rho: Tensor) -> Tensor:
    """0.5 (1 - sqrt(rho))^2 = 0.5 expm1(u / 2)^2: mean = H^2 = 1 - E_p sqrt(rho) under p."""
    return 0.5 * torch.expm1(0.5 * log_rho).square()


def estimate(metric: str, log_rho: Tensor) -> tuple[float, float]:
    """(value, 95% CI half-width) of ``metric`` from log rho at n points drawn from p_out.

    kl, tv: mean of the terms and Z95 sd / sqrt(n); hellinger: H = sqrt(mean of the H^2 terms),
    half-width by the delta method (Z95 sd / (2 H sqrt(n))).
    """
    if metric not in METRICS:
        raise ValueError(W2_REFUSED if metric == "w2" else _unknown(metric))
    n = log_rho.numel()
    if n < 2:
        raise ValueError(f"need at least 2 points to estimate {metric}, got {n}")
    if metric == "hellinger":
        terms = hellinger_squared_terms(log_rho)
        if float(terms.max()) == 0.0:
            return 0.0, 0.0
        return delta_method(terms[:, None], lambda m: torch.sqrt(m[0]))
    terms = kl_terms(log_rho) if metric == "kl" else tv_terms(log_rho)
    return float(terms.mean()), Z95 * float(terms.std()) / math.sqrt(n)


def _unknown(metric: str) -> str:
    return f"unknown metric {metric!r} for the logdet evaluator; allowed: {', '.join(METRICS)}"


# ---- the output density ----------------------------------------------------------------------


@dataclass(frozen=True)
class OutputDensity:
    """A deterministic sampler's output at n points: initial points x (n, d), outputs y (n, d),
    log p_out(y) and log q(y) (n,), log rho = log q(y) - log p_out(y), the NFE per sample and t_end.
    """

    x: Tensor
    y: Tensor
    log_p: Tensor
    log_q: Tensor
    nfe: int
    t_end: float

    @property
    def log_rho(self) -> Tensor:
        return self.log_q - self.log_p


def check_deterministic(
    spec: SamplerSpec, *, denoise: bool = False, options: dict | None = None
) -> None:
    """Refuse (one-line ValueError) what the logdet evaluator cannot handle: samplers that are
    not a chain of steps, stochastic samplers and a final Tweedie denoise. Noise added by a stage
    of an otherwise deterministic sampler is found by ``output_density``'s checking run."""
    if spec.step is None:
        raise ValueError(
            f"sampler {spec.name!r} is not a chain of steps (it has its own run function); the "
            "logdet evaluator needs one"
        )
    if spec.stochastic:
        raise ValueError(
            f"sampler {spec.name!r} is stochastic; the logdet evaluator needs a deterministic "
            "sampler (use the grid, tensor or coupled evaluator)"
        )
    if spec.output_is_denoised(spec.resolve_options(options or {}), denoise):
        raise ValueError(
            "the logdet evaluator needs denoise=False: the Tweedie push-forward reference has no "
            "closed-form density"
        )


def _perturbation(perturbation, target: GaussianMixture) -> Perturbation | None:
    if perturbation is None or isinstance(perturbation, Perturbation):
        return perturbation
    if isinstance(perturbation, str):
        return parse_perturbation(perturbation, target)
    raise ValueError(
        f"perturbation must be None, a spec string or a Perturbation, got {perturbation!r}"
    )


def output_density(
    spec: str | SamplerSpec,
    target: GaussianMixture,
    process: Process,
    steps: int,
    *,
    start: GaussianMixture,
    reference: GaussianMixture,
    n: int,
    seed: int,
    t_end: float | None,
    perturbation: Perturbation | str | None = None,
    final_noise: bool = False,
    denoise: bool = False,
    **options,
) -> OutputDensity:
    """Run ``spec`` with the exact score of ``target`` [plus ``perturbation``] from n points
    x ~ ``start`` (``start.sample(n, seed=2 seed)``, the initial points of the samples and coupled
    evaluators) and return the outputs with their exact log-density and log q (module docstring).

    Before the push, one point is run through ``run_sampler`` with a noise source that refuses
    every draw: it validates the options, finds any stage that adds noise, and counts the NFE.
    """
    spec = get_spec(spec)
    check_deterministic(spec, denoise=denoise, options=options)
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"the logdet evaluator needs n >= 2 points, got {n!r}")
    for name, law in (("start", start), ("reference", reference)):
        if not isinstance(law, GaussianMixture) or law.dim != target.dim:
            raise ValueError(f"{name} must be a GaussianMixture of dimension {target.dim}")
    perturbation = _perturbation(perturbation, target)
    t_end, opts, schedule = prepare(spec, process, steps, t_end, options)
    x = start.sample(n, seed=2 * seed)
    check = run_sampler(
        spec,
        perturbed_score(target, process, perturbation),
        process,
        x[:1],
        steps,
        noise=RefusedNoise(
            f"sampler {spec.name!r} adds noise at stage {{step}}; the logdet evaluator needs a "
            "deterministic map (eta=0, churn=0, no final_noise)"
        ),
        t_end=t_end,
        final_noise=final_noise,
        **options,
    )
    stages = plan(schedule, final_noise)
    score = mixture_jacobian_score(target, process, perturbation)
    d = target.dim
    chunk = max(1, CHUNK_ELEMENTS // (d * 3 * d))  # room for a multistep state of width 2 d
    ys, logdets = [], []
    ledger = ReplayLedger()  # one replay check per stage for all chunks
    for xc in x.split(chunk):
        pushed = push(spec, score, process, xc, stages, opts, t_end, ledger=ledger)
        ys.append(pushed.y)
        logdets.append(pushed.logdet)
        score.clear()
    y, logdet = torch.cat(ys), torch.cat(logdets)
    log_p = start.log_prob(x) - logdet
    log_q = reference.log_prob(y)
    if not bool(torch.isfinite(log_p).all() and torch.isfinite(log_q).all()):
        raise ValueError(f"sampler {spec.name!r}: non-finite output density at some points")
    return OutputDensity(x, y, log_p, log_q, check.nfe, t_end)


# ---- the evaluator ---------------------------------------------------------------------------


def logdet_errors(
    spec: str | SamplerSpec,
    target: GaussianMixture,
    process: Process,
    steps: int,
    *,
    metrics,
    start: GaussianMixture,
    reference: GaussianMixture,
    n: int,
    seed: int,
    t_end: float | None,
    perturbation: Perturbation | str | None = None,
    final_noise: bool = False,
    denoise: bool = False,
    **options,
) -> dict[str, ErrorEstimate]:
    """``logdet_error`` for several metrics from one push: {metric: estimate}."""
    metrics = tuple(metrics)
    for metric in metrics:
        if metric not in METRICS:
            raise ValueError(W2_REFUSED if metric == "w2" else _unknown(metric))
    if not metrics:
        raise ValueError(f"metrics must name at least one of {', '.join(METRICS)}")
    spec = get_spec(spec)
    out = output_density(
        spec,
        target,
        process,
        steps,
        start=start,
        reference=reference,
        n=n,
        seed=seed,
        t_end=t_end,
        perturbation=perturbation,
        final_noise=final_noise,
        denoise=denoise,
        **options,
    )
    where = f"exact marginal at t_end={out.t_end:.4g} (mixture, K={reference.n_components})"
    found = {}
    for metric in metrics:
        value, half = estimate(metric, out.log_rho)
        found[metric] = ErrorEstimate(
            value,
            half,
            "logdet",
            metric,
            steps,
            out.nfe,
            out.t_end,
            False,
            floor=0.0,
            n_samples=n,
            note=NOTE,
            reference=where,
        )
    return found


def logdet_error(
    spec: str | SamplerSpec,
    target: GaussianMixture,
    process: Process,
    steps: int,
    *,
    metric: str,
    start: GaussianMixture,
    reference: GaussianMixture,
    n: int,
    seed: int,
    t_end: float | None,
    perturbation: Perturbation | str | None = None,
    final_noise: bool = False,
    denoise: bool = False,
    **options,
) -> ErrorEstimate:
    """Log-det estimate (evaluator ``logdet``) of the error of ``spec`` after ``steps`` steps.

    Runs the deterministic sampler with the exact score of ``target`` (plus ``perturbation``: a
    ``convergence.scores`` Perturbation or its spec string) from n points x ~ ``start``
    (seed 2 seed), tracks log |det| of the discrete map, and compares the output density with
    ``reference`` (the exact law at t_end) at the output points. ``metric``: kl = KL(reference ||
    output), tv, hellinger (formulas in the module docstring). Returns value, uncertainty = the
    95% CI half-width, floor 0, exact False, n_samples n. Refusals (ValueError, one line): w2 or an
    unknown metric, n < 2, a sampler that is not a chain, stochastic, or adds noise at a stage,
    denoise. Use ``logdet_errors`` for several metrics from one run.
    """
    if metric not in METRICS:
        raise ValueError(W2_REFUSED if metric == "w2" else _unknown(metric))
    return logdet_errors(
        spec,
        target,
        process,
        steps,
        metrics=(metric,),
        start=start,
        reference=reference,
        n=n,
        seed=seed,
        t_end=t_end,
        perturbation=perturbation,
        final_noise=final_noise,
        denoise=denoise,
        **options,
    )[metric]
