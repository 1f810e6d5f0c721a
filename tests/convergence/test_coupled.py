"""The coupled evaluator: W2 upper bounds and multilevel weak errors (THEORY.md 4.7).

Golden values come from the exact Gaussian evaluator (moment propagation through the sampler's
own steps, THEORY.md 3.3) and, for the kernel mean embedding, from the Gaussian density
N(c; m, C + l^2 I) and a brute-force Monte Carlo average. Brownian-consistent noise costs about
ten normal draws per step whatever n, so the stochastic checks use short ladders.
"""

import math

import pytest
import torch

from analytic.gmm import GaussianMixture
from analytic.processes import make_process
from convergence.evaluators import error
from convergence.evaluators import gaussian as exact
from convergence.evaluators.coupled import (
    Z95,
    closed_form_functions,
    coupled_error,
    coupled_errors,
    coupled_w2,
    gaussian_kernel_mean,
    run_levels,
    strong_order,
    weak_errors,
)
from convergence.rates import fit_rate
from convergence.samplers import get_spec
from convergence.samplers.base import check_t_end
from convergence.targets import parse_target

VP = make_process("vp")
T_END = check_t_end(VP, None)


def setting(name):
    target = parse_target(name)
    return target, target.noised(VP, 1.0), target.noised(VP, T_END), target.score_fn(VP)


def run(sampler, name, steps, **kwargs):
    target, start, reference, score = setting(name)
    kwargs = {"n": 300, "seed": 0, "t_end": T_END, **kwargs}
    return coupled_error(
        sampler, target, VP, steps, score=score, start=start, reference=reference, **kwargs
    )


def ladder(sampler, name, steps, levels, n, **kwargs):
    _, start, _, score = setting(name)
    x0 = start.sample(n, seed=0)
    return run_levels(sampler, score, VP, x0, steps, levels, seed=0, t_end=T_END, **kwargs)


def exact_law(sampler, name, steps):
    _, start, _, score = setting(name)
    return exact.propagate(get_spec(sampler), score, VP, exact.law_of(start), steps, t_end=T_END)


def distances(outputs):
    return [
        math.sqrt(float((a - b).square().sum(1).mean()))
        for a, b in zip(outputs, outputs[1:], strict=False)
    ]


# ---- closed-form test functions ---------------------------------------------------------------


def test_kernel_mean_matches_gaussian_density_form_and_monte_carlo():
    mix = parse_target("gmm:d=3,k=2,seed=1")
    centres = torch.tensor([[0.0, 0.5, -1.0], [1.5, -0.5, 0.2]], dtype=torch.float64)
    ell = 0.7
    got = gaussian_kernel_mean(mix, centres, ell)
    # (2 pi l^2)^{d/2} sum_k w_k N(c; m_k, C_k + l^2 I), through torch.distributions
    comps = torch.distributions.MultivariateNormal(
        mix.means, mix.covariance_matrices() + ell**2 * torch.eye(3, dtype=torch.float64)
    )
    dens = (mix.weights[:, None] * comps.log_prob(centres[:, None]).T.exp()).sum(0)
    assert torch.allclose(got, (2 * math.pi * ell**2) ** 1.5 * dens, rtol=1e-12)
    x = mix.sample(100_000, seed=3)
    f = torch.exp(-torch.cdist(x, centres).square() / (2 * ell**2))
    assert torch.all((f.mean(0) - got).abs() < 5 * f.std(0) / math.sqrt(len(x)))


def test_closed_form_functions_exact_moments():
    ref = parse_target("gmm:d=3,k=3,seed=0")
    fns = closed_form_functions(ref)
    second = ref.covariance() + torch.outer(ref.mean(), ref.mean())
    i, j = torch.triu_indices(3, 3)
    assert fns.names[:4] == ("x0", "x1", "x2", "x0x0")
    assert torch.allclose(fns.exact[:3], ref.mean(), atol=1e-14)
    assert torch.allclose(fns.exact[3:9], second[i, j], atol=1e-13)
    assert len(fns.exact) == 3 + 6 + 3 + 2  # K component means and mean +- s (1,..,1)/sqrt(d)
    x = ref.sample(100_000, seed=5)
    F = fns(x)
    assert torch.all((F.mean(0) - fns.exact).abs() < 5 * F.std(0) / math.sqrt(len(x)))


