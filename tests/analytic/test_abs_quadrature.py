"""Cut-cell quadrature of int |f| in 2-D against exact Gaussian TV (analytic.gaussian.tv_2d)."""

import math

import pytest
import torch

from analytic.abs_quadrature import integrate_abs_2d
from analytic.gaussian import tv_2d
from analytic.gmm import GaussianMixture


def _pair(eps: float):
    m0 = torch.tensor([0.0, 0.0], dtype=torch.float64)
    s0 = torch.tensor([[1.0, 0.3], [0.3, 0.8]], dtype=torch.float64)
    m1 = m0 + eps * torch.tensor([0.7, -0.4], dtype=torch.float64)
    s1 = s0 + eps * torch.tensor([[0.5, 0.1], [0.1, -0.3]], dtype=torch.float64)
    g0 = GaussianMixture([1.0], m0[None], s0[None])
    g1 = GaussianMixture([1.0], m1[None], s1[None])

    def f(x, axes=None, mask=None):
        return torch.exp(g0.log_prob(x)) - torch.exp(g1.log_prob(x))

    def envelope(x, axes=None, mask=None):
        return torch.exp(g0.log_prob(x)) + torch.exp(g1.log_prob(x))

    return f, envelope, float(tv_2d(m0, s0, m1, s1))


def _integrate(f, envelope, h, **kw):
    n = int(math.ceil(18.0 / h))
    return integrate_abs_2d(f, (-9.0, -9.0), h, (n, n), magnitude=envelope, **kw)


@pytest.mark.parametrize("eps", [1e-1, 1e-3, 1e-5])
def test_tv_of_gaussian_pairs_to_1e7(eps):
    f, envelope, exact = _pair(eps)
    for h in (0.52, 0.39):  # sigma_min / 1.5 and / 2, as the grid evaluator uses
        total_abs, total, leaves = _integrate(f, envelope, h)
        assert abs(0.5 * total_abs - exact) < 1e-7 * exact, (h, 0.5 * total_abs, exact)
        assert abs(total) < 1e-9 and leaves > 0  # both laws have mass 1


def test_negative_controls_kinks_and_no_refinement():
    """The plain trapezoid rule of |f| on the same grid, and cut cells without refinement
    (depth 0, i.e. Gauss-Legendre across the kink), are both far less accurate."""
    f, envelope, exact = _pair(1e-3)
    h = 0.39
    axis = -9.0 + h * torch.arange(int(18 / h) + 1, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    trapezoid = 0.5 * h * h * float(f(grid).abs().sum())
    assert abs(trapezoid - exact) > 1e-5 * exact
    shallow, _, _ = _integrate(f, envelope, h, depth=0)
    assert abs(0.5 * shallow - exact) > 1e-5 * exact


def test_skipping_negligible_cells_changes_nothing():
    f, envelope, exact = _pair(1e-2)
    full, _, _ = _integrate(f, None, 0.45)
    skipped, _, _ = _integrate(f, envelope, 0.45)
    assert abs(full - skipped) < 1e-13 * full


def test_one_signed_integrand_is_its_integral():
    g = GaussianMixture([1.0], torch.zeros(1, 2, dtype=torch.float64), [0.5])
    total_abs, total, leaves = integrate_abs_2d(
        lambda x, axes=None, mask=None: torch.exp(g.log_prob(x)), (-8.0, -8.0), 0.4, (40, 40)
    )
    assert leaves == 0 and abs(total_abs - 1.0) < 1e-13 and abs(total - 1.0) < 1e-13


def test_rejects_empty_domains():
    with pytest.raises(ValueError, match="h > 0"):
        integrate_abs_2d(lambda x, a=None, m=None: x[:, 0], (0.0, 0.0), 0.0, (3, 3))


@pytest.mark.parametrize("std", [0.05, 0.6])
def test_kernel_sum_density_at_scattered_points(std):
    """Banded (narrow kernels) and dense (wide kernels) paths against the direct sum."""
    from analytic.quadrature import KernelSum

    g = torch.Generator().manual_seed(0)
    for d in (1, 2):
        centres = 2.0 * torch.randn(3000, d, generator=g, dtype=torch.float64)
        weights = torch.rand(3000, generator=g, dtype=torch.float64)
        k = KernelSum(weights / weights.sum(), centres, std)
        y = 3.0 * torch.randn(5000, d, generator=g, dtype=torch.float64)
        direct = torch.exp(k.log_density(y))
        assert float((k.density_at(y) - direct).abs().max()) < 1e-12 * float(direct.max())
