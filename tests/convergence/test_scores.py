import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch.func import jacfwd, jvp, vmap

from analytic.gmm import GaussianMixture
from analytic.processes import make_process
from convergence.scores import (
    KINDS,
    PERTURBATIONS,
    Bias,
    ScoreError,
    Sine,
    WrongMixture,
    parse_perturbation,
    perturbed_score,
    score_error,
)
from convergence.targets import parse_target

VP, VE = make_process("vp"), make_process("ve")
TARGET3 = parse_target("gmm:d=3,k=3,seed=0")  # full covariances
SPECS = (
    "bias:eps=0.1",
    "sin:eps=0.05,omega=4",
    "sin:eps=0.1,omega=0.7,phase=0.4",
    "sigma-power:eps=0.1,power=1",
    "sigma-power:eps=0.1,power=0.5,omega=0.7,phase=-1.2",
    "mixture:weights=0.3,means=0.2,covs=0.2,seed=3",
)
EXACT_SPECS = SPECS[:-1]


def _points(target, t, n, seed=1):
    return target.noised(VP, t).sample(n, seed=seed)


def _brute_force(p, target, process, t, n, seed):
    """E|delta|^2 and E||grad delta||_F^2 under q_t from n exact samples, the Jacobian by
    forward-mode autodiff (independent of p.jacobian); means and 95% half-widths."""
    x = target.noised(process, t).sample(n, seed=seed)
    a = p.delta(x, t, process).square().sum(-1)
    b = vmap(jacfwd(lambda y: p.delta(y, t, process)))(x).square().sum((-2, -1))
    return [(float(v.mean()), 1.96 * float(v.std()) / math.sqrt(n)) for v in (a, b)]


@pytest.mark.parametrize("spec", EXACT_SPECS)
def test_closed_form_sizes_match_brute_force_monte_carlo(spec):
    p = parse_perturbation(spec, TARGET3)
    for t, seed in ((0.05, 11), (0.6, 12)):
        s2, j2 = p.moments(TARGET3.noised(VP, t), t, VP)
        (ms, hs), (mj, hj) = _brute_force(p, TARGET3, VP, t, 40000, seed)
        # deterministic seeds; tolerance two 95% half-widths (about 4 standard errors)
        assert abs(s2 - ms) <= 2 * hs + 1e-15
        assert abs(j2 - mj) <= 2 * hj + 1e-15
    if spec.startswith("sin:eps=0.1,omega=0.7"):
        # teeth: the Gaussian correction exp(-2 w^2 v) cos(...) is many half-widths away from
        # the "spread-out" value eps^2 (and eps^2 omega^2) the formula would give without it
        assert abs(s2 - 0.1**2) > 10 * hs
        assert abs(j2 - 0.1**2 * 0.49) > 10 * hj


def test_sin_sizes_match_quadrature_in_1d():
    target = parse_target("gmm:d=1,k=3,seed=0")
    p = parse_perturbation("sin:eps=0.2,omega=0.8,phase=0.3", target)
    amp2 = 2.0 * 0.2**2  # (eps sqrt(2/d))^2 with d = 1
    for t in (0.02, 0.4):
        q = target.noised(VP, t)
        w, m, v = q.weights.numpy(), q.means[:, 0].numpy(), q.cov.reshape(-1).numpy()

        def dens(x, w=w, m=m, v=v):
            return float(np.sum(w * stats.norm.pdf(x, m, np.sqrt(v))))

        s2 = integrate.quad(lambda x: amp2 * math.sin(0.8 * x + 0.3) ** 2 * dens(x), -15, 15)
        j2 = integrate.quad(
            lambda x: amp2 * (0.8 * math.cos(0.8 * x + 0.3)) ** 2 * dens(x), -15, 15
        )
        got = p.moments(q, t, VP)
        assert got[0] == pytest.approx(s2[0], rel=1e-10)
        assert got[1] == pytest.approx(j2[0], rel=1e-10)


