import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from analytic.gmm import GaussianMixture
from analytic.processes import VE, VP

KINDS = ("isotropic", "diagonal", "full")


def random_mixture(seed: int, K: int, d: int, kind: str) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(K, generator=g, dtype=torch.float64) + 0.2
    mu = 2.0 * torch.randn(K, d, generator=g, dtype=torch.float64)
    if kind == "isotropic":
        cov = torch.rand(K, generator=g, dtype=torch.float64) + 0.3
    elif kind == "diagonal":
        cov = torch.rand(K, d, generator=g, dtype=torch.float64) + 0.3
    else:
        A = torch.randn(K, d, d, generator=g, dtype=torch.float64)
        cov = A @ A.transpose(-1, -2) / d + 0.3 * torch.eye(d, dtype=torch.float64)
    return GaussianMixture(w / w.sum(), mu, cov)


mixtures = st.builds(
    random_mixture,
    seed=st.integers(0, 10_000),
    K=st.integers(1, 4),
    d=st.integers(1, 5),
    kind=st.sampled_from(KINDS),
)


@given(gmm=mixtures, seed=st.integers(0, 1000))
def test_score_is_gradient_of_log_prob(gmm, seed):
    g = torch.Generator().manual_seed(seed)
    x = (3.0 * torch.randn(7, gmm.dim, generator=g, dtype=torch.float64)).requires_grad_(True)
    (grad,) = torch.autograd.grad(gmm.log_prob(x).sum(), x)
    assert torch.allclose(gmm.score(x.detach()), grad, rtol=1e-10, atol=1e-10)


