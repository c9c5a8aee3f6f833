"""Stratified (class, SNR) splits, split-spec parsing and SNR filters."""

from __future__ import annotations

import pytest
import torch

from rfml.data.splits import parse_snrs, parse_split, snr_mask, stratified_split


def grouped_labels(sizes: dict[tuple[int, int], int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels with the given (class, snr) group sizes, in a shuffled order so groups are interleaved."""
    y = torch.cat([torch.full((n,), c, dtype=torch.int64) for (c, _), n in sizes.items()])
    snr = torch.cat([torch.full((n,), s, dtype=torch.int64) for (_, s), n in sizes.items()])
    perm = torch.randperm(y.numel(), generator=torch.Generator().manual_seed(seed))
    return y[perm], snr[perm]


def group_counts(y: torch.Tensor, snr: torch.Tensor, idx: torch.Tensor) -> dict[tuple[int, int], int]:
    pairs, counts = torch.unique(torch.stack((y[idx], snr[idx]), 1), dim=0, return_counts=True)
    return {(int(c), int(s)): int(n) for (c, s), n in zip(pairs.tolist(), counts.tolist(), strict=True)}


SIZES = {(0, -10): 1000, (0, 10): 715, (1, -10): 7, (1, 10): 1000, (2, 0): 715, (2, 18): 1}


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1000, [600, 200, 200]), (715, [429, 143, 143]), (7, [4, 2, 1]), (10, [6, 2, 2]), (1, [1, 0, 0])],
)
def test_group_of_n_is_cut_six_two_two(n: int, expected: list[int]) -> None:
    y = torch.zeros(n, dtype=torch.int64)
    parts = stratified_split(y, torch.full((n,), 4), (0.6, 0.2, 0.2), seed=3)
    assert [p.numel() for p in parts] == expected


def test_every_group_is_split_in_proportion() -> None:
    y, snr = grouped_labels(SIZES)
    train, val, test = stratified_split(y, snr, (6, 2, 2), seed=0)
    expected = {1000: (600, 200, 200), 715: (429, 143, 143), 7: (4, 2, 1), 1: (1, 0, 0)}
    for part, k in ((train, 0), (val, 1), (test, 2)):
        got = group_counts(y, snr, part)
        want = {g: expected[n][k] for g, n in SIZES.items() if expected[n][k] > 0}
        assert got == want


def test_parts_are_sorted_disjoint_and_cover_all_indices() -> None:
    y, snr = grouped_labels(SIZES)
    parts = stratified_split(y, snr, (0.6, 0.2, 0.2), seed=5)
    for p in parts:
        assert p.dtype == torch.int64
        assert torch.equal(p, p.sort().values)
    joined = torch.cat(parts)
    assert joined.numel() == y.numel()
    assert torch.equal(joined.sort().values, torch.arange(y.numel()))


def test_same_seed_gives_identical_split_and_other_seed_differs() -> None:
    y, snr = grouped_labels(SIZES)
    a = stratified_split(y, snr, seed=11)
    b = stratified_split(y, snr, seed=11)
    c = stratified_split(y, snr, seed=12)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])
    # A different seed reshuffles members but keeps the per-group counts.
    assert group_counts(y, snr, a[1]) == group_counts(y, snr, c[1])


def test_split_does_not_touch_global_rng() -> None:
    y, snr = grouped_labels(SIZES)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    stratified_split(y, snr, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_members_of_a_group_are_chosen_at_random() -> None:
    # With labels in index order, a non-shuffling cut would put exactly the first 600 in train.
    y = torch.zeros(1000, dtype=torch.int64)
    train, _, _ = stratified_split(y, torch.zeros(1000, dtype=torch.int64), seed=0)
    assert not torch.equal(train, torch.arange(600))
    # Train membership should be spread over the index range: ~60% of each half.
    assert 250 < int((train < 500).sum()) < 350


def test_two_part_split_and_single_part() -> None:
    y, snr = grouped_labels({(0, 0): 100, (1, 0): 50})
    train, test = stratified_split(y, snr, "0.8:0.2", seed=0)
    assert group_counts(y, snr, train) == {(0, 0): 80, (1, 0): 40}
    assert group_counts(y, snr, test) == {(0, 0): 20, (1, 0): 10}
    (everything,) = stratified_split(y, snr, (1.0,))
    assert torch.equal(everything, torch.arange(150))


def test_empty_labels_give_empty_parts() -> None:
    empty = torch.empty(0, dtype=torch.int64)
    parts = stratified_split(empty, empty, (0.5, 0.5))
    assert [p.numel() for p in parts] == [0, 0]


@pytest.mark.parametrize(
    ("y", "snr", "match"),
    [
        (torch.zeros(3), torch.zeros(3, dtype=torch.int64), "y must be an integer"),
        (torch.zeros(3, dtype=torch.int64), torch.zeros(4, dtype=torch.int64), "same length"),
        (torch.zeros(3, 1, dtype=torch.int64), torch.zeros(3, dtype=torch.int64), "y must be a 1-D"),
    ],
)
def test_bad_labels_are_rejected(y: torch.Tensor, snr: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        stratified_split(y, snr)


@pytest.mark.parametrize("fractions", [(), (0.5, -0.5), (0.5, 0.0), (float("nan"), 1.0), (float("inf"), 1.0)])
def test_bad_fractions_are_rejected(fractions: tuple[float, ...]) -> None:
    y = torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="split"):
        stratified_split(y, y, fractions)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("6:2:2", (0.6, 0.2, 0.2)),
        (" 0.8 : 0.2 ", (0.8, 0.2)),
        ((3, 1), (0.75, 0.25)),
        ([1.0], (1.0,)),
    ],
)
def test_parse_split_normalises_weights(spec: str | tuple[float, ...], expected: tuple[float, ...]) -> None:
    assert parse_split(spec) == pytest.approx(expected)
    assert sum(parse_split(spec)) == pytest.approx(1.0)


@pytest.mark.parametrize("spec", ["6:x:2", "0:1", "", "  ", "6::2", "-1:2", "nan:1", [], ["a"]])
def test_parse_split_rejects_bad_specs(spec: object) -> None:
    with pytest.raises(ValueError, match="split"):
        parse_split(spec)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, None),
        ("all", None),
        (" ALL ", None),
        (10, [10]),
        (-4, [-4]),
        ("10", [10]),
        ("0,10,18", [0, 10, 18]),
        ("18, -2, 18", [-2, 18]),
        ([6, 0], [0, 6]),
        ((4.0,), [4]),
        ("-10:18", list(range(-10, 19, 2))),
        ("-10:18:4", [-10, -6, -2, 2, 6, 10, 14, 18]),
        ("0:5:2", [0, 2, 4]),
        ("4:4", [4]),
    ],
)
def test_parse_snrs_accepts_documented_forms(spec: object, expected: list[int] | None) -> None:
    assert parse_snrs(spec) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("", "empty"),
        ("ten", "snrs must be"),
        ("1.5", "snrs must be"),
        ("0:10:0", "step must be a positive"),
        ("10:0", "start <= stop"),
        ("1:2:3:4", "start:stop"),
        ("0,2:4", "not both"),
        ([], "at least one"),
        ([1.5], "integer SNR"),
        (True, "integer SNR"),
    ],
)
def test_parse_snrs_rejects_bad_specs(spec: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_snrs(spec)  # type: ignore[arg-type]


def test_snr_mask_keeps_listed_snrs() -> None:
    snr = torch.tensor([-10, 0, 10, 18, 0, -20])
    assert snr_mask(snr, [0, 18]).tolist() == [False, True, False, True, True, False]
    assert snr_mask(snr, torch.tensor([-20])).tolist() == [False, False, False, False, False, True]
    assert snr_mask(snr, None).tolist() == [True] * 6
    assert snr_mask(snr, [99]).tolist() == [False] * 6


def test_snr_mask_combines_with_parse_snrs() -> None:
    snr = torch.arange(-20, 20, 2)
    mask = snr_mask(snr, parse_snrs("-10:10:10"))
    assert snr[mask].tolist() == [-10, 0, 10]


@pytest.mark.parametrize(("keep", "match"), [([], "at least one"), ("0,10", "parse_snrs"), ([0.5], "integer SNR")])
def test_snr_mask_rejects_bad_keep(keep: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        snr_mask(torch.tensor([0, 10]), keep)  # type: ignore[arg-type]


def test_snr_mask_rejects_float_snr() -> None:
    with pytest.raises(ValueError, match="snr must be an integer"):
        snr_mask(torch.tensor([0.0, 10.0]), [0])
