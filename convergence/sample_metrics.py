"""Sample-based distances beyond exact W2: debiased Sinkhorn, sliced W2, MMD, k-NN KL.

Each estimator compares an output sample x, shape (n, d), with the reference law, given as a
sampler ``sample_reference(n, seed)`` and, where the estimator needs it, as the law itself (a
``GaussianMixture`` or ``ProductMixture``: closed-form kernel embedding, exact log-density). Each
returns a ``SampleEstimate`` with its noise floor at the size used and a 95% CI half-width; use
them through ``convergence.metrics.sample_distance``. The docstring of each says what it
can resolve: none of them can show a T^-2 slope (the floors below), they serve black-box checks at
small T.

Floors measured against N(0, I_d) with the default parameters (mean |estimator| between
independent reference samples of size n, i.e. at true distance 0; P pairs, seeds fixed):

    estimator                      n      d = 1     d = 2     d = 8     P
    w2 (``metrics``)               2000   0.056     0.148     1.46      2
                                   10^4   0.016     0.074     1.20      1
    sinkhorn, sqrt(S_eps)          2000   0.046     0.082     0.158     2
                                   10^4   0.011     0.028     0.074     1
    sliced-w2 (1000 directions)    2000   0.057     0.056     0.056     20
                                   10^4   0.025     0.024     0.025     4
    mmd, |MMD^2|                   2000   1.4e-4    1.7e-4    7.2e-5    20
                                   10^4   4.2e-5    3.4e-5    1.4e-5    8
    kl, |KL| (k = 1)               2000   0.031     0.018     0.058     20
                                   10^4   0.008     0.010     0.062     20

The d = 8 k-NN KL floor is its bias (mean -0.057 at n = 2000, -0.062 at 10^4), which does not
shrink at these n. Cost of one ``sample_distance`` call at n = 2000 (two-component mixture,
d = 2, 2 shared cores): w2 4.6 s, sinkhorn 3.7 s, sliced-w2 1.8 s, mmd 0.2 s, kl 0.05 s.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import ot
import torch
from scipy.spatial import cKDTree
from scipy.special import digamma, gammaln

from analytic.gmm import GaussianMixture
from analytic.product import ProductMixture
from convergence.metrics import (
    _COMPARE,
    REPEATS,
    SampleEstimate,
    SampleReference,
    _as_points,
    _check_seed,
    _derived_seed,
    _draw,
    check_matrix_size,
    check_repeats,
    repeated_estimate,
    w2_against_reference,
)

Law = GaussianMixture | ProductMixture

# ---- debiased Sinkhorn divergence -----------------------------------------------------------

EPS_REL = 1.0
"""Default Sinkhorn temperature relative to the reference's scale: eps = EPS_REL tr Cov_ref."""


def entropic_ot(x: Any, y: Any, *, eps: float, tol: float = 1e-5, max_iter: int = 10_000) -> float:
    """Entropic transport cost between the empirical measures of x (n, d) and y (m, d):

        OT_eps(a, b) = min_{P in U(a, b)} <P, C> + eps KL(P | a (x) b),  C_ij = |x_i - y_j|^2,
                     = max_{f, g} <a, f> + <b, g> - eps <a (x) b, exp((f + g - C) / eps) - 1>,

    a = 1/n, b = 1/m (Feydy et al. 2019, AISTATS, arXiv 1810.08278), by Sinkhorn's
    alternate maximisation of the dual in scaling form with absorption (Schmitzer 2019, SIAM J.
    Sci. Comput. 41, A1443): with E_ij = exp((f_i + g_j - C_ij) / eps) formed once, sweeps
    update u, v with P = a b diag(u) E diag(v) until the row marginals are within ``tol``
    (relative) of a, then (f, g) += eps log (u, v) and the value is the dual <a, f> + <b, g>
    (the total mass is exact after the last sweep). The dual value converges much faster than
    the marginals: tol = 1e-3 already gives it to 1e-7 on unit-scale data.

    Start: if y is x the problem is symmetric and the averaged update f <- (f + T f) / 2
    (Feydy et al. 2019) converges from f = 0 in a few dozen sweeps (C_ii = 0 keeps every
    row of E positive). Otherwise from ``init`` = (f, g) when given (``sinkhorn_divergence``
    passes the two self-transport potentials, close to the optimum when the laws are close),
    falling back to epsilon-scaling when a row of E underflows: eps_k = max(C) / 2^k down to eps,
    3 sweeps per level.

    Cost: two dense n x m float64 matrices (refused above 2 GB); one exp pass per start or level
    and 2 n m flops per sweep; sweeps grow like 1/eps (about 150 at eps = 0.09 and 20 at eps = 1
    for N(0, 1) data).

    Raises:
        ValueError: eps not positive, samples of different dimension, matrices above 2 GB.
        RuntimeError: the marginals did not converge within ``max_iter`` sweeps.
    """
    return _entropic(x, y, eps=eps, tol=tol, max_iter=max_iter)[0]


