"""Score-SDE predictors/correctors (reverse-diffusion, langevin, pc) and AMS (SAMPLERS.md 2.4-2.6,
6.1-6.3): exact rates with negative controls, closed-form Langevin bias, step-for-step identities
between samplers, hand-written recursions, NFE accounting and batch-size (in)variance."""

import dataclasses
import math

import pytest
import torch

import convergence
from analytic.gmm import GaussianMixture
from analytic.processes import VE, VP
from convergence import measure_rate
from convergence.evaluators import gaussian as exact
from convergence.noise import PerSampleNoise
from convergence.samplers import REGISTRY, CountingScore, DivergenceError, Transition
from convergence.samplers.score_sde import (
    LANGEVIN_FIXED,
    REVERSE_DIFFUSION,
    coefficients,
    reverse_diffusion_step,
)
from convergence.targets import gaussian_target, random_gmm

STEPS = [20, 40, 80, 160, 320, 640, 1280]


def _start(n=40, d=2, process=None, seed=0):
    process = VP() if process is None else process
    target = random_gmm(d, 3, seed)
    return target, process, target.noised(process, 1.0).sample(n, seed=seed)


def test_specs_declare_sampler_table():
    """SAMPLERS.md 0.1: family, stochasticity, NFE per step and order of the four samplers."""
    table = {
        "reverse-diffusion": (True, 1, 1.0),
        "langevin": (
            False,
            1,
            None,
        ),  # run spec; LANGEVIN_FIXED is affine. Order 1 in h (stationary bias), not in steps
        "pc": (False, 2, None),
        "ams": (False, 2, None),
    }
    for name, (affine, nfe, order) in table.items():
        spec = REGISTRY[name]
        assert spec.stochastic and spec.citation
        assert (spec.affine, spec.nfe_per_step, spec.expected_order) == (affine, nfe, order)


# ---- reverse-diffusion: exact rate, negative control, Brownian paths -------------------------


def test_reverse_diffusion_first_order_w2_vp():
    res = measure_rate(
        "reverse-diffusion", gaussian_target(2), VP(), STEPS, metric="w2", evaluator="gaussian"
    )
    assert res.fit.settled and res.verdict == "consistent"
    assert abs(res.fit.slope + 1.0) < 0.05  # measured -0.978, local slopes -0.94 ... -0.997


def rd_wrong_drift(score, process, x, t, t_next, *, discretization):
    """Reverse-diffusion with the forward contraction rho x instead of (2 - rho) x: inconsistent."""
    c = coefficients(process, t, t_next, discretization)
    tr = reverse_diffusion_step(score, process, x, t, t_next, discretization=discretization)
    return Transition(tr.mean - 2.0 * (1.0 - c.rho) * x, tr.std)


def test_reverse_diffusion_negative_control_is_rejected():
    broken = dataclasses.replace(REVERSE_DIFFUSION, name="rd-wrong-drift", step=rd_wrong_drift)
    res = measure_rate(broken, gaussian_target(2), VP(), STEPS, metric="w2", evaluator="gaussian")
    assert res.verdict in ("slower", "inconclusive")
    assert res.fit.slope > -0.7


def test_reverse_diffusion_ve_and_euler_rule_converge():
    """VE with the interval rule is first order (measured -1.02); the euler rule converges too
    (VP -1.01; VE -2.0: a cancellation on Gaussian targets, not a general second order)."""
    steps = [40, 80, 160, 320]
    ve = measure_rate("reverse-diffusion", gaussian_target(2), VE(), steps, metric="w2")
    eu = measure_rate(
        "reverse-diffusion", gaussian_target(2), VP(), steps, metric="w2", discretization="euler"
    )
    assert -1.15 < ve.fit.slope < -0.9 and -1.1 < eu.fit.slope < -0.9


