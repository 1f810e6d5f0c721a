"""Tables of a sweep analysis: Markdown, LaTeX (booktabs) and JSON (``convergence fit``).

Three tables: rates (per curve: window, slope with CI, expected slope, verdicts against the
expected order and the published bounds), NFE-to-error with speed-ups, and plateau / dimension
slopes when the sweep has them. Numbers carry their CIs as "value [low, high]"; values outside the
measured range are one-sided ("> 128"), never extrapolated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

import numpy as np

from convergence.analysis import (
    Analysis,
    CurveFit,
    CurveKey,
    NfeToError,
)


def _fmt(v: float | None, spec: str = "+.3f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return format(v, spec)


def _with_ci(v: float, lo: float, hi: float, spec: str) -> str:
    if v is None or math.isnan(v):
        if lo is not None and math.isfinite(lo) and lo > 0 and hi == math.inf:
            return f"> {_fmt(lo, spec)}"
        if lo == 0 and hi is not None and math.isfinite(hi):
            return f"< {_fmt(hi, spec)}"
        return "-"
    if math.isnan(lo) or math.isnan(hi):
        return _fmt(v, spec)
    return f"{_fmt(v, spec)} [{_fmt(lo, spec)}, {_fmt(hi, spec)}]"


_TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


class _Style:
    """Cell formatting for Markdown (tex=False) or LaTeX (tex=True): ``text`` escapes, ``math``
    typesets a number expression."""

    def __init__(self, tex: bool) -> None:
        self.tex = tex

    def text(self, s: str) -> str:
        if not self.tex:
            return s.replace("|", "\\|")
        return "".join(_TEX_ESCAPES.get(ch, ch) for ch in s)

    def math(self, s: str) -> str:
        if not self.tex or s == "-":
            return s
        return "$" + s.replace("inf", r"\infty").replace(" [", r"\ [") + "$"

    def power(self, exponent: float) -> str:
        return f"$T^{{-{exponent:g}}}$" if self.tex else f"T^-{exponent:g}"


def _where(key: CurveKey, st: _Style) -> list[str]:
    setting = key.setting()
    target = key.target + (f" ({setting})" if setting else "")
    return [st.text(target), st.text(key.process)]


def _rate_rows(a: Analysis, st: _Style) -> list[list[str]]:
    rows = []
    for c in a.curves:
        fit = c.fit
        window = "-" if fit is None else f"{fit.window[0]}-{fit.window[1]}"
        if fit is not None and not c.settled:
            window += " (unsettled)"
        shorts = [b.short_source for b in c.bounds]
        bounds = "; ".join(
            f"{st.power(b.exponent)} "
            f"({st.text(b.short_source if shorts.count(b.short_source) == 1 else b.cited_source)})"
            f": {st.text(b.verdict)}"
            for b in c.bounds
        )
        rows.append(
            [
                *_where(c.key, st),
                st.text(c.label),
                st.text(c.key.metric),
                st.text(c.key.perturbation or "exact score"),
                st.text(c.key.evaluator),
                str(len(c.seeds)),
                st.text(window),
                st.math(_with_ci(c.slope, c.ci_low, c.ci_high, "+.3f")),
                st.math(_fmt(c.expected_slope, "+g")),
                st.text(c.verdict),
                bounds or "-",
            ]
        )
    return rows


def _headers(text: str, pct: str) -> list[str]:
    return [h.strip().replace("PCT", pct) for h in text.split("|")]


def _tables(a: Analysis, st: _Style) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table that has rows."""
    pct = f"{100 * a.confidence:g}%"
    exact = "exact score"
    rates = (
        f"Convergence rates (slope of log error vs log T, {pct} CI)",
        "target | process | sampler | metric | perturbation | evaluator | seeds | window T | "
        "slope [PCT CI] | expected | verdict | claimed bounds",
        _rate_rows(a, st),
    )
    nfe = (
        "Score evaluations (NFE) needed to reach an error level",
        "target | process | metric | perturbation | level | sampler | NFE [CI] | note",
        [
            [
                *_where(r.curve, st),
                st.text(r.curve.metric),
                st.text(r.curve.perturbation or exact),
                st.math(_fmt(r.result.level, ".3g")),
                st.text(r.curve.label),
                st.math(_with_ci(r.result.nfe, r.result.lo, r.result.hi, ".4g")),
                st.text(r.result.reason) or "-",
            ]
            for r in a.nfe
        ],
    )
    speed = (
        "Speed-ups at equal error: NFE of the baseline / NFE of the sampler",
        "target | process | metric | perturbation | level | sampler | baseline | speed-up [CI]",
        [
            [
                *_where(s.group, st),
                st.text(s.group.metric),
                st.text(s.group.perturbation or exact),
                st.math(_fmt(s.level, ".3g")),
                st.text(s.sampler),
                st.text(s.baseline),
                st.math(_with_ci(s.ratio, s.lo, s.hi, ".3g")),
            ]
            for s in a.speedups
        ],
    )
    plateau = (
        "Error plateau against the score error (log-log slope at the largest common T)",
        "target | process | sampler | metric | T | against | perturbations | slope [PCT CI] | "
        "exact-score error",
        [
            [
                *_where(p.group, st),
                st.text(p.group.label),
                st.text(p.group.metric),
                str(p.steps),
                st.text(p.against),
                str(len(p.eps)),
                st.math(_with_ci(p.slope, p.ci_low, p.ci_high, "+.3f")),
                st.math(_fmt(p.exact_error, ".3g")),
            ]
            for p in a.plateaus
        ],
    )
    dims = (
        "Dimension dependence at fixed T (log-log slope of error vs d)",
        "target | process | sampler | metric | perturbation | T | d | slope [PCT CI]",
        [
            [
                *_where(d.group, st),
                st.text(d.group.label),
                st.text(d.group.metric),
                st.text(d.group.perturbation or exact),
                str(d.steps),
                st.text(",".join(str(v) for v in d.dims)),
                st.math(_with_ci(d.slope, d.ci_low, d.ci_high, "+.3f")),
            ]
            for d in a.dimensions
        ],
    )
    return [
        (title, _headers(header, pct), rows)
        for title, header, rows in (rates, nfe, speed, plateau, dims)
        if rows
    ]


