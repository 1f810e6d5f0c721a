"""Claim 10 of the report: where a learned score's error takes over from discretisation error.

The network of ``NETWORK`` (trained by ``convergence train`` on ``product:d=16,k=3,seed=0``, VP)
is measured two ways:

* its exact score error per time (the ``learned_error`` study): eps_score(t)^2 =
  E_{q_t} |s_theta(X, t) - grad log q_t(X)|^2 by Monte Carlo over exact draws of q_t with a 95%
  CI, beside the size of the true score E_{q_t} |grad log q_t|^2 (``score_error_curve``);
* the samplers' error against T with the exact score, the network, and constant bias fields
  ``bias:eps=E`` (|delta| = E at every x and t) on the same target, all by one metric, the MMD
  of samples against the exact mixture (config ``claim10_learned``: a network is not
  coordinate-separable, so the tensorised evaluator cannot measure it); the exact and bias runs
  also exactly in KL (tensor evaluator, ``claim10_learned_exact``).

The judge compares, at the largest T, the network's error with that of the bias field whose
eps_score (recorded per run over the sampler's own grid) is nearest the network's: "matched".
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

NETWORK = "reports/networks/product_d16_vp.pt"  # relative to the repository root (the cwd)
TARGET = "product:d=16,k=3,seed=0"
PROCESS = "vp"
Z95 = 1.959963984540054


def score_error_curve(score, process, times, *, n: int = 2000, seed: int = 0) -> dict:
    """eps_score(t)^2 of a ``LearnedScore`` at each time with its 95% half-width, and the mean
    square of the exact score E_{q_t}|grad log q_t|^2 at the same times and draws (for scale):
    ``convergence.scores.score_error`` with Monte Carlo forced, n exact draws per time.
    Returns lists keyed times, eps2, eps2_ci, jac2, jac2_ci, score2, and the averages."""
    from convergence.scores import score_error

    ts = [float(t) for t in times]
    err = score_error(score.target, process, score, ts, n=n, seed=seed, monte_carlo=True)
    exact = score.target.score_fn(process)
    score2 = []
    for j, t in enumerate(ts):
        sub = int(np.random.SeedSequence([seed, j]).generate_state(1)[0])
        x = score.target.noised(process, t).sample(n, seed=sub)  # the draws score_error used
        score2.append(float(exact(x, t).square().sum(-1).mean()))
    return {
        "times": ts,
        "eps2": err.eps_score2_t.tolist(),
        "eps2_ci": err.eps_score2_t_ci.tolist(),
        "jac2": err.eps_jacobi2_t.tolist(),
        "jac2_ci": err.eps_jacobi2_t_ci.tolist(),
        "score2": score2,
        "eps_score": err.eps_score,
        "eps_score_ci": err.eps_score_ci,
        "eps_jacobi": err.eps_jacobi,
        "eps_jacobi_ci": err.eps_jacobi_ci,
        "n": n,
    }


def learned_error_study(quick: bool = False, path: str | Path = NETWORK) -> dict:
    """The ``learned_error`` study: ``score_error_curve`` of the report's network at ddim's step
    start times for T = 256, subsampled to 24 (quick: 6 times, n = 300)."""
    from analytic.processes import make_process
    from convergence.learned.perturbation import LearnedScore
    from convergence.samplers import get_spec
    from convergence.samplers.base import check_t_end, prepare
    from convergence.targets import parse_target

    process = make_process(PROCESS)
    score = LearnedScore(parse_target(TARGET), str(path), device="cpu")
    _, _, schedule = prepare(get_spec("ddim"), process, 256, check_t_end(process, None), {})
    starts = [t for t, _ in schedule]
    m = 6 if quick else 24
    times = [starts[round(i * (len(starts) - 1) / (m - 1))] for i in range(m)]
    with torch.no_grad():
        curve = score_error_curve(score, process, times, n=300 if quick else 2000)
    return {"checkpoint": str(path), "target": TARGET, "process": PROCESS, **curve}


def plot_score_error(curve: dict, out_stem: str | Path) -> list[Path]:
    """eps_score(t) = sqrt(E|s_theta - grad log q_t|^2) against t (log-log, 95% CI bars) with
    the exact score's size sqrt(E|grad log q_t|^2) dashed for scale; PDF and PNG."""
    from convergence.figures import Series, plot_series

    t = np.asarray(curve["times"], float)
    e2, h2 = np.asarray(curve["eps2"], float), np.asarray(curve["eps2_ci"], float)
    eps = np.sqrt(e2)
    half = eps - np.sqrt(np.clip(e2 - h2, 0.0, None))  # the wider (lower) side, as _sqrt_ci
    size = np.sqrt(np.asarray(curve["score2"], float))
    return plot_series(
        [
            Series(r"network: $\varepsilon_{\rm score}(t)$", t, eps, yerr=half, style="network"),
            Series(r"exact score size $(E|\nabla\log q_t|^2)^{1/2}$", t, size, kind="dashed"),
        ],
        out_stem,
        xlabel="time $t$",
        ylabel="root mean square",
    )


