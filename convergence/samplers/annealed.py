"""Annealed Langevin samplers on a geometric noise ladder: ALS and CAS (SAMPLERS.md 4).

Noise levels (SAMPLERS.md 4.1; code `get_sigma`, np.geomspace): sigma_1 > ... > sigma_L geometric
with ratio gamma = (sigma_L / sigma_1)^(1 / (L - 1)), on the VE process, whose marginal
p_sigma = p_0 * N(0, sigma^2 I) is exactly the noised law the NCSN score s(x, sigma) targets.
Here sigma_1 = sigma(1) and sigma_L = sigma(t_end); since VE's sigma(t) is geometric in t, the
ladder is the uniform time grid t_i = linspace(1, t_end, L). ``steps`` is the number of levels L
(L >= 2). The specs declare the VE process only: VP marginals are not of the form
p_0 * N(0, sigma^2 I).

Step size. Both samplers scale the step with the level, alpha_i = step_lr sigma_i^2 / sigma_L^2 =
eta sigma_i^2 with the dimensionless eta = step_lr / sigma_L^2 (the CAS code's own variable).
The option is ``eta``, not the paper's step_lr: a step kernel sees only its own pair of levels,
never t_end, so it can not convert step_lr; and eta keeps its meaning when t_end changes (the CAS
consistency interval and the ALS fixed point below are stated in eta). step_lr = eta sigma(t_end)^2.

Both are chains of Gaussian kernels (affine in x for an affine score), so the exact Gaussian
evaluator applies. The output approximates the marginal at t_end (sigma_L). Final denoising
(SAMPLERS.md 1.3 (b), 2.10): ``denoise=True`` of the runner applies the Tweedie/EDS map
x + sigma_L^2 s(x, sigma_L) after the last step (+1 NFE); option ``denoise_last`` is the reference
code's variant, which re-uses the last evaluation (0 extra NFE): the last step returns the EDS of
the state *before* it, x_pre + sigma_L^2 s(x_pre, sigma_L), with no noise. Both outputs
approximate the law of the exact Tweedie denoiser applied to X ~ p_{sigma_L}, and the evaluator
compares either with that reference (the specs declare ``denoised_output``).

CAS keeps the idealised single-point sample exactly on the ladder (SAMPLERS.md 4.3); for a
Gaussian target N(mu, s^2 I) one level misses the next marginal variance by
-eta^2 sigma_i^2 s^2 / (s^2 + sigma_i^2) [DERIVED], so at fixed eta CAS has an error floor as
L grows (eta ~ 1 - gamma ~ 1/L removes it). Option ``eta_rule`` sets eta from the ladder instead
of ``eta``: "paper" (the CAS README's CIFAR-10 place in the consistency interval) or "near-one"
(eta = 1 - (1 - gamma) / 2). NFE: ALS L n_sigma, CAS (L - 1) n_sigma + 1
(nfe_per_step = 1 per kernel step). See docs/samplers/annealed.md for measured numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from analytic.processes import Process
from convergence.samplers.base import SamplerSpec, Schedule, Score, Tensor, Transition, sqrt_pos

CITATION = (
    "Jolicoeur-Martineau, Piche-Taillefer, Tachet des Combes & Mitliagkas 2021, Adversarial "
    "score matching and improved sampling for image generation, ICLR, arXiv 2009.05475"
)


def level_times(process: Process, levels: int, t_end: float) -> list[float]:
    """Times of the geometric ladder sigma(1) > ... > sigma(t_end): uniform in VE time."""
    return torch.linspace(1.0, t_end, levels, dtype=torch.float64).tolist()


def cas_levels(steps: int, n_sigma: int) -> int:
    """Number of CAS levels: n_sigma refines the ladder to L' = (L - 1) n_sigma + 1 levels."""
    return (steps - 1) * n_sigma + 1


def als_schedule(
    process: Process, steps: int, t_end: float, options: Mapping[str, Any]
) -> Schedule:
    """Each of the L levels n_sigma times, as (t_i, t_i): a Langevin step stays at its level."""
    return [(t, t) for t in level_times(process, steps, t_end) for _ in range(options["n_sigma"])]


