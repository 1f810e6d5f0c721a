"""Exact noise-level tracking of ALS and CAS (convergence/noise_levels.py, SAMPLERS.md 4.3): CAS
keeps the idealised sample on the schedule, ALS follows the derived recursion and its
sqrt(2 / (2 - eta)) limit; negative controls; input checks."""

import dataclasses
import json
import math

import pytest
import torch

from analytic.gmm import GaussianMixture
from analytic.processes import VP
from convergence.noise_levels import (
    als_ratio_recursion,
    als_steady_ratio,
    annealed_study,
    track_noise_levels,
)
from convergence.samplers import Transition
from convergence.samplers.annealed import ALS, CAS, cas_step


@pytest.mark.parametrize(
    ("levels", "eta", "n_sigma"), [(10, 1.0, 1), (10, 0.8, 1), (40, 0.95, 3), (200, 0.3, 1)]
)
def test_cas_tracks_the_schedule_on_the_idealised_target(levels, eta, n_sigma):
    """s = 0: sigma_eff_i = sigma_i at every level of the (refined) ladder, to rounding."""
    row = track_noise_levels("cas", 0.0, levels=levels, eta=eta, n_sigma=n_sigma)
    assert row["n_levels"] == (levels - 1) * n_sigma + 1
    assert row["max_abs_log_ratio"] < 1e-10
    assert max(abs(v - 1) for v in row["var_ratio"]) < 1e-10
    assert row["sigma"][0] == pytest.approx(50.0) and row["sigma"][-1] == pytest.approx(0.01, 1e-3)


def cas_without_gamma(score, process, x, t, t_next, **options):
    """CAS with beta = sqrt(1 - (1 - eta)^2) (compute_beta's gamma dropped)."""
    tr = cas_step(score, process, x, t, t_next, **options)
    eta, gamma = options["eta"], process.sigma(t_next) / process.sigma(t)
    if gamma == 1.0 or tr.std == 0.0:
        return tr
    wrong = math.sqrt(1 - (1 - eta) ** 2) / math.sqrt(1 - ((1 - eta) / gamma) ** 2)
    return Transition(tr.mean, tr.std * wrong)


@pytest.mark.parametrize(
    "variant",
    [dataclasses.replace(CAS, name="cas-wrong-beta", step=cas_without_gamma), ALS],
)
def test_negative_controls_fail_the_tracking_check(variant):
    """The same check rejects a CAS whose beta misses gamma, and ALS."""
    row = track_noise_levels(variant, 0.0, levels=10, eta=0.8)
    assert row["max_abs_log_ratio"] > 1e-2


@pytest.mark.parametrize(("eta", "n_sigma", "levels"), [(0.5, 1, 30), (0.062, 5, 100), (1.3, 2, 8)])
def test_als_ratio_follows_the_derived_recursion(eta, n_sigma, levels):
    """s = 0: the tracked ratio (the sampler's own steps) equals the scalar recursion
    r_i = rho^n r_{i-1} / gamma^2 + 2 (1 - rho^n) / (2 - eta), and its late levels the steady
    state of the geometric ladder."""
    row = track_noise_levels("als", 0.0, levels=levels, eta=eta, n_sigma=n_sigma)
    sigmas = [50.0 * (0.01 / 50.0) ** (i / (levels - 1)) for i in range(levels)]
    assert row["sigma"] == pytest.approx(sigmas, rel=1e-4)
    assert row["ratio"] == pytest.approx(als_ratio_recursion(row["sigma"], eta, n_sigma), rel=1e-10)
    steady = als_steady_ratio(eta, row["gamma"], n_sigma)
    assert row["steady_ratio"] == steady and row["last_ratio"] == pytest.approx(steady, rel=1e-8)
    assert steady > math.sqrt(2 / (2 - eta)) > 1  # lags more than a frozen level


@pytest.mark.parametrize("eta", [0.3, 1.0, 1.6])
def test_als_ratio_approaches_the_frozen_level_limit(eta):
    """Many steps per level: ratio -> sqrt(2 / (2 - eta)) (SAMPLERS.md 4.3; fixed point of
    v -> (1 - eta)^2 v + 2 eta sigma^2)."""
    row = track_noise_levels("als", 0.0, levels=4, eta=eta, n_sigma=150)
    assert row["limit_ratio"] == math.sqrt(2 / (2 - eta))
    assert row["ratio"] == pytest.approx([math.sqrt(2 / (2 - eta))] * 4, rel=1e-9)


def test_gaussian_target_in_two_dimensions_agrees_with_the_scalar_target():
    """An isotropic 2-D GaussianMixture target N(mu, s^2 I) gives the 1-D ratios (coordinate-wise
    steps), and CAS is off the schedule once sigma_i << s (consistency is for s = 0 only)."""
    s = 0.1
    gmm = GaussianMixture(
        torch.ones(1, dtype=torch.float64),
        torch.tensor([[0.5, -1.0]], dtype=torch.float64),
        (s * s * torch.eye(2, dtype=torch.float64))[None],
    )
    for name in ("als", "cas"):
        a = track_noise_levels(name, gmm, levels=12, eta=0.9)
        b = track_noise_levels(name, s, levels=12, eta=0.9)
        assert a["var_ratio"] == pytest.approx(b["var_ratio"], rel=1e-10)
    assert abs(b["ratio"][1] - 1) < 1e-3  # sigma_2 >> s: on the schedule
    assert abs(b["excess_ratio"][-1] - 1) > 0.5  # sigma_L << s: far off


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: track_noise_levels("cas", -0.1, levels=10), "target std"),
        (lambda: track_noise_levels("cas", "wide", levels=10), "target must be"),
        (lambda: track_noise_levels("cas", 0.0, levels=10, eta=0.1), "1 - gamma < eta"),
        (lambda: track_noise_levels("cas", 0.0, levels=1), "levels) >= 2"),
        (lambda: track_noise_levels("ddpm", 0.0, levels=10), "annealed Langevin"),
        (lambda: track_noise_levels("als", 0.0, levels=10, process=VP()), "ve process"),
        (
            lambda: track_noise_levels(
                "als",
                GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 0.0], [0.0, 2.0]]]),
                levels=5,
            ),
            "isotropic",
        ),
    ],
)
def test_bad_inputs_raise_one_line(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert message in str(info.value) and "\n" not in str(info.value)


def test_quick_study():
    """Rows for both samplers; JSON without NaN; CAS exact on the idealised target, ALS eta = 1
    at sqrt(2) from the first level (rho = 0)."""
    out = annealed_study(quick=True)
    json.dumps(out, allow_nan=False)
    rows = out["rows"]
    assert len(rows) == 2 * 3 * 6  # ladders x target stds x (4 CAS + 2 ALS steps)
    ideal_cas = [r for r in rows if r["sampler"] == "cas" and r["target_std"] == 0.0]
    assert ideal_cas and all(r["max_abs_log_ratio"] < 1e-12 for r in ideal_cas)
    als_1 = [r for r in rows if r["sampler"] == "als" and r["eta"] == 1.0 and r["target_std"] == 0]
    assert all(r["ratio"] == pytest.approx([math.sqrt(2)] * r["n_levels"]) for r in als_1)
