"""Grid and tensorised evaluators: agreement with the exact Gaussian evaluator and with each other,
self-consistency on mixtures, and refusals."""

import math

import numpy as np
import pytest
import torch
from scipy import optimize

from analytic.gmm import GaussianMixture
from analytic.processes import make_process
from analytic.quadrature import KernelSum, mixture_cdf, mixture_quantile, uniform_grid
from convergence.evaluators import error, resolve_evaluator
from convergence.samplers import get_spec
from convergence.targets import parse_target

VP = make_process("vp")
GMM1 = parse_target("gmm:d=1,k=3,seed=0")


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


@pytest.mark.parametrize(
    "sampler", ["ddim", "ddpm", "em", "ode-heun", "li-accel-ddim", "li-accel-ddpm"]
)
def test_grid_equals_gaussian_evaluator_in_1d(sampler):
    target = parse_target("gaussian:d=1")
    for metric in ("kl", "tv", "w2", "hellinger"):
        g = error(sampler, target, VP, 12, metric=metric, evaluator="grid")
        e = error(sampler, target, VP, 12, metric=metric, evaluator="gaussian")
        assert e.exact and rel(g.value, e.value) < 1e-6, (metric, g.value, e.value)
        assert g.uncertainty < 1e-6 * g.value


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_grid_equals_gaussian_evaluator_in_2d(sampler):
    """All four metrics in 2-D, TV by cut cells and W2 by the semi-dual, against the closed forms
    (TV through analytic.gaussian.tv_2d, tested against mpmath in tests/analytic)."""
    target = parse_target("gaussian:d=2")
    for metric in ("kl", "hellinger", "tv", "w2"):
        g = error(sampler, target, VP, 6, metric=metric, evaluator="grid")
        e = error(sampler, target, VP, 6, metric=metric, evaluator="gaussian")
        assert e.exact and g.exact
        assert rel(g.value, e.value) < 1e-6, (metric, g.value, e.value)
        assert abs(g.value - e.value) <= g.uncertainty + 1e-12 * e.value, (metric, g, e)


def test_grid_flags_reference_mass_outside_its_box():
    """em with 6 steps leaves its output far narrower than the reference: the grid cannot see
    the reference's tails, and says so instead of reporting a wrong KL with a small error bar."""
    target = parse_target("gaussian:d=2")
    g = error("em", target, VP, 6, metric="kl", evaluator="grid")
    e = error("em", target, VP, 6, metric="kl", evaluator="gaussian")
    assert g.uncertainty >= g.value and "outside the grid" in g.note
    assert e.value > 100 * g.value  # the value alone would have been badly wrong
    h = error("em", target, VP, 6, metric="hellinger", evaluator="grid")
    he = error("em", target, VP, 6, metric="hellinger", evaluator="gaussian")
    assert abs(h.value - he.value) <= h.uncertainty


def test_grid_values_are_resolved_on_a_mixture():
    for sampler in ("ddim", "ddpm", "ode-heun"):
        for metric in ("kl", "tv", "w2"):
            g = error(sampler, GMM1, VP, 16, metric=metric, evaluator="auto")
            assert g.evaluator == "grid" and g.value > 0
            assert g.uncertainty < 1e-6 * g.value, (sampler, metric, g)


def test_grid_first_order_rate_on_a_mixture_and_a_broken_control():
    """Local TV slopes of ddim approach -1; DDIM with a wrong coefficient stalls (negative
    control through the same evaluator)."""
    from dataclasses import replace

    from convergence.samplers.base import Transition
    from convergence.samplers.discrete import ddim_step

    steps = [20, 40, 80]
    tv = [error("ddim", GMM1, VP, T, metric="tv").value for T in steps]
    slopes = np.diff(np.log(tv)) / np.diff(np.log(steps))
    assert np.all(np.abs(slopes + 1.0) < 0.1), slopes

    def broken(score, process, x, t, t_next, **kw):
        tr = ddim_step(score, process, x, t, t_next, **kw)
        return Transition(tr.mean * (1.0 + 0.5 * (t - t_next)), tr.std)

    bad = replace(get_spec("ddim"), name="ddim-broken", step=broken)
    tv_bad = [error(bad, GMM1, VP, T, metric="tv", evaluator="grid").value for T in steps]
    slopes_bad = np.diff(np.log(tv_bad)) / np.diff(np.log(steps))
    assert not np.all(np.abs(slopes_bad + 1.0) < 0.1), slopes_bad


