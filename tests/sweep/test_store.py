"""The SQLite results store: round trip, keys, provenance, export, refusal of bad files, and
atomicity under SIGKILL with real writer processes."""

from __future__ import annotations

import csv
import dataclasses
import datetime
import json
import math
import os
import platform
import random
import signal
import sqlite3
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy
import pytest

from convergence.evaluators import ErrorEstimate
from convergence.sweep import store as store_mod
from convergence.sweep.store import (
    RECORD_FIELDS,
    Outcome,
    Store,
    StoreError,
    environment,
    export_csv,
    load_results,
)

# Helpers shared with the SIGKILL child process (which runs them from this text, so that it can
# start without importing torch: see test_sigkill_loses_only_the_task_in_flight).
HELPERS = r'''
import hashlib


def make_task(**over):
    task = {
        "target": "gmm:d=2,k=3,seed=0", "dim": 2, "process": "vp", "sampler": "ddim",
        "options": {"eta": 0.5, "grid": "quadratic"}, "steps": 16, "perturbation": None,
        "metric": "kl", "evaluator": "auto", "seed": 0, "n": 2000, "init": "exact",
        "t_end": None, "final_noise": False, "denoise": True, "noise": "independent",
    }
    task.update(over)
    return task


def make_estimate(**over):
    est = {
        "value": 1.25e-3, "uncertainty": 3.0e-17, "evaluator": "gaussian", "metric": "kl",
        "steps": 16, "nfe": 16, "t_end": 1e-3, "exact": True, "floor": 0.0, "n_samples": 0,
        "lower_bound": None, "note": "", "reference": "q_t_end", "mass_outside": None,
    }
    est.update(over)
    return est


def big_note(key, size=100_000):
    """A note that depends on the key, so a torn or mixed-up row cannot pass for intact."""
    block = hashlib.sha256(key.encode()).hexdigest()
    return (block * (size // len(block) + 1))[:size]


def ok_outcome(Outcome, key, note_size=0):
    note = big_note(key, note_size) if note_size else ""
    return Outcome(key, make_task(seed=len(key)), "ok", "", make_estimate(note=note), None, None,
                   0.5)
'''
_helpers: dict = {}
exec(HELPERS, _helpers)
make_task, make_estimate, big_note = (
    _helpers["make_task"],
    _helpers["make_estimate"],
    _helpers["big_note"],
)


def ok_outcome(key: str, note_size: int = 0) -> Outcome:
    return _helpers["ok_outcome"](Outcome, key, note_size)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "results.sqlite"


def three_outcomes() -> list[Outcome]:
    """One outcome of each status, with every optional field set where the status allows."""
    ok = Outcome(
        "a" * 64,
        make_task(perturbation="bias:eps=0.01", t_end=0.002, final_noise=True),
        "ok",
        "",
        make_estimate(lower_bound=1.0e-3, note="tail mass 1e-12", n_samples=5, exact=False),
        0.01,
        0.2,
        1.5,
    )
    diverged = Outcome(
        "b" * 64,
        make_task(sampler="em", process="ve", steps=4, options={}),
        "diverged",
        "DivergenceError: em: non-finite state at step 3 (t=0.25)",
        None,
        None,
        None,
        0.25,
    )
    failed = Outcome(
        "c" * 64,
        make_task(metric="tv", evaluator="grid"),
        "failed",
        "ValueError: grid evaluator needs d <= 2",
        {"nfe": 7},
        None,
        None,
        0.125,
    )
    return [ok, diverged, failed]


