"""Sample-based distances with their noise floors.

An empirical distance between a sampler's output and a reference sample is biased upwards by the
finite sample size: even two independent n-samples of the same law are at a positive distance,
the noise floor (THEORY.md 4.1: W2 floor ~0.15 for N(0, I_2) at n = 2000, and it shrinks like
n^(-1/d) once d > 4). A rate fit must only use errors well above that floor (DESIGN.md decision 5),
so every estimate here is returned together with the floor at its sample size.

Computation happens in float64 numpy through POT's exact network-simplex solver; torch tensors
are converted at this edge.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import ot

SampleReference = Callable[[int, int], Any]
"""sample_reference(n, seed) -> (n, d) tensor or array of i.i.d. draws of the reference law."""

_NUM_ITER_MAX = 10_000_000
_OPTIMAL = 1  # POT's result code for a solved transport problem


def _as_points(x: Any, name: str) -> np.ndarray:
    """(n, d) float64 numpy array from a torch tensor or array-like; n, d >= 1, finite values."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    arr = np.asarray(x)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must have shape (n, d) with n, d >= 1, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {int(np.sum(~np.isfinite(arr)))} NaN/inf")
    return arr


def w2_samples(x: Any, y: Any) -> float:
    """Exact 2-Wasserstein distance between the empirical measures of two samples.

        W2(mu_x, mu_y)^2 = min_{P in U(a, b)} sum_ij P_ij |x_i - y_j|^2,
        a = 1_n / n,  b = 1_m / m,

    For d >= 2 the problem is solved exactly by POT's network simplex (``ot.emd2``) on the
    squared-Euclidean cost matrix of ``ot.dist``; both samples are first shifted by their pooled
    mean (W2 is translation invariant) to limit cancellation in |x|^2 + |y|^2 - 2 x.y.
    For d = 1 the same optimum is computed by POT's exact 1-D solver ``ot.emd2_1d`` (monotone
    quantile coupling; with n = m it is sqrt(mean((sort x - sort y)^2))), which takes
    O((n + m) log(n + m)) time instead of seconds and an n x m matrix.

    Cost for d >= 2: 8 n m bytes for the cost matrix and roughly cubic time (about 1 s at
    n = m = 2000). Do not use it as an error metric for rates in d > 2: its noise floor decays like
    n^(-1/d) (THEORY.md 4.1 and 4.8).

    Args:
        x: (n, d) sample (torch tensor or array).
        y: (m, d) sample with the same d.

    Returns:
        W2 as a Python float.

    Raises:
        ValueError: empty input, wrong rank, mismatched d, non-finite values.
        RuntimeError: the solver stopped before reaching the optimum.
    """
    xa = _as_points(x, "x")
    ya = _as_points(y, "y")
    if xa.shape[1] != ya.shape[1]:
        raise ValueError(
            f"x and y must have the same dimension d, got x {xa.shape} and y {ya.shape}"
        )
    if xa.shape[1] == 1:
        cost = ot.emd2_1d(xa[:, 0], ya[:, 0], metric="sqeuclidean", dense=False)
        return math.sqrt(max(float(cost), 0.0))
    shift = np.concatenate([xa, ya]).mean(axis=0)
    cost_matrix = ot.dist(xa - shift, ya - shift, metric="sqeuclidean")
    a = np.full(xa.shape[0], 1.0 / xa.shape[0])
    b = np.full(ya.shape[0], 1.0 / ya.shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the failure is re-raised below
        cost, log = ot.emd2(a, b, cost_matrix, numItermax=_NUM_ITER_MAX, log=True)
    if log["result_code"] != _OPTIMAL:
        raise RuntimeError(
            f"ot.emd2 did not reach the optimal transport plan for n={xa.shape[0]}, "
            f"m={ya.shape[0]} (result code {log['result_code']}: {log['warning']})"
        )
    return math.sqrt(max(float(cost), 0.0))


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _derived_seed(seed: int, *path: int) -> int:
    """A 63-bit seed for stream ``path`` of ``seed`` (numpy SeedSequence spawn keys)."""
    words = np.random.SeedSequence(seed, spawn_key=path).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) | (int(words[1]) >> 1)


def _draw(sample_reference: SampleReference, n: int, seed: int) -> Any:
    y = sample_reference(n, seed)
    shape = tuple(getattr(y, "shape", ()))
    if len(shape) != 2 or shape[0] != n:
        raise ValueError(
            f"sample_reference(n, seed) must return an (n, d) sample with n={n}, got shape {shape}"
        )
    return y


# Stream tags of the derived seeds: floor pairs use (_FLOOR, r, 0|1), the comparison sample
# of w2_against_reference uses (_COMPARE,), so no two draws share a seed.
_FLOOR, _COMPARE = 0, 1


def w2_noise_floor(
    sample_reference: SampleReference, n: int, *, seed: int, repeats: int = 1
) -> float:
    """Noise floor of the sample W2 at sample size n: W2 between two independent n-samples.

        floor(n) = (1 / R) sum_{r < R} W2(mu_n^(r, 0), mu_n^(r, 1)),  mu_n^(r, i) = empirical
        measure of sample_reference(n, s_{r, i}),

    with seeds s_{r, i} derived deterministically from ``seed`` (SeedSequence(seed,
    spawn_key=(0, r, i))). A sample W2 at or below this level resolves nothing; a rate fit should
    keep only errors >= 10 x floor.

    Args:
        sample_reference: callable (n, seed) -> (n, d) tensor or array of reference draws.
        n: sample size (>= 1).
        seed: non-negative integer.
        repeats: number R of independent pairs averaged (>= 1).
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int | np.integer) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    seed = _check_seed(seed)
    total = 0.0
    for r in range(int(repeats)):
        first = _draw(sample_reference, int(n), _derived_seed(seed, _FLOOR, r, 0))
        second = _draw(sample_reference, int(n), _derived_seed(seed, _FLOOR, r, 1))
        total += w2_samples(first, second)
    return total / int(repeats)


@dataclass(frozen=True)
class SampleEstimate:
    """A sample-based distance ``value`` with the noise ``floor`` of its estimator at size ``n``."""

    value: float
    floor: float
    n: int


def w2_against_reference(x: Any, sample_reference: SampleReference, *, seed: int) -> SampleEstimate:
    """Sample W2 between x and a fresh reference sample of the same size, with its noise floor.

        value = W2(mu_x, mu_y),  y = sample_reference(n, s),  n = len(x),
        floor = w2_noise_floor(sample_reference, n, seed=seed),

    where s = SeedSequence(seed, spawn_key=(1,)) is independent of the floor's seeds.

    Args:
        x: (n, d) sample of the law under test (torch tensor or array).
        sample_reference: callable (n, seed) -> (n, d) draws of the reference law.
        seed: non-negative integer.
    """
    xa = _as_points(x, "x")
    seed = _check_seed(seed)
    n = xa.shape[0]
    y = _draw(sample_reference, n, _derived_seed(seed, _COMPARE))
    value = w2_samples(xa, y)
    return SampleEstimate(value=value, floor=w2_noise_floor(sample_reference, n, seed=seed), n=n)
