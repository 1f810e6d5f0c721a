"""Claim 10 of the report: where a learned score's error takes over from discretisation error.

Two networks of ``NETWORKS`` (``convergence train`` on ``product:d=16,k=3,seed=0``, VP, default
recipe, 600 and 6000 steps) are measured two ways:

* its exact score error per time (the ``learned_error`` study): eps_score(t)^2 =
  E_{q_t} |s_theta(X, t) - grad log q_t(X)|^2 by Monte Carlo over exact draws of q_t with a 95%
  CI, beside the size of the true score E_{q_t} |grad log q_t|^2 (``score_error_curve``);
* the samplers' error against T with the exact score, the network, and constant bias fields
  ``bias:eps=E`` (|delta| = E at every x and t) on the same target, all by one metric, the MMD
  of samples against the exact mixture (config ``claim10_learned``: a network is not
  coordinate-separable, so the tensorised evaluator cannot measure it); the exact and bias runs
  also exactly in KL (tensor evaluator, ``claim10_learned_exact``). The short-trained network
  runs with all four samplers (``claim10_learned``), the long-trained one with ddim and ddpm
  (``claim10_learned_long``).

Exactly (E6, configs ``claim10_learned_grid`` and ``claim10_learned_logdet``): networks of
width 128 trained on ``gmm:d=1,k=3,seed=0`` (300 and 3000 steps) run with ddim and ddpm and are
measured by the exact TV and KL of the grid evaluator; one trained on ``gmm:d=2,k=3,seed=0`` runs
with ddim and is measured in TV by the log-det evaluator (exact densities along n trajectories, a
Monte Carlo CI). Beside them: bias fields of the same eps_score (eps_jacobi = 0) and sine fields
``sin:eps=e,omega=w`` of the same eps_score and eps_jacobi.

The judge compares, at each network curve's largest T, its error with that of the bias field
whose eps_score (recorded per run over the sampler's own grid) is nearest the network's:
"matched" (``judge_learned`` states the rule); a network point below 10x the MMD floor is dropped
and said to be unresolved, a lack of power rather than the absence of a plateau. With the exact
TV it adds, as context, the ratio to the sine field nearest in (eps_score, eps_jacobi) and each
source's plateau / eps_score (and / eps_jacobi).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

# relative to the repository root (the cwd); trained for 600 and for 6000 steps
NETWORKS = ("reports/networks/product_d16_vp_600.pt", "reports/networks/product_d16_vp.pt")
TARGET = "product:d=16,k=3,seed=0"
PROCESS = "vp"
Z95 = 1.959963984540054
SAMPLERS = ("ddim", "li-accel-ddim", "ddpm", "li-accel-ddpm")
EXACT_METRIC = "tv"  # E6: the networks on 1-D and 2-D mixtures, measured exactly


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


def learned_error_study(quick: bool = False, paths: tuple[str, ...] = NETWORKS) -> dict:
    """The ``learned_error`` study: ``score_error_curve`` of each of the report's networks at
    ddim's step start times for T = 256, subsampled to 24 (quick: 6 times, n = 300), as
    {"target", "process", "networks": [{"checkpoint", "train_steps", <curve>}, ...]}."""
    from analytic.processes import make_process
    from convergence.learned.perturbation import LearnedScore
    from convergence.samplers import get_spec
    from convergence.samplers.base import check_t_end, prepare
    from convergence.targets import parse_target

    process = make_process(PROCESS)
    _, _, schedule = prepare(get_spec("ddim"), process, 256, check_t_end(process, None), {})
    starts = [t for t, _ in schedule]
    m = 6 if quick else 24
    times = [starts[round(i * (len(starts) - 1) / (m - 1))] for i in range(m)]
    networks = []
    for path in paths:
        score = LearnedScore(parse_target(TARGET), str(path), device="cpu")
        with torch.no_grad():
            curve = score_error_curve(score, process, times, n=300 if quick else 1000)
        networks.append({"checkpoint": str(path), "train_steps": score.meta["step"], **curve})
    return {"target": TARGET, "process": PROCESS, "networks": networks}


def plot_score_error(study: dict, out_stem: str | Path) -> list[Path]:
    """eps_score(t) = sqrt(E|s_theta - grad log q_t|^2) of each network against t (log-log, 95%
    CI bars) with the exact score's size sqrt(E|grad log q_t|^2) dashed for scale; PDF and PNG."""
    from convergence.figures import Series, plot_series

    series = []
    for net in study["networks"]:
        t = np.asarray(net["times"], float)
        e2, h2 = np.asarray(net["eps2"], float), np.asarray(net["eps2_ci"], float)
        eps = np.sqrt(e2)
        half = eps - np.sqrt(np.clip(e2 - h2, 0.0, None))  # the wider (lower) side, as _sqrt_ci
        name = f"network, {net['train_steps']} steps"
        label = name + r": $\varepsilon_{\rm score}(t)$"
        series.append(Series(label, t, eps, yerr=half, style=name))
    size = np.sqrt(np.asarray(study["networks"][0]["score2"], float))
    series.append(Series(r"exact score size $(E|\nabla\log q_t|^2)^{1/2}$", t, size, kind="dashed"))
    return plot_series(series, out_stem, xlabel="time $t$", ylabel="root mean square")


