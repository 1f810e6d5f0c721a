"""Discrete-chain samplers: DDIM eta and spacing, li-accel-ddpm and li-accel-ddim.

Rates use the exact Gaussian evaluator (deterministic); each rate check has a negative control
that the same check rejects.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

import convergence
from analytic.processes import VE, VP
from convergence import measure_rate
from convergence.evaluators import gaussian as exact
from convergence.rates import local_slopes
from convergence.samplers import REGISTRY, Transition, get_spec
from convergence.samplers.discrete import (
    LI_ACCEL_DDIM,
    LI_ACCEL_DDPM,
    ddim_update,
    discrete_schedule,
    li_ddim_bracket,
    li_ddim_step,
    li_ddpm_step,
)
from convergence.targets import gaussian_target

STEPS = [20, 40, 80, 160, 320, 640, 1280]


def w2_errors(spec, steps=STEPS, **options):
    res = measure_rate(
        spec, gaussian_target(2), VP(), steps, metric="w2", evaluator="gaussian", **options
    )
    assert all(p.evaluator == "gaussian" for p in res.points)
    return res


def exact_law(name, process, steps, target=None, **options):
    target = gaussian_target(2) if target is None else target
    init = exact.law_of(target.noised(process, 1.0))
    return exact.propagate(
        get_spec(name), target.score_fn(process), process, init, steps, **options
    )


# ---- ddim: eta --------------------------------------------------------------------------------


@pytest.mark.parametrize("process", [VP(), VE()], ids=["vp", "ve"])
def test_ddim_eta_one_is_ddpm_with_beta_tilde_in_law(process):
    """eta = 1: sigma_eta^2 = (b'^2/b^2) beta = beta-tilde, and the mean
    a' x0 + (rho b'^2 / b) eps = (a' beta / b^2) x0 + (rho b'^2 / b^2) x is the DDPM posterior
    mean (x + beta s) / rho: same kernel, so the same output law for every T."""
    for steps, final_noise in [(1, True), (7, False), (30, True)]:
        ddim = exact_law("ddim", process, steps, eta=1.0, final_noise=final_noise)
        ddpm = exact_law("ddpm", process, steps, variance="beta_tilde", final_noise=final_noise)
        scale = 1.0 + float(ddpm.cov.abs().max())
        assert torch.allclose(ddim.mean, ddpm.mean, rtol=0, atol=1e-12 * scale)
        assert torch.allclose(ddim.cov, ddpm.cov, rtol=0, atol=1e-12 * scale)


@pytest.mark.parametrize("process", [VP(), VE()], ids=["vp", "ve"])
def test_ddim_eta_zero_is_the_deterministic_formula(process):
    """eta = 0: x' = a' (x + b^2 s) / a - b' b s exactly, no noise (the pre-eta rule)."""
    target = gaussian_target(3)
    score = target.score_fn(process)
    x = target.noised(process, 0.6).sample(16, seed=3)
    a, b, a1, b1 = (f(t) for t in (0.6, 0.55) for f in (process.alpha, process.sigma))
    tr = get_spec("ddim").step(score, process, x, 0.6, 0.55)
    s = score(x, 0.6)
    assert tr.std == 0.0
    assert torch.allclose(tr.mean, a1 * (x + b * b * s) / a - b1 * b * s, rtol=0, atol=1e-13)


def test_ddim_eta_noise_level_and_validation():
    """sigma_eta = eta sqrt((1 - abar') / (1 - abar)) sqrt(1 - abar / abar') on VP."""
    vp, x = VP(), torch.zeros(2, 2, dtype=torch.float64)
    ab, ab1 = vp.alpha(0.5) ** 2, vp.alpha(0.4) ** 2
    tr = ddim_update(vp, x, x, 0.5, 0.4, eta=0.3)
    assert math.isclose(
        tr.std, 0.3 * math.sqrt((1 - ab1) / (1 - ab) * (1 - ab / ab1)), rel_tol=1e-13
    )
    with pytest.raises(
        ValueError, match=r"option eta of sampler 'ddim' must be a number in \[0, 1\]"
    ):
        convergence.sample("ddim", gaussian_target(2).score_fn(vp), vp, x, 3, eta=1.5)
    assert not get_spec("ddim").stochastic


# ---- spacing ----------------------------------------------------------------------------------


