"""Claim 10's matching and ratio rules (``convergence.claims.learned``) on hand-made curves."""

import math
from types import SimpleNamespace

import pytest

from convergence.claims.learned import Z95, _half_width, _matched, _plateau_finding, _ratio


def _curve(perturbation, errors, eps_score, eps_jacobi, *, unc=None, evaluator="grid"):
    steps = tuple(8 * 2**i for i in range(len(errors)))
    n = len(errors)
    unc = tuple(unc) if unc is not None else (0.0,) * n
    return SimpleNamespace(
        key=SimpleNamespace(
            perturbation=perturbation, evaluator=evaluator, target="gmm:d=1,k=3,seed=0"
        ),
        label="ddim",
        steps=steps,
        errors=tuple(errors),
        std_errors=unc,
        uncertainties=unc,
        eps_score=(eps_score,) * n,
        eps_jacobi=(eps_jacobi,) * n,
        flags=((),) * n,
        valid=lambda j: True,
    )


NET = _curve("learned:net.pt", [0.2, 0.1], 0.05, 0.30)
BIAS_NEAR = _curve("bias:eps=0.05", [0.2, 0.1], 0.05, 0.0)
BIAS_FAR = _curve("bias:eps=0.15", [0.4, 0.3], 0.15, 0.0)
SINE_SMOOTH = _curve("sin:eps=0.05,omega=1", [0.1, 0.05], 0.05, 0.05)  # same eps_score only
SINE_ROUGH = _curve("sin:eps=0.06,omega=5", [0.5, 0.4], 0.06, 0.30)  # nearest in both


def test_bias_is_matched_by_eps_score_and_sine_by_both_errors():
    curves = [NET, BIAS_FAR, BIAS_NEAR, SINE_SMOOTH, SINE_ROUGH]
    assert _matched(curves, NET, 16, "bias") is BIAS_NEAR
    assert _matched(curves, NET, 16, "sin") is SINE_ROUGH
    # negative control: by eps_score alone the smooth sine would be the nearer one
    alone = min((SINE_SMOOTH, SINE_ROUGH), key=lambda c: abs(math.log(c.eps_score[1] / 0.05)))
    assert alone is SINE_SMOOTH
    # no match without a measured error, nor among curves lacking T
    blind = _curve("learned:net.pt", [0.2, 0.1], None, None)
    assert _matched(curves, blind, 16, "bias") is None
    longer = _curve("learned:net.pt", [0.2, 0.1, 0.09], 0.05, 0.30)
    assert _matched([BIAS_NEAR], longer, 32, "bias") is None


def test_ratio_ci_adds_relative_half_widths_in_log_scale():
    a = _curve("learned:a.pt", [0.2, 0.1], 0.05, 0.3, unc=[0.0, 0.003])
    b = _curve("bias:eps=0.05", [0.2, 0.2], 0.05, 0.0, unc=[0.0, 0.004])
    r, lo, hi = _ratio(a, b, 16)
    rel = math.hypot(0.003 / 0.1, 0.004 / 0.2)
    assert r == pytest.approx(0.5)
    assert lo == pytest.approx(0.5 * math.exp(-rel)) and hi == pytest.approx(0.5 * math.exp(rel))
    assert lo * hi == pytest.approx(r * r)  # symmetric in log
    exact = _ratio(NET, BIAS_NEAR, 16)
    assert exact[1] == exact[0] == exact[2]  # exact points: a degenerate interval


def test_half_width_is_196_standard_errors_only_for_sample_metrics():
    grid = _curve("bias:eps=0.05", [0.2], 0.05, 0.0, unc=[0.01])
    mmd = _curve("bias:eps=0.05", [0.2], 0.05, 0.0, unc=[0.01], evaluator="samples")
    assert _half_width(grid, 0) == pytest.approx(0.01)
    assert _half_width(mmd, 0) == pytest.approx(Z95 * 0.01)


def test_plateau_row_divides_by_eps_score_and_reports_flatness():
    f = _plateau_finding("ddim", _curve("sin:eps=0.05,omega=6", [0.44, 0.43], 0.05, 0.3))
    assert f.measured == pytest.approx(0.43 / 0.05)
    assert not f.decisive and f.supports is None
    assert "plateau / eps_jacobi 1.43" in f.detail and "-2% from T=8" in f.detail
    assert "eps_jacobi = 0" in _plateau_finding("ddim", BIAS_NEAR).detail
    assert _plateau_finding("ddim", _curve("bias:eps=0", [0.2], 0.0, 0.0)) is None


def test_floor_line_only_for_curves_with_a_noise_floor():
    from convergence.claims.context import floor_lines

    def curve(evaluator, floors):
        return SimpleNamespace(key=SimpleNamespace(evaluator=evaluator), floors=floors)

    exact = curve("logdet", (0.0, 0.0))
    roundoff = curve("grid", (1e-11, 2e-11))  # an exact evaluator's round-off level
    sampled = curve("samples", (1e-4, 3e-4))
    other = curve("samples", (2e-4, math.nan))
    assert floor_lines([exact, roundoff]) == []  # control: exact curves draw no floor
    ((level, text),) = floor_lines([exact, roundoff, sampled, other])
    assert level == pytest.approx(10 * 2e-4) and text == "10x noise floor"
