"""The judging rules of ``convergence.claims.findings`` and ``rates.slope_status``: width,
exclusion, counting, comparison, claim status and headline, each with a negative control."""

import json
import math

import numpy as np
import pytest

from convergence.analysis import PointFlag, analyse, point_flags
from convergence.claims.findings import (
    ClaimResult,
    ClaimStatus,
    Finding,
    Kind,
    Status,
    claim_status,
    compare,
    comparison_finding,
    counts,
    curve_finding,
    headline,
    loglog_fit,
    range_finding,
    slope_finding,
    tally,
    valid_point,
)
from convergence.rates import FitStatus, fit_rate, slope_status, width_limit

# ---- the width rule ----------------------------------------------------------------------------


def test_width_limit_is_a_floor_or_a_fraction_of_the_reference():
    assert width_limit(-1.0) == 0.25 and width_limit(None) == 0.25
    assert width_limit(-4.0) == pytest.approx(0.4) and width_limit(math.nan) == 0.25


@pytest.mark.parametrize(
    ("ci", "reference", "status"),
    [
        ((-1.1, -0.9), -1.0, FitStatus.CONSISTENT),
        ((-1.24, -0.76), -1.0, FitStatus.CONSISTENT),  # half-width 0.24: still decides
        ((-1.26, -0.74), -1.0, FitStatus.INCONCLUSIVE),  # 0.26: too wide, whatever it overlaps
        ((-16.2, 13.9), -1.0, FitStatus.INCONCLUSIVE),  # claim 4's omega = 16 fit
        ((-6.63, 2.18), 2.0, FitStatus.INCONCLUSIVE),  # claim 7's AMS kappa = 16 fit
        ((-4.35, -3.65), -4.0, FitStatus.CONSISTENT),  # 0.35 < 0.4 = a tenth of |-4|
        ((-4.45, -3.55), -4.0, FitStatus.INCONCLUSIVE),
        ((-2.1, -1.9), -1.0, FitStatus.FASTER),
        ((-0.6, -0.4), -1.0, FitStatus.SLOWER),
        ((-1.1, -0.9), None, FitStatus.NO_REFERENCE),
    ],
)
def test_slope_status_width_rule(ci, reference, status):
    assert slope_status(ci, True, 5, reference, 0.1) is status


def test_slope_status_needs_a_settled_window_of_three_points():
    assert slope_status((-1.01, -0.99), False, 5, -1.0, 0.1) is FitStatus.INCONCLUSIVE
    assert slope_status((-1.01, -0.99), True, 2, -1.0, 0.1) is FitStatus.INCONCLUSIVE
    assert slope_status((math.nan, math.nan), True, 5, -1.0, 0.1) is FitStatus.INCONCLUSIVE
    assert slope_status((-1.01, -0.99), True, 3, -1.0, 0.1) is FitStatus.CONSISTENT  # control


def test_fit_rate_applies_the_width_rule():
    t = np.array([8, 16, 32, 64, 128])
    rng = np.random.default_rng(0)
    noisy = t**-1.0 * np.exp(rng.normal(0, 0.6, t.size))
    wide = fit_rate(t, noisy, expected_slope=-1.0)
    assert (wide.ci_high - wide.ci_low) / 2 > 0.25 and wide.verdict is FitStatus.INCONCLUSIVE
    exact = fit_rate(t, t**-1.0, expected_slope=-1.0)
    assert exact.verdict is FitStatus.CONSISTENT  # the control: a narrow CI decides


def test_slope_finding_statuses_and_details():
    f = slope_finding("a", "slope in T", -1.0, -1.01, -0.99, settled=True, n_points=5, bound=-0.5)
    assert f.status is Status.FASTER and f.kind is Kind.BOUND and f.supports is None
    assert f.detail == "bound loose by 0.50"
    f = slope_finding(
        "a", "q", -1.4, -2.1, -0.7, settled=True, n_points=5, expected=-1.0, decisive=True
    )
    assert f.status is Status.INCONCLUSIVE and "CI half-width 0.7 above the limit" in f.detail
    assert f.supports is None  # a wide CI abstains
    f = slope_finding(
        "a", "q", -1.4, -1.5, -1.3, settled=False, n_points=5, expected=-2.0, local=(-1.2, -1.4)
    )
    assert f.detail == "window not settled, last local slope -1.40"
    assert (
        slope_finding(
            "a", "q", math.nan, math.nan, math.nan, settled=False, n_points=0, expected=-1.0
        ).status
        is Status.NOT_MEASURED
    )
    assert (
        slope_finding(
            "a", "q", math.nan, math.nan, math.nan, settled=False, n_points=2, expected=-1.0
        ).status
        is Status.UNRESOLVED
    )


