"""Running a sweep: one group of tasks per worker call, any ``concurrent.futures.Executor``, one
writer.

Workers run ``run_tasks([task_dict, ...]) -> [Outcome, ...]``, i.e. ``run_task`` on each task of
a group (a pure function of the task: no shared state). A group is the tasks that differ only in
the metric: one sampler run at one step count, measured in several metrics, so an evaluator
that computes every metric from one propagated density (grid, tensor) does that work once
(``convergence.evaluators.grid`` memoises it within the worker process).
the parent process is the only one that writes to the store, one transaction per finished task
(``convergence.sweep.store``), so a store is consistent whatever the executor is and a killed
sweep loses only the tasks in flight. Finished keys are skipped on the next run.

Executors:

* ``local``: a process pool (``spawn`` start method, one torch thread per worker: the tasks are
  small and two workers on two cores must not fight over threads);
* ``dask``: ``distributed.Client(ADDRESS).get_executor()`` (the optional ``dask`` extra); the
  workers need this package importable.

Ctrl-C: pending tasks are cancelled, the tasks already finished are recorded, and the sweep
returns with ``interrupted=True``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context

from convergence.sweep.config import SweepConfig, Task
from convergence.sweep.store import Outcome, Store, outcome_row

EXECUTORS = ("local", "dask")


# ---- one task ----------------------------------------------------------------------------------


def run_task(task: dict) -> Outcome:
    """Run one task (``Task.as_dict()``) and return its outcome; never raises for a task's own
    failure: divergence gives status "diverged", any other error "failed" with a one-line
    message."""
    import torch

    from analytic.processes import make_process
    from convergence.evaluators import error
    from convergence.samplers.base import DivergenceError
    from convergence.targets import parse_target

    key = Task.from_dict(task).key()
    start = time.perf_counter()
    torch.set_num_threads(1)
    try:
        target = parse_target(task["target"])
        process = make_process(task["process"])
        est = error(
            task["sampler"],
            target,
            process,
            task["steps"],
            metric=task["metric"],
            evaluator=task["evaluator"],
            n=task["n"],
            seed=task["seed"],
            t_end=task["t_end"],
            init=task["init"],
            final_noise=task["final_noise"],
            denoise=task["denoise"],
            noise=task["noise"],
            perturbation=task["perturbation"],
            **task["options"],
        )
        eps = _score_error(task, target, process)
        outcome = Outcome(
            key,
            task,
            "ok",
            "",
            dataclasses.asdict(est),
            eps[0],
            eps[1],
            time.perf_counter() - start,
        )
        outcome_row(
            0, outcome
        )  # a value the store refuses (e.g. NaN) fails here, not in the writer
        return outcome
    except DivergenceError as exc:
        return Outcome(
            key, task, "diverged", _one_line(exc), None, None, None, time.perf_counter() - start
        )
    except Exception as exc:  # a task's failure is data, not a crash of the sweep
        return Outcome(
            key, task, "failed", _one_line(exc), None, None, None, time.perf_counter() - start
        )


def _score_error(task: dict, target, process) -> tuple[float | None, float | None]:
    """eps_score and eps_jacobi of the task's perturbation over the sampler's own time grid
    (``convergence.scores.score_error_on_schedule``); (None, None) for the exact score."""
    if task["perturbation"] is None:
        return None, None
    from convergence.scores import parse_perturbation, score_error_on_schedule

    err, _ = score_error_on_schedule(
        target,
        process,
        parse_perturbation(task["perturbation"], target),
        task["sampler"],
        task["steps"],
        t_end=task["t_end"],
        options=task["options"],
        seed=task["seed"],
    )
    return err.eps_score, err.eps_jacobi


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


# ---- executors -------------------------------------------------------------------------------


def _init_worker() -> None:
    """One torch thread per worker; Ctrl-C is the parent's to handle (the workers of a terminal's
    process group ignore it and finish or are cancelled)."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


def make_executor(kind: str, workers: int | None = None, scheduler: str | None = None):
    """A context manager yielding an Executor: ``local`` (process pool) or ``dask``."""
    if kind == "local":
        if scheduler is not None:
            raise ValueError("--scheduler applies to --executor dask only")
        n = workers if workers is not None else (os.cpu_count() or 1)
        if n < 1:
            raise ValueError(f"--workers must be >= 1, got {n}")
        return ProcessPoolExecutor(
            max_workers=n, mp_context=get_context("spawn"), initializer=_init_worker
        )
    if kind == "dask":
        if not scheduler:
            raise ValueError(
                "--executor dask needs --scheduler ADDRESS (e.g. tcp://127.0.0.1:8786)"
            )
        try:
            from distributed import Client
        except ImportError as exc:
            raise ValueError(
                "--executor dask needs dask.distributed: pip install 'diffusion-convergence[dask]'"
            ) from exc
        return _DaskExecutor(Client(scheduler))
    raise ValueError(f"executor must be one of {EXECUTORS}, got {kind!r}")


class _DaskExecutor:
    """The client's concurrent.futures executor, closing the client on exit."""

    def __init__(self, client) -> None:
        self.client = client
        self.executor = client.get_executor(pure=False)

    def __enter__(self) -> Executor:
        return self.executor

    def __exit__(self, *exc) -> None:
        try:
            self.executor.shutdown(wait=False)
        finally:
            self.client.close()


# ---- progress ----------------------------------------------------------------------------------