def expected_record(outcome: Outcome, run_id: int) -> dict:
    """The Record the design prescribes for an outcome (all but ``finished``), written out
    field by field."""
    t, e = outcome.task, outcome.estimate or {}
    ok = outcome.status == "ok"
    return {
        "key": outcome.key,
        "run_id": run_id,
        "target": t["target"],
        "dim": t["dim"],
        "process": t["process"],
        "sampler": t["sampler"],
        "options": t["options"],
        "steps": t["steps"],
        "perturbation": t["perturbation"],
        "metric": t["metric"],
        "evaluator": t["evaluator"],
        "seed": t["seed"],
        "n": t["n"],
        "init": t["init"],
        "t_end_requested": t["t_end"],
        "final_noise": t["final_noise"],
        "denoise": t["denoise"],
        "noise": t["noise"],
        "status": outcome.status,
        "message": outcome.message,
        "value": e["value"] if ok else None,
        "uncertainty": e["uncertainty"] if ok else None,
        "evaluator_used": e["evaluator"] if ok else None,
        "floor": e["floor"] if ok else None,
        "exact": e["exact"] if ok else None,
        "lower_bound": e["lower_bound"] if ok else None,
        "nfe": e.get("nfe"),
        "t_end": e["t_end"] if ok else None,
        "n_samples": e["n_samples"] if ok else None,
        "reference": e["reference"] if ok else None,
        "note": e["note"] if ok else None,
        "mass_outside": e.get("mass_outside") if ok else None,
        "eps_score": outcome.eps_score,
        "eps_jacobi": outcome.eps_jacobi,
        "wall": outcome.wall,
    }


# ---- contract with the rest of the package


def test_field_maps_match_error_estimate_and_task():
    est = dataclasses.asdict(ErrorEstimate(1.0, 0.0, "gaussian", "kl", 4, 4, 1e-3, True))
    assert set(est) == set(make_estimate())
    # every ErrorEstimate field is stored, except metric/steps which the task already holds
    assert set(store_mod._ESTIMATE_TO_RECORD) == set(est) - {"metric", "steps"}
    assert set(store_mod._TASK_TO_RECORD) == set(make_task())
    stored = set(store_mod._TASK_TO_RECORD.values()) | set(store_mod._ESTIMATE_TO_RECORD.values())
    outcome_fields = {"key", "run_id", "status", "message", "eps_score", "eps_jacobi", "wall"}
    assert stored | outcome_fields | {"finished"} == set(RECORD_FIELDS)
    assert len(RECORD_FIELDS) == 36


def test_task_fields_match_config_task():
    config = pytest.importorskip("convergence.sweep.config")
    names = {f.name for f in dataclasses.fields(config.Task)}
    assert names == set(store_mod._TASK_TO_RECORD)


# ---- round trip


def test_round_trip_of_every_status(db: Path):
    before = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)
    with Store(db) as s:
        run = s.begin_run("cfg.toml", "demo", 'name = "demo"\n')
        for outcome in three_outcomes():
            s.record(run, outcome)
        recs = s.records()
    after = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=1)
    assert [r["key"] for r in recs] == [o.key for o in three_outcomes()]
    for rec, outcome in zip(recs, three_outcomes(), strict=True):
        assert list(rec) == list(RECORD_FIELDS)
        finished = datetime.datetime.fromisoformat(rec.pop("finished"))
        assert before <= finished <= after
        assert rec == expected_record(outcome, run)
        for name in ("final_noise", "denoise"):
            assert type(rec[name]) is bool
    assert type(recs[0]["exact"]) is bool and recs[0]["exact"] is False
    assert recs[0]["options"] == {"eta": 0.5, "grid": "quadratic"}
    assert recs[2]["nfe"] == 7 and recs[2]["value"] is None


def test_full_task_is_stored_as_canonical_json(db: Path):
    outcome = three_outcomes()[0]
    with Store(db) as s:
        s.record(s.begin_run(None, None, None), outcome)
    (text,) = sqlite3.connect(db).execute("SELECT task FROM results").fetchone()
    assert json.loads(text) == outcome.task
    assert text == json.dumps(outcome.task, sort_keys=True, separators=(",", ":"))


def test_infinite_values_survive_and_nan_is_refused(db: Path):
    with Store(db) as s:
        run = s.begin_run(None, None, None)
        inf = make_estimate(value=math.inf, uncertainty=math.inf)
        s.record(run, Outcome("inf", make_task(), "ok", "", inf, None, None, 0.0))
        nan = Outcome("nan", make_task(), "ok", "", make_estimate(value=math.nan), None, None, 0.0)
        with pytest.raises(ValueError, match=r"NaN estimate fields \['value'\]"):
            s.record(run, nan)
        (rec,) = s.records()
    assert rec["value"] == math.inf and rec["uncertainty"] == math.inf


