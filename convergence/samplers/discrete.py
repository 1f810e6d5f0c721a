"""Discrete-chain samplers on a grid of process times: DDPM (ancestral) and DDIM.

A step from t to t_next < t uses the marginal coefficients a = alpha(t), b = sigma(t),
a' = alpha(t_next), b' = sigma(t_next) and the exact forward transition x_t = rho x_{t_next} +
sqrt(beta) xi from ``process.transition`` (rho = a / a', beta = b^2 - rho^2 b'^2). On the VP
process rho^2 = alpha_t and beta = beta_t of Ho et al.'s chain (alpha_bar_k = alpha(t_k)^2); on VE
the same formulas give the SMLD ancestral sampler (SAMPLERS.md 2.4).
"""

from __future__ import annotations

from analytic.processes import Process
from convergence.samplers.base import Claim, SamplerSpec, Score, Tensor, Transition, sqrt_pos


def ddpm_step(
    score: Score, process: Process, x: Tensor, t: float, t_next: float, *, variance: str
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


def ddim_step(score: Score, process: Process, x: Tensor, t: float, t_next: float) -> Transition:
    """DDIM with eta = 0 (Song, Meng & Ermon 2021, eq. 12; SAMPLERS.md 2.2):

    x0_hat = (x + b^2 s) / a,  eps = -b s,  x' = a' x0_hat + b' eps.
    """
    a, b = process.alpha(t), process.sigma(t)
    a_next, b_next = process.alpha(t_next), process.sigma(t_next)
    s = score(x, t)
    return Transition(a_next * (x + b * b * s) / a - b_next * b * s, 0.0)


DDPM = SamplerSpec(
    name="ddpm",
    family="discrete-chain",
    stochastic=True,
    nfe_per_step=1,
    expected_order=1.0,
    step=ddpm_step,
    citation="Ho, Jain & Abbeel 2020, Denoising Diffusion Probabilistic Models, arXiv 2006.11239",
    claims=(
        Claim("tv", 0.5, "Chen et al. 2023, arXiv 2209.11215 (TV <~ L sqrt(d/T))"),
        Claim("kl", 1.0, "Benton et al. 2024, arXiv 2308.03686 (KL <~ d/T)"),
        Claim("tv", 1.0, "Li & Yan 2024, arXiv 2409.18959 (TV <~ d log^3 T / T)"),
    ),
    options={"variance": "beta"},
    choices={"variance": ("beta", "beta_tilde", "li")},
)

DDIM = SamplerSpec(
    name="ddim",
    family="discrete-chain",
    stochastic=False,
    nfe_per_step=1,
    expected_order=1.0,
    step=ddim_step,
    citation="Song, Meng & Ermon 2021, Denoising Diffusion Implicit Models, arXiv 2010.02502",
    claims=(
        Claim("tv", 1.0, "Li et al. 2024, arXiv 2306.09251 (TV <~ d^2/T + d^6/T^2)"),
        Claim("tv", 1.0, "Li et al. 2024, arXiv 2408.02320 (TV <~ d/T for T >> d^2)"),
    ),
)

SPECS = (DDPM, DDIM)
