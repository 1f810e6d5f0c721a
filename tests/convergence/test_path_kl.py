"""Exact path-space KL vs marginal KL on Gaussian targets (convergence.evaluators.path; THEORY.md
2.1; issue 6, claim 3).

Golden values come from an independent computation: the joint Gaussians of (x_{t_0}, ..., x_{t_T})
under the true process (covariance blocks Cov(x_{t_i}, x_{t_j}) = alpha(t_i) / alpha(t_j) C_{t_j},
t_i >= t_j) and under the sampler chain (kernels written out by hand from the samplers' formulas),
as dense matrices, and the closed-form KL between the two joint laws.
"""

import math
from functools import cache

import numpy as np
import pytest
import torch

from analytic import gaussian as closed
from analytic.processes import VE, VP
from convergence.evaluators import METRICS, error, initial_law, resolve_evaluator
from convergence.evaluators.path import Kernel, chain, expected_kl, path_divergences, path_kl
from convergence.rates import local_slopes
from convergence.samplers import get_spec
from convergence.sweep.config import parse_config
from convergence.sweep.runner import run_task
from convergence.sweep.store import Store
from convergence.targets import gaussian_target, parse_target

DOUBLING = [64, 128, 256, 512, 1024]


# ---- the independent dense computation -------------------------------------------------------


def true_joint(target, process, times):
    """Mean and covariance of (x_{t_0}, ..., x_{t_T}) under the forward process."""
    m, S = target.means[0], target.covariance_matrices()[0]
    d, n = target.dim, len(times)
    alpha = [process.alpha(t) for t in times]
    C = [alpha[j] ** 2 * S + process.sigma(times[j]) ** 2 * torch.eye(d).double() for j in range(n)]
    cov = torch.zeros(n * d, n * d, dtype=torch.float64)
    for i in range(n):
        for j in range(i, n):  # t_i >= t_j: x_i = alpha_i / alpha_j x_j + independent noise
            block = alpha[i] / alpha[j] * C[j]
            cov[i * d : (i + 1) * d, j * d : (j + 1) * d] = block
            cov[j * d : (j + 1) * d, i * d : (i + 1) * d] = block.T
    return torch.cat([a * m for a in alpha]), cov


def hand_kernel(name, target, process, t, t_next):
    """(M, v, Sigma) of one grid step written out from the sampler's formula with the affine
    score s(x) = -C_t^{-1} (x - mu_t): ddpm x' = (x + beta s) / rho + sqrt(beta) z (Ho et al.);
    li-accel-ddpm pre-noise h z then the same mean plus h z', h^2 = beta / 2 (Li et al. README)."""
    d = target.dim
    eye = torch.eye(d, dtype=torch.float64)
    mu = process.alpha(t) * target.means[0]
    C = process.alpha(t) ** 2 * target.covariance_matrices()[0] + process.sigma(t) ** 2 * eye
    rho, beta = process.transition(t_next, t)
    P = torch.linalg.inv(C)
    M = (eye - beta * P) / rho
    v = beta * P @ mu / rho
    if name == "ddpm":
        return M, v, beta * eye
    h2 = beta / 2.0
    return M, v, h2 * M @ M.T + h2 * eye


def sampler_joint(name, target, process, times, start_mean, start_cov):
    d, n = target.dim, len(times)
    mean = [start_mean]
    cov = torch.zeros(n * d, n * d, dtype=torch.float64)
    cov[:d, :d] = start_cov
    for k in range(n - 1):
        M, v, Sig = hand_kernel(name, target, process, times[k], times[k + 1])
        mean.append(M @ mean[-1] + v)
        rows = slice((k + 1) * d, (k + 2) * d)
        for j in range(k + 1):  # Cov(x_{k+1}, x_j) = M Cov(x_k, x_j)
            cols = slice(j * d, (j + 1) * d)
            block = M @ cov[k * d : (k + 1) * d, cols]
            cov[rows, cols], cov[cols, rows] = block, block.T
        prev = slice(k * d, (k + 1) * d)
        cov[rows, rows] = M @ cov[prev, prev] @ M.T + Sig
    return torch.cat(mean), 0.5 * (cov + cov.T)


