"""The dataset loaders check what they read at the door (issue 21, item 8).

One-hot rows are exactly one 1 and zeros elsewhere; SNRs are integers in a sane range with no wrap; frames are
finite unless the user opts out (``finite=False``); HDF5 data stored outside the file (external storage, virtual
sources, external links) is refused unless the user opts in (``allow_external=True``). Every refusal is a
:class:`DatasetFormatError` naming the file and the field.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from test_data_module import from_yaml
from test_data_safety import NAMES_3, dump, ism_arrays, valid_2016_dict, valid_2018_fields, write_h5

from rfml.data import DatasetFormatError, ISMInterference, RadioML2016, RadioML2018, SignalDataModule
from rfml.data.base import SNR_RANGE_DB
from rfml.data.sampling import BatchStream, BlockShuffleSampler
from rfml.data.verify import convert, verify


def refused(call: object, path: Path, field: str, *words: str) -> DatasetFormatError:
    """Run ``call`` and check it raises DatasetFormatError naming ``path`` and ``field``, with ``words`` in it."""
    with pytest.raises(DatasetFormatError) as info:
        call()  # type: ignore[operator]
    err = info.value
    assert err.path == str(path) and err.field == field, str(err)
    assert str(err).startswith(f"{path}: field {field!r}: "), str(err)
    for word in words:
        assert word in str(err), f"{word!r} not in {err}"
    return err


def open_2018(path: Path, **kwargs: object) -> RadioML2018:
    return RadioML2018(path, class_order=NAMES_3, **kwargs)  # type: ignore[arg-type]


# ---- one-hot rows ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "value"), [(4, [1, 1, -1]), (1, [-1, 1, 1]), (2, [1, 0, np.nan])], ids=["1,1,-1", "-1,1,1", "nan"]
)
def test_a_y_row_that_sums_to_one_but_is_not_one_hot_is_refused(tmp_path: Path, row: int, value: list) -> None:
    fields = valid_2018_fields()
    y = fields["Y"].astype(np.float64)
    y[row] = value
    fields["Y"] = y
    path = write_h5(tmp_path / "bad.hdf5", fields)
    refused(lambda: open_2018(path), path, "Y", f"row {row} is not one-hot", "exactly one 1 and zeros elsewhere")


def test_a_signed_integer_one_hot_y_still_loads(tmp_path: Path) -> None:
    fields = valid_2018_fields()
    fields["Y"] = fields["Y"].astype(np.int8)
    assert open_2018(write_h5(tmp_path / "ok.hdf5", fields)).y.tolist() == [0, 1, 2, 0, 1, 2]


# ---- SNR values -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [10**9, -(10**9), SNR_RANGE_DB[1] + 1, SNR_RANGE_DB[0] - 1])
def test_z_out_of_the_sane_range_is_refused_naming_the_row(tmp_path: Path, value: int) -> None:
    fields = valid_2018_fields()
    fields["Z"][2, 0] = value
    path = write_h5(tmp_path / "bad.hdf5", fields)
    low, high = SNR_RANGE_DB
    refused(lambda: open_2018(path), path, "Z", f"row 2 holds {value} dB", f"{low}..{high} dB")


def test_z_at_the_ends_of_the_range_loads(tmp_path: Path) -> None:
    fields = valid_2018_fields()
    fields["Z"][:2, 0] = SNR_RANGE_DB
    assert open_2018(write_h5(tmp_path / "ok.hdf5", fields)).snr[:3].tolist() == [*SNR_RANGE_DB, 4]


def test_uint64_z_that_would_wrap_to_a_small_negative_snr_is_refused(tmp_path: Path) -> None:
    # 2**64 - 4 wraps to -4 dB under a cast to int64: a plausible SNR, so only a check before the cast sees it.
    fields = valid_2018_fields()
    z = fields["Z"].astype(np.uint64)
    z[3, 0] = 2**64 - 4
    fields["Z"] = z
    path = write_h5(tmp_path / "bad.hdf5", fields)
    refused(lambda: open_2018(path), path, "Z", f"row 3 holds {2**64 - 4} dB")


def test_uint64_z_that_fits_loads(tmp_path: Path) -> None:
    fields = valid_2018_fields()
    fields["Z"] = fields["Z"].astype(np.uint64)
    assert open_2018(write_h5(tmp_path / "ok.hdf5", fields)).snrs == [4]


@pytest.mark.parametrize(
    ("snr", "shown"),
    [(10**30, str(10**30)), (2**63, str(2**63)), (10**9, str(10**9)), (10**5000, "<an integer of 16610 bits>")],
    ids=["1e30", "2**63", "1e9", "1e5000"],
)
def test_a_huge_snr_key_in_a_2016_pickle_is_refused_naming_the_key(tmp_path: Path, snr: int, shown: str) -> None:
    # 10**5000 has more digits than Python will print: the message gives its size instead.
    data = valid_2016_dict()
    data[("QPSK", snr)] = data.pop(("QPSK", 0))
    path = dump(tmp_path / "bad.pkl", data)
    refused(lambda: RadioML2016(path), path, f"key ('QPSK', {shown})", f"holds {shown} dB", "-100..100 dB")


def test_a_numpy_uint64_snr_key_is_refused_not_wrapped(tmp_path: Path) -> None:
    data = valid_2016_dict()
    key = ("QPSK", np.uint64(2**64 - 2))
    data[key] = data.pop(("QPSK", 0))
    path = dump(tmp_path / "bad.pkl", data)
    err = refused(lambda: RadioML2016(path), path, f"key {key!r}")
    assert f"holds {2**64 - 2} dB" in str(err)


def test_convert_refuses_a_huge_snr_key_with_the_file_and_key(tmp_path: Path) -> None:
    data = valid_2016_dict()
    data[("QPSK", 10**30)] = data.pop(("QPSK", 0))
    path = dump(tmp_path / "bad.pkl", data)
    refused(lambda: convert(path, tmp_path / "out.hdf5", progress=False), path, f"key ('QPSK', {10**30})", "dB")
    assert not (tmp_path / "out.hdf5").exists()


# ---- finite frames --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_radioml2018_refuses_a_non_finite_frame_naming_the_row_unless_finite_is_off(tmp_path: Path, bad: float) -> None:
    fields = valid_2018_fields()
    fields["X"][3, 1, 0] = bad
    fields["X"][5, 0, 1] = bad
    path = write_h5(tmp_path / "bad.hdf5", fields)
    data = open_2018(path, max_gap_rows=0)  # checked as frames are read: opening never reads all of X
    assert data.get_batch([0, 1, 2, 4])["x"].isfinite().all()
    refused(lambda: data.get_batch([4, 5, 3]), path, "X", "row 3 ", "NaN" if np.isnan(bad) else "Inf", "finite=False")
    stream = BatchStream(data, BlockShuffleSampler(np.arange(len(data)), block_rows=2, window_rows=2), batch_size=2)
    refused(lambda: list(stream), path, "X", "NaN" if np.isnan(bad) else "Inf")  # the training stream too
    refused(lambda: data.scan_finite(), path, "X", "row 3 ", "finite=False")
    loaded = open_2018(path, finite=False).get_batch([3, 5])["x"].numpy()  # [B, 2, L]: X[3, 1, 0] is x[0, 0, 1]
    np.testing.assert_array_equal(loaded[[0, 1], [0, 1], [1, 0]], [bad, bad])


def test_radioml2018_finite_scan_reads_x_in_bounded_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Blocks of 4 rows (64 bytes per row here): the bad row lies in the third block and is still named exactly,
    # and no read is larger than one block.
    fields = valid_2018_fields(rows=12)
    fields["X"][10, 2, 1] = np.nan
    path = write_h5(tmp_path / "bad.hdf5", fields)
    monkeypatch.setattr("rfml.data.base.FINITE_CHUNK_BYTES", 4 * 4 * 2 * 4)
    reads: list[int] = []
    read_direct = h5py.Dataset.read_direct

    def counting(self: h5py.Dataset, dest: np.ndarray, source_sel: object = None, dest_sel: object = None) -> None:
        reads.append(len(dest))
        read_direct(self, dest, source_sel, dest_sel)

    data = open_2018(path)
    monkeypatch.setattr(h5py.Dataset, "read_direct", counting)
    refused(data.scan_finite, path, "X", "row 10 ", "1 NaN")
    assert reads == [4, 4, 4]


def test_verify_scans_the_frames_of_an_hdf5_file(tmp_path: Path) -> None:
    fields = valid_2018_fields()
    fields["X"][4, 0, 0] = np.inf
    path = write_h5(tmp_path / "bad.hdf5", fields)
    with h5py.File(path, "a") as handle:
        handle.attrs["classes"] = NAMES_3
    layout = next(check for check in verify(path, dataset="rml2018.01a").checks if check.name == "layout")
    assert layout.status == "fail" and layout.message.startswith(f"{path}: field 'X': row 4 holds")


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_radioml2016_refuses_a_non_finite_frame_naming_key_and_row(tmp_path: Path, bad: float) -> None:
    data = valid_2016_dict()
    data[("QPSK", 0)][1, 0, 5] = bad
    path = dump(tmp_path / "bad.pkl", data)
    refused(lambda: RadioML2016(path), path, "key ('QPSK', 0)", "row 1 ", "NaN" if np.isnan(bad) else "Inf")
    loaded = RadioML2016(path, finite=False)
    assert not np.isfinite(loaded.x.numpy()).all()


@pytest.mark.parametrize("bad", [np.nan, -np.inf], ids=["nan", "-inf"])
def test_ism_refuses_a_non_finite_vector_naming_its_index(tmp_path: Path, bad: float) -> None:
    data, labels = ism_arrays()
    data[2, 5, 1, 3, 0] = bad
    dump(tmp_path / "data_iq.p", data)
    dump(tmp_path / "labels.p", labels)
    refused(lambda: ISMInterference(tmp_path), tmp_path / "data_iq.p", "data_iq", "data_iq[2, 5, 1]")
    loaded = ISMInterference(tmp_path, finite=False)
    assert not np.isfinite(loaded.x.numpy()).all()


def test_verify_reports_a_non_finite_frame_in_a_pickle(tmp_path: Path) -> None:
    data = valid_2016_dict()
    data[("BPSK", 10)][2, 1, 0] = np.nan
    report = verify(dump(tmp_path / "bad.pkl", data), dataset="rml2016.10a")
    layout = next(check for check in report.checks if check.name == "layout")
    assert layout.status == "fail" and "key ('BPSK', 10)" in layout.message and "row 2 " in layout.message


def write_nan_2016(path: Path) -> Path:
    data = {(name, snr): np.ones((5, 2, 8), np.float32) for name in ("BPSK", "QPSK") for snr in (0, 10)}
    data[("BPSK", 10)][4, 0, 0] = np.nan
    path.write_bytes(pickle.dumps(data, protocol=2))
    return path


def test_the_data_module_checks_finite_by_default_and_passes_finite_false_on(tmp_path: Path) -> None:
    path = write_nan_2016(tmp_path / "nan.pkl")
    with pytest.raises(DatasetFormatError, match=r"field \"key \('BPSK', 10\)\": row 4 "):
        SignalDataModule(dataset=str(path), split="1:1:1", norm="none").setup()
    module = SignalDataModule(dataset=str(path), split="1:1:1", norm="none", finite=False)
    module.setup()
    assert len(module.data) == 20  # type: ignore[arg-type]


def test_a_yaml_config_turns_the_finite_check_off(tmp_path: Path) -> None:
    path = write_nan_2016(tmp_path / "nan.pkl")
    module = from_yaml(f"data:\n  dataset: {path}\n  split: '1:1:1'\n  norm: none\n  finite: false\n")
    module.setup()
    assert module.hparams.finite is False and len(module.data) == 20  # type: ignore[arg-type]


# ---- HDF5 storage outside the file ----------------------------------------------------------------------------------


def write_2018_with(path: Path, make_x: object) -> Path:
    """A valid small 2018 file whose X is made by ``make_x(handle, x)`` instead of stored in the file."""
    fields = valid_2018_fields()
    with h5py.File(path, "w") as handle:
        make_x(handle, fields["X"])  # type: ignore[operator]
        handle["Y"], handle["Z"] = fields["Y"], fields["Z"]
        handle.attrs["classes"] = NAMES_3  # as `rfml dataset convert` names them
    return path


def test_external_storage_outside_the_file_is_refused_unless_allowed(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "secret.bin"
    outside.parent.mkdir()
    x = valid_2018_fields()["X"]
    outside.write_bytes(x.tobytes())

    def external(handle: h5py.File, x: np.ndarray) -> None:
        handle.create_dataset("X", shape=x.shape, dtype=x.dtype, external=[(str(outside), 0, x.nbytes)])

    path = write_2018_with(tmp_path / "external.hdf5", external)
    refused(lambda: open_2018(path), path, "X", "external storage", str(outside), "allow_external=True")
    refused(lambda: open_2018(path, finite=False), path, "X", str(outside))
    allowed = open_2018(path, allow_external=True)
    assert np.array_equal(allowed.get_batch([0, 5])["x"].numpy(), x[[0, 5]].transpose(0, 2, 1))


def test_a_virtual_dataset_sourcing_another_file_is_refused_unless_allowed(tmp_path: Path) -> None:
    source = write_h5(tmp_path / "source.h5", {"frames": valid_2018_fields()["X"]})

    def virtual(handle: h5py.File, x: np.ndarray) -> None:
        layout = h5py.VirtualLayout(shape=x.shape, dtype=x.dtype)
        layout[:] = h5py.VirtualSource(str(source), "frames", shape=x.shape)
        handle.create_virtual_dataset("X", layout)

    path = write_2018_with(tmp_path / "virtual.hdf5", virtual)
    refused(lambda: open_2018(path), path, "X", "virtual", str(source), "allow_external=True")
    assert open_2018(path, allow_external=True).get_batch([2])["x"].shape == (1, 2, 4)


def test_a_virtual_dataset_sourcing_its_own_file_loads(tmp_path: Path) -> None:
    def virtual(handle: h5py.File, x: np.ndarray) -> None:
        handle["stored"] = x
        layout = h5py.VirtualLayout(shape=x.shape, dtype=x.dtype)
        layout[:] = h5py.VirtualSource(".", "stored", shape=x.shape)
        handle.create_virtual_dataset("X", layout)

    path = write_2018_with(tmp_path / "inside.hdf5", virtual)
    assert (
        open_2018(path).get_batch([1])["x"].numpy().tolist()
        == valid_2018_fields()["X"][[1]].transpose(0, 2, 1).tolist()
    )


def test_an_external_link_to_another_file_is_refused_unless_allowed(tmp_path: Path) -> None:
    source = write_h5(tmp_path / "source.h5", {"frames": valid_2018_fields()["X"]})

    def link(handle: h5py.File, x: np.ndarray) -> None:
        handle["X"] = h5py.ExternalLink(str(source), "frames")

    path = write_2018_with(tmp_path / "linked.hdf5", link)
    refused(lambda: open_2018(path), path, "X", "external link", str(source), "allow_external=True")
    assert len(open_2018(path, allow_external=True)) == 6
    layout = next(check for check in verify(path, dataset="rml2018.01a").checks if check.name == "layout")
    assert layout.status == "fail" and layout.message.startswith(f"{path}: field 'X': is an external link")


def test_the_data_module_passes_allow_external_on(tmp_path: Path) -> None:
    outside = tmp_path / "frames.bin"
    x = valid_2018_fields()["X"]
    outside.write_bytes(x.tobytes())

    def external(handle: h5py.File, x: np.ndarray) -> None:
        handle.create_dataset("X", shape=x.shape, dtype=x.dtype, external=[(str(outside), 0, x.nbytes)])

    path = write_2018_with(tmp_path / "external.hdf5", external)
    common = {"dataset": str(path), "split": "1:1:1", "norm": "none", "class_order": "corrected"}
    with pytest.raises(DatasetFormatError, match="external storage"):
        SignalDataModule(**common).setup()  # type: ignore[arg-type]
    module = SignalDataModule(**common, allow_external=True)  # type: ignore[arg-type]
    module.setup()
    assert module.classes == NAMES_3 and len(module.data) == 6  # type: ignore[arg-type]


# ---- indices --------------------------------------------------------------------------------------------------------


def test_get_batch_refuses_float_indices_instead_of_truncating_them(tmp_path: Path) -> None:
    in_memory = RadioML2016(dump(tmp_path / "ok.pkl", valid_2016_dict()))
    streamed = open_2018(write_h5(tmp_path / "ok.hdf5", valid_2018_fields()))
    for data in (in_memory, streamed):
        for indices in ([1.5, 2.7], np.array([1.0, 2.0]), torch.tensor([True, False])):
            with pytest.raises(ValueError, match="indices must be integers"):
                data.get_batch(indices)
        with pytest.raises(IndexError, match=f"index {2**64 - 1} is out of range"):
            data.get_batch(np.array([0, 2**64 - 1], dtype=np.uint64))
        np.testing.assert_array_equal(data.get_batch(np.array([2, 1], dtype=np.uint8))["y"], data.y[[2, 1]])
