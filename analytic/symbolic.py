"""Leading error constants C T^-p of four samplers on a 1-D Gaussian target, derived with sympy.

Setting (THEORY.md 2.2, 3.2, 3.3). Target q_0 = N(m0, v0) in 1-D (v0 = s0^2 > 0), forward process
x_t = alpha(t) x_0 + sigma(t) xi, so q_t = N(m(t), v(t)) with

    m(t) = alpha(t) m0,    v(t) = alpha(t)^2 v0 + sigma(t)^2,    score s(x, t) = -(x - m(t)) / v(t),

and f = alpha'/alpha, g^2 = (sigma^2)' - 2 f sigma^2 (the SDE coefficients of both processes of
``analytic.processes``: d alpha/dt = f alpha, d sigma^2/dt = 2 f sigma^2 + g^2). The sampler runs
T steps on the uniform grid t_k = 1 - k h, h = (1 - t_end) / T, from the exact marginal q_1
(``init="exact"``) and its output is compared with q_{t_end}. With an affine score every step is

    x' = a x + b + c z,  z ~ N(0, 1)   =>   mu' = a mu + b,   V' = a^2 V + c^2     (THEORY.md 3.3).

The four update rules, re-derived here from SAMPLERS.md and ``convergence/samplers`` (a step goes
from t to t' = t - h; primes denote values at t'):

* ``ddim`` (SAMPLERS.md 2.2, eta = 0, eps = -sigma s):   x' = alpha' (x + sigma^2 s) / alpha
  - sigma' sigma s,  c = 0;
* ``ddpm`` (SAMPLERS.md 2.1, score form, default variance "beta"): rho = alpha / alpha',
  beta = sigma^2 - rho^2 sigma'^2,   x' = (x + beta s) / rho,  c^2 = beta, and no noise at the
  last step (Ho et al. 2020, Alg. 2; ``final_noise=False``);
* ``ode-euler`` (SAMPLERS.md 2.7): x' = x - h F(x, t),  F = f x - g^2 s / 2 (Song et al. 2021,
  eq. 13);
* ``ode-heun`` (SAMPLERS.md 2.7): x~ = x - h F(x, t),  x' = x - h/2 [F(x, t) + F(x~, t')].

Derivation (sympy, symbolic in alpha(t), sigma(t) and their t-derivatives, m0, v0, h):

1. Taylor-expand alpha(t - h), sigma(t - h) in h; expand the step coefficients a, b, c^2 in h.
2. Local errors against the exact marginal at t' (the exact flow maps q_t onto q_t'):
   dm_loc = a m(t) + b - m(t'),  dv_loc = a^2 v(t) + c^2 - v(t').  Their coefficients of
   h^0 .. h^p vanish identically; the first non-zero one defines the order p and
   D_m(t) = [h^{p+1}] dm_loc, D_v(t) = [h^{p+1}] dv_loc.  A(t) = [h^1] a.
3. The errors e_k = mu_k - m(t_k), f_k = V_k - v(t_k) obey e_{k+1} = a_k e_k + dm_loc(t_k),
   f_{k+1} = a_k^2 f_k + dv_loc(t_k), e_0 = f_0 = 0 exactly (exact start q_1). With
   prod_{j>k} a_j = P(t_k) + O(h), P(t) = exp(int_{t_end}^t A(u) du) the limit of the step's
   linearised map from t to t_end (for the ODE samplers the exact flow's Jacobian
   sqrt(v(t_end) / v(t)), THEORY.md 3.2; for DDPM the mean dynamics of the reverse SDE), and
   sum_k h (.) -> int dt, the output errors are dm = E_m h^p + O(h^{p+1}),
   dv = E_v h^p + O(h^{p+1}) with

       E_m = int_{t_end}^1 P(t) D_m(t) dt,    E_v = int_{t_end}^1 P(t)^2 D_v(t) dt  [- C_1(t_end)],

   the bracket for DDPM without final noise (p = 1): the skipped last noise variance is
   c^2 = C_1(t_end) h + O(h^2), C_1 = [h^1] c^2.
4. Steps 1-2 are exact sympy algebra (truncated power series in h whose coefficients live in
   the field of rational functions of the jets alpha^(k)(t), sigma^(k)(t), m0, v0; the order p
   is read off, not assumed). The t-integrals of step 3 are evaluated numerically: the three
   integrals log P(t), int P D_m, int P^2 D_v are integrated together from t_end to 1 as one
   ODE system by ``scipy.integrate.solve_ivp`` (DOP853, rtol 1e-12; it agrees with nested
   ``scipy.integrate.quad`` to ~1e-13 and is ~10x faster), the lambdified coefficients being
   fed with the exact jets of the VP or VE formulas (``_jets``).

The expansion is asymptotic in h: the next term is O(h) relative. Measured on ``gaussian:d=1``
(N(1, 0.5)) under VP, |exact / predicted - 1| is about 1.4/T (DDIM), 8/T (Euler), 2.3/T (Heun)
and 30/T (DDPM) in KL, half that in W2; DDPM's is large because the skipped last noise
beta(t_end + h/2) h differs from its leading term beta(t_end) h by ~83 h relative (with
``final_noise=True`` it is 0.3/T). Degenerate case: for N(0, 1) under VP, q_t = N(0, 1) for all
t, the PF-ODE drift vanishes (ode-euler and ode-heun are exact, C = 0 up to round-off) and DDPM's
error is only the skipped last noise, dv = -beta(t_end) h + O(h^2).

Metrics (leading terms for small moment errors dm, dv against the reference N(m, s^2), with
s^2 = v(t_end); THEORY.md 2.1 and the stable forms of THEORY.md 3.4 / ``analytic.gaussian``,
whose KL is KL(reference || output), the direction of ``convergence.evaluators.gaussian``;
to this order KL is symmetric):

    KL ~ dm^2 / (2 s^2) + dv^2 / (4 s^4)           (u - log1p u ~ u^2 / 2, u = dv / s^2)
    W2 ~ sqrt(dm^2 + dv^2 / (4 s^2))                 (sqrt(s^2 + dv) - s ~ dv / (2 s))
    H  ~ sqrt(dm^2 / (8 s^2) + dv^2 / (16 s^4))      (-log BC ~ u^2 / 16 + dm^2 / (8 s^2))
    TV ~ E|a Z + b (Z^2 - 1)| / 2,  a = dm / s,  b = dv / (2 s^2),  Z ~ N(0, 1)

(the output density is q (1 + g) with g = a z + b (z^2 - 1) to first order, THEORY.md 2.1; the
expectation in closed form through the roots of g). With dm = M T^-p, dv = V T^-p (M = E_m
(1 - t_end)^p etc.), KL ~ C T^-2p and the three distances ~ C T^-p.

Cost: the sympy derivation takes 0.2-2 s per sampler (once, cached); a set of
moment errors then costs one ODE quadrature (~0.2 s, cached per arguments).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np
import sympy as sp
from scipy import integrate

from analytic.processes import VE, VP, Process, make_process

SAMPLERS = ("ddim", "ddpm", "ode-euler", "ode-heun")
METRICS = ("kl", "w2", "hellinger", "tv")
_MAX_ORDER = 2  # local errors are expanded to h^(_MAX_ORDER + 1): orders p <= _MAX_ORDER

t, h = sp.symbols("t h", real=True)
m0 = sp.Symbol("m0", real=True)
v0 = sp.Symbol("v0", positive=True)
alpha = sp.Function("alpha")
sigma = sp.Function("sigma")

# jets: A[k] stands for d^k alpha / dt^k at t, S[k] for d^k sigma / dt^k at t
_N = _MAX_ORDER + 1  # series degree in h
_A = sp.symbols(f"A0:{_N + 2}", real=True)
_S = sp.symbols(f"S0:{_N + 2}", real=True)
_SYMBOLS = (*_A, *_S, m0, v0)
# exact rational arithmetic: the field of rational functions in the jets, m0 and v0
_FIELD, *_GENS = sp.field(_SYMBOLS, sp.QQ)
_JA, _JS = _GENS[: _N + 2], _GENS[_N + 2 : 2 * _N + 4]
_M0, _V0 = _GENS[-2:]


# ---- truncated power series in h with rational-function coefficients -------------------------


class _Series:
    """c_0 + c_1 h + ... + c_N h^N (mod h^(N+1)), coefficients in ``_FIELD``."""

    def __init__(self, coeffs) -> None:
        c = list(coeffs)[: _N + 1]
        self.c = c + [_FIELD.zero] * (_N + 1 - len(c))

    @classmethod
    def const(cls, value) -> _Series:
        return cls([_FIELD(value)])

    def __add__(self, other) -> _Series:
        other = other if isinstance(other, _Series) else _Series.const(other)
        return _Series(a + b for a, b in zip(self.c, other.c, strict=True))

    __radd__ = __add__

    def __neg__(self) -> _Series:
        return _Series(-a for a in self.c)

    def __sub__(self, other) -> _Series:
        return self + (-other)

    def __rsub__(self, other) -> _Series:
        return (-self) + other

    def __mul__(self, other) -> _Series:
        if not isinstance(other, _Series):
            return _Series(a * other for a in self.c)
        return _Series(
            sum((self.c[j] * other.c[k - j] for j in range(k + 1)), _FIELD.zero)
            for k in range(_N + 1)
        )

    __rmul__ = __mul__

    def inverse(self) -> _Series:
        """1 / series: r_0 = 1 / c_0, r_k = -(sum_{j=1}^k c_j r_{k-j}) / c_0."""
        r = [1 / self.c[0]]
        for k in range(1, _N + 1):
            r.append(-sum((self.c[j] * r[k - j] for j in range(1, k + 1)), _FIELD.zero) * r[0])
        return _Series(r)

    def __truediv__(self, other) -> _Series:
        return self * (other.inverse() if isinstance(other, _Series) else 1 / _FIELD(other))

    def times_h(self) -> _Series:
        return _Series([_FIELD.zero, *self.c[:-1]])


@dataclass(frozen=True)
class _Affine:
    """An affine function y = slope x + intercept of the state x, both series in h."""

    slope: _Series
    intercept: _Series

    def __add__(self, other: _Affine) -> _Affine:
        return _Affine(self.slope + other.slope, self.intercept + other.intercept)

    def __sub__(self, other: _Affine) -> _Affine:
        return _Affine(self.slope - other.slope, self.intercept - other.intercept)

    def scale(self, k) -> _Affine:
        return _Affine(self.slope * k, self.intercept * k)

    def shift(self, k) -> _Affine:
        return _Affine(self.slope, self.intercept + k)

    def times_h(self) -> _Affine:
        return _Affine(self.slope.times_h(), self.intercept.times_h())


_X = _Affine(_Series.const(1), _Series.const(0))


@dataclass(frozen=True)
class _Coeffs:
    """alpha, alpha', sigma, sigma' at one time as series in h (Taylor jets at t), and the
    quantities of the module docstring built from them."""

    a: _Series
    da: _Series
    s: _Series
    ds: _Series

    @property
    def m(self) -> _Series:
        return self.a * _M0

    @property
    def v(self) -> _Series:
        return self.a * self.a * _V0 + self.s * self.s

    def score(self, y: _Affine) -> _Affine:
        """s(y) = -(y - m) / v."""
        return y.shift(-self.m).scale(-self.v.inverse())

    @property
    def f(self) -> _Series:
        return self.da / self.a

    @property
    def g2(self) -> _Series:
        return 2 * self.s * self.ds - 2 * self.f * self.s * self.s

    def drift(self, y: _Affine) -> _Affine:
        """Probability-flow drift F = f y - g^2 s(y) / 2 (Song et al. 2021, eq. 13)."""
        return y.scale(self.f) - self.score(y).scale(self.g2 * sp.Rational(1, 2))


def _at(shift: int) -> _Coeffs:
    """Coefficients at t - shift * h: Taylor series in h of alpha, alpha', sigma, sigma'."""

    def taylor(jet, first):
        return _Series(
            jet[first + k] * sp.Rational((-shift) ** k, math.factorial(k)) for k in range(_N + 1)
        )

    return _Coeffs(taylor(_JA, 0), taylor(_JA, 1), taylor(_JS, 0), taylor(_JS, 1))


def _step(sampler: str) -> tuple[_Affine, _Series]:
    """(mean map, noise variance c^2) of one step from t to t - h (module docstring)."""
    now, nxt = _at(0), _at(1)
    zero = _Series.const(0)
    if sampler == "ddim":  # SAMPLERS.md 2.2; convergence/samplers/discrete.py ddim_step
        s = now.score(_X)
        x0_hat = (_X + s.scale(now.s * now.s)).scale(now.a.inverse())
        return x0_hat.scale(nxt.a) - s.scale(nxt.s * now.s), zero
    if sampler == "ddpm":  # SAMPLERS.md 2.1; discrete.py ddpm_step, variance "beta"
        rho = now.a / nxt.a
        beta = now.s * now.s - rho * rho * nxt.s * nxt.s
        return (_X + now.score(_X).scale(beta)).scale(rho.inverse()), beta
    if sampler == "ode-euler":  # SAMPLERS.md 2.7; convergence/samplers/ode.py euler_step
        return _X - now.drift(_X).times_h(), zero
    if sampler == "ode-heun":  # SAMPLERS.md 2.7; ode.py heun_step
        k1 = now.drift(_X)
        k2 = nxt.drift(_X - k1.times_h())
        return _X - (k1 + k2).times_h().scale(sp.Rational(1, 2)), zero
    raise ValueError(f"unknown sampler {sampler!r}; allowed: {', '.join(SAMPLERS)}")


@cache
def _jet_expansion(sampler: str) -> tuple[int, sp.Expr, sp.Expr, sp.Expr, sp.Expr]:
    """(p, A, D_m, D_v, C_1) as expressions in the jet symbols; p is found as the first order
    whose local error does not vanish identically (exact rational arithmetic)."""
    mean_map, c2 = _step(sampler)
    now, nxt = _at(0), _at(1)
    a = mean_map.slope
    local_m = a * now.m + mean_map.intercept - nxt.m
    local_v = a * a * now.v + c2 - nxt.v
    for k in range(_N + 1):
        dm, dv = local_m.c[k], local_v.c[k]
        if dm != 0 or dv != 0:
            if k == 0:
                raise AssertionError(f"{sampler}: the step is not consistent (O(1) local error)")
            exprs = (a.c[1], dm, dv, c2.c[1])
            return (k - 1, *(e.as_expr() for e in exprs))
    raise AssertionError(f"{sampler}: local error vanishes to order h^{_N}")


@dataclass(frozen=True)
class LocalExpansion:
    """One step's expansion in h (sympy expressions in t, alpha(t), sigma(t), their derivatives,
    m0, v0): the derived order p; the rate A = [h^1] a of the mean map's slope
    a = 1 + A h + O(h^2); the leading local errors D_m = [h^(p+1)] (a m + b - m(t - h)) and
    D_v = [h^(p+1)] (a^2 v + c^2 - v(t - h)); the noise rate C_1 = [h^1] c^2."""

    sampler: str
    order: int
    rate: sp.Expr
    mean_error: sp.Expr
    var_error: sp.Expr
    noise: sp.Expr


def _as_functions(expr: sp.Expr) -> sp.Expr:
    """Replace the jet symbols by alpha(t), sigma(t) and their derivatives."""
    subs = {}
    for k, (a_k, s_k) in enumerate(zip(_A, _S, strict=True)):
        subs[a_k] = alpha(t).diff(t, k) if k else alpha(t)
        subs[s_k] = sigma(t).diff(t, k) if k else sigma(t)
    return expr.subs(subs)


def local_expansion(sampler: str) -> LocalExpansion:
    """The symbolic one-step expansion of ``sampler`` (module docstring, steps 1-2), with the
    derived order p (1 for ddim, ddpm, ode-euler; 2 for ode-heun)."""
    _check_sampler(sampler)
    p, *exprs = _jet_expansion(sampler)
    return LocalExpansion(sampler, p, *(_as_functions(e) for e in exprs))


# ---- the process formulas and the t-integrals -----------------------------------------------


def _exp_jet(value: float, dlog: list[float]) -> list[float]:
    """Derivatives y, y', ..., y^(n) of y = exp(phi) from y and phi', ..., phi^(n) (Leibniz on
    y' = phi' y: y^(k+1) = sum_{j=0}^k C(k, j) phi^(j+1) y^(k-j))."""
    y = [value]
    for k in range(len(dlog)):
        y.append(sum(math.comb(k, j) * dlog[j] * y[k - j] for j in range(k + 1)))
    return y


def _sqrt_jet(value: float, w: list[float]) -> list[float]:
    """Derivatives of s = sqrt(w) from s and w, w', ..., w^(n) (Leibniz on s^2 = w:
    s^(k) = [w^(k) - sum_{j=1}^{k-1} C(k, j) s^(j) s^(k-j)] / (2 s))."""
    s = [value]
    for k in range(1, len(w)):
        rest = sum(math.comb(k, j) * s[j] * s[k - j] for j in range(1, k))
        s.append((w[k] - rest) / (2.0 * value))
    return s


def _jets(process: Process, s: float) -> list[float]:
    """(alpha, alpha', ..., sigma, sigma', ...) at time s, up to the order the jets carry, from
    the formulas of ``analytic.processes`` (values of alpha and sigma from the process itself):
    VP: alpha = exp(phi), phi' = -beta(t)/2 = f(t), phi'' = -(beta_max - beta_min)/2, and
    sigma = sqrt(1 - alpha^2); VE: alpha = 1 and sigma = exp(log sigma_min + t log(sigma_max /
    sigma_min)) (SAMPLERS.md 1.1)."""
    n = len(_A) - 1
    if isinstance(process, VP):
        dlog = [process.f(s), -0.5 * (process.beta_max - process.beta_min)] + [0.0] * (n - 2)
        a = _exp_jet(process.alpha(s), dlog)
        w = [process.sigma(s) ** 2]
        w += [
            -sum(math.comb(k, j) * a[j] * a[k - j] for j in range(k + 1)) for k in range(1, n + 1)
        ]
        return a + _sqrt_jet(process.sigma(s), w)
    rate = math.log(process.sigma_max / process.sigma_min)
    return [1.0] + [0.0] * n + _exp_jet(process.sigma(s), [rate] + [0.0] * (n - 1))


@cache
def _numeric(sampler: str):
    """p and the lambdified (A, D_m, D_v, C_1)(jets..., m0, v0)."""
    p, *exprs = _jet_expansion(sampler)
    return p, tuple(sp.lambdify(_SYMBOLS, e, "math") for e in exprs)


@dataclass(frozen=True)
class MomentErrors:
    """Leading global errors of the output moments: mean - m(t_end) ~ mean * T^-order and
    variance - v(t_end) ~ var * T^-order; ``ref_var`` = v(t_end)."""

    sampler: str
    order: int
    mean: float
    var: float
    ref_var: float
    t_end: float


def _resolve_process(process) -> Process:
    if isinstance(process, str):
        return make_process(process)
    if isinstance(process, VP | VE):
        return process
    raise ValueError(f"process must be 'vp' or 've' (or a VP/VE instance), got {process!r}")


def moment_errors(
    sampler: str,
    *,
    process: str | Process = "vp",
    mean: float = 0.0,
    var: float = 1.0,
    t_end: float | None = None,
    final_noise: bool = False,
) -> MomentErrors:
    """Leading terms dm ~ M T^-p, dv ~ V T^-p of the output mean and variance errors of
    ``sampler`` on the target N(mean, var) (module docstring, step 3):

        M = (1 - t_end)^p int_{t_end}^1 P D_m dt,
        V = (1 - t_end)^p [int_{t_end}^1 P^2 D_v dt - C_1(t_end) 1{p = 1, no final noise}],
        P(t) = exp(int_{t_end}^t A(u) du),

    the three integrals as one ODE system (``scipy.integrate.solve_ivp``, DOP853, rtol 1e-12).
    ``final_noise`` as in ``convergence.evaluators.error``: whether the last step adds its
    noise (DDPM only). Defaults: the process's ``t_end_default``; only the samplers' default
    options (ddim eta = 0, ddpm variance "beta", uniform spacing).
    """
    _check_sampler(sampler)
    proc = _resolve_process(process)
    mean, var = float(mean), float(var)
    if not (math.isfinite(mean) and math.isfinite(var) and var > 0.0):
        raise ValueError(f"need a finite mean and a variance > 0, got mean={mean}, var={var}")
    t_end = proc.t_end_default if t_end is None else float(t_end)
    if not 0.0 < t_end < 1.0:
        raise ValueError(f"t_end must lie in (0, 1), got {t_end}")
    return _moment_errors(sampler, proc, mean, var, t_end, bool(final_noise))


@lru_cache(maxsize=256)
def _moment_errors(
    sampler: str, proc: Process, mean: float, var: float, t_end: float, final_noise: bool
) -> MomentErrors:
    p, (rate, d_m, d_v, c_1) = _numeric(sampler)

    def rhs(s: float, y: np.ndarray) -> list[float]:
        jet = _jets(proc, s)
        prop = math.exp(y[0])
        return [
            rate(*jet, mean, var),
            prop * d_m(*jet, mean, var),
            prop * prop * d_v(*jet, mean, var),
        ]

    sol = integrate.solve_ivp(
        rhs, (t_end, 1.0), [0.0, 0.0, 0.0], method="DOP853", rtol=1e-12, atol=1e-13
    )
    if sol.status != 0:
        raise RuntimeError(f"quadrature of the leading error of {sampler!r} failed: {sol.message}")
    e_m, e_v = float(sol.y[1, -1]), float(sol.y[2, -1])
    if not final_noise:
        skipped = c_1(*_jets(proc, t_end), mean, var)
        if skipped != 0.0 and p != 1:
            raise AssertionError(f"{sampler}: an O(h) skipped noise dominates order {p}")
        e_v -= skipped
    scale = (1.0 - t_end) ** p
    ref_var = proc.alpha(t_end) ** 2 * var + proc.sigma(t_end) ** 2
    return MomentErrors(sampler, p, scale * e_m, scale * e_v, ref_var, t_end)


# ---- metrics --------------------------------------------------------------------------------


def _tv_constant(a: float, b: float) -> float:
    """E|a Z + b (Z^2 - 1)| / 2 for Z ~ N(0, 1). g = a z + b (z^2 - 1) has mean 0, so
    E|g| = -2 E[g; g < 0]; for b > 0 (else flip both signs) g < 0 between the roots
    r1 < r2 of b z^2 + a z - b, and with int z phi = -phi, int (z^2 - 1) phi = -z phi:
    E|g| = -2 [a (phi(r1) - phi(r2)) + b (r1 phi(r1) - r2 phi(r2))]; b = 0: |a| sqrt(2 / pi)."""
    if b == 0.0:
        return abs(a) / math.sqrt(2.0 * math.pi)
    if b < 0.0:
        a, b = -a, -b
    root = math.sqrt(a * a + 4.0 * b * b)
    q = -0.5 * (a + math.copysign(root, a))  # roots q / b and -b / q, free of cancellation
    r1, r2 = sorted((q / b, -b / q))

    def phi(z: float) -> float:
        return math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)

    return -(a * (phi(r1) - phi(r2)) + b * (r1 * phi(r1) - r2 * phi(r2)))


def metric_constant(metric: str, dm: float, dv: float, var: float) -> float:
    """Leading term of ``metric`` between N(m, var) and N(m + dm, var + dv) for small dm, dv
    (module docstring): KL (second order in dm, dv), W2, Hellinger, TV (first order)."""
    if metric == "kl":
        return dm * dm / (2.0 * var) + dv * dv / (4.0 * var * var)
    if metric == "w2":
        return math.sqrt(dm * dm + dv * dv / (4.0 * var))
    if metric == "hellinger":
        return math.sqrt(dm * dm / (8.0 * var) + dv * dv / (16.0 * var * var))
    if metric == "tv":
        return _tv_constant(dm / math.sqrt(var), dv / (2.0 * var))
    raise ValueError(f"unknown metric {metric!r}; allowed: {', '.join(METRICS)}")


@dataclass(frozen=True)
class Leading:
    """error(T) ~ constant * T^-order (order = p for tv, w2, hellinger; 2p for kl)."""

    constant: float
    order: float
    metric: str
    sampler: str

    def predict(self, steps) -> np.ndarray:
        """constant * steps^-order, elementwise (float64)."""
        return self.constant * np.asarray(steps, dtype=np.float64) ** -self.order


def leading_error(
    sampler: str,
    metric: str,
    *,
    process: str | Process = "vp",
    mean: float = 0.0,
    var: float = 1.0,
    t_end: float | None = None,
    final_noise: bool = False,
) -> Leading:
    """Leading term C T^-order of the exact error of ``sampler`` (uniform grid from t = 1 to
    t_end, default the process's, exact start q_1, exact score) on the 1-D target N(mean, var),
    in ``metric`` (KL(reference || output), W2, Hellinger or TV): ``metric_constant`` of the
    ``moment_errors`` (module docstring)."""
    _check_sampler(sampler)
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; allowed: {', '.join(METRICS)}")
    me = moment_errors(
        sampler, process=process, mean=mean, var=var, t_end=t_end, final_noise=final_noise
    )
    constant = metric_constant(metric, me.mean, me.var, me.ref_var)
    order = 2 * me.order if metric == "kl" else me.order
    return Leading(constant, float(order), metric, sampler)


def _check_sampler(sampler: str) -> None:
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; allowed: {', '.join(SAMPLERS)}")
