"""Rate analysis of sweep records: slopes with CIs, verdicts, NFE-to-error, speed-ups.

Input: the Record dicts of a sweep store (issue 5 shared design; ``convergence.sweep.store``).
Only rows with status "ok" enter a fit; the others are counted per curve and reported.

Curves. Records are grouped into one curve per (target, process, sampler, options, perturbation,
metric, evaluator_used, init, t_end_requested, final_noise, denoise, noise, n) and, within a curve,
into one point per step count T. ``n`` (samples / trajectories) is part of the key so that a sweep
over n never averages different sample sizes together.

A point's error is the mean over its seeds, e(T) = (1/m) sum_s e_s(T), with standard error
se(T) = sqrt(sum_s se_s(T)^2) / m, where se_s is the standard error ``convergence rate`` weights a
point by (``experiment._standard_error``: 95% half-width / 1.96 for logdet and coupled, the noise
floor for samples, 0 for exact evaluators), and floor(T) the mean of the seeds' floors. Exact
evaluators (gaussian, grid, tensor) ignore the seed: there the seeds' median is used (equal to
the common value, bit for bit) and the seeds are not treated as replicates. A single-seed curve
is exactly the point list ``measure_rate`` fits, so ``fit_curves`` reproduces ``convergence rate``
to the last bit.

Slope (THEORY.md 2.4): ``rates.fit_rate`` on (T, e, se, floor) chooses the asymptotic window and
fits log e = a + slope log T there. Its CI is the regression CI unless the evaluator is
statistical AND the curve has >= 2 seeds: then the CI is the percentile bootstrap over seeds
(resample the seeds with replacement n_boot times, recompute the mean curve, refit the slope by
the same weighted least squares on the same window points, take the (1 -+ confidence)/2
quantiles of the replicate slopes). With m seeds there are at most C(2m-1, m) distinct
replicates (10 for m = 3), so a bootstrap CI from few seeds is coarse.

Verdicts. One vocabulary (``rates.FitStatus``), one rule (``rates.slope_status``), applied to
the CI against the expected slope E of the sampler's order and against each claimed bound
e <= C T^-beta of the sampler's spec in this metric (reference c = -beta, tolerance tau =
``bound_tol``, default 0.1 as ``fit_rate``'s verdict_tol):

* "inconclusive"  if the window is not settled, n < 3 or the CI is wider than the width rule;
* "faster"        if hi < c - tau: the bound is loose by X = c - s in the exponent;
* "slower"        if lo > c + tau: the error decays slower than promised, the bound is violated;
* "consistent"    otherwise (the CI meets [c - tau, c + tau]).

With ``bound_tol=0`` the rule is exactly "consistent iff the CI contains c". The tolerance is
there because exact evaluators give CIs of width ~1e-8, so a pre-asymptotic drift of 0.02 in the
slope would otherwise be called a violation.

NFE-to-error (``nfe_to_error``) and speed-ups (``speedups``): see their docstrings. Plateaus and
dimension slopes (``fit_plateaus``, ``fit_dimensions``): least squares in log-log with a
Student-t CI (``rates._least_squares`` without weights).

Outputs: ``convergence.tables`` (Markdown, LaTeX booktabs, JSON with NaN -> null).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from itertools import combinations
from typing import Any

import numpy as np
from scipy import stats

from convergence.evaluators import ErrorEstimate
from convergence.experiment import _standard_error
from convergence.rates import (
    FitStatus,
    RateFit,
    UnresolvedRateError,
    _least_squares,
    _valid_mask,
    fit_rate,
    local_slopes,
    slope_status,
)

DETERMINISTIC_EVALUATORS = ("gaussian", "grid", "tensor")
VERDICT_TOL = 0.1  # fit_rate's default verdict_tol
FLOOR_FACTOR = 10.0  # a point below FLOOR_FACTOR x its floor is unresolved (as in fit_rate)
REL_UNCERTAINTY = 0.1  # a point whose uncertainty is >= this fraction of its value is flagged
MASS_LIMIT = 1e-3  # reference mass off a grid above which a grid value is flagged (grid.UNRESOLVED)


class PointFlag(str, Enum):
    """Why a measured point may not enter a fit, a ratio or a headline (``point_flags``)."""

    NON_FINITE = "non-finite or non-positive value"
    OFF_GRID = "reference mass off the grid"
    BELOW_FLOOR = "below 10x the evaluator's floor"
    UNCERTAIN = "uncertainty >= 10% of the value"

    def __str__(self) -> str:
        return self.value


def point_flags(
    value: float, uncertainty: float, floor: float, mass_outside: float | None
) -> tuple[PointFlag, ...]:
    """The stored warnings of one measured point, from its structured fields only:

    * NON_FINITE  value not finite or <= 0;
    * OFF_GRID    mass_outside > MASS_LIMIT (the grid evaluator lost part of the reference);
    * BELOW_FLOOR value < FLOOR_FACTOR x floor (the estimator cannot resolve it);
    * UNCERTAIN   uncertainty >= REL_UNCERTAINTY x value (the stored error bar: a refinement
      change, a 95% half-width or a noise floor).

    An empty tuple means the point is valid. A flagged point never enters a fit or a ratio."""
    if not (math.isfinite(value) and value > 0):
        return (PointFlag.NON_FINITE,)
    out = []
    if mass_outside is not None and math.isfinite(mass_outside) and mass_outside > MASS_LIMIT:
        out.append(PointFlag.OFF_GRID)
    if math.isfinite(floor) and value < FLOOR_FACTOR * floor:
        out.append(PointFlag.BELOW_FLOOR)
    if not math.isfinite(uncertainty) or uncertainty >= REL_UNCERTAINTY * value:
        out.append(PointFlag.UNCERTAIN)
    return tuple(out)


_REQUIRED = tuple(
    "target dim process sampler options steps perturbation metric seed n init t_end_requested "
    "final_noise denoise noise status value uncertainty evaluator_used floor nfe eps_score "
    "eps_jacobi".split()
)


# --------------------------------------------------------------------------- curve keys


@dataclass(frozen=True)
class CurveKey:
    """What identifies one error curve e(T) of a sweep (module docstring)."""

    target: str
    process: str
    sampler: str
    options: str  # canonical JSON of the sampler options
    perturbation: str | None
    metric: str
    evaluator: str  # the evaluator used ("-" when no row is ok)
    init: str
    t_end: float | None  # requested t_end (None: the process default)
    final_noise: bool
    denoise: bool
    noise: str
    n: int
    dim: int = field(default=0, compare=False)

    @property
    def label(self) -> str:
        """The sampler name with its non-default options, e.g. 'pc (snr=0.16)'."""
        opts = json.loads(self.options)
        if not opts:
            return self.sampler
        return f"{self.sampler} ({', '.join(f'{k}={v}' for k, v in opts.items())})"

    def setting(self) -> str:
        """Non-default run settings as text ('' for exact init, default t_end, no extras)."""
        parts = []
        if self.init != "exact":
            parts.append(f"init={self.init}")
        if self.t_end is not None:
            parts.append(f"t_end={self.t_end:g}")
        if self.final_noise:
            parts.append("final_noise")
        if self.denoise:
            parts.append("denoise")
        if self.noise != "independent":
            parts.append(f"noise={self.noise}")
        return ", ".join(parts)

    def sort_key(self) -> tuple:
        """Order of tables and figures: target, process, metric, perturbation, sampler, ...
        (None before any value)."""
        names = ("target", "process", "metric", "perturbation", "sampler", "options", "evaluator")
        rest = [f.name for f in fields(self) if f.name not in names]
        return tuple(
            (getattr(self, n) is not None, str(getattr(self, n) or "")) for n in (*names, *rest)
        )

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["options"] = json.loads(self.options)
        return out


def _nan_to_none(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def _key_of(rec: Mapping[str, Any], evaluator: str) -> CurveKey:
    options = rec["options"]
    if isinstance(options, str):
        options = json.loads(options)
    if not isinstance(options, Mapping):
        raise ValueError(f"record options must be a dict or JSON text, got {options!r}")
    t_end = _nan_to_none(rec["t_end_requested"])
    return CurveKey(
        target=str(rec["target"]),
        process=str(rec["process"]),
        sampler=str(rec["sampler"]),
        options=json.dumps(dict(options), sort_keys=True, separators=(",", ":")),
        perturbation=_nan_to_none(rec["perturbation"]),
        metric=str(rec["metric"]),
        evaluator=evaluator,
        init=str(rec["init"]),
        t_end=None if t_end is None else float(t_end),
        final_noise=bool(rec["final_noise"]),
        denoise=bool(rec["denoise"]),
        noise=str(rec["noise"]),
        n=int(rec["n"]),
        dim=int(rec["dim"]),
    )


def _as_records(records: Any) -> list[Mapping[str, Any]]:
    """A list of Record dicts (a pandas DataFrame is accepted); missing keys are refused."""
    if hasattr(records, "to_dict") and not isinstance(records, Mapping):
        records = records.to_dict("records")
    out = list(records)
    for i, rec in enumerate(out):
        if not isinstance(rec, Mapping):
            raise ValueError(f"record {i} must be a dict, got {type(rec).__name__}")
        missing = [k for k in _REQUIRED if k not in rec]
        if missing:
            raise ValueError(f"record {i} lacks the Record keys {missing}")
    return out


def _estimate(rec: Mapping[str, Any]) -> ErrorEstimate:
    """The ErrorEstimate a Record stores (for ``experiment._standard_error``)."""
    return ErrorEstimate(
        value=float(rec["value"]),
        uncertainty=float(rec["uncertainty"]),
        evaluator=str(rec["evaluator_used"]),
        metric=str(rec["metric"]),
        steps=int(rec["steps"]),
        nfe=int(rec["nfe"]),
        t_end=float(rec.get("t_end") or 0.0),
        exact=bool(rec.get("exact", False)),
        floor=float(rec["floor"]),
    )


def _group(records: list[Mapping[str, Any]]) -> dict[CurveKey, dict[str, Any]]:
    """Curve key -> {"ok": [records], "excluded": Counter of non-ok statuses}."""
    ok: dict[CurveKey, list] = defaultdict(list)
    bad: dict[CurveKey, Counter] = defaultdict(Counter)
    for rec in records:
        if rec["status"] == "ok":
            ok[_key_of(rec, str(rec["evaluator_used"]))].append(rec)
        else:
            bad[_key_of(rec, "-")][str(rec["status"])] += 1
    groups = {k: {"ok": v, "excluded": Counter()} for k, v in ok.items()}
    # Non-ok rows have no evaluator_used: they are charged to every curve of the same settings.
    for k, counts in bad.items():
        homes = [g for g in groups if replace(g, evaluator="-") == k]
        for home in homes or [k]:
            groups.setdefault(home, {"ok": [], "excluded": Counter()})["excluded"].update(counts)
    return dict(sorted(groups.items(), key=lambda kv: kv[0].sort_key()))


# --------------------------------------------------------------------------- curve fits


@dataclass(frozen=True)
class BoundCheck:
    """Verdict of a measured slope against one claimed bound e <= C T^-exponent."""

    exponent: float
    source: str
    status: FitStatus
    loose_by: float | None = None

    @property
    def verdict(self) -> str:
        """The status, with what it means for a bound: 'faster (bound loose by X in the
        exponent)', 'slower (bound violated)'."""
        if self.status is FitStatus.FASTER:
            return f"faster (bound loose by {self.loose_by:.2f} in the exponent)"
        if self.status is FitStatus.SLOWER:
            return "slower (bound violated)"
        return self.status.value

    @property
    def claimed_slope(self) -> float:
        return -self.exponent

    @property
    def short_source(self) -> str:
        """The source up to its arXiv number / parenthesis: 'Chen et al. 2023'."""
        return re.split(r",\s*arXiv|\s\(", self.source)[0].strip()

    @property
    def cited_source(self) -> str:
        """The source up to its parenthesis: 'Chen et al. 2023, arXiv 2209.11215'."""
        return self.source.split(" (")[0].strip()


