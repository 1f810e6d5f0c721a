import math

import pytest
import torch

import convergence
from analytic.processes import VE, VP
from convergence.evaluators import gaussian as exact
from convergence.samplers import REGISTRY, DivergenceError, get_spec
from convergence.targets import gaussian_target, random_gmm

EXPECTED = {  # name: (family, stochastic, nfe per step, expected order), SAMPLERS.md 0.1
    "ddpm": ("discrete-chain", True, 1, 1.0),
    "ddim": ("discrete-chain", False, 1, 1.0),
    "em": ("SDE", True, 1, 1.0),
    "ode-euler": ("ODE", False, 1, 1.0),
    "ode-heun": ("ODE", False, 2, 2.0),
}


def test_registry_specs():
    assert set(EXPECTED) <= set(REGISTRY)
    for name, (family, stochastic, nfe, order) in EXPECTED.items():
        spec = REGISTRY[name]
        assert (spec.family, spec.stochastic, spec.nfe_per_step, spec.expected_order) == (
            family,
            stochastic,
            nfe,
            order,
        )
        assert spec.citation and spec.claims
        assert spec.expected_slope("kl") == -2 * order and spec.expected_slope("w2") == -order


def _start(n=64, d=3, seed=0):
    target = random_gmm(d, 3, seed)
    return target, target.noised(VP(), 1.0).sample(n, seed=seed)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_batch_size_and_sharding_invariance(name):
    target, x = _start()
    score = target.score_fn(VP())
    full = convergence.sample(name, score, VP(), x, 12, seed=5)
    part = convergence.sample(name, score, VP(), x[20:30], 12, seed=5, offset=20)
    assert torch.allclose(full.x[20:30], part.x, rtol=1e-12, atol=1e-12)
    assert full.nfe == 12 * REGISTRY[name].nfe_per_step
    assert full.t_end == VP().t_end_default


@pytest.mark.parametrize("name", list(EXPECTED))
def test_seed_dependence_matches_stochasticity(name):
    target, x = _start()
    score = target.score_fn(VP())
    a = convergence.sample(name, score, VP(), x, 6, seed=1).x
    b = convergence.sample(name, score, VP(), x, 6, seed=2).x
    assert torch.equal(a, b) != REGISTRY[name].stochastic


@pytest.mark.parametrize("name", list(EXPECTED))
def test_dtype_follows_input(name):
    target, x = _start(n=8)
    out = convergence.sample(name, target.score_fn(VP()), VP(), x.float(), 5).x
    ref = convergence.sample(name, target.score_fn(VP()), VP(), x, 5).x
    assert out.dtype == torch.float32
    assert torch.allclose(out.double(), ref, rtol=1e-4, atol=1e-4)


def test_ddpm_variants_share_the_mean_and_differ_in_noise():
    """With the same noise the three DDPM variances differ only through std * z."""
    target, x = _start(n=16)
    score = target.score_fn(VP())
    outs = {
        v: convergence.sample("ddpm", score, VP(), x, 1, final_noise=True, variance=v).x
        for v in ("beta", "beta_tilde", "li")
    }
    mean = convergence.sample("ddpm", score, VP(), x, 1, variance="beta").x
    dirs = {v: (o - mean) for v, o in outs.items()}
    t, t_next = 1.0, VP().t_end_default
    rho, beta = VP().transition(t_next, t)
    ratio_li = dirs["li"].norm() / dirs["beta"].norm()
    assert ratio_li == pytest.approx(1 / rho, rel=1e-10)
    ratio_tilde = dirs["beta_tilde"].norm() / dirs["beta"].norm()
    assert ratio_tilde == pytest.approx(VP().sigma(t_next) / VP().sigma(t), rel=1e-10)


def test_pf_ode_matches_exact_flow():
    """Heun with many steps reproduces the exact PF-ODE map of a Gaussian target (THEORY.md 3.2):
    Phi(x) = m_t + C_t^{1/2} C_s^{-1/2} (x - m_s)."""
    target = gaussian_target(2)
    vp = VP()
    x = target.noised(vp, 1.0).sample(5, seed=3)
    out = convergence.sample("ode-heun", target.score_fn(vp), vp, x, 4000).x

    def sqrtm(C):
        w, V = torch.linalg.eigh(C)
        return V @ torch.diag(w.sqrt()) @ V.T

    def law(t):
        p = target.noised(vp, t)
        return p.means[0], p.covariance_matrices()[0]

    m1, C1 = law(1.0)
    me, Ce = law(vp.t_end_default)
    phi = me + (sqrtm(Ce) @ torch.linalg.solve(sqrtm(C1), (x - m1).T)).T
    assert torch.allclose(out, phi, atol=1e-7)


@pytest.mark.parametrize("name", ["ddpm", "em"])
@pytest.mark.parametrize("process", [VP(), VE()], ids=["vp", "ve"])
def test_exact_moments_agree_with_monte_carlo(name, process):
    """The moment recursion equals the law of the sampler's own samples (within 5 std errors)."""
    target = gaussian_target(2)
    steps, n = 6, 100_000
    init = target.noised(process, 1.0)
    law = exact.propagate(
        get_spec(name), target.score_fn(process), process, exact.law_of(init), steps
    )
    x = init.sample(n, seed=1)
    out = convergence.sample(name, target.score_fn(process), process, x, steps, seed=2).x
    var = torch.diagonal(law.cov)
    assert (torch.abs(out.mean(0) - law.mean) < 5 * torch.sqrt(var / n)).all()
    se_cov = torch.sqrt((law.cov**2 + torch.outer(var, var)) / n)  # Gaussian: Var of S_ij
    assert (torch.abs(torch.cov(out.T) - law.cov) < 5 * se_cov).all()