def _excluded_notes(a: Analysis) -> list[str]:
    notes = [
        f"no NFE-to-error on {g.target} ({g.process}, {g.metric}"
        f"{', ' + g.perturbation if g.perturbation else ''}): {how}"
        for g, lev, how in a.levels
        if lev is None
    ]
    for c in a.curves:
        where = f"{c.label} on {c.key.target} ({c.key.process}, {c.key.metric})"
        if c.excluded:
            counts = ", ".join(f"{n} {status}" for status, n in c.excluded)
            notes.append(f"{where}: {counts} row(s) excluded")
        if c.note:
            notes.append(f"{where}: {c.note}")
    return notes


def to_markdown(analysis: Analysis) -> str:
    """The analysis as Markdown tables (rates; NFE-to-error; speed-ups; plateaus; dimension
    slopes, each when it has rows), followed by notes on excluded rows."""
    st = _Style(tex=False)
    parts = []
    for title, header, rows in _tables(analysis, st):
        lines = [f"### {title}", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "|".join("---" for _ in header) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        parts.append("\n".join(lines))
    notes = _excluded_notes(analysis)
    if notes:
        parts.append("\n".join(f"- {st.text(n)}" for n in notes))
    return "\n\n".join(parts) + "\n"


def to_latex(analysis: Analysis) -> str:
    """The analysis as LaTeX booktabs tables (needs \\usepackage{booktabs}), one ``table``
    environment per table, text escaped."""
    st = _Style(tex=True)
    parts = []
    for title, header, rows in _tables(analysis, st):
        lines = [
            r"\begin{table}[t]",
            r"\centering\small",
            rf"\caption{{{st.text(title)}}}",
            r"\begin{tabular}{" + "l" * len(header) + "}",
            r"\toprule",
            " & ".join(st.text(h) for h in header) + r" \\",
            r"\midrule",
            *(" & ".join(r) + r" \\" for r in rows),
            r"\bottomrule",
            r"\end{tabular}",
            r"\end{table}",
        ]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _jsonable(v: Any) -> Any:
    if isinstance(v, float | np.floating):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.ndarray):
        return [_jsonable(x) for x in v.tolist()]
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return v


def _curve_json(c: CurveFit) -> dict[str, Any]:
    fit = c.fit
    return {
        **c.key.as_dict(),
        "label": c.label,
        "steps": c.steps,
        "errors": c.errors,
        "std_errors": c.std_errors,
        "floors": c.floors,
        "nfe": c.nfe,
        "n_seeds": c.n_seeds,
        "seeds": c.seeds,
        "local_slopes": c.local_slopes,
        "window": None if fit is None else list(fit.window),
        "settled": c.settled,
        "n_points": None if fit is None else fit.n_points,
        "slope": c.slope,
        "ci_low": c.ci_low,
        "ci_high": c.ci_high,
        "ci_method": c.ci_method,
        "intercept": None if fit is None else fit.intercept,
        "expected_slope": c.expected_slope,
        "verdict": c.verdict,
        "bounds": [
            {
                "exponent": b.exponent,
                "claimed_slope": b.claimed_slope,
                "source": b.source,
                "verdict": b.verdict,
                "loose_by": b.loose_by,
            }
            for b in c.bounds
        ],
        "excluded": dict(c.excluded),
        "eps_score": c.eps_score,
        "eps_jacobi": c.eps_jacobi,
        "note": c.note,
    }


def _nfe_json(r: NfeToError) -> dict[str, Any]:
    return {"level": r.level, "nfe": r.nfe, "lo": r.lo, "hi": r.hi, "reason": r.reason}


def to_json(analysis: Analysis) -> dict[str, Any]:
    """The analysis as a JSON-able dict; NaN and infinite numbers become null (an infinite NFE
    bound means "not reached within the measured range")."""
    a = analysis
    out = {
        "confidence": a.confidence,
        "curves": [_curve_json(c) for c in a.curves],
        "levels": [{**g.as_dict(), "level": lev, "how": how} for g, lev, how in a.levels],
        "nfe_to_error": [
            {**r.curve.as_dict(), "label": r.curve.label, **_nfe_json(r.result)} for r in a.nfe
        ],
        "speedups": [
            {
                **s.group.as_dict(),
                "level": s.level,
                "sampler": s.sampler,
                "baseline": s.baseline,
                "ratio": s.ratio,
                "lo": s.lo,
                "hi": s.hi,
                "nfe": _nfe_json(s.nfe),
                "nfe_baseline": _nfe_json(s.nfe_baseline),
                "reason": s.reason,
            }
            for s in a.speedups
        ],
        "plateaus": [
            {
                **p.group.as_dict(),
                **{f.name: getattr(p, f.name) for f in fields(p) if f.name != "group"},
            }
            for p in a.plateaus
        ],
        "dimensions": [
            {
                **d.group.as_dict(),
                **{f.name: getattr(d, f.name) for f in fields(d) if f.name != "group"},
            }
            for d in a.dimensions
        ],
    }
    return _jsonable(out)
