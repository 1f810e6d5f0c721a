"""The results store of a sweep: one SQLite file, one row per task, a run table with provenance.

Layout (schema version 2; issue 5 item 2):

* ``meta(name TEXT PRIMARY KEY, value TEXT)`` holds ``schema_version``;
* ``runs(run_id, started, config_path, config_name, config_toml, environment)``: one row per
  invocation of a sweep, with the config text and ``environment()`` as JSON;
* ``results(key TEXT PRIMARY KEY, run_id REFERENCES runs, <one column per Record field>, task)``:
  one row per finished task, keyed by the task's canonical hash (``Task.key()``), with the full
  task dict as canonical JSON in ``task``. Everything analysis filters on is a real column;
  ``options`` is canonical JSON text (sorted keys, no spaces), booleans are 0/1 integers.

A row's ``status`` is ``ok``, ``diverged`` or ``failed``. For ``ok`` rows a CHECK constraint
makes every ErrorEstimate column except ``lower_bound`` NOT NULL, so an incomplete ``ok`` row can
never exist; for the other statuses those columns are NULL (``nfe`` may be set). SQLite stores a
NaN REAL as NULL: ``record`` refuses NaN in value / uncertainty / floor / t_end of an ok outcome
(the runner should report such a task as failed) and stores NaN in an optional real as None;
+-inf is stored as is.

Schema versions: version 2 added ``mass_outside`` (the fraction of the reference law's mass that
lies outside a grid evaluator's grid, NULL for other evaluators). A version-1 file is migrated in
place when opened for writing or reading: the column is added and filled, once, from the legacy
note text "X of the reference's mass lies outside the grid" (the only place version 1 kept it);
rows without that note get 0 for grid and tensor rows, NULL otherwise.

Re-runs: every recorded key, whatever its status, is finished (``finished_keys``); retrying the
failed ones is the runner's choice (``finished_keys(statuses=("ok", "diverged"))`` and
``record(..., replace=True)``).

Durability: the file is in WAL mode and every outcome is written by ONE transaction
(``record``), so a writer killed at any instant leaves either the whole row or none of it:
SQLite's WAL commit is atomic (a transaction counts only once its commit frame is in the WAL,
and a partial tail of frames is ignored on recovery). ``synchronous=FULL`` (the default) also
fsyncs the WAL at every commit, so a committed row survives a power loss or kernel crash (a
killed VM, a pre-empted cluster node), not only a killed process; it costs one fsync per task
(~3.5 ms measured on this machine's disk, in the writer only, so workers are not slowed), small
against task times. ``synchronous="NORMAL"`` survives SIGKILL equally (committed WAL frames are
in the OS page cache when the commit returns) but may lose the last commits on power loss.

The module imports only the standard library, so readers and writers start fast; ``environment``
imports torch and the package metadata lazily.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import operator
import os
import platform
import re
import socket
import sqlite3
import subprocess
import sys
import threading
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2
STATUSES = ("ok", "diverged", "failed")
SYNCHRONOUS = ("NORMAL", "FULL")

# Record keys in their fixed order (issue 5 shared design), with the SQL type of their column and
# whether the column is NOT NULL for every row ("all"), for ok rows only ("ok") or never ("").
_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("key", "TEXT", "all"),
    ("run_id", "INTEGER", "all"),
    ("target", "TEXT", "all"),
    ("dim", "INTEGER", "all"),
    ("process", "TEXT", "all"),
    ("sampler", "TEXT", "all"),
    ("options", "TEXT", "all"),
    ("steps", "INTEGER", "all"),
    ("perturbation", "TEXT", ""),
    ("metric", "TEXT", "all"),
    ("evaluator", "TEXT", "all"),
    ("seed", "INTEGER", "all"),
    ("n", "INTEGER", "all"),
    ("init", "TEXT", "all"),
    ("t_end_requested", "REAL", ""),
    ("final_noise", "INTEGER", "all"),
    ("denoise", "INTEGER", "all"),
    ("noise", "TEXT", "all"),
    ("status", "TEXT", "all"),
    ("message", "TEXT", "all"),
    ("value", "REAL", "ok"),
    ("uncertainty", "REAL", "ok"),
    ("evaluator_used", "TEXT", "ok"),
    ("floor", "REAL", "ok"),
    ("exact", "INTEGER", "ok"),
    ("lower_bound", "REAL", ""),
    ("nfe", "INTEGER", "ok"),
    ("t_end", "REAL", "ok"),
    ("n_samples", "INTEGER", "ok"),
    ("reference", "TEXT", "ok"),
    ("note", "TEXT", "ok"),
    ("mass_outside", "REAL", ""),
    ("eps_score", "REAL", ""),
    ("eps_jacobi", "REAL", ""),
    ("wall", "REAL", "all"),
    ("finished", "TEXT", "all"),
)
RECORD_FIELDS: tuple[str, ...] = tuple(name for name, _, _ in _COLUMNS)
_BOOL_FIELDS = frozenset({"final_noise", "denoise", "exact"})

# Task.as_dict() keys and the Record key each one is stored under.
_TASK_TO_RECORD = {
    "target": "target",
    "dim": "dim",
    "process": "process",
    "sampler": "sampler",
    "options": "options",
    "steps": "steps",
    "perturbation": "perturbation",
    "metric": "metric",
    "evaluator": "evaluator",
    "seed": "seed",
    "n": "n",
    "init": "init",
    "t_end": "t_end_requested",
    "final_noise": "final_noise",
    "denoise": "denoise",
    "noise": "noise",
}
# ErrorEstimate fields and the Record key each one is stored under.
_ESTIMATE_TO_RECORD = {
    "value": "value",
    "uncertainty": "uncertainty",
    "evaluator": "evaluator_used",
    "floor": "floor",
    "exact": "exact",
    "lower_bound": "lower_bound",
    "nfe": "nfe",
    "t_end": "t_end",
    "n_samples": "n_samples",
    "reference": "reference",
    "note": "note",
    "mass_outside": "mass_outside",
}
_OPTIONAL = ("lower_bound", "mass_outside")  # estimate fields that may be None in an ok row
# SQLite stores a NaN REAL as NULL: these must be numbers (inf allowed) in an ok outcome.
_OK_REALS = ("value", "uncertainty", "floor", "t_end")


class StoreError(ValueError):
    """A results store cannot be opened or used as asked (one-line message naming the file)."""


@dataclass(frozen=True)
class Outcome:
    """What a worker returns to the writer for one task (issue 5 shared design).

    ``estimate`` is ``dataclasses.asdict(ErrorEstimate)`` for status "ok" and None otherwise
    (a non-ok outcome may carry a dict with only ``nfe``); ``eps_score`` / ``eps_jacobi`` are the
    perturbation's score errors over the sampler's grid (None for the exact score); ``wall`` is
    the task's wall time in seconds.
    """

    key: str
    task: dict
    status: str
    message: str
    estimate: dict | None
    eps_score: float | None
    eps_jacobi: float | None
    wall: float


def _canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace: the same object always gives the same text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _is_nan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def outcome_row(run_id: int, outcome: Outcome) -> dict[str, Any]:
    """The results row (Record keys -> SQL values, plus ``task``) of ``outcome``; raises
    ValueError with one line when the outcome is malformed (the runner may call this inside a
    worker to turn a malformed estimate, e.g. a NaN value, into a failed task)."""
    if outcome.status not in STATUSES:
        raise ValueError(f"outcome status must be one of {STATUSES}, got {outcome.status!r}")
    if not isinstance(outcome.key, str) or not outcome.key:
        raise ValueError(f"outcome key must be a non-empty string, got {outcome.key!r}")
    if not isinstance(outcome.message, str):
        raise ValueError(f"outcome message must be a string, got {type(outcome.message).__name__}")
    task = outcome.task
    if not isinstance(task, dict):
        raise ValueError(f"outcome task must be a dict (Task.as_dict()), got {type(task).__name__}")
    missing = [k for k in _TASK_TO_RECORD if k not in task]
    if missing:
        raise ValueError(f"outcome task {outcome.key[:12]} lacks the task fields {missing}")
    if not isinstance(task["options"], dict):
        raise ValueError(f"task options must be a dict, got {type(task['options']).__name__}")
    row: dict[str, Any] = {name: None for name in RECORD_FIELDS}
    for src, dst in _TASK_TO_RECORD.items():
        row[dst] = task[src]
    try:
        row["options"] = _canonical_json(task["options"])
        task_json = _canonical_json(task)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"outcome task {outcome.key[:12]} is not JSON-serialisable: {exc}"
        ) from exc
    est = outcome.estimate
    if outcome.status == "ok":
        if not isinstance(est, dict):
            raise ValueError(f"an ok outcome needs an estimate dict, got {type(est).__name__}")
        missing = [k for k in _ESTIMATE_TO_RECORD if k not in _OPTIONAL and est.get(k) is None]
        if missing:
            raise ValueError(f"ok outcome {outcome.key[:12]} has no estimate fields {missing}")
        nan = [k for k in _OK_REALS if _is_nan(est[k])]
        if nan:
            raise ValueError(f"ok outcome {outcome.key[:12]} has NaN estimate fields {nan}")
        for src, dst in _ESTIMATE_TO_RECORD.items():
            row[dst] = est.get(src)
    elif est is not None:
        if not isinstance(est, dict):
            raise ValueError(f"outcome estimate must be a dict or None, got {type(est).__name__}")
        row["nfe"] = est.get("nfe")
    if not isinstance(outcome.wall, int | float) or _is_nan(outcome.wall):
        raise ValueError(f"outcome wall must be a number of seconds, got {outcome.wall!r}")
    row.update(
        key=outcome.key,
        run_id=run_id,
        status=outcome.status,
        message=outcome.message,
        eps_score=outcome.eps_score,
        eps_jacobi=outcome.eps_jacobi,
        wall=float(outcome.wall),
        finished=_now(),
    )
    for name, sqltype, required in _COLUMNS:
        row[name] = _coerce(name, sqltype, row[name], outcome.key)
        if required == "all" and row[name] is None:
            raise ValueError(f"outcome {outcome.key[:12]}: {name} is required, got None")
    row["task"] = task_json
    return row


def _coerce(name: str, sqltype: str, value: Any, key: str) -> Any:
    """A Python value as its column's SQL type: bool -> 0/1, integers (numpy ones too) -> int,
    reals -> float (NaN in an optional real becomes NULL, as SQLite stores it), text -> str;
    anything else is refused with one line."""
    if value is None:
        return None
    if name in _BOOL_FIELDS:
        if value in (True, False):
            return int(value)
    elif sqltype == "INTEGER":
        if not isinstance(value, float):
            try:
                return operator.index(value)
            except TypeError:
                pass
    elif sqltype == "REAL":
        if not isinstance(value, str | bytes):
            try:
                x = float(value)
            except (TypeError, ValueError):
                pass
            else:
                return None if math.isnan(x) else x
    elif isinstance(value, str):
        return value
    want = "a bool" if name in _BOOL_FIELDS else _WANT[sqltype]
    raise ValueError(f"outcome {key[:12]}: {name} must be {want}, got {value!r}")


_WANT = {"INTEGER": "an integer", "REAL": "a number", "TEXT": "a string"}


def _schema_sql() -> list[str]:
    cols = []
    for name, sqltype, required in _COLUMNS:
        spec = f"{name} {sqltype}"
        if name == "key":
            spec += " PRIMARY KEY"
        elif name == "run_id":
            spec += " NOT NULL REFERENCES runs(run_id)"
        elif required == "all":
            spec += " NOT NULL"
        cols.append(spec)
    cols.append("task TEXT NOT NULL")
    statuses = ", ".join(f"'{s}'" for s in STATUSES)
    cols.append(f"CHECK (status IN ({statuses}))")
    ok_required = " AND ".join(f"{name} IS NOT NULL" for name, _, r in _COLUMNS if r == "ok")
    cols.append(f"CHECK (status != 'ok' OR ({ok_required}))")
    body = ",\n    ".join(cols)
    return [
        "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS runs (\n    run_id INTEGER PRIMARY KEY,\n    started TEXT"
        " NOT NULL,\n    config_path TEXT,\n    config_name TEXT,\n    config_toml TEXT,\n"
        "    environment TEXT NOT NULL\n)",
        f"CREATE TABLE IF NOT EXISTS results (\n    {body}\n)",
        "CREATE INDEX IF NOT EXISTS results_curve ON results (target, sampler, metric, steps)",
    ]


_LEGACY_MASS = re.compile(r"([0-9.eE+-]+) of the reference's mass lies outside the grid")


def _legacy_mass_outside(evaluator: str | None, note: str | None) -> float | None:
    """Version 1 kept a grid's missing reference mass only in the note text (module docstring)."""
    if evaluator not in ("grid", "tensor"):
        return None
    found = _LEGACY_MASS.search(note or "")
    return float(found.group(1)) if found else 0.0


