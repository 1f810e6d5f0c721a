"""How an error is measured: the most exact evaluator that applies.

``error(...)`` runs one sampler at one step count on a target and returns an ``ErrorEstimate``
against the exact marginal of the target at the sampler's ``t_end``. Evaluators, in the order in
which ``evaluator="auto"`` tries them:

* ``gaussian``: single-Gaussian targets and affine steps: exact output moments through the
  sampler's own steps, then closed forms (no Monte Carlo; round-off floor only);
* ``grid``: d = 1 or 2, chains of Gaussian kernels: the output density on a grid, all metrics by
  quadrature (2-D TV by cut cells, 2-D W2 by the semi-dual over polynomial potentials);
  uncertainty = change under one grid refinement (+ the W2 method's bound in 2-D);
* ``tensor``: product targets (``product:d=...``) in any d, coordinate-separable scores: sums and
  products of exact 1-D grid results (TV through the Hellinger sandwich);
* ``logdet``: deterministic chains in any d: exact output densities along n trajectories, KL /
  TV / Hellinger by density-aware Monte Carlo with a 95% CI;
* ``coupled``: chains in any d: W2 upper bound by synchronous coupling with a fine run on the same
  Brownian path, and multilevel weak errors of closed-form test functions (``weak``);
* ``samples``: n output samples against the reference: POT W2, debiased Sinkhorn, sliced W2,
  MMD, k-NN KL, each with its noise floor (the fallback, black-box use).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch

from analytic.gmm import GaussianMixture
from analytic.processes import Process
from analytic.product import ProductMixture
from convergence.evaluators import gaussian as exact
from convergence.noise import BrownianNoise, PerSampleNoise
from convergence.samplers import SamplerSpec, get_spec
from convergence.samplers.base import CountingScore, check_t_end, run_sampler, tweedie

EVALUATORS = ("auto", "gaussian", "grid", "tensor", "logdet", "coupled", "samples")
ORDER = EVALUATORS[1:]
NOISES = ("independent", "brownian")


def noise_source(kind: str, seed: int, offset: int = 0) -> PerSampleNoise | BrownianNoise:
    """Per-sample independent draws, or one Brownian path per sample shared across step counts."""
    if kind == "independent":
        return PerSampleNoise(seed, offset)
    if kind == "brownian":
        return BrownianNoise(seed, offset)
    raise ValueError(f"noise must be one of {NOISES}, got {kind!r}")


INITS = ("exact", "prior")


@dataclass(frozen=True)
class ErrorEstimate:
    """One measured error of a sampler's output law against a reference law.

    ``value`` is the estimate; ``uncertainty`` its error bar: the round-off floor (gaussian), the
    change under one grid refinement (grid, tensor), the half-width of a 95% confidence interval
    (logdet, coupled, Monte Carlo parts) or the estimator's noise floor (samples). ``floor`` is the
    level below which the estimator cannot resolve an error (0 for exact evaluators, up to
    round-off); ``reference`` names the law compared with.
    """

    value: float
    uncertainty: float
    evaluator: str
    metric: str
    steps: int
    nfe: int
    t_end: float
    exact: bool
    floor: float = 0.0
    n_samples: int = 0
    lower_bound: float | None = None
    note: str = ""
    reference: str = ""
    mass_outside: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def initial_law(target, process: Process, init: str):
    """Law of the initial state: the exact marginal at t = 1 ("exact", no initialisation error)
    or the process prior N(0, prior_std^2 I) ("prior")."""
    if init == "exact":
        return target.noised(process, 1.0)
    if init == "prior":
        d = target.dim
        var = process.prior_std() ** 2
        return GaussianMixture([1.0], torch.zeros(1, d, dtype=torch.float64), [var])
    raise ValueError(f"init must be one of {INITS}, got {init!r}")


EXACT_METRICS = exact.METRICS  # kl, w2, hellinger, tv
METRICS = (*EXACT_METRICS, "path-kl", "weak", "sinkhorn", "sliced-w2", "mmd")
SAMPLE_METRIC_NAMES = ("w2", "sinkhorn", "sliced-w2", "mmd", "kl")


def _affine_perturbation(p) -> bool:
    """Whether a score perturbation keeps a Gaussian target's score affine in x."""
    if p is None or p.kind == "bias":
        return True
    if p.kind == "sigma-power":
        return p.omega is None
    return p.kind == "mixture" and p.wrong.n_components == 1


