"""Loading dataset pickles without running code or trusting their layout: a restricted reader for numpy arrays.

This module loads; :mod:`rfml.data.pickle_scan` bounds the stream first.

What a crafted pickle could do, and what this reader lets it do:

- **Call things.** A pickle names the callables it wants called while loading; a crafted one names
  ``os.system``. Here only the few names that numpy's own array pickles use resolve (protocols 0 to 5, numpy 1
  and 2 module names, written by Python 2 or 3), and each resolves to one of this module's small functions,
  never to numpy's classes. Anything else is refused, by name, before it is called.
- **Forge a dtype.** pickle's BUILD step hands ``__setstate__`` whatever state the file holds; numpy's dtype
  takes fields, offsets and flags that way, which makes a dtype that reads pointers out of the file's bytes. Here
  a dtype comes only from :data:`ADMITTED_DTYPES` (plain numeric codes, either byte order) and its state must be
  exactly what numpy writes for such a dtype. An array's state must give a shape of non-negative ints and
  exactly the bytes the shape needs. Until the stream has ended, only plain Python values and this module's inert
  placeholders exist; numpy objects are made afterwards, from the checked values.
- **Nest deep, or ask for much from little.** Before anything is unpickled the opcodes are read once, payloads
  skipped: nesting deeper than ``max_depth``, a memo index far past the entries stored, dict keys whose hashing
  would visit more objects than the file has bytes (plus 2**20), out-of-band buffers, persistent ids and
  extension codes are refused, and the memory the objects will take is estimated and held to ``max_bytes``.
  While loading, array data and latin-1 byte strings are counted: each may hold no more bytes than the file, so
  ``bytes(1 << 30)``, ``numpy.ndarray(shape)`` or one byte string reused for many arrays cannot make an array.

Every refusal is an :class:`UnsafePickleError` (a :class:`~rfml.data.base.DatasetFormatError`) naming the file and
the field; a truncated or corrupt file is a ``ValueError`` saying "PATH: not a readable pickle". Neither ends in a
signal.
"""

from __future__ import annotations

import math
import os
import pickle
import sys
from typing import Any, BinaryIO, NoReturn

import numpy as np

from ondevice.errors import InputError
from rfml.data.base import DatasetFormatError
from rfml.data.pickle_scan import (
    DEFAULT_MAX_BYTES,
    MAX_BYTES_ENV,
    UnsafePickleError,
    cap_hint,
    scan_opcodes,
    show_value,
)

DEFAULT_MAX_DEPTH = 32
"""How deeply containers may nest (a dataset pickle nests a few levels); ``max_depth`` may be at most 256."""

ADMITTED_DTYPES = ("b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16")
"""The dtype codes an array or scalar may have (bool, ints, floats, complex), little- or big-endian."""

_DEPTH_LIMIT = 256  # the most max_depth may be: the final walk recurses once per level
_LATIN1 = ("latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1")
_PLAIN = (str, bytes, bytearray, int, float, bool, type(None))
_DTYPES = {code: np.dtype(code) for code in ADMITTED_DTYPES} | {np.dtype(c).name: np.dtype(c) for c in ADMITTED_DTYPES}


class _SettingError(ValueError, InputError):
    """A cap given to the reader is not a whole number of bytes."""


# ---- loading: the admitted callables and their placeholders ---------------------------------------------------------


