"""Findings, statuses and the rules that turn measured numbers into verdicts.

This is the floor of ``convergence.claims``: every verdict of the report follows from the fields
defined here by the rules written here, never from the words of a sentence.

A **finding** is one measured quantity (a slope in T or d, a ratio, a speed-up, a deviation)
with its 95% CI, the reference it is judged against (a claimed bound, an expected order, a
claimed range, another measurement) and a **status** from one vocabulary (``Status``). Rules:

* **slope** (``slope_finding``): ``rates.slope_status``: inconclusive without a settled window
  of >= 3 points or when the CI half-width exceeds ``rates.width_limit`` (0.25 in slope units, or
  a tenth of |reference| when that is larger), else faster / slower / consistent against the
  reference with tolerance ``TAU`` = 0.1;
* **range** (``range_finding``): within when the CI lies inside [a, b], below when its upper
  end is under a, above when its lower end is over b, inconclusive when it straddles an edge
  (or has no CI);
* **comparison** (``compare``): A better (or worse) than B only when their CIs are separated;
  the same when the CI of the difference lies inside [-tau, tau]; else inconclusive;
* **point validity**: a point with a stored warning (``analysis.point_flags``: reference mass
  off the grid, uncertainty >= 10% of the value, below 10x the floor, non-finite) never enters a
  fit or a ratio; the finding lists it in ``excluded`` with its reasons.

A finding votes on its claim (``supports``) only when it is ``decisive`` and measured in the
claim's regime: a bound is supported by consistent or faster and refuted by slower; a claimed
order by consistent, refuted by faster or slower; a range by within, refuted by below or above;
a comparison by better, refuted by worse or same. Everything else abstains.

The **claim status** (``claim_status``), over the votes of the decisive in-regime findings:

* not tested in the claim's regime: no decisive finding was measured in the paper's regime;
* mixed: at least one vote each way (the claim holds in some settings and fails in others);
* refuted: at least one vote against and none for (a claim is a statement about every setting
  tested, so one decided counterexample refutes it);
* supported: every decisive in-regime finding votes for it;
* inconclusive: otherwise (some decisive findings abstain, none votes against).

The **headline** (``headline``) is the first decisive in-regime finding whose vote agrees with
the claim status (a refuting one for mixed), else the first decisive finding, else the first.
Counts (``counts``) are recounts of the findings' status fields.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from convergence.analysis import CurveFit, PointFlag, point_flags
from convergence.rates import FitStatus, _least_squares, slope_status

NAN = math.nan
TAU = 0.1  # slope tolerance of a consistent verdict (rates.fit_rate's verdict_tol)
Z95 = 1.959963984540054


class Status(str, Enum):
    """The status of a finding: the fit vocabulary of ``rates.FitStatus`` plus the words of
    ranges, comparisons and plain measurements."""

    CONSISTENT = "consistent"
    FASTER = "faster"
    SLOWER = "slower"
    INCONCLUSIVE = "inconclusive"
    UNRESOLVED = "unresolved"
    NOT_MEASURED = "not measured"
    WITHIN = "within"
    BELOW = "below"
    ABOVE = "above"
    BETTER = "better"
    WORSE = "worse"
    SAME = "same"
    MEASURED = "measured"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def of(cls, fit: FitStatus) -> Status:
        return cls.MEASURED if fit is FitStatus.NO_REFERENCE else cls(fit.value)


class Kind(str, Enum):
    """What a finding is judged against (decides how its status votes)."""

    BOUND = "bound"  # a claimed upper bound on the error's slope
    ORDER = "order"  # a claimed or expected order (slope)
    RANGE = "range"  # a claimed range of a ratio
    COMPARISON = "comparison"  # one measurement against another
    CONTEXT = "context"  # a measured quantity that votes on nothing

    def __str__(self) -> str:
        return self.value


class ClaimStatus(str, Enum):
    SUPPORTED = "supported"
    REFUTED = "refuted"
    MIXED = "mixed"
    INCONCLUSIVE = "inconclusive"
    NOT_IN_REGIME = "not tested in the claim's regime"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Excluded:
    """A point left out of a finding's fit or ratio: where, its value and why."""

    at: str
    value: float
    reasons: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {"at": self.at, "value": _json(self.value), "reasons": list(self.reasons)}


