"""Euler-Maruyama for the reverse-time SDE dx = [f x - g^2 grad log p_t] dt + g dw_bar."""

from __future__ import annotations

import math

from analytic.processes import Process
from convergence.samplers.base import Claim, SamplerSpec, Score, Tensor, Transition


def em_step(score: Score, process: Process, x: Tensor, t: float, t_next: float) -> Transition:
    """Reverse-SDE Euler-Maruyama with the true spacing h = t - t_next (SAMPLERS.md 2.3):

    x' = x - h [f(t) x - g(t)^2 s(x, t)] + g(t) sqrt(h) z.
    """
    h = t - t_next
    g2 = process.g2(t)
    return Transition(x - h * (process.f(t) * x - g2 * score(x, t)), math.sqrt(g2 * h))


EM = SamplerSpec(
    name="em",
    family="SDE",
    stochastic=True,
    nfe_per_step=1,
    expected_order=1.0,
    step=em_step,
    citation="Song et al. 2021, Score-Based Generative Modeling through SDEs, arXiv 2011.13456",
    claims=(
        Claim("weak", 1.0, "Talay & Tubaro 1990 (Euler-Maruyama weak order 1)"),
        Claim("tv", 0.5, "Chen et al. 2023, arXiv 2209.11215 (TV <~ sqrt(d/T))"),
    ),
)

SPECS = (EM,)
