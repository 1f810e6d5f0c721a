"""Judges of the rate claims: the accelerated samplers against their baselines (claims 1, 2),
path against marginal KL (claim 3) and every sampler's declared order (claim 9).

Decisive findings: each sampler's TV slope against its claimed bound, and the order gain as a
comparison of the accelerated sampler's slope with its baseline's (separated CIs, or the same
slope within 0.1); claim 2 also compares the two samplers' TV at the largest common T.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from convergence.analysis import CurveFit
from convergence.claims import judge_asymptote as asymptote
from convergence.claims.context import Context, curve_series, metric_label, option
from convergence.claims.findings import (
    Finding,
    Kind,
    Status,
    comparison_finding,
    curve_finding,
    loglog_fit,
    slope_finding,
    valid_point,
)
from convergence.figures import AXES, Series, plot_local_slopes
from convergence.rates import local_slopes

NAN = math.nan
TARGET_NAMES = {
    "gmm:d=1,k=3,seed=0": "1-D mixture",
    "product:d=16,k=3,seed=0": "product:d=16",
    "gmm:d=8,k=3,seed=0": "gmm:d=8",
}


def _setting(c: CurveFit) -> str:
    return f"{TARGET_NAMES.get(c.key.target, c.key.target)}, {option(c, 'spacing', 'uniform')} grid"


def _ci(f: Finding) -> tuple[float, float, float]:
    return f.measured, f.lo, f.hi


def _pair(ctx: Context, fast: str, base: str, metrics: tuple[str, ...]) -> list[Finding]:
    """Per target, metric and grid: each sampler's slope (decisive in the claim's metric, against
    its bound; context against the expected order otherwise) and the order-gain comparison."""
    claim, findings, gains = ctx.claim, [], []
    for target in TARGET_NAMES:
        for metric in metrics:
            for spacing in ("uniform", "li-yan"):
                opts = {} if spacing == "uniform" else {"spacing": spacing}
                got = {}
                for s in (fast, base):
                    c = ctx.curve(target=target, sampler=s, metric=metric, options=opts, t_end=None)
                    if c is None:
                        continue
                    main = metric == claim.metric
                    factor = 2.0 if metric == "kl" else 1.0
                    f = curve_finding(
                        c,
                        f"{s}, {metric.upper()}, {_setting(c)}",
                        bound=claim.bound[s] if main else None,
                        expected=factor * claim.expected[s],
                        decisive=main,
                    )
                    findings.append(f)
                    got[s] = (c, f)
                if metric == claim.metric and len(got) == 2:
                    (c, fa), (_, fb) = got[fast], got[base]
                    gains.append(
                        comparison_finding(
                            f"order gain {fast} over {base}, {metric.upper()}, {_setting(c)}",
                            "slope difference test",
                            _ci(fa),
                            _ci(fb),
                            evaluator=c.key.evaluator,
                        )
                    )
    return gains + findings


def _plots(ctx: Context) -> None:
    claim = ctx.claim
    main = ctx.curves(target="gmm:d=1,k=3,seed=0", metric=claim.metric, t_end=None)
    ctx.plot(
        f"{claim.metric}_vs_T",
        [curve_series(c, main, extra=f" ({option(c, 'spacing', 'uniform')})") for c in main],
        xlabel=AXES["T"],
        ylabel=metric_label(claim.metric) + " (1-D mixture)",
        slopes=sorted({(b, False) for b in claim.bound.values()}),
    )
    local_slope_plot(
        ctx,
        "local_slopes",
        ctx.curves(metric=claim.metric, options={}, t_end=None),
        lambda c: f"{c.key.sampler}, {TARGET_NAMES.get(c.key.target, c.key.target)}",
    )
    scaled_plot(ctx, main, claim.expected)


def local_slope_plot(ctx: Context, name: str, curves: list[CurveFit], label) -> None:
    """Local slopes p_k against the geometric mid-points sqrt(T_k T_k+1), one series per curve
    (``label(curve)``), with the claim's expected orders as guides."""
    ctx.plot(
        f"{ctx.claim.metric}_{name}",
        [
            Series(
                label(c),
                np.sqrt(np.asarray(c.steps[:-1], float) * np.asarray(c.steps[1:], float)),
                local_slopes(c.steps, c.errors),
                style=c.key.sampler,
            )
            for c in curves
            if len(c.steps) >= 2
        ],
        plot=plot_local_slopes,
        expected=sorted(set(ctx.claim.expected.values())),
    )


