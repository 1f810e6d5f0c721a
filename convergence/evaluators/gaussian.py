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
from collections.abc import Callable
from dataclasses import dataclass

import torch

from analytic import gaussian as closed
from analytic.gmm import GaussianMixture
from analytic.processes import Process
from convergence.samplers.base import (
    SamplerSpec,
    Score,
    Stage,
    context_kwargs,
    plan,
    prepare,
    tweedie,
)

Tensor = torch.Tensor

AFFINE_RTOL = 1e-7


class NotAffineError(ValueError):
    """The exact Gaussian evaluator does not apply (non-Gaussian target or non-affine step)."""


@dataclass(frozen=True)
class GaussianLaw:
    """N(mean, cov); with ``diagonal`` the covariance is stored as its diagonal (d,)."""

    mean: Tensor
    cov: Tensor
    diagonal: bool = False

    def full_cov(self) -> Tensor:
        return torch.diag(self.cov) if self.diagonal else self.cov


DIAGONAL_FROM = 64  # diagonal laws of at least this dimension are propagated in O(d) per step


def _read_affine(fn, mean: Tensor, cov: Tensor, where: str) -> tuple[Tensor, Tensor]:
    """fn(mean) and the matrix M of fn, assumed affine, read off probe points; refuses non-affine.

    Probes: mu, mu + e_j, mu + delta, mu + delta + e_j (delta a fixed shift on the scale of the
    law). M e_j = fn(mu + e_j) - fn(mu); the read-out at mu + delta must agree.
    """
    D = mean.numel()
    eye = torch.eye(D, dtype=mean.dtype, device=mean.device)
    scale = torch.sqrt(torch.diagonal(cov)).clamp_min(1e-3)
    shift = scale * torch.cos(torch.arange(D, dtype=mean.dtype, device=mean.device) + 1.0)
    out = fn(torch.cat([mean[None], mean + eye, (mean + shift)[None], mean + shift + eye]))
    M = (out[1 : D + 1] - out[0]).T
    M_shifted = (out[D + 2 :] - out[D + 1]).T
    mismatch = (M - M_shifted).abs().max() + (out[D + 1] - out[0] - M @ shift).abs().max()
    if mismatch > AFFINE_RTOL * (1.0 + M.abs().max() + out[0].abs().max()):
        raise NotAffineError(
            f"{where} is not affine in x (Jacobian varies by {float(mismatch):.2e}): the score is "
            "not affine (target not a single Gaussian?) or the sampler is nonlinear; use "
            "evaluator 'samples'"
        )
    return out[0], M


def propagate(
    spec: SamplerSpec,
    score: Score,
    process: Process,
    init: GaussianLaw,
    steps: int,
    *,
    t_end: float | None = None,
    final_noise: bool = False,
    denoise: bool = False,
    on_step: Callable[[Stage, GaussianLaw], None] | None = None,
    **options,
) -> GaussianLaw:
    """Exact law of the sampler output when the initial law is Gaussian and every step is affine.

    The Gaussian vector is the state x together with the sampler's side quantities (multistep
    state); noise enters the x block only. The final Tweedie denoise, when asked, is one more
    affine map. ``on_step(stage, law)``, if given, receives the law of x after every stage (before
    the denoise), in order.
    """
    if not spec.affine:
        raise NotAffineError(
            f"sampler {spec.name!r} is not affine in the state; use evaluator 'samples'"
        )
    t_end, opts, schedule = prepare(spec, process, steps, t_end, options)
    if init.diagonal:
        trace = [] if on_step is not None else None
        law = _propagate_diagonal(
            spec, score, process, init, plan(schedule, final_noise), opts, t_end, trace
        )
        if law is not None:
            for st, stage_law in trace or ():
                on_step(st, stage_law)
            return _denoised(law, score, process, t_end) if denoise else law
        init = GaussianLaw(init.mean, init.full_cov())
    mean, cov = init.mean, init.cov
    d = mean.numel()
    state_width = 0
    for st in plan(schedule, final_noise):
        mean, M, std, state_width = read_stage(
            spec, score, process, st, mean, cov, d, state_width, opts, t_end
        )
        cov = M @ cov @ M.T
        if st.noisy and std > 0:
            cov[:d, :d] += std**2 * torch.eye(d, dtype=cov.dtype, device=cov.device)
        cov = 0.5 * (cov + cov.T)
        if on_step is not None:
            on_step(st, GaussianLaw(mean[:d], cov[:d, :d]))
    law = GaussianLaw(mean[:d], cov[:d, :d])
    return _denoised(law, score, process, t_end) if denoise else law


def read_stage(
    spec: SamplerSpec,
    score: Score,
    process: Process,
    st: Stage,
    mean: Tensor,
    cov: Tensor,
    d: int,
    state_width: int,
    opts: dict,
    t_end: float,
) -> tuple[Tensor, Tensor, float, int]:
    """One stage's affine mean map z -> M z + c of the vector z = (x, state) (x of size d, the
    multistep state of size ``state_width``), read off around N(mean, cov) by ``_read_affine``.

    Returns (M mean + c, M, std, width of the state the stage outputs); the stage's kernel is
    x' = (M z + c)[:d] + std xi (xi added only if ``st.noisy``). Cost: one step call on 2 D + 2
    points, D = d + state_width.
    """
    found = {}

    def step(z: Tensor) -> Tensor:
        state = z[:, d:] if state_width else None
        tr = spec.step(
            score,
            process,
            z[:, :d],
            st.t,
            st.t_next,
            **context_kwargs(spec, st, state, t_end),
            **opts,
        )
        found["std"], found["width"] = tr.std, 0 if tr.state is None else tr.state.shape[1]
        return tr.mean if tr.state is None else torch.cat([tr.mean, tr.state], dim=1)

    where = f"step {st.k + 1} (t={st.t:.4g}) of sampler {spec.name!r}"
    out, M = _read_affine(step, mean, cov, where)
    return out, M, found["std"], found["width"]


