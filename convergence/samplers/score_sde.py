"""Score-SDE predictors and correctors: ``reverse-diffusion``, ``langevin``, ``pc`` and ``ams``.

Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole 2021, "Score-Based Generative Modeling through
Stochastic Differential Equations", arXiv 2011.13456 (Algorithms 2-3; official code
``yang-song/score_sde_pytorch`` @ cb1f359, ``sampling.py``), and Wen, Deng, Luo, Sun & Li 2024,
"Score-based Generative Models with Adaptive Momentum", arXiv 2405.13726 (official code
``LangevinCorrectorMomentum``). Spec: SAMPLERS.md 1.1, 1.3, 2.4-2.6, 6.1-6.3.

Predictor coefficients. The code's predictors invert one step x_{i+1} = rho_i x_i + G_i z of a
discrete forward chain: VP rho_i = sqrt(1 - beta_i), G_i^2 = beta_i; VE rho_i = 1,
G_i^2 = sigma_i^2 - sigma_{i-1}^2 (SAMPLERS.md 1.1). Three ways to get (rho, G^2) for a step
t -> t':

* ``interval`` (default): the exact forward transition of the step's own interval,
  (rho, G^2) = process.transition(t', t) (VP: rho = alpha(t)/alpha(t'), G^2 = 1 - rho^2; VE:
  G^2 = sigma(t)^2 - sigma(t')^2). Consistent on any grid: first order on the uniform grid.
* ``euler``: G^2 = g(t)^2 h with h = t - t' (VP rho = sqrt(1 - beta(t) h)), the continuous-time
  reading of the code's beta_i = beta(i / (N - 1)) / N.
* ``index`` (``pc``/``ams`` only): the code's chain with N = steps levels; the k-th predictor uses
  chain index i = N - 1 - k, i.e. i(t_k) = floor(t_k (N - 1)) on the code's grid
  linspace(1, eps, N): VP beta_i = beta(i / (N - 1)) / N; VE sigma_i = sigma(i / (N - 1)),
  sigma_{-1} = 0. (A registered step function does not receive N, hence pc/ams only.)

The corrector scale is a = alpha_i = rho^2 (VP; SAMPLERS.md 2.5) and 1 (VE, rho = 1).

Norms. The code's corrector step sizes use batch-mean norms ||v|| = mean_b ||v_b||_2 (SAMPLERS.md
1.3): scalars shared by the batch, so outputs depend on the batch size. ``norm="per-sample"`` uses
each sample's own norm: outputs are then independent of the batch size (a deviation from the code).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from analytic.processes import Process
from convergence.noise import PerSampleNoise
from convergence.samplers.base import (
    Claim,
    CountingScore,
    DivergenceError,
    SampleResult,
    SamplerSpec,
    Schedule,
    Score,
    Tensor,
    Transition,
    all_finite,
    plan,
    prepare,
    run_chain,
    sqrt_pos,
    tweedie,
)
from convergence.samplers.sde import em_step

SONG = "Song et al. 2021, Score-Based Generative Modeling through SDEs, arXiv 2011.13456"
WEN = "Wen et al. 2024, Score-based Generative Models with Adaptive Momentum, arXiv 2405.13726"
E_BETA = 1e-4  # AMS clipping safeguard: beta <= 1 - E_BETA (SAMPLERS.md 6.2)


# ---- predictor coefficients and predictors -------------------------------------------------


@dataclass(frozen=True)
class Coefficients:
    """One step of the discrete forward chain x_{i+1} = rho x_i + G z: rho, var = G^2, and the
    VE ancestral ratio keep = sigma_{i-1}^2 / sigma_i^2 (1 on VP)."""

    rho: float
    var: float
    keep: float = 1.0


def coefficients(
    process: Process, t: float, t_next: float, rule: str, n: int = 0, k: int = 0
) -> Coefficients:
    """Chain coefficients of the step t -> t_next (k-th of n) under ``rule`` (module docstring)."""
    ve = process.name == "ve"
    if rule == "interval":
        rho, var = process.transition(t_next, t)
        return Coefficients(rho, var, (process.sigma(t_next) / process.sigma(t)) ** 2 if ve else 1)
    if rule == "euler":
        var = process.g2(t) * (t - t_next)
        if ve:
            return Coefficients(1.0, var, max(1.0 - var / process.sigma(t) ** 2, 0.0))
        return Coefficients(math.sqrt(1.0 - var), var)
    i = n - 1 - k  # "index": the code's chain index on its grid linspace(1, eps, n)
    u = i / (n - 1) if n > 1 else 0.0
    if ve:
        s2 = process.sigma(u) ** 2
        s2_prev = process.sigma((i - 1) / (n - 1)) ** 2 if i > 0 else 0.0
        return Coefficients(1.0, s2 - s2_prev, s2_prev / s2)
    var = process.beta(u) / n
    return Coefficients(math.sqrt(1.0 - var), var)


def reverse_diffusion(score: Score, x: Tensor, t: float, c: Coefficients) -> Transition:
    """Reverse-diffusion predictor (SAMPLERS.md 2.4; code ``ReverseDiffusionPredictor``):
    x' = x - f_i + G^2 s(x, t) + G z with f_i = (rho - 1) x, i.e. x' = (2 - rho) x + G^2 s + G z
    (VP: (2 - sqrt(1 - beta_i)) x + beta_i s; VE: x + (sigma_i^2 - sigma_{i-1}^2) s)."""
    return Transition((2.0 - c.rho) * x + c.var * score(x, t), sqrt_pos(c.var))


def ancestral(score: Score, x: Tensor, t: float, c: Coefficients) -> Transition:
    """Ancestral predictor (SAMPLERS.md 2.4; code ``AncestralSamplingPredictor``):
    VP x' = (x + beta_i s) / sqrt(1 - beta_i) + sqrt(beta_i) z;
    VE x' = x + (sigma_i^2 - sigma_{i-1}^2) s + sqrt(sigma_{i-1}^2 (sigma_i^2 - sigma_{i-1}^2)
    / sigma_i^2) z. Both read (x + G^2 s) / rho + sqrt(G^2 keep) z."""
    return Transition((x + c.var * score(x, t)) / c.rho, sqrt_pos(c.var * c.keep))


def reverse_diffusion_step(
    score: Score, process: Process, x: Tensor, t: float, t_next: float, *, discretization: str
) -> Transition:
    """The registered ``reverse-diffusion`` step: ``reverse_diffusion`` with the coefficients of
    the step's own interval (``interval``) or g(t)^2 h (``euler``)."""
    return reverse_diffusion(score, x, t, coefficients(process, t, t_next, discretization))