def dense_kls(name, target, process, T, init):
    """Forward and reverse KL between the joint laws of the first k + 1 grid points, k = 0..T."""
    times = torch.linspace(1.0, process.t_end_default, T + 1, dtype=torch.float64).tolist()
    start = initial_law(target, process, init)
    mq, Cq = true_joint(target, process, times)
    mp, Cp = sampler_joint(
        name, target, process, times, start.means[0], start.covariance_matrices()[0]
    )
    d = target.dim
    forward, reverse = [], []
    for k in range(T + 1):
        n = (k + 1) * d
        forward.append(float(closed.kl(mq[:n], Cq[:n, :n], mp[:n], Cp[:n, :n])))
        reverse.append(float(closed.kl(mp[:n], Cp[:n, :n], mq[:n], Cq[:n, :n])))
    return times, forward, reverse


@pytest.mark.parametrize("process", [VP(), VE()], ids=["vp", "ve"])
@pytest.mark.parametrize("name", ["ddpm", "li-accel-ddpm"])
@pytest.mark.parametrize("d", [1, 2])
@pytest.mark.parametrize("T", [2, 3, 5])
def test_path_kl_equals_the_kl_of_the_dense_joint_laws(T, d, name, process):
    target = gaussian_target(d)
    times, forward, reverse = dense_kls(name, target, process, T, "exact")
    res = path_kl(name, target, process, T)
    assert res.times == pytest.approx(times, rel=1e-15)
    assert len(res.per_step) == T and res.initial == 0.0
    assert res.path == pytest.approx(forward[-1], rel=1e-10)
    assert res.reverse == pytest.approx(reverse[-1], rel=1e-10)
    # the chain rule term by term: per_step[k] = KL(joint up to k + 1) - KL(joint up to k)
    cumulative = np.cumsum(res.per_step)
    assert cumulative == pytest.approx(forward[1:], rel=1e-10)
    assert np.cumsum(res.reverse_per_step) == pytest.approx(reverse[1:], rel=1e-10)
    # marginal KL = KL of the last blocks; data processing: marginal <= path
    last = slice(T * d, (T + 1) * d)
    mq, Cq = true_joint(target, process, times)
    mp, Cp = sampler_joint(name, target, process, times, mq[:d], Cq[:d, :d])  # exact initialisation
    assert res.marginal == pytest.approx(
        float(closed.kl(mq[last], Cq[last, last], mp[last], Cp[last, last])), rel=1e-10
    )
    assert 0.0 < res.marginal < res.path


def test_prior_initialisation_adds_the_initial_kl():
    target = gaussian_target(2)
    _, forward, reverse = dense_kls("ddpm", target, VP(), 3, "prior")
    res = path_kl("ddpm", target, VP(), 3, init="prior")
    assert res.initial == pytest.approx(forward[0], rel=1e-10) and res.initial > 1e-6
    assert res.path == pytest.approx(forward[-1], rel=1e-10)
    assert res.reverse == pytest.approx(reverse[-1], rel=1e-10)


# ---- THEORY.md 2.1: path KL ~ 1/T, marginal KL ~ 1/T^2 ---------------------------------------

TARGET_1D = "gaussian:d=1"


@cache
def ddpm_chain(T):
    target = parse_target(TARGET_1D)
    return chain(get_spec("ddpm"), target.score_fn(VP()), VP(), target, T)


def ddpm_result(T):
    start = initial_law(parse_target(TARGET_1D), VP(), "exact")
    return path_divergences(ddpm_chain(T), start, T)


def fitted_slope(values, steps=DOUBLING):
    """Least-squares slope of log value against log T over all the points."""
    return float(np.polyfit(np.log(steps), np.log(values), 1)[0])