def test_exact_moments_of_deterministic_sampler_are_exact_push_forward():
    """For a deterministic affine sampler, mean/cov of pushed samples match to rounding when the
    samples are the mean plus scaled basis vectors."""
    target = gaussian_target(3)
    vp = VP()
    init = exact.law_of(target.noised(vp, 1.0))
    law = exact.propagate(get_spec("ddim"), target.score_fn(vp), vp, init, 7)
    L = torch.linalg.cholesky(init.cov)
    pts = torch.cat([init.mean + L.T, init.mean - L.T])  # +-columns: exact mean and covariance
    out = convergence.sample("ddim", target.score_fn(vp), vp, pts, 7).x
    assert torch.allclose(out.mean(0), law.mean, atol=1e-12)
    dev = out - law.mean
    assert torch.allclose(dev.T @ dev / 2, law.cov, atol=1e-12)


def test_exact_evaluator_refuses_non_affine():
    gmm = random_gmm(2, 3, 0)
    vp = VP()
    single = exact.law_of(gaussian_target(2).noised(vp, 1.0))
    with pytest.raises(exact.NotAffineError, match="not affine in x"):
        exact.propagate(get_spec("ddim"), gmm.score_fn(vp), vp, single, 4)
    with pytest.raises(exact.NotAffineError, match="single-Gaussian target"):
        exact.law_of(gmm)
    with pytest.raises(ValueError, match="'gaussian' does not apply here: the target is not a"):
        convergence.error("ddim", gmm, vp, 4, metric="w2", evaluator="gaussian")
    assert convergence.error("ddim", gmm, vp, 4, metric="kl").evaluator == "grid"


def test_divergence_names_step_and_time():
    vp = VP()

    def score(x, t):
        return x / 0.0 if t < 0.5 else -x

    x = torch.ones(4, 2, dtype=torch.float64)
    with pytest.raises(
        DivergenceError,
        match=r"'ode-euler' diverged: non-finite state at step 7 \(from t=0.4006 to t=0.3007\)",
    ):
        convergence.sample("ode-euler", score, vp, x, 10)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(steps=0), "steps must be an integer >= 1"),
        (dict(steps=2.5), "steps must be an integer >= 1"),
        (dict(t_end=0.0), r"t_end must lie in \(0, 1\)"),
        (dict(variance="beta"), "sampler 'ddim' has no option 'variance'; allowed: eta, spacing"),
        (dict(x=torch.zeros(3)), r"shape \(n, d\)"),
        (dict(x=torch.full((2, 2), math.nan, dtype=torch.float64)), "must be finite"),
    ],
)
def test_sample_validation(kwargs, message):
    target = gaussian_target(2)
    args = dict(x=torch.zeros(3, 2, dtype=torch.float64), steps=4)
    args.update(kwargs)
    x, steps = args.pop("x"), args.pop("steps")
    with pytest.raises(ValueError, match=message):
        convergence.sample("ddim", target.score_fn(VP()), VP(), x, steps, **args)


def test_option_choices_and_unknown_sampler():
    target = gaussian_target(2)
    x = torch.zeros(3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"option variance='bad' of sampler 'ddpm' is not one of"):
        convergence.sample("ddpm", target.score_fn(VP()), VP(), x, 3, variance="bad")
    with pytest.raises(ValueError, match="unknown sampler 'nope'; registered: ddpm, ddim"):
        convergence.sample("nope", target.score_fn(VP()), VP(), x, 3)


def test_denoised_output_is_compared_with_the_pushed_reference():
    """With denoise=True the reference is the law of the exact Tweedie denoiser of X ~ q_t_end:
    a fine Heun run then has a tiny error, while the undenoised marginal is far from it."""
    target, vp = gaussian_target(2), VP()
    est = convergence.error("ode-heun", target, vp, 1000, metric="w2", denoise=True)
    assert est.value < 3e-6 and est.nfe == 2001  # Heun without denoise: 2.0e-6 at T=1000
    x = target.noised(vp, 1.0).sample(2000, seed=0)
    out = convergence.sample("ode-heun", target.score_fn(vp), vp, x, 50, denoise=True)
    assert out.info["denoised"] and out.nfe == 101
    # the denoised law is narrower than q_t_end: W2 between the two is of order sigma(t_end)^2
    ref = exact.law_of(target.noised(vp, vp.t_end_default))
    pushed = exact.push_forward(
        lambda y: convergence.samplers.tweedie(target.score_fn(vp), vp, y, vp.t_end_default), ref
    )
    gap = float(exact.distance("w2", ref, pushed).value)
    assert gap > 50 * est.value  # gap = 2.0e-4


def test_brownian_noise_makes_em_strongly_convergent():
    """Runs with T and 2T steps on one Brownian path: |x_T - x_2T| halves per doubling."""
    target, vp = gaussian_target(2), VP()
    x = target.noised(vp, 1.0).sample(500, seed=0)
    outs = {
        T: convergence.sample("em", target.score_fn(vp), vp, x, T, noise="brownian").x
        for T in (40, 80, 160, 320)
    }
    gaps = [float((outs[T] - outs[2 * T]).norm(dim=1).mean()) for T in (40, 80, 160)]
    assert 1.7 < gaps[0] / gaps[1] < 2.3 and 1.7 < gaps[1] / gaps[2] < 2.3
    independent = convergence.sample("em", target.score_fn(vp), vp, x, 320).x
    assert float((independent - outs[160]).norm(dim=1).mean()) > 5 * gaps[2]
