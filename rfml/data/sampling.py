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

from rfml.data.base import Batch, SignalDataset, gather_frames


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

    def part_sizes(self, parts: int) -> list[int]:
        """Rows in each of ``parts`` equal shares of an epoch (the same in every epoch)."""
        return [(p + 1) * self.rows.size // parts - p * self.rows.size // parts for p in range(parts)]

    def windows(self, epoch: int = 0, part: int = 0, parts: int = 1) -> list[Window]:
        """The epoch's windows in reading order, or those of share ``part`` of ``parts``.

        Shares are equal slices of the epoch's emission order (a window on a boundary is split),
        so each share's row count, and with it a loader's batch count, is the same every epoch.
        """
        if not 0 <= part < parts:
            raise ValueError(f"part must be in [0, {parts}), got {part}")
        generator = np.random.default_rng([self.seed, epoch])
        blocks = generator.permutation(self.num_blocks) if self.shuffle else np.arange(self.num_blocks)
        lo, hi = part * self.rows.size // parts, (part + 1) * self.rows.size // parts
        plan, emitted = [], 0
        for first in range(0, blocks.size, self.window_blocks):
            chosen = np.sort(blocks[first : first + self.window_blocks])
            rows = np.concatenate(
                [self.rows[a:b] for a, b in zip(self._block_start[chosen], self._block_stop[chosen], strict=True)]
            )
            # Draw the order even for windows outside the share, so every share sees the same plan.
            order = generator.permutation(rows.size) if self.shuffle else np.arange(rows.size)
            start, emitted = emitted, emitted + rows.size
            a, b = max(lo, start) - start, min(hi, emitted) - start
            if a >= b:
                continue
            if (a, b) != (0, rows.size):
                taken = rows[order[a:b]]
                by_row = np.argsort(taken, kind="stable")
                rows, order = taken[by_row], np.empty_like(by_row)
                order[by_row] = np.arange(by_row.size)
            plan.append(Window(rows, order))
        return plan


class BatchStream(IterableDataset[Batch]):
    """Batches ``{"x", "y", "snr"}`` of ``dataset`` following a :class:`BlockShuffleSampler`.

    Windows are read one ahead on a background thread, which overlaps the next read with the
    gathers of the current window (torch releases the GIL while it copies), and each batch is one
    gather from the window, so frames are copied once after reading.
    In ``DataLoader`` workers, each worker takes an equal share of the epoch's emission order
    (:meth:`BlockShuffleSampler.windows`) and carries the rows left over at the end of a window
    into its next batch, so only its last batch of the epoch can be short and the number of
    batches is the same every epoch. ``x`` keeps the layout the dataset stores; pass ``contiguous=True`` to
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
        self.loader_workers = 1  # set by EpochLoader, so len() counts each worker's short last batch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _share(self) -> list[Window]:
        info = get_worker_info()
        if info is None:
            return self.sampler.windows(self.epoch)
        return self.sampler.windows(self.epoch, info.id, info.num_workers)

    def __len__(self) -> int:
        sizes = self.sampler.part_sizes(self.loader_workers)
        if self.drop_last:
            return sum(size // self.batch_size for size in sizes)
        return sum(math.ceil(size / self.batch_size) for size in sizes)

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
                head = gather_frames(frames, positions[:need])
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
                yield self._emit(gather_frames(frames, positions[part]), y[part], snr[part])
            if full_end < positions.numel():
                tail = slice(full_end, positions.numel())
                carry = (gather_frames(frames, positions[tail]), y[tail], snr[tail])
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
