"""Langevin with and without adaptive momentum on fixed Gaussian targets
(convergence/stationary.py): closed forms against the package's own exact moment propagation,
the sample estimator against closed forms, the AMS-LC rule against the package's corrector."""

import json
import math

import numpy as np
import pytest
import torch

from analytic.processes import VE
from convergence.evaluators import gaussian as exact
from convergence.noise import PerSampleNoise
from convergence.samplers.score_sde import LANGEVIN_FIXED, AMSCorrector
from convergence.stationary import (
    ams_mean_field,
    eigenvalues,
    expected_norm,
    heavy_ball_stationary_variance,
    iterations_to_accuracy,
    kl_paths,
    momentum_study,
    run_chains,
    stationary_bias,
    ula_stationary_variance,
)


def ula_closed_form_kl(lam, h, v0, k):
    """KL(N(0, Lambda) || N(0, v_k)) with v_k = v_inf + (1 - h/lambda)^(2k) (v0 - v_inf)
    (per-coordinate ULA variance recursion solved in closed form), numpy."""
    lam = np.asarray(lam)
    v_inf = lam / (1 - h / (2 * lam))
    v = v_inf + (1 - h / lam) ** (2 * k) * (v0 - v_inf)
    r = lam / v
    return 0.5 * np.sum(r - 1 - np.log(r))


@pytest.mark.parametrize(("kappa", "h"), [(1.0, 0.3), (4.0, 0.5), (4.0, 1.5)])
def test_ula_stationary_variance_is_the_fixed_point_of_the_package_chain(kappa, h):
    """lambda / (1 - h / (2 lambda)) against a long exact moment recursion through the package's
    ULA step (LANGEVIN_FIXED via evaluators.gaussian.propagate, full covariance), 1e-12."""
    lam = eigenvalues(kappa, 3)
    steps = math.ceil(32.0 / -math.log(abs(1 - h / float(lam.max()))))  # (1-h/lam)^(2k) < e^-64
    score = lambda x, t: -x / lam  # noqa: E731
    law = exact.propagate(
        LANGEVIN_FIXED,
        score,
        VE(),
        exact.GaussianLaw(torch.zeros(3, dtype=torch.float64), torch.diag(lam)),
        steps,
        t_end=0.5,
        final_noise=True,
        h=h,
    )
    expected = ula_stationary_variance(lam, h)
    assert torch.allclose(law.cov, torch.diag(expected), rtol=1e-12, atol=1e-14)
    assert float(expected[0] / lam[0]) > 1 + h / 2.5  # the bias is not negligible here


def test_ula_exact_bias_values():
    """KL = sum_i (u_i - log1p u_i) / 2, u_i = -h / (2 lambda_i), ~ h^2 / 16 per unit coordinate
    (THEORY.md 3.3), and W2 = sqrt(sum (sqrt v_inf - sqrt lambda)^2)."""
    row = stationary_bias("ula", 16.0, 0.1, d=2)
    u = -0.1 / (2 * np.array([1.0, 16.0]))
    assert row["kl"] == pytest.approx(0.5 * np.sum(u - np.log1p(u)), rel=1e-12)
    v = np.array([1.0, 16.0]) / (1 + u)
    assert row["w2"] == pytest.approx(np.sqrt(np.sum((np.sqrt(v) - [1.0, 4.0]) ** 2)), rel=1e-10)
    assert row["exact"] and row["kl_ci"] == 0.0
    small = stationary_bias("ula", 1.0, 1e-4, d=4)["kl"]
    assert small == pytest.approx(4 * 1e-8 / 16, rel=1e-3)  # d h^2 / 16


def test_sampled_ula_agrees_with_the_closed_form_within_its_ci():
    """The sample estimator (same chain code as ams, momentum off) covers the exact ULA bias; the
    same check rejects the fixed-beta heavy ball (negative control), whose sampled law agrees with
    its own Lyapunov solution instead."""
    opts = dict(d=2, n=4000, replicates=4, estimator="samples", burn=4.0)
    ula = stationary_bias("ula", 4.0, 0.8, **opts)
    assert abs(ula["kl"] - ula["kl_exact"]) <= ula["kl_ci"] + ula["floor"]
    assert abs(ula["w2"] - ula["w2_exact"]) <= ula["w2_ci"] + ula["w2_floor"]
    assert ula["kl_exact"] > 20 * ula["floor"]
    heavy = stationary_bias("heavy-ball", 4.0, 0.8, **opts)
    assert abs(heavy["kl"] - heavy["kl_exact"]) <= heavy["kl_ci"] + heavy["floor"]
    assert abs(heavy["kl"] - ula["kl_exact"]) > 10 * (heavy["kl_ci"] + heavy["floor"])


