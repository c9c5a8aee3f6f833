"""The SKD students: KD-CNN and KD-MobileNet, small enough for a radio's processor.

Source: Hou et al. 2024, "ClST: A Convolutional Transformer Framework for Automatic Modulation Recognition by
Knowledge Distillation" names the two students and their families (a plain CNN, a MobileNet). Their layer
tables are not public: both are reconstructed here, sized so that KD-MobileNet costs a small fraction of ClST's
MACs. Both are fully convolutional with global pooling, so they take any length L.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from rfml.models.registry import register


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv1d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
        nn.BatchNorm1d(out_channels),
    ]


def conv_stack(
    in_channels: int, widths: Sequence[int], kernels: Sequence[int], pool_after: Sequence[int]
) -> tuple[nn.Sequential, int]:
    """Conv1d → BatchNorm → ReLU per (width, kernel), a max-pool by 2 after the layers listed in ``pool_after``;
    returns the stack and its output channels."""
    layers: list[nn.Module] = []
    for i, (width, kernel) in enumerate(zip(widths, kernels, strict=True)):
        layers += [*conv_bn(in_channels, width, kernel), nn.ReLU(inplace=True)]
        if i in pool_after:
            layers.append(nn.MaxPool1d(2))
        in_channels = width
    return nn.Sequential(*layers), in_channels


@register("kd_cnn")
class KDCNN(nn.Module):
    """KD-CNN: a plain Conv1d stack in the VT-CNN2 family, the first SKD student (reconstructed).

    Four Conv1d → BatchNorm → ReLU layers (widths 32/48/64/64, kernels 7/5/3/3, max-pool 2 after the second and
    third), global average pool, dropout, Linear. 30,763 parameters for 11 classes at any L; 2.02 M MACs at L = 128.
    """

    hint_layer = "features"

    def __init__(
        self,
        num_classes: int,
        length: int = 128,
        widths: Sequence[int] = (32, 48, 64, 64),
        kernels: Sequence[int] = (7, 5, 3, 3),
        pool_after: Sequence[int] = (1, 2),
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.features, channels = conv_stack(2, widths, kernels, pool_after)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).mean(-1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block in 1-D: pointwise expand → depthwise conv → linear projection; residual if shapes match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand: int, kernel_size: int = 5) -> None:
        super().__init__()
        hidden = in_channels * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [*conv_bn(in_channels, hidden, 1), nn.ReLU6(inplace=True)]
        layers += [*conv_bn(hidden, hidden, kernel_size, stride, groups=hidden), nn.ReLU6(inplace=True)]
        layers += conv_bn(hidden, out_channels, 1)
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x) if self.residual else self.block(x)


@register("kd_mobilenet")
class KDMobileNet(nn.Module):
    """KD-MobileNet: MobileNetV2-style inverted residual blocks with depthwise-separable Conv1d (reconstructed).

    Stem Conv1d(2→16, k5), then inverted residual blocks given as ``(expand, out_channels, stride)``, a pointwise
    conv to 128 channels, global average pool, dropout, Linear. 44,315 parameters for 11 classes at any L;
    1.52 M MACs at L = 128, under a fifth of ClST's.
    """

    hint_layer = "features"

    def __init__(
        self,
        num_classes: int,
        length: int = 128,
        stem: int = 16,
        blocks: Sequence[Sequence[int]] = ((1, 16, 1), (4, 24, 2), (4, 24, 1), (4, 32, 2), (4, 32, 1), (4, 48, 2)),
        last: int = 128,
        kernel_size: int = 5,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [*conv_bn(2, stem, 5), nn.ReLU6(inplace=True)]
        in_channels = stem
        for expand, out_channels, stride in blocks:
            layers.append(InvertedResidual(in_channels, out_channels, stride, expand, kernel_size))
            in_channels = out_channels
        layers += [*conv_bn(in_channels, last, 1), nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).mean(-1))