@dataclass(frozen=True)
class Finding:
    """One row of a verdict table (module docstring). ``bound`` is a claimed slope or a claimed
    range (a, b); ``expected`` the value theory expects (or the other side of a comparison);
    ``detail`` words generated from the fields (e.g. 'bound loose by 0.50')."""

    what: str
    quantity: str
    measured: float
    lo: float = NAN
    hi: float = NAN
    status: Status = Status.MEASURED
    kind: Kind = Kind.CONTEXT
    bound: float | tuple[float, float] | None = None
    expected: float | None = None
    evaluator: str = "-"
    decisive: bool = False
    in_regime: bool = True
    excluded: tuple[Excluded, ...] = ()
    detail: str = ""

    @property
    def supports(self) -> bool | None:
        """This finding's vote on its claim (module docstring); None: it abstains."""
        if not (self.decisive and self.in_regime):
            return None
        return _VOTES.get(self.kind, {}).get(self.status)

    def measured_text(self) -> str:
        if not math.isfinite(self.measured):
            return "n/a"
        if math.isfinite(self.lo) and math.isfinite(self.hi) and self.hi > self.lo:
            return f"{self.measured:.3g} [{self.lo:.3g}, {self.hi:.3g}]"
        return f"{self.measured:.3g}"

    def bound_text(self) -> str:
        if isinstance(self.bound, tuple):
            a, b = self.bound
            return f">= {a:.3g}x" if math.isinf(b) else f"{a:.3g}-{b:.3g}x"
        return _signed(self.bound)

    def expected_text(self) -> str:
        return _signed(self.expected)

    def verdict_text(self) -> str:
        """The status, with its detail when there is one: 'faster (bound loose by 0.50)'."""
        return f"{self.status.value} ({self.detail})" if self.detail else self.status.value

    def as_json(self) -> dict[str, Any]:
        bound = list(self.bound) if isinstance(self.bound, tuple) else _json(self.bound)
        return {
            "what": self.what,
            "quantity": self.quantity,
            "status": self.status.value,
            "kind": self.kind.value,
            "decisive": self.decisive,
            "in_regime": self.in_regime,
            "supports": self.supports,
            "measured": _json(self.measured),
            "lo": _json(self.lo),
            "hi": _json(self.hi),
            "expected": _json(self.expected),
            "bound": bound,
            "evaluator": self.evaluator,
            "detail": self.detail,
            "excluded": [e.as_json() for e in self.excluded],
        }


_VOTES: dict[Kind, dict[Status, bool]] = {
    Kind.BOUND: {Status.CONSISTENT: True, Status.FASTER: True, Status.SLOWER: False},
    Kind.ORDER: {Status.CONSISTENT: True, Status.FASTER: False, Status.SLOWER: False},
    Kind.RANGE: {Status.WITHIN: True, Status.ABOVE: False, Status.BELOW: False},
    Kind.COMPARISON: {Status.BETTER: True, Status.WORSE: False, Status.SAME: False},
}


def _json(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _signed(v: float | None) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:+.2g}"


# --------------------------------------------------------------------------- builders


def excluded_points(c: CurveFit, axis: str = "T") -> tuple[Excluded, ...]:
    """The flagged points of a curve (``analysis.point_flags``) as ``Excluded`` rows."""
    return tuple(
        Excluded(f"{axis}={t}", e, tuple(str(f) for f in flags)) for t, e, flags in c.flagged()
    )


