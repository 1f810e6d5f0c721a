"""int |f| over a rectangle for a smooth f of changing sign: cut-cell quadrature in two dimensions.

|f| has a kink along the zero curve of f, which limits any fixed rule on a grid to second order
(the trapezoid rule's error is h^2 times a sum of oscillating terms along the curve). This module
integrates |f| to the accuracy that smooth integrands get:

* the rectangle is split into square cells of side h; f is sampled at each cell's corners and at
  an n x n Gauss-Legendre rule inside it;
* a cell whose samples all have one sign is *uncut*: int_cell |f| = |int_cell f| by the
  Gauss-Legendre rule (degree 2n - 1 in each coordinate, error O(h^{2n}) per unit area);
* a cut cell is split into four, recursively, down to side h / 2^depth; a cut leaf is fanned into
  four triangles around its centre, f is replaced by its linear interpolant on each triangle only
  to *locate* the zero line, and

      int_leaf |f| = 2 int_{leaf and f_lin > 0} f - int_leaf f,

  with the positive polygon triangulated and f itself integrated on it by the 7-point degree-5 rule
  (Strang and Fix, *An Analysis of the Finite Element Method*, 1973, table 4.1).

The positive set is located only to O(h_leaf^2), but int_A f is stationary in A at A = {f > 0}
(moving the boundary by delta changes it by O(|grad f| delta^2) per unit length), so the location
error enters at fourth order in h_leaf. Closed zero curves smaller than the sampling (about h / n)
would be missed; callers compare two resolutions.

Cost: about (n^2 + 4) f-evaluations per cell with mass, plus 4 (n^2 + 4) per cut cell and level
and about 100 per cut leaf; with n = 4 and depth 3 the uncut cells dominate.
"""

from __future__ import annotations

import numpy as np
import torch

Tensor = torch.Tensor

ORDER = 4  # Gauss-Legendre points per coordinate and cell
DEPTH = 3  # cut cells are refined to side h / 2^DEPTH
NEGLIGIBLE = 1e-22  # cells where the envelope of |f| is below this fraction of its peak are skipped

# Strang-Fix 7-point rule of degree 5 on the reference triangle: barycentric (a, b, b) orbits
_R = np.sqrt(15.0)
_TRI_POINTS = np.array(
    [
        [1 / 3, 1 / 3, 1 / 3],
        [(9 - 2 * _R) / 21, (6 + _R) / 21, (6 + _R) / 21],
        [(6 + _R) / 21, (9 - 2 * _R) / 21, (6 + _R) / 21],
        [(6 + _R) / 21, (6 + _R) / 21, (9 - 2 * _R) / 21],
        [(9 + 2 * _R) / 21, (6 - _R) / 21, (6 - _R) / 21],
        [(6 - _R) / 21, (9 + 2 * _R) / 21, (6 - _R) / 21],
        [(6 - _R) / 21, (6 - _R) / 21, (9 + 2 * _R) / 21],
    ]
)
_TRI_WEIGHTS = np.array(
    [9 / 40] + [(155 + _R) / 1200] * 3 + [(155 - _R) / 1200] * 3
)  # sum to 1: multiply by the triangle's area


