"""Forward noising processes and discrete DDPM chains.

A process maps a time t in [0, 1] to the coefficients of its Gaussian corruption

    x_t = alpha(t) x_0 + sigma(t) xi,        xi ~ N(0, I),

and gives the SDE coefficients of dx = f(t) x dt + g(t) dw (f is the scalar drift coefficient), the
half log-SNR lambda(t) = log(alpha(t) / sigma(t)) and its inverse. Conventions follow the score-SDE
code (SAMPLERS.md section 1.1). Every method accepts a Python float (and returns a float) or a
tensor (and returns a tensor of the same dtype and device).

Discrete chains (Ho et al. 2020; Li & Yan 2024) are explicit sequences beta_1..beta_T with
alpha_t = 1 - beta_t and alpha_bar_t = prod_{k<=t} alpha_k (SAMPLERS.md section 1.2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

Time = float | torch.Tensor


def _check_time(t: Time) -> None:
    lo, hi = (float(t.min()), float(t.max())) if isinstance(t, torch.Tensor) else (t, t)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0.0 or hi > 1.0:
        raise ValueError(f"time must lie in [0, 1], got {t!r}")


def _ops(t: Time):
    """math for floats, torch for tensors: the coefficients follow the type of t."""
    return torch if isinstance(t, torch.Tensor) else math


@dataclass(frozen=True)
class VP:
    """Variance-preserving process with linear beta(t) = beta_min + t (beta_max - beta_min).

    log alpha(t) = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2,  sigma^2 = 1 - alpha^2,
    f(t) = -beta(t) / 2,  g(t)^2 = beta(t).  Prior N(0, I); default end time 1e-3.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0

    name = "vp"
    t_end_default = 1e-3

    def __post_init__(self) -> None:
        if not (0.0 < self.beta_min < self.beta_max and math.isfinite(self.beta_max)):
            raise ValueError(
                f"VP needs 0 < beta_min < beta_max < inf, got beta_min={self.beta_min}, "
                f"beta_max={self.beta_max}"
            )

    def beta(self, t: Time) -> Time:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_alpha(self, t: Time) -> Time:
        _check_time(t)
        return -0.25 * t * t * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def alpha(self, t: Time) -> Time:
        return _ops(t).exp(self.log_alpha(t))

    def sigma(self, t: Time) -> Time:
        """sigma = sqrt(1 - alpha^2) = sqrt(-expm1(2 log alpha)), accurate for small t."""
        ops = _ops(t)
        return ops.sqrt(-ops.expm1(2.0 * self.log_alpha(t)))

    def f(self, t: Time) -> Time:
        return -0.5 * self.beta(t)

    def g2(self, t: Time) -> Time:
        return self.beta(t)

    def lam(self, t: Time) -> Time:
        """Half log-SNR lambda = log alpha - log sigma."""
        ops = _ops(t)
        return self.log_alpha(t) - 0.5 * ops.log(-ops.expm1(2.0 * self.log_alpha(t)))

    def t_of_lam(self, lam: Time) -> Time:
        """Inverse of lambda (DPM-Solver, Lu et al. 2022, appendix; SAMPLERS.md section 2.8):
        tau = log(1 + e^{-2 lambda}) = -2 log alpha,
        t = 2 tau / (sqrt(b0^2 + 2 (b1 - b0) tau) + b0).
        """
        ops = _ops(lam)
        b0, b1 = self.beta_min, self.beta_max
        tau = ops.log1p(ops.exp(-2.0 * lam)) if ops is torch else math.log1p(math.exp(-2.0 * lam))
        return 2.0 * tau / (ops.sqrt(b0 * b0 + 2.0 * (b1 - b0) * tau) + b0)

    def transition(self, s: float, t: float) -> tuple[float, float]:
        """Law of x_t given x_s for s <= t: x_t = rho x_s + sqrt(var) xi with
        rho = alpha(t) / alpha(s) and var = 1 - rho^2 = -expm1(2 log rho) (no cancellation)."""
        log_rho = self.log_alpha(t) - self.log_alpha(s)
        return math.exp(log_rho), -math.expm1(2.0 * log_rho)

    def prior_std(self) -> float:
        return 1.0


