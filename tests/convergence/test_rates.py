"""Tests of convergence.rates: local slopes, window selection, slope fits, CIs and verdicts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from convergence.rates import RateFit, fit_rate, local_slopes, select_window

DOUBLING = 2 ** np.arange(3, 11)  # T = 8 .. 1024, the grid of THEORY.md 2.4


# --------------------------------------------------------------------------- exact power laws


@settings(max_examples=40, derandomize=True, deadline=None)
@given(
    p=st.floats(min_value=0.25, max_value=4.0),
    c=st.floats(min_value=1e-3, max_value=1e3),
)
def test_exact_power_law_recovers_slope(p: float, c: float) -> None:
    errors = c * DOUBLING.astype(float) ** -p
    fit = fit_rate(DOUBLING, errors, expected_slope=-p)
    assert abs(fit.slope + p) < 1e-12
    assert fit.ci_low <= -p <= fit.ci_high
    assert fit.ci_high - fit.ci_low < 1e-12
    assert abs(fit.intercept - math.log(c)) < 1e-10
    assert fit.window == (8, 1024) and fit.window_indices == (0, 7)
    assert fit.settled and fit.n_points == 8
    assert fit.verdict == "consistent"
    np.testing.assert_allclose(fit.local_slopes, -p, atol=1e-12)


def test_local_slopes_formula_on_uneven_grid() -> None:
    steps = [10, 30, 40, 100]
    errors = [1.0, 0.2, 0.15, 0.01]
    expected = [
        math.log(0.2 / 1.0) / math.log(3.0),
        math.log(0.15 / 0.2) / math.log(4.0 / 3.0),
        math.log(0.01 / 0.15) / math.log(2.5),
    ]
    np.testing.assert_allclose(local_slopes(steps, errors), expected, rtol=1e-14)


# --------------------------------------------------------------------------- window selection


@pytest.mark.parametrize(
    ("errors", "true_slope"),
    [
        (DOUBLING**-2.0 * (1.0 + 5.0 / DOUBLING), -2.0),  # slopes -2.31, -2.18, -2.10, ... -> -2
        (DOUBLING**-1.0 + 3.0 * DOUBLING**-2.0, -1.0),  # slopes -1.21, -1.12, -1.06, ... -> -1
    ],
)
def test_transient_is_excluded_from_window(errors: np.ndarray, true_slope: float) -> None:
    fit = fit_rate(DOUBLING, errors, expected_slope=true_slope)
    # the first two local slopes differ from the next by more than tol = 0.05
    assert fit.window == (32, 1024)
    assert fit.settled
    assert abs(fit.slope - true_slope) < 0.05
    assert fit.verdict == "consistent"


def test_floor_excludes_floored_points() -> None:
    steps = 2 ** np.arange(3, 21)
    floor = 1e-8
    errors = steps.astype(float) ** -2.0 + floor
    fit = fit_rate(steps, errors, floors=floor, expected_slope=-2.0)
    # valid iff T^-2 + 1e-8 >= 10 * 1e-8, i.e. T <= 3333: the last valid point is T = 2048
    assert fit.window == (8, 2048)
    assert abs(fit.slope + 2.0) < 0.01
    assert fit.verdict == "consistent"
    # negative control: without the floor the settled plateau at large T is (wrongly) chosen
    blind = fit_rate(steps, errors, expected_slope=-2.0)
    assert blind.window[1] == 2**20
    assert abs(blind.slope) < 0.05
    assert blind.verdict == "slower"


def test_window_prefers_largest_t_then_longest() -> None:
    # slopes: -1, -1, -1 (run A, points 0..3), a jump, then -2, -2 (run B, points 4..6)
    slopes = np.array([-1.0, -1.0, -1.0, -2.0, -2.0, -2.0])
    errors = np.exp(np.concatenate([[0.0], np.cumsum(slopes * math.log(2.0))]))
    assert select_window(DOUBLING[:7], errors) == (3, 6, True)
    # with min_points = 5 no run qualifies: fall back to the last 5 points, unsettled
    assert select_window(DOUBLING[:7], errors, min_points=5) == (2, 6, False)


def test_window_fallback_and_span_rule() -> None:
    # consecutive slopes differ by 0.04 <= tol but drift by 0.16 > 2 tol over the run
    slopes = np.array([-1.0, -1.04, -1.08, -1.12, -1.16])
    errors = np.exp(np.concatenate([[0.0], np.cumsum(slopes * math.log(2.0))]))
    i0, i1, settled = select_window(DOUBLING[:6], errors)
    assert (i0, i1, settled) == (2, 5, True)  # slopes -1.08 .. -1.16 span 0.08 <= 0.1
    assert np.ptp(slopes[i0:i1]) <= 0.1 + 1e-12


def test_invalid_points_are_skipped_not_fatal() -> None:
    errors = DOUBLING**-1.5
    errors = errors.astype(float)
    errors[2] = np.nan
    errors[5] = -1.0
    slopes = local_slopes(DOUBLING, errors)
    assert np.isnan(slopes[[1, 2, 4, 5]]).all()
    np.testing.assert_allclose(slopes[[0, 3, 6]], -1.5, atol=1e-12)
    # no contiguous valid run of 3 points: fallback to the last 3 valid points (indices 4, 6, 7)
    fit = fit_rate(DOUBLING, errors, expected_slope=-1.5)
    assert fit.window_indices == (4, 7)
    assert fit.n_points == 3
    assert not fit.settled
    assert abs(fit.slope + 1.5) < 1e-12
    assert fit.verdict == "inconclusive"


# --------------------------------------------------------------------------- confidence intervals


def test_ols_ci_matches_scipy_linregress() -> None:
    rng = np.random.default_rng(7)
    errors = 2.0 * DOUBLING**-1.0 * np.exp(0.1 * rng.standard_normal(DOUBLING.size))
    fit = fit_rate(DOUBLING, errors, tol=10.0)  # large tol: the whole grid is the window
    assert fit.window_indices == (0, 7)
    ref = stats.linregress(np.log(DOUBLING), np.log(errors))
    half = stats.t.ppf(0.975, DOUBLING.size - 2) * ref.stderr
    assert fit.slope == pytest.approx(ref.slope, rel=1e-12)
    assert fit.ci_low == pytest.approx(ref.slope - half, rel=1e-12)
    assert fit.ci_high == pytest.approx(ref.slope + half, rel=1e-12)


def test_weighted_ci_uses_stated_uncertainty_when_residuals_are_small() -> None:
    errors = DOUBLING**-2.0
    sigma_log = 0.01
    fit = fit_rate(DOUBLING, errors, uncertainties=sigma_log * errors)
    x = np.log(DOUBLING)
    expected_half = stats.norm.ppf(0.975) * sigma_log / math.sqrt(np.sum((x - x.mean()) ** 2))
    assert fit.ci_high - fit.slope == pytest.approx(expected_half, rel=1e-10)
    assert fit.slope - fit.ci_low == pytest.approx(expected_half, rel=1e-10)


def test_noisy_ci_coverage_is_nominal() -> None:
    rng = np.random.default_rng(20240611)
    sigma, true_slope, repetitions = 0.01, -1.5, 200
    covered = 0
    for _ in range(repetitions):
        errors = 3.0 * DOUBLING**true_slope * np.exp(sigma * rng.standard_normal(DOUBLING.size))
        fit = fit_rate(DOUBLING, errors, uncertainties=sigma * errors)
        covered += fit.ci_low <= true_slope <= fit.ci_high
    assert 0.85 <= covered / repetitions <= 0.99


def test_two_point_fit() -> None:
    steps, errors = [16, 64], [1e-2, 1e-3]
    slope = math.log(0.1) / math.log(4.0)
    bare = fit_rate(steps, errors, expected_slope=-2.0)
    assert bare.slope == pytest.approx(slope, rel=1e-14)
    assert (bare.ci_low, bare.ci_high) == (bare.slope, bare.slope)
    assert not bare.settled and bare.n_points == 2 and bare.verdict == "inconclusive"
    with_u = fit_rate(steps, errors, uncertainties=[1e-4, 2e-5], confidence=0.9)
    half = stats.norm.ppf(0.95) * math.hypot(0.01, 0.02) / math.log(4.0)
    assert with_u.ci_high - with_u.slope == pytest.approx(half, rel=1e-12)
    assert with_u.verdict == "n/a"


# --------------------------------------------------------------------------- verdicts


def test_verdict_consistent_faster_slower_inconclusive_na() -> None:
    t = DOUBLING.astype(float)
    assert fit_rate(t.astype(int), t**-2.0, expected_slope=-2.0).verdict == "consistent"
    assert fit_rate(DOUBLING, t**-2.08, expected_slope=-2.0).verdict == "consistent"  # in tau
    assert fit_rate(DOUBLING, t**-3.0, expected_slope=-2.0).verdict == "faster"
    assert fit_rate(DOUBLING, t**-1.5, expected_slope=-2.0).verdict == "slower"
    # local slopes alternate between -1 and -3: never settled
    zigzag = np.exp(np.concatenate([[0.0], np.cumsum(np.tile([-1.0, -3.0], 4)[:7] * math.log(2))]))
    unsettled = fit_rate(DOUBLING, zigzag, expected_slope=-2.0)
    assert not unsettled.settled and unsettled.verdict == "inconclusive"
    assert fit_rate(DOUBLING, t**-2.0).verdict == "n/a"


def test_verdict_uses_ci_not_point_estimate() -> None:
    # slope -2.2 measured with a CI wide enough to reach -2.1: consistent, not faster
    errors = DOUBLING**-2.2
    x = np.log(DOUBLING)
    sigma_log = 0.2 * math.sqrt(np.sum((x - x.mean()) ** 2)) / stats.norm.ppf(0.975)
    wide = fit_rate(DOUBLING, errors, uncertainties=sigma_log * errors, expected_slope=-2.0)
    assert wide.ci_high == pytest.approx(-2.0, abs=1e-9)
    assert wide.verdict == "consistent"
    narrow = fit_rate(DOUBLING, errors, expected_slope=-2.0)
    assert narrow.verdict == "faster"


def test_negative_control_first_order_rejected_as_second_order() -> None:
    """A T^-1 error checked against expected slope -2 must fail the check."""
    fit = fit_rate(DOUBLING, 0.7 / DOUBLING, expected_slope=-2.0)
    assert fit.settled
    assert fit.verdict == "slower"
    assert fit.ci_low > -2.0 + 0.1


# --------------------------------------------------------------------------- output


def test_as_dict_is_json_ready() -> None:
    errors = (DOUBLING**-2.0).astype(float)
    errors[0] = np.inf
    fit = fit_rate(DOUBLING, errors, expected_slope=-2.0)
    assert isinstance(fit, RateFit)
    summary = fit.as_dict()
    assert set(summary) == {
        "slope",
        "ci_low",
        "ci_high",
        "window",
        "settled",
        "local_slopes",
        "n_points",
        "verdict",
        "expected_slope",
    }
    assert summary["window"] == [16, 1024]
    assert summary["local_slopes"][0] is None
    assert summary["slope"] == pytest.approx(-2.0, abs=1e-12)
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary
    with pytest.raises(AttributeError):
        fit.slope = 0.0  # type: ignore[misc]


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": [8, 16, 16], "errors": [1, 2, 3]}, "strictly increasing"),
        ({"steps": [16, 8, 4], "errors": [1, 2, 3]}, "strictly increasing"),
        ({"steps": [0, 8, 16], "errors": [1, 2, 3]}, "positive integers"),
        ({"steps": [8, 16.5, 32], "errors": [1, 2, 3]}, "positive integers"),
        ({"steps": [8], "errors": [1]}, "at least 2"),
        ({"steps": [8, 16, 32], "errors": [1, 2]}, "same length as steps"),
        ({"steps": [8, 16, 32], "errors": ["a", "b", "c"]}, "real numbers"),
        ({"steps": [8, 16, 32], "errors": [1, 2, 3], "uncertainties": [0.1, -0.1, 0]}, ">= 0"),
        ({"steps": [8, 16, 32], "errors": [1, 2, 3], "uncertainties": [0.1, 0.1]}, "same length"),
        ({"steps": [8, 16, 32], "errors": [1, 2, 3], "floors": [0, np.nan, 0]}, "finite"),
        ({"steps": [8, 16, 32], "errors": [1, 2, 3], "confidence": 1.0}, r"\(0, 1\)"),
        ({"steps": [8, 16, 32], "errors": [1, 2, 3], "tol": -0.1}, "tol must be"),
        ({"steps": [8, 16, 32], "errors": [1, 2, 3], "verdict_tol": math.inf}, "verdict_tol"),
        ({"steps": [8, 16, 32], "errors": [1, 2, 3], "min_points": 2}, "min_points"),
        ({"steps": [8, 16, 32], "errors": [1, 2, 3], "expected_slope": math.nan}, "expected_"),
        ({"steps": [8, 16, 32], "errors": [np.nan, 0.0, 1.0]}, "1 valid point"),
    ],
)
def test_invalid_input_raises(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_rate(**kwargs)


def test_select_window_validates() -> None:
    with pytest.raises(ValueError, match="floor_factor"):
        select_window([8, 16, 32], [1.0, 0.5, 0.25], floor_factor=-1.0)
    with pytest.raises(ValueError, match="strictly increasing"):
        local_slopes([8, 8], [1.0, 0.5])
    assert select_window([8, 16, 32], [np.nan, np.nan, np.nan]) == (2, 2, False)
