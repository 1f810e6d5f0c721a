"""Densities on uniform grids in one and two dimensions, CDFs and quantile functions.

A law that went through a Gaussian kernel step is represented exactly (up to the quadrature of the
previous law) by a *kernel sum*

    p(y) = sum_j w_j N(y; c_j, s^2 I),      w_j = p_prev(u_j) h^d,

the trapezoid rule on a uniform grid u_j of spacing h applied to p(y) = int p_prev(u) N(y; m(u),
s^2 I) du, with c_j = m(u_j) (THEORY.md 3.6). For a smooth integrand of width sigma (in u) the
trapezoid rule's error is of order exp(-2 pi^2 sigma^2 / h^2): with h <= sigma / 1.5 it is below
1e-19, so the representation is exact to round-off as long as the grid resolves both the previous
density and the kernel seen from u (width s / |m'(u)|).

Evaluations are banded: a kernel contributes only within ``TAIL`` standard deviations of its
centre (the Gaussian tail beyond 9 sd is 1e-19 of the peak), so a density on an N-point grid costs
O(M (2 TAIL s / h)^d) instead of O(N M).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from analytic.gmm import GaussianMixture

Tensor = torch.Tensor

TAIL = 9.0  # kernels and mixture components are cut at TAIL standard deviations
_SQRT2 = math.sqrt(2.0)


def normal_cdf(z: Tensor) -> Tensor:
    """Phi(z) = erfc(-z / sqrt 2) / 2, accurate in the lower tail (no 1 - small cancellation)."""
    return 0.5 * torch.special.erfc(-z / _SQRT2)


@dataclass(frozen=True)
class Grid:
    """A uniform tensor grid: ``axes[i]`` are the nodes of coordinate i (spacing ``h``)."""

    axes: tuple[Tensor, ...]
    h: float

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(a.numel() for a in self.axes)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def cell(self) -> float:
        """Quadrature weight of one node, h^d."""
        return self.h ** len(self.axes)

    def points(self) -> Tensor:
        """All nodes as an (N, d) tensor, the last coordinate varying fastest."""
        mesh = torch.meshgrid(*self.axes, indexing="ij")
        return torch.stack([m.reshape(-1) for m in mesh], dim=1)


def uniform_grid(lo: Tensor, hi: Tensor, h: float, max_nodes: int) -> Grid:
    """Nodes lo_i + k h covering [lo_i, hi_i] in every coordinate; refuses more than max_nodes."""
    counts = [int(math.ceil(float(b - a) / h)) + 1 for a, b in zip(lo, hi, strict=True)]
    if math.prod(counts) > max_nodes:
        raise ValueError(
            f"the grid would need {' x '.join(map(str, counts))} nodes (spacing {h:.3g}), more "
            f"than the limit {max_nodes}; use fewer steps or another evaluator"
        )
    axes = tuple(
        a + h * torch.arange(c, dtype=lo.dtype, device=lo.device)
        for a, c in zip(lo, counts, strict=True)
    )
    return Grid(axes, h)


# ---- kernel sums ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelSum:
    """p(y) = sum_j w_j N(y; c_j, s^2 I): weights (M,), centres (M, d), one std s > 0."""

    weights: Tensor
    centres: Tensor
    std: float

    @property
    def dim(self) -> int:
        return self.centres.shape[1]

    def box(self) -> tuple[Tensor, Tensor]:
        """Bounding box of the centres widened by TAIL s."""
        return self.centres.min(0).values - TAIL * self.std, self.centres.max(0).values + (
            TAIL * self.std
        )

    def _axis_weights(self, axis: Tensor, coord: Tensor) -> tuple[Tensor, Tensor]:
        """For each centre, the band of node indices within TAIL s along one axis and the 1-D
        kernel values there: (M, B) indices (clamped) and values (0 outside the axis)."""
        h = float(axis[1] - axis[0]) if axis.numel() > 1 else 1.0
        half = int(math.ceil(TAIL * self.std / h))
        first = torch.floor((coord - axis[0]) / h).long() - half + 1
        idx = first[:, None] + torch.arange(2 * half, device=coord.device)
        inside = (idx >= 0) & (idx < axis.numel())
        idx = idx.clamp(0, axis.numel() - 1)
        z = (axis[idx] - coord[:, None]) / self.std
        vals = torch.exp(-0.5 * z * z) / (math.sqrt(2 * math.pi) * self.std)
        return idx, torch.where(inside, vals, torch.zeros_like(vals))

    def density_on(self, grid: Grid) -> Tensor:
        """p at every node of a 1-D or 2-D grid, shape grid.shape (banded scatter)."""
        if self.dim == 1:
            idx, vals = self._axis_weights(grid.axes[0], self.centres[:, 0])
            out = torch.zeros(grid.shape, dtype=vals.dtype, device=vals.device)
            return out.index_add_(0, idx.reshape(-1), (self.weights[:, None] * vals).reshape(-1))
        if self.dim == 2:
            i0, v0 = self._axis_weights(grid.axes[0], self.centres[:, 0])
            i1, v1 = self._axis_weights(grid.axes[1], self.centres[:, 1])
            n1 = grid.shape[1]
            flat = (i0[:, :, None] * n1 + i1[:, None, :]).reshape(-1)
            vals = (self.weights[:, None, None] * v0[:, :, None] * v1[:, None, :]).reshape(-1)
            out = torch.zeros(grid.size, dtype=vals.dtype, device=vals.device)
            return out.index_add_(0, flat, vals).reshape(grid.shape)
        raise ValueError(f"kernel sums on grids need d = 1 or 2, got d = {self.dim}")

    def density_at(self, y: Tensor, chunk: int = 4096) -> Tensor:
        """p at arbitrary points y (m, d), banded: the kernels are binned in cubes of side TAIL s
        and each point sums only the kernels of its own and the adjacent 3^d - 1 cubes, so a
        point costs O(3^d (TAIL s)^d / (cell volume per kernel)) instead of O(M)."""
        width = TAIL * self.std
        lo = self.centres.min(0).values
        kbin = torch.floor((self.centres - lo) / width).long()
        nbins = kbin.max(0).values + 3  # room for the neighbours of the outermost bins
        strides = torch.ones_like(nbins)
        for i in range(self.dim - 2, -1, -1):
            strides[i] = strides[i + 1] * nbins[i + 1]
        key = ((kbin + 1) * strides).sum(1)
        order = torch.argsort(key)
        centres, weights, key = self.centres[order], self.weights[order], key[order]
        counts = torch.bincount(key, minlength=int((nbins * strides)[0]))
        starts = torch.cumsum(counts, 0) - counts
        span = int(counts.max())
        norm = (math.sqrt(2 * math.pi) * self.std) ** self.dim
        if 3**self.dim * span >= self.weights.numel() // 2:  # banding saves nothing: dense sums
            return (
                torch.cat(
                    [
                        torch.exp(
                            -0.5
                            * torch.cdist(y[a : a + chunk], self.centres).square()
                            / self.std**2
                        )
                        @ self.weights
                        for a in range(0, y.shape[0], chunk)
                    ]
                )
                / norm
            )
        shifts = torch.cartesian_prod(*[torch.arange(-1, 2, device=y.device)] * self.dim)
        shifts = shifts.reshape(-1, self.dim)
        out = torch.zeros(y.shape[0], dtype=y.dtype, device=y.device)
        for a in range(0, y.shape[0], chunk):
            yc = y[a : a + chunk]
            pb = torch.floor((yc - lo) / width).long() + 1
            inside = ((pb >= 0) & (pb < nbins)).all(1)
            keys = ((pb[:, None, :] + shifts[None]) * strides).sum(2).clamp(0, counts.numel() - 1)
            idx = starts[keys][..., None] + torch.arange(span, device=y.device)
            valid = (torch.arange(span, device=y.device) < counts[keys][..., None]) & inside[
                :, None, None
            ]
            idx = torch.where(valid, idx, torch.zeros_like(idx)).reshape(yc.shape[0], -1)
            sq = (yc[:, None, :] - centres[idx]).square().sum(2)
            vals = weights[idx] * torch.exp(-0.5 * sq / self.std**2)
            out[a : a + chunk] = torch.where(valid.reshape(yc.shape[0], -1), vals, 0.0).sum(1)
        return out / norm

    def log_density(self, y: Tensor) -> Tensor:
        """log p at arbitrary points y (m, d) by a direct log-sum-exp over all kernels, O(m M d)."""
        sq = torch.cdist(y, self.centres).square()
        norm = self.dim * math.log(math.sqrt(2 * math.pi) * self.std)
        return torch.logsumexp(torch.log(self.weights) - 0.5 * sq / self.std**2, dim=1) - norm

    def cdf(self, y: Tensor, upper: bool = False) -> Tensor:
        """1-D: F(y) = sum_j w_j Phi((y - c_j)/s), or the survival function 1 - F (upper=True)
        computed without cancellation, at points y (m,). Direct sum, O(m M)."""
        z = (y[:, None] - self.centres[None, :, 0]) / self.std
        return normal_cdf(-z if upper else z) @ self.weights


# ---- 1-D mixtures: CDF and quantiles ---------------------------------------------------------


def mixture_cdf(q: GaussianMixture, y: Tensor, upper: bool = False) -> Tensor:
    """1-D mixture CDF F(y) = sum_k w_k Phi((y - mu_k)/sigma_k), or 1 - F(y) (upper=True)."""
    _check_1d(q)
    mu = q.means[:, 0].to(y)
    sd = q.covariance_matrices()[:, 0, 0].sqrt().to(y)
    z = (y[:, None] - mu) / sd
    return normal_cdf(-z if upper else z) @ q.weights.to(y)


def mixture_quantile(q: GaussianMixture, alpha: Tensor, upper: Tensor) -> Tensor:
    """y with F(y) = alpha where ``upper`` is False, 1 - F(y) = alpha where it is True (so that
    tail levels keep their relative precision), by safeguarded Newton steps on a bracket.

    Converges to a relative error of a few ulps in the level (tested against scipy's brentq)."""
    _check_1d(q)
    mu = q.means[:, 0].to(alpha)
    sd = q.covariance_matrices()[:, 0, 0].sqrt().to(alpha)
    lo = torch.full_like(alpha, float((mu - 40 * sd).min()))
    hi = torch.full_like(alpha, float((mu + 40 * sd).max()))
    y = torch.zeros_like(alpha)
    sign = torch.where(upper, -1.0, 1.0).to(alpha)
    for _ in range(200):
        z = (y[:, None] - mu) / sd
        level = torch.where(
            upper, normal_cdf(-z) @ q.weights.to(alpha), normal_cdf(z) @ q.weights.to(alpha)
        )
        dens = torch.exp(q.log_prob(y[:, None]))
        f = sign * (level - alpha)  # increasing in y
        lo = torch.where(f < 0, y, lo)
        hi = torch.where(f >= 0, y, hi)
        step = torch.where(dens > 0, f / dens.clamp_min(1e-300), torch.zeros_like(f))
        new = y - step
        bad = (new <= lo) | (new >= hi) | ~torch.isfinite(new)
        new = torch.where(bad, 0.5 * (lo + hi), new)
        if bool(((new - y).abs() <= 4e-16 * (1.0 + y.abs())).all()):
            return new
        y = new
    return y


def _check_1d(q: GaussianMixture) -> None:
    if q.dim != 1:
        raise ValueError(f"needs a one-dimensional mixture, got d = {q.dim}")
