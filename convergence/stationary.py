"""Langevin with and without adaptive momentum on fixed Gaussian targets.

Claim 7 of the report: Wen, Deng, Luo, Sun & Li 2024 (arXiv 2405.13726).

Target pi = N(0, Lambda), Lambda = diag(lambda_1..lambda_d) with lambda_i = kappa^((i-1)/(d-1)):
from lambda_min = 1 to lambda_max = kappa (condition number kappa). Its score s(x) = -x / lambda is
affine and independent of t; the score's Lipschitz constant is L = 1 / lambda_min = 1, so a step h
is also the dimensionless step h L (the brief's "h = c / lambda_max" reads lambda_max as the
largest curvature 1 / lambda_min).

Methods, all one rule with step h (docs/samplers/score_sde.md, `langevin` and `ams`, with the
snr step replaced by eps = h):

    g = s(x);  m <- beta m + (1 - beta) g;  x <- x + h (1 + beta)^2 m + sqrt(2 h) z

* ``ula``: beta = 0 (unadjusted Langevin, fixed step);
* ``ams``: the AMS-LC rule of Wen et al. (docs/samplers/score_sde.md, `ams`) with a fixed step eps =
  h: first step beta = 0, m = g; later beta = clip(((1 - q) / (1 + q))^2, 0, 1 - 1e-4), q = eta_A
  ||g - g_prev|| / ||Delta|| with the previous eta_A = h (1 + beta_prev)^2 and Delta = eta_A m the
  previous drift displacement; batch-mean norms as in the AMS reference code, one batch per
  replicate. The package's ``AMSCorrector`` computes its step from the snr rule and cannot take a
  fixed step, so the rule is written once here (``momentum_update``, ``run_chains``); a test checks
  it against ``AMSCorrector`` step for step when the corrector is fed the same step size.
* ``heavy-ball``: beta fixed after the first step (the fixed-beta ablation of the AMS reference
  code); linear, so its stationary law solves a discrete Lyapunov equation.

Stability: the mean recursion of ULA is x' = (1 - h / lambda) x, stable iff 0 < h < 2 lambda_min;
a frozen beta gives on (x, m) the 2 x 2 map [[1 - a, eta beta], [-(1 - beta) / lambda, beta]],
eta = h (1 + beta)^2, a = eta (1 - beta) / lambda, with determinant beta and trace 1 + beta - a:
stable
(Jury) iff a < 2 (1 + beta), i.e. h (1 - beta^2) < 2 lambda_min [DERIVED]. Every frozen beta in
[0, 1) is stable iff h < 2 lambda_min = 2: the one rule enforced for every method.

Exact laws [DERIVED: moments of a linear Gaussian recursion]: ULA per coordinate has mean
(1 - h/lambda)^k mu_0 and variance
v_k = v_inf + (1 - h/lambda)^(2k) (v_0 - v_inf), v_inf = lambda / (1 - h / (2 lambda)) (fixed point
of v' = (1 - h/lambda)^2 v + 2 h). ``ams`` has no closed form: its law is measured from n chains
(float64, per-sample noise of ``convergence.noise``) as the Gaussian with the sample mean and
covariance. With batch norms beta is one number per batch, and given the beta path the chain is
linear with Gaussian noise, so from a Gaussian start the law is Gaussian up to the O(n^-1/2)
fluctuation of beta: the Gaussian fit is the law, not an approximation of a non-Gaussian one.
Noise floor: the same statistic for n exact draws from pi (mean over the replicates); CI: 95%
Student-t half-width over independent replicate batches.

Distances: KL(pi || law) (the reference first, as the Gaussian evaluator) and W2, closed forms of
``analytic.gaussian``.

Measured (``momentum_study()``, d = 2). ULA: KL ~ h^2.04, W2 ~ h^1.04 over the three smallest h
(0.05-0.2). AMS with a fixed step does NOT have a bias that vanishes with h: beta grows as h
shrinks (the secant q = ||g - g_prev|| / ||m|| sees the injected noise, q ~ sqrt(2 h / lambda)),
the drift step h (1 + beta)^2 outgrows the noise 2 h, and the law is under-dispersed towards
lambda / (1 + beta)^2 (the fixed-beta limit, ``heavy_ball_stationary_variance`` as h -> 0):
at h = 0.05, KL 0.056 (kappa 1) and 0.070 (kappa 16), about 175 and 440 times ULA's, variance
ratio 0.73, beta 0.2; the variance error changes sign between h = 0.1 and 0.2; for h >= 0.4,
beta < 0.01 and AMS equals ULA within the CI. Iterations to KL <= 2x or 4x the largest
stationary bias at h = c = 0.4, kappa = 1..256: exponent 0.98 [0.94, 1.02] for ULA and
1.02 [0.98, 1.07] for AMS (beta ~ 0 in that regime): no sqrt(kappa) gain.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import numpy as np
import scipy.integrate
import scipy.linalg
import scipy.optimize
import torch
from scipy import stats

from analytic import gaussian as closed
from analytic.processes import VE
from convergence.evaluators import gaussian as exact
from convergence.noise import PerSampleNoise, normal
from convergence.rates import fit_rate
from convergence.samplers.score_sde import E_BETA, LANGEVIN_FIXED

Tensor = torch.Tensor

METHODS = ("ula", "ams", "heavy-ball")
H_MAX = 2.0  # h < 2 lambda_min (lambda_min = 1): stability of every frozen-beta chain
HEAVY_BALL_BETA = 0.9  # the AMS code's fixed-beta ablation uses 0.8 and 0.9
_INIT_DOMAIN = 0x494E4954  # noise stream of the initial states (separate from the chain's)
_FLOOR_DOMAIN = 0x464C4F52  # noise stream of the exact reference draws of the noise floor


# ---- inputs -----------------------------------------------------------------------------------


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _integer(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    return method


def check_step(h: Any) -> float:
    """0 < h < 2 lambda_min = 2 (stability of ULA and of every frozen-beta momentum chain)."""
    h = _number("h", h)
    if not 0.0 < h < H_MAX:
        raise ValueError(
            f"h must lie in (0, {H_MAX:g}) (stability needs h < 2 lambda_min, lambda_min = 1), "
            f"got {h!r}"
        )
    return h


def eigenvalues(kappa: Any, d: Any = 2) -> Tensor:
    """lambda_i = kappa^((i - 1) / (d - 1)), i = 1..d (float64, (d,)): from 1 to kappa."""
    kappa = _number("kappa", kappa)
    if kappa < 1.0:
        raise ValueError(f"kappa (condition number) must be >= 1, got {kappa!r}")
    d = _integer("d", d, 1)
    if d > 64:
        raise ValueError(f"d must be an integer in [1, 64], got {d}")
    if d == 1:
        if kappa != 1.0:
            raise ValueError(f"d = 1 has condition number 1, got kappa={kappa!r}; use d >= 2")
        return torch.ones(1, dtype=torch.float64)
    return kappa ** (torch.arange(d, dtype=torch.float64) / (d - 1))


def _check_beta(beta: Any) -> float:
    beta = _number("beta", beta)
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must lie in [0, 1), got {beta!r}")
    return beta


# ---- one step, exact laws ---------------------------------------------------------------------


def momentum_update(
    x: Tensor, m: Tensor, g: Tensor, beta: Tensor | float, h: float
) -> tuple[Tensor, Tensor]:
    """The deterministic part of one step (the AMS-LC update of Wen et al. with eps = h):
    m' = beta m + (1 - beta) g, x_bar = x + h (1 + beta)^2 m'. Returns (x_bar, m'); beta = 0 is
    ULA's x + h g. Shapes broadcast (beta a float or one value per batch)."""
    m_new = beta * m + (1.0 - beta) * g
    return x + h * (1.0 + beta) ** 2 * m_new, m_new


def ula_stationary_variance(lam: Tensor, h: float) -> Tensor:
    """Stationary variance of ULA on N(0, lambda): lambda / (1 - h / (2 lambda)) (module
    docstring)."""
    return lam / (1.0 - h / (2.0 * lam))


def _heavy_ball_map(lam: Tensor, h: float, beta: float) -> Callable[[Tensor], Tensor]:
    """The mean map of one frozen-beta step on z = (x, m) (batch (b, 2d)), from
    ``momentum_update`` with the score g = -x / lambda."""
    d = lam.numel()

    def step(z: Tensor) -> Tensor:
        x, m = z[:, :d], z[:, d:]
        return torch.cat(momentum_update(x, m, -x / lam, beta, h), dim=1)

    return step


def _heavy_ball_matrix(lam: Tensor, h: float, beta: float) -> Tensor:
    """M of z' = M z (+ noise) for the frozen-beta step, read off ``momentum_update`` (2d, 2d)."""
    z0 = torch.zeros(2 * lam.numel(), dtype=lam.dtype)
    cov = torch.eye(2 * lam.numel(), dtype=lam.dtype)
    return exact._read_affine(_heavy_ball_map(lam, h, beta), z0, cov, "the heavy-ball step")[1]


def heavy_ball_stationary_variance(lam: Tensor, h: float, beta: float) -> Tensor:
    """Stationary variance of x under the frozen-beta step: the x block of the solution of the
    discrete Lyapunov equation S = M S M^T + Q, Q = 2 h on the x block
    (scipy.linalg.solve_discrete_lyapunov). Cost O(d^3)."""
    S = _heavy_ball_covariance(lam, h, beta)
    return torch.from_numpy(np.diag(S)[: lam.numel()].copy())


def _heavy_ball_covariance(lam: Tensor, h: float, beta: float) -> np.ndarray:
    """Stationary covariance of z = (x, m) under the frozen-beta step (2d, 2d): the solution of
    S = M S M^T + Q, Q = 2 h on the x block (``heavy_ball_stationary_variance``)."""
    M = _heavy_ball_matrix(lam, h, beta).numpy()
    if float(np.abs(np.linalg.eigvals(M)).max()) >= 1.0:
        raise ValueError(f"heavy-ball step unstable at h={h}, beta={beta}")
    d = lam.numel()
    Q = np.zeros((2 * d, 2 * d))
    Q[:d, :d] = 2.0 * h * np.eye(d)
    return scipy.linalg.solve_discrete_lyapunov(M, Q)


def expected_norm(variances: Any) -> float:
    """E ||v||_2 for v ~ N(0, diag(variances)), from ||v|| = 1/(2 sqrt(pi)) int_0^inf
    (1 - exp(-s ||v||^2)) s^(-3/2) ds and E exp(-s ||v||^2) = prod_i (1 + 2 s c_i)^(-1/2):

        E ||v|| = 1/(2 sqrt(pi)) int_0^inf (1 - prod_i (1 + 2 s c_i)^(-1/2)) s^(-3/2) ds,

    integrated over log s (scipy ``quad``; relative error ~1e-12). d = 1 gives sqrt(2 c / pi)."""
    c = np.asarray(variances, dtype=float).reshape(-1)

    def integrand(log_s: float) -> float:
        s = math.exp(log_s)
        return -math.expm1(-0.5 * float(np.log1p(2.0 * s * c).sum())) * s**-0.5

    lo, hi = -80.0 - math.log(c.max()), 80.0 - math.log(c.min())  # tails below e^-40
    value, _ = scipy.integrate.quad(integrand, lo, hi, limit=400, epsabs=0.0, epsrel=1e-12)
    return value / (2.0 * math.sqrt(math.pi))


def ams_mean_field(lam: Tensor, h: float) -> dict[str, Any]:
    """AMS's stationary law with a fixed step h in the limit of infinitely many chains.

    With batch-mean norms over n -> infinity chains, q and beta become deterministic; in the
    stationary regime beta is a constant beta* and the chain is the frozen-beta heavy-ball step,
    whose law is Gaussian with the Lyapunov covariance S(beta) of z = (x, m). One step's secant
    is g - g_prev = -(x_k - x_{k-1}) / lambda = -(eta m_k + sqrt(2 h) xi) / lambda and the
    displacement Delta = eta m_k (eta = h (1 + beta)^2, xi independent of m_k), so

        q(beta) = E||(eta m + sqrt(2 h) xi) / lambda|| / E||m||,   m ~ N(0, S_mm(beta)),
        beta* = clip(((1 - q) / (1 + q))^2, 0, 1 - E_BETA) at beta = beta*,

    a scalar fixed point (``scipy.optimize.brentq`` on F(beta) - beta, which changes sign on
    [0, 1 - E_BETA]; beta* = 0 where q(0) >= 1, i.e. AMS reduces to ULA). Returns beta*, q, the
    stationary variances of x (per coordinate), their ratio to lambda and KL and W2 to pi."""
    h = check_step(h)
    d = lam.numel()

    def beta_of(beta: float) -> tuple[float, float]:
        eta = h * (1.0 + beta) ** 2
        var_m = np.diag(_heavy_ball_covariance(lam, h, beta))[d:]
        lam_np = lam.numpy()
        q = expected_norm((eta**2 * var_m + 2.0 * h) / lam_np**2) / expected_norm(var_m)
        return min(max(((1.0 - q) / (1.0 + q)) ** 2, 0.0), 1.0 - E_BETA), q

    top = 1.0 - E_BETA
    if beta_of(0.0)[0] == 0.0:
        beta = 0.0
    elif beta_of(top)[0] >= top:
        beta = top
    else:
        beta = scipy.optimize.brentq(lambda b: beta_of(b)[0] - b, 0.0, top, xtol=1e-14)
    q = beta_of(beta)[1]
    var = torch.from_numpy(np.diag(_heavy_ball_covariance(lam, h, beta))[:d].copy())
    kl, w2 = diagonal_distances(lam, var)
    return {
        "method": "ams",
        "estimator": "mean-field",
        "kappa": float(lam.max() / lam.min()),
        "d": d,
        "h": h,
        "beta": float(beta),
        "q": float(q),
        "kl": kl,
        "kl_ci": 0.0,
        "w2": w2,
        "w2_ci": 0.0,
        "variance_ratio": (var / lam).tolist(),
        "exact": True,
    }


def kl_path(lam: Tensor, means: Tensor, variances: Tensor) -> list[float]:
    """KL(N(0, Lambda) || N(mean_k, diag(var_k))) for a sequence of laws (K, d) -> K values:
    1/2 sum_i [u - log1p(u) + mean^2 / var], u = (lambda - var) / var (the form of
    ``analytic.gaussian.diagonal_divergences``, batched over k, without its small-u series: accurate
    to ~1e-15 absolute, enough for the levels >= 1e-6 of a path). Cost O(K d)."""
    u = (lam - variances) / variances
    return (0.5 * (u - torch.log1p(u) + means.square() / variances).sum(dim=1)).tolist()


def mixing_steps(lam: Tensor, h: float, beta: float, burn: float) -> int:
    """ceil(burn / -log rho), rho the spectral radius of the frozen-beta mean map (beta = 0:
    rho = 1 - h / lambda_max, so about burn kappa / h steps): after them a transient of the mean
    has decayed by e^-burn and one of the covariance by e^(-2 burn)."""
    radius = float(np.abs(np.linalg.eigvals(_heavy_ball_matrix(lam, h, beta).numpy())).max())
    if radius >= 1.0:
        raise ValueError(f"the step h={h} is unstable for beta={beta} (spectral radius {radius})")
    return max(1, math.ceil(burn / -math.log(radius)))


def diagonal_distances(lam: Tensor, var: Tensor, mean: Tensor | None = None) -> tuple[float, float]:
    """(KL(N(0, Lambda) || N(mean, diag(var))), W2) by ``analytic.gaussian.diagonal_divergences``
    (cancellation-free: KL ~ sum (h / (2 lambda))^2 / 4 stays accurate for tiny h)."""
    mean = torch.zeros_like(lam) if mean is None else mean
    kl, w2, _ = closed.diagonal_divergences(torch.zeros_like(lam), lam, mean, var)
    return float(kl), float(w2)


# ---- sampled chains ---------------------------------------------------------------------------


def _batch_norm(v: Tensor) -> Tensor:
    """Batch-mean norm mean_b ||v_b||_2 per replicate (as in the AMS reference code):
    (R, n, d) -> (R, 1, 1)."""
    squares = v.square() @ torch.ones(v.shape[-1], dtype=v.dtype)  # 10x faster than .sum(-1)
    return squares.sqrt().mean(dim=-1)[:, None, None]


def run_chains(
    lam: Tensor,
    h: float,
    iterations: int,
    x0: Tensor,
    *,
    momentum: str,
    beta: float = HEAVY_BALL_BETA,
    seed: int = 0,
    observe: Callable[[int, Tensor], bool | None] | None = None,
) -> tuple[Tensor, list[float]]:
    """Run R independent batches of n chains of the momentum rule (module docstring) for
    ``iterations`` steps from x0 (R, n, d), float64. ``momentum``: "off" (ULA), "adaptive" (AMS-LC,
    norms per batch) or "fixed" (beta after the first step). Noise of chain i of batch r at step k:
    ``PerSampleNoise(seed)`` row r n + i, step k. ``observe(k, x)`` is called after step k
    (1-based); returning True stops the run. Returns (x, mean beta per step). Cost O(iterations
    R n d)."""
    if momentum not in ("off", "adaptive", "fixed"):
        raise ValueError(f"momentum must be off, adaptive or fixed, got {momentum!r}")
    if x0.ndim != 3 or x0.shape[-1] != lam.numel() or x0.dtype != lam.dtype:
        raise ValueError(f"x0 must be (R, n, {lam.numel()}) in {lam.dtype}, got {tuple(x0.shape)}")
    R, n, d = x0.shape
    noise = PerSampleNoise(seed)
    x, m, g_prev, delta, eta = x0, None, None, None, torch.zeros(R, 1, 1, dtype=x0.dtype)
    root = math.sqrt(2.0 * h)
    betas: list[float] = []
    for k in range(iterations):
        g = -x / lam
        if m is None or momentum == "off":
            b: Tensor | float = 0.0
            m = g
        elif momentum == "adaptive":
            q = eta * _batch_norm(g - g_prev) / _batch_norm(delta)
            b = ((1.0 - q) / (1.0 + q)).square().clamp(0.0, 1.0 - E_BETA)
        else:
            b = beta
        x_bar, m = momentum_update(x, m, g, b, h)
        eta = h * (1.0 + b) ** 2 * torch.ones(R, 1, 1, dtype=x.dtype)
        delta, g_prev = x_bar - x, g
        x = x_bar + root * noise.draw(k, x_bar.reshape(R * n, d)).reshape(R, n, d)
        betas.append(float(b.mean()) if isinstance(b, Tensor) else float(b))
        if not torch.isfinite(x).all():
            raise ValueError(f"chains diverged at step {k + 1} (h={h}, momentum={momentum!r})")
        if observe is not None and observe(k + 1, x):
            break
    return x, betas


def _exact_draws(lam: Tensor, R: int, n: int, seed: int, domain: int, scale: Tensor) -> Tensor:
    """R n draws of N(0, diag(scale^2)) from a noise stream separate from the chains', (R, n, d)."""
    idx = torch.arange(R * n, dtype=torch.int64)
    return (normal(seed ^ domain, idx, 0, lam.numel()) * scale).reshape(R, n, lam.numel())


def fitted_kl(lam: Tensor, x: Tensor) -> Tensor:
    """Per batch KL(pi || N(m_r, S_r)), (m_r, S_r) the sample mean and unbiased covariance of
    batch r: x (R, n, d) -> (R,). Batched textbook form with S = L L^T:

        KL = 1/2 [ |L^-1 Lambda^1/2|_F^2 - d + |L^-1 m|^2 + 2 sum log diag L - sum log lambda ],

    accurate to ~1e-15 absolute (``analytic.gaussian.kl`` is the cancellation-free single-pair
    form; a sample statistic never comes near 1e-12, its floor is ~d (d + 3) / (4 n)). Cost
    O(R (n d^2 + d^3))."""
    mean = x.mean(dim=1)
    centred = x - mean[:, None, :]
    L = torch.linalg.cholesky(centred.mT @ centred / (x.shape[1] - 1))
    A = torch.linalg.solve_triangular(L, torch.diag(lam.sqrt()).expand_as(L), upper=False)
    w = torch.linalg.solve_triangular(L, mean[:, :, None], upper=False)
    logdet = 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1) - torch.log(lam).sum()
    return 0.5 * (A.square().sum((-2, -1)) - lam.numel() + w.square().sum((-2, -1)) + logdet)