def test_quadratic_spacing_formula():
    """t_k = t_end + (1 - t_end) ((S - k) / S)^2 with exact end points."""
    sched = discrete_schedule(VP(), 8, 1e-3, {"spacing": "quadratic"})
    grid = [sched[0][0]] + [t1 for _, t1 in sched]
    expected = [1e-3 + (1 - 1e-3) * ((8 - k) / 8) ** 2 for k in range(9)]
    assert grid[0] == 1.0 and grid[-1] == 1e-3 and len(sched) == 8
    assert np.allclose(grid, expected, rtol=0, atol=1e-15)
    assert all(t0 == t1 for (_, t0), (t1, _) in zip(sched, sched[1:], strict=False))


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_li_yan_spacing_keeps_the_schedule_shape(name):
    """Each step adds the fraction of -log alpha_bar that Li & Yan's beta_k adds (independent
    check: alpha_bar from the process' own alpha and sigma at the grid times)."""
    from analytic.processes import li_yan_betas, make_process

    process, steps, t_end = make_process(name), 32, 1e-3
    sched = discrete_schedule(process, steps, t_end, {"spacing": "li-yan"})
    grid = np.array([sched[0][0]] + [t1 for _, t1 in sched])
    assert grid[0] == 1.0 and grid[-1] == t_end and np.all(np.diff(grid) < 0)
    a, s = np.array([process.alpha(t) for t in grid]), np.array([process.sigma(t) for t in grid])
    ell = -np.log(a**2 / (a**2 + s**2))[::-1]  # from the data end
    inc = -np.log1p(-li_yan_betas(steps).numpy())
    assert np.allclose(np.diff(ell) / (ell[-1] - ell[0]), inc / inc.sum(), rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="steps >= 16"):
        discrete_schedule(process, 8, t_end, {"spacing": "li-yan"})


@pytest.mark.parametrize("spacing", ["uniform", "quadratic"])
def test_ddim_first_order_for_both_spacings(spacing):
    res = w2_errors(REGISTRY["ddim"], STEPS[:-1], spacing=spacing)
    assert abs(res.fit.slope + 1.0) < 0.05


def test_ddim_on_the_li_yan_grid_is_first_order_up_to_log_t():
    """On Li & Yan's grid the flat part has steps ~ c1 log T / T, so e ~ log T / T: local slopes
    climb towards -1 from above (-0.79 at T = 20..40, -0.92 at 320..640) while e T / log T is
    nearly flat (slopes -0.09 .. -0.08)."""
    res = w2_errors(REGISTRY["ddim"], STEPS[:-1], spacing="li-yan")
    t, e = np.array(STEPS[:-1]), np.array([p.value for p in res.points])
    p = local_slopes(t, e)
    assert np.all(np.diff(p) < 0) and -0.95 < p[-1] < -0.9 and p[0] > -0.85
    assert np.all(np.abs(local_slopes(t, e * t / np.log(t))) < 0.1)


# ---- li-accel-ddpm ----------------------------------------------------------------------------


def li_ddpm_no_pre_noise(score, process, x, t, t_next, *, k, pre_noise, spacing):
    """Negative control: stage 1 dropped (no pre-noise), so the chain injects half the variance."""
    tr = li_ddpm_step(score, process, x, t, t_next, k=k, pre_noise=pre_noise, spacing=spacing)
    return Transition(tr.mean, 0.0) if k % 2 == 0 else tr


def first_order(res):
    return abs(res.fit.slope + 1.0) < 0.05 and res.verdict == "consistent"


def test_li_accel_ddpm_first_order_and_negative_control():
    res = w2_errors(LI_ACCEL_DDPM)
    assert first_order(res)
    broken = dataclasses.replace(LI_ACCEL_DDPM, name="li-ddpm-no-pre", step=li_ddpm_no_pre_noise)
    assert not first_order(w2_errors(broken))


