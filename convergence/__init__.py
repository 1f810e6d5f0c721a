"""Numerical experiments on diffusion samplers: sampling, exact errors, rate fits."""

from convergence.evaluators import ErrorEstimate, error
from convergence.experiment import RateResult, measure_rate, sample
from convergence.rates import RateFit, fit_rate
from convergence.samplers import REGISTRY, DivergenceError, SampleResult, get_spec
from convergence.targets import parse_target

__all__ = [
    "REGISTRY",
    "DivergenceError",
    "ErrorEstimate",
    "RateFit",
    "RateResult",
    "SampleResult",
    "error",
    "fit_rate",
    "get_spec",
    "measure_rate",
    "parse_target",
    "sample",
]