def why_not(kind: str, target, spec: SamplerSpec, metric: str, *, perturbation, denoised) -> str:
    """'' if evaluator ``kind`` applies to this problem, else the reason it does not."""
    chain = spec.step is not None and not spec.adaptive
    mixture = isinstance(target, GaussianMixture)
    if kind == "gaussian":
        if not (mixture and target.n_components == 1):
            return "the target is not a single Gaussian"
        if not spec.affine:
            return f"sampler {spec.name!r} is not affine in the state"
        if not _affine_perturbation(perturbation):
            return "the perturbed score is not affine"
        if metric == "path-kl":  # evaluators.path
            return "the path KL has no denoised variant" if denoised else ""
        return "" if metric in EXACT_METRICS else f"it has no metric {metric!r}"
    if kind in ("grid", "tensor", "logdet", "coupled"):
        if not chain:
            return f"sampler {spec.name!r} is not a fixed chain of Gaussian kernels"
        if denoised:
            return "the Tweedie push-forward reference has no closed-form density"
    if kind == "grid":
        if not mixture or target.dim > 2:
            return "it needs a mixture target in d = 1 or 2"
        return "" if metric in EXACT_METRICS else f"it has no metric {metric!r}"
    if kind == "tensor":
        if not isinstance(target, ProductMixture):
            return "the target is not a product target"
        if perturbation is not None and not perturbation.separable:
            return "the perturbation is not coordinate-separable"
        return "" if metric in EXACT_METRICS else f"it has no metric {metric!r}"
    if kind == "logdet":
        if not mixture:
            return "it needs a GaussianMixture target"
        if spec.stochastic:
            return f"sampler {spec.name!r} is stochastic"
        return "" if metric in ("kl", "tv", "hellinger") else f"it has no metric {metric!r}"
    if kind == "coupled":
        if not mixture:
            return "it needs a GaussianMixture target"
        return "" if metric in ("w2", "weak") else f"it has no metric {metric!r}"
    if kind == "samples":
        return "" if metric in SAMPLE_METRIC_NAMES else f"it has no metric {metric!r}"
    raise ValueError(f"evaluator must be one of {EVALUATORS}, got {kind!r}")


def resolve_evaluator(
    evaluator: str,
    target,
    spec: SamplerSpec,
    metric: str,
    *,
    perturbation=None,
    denoised: bool = False,
) -> str:
    """The evaluator to use: ``evaluator`` itself if it applies, or for "auto" the first of
    gaussian, grid, tensor, logdet, coupled, samples that applies; one-line errors otherwise."""
    if evaluator not in EVALUATORS:
        raise ValueError(f"evaluator must be one of {', '.join(EVALUATORS)}, got {evaluator!r}")
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; allowed: {', '.join(METRICS)}")
    problem = dict(perturbation=perturbation, denoised=denoised)
    if evaluator != "auto":
        reason = why_not(evaluator, target, spec, metric, **problem)
        if reason:
            raise ValueError(f"evaluator {evaluator!r} does not apply here: {reason}")
        return evaluator
    reasons = []
    for kind in ORDER:
        reason = why_not(kind, target, spec, metric, **problem)
        if not reason:
            return kind
        reasons.append(f"{kind}: {reason}")
    raise ValueError(f"no evaluator measures {metric!r} here ({'; '.join(reasons)})")


def _reference_text(t_end: float, denoised: bool) -> str:
    law = f"q_t at t_end = {t_end:.6g}"
    return f"Tweedie push-forward of {law}" if denoised else law


