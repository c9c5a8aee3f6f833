"""The dataset contract shared by real and synthetic signal datasets: x float32 [2, L], y and snr int64."""

from __future__ import annotations

import json
import logging
import os
import reprlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ondevice.errors import InputError

Batch = dict[str, torch.Tensor]

log = logging.getLogger("rfml.data")


def gather_frames(frames: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``frames[positions]`` as whole-row copies in the layout ``frames`` is stored in.

    A ``[R, 2, L]`` transposed view of ``[R, L, 2]`` rows (a RadioML 2018 read) is gathered as
    ``[L, 2]`` rows at memcpy speed and returned as a ``[B, 2, L]`` view again; gathering it
    element by element through the view costs about 3x more.
    """
    stored = frames.transpose(1, 2)
    if not frames.is_contiguous() and stored.is_contiguous():
        return stored.index_select(0, positions).transpose(1, 2)
    return frames.index_select(0, positions)


class DatasetFormatError(ValueError, InputError):
    """A dataset file does not have the expected layout; the message names the file and the field.

    An :class:`ondevice.errors.InputError`, so the commands print it as one line with exit code 2.
    """

    def __init__(self, path: str, field: str, problem: str) -> None:
        super().__init__(f"{path}: field {field!r}: {problem}")
        self.path = path
        self.field = field
        self.problem = problem


class DatasetIdentityError(DatasetFormatError):
    """A dataset file is readable but is not the data asked for (per-key count, classes, SNRs, or the preset, seed,
    channel or per_key of its provenance record); the message says what differs and how to regenerate it."""


# ---- value checks shared by every loader: one-hot labels, SNRs, finite frames -------------------------------------

# The SNR labels a loader admits, in dB (both ends included). The published sets span -20..30 dB; anything far
# outside is a corrupt or crafted file, and a bound keeps every SNR well inside int64 (no overflow, no wrap).
SNR_RANGE_DB = (-100, 100)
# The finite check reads frames in blocks of at most this many bytes, so its memory stays bounded on any file.
FINITE_CHUNK_BYTES = 64 << 20
FINITE_HINT = "pass finite=False (config: data.init_args.finite: false) to load non-finite frames anyway"


def brief_repr(value: Any, depth: int = 0) -> str:
    """``repr(value)`` for a value read from a file, bounded in size and never raising.

    An integer longer than 256 bits is shown by its size (Python refuses to print more than 4300 digits), and long
    or deep containers and strings are cut short, so a message about a crafted key can neither fail nor flood.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value) if value.bit_length() <= 256 else f"<an integer of {value.bit_length()} bits>"
    if isinstance(value, tuple) and depth < 3 and len(value) <= 4:
        items = [brief_repr(item, depth + 1) for item in value]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    if isinstance(value, np.generic | float | type(None)) or (isinstance(value, str | bytes) and len(value) <= 100):
        return repr(value)
    try:
        return reprlib.repr(value)
    except (ValueError, RecursionError):
        return f"<a {type(value).__name__}>"


def check_one_hot(block: np.ndarray, path: str, field: str, first_row: int = 0) -> np.ndarray:
    """The class index of each row of a one-hot ``block`` (rows ``first_row`` on of ``field``), as int64.

    Every row must hold exactly one 1 and zeros elsewhere (any numeric dtype; a NaN, a 2 or a -1 is refused even
    where the row sums to 1). Raises :class:`DatasetFormatError` naming the first row that is not.
    """
    ones = block == 1
    valid = ((ones | (block == 0)).all(axis=1)) & (ones.sum(axis=1) == 1)
    if not valid.all():
        bad = int(np.flatnonzero(~valid)[0])
        shown = str(block[bad][:32].tolist())[:-1] + (", …]" if block.shape[1] > 32 else "]")
        raise DatasetFormatError(
            path, field, f"row {first_row + bad} is not one-hot: {shown}; expected exactly one 1 and zeros elsewhere"
        )
    return ones.argmax(axis=1).astype(np.int64)


