"""The dataset cards in code, and reading what a dataset file holds (layout, classes, SNRs, counts, arrays).

What a published dataset should hold is its preset in :data:`rfml.data.synthetic.PRESETS` (class order, SNR
grid, frame length, examples per key, file layout) plus, here, what each layout stores per field and what each
card adds (title, sha256). The cards in ``datasets/`` state the same facts for readers.
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from rfml.data.base import (
    ISM_RECORD,
    PROVENANCE_ATTR,
    DatasetFormatError,
    check_finite,
    describe_provenance,
    parse_provenance,
    read_sidecar,
    sidecar_path,
)
from rfml.data.ism import check_vectors_finite
from rfml.data.radioml import RadioML2018, parse_key
from rfml.data.safe_pickle import load_array_pickle
from rfml.data.synthetic import PRESETS, DatasetPreset

CONVERTED_FORMAT = "rfml-radioml2016-hdf5"  # the "format" attribute of files `rfml dataset convert` writes


@dataclass(frozen=True)
class Card:
    """What ``datasets/<preset>.md`` records beyond the preset: a title and the published file's sha256."""

    preset: str
    title: str
    sha256: str | None = None  # None: the sources this project relies on give no checksum


CARDS: dict[str, Card] = {
    card.preset: card
    for card in (
        Card("rml2016.10a", "RadioML 2016.10a"),
        Card("rml2016.10b", "RadioML 2016.10b"),
        Card("rml2018.01a", "RadioML 2018.01a"),
        Card("ism2017", "ISM interference (Schmidt et al., 2.4 GHz)"),
    )
}

# Per layout: each array field and the dtype the published files use ("floating"/"integer": any width).
DTYPES: dict[str, dict[str, str]] = {
    "pickle": {"key": "float32"},
    "hdf5": {"X": "float32", "Y": "int64", "Z": "int64"},
    "ism": {"data_iq": "floating", "labels": "integer"},
}
LAYOUTS: dict[str, str] = {
    "pickle": "a pickled dict {(modulation, SNR dB): float32 (n, 2, length)} (RadioML 2016)",
    "hdf5": "HDF5 datasets X float32 (N, length, 2), Y one-hot int64 (N, classes), Z int64 SNR (N, 1) (RadioML 2018)",
    "ism": "a folder with data_iq.p (classes, SNRs, vectors, length, 2) and labels.p (classes, SNRs, vectors)",
}
# The field each check names, per layout.
FIELDS: dict[str, dict[str, str]] = {
    "pickle": {"classes": "keys (modulation)", "snrs": "keys (SNR dB)"},
    "hdf5": {"classes": "Y", "snrs": "Z"},
    "ism": {"classes": "data_iq axis 0 (class)", "snrs": "data_iq axis 1 (SNR)"},
}


@dataclass
class Array:
    """One array-valued field of a dataset file."""

    field: str
    shape: tuple[int, ...]
    dtype: str
    kind: str  # the DTYPES entry it is checked against


