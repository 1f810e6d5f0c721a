"""Benchmark: the grid evaluator, default grid (two resolutions, as ``convergence.error`` runs
it), under VP: by default in 1-D, T = 1000 steps, on gmm:d=1,k=3,seed=0; pass a 2-D target to time
the cut-cell TV and the semi-dual W2.

The first evaluation in a process imports torch's forward-mode machinery (about 1.5 s); a warm-up
run at T = 4 pays that before the clock starts. The last line is the total over the nine
evaluations: compare versions by it, in paired, interleaved runs.

Run: python benchmarks/grid_evaluator.py [T] [TARGET]
     python benchmarks/grid_evaluator.py 100 gmm:d=2,k=3,seed=0
"""

import os
import sys
import time

import torch

from analytic.processes import make_process
from convergence.evaluators import error
from convergence.targets import parse_target


def main() -> None:
    T = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    torch.set_num_threads(1)  # vectors of a few thousand nodes: threads only add synchronisation
    target = parse_target(sys.argv[2] if len(sys.argv) > 2 else "gmm:d=1,k=3,seed=0")
    process = make_process("vp")
    error("ddim", target, process, 4, metric="tv", evaluator="grid")  # warm-up: imports
    total = 0.0
    for sampler in ("ddpm", "ddim", "ode-heun"):
        for metric in ("tv", "kl", "w2"):
            t0 = time.perf_counter()
            est = error(sampler, target, process, T, metric=metric, evaluator="grid")
            wall = time.perf_counter() - t0
            total += wall
            print(
                f"{sampler:9s} {metric:3s} T={T}: {est.value:.6e} +- {est.uncertainty:.1e} "
                f"in {wall:.1f} s ({est.note.split(';')[0]}; load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
    print(f"total {total:.2f} s", flush=True)


if __name__ == "__main__":
    main()