PREDICTORS: Mapping[str, Callable[..., Transition]] = {
    "reverse-diffusion": lambda score, process, x, t, t_next, c: reverse_diffusion(score, x, t, c),
    "ancestral": lambda score, process, x, t, t_next, c: ancestral(score, x, t, c),
    "em": lambda score, process, x, t, t_next, c: em_step(score, process, x, t, t_next),
    "none": lambda score, process, x, t, t_next, c: Transition(x, 0.0),
}


# ---- correctors ------------------------------------------------------------------------------


def batch_norm(v: Tensor, per_sample: bool) -> Tensor:
    """||v||: per-sample L2 norms (n, 1), or their batch mean (a 0-d tensor; SAMPLERS.md 1.3)."""
    norms = torch.linalg.vector_norm(v, dim=1, keepdim=True)
    return norms if per_sample else norms.mean()


def snr_step_size(z: Tensor, g: Tensor, a: float, snr: float, per_sample: bool) -> Tensor:
    """Score-SDE corrector step eps = 2 a (r ||z|| / ||g||)^2 (SAMPLERS.md 2.5)."""
    return 2.0 * a * (snr * batch_norm(z, per_sample) / batch_norm(g, per_sample)) ** 2


@dataclass(frozen=True)
class LangevinCorrector:
    """Score-SDE Langevin corrector (SAMPLERS.md 2.5; code ``LangevinCorrector``), one inner step:
    g = s(x, t), eps = 2 a (r ||z|| / ||g||)^2, x_bar = x + eps g, x' = x_bar + sqrt(2 eps) z.
    Returns (x', x_bar)."""

    snr: float
    per_sample: bool

    def __call__(self, score: Score, x: Tensor, t: float, z: Tensor, a: float):
        g = score(x, t)
        eps = snr_step_size(z, g, a, self.snr, self.per_sample)
        mean = x + eps * g
        return mean + torch.sqrt(2.0 * eps) * z, mean