def test_numpy_scalars_are_stored_as_python_numbers(db: Path):
    est = make_estimate(value=numpy.float64(0.5), nfe=numpy.int64(12), n_samples=numpy.int32(3))
    eps = (numpy.float64(math.nan), numpy.float32(0.25))  # a NaN optional real is stored as NULL
    outcome = Outcome("np", make_task(), "ok", "", est, *eps, 1)
    with Store(db) as s:
        s.record(s.begin_run(None, None, None), outcome)
        (rec,) = s.records()
    got = [rec[k] for k in ("value", "nfe", "n_samples", "eps_score", "eps_jacobi", "wall")]
    assert got == [0.5, 12, 3, None, 0.25, 1.0]
    assert [type(x) for x in got] == [float, int, int, type(None), float, float]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"status": "done"}, "status must be one of"),
        ({"estimate": None}, "an ok outcome needs an estimate dict"),
        ({"estimate": make_estimate(nfe=None)}, r"no estimate fields \['nfe'\]"),
        ({"task": {"target": "gaussian:d=2"}}, "lacks the task fields"),
        ({"task": make_task(options=(("eta", 1.0),))}, "task options must be a dict"),
        ({"key": ""}, "key must be a non-empty string"),
        ({"task": make_task(seed=numpy.int64(0))}, "is not JSON-serialisable"),
        ({"wall": math.nan}, "wall must be a number"),
        ({"task": make_task(steps=3.5)}, "steps must be an integer, got 3.5"),
        ({"task": make_task(final_noise="yes")}, "final_noise must be a bool"),
        ({"task": make_task(target=None)}, "target is required, got None"),
        ({"estimate": make_estimate(reference=3)}, "reference must be a string"),
        ({"estimate": make_estimate(value="small")}, "value must be a number"),
    ],
)
def test_malformed_outcomes_are_refused(db: Path, change: dict, match: str):
    bad = dataclasses.replace(ok_outcome("k1"), **change)
    with Store(db) as s:
        run = s.begin_run(None, None, None)
        with pytest.raises(ValueError, match=match):
            s.record(run, bad)
        assert s.records() == []


def test_unknown_run_is_refused(db: Path):
    with Store(db) as s:
        with pytest.raises(ValueError, match="run_id 7 is not a run"):
            s.record(7, ok_outcome("k1"))


# ---- keys


def test_finished_keys_by_status(db: Path):
    ok, diverged, failed = three_outcomes()
    with Store(db) as s:
        assert s.finished_keys() == set()
        run = s.begin_run(None, None, None)
        for outcome in (ok, diverged, failed):
            s.record(run, outcome)
        assert s.finished_keys() == {ok.key, diverged.key, failed.key}
        assert s.finished_keys(statuses=("ok", "diverged")) == {ok.key, diverged.key}
        assert s.finished_keys(statuses=("failed",)) == {failed.key}
        with pytest.raises(ValueError, match="statuses must be a tuple drawn from"):
            s.finished_keys(statuses=("ok", "done"))
        with pytest.raises(ValueError, match="statuses must be a tuple drawn from"):
            s.finished_keys(statuses="ok")


def test_duplicate_key_refused_and_replace(db: Path):
    failed = three_outcomes()[2]
    retried = dataclasses.replace(ok_outcome(failed.key), task=failed.task)
    with Store(db) as s:
        run1 = s.begin_run(None, "first", None)
        s.record(run1, failed)
        with pytest.raises(ValueError, match="already recorded.*replace=True"):
            s.record(run1, retried)
        (rec,) = s.records()
        assert rec["status"] == "failed"  # the refused write changed nothing
        run2 = s.begin_run(None, "retry", None)
        s.record(run2, retried, replace=True)
        (rec,) = s.records()
    assert (rec["status"], rec["run_id"], rec["value"], rec["message"]) == ("ok", run2, 1.25e-3, "")


