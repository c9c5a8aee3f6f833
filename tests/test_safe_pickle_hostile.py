"""Hostile dataset pickles: forged dtypes, deep nesting and allocation bombs end in our error, never a signal.

The crafted files are written opcode by opcode (the pickler would refuse to write most of them). Payloads that
crash the interpreter on a reader without these checks (a forged object-field dtype, a tuple nested 10**6 deep,
gigabyte allocations) are loaded in a child process, so a crash is seen from outside as a negative return code.
"""

from __future__ import annotations

import json
import pickle
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rfml.data import DatasetFormatError, RadioML2016, UnsafePickleError, load_array_pickle, safe_pickle

# ---- writing pickles by hand ---------------------------------------------------------------------------------------

RECONSTRUCT = ("numpy._core.multiarray", "_reconstruct")


def glob(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()  # GLOBAL


def text(value: str) -> bytes:
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE


def i32(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)  # BININT


def raw(data: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(data)) + data  # BINBYTES


def tup(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"  # MARK ... TUPLE


def dtype_op(
    name: str,
    *,
    version: int = 3,
    order: str = "|",
    subarray: bytes = b"N",
    names: bytes = b"N",
    fields: bytes = b"N",
    elsize: int = -1,
    alignment: int = -1,
    flags: int = 0,
    extra: bytes = b"",
) -> bytes:
    """``numpy.dtype(name, False, True)`` followed by BUILD with the given ``__setstate__`` tuple."""
    state = tup(i32(version), text(order), subarray, names, fields, i32(elsize), i32(alignment), i32(flags), extra)
    return glob("numpy", "dtype") + text(name) + b"\x89\x88\x87R" + state + b"b"


def array_op(shape: tuple[int, ...], dtype: bytes, data: bytes, *, fortran: bytes = b"\x89") -> bytes:
    """``_reconstruct(ndarray, (0,), b'b')`` followed by BUILD with ``(1, shape, dtype, is_fortran, data)``."""
    head = glob(*RECONSTRUCT) + glob("numpy", "ndarray") + b"K\x00\x85C\x01b\x87R"
    return head + tup(i32(1), tup(*map(i32, shape)), dtype, fortran, data) + b"b"


OBJECT_DTYPE = dtype_op("O8", flags=63)  # what numpy writes for dtype('O')


def object_field_dtype(flags: int) -> bytes:
    # The state numpy writes for dtype([('a', 'O')]), with the flags a forger chooses.
    fields = b"}" + text("a") + OBJECT_DTYPE + i32(0) + b"\x86s"
    return dtype_op("V8", names=tup(text("a")), fields=fields, elsize=8, alignment=1, flags=flags)


def pickle_of(body: bytes, protocol: int = 3) -> bytes:
    return bytes([0x80, protocol]) + body + b"."


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def expect_refusal(path: Path, *words: str, kind: type[Exception] = UnsafePickleError) -> DatasetFormatError:
    with pytest.raises(kind) as info:
        load_array_pickle(path)
    err = info.value
    assert isinstance(err, DatasetFormatError)  # one line and exit code 2 in the commands
    assert err.path == str(path)
    assert str(err).startswith(f"{path}: field {err.field!r}: ")
    for word in words:
        assert word in str(err), (word, str(err))
    return err


# ---- crashes seen from outside -------------------------------------------------------------------------------------

# Loads the file; prints our error's class and message, or reads every field of what loaded (which is where a
# forged dtype dereferences the bytes of the file as pointers).
PROBE = """
import sys
from rfml.data import DatasetFormatError, load_array_pickle
try:
    loaded = load_array_pickle(sys.argv[1])
except DatasetFormatError as err:
    print(type(err).__name__)
    print(err)
    del err
    sys.exit(0)
print("LOADED", type(loaded).__name__)
for name in getattr(getattr(loaded, "dtype", None), "names", None) or ():
    print(repr(loaded[name]))
"""

CRASHERS = {
    # hasobject is False, so an object-array check passes; reading field 'a' follows 0x4141414141414141
    "object-field-flags-0": (
        array_op((1,), object_field_dtype(0), raw(b"A" * 8)),
        "refused numpy.dtype('V8', False, True)",
    ),
    # hasobject is True and the array is refused, but freeing it decrefs the forged pointer
    "object-field-flags-1": (
        array_op((1,), object_field_dtype(1), raw(b"A" * 8)),
        "refused numpy.dtype('V8', False, True)",
    ),
    "field-offset-past-itemsize": (
        array_op(
            (1,),
            dtype_op(
                "V8",
                names=tup(text("a")),
                fields=b"}" + text("a") + dtype_op("f8", order="<") + i32(1 << 20) + b"\x86s",
                elsize=8,
                alignment=1,
            ),
            raw(b"A" * 8),
        ),
        "refused numpy.dtype('V8', False, True)",
    ),
    # an admitted name, 'f8', whose BUILD state gives it a field 1 MiB past its 8 bytes
    "f8-state-with-far-field": (
        array_op(
            (1,),
            dtype_op(
                "f8",
                order="<",
                names=tup(text("a")),
                fields=b"}" + text("a") + dtype_op("f8", order="<") + i32(1 << 20) + b"\x86s",
                elsize=8,
                alignment=1,
            ),
            raw(b"A" * 8),
        ),
        "refused the state of numpy.dtype('f8'): names is ('a',), expected None",
    ),
    # {((((...(),),...),): 1}: hashing the key recurses once per level in C
    "tuple-key-nested-10**6-deep": (b"}" + b")" + b"\x85" * 10**6 + b"K\x01s", "nesting deeper than 32 levels"),
}


@pytest.mark.parametrize("name", list(CRASHERS))
def test_crafted_pickle_ends_in_our_error_in_a_child_process_not_a_signal(tmp_path: Path, name: str) -> None:
    body, words = CRASHERS[name]
    path = write(tmp_path / "crafted.pkl", pickle_of(body))
    if name.startswith(("object", "field", "f8")):
        assert len(path.read_bytes()) < 300  # small files, like the 292-byte one of the report
    child = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert child.returncode >= 0, f"killed by signal {-child.returncode}: {child.stdout}{child.stderr}"
    assert child.returncode == 0, child.stderr
    lines = child.stdout.splitlines()
    assert lines[0] == "UnsafePickleError", child.stdout
    assert lines[1].startswith(f"{path}: field ") and words in lines[1], lines[1]


BOMB_PROBE = """
import json, resource, sys
from rfml.data import DatasetFormatError, load_array_pickle
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
outcome = {}
for path in sys.argv[1:]:
    try:
        loaded = load_array_pickle(path)
        outcome[path] = "LOADED " + type(loaded).__name__
        del loaded
    except DatasetFormatError as err:
        outcome[path] = type(err).__name__ + ": " + str(err)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"outcome": outcome, "grew_kib": after - before}))
"""

GIB = 1 << 30
BOMBS = {
    # bytes(1 << 30): a gigabyte of zeros from 27 bytes
    "bytes.pkl": (glob("__builtin__", "bytes") + i32(GIB) + b"\x85R", "refused builtins.bytes(1073741824)"),
    # a uint8 array of 1 GiB whose data is bytes(1 << 30), the protocol-2 spelling of an empty array's data
    "array.pkl": (
        array_op((GIB,), dtype_op("u1"), glob("__builtin__", "bytes") + i32(GIB) + b"\x85R"),
        "refused builtins.bytes(1073741824)",
    ),
    # LONG_BINPUT 2**26: the C unpickler grows its memo table to twice the index (1 GiB of pointers)
    "memo.pkl": (b"Nr" + struct.pack("<I", 1 << 26), "memo index 67108864"),
}


def test_tiny_allocation_bombs_are_refused_before_allocating(tmp_path: Path) -> None:
    paths = {name: write(tmp_path / name, pickle_of(body, protocol=2)) for name, (body, _) in BOMBS.items()}
    assert all(len(path.read_bytes()) < 200 for path in paths.values())
    child = subprocess.run(
        [sys.executable, "-c", BOMB_PROBE, *map(str, paths.values())],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout)
    for name, (_, words) in BOMBS.items():
        outcome = report["outcome"][str(paths[name])]
        assert outcome.startswith(f"UnsafePickleError: {paths[name]}: field "), outcome
        assert words in outcome, outcome
    assert report["grew_kib"] < 100 * 1024  # the peak grew by less than 100 MiB: nothing near 1 GiB was made


# ---- refusals in this process (safe once the reader is fixed) -------------------------------------------------------


def test_ndarray_called_with_a_shape_and_no_data_is_refused(tmp_path: Path) -> None:
    # numpy.ndarray((16,)) makes 16 float64 of whatever the heap held
    path = write(tmp_path / "uninit.pkl", pickle_of(glob("numpy", "ndarray") + tup(tup(i32(16))) + b"R"))
    expect_refusal(path, "refused numpy.ndarray((16,))", "uninitialised memory")


def _deep_memo_list_chain(levels: int) -> bytes:
    # lists 0..levels made and memoized first, then list k appended into list k-1 through the memo: each list is
    # empty when it is nested, so only the finished object shows the depth
    made = b"".join(b"]r" + struct.pack("<I", k) + b"0" for k in range(levels))
    links = b"".join(b"j" + struct.pack("<I", k - 1) + b"j" + struct.pack("<I", k) + b"a0" for k in range(1, levels))
    return made + links + b"j" + struct.pack("<I", 0)


DEEP = {
    # 10**5 levels: without a bound the dict key is a RecursionError while hashing; the others load, and break
    # whatever recurses over them later (repr, ==)
    "tuple1-dict-key": b"}" + b")" + b"\x85" * 10**5 + b"K\x01s",
    "mark-tuples": b"(" * 10**5 + b"t" * 10**5,
    "appended-lists": b"]" * 10**5 + b"a" * (10**5 - 1),
}


@pytest.mark.parametrize("name", list(DEEP))
def test_deep_nesting_is_refused_while_reading_the_opcodes(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / "deep.pkl", pickle_of(DEEP[name]))
    err = expect_refusal(path, "nesting deeper than 32 levels", "at byte ")
    assert err.field == "pickle stream"


def test_depth_reached_through_the_memo_is_refused_after_loading(tmp_path: Path) -> None:
    path = write(tmp_path / "chain.pkl", pickle_of(_deep_memo_list_chain(2000)))
    expect_refusal(path, "nested deeper than 32 levels")


def test_depth_bound_is_a_keyword(tmp_path: Path) -> None:
    nested = write(tmp_path / "five.pkl", pickle_of(b")" + b"\x85" * 4))  # (((((),),),),): 5 levels
    assert load_array_pickle(nested, max_depth=5) == (((((),),),),)
    with pytest.raises(UnsafePickleError, match="nesting deeper than 4 levels"):
        load_array_pickle(nested, max_depth=4)


def test_a_key_that_shares_one_tuple_on_every_level_is_refused_before_hashing(tmp_path: Path) -> None:
    # t = (); then 24 times t = (t, t) by DUP and TUPLE2: 24 levels deep, 2**25 objects for a hash of {t: 1}
    path = write(tmp_path / "diamond.pkl", pickle_of(b"}" + b")" + b"2\x86" * 24 + b"K\x01s"))
    assert path.stat().st_size < 100
    words = "more than the 1048632 a file of 56 bytes may ask for"  # 2**20 plus the file's size
    expect_refusal(path, "hashing its dict keys and set members would visit at least", words, "(SETITEM)")


def test_a_container_that_contains_itself_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "cycle.pkl", pickle_of(b"]q\x00h\x00a"))  # L = []; L.append(L)
    expect_refusal(path, "contains itself")


def test_a_memo_index_far_past_the_stored_entries_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "memo.pkl", pickle_of(b"Nr" + struct.pack("<I", 1 << 20)))
    expect_refusal(path, "memo index 1048576", "LONG_BINPUT")


