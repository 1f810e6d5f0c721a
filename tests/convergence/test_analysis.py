"""Rate analysis of sweep records (convergence.analysis): fits, verdicts, NFE-to-error, tables.

Records are built the way the sweep store returns them: real ones by running
``convergence.evaluators.error`` (``make_record``), synthetic ones with known power laws and known
noise (``synthetic``).
"""

import json
import math
import re

import numpy as np
import pytest
from scipy import stats

from analytic.processes import make_process
from convergence.analysis import (
    analyse,
    default_level,
    fit_curves,
    nfe_to_error,
)
from convergence.evaluators import error
from convergence.experiment import measure_rate
from convergence.tables import to_json, to_latex, to_markdown
from convergence.targets import parse_target

GAUSS = "gaussian:d=2"
Z95 = float(stats.norm.ppf(0.975))


def make_record(
    sampler, target, process, steps, *, metric, seed=0, n=2000, evaluator="auto", **options
):
    """A Record dict (issue 5 shared design) of one real run of ``error``."""
    est = error(
        sampler,
        parse_target(target),
        make_process(process),
        steps,
        metric=metric,
        evaluator=evaluator,
        n=n,
        seed=seed,
        **options,
    )
    return {
        "key": f"{sampler}/{target}/{metric}/{steps}/{seed}",
        "run_id": 1,
        "target": target,
        "dim": parse_target(target).dim,
        "process": process,
        "sampler": sampler,
        "options": dict(options),
        "steps": steps,
        "perturbation": None,
        "metric": metric,
        "evaluator": evaluator,
        "seed": seed,
        "n": n,
        "init": "exact",
        "t_end_requested": None,
        "final_noise": False,
        "denoise": False,
        "noise": "independent",
        "status": "ok",
        "message": "",
        "value": est.value,
        "uncertainty": est.uncertainty,
        "evaluator_used": est.evaluator,
        "floor": est.floor,
        "exact": est.exact,
        "lower_bound": est.lower_bound,
        "nfe": est.nfe,
        "t_end": est.t_end,
        "n_samples": est.n_samples,
        "reference": est.reference,
        "note": est.note,
        "eps_score": None,
        "eps_jacobi": None,
        "wall": 0.0,
        "finished": "",
    }


def synthetic(
    sampler,
    metric,
    steps,
    values,
    *,
    seed=0,
    evaluator="gaussian",
    rel_unc=0.0,
    floor=0.0,
    nfe_per_step=1,
    target=GAUSS,
    dim=2,
    perturbation=None,
    eps_score=None,
    status="ok",
    options=None,
):
    """Record dicts with given values (a callable of T or a list); uncertainty = rel_unc * value."""
    out = []
    for i, T in enumerate(steps):
        v = float(values(T) if callable(values) else values[i])
        ok = status == "ok"
        out.append(
            {
                "key": f"{sampler}/{target}/{metric}/{perturbation}/{T}/{seed}/{status}",
                "run_id": 1,
                "target": target,
                "dim": dim,
                "process": "vp",
                "sampler": sampler,
                "options": dict(options or {}),
                "steps": T,
                "perturbation": perturbation,
                "metric": metric,
                "evaluator": "auto",
                "seed": seed,
                "n": 1000,
                "init": "exact",
                "t_end_requested": None,
                "final_noise": False,
                "denoise": False,
                "noise": "independent",
                "status": status,
                "message": "" if ok else "diverged at step 3",
                "value": v if ok else None,
                "uncertainty": rel_unc * v if ok else None,
                "evaluator_used": evaluator if ok else None,
                "floor": floor if ok else None,
                "exact": evaluator == "gaussian" if ok else None,
                "lower_bound": None,
                "nfe": nfe_per_step * T,
                "t_end": 1e-3 if ok else None,
                "n_samples": 1000 if ok else None,
                "reference": "",
                "note": "",
                "eps_score": eps_score,
                "eps_jacobi": None,
                "wall": 0.0,
                "finished": "",
            }
        )
    return out


