"""Small reference models for trying the profiler: `ondevice profile --model ondevice.examples:small_cnn`.

Each factory returns `(model, example_inputs)`, the contract `ondevice profile` and `ondevice bundle` expect.
"""

from __future__ import annotations

import torch
from torch import nn


def small_cnn(channels: int = 2, length: int = 1024, width: int = 64, num_classes: int = 11, seed: int = 0):
    """A 1-D CNN over [B, channels, length] (three conv blocks, global pooling, a linear head)."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv1d(channels, width, 7, padding=3),
        nn.BatchNorm1d(width),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Conv1d(width, width, 5, padding=2),
        nn.BatchNorm1d(width),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Conv1d(width, width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(width, num_classes),
    ).eval()
    return model, (torch.randn(1, channels, length, generator=torch.Generator().manual_seed(seed)),)


def transformer_block(d_model: int = 128, heads: int = 4, length: int = 64, seed: int = 0):
    """One pre-norm transformer encoder layer over [B, length, d_model]."""
    torch.manual_seed(seed)
    model = nn.TransformerEncoderLayer(
        d_model, heads, dim_feedforward=4 * d_model, dropout=0.0, batch_first=True, norm_first=True
    ).eval()
    return model, (torch.randn(1, length, d_model, generator=torch.Generator().manual_seed(seed)),)
