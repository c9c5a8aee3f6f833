"""Generated files in the published layouts read back, through the real loaders, as the synthesizer's examples.

Also the lazy RadioML 2018 reader (spans, gathers, class orders), the ISM layout and on-the-fly synthetic data.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from rfml.cli import main as rfml_main
from rfml.data import (
    CLASSES_ISM,
    PRESETS,
    SHIPPED_CLASSES_RML2018A,
    DatasetFormatError,
    ISMInterference,
    RadioML2016,
    RadioML2018,
    SignalDataset,
    SyntheticSignals,
    load_array_pickle,
    source_indices,
)

SEED = 7
PER_KEY = {"rml2016.10a": 2, "rml2016.10b": 3, "rml2018.01a": 2}


def generate(out: Path, preset: str, per_key: int, seed: int = SEED, workers: int = 1) -> Path:
    argv = ["generate", "--preset", preset, "--out", str(out), "--per-key", str(per_key), "--seed", str(seed)]
    assert rfml_main([*argv, "--workers", str(workers), "--quiet"]) == 0
    return out


def open_file(preset: str, path: Path) -> SignalDataset:
    return RadioML2016(path) if PRESETS[preset].layout == "pickle" else RadioML2018(path)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small file per preset, written by ``rfml generate`` with one worker."""
    folder = tmp_path_factory.mktemp("generated")
    return {
        preset: generate(folder / PRESETS[preset].file_name, preset, per_key) for preset, per_key in PER_KEY.items()
    }


# ---- the CLI writes what the synthesizer makes --------------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(PER_KEY))
def test_generated_file_reads_back_as_the_synthesizer_examples(generated: dict[str, Path], preset: str) -> None:
    spec, per_key = PRESETS[preset], PER_KEY[preset]
    ds = open_file(preset, generated[preset])
    assert ds.classes == spec.classes
    assert ds.snrs == list(spec.snrs)
    assert ds.length == spec.length
    assert len(ds) == len(spec.classes) * len(spec.snrs) * per_key
    rows = torch.arange(len(ds))
    batch = ds.get_batch(rows)
    want = spec.synthesizer(SEED).generate(source_indices(rows, len(spec.classes), len(spec.snrs), per_key))
    assert batch["x"].dtype == torch.float32 and batch["x"].shape == (len(ds), 2, spec.length)
    assert torch.equal(batch["x"], want["x"])
    assert batch["x"].isfinite().all() and batch["x"].std() > 0 and not torch.equal(batch["x"][0], batch["x"][1])
    assert torch.equal(batch["y"], want["y"]) and torch.equal(ds.y, want["y"])
    assert torch.equal(batch["snr"], want["snr"]) and torch.equal(ds.snr, want["snr"])


def test_cli_prints_the_written_path_and_a_folder_gets_the_synthetic_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    generate(tmp_path, "rml2016.10b", 1)
    written = tmp_path / "RML2016.10b.synthetic.dat"
    assert PRESETS["rml2016.10b"].synthetic_name == written.name
    assert capsys.readouterr().out.strip() == str(written)
    # the file and its provenance record, and no partial file left
    assert sorted(p.name for p in tmp_path.iterdir()) == [written.name, written.name + ".provenance.json"]


