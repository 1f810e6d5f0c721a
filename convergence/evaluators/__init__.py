"""How an error is measured: the most exact evaluator that applies (DESIGN.md decision 5).

``error(...)`` runs one sampler at one step count on a target and returns an ``ErrorEstimate``
against the exact marginal of the target at the sampler's ``t_end``:

* ``gaussian``: exact output moments for single-Gaussian targets and affine steps, then the closed
  forms of ``analytic.gaussian`` (no Monte Carlo; the uncertainty is a round-off floor);
* ``samples``: n output samples against n fresh reference samples with POT's exact W2; the noise
  floor (W2 between two independent reference samples of the same size) is reported beside it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from analytic.gmm import GaussianMixture
from analytic.processes import Process
from convergence.evaluators import gaussian as exact
from convergence.noise import BrownianNoise, PerSampleNoise
from convergence.samplers import SamplerSpec, get_spec
from convergence.samplers.base import CountingScore, check_t_end, run_sampler, tweedie

EVALUATORS = ("auto", "gaussian", "samples")
NOISES = ("independent", "brownian")


def noise_source(kind: str, seed: int, offset: int = 0) -> PerSampleNoise | BrownianNoise:
    """Per-sample independent draws, or one Brownian path per sample shared across step counts."""
    if kind == "independent":
        return PerSampleNoise(seed, offset)
    if kind == "brownian":
        return BrownianNoise(seed, offset)
    raise ValueError(f"noise must be one of {NOISES}, got {kind!r}")


INITS = ("exact", "prior")


@dataclass(frozen=True)
class ErrorEstimate:
    """One measured error: value, its uncertainty (round-off floor for exact evaluators; for
    sample-based ones the noise floor of the estimator at that sample size), evaluator, metric."""

    value: float
    uncertainty: float
    evaluator: str
    metric: str
    steps: int
    nfe: int
    t_end: float
    exact: bool
    floor: float = 0.0
    n_samples: int = 0
    lower_bound: float | None = None
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def initial_law(target: GaussianMixture, process: Process, init: str) -> GaussianMixture:
    """Law of the initial state: the exact marginal at t = 1 ("exact", no initialisation error)
    or the process prior N(0, prior_std^2 I) ("prior")."""
    if init == "exact":
        return target.noised(process, 1.0)
    if init == "prior":
        d = target.dim
        var = process.prior_std() ** 2
        return GaussianMixture([1.0], torch.zeros(1, d, dtype=torch.float64), [var])
    raise ValueError(f"init must be one of {INITS}, got {init!r}")


def resolve_evaluator(
    evaluator: str, target: GaussianMixture, spec: SamplerSpec, metric: str
) -> str:
    if evaluator not in EVALUATORS:
        raise ValueError(f"evaluator must be one of {EVALUATORS}, got {evaluator!r}")
    if metric not in exact.METRICS:
        raise ValueError(f"unknown metric {metric!r}; allowed: {', '.join(exact.METRICS)}")
    if evaluator == "auto":
        evaluator = "gaussian" if target.n_components == 1 and spec.affine else "samples"
    if evaluator == "samples" and metric != "w2":
        raise ValueError(
            f"metric {metric!r} needs an exact evaluator; the samples evaluator measures w2 only"
        )
    return evaluator


def error(
    sampler_name: str | SamplerSpec,
    target: GaussianMixture,
    process: Process,
    steps: int,
    *,
    metric: str,
    evaluator: str = "auto",
    n: int = 2000,
    seed: int = 0,
    t_end: float | None = None,
    init: str = "exact",
    final_noise: bool = False,
    denoise: bool = False,
    noise: str = "independent",
    **options,
) -> ErrorEstimate:
    """Error of ``sampler_name`` after ``steps`` steps with the exact score of ``target``.

    The reference is the exact marginal q at the sampler's t_end or, with ``denoise``, the law of
    the exact Tweedie denoiser applied to X ~ q (the map the sampler's last step applies).
    """
    spec = get_spec(sampler_name)
    kind = resolve_evaluator(evaluator, target, spec, metric)
    t_end = check_t_end(process, t_end)
    start = initial_law(target, process, init)
    reference = target.noised(process, t_end)
    score = CountingScore(target.score_fn(process))
    common = dict(t_end=t_end, final_noise=final_noise, denoise=denoise, **options)
    denoised = spec.output_is_denoised(spec.resolve_options(options), denoise)
    if kind == "gaussian":
        ref = exact.law_of(reference)
        if denoised:
            ref = exact.push_forward(
                lambda x: tweedie(target.score_fn(process), process, x, t_end), ref
            )
        out = exact.propagate(spec, score, process, exact.law_of(start), steps, **common)
        nfe = score.calls
        dist = exact.distance(metric, ref, out)
        floor = exact.roundoff_floor(metric, dist.value, ref, steps)
        bounded = metric == "tv" and not dist.exact
        return ErrorEstimate(
            dist.value,
            floor,
            "gaussian",
            metric,
            steps,
            nfe,
            t_end,
            dist.exact,
            floor=floor,
            lower_bound=dist.lower_bound if bounded else None,
            note=exact.TV_BOUND_NOTE if bounded else "",
        )
    from convergence.metrics import w2_against_reference  # POT is imported only when needed

    if not isinstance(n, int) or n < 2:
        raise ValueError(f"the samples evaluator needs n >= 2 samples, got {n!r}")
    x0 = start.sample(n, seed=2 * seed)
    result = run_sampler(spec, score, process, x0, steps, noise=noise_source(noise, seed), **common)

    def sample_reference(m: int, s: int) -> torch.Tensor:
        x = reference.sample(m, s)
        return tweedie(target.score_fn(process), process, x, t_end) if denoised else x

    est = w2_against_reference(result.x, sample_reference, seed=2 * seed + 1)
    return ErrorEstimate(
        est.value,
        est.floor,
        "samples",
        metric,
        steps,
        result.nfe,
        t_end,
        False,
        floor=est.floor,
        n_samples=n,
        note="uncertainty = noise floor: W2 between two independent reference samples of size n",
    )
