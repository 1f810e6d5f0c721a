"""Exact noise-level tracking of annealed Langevin: does the sample carry the noise level the
schedule says? (SAMPLERS.md 4.3 "Consistency condition"; issue 6 claim 8.)

Target N(mu, s^2 I) on the VE process, whose noised marginal at level sigma is N(mu, (s^2 +
sigma^2) I); s = 0 is the idealised single-point target of the propositions, with score
s(x, sigma) = -(x - mu) / sigma^2. Both scores are affine, so the law of the state after every
kernel step of the sampler is Gaussian and is propagated exactly through the sampler's own step
function (``convergence.evaluators.gaussian.propagate`` with its ``on_step`` hook): no update rule
is written here. The start is the exact marginal at sigma_1, N(mu, (s^2 + sigma_1^2) I).

Reading. Each kernel step from t to t_next hands on a sample meant to carry the noise level
sigma(t_next): ALS's Langevin steps at level i target p_{sigma_i} (t_next = t_i), CAS's step i
adds beta sigma_{i+1} z to put the sample at sigma_{i+1}. Level i reports the law after the last
step ending at t_i (ALS: after its n_sigma steps at sigma_i; CAS: after the step into sigma_i, the
start for i = 1), with

    var_i = tr(Cov) / d,   sigma_eff_i = sqrt(var_i - s^2),   ratio_i = sigma_eff_i / sigma_i,
    var_ratio_i = var_i / (s^2 + sigma_i^2)

(sigma_eff is None when var_i < s^2). ``final_noise`` defaults to True here: the last kernel keeps
its noise, as in the ALS reference code, and for CAS it is the gamma = 1 step that keeps an
idealised sample at sigma_L; the samplers' default drops it (their output is the last mean).

Predictions (idealised s = 0). CAS: ratio_i = 1 at every level (SAMPLERS.md 4.3). ALS: one
Langevin step maps v to rho v + 2 eta sigma_i^2, rho = (1 - eta)^2 (SAMPLERS.md 4.3), so with
r_i = var_i / sigma_i^2 and n = n_sigma steps per level [DERIVED]

    r_1 = rho^n + a (1 - rho^n),   r_i = rho^n r_{i-1} / gamma^2 + a (1 - rho^n),
    a = 2 / (2 - eta),

with the steady state r = a (1 - rho^n) / (1 - rho^n / gamma^2) on a geometric ladder (when
rho^n < gamma^2) and the frozen-level limit r -> a = 2 / (2 - eta) as n -> infinity: ALS lags and
overshoots the schedule by sqrt(r) (``als_ratio_recursion``, ``als_steady_ratio``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from analytic.gmm import GaussianMixture
from analytic.processes import VE, Process
from convergence.evaluators import gaussian as exact
from convergence.samplers import SamplerSpec, get_spec
from convergence.samplers.annealed import cas_eta
from convergence.samplers.base import check_t_end

Tensor = torch.Tensor


def _target(target: Any) -> tuple[float, Tensor]:
    """(s, mu) of an isotropic Gaussian target: a std s >= 0 (1-D, mu = 0) or a one-component
    GaussianMixture with covariance s^2 I."""
    if isinstance(target, GaussianMixture):
        if target.n_components != 1:
            raise ValueError(f"target must be a single Gaussian, got {target.n_components} parts")
        cov = target.covariance_matrices()[0]
        s2 = float(torch.diagonal(cov).mean())
        eye = torch.eye(target.dim, dtype=cov.dtype)
        if not torch.allclose(cov, s2 * eye, rtol=1e-12, atol=1e-15):
            raise ValueError("target covariance must be isotropic (s^2 I) to define sigma_eff")
        return math.sqrt(s2), target.means[0].to(torch.float64)
    if isinstance(target, bool) or not isinstance(target, int | float):
        raise ValueError(f"target must be a std s >= 0 or a GaussianMixture, got {target!r}")
    if not (math.isfinite(target) and target >= 0):
        raise ValueError(f"target std must be a finite number >= 0, got {target!r}")
    return float(target), torch.zeros(1, dtype=torch.float64)


def _score(s: float, mu: Tensor, process: Process) -> Callable[[Tensor, float], Tensor]:
    """Exact score of N(mu, s^2 I) noised to level sigma(t); s = 0: -(x - mu) / sigma(t)^2."""
    if s == 0.0:
        return lambda x, t: -(x - mu) / process.sigma(t) ** 2
    d = mu.numel()
    cov = (s * s * torch.eye(d, dtype=torch.float64))[None]
    return GaussianMixture(torch.ones(1, dtype=torch.float64), mu[None], cov).score_fn(process)


def als_ratio_recursion(sigmas: list[float], eta: float, n_sigma: int) -> list[float]:
    """sqrt(r_i) of the module docstring's recursion for ALS on the idealised target: the
    predicted ratio sigma_eff_i / sigma_i at every level of the ladder ``sigmas``."""
    rho_n, a = (1.0 - eta) ** (2 * n_sigma), 2.0 / (2.0 - eta)
    r, out, prev = 1.0, [], sigmas[0]
    for sigma in sigmas:
        r = rho_n * r * (prev / sigma) ** 2 + a * (1.0 - rho_n)
        out.append(math.sqrt(r))
        prev = sigma
    return out


def als_steady_ratio(eta: float, gamma: float, n_sigma: int) -> float | None:
    """sqrt(a (1 - rho^n) / (1 - rho^n / gamma^2)), the geometric-ladder steady state of the ALS
    ratio (None if rho^n >= gamma^2: the lag grows without bound); gamma = 1 or n -> infinity
    give the frozen-level value sqrt(2 / (2 - eta)) (SAMPLERS.md 4.3)."""
    rho_n = (1.0 - eta) ** (2 * n_sigma)
    if rho_n >= gamma * gamma:
        return None
    return math.sqrt(2.0 / (2.0 - eta) * (1.0 - rho_n) / (1.0 - rho_n / gamma**2))


def track_noise_levels(
    sampler: str | SamplerSpec,
    target: Any,
    *,
    levels: int,
    process: Process | None = None,
    t_end: float | None = None,
    final_noise: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Per-level effective noise level of ``sampler`` (``als``, ``cas`` or a variant spec) on the
    isotropic Gaussian ``target`` (a std s >= 0, 1-D, or a one-component GaussianMixture with
    covariance s^2 I), exactly (module docstring). ``levels`` is the sampler's L (``steps``);
    ``options`` go to the sampler (eta, n_sigma, ...). Default process: ``VE()``.

    Returns a JSON-able dict: sampler, target_std, levels, n_levels (levels of the ladder actually
    run: CAS refines it to (L - 1) n_sigma + 1), eta, n_sigma, gamma, final_noise, and per level
    lists sigma, sigma_eff, ratio, excess_ratio = (var - s^2) / sigma^2 (signed: ratio^2 where
    sigma_eff exists), var_ratio; max_abs_log_ratio (worst |log ratio| over the
    levels where sigma_eff is defined), last_ratio; for ALS on s = 0 (with final_noise) also
    predicted (the
    recursion, ``als_ratio_recursion``), steady_ratio and limit_ratio = sqrt(2 / (2 - eta)).
    Cost: one exact Gaussian propagation, O(L n_sigma d^3).
    """
    spec = get_spec(sampler)
    if not {"eta", "n_sigma"} <= set(spec.options):
        raise ValueError(
            f"noise levels are tracked for annealed Langevin samplers (options eta, n_sigma: "
            f"als, cas), got {spec.name!r}"
        )
    process = VE() if process is None else process
    s, mu = _target(target)
    d = mu.numel()
    t_end = check_t_end(process, t_end)
    opts = spec.resolve_options(options)
    sigma_1 = float(process.sigma(1.0))
    # a diagonal law: the steps are coordinate-wise, so propagate keeps O(d) per step
    init = exact.GaussianLaw(mu, torch.full((d,), s * s + sigma_1**2, dtype=torch.float64), True)
    by_level: dict[float, exact.GaussianLaw] = {1.0: init}

    def record(stage, law: exact.GaussianLaw) -> None:
        by_level[stage.t_next] = law  # dicts keep first-insertion order: the ladder's order

    exact.propagate(
        spec,
        _score(s, mu, process),
        process,
        init,
        levels,
        t_end=t_end,
        final_noise=final_noise,
        on_step=record,
        **options,
    )
    sigma, sigma_eff, ratio, excess, var_ratio = [], [], [], [], []
    for t, law in by_level.items():
        level = float(process.sigma(t))
        var = float(torch.diagonal(law.full_cov()).mean())
        eff = math.sqrt(var - s * s) if var >= s * s else None
        sigma.append(level)
        sigma_eff.append(eff)
        ratio.append(None if eff is None else eff / level)
        excess.append((var - s * s) / (level * level))
        var_ratio.append(var / (s * s + level * level))
    logs = [abs(math.log(r)) for r in ratio if r is not None and r > 0]
    eta, n_sigma = float(opts["eta"]), int(opts["n_sigma"])
    gamma = sigma[1] / sigma[0] if len(sigma) > 1 else 1.0
    out: dict[str, Any] = {
        "sampler": spec.name,
        "target_std": s,
        "levels": levels,
        "n_levels": len(sigma),
        "eta": eta,
        "n_sigma": n_sigma,
        "gamma": gamma,
        "final_noise": final_noise,
        "sigma": sigma,
        "sigma_eff": sigma_eff,
        "ratio": ratio,
        "excess_ratio": excess,
        "var_ratio": var_ratio,
        "max_abs_log_ratio": max(logs) if logs else None,
        "last_ratio": ratio[-1],
    }
    if spec.name == "als" and s == 0.0 and final_noise:
        out["predicted"] = als_ratio_recursion(sigma, eta, n_sigma)
        out["steady_ratio"] = als_steady_ratio(eta, gamma, n_sigma)
        out["limit_ratio"] = math.sqrt(2.0 / (2.0 - eta))
    return out


