"""Tests of convergence.metrics: exact sample W2 and its noise floor."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from convergence.metrics import (
    SampleEstimate,
    w2_against_reference,
    w2_noise_floor,
    w2_samples,
)


def gaussian_sampler(mean: float, std: float, d: int = 1):
    """sample_reference(n, seed) for N(mean, std^2 I_d), float64 torch with its own generator."""

    def sample(n: int, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return mean + std * torch.randn(n, d, generator=gen, dtype=torch.float64)

    return sample


def test_1d_equals_quantile_coupling() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 1))
    y = 0.5 + 2.0 * rng.standard_t(4, size=(300, 1))
    quantile = math.sqrt(np.mean((np.sort(x[:, 0]) - np.sort(y[:, 0])) ** 2))
    assert w2_samples(x, y) == pytest.approx(quantile, abs=1e-10)
    # torch input is converted at the edge to float64 numpy
    from_torch = w2_samples(torch.from_numpy(x), torch.from_numpy(y))
    assert from_torch == pytest.approx(quantile, abs=1e-10)


def test_network_simplex_path_equals_quantile_coupling() -> None:
    # d = 1 uses POT's 1-D solver; embedding the samples in 2-D (zero second coordinate) sends
    # the same problem through ot.emd2 on the full cost matrix, which must give the same optimum
    rng = np.random.default_rng(8)
    x = rng.standard_normal(250)
    y = rng.exponential(size=250)
    quantile = math.sqrt(np.mean((np.sort(x) - np.sort(y)) ** 2))
    flat = np.zeros(250)
    assert w2_samples(np.c_[x, flat], np.c_[y, flat]) == pytest.approx(quantile, abs=1e-10)


def test_solver_failure_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    import convergence.metrics as metrics

    monkeypatch.setattr(metrics, "_NUM_ITER_MAX", 2)
    rng = np.random.default_rng(9)
    with pytest.raises(RuntimeError, match="did not reach the optimal"):
        w2_samples(rng.standard_normal((50, 2)), rng.standard_normal((50, 2)))


@pytest.mark.parametrize("d", [1, 3])
def test_translation_gives_shift_norm(d: int) -> None:
    rng = np.random.default_rng(11)
    x = rng.standard_normal((200, d))
    shift = np.linspace(0.3, -1.1, d)
    assert w2_samples(x + shift, x) == pytest.approx(np.linalg.norm(shift), abs=1e-10)
    assert w2_samples(x, x) == pytest.approx(0.0, abs=1e-7)  # sqrt of a rounding-level cost


def test_unequal_sizes_match_duplicated_sample() -> None:
    # duplicating every point of y leaves its empirical measure unchanged (m = 2n, weights 1/m)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((60, 2))
    y = rng.standard_normal((60, 2))
    assert w2_samples(x, np.concatenate([y, y])) == pytest.approx(w2_samples(x, y), abs=1e-10)


def test_two_gaussians_within_a_few_floors_of_exact() -> None:
    # exact W2(N(0, 1), N(1, 4)) = sqrt((m0 - m1)^2 + (s0 - s1)^2) = sqrt(1 + 1)
    n = 4000
    x = gaussian_sampler(1.0, 2.0)(n, 123)
    estimate = w2_against_reference(x, gaussian_sampler(0.0, 1.0), seed=7)
    assert isinstance(estimate, SampleEstimate) and estimate.n == n
    assert 0.0 < estimate.floor < 0.1  # THEORY.md 4.1: ~0.055 at n = 2000, smaller at 4000
    assert abs(estimate.value - math.sqrt(2.0)) < 3.0 * estimate.floor


def test_noise_floor_2d_matches_theory_table() -> None:
    floor = w2_noise_floor(gaussian_sampler(0.0, 1.0, d=2), 2000, seed=0)
    assert 0.08 <= floor <= 0.25  # THEORY.md 4.1: 0.151 for N(0, I_2) at n = 2000


def test_noise_floor_is_deterministic_and_averages_repeats() -> None:
    sampler = gaussian_sampler(0.0, 1.0)
    once = w2_noise_floor(sampler, 200, seed=4)
    assert once == w2_noise_floor(sampler, 200, seed=4)
    assert once != w2_noise_floor(sampler, 200, seed=5)
    three = w2_noise_floor(sampler, 200, seed=4, repeats=3)
    assert three != once and 0.0 < three < 0.5


def test_invalid_input_raises() -> None:
    x = np.zeros((5, 2))
    with pytest.raises(ValueError, match="same dimension"):
        w2_samples(x, np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"shape \(n, d\)"):
        w2_samples(np.zeros((0, 2)), x)
    with pytest.raises(ValueError, match=r"shape \(n, d\)"):
        w2_samples(np.zeros(5), x)
    with pytest.raises(ValueError, match="finite"):
        w2_samples(np.full((5, 2), np.nan), x)
    with pytest.raises(ValueError, match="real numbers"):
        w2_samples(np.zeros((5, 2), dtype=complex), x)
    sampler = gaussian_sampler(0.0, 1.0)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        w2_noise_floor(sampler, 0, seed=0)
    with pytest.raises(ValueError, match="repeats"):
        w2_noise_floor(sampler, 10, seed=0, repeats=0)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        w2_against_reference(np.zeros((5, 1)), sampler, seed=-1)
    with pytest.raises(ValueError, match="sample_reference"):
        w2_noise_floor(lambda n, seed: torch.zeros(n + 1, 1), 10, seed=0)
