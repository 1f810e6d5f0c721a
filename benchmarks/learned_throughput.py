"""Samples per second of ddim with a score network against ddim with the exact mixture score.

For each d, one ddim run of T steps on n points of ``gmm:d=D,k=3,seed=0`` (VP) with

* the exact score (``GaussianMixture.score_fn``, float64 and float32 states), and
* a ``ScoreNetwork`` of the default ``NetworkConfig`` size (float32; its weights do not change
  the cost, so it is not trained here), float32 states,

timed as one warm-up run then --repeats runs (median), on the device ``--device`` resolves to
(``convergence.learned.device``: CUDA when present). Reported: samples/s = n / time of a run,
and the ratio network / exact. Both use the same sampler code path (``convergence.sample``).

    python benchmarks/learned_throughput.py [--dims 64 256 1024] [--n 4096] [--steps 32]
                                            [--repeats 3] [--device auto] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from analytic.processes import make_process
from convergence import sample
from convergence.learned.device import resolve_device
from convergence.learned.network import NetworkConfig, ScoreNetwork
from convergence.targets import parse_target


def rate(run, n: int, repeats: int) -> float:
    """Median samples per second of ``run`` (one warm-up call first)."""
    run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return n / statistics.median(times)


def measure(d: int, n: int, steps: int, repeats: int, device: torch.device) -> dict:
    process = make_process("vp")
    target = parse_target(f"gmm:d={d},k=3,seed=0")
    x64 = target.noised(process, 1.0).sample(n, seed=0).to(device)
    x32 = x64.to(torch.float32)
    exact = target.score_fn(process)
    net = ScoreNetwork(NetworkConfig(dim=d, process="vp"), seed=0, device=device).eval()
    net.requires_grad_(False)

    def run(score, x):
        return lambda: sample("ddim", score, process, x, steps)

    with torch.no_grad():
        out = {
            "d": d,
            "n": n,
            "steps": steps,
            "device": str(device),
            "parameters": net.n_parameters(),
            "exact_f64": rate(run(exact, x64), n, repeats),
            "exact_f32": rate(run(exact, x32), n, repeats),
            "network_f32": rate(run(net.score, x32), n, repeats),
        }
    out["network_over_exact_f32"] = out["network_f32"] / out["exact_f32"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dims", type=int, nargs="+", default=[64, 256, 1024])
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None, metavar="PATH")
    args = p.parse_args()
    device = resolve_device(args.device)
    rows = [measure(d, args.n, args.steps, args.repeats, device) for d in args.dims]
    print(
        f"ddim, T = {args.steps}, n = {args.n}, device {device}, torch threads "
        f"{torch.get_num_threads()}: samples per second"
    )
    heads = ("d", "params", "exact f64", "exact f32", "network", "net/exact")
    print(" ".join(f"{h:>{w}}" for h, w in zip(heads, (6, 9, 11, 11, 11, 9), strict=True)))
    for r in rows:
        print(
            f"{r['d']:>6} {r['parameters']:>9} {r['exact_f64']:>11.0f} {r['exact_f32']:>11.0f} "
            f"{r['network_f32']:>11.0f} {r['network_over_exact_f32']:>9.2f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
