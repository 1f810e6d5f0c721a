"""Judges of the speed-up claims: Gotta Go Fast against Euler-Maruyama (claim 6) and adaptive
momentum against predictor-corrector (claim 7).

Both papers make their claims for images (d >= 3072). Here the speed-ups are measured on
mixtures in d <= 64, outside that regime: those findings are reported with their status but are
marked out of regime and do not vote. A speed-up is quality-matched: EM's (or PC's) NFE to reach
the other sampler's error, interpolated on EM's valid points only (never extrapolated), divided
by the other sampler's NFE; a ggf point with a stored warning (below the MMD floor) is dropped.

Claim 7's other part, that AMS converges, is in regime: its stationary KL on Gaussian targets
must fall as the step h shrinks (a comparison of a small h against a larger one, separated CIs),
and its slope in h is judged against +2 with the width rule (as a slope in 1/h, so that a bias
that grows as h shrinks reads slower). Beside the sampled chains, the exact law of infinitely
many chains (``stationary.ams_mean_field``, a scalar fixed point for beta and a Lyapunov
equation) takes h down to 0.001, where sampling cannot follow.
"""

from __future__ import annotations

import math

from convergence.analysis import nfe_to_error
from convergence.claims.context import Context, curve_series, floor_lines, metric_label, option
from convergence.claims.findings import (
    Excluded,
    Finding,
    Kind,
    Status,
    comparison_finding,
    curve_finding,
    range_finding,
    slope_finding,
)
from convergence.figures import AXES, Series

NAN = math.nan
Z95 = 1.959963984540054


def _speed_words(findings: list[Finding], label: str, a: float, b: float) -> str:
    """'k of m measured speed-ups within a-bx (...), j not measured', counted from the fields."""
    speed = [f for f in findings if f.kind is Kind.RANGE]
    measured = [f for f in speed if f.status is not Status.NOT_MEASURED]
    within = sum(f.status is Status.WITHIN for f in measured)
    text = f"{label}: {within} of {len(measured)} measured speed-ups within {a:g}-{b:g}x"
    if measured:
        text += " (" + ", ".join(f"{f.measured:.2g}x {f.status.value}" for f in measured) + ")"
    if len(speed) > len(measured):
        text += f", {len(speed) - len(measured)} not measured"
    return text


