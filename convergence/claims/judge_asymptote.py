"""Claims 1 and 2 at large T (decisive experiment E1): where the local slopes settle.

The curves are the ``claim{1,2}_asymptote_t*`` sweeps: the 1-D mixture on the grid evaluator
(exact TV and KL, no noise floor), one curve per sampler, grid (uniform, Li-Yan) and end time
t_end. A claim about the order of a sampler is a statement about T -> infinity, so the decisive
number is the slope at the largest T measured, not a fit over a window that still bends:

* **largest-T local slope** p_K = log(e_K / e_{K-1}) / log(T_K / T_{K-1}) over the last two valid
  points. Its half-width allows for the drift still to come: a log factor e ~ C T^-p (ln T)^k
  moves the local slope by k / ln T, i.e. by the last change |p_K - p_{K-1}| times about
  ln T_K / ln 2 between T_K and infinity, so

      half-width = |p_K - p_{K-1}| ln(T_K) / ln(T_K / T_{K-1})  (+ the points' own uncertainty),

  a bound for that model and generous for a power-law correction a T^-q (whose remaining drift
  is below the last change when q ln 2 > 1/2). The status follows the shared rules: against the
  claimed bound, inconclusive when the half-width exceeds the width limit.
* **order gain**: the accelerated sampler's largest-T local slope against its baseline's
  (separated intervals), per grid and t_end.
* context (no vote): least-squares fits of log e = a - p log T and of
  log e = a - p log T + k log log T over the last WINDOW valid points (95% Student-t CIs), and the
  constant C = T^p e at the largest T against t_end (p the expected order).

Points with a stored warning are dropped by ``CurveFit.valid``; a series that stops early (a
failed run, e.g. a kernel too narrow for the grid's node limit) says where and why.
"""

from __future__ import annotations

import json
import math

import numpy as np
from scipy import stats

from convergence.analysis import CurveFit
from convergence.claims.context import Context, option
from convergence.claims.findings import Finding, comparison_finding, slope_finding

TARGET = "gmm:d=1,k=3,seed=0"
WINDOW = 5  # points of the context fits


def asymptote_curves(ctx: Context, samplers: tuple[str, ...], metric: str) -> list[CurveFit]:
    """E1's curves: the 1-D mixture on the grid with an explicit t_end, in ``samplers``."""
    return sorted(
        (
            c
            for c in ctx.curves(target=TARGET, metric=metric, evaluator="grid")
            if c.key.t_end is not None and c.key.sampler in samplers
        ),
        key=lambda c: (c.key.sampler, option(c, "spacing", "uniform"), c.key.t_end),
    )


