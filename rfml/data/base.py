"""The dataset contract shared by real and synthetic signal datasets (see DESIGN.md, data contract)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

Batch = dict[str, torch.Tensor]


class DatasetFormatError(ValueError):
    """A dataset file does not have the expected layout; the message names the file and the field."""

    def __init__(self, path: str, field: str, problem: str) -> None:
        super().__init__(f"{path}: field {field!r}: {problem}")
        self.path = path
        self.field = field


class SignalDataset(Dataset[Batch], ABC):
    """A labelled set of IQ frames.

    Subclasses set ``classes`` (names, index = label), ``snrs`` (the dB values present),
    ``y`` and ``snr`` (int64 label tensors for every example, so splits and filters never read the
    signals) and implement :meth:`get_batch`. ``__getitems__`` lets a ``DataLoader`` with a batch
    sampler take the batched path.
    """

    classes: list[str]
    snrs: list[int]
    y: torch.Tensor
    snr: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.numel())

    @property
    @abstractmethod
    def length(self) -> int:
        """Complex samples per frame."""

    @abstractmethod
    def get_batch(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> Batch:
        """``{"x": float32 [B, 2, L], "y": int64 [B], "snr": int64 [B]}`` for ``indices``."""

    def frames(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames holding ``rows`` and the position of each row in them: ``(frames [R, 2, L], positions [B])``.

        The bulk read behind :class:`rfml.data.sampling.BatchStream`: ``frames[positions]`` are the
        requested frames. ``frames`` may be a strided view (an in-memory dataset returns all of its
        frames without copying; a file-backed one returns what it read) and is only valid until the
        next call.
        """
        return self.get_batch(rows)["x"], torch.arange(len(rows))

    def __getitem__(self, index: int) -> Batch:
        batch = self.get_batch([int(index)])
        return {key: value[0] for key, value in batch.items()}

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        return self.get_batch(indices)

    def _check_indices(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
        idx = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices, dtype=np.int64)
        if idx.ndim != 1:
            raise ValueError(f"indices must be one-dimensional, got shape {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            bad = int(idx.min()) if idx.min() < 0 else int(idx.max())
            raise IndexError(f"index {bad} is out of range for a dataset of {len(self)} examples")
        return idx