def slope_finding(
    what: str,
    quantity: str,
    slope: float,
    lo: float,
    hi: float,
    *,
    settled: bool,
    n_points: int,
    bound: float | None = None,
    expected: float | None = None,
    evaluator: str = "-",
    decisive: bool = False,
    in_regime: bool = True,
    excluded: tuple[Excluded, ...] = (),
    local: Sequence[float] = (),
    against_step_size: bool = False,
) -> Finding:
    """A slope judged against ``bound`` (kind BOUND) when given, else ``expected`` (ORDER), by
    ``rates.slope_status`` (the width rule included).

    Slopes are against the step count T, where faster means more negative. A slope against a
    step size h (``against_step_size``; error ~ h^p, faster means larger p) is judged as the slope
    -p against 1/h, so that a bias growing as h -> 0 reads slower, never faster."""
    ref, kind = (bound, Kind.BOUND) if bound is not None else (expected, Kind.ORDER)
    if not math.isfinite(slope):
        status = Status.UNRESOLVED if n_points else Status.NOT_MEASURED
    elif against_step_size:
        flipped = None if ref is None else -ref
        status = Status.of(slope_status((-hi, -lo), settled, n_points, flipped, TAU))
    else:
        status = Status.of(slope_status((lo, hi), settled, n_points, ref, TAU))
    detail = ""
    if status is Status.FASTER and kind is Kind.BOUND:
        detail = f"bound loose by {abs(ref - slope):.2f}"
    elif status is Status.INCONCLUSIVE and math.isfinite(lo) and math.isfinite(hi):
        half = (hi - lo) / 2
        p = [v for v in local if math.isfinite(v)]
        if not settled:
            detail = "window not settled" + (f", last local slope {p[-1]:.2f}" if p else "")
        elif n_points >= 3:
            detail = f"CI half-width {half:.2g} above the limit"
    if ref is None:
        kind = Kind.CONTEXT
    return Finding(
        what,
        quantity,
        slope,
        lo,
        hi,
        status,
        kind,
        bound,
        expected,
        evaluator,
        decisive,
        in_regime,
        excluded,
        detail,
    )


def curve_finding(
    c: CurveFit,
    what: str,
    *,
    bound: float | None = None,
    expected: float | None = None,
    decisive: bool = False,
    in_regime: bool = True,
) -> Finding:
    """A slope-in-T finding from a fitted curve (its flagged points listed as excluded)."""
    n = c.fit.n_points if c.fit is not None else 0
    return slope_finding(
        what,
        "slope in T",
        c.slope,
        c.ci_low,
        c.ci_high,
        settled=c.settled,
        n_points=n,
        bound=bound,
        expected=expected,
        evaluator=c.key.evaluator,
        decisive=decisive,
        in_regime=in_regime,
        excluded=excluded_points(c),
        local=c.local_slopes,
    )


def range_finding(
    what: str,
    quantity: str,
    value: float,
    lo: float,
    hi: float,
    a: float,
    b: float,
    *,
    evaluator: str = "-",
    decisive: bool = True,
    in_regime: bool = True,
    excluded: tuple[Excluded, ...] = (),
    detail: str = "",
) -> Finding:
    """A ratio against a claimed range [a, b] (module docstring)."""
    if not math.isfinite(value):
        status = Status.NOT_MEASURED
    elif not (math.isfinite(lo) and math.isfinite(hi)):
        status = Status.INCONCLUSIVE
    elif hi < a:
        status = Status.BELOW
    elif lo > b:
        status = Status.ABOVE
    elif a <= lo and hi <= b:
        status = Status.WITHIN
    else:
        status = Status.INCONCLUSIVE
    return Finding(
        what,
        quantity,
        value,
        lo,
        hi,
        status,
        Kind.RANGE,
        (a, b),
        None,
        evaluator,
        decisive,
        in_regime,
        excluded,
        detail,
    )