def test_reverse_diffusion_interval_rule_matches_the_chain_formulas():
    """VP: (2 - sqrt(1 - beta)) x + beta s with beta = 1 - alpha(t)^2 / alpha(t')^2; VE:
    x + (sigma^2 - sigma'^2) s; noise std sqrt(beta) resp. sqrt(sigma^2 - sigma'^2)."""
    x = torch.tensor([[0.3, -1.2], [2.0, 0.5]], dtype=torch.float64)

    def score(y, t):
        return -2.0 * y + 0.25

    t, t_next = 0.6, 0.55
    vp, ve = VP(), VE()
    beta = 1.0 - (vp.alpha(t) / vp.alpha(t_next)) ** 2
    tr = reverse_diffusion_step(score, vp, x, t, t_next, discretization="interval")
    assert torch.allclose(tr.mean, (2 - math.sqrt(1 - beta)) * x + beta * score(x, t), atol=1e-14)
    assert tr.std == pytest.approx(math.sqrt(beta), rel=1e-12)
    dv = ve.sigma(t) ** 2 - ve.sigma(t_next) ** 2
    tr = reverse_diffusion_step(score, ve, x, t, t_next, discretization="interval")
    assert torch.allclose(tr.mean, x + dv * score(x, t), atol=1e-12)
    assert tr.std == pytest.approx(math.sqrt(dv), rel=1e-12)


def test_reverse_diffusion_brownian_paths_converge_strongly():
    """One Brownian path per sample for T and 2T steps: mean |x_T - x_2T| halves per doubling
    (strong order 1 with additive noise)."""
    target, vp = gaussian_target(2), VP()
    x = target.noised(vp, 1.0).sample(200, seed=0)
    outs = {
        T: convergence.sample(
            "reverse-diffusion", target.score_fn(vp), vp, x, T, noise="brownian"
        ).x
        for T in (20, 40, 80, 160)
    }
    gaps = [float((outs[T] - outs[2 * T]).norm(dim=1).mean()) for T in (20, 40, 80)]
    assert 1.6 < gaps[0] / gaps[1] < 2.3 and 1.7 < gaps[1] / gaps[2] < 2.3  # 1.74, 1.91
    independent = convergence.sample("reverse-diffusion", target.score_fn(vp), vp, x, 160).x
    assert float((independent - outs[80]).norm(dim=1).mean()) > 5 * gaps[2]


# ---- langevin: stationary bias of ULA --------------------------------------------------------


def _ula_law(h, step=LANGEVIN_FIXED):
    """Exact law after fixed-h Langevin steps on p_t (t = 0.2) of the 2-D target, started at p_t
    itself (20 / h steps: the transient (1 - h / C_max)^(2n) is far below the O(h) bias), the
    reference p_t, and the closed-form ULA stationary covariance (THEORY.md 3.3)."""
    target, vp, t = gaussian_target(2), VP(), 0.2
    ref = exact.law_of(target.noised(vp, t))
    law = exact.propagate(
        step, target.score_fn(vp), vp, ref, int(20 / h), t_end=t, final_noise=True, h=h
    )
    lam, Q = torch.linalg.eigh(ref.cov)
    stationary = (Q * (lam / (1 - h / (2 * lam)))) @ Q.T  # per eigenvalue C_i / (1 - h / (2 C_i))
    return law, ref, stationary


def test_langevin_stationary_variance_matches_closed_form():
    """ULA on N(mu, C): stationary covariance C_i / (1 - h / (2 C_i)) in C's eigenbasis."""
    law, ref, stationary = _ula_law(0.1)
    assert torch.allclose(law.mean, ref.mean, atol=1e-12)
    assert torch.allclose(law.cov, stationary, rtol=1e-9, atol=1e-12)
    assert not torch.allclose(law.cov, ref.cov, rtol=1e-3)


def ula_half_noise(score, process, x, t, t_next, *, h):
    """ULA with noise sqrt(h) instead of sqrt(2 h): the stationary law is too narrow for all h."""
    return Transition(x + h * score(x, t), math.sqrt(h))