def test_wrong_mixture_sizes_match_quadrature_in_1d():
    target = parse_target("gmm:d=1,k=3,seed=0")
    p = parse_perturbation("mixture:weights=0.4,means=0.3,covs=0.3,seed=1", target)
    times = [0.03, 0.5]
    err = score_error(target, VP, p, times, n=20000, seed=0)
    s2, j2 = [], []
    for t in times:
        q, qw = target.noised(VP, t), p.wrong.noised(VP, t)

        def delta(x, q=q, qw=qw):
            y = torch.tensor([[x]], dtype=torch.float64)
            return float(qw.score(y) - q.score(y))

        def ddelta(x, q=q, qw=qw):  # d delta / dx by autograd, independent of .hessian
            y = torch.tensor([[x]], dtype=torch.float64, requires_grad=True)
            (g,) = torch.autograd.grad((qw.score(y) - q.score(y)).sum(), y)
            return float(g)

        def dens(x, q=q):
            return math.exp(float(q.log_prob(torch.tensor([[x]], dtype=torch.float64))))

        s2.append(integrate.quad(lambda x: delta(x) ** 2 * dens(x), -12, 12, limit=200)[0])
        j2.append(integrate.quad(lambda x: ddelta(x) ** 2 * dens(x), -12, 12, limit=200)[0])
    assert not err.exact and err.n_samples == 20000
    assert 0 < err.eps_score_ci < 0.05 * err.eps_score
    assert abs(err.eps_score - math.sqrt(np.mean(s2))) <= 2 * err.eps_score_ci
    assert abs(err.eps_jacobi - math.sqrt(np.mean(j2))) <= 2 * err.eps_jacobi_ci
    np.testing.assert_allclose(err.eps_score2_t, s2, rtol=0.1)


@pytest.mark.parametrize("spec", ("sin:eps=0.1,omega=0.7,phase=0.4", "sigma-power:eps=0.1,power=1"))
def test_forced_monte_carlo_agrees_with_closed_form(spec):
    p = parse_perturbation(spec, TARGET3)
    times = [0.01, 0.3, 1.0]
    exact = score_error(TARGET3, VP, p, times)
    mc = score_error(TARGET3, VP, p, times, n=20000, seed=5, monte_carlo=True)
    assert exact.exact and exact.eps_score_ci == 0 and exact.eps_jacobi_ci == 0
    assert not mc.exact and "Monte Carlo" in mc.method
    assert abs(mc.eps_score - exact.eps_score) <= 2 * mc.eps_score_ci + 1e-15
    assert abs(mc.eps_jacobi - exact.eps_jacobi) <= 2 * mc.eps_jacobi_ci + 1e-15
    # the aggregate is the mean over the grid of the per-time terms
    assert exact.eps_score**2 == pytest.approx(exact.eps_score2_t.mean(), rel=1e-14)
    assert exact.eps_jacobi**2 == pytest.approx(exact.eps_jacobi2_t.mean(), rel=1e-14)


def test_bias_and_sigma_power_sizes_in_closed_form():
    times = [1e-3, 0.1, 0.5, 1.0]
    err = score_error(TARGET3, VP, parse_perturbation("bias:eps=0.03", TARGET3), times)
    assert (err.eps_score, err.eps_jacobi, err.exact) == (0.03, 0.0, True)
    sp = parse_perturbation("sigma-power:eps=0.03,power=1.5", TARGET3)
    for process in (VP, VE):
        err = score_error(TARGET3, process, sp, times)
        want = 0.03 * math.sqrt(np.mean([process.sigma(t) ** -3.0 for t in times]))
        assert err.eps_score == pytest.approx(want, rel=1e-13)
        assert err.eps_jacobi == 0.0
    none = score_error(TARGET3, VP, None, times)
    assert (none.eps_score, none.eps_jacobi, none.exact) == (0.0, 0.0, True)


