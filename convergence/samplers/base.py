"""What every sampler shares: its spec, its result, time grids and the Gaussian-kernel runner.

Most samplers are a chain of Gaussian transition kernels: given the state x at time t, the next
state is

    x' = mean(x) + std * z,    z ~ N(0, I),

with a mean map that calls the score and an isotropic noise level (0 for deterministic steps).
Such a sampler is defined by one *step function*

    step(score, process, x, t, t_next, **options) -> Transition(mean, std)

and a schedule: the list of (t, t_next) pairs the steps move between (a uniform time grid by
default; sub-sequences, log-SNR grids, rho-grids or repeated noise levels otherwise). The same step
function drives sampling (``run_chain``), exact moment propagation for Gaussian targets
(``convergence.evaluators.gaussian``) and, later, density propagation on grids: the update rule is
written once (DESIGN.md decision 3).

Multistep samplers carry affine side quantities from step to step in ``Transition.state`` (an
(n, k) tensor, e.g. the previous noise prediction); exact propagation treats them as extra
coordinates of a joint Gaussian. A step function asks for the context it needs by listing it in
``SamplerSpec.context``: ``state`` (the previous state, None at the first step), ``last`` (True at
the final step), ``k`` (the step index) and ``t_end``.

Samplers that are not a chain of Gaussian kernels (adaptive step sizes, batch-dependent step
sizes, momentum) give a ``run`` function with the same call signature as ``run_chain`` instead.
Every run counts score calls through the callable it is given: NFE is counted, not computed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from types import MappingProxyType
from typing import Any

import torch

from analytic.processes import Process
from convergence.noise import PerSampleNoise

Tensor = torch.Tensor
Score = Callable[[Tensor, float], Tensor]


class DivergenceError(RuntimeError):
    """A sampler produced a non-finite state; the message names sampler, step and time."""

    def __init__(self, sampler: str, step: int, t: float, t_next: float) -> None:
        super().__init__(
            f"sampler {sampler!r} diverged: non-finite state at step {step} "
            f"(from t={t:.6g} to t={t_next:.6g})"
        )
        self.sampler, self.step, self.t, self.t_next = sampler, step, t, t_next


@dataclass(frozen=True)
class Transition:
    """One Gaussian kernel applied to a batch: next state = mean + std * z, plus the affine side
    quantities ``state`` a multistep sampler carries to its next step."""

    mean: Tensor
    std: float
    state: Tensor | None = None


@dataclass(frozen=True)
class Claim:
    """A published bound error <= C T^-exponent in ``metric`` (exponent > 0 for convergence)."""

    metric: str
    exponent: float
    source: str


@dataclass(frozen=True)
class SampleResult:
    """Sampler output: final states, score evaluations per sample, the time whose marginal the
    output approximates, and sampler-specific details."""

    x: Tensor
    nfe: int
    t_end: float
    info: Mapping[str, Any] = field(default_factory=dict)


StepFn = Callable[..., Transition]
RunFn = Callable[..., SampleResult]
Schedule = list[tuple[float, float]]
ScheduleFn = Callable[[Process, int, float, Mapping[str, Any]], Schedule]


def uniform_schedule(
    process: Process, steps: int, t_end: float, options: Mapping[str, Any]
) -> Schedule:
    """Uniform grid t_0 = 1 > t_1 > ... > t_steps = t_end (float64 linspace), as (t_k, t_{k+1})."""
    grid = torch.linspace(1.0, t_end, steps + 1, dtype=torch.float64).tolist()
    return list(pairwise(grid))


@dataclass(frozen=True)
class SamplerSpec:
    """A registered sampler.

    ``expected_order`` is the weak order p on smooth targets with exact scores (THEORY.md 2.2):
    TV, W2 and Hellinger decay like T^-p, KL like T^-2p. ``options`` maps each option to its
    default; ``choices`` restricts string options. ``affine`` says the step is affine in x whenever
    the score is affine (so exact Gaussian moment propagation applies).
    """

    name: str
    family: str
    stochastic: bool
    nfe_per_step: int
    expected_order: float | None
    citation: str
    step: StepFn | None = None
    run: RunFn | None = None
    schedule: ScheduleFn = uniform_schedule
    context: tuple[str, ...] = ()
    claims: tuple[Claim, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    choices: Mapping[str, tuple] = field(default_factory=dict)
    affine: bool = True
    brownian: bool = False
    processes: tuple[str, ...] = ("vp", "ve")
    adaptive: bool = False  # accuracy set by tolerances; the step count is ignored
    validate: Callable[[Process, int, float, Mapping[str, Any]], None] | None = None
    denoised_output: Callable[[Mapping[str, Any]], bool] | None = None

    def output_is_denoised(self, options: Mapping[str, Any], denoise: bool) -> bool:
        """Whether the output approximates the Tweedie push-forward of q_t_end rather than q_t_end
        itself: the generic final denoise, or a sampler's own (e.g. CAS re-using its last score)."""
        return denoise or (self.denoised_output is not None and self.denoised_output(options))

    def __post_init__(self) -> None:
        if (self.step is None) == (self.run is None):
            raise ValueError(f"sampler {self.name!r} needs exactly one of step and run")
        if self.run is not None and self.affine:
            object.__setattr__(self, "affine", False)

    def expected_slope(self, metric: str) -> float | None:
        """d log(error) / d log(T) predicted by the weak order: -p, or -2p for KL."""
        if self.expected_order is None:
            return None
        return -(2.0 if metric == "kl" else 1.0) * self.expected_order

    def resolve_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults overridden by ``options``; unknown names and disallowed values are refused."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            allowed = ", ".join(sorted(self.options)) or "none"
            raise ValueError(
                f"sampler {self.name!r} has no option {unknown[0]!r}; allowed: {allowed}"
            )
        resolved = {**self.options, **options}
        for key, allowed in self.choices.items():
            if resolved[key] not in allowed:
                raise ValueError(
                    f"option {key}={resolved[key]!r} of sampler {self.name!r} "
                    f"is not one of {allowed}"
                )
        return resolved