def judge_ggf(ctx: Context):
    findings, notes = [], []
    metric = ctx.claim.metric
    rej = (ctx.studies.get("ggf_rejections") or {}).get("rows", [])
    for process in ("vp", "ve"):
        em = ctx.curve(process=process, sampler="em", metric=metric)
        ggf = sorted(
            ctx.curves(process=process, sampler="ggf", metric=metric),
            key=lambda c: option(c, "eps_rel", 0),
        )
        if em is None or not ggf:
            continue
        resolved = [t for j, t in enumerate(em.steps) if em.valid(j)]
        notes.append(
            f"{process}: EM's valid points (above 10x the MMD floor): "
            + (f"T = {', '.join(map(str, resolved))}" if resolved else "none")
        )
        gx, gy, ge = [], [], []
        for c in ggf:
            eps_rel = option(c, "eps_rel")
            n_g, e_g = c.nfe[0], c.errors[0]
            gx.append(n_g), gy.append(e_g), ge.append(Z95 * c.std_errors[0])
            frac = [
                r["rejected_fraction"]
                for r in rej
                if r["process"] == process and r["eps_rel"] == eps_rel
            ]
            what = f"ggf eps_rel={eps_rel:g} vs em, {process.upper()}, NFE {n_g:.0f}"
            if frac:
                what += f", {frac[0]:.0%} of steps rejected"
            if not c.valid(0):
                findings.append(
                    range_finding(
                        what,
                        "NFE speed-up at ggf's error",
                        NAN,
                        NAN,
                        NAN,
                        2,
                        10,
                        evaluator=c.key.evaluator,
                        in_regime=False,
                        excluded=(
                            Excluded(
                                f"ggf eps_rel={eps_rel:g}", e_g, tuple(str(x) for x in c.flags[0])
                            ),
                        ),
                    )
                )
                continue
            r = nfe_to_error(em, e_g, n_boot=500)
            findings.append(
                range_finding(
                    what,
                    "NFE speed-up at ggf's error",
                    r.nfe / n_g,
                    r.lo / n_g,
                    r.hi / n_g,
                    2,
                    10,
                    evaluator=c.key.evaluator,
                    in_regime=False,
                    detail="" if math.isfinite(r.nfe) else r.reason,
                )
            )
        others = [
            c
            for name in ("em", "pc", "ddim")
            for c in ctx.curves(process=process, sampler=name, metric=metric)
        ]
        series = [curve_series(c, others, axis="NFE") for c in others]
        tols = [option(c, "eps_rel") for c in ggf]
        series.append(
            Series(f"ggf (eps_rel {max(tols):g} to {min(tols):g})", gx, gy, yerr=ge, style="ggf")
        )
        ctx.plot(
            f"mmd_vs_nfe_{process}",
            series,
            xlabel=AXES["NFE"],
            ylabel=f"{metric_label(metric)} ({process.upper()})",
            hlines=floor_lines(others),
        )
    bias = (ctx.studies.get("ggf_rejections") or {}).get("bias", [])
    for row in bias:
        v, ci = row["variance_ratio"], row["ci"]
        findings.append(
            Finding(
                f"ggf eps_rel={row['eps_rel']:g}, gaussian:d={row['d']}: "
                "tr Cov(output) / tr Cov(q)",
                "variance ratio",
                v,
                v - ci,
                v + ci,
                expected=1.0,
                evaluator="samples vs exact covariance",
                detail="unbiased within the CI" if abs(v - 1) <= ci else f"biased by {v - 1:+.2g}",
            )
        )
    _ggf_bias_plot(ctx, bias)
    words = [_speed_words(findings, "ggf over em", 2, 10)]
    if rej:
        words.append(
            f"rejected steps {min(r['rejected_fraction'] for r in rej):.0%} to "
            f"{max(r['rejected_fraction'] for r in rej):.0%}"
        )
    small = [r for r in bias if r["eps_rel"] == min((b["eps_rel"] for b in bias), default=0)]
    biased = [r for r in small if abs(r["variance_ratio"] - 1) > r["ci"]]
    if biased:
        words.append(
            "ggf is biased at its smallest tolerance in low d: "
            + ", ".join(
                f"d={r['d']}: variance ratio {r['variance_ratio']:.3g} +- {r['ci']:.2g}"
                for r in biased
            )
        )
    return ctx.result(findings, words, notes)


def _ggf_bias_plot(ctx: Context, bias: list[dict]) -> None:
    series = []
    for d in sorted({r["d"] for r in bias}):
        rows = sorted((r for r in bias if r["d"] == d), key=lambda r: r["eps_rel"])
        series.append(
            Series(
                f"ggf, gaussian:d={d}",
                [r["eps_rel"] for r in rows],
                [r["variance_ratio"] for r in rows],
                yerr=[r["ci"] for r in rows],
                style=None,
            )
        )
    ctx.plot(
        "variance_ratio_vs_eps_rel",
        series,
        xlabel=r"$\varepsilon_{\rm rel}$ (= $\varepsilon_{\rm abs}$)",
        ylabel="output / exact variance",
        ylog=False,
        hlines=[(1.0, "exact")],
    )