class _Load:
    """What one load shares: the file's name and size, and the bytes the admitted callables have made so far."""

    def __init__(self, source: str, size: int) -> None:
        self.source = source
        self.size = size
        self.data_bytes = 0  # array and scalar data
        self.latin1_bytes = 0  # byte strings made by _codecs.encode

    def refuse(self, field: str, problem: str) -> NoReturn:
        raise UnsafePickleError(self.source, field, problem)

    def charge_data(self, field: str, count: int) -> None:
        self.data_bytes += count
        if self.data_bytes > self.size:
            self.refuse(
                field,
                f"refused: the arrays and scalars so far would hold {self.data_bytes} bytes, more than the "
                f"{self.size} bytes of the file; array data must come from bytes present in the file, each used once",
            )

    def charge_latin1(self, count: int) -> None:
        self.latin1_bytes += count
        if self.latin1_bytes > self.size:
            self.refuse(
                "_codecs.encode",
                f"refused: the byte strings decoded so far would hold {self.latin1_bytes} bytes, more than the "
                f"{self.size} bytes of the file; each text in the file may be decoded once",
            )


class _Callable:
    """An admitted global: calls one of this module's functions. It holds no state a pickle can change."""

    __slots__ = ("_call", "_load", "name")

    def __init__(self, load: _Load, name: str, call: Any) -> None:
        self._load, self.name, self._call = load, name, call

    def __call__(self, *args: Any) -> Any:
        return self._call(*args)

    def __setstate__(self, state: Any) -> NoReturn:
        self._load.refuse(self.name, f"refused a BUILD state for {self.name} itself: {show_value(state)}")

    def __repr__(self) -> str:
        return self.name


class _DtypeSpec:
    """``numpy.dtype(code)`` as the pickle asked for it: an admitted code, and the byte order its state gives."""

    __slots__ = ("_load", "code", "dtype", "stated", "used")

    def __init__(self, load: _Load, *args: Any) -> None:
        self._load = load
        code = args[0] if args else None
        if (
            len(args) not in (1, 2, 3)
            or not isinstance(code, str)
            or code not in _DTYPES
            or not all(type(flag) in (bool, int) and flag in (0, 1) for flag in args[1:])
        ):
            load.refuse(
                "numpy.dtype",
                f"refused numpy.dtype({', '.join(map(show_value, args))}): expected a plain numeric dtype code "
                f"({', '.join(ADMITTED_DTYPES)}) with the flags (False, True); object arrays, strings, "
                "structured, subarray and datetime dtypes are not admitted",
            )
        self.code, self.dtype, self.stated, self.used = code, _DTYPES[code], False, False

    def __setstate__(self, state: Any) -> None:
        def wrong(problem: str) -> NoReturn:
            self._load.refuse(
                "numpy.dtype state",
                f"refused the state of numpy.dtype({self.code!r}): {problem}; numpy writes (3, byteorder, None, "
                "None, None, -1, -1, 0) for a plain numeric dtype",
            )

        if self.stated or self.used:
            self._load.refuse(
                "numpy.dtype state",
                f"refused a second state for numpy.dtype({self.code!r}), {show_value(state)}; a dtype is built once, "
                "before it is used",
            )
        if type(state) is not tuple or not state:
            wrong(f"the state is {show_value(state)}, expected a tuple")
        version = state[0]
        if not (type(version) is int and version in (3, 4)):
            wrong(f"version is {show_value(version)}, expected 3 (or 4, with metadata None)")
        if len(state) != 5 + version:
            wrong(f"the state has {len(state)} items, expected {5 + version} for version {version}")
        orders = ("|", "<", ">", "=") if self.dtype.itemsize == 1 else ("<", ">", "=")
        if not (type(state[1]) is str and state[1] in orders):
            wrong(f"byteorder is {show_value(state[1])}, expected one of {', '.join(map(repr, orders))}")
        expected = {"subarray": None, "names": None, "fields": None, "elsize": -1, "alignment": -1, "flags": 0}
        for (part, want), got in zip(expected.items(), state[2:8], strict=True):
            if not (got is want if want is None else (type(got) is int and got == want)):
                wrong(f"{part} is {show_value(got)}, expected {want}")
        if version == 4 and state[8] is not None:
            wrong(f"metadata is {show_value(state[8])}, expected None")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])
        self.stated = True

    def resolve(self) -> np.dtype:
        self.used = True
        return self.dtype

    def materialize(self) -> np.dtype:
        return self.resolve()

    def __repr__(self) -> str:
        return f"numpy.dtype({self.code!r})"