def the(curves, **where):
    """The one curve whose key matches ``where``."""
    found = [c for c in curves if all(getattr(c.key, k) == v for k, v in where.items())]
    assert len(found) == 1, (where, [c.key for c in curves])
    return found[0]


# ---------------------------------------------------------------------------- real KL records

DDIM_STEPS = [10, 20, 40, 80, 160, 320, 640]
HEUN_STEPS = [5, 10, 20, 40, 80, 160]


@pytest.fixture(scope="module")
def kl_records():
    """Exact KL of ddim and ode-heun on gaussian:d=2 (VP), one seed (gaussian evaluator)."""
    return [make_record("ddim", GAUSS, "vp", T, metric="kl") for T in DDIM_STEPS] + [
        make_record("ode-heun", GAUSS, "vp", T, metric="kl") for T in HEUN_STEPS
    ]


@pytest.mark.parametrize("sampler", ["ddim", "ode-heun"])
def test_single_seed_fit_reproduces_measure_rate(kl_records, sampler):
    steps = [10, 20, 40, 80, 160]
    records = [r for r in kl_records if r["sampler"] == sampler and r["steps"] in steps]
    (curve,) = fit_curves(records)
    ref = measure_rate(sampler, parse_target(GAUSS), make_process("vp"), steps, metric="kl")
    assert curve.fit == ref.fit  # every field, bit for bit: slope, CI, window, local slopes
    assert (curve.slope, curve.ci_low, curve.ci_high) == (
        ref.fit.slope,
        ref.fit.ci_low,
        ref.fit.ci_high,
    )
    assert curve.verdict == ref.verdict == "consistent"
    assert curve.ci_method == "regression"
    assert curve.expected_slope == ref.expected_slope


def test_speedup_of_heun_over_ddim_at_kl_1e_4(kl_records):
    """NFE-to-error by log-log interpolation against an independent check: error() at the
    integer step counts around each interpolated crossing brackets the level."""
    level = 1e-4
    a = analyse(kl_records, level=level)
    (sp,) = [s for s in a.speedups if s.sampler == "ode-heun"]
    assert sp.baseline == "ddim"
    target, vp = parse_target(GAUSS), make_process("vp")
    t_ddim = math.floor(sp.nfe_baseline.nfe)  # ddim: 1 NFE per step
    t_heun = math.floor(sp.nfe.nfe / 2)  # heun: 2 NFE per step
    assert error("ddim", target, vp, t_ddim, metric="kl").value >= level
    assert error("ddim", target, vp, t_ddim + 1, metric="kl").value < level
    assert error("ode-heun", target, vp, t_heun, metric="kl").value >= level
    assert error("ode-heun", target, vp, t_heun + 1, metric="kl").value < level
    bracket = (t_ddim / (2 * (t_heun + 1)), (t_ddim + 1) / (2 * t_heun))
    assert bracket[0] <= sp.lo <= sp.ratio <= sp.hi <= bracket[1]
    assert sp.ratio == pytest.approx(sp.nfe_baseline.nfe / sp.nfe.nfe)
    assert 9.0 < sp.ratio < 10.0
    md = to_markdown(a)
    assert f"| ode-heun | ddim | {sp.ratio:.3g} [{sp.lo:.3g}, {sp.hi:.3g}] |" in md


