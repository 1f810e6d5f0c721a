"""Measured orders on a non-Gaussian mixture with the exact grid / tensorised evaluators
(issue 4 acceptance): gmm:d=1,k=3,seed=0 (grid) or product:d=16,k=3,seed=0 (tensor), VP, uniform
time grid, exact initialisation, T = 20 .. 1280. One propagation per (sampler, T, resolution)
gives every metric; slopes by ``convergence.rates.fit_rate``.

Run: python reports/experiments/grid_rates.py [target] [samplers]
"""

import sys
import time

import torch

from analytic.processes import make_process
from convergence.evaluators import grid, initial_law
from convergence.evaluators.tensor import tensor_metrics
from convergence.rates import fit_rate, local_slopes
from convergence.samplers import get_spec
from convergence.targets import parse_target

STEPS = [20, 40, 80, 160, 320, 640, 1280]
SAMPLERS = "ddim,ode-euler,ddpm,em,li-accel-ddpm,ode-heun,dpm-solver-2,li-accel-ddim"


def main() -> None:
    spec_text = sys.argv[1] if len(sys.argv) > 1 else "gmm:d=1,k=3,seed=0"
    names = (sys.argv[2] if len(sys.argv) > 2 else SAMPLERS).split(",")
    torch.set_num_threads(1)
    target, vp = parse_target(spec_text), make_process("vp")
    t_end = vp.t_end_default
    print(f"target {spec_text}, VP, t_end {t_end}, exact initialisation", flush=True)
    for name in names:
        spec = get_spec(name)
        t0 = time.time()
        values = {"tv": [], "kl": [], "w2": []}
        for T in STEPS:
            if spec_text.startswith("product"):
                res, _ = tensor_metrics(
                    spec,
                    target,
                    vp,
                    T,
                    initial=lambda f: initial_law(f, vp, "exact"),
                    t_end=t_end,
                    resolution=grid.RESOLUTION,
                )
            else:
                res = grid.grid_metrics(
                    spec,
                    target,
                    vp,
                    T,
                    start=target.noised(vp, 1.0),
                    reference=target.noised(vp, t_end),
                    t_end=t_end,
                )
            for m in values:
                values[m].append(grid.metric_value(res, m))
        for m, v in values.items():
            expected = spec.expected_slope(m)
            fit = fit_rate(STEPS, v, expected_slope=expected)
            loc = " ".join(f"{s:+.3f}" for s in local_slopes(STEPS, v))
            print(
                f"{name:14s} {m:3s} slope {fit.slope:+.3f} [{fit.ci_low:+.3f}, {fit.ci_high:+.3f}] "
                f"window {fit.window} expected {expected:+.1f} {fit.verdict}; local {loc}; "
                f"e(20) {v[0]:.3e} e(1280) {v[-1]:.3e}",
                flush=True,
            )
        print(f"  ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
