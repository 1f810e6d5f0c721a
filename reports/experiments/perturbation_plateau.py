"""Error plateau against the size of a score error (issue 4 acceptance; THEORY.md 2.4 item 5).

ddim and ddpm on gmm:d=1,k=3,seed=0 under VP at a large step count, with the score perturbed by
sin:eps=E,omega=W for E from 1e-3 to 1e-1; TV by the exact grid evaluator, eps_score and
eps_jacobi in closed form over the run's time grid. Prints a table and the fitted slopes of
log TV against log eps_score (1 = linear growth).

Run: python reports/experiments/perturbation_plateau.py [T] [omega]
"""

import sys

import numpy as np
import torch

from analytic.processes import make_process
from convergence.evaluators import error
from convergence.samplers import get_spec
from convergence.samplers.base import prepare
from convergence.scores import parse_perturbation, score_error
from convergence.targets import parse_target

EPS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)


def main() -> None:
    T = int(sys.argv[1]) if len(sys.argv) > 1 else 640
    omega = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
    torch.set_num_threads(1)
    target, vp = parse_target("gmm:d=1,k=3,seed=0"), make_process("vp")
    for sampler in ("ddim", "ddpm"):
        _, _, schedule = prepare(get_spec(sampler), vp, T, None, {})
        times = [t for t, _ in schedule]
        clean = error(sampler, target, vp, T, metric="tv").value
        print(f"{sampler}, T = {T}: unperturbed TV {clean:.3e}")
        print(f"{'perturbation':>26} {'eps_score':>10} {'eps_jacobi':>10} {'TV':>10}")
        sizes, tvs = [], []
        for eps in EPS:
            spec = f"sin:eps={eps},omega={omega}"
            p = parse_perturbation(spec, target)
            size = score_error(target, vp, p, times)
            tv = error(sampler, target, vp, T, metric="tv", perturbation=p).value
            sizes.append(size.eps_score)
            tvs.append(tv)
            print(
                f"{spec:>26} {size.eps_score:10.3e} {size.eps_jacobi:10.3e} {tv:10.3e}", flush=True
            )
        slope = np.polyfit(np.log(sizes), np.log(tvs), 1)[0]
        big = [i for i, v in enumerate(tvs) if v > 10 * clean]
        tail = np.polyfit(np.log(np.array(sizes)[big]), np.log(np.array(tvs)[big]), 1)[0]
        print(f"slope of log TV vs log eps_score: {slope:.3f} (all), {tail:.3f} (TV > 10x clean)\n")


if __name__ == "__main__":
    main()
