"""Probability-flow ODE solvers beyond Euler/Heun: ode-rk45, dpm-solver-2, edm-heun.

Exactness against the closed-form PF-ODE map of a Gaussian target (THEORY.md 3.2), second-order
rates with the exact evaluator plus negative controls, schedules, options and NFE accounting.
"""

import dataclasses
import math

import pytest
import torch

import convergence
from analytic.processes import VE, VP
from convergence import measure_rate
from convergence.evaluators import gaussian as exact
from convergence.samplers import REGISTRY, DivergenceError, Transition
from convergence.samplers.ode import (
    DPM_SOLVER_2,
    EDM_HEUN,
    edm_sigma,
    noise_prediction,
)
from convergence.targets import gaussian_target, random_gmm

STEPS = [20, 40, 80, 160, 320, 640, 1280]
CONTROL_STEPS = STEPS[:5]  # a broken variant is already off by a full order here
PROCESSES = [VP(), VE()]
IDS = ["vp", "ve"]


def sqrtm(C):
    w, V = torch.linalg.eigh(C)
    return V @ torch.diag(w.sqrt()) @ V.T


def exact_flow(target, process, x, t_end):
    """Phi_{1 -> t_end}(x) = m_t + C_t^{1/2} C_1^{-1/2} (x - m_1) for a Gaussian target."""
    p1, pe = target.noised(process, 1.0), target.noised(process, t_end)
    m1, C1 = p1.means[0], p1.covariance_matrices()[0]
    me, Ce = pe.means[0], pe.covariance_matrices()[0]
    return me + (sqrtm(Ce) @ torch.linalg.solve(sqrtm(C1), (x - m1).T)).T


def run(name, process, steps, x=None, target=None, **options):
    target = gaussian_target(2) if target is None else target
    x = target.noised(process, 1.0).sample(5, seed=3) if x is None else x
    return convergence.sample(name, target.score_fn(process), process, x, steps, **options)


def rate(spec, process, steps=STEPS):
    return measure_rate(spec, gaussian_target(2), process, steps, metric="w2", evaluator="gaussian")


# ---- ode-rk45 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
def test_rk45_matches_exact_flow(process):
    target = gaussian_target(2)
    x = target.noised(process, 1.0).sample(5, seed=3)
    res = run("ode-rk45", process, 1, x, rtol=1e-8, atol=1e-8)
    phi = exact_flow(target, process, x, process.t_end_default)
    assert (res.x - phi).abs().max() < 1e-6
    assert res.nfe > 0 and res.nfe == res.info["nfev"] == res.info["score_calls"]


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
def test_rk45_nfe_grows_and_error_shrinks_with_tighter_tolerances(process):
    target = gaussian_target(2)
    x = target.noised(process, 1.0).sample(5, seed=3)
    phi = exact_flow(target, process, x, process.t_end_default)
    nfe, err = [], []
    for tol in (1e-4, 1e-6, 1e-8):
        res = run("ode-rk45", process, 1, x, rtol=tol, atol=tol)
        nfe.append(res.nfe)
        err.append(float((res.x - phi).abs().max()))
    assert nfe[0] < nfe[1] < nfe[2]
    assert err[2] < err[0] and err[2] < 1e-6


def test_rk45_nfe_accounting_with_denoise():
    plain = run("ode-rk45", VP(), 1)
    den = run("ode-rk45", VP(), 1, denoise=True)
    assert den.nfe == plain.nfe + 1 == den.info["score_calls"] and den.info["denoised"]
    # RK45 (FSAL): 2 evaluations for the start and initial step choice, 6 per attempted step
    assert (plain.nfe - 2) % 6 == 0 and plain.info["accepted_steps"] >= 1


def test_rk45_steps_are_ignored():
    a, b = run("ode-rk45", VP(), 1), run("ode-rk45", VP(), 50)
    assert torch.equal(a.x, b.x) and a.nfe == b.nfe and b.info["steps_ignored"] == 50
    with pytest.raises(ValueError, match="steps must be an integer"):
        run("ode-rk45", VP(), 0)


def test_rk45_per_sample_norm_is_batch_invariant():
    target = random_gmm(2, 3, 2)
    x = target.noised(VP(), 1.0).sample(6, seed=1)
    full = run("ode-rk45", VP(), 1, x, target, norm="per-sample")
    alone = run("ode-rk45", VP(), 1, x[4:5], target, norm="per-sample")
    assert torch.equal(full.x[4:5], alone.x)
    assert full.nfe == max(full.info["nfev"]) and full.info["score_calls"] == sum(full.info["nfev"])
    batch = run("ode-rk45", VP(), 1, x, target)
    assert torch.allclose(batch.x, full.x, atol=1e-3)