def test_a_bytes_object_reused_as_the_data_of_many_arrays_is_refused(tmp_path: Path) -> None:
    # 64 KiB of data in the file, memoized once and used as the data of 64 arrays: 4 MiB from a file of 72 KB
    data = raw(b"\x01" * 65536) + b"r" + struct.pack("<I", 0) + b"0"
    reuse = array_op((65536,), dtype_op("u1"), b"j" + struct.pack("<I", 0))
    path = write(tmp_path / "reuse.pkl", pickle_of(data + b"(" + reuse * 64 + b"l"))
    expect_refusal(path, "more than the", f"{path.stat().st_size} bytes of the file")


def test_one_text_encoded_many_times_is_refused(tmp_path: Path) -> None:
    # Python 3 writes protocol-2 bytes as _codecs.encode(text, 'latin1'); one memoized text encoded 64 times
    memo_text = text("x" * 65536) + b"r" + struct.pack("<I", 0) + b"0"
    encode = glob("_codecs", "encode") + b"j" + struct.pack("<I", 0) + text("latin1") + b"\x86R"
    path = write(tmp_path / "encode.pkl", pickle_of(memo_text + b"(" + encode * 64 + b"l", protocol=2))
    expect_refusal(path, "_codecs.encode", f"{path.stat().st_size} bytes of the file")