def fitted_distances(lam: Tensor, x: Tensor) -> np.ndarray:
    """Per batch (KL, W2) between pi = N(0, Lambda) and the Gaussian with the batch's sample mean
    and covariance: x (R, n, d) -> array (R, 2); KL by ``fitted_kl``, W2 by the Bures form
    ``analytic.gaussian.w2``. Cost O(R (n d^2 + d^3))."""
    mean = x.mean(dim=1)
    centred = x - mean[:, None, :]
    cov = centred.mT @ centred / (x.shape[1] - 1)
    zero, target = torch.zeros_like(lam), torch.diag(lam)
    w2 = [float(closed.w2(zero, target, mean[r], cov[r])) for r in range(x.shape[0])]
    return np.stack([fitted_kl(lam, x).numpy(), np.array(w2)], axis=1)


def _half_width(values: np.ndarray) -> float:
    """95% half-width of the mean of R independent replicates: t_{0.975, R-1} sd / sqrt(R)."""
    R = len(values)
    return float(stats.t.ppf(0.975, R - 1) * np.std(values, ddof=1) / math.sqrt(R))


def noise_floor(lam: Tensor, n: int, replicates: int, seed: int = 0) -> tuple[float, float]:
    """(KL, W2) of ``fitted_distances`` for n exact draws from pi, mean over the replicates: the
    value a perfect sampler would show (KL ~ d (d + 3) / (4 n) [DERIVED, Wishart])."""
    draws = _exact_draws(lam, replicates, n, seed, _FLOOR_DOMAIN, lam.sqrt())
    kl, w2 = fitted_distances(lam, draws).mean(axis=0)
    return float(kl), float(w2)