@pytest.mark.parametrize("broken", [False, True])
def test_langevin_bias_is_first_order_in_h(broken):
    """W2(ULA law, p_t) halves with h (measured ratios 2.05, 2.03); the negative control does not
    (ratios ~1: its bias does not vanish as h -> 0)."""
    step = LANGEVIN_FIXED
    if broken:
        step = dataclasses.replace(LANGEVIN_FIXED, name="ula-half-noise", step=ula_half_noise)
    errs = [exact.distance("w2", *_ula_law(h, step)[1::-1]).value for h in (0.08, 0.04, 0.02)]
    ratios = [errs[0] / errs[1], errs[1] / errs[2]]
    if broken:
        assert all(r < 1.2 for r in ratios)
    else:
        assert all(1.9 < r < 2.1 for r in ratios)


def test_langevin_fixed_mode_is_the_affine_chain_and_snr_mode_runs():
    target, vp, x = _start()
    score = target.score_fn(vp)
    a = convergence.sample("langevin", score, vp, x, 7, seed=3, h=0.02, t_end=0.3)
    b = convergence.sample(LANGEVIN_FIXED, score, vp, x, 7, seed=3, h=0.02, t_end=0.3)
    assert torch.equal(a.x, b.x) and a.nfe == 7 and a.t_end == 0.3
    assert a.info["options"]["mode"] == "fixed"
    # snr mode: eps = 2 (r ||z|| / ||g||)^2 with a = 1 at the fixed level, by hand for one step
    counted = CountingScore(score)
    out = convergence.sample("langevin", counted, vp, x, 1, seed=3, mode="snr", snr=0.2,
                             t_end=0.3, final_noise=True)  # fmt: skip
    z = PerSampleNoise(3).draw(0, x)
    g = score(x, 0.3)
    eps = 2 * (0.2 * z.norm(dim=1).mean() / g.norm(dim=1).mean()) ** 2
    assert torch.allclose(out.x, x + eps * g + torch.sqrt(2 * eps) * z, atol=1e-14)
    assert out.nfe == counted.calls == 1


# ---- pc: identities with other samplers, NFE ----------------------------------------------------


@pytest.mark.parametrize(
    "predictor, other, process",
    [
        ("reverse-diffusion", ("reverse-diffusion", {}), VP()),
        ("reverse-diffusion", ("reverse-diffusion", {}), VE()),
        ("em", ("em", {}), VP()),
        ("ancestral", ("ddpm", {"variance": "beta"}), VP()),
        ("ancestral", ("ddpm", {"variance": "beta_tilde"}), VE()),
    ],
)
def test_pc_without_corrector_is_the_predictor(predictor, other, process):
    """n_steps = 0: pc is its predictor alone (the same noise index per step). The ancestral
    predictor on the interval rule is DDPM with Ho's beta (VP) / beta-tilde (VE) variance."""
    target, process, x = _start(process=process)
    score = target.score_fn(process)
    a = convergence.sample("pc", score, process, x, 9, seed=2, n_steps=0, predictor=predictor)
    b = convergence.sample(other[0], score, process, x, 9, seed=2, **other[1])
    assert torch.allclose(a.x, b.x, rtol=1e-12, atol=1e-12) and a.nfe == 9


@pytest.mark.parametrize("name", ["pc", "ams"])
@pytest.mark.parametrize("n_steps, predictor", [(1, "reverse-diffusion"), (3, "ancestral"),
                                                (2, "none"), (0, "em")])  # fmt: skip
def test_nfe_is_counted_and_matches_formula(name, n_steps, predictor):
    target, vp, x = _start()
    counted = CountingScore(target.score_fn(vp))
    res = convergence.sample(name, counted, vp, x, 11, n_steps=n_steps, predictor=predictor)
    calls_per_step = n_steps + (predictor != "none")
    assert res.nfe == counted.calls == res.info["score_calls"] == 11 * calls_per_step
    den = convergence.sample(name, counted, vp, x, 11, n_steps=n_steps, denoise=True)
    assert den.nfe == 11 * (n_steps + 1) + 1 and den.info["denoised"]