@pytest.mark.parametrize(
    "body",
    [b"(S'true'\nios\nsystem\n", b"(cos\nsystem\nS'true'\no"],  # protocol 0: INST, and OBJ with the class
    ids=["INST", "OBJ"],
)
def test_instance_opcodes_still_name_the_refused_global(tmp_path: Path, body: bytes) -> None:
    # A control (these were refused before too): the opcode scan lets INST and OBJ through to the global lookup,
    # so the message names the callable rather than the opcode.
    path = write(tmp_path / "inst.pkl", body + b".")
    err = expect_refusal(path, "refused to load os.system;")
    assert err.field == "pickle global"


def test_out_of_band_buffers_are_refused(tmp_path: Path) -> None:
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(np.arange(4, dtype=np.float32), protocol=5, buffer_callback=buffers.append)
    assert buffers  # the stream holds NEXT_BUFFER, and the data is elsewhere
    expect_refusal(write(tmp_path / "oob.pkl", data), "out-of-band", "NEXT_BUFFER")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (glob("numpy", "dtype"), "numpy.dtype itself"),
        (glob(*RECONSTRUCT) + glob("numpy", "ndarray") + b"K\x00\x85C\x01b\x87R", "no BUILD state"),
    ],
    ids=["bare-global", "array-without-state"],
)
def test_a_result_that_is_not_data_is_refused(tmp_path: Path, body: bytes, words: str) -> None:
    expect_refusal(write(tmp_path / "odd.pkl", pickle_of(body)), words)


