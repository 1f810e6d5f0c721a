"""Predicted leading errors C T^-p (``analytic.symbolic``) against the package's exact errors.

The exact errors come from the package's own samplers (``convergence.samplers`` step functions)
pushed through the exact Gaussian evaluator (``convergence.evaluators.gaussian.propagate``, its
O(d) coordinate-wise path, with the closed-form affine score of the target) and the closed-form
distances; ``test_fast_path_is_the_evaluator`` checks that this equals
``convergence.evaluators.error`` (the full evaluator) to round-off. Independent golden numbers:
the degenerate N(0, 1) target under VP worked by hand (below), scipy quadrature, 40-digit
mpmath derivatives, and the closed-form Gaussian distances of ``analytic.gaussian``.
"""

from __future__ import annotations

import math

import mpmath
import pytest
import sympy as sp
import torch
from scipy import integrate

from analytic import symbolic
from analytic.gaussian import hellinger, kl, tv_1d, w2
from analytic.gmm import GaussianMixture
from analytic.processes import VE, VP, make_process
from convergence.evaluators import error
from convergence.evaluators import gaussian as exact
from convergence.samplers import get_spec
from convergence.targets import parse_target

TARGET = parse_target("gaussian:d=1")  # N(1, 0.5)
MEAN, VAR = 1.0, 0.5
F64 = torch.float64
SAMPLERS = ("ddim", "ddpm", "ode-euler", "ode-heun")
# DDPM's next-order term is larger (the skipped last noise beta(t_end + h/2) h differs from
# its leading term beta(t_end) h by ~83 h relative): KL ratio 0.985 at T = 2048, 0.992 at 4096
LADDER = {s: (64, 256, 1024, 4096 if s == "ddpm" else 2048) for s in SAMPLERS}


def _affine_score(process, mean: float, var: float):
    """The exact score of N(mean, var) under ``process``: -(x - alpha m) / (alpha^2 v + sigma^2)."""

    def score(x: torch.Tensor, t: float) -> torch.Tensor:
        a, s = process.alpha(t), process.sigma(t)
        return -(x - a * mean) / (a * a * var + s * s)

    return score


def exact_errors(sampler, process, steps, *, mean=MEAN, var=VAR, final_noise=False):
    """{metric: exact error} of ``sampler`` after ``steps`` steps from the exact q_1 of the
    target N(mean, var), against its exact q_{t_end}."""
    target = GaussianMixture([1.0], [[mean]], [[[var]]])
    start = exact.law_of(target.noised(process, 1.0))
    out = exact.propagate(
        get_spec(sampler),
        _affine_score(process, mean, var),
        process,
        exact.GaussianLaw(start.mean, torch.diagonal(start.cov), diagonal=True),
        steps,
        final_noise=final_noise,
    )
    out = exact.GaussianLaw(out.mean, torch.diag(out.cov))
    ref = exact.law_of(target.noised(process, process.t_end_default))
    return {m: exact.distance(m, ref, out).value for m in symbolic.METRICS}


@pytest.fixture(scope="module")
def vp_errors():
    """Exact errors on gaussian:d=1 under VP for every sampler and T of its ladder."""
    vp = make_process("vp")
    return {(s, T): exact_errors(s, vp, T) for s in SAMPLERS for T in LADDER[s]}


def test_fast_path_is_the_evaluator():
    """The helper above reproduces convergence.evaluators.error (gaussian evaluator, exact)."""
    vp = make_process("vp")
    assert float(TARGET.means[0, 0]) == MEAN and float(TARGET.covariance_matrices()[0, 0, 0]) == VAR
    for sampler in SAMPLERS:
        mine = exact_errors(sampler, vp, 32)
        for metric in ("kl", "w2", "tv"):
            est = error(sampler, TARGET, vp, 32, metric=metric)
            assert est.evaluator == "gaussian" and est.exact
            assert mine[metric] == pytest.approx(est.value, rel=1e-9)