def test_record_filters(db: Path):
    grid = [("ddim", 8, {}), ("ddim", 16, {}), ("em", 8, {"eta": 1.0}), ("em", 16, {})]
    outcomes = [
        dataclasses.replace(ok_outcome(f"k{i}"), task=make_task(sampler=s, steps=t, options=o))
        for i, (s, t, o) in enumerate(grid)
    ]
    with Store(db) as s:
        run = s.begin_run(None, None, None)
        for o in outcomes:
            s.record(run, o)
        s.record(run, three_outcomes()[1])

        def keys(**f):
            return [r["key"] for r in s.records(**f)]

        assert keys(sampler="ddim") == ["k0", "k1"]
        assert keys(sampler="em", steps=[16, 4]) == ["k3", "b" * 64]
        assert keys(steps=(8,), options={}) == ["k0"]
        assert keys(options={"eta": 1.0}) == ["k2"]
        assert keys(status="diverged", value=None) == ["b" * 64]
        assert keys(exact=True, denoise=1) == ["k0", "k1", "k2", "k3"]
        assert keys(sampler=[]) == []
        with pytest.raises(ValueError, match="unknown record field 'solver'"):
            s.records(solver="ddim")


# ---- runs and provenance


def test_runs_store_config_and_environment(db: Path):
    with Store(db) as s:
        r1 = s.begin_run(Path("configs/a.toml"), "a", "steps = [4, 8]\n")
        r2 = s.begin_run(None, None, None)
        runs = s.runs()
    assert [r["run_id"] for r in runs] == [r1, r2] == [1, 2]
    assert runs[0]["config_path"] == str(Path("configs/a.toml"))
    assert (runs[0]["config_name"], runs[0]["config_toml"]) == ("a", "steps = [4, 8]\n")
    assert runs[1]["config_path"] is None
    env = runs[0]["environment"]
    assert {"python", "packages", "torch_dtype", "device", "git_commit", "hostname"} <= set(env)
    assert {"torch", "numpy", "scipy", "pot", "sympy", "matplotlib"} <= set(env["packages"])
    assert env["python"] == platform.python_version()
    assert env["cpu_count"] == os.cpu_count()
    datetime.datetime.fromisoformat(runs[0]["started"])