@pytest.mark.slow
def test_speedup_of_heun_over_ddim_at_kl_1e_6():
    """The acceptance number: ddim needs T ~ 3250 to reach KL = 1e-6 on gaussian:d=2."""
    level = 1e-6
    records = [make_record("ddim", GAUSS, "vp", 10 * 2**k, metric="kl") for k in range(10)]
    records += [make_record("ode-heun", GAUSS, "vp", T, metric="kl") for T in HEUN_STEPS]
    (sp,) = analyse(records, level=level).speedups
    target, vp = parse_target(GAUSS), make_process("vp")
    t_ddim, t_heun = math.floor(sp.nfe_baseline.nfe), math.floor(sp.nfe.nfe / 2)
    assert error("ddim", target, vp, t_ddim, metric="kl").value >= level
    assert error("ddim", target, vp, t_ddim + 1, metric="kl").value < level
    assert error("ode-heun", target, vp, t_heun, metric="kl").value >= level
    assert error("ode-heun", target, vp, t_heun + 1, metric="kl").value < level
    bracket = (t_ddim / (2 * (t_heun + 1)), (t_ddim + 1) / (2 * t_heun))
    assert bracket[0] <= sp.lo <= sp.ratio <= sp.hi <= bracket[1]


# ---------------------------------------------------------------------------- seeds


def test_bootstrap_over_seeds_matches_the_spread_of_single_seed_slopes():
    """20 seeds of e = 2/T exp(0.05 xi): the bootstrap CI of the mean curve's slope contains the
    true slope -1 and its half-width is 1.96 sd(single-seed slopes) / sqrt(20) within 40%, the
    single-seed slopes being plain least squares on the same window (independent of the code)."""
    steps = np.array([8, 16, 32, 64, 128, 256])
    rng = np.random.default_rng(7)
    records, values = [], []
    for seed in range(20):
        values.append(2.0 / steps * np.exp(0.05 * rng.standard_normal(steps.size)))
        records += synthetic(
            "ddpm", "w2", steps.tolist(), values[-1], seed=seed, evaluator="samples", rel_unc=0.05
        )
    (curve,) = fit_curves(records, n_boot=1000)
    assert curve.ci_method == "bootstrap over 20 seeds"
    i0, i1 = curve.fit.window_indices
    assert i1 - i0 >= 2
    window = slice(i0, i1 + 1)
    per_seed = [np.polyfit(np.log(steps[window]), np.log(v[window]), 1)[0] for v in values]
    assert curve.ci_low < -1.0 < curve.ci_high
    assert curve.ci_low < curve.slope < curve.ci_high
    half = 0.5 * (curve.ci_high - curve.ci_low)
    expected_half = Z95 * np.std(per_seed, ddof=1) / math.sqrt(20)
    assert 0.6 < half / expected_half < 1.4
    # one seed alone: the regression CI, much wider than the bootstrap CI of 20 seeds
    (one,) = fit_curves([r for r in records if r["seed"] == 0])
    assert one.ci_method == "regression" and one.n_seeds == (1,) * steps.size
    assert one.ci_low < one.slope < one.ci_high
    assert one.ci_high - one.ci_low > 2.0 * (curve.ci_high - curve.ci_low)


def test_seeds_of_an_exact_evaluator_are_not_replicates():
    steps = [10, 20, 40, 80]
    one = synthetic("ddim", "kl", steps, lambda T: 3.0 * T**-2.0)
    three = [r | {"seed": s} for s in range(3) for r in one]
    (c1,), (c3,) = fit_curves(one), fit_curves(three)
    assert c3.ci_method == "regression" and c3.seeds == (0, 1, 2)
    assert c3.fit == c1.fit


# ---------------------------------------------------------------------------- verdicts


def _bounds(curve):
    return {(b.exponent, b.short_source): b for b in curve.bounds}