F8 = dtype_op("f8", order="<")

FORGED_STATES = {
    "version-2": (dtype_op("f8", version=2, order="<"), "version is 2, expected 3"),
    "byteorder-x": (dtype_op("f8", order="x"), "byteorder is 'x', expected one of"),
    "subarray": (dtype_op("f8", order="<", subarray=tup(F8, tup(i32(1)))), "subarray is"),
    "names": (dtype_op("f8", order="<", names=tup(text("a"))), "names is ('a',), expected None"),
    "elsize": (dtype_op("f8", order="<", elsize=16), "elsize is 16, expected -1"),
    "alignment": (dtype_op("f8", order="<", alignment=16), "alignment is 16, expected -1"),
    "metadata": (dtype_op("f8", version=4, order="<", extra=b"}"), "metadata is {}, expected None"),
    "built-twice": (F8 + tup(i32(3), text(">"), b"NNN", i32(-1), i32(-1), i32(0)) + b"b", "a second state"),
}


@pytest.mark.parametrize("name", list(FORGED_STATES))
def test_an_admitted_dtype_with_a_forged_state_is_refused(tmp_path: Path, name: str) -> None:
    dtype, words = FORGED_STATES[name]
    path = write(tmp_path / "state.pkl", pickle_of(array_op((1,), dtype, raw(bytes(8)))))
    err = expect_refusal(path, words)
    assert err.field == "numpy.dtype state"


