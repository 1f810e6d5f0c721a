"""Discrete-chain samplers on a grid of process times: DDPM (ancestral), DDIM and the accelerated
samplers of Li, Huang, Efimov, Wei, Chi & Chen (2024).

A step from t to t_next < t uses the marginal coefficients a = alpha(t), b = sigma(t),
a' = alpha(t_next), b' = sigma(t_next) and the exact forward transition x_t = rho x_{t_next} +
sqrt(beta) xi from ``process.transition`` (rho = a / a', beta = b^2 - rho^2 b'^2). On the VP
process rho^2 = alpha_t and beta = beta_t of Ho et al.'s chain (alpha_bar_k = alpha(t_k)^2); on VE
the same formulas give the SMLD ancestral sampler (SAMPLERS.md 2.4).

Time grids (option ``spacing``, all four samplers): "uniform" is t_k = 1 - k (1 - t_end) / S;
"quadratic" is the DDIM paper's quadratic sub-sequence moved to process time,

    t_k = t_end + (1 - t_end) ((S - k) / S)^2,    k = 0..S,

dense near t_end like tau_i = floor((i sqrt(0.8 T) / (S - 1))^2) (Song et al. 2021, App. D.2;
SAMPLERS.md 2.2); "li-yan" is the Li & Yan (2024) schedule (SAMPLERS.md 3.1, THEORY.md 1.2) moved
to process time between the fixed end points (see ``li_yan_grid``).

The Li et al. samplers do not fit one Gaussian kernel per step, so each of their steps is run as
two kernel stages (the schedule repeats the step's times; the stage is told apart by its index k):

* ``li-accel-ddpm``: stage 1 adds the pre-noise (no score call), stage 2 is the DDPM-type mean
  at the pre-noised point plus the post-noise. Both stages are Gaussian kernels, so sampling and
  exact propagation use them unchanged, with 1 NFE per step.
* ``li-accel-ddim``: the first step is plain DDIM (its one stage calls the score); every later step
  is stage A (schedule pair (t_prev, t): calls the score at x_t and stores eps_t and the slope
  (eps_prev - eps_t) / (alpha_bar_t - alpha_bar_prev) in the multistep state; x unchanged) then
  stage B (pair (t, t_next): DDIM plus the correction, no score call). 2S - 1 stages, S NFE.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from itertools import pairwise
from typing import Any

import torch

from analytic.processes import Process, li_yan_betas
from convergence.samplers.base import (
    Claim,
    SamplerSpec,
    Schedule,
    Score,
    Tensor,
    Transition,
    sqrt_pos,
    uniform_schedule,
)

SPACINGS = ("uniform", "quadratic", "li-yan")


# ---- time grids ----------------------------------------------------------------------------


def discrete_schedule(
    process: Process, steps: int, t_end: float, options: Mapping[str, Any]
) -> Schedule:
    """The (t_k, t_{k+1}) pairs of the grid chosen by ``options["spacing"]``:
    uniform t_k = 1 - k (1 - t_end) / S, or quadratic t_k = t_end + (1 - t_end) ((S - k) / S)^2."""
    if options["spacing"] == "uniform":
        return uniform_schedule(process, steps, t_end, options)
    if options["spacing"] == "li-yan":
        return list(pairwise(li_yan_grid(process, steps, t_end)))
    inner = [t_end + (1.0 - t_end) * ((steps - k) / steps) ** 2 for k in range(1, steps)]
    return list(pairwise([1.0, *inner, t_end]))


def li_yan_grid(process: Process, steps: int, t_end: float) -> list[float]:
    """Process times 1 = t_0 > ... > t_S = t_end whose noise increments follow Li & Yan's schedule.

    Li & Yan (2024, THEORY.md 1.2) fix beta_1 = S^-c0 and beta_{k+1} = (c1 log S / S)
    min(beta_1 (1 + c1 log S / S)^k, 1): a geometric ramp of the noise added per step near the data,
    then a constant rate. Their chain sets its own end points (alpha_bar_1 = 1 - S^-c0 depends on
    S), while here the output is compared with the marginal at a fixed t_end. So the shape is kept
    and the scale adjusted: with the VP-equivalent alpha_bar(t) = alpha^2 / (alpha^2 + sigma^2)
    (= sigmoid(2 lambda(t)); alpha_bar itself on VP) and L = -log alpha_bar,

        L(t_{S-k}) = L(t_end) + (L(1) - L(t_end)) c_k,
        c_k = sum_{j<=k} -log(1 - beta_j) / sum_{j<=S} -log(1 - beta_j),

    i.e. each step adds the same fraction of the total -log alpha_bar as Li & Yan's step does.
    Default constants (c0, c1) = (2, 4) of ``analytic.processes.li_yan_betas`` (the paper leaves
    them unspecified); S >= 16 steps are needed (c1 log S / S < 1).
    """
    if steps < 16:
        raise ValueError(f"spacing 'li-yan' needs steps >= 16 (c1 log T / T < 1), got {steps}")
    increments = -torch.log1p(-li_yan_betas(steps))
    c = torch.cat([increments.new_zeros(1), torch.cumsum(increments, 0)]) / increments.sum()

    def minus_log_alpha_bar(t: float) -> float:  # -log sigmoid(2 lambda) = softplus(-2 lambda)
        return float(torch.nn.functional.softplus(torch.tensor(-2.0 * float(process.lam(t)))))

    lo, hi = minus_log_alpha_bar(t_end), minus_log_alpha_bar(1.0)
    ell = lo + (hi - lo) * c  # -log alpha_bar from the data end (k = 0) to the noise end
    lam = -0.5 * torch.log(torch.expm1(ell))  # inverse of L = softplus(-2 lambda)
    grid = [float(process.t_of_lam(float(v))) for v in lam.flip(0)]
    grid[0], grid[-1] = 1.0, t_end  # the end points exactly, not up to rounding of the inverse
    return grid


def li_ddpm_schedule(
    process: Process, steps: int, t_end: float, options: Mapping[str, Any]
) -> Schedule:
    """Every step's pair twice: stage 2k adds the pre-noise, stage 2k + 1 is the main update."""
    return [pair for pair in discrete_schedule(process, steps, t_end, options) for _ in (0, 1)]


