"""Block-shuffled epoch plans and the batch stream that follows them, in one process and across loader workers."""

from __future__ import annotations

import math
import pickle
from collections import Counter

import h5py
import numpy as np
import pytest
import torch

from rfml.data import BatchStream, BlockShuffleSampler, EpochLoader, RadioML2016, RadioML2018

CLASS_NAMES, SNRS, PER_KEY, LENGTH = ["A", "B", "C"], [0, 10], 5, 4
N_2016 = len(CLASS_NAMES) * len(SNRS) * PER_KEY  # 30 rows


@pytest.fixture(scope="module")
def tagged_2016(tmp_path_factory: pytest.TempPathFactory) -> RadioML2016:
    """A RadioML 2016 layout whose frame ``r`` (in loader order) holds ``r`` in its first sample."""
    rng = np.random.default_rng(3)
    data = {}
    row = 0
    for name in CLASS_NAMES:
        for snr in SNRS:
            frames = rng.standard_normal((PER_KEY, 2, LENGTH)).astype(np.float32)
            frames[:, 0, 0] = np.arange(row, row + PER_KEY)
            data[(name, snr)] = frames
            row += PER_KEY
    path = tmp_path_factory.mktemp("rml2016") / "tagged.pkl"
    path.write_bytes(pickle.dumps(data, protocol=2))
    ds = RadioML2016(path)
    assert ds.x[:, 0, 0].tolist() == list(range(N_2016))  # the tag is the row
    return ds


N_2018 = 120


