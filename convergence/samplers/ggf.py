"""Gotta Go Fast (GGF): adaptive step-size solver for the reverse-time SDE.

Jolicoeur-Martineau, Li, Piche-Taillefer, Kachman & Mitliagkas 2021, "Gotta Go Fast When Generating
Data with Score-Based Models", arXiv 2105.14080 (Algorithm 1; official code ``AdaptivePredictor``
and ``pc_sampler_adaptive`` in AlexiaJM/score_sde_fast_sampling). Spec: SAMPLERS.md 5.1.

With the reverse drift F(x, t) = g(t)^2 s(x, t) - f(t) x, every sample i carries its own time t_i,
step h_i and previous proposal x'_prev,i. One attempt (2 NFE) for the active samples:

    z ~ N(0, I)                                     (the same z in both stages)
    K1 = h F(x, t) + g(t) sqrt(h) z,                x'  = x + K1              (Euler-Maruyama)
    K2 = h F(x', t - h) + g(t - h) sqrt(h) z,       x'' = x + (K1 + K2) / 2   (stochastic Heun)
    delta = max(eps_abs, eps_rel max(|x'|, |x'_prev|))                       (elementwise)
    E = sqrt(mean_j ((x' - x'')_j / delta_j)^2)                              (scaled L2, per sample)
    accept iff E <= 1:  x <- x'' (extrapolation), x'_prev <- x', t <- t - h
    h <- min(t - t_end, theta h E^-r)  (updated t; E = 0 gives t - t_end; finished samples h = 0)

until |t_i - t_end| <= 1e-6 for every sample; then the Tweedie denoise at t_end (+1 NFE). A
rejected attempt leaves x, t, x'_prev unchanged and the next attempt draws a fresh z.

Per-sample times. ``score_times="tensor"`` (default) makes one call score(x, t) with t a (m,)
float64 tensor of per-sample times; the package's GaussianMixture.score_fn accepts that.
``score_times="grouped"``, for scores that take only one time per call, evaluates s(x_i, t_i)
by grouping the rows with equal t_i and calling score(x_group, float(t)) once per distinct time;
after the first attempt the times of a batch are all distinct, so one round costs up to n score
calls on single rows (about 0.4 ms each for a small GMM: n = 2000 samples and 100 attempts take
minutes). Both give the same numbers up to rounding.

NFE. Every evaluation round goes through one ``CountingScore`` (one call = one NFE for each row it
is given) and each row's count is recorded: info["nfe_per_sample"] = 2 x attempts + 1 per sample,
``SampleResult.nfe`` = the batch maximum (= the counted rounds: the slowest sample takes part in
every round), info["score_batches"] = raw score calls actually made (the cost of grouping).

Noise. Round k (0, 1, ...) draws noise.draw(k, x) for the whole batch and uses the rows of the
active samples; every active sample is at its own attempt k in round k, so sample i's path depends
on (seed, i) only: outputs do not depend on the batch size. With ``noise="brownian"`` each sample
instead follows one Brownian path (``BrownianTree`` on u = (1 - t) / (1 - t_end)): the attempt
from t to t - h uses z = (B(u(t - h)) - B(u(t))) / sqrt(u(t - h) - u(t)), and a rejected attempt
is retried on the same path, as in rejection sampling with memory (Rackauckas & Nie 2017), not
with a fresh z as in the paper. Runs at different tolerances then share one path.

``steps`` is ignored (an adaptive solver picks its own steps; it is only checked to be an integer
>= 1); ``max_attempts`` caps the rounds and raises if the tolerances cannot be met within it.

Code ablations as options: ``norm`` ("l2" | "linf"), ``error_use_prev``, ``extrapolation``,
``error_estimate="drift"`` (sde_improved_euler=False) and ``tweedie`` ("paper" | "code" | "none").
Known limitation (measured, docs/samplers/ggf.md): the accept/reject decision depends on z, so the
output law keeps an O(1) bias as the tolerances go to 0 in low dimension; the drift estimate with
a purely absolute tolerance does converge.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from analytic.processes import Process
from convergence.noise import BrownianTree, PerSampleNoise
from convergence.samplers.base import (
    CountingScore,
    DivergenceError,
    SampleResult,
    SamplerSpec,
    Score,
    Tensor,
    prepare,
    tweedie,
)

FINISHED = 1e-6  # a sample has reached t_end when |t - t_end| <= FINISHED (SAMPLERS.md 5.1)
EPS_ABS = {"vp": 0.0078, "ve": 0.0039}  # about one 8-bit grey level on [-1, 1] / [0, 1] data


class _PerSampleScore:
    """s(x_i, t_i) for a subset ``rows`` of the batch, t a (m,) float64 tensor of times.

    Calls go through a CountingScore (one round = one NFE per row given); ``nfe`` counts each
    sample's evaluations and ``batches`` the raw calls of the wrapped score.
    """

    def __init__(self, score: Score, n: int, mode: str, device: torch.device) -> None:
        self.score, self.mode, self.batches = score, mode, 0
        self.nfe = torch.zeros(n, dtype=torch.int64, device=device)
        self.counted = CountingScore(self._evaluate)

    def _evaluate(self, x: Tensor, t: Tensor) -> Tensor:
        if self.mode == "tensor":
            self.batches += 1
            return self.score(x, t)
        out = torch.empty_like(x)
        for u in torch.unique(t):
            group = t == u
            out[group] = self.score(x[group], float(u))
            self.batches += 1
        return out

    def __call__(self, x: Tensor, t: Tensor, rows: Tensor) -> Tensor:
        self.nfe[rows] += 1
        return self.counted(x, t)


def reverse_drift(score: _PerSampleScore, process: Process, x, t, rows) -> Tensor:
    """F(x, t) = g(t)^2 s(x, t) - f(t) x per row (VP: beta (s + x / 2); VE: g^2 s)."""
    col = lambda c: c.to(x.dtype)[:, None]  # noqa: E731
    return col(process.g2(t)) * score(x, t, rows) - col(process.f(t)) * x


def attempt(score, process, x, t, h, z, rows, estimate: str) -> tuple[Tensor, Tensor]:
    """One GGF attempt: the Euler-Maruyama proposal x' and the higher-order value x'' sharing the
    noise z; the error estimate is x' - x''. 2 NFE per row.

    "sde" (paper, SAMPLERS.md 5.1 steps 2.2-2.3): K1 = h F(x, t) + g(t) sqrt(h) z, x' = x + K1,
    K2 = h F(x', t - h) + g(t - h) sqrt(h) z, x'' = x + (K1 + K2) / 2.
    "drift" (the code's sde_improved_euler=False ablation, Lamba-style): m = x + h F(x, t),
    x' = m + g(t) sqrt(h) z, x'' = x + h (F(x, t) + F(m, t - h)) / 2 + g(t) sqrt(h) z, so
    x' - x'' = h (F(x, t) - F(m, t - h)) / 2 does not depend on z.
    """
    hc = h.to(x.dtype)[:, None]
    sqrt_h = hc.sqrt()
    g = lambda s: process.g2(s).sqrt().to(x.dtype)[:, None]  # noqa: E731
    f1 = reverse_drift(score, process, x, t, rows)
    t2 = t - h
    if estimate == "drift":
        mean = x + hc * f1
        f2 = reverse_drift(score, process, mean, t2, rows)
        noise = g(t) * sqrt_h * z
        return mean + noise, x + 0.5 * hc * (f1 + f2) + noise
    k1 = hc * f1 + g(t) * sqrt_h * z
    x1 = x + k1
    k2 = hc * reverse_drift(score, process, x1, t2, rows) + g(t2) * sqrt_h * z
    return x1, x + 0.5 * (k1 + k2)


def scaled_error(x1: Tensor, x2: Tensor, x_prev: Tensor, opts: Mapping[str, Any]) -> Tensor:
    """E per sample: ||(x' - x'') / delta|| with delta = max(eps_abs, eps_rel max(|x'|,
    |x'_prev|)) elementwise; RMS over coordinates ("l2") or max ("linf")."""
    scale = x1.abs() if not opts["error_use_prev"] else torch.maximum(x1.abs(), x_prev.abs())
    delta = torch.clamp(opts["eps_rel"] * scale, min=opts["eps_abs"])
    ratio = (x1 - x2) / delta
    if opts["norm"] == "linf":
        return ratio.abs().amax(dim=1)
    return ratio.square().mean(dim=1).sqrt()


def ggf_run(
    score: Score,
    process: Process,
    x: Tensor,
    steps: int,
    *,
    noise: PerSampleNoise,
    t_end: float | None = None,
    final_noise: bool = False,
    denoise: bool = False,
    **options: Any,
) -> SampleResult:
    """Sample with GGF from x (n, d) at t = 1 down to t_end, then Tweedie-denoise (SAMPLERS.md 5.1).

    ``steps`` is ignored; ``final_noise`` has no effect (the last accepted value is x'', whose
    noise is part of the step). The final Tweedie denoise is part of GGF (step 3) and set by the
    option ``tweedie``: "paper" (default) (x + sigma^2 s(x, t_end)) / alpha, "code" x + sigma^2 s
    (the official code omits the VP division by alpha), "none" (output at t_end). The runner's
    ``denoise=True`` applies the paper's map when ``tweedie="none"`` and is a no-op otherwise, so
    the map is applied at most once. The spec declares ``denoised_output``, so the evaluator
    compares a denoised output with the Tweedie push-forward of q_t_end (the "code" variant then
    carries a relative bias 1 - alpha(t_end), 5e-5 on VP).
    """
    t_end, opts, _ = prepare(GGF, process, steps, t_end, options)
    tree = None if isinstance(noise, PerSampleNoise) else BrownianTree(noise.seed, noise.offset)
    opts["eps_abs"] = eps_abs_for(process, opts)
    x = x.clone()
    n, device = x.shape[0], x.device
    ev = _PerSampleScore(score, n, opts["score_times"], device)
    t = torch.ones(n, dtype=torch.float64, device=device)
    h = torch.full_like(t, opts["h_init"])
    x_prev = x.clone()
    accepted = torch.zeros(n, dtype=torch.int64, device=device)
    rejected = torch.zeros_like(accepted)
    active = torch.ones(n, dtype=torch.bool, device=device)
    b_now = torch.zeros(n, x.shape[1], dtype=torch.float64, device=device)  # B(u(t)), tree only
    k = 0
    while bool(active.any()):
        if k >= opts["max_attempts"]:
            raise RuntimeError(
                f"sampler 'ggf' did not reach t_end={t_end:g} within max_attempts="
                f"{opts['max_attempts']} attempted steps; loosen eps_rel/eps_abs or raise it"
            )
        rows = active.nonzero()[:, 0]
        xa, ta, ha = x[rows], t[rows], h[rows]
        if tree is None:
            z = noise.draw(k, x)[rows]
        else:
            u0, u1 = (1.0 - ta) / (1.0 - t_end), (1.0 - (ta - ha)) / (1.0 - t_end)
            b_next = tree.value(rows, u1, x.shape[1])
            z = ((b_next - b_now[rows]) / torch.sqrt(u1 - u0)[:, None]).to(x.dtype)
        low, high = attempt(ev, process, xa, ta, ha, z, rows, opts["error_estimate"])
        # the checked value (in delta, stored as x'_prev) and the kept one: x', x'' with
        # extrapolation; swapped without it, as in the official code
        x1, x2 = (low, high) if opts["extrapolation"] else (high, low)
        err = scaled_error(x1, x2, x_prev[rows], opts)
        bad = ~torch.isfinite(err)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise DivergenceError("ggf", k + 1, float(ta[i]), float(ta[i] - ha[i]))
        ok = err <= 1.0
        okc = ok[:, None]
        if tree is not None:
            b_now[rows] = torch.where(okc, b_next, b_now[rows])
        x[rows] = torch.where(okc, x2, xa)
        x_prev[rows] = torch.where(okc, x1, x_prev[rows])
        t_new = torch.where(ok, ta - ha, ta)
        t[rows] = t_new
        step_ratio = opts["theta"] * err.to(torch.float64).pow(-opts["r"])
        h[rows] = torch.minimum(t_new - t_end, ha * step_ratio)
        accepted[rows] += ok.to(torch.int64)
        rejected[rows] += (~ok).to(torch.int64)
        active = (t - t_end).abs() > FINISHED
        h[~active] = 0.0
        k += 1
    denoised = GGF.output_is_denoised(opts, denoise)
    if denoised:
        variant = "paper" if opts["tweedie"] == "none" else opts["tweedie"]
        x = final_denoise(ev, process, x, t_end, variant)
    nfe = int(ev.nfe.max()) if n else 0
    attempts = accepted + rejected
    info = {
        "options": opts,
        "denoised": denoised,
        "score_calls": ev.counted.calls,
        "score_batches": ev.batches,
        "nfe_per_sample": ev.nfe,
        "accepted": accepted,
        "rejected": rejected,
        "rejected_fraction": float(rejected.sum()) / max(int(attempts.sum()), 1),
        "rounds": k,
        "steps_requested": steps,
    }
    return SampleResult(x, nfe, t_end, info)


def final_denoise(ev: _PerSampleScore, process: Process, x: Tensor, t_end: float, variant: str):
    """Tweedie at t_end (SAMPLERS.md 5.1 step 3, 2.10): (x + sigma^2 s) / alpha ("paper"), or
    x + sigma^2 s ("code": the official code omits the VP division by alpha(t_end) ~ 0.99995).
    1 NFE per sample."""
    rows = torch.arange(x.shape[0], device=x.device)
    times = torch.full((x.shape[0],), t_end, dtype=torch.float64, device=x.device)
    out = tweedie(lambda y, _t: ev(y, times, rows), process, x, t_end)
    return out * process.alpha(t_end) if variant == "code" else out


def eps_abs_for(process: Process, opts: Mapping[str, Any]) -> float:
    """The absolute tolerance: the option, or the per-process default of SAMPLERS.md 5.1."""
    return EPS_ABS[process.name] if opts["eps_abs"] is None else float(opts["eps_abs"])


def _positive(name: str, value: Any, upper: float = math.inf, closed: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not (ok and value > 0 and (value <= upper if closed else value < upper)):
        bound = f"(0, {upper:g}]" if closed else ("> 0" if upper == math.inf else f"(0, {upper:g})")
        raise ValueError(
            f"option {name} of sampler 'ggf' must be a finite number {bound}, got {value!r}"
        )


def validate(process: Process, steps: int, t_end: float, opts: Mapping[str, Any]) -> None:
    """Tolerances > 0, safety factor theta in (0, 1], exponent r > 0, 0 < h_init <= 1 - t_end,
    max_attempts an integer >= 1, boolean switches."""
    if opts["eps_abs"] is not None:
        _positive("eps_abs", opts["eps_abs"])
    _positive("eps_rel", opts["eps_rel"])
    _positive("theta", opts["theta"], 1.0, closed=True)
    _positive("r", opts["r"])
    _positive("h_init", opts["h_init"], 1.0 - t_end, closed=True)
    cap = opts["max_attempts"]
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
        raise ValueError(
            f"option max_attempts of sampler 'ggf' must be an integer >= 1, got {cap!r}"
        )
    for name in ("extrapolation", "error_use_prev"):
        if not isinstance(opts[name], bool):
            raise ValueError(
                f"option {name} of sampler 'ggf' must be True or False, got {opts[name]!r}"
            )


GGF = SamplerSpec(
    name="ggf",
    family="adaptive",
    adaptive=True,
    stochastic=True,
    nfe_per_step=2,
    expected_order=None,
    run=ggf_run,
    citation=(
        "Jolicoeur-Martineau, Li, Piche-Taillefer, Kachman & Mitliagkas 2021, Gotta Go Fast When "
        "Generating Data with Score-Based Models, arXiv 2105.14080"
    ),
    claims=(),  # empirical 2-10x NFE saving over EM, no rate theorem (SAMPLERS.md 0.1, 5)
    options={
        "eps_abs": None,  # None: 0.0078 on VP, 0.0039 on VE
        "eps_rel": 0.01,
        "theta": 0.9,
        "r": 0.9,
        "h_init": 0.01,
        "norm": "l2",
        "error_estimate": "sde",
        "extrapolation": True,
        "error_use_prev": True,
        "tweedie": "paper",
        "score_times": "tensor",
        "max_attempts": 100_000,
    },
    choices={
        "norm": ("l2", "linf"),
        "error_estimate": ("sde", "drift"),
        "tweedie": ("paper", "code", "none"),
        "score_times": ("grouped", "tensor"),
    },
    validate=validate,
    denoised_output=lambda options: options["tweedie"] != "none",
)

SPECS = (GGF,)
