"""Probability-flow ODE solvers: dx/dt = F(x, t) = f(t) x - g(t)^2 s(x, t) / 2 (SAMPLERS.md 2.7)."""

from __future__ import annotations

from analytic.processes import Process
from convergence.samplers.base import Claim, SamplerSpec, Score, Tensor, Transition


def pf_drift(score: Score, process: Process, x: Tensor, t: float) -> Tensor:
    """F(x, t) = f(t) x - g(t)^2 s(x, t) / 2 (Song et al. 2021, eq. 13)."""
    return process.f(t) * x - 0.5 * process.g2(t) * score(x, t)


def euler_step(score: Score, process: Process, x: Tensor, t: float, t_next: float) -> Transition:
    """Explicit Euler: x' = x + (t_next - t) F(x, t)."""
    return Transition(x + (t_next - t) * pf_drift(score, process, x, t), 0.0)


def heun_step(score: Score, process: Process, x: Tensor, t: float, t_next: float) -> Transition:
    """Heun (explicit trapezoid), with dt = t_next - t:
    x~ = x + dt F(x, t),  x' = x + dt/2 [F(x, t) + F(x~, t_next)]."""
    dt = t_next - t
    k1 = pf_drift(score, process, x, t)
    k2 = pf_drift(score, process, x + dt * k1, t_next)
    return Transition(x + 0.5 * dt * (k1 + k2), 0.0)


ODE_EULER = SamplerSpec(
    name="ode-euler",
    family="ODE",
    stochastic=False,
    nfe_per_step=1,
    expected_order=1.0,
    step=euler_step,
    citation="Song et al. 2021, probability-flow ODE, arXiv 2011.13456; explicit Euler",
    claims=(
        Claim("tv", 1.0, "Li et al. 2024, arXiv 2306.09251 / 2408.02320"),
        Claim("tv", 1.0, "Huang, Huang & Lin 2024, arXiv 2404.09730 (RK order 1: d^2 h)"),
    ),
)

ODE_HEUN = SamplerSpec(
    name="ode-heun",
    family="ODE",
    stochastic=False,
    nfe_per_step=2,
    expected_order=2.0,
    step=heun_step,
    citation="Song et al. 2021, probability-flow ODE, arXiv 2011.13456; Heun's method",
    claims=(Claim("tv", 2.0, "Huang, Huang & Lin 2024, arXiv 2404.09730 (RK order 2: d (d h)^2)"),),
)

SPECS = (ODE_EULER, ODE_HEUN)
