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


def stream_keys(seed: int, indices: Tensor, step: int) -> Tensor:
    """Key of sample i at step k: mix(mix(mix(seed) + i) + k)."""
    s = mix64(torch.tensor(int(seed) & ((1 << 63) - 1), dtype=torch.int64, device=indices.device))
    return mix64(mix64(s + indices.to(torch.int64)) + int(step))


def normal(seed: int, indices: Tensor, step: int, d: int, *, dtype=torch.float64) -> Tensor:
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

    def draw(self, step: int, like: Tensor) -> Tensor:
        if like.ndim != 2:
            raise ValueError(f"noise is drawn for states of shape (n, d), got {tuple(like.shape)}")
        n, d = like.shape
        idx = torch.arange(self.offset, self.offset + n, dtype=torch.int64, device=like.device)
        return normal(self.seed, idx, step, d, dtype=like.dtype)