def test_cli_reports_a_missing_folder_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "absent" / "x.pkl"
    code = rfml_main(["generate", "--preset", "rml2016.10a", "--out", str(out), "--per-key", "1", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("rfml generate: error: ") and "does not exist" in err
    assert not out.parent.exists()


@pytest.mark.parametrize("preset", ["rml2016.10a", "rml2016.10b"])
def test_rml2016_file_is_a_dict_of_float32_arrays_keyed_by_modulation_and_snr(
    generated: dict[str, Path], preset: str
) -> None:
    spec, per_key = PRESETS[preset], PER_KEY[preset]
    data = load_array_pickle(generated[preset])
    assert isinstance(data, dict)
    assert list(data) == [(name, snr) for name in spec.classes for snr in spec.snrs]
    for (name, snr), value in data.items():
        assert type(name) is str and type(snr) is int
        assert isinstance(value, np.ndarray) and value.dtype == np.float32 and value.shape == (per_key, 2, 128)
    # Row r of the loader is example r % per_key of the r // per_key-th key.
    ds = RadioML2016(generated[preset])
    stacked = np.concatenate(list(data.values()))
    np.testing.assert_array_equal(ds.x.numpy(), stacked)


def test_rml2018_file_has_the_published_fields_class_major_with_snr_blocks(generated: dict[str, Path]) -> None:
    spec, per_key = PRESETS["rml2018.01a"], PER_KEY["rml2018.01a"]
    classes, snrs = len(spec.classes), len(spec.snrs)
    rows = classes * snrs * per_key
    with h5py.File(generated["rml2018.01a"], "r") as handle:
        assert sorted(handle) == ["X", "Y", "Z"]
        x, y, z = handle["X"], handle["Y"], handle["Z"]
        assert (x.shape, x.dtype) == ((rows, 1024, 2), np.float32)
        assert (y.shape, y.dtype) == ((rows, 24), np.int64)
        assert (z.shape, z.dtype) == ((rows, 1), np.int64)
        y_all, z_all = y[:], z[:]
    np.testing.assert_array_equal(y_all.sum(axis=1), np.ones(rows))
    assert set(np.unique(y_all).tolist()) == {0, 1}
    np.testing.assert_array_equal(y_all.argmax(axis=1), np.repeat(np.arange(classes), snrs * per_key))
    np.testing.assert_array_equal(z_all[:, 0], np.tile(np.repeat(spec.snrs, per_key), classes))


# ---- the number of writer processes does not change the file ----------------------------------------------------


def test_rml2016_written_by_4_workers_equals_1_worker(tmp_path: Path, generated: dict[str, Path]) -> None:
    one = generated["rml2016.10a"]
    four = generate(tmp_path / "four.pkl", "rml2016.10a", PER_KEY["rml2016.10a"], workers=4)
    assert four.read_bytes() == one.read_bytes()
    a, b = load_array_pickle(one), load_array_pickle(four)
    assert list(a) == list(b)
    assert all(np.array_equal(a[key], b[key]) for key in a)
    ds_one, ds_four = RadioML2016(one), RadioML2016(four)
    assert torch.equal(ds_one.y, ds_four.y) and torch.equal(ds_one.snr, ds_four.snr)


def test_rml2018_written_by_4_workers_equals_1_worker(tmp_path: Path) -> None:
    # per_key 4 gives 2496 rows, more than one 2048-row generation range, so ranges finish out of order.
    one = generate(tmp_path / "one.hdf5", "rml2018.01a", 4, workers=1)
    four = generate(tmp_path / "four.hdf5", "rml2018.01a", 4, workers=4)
    with h5py.File(one, "r") as a, h5py.File(four, "r") as b:
        for name in ("X", "Y", "Z"):
            assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape
            assert a[name][:].tobytes() == b[name][:].tobytes(), name
    ds_one, ds_four = RadioML2018(one), RadioML2018(four)
    assert torch.equal(ds_one.y, ds_four.y) and torch.equal(ds_one.snr, ds_four.snr)
    assert ds_one.y.unique().tolist() == list(range(24))


# ---- RadioML 2018 class orders -------------------------------------------------------------------------------------


def test_shipped_class_order_renames_classes_and_keeps_labels(generated: dict[str, Path]) -> None:
    corrected = RadioML2018(generated["rml2018.01a"])
    shipped = RadioML2018(generated["rml2018.01a"], class_order="shipped")
    assert shipped.classes == SHIPPED_CLASSES_RML2018A
    assert corrected.classes == PRESETS["rml2018.01a"].classes
    assert shipped.classes != corrected.classes and sorted(shipped.classes) == sorted(corrected.classes)
    assert torch.equal(shipped.y, corrected.y) and torch.equal(shipped.snr, corrected.snr)
    custom = RadioML2018(generated["rml2018.01a"], class_order=[f"c{i}" for i in range(24)])
    assert custom.classes[5] == "c5" and torch.equal(custom.y, corrected.y)


def test_class_order_of_wrong_length_or_unknown_name_is_refused(generated: dict[str, Path]) -> None:
    path = generated["rml2018.01a"]
    with pytest.raises(DatasetFormatError, match="24 one-hot columns but class_order names 23 classes") as info:
        RadioML2018(path, class_order=SHIPPED_CLASSES_RML2018A[:-1])
    assert info.value.field == "Y" and info.value.path == str(path)
    with pytest.raises(ValueError, match="'alphabetical'"):
        RadioML2018(path, class_order="alphabetical")


# ---- lazy reads --------------------------------------------------------------------------------------------------


ROWS, LENGTH, CLASSES = 120, 8, 3


@pytest.fixture(scope="module")
def small_2018(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    """A hand-made RadioML 2018 layout: X (120, 8, 2) random, 3 classes, SNR = row % 5 * 2."""
    path = tmp_path_factory.mktemp("h5") / "small.hdf5"
    rng = np.random.default_rng(11)
    x = rng.standard_normal((ROWS, LENGTH, 2)).astype(np.float32)
    labels = rng.integers(0, CLASSES, ROWS)
    y = np.eye(CLASSES, dtype=np.int64)[labels]
    z = (np.arange(ROWS) % 5 * 2).reshape(-1, 1).astype(np.int64)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("X", data=x, chunks=(16, LENGTH, 2))
        handle["Y"], handle["Z"] = y, z
    return path, x, labels, z[:, 0]


INDEX_CASES = [
    pytest.param([97, 3, 3, 50, 4, 119, 0, 97, 60, 61, 63], id="unsorted-repeats-gaps"),
    pytest.param([5], id="one"),
    pytest.param(list(range(119, -1, -1)), id="all-reversed"),
    pytest.param([0, 119, 0, 119], id="ends-only"),
]


@pytest.mark.parametrize("max_gap_rows", [0, 2, 40, 1000])
@pytest.mark.parametrize("indices", INDEX_CASES)
def test_get_batch_equals_direct_hdf5_reads_transposed(
    small_2018: tuple[Path, np.ndarray, np.ndarray, np.ndarray], indices: list[int], max_gap_rows: int
) -> None:
    path, x, labels, snr = small_2018
    ds = RadioML2018(path, class_order=["a", "b", "c"], max_gap_rows=max_gap_rows)
    batch = ds.get_batch(torch.tensor(indices))
    assert batch["x"].is_contiguous() and batch["x"].shape == (len(indices), 2, LENGTH)
    assert torch.equal(batch["x"], torch.from_numpy(x[indices].transpose(0, 2, 1).copy()))
    assert batch["y"].tolist() == labels[indices].tolist()
    assert batch["snr"].tolist() == snr[indices].tolist()


def test_get_batch_results_survive_later_reads(small_2018: tuple[Path, np.ndarray, np.ndarray, np.ndarray]) -> None:
    # frames() reuses two read buffers; a batch handed out must not change when they are refilled.
    path, x, _, _ = small_2018
    ds = RadioML2018(path, class_order=["a", "b", "c"], max_gap_rows=4)
    picks = [[1, 2, 3], [40, 10, 90], [7, 8, 9, 100], [119, 0]]
    batches = [ds.get_batch(pick)["x"] for pick in picks]
    for pick, batch in zip(picks, batches, strict=True):
        assert torch.equal(batch, torch.from_numpy(x[pick].transpose(0, 2, 1).copy()))


def test_frames_stay_valid_until_the_call_after_next(
    small_2018: tuple[Path, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    path, x, _, _ = small_2018
    ds = RadioML2018(path, class_order=["a", "b", "c"], max_gap_rows=3)
    rows_a, rows_b = np.array([30, 2, 31, 2]), np.array([100, 64, 65])
    frames_a, pos_a = ds.frames(rows_a)
    frames_b, pos_b = ds.frames(rows_b)
    assert torch.equal(frames_a[pos_a], torch.from_numpy(x[rows_a].transpose(0, 2, 1).copy()))
    assert torch.equal(frames_b[pos_b], torch.from_numpy(x[rows_b].transpose(0, 2, 1).copy()))


def test_empty_and_out_of_range_indices(small_2018: tuple[Path, np.ndarray, np.ndarray, np.ndarray]) -> None:
    path, _, _, _ = small_2018
    ds = RadioML2018(path, class_order=["a", "b", "c"])
    empty = ds.get_batch([])
    assert empty["x"].shape == (0, 2, LENGTH) and empty["y"].shape == (0,)
    with pytest.raises(IndexError, match="index 120 is out of range for a dataset of 120"):
        ds.get_batch([3, 120])
    with pytest.raises(IndexError, match="index -1"):
        ds.get_batch([-1])
    with pytest.raises(ValueError, match="one-dimensional"):
        ds.get_batch([[1, 2]])


@pytest.mark.parametrize(
    ("max_gap_rows", "expected"),
    [
        (0, [[0, 3], [5, 7], [20, 21]]),
        (1, [[0, 3], [5, 7], [20, 21]]),
        (2, [[0, 7], [20, 21]]),  # rows 3 and 4 (two unrequested) join 0..2 and 5..6
        (12, [[0, 7], [20, 21]]),
        (13, [[0, 21]]),  # rows 7..19 (thirteen unrequested) join the last one too
    ],
)
def test_spans_join_rows_at_most_max_gap_rows_apart(
    small_2018: tuple[Path, np.ndarray, np.ndarray, np.ndarray], max_gap_rows: int, expected: list[list[int]]
) -> None:
    ds = RadioML2018(small_2018[0], class_order=["a", "b", "c"], max_gap_rows=max_gap_rows)
    spans = ds.spans(np.array([0, 1, 2, 5, 6, 20]))
    assert spans.tolist() == expected
    assert ds.spans(np.array([], dtype=np.int64)).shape == (0, 2)


def test_radioml2018_pickles_without_its_file_handle(
    small_2018: tuple[Path, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    # DataLoader workers started by spawn receive a pickled copy, which must open its own handle.
    path, x, _, _ = small_2018
    ds = RadioML2018(path, class_order=["a", "b", "c"])
    ds.get_batch([1])  # the handle is open
    copy = pickle.loads(pickle.dumps(ds))
    assert copy.classes == ["a", "b", "c"] and torch.equal(copy.y, ds.y)
    assert torch.equal(copy.get_batch([4, 9])["x"], torch.from_numpy(x[[4, 9]].transpose(0, 2, 1).copy()))
    ds.close()
    assert torch.equal(ds.get_batch([2])["x"][0], torch.from_numpy(x[2].T.copy()))  # reopens after close


# ---- ISM layout --------------------------------------------------------------------------------------------------


def test_ism_rows_are_class_then_snr_then_vector(tmp_path: Path) -> None:
    vectors, samples = 3, 16
    rng = np.random.default_rng(5)
    data = rng.standard_normal((15, 21, vectors, samples, 2)).astype(np.float32).astype(np.float64)
    labels = np.broadcast_to(np.arange(15)[:, None, None], (15, 21, vectors)).astype(np.int64)
    (tmp_path / "data_iq.p").write_bytes(pickle.dumps(data, protocol=2))
    (tmp_path / "labels.p").write_bytes(pickle.dumps(labels, protocol=2))
    for path in (tmp_path, tmp_path / "data_iq.p"):
        ds = ISMInterference(path)
        assert ds.classes == CLASSES_ISM and len(ds.classes) == 15
        assert ds.snrs == list(range(-20, 21, 2)) and ds.length == samples
        assert len(ds) == 15 * 21 * vectors
        batch = ds.get_batch(torch.arange(len(ds)))
        assert batch["x"].dtype == torch.float32
        c, s, v = np.unravel_index(np.arange(len(ds)), (15, 21, vectors))
        assert torch.equal(batch["x"], torch.from_numpy(data[c, s, v].transpose(0, 2, 1).astype(np.float32)))
        assert batch["y"].tolist() == c.tolist()
        assert batch["snr"].tolist() == (-20 + 2 * s).tolist()
    row = (7 * 21 + 13) * vectors + 2  # class 7, SNR index 13 (+6 dB), vector 2
    item = ds[row]
    assert int(item["y"]) == 7 and int(item["snr"]) == 6
    assert torch.equal(item["x"], torch.from_numpy(data[7, 13, 2].T.astype(np.float32)))


def test_ism_big_endian_float64_data_loads_as_native_float32(tmp_path: Path) -> None:
    data = np.random.default_rng(1).standard_normal((15, 21, 2, 8, 2)).astype(">f8")
    (tmp_path / "data_iq.p").write_bytes(pickle.dumps(data))
    (tmp_path / "labels.p").write_bytes(pickle.dumps(np.zeros((15, 21, 2), dtype=np.int64)))
    ds = ISMInterference(tmp_path)
    assert ds.x.dtype == torch.float32 and ds.x.is_contiguous()
    np.testing.assert_array_equal(ds.x[5].numpy(), data.reshape(-1, 8, 2)[5].T.astype(np.float32))


def test_ism_labels_come_from_labels_file_not_position(tmp_path: Path) -> None:
    data = np.zeros((15, 21, 2, 4, 2), dtype=np.float32)
    labels = np.full((15, 21, 2), 14, dtype=np.int64)
    labels[0, 0, 1] = 3
    (tmp_path / "data_iq.p").write_bytes(pickle.dumps(data))
    (tmp_path / "labels.p").write_bytes(pickle.dumps(labels))
    ds = ISMInterference(tmp_path)
    assert ds.y[:3].tolist() == [14, 3, 14] and int(ds.y.sum()) == 14 * (len(ds) - 1) + 3


# ---- on-the-fly synthetic data -------------------------------------------------------------------------------------


def test_synthetic_signals_get_batch_equals_synthesizer_generate() -> None:
    ds = SyntheticSignals.from_preset("rml2016.10a", per_key=2, seed=5)
    assert len(ds) == 11 * 20 * 2 and ds.classes == PRESETS["rml2016.10a"].classes
    idx = torch.tensor([5, 0, 439, 5, 220, 13])
    batch = ds.get_batch(idx)
    want = PRESETS["rml2016.10a"].synthesizer(5).generate(idx)
    assert torch.equal(batch["x"], want["x"])
    assert torch.equal(batch["y"], want["y"]) and torch.equal(batch["y"], ds.y[idx])
    assert torch.equal(batch["snr"], want["snr"]) and torch.equal(batch["snr"], ds.snr[idx])
    # Example i does not depend on the batch it is generated in.
    assert torch.equal(ds[439]["x"], batch["x"][2]) and torch.equal(ds[5]["x"], batch["x"][3])


def test_synthetic_signals_cover_every_class_snr_pair_in_each_cycle() -> None:
    ds = SyntheticSignals.from_preset("rml2018.01a", per_key=1, seed=0)
    assert len(ds) == 24 * 26 and ds.length == 1024
    pairs = set(zip(ds.y.tolist(), ds.snr.tolist(), strict=True))
    assert pairs == {(c, s) for c in range(24) for s in range(-20, 32, 2)}
    with pytest.raises(ValueError, match="unknown dataset preset"):
        SyntheticSignals.from_preset("rml2017", per_key=1)
