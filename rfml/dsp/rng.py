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

import numpy as np
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


SEED_LIMIT = 1 << 64  # seeds are 0 <= seed < SEED_LIMIT: the key hashes the seed's 64 bits, nothing more


def check_seed(seed: object) -> int:
    """``seed`` as an int, refused unless it is an integer in ``[0, 2**64)``.

    The key derivation reduces the seed to 64 bits, so a wider seed (``2**64``, ``2**70``) or a negative one
    (``-1``, which is ``2**64 - 1`` in 64 bits) would silently be another seed's dataset; floats, bools and
    strings are not seeds.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= int(seed) < SEED_LIMIT:
        raise ValueError(f"seed must be an integer in [0, 2**64) (the generator hashes 64 bits of it), got {seed!r}")
    return int(seed)


def example_indices(indices: object, device: torch.device | str | None = None) -> torch.Tensor:
    """Example indices as a checked one-dimensional int64 tensor of values in ``[0, 2**63)``.

    ``indices`` must hold integers: a tensor or array of an integer dtype, or a sequence of ints (a ``range``, a
    list; an empty one is no index at all). Floats (even integral-valued ones, which would otherwise be truncated),
    bools and complex numbers are refused with a ``ValueError`` naming the dtype.
    """
    try:
        idx = torch.as_tensor(indices, device=device)
    except (TypeError, ValueError, RuntimeError, OverflowError) as err:
        raise ValueError(
            f"indices must be a one-dimensional sequence of integers in [0, 2**63), got {indices!r:.80} ({err})"
        ) from None
    if idx.numel() == 0 and not isinstance(indices, torch.Tensor | np.ndarray):
        idx = idx.to(torch.int64)  # [] or range(0): torch gives them its default float dtype
    if idx.dtype == torch.bool or idx.is_floating_point() or idx.is_complex():
        raise ValueError(
            f"indices must be integers (an integer dtype), got dtype {str(idx.dtype).removeprefix('torch.')}"
        )
    if idx.ndim != 1:
        raise ValueError(f"indices must be one-dimensional, got shape {tuple(idx.shape)}")
    if idx.dtype == torch.uint64:
        wide = idx.view(torch.int64)  # values >= 2**63 read as negative here
        if idx.numel() and int(wide.min()) < 0:
            raise ValueError(f"indices must be < 2**63, got {int(wide[wide < 0][0]) + (1 << 64)}")
        return wide
    idx = idx.to(torch.int64)
    if idx.numel() and int(idx.min()) < 0:
        raise ValueError(f"indices must be >= 0, got {int(idx.min())}")
    return idx


def example_keys(seed: int, indices: torch.Tensor) -> torch.Tensor:
    """One 64-bit key per example index: ``mix64(mix64(seed) + index * golden)``; ``seed`` as :func:`check_seed`
    requires (every synthesizer's keys come from here, so no seed outside 64 bits reaches the data)."""
    seed_key = mix64(torch.tensor(_as_int64(check_seed(seed)), dtype=torch.int64))
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
