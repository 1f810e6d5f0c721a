"""Semi-dual W2 over windowed Hermite potentials: exact for Gaussian pairs, lower bounds that
close on the exact 1-D quantile W2 for mixtures."""

import math

import pytest
import torch

from analytic.gmm import GaussianMixture
from analytic.quadrature import mixture_cdf, mixture_quantile
from analytic.transport import gauss_hermite_rule, semidual_w2sq, w2_from_w2sq

F64 = torch.float64


def _gaussian(mean, cov):
    return GaussianMixture(
        [1.0], torch.tensor(mean, dtype=F64)[None], torch.tensor(cov, dtype=F64)[None]
    )


def test_gaussian_pair_is_exact_at_degree_two():
    """W2^2 = |dm|^2 + tr(S0 + S1 - 2 (S1^1/2 S0 S1^1/2)^1/2) for N(m0, S0), N(m1, S1)."""
    p = _gaussian([0.2, -0.1], [[1.0, 0.3], [0.3, 0.7]])
    q = _gaussian([0.25, -0.05], [[1.1, 0.25], [0.25, 0.65]])
    pts, wts = gauss_hermite_rule(q, 30)
    res = semidual_w2sq(pts, wts, p)
    s0, s1 = q.covariance_matrices()[0], p.covariance_matrices()[0]
    ev, vec = torch.linalg.eigh(s1)
    r = vec @ torch.diag(ev.sqrt()) @ vec.T
    ev2 = torch.linalg.eigvalsh(r @ s0 @ r)
    exact = float(
        (q.means[0] - p.means[0]).square().sum() + torch.trace(s0 + s1) - 2 * ev2.sqrt().sum()
    )
    assert abs(res.w2sq - exact) < 1e-12 * exact and res.uncertainty < 1e-12 * exact
    assert res.degree == 4  # degree 4 adds nothing: stop


def _pushed_mixture(amp: float):
    """q = T # p for the increasing map T(x) = x + amp sin(x) on a 1-D mixture: then T is the
    optimal map and W2^2 = E_p[(amp sin x)^2] (exact by Gauss-Hermite)."""
    p = GaussianMixture(
        [0.3, 0.45, 0.25], torch.tensor([[-1.5], [0.4], [2.0]], dtype=F64), [0.6, 0.8, 0.5]
    )
    x, w = gauss_hermite_rule(p, 120)
    return p, x + amp * torch.sin(x), w, float(w @ (amp * torch.sin(x[:, 0])) ** 2)


@pytest.mark.parametrize("amp", [0.1, 0.01])
def test_bounds_increase_and_the_interval_holds_the_exact_value(amp):
    p, y, w, exact = _pushed_mixture(amp)
    res = semidual_w2sq(y, w, p)
    assert all(b <= exact * (1 + 1e-10) for b in res.bounds)  # lower bounds
    assert list(res.bounds) == sorted(res.bounds)
    assert res.lower <= exact <= res.lower + 2 * res.uncertainty * 1.0001
    assert res.uncertainty < 0.05 * exact


def test_one_dimensional_mixture_against_quantile_w2():
    """Exact 1-D W2^2 = int (Q_q - Q_p)^2 between two mixtures (quantile functions)."""
    p = GaussianMixture([0.3, 0.7], torch.tensor([[-1.0], [1.0]], dtype=F64), [0.5, 0.7])
    q = GaussianMixture([0.32, 0.68], torch.tensor([[-0.95], [1.02]], dtype=F64), [0.52, 0.69])
    y, w = gauss_hermite_rule(q, 120)
    level = mixture_cdf(q, y[:, 0])
    exact = float(
        w @ (y[:, 0] - mixture_quantile(p, level, torch.zeros_like(level, dtype=bool))) ** 2
    )
    res = semidual_w2sq(y, w, p)
    assert res.lower <= exact * (1 + 1e-9)
    assert abs(res.w2sq - exact) <= res.uncertainty + 1e-9 * exact
    assert res.uncertainty < 0.02 * exact


def test_w2_from_w2sq_carries_the_interval():
    value, unc = w2_from_w2sq(4.0, 0.4)
    assert value == 2.0 and math.isclose(unc, 0.5 * (math.sqrt(4.4) - math.sqrt(3.6)))


def test_rejects_bad_input():
    p = _gaussian([0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="shape"):
        semidual_w2sq(torch.zeros(5, 3, dtype=F64), torch.ones(5, dtype=F64) / 5, p)
    with pytest.raises(ValueError, match="weights"):
        semidual_w2sq(torch.zeros(5, 2, dtype=F64), torch.ones(4, dtype=F64) / 4, p)
    with pytest.raises(ValueError, match="degrees"):
        semidual_w2sq(torch.zeros(5, 2, dtype=F64), torch.ones(5, dtype=F64) / 5, p, degrees=(4, 2))