# ---- the acceptance check of issue 6 ---------------------------------------------------------


@pytest.mark.parametrize("metric", symbolic.METRICS)
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_exact_over_predicted_tends_to_one(vp_errors, sampler, metric):
    lead = symbolic.leading_error(sampler, metric, mean=MEAN, var=VAR)
    assert lead.order == (2.0 if metric == "kl" else 1.0) * get_spec(sampler).expected_order
    steps = LADDER[sampler]
    ratios = [vp_errors[sampler, T][metric] / float(lead.predict(T)) for T in steps]
    gaps = [abs(r - 1.0) for r in ratios]
    assert gaps[-1] < 0.01, (sampler, metric, ratios)
    assert all(a > b for a, b in zip(gaps, gaps[1:], strict=False)), (sampler, metric, ratios)


def _negative_controls(sampler: str, metric: str) -> dict[str, float]:
    """Wrong constants: the variance (or mean) term dropped, DDIM and Euler swapped, DDPM's
    skipped last noise ignored (the prediction for a run with final noise)."""
    me = symbolic.moment_errors(sampler, mean=MEAN, var=VAR)
    wrong = {"no variance term": symbolic.metric_constant(metric, me.mean, 0.0, me.ref_var)}
    if me.mean != 0.0:
        wrong["no mean term"] = symbolic.metric_constant(metric, 0.0, me.var, me.ref_var)
    swap = {"ddim": "ode-euler", "ode-euler": "ddim"}.get(sampler)
    if swap:
        wrong["swapped sampler"] = symbolic.leading_error(swap, metric, mean=MEAN, var=VAR).constant
    if sampler == "ddpm":
        lead = symbolic.leading_error(sampler, metric, mean=MEAN, var=VAR, final_noise=True)
        wrong["final noise ignored"] = lead.constant
    return wrong


@pytest.mark.parametrize("metric", ["kl", "w2"])
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_wrong_constants_fail_the_check(vp_errors, sampler, metric):
    T = LADDER[sampler][-1]
    order = symbolic.leading_error(sampler, metric).order
    for name, constant in _negative_controls(sampler, metric).items():
        predicted = constant * T**-order
        ratio = vp_errors[sampler, T][metric] / predicted if predicted else math.inf
        assert abs(ratio - 1.0) > 0.03, (sampler, metric, name, ratio)


def test_ddpm_with_final_noise():
    """final_noise=True drops the skipped-noise term: the prediction follows that run, and
    converges much faster (the term carried DDPM's large next-order correction)."""
    vp = make_process("vp")
    gaps = []
    for T in (256, 1024):
        got = exact_errors("ddpm", vp, T, final_noise=True)
        for metric in ("kl", "w2"):
            lead = symbolic.leading_error("ddpm", metric, mean=MEAN, var=VAR, final_noise=True)
            gaps.append(abs(got[metric] / float(lead.predict(T)) - 1.0))
    assert max(gaps[2:]) < 1e-3 and max(gaps) < 3e-3


def test_ve_process():
    """The same derivation on VE (sigma_min = 0.01, sigma_max = 50, t_end = 1e-5)."""
    ve = make_process("ve")
    for sampler in SAMPLERS:
        lead = symbolic.leading_error(sampler, "w2", process="ve", mean=MEAN, var=VAR)
        ratios = [exact_errors(sampler, ve, T)["w2"] / float(lead.predict(T)) for T in (128, 1024)]
        assert abs(ratios[1] - 1.0) < 0.01, (sampler, ratios)
        assert abs(ratios[1] - 1.0) < abs(ratios[0] - 1.0), (sampler, ratios)


# ---- symbolic facts ---------------------------------------------------------------------------


def test_derived_orders():
    for sampler in SAMPLERS:
        assert symbolic.local_expansion(sampler).order == get_spec(sampler).expected_order