# ---- W2 upper bound ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gaussian:d=2", "gaussian:d=3"])
@pytest.mark.parametrize("sampler", ["ddpm", "em", "ddim"])
def test_w2_bound_is_never_below_exact_w2(name, sampler):
    """Acceptance (issue 4): the coupled W2 bound is never below the exact W2 where both exist.
    One ladder T = 4..64 gives the bounds at T = 4, 8, 16 with T_ref = 4 T; the public entry
    point reproduces the first one bit for bit (same initial points, same Brownian path)."""
    target = parse_target(name)
    levels = ladder(sampler, name, 4, 4, 300)
    order = strong_order(get_spec(sampler), levels)
    assert order == (0.5 if get_spec(sampler).stochastic else 1.0)
    for i, steps in enumerate((4, 8, 16)):
        bound = coupled_w2(levels.outputs[i : i + 3], order)
        w2 = error(sampler, target, VP, steps, metric="w2", evaluator="gaussian").value
        if get_spec(sampler).stochastic:  # synchronous coupling is far from optimal: a loose bound
            assert bound.value - bound.half_width > 1.5 * w2
        else:  # the PF-ODE flow is the OT map for Gaussians: the bound is nearly tight
            assert bound.value + bound.half_width >= w2
            assert bound.value < 1.1 * w2
    public = run(sampler, name, 4, metric="w2", ref_factor=4)
    assert public.value == coupled_w2(levels.outputs[:3], order).value
    assert public.evaluator == "coupled" and public.metric == "w2" and not public.exact
    assert public.nfe == 4 and public.n_samples == 300 and public.floor < 1e-12


def test_ddim_bound_approaches_exact_w2_on_gaussian():
    """Deterministic sampler, Gaussian target: Y_T and Y_ref are affine maps of one x whose
    matrices commute with the covariances, so the synchronous coupling is optimal (THEORY.md 3.2)
    and the bound tends to the exact W2 as the reference refines."""
    name = "gaussian:d=3"
    w2 = error("ddim", parse_target(name), VP, 8, metric="w2", evaluator="gaussian").value
    levels = ladder("ddim", name, 8, 5, 2000)
    fine = coupled_w2(levels.outputs, 1.0)  # T_ref = 32 T
    coarse = coupled_w2(levels.outputs[:3], 1.0)  # T_ref = 4 T
    assert abs(fine.value / w2 - 1) < 0.01
    assert fine.half_width < 0.03 * w2
    assert coarse.distance < fine.distance < w2 < coarse.value
    assert fine.tail < coarse.tail


def test_w2_tail_uses_measured_ratio_and_refuses_divergent_levels():
    base = torch.arange(12, dtype=torch.float64).reshape(6, 2)
    y = [v + 0.01 * k * base for k, v in enumerate((0.0, 1.0, 1.5, 1.8))]
    est = coupled_w2(y, order=1.0)
    deltas = distances(y)
    rho = deltas[2] / deltas[1]  # about 0.6 > 1/2: the measured ratio wins
    assert rho > 0.55 and est.ratio == pytest.approx(rho)
    distance = math.sqrt(float((y[0] - y[3]).square().sum(1).mean()))
    assert est.value == pytest.approx(distance + deltas[2] * rho / (1 - rho))
    assert coupled_w2(y, order=0.5).ratio == pytest.approx(2**-0.5)  # the order floor wins
    assert coupled_w2([y[0], y[1], 3 * y[1]], order=1.0).value == math.inf