def test_index_rule_is_the_code_chain():
    """N = 1000 VP levels: beta_i = linspace(1e-4, 0.02, 1000)_i, the k-th predictor uses i = N-1-k;
    VE: sigma_i geometric from sigma_min to sigma_max, sigma_{-1} = 0."""
    vp, ve, n = VP(), VE(), 1000
    betas = torch.linspace(1e-4, 0.02, n, dtype=torch.float64)
    for k in (0, 1, 500, 999):
        c = coefficients(vp, 0.5, 0.4, "index", n, k)
        assert c.var == pytest.approx(float(betas[n - 1 - k]), rel=1e-12)
        assert c.rho == pytest.approx(math.sqrt(1 - float(betas[n - 1 - k])), rel=1e-12)
    sig = torch.exp(torch.linspace(math.log(0.01), math.log(50.0), n, dtype=torch.float64))
    c = coefficients(ve, 0.5, 0.4, "index", n, 10)
    assert c.var == pytest.approx(float(sig[989] ** 2 - sig[988] ** 2), rel=1e-9)
    assert coefficients(ve, 0.5, 0.4, "index", n, n - 1).var == pytest.approx(1e-4, rel=1e-12)
    target, _, x = _start()
    res = convergence.sample("pc", target.score_fn(vp), vp, x, 40, discretization="index")
    assert torch.isfinite(res.x).all() and res.nfe == 80


# ---- ams --------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["batch", "per-sample"])
@pytest.mark.parametrize("process", [VP(), VE()])
def test_ams_without_momentum_is_pc_step_for_step(norm, process):
    """momentum="off" (beta = 0, m = g before eps) reproduces pc's Langevin corrector exactly."""
    target, process, x = _start(process=process)
    score = target.score_fn(process)
    kw = dict(seed=4, n_steps=2, snr=0.1, norm=norm)
    pc = convergence.sample("pc", score, process, x, 15, **kw)
    ams = convergence.sample("ams", score, process, x, 15, momentum="off", **kw)
    assert torch.allclose(pc.x, ams.x, rtol=0, atol=1e-12)
    assert ams.info["momentum_beta"] == [0.0] * 30
    adaptive = convergence.sample("ams", score, process, x, 15, **kw)
    lagged = convergence.sample("ams", score, process, x, 15, momentum="lagged", **kw)
    assert (adaptive.x - pc.x).abs().max() > 1e-6 and (lagged.x - pc.x).abs().max() > 1e-6
    betas = adaptive.info["momentum_beta"]
    assert betas[0] == 0.0 and all(0.0 <= b <= 1 - 1e-4 for b in betas) and max(betas) > 0


def _ams_by_hand(score, vp, x, levels, n_steps, snr, seed):
    """AMS-PC written out (SAMPLERS.md 6.2-6.3), batch-mean norms, reverse-diffusion predictor."""
    grid = torch.linspace(1.0, vp.t_end_default, levels + 1, dtype=torch.float64).tolist()
    noise = PerSampleNoise(seed)

    def nrm(v):
        return v.norm(dim=1).mean()

    delta = m = g_prev = torch.zeros_like(x)
    eta = 0.0
    for k in range(levels):
        t, t_next = grid[k], grid[k + 1]
        rho = vp.alpha(t) / vp.alpha(t_next)
        a = rho**2
        for j in range(n_steps):
            g = score(x, t)
            z = noise.draw(k * (n_steps + 1) + j, x)
            if nrm(delta) == 0:
                beta, m_old = 0.0, g
            else:
                q = eta * nrm(g - g_prev) / nrm(delta)
                beta, m_old = float(min(max(((1 - q) / (1 + q)) ** 2, 0.0), 1 - 1e-4)), m
            eps = 2 * a * (snr * nrm(z) / nrm(m_old)) ** 2
            m = beta * m + (1 - beta) * g
            eta = eps * (1 + beta) ** 2
            delta, g_prev = eta * m, g
            x = x + delta + math.sqrt(2 * eps) * z
        mean = (2 - rho) * x + (1 - rho**2) * score(x, t)
        z = noise.draw(k * (n_steps + 1) + n_steps, x)
        x = mean + math.sqrt(1 - rho**2) * z if k < levels - 1 else mean
    return x