def cas_schedule(
    process: Process, steps: int, t_end: float, options: Mapping[str, Any]
) -> Schedule:
    """(t_i, t_{i+1}) for i < L', then (t_L', t_L'): the drift acts at sigma_i, the noise puts the
    sample at sigma_{i+1}; the last level has no next level (its noise is dropped by the plan)."""
    ts = level_times(process, cas_levels(steps, options["n_sigma"]), t_end)
    return list(zip(ts[:-1], ts[1:], strict=True)) + [(ts[-1], ts[-1])]


def als_step(
    score: Score,
    process: Process,
    x: Tensor,
    t: float,
    t_next: float,
    *,
    last: bool,
    eta: float,
    n_sigma: int,
    denoise_last: bool,
) -> Transition:
    """One Langevin step at level sigma_i = sigma(t) (Song & Ermon 2019, Alg. 1; SAMPLERS.md 4.2):

    x' = x + alpha_i s(x, sigma_i) + sqrt(2 alpha_i) z,   alpha_i = eta sigma_i^2.

    With ``denoise_last`` the last step is the reference code's EDS from the last evaluation:
    x' = x + sigma_L^2 s(x, sigma_L), no noise. (n_sigma only shapes the schedule.)
    """
    sigma2 = process.sigma(t) ** 2
    if last and denoise_last:
        return Transition(x + sigma2 * score(x, t), 0.0)
    alpha = eta * sigma2
    return Transition(x + alpha * score(x, t), math.sqrt(2.0 * alpha))


def cas_step(
    score: Score,
    process: Process,
    x: Tensor,
    t: float,
    t_next: float,
    *,
    last: bool,
    eta: float,
    n_sigma: int,
    denoise_last: bool,
    k: int | None = None,
    eta_rule: str = "fixed",
) -> Transition:
    """One consistent annealed step from sigma_i = sigma(t) to sigma_{i+1} = sigma(t_next)
    (Jolicoeur-Martineau et al. 2021, consistent annealed sampling; code
    `anneal_Langevin_dynamics_consistent`, `compute_beta`; SAMPLERS.md 4.3):

    x' = x + eta sigma_i^2 s(x, sigma_i) + beta sigma_{i+1} z,
    beta = sqrt(1 - ((1 - eta) / gamma)^2),  gamma = sigma_{i+1} / sigma_i.

    At the last level (t_next = t, gamma = 1) the noise is dropped unless final_noise is asked,
    in which case it keeps an idealised sample at sigma_L. With ``denoise_last`` the last step is
    the code's output x_pre + sigma_L^2 s(x_pre, sigma_L), no noise.
    """
    sigma, sigma_next = process.sigma(t), process.sigma(t_next)
    if last and denoise_last:
        return Transition(x + sigma * sigma * score(x, t), 0.0)
    gamma = sigma_next / sigma
    if eta_rule != "fixed":
        # the ladder's ratio: this step's, or at the last level (k steps after sigma_1) the k-th
        # root of sigma_L / sigma_1
        ladder = gamma if not last else (sigma / process.sigma(1.0)) ** (1.0 / k)
        eta = cas_eta(eta, eta_rule, ladder)
    mean = x + eta * sigma * sigma * score(x, t)
    return Transition(mean, sigma_next * sqrt_pos(1.0 - ((1.0 - eta) / gamma) ** 2))


CAS_PAPER_SCALE = 0.056 / (1.0 - (0.01 / 50.0) ** (1.0 / 231.0))
"""The CAS README's CIFAR-10 step (Jolicoeur-Martineau et al. 2021): step_lr 5.6e-6 on sigma
50 -> 0.01 with L = 232 levels, i.e. eta = 5.6e-6 / 0.01^2 = 0.056, 1.55 times the lower end
1 - gamma = 0.0362 of the consistency interval. Other ladders get eta at the same multiple of
their 1 - gamma (``eta_rule = "paper"``)."""


def cas_eta(eta: float, rule: str, gamma: float) -> float:
    """CAS's eta on a ladder of ratio gamma: the option itself ("fixed"), the paper's place in
    the consistency interval CAS_PAPER_SCALE (1 - gamma) ("paper"), or 1 - (1 - gamma) / 2
    ("near-one": eta ~ 1 - c / L, beta ~ 1, no error floor as L grows)."""
    if rule == "paper":
        return CAS_PAPER_SCALE * (1.0 - gamma)
    if rule == "near-one":
        return 1.0 - 0.5 * (1.0 - gamma)
    return eta