# ---- stationary bias --------------------------------------------------------------------------


def stationary_bias(
    method: str,
    kappa: float,
    h: float,
    *,
    d: int = 2,
    n: int = 20000,
    replicates: int = 3,
    burn: float = 4.0,
    estimator: str = "auto",
    beta: float = HEAVY_BALL_BETA,
    seed: int = 0,
) -> dict[str, Any]:
    """Distance between pi and the stationary law of ``method`` at step h (claim 7's bias).

    ``estimator``: "exact" (ULA: closed form; heavy-ball: Lyapunov), "samples" (R = ``replicates``
    batches of n chains started from exact draws of pi, run for ``mixing_steps`` (e^-burn of the
    slowest mean transient, ULA's for ams; Gaussian fit, noise floor, CI) or "auto" (exact when
    available). ``ams`` has no exact form. Sampled rows also give the statistic at 3/4 of the run
    (``kl_at_3_4``) as a stationarity check and, for ULA, the exact value (``kl_exact``).

    Returns a JSON-able dict: method, kappa, d, h, kl, kl_ci, w2, w2_ci, floor, w2_floor, exact,
    estimator, variance_ratio (stationary variance / lambda per coordinate), beta (last mean beta),
    n, replicates, iterations (sampled) and the inputs.
    """
    method, h, lam = check_method(method), check_step(h), eigenvalues(kappa, d)
    beta = _check_beta(beta)
    if estimator not in ("auto", "exact", "samples"):
        raise ValueError(f"estimator must be auto, exact or samples, got {estimator!r}")
    if estimator == "exact" and method == "ams":
        raise ValueError("method 'ams' has no exact stationary law; use estimator 'samples'")
    row: dict[str, Any] = {"method": method, "kappa": float(kappa), "d": d, "h": h}
    exact_var = None
    if method == "ula":
        exact_var = ula_stationary_variance(lam, h)
    elif method == "heavy-ball":
        exact_var = heavy_ball_stationary_variance(lam, h, beta)
        row["beta"] = beta
    if estimator != "samples" and exact_var is not None:
        kl, w2 = diagonal_distances(lam, exact_var)
        row.update(kl=kl, kl_ci=0.0, w2=w2, w2_ci=0.0, floor=0.0, w2_floor=0.0, exact=True)
        row.update(estimator="exact", variance_ratio=(exact_var / lam).tolist())
        row.setdefault("beta", 0.0)
        return row
    n, replicates = _integer("n", n, 10 * d + 10), _integer("replicates", replicates, 2)
    burn = _number("burn", burn)
    iterations = mixing_steps(lam, h, beta if method == "heavy-ball" else 0.0, burn)
    x0 = _exact_draws(lam, replicates, n, seed, _INIT_DOMAIN, lam.sqrt())
    at_3_4 = {}

    def observe(k: int, x: Tensor) -> None:
        if k == math.ceil(0.75 * iterations):
            at_3_4["kl"] = float(fitted_kl(lam, x).mean())

    momentum = {"ula": "off", "ams": "adaptive", "heavy-ball": "fixed"}[method]
    x, betas = run_chains(
        lam, h, iterations, x0, momentum=momentum, beta=beta, seed=seed, observe=observe
    )
    values = fitted_distances(lam, x)
    floor_kl, floor_w2 = noise_floor(lam, n, replicates, seed)
    var = x.var(dim=1).mean(dim=0)
    row.update(
        kl=float(values[:, 0].mean()),
        kl_ci=_half_width(values[:, 0]),
        w2=float(values[:, 1].mean()),
        w2_ci=_half_width(values[:, 1]),
        floor=floor_kl,
        w2_floor=floor_w2,
        exact=False,
        estimator="samples",
        variance_ratio=(var / lam).tolist(),
        beta=betas[-1],
        n=n,
        replicates=replicates,
        iterations=iterations,
        kl_at_3_4=at_3_4.get("kl"),
    )
    if exact_var is not None:
        row["kl_exact"], row["w2_exact"] = diagonal_distances(lam, exact_var)
    return row


