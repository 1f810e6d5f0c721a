"""What every sampler shares: its spec, its result, time grids and the Gaussian-kernel runner.

Most samplers are a chain of Gaussian transition kernels: given the state x at time t, the next
state is

    x' = mean(x) + std * z,    z ~ N(0, I),

with a mean map that calls the score and an isotropic noise level (0 for deterministic steps).
Such a sampler is defined by one *step function*

    step(score, process, x, t, t_next, **options) -> Transition(mean, std)

and a time grid. The same step function drives sampling (``run_chain``), exact moment propagation
for Gaussian targets (``convergence.evaluators.gaussian``) and, later, density propagation on grids:
the update rule is written once (DESIGN.md decision 3).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
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
    """One Gaussian kernel applied to a batch: next state = mean + std * z."""

    mean: Tensor
    std: float


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
    step: StepFn
    citation: str
    claims: tuple[Claim, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    choices: Mapping[str, tuple] = field(default_factory=dict)
    affine: bool = True

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


def time_grid(steps: int, t_end: float, t_start: float = 1.0) -> list[float]:
    """Uniform grid t_0 = t_start > t_1 > ... > t_steps = t_end (float64 linspace)."""
    return torch.linspace(t_start, t_end, steps + 1, dtype=torch.float64).tolist()


def plan(steps: int, t_end: float, final_noise: bool) -> Iterator[tuple[int, float, float, bool]]:
    """(k, t_k, t_{k+1}, add noise?) for every step. The last step adds no noise unless asked:
    DDPM sets z = 0 at the last step (Ho et al. 2020, Alg. 2) and the score-SDE predictors return
    the last mean (SAMPLERS.md 1.3 (a))."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    grid = time_grid(steps, t_end)
    for k in range(steps):
        yield k, grid[k], grid[k + 1], final_noise or k < steps - 1


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
    **options: Any,
) -> SampleResult:
    """Run a Gaussian-kernel sampler: x <- mean(x) + std z at every step of ``plan``."""
    t_end = check_t_end(process, t_end)
    opts = spec.resolve_options(options)
    for k, t, t_next, noisy in plan(steps, t_end, final_noise):
        tr = spec.step(score, process, x, t, t_next, **opts)
        x = tr.mean + tr.std * noise.draw(k, tr.mean) if noisy and tr.std > 0 else tr.mean
        if not torch.isfinite(x).all():
            raise DivergenceError(spec.name, k + 1, t, t_next)
    return SampleResult(x, steps * spec.nfe_per_step, t_end, {"options": opts})


def check_states(x: Tensor) -> None:
    """Initial states must be a finite floating tensor of shape (n, d)."""
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim != 2:
        raise ValueError("x must be a floating-point torch tensor of shape (n, d)")
    if not torch.isfinite(x).all():
        raise ValueError("initial states x must be finite")


def sqrt_pos(v: float) -> float:
    """sqrt of a variance that must be >= 0 (tiny negative rounding is clipped)."""
    if v < -1e-15:
        raise ValueError(f"negative noise variance {v}")
    return math.sqrt(max(v, 0.0))