class AMSCorrector:
    """AMS-LC, the adaptive-momentum Langevin corrector (Wen et al. 2024; SAMPLERS.md 6.2; code
    ``LangevinCorrectorMomentum.update_fn``), with its state (Delta, m, g_prev, eta_A) held by this
    object: one instance per run, shared by all corrector calls, never reset between levels.

    g = s(x, t). First step (||Delta|| = 0): beta = 0, m = g, eps = 2 a (r ||z|| / ||m||)^2,
    eta_A = eps. Later steps: L = ||g - g_prev|| / ||Delta||;
    beta = clip(((1 - eta_A L) / (1 + eta_A L))^2, 0, 1 - 1e-4) with the previous eta_A;
    eps = 2 a (r ||z|| / ||m||)^2 with the old m; m <- beta m + (1 - beta) g;
    eta_A <- eps (1 + beta)^2.
    Then x_bar = x + eta_A m, Delta = eta_A m, x' = x_bar + sqrt(2 eps) z, g_prev = g.

    ``momentum``: "adaptive" (the rule above); "lagged" (beta forced to 0, so m = g_prev and
    eps uses the previous score's norm: the literal beta = 0 reading of SAMPLERS.md 6.2); "off"
    (beta = 0 and m = g before eps is computed: exactly the score-SDE Langevin corrector, step for
    step).
    With per-sample norms, L, beta and eps are per sample.
    """

    def __init__(self, snr: float, per_sample: bool, momentum: str) -> None:
        self.snr, self.per_sample, self.momentum = snr, per_sample, momentum
        self.m = self.g_prev = self.delta = None
        self.eta: Tensor | float = 0.0
        self.betas: list[Tensor] = []  # mean beta per step, on x's device until the run ends

    def __call__(self, score: Score, x: Tensor, t: float, z: Tensor, a: float):
        g = score(x, t)
        if self.m is None:
            self.m, self.g_prev, self.delta = (torch.zeros_like(x) for _ in range(3))
        norm = self._norm
        first = norm(self.delta) == 0
        beta = torch.zeros_like(norm(g))
        if self.momentum == "adaptive":
            q = self.eta * norm(g - self.g_prev) / norm(self.delta)  # nan where first: masked
            beta = torch.where(first, beta, ((1 - q) / (1 + q)).square().clamp(0.0, 1.0 - E_BETA))
        m_old = g if self.momentum == "off" else torch.where(first, g, self.m)
        eps = snr_step_size(z, m_old, a, self.snr, self.per_sample)
        self.m = g if self.momentum == "off" else beta * self.m + (1 - beta) * g
        self.eta = eps * (1 + beta) ** 2
        self.delta, self.g_prev = self.eta * self.m, g
        self.betas.append(beta.mean())
        mean = x + self.delta
        return mean + torch.sqrt(2.0 * eps) * z, mean

    def _norm(self, v: Tensor) -> Tensor:
        return batch_norm(v, self.per_sample)


# ---- the predictor-corrector loop --------------------------------------------------------------