def li_ddim_schedule(
    process: Process, steps: int, t_end: float, options: Mapping[str, Any]
) -> Schedule:
    """Stage 0 = step 0 (t_0, t_1); then for step j >= 1 stage 2j - 1 = (t_{j-1}, t_j) (score call
    and slope) and stage 2j = (t_j, t_{j+1}) (DDIM plus correction)."""
    grid = discrete_schedule(process, steps, t_end, options)
    return [grid[0]] + [pair for j in range(1, steps) for pair in (grid[j - 1], grid[j])]


def check_eta(process: Process, steps: int, t_end: float, options: Mapping[str, Any]) -> None:
    eta = options["eta"]
    if isinstance(eta, bool) or not isinstance(eta, int | float) or not 0.0 <= eta <= 1.0:
        raise ValueError(f"option eta of sampler 'ddim' must be a number in [0, 1], got {eta!r}")


def check_vp(process: Process, steps: int, t_end: float, options: Mapping[str, Any]) -> None:
    """li-accel-ddim's coefficients are written in alpha_bar = alpha(t)^2 of a VP chain."""
    a, b = process.alpha(1.0), process.sigma(1.0)
    if abs(a * a + b * b - 1.0) > 1e-12:
        raise ValueError(
            f"sampler 'li-accel-ddim' needs a variance-preserving process (alpha^2 + sigma^2 = 1, "
            f"coefficients in alpha_bar = alpha^2), got {process.name!r}"
        )


# ---- DDPM and DDIM -------------------------------------------------------------------------


def ddpm_step(
    score: Score,
    process: Process,
    x: Tensor,
    t: float,
    t_next: float,
    *,
    variance: str,
    spacing: str = "uniform",
) -> Transition:
    """DDPM ancestral step, score form (Ho et al. 2020, eq. 11; SAMPLERS.md 2.1):

    x' = (x + beta s(x, t)) / rho + std z,
    std^2 = beta (Ho), beta * b'^2 / b^2 (Ho's beta-tilde), or beta / rho^2 (Li & Yan 2024).
    """
    rho, beta = process.transition(t_next, t)
    mean = (x + beta * score(x, t)) / rho
    if variance == "beta":
        var = beta
    elif variance == "beta_tilde":
        var = beta * (process.sigma(t_next) / process.sigma(t)) ** 2
    else:  # "li": Y' = (Y + (1 - alpha) s + sqrt(1 - alpha) Z) / sqrt(alpha)
        var = beta / rho**2
    return Transition(mean, sqrt_pos(var))