def test_rates_are_the_linearised_dynamics():
    """A = [h^1] a: for the PF-ODE samplers the exact flow's rate -v'/(2v) (THEORY.md 3.2,
    Jacobian sqrt(v(t') / v(t))); for DDPM the reverse-SDE mean rate -(f + g^2 / v), since
    a = (1 - beta / v) / rho with beta = g^2 h + O(h^2), rho = 1 + f h + O(h^2). DDIM and
    DDPM map the mean exactly (at x = m the score vanishes), so their mean error is 0."""
    t, a, s = symbolic.t, symbolic.alpha(symbolic.t), symbolic.sigma(symbolic.t)
    v = a**2 * symbolic.v0 + s**2
    f = a.diff(t) / a
    g2 = (s**2).diff(t) - 2 * f * s**2
    for sampler in ("ddim", "ode-euler", "ode-heun"):
        rate = symbolic.local_expansion(sampler).rate
        assert sp.simplify(rate + v.diff(t) / (2 * v)) == 0
    expansion = symbolic.local_expansion("ddpm")
    assert sp.simplify(expansion.rate + f + g2 / v) == 0
    assert sp.simplify(expansion.noise - g2) == 0
    for sampler in ("ddim", "ddpm"):
        assert symbolic.local_expansion(sampler).mean_error == 0


@pytest.mark.parametrize("process", [VP(), VE()], ids=["vp", "ve"])
def test_jets_match_high_precision_derivatives(process):
    """The hand-coded Leibniz jets against 40-digit numerical differentiation of the formulas."""
    mpmath.mp.dps = 40
    try:
        if isinstance(process, VP):
            b0, b1 = mpmath.mpf(process.beta_min), mpmath.mpf(process.beta_max)

            def alpha(u):
                return mpmath.exp(-u * u * (b1 - b0) / 4 - u * b0 / 2)

            def sigma(u):
                return mpmath.sqrt(1 - alpha(u) ** 2)
        else:
            lo, hi = mpmath.mpf(process.sigma_min), mpmath.mpf(process.sigma_max)

            def alpha(u):
                return mpmath.mpf(1)

            def sigma(u):
                return lo * (hi / lo) ** u

        n = len(symbolic._A)
        for u in (2e-3, 0.3, 0.9):
            jets = symbolic._jets(process, u)
            want = [mpmath.diff(alpha, u, k) for k in range(n)]
            want += [mpmath.diff(sigma, u, k) for k in range(n)]
            for got, ref in zip(jets, want, strict=True):
                assert got == pytest.approx(float(ref), rel=1e-10, abs=1e-12)
    finally:
        mpmath.mp.dps = 15


def test_degenerate_standard_normal_by_hand():
    """N(0, 1) under VP: q_t = N(0, 1) for all t. The PF-ODE drift f x + g^2 x / 2 vanishes
    (g^2 = -2 f), so ode-euler and ode-heun are exact. DDPM's variance map
    (1 - beta)^2 / rho^2 + beta = 1 (rho^2 = 1 - beta) is exact too, except that the last step
    skips its noise beta = 1 - alpha(t_end)^2 / alpha(t_end + h)^2 = beta(t_end) h + O(h^2):
    dv = -beta(t_end) h, W2 ~ |dv| / 2. DDIM: x' = (alpha alpha' + sigma sigma') x = cos(dtheta) x
    with alpha = cos theta, so dv = -sum sin^2(dtheta) ~ -h int theta'^2 dt,
    theta'^2 = alpha'^2 / sigma^2 = beta^2 alpha^2 / (4 sigma^2) (scipy quad below)."""
    vp = VP()
    t_end = vp.t_end_default
    for sampler in ("ode-euler", "ode-heun"):
        for metric in symbolic.METRICS:
            assert abs(symbolic.leading_error(sampler, metric).constant) < 1e-12
    ddpm = symbolic.leading_error("ddpm", "w2")
    assert ddpm.constant == pytest.approx(vp.beta(t_end) * (1 - t_end) / 2, rel=1e-9)
    assert symbolic.leading_error("ddpm", "w2", final_noise=True).constant < 1e-12

    def theta_dot2(u):
        return vp.beta(u) ** 2 * vp.alpha(u) ** 2 / (4 * vp.sigma(u) ** 2)

    integral = integrate.quad(theta_dot2, t_end, 1.0, epsabs=0, epsrel=1e-12, limit=200)[0]
    ddim = symbolic.moment_errors("ddim")
    assert ddim.mean == 0.0
    assert ddim.var == pytest.approx(-(1 - t_end) * integral, rel=1e-9)