@dataclass(frozen=True)
class CurveFit:
    """One curve: the points (mean over seeds per T), local slopes, the fit, CI and verdicts.

    ``errors``, ``std_errors``, ``floors``, ``nfe``, ``n_seeds``, ``eps_score``, ``eps_jacobi``
    are per step count (``steps``); ``fit`` is ``rates.fit_rate``'s result on the mean curve
    (None when unresolved) and [``ci_low``, ``ci_high``] the CI actually reported (``ci_method``
    says regression or bootstrap). ``excluded`` counts non-ok rows by status.

    ``uncertainties`` are the points' stored error bars (combined over seeds like the standard
    errors; the median for exact evaluators), ``mass_outside`` the largest fraction of reference
    mass a grid lost at that T, and ``flags`` the ``point_flags`` of each point: a flagged point
    is shown but never enters the fit (nor its bootstrap).
    """

    key: CurveKey
    steps: tuple[int, ...]
    errors: tuple[float, ...]
    std_errors: tuple[float, ...]
    floors: tuple[float, ...]
    nfe: tuple[float, ...]
    n_seeds: tuple[int, ...]
    seeds: tuple[int, ...]
    local_slopes: tuple[float, ...]
    fit: RateFit | None
    slope: float
    ci_low: float
    ci_high: float
    ci_method: str
    expected_slope: float | None
    verdict: FitStatus
    bounds: tuple[BoundCheck, ...]
    excluded: tuple[tuple[str, int], ...]
    eps_score: tuple[float | None, ...]
    eps_jacobi: tuple[float | None, ...]
    confidence: float
    note: str = ""
    seed_errors: np.ndarray = field(default=None, repr=False, compare=False)  # (S, len(steps))
    seed_std_errors: np.ndarray = field(default=None, repr=False, compare=False)
    uncertainties: tuple[float, ...] = ()
    mass_outside: tuple[float | None, ...] = ()
    flags: tuple[tuple[PointFlag, ...], ...] = ()

    @property
    def label(self) -> str:
        return self.key.label

    def valid(self, j: int) -> bool:
        """Whether point j may enter a fit or a ratio (no stored warning)."""
        return not self.flags[j] if self.flags else math.isfinite(self.errors[j])

    def flagged(self) -> list[tuple[int, float, tuple[PointFlag, ...]]]:
        """(T, value, flags) of every flagged point."""
        return [(t, e, f) for t, e, f in zip(self.steps, self.errors, self.flags, strict=True) if f]

    @property
    def replicated(self) -> bool:
        """Whether seeds are independent replicates (statistical evaluator, >= 2 seeds)."""
        return len(self.seeds) >= 2 and self.key.evaluator not in DETERMINISTIC_EVALUATORS

    @property
    def settled(self) -> bool:
        return self.fit is not None and self.fit.settled and self.fit.n_points >= 3