# ---- iterations to accuracy -------------------------------------------------------------------


def _constant_score(lam: Tensor) -> Callable[[Tensor, float], Tensor]:
    """s(x, t) = -x / lambda, the same at every t (a fixed target)."""
    return lambda x, t: -x / lam


def ula_kl_path(
    lam: Tensor, h: float, law: exact.GaussianLaw, iterations: int
) -> tuple[list[float], exact.GaussianLaw]:
    """Exact KL(pi || law_k), k = 1..iterations, of ULA from ``law`` (diagonal), by moment
    propagation through the package's own ULA step (``LANGEVIN_FIXED`` through
    ``evaluators.gaussian.propagate`` on a fixed level, every step with its noise), and the last
    law. Cost O(iterations d)."""
    laws: list[exact.GaussianLaw] = []
    score = _constant_score(lam)
    law = exact.propagate(
        LANGEVIN_FIXED,
        score,
        VE(),
        law,
        iterations,
        t_end=0.5,
        final_noise=True,
        on_step=lambda stage, out: laws.append(out),
        h=h,
    )
    means, variances = (torch.stack([getattr(a, f) for a in laws]) for f in ("mean", "cov"))
    return kl_path(lam, means, variances), law


def heavy_ball_kl_path(
    lam: Tensor, h: float, beta: float, law: exact.GaussianLaw, iterations: int, *, start: bool
) -> tuple[list[float], exact.GaussianLaw]:
    """Exact KL(pi || law_k), k = 1..iterations, of the frozen-beta chain, propagating the joint
    law of (x, m) (2d) through ``momentum_update`` read as an affine map (``push_forward``) plus
    the noise 2 h I on the x block; ``start``: the first step is AMS-LC's (beta = 0, m = g). Returns
    the path and the last joint law. Cost O(iterations d^3)."""
    d = lam.numel()
    noise = torch.zeros(2 * d, 2 * d, dtype=lam.dtype)
    noise[:d, :d] = 2.0 * h * torch.eye(d, dtype=lam.dtype)
    first, later = _heavy_ball_map(lam, h, 0.0), _heavy_ball_map(lam, h, beta)
    means, variances = [], []
    for k in range(iterations):
        law = exact.push_forward(first if start and k == 0 else later, law)
        law = exact.GaussianLaw(law.mean, law.cov + noise)
        means.append(law.mean[:d])
        variances.append(torch.diagonal(law.cov)[:d])
    return kl_path(lam, torch.stack(means), torch.stack(variances)), law


