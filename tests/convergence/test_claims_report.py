"""The claims records and the report (issue 6; the rules are in test_findings.py).

The whole ``convergence report --quick`` runs once per session (module fixture, ~1.5 min on 2
cores); the other tests read what it wrote.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from convergence.claims import CLAIMS, CONFIG_DIR, get_claim, quick_config
from convergence.claims.report import last_verdicts
from convergence.cli import main

ROOT = Path(__file__).resolve().parents[2]


# ---- the records --------------------------------------------------------------------------------


def test_ten_claims_each_with_loadable_configs():
    assert [c.number for c in CLAIMS] == list(range(1, 11))
    assert len({c.id for c in CLAIMS}) == 10
    for c in CLAIMS:
        assert c.paper and c.statement and c.setting and c.configs
        for path in c.config_paths():
            assert path.parent == CONFIG_DIR and path.is_file(), path
        assert all(len(cfg.tasks()) > 0 for cfg in c.load_configs())
    assert get_claim(3) is get_claim("path-kl") is get_claim("3")
    with pytest.raises(ValueError, match="unknown claim 'x'; allowed: li-deterministic"):
        get_claim("x")


def test_quick_config_reduces_every_axis():
    full = get_claim("dimension").load_configs()[0]
    quick = quick_config(full)
    assert full.dimensions == (1, 4, 16, 64, 256, 1024) and quick.dimensions == (1, 4)
    assert [t for t, _ in quick.grid_targets] == [
        "product:d=1,k=3,seed=0",
        "product:d=4,k=3,seed=0",
    ]
    assert all(s.steps == (16,) for s in quick.samplers)  # smallest 64 -> a quarter
    assert quick.metrics == full.metrics[:2] and quick.name.endswith("-quick")
    score = get_claim("score-error")
    q = score.load_configs(quick=True)[0]
    assert len(q.samplers) == 2 and q.perturbations[0] is None and len(q.perturbations) == 5
    omegas = {p.split("omega=")[1] for p in q.perturbations[1:]}
    assert omegas == {"1", "16"}  # both kinds of perturbation survive the reduction
    ggf = get_claim("ggf").load_configs(quick=True)[0]
    assert ggf.seeds == (0, 1) and ggf.n == 1000 and ggf.processes == ("vp", "ve")


# ---- the report ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    """``convergence report --quick`` as a user runs it (a child process, 2 workers)."""
    out = tmp_path_factory.mktemp("report")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "convergence.cli",
            "report",
            "--quick",
            "--out",
            str(out),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=900,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, proc


def test_quick_report_judges_every_claim(quick_report):
    out, proc = quick_report
    data = json.loads((out / "verdicts.json").read_text())
    assert data["quick"] is True and [c["number"] for c in data["claims"]] == list(range(1, 11))
    statuses = {"supported", "refuted", "mixed", "inconclusive", "not tested in the claim's regime"}
    for claim in data["claims"]:
        assert claim["status"] in statuses and claim["verdict"].startswith(claim["status"])
        assert claim["findings"], claim["id"]
        recount = {}
        for f in claim["findings"]:
            recount[f["status"]] = recount.get(f["status"], 0) + 1
        assert recount == claim["counts"], claim["id"]
        h = claim["headline"]
        assert h is not None and claim["findings"][h]["what"] == claim["headline_text"]
        assert any(f.endswith(".pdf") for f in claim["figures"]), claim["id"]
        assert any(f.endswith(".png") for f in claim["figures"]), claim["id"]
        for path in claim["figures"] + claim["tables"]:
            assert Path(path).is_file() and Path(path).stat().st_size > 0, path
    assert "report written to" in proc.stdout
    annealed = next(c for c in data["claims"] if c["id"] == "annealed")
    effects = [f for f in annealed["findings"] if "denoise effect" in f["what"]]
    assert len(effects) == 2  # als and cas, each denoised against plain at the largest L
    assert all(abs(f["measured"]) < 1.0 for f in effects)


def test_quick_report_markdown_has_the_verdict_table(quick_report):
    out, _ = quick_report
    text = (out / "REPORT.md").read_text()
    assert text.startswith("# Convergence claims") and "**Quick run**" in text
    header = "| claim | status | headline finding | measured [95% CI] | bound / expected |"
    assert header in text and "How a verdict is reached" in text
    table = text.split("## Verdicts")[1].split("\n## ")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 11  # header + one row per claim
    for k in range(1, 11):
        assert f"## {k}. " in text
    tex = (out / "tables" / "claim1.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and "li-accel-ddim" in tex


def test_verdicts_come_from_stored_results(quick_report):
    """Judging again from the store alone (no sampler runs) gives the same verdicts."""
    from convergence.claims.report import judge_claims

    out, _ = quick_report
    stored = {
        c["id"]: (c["status"], c["counts"], c["verdict"])
        for c in json.loads((out / "verdicts.json").read_text())["claims"]
    }
    again = judge_claims(out, quick=True, draw=False)
    assert {r.claim.id: (r.status.value, r.counts, r.verdict) for r in again} == stored


def test_quick_report_is_reused_not_rerun(quick_report):
    """A second run finds every task and study stored: it computes nothing new."""
    out, _ = quick_report
    from convergence.claims.report import run_claims

    lines = []
    run_claims(
        out,
        quick=True,
        claims=[get_claim("path-kl"), get_claim("annealed")],
        progress=False,
        log=lines.append,
    )
    assert lines and all(" 0 run " in line for line in lines if "tasks" in line)


def test_claims_command(quick_report, capsys):
    out, _ = quick_report
    assert main(["claims", "--json", "--out", str(out)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 10 and all({"id", "paper", "status", "verdict"} <= set(r) for r in rows)
    assert all(r["status"] != "pending" for r in rows)
    assert all(r["status"] == "pending" for r in last_verdicts(out / "nothing-here"))


def test_report_command_rejects_bad_input(capsys, tmp_path):
    assert main(["report", "--claim", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown claim 'nope'" in capsys.readouterr().err
    assert main(["report", "--workers", "0", "--out", str(tmp_path)]) == 2
    assert "--workers must be >= 1" in capsys.readouterr().err
    assert main(["report", "--configs", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    assert "no such folder" in capsys.readouterr().err
