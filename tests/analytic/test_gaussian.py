"""Closed-form Gaussian divergences against independent computations.

References: the textbook formulas in numpy (moderate differences), POT's Bures-Wasserstein distance,
scipy quadrature of the 1-D densities, a 2-D trapezoid grid, 50-digit mpmath for the 1-D TV,
30-digit mpmath with scipy quadrature and a closed form for the 2-D TV, and the second-order
expansions derived below for tiny differences, where the textbook formulas fail.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import ot
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from analytic.gaussian import (
    TVResult,
    hellinger,
    kl,
    tv,
    tv_1d,
    tv_2d,
    tv_bounds,
    tv_equal_cov,
    w2,
)

F64 = torch.float64


def _t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def _spd(rng: np.random.Generator, d: int, floor: float = 0.5) -> np.ndarray:
    A = rng.standard_normal((d, d))
    return A @ A.T / d + floor * np.eye(d)


def _sym(rng: np.random.Generator, d: int) -> np.ndarray:
    E = rng.standard_normal((d, d))
    return E + E.T


def _pair(seed: int, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(m0, S0, m1, S1) with O(1) differences."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(d), _spd(rng, d), rng.standard_normal(d), _spd(rng, d)


def _naive_kl(m0, S0, m1, S1) -> float:
    """Textbook KL = 1/2 [tr(S1^-1 S0) - d + dm^T S1^-1 dm + log det S1 - log det S0]."""
    dm = m1 - m0
    S1inv = np.linalg.inv(S1)
    logdet = np.linalg.slogdet(S1)[1] - np.linalg.slogdet(S0)[1]
    return 0.5 * (np.trace(S1inv @ S0) - len(m0) + dm @ S1inv @ dm + logdet)


def _naive_h2(m0, S0, m1, S1) -> float:
    """Textbook H^2 = 1 - det(S0)^1/4 det(S1)^1/4 det(Sbar)^-1/2 exp(-dm^T Sbar^-1 dm / 8)."""
    Sbar, dm = 0.5 * (S0 + S1), m1 - m0
    logdet = [np.linalg.slogdet(S)[1] for S in (S0, S1, Sbar)]
    log_bc = 0.25 * (logdet[0] + logdet[1]) - 0.5 * logdet[2] - dm @ np.linalg.solve(Sbar, dm) / 8
    return 1.0 - math.exp(log_bc)


def _rel(a, b) -> float:
    return abs(float(a) / float(b) - 1.0)


def _within_factor(a, b, factor: float) -> bool:
    """b / factor < a < b * factor (False for zero, negative or NaN a)."""
    return float(b) / factor < float(a) < float(b) * factor


# ----------------------------------------------------------------------------- moderate differences


@pytest.mark.parametrize("d", [1, 2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_kl_w2_hellinger_match_textbook_and_pot(d: int, seed: int) -> None:
    m0, S0, m1, S1 = _pair(seed, d)
    args = tuple(map(_t, (m0, S0, m1, S1)))
    assert _rel(kl(*args), _naive_kl(m0, S0, m1, S1)) < 1e-10
    assert _rel(hellinger(*args) ** 2, _naive_h2(m0, S0, m1, S1)) < 1e-10
    bures = ot.gaussian.bures_wasserstein_distance(m0, m1, S0, S1)
    assert _rel(w2(*args), bures) < 1e-9


def _quad(f, lo: float, hi: float, points=None) -> float:
    return integrate.quad(f, lo, hi, points=points, limit=500, epsabs=1e-14, epsrel=1e-12)[0]


@pytest.mark.parametrize(
    ("m0", "v0", "m1", "v1"),
    [(0.0, 1.0, 0.5, 1.0), (0.3, 1.7, -0.4, 0.6), (1.0, 0.2, 1.0, 3.0), (-2.0, 4.0, 1.5, 0.5)],
)
def test_1d_kl_hellinger_tv_match_quadrature(m0: float, v0: float, m1: float, v1: float) -> None:
    p0, p1 = stats.norm(m0, math.sqrt(v0)), stats.norm(m1, math.sqrt(v1))
    lo, hi = min(m0, m1) - 20 * math.sqrt(max(v0, v1)), max(m0, m1) + 20 * math.sqrt(max(v0, v1))
    kl_ref = _quad(lambda x: p0.pdf(x) * (p0.logpdf(x) - p1.logpdf(x)), lo, hi)
    h2_ref = 1.0 - _quad(lambda x: math.sqrt(p0.pdf(x) * p1.pdf(x)), lo, hi)
    # crossing points of the densities from numpy's polynomial roots, as quad break points
    # log p0 = log p1  <=>  (x - m1)^2 / v1 - (x - m0)^2 / v0 + log(v1 / v0) = 0
    quadratic = [1 / v1 - 1 / v0, 2 * (m0 / v0 - m1 / v1)]
    quadratic.append(m1**2 / v1 - m0**2 / v0 + math.log(v1 / v0))
    crossings = [r.real for r in np.roots(quadratic) if abs(r.imag) < 1e-12 and lo < r.real < hi]
    tv_ref = 0.5 * _quad(lambda x: abs(p0.pdf(x) - p1.pdf(x)), lo, hi, crossings or None)

    args = (_t([m0]), _t([[v0]]), _t([m1]), _t([[v1]]))
    assert _rel(kl(*args), kl_ref) < 1e-9
    assert _rel(hellinger(*args) ** 2, h2_ref) < 1e-9
    assert _rel(tv_1d(m0, v0, m1, v1), tv_ref) < 1e-9
    result = tv(*args)
    assert result.exact and _rel(result.value, tv_ref) < 1e-9
    assert float(result.lower) == float(result.value) == float(result.upper)


def test_hellinger_2d_matches_trapezoid_grid() -> None:
    m0, S0, m1, S1 = _pair(3, 2)
    # sqrt(p0 p1) is a scaled Gaussian: the trapezoid rule converges spectrally on a wide grid
    x = np.linspace(-14.0, 14.0, 561)
    X, Y = np.meshgrid(x, x, indexing="ij")
    pts = np.stack([X.ravel(), Y.ravel()], axis=-1)
    log_p0 = stats.multivariate_normal(m0, S0).logpdf(pts)
    log_p1 = stats.multivariate_normal(m1, S1).logpdf(pts)
    h = x[1] - x[0]
    bc = np.exp(0.5 * (log_p0 + log_p1)).sum() * h * h
    assert _rel(hellinger(_t(m0), _t(S0), _t(m1), _t(S1)) ** 2, 1.0 - bc) < 1e-9


# ----------------------------------------------------------------------------- tiny differences
#
# Pairs S0 = S1 + eps E, m0 = m1 + eps v. With u_i the eigenvalues of C = eps L1^{-1} E L1^{-T}
# (S1 = L1 L1^T), sum_i u_i^2 = |C|_F^2 = eps^2 tr((S1^{-1} E)^2), and
#   KL:  u - log1p(u) = u^2/2 + O(u^3)  =>  KL / eps^2 -> 1/4 tr((S1^{-1} E)^2) + 1/2 v^T S1^{-1} v;
#   H^2: -log BC = sum_i [log1p(u_i/2)/2 - log1p(u_i)/4] + dm^T Sbar^{-1} dm / 8 with
#        log1p(u/2)/2 - log1p(u)/4 = u^2/16 + O(u^3), Sbar = S1 + O(eps), H^2 = -log BC + O(eps^4)
#        =>  H^2 / eps^2 -> 1/16 tr((S1^{-1} E)^2) + 1/8 v^T S1^{-1} v;
#   W2:  X = (S1^{1/2} S0 S1^{1/2})^{1/2} = S1 + eps Y1 + eps^2 Y2 + O(eps^3) with
#        S1 Y1 + Y1 S1 = S1^{1/2} E S1^{1/2} and S1 Y2 + Y2 S1 = -Y1^2. In the eigenbasis
#        S1 = Q diag(s) Q^T, F = Q^T E Q: (Y1)_ij = sqrt(s_i s_j) F_ij / (s_i + s_j), so
#        tr Y1 = tr E / 2 (the first order cancels in tr(S0 + S1 - 2X)) and
#        -2 tr Y2 = sum_i (Y1^2)_ii / s_i = sum_ij s_j F_ij^2 / (s_i + s_j)^2
#                 = 1/2 sum_ij F_ij^2 / (s_i + s_j)      (symmetrising i <-> j)
#        =>  W2 / eps -> sqrt(|v|^2 + 1/2 sum_ij F_ij^2 / (s_i + s_j)).
# Every limit is exact up to a relative O(eps) remainder. The effective E and v are recovered from
# the rounded inputs, (S0 - S1) / eps and (m0 - m1) / eps (both differences are exact in floating
# point by Sterbenz's lemma), so the references describe exactly the pair the functions see.

EPSILONS = [1e-6, 1e-8, 1e-10, 1e-12]


def _tiny_pair(eps: float, d: int = 3, seed: int = 7):
    rng = np.random.default_rng(seed)
    S1, E, m1, v = _spd(rng, d), _sym(rng, d), rng.standard_normal(d), rng.standard_normal(d)
    S0, m0 = S1 + eps * E, m1 + eps * v
    return m0, S0, m1, S1, (S0 - S1) / eps, (m0 - m1) / eps, E


def _second_order_limits(S1, E, v) -> tuple[float, float, float]:
    """(KL/eps^2, H^2/eps^2, W2/eps) limits derived above."""
    S1inv_E = np.linalg.solve(S1, E)
    tr2, quad = np.trace(S1inv_E @ S1inv_E), v @ np.linalg.solve(S1, v)
    s, Q = np.linalg.eigh(S1)
    F = Q.T @ E @ Q
    bures2 = 0.5 * (F**2 / (s[:, None] + s[None, :])).sum()
    return tr2 / 4 + quad / 2, tr2 / 16 + quad / 8, math.sqrt(v @ v + bures2)


@pytest.mark.parametrize("eps", EPSILONS)
def test_tiny_differences_match_second_order_limits(eps: float) -> None:
    m0, S0, m1, S1, E_eff, v_eff, _ = _tiny_pair(eps)
    kl_lim, h2_lim, w2_lim = _second_order_limits(S1, E_eff, v_eff)
    tol = 100 * eps + 1e-12  # O(eps) remainder of the expansions; < 1e-6 required at eps = 1e-12
    args = tuple(map(_t, (m0, S0, m1, S1)))
    assert _rel(kl(*args) / eps**2, kl_lim) < tol
    assert _rel(hellinger(*args) ** 2 / eps**2, h2_lim) < tol
    assert _rel(w2(*args) / eps, w2_lim) < tol


@pytest.mark.parametrize("eps", EPSILONS)
def test_dS_keyword_carries_the_exact_difference(eps: float) -> None:
    # S0 is rounded, dS = eps E is exact: the result must follow dS, i.e. the exact E
    m0, S0, m1, S1, _, v_eff, E = _tiny_pair(eps)
    kl_lim, h2_lim, w2_lim = _second_order_limits(S1, E, v_eff)
    args, dS = tuple(map(_t, (m0, S0, m1, S1))), _t(eps * E)
    tol = 100 * eps + 1e-12
    assert _rel(kl(*args, dS=dS) / eps**2, kl_lim) < tol
    assert _rel(hellinger(*args, dS=dS) ** 2 / eps**2, h2_lim) < tol
    assert _rel(w2(*args, dS=dS) / eps, w2_lim) < tol
    lower, upper = tv_bounds(*args, dS=dS)
    assert _rel(lower / eps**2, h2_lim) < tol
    assert _rel(upper / eps, math.sqrt(2 * h2_lim)) < tol


@pytest.mark.parametrize("eps", [1e-4, 1e-8, 1e-12])
@pytest.mark.parametrize("rotated", [False, True])
def test_w2_commuting_pair_matches_closed_form(eps: float, rotated: bool) -> None:
    # commuting S0, S1: W2^2 = |dm|^2 + sum_i (sqrt(s0_i) - sqrt(s1_i))^2 exactly, and
    # sqrt(s0) - sqrt(s1) = (s0 - s1) / (sqrt(s0) + sqrt(s1)) has no cancellation
    rng = np.random.default_rng(11)
    d = 4
    s, e, dm = rng.uniform(0.5, 3.0, d), rng.standard_normal(d), eps * rng.standard_normal(d)
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0] if rotated else np.eye(d)
    S1, dS = Q @ np.diag(s) @ Q.T, Q @ np.diag(eps * e) @ Q.T
    S1, dS = 0.5 * (S1 + S1.T), 0.5 * (dS + dS.T)
    ref = math.sqrt(dm @ dm + ((eps * e / (np.sqrt(s + eps * e) + np.sqrt(s))) ** 2).sum())
    got = w2(_t(dm), _t(S1 + dS), _t(np.zeros(d)), _t(S1), dS=_t(dS))
    assert _rel(got, ref) < 1e-12


@pytest.mark.parametrize("eps", [1e-10, 1e-12])
def test_naive_formulas_fail_where_stable_ones_hold(eps: float) -> None:
    # negative control: the textbook forms are off by orders of magnitude at these sizes
    m0, S0, _, S1, E_eff, _, _ = _tiny_pair(eps)
    m1 = m0  # covariance terms only, so that nothing hides the cancellation
    kl_lim, h2_lim, w2_lim = _second_order_limits(S1, E_eff, np.zeros(3))
    args = tuple(map(_t, (m0, S0, m1, S1)))
    assert _rel(kl(*args), kl_lim * eps**2) < 1e-8
    assert _rel(w2(*args), w2_lim * eps) < 1e-8
    assert _rel(hellinger(*args) ** 2, h2_lim * eps**2) < 1e-8
    # naive values come out as 0, negative or 1e2..1e8 times too large (trace noise ~1e-16)
    assert not _within_factor(_naive_kl(m0, S0, m1, S1), kl_lim * eps**2, 10.0)
    assert not _within_factor(_naive_h2(m0, S0, m1, S1), h2_lim * eps**2, 10.0)
    pot = ot.gaussian.bures_wasserstein_distance(m0, m1, S0, S1)
    assert not _within_factor(pot, w2_lim * eps, 10.0)


# ----------------------------------------------------------------------------- total variation


def _tv_1d_mpmath(m0: float, v0: float, m1: float, v1: float, dv: float | None = None) -> float:
    """TV = |P0(I) - P1(I)| with I between the density crossings, textbook roots at 50 digits.

    With dv given, v1 = v0 - dv exactly (in 50 digits) instead of the rounded v1.
    """
    with mpmath.workdps(50):
        m0, v0, m1, v1 = map(mpmath.mpf, (m0, v0, m1, v1))
        v1 = v1 if dv is None else v0 - mpmath.mpf(dv)
        a, b = v0 - v1, 2 * (v1 * m0 - v0 * m1)
        c = v0 * m1**2 - v1 * m0**2 - v0 * v1 * mpmath.log(v0 / v1)
        root = mpmath.sqrt(b * b - 4 * a * c)
        x = ((-b - root) / (2 * a), (-b + root) / (2 * a))

        def mass(m, v):
            return mpmath.ncdf(x[1], m, mpmath.sqrt(v)) - mpmath.ncdf(x[0], m, mpmath.sqrt(v))

        return float(abs(mass(m0, v0) - mass(m1, v1)))


@pytest.mark.parametrize("eps", [1e-3, 1e-6, 1e-9, 1e-12, 1e-14])
@pytest.mark.parametrize(("dmean", "dvar"), [(1.0, 1.0), (0.0, 1.0), (-3.0, 1.0), (1.0, -2.0)])
def test_tv_1d_tiny_differences_match_mpmath(eps: float, dmean: float, dvar: float) -> None:
    m0, v0 = 0.3, 1.7
    m1, v1 = m0 + eps * dmean, v0 + eps * dvar
    assert _rel(tv_1d(m0, v0, m1, v1), _tv_1d_mpmath(m0, v0, m1, v1)) < 1e-12


def test_tv_1d_equal_variances_identical_laws_and_symmetry() -> None:
    for dm, v in [(0.5, 1.0), (3.0, 0.25), (-1.2, 2.0)]:
        ref = 2.0 * stats.norm.cdf(abs(dm) / (2.0 * math.sqrt(v))) - 1.0
        assert _rel(tv_1d(0.0, v, dm, v), ref) < 1e-12
    # tiny shift: TV = phi(0) |dm| / sd + O(dm^3), here sd = 2
    assert _rel(tv_1d(0.0, 4.0, 1e-12, 4.0), 1e-12 / (2.0 * math.sqrt(2.0 * math.pi))) < 1e-12
    assert float(tv_1d(0.7, 1.3, 0.7, 1.3)) == 0.0
    # variances one ulp apart join the equal-variance branch continuously
    assert _rel(tv_1d(0.0, 1.0, 0.5, 1.0 + 2.0**-52), tv_1d(0.0, 1.0, 0.5, 1.0)) < 1e-12
    rng = np.random.default_rng(5)
    for _ in range(20):
        m0, m1 = rng.normal(size=2)
        v0, v1 = rng.uniform(0.1, 5.0, size=2)
        assert _rel(tv_1d(m0, v0, m1, v1), tv_1d(m1, v1, m0, v0)) < 1e-13
    # v1 = 1 + 1e-13 is rounded (relative error ~1e-3 in v1 - v0); dv = v0 - v1 passed exactly
    exact = _tv_1d_mpmath(0.0, 1.0, 0.0, 1.0 + 1e-13, dv=-1e-13)
    dv = torch.tensor(-1e-13, dtype=F64)
    assert _rel(tv_1d(0.0, 1.0, 0.0, 1.0 + 1e-13, dv=dv), exact) < 1e-12
    assert _rel(tv_1d(0.0, 1.0, 0.0, 1.0 + 1e-13), exact) > 1e-5


def test_tv_equal_cov_reduces_to_1d_along_the_mean_difference() -> None:
    rng = np.random.default_rng(2)
    for scale in (1.0, 1e-6, 1e-12):
        S, m0 = _spd(rng, 2), rng.standard_normal(2)
        m1 = m0 + scale * rng.standard_normal(2)
        # a^T x with a = S^{-1} (m1 - m0) carries the log-likelihood ratio: N(a^T m_i, a^T S a)
        a = np.linalg.solve(S, m1 - m0)
        v = a @ S @ a
        got = tv_equal_cov(_t(m0), _t(m1), _t(S))
        shift = a @ (m1 - m0)  # = v, the squared Mahalanobis distance
        assert _rel(got, tv_1d(0.0, v, shift, v)) < 1e-12
        if scale == 1.0:
            sd = math.sqrt(v)
            gap = lambda x, sd=sd, shift=shift: abs(  # noqa: E731
                stats.norm.pdf(x, 0.0, sd) - stats.norm.pdf(x, shift, sd)
            )
            ref = _quad(gap, -40 * sd, shift + 40 * sd, [0.5 * shift])
            assert _rel(got, 0.5 * ref) < 1e-9
        result = tv(_t(m0), _t(S), _t(m1), _t(S))
        assert result.exact and float(result.value) == float(got)


def test_tv_bounds_contain_exact_1d_tv() -> None:
    rng = np.random.default_rng(4)
    for _ in range(200):
        m0, m1 = rng.normal(scale=2.0, size=2)
        v0, v1 = np.exp(rng.normal(scale=1.5, size=2))
        exact = float(tv_1d(m0, v0, m1, v1))
        lower, upper = tv_bounds(_t([m0]), _t([[v0]]), _t([m1]), _t([[v1]]))
        assert float(lower) <= exact * (1 + 1e-12) and exact <= float(upper) * (1 + 1e-12)


def test_tv_general_case_returns_upper_bound_proxy() -> None:
    m0, S0, m1, S1 = _pair(8, 3)
    args = tuple(map(_t, (m0, S0, m1, S1)))
    result = tv(*args)
    lower, upper = tv_bounds(*args)
    h2 = _naive_h2(m0, S0, m1, S1)
    assert isinstance(result, TVResult) and not result.exact
    assert float(result.value) == float(result.upper) == float(upper)
    assert float(result.lower) == float(lower) and _rel(lower, h2) < 1e-10
    assert _rel(upper, math.sqrt(h2 * (2 - h2))) < 1e-10


# ----------------------------------------------------------------------------- 2-D total variation
#
# tv_2d whitens by one covariance, rotates to the eigenvectors of the relative difference and
# integrates over one of the new coordinates. The references below use none of that: closed
# forms, tv_1d and tv_equal_cov, and a 30-digit computation in the original coordinates that
# conditions on the second coordinate.


def _tv_2d_mpmath(m0, S0, m1, S1, dS=None, dps: int = 30) -> float:
    """TV = 1/2 int |p0 - p1| with x2 outer (scipy quad, relative 1e-13) and x1 inner, exact at
    `dps` digits: given x2 the laws are a_i(x2) N(c_i, v_i) in x1, the log-ratio is
    A x1^2 + B x1 + C with textbook roots, and the inner integral is the sum of
    |a0 dF0 - a1 dF1| over the pieces between them. B^2 - 4AC is quadratic in x2; its roots
    (where two crossings merge and the integrand has a kink-like singularity) are break points.
    With dS given, S1 = S0 - dS exactly."""
    with mpmath.workdps(dps):
        mp = mpmath.mpf
        means = [[mp(float(v)) for v in m] for m in (m0, m1)]
        cov0 = [[mp(float(S0[i][j])) for j in (0, 1)] for i in (0, 1)]
        cov1 = [
            [
                mp(float(S1[i][j])) if dS is None else cov0[i][j] - mp(float(dS[i][j]))
                for j in (0, 1)
            ]
            for i in (0, 1)
        ]
        sds = [float(mpmath.sqrt(S[1][1])) for S in (cov0, cov1)]

        def laws(x2):
            """(log a_i, c_i, v_i) for both laws given x2."""
            out = []
            for m, S in zip(means, (cov0, cov1), strict=True):
                log_a = (
                    -((x2 - m[1]) ** 2) / (2 * S[1][1]) - mpmath.log(2 * mpmath.pi * S[1][1]) / 2
                )
                beta = S[0][1] / S[1][1]
                out.append((log_a, m[0] + beta * (x2 - m[1]), S[0][0] - beta * S[0][1]))
            return out

        def quadratic(x2):
            (la0, c0, v0), (la1, c1, v1) = laws(x2)
            a = 1 / (2 * v1) - 1 / (2 * v0)
            b = c0 / v0 - c1 / v1
            c = c1**2 / (2 * v1) - c0**2 / (2 * v0) + la0 - la1 + mpmath.log(v1 / v0) / 2
            return a, b, c, b * b - 4 * a * c

        def inner(x2: float) -> float:
            a, b, c, disc = quadratic(mp(x2))
            if a == 0:
                cuts = [-c / b] if b != 0 else []
            else:
                cuts = [(-b + k * mpmath.sqrt(disc)) / (2 * a) for k in (-1, 1)] if disc > 0 else []
            edges = [mpmath.ninf, *sorted(cuts), mpmath.inf]
            total = mp(0)
            for lo, hi in zip(edges[:-1], edges[1:], strict=True):
                mass = [
                    mpmath.exp(la) * (mpmath.ncdf(hi, c, v**0.5) - mpmath.ncdf(lo, c, v**0.5))
                    for la, c, v in laws(mp(x2))
                ]
                total += abs(mass[0] - mass[1])
            return float(total)

        d = [quadratic(mp(x))[3] for x in (-1, 0, 1)]
        fold_poly = [float((d[0] + d[2]) / 2 - d[1]), float((d[2] - d[0]) / 2), float(d[1])]
        folds = {float(r.real) for r in np.roots(fold_poly) if abs(r.imag) < 1e-9}
        ends = [float(m[1]) + k * sd for m, sd in zip(means, sds, strict=True) for k in (-20, 20)]
        lo, hi = min(ends), max(ends)
        points = {
            float(m[1]) + k * sd for m, sd in zip(means, sds, strict=True) for k in (-3, 0, 3)
        }
        points = sorted(p for p in points | folds if lo < p < hi)
        value = integrate.quad(inner, lo, hi, points=points, limit=2000, epsabs=0.0, epsrel=1e-13)
        return 0.5 * value[0]


def _rotation(angle: float) -> np.ndarray:
    return np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])


@pytest.mark.parametrize(
    ("scale", "kind"),
    [(0.3, "both"), (1e-2, "cov"), (1e-4, "both"), (1e-6, "mean"), (1e-7, "cov")],
)
def test_tv_2d_matches_mpmath_in_the_other_decomposition(scale: float, kind: str) -> None:
    # TV from 1e-1 down to 7e-9: nearly equal covariances (dS passed), equal means ("cov"),
    # equal covariances up to rounding in S1 = S0 - dS ("mean" has dS = 0: tv_equal_cov's regime
    # reached through tv_2d)
    rng = np.random.default_rng(int(-math.log10(scale)))
    S0, E = _spd(rng, 2), _sym(rng, 2)
    E *= np.linalg.eigvalsh(S0)[0] / (2.0 * np.abs(np.linalg.eigvalsh(E)).max())  # S1 stays SPD
    dS = scale * E if kind != "mean" else np.zeros((2, 2))
    m0 = rng.standard_normal(2)
    m1 = m0 + (scale * rng.standard_normal(2) if kind != "cov" else 0.0)
    S1 = S0 - dS
    got = tv_2d(_t(m0), _t(S0), _t(m1), _t(S1), dS=_t(dS))
    ref = _tv_2d_mpmath(m0, S0, m1, S1, dS=dS)
    assert 1e-2 * scale < ref < scale  # the pair has the intended size
    assert _rel(got, ref) < 1e-9, (float(got), ref)


@pytest.mark.parametrize("delta", [1e4, 2.0, 0.5, 1e-3, 1e-8, 1e-12, -1e-10, -1e-4, -0.3, -0.999])
def test_tv_2d_scaled_covariance_closed_form(delta: float) -> None:
    # N(m, (1 + delta) S) vs N(m, S): after whitening the densities cross on the circle
    # |z|^2 = rho with rho = 2 c log(c) / (c - 1), c = 1 + delta, and |z|^2 ~ c chi^2_2 resp.
    # chi^2_2, P(chi^2_2 <= t) = 1 - exp(-t / 2), so
    #   TV = |exp(-rho / (2c)) - exp(-rho / 2)| = c^(-1/(c-1)) |c - 1| / c
    #      = exp(-log1p(delta) / delta) |delta| / (1 + delta)   (no cancellation).
    S, m = np.array([[2.0, 0.7], [0.7, 0.5]]), np.array([0.3, -1.0])
    ref = math.exp(-math.log1p(delta) / delta) * abs(delta) / (1.0 + delta)
    dS = delta * S
    assert _rel(tv_2d(_t(m), _t(S + dS), _t(m), _t(S), dS=_t(dS)), ref) < 1e-12


@pytest.mark.parametrize("dm_scale", [1.0, 1e-3, 1e-8])
def test_tv_2d_equal_covariances_match_tv_equal_cov(dm_scale: float) -> None:
    rng = np.random.default_rng(3)
    for _ in range(3):
        S, m0 = _spd(rng, 2), rng.standard_normal(2)
        m1 = m0 + dm_scale * rng.standard_normal(2)
        ref = tv_equal_cov(_t(m0), _t(m1), _t(S))
        assert _rel(tv_2d(_t(m0), _t(S), _t(m1), _t(S)), ref) < 1e-12
        # continuity: TV is Lipschitz in (m, S), so a covariance difference 1e-13 times the mean
        # difference moves it by a relative O(1e-13)
        dS = 1e-13 * dm_scale * _sym(rng, 2)
        got = tv_2d(_t(m0), _t(S + dS), _t(m1), _t(S), dS=_t(dS))
        assert _rel(got, ref) < 1e-12


@pytest.mark.parametrize(
    ("mx0", "vx0", "mx1", "vx1"), [(0.0, 1.0, 0.5, 2.0), (1.0, 0.3, 1.0, 0.3 + 1e-9)]
)
@pytest.mark.parametrize("angle", [0.0, 0.9])
def test_tv_2d_with_one_shared_coordinate_is_tv_1d(mx0, vx0, mx1, vx1, angle: float) -> None:
    # independent coordinates, the second one N(0.7, 1.9) in both laws: TV is that of the first
    # coordinate; a common rotation does not change it
    Q, my, vy = _rotation(angle), 0.7, 1.9
    S0, S1 = Q @ np.diag([vx0, vy]) @ Q.T, Q @ np.diag([vx1, vy]) @ Q.T
    dS = Q @ np.diag([vx0 - vx1, 0.0]) @ Q.T
    m0, m1 = Q @ np.array([mx0, my]), Q @ np.array([mx1, my])
    ref = tv_1d(mx0, vx0, mx1, vx1, dv=vx0 - vx1)
    got = tv_2d(_t(m0), _t(0.5 * (S0 + S0.T)), _t(m1), _t(0.5 * (S1 + S1.T)), dS=_t(dS))
    assert _rel(got, ref) < 1e-12


def test_tv_2d_symmetric_and_invariant_under_rigid_motions() -> None:
    rng = np.random.default_rng(9)
    for scale in (1.0, 1e-5):
        m0, S0 = rng.standard_normal(2), _spd(rng, 2)
        dS = scale * _sym(rng, 2)
        m1, S1 = m0 + scale * rng.standard_normal(2), S0 - dS
        value = tv_2d(_t(m0), _t(S0), _t(m1), _t(S1), dS=_t(dS))
        swapped = tv_2d(_t(m1), _t(S1), _t(m0), _t(S0), dS=_t(-dS))
        assert _rel(swapped, value) < 1e-12
        Q, shift = _rotation(2.1), np.array([3.0, -1.5])
        moved = [_t(Q @ m + shift) for m in (m0, m1)]
        covs = [_t(Q @ S @ Q.T) for S in (S0, S1, dS)]
        got = tv_2d(moved[0], covs[0], moved[1], covs[1], dS=covs[2])
        # rounding the moved means changes m1 - m0 by ~eps |m|, a relative 1e-11 at scale 1e-5
        assert _rel(got, value) < 1e-12 + 1e-15 / scale
        result = tv(_t(m0), _t(S0), _t(m1), _t(S1), dS=_t(dS))
        assert result.exact and float(result.value) == float(value)
        assert float(result.lower) == float(result.upper) == float(value)


# ----------------------------------------------------------------------------- properties


@st.composite
def gaussian_pairs(draw, min_d: int = 1, max_d: int = 4):
    d = draw(st.integers(min_d, max_d))
    entries = st.floats(-2.0, 2.0, allow_nan=False, allow_infinity=False)

    def array(n: int) -> np.ndarray:
        return np.array(draw(st.lists(entries, min_size=n, max_size=n)))

    A0, A1 = array(d * d).reshape(d, d), array(d * d).reshape(d, d)
    S0, S1 = A0 @ A0.T + 0.1 * np.eye(d), A1 @ A1.T + 0.1 * np.eye(d)
    return array(d), S0, array(d), S1


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(gaussian_pairs())
def test_properties_of_random_pairs(pair) -> None:
    m0, S0, m1, S1 = map(_t, pair)
    assert float(kl(m0, S0, m1, S1)) >= 0.0
    assert abs(float(w2(m0, S0, m1, S1) - w2(m1, S1, m0, S0))) <= 1e-9 * float(w2(m0, S0, m1, S1))
    h = float(hellinger(m0, S0, m1, S1))
    assert 0.0 <= h <= 1.0
    result = tv(m0, S0, m1, S1)
    assert float(result.lower) <= float(result.value) <= float(result.upper) <= 1.0
    assert float(kl(m0, S0, m0, S0)) == 0.0
    assert float(w2(m0, S0, m0, S0)) == 0.0 and float(hellinger(m0, S0, m0, S0)) == 0.0

    f32 = [x.to(torch.float32) for x in (m0, S0, m1, S1)]
    outputs = [kl(*f32), w2(*f32), hellinger(*f32), *tv_bounds(*f32), tv(*f32).value]
    assert all(out.dtype == torch.float32 and out.ndim == 0 for out in outputs)
    assert abs(float(outputs[2]) - h) < 1e-3


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(gaussian_pairs(2, 2))
def test_tv_2d_within_hellinger_sandwich(pair) -> None:
    # H^2 <= TV <= H sqrt(2 - H^2) (THEORY.md 3.4), both sides computed independently of tv_2d
    m0, S0, m1, S1 = map(_t, pair)
    value = float(tv_2d(m0, S0, m1, S1))
    lower, upper = map(float, tv_bounds(m0, S0, m1, S1))
    assert lower * (1 - 1e-12) <= value <= upper * (1 + 1e-12) and value <= 1.0
    assert abs(value - float(tv_2d(m1, S1, m0, S0))) <= 1e-12 * value


def test_python_and_numpy_inputs_default_to_float64() -> None:
    m0, S0, m1, S1 = _pair(1, 2)
    assert kl(m0.tolist(), S0.tolist(), m1, S1).dtype == F64
    assert tv_1d(0.0, 1.0, 1.0, 2.0).dtype == F64
    assert tv_1d(*(torch.tensor(x, dtype=torch.float32) for x in (0.0, 1.0, 1.0, 2.0))).dtype == (
        torch.float32
    )


# ----------------------------------------------------------------------------- validation

_I2 = [[1.0, 0.0], [0.0, 1.0]]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: kl([0.0, 0.0], [[1.0, 0.0, 0.0]] * 2, [0.0, 0.0], _I2), "S0 must be a square"),
        (lambda: kl([0.0, 0.0], _I2, [0.0, 0.0], [[[1.0]]]), "S1 must be a square"),
        (lambda: w2([0.0, 0.0], _I2, [0.0, 0.0], [[1.0]]), "S0 and S1 must have the same shape"),
        (lambda: hellinger([0.0], _I2, [0.0, 0.0], _I2), r"m0 must have shape \(d,\) = \(2,\)"),
        (lambda: kl([0.0, 0.0], [[1.0, 0.5], [0.0, 1.0]], [0.0, 0.0], _I2), "S0 must be symmetric"),
        (lambda: kl([0.0, 0.0], _I2, [0.0, 0.0], [[1.0, 2.0], [2.0, 1.0]]), "S1 must be positive"),
        (lambda: w2([math.nan, 0.0], _I2, [0.0, 0.0], _I2), "m0 must be finite"),
        (lambda: tv([0.0, 0.0], _I2, [0.0, 0.0], [[math.inf, 0], [0, 1]]), "S1 must be finite"),
        (lambda: kl([0.0, 0.0], _I2, [0.0, 0.0], _I2, dS=[[1.0]]), r"dS must have shape \(2, 2\)"),
        (lambda: kl([0.0, 0.0], _I2, [0.0, 0.0], _I2, dS=[[0.1, 0], [0, 0]]), "dS must equal"),
        (lambda: kl([1j, 0.0], _I2, [0.0, 0.0], _I2), "m0 must be real"),
        (lambda: tv_1d(0.0, -1.0, 0.0, 1.0), "v0 must be a positive variance"),
        (lambda: tv_1d(0.0, 1.0, 0.0, 0.0), "v1 must be a positive variance"),
        (lambda: tv_1d([0.0, 1.0], 1.0, 0.0, 1.0), "m0 must be a scalar"),
        (lambda: tv_1d(0.0, 1.0, 0.0, 1.5, dv=0.1), "dv must equal v0 - v1"),
        (lambda: tv_equal_cov([0.0, 0.0], [0.0], _I2), r"m1 must have shape \(d,\)"),
        (lambda: tv_bounds([0.0], [[0.0]], [0.0], [[1.0]]), "S0 must be positive definite"),
        (lambda: tv_2d([0.0], [[1.0]], [0.0], [[2.0]]), "tv_2d needs d = 2"),
        (lambda: tv_2d([0.0] * 3, np.eye(3), [0.0] * 3, 2 * np.eye(3)), "tv_2d needs d = 2"),
        (lambda: tv_2d([0.0], _I2, [0.0, 0.0], _I2), r"m0 must have shape \(d,\) = \(2,\)"),
        (lambda: tv_2d([0.0, 0.0], _I2, [0.0, 0.0], [[1.0, 2.0], [2.0, 1.0]]), "S1 must be posit"),
        (lambda: tv_2d([0.0, 0.0], _I2, [0.0, 0.0], _I2, dS=[[0.1, 0], [0, 0]]), "dS must equal"),
    ],
)
def test_invalid_inputs_raise_clear_errors(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
