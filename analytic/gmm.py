"""Gaussian mixtures with closed-form noised marginals, scores and Hessians.

p(x) = sum_k w_k N(x; mu_k, Sigma_k) with isotropic (Sigma_k = v_k I), diagonal
(Sigma_k = diag(v_k)) or full covariances. Under x = a x_0 + b xi the law is again a mixture
with means a mu_k and covariances C_k = a^2 Sigma_k + b^2 I (SAMPLERS.md appendix A), so every
noised marginal of a diffusion process is available exactly. With responsibilities
r_k(x) = softmax_k(log w_k + log N(x; mu_k, C_k)) and g_k = C_k^{-1}(mu_k - x) (THEORY.md 3.1):

    grad log p = sum_k r_k g_k,
    hess log p = -sum_k r_k C_k^{-1} + sum_k r_k g_k g_k^T - (sum_k r_k g_k)(sum_k r_k g_k)^T.

Everything is computed in log-space (log-sum-exp). Full components are factored once as
C = Q diag(lambda) Q^T: like a Cholesky factor, Q diag(lambda)^{1/2} is a square root of C, and
noising keeps Q (a^2 Sigma + b^2 I = Q diag(a^2 lambda + b^2) Q^T), so every marginal p_t is
formed in O(K d) with no new factorisation. In its own basis (y = Q^T x) each component is
diagonal, and the quadratic forms are expanded so that the work is a few matrix products over all
components at once:

    (x - mu)^T C^{-1} (x - mu) = sum_i P_i y_i^2 - 2 sum_i P_i nu_i y_i + sum_i P_i nu_i^2,
    P = 1 / lambda, nu = Q^T mu,

which costs O(n K d^2) for full and O(n K d) for isotropic/diagonal components (no d x d work).
The expansion loses about eps * |x|^2 / lambda_min in absolute accuracy of the log-density:
harmless in float64, to be kept in mind in float32 far from the data at tiny noise levels.

Inputs may have any leading batch shape (..., d); parameters are float64 and computations follow the
dtype and device of x.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from analytic.processes import Process, Time

Tensor = torch.Tensor
ScoreFn = Callable[[Tensor, float], Tensor]

_KINDS = {1: "isotropic", 2: "diagonal", 3: "full"}
_GRAIN_SIZE = 32768  # at::internal::GRAIN_SIZE: ATen runs elementwise ops in parallel from here on


def _as_float64(name: str, value) -> Tensor:
    """value as a float64 tensor (lists and scalars are read in float64, not via float32)."""
    try:
        t = value if isinstance(value, Tensor) else torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be real numbers") from None
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"{name} must be real numbers, got dtype {t.dtype}")
    t = t.to(torch.float64)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return t


class GaussianMixture:
    """Mixture sum_k w_k N(mu_k, Sigma_k) in d dimensions.

    Args:
        weights: (K,) positive, summing to 1 within 1e-9.
        means: (K, d).
        covariances: (K,) variances of isotropic components, (K, d) diagonals, or (K, d, d)
            symmetric positive definite matrices.

    Full covariances are stored with their eigendecomposition Sigma_k = Q_k diag(lambda_k) Q_k^T.
    Noising keeps the basis: a^2 Sigma_k + b^2 I = Q_k diag(a^2 lambda_k + b^2) Q_k^T, so every
    marginal p_t costs O(K d) to form and no factorisation is repeated along a sampler's path. In
    its own basis each component is diagonal, and all kinds share one expanded quadratic form.
    """

    def __init__(self, weights, means, covariances) -> None:
        w = _as_float64("weights", weights)
        mu = _as_float64("means", means)
        cov = _as_float64("covariances", covariances)
        if w.ndim != 1 or w.numel() == 0:
            raise ValueError(f"weights must have shape (K,) with K >= 1, got {tuple(w.shape)}")
        if (w <= 0).any():
            raise ValueError("weights must be positive")
        if abs(float(w.sum()) - 1.0) > 1e-9:
            raise ValueError(f"weights must sum to 1 within 1e-9, got sum {float(w.sum())!r}")
        K = w.numel()
        if mu.ndim != 2 or mu.shape[0] != K or mu.shape[1] == 0:
            raise ValueError(f"means must have shape (K, d) = ({K}, d), got {tuple(mu.shape)}")
        d = mu.shape[1]
        kind = _KINDS.get(cov.ndim)
        expected = {"isotropic": (K,), "diagonal": (K, d), "full": (K, d, d)}
        if kind is None or tuple(cov.shape) != expected[kind]:
            raise ValueError(
                f"covariances must have shape ({K},) isotropic, ({K}, {d}) diagonal or "
                f"({K}, {d}, {d}) full, got {tuple(cov.shape)}"
            )
        basis = None
        if kind == "full":
            asym = (cov - cov.transpose(-1, -2)).abs().amax()
            if asym > 1e-12 * cov.abs().amax():
                raise ValueError(
                    f"covariances must be symmetric, max |S - S^T| = {float(asym):.3g}"
                )
            cov = 0.5 * (cov + cov.transpose(-1, -2))
            info = torch.linalg.cholesky_ex(cov).info
            if (info != 0).any():
                bad = int(torch.nonzero(info)[0])
                raise ValueError(f"covariance of component {bad} is not positive definite")
            lam, Q = torch.linalg.eigh(cov)
            basis = _Basis(Q)
        elif (cov <= 0).any():
            raise ValueError(f"{kind} covariances must be positive")
        else:
            lam = cov
        self._set(w, mu, kind, lam, basis, cov)

    def _set(self, w, mu, kind, lam, basis, cov) -> None:
        self.weights, self.means, self.kind = w, mu, kind
        self._lam, self._basis, self.cov = lam, basis, cov
        self._cache: dict = {}

    @classmethod
    def _derived(cls, w, mu, kind, lam, basis, cov) -> GaussianMixture:
        """A mixture built from an already validated one (no re-validation, no factorisation)."""
        obj = cls.__new__(cls)
        obj._set(w, mu, kind, lam, basis, cov)
        return obj

    # ---- basic facts -----------------------------------------------------------------------

    @property
    def n_components(self) -> int:
        return self.weights.numel()

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def covariance_matrices(self) -> Tensor:
        """(K, d, d) covariance matrices, whatever the storage kind."""
        if self.kind == "full":
            return self.cov
        diag = self.cov[:, None].expand(-1, self.dim) if self.kind == "isotropic" else self.cov
        return torch.diag_embed(diag)

    def covariance_diagonals(self) -> Tensor:
        """(K, d) diagonals of the component covariances (no d x d matrices formed)."""
        if self.kind == "full":
            return torch.diagonal(self.cov, dim1=1, dim2=2)
        return self.cov[:, None].expand(-1, self.dim) if self.kind == "isotropic" else self.cov

    def mean(self) -> Tensor:
        """E[x] = sum_k w_k mu_k."""
        return self.weights @ self.means

    def covariance(self) -> Tensor:
        """Cov[x] = sum_k w_k (Sigma_k + mu_k mu_k^T) - E[x] E[x]^T."""
        m = self.mean()
        second = torch.einsum("k,kij->ij", self.weights, self.covariance_matrices())
        second = second + torch.einsum("k,ki,kj->ij", self.weights, self.means, self.means)
        return second - torch.outer(m, m)

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.n_components}, d={self.dim}, kind={self.kind!r})"

    # ---- corruption ------------------------------------------------------------------------

    def transformed(self, a: float, b: float) -> GaussianMixture:
        """Law of a x + b xi, xi ~ N(0, I): means a mu_k, covariances a^2 Sigma_k + b^2 I."""
        a, b = float(a), float(b)
        if not (math.isfinite(a) and math.isfinite(b)) or a == 0.0:
            raise ValueError(f"need finite a != 0 and finite b, got a={a}, b={b}")
        a2, b2 = a * a, b * b
        cov = a2 * self.cov
        if self.kind == "full":
            cov = cov + b2 * torch.eye(self.dim, dtype=torch.float64)
        else:
            cov = cov + b2
        return GaussianMixture._derived(
            self.weights, a * self.means, self.kind, a2 * self._lam + b2, self._basis, cov
        )

    def noised(self, process: Process, t: float) -> GaussianMixture:
        """Marginal p_t of the forward process at time t: x_t = alpha(t) x_0 + sigma(t) xi."""
        t = _scalar_time(t)
        return self.transformed(process.alpha(t), process.sigma(t))

    # ---- the linear algebra shared by log_prob, score and hessian --------------------------

    def _params(self, dtype: torch.dtype, device: torch.device) -> dict:
        """Parameters in the working dtype/device for the expanded quadratic form.

        In component k's basis (y = Q_k^T x and nu_k = Q_k^T mu_k for full components, y = x and
        nu = mu otherwise) with precisions P_k = 1 / lambda_k:
            (x - mu_k)^T C_k^{-1} (x - mu_k) = sum_i P_ki y_i^2 - 2 sum_i P_ki nu_ki y_i + c_k,
        and const_k = log w_k - d/2 log(2 pi) - 1/2 sum_i log lambda_ki - 1/2 sum_i P_ki nu_ki^2.
        """
        key = (dtype, device)
        if key in self._cache:
            return self._cache[key]
        w, mu, d = self.weights, self.means, self.dim
        lam = self._lam[:, None].expand(-1, d) if self.kind == "isotropic" else self._lam
        nu = mu if self._basis is None else torch.einsum("kij,ki->kj", self._basis.Q, mu)
        P = 1.0 / lam
        const = (
            torch.log(w)
            - 0.5 * d * math.log(2 * math.pi)
            - 0.5 * torch.log(lam).sum(-1)
            - 0.5 * (P * nu * nu).sum(-1)
        )
        p = {"P": P, "Pnu": P * nu, "const": const}
        p = {k: v.to(dtype=dtype, device=device) for k, v in p.items()}
        if self._basis is not None:
            p["Q"], p["Qstack"] = self._basis.stacks(dtype, device)
        self._cache[key] = p
        return p

    def prepare(self, dtype: torch.dtype, device: torch.device) -> GaussianMixture:
        """Compute and cache the factors score/hessian use in this dtype/device now (needed before
        torch.func transforms whose custom functions must not create them); returns self."""
        p = self._params(dtype, device)
        if self._basis is not None:
            self._precisions(p)
        return self

    def _flatten(self, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise ValueError("x must be a floating-point torch tensor of shape (..., d)")
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (..., {self.dim}), got {tuple(x.shape)}")
        return x.reshape(-1, self.dim), tuple(x.shape[:-1])

    def _log_joint(self, x: Tensor, p: dict) -> tuple[Tensor, Tensor | None]:
        """log w_k + log N(x; mu_k, C_k) for every component, (n, K); for full components also
        the rotated points y_k = Q_k^T x, (n, K, d), with one (n, d) x (d, K d) product."""
        if self._basis is not None:
            y = (x @ p["Qstack"]).view(-1, self.n_components, self.dim)
            quad = (y * (y * p["P"] - 2.0 * p["Pnu"])).sum(-1)
            return p["const"] - 0.5 * quad, y
        if self.kind == "isotropic":
            # x.nu_k P_k - |x|^2 P_k / 2 + const_k in place on the one (n, K) product; |x|^2 by a
            # reduction without an (n, d) temporary; the large const_k goes last (not as addmm's
            # input) so that it cannot swamp the dot products
            xx = torch.linalg.vector_norm(x, dim=-1).square()
            logits = (x @ p["Pnu"].T).addcmul_(xx[:, None], p["P"][:, 0], value=-0.5)
            return logits.add_(p["const"]), None
        quad = (x * x) @ p["P"].T - 2.0 * (x @ p["Pnu"].T)
        return p["const"] - 0.5 * quad, None

    def _component_scores(self, xf: Tensor, p: dict, y: Tensor | None) -> Tensor:
        """g_k = C_k^{-1}(mu_k - x) for all k, (n, K, d), in the original coordinates."""
        if y is None:
            return p["Pnu"] - xf[:, None, :] * p["P"]
        return torch.einsum("nki,kji->nkj", p["Pnu"] - y * p["P"], p["Q"])

    # ---- densities and derivatives ---------------------------------------------------------

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x) = logsumexp_k (log w_k + log N(x; mu_k, C_k)), shape (...)."""
        xf, batch = self._flatten(x)
        logits, _ = self._log_joint(xf, self._params(x.dtype, x.device))
        return torch.logsumexp(logits, dim=-1).reshape(batch)

    def responsibilities(self, x: Tensor) -> Tensor:
        """r_k(x) = posterior probability of component k given x, shape (..., K)."""
        xf, batch = self._flatten(x)
        logits, _ = self._log_joint(xf, self._params(x.dtype, x.device))
        return _softmax(logits).reshape(*batch, self.n_components)

    def score(self, x: Tensor) -> Tensor:
        """grad log p(x) = sum_k r_k(x) C_k^{-1} (mu_k - x), shape (..., d)."""
        xf, batch = self._flatten(x)
        p = self._params(x.dtype, x.device)
        logits, y = self._log_joint(xf, p)
        r = _softmax(logits)
        if y is not None:
            # sum_k r_k Q_k P_k (nu_k - y_k): one (n, K d) x (K d, d) product
            v = (r[:, :, None] * (p["Pnu"] - y * p["P"])).reshape(xf.shape[0], -1)
            s = v @ p["Qstack"].T
        elif self.kind == "isotropic":
            s = (r @ p["Pnu"]).addcmul_(xf, (r @ p["P"][:, 0])[:, None], value=-1.0)
        else:
            s = r @ p["Pnu"] - xf * (r @ p["P"])
        return s.reshape(*batch, self.dim)

    def hessian(self, x: Tensor) -> Tensor:
        """Hessian of log p (THEORY.md 3.1), shape (..., d, d)."""
        return self.score_and_hessian(x)[1]

    def score_and_hessian(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """grad log p (..., d) and its Hessian (..., d, d) from one evaluation of the
        responsibilities (THEORY.md 3.1), with the outer-product terms in covariance form:

            sum_k r_k g_k g_k^T - gbar gbar^T = sum_k r_k (g_k - gbar)(g_k - gbar)^T,

        (sum_k r_k = 1), one batched product G^T G with G_k = sqrt(r_k) (g_k - gbar) added to
        -sum_k r_k C_k^{-1} in place. Cost O(n K d^2); memory two (n, d, d) tensors.
        """
        xf, batch = self._flatten(x)
        p = self._params(x.dtype, x.device)
        logits, y = self._log_joint(xf, p)
        r = _softmax(logits)
        g = self._component_scores(xf, p, y)
        gbar = torch.bmm(r[:, None, :], g)  # (n, 1, d)
        if y is not None:  # sum_k r_k C_k^{-1}: one (n, K) x (K, d d) product
            prec = (r @ self._precisions(p)).view(-1, self.dim, self.dim)
        else:
            prec = torch.diag_embed(r @ p["P"])
        G = r.sqrt()[:, :, None] * (g - gbar)
        h = prec.baddbmm_(G.transpose(1, 2), G, beta=-1.0)  # prec is a fresh tensor: in place
        return gbar.reshape(*batch, self.dim), h.reshape(*batch, self.dim, self.dim)

    def _precisions(self, p: dict) -> Tensor:
        """C_k^{-1} = Q_k diag(P_k) Q_k^T of full components, flattened to (K, d d), cached."""
        if "prec" not in p:
            Q = p["Q"]
            prec = (Q * p["P"][:, None, :]) @ Q.transpose(1, 2)
            p["prec"] = prec.reshape(self.n_components, -1)
        return p["prec"]

    # ---- sampling and process views --------------------------------------------------------

    def sample(
        self,
        n: int,
        seed: int = 0,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> Tensor:
        """n independent draws, reproducible from seed (a private torch.Generator), shape (n, d):
        x = mu_k + Q_k diag(lambda_k)^{1/2} xi with k ~ w."""
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        gen = torch.Generator().manual_seed(int(seed))
        xi = torch.randn(n, self.dim, generator=gen, dtype=torch.float64)
        if n:
            k = torch.multinomial(self.weights, n, replacement=True, generator=gen)
            std = self._lam.sqrt()[k]
            z = (std[:, None] if self.kind == "isotropic" else std) * xi
            if self._basis is not None:  # z_i <- Q_k z_i, one matmul per component (no n d^2)
                for c in torch.unique(k).tolist():
                    rows = k == c
                    z[rows] = z[rows] @ self._basis.Q[c].T
            xi = self.means[k] + z
        return xi.to(dtype=dtype, device=device)

    def score_fn(self, process: Process) -> ScoreFn:
        """score(x, t) = grad log p_t(x) for the marginals p_t of ``process``.

        t is one time for the batch (a float or a 0-dim tensor) or a tensor of per-sample times of
        shape (n,) for x of shape (n, d) (adaptive samplers).
        """

        def score(x: Tensor, t: Time) -> Tensor:
            if isinstance(t, Tensor) and t.ndim >= 1 and (t.numel() > 1 or x.ndim == 2):
                # one time per row (also for a single row, so that a sample's score does not
                # depend on how many samples share the call)
                return self.score_per_sample(x, process.alpha(t), process.sigma(t))
            return self.noised(process, t).score(x)

        return score

    def score_per_sample(self, x: Tensor, a: Tensor, b: Tensor) -> Tensor:
        """grad log of the law of a_i X + b_i xi at x_i, one (a_i, b_i) per row of x (n, d).

        Component k of row i has mean a_i mu_k, covariance Q_k diag(a_i^2 lambda_k + b_i^2) Q_k^T,
        so with y_ik = Q_k^T (x_i - a_i mu_k) and P_ik = 1 / (a_i^2 lambda_k + b_i^2):
            r_ik = softmax_k(log w_k + 1/2 sum_j (log P_ikj - P_ikj y_ikj^2)),
            grad log p(x_i) = -sum_k r_ik Q_k (P_ik y_ik).
        Cost O(n K d^2) for full and O(n K d) for isotropic/diagonal components.
        """
        xf, batch = self._flatten(x)
        n = xf.shape[0]
        if xf.ndim != 2 or len(batch) != 1:
            raise ValueError(f"per-sample times need x of shape (n, {self.dim})")
        a = torch.as_tensor(a, dtype=x.dtype, device=x.device).reshape(-1)
        b = torch.as_tensor(b, dtype=x.dtype, device=x.device).reshape(-1)
        if a.numel() != n or b.numel() != n:
            raise ValueError(f"per-sample times must have shape ({n},), got {a.numel()} values")
        lam = self._lam[:, None].expand(-1, self.dim) if self.kind == "isotropic" else self._lam
        lam = lam.to(dtype=x.dtype, device=x.device)
        mu = self.means.to(dtype=x.dtype, device=x.device)
        diff = xf[:, None, :] - a[:, None, None] * mu
        Q = None if self._basis is None else self._basis.stacks(x.dtype, x.device)[0]
        y = diff if Q is None else torch.einsum("nkd,kde->nke", diff, Q)
        P = 1.0 / (a[:, None, None] ** 2 * lam + b[:, None, None] ** 2)
        logw = torch.log(self.weights).to(dtype=x.dtype, device=x.device)
        r = _softmax(logw + 0.5 * (torch.log(P) - P * y * y).sum(-1))
        g = r[:, :, None] * P * y
        s = -(g.sum(1) if Q is None else torch.einsum("nke,kde->nd", g, Q))
        return s.reshape(x.shape)

    def denoiser(self, process: Process) -> ScoreFn:
        """Tweedie denoiser D(x, t) = E[x_0 | x_t = x] = (x + sigma^2 grad log p_t(x)) / alpha."""

        def denoise(x: Tensor, t: Time) -> Tensor:
            t = _scalar_time(t)
            a, b = process.alpha(t), process.sigma(t)
            return (x + b * b * self.noised(process, t).score(x)) / a

        return denoise


class _Basis:
    """Eigenvectors Q (K, d, d) of full covariances, shared by a mixture and all its noised
    versions, with the stacked form Qstack (d, K d) = [Q_1 ... Q_K] cached per dtype/device."""

    def __init__(self, Q: Tensor) -> None:
        self.Q = Q
        self._cache: dict = {}

    def stacks(self, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
        key = (dtype, device)
        if key not in self._cache:
            Q = self.Q.to(dtype=dtype, device=device)
            K, d, _ = Q.shape
            self._cache[key] = (Q, Q.permute(1, 0, 2).reshape(d, K * d))
        return self._cache[key]


def _softmax(logits: Tensor) -> Tensor:
    """softmax over the last axis: e / sum(e) with e = exp(logits - max logits), or torch.softmax
    (the same formula in one fused kernel) from _GRAIN_SIZE elements on.

    torch.softmax opens an OpenMP region even for tiny inputs, which costs milliseconds per call
    when the other cores are busy (measured: 8 ms vs 60 us for a 6 x 1 input on a loaded 2-core
    machine); sampler loops call it thousands of times. From _GRAIN_SIZE elements on, elementwise
    ops are parallel anyway and the fused kernel wins (65536 x 16: 6.7 vs 17.7 ms in float64,
    4.2 vs 27 ms in float32, whose exp is slow for underflowing arguments). Subtracting the max,
    not the logsumexp, keeps the largest responsibility exact: exp(logits - logsumexp) has a
    relative error of about eps * |logsumexp| in every entry.
    """
    if logits.numel() >= _GRAIN_SIZE:
        return torch.softmax(logits, dim=-1)
    e = torch.exp(logits - logits.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


def _scalar_time(t: Time) -> float:
    if isinstance(t, Tensor):
        if t.numel() != 1:
            raise ValueError(
                f"time must be a scalar (one time for the whole batch), got shape {tuple(t.shape)}"
            )
        t = float(t)
    return float(t)