def _entropic(x, y, *, eps, init=None, tol=1e-5, max_iter=10_000):
    """(OT_eps, f, g) for ``entropic_ot``."""
    eps = _positive_float("eps", eps)
    xa = _as_points(x, "x")
    symmetric = y is x
    ya = xa if symmetric else _as_points(y, "y")
    if xa.shape[1] != ya.shape[1]:
        raise ValueError(f"x and y must have the same dimension d, got {xa.shape} and {ya.shape}")
    n, m = xa.shape[0], ya.shape[0]
    check_matrix_size("sinkhorn", n, m, "use metric 'sliced-w2' or 'mmd'", copies=2)
    shift = np.concatenate([xa, ya]).mean(axis=0) if not symmetric else xa.mean(axis=0)
    C = ot.dist(xa - shift, ya - shift, metric="sqeuclidean")
    potentials = None
    if symmetric or init is not None:
        start = (np.zeros(n), np.zeros(m)) if symmetric else init
        potentials = _scaling_sweeps(C, *start, eps, symmetric, tol, max_iter)
    if potentials is None:  # epsilon-scaling from zero potentials
        f, g = np.zeros(n), np.zeros(m)
        level = max(float(C.max()), eps)
        while level > eps:
            f, g = _scaling_sweeps(C, f, g, level, False, None, 3)
            level /= 2.0
        potentials = _scaling_sweeps(C, f, g, eps, False, tol, max_iter)
    f, g = potentials
    return float(f.mean() + g.mean()), f, g


def _scaling_sweeps(C, f, g, eps, symmetric, tol, max_iter):
    """Sinkhorn sweeps at one eps on P = a b diag(u) E diag(v), then (f, g) += eps log (u, v).

    Row condition u_i (E v)_i / m = 1, column condition v_j (E^T u)_j / n = 1; symmetric:
    u <- sqrt(u n / (E u)) (the averaged update in log form). tol None: ``max_iter`` sweeps
    (annealing). Returns None if a row or column of E underflowed to 0 (start too far off).
    """
    n, m = C.shape
    E = np.add.outer(f, g)
    E -= C
    E *= 1.0 / eps
    np.exp(E, out=E)
    u, v = np.ones(n), np.ones(m)
    err = math.inf
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for _ in range(max_iter):
            if symmetric:
                Eu = E @ u
                err = float(np.max(np.abs(u * Eu / n - 1.0)))
                u = np.sqrt(u * n / Eu)
                v = u
            else:
                v = n / (E.T @ u)
                Ev = E @ v
                err = float(np.max(np.abs(u * Ev / m - 1.0)))
                u = m / Ev
            if not math.isfinite(err):
                return None
            if tol is not None and err < tol:
                break
        else:
            if tol is not None:
                raise RuntimeError(
                    f"sinkhorn did not converge in {max_iter} sweeps at eps={eps:.3g} (marginal "
                    f"error {err:.2g} > {tol:.0e}); use a larger eps"
                )
    f = f + eps * np.log(u)
    return f, (f if symmetric else g + eps * np.log(v))