def default_snr(process: Process, opts: Mapping[str, Any]) -> float:
    """snr r: the option, else 0.16 on VE (score-SDE CIFAR-10) and 0.01 on VP (GGF's choice)."""
    if opts["snr"] is not None:
        return float(opts["snr"])
    return 0.16 if process.name == "ve" else 0.01


def pc_loop(
    name: str,
    corrector: Callable,
    score: CountingScore,
    process: Process,
    x: Tensor,
    schedule: Schedule,
    noise: PerSampleNoise,
    opts: Mapping[str, Any],
    final_noise: bool,
) -> Tensor:
    """Predictor-corrector sampling (SAMPLERS.md 2.6; code ``pc_sampler``): at step k from t to t'
    run n_steps corrector steps at t, then one predictor step t -> t'. With predictor "none" the
    correctors run at t' (so the last level is t_end). Noise index of corrector j at step k is
    k (n_steps + 1) + j, of the predictor k (n_steps + 1) + n_steps. Without final_noise the last
    noise draw of the run is dropped: the output is the last predictor (or corrector) mean."""
    n_c, pred = opts["n_steps"], opts["predictor"]
    for st in plan(schedule, final_noise):
        c = coefficients(process, st.t, st.t_next, opts["discretization"], len(schedule), st.k)
        t_c = st.t_next if pred == "none" else st.t
        for j in range(n_c):
            x_new, mean = corrector(score, x, t_c, noise.draw(st.k * (n_c + 1) + j, x), c.rho**2)
            x = mean if pred == "none" and not st.noisy and j == n_c - 1 else x_new
        tr = PREDICTORS[pred](score, process, x, st.t, st.t_next, c)
        z_index = st.k * (n_c + 1) + n_c
        x = tr.mean + tr.std * noise.draw(z_index, x) if st.noisy and tr.std > 0 else tr.mean
        if not all_finite(x):
            raise DivergenceError(name, st.k + 1, st.t, st.t_next)
    return x


def check_noise(name: str, noise: Any) -> None:
    if not isinstance(noise, PerSampleNoise):
        raise ValueError(
            f"sampler {name!r} draws corrector noise that is not a Brownian increment; "
            "use noise='independent'"
        )


def _run(
    name: str, make_corrector, score, process, x, t_end, opts, schedule, kwargs
) -> SampleResult:
    """Shared body of the ``pc``, ``ams`` and snr-``langevin`` runs (options already validated)."""
    noise, final_noise, denoise = kwargs["noise"], kwargs["final_noise"], kwargs["denoise"]
    check_noise(name, noise)
    counted = CountingScore(score)
    corrector = make_corrector(default_snr(process, opts), opts)
    noise = noise.for_schedule(schedule)
    x = pc_loop(name, corrector, counted, process, x, schedule, noise, opts, final_noise)
    if denoise:
        x = tweedie(counted, process, x, t_end)
    info = {"options": opts, "denoised": denoise, "score_calls": counted.calls}
    info["snr"] = default_snr(process, opts)
    if isinstance(corrector, AMSCorrector):
        betas = corrector.betas
        keep = betas and not x.is_meta
        info["momentum_beta"] = torch.stack(betas).cpu().tolist() if keep else []
    return SampleResult(x, counted.calls, t_end, info)


def _langevin_corrector(snr: float, opts: Mapping[str, Any]) -> LangevinCorrector:
    return LangevinCorrector(snr, opts["norm"] == "per-sample")


def _ams_corrector(snr: float, opts: Mapping[str, Any]) -> AMSCorrector:
    return AMSCorrector(snr, opts["norm"] == "per-sample", opts["momentum"])


def pc_run(score, process, x, steps, *, noise, t_end=None, final_noise=False, denoise=False, **o):
    """``pc``: score-SDE predictor-corrector with the Langevin corrector (``pc_loop``)."""
    t_end, opts, schedule = prepare(PC, process, steps, t_end, o)
    kw = dict(noise=noise, final_noise=final_noise, denoise=denoise)
    return _run(PC.name, _langevin_corrector, score, process, x, t_end, opts, schedule, kw)


