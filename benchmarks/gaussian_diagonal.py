"""Benchmark: exact Gaussian evaluator on a diagonal Gaussian target in d = 10^4, T = 1000 steps.

Diagonal laws are propagated coordinate-wise (O(d) per step; convergence.evaluators.gaussian).
Run: python benchmarks/gaussian_diagonal.py [d] [T]
"""

import os
import sys
import time

import torch

from analytic.processes import make_process
from convergence.evaluators import error
from convergence.targets import parse_target


def main() -> None:
    d = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    T = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    torch.set_num_threads(1)  # O(d) vector operations: threads only add synchronisation
    target = parse_target(f"gmm:d={d},k=1,seed=0,cov=diag")
    process = make_process("vp")
    for sampler in ("ddpm", "ddim", "ode-heun"):
        error(sampler, target, process, 10, metric="kl")  # warm-up
        t0 = time.perf_counter()
        est = error(sampler, target, process, T, metric="kl")
        wall = time.perf_counter() - t0
        print(
            f"{sampler:9s} d={d} T={T}: KL={est.value:.6e} ({est.evaluator}) in {wall:.3f} s "
            f"(load {os.getloadavg()[0]:.1f})"
        )


if __name__ == "__main__":
    main()