def judge_learned(ctx):
    """Claim 10's findings: the network's eps_score (study); per sampler the MMD at the largest
    T with the network against the exact score and the matched bias field, with a verdict in
    words; figures of MMD against T (ddim, ddpm: every score source) and of the exact KL with
    the bias fields."""
    from convergence.report import Finding
    from convergence.verdicts import NAN, _metric_label, _result, curve_series

    findings, words = [], []
    study = ctx.studies.get("learned_error") or {}
    if study:
        findings.append(
            Finding(
                f"network on {study['target']} ({study['process']}), ddim grid T=256",
                "eps_score (RMS over t)",
                "-",
                "-",
                study["eps_score"],
                study["eps_score"] - study["eps_score_ci"],
                study["eps_score"] + study["eps_score_ci"],
                f"Monte Carlo, n={study['n']} per time",
                "measured",
            )
        )
        if ctx.draw:
            ctx.figures += plot_score_error(study, ctx.stem("eps_score_vs_t"))
    for s in ("ddim", "li-accel-ddim", "ddpm", "li-accel-ddpm"):
        mine = ctx.curves(sampler=s, metric="mmd")
        net = next((c for c in mine if _kind(c) == "learned"), None)
        exact = next((c for c in mine if _kind(c) is None), None)
        if net is None or exact is None or net.steps[-1] not in exact.steps:
            continue
        t = net.steps[-1]
        e_net, e_exact = net.errors[-1], exact.errors[exact.steps.index(t)]
        match = _matched_bias(mine, net, t)
        ratio = NAN if match is None else e_net / match.errors[match.steps.index(t)]
        verdict = _plateau_words(_last_slope(net) > -0.3, _last_slope(exact), ratio, match)
        words.append(f"{s}: {verdict}")
        findings.append(
            Finding(
                f"{s}, MMD at T={t}: network {e_net:.2g}, exact {e_exact:.2g}, eps_score "
                f"{net.eps_score[-1]:.2g}",
                "network / matched-bias MMD",
                "-",
                "1",
                ratio,
                NAN,
                NAN,
                net.key.evaluator,
                verdict,
            )
        )
    for metric, sampler in (("mmd", "ddim"), ("mmd", "ddpm"), ("kl", "ddim"), ("kl", "ddpm")):
        cs = ctx.curves(sampler=sampler, metric=metric)
        ctx.plot(
            f"{metric}_vs_T_{sampler}",
            [curve_series(c, cs, extra=f", {_source(c)}") for c in cs],
            xlabel="steps $T$",
            ylabel=f"{_metric_label(metric)} ({sampler}, product:d=16)",
        )
    verdict = "; ".join(words) if words else "pending"
    return _result(ctx, findings, verdict)


def _kind(c) -> str | None:
    p = c.key.perturbation
    return None if p is None else p.split(":", 1)[0]


def _source(c) -> str:
    kind = _kind(c)
    if kind is None:
        return "exact score"
    if kind == "learned":
        return "network"
    return c.key.perturbation.replace("bias:eps=", "bias $\\varepsilon$=")


def _last_slope(c) -> float:
    slopes = [v for v in c.local_slopes if math.isfinite(v)]
    return slopes[-1] if slopes else math.nan


def _matched_bias(curves, net, t: int):
    """The bias curve whose eps_score at T=t is nearest the network's (in log ratio)."""
    j = net.steps.index(t)
    e = net.eps_score[j]
    if e is None or not e > 0:
        return None
    best, gap = None, math.inf
    for c in curves:
        if _kind(c) != "bias" or t not in c.steps:
            continue
        eb = c.eps_score[c.steps.index(t)]
        if eb is not None and eb > 0 and abs(math.log(eb / e)) < gap:
            best, gap = c, abs(math.log(eb / e))
    return best


def _plateau_words(flat: bool, exact_slope: float, ratio: float, match) -> str:
    if not flat:
        return "still decaying at the largest T (discretisation error dominates)"
    size = "" if match is None else f" ({match.key.perturbation})"
    exact = f"; exact score still at slope {exact_slope:.2f}"
    if math.isfinite(ratio) and 1 / 3 <= ratio <= 3:
        return f"plateau consistent with the matched eps_score{size}: ratio {ratio:.2g}{exact}"
    if math.isfinite(ratio):
        return f"plateau, {ratio:.2g} times the matched perturbation's error{size}{exact}"
    return f"plateau (no matched perturbation){exact}"