def _migrate_v1(conn: sqlite3.Connection) -> None:
    """Schema 1 -> 2: add ``mass_outside`` and fill it from the legacy notes (one transaction)."""
    conn.execute("ALTER TABLE results ADD COLUMN mass_outside REAL")
    rows = conn.execute(
        "SELECT key, evaluator_used, note FROM results WHERE status = 'ok'"
    ).fetchall()
    conn.executemany(
        "UPDATE results SET mass_outside = ? WHERE key = ?",
        [(_legacy_mass_outside(ev, note), key) for key, ev, note in rows],
    )
    conn.execute("UPDATE meta SET value = ? WHERE name = 'schema_version'", (str(SCHEMA_VERSION),))


class Store:
    """An SQLite results store (see the module docstring for schema and durability).

    ``Store(path)`` opens the file, creating it and the schema when missing (``create=False``
    refuses a missing file instead: readers use that). Calls are serialised by a lock, so one
    Store may be used from several threads of a process; several processes may read while one
    writes (WAL), and concurrent writers wait for each other (up to ``timeout`` seconds).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        create: bool = True,
        synchronous: str = "FULL",
        timeout: float = 30.0,
    ) -> None:
        self.path = Path(path)
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS}, got {synchronous!r}")
        if self.path.is_dir():
            raise StoreError(f"{self.path}: is a directory, not a results store")
        if not create and not self.path.exists():
            raise StoreError(f"{self.path}: no such results store")
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the results store ({exc})") from exc
        try:
            self._open(create, synchronous)
        except BaseException:
            self._conn.close()
            raise

    def _open(self, create: bool, synchronous: str) -> None:
        conn = self._conn
        try:
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not an SQLite results store ({exc})") from exc
        # refuse a foreign database before touching it (journal_mode=WAL is persistent)
        if tables and "meta" not in tables:
            raise StoreError(
                f"{self.path}: an SQLite database but not a results store (no meta table)"
            )
        if not tables and not create:
            raise StoreError(f"{self.path}: empty file, not a results store")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StoreError(
                f"{self.path}: cannot use WAL journaling (got {mode!r}); the store needs a local "
                "filesystem"
            )
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        if not tables:
            with self._transaction():
                for stmt in _schema_sql():
                    conn.execute(stmt)
                conn.execute(
                    "INSERT OR IGNORE INTO meta (name, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
        row = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
        version = row[0] if row else None
        if version == "1":
            with self._transaction():
                _migrate_v1(conn)
            version = str(SCHEMA_VERSION)
        if version != str(SCHEMA_VERSION):
            raise StoreError(
                f"{self.path}: results store schema version {version!r}; this package reads "
                f"version {SCHEMA_VERSION} (a newer package wrote it?)"
            )

    # ---- plumbing

    class _Tx:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn

        def __enter__(self) -> sqlite3.Connection:
            self.conn.execute("BEGIN IMMEDIATE")
            return self.conn

        def __exit__(self, exc_type, exc, tb) -> None:
            self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")

    def _transaction(self) -> Store._Tx:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on an exception): one atomic write."""
        return Store._Tx(self._conn)

    def _live(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"{self.path}: the store is closed")
        return self._conn

    # ---- writing

    def begin_run(
        self,
        config_path: str | os.PathLike | None,
        config_name: str | None,
        config_toml: str | None,
    ) -> int:
        """Add a run (now, the config's path, name and text, ``environment()``); its run_id."""
        env = _canonical_json(environment())
        path = None if config_path is None else str(config_path)
        with self._lock:
            conn = self._live()
            with self._transaction():
                cur = conn.execute(
                    "INSERT INTO runs (started, config_path, config_name, config_toml,"
                    " environment) VALUES (?, ?, ?, ?, ?)",
                    (_now(), path, config_name, config_toml, env),
                )
            return int(cur.lastrowid)

    def record(self, run_id: int, outcome: Outcome, *, replace: bool = False) -> None:
        """Write one outcome as one row in ONE transaction (all of it or nothing survives a kill).

        A key already in the store is refused (ValueError) unless ``replace=True``, which
        overwrites the old row (used to retry failed tasks). ``run_id`` must come from
        ``begin_run``. The row's ``finished`` time is the time of this call.
        """
        row = outcome_row(run_id, outcome)
        names = list(row)
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        sql = f"{verb} INTO results ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})"
        with self._lock:
            conn = self._live()
            try:
                with self._transaction():
                    conn.execute(sql, [row[n] for n in names])
            except sqlite3.IntegrityError as exc:
                text = str(exc)
                if "UNIQUE" in text:
                    raise ValueError(
                        f"task {outcome.key[:12]} is already recorded in {self.path}; "
                        "pass replace=True to overwrite it"
                    ) from exc
                if "FOREIGN KEY" in text:
                    raise ValueError(f"run_id {run_id} is not a run of {self.path}") from exc
                raise ValueError(
                    f"{self.path}: row of task {outcome.key[:12]} refused: {text}"
                ) from exc

    # ---- reading

    def finished_keys(self, statuses: tuple[str, ...] = STATUSES) -> set[str]:
        """Keys of the recorded tasks whose status is in ``statuses``.

        By default every recorded task counts as finished, whatever its status: a diverged or
        failed task is a result and is not re-run. A runner that wants to retry failures asks
        for ``statuses=("ok", "diverged")`` and records the retried tasks with ``replace=True``.
        """
        bad = [s for s in statuses if s not in STATUSES]
        if bad or isinstance(statuses, str):
            raise ValueError(f"statuses must be a tuple drawn from {STATUSES}, got {statuses!r}")
        marks = ", ".join("?" for _ in statuses)
        with self._lock:
            rows = self._live().execute(
                f"SELECT key FROM results WHERE status IN ({marks})", tuple(statuses)
            )
            return {r[0] for r in rows}

    def records(self, **filters: Any) -> list[dict]:
        """Records (dicts with exactly the keys ``RECORD_FIELDS``) in the order written.

        ``filters`` are Record keys: ``field=value`` keeps rows equal to value (None matches
        NULL), ``field=[v1, v2, ...]`` (list, tuple or set) rows equal to any of them. ``options``
        takes a dict. Options come back as a dict, booleans as bool, the rest as stored.
        """
        where, params = _where(filters)
        sql = f"SELECT {', '.join(RECORD_FIELDS)} FROM results{where} ORDER BY rowid"
        with self._lock:
            rows = self._live().execute(sql, params).fetchall()
        return [_decode(row) for row in rows]

    def runs(self) -> list[dict]:
        """The runs, oldest first, with ``environment`` decoded to a dict."""
        cols = ("run_id", "started", "config_path", "config_name", "config_toml", "environment")
        with self._lock:
            rows = self._live().execute(f"SELECT {', '.join(cols)} FROM runs ORDER BY run_id")
            out = [dict(zip(cols, r, strict=True)) for r in rows]
        for run in out:
            run["environment"] = json.loads(run["environment"])
        return out

    def close(self) -> None:
        """Close the connection (the last one to close checkpoints the WAL into the file)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sql_value(name: str, value: Any) -> Any:
    if name == "options":
        if not isinstance(value, dict):
            raise ValueError(f"the options filter takes a dict, got {type(value).__name__}")
        return _canonical_json(value)
    if name in _BOOL_FIELDS and value is not None:
        return int(bool(value))
    return value


def _where(filters: dict[str, Any]) -> tuple[str, list]:
    clauses, params = [], []
    for name, value in filters.items():
        if name not in RECORD_FIELDS:
            raise ValueError(f"unknown record field {name!r} in filters; fields: {RECORD_FIELDS}")
        if isinstance(value, list | tuple | set | frozenset):
            values = [_sql_value(name, v) for v in value]
            if not values:
                clauses.append("0")
                continue
            clauses.append(f"{name} IN ({', '.join('?' for _ in values)})")
            params.extend(values)
        elif value is None:
            clauses.append(f"{name} IS NULL")
        else:
            clauses.append(f"{name} = ?")
            params.append(_sql_value(name, value))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _decode(row: tuple) -> dict:
    rec = dict(zip(RECORD_FIELDS, row, strict=True))
    rec["options"] = json.loads(rec["options"])
    for name in _BOOL_FIELDS:
        if rec[name] is not None:
            rec[name] = bool(rec[name])
    return rec


# ---- provenance --------------------------------------------------------------------------------

# label -> distribution name (importlib.metadata), for the versions recorded with every run.
_PACKAGES = {
    "torch": "torch",
    "numpy": "numpy",
    "scipy": "scipy",
    "pot": "POT",
    "sympy": "sympy",
    "matplotlib": "matplotlib",
    "hypothesis": "hypothesis",
    "diffusion-convergence": "diffusion-convergence",
}


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def environment() -> dict:
    """Provenance of a run: python, package versions (None when not installed), torch default
    dtype, the device a sweep would use, git commit and dirty flag of the checkout this package
    is imported from (None outside a git checkout or without git), host, platform, cpu count."""
    import torch

    versions = {}
    for label, dist in _PACKAGES.items():
        try:
            versions[label] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[label] = None
    here = Path(__file__).resolve().parent
    commit = _git(["rev-parse", "HEAD"], here)
    status = _git(["status", "--porcelain", "--untracked-files=no"], here) if commit else None
    return {
        "python": platform.python_version(),
        "packages": versions,
        "torch_dtype": str(torch.get_default_dtype()).removeprefix("torch."),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "git_commit": commit or None,
        "git_dirty": None if status is None else bool(status),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "executable": sys.executable,
    }


# ---- export --------------------------------------------------------------------------------------


def load_results(path: str | os.PathLike, **filters: Any):
    """The records of the store at ``path`` (``Store.records`` filters): a pandas DataFrame with
    columns ``RECORD_FIELDS`` if pandas is importable, else the list of Record dicts. pandas is
    not a dependency of this package; the list form is the stable interface."""
    with Store(path, create=False) as store:
        records = store.records(**filters)
    try:
        import pandas
    except ImportError:
        return records
    return pandas.DataFrame.from_records(records, columns=list(RECORD_FIELDS))


def export_csv(path: str | os.PathLike, csv_path: str | os.PathLike) -> int:
    """Write the records of the store at ``path`` to ``csv_path``: a header of ``RECORD_FIELDS``
    then one line per record in the order written; options as canonical JSON, None as an empty
    field, booleans as True/False, floats in repr (round-trip) form. Returns the row count."""
    with Store(path, create=False) as store:
        records = store.records()
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(RECORD_FIELDS)
        for rec in records:
            writer.writerow(
                [
                    _canonical_json(rec[f])
                    if f == "options"
                    else ("" if rec[f] is None else rec[f])
                    for f in RECORD_FIELDS
                ]
            )
    return len(records)