def _nanmean(a: np.ndarray) -> np.ndarray:
    """Column means over the non-NaN entries (NaN for an all-NaN column, without a warning)."""
    count = (~np.isnan(a)).sum(axis=0)
    return np.where(count > 0, np.nansum(a, axis=0) / np.maximum(count, 1), np.nan)


def _mean_curve(e: np.ndarray, se: np.ndarray, deterministic: bool) -> tuple[np.ndarray, ...]:
    """Per-T mean error, its standard error and the seed count, over the rows of e (S, n) that
    are present (NaN = no ok row for that seed and T)."""
    present = ~np.isnan(e)
    m = present.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        if e.shape[0] == 1:
            return e[0].copy(), se[0].copy(), m
        if deterministic:
            return np.nanmedian(e, axis=0), np.nanmedian(se, axis=0), m
        mean = _nanmean(e)
        std_err = np.sqrt(np.nansum(np.where(present, se, 0.0) ** 2, axis=0)) / m
    return mean, std_err, m


def _curve_rng(key: CurveKey, seed: int) -> np.random.Generator:
    """A bootstrap generator that depends on (seed, curve key) only, not on curve order."""
    digest = hashlib.sha256(json.dumps(key.as_dict(), sort_keys=True).encode()).hexdigest()
    return np.random.default_rng([seed, int(digest[:15], 16)])


def _bound_checks(
    spec, metric: str, ci: tuple[float, float], slope: float, settled: bool, tau: float
) -> tuple[BoundCheck, ...]:
    out = []
    for claim in spec.claims if spec is not None else ():
        if claim.metric != metric:
            continue
        c = -float(claim.exponent)
        if not math.isfinite(slope):
            status = FitStatus.UNRESOLVED
        else:
            status = slope_status(ci, settled, 3 if settled else 0, c, tau)
        by = c - slope if status is FitStatus.FASTER else None
        out.append(BoundCheck(float(claim.exponent), claim.source, status, by))
    return tuple(out)