def error(
    sampler_name: str | SamplerSpec,
    target,
    process: Process,
    steps: int,
    *,
    metric: str,
    evaluator: str = "auto",
    n: int = 2000,
    seed: int = 0,
    t_end: float | None = None,
    init: str = "exact",
    final_noise: bool = False,
    denoise: bool = False,
    noise: str = "independent",
    perturbation=None,
    evaluator_options: dict | None = None,
    **options,
) -> ErrorEstimate:
    """Error of ``sampler_name`` after ``steps`` steps with the exact (or perturbed) score of
    ``target``, measured by the most exact evaluator that applies (module docstring).

    The reference is the exact marginal q at the sampler's t_end or, with ``denoise``, the law of
    the exact Tweedie denoiser applied to X ~ q (the map the sampler's last step applies).
    ``perturbation`` is a ``convergence.scores`` perturbation or its spec string (e.g.
    "sin:eps=0.01,omega=4"); ``evaluator_options`` go to the evaluator (e.g. ``ref_factor`` for
    coupled, ``n_directions`` for sliced W2).
    """
    from convergence.scores import parse_perturbation, perturbed_score

    spec = get_spec(sampler_name)
    if isinstance(perturbation, str):
        perturbation = parse_perturbation(perturbation, target)
    denoised = spec.output_is_denoised(spec.resolve_options(options), denoise)
    kind = resolve_evaluator(
        evaluator, target, spec, metric, perturbation=perturbation, denoised=denoised
    )
    t_end = check_t_end(process, t_end)
    start = initial_law(target, process, init)
    reference = target.noised(process, t_end)
    where = _reference_text(t_end, denoised)
    extra = dict(evaluator_options or {})
    score = CountingScore(perturbed_score(target, process, perturbation))
    common = dict(t_end=t_end, final_noise=final_noise, denoise=denoise, **options)
    if kind == "gaussian" and metric == "path-kl":
        from convergence.evaluators.path import path_error

        est = path_error(spec, target, process, steps, score, start, common)
    elif kind == "gaussian":
        est = _gaussian(spec, target, process, steps, metric, score, start, reference, common)
    elif kind in ("grid", "tensor"):
        est = _on_grid(kind, spec, target, process, steps, metric, init, perturbation, common)
    elif kind == "logdet":
        from convergence.evaluators.logdet import logdet_error

        est = logdet_error(
            spec,
            target,
            process,
            steps,
            metric=metric,
            start=start,
            reference=reference,
            n=n,
            seed=seed,
            perturbation=perturbation,
            **common,
            **extra,
        )
    elif kind == "coupled":
        from convergence.evaluators.coupled import coupled_error

        est = coupled_error(
            spec,
            target,
            process,
            steps,
            metric=metric,
            score=score,
            start=start,
            reference=reference,
            n=n,
            seed=seed,
            **common,
            **extra,
        )
    else:
        est = _samples(
            spec,
            target,
            process,
            steps,
            metric,
            score,
            start,
            reference,
            n,
            seed,
            noise,
            denoised,
            common,
            extra,
            perturbation,
        )
    return replace(est, reference=est.reference or where)


def _gaussian(spec, target, process, steps, metric, score, start, reference, common):
    ref = exact.law_of(reference)
    t_end = common["t_end"]
    if spec.output_is_denoised(spec.resolve_options(_sampler_options(common)), common["denoise"]):
        denoiser = target.denoiser(process)
        ref = exact.push_forward(lambda x: denoiser(x, t_end), ref)
    out = exact.propagate(spec, score, process, exact.law_of(start), steps, **common)
    dist = exact.distance(metric, ref, out)
    floor = exact.roundoff_floor(metric, dist.value, ref, steps)
    bounded = metric == "tv" and not dist.exact
    return ErrorEstimate(
        dist.value,
        floor,
        "gaussian",
        metric,
        steps,
        score.calls,
        t_end,
        dist.exact,
        floor=floor,
        lower_bound=dist.lower_bound if bounded else None,
        note=exact.TV_BOUND_NOTE if bounded else "",
    )


def _sampler_options(common: dict) -> dict:
    return {k: v for k, v in common.items() if k not in ("t_end", "final_noise", "denoise")}


