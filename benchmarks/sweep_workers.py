"""Benchmark: a sweep of >= 200 cheap tasks with the local executor, 1 worker vs 2 workers.

Run: python benchmarks/sweep_workers.py [CONFIG]   (default reports/configs/example_speed.toml)

Each run writes a fresh store in a temporary directory; the progress bar goes to stderr. Prints
the wall times and the speed-up; on the 2-core machine the ideal is 2x.
"""

import os
import sys
import tempfile
import time
from pathlib import Path

from convergence.sweep.config import load_config
from convergence.sweep.runner import run_sweep

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "reports/configs/example_speed.toml"
    config = load_config(path)
    walls = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            summary = run_sweep(config, Path(tmp) / "bench.sqlite", workers=workers)
            walls[workers] = time.perf_counter() - t0
        print(
            f"workers={workers}: {summary.recorded} tasks ({summary.ok} ok, {summary.failed} "
            f"failed, {summary.diverged} diverged) in {walls[workers]:.1f} s "
            f"(load {os.getloadavg()[0]:.1f})",
            flush=True,
        )
    print(f"speed-up 2 workers / 1 worker: {walls[1] / walls[2]:.2f}x")


if __name__ == "__main__":
    main()