def sinkhorn_divergence(x: Any, y: Any, *, eps: float) -> float:
    """Debiased Sinkhorn divergence between empirical measures (Feydy et al. 2019):

        S_eps(a, b) = OT_eps(a, b) - (OT_eps(a, a) + OT_eps(b, b)) / 2   (``entropic_ot``),

    in squared-distance units: S_eps >= 0, S_eps = 0 iff a = b, S_eps -> W2^2 as eps -> 0, and
    for a translation exactly S_eps(mu, mu(. - delta)) = |delta|^2 at every eps (the entropic
    term is translation invariant and the cross cost gains |delta|^2 - 2 delta.(mean x - mean y)).
    Cost: three ``entropic_ot`` problems, the cross one started from the self potentials.
    """
    aa, f, _ = _entropic(x, x, eps=eps)
    bb, g, _ = _entropic(y, y, eps=eps)
    return _entropic(x, y, eps=eps, init=(f, g))[0] - 0.5 * (aa + bb)


@dataclass(frozen=True)
class _WithSelfTerm:
    points: np.ndarray
    self_cost: float  # OT_eps(a, a)
    potential: np.ndarray  # its optimal potential f (= g)


def _sinkhorn_estimate(x, sample_reference, *, seed, eps=None, repeats=REPEATS):
    """sqrt(S_eps) on the W2 scale, R reference draws (``repeated_estimate``).

    eps default: EPS_REL tr Cov (= s^2, s the RMS distance to the mean of the first reference
    draw), half the mean pair cost E|Y - Y'|^2 = 2 s^2 in every d: a blur of the data's own
    scale. Smaller eps tends to W2 and its n^(-1/d) floor (Genevay et al., AISTATS 2019), larger eps
    to an MMD that attenuates the signal. Measured at n = 2000, N(0, I_d), sqrt(S_eps) at zero
    distance (floor) and for a 10% scale change (exact W2 0.141 in d = 2, 0.283 in d = 8):

        d = 2:  eps = 0.18: 0.103 / 0.164   0.5: 0.087 / 0.152   2 (default): 0.058 / 0.131
        d = 8:  eps = 0.72: 1.12 / 1.25     2: 0.61 / 0.75       8 (default): 0.18 / 0.28
                eps = 16: 0.12 / 0.20

    A translation is measured exactly at every eps (``sinkhorn_divergence``). Floor:
    sqrt(S_eps) between two independent reference samples (S_eps has a positive bias ~ C_eps / n).
    """
    xa = _as_points(x, "x")
    seed = _check_seed(seed)
    if eps is None:
        first = _as_points(
            _draw(sample_reference, xa.shape[0], _derived_seed(seed, _COMPARE, 0)), "reference"
        )
        eps = EPS_REL * float(np.var(first, axis=0).sum())
    eps = _positive_float("eps", eps)

    def prepare(a: np.ndarray) -> _WithSelfTerm:
        value, f, _ = _entropic(a, a, eps=eps)
        return _WithSelfTerm(a, value, f)

    def statistic(a: _WithSelfTerm, b: _WithSelfTerm, _: int) -> float:
        cross = _entropic(a.points, b.points, eps=eps, init=(a.potential, b.potential))[0]
        div = cross - 0.5 * (a.self_cost + b.self_cost)
        return math.sqrt(max(div, 0.0))

    est = repeated_estimate(
        statistic,
        xa,
        sample_reference,
        seed=seed,
        repeats=repeats,
        metric="sinkhorn",
        prepare=prepare,
    )
    return _with_note(est, f"sqrt(S_eps), eps={eps:.4g}; " + est.note)


# ---- sliced W2 -------------------------------------------------------------------------------

_BLOCK_BYTES = 64 * 2**20  # working memory per block of projections / kernel rows


