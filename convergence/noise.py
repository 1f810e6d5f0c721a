"""Injected noise: every sample of a batch draws from its own stream.

Standard normal variates are a pure function of (seed, sample index i, step k, coordinate j), built
from a counter-based generator: the splitmix64 finaliser (Steele, Lea & Flood 2014) applied to
counters, turned into uniforms from their top 53 bits and into normals by Box-Muller. Hence a
result never depends on the batch size, on how a batch is split into shards, or on the device, and
no generator state is carried between calls (DESIGN.md decision 4).

Integer arithmetic is done in int64 with wrap-around multiplication; logical right shifts are
arithmetic shifts followed by a mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

Tensor = torch.Tensor


def _signed(c: int) -> int:
    """A 64-bit unsigned constant as the int64 with the same bits."""
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MIX1 = _signed(0xBF58476D1CE4E5B9)
_MIX2 = _signed(0x94D049BB133111EB)


def _srl(x: Tensor, s: int) -> Tensor:
    """Logical right shift of int64 bit patterns."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def mix64(x: Tensor) -> Tensor:
    """splitmix64 output function of the state x + golden gamma (a bijection on 64-bit words)."""
    z = x + _GOLDEN
    z = (z ^ _srl(z, 30)) * _MIX1
    z = (z ^ _srl(z, 27)) * _MIX2
    return z ^ _srl(z, 31)


def _uniform(bits: Tensor) -> Tensor:
    """(top 53 bits + 1/2) * 2^-53: uniform on (0, 1), never 0 or 1, float64."""
    return (_srl(bits, 11).to(torch.float64) + 0.5) * 2.0**-53


def stream_keys(seed: int, indices: Tensor, step: int | Tensor) -> Tensor:
    """Key of sample i at step k: mix(mix(mix(seed) + i) + k); k may be one per sample."""
    s = mix64(torch.tensor(int(seed) & ((1 << 63) - 1), dtype=torch.int64, device=indices.device))
    k = step.to(torch.int64) if isinstance(step, Tensor) else int(step)
    return mix64(mix64(s + indices.to(torch.int64)) + k)


