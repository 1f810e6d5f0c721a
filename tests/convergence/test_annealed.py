"""Annealed Langevin samplers `als` and `cas` (SAMPLERS.md 4): the CAS consistency property and
the ALS lag, exactly, by Gaussian moment propagation through the samplers' own step functions;
NFE accounting; refused options."""

import math

import pytest
import torch

import convergence
from analytic.gmm import GaussianMixture
from analytic.processes import VE, VP
from convergence.evaluators import gaussian as exact
from convergence.samplers import REGISTRY, Transition
from convergence.samplers.annealed import ALS, CAS, als_step, cas_schedule, cas_step
from convergence.targets import gaussian_target, random_gmm

MU = torch.tensor([0.7, -1.2], dtype=torch.float64)
EYE = torch.eye(2, dtype=torch.float64)


def point_score(process):
    """Idealised single-point score of SAMPLERS.md 4.3: s(x, sigma) = -(x - mu) / sigma^2."""
    return lambda x, t: -(x - MU) / process.sigma(t) ** 2


def iso_target(s):
    """N(mu, s^2 I); parameters as float64 tensors (a Python list would pass through float32)."""
    var = torch.tensor([s * s], dtype=torch.float64)
    return GaussianMixture(torch.ones(1, dtype=torch.float64), MU[None], var)


def kernel(step, score, process, law, t, t_next, noisy=True, **options):
    """Law after one Gaussian kernel x' = mean(x) + std z of a step function."""
    found = {}

    def mean(x):
        tr = step(score, process, x, t, t_next, **options)
        found["std"] = tr.std
        return tr.mean

    out = exact.push_forward(mean, law)
    return exact.GaussianLaw(out.mean, out.cov + (found["std"] ** 2 if noisy else 0.0) * EYE)


def cas_levels_of(process, steps, t_end, n_sigma):
    sched = cas_schedule(process, steps, t_end, {"n_sigma": n_sigma})
    return sched, [process.sigma(t) for t, _ in sched]


def test_specs():
    for spec in (ALS, CAS):
        assert REGISTRY[spec.name] is spec
        assert (spec.family, spec.stochastic, spec.nfe_per_step) == ("annealed Langevin", True, 1)
        assert spec.expected_order is None and spec.claims == () and spec.affine
        assert spec.expected_slope("w2") is None


# ---- CAS keeps the idealised sample on the geometric ladder; ALS does not ------------------


def idealised_ladder_error(step, eta, n_sigma, steps=6, t_end=1e-5):
    """Largest relative deviation from N(mu, sigma_{i+1}^2 I) of the law after one kernel of
    ``step`` from x ~ N(mu, sigma_i^2 I), with the single-point score, over the CAS ladder."""
    ve = VE()
    sched, sig = cas_levels_of(ve, steps, t_end, n_sigma)
    assert len(sched) == (steps - 1) * n_sigma + 1
    gammas = [b / a for a, b in zip(sig[:-1], sig[1:], strict=True)]
    assert max(gammas) - min(gammas) < 1e-12  # geometric ladder
    assert sig[0] == pytest.approx(ve.sigma(1.0)) and sig[-1] == pytest.approx(ve.sigma(t_end))
    opts = dict(last=False, eta=eta, n_sigma=n_sigma, denoise_last=False)
    worst = 0.0
    for (t, t_next), s_i, s_next in zip(sched[:-1], sig[:-1], sig[1:], strict=True):
        law = exact.GaussianLaw(MU, s_i**2 * EYE)
        out = kernel(step, point_score(ve), ve, law, t, t_next, **opts)
        assert torch.allclose(out.mean, MU, rtol=0, atol=1e-12)
        worst = max(worst, float((out.cov / s_next**2 - EYE).abs().max()))
    return worst


@pytest.mark.parametrize(("eta", "n_sigma"), [(1.0, 1), (0.9, 1), (1.3, 2), (0.3, 5)])
def test_cas_idealised_variance_is_the_next_level(eta, n_sigma):
    """x ~ N(mu, sigma_i^2 I) and the single-point score: after CAS level i the law is exactly
    N(mu, sigma_{i+1}^2 I), at every level of the (refined) ladder (SAMPLERS.md 4.3)."""
    assert idealised_ladder_error(cas_step, eta, n_sigma) < 1e-12


def cas_beta_without_gamma(score, process, x, t, t_next, **options):
    """CAS with beta = sqrt(1 - (1 - eta)^2): the gamma of compute_beta dropped."""
    tr = cas_step(score, process, x, t, t_next, **options)
    eta, gamma = options["eta"], process.sigma(t_next) / process.sigma(t)
    return Transition(
        tr.mean, tr.std * math.sqrt(1 - (1 - eta) ** 2) / math.sqrt(1 - ((1 - eta) / gamma) ** 2)
    )