def test_a_slope_in_the_step_size_reads_slower_when_the_bias_grows_as_h_shrinks():
    """Error ~ h^p: a bias that grows as h -> 0 (p = -0.5 against the expected +2) is slower and
    refutes; read as a slope in T (the negative control) the same numbers would say faster."""
    kw = dict(settled=True, n_points=4, expected=2.0, decisive=True)
    f = slope_finding("ams", "slope in h", -0.5, -0.55, -0.45, against_step_size=True, **kw)
    assert f.status is Status.SLOWER and f.supports is False
    control = slope_finding("ams", "slope in h", -0.5, -0.55, -0.45, **kw)
    assert control.status is Status.FASTER
    ok = slope_finding("ula", "slope in h", 2.04, 1.94, 2.14, against_step_size=True, **kw)
    assert ok.status is Status.CONSISTENT and ok.supports is True
    fast = slope_finding("x", "slope in h", 3.0, 2.9, 3.1, against_step_size=True, **kw)
    assert fast.status is Status.FASTER


# ---- point validity and exclusion --------------------------------------------------------------


def test_point_flags_each_warning_and_a_clean_control():
    assert point_flags(0.1, 0.001, 1e-4, 0.0) == ()
    assert point_flags(0.1, 0.001, 1e-4, None) == ()
    assert point_flags(0.1, 0.001, 1e-4, 0.68) == (PointFlag.OFF_GRID,)
    assert point_flags(0.1, 0.02, 1e-4, 0.0) == (PointFlag.UNCERTAIN,)
    assert point_flags(0.1, 0.009, 1e-4, 0.0) == ()  # 9%: kept
    assert point_flags(1e-3, 0.0, 2e-4, 0.0) == (PointFlag.BELOW_FLOOR,)
    assert point_flags(math.nan, 0.0, 0.0, 0.0) == (PointFlag.NON_FINITE,)
    both = point_flags(0.01, 0.29, 0.0, 0.99)
    assert set(both) == {PointFlag.OFF_GRID, PointFlag.UNCERTAIN}


def _record(steps, err, *, unc=0.0, mass=0.0, sampler="ddim", seed=0, floor=0.0):
    return {
        "key": f"{sampler}-{steps}-{seed}",
        "target": "gmm:d=1,k=3,seed=0",
        "dim": 1,
        "process": "vp",
        "sampler": sampler,
        "options": "{}",
        "steps": steps,
        "perturbation": None,
        "metric": "tv",
        "seed": seed,
        "n": 0,
        "init": "exact",
        "t_end_requested": None,
        "final_noise": None,
        "denoise": None,
        "noise": None,
        "status": "ok",
        "value": err,
        "uncertainty": unc,
        "evaluator_used": "grid",
        "floor": floor,
        "mass_outside": mass,
        "nfe": steps,
        "eps_score": None,
        "eps_jacobi": None,
    }


def test_flagged_points_never_enter_a_fit_and_are_listed():
    ts = [8, 16, 32, 64, 128, 256]
    clean = [_record(t, 0.5 / t) for t in ts]
    # a wild point at T=256 with most of the reference's mass off the grid
    dirty = [*clean[:-1], _record(256, 0.5, mass=0.68)]
    a_clean, a_dirty = analyse(clean), analyse(dirty)
    c_clean, c_dirty = a_clean.curves[0], a_dirty.curves[0]
    assert c_clean.slope == pytest.approx(-1.0, abs=1e-9)
    assert c_dirty.slope == pytest.approx(-1.0, abs=1e-9)  # the flagged point is not fitted
    f = curve_finding(c_dirty, "ddim", bound=-1.0, decisive=True)
    assert [(e.at, e.reasons) for e in f.excluded] == [("T=256", ("reference mass off the grid",))]
    assert curve_finding(c_clean, "ddim", bound=-1.0).excluded == ()  # control
    value, ex = valid_point(c_dirty, 256)
    assert math.isnan(value) and ex.reasons == ("reference mass off the grid",)
    assert valid_point(c_dirty, 128) == (pytest.approx(0.5 / 128), None)
    value, ex = valid_point(c_dirty, 4096)
    assert math.isnan(value) and ex.reasons == ("not measured",)


def test_uncertain_points_are_excluded_like_off_grid_ones():
    ts = [8, 16, 32, 64, 128, 256]
    recs = [_record(t, 0.5 / t, unc=(29 * 0.5 / t if t == 256 else 0.0)) for t in ts]
    c = analyse(recs).curves[0]
    assert [t for t, _, _ in c.flagged()] == [256]
    assert c.slope == pytest.approx(-1.0, abs=1e-9)


# ---- ranges and comparisons --------------------------------------------------------------------