@given(gmm=mixtures, seed=st.integers(0, 1000))
def test_hessian_is_jacobian_of_score(gmm, seed):
    g = torch.Generator().manual_seed(seed)
    x = 3.0 * torch.randn(5, gmm.dim, generator=g, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda y: gmm.score(y).sum(0), x)  # (d, n, d)
    assert torch.allclose(gmm.hessian(x), jac.permute(1, 0, 2), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_log_prob_matches_scipy(kind):
    gmm = random_mixture(3, 3, 4, kind)
    x = torch.randn(11, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    covs = gmm.covariance_matrices().numpy()
    dens = sum(
        float(gmm.weights[k])
        * stats.multivariate_normal(gmm.means[k].numpy(), covs[k]).pdf(x.numpy())
        for k in range(3)
    )
    np.testing.assert_allclose(gmm.log_prob(x).numpy(), np.log(dens), rtol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_batch_shapes_and_dtypes(kind):
    gmm = random_mixture(5, 2, 3, kind)
    x = torch.randn(2, 4, 3, dtype=torch.float64)
    assert gmm.log_prob(x).shape == (2, 4)
    assert gmm.score(x).shape == (2, 4, 3)
    assert gmm.hessian(x).shape == (2, 4, 3, 3)
    flat = gmm.score(x.reshape(8, 3)).reshape(2, 4, 3)
    assert torch.equal(gmm.score(x), flat)
    s32 = gmm.score(x.float())
    assert s32.dtype == torch.float32
    assert torch.allclose(s32.double(), gmm.score(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("process", [VP(), VE()], ids=["vp", "ve"])
def test_noised_agrees_with_noising_samples(kind, process):
    """Moments and a KS test of alpha x0 + sigma xi against the closed-form noised mixture."""
    gmm = random_mixture(7, 3, 2, kind)
    t = 0.3
    n = 200_000
    x0 = gmm.sample(n, seed=11)
    xi = torch.randn(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(12))
    xt = process.alpha(t) * x0 + process.sigma(t) * xi
    pt = gmm.noised(process, t)
    se_mean = torch.sqrt(torch.diagonal(pt.covariance()) / n)
    assert (torch.abs(xt.mean(0) - pt.mean()) < 5 * se_mean).all()
    cov_emp = torch.cov(xt.T)
    scale = torch.sqrt(
        torch.outer(torch.diagonal(pt.covariance()), torch.diagonal(pt.covariance()))
    )
    assert (torch.abs(cov_emp - pt.covariance()) < 6 * scale * math.sqrt(2.0 / n) * 2).all()
    # distribution of the first coordinate: KS against the exact mixture CDF of the marginal
    covs = pt.covariance_matrices()
    w, m, sd = pt.weights.numpy(), pt.means[:, 0].numpy(), covs[:, 0, 0].sqrt().numpy()
    cdf = lambda y: sum(w[k] * stats.norm.cdf(y, m[k], sd[k]) for k in range(3))  # noqa: E731
    assert stats.kstest(xt[:20_000, 0].numpy(), cdf).pvalue > 1e-3


def test_sample_moments_and_reproducibility():
    gmm = random_mixture(2, 3, 3, "full")
    x = gmm.sample(100_000, seed=4)
    assert torch.equal(x, gmm.sample(100_000, seed=4))
    assert not torch.equal(x, gmm.sample(100_000, seed=5))
    se = torch.sqrt(torch.diagonal(gmm.covariance()) / 100_000)
    assert (torch.abs(x.mean(0) - gmm.mean()) < 5 * se).all()
    assert gmm.sample(3, seed=0, dtype=torch.float32).dtype == torch.float32


def test_denoiser_is_posterior_mean_for_gaussian():
    """For x0 ~ N(mu, S): E[x0 | xt] = mu + a S (a^2 S + b^2 I)^{-1} (xt - a mu)."""
    mu = torch.tensor([[1.0, -0.5]], dtype=torch.float64)
    S = torch.tensor([[[1.0, 0.3], [0.3, 0.5]]], dtype=torch.float64)
    gmm = GaussianMixture([1.0], mu, S)
    vp, t = VP(), 0.4
    a, b = vp.alpha(t), vp.sigma(t)
    x = torch.randn(6, 2, dtype=torch.float64)
    C = a * a * S[0] + b * b * torch.eye(2, dtype=torch.float64)
    expected = mu + (a * S[0] @ torch.linalg.solve(C, (x - a * mu).T)).T
    assert torch.allclose(gmm.denoiser(vp)(x, t), expected, rtol=1e-12, atol=1e-12)
    assert torch.allclose(gmm.score_fn(vp)(x, t), gmm.noised(vp, t).score(x), rtol=0, atol=0)


def test_far_points_are_stable():
    gmm = random_mixture(1, 4, 3, "full")
    x = torch.full((2, 3), 1e3, dtype=torch.float64)
    assert torch.isfinite(gmm.log_prob(x)).all() and torch.isfinite(gmm.score(x)).all()
    assert torch.isfinite(gmm.hessian(x)).all()


S_BAD = [[[1.0, 0.5], [0.4, 1.0]]]


@pytest.mark.parametrize(
    "args, message",
    [
        (([0.5, 0.6], [[0.0], [1.0]], [1.0, 1.0]), "sum to 1 within 1e-9"),
        (([1.2, -0.2], [[0.0], [1.0]], [1.0, 1.0]), "weights must be positive"),
        (([1.0], [[0.0, 0.0]], S_BAD), "symmetric"),
        (([1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]]), "not positive definite"),
        (([1.0], [[0.0, 0.0]], [-1.0]), "covariances must be positive"),
        (([1.0], [[0.0, 0.0]], [[1.0, 0.0]]), "must be positive"),
        (([1.0], [[0.0, 0.0]], [[1.0, 1.0, 1.0]]), r"covariances must have shape"),
        (([0.5, 0.5], [[0.0, 0.0]], [1.0, 1.0]), r"means must have shape \(K, d\) = \(2, d\)"),
        (([1.0], [[float("nan"), 0.0]], [1.0]), "means must be finite"),
        (([1.0], [[0.0, 0.0]], [float("inf")]), "covariances must be finite"),
        (([[1.0]], [[0.0]], [1.0]), r"weights must have shape \(K,\)"),
    ],
)
def test_validation(args, message):
    with pytest.raises(ValueError, match=message):
        GaussianMixture(*args)


def test_input_validation():
    gmm = random_mixture(0, 2, 3, "isotropic")
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\)"):
        gmm.score(torch.zeros(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="floating-point"):
        gmm.log_prob(torch.zeros(4, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="time must be a scalar"):
        gmm.noised(VP(), torch.rand(4))
    with pytest.raises(ValueError, match=r"per-sample times must have shape \(4,\)"):
        gmm.score_fn(VP())(torch.zeros(4, 3, dtype=torch.float64), torch.rand(3))


@pytest.mark.parametrize("kind", KINDS)
def test_per_sample_times_match_scalar_times(kind):
    """score(x, t) with one time per row equals the row-by-row scalar-time score."""
    gmm = random_mixture(9, 3, 3, kind)
    vp = VP()
    x = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([1e-3, 0.1, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64)
    score = gmm.score_fn(vp)
    rows = torch.stack([score(x[i : i + 1], float(t[i]))[0] for i in range(6)])
    assert torch.allclose(score(x, t), rows, rtol=1e-11, atol=1e-11)
    with pytest.raises(ValueError, match=r"per-sample times must have shape \(6,\)"):
        score(x, t[:3])