def test_tensor_equals_grid_at_d1_and_sums_identical_factors():
    one = parse_target("product:d=1,k=3,seed=0")
    four = parse_target("product:d=4,k=3,seed=0")
    for metric in ("kl", "tv", "w2", "hellinger"):
        t1 = error("ddpm", one, VP, 10, metric=metric, evaluator="tensor")
        g1 = error("ddpm", GMM1, VP, 10, metric=metric, evaluator="grid")
        assert rel(t1.value, g1.value) < 1e-12, metric
    kl1 = error("ddpm", GMM1, VP, 10, metric="kl").value
    kl4 = error("ddpm", four, VP, 10, metric="kl")
    assert kl4.evaluator == "tensor" and rel(kl4.value, 4 * kl1) < 1e-12
    w1 = error("ddpm", GMM1, VP, 10, metric="w2").value
    assert rel(error("ddpm", four, VP, 10, metric="w2").value, 2 * w1) < 1e-12
    h1 = error("ddpm", GMM1, VP, 10, metric="hellinger").value
    h4 = error("ddpm", four, VP, 10, metric="hellinger").value
    assert rel(1 - h4**2, (1 - h1**2) ** 4) < 1e-12
    tv4 = error("ddpm", four, VP, 10, metric="tv")
    assert tv4.lower_bound == pytest.approx(h4**2) and tv4.value >= tv4.lower_bound
    assert not tv4.exact and "Hellinger" in tv4.note


def test_tensor_distinct_factors_add_up():
    target = parse_target("product:d=3,k=2,seed=5,distinct=1")
    total = error("ddim", target, VP, 8, metric="kl").value
    parts = [
        error("ddim", parse_target(f"gmm:d=1,k=2,seed={5 + i}"), VP, 8, metric="kl").value
        for i in range(3)
    ]
    assert rel(total, sum(parts)) < 1e-10


def test_perturbed_grid_matches_perturbed_gaussian():
    """A bias keeps a Gaussian target's score affine: grid and Gaussian evaluators agree."""
    target = parse_target("gaussian:d=1")
    for metric in ("kl", "w2"):
        g = error(
            "ddpm", target, VP, 10, metric=metric, evaluator="grid", perturbation="bias:eps=0.05"
        )
        e = error(
            "ddpm",
            target,
            VP,
            10,
            metric=metric,
            evaluator="gaussian",
            perturbation="bias:eps=0.05",
        )
        clean = error("ddpm", target, VP, 10, metric=metric, evaluator="gaussian")
        assert rel(g.value, e.value) < 1e-6 and e.value > 2 * clean.value


def test_auto_picks_the_most_exact_evaluator():
    ddim, ddpm = get_spec("ddim"), get_spec("ddpm")
    gauss, gmm8 = parse_target("gaussian:d=3"), parse_target("gmm:d=8,k=4,seed=0")
    prod = parse_target("product:d=16,k=3,seed=0")
    assert resolve_evaluator("auto", gauss, ddim, "kl") == "gaussian"
    assert resolve_evaluator("auto", GMM1, ddpm, "tv") == "grid"
    assert resolve_evaluator("auto", prod, ddpm, "kl") == "tensor"
    assert resolve_evaluator("auto", gmm8, ddim, "kl") == "logdet"
    assert resolve_evaluator("auto", gmm8, ddpm, "w2") == "coupled"
    assert resolve_evaluator("auto", gmm8, ddpm, "sliced-w2") == "samples"
    assert resolve_evaluator("auto", GMM1, ddim, "kl", denoised=True) == "samples"
    with pytest.raises(ValueError, match="no evaluator measures 'tv'"):
        resolve_evaluator("auto", gmm8, ddpm, "tv")
    with pytest.raises(ValueError, match="evaluator 'grid' does not apply here: it needs"):
        resolve_evaluator("grid", gmm8, ddpm, "kl")
    with pytest.raises(ValueError, match="not a fixed chain"):
        resolve_evaluator("grid", GMM1, get_spec("ggf"), "kl")
    with pytest.raises(ValueError, match="unknown metric"):
        resolve_evaluator("auto", GMM1, ddpm, "l1")


