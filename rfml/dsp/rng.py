"""Counter-based random numbers: every draw is a pure function of (key, stream, counter).

torch's generators are sequential, so a batch's random numbers depend on which rows share the batch.
Here each example owns a 64-bit key derived from ``(seed, index)`` and every random number is a hash
of that key, a stream id and a position, computed with batched integer tensor ops. The result is the
same tensor in any process, batch composition, order or device.

The hash is the SplitMix64 finaliser; int64 multiplication in torch wraps modulo 2**64, which makes
it bit-identical to the usual unsigned reference (checked against numpy uint64 in the tests).
"""

from __future__ import annotations

import math
from enum import IntEnum

import torch


class Stream(IntEnum):
    """Random stream ids: each random quantity of an example has its own stream."""

    SYMBOLS = 1
    MESSAGE = 2
    SPEECH_GATE = 3
    SAMPLE_RATE = 5
    CARRIER = 6
    FADING = 8
    IQ_IMBALANCE = 9
    NOISE = 10
    BURST = 11
    PHY_MODE = 12
    TIMING = 13


_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed int64
_MUL1 = -4658895280553007687  # 0xBF58476D1CE4E5B9
_MUL2 = -7723592293110705685  # 0x94D049BB133111EB
_INV_2_24 = 1.0 / (1 << 24)


def _logical_shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    # torch's >> on int64 is arithmetic; masking off the sign-extended bits makes it logical.
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def mix64(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64 finaliser on int64 tensors (bijective, wrapping arithmetic)."""
    z = z ^ _logical_shift_right(z, 30)
    z = z * _MUL1
    z = z ^ _logical_shift_right(z, 27)
    z = z * _MUL2
    return z ^ _logical_shift_right(z, 31)


def _as_int64(value: int) -> int:
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def example_indices(indices: object, device: torch.device | str | None = None) -> torch.Tensor:
    """Example indices as a checked one-dimensional int64 tensor of values >= 0."""
    idx = torch.as_tensor(indices, dtype=torch.int64, device=device)
    if idx.ndim != 1:
        raise ValueError(f"indices must be one-dimensional, got shape {tuple(idx.shape)}")
    if idx.numel() and int(idx.min()) < 0:
        raise ValueError(f"indices must be >= 0, got {int(idx.min())}")
    return idx


def example_keys(seed: int, indices: torch.Tensor) -> torch.Tensor:
    """One 64-bit key per example index: ``mix64(mix64(seed) + index * golden)``."""
    seed_key = mix64(torch.tensor(_as_int64(seed), dtype=torch.int64))
    idx = indices.to(torch.int64)
    return mix64(seed_key.to(idx.device) + idx * _GOLDEN)


def random_bits(keys: torch.Tensor, stream: int, n: int) -> torch.Tensor:
    """``[B, n]`` int64 words, 64 random bits each, for ``stream`` of each key in ``keys [B]``."""
    stream_key = mix64(keys ^ _as_int64((stream + 1) * 0xD1B54A32D192ED03))
    counters = torch.arange(1, n + 1, dtype=torch.int64, device=keys.device) * _GOLDEN
    return mix64(stream_key[:, None] + counters)


def _unit_floats(words: torch.Tensor, shift: int) -> torch.Tensor:
    # 24 bits fill a float32 mantissa exactly; the half-step offset keeps values strictly in (0, 1).
    return ((words >> shift) & 0xFFFFFF).to(torch.float32) * _INV_2_24 + 0.5 * _INV_2_24


def uniform(keys: torch.Tensor, stream: int, n: int) -> torch.Tensor:
    """``[B, n]`` float32 uniform on the open interval (0, 1)."""
    return _unit_floats(random_bits(keys, stream, n), 40)


def integers(keys: torch.Tensor, stream: int, n: int, high: int | torch.Tensor) -> torch.Tensor:
    """``[B, n]`` int64 uniform on ``0 .. high-1``; ``high`` is an int or one per row ``[B]``.

    Multiply-shift on 32 random bits (bias < high / 2**32). A row's draws depend only on its key and
    its ``high``, so rows with different ranges can share one call.
    """
    if isinstance(high, torch.Tensor):
        if high.numel() and int(high.min()) < 1:
            raise ValueError(f"high must be >= 1, got {int(high.min())}")
        high = high.to(device=keys.device, dtype=torch.int64)[:, None]
    elif high < 1:
        raise ValueError(f"high must be >= 1, got {high}")
    low32 = random_bits(keys, stream, n) & 0xFFFFFFFF
    return (low32 * high) >> 32


def complex_normal(keys: torch.Tensor, stream: int, n: int, scale: torch.Tensor | float | None = None) -> torch.Tensor:
    """Circular Gaussian with E|z|^2 = 1, times ``scale`` (e.g. ``[B, 1]``), as IQ ``[B, 2, n]``.

    Box-Muller with one 64-bit word per value (24 bits for the radius, 24 for the angle).
    """
    words = random_bits(keys, stream, n)
    radius = torch.sqrt(-torch.log(_unit_floats(words, 40)))  # |z|^2 ~ Exp(1)
    if scale is not None:
        radius = radius * scale
    angle = _unit_floats(words, 8) * (2 * math.pi)
    out = torch.empty(words.shape[0], 2, n, device=keys.device)
    torch.mul(torch.cos(angle), radius, out=out[:, 0])
    torch.mul(torch.sin(angle), radius, out=out[:, 1])
    return out


def normal(keys: torch.Tensor, stream: int, n: int) -> torch.Tensor:
    """``[B, n]`` float32 standard normal."""
    z = complex_normal(keys, stream, (n + 1) // 2)
    return z.reshape(z.shape[0], -1)[:, :n] * math.sqrt(2.0)