@pytest.fixture(scope="module")
def tagged_2018(tmp_path_factory: pytest.TempPathFactory) -> RadioML2018:
    """A RadioML 2018 layout (120 rows of 8 samples, 3 classes) whose row ``r`` holds ``r`` in its first sample."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((N_2018, 8, 2)).astype(np.float32)
    x[:, 0, 0] = np.arange(N_2018)
    y = np.eye(3, dtype=np.int64)[np.arange(N_2018) // 40]
    z = (np.arange(N_2018) // 8 % 5 * 2).reshape(-1, 1).astype(np.int64)
    path = tmp_path_factory.mktemp("rml2018") / "tagged.hdf5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("X", data=x, chunks=(16, 8, 2))
        handle["Y"], handle["Z"] = y, z
    return RadioML2018(path, class_order=["a", "b", "c"], max_gap_rows=4)


def tags(x: torch.Tensor) -> list[int]:
    return [int(v) for v in x[:, 0, 0].tolist()]


def all_windows_rows(sampler: BlockShuffleSampler, epoch: int) -> np.ndarray:
    return np.concatenate([w.rows for w in sampler.windows(epoch)])


def emitted_rows(sampler: BlockShuffleSampler, epoch: int) -> np.ndarray:
    return np.concatenate([w.rows[w.order] for w in sampler.windows(epoch)])


def expected_batches(sampler: BlockShuffleSampler, epoch: int, workers: int, batch_size: int) -> int:
    """Batches a loader with ``workers`` yields: each worker takes an equal share of the rows and carries over."""
    shares = [sum(w.rows.size for w in sampler.windows(epoch, k, workers)) for k in range(workers)]
    return sum(math.ceil(share / batch_size) for share in shares)


SUBSET = np.array([r for r in range(100) if r % 3 != 0])[::-1].copy()  # unsorted input


# ---- BlockShuffleSampler ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("block_rows", "window_rows"), [(1, 7), (4, 10), (8, 8), (5, 100), (16, 1)])
@pytest.mark.parametrize("epoch", [0, 3])
def test_each_epoch_covers_every_given_row_exactly_once(block_rows: int, window_rows: int, epoch: int) -> None:
    sampler = BlockShuffleSampler(SUBSET, block_rows, window_rows, shuffle=True, seed=1)
    assert len(sampler) == SUBSET.size
    assert sorted(all_windows_rows(sampler, epoch).tolist()) == sorted(SUBSET.tolist())
    assert sorted(emitted_rows(sampler, epoch).tolist()) == sorted(SUBSET.tolist())
    for window in sampler.windows(epoch):
        assert np.all(np.diff(window.rows) > 0)  # read order: sorted, no repeats
        assert sorted(window.order.tolist()) == list(range(window.rows.size))


@pytest.mark.parametrize(("block_rows", "window_rows"), [(1, 7), (4, 10), (8, 8), (5, 12), (16, 1), (3, 100)])
def test_every_window_reads_at_most_ceil_window_over_block_blocks(block_rows: int, window_rows: int) -> None:
    sampler = BlockShuffleSampler(SUBSET, block_rows, window_rows, seed=2)
    limit = math.ceil(window_rows / block_rows)
    windows = sampler.windows(1)
    assert all(np.unique(w.rows // block_rows).size <= limit for w in windows)
    assert len(windows) == math.ceil(sampler.num_blocks / limit)


def test_num_blocks_counts_only_blocks_holding_given_rows() -> None:
    sampler = BlockShuffleSampler([0, 1, 9, 30, 31, 32, 95], block_rows=10)
    assert sampler.num_blocks == 3  # blocks 0, 3 and 9; the empty ones are skipped
    assert sorted(tuple(w.rows.tolist()) for w in BlockShuffleSampler([0, 1, 9, 30], 10, 10).windows(0)) == [
        (0, 1, 9),
        (30,),
    ]


def test_same_seed_and_epoch_give_the_same_plan_and_others_differ() -> None:
    def plan(seed: int, epoch: int) -> list[tuple[list[int], list[int]]]:
        sampler = BlockShuffleSampler(SUBSET, block_rows=4, window_rows=12, seed=seed)
        return [(w.rows.tolist(), w.order.tolist()) for w in sampler.windows(epoch)]

    assert plan(5, 2) == plan(5, 2)
    assert plan(5, 2) != plan(5, 3)
    assert plan(5, 2) != plan(6, 2)
    sampler = BlockShuffleSampler(SUBSET, block_rows=4, window_rows=12, seed=5)
    assert emitted_rows(sampler, 0).tolist() != emitted_rows(sampler, 1).tolist()


def test_unshuffled_plan_is_ascending_and_the_same_every_epoch() -> None:
    sampler = BlockShuffleSampler(SUBSET, block_rows=4, window_rows=10, shuffle=False, seed=9)
    for epoch in (0, 1, 7):
        assert emitted_rows(sampler, epoch).tolist() == sorted(SUBSET.tolist())
        assert all(w.order.tolist() == list(range(w.rows.size)) for w in sampler.windows(epoch))


def test_a_shuffled_plan_mixes_rows_within_a_window() -> None:
    sampler = BlockShuffleSampler(np.arange(64), block_rows=1, window_rows=64, seed=0)
    (window,) = sampler.windows(0)
    assert window.rows.tolist() == list(range(64))
    assert window.order.tolist() != list(range(64))


def test_sampler_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="block_rows and window_rows must be >= 1"):
        BlockShuffleSampler([1, 2], block_rows=0)
    with pytest.raises(ValueError, match="block_rows and window_rows must be >= 1"):
        BlockShuffleSampler([1, 2], window_rows=0)
    with pytest.raises(ValueError, match="one-dimensional"):
        BlockShuffleSampler([[1, 2]])
    assert BlockShuffleSampler([], 4, 8).windows(0) == []


# ---- BatchStream over an in-memory dataset -----------------------------------------------------------------------


def collect(stream: BatchStream | EpochLoader) -> list[dict[str, torch.Tensor]]:
    return list(stream)


def check_batches_match_rows(ds: RadioML2016 | RadioML2018, batches: list[dict[str, torch.Tensor]]) -> list[int]:
    rows: list[int] = []
    for batch in batches:
        batch_rows = tags(batch["x"])
        assert torch.equal(batch["x"], ds.get_batch(batch_rows)["x"])
        assert torch.equal(batch["y"], ds.y[batch_rows]) and torch.equal(batch["snr"], ds.snr[batch_rows])
        assert batch["y"].dtype == torch.int64 and batch["snr"].dtype == torch.int64
        rows += batch_rows
    return rows


@pytest.mark.parametrize("prefetch", [True, False])
@pytest.mark.parametrize(("batch_size", "window_rows"), [(4, 8), (7, 5), (30, 100), (64, 8)])
def test_one_epoch_yields_every_row_once_in_full_batches(
    tagged_2016: RadioML2016, batch_size: int, window_rows: int, prefetch: bool
) -> None:
    sampler = BlockShuffleSampler(range(N_2016), block_rows=1, window_rows=window_rows, seed=4)
    stream = BatchStream(tagged_2016, sampler, batch_size, prefetch=prefetch)
    batches = collect(stream)
    rows = check_batches_match_rows(tagged_2016, batches)
    assert sorted(rows) == list(range(N_2016))
    sizes = [len(b["y"]) for b in batches]
    full, rest = divmod(N_2016, batch_size)
    assert sizes == [batch_size] * full + ([rest] if rest else [])  # only the last batch may be short
    assert len(stream) == len(batches) == math.ceil(N_2016 / batch_size)
    assert rows == emitted_rows(sampler, 0).tolist()  # the stream follows the plan's order


def test_prefetching_does_not_change_the_batches(tagged_2016: RadioML2016) -> None:
    def run(prefetch: bool) -> list[list[int]]:
        sampler = BlockShuffleSampler(range(N_2016), 1, 6, seed=8)
        return [tags(b["x"]) for b in BatchStream(tagged_2016, sampler, 4, prefetch=prefetch)]

    assert run(True) == run(False)


def test_a_subset_yields_only_its_rows(tagged_2016: RadioML2016) -> None:
    subset = [29, 3, 17, 4, 11, 0, 22]
    stream = BatchStream(tagged_2016, BlockShuffleSampler(subset, 1, 3, seed=0), batch_size=2)
    rows = check_batches_match_rows(tagged_2016, collect(stream))
    assert sorted(rows) == sorted(subset)


def test_drop_last_yields_only_full_batches(tagged_2016: RadioML2016) -> None:
    sampler = BlockShuffleSampler(range(N_2016), block_rows=1, window_rows=8, seed=4)
    stream = BatchStream(tagged_2016, sampler, batch_size=4, drop_last=True)
    batches = collect(stream)
    assert [len(b["y"]) for b in batches] == [4] * 7
    assert len(stream) == 7
    rows = check_batches_match_rows(tagged_2016, batches)
    assert len(set(rows)) == 28 and set(rows) <= set(range(N_2016))


def test_transform_is_applied_to_x_only(tagged_2016: RadioML2016) -> None:
    sampler = BlockShuffleSampler(range(N_2016), block_rows=1, window_rows=8, seed=4)
    plain = collect(BatchStream(tagged_2016, sampler, batch_size=4))
    moved = collect(BatchStream(tagged_2016, sampler, batch_size=4, transform=lambda x: x * 2 + 1))
    assert len(plain) == len(moved) == 8
    for a, b in zip(plain, moved, strict=True):
        assert torch.equal(b["x"], a["x"] * 2 + 1)
        assert torch.equal(a["y"], b["y"]) and torch.equal(a["snr"], b["snr"])


def test_set_epoch_changes_the_order_but_not_the_rows(tagged_2016: RadioML2016) -> None:
    stream = BatchStream(tagged_2016, BlockShuffleSampler(range(N_2016), 1, 8, seed=4), batch_size=4)
    first = [r for b in stream for r in tags(b["x"])]
    stream.set_epoch(1)
    second = [r for b in stream for r in tags(b["x"])]
    assert first != second and sorted(first) == sorted(second) == list(range(N_2016))


def test_stream_refuses_bad_batch_size_and_rows_beyond_the_dataset(tagged_2016: RadioML2016) -> None:
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        BatchStream(tagged_2016, BlockShuffleSampler(range(4)), batch_size=0)
    with pytest.raises(IndexError, match="sampler row 30 is out of range for 30 examples"):
        BatchStream(tagged_2016, BlockShuffleSampler([0, 30]), batch_size=2)


# ---- EpochLoader with worker processes ---------------------------------------------------------------------------


def test_two_workers_together_yield_every_row_once_and_passes_differ(tagged_2016: RadioML2016) -> None:
    sampler = BlockShuffleSampler(range(N_2016), block_rows=1, window_rows=8, seed=4)
    loader = EpochLoader(BatchStream(tagged_2016, sampler, batch_size=4), num_workers=2)
    orders = []
    for epoch in range(2):
        reported = len(loader)
        batches = collect(loader)
        assert reported == len(batches) == expected_batches(sampler, epoch, workers=2, batch_size=4) == 8
        rows = check_batches_match_rows(tagged_2016, batches)
        assert Counter(rows) == Counter(range(N_2016))
        # Each worker's last batch may be short (windows of 8, 8 | 8, 6 rows: two short batches at most).
        assert sum(len(b["y"]) < 4 for b in batches) <= 2
        orders.append(rows)
    assert orders[0] != orders[1]


def test_epoch_loader_refuses_persistent_workers(tagged_2016: RadioML2016) -> None:
    stream = BatchStream(tagged_2016, BlockShuffleSampler(range(N_2016)), batch_size=4)
    with pytest.raises(ValueError, match="persistent_workers"):
        EpochLoader(stream, num_workers=1, persistent_workers=True)


def test_len_of_loader_before_each_pass_equals_batches_of_that_pass(tagged_2018: RadioML2018) -> None:
    rows = [r for r in range(N_2018) if r % 7 not in (0, 3) or r < 16]  # uneven blocks of 8
    sampler = BlockShuffleSampler(rows, block_rows=8, window_rows=16, seed=5)
    counts = [expected_batches(sampler, epoch, workers=2, batch_size=5) for epoch in range(3)]
    shares = [math.ceil(n / 5) for n in sampler.part_sizes(2)]
    assert counts == [sum(shares)] * 3  # equal row shares: the same batch count every epoch
    loader = EpochLoader(BatchStream(tagged_2018, sampler, batch_size=5), num_workers=2)
    for epoch in range(2):
        reported = len(loader)
        assert reported == len(collect(loader)) == counts[epoch]


@pytest.mark.parametrize("parts", [2, 3, 5])
def test_worker_shares_split_the_epoch_emission_order(parts: int) -> None:
    sampler = BlockShuffleSampler(SUBSET, block_rows=4, window_rows=10, seed=2)
    whole = np.concatenate([w.rows[w.order] for w in sampler.windows(4)])
    shares = [np.concatenate([w.rows[w.order] for w in sampler.windows(4, p, parts)]) for p in range(parts)]
    np.testing.assert_array_equal(np.concatenate(shares), whole)
    assert [share.size for share in shares] == sampler.part_sizes(parts)
    for p in range(parts):
        for window in sampler.windows(4, p, parts):
            assert np.all(np.diff(window.rows) > 0)  # each window still reads its rows in ascending order


# ---- BatchStream over a file-backed dataset ------------------------------------------------------------------------


@pytest.mark.parametrize("contiguous", [True, False])
def test_stream_over_radioml2018_gives_the_rows_get_batch_gives(tagged_2018: RadioML2018, contiguous: bool) -> None:
    rows = [r for r in range(N_2018) if r % 7 != 0]
    sampler = BlockShuffleSampler(rows, block_rows=16, window_rows=40, seed=3)
    stream = BatchStream(tagged_2018, sampler, batch_size=7, contiguous=contiguous)
    batches = collect(stream)
    for batch in batches:
        assert batch["x"].shape[1:] == (2, 8) and batch["x"].dtype == torch.float32
        if contiguous:
            assert batch["x"].is_contiguous()
    seen = check_batches_match_rows(tagged_2018, batches)
    assert sorted(seen) == rows
    assert seen == emitted_rows(sampler, 0).tolist()
    assert len(stream) == len(batches) == math.ceil(len(rows) / 7)


def test_two_workers_over_radioml2018_yield_every_row_once(tagged_2018: RadioML2018) -> None:
    sampler = BlockShuffleSampler(range(N_2018), block_rows=16, window_rows=32, seed=1)
    loader = EpochLoader(BatchStream(tagged_2018, sampler, batch_size=10, contiguous=True), num_workers=2)
    batches = collect(loader)
    assert len(loader) == len(batches) == expected_batches(sampler, 0, workers=2, batch_size=10)
    assert Counter(check_batches_match_rows(tagged_2018, batches)) == Counter(range(N_2018))


def test_late_batches_are_not_overwritten_by_buffer_reuse(tagged_2018: RadioML2018) -> None:
    # The reader refills its two buffers while batches are held; kept batches must keep their values.
    sampler = BlockShuffleSampler(range(N_2018), block_rows=4, window_rows=12, seed=2)
    batches = collect(BatchStream(tagged_2018, sampler, batch_size=5))
    assert len(batches) == 24
    assert Counter(check_batches_match_rows(tagged_2018, batches)) == Counter(range(N_2018))


def test_stream_over_radioml2018_pickles_for_spawned_workers(tagged_2018: RadioML2018) -> None:
    sampler = BlockShuffleSampler(range(N_2018), block_rows=16, window_rows=32, seed=1)
    stream = BatchStream(tagged_2018, sampler, batch_size=16)
    copy = pickle.loads(pickle.dumps(stream))
    assert [tags(b["x"]) for b in copy] == [tags(b["x"]) for b in stream]