@dataclass
class Progress:
    """A one-line progress bar with counts and ETA on ``stream`` (rewritten in place on a
    terminal, one line per 10% otherwise)."""

    total: int
    stream: object = field(default_factory=lambda: sys.stderr)
    width: int = 30
    done: int = 0
    failed: int = 0
    diverged: int = 0
    start: float = field(default_factory=time.perf_counter)
    _last_tenth: int = -1

    def update(self, outcome: Outcome) -> None:
        self.done += 1
        self.failed += outcome.status == "failed"
        self.diverged += outcome.status == "diverged"
        tty = getattr(self.stream, "isatty", lambda: False)()
        tenth = (10 * self.done) // max(self.total, 1)
        if tty or tenth != self._last_tenth or self.done == self.total:
            self._last_tenth = tenth
            end = "\n" if (not tty or self.done == self.total) else ""
            print(("\r" if tty else "") + self.line(), end=end, file=self.stream, flush=True)

    def line(self) -> str:
        frac = self.done / max(self.total, 1)
        bar = "#" * round(self.width * frac) + "." * (self.width - round(self.width * frac))
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done) if self.done else math.nan
        return (
            f"[{bar}] {self.done}/{self.total}  failed {self.failed}  diverged {self.diverged}  "
            f"elapsed {_clock(elapsed)}  ETA {_clock(eta)}"
        )


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


# ---- the sweep ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepSummary:
    """Counts of a sweep run: tasks in the config, skipped as finished before, run now (by
    status), and whether Ctrl-C stopped it."""

    store: str
    run_id: int
    total: int
    skipped: int
    ok: int
    diverged: int
    failed: int
    interrupted: bool
    wall: float

    @property
    def recorded(self) -> int:
        return self.ok + self.diverged + self.failed


def run_sweep(
    config: SweepConfig,
    store_path: str | os.PathLike,
    *,
    executor: str = "local",
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
    retry_failed: bool = False,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> SweepSummary:
    """Run every task of ``config`` not yet in the store at ``store_path`` (see module docstring).

    ``executor`` is "local" or "dask" (a pool made for this sweep and closed after it), or an
    open ``concurrent.futures.Executor`` that several sweeps share (``make_executor``).

    ``retry_failed`` re-runs tasks recorded as failed (diverged tasks are results, never re-run).
    """
    start = time.perf_counter()
    tasks = config.tasks()
    with Store(store_path) as store:
        statuses = ("ok", "diverged") if retry_failed else ("ok", "diverged", "failed")
        finished = store.finished_keys(statuses=statuses)
        todo = [t for t in tasks if t.key() not in finished]
        run_id = store.begin_run(str(config.path), config.name, config.source)
        counts = {"ok": 0, "diverged": 0, "failed": 0}
        bar = Progress(len(todo)) if progress and todo else None
        interrupted = False
        replace = retry_failed

        def record(outcome: Outcome) -> None:
            store.record(run_id, outcome, replace=replace)
            counts[outcome.status] += 1
            if bar is not None:
                bar.update(outcome)
            if on_outcome is not None:
                on_outcome(outcome)

        if todo and isinstance(executor, Executor):  # the caller's pool, kept open
            interrupted = _drain(executor, todo, record)
        elif todo:
            with _single_threaded_children(), make_executor(executor, workers, scheduler) as pool:
                interrupted = _drain(pool, todo, record)
    return SweepSummary(
        str(store_path),
        run_id,
        len(tasks),
        len(tasks) - len(todo),
        counts["ok"],
        counts["diverged"],
        counts["failed"],
        interrupted,
        time.perf_counter() - start,
    )


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def _single_threaded_children():
    """Worker processes start with one BLAS/OpenMP thread (numpy and scipy read these variables
    at import, before any initializer runs): N workers on N cores must not each start N threads.
    The parent's environment is restored afterwards; variables the user set are kept."""
    saved = {k: os.environ.get(k) for k in THREAD_VARIABLES}
    for k in THREAD_VARIABLES:
        os.environ.setdefault(k, "1")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_tasks(tasks: list[dict]) -> list[Outcome]:
    """``run_task`` on each task of a group, in order."""
    return [run_task(t) for t in tasks]


def group_tasks(tasks: Iterable[Task]) -> list[list[Task]]:
    """The tasks grouped by everything but the metric, in order of first appearance."""
    groups: dict[tuple, list[Task]] = {}
    for t in tasks:
        groups.setdefault(dataclasses.replace(t, metric=""), []).append(t)
    return list(groups.values())


def _drain(pool: Executor, todo: Iterable[Task], record: Callable[[Outcome], None]) -> bool:
    """Submit the task groups, record outcomes as groups finish; on Ctrl-C cancel what has not
    started, record what finished, return True."""
    futures: dict[Future, list[Task]] = {
        pool.submit(run_tasks, [t.as_dict() for t in g]): g for g in group_tasks(todo)
    }
    pending = set(futures)
    try:
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                for outcome in _outcomes_of(fut, futures[fut]):
                    record(outcome)
    except KeyboardInterrupt:
        for fut in pending:
            fut.cancel()
        for fut in [f for f in pending if f.done() and not f.cancelled()]:
            for outcome in _outcomes_of(fut, futures[fut]):
                record(outcome)
        return True
    return False


def _outcomes_of(fut: Future, group: list[Task]) -> list[Outcome]:
    """The worker's outcomes, or failed ones when the worker itself died (e.g. out of memory)."""
    try:
        return fut.result()
    except Exception as exc:
        msg = _one_line(exc) or traceback.format_exception_only(exc)[-1].strip()
        return [
            Outcome(t.key(), t.as_dict(), "failed", f"worker: {msg}", None, None, None, 0.0)
            for t in group
        ]