def _valid(c: CurveFit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    j = [i for i in range(len(c.steps)) if c.valid(i)]
    t = np.asarray([c.steps[i] for i in j], float)
    e = np.asarray([c.errors[i] for i in j], float)
    u = np.asarray([c.uncertainties[i] if c.uncertainties else 0.0 for i in j], float)
    return t, e, u


def tail_slope(c: CurveFit) -> tuple[float, float, list[float], tuple[int, int]]:
    """(p_K, half-width, local slopes, (T_{K-1}, T_K)) over the valid points (module docstring);
    NaN with fewer than three valid points."""
    t, e, u = _valid(c)
    if t.size < 3:
        return math.nan, math.nan, [], (0, 0)
    local = np.diff(np.log(e)) / np.diff(np.log(t))
    p, prev = float(local[-1]), float(local[-2])
    span = math.log(t[-1] / t[-2])
    drift = abs(p - prev) * math.log(t[-1]) / span
    noise = (u[-1] / e[-1] + u[-2] / e[-2]) / span
    return p, drift + noise, local.tolist(), (int(t[-2]), int(t[-1]))


def power_fits(c: CurveFit) -> dict:
    """Least-squares fits over the last WINDOW valid points: 'power' (p, CI) of e = C T^-p and
    'log' (p, CI, k, CI) of e = C T^-p (ln T)^k, as slopes -p in T (95% Student-t)."""
    t, e, _ = _valid(c)
    t, e = t[-WINDOW:], e[-WINDOW:]
    out: dict = {"window": (int(t[0]), int(t[-1])) if t.size else (0, 0)}
    if t.size < 3:
        return out
    y = np.log(e)
    for name, columns in (
        ("power", [np.ones_like(t), np.log(t)]),
        ("log", [np.ones_like(t), np.log(t), np.log(np.log(t))]),
    ):
        X = np.stack(columns, axis=1)
        dof = t.size - X.shape[1]
        if dof < 1:
            continue
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        resid = y - X @ coef
        s2 = float(resid @ resid) / dof
        cov = s2 * np.linalg.inv(X.T @ X)
        q = float(stats.t.ppf(0.975, dof))
        half = q * np.sqrt(np.diag(cov))
        out[name] = {
            "slope": float(coef[1]),
            "ci": (float(coef[1] - half[1]), float(coef[1] + half[1])),
        }
        if name == "log":
            out[name]["k"] = float(coef[2])
            out[name]["k_ci"] = (float(coef[2] - half[2]), float(coef[2] + half[2]))
    return out


def _setting(c: CurveFit) -> str:
    return f"{option(c, 'spacing', 'uniform')} grid, t_end={c.key.t_end:g}"


def _stopped(ctx: Context, c: CurveFit) -> str | None:
    """'stops at T=...: n runs failed (reason)' when the series has failed runs."""
    failed = [
        r
        for r in ctx.records
        if r["status"] != "ok"
        and r["sampler"] == c.key.sampler
        and r["target"] == TARGET
        and r["metric"] == c.key.metric
        and r.get("t_end_requested") == c.key.t_end
        and json.loads(r["options"]).get("spacing", "uniform") == option(c, "spacing", "uniform")
    ]
    if not failed:
        return None
    reason = failed[0]["message"].split(";")[0][:90]
    first = min(r["steps"] for r in failed)
    return (
        f"{c.key.sampler} ({_setting(c)}) stops at T={max(c.steps)}: {len(failed)} runs from "
        f"T={first} failed ({reason})"
    )


def asymptote_findings(
    ctx: Context, fast: str, base: str, bound: dict[str, float], expected: dict[str, float]
) -> tuple[list[Finding], list[str]]:
    """E1's decisive and context findings for the pair (fast, base), and their sentences."""
    findings, context, words = [], [], []
    tails: dict[tuple, tuple[float, float, float]] = {}
    curves = asymptote_curves(ctx, (fast, base), ctx.claim.metric)
    for c in curves:
        s = c.key.sampler
        p, half, local, (t0, t1) = tail_slope(c)
        findings.append(
            slope_finding(
                f"{s}, TV, largest-T local slope (T={t0}->{t1}), {_setting(c)}",
                "local slope in T",
                p,
                p - half,
                p + half,
                settled=True,
                n_points=len(local) + 1,
                bound=bound[s],
                evaluator="grid",
                decisive=True,
                local=local,
            )
        )
        tails[(s, option(c, "spacing", "uniform"), c.key.t_end)] = (p, p - half, p + half)
        fits = power_fits(c)
        w0, w1 = fits["window"]
        if "power" in fits:
            context.append(
                slope_finding(
                    f"{s}, TV, fit C T^-p over T={w0}..{w1}, {_setting(c)}",
                    "slope in T",
                    fits["power"]["slope"],
                    *fits["power"]["ci"],
                    settled=True,
                    n_points=WINDOW,
                    expected=expected[s],
                    evaluator="grid",
                )
            )
        if "log" in fits:
            lg = fits["log"]
            f = slope_finding(
                f"{s}, TV, fit C T^-p (ln T)^k over T={w0}..{w1}, {_setting(c)}; "
                f"k = {lg['k']:.2f} [{lg['k_ci'][0]:.2f}, {lg['k_ci'][1]:.2f}]",
                "slope in T",
                lg["slope"],
                *lg["ci"],
                settled=True,
                n_points=WINDOW,
                expected=expected[s],
                evaluator="grid",
            )
            context.append(f)
        stop = _stopped(ctx, c)
        if stop:
            words.append(stop)
    for (s, spacing, t_end), ci in sorted(tails.items()):
        if s != fast or (base, spacing, t_end) not in tails:
            continue
        findings.append(
            comparison_finding(
                f"order gain {fast} over {base}, TV, largest-T local slopes, {spacing} grid, "
                f"t_end={t_end:g}",
                "local slope difference test",
                ci,
                tails[(base, spacing, t_end)],
                evaluator="grid",
            )
        )
    words += _constant_words(curves, expected)
    return findings + context, words


def _constant_words(curves: list[CurveFit], expected: dict[str, float]) -> list[str]:
    """C = T^p e at the largest valid T against t_end, per sampler and grid (p = -expected)."""
    words = []
    groups: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
    for c in curves:
        t, e, _ = _valid(c)
        if t.size:
            p = -expected[c.key.sampler]
            groups.setdefault((c.key.sampler, option(c, "spacing", "uniform")), []).append(
                (c.key.t_end, float(e[-1] * t[-1] ** p), int(t[-1]))
            )
    for (s, spacing), rows in sorted(groups.items()):
        rows.sort()
        p = -expected[s]
        parts = ", ".join(f"{C:.3g} (t_end {te:g}, T={T})" for te, C, T in rows)
        text = f"{s} ({spacing}): C = T^{p:g} x TV at the largest T: {parts}"
        if len(rows) >= 2:
            slope = np.polyfit(np.log([r[0] for r in rows]), np.log([r[1] for r in rows]), 1)[0]
            text += f"; C ~ t_end^{slope:.2f}"
        words.append(text)
    return words


def constant_ratio_words(curves: list[CurveFit], fast: str, base: str) -> list[str]:
    """fast's TV over base's at their largest common valid T, per grid and t_end."""
    by = {(c.key.sampler, option(c, "spacing", "uniform"), c.key.t_end): c for c in curves}
    words = []
    for (s, spacing, t_end), c in sorted(by.items()):
        other = by.get((base, spacing, t_end))
        if s != fast or other is None:
            continue
        ta, ea, _ = _valid(c)
        tb, eb, _ = _valid(other)
        common = sorted(set(ta.tolist()) & set(tb.tolist()))
        if not common:
            continue
        t = common[-1]
        ratio = float(ea[ta.tolist().index(t)] / eb[tb.tolist().index(t)])
        words.append(
            f"{fast} / {base} TV at T={int(t)} ({spacing} grid, t_end={t_end:g}): {ratio:.3g}"
        )
    return words
