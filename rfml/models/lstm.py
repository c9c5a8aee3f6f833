"""The two-layer amplitude/phase LSTM of Rajendran et al. (2018)."""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import nn

from rfml.models.layers import Init, initialise
from rfml.models.registry import register

AmplitudeNorm = Literal["l2", "rms"]
AMPLITUDE_NORMS: tuple[str, ...] = get_args(AmplitudeNorm)


def _check_amplitude_norm(value: str, owner: str) -> None:
    if value not in AMPLITUDE_NORMS:
        raise ValueError(f"{owner}: amplitude_norm must be one of {AMPLITUDE_NORMS}, got {value!r}")


def amplitude_phase(x: torch.Tensor, eps: float = 1e-12, amplitude_norm: AmplitudeNorm = "l2") -> torch.Tensor:
    """``[B, 2, L]`` I/Q → ``[B, L, 2]`` of (amplitude normalised over the frame, phase / π in [-1, 1]).

    ``amplitude_norm="l2"`` (published) gives the amplitude unit L2 norm over the frame, so each sample is about
    1/√L (0.09 at L = 128); ``"rms"`` gives it unit RMS, so each sample is about 1, the phase channel's scale.
    Either makes the result independent of the frame's scale.
    """
    _check_amplitude_norm(amplitude_norm, "amplitude_phase")
    i, q = x[:, 0], x[:, 1]
    amplitude = torch.sqrt(i * i + q * q)
    amplitude = amplitude / torch.linalg.vector_norm(amplitude, dim=-1, keepdim=True).clamp_min(eps)
    if amplitude_norm == "rms":
        amplitude = amplitude * math.sqrt(amplitude.shape[-1])
    phase = torch.atan2(q, i) / math.pi
    return torch.stack([amplitude, phase], dim=-1)


@register("lstm2")
class LSTM2(nn.Module):
    """Two stacked LSTMs over the frame's amplitude and phase.

    Source: S. Rajendran, W. Meert, D. Giustiniano, V. Lenders, S. Pollin, "Deep Learning Models for
    Wireless Signal Classification With Distributed Low-Cost Spectrum Sensors", IEEE Trans. Cognitive
    Commun. Netw. 4(3), 2018.

    Published architecture: the I/Q frame converted to amplitude and phase, the amplitude L2-normalised
    and the phase scaled to [-1, 1]; a sequence of L steps of 2 features → LSTM 128 → LSTM 128 → the last
    step → Dense softmax.

    Here the conversion is part of the model (``amplitude_phase``; raw I/Q in, so the model is invariant to
    the frame's scale), and logits are returned. Reconstructed: the paper's regularisation is not
    reproduced; ``dropout`` (default 0, off) acts between the two LSTMs and on the last step. The model is
    initialised as Keras does (``init="keras"``, :func:`rfml.models.layers.keras_init`, unit forget-gate bias
    included; ``"torch"`` keeps PyTorch's defaults). The amplitude/phase transform has no useful gradient with
    respect to an input sample at exactly 0 + 0j (only matters when differentiating with respect to the input).
    Works for any length.

    Parameters (L=128, 11 classes): 201,099 (the same at any length; 24 classes: 202,776). PyTorch's LSTM
    has two bias vectors per gate; the 200,075 quoted for the Keras model counts one (1,024 fewer).
    """

    hint_layer: str = "features"

    def __init__(
        self,
        num_classes: int,
        length: int = 128,
        hidden: int = 128,
        dropout: float = 0.0,
        init: Init = "keras",
        amplitude_norm: AmplitudeNorm = "l2",
    ) -> None:
        super().__init__()
        _check_amplitude_norm(amplitude_norm, "LSTM2")
        self.length = length
        self.amplitude_norm = amplitude_norm
        self.lstm1 = nn.LSTM(2, hidden, batch_first=True)
        self.lstm2 = nn.LSTM(hidden, hidden, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.features = nn.Identity()  # the second LSTM's last step, [B, hidden]
        self.head = nn.Linear(hidden, num_classes)
        initialise(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm1(amplitude_phase(x, amplitude_norm=self.amplitude_norm))
        out, _ = self.lstm2(self.dropout(out))
        return self.head(self.dropout(self.features(out[:, -1])))