def check_snrs(values: np.ndarray | Sequence[int], path: str, field: str, row_name: str = "row") -> np.ndarray:
    """``values`` as int64 SNRs in dB, each checked to lie in :data:`SNR_RANGE_DB` before any cast.

    ``values`` is a numpy array of an integer dtype (``uint64`` included: a value that does not fit is refused,
    never wrapped) or a sequence of Python integers of any size (a pickle's keys), compared as Python integers.
    Raises :class:`DatasetFormatError` naming ``field`` and the first ``row_name`` out of range (the row index;
    a single value is named by ``field`` alone).
    """
    low, high = SNR_RANGE_DB
    expected = f"expected an SNR in {low}..{high} dB"
    if not isinstance(values, np.ndarray):
        numbers = [int(value) for value in values]  # exact for Python and numpy integers of any width
        bad = next((k for k, value in enumerate(numbers) if not low <= value <= high), None)
        if bad is not None:
            where = f"{row_name} {bad} holds" if len(numbers) > 1 else "holds"
            raise DatasetFormatError(path, field, f"{where} {brief_repr(numbers[bad])} dB; {expected}")
        return np.asarray(numbers, dtype=np.int64)
    if not np.issubdtype(values.dtype, np.integer):
        raise DatasetFormatError(path, field, f"expected an integer SNR array, got dtype {values.dtype}")
    # Compare in the array's own dtype, against bounds that fit it: nothing is cast before it is known to fit.
    info = np.iinfo(values.dtype)
    inside = (values >= values.dtype.type(max(low, info.min))) & (values <= values.dtype.type(min(high, info.max)))
    if not inside.all():
        flat = values.reshape(-1)
        bad = int(np.flatnonzero(~inside.reshape(-1))[0])
        raise DatasetFormatError(path, field, f"{row_name} {bad} holds {int(flat[bad])} dB; {expected}")
    return values.astype(np.int64)