def judge_learned(ctx):
    """Claim 10's findings: the network's eps_score (study); per sampler, target and network, at
    the largest T, the ratio of the network's error to that of the bias field with the nearest
    eps_score against the claimed range [1/3, 3] (the plateau is set by eps_score): by the MMD at
    d = 16 and by the exact TV in d = 1 (grid) and d = 2 (log-det), decisive only where the
    network's point is valid (an MMD point below 10x its floor lacks the power to see a plateau,
    which is not the absence of one). With the exact TV also, as context: the ratio to the sine
    field with the nearest (eps_score, eps_jacobi), and plateau / eps_score and plateau /
    eps_jacobi of every score source. Figures: error against T per sampler and target, the
    plateau against eps_score."""
    from convergence.claims.findings import Finding, Kind, Status

    findings, words = [], []
    study = ctx.studies.get("learned_error") or {}
    for net in study.get("networks", []):
        findings.append(
            Finding(
                f"network ({net['train_steps']} training steps) on {study['target']} "
                f"({study['process']}), ddim grid T=256",
                "eps_score (RMS over t)",
                net["eps_score"],
                net["eps_score"] - net["eps_score_ci"],
                net["eps_score"] + net["eps_score_ci"],
                evaluator=f"Monte Carlo, n={net['n']} per time",
            )
        )
    if study and ctx.draw:
        ctx.figures += plot_score_error(study, ctx.stem("eps_score_vs_t"))
    plateaus = []
    for metric in ("mmd", EXACT_METRIC):
        for s in SAMPLERS:
            for target, mine in _by_target(ctx.curves(sampler=s, metric=metric)):
                for net in (c for c in mine if _kind(c) == "learned"):
                    f, said = _bias_finding(s, net, mine, metric)
                    findings.append(f)
                    words.append(said)
                    if metric == EXACT_METRIC:
                        findings.append(_sine_finding(s, net, mine))
                if metric == EXACT_METRIC:
                    rows = [_plateau_finding(s, c) for c in mine if _kind(c) is not None]
                    findings += [r for r in rows if r is not None]
                    plateaus.append((s, target, mine))
    _draw(ctx, plateaus)
    below = [f for f in findings if f.status is Status.BELOW]
    ranges = [f for f in findings if f.kind is Kind.RANGE]
    if below:
        words.append(
            f"in {len(below)} of {len(ranges)} settings the network's error is below a third of "
            "that of a bias field of the same l2 size (at most "
            f"{max(f.hi for f in below):.2g}x): eps_score bounds the plateau from above but "
            "does not set its level"
        )
    return ctx.result(findings, words)