def sliced_w2(x: Any, y: Any, *, n_directions: int = 1000, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance over L random directions (Bonneel et al. 2015, J. Math.
    Imaging Vis. 51):

        SW2(mu_x, mu_y)^2 = (1/L) sum_l W2(theta_l # mu_x, theta_l # mu_y)^2,

    theta_l i.i.d. uniform on the unit sphere (normalised Gaussian vectors from
    numpy.random.default_rng(seed)), each 1-D W2 exact by the quantile coupling: for n = m the
    mean squared difference of the sorted projections, otherwise POT's ``ot.wasserstein_1d``.
    For a translation by delta, SW2^2 -> |delta|^2 / d as L -> oo (E (theta.e)^2 = 1/d).
    In d = 1 every direction is +-1 and SW2 = W2 exactly, computed once (L is ignored).
    Cost O(L (n + m) (d + log(n + m))), projections in blocks of 64 MB.
    """
    xa = _as_points(x, "x")
    ya = _as_points(y, "y")
    if xa.shape[1] != ya.shape[1]:
        raise ValueError(f"x and y must have the same dimension d, got {xa.shape} and {ya.shape}")
    L = _positive_int("n_directions", n_directions)
    if xa.shape[1] == 1:  # both directions of the line give the same 1-D W2
        L, theta = 1, np.ones((1, 1))
    else:
        theta = np.random.default_rng(_check_seed(seed)).standard_normal((L, xa.shape[1]))
        theta /= np.linalg.norm(theta, axis=1, keepdims=True)
    block = max(1, _BLOCK_BYTES // (8 * (xa.shape[0] + ya.shape[0])))
    total = 0.0
    for start in range(0, L, block):
        t = theta[start : start + block].T
        if xa.shape[0] == ya.shape[0]:  # quantile coupling of equal sizes: sorted pairs
            diff = np.sort(xa @ t, axis=0) - np.sort(ya @ t, axis=0)
            total += float(np.einsum("ij,ij->", diff, diff)) / xa.shape[0]
        else:
            total += float(np.sum(ot.wasserstein_1d(xa @ t, ya @ t, p=2)))
    return math.sqrt(max(total / L, 0.0))


def _sliced_estimate(x, sample_reference, *, seed, n_directions=1000, repeats=REPEATS):
    """SW2 with fresh directions in every repeat (so the CI includes the direction noise)."""
    L = _positive_int("n_directions", n_directions)
    return repeated_estimate(
        lambda a, b, s: sliced_w2(a, b, n_directions=L, seed=s),
        x,
        sample_reference,
        seed=seed,
        repeats=repeats,
        metric="sliced-w2",
    )


# ---- MMD with closed-form mixture terms -------------------------------------------------------


def gaussian_kernel_inner(law_a: Law, law_b: Law, bandwidth: float) -> float:
    """E_{X ~ a, Y ~ b} k(X, Y) for the kernel k(x, y) = exp(-|x - y|^2 / (2 l^2)):

        sum_jk w_j w'_k (l^2)^{d/2} det(S_jk)^{-1/2} exp(-delta_jk^T S_jk^{-1} delta_jk / 2),
        S_jk = C_j + C'_k + l^2 I,  delta_jk = m_j - m'_k,

    because X - Y ~ N(delta_jk, C_j + C'_k) per component pair and
    E_{Z ~ N(m, C)} exp(-|Z|^2 / (2 l^2)) = (l^2)^{d/2} det(C + l^2 I)^{-1/2}
    exp(-m^T (C + l^2 I)^{-1} m / 2) (Gaussian integral). With a = b this is
    ||mu_q||^2. Products (``ProductMixture``) factor: the kernel is a product over coordinates.
    Computed in log space. Cost O(K_a K_b d^3) (O(K_a K_b d) for diagonal components).
    """
    l2 = _positive_float("bandwidth", bandwidth) ** 2
    if isinstance(law_a, ProductMixture) or isinstance(law_b, ProductMixture):
        if not (isinstance(law_a, ProductMixture) and isinstance(law_b, ProductMixture)):
            raise ValueError("gaussian_kernel_inner needs two GaussianMixtures or two products")
        return math.prod(
            gaussian_kernel_inner(law_a.factor(i), law_b.factor(i), bandwidth)
            for i in range(law_a.dim)
        )
    d = law_a.dim
    delta = law_a.means[:, None, :] - law_b.means[None, :, :]  # (Ka, Kb, d)
    if law_a.kind == "full" or law_b.kind == "full":
        eye = torch.eye(d, dtype=torch.float64)
        S = law_a.covariance_matrices()[:, None] + law_b.covariance_matrices()[None] + l2 * eye
        chol = torch.linalg.cholesky(S)
        logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        z = torch.linalg.solve_triangular(chol, delta[..., None], upper=False)[..., 0]
        quad = z.square().sum(-1)
    else:
        diag_a = torch.diagonal(law_a.covariance_matrices(), dim1=-2, dim2=-1)
        diag_b = torch.diagonal(law_b.covariance_matrices(), dim1=-2, dim2=-1)
        s = diag_a[:, None] + diag_b[None] + l2
        logdet = torch.log(s).sum(-1)
        quad = (delta.square() / s).sum(-1)
    log_w = torch.log(law_a.weights)[:, None] + torch.log(law_b.weights)[None, :]
    terms = log_w + 0.5 * d * math.log(l2) - 0.5 * logdet - 0.5 * quad
    return float(torch.logsumexp(terms.reshape(-1), 0).exp())


def kernel_mean_embedding(law: Law, x: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """mu_q(x) = E_{Y ~ q} k(x, Y) = (2 pi l^2)^{d/2} q_l(x), shape (n,), for x (n, d) float64.

    q_l is q convolved with N(0, l^2 I) (covariances C_k + l^2 I: ``law.transformed(1, l)``), the
    per-component form of the Gaussian integral in ``gaussian_kernel_inner``. Cost O(n K d)
    (O(n K d^2) for full covariances).
    """
    ell = _positive_float("bandwidth", bandwidth)
    log_q_l = law.transformed(1.0, ell).log_prob(x)
    return torch.exp(0.5 * law.dim * math.log(2.0 * math.pi * ell * ell) + log_q_l)


def mmd2_unbiased(x: Any, law: Law, *, bandwidth: float) -> tuple[float, float]:
    """Unbiased MMD^2 between the law of the sample x (n >= 3) and the mixture q, and its variance.

        MMD^2 = E_{p p} k - 2 E_p mu_q + ||mu_q||^2   (Gretton et al. 2012, JMLR 13: MMD^2_u),
        U     = 1/(n(n-1)) sum_{i != j} h(x_i, x_j),  h(x, x') = k(x, x') - mu_q(x) - mu_q(x')
                                                                + ||mu_q||^2,

    with mu_q and ||mu_q||^2 in closed form (``kernel_mean_embedding``, ``gaussian_kernel_inner``),
    so only the output-output term needs pairs. Var U = 4(n-2)/(n(n-1)) zeta_1 + 2/(n(n-1)) zeta_2
    (Hoeffding 1948; Serfling 1980, Sec. 5.2.1) with the plug-in estimates
    zeta_2 = mean_{i != j} h_ij^2 - U^2 and zeta_1 = sum_i (r_i^2 - sum_{j != i} h_ij^2) /
    (n(n-1)(n-2)) - U^2, r_i = sum_{j != i} h_ij (both clipped at 0). At p = q the statistic is
    degenerate (zeta_1 = 0): spread ~ sqrt(2 zeta_2) / n. Cost O(n^2 d), kernel rows in blocks of
    64 MB.
    """
    xa = _as_points(x, "x")
    n, d = xa.shape
    if n < 3:
        raise ValueError(f"mmd needs n >= 3 samples, got {n}")
    if d != law.dim:
        raise ValueError(f"x has dimension {d}, the reference law {law.dim}")
    ell = _positive_float("bandwidth", bandwidth)
    xt = torch.from_numpy(xa)
    mu = kernel_mean_embedding(law, xt, ell)
    c = gaussian_kernel_inner(law, law, ell)
    xc = xt - xt.mean(0)
    row_sum = torch.empty(n, dtype=torch.float64)
    sq_sum = 0.0
    block = max(1, _BLOCK_BYTES // (8 * n))
    for start in range(0, n, block):
        stop = min(n, start + block)
        h = torch.cdist(xc[start:stop], xc).square_().mul_(-0.5 / (ell * ell)).exp_()
        h += c - mu[None, :]
        h -= mu[start:stop, None]
        h[torch.arange(stop - start), torch.arange(start, stop)] = 0.0  # i == j excluded
        row_sum[start:stop] = h.sum(1)
        sq_sum += float(h.square().sum())
    pairs = n * (n - 1)
    U = float(row_sum.sum()) / pairs
    zeta2 = max(sq_sum / pairs - U * U, 0.0)
    zeta1 = max((float(row_sum.square().sum()) - sq_sum) / (pairs * (n - 2)) - U * U, 0.0)
    return U, 4.0 * (n - 2) / pairs * zeta1 + 2.0 / pairs * zeta2


def _mmd_estimate(x, sample_reference, reference_law, *, seed, bandwidth=None, repeats=REPEATS):
    """MMD^2 of x against the closed-form reference; ci = 1.96 sqrt(Var U); floor = mean |U| of
    R // 2 independent reference samples of size n (U is unbiased: the floor is its spread at 0).

    bandwidth default: l = sqrt(tr Cov_q), so that |x - y|^2 / (2 l^2) ~ 1 for typical pairs in
    every d (the median heuristic up to a constant).
    """
    xa = _as_points(x, "x")
    seed = _check_seed(seed)
    F = check_repeats(repeats) // 2
    ell = math.sqrt(_total_variance(reference_law)) if bandwidth is None else bandwidth
    ell = _positive_float("bandwidth", ell)
    value, var = mmd2_unbiased(xa, reference_law, bandwidth=ell)
    n = xa.shape[0]
    floors = [
        abs(
            mmd2_unbiased(
                _draw(sample_reference, n, _derived_seed(seed, _COMPARE, i)),
                reference_law,
                bandwidth=ell,
            )[0]
        )
        for i in range(F)
    ]
    return SampleEstimate(
        value=value,
        floor=float(np.mean(floors)),
        n=n,
        ci=1.96 * math.sqrt(var),
        metric="mmd",
        note=f"unbiased MMD^2, bandwidth={ell:.4g}; 95% CI from the U-statistic variance; floor = "
        f"mean |MMD^2| of {F} reference sample(s) of size n",
    )


# ---- one-sample k-NN KL ------------------------------------------------------------------------


def knn_kl(x: Any, y: Any, log_q_y: Any, *, k: int = 1) -> float:
    """KL(q || p) from reference points y ~ q (m, d) with exact log q(y) and output sample x ~ p:

        KL_hat = (1/m) sum_j [log q(y_j) - log p_hat(y_j)],
        log p_hat(y) = psi(k) - psi(n + 1) - log V_d - d log r_k(y),

    r_k(y) the distance from y to its k-th nearest neighbour in x (scipy cKDTree), V_d the volume
    of the unit d-ball. The count of x in the ball of radius r_k(y) makes its q-mass a
    Beta(k, n - k + 1) variable, E log = psi(k) - psi(n + 1), which gives the bias correction
    (Kozachenko-Leonenko 1987, Probl. Inf. Transm. 23; Wang, Kulkarni, Verdu 2009, IEEE Trans.
    Inf. Theory 55, 2392-2405: their k-NN divergence estimator with the exact log q in place of
    its k-NN estimate; psi(n + 1) = log n + O(1/n)). Residual bias: the density's curvature in
    the ball and p's tails, decaying roughly like n^(-c/d). Measured at n = 10^4
    over 20 independent (x, y), mean (sd):

        law of x                 d   exact   k = 1 (default)  k = 5
        N(0, I) = q              1   0       0.008 (0.018)    0.001 (0.006)
                                 2   0       -0.005 (0.013)   -0.005 (0.005)
                                 8   0       -0.063 (0.016)   -0.057 (0.006)
        N(0.5 (1,..,1), I)       1   0.125   0.123 (0.016)    0.124 (0.011)
                                 2   0.25    0.250 (0.015)    0.240 (0.013)
                                 8   1.0     0.79 (0.02)      0.73 (0.02)

    k = 5 has a three times smaller spread at p = q (Var d log r_k ~ psi'(k): 1.64 at k = 1,
    0.22 at k = 5), hence lower floors, but a bias at nonzero KL that its floor and CI do not
    cover (n = 4000, d = 2, KL 0.25: -0.02, truth outside CI + floor in 2 of 20 runs; k = 1:
    -0.007, 0 of 20): k = 1 is the default. Cost O((n + m) log n) in low d.
    """
    xa = _as_points(x, "x")
    ya = _as_points(y, "y")
    n, d = xa.shape
    if ya.shape[1] != d:
        raise ValueError(f"x and y must have the same dimension d, got {xa.shape} and {ya.shape}")
    log_q = np.asarray(log_q_y.detach().cpu() if hasattr(log_q_y, "detach") else log_q_y)
    if log_q.shape != (ya.shape[0],):
        raise ValueError(f"log_q_y must have shape ({ya.shape[0]},), got {log_q.shape}")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= n:
        raise ValueError(f"k must be an integer in [1, n] = [1, {n}], got {k!r}")
    r = cKDTree(xa).query(ya, k=[int(k)])[0][:, 0]
    if np.any(r <= 0.0):
        raise ValueError("kl: a reference point coincides with an output point (r_k = 0)")
    log_ball = 0.5 * d * math.log(math.pi) - gammaln(0.5 * d + 1.0)
    log_p = digamma(k) - digamma(n + 1) - log_ball - d * np.log(r)
    return float(np.mean(log_q - log_p))


KL_REPEATS = 10
"""Default reference draws for k-NN KL: each costs milliseconds, and 10 make its CI stable."""


@dataclass(frozen=True)
class _WithLogDensity:
    points: np.ndarray
    log_q: np.ndarray


def _kl_estimate(x, sample_reference, reference_law, *, seed, k=1, repeats=KL_REPEATS):
    """KL(reference || output) by ``knn_kl``: x is the density sample, each reference draw the
    evaluation points; floor = |KL_hat| with x replaced by an independent reference sample
    (its k-NN bias at zero distance)."""
    xa = _as_points(x, "x")
    if xa.shape[1] != reference_law.dim:
        raise ValueError(f"x has dimension {xa.shape[1]}, the reference law {reference_law.dim}")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= xa.shape[0]:
        raise ValueError(f"k must be an integer in [1, n] = [1, {xa.shape[0]}], got {k!r}")

    def prepare(a: np.ndarray) -> _WithLogDensity:
        return _WithLogDensity(a, reference_law.log_prob(torch.from_numpy(a)).numpy())

    est = repeated_estimate(
        lambda a, b, _: knn_kl(a.points, b.points, b.log_q, k=k),
        xa,
        sample_reference,
        seed=seed,
        repeats=repeats,
        metric="kl",
        prepare=prepare,
    )
    return _with_note(est, f"k-NN KL(reference || output), k={k}; " + est.note)


# ---- dispatch and validation ------------------------------------------------------------------

_PARAMS = {
    "w2": ("repeats",),
    "sinkhorn": ("eps", "repeats"),
    "sliced-w2": ("n_directions", "repeats"),
    "mmd": ("bandwidth", "repeats"),
    "kl": ("k", "repeats"),
}


def estimate(
    metric: str,
    x: Any,
    *,
    sample_reference: SampleReference,
    reference_law: Law | None = None,
    seed: int,
    **params: Any,
) -> SampleEstimate:
    """``convergence.metrics.sample_distance`` after its metric checks (see there)."""
    unknown = sorted(set(params) - set(_PARAMS[metric]))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for metric {metric!r}; "
            f"allowed: {', '.join(_PARAMS[metric])}"
        )
    if "repeats" in params:
        check_repeats(params["repeats"])
    if metric in ("mmd", "kl") and not isinstance(reference_law, GaussianMixture | ProductMixture):
        raise ValueError(
            f"reference_law must be a GaussianMixture or ProductMixture, got "
            f"{type(reference_law).__name__}"
        )
    calls: dict[str, Callable[..., SampleEstimate]] = {
        "w2": lambda: w2_against_reference(x, sample_reference, seed=seed, **params),
        "sinkhorn": lambda: _sinkhorn_estimate(x, sample_reference, seed=seed, **params),
        "sliced-w2": lambda: _sliced_estimate(x, sample_reference, seed=seed, **params),
        "mmd": lambda: _mmd_estimate(x, sample_reference, reference_law, seed=seed, **params),
        "kl": lambda: _kl_estimate(x, sample_reference, reference_law, seed=seed, **params),
    }
    return calls[metric]()


def _total_variance(law: Law) -> float:
    """tr Cov of a mixture: sum_k w_k (tr C_k + |m_k|^2) - |sum_k w_k m_k|^2 (per factor for
    products)."""
    if isinstance(law, ProductMixture):
        return sum(_total_variance(law.factor(i)) for i in range(law.dim))
    return float(torch.trace(law.covariance()))


def _with_note(est: SampleEstimate, note: str) -> SampleEstimate:
    return SampleEstimate(est.value, est.floor, est.n, est.ci, est.metric, note)


def _positive_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
