"""The four 2.4 GHz ISM-band interference classifiers compared by Zhang et al. (SPAWC 2019).

The data are those of Schmidt et al. (2017): 15 classes (WiFi, Zigbee and Bluetooth channels), frames of 128
complex samples fed as ``[B, 2, L]``. The two rows are whichever pair of real channels the input view makes of a
frame (I/Q, FFT real/imaginary or FFT amplitude/phase), and band or sample selection shortens ``L`` (to 8, 16, 26,
32, 52 or 64 samples, for instance); every model here adapts to that width.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import torch
from torch import nn

from rfml.models.cldnn import CLDNN
from rfml.models.layers import check_length, dense_layers
from rfml.models.registry import register
from rfml.models.resnet import ResidualStack
from rfml.models.vtcnn2 import VTCNN2


@register("ism_cnn")
class ISMCNN(VTCNN2):
    """The two-layer CNN proposed for interference identification (VT-CNN2's layout without padding).

    Source: X. Zhang, T. Seyfi, S. Ju, S. Ramjee, A. El Gamal, Y. C. Eldar, "Deep Learning for Interference
    Identification: Band, Training SNR, and Sample Selection", IEEE SPAWC 2019 (arXiv:1905.08054).

    Published architecture: the frame as a 1×2×L image; Conv 256 filters 1×3 (time only) + ReLU + dropout;
    Conv 256 filters 2×3 (mixing the two rows) + ReLU + dropout; flatten; Dense 1024 ReLU + dropout; Dense
    ``num_classes`` (softmax in the paper, logits here). Valid (no) padding, dropout 0.6. About 32.9 M
    parameters at L=128, almost all of them in the dense layer on the flattened ``256 × (L - 4)`` map.

    Built as ``VTCNN2`` (``rfml.models.vtcnn2``) with ``padding=0`` and these widths; as there, PyTorch's
    default initialisation, and the dropout after the second convolution is applied at the head's input so
    that the hint layer sees the feature map before dropout.

    The head flattens a ``[c2, 1, L - 4]`` map, so the model is built for one ``length`` (at least 5) and raises
    ``ValueError`` on any other.

    Parameters (L=128, 15 classes): 32,916,751. At L=16: 3,556,623; at L=8: 1,459,471.
    """

    def __init__(
        self,
        num_classes: int,
        length: int = 128,
        channels: tuple[int, int] = (256, 256),
        hidden: int = 1024,
        dropout: float = 0.6,
    ) -> None:
        super().__init__(num_classes, length, channels, hidden, dropout, padding=0)


@register("ism_resnet")
class ISMResNet(nn.Module):
    """ResNet for interference identification: five batch-normalised residual stacks and one hidden layer.

    Source: Zhang et al., SPAWC 2019 (arXiv:1905.08054), after the ResNet of O'Shea, Roy and Clancy (2018).

    Published architecture: five residual stacks of 32 channels, each a 1×1 convolution with batch
    normalisation, two residual units (two convolutions of kernel 5, each with batch normalisation) and max
    pooling by 2; then Dense 128 SELU + alpha dropout; Dense ``num_classes``. About 0.14 M parameters.

    Reconstructed / different here: the stacks are ``rfml.models.resnet``'s ``ResidualStack`` with ``norm``;
    convolutions are 1-D over the two rows as channels; inside a unit the order is conv BN ReLU → conv BN →
    + skip → ReLU; ``same`` zero padding; the pooling rounds up (``ceil_mode``) so that short selections keep
    one step (L=8 gives 8→4→2→1→1→1); the alpha-dropout rate (not stated) defaults to 0.3; logits are
    returned. The stated layers give 127,407 parameters, about 13 k fewer than the published 0.14 M; the stated
    layers do not account for the difference.

    The head flattens ``[channels, ceil(L / 2**num_stacks)]``, so the model is built for one ``length`` and
    raises ``ValueError`` on any other.

    Parameters (L=128, 15 classes): 127,407. At L=8 to 32 (one step left): 115,119.
    """

    hint_layer: str = "features"

    def __init__(
        self,
        num_classes: int,
        length: int = 128,
        num_stacks: int = 5,
        channels: int = 32,
        kernel_size: int = 5,
        hidden: int = 128,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"ISMResNet: kernel_size must be odd to keep the length, got {kernel_size}")
        if num_stacks < 1:
            raise ValueError(f"ISMResNet: num_stacks must be >= 1, got {num_stacks}")
        self.length = length
        steps = length
        for _ in range(num_stacks):
            steps = (steps + 1) // 2
        self.features = nn.Sequential(
            *(
                ResidualStack(2 if i == 0 else channels, channels, kernel_size, norm=True, ceil_mode=True)
                for i in range(num_stacks)
            )
        )
        self.head = nn.Sequential(
            nn.Flatten(), *dense_layers(channels * steps, (hidden,), num_classes, dropout, nn.SELU, nn.AlphaDropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_length(self, x)
        return self.head(self.features(x))


@register("ism_cldnn")
class ISMCLDNN(CLDNN):
    """CLDNN with four convolutional layers, as used for interference identification.

    Source: X. Wang, S. Ju, X. Zhang, S. Ramjee, A. El Gamal, "Efficient Training of Deep Classifiers for
    Wireless Source Identification using Test SNR Estimates", IEEE Wireless Commun. Lett. 2020
    (arXiv:1912.11896); the CLDNN compared in Zhang et al., SPAWC 2019 (arXiv:1905.08054).

    Published architecture: four convolutional layers, an LSTM of 50 units, a dense layer of 256 and the
    output layer.

    Reconstructed / different here: ``CLDNN`` (West & O'Shea 2017, ``rfml.models.cldnn``) with a fourth
    convolution (``num_convs`` defaults to 4; every other keyword is ``CLDNN``'s): filter count, kernel,
    padding, activations, dropout, the bypass (first convolution's output concatenated with the last's) and the
    LSTM's reading of the map are ``CLDNN``'s (50 filters of 1×8, ``same`` padding, ReLU, dropout 0.5), not
    stated in the papers. Works for any length.

    Parameters (L=128, 15 classes): 127,911 (the same at any length).
    """

    def __init__(self, num_classes: int, length: int = 128, num_convs: int = 4, **kwargs: Any) -> None:
        super().__init__(num_classes, length, num_convs=num_convs, **kwargs)


@register("ism_lstm")
class ISMLSTM(nn.Module):
    """Stacked LSTMs over the frame's time axis, the last step's output classified by one dense layer.

    Source: Zhang et al., SPAWC 2019 (arXiv:1905.08054).

    Published architecture: two stacked LSTM layers of 512 and then 4 units over the L steps of 2 features;
    the last step's output → Dense softmax.

    Reconstructed / different here: the rows enter as they are (unlike ``lstm2``, no amplitude/phase
    conversion inside the model, since the input view already chooses the two channels); ``dropout`` between
    the layers and on the last step is not stated and defaults to 0 (off); logits are returned. The 4-unit
    second layer is a 4-dimensional bottleneck in front of the 15-way output; the paper states it that way.
    Works for any length.

    Parameters (L=128, 15 classes): 1,065,131 (the same at any length). PyTorch's LSTM has two bias vectors per
    gate; a one-bias (Keras) LSTM of the same widths has 2,064 fewer.
    """

    hint_layer: str = "features"

    def __init__(
        self,
        num_classes: int,
        length: int = 128,
        hidden: tuple[int, ...] = (512, 4),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("ISMLSTM: hidden needs at least one layer width")
        self.length = length
        widths = (2, *hidden)
        self.lstms = nn.ModuleList(nn.LSTM(i, o, batch_first=True) for i, o in pairwise(widths))
        self.dropout = nn.Dropout(dropout)
        self.features = nn.Identity()  # the last LSTM's last step, [B, hidden[-1]]
        self.head = nn.Linear(hidden[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.transpose(1, 2)  # [B, L, 2]
        for i, lstm in enumerate(self.lstms):
            out, _ = lstm(self.dropout(out) if i else out)
        return self.head(self.dropout(self.features(out[:, -1])))