def test_range_finding_needs_the_whole_ci_inside():
    assert range_finding("r", "x", 3.0, 2.5, 3.5, 2, 10).status is Status.WITHIN
    assert range_finding("r", "x", 1.2, 1.0, 1.5, 2, 10).status is Status.BELOW
    assert range_finding("r", "x", 12.0, 11.0, 13.0, 2, 5).status is Status.ABOVE
    # a CI that merely meets the range decides nothing (the old rule called this "within")
    assert range_finding("r", "x", 1.5, 1.0, 2.5, 2, 5).status is Status.INCONCLUSIVE
    assert range_finding("r", "x", math.nan, math.nan, math.nan, 2, 5).status is Status.NOT_MEASURED
    assert range_finding("r", "x", 3.0, math.nan, math.nan, 2, 5).status is Status.INCONCLUSIVE
    f = range_finding("r", "x", 6.4, 6.4, 6.4, 1, math.inf)
    assert f.bound_text() == ">= 1x" and f.status is Status.WITHIN


def test_comparisons_need_separated_cis():
    # claim 1's li-yan setting: li-accel-ddim -1.43 [-2.12, -0.75] against ddim -0.89 [-1.05, -0.72]
    assert compare((-1.43, -2.12, -0.748), (-0.887, -1.05, -0.722)) is Status.INCONCLUSIVE
    assert compare((-1.71, -1.98, -1.45), (-1.0, -1.0, -1.0)) is Status.BETTER  # separated
    assert compare((-1.0, -1.0, -1.0), (-1.71, -1.98, -1.45)) is Status.WORSE
    assert compare((-0.99, -0.996, -0.986), (-0.998, -1.0, -0.991)) is Status.SAME
    assert compare((2.0, 1.9, 2.1), (1.0, 0.9, 1.1), lower_is_better=False) is Status.BETTER
    assert compare((math.nan,) * 3, (1.0, 0.9, 1.1)) is Status.NOT_MEASURED
    f = comparison_finding("gain", "slope", (-1.43, -2.12, -0.748), (-0.887, -1.05, -0.722))
    assert f.kind is Kind.COMPARISON and f.supports is None and f.expected == -0.887


# ---- counting, claim status and headline -------------------------------------------------------


def _f(status, kind=Kind.BOUND, decisive=True, in_regime=True, what="x"):
    return Finding(what, "q", 1.0, status=status, kind=kind, decisive=decisive, in_regime=in_regime)


def test_votes_follow_the_kind():
    assert _f(Status.FASTER).supports is True and _f(Status.SLOWER).supports is False
    assert _f(Status.FASTER, Kind.ORDER).supports is False
    assert _f(Status.SAME, Kind.COMPARISON).supports is False
    assert _f(Status.WITHIN, Kind.RANGE).supports is True
    assert _f(Status.INCONCLUSIVE).supports is None
    assert _f(Status.CONSISTENT, decisive=False).supports is None
    assert _f(Status.CONSISTENT, in_regime=False).supports is None


def test_counts_come_from_status_fields_not_words():
    # claim 1's old count looked for the word "consistent" and found 0 in "consistent (window
    # not settled)"; claim 6's found "within" in "unbiased within the CI"
    fs = [
        Finding("a", "q", 1.0, status=Status.INCONCLUSIVE, detail="consistent window not settled"),
        Finding(
            "b", "variance ratio", 1.0, status=Status.MEASURED, detail="unbiased within the CI"
        ),
        _f(Status.CONSISTENT),
        _f(Status.CONSISTENT),
    ]
    assert counts(fs) == {"consistent": 2, "inconclusive": 1, "measured": 1}
    assert sum(counts(fs).values()) == len(fs)
    assert tally(fs) == {
        "decisive": 2,
        "support": 2,
        "refute": 0,
        "abstain": 0,
        "outside regime": 0,
    }


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([Status.CONSISTENT, Status.FASTER], ClaimStatus.SUPPORTED),
        ([Status.CONSISTENT, Status.INCONCLUSIVE], ClaimStatus.INCONCLUSIVE),
        ([Status.CONSISTENT, Status.SLOWER], ClaimStatus.MIXED),
        ([Status.SLOWER, Status.INCONCLUSIVE], ClaimStatus.REFUTED),
        ([Status.INCONCLUSIVE, Status.UNRESOLVED], ClaimStatus.INCONCLUSIVE),
        ([], ClaimStatus.INCONCLUSIVE),
    ],
)
def test_claim_status_rule(statuses, expected):
    fs = [_f(s) for s in statuses] + [_f(Status.SLOWER, decisive=False)]  # context never votes
    assert claim_status(fs) is expected


def test_claim_status_outside_the_regime():
    out = [
        _f(Status.WITHIN, Kind.RANGE, in_regime=False),
        _f(Status.BELOW, Kind.RANGE, in_regime=False),
    ]
    assert claim_status(out) is ClaimStatus.NOT_IN_REGIME
    # one decisive in-regime finding is enough to be judged in the regime (control)
    assert claim_status([*out, _f(Status.CONSISTENT)]) is ClaimStatus.SUPPORTED