def test_wrong_mixture_parameters_follow_the_documented_draws():
    p = parse_perturbation("mixture:weights=0.3,means=0.2,covs=0.5,seed=7", TARGET3)
    rng = np.random.default_rng(7)
    z, xi, zeta = rng.standard_normal(3), rng.standard_normal((3, 3)), rng.standard_normal(3)
    w = TARGET3.weights.numpy() * np.exp(0.3 * z)
    np.testing.assert_allclose(p.wrong.weights.numpy(), w / w.sum(), rtol=1e-14)
    np.testing.assert_allclose(p.wrong.means.numpy(), TARGET3.means.numpy() + 0.2 * xi, rtol=1e-14)
    cov = TARGET3.covariance_matrices().numpy() * np.exp(0.5 * zeta)[:, None, None]
    np.testing.assert_allclose(p.wrong.covariance_matrices().numpy(), cov, rtol=1e-12)
    zero = parse_perturbation("mixture:", TARGET3)
    x = _points(TARGET3, 0.2, 50)
    assert zero.delta(x, 0.2, VP).abs().max() < 1e-14
    assert score_error(TARGET3, VP, zero, [0.2], n=100).eps_score < 1e-14


@pytest.mark.parametrize("spec", SPECS)
def test_delta_is_differentiable_and_jacobian_is_stated(spec):
    p = parse_perturbation(spec, TARGET3)
    x = _points(TARGET3, 0.3, 6)
    J = p.jacobian(x, 0.3, VP)
    auto = vmap(jacfwd(lambda y: p.delta(y, 0.3, VP)))(x)
    torch.testing.assert_close(auto, J, rtol=1e-10, atol=1e-12)
    v = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    _, tangent = vmap(lambda y, u: jvp(lambda z: p.delta(z, 0.3, VP), (y,), (u,)))(x, v)
    torch.testing.assert_close(tangent, torch.einsum("nij,nj->ni", J, v), rtol=1e-10, atol=1e-12)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(p.delta(xg, 0.3, VP).sum(), xg)  # sum_i d delta_i / d x_j
    torch.testing.assert_close(grad, J.sum(1), rtol=1e-10, atol=1e-12)
    assert p.delta(x.float(), 0.3, VP).dtype == torch.float32


@pytest.mark.parametrize("process", (VP, VE), ids=("vp", "ve"))
@pytest.mark.parametrize("spec", SPECS)
def test_per_sample_times_equal_scalar_times_row_by_row(spec, process):
    p = parse_perturbation(spec, TARGET3)
    x = _points(TARGET3, 0.3, 5)
    t = torch.tensor([0.01, 0.2, 0.2, 0.7, 1.0], dtype=torch.float64)
    rows = torch.cat([p.delta(x[i : i + 1], float(t[i]), process) for i in range(5)])
    torch.testing.assert_close(p.delta(x, t, process), rows, rtol=1e-12, atol=1e-13)
    jac = torch.cat([p.jacobian(x[i : i + 1], float(t[i]), process) for i in range(5)])
    torch.testing.assert_close(p.jacobian(x, t, process), jac, rtol=1e-12, atol=1e-13)
    score = perturbed_score(TARGET3, process, p)
    rows = torch.cat([score(x[i : i + 1], float(t[i])) for i in range(5)])
    torch.testing.assert_close(score(x, t), rows, rtol=1e-12, atol=1e-12)


def test_perturbed_score_is_exact_score_plus_delta():
    x = _points(TARGET3, 0.4, 20)
    exact = TARGET3.score_fn(VP)
    assert torch.equal(perturbed_score(TARGET3, VP, None)(x, 0.4), exact(x, 0.4))
    for spec in SPECS:
        p = parse_perturbation(spec, TARGET3)
        got = perturbed_score(TARGET3, VP, p)(x, 0.4)
        torch.testing.assert_close(got, exact(x, 0.4) + p.delta(x, 0.4, VP), rtol=1e-12, atol=1e-12)
    other = parse_target("gmm:d=3,k=3,seed=1")
    with pytest.raises(ValueError, match="built for another target"):
        perturbed_score(other, VP, parse_perturbation(SPECS[-1], TARGET3))
    with pytest.raises(ValueError, match="3-dimensional, target is 2"):
        perturbed_score(parse_target("gaussian:d=2"), VP, Bias(3, 0.1))


