"""Throughput of the closed-form score GaussianMixture.score(x) against its matmul floor.

Measures score(x) for n points of a K-component mixture in d dimensions (isotropic and full
covariances, float64 and float32) and compares it with the time of the matrix products the
computation cannot avoid, timed on the same machine in the same run with random inputs of the
same shapes and dtype:

    isotropic: x . mu_k for all n, K             one (n, d) x (d, K) product
               sum_k r_k mu_k / v_k              one (n, K) x (K, d) product
    full:      L_k^{-1} x for all k              one (n, d) x (d, K d) product
               sum_k L_k^{-T} (...)              one (n, K d) x (K d, d) product
               (the same shapes when the factor is an eigenbasis: Q_k^T x and sum_k Q_k (...))

    floor = time of those two products;  ratio = score time / floor time.

Each timing is one warm-up call followed by --repeats calls timed with time.perf_counter (score and
floor calls alternate); the median (and min) is reported. The mixture is built outside the timed
region; the warm-up call fills the per-dtype parameter cache (GaussianMixture._params), so the
timed calls run with a warm cache.
The target is the isotropic score within 3x of its floor.

    python benchmarks/score_throughput.py [--n 65536 --k 16 --d 64 --repeats 5] [--quick]
                                          [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import torch

from analytic.gmm import GaussianMixture

TARGET = 3.0


def timed(fns: list[Callable[[], object]], repeats: int) -> list[tuple[float, float]]:
    """One warm-up call of each fn, then (median, min) wall time in seconds of each over `repeats`
    rounds; the fns alternate within a round so that a load change hits all of them alike."""
    times: list[list[float]] = [[] for _ in fns]
    for fn in fns:
        fn()
    for _ in range(repeats):
        for fn, ts in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [(statistics.median(ts), min(ts)) for ts in times]


def make_mixture(kind: str, k: int, d: int, seed: int = 0) -> GaussianMixture:
    """Random mixture: Dirichlet-like weights, N(0, 9 I) means, variances of order 1."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.rand(k, generator=gen, dtype=torch.float64) + 0.5
    mu = 3.0 * torch.randn(k, d, generator=gen, dtype=torch.float64)
    if kind == "isotropic":
        cov = 0.5 + torch.rand(k, generator=gen, dtype=torch.float64)
    else:
        a = torch.randn(k, d, d, generator=gen, dtype=torch.float64) / d**0.5
        cov = a @ a.transpose(-1, -2) + 0.5 * torch.eye(d, dtype=torch.float64)
    return GaussianMixture(w / w.sum(), mu, cov)


def floor_fn(kind: str, n: int, k: int, d: int, dtype: torch.dtype) -> Callable[[], object]:
    """The two unavoidable products of `kind` on random inputs of the right shapes and dtype."""
    m = k if kind == "isotropic" else k * d
    a, b = torch.randn(n, d, dtype=dtype), torch.randn(d, m, dtype=dtype)
    r, c = torch.randn(n, m, dtype=dtype), torch.randn(m, d, dtype=dtype)
    return lambda: (a @ b, r @ c)


def threadpool_state() -> dict:
    """Thread counts of torch's pools and the relevant environment variables."""
    state = {
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
    }
    for line in torch.__config__.parallel_info().splitlines():
        if "get_max_threads()" in line:
            key, _, val = line.strip().partition(" : ")
            state[key.removesuffix("()")] = int(val)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        state[var] = os.environ.get(var, "unset")
    return state


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=65536)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="tiny run (n=1024, K=4, d=8, 3 repeats)")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.n, args.k, args.d, args.repeats = 1024, 4, 8, 3
    n, k, d = args.n, args.k, args.d

    env = {"torch": torch.__version__, "threads": threadpool_state(), "n": n, "K": k, "d": d}
    env.update(repeats=args.repeats, loadavg_1min=os.getloadavg()[0], target_ratio=TARGET)
    print(f"torch {torch.__version__}, torch.get_num_threads() = {torch.get_num_threads()}")
    print("threadpools: " + ", ".join(f"{key}={val}" for key, val in env["threads"].items()))
    print(
        f"n={n}, K={k}, d={d}, repeats={args.repeats} (1 warm-up + median/min of repeats), "
        f"1-min load average {env['loadavg_1min']:.2f} on {os.cpu_count()} cpus"
    )
    print("floor: isotropic = (n,d)x(d,K) + (n,K)x(K,d); full = (n,d)x(d,Kd) + (n,Kd)x(Kd,d)")

    rows = []
    for kind in ("isotropic", "full"):
        gmm = make_mixture(kind, k, d)
        for dtype in (torch.float64, torch.float32):
            x = gmm.sample(n, seed=1, dtype=dtype)
            score, floor = (lambda g=gmm, x=x: g.score(x)), floor_fn(kind, n, k, d, dtype)
            (t_score, t_score_min), (t_floor, t_floor_min) = timed([score, floor], args.repeats)
            times = {"score_ms": t_score, "score_min_ms": t_score_min, "floor_ms": t_floor}
            row = {"kind": kind, "dtype": str(dtype).removeprefix("torch.")}
            row |= {key: 1e3 * t for key, t in (times | {"floor_min_ms": t_floor_min}).items()}
            row |= {"ratio": t_score / t_floor, "points_per_s": n / t_score}
            rows.append(row | {"cache_warm": (dtype, x.device) in gmm._cache})

    head = (
        f"{'kind':<10} {'dtype':<8} {'score ms':>9} {'(min)':>8} {'floor ms':>9} {'(min)':>8} "
        f"{'ratio':>6} {'points/s':>10}  cache"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        print(
            f"{r['kind']:<10} {r['dtype']:<8} {r['score_ms']:9.2f} {r['score_min_ms']:8.2f} "
            f"{r['floor_ms']:9.2f} {r['floor_min_ms']:8.2f} {r['ratio']:6.2f} "
            f"{r['points_per_s']:10.3g}  {'warm' if r['cache_warm'] else 'COLD'}"
        )
    print("ratio = median score time / median floor time\n")
    checks = {}
    for r in rows:
        if r["kind"] == "isotropic":
            checks[r["dtype"]] = r["ratio"] <= TARGET
            verdict = "yes" if checks[r["dtype"]] else "no"
            print(f"isotropic within {TARGET:g}x of the floor ({r['dtype']}): {verdict}")

    result = {"environment": env, "results": rows, "isotropic_within_target": checks}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
