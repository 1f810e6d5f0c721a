"""Named targets (convergence/targets.py): the planted family keeps its difficulty fixed in d."""

import pytest
import torch

from convergence.targets import parse_target


def test_planted_mixture_keeps_separation_and_conditioning_in_every_dimension():
    """The means sit in the first two coordinates at the same places for every d, every
    component's spectrum runs from 0.2 to 1 (condition number 5), the components' bases differ
    (not a product, not a rotated product) and the spec is reproducible."""
    low = parse_target("planted:d=2,k=3,seed=0")
    for d in (2, 8, 64):
        m = parse_target(f"planted:d={d},k=3,seed=0")
        assert m.dim == d and torch.equal(m.weights, low.weights)
        torch.testing.assert_close(m.means[:, :2], low.means, rtol=0, atol=0)
        assert bool((m.means[:, 2:] == 0).all())
        eig = torch.linalg.eigvalsh(m.covariance_matrices())
        torch.testing.assert_close(eig[:, 0], torch.full((3,), 0.2, dtype=eig.dtype))
        torch.testing.assert_close(eig[:, -1], torch.ones(3, dtype=eig.dtype))
        cov = m.covariance_matrices()
        assert float((cov[0] - cov[1]).abs().max()) > 0.05  # distinct bases per component
        off = cov[0] - torch.diag(torch.diagonal(cov[0]))
        assert float(off.abs().max()) > 0.05  # not axis-aligned
    again = parse_target("planted:d=8,k=3,seed=0")
    torch.testing.assert_close(
        again.covariance_matrices(), parse_target("planted:d=8,k=3,seed=0").covariance_matrices()
    )
    with pytest.raises(ValueError, match="d >= 2"):
        parse_target("planted:d=1,k=3,seed=0")
    with pytest.raises(ValueError, match="missing seed"):
        parse_target("planted:d=4,k=3")
