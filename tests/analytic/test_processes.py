import math

import pytest
import torch

from analytic.processes import VE, VP, alpha_bar, ho_linear_betas, li_yan_betas, make_process

PROCESSES = [VP(), VE()]


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: p.name)
def test_float_and_tensor_inputs_agree(process):
    ts = [0.0, 1e-5, 1e-3, 0.3, 1.0]
    tt = torch.tensor(ts, dtype=torch.float64)
    for name in ("alpha", "sigma", "f", "g2"):
        vec = getattr(process, name)(tt)
        assert vec.dtype == torch.float64
        for t, v in zip(ts, vec, strict=True):
            assert getattr(process, name)(t) == pytest.approx(float(v), rel=1e-14, abs=1e-300)


def test_vp_closed_forms():
    vp = VP()
    t = 0.37
    log_alpha = -0.25 * t * t * 19.9 - 0.5 * t * 0.1
    assert vp.alpha(t) == pytest.approx(math.exp(log_alpha), rel=1e-15)
    assert vp.alpha(t) ** 2 + vp.sigma(t) ** 2 == pytest.approx(1.0, rel=1e-15)
    # sigma at tiny t is accurate (no 1 - alpha^2 cancellation): sigma^2 ~ beta_min t
    assert vp.sigma(1e-12) ** 2 == pytest.approx(0.1e-12, rel=1e-9)
    assert vp.g2(t) == pytest.approx(0.1 + t * 19.9)
    assert vp.f(t) == pytest.approx(-0.5 * (0.1 + t * 19.9))
    assert vp.t_end_default == 1e-3 and vp.prior_std() == 1.0


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: p.name)
def test_sde_coefficients_match_marginals(process):
    """d/dt alpha = f alpha and d/dt sigma^2 = 2 f sigma^2 + g^2 (marginal ODEs of a linear SDE)."""
    for t in (0.1, 0.5, 0.9):
        h = 1e-6
        da = (process.alpha(t + h) - process.alpha(t - h)) / (2 * h)
        ds2 = (process.sigma(t + h) ** 2 - process.sigma(t - h) ** 2) / (2 * h)
        assert da == pytest.approx(process.f(t) * process.alpha(t), rel=1e-7, abs=1e-12)
        expected = 2 * process.f(t) * process.sigma(t) ** 2 + process.g2(t)
        assert ds2 == pytest.approx(expected, rel=1e-7)


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: p.name)
def test_lambda_inverse(process):
    for t in (1e-5, 1e-3, 0.2, 0.77, 1.0):
        assert process.t_of_lam(process.lam(t)) == pytest.approx(t, rel=1e-10)
        assert process.lam(t) == pytest.approx(
            math.log(process.alpha(t) / process.sigma(t)), rel=1e-12
        )


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: p.name)
def test_transition_composes_marginals(process):
    """alpha(t) = rho alpha(s) and sigma(t)^2 = rho^2 sigma(s)^2 + var."""
    s, t = 0.3, 0.31
    rho, var = process.transition(s, t)
    assert process.alpha(t) == pytest.approx(rho * process.alpha(s), rel=1e-14)
    assert process.sigma(t) ** 2 == pytest.approx(rho**2 * process.sigma(s) ** 2 + var, rel=1e-13)


def test_ve_closed_forms():
    ve = VE()
    assert ve.sigma(0.0) == pytest.approx(0.01) and ve.sigma(1.0) == pytest.approx(50.0)
    assert ve.g2(0.5) == pytest.approx(ve.sigma(0.5) ** 2 * 2 * math.log(5000.0))
    assert ve.alpha(0.4) == 1.0 and ve.prior_std() == 50.0 and ve.t_end_default == 1e-5


def test_ho_chain():
    b = ho_linear_betas(1000)
    assert b[0] == pytest.approx(1e-4) and b[-1] == pytest.approx(0.02)
    ab = alpha_bar(b)
    assert float(ab[-1]) == pytest.approx(math.exp(torch.log1p(-b).sum().item()), rel=1e-12)
    assert 3e-5 < float(ab[-1]) < 5e-5  # Ho et al.: alpha_bar_1000 ~ 4.0e-5


def test_li_yan_chain():
    for T in (20, 100, 1000):
        b = li_yan_betas(T)
        rate = 4.0 * math.log(T) / T
        assert b[0] == pytest.approx(T**-2.0)
        assert float(b.max()) == pytest.approx(rate)  # saturates at c1 log T / T
        assert b[1] == pytest.approx(rate * T**-2.0 * (1 + rate))
        ab_T = float(alpha_bar(b)[-1])
        assert ab_T < {20: 1.5e-3, 100: 1e-4, 1000: 2e-6}[T]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: VP(beta_min=-1.0), "beta_min"),
        (lambda: VE(sigma_min=5.0, sigma_max=1.0), "sigma_min"),
        (lambda: VP().alpha(1.5), r"time must lie in \[0, 1\]"),
        (lambda: VE().sigma(float("nan")), "time must lie"),
        (lambda: make_process("subvp"), "unknown process 'subvp'; allowed: vp, ve"),
        (lambda: ho_linear_betas(0), "n >= 1"),
        (lambda: li_yan_betas(1), "T >= 2"),
        (lambda: li_yan_betas(10, c1=8.0), "c1 log T / T < 1"),
    ],
)
def test_validation(call, message):
    with pytest.raises(ValueError, match=message):
        call()
