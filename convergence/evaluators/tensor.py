"""Exact errors on tensorised targets in any d (THEORY.md 2.3 and 3.6).

For a product target q = prod_i q_i, a Gaussian-kernel chain with isotropic noise and scalar
coefficients moves every coordinate independently when the score is coordinate-separable (the
exact score of a product, plus a separable perturbation): the output is p = prod_i p_i with p_i
the output of the same sampler on the one-dimensional target q_i. Each p_i is measured exactly on
a grid (``convergence.evaluators.grid``), and

    KL(q || p) = sum_i KL(q_i || p_i),          W2(q, p)^2 = sum_i W2(q_i, p_i)^2,
    1 - H^2(q, p) = prod_i (1 - H^2(q_i, p_i))  (Bhattacharyya coefficients multiply),

evaluated as H^2 = -expm1(sum_i log1p(-H_i^2)). TV does not factorise; it is reported through the
Hellinger sandwich H^2 <= TV <= H sqrt(2 - H^2) (upper bound as the value, lower bound beside it;
the bound has TV's log-log slope, THEORY.md 3.4), and exactly when d = 1. Identical factors (with
identical perturbation components) are computed once.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from analytic.gmm import GaussianMixture
from analytic.processes import Process
from analytic.product import ProductMixture
from convergence.evaluators.grid import METRICS, GridResult, memo_grid_metrics
from convergence.samplers.base import SamplerSpec

TV_SANDWICH_NOTE = (
    "tv of a product is the Hellinger upper bound H sqrt(2 - H^2) (TV does not factorise); same "
    "slope as TV, lower bound H^2 in lower_bound"
)


def tensor_metrics(
    spec: SamplerSpec,
    target: ProductMixture,
    process: Process,
    steps: int,
    *,
    initial: Callable[[GaussianMixture], GaussianMixture],
    t_end: float,
    perturbation=None,
    resolution: float,
    metrics: tuple[str, ...] = METRICS,
    **kwargs,
) -> tuple[GridResult, bool]:
    """Combined grid metrics of all coordinates and whether TV is exact (d = 1); ``initial``
    maps a factor to its initial law; TV and W2 only when named in ``metrics``."""
    if not isinstance(target, ProductMixture):
        raise ValueError("the tensor evaluator needs a product target (product:d=...,k=...)")
    if perturbation is not None and not perturbation.separable:
        raise ValueError(
            f"perturbation {perturbation.spec!r} is not coordinate-separable; the tensor "
            "evaluator needs a separable one"
        )
    groups: dict[tuple, list[int]] = {}
    for rep, members in target.distinct_factors():
        for i in members:
            key = (rep, None if perturbation is None else perturbation.coordinate(i).spec)
            groups.setdefault(key, []).append(i)
    kl = w2sq = log_bc = mass = 0.0
    tv = 0.0
    nfe = nodes = 0
    for (rep, _), members in groups.items():
        factor = target.factor(rep)
        part = None if perturbation is None else perturbation.coordinate(members[0])
        res = memo_grid_metrics(
            spec,
            factor,
            process,
            steps,
            start=initial(factor),
            reference=factor.noised(process, t_end),
            t_end=t_end,
            perturbation=part,
            resolution=resolution,
            metrics=metrics,
            **kwargs,
        )
        m = len(members)
        kl += m * res.kl
        w2sq = None if w2sq is None or res.w2sq is None else w2sq + m * res.w2sq
        log_bc += m * math.log1p(-min(res.h2, 1.0))
        tv, nfe, nodes, mass = res.tv, res.nfe, max(nodes, res.nodes), res.mass
    h2 = -math.expm1(log_bc)
    exact_tv = target.dim == 1
    if not exact_tv:
        tv = math.sqrt(h2) * math.sqrt(max(2.0 - h2, 0.0))
    return GridResult(kl, tv, h2, w2sq, nfe, nodes, mass), exact_tv