def test_noise_floor_matches_the_wishart_estimate():
    """Floor of the Gaussian-fit KL for n exact draws ~ d (d + 3) / (4 n) [DERIVED]."""
    row = stationary_bias("ula", 1.0, 0.5, d=2, n=2000, replicates=8, estimator="samples")
    assert row["floor"] == pytest.approx(2 * 5 / (4 * 2000), rel=0.35)


def test_ams_rule_matches_the_package_corrector_step_for_step():
    """run_chains(momentum="adaptive") is AMSCorrector (SAMPLERS.md 6.2) with its step size fixed
    to h: feed the corrector a = h ||m_old||^2 / (2 ||z||^2) (so eps = 2 a (||z|| / ||m_old||)^2
    = h at snr 1) and the same noise."""
    lam = torch.tensor([1.0, 4.0], dtype=torch.float64)
    h, n, steps, seed = 0.1, 64, 6, 3
    x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours, betas = run_chains(lam, h, steps, x0[None], momentum="adaptive", seed=seed)
    corrector, x, noise = AMSCorrector(1.0, False, "adaptive"), x0, PerSampleNoise(seed)

    def norm(v):
        return torch.linalg.vector_norm(v, dim=1).mean()

    for k in range(steps):
        z = noise.draw(k, x)
        m_old = -x / lam if corrector.m is None else corrector.m
        a = h * norm(m_old) ** 2 / (2 * norm(z) ** 2)
        x, _ = corrector(lambda y, t: -y / lam, x, 0.5, z, a)
    assert torch.allclose(ours[0], x, rtol=1e-12, atol=1e-12)
    assert betas == pytest.approx([float(b) for b in corrector.betas], abs=1e-12)
    assert max(betas) > 0.05  # the momentum was active


def test_ams_bias_is_reproducible_and_does_not_vanish_with_h():
    """Two independent AMS measurements agree within their combined CI; at h = 0.05 the fixed-step
    AMS is under-dispersed (variance ratio ~ 1 / (1 + beta)^2) with a KL hundreds of times ULA's."""
    opts = dict(d=2, n=4000, replicates=4, burn=3.0)
    a = stationary_bias("ams", 1.0, 0.05, seed=0, **opts)
    b = stationary_bias("ams", 1.0, 0.05, seed=1, **opts)
    assert abs(a["kl"] - b["kl"]) <= math.hypot(a["kl_ci"], b["kl_ci"])
    assert abs(a["kl"] - a["kl_at_3_4"]) <= a["kl_ci"]  # stationary
    ula = stationary_bias("ula", 1.0, 0.05, d=2)
    assert a["kl"] > 100 * ula["kl"] and a["kl"] > 20 * a["floor"]
    assert a["beta"] > 0.1
    assert all(r == pytest.approx(1 / (1 + a["beta"]) ** 2, rel=0.1) for r in a["variance_ratio"])


def test_expected_norm_against_closed_forms_and_samples():
    """E||v|| = sqrt(2 c / pi) in 1-D and sqrt(pi c / 2) for an isotropic 2-D Gaussian (chi
    with 2 degrees of freedom); an anisotropic one against 4e6 draws (within 3 standard errors)."""
    assert expected_norm([2.0]) == pytest.approx(math.sqrt(4.0 / math.pi), rel=1e-12)
    assert expected_norm([3.0, 3.0]) == pytest.approx(math.sqrt(1.5 * math.pi), rel=1e-12)
    c = np.array([1.0, 16.0])
    draws = np.linalg.norm(
        np.random.default_rng(1).standard_normal((4_000_000, 2)) * np.sqrt(c), axis=1
    )
    assert abs(expected_norm(c) - draws.mean()) < 3 * draws.std() / 2000


def test_ams_mean_field_is_the_large_n_limit_and_does_not_converge_as_h_shrinks():
    """The n -> infinity fixed point reproduces the sampled AMS at h = 0.05 (beta, variance ratio
    and KL within 10%, the sampled law carrying an O(n^-1/2) beta fluctuation), is a fixed point
    of its own map, and its KL grows as h -> 0 (0.05 -> 0.001), towards under-dispersion."""
    lam = eigenvalues(1.0, 2)
    mf = ams_mean_field(lam, 0.05)
    sampled = stationary_bias("ams", 1.0, 0.05, d=2, n=4000, replicates=3, burn=3.0)
    assert mf["beta"] == pytest.approx(sampled["beta"], rel=0.1)
    assert mf["variance_ratio"][0] == pytest.approx(sampled["variance_ratio"][0], rel=0.03)
    assert mf["kl"] == pytest.approx(sampled["kl"], rel=0.1)
    q = mf["q"]
    assert mf["beta"] == pytest.approx(((1 - q) / (1 + q)) ** 2, rel=1e-10)
    kls = [ams_mean_field(lam, h)["kl"] for h in (0.05, 0.01, 0.001)]
    assert kls[0] < kls[1] < kls[2] and kls[2] > 0.8
    heavy = heavy_ball_stationary_variance(lam, 0.001, ams_mean_field(lam, 0.001)["beta"])
    assert heavy[0] / lam[0] == pytest.approx(ams_mean_field(lam, 0.001)["variance_ratio"][0])


