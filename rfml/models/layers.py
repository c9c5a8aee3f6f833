"""Pieces several model families share: the dense classifier head and the check of a fixed input length."""

from __future__ import annotations

from collections.abc import Sequence

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
