"""Tests of the sample-based distances: debiased Sinkhorn, sliced W2, MMD, k-NN KL, the dispatch.

Golden values are closed forms: translations (S_eps = |delta|^2 exactly, SW2 = |delta| / sqrt(d)),
KL between Gaussians (|delta|^2 / 2), Gaussian-kernel integrals checked against Monte Carlo and
brute-force U-statistics, and POT's primal entropic objective.
"""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch

from analytic.gmm import GaussianMixture
from analytic.product import ProductMixture
from convergence import metrics
from convergence.metrics import SAMPLE_METRICS, SampleEstimate, sample_distance, w2_samples
from convergence.sample_metrics import (
    entropic_ot,
    gaussian_kernel_inner,
    kernel_mean_embedding,
    knn_kl,
    mmd2_unbiased,
    sinkhorn_divergence,
    sliced_w2,
)


def standard(d: int) -> GaussianMixture:
    return GaussianMixture([1.0], torch.zeros(1, d), torch.ones(1))


def sampler(law: GaussianMixture):
    return lambda n, seed: law.sample(n, seed=seed)


def shifted_sample(d: int, n: int, shift: float, seed: int, coords: int = 1) -> torch.Tensor:
    """n draws of N(delta, I_d), delta = shift in the first ``coords`` coordinates."""
    delta = torch.zeros(d, dtype=torch.float64)
    delta[:coords] = shift
    return standard(d).sample(n, seed=seed) + delta


# ---- sliced W2 --------------------------------------------------------------------------------


def test_sliced_w2_of_a_translation_is_shift_over_sqrt_d() -> None:
    # same points shifted: every projected W2 is |theta . delta| exactly, so only the direction
    # average is random: E (theta . e1)^2 = 1/d, relative sd of the mean over L = 20000 directions
    # sqrt(Var cos^2 = 1/8) / (1/2) / sqrt(L) = 0.35% in d = 2
    x = np.random.default_rng(0).standard_normal((300, 2))
    value = sliced_w2(x, x + [0.3, 0.0], n_directions=20000, seed=1)
    assert value == pytest.approx(0.3 / math.sqrt(2.0), rel=0.01)


def test_sliced_w2_in_1d_is_w2() -> None:
    # both code paths: equal sizes (sorted pairs) and unequal sizes (POT's 1-D solver)
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((200, 1)), rng.exponential(size=(150, 1))
    assert sliced_w2(x, y, n_directions=7, seed=0) == pytest.approx(w2_samples(x, y), abs=1e-12)
    assert sliced_w2(x[:150], y, n_directions=3) == pytest.approx(w2_samples(x[:150], y), abs=1e-12)


def test_sliced_w2_estimate_of_shifted_gaussians() -> None:
    # SW2(N(0, I_2), N(0.3 e1, I_2)) = 0.3 sqrt(E (theta . e1)^2) = 0.3 / sqrt(2)
    law = standard(2)
    est = sample_distance(
        "sliced-w2", shifted_sample(2, 4000, 0.3, 5), sample_reference=sampler(law), seed=3
    )
    assert est.metric == "sliced-w2" and est.n == 4000 and 0.0 < est.floor < 0.06
    assert abs(est.value - 0.3 / math.sqrt(2.0)) <= est.ci + est.floor


# ---- MMD --------------------------------------------------------------------------------------


def mixtures() -> tuple[GaussianMixture, GaussianMixture]:
    a = GaussianMixture(
        [0.3, 0.7], [[1.0, -0.5], [-0.5, 0.2]], [[[1.0, 0.3], [0.3, 0.5]], [[0.4, 0.0], [0.0, 2.0]]]
    )
    b = GaussianMixture([0.2, 0.5, 0.3], [[0.0, 0.0], [1.0, 1.0], [-1.0, 0.5]], [[0.5, 1.0]] * 3)
    return a, b


