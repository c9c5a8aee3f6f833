"""The opcode scan of :mod:`rfml.data.safe_pickle`: what a pickle would build, bounded before anything is built.

The stream is walked once up to STOP with a model of the unpickler's stack, marks and memo, payloads skipped, and
refused (an :class:`UnsafePickleError` naming the file) when it nests deeper than asked, reaches far past its memo,
declares more bytes than the file holds, uses persistent ids, extension codes or out-of-band buffers, builds dict
keys or set members whose hashing would visit more objects than the file has bytes, or would take more memory than
the cap. A truncated or corrupt stream is a ``ValueError`` saying "PATH: not a readable pickle".
"""

from __future__ import annotations

import os
import pickle
import pickletools
import reprlib
from typing import Any, BinaryIO, NoReturn

from rfml.data.base import DatasetFormatError

DEFAULT_MAX_BYTES = 4 << 30
"""The default cap on the memory a pickle may make the reader allocate (and on the file's size): 4 GiB."""

MAX_BYTES_ENV = "RFML_PICKLE_MAX_BYTES"
"""The environment variable that replaces :data:`DEFAULT_MAX_BYTES` (a whole number of bytes)."""

_OBJECT_COST = 64  # bytes charged per opcode: a new object, or a reference and a container slot
_SET_COST = 256  # an empty set or frozenset is 216 bytes
_MEMO_SLACK = 1024  # a memo index may run this far past the entries stored (Python 2 skips a few)
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


def show_value(value: Any) -> str:
    # A bounded repr: the values come from the file (long strings, deep tuples, ints of a million digits).
    try:
        return reprlib.repr(value)
    except ValueError:
        return f"<a {type(value).__name__}>"


def cap_hint() -> str:
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


def scan_opcodes(handle: BinaryIO, size: int, source: str, max_depth: int, max_bytes: int) -> None:
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
                        corrupt(f"{name} at byte {pos} gives the memo index {show_value(head)}")
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
                f"more than the cap of {max_bytes} bytes; {cap_hint()}"
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
