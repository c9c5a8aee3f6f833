"""VT-CNN2: the two-layer convolutional baseline of O'Shea, Corgan and Clancy (2016)."""

from __future__ import annotations

import torch
from torch import nn

from rfml.models.layers import Init, check_length, dense_layers, initialise
from rfml.models.registry import register


@register("vtcnn2")
class VTCNN2(nn.Module):
    """VT-CNN2, the CNN baseline for RadioML 2016.10a.

    Source: T. J. O'Shea, J. Corgan, T. C. Clancy, "Convolutional Radio Modulation Recognition Networks",
    EANN 2016 (arXiv:1602.04105), as released in DeepSig's public Keras notebook
    ``RML2016.10a_VTCNN2_example``.

    Published architecture (the notebook): the frame as a 1×2×L image; zero padding of 2 on both ends of
    the time axis; Conv 256 filters 1×3 + ReLU + dropout; zero padding of 2 again; Conv 80 filters 2×3
    (mixing I and Q) + ReLU + dropout; flatten; Dense 256 ReLU + dropout; Dense ``num_classes``
    (softmax in the paper, logits here). Dropout 0.5.

    Reconstructed / different here: the two zero paddings are folded into the convolutions (``padding``
    samples at both ends, 2 by default), which is the same arithmetic; the last dropout on the features is
    applied at the head's input so that the hint layer sees the feature map before dropout. Initialised as Keras
    does (``init="keras"``, :func:`rfml.models.layers.keras_init`; ``"torch"`` keeps PyTorch's defaults).

    The head flattens a ``[80, 1, L + 4·padding - 4]`` map (``L + 4`` by default), so the model is built for
    one ``length`` and raises ``ValueError`` on any other.

    Parameters (L=128, 11 classes): 2,830,427 — the figure in the public notebook's Keras summary
    (the 1.59 M sometimes quoted does not match this layer list at L=128). At L=1024, 24 classes:
    21,183,848.
    """

    hint_layer: str = "features"

    def __init__(
        self,
        num_classes: int,
        length: int = 128,
        channels: tuple[int, int] = (256, 80),
        hidden: int = 256,
        dropout: float = 0.5,
        padding: int = 2,
        init: Init = "keras",
    ) -> None:
        super().__init__()
        steps = length + 4 * padding - 4  # two width-3 convolutions, each padded by ``padding`` at both ends
        if steps < 1:
            raise ValueError(
                f"{type(self).__name__}: two width-3 convolutions padded by {padding} need length >= "
                f"{5 - 4 * padding}, got {length}"
            )
        self.length = length
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, kernel_size=(1, 3), padding=(0, padding)),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Conv2d(c1, c2, kernel_size=(2, 3), padding=(0, padding)),
            nn.ReLU(),
        )
        self.head = nn.Sequential(
            nn.Dropout(dropout), nn.Flatten(), *dense_layers(c2 * steps, (hidden,), num_classes, dropout)
        )
        initialise(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_length(self, x)
        return self.head(self.features(x.unsqueeze(1)))
