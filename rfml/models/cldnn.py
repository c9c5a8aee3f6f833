"""Convolutional + LSTM baselines: CLDNN (West & O'Shea 2017) and MCLDNN (Xu et al. 2020)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from rfml.models.layers import Init, dense_layers, initialise
from rfml.models.registry import register


def same_pad(kernel: tuple[int, int]) -> nn.ZeroPad2d:
    """Zero padding that keeps the size for a stride-1 2-D kernel, the extra sample at the end as in Keras."""
    (kh, kw) = kernel
    return nn.ZeroPad2d(((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2))


@register("cldnn")
class CLDNN(nn.Module):
    """CLDNN: convolutions, an LSTM and dense layers, with a bypass around the convolutions.

    Source: N. E. West, T. J. O'Shea, "Deep Architectures for Modulation Recognition", IEEE DySPAN 2017
    (after the speech CLDNN of Sainath et al., 2015).

    Published architecture: three convolutional layers of 50 filters of size 1×8 on the 2×L I/Q image, the
    output of the first concatenated with the output of the third (the long-term bypass), an LSTM of 50
    cells, a dense layer of 256 and a softmax layer.

    Reconstructed here (not stated in the paper): ``same`` zero padding and ReLU after each convolution;
    dropout after each convolution and after the dense layer (``dropout``, 0.5 as in the authors' CNNs);
    the concatenated ``[100, 2, L]`` map is read by the LSTM as L steps of 200 features (the 1×8 kernels
    keep the I and Q rows apart until then); the LSTM's last step feeds the dense layers; ReLU on the
    dense 256; logits out. Works for any length.

    Initialisation: PyTorch's defaults (``init="torch"``), not Keras' (``"keras"``,
    :func:`rfml.models.layers.keras_init`), although the model was published in Keras: under the training recipe,
    at 80 frames per key for 15 epochs, CLDNN reached 46.3 % validation accuracy with PyTorch's defaults and 31.1 %
    with Keras' (``benchmarks/amr_ablation.py``, ``cldnn-recipe*``; one seed each). Why is not
    established: Glorot-uniform gives the first 1×8 convolution (fan-out 50× its fan-in) about an eighth of
    PyTorch's variance, and the later ones three times as much.

    Parameters (L=128, 11 classes): 106,833 (the same at any length; 24 classes: 110,174).
    """

    hint_layer: str = "features"

    def __init__(
        self,
        num_classes: int,
        length: int = 128,
        filters: int = 50,
        kernel_size: int = 8,
        lstm_hidden: int = 50,
        hidden: int = 256,
        dropout: float = 0.5,
        num_convs: int = 3,
        init: Init = "torch",
    ) -> None:
        super().__init__()
        if num_convs < 2:
            raise ValueError(f"CLDNN: num_convs must be >= 2 (the bypass joins the first and last), got {num_convs}")
        self.length = length
        self.num_convs = num_convs

        def conv(in_channels: int) -> nn.Sequential:
            return nn.Sequential(
                same_pad((1, kernel_size)),
                nn.Conv2d(in_channels, filters, kernel_size=(1, kernel_size)),
                nn.ReLU(),
                nn.Dropout(dropout),
            )

        for i in range(1, num_convs + 1):  # conv1 … convN
            self.add_module(f"conv{i}", conv(1 if i == 1 else filters))
        self.lstm = nn.LSTM(2 * filters * 2, lstm_hidden, batch_first=True)
        self.features = nn.Identity()  # the LSTM's last step, [B, lstm_hidden]
        self.head = nn.Sequential(*dense_layers(lstm_hidden, (hidden,), num_classes, dropout))
        initialise(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.conv1(x.unsqueeze(1))  # [B, F, 2, L]
        last = first
        for i in range(2, self.num_convs + 1):
            last = getattr(self, f"conv{i}")(last)
        maps = torch.cat([first, last], dim=1)  # [B, 2F, 2, L]
        seq = maps.flatten(1, 2).transpose(1, 2)  # [B, L, 4F]
        out, _ = self.lstm(seq)
        return self.head(self.features(out[:, -1]))


@register("mcldnn")
class MCLDNN(nn.Module):
    """MCLDNN: a spatiotemporal multi-channel network (I/Q, I and Q streams → convolutions → two LSTMs).

    Source: J. Xu, C. Luo, G. Parr, Y. Luo, "A Spatiotemporal Multi-Channel Learning Framework for Automatic
    Modulation Recognition", IEEE Wireless Communications Letters 9(10), 2020, and the authors' public Keras
    code (github.com/wzjialang/MCLDNN).

    Published architecture: the I/Q frame as a 2×L image → Conv 50 (2×8, same); I alone and Q alone →
    Conv1D 50 (k 8, causal) each, stacked into a 2×L map → Conv 50 (1×8, same); concatenated with the I/Q
    stream (100 channels) → Conv 100 (2×5, valid) → [100, 1, L-4], read as L-4 steps of 100 features →
    LSTM 128 → LSTM 128 (last step) → Dense 128 SELU + dropout 0.5 → Dense 128 SELU + dropout 0.5 →
    softmax. ReLU after every convolution.

    Different here: logits instead of softmax; PyTorch's default initialisation (``init="torch"``) rather than
    the authors' Keras one (``"keras"``, :func:`rfml.models.layers.keras_init`), because it trained better under
    the recipe: 41.7 % validation accuracy against 39.1 % (80 frames per key, 15 epochs, one seed each,
    ``benchmarks/amr_ablation.py``). Nothing is reconstructed. PyTorch's LSTM, like the CuDNNLSTM of the authors'
    code, has two bias vectors per gate; the 405,175 quoted in some comparisons counts a one-bias Keras LSTM
    (1,024 fewer). Works for any length ≥ 5.

    Parameters (L=128, 11 classes): 406,199 (the same at any length; 24 classes: 407,876).
    """

    hint_layer: str = "features"

    def __init__(
        self,
        num_classes: int,
        length: int = 128,
        filters: int = 50,
        kernel_size: int = 8,
        lstm_hidden: int = 128,
        hidden: int = 128,
        dropout: float = 0.5,
        init: Init = "torch",
    ) -> None:
        super().__init__()
        self.length = length
        self.kernel_size = kernel_size
        self.iq_conv = nn.Sequential(same_pad((2, kernel_size)), nn.Conv2d(1, filters, kernel_size=(2, kernel_size)))
        self.i_conv = nn.Conv1d(1, filters, kernel_size)  # causal: padded on the left in forward
        self.q_conv = nn.Conv1d(1, filters, kernel_size)
        self.pair_conv = nn.Sequential(
            same_pad((1, kernel_size)), nn.Conv2d(filters, filters, kernel_size=(1, kernel_size))
        )
        self.fuse_conv = nn.Conv2d(2 * filters, 2 * filters, kernel_size=(2, 5))
        self.lstm1 = nn.LSTM(2 * filters, lstm_hidden, batch_first=True)
        self.lstm2 = nn.LSTM(lstm_hidden, lstm_hidden, batch_first=True)
        self.features = nn.Identity()  # the second LSTM's last step, [B, lstm_hidden]
        self.head = nn.Sequential(*dense_layers(lstm_hidden, (hidden, hidden), num_classes, dropout, nn.SELU))
        initialise(self, init)

    def _causal(self, conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
        return F.relu(conv(F.pad(x, (self.kernel_size - 1, 0))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        iq = F.relu(self.iq_conv(x.unsqueeze(1)))  # [B, F, 2, L]
        i = self._causal(self.i_conv, x[:, :1])  # [B, F, L]
        q = self._causal(self.q_conv, x[:, 1:])
        pair = F.relu(self.pair_conv(torch.stack([i, q], dim=2)))  # [B, F, 2, L]
        fused = F.relu(self.fuse_conv(torch.cat([iq, pair], dim=1)))  # [B, 2F, 1, L-4]
        seq = fused.squeeze(2).transpose(1, 2)  # [B, L-4, 2F]
        out, _ = self.lstm1(seq)
        out, _ = self.lstm2(out)
        return self.head(self.features(out[:, -1]))
