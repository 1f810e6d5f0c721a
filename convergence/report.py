"""The claims report: run every claim's sweeps and side studies, fit, judge, draw and write.

``build_report(out, quick=...)`` does, for every claim of ``convergence.claims.CLAIMS``:

1. run its sweep configs into one results store, ``<out>/results.sqlite`` (``run_sweep``: tasks
   already stored are reused, a killed run loses only the tasks in flight);
2. compute its side studies once and keep them as JSON in ``<out>/studies/<name>.json``
   (``STUDIES``: exact computations that are not sweeps over T);
3. fit the stored records of its configs (``convergence.analysis.analyse``) and judge it
   (``convergence.verdicts``): findings with the bound, the expected and the measured value with
   its CI, the evaluator and a verdict in words;
4. draw its figures (``<out>/figures/claim<N>_*.pdf|png``) and write its tables
   (``<out>/tables/claim<N>.md|tex``: the findings, then every fitted curve);

then writes ``<out>/REPORT.md`` (the verdict table first, then one section per claim) and
``<out>/verdicts.json`` (what ``convergence claims`` prints). Every number in the report comes
from the store or the study files; nothing is typed in.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from convergence.claims import CLAIMS, PaperClaim

RESULTS = "results.sqlite"
VERDICTS = "verdicts.json"
QUICK_BANNER = (
    "> **Quick run** (`convergence report --quick`): reduced step counts, sample sizes and "
    "seeds. It checks that the report builds and every verdict is computed; its numbers are not "
    "the report's. The full report is `reports/REPORT.md`."
)


@dataclass(frozen=True)
class Finding:
    """One row of a verdict table: a measured quantity beside the claimed bound and the expected
    value (slopes in T or d, or a speed-up ratio), with its CI, evaluator and verdict."""

    what: str
    quantity: str
    bound: str
    expected: str
    measured: float
    lo: float
    hi: float
    evaluator: str
    verdict: str

    def measured_text(self) -> str:
        if not math.isfinite(self.measured):
            return "n/a"
        if math.isfinite(self.lo) and math.isfinite(self.hi) and self.hi > self.lo:
            return f"{self.measured:.3g} [{self.lo:.3g}, {self.hi:.3g}]"
        return f"{self.measured:.3g}"


@dataclass
class ClaimResult:
    """A judged claim: its findings (the first is the headline), a verdict in words, the files
    written and notes (what could not be measured and why)."""

    claim: PaperClaim
    findings: list[Finding]
    verdict: str
    figures: list[Path] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    curves_table: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.claim.id,
            "number": self.claim.number,
            "title": self.claim.title,
            "paper": self.claim.paper,
            "verdict": self.verdict,
            "findings": [asdict(f) for f in self.findings],
            "figures": [str(p) for p in self.figures],
            "tables": [str(p) for p in self.tables],
            "notes": self.notes,
        }


# --------------------------------------------------------------------------- side studies


def _study_momentum(quick: bool) -> dict:
    from convergence.stationary import momentum_study

    return momentum_study(quick=quick)


def _study_noise_levels(quick: bool) -> dict:
    from convergence.noise_levels import annealed_study

    return annealed_study(quick=quick)


def _study_ggf_rejections(quick: bool) -> dict:
    from convergence.verdicts import ggf_rejections

    return ggf_rejections(quick=quick)


def _study_rk45_tolerance(quick: bool) -> dict:
    from convergence.verdicts import rk45_tolerance

    return rk45_tolerance(quick=quick)


def _study_symbolic(quick: bool) -> dict:
    from convergence.verdicts import symbolic_constants

    return symbolic_constants()


def _study_learned_error(quick: bool) -> dict:
    from convergence.learned.claim import learned_error_study

    return learned_error_study(quick)


STUDIES: dict[str, Callable[[bool], dict]] = {
    "momentum": _study_momentum,
    "noise_levels": _study_noise_levels,
    "ggf_rejections": _study_ggf_rejections,
    "rk45_tolerance": _study_rk45_tolerance,
    "symbolic": _study_symbolic,
    "learned_error": _study_learned_error,
}


def load_study(out: Path, name: str, quick: bool) -> dict:
    """The study's stored JSON, computed and stored first when missing."""
    path = Path(out) / "studies" / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    start = time.perf_counter()
    data = STUDIES[name](quick)
    data = {"study": name, "quick": quick, "seconds": time.perf_counter() - start, **data}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=True))
    tmp.replace(path)  # a study is stored whole or not at all
    return data


# --------------------------------------------------------------------------- running


