"""Exact errors for Gaussian targets by moment propagation through the sampler's own steps.

For a single-Gaussian target the exact score is affine, s_t(x) = -C_t^{-1}(x - m_t), and every step
of a Gaussian-kernel sampler is x' = M x + v + std z with z independent of x. If x ~ N(mu, Sigma)
then (THEORY.md 3.3)

    mu' = M mu + v,        Sigma' = M Sigma M^T + std^2 I.

M and v are read off the sampler's step function itself: applying the mean map to the batch
[mu, mu + e_1, ..., mu + e_d] gives mu' (row 0) and the columns M e_j = mean(mu + e_j) - mean(mu),
exact for an affine map up to rounding. The step is also applied at a shifted base point
mu + delta; if the two read-outs of M disagree, the step is not affine and the evaluator refuses.
No update rule is written twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from analytic import gaussian as closed
from analytic.gmm import GaussianMixture
from analytic.processes import Process
from convergence.samplers.base import SamplerSpec, Score, check_t_end, plan

Tensor = torch.Tensor

AFFINE_RTOL = 1e-7


class NotAffineError(ValueError):
    """The exact Gaussian evaluator does not apply (non-Gaussian target or non-affine step)."""


@dataclass(frozen=True)
class GaussianLaw:
    mean: Tensor
    cov: Tensor


def propagate(
    spec: SamplerSpec,
    score: Score,
    process: Process,
    init: GaussianLaw,
    steps: int,
    *,
    t_end: float | None = None,
    final_noise: bool = False,
    **options,
) -> GaussianLaw:
    """Exact law of the sampler output when the initial law is Gaussian and every step is affine."""
    if not spec.affine:
        raise NotAffineError(
            f"sampler {spec.name!r} is not affine in the state; use evaluator 'samples'"
        )
    t_end = check_t_end(process, t_end)
    opts = spec.resolve_options(options)
    mean, cov = init.mean, init.cov
    d = mean.numel()
    eye = torch.eye(d, dtype=mean.dtype, device=mean.device)
    # A fixed shift, not aligned with any axis, on the scale of the law: the second base point.
    shift = torch.sqrt(torch.diagonal(cov)) * torch.cos(
        torch.arange(d, dtype=mean.dtype, device=mean.device) + 1.0
    )
    for k, t, t_next, noisy in plan(steps, t_end, final_noise):
        probe = torch.cat([mean[None], mean + eye, (mean + shift)[None], mean + shift + eye])
        tr = spec.step(score, process, probe, t, t_next, **opts)
        out = tr.mean
        M = (out[1 : d + 1] - out[0]).T
        M_shifted = (out[d + 2 :] - out[d + 1]).T
        mismatch = (M - M_shifted).abs().max() + (out[d + 1] - out[0] - M @ shift).abs().max()
        if mismatch > AFFINE_RTOL * (1.0 + M.abs().max()):
            raise NotAffineError(
                f"step {k + 1} (t={t:.4g}) of sampler {spec.name!r} is not affine in x "
                f"(Jacobian varies by {float(mismatch):.2e}): the score is not affine (target not "
                "a single Gaussian?) or the sampler is nonlinear; use evaluator 'samples'"
            )
        mean = out[0]
        cov = M @ cov @ M.T
        if noisy and tr.std > 0:
            cov = cov + tr.std**2 * eye
        cov = 0.5 * (cov + cov.T)
    return GaussianLaw(mean, cov)


def law_of(target: GaussianMixture) -> GaussianLaw:
    if target.n_components != 1:
        raise NotAffineError(
            "the exact Gaussian evaluator needs a single-Gaussian target, got "
            f"{target.n_components} components; use evaluator 'samples'"
        )
    return GaussianLaw(target.means[0], target.covariance_matrices()[0])


METRICS = ("kl", "w2", "hellinger", "tv")


TV_BOUND_NOTE = (
    "tv is the Hellinger upper bound H sqrt(2 - H^2) (exact TV needs d = 1 or equal "
    "covariances); same slope as TV, lower bound H^2 in lower_bound"
)


@dataclass(frozen=True)
class Distance:
    value: float
    exact: bool
    lower_bound: float | None = None


def distance(metric: str, ref: GaussianLaw, out: GaussianLaw) -> Distance:
    """Distance between the reference law and the output law; KL is KL(reference || output).

    TV is exact in 1-D and for equal covariances; otherwise the Hellinger upper bound
    H sqrt(2 - H^2) is returned (same log-log slope as TV, THEORY.md 3.4) and marked inexact.
    """
    args = (ref.mean, ref.cov, out.mean, out.cov)
    if metric == "kl":
        return Distance(float(closed.kl(*args)), True)
    if metric == "w2":
        return Distance(float(closed.w2(*args)), True)
    if metric == "hellinger":
        return Distance(float(closed.hellinger(*args)), True)
    if metric == "tv":
        res = closed.tv(*args)
        return Distance(float(res.value), bool(res.exact), float(res.lower))
    raise ValueError(f"unknown metric {metric!r}; allowed: {', '.join(METRICS)}")


def roundoff_floor(metric: str, value: float, ref: GaussianLaw, steps: int) -> float:
    """Estimated floating-point floor of an exact evaluation (not a statistical error).

    The moment recursion perturbs the output covariance by a relative delta ~ 4 steps d eps; a
    perturbation of relative size delta moves KL by ~ delta sqrt(2 d KL) + d delta^2 / 4 and the
    distances W2, Hellinger, TV by ~ delta sqrt(d) (times sqrt(tr Sigma) for W2).
    """
    d = ref.mean.numel()
    delta = 4.0 * steps * d * torch.finfo(ref.cov.dtype).eps
    if metric == "kl":
        return delta * math.sqrt(2.0 * d * max(value, 0.0)) + d * delta**2 / 4.0
    scale = math.sqrt(float(torch.trace(ref.cov))) if metric == "w2" else 1.0
    return delta * math.sqrt(d) * scale