def test_ams_matches_the_written_out_recursion():
    """State (Delta, m, g_prev, eta_A) persists across corrector calls and levels."""
    target, vp, x = _start(n=30)
    score = target.score_fn(vp)
    out = convergence.sample("ams", score, vp, x, 4, seed=7, n_steps=3, snr=0.05)
    ref = _ams_by_hand(score, vp, x, 4, 3, 0.05, seed=7)
    assert torch.allclose(out.x, ref, rtol=1e-11, atol=1e-12)


# ---- batch-size (in)variance, noise, validation -------------------------------------------------


@pytest.mark.parametrize(
    "name, options",
    [
        ("pc", {}),
        ("ams", {}),
        ("langevin", {"mode": "snr"}),
        ("langevin", {"mode": "fixed"}),
        ("reverse-diffusion", {}),
    ],
)
def test_batch_size_invariance_with_per_sample_norms(name, options):
    target, vp, x = _start(n=40)
    score = target.score_fn(vp)
    per = {} if name == "reverse-diffusion" or options.get("mode") == "fixed" else {
        "norm": "per-sample"
    }  # fmt: skip
    full = convergence.sample(name, score, vp, x, 6, seed=5, **options, **per)
    part = convergence.sample(name, score, vp, x[10:20], 6, seed=5, offset=10, **options, **per)
    assert torch.allclose(full.x[10:20], part.x, rtol=1e-12, atol=1e-12)
    if per:  # the documented exception: batch-mean norms couple the samples
        full = convergence.sample(name, score, vp, x, 6, seed=5, **options)
        part = convergence.sample(name, score, vp, x[10:20], 6, seed=5, offset=10, **options)
        assert (full.x[10:20] - part.x).abs().max() > 1e-8


def test_corrector_samplers_refuse_brownian_noise():
    target, vp, x = _start()
    for name in ("pc", "ams"):
        with pytest.raises(ValueError, match="not a Brownian increment"):
            convergence.sample(name, target.score_fn(vp), vp, x, 4, noise="brownian")


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("pc", {"snr": 0.0}, "snr must be a number > 0"),
        ("ams", {"n_steps": -1}, "n_steps must be an integer >= 0"),
        ("pc", {"n_steps": 0, "predictor": "none"}, "needs n_steps >= 1"),
        ("pc", {"predictor": "heun"}, "is not one of"),
        ("ams", {"momentum": "fixed"}, "is not one of"),
        ("langevin", {"h": -0.1}, "h must be a number > 0"),
        ("langevin", {"mode": "snr", "snr": float("nan")}, "snr must be"),
        ("reverse-diffusion", {"discretization": "index"}, "is not one of"),
        ("reverse-diffusion", {"discretization": "euler"}, "needs beta\\(1\\) h < 1"),
    ],
)
def test_bad_options_fail_with_one_line(name, options, message):
    target, vp, x = _start(n=4)
    with pytest.raises(ValueError, match=message):
        convergence.sample(name, target.score_fn(vp), vp, x, 10, **options)


def test_divergence_is_reported():
    """Fixed-h Langevin with h far above the stability limit 2 C blows up; a score that turns
    non-finite at t < 0.5 stops pc and ams at step 7 (t = 0.4006)."""
    target, vp = GaussianMixture([1.0], [[0.0]], [[[1e-4]]]), VP()
    x = target.noised(vp, 1.0).sample(8, seed=0)
    with pytest.raises(DivergenceError, match="'langevin' diverged"):
        convergence.sample("langevin", target.score_fn(vp), vp, x, 200, h=1.0)

    def bad_score(y, t):
        return -y * (math.nan if t < 0.5 else 1.0)

    for name in ("pc", "ams"):
        with pytest.raises(DivergenceError, match=f"'{name}' diverged.* step 7 "):
            convergence.sample(name, bad_score, vp, x, 10)


def test_dtype_follows_input():
    target, vp, x = _start(n=8)
    for name in ("pc", "ams", "langevin"):
        out = convergence.sample(name, target.score_fn(vp), vp, x.float(), 5).x
        ref = convergence.sample(name, target.score_fn(vp), vp, x, 5).x
        assert out.dtype == torch.float32 and torch.allclose(out.double(), ref, atol=1e-4)
