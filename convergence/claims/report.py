"""The claims report: run every claim's sweeps and side studies, fit, judge, draw and write.

``build_report(out, quick=...)`` does, for every claim of ``convergence.claims.CLAIMS``:

1. run its sweep configs into one results store, ``<out>/results.sqlite`` (``run_sweep``: tasks
   already stored are reused, a killed run loses only the tasks in flight);
2. compute its side studies (``claim.studies``: computations that are not sweeps over T) once
   and keep each whole as JSON in ``<out>/studies/<name>.json``;
3. judge it (``claim.judge``) from what is stored: findings with a status by rule
   (``convergence.claims.findings``), the claim's status, counts and headline by rule;
4. draw its figures (``<out>/figures/claim<N>_*.pdf|png``) and write its tables
   (``<out>/tables/claim<N>.md|tex``: the findings, then every fitted curve);

then writes ``<out>/REPORT.md`` (the verdict table first, then one section per claim) and
``<out>/verdicts.json`` (what ``convergence claims`` prints). Every number in the report comes
from the store or the study files; nothing is typed in.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from convergence.claims.findings import ClaimResult, Finding, counts
from convergence.claims.records import CLAIMS, PaperClaim
from convergence.claims.studies import Study

RESULTS = "results.sqlite"
VERDICTS = "verdicts.json"
RULES_TEXT = (
    "How a verdict is reached: every finding has a status from one vocabulary (a slope is "
    "consistent, faster or slower than its reference, inconclusive when its window has not "
    "settled or its 95% CI is wider than +-0.25 (or a tenth of |reference|), unresolved when it "
    "could not be fitted; a ratio is within, below or above a claimed range; a comparison is "
    "better or worse only when the two CIs are separated). A stored point with a warning (mass "
    "off the grid, uncertainty >= 10% of its value, below 10x the floor, non-finite) enters no "
    "fit or ratio and is listed as excluded. The decisive findings measured in the paper's "
    "regime vote; the claim is supported when all of them vote for it, refuted when at least one "
    "votes against it and none for it, mixed when votes go both ways, inconclusive otherwise "
    "(some abstain, none against), and not tested in the claim's regime when no decisive "
    "finding is in it. The "
    "headline is the first decisive finding whose vote agrees with the status."
)
QUICK_BANNER = (
    "> **Quick run** (`convergence report --quick`): reduced step counts, sample sizes and "
    "seeds. It checks that the report builds and every verdict is computed; its numbers are not "
    "the report's. The full report is `reports/REPORT.md`."
)


def load_study(out: Path, study: Study, quick: bool) -> dict:
    """The study's stored JSON, computed and stored first when missing."""
    path = study_path(out, study)
    if path.exists():
        return json.loads(path.read_text())
    start = time.perf_counter()
    data = study.run(quick)
    data = {"study": study.name, "quick": quick, "seconds": time.perf_counter() - start, **data}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=True))
    tmp.replace(path)  # a study is stored whole or not at all
    return data


def study_path(out: Path, study: Study) -> Path:
    return Path(out) / "studies" / f"{study.name}.json"


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
            study.name: pool.submit(load_study, out, study, quick)
            for c in claims
            for study in c.studies
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
    for study in claim.studies:
        data = studies[study.name].result()
        log(f"claim {claim.number} study {study.name}: {data['seconds']:.1f} s")


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
    from convergence.claims.context import Context

    out = Path(out)
    results = []
    for claim in claims:
        records = claim_records(out / RESULTS, claim, quick=quick, configs=configs)
        studies = {}
        for study in claim.studies:
            path = study_path(out, study)
            studies[study.name] = json.loads(path.read_text()) if path.exists() else None
        if claim.judge is None or (not records and not any(studies.values())):
            results.append(ClaimResult(claim, []))  # pending: nothing stored yet
            continue
        results.append(claim.judge(Context(claim, records, studies, out, draw=draw)))
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
    "status",
    "vote",
    "excluded points",
)
VOTE_WORDS = {True: "supports", False: "refutes", None: "-"}


def _finding_row(f: Finding) -> list[str]:
    vote = VOTE_WORDS[f.supports]
    if f.decisive and not f.in_regime:
        vote = "outside the regime"
    excluded = "; ".join(f"{e.at} ({', '.join(e.reasons)})" for e in f.excluded) or "-"
    return [
        f.what,
        f.quantity,
        f.bound_text(),
        f.expected_text(),
        f.measured_text(),
        f.evaluator,
        f.verdict_text(),
        vote,
        excluded,
    ]


def _counts_text(result: ClaimResult) -> str:
    return ", ".join(f"{n} {status}" for status, n in counts(result.findings).items()) or "-"


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
        "expected value what theory predicts for smooth targets with exact scores, CIs are 95%.",
        "",
        RULES_TEXT,
        "",
        "## Verdicts",
        "",
    ]
    top = []
    for r in results:
        h = r.headline
        top.append(
            [
                f"{r.claim.number}. {r.claim.title}",
                r.status.value if r.findings else "pending",
                h.what if h else "-",
                h.measured_text() if h else "-",
                f"{h.bound_text()} / {h.expected_text()}" if h else "-",
                h.verdict_text() if h else "-",
                _counts_text(r),
            ]
        )
    headers = (
        "claim",
        "status",
        "headline finding",
        "measured [95% CI]",
        "bound / expected",
        "its status",
        "findings by status",
    )
    lines += [_md_table(headers, top), ""]
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
            + (f"; studies: {', '.join(s.name for s in c.studies)}." if c.studies else "."),
            "",
            f"**Verdict.** {r.verdict}.",
            "",
        ]
        if c.regime:
            lines += [f"**Regime.** {c.regime}", ""]
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
    """Per claim: id, number, title, paper and the status and verdict of the last report written
    under ``out`` ("pending" when none has been)."""
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
            "status": stored.get(c.id, {}).get("status", "pending"),
            "verdict": stored.get(c.id, {}).get("verdict", "pending"),
            "configs": [f"reports/configs/{n}.toml" for n in c.configs],
        }
        for c in CLAIMS
    ]