def compare(
    a: tuple[float, float, float],
    b: tuple[float, float, float],
    *,
    tau: float = TAU,
    lower_is_better: bool = True,
) -> Status:
    """A = (value, lo, hi) against B: better / worse only with separated CIs, same when the
    difference's CI (half-widths added in quadrature) lies inside [-tau, tau], else
    inconclusive; not measured when either value is missing."""
    (va, la, ha), (vb, lb, hb) = a, b
    if not (math.isfinite(va) and math.isfinite(vb)):
        return Status.NOT_MEASURED
    la, ha = (la, ha) if math.isfinite(la) and math.isfinite(ha) else (va, va)
    lb, hb = (lb, hb) if math.isfinite(lb) and math.isfinite(hb) else (vb, vb)
    if ha < lb:
        return Status.BETTER if lower_is_better else Status.WORSE
    if la > hb:
        return Status.WORSE if lower_is_better else Status.BETTER
    half = math.hypot((ha - la) / 2, (hb - lb) / 2)
    if abs(va - vb) + half <= tau:
        return Status.SAME
    return Status.INCONCLUSIVE


def comparison_finding(
    what: str,
    quantity: str,
    a: tuple[float, float, float],
    b: tuple[float, float, float],
    *,
    tau: float = TAU,
    lower_is_better: bool = True,
    evaluator: str = "-",
    decisive: bool = True,
    in_regime: bool = True,
    excluded: tuple[Excluded, ...] = (),
) -> Finding:
    """A's value with its CI, judged against B's (``compare``); ``expected`` holds B's value and
    the detail both CIs."""
    status = compare(a, b, tau=tau, lower_is_better=lower_is_better)
    detail = f"against {b[0]:.3g} [{b[1]:.3g}, {b[2]:.3g}]" if math.isfinite(b[0]) else ""
    return Finding(
        what,
        quantity,
        a[0],
        a[1],
        a[2],
        status,
        Kind.COMPARISON,
        None,
        b[0],
        evaluator,
        decisive,
        in_regime,
        excluded,
        detail,
    )


def point_validity(
    value: float, uncertainty: float, floor: float = 0.0, mass_outside: float | None = None
) -> tuple[str, ...]:
    """The reasons a single stored number may not enter a ratio (``analysis.point_flags``)."""
    return tuple(str(f) for f in point_flags(value, uncertainty, floor, mass_outside))


def valid_point(c: CurveFit, t: int) -> tuple[float, Excluded | None]:
    """(value, None) of curve c at T = t when the point is valid, else (NaN, the Excluded row);
    a missing T is (NaN, Excluded with reason 'not measured')."""
    at = f"{c.label}{f' ({c.key.perturbation})' if c.key.perturbation else ''} T={t}"
    if t not in c.steps:
        return NAN, Excluded(at, NAN, (Status.NOT_MEASURED.value,))
    j = c.steps.index(t)
    if c.valid(j):
        return c.errors[j], None
    reasons = tuple(str(f) for f in c.flags[j]) if c.flags else (str(PointFlag.NON_FINITE),)
    return NAN, Excluded(at, c.errors[j], reasons)


def loglog_fit(x: Iterable[float], y: Iterable[float]) -> tuple[float, float, float, float]:
    """(slope, intercept, ci_low, ci_high) of log y = a + slope log x over the points where both
    are finite and positive, 95% Student-t CI (NaN CI for two points)."""
    x_arr, y_arr = list(x), list(y)
    pts = [(u, v) for u, v in zip(x_arr, y_arr, strict=True) if u > 0 and v > 0]
    pts = [(math.log(u), math.log(v)) for u, v in pts if math.isfinite(u) and math.isfinite(v)]
    if len(pts) < 2:
        return NAN, NAN, NAN, NAN
    import numpy as np

    lx, ly = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    slope, intercept, half = _least_squares(lx, ly, None, 0.95)
    if len(pts) < 3:
        half = NAN
    return float(slope), float(intercept), float(slope - half), float(slope + half)


# --------------------------------------------------------------------------- claim level


