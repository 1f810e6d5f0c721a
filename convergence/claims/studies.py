"""The claims' side studies: exact or sampled computations that are not sweeps over T.

A ``Study`` has a name (its file, ``<out>/studies/<name>.json``) and a function of ``quick``
returning a JSON-ready dict; the report computes each once and stores it whole, judges read the
stored file. The momentum and noise-level studies live with their mathematics
(``convergence.stationary``, ``convergence.noise_levels``), claim 10's in
``convergence.claims.learned``; the small ones are here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Study:
    """A named side study: ``run(quick) -> dict``."""

    name: str
    run: Callable[[bool], dict]


def _momentum(quick: bool) -> dict:
    from convergence.stationary import momentum_study

    return momentum_study(quick=quick)


def _noise_levels(quick: bool) -> dict:
    from convergence.noise_levels import annealed_study

    return annealed_study(quick=quick)


def _learned_error(quick: bool) -> dict:
    from convergence.claims.learned import learned_error_study

    return learned_error_study(quick)


def _run_from_q1(target_spec: str, process_name: str, sampler: str, n: int, seed: int, **options):
    """(target, process, x, result): ``sampler`` run once from n exact draws x of q_1 (the
    exact score; ``steps`` 1, which the adaptive samplers ignore)."""
    from analytic.processes import make_process
    from convergence.experiment import sample
    from convergence.targets import parse_target

    target, process = parse_target(target_spec), make_process(process_name)
    x = target.noised(process, 1.0).sample(n, seed=seed)
    res = sample(sampler, target.score_fn(process), process, x.clone(), 1, seed=seed, **options)
    return target, process, x, res


def ggf_rejections(*, quick: bool = False, seed: int = 0) -> dict:
    """Rejected-step fraction and NFE of ``ggf`` per eps_rel on claim 6's target (VP and VE),
    from one run of n samples started from the exact q_1 (info["rejected_fraction"])."""
    import torch

    n = 100 if quick else 2000
    rows = []
    for name in ("vp", "ve"):
        for eps_rel in (0.05, 0.1) if quick else (0.01, 0.02, 0.05, 0.1):
            *_, res = _run_from_q1(
                "gmm:d=2,k=3,seed=0", name, "ggf", n, seed, eps_rel=eps_rel, tweedie="none"
            )
            rows.append(
                {
                    "process": name,
                    "eps_rel": eps_rel,
                    "rejected_fraction": float(res.info["rejected_fraction"]),
                    "nfe": int(res.nfe),
                    "mean_nfe": float(torch.as_tensor(res.info["nfe_per_sample"]).double().mean()),
                    "n": n,
                }
            )
    return {"rows": rows, "bias": ggf_bias(quick=quick, seed=seed)}


def ggf_bias(*, quick: bool = False, seed: int = 0) -> list[dict]:
    """Whether ggf's output law converges as its tolerance shrinks: on gaussian:d=D (VP, exact
    start, tweedie "none") the ratio tr Cov(output) / tr Cov(q_t_end) against the exact
    reference, with a 95% CI from the sample covariance (var of the trace estimate
    2 tr(C^2) / (n - 1) for Gaussian samples), per eps_rel and d. A ratio that stays away from 1
    as eps_rel -> 0 is a bias of the method, not a discretisation error."""
    import torch

    n = 200 if quick else 2000
    rows = []
    for d in (1,) if quick else (1, 64):
        for eps_rel in (0.1, 0.03) if quick else (0.1, 0.01, 0.001):
            target, process, _, res = _run_from_q1(
                f"gaussian:d={d}",
                "vp",
                "ggf",
                n,
                seed,
                eps_rel=eps_rel,
                eps_abs=eps_rel,
                tweedie="none",
            )
            ref = target.noised(process, res.t_end).covariance_matrices()[0]
            cov = torch.atleast_2d(torch.cov(res.x.T))
            ratio = float(torch.trace(cov) / torch.trace(ref))
            se = math.sqrt(2.0 * float(torch.trace(ref @ ref)) / (n - 1)) / float(torch.trace(ref))
            rows.append(
                {
                    "d": d,
                    "eps_rel": eps_rel,
                    "variance_ratio": ratio,
                    "ci": Z95 * se,
                    "rejected_fraction": float(res.info["rejected_fraction"]),
                    "nfe": int(res.nfe),
                    "n": n,
                }
            )
    return rows


def _gaussian_flow(target, process, t0: float, t1: float):
    """The exact probability-flow map q_t0 -> q_t1 of a Gaussian target N(m, S):
    x -> a1 m + C1^{1/2} C0^{-1/2} (x - a0 m), C_t = alpha_t^2 S + sigma_t^2 I (all C_t share
    S's eigenvectors, so the square roots commute)."""
    import torch

    m = target.means[0]
    lam, v = torch.linalg.eigh(target.covariance_matrices()[0])
    a0, s0 = float(process.alpha(t0)), float(process.sigma(t0))
    a1, s1 = float(process.alpha(t1)), float(process.sigma(t1))
    scale = torch.sqrt((a1**2 * lam + s1**2) / (a0**2 * lam + s0**2))
    mat = v @ torch.diag(scale) @ v.T
    return lambda x: a1 * m + (x - a0 * m) @ mat.T


def rk45_tolerance(*, quick: bool = False, seed: int = 0) -> dict:
    """ode-rk45's error against its tolerance on gaussian:d=2 (VP): the root-mean-square distance
    between its output and the exact flow of the same start points, an upper bound on W2
    (synchronous coupling), with no Monte Carlo floor (the exact flow pushes q_1 onto q_t_end)."""
    n = 200 if quick else 2000
    rows = []
    for rtol in (1e-2, 1e-3, 1e-4) if quick else (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7):
        target, process, x, res = _run_from_q1(
            "gaussian:d=2", "vp", "ode-rk45", n, seed, rtol=rtol, atol=rtol
        )
        exact = _gaussian_flow(target, process, 1.0, res.t_end)(x)
        w2 = float(((res.x - exact) ** 2).sum(-1).mean().sqrt())
        rows.append({"rtol": rtol, "w2_upper": w2, "nfe": int(res.nfe), "n": n})
    return {"rows": rows}


def symbolic_constants() -> dict:
    """analytic.symbolic's leading terms C T^-p on claim 9's gaussian:d=1 target (VP)."""
    from analytic.symbolic import leading_error
    from convergence.targets import parse_target

    target = parse_target("gaussian:d=1")
    mean, var = float(target.means[0, 0]), float(target.covariance_matrices()[0, 0, 0])
    rows = []
    for s in ("ddim", "ddpm", "ode-euler", "ode-heun"):
        for metric in ("w2", "kl"):
            lead = leading_error(s, metric, mean=mean, var=var)
            rows.append(
                {"sampler": s, "metric": metric, "constant": lead.constant, "order": lead.order}
            )
    return {"rows": rows, "mean": mean, "var": var}


MOMENTUM = Study("momentum", _momentum)
NOISE_LEVELS = Study("noise_levels", _noise_levels)


def _ggf_rejections(quick: bool) -> dict:
    return ggf_rejections(quick=quick)


def _rk45_tolerance(quick: bool) -> dict:
    return rk45_tolerance(quick=quick)


def _symbolic(quick: bool) -> dict:
    return symbolic_constants()


# the run functions are module-level: a study is sent to a worker process by pickling
GGF_REJECTIONS = Study("ggf_rejections", _ggf_rejections)
RK45_TOLERANCE = Study("rk45_tolerance", _rk45_tolerance)
SYMBOLIC = Study("symbolic", _symbolic)
LEARNED_ERROR = Study("learned_error", _learned_error)