def scaled_plot(
    ctx: Context,
    curves: list[CurveFit],
    orders: dict[str, float],
    name: str | None = None,
    *,
    power=None,
    label=None,
    metric: str | None = None,
) -> None:
    """T^p x error against T per curve, p = -(its expected slope) (or ``power(curve)``): flat
    where the curve runs at its order (a rising tail is a slower decay, a falling one a faster).
    ``label(curve)`` names a series (default: sampler and grid spacing)."""
    if power is None:

        def power(c: CurveFit) -> float:
            return -orders.get(c.key.sampler, NAN) * (2.0 if c.key.metric == "kl" else 1.0)

    if label is None:

        def label(c: CurveFit) -> str:
            return f"{c.key.sampler} ({option(c, 'spacing', 'uniform')})"

    series = []
    for c in curves:
        p = power(c)
        if not math.isfinite(p):
            continue
        t = np.asarray(c.steps, float)
        text = f"{label(c)}: $T^{{{p:g}}}\\times$error"
        series.append(Series(text, t, np.asarray(c.errors) * t**p, style=c.key.sampler))
    metric = metric or ctx.claim.metric
    ctx.plot(
        name or f"{metric}_scaled_vs_T",
        series,
        xlabel=AXES["T"],
        ylabel=r"$T^{p}\times$" + metric_label(metric),
    )


def _settings_words(findings: list[Finding], sampler: str) -> str:
    """'<sampler>: k of n settings consistent with its bound (statuses ...)' from the fields."""
    mine = [
        f
        for f in findings
        if f.decisive and f.kind is Kind.BOUND and f.what.startswith(sampler + ",")
    ]
    if not mine:
        return f"{sampler}: not measured"
    statuses = sorted({f.status.value for f in mine})
    by = ", ".join(f"{sum(f.status.value == s for f in mine)} {s}" for s in statuses)
    return f"{sampler}: {by} of {len(mine)} settings against its bound"


def _with_asymptote(
    ctx: Context, fast: str, base: str, findings: list[Finding]
) -> tuple[list[Finding], list[str]]:
    """E1's findings first (``judge_asymptote``); when they exist the window fits over T <= 256
    become context, so that the verdict rests on the largest-T local slopes."""
    claim = ctx.claim
    large, words = asymptote.asymptote_findings(ctx, fast, base, claim.bound, claim.expected)
    if not large:
        return findings, []
    return large + [dataclasses.replace(f, decisive=False) for f in findings], words


def _asymptote_plots(ctx: Context, fast: str, base: str) -> None:
    """E1: local slopes against T per grid (one panel each, every t_end) and T^p x TV against T
    at t_end = 1e-3."""
    curves = asymptote.asymptote_curves(ctx, (fast, base), ctx.claim.metric)
    if not curves:
        return
    for spacing in ("uniform", "li-yan"):  # one panel per grid keeps each legend short
        local_slope_plot(
            ctx,
            f"local_slopes_large_T_{spacing}",
            [c for c in curves if option(c, "spacing", "uniform") == spacing],
            lambda c: f"{c.key.sampler}, $t_{{end}}$={c.key.t_end:g}",
        )
    scaled_plot(
        ctx,
        [c for c in curves if c.key.t_end == 1e-3],
        ctx.claim.expected,
        name=f"{ctx.claim.metric}_scaled_vs_T_large_T",
    )


def judge_li_deterministic(ctx: Context):
    findings = _pair(ctx, "li-accel-ddim", "ddim", ("tv", "kl", "w2"))
    findings, large_words = _with_asymptote(ctx, "li-accel-ddim", "ddim", findings)
    _plots(ctx)
    _asymptote_plots(ctx, "li-accel-ddim", "ddim")
    words = [_settings_words(findings, s) for s in ("li-accel-ddim", "ddim")]
    gains = [f for f in findings if f.kind is Kind.COMPARISON]
    words.append(
        f"order gain: {sum(f.status is Status.BETTER for f in gains if f.decisive)} of "
        f"{sum(f.decisive for f in gains)} decisive settings with separated CIs"
    )
    return ctx.result(findings, words + large_words)