def judge_ams(ctx: Context):
    findings = []
    metric = ctx.claim.metric
    for sp in ctx.analysis.speedups:
        if {sp.sampler.split(" ")[0], sp.baseline.split(" ")[0]} != {"ams", "pc"}:
            continue
        ratio, lo, hi = sp.ratio, sp.lo, sp.hi
        if sp.sampler.startswith("pc"):
            ratio, lo, hi = 1 / ratio, 1 / hi, (1 / lo if lo > 0 else math.inf)
        findings.append(
            range_finding(
                f"ams vs pc, {sp.group.process.upper()}, {sp.group.target}, "
                f"{metric.upper()}={sp.level:.2g}",
                "NFE speed-up",
                ratio,
                lo,
                hi,
                2,
                5,
                evaluator="samples",
                in_regime=False,
                detail="" if math.isfinite(ratio) else sp.reason,
            )
        )
    for c in ctx.curves(sampler="ams", metric=metric):
        findings.append(
            curve_finding(c, f"ams convergence, {c.key.process.upper()}, {c.key.target}")
        )
    for process in ("ve", "vp"):
        for target in ("gmm:d=2,k=3,seed=0", "gmm:d=64,k=3,seed=0"):
            cs = ctx.curves(process=process, target=target, metric=metric)
            if cs:
                ctx.plot(
                    f"mmd_vs_nfe_{process}_d{target.split('d=')[1].split(',')[0]}",
                    [curve_series(c, cs, axis="NFE") for c in cs],
                    xlabel=AXES["NFE"],
                    ylabel=f"{metric_label(metric)} ({process.upper()}, {target.split(',')[0]})",
                    hlines=floor_lines(cs),
                )
    words = [_speed_words(findings, "ams over pc", 2, 5)]
    study = ctx.studies.get("momentum")
    if study:
        words += _momentum_findings(ctx, study, findings)
    findings.sort(key=lambda f: not f.decisive)
    return ctx.result(findings, words)


def _momentum_findings(ctx: Context, study: dict, findings: list[Finding]) -> list[str]:
    """Stationary bias against h (the AMS convergence part, decisive) and iterations against
    kappa (context), from the ``momentum`` study."""
    words = []
    for row in study.get("bias_slopes", []):
        fit = row.get("kl_small_h", row.get("kl"))
        if not isinstance(fit, dict):
            continue
        value, ci = fit.get("slope", NAN), fit.get("ci")
        lo, hi = (value - ci, value + ci) if isinstance(ci, int | float) else (ci or (NAN, NAN))
        findings.append(
            slope_finding(
                f"{row['method']}, stationary KL vs h (smallest h), kappa={row['kappa']:g}",
                "slope in h",
                value,
                lo,
                hi,
                settled=True,
                n_points=int(fit.get("n_points", 0)),
                expected=2.0,
                evaluator="exact" if row["method"] != "ams" else "samples",
                decisive=row["method"] == "ams",
                against_step_size=True,
            )
        )
    words += _mean_field_findings(study, findings)
    for kappa in sorted({r["kappa"] for r in study.get("bias", []) if r["method"] == "ams"}):
        rows = sorted(
            (r for r in study["bias"] if r["method"] == "ams" and r["kappa"] == kappa),
            key=lambda r: r["h"],
        )
        if len(rows) < 2:
            continue
        small, mid, large = rows[0], rows[1], rows[-1]  # converging: KL falls from mid to small
        findings.append(
            comparison_finding(
                f"ams, stationary KL at h={small['h']:g} against h={mid['h']:g}, kappa={kappa:g}",
                "stationary KL",
                (small["kl"], small["kl"] - small["kl_ci"], small["kl"] + small["kl_ci"]),
                (mid["kl"], mid["kl"] - mid["kl_ci"], mid["kl"] + mid["kl_ci"]),
                evaluator="samples",
                tau=0.0,
            )
        )
        if small["kl"] > mid["kl"]:
            var = small.get("variance_ratio") or [NAN]
            words.append(
                f"ams does not converge as h -> 0 (kappa={kappa:g}): stationary KL "
                f"{mid['kl']:.2g} at h={mid['h']:g} but {small['kl']:.2g} at h={small['h']:g}, "
                f"variance ratio {min(var):.2f} there (largest h {large['h']:g}: "
                f"{large['kl']:.2g})"
            )
    for row in study.get("exponents", []):
        findings.append(
            slope_finding(
                f"{row['method']}, iterations to KL<{row['level']:.2g} vs kappa",
                "slope in kappa",
                row.get("slope", NAN),
                row.get("ci_low", NAN),
                row.get("ci_high", NAN),
                settled=bool(row.get("settled", True)),
                n_points=int(row.get("n_points", 0)),
                expected=row.get("expected_slope"),
                evaluator="exact" if row["method"] != "ams" else "samples",
            )
        )
    _momentum_plots(ctx, study)
    return words