@pytest.mark.parametrize("spec", EXACT_SPECS)
def test_coordinate_acts_like_column_of_delta(spec):
    d = 4
    target = GaussianMixture([1.0], [[0.5, -1.0, 0.0, 2.0]], [[0.3, 0.6, 1.0, 0.2]])  # a product
    p = parse_perturbation(spec, target)
    assert p.separable
    x = _points(target, 0.2, 30)
    t = 0.2
    full = p.delta(x, t, VP)
    total = [0.0, 0.0]
    for i in range(d):
        c = p.coordinate(i)
        assert c.dim == 1 and c.separable
        torch.testing.assert_close(c.delta(x[:, i : i + 1], t, VP), full[:, i : i + 1])
        marginal = GaussianMixture([1.0], target.means[:, i : i + 1], target.cov[:, i : i + 1])
        total = [
            a + b for a, b in zip(total, c.moments(marginal.noised(VP, t), t, VP), strict=True)
        ]
    # sizes of a product add up over coordinates
    assert total == pytest.approx(list(p.moments(target.noised(VP, t), t, VP)), rel=1e-12)


def test_mixture_is_separable_only_in_one_dimension():
    with pytest.raises(ValueError, match="not coordinate-separable"):
        parse_perturbation(SPECS[-1], TARGET3).coordinate(0)
    one = parse_perturbation("mixture:means=0.2", parse_target("gmm:d=1,k=2,seed=0"))
    assert one.separable and one.coordinate(0) is one
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        Sine(3, 0.1, 2.0).coordinate(3)


def test_specs_round_trip_and_listing():
    assert set(PERTURBATIONS) == set(KINDS) == {"bias", "sin", "sigma-power", "mixture", "learned"}
    for spec in SPECS:
        p = parse_perturbation(spec, TARGET3)
        assert p.spec == spec
        assert parse_perturbation(p.spec, TARGET3) == p
    assert parse_perturbation("sin:omega=4.0,eps=5e-2,phase=0", TARGET3).spec == SPECS[1]
    assert parse_perturbation("mixture:means=1", TARGET3).spec == (
        "mixture:weights=0,means=1,covs=0,seed=0"
    )
    assert isinstance(parse_perturbation("mixture:", TARGET3), WrongMixture)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("noise:eps=1", r"unknown perturbation 'noise'.*allowed: bias, sin, sigma-power, mixture"),
        ("sin:eps=1,omega=2,freq=3", r"bad parameter 'freq=3'.*sin takes eps, omega, phase"),
        ("bias:eps=1,eps=2", r"bad parameter 'eps=2'"),
        ("bias:eps", r"bad parameter 'eps'"),
        ("bias:eps=-0.1", r"eps must be >= 0, got -0.1"),
        ("sin:eps=0.1,omega=0", r"omega must be > 0, got 0.0"),
        ("sigma-power:eps=0.1,power=1,omega=-2", r"omega must be > 0"),
        ("sin:eps=abc,omega=1", r"parameter eps of perturbation .* must be a number, got 'abc'"),
        ("mixture:seed=1.5", r"parameter seed .* must be an integer, got '1.5'"),
        ("bias:eps=nan", r"eps must be a finite number"),
        ("mixture:covs=-1", r"covs must be >= 0"),
        ("sin:eps=0.1", r"missing omega"),
        ("sigma-power:eps=0.1,power=1,phase=0.2", r"phase needs omega"),
    ],
)
def test_validation_messages(spec, message):
    with pytest.raises(ValueError, match=message) as err:
        parse_perturbation(spec, TARGET3)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("times", ([0.0, 0.5], [0.5, 1.5], [], [float("nan")], ["a"]))
def test_times_outside_unit_interval_are_rejected(times):
    with pytest.raises(ValueError, match=r"times must be .*\(0, 1\]"):
        score_error(TARGET3, VP, Bias(3, 0.1), times)


def test_score_error_record():
    err = score_error(TARGET3, VP, Bias(3, 0.1), torch.tensor([0.5, 1.0]))
    assert isinstance(err, ScoreError)
    d = err.as_dict()
    assert d["times"] == [0.5, 1.0] and d["eps_score2_t"] == pytest.approx([0.01, 0.01])
    assert d["spec"] == "bias:eps=0.1" and d["method"].startswith("closed form")
    with pytest.raises(ValueError, match="n must be an integer >= 2"):
        score_error(TARGET3, VP, Bias(3, 0.1), [0.5], n=1)