def test_headline_is_the_first_finding_agreeing_with_the_status():
    fs = [
        _f(Status.CONSISTENT, what="a"),
        _f(Status.SLOWER, what="b"),
        _f(Status.CONSISTENT, decisive=False, what="c"),
    ]
    assert claim_status(fs) is ClaimStatus.MIXED and headline(fs, ClaimStatus.MIXED).what == "b"
    ok = [_f(Status.INCONCLUSIVE, what="a"), _f(Status.CONSISTENT, what="b")]
    assert headline(ok, claim_status(ok)).what == "a"  # inconclusive: the first abstaining
    late = [_f(Status.CONSISTENT, what="a"), _f(Status.INCONCLUSIVE, what="b")]
    assert claim_status(late) is ClaimStatus.INCONCLUSIVE
    assert headline(late, ClaimStatus.INCONCLUSIVE).what == "b"  # not the supporting one
    ok[0] = _f(Status.FASTER, what="a")
    assert headline(ok, claim_status(ok)).what == "a"
    assert headline([], ClaimStatus.INCONCLUSIVE) is None


def test_claim_result_json_recounts_and_names_its_headline():
    class Claim:
        id, number, title, paper, regime = "x", 1, "t", "p", None

    fs = [
        _f(Status.INCONCLUSIVE, what="a"),
        _f(Status.SLOWER, what="b"),
        Finding("c", "q", 2.0, 1.0, 3.0, Status.MEASURED),
    ]
    data = json.loads(json.dumps(ClaimResult(Claim(), fs).as_json()))
    assert data["status"] == "refuted" and data["headline"] == 1
    assert data["counts"] == {"inconclusive": 1, "measured": 1, "slower": 1}
    recount = {}
    for f in data["findings"]:
        recount[f["status"]] = recount.get(f["status"], 0) + 1
    assert recount == data["counts"]
    assert {"status", "measured", "lo", "hi", "expected", "bound", "excluded"} <= set(
        data["findings"][0]
    )
    assert data["verdict"].startswith("refuted: 0 of 2 decisive findings support the claim, 1")


def test_loglog_fit():
    slope, a, lo, hi = loglog_fit([1, 2, 4, 8], [3.0 * x**-1.5 for x in (1, 2, 4, 8)])
    assert slope == pytest.approx(-1.5, abs=1e-12) and a == pytest.approx(math.log(3.0))
    assert lo == pytest.approx(-1.5, abs=1e-9) and hi == pytest.approx(-1.5, abs=1e-9)
    assert math.isnan(loglog_fit([1, 2], [1, 2])[2])  # two points: no CI


# ---- the largest-T local slope (claims 1 and 2, E1) --------------------------------------------


def test_largest_t_local_slope_allows_for_a_log_factor_still_to_come():
    """TV = T^-2 (ln T)^3 has local slopes that reach -2 only as T -> infinity: at T = 4096 the
    last local slope is about -1.64, and the rule's half-width (the last change times
    ln T / ln 2) reaches -2, so the slope is inconclusive against a bound -2, never 'slower'. The
    naive half-width (the last change alone) would exclude -2: the negative control. A clean
    power law gives a tight interval and a consistent status."""
    from convergence.claims.judge_asymptote import power_fits, tail_slope

    ts = [2**k for k in range(4, 13)]
    logged = analyse([_record(t, t**-2.0 * math.log(t) ** 3) for t in ts]).curves[0]
    p, half, local, pair = tail_slope(logged)
    assert pair == (2048, 4096) and p == pytest.approx(local[-1])
    assert -1.7 < p < -1.6 and p - half < -2.0
    naive = abs(local[-1] - local[-2])
    assert p - naive > -2.0 + 0.1  # the control: too narrow to allow for the log factor
    f = slope_finding("x", "local slope", p, p - half, p + half, settled=True, n_points=9, bound=-2)
    assert f.status is Status.INCONCLUSIVE
    fits = power_fits(logged)
    assert fits["log"]["slope"] == pytest.approx(-2.0, abs=1e-6)
    assert fits["log"]["k"] == pytest.approx(3.0, abs=1e-6)
    clean = analyse([_record(t, 0.8 / t**2) for t in ts]).curves[0]
    p, half, *_ = tail_slope(clean)
    assert p == pytest.approx(-2.0, abs=1e-9) and half < 1e-6
    g = slope_finding("x", "local slope", p, p - half, p + half, settled=True, n_points=9, bound=-2)
    assert g.status is Status.CONSISTENT
    flagged = analyse(
        [*(_record(t, 0.8 / t**2) for t in ts[:-1]), _record(4096, 1.0, mass=0.5)]
    ).curves[0]
    assert tail_slope(flagged)[3] == (1024, 2048)  # the flagged point is not the last one