def ams_run(score, process, x, steps, *, noise, t_end=None, final_noise=False, denoise=False, **o):
    """``ams``: AMS-PC, the PC sampler whose corrector is AMS-LC (SAMPLERS.md 6.3)."""
    t_end, opts, schedule = prepare(AMS, process, steps, t_end, o)
    kw = dict(noise=noise, final_noise=final_noise, denoise=denoise)
    return _run(AMS.name, _ams_corrector, score, process, x, t_end, opts, schedule, kw)


# ---- langevin on a fixed level -----------------------------------------------------------------


def fixed_level_schedule(
    process: Process, steps: int, t_end: float, options: Mapping[str, Any]
) -> Schedule:
    """``steps`` Langevin steps on the fixed level t_end: [(t_end, t_end)] * steps."""
    return [(t_end, t_end)] * steps


def langevin_step(
    score: Score, process: Process, x: Tensor, t: float, t_next: float, *, h: float
) -> Transition:
    """Unadjusted Langevin (ULA) on p_t (SAMPLERS.md 2.5): x' = x + h s(x, t) + sqrt(2 h) z."""
    return Transition(x + h * score(x, t), math.sqrt(2.0 * h))


def langevin_run(
    score, process, x, steps, *, noise, t_end=None, final_noise=False, denoise=False, **o
):
    """``langevin``: mode "fixed" runs the Gaussian-kernel chain ``LANGEVIN_FIXED`` (step h);
    mode "snr" runs the score-SDE Langevin corrector (``pc_loop`` with predictor "none", one
    corrector step per level, every level at t_end, a = 1)."""
    kw = dict(noise=noise, final_noise=final_noise, denoise=denoise)
    t_end, opts, schedule = prepare(LANGEVIN, process, steps, t_end, o)  # all options validated
    if opts["mode"] == "snr":
        loop = {**PC_OPTIONS, "snr": opts["snr"], "predictor": "none", "norm": opts["norm"]}
        res = _run(LANGEVIN.name, _langevin_corrector, score, process, x, t_end, loop, schedule, kw)
    else:
        try:
            res = run_chain(
                LANGEVIN_FIXED, score, process, x, steps, t_end=t_end, **kw, h=opts["h"]
            )
        except DivergenceError as exc:
            raise DivergenceError(LANGEVIN.name, exc.step, exc.t, exc.t_next) from None
    return SampleResult(res.x, res.nfe, res.t_end, {**res.info, "options": opts})


# ---- validation and specs ----------------------------------------------------------------------