def test_claimed_bound_verdicts():
    steps = [8, 16, 32, 64, 128]
    records = synthetic("ddpm", "tv", steps, lambda T: 3.0 / T)
    records += synthetic("ddpm", "tv", steps, lambda T: 3.0 * T**-0.25, target="gaussian:d=3")
    records += synthetic("ddpm", "tv", steps, lambda T: 3.0 * T**-0.45, target="gaussian:d=4")
    records += synthetic(
        "ddpm", "tv", steps, [1.0, 0.8, 0.5, 0.25, 0.08], target="gaussian:d=5"
    )  # local slopes -0.32, -0.68, -1.0, -1.64: never settled
    records += synthetic("ddpm", "kl", steps, lambda T: 3.0 * T**-2.0)
    records += synthetic("ddim", "kl", steps, lambda T: 3.0 * T**-2.0)
    curves = fit_curves(records)
    chen, li_yan = (0.5, "Chen et al. 2023"), (1.0, "Li & Yan 2024")

    first = the(curves, target=GAUSS, metric="tv")
    assert first.verdict == "consistent"
    b = _bounds(first)
    assert b[chen].verdict == "faster (bound loose by 0.50 in the exponent)"
    assert b[chen].loose_by == pytest.approx(0.5, abs=1e-9)
    assert b[li_yan].verdict == "consistent"

    slow = the(curves, target="gaussian:d=3")
    assert slow.verdict == "slower"
    assert {v.verdict for v in slow.bounds} == {"slower (bound violated)"}

    near = _bounds(the(curves, target="gaussian:d=4"))
    assert near[chen].verdict == "consistent"  # slope -0.45 within tau = 0.1 of -0.5
    strict = _bounds(the(fit_curves(records, bound_tol=0.0), target="gaussian:d=4"))
    assert strict[chen].verdict == "slower (bound violated)"  # the CI (width ~1e-8) excludes -0.5

    unsettled = the(curves, target="gaussian:d=5")
    assert unsettled.verdict == "inconclusive" and not unsettled.settled
    assert {v.verdict for v in unsettled.bounds} == {"inconclusive"}

    kl = the(curves, sampler="ddpm", metric="kl")
    assert [v.verdict for v in kl.bounds] == ["faster (bound loose by 1.00 in the exponent)"]
    assert the(curves, sampler="ddim", metric="kl").bounds == ()  # ddim claims TV only


# ---------------------------------------------------------------------------- NFE-to-error

POWER_STEPS = [5, 10, 20, 40, 80, 160]


def _curve(values, **kw):
    (c,) = fit_curves(synthetic("ode-heun", "kl", POWER_STEPS, values, nfe_per_step=2, **kw))
    return c


def test_nfe_to_error_is_exact_on_a_power_law():
    curve = _curve(lambda T: 3.0 * T**-2.0)
    level = 3.0 * 37.0**-2  # reached at T = 37, i.e. NFE 74
    nfe, lo, hi = nfe_to_error(curve, level)
    assert nfe == pytest.approx(74.0, rel=1e-12)
    assert lo == pytest.approx(74.0, rel=1e-12) and hi == pytest.approx(74.0, rel=1e-12)


def test_nfe_to_error_interval_from_the_uncertainties():
    """Shifting e by +-z u (u = 1% of e) moves the crossing of 3 T^-2 to 74 sqrt(1 +- z u)."""
    curve = _curve(lambda T: 3.0 * T**-2.0, evaluator="samples", rel_unc=0.01)
    r = nfe_to_error(curve, 3.0 * 37.0**-2)
    assert r.nfe == pytest.approx(74.0, rel=1e-12)
    assert r.lo == pytest.approx(74.0 * math.sqrt(1 - Z95 * 0.01), rel=1e-12)
    assert r.hi == pytest.approx(74.0 * math.sqrt(1 + Z95 * 0.01), rel=1e-12)


def test_nfe_to_error_uses_the_last_crossing_of_a_non_monotone_curve():
    curve = _curve([0.5, 1.0, 0.25, 0.0625, 0.015625, 0.00390625])  # a bump at T = 10
    r = nfe_to_error(curve, 0.6)
    assert r.nfe == pytest.approx(2 * 10 * math.sqrt(1 / 0.6), rel=1e-12)


