"""RadioML 2016.10a/10b (pickled dict) and 2018.01a (HDF5, read lazily) in their published layouts.

Layouts and facts: ``datasets/`` (one card per dataset). Both loaders accept the real files and the files
``rfml generate`` writes, through the same code.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import h5py
import numpy as np
import torch

from rfml.data import base
from rfml.data.base import (
    PROVENANCE_ATTR,
    Batch,
    DatasetFormatError,
    InMemorySignalDataset,
    SignalDataset,
    brief_repr,
    check_finite,
    check_one_hot,
    check_snrs,
    gather_frames,
    parse_provenance,
    read_sidecar,
    sidecar_path,
)
from rfml.data.safe_pickle import load_array_pickle
from rfml.dsp.synthesizer import CLASSES_RML2018A

# The order of the classes.txt shipped with RadioML 2018.01a. It does not match the one-hot columns
# of Y; the order in CLASSES_RML2018A does (see datasets/rml2018.01a.md).
SHIPPED_CLASSES_RML2018A: list[str] = [
    "32PSK", "16APSK", "32QAM", "FM", "GMSK", "32APSK", "OQPSK", "8ASK", "BPSK", "8PSK", "AM-SSB-SC", "4ASK",
    "16PSK", "64APSK", "128QAM", "128APSK", "AM-DSB-SC", "AM-SSB-WC", "64QAM", "QPSK", "256QAM", "AM-DSB-WC",
    "OOK", "16QAM",
]  # fmt: skip


def parse_key(key: Any, path: str) -> tuple[str, int]:
    """A RadioML 2016 dict key as ``(modulation, SNR dB)``; :class:`DatasetFormatError` naming ``path`` and the key
    unless it is a ``(str, int)`` tuple whose SNR lies in :data:`rfml.data.base.SNR_RANGE_DB`."""
    field = f"key {brief_repr(key)}"
    if (
        not isinstance(key, tuple)
        or len(key) != 2
        or not isinstance(key[0], str)
        or isinstance(key[1], bool)
        or not isinstance(key[1], int | np.integer)
    ):
        raise DatasetFormatError(path, field, "expected a (modulation name: str, SNR in dB: int) tuple")
    return key[0], int(check_snrs([key[1]], path, field)[0])


class RadioML2016(InMemorySignalDataset):
    """RadioML 2016.10a (``RML2016.10a_dict.pkl``) or 2016.10b (``RML2016.10b.dat``), held in memory.

    The file is a pickled dict ``{(modulation, snr_db): float32 (n, 2, L)}``; it is read with a
    restricted unpickler (:mod:`rfml.data.safe_pickle`) and validated key by key: each key a ``(str, int)``
    tuple with its SNR in :data:`rfml.data.base.SNR_RANGE_DB`, each value float32 ``(n, 2, L)`` with finite
    frames (unless ``finite=False``). Examples are ordered key-major: keys sorted by (class, SNR), rows in file
    order within a key. Every refusal is a :class:`DatasetFormatError` naming the file and the key.

    A file written by ``rfml generate`` has a provenance record beside it (``<file>.provenance.json``): the file
    must hold what the record says, and each load logs one ``synthetic data (…) at PATH`` line (logger
    ``rfml.data``). The record is kept as :attr:`provenance`.

    Args:
        path: the pickle.
        finite: refuse a frame holding NaN or ±Inf, naming its key and row (default); ``False`` loads them.
    """

    def __init__(self, path: str | os.PathLike[str], finite: bool = True) -> None:
        self.path = os.fspath(path)
        self.finite = bool(finite)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"{self.path}: no such file")
        record = read_sidecar(sidecar_path(self.path), {"data": self.path})
        data = load_array_pickle(self.path)
        if not isinstance(data, dict) or not data:
            raise DatasetFormatError(
                self.path,
                "<top level>",
                f"expected a non-empty dict {{(modulation, snr): array}}, got {type(data).__name__}",
            )
        keys = [parse_key(key, self.path) for key in data]
        self.classes = sorted({name for name, _ in keys})
        self.snrs = sorted({snr for _, snr in keys})
        order = sorted(range(len(keys)), key=lambda k: (self.classes.index(keys[k][0]), keys[k][1]))
        raw_keys = list(data)
        length: int | None = None
        for k in range(len(raw_keys)):  # file order, so the error names the first offending key
            length = self._check_value(raw_keys[k], data[raw_keys[k]], length)
        counts = [data[raw_keys[k]].shape[0] for k in order]
        self.x = torch.empty(sum(counts), 2, length, dtype=torch.float32)
        start = 0
        for k, count in zip(order, counts, strict=True):
            # Move key by key and drop each array at once, so peak memory stays near one copy.
            self.x[start : start + count] = torch.from_numpy(data.pop(raw_keys[k]))
            start += count
        per_key = torch.tensor(counts)
        self.y = torch.repeat_interleave(torch.tensor([self.classes.index(keys[k][0]) for k in order]), per_key)
        self.snr = torch.repeat_interleave(torch.tensor([keys[k][1] for k in order]), per_key)
        self._identify(self.path, record)

    def _check_value(self, key: Any, value: Any, length: int | None) -> int:
        field = f"key {brief_repr(key)}"
        if not isinstance(value, np.ndarray):
            raise DatasetFormatError(self.path, field, f"expected a numpy array, got {type(value).__name__}")
        if value.dtype != np.float32:
            raise DatasetFormatError(self.path, field, f"expected dtype float32, got {value.dtype}")
        if value.ndim != 3 or value.shape[1] != 2 or value.shape[0] == 0:
            raise DatasetFormatError(self.path, field, f"expected shape (n, 2, length) with n >= 1, got {value.shape}")
        if length is not None and value.shape[2] != length:
            raise DatasetFormatError(
                self.path, field, f"expected frames of {length} samples like the first key, got shape {value.shape}"
            )
        if self.finite:
            check_finite(value, self.path, field)
        return value.shape[2]

    def __repr__(self) -> str:
        return f"RadioML2016({self.path!r}: {len(self)} frames of {self.length}, {len(self.classes)} classes)"


class RadioML2018(SignalDataset):
    """RadioML 2018.01a (``GOLD_XYZ_OSC.0001_1024.hdf5``), read lazily from HDF5.

    A file written by ``rfml generate`` carries its provenance record in the attribute ``rfml_provenance`` (JSON):
    the file must hold what it records, and each load logs one ``synthetic data (…) at PATH`` line.

    Only the labels (``Y`` reduced to class indices, ``Z``) are held in memory; frames are read on
    demand by :meth:`get_batch`, which coalesces the requested rows into contiguous spans (rows at
    most ``max_gap_rows`` apart share one read). Each process opens its own file handle, so the
    dataset is safe in ``DataLoader`` workers.

    Checked on opening, each refusal a :class:`DatasetFormatError` naming the file and the field: ``X``, ``Y``
    and ``Z`` are datasets stored in this file (no external storage, virtual sources in other files or external
    links, unless ``allow_external``); every ``Y`` row holds exactly one 1 and zeros elsewhere; ``Z`` is of an
    integer dtype with every value in :data:`rfml.data.base.SNR_RANGE_DB` (checked before the cast to int64, so
    nothing wraps). With ``finite`` (default) the frames :meth:`frames` reads (for :meth:`get_batch` and the
    training stream alike) are checked for NaN and ±Inf as they are read, the first bad row of the file named: one
    float32 sum per span read, once per row and process (later epochs skip it), where a scan at opening would read
    the whole file (21 GB for the real one) on every open.
    :meth:`scan_finite` checks the whole file at once (``rfml dataset verify`` does).

    Args:
        path: the HDF5 file with ``X`` float32 (N, L, 2), ``Y`` one-hot (N, C), ``Z`` SNR (N, 1).
        class_order: ``"corrected"`` (the order that matches ``Y``, default; a file that names its
            classes in a ``classes`` attribute, as ``rfml dataset convert`` writes them, is read in
            that order), ``"shipped"`` (the order of the dataset's ``classes.txt``, for comparing with
            work that used it), or an explicit list of C names.
        max_gap_rows: unrequested rows that may be read (and dropped) to join two spans.
        check_provenance: check a generated file against its provenance record and announce it (``False``: only
            keep the record, for ``rfml dataset info | verify``, which report on the file themselves).
        finite: refuse a read holding a frame with NaN or ±Inf, naming the frame's row (default); ``False`` reads
            them as they are.
        allow_external: read ``X``, ``Y`` and ``Z`` even when their bytes live outside the file (HDF5 external
            storage, a virtual dataset sourcing another file, an external link). Off by default: such a file can
            make the loader read any file the user can read (``/etc/passwd`` as frames).
    """

    label_chunk_rows = 1 << 16
    read_block_rows = 256  # 2 MiB of frames at L = 1024: one contiguous read per block

    def __init__(
        self,
        path: str | os.PathLike[str],
        class_order: str | Sequence[str] = "corrected",
        max_gap_rows: int = 16,
        check_provenance: bool = True,
        finite: bool = True,
        allow_external: bool = False,
    ) -> None:
        self.path = os.fspath(path)
        self.max_gap_rows = int(max_gap_rows)
        self.finite = bool(finite)
        self.allow_external = bool(allow_external)
        self._handle: h5py.File | None = None
        self._pid = -1
        self._buffers: list[np.ndarray | None] = [None, None]
        self._turn = 0
        handle = self._file()
        x_set, y_set, z_set = (self._field(handle, name) for name in ("X", "Y", "Z"))
        if x_set.dtype != np.float32:
            raise DatasetFormatError(self.path, "X", f"expected dtype float32, got {x_set.dtype}")
        if x_set.ndim != 3 or x_set.shape[2] != 2 or x_set.shape[0] == 0:
            raise DatasetFormatError(self.path, "X", f"expected shape (N, length, 2) with N >= 1, got {x_set.shape}")
        rows = x_set.shape[0]
        if not np.issubdtype(y_set.dtype, np.integer) and not np.issubdtype(y_set.dtype, np.floating):
            raise DatasetFormatError(self.path, "Y", f"expected a numeric one-hot array, got dtype {y_set.dtype}")
        if y_set.ndim != 2 or y_set.shape[0] != rows:
            raise DatasetFormatError(self.path, "Y", f"expected shape ({rows}, classes) to match X, got {y_set.shape}")
        if z_set.shape not in ((rows, 1), (rows,)):
            raise DatasetFormatError(self.path, "Z", f"expected shape ({rows}, 1) to match X, got {z_set.shape}")
        self.classes = self._class_names(class_order, y_set.shape[1])
        self._length = x_set.shape[1]
        self.y, self.snr = self._read_labels(y_set, z_set)
        self._finite_rows = np.zeros(rows, dtype=bool)  # rows of X already read and found finite (``finite``)
        self.snrs = sorted(int(s) for s in torch.unique(self.snr))
        self.names_from_file = "classes" in handle.attrs
        record = self._provenance(handle)
        if check_provenance:
            self._identify(self.path, record)
        else:
            self.provenance = record

    def _provenance(self, handle: h5py.File) -> dict[str, Any] | None:
        """The record ``rfml generate`` stores in the file attribute ``rfml_provenance``; None for other files."""
        raw = handle.attrs.get(PROVENANCE_ATTR)
        if raw is None:
            return None
        text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        return parse_provenance(text, f"{self.path} (attribute {PROVENANCE_ATTR})")

    def _field(self, handle: h5py.File, name: str) -> h5py.Dataset:
        link = handle.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink) and not self.allow_external:
            # Refused before it is followed: opening the target (a FIFO, a device) could itself hang or read.
            self._refuse_outside(name, f"an external link to {link.path!r} in {link.filename}")
        if link is None or name not in handle:
            raise DatasetFormatError(self.path, name, f"missing; the file has {sorted(handle.keys())}")
        field = handle[name]
        if not isinstance(field, h5py.Dataset):
            raise DatasetFormatError(self.path, name, "expected an HDF5 dataset, found a group")
        if not self.allow_external:
            self._check_storage(name, field)
        return field

    def _check_storage(self, name: str, field: h5py.Dataset) -> None:
        """Refuse ``field`` when its bytes live outside this file: reached through links into another file, kept
        in HDF5 external storage (raw files named by the dataset), or a virtual dataset sourcing another file."""
        here = os.path.realpath(self.path)
        if os.path.realpath(field.file.filename) != here:
            self._refuse_outside(name, f"a link into another file, {field.file.filename}")
        if field.external:
            files = sorted({os.fsdecode(entry[0]) for entry in field.external})
            self._refuse_outside(name, f"kept in HDF5 external storage, in the raw file(s) {files}")
        if field.is_virtual:
            sources = {source.file_name for source in field.virtual_sources()}
            outside = sorted(f for f in sources if f != "." and os.path.realpath(f) != here)
            if outside:
                self._refuse_outside(name, f"a virtual dataset whose data comes from {outside}")

    def _refuse_outside(self, name: str, what: str) -> None:
        raise DatasetFormatError(
            self.path,
            name,
            f"is {what}, outside this file; expected data stored in the file itself (a crafted file can make the "
            "reader return the bytes of any file you can read); pass allow_external=True "
            "(config: data.init_args.allow_external: true) if you made this file and trust it",
        )

    def scan_finite(self) -> None:
        """Raise :class:`DatasetFormatError` naming the first row of ``X`` holding NaN or ±Inf.

        ``X`` is read in blocks of at most :data:`rfml.data.base.FINITE_CHUNK_BYTES` into one reused buffer, so
        memory stays bounded whatever the size of the file (``rfml dataset verify`` runs it; :meth:`frames` checks
        the rows it reads).
        """
        x_set = self._file()["X"]
        rows = x_set.shape[0]
        step = max(1, base.FINITE_CHUNK_BYTES // max(1, self._length * 2 * x_set.dtype.itemsize))
        buffer = np.empty((min(step, rows), self._length, 2), dtype=x_set.dtype)
        for first in range(0, rows, step):
            block = buffer[: min(step, rows - first)]
            try:
                x_set.read_direct(block, np.s_[first : first + len(block)])
            except OSError as err:
                raise DatasetFormatError(
                    self.path, "X", f"rows {first}..{first + len(block) - 1} unreadable ({err}); is the file truncated?"
                ) from None
            check_finite(block, self.path, "X", first_row=first)

    def _class_names(self, class_order: str | Sequence[str], columns: int) -> list[str]:
        if class_order == "corrected":
            stored = self._file().attrs.get("classes")
            names = list(CLASSES_RML2018A) if stored is None else [str(name) for name in stored]
        elif class_order == "shipped":
            names = list(SHIPPED_CLASSES_RML2018A)
        elif isinstance(class_order, str):
            raise ValueError(f"class_order must be 'corrected', 'shipped' or a list of names, got {class_order!r}")
        else:
            names = [str(name) for name in class_order]
        if len(names) != columns:
            raise DatasetFormatError(
                self.path, "Y", f"has {columns} one-hot columns but class_order names {len(names)} classes"
            )
        return names

    def _read_labels(self, y_set: h5py.Dataset, z_set: h5py.Dataset) -> tuple[torch.Tensor, torch.Tensor]:
        # Y is 8 bytes x classes per row (490 MB for the real file): reduce it chunk by chunk.
        rows = y_set.shape[0]
        y = np.empty(rows, dtype=np.int64)
        for first in range(0, rows, self.label_chunk_rows):
            block = self._read(y_set, slice(first, first + self.label_chunk_rows))
            y[first : first + len(block)] = check_one_hot(block, self.path, "Y", first)
        snr = check_snrs(self._read(z_set, slice(None)).reshape(rows), self.path, "Z")
        return torch.from_numpy(y), torch.from_numpy(snr)

    def _read(self, field: h5py.Dataset, selection: Any) -> np.ndarray:
        try:
            return field[selection]
        except OSError as err:
            raise DatasetFormatError(
                self.path, field.name.lstrip("/"), f"unreadable ({err}); is the file truncated?"
            ) from None

    def _file(self) -> h5py.File:
        if self._handle is None or self._pid != os.getpid():
            # A handle inherited through fork must not be used; open a fresh one per process.
            try:
                self._handle = h5py.File(self.path, "r")
            except FileNotFoundError:
                raise FileNotFoundError(f"{self.path}: no such file") from None
            except OSError as err:
                sizes = re.search(r"eof = (\d+).*stored_eof = (\d+)", str(err))
                problem = (
                    f"truncated: the file holds {sizes[1]} bytes but its HDF5 superblock records {sizes[2]}"
                    if sizes
                    else f"not a readable HDF5 file ({err})"
                )
                raise DatasetFormatError(self.path, "<HDF5 superblock>", problem) from None
            self._pid = os.getpid()
        return self._handle

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handle"], state["_pid"], state["_buffers"] = None, -1, [None, None]
        return state

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    @property
    def length(self) -> int:
        return self._length

    def spans(self, rows: np.ndarray) -> np.ndarray:
        """Contiguous ``[start, stop)`` row spans, ``(S, 2)``, covering the sorted unique ``rows``."""
        if rows.size == 0:
            return np.empty((0, 2), dtype=np.int64)
        breaks = np.flatnonzero(np.diff(rows) > self.max_gap_rows + 1)
        starts = rows[np.concatenate(([0], breaks + 1))]
        stops = rows[np.concatenate((breaks, [rows.size - 1]))] + 1
        return np.stack([starts, stops], axis=1)

    def frames(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Read ``rows`` (any order, repeats allowed) in span reads; see :meth:`SignalDataset.frames`.

        The returned frames are a ``[R, 2, L]`` view of a buffer stored ``[R, L, 2]`` as in the file
        (no transposing copy here; the caller's gather does it), valid until the call after next.
        """
        rows = np.asarray(rows, dtype=np.int64)
        unique, inverse = np.unique(rows, return_inverse=True)
        spans = self.spans(unique)
        widths = spans[:, 1] - spans[:, 0]
        total = int(widths.sum())
        # Two buffers, used in turn: a reader can fill one while the caller still gathers from the
        # other, and reusing them avoids faulting in fresh pages for every window.
        self._turn ^= 1
        held = self._buffers[self._turn]
        if held is None or held.shape[0] < total or held.shape[0] > 4 * max(total, 1):
            held = self._buffers[self._turn] = np.empty((total, self.length, 2), dtype=np.float32)
        buffer = held[:total]
        x_set = self._file()["X"]
        offset = 0
        for (start, stop), width in zip(spans.tolist(), widths.tolist(), strict=True):
            try:
                x_set.read_direct(buffer, np.s_[start:stop], np.s_[offset : offset + width])
            except OSError as err:
                raise DatasetFormatError(
                    self.path, "X", f"rows {start}..{stop - 1} unreadable ({err}); is the file truncated?"
                ) from None
            if self.finite and not self._finite_rows[start:stop].all():
                self._check_finite(buffer[offset : offset + width], start, stop)
            offset += width
        # Buffer row of each unique row: its span's offset in the buffer plus its offset in the span.
        span_of = np.searchsorted(spans[:, 0], unique, side="right") - 1
        positions = (np.cumsum(widths) - widths)[span_of] + (unique - spans[span_of, 0])
        return torch.from_numpy(buffer).transpose(1, 2), torch.from_numpy(positions[inverse])

    def _check_finite(self, block: np.ndarray, start: int, stop: int) -> None:
        """Check rows ``start..stop`` of ``X``, just read into ``block``, once per process: one float32 sum is the
        cheap pass (NaN and Inf carry through it), and only a sum that is not finite (a bad frame, or finite values
        summing past float32's range) makes :func:`check_finite` look for the row. Rows found finite are
        remembered, so a training's later epochs skip the check."""
        if not np.isfinite(block.sum()):
            check_finite(block, self.path, "X", first_row=start)
        self._finite_rows[start:stop] = True

    def get_batch(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> Batch:
        idx = self._check_indices(indices)
        frames, positions = self.frames(idx)
        rows = torch.from_numpy(idx)
        return {"x": gather_frames(frames, positions).contiguous(), "y": self.y[rows], "snr": self.snr[rows]}

    def __repr__(self) -> str:
        return f"RadioML2018({self.path!r}: {len(self)} frames of {self.length}, {len(self.classes)} classes)"