def _on_grid(kind, spec, target, process, steps, metric, init, perturbation, common):
    """Grid or tensorised evaluation at two resolutions: the finer value, the change as its
    uncertainty (and as the floor below which a value is not resolved)."""
    from convergence.evaluators import grid
    from convergence.evaluators.tensor import TV_SANDWICH_NOTE, tensor_metrics

    kwargs = dict(common)
    kwargs.pop("denoise")
    # in 1-D, KL, Hellinger and TV come from one propagation: compute them together (memoised,
    # so the tasks of the other metrics reuse it); W2 (quantiles at every node) only when asked
    shared = ("kl", "hellinger", "tv", *(("w2",) if metric == "w2" else ()))
    if kind == "grid":
        start = initial_law(target, process, init)

        metrics = shared if target.dim == 1 else (metric,)  # 2-D TV and W2 are costly

        def run(res):
            out = grid.memo_grid_metrics(
                spec,
                target,
                process,
                steps,
                start=start,
                reference=target.noised(process, kwargs["t_end"]),
                perturbation=perturbation,
                resolution=res,
                metrics=metrics,
                **kwargs,
            )
            return out, True
    else:

        def run(res):
            return tensor_metrics(
                spec,
                target,
                process,
                steps,
                initial=lambda f: initial_law(f, process, init),
                perturbation=perturbation,
                resolution=res,
                metrics=shared,
                **kwargs,
            )

    (coarse, _), (fine, tv_exact) = run(grid.RESOLUTION), run(grid.REFINED)
    value = grid.metric_value(fine, metric)
    unc = abs(value - grid.metric_value(coarse, metric)) + grid.method_uncertainty(fine, metric)
    bounded = metric == "tv" and not tv_exact
    note = f"{fine.nodes} grid nodes; uncertainty = change under refinement"
    if kind == "grid" and target.dim == 2 and metric == "w2":
        note += " + the semi-dual's last increase in degree (analytic.transport)"
    if fine.reference_missing > grid.UNRESOLVED:
        note += f"; {fine.reference_missing:.2g} of the reference's mass lies outside the grid"
    return ErrorEstimate(
        value,
        unc,
        kind,
        metric,
        steps,
        fine.nfe,
        kwargs["t_end"],
        not bounded,
        floor=unc,
        lower_bound=fine.h2 if bounded else None,
        note=f"{note}; {TV_SANDWICH_NOTE}" if bounded else note,
        mass_outside=float(fine.reference_missing),
    )


def _samples(
    spec,
    target,
    process,
    steps,
    metric,
    score,
    start,
    reference,
    n,
    seed,
    noise,
    denoised,
    common,
    extra,
    perturbation=None,
):
    from convergence.metrics import sample_distance

    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise ValueError(f"the samples evaluator needs n >= 2 samples, got {n!r}")
    x0 = start.sample(n, seed=2 * seed)
    device = getattr(perturbation, "on", x0.device)  # a network's device (learned scores)
    result = run_sampler(
        spec, score, process, x0.to(device), steps, noise=noise_source(noise, seed), **common
    )
    result = replace(result, x=result.x.cpu())  # one copy after the loop, none inside it
    t_end = common["t_end"]

    def sample_reference(m: int, s: int) -> torch.Tensor:
        x = reference.sample(m, s)
        return tweedie(target.score_fn(process), process, x, t_end) if denoised else x

    if denoised and metric in ("kl", "mmd"):
        raise ValueError(
            f"metric {metric!r} needs the reference density, which the Tweedie push-forward "
            "does not have in closed form"
        )
    est = sample_distance(
        metric,
        result.x,
        sample_reference=sample_reference,
        reference_law=reference,
        seed=2 * seed + 1,
        **extra,
    )
    return ErrorEstimate(
        est.value,
        max(est.floor, getattr(est, "ci", 0.0)),
        "samples",
        metric,
        steps,
        result.nfe,
        t_end,
        False,
        floor=est.floor,
        n_samples=n,
        note=getattr(est, "note", "") or "uncertainty = max(noise floor, 95% CI half-width)",
    )