def _spec(name: str):
    from convergence.samplers import REGISTRY

    return REGISTRY.get(name)


def _fit_one(
    key: CurveKey,
    rows: list[Mapping[str, Any]],
    excluded: Counter,
    confidence: float,
    n_boot: int,
    seed: int,
    bound_tol: float,
) -> CurveFit:
    spec = _spec(key.sampler)
    expected = spec.expected_slope(key.metric) if spec is not None else None
    steps = sorted({int(r["steps"]) for r in rows})
    seeds = sorted({int(r["seed"]) for r in rows})
    col = {t: j for j, t in enumerate(steps)}
    row = {s: i for i, s in enumerate(seeds)}
    shape = (len(seeds), len(steps))
    e, se, fl, nfe = (np.full(shape, np.nan) for _ in range(4))
    eps_s, eps_j = np.full(shape, np.nan), np.full(shape, np.nan)
    unc, mass = np.full(shape, np.nan), np.full(shape, np.nan)
    duplicates = 0
    for r in rows:
        i, j = row[int(r["seed"])], col[int(r["steps"])]
        duplicates += int(not np.isnan(e[i, j]))
        e[i, j] = float(r["value"])
        se[i, j] = _standard_error(_estimate(r))
        fl[i, j] = float(r["floor"])
        nfe[i, j] = float(r["nfe"])
        eps_s[i, j] = np.nan if r["eps_score"] is None else float(r["eps_score"])
        eps_j[i, j] = np.nan if r["eps_jacobi"] is None else float(r["eps_jacobi"])
        unc[i, j] = float(r["uncertainty"])
        mass[i, j] = np.nan if r.get("mass_outside") is None else float(r["mass_outside"])
    deterministic = key.evaluator in DETERMINISTIC_EVALUATORS
    mean, std_err, m = _mean_curve(e, se, deterministic)
    _, point_unc, _ = _mean_curve(e, unc, deterministic)
    with np.errstate(invalid="ignore"):
        lost = np.nanmax(np.where(np.isnan(mass), -np.inf, mass), axis=0) if seeds else mass[0:0]
    lost = np.where(np.isfinite(lost), lost, np.nan)
    flags = tuple(
        point_flags(float(v), float(u), float(f), None if np.isnan(g) else float(g))
        for v, u, f, g in zip(
            mean, point_unc, _nanmean(fl) if len(seeds) != 1 else fl[0], lost, strict=True
        )
    )
    usable = np.array([not f for f in flags], dtype=bool)
    floors, eps_score, eps_jacobi = (
        _nanmean(a) if len(seeds) != 1 else a[0] for a in (fl, eps_s, eps_j)
    )  # no seeds (every row failed): empty columns
    nfe_t = np.nanmedian(nfe, axis=0) if seeds else np.zeros(0)
    notes = []
    if duplicates:
        notes.append(f"{duplicates} duplicate (seed, T) rows: the last one is used")
    if deterministic and len(seeds) > 1 and np.any(np.nanmax(e, 0) != np.nanmin(e, 0)):
        notes.append("seeds disagree although the evaluator is exact: their median is used")
    common = dict(
        key=key,
        steps=tuple(steps),
        errors=tuple(float(v) for v in mean),
        std_errors=tuple(float(v) for v in std_err),
        floors=tuple(float(v) for v in floors),
        nfe=tuple(float(v) for v in nfe_t),
        n_seeds=tuple(int(v) for v in m),
        seeds=tuple(seeds),
        excluded=tuple(sorted(excluded.items())),
        eps_score=tuple(None if np.isnan(v) else float(v) for v in eps_score),
        eps_jacobi=tuple(None if np.isnan(v) else float(v) for v in eps_jacobi),
        confidence=confidence,
        expected_slope=expected,
        seed_errors=e,
        seed_std_errors=se,
        uncertainties=tuple(float(v) for v in point_unc),
        mass_outside=tuple(None if np.isnan(v) else float(v) for v in lost),
        flags=flags,
    )

    def unresolved(slopes: tuple[float, ...], why: str) -> CurveFit:
        return CurveFit(
            local_slopes=slopes,
            fit=None,
            slope=math.nan,
            ci_low=math.nan,
            ci_high=math.nan,
            ci_method="none",
            verdict=FitStatus.UNRESOLVED,
            bounds=_bound_checks(spec, key.metric, (math.nan,) * 2, math.nan, False, bound_tol),
            note="; ".join([*notes, why]),
            **common,
        )

    if len(steps) < 2:
        return unresolved((), f"{len(steps)} step count(s): no slope")
    slopes = tuple(float(p) for p in local_slopes(steps, mean))
    if not usable.any():
        return unresolved(slopes, "every point is flagged")
    try:
        fit = fit_rate(
            steps,
            np.where(usable, mean, np.nan),
            uncertainties=std_err,
            floors=floors,
            expected_slope=expected,
            confidence=confidence,
            verdict_tol=VERDICT_TOL,
        )
    except UnresolvedRateError as exc:
        return unresolved(slopes, str(exc))
    ci, method = (fit.ci_low, fit.ci_high), "regression"
    verdict = fit.verdict
    settled = fit.settled and fit.n_points >= 3
    if len(seeds) >= 2 and not deterministic:
        ci, n_ok = _bootstrap_slope(
            fit, np.asarray(steps), e, se, floors, usable, confidence, n_boot, key, seed
        )
        method = f"bootstrap over {len(seeds)} seeds"
        if n_ok < n_boot:
            notes.append(f"{n_boot - n_ok} of {n_boot} bootstrap replicates had < 2 points")
        verdict = slope_status(ci, settled, fit.n_points, expected, VERDICT_TOL)
    return CurveFit(
        local_slopes=slopes,
        fit=fit,
        slope=fit.slope,
        ci_low=float(ci[0]),
        ci_high=float(ci[1]),
        ci_method=method,
        verdict=verdict,
        bounds=_bound_checks(spec, key.metric, ci, fit.slope, settled, bound_tol),
        note="; ".join(notes),
        **common,
    )