def normal(
    seed: int, indices: Tensor, step: int | Tensor, d: int, *, dtype=torch.float64
) -> Tensor:
    """Standard normals of shape (len(indices), d) for samples ``indices`` at step ``step``.

    Coordinates 2m and 2m+1 of sample i come from one Box-Muller pair: with uniforms u1, u2 from the
    counters key + 2m and key + 2m + 1, z_2m = R cos(theta), z_2m+1 = R sin(theta),
    R = sqrt(-2 log u1), theta = 2 pi u2.
    """
    key = stream_keys(seed, indices, step)[:, None]
    m = torch.arange((d + 1) // 2, dtype=torch.int64, device=indices.device)[None, :]
    radius = torch.sqrt(-2.0 * torch.log(_uniform(mix64(key + 2 * m))))
    theta = (2.0 * math.pi) * _uniform(mix64(key + 2 * m + 1))
    z = torch.stack([radius * torch.cos(theta), radius * torch.sin(theta)], dim=-1)
    return z.reshape(len(indices), -1)[:, :d].to(dtype)


@dataclass(frozen=True)
class PerSampleNoise:
    """Noise source for a batch whose rows are samples ``offset, offset + 1, ...`` of a run.

    ``draw(step, like)`` returns N(0, I) noise shaped like ``like`` (n, d), in its dtype and
    device.
    Sharding a batch means giving each shard its own offset: the union is bit-identical.
    """

    seed: int = 0
    offset: int = 0

    def for_schedule(self, schedule) -> PerSampleNoise:
        """Independent draws need no knowledge of the schedule."""
        return self

    def draw(self, step: int, like: Tensor) -> Tensor:
        if like.ndim != 2:
            raise ValueError(f"noise is drawn for states of shape (n, d), got {tuple(like.shape)}")
        n, d = like.shape
        idx = torch.arange(self.offset, self.offset + n, dtype=torch.int64, device=like.device)
        return normal(self.seed, idx, step, d, dtype=like.dtype)


_BROWNIAN_DOMAIN = 0x42524F574E  # separates Brownian streams from per-step streams of one seed


@dataclass(frozen=True)
class BrownianNoise:
    """Brownian-consistent noise: runs with T and 2T uniform steps share one Brownian path.

    Each sample has a Brownian path B on u in [0, 1] (u = 0 at the first step, u = 1 at the last),
    built by dyadic refinement: B at u = i / b (b = the odd part of T) from independent increments,
    then Brownian-bridge midpoints B(m) = (B(l) + B(r)) / 2 + sqrt((r - l) / 4) xi, level by level,
    each xi drawn from a counter-based stream keyed by (seed, sample, level, interval). Step k of a
    run with T = b 2^j steps gets z_k = (B((k + 1) / T) - B(k / T)) sqrt(T) ~ N(0, I), so the
    increment of a coarse step is exactly the sum of the fine increments it covers.
    Only uniform schedules are supported (the SDE samplers' default).
    """

    seed: int = 0
    offset: int = 0

    def for_schedule(self, schedule) -> _BrownianRun:
        T = len(schedule)
        widths = [t - t_next for t, t_next in schedule]
        if max(widths) - min(widths) > 1e-9 * max(abs(w) for w in widths):
            raise ValueError("Brownian-consistent noise needs a uniform schedule")
        levels = (T & -T).bit_length() - 1  # T = base * 2^levels with base odd
        return _BrownianRun(self.seed, self.offset, T >> levels, levels)


@dataclass
class _BrownianRun:
    seed: int
    offset: int
    base: int
    levels: int
    _last: tuple[int, Tensor] | None = None

    def _normal(self, idx: Tensor, level: int, interval: int, d: int) -> Tensor:
        key = (level << 40) + interval
        return normal(self.seed ^ _BROWNIAN_DOMAIN, idx, key, d)

    def _path(self, point: int, idx: Tensor, d: int) -> Tensor:
        """B at u = point / (base 2^levels) for the samples idx, by bisection from level 0."""
        fine = 1 << self.levels
        i, rem = divmod(point, fine)  # level-0 interval i, position inside it
        inc = [self._normal(idx, 0, m, d) for m in range(min(i + 1, self.base))]
        scale = math.sqrt(1.0 / self.base)
        left = scale * sum(inc[:i], torch.zeros_like(inc[0]))
        if rem == 0:
            return left
        right = left + scale * inc[i]
        lo, hi, width = 0, fine, 1.0 / self.base
        for level in range(1, self.levels + 1):
            mid = (lo + hi) // 2
            interval = (i << (level - 1)) + lo // (hi - lo)
            xi = self._normal(idx, level, interval, d)
            b_mid = 0.5 * (left + right) + 0.5 * math.sqrt(width) * xi
            if rem == mid:
                return b_mid
            if rem < mid:
                hi, right = mid, b_mid
            else:
                lo, left = mid, b_mid
            width *= 0.5
        raise AssertionError("unreachable: the point lies on the finest level")

    def draw(self, step: int, like: Tensor) -> Tensor:
        n, d = like.shape
        idx = torch.arange(self.offset, self.offset + n, dtype=torch.int64, device=like.device)
        T = self.base << self.levels
        if self._last is not None and self._last[0] == step and self._last[1].shape == (n, d):
            b0 = self._last[1]
        else:
            b0 = self._path(step, idx, d)
        b1 = self._path(step + 1, idx, d)
        self._last = (step + 1, b1)
        return ((b1 - b0) * math.sqrt(T)).to(like.dtype)


_TREE_DOMAIN = 0x54524545  # separates Brownian-tree streams from the other streams of one seed


@dataclass(frozen=True)
class BrownianTree:
    """One Brownian path B per sample on u in [0, 1], queried at arbitrary per-sample times.

    B(0) = 0 and B(1) ~ N(0, I); B at any u is found by bisection: on the dyadic interval
    [l, r] containing u, the midpoint is B(m) = (B(l) + B(r)) / 2 + sqrt((r - l) / 4) xi, with xi
    from the counter-based stream keyed by (seed, sample, level, node), down to ``depth`` levels,
    then linear interpolation (error ~ 2^(-depth/2)). Every query of a sample reads the same path,
    so adaptive solvers that retry a rejected step on the same path (rejection sampling with
    memory) and runs at different tolerances are coupled through it.
    """

    seed: int = 0
    offset: int = 0
    depth: int = 32

    def value(self, rows: Tensor, u: Tensor, d: int) -> Tensor:
        """B_i(u_i) for the samples ``rows`` (indices within the batch), float64 (len(rows), d)."""
        idx = rows.to(torch.int64) + self.offset
        seed = self.seed ^ _TREE_DOMAIN
        u = u.to(torch.float64)
        lo, hi = torch.zeros_like(u), torch.ones_like(u)
        b_lo = torch.zeros(len(idx), d, dtype=torch.float64, device=u.device)
        b_hi = normal(seed, idx, 0, d)
        node = torch.zeros_like(idx)
        for level in range(1, self.depth + 1):
            mid = 0.5 * (lo + hi)
            xi = normal(seed, idx, (level << 52) + node, d)
            b_mid = 0.5 * (b_lo + b_hi) + torch.sqrt(0.25 * (hi - lo))[:, None] * xi
            left = u < mid
            b_hi = torch.where(left[:, None], b_mid, b_hi)
            b_lo = torch.where(left[:, None], b_lo, b_mid)
            hi, lo = torch.where(left, mid, hi), torch.where(left, lo, mid)
            node = 2 * node + (~left).to(torch.int64)
        w = ((u - lo) / (hi - lo))[:, None]
        return b_lo + w * (b_hi - b_lo)


@dataclass(frozen=True)
class RefusedNoise:
    """Noise source of a run that must draw no noise (a deterministic map is being checked):
    any draw raises ValueError(message), with ``{step}`` replaced by the 1-based stage."""

    message: str

    def for_schedule(self, schedule) -> RefusedNoise:
        return self

    def draw(self, step: int, like: Tensor) -> Tensor:
        raise ValueError(self.message.format(step=step + 1))
