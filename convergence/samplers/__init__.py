"""The sampler registry: every sampler by name, with its spec (family, NFE, order, claims)."""

from convergence.samplers import annealed, discrete, ggf, ode, score_sde, sde
from convergence.samplers.base import (
    Claim,
    CountingScore,
    DivergenceError,
    SampleResult,
    SamplerSpec,
    Transition,
    make_registry,
    run_chain,
    run_sampler,
    tweedie,
)

REGISTRY = make_registry(
    *discrete.SPECS,
    *sde.SPECS,
    *ode.SPECS,
    *score_sde.SPECS,
    *annealed.SPECS,
    *ggf.SPECS,
)


def get_spec(name: str | SamplerSpec) -> SamplerSpec:
    """The spec registered under ``name`` (a spec passes through, e.g. an unregistered variant);
    unknown names list the registered ones."""
    if isinstance(name, SamplerSpec):
        return name
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; registered: {', '.join(REGISTRY)}") from None


__all__ = [
    "REGISTRY",
    "Claim",
    "CountingScore",
    "DivergenceError",
    "SampleResult",
    "SamplerSpec",
    "Transition",
    "get_spec",
    "run_chain",
    "run_sampler",
    "tweedie",
]
