"""Loading dataset files safely: crafted pickles run nothing, malformed files name the file and field.

Also: ``write_dataset`` never leaves a partial file behind and never replaces a good file with a broken one.
"""

from __future__ import annotations

import builtins
import os
import pickle
import pickletools
import re
import shlex
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

import rfml.data.synthetic as synthetic
from rfml.data import (
    DatasetFormatError,
    ISMInterference,
    RadioML2016,
    RadioML2018,
    UnsafePickleError,
    load_array_pickle,
    write_dataset,
)

# ---- helpers ---------------------------------------------------------------------------------------------------


class _Payload:
    """Pickles as ``func(*args)``: what a crafted dataset file would ask the unpickler to call."""

    def __init__(self, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return self.func, self.args


def _os_system(marker: Path) -> _Payload:
    return _Payload(os.system, ("touch " + shlex.quote(str(marker)),))


def _builtins_exec(marker: Path) -> _Payload:
    return _Payload(builtins.exec, (f"open({str(marker)!r}, 'w').close()",))


def _subprocess_call(marker: Path) -> _Payload:
    return _Payload(subprocess.call, (["touch", str(marker)],))


# (payload maker, the global the pickle names; protocol 2 writes builtins as Python 2's __builtin__)
PAYLOADS = [
    pytest.param(_os_system, (f"{os.system.__module__}.system",), id="os.system"),
    pytest.param(_builtins_exec, ("builtins.exec", "__builtin__.exec"), id="builtins.exec"),
    pytest.param(_subprocess_call, ("subprocess.call", "commands.call"), id="subprocess.call"),
]


def names_global(message: str, spellings: tuple[str, ...]) -> bool:
    return any(f"refused to load {name};" in message for name in spellings)


def dump(path: Path, obj: object, protocol: int = 4) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def frames(n: int = 3, length: int = 8, seed: int = 0, dtype: type = np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 2, length)).astype(dtype)


def valid_2016_dict(length: int = 8) -> dict[tuple[str, int], np.ndarray]:
    return {
        ("BPSK", 0): frames(3, length, 1),
        ("QPSK", 0): frames(3, length, 2),
        ("BPSK", 10): frames(3, length, 3),
    }


def ism_arrays(classes: int = 15, snrs: int = 21, vectors: int = 2, samples: int = 4) -> tuple[np.ndarray, np.ndarray]:
    data = np.random.default_rng(0).standard_normal((classes, snrs, vectors, samples, 2))
    labels = np.broadcast_to(np.arange(classes)[:, None, None] % 15, (classes, snrs, vectors)).copy()
    return data, labels


def write_h5(path: Path, fields: dict[str, np.ndarray | None]) -> Path:
    with h5py.File(path, "w") as handle:
        for name, value in fields.items():
            if value is None:
                handle.create_group(name)
            else:
                handle[name] = value
    return path


def valid_2018_fields(rows: int = 6, length: int = 4, classes: int = 3) -> dict[str, np.ndarray | None]:
    x = np.random.default_rng(0).standard_normal((rows, length, 2)).astype(np.float32)
    y = np.zeros((rows, classes), dtype=np.int64)
    y[np.arange(rows), np.arange(rows) % classes] = 1
    z = np.full((rows, 1), 4, dtype=np.int64)
    return {"X": x, "Y": y, "Z": z}


NAMES_3 = ["a", "b", "c"]


# Python-2 pickle opcodes, written out so the test holds a pickle as Python 2 and numpy 1 wrote it.
def _py2_str(text: bytes) -> bytes:
    return b"U" + bytes([len(text)]) + text  # SHORT_BINSTRING: a Python-2 8-bit str


def _py2_int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)  # BININT


def _py2_float32_array(array: np.ndarray) -> bytes:
    raw = array.astype("<f4").tobytes()
    out = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _py2_int(0) + b"\x85" + _py2_str(b"b") + b"\x87R"
    out += b"(" + _py2_int(1) + b"(" + b"".join(_py2_int(d) for d in array.shape) + b"t"
    out += b"cnumpy\ndtype\n" + _py2_str(b"f4") + _py2_int(0) + _py2_int(1) + b"\x87R"
    out += b"(" + _py2_int(3) + _py2_str(b"<") + b"NNN" + _py2_int(-1) + _py2_int(-1) + _py2_int(0) + b"tb"
    return out + b"\x89T" + struct.pack("<i", len(raw)) + raw + b"tb"  # NEWFALSE, BINSTRING data, TUPLE, BUILD