def judge_li_stochastic(ctx: Context):
    findings = _pair(ctx, "li-accel-ddpm", "ddpm", ("tv", "kl"))
    findings, large_words = _with_asymptote(ctx, "li-accel-ddpm", "ddpm", findings)
    _asymptote_plots(ctx, "li-accel-ddpm", "ddpm")
    large_words += asymptote.constant_ratio_words(
        asymptote.asymptote_curves(ctx, ("li-accel-ddpm", "ddpm"), "tv"), "li-accel-ddpm", "ddpm"
    )
    words = [_settings_words(findings, s) for s in ("li-accel-ddpm", "ddpm")]
    fast = ctx.curve(
        target="gmm:d=1,k=3,seed=0", sampler="li-accel-ddpm", metric="tv", options={}, t_end=None
    )
    base = ctx.curve(
        target="gmm:d=1,k=3,seed=0", sampler="ddpm", metric="tv", options={}, t_end=None
    )
    if fast is not None and base is not None:
        ratios, excluded = [], []
        for t in sorted(set(fast.steps) & set(base.steps)):
            (a, xa), (b, xb) = valid_point(fast, t), valid_point(base, t)
            excluded += [x for x in (xa, xb) if x is not None]
            if math.isfinite(a) and math.isfinite(b):
                ratios.append((t, a / b))
        if ratios:
            t_last, r_last = ratios[-1]
            lo, hi = min(r for _, r in ratios), max(r for _, r in ratios)
            j, k = fast.steps.index(t_last), base.steps.index(t_last)
            findings.insert(
                0,
                comparison_finding(
                    f"TV of li-accel-ddpm against ddpm at T={t_last}, 1-D mixture, uniform grid",
                    "TV",
                    (
                        fast.errors[j],
                        fast.errors[j] - fast.uncertainties[j],
                        fast.errors[j] + fast.uncertainties[j],
                    ),
                    (
                        base.errors[k],
                        base.errors[k] - base.uncertainties[k],
                        base.errors[k] + base.uncertainties[k],
                    ),
                    evaluator=fast.key.evaluator,
                    excluded=tuple(excluded),
                ),
            )
            words.append(
                f"TV ratio li-accel-ddpm / ddpm {lo:.3g} to {hi:.3g} over T = {ratios[0][0]} to "
                f"{t_last} (valid points): li-accel-ddpm is {r_last:.2g}x ddpm's error at the "
                "largest T, a constant factor and no order gain"
                if hi / lo < 1.1 and r_last > 1
                else f"TV ratio li-accel-ddpm / ddpm {lo:.3g} to {hi:.3g} over T = "
                f"{ratios[0][0]} to {t_last}"
            )
    _plots(ctx)
    return ctx.result(findings, words + large_words)


def judge_path_kl(ctx: Context):
    findings, series = [], []
    for target in ("gaussian:d=1", "gaussian:d=4"):
        for s in ("ddpm", "li-accel-ddpm", "em"):
            for metric, exp in (("path-kl", -1.0), ("kl", -2.0)):
                c = ctx.curve(target=target, sampler=s, metric=metric)
                if c is None:
                    continue
                findings.append(
                    curve_finding(c, f"{s}, {metric} ({target})", expected=exp, decisive=True)
                )
                if target == "gaussian:d=1":
                    series.append(c)
    ctx.plot(
        "path_vs_marginal_kl",
        [
            curve_series(c, series, extra=" path" if c.key.metric == "path-kl" else " marginal")
            for c in series
        ],
        xlabel=AXES["T"],
        ylabel="KL (gaussian:d=1)",
        slopes=[-1.0, -2.0],
    )
    scaled_plot(
        ctx,
        series,
        {},
        "kl_scaled_vs_T",
        power=lambda c: 1.0 if c.key.metric == "path-kl" else 2.0,
        label=lambda c: f"{c.key.sampler} {'path' if c.key.metric == 'path-kl' else 'marginal'}",
        metric="kl",
    )
    path = [f for f in findings if f.what.split(", ")[1].startswith("path-kl")]
    marg = [f for f in findings if f not in path]
    words = []
    if path and marg:
        words.append(
            f"path-space KL slopes {min(f.measured for f in path):.2f} to "
            f"{max(f.measured for f in path):.2f} (expected -1), marginal KL "
            f"{min(f.measured for f in marg):.2f} to {max(f.measured for f in marg):.2f} "
            "(expected -2): TV <= sqrt(path KL / 2) can only give T^-1/2"
        )
    return ctx.result(findings, words)