@dataclass
class DatasetInfo:
    """What a dataset file holds, as read from it (see :func:`info`)."""

    path: str
    layout: str  # "pickle", "hdf5" or "ism"
    files: dict[str, int]  # file -> bytes
    dataset: str | None = None  # the card it matches (stored by convert, or detected from its classes)
    classes: list[str] | None = None  # names, where the file stores them
    num_classes: int = 0
    snrs: list[int] = field(default_factory=list)
    counts: dict[tuple[int, int], int] = field(default_factory=dict)  # (class index, SNR dB) -> examples
    length: int | None = None
    arrays: list[Array] = field(default_factory=list)
    format: str | None = None
    # (check, field, problem) met in reading: layout faults, SNRs out of range, non-finite frames
    problems: list[tuple[str, str, str]] = field(default_factory=list)
    label_error: str | None = None  # why the labels could not be counted, if they could not
    provenance: dict[str, Any] | None = None  # the record of a file rfml generate wrote; None for other files

    @property
    def examples(self) -> int:
        return sum(self.counts.values())

    @property
    def data_file(self) -> str:
        return next(iter(self.files))

    def class_names(self, card: DatasetPreset | None = None) -> list[str]:
        """Stored names; else the card's, by position; else ``class i``."""
        if self.classes is not None:
            return self.classes
        known = card.classes if card is not None else []
        return [known[i] if i < len(known) else f"class {i}" for i in range(self.num_classes)]

    def describe(self) -> str:
        card = PRESETS.get(self.dataset or "")
        names = self.class_names(card)
        per_key = sorted(Counter(self.counts.values()).items())
        lines = [
            f"path:     {self.path}",
            f"layout:   {LAYOUTS[self.layout]}" + (f" [format {self.format}]" if self.format else ""),
            *(f"file:     {name} ({size:,} bytes)" for name, size in self.files.items()),
            f"card:     {CARDS[self.dataset].title} ({self.dataset})" if self.dataset else "card:     none matches",
            f"classes:  {len(names)}" + (" (names from the card)" if self.classes is None else "") + f": {names}",
            f"SNRs:     {snr_grid(self.snrs)}",
            f"examples: {self.examples:,} in {len(self.counts)} (class, SNR) keys: "
            + ", ".join(f"{keys} of {count}" for count, keys in per_key),
            f"length:   {self.length} complex samples per frame",
            "made by:  "
            + (
                f"rfml generate ({describe_provenance(self.provenance)}, version {self.provenance['version']})"
                if self.provenance
                else "no provenance record (not written by rfml generate)"
            ),
        ]
        if self.layout == "pickle":
            frames = Counter((a.shape[1:], a.dtype) for a in self.arrays)
            lines += [
                f"keys:     {n} of (n, {', '.join(map(str, shape))}) {dtype}" for (shape, dtype), n in frames.items()
            ]
        lines += [f"array:    {a.field} {a.shape} {a.dtype}" for a in self.arrays if self.layout != "pickle"]
        lines += [f"problem:  field {f!r}: {p}" for _, f, p in self.problems]
        lines += [f"problem:  {self.label_error}"] if self.label_error else []
        return "\n".join(lines)


# ---- reading ----------------------------------------------------------------------------------------------


def snr_grid(snrs: list[int]) -> str:
    if not snrs:
        return "none"
    steps = {b - a for a, b in itertools.pairwise(snrs)}
    if len(steps) == 1:
        return f"{snrs[0]}..{snrs[-1]} dB step {steps.pop()} ({len(snrs)} values)"
    return f"{snrs} dB ({len(snrs)} values)"


def _sizes(*paths: str) -> dict[str, int]:
    return {path: os.path.getsize(path) for path in paths}


def match_card(info: DatasetInfo) -> tuple[str | None, bool]:
    """The card whose classes fit ``info`` best, and whether they fit exactly."""
    layouts = {"pickle"} if info.format == CONVERTED_FORMAT else {info.layout}
    candidates = [preset for preset in PRESETS.values() if preset.layout in layouts]
    if info.dataset in {preset.name for preset in candidates}:
        return info.dataset, True
    if info.classes is None:
        fits = [preset for preset in candidates if len(preset.classes) == info.num_classes]
        return ((fits or candidates)[0].name if candidates else None), bool(fits)
    found = set(info.classes)
    scores = {p.name: len(found & set(p.classes)) - len(found ^ set(p.classes)) for p in candidates}
    best = max(scores, key=scores.__getitem__, default=None)
    if best is None or len(found & set(PRESETS[best].classes)) == 0:
        return None, False
    return best, scores[best] == len(found)


def _finite_problem(info: DatasetInfo, frames: Any, path: str, field: str) -> None:
    """Record (as a ``layout`` problem) the first frame of ``frames`` holding NaN or ±Inf, as the loaders name it."""
    if not isinstance(frames, np.ndarray) or frames.ndim < 1 or not np.issubdtype(frames.dtype, np.inexact):
        return  # the shape and dtype checks judge anything else
    try:
        check_finite(frames, path, field)
    except DatasetFormatError as err:
        info.problems.append(("layout", err.field, err.problem))