def python2_dict_pickle(data: dict[tuple[str, int], np.ndarray]) -> bytes:
    out = b"\x80\x02}("
    for (name, snr), array in data.items():
        out += _py2_str(name.encode()) + _py2_int(snr) + b"\x86" + _py2_float32_array(array)
    return out + b"u."


def assert_same_arrays(loaded: object, original: dict[Any, np.ndarray]) -> None:
    assert isinstance(loaded, dict)
    assert list(loaded) == list(original)
    for key, value in original.items():
        assert isinstance(loaded[key], np.ndarray)
        assert loaded[key].dtype == value.dtype
        np.testing.assert_array_equal(loaded[key], value)


# ---- crafted pickles run nothing ---------------------------------------------------------------------------------


def test_the_payloads_are_armed_for_a_plain_unpickler(tmp_path: Path) -> None:
    # Control: the same kind of pickle does run code under pickle.loads, so the refusals below mean something.
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_builtins_exec(marker)))
    assert marker.exists()


@pytest.mark.parametrize(("make", "global_name"), PAYLOADS)
def test_crafted_pickle_runs_nothing_and_names_the_global(
    tmp_path: Path, make: Callable[[Path], _Payload], global_name: tuple[str, ...]
) -> None:
    marker = tmp_path / "pwned"
    path = dump(tmp_path / "evil.pkl", make(marker))
    with pytest.raises(UnsafePickleError) as info:
        load_array_pickle(path)
    assert names_global(str(info.value), global_name)
    assert str(path) in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize(("make", "global_name"), PAYLOADS)
def test_radioml2016_refuses_a_payload_hidden_among_real_arrays(
    tmp_path: Path, make: Callable[[Path], _Payload], global_name: tuple[str, ...]
) -> None:
    marker = tmp_path / "pwned"
    data: dict[tuple[str, int], object] = dict(valid_2016_dict())
    data[("QPSK", 10)] = make(marker)
    path = dump(tmp_path / "RML2016.10a_dict.pkl", data, protocol=2)
    with pytest.raises(UnsafePickleError) as info:
        RadioML2016(path)
    assert names_global(str(info.value), global_name)
    assert str(path) in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("evil_file", ["data_iq.p", "labels.p"])
@pytest.mark.parametrize(("make", "global_name"), PAYLOADS)
def test_ism_refuses_a_payload_in_either_pickle(
    tmp_path: Path, make: Callable[[Path], _Payload], global_name: tuple[str, ...], evil_file: str
) -> None:
    marker = tmp_path / "pwned"
    data, labels = ism_arrays()
    dump(tmp_path / "data_iq.p", data)
    dump(tmp_path / "labels.p", labels)
    dump(tmp_path / evil_file, [make(marker)])
    with pytest.raises(UnsafePickleError) as info:
        ISMInterference(tmp_path)
    assert names_global(str(info.value), global_name)
    assert str(tmp_path / evil_file) in str(info.value)
    assert not marker.exists()


def test_persistent_id_reference_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "persid.pkl"
    path.write_bytes(b"\x80\x02Psome-object\n.")
    with pytest.raises(UnsafePickleError, match="persistent-id"):
        load_array_pickle(path)


# ---- real pickles load ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_dict_of_float32_arrays_round_trips_in_protocol(tmp_path: Path, protocol: int) -> None:
    original = {("BPSK", -20): frames(2, 8, 1), ("QAM16", 18): frames(3, 8, 2), ("AM-DSB", 0): frames(1, 8, 3)}
    path = dump(tmp_path / "d.pkl", original, protocol=protocol)
    globals_used = {arg for op, arg, _ in pickletools.genops(path.read_bytes()) if op.name == "GLOBAL"}
    if protocol == 2:
        assert "_codecs encode" in globals_used  # Python 3 writes protocol-2 bytes through _codecs.encode
    assert_same_arrays(load_array_pickle(path), original)