def _check_common(name: str, process: Process, steps: int, options: Mapping[str, Any]) -> None:
    if steps < 2:
        raise ValueError(f"sampler {name!r} needs steps (noise levels) >= 2, got {steps}")
    n_sigma = options["n_sigma"]
    if not isinstance(n_sigma, int) or isinstance(n_sigma, bool) or n_sigma < 1:
        raise ValueError(
            f"option n_sigma of sampler {name!r} must be an integer >= 1, got {n_sigma!r}"
        )
    eta = options["eta"]
    if isinstance(eta, bool) or not isinstance(eta, int | float) or not 0.0 < eta < math.inf:
        raise ValueError(f"option eta of sampler {name!r} must be a finite number > 0, got {eta!r}")


def validate_als(process: Process, steps: int, t_end: float, options: Mapping[str, Any]) -> None:
    _check_common("als", process, steps, options)


def validate_cas(process: Process, steps: int, t_end: float, options: Mapping[str, Any]) -> None:
    """The consistency condition 1 - gamma < eta < 1 + gamma (asserted in the code) on the
    refined ladder of L' levels."""
    _check_common("cas", process, steps, options)
    levels = cas_levels(steps, options["n_sigma"])
    sigma_1, sigma_l = process.sigma(1.0), process.sigma(t_end)
    gamma = (sigma_l / sigma_1) ** (1.0 / (levels - 1))
    eta = cas_eta(options["eta"], options.get("eta_rule", "fixed"), gamma)
    lo, hi = 1.0 - gamma, 1.0 + gamma
    if not lo < eta < hi:
        raise ValueError(
            f"option eta of sampler 'cas' must satisfy 1 - gamma < eta < 1 + gamma, i.e. lie in "
            f"({lo:.6g}, {hi:.6g}) for gamma = {gamma:.6g} ({levels} levels, sigma {sigma_1:.4g} "
            f"-> {sigma_l:.4g}; step_lr = eta sigma_L^2 in ({lo * sigma_l**2:.4g}, "
            f"{hi * sigma_l**2:.4g})), got eta={eta!r}"
        )


ALS_ETA = 1.0
"""Default ALS eta. Stable on every Gaussian mixture (alpha_i times the largest curvature of
-log p_sigma is at most eta < 2). Measured on gaussian_target(2), VE, exact W2 at L = 20, 80, 320
levels: eta = 1: 0.62, 0.13, 0.030; eta = 0.5: 1.7, 0.23, 0.052 (smaller eta lags more on short
ladders). In the idealised single-point setting a frozen level's variance tends to
2 sigma^2 / (2 - eta) (SAMPLERS.md 4.3), but at the low levels that matter (sigma << data scale)
the bias factor is 2 / (2 - eta c) with c = sigma^2 / (s^2 + sigma^2) close to 0."""

CAS_ETA = 1.0
"""Default CAS eta: inside the consistency interval (1 - gamma, 1 + gamma) for every ladder; then
beta = 1 and each step is Tweedie denoise at sigma_i followed by fresh noise sigma_{i+1} z."""

ALS = SamplerSpec(
    name="als",
    family="annealed Langevin",
    stochastic=True,
    nfe_per_step=1,
    expected_order=None,
    step=als_step,
    schedule=als_schedule,
    context=("last",),
    citation="Song & Ermon 2019, Generative modeling by estimating gradients of the data "
    "distribution, arXiv 1907.05600 (annealed Langevin dynamics); denoising: " + CITATION,
    options={"eta": ALS_ETA, "n_sigma": 1, "denoise_last": False},
    choices={"denoise_last": (False, True)},
    processes=("ve",),
    validate=validate_als,
    denoised_output=lambda options: options["denoise_last"],
)

CAS = SamplerSpec(
    name="cas",
    family="annealed Langevin",
    stochastic=True,
    nfe_per_step=1,
    expected_order=None,
    step=cas_step,
    schedule=cas_schedule,
    context=("last", "k"),
    citation=CITATION,
    options={"eta": CAS_ETA, "n_sigma": 1, "denoise_last": False, "eta_rule": "fixed"},
    choices={"denoise_last": (False, True), "eta_rule": ("fixed", "paper", "near-one")},
    processes=("ve",),
    validate=validate_cas,
    denoised_output=lambda options: options["denoise_last"],
)

SPECS = (ALS, CAS)