def test_heavy_ball_lyapunov_is_the_limit_of_its_exact_path():
    """The frozen-beta stationary variance (discrete Lyapunov) is the end of the exact moment
    path; as h -> 0 it tends to lambda / (1 + beta)^2 (drift step h (1 + beta)^2, noise 2 h)."""
    lam = eigenvalues(2.0, 2)
    paths, _ = kl_paths("heavy-ball", 2.0, stop_level=1e-9, c=0.3, max_iter=600, beta=0.5)
    stationary = stationary_bias("heavy-ball", 2.0, 0.3, beta=0.5)["kl"]
    assert paths[-1, 0] == pytest.approx(stationary, rel=1e-10)
    small = heavy_ball_stationary_variance(lam, 1e-5, 0.5) / lam
    assert torch.allclose(small, torch.full_like(small, 1 / 1.5**2), rtol=1e-4)


def test_ula_iterations_match_the_closed_form_decay():
    """Exact ULA path (moment propagation) against v_k = v_inf + (1 - h/lambda)^(2k)(v_0 - v_inf),
    and the count: first k with KL <= level (monotone from an over-dispersed start)."""
    kappa, c, level = 16.0, 0.4, 0.05
    lam, v0 = [1.0, 16.0], 4 * 16.0
    row = iterations_to_accuracy("ula", kappa, level=level, c=c)
    path = [ula_closed_form_kl(lam, c, v0, k) for k in range(row["run"] + 1)]
    paths, _ = kl_paths("ula", kappa, stop_level=level, c=c)
    assert np.allclose(paths[:, 0], path, rtol=1e-11, atol=0)
    expected = next(k for k, v in enumerate(path) if v <= level)
    assert row["iterations"] == expected and row["exact"]
    assert 30 < expected < 60


def test_ams_iterations_are_measured_with_replicates():
    """AMS iterations-to-accuracy from samples: counts per replicate close to each other and, at
    c = 0.4 (beta ~ 0 in this regime), to ULA's exact count."""
    row = iterations_to_accuracy("ams", 16.0, level=0.05, c=0.4, n=2000, replicates=3)
    ula = iterations_to_accuracy("ula", 16.0, level=0.05, c=0.4)
    assert not row["exact"] and len(row["iterations_per_replicate"]) == 3
    assert (
        abs(row["iterations"] - ula["iterations"]) <= row["iterations_ci"] + 0.2 * ula["iterations"]
    )
    assert row["floor"] < 0.05 * 0.05 * 10


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: stationary_bias("ula", 0.5, 0.1), "kappa"),
        (lambda: stationary_bias("ula", 4.0, 0.0), "h must lie in (0, 2)"),
        (lambda: stationary_bias("ams", 4.0, -1.0), "h must lie in (0, 2)"),
        (lambda: stationary_bias("ula", 4.0, 2.0), "h must lie in (0, 2)"),
        (lambda: stationary_bias("ula", 4.0, float("nan")), "h must be a finite number"),
        (lambda: stationary_bias("mala", 4.0, 0.1), "unknown method"),
        (lambda: stationary_bias("ams", 4.0, 0.1, estimator="exact"), "no exact"),
        (lambda: stationary_bias("ula", 4.0, 0.1, d=1), "d = 1"),
        (lambda: stationary_bias("heavy-ball", 4.0, 0.1, beta=1.0), "beta"),
        (lambda: iterations_to_accuracy("ula", 4.0, level=0.0), "level"),
        (lambda: iterations_to_accuracy("ula", 4.0, level=0.1, c=2.5), "h must lie"),
    ],
)
def test_bad_inputs_raise_one_line(call, message):
    with pytest.raises(ValueError, match=None) as info:
        call()
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.slow
def test_quick_study_is_json_and_complete():
    out = momentum_study(quick=True)
    text = json.dumps(out, allow_nan=False)
    assert len(out["bias"]) == 2 * (3 * 2 + 1) and "iterations" in text
    assert len(out["mean_field"]) == 2 * 10 and len(out["mean_field_slopes"]) == 2
    assert all(r["kl_small_h"]["slope"] < 0 for r in out["mean_field_slopes"])
    assert {e["method"] for e in out["exponents"]} == {"ula", "ams"}
    ula = [e for e in out["exponents"] if e["method"] == "ula"]
    assert all(0.8 < e["slope"] < 1.1 for e in ula)
