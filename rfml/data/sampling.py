"""Epoch plans that read in blocks and shuffle in memory, and the batch stream that follows them.

Reading a file-backed dataset one random row at a time costs a seek and a library call per row.
The plan here shuffles the order of fixed blocks of rows, gathers a window of blocks (read as a
few contiguous spans), shuffles all rows inside the window, and cuts it into batches. Every batch
mixes rows from ``window_rows / block_rows`` random places of the file, at near-sequential read
speed. In-memory datasets use blocks of one row, which makes the plan a plain full shuffle.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from rfml.data.base import Batch, SignalDataset


@dataclass(frozen=True)
class Window:
    """Rows to read together (sorted) and the order in which to emit them."""

    rows: np.ndarray
    order: np.ndarray


class BlockShuffleSampler:
    """Plans each epoch as a sequence of :class:`Window` s over a set of dataset rows.

    Args:
        rows: the dataset rows to cover (any order; a split or an SNR-filtered subset).
        block_rows: rows per block; a block is ``[k * block_rows, (k + 1) * block_rows)`` of the
            dataset, so a block of a dense subset is one contiguous read. Empty blocks are skipped.
        window_rows: about this many rows are read and shuffled together.
        shuffle: shuffle block order and rows within windows; otherwise rows come in order.
        seed: epoch ``e`` uses the generator seeded by ``(seed, e)``: the same plan in every worker.
    """

    def __init__(
        self,
        rows: Sequence[int] | np.ndarray | torch.Tensor,
        block_rows: int = 256,
        window_rows: int = 8192,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        if block_rows < 1 or window_rows < 1:
            raise ValueError(f"block_rows and window_rows must be >= 1, got {block_rows} and {window_rows}")
        rows = np.asarray(rows.cpu() if isinstance(rows, torch.Tensor) else rows, dtype=np.int64)
        if rows.ndim != 1:
            raise ValueError(f"rows must be one-dimensional, got shape {rows.shape}")
        self.rows = np.sort(rows)
        self.block_rows = int(block_rows)
        self.window_blocks = max(1, math.ceil(window_rows / block_rows))
        self.shuffle = shuffle
        self.seed = int(seed)
        # Members of each non-empty block are one slice of the sorted rows.
        block_of = self.rows // self.block_rows
        self._block_start = np.flatnonzero(np.r_[True, np.diff(block_of) != 0]) if rows.size else np.empty(0, np.int64)
        self._block_stop = np.r_[self._block_start[1:], self.rows.size].astype(np.int64)

    def __len__(self) -> int:
        return int(self.rows.size)

    @property
    def num_blocks(self) -> int:
        return int(self._block_start.size)

    def windows(self, epoch: int = 0) -> list[Window]:
        """The epoch's windows, in reading order."""
        generator = np.random.default_rng([self.seed, epoch])
        blocks = generator.permutation(self.num_blocks) if self.shuffle else np.arange(self.num_blocks)
        plan = []
        for first in range(0, blocks.size, self.window_blocks):
            chosen = np.sort(blocks[first : first + self.window_blocks])
            rows = np.concatenate(
                [self.rows[a:b] for a, b in zip(self._block_start[chosen], self._block_stop[chosen], strict=True)]
            )
            order = generator.permutation(rows.size) if self.shuffle else np.arange(rows.size)
            plan.append(Window(rows, order))
        return plan