def _denoised(law: GaussianLaw, score: Score, process: Process, t_end: float) -> GaussianLaw:
    return push_forward(lambda x: tweedie(score, process, x, t_end), law)


def _propagate_diagonal(
    spec, score, process, init, stages, opts, t_end, trace: list | None = None
) -> GaussianLaw | None:
    """Moments of a diagonal law through coordinate-wise affine steps in O(d) per step:
    x'_i = M_i x_i + v_i + std z_i, read off with the probes mean and mean + 1 and checked with
    mean + delta (delta varying over coordinates) at the first steps, the last and every 16th.
    None when a step is not coordinate-wise (or carries multistep state): the caller then
    propagates the full covariance. ``trace`` (a list) collects (stage, law) after every stage."""
    mean, var = init.mean, init.cov
    shift = torch.cos(torch.arange(mean.numel(), dtype=mean.dtype, device=mean.device) + 1.0)
    for i, st in enumerate(stages):
        # being coordinate-wise is a property of the step's code path: verified at the first
        # steps, the last one and every 16th (the probe costs a third of the work)
        check = i < 3 or st.last or i % 16 == 0
        found = {}

        def step(z: Tensor, st=st, found=found) -> Tensor:
            tr = spec.step(
                score, process, z, st.t, st.t_next, **context_kwargs(spec, st, None, t_end), **opts
            )
            found["std"], found["state"] = tr.std, tr.state
            return tr.mean

        out = step(torch.stack([mean, mean + 1.0, mean + shift] if check else [mean, mean + 1.0]))
        if found["state"] is not None:
            return None
        m_diag = out[1] - out[0]
        if check:
            mismatch = (out[2] - out[0] - m_diag * shift).abs().max()
            if mismatch > AFFINE_RTOL * (1.0 + m_diag.abs().max() + out[0].abs().max()):
                return None
        mean, var = out[0], m_diag * m_diag * var
        if st.noisy and found["std"] > 0:
            var = var + found["std"] ** 2
        if trace is not None:
            trace.append((st, GaussianLaw(mean, var, diagonal=True)))
    return GaussianLaw(mean, var, diagonal=True)


def push_forward(fn, law: GaussianLaw) -> GaussianLaw:
    """Law of fn(X) for X ~ law and an affine fn (e.g. the Tweedie denoiser of a Gaussian)."""
    if law.diagonal:
        out = fn(torch.stack([law.mean, law.mean + 1.0]))
        return GaussianLaw(out[0], (out[1] - out[0]) ** 2 * law.cov, diagonal=True)
    mean, M = _read_affine(fn, law.mean, law.cov, "the final map")
    cov = M @ law.cov @ M.T
    return GaussianLaw(mean, 0.5 * (cov + cov.T))


def law_of(target: GaussianMixture) -> GaussianLaw:
    if target.n_components != 1:
        raise NotAffineError(
            "the exact Gaussian evaluator needs a single-Gaussian target, got "
            f"{target.n_components} components; use evaluator 'samples'"
        )
    if target.kind != "full" and target.dim >= DIAGONAL_FROM:
        var = target.covariance_diagonals()[0].clone()
        return GaussianLaw(target.means[0], var, diagonal=True)
    return GaussianLaw(target.means[0], target.covariance_matrices()[0])


METRICS = ("kl", "w2", "hellinger", "tv")


TV_BOUND_NOTE = (
    "tv is the Hellinger upper bound H sqrt(2 - H^2) (exact TV needs d <= 2 or equal "
    "covariances); same slope as TV, lower bound H^2 in lower_bound"
)


@dataclass(frozen=True)
class Distance:
    value: float
    exact: bool
    lower_bound: float | None = None


def distance(metric: str, ref: GaussianLaw, out: GaussianLaw) -> Distance:
    """Distance between the reference law and the output law; KL is KL(reference || output).

    TV is exact in d <= 2 (`analytic.gaussian.tv_1d`, `tv_2d`) and for equal covariances; otherwise
    (d >= 3) the Hellinger upper bound H sqrt(2 - H^2) is returned (same log-log slope as TV,
    THEORY.md 3.4) and marked inexact.
    """
    if ref.diagonal and out.diagonal:
        return _diagonal_distance(metric, ref, out)
    args = (ref.mean, ref.full_cov(), out.mean, out.full_cov())
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


def _diagonal_distance(metric: str, ref: GaussianLaw, out: GaussianLaw) -> Distance:
    kl, w2, h2 = closed.diagonal_divergences(ref.mean, ref.cov, out.mean, out.cov)
    if metric == "kl":
        return Distance(float(kl), True)
    if metric == "w2":
        return Distance(float(w2), True)
    h = float(h2.sqrt())
    if metric == "hellinger":
        return Distance(h, True)
    if metric == "tv":
        return Distance(h * math.sqrt(max(2.0 - h * h, 0.0)), False, float(h2))
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
    trace = ref.cov.sum() if ref.diagonal else torch.trace(ref.cov)
    scale = math.sqrt(float(trace)) if metric == "w2" else 1.0
    return delta * math.sqrt(d) * scale
