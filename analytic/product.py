"""Tensorised targets: products of independent one-dimensional Gaussian mixtures.

q(x) = prod_i q_i(x_i) with q_i = sum_k w_ik N(m_ik, v_ik). The forward process acts coordinate by
coordinate, so every noised marginal is again a product, q_t = prod_i q_{i,t} with
m_ik -> alpha m_ik and v_ik -> alpha^2 v_ik + sigma^2, and the score is coordinate-separable:

    d/dx_i log q_t(x) = sum_k r_ik(x_i) (m_ik - x_i) / v_ik,
    r_ik = softmax_k(log w_ik - (x_i - m_ik)^2 / (2 v_ik) - log(v_ik) / 2).

Written as a single mixture it would have prod_i K_i components; kept as a product it costs
O(n d K) per call. All factors have the same number of components K and are stored stacked as
(d, K) arrays. The Hessian is diagonal: h_i = sum_k r_ik (g_ik^2 - 1/v_ik) - (sum_k r_ik g_ik)^2
with g_ik = (m_ik - x_i) / v_ik.
"""

from __future__ import annotations

import math

import torch

from analytic.gmm import GaussianMixture
from analytic.processes import Process, Time

Tensor = torch.Tensor


class ProductMixture:
    """Product of d one-dimensional mixtures given as stacked (d, K) weights, means, variances."""

    def __init__(self, weights, means, variances) -> None:
        w = torch.as_tensor(weights, dtype=torch.float64)
        m = torch.as_tensor(means, dtype=torch.float64)
        v = torch.as_tensor(variances, dtype=torch.float64)
        if w.ndim != 2 or w.shape != m.shape or w.shape != v.shape or w.numel() == 0:
            raise ValueError(
                "weights, means and variances must all have shape (d, K) with d, K >= 1, got "
                f"{tuple(w.shape)}, {tuple(m.shape)}, {tuple(v.shape)}"
            )
        if not (torch.isfinite(w).all() and torch.isfinite(m).all() and torch.isfinite(v).all()):
            raise ValueError("weights, means and variances must be finite")
        if (w <= 0).any() or ((w.sum(1) - 1).abs() > 1e-10).any():
            raise ValueError("each factor's weights must be positive and sum to 1")
        if (v <= 0).any():
            raise ValueError("variances must be positive")
        self.weights, self.means, self.variances = w / w.sum(1, keepdim=True), m, v

    @classmethod
    def of(cls, factors: list[GaussianMixture]) -> ProductMixture:
        """The product of 1-D GaussianMixture factors with equal numbers of components."""
        if not factors or any(f.dim != 1 for f in factors):
            raise ValueError("a product needs at least one factor, each one-dimensional")
        if len({f.n_components for f in factors}) != 1:
            raise ValueError("all factors of a product must have the same number of components")
        return cls(
            torch.stack([f.weights for f in factors]),
            torch.stack([f.means[:, 0] for f in factors]),
            torch.stack([f.covariance_matrices()[:, 0, 0] for f in factors]),
        )

    @property
    def dim(self) -> int:
        return self.weights.shape[0]

    @property
    def n_components(self) -> int:
        """Components of the equivalent single mixture, prod_i K_i (never formed)."""
        return self.weights.shape[1] ** self.dim

    def factor(self, i: int) -> GaussianMixture:
        """Factor i as a 1-D GaussianMixture."""
        return GaussianMixture(self.weights[i], self.means[i][:, None], self.variances[i])

    def distinct_factors(self) -> list[tuple[int, list[int]]]:
        """Groups of identical factors: (representative index, all indices with equal factor)."""
        groups: dict[tuple, list[int]] = {}
        for i in range(self.dim):
            key = tuple(torch.cat([self.weights[i], self.means[i], self.variances[i]]).tolist())
            groups.setdefault(key, []).append(i)
        return [(idx[0], idx) for idx in groups.values()]

    def __repr__(self) -> str:
        return f"ProductMixture(d={self.dim}, K={self.weights.shape[1]})"

    @property
    def mean(self) -> Tensor:
        return (self.weights * self.means).sum(1)

    def transformed(self, a: float, b: float) -> ProductMixture:
        """Law of a X + b xi: factor means a m, variances a^2 v + b^2."""
        return ProductMixture(self.weights, a * self.means, a * a * self.variances + b * b)

    def noised(self, process: Process, t: float) -> ProductMixture:
        t = float(t)
        return self.transformed(process.alpha(t), process.sigma(t))

    # ---- per-coordinate responsibilities ----------------------------------------------------

    def _parts(self, x: Tensor, a: Tensor | None = None, b: Tensor | None = None):
        """Per-coordinate component terms for x (n, d): responsibilities r (n, d, K), component
        scores g = (m - x)/v (n, d, K) and log-joint logits (n, d, K); optional per-row noising
        (a, b) of shape (n,)."""
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.shape[-1] != self.dim:
            raise ValueError(f"x must be a floating-point tensor of shape (..., {self.dim})")
        xf = x.reshape(-1, self.dim)
        w, m, v = (
            p.to(dtype=x.dtype, device=x.device) for p in (self.weights, self.means, self.variances)
        )
        if a is not None:
            m = a[:, None, None] * m
            v = a[:, None, None] ** 2 * v + b[:, None, None] ** 2
        diff = m - xf[:, :, None]
        logits = torch.log(w) - 0.5 * (diff * diff / v + torch.log(2 * math.pi * v))
        r = torch.softmax(logits, dim=-1)
        return r, diff / v, logits

    def log_prob(self, x: Tensor) -> Tensor:
        """log q(x) = sum_i logsumexp_k(log w_ik + log N(x_i; m_ik, v_ik)), shape (...)."""
        _, _, logits = self._parts(x)
        return torch.logsumexp(logits, dim=-1).sum(-1).reshape(x.shape[:-1])

    def score(self, x: Tensor) -> Tensor:
        r, g, _ = self._parts(x)
        return (r * g).sum(-1).reshape(x.shape)

    def hessian(self, x: Tensor) -> Tensor:
        """Diagonal Hessian of log q as a (..., d, d) tensor."""
        r, g, _ = self._parts(x)
        v = self.variances.to(dtype=x.dtype, device=x.device)
        gbar = (r * g).sum(-1)
        h = (r * (g * g - 1.0 / v)).sum(-1) - gbar * gbar
        return torch.diag_embed(h).reshape(*x.shape, self.dim)

    def score_fn(self, process: Process):
        """score(x, t) for the marginals of ``process``; t a float or per-sample (n,) times."""

        def score(x: Tensor, t: Time) -> Tensor:
            if isinstance(t, Tensor) and t.ndim >= 1 and (t.numel() > 1 or x.ndim == 2):
                a = torch.as_tensor(process.alpha(t), dtype=x.dtype, device=x.device).reshape(-1)
                b = torch.as_tensor(process.sigma(t), dtype=x.dtype, device=x.device).reshape(-1)
                r, g, _ = self._parts(x, a, b)
                return (r * g).sum(-1).reshape(x.shape)
            return self.noised(process, float(t)).score(x)

        return score

    def sample(
        self,
        n: int,
        seed: int = 0,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> Tensor:
        """n independent draws (n, d): per coordinate a component k_i ~ w_i, then
        x_i = m_ik + sqrt(v_ik) xi_i; reproducible from seed."""
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        gen = torch.Generator().manual_seed(int(seed))
        xi = torch.randn(n, self.dim, generator=gen, dtype=torch.float64)
        u = torch.rand(n, self.dim, 1, generator=gen, dtype=torch.float64)
        k = (u > torch.cumsum(self.weights, 1)[None]).sum(-1).clamp_max(self.weights.shape[1] - 1)
        rows = torch.arange(self.dim)[None, :]
        x = self.means[rows, k] + self.variances[rows, k].sqrt() * xi
        return x.to(dtype=dtype, device=device)