@dataclass(frozen=True)
class VE:
    """Variance-exploding process with geometric sigma(t) = sigma_min (sigma_max / sigma_min)^t.

    alpha = 1, f = 0, g(t)^2 = sigma(t)^2 * 2 log(sigma_max / sigma_min). Marginals are defined as
    p_t = p_0 * N(0, sigma(t)^2 I), the score-SDE code convention (SAMPLERS.md section 1.1).
    Prior N(0, sigma_max^2 I); default end time 1e-5.
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0

    name = "ve"
    t_end_default = 1e-5

    def __post_init__(self) -> None:
        if not (0.0 < self.sigma_min < self.sigma_max and math.isfinite(self.sigma_max)):
            raise ValueError(
                f"VE needs 0 < sigma_min < sigma_max < inf, got sigma_min={self.sigma_min}, "
                f"sigma_max={self.sigma_max}"
            )

    @property
    def _log_ratio(self) -> float:
        return math.log(self.sigma_max / self.sigma_min)

    def alpha(self, t: Time) -> Time:
        _check_time(t)
        return torch.ones_like(t) if isinstance(t, torch.Tensor) else 1.0

    def sigma(self, t: Time) -> Time:
        _check_time(t)
        return self.sigma_min * _ops(t).exp(t * self._log_ratio)

    def f(self, t: Time) -> Time:
        return torch.zeros_like(t) if isinstance(t, torch.Tensor) else 0.0

    def g2(self, t: Time) -> Time:
        return self.sigma(t) ** 2 * (2.0 * self._log_ratio)

    def lam(self, t: Time) -> Time:
        return -_ops(t).log(self.sigma(t))

    def t_of_lam(self, lam: Time) -> Time:
        return (-lam - math.log(self.sigma_min)) / self._log_ratio

    def transition(self, s: float, t: float) -> tuple[float, float]:
        """Law of x_t given x_s for s <= t: x_t = x_s + sqrt(var) xi with
        var = sigma(t)^2 - sigma(s)^2 = -sigma(t)^2 expm1(-2 log(sigma_max/sigma_min) (t - s))."""
        return 1.0, -(self.sigma(t) ** 2) * math.expm1(-2.0 * self._log_ratio * (t - s))

    def prior_std(self) -> float:
        return self.sigma_max


Process = VP | VE

PROCESSES = {"vp": VP, "ve": VE}


def make_process(name: str) -> Process:
    """The process registered under ``name`` ("vp" or "ve") with its default parameters."""
    try:
        return PROCESSES[name]()
    except KeyError:
        raise ValueError(f"unknown process {name!r}; allowed: {', '.join(PROCESSES)}") from None


# --------------------------------------------------------------------------------------------
# Discrete chains
# --------------------------------------------------------------------------------------------


def ho_linear_betas(
    n: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
) -> torch.Tensor:
    """Ho et al. (2020) linear chain beta_i = linspace(beta_start, beta_end, n)_i, float64."""
    if n < 1:
        raise ValueError(f"a chain needs n >= 1 steps, got {n}")
    if not 0.0 < beta_start <= beta_end < 1.0:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    return torch.linspace(beta_start, beta_end, n, dtype=torch.float64)


# Default Li-Yan constants. beta grows geometrically from T^-c0 until it saturates at
# c1 log T / T, which it holds for the last ~(1 - c0/c1) T steps, so
# log alpha_bar_T ~ -(c1 - c0) log T: with (c0, c1) = (2, 4), alpha_bar_T <= 1.5e-3 at T = 20 and
# about 1e-6 at T = 1000 (checked in tests/analytic/test_processes.py). c1 log T / T < 1 needs
# T >= 16 for c1 = 4.
LI_YAN_C0 = 2.0
LI_YAN_C1 = 4.0


def li_yan_betas(T: int, c0: float = LI_YAN_C0, c1: float = LI_YAN_C1) -> torch.Tensor:
    """Li & Yan (2024) schedule (THEORY.md section 1.2):

    beta_1 = T^{-c0},  beta_{t+1} = (c1 log T / T) * min(beta_1 (1 + c1 log T / T)^t, 1).
    """
    if T < 2:
        raise ValueError(f"the Li-Yan schedule needs T >= 2 steps, got {T}")
    rate = c1 * math.log(T) / T
    if not (c0 > 0 and 0 < rate < 1):
        raise ValueError(
            f"Li-Yan schedule needs c0 > 0 and 0 < c1 log T / T < 1, got c0={c0}, "
            f"c1 log T / T={rate:.3g} at T={T}"
        )
    beta1 = T ** (-c0)
    t = torch.arange(1, T, dtype=torch.float64)
    growth = torch.clamp(beta1 * torch.exp(t * math.log1p(rate)), max=1.0)
    return torch.cat([torch.tensor([beta1], dtype=torch.float64), rate * growth])


def alpha_bar(betas: torch.Tensor) -> torch.Tensor:
    """alpha_bar_t = prod_{k<=t} (1 - beta_k), computed as exp(cumsum(log1p(-beta)))."""
    return torch.exp(torch.cumsum(torch.log1p(-betas), dim=0))