def _read_pickle(path: str, data: Any) -> DatasetInfo:
    info = DatasetInfo(path, "pickle", _sizes(path))
    if not isinstance(data, dict) or not data:
        kind = type(data).__name__
        info.problems.append(
            ("layout", "<top level>", f"expected a non-empty dict {{(modulation, SNR dB): array}}, found {kind}")
        )
        return info
    found: dict[tuple[str, int], int] = {}
    for key, value in data.items():
        try:  # the loader's own key check: a (str, int) tuple with the SNR in range
            name, snr = parse_key(key, path)
        except DatasetFormatError as err:
            info.problems.append(("layout", err.field, err.problem))
            continue
        label = f"key {(name, snr)!r}"
        if not isinstance(value, np.ndarray):
            info.problems.append(("layout", label, f"expected a numpy array, found {type(value).__name__}"))
            continue
        info.arrays.append(Array(label, value.shape, str(value.dtype), "key"))
        _finite_problem(info, value, path, label)
        found[(name, snr)] = int(value.shape[0]) if value.ndim else 0
        if info.length is None and value.ndim == 3:
            info.length = int(value.shape[2])
    info.classes = sorted({name for name, _ in found})
    info.num_classes = len(info.classes)
    info.snrs = sorted({snr for _, snr in found})
    info.counts = {(info.classes.index(name), snr): count for (name, snr), count in found.items()}
    return info


def _read_hdf5(path: str, scan_frames: bool = False) -> DatasetInfo:
    info = DatasetInfo(path, "hdf5", _sizes(path))
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise DatasetFormatError(path, "<HDF5 file>", f"not a readable HDF5 file ({err})") from None
    with handle:
        info.format = str(handle.attrs["format"]) if "format" in handle.attrs else None
        info.dataset = str(handle.attrs["dataset"]) if "dataset" in handle.attrs else None
        if "classes" in handle.attrs:
            info.classes = [str(name) for name in handle.attrs["classes"]]
        if PROVENANCE_ATTR in handle.attrs:
            info.provenance = parse_provenance(str(handle.attrs[PROVENANCE_ATTR]), f"{path} ({PROVENANCE_ATTR})")
        links = {name: handle.get(name, getlink=True) for name in ("X", "Y", "Z")}
        # An external link is not followed (its target could be any file, a FIFO or a device); the loader refuses it.
        sets = {name: None if isinstance(link, h5py.ExternalLink) else handle.get(name) for name, link in links.items()}
        for name, item in sets.items():
            link = links[name]
            if isinstance(link, h5py.ExternalLink):
                where = f"an external link to {link.path!r} in {link.filename}, outside this file"
                info.problems.append(("layout", name, f"is {where}; expected data stored in the file itself"))
            elif not isinstance(item, h5py.Dataset):
                info.problems.append(("layout", name, f"missing (an HDF5 dataset); the file has {sorted(handle)}"))
            else:
                info.arrays.append(Array(name, item.shape, str(item.dtype), name))
        x_set, y_set = sets["X"], sets["Y"]
        if isinstance(x_set, h5py.Dataset) and x_set.ndim == 3:
            info.length = int(x_set.shape[1])
        if isinstance(y_set, h5py.Dataset) and y_set.ndim == 2:
            info.num_classes = int(y_set.shape[1])
    if any(not isinstance(item, h5py.Dataset) for item in sets.values()):
        return info
    names = info.classes if info.classes is not None else [f"class {i}" for i in range(info.num_classes)]
    try:  # the 2018 loader reduces Y (chunk by chunk) and validates it as one-hot, and Z as SNRs in range
        loaded = RadioML2018(path, class_order=names, check_provenance=False, finite=False)
    except DatasetFormatError as err:
        info.label_error = str(err)
        return info
    if scan_frames:  # the loader's own scan of X, block by block
        try:
            loaded.scan_finite()
        except DatasetFormatError as err:
            info.problems.append(("layout", err.field, err.problem))
    loaded.close()
    pairs, counts = np.unique(np.stack([loaded.y.numpy(), loaded.snr.numpy()]), axis=1, return_counts=True)
    info.counts = {(int(c), int(s)): int(n) for (c, s), n in zip(pairs.T, counts, strict=True)}
    info.snrs = sorted({snr for _, snr in info.counts})
    return info