BAD_ARRAYS = {
    "data-too-short": (array_op((3,), F8, raw(bytes(16))), "24 bytes for shape (3,) of float64, got 16"),
    "negative-dim": (array_op((-1,), F8, raw(b"")), "shape (-1,)"),
    "object-data-list": (array_op((1,), F8, b"]"), "expected bytes"),
    "fortran-flag": (array_op((1,), F8, raw(bytes(8)), fortran=text("yes")), "is_fortran"),
    "state-twice": (
        array_op((1,), F8, raw(bytes(8))) + tup(i32(1), tup(i32(1)), F8, b"\x89", raw(bytes(8))) + b"b",
        "a second state",
    ),
    "bool-byte-2": (array_op((1,), dtype_op("b1"), raw(b"\x02")), "bytes other than 0 and 1"),
    "scalar-short": (glob("numpy._core.multiarray", "scalar") + F8 + raw(bytes(4)) + b"\x86R", "8 bytes"),
}


@pytest.mark.parametrize("name", list(BAD_ARRAYS))
def test_an_array_state_that_does_not_fit_is_refused(tmp_path: Path, name: str) -> None:
    body, words = BAD_ARRAYS[name]
    expect_refusal(write(tmp_path / "bad.pkl", pickle_of(body)), words)


# ---- the caps --------------------------------------------------------------------------------------------------------


def test_the_byte_cap_is_a_keyword_and_an_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = np.arange(4096, dtype=np.float32)
    path = write(tmp_path / "a.pkl", pickle.dumps(original, protocol=4))
    size = path.stat().st_size
    assert safe_pickle.DEFAULT_MAX_BYTES == 4 << 30
    for words in ("RFML_PICKLE_MAX_BYTES", "max_bytes=", f"the file holds {size} bytes, more than the cap of 1000"):
        with pytest.raises(UnsafePickleError, match=re.escape(words)):
            load_array_pickle(path, max_bytes=1000)
    # the file fits, but what loading it would allocate (the data and the objects around it) does not
    with pytest.raises(UnsafePickleError, match=f"more than the cap of {size + 8}"):
        load_array_pickle(path, max_bytes=size + 8)
    # a frame of a protocol-4 file is read whole, then its objects are made: about twice the file
    np.testing.assert_array_equal(load_array_pickle(path, max_bytes=3 * size), original)
    monkeypatch.setenv("RFML_PICKLE_MAX_BYTES", "1000")
    with pytest.raises(UnsafePickleError, match="more than the cap of 1000 bytes"):
        load_array_pickle(path)
    monkeypatch.setenv("RFML_PICKLE_MAX_BYTES", str(3 * size))
    np.testing.assert_array_equal(load_array_pickle(path), original)
    monkeypatch.setenv("RFML_PICKLE_MAX_BYTES", "lots")
    with pytest.raises(ValueError, match=r"RFML_PICKLE_MAX_BYTES='lots' is not a whole number of bytes"):
        load_array_pickle(path)


def test_many_small_objects_count_against_the_cap(tmp_path: Path) -> None:
    # 200,000 empty sets from a 200 KB file would take about 43 MB; each object is charged before it is made
    path = write(tmp_path / "sets.pkl", pickle_of(b"(" + b"\x8f" * 200_000 + b"l", protocol=4))
    with pytest.raises(UnsafePickleError, match="more than the cap of 10000000 bytes"):
        load_array_pickle(path, max_bytes=10_000_000)