def integrate_abs_2d(
    f,
    lo: tuple[float, float],
    h: float,
    shape: tuple[int, int],
    *,
    magnitude=None,
    negligible: float = NEGLIGIBLE,
    rtol: float = 1e-12,
    order: int = ORDER,
    depth: int = DEPTH,
    dtype=torch.float64,
    device=None,
) -> tuple[float, float, int]:
    """int |f| over the cells [lo_0 + i h, lo_0 + (i+1) h] x [lo_1 + j h, lo_1 + (j+1) h],
    0 <= i < shape[0], 0 <= j < shape[1].

    f(points, axes=None, mask=None) maps points (n, 2) to values (n,); on the first level the
    points lie on tensor grids and f also receives the grid's axes (a0, a1) and the boolean
    (len(a0), len(a1)) mask that selects them (points = grid[mask] in "ij" order), which lets it
    use banded grid evaluations. ``magnitude`` (optional, same signature) bounds |f| by a smooth
    envelope (for f = p - q, p + q): cells whose corners all have an envelope below ``negligible``
    times its largest corner value are skipped. Cut cells whose |f| is too small to matter (their
    bounds 2 max|f| area add up to less than ``rtol`` of int |f|) are not refined. Returns
    (int |f|, int f, number of cut leaves)."""
    if h <= 0 or min(shape) < 1:
        raise ValueError(f"need h > 0 and at least one cell, got h={h}, shape={shape}")
    lo_t = torch.tensor(lo, dtype=dtype, device=device)
    edges = _axes(lo_t, h, (shape[0] + 1, shape[1] + 1), (0.0, 0.0))
    keep = torch.ones(shape, dtype=torch.bool, device=device)
    if magnitude is not None:
        full = torch.ones(shape[0] + 1, shape[1] + 1, dtype=torch.bool, device=device)
        env = magnitude(_points(edges, full), edges, full).reshape(full.shape)
        peak = env[:-1, :-1].maximum(env[1:, :-1]).maximum(env[:-1, 1:]).maximum(env[1:, 1:])
        keep = peak >= negligible * float(env.max())
    gl = _Legendre(order, dtype, device)
    corners = _points(_axes(lo_t, h, shape, (0.0, 0.0)), keep)
    total_abs, total, leaves = 0.0, 0.0, 0
    size = h
    for level in range(depth + 1):
        if corners.shape[0] == 0:
            break
        if level == 0:  # every sample offset is a tensor grid: let f evaluate it as one
            values = torch.stack(
                [f(_points(ax, keep), ax, keep) for ax in gl.grids(lo_t, h, shape)], 1
            )
            integral = h * h * (values[:, 4:] @ gl.weights)
        else:
            values, integral = gl.cells(f, corners, size)
        cut = (values > 0).any(1) & (values < 0).any(1)
        if level == 0:
            # a cut cell changes int |f| by at most 2 max|f| size^2 when taken as uncut: skip
            # the refinement of cells whose bounds add up to less than rtol of the first estimate
            budget = rtol * float(integral.abs().sum()) / max(int(cut.sum()), 1)
        cut &= 2.0 * values.abs().max(1).values * size * size > budget
        uncut = ~cut
        total_abs += float(integral[uncut].abs().sum())
        total += float(integral.sum())
        if level == depth:
            total_abs += float(_cut_leaves(f, corners[cut], size, integral[cut]).sum())
            leaves = int(cut.sum())
            break
        corners = _children(corners[cut], size)
        total -= float(integral[cut].sum())  # counted again by the children
        size /= 2
    return total_abs, total, leaves


class _Legendre:
    """n x n Gauss-Legendre rule on square cells, plus the cells' corners as sign samples."""

    def __init__(self, n: int, dtype, device) -> None:
        x, w = np.polynomial.legendre.leggauss(n)
        x = torch.tensor((x + 1) / 2, dtype=dtype, device=device)
        w = torch.tensor(w / 2, dtype=dtype, device=device)
        gx, gy = torch.meshgrid(x, x, indexing="ij")
        unit = torch.tensor([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=dtype, device=device)
        self.offsets = torch.cat([unit, torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)])
        self.weights = (w[:, None] * w[None, :]).reshape(-1)

    def grids(self, lo: Tensor, h: float, shape: tuple[int, int]) -> list[tuple[Tensor, Tensor]]:
        """The sample points of all cells as one tensor grid per offset (axes)."""
        return [_axes(lo, h, shape, (float(o[0]), float(o[1]))) for o in self.offsets]

    def cells(self, f, corners: Tensor, size: float) -> tuple[Tensor, Tensor]:
        """f at every cell's sample points (m, 4 + n^2) and int_cell f (m,)."""
        pts = corners[:, None, :] + size * self.offsets[None, :, :]
        values = f(pts.reshape(-1, 2)).reshape(corners.shape[0], -1)
        return values, size * size * (values[:, 4:] @ self.weights)


def _axes(lo: Tensor, h: float, shape, offset) -> tuple[Tensor, Tensor]:
    return tuple(
        lo[k] + h * (torch.arange(shape[k], dtype=lo.dtype, device=lo.device) + offset[k])
        for k in range(2)
    )