def test_li_accel_ddpm_stages():
    """Stage 1: x + sqrt(beta/2) Z (CIFAR: sqrt(alpha_t) sqrt(beta/2)), no score call; stage 2:
    (x + beta s) / rho + sqrt(beta/2) Z+; post-noise dropped at the last step."""
    vp, x = VP(), torch.ones(3, 2, dtype=torch.float64)
    rho, beta = vp.transition(0.4, 0.5)
    calls = []

    def score(y, t):
        calls.append(t)
        return -y

    pre = li_ddpm_step(score, vp, x, 0.5, 0.4, k=4, pre_noise="readme")
    pre_c = li_ddpm_step(score, vp, x, 0.5, 0.4, k=4, pre_noise="cifar")
    main = li_ddpm_step(score, vp, x, 0.5, 0.4, k=5, pre_noise="readme")
    assert calls == [0.5] and torch.equal(pre.mean, x)
    assert math.isclose(pre.std, math.sqrt(beta / 2)) and math.isclose(main.std, pre.std)
    assert math.isclose(pre_c.std, rho * math.sqrt(beta / 2), rel_tol=1e-14)
    assert torch.allclose(main.mean, (1 - beta) * x / rho, rtol=1e-14)
    one = exact_law("li-accel-ddpm", vp, 1)
    # one step from N(m, C) with score -C^{-1}(x - m): check against the hand formula
    target = gaussian_target(2)
    p1 = target.noised(vp, 1.0)
    m, C = p1.means[0], p1.covariance_matrices()[0]
    rho, beta = vp.transition(vp.t_end_default, 1.0)
    M = (torch.eye(2, dtype=C.dtype) - beta * torch.linalg.inv(C)) / rho
    cov = M @ (C + beta / 2 * torch.eye(2, dtype=C.dtype)) @ M.T
    assert torch.allclose(one.cov, cov, rtol=0, atol=1e-12)
    assert torch.allclose(one.mean, m / rho, rtol=0, atol=1e-12)  # s(m) = 0 at the mean


def test_li_accel_ddpm_moments_agree_with_monte_carlo():
    """The two-stage run (pre-noise drawn before the score call) has the propagated law."""
    vp, target, steps, n = VP(), gaussian_target(2), 4, 20_000
    law = exact_law("li-accel-ddpm", vp, steps)
    x = target.noised(vp, 1.0).sample(n, seed=1)
    out = convergence.sample("li-accel-ddpm", target.score_fn(vp), vp, x, steps, seed=2).x
    var = torch.diagonal(law.cov)
    assert (torch.abs(out.mean(0) - law.mean) < 5 * torch.sqrt(var / n)).all()
    se_cov = torch.sqrt((law.cov**2 + torch.outer(var, var)) / n)
    assert (torch.abs(torch.cov(out.T) - law.cov) < 5 * se_cov).all()


# ---- li-accel-ddim ----------------------------------------------------------------------------


def test_li_ddim_bracket_is_the_integral():
    """bracket = -int_{abar_t}^{abar_{t-1}} (a - abar_t) G'(a) da, G(a) = sqrt((1 - a) / a)
    (SAMPLERS.md 3.3 (a) derivation), by quadrature."""
    for ab, ab1 in [(0.3, 0.35), (0.01, 0.2), (0.9, 0.999)]:

        def integrand(a, ab=ab):
            return -(a - ab) * (-0.5 / (a**1.5 * math.sqrt(1.0 - a)))

        value, _ = quad(integrand, ab, ab1, epsabs=1e-15, epsrel=1e-13)
        assert math.isclose(li_ddim_bracket(ab, ab1), value, rel_tol=1e-9, abs_tol=1e-15)


def accelerated(res):
    """Local W2 slopes increase in steepness towards -2 and are steeper than -1.6 at the end."""
    p = local_slopes(STEPS, [pt.value for pt in res.points])
    return bool(np.all(np.diff(p) < 0) and p[-1] < -1.6 and p[-1] > -2.1)


def li_ddim_wrong_sign(score, process, x, t, t_next, *, k, state, spacing):
    """Negative control: the correction subtracted instead of added."""
    tr = li_ddim_step(score, process, x, t, t_next, k=k, state=state, spacing=spacing)
    if k == 0 or k % 2 == 1:
        return tr
    plain = ddim_update(process, x, state[:, : x.shape[1]], t, t_next).mean
    return Transition(2 * plain - tr.mean, 0.0, tr.state)


def li_ddim_lagged(score, process, x, t, t_next, *, k, state, spacing):
    """Negative control: eps_{t+1} replaced by eps_{t+2} (one step too old) in the slope.
    State layout [eps_t, eps_{t+1}] between steps, [eps_t, slope, eps_{t+1}] inside a step."""
    d = x.shape[1]
    if k == 0:
        tr = li_ddim_step(score, process, x, t, t_next, k=k, state=None, spacing=spacing)
        return Transition(tr.mean, 0.0, torch.cat([tr.state, tr.state], dim=1))
    if k % 2 == 1:
        tr = li_ddim_step(score, process, x, t, t_next, k=k, state=state[:, d:], spacing=spacing)
        return Transition(x, 0.0, torch.cat([tr.state, state[:, :d]], dim=1))
    tr = li_ddim_step(score, process, x, t, t_next, k=k, state=state[:, : 2 * d], spacing=spacing)
    return Transition(tr.mean, 0.0, torch.cat([tr.state, state[:, 2 * d :]], dim=1))