def _bias_finding(sampler: str, net, curves, metric: str):
    """The decisive finding of one network curve: its error at its largest T over that of the
    bias field with the nearest eps_score, against [1/3, 3]; and its sentence."""
    from convergence.claims.findings import Status, range_finding

    t, match, (e_net, x_net), (e_bias, x_bias) = _pair_at_end(net, curves, "bias")
    excluded = tuple(x for x in (x_net, x_bias) if x is not None)
    ratio, lo, hi, detail = math.nan, math.nan, math.nan, ""
    if math.isfinite(e_net) and math.isfinite(e_bias):
        ratio, lo, hi = _ratio(net, match, t)
        detail = _plateau_detail(net, t)
    elif math.isfinite(e_bias) and _resolvable_above(x_net):
        # the network's point is too small to estimate but not unknown: its error is at most
        # max(value + 1.96 u, 10 x floor), so the ratio has an upper bound
        ceiling = _ceiling(net, t)
        ratio, lo, hi = ceiling / e_bias, 0.0, ceiling / e_bias
        detail = (
            f"upper bound: the network's {metric.upper()} is at most {ceiling:.2g} "
            f"(its point is {', '.join(x_net.reasons)}), the bias field's {e_bias:.2g}"
        )
    f = range_finding(
        f"{sampler}, {_source(net)} on {net.key.target}, {metric.upper()} at T={t} over the bias "
        "field of the nearest eps_score"
        + ("" if match is None else f" ({match.key.perturbation})"),
        f"network / matched-bias {metric.upper()}",
        ratio,
        lo,
        hi,
        1 / 3,
        3.0,
        evaluator=net.key.evaluator,
        excluded=excluded,
        detail=detail,
    )
    if f.status is Status.NOT_MEASURED:
        why = "; ".join(f"{x.at}: {', '.join(x.reasons)}" for x in excluded)
        said = f"{sampler}, {_source(net)}: not measured ({why or 'no matched bias'})"
    else:
        said = (
            f"{sampler}, {_source(net)} on {net.key.target}: {metric.upper()} "
            f"{'at most ' if detail.startswith('upper') else ''}{ratio:.2g}x that of a bias "
            f"field with the same eps_score ({f.status.value} [1/3, 3])"
        )
    return f, said


def _pair_at_end(net, curves, kind: str):
    """At the network curve's largest T: (T, the matched curve of perturbation ``kind`` or None,
    (value, excluded) of the network's point, (value, excluded) of the match's)."""
    from convergence.claims.findings import valid_point

    t = net.steps[-1]
    match = _matched(curves, net, t, kind)
    other = (math.nan, None) if match is None else valid_point(match, t)
    return t, match, valid_point(net, t), other


def _sine_finding(sampler: str, net, curves):
    """Context: the network's error at its largest T over that of the sine field whose
    (eps_score, eps_jacobi) is nearest the network's (both measured on the sampler's grid)."""
    from convergence.claims.findings import Finding, Status

    t, match, (e_net, x_net), (e_sin, x_sin) = _pair_at_end(net, curves, "sin")
    ratio, lo, hi, detail = math.nan, math.nan, math.nan, ""
    if math.isfinite(e_net) and math.isfinite(e_sin):
        ratio, lo, hi = _ratio(net, match, t)
        j, k = net.steps.index(t), match.steps.index(t)
        detail = (
            f"eps_score {net.eps_score[j]:.2g} / {match.eps_score[k]:.2g}, eps_jacobi "
            f"{net.eps_jacobi[j]:.2g} / {match.eps_jacobi[k]:.2g} (network / sine)"
        )
    return Finding(
        f"{sampler}, {_source(net)} on {net.key.target}, TV at T={t} over the sine field of the "
        "nearest (eps_score, eps_jacobi)"
        + ("" if match is None else f" ({match.key.perturbation})"),
        "network / matched-sine TV",
        ratio,
        lo,
        hi,
        Status.MEASURED if math.isfinite(ratio) else Status.NOT_MEASURED,
        evaluator=net.key.evaluator,
        excluded=tuple(x for x in (x_net, x_sin) if x is not None),
        detail=detail,
    )


