"""Deterministic stretches of a sampler with their exact Jacobians (THEORY.md 3.6).

A deterministic step x -> Phi_k(x) moves density by the change of variables

    log p_{k+1}(Phi_k(x)) = log p_k(x) - log |det dPhi_k/dx (x)|,

so following log |det| of the *discrete* step Jacobians along each trajectory gives the exact
density of a deterministic sampler's output at every output point (not the continuous divergence
integral, which would only approximate the discrete map).

The Jacobian of a step is the derivative of the sampler's own step function, so no update rule
is written twice. The score is the only nonlinear part of a step; it enters through
``JacobianScore``, which supplies its closed-form Jacobian (THEORY.md 3.1):

    d/dx s_t(x) = H_t(x) [+ grad delta_t(x) for a perturbed score],
    H_t = -sum_k r_k C_k^{-1} + sum_k r_k g_k g_k^T - gbar gbar^T.

The d tangent directions of all n points travel together as one (n d, D) batch of plain tensors
(row i d + j: direction j at point i; D = d + width of the multistep state), so a step costs a
fixed number of tensor operations whatever d is (no loop over directions in Python):

* **linear replay** (``JacobianScore``): the deterministic chain steps (DDIM, Euler, Heun,
  DPM-Solver-2, EDM, Li et al.'s accelerated DDIM) are linear combinations, with coefficients
  that depend on the times only, of x, the state and score values at points that are themselves
  such combinations. Then the tangent map of a step is the step function itself applied to the
  tangents, with each score call replaced by
  v -> H_t(x_c) v at the point x_c where the primal step called the score. The primal step runs
  once on the n points, recording H at every score call; the tangent step then runs on the n d
  tangents with the recorded H (one batched (d x d) @ (d x d) product per call). The replay is
  checked against forward-mode differentiation (``torch.autograd.forward_ad``) at the first point
  of every stage; a step that is not linear in that sense (a constant shift, a nonlinearity
  outside the score) fails the check and that stage falls back to forward mode for all points.
* **forward mode** (any differentiable score, and the fallback): the batch of points is stacked d
  times as dual tensors, copy j carrying direction j; a ``JacobianScore`` is evaluated on one copy
  and applies its Jacobian to all tangents, another score runs on all n d rows.

Cost per step: one closed-form score and Jacobian on n points (O(n K d^2)), O(n d^3) for the
tangent products, the step's vector operations on n d rows (O(n d^2)); O(n d^3) for the final
slogdet. Memory: a few (n d, D) tensors and the recorded (n, d, d) Jacobians of one step.
Forward mode costs several times more per step (each dual operation with a Python-scalar
coefficient runs through zero-tangent decompositions, and the primal runs on all n d rows).

Multistep samplers carry side quantities (``Transition.state``) that depend on the trajectory; the
Jacobian is then propagated for the augmented vector (x, state): J has shape (n, d + width, d),
the derivative of the current augmented vector with respect to the starting point.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.autograd.forward_ad as fwAD

from analytic.gmm import GaussianMixture
from analytic.processes import Process
from convergence.samplers.base import (
    DivergenceError,
    SamplerSpec,
    Score,
    Stage,
    context_kwargs,
)

Tensor = torch.Tensor
ValueAndJacobian = Callable[[Tensor, float], tuple[Tensor, Tensor]]


def _jacobian_times(jacobian: Tensor, v: Tensor) -> Tensor:
    """Rows i c + j of v (c tangents per point) times the Jacobian J_i (n, d, d) of point i:
    out[i c + j] = J_i v[i c + j]; one batched product, no copy of v. Shape (n c, d)."""
    n, d, _ = jacobian.shape
    return torch.bmm(v.reshape(n, -1, d), jacobian.transpose(1, 2)).reshape(-1, d)


class _ScoreWithJacobian(torch.autograd.Function):
    """y = s(x) whose forward-mode derivative is the supplied Jacobian: dy = J(x) dx.

    x holds ``copies`` consecutive copies of each of n points (rows i c .. i c + c - 1); the value
    (n, d) and Jacobian (n, d, d) of the n points arrive in a tuple (not as tensor inputs, so that
    autograd never builds zero tangents for them) and are repeated over the copies."""

    @staticmethod
    def forward(ctx, x: Tensor, value_jacobian_copies: tuple[Tensor, Tensor, int]) -> Tensor:
        value, ctx.jacobian, copies = value_jacobian_copies
        return value.repeat_interleave(copies, dim=0)

    @staticmethod
    def jvp(ctx, x_t: Tensor, _none) -> Tensor:
        return _jacobian_times(ctx.jacobian, x_t)


class JacobianScore:
    """A score callable for Jacobian tracking.

    ``value_and_jacobian(x, t) -> (s (n, d), ds/dx (n, d, d))``; a call repeating the previous
    (t, x) exactly is served from a one-entry cache (one entry in all, so that a long run does not
    keep an (n, d, d) Jacobian per time). Called on dual tensors (forward mode), the result
    carries the tangent J dx. ``stacked(c)`` is the same score for inputs holding c consecutive
    copies of each point: it is evaluated on one copy.
    """

    def __init__(
        self,
        value_and_jacobian: ValueAndJacobian,
        *,
        copies: int = 1,
        _cache: dict | None = None,
    ) -> None:
        self._fn = value_and_jacobian
        self.copies = copies
        self._cache = {} if _cache is None else _cache

    def stacked(self, copies: int) -> JacobianScore:
        """This score for inputs of ``copies`` consecutive copies of each point (shared cache)."""
        return JacobianScore(self._fn, copies=copies, _cache=self._cache)

    def value_and_jacobian(self, x: Tensor, t: float) -> tuple[Tensor, Tensor]:
        """(s(x, t), ds/dx(x, t)) for plain points x (n, d), through the cache."""
        key = float(t)
        hit = self._cache.get("last")
        if hit is None or hit[0] != key or hit[1].shape != x.shape or not torch.equal(hit[1], x):
            hit = (key, x, *self._fn(x, key))
            self._cache["last"] = hit
        return hit[2], hit[3]

    def __call__(self, x: Tensor, t: float) -> Tensor:
        primal = fwAD.unpack_dual(x).primal
        if primal.shape[0] % self.copies:
            raise ValueError(
                f"x has {primal.shape[0]} rows, not a multiple of the {self.copies} stacked copies"
            )
        value, jac = self.value_and_jacobian(primal[:: self.copies], t)
        return _ScoreWithJacobian.apply(x, (value, jac, self.copies))

    def clear(self) -> None:
        self._cache.clear()


class _Recorded:
    """The primal pass of a linear replay: s(x, t) through a JacobianScore, keeping ds/dx."""

    def __init__(self, score: JacobianScore) -> None:
        self.score, self.jacobians = score, []

    def __call__(self, x: Tensor, t: float) -> Tensor:
        value, jac = self.score.value_and_jacobian(x, t)
        self.jacobians.append(jac)
        return value


class _Replayed:
    """The tangent pass of a linear replay: call m returns J_m v, J_m recorded at call m of the
    primal pass (rows i c + j of v are tangents at point i)."""

    def __init__(self, jacobians: list[Tensor]) -> None:
        self.jacobians, self.calls = jacobians, 0

    def __call__(self, v: Tensor, t: float) -> Tensor:
        self.calls += 1
        if self.calls > len(self.jacobians):
            raise _ReplayMismatch
        return _jacobian_times(self.jacobians[self.calls - 1], v)


class _ReplayMismatch(Exception):
    """The tangent pass called the score more often than the primal pass."""


NOISED_ELEMENTS = 2_000_000  # 16 MB of noised-law parameters per score at most


def mixture_jacobian_score(
    target: GaussianMixture, process: Process, perturbation=None
) -> JacobianScore:
    """The exact score of ``target`` under ``process`` [plus a ``convergence.scores``
    perturbation], with its closed-form Jacobian H_t(x) [+ grad delta_t(x)].

    The noised laws q_t (with their factorised parameters) are kept per time, so that pushes
    through the same stages build each once; at most NOISED_ELEMENTS parameter entries
    (K d (d + 2) per law) are kept, the rest built per call."""
    noised: dict[float, GaussianMixture] = {}
    size = target.n_components * target.dim * (target.dim + 2)

    def law(t: float) -> GaussianMixture:
        if t in noised:
            return noised[t]
        q = target.noised(process, t)
        if (len(noised) + 1) * size <= NOISED_ELEMENTS:
            noised[t] = q
        return q

    def value_and_jacobian(x: Tensor, t: float) -> tuple[Tensor, Tensor]:
        s, jac = law(t).score_and_hessian(x)
        if perturbation is not None:
            s = s + perturbation.delta(x, t, process)
            jac = jac + perturbation.jacobian(x, t, process)
        return s, jac

    return JacobianScore(value_and_jacobian)


@dataclass(frozen=True)
class Pushed:
    """End points y = Phi(x) of a deterministic stretch, log |det dPhi/dx| per point, and the
    multistep side state with its Jacobian (for a following stretch)."""

    y: Tensor
    logdet: Tensor
    state: Tensor | None
    jacobian: Tensor


@dataclass
class ReplayLedger:
    """What the pushes of one stage list have learnt about linear replay: the stages whose replay
    passed the forward-mode check, and the first stage whose replay failed it (forward mode from
    there on). Linearity is a property of a step's code path, not of the points it runs on, so a
    check passed on one batch holds for every batch pushed through the same stages with the same
    score: hand one ledger to all pushes of one (sampler, stages, options, score) and each stage is
    checked once instead of once per push."""

    verified: set[int] = field(default_factory=set)
    failed_at: int | None = None


def push(
    spec: SamplerSpec,
    score: Score,
    process: Process,
    x: Tensor,
    stages: Sequence[Stage],
    options: dict,
    t_end: float,
    *,
    state: Tensor | None = None,
    ledger: ReplayLedger | None = None,
) -> Pushed:
    """Run the deterministic ``stages`` of a sampler from x (n, d) and track the Jacobian.

    Each stage applies the sampler's step function z -> (mean, state') with no noise; the tangent
    map is pushed along d directions at once: J_{k+1} = dF_k(z_k) J_k, J_0 = [I; 0], by linear
    replay for a ``JacobianScore`` and by forward mode otherwise (module docstring). Cost per
    stage: one score and Jacobian evaluation on n points (a ``JacobianScore``; any other
    differentiable score is evaluated on all n d rows), O(n d^3) for the tangent products, the
    step's vector operations on n d rows; O(n d^3) for the final slogdet. ``ledger`` carries the
    replay checks over from earlier pushes of the same stages (``ReplayLedger``).
    """
    ledger = ReplayLedger() if ledger is None else ledger
    n, d = x.shape
    width = 0 if state is None else state.shape[1]
    z = x if state is None else torch.cat([x, state], dim=1)
    # V[i, j] = d z_i / d x_j (all coordinates of the augmented vector): V[i] = J[i]^T
    V = torch.zeros(n, d, d + width, dtype=x.dtype, device=x.device)
    V[:, :, :d] = torch.eye(d, dtype=x.dtype, device=x.device)
    replay = isinstance(score, JacobianScore)
    for i, st in enumerate(stages):
        stage = (spec, process, st, options, t_end)
        found = None
        # a step that failed the check is never replayed again, in this push or a later one
        if replay and (ledger.failed_at is None or i < ledger.failed_at):
            check = _check_replay(i, st) and i not in ledger.verified
            found = _replay_stage(score, z, V, width, stage, check=check)
            if found is None:
                ledger.failed_at = i
            elif check:
                ledger.verified.add(i)
        if found is None:
            found = _dual_stage(score, z, V, width, stage)
        z, V, width = found
        if not torch.isfinite(z).all():
            raise DivergenceError(spec.name, st.k + 1, st.t, st.t_next)
    sign, logdet = torch.linalg.slogdet(V[:, :, :d])  # det J[:, :d] = det of its transpose
    if not bool((sign != 0).all()):
        raise ValueError(
            f"sampler {spec.name!r}: the map of its deterministic steps is singular at some points"
        )
    J = V.transpose(1, 2).contiguous()
    return Pushed(z[:, :d], logdet, z[:, d:] if width else None, J)


_Stage = tuple[SamplerSpec, Process, Stage, dict, float]
REPLAY_RTOL = 1e-9  # replay vs forward mode at the probe point: both are exact up to rounding


def _step(score: Score, z: Tensor, width: int, stage: _Stage) -> tuple[Tensor, int]:
    """The sampler's step on the augmented rows z = (x, state): (mean, state'), width'."""
    spec, process, st, options, t_end = stage
    d = z.shape[1] - width
    tr = spec.step(
        score,
        process,
        z[:, :d],
        st.t,
        st.t_next,
        **context_kwargs(spec, st, z[:, d:] if width else None, t_end),
        **options,
    )
    out = tr.mean if tr.state is None else torch.cat([tr.mean, tr.state], dim=1)
    return out, 0 if tr.state is None else tr.state.shape[1]