def test_environment_values():
    import torch

    env = environment()
    assert env["packages"]["numpy"] == numpy.__version__
    assert env["packages"]["torch"] == torch.__version__
    assert env["torch_dtype"] == str(torch.get_default_dtype()).removeprefix("torch.")
    assert env["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    commit = env["git_commit"]
    assert commit is None or (len(commit) == 40 and int(commit, 16) >= 0)
    assert (env["git_dirty"] is None) == (commit is None)
    json.dumps(env)  # JSON-able


def test_environment_without_git(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(store_mod.subprocess, "run", no_git)
    env = environment()
    assert env["git_commit"] is None and env["git_dirty"] is None


# ---- the file


def test_wal_mode_and_full_sync(db: Path):
    with Store(db) as s:
        assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        # journal_mode=WAL is persistent: any other connection sees it
        assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with Store(db, synchronous="NORMAL") as s:
        assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    with pytest.raises(ValueError, match="synchronous must be one of"):
        Store(db, synchronous="OFF")


def test_reopen_keeps_rows_and_schema_version(db: Path):
    with Store(db) as s:
        s.record(s.begin_run(None, None, None), ok_outcome("k1"))
    with Store(db, create=False) as s:
        assert [r["key"] for r in s.records()] == ["k1"]
    version = sqlite3.connect(db).execute("SELECT value FROM meta WHERE name='schema_version'")
    assert version.fetchone()[0] == str(store_mod.SCHEMA_VERSION)


def test_non_database_file_is_refused(tmp_path: Path):
    text = tmp_path / "notes.txt"
    text.write_text("these are not the results you are looking for\n" * 20)
    with pytest.raises(StoreError, match=r"notes.txt: not an SQLite results store") as info:
        Store(text)
    assert "\n" not in str(info.value)
    assert text.read_text().startswith("these are not")  # untouched
    with pytest.raises(StoreError, match="not an SQLite results store"):
        load_results(text)


def test_foreign_sqlite_database_is_refused_untouched(tmp_path: Path):
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="an SQLite database but not a results store"):
        Store(other)
    assert sqlite3.connect(other).execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_newer_schema_is_refused(db: Path):
    Store(db).close()
    conn = sqlite3.connect(db)
    conn.execute("UPDATE meta SET value = '3' WHERE name = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="schema version '3'; this package reads version 2"):
        Store(db)


def test_version_1_store_is_migrated_with_the_grid_mass_from_its_notes(db: Path):
    """A version-1 file has no mass_outside column: opening it adds the column and fills it from
    the legacy note (the grid's fraction of reference mass off the grid), 0 for a grid row
    without that note and NULL for another evaluator."""
    with Store(db) as s:
        run = s.begin_run(None, "x", None)
        notes = {
            "a": ("grid", "608 grid nodes; 0.68 of the reference's mass lies outside the grid"),
            "b": ("grid", "340 grid nodes"),
            "c": ("gaussian", ""),
        }
        for key, (ev, note) in notes.items():
            s.record(
                run,
                Outcome(
                    key,
                    make_task(seed=ord(key)),
                    "ok",
                    "",
                    make_estimate(evaluator=ev, note=note),
                    None,
                    None,
                    0.1,
                ),
            )
    conn = sqlite3.connect(db)  # rewrite the file as version 1 wrote it
    conn.execute("ALTER TABLE results DROP COLUMN mass_outside")
    conn.execute("UPDATE meta SET value = '1' WHERE name = 'schema_version'")
    conn.commit()
    conn.close()
    with Store(db, create=False) as s:
        got = {r["key"]: r["mass_outside"] for r in s.records()}
    assert got == {"a": 0.68, "b": 0.0, "c": None}
    version = sqlite3.connect(db).execute("SELECT value FROM meta WHERE name='schema_version'")
    assert version.fetchone()[0] == "2"


def test_missing_file_and_directory_are_refused(tmp_path: Path):
    with pytest.raises(StoreError, match="no such results store"):
        Store(tmp_path / "absent.sqlite", create=False)
    with pytest.raises(StoreError, match="no such results store"):
        export_csv(tmp_path / "absent.sqlite", tmp_path / "out.csv")
    assert not (tmp_path / "absent.sqlite").exists()
    with pytest.raises(StoreError, match="is a directory"):
        Store(tmp_path)


def test_closed_store_refuses_calls(db: Path):
    s = Store(db)
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        s.records()


# ---- export and loading


def test_export_csv_parses_back(db: Path, tmp_path: Path):
    with Store(db) as s:
        run = s.begin_run(None, None, None)
        for o in three_outcomes():
            s.record(run, o)
        recs = s.records()
    out = tmp_path / "results.csv"
    assert export_csv(db, out) == 3
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == list(RECORD_FIELDS)
    assert len(rows) == 4
    parsed = [dict(zip(RECORD_FIELDS, r, strict=True)) for r in rows[1:]]
    for row, rec in zip(parsed, recs, strict=True):
        assert json.loads(row["options"]) == rec["options"]
        assert row["key"] == rec["key"] and row["status"] == rec["status"]
        for name in ("value", "uncertainty", "lower_bound", "eps_score", "wall", "t_end"):
            assert row[name] == ("" if rec[name] is None else repr(rec[name]))
            if rec[name] is not None:
                assert float(row[name]) == rec[name]  # exact round trip
        assert row["exact"] == ("" if rec["exact"] is None else str(rec["exact"]))
        assert int(row["steps"]) == rec["steps"]
    assert parsed[1]["message"] == three_outcomes()[1].message
    assert parsed[1]["perturbation"] == ""


def test_load_results_without_pandas(db: Path, monkeypatch):
    with Store(db) as s:
        run = s.begin_run(None, None, None)
        for o in three_outcomes():
            s.record(run, o)
        expected = s.records()
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas -> ImportError
    got = load_results(db)
    assert isinstance(got, list) and got == expected
    assert load_results(db, status=["ok", "failed"]) == [expected[0], expected[2]]


def test_load_results_with_pandas_gives_a_dataframe(db: Path, monkeypatch):
    calls = []

    class FakeFrame:
        @classmethod
        def from_records(cls, records, columns):
            calls.append((records, columns))
            return "frame"

    monkeypatch.setitem(sys.modules, "pandas", types.SimpleNamespace(DataFrame=FakeFrame))
    with Store(db) as s:
        s.record(s.begin_run(None, None, None), ok_outcome("k1"))
        expected = s.records()
    assert load_results(db) == "frame"
    assert calls == [(expected, list(RECORD_FIELDS))]


# ---- atomicity under SIGKILL, with real processes

# The child loads store.py from its file: importing it through the package would import torch
# (convergence/__init__), ~5 s per process on this machine; the store itself needs only the
# standard library. It prints each key after record() returns, i.e. after the commit.
CHILD = (
    HELPERS
    + r"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("store_under_test", sys.argv[1])
store = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = store
spec.loader.exec_module(store)
db, run_id, prefix, note_size = sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
with store.Store(db) as s:
    print("ready", flush=True)
    i = 0
    while True:
        key = f"{prefix}-{i:05d}"
        s.record(run_id, ok_outcome(store.Outcome, key, note_size))
        print(key, flush=True)
        i += 1
"""
)
NOTE_SIZE = 100_000
REQUIRED_OK = [name for name, _, req in store_mod._COLUMNS if req in ("all", "ok")]


def check_store(db: Path) -> list[str]:
    """Integrity of the file and completeness of every row; returns the keys."""
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = conn.execute(f"SELECT key, note, {', '.join(REQUIRED_OK)} FROM results").fetchall()
        (n_distinct,) = conn.execute("SELECT COUNT(DISTINCT key) FROM results").fetchone()
    finally:
        conn.close()
    keys = [r[0] for r in rows]
    assert n_distinct == len(keys)
    for key, note, *required in rows:
        assert None not in required, key
        assert note == big_note(key, NOTE_SIZE), key  # exact content, never torn or mixed
    return keys


def test_sigkill_loses_only_the_task_in_flight(db: Path):
    with Store(db) as s:
        run = s.begin_run(None, "kill-test", None)
    rng = random.Random(20240501)
    env = {**os.environ, "PYTHONPATH": str(Path(store_mod.__file__).resolve().parents[2])}
    acked: set[str] = set()
    for round_ in range(3):
        delay = rng.uniform(0.1, 0.6)
        prefix = f"r{round_}"
        args = [store_mod.__file__, str(db), str(run), prefix, str(NOTE_SIZE)]
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE, text=True, env=env
        )
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(delay)
            os.kill(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == -signal.SIGKILL
        round_acked = set(out.split())
        assert len(round_acked) >= 2  # it was killed while writing, not before
        assert Path(f"{db}-wal").exists()  # killed without closing: recovery is exercised
        keys = check_store(db)
        mine = {k for k in keys if k.startswith(prefix + "-")}
        # every acknowledged commit is there; at most the one in flight is extra (killed
        # between its commit and its print), and it is the next one in sequence
        assert round_acked <= mine
        extra = mine - round_acked
        assert extra <= {f"{prefix}-{len(round_acked):05d}"}
        acked |= mine
        assert set(keys) == acked
    before = len(acked)
    with Store(db) as s:  # a new writer continues the killed store
        run2 = s.begin_run(None, "after", None)
        for i in range(3):
            s.record(run2, ok_outcome(f"after-{i}", NOTE_SIZE))
        assert len(s.records()) == before + 3
        assert len(s.finished_keys()) == before + 3
    assert len(check_store(db)) == before + 3