def _bootstrap_slope(
    fit: RateFit,
    steps: np.ndarray,
    e: np.ndarray,
    se: np.ndarray,
    floors: np.ndarray,
    usable: np.ndarray,
    confidence: float,
    n_boot: int,
    key: CurveKey,
    seed: int,
) -> tuple[tuple[float, float], int]:
    """Percentile CI of the slope over seed resamples, refitted on the fit's window points."""
    i0, i1 = fit.window_indices
    mean, _, _ = _mean_curve(e, se, False)
    window = np.arange(i0, i1 + 1)
    window = window[(_valid_mask(mean, floors, FLOOR_FACTOR) & usable)[window]]  # the fit's points
    x_all = np.log(steps.astype(np.float64))
    rng = _curve_rng(key, seed)
    s_count = e.shape[0]
    boot = []
    for _ in range(n_boot):
        pick = rng.integers(0, s_count, size=s_count)
        m_e, m_se, _ = _mean_curve(e[pick], se[pick], False)
        idx = window[np.isfinite(m_e[window]) & (m_e[window] > 0)]
        if idx.size < 2:
            continue
        rel = m_se[idx] / m_e[idx]
        slope, _, _ = _least_squares(x_all[idx], np.log(m_e[idx]), rel, confidence)
        boot.append(slope)
    if not boot:
        return (math.nan, math.nan), 0
    q = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(np.asarray(boot), [q, 1.0 - q])
    return (float(lo), float(hi)), len(boot)


def _check_confidence(confidence: float) -> float:
    confidence = float(confidence)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    return confidence


def fit_curves(
    records: Iterable[Mapping[str, Any]],
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    bound_tol: float = 0.1,
) -> list[CurveFit]:
    """One ``CurveFit`` per curve of ``records`` (module docstring: grouping, mean over seeds,
    window, CI by regression or bootstrap over seeds, verdicts against the expected order and
    every claimed bound of the sampler in that metric). Sorted by curve key.

    Cost: one weighted least squares per curve, plus n_boot of them for replicated curves.
    """
    confidence = _check_confidence(confidence)
    if not isinstance(n_boot, int) or isinstance(n_boot, bool) or n_boot < 10:
        raise ValueError(f"n_boot must be an integer >= 10, got {n_boot!r}")
    bound_tol = float(bound_tol)
    if not (math.isfinite(bound_tol) and bound_tol >= 0):
        raise ValueError(f"bound_tol must be a finite number >= 0, got {bound_tol!r}")
    groups = _group(_as_records(records))
    return [
        _fit_one(k, g["ok"], g["excluded"], confidence, n_boot, seed, bound_tol)
        for k, g in groups.items()
    ]


# --------------------------------------------------------------------------- NFE-to-error


@dataclass(frozen=True)
class NfeToError:
    """NFE needed to reach an error level, with a CI; nfe is NaN (and ``reason`` says why) when
    the level lies outside the curve's resolved range (never extrapolated)."""

    level: float
    nfe: float
    lo: float
    hi: float
    reason: str = ""

    def __iter__(self):
        return iter((self.nfe, self.lo, self.hi))


def _resolved(curve: CurveFit, errors: np.ndarray) -> np.ndarray:
    """Points that may enter a fit, a crossing or a ratio: no stored warning (``point_flags``)."""
    floors = np.asarray(curve.floors)
    ok = _valid_mask(np.asarray(curve.errors), floors, FLOOR_FACTOR)
    if curve.flags:
        ok &= np.array([not f for f in curve.flags], dtype=bool)
    return ok & np.isfinite(errors) & (errors > 0)


def _crossings(nfe: np.ndarray, e: np.ndarray, ok: np.ndarray, level: float):
    """(linear, [alternatives], status) of log NFE interpolated at log e = log level.

    The bracket is the LAST resolved point with e >= level and the next resolved point (below the
    level, as are all later ones): the NFE from which on the measured error stays below the level.
    Alternatives are the crossings of the quadratic (in log e) interpolants through the bracket
    and one neighbour on either side, when the errors decrease on those three points; status is
    "" or "above" (every resolved error is below the level: reached before the first point) or
    "below" (no resolved error is below the level: more steps needed) or "empty".
    """
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return math.nan, [], "empty"
    ev, nv = e[idx], nfe[idx]
    above = np.flatnonzero(ev >= level)
    if above.size == 0:
        return math.nan, [], "above"
    j = int(above[-1])
    if j == idx.size - 1:
        return math.nan, [], "below"
    if ev[j] == level:
        return float(nv[j]), [], ""
    x, y, x0 = np.log(ev), np.log(nv), math.log(level)
    lin = y[j] + (y[j + 1] - y[j]) * (x0 - x[j]) / (x[j + 1] - x[j])
    alts = []
    for a in (j - 1, j):
        if a < 0 or a + 2 >= idx.size or not np.all(np.diff(x[a : a + 3]) < 0):
            continue
        xs, ys = x[a : a + 3], y[a : a + 3]
        val = sum(
            ys[i] * np.prod([(x0 - xs[k]) / (xs[i] - xs[k]) for k in range(3) if k != i])
            for i in range(3)
        )
        alts.append(float(np.exp(np.clip(val, y[j], y[j + 1]))))
    return float(np.exp(lin)), alts, ""