def _dtype_of(load: _Load, field: str, spec: Any) -> np.dtype:
    if type(spec) is not _DtypeSpec:
        load.refuse(field, f"refused the dtype {show_value(spec)}: expected a numpy.dtype(...) from the pickle")
    return spec.resolve()


class _ArraySlot:
    """An array as the pickle described it: checked dtype, shape, order and data, made into numpy's after loading."""

    __slots__ = ("_load", "_parts", "_stated")

    def __init__(self, load: _Load) -> None:
        self._load, self._parts, self._stated = load, None, False

    def set_parts(self, field: str, spec: Any, shape: Any, fortran: bool, data: Any) -> None:
        load = self._load
        dtype = _dtype_of(load, field, spec)
        if (
            type(shape) is not tuple
            or len(shape) > 32
            or not all(type(dim) is int and 0 <= dim <= sys.maxsize for dim in shape)
        ):
            load.refuse(
                field, f"refused the shape {show_value(shape)}: expected a tuple of at most 32 non-negative ints"
            )
        if math.prod(max(dim, 1) for dim in shape) * dtype.itemsize > sys.maxsize:
            load.refuse(field, f"refused the shape {shape} of {dtype}: larger than any array can be")
        if not isinstance(data, bytes | bytearray | str):  # str: Python 2's 8-bit string, read as latin-1
            load.refuse(field, f"refused the data {show_value(data)}: expected bytes (the array's raw data)")
        need = math.prod(shape) * dtype.itemsize
        if len(data) != need:
            load.refuse(field, f"refused the data: expected {need} bytes for shape {shape} of {dtype}, got {len(data)}")
        load.charge_data(field, need)
        self._parts, self._stated = (dtype, shape, "F" if fortran else "C", data), True

    def __setstate__(self, state: Any) -> None:
        load = self._load
        if self._stated:
            load.refuse("numpy.ndarray state", f"refused a second state for an array: {show_value(state)}")
        if type(state) is tuple and len(state) == 5 and type(state[0]) is int and state[0] == 1:
            state = state[1:]
        if type(state) is not tuple or len(state) != 4:
            load.refuse(
                "numpy.ndarray state",
                f"refused the array state {show_value(state)}: expected (1, shape, dtype, is_fortran, data)",
            )
        shape, spec, fortran, data = state
        if not (type(fortran) in (bool, int) and fortran in (0, 1)):
            load.refuse("numpy.ndarray state", f"refused is_fortran {show_value(fortran)}: expected True or False")
        self.set_parts("numpy.ndarray state", spec, shape, bool(fortran), data)

    def materialize(self) -> np.ndarray:
        load = self._load
        if self._parts is None:
            load.refuse("numpy.ndarray state", "refused an array with no BUILD state (no shape, dtype or data)")
        dtype, shape, order, data = self._parts
        self._parts = None  # the placeholder lets go of the data once the array holds it
        buffer = _latin1(load, "numpy.ndarray state", data)
        _check_bools(load, "numpy.ndarray state", dtype, buffer)
        array = np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)
        if not dtype.isnative:  # as numpy's own reader does: big-endian data comes back in native order, equal values
            return array.astype(dtype.newbyteorder("="), order="K")
        return array if array.flags.writeable else array.copy(order="K")

    def __repr__(self) -> str:
        return "numpy.ndarray(...)"


