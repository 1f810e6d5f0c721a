"""Shared test configuration: a bounded, derandomised hypothesis profile for CI."""

import os

import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=25,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The suite runs thousands of tiny tensor operations; with two intra-op threads each one pays
# OpenMP synchronisation, which costs ~20x under load on a 2-core machine. Benchmarks are separate.
torch.set_num_threads(1)