def _outside(level: float, status: str, nfe: np.ndarray, e: np.ndarray, ok: np.ndarray):
    """The result for a level outside the resolved range: NaN NFE and the one-sided bound the
    measurements do give (more than the last NFE, or at most the first)."""
    idx = np.flatnonzero(ok)
    if status == "empty":
        return NfeToError(level, math.nan, math.nan, math.nan, "no resolved point")
    first, last = float(nfe[idx[0]]), float(nfe[idx[-1]])
    if status == "above":
        reason = (
            f"every resolved error is below {level:.3g} (largest {e[idx].max():.3g}): reached "
            f"at or before NFE {first:.4g}; not extrapolated"
        )
        return NfeToError(level, math.nan, 0.0, first, reason)
    reason = (
        f"no resolved error reaches {level:.3g} (smallest {e[idx].min():.3g} at NFE "
        f"{last:.4g}): more steps needed; not extrapolated"
    )
    return NfeToError(level, math.nan, last, math.inf, reason)


def nfe_to_error(curve: CurveFit, level: float, *, n_boot: int = 2000, seed: int = 0) -> NfeToError:
    """NFE at which the curve's error reaches ``level``, interpolated in log-log.

    log NFE is interpolated linearly in log e between the last resolved point with e >= level
    and the next one (points below 10x their floor are unresolved and skipped). Outside the
    resolved range the NFE is NaN with a reason, never extrapolated; [lo, hi] then holds the
    one-sided bound the data give: [last NFE, inf) when even the last point is above the level,
    [0, first NFE] when the first point is already below it.

    The interval [lo, hi] (at the curve's confidence) is the hull of
    (a) the crossings of the curve shifted to e -+ z se (z the normal quantile; a shifted curve
        that never reaches the level gives hi = inf; one that is below it from the first point
        gives lo = 0, i.e. unbounded on that side),
    (b) the crossings of the quadratic log-log interpolants through the bracket and a neighbour
        (an estimate of the interpolation error, which dominates for exact evaluators), and
    (c) for replicated curves, the percentile bootstrap over seeds of the crossing.
    """
    level = float(level)
    if not (math.isfinite(level) and level > 0):
        raise ValueError(f"level must be a finite number > 0, got {level!r}")
    e, se, nfe = (
        np.asarray(v, dtype=np.float64) for v in (curve.errors, curve.std_errors, curve.nfe)
    )
    ok = _resolved(curve, e)
    value, alts, status = _crossings(nfe, e, ok, level)
    if status:
        return _outside(level, status, nfe, e, ok)
    z = float(stats.norm.ppf(0.5 * (1.0 + curve.confidence)))
    lows, highs = [value, *alts], [value, *alts]
    e_lo, e_hi = e - z * se, e + z * se
    v_lo, _, st_lo = _crossings(nfe, e_lo, ok & (e_lo > 0), level)
    v_hi, _, st_hi = _crossings(nfe, e_hi, ok, level)
    lows.append(0.0 if st_lo == "above" else v_lo)
    highs.append(math.inf if st_hi == "below" else v_hi)
    if curve.replicated:
        rng = _curve_rng(curve.key, seed + 1)
        s_count = curve.seed_errors.shape[0]
        boot = []
        for _ in range(n_boot):
            pick = rng.integers(0, s_count, size=s_count)
            m_e, _, _ = _mean_curve(curve.seed_errors[pick], curve.seed_std_errors[pick], False)
            v, _, st = _crossings(nfe, m_e, ok & np.isfinite(m_e) & (m_e > 0), level)
            boot.append({"above": 0.0, "below": math.inf, "empty": math.nan}.get(st, v))
        boot = np.asarray(boot)
        boot = boot[~np.isnan(boot)]
        if boot.size:
            q = (1.0 - curve.confidence) / 2.0
            b_lo, b_hi = np.quantile(boot, [q, 1.0 - q], method="inverted_cdf")
            lows.append(float(b_lo))
            highs.append(float(b_hi))
    lows = [v for v in lows if not math.isnan(v)]
    highs = [v for v in highs if not math.isnan(v)]
    return NfeToError(level, value, min(lows), max(highs))


@dataclass(frozen=True)
class Speedup:
    """NFE_baseline / NFE_sampler at one error level, with the CI from interval arithmetic on
    the two NFE intervals: [lo_b / hi_s, hi_b / lo_s] (coverage at least that of the two CIs
    jointly, i.e. conservative)."""

    group: CurveKey  # the shared settings (sampler "*")
    level: float
    sampler: str
    baseline: str
    ratio: float
    lo: float
    hi: float
    nfe: NfeToError
    nfe_baseline: NfeToError
    reason: str = ""


def _order(r: NfeToError) -> float:
    """Sort value of an NFE result: the NFE, or its known side when outside the range."""
    if not math.isnan(r.nfe):
        return r.nfe
    return math.inf if r.hi == math.inf else (0.0 if r.lo == 0.0 else math.nan)


def _group_of(key: CurveKey) -> CurveKey:
    """The settings curves must share to be compared at equal error (sampler/options/evaluator
    free)."""
    return replace(key, sampler="*", options="{}", evaluator="*")


def _ratio(num: float, den: float) -> float:
    if den == 0:
        return math.inf
    return num / den


