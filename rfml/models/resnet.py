"""The residual network of O'Shea, Roy and Clancy (2018) for over-the-air modulation classification."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from rfml.models.layers import Init, check_length, dense_layers, initialise
from rfml.models.registry import register


class ResidualUnit(nn.Module):
    """conv k ReLU → conv k (linear) → + input → ReLU, at constant width and length; with ``norm``, batch
    normalisation after each convolution (conv BN ReLU → conv BN → + input → ReLU)."""

    def __init__(self, channels: int, kernel_size: int = 3, norm: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.norm1 = nn.BatchNorm1d(channels) if norm else nn.Identity()
        self.norm2 = nn.BatchNorm1d(channels) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.norm2(self.conv2(F.relu(self.norm1(self.conv1(x))))))


class ResidualStack(nn.Sequential):
    """1×1 conv (linear; batch-normalised with ``norm``) → residual unit → residual unit → max pool by 2: halves
    the time axis (rounding up with ``ceil_mode``, so that a length of 1 stays 1)."""

    def __init__(
        self, in_channels: int, channels: int, kernel_size: int = 3, norm: bool = False, ceil_mode: bool = False
    ) -> None:
        super().__init__(
            nn.Conv1d(in_channels, channels, kernel_size=1),
            *([nn.BatchNorm1d(channels)] if norm else []),
            ResidualUnit(channels, kernel_size, norm),
            ResidualUnit(channels, kernel_size, norm),
            nn.MaxPool1d(2, ceil_mode=ceil_mode),
        )


def default_num_stacks(length: int) -> int:
    """``min(6, floor(log2(length)) - 1)``: as many halvings as leave at least 2 time steps, at most the paper's 6."""
    return max(1, min(6, length.bit_length() - 2))


@register("resnet")
class ResNetAMR(nn.Module):
    """ResNet for modulation classification.

    Source: T. J. O'Shea, T. Roy, T. C. Clancy, "Over-the-Air Deep Learning Based Radio Signal
    Classification", IEEE J. Sel. Topics Signal Process. 12(1), 2018 (Table III, Fig. 4).

    Published architecture (L=1024, 24 classes): six residual stacks of 32 filters, each a 1×1 linear conv,
    two residual units (conv k3 ReLU → conv k3 linear → + skip) and max pooling by 2 (1024 → 16 steps);
    then FC 128 SELU, FC 128 SELU (alpha dropout), FC softmax.

    Reconstructed / different here: convolutions are 1-D over I and Q as two channels; a ReLU follows the
    skip addition; ``same`` zero padding; the alpha-dropout rate (not stated) defaults to 0.3; logits are
    returned; initialised as Keras does (``init="keras"``, :func:`rfml.models.layers.keras_init`; ``"torch"``
    keeps PyTorch's defaults). For shorter frames the number of stacks is ``min(6, floor(log2(length)) - 1)``
    (6 at L=128, leaving 2 steps; 5 at L=64) unless ``num_stacks`` is given. The paper reports 236,344 trainable
    parameters at L=1024/24 classes; the stated layers give 165,144 here, so the paper's count includes
    something its table does not show.

    The head flattens ``[32, L / 2**num_stacks]``, so the model is built for one ``length`` and raises
    ``ValueError`` on any other.

    Parameters (L=128, 11 classes): 106,123. At L=1024, 24 classes: 165,144.
    """

    hint_layer: str = "features"

    def __init__(
        self,
        num_classes: int,
        length: int = 128,
        channels: int = 32,
        num_stacks: int | None = None,
        kernel_size: int = 3,
        hidden: int = 128,
        dropout: float = 0.3,
        init: Init = "keras",
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"ResNetAMR: kernel_size must be odd to keep the length, got {kernel_size}")
        self.length = length
        stacks = default_num_stacks(length) if num_stacks is None else num_stacks
        steps = length
        for _ in range(stacks):
            steps //= 2
        if stacks < 1 or steps < 1:
            raise ValueError(f"ResNetAMR: {stacks} stacks do not fit a length of {length}")
        self.num_stacks = stacks
        self.features = nn.Sequential(
            *(ResidualStack(2 if i == 0 else channels, channels, kernel_size) for i in range(stacks))
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            *dense_layers(channels * steps, (hidden, hidden), num_classes, dropout, nn.SELU, nn.AlphaDropout),
        )
        initialise(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_length(self, x)
        return self.head(self.features(x))