def als_as_ladder_step(score, process, x, t, t_next, **options):
    """One ALS step at level sigma_i (the ALS kernel placed on the CAS ladder)."""
    return als_step(score, process, x, t, t, **options)


@pytest.mark.parametrize("step", [cas_beta_without_gamma, als_as_ladder_step])
@pytest.mark.parametrize(("eta", "n_sigma"), [(0.9, 1), (0.3, 5)])
def test_idealised_ladder_negative_controls(step, eta, n_sigma):
    """The same check rejects a CAS with a wrong beta and the ALS kernel (which lags)."""
    assert idealised_ladder_error(step, eta, n_sigma) > 1e-2


def test_cas_idealised_whole_chain():
    """The sampler's own chain (evaluators.gaussian.propagate): with final noise the output law is
    N(mu, sigma_L^2 I); without it the last drift leaves (1 - eta)^2 sigma_L^2; with
    denoise_last it is the point mass at mu (the EDS of the idealised marginal)."""
    ve, t_end, eta = VE(), 1e-5, 0.8
    start = exact.GaussianLaw(MU, ve.sigma(1.0) ** 2 * EYE)
    sl2 = ve.sigma(t_end) ** 2

    def run(**kw):
        return exact.propagate(CAS, point_score(ve), ve, start, 8, t_end=t_end, eta=eta, **kw)

    assert torch.allclose(run(final_noise=True).cov, sl2 * EYE, rtol=1e-10, atol=0)
    assert torch.allclose(run().cov, (1 - eta) ** 2 * sl2 * EYE, rtol=1e-9, atol=0)
    out = run(denoise_last=True)
    assert torch.allclose(out.cov, 0 * EYE, atol=1e-20)
    assert torch.allclose(out.mean, MU, atol=1e-12)


@pytest.mark.parametrize("s", [0.0, 0.3, 1.5])
def test_cas_gaussian_target_variance_defect(s):
    """Gaussian target N(mu, s^2 I), exact score, x at its exact marginal N(mu, (s^2 +
    sigma_i^2) I): CAS misses the next marginal variance by exactly
    -eta^2 sigma_i^2 s^2 / (s^2 + sigma_i^2) [DERIVED]; zero only for the single point s = 0."""
    ve, eta, t_end = VE(), 0.9, 1e-5
    sched, sig = cas_levels_of(ve, 10, t_end, 1)
    score = point_score(ve) if s == 0 else iso_target(s).score_fn(ve)
    for (t, t_next), si, sn in zip(sched[:-1], sig[:-1], sig[1:], strict=True):
        law = exact.GaussianLaw(MU, (s * s + si * si) * EYE)
        opts = dict(last=False, eta=eta, n_sigma=1, denoise_last=False)
        out = kernel(cas_step, score, ve, law, t, t_next, **opts)
        defect = -(eta**2) * si**2 * s**2 / (s**2 + si**2)
        expected = (s * s + sn * sn + defect) * EYE
        assert torch.allclose(out.cov, expected, rtol=1e-12, atol=0)
        if s > 0:
            assert defect < -1e-6 * (s * s + sn * sn)


@pytest.mark.parametrize("eta", [0.2, 0.5, 1.0, 1.5])
def test_als_idealised_level_tends_to_lagging_fixed_point(eta):
    """One ALS level in the idealised setting maps v to (1 - eta)^2 v + 2 eta sigma^2, with fixed
    point 2 sigma^2 / (2 - eta) > sigma^2 (SAMPLERS.md 4.3). Checked on the step function and on
    the whole sampler chain (2 levels, many steps on the last one, final noise)."""
    ve, t_end = VE(), 1e-5
    sigma = ve.sigma(t_end)
    law = exact.GaussianLaw(MU, sigma**2 * EYE)
    opts = dict(last=False, eta=eta, n_sigma=1, denoise_last=False)
    v = sigma**2
    for _ in range(5):
        law = kernel(als_step, point_score(ve), ve, law, t_end, t_end, **opts)
        v = (1 - eta) ** 2 * v + 2 * eta * sigma**2
        assert torch.allclose(law.cov, v * EYE, rtol=1e-12, atol=0)
    start = exact.GaussianLaw(MU, ve.sigma(1.0) ** 2 * EYE)
    out = exact.propagate(
        ALS, point_score(ve), ve, start, 2, t_end=t_end, final_noise=True, eta=eta, n_sigma=120
    )
    fixed = 2 * sigma**2 / (2 - eta)
    assert torch.allclose(out.cov, fixed * EYE, rtol=1e-9, atol=0)
    assert fixed > 1.05 * sigma**2  # ALS overshoots the level it anneals to


