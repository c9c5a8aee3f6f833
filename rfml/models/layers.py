"""Pieces several model families share: the dense classifier head, the check of a fixed input length, and the
Keras initialisation of the baselines that were published in Keras."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import nn


def dense_layers(
    in_features: int,
    hidden: Sequence[int],
    num_classes: int,
    dropout: float,
    activation: type[nn.Module] = nn.ReLU,
    dropout_layer: type[nn.Module] = nn.Dropout,
) -> list[nn.Module]:
    """Linear → ``activation`` → ``dropout_layer(dropout)`` for each width in ``hidden``, then Linear to the
    ``num_classes`` logits: the layers to put in a head's ``nn.Sequential`` (after any flatten or input dropout)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, width), activation(), dropout_layer(dropout)]
        in_features = width
    layers.append(nn.Linear(in_features, num_classes))
    return layers


def check_length(model: nn.Module, x: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``x`` has the time length ``model.length`` that its head was built for."""
    if x.shape[-1] != model.length:
        raise ValueError(f"{type(model).__name__} was built for inputs [B, 2, {model.length}], got {list(x.shape)}")


Init = Literal["keras", "torch"]
INITS: tuple[Init, ...] = get_args(Init)


def keras_init(model: nn.Module) -> None:
    """Initialise ``model``'s convolutions, linear layers and LSTMs in place as Keras does by default.

    Keras' defaults: Glorot-uniform kernels and zero biases for ``Conv*``/``Dense``; for ``LSTM``, a Glorot-uniform
    input kernel, an orthogonal recurrent kernel, zero biases except the forget gate's, which is 1
    (``unit_forget_bias``). PyTorch's LSTM has two bias vectors per gate; their sum is Keras' one, so the forget
    gate's 1 goes in ``bias_ih`` and ``bias_hh`` is zero. Normalisation layers keep their defaults (the same in both).

    Why: VT-CNN2, the ResNet of O'Shea et al., CLDNN, MCLDNN and LSTM2 were published in Keras, and PyTorch's
    defaults differ (uniform ±1/√fan_in kernels and biases: a third of Glorot's variance for a square layer; a
    forget-gate bias near 0). Which one trains a model better under the recipe depends on the model, so each
    baseline's ``init`` default is the one it trained better with (``benchmarks/amr_ablation.py``,
    ``*-recipe-keras_init`` against ``*-recipe-torch_init``: validation accuracy at 80 frames per key, 15 epochs,
    one seed):
    ResNet 38.1 % with Keras' against 29.2 % with PyTorch's, and LSTM2 24.2 % with Keras' where PyTorch's left its
    loss at ln 11 (2.40) over the first 112 steps (Keras': 2.32); CLDNN 46.3 % and MCLDNN 41.7 % with PyTorch's
    against 31.1 % and 39.1 %. VT-CNN2 uses Keras' (41.1 %; with PyTorch's, 98.5 % of its feature map is zero
    after 10 steps under the recipe).
    """
    for module in model.modules():
        if isinstance(module, nn.LSTM):
            hidden = module.hidden_size
            for name, param in module.named_parameters():
                if name.startswith("weight_ih"):
                    nn.init.xavier_uniform_(param)
                elif name.startswith("weight_hh"):
                    nn.init.orthogonal_(param)
                else:
                    nn.init.zeros_(param)
                    if name.startswith("bias_ih"):
                        with torch.no_grad():
                            param[hidden : 2 * hidden] = 1.0  # PyTorch's gate order: input, forget, cell, output
        elif isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def initialise(model: nn.Module, init: Init) -> None:
    """Apply ``init`` to ``model``: ``"keras"`` (:func:`keras_init`) or ``"torch"`` (leave PyTorch's defaults)."""
    if init == "keras":
        keras_init(model)
    elif init != "torch":
        raise ValueError(f"{type(model).__name__}: init must be one of {', '.join(INITS)}; got {init!r}")