def make_registry(*specs: SamplerSpec) -> Mapping[str, SamplerSpec]:
    """Read-only name -> spec mapping; duplicate names are an error."""
    names = [s.name for s in specs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"duplicate sampler names: {sorted(dup)}")
    return MappingProxyType({s.name: s for s in specs})


# ---- time grids and the plan of a run ------------------------------------------------------


def check_t_end(process: Process, t_end: float | None) -> float:
    t_end = process.t_end_default if t_end is None else float(t_end)
    if not (0.0 < t_end < 1.0):
        raise ValueError(f"t_end must lie in (0, 1), got {t_end}")
    return t_end


@dataclass(frozen=True)
class Stage:
    """Step k of a run: from t to t_next, whether its noise is added, whether it is the last."""

    k: int
    t: float
    t_next: float
    noisy: bool
    last: bool


def plan(schedule: Schedule, final_noise: bool) -> list[Stage]:
    """The stages of a run. The last step adds no noise unless asked: DDPM sets z = 0 at the last
    step (Ho et al. 2020, Alg. 2) and the score-SDE predictors return the last mean
    (SAMPLERS.md 1.3 (a))."""
    n = len(schedule)
    return [
        Stage(k, t, t_next, final_noise or k < n - 1, k == n - 1)
        for k, (t, t_next) in enumerate(schedule)
    ]


def check_steps(steps: int) -> int:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    return steps


def context_kwargs(
    spec: SamplerSpec, stage: Stage, state: Tensor | None, t_end: float
) -> dict[str, Any]:
    """The context a step function asked for in ``spec.context``."""
    available = {"state": state, "last": stage.last, "k": stage.k, "t_end": t_end}
    return {name: available[name] for name in spec.context}