def test_ci_half_width_is_the_delta_method_of_the_squared_distances():
    """Y_1 = Y_2: no tail, value = sqrt(m0) with m0 = mean |Y_0 - Y_2|^2, so the half-width is
    Z95 sd(|Y_0 - Y_2|^2) / (2 sqrt(m0) sqrt(n))."""
    gen = torch.Generator().manual_seed(0)
    y0 = torch.randn(500, 3, generator=gen, dtype=torch.float64)
    y1 = y0 + 0.1 * torch.randn(500, 3, generator=gen, dtype=torch.float64)
    y2 = y1 + 0.07 * torch.randn(500, 3, generator=gen, dtype=torch.float64)
    sq = (y0 - y2).square().sum(1)
    m0 = float(sq.mean())
    tail_free = coupled_w2([y0, y2, y2], order=1.0)
    assert tail_free.value == pytest.approx(math.sqrt(m0), rel=1e-12) and tail_free.tail == 0
    est = coupled_w2([y0, y1, y2], order=1.0)
    assert est.value > est.distance == pytest.approx(math.sqrt(m0), rel=1e-12)
    # delta method: value = sqrt(m0) + sqrt(m2) rho / (1 - rho), rho = sqrt(m2 / m1)
    cols = torch.stack([sq, (y1 - y2).square().sum(1), (y0 - y1).square().sum(1)], 1)
    m = cols.mean(0).tolist()
    rho = math.sqrt(m[1] / m[2])
    assert rho > 0.6 and est.ratio == pytest.approx(rho)  # the measured ratio, not the floor 1/2
    grad = torch.tensor(
        [
            0.5 / math.sqrt(m[0]),
            0.5 / math.sqrt(m[1]) * rho / (1 - rho)
            + math.sqrt(m[1]) / (1 - rho) ** 2 * 0.5 * rho / m[1],
            -math.sqrt(m[1]) / (1 - rho) ** 2 * 0.5 * rho / m[2],
        ],
        dtype=torch.float64,
    )
    half = Z95 * math.sqrt(float(grad @ torch.cov(cols.T) @ grad) / 500)
    assert est.half_width == pytest.approx(half, rel=1e-10)


# ---- weak errors ------------------------------------------------------------------------------


def test_weak_errors_match_exact_gaussian_output_moments():
    """em on a 2-D Gaussian: every component of the multilevel estimate (coupled part, fine term,
    total, Richardson) agrees with the exact output laws N(mu_T, Sigma_T) within two CI
    half-widths; the Richardson model itself is within 2% of e_T here."""
    name, steps = "gaussian:d=2", 8
    fns = closed_form_functions(setting(name)[2])
    levels = ladder("em", name, steps, 3, 2000)
    weak = weak_errors(levels.outputs, fns, steps, order=1.0)

    def expected(law):
        out = GaussianMixture([1.0], law.mean[None], law.cov[None])
        return closed_form_functions(out, centres=fns.centres, length_scale=fns.length_scale).exact

    e = [expected(exact_law("em", name, steps << k)) - fns.exact for k in range(4)]
    e_T, e_ref = e[0], e[3]
    richardson = e[0] - e[3] + (e[2] - e[3])  # D_{L-1} / (2^p - 1) with p = 1
    assert abs(richardson.norm() / e_T.norm() - 1) < 0.02
    assert torch.all((weak.extrapolated - richardson).abs() < 2 * weak.extrapolated_half)
    assert weak.steps == levels.steps == (8, 16, 32, 64)
    assert torch.all((weak.total - e_T).abs() < 2 * weak.total_half)
    assert torch.all((weak.fine - e_ref).abs() < 2 * weak.fine_half)
    assert torch.all((weak.coupled - (e_T - e_ref)).abs() < 2 * weak.coupled_half)
    assert torch.allclose(weak.coupled, weak.differences.sum(0), atol=1e-12)
    assert torch.allclose(weak.total, weak.coupled + weak.fine, atol=1e-12)
    # the coupling pays: the T-dependent part is resolved better than the Monte Carlo term
    assert weak.coupled_half.norm() < 0.6 * weak.fine_half.norm()


def test_weak_mean_error_agrees_with_exact_gaussian_mean_error():
    name, steps = "gaussian:d=2", 8
    est = run(
        "em",
        name,
        steps,
        metric="weak",
        functions=("mean",),
        n=2000,
        ref_factor=4,
        fine_term="monte-carlo",
    )
    reference_mean = parse_target(name).noised(VP, T_END).mean()
    mean_error = float(torch.linalg.vector_norm(exact_law("em", name, steps).mean - reference_mean))
    assert mean_error == pytest.approx(0.0824, abs=5e-4)  # em's first-order bias in the mean
    assert abs(est.value - mean_error) < est.uncertainty < 0.3 * mean_error
    assert est.metric == "weak" and est.floor > est.uncertainty
    kw = {"metric": "weak", "functions": ("mean",), "n": 2000, "ref_factor": 4}
    rich = run("em", name, steps, **kw)  # the default for samplers with a declared order
    assert abs(rich.value - mean_error) < rich.uncertainty < 0.3 * mean_error
    assert rich.floor == 0 and "Richardson" in rich.note