def test_kernel_integrals_match_monte_carlo() -> None:
    a, b = mixtures()
    ell = 0.8
    n = 200_000
    X, Y = a.sample(n, seed=1), b.sample(n, seed=2)
    k = torch.exp(-((X - Y) ** 2).sum(1) / (2 * ell**2))
    se = float(k.std()) / math.sqrt(n)
    assert abs(gaussian_kernel_inner(a, b, ell) - float(k.mean())) < 4 * se
    # the embedding at three points: mean of k(x, Y) over Y ~ b
    pts = torch.tensor([[0.0, 0.0], [1.5, -1.0], [-2.0, 2.0]], dtype=torch.float64)
    kk = torch.exp(-torch.cdist(pts, Y).square() / (2 * ell**2))
    se = kk.std(1) / math.sqrt(n)
    assert torch.all((kernel_mean_embedding(b, pts, ell) - kk.mean(1)).abs() < 4 * se)


def test_kernel_inner_diagonal_full_and_product_paths_agree() -> None:
    _, b = mixtures()
    full = GaussianMixture(b.weights, b.means, b.covariance_matrices())
    assert gaussian_kernel_inner(b, b, 0.7) == pytest.approx(
        gaussian_kernel_inner(full, full, 0.7), rel=1e-12
    )
    f1 = GaussianMixture([0.4, 0.6], [[-1.0], [0.5]], [0.3, 1.2])
    f2 = GaussianMixture([0.5, 0.5], [[0.0], [2.0]], [1.0, 0.2])
    prod = ProductMixture.of([f1, f2])
    # the equivalent 4-component diagonal mixture of the product
    w = torch.outer(f1.weights, f2.weights).reshape(-1)
    m = torch.cartesian_prod(f1.means[:, 0], f2.means[:, 0])
    v = torch.cartesian_prod(f1.covariance_matrices()[:, 0, 0], f2.covariance_matrices()[:, 0, 0])
    flat = GaussianMixture(w, m, v)
    assert gaussian_kernel_inner(prod, prod, 0.9) == pytest.approx(
        gaussian_kernel_inner(flat, flat, 0.9), rel=1e-12
    )


