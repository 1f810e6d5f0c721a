"""Convergence-rate fitting: local slopes, asymptotic window, slope fit with CI, verdict.

Errors e(T) are measured at step counts T_0 < T_1 < ... (typically a doubling grid). The slope is
d log e / d log T, so a converging sampler has a NEGATIVE slope (e.g. -1 for the W2 error of a
first-order scheme, -2 for its KL); papers usually quote the positive exponent beta = -slope,
and the verdict names below are phrased for slopes.

Procedure:

1. local slopes p_k = log(e_{k+1} / e_k) / log(T_{k+1} / T_k)           (``local_slopes``)
2. the asymptotic window: the contiguous run of valid points, reaching the largest T, in which
   successive p_k agree within ``tol`` and e stays >= ``floor_factor`` x the evaluator's noise
   floor                                                                  (``select_window``)
3. least squares  log e = a + slope log T  on the window, with a confidence interval (``fit_rate``)
4. a verdict comparing the interval with the expected slope                  (``fit_rate``)

Arrays at this boundary are numpy float64; torch tensors on the CPU are accepted and converted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

Window = tuple[int, int, bool]

# The width rule: a CI whose 95% half-width exceeds max(WIDTH_LIMIT, WIDTH_FRACTION * |E|) says
# nothing about the slope E it is compared with, whatever it overlaps.
WIDTH_LIMIT = 0.25
WIDTH_FRACTION = 0.1


class FitStatus(str, Enum):
    """The one vocabulary for a measured slope against a reference slope E (an expected order or
    a claimed bound), shared by ``convergence rate``, the sweep tables and the claims report.

    * consistent: the CI meets [E - tau, E + tau];
    * faster: the CI lies below E - tau (the error decays faster than E says);
    * slower: the CI lies above E + tau;
    * inconclusive: no settled window, fewer than 3 points, or a CI wider than the width rule
      allows (``width_limit``);
    * unresolved: too few valid points to fit at all;
    * not measured: the run that would measure it is missing or failed.

    A str enum: ``FitStatus.CONSISTENT == "consistent"`` and its value is what tables print.
    """

    CONSISTENT = "consistent"
    FASTER = "faster"
    SLOWER = "slower"
    INCONCLUSIVE = "inconclusive"
    UNRESOLVED = "unresolved"
    NOT_MEASURED = "not measured"
    NO_REFERENCE = "n/a"

    def __str__(self) -> str:
        return self.value


def width_limit(reference: float | None) -> float:
    """The largest CI half-width that can decide a slope against ``reference``:
    max(WIDTH_LIMIT, WIDTH_FRACTION |reference|) (0.25 for |E| <= 2.5, 0.4 for E = -4)."""
    ref = 0.0 if reference is None or not math.isfinite(reference) else abs(reference)
    return max(WIDTH_LIMIT, WIDTH_FRACTION * ref)


def slope_status(
    ci: tuple[float, float], settled: bool, n_points: int, reference: float | None, tau: float
) -> FitStatus:
    """The rule of ``FitStatus`` for a CI [lo, hi] against ``reference`` with tolerance tau, in
    this order: n/a (no reference), inconclusive (not settled, n < 3, NaN CI, or half-width >
    ``width_limit(reference)``), faster, slower, consistent."""
    if reference is None:
        return FitStatus.NO_REFERENCE
    lo, hi = ci
    if not settled or n_points < 3 or not (math.isfinite(lo) and math.isfinite(hi)):
        return FitStatus.INCONCLUSIVE
    if (hi - lo) / 2.0 > width_limit(reference):
        return FitStatus.INCONCLUSIVE
    if hi < reference - tau:
        return FitStatus.FASTER
    if lo > reference + tau:
        return FitStatus.SLOWER
    return FitStatus.CONSISTENT


class UnresolvedRateError(ValueError):
    """Too few points above the noise floor to fit a slope: the measurement cannot resolve it."""


# A CI narrower than the float64 resolution of the log-errors is meaningless: the half-width is
# never below _ROUNDING * max|log e| / sqrt(S_xx) (S_xx = sum (log T - mean log T)^2).
_ROUNDING = 16.0 * float(np.finfo(np.float64).eps)


# --------------------------------------------------------------------------- validation


def _as_steps(steps: ArrayLike) -> np.ndarray:
    """Steps as an int64 array; they must be strictly increasing positive integers, >= 2 of them."""
    raw = np.asarray(steps)
    if raw.ndim != 1 or raw.size < 2:
        raise ValueError(
            f"steps must be a 1-D sequence of at least 2 integers, got shape {raw.shape}"
        )
    if raw.dtype == bool or not np.issubdtype(raw.dtype, np.number):
        raise ValueError(f"steps must be positive integers, got dtype {raw.dtype}")
    as_float = raw.astype(np.float64)
    if not np.all(np.isfinite(as_float)) or np.any(as_float != np.round(as_float)):
        raise ValueError(f"steps must be positive integers, got {raw.tolist()}")
    out = as_float.astype(np.int64)
    if np.any(out < 1):
        raise ValueError(f"steps must be positive integers (>= 1), got {out.tolist()}")
    if np.any(np.diff(out) <= 0):
        raise ValueError(f"steps must be strictly increasing, got {out.tolist()}")
    return out


def _as_errors(errors: ArrayLike, n: int) -> np.ndarray:
    """Errors as a float64 array of length n; NaN, inf and values <= 0 are allowed (invalid)."""
    raw = np.asarray(errors)
    if raw.dtype == bool or not np.issubdtype(raw.dtype, np.number):
        raise ValueError(f"errors must be real numbers, got dtype {raw.dtype}")
    if np.iscomplexobj(raw):
        raise ValueError("errors must be real numbers, got complex values")
    out = raw.astype(np.float64)
    if out.shape != (n,):
        raise ValueError(f"errors must have the same length as steps ({n}), got shape {out.shape}")
    return out


def _as_nonnegative(values: ArrayLike | float | None, n: int, name: str) -> np.ndarray | None:
    """Uncertainties / floors: None, a scalar or a length-n array of finite values >= 0."""
    if values is None:
        return None
    raw = np.asarray(values)
    if raw.dtype == bool or not np.issubdtype(raw.dtype, np.number) or np.iscomplexobj(raw):
        raise ValueError(f"{name} must be real numbers >= 0, got dtype {raw.dtype}")
    out = raw.astype(np.float64)
    if out.ndim == 0:
        out = np.full(n, float(out))
    if out.shape != (n,):
        raise ValueError(
            f"{name} must be a scalar or have the same length as steps ({n}), got shape {out.shape}"
        )
    if not np.all(np.isfinite(out)) or np.any(out < 0):
        raise ValueError(f"{name} must be finite and >= 0, got {out.tolist()}")
    return out


def _check_number(value: float, name: str, *, low: float, low_open: bool = False) -> float:
    value = float(value)
    if not math.isfinite(value) or value < low or (low_open and value == low):
        rule = f"> {low}" if low_open else f">= {low}"
        raise ValueError(f"{name} must be a finite number {rule}, got {value!r}")
    return value


# --------------------------------------------------------------------------- local slopes


def local_slopes(steps: ArrayLike, errors: ArrayLike) -> np.ndarray:
    """Experimental orders of convergence between consecutive points.

        p_k = log(e_{k+1} / e_k) / log(T_{k+1} / T_k),    k = 0 .. n-2,

    i.e. the slope d log e / d log T of the chord between points k and k+1 (negative for a
    converging sampler). A slope touching an invalid error (NaN, inf, <= 0) is NaN.

    Args:
        steps: strictly increasing positive integers T_0 < ... < T_{n-1}, n >= 2.
        errors: e(T_k), same length.

    Returns:
        float64 array of length n - 1.
    """
    t = _as_steps(steps)
    e = _as_errors(errors, t.size)
    return _slopes(t, e)


def _slopes(t: np.ndarray, e: np.ndarray) -> np.ndarray:
    ok = np.isfinite(e) & (e > 0)
    log_e = np.log(np.where(ok, e, 1.0))
    p = np.diff(log_e) / np.diff(np.log(t.astype(np.float64)))
    p[~(ok[:-1] & ok[1:])] = np.nan
    return p


# --------------------------------------------------------------------------- window


def _valid_mask(e: np.ndarray, floors: np.ndarray | None, floor_factor: float) -> np.ndarray:
    """Valid point: e finite, e > 0 and e >= floor_factor * floor (floor None or 0: no floor)."""
    ok = np.isfinite(e) & (e > 0)
    if floors is not None:
        ok &= e >= floor_factor * floors
    return ok


def _settled(p: np.ndarray, tol: float) -> bool:
    """Slopes p (all finite) agree: |p_{k+1} - p_k| <= tol and max p - min p <= 2 tol."""
    if p.size == 0:
        return True
    return bool(np.all(np.abs(np.diff(p)) <= tol) and np.ptp(p) <= 2.0 * tol)


def select_window(
    steps: ArrayLike,
    errors: ArrayLike,
    floors: ArrayLike | float | None = None,
    *,
    tol: float = 0.05,
    floor_factor: float = 10.0,
    min_points: int = 3,
) -> Window:
    """Choose the asymptotic window (inclusive indices) for a rate fit.

    A point k is valid when e_k is finite, e_k > 0 and e_k >= floor_factor * floor_k (floors are
    the per-point noise floor / resolution of the evaluator; None or 0 means no floor).
    A candidate window is a contiguous run of valid points i0..i1 with at least ``min_points``
    points whose local slopes p_{i0} .. p_{i1-1} satisfy

        |p_{k+1} - p_k| <= tol   for consecutive slopes,   and   max p - min p <= 2 tol.

    Among candidates the one with the largest T_max is chosen, then the longest. If none exists,
    the fallback is the last ``min_points`` valid points (all valid points if fewer) with
    settled = False; the fallback may then straddle invalid points, which the fit skips. With fewer
    than 2 valid points no fit is possible: the window is (j, j) for a single valid point j, or
    (n-1, n-1) if there is none, and settled is False.

    Args:
        steps: strictly increasing positive integers, n >= 2.
        errors: e(T_k); NaN / inf / non-positive values are allowed and mark invalid points.
        floors: None, a scalar or per-point noise floors (finite, >= 0).
        tol: agreement tolerance for consecutive local slopes (>= 0).
        floor_factor: a point must lie at least this factor above its floor (>= 0).
        min_points: minimum number of points of a settled window (>= 3: two slopes to compare).

    Returns:
        (i0, i1, settled).
    """
    t = _as_steps(steps)
    e = _as_errors(errors, t.size)
    f = _as_nonnegative(floors, t.size, "floors")
    tol = _check_number(tol, "tol", low=0.0)
    floor_factor = _check_number(floor_factor, "floor_factor", low=0.0)
    is_int = isinstance(min_points, int | np.integer) and not isinstance(min_points, bool)
    if not is_int or min_points < 3:
        raise ValueError(f"min_points must be an integer >= 3, got {min_points!r}")
    return _select(t, e, _valid_mask(e, f, floor_factor), tol, int(min_points))


def _select(t: np.ndarray, e: np.ndarray, valid: np.ndarray, tol: float, min_points: int) -> Window:
    p = _slopes(t, e)
    # Settledness is inherited by sub-windows, so for each right end i1 (largest T first) the
    # longest settled run ending there is found by growing i0 leftwards until it breaks.
    for i1 in range(t.size - 1, -1, -1):
        if not valid[i1]:
            continue
        i0 = i1
        while i0 > 0 and valid[i0 - 1] and _settled(p[i0 - 1 : i1], tol):
            i0 -= 1
        if i1 - i0 + 1 >= min_points:
            return i0, i1, True
    idx = np.flatnonzero(valid)
    if idx.size == 0:
        return t.size - 1, t.size - 1, False
    last = idx[-min_points:]
    return int(last[0]), int(last[-1]), False


# --------------------------------------------------------------------------- fit


@dataclass(frozen=True)
class RateFit:
    """Result of ``fit_rate``: fitted slope of log e against log T, its CI, window and verdict.

    ``local_slopes`` holds every p_k of the input (NaN where a point is invalid); ``window`` is
    (T_min, T_max) and ``window_indices`` the inclusive indices of the window; ``n_points`` counts
    the valid points used by the fit.
    """

    slope: float
    intercept: float
    ci_low: float
    ci_high: float
    window: tuple[int, int]
    window_indices: tuple[int, int]
    settled: bool
    local_slopes: tuple[float, ...]
    n_points: int
    expected_slope: float | None
    verdict: FitStatus

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (non-finite numbers become None)."""
        return {
            "slope": _json_float(self.slope),
            "ci_low": _json_float(self.ci_low),
            "ci_high": _json_float(self.ci_high),
            "window": [int(self.window[0]), int(self.window[1])],
            "settled": bool(self.settled),
            "local_slopes": [_json_float(p) for p in self.local_slopes],
            "n_points": int(self.n_points),
            "verdict": self.verdict.value,
            "expected_slope": _json_float(self.expected_slope),
        }