def test_als_gaussian_target_fixed_point():
    """Gaussian target N(mu, s^2 I), exact score, one frozen level sigma: the ALS variance tends
    to the unadjusted-Langevin stationary value 2 V / (2 - eta c), V = s^2 + sigma^2,
    c = sigma^2 / V (THEORY.md 3.3 with h = eta sigma^2)."""
    ve, s, eta, t_end = VE(sigma_min=0.5, sigma_max=5.0), 0.7, 0.6, 1e-5
    target = iso_target(s)
    start = exact.law_of(target.noised(ve, 1.0))
    out = exact.propagate(
        ALS, target.score_fn(ve), ve, start, 2, t_end=t_end, final_noise=True, eta=eta, n_sigma=150
    )
    V = s * s + ve.sigma(t_end) ** 2
    c = ve.sigma(t_end) ** 2 / V
    assert torch.allclose(out.cov, 2 * V / (2 - eta * c) * EYE, rtol=1e-10, atol=1e-14)


# ---- sampling, NFE, moments ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "n_sigma", "expected_nfe"),
    [("als", 1, 7), ("als", 3, 21), ("cas", 1, 7), ("cas", 3, 19)],
)
def test_nfe_accounting(name, n_sigma, expected_nfe):
    """ALS: L n_sigma; CAS: L' = (L - 1) n_sigma + 1; +1 with denoise=True; +0 with
    denoise_last."""
    target, ve = random_gmm(2, 3, 0), VE()
    x = target.noised(ve, 1.0).sample(16, seed=1)
    score = target.score_fn(ve)
    res = convergence.sample(name, score, ve, x, 7, n_sigma=n_sigma)
    assert res.nfe == res.info["score_calls"] == expected_nfe
    assert res.t_end == ve.t_end_default and res.x.shape == x.shape
    assert torch.isfinite(res.x).all()
    den = convergence.sample(name, score, ve, x, 7, n_sigma=n_sigma, denoise=True)
    assert den.nfe == expected_nfe + 1 and den.info["denoised"]
    last = convergence.sample(name, score, ve, x, 7, n_sigma=n_sigma, denoise_last=True)
    assert last.nfe == expected_nfe
    est = convergence.evaluators.error(
        name, iso_target(0.5), ve, 7, metric="w2", evaluator="gaussian", n_sigma=n_sigma
    )
    assert est.nfe == expected_nfe


@pytest.mark.parametrize("name", ["als", "cas"])
def test_batch_invariance_and_seed_dependence(name):
    target, ve = random_gmm(2, 3, 0), VE()
    x = target.noised(ve, 1.0).sample(40, seed=2)
    score = target.score_fn(ve)
    full = convergence.sample(name, score, ve, x, 9, seed=4)
    part = convergence.sample(name, score, ve, x[10:25], 9, seed=4, offset=10)
    assert torch.allclose(full.x[10:25], part.x, rtol=1e-12, atol=1e-12)
    assert not torch.equal(full.x, convergence.sample(name, score, ve, x, 9, seed=5).x)


@pytest.mark.parametrize(("name", "opts"), [("als", {"eta": 0.7}), ("cas", {"eta": 0.9})])
def test_exact_moments_agree_with_monte_carlo(name, opts):
    """The moment recursion equals the law of the samplers' own samples (5 standard errors)."""
    ve, target, n, steps = VE(), iso_target(0.6), 20_000, 6
    init = target.noised(ve, 1.0)
    law = exact.propagate(
        REGISTRY[name], target.score_fn(ve), ve, exact.law_of(init), steps, **opts
    )
    x = init.sample(n, seed=3)
    out = convergence.sample(name, target.score_fn(ve), ve, x, steps, seed=7, **opts).x
    se = torch.sqrt(torch.diagonal(law.cov) / n)
    assert ((out.mean(0) - law.mean).abs() < 5 * se).all()
    var = torch.diagonal(law.cov)
    assert ((out.var(0) - var).abs() < 5 * var * math.sqrt(2 / n)).all()


def test_denoise_last_reuses_the_last_evaluation():
    """denoise_last: the last step returns x_pre + sigma_L^2 s(x_pre, sigma_L), no noise; with
    CAS at eta = 1 this is already the plain last step."""
    target, ve = random_gmm(2, 2, 1), VE()
    x = target.noised(ve, 1.0).sample(12, seed=0)
    score = target.score_fn(ve)
    for eta in (1.0, 0.9):
        a = convergence.sample("cas", score, ve, x, 12, eta=eta, seed=1).x
        b = convergence.sample("cas", score, ve, x, 12, eta=eta, seed=1, denoise_last=True).x
        assert torch.equal(a, b) == (eta == 1.0)
    tl = ve.t_end_default
    tr = als_step(score, ve, x, tl, tl, last=True, eta=0.3, n_sigma=1, denoise_last=True)
    assert tr.std == 0.0
    assert torch.allclose(tr.mean, x + ve.sigma(tl) ** 2 * score(x, tl), rtol=1e-14, atol=0)