def speedups(
    curves: Sequence[CurveFit],
    level: float | Mapping[CurveKey, float],
    *,
    baseline: str | None = None,
    nfe: Mapping[CurveKey, NfeToError] | None = None,
) -> list[Speedup]:
    """Speed-ups NFE_baseline / NFE_sampler at error ``level`` for every pair of curves sharing
    target, process, metric, perturbation and run settings (``_group_of``).

    ``level`` is one number or a map from the group key to the level. With ``baseline`` (a
    sampler label, e.g. "ddim") each other curve of a group is compared with that one; without,
    every pair is reported once, the baseline being the curve that needs more NFE (ratio >= 1).
    ``nfe`` may pass precomputed ``nfe_to_error`` results (key -> result).
    """
    by_group: dict[CurveKey, list[CurveFit]] = defaultdict(list)
    for c in curves:
        by_group[_group_of(c.key)].append(c)
    out = []
    for g, members in sorted(by_group.items(), key=lambda kv: kv[0].sort_key()):
        lev = level.get(g) if isinstance(level, Mapping) else level
        members = [c for c in members if len(c.steps) >= 2]
        if lev is None or len(members) < 2:
            continue
        res = {c.key: (nfe or {}).get(c.key) or nfe_to_error(c, lev) for c in members}
        pairs = []
        for a, b in combinations(members, 2):
            if baseline is not None:
                if b.label == baseline:
                    a, b = b, a
                if a.label != baseline:
                    continue
            elif _order(res[b.key]) > _order(res[a.key]):
                a, b = b, a
            pairs.append((a, b))  # a: baseline, b: sampler
        for a, b in pairs:
            na, nb = res[a.key], res[b.key]
            reason = "; ".join(
                f"{c.label}: {r.reason}" for c, r in ((b, nb), (a, na)) if math.isnan(r.nfe)
            )
            out.append(
                Speedup(
                    group=g,
                    level=float(lev),
                    sampler=b.label,
                    baseline=a.label,
                    ratio=_ratio(na.nfe, nb.nfe),
                    lo=_ratio(na.lo, nb.hi),
                    hi=_ratio(na.hi, nb.lo),
                    nfe=nb,
                    nfe_baseline=na,
                    reason=reason,
                )
            )
    return out


def _nice(level: float, lo: float, hi: float) -> float:
    """The 1-2-5 x 10^k number closest (in log) to ``level`` inside [lo, hi], else ``level``."""
    k = math.floor(math.log10(level))
    cands = [m * 10.0**p for p in (k - 1, k, k + 1) for m in (1.0, 2.0, 5.0)]
    cands = [c for c in cands if lo <= c <= hi]
    if not cands:
        return level
    return min(cands, key=lambda c: abs(math.log(c / level)))


def default_level(curves: Sequence[CurveFit]) -> float | None:
    """A level inside the resolved error range of as many curves as possible: among the ranges
    [min e, max e] of the curves, the largest set with a common point is taken (all curves when
    their ranges overlap), and the level is the geometric mean of the largest of that set's
    minima and the smallest of its maxima, moved to the closest 1-2-5 x 10^k number in that
    range (on a tie between sets, the one at smaller errors). None when no curve has a resolved
    point."""
    ranges = []
    for c in curves:
        e = np.asarray(c.errors)
        ok = _resolved(c, e)
        if ok.any():
            ranges.append((float(e[ok].min()), float(e[ok].max())))
    if not ranges:
        return None
    ends = sorted({v for r in ranges for v in r})
    cover = [[r for r in ranges if r[0] <= p <= r[1]] for p in ends]
    best = max(cover, key=len)  # ties: the smallest-error set (deeper in the asymptotics)
    lo, hi = max(r[0] for r in best), min(r[1] for r in best)
    return _nice(math.sqrt(lo * hi), lo, hi)


# --------------------------------------------------------------------------- plateaus, dimension


@dataclass(frozen=True)
class PlateauFit:
    """log e(T) against log eps at one T, over curves that differ only by perturbation.

    ``against`` is "eps_score" or "eps_jacobi"; ``exact_error`` is the exact-score curve's error
    at the same T when the sweep has one (the discretisation part of the plateau)."""

    group: CurveKey  # the shared settings (perturbation "*")
    against: str
    steps: int
    perturbations: tuple[str, ...]
    eps: tuple[float, ...]
    errors: tuple[float, ...]
    slope: float
    ci_low: float
    ci_high: float
    exact_error: float | None = None


@dataclass(frozen=True)
class DimensionFit:
    """log e(T) against log d at one T, over curves that differ only in the target's d."""

    group: CurveKey  # target with "d=*"
    steps: int
    dims: tuple[int, ...]
    errors: tuple[float, ...]
    slope: float
    ci_low: float
    ci_high: float
    evaluators: str = ""


def _loglog(x: Sequence[float], y: Sequence[float], confidence: float) -> tuple[float, ...]:
    """(slope, ci_low, ci_high) of log y = a + slope log x by least squares; NaN CI for 2
    points."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    slope, _, half = _least_squares(lx, ly, None, confidence)
    if lx.size < 3:
        half = math.nan
    return slope, slope - half, slope + half


def _value_at(curve: CurveFit, t: int) -> float:
    j = curve.steps.index(t)
    return curve.errors[j] if _resolved(curve, np.asarray(curve.errors))[j] else math.nan


def fit_plateaus(curves: Sequence[CurveFit], *, confidence: float = 0.95) -> list[PlateauFit]:
    """Plateau fits: for curves equal up to the perturbation, the error at the largest T they
    share against the records' eps_score (and eps_jacobi when all are > 0) at that T."""
    by_group: dict[CurveKey, list[CurveFit]] = defaultdict(list)
    for c in curves:
        by_group[replace(c.key, perturbation="*", evaluator="*")].append(c)
    out = []
    for g, members in sorted(by_group.items(), key=lambda kv: kv[0].sort_key()):
        perturbed = [c for c in members if c.key.perturbation is not None]
        exact = [c for c in members if c.key.perturbation is None]
        if len(perturbed) < 2:
            continue
        common = set.intersection(*(set(c.steps) for c in perturbed))
        if not common:
            continue
        t = max(common)
        for against in ("eps_score", "eps_jacobi"):
            rows = []
            for c in perturbed:
                eps = getattr(c, against)[c.steps.index(t)]
                err = _value_at(c, t)
                if eps is not None and eps > 0 and err > 0:
                    rows.append((eps, err, c.key.perturbation))
            if len({r[0] for r in rows}) < 2:
                continue
            rows.sort()
            slope, lo, hi = _loglog([r[0] for r in rows], [r[1] for r in rows], confidence)
            base = [c for c in exact if t in c.steps]
            out.append(
                PlateauFit(
                    group=g,
                    against=against,
                    steps=t,
                    perturbations=tuple(r[2] for r in rows),
                    eps=tuple(r[0] for r in rows),
                    errors=tuple(r[1] for r in rows),
                    slope=slope,
                    ci_low=lo,
                    ci_high=hi,
                    exact_error=_value_at(base[0], t) if base else None,
                )
            )
    return out