def _declared_power(c: CurveFit) -> float:
    """p of T^p x error for a curve at its sampler's declared weak order (2p for KL)."""
    from convergence.samplers import get_spec

    p = get_spec(c.key.sampler).expected_order
    return NAN if p is None else p * (2.0 if c.key.metric == "kl" else 1.0)


def judge_orders(ctx: Context):
    from convergence.samplers import get_spec

    findings = []
    sym = (ctx.studies.get("symbolic") or {}).get("rows", [])
    for c in ctx.analysis.curves:
        p = get_spec(c.key.sampler).expected_order
        if p is None:
            continue
        factor = 2.0 if c.key.metric == "kl" else 1.0
        findings.append(
            curve_finding(
                c,
                f"{c.key.sampler}, {c.key.metric.upper()}, {c.key.target}",
                expected=-factor * p,
                decisive=True,
            )
        )
    for metric in ("w2", "kl"):
        cs = ctx.curves(target="gaussian:d=1", metric=metric)
        series = [curve_series(c, cs) for c in cs]
        for row in sym:
            if row["metric"] != metric:
                continue
            c = ctx.curve(target="gaussian:d=1", sampler=row["sampler"], metric=metric)
            if c is None:
                continue
            t = np.asarray(c.steps, float)
            pred = row["constant"] * t ** -row["order"]
            first = not any(x.kind == "dashed" for x in series)
            label = r"sympy $CT^{-p}$ (dashed)" if first else ""
            series.append(Series(label, t, pred, kind="dashed", style=row["sampler"]))
            j = len(c.steps) - 1
            findings.append(
                Finding(
                    f"{row['sampler']}, {metric.upper()}: exact / sympy C T^-p at T={c.steps[j]}",
                    "ratio",
                    c.errors[j] / pred[j],
                    expected=1.0,
                    evaluator="gaussian + analytic.symbolic",
                    detail=f"off by {c.errors[j] / pred[j] - 1:+.2%}",
                )
            )
        ctx.plot(
            f"{metric}_vs_T_gaussian_d1",
            series,
            xlabel=AXES["T"],
            ylabel=metric_label(metric) + " (gaussian:d=1)",
            slopes=[-1.0, -2.0] if metric == "w2" else [-2.0, -4.0],
        )
        scaled_plot(
            ctx,
            cs,
            {},
            f"{metric}_scaled_vs_T_gaussian_d1",
            power=_declared_power,
            label=lambda c: c.key.sampler,
            metric=metric,
        )
    rk = (ctx.studies.get("rk45_tolerance") or {}).get("rows", [])
    if rk:
        x, y = [r["rtol"] for r in rk], [r["w2_upper"] for r in rk]
        slope, a, lo, hi = loglog_fit(x, y)
        findings.append(
            slope_finding(
                "ode-rk45, pathwise W2 bound vs rtol (=atol), gaussian:d=2",
                "slope in rtol",
                slope,
                lo,
                hi,
                settled=True,
                n_points=len(x),
                expected=1.0,
                evaluator="exact flow coupling",
            )
        )
        ctx.plot(
            "rk45_error_vs_tolerance",
            [
                Series(
                    f"ode-rk45: slope {slope:.2f}",
                    x,
                    y,
                    style="ode-rk45",
                    fit=(slope, a, min(x), max(x)),
                )
            ],
            xlabel="rtol = atol",
            ylabel="$W_2$ upper bound (coupling)",
            slopes=[1.0],
        )
    rates = [f for f in findings if f.decisive]
    words = [
        f"{sum(f.status is Status.CONSISTENT for f in rates)} of {len(rates)} "
        "sampler/metric/target curves at their declared order"
    ]
    off = [f for f in rates if f.status is not Status.CONSISTENT]
    if off:
        words.append("not at it: " + "; ".join(f"{f.what} ({f.verdict_text()})" for f in off))
    sym_rows = [f for f in findings if f.quantity == "ratio"]
    if sym_rows:
        words.append(
            "sympy leading terms match the exact errors within "
            f"{max(abs(f.measured - 1) for f in sym_rows):.2%} at the largest T"
        )
    return ctx.result(findings, words)