def _ladder_gamma(process: Process, levels: int, t_end: float | None) -> float:
    t_end = check_t_end(process, t_end)
    return float(process.sigma(t_end) / process.sigma(1.0)) ** (1.0 / (levels - 1))


NCSNV2_ETA = (
    0.062  # NCSNv2 CIFAR-10 ALS step_lr 6.2e-6 / sigma_L^2 (sigma_L = 0.01; SAMPLERS.md 4.2)
)


def annealed_study(*, quick: bool = False) -> dict[str, Any]:
    """Claim 8's exact noise-level tracking (SAMPLERS.md 4.3) on the default VE ladder
    (sigma 50 -> 0.01): ``track_noise_levels`` for

    * ``cas`` with eta = 1 (the default: beta = 1), eta = 1 - gamma / 2 (mid consistency
      interval, beta = sqrt(3) / 2), the paper's step eta = cas_eta(1, "paper", gamma) (near the
      interval's lower end, small beta) and eta = 1 - (1 - gamma) / 2 (~ 1 - 4.3 / L: beta ~ 1);
    * ``als`` with eta = 1, n_sigma = 1 (the package default) and eta = 0.062, n_sigma = 5
      (NCSNv2 CIFAR-10);

    on the idealised target (s = 0), N(0, 0.1^2) and N(0, 0.5^2), for L in (10, 100) (quick) or
    (10, 100, 1000). Returns {"rows": [...], "settings": {...}}.
    """
    process = VE()
    ladders = (10, 100) if quick else (10, 100, 1000)
    stds = (0.0, 0.1, 0.5)
    rows = []
    for levels in ladders:
        gamma = _ladder_gamma(process, levels, None)
        runs = [
            ("cas", {"eta": 1.0}),
            ("cas", {"eta": 1.0 - gamma / 2.0}),
            ("cas", {"eta": cas_eta(1.0, "paper", gamma)}),
            ("cas", {"eta": cas_eta(1.0, "near-one", gamma)}),
            ("als", {"eta": 1.0, "n_sigma": 1}),
            ("als", {"eta": NCSNV2_ETA, "n_sigma": 5}),
        ]
        for s in stds:
            for name, opts in runs:
                rows.append(track_noise_levels(name, s, levels=levels, process=process, **opts))
    settings = {"levels": list(ladders), "target_std": list(stds), "process": "ve"}
    settings.update(sigma_max=process.sigma_max, sigma_min=process.sigma_min)
    return {"rows": rows, "settings": settings}
