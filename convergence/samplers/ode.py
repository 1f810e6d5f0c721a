"""Probability-flow ODE solvers (SAMPLERS.md 2.7-2.9).

All of them integrate the probability-flow ODE of the forward process from t = 1 down to t_end,

    dx/dt = F(x, t) = f(t) x - g(t)^2 s(x, t) / 2        (Song et al. 2021, eq. 13),

with one of these schemes:

* ``ode-euler``, ``ode-heun``: in (x, t) on a uniform time grid;
* ``ode-rk45``: in (x, t) with scipy's adaptive Dormand-Prince pair (not a Gaussian-kernel chain);
* ``dpm-solver-2``: the exponential-integrator form in the half log-SNR lambda = log(alpha/sigma),
  with the noise prediction eps = -sigma s (Lu et al. 2022);
* ``edm-heun``: in the scaled state x_hat = x / alpha against sigma_hat = sigma / alpha =
  exp(-lambda), where the ODE reads dx_hat/dsigma_hat = -sigma_hat grad log p_hat(x_hat) = eps(x, t)
  (Karras et al. 2022, eq. 4 with s(t) = alpha, sigma(t) = sigma_hat; on VE alpha = 1).

For an affine score every step except RK45's is affine in x, so the exact Gaussian evaluator
applies to them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from scipy.integrate import solve_ivp

from analytic.processes import Process
from convergence.noise import PerSampleNoise
from convergence.samplers.base import (
    Claim,
    CountingScore,
    DivergenceError,
    SampleResult,
    SamplerSpec,
    Schedule,
    Score,
    Tensor,
    Transition,
    prepare,
    sqrt_pos,
    tweedie,
)

# ---- (x, t) solvers: Euler, Heun -------------------------------------------------------------


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


# ---- ode-rk45: scipy solve_ivp ---------------------------------------------------------------


def _solve_rk45(
    score: Score, process: Process, x: Tensor, t_end: float, rtol: float, atol: float
) -> tuple[Tensor, Any]:
    """RK45 (Dormand & Prince 1980) on the flattened batch from t = 1 to t_end.

    The solver state is a float64 numpy vector (scipy's edge); every right-hand-side evaluation
    converts it to x's dtype and device and calls the score once on the whole batch.
    """
    shape, dtype, device = x.shape, x.dtype, x.device

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        xt = torch.from_numpy(y.reshape(shape)).to(dtype=dtype, device=device)
        return pf_drift(score, process, xt, float(t)).detach().cpu().double().numpy().ravel()

    y0 = x.detach().cpu().double().numpy().ravel()
    sol = solve_ivp(rhs, (1.0, t_end), y0, method="RK45", rtol=rtol, atol=atol)
    y = sol.y[:, -1]
    if sol.status != 0 or not np.isfinite(y).all():
        t_fail = float(sol.t[-1])
        raise DivergenceError("ode-rk45", len(sol.t) - 1, t_fail, t_end)
    return torch.from_numpy(y.reshape(shape)).to(dtype=dtype, device=device), sol


def rk45_run(
    score: Score,
    process: Process,
    x: Tensor,
    steps: int,
    *,
    noise: PerSampleNoise | None = None,
    t_end: float | None = None,
    final_noise: bool = False,
    denoise: bool = False,
    **options: Any,
) -> SampleResult:
    """Adaptive PF-ODE solve (score-SDE ``ode_sampler``; SAMPLERS.md 2.7): scipy ``solve_ivp``
    RK45 from t = 1 to t_end with tolerances rtol, atol; optional Tweedie denoise.

    ``steps`` is validated (an integer >= 1) and otherwise ignored: the step sizes are chosen by
    the error controller. ``norm="batch"`` (the reference code) integrates the flattened batch as
    one system, so the error norm (an RMS over every coordinate of every sample) and hence the
    accepted steps depend weakly on the batch; ``norm="per-sample"`` solves each sample on its own
    (batch-invariant output, one score call per sample and evaluation). ``final_noise`` and
    ``noise`` are accepted for the common signature; the solver draws no noise.

    NFE: batch mode, the solver's nfev (= the counted score calls; + 1 with denoise);
    per-sample mode, the largest nfev over the samples (+ 1), the total work being
    ``info["score_calls"]``.
    """
    t_end, opts, _ = prepare(ODE_RK45, process, steps, t_end, options)
    counted = CountingScore(score)
    rows = [x] if opts["norm"] == "batch" else list(x.split(1))
    outs, nfevs, accepted = [], [], []
    for row in rows:
        out, sol = _solve_rk45(counted, process, row, t_end, opts["rtol"], opts["atol"])
        outs.append(out)
        nfevs.append(int(sol.nfev))
        accepted.append(len(sol.t) - 1)
    x = torch.cat(outs)
    if denoise:
        x = tweedie(counted, process, x, t_end)
    nfe = max(nfevs) + int(denoise)
    info = {
        "options": opts,
        "denoised": denoise,
        "score_calls": counted.calls,
        "nfev": nfevs[0] if opts["norm"] == "batch" else nfevs,
        "accepted_steps": accepted[0] if opts["norm"] == "batch" else accepted,
        "steps_ignored": steps,
    }
    return SampleResult(x, nfe, t_end, info)


def validate_tolerances(process: Process, steps: int, t_end: float, options: Mapping) -> None:
    for key in ("rtol", "atol"):
        value = options[key]
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ValueError(f"option {key}={value!r} of sampler 'ode-rk45' must be a number > 0")


# ---- dpm-solver-2: exponential integrator in lambda ------------------------------------------


def _lambda_grid(process: Process, lams: Tensor, t_end: float) -> Schedule:
    """Times of a decreasing lambda grid, end points pinned to 1 and t_end exactly (t_of_lam of
    lam(1) may round to just above 1)."""
    ts = [float(process.t_of_lam(float(lam))) for lam in lams]
    ts[0], ts[-1] = 1.0, t_end
    return list(zip(ts[:-1], ts[1:], strict=True))


def dpm_schedule(process: Process, steps: int, t_end: float, options: Mapping) -> Schedule:
    """DPM-Solver time steps (dpm_solver_pytorch ``get_time_steps``; SAMPLERS.md 2.8):
    ``logSNR``: uniform in lambda from lambda(1) to lambda(t_end), t_k = t_of_lam(lambda_k);
    ``time_uniform``: uniform in t; ``time_quadratic``: t_k = (1 + k/N (sqrt(t_end) - 1))^2."""
    spacing = options["spacing"]
    if spacing == "logSNR":
        lams = torch.linspace(process.lam(1.0), process.lam(t_end), steps + 1, dtype=torch.float64)
        return _lambda_grid(process, lams, t_end)
    if spacing == "time_uniform":
        ts = torch.linspace(1.0, t_end, steps + 1, dtype=torch.float64).tolist()
    else:
        ts = (torch.linspace(1.0, math.sqrt(t_end), steps + 1, dtype=torch.float64) ** 2).tolist()
    ts[0], ts[-1] = 1.0, t_end
    return list(zip(ts[:-1], ts[1:], strict=True))


def noise_prediction(score: Score, process: Process, x: Tensor, t: float) -> Tensor:
    """eps(x, t) = -sigma(t) s(x, t) (SAMPLERS.md 1.2)."""
    return -process.sigma(t) * score(x, t)


def dpm_solver_2_step(
    score: Score, process: Process, x: Tensor, t: float, t_next: float, *, r1: float, **_: Any
) -> Transition:
    """Singlestep DPM-Solver-2 (Lu et al. 2022, arXiv 2206.00927, Alg. 1 with the noise
    prediction; dpm_solver_pytorch ``singlestep_dpm_solver_second_update``, solver_type
    'dpmsolver'; SAMPLERS.md 2.8). From s = t to t' = t_next, h = lambda(t') - lambda(s),
    s1 = t_of_lam(lambda(s) + r1 h):

        u  = alpha(s1)/alpha(s) x - sigma(s1) (e^{r1 h} - 1) eps(x, s),
        x' = alpha(t')/alpha(s) x - sigma(t') (e^h - 1) eps(x, s)
             - sigma(t') (e^h - 1) / (2 r1) [eps(u, s1) - eps(x, s)].
    """
    lam_s, lam_t = process.lam(t), process.lam(t_next)
    h = lam_t - lam_s
    s1 = process.t_of_lam(lam_s + r1 * h)
    a_s, sig_t = process.alpha(t), process.sigma(t_next)
    eps0 = noise_prediction(score, process, x, t)
    u = process.alpha(s1) / a_s * x - process.sigma(s1) * math.expm1(r1 * h) * eps0
    eps1 = noise_prediction(score, process, u, s1)
    phi = math.expm1(h)
    mean = (
        process.alpha(t_next) / a_s * x
        - sig_t * phi * eps0
        - sig_t * phi / (2 * r1) * (eps1 - eps0)
    )
    return Transition(mean, 0.0)


def validate_dpm(process: Process, steps: int, t_end: float, options: Mapping) -> None:
    r1 = options["r1"]
    if not (isinstance(r1, int | float) and 0.0 < r1 <= 1.0):
        raise ValueError(f"option r1={r1!r} of sampler 'dpm-solver-2' must lie in (0, 1]")


# ---- edm-heun: Heun in (x / alpha, sigma / alpha) on the rho-grid -----------------------------


def edm_sigma(process: Process, t: float) -> float:
    """sigma_hat(t) = sigma(t) / alpha(t) = exp(-lambda(t)): EDM's noise level (VE: sigma(t))."""
    return process.sigma(t) / process.alpha(t)


def edm_time(process: Process, sigma_hat: float) -> float:
    """Process time of the noise level sigma_hat (VE: log(sigma_hat/sigma_min) / log(max/min))."""
    return float(process.t_of_lam(-math.log(sigma_hat)))


def edm_schedule(process: Process, steps: int, t_end: float, options: Mapping) -> Schedule:
    """Karras et al. 2022, eq. 5 (SAMPLERS.md 2.9), ending at t_end instead of sigma = 0:

        sigma_i = (sigma_max^{1/rho} + i/N (sigma_min^{1/rho} - sigma_max^{1/rho}))^rho,
        i = 0..N, sigma_max = sigma_hat(1), sigma_min = sigma_hat(t_end), t_i = t(sigma_i).

    With churn, a noise-raising stage (t_i, t_hat_i), t_hat_i > t_i, precedes the Heun stage
    (t_hat_i, t_{i+1}) wherever sigma_hat_i = min(sigma_i (1 + gamma_i), sigma_max) > sigma_i.
    """
    rho = options["rho"]
    s_max, s_min = edm_sigma(process, 1.0), edm_sigma(process, t_end)
    ramp = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    sigmas = (
        (s_max ** (1 / rho) + ramp * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    ).tolist()
    ts = [1.0] + [edm_time(process, s) for s in sigmas[1:-1]] + [t_end]
    gamma = min(options["churn"] / steps, math.sqrt(2.0) - 1.0)
    schedule = []
    for sig, t, t_next in zip(sigmas[:-1], ts[:-1], ts[1:], strict=True):
        in_window = options["s_tmin"] <= sig <= options["s_tmax"]
        sig_hat = min(sig * (1.0 + gamma), s_max) if in_window else sig
        if sig_hat > sig:
            t_hat = 1.0 if sig_hat == s_max else edm_time(process, sig_hat)
            schedule.append((t, t_hat))
            t = t_hat
        schedule.append((t, t_next))
    return schedule


def edm_heun_step(
    score: Score, process: Process, x: Tensor, t: float, t_next: float, **options: Any
) -> Transition:
    """EDM deterministic sampler, one Heun step (Karras et al. 2022, Alg. 1 / Alg. 2 with
    S_churn = 0; NVlabs/edm ``edm_sampler``; SAMPLERS.md 2.9), in x_hat = x / alpha(t) against
    sigma_hat = sigma / alpha, with d(x, t) = -sigma(t) s(x, t) (= eps; VE: -sigma_i s):

        x_hat' = x_hat + (sigma_hat' - sigma_hat) d(x, t),
        x_hat'' = x_hat + (sigma_hat' - sigma_hat) [d(x, t) + d(alpha' x_hat', t')] / 2,
        x' = alpha' x_hat''.

    A stage with t_next > t is EDM's churn (Alg. 2, lines 4-6): x_hat' = x_hat +
    S_noise sqrt(sigma_hat'^2 - sigma_hat^2) z, no score call.
    """
    a, a_next = process.alpha(t), process.alpha(t_next)
    sig, sig_next = edm_sigma(process, t), edm_sigma(process, t_next)
    if t_next > t:
        return Transition(
            a_next / a * x, a_next * options["s_noise"] * sqrt_pos(sig_next**2 - sig**2)
        )
    x_hat = x / a
    d = noise_prediction(score, process, x, t)
    euler = x_hat + (sig_next - sig) * d
    d_next = noise_prediction(score, process, a_next * euler, t_next)
    return Transition(a_next * (x_hat + 0.5 * (sig_next - sig) * (d + d_next)), 0.0)


def validate_edm(process: Process, steps: int, t_end: float, options: Mapping) -> None:
    checks = {
        "rho": options["rho"] > 0,
        "churn": options["churn"] >= 0,
        "s_noise": options["s_noise"] >= 0,
        "s_tmin": 0 <= options["s_tmin"] <= options["s_tmax"],
    }
    rules = {
        "rho": "> 0",
        "churn": ">= 0",
        "s_noise": ">= 0",
        "s_tmin": f"in [0, s_tmax={options['s_tmax']}]",
    }
    for key, ok in checks.items():
        if not ok:
            raise ValueError(
                f"option {key}={options[key]!r} of sampler 'edm-heun' must be {rules[key]}"
            )


# ---- specs -----------------------------------------------------------------------------------

HUANG_RK2 = Claim("tv", 2.0, "Huang, Huang & Lin 2024, arXiv 2404.09730 (RK order 2: d (d h)^2)")

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
    claims=(HUANG_RK2,),
)

ODE_RK45 = SamplerSpec(
    name="ode-rk45",
    family="ODE (adaptive)",
    adaptive=True,
    stochastic=False,
    nfe_per_step=6,
    expected_order=None,
    run=rk45_run,
    citation=(
        "Song et al. 2021, arXiv 2011.13456 (score_sde ode_sampler); Dormand & Prince 1980 "
        "RK5(4) via scipy.integrate.solve_ivp"
    ),
    options={"rtol": 1e-5, "atol": 1e-5, "norm": "batch"},
    choices={"norm": ("batch", "per-sample")},
    validate=validate_tolerances,
)

DPM_SOLVER_2 = SamplerSpec(
    name="dpm-solver-2",
    family="ODE (exp. integrator)",
    stochastic=False,
    nfe_per_step=2,
    expected_order=2.0,
    step=dpm_solver_2_step,
    schedule=dpm_schedule,
    citation="Lu et al. 2022, DPM-Solver, arXiv 2206.00927 (singlestep DPM-Solver-2, r1 = 1/2)",
    claims=(Claim("w2", 2.0, "Lu et al. 2022, arXiv 2206.00927, Thm 3.2 (pathwise O(h^2))"),),
    options={"spacing": "logSNR", "r1": 0.5},
    choices={"spacing": ("logSNR", "time_uniform", "time_quadratic")},
    validate=validate_dpm,
)

EDM_HEUN = SamplerSpec(
    name="edm-heun",
    family="ODE",
    stochastic=False,
    nfe_per_step=2,
    expected_order=2.0,
    step=edm_heun_step,
    schedule=edm_schedule,
    citation="Karras et al. 2022, Elucidating the Design Space (EDM), arXiv 2206.00364, Alg. 1-2",
    claims=(HUANG_RK2,),
    options={"rho": 7.0, "churn": 0.0, "s_tmin": 0.0, "s_tmax": math.inf, "s_noise": 1.0},
    validate=validate_edm,
)

SPECS = (ODE_EULER, ODE_HEUN, ODE_RK45, DPM_SOLVER_2, EDM_HEUN)