def ddim_update(
    process: Process, x: Tensor, eps: Tensor, t: float, t_next: float, eta: float = 0.0
) -> Transition:
    """DDIM from the noise prediction eps (Song, Meng & Ermon 2021, eq. 12; SAMPLERS.md 2.2):

    x0_hat = (x - b eps) / a,   x' = a' x0_hat + sqrt(b'^2 - sigma_eta^2) eps + sigma_eta z,
    sigma_eta^2 = eta^2 (b'^2 / b^2) beta.

    On VP, b^2 = 1 - abar, b'^2 = 1 - abar_prev and beta = 1 - abar / abar_prev, so sigma_eta is
    the paper's eta sqrt((1 - abar_prev) / (1 - abar)) sqrt(1 - abar / abar_prev); on VE
    (a = a' = 1) it is eta times the posterior std of the SMLD chain. eta = 1 gives DDPM with
    Ho's beta-tilde variance (same mean, same noise).
    """
    a, b = process.alpha(t), process.sigma(t)
    a_next, b_next = process.alpha(t_next), process.sigma(t_next)
    var = 0.0
    if eta > 0:
        var = eta * eta * (b_next / b) ** 2 * process.transition(t_next, t)[1]
    direction = sqrt_pos(b_next * b_next - var)
    return Transition(a_next * (x - b * eps) / a + direction * eps, sqrt_pos(var))


def ddim_step(
    score: Score,
    process: Process,
    x: Tensor,
    t: float,
    t_next: float,
    *,
    eta: float = 0.0,
    spacing: str = "uniform",
) -> Transition:
    """DDIM step with eps = -b s(x, t) (``ddim_update``); eta = 0 is deterministic:
    x0_hat = (x + b^2 s) / a, x' = a' x0_hat - b' b s."""
    return ddim_update(process, x, -process.sigma(t) * score(x, t), t, t_next, eta)


# ---- Li et al. 2024 ------------------------------------------------------------------------


def li_ddpm_step(
    score: Score,
    process: Process,
    x: Tensor,
    t: float,
    t_next: float,
    *,
    k: int,
    pre_noise: str,
    spacing: str = "uniform",
) -> Transition:
    """Accelerated stochastic sampler (Li et al. 2024, arXiv 2403.03852, README rule;
    SAMPLERS.md 3.2), one step as two stages with alpha_t = rho^2, 1 - alpha_t = beta:

    stage 1 (even k): Y+ = Y + c sqrt(beta / 2) Z               (no score call)
    stage 2 (odd k):  Y' = (Y+ + beta s(Y+, t)) / rho + sqrt(beta / 2) Z+

    c = 1 (README, ``pre_noise="readme"``) or c = rho = sqrt(alpha_t) (CIFAR code
    ``ddpm_steps_accelerated``, ``pre_noise="cifar"``).
    """
    rho, beta = process.transition(t_next, t)
    half = math.sqrt(beta / 2.0)
    if k % 2 == 0:
        return Transition(x, rho * half if pre_noise == "cifar" else half)
    return Transition((x + beta * score(x, t)) / rho, half)


def li_ddim_bracket(ab: float, ab_next: float) -> float:
    """[abar_t G(abar_{t-1}) + arcsin sqrt(abar_{t-1}) - abar_t G(abar_t) - arcsin sqrt(abar_t)]
    with G(a) = sqrt((1 - a) / a): the integral of (a - abar_t) dG(a) from abar_t to abar_{t-1}
    with its sign flipped (SAMPLERS.md 3.3 (a))."""

    def g(a: float) -> float:
        return math.sqrt((1.0 - a) / a)

    return ab * g(ab_next) + math.asin(math.sqrt(ab_next)) - ab * g(ab) - math.asin(math.sqrt(ab))