class _ScalarSlot:
    """A numpy scalar as the pickle described it, made into numpy's after loading."""

    __slots__ = ("_dtype", "_load", "data")

    def __init__(self, load: _Load, *args: Any) -> None:
        self._load = load
        if len(args) != 2:
            load.refuse("numpy scalar", f"refused scalar{show_value(args)}: expected scalar(dtype, data)")
        self._dtype = _dtype_of(load, "numpy scalar", args[0])
        data = args[1]
        if not isinstance(data, bytes | str) or len(data) != self._dtype.itemsize:
            load.refuse(
                "numpy scalar",
                f"refused the data {show_value(data)} of a {self._dtype} scalar: expected {self._dtype.itemsize} bytes",
            )
        load.charge_data("numpy scalar", self._dtype.itemsize)
        self.data = data

    def __setstate__(self, state: Any) -> NoReturn:
        self._load.refuse("numpy scalar", f"refused a BUILD state for a numpy scalar: {show_value(state)}")

    def materialize(self) -> Any:
        buffer = _latin1(self._load, "numpy scalar", self.data)
        _check_bools(self._load, "numpy scalar", self._dtype, buffer)
        return np.frombuffer(buffer, dtype=self._dtype)[0]

    def __repr__(self) -> str:
        return f"numpy.{self._dtype.name}(...)"


def _latin1(load: _Load, field: str, data: bytes | bytearray | str) -> bytes | bytearray:
    if not isinstance(data, str):
        return data
    try:
        return bytearray(data, "latin-1")  # writable, so the array made over it needs no second copy
    except UnicodeEncodeError:
        load.refuse(field, "refused the data: a text with characters past U+00FF; expected 8-bit (latin-1) data")


def _check_bools(load: _Load, field: str, dtype: np.dtype, buffer: bytes | bytearray) -> None:
    if dtype.kind == "b" and len(buffer) and np.frombuffer(buffer, dtype=np.uint8).max() > 1:
        load.refuse(field, "refused a bool array or scalar whose data holds bytes other than 0 and 1")


def _admitted(load: _Load) -> dict[tuple[str, str], _Callable]:
    """The globals a numpy array pickle names, each bound to this load."""

    def ndarray(*args: Any) -> NoReturn:
        load.refuse(
            "numpy.ndarray",
            f"refused numpy.ndarray({', '.join(map(show_value, args))}) called directly: it would make an array of "
            "uninitialised memory; numpy's pickles name numpy.ndarray only as the class given to _reconstruct",
        )

    def reconstruct(*args: Any) -> _ArraySlot:
        # numpy writes _reconstruct(ndarray, (0,), b'b') and then gives the real shape, dtype and data to BUILD
        if (
            len(args) != 3
            or args[0] is not classes[("numpy", "ndarray")]
            or args[1] != (0,)
            or args[2] not in ("b", b"b")
        ):
            load.refuse(
                "numpy.ndarray",
                f"refused _reconstruct({', '.join(map(show_value, args))}): "
                "expected _reconstruct(numpy.ndarray, (0,), b'b')",
            )
        return _ArraySlot(load)

    def frombuffer(*args: Any) -> _ArraySlot:
        # protocol 5 writes _frombuffer(data, dtype, shape, order) with the data in-band (bytearray or bytes)
        if len(args) != 4 or args[3] not in ("C", "F") or not isinstance(args[0], bytes | bytearray):
            load.refuse(
                "numpy.ndarray",
                f"refused _frombuffer({', '.join(map(show_value, args))}): "
                "expected _frombuffer(data, dtype, shape, 'C' or 'F') with the data in the file",
            )
        slot = _ArraySlot(load)
        slot.set_parts("numpy.ndarray", args[1], args[2], args[3] == "F", args[0])
        return slot

    def empty_bytes(*args: Any) -> bytes:
        if args:
            load.refuse(
                "builtins.bytes",
                f"refused builtins.bytes({', '.join(map(show_value, args))}): only bytes() with no argument (the empty "
                "data of an empty array in protocol 2) is admitted; array data must come from the file",
            )
        return b""

    def encode(*args: Any) -> bytes:
        # Protocol-2 pickles written by Python 3 carry bytes as _codecs.encode(text, "latin1"); any other codec is
        # refused so a pickle cannot make us import an arbitrary codec module.
        if len(args) != 2 or not isinstance(args[0], str) or args[1] not in _LATIN1:
            load.refuse(
                "_codecs.encode",
                f"refused _codecs.encode({', '.join(map(show_value, args))}): expected _codecs.encode(text, 'latin1'); "
                "only latin1 is admitted",
            )
        load.charge_latin1(len(args[0]))
        try:
            return args[0].encode("latin-1")
        except UnicodeEncodeError:
            load.refuse("_codecs.encode", "refused a text with characters past U+00FF: expected latin-1 text")

    classes: dict[tuple[str, str], _Callable] = {
        ("numpy", "ndarray"): _Callable(load, "numpy.ndarray", ndarray),
        ("numpy", "dtype"): _Callable(load, "numpy.dtype", lambda *args: _DtypeSpec(load, *args)),
        ("_codecs", "encode"): _Callable(load, "_codecs.encode", encode),
    }
    for package in ("numpy.core", "numpy._core"):  # numpy 1 and numpy 2
        classes[(f"{package}.multiarray", "_reconstruct")] = _Callable(load, "_reconstruct", reconstruct)
        classes[(f"{package}.multiarray", "scalar")] = _Callable(load, "scalar", lambda *a: _ScalarSlot(load, *a))
        classes[(f"{package}.numeric", "_frombuffer")] = _Callable(load, "_frombuffer", frombuffer)
    for module in ("__builtin__", "builtins"):  # Python 2 and 3
        classes[(module, "bytes")] = _Callable(load, "builtins.bytes", empty_bytes)
    return classes