def _plateau_finding(sampler: str, c):
    """Context: a perturbed curve's error at its largest T over its eps_score there (its CI from
    the point's), with the ratio to eps_jacobi in the detail; None without a valid point."""
    from convergence.claims.findings import Finding, valid_point

    t = c.steps[-1]
    e, _ = valid_point(c, t)
    j = c.steps.index(t)
    es, ej = c.eps_score[j], c.eps_jacobi[j]
    if not (math.isfinite(e) and es):
        return None
    half = _half_width(c, j) / es
    detail = f"plateau / eps_jacobi {e / ej:.3g}" if ej else "eps_jacobi = 0"
    return Finding(
        f"{sampler}, {_source(c)} on {c.key.target}, TV at T={t}",
        "plateau / eps_score",
        e / es,
        e / es - half,
        e / es + half,
        evaluator=c.key.evaluator,
        detail=f"eps_score {es:.3g}; {detail}; {_plateau_detail(c, t)}",
    )


def _plateau_detail(c, t: int) -> str:
    """How flat the curve is at its end: the change of its error over the last doubling of T."""
    j = c.steps.index(t)
    if j == 0 or not c.valid(j - 1):
        return ""
    return f"{c.errors[j] / c.errors[j - 1] - 1:+.0%} from T={c.steps[j - 1]}"


def _half_width(c, j: int) -> float:
    """95% half-width of curve c's point j: 1.96 standard errors for a sample metric, else the
    stored error bar (a refinement change or a 95% CI half-width, ``ErrorEstimate``)."""
    if c.key.evaluator == "samples" or not c.uncertainties:
        return Z95 * c.std_errors[j]
    return c.uncertainties[j]


def _ratio(a, b, t: int) -> tuple[float, float, float]:
    """a / b at T = t with a 95% CI from the points' relative half-widths (log scale)."""
    i, k = a.steps.index(t), b.steps.index(t)
    ratio = a.errors[i] / b.errors[k]
    rel = math.hypot(_half_width(a, i) / a.errors[i], _half_width(b, k) / b.errors[k])
    return ratio, ratio * math.exp(-rel), ratio * math.exp(rel)


def _by_target(curves):
    """(target, its curves) in first-seen order."""
    groups: dict[str, list] = {}
    for c in curves:
        groups.setdefault(c.key.target, []).append(c)
    return list(groups.items())


def _draw(ctx, plateaus) -> None:
    """Error against T for every score source, one figure per (metric, sampler, target); the
    exact-TV plateau against eps_score, one figure per target."""
    from convergence.claims.context import curve_series, floor_lines, metric_label
    from convergence.figures import Series

    for metric in ("mmd", "kl", EXACT_METRIC):
        for s in ("ddim", "ddpm"):
            for target, cs in _by_target(ctx.curves(sampler=s, metric=metric)):
                ctx.plot(
                    f"{metric}_vs_T_{s}" + ("" if target == TARGET else f"_{_target_tag(target)}"),
                    # one sampler per figure: colour and marker tell the score sources apart
                    [
                        _source_series(curve_series(c, cs, extra=f", {_source(c)}"), s, c)
                        for c in cs
                    ],
                    xlabel="steps $T$",
                    ylabel=f"{metric_label(metric)} ({s}, {_target_label(target)})",
                    hlines=floor_lines(cs),
                )
    names = {"learned": "network", "bias": "bias field", "sin": "sine field"}
    for s, target, cs in plateaus:
        series = []
        for kind, name in names.items():
            x, y, err = [], [], []
            for c in cs:
                j = len(c.steps) - 1
                if _kind(c) == kind and c.valid(j) and c.eps_score[j]:
                    x.append(c.eps_score[j]), y.append(c.errors[j]), err.append(_half_width(c, j))
            if x:
                order = np.argsort(x)
                xs, ys, es = (np.asarray(v)[order] for v in (x, y, err))
                series.append(Series(name, xs, ys, yerr=es, style=name))
        ctx.plot(
            f"plateau_vs_eps_score_{_target_tag(target)}_{s}",
            series,
            xlabel=r"$\varepsilon_{\rm score}$ over the sampler's grid",
            ylabel=f"TV at the largest $T$ ({s}, {_target_label(target)})",
            slopes=(1.0,),
        )