# ---- refused options -----------------------------------------------------------------------


def _refused(name, process=None, steps=8, **opts):
    process = VE() if process is None else process
    x = torch.zeros(3, 2, dtype=torch.float64)
    with pytest.raises(ValueError) as info:
        convergence.sample(name, lambda x, t: -x, process, x, steps, **opts)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("name", ["als", "cas"])
def test_invalid_options(name):
    assert "runs on the ve process, not vp" in _refused(name, VP())
    assert "steps (noise levels) >= 2" in _refused(name, steps=1)
    for bad in (0, -2, 1.5, True):
        assert "n_sigma" in _refused(name, n_sigma=bad)
    for bad in (0.0, -0.1, math.inf, math.nan, "1"):
        assert "eta" in _refused(name, eta=bad)
    assert "no option 'step_lr'" in _refused(name, step_lr=1e-5)
    assert "denoise_last" in _refused(name, denoise_last="yes")


def test_cas_consistency_bound():
    """eta outside (1 - gamma, 1 + gamma) fails with one line naming the interval; n_sigma
    refines the ladder, so it moves gamma and the interval."""
    ve = VE()
    gamma = (ve.sigma(ve.t_end_default) / ve.sigma(1.0)) ** (1 / 9)  # 10 levels
    msg = _refused("cas", steps=10, eta=1.0 + gamma + 1e-3)
    assert f"({1 - gamma:.6g}, {1 + gamma:.6g})" in msg and "got eta=" in msg
    _refused("cas", steps=10, eta=0.99 * (1 - gamma))
    x = torch.zeros(3, 2, dtype=torch.float64)
    convergence.sample("cas", lambda x, t: -x, ve, x, 10, eta=1.01 * (1 - gamma))
    _refused("cas", steps=2, eta=0.9)  # gamma = 2e-4: the interval is (0.9998, 1.0002)
    convergence.sample("cas", lambda x, t: -x, ve, x, 2, eta=0.9, n_sigma=20)  # 21 levels


@pytest.mark.parametrize("name", ["als", "cas"])
def test_denoise_last_is_compared_with_the_denoised_reference(name):
    """The re-used-evaluation EDS and the generic Tweedie step approximate the same law, and the
    evaluator measures both against the Tweedie push-forward of the marginal at t_end."""
    target, ve = gaussian_target(2), VE()
    reuse = convergence.error(name, target, ve, 160, metric="w2", denoise_last=True)
    generic = convergence.error(name, target, ve, 160, metric="w2", denoise=True)
    assert reuse.nfe == generic.nfe - 1
    assert abs(reuse.value - generic.value) < 0.2 * generic.value


@pytest.mark.parametrize("rule", ["paper", "near-one"])
def test_cas_eta_rule_is_the_fixed_eta_of_its_ladder(rule):
    """eta_rule sets eta from the ladder's ratio gamma: a run with the rule equals a run with the
    fixed eta = cas_eta(rule, gamma) (also at the last level, where the step sees no next level),
    the paper's rule lands at 1.55 (1 - gamma) (0.056 on the CIFAR-10 ladder of 232 levels), and
    the idealised sample stays on the ladder."""
    from convergence.samplers.annealed import CAS_PAPER_SCALE, cas_eta

    ve, levels = VE(), 40
    gamma = (ve.sigma(1e-5) / ve.sigma(1.0)) ** (1.0 / (levels - 1))
    x = random_gmm(1, 3, 0).noised(ve, 1.0).sample(64, seed=1)
    target = random_gmm(1, 3, 0)
    kw = dict(t_end=1e-5, seed=3)
    with_rule = convergence.sample("cas", target.score_fn(ve), ve, x, levels, eta_rule=rule, **kw)
    fixed = convergence.sample(
        "cas", target.score_fn(ve), ve, x, levels, eta=cas_eta(1.0, rule, gamma), **kw
    )
    torch.testing.assert_close(with_rule.x, fixed.x, rtol=1e-12, atol=1e-12)
    cifar = 1.0 - (0.01 / 50.0) ** (1.0 / 231.0)
    assert cas_eta(1.0, "paper", 1.0 - cifar) == pytest.approx(0.056, rel=1e-12)
    assert CAS_PAPER_SCALE == pytest.approx(1.547, abs=1e-3)
    assert cas_eta(0.7, "fixed", gamma) == 0.7  # the control: the option itself