def test_rk45_follows_dtype():
    x = gaussian_target(2).noised(VP(), 1.0).sample(4, seed=0)
    a, b = run("ode-rk45", VP(), 1, x), run("ode-rk45", VP(), 1, x.float())
    assert b.x.dtype == torch.float32 and torch.allclose(b.x.double(), a.x, atol=1e-4)


def test_rk45_reports_divergence():
    def nan_below_half(x, t):
        return x * math.nan if t < 0.5 else -x

    x = gaussian_target(2).noised(VP(), 1.0).sample(3, seed=0)
    with pytest.raises(DivergenceError, match="ode-rk45.*t=0.5"):
        convergence.sample("ode-rk45", nan_below_half, VP(), x, 1)


@pytest.mark.parametrize("bad", [{"rtol": 0.0}, {"atol": -1e-3}, {"rtol": math.nan}])
def test_rk45_refuses_bad_tolerances(bad):
    with pytest.raises(ValueError, match="must be a number > 0"):
        run("ode-rk45", VP(), 1, **bad)


# ---- dpm-solver-2 -----------------------------------------------------------------------------


def dpm_without_correction(score, process, x, t, t_next, *, r1, **_):
    """DPM-Solver-2 without its correction term: DPM-Solver-1 (= DDIM), first order."""
    eps0 = noise_prediction(score, process, x, t)
    h = process.lam(t_next) - process.lam(t)
    a_ratio = process.alpha(t_next) / process.alpha(t)
    return Transition(a_ratio * x - process.sigma(t_next) * math.expm1(h) * eps0, 0.0)


def test_dpm_solver_2_is_second_order_on_vp():
    res = rate(DPM_SOLVER_2, VP())
    assert res.fit.settled and res.verdict == "consistent"
    assert abs(res.fit.slope + 2.0) < 0.1


def test_dpm_solver_2_without_correction_is_rejected():
    broken = dataclasses.replace(DPM_SOLVER_2, name="dpm-no-corr", step=dpm_without_correction)
    res = rate(broken, VP(), CONTROL_STEPS)
    assert res.verdict in ("slower", "inconclusive")
    assert abs(res.fit.slope + 1.0) < 0.15


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
@pytest.mark.parametrize("spacing", ["logSNR", "time_uniform", "time_quadratic"])
def test_dpm_solver_2_converges_to_exact_flow(process, spacing):
    target = gaussian_target(2)
    x = target.noised(process, 1.0).sample(5, seed=3)
    res = run("dpm-solver-2", process, 200, x, spacing=spacing)
    phi = exact_flow(target, process, x, process.t_end_default)
    assert (res.x - phi).abs().max() < 1e-3  # measured 1e-4 .. 4e-4; O(1) displacement
    assert res.nfe == 400 == res.info["score_calls"]


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
def test_dpm_schedules(process):
    t_end, n = process.t_end_default, 8
    log_snr = DPM_SOLVER_2.schedule(process, n, t_end, {"spacing": "logSNR"})
    lams = [process.lam(t) for t, _ in log_snr] + [process.lam(t_end)]
    h = [b - a for a, b in zip(lams[:-1], lams[1:], strict=True)]
    assert max(h) - min(h) < 1e-9 * max(h)
    assert log_snr[0][0] == 1.0 and log_snr[-1][1] == t_end
    quad = DPM_SOLVER_2.schedule(process, n, t_end, {"spacing": "time_quadratic"})
    roots = [math.sqrt(t) for t, _ in quad] + [math.sqrt(t_end)]
    assert (
        max(
            abs((a - b) - (1 - math.sqrt(t_end)) / n)
            for a, b in zip(roots, roots[1:], strict=False)
        )
        < 1e-12
    )


def test_dpm_solver_2_nfe_and_options():
    res = run("dpm-solver-2", VE(), 7, denoise=True)
    assert res.nfe == 2 * 7 + 1 == res.info["score_calls"]
    with pytest.raises(ValueError, match="r1"):
        run("dpm-solver-2", VP(), 3, r1=0.0)
    with pytest.raises(ValueError, match="spacing"):
        run("dpm-solver-2", VP(), 3, spacing="karras")


# ---- edm-heun ---------------------------------------------------------------------------------


def edm_euler(score, process, x, t, t_next, **options):
    """EDM with the Heun correction dropped (Euler in (x / alpha, sigma / alpha)): first order."""
    a, a_next = process.alpha(t), process.alpha(t_next)
    d = noise_prediction(score, process, x, t)
    score(x, t_next)  # keep 2 NFE per step
    step = edm_sigma(process, t_next) - edm_sigma(process, t)
    return Transition(a_next * (x / a + step * d), 0.0)


def test_edm_heun_is_second_order_on_ve():
    res = rate(EDM_HEUN, VE())
    assert res.fit.settled and res.verdict == "consistent"
    assert abs(res.fit.slope + 2.0) < 0.1