# ---- quadrature helpers -----------------------------------------------------------------------


def test_mixture_quantile_inverts_the_cdf_in_both_tails():
    levels = torch.tensor([1e-14, 1e-6, 0.3, 0.5], dtype=torch.float64)
    for upper in (False, True):
        flags = torch.full_like(levels, upper, dtype=torch.bool)
        y = mixture_quantile(GMM1, levels, flags)
        back = mixture_cdf(GMM1, y, upper=upper)
        assert torch.allclose(back, levels, rtol=1e-12, atol=0)
        for lv, yi in zip(levels.tolist(), y.tolist(), strict=True):

            def f(v, lv=lv, upper=upper):
                y = torch.tensor([v], dtype=torch.float64)
                return float(mixture_cdf(GMM1, y, upper=upper)) - lv

            root = optimize.brentq(f, -40, 40, xtol=1e-14)
            assert abs(root - yi) < 1e-9


def test_kernel_sum_on_a_grid_matches_direct_sums():
    gen = torch.Generator().manual_seed(0)
    for d in (1, 2):
        centres = torch.randn(50, d, generator=gen, dtype=torch.float64)
        w = torch.rand(50, generator=gen, dtype=torch.float64)
        ks = KernelSum(w / w.sum(), centres, 0.3)
        lo, hi = ks.box()
        grid = uniform_grid(lo, hi, 0.15, 10**6)
        banded = ks.density_on(grid).reshape(-1)
        direct = torch.exp(ks.log_density(grid.points()))
        # kernels are cut at TAIL = 9 sd: differences below 1e-17 of the peak are allowed
        assert torch.allclose(banded, direct, rtol=1e-12, atol=1e-17 * float(direct.max()))
        assert float(banded.sum()) * grid.cell == pytest.approx(1.0, abs=1e-12)
    y = torch.linspace(-3, 3, 7, dtype=torch.float64)
    ks1 = KernelSum(
        torch.tensor([0.25, 0.75], dtype=torch.float64),
        torch.tensor([[-1.0], [0.5]], dtype=torch.float64),
        0.4,
    )
    gm = GaussianMixture([0.25, 0.75], [[-1.0], [0.5]], [0.16, 0.16])
    assert torch.allclose(ks1.cdf(y), mixture_cdf(gm, y), rtol=1e-13)
    assert torch.allclose(ks1.cdf(y, upper=True) + ks1.cdf(y), torch.ones(7, dtype=torch.float64))


def test_grid_refusals():
    with pytest.raises(ValueError, match="Tweedie push-forward"):
        error("ddim", GMM1, VP, 10, metric="kl", evaluator="grid", denoise=True)
    with pytest.raises(ValueError, match="more than the limit"):
        uniform_grid(torch.zeros(2), torch.ones(2) * 100, 1e-3, 1000)
    assert math.isfinite(error("ddim", GMM1, VP, 3, metric="kl", evaluator="grid").value)


def test_diagonal_gaussian_propagation_equals_the_full_one():
    """Diagonal laws (d >= 64) are propagated coordinate-wise; the full-covariance recursion on
    the same problem gives the same distances."""
    from convergence.evaluators import gaussian as exact
    from convergence.samplers.base import CountingScore

    target = parse_target("gmm:d=70,k=1,seed=3,cov=diag")

    def full(g):
        return exact.GaussianLaw(g.means[0], g.covariance_matrices()[0])

    for sampler in ("ddpm", "li-accel-ddim"):
        out = exact.propagate(
            get_spec(sampler),
            CountingScore(target.score_fn(VP)),
            VP,
            full(target.noised(VP, 1.0)),
            30,
            t_end=VP.t_end_default,
        )
        ref = full(target.noised(VP, VP.t_end_default))
        for metric in ("kl", "w2", "hellinger"):
            fast = error(sampler, target, VP, 30, metric=metric)
            assert rel(fast.value, exact.distance(metric, ref, out).value) < 1e-12