# ---- what numpy writes still loads, exactly --------------------------------------------------------------------------

CODES = ["b1", "i1", "u1", "i2", "i4", "i8", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"]


def every_dtype_and_byte_order() -> dict[str, object]:
    rng = np.random.default_rng(0)
    arrays: dict[str, object] = {}
    for code in CODES:
        orders = "|" if np.dtype(code).itemsize == 1 else "<>"
        for order in orders:
            dtype = np.dtype(order + code if order != "|" else code)
            if dtype.kind == "b":
                values = rng.integers(0, 2, (3, 5)).astype(dtype)
            elif dtype.kind in "iu":
                info = np.iinfo(dtype)
                values = rng.integers(info.min, info.max, (3, 5), dtype=dtype.newbyteorder("="), endpoint=True)
            elif dtype.kind == "f":
                values = (rng.standard_normal((3, 5)) * 1000).astype(dtype)
            else:
                values = (rng.standard_normal((3, 5)) * 1000 + 1j * rng.standard_normal((3, 5))).astype(dtype)
            arrays[dtype.str] = values.astype(dtype)
            arrays[dtype.str + " fortran"] = np.asfortranarray(values.astype(dtype))
            arrays[dtype.str + " strided"] = values.astype(dtype)[:, ::2]
        arrays[code + " scalar"] = np.dtype(code).type(values.flat[0])
    readonly = np.arange(6, dtype="<f4").reshape(2, 3)
    readonly.flags.writeable = False
    arrays.update({"readonly": readonly, "0-d": np.array(2.5), "empty": np.zeros((0, 2, 4), "<f4")})
    arrays.update({"empty >i8": np.zeros((3, 0), ">i8"), "dtype": np.dtype(">c8"), "key": {("BPSK", np.int64(-4)): 1}})
    return arrays


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_every_admitted_dtype_and_byte_order_round_trips_exactly(tmp_path: Path, protocol: int) -> None:
    original = every_dtype_and_byte_order()
    data = pickle.dumps(original, protocol=protocol)
    numpy_reads = pickle.loads(data)  # the reference: what numpy itself makes of the stream (our own data)
    loaded = load_array_pickle(write(tmp_path / "all.pkl", data))
    assert list(loaded) == list(original)
    for name, value in original.items():
        got, want = loaded[name], numpy_reads[name]
        assert type(got) is type(value), name
        if isinstance(value, np.ndarray):
            # in native byte order, as numpy's own reader gives big-endian data back: the loaders' dtype checks
            # (float32 frames) then accept a file written on a big-endian machine
            native = value.astype(value.dtype.newbyteorder("="))
            assert got.dtype.isnative and got.dtype.str == native.dtype.str, name
            assert got.shape == value.shape and got.flags.writeable, name
            assert got.flags.f_contiguous == want.flags.f_contiguous, name  # Fortran order kept where numpy keeps it
            np.testing.assert_array_equal(got, value)
            assert got.tobytes() == native.tobytes(), name  # bit-exact
        else:
            assert got == value, name
    assert type(next(iter(loaded["key"]))[1]) is np.int64


@pytest.mark.parametrize("protocol", [2, 5])
def test_a_radioml_pickle_written_big_endian_loads_as_native_float32(tmp_path: Path, protocol: int) -> None:
    frames = {(name, snr): np.random.default_rng(snr).standard_normal((3, 2, 8)).astype(">f4")
              for name in ("BPSK", "QPSK") for snr in (0, 10)}  # fmt: skip
    data = RadioML2016(write(tmp_path / "be.pkl", pickle.dumps(frames, protocol=protocol)))
    assert data.x.dtype == torch.float32
    np.testing.assert_array_equal(data.x[:3].numpy(), frames[("BPSK", 0)])