class BatchStream(IterableDataset[Batch]):
    """Batches ``{"x", "y", "snr"}`` of ``dataset`` following a :class:`BlockShuffleSampler`.

    Windows are read one ahead on a background thread (the read releases the GIL for most of its
    time), and each batch is one gather from the window, so frames are copied once after reading.
    In ``DataLoader`` workers, window ``w`` goes to worker ``w % num_workers``; a worker carries
    the rows left over at the end of a window into its next batch, so only its last batch of the
    epoch can be short. ``x`` keeps the layout the dataset stores; pass ``contiguous=True`` to
    force a contiguous ``[B, 2, L]`` copy (a RadioML 2018 window is stored ``[B, L, 2]``, so its
    ``x`` is otherwise a transposed view, which convolutions and ``.to(device)`` accept as is).
    """

    def __init__(
        self,
        dataset: SignalDataset,
        sampler: BlockShuffleSampler,
        batch_size: int,
        drop_last: bool = False,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        contiguous: bool = False,
        prefetch: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if sampler.rows.size and sampler.rows[-1] >= len(dataset):
            raise IndexError(f"sampler row {int(sampler.rows[-1])} is out of range for {len(dataset)} examples")
        self.dataset = dataset
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.drop_last = drop_last
        self.transform = transform
        self.contiguous = contiguous
        self.prefetch = prefetch
        self.epoch = 0
        self.loader_workers = 1  # set by EpochLoader, so len() can count each worker's short last batch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _share(self) -> list[Window]:
        info = get_worker_info()
        plan = self.sampler.windows(self.epoch)
        return plan if info is None else plan[info.id :: info.num_workers]

    def __len__(self) -> int:
        plan = self.sampler.windows(self.epoch)
        workers = self.loader_workers
        total = 0
        for worker in range(workers):
            rows = sum(window.rows.size for window in plan[worker::workers])
            total += rows // self.batch_size if self.drop_last else math.ceil(rows / self.batch_size)
        return total

    def _read(self, window: Window) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        frames, positions = self.dataset.frames(window.rows)
        order = torch.from_numpy(window.order)
        rows = torch.from_numpy(window.rows)[order]
        return frames, positions[order], self.dataset.y[rows], self.dataset.snr[rows]

    def _windows(self, plan: list[Window]) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        if not self.prefetch or len(plan) < 2:
            yield from map(self._read, plan)
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rfml-read") as reader:
            pending = reader.submit(self._read, plan[0])
            for window in plan[1:]:
                current = pending.result()
                pending = reader.submit(self._read, window)
                yield current
            yield pending.result()

    def _emit(self, x: torch.Tensor, y: torch.Tensor, snr: torch.Tensor) -> Batch:
        if self.contiguous:
            x = x.contiguous()
        if self.transform is not None:
            x = self.transform(x)
        return {"x": x, "y": y, "snr": snr}

    def __iter__(self) -> Iterator[Batch]:
        plan = self._share()
        carry: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        for frames, positions, y, snr in self._windows(plan):
            start = 0
            if carry is not None:
                # Complete the carried rows with the head of this window.
                need = self.batch_size - carry[0].shape[0]
                head = frames.index_select(0, positions[:need])
                start = min(need, positions.numel())
                carry = (
                    torch.cat([carry[0], head]),
                    torch.cat([carry[1], y[:start]]),
                    torch.cat([carry[2], snr[:start]]),
                )
                if carry[0].shape[0] < self.batch_size:
                    continue
                yield self._emit(*carry)
                carry = None
            full_end = start + (positions.numel() - start) // self.batch_size * self.batch_size
            for first in range(start, full_end, self.batch_size):
                part = slice(first, first + self.batch_size)
                yield self._emit(frames.index_select(0, positions[part]), y[part], snr[part])
            if full_end < positions.numel():
                tail = slice(full_end, positions.numel())
                carry = (frames.index_select(0, positions[tail]), y[tail], snr[tail])
        if carry is not None and not self.drop_last:
            yield self._emit(*carry)


class EpochLoader(DataLoader):
    """A ``DataLoader`` over a :class:`BatchStream` that advances the stream's epoch on each pass.

    The stream's plan depends on its epoch; worker processes receive a copy of the stream when
    each pass starts, so the epoch is set here, in the main process, before they start.
    Persistent workers would keep the first epoch's copy and are therefore refused.
    """

    def __init__(self, stream: BatchStream, num_workers: int = 0, pin_memory: bool = False, **kwargs: object) -> None:
        if kwargs.pop("persistent_workers", False):
            raise ValueError("EpochLoader cannot use persistent_workers: workers would repeat the first epoch's plan")
        kwargs.pop("batch_size", None)
        super().__init__(stream, batch_size=None, num_workers=num_workers, pin_memory=pin_memory, **kwargs)
        stream.loader_workers = max(1, num_workers)
        self._next_epoch = 0

    def __iter__(self) -> Iterator[Batch]:
        self.dataset.set_epoch(self._next_epoch)
        self._next_epoch += 1
        return super().__iter__()