def _without_dim(target: str) -> str | None:
    """'gaussian:d=2' -> 'gaussian:d=*'; None when the spec has no d= parameter."""
    name, _, params = target.partition(":")
    items = [p for p in params.split(",") if p]
    if not any(p.strip().startswith("d=") for p in items):
        return None
    return f"{name}:" + ",".join("d=*" if p.strip().startswith("d=") else p for p in items)


def fit_dimensions(curves: Sequence[CurveFit], *, confidence: float = 0.95) -> list[DimensionFit]:
    """Dimension slopes: for curves equal up to the target's d (and the evaluator), the error at
    each T common to all of them against d (the records' ``dim``), in log-log."""
    by_group: dict[CurveKey, list[CurveFit]] = defaultdict(list)
    for c in curves:
        family = _without_dim(c.key.target)
        if family is not None:
            by_group[replace(c.key, target=family, evaluator="*", dim=0)].append(c)
    out = []
    for g, members in sorted(by_group.items(), key=lambda kv: kv[0].sort_key()):
        dims = sorted({c.key.dim for c in members})
        if len(dims) < 2 or len(members) != len(dims):
            continue
        members = sorted(members, key=lambda c: c.key.dim)
        for t in sorted(set.intersection(*(set(c.steps) for c in members))):
            errs = [_value_at(c, t) for c in members]
            if not all(v > 0 for v in errs):
                continue
            slope, lo, hi = _loglog(dims, errs, confidence)
            out.append(
                DimensionFit(
                    group=g,
                    steps=t,
                    dims=tuple(dims),
                    errors=tuple(errs),
                    slope=slope,
                    ci_low=lo,
                    ci_high=hi,
                    evaluators=",".join(sorted({c.key.evaluator for c in members})),
                )
            )
    return out


# --------------------------------------------------------------------------- everything


@dataclass(frozen=True)
class NfeRow:
    curve: CurveKey
    result: NfeToError


@dataclass(frozen=True)
class Analysis:
    """Everything ``analyse`` computes; ``levels`` maps each comparison group to its level."""

    curves: tuple[CurveFit, ...]
    nfe: tuple[NfeRow, ...]
    speedups: tuple[Speedup, ...]
    plateaus: tuple[PlateauFit, ...]
    dimensions: tuple[DimensionFit, ...]
    levels: tuple[tuple[CurveKey, float | None, str], ...]  # (group, level, how it was chosen)
    confidence: float


def analyse(
    records: Iterable[Mapping[str, Any]],
    *,
    level: float | None = None,
    metric_levels: Mapping[str, float] | None = None,
    baseline: str | None = None,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    bound_tol: float = 0.1,
) -> Analysis:
    """Fit every curve, then NFE-to-error and speed-ups per comparison group (curves sharing
    target, process, metric, perturbation and settings), plateaus and dimension slopes.

    The error level of a group is ``metric_levels[metric]`` if given, else ``level`` if given,
    else ``default_level`` of the group's curves (inside the resolved range of as many of them
    as possible; the others report which side of their range the level lies on).
    """
    for name, v in [
        ("level", level),
        *((f"metric_levels[{k!r}]", v) for k, v in (metric_levels or {}).items()),
    ]:
        if v is not None and not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    curves = fit_curves(
        records, confidence=confidence, n_boot=n_boot, seed=seed, bound_tol=bound_tol
    )
    groups: dict[CurveKey, list[CurveFit]] = defaultdict(list)
    for c in curves:
        groups[_group_of(c.key)].append(c)
    levels, chosen = {}, []
    for g, members in sorted(groups.items(), key=lambda kv: kv[0].sort_key()):
        if metric_levels and g.metric in metric_levels:
            lev, how = float(metric_levels[g.metric]), "given for the metric"
        elif level is not None:
            lev, how = float(level), "given"
        else:
            lev = default_level(members)
            how = "default (inside the most curves' ranges)" if lev else "no resolved point"
        levels[g] = lev
        chosen.append((g, lev, how))
    nfe_rows = []
    results = {}
    for c in curves:
        lev = levels[_group_of(c.key)]
        if lev is None or len(c.steps) < 2:
            continue
        results[c.key] = nfe_to_error(c, lev, n_boot=n_boot, seed=seed)
        nfe_rows.append(NfeRow(c.key, results[c.key]))
    return Analysis(
        curves=tuple(curves),
        nfe=tuple(nfe_rows),
        speedups=tuple(speedups(curves, levels, baseline=baseline, nfe=results)),
        plateaus=tuple(fit_plateaus(curves, confidence=confidence)),
        dimensions=tuple(fit_dimensions(curves, confidence=confidence)),
        levels=tuple(chosen),
        confidence=confidence,
    )