def test_edm_without_correction_is_rejected():
    res = rate(dataclasses.replace(EDM_HEUN, name="edm-euler", step=edm_euler), VE(), CONTROL_STEPS)
    assert res.verdict in ("slower", "inconclusive")
    assert abs(res.fit.slope + 1.0) < 0.15


def test_edm_rho_grid_on_ve():
    """sigma_i = (s_max^(1/7) + i/N (s_min^(1/7) - s_max^(1/7)))^7 at VE times
    t_i = log(sigma_i / sigma_min) / log(sigma_max / sigma_min)."""
    ve, n, t_end = VE(), 6, 1e-5
    sched = EDM_HEUN.schedule(ve, n, t_end, dict(EDM_HEUN.options))
    ts = [t for t, _ in sched] + [t_end]
    s_max, s_min = 50.0, ve.sigma(t_end)
    for i, t in enumerate(ts):
        sig = (s_max ** (1 / 7) + i / n * (s_min ** (1 / 7) - s_max ** (1 / 7))) ** 7
        assert t == pytest.approx(math.log(sig / 0.01) / math.log(50.0 / 0.01), abs=1e-13)


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
def test_edm_heun_converges_to_exact_flow(process):
    target = gaussian_target(2)
    x = target.noised(process, 1.0).sample(5, seed=3)
    phi = exact_flow(target, process, x, process.t_end_default)
    err = [float((run("edm-heun", process, n, x).x - phi).abs().max()) for n in (100, 400)]
    assert err[1] < 3e-4 and err[0] / err[1] > 12  # second order: 16x for 4x the steps
    res = run("edm-heun", process, 10, x)
    assert res.nfe == 20 == res.info["score_calls"] and res.t_end == process.t_end_default


def test_edm_churn_schedule_and_nfe():
    """gamma = min(S_churn / N, sqrt 2 - 1); the first level is already sigma_max (clipped, no
    churn); every later level gets a noise-raising stage with sigma_hat = (1 + gamma) sigma_i."""
    ve, n = VE(), 5
    opts = {**EDM_HEUN.options, "churn": 1.0}
    sched = EDM_HEUN.schedule(ve, n, ve.t_end_default, opts)
    up = [(t, u) for t, u in sched if u > t]
    assert len(sched) == 2 * n - 1 and len(up) == n - 1 and sched[0][0] == 1.0
    for t, u in up:
        assert edm_sigma(ve, u) / edm_sigma(ve, t) == pytest.approx(1.2, rel=1e-12)
    res = run("edm-heun", ve, n, churn=1.0, seed=1)
    assert res.nfe == 2 * n == res.info["score_calls"]
    assert not torch.equal(res.x, run("edm-heun", ve, n, churn=1.0, seed=2).x)
    window = {**opts, "s_tmin": 0.05, "s_tmax": 1.0}
    inside = [s for s in EDM_HEUN.schedule(ve, n, ve.t_end_default, window) if s[1] > s[0]]
    assert all(0.05 <= edm_sigma(ve, t) <= 1.0 for t, _ in inside) and len(inside) < len(up)


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
def test_edm_churn_converges(process):
    """Churn re-noises to sigma_hat with the exact forward kernel, so at a fixed gamma = 0.2 the
    exact output law still converges to the reference (measured W2: 2e-2 at N = 50, 4e-3 at
    N = 200, about first order), and it differs from the deterministic sampler's law."""
    target = gaussian_target(2)
    init = exact.law_of(target.noised(process, 1.0))
    ref = exact.law_of(target.noised(process, process.t_end_default))
    score = target.score_fn(process)
    err = [
        exact.distance("w2", ref, exact.propagate(EDM_HEUN, score, process, init, n, churn=n / 5))
        for n in (50, 200)
    ]
    assert err[1].value < 1e-2 and err[0].value / err[1].value > 3.5
    det = exact.propagate(EDM_HEUN, score, process, init, 200)
    assert exact.distance("w2", ref, det).value < err[1].value / 5


@pytest.mark.parametrize(
    "bad, word",
    [({"rho": 0.0}, "rho"), ({"churn": -1.0}, "churn"), ({"s_tmin": 2.0, "s_tmax": 1.0}, "s_tmin")],
)
def test_edm_refuses_bad_options(bad, word):
    with pytest.raises(ValueError, match=word):
        run("edm-heun", VE(), 3, **bad)


def test_declared_specs():
    got = {
        name: (REGISTRY[name].nfe_per_step, REGISTRY[name].expected_order, REGISTRY[name].affine)
        for name in ("ode-rk45", "dpm-solver-2", "edm-heun")
    }
    assert got == {
        "ode-rk45": (6, None, False),
        "dpm-solver-2": (2, 2.0, True),
        "edm-heun": (2, 2.0, True),
    }
    assert REGISTRY["dpm-solver-2"].claims and REGISTRY["edm-heun"].claims