class CountingScore:
    """A score callable that counts its calls: one call on a batch is one NFE per sample."""

    def __init__(self, score: Score) -> None:
        self.score, self.calls = score, 0

    def __call__(self, x: Tensor, t: float) -> Tensor:
        self.calls += 1
        return self.score(x, t)


def tweedie(score: Score, process: Process, x: Tensor, t: float) -> Tensor:
    """Final Tweedie denoise E[x_0 | x_t = x] = (x + sigma(t)^2 s(x, t)) / alpha(t)
    (SAMPLERS.md 2.10; VE: x + sigma^2 s). One NFE."""
    return (x + process.sigma(t) ** 2 * score(x, t)) / process.alpha(t)


def prepare(
    spec: SamplerSpec, process: Process, steps: int, t_end: float | None, options: Mapping
) -> tuple[float, dict[str, Any], Schedule]:
    """Validated end time, resolved options and the schedule of a run."""
    check_steps(steps)
    if process.name not in spec.processes:
        raise ValueError(
            f"sampler {spec.name!r} runs on the {'/'.join(spec.processes)} process, "
            f"not {process.name}"
        )
    t_end = check_t_end(process, t_end)
    opts = spec.resolve_options(options)
    if spec.validate is not None:
        spec.validate(process, steps, t_end, opts)
    return t_end, opts, spec.schedule(process, steps, t_end, opts)


def run_chain(
    spec: SamplerSpec,
    score: Score,
    process: Process,
    x: Tensor,
    steps: int,
    *,
    noise: PerSampleNoise,
    t_end: float | None = None,
    final_noise: bool = False,
    denoise: bool = False,
    **options: Any,
) -> SampleResult:
    """Run a Gaussian-kernel sampler: x <- mean(x) + std z at every stage of its schedule, then
    optionally the Tweedie denoise at t_end."""
    t_end, opts, schedule = prepare(spec, process, steps, t_end, options)
    counted = CountingScore(score)
    noise = noise.for_schedule(schedule)
    state = None
    for st in plan(schedule, final_noise):
        tr = spec.step(
            counted, process, x, st.t, st.t_next, **context_kwargs(spec, st, state, t_end), **opts
        )
        state = tr.state
        x = tr.mean + tr.std * noise.draw(st.k, tr.mean) if st.noisy and tr.std > 0 else tr.mean
        if not all_finite(x):
            raise DivergenceError(spec.name, st.k + 1, st.t, st.t_next)
    if denoise:
        x = tweedie(counted, process, x, t_end)
    info = {
        "options": opts,
        "denoised": spec.output_is_denoised(opts, denoise),
        "score_calls": counted.calls,
    }
    return SampleResult(x, counted.calls, t_end, info)


def run_sampler(
    spec: SamplerSpec, score: Score, process: Process, x: Tensor, steps: int, **kwargs: Any
) -> SampleResult:
    """Run any registered sampler (its Gaussian-kernel chain or its own run function)."""
    check_states(x)
    if spec.run is not None:
        return spec.run(score, process, x, steps, **kwargs)
    return run_chain(spec, score, process, x, steps, **kwargs)


def check_states(x: Tensor) -> None:
    """Initial states must be a finite floating tensor of shape (n, d)."""
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim != 2:
        raise ValueError("x must be a floating-point torch tensor of shape (n, d)")
    if not all_finite(x):
        raise ValueError("initial states x must be finite")


def all_finite(x: Tensor) -> bool:
    """Whether every entry of x is finite (one scalar read back from x's device); True on the
    ``meta`` device, whose tensors carry shapes but no values (the device-following tests)."""
    return x.is_meta or bool(torch.isfinite(x).all())


def sqrt_pos(v: float) -> float:
    """sqrt of a variance that must be >= 0 (tiny negative rounding is clipped)."""
    if v < -1e-15:
        raise ValueError(f"negative noise variance {v}")
    return math.sqrt(max(v, 0.0))
