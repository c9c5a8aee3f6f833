"""Check a dataset file against its card (``rfml dataset verify``), and convert RadioML 2016 pickles to the
HDF5 layout that :class:`rfml.data.RadioML2018` streams (``rfml dataset convert``).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass

import h5py
import numpy as np
from tqdm import tqdm

from ondevice.io import atomic_path, sha256_file
from rfml.data.base import PROVENANCE_ATTR, DatasetFormatError, read_sidecar, sidecar_path
from rfml.data.cards import (
    CARDS,
    CONVERTED_FORMAT,
    DTYPES,
    FIELDS,
    LAYOUTS,
    Array,
    DatasetInfo,
    info,
    match_card,
    read,
    snr_grid,
)
from rfml.data.synthetic import DatasetPreset, RowChunks, get_preset, write_hdf5

__all__ = ["Check", "Report", "convert", "info", "verify"]


@dataclass(frozen=True)
class Check:
    """One verification step: ``status`` is ``pass``, ``fail`` or ``skip``; ``message`` says what was found."""

    name: str
    status: str
    message: str


@dataclass
class Report:
    """The checks of :func:`verify`; ``ok`` when none failed."""

    path: str
    dataset: str
    per_key: int
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if check.status == "fail"]

    def verdict(self) -> str:
        title = CARDS[self.dataset].title
        if self.ok:
            skipped = sum(check.status == "skip" for check in self.checks)
            passed = len(self.checks) - skipped
            return f"GOOD: {self.path} matches the {title} card ({passed} checks passed, {skipped} skipped)"
        names = ", ".join(check.name for check in self.failed)
        return f"BAD: {self.path} does not match the {title} card: {len(self.failed)} check(s) failed ({names})"

    def __str__(self) -> str:
        rows = [f"{check.status.upper():4}  {check.name:<14} {check.message}" for check in self.checks]
        return "\n".join([*rows, self.verdict()])


# ---- checks -------------------------------------------------------------------------------------------


KINDS = {"floating": "a floating-point dtype", "integer": "an integer dtype"}


def _differences(missing: list, extra: list) -> str:
    return "; ".join(f"{what} {values}" for what, values in (("missing", missing), ("extra", extra)) if values)


def _dtype_ok(dtype: str, wanted: str) -> bool:
    if wanted in ("floating", "integer"):
        return bool(np.issubdtype(np.dtype(dtype), getattr(np, wanted)))
    return np.dtype(dtype) == np.dtype(wanted)


def _expected_shape(array: Array, info: DatasetInfo) -> tuple[int | None, ...]:
    """The shape ``array`` should have; None where any size passes (sizes that other checks judge)."""
    rows = next((a.shape[0] for a in info.arrays if a.field == "X" and a.shape), None)
    shapes: dict[str, tuple[int | None, ...]] = {
        "key": (None, 2, info.length),
        "X": (rows, info.length, 2),
        "Y": (rows, None),
        "Z": (rows, 1),
        "data_iq": (None, None, None, None, 2),
        "labels": next((a.shape[:3] for a in info.arrays if a.field == "data_iq"), (None, None, None)),
    }
    return shapes[array.kind]


def _shown(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("*" if size is None else str(size) for size in shape) + ")"


def field_problems(info: DatasetInfo, kind: str) -> list[tuple[str, str]]:
    """(field, problem) for each array whose ``kind`` (``"shape"`` or ``"dtype"``) differs from its layout's."""
    problems = []
    for array in info.arrays:
        if kind == "dtype":
            wanted = DTYPES[info.layout][array.kind]
            if not _dtype_ok(array.dtype, wanted):
                shown = KINDS.get(wanted, f"dtype {wanted}")
                problems.append((array.field, f"expected {shown}, found {array.dtype}"))
            continue
        shape = _expected_shape(array, info)
        fits = len(array.shape) == len(shape) and all(w in (None, s) for w, s in zip(shape, array.shape, strict=True))
        if not fits:
            problems.append((array.field, f"expected shape {_shown(shape)}, found {array.shape}"))
    return problems


def _summary(info: DatasetInfo, kind: str) -> str:
    values: dict[str, set[str]] = {}
    for array in info.arrays:
        values.setdefault(array.kind, set()).add(array.dtype if kind == "dtype" else _shown(array.shape))
    if info.layout == "pickle":
        return f"{len(info.arrays)} keys: " + ", ".join(sorted(values.get("key", set())))
    return ", ".join(f"{name} {', '.join(sorted(found))}" for name, found in values.items())


def _field_check(name: str, info: DatasetInfo, card: DatasetPreset, kind: str) -> Check:
    if not info.arrays:
        return Check(name, "skip", "not checked: the file holds no arrays where the layout expects them")
    problems = field_problems(info, kind)
    if kind == "shape" and info.length is not None and info.length != card.length:
        problems.insert(0, (info.arrays[0].field, f"expected frames of {card.length} samples, found {info.length}"))
    if problems:
        more = f" (and {len(problems) - 1} more fields)" if len(problems) > 1 else ""
        return Check(name, "fail", f"{info.path}: field {problems[0][0]!r}: {problems[0][1]}{more}")
    return Check(name, "pass", _summary(info, kind))