def _source_series(series, sampler: str, c):
    """A curve's series in a one-sampler figure: coloured by score source, the sampler's name
    left out of its label (the axis names it)."""
    return replace(series, label=series.label.removeprefix(f"{sampler}, "), style=_source(c))


def _target_label(target: str) -> str:
    """'gmm:d=1,k=3,seed=0' -> 'gmm:d=1' (axis labels)."""
    kind, _, params = target.partition(":")
    dims = [p for p in params.split(",") if p.startswith("d=")]
    return f"{kind}:{dims[0]}" if dims else kind


def _target_tag(target: str) -> str:
    """'gmm:d=1,k=3,seed=0' -> 'gmm_d1' (figure file names)."""
    return _target_label(target).replace(":d=", "_d").replace(":", "_")


def _resolvable_above(x) -> bool:
    """Whether a flagged point still bounds its value from above: only a point too small or too
    uncertain to estimate (not one off the grid or missing)."""
    from convergence.analysis import PointFlag

    allowed = {str(PointFlag.BELOW_FLOOR), str(PointFlag.UNCERTAIN)}
    return x is not None and math.isfinite(x.value) and set(x.reasons) <= allowed


def _ceiling(c, t: int) -> float:
    """An upper bound on curve c's error at T = t: max(value + 1.96 u, 10 x floor), u the larger
    of the seed standard error and the stored uncertainty."""
    from convergence.analysis import FLOOR_FACTOR

    j = c.steps.index(t)
    u = max(c.std_errors[j], c.uncertainties[j] if c.uncertainties else 0.0)
    return max(c.errors[j] + Z95 * u, FLOOR_FACTOR * c.floors[j])


def _kind(c) -> str | None:
    p = c.key.perturbation
    return None if p is None else p.split(":", 1)[0]


def _source(c) -> str:
    kind = _kind(c)
    if kind is None:
        return "exact score"
    if kind == "learned":
        return _network_name(c.key.perturbation)
    spec = c.key.perturbation.replace("bias:eps=", "bias $\\varepsilon$=")
    return spec.replace("sin:eps=", "sine $\\varepsilon$=").replace(",omega=", r", $\omega$=")


def _network_name(spec: str) -> str:
    """'network, N steps' from the sidecar of the checkpoint a ``learned:`` spec names (its
    file name when the sidecar cannot be read)."""
    import json

    from convergence.learned.checkpoint import sidecar_path
    from convergence.scores import perturbation_fields

    path = Path(perturbation_fields(spec)[1]["path"])
    try:
        steps = json.loads(sidecar_path(path).read_text())["step"]
        return f"network, {steps} steps"
    except (OSError, ValueError, KeyError):
        return f"network {path.name}"


def _matched(curves, net, t: int, kind: str):
    """The curve of perturbation ``kind`` nearest the network at T = t: for "bias" by eps_score
    (log ratio), for "sin" by (eps_score, eps_jacobi) (Euclidean distance of the logs)."""
    j = net.steps.index(t)
    want = [net.eps_score[j]] + ([net.eps_jacobi[j]] if kind == "sin" else [])
    if not all(v is not None and v > 0 for v in want):
        return None
    best, gap = None, math.inf
    for c in curves:
        if _kind(c) != kind or t not in c.steps:
            continue
        k = c.steps.index(t)
        have = [c.eps_score[k]] + ([c.eps_jacobi[k]] if kind == "sin" else [])
        if not all(v is not None and v > 0 for v in have):
            continue
        d = math.hypot(*(math.log(a / b) for a, b in zip(have, want, strict=True)))
        if d < gap:
            best, gap = c, d
    return best