def _read_ism(folder: str, card: DatasetPreset) -> DatasetInfo:
    data_path, labels_path = os.path.join(folder, "data_iq.p"), os.path.join(folder, "labels.p")
    data, labels = load_array_pickle(data_path), load_array_pickle(labels_path)
    info = DatasetInfo(data_path, "ism", _sizes(data_path, labels_path), dataset=card.name)
    info.provenance = read_sidecar(os.path.join(folder, ISM_RECORD), {"data_iq.p": data_path, "labels.p": labels_path})
    for name, value in (("data_iq", data), ("labels", labels)):
        if isinstance(value, np.ndarray):
            info.arrays.append(Array(name, value.shape, str(value.dtype), name))
        else:
            info.problems.append(("layout", name, f"expected a numpy array, found {type(value).__name__}"))
    if not isinstance(data, np.ndarray) or data.ndim != 5:
        return info
    classes, snrs, vectors, length, _ = data.shape
    step = card.snrs[1] - card.snrs[0]  # the file stores SNR indices: index i is card.snrs[0] + step * i dB
    info.num_classes, info.length = classes, length
    try:
        check_vectors_finite(data, data_path)
    except DatasetFormatError as err:
        info.problems.append(("layout", err.field, err.problem))
    info.snrs = [card.snrs[0] + step * i for i in range(snrs)]
    info.counts = {(c, snr): vectors for c in range(classes) for snr in info.snrs}
    if isinstance(labels, np.ndarray) and labels.shape == data.shape[:3] and np.issubdtype(labels.dtype, np.integer):
        wrong = labels != np.arange(classes).reshape(-1, 1, 1)
        if wrong.any():
            c, s, v = (int(i[0]) for i in np.nonzero(wrong))
            problem = f"labels[{c}, {s}, {v}] is {labels[c, s, v]}; every vector of data_iq[{c}] should be {c}"
            info.problems.append(("class order", "labels", problem))
    return info


def _ism_folder(path: str) -> str | None:
    if os.path.isdir(path):
        return path if os.path.isfile(os.path.join(path, "data_iq.p")) else None
    return os.path.dirname(path) if os.path.basename(path) in ("data_iq.p", "labels.p") else None


def read(path: str | os.PathLike[str], scan_frames: bool = False) -> tuple[DatasetInfo, dict[Any, Any] | None]:
    """The file's facts, and for a pickle the loaded dict (so convert reads it once).

    Problems met in reading (a key that is no ``(str, int)`` pair or whose SNR is out of range, a frame holding NaN
    or ±Inf) are recorded in :attr:`DatasetInfo.problems`. Frames of a pickle or the ISM set are in memory and
    always checked; an HDF5 file's frames are scanned only with ``scan_frames`` (``verify`` does, ``info`` reads
    only the labels).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file or folder")
    folder = _ism_folder(path)
    if folder is not None:
        return _read_ism(folder, next(p for p in PRESETS.values() if p.layout == "ism")), None
    if os.path.isdir(path):
        raise DatasetFormatError(path, "<folder>", "expected a dataset file, or the ISM folder with data_iq.p")
    if h5py.is_hdf5(path):
        info = _read_hdf5(path, scan_frames)
        info.dataset = match_card(info)[0]
        return info, None
    record = read_sidecar(sidecar_path(path), {"data": path})
    data = load_array_pickle(path)
    info = _read_pickle(path, data)
    info.provenance = record
    info.dataset = match_card(info)[0]
    return info, data


def info(path: str | os.PathLike[str]) -> DatasetInfo:
    """Read what ``path`` holds: its layout, the card it matches, classes, SNRs, counts, shapes, dtypes, size.

    ``path`` is a RadioML 2016 pickle, an HDF5 file (RadioML 2018, or a converted 2016 pickle) or Schmidt's ISM
    folder (or its ``data_iq.p``). Raises ``FileNotFoundError``, or ``ValueError`` for a file it cannot read.
    """
    return read(path)[0]