def _positive(name: str, value: Any) -> None:
    if not (isinstance(value, int | float) and not isinstance(value, bool)) or not value > 0:
        raise ValueError(f"option {name} must be a number > 0, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"option {name} must be finite, got {value!r}")


def _check_euler(process: Process, steps: int, t_end: float, opts: Mapping[str, Any]) -> None:
    h = (1.0 - t_end) / steps
    if opts["discretization"] == "euler" and process.name == "vp" and process.g2(1.0) * h >= 1:
        raise ValueError(
            f"discretization 'euler' needs beta(1) h < 1 on VP, got {process.g2(1.0) * h:.3g} "
            f"(steps={steps}); use more steps or discretization 'interval'"
        )


def validate_rd(process: Process, steps: int, t_end: float, opts: Mapping[str, Any]) -> None:
    _check_euler(process, steps, t_end, opts)


def validate_pc(process: Process, steps: int, t_end: float, opts: Mapping[str, Any]) -> None:
    n = opts["n_steps"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"option n_steps must be an integer >= 0, got {n!r}")
    if n == 0 and opts["predictor"] == "none":
        raise ValueError("predictor 'none' needs n_steps >= 1 (otherwise nothing moves)")
    if opts["snr"] is not None:
        _positive("snr", opts["snr"])
    _check_euler(process, steps, t_end, opts)


def validate_langevin(process: Process, steps: int, t_end: float, opts) -> None:
    _positive("h", opts["h"])
    if opts["snr"] is not None:
        _positive("snr", opts["snr"])


PC_OPTIONS = {
    "n_steps": 1,
    "snr": None,
    "predictor": "reverse-diffusion",
    "discretization": "interval",
    "norm": "batch",
}
PC_CHOICES = {
    "predictor": tuple(PREDICTORS),
    "discretization": ("interval", "euler", "index"),
    "norm": ("batch", "per-sample"),
}

REVERSE_DIFFUSION = SamplerSpec(
    name="reverse-diffusion",
    family="SDE",
    stochastic=True,
    nfe_per_step=1,
    expected_order=1.0,
    step=reverse_diffusion_step,
    citation=SONG + " (ReverseDiffusionPredictor)",
    claims=(),  # none of its own; DDPM-type analyses apply by analogy (SAMPLERS.md 0.1)
    options={"discretization": "interval"},
    choices={"discretization": ("interval", "euler")},
    brownian=True,
    validate=validate_rd,
)

PC = SamplerSpec(
    name="pc",
    family="SDE (predictor-corrector)",
    stochastic=True,
    nfe_per_step=2,
    expected_order=None,  # predictor order 1, but an N-independent corrector bias (SAMPLERS.md 2.6)
    run=pc_run,
    citation=SONG + " (pc_sampler, LangevinCorrector)",
    claims=(),
    options=PC_OPTIONS,
    choices=PC_CHOICES,
    validate=validate_pc,
)

AMS = SamplerSpec(
    name="ams",
    family="momentum",
    stochastic=True,
    nfe_per_step=2,
    expected_order=None,  # no rate known (SAMPLERS.md 6.5)
    run=ams_run,
    citation=WEN + " (LangevinCorrectorMomentum)",
    claims=(
        Claim(
            "speedup",
            0.0,
            "2-5x speed-up at small step counts (Wen et al. 2024, arXiv 2405.13726; empirical, "
            "protocol unknown)",
        ),
    ),
    options={**PC_OPTIONS, "momentum": "adaptive"},
    choices={**PC_CHOICES, "momentum": ("adaptive", "lagged", "off")},
    validate=validate_pc,
)

LANGEVIN = SamplerSpec(
    name="langevin",
    family="annealed Langevin",
    stochastic=True,
    nfe_per_step=1,
    # order 1 in the step size h (stationary bias, THEORY.md 3.3), not in the number of steps:
    # more steps at fixed h converge geometrically to the biased law, so no T-order is declared.
    expected_order=None,
    run=langevin_run,
    schedule=fixed_level_schedule,
    citation="Unadjusted Langevin (Roberts & Tweedie 1996); " + SONG + " (LangevinCorrector)",
    claims=(
        Claim(
            "kl-bias-h", 2.0, "ULA stationary bias KL O(h^2) (Mou et al. 2019, arXiv 1907.11331)"
        ),
    ),
    options={"mode": "fixed", "h": 0.01, "snr": None, "norm": "batch"},
    choices={"mode": ("fixed", "snr"), "norm": ("batch", "per-sample")},
    validate=validate_langevin,
)

# Unregistered helper of ``langevin``: the fixed-h Gaussian-kernel chain (affine: use it with the
# exact Gaussian evaluator).
LANGEVIN_FIXED = SamplerSpec(
    name="langevin-fixed",
    family="annealed Langevin",
    stochastic=True,
    nfe_per_step=1,
    expected_order=None,
    step=langevin_step,
    schedule=fixed_level_schedule,
    citation=LANGEVIN.citation,
    options={"h": 0.01},
    validate=lambda process, steps, t_end, opts: _positive("h", opts["h"]),
)

SPECS = (REVERSE_DIFFUSION, LANGEVIN, PC, AMS)