def _json_float(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def fit_rate(
    steps: ArrayLike,
    errors: ArrayLike,
    uncertainties: ArrayLike | float | None = None,
    floors: ArrayLike | float | None = None,
    *,
    expected_slope: float | None = None,
    tol: float = 0.05,
    confidence: float = 0.95,
    verdict_tol: float = 0.1,
    floor_factor: float = 10.0,
    min_points: int = 3,
) -> RateFit:
    """Fit log e = a + slope * log T over the asymptotic window, with a CI and a verdict.

    Window: ``select_window(steps, errors, floors, tol=tol, floor_factor=floor_factor,
    min_points=min_points)``; only valid points inside it are used (n of them, x = log T,
    y = log e, S_xx = sum w (x - x_w)^2 with x_w the weighted mean).

    Confidence interval at level ``confidence`` (q = (1 + confidence) / 2):

    * uncertainties given and > 0 at every window point: weighted least squares with
      w_k = 1 / s_k^2, s_k = u_k / e_k (the standard error of log e_k). Two standard errors,
      SE_w = 1 / sqrt(S_xx) (the stated uncertainties) and
      SE_r = sqrt(sum w r^2 / (n - 2) / S_xx) (the scatter of the residuals r, n >= 3);
      half-width = max(z_q SE_w, t_{q, n-2} SE_r), i.e. the larger of the two errors, each with its
      own reference distribution (normal / Student t).
    * otherwise: ordinary least squares, half-width = t_{q, n-2} SE_r with unit weights.
    * n = 2: the two-point slope, half-width z_q sqrt(s_0^2 + s_1^2) / (x_1 - x_0) when both
      uncertainties are given, else 0 (a degenerate CI); settled is False.

    For n >= 3 the half-width is never below the float64 resolution of the logs,
    16 eps max|y| / sqrt(sum (x - mean x)^2). Exact (deterministic) errors therefore give tiny CIs:
    the slope is known to that precision on the window; whether the window is asymptotic is what
    ``settled`` and the local slopes say.

    Verdict (a ``FitStatus``; ``slope_status``), against E = ``expected_slope`` and
    tau = ``verdict_tol``, in this order:

    * "n/a"           if E is None;
    * "inconclusive"  if the window is not settled, n < 3, or the CI half-width exceeds
                      ``width_limit(E)`` = max(0.25, 0.1 |E|) (a wide CI decides nothing);
    * "faster"        if ci_high < E - tau (decays more steeply than expected);
    * "slower"        if ci_low > E + tau (decays more slowly than expected);
    * "consistent"    otherwise ([ci_low, ci_high] meets [E - tau, E + tau]).

    For a proved bound E = -beta_claim, "slower" means the bound is violated and "faster" that
    it is loose; "consistent" widens "tight" (the CI covers the claim) by tau.

    Args:
        steps: strictly increasing positive integers, n >= 2.
        errors: e(T_k); NaN / inf / non-positive values are allowed and excluded.
        uncertainties: None, a scalar or per-point standard errors of e (finite, >= 0).
        floors: None, a scalar or per-point noise floors of the evaluator (finite, >= 0).
        expected_slope: the slope to judge against (negative for convergence), or None.
        tol: local-slope agreement tolerance of the window (>= 0).
        confidence: CI level in (0, 1).
        verdict_tol: tolerance tau of the verdict (>= 0).
        floor_factor: points below floor_factor * floor are excluded (>= 0).
        min_points: minimum size of a settled window (>= 3).

    Raises:
        ValueError: on malformed input, or when fewer than 2 points are valid.
    """
    t = _as_steps(steps)
    e = _as_errors(errors, t.size)
    u = _as_nonnegative(uncertainties, t.size, "uncertainties")
    f = _as_nonnegative(floors, t.size, "floors")
    confidence = _check_number(confidence, "confidence", low=0.0, low_open=True)
    if confidence >= 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    verdict_tol = _check_number(verdict_tol, "verdict_tol", low=0.0)
    if expected_slope is not None:
        expected_slope = _check_number(expected_slope, "expected_slope", low=-math.inf)
    i0, i1, settled = select_window(
        t, e, f, tol=tol, floor_factor=floor_factor, min_points=min_points
    )
    valid = _valid_mask(e, f, floor_factor)
    idx = np.arange(i0, i1 + 1)[valid[i0 : i1 + 1]]
    if idx.size < 2:
        raise UnresolvedRateError(
            f"cannot fit a rate: {int(valid.sum())} valid point(s) of {t.size}; need at least 2 "
            f"with finite e > 0 and e >= floor_factor * floor"
        )
    x = np.log(t[idx].astype(np.float64))
    y = np.log(e[idx])
    s = None if u is None else u[idx] / e[idx]
    slope, intercept, half = _least_squares(x, y, s, confidence)
    settled = settled and idx.size >= 3
    fit_ci = (slope - half, slope + half)
    return RateFit(
        slope=slope,
        intercept=intercept,
        ci_low=fit_ci[0],
        ci_high=fit_ci[1],
        window=(int(t[i0]), int(t[i1])),
        window_indices=(int(i0), int(i1)),
        settled=bool(settled),
        local_slopes=tuple(float(p) for p in _slopes(t, e)),
        n_points=int(idx.size),
        expected_slope=expected_slope,
        verdict=slope_status(fit_ci, settled, int(idx.size), expected_slope, verdict_tol),
    )


def _least_squares(
    x: np.ndarray, y: np.ndarray, s: np.ndarray | None, confidence: float
) -> tuple[float, float, float]:
    """(slope, intercept, CI half-width) of y = a + slope x; see ``fit_rate`` for the formulas."""
    n = x.size
    weighted = s is not None and bool(np.all(s > 0))
    w = 1.0 / s**2 if weighted else np.ones(n)
    x_w = np.sum(w * x) / np.sum(w)
    y_w = np.sum(w * y) / np.sum(w)
    s_xx = float(np.sum(w * (x - x_w) ** 2))
    slope = float(np.sum(w * (x - x_w) * (y - y_w)) / s_xx)
    intercept = float(y_w - slope * x_w)
    q = 0.5 * (1.0 + confidence)
    z = float(stats.norm.ppf(q))
    if n == 2:
        half = z * float(np.sqrt(np.sum(s**2))) / abs(x[1] - x[0]) if s is not None else 0.0
        return slope, intercept, half
    resid = y - intercept - slope * x
    se_r = math.sqrt(float(np.sum(w * resid**2)) / (n - 2) / s_xx)
    half = float(stats.t.ppf(q, n - 2)) * se_r
    if weighted:
        half = max(half, z / math.sqrt(s_xx))
    rounding = _ROUNDING * float(np.max(np.abs(y))) / math.sqrt(float(np.sum((x - x.mean()) ** 2)))
    return slope, intercept, max(half, rounding)