def _problem_check(name: str, info: DatasetInfo) -> Check | None:
    problem = next(((f, p) for check, f, p in info.problems if check == name), None)
    return None if problem is None else Check(name, "fail", f"{info.path}: field {problem[0]!r}: {problem[1]}")


def _layout_check(info: DatasetInfo, card: DatasetPreset) -> Check:
    converted = card.layout == "pickle" and info.format == CONVERTED_FORMAT
    if info.layout != card.layout and not converted:
        return Check(
            "layout",
            "fail",
            f"{info.path}: field '<layout>': expected {LAYOUTS[card.layout]}, found {LAYOUTS[info.layout]}",
        )
    how = f"{LAYOUTS[info.layout]}, written by `rfml dataset convert`" if converted else LAYOUTS[info.layout]
    return _problem_check("layout", info) or Check("layout", "pass", how)


def _class_check(info: DatasetInfo, card: DatasetPreset) -> Check:
    named_hdf5 = info.layout == "hdf5" and info.classes is not None
    where = f"{info.path}: field {'classes (attribute)' if named_hdf5 else FIELDS[info.layout]['classes']!r}"
    wanted = card.classes
    if info.num_classes == 0:
        return Check("class order", "skip", "not checked: no classes could be read (see the failed checks)")
    if info.classes is None and info.num_classes != len(wanted):
        return Check(
            "class order", "fail", f"{where}: expected {len(wanted)} classes {wanted}, found {info.num_classes}"
        )
    if info.classes is not None and info.classes != wanted:
        missing = [n for n in wanted if n not in info.classes]
        extra = [n for n in info.classes if n not in wanted]
        found = _differences(missing, extra) or f"the order {info.classes}"
        return Check(
            "class order",
            "fail",
            f"{where}: expected the {len(wanted)} classes {wanted}, found {len(info.classes)}: {found}",
        )
    how = "in the card's order" if info.classes else "(the file stores no names: read in the card's order)"
    return _problem_check("class order", info) or Check("class order", "pass", f"{len(wanted)} classes {how}")


def _snr_check(info: DatasetInfo, card: DatasetPreset) -> Check:
    wanted = list(card.snrs)
    if not info.snrs:
        return Check("SNR grid", "skip", "not checked: no SNR labels could be read (see the failed checks)")
    if info.snrs != wanted:
        missing = sorted(set(wanted) - set(info.snrs))
        extra = sorted(set(info.snrs) - set(wanted))
        return Check(
            "SNR grid",
            "fail",
            f"{info.path}: field {FIELDS[info.layout]['snrs']!r}: expected "
            f"{snr_grid(wanted)}, found {snr_grid(info.snrs)}: {_differences(missing, extra)}",
        )
    return Check("SNR grid", "pass", snr_grid(wanted))


def _count_field(info: DatasetInfo, names: list[str], key: tuple[int, int]) -> str:
    if info.layout == "pickle":
        return f"key {(names[key[0]], key[1])!r}"
    if info.layout == "ism":
        return "data_iq axis 2 (vector)"
    return f"Y/Z rows of {names[key[0]]!r} at {key[1]} dB"


def _count_check(info: DatasetInfo, card: DatasetPreset, per_key: int | None) -> Check:
    wanted = card.per_key if per_key is None else per_key
    source = "the card's count" if per_key is None else f"per_key={per_key}"
    if info.label_error:
        return Check("per-key counts", "fail", f"could not count the labels: {info.label_error}")
    if not info.counts:
        return Check("per-key counts", "skip", "not checked: no labels could be read (see the failed checks)")
    grid = [(c, snr) for c in range(info.num_classes) for snr in info.snrs]
    wrong = [key for key in grid if info.counts.get(key, 0) != wanted]
    if not wrong:
        return Check("per-key counts", "pass", f"all {len(grid)} (class, SNR) keys hold {wanted} examples ({source})")
    names = info.class_names(card)
    first = wrong[0]
    found = Counter(info.counts.get(key, 0) for key in grid)
    hint = ""
    if per_key is None and len(found) == 1:
        (count,) = found
        hint = f"; a file written by `rfml generate --per-key {count}` verifies with --per-key {count}"
    return Check(
        "per-key counts",
        "fail",
        f"{info.path}: field {_count_field(info, names, first)!r}: expected "
        f"{wanted} examples per (class, SNR) key ({source}), found "
        f"{info.counts.get(first, 0)}; {len(wrong)} of {len(grid)} keys "
        f"differ{hint}",
    )


def _checksum_check(info: DatasetInfo, card: DatasetPreset, per_key: int | None, sha256: str | None) -> Check:
    if sha256 is None:
        recorded = CARDS[card.name].sha256
        if recorded is None:
            return Check(
                "checksum", "skip", f"the {CARDS[card.name].title} card records no sha256; give one to compare against"
            )
        if per_key is not None:
            return Check(
                "checksum",
                "skip",
                f"the card's sha256 is the published file's; a file of per_key {per_key} is not that file",
            )
        sha256 = recorded
    found = sha256_file(info.data_file)
    if found != sha256.lower():
        return Check(
            "checksum", "fail", f"{info.data_file}: field '<file bytes>': expected sha256 {sha256}, found {found}"
        )
    return Check("checksum", "pass", f"sha256 {found}")


