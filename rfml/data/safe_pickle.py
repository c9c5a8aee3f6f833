"""Loading dataset pickles without running code or trusting their layout: a restricted reader for numpy arrays.

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
import pickletools
import reprlib
import sys
from typing import Any, BinaryIO, NoReturn

import numpy as np

from ondevice.errors import InputError
from rfml.data.base import DatasetFormatError

DEFAULT_MAX_BYTES = 4 << 30
"""The default cap on the memory a pickle may make the reader allocate (and on the file's size): 4 GiB."""

MAX_BYTES_ENV = "RFML_PICKLE_MAX_BYTES"
"""The environment variable that replaces :data:`DEFAULT_MAX_BYTES` (a whole number of bytes)."""

DEFAULT_MAX_DEPTH = 32
"""How deeply containers may nest (a dataset pickle nests a few levels); ``max_depth`` may be at most 256."""

ADMITTED_DTYPES = ("b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16")
"""The dtype codes an array or scalar may have (bool, ints, floats, complex), little- or big-endian."""

_DEPTH_LIMIT = 256  # the most max_depth may be: the final walk recurses once per level
_OBJECT_COST = 64  # bytes charged per opcode: a new object, or a reference and a container slot
_SET_COST = 256  # an empty set or frozenset is 216 bytes
_MEMO_SLACK = 1024  # a memo index may run this far past the entries stored (Python 2 skips a few)
_LATIN1 = ("latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1")
_PLAIN = (str, bytes, bytearray, int, float, bool, type(None))
_DTYPES = {code: np.dtype(code) for code in ADMITTED_DTYPES} | {np.dtype(c).name: np.dtype(c) for c in ADMITTED_DTYPES}
_OPCODES = {op.code.encode("latin-1")[0]: op for op in pickletools.opcodes}
_COUNT_WIDTH = {  # counted arguments: bytes in the count, and whether it is signed
    pickletools.TAKEN_FROM_ARGUMENT1: (1, False),
    pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
    pickletools.TAKEN_FROM_ARGUMENT4U: (4, False),
    pickletools.TAKEN_FROM_ARGUMENT8U: (8, False),
}
_LEAF_OPS = frozenset(
    "INT BININT BININT1 BININT2 LONG LONG1 LONG4 STRING BINSTRING SHORT_BINSTRING BINBYTES SHORT_BINBYTES "
    "BINBYTES8 BYTEARRAY8 NONE NEWTRUE NEWFALSE UNICODE SHORT_BINUNICODE BINUNICODE BINUNICODE8 FLOAT BINFLOAT "
    "GLOBAL".split()
)
_REFUSED_OPS = {
    "PERSID": "a persistent-id reference (an object from outside the file)",
    "BINPERSID": "a persistent-id reference (an object from outside the file)",
    "EXT1": "an extension-registry code (a class named by number)",
    "EXT2": "an extension-registry code (a class named by number)",
    "EXT4": "an extension-registry code (a class named by number)",
    "NEXT_BUFFER": "an out-of-band buffer (array data kept outside the file)",
    "READONLY_BUFFER": "an out-of-band buffer (array data kept outside the file)",
}


class UnsafePickleError(DatasetFormatError, pickle.UnpicklingError):
    """The pickle holds what a plain numpy-array pickle never does: a callable other than numpy's array
    reconstructors, a dtype or array state that numpy would not write, deep nesting, or more bytes than the file
    carries. Nothing in it was executed. A ``DatasetFormatError``, so the commands print it as one line."""


class _SettingError(ValueError, InputError):
    """A cap given to the reader is not a whole number of bytes."""


def _show(value: Any) -> str:
    # A bounded repr: the values come from the file (long strings, deep tuples, ints of a million digits).
    try:
        return reprlib.repr(value)
    except ValueError:
        return f"<a {type(value).__name__}>"


def _cap_hint() -> str:
    return (
        f"if you trust the file, raise the cap with load_array_pickle(..., max_bytes=N) or the environment "
        f"variable {MAX_BYTES_ENV}=N (default {DEFAULT_MAX_BYTES})"
    )


# ---- the opcode scan: depth, memo, refused opcodes and memory, before anything is built ----------------------------


class _Sym:
    """An object on the scan's model of the unpickler's stack: how deeply containers nest inside it, and how many
    objects hashing it visits (a tuple hashes its items again each time one is shared, so sharing multiplies)."""

    __slots__ = ("depth", "visits")

    def __init__(self, depth: int, visits: int = 1) -> None:
        self.depth = depth
        self.visits = visits


def _scan(handle: BinaryIO, size: int, source: str, max_depth: int, max_bytes: int) -> None:
    """Walk the opcodes up to STOP as the unpickler would, skipping payloads, and refuse what must not be loaded.

    The model mirrors the C unpickler's stack, marks and memo; where the model is stricter (a stack underflow the
    C code tolerates), the file is refused as corrupt. Depth is exact for tuples and frozensets (immutable, and
    the only containers hashing recurses into); a list deepened after being nested is caught by the final walk.
    The objects that hashing dict keys and set members visits are counted and held to the file's size (plus
    2**20): a key built from one tuple shared twice on each of 30 levels would take 2**30 steps to hash.
    """
    stack: list[_Sym] = []
    marks: list[int] = []
    memo: dict[int, _Sym] = {}
    estimate = 0
    hash_work, hash_budget = 0, size + (1 << 20)
    pos = 0
    name = "<start>"

    def corrupt(problem: str) -> NoReturn:
        raise ValueError(f"{source}: not a readable pickle (truncated or corrupt): {problem}")

    def refuse(problem: str) -> NoReturn:
        raise UnsafePickleError(source, "pickle stream", problem)

    def fence() -> int:
        return marks[-1] if marks else 0

    def pop() -> _Sym:
        if len(stack) <= fence():
            corrupt(f"{name} at byte {pos} finds the stack empty")
        return stack.pop()

    def top() -> _Sym:
        if len(stack) <= fence():
            corrupt(f"{name} at byte {pos} finds the stack empty")
        return stack[-1]

    def pop_mark() -> list[_Sym]:
        if not marks:
            corrupt(f"{name} at byte {pos} has no MARK before it")
        start = marks.pop()
        items = stack[start:]
        del stack[start:]
        return items

    def nest(items: list[_Sym], into: _Sym | None = None) -> _Sym:
        depth = 1 + max((item.depth for item in items), default=0)
        if into is not None:
            into.depth = max(into.depth, depth)
            depth = into.depth
        if depth > max_depth:
            refuse(
                f"refused: nesting deeper than {max_depth} levels at byte {pos} ({name}); a dataset pickle nests "
                "a few levels (load_array_pickle(..., max_depth=N) admits more)"
            )
        return into if into is not None else _Sym(depth)

    def immutable(items: list[_Sym]) -> _Sym:  # a tuple or frozenset: hashing it visits every item, again
        made = nest(items)
        made.visits = min(1 + sum(item.visits for item in items), hash_budget + 1)
        return made

    def hashed(items: list[_Sym]) -> None:
        nonlocal hash_work
        hash_work += sum(item.visits for item in items)
        if hash_work > hash_budget:
            refuse(
                f"refused: hashing its dict keys and set members would visit at least {hash_work} objects by "
                f"byte {pos} ({name}), more than the {hash_budget} a file of {size} bytes may ask for; a key "
                "that shares one tuple many times multiplies the work"
            )

    def read_exact(count: int) -> bytes:
        data = handle.read(count)
        if len(data) < count:
            corrupt(f"{name} at byte {pos} needs {count} bytes, the file ends after {len(data)}")
        return data

    def read_line() -> tuple[int, bytes]:
        # A protocol-0 string holds a whole array on one line: count it in pieces rather than read it at once.
        length, head = 0, b""
        while True:
            piece = handle.readline(1 << 16)
            if not piece:
                corrupt(f"{name} at byte {pos} has no end of line before the end of the file")
            head, length = head or piece, length + len(piece)
            if piece.endswith(b"\n"):
                return length, head

    while True:
        pos = handle.tell()
        code = handle.read(1)
        if not code:
            corrupt(f"the stream ends at byte {pos} without a STOP opcode")
        op = _OPCODES.get(code[0])
        if op is None:
            corrupt(f"byte {pos} holds {code!r}, which is not a pickle opcode")
        name = op.name
        if name in _REFUSED_OPS:
            refuse(f"refused {_REFUSED_OPS[name]}: {name} at byte {pos}; a dataset file carries its data itself")
        payload, number = 0, 0
        if op.arg is not None:
            width = op.arg.n
            if width >= 0:
                number = int.from_bytes(read_exact(width), "little", signed=op.arg.name in ("int4",))
            elif width == pickletools.UP_TO_NEWLINE:
                for _ in range(2 if op.arg.name == "stringnl_noescape_pair" else 1):
                    length, head = read_line()
                    payload += length
                if name in ("GET", "PUT"):
                    try:
                        number = int(head) if length == len(head) else -1
                    except ValueError:
                        number = -1
                    if number < 0:
                        corrupt(f"{name} at byte {pos} gives the memo index {_show(head)}")
            else:
                count_width, signed = _COUNT_WIDTH[width]
                payload = int.from_bytes(read_exact(count_width), "little", signed=signed)
                remaining = size - handle.tell()
                if payload < 0 or payload > remaining:
                    corrupt(f"{name} at byte {pos} declares {payload} bytes, but only {remaining} remain in the file")
                handle.seek(payload, os.SEEK_CUR)
        estimate += _OBJECT_COST + payload + (_SET_COST if name in ("EMPTY_SET", "FROZENSET") else 0)
        if name == "FRAME":  # the unpickler reads a whole frame into memory, then parses the opcodes in it
            if number > size - handle.tell():
                corrupt(f"FRAME at byte {pos} declares {number} bytes, more than remain in the file")
            estimate += number
        if estimate > max_bytes:
            refuse(
                f"refused: loading it would take about {estimate} bytes of memory (counted up to byte {pos}), "
                f"more than the cap of {max_bytes} bytes; {_cap_hint()}"
            )

        if name in _LEAF_OPS:
            stack.append(_Sym(0))
        elif name in ("EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET", "EMPTY_TUPLE"):
            stack.append(_Sym(1))
        elif name == "MARK":
            marks.append(len(stack))
        elif name == "LIST":
            stack.append(nest(pop_mark()))
        elif name in ("TUPLE", "FROZENSET"):
            items = pop_mark()
            if name == "FROZENSET":
                hashed(items)
            stack.append(immutable(items))
        elif name == "DICT":
            items = pop_mark()
            if len(items) % 2:
                corrupt(f"DICT at byte {pos} has an odd number of items")
            hashed(items[0::2])
            stack.append(nest(items))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            items = [pop() for _ in range(int(name[-1]))]
            stack.append(immutable(items))
        elif name == "APPEND":
            value = pop()
            nest([value], into=top())
        elif name == "SETITEM":
            value, key = pop(), pop()
            hashed([key])
            nest([key, value], into=top())
        elif name in ("APPENDS", "SETITEMS", "ADDITEMS"):
            items = pop_mark()
            if name == "SETITEMS" and len(items) % 2:
                corrupt(f"SETITEMS at byte {pos} has an odd number of items")
            hashed(items[0::2] if name == "SETITEMS" else items if name == "ADDITEMS" else [])
            if not stack:
                corrupt(f"{name} at byte {pos} has no container below its MARK")
            if items:
                nest(items, into=stack[-1])
        elif name == "POP":
            if marks and marks[-1] == len(stack):
                marks.pop()
            else:
                pop()
        elif name == "POP_MARK":
            pop_mark()
        elif name == "DUP":
            stack.append(top())
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if number not in memo:
                corrupt(f"{name} at byte {pos} fetches memo index {number}, which was never stored")
            stack.append(memo[number])
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            if number > len(memo) + _MEMO_SLACK:
                refuse(
                    f"refused: memo index {number} at byte {pos} ({name}) is far past the {len(memo)} entries "
                    "stored so far; the unpickler would allocate a table that large"
                )
            memo[number] = top()
        elif name == "MEMOIZE":
            memo[len(memo)] = top()
        elif name == "STACK_GLOBAL":
            pop(), pop()
            stack.append(_Sym(0))
        elif name in ("REDUCE", "NEWOBJ"):  # the admitted callables return plain values or placeholders
            pop(), pop()
            stack.append(_Sym(0))
        elif name == "NEWOBJ_EX":
            pop(), pop(), pop()
            stack.append(_Sym(0))
        elif name == "INST":
            pop_mark()
            stack.append(_Sym(0))
        elif name == "OBJ":
            if not pop_mark():
                corrupt(f"OBJ at byte {pos} has no class after its MARK")
            stack.append(_Sym(0))
        elif name == "BUILD":  # a placeholder keeps checked values, not the state's containers
            pop()
            top()
        elif name == "PROTO":
            if number > pickle.HIGHEST_PROTOCOL:
                corrupt(f"PROTO at byte {pos} asks for protocol {number}")
        elif name == "FRAME":
            pass
        elif name == "STOP":
            pop()
            return
        else:  # every opcode pickletools knows is handled above
            corrupt(f"{name} at byte {pos} is not handled")


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
        self._load.refuse(self.name, f"refused a BUILD state for {self.name} itself: {_show(state)}")

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
                f"refused numpy.dtype({', '.join(map(_show, args))}): expected a plain numeric dtype code "
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
                f"refused a second state for numpy.dtype({self.code!r}), {_show(state)}; a dtype is built once, "
                "before it is used",
            )
        if type(state) is not tuple or not state:
            wrong(f"the state is {_show(state)}, expected a tuple")
        version = state[0]
        if not (type(version) is int and version in (3, 4)):
            wrong(f"version is {_show(version)}, expected 3 (or 4, with metadata None)")
        if len(state) != 5 + version:
            wrong(f"the state has {len(state)} items, expected {5 + version} for version {version}")
        orders = ("|", "<", ">", "=") if self.dtype.itemsize == 1 else ("<", ">", "=")
        if not (type(state[1]) is str and state[1] in orders):
            wrong(f"byteorder is {_show(state[1])}, expected one of {', '.join(map(repr, orders))}")
        expected = {"subarray": None, "names": None, "fields": None, "elsize": -1, "alignment": -1, "flags": 0}
        for (part, want), got in zip(expected.items(), state[2:8], strict=True):
            if not (got is want if want is None else (type(got) is int and got == want)):
                wrong(f"{part} is {_show(got)}, expected {want}")
        if version == 4 and state[8] is not None:
            wrong(f"metadata is {_show(state[8])}, expected None")
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
        load.refuse(field, f"refused the dtype {_show(spec)}: expected a numpy.dtype(...) from the pickle")
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
            load.refuse(field, f"refused the shape {_show(shape)}: expected a tuple of at most 32 non-negative ints")
        if math.prod(max(dim, 1) for dim in shape) * dtype.itemsize > sys.maxsize:
            load.refuse(field, f"refused the shape {shape} of {dtype}: larger than any array can be")
        if not isinstance(data, bytes | bytearray | str):  # str: Python 2's 8-bit string, read as latin-1
            load.refuse(field, f"refused the data {_show(data)}: expected bytes (the array's raw data)")
        need = math.prod(shape) * dtype.itemsize
        if len(data) != need:
            load.refuse(field, f"refused the data: expected {need} bytes for shape {shape} of {dtype}, got {len(data)}")
        load.charge_data(field, need)
        self._parts, self._stated = (dtype, shape, "F" if fortran else "C", data), True

    def __setstate__(self, state: Any) -> None:
        load = self._load
        if self._stated:
            load.refuse("numpy.ndarray state", f"refused a second state for an array: {_show(state)}")
        if type(state) is tuple and len(state) == 5 and type(state[0]) is int and state[0] == 1:
            state = state[1:]
        if type(state) is not tuple or len(state) != 4:
            load.refuse(
                "numpy.ndarray state",
                f"refused the array state {_show(state)}: expected (1, shape, dtype, is_fortran, data)",
            )
        shape, spec, fortran, data = state
        if not (type(fortran) in (bool, int) and fortran in (0, 1)):
            load.refuse("numpy.ndarray state", f"refused is_fortran {_show(fortran)}: expected True or False")
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
            load.refuse("numpy scalar", f"refused scalar{_show(args)}: expected scalar(dtype, data)")
        self._dtype = _dtype_of(load, "numpy scalar", args[0])
        data = args[1]
        if not isinstance(data, bytes | str) or len(data) != self._dtype.itemsize:
            load.refuse(
                "numpy scalar",
                f"refused the data {_show(data)} of a {self._dtype} scalar: expected {self._dtype.itemsize} bytes",
            )
        load.charge_data("numpy scalar", self._dtype.itemsize)
        self.data = data

    def __setstate__(self, state: Any) -> NoReturn:
        self._load.refuse("numpy scalar", f"refused a BUILD state for a numpy scalar: {_show(state)}")

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
            f"refused numpy.ndarray({', '.join(map(_show, args))}) called directly: it would make an array of "
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
                f"refused _reconstruct({', '.join(map(_show, args))}): "
                "expected _reconstruct(numpy.ndarray, (0,), b'b')",
            )
        return _ArraySlot(load)

    def frombuffer(*args: Any) -> _ArraySlot:
        # protocol 5 writes _frombuffer(data, dtype, shape, order) with the data in-band (bytearray or bytes)
        if len(args) != 4 or args[3] not in ("C", "F") or not isinstance(args[0], bytes | bytearray):
            load.refuse(
                "numpy.ndarray",
                f"refused _frombuffer({', '.join(map(_show, args))}): expected _frombuffer(data, dtype, shape, 'C' "
                "or 'F') with the data in the file",
            )
        slot = _ArraySlot(load)
        slot.set_parts("numpy.ndarray", args[1], args[2], args[3] == "F", args[0])
        return slot

    def empty_bytes(*args: Any) -> bytes:
        if args:
            load.refuse(
                "builtins.bytes",
                f"refused builtins.bytes({', '.join(map(_show, args))}): only bytes() with no argument (the empty "
                "data of an empty array in protocol 2) is admitted; array data must come from the file",
            )
        return b""

    def encode(*args: Any) -> bytes:
        # Protocol-2 pickles written by Python 3 carry bytes as _codecs.encode(text, "latin1"); any other codec is
        # refused so a pickle cannot make us import an arbitrary codec module.
        if len(args) != 2 or not isinstance(args[0], str) or args[1] not in _LATIN1:
            load.refuse(
                "_codecs.encode",
                f"refused _codecs.encode({', '.join(map(_show, args))}): expected _codecs.encode(text, 'latin1'); "
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
        self._load.refuse("pickle stream", f"refused a persistent-id reference {_show(pid)}")


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
        load.refuse("<top level>", f"refused the dict key or set member {_show(key)}: it holds an array")
    if present:  # two placeholders that made equal keys
        load.refuse("<top level>", f"refused the dict key or set member {_show(key)}: it appears twice")
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
                f"refused: the file holds {size} bytes, more than the cap of {cap} bytes; {_cap_hint()}",
            )
        _scan(handle, size, source, max_depth, cap)
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