def test_nfe_to_error_refuses_levels_outside_the_range():
    curve = _curve(lambda T: 3.0 * T**-2.0)
    below = nfe_to_error(curve, 1e-9)
    assert math.isnan(below.nfe) and "more steps needed" in below.reason
    assert (below.lo, below.hi) == (320.0, math.inf)  # the one-sided bound: NFE > 320
    above = nfe_to_error(curve, 10.0)
    assert math.isnan(above.nfe) and "reached at or before NFE 10" in above.reason
    assert (above.lo, above.hi) == (0.0, 10.0)
    # points below 10x their floor are not resolved: the level is outside the resolved range
    floored = _curve(lambda T: 3.0 * T**-2.0, floor=3.0 * 40.0**-2 / 10)
    assert math.isnan(nfe_to_error(floored, 3.0 * 60.0**-2).nfe)
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="level must be a finite number > 0"):
            nfe_to_error(curve, bad)


def test_default_level_is_a_round_number_inside_the_ranges():
    a = _curve(lambda T: 0.1 * (T / 5.0) ** -1.33)  # e from 0.1 down to 1e-3
    b = _curve(lambda T: 0.03 * (T / 5.0) ** -2.66, target="gaussian:d=3")  # 0.03 .. 3e-6
    c = _curve(lambda T: 1e-4 * (T / 5.0) ** -1.33, target="gaussian:d=4")  # 1e-4 .. 1e-6
    d = _curve(lambda T: 0.05 * (T / 5.0) ** -1.33, target="gaussian:d=5")  # 0.05 .. 5e-4
    # [1e-3, 0.03]: geometric mean 5.5e-3 -> 5e-3
    assert default_level([a, b]) == pytest.approx(5e-3)
    # c overlaps b only; {a, b, d} is the largest overlapping set, again [1e-3, 0.03]
    assert default_level([a, b, c, d]) == pytest.approx(5e-3)
    # a tie between {b, c} and {a, b}: the set at smaller errors, [3e-6, 1e-4] -> 2e-5
    assert default_level([a, b, c]) == pytest.approx(2e-5)


# ---------------------------------------------------------------------------- plateaus, d


def test_plateau_and_dimension_slopes():
    steps = [16, 32, 64]
    records = synthetic("ddim", "w2", steps, lambda T: 1.0 / T)  # exact score
    for eps in (0.01, 0.02, 0.04, 0.08):
        records += synthetic(
            "ddim",
            "w2",
            steps,
            lambda T, eps=eps: 0.3 * eps * (1 + 1.0 / T),
            perturbation=f"bias:eps={eps}",
            eps_score=eps,
        )
    for d in (1, 2, 4, 8):
        records += synthetic(
            "ddpm", "kl", steps, lambda T, d=d: d * T**-2.0, target=f"gaussian:d={d}", dim=d
        )
    a = analyse(records)
    (plateau,) = a.plateaus
    assert plateau.against == "eps_score" and plateau.steps == 64
    assert plateau.slope == pytest.approx(1.0, abs=1e-12)
    assert plateau.ci_low <= 1.0 <= plateau.ci_high
    assert plateau.exact_error == pytest.approx(1 / 64)
    assert plateau.perturbations[0] == "bias:eps=0.01"
    assert [d.steps for d in a.dimensions] == steps
    for fit in a.dimensions:
        assert fit.dims == (1, 2, 4, 8) and fit.group.target == "gaussian:d=*"
        assert fit.slope == pytest.approx(1.0, abs=1e-12)
    md = to_markdown(a)
    assert "### Error plateau against the score error" in md
    assert "### Dimension dependence at fixed T" in md


# ---------------------------------------------------------------------------- outputs


@pytest.fixture(scope="module")
def mixed_analysis():
    steps = [8, 16, 32, 64]
    records = synthetic("ddim", "kl", steps, lambda T: 3.0 * T**-2.0)
    records += synthetic("ode-heun", "kl", steps, lambda T: 0.5 * T**-4.0, nfe_per_step=2)
    records += synthetic(
        "my_sampler", "kl", steps, lambda T: 2.0 / T, options={"eta_x": 0.5}, evaluator="samples"
    )
    records += synthetic(
        "my_sampler", "kl", [128, 256], [1.0, 1.0], status="diverged", options={"eta_x": 0.5}
    )
    records += synthetic("ddpm", "kl", [8], [0.1])  # one step count: no slope
    return analyse(records)