def verify(
    path: str | os.PathLike[str],
    dataset: str | None = None,
    per_key: int | None = None,
    sha256: str | None = None,
) -> Report:
    """Check ``path`` against a dataset card: layout, shapes, dtypes, class order, SNR grid, per-key counts, checksum.

    The layout check also fails on what the loaders refuse at the door: an SNR outside
    :data:`rfml.data.base.SNR_RANGE_DB`, a frame holding NaN or ±Inf (an HDF5 file's frames are scanned block by
    block), HDF5 data stored outside the file (reported by the per-key count check, which reads the labels).

    Args:
        path: as for :func:`info`.
        dataset: the card (a preset name such as ``rml2016.10a``); default: the one the file matches.
        per_key: the examples per (class, SNR) key to expect; None: the card's count (a real download). A file
            written by ``rfml generate --per-key N`` verifies with ``per_key=N``.
        sha256: a checksum to compare the data file with; default: the card's, where it records one.

    Raises ``FileNotFoundError`` or ``ValueError`` when the file cannot be read or ``dataset`` is unknown.
    """
    if per_key is not None and (isinstance(per_key, bool) or int(per_key) < 1):
        raise ValueError(f"per_key must be a positive count, got {per_key!r}")
    found, _ = read(path, scan_frames=True)
    name = dataset or found.dataset
    if name is None:
        raise DatasetFormatError(found.path, "<classes>", f"matches no dataset card; name one of {sorted(CARDS)}")
    card = get_preset(name)
    checks = [
        _layout_check(found, card),
        _field_check("shapes", found, card, "shape"),
        _field_check("dtypes", found, card, "dtype"),
        _class_check(found, card),
        _snr_check(found, card),
        _count_check(found, card, per_key),
        _checksum_check(found, card, per_key, sha256),
    ]
    return Report(found.path, name, card.per_key if per_key is None else int(per_key), checks)


# ---- conversion ---------------------------------------------------------------------------------------


def convert(src: str | os.PathLike[str], dst: str | os.PathLike[str], progress: bool = True) -> str:
    """Write a RadioML 2016 pickle as RadioML 2018's HDF5 layout, which :class:`rfml.data.RadioML2018` streams.

    Rows are in :class:`rfml.data.RadioML2016`'s order (keys sorted by class, then SNR); the file keeps the
    pickle's class names (attribute ``classes``, read by ``RadioML2018``), its SNR grid (``snrs``) and the card it
    matches (``dataset``), and a generated pickle's provenance record (attribute ``rfml_provenance``). The pickle must
    be loaded whole, but each key is dropped once written, so memory stays
    near one copy. ``dst`` may be a folder (it gets ``<src stem>.hdf5``); it appears only when complete.
    Returns the path written.
    """
    src = os.fspath(src)
    found, data = read(src)
    if data is None:
        raise DatasetFormatError(src, "<layout>", f"expected {LAYOUTS['pickle']}, found {LAYOUTS[found.layout]}")
    problems = [(f, p) for _, f, p in found.problems] + field_problems(found, "shape") + field_problems(found, "dtype")
    if problems:
        raise DatasetFormatError(src, *problems[0])
    target = os.fspath(dst)
    if os.path.isdir(target):
        target = os.path.join(target, os.path.splitext(os.path.basename(src))[0] + ".hdf5")
    if os.path.abspath(target) == os.path.abspath(src):
        raise ValueError(f"{src}: the output would overwrite the pickle; give another destination")
    classes, length = found.classes or [], found.length or 0
    keys = sorted(data, key=lambda key: (classes.index(key[0]), int(key[1])))
    name, exact = match_card(found)
    attrs = {
        "format": CONVERTED_FORMAT,
        "classes": np.array(classes, dtype=h5py.string_dtype()),
        "snrs": np.array(found.snrs, dtype=np.int64),
        "source": os.path.basename(src),
        **({"dataset": name} if name and exact else {}),
    }
    record = read_sidecar(sidecar_path(src), {"data": src})
    if record is not None:  # a generated pickle stays marked as generated; the attribute is inside the file
        attrs[PROVENANCE_ATTR] = json.dumps({key: value for key, value in record.items() if key != "files"})

    def rows() -> RowChunks:
        start = 0
        for key in keys:
            frames = data.pop(key)  # released after writing: the dict shrinks as the file grows
            count = len(frames)
            yield start, frames, np.full(count, classes.index(key[0])), np.full(count, int(key[1]))
            start += count

    bar = tqdm(
        total=found.examples,
        unit="frame",
        unit_scale=True,
        desc=f"convert -> {os.path.basename(target)}",
        disable=not progress,
    )
    with bar, atomic_path(target) as temporary:
        write_hdf5(os.fspath(temporary), rows(), found.examples, length, len(classes), bar, attrs)
    return target