# ---- metric constants ---------------------------------------------------------------------------


@pytest.mark.parametrize(("dm", "dv"), [(1.0, 0.0), (0.0, 1.0), (0.7, -1.3), (-0.2, 0.9)])
def test_metric_constants_are_the_small_error_limits(dm, dv):
    """metric_constant(dm, dv) = lim_{e -> 0} metric(N(m, s^2), N(m + e dm, s^2 + e dv)) / e^k
    (k = 2 for KL, 1 otherwise), against the closed forms of analytic.gaussian."""
    m, var, e = 0.3, 0.7, 1e-6
    ref = (torch.tensor([m], dtype=F64), torch.tensor([[var]], dtype=F64))
    out = (torch.tensor([m + e * dm], dtype=F64), torch.tensor([[var + e * dv]], dtype=F64))
    closed = {
        "kl": float(kl(*ref, *out, dS=torch.tensor([[-e * dv]], dtype=F64))) / e**2,
        "w2": float(w2(*ref, *out, dS=torch.tensor([[-e * dv]], dtype=F64))) / e,
        "hellinger": float(hellinger(*ref, *out, dS=torch.tensor([[-e * dv]], dtype=F64))) / e,
        "tv": float(tv_1d(m, var, m + e * dm, var + e * dv, dv=-e * dv)) / e,
    }
    for metric, value in closed.items():
        assert symbolic.metric_constant(metric, dm, dv, var) == pytest.approx(value, rel=1e-5)


@pytest.mark.parametrize(("a", "b"), [(1.0, 0.0), (0.0, 1.0), (0.4, -0.3), (-2.0, 0.5)])
def test_tv_constant_against_quadrature(a, b):
    """E|a Z + b (Z^2 - 1)| / 2 by scipy quad of the density-weighted integrand."""

    def integrand(z):
        return abs(a * z + b * (z * z - 1)) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)

    cuts = sorted({-12.0, 12.0, *(r.real for r in _roots(b, a, -b))})
    want = 0.5 * sum(
        integrate.quad(integrand, lo, hi, epsabs=0, epsrel=1e-13)[0]
        for lo, hi in zip(cuts, cuts[1:], strict=False)
    )
    got = symbolic.metric_constant("tv", a, 2 * b, 1.0)  # a = dm / s, b = dv / (2 s^2)
    assert got == pytest.approx(want, rel=1e-10)


def _roots(a2, a1, a0):
    if a2 == 0:
        return [] if a1 == 0 else [complex(-a0 / a1)]
    disc = a1 * a1 - 4 * a2 * a0
    return [complex((-a1 + sgn * math.sqrt(disc)) / (2 * a2)) for sgn in (-1, 1)]


# ---- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        (dict(sampler="em", metric="kl"), "unknown sampler"),
        (dict(sampler="ddim", metric="mmd"), "unknown metric"),
        (dict(sampler="ddim", metric="kl", process="subvp"), "unknown process"),
        (dict(sampler="ddim", metric="kl", var=0.0), "variance > 0"),
        (dict(sampler="ddim", metric="kl", mean=math.nan), "finite mean"),
        (dict(sampler="ddim", metric="kl", t_end=1.5), "t_end"),
    ],
)
def test_bad_input_is_one_clear_line(kwargs, needle):
    with pytest.raises(ValueError, match=needle) as info:
        symbolic.leading_error(**kwargs)
    assert "\n" not in str(info.value)