def test_product_target_matches_its_factors():
    prod = parse_target("product:d=3,k=2,seed=1,distinct=1")
    x = prod.sample(50, seed=2)
    factors = [parse_target(f"gmm:d=1,k=2,seed={1 + i}") for i in range(3)]
    logp = sum(f.log_prob(x[:, i : i + 1]) for i, f in enumerate(factors))
    assert torch.allclose(prod.log_prob(x), logp, rtol=1e-13)
    q = prod.noised(VP, 0.4)
    for i, f in enumerate(factors):
        fi = f.noised(VP, 0.4)
        assert torch.allclose(q.score(x)[:, i], fi.score(x[:, i : i + 1])[:, 0], rtol=1e-12)
        assert torch.allclose(q.hessian(x)[:, i, i], fi.hessian(x[:, i : i + 1])[:, 0, 0])
    t = torch.full((50,), 0.4, dtype=torch.float64)
    assert torch.allclose(prod.score_fn(VP)(x, t), q.score(x), rtol=1e-13)
    big = parse_target("product:d=2,k=3,seed=0").sample(200_000, seed=0)
    mean = float(GMM1.means[:, 0] @ GMM1.weights)
    assert abs(float(big[:, 1].mean()) - mean) < 0.02
    with pytest.raises(ValueError, match="distinct must be 0 or 1"):
        parse_target("product:d=2,k=3,seed=0,distinct=2")
    with pytest.raises(ValueError, match="missing"):
        parse_target("product:d=2,k=3")


@pytest.mark.parametrize(
    "target_spec, metrics",
    # 2-D TV of a deterministic chain pushes every cut-cell point through all steps: too costly
    # here (70 s); it is checked against the exact Gaussian TV instead
    [("gmm:d=1,k=3,seed=0", ("kl", "tv")), ("gmm:d=2,k=3,seed=0", ("kl", "hellinger"))],
)
def test_logdet_agrees_with_grid_within_its_ci(target_spec, metrics):
    target = parse_target(target_spec)
    for metric in metrics:
        g = error("ddim", target, VP, 8, metric=metric, evaluator="grid")
        m = error("ddim", target, VP, 8, metric=metric, evaluator="logdet", n=3000, seed=1)
        assert abs(m.value - g.value) < m.uncertainty + g.uncertainty, (metric, m, g)
        assert m.uncertainty < 0.6 * g.value  # KL ratios are heavy-tailed at T = 8


def _product_as_mixture(spec: str) -> tuple:
    """A 2-D product target and the same law as an explicit mixture of k^2 components."""
    pm = parse_target(spec)
    a, b = pm.factor(0), pm.factor(1)
    weights = (a.weights[:, None] * b.weights[None, :]).reshape(-1)
    means = torch.stack(torch.meshgrid(a.means[:, 0], b.means[:, 0], indexing="ij"), -1).reshape(
        -1, 2
    )
    variances = torch.stack(
        torch.meshgrid(
            a.covariance_matrices()[:, 0, 0], b.covariance_matrices()[:, 0, 0], indexing="ij"
        ),
        -1,
    ).reshape(-1, 2)
    return pm, GaussianMixture(weights, means, variances)


@pytest.mark.slow
def test_grid_w2_in_2d_on_a_mixture_against_the_tensorised_value():
    """A product law seen as a generic 2-D mixture: the semi-dual W2 of the grid against the exact
    sum of 1-D quantile W2^2 (tensor evaluator), within the reported uncertainty (25 s; the
    semi-dual W2 of the grid is also checked in CI against closed forms, test above)."""
    product, mixture = _product_as_mixture("product:d=2,k=2,seed=1")
    exact = error("ddim", product, VP, 10, metric="w2", evaluator="tensor")
    g = error("ddim", mixture, VP, 10, metric="w2", evaluator="grid")
    assert g.exact and "semi-dual" in g.note
    assert abs(g.value - exact.value) <= g.uncertainty, (g, exact.value)
    assert g.uncertainty < 1e-4 * exact.value