def li_ddim_step(
    score: Score,
    process: Process,
    x: Tensor,
    t: float,
    t_next: float,
    *,
    k: int,
    state: Tensor | None,
    spacing: str = "uniform",
) -> Transition:
    """Accelerated deterministic sampler, 1-NFE multistep form of the official code
    (Li et al. 2024, arXiv 2403.03852, ``generalized_steps_accelerated``; SAMPLERS.md 3.3 (a)):

    X_{t-1} = DDIM(X_t, eps_t)
              + sqrt(abar_{t-1}) / (abar_t - abar_{t+1}) * bracket * (eps_{t+1} - eps_t),

    abar = alpha^2 on the process grid, eps_{t+1} the previous step's noise prediction, bracket
    from ``li_ddim_bracket``. Stages (``li_ddim_schedule``): k = 0 plain DDIM, state eps_0;
    odd k (pair (t_prev, t)): eps_t = -b s(x, t), state [eps_t, (eps_prev - eps_t) / (abar_t -
    abar_prev)], x unchanged; even k > 0 (pair (t, t_next)): DDIM with eps_t plus
    sqrt(abar_{t-1}) bracket times the stored slope, state eps_t.
    """
    d = x.shape[1]
    if k == 0:
        eps = -process.sigma(t) * score(x, t)
        return Transition(ddim_update(process, x, eps, t, t_next).mean, 0.0, eps)
    if k % 2 == 1:  # (t, t_next) = (t_prev, t_cur)
        eps = -process.sigma(t_next) * score(x, t_next)
        delta = process.alpha(t_next) ** 2 - process.alpha(t) ** 2
        return Transition(x, 0.0, torch.cat([eps, (state - eps) / delta], dim=1))
    eps, slope = state[:, :d], state[:, d:]
    ab, ab_next = process.alpha(t) ** 2, process.alpha(t_next) ** 2
    correction = math.sqrt(ab_next) * li_ddim_bracket(ab, ab_next) * slope
    return Transition(ddim_update(process, x, eps, t, t_next).mean + correction, 0.0, eps)


# ---- specs ---------------------------------------------------------------------------------

LI_2024 = "Li, Huang, Efimov, Wei, Chi & Chen 2024, Accelerating Convergence of Score-Based " + (
    "Diffusion Models, Provably, ICML 2024, arXiv 2403.03852"
)

DDPM = SamplerSpec(
    name="ddpm",
    family="discrete-chain",
    stochastic=True,
    nfe_per_step=1,
    expected_order=1.0,
    step=ddpm_step,
    schedule=discrete_schedule,
    citation="Ho, Jain & Abbeel 2020, Denoising Diffusion Probabilistic Models, arXiv 2006.11239",
    claims=(
        Claim("tv", 0.5, "Chen et al. 2023, arXiv 2209.11215 (TV <~ L sqrt(d/T))"),
        Claim("kl", 1.0, "Benton et al. 2024, arXiv 2308.03686 (KL <~ d/T)"),
        Claim("tv", 1.0, "Li & Yan 2024, arXiv 2409.18959 (TV <~ d log^3 T / T)"),
    ),
    options={"variance": "beta", "spacing": "uniform"},
    choices={"variance": ("beta", "beta_tilde", "li"), "spacing": SPACINGS},
)

DDIM = SamplerSpec(
    name="ddim",
    family="discrete-chain",
    stochastic=False,  # for the default eta = 0; eta > 0 adds noise (still affine)
    nfe_per_step=1,
    expected_order=1.0,
    step=ddim_step,
    schedule=discrete_schedule,
    citation="Song, Meng & Ermon 2021, Denoising Diffusion Implicit Models, arXiv 2010.02502",
    claims=(
        Claim("tv", 1.0, "Li et al. 2024, arXiv 2306.09251 (TV <~ d^2/T + d^6/T^2)"),
        Claim("tv", 1.0, "Li et al. 2024, arXiv 2408.02320 (TV <~ d/T for T >> d^2)"),
    ),
    options={"eta": 0.0, "spacing": "uniform"},
    choices={"spacing": SPACINGS},
    validate=check_eta,
)

LI_ACCEL_DDPM = SamplerSpec(
    name="li-accel-ddpm",
    family="discrete-chain",
    stochastic=True,
    nfe_per_step=1,
    expected_order=1.0,
    step=li_ddpm_step,
    schedule=li_ddpm_schedule,
    context=("k",),
    citation=LI_2024,
    claims=(Claim("tv", 1.0, "Li et al. 2024, arXiv 2403.03852 (TV O(1/T); metric recalled)"),),
    options={"pre_noise": "readme", "spacing": "uniform"},
    choices={"pre_noise": ("readme", "cifar"), "spacing": SPACINGS},
)

LI_ACCEL_DDIM = SamplerSpec(
    name="li-accel-ddim",
    family="discrete-chain",
    stochastic=False,
    nfe_per_step=1,
    expected_order=2.0,
    step=li_ddim_step,
    schedule=li_ddim_schedule,
    context=("k", "state"),
    citation=LI_2024,
    claims=(Claim("tv", 2.0, "Li et al. 2024, arXiv 2403.03852 (TV O(1/T^2))"),),
    options={"spacing": "uniform"},
    choices={"spacing": SPACINGS},
    validate=check_vp,
    processes=("vp",),
)

SPECS = (DDPM, DDIM, LI_ACCEL_DDPM, LI_ACCEL_DDIM)