def test_li_accel_ddim_accelerates_and_negative_control():
    assert accelerated(w2_errors(LI_ACCEL_DDIM))
    broken = dataclasses.replace(LI_ACCEL_DDIM, name="li-ddim-wrong-sign", step=li_ddim_wrong_sign)
    assert not accelerated(w2_errors(broken))


@pytest.mark.slow
def test_li_accel_ddim_lagged_eps_is_rejected():
    broken = dataclasses.replace(LI_ACCEL_DDIM, name="li-ddim-lagged", step=li_ddim_lagged)
    assert not accelerated(w2_errors(broken))


def test_li_accel_ddim_first_step_is_ddim_and_samples_match_propagation():
    vp, target = VP(), gaussian_target(2)
    one = exact_law("li-accel-ddim", vp, 1)
    ddim = exact_law("ddim", vp, 1)
    assert torch.allclose(one.mean, ddim.mean, rtol=0, atol=1e-14)
    assert torch.allclose(one.cov, ddim.cov, rtol=0, atol=1e-14)
    law = exact_law("li-accel-ddim", vp, 9, spacing="quadratic")
    init = exact.law_of(target.noised(vp, 1.0))
    L = torch.linalg.cholesky(init.cov)
    pts = torch.cat([init.mean + L.T, init.mean - L.T])
    out = convergence.sample("li-accel-ddim", target.score_fn(vp), vp, pts, 9, spacing="quadratic")
    assert torch.allclose(out.x.mean(0), law.mean, atol=1e-12)
    dev = out.x - law.mean
    assert torch.allclose(dev.T @ dev / 2, law.cov, atol=1e-12)


def test_li_accel_ddim_refuses_ve():
    x = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="'li-accel-ddim' runs on the vp process, not ve"):
        convergence.sample("li-accel-ddim", gaussian_target(2).score_fn(VE()), VE(), x, 4)


# ---- specs and NFE ----------------------------------------------------------------------------


def test_li_specs_declare_orders_and_claims():
    ddpm, ddim = REGISTRY["li-accel-ddpm"], REGISTRY["li-accel-ddim"]
    assert (ddpm.family, ddpm.stochastic, ddpm.nfe_per_step, ddpm.expected_order) == (
        "discrete-chain",
        True,
        1,
        1.0,
    )
    assert (ddim.family, ddim.stochastic, ddim.nfe_per_step, ddim.expected_order) == (
        "discrete-chain",
        False,
        1,
        2.0,
    )
    assert [(c.metric, c.exponent) for c in ddpm.claims] == [("tv", 1.0)]
    assert [(c.metric, c.exponent) for c in ddim.claims] == [("tv", 2.0)]
    assert all("2403.03852" in c.source for c in ddpm.claims + ddim.claims)


@pytest.mark.parametrize(
    "name, options",
    [
        ("ddpm", {"spacing": "quadratic"}),
        ("ddim", {"eta": 0.5, "spacing": "quadratic"}),
        ("li-accel-ddpm", {}),
        ("li-accel-ddpm", {"pre_noise": "cifar", "spacing": "quadratic"}),
        ("li-accel-ddim", {}),
        ("li-accel-ddim", {"spacing": "quadratic"}),
    ],
)
@pytest.mark.parametrize("denoise", [False, True])
def test_nfe_is_counted(name, options, denoise):
    vp, target = VP(), gaussian_target(2)
    score_fn, calls = target.score_fn(vp), []

    def score(x, t):
        calls.append(t)
        return score_fn(x, t)

    steps = 7
    x = target.noised(vp, 1.0).sample(5, seed=0)
    res = convergence.sample(name, score, vp, x, steps, denoise=denoise, **options)
    expected = steps * REGISTRY[name].nfe_per_step + int(denoise)
    assert res.nfe == len(calls) == res.info["score_calls"] == expected
    assert torch.isfinite(res.x).all() and res.x.shape == x.shape
