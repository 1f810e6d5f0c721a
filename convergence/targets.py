"""Named targets: a spec string such as ``gaussian:d=2`` or ``gmm:d=2,k=3,seed=0`` builds a
GaussianMixture deterministically.

``gaussian:d=D`` is one fixed, anisotropic, non-diagonal Gaussian per dimension:
    Sigma = Q diag(lambda) Q^T with lambda_i = 0.25 * 8^(i / (d - 1)) (eigenvalues from 0.25 to 2,
    condition number 8; lambda = 0.5 when d = 1) and Q = I - 2 v v^T / |v|^2 the Householder
    reflection of v = (1, 2, ..., d); mean mu_i = 1 - 1.5 i / (d - 1) (from 1 down to -0.5;
    mu = 1 when d = 1).
``gmm:d=D,k=K,seed=S[,cov=full|diag|iso]`` is a random but reproducible, well-conditioned mixture
drawn with numpy's default_rng(S): weights 0.5/K + 0.5 Dirichlet(2, ..., 2), means N(0, 1.5^2 I),
covariances with eigenvalues uniform in [0.2, 1] (condition number <= 5) and a Haar-random
orthogonal basis (full), random diagonals (diag) or random scalars (iso).
``planted:d=D,k=K,seed=S`` is a non-product mixture whose difficulty does not change with d: the
weights and means of ``gmm:d=2,k=K,seed=S`` planted in the first two coordinates (the same mean
separations at every d), component covariances Q_j diag(lambda) Q_j^T with the fixed spectrum
lambda_i = 0.2 * 5^(i / (d - 1)) (from 0.2 to 1: condition number 5 at every d) and a
Haar-random basis Q_j per component (so no rotation makes it a product).
``product:d=D,k=K,seed=S[,distinct=0|1]`` is the tensorised target prod_i q_i of one-dimensional
mixtures: every factor is ``gmm:d=1,k=K,seed=S`` (distinct=0, the default) or factor i is
``gmm:d=1,k=K,seed=S+i`` (distinct=1). Its marginals stay products and its score is
coordinate-separable, so a sampler's output law is the product of its 1-D laws and the tensorised
evaluator measures it exactly in any d (``convergence.evaluators.tensor``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from analytic.gmm import GaussianMixture
from analytic.product import ProductMixture


def gaussian_target(d: int) -> GaussianMixture:
    """The fixed anisotropic Gaussian of ``gaussian:d=D`` (see module docstring)."""
    _check_dim(d)
    if d == 1:
        return GaussianMixture([1.0], [[1.0]], [[[0.5]]])
    i = torch.arange(d, dtype=torch.float64)
    lam = 0.25 * 8.0 ** (i / (d - 1))
    v = i + 1.0
    Q = torch.eye(d, dtype=torch.float64) - 2.0 * torch.outer(v, v) / (v @ v)
    cov = Q @ torch.diag(lam) @ Q.T
    mean = 1.0 - 1.5 * i / (d - 1)
    return GaussianMixture([1.0], mean[None], (0.5 * (cov + cov.T))[None])


def random_gmm(d: int, k: int, seed: int, cov: str = "full") -> GaussianMixture:
    """The reproducible random mixture of ``gmm:d=D,k=K,seed=S,cov=...`` (see module docstring)."""
    _check_dim(d)
    if k < 1:
        raise ValueError(f"k (number of components) must be >= 1, got {k}")
    if cov not in ("full", "diag", "iso"):
        raise ValueError(f"cov must be one of full, diag, iso, got {cov!r}")
    rng = np.random.default_rng(seed)
    w = 0.5 / k + 0.5 * rng.dirichlet(np.full(k, 2.0))
    w = w / w.sum()
    means = rng.normal(0.0, 1.5, size=(k, d))
    if cov == "iso":
        covs = rng.uniform(0.2, 1.0, size=k)
    elif cov == "diag":
        covs = rng.uniform(0.2, 1.0, size=(k, d))
    else:
        covs = np.empty((k, d, d))
        for j in range(k):
            q, r = np.linalg.qr(rng.normal(size=(d, d)))
            q = q * np.sign(np.diag(r))  # Haar-distributed orthogonal matrix
            covs[j] = (q * rng.uniform(0.2, 1.0, size=d)) @ q.T
            covs[j] = 0.5 * (covs[j] + covs[j].T)
    return GaussianMixture(torch.from_numpy(w), torch.from_numpy(means), torch.from_numpy(covs))


def planted_gmm(d: int, k: int, seed: int) -> GaussianMixture:
    """The mixture of ``planted:d=D,k=K,seed=S`` (module docstring): the weights and plane means
    of ``gmm:d=2,k=K,seed=S`` placed in the first two coordinates, covariances Q_j diag(lambda)
    Q_j^T with lambda_i = 0.2 * 5^(i / (d - 1)) and Haar-random Q_j drawn with
    default_rng((S, d, j))."""
    _check_dim(d)
    if d < 2:
        raise ValueError(f"planted mixtures need d >= 2, got d = {d}")
    plane = random_gmm(2, k, seed)
    means = np.zeros((k, d))
    means[:, :2] = plane.means.numpy()
    lam = 0.2 * 5.0 ** (np.arange(d) / (d - 1))
    covs = np.empty((k, d, d))
    for j in range(k):
        rng = np.random.default_rng((seed, d, j))
        q, r = np.linalg.qr(rng.normal(size=(d, d)))
        q = q * np.sign(np.diag(r))  # Haar-distributed orthogonal matrix
        covs[j] = (q * lam) @ q.T
        covs[j] = 0.5 * (covs[j] + covs[j].T)
    return GaussianMixture(plane.weights, torch.from_numpy(means), torch.from_numpy(covs))


def product_target(d: int, k: int, seed: int, distinct: int = 0) -> ProductMixture:
    """The tensorised target of ``product:d=D,k=K,seed=S,distinct=0|1`` (module docstring)."""
    _check_dim(d)
    if distinct not in (0, 1):
        raise ValueError(f"distinct must be 0 or 1, got {distinct}")
    factors = [random_gmm(1, k, seed + i * distinct) for i in range(d if distinct else 1)]
    return ProductMixture.of(factors * (1 if distinct else d))


TARGETS: dict[str, tuple[Callable[..., GaussianMixture | ProductMixture], dict[str, type], str]] = {
    "gaussian": (gaussian_target, {"d": int}, "fixed anisotropic non-diagonal Gaussian"),
    "gmm": (
        random_gmm,
        {"d": int, "k": int, "seed": int, "cov": str},
        "reproducible random well-conditioned mixture",
    ),
    "planted": (
        planted_gmm,
        {"d": int, "k": int, "seed": int},
        "non-product mixture whose mean separation and conditioning do not change with d",
    ),
    "product": (
        product_target,
        {"d": int, "k": int, "seed": int, "distinct": int},
        "product of one-dimensional random mixtures (tensorised, exact in any d)",
    ),
}
_REQUIRED = {
    "gaussian": {"d"},
    "gmm": {"d", "k", "seed"},
    "planted": {"d", "k", "seed"},
    "product": {"d", "k", "seed"},
}


def parse_target(spec: str) -> GaussianMixture | ProductMixture:
    """Build the target named by a spec string ``name:key=value,...``."""
    name, _, rest = spec.partition(":")
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r} in {spec!r}; allowed: {', '.join(TARGETS)}")
    builder, types, _ = TARGETS[name]
    kwargs: dict = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in types:
            raise ValueError(
                f"bad parameter {item!r} in target {spec!r}; {name} takes {', '.join(types)}"
            )
        try:
            kwargs[key] = types[key](value)
        except ValueError:
            raise ValueError(
                f"parameter {key} of target {spec!r} must be {types[key].__name__}"
            ) from None
    missing = _REQUIRED[name] - set(kwargs)
    if missing:
        raise ValueError(f"target {spec!r} is missing {', '.join(sorted(missing))}")
    return builder(**kwargs)


def _check_dim(d: int) -> None:
    if d < 1:
        raise ValueError(f"dimension d must be >= 1, got {d}")