@pytest.mark.slow
def test_grid_tv_2d_of_a_stochastic_sampler_on_a_mixture_is_resolved():
    """ddpm on a 2-D mixture: the cut-cell TV agrees between the two resolutions to 1e-7 and lies
    in the Hellinger sandwich H^2 <= TV <= H sqrt(2 - H^2) (135 s: the kernel sum of 2e4
    kernels evaluated at scattered points)."""
    target = parse_target("gmm:d=2,k=3,seed=0")
    tv = error("ddpm", target, VP, 8, metric="tv", evaluator="grid")
    h = error("ddpm", target, VP, 8, metric="hellinger", evaluator="grid").value
    assert tv.uncertainty < 1e-7 * tv.value
    assert h * h <= tv.value <= h * math.sqrt(2 - h * h)


def test_grid_tv_2d_refuses_a_run_beyond_its_budget(monkeypatch):
    from convergence.evaluators import grid

    monkeypatch.setattr(grid, "TV_2D_BUDGET", 1e4)  # the real budget needs T ~ 64 to exceed
    with pytest.raises(ValueError, match="logdet"):
        error("ddim", parse_target("gmm:d=2,k=3,seed=0"), VP, 4, metric="tv", evaluator="grid")


def test_memoised_grid_metrics_reuse_one_propagation_per_problem(monkeypatch):
    """Equal argument values reuse the remembered propagation, whatever the metrics (W2 after TV
    runs the sampler once); a different step count or perturbation is propagated afresh, with the
    values grid_metrics gives."""
    from convergence.evaluators import grid
    from convergence.scores import parse_perturbation
    from convergence.targets import parse_target

    calls = []
    real = grid._output
    monkeypatch.setattr(grid, "_output", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(grid, "_memo", grid.OrderedDict())
    target, vp, spec = parse_target("gmm:d=1,k=3,seed=0"), make_process("vp"), get_spec("ddpm")
    start, ref = target.noised(vp, 1.0), target.noised(vp, 1e-3)
    kw = dict(start=start, reference=ref, t_end=1e-3)
    a = grid.memo_grid_metrics(spec, target, vp, 6, metrics=("kl", "tv"), **kw)
    b = grid.memo_grid_metrics(spec, parse_target("gmm:d=1,k=3,seed=0"), vp, 6, **kw)
    assert len(calls) == 1 and b.tv == a.tv and b.kl == a.kl and a.w2sq is None and b.w2sq > 0
    fresh = grid.grid_metrics(spec, target, vp, 6, **kw)
    assert (b.kl, b.tv, b.w2sq) == (fresh.kl, fresh.tv, fresh.w2sq)
    c = grid.memo_grid_metrics(spec, target, vp, 7, **kw)
    assert len(calls) == 3 and c.kl == grid.grid_metrics(spec, target, vp, 7, **kw).kl
    pert = parse_perturbation("sin:eps=0.1,omega=2", target)
    d = grid.memo_grid_metrics(spec, target, vp, 6, perturbation=pert, **kw)
    assert len(calls) == 5 and d.kl != a.kl


def test_tv_crossings_from_the_stencil_agree_with_regula_falsi(monkeypatch):
    """1-D TV with its crossings from the exact stencil (one push) equals TV with every crossing
    solved by regula falsi (a stencil far too wide to be accepted); the stencil settles them all
    in the default case."""
    from convergence.evaluators import grid
    from convergence.targets import parse_target

    target, vp = parse_target("gmm:d=1,k=3,seed=0"), make_process("vp")
    kw = dict(start=target.noised(vp, 1.0), reference=target.noised(vp, 1e-3), t_end=1e-3)
    real = grid._stencil_crossings
    settled = []

    def spy(*args):
        c = real(*args)
        settled.append(bool(c.done.all()))
        return c

    monkeypatch.setattr(grid, "_stencil_crossings", spy)
    values = {}
    for stencil in (grid.STENCIL, 0.3):
        monkeypatch.setattr(grid, "STENCIL", stencil)
        settled.clear()
        for spec in ("ddim", "ddpm"):
            res = grid.grid_metrics(get_spec(spec), target, vp, 50, metrics=("tv",), **kw)
            values.setdefault(spec, []).append(res.tv)
        assert settled == [stencil < 0.1] * 2
    for spec, (stencil_tv, falsi_tv) in values.items():
        assert stencil_tv > 1e-3
        assert abs(stencil_tv - falsi_tv) <= 1e-13 * stencil_tv, spec