def check_finite(
    frames: np.ndarray,
    path: str,
    field: str,
    first_row: int = 0,
    describe: Callable[[int], str] = "row {}".format,
) -> None:
    """Raise :class:`DatasetFormatError` naming the first row of ``frames`` (``[rows, ...]``) holding NaN or ±Inf.

    Rows are numbered from ``first_row`` (for a block read from a larger file) and named by ``describe`` (default
    ``row N``). The check is vectorised over blocks of at most :data:`FINITE_CHUNK_BYTES`, so its temporary memory
    is a fraction of that whatever the size of ``frames``.
    """
    rows = len(frames)
    if rows == 0:
        return
    step = max(1, FINITE_CHUNK_BYTES // max(1, frames[0].nbytes))
    for start in range(0, rows, step):
        block = frames[start : start + step]
        good = np.isfinite(block).reshape(len(block), -1).all(axis=1)
        if good.all():
            continue
        bad = start + int(np.flatnonzero(~good)[0])
        nans, infs = int(np.isnan(frames[bad]).sum()), int(np.isinf(frames[bad]).sum())
        found = ", ".join(f"{count} {name}" for count, name in ((nans, "NaN"), (infs, "Inf")) if count)
        raise DatasetFormatError(
            path,
            field,
            f"{describe(first_row + bad)} holds non-finite values ({found}); expected finite frames; {FINITE_HINT}",
        )


# ---- provenance: what a generated file records about how it was made --------------------------------------------

PROVENANCE_ATTR = "rfml_provenance"  # the HDF5 file attribute (a JSON string) that holds the record
SIDECAR_SUFFIX = ".provenance.json"  # a pickle's record: <file>.provenance.json beside it
ISM_RECORD = "provenance.json"  # the ISM folder's record, beside data_iq.p and labels.p
PROVENANCE_FIELDS = ("preset", "seed", "channel", "per_key", "classes", "snrs", "length", "version")


def sidecar_path(path: str | os.PathLike[str]) -> str:
    """Where the provenance record of a pickled dataset file lives: ``<path>.provenance.json``."""
    return os.fspath(path) + SIDECAR_SUFFIX


def parse_provenance(text: str, where: str) -> dict[str, Any]:
    """A provenance record from its JSON text, checked for the fields :data:`PROVENANCE_FIELDS`."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise DatasetFormatError(where, "<provenance>", f"not valid JSON ({err})") from None
    if not isinstance(record, dict):
        raise DatasetFormatError(where, "<provenance>", f"expected a JSON object, found {type(record).__name__}")
    missing = [name for name in PROVENANCE_FIELDS if name not in record]
    if missing:
        raise DatasetFormatError(where, "<provenance>", f"missing {missing}; a record written by rfml has them all")
    return record


def read_sidecar(record_path: str, data_files: Mapping[str, str]) -> dict[str, Any] | None:
    """The provenance record at ``record_path`` (``None`` when there is none), checked against ``data_files``
    (name in the record -> path): each file must still have the size recorded when it was written."""
    if not os.path.isfile(record_path):
        return None
    with open(record_path, encoding="utf-8") as handle:
        record = parse_provenance(handle.read(), record_path)
    sizes = record.get("files")
    if not isinstance(sizes, dict):
        raise DatasetFormatError(record_path, "files", "expected an object {file name: size in bytes}")
    for name, path in data_files.items():
        if not os.path.isfile(path):
            continue  # the loader names the missing file
        found = os.path.getsize(path)
        if sizes.get(name) != found:
            raise DatasetIdentityError(
                path,
                "<file bytes>",
                f"its provenance record {record_path} was written for {sizes.get(name)} bytes, the file has {found}: "
                f"it was replaced or changed since it was generated; delete {record_path} if this is real data, "
                "or regenerate the file",
            )
    return record


def regenerate_command(preset: str, per_key: int, seed: int, channel: str | None, out: str) -> str:
    """The ``rfml generate`` command line that writes ``preset`` with these settings to ``out``, in backquotes."""
    channel_flag = f" --channel {channel}" if channel else ""
    return f"`rfml generate --preset {preset} --per-key {per_key} --seed {seed}{channel_flag} --out {out}`"


def describe_provenance(record: Mapping[str, Any]) -> str:
    return f"preset {record['preset']}, seed {record['seed']}, channel {record['channel']}, per_key {record['per_key']}"


def announce_synthetic(path: str, record: Mapping[str, Any]) -> None:
    """Log the one line every load of a generated file gives: ``synthetic data (preset …) at PATH``.

    A warning, so it is seen without any logging set up (Python's last-resort handler prints warnings to stderr):
    a run on synthetic data that looks like a run on the real set is the mistake this line exists to catch. Raise
    the ``rfml.data`` logger's level to hide it.
    """
    log.warning("synthetic data (%s) at %s", describe_provenance(record), path)


def key_counts(y: torch.Tensor, snr: torch.Tensor, num_classes: int, snrs: Sequence[int]) -> torch.Tensor:
    """Examples per (class, SNR) key, ``int64 [num_classes, len(snrs)]``, for labels ``y`` and SNRs ``snr``."""
    grid = torch.as_tensor(list(snrs), dtype=torch.int64)
    position = torch.searchsorted(grid, snr)
    keys = y * len(grid) + position.clamp(max=len(grid) - 1)
    return torch.bincount(keys, minlength=num_classes * len(grid)).reshape(num_classes, len(grid))


def check_identity(
    dataset: SignalDataset,
    path: str,
    classes: Sequence[str],
    snrs: Sequence[int],
    per_key: int,
    source: str,
    hint: str,
) -> None:
    """Raise :class:`DatasetIdentityError` unless ``dataset`` holds the class set ``classes``, the SNR grid ``snrs``
    and ``per_key`` examples in every (class, SNR) key. ``source`` names who expects that (``"the config"``) and
    ``hint`` says how to get the right file; both go into the message."""
    if not dataset.names_from_file:
        if len(dataset.classes) != len(classes):
            raise DatasetIdentityError(
                path, "classes", f"holds {len(dataset.classes)} classes, {source} expects {len(classes)}; {hint}"
            )
    elif sorted(dataset.classes) != sorted(classes):
        missing = [name for name in classes if name not in dataset.classes]
        extra = [name for name in dataset.classes if name not in classes]
        found = "; ".join(f"{what} {names}" for what, names in (("missing", missing), ("extra", extra)) if names)
        raise DatasetIdentityError(
            path, "classes", f"holds {len(dataset.classes)} classes, {source} expects {len(classes)}: {found}; {hint}"
        )
    if list(dataset.snrs) != list(snrs):
        missing = sorted(set(snrs) - set(dataset.snrs))
        extra = sorted(set(dataset.snrs) - set(snrs))
        found = "; ".join(f"{what} {values}" for what, values in (("missing", missing), ("extra", extra)) if values)
        raise DatasetIdentityError(
            path,
            "SNR grid",
            f"holds SNRs {list(dataset.snrs)} dB, {source} expects {list(snrs)} dB: {found}; {hint}",
        )
    counts = key_counts(dataset.y, dataset.snr, len(dataset.classes), dataset.snrs)
    wrong = counts != per_key
    if bool(wrong.any()):
        low, high = int(counts.min()), int(counts.max())
        held = f"{low}" if low == high else f"{low} to {high}"
        raise DatasetIdentityError(
            path,
            "per_key",
            f"holds {held} examples per (class, SNR) key ({int(wrong.sum())} of {counts.numel()} keys differ), "
            f"{source} expects per_key {per_key}; {hint}",
        )


class SignalDataset(Dataset[Batch], ABC):
    """A labelled set of IQ frames.

    Subclasses set ``classes`` (names, index = label), ``snrs`` (the dB values present),
    ``y`` and ``snr`` (int64 label tensors for every example, so splits and filters never read the
    signals) and implement :meth:`get_batch`. ``__getitems__`` lets a ``DataLoader`` with a batch
    sampler take the batched path.
    """

    classes: list[str]
    snrs: list[int]
    y: torch.Tensor
    snr: torch.Tensor
    # How a generated file was made (see :func:`parse_provenance`); None for real data and on-the-fly sets.
    provenance: dict[str, Any] | None = None
    # Whether ``classes`` are names the file stores (a RadioML 2018 file stores only one-hot columns).
    names_from_file = True
    # Rows per shuffled block when reading in bulk (see rfml.data.sampling): 1, a full shuffle, for
    # data in memory or generated; file-backed data reads larger contiguous blocks.
    read_block_rows = 1

    def __len__(self) -> int:
        return int(self.y.numel())

    @property
    @abstractmethod
    def length(self) -> int:
        """Complex samples per frame."""

    def _identify(self, path: str, record: dict[str, Any] | None) -> None:
        """Keep ``record`` (a generated file's provenance), check that the file holds what it records, announce it."""
        self.provenance = record
        if record is None:
            return
        check_identity(
            self,
            path,
            record["classes"],
            record["snrs"],
            int(record["per_key"]),
            "its provenance record",
            "the file was changed after rfml generate wrote it; regenerate it: "
            + regenerate_command(
                record["preset"], int(record["per_key"]), int(record["seed"]), record["channel"], path
            ),
        )
        announce_synthetic(path, record)

    @abstractmethod
    def get_batch(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> Batch:
        """``{"x": float32 [B, 2, L], "y": int64 [B], "snr": int64 [B]}`` for ``indices``."""

    def frames(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames holding ``rows`` and the position of each row in them: ``(frames [R, 2, L], positions [B])``.

        The bulk read behind :class:`rfml.data.sampling.BatchStream`: ``frames[positions]`` are the
        requested frames. ``frames`` may be a strided view (an in-memory dataset returns all of its
        frames without copying; a file-backed one returns what it read) and is only valid until the
        next call.
        """
        return self.get_batch(rows)["x"], torch.arange(len(rows))

    def __getitem__(self, index: int) -> Batch:
        batch = self.get_batch([int(index)])
        return {key: value[0] for key, value in batch.items()}

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        return self.get_batch(indices)

    def _check_indices(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
        raw = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices)
        if raw.ndim != 1:
            raise ValueError(f"indices must be one-dimensional, got shape {raw.shape}")
        if raw.size and raw.dtype.kind not in "iu":  # floats would be truncated ([1.5, 2.7] read rows 1 and 2)
            raise ValueError(f"indices must be integers (an integer dtype), got dtype {raw.dtype}")
        if raw.dtype.kind == "u" and raw.size and int(raw.max()) >= len(self):  # before the cast, which would wrap
            raise IndexError(f"index {int(raw.max())} is out of range for a dataset of {len(self)} examples")
        idx = raw.astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            bad = int(idx.min()) if idx.min() < 0 else int(idx.max())
            raise IndexError(f"index {bad} is out of range for a dataset of {len(self)} examples")
        return idx


class InMemorySignalDataset(SignalDataset):
    """A dataset whose frames are all held in one ``x`` tensor, ``[N, 2, L]``."""

    x: torch.Tensor

    @property
    def length(self) -> int:
        return int(self.x.shape[2])

    def get_batch(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> Batch:
        idx = torch.from_numpy(self._check_indices(indices))
        return {"x": self.x[idx], "y": self.y[idx], "snr": self.snr[idx]}

    def frames(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x, torch.as_tensor(rows, dtype=torch.int64)


class ClassSubset(SignalDataset):
    """``dataset`` with its classes narrowed to ``keep`` and renumbered: class ``keep[i]`` becomes label ``i``.

    Rows of the other classes keep their place but get label -1; callers leave them out of their splits (band
    selection drops the classes that have no energy in the kept band this way). Frames are read from ``dataset``.
    """

    def __init__(self, dataset: SignalDataset, keep: Sequence[int]) -> None:
        keep = [int(k) for k in keep]
        if not keep or len(set(keep)) != len(keep) or min(keep) < 0 or max(keep) >= len(dataset.classes):
            raise ValueError(f"keep must list distinct class indices in [0, {len(dataset.classes)}), got {keep}")
        self.dataset = dataset
        self.keep = keep
        self.classes = [dataset.classes[k] for k in keep]
        self.snrs = list(dataset.snrs)
        self.read_block_rows = dataset.read_block_rows
        self._table = torch.full((len(dataset.classes),), -1, dtype=torch.int64)
        self._table[torch.tensor(keep)] = torch.arange(len(keep))
        self.y = self._table[dataset.y]
        self.snr = dataset.snr

    @property
    def length(self) -> int:
        return self.dataset.length

    def get_batch(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> Batch:
        batch = self.dataset.get_batch(indices)
        return {**batch, "y": self._table[batch["y"]]}

    def frames(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.dataset.frames(rows)

    def __repr__(self) -> str:
        return f"ClassSubset({self.dataset!r}, {len(self.classes)} of {len(self.dataset.classes)} classes)"