def crossing(path: np.ndarray, level: float) -> int | None:
    """The first k after which path[k'] <= level for every k' >= k (None if the last value is
    above the level)."""
    above = np.flatnonzero(path > level)
    if above.size == 0:
        return 0
    return None if above[-1] == path.size - 1 else int(above[-1] + 1)


def kl_paths(
    method: str,
    kappa: float,
    *,
    stop_level: float,
    d: int = 2,
    c: float = 0.5,
    init_scale: float = 2.0,
    max_iter: int | None = None,
    n: int = 10000,
    replicates: int = 3,
    beta: float = HEAVY_BALL_BETA,
    seed: int = 0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """KL(pi || law_k), k = 0, 1, ..., of ``method`` with step h = c (= c / L) from
    x0 ~ N(0, init_scale^2 lambda_max I) (over-dispersed: ULA's KL then decreases monotonically),
    run until the path has stayed below ``stop_level`` for max(50, k/2) steps after its last
    crossing k, or ``max_iter`` steps (default ceil(40 kappa / c)).

    ULA and heavy-ball: exact path (``ula_kl_path``, ``heavy_ball_kl_path``), shape (K + 1, 1).
    AMS: Gaussian-fit KL (``fitted_kl``) of each of R replicate batches of n chains after every
    step, shape (K + 1, R). Returns (paths, info) with info: method, kappa, d, c, exact, run (K)
    and, for AMS, n, replicates, floor."""
    method, h, lam = check_method(method), check_step(c), eigenvalues(kappa, d)
    beta = _check_beta(beta)
    stop_level, init_scale = _number("level", stop_level), _number("init_scale", init_scale)
    if stop_level <= 0 or init_scale <= 0:
        raise ValueError(f"level and init_scale must be > 0, got {stop_level!r}, {init_scale!r}")
    if max_iter is None:
        max_iter = math.ceil(40.0 * float(lam.max()) / h)
    max_iter = _integer("max_iter", max_iter, 1)
    init_var = init_scale**2 * float(lam.max())
    info: dict[str, Any] = {"method": method, "kappa": float(kappa), "d": d, "c": h}
    if method != "ams":
        if method == "ula":
            law = exact.GaussianLaw(torch.zeros_like(lam), torch.full_like(lam, init_var), True)
        else:
            cov = torch.zeros(2 * d, 2 * d, dtype=lam.dtype)
            cov[:d, :d] = init_var * torch.eye(d, dtype=lam.dtype)
            law = exact.GaussianLaw(torch.zeros(2 * d, dtype=lam.dtype), cov)
        path = kl_path(lam, torch.zeros_like(lam)[None], torch.full_like(lam, init_var)[None])
        chunk = max(1, math.ceil(float(lam.max()) / h))
        while len(path) <= max_iter:
            steps = min(chunk, max_iter + 1 - len(path))
            if method == "ula":
                new, law = ula_kl_path(lam, h, law, steps)
            else:
                new, law = heavy_ball_kl_path(lam, h, beta, law, steps, start=len(path) == 1)
            path += new
            k = crossing(np.array(path), stop_level)
            if k is not None and len(path) - 1 >= 1.5 * k + 50:
                break
        info.update(exact=True, run=len(path) - 1)
        return np.array(path)[:, None], info
    n, replicates = _integer("n", n, 10 * d + 10), _integer("replicates", replicates, 2)
    scale = init_scale * float(lam.max()) ** 0.5 * torch.ones_like(lam)
    x0 = _exact_draws(lam, replicates, n, seed, _INIT_DOMAIN, scale)
    kls = [fitted_kl(lam, x0).numpy()]
    last_above = [0 if kls[0].max() > stop_level else -1]

    def observe(k: int, x: Tensor) -> bool:
        kls.append(fitted_kl(lam, x).numpy())
        if kls[-1].max() > stop_level:
            last_above[0] = k
        return k >= 1.5 * (last_above[0] + 1) + 50

    run_chains(lam, h, max_iter, x0, momentum="adaptive", seed=seed, observe=observe)
    info.update(exact=False, run=len(kls) - 1, n=n, replicates=replicates)
    info["floor"] = noise_floor(lam, n, replicates, seed)[0]
    return np.array(kls), info


def iterations_row(paths: np.ndarray, info: dict[str, Any], level: float) -> dict[str, Any]:
    """The iterations-to-accuracy row of ``kl_paths`` output at ``level``: per path the first k
    after which the KL stays below the level (``crossing``); iterations = their mean (None if a
    path ends above the level: not reached, e.g. below the method's stationary bias),
    iterations_ci = 95% half-width over replicates (0 for exact paths), final_kl = mean KL at the
    end of the run (~ the stationary bias when the run is long)."""
    counts = [crossing(paths[:, r], level) for r in range(paths.shape[1])]
    reached = all(k is not None for k in counts)
    row = {**info, "level": float(level)}
    row["iterations"] = float(np.mean(counts)) if reached else None
    row["iterations_ci"] = (
        _half_width(np.array(counts, dtype=float)) if reached and len(counts) > 1 else 0.0
    )
    if not info["exact"]:
        row["iterations_per_replicate"] = counts
    row["final_kl"] = float(paths[-1].mean())
    return row


def iterations_to_accuracy(
    method: str,
    kappa: float,
    *,
    level: float,
    d: int = 2,
    c: float = 0.5,
    init_scale: float = 2.0,
    max_iter: int | None = None,
    n: int = 10000,
    replicates: int = 3,
    beta: float = HEAVY_BALL_BETA,
    seed: int = 0,
) -> dict[str, Any]:
    """Iterations until KL(pi || law_k) stays below ``level`` (claim 7's speed) for ``method``
    at step h = c from an over-dispersed start: ``kl_paths`` (all options as there) read by
    ``iterations_row``. AMS runs go on for max(50, k/2) steps after their last crossing k: a later
    excursion above the level is missed beyond that.

    Returns a JSON-able dict: method, kappa, d, c, level, iterations (None if not reached),
    iterations_ci, exact, run, final_kl (and n, replicates, floor, iterations_per_replicate for
    AMS)."""
    paths, info = kl_paths(
        method,
        kappa,
        stop_level=level,
        d=d,
        c=c,
        init_scale=init_scale,
        max_iter=max_iter,
        n=n,
        replicates=replicates,
        beta=beta,
        seed=seed,
    )
    return iterations_row(paths, info, level)


# ---- the study --------------------------------------------------------------------------------


def loglog_slope(x: Any, y: Any) -> dict[str, Any]:
    """Least-squares slope of log y against log x with its 95% Student-t half-width (scipy
    ``linregress`` standard error, n - 2 degrees of freedom; None for n < 3); points with y <= 0
    or None are dropped."""
    pts = [(a, b) for a, b in zip(x, y, strict=True) if b is not None and b > 0]
    if len(pts) < 2:
        return {"slope": None, "ci": None, "n_points": len(pts)}
    lx, ly = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    if len(pts) == 2:
        return {"slope": float((ly[1] - ly[0]) / (lx[1] - lx[0])), "ci": None, "n_points": 2}
    fit = stats.linregress(lx, ly)
    half = float(stats.t.ppf(0.975, len(pts) - 2) * fit.stderr)
    return {"slope": float(fit.slope), "ci": half, "n_points": len(pts)}


STUDY = MappingProxyType(
    {
        "full": {
            "steps": (0.05, 0.1, 0.2, 0.4, 0.8),
            "bias_kappas": (1, 16),
            "bias_n": 10000,
            "iteration_kappas": (1, 4, 16, 64, 256),
            "iteration_n": 5000,
            "replicates": 3,
            "c": 0.4,
            "level_factors": (2.0, 4.0),
            "burn": 3.0,
            "d": 2,
        },
        "quick": {
            "steps": (0.1, 0.4),
            "bias_kappas": (1, 16),
            "bias_n": 2000,
            "iteration_kappas": (1, 4, 16, 64),
            "iteration_n": 2000,
            "replicates": 3,
            "c": 0.4,
            "level_factors": (2.0, 4.0),
            "burn": 3.0,
            "d": 2,
        },
    }
)
MEAN_FIELD_STEPS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8)
EXPECTED_KAPPA_EXPONENT = {
    "ula": 1.0,
    "ams": 0.5,
}  # ULA mixes in O(kappa); heavy ball O(sqrt kappa)


