"""What a judge sees: a claim's stored records (fitted once), its stored studies, the output
folder, and helpers to draw its figures. A judge reads; it never runs a sampler."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from convergence.analysis import (
    DETERMINISTIC_EVALUATORS,
    FLOOR_FACTOR,
    Analysis,
    CurveFit,
    analyse,
)
from convergence.claims.findings import Z95, ClaimResult, Finding
from convergence.figures import METRIC_LABELS, Series, _curve_series, _legend_label, plot_series


@dataclass
class Context:
    """A claim, its stored records and studies, the output folder and what was drawn."""

    claim: Any  # records.PaperClaim
    records: list[dict]
    studies: dict[str, Any]
    out: Path
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. a figure that could not be drawn
    draw: bool = True  # False: verdicts and tables only (no figure files written)

    @cached_property
    def analysis(self) -> Analysis:
        return analyse(self.records, n_boot=1000)

    def curves(self, **want: Any) -> list[CurveFit]:
        """Fitted curves whose key fields equal ``want`` (``options`` as a dict subset; an empty
        dict asks for no options)."""
        out = []
        for c in self.analysis.curves:
            ok = True
            for k, v in want.items():
                if k == "options":
                    opts = json.loads(c.key.options)
                    ok = ok and all(opts.get(a) == b for a, b in v.items()) and bool(v or not opts)
                else:
                    ok = ok and getattr(c.key, k) == v
            if ok and len(c.steps) >= 1:
                out.append(c)
        return out

    def curve(self, **want: Any) -> CurveFit | None:
        found = self.curves(**want)
        return found[0] if found else None

    def stem(self, name: str) -> Path:
        return self.out / "figures" / f"claim{self.claim.number}_{name}"

    def plot(self, name: str, series: list[Series], *, plot=plot_series, **kw: Any) -> None:
        """Draw ``series`` with ``plot`` to the claim's figure ``name`` (a note instead when
        nothing is drawable)."""
        if not series or not self.draw:
            return
        try:
            self.figures += plot(series, self.stem(name), **kw)
        except ValueError as exc:
            self.notes.append(f"figure {name} not drawn: {exc}")

    def result(self, findings: list[Finding], statements=(), notes=()) -> ClaimResult:
        from convergence.tables import to_markdown

        table = to_markdown(self.analysis) if self.analysis.curves else ""
        return ClaimResult(
            self.claim, findings, list(statements), self.figures, [], [*notes, *self.notes], table
        )


def curve_series(c: CurveFit, others: list[CurveFit], axis: str = "T", extra: str = "") -> Series:
    """The curve as a Series labelled '<label>: slope s [lo, hi]'; with ``extra`` the label is
    '<sampler><extra>' instead of the sampler's options."""
    label = _legend_label(c, others)
    if extra:
        label = f"{c.key.sampler}{extra}:{label.split(':', 1)[1]}"
    return _curve_series(c, axis, Z95, label)


def floor_lines(curves: list[CurveFit]) -> list[tuple[float, str]]:
    """The reference line of a figure of sample-metric curves: 10x the median positive noise
    floor of the curves measured by a statistical evaluator (the level below which no point is
    fitted), or none when every curve is measured exactly (an exact evaluator's floor is its
    round-off level, not a noise floor)."""
    floors = [
        v
        for c in curves
        if c.key.evaluator not in DETERMINISTIC_EVALUATORS
        for v in c.floors
        if math.isfinite(v) and v > 0
    ]
    if not floors:
        return []
    return [(FLOOR_FACTOR * float(np.median(floors)), f"{FLOOR_FACTOR:g}x noise floor")]


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def option(c: CurveFit, name: str, default: Any = None) -> Any:
    return json.loads(c.key.options).get(name, default)
