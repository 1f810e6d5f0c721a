"""Sweeps with real processes: resuming, SIGKILL, divergence, Ctrl-C, dask, the CLI."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from convergence.cli import main
from convergence.sweep.config import load_config
from convergence.sweep.runner import run_sweep
from convergence.sweep.store import Store

ROOT = Path(__file__).resolve().parents[2]

SMALL = """
name = "small"
process = "vp"
targets = ["gaussian:d=1", "gaussian:d=2"]
steps = [4, 8, 16, 32]
metrics = ["kl", "w2"]
seeds = [0]

[[samplers]]
name = "ddim"

[[samplers]]
name = "ddpm"
"""  # 2 targets x 4 steps x 2 metrics x 2 samplers = 32 tasks

DIVERGING = """
process = "ve"
targets = ["gaussian:d=1"]
steps = [200]
metrics = ["w2"]
n = 200

[[samplers]]
name = "langevin"
options = { h = 100.0 }

[[samplers]]
name = "ddim"
"""


def _write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _rows(store: Path) -> list[tuple]:
    with sqlite3.connect(store) as conn:
        return conn.execute("SELECT key, status, value FROM results ORDER BY key").fetchall()


def test_second_run_computes_nothing(tmp_path):
    config = load_config(_write(tmp_path, SMALL))
    store = tmp_path / "r.sqlite"
    first = run_sweep(config, store, workers=2, progress=False)
    assert (first.total, first.ok, first.skipped) == (32, 32, 0)
    second = run_sweep(config, store, workers=2, progress=False)
    assert (second.recorded, second.skipped) == (0, 32)
    assert len(_rows(store)) == 32
    with Store(store) as s:
        assert len(s.runs()) == 2


def test_diverging_sampler_is_recorded_and_the_sweep_completes(tmp_path):
    config = load_config(_write(tmp_path, DIVERGING))
    store = tmp_path / "r.sqlite"
    summary = run_sweep(config, store, workers=1, progress=False)
    assert (summary.ok, summary.diverged, summary.failed) == (1, 1, 0)
    with Store(store) as s:
        (bad,) = [r for r in s.records() if r["sampler"] == "langevin"]
    assert bad["status"] == "diverged" and "step" in bad["message"] and bad["value"] is None


def _cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "convergence.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: the kill reaches the workers too
        # a terminal's default: a shell's background job (as CI runs us) ignores SIGINT, and the
        # child would inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_rows(store: Path, n: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if store.exists():
            try:
                if len(_rows(store)) >= n:
                    return
            except sqlite3.OperationalError:
                pass  # the schema is being created
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} rows after {timeout} s")


def test_sigkill_mid_run_then_resume_gives_every_task_once(tmp_path):
    config = _write(tmp_path, SMALL)
    store = tmp_path / "r.sqlite"
    proc = _cli(["sweep", str(config), "--out", str(store), "--workers", "2", "--no-progress"])
    _wait_for_rows(store, 6, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = _rows(store)
    assert 6 <= len(partial) < 32
    with sqlite3.connect(store) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert main(["sweep", str(config), "--out", str(store), "--workers", "2", "--no-progress"]) == 0
    rows = _rows(store)
    keys = [k for k, _, _ in rows]
    assert len(rows) == 32 and len(set(keys)) == 32
    assert all(status == "ok" and value is not None for _, status, value in rows)
    expected = {t.key() for t in load_config(config).tasks()}
    assert set(keys) == expected


def test_ctrl_c_stops_cleanly_and_records_what_finished(tmp_path):
    # 56 tasks with up to 256 steps: far more work than the time the signal takes to arrive
    text = SMALL.replace("steps = [4, 8, 16, 32]", "steps = [4, 8, 16, 32, 64, 128, 256]")
    config = _write(tmp_path, text)
    store = tmp_path / "r.sqlite"
    proc = _cli(["sweep", str(config), "--out", str(store), "--workers", "1", "--no-progress"])
    _wait_for_rows(store, 3, proc)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    rows = _rows(store)
    assert 3 <= len(rows) < 56 and all(s == "ok" for _, s, _ in rows)
    summary = run_sweep(load_config(config), store, workers=2, progress=False)
    assert summary.skipped == len(rows) and len(_rows(store)) == 56


def test_dask_local_cluster_gives_the_same_rows(tmp_path):
    distributed = pytest.importorskip("distributed")
    config = load_config(_write(tmp_path, SMALL))
    local = tmp_path / "local.sqlite"
    run_sweep(config, local, workers=2, progress=False)
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        remote = tmp_path / "dask.sqlite"
        summary = run_sweep(
            config, remote, executor="dask", scheduler=cluster.scheduler_address, progress=False
        )
    assert summary.ok == 32
    assert _rows(local) == _rows(remote)


def test_cli_dry_run_and_invalid_configs(tmp_path, capsys):
    config = _write(tmp_path, SMALL)
    assert main(["sweep", str(config), "--dry-run", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tasks"] == 32
    assert not (tmp_path / "sweep.sqlite").exists()
    bad = _write(tmp_path, SMALL.replace('name = "ddpm"', 'name = "nope"'), "bad.toml")
    assert main(["sweep", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "samplers[1].name" in err and "\n" not in err
    assert main(["sweep", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml" in capsys.readouterr().err


def test_cli_export_fit_and_figure(tmp_path, capsys):
    config = _write(tmp_path, SMALL)
    store = tmp_path / "r.sqlite"
    assert main(["sweep", str(config), "--out", str(store), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["export", str(store), "--csv", str(tmp_path / "r.csv")]) == 0
    assert len((tmp_path / "r.csv").read_text().strip().splitlines()) == 33
    assert "32 rows" in capsys.readouterr().out
    assert main(["fit", str(store), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)
    assert main(["figure", str(store), "--out", str(tmp_path / "fig")]) == 0
    assert list((tmp_path / "fig").glob("*.png")) and list((tmp_path / "fig").glob("*.pdf"))
    assert main(["fit", str(tmp_path / "none.sqlite")]) == 2


def test_tasks_differing_only_in_the_metric_run_as_one_group():
    from convergence.sweep.config import parse_config
    from convergence.sweep.runner import group_tasks

    cfg = parse_config(
        'targets = ["gaussian:d=1"]\nsteps = [4, 8]\nmetrics = ["kl", "w2", "tv"]\n'
        'seeds = [0, 1]\n[[samplers]]\nname = "ddim"\n'
    )
    groups = group_tasks(cfg.tasks())
    assert len(groups) == 4 and all(len(g) == 3 for g in groups)  # (seed, steps) x 3 metrics
    for g in groups:
        assert sorted(t.metric for t in g) == ["kl", "tv", "w2"]
        assert len({(t.seed, t.steps) for t in g}) == 1
    assert [t for g in groups for t in g] != [] and sum(map(len, groups)) == len(cfg.tasks())