def test_python2_numpy1_pickle_loads_like_the_published_file(tmp_path: Path) -> None:
    original = {("BPSK", -2): frames(3, 4, 5), ("WBFM", 18): frames(2, 4, 6)}
    path = tmp_path / "RML2016.10a_dict.pkl"
    path.write_bytes(python2_dict_pickle(original))
    assert_same_arrays(load_array_pickle(path), original)
    ds = RadioML2016(path)
    assert ds.classes == ["BPSK", "WBFM"] and ds.snrs == [-2, 18]
    np.testing.assert_array_equal(ds.x.numpy(), np.concatenate([original[("BPSK", -2)], original[("WBFM", 18)]]))


def test_numpy_scalars_and_plain_containers_load(tmp_path: Path) -> None:
    original = {"scale": np.float64(2.5), "count": np.int64(-3), "names": ["a", "b"], "pair": (1, 2.0), "none": None}
    loaded = load_array_pickle(dump(tmp_path / "s.pkl", original, protocol=2))
    assert loaded == original
    assert type(loaded["scale"]) is np.float64 and type(loaded["count"]) is np.int64


@pytest.mark.parametrize("encoding", ["rot13", "zlib_codec"])
def test_codecs_encode_with_another_codec_is_refused(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "codec.pkl"
    text, codec = b"abc", encoding.encode()
    path.write_bytes(
        b"\x80\x02c_codecs\nencode\nX"
        + struct.pack("<I", len(text))
        + text
        + b"X"
        + struct.pack("<I", len(codec))
        + codec
        + b"\x86R."
    )
    with pytest.raises(UnsafePickleError, match=encoding):
        load_array_pickle(path)


@pytest.mark.parametrize("wrap", [lambda a: a, lambda a: {("BPSK", 0): a}], ids=["top-level", "dict-value"])
def test_object_arrays_are_refused(tmp_path: Path, wrap: Callable[[np.ndarray], object]) -> None:
    path = dump(tmp_path / "obj.pkl", wrap(np.array([1, "two", 3.0], dtype=object)))
    with pytest.raises(UnsafePickleError, match="object array") as info:
        load_array_pickle(path)
    assert str(path) in str(info.value)


def test_truncated_and_non_pickle_files_raise_value_error_naming_the_path(tmp_path: Path) -> None:
    whole = pickle.dumps(valid_2016_dict(), protocol=4)
    truncated = tmp_path / "half.pkl"
    truncated.write_bytes(whole[: len(whole) // 2])
    text = tmp_path / "notes.txt"
    text.write_text("this is not a pickle\n")
    for path in (truncated, text):
        with pytest.raises(ValueError, match="not a readable pickle") as info:
            load_array_pickle(path)
        assert str(path) in str(info.value)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_array_pickle(tmp_path / "missing.pkl")


# ---- RadioML 2016 layout errors ---------------------------------------------------------------------------------


def _expect_2016_error(path: Path, field: str) -> DatasetFormatError:
    with pytest.raises(DatasetFormatError) as info:
        RadioML2016(path)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.path == str(path) and err.field == field
    assert str(err).startswith(f"{path}: field {field!r}: ")
    return err


def test_radioml2016_names_the_key_with_a_float64_value(tmp_path: Path) -> None:
    data = valid_2016_dict()
    data[("QPSK", 0)] = data[("QPSK", 0)].astype(np.float64)
    err = _expect_2016_error(dump(tmp_path / "d.pkl", data), "key ('QPSK', 0)")
    assert "float64" in str(err)


def test_radioml2016_names_the_key_with_three_rows_per_frame(tmp_path: Path) -> None:
    data = valid_2016_dict()
    data[("BPSK", 10)] = np.zeros((3, 3, 8), dtype=np.float32)
    err = _expect_2016_error(dump(tmp_path / "d.pkl", data), "key ('BPSK', 10)")
    assert "(3, 3, 8)" in str(err)


def test_radioml2016_names_the_first_offending_key_in_file_order(tmp_path: Path) -> None:
    data = {
        ("QPSK", 0): frames(),
        ("BPSK", 4): frames(dtype=np.float64),  # first bad one in file order
        ("AM-DSB", 0): np.zeros((3, 3, 8), np.float32),  # sorts first, but comes later in the file
    }
    _expect_2016_error(dump(tmp_path / "d.pkl", data), "key ('BPSK', 4)")


@pytest.mark.parametrize(
    "bad_key", ["BPSK", ("BPSK",), ("BPSK", 2.0), ("BPSK", True), (2, "BPSK"), ("BPSK", 2, 0)], ids=repr
)
def test_radioml2016_names_a_key_that_is_not_a_name_snr_pair(tmp_path: Path, bad_key: object) -> None:
    data: dict[object, np.ndarray] = dict(valid_2016_dict())
    data[bad_key] = frames()
    err = _expect_2016_error(dump(tmp_path / "d.pkl", data), f"key {bad_key!r}")
    assert "(modulation name: str, SNR in dB: int)" in str(err)


def test_radioml2016_names_the_key_whose_frame_length_differs(tmp_path: Path) -> None:
    data = {("BPSK", 0): frames(3, 8), ("QPSK", 0): frames(3, 16), ("BPSK", 2): frames(3, 8)}
    err = _expect_2016_error(dump(tmp_path / "d.pkl", data), "key ('QPSK', 0)")
    assert "8 samples" in str(err) and "(3, 2, 16)" in str(err)


@pytest.mark.parametrize("top", [[frames()], {}, frames()], ids=["list", "empty-dict", "bare-array"])
def test_radioml2016_refuses_a_top_level_that_is_not_a_non_empty_dict(tmp_path: Path, top: object) -> None:
    err = _expect_2016_error(dump(tmp_path / "d.pkl", top), "<top level>")
    assert type(top).__name__ in str(err)


def test_radioml2016_names_a_non_array_value(tmp_path: Path) -> None:
    data: dict[tuple[str, int], object] = dict(valid_2016_dict())
    data[("QPSK", 0)] = [[1.0, 2.0]]
    err = _expect_2016_error(dump(tmp_path / "d.pkl", data), "key ('QPSK', 0)")
    assert "numpy array" in str(err)


def test_radioml2016_truncated_file_is_a_value_error_naming_the_path(tmp_path: Path) -> None:
    whole = pickle.dumps(valid_2016_dict(), protocol=2)
    path = tmp_path / "RML2016.10a_dict.pkl"
    path.write_bytes(whole[: len(whole) * 2 // 3])
    with pytest.raises(ValueError, match="truncated") as info:
        RadioML2016(path)
    assert str(path) in str(info.value)


# ---- RadioML 2018 layout errors ---------------------------------------------------------------------------------


def _expect_2018_error(path: Path, field: str, class_order: object = NAMES_3) -> DatasetFormatError:
    with pytest.raises(DatasetFormatError) as info:
        RadioML2018(path, class_order=class_order)  # type: ignore[arg-type]
    err = info.value
    assert err.path == str(path) and err.field == field
    assert str(err).startswith(f"{path}: field {field!r}: ")
    return err


def test_radioml2018_valid_small_file_opens(tmp_path: Path) -> None:
    # Control for the error cases below: the unaltered fields are accepted.
    fields = valid_2018_fields()
    ds = RadioML2018(write_h5(tmp_path / "ok.hdf5", fields), class_order=NAMES_3)
    assert len(ds) == 6 and ds.length == 4 and ds.y.tolist() == [0, 1, 2, 0, 1, 2] and ds.snrs == [4]


def test_radioml2018_truncated_file_names_path_and_superblock(tmp_path: Path) -> None:
    good = write_h5(tmp_path / "good.hdf5", valid_2018_fields(rows=64, length=32))
    raw = good.read_bytes()
    path = tmp_path / "GOLD_XYZ_OSC.0001_1024.hdf5"
    path.write_bytes(raw[: len(raw) // 2])
    err = _expect_2018_error(path, "<HDF5 superblock>")
    assert "truncated" in str(err) and f"holds {len(raw) // 2} bytes" in str(err) and str(len(raw)) in str(err)


def test_radioml2018_non_hdf5_file_names_the_superblock(tmp_path: Path) -> None:
    path = tmp_path / "fake.hdf5"
    path.write_bytes(b"not an HDF5 file" * 64)
    err = _expect_2018_error(path, "<HDF5 superblock>")
    assert "not a readable HDF5 file" in str(err)


def test_radioml2018_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        RadioML2018(tmp_path / "absent.hdf5")


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (lambda f: f.update(X=f["X"].astype(np.float64)), "X", "float64"),
        (lambda f: f.update(X=np.zeros((6, 4, 3), np.float32)), "X", "(6, 4, 3)"),
        (lambda f: f.update(X=np.zeros((6, 8), np.float32)), "X", "(6, 8)"),
        (lambda f: f.update(X=None), "X", "group"),
        (lambda f: f.pop("Y"), "Y", "missing"),
        (lambda f: f.update(Y=f["Y"][:5]), "Y", "(5, 3)"),
        (lambda f: f.update(Y=f["Y"].astype("S1")), "Y", "numeric"),
        (lambda f: f.pop("Z"), "Z", "missing; the file has ['X', 'Y']"),
        (lambda f: f.update(Z=np.zeros((6, 2), np.int64)), "Z", "(6, 2)"),
        (lambda f: f.update(Z=np.zeros((5, 1), np.int64)), "Z", "(5, 1)"),
        (lambda f: f.update(Z=np.zeros((6, 1), np.float32)), "Z", "float32"),
    ],
    ids=[
        "X-float64",
        "X-three-channels",
        "X-2d",
        "X-group",
        "Y-missing",
        "Y-rows",
        "Y-bytes",
        "Z-missing",
        "Z-two-columns",
        "Z-rows",
        "Z-float",
    ],
)
def test_radioml2018_names_the_bad_field(
    tmp_path: Path, change: Callable[[dict[str, Any]], object], field: str, words: str
) -> None:
    fields = valid_2018_fields()
    change(fields)
    err = _expect_2018_error(write_h5(tmp_path / "bad.hdf5", fields), field)
    assert words in str(err)


@pytest.mark.parametrize(
    ("row", "value"), [(4, [1, 1, 0]), (2, [0, 0, 0]), (5, [0, 2, 0]), (3, [0.5, 0.5, 0.0])], ids=str
)
def test_radioml2018_names_the_first_row_that_is_not_one_hot(tmp_path: Path, row: int, value: list[float]) -> None:
    fields = valid_2018_fields()
    y = fields["Y"].astype(np.float64)
    y[row] = value
    fields["Y"] = y
    err = _expect_2018_error(write_h5(tmp_path / "bad.hdf5", fields), "Y")
    assert f"row {row} is not one-hot" in str(err)


def test_radioml2018_class_order_of_the_wrong_length_names_y(tmp_path: Path) -> None:
    path = write_h5(tmp_path / "ok.hdf5", valid_2018_fields())
    err = _expect_2018_error(path, "Y", class_order=["a", "b"])
    assert "3 one-hot columns" in str(err) and "2 classes" in str(err)
    # The default (24 RadioML 2018 classes) does not fit 3 columns either.
    _expect_2018_error(path, "Y", class_order="corrected")


# ---- ISM layout errors -------------------------------------------------------------------------------------------


def _ism_folder(tmp_path: Path, data: object, labels: object) -> Path:
    dump(tmp_path / "data_iq.p", data)
    dump(tmp_path / "labels.p", labels)
    return tmp_path


def test_ism_with_14_classes_names_data_iq(tmp_path: Path) -> None:
    data, labels = ism_arrays(classes=14)
    with pytest.raises(DatasetFormatError) as info:
        ISMInterference(_ism_folder(tmp_path, data, labels))
    assert info.value.path == str(tmp_path / "data_iq.p") and info.value.field == "data_iq"
    assert "axis 0 (class) has 14 entries, expected 15" in str(info.value) and "(14, 21, 2, 4, 2)" in str(info.value)


@pytest.mark.parametrize(
    ("make_data", "words"),
    [
        (lambda d: d[..., :1], "(15, 21, 2, 4, 1)"),
        (lambda d: d[:, :20], "(15, 20, 2, 4, 2)"),
        (lambda d: d.astype(np.int32), "float array"),
        (lambda d: d.tolist(), "numpy array"),
    ],
    ids=["one-channel", "20-snrs", "int-data", "list"],
)
def test_ism_names_data_iq_for_other_bad_layouts(
    tmp_path: Path, make_data: Callable[[np.ndarray], object], words: str
) -> None:
    data, labels = ism_arrays()
    with pytest.raises(DatasetFormatError) as info:
        ISMInterference(_ism_folder(tmp_path, make_data(data), labels))
    assert info.value.field == "data_iq" and str(tmp_path / "data_iq.p") in str(info.value)
    assert words in str(info.value)


@pytest.mark.parametrize(
    ("make_labels", "words"),
    [
        (lambda lab: lab[:, :, :1], "expected shape (15, 21, 2) to match data_iq, got (15, 21, 1)"),
        (lambda lab: lab.reshape(-1), "got (630,)"),
        (lambda lab: lab + 1, "got 1..15"),
        (lambda lab: lab.astype(np.float64), "integer array"),
    ],
    ids=["vectors", "flat", "class-15", "float"],
)
def test_ism_names_labels_for_bad_labels(
    tmp_path: Path, make_labels: Callable[[np.ndarray], np.ndarray], words: str
) -> None:
    data, labels = ism_arrays()
    with pytest.raises(DatasetFormatError) as info:
        ISMInterference(_ism_folder(tmp_path, data, make_labels(labels)))
    assert info.value.path == str(tmp_path / "labels.p") and info.value.field == "labels"
    assert words in str(info.value)


def test_ism_without_labels_is_file_not_found(tmp_path: Path) -> None:
    data, _ = ism_arrays()
    dump(tmp_path / "data_iq.p", data)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "labels.p"))):
        ISMInterference(tmp_path)


# ---- atomic writing ----------------------------------------------------------------------------------------------


def _fail_on_call(monkeypatch: pytest.MonkeyPatch, failing_call: int, seen: list[list[str]], folder: Path) -> None:
    real = synthetic._generate_rows
    calls = [0]

    def flaky(start: int, stop: int, job: Any) -> Any:
        calls[0] += 1
        if calls[0] == failing_call:
            seen.append(sorted(p.name for p in folder.iterdir()))
            raise RuntimeError("generator died midway")
        return real(start, stop, job)

    monkeypatch.setattr(synthetic, "_generate_rows", flaky)


@pytest.mark.parametrize(
    ("preset", "file_name", "failing_call"),
    # a folder receives the synthetic name, never the real download's
    [("rml2016.10a", "RML2016.10a_dict.synthetic.pkl", 3), ("rml2018.01a", "GOLD_XYZ_OSC.0001_1024.synthetic.hdf5", 1)],
)
def test_failed_generation_leaves_no_partial_file_and_no_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, preset: str, file_name: str, failing_call: int
) -> None:
    seen: list[list[str]] = []
    _fail_on_call(monkeypatch, failing_call, seen, tmp_path)
    with pytest.raises(RuntimeError, match="generator died midway"):
        write_dataset(preset, tmp_path, per_key=2, seed=0, workers=1, progress=False)
    # While generating, the rows went to a hidden partial file, not to the target name ...
    assert seen == [[f".{file_name}.{os.getpid()}.partial"]]
    # ... which is gone after the failure.
    assert list(tmp_path.iterdir()) == []


def test_failed_generation_keeps_an_existing_output_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "RML2016.10a_dict.pkl"
    target.write_bytes(b"previous, complete dataset")
    before = target.stat().st_mtime_ns
    seen: list[list[str]] = []
    _fail_on_call(monkeypatch, 2, seen, tmp_path)
    with pytest.raises(RuntimeError, match="generator died midway"):
        write_dataset("rml2016.10a", target, per_key=2, seed=0, workers=1, progress=False)
    assert seen == [sorted([f".{target.name}.{os.getpid()}.partial", target.name])]
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    assert target.read_bytes() == b"previous, complete dataset"
    assert target.stat().st_mtime_ns == before


def test_write_dataset_rejects_bad_arguments_without_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="per_key must be >= 1"):
        write_dataset("rml2016.10a", tmp_path, per_key=0, progress=False)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        write_dataset("rml2016.10a", tmp_path, per_key=1, workers=0, progress=False)
    with pytest.raises(ValueError, match="unknown dataset preset 'rml2099'"):
        write_dataset("rml2099", tmp_path, per_key=1, progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_dataset("rml2016.10a", tmp_path / "no" / "such" / "dir" / "x.pkl", per_key=1, progress=False)
    assert list(tmp_path.iterdir()) == []
