"""The dataset contract shared by real and synthetic signal datasets: x float32 [2, L], y and snr int64."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

Batch = dict[str, torch.Tensor]


def gather_frames(frames: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``frames[positions]`` as whole-row copies in the layout ``frames`` is stored in.

    A ``[R, 2, L]`` transposed view of ``[R, L, 2]`` rows (a RadioML 2018 read) is gathered as
    ``[L, 2]`` rows at memcpy speed and returned as a ``[B, 2, L]`` view again; gathering it
    element by element through the view costs about 3x more.
    """
    stored = frames.transpose(1, 2)
    if not frames.is_contiguous() and stored.is_contiguous():
        return stored.index_select(0, positions).transpose(1, 2)
    return frames.index_select(0, positions)


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
    # Rows per shuffled block when reading in bulk (see rfml.data.sampling): 1, a full shuffle, for
    # data in memory or generated; file-backed data reads larger contiguous blocks.
    read_block_rows = 1

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


class InMemorySignalDataset(SignalDataset):
    """A dataset whose frames are all held in one ``x`` tensor, ``[N, 2, L]``."""

    x: torch.Tensor

    @property
    def length(self) -> int:
        return int(self.x.shape[2])

    def get_batch(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> Batch:
        idx = torch.from_numpy(self._check_indices(indices))
        return {"x": self.x[idx], "y": self.y[idx], "snr": self.snr[idx]}

    def frames(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x, torch.as_tensor(rows, dtype=torch.int64)


class ClassSubset(SignalDataset):
    """``dataset`` with its classes narrowed to ``keep`` and renumbered: class ``keep[i]`` becomes label ``i``.

    Rows of the other classes keep their place but get label -1; callers leave them out of their splits (band
    selection drops the classes that have no energy in the kept band this way). Frames are read from ``dataset``.
    """

    def __init__(self, dataset: SignalDataset, keep: Sequence[int]) -> None:
        keep = [int(k) for k in keep]
        if not keep or len(set(keep)) != len(keep) or min(keep) < 0 or max(keep) >= len(dataset.classes):
            raise ValueError(f"keep must list distinct class indices in [0, {len(dataset.classes)}), got {keep}")
        self.dataset = dataset
        self.keep = keep
        self.classes = [dataset.classes[k] for k in keep]
        self.snrs = list(dataset.snrs)
        self.read_block_rows = dataset.read_block_rows
        self._table = torch.full((len(dataset.classes),), -1, dtype=torch.int64)
        self._table[torch.tensor(keep)] = torch.arange(len(keep))
        self.y = self._table[dataset.y]
        self.snr = dataset.snr

    @property
    def length(self) -> int:
        return self.dataset.length

    def get_batch(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> Batch:
        batch = self.dataset.get_batch(indices)
        return {**batch, "y": self._table[batch["y"]]}

    def frames(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.dataset.frames(rows)

    def __repr__(self) -> str:
        return f"ClassSubset({self.dataset!r}, {len(self.classes)} of {len(self.dataset.classes)} classes)"