def accepted(values, expected, steps=DOUBLING, tol=0.05):
    """The acceptance check of the claim: positive finite values, fitted slope within tol."""
    values = np.asarray(values, dtype=float)
    if not (np.all(np.isfinite(values)) and np.all(values > 0)):
        return False
    return abs(fitted_slope(values, steps) - expected) <= tol


def test_ddpm_path_kl_is_first_order_and_marginal_kl_second_order():
    results = [ddpm_result(T) for T in DOUBLING]
    path = [r.path for r in results]
    marginal = [r.marginal for r in results]
    assert accepted(path, -1.0) and accepted(marginal, -2.0)
    # the local slopes settle: last chord within 0.01 of the order
    assert abs(local_slopes(DOUBLING, path)[-1] + 1.0) < 0.01
    assert abs(local_slopes(DOUBLING, marginal)[-1] + 2.0) < 0.01
    # measured values (see the report): path KL 3.92e-3 ... 2.47e-4, marginal 1.39e-4 ... 5.45e-7
    assert path[0] == pytest.approx(3.9211e-3, rel=1e-4)
    assert marginal[-1] == pytest.approx(5.4549e-7, rel=1e-4)
    # the public entry point gives the same numbers
    assert path_kl("ddpm", TARGET_1D, VP(), 64).path == pytest.approx(path[0], rel=1e-14)


def test_ddpm_marginal_agrees_with_the_exact_gaussian_evaluator():
    for T in (64, 256):
        ref = error("ddpm", parse_target(TARGET_1D), VP(), T, metric="kl", final_noise=True)
        assert ref.evaluator == "gaussian"
        assert ddpm_result(T).marginal == pytest.approx(ref.value, rel=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["li-accel-ddpm", "em"])
def test_other_chains_path_first_order_marginal_second_order(name):
    results = [path_kl(name, TARGET_1D, VP(), T) for T in DOUBLING]
    path = [r.path for r in results]
    marginal = [r.marginal for r in results]
    assert accepted(marginal, -2.0)
    slopes = local_slopes(DOUBLING, path)
    if name == "li-accel-ddpm":  # local slopes -0.93, -0.97, -0.98, -0.99
        assert accepted(path, -1.0)
    else:
        # em's path KL approaches slope -1 from above (-0.84, -0.89, -0.93, -0.96): the large
        # per-step drift error at VP's beta(1) = 20 leaves T <= 256 pre-asymptotic
        assert np.all(np.diff(slopes) < 0) and abs(slopes[-1] + 1.0) < 0.05
    assert all(r.marginal < r.path for r in results)


def test_li_accel_ddpm_path_and_marginal_orders_fast():
    """The fast version of the slow test above, on T = 64..256 (last chords -0.968 and -1.96)."""
    steps = DOUBLING[:3]
    results = [path_kl("li-accel-ddpm", TARGET_1D, VP(), T) for T in steps]
    assert abs(local_slopes(steps, [r.path for r in results])[-1] + 1.0) < 0.05
    assert abs(local_slopes(steps, [r.marginal for r in results])[-1] + 2.0) < 0.05


# ---- negative controls: wrong kernels are rejected by the same acceptance check ---------------


def test_marginal_in_place_of_the_conditional_is_rejected():
    wrong = []
    for T in DOUBLING:
        ch = ddpm_chain(T)
        marginal_kernel = Kernel(torch.zeros_like(ch.true.A), ch.mean[1:], ch.cov[1:])
        wrong.append(float(expected_kl(marginal_kernel, ch.model, ch.mean[:-1], ch.cov[:-1]).sum()))
    assert not accepted(wrong, -1.0)
    assert fitted_slope(wrong) > 1.5  # grows like T^2


