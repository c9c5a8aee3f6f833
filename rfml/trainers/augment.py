"""Random label-preserving augmentation of I/Q batches ``[B, 2, L]`` (channel 0 = I, channel 1 = Q) for AMR training.

Each transform is linear, unitary per frame, and maps a frame of one modulation class to a frame of the same class,
so neither the label nor the power (hence the SNR of a signal-plus-noise frame) changes:

- phase rotation, I+jQ → (I+jQ)·e^{jθ}: a receiver does not know the carrier phase, so every constellation is seen
  at an arbitrary rotation already;
- conjugation, Q → −Q: swaps the sense of frequency offset and phase rotation (a mirrored constellation, a reversed
  FSK tone order), which maps each RadioML class to itself. For single-sideband AM it turns USB into LSB, which
  RadioML labels as the same AM-SSB class;
- time reversal along L: a reversed symbol sequence is another symbol sequence of the same modulation (chirps and
  frequency offsets change sign, as under conjugation);
- circular time shift: frames are cut from the stream at random offsets, so where a frame starts carries no label.

Parameters are drawn on CPU from a generator owned by :class:`SignalAugment`, then moved to the batch's device, so
a seed gives the same sequence of augmented batches on every device.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["SignalAugment", "circular_shift", "conjugate", "reverse_time", "rotate_phase"]


def _check_frames(x: Tensor) -> None:
    if x.dim() != 3 or x.shape[1] != 2:
        raise ValueError(f"x must be I/Q frames of shape [B, 2, L]; got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a real floating-point tensor; got dtype {x.dtype}")


def _per_example(name: str, value: Tensor, x: Tensor) -> Tensor:
    if value.shape != (x.shape[0],):
        raise ValueError(f"{name} must have one value per example, shape ({x.shape[0]},); got {tuple(value.shape)}")
    return value.to(x.device)


def rotate_phase(x: Tensor, angle: Tensor) -> Tensor:
    """Multiply each frame's complex signal I+jQ by ``exp(j·angle[b])`` (``angle`` in radians, shape ``[B]``)."""
    _check_frames(x)
    angle = _per_example("angle", angle.to(x.dtype), x)[:, None]  # cast on its device, then move
    cos, sin = torch.cos(angle), torch.sin(angle)
    i, q = x[:, 0], x[:, 1]
    return torch.stack((i * cos - q * sin, i * sin + q * cos), dim=1)


def conjugate(x: Tensor, mask: Tensor) -> Tensor:
    """Conjugate (Q → −Q) the frames where ``mask[b]`` is True (``mask``: bool, shape ``[B]``)."""
    _check_frames(x)
    mask = _per_example("mask", mask, x).bool()
    sign = torch.where(mask, -1.0, 1.0).to(x.dtype)
    return torch.stack((x[:, 0], x[:, 1] * sign[:, None]), dim=1)


def reverse_time(x: Tensor, mask: Tensor) -> Tensor:
    """Reverse the frames where ``mask[b]`` is True along time (``mask``: bool, shape ``[B]``)."""
    _check_frames(x)
    mask = _per_example("mask", mask, x).bool()
    return torch.where(mask[:, None, None], x.flip(-1), x)


def circular_shift(x: Tensor, shift: Tensor) -> Tensor:
    """Shift each frame circularly by ``shift[b]`` samples, like ``torch.roll(x[b], shift[b], -1)``, in one gather.

    ``shift`` is an integer tensor of shape ``[B]``; any integer is taken modulo L.
    """
    _check_frames(x)
    shift = _per_example("shift", shift, x)
    if shift.is_floating_point() or shift.is_complex():
        raise ValueError(f"shift must be an integer tensor; got dtype {shift.dtype}")
    length = x.shape[-1]
    index = (torch.arange(length, device=x.device)[None, :] - shift.long()[:, None]) % length
    return torch.gather(x, -1, index[:, None, :].expand(-1, 2, -1))


class SignalAugment(torch.nn.Module):
    """Random label-preserving augmentation of an I/Q batch, batched on the batch's device, seeded.

    In training mode each call draws, per example: a phase angle uniform in [0, 2π) (``phase``), a conjugation with
    probability ``p`` (``conjugate``), a time reversal with probability ``p`` (``reverse``) and a circular shift
    uniform in [0, L) (``shift``), applied in that order. In eval mode the batch is returned unchanged. The input is
    never modified in place. Two modules of the same seed give the same outputs for the same sequence of inputs;
    :meth:`reset_seed` restarts the sequence.
    """

    def __init__(
        self,
        phase: bool = True,
        conjugate: bool = True,
        reverse: bool = True,
        shift: bool = True,
        p: float = 0.5,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1]; got {p!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int; got {seed!r}")
        self.phase, self.conjugate, self.reverse, self.shift = bool(phase), bool(conjugate), bool(reverse), bool(shift)
        self.p, self.seed = float(p), seed
        self.generator = torch.Generator(device="cpu")
        self.reset_seed()

    def reset_seed(self) -> None:
        """Restart the random sequence from ``seed``."""
        self.generator.manual_seed(self.seed)

    def forward(self, x: Tensor) -> Tensor:
        _check_frames(x)
        if not self.training:
            return x
        batch, length = x.shape[0], x.shape[-1]
        if self.phase:
            angle = torch.rand(batch, generator=self.generator, dtype=torch.float64) * (2 * math.pi)
            x = rotate_phase(x, angle)
        if self.conjugate:
            x = conjugate(x, torch.rand(batch, generator=self.generator) < self.p)
        if self.reverse:
            x = reverse_time(x, torch.rand(batch, generator=self.generator) < self.p)
        if self.shift:
            x = circular_shift(x, torch.randint(0, length, (batch,), generator=self.generator))
        return x

    def extra_repr(self) -> str:
        on = [name for name in ("phase", "conjugate", "reverse", "shift") if getattr(self, name)]
        return f"on=[{', '.join(on)}], p={self.p}, seed={self.seed}"