def _dual_stage(
    score: Score, z: Tensor, V: Tensor, width: int, stage: _Stage
) -> tuple[Tensor, Tensor, int]:
    """Forward mode on c copies of each point: (z', V' (n, c, D'), width')."""
    n, c, D = V.shape
    stacked = score.stacked(c) if isinstance(score, JacobianScore) else score
    with fwAD.dual_level():
        w = fwAD.make_dual(z.repeat_interleave(c, dim=0), V.reshape(n * c, D))
        out, width = _step(stacked, w, width, stage)
        primal, tangent = fwAD.unpack_dual(out)
    if tangent is None:  # the step does not depend on its input
        tangent = torch.zeros_like(primal)
    return primal[::c].contiguous(), tangent.reshape(n, c, -1), width


def _check_replay(index: int, st: Stage) -> bool:
    """Whether to verify the linear replay of this stage against forward mode. Linearity is a
    property of the step function's code path, which can differ at the first steps (start-up of
    multistep samplers) and at the last step; those stages are always checked, the others every
    CHECK_EVERY stages (a forward-mode probe costs about a millisecond per tensor operation).
    After a failed check the sampler is differentiated in forward mode to the end."""
    return index < 3 or st.last or index % CHECK_EVERY == 0


CHECK_EVERY = 16


def _replay_stage(
    score: JacobianScore, z: Tensor, V: Tensor, width: int, stage: _Stage, check: bool = True
) -> tuple[Tensor, Tensor, int] | None:
    """Linear replay (module docstring): (z', V', width'), or None when the check at the first
    point disagrees with forward mode (the step is not linear in (x, state, score values))."""
    n, c, D = V.shape
    recorded = _Recorded(score)
    out, width_out = _step(recorded, z, width, stage)
    replayed = _Replayed(recorded.jacobians)
    try:
        tangent, _ = _step(replayed, V.reshape(n * c, D), width, stage)
    except _ReplayMismatch:
        return None
    if replayed.calls != len(recorded.jacobians) or tangent.shape[1] != out.shape[1]:
        return None
    tangent = tangent.reshape(n, c, -1)
    if not check:
        return out, tangent, width_out
    _, probe, _ = _dual_stage(score, z[:1], V[:1], width, stage)
    scale = 1.0 + float(probe.abs().max())
    if not float((tangent[:1] - probe).abs().max()) <= REPLAY_RTOL * scale:
        return None
    return out, tangent, width_out