def test_dropping_the_variance_mismatch_is_rejected():
    """DDPM's mean map is the exact reverse conditional mean for a Gaussian target, so its whole
    path KL is the variance mismatch; without it only round-off is left."""
    wrong = []
    for T in DOUBLING:
        ch = ddpm_chain(T)
        same_variance = Kernel(ch.model.A, ch.model.b, ch.true.cov)
        wrong.append(float(expected_kl(ch.true, same_variance, ch.mean[:-1], ch.cov[:-1]).sum()))
    assert not accepted(wrong, -1.0)
    assert max(wrong) < 1e-20


# ---- refusals ------------------------------------------------------------------------------


def test_deterministic_sampler_is_refused():
    with pytest.raises(ValueError, match=r"'ddim' moves from t=1 .* path KL is infinite$"):
        path_kl("ddim", TARGET_1D, VP(), 8)


def test_noiseless_last_step_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"pass final_noise=True\): its path law is singular"):
        path_kl("ddpm", TARGET_1D, VP(), 8, final_noise=False)


def test_li_accel_ddpm_without_final_noise_keeps_its_pre_noise():
    res = path_kl("li-accel-ddpm", TARGET_1D, VP(), 8, final_noise=False)
    assert math.isfinite(res.path) and res.path > res.marginal > 0.0


def test_non_gaussian_target_is_refused():
    with pytest.raises(ValueError, match=r"needs a single-Gaussian target .* got 2 components$"):
        path_kl("ddpm", "gmm:d=1,k=2,seed=0", VP(), 8)


def test_multistep_state_and_langevin_stages_are_refused():
    with pytest.raises(ValueError, match=r"multistep state .* not Markov in x alone"):
        path_kl("li-accel-ddim", TARGET_1D, VP(), 8)
    with pytest.raises(ValueError, match=r"'als' has a stage that stays at t=1"):
        path_kl("als", TARGET_1D, VE(), 8)


# ---- the evaluator API and the sweep store ---------------------------------------------------


def test_error_measures_path_kl_with_the_gaussian_evaluator():
    assert "path-kl" in METRICS
    target = gaussian_target(2)
    est = error("ddpm", target, VP(), 16, metric="path-kl")
    res = path_kl("ddpm", target, VP(), 16)
    assert (est.evaluator, est.metric, est.exact, est.nfe) == ("gaussian", "path-kl", True, 16)
    assert est.value == pytest.approx(res.path, rel=1e-14)
    assert est.uncertainty < 1e-10 * est.value
    assert f"{res.marginal:.6g}" in est.note
    with pytest.raises(ValueError, match=r"no evaluator measures 'path-kl' here"):
        resolve_evaluator("auto", parse_target("gmm:d=1,k=2,seed=0"), get_spec("ddpm"), "path-kl")
    with pytest.raises(ValueError, match=r"path KL has no denoised variant"):
        error("ddpm", target, VP(), 16, metric="path-kl", denoise=True)


SWEEP = """
name = "path"
process = "vp"
targets = ["gaussian:d=1"]
steps = [8, 16]
metrics = ["kl", "path-kl"]

[[samplers]]
name = "ddpm"

[[samplers]]
name = "ddim"
"""


def test_sweep_records_path_kl(tmp_path):
    config = parse_config(SWEEP)
    outcomes = [run_task(task.as_dict()) for task in config.tasks()]
    with Store(tmp_path / "r.sqlite") as store:
        run_id = store.begin_run("<string>", config.name, config.source)
        for outcome in outcomes:
            store.record(run_id, outcome)
        rows = store.records(metric="path-kl")
    by_key = {(r["sampler"], r["steps"]): r for r in rows}
    assert {k: r["status"] for k, r in by_key.items()} == {
        ("ddpm", 8): "ok",
        ("ddpm", 16): "ok",
        ("ddim", 8): "failed",
        ("ddim", 16): "failed",
    }
    assert by_key["ddpm", 16]["value"] == pytest.approx(
        path_kl("ddpm", TARGET_1D, VP(), 16).path, rel=1e-14
    )
    assert by_key["ddpm", 16]["evaluator_used"] == "gaussian"
    assert "path KL is infinite" in by_key["ddim", 8]["message"]