def _points(axes: tuple[Tensor, Tensor], mask: Tensor) -> Tensor:
    a0, a1 = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([a0[mask], a1[mask]], 1)


def _children(corners: Tensor, size: float) -> Tensor:
    half = size / 2
    shift = torch.tensor(
        [[0, 0], [1, 0], [0, 1], [1, 1]], dtype=corners.dtype, device=corners.device
    )
    return (corners[:, None, :] + half * shift[None]).reshape(-1, 2)


def _cut_leaves(f, corners: Tensor, size: float, integral: Tensor) -> Tensor:
    """int_leaf |f| = 2 int_{f_lin > 0} f - int_leaf f on each cut leaf (module docstring)."""
    if corners.shape[0] == 0:
        return integral
    dt, dev = corners.dtype, corners.device
    square = torch.tensor([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=dt, device=dev)
    verts = corners[:, None, :] + size * square[None]  # (m, 4, 2) counter-clockwise
    centre = corners + 0.5 * size
    fv = f(verts.reshape(-1, 2)).reshape(-1, 4)
    fc = f(centre)
    # the fan: triangle k = (v_k, v_{k+1}, centre)
    a, b = verts, verts.roll(-1, dims=1)
    c = centre[:, None, :].expand_as(a)
    fa, fb, fcc = fv, fv.roll(-1, dims=1), fc[:, None].expand_as(fv)
    tri = torch.stack([a, b, c], 2).reshape(-1, 3, 2)
    vals = torch.stack([fa, fb, fcc], 2).reshape(-1, 3)
    positive = _positive_part(f, tri, vals).reshape(-1, 4).sum(1)
    return 2.0 * positive - integral


def _positive_part(f, tri: Tensor, vals: Tensor) -> Tensor:
    """int f over {linear interpolant of f > 0} in each triangle (t, 3, 2), as up to two
    sub-triangles integrated with the degree-5 rule."""
    pos = vals > 0
    npos = pos.sum(1)
    # rotate each triangle so that vertex 0 is the odd one out: the only positive vertex
    # (npos == 1) or the only non-positive one (npos == 2)
    odd = torch.where(npos == 1, pos.float().argmax(1), (~pos).float().argmax(1))
    order = (odd[:, None] + torch.arange(3, device=tri.device)) % 3
    p = torch.gather(tri, 1, order[:, :, None].expand(-1, -1, 2))
    v = torch.gather(vals, 1, order)
    # zero crossings on edges 0-1 and 0-2 of the linear interpolant
    s1 = (v[:, 0] / (v[:, 0] - v[:, 1]))[:, None]
    s2 = (v[:, 0] / (v[:, 0] - v[:, 2]))[:, None]
    e1 = p[:, 0] + s1 * (p[:, 1] - p[:, 0])
    e2 = p[:, 0] + s2 * (p[:, 2] - p[:, 0])
    one = npos == 1  # triangle (p0, e1, e2)
    two = npos == 2  # quadrilateral (e1, p1, p2, e2) = (e1, p1, p2) + (e1, p2, e2)
    full = npos == 3
    out = torch.zeros(tri.shape[0], dtype=tri.dtype, device=tri.device)
    if bool(full.any()):
        out[full] = _triangle_integral(f, tri[full])
    if bool(one.any()):
        out[one] = _triangle_integral(f, torch.stack([p[one, 0], e1[one], e2[one]], 1))
    if bool(two.any()):
        first = torch.stack([e1[two], p[two, 1], p[two, 2]], 1)
        second = torch.stack([e1[two], p[two, 2], e2[two]], 1)
        out[two] = _triangle_integral(f, first) + _triangle_integral(f, second)
    return out


def _triangle_integral(f, tri: Tensor) -> Tensor:
    """int_T f for triangles (t, 3, 2) by the 7-point degree-5 rule."""
    bary = torch.tensor(_TRI_POINTS, dtype=tri.dtype, device=tri.device)
    w = torch.tensor(_TRI_WEIGHTS, dtype=tri.dtype, device=tri.device)
    pts = torch.einsum("qk,tkd->tqd", bary, tri)
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    area = 0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).abs()
    return area * (f(pts.reshape(-1, 2)).reshape(tri.shape[0], -1) @ w)