def test_markdown_rows(mixed_analysis):
    md = to_markdown(mixed_analysis)
    lines = md.splitlines()
    header = "| target | process | sampler | metric | perturbation | evaluator | seeds |"
    assert any(line.startswith(header) for line in lines)
    ddim = next(line for line in lines if line.startswith("| gaussian:d=2 | vp | ddim | kl |"))
    assert "| -2.000 [-2.000, -2.000] | -2 | consistent |" in ddim
    assert any(
        line.startswith("| gaussian:d=2 | vp | my_sampler (eta_x=0.5) | kl |") for line in lines
    )
    assert "| ddpm | kl | exact score | gaussian | 1 | - | - | -2 | unresolved |" in md
    assert "| T^-1 (Benton et al. 2024): unresolved |" in md
    assert "my_sampler (eta_x=0.5) on gaussian:d=2 (vp, kl): 2 diverged row(s) excluded" in md
    assert "### Speed-ups at equal error" in md


def test_latex_booktabs_and_escaping(mixed_analysis):
    tex = to_latex(mixed_analysis)
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert tex.count(rule) == tex.count(r"\begin{tabular}") >= 3
    assert r"my\_sampler (eta\_x=0.5)" in tex
    assert re.search(r"(?<!\\)_", tex) is None  # every underscore escaped
    assert r"$-2.000\ [-2.000, -2.000]$" in tex


def test_json_is_strict_json(mixed_analysis):
    out = to_json(mixed_analysis)
    text = json.dumps(out, allow_nan=False)  # NaN / inf would raise
    back = json.loads(text)
    ddpm = next(c for c in back["curves"] if c["sampler"] == "ddpm")
    assert ddpm["slope"] is None and ddpm["verdict"] == "unresolved"
    mine = next(c for c in back["curves"] if c["sampler"] == "my_sampler")
    assert mine["options"] == {"eta_x": 0.5} and mine["excluded"] == {"diverged": 2}
    assert {s["sampler"] for s in back["speedups"]} >= {"ode-heun"}
    ddim = next(c for c in back["curves"] if c["sampler"] == "ddim")
    assert ddim["slope"] == pytest.approx(-2.0) and ddim["window"] == [8, 64]


def test_bad_input_is_refused():
    good = synthetic("ddim", "kl", [8, 16, 32], lambda T: 1.0 / T)
    with pytest.raises(ValueError, match=r"record 1 lacks the Record keys \['steps'\]"):
        fit_curves([good[0], {k: v for k, v in good[1].items() if k != "steps"}])
    with pytest.raises(ValueError, match="confidence must lie in"):
        fit_curves(good, confidence=1.5)
    with pytest.raises(ValueError, match="n_boot must be an integer"):
        fit_curves(good, n_boot=0)
    with pytest.raises(ValueError, match="level must be a finite number > 0"):
        analyse(good, level=-1.0)
    with pytest.raises(ValueError, match=r"metric_levels\['kl'\] must be"):
        analyse(good, metric_levels={"kl": 0})


def test_a_curve_whose_every_row_failed_is_reported_not_fitted():
    """Every task of a curve failed (e.g. its evaluator refused the metric): the curve is kept,
    with no points and no slope, and its failures are counted."""
    rec = make_record("ddim", "gaussian:d=1", "vp", 8, metric="kl")
    failed = [
        {
            **rec,
            "key": f"f{t}",
            "steps": t,
            "status": "failed",
            "message": "refused",
            **{
                k: None
                for k in (
                    "value",
                    "uncertainty",
                    "evaluator_used",
                    "floor",
                    "exact",
                    "nfe",
                    "t_end",
                    "n_samples",
                    "reference",
                    "note",
                )
            },
        }
        for t in (8, 16)
    ]
    (curve,) = fit_curves(failed)
    assert curve.steps == () and math.isnan(curve.slope) and curve.excluded == (("failed", 2),)
    assert "no slope" in curve.note