def _mean_field_findings(study: dict, findings: list[Finding]) -> list[str]:
    """AMS's exact stationary law as n -> infinity (``stationary.ams_mean_field``): its KL slope
    in h over the smallest steps against +2 and its KL at the smallest h against h = 0.1 (both
    exact, decisive)."""
    words = []
    for row in study.get("mean_field_slopes", []):
        fit, (h0, h1) = row["kl_small_h"], row["h_range"]
        value, ci = fit.get("slope"), fit.get("ci")
        if value is None or ci is None:
            continue
        findings.append(
            slope_finding(
                f"ams, exact stationary KL (n -> infinity) vs h, h={h0:g}..{h1:g}, "
                f"kappa={row['kappa']:g}",
                "slope in h",
                value,
                value - ci,
                value + ci,
                settled=True,
                n_points=int(fit["n_points"]),
                expected=2.0,
                evaluator="exact",
                decisive=True,
                against_step_size=True,
            )
        )
    rows = study.get("mean_field", [])
    for kappa in sorted({r["kappa"] for r in rows}):
        mine = sorted((r for r in rows if r["kappa"] == kappa), key=lambda r: r["h"])
        small = mine[0]
        mid = min(mine, key=lambda r: abs(math.log(r["h"] / 0.1)))
        findings.append(
            comparison_finding(
                f"ams, exact stationary KL (n -> infinity) at h={small['h']:g} against "
                f"h={mid['h']:g}, kappa={kappa:g}",
                "stationary KL",
                (small["kl"], small["kl"], small["kl"]),
                (mid["kl"], mid["kl"], mid["kl"]),
                evaluator="exact",
                tau=0.0,
            )
        )
        words.append(
            f"exact n -> infinity law (kappa={kappa:g}): KL {mid['kl']:.2g} at h={mid['h']:g}, "
            f"{small['kl']:.2g} at h={small['h']:g} (beta* {small['beta']:.2f}, variance ratio "
            f"{min(small['variance_ratio']):.2f}): AMS with a fixed step does not converge as "
            "h -> 0"
        )
    return words


def _column_series(label: str, rows: list[dict], x: str, y: str, err: str | None = None) -> Series:
    """A Series of study rows: the columns x and y (and 95% half-widths from column ``err``,
    0 where a row has none), the next palette colour."""
    yerr = None if err is None else [r.get(err, 0.0) for r in rows]
    return Series(label, [r[x] for r in rows], [r[y] for r in rows], yerr=yerr, style=None)


def _momentum_plots(ctx: Context, study: dict) -> None:
    series = []
    for method in ("ula", "heavy-ball", "ams"):
        for kappa in sorted({r["kappa"] for r in study.get("bias", [])}):
            rows = sorted(
                (
                    r
                    for r in study["bias"]
                    if r["method"] == method
                    and r["kappa"] == kappa
                    and (method == "ams" or r.get("estimator") != "samples")
                ),
                key=lambda r: r["h"],
            )
            if rows:
                label = f"{method}, $\\kappa$={kappa:g}"
                series.append(_column_series(label, rows, "h", "kl", err="kl_ci"))
    for kappa in sorted({r["kappa"] for r in study.get("mean_field", [])}):
        rows = sorted((r for r in study["mean_field"] if r["kappa"] == kappa), key=lambda r: r["h"])
        label = f"ams, n$\\to\\infty$ (exact), $\\kappa$={kappa:g}"
        series.append(_column_series(label, rows, "h", "kl"))
    ctx.plot(
        "stationary_bias", series, xlabel="step size $h$", ylabel="stationary KL", slopes=[2.0]
    )
    iters = []
    for method in ("ula", "ams"):
        rows = [r for r in study.get("iterations", []) if r["method"] == method]
        levels = sorted({r["level"] for r in rows})
        if rows and levels:
            lev = levels[len(levels) // 2]
            sel = sorted(
                (r for r in rows if r["level"] == lev and r.get("iterations")),
                key=lambda r: r["kappa"],
            )
            iters.append(_column_series(f"{method}, KL<{lev:.2g}", sel, "kappa", "iterations"))
    ctx.plot(
        "iterations_vs_kappa",
        iters,
        xlabel=r"condition number $\kappa$",
        ylabel="iterations to accuracy",
        slopes=[0.5, 1.0],
    )
