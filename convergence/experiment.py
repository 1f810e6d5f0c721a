"""One-call entry points: run a sampler, and measure a convergence rate over step counts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from analytic.gmm import GaussianMixture
from analytic.processes import Process
from convergence.evaluators import ErrorEstimate, error, noise_source
from convergence.rates import FitStatus, RateFit, UnresolvedRateError, fit_rate
from convergence.samplers import SampleResult, SamplerSpec, get_spec
from convergence.samplers.base import Score, Tensor, run_sampler


def sample(
    sampler_name: str | SamplerSpec,
    score: Score,
    process: Process,
    x: Tensor,
    steps: int,
    *,
    seed: int = 0,
    offset: int = 0,
    noise: str = "independent",
    **options,
) -> SampleResult:
    """Run ``sampler_name`` from the states x (n, d) for ``steps`` steps with score(x, t).

    Row i of x uses noise stream (seed, offset + i), so results do not depend on batching;
    ``noise="brownian"`` makes runs with T and 2T steps share one Brownian path per sample.
    Options: ``t_end``, ``final_noise``, ``denoise`` (final Tweedie step) and the sampler's own
    options (see its spec).
    """
    spec = get_spec(sampler_name)
    source = noise_source(noise, seed, offset)
    return run_sampler(spec, score, process, x, steps, noise=source, **options)


@dataclass(frozen=True)
class RateResult:
    """Errors at each step count, the fitted slope and the slope the sampler's order predicts.

    ``fit`` is None when too few points lie above the evaluator's floor; ``unresolved`` says why.
    """

    sampler: str
    metric: str
    points: tuple[ErrorEstimate, ...]
    fit: RateFit | None
    expected_slope: float | None
    unresolved: str = ""

    @property
    def verdict(self) -> FitStatus:
        return self.fit.verdict if self.fit is not None else FitStatus.UNRESOLVED


def measure_rate(
    sampler_name: str | SamplerSpec,
    target: GaussianMixture,
    process: Process,
    steps: Sequence[int],
    *,
    metric: str,
    evaluator: str = "auto",
    progress: Callable[[int, int, ErrorEstimate], None] | None = None,
    **kwargs,
) -> RateResult:
    """Error at every step count and the fitted log-log slope d log(error) / d log(T).

    ``progress(i, total, estimate)`` is called after each point; other keyword arguments go to
    ``convergence.error``.
    """
    spec = get_spec(sampler_name)
    if spec.adaptive:
        raise ValueError(
            f"sampler {spec.name!r} is adaptive: its accuracy is set by its tolerances, not by a "
            "step count, so a rate over steps does not apply"
        )
    steps = list(steps)
    if len(steps) < 2 or any(b <= a for a, b in pairwise(steps)):
        raise ValueError(f"steps must be at least two strictly increasing counts, got {steps}")
    points = []
    for i, T in enumerate(steps):
        points.append(error(spec, target, process, T, metric=metric, evaluator=evaluator, **kwargs))
        if progress is not None:
            progress(i + 1, len(steps), points[-1])
    points = tuple(points)
    expected = spec.expected_slope(metric)
    try:
        fit = fit_rate(
            steps,
            [p.value for p in points],
            uncertainties=[_standard_error(p) for p in points],
            floors=[p.floor for p in points],
            expected_slope=expected,
        )
    except UnresolvedRateError as exc:
        return RateResult(spec.name, metric, points, None, expected, str(exc))
    return RateResult(spec.name, metric, points, fit, expected)


def _standard_error(point: ErrorEstimate) -> float:
    """The standard error a fit weights a point by: Monte Carlo evaluators report 95% half-widths
    (logdet, coupled) or noise floors (samples); exact evaluators' round-off is not statistical."""
    if point.evaluator in ("logdet", "coupled"):
        return point.uncertainty / 1.96
    return point.uncertainty if point.evaluator == "samples" else 0.0
