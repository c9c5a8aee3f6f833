"""Loading dataset pickles without running code: a restricted unpickler that admits only numpy arrays.

A pickle names the callables it wants called while loading; a crafted one can name ``os.system``.
The unpickler here resolves only the few numpy reconstruction functions that an array pickle needs
(protocols 2 to 5, written by numpy 1 or 2, Python 2 or 3) and refuses everything else before it
is called.
"""

from __future__ import annotations

import _codecs
import functools
import os
import pickle
from typing import Any

import numpy as np
from numpy._core import multiarray as _multiarray
from numpy._core import numeric as _numeric


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asked for a callable that a plain numpy-array pickle never needs."""


def _latin1_encode(text: str, encoding: str = "latin1", *, source: str) -> bytes:
    # Protocol-2 pickles written by Python 3 carry bytes as _codecs.encode(text, "latin1"); any
    # other codec name is refused so a pickle cannot make us import an arbitrary codec module.
    if encoding not in ("latin1", "latin-1", "iso-8859-1"):
        raise UnsafePickleError(f"{source}: refused _codecs.encode with encoding {encoding!r}; only latin1 is admitted")
    return _codecs.encode(text, encoding)


_ADMITTED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ADMITTED[(_module, "_reconstruct")] = _multiarray._reconstruct
    _ADMITTED[(_module, "scalar")] = _multiarray.scalar
for _module in ("numpy.core.numeric", "numpy._core.numeric"):
    _ADMITTED[(_module, "_frombuffer")] = _numeric._frombuffer
# Protocol-2 pickles written by Python 3 store an empty bytes object (an array with no elements) as a call to bytes().
for _module in ("__builtin__", "builtins"):
    _ADMITTED[(_module, "bytes")] = bytes


class _ArrayUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, source: str) -> None:
        super().__init__(file, encoding="latin1")  # Python-2 pickles hold str as 8-bit text
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):
            return functools.partial(_latin1_encode, source=self._source)
        try:
            return _ADMITTED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._source}: refused to load {module}.{name}; a dataset pickle may only hold numpy arrays, "
                "dicts, tuples, lists, strings and numbers (the file may be crafted to run code, so nothing "
                "in it was executed)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._source}: refused a persistent-id reference {pid!r}")


def load_array_pickle(path: str | os.PathLike[str]) -> Any:
    """Load a pickle holding only numpy arrays, scalars and plain containers.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafePickleError: the pickle references anything else (nothing is executed).
        ValueError: the file is truncated or is not a pickle.
    """
    source = os.fspath(path)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"{source}: no such file")
    with open(source, "rb") as handle:
        try:
            obj = _ArrayUnpickler(handle, source).load()
        except UnsafePickleError:
            raise
        except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError, MemoryError) as err:
            raise ValueError(f"{source}: not a readable pickle (truncated or corrupt): {err}") from None
    _reject_object_arrays(obj, source)
    return obj


def _reject_object_arrays(obj: Any, source: str) -> None:
    # Object arrays are not part of any dataset layout; refusing them keeps the result plain data.
    pending, seen = [obj], set()
    while pending:
        item = pending.pop()
        if id(item) in seen:  # a pickle may hold a container that contains itself
            continue
        seen.add(id(item))
        if isinstance(item, np.ndarray):
            if item.dtype.hasobject:
                raise UnsafePickleError(f"{source}: holds an object array; dataset arrays must be numeric")
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            pending.extend(item)