def momentum_study(*, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """Claim 7 (Wen et al. 2024) on fixed Gaussian targets, settings ``STUDY``.

    * ``bias``: ``stationary_bias`` rows for ula (exact), heavy-ball (exact, beta = 0.9), ams
      (samples) at every step h and kappa, plus a sampled ula row at h = c per kappa (the sample
      estimator against the closed form).
    * ``bias_slopes``: per (method, kappa) the log-log slopes of KL and W2 against h over all
      steps and over the three smallest (``*_small_h``) (``loglog_slope``; a first-order
      scheme has KL bias ~ h^2 and W2 bias ~ h).
    * ``levels``: factors x the largest stationary KL at h = c (ula exact at every iteration kappa,
      ams measured at the bias kappas): above both methods' bias and far above the floor.
    * ``iterations``: ``iterations_row`` for ula (exact) and ams (samples) at every kappa and level.
    * ``mean_field``: ``ams_mean_field`` rows (AMS's exact stationary law as n -> infinity) at
      every kappa and MEAN_FIELD_STEPS, down to h = 0.001; ``mean_field_slopes`` the log-log slope
      of its KL over h = 0.001 .. 0.01.
    * ``exponents``: per (method, level) ``convergence.rates.fit_rate`` of iterations against kappa
      (window, CI, verdict against 1 for ula and 1/2 for ams, the heavy-ball sqrt(kappa)).
    """
    cfg = STUDY["quick" if quick else "full"]
    d, c, R = cfg["d"], cfg["c"], cfg["replicates"]
    bias = []
    for kappa in cfg["bias_kappas"]:
        for h in cfg["steps"]:
            bias.append(stationary_bias("ula", kappa, h, d=d))
            bias.append(stationary_bias("heavy-ball", kappa, h, d=d))
            bias.append(
                stationary_bias(
                    "ams", kappa, h, d=d, n=cfg["bias_n"], replicates=R, burn=cfg["burn"], seed=seed
                )
            )
        bias.append(
            stationary_bias(
                "ula",
                kappa,
                c,
                d=d,
                n=cfg["bias_n"],
                replicates=R,
                burn=cfg["burn"],
                estimator="samples",
                seed=seed,
            )
        )
    slopes = []
    for method in ("ula", "heavy-ball", "ams"):
        for kappa in cfg["bias_kappas"]:
            rows = [r for r in bias if r["method"] == method and r["kappa"] == kappa]
            rows = [
                r for r in rows if r["estimator"] == ("samples" if method == "ams" else "exact")
            ]
            rows.sort(key=lambda r: r["h"])
            hs = [r["h"] for r in rows]
            entry: dict[str, Any] = {"method": method, "kappa": float(kappa)}
            for metric in ("kl", "w2"):
                values = [r[metric] for r in rows]
                entry[metric] = loglog_slope(hs, values)
                entry[metric + "_small_h"] = loglog_slope(hs[:3], values[:3])
            slopes.append(entry)
    at_c = [r["kl"] for r in bias if r["h"] == c and r["method"] == "ams"]
    at_c += [stationary_bias("ula", kappa, c, d=d)["kl"] for kappa in cfg["iteration_kappas"]]
    levels = [f * max(at_c) for f in cfg["level_factors"]]
    iterations, exponents = [], []
    for method in ("ula", "ams"):
        rows_by_level: dict[float, list] = {lv: [] for lv in levels}
        for kappa in cfg["iteration_kappas"]:
            paths, info = kl_paths(
                method,
                kappa,
                stop_level=min(levels),
                d=d,
                c=c,
                n=cfg["iteration_n"],
                replicates=R,
                seed=seed,
            )
            for lv in levels:
                row = iterations_row(paths, info, lv)
                iterations.append(row)
                rows_by_level[lv].append(row)
        for lv, rows in rows_by_level.items():
            exponents.append(_kappa_exponent(method, lv, rows))
    mean_field, mean_field_slopes = [], []
    for kappa in cfg["bias_kappas"]:
        rows = [ams_mean_field(eigenvalues(kappa, d), h) for h in MEAN_FIELD_STEPS]
        mean_field += rows
        small = rows[:4]  # h = 0.001 .. 0.01: the limit h -> 0
        mean_field_slopes.append(
            {
                "method": "ams",
                "kappa": float(kappa),
                "kl_small_h": loglog_slope([r["h"] for r in small], [r["kl"] for r in small]),
                "h_range": [small[0]["h"], small[-1]["h"]],
            }
        )
    return {
        "bias": bias,
        "bias_slopes": slopes,
        "mean_field": mean_field,
        "mean_field_slopes": mean_field_slopes,
        "levels": levels,
        "iterations": iterations,
        "exponents": exponents,
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
    }


def _kappa_exponent(method: str, level: float, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """fit_rate of iterations against kappa (integers) for one method and level."""
    out: dict[str, Any] = {"method": method, "level": level}
    pts = [(int(r["kappa"]), r["iterations"], r["iterations_ci"]) for r in rows]
    pts = [p for p in pts if p[1] is not None and p[1] > 0]
    if len(pts) < 2:
        return {**out, "slope": None, "note": "level not reached at enough kappas"}
    fit = fit_rate(
        [p[0] for p in pts],
        [p[1] for p in pts],
        [p[2] / 1.96 for p in pts] if method == "ams" else None,
        expected_slope=EXPECTED_KAPPA_EXPONENT[method],
        tol=0.1,
    )
    return {**out, **fit.as_dict()}