class _ArrayUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, load: _Load) -> None:
        super().__init__(file, encoding="latin1")  # Python-2 pickles hold str as 8-bit text
        self._load = load
        self._classes = _admitted(load)

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._classes[(module, name)]
        except KeyError:
            self._load.refuse(
                "pickle global",
                f"refused to load {module}.{name}; a dataset pickle may only hold numpy arrays, dicts, tuples, "
                "lists, strings and numbers (the file may be crafted to run code, so nothing in it was executed)",
            )

    def persistent_load(self, pid: Any) -> NoReturn:  # the scan refuses PERSID first; kept as a second guard
        self._load.refuse("pickle stream", f"refused a persistent-id reference {show_value(pid)}")


# ---- after loading: placeholders become numpy objects, depth and cycles are checked ---------------------------------


def _materialize(root: Any, load: _Load, max_depth: int) -> Any:
    """``root`` with every placeholder replaced by its numpy object, in new containers; refuses a container nested
    deeper than ``max_depth`` or holding itself, a callable left as data, and an array used as a key."""
    done: dict[int, Any] = {}  # id -> result, so an object the pickle shares stays shared
    path: set[int] = set()

    def walk(item: Any, depth: int) -> Any:
        kind = type(item)
        if kind in _PLAIN:
            return item
        key = id(item)
        if key in done:
            return done[key]
        if kind in (_ArraySlot, _ScalarSlot, _DtypeSpec):
            result = item.materialize()
        elif kind is _Callable:
            load.refuse("<top level>", f"refused: the pickle holds {item.name} itself, not data made by it")
        elif kind in (list, tuple, dict, set, frozenset):
            if key in path:
                load.refuse("<top level>", f"refused: the pickle holds a {kind.__name__} that contains itself")
            if depth > max_depth:
                load.refuse(
                    "<top level>",
                    f"refused: containers nested deeper than {max_depth} levels; a dataset pickle nests a few "
                    "(load_array_pickle(..., max_depth=N) admits more)",
                )
            path.add(key)
            if kind is dict:
                result = {}
                for k, v in item.items():
                    _insert(result, walk(k, depth + 1), walk(v, depth + 1), load)
            elif kind in (set, frozenset):
                members: dict[Any, None] = {}
                for member in item:
                    _insert(members, walk(member, depth + 1), None, load)
                result = kind(members)
            else:
                result = kind(walk(member, depth + 1) for member in item)
            path.discard(key)
        else:  # nothing else can come out of the admitted callables
            load.refuse("<top level>", f"refused an object of type {kind.__name__}")
        done[key] = result
        return result

    return walk(root, 1)