def test_mmd_closed_form_matches_brute_force_u_statistic() -> None:
    # x ~ p = N(0.3 e1, 1.2 I_2); reference q = N(0, I_2). The closed-form estimator and the
    # brute-force two-sample U-statistic with m = 4000 reference points share the x-x term and
    # differ only through the reference terms, whose spread is 2 sd(mu_x(Y) - mu_q(Y)) / sqrt(m).
    torch.manual_seed(0)
    q = standard(2)
    x = 1.2**0.5 * q.sample(1000, seed=4) + torch.tensor([0.3, 0.0], dtype=torch.float64)
    ell = 1.0
    closed, var = mmd2_unbiased(x, q, bandwidth=ell)
    Y = q.sample(4000, seed=5)

    def gram(a, b):
        return torch.exp(-torch.cdist(a, b).square() / (2 * ell**2))

    n, m = len(x), len(Y)
    kxx = gram(x, x)
    kyy = gram(Y, Y)
    kxy = gram(x, Y)
    brute = (
        (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        - 2 * kxy.mean()
        + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    )
    spread = 2 * float((kxy.mean(0) - kernel_mean_embedding(q, Y, ell)).std()) / math.sqrt(m)
    assert abs(closed - float(brute)) < 4 * spread
    # and the population value (closed-form inner products of two Gaussians) within the CI
    p = GaussianMixture([1.0], [[0.3, 0.0]], [1.2])
    exact = (
        gaussian_kernel_inner(p, p, ell)
        - 2 * gaussian_kernel_inner(p, q, ell)
        + gaussian_kernel_inner(q, q, ell)
    )
    assert abs(closed - exact) < 1.96 * math.sqrt(var)
    assert 0.005 < exact < 0.05  # a real signal, well above the spread


def test_mmd_estimate_has_ci_and_floor() -> None:
    law = standard(2)
    x = shifted_sample(2, 2000, 0.3, 6)
    est = sample_distance("mmd", x, sample_reference=sampler(law), reference_law=law, seed=0)
    p = GaussianMixture([1.0], [[0.3, 0.0]], [1.0])
    ell = math.sqrt(2.0)  # default bandwidth sqrt(tr Cov_q)
    exact = (
        gaussian_kernel_inner(p, p, ell)
        - 2 * gaussian_kernel_inner(p, law, ell)
        + gaussian_kernel_inner(law, law, ell)
    )
    assert est.metric == "mmd" and 0.0 < est.floor < 1e-3 and est.ci > 0
    assert abs(est.value - exact) <= est.ci + est.floor


# ---- k-NN KL ----------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 2])
def test_knn_kl_of_shifted_gaussians(d: int) -> None:
    # KL(N(0, I) || N(delta, I)) = |delta|^2 / 2 = 0.125 d for delta = 0.5 in every coordinate
    law = standard(d)
    x = shifted_sample(d, 4000, 0.5, 7, coords=d)
    est = sample_distance("kl", x, sample_reference=sampler(law), reference_law=law, seed=1)
    assert est.metric == "kl" and 0.0 < est.floor < 0.05
    assert abs(est.value - 0.125 * d) <= est.ci + est.floor


def test_knn_kl_uses_the_beta_bias_correction() -> None:
    # one output point at 0 and reference points y: r_1(y) = |y|, V_1 = 2, so in d = 1
    # p_hat(y) = exp(psi(1) - psi(2)) / (2 |y|) and, with psi(2) - psi(1) = 1,
    # KL_hat = mean(log q(y) + log(2 |y|)) + 1
    y = np.array([[0.5], [-1.0], [2.0]])
    log_q = np.array([-1.0, -2.0, -3.0])
    expected = np.mean(log_q + np.log(2 * np.abs(y[:, 0]))) + 1.0
    assert knn_kl(np.zeros((1, 1)), y, log_q, k=1) == pytest.approx(expected, abs=1e-12)


# ---- debiased Sinkhorn ------------------------------------------------------------------------


def test_entropic_ot_equals_pot_primal_objective() -> None:
    # OT_eps = <P, C> + eps KL(P | a b) at POT's log-domain optimum (independent solver)
    rng = np.random.default_rng(8)
    x, y = rng.standard_normal((60, 2)), rng.standard_normal((50, 2)) + 0.4
    eps = 0.5
    a, b = np.full(60, 1 / 60), np.full(50, 1 / 50)
    C = ot.dist(x, y)
    P = ot.sinkhorn(a, b, C, eps, method="sinkhorn_log", stopThr=1e-13, numItermax=100_000)
    primal = float(np.sum(P * C) + eps * np.sum(P * np.log(P / np.outer(a, b))))
    assert entropic_ot(x, y, eps=eps, tol=1e-10) == pytest.approx(primal, rel=1e-8)
    Pxx = ot.sinkhorn(a, a, ot.dist(x, x), eps, method="sinkhorn_log", stopThr=1e-13)
    primal_xx = float(np.sum(Pxx * ot.dist(x, x)) + eps * np.sum(Pxx * np.log(Pxx * 60 * 60)))
    assert entropic_ot(x, x, eps=eps, tol=1e-10) == pytest.approx(primal_xx, rel=1e-8)


def test_sinkhorn_divergence_of_a_translation_is_exact() -> None:
    # S(x, y + delta) = S(x, y) + |delta|^2 - 2 delta.(mean x - mean y); S(x, copy of x) = 0;
    # a shift far beyond the blur forces the epsilon-scaling fallback of the cross problem
    rng = np.random.default_rng(9)
    x, y = rng.standard_normal((300, 2)), rng.standard_normal((250, 2))
    base = sinkhorn_divergence(x, y, eps=0.3)
    for delta in (np.array([0.3, 0.0]), np.array([30.0, -10.0])):
        expected = base + delta @ delta - 2 * delta @ (x.mean(0) - y.mean(0))
        assert sinkhorn_divergence(x, y + delta, eps=0.3) == pytest.approx(expected, abs=1e-7)
    assert abs(sinkhorn_divergence(x, x.copy(), eps=0.3)) < 1e-8
    assert base > 0


def test_sinkhorn_estimate_zero_for_equal_laws_and_grows_with_shift() -> None:
    law = standard(2)
    values = []
    for shift in (0.0, 0.3, 0.6):
        x = shifted_sample(2, 400, shift, 10)
        est = sample_distance("sinkhorn", x, sample_reference=sampler(law), seed=2)
        assert est.metric == "sinkhorn" and est.floor > 0 and "eps=" in est.note
        # sqrt(S_eps) of a translation is the shift at every eps
        assert abs(est.value - shift) <= est.ci + est.floor
        values.append(est.value)
    assert values[0] < values[1] < values[2]


# ---- floors, W2, dispatch, validation ---------------------------------------------------------


@pytest.mark.parametrize(
    "metric, params", [("sliced-w2", {"n_directions": 200}), ("mmd", {}), ("kl", {})]
)
def test_floors_decrease_with_n(metric: str, params: dict) -> None:
    law = standard(2)
    floors = [
        sample_distance(
            metric,
            law.sample(n, seed=11),
            sample_reference=sampler(law),
            reference_law=law,
            seed=4,
            repeats=8,
            **params,
        ).floor
        for n in (250, 2000)
    ]
    assert floors[1] < 0.7 * floors[0]  # n^(-1/2) (sliced, kl) or n^(-1) (mmd): 0.35 or 0.13


def test_sinkhorn_floor_decreases_with_n() -> None:
    law = standard(1)
    floors = [
        sample_distance(
            "sinkhorn", law.sample(n, seed=12), sample_reference=sampler(law), seed=5
        ).floor
        for n in (60, 480)
    ]
    assert floors[1] < 0.7 * floors[0]


def test_w2_estimate_2d_within_floor_and_ci_of_exact() -> None:
    law = standard(2)
    x = shifted_sample(2, 500, 0.5, 13)
    est = sample_distance("w2", x, sample_reference=sampler(law), seed=6)
    assert isinstance(est, SampleEstimate) and est.ci > 0 and est.floor > 0
    assert abs(est.value - 0.5) <= est.ci + est.floor  # W2 of a translation = |delta|
    again = metrics.w2_against_reference(x, sampler(law), seed=6)
    assert again == est


def test_memory_guard_refuses_large_dense_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    big = np.zeros((16_000, 2))
    with pytest.raises(ValueError, match="sliced-w2"):
        w2_samples(big, big)
    monkeypatch.setattr(metrics, "MAX_MATRIX_BYTES", 1e5)
    x = np.random.default_rng(0).standard_normal((100, 2))
    with pytest.raises(ValueError, match="sinkhorn with n=100"):
        sinkhorn_divergence(x, x + 1, eps=1.0)


def test_sample_metrics_names_and_determinism() -> None:
    assert SAMPLE_METRICS == ("w2", "sinkhorn", "sliced-w2", "mmd", "kl")
    law = standard(1)
    x = shifted_sample(1, 300, 0.2, 14)
    kw = dict(sample_reference=sampler(law), reference_law=law, seed=9)
    first = sample_distance("kl", x, **kw)
    assert first == sample_distance("kl", x, **kw)
    assert first != sample_distance("kl", x, **{**kw, "seed": 10})


@pytest.mark.parametrize(
    "metric, kwargs, message",
    [
        ("w3", {}, "metric must be one of w2, sinkhorn, sliced-w2, mmd, kl"),
        ("mmd", {"reference_law": None}, "needs reference_law"),
        ("kl", {"reference_law": None}, "needs reference_law"),
        ("kl", {"reference_law": "gmm"}, "GaussianMixture or ProductMixture"),
        ("mmd", {"bandwidth": 0.0}, "bandwidth must be a positive finite number"),
        ("sinkhorn", {"eps": -1.0}, "eps must be a positive finite number"),
        ("sliced-w2", {"n_directions": 0}, "n_directions must be a positive integer"),
        ("kl", {"k": 0}, r"k must be an integer in \[1, n\]"),
        ("kl", {"k": 51}, r"k must be an integer in \[1, n\]"),
        ("w2", {"repeats": 1}, "repeats must be an integer >= 2"),
        ("mmd", {"k": 3}, "unknown parameter"),
        ("sliced-w2", {"seed": -1}, "seed must be a non-negative integer"),
    ],
)
def test_invalid_input_raises(metric: str, kwargs: dict, message: str) -> None:
    law = standard(2)
    args = dict(sample_reference=sampler(law), reference_law=law, seed=0) | kwargs
    with pytest.raises(ValueError, match=message):
        sample_distance(metric, np.zeros((50, 2)) + np.arange(50)[:, None], **args)


def test_dimension_mismatch_raises() -> None:
    law = standard(2)
    x = np.random.default_rng(0).standard_normal((20, 3))
    for metric in ("sliced-w2", "mmd", "kl"):
        with pytest.raises(ValueError, match="dimension"):
            sample_distance(metric, x, sample_reference=sampler(law), reference_law=law, seed=0)
