"""SNR-CNN: a small Conv1d regressor of a frame's SNR, for picking the training SNR of an SNR-selected model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rfml.models.registry import register
from rfml.models.students import conv_stack


@register("snr_cnn")
class SNRCNN(nn.Module):
    """SNR-CNN: Conv1d → BatchNorm → ReLU layers, global average pool, a two-layer head (designed here).

    Each frame is first divided by its RMS amplitude, so the network sees the same input at any receive gain and
    has to judge the SNR from the frame's shape (how far the samples stray from the signal's structure), not
    from its power. The input channels are the normalised I, Q and instantaneous power ``|x|²`` (the last makes
    the amplitude spread, which the M2M4 moments measure, available to the first layer).

    Four layers of widths 32/48/64/64 and kernels 7/5/3/3, max-pool 2 after the first and second, global average
    pool, Linear(64 → 64) → ReLU → Linear(64 → ``num_classes``). For regression ``num_classes=1`` gives the SNR
    in dB (``rfml.trainers.SNRRegressor``); more outputs make a classifier over an SNR grid. 34,497 parameters
    with one output; fully convolutional, so any ``length`` of at least 2 per pooling (4 by default) works
    (``length`` is accepted for the registry's signature and not used).
    """

    hint_layer = "features"

    def __init__(
        self,
        num_classes: int,
        length: int = 128,
        widths: Sequence[int] = (32, 48, 64, 64),
        kernels: Sequence[int] = (7, 5, 3, 3),
        pool_after: Sequence[int] = (0, 1),
        hidden: int = 64,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"SNRCNN: num_classes (outputs) must be >= 1, got {num_classes}")
        self.eps = eps
        self.min_length = 2 ** len(pool_after)
        self.features, channels = conv_stack(3, widths, kernels, pool_after)
        self.head = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))

    def normalise(self, x: Tensor) -> Tensor:
        """``[B, 2, L]`` frames → ``[B, 3, L]``: I and Q over the frame's RMS amplitude, and their power."""
        if x.ndim != 3 or x.shape[1] != 2:
            raise ValueError(f"SNRCNN: x must be [B, 2, L] (I and Q channels), got shape {list(x.shape)}")
        if x.shape[-1] < self.min_length:
            raise ValueError(f"SNRCNN: frames need at least {self.min_length} samples, got L={x.shape[-1]}")
        power = x.square().sum(1, keepdim=True)
        iq = x * torch.rsqrt(power.mean(-1, keepdim=True) + self.eps)
        return torch.cat([iq, iq.square().sum(1, keepdim=True)], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(self.normalise(x)).mean(-1))