def _insert(mapping: dict[Any, Any], key: Any, value: Any, load: _Load) -> None:
    try:
        present = key in mapping
    except TypeError:  # an array inside a key
        load.refuse("<top level>", f"refused the dict key or set member {show_value(key)}: it holds an array")
    if present:  # two placeholders that made equal keys
        load.refuse("<top level>", f"refused the dict key or set member {show_value(key)}: it appears twice")
    mapping[key] = value


def _max_bytes(max_bytes: int | None) -> int:
    if max_bytes is not None:
        if type(max_bytes) is not int or max_bytes <= 0:
            raise ValueError(f"max_bytes must be a positive int, got {max_bytes!r}")
        return max_bytes
    text = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_BYTES
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise _SettingError(
            f"the environment variable {MAX_BYTES_ENV}={text!r} is not a whole number of bytes > 0; "
            f"expected e.g. {MAX_BYTES_ENV}={DEFAULT_MAX_BYTES}"
        )
    return value


def load_array_pickle(
    path: str | os.PathLike[str], *, max_bytes: int | None = None, max_depth: int = DEFAULT_MAX_DEPTH
) -> Any:
    """Load a pickle holding only numpy arrays, numpy scalars and dtypes, and plain containers.

    Arrays come back writable, with their dtype and byte order as written; a numpy dtype only from
    :data:`ADMITTED_DTYPES`. Nothing in the file is executed, and no state from the file reaches numpy.

    Args:
        path: the pickle.
        max_bytes: the cap on the file's size and on the memory its objects will take, estimated before
            anything is built (about 64 bytes per opcode plus the bytes it carries). ``None``: the environment
            variable ``RFML_PICKLE_MAX_BYTES`` if set, else :data:`DEFAULT_MAX_BYTES` (4 GiB). Independently of
            the cap, the arrays hold no more bytes than the file, and so do the byte strings decoded from text.
        max_depth: how deeply containers may nest (default 32, at most 256).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafePickleError: the pickle holds anything else, forges a dtype or array state, nests too deeply or
            asks for more memory than the caps allow (nothing is executed).
        ValueError: the file is truncated or is not a pickle ("PATH: not a readable pickle (truncated or
            corrupt): ..."), as before. ``UnsafePickleError`` is a ``ValueError`` too.
    """
    source = os.fspath(path)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"{source}: no such file")
    cap = _max_bytes(max_bytes)
    if type(max_depth) is not int or not 1 <= max_depth <= _DEPTH_LIMIT:
        raise ValueError(f"max_depth must be an int in 1..{_DEPTH_LIMIT}, got {max_depth!r}")
    with open(source, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > cap:
            raise UnsafePickleError(
                source,
                "pickle stream",
                f"refused: the file holds {size} bytes, more than the cap of {cap} bytes; {cap_hint()}",
            )
        scan_opcodes(handle, size, source, max_depth, cap)
        handle.seek(0)
        load = _Load(source, size)
        unpickler = _ArrayUnpickler(handle, load)
        try:
            root = unpickler.load()
        except DatasetFormatError:
            raise
        except (
            EOFError,
            pickle.UnpicklingError,
            ValueError,
            TypeError,
            IndexError,
            KeyError,
            AttributeError,
            OverflowError,
            MemoryError,
            RecursionError,
        ) as err:
            raise ValueError(
                f"{source}: not a readable pickle (truncated or corrupt): {type(err).__name__}: {err}"
            ) from None
        finally:
            del unpickler  # its memo holds the raw data; let it go before the arrays are made
    return _materialize(root, load, max_depth)