def claim_status(findings: Sequence[Finding]) -> ClaimStatus:
    """The claim-level rule of the module docstring."""
    decisive = [f for f in findings if f.decisive]
    voting = [f for f in decisive if f.in_regime]
    if decisive and not voting:
        return ClaimStatus.NOT_IN_REGIME
    votes = [f.supports for f in voting]
    yes, no = votes.count(True), votes.count(False)
    if yes and no:
        return ClaimStatus.MIXED
    if no:
        return ClaimStatus.REFUTED
    if voting and yes == len(voting):
        return ClaimStatus.SUPPORTED
    return ClaimStatus.INCONCLUSIVE


def headline(findings: Sequence[Finding], status: ClaimStatus) -> Finding | None:
    """The claim's most decisive finding (module docstring)."""
    want = {ClaimStatus.SUPPORTED: True, ClaimStatus.REFUTED: False, ClaimStatus.MIXED: False}
    if status in want:
        for f in findings:
            if f.supports is want[status]:
                return f
    if status is ClaimStatus.INCONCLUSIVE:  # the first finding that keeps the claim undecided
        for f in findings:
            if f.decisive and f.in_regime and f.supports is None:
                return f
    for f in findings:
        if f.decisive:
            return f
    return findings[0] if findings else None


def counts(findings: Sequence[Finding]) -> dict[str, int]:
    """Status -> number of findings with it (a recount of the status fields)."""
    return dict(sorted(Counter(f.status.value for f in findings).items()))


def tally(findings: Sequence[Finding]) -> dict[str, int]:
    """How the decisive findings voted: support / refute / abstain / outside the regime."""
    decisive = [f for f in findings if f.decisive]
    return {
        "decisive": len(decisive),
        "support": sum(f.supports is True for f in decisive),
        "refute": sum(f.supports is False for f in decisive),
        "abstain": sum(f.supports is None and f.in_regime for f in decisive),
        "outside regime": sum(not f.in_regime for f in decisive),
    }


@dataclass
class ClaimResult:
    """A judged claim: its findings, status by rule, sentences generated from the fields (the
    judge's ``statements``), figures and tables written, and notes (what was not drawn or
    measured, and why)."""

    claim: Any  # records.PaperClaim (typed loosely: records imports the judges)
    findings: list[Finding]
    statements: list[str] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    curves_table: str = ""

    @property
    def status(self) -> ClaimStatus:
        return claim_status(self.findings)

    @property
    def headline(self) -> Finding | None:
        return headline(self.findings, self.status)

    @property
    def counts(self) -> dict[str, int]:
        return counts(self.findings)

    @property
    def verdict(self) -> str:
        """The verdict sentence: status, the vote tally, the headline, then the statements."""
        st, t, h = self.status, tally(self.findings), self.headline
        if not self.findings:
            return "not measured (no stored results)"
        parts = [
            f"{st.value}: {t['support']} of {t['decisive']} decisive findings support the "
            f"claim, {t['refute']} refute it, {t['abstain']} undecided"
        ]
        if t["outside regime"]:
            parts[0] += f", {t['outside regime']} measured outside the paper's regime"
        regime = getattr(self.claim, "regime", None)
        if regime and st is ClaimStatus.NOT_IN_REGIME:
            parts.append(regime)
        if h is not None:
            parts.append(
                f"headline: {h.what}, {h.quantity} {h.measured_text()} "
                f"(bound {h.bound_text()}, expected {h.expected_text()}): {h.verdict_text()}"
            )
        return "; ".join(parts + self.statements)

    def as_json(self) -> dict[str, Any]:
        h = self.headline
        return {
            "id": self.claim.id,
            "number": self.claim.number,
            "title": self.claim.title,
            "paper": self.claim.paper,
            "status": self.status.value,
            "counts": self.counts,
            "votes": tally(self.findings),
            "headline": None if h is None else self.findings.index(h),
            "headline_text": None if h is None else h.what,
            "verdict": self.verdict,
            "statements": self.statements,
            "findings": [f.as_json() for f in self.findings],
            "figures": [str(p) for p in self.figures],
            "tables": [str(p) for p in self.tables],
            "notes": self.notes,
        }