def run_claims(
    out: str | Path,
    *,
    quick: bool = False,
    claims: Sequence[PaperClaim] = CLAIMS,
    configs: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """Run the sweeps of ``claims`` into ``<out>/results.sqlite`` (finished tasks are reused)
    and compute their studies; returns the store's path."""
    from convergence.sweep.runner import _single_threaded_children, make_executor

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / RESULTS
    with _single_threaded_children(), make_executor("local", workers) as pool:
        # the studies go to the pool first: they run two at a time on single-threaded workers
        # (mostly small-tensor loops, which a second thread does not speed up), and each is
        # stored whole when it finishes; the sweeps' tasks queue behind them
        studies = {
            name: pool.submit(load_study, out, name, quick) for c in claims for name in c.studies
        }
        try:
            for claim in claims:
                _run_claim(claim, out, store, pool, quick, configs, progress, log, studies)
        except BaseException:
            for future in studies.values():
                future.cancel()  # the queued ones; a running study finishes and is stored
            raise
    return store


def _run_claim(claim, out, store, pool, quick, configs, progress, log, studies) -> None:
    from convergence.sweep.runner import run_sweep

    for config in claim.load_configs(configs, quick=quick):
        summary = run_sweep(config, store, executor=pool, progress=progress)
        ran = summary.ok + summary.diverged + summary.failed
        log(
            f"claim {claim.number} {config.name}: {summary.total} tasks, {ran} run "
            f"({summary.wall:.0f} s)"
        )
        if summary.interrupted:
            raise KeyboardInterrupt
    for name in claim.studies:
        data = studies[name].result()
        log(f"claim {claim.number} study {name}: {data['seconds']:.1f} s")


def claim_records(store: Path, claim: PaperClaim, *, quick: bool, configs=None) -> list[dict]:
    """The stored records of the claim's configs (matched by task key)."""
    from convergence.sweep.store import Store

    keys = {t.key() for c in claim.load_configs(configs, quick=quick) for t in c.tasks()}
    if not Path(store).exists():
        return []
    with Store(store, create=False) as s:
        return [r for r in s.records() if r["key"] in keys]


def judge_claims(
    out: str | Path,
    *,
    quick: bool = False,
    claims: Sequence[PaperClaim] = CLAIMS,
    configs: str | Path | None = None,
    draw: bool = True,
) -> list[ClaimResult]:
    """Fit, judge, draw (unless ``draw`` is False) and tabulate every claim from what is stored
    under ``out``."""
    from convergence.verdicts import JUDGES, Context

    out = Path(out)
    results = []
    for claim in claims:
        records = claim_records(out / RESULTS, claim, quick=quick, configs=configs)
        studies = {}
        for name in claim.studies:
            path = out / "studies" / f"{name}.json"
            studies[name] = json.loads(path.read_text()) if path.exists() else None
        ctx = Context(claim, records, studies, out, draw=draw)
        if not records and not any(studies.values()):
            results.append(ClaimResult(claim, [], "pending"))
            continue
        results.append(JUDGES[claim.id](ctx))
    return results


# --------------------------------------------------------------------------- writing


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _tex_escape(text: str) -> str:
    out = str(text)
    for a, b in (
        ("\\", r"\textbackslash{}"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("_", r"\_"),
        ("#", r"\#"),
        ("^", r"\^{}"),
        ("~", r"\~{}"),
    ):
        out = out.replace(a, b)
    return out


def _tex_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    cols = "l" * len(headers)
    body = [" & ".join(_tex_escape(c) for c in r) + r" \\" for r in rows]
    return "\n".join(
        [
            rf"\begin{{tabular}}{{{cols}}}",
            r"\toprule",
            " & ".join(_tex_escape(h) for h in headers) + r" \\",
            r"\midrule",
            *body,
            r"\bottomrule",
            r"\end{tabular}",
        ]
    )


FINDING_HEADERS = (
    "comparison",
    "quantity",
    "bound",
    "expected",
    "measured [95% CI]",
    "evaluator",
    "verdict",
)


def _finding_row(f: Finding) -> list[str]:
    return [f.what, f.quantity, f.bound, f.expected, f.measured_text(), f.evaluator, f.verdict]


def write_tables(result: ClaimResult, out: Path) -> None:
    tables = out / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    rows = [_finding_row(f) for f in result.findings]
    stem = tables / f"claim{result.claim.number}"
    md = _md_table(FINDING_HEADERS, rows)
    if result.curves_table:
        md += "\n\nEvery fitted curve:\n\n" + result.curves_table
    stem.with_suffix(".md").write_text(md + "\n")
    stem.with_suffix(".tex").write_text(_tex_table(FINDING_HEADERS, rows) + "\n")
    result.tables = [stem.with_suffix(".md"), stem.with_suffix(".tex")]


def _relative(path: Path, out: Path) -> str:
    try:
        return str(Path(path).relative_to(out))
    except ValueError:
        return str(path)


def write_markdown(results: Sequence[ClaimResult], out: Path, *, quick: bool) -> Path:
    lines = ["# Convergence claims of the seed papers, checked numerically", ""]
    if quick:
        lines += [QUICK_BANNER, ""]
    lines += [
        "Generated by `convergence report" + (" --quick" if quick else "") + "` from the stored "
        "results (`results.sqlite`, `studies/`). Slopes are log-log slopes (of the error against "
        "T unless the quantity says otherwise); the bound is what the paper proves or claims, the "
        "expected value what theory predicts for smooth targets with exact scores (THEORY.md "
        "2.2), CIs are 95%.",
        "",
        "## Verdicts",
        "",
    ]
    top = []
    for r in results:
        f = r.findings[0] if r.findings else None
        top.append(
            [
                f"{r.claim.number}. {r.claim.title}",
                f.what if f else "-",
                f.bound if f else "-",
                f.expected if f else "-",
                f.measured_text() if f else "-",
                f.evaluator if f else "-",
                r.verdict,
            ]
        )
    lines += [
        _md_table(
            (
                "claim",
                "headline comparison",
                "bound",
                "expected",
                "measured [95% CI]",
                "evaluator",
                "verdict",
            ),
            top,
        ),
        "",
    ]
    for r in results:
        c = r.claim
        lines += [
            f"## {c.number}. {c.title}",
            "",
            f"*{c.paper}*",
            "",
            f"**Claim.** {c.statement}",
            "",
            f"**Setting.** {c.setting} Configs: "
            + ", ".join(f"`reports/configs/{n}.toml`" for n in c.configs)
            + (f"; studies: {', '.join(c.studies)}." if c.studies else "."),
            "",
            f"**Verdict.** {r.verdict}",
            "",
        ]
        if r.findings:
            lines += [_md_table(FINDING_HEADERS, [_finding_row(f) for f in r.findings]), ""]
        for note in r.notes:
            lines += [f"- {note}"]
        if r.notes:
            lines += [""]
        for p in r.figures:
            if p.suffix == ".png":
                lines += [f"![claim {c.number}]({_relative(p, out)})", ""]
        if r.tables:
            lines += [
                "Tables: "
                + ", ".join(f"`{_relative(p, out)}`" for p in r.tables)
                + " (the Markdown table also lists every fitted curve).",
                "",
            ]
    path = out / "REPORT.md"
    path.write_text("\n".join(lines))
    return path


def write_verdicts(results: Sequence[ClaimResult], out: Path, *, quick: bool) -> Path:
    path = out / VERDICTS
    data = {"quick": quick, "claims": [r.as_json() for r in results]}
    path.write_text(json.dumps(data, indent=1, allow_nan=True) + "\n")
    return path


def build_report(
    out: str | Path = "reports",
    *,
    quick: bool = False,
    claims: Sequence[PaperClaim] = CLAIMS,
    configs: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[ClaimResult]:
    """Run, judge, draw and write the report of ``claims`` under ``out`` (module docstring)."""
    out = Path(out)
    run_claims(
        out,
        quick=quick,
        claims=claims,
        configs=configs,
        workers=workers,
        progress=progress,
        log=log,
    )
    results = judge_claims(out, quick=quick, claims=claims, configs=configs)
    for r in results:
        write_tables(r, out)
    write_markdown(results, out, quick=quick)
    write_verdicts(results, out, quick=quick)
    return results


def last_verdicts(out: str | Path = "reports") -> list[dict[str, Any]]:
    """Per claim: id, number, title, paper and the verdict of the last report written under
    ``out`` ("pending" when none has been)."""
    path = Path(out) / VERDICTS
    stored = {}
    if path.exists():
        stored = {c["id"]: c for c in json.loads(path.read_text())["claims"]}
    return [
        {
            "id": c.id,
            "number": c.number,
            "title": c.title,
            "paper": c.paper,
            "verdict": stored.get(c.id, {}).get("verdict", "pending"),
            "configs": [f"reports/configs/{n}.toml" for n in c.configs],
        }
        for c in CLAIMS
    ]