def test_em_coupled_differences_shrink_first_order_on_gmm():
    """Non-Gaussian target in d = 4, T = 10..80 with the last step's noise kept: the coupled level
    distances delta_l (strong) and the norms of the weak differences D_l decay like T^-1."""
    levels = ladder("em", "gmm:d=4,k=3,seed=0", 10, 3, 2000, final_noise=True)
    reference = setting("gmm:d=4,k=3,seed=0")[2]
    steps = levels.steps[:-1]
    assert abs(fit_rate(steps, distances(levels.outputs)).slope + 1) < 0.2
    weak = weak_errors(levels.outputs, closed_form_functions(reference), 10)
    assert abs(fit_rate(steps, weak.differences.norm(dim=1)).slope + 1) < 0.2
    assert torch.all(weak.differences_half.norm(dim=1) < 0.5 * weak.differences.norm(dim=1))


@pytest.mark.slow
def test_em_coupled_differences_first_order_on_gmm_long_ladder():
    """T = 20..1280 on gmm:d=4: with final_noise=True delta_l and |D_l| settle at slope -1; without
    it the strong distances flatten towards the order 1/2 of the unshared final noise."""
    levels = ladder("em", "gmm:d=4,k=3,seed=0", 20, 6, 2000, final_noise=True)
    reference = setting("gmm:d=4,k=3,seed=0")[2]
    steps = levels.steps[:-1]
    assert abs(fit_rate(steps[2:], distances(levels.outputs[2:])).slope + 1) < 0.15
    weak = weak_errors(levels.outputs, closed_form_functions(reference), 20)
    assert abs(fit_rate(steps, weak.differences.norm(dim=1)).slope + 1) < 0.2
    assert fit_rate(steps[3:], distances(levels.outputs[3:])).slope < -0.9
    plain = ladder("em", "gmm:d=4,k=3,seed=0", 20, 6, 2000)
    assert fit_rate(steps[3:], distances(plain.outputs[3:])).slope > -0.85


# ---- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sampler", "kwargs", "message"),
    [
        ("ddpm", {"spacing": "quadratic"}, "uniform schedule"),
        ("edm-heun", {"churn": 2.0}, "uniform schedule"),
        ("ode-rk45", {}, "adaptive"),
        ("pc", {}, "not a chain"),
        ("ddpm", {"denoise": True}, "denoise=False"),
        ("ddpm", {"n": 1}, "n >= 2"),
        ("ddpm", {"metric": "kl"}, "measures w2 or weak"),
        ("ddpm", {"ref_factor": 12}, "power of two"),
        ("ddpm", {"ref_factor": 2}, "ref_factor >= 4"),
        ("ddpm", {"ref_factor": 8, "levels": 2}, "contradicts"),
        ("ddpm", {"functions": ("mean", "cubic")}, "functions must be"),
        ("ddpm", {"fine_term": "exact"}, "fine_term must be"),
        ("als", {"fine_term": "richardson"}, "needs a declared order"),
    ],
)
def test_refusals_are_one_line_value_errors(sampler, kwargs, message):
    kwargs = {"metric": "w2", **kwargs}
    with pytest.raises(ValueError, match=message) as info:
        run(sampler, "gaussian:d=2", 4, **kwargs)
    assert "\n" not in str(info.value)


def test_deterministic_sampler_on_non_uniform_schedule_is_coupled_by_initial_points():
    target, start, reference, score = setting("gaussian:d=2")
    w2 = error("ddim", target, VP, 6, metric="w2", evaluator="gaussian", spacing="quadratic")
    found = coupled_errors(
        "ddim",
        target,
        VP,
        6,
        metrics=("w2", "weak"),
        score=score,
        start=start,
        reference=reference,
        n=1000,
        seed=0,
        t_end=T_END,
        spacing="quadratic",
        fine_term="monte-carlo",
    )
    assert w2.value <= found["w2"].value + found["w2"].uncertainty < 1.1 * w2.value
    assert found["weak"].uncertainty > 0 and found["weak"].floor > 0
