"""Synthetic datasets: on-the-fly over the synthesizers of :mod:`rfml.dsp`, and writers to the real file layouts.

``write_dataset`` writes the exact published layouts (RadioML 2016: pickled dict; RadioML 2018: HDF5 X/Y/Z,
rows class-major; Schmidt's ISM set: a folder with ``data_iq.p`` and ``labels.p``), so generated files and
real files go through the same loaders. Row ``r`` of a
written file (in the loader's order) holds synthesizer example :func:`source_indices` ``(r)``. Every written file
carries a provenance record (preset, seed, channel, per_key, version), which the loaders check and announce.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import re
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import h5py
import numpy as np
import torch
from tqdm import tqdm

from ondevice.command_line import version_of
from rfml.data.base import ISM_RECORD, PROVENANCE_ATTR, Batch, SignalDataset, log, sidecar_path
from rfml.dsp import rng
from rfml.dsp.channel import channel_preset
from rfml.dsp.ism import CLASSES_ISM, ISMSynthesizer
from rfml.dsp.synthesizer import CLASS_SETS, Synthesizer

RowsT = TypeVar("RowsT", torch.Tensor, np.ndarray)


@dataclass(frozen=True)
class DatasetPreset:
    """A published dataset's shape, file layout and the synthesizer settings that imitate it."""

    name: str
    length: int
    snrs: tuple[int, ...]
    channel: str
    per_key: int
    layout: str  # "pickle" (RadioML 2016 dict), "hdf5" (RadioML 2018 X/Y/Z) or "ism" (Schmidt's folder)
    file_name: str  # a file, or for "ism" the folder that holds data_iq.p and labels.p
    classes: list[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", list(CLASSES_ISM if self.layout == "ism" else CLASS_SETS[self.name]))

    @property
    def synthetic_name(self) -> str:
        """The name ``rfml generate`` and :meth:`SignalDataModule.prepare_data` give a generated file in a folder:
        the real file name with ``.synthetic`` before its suffix (``RML2016.10a_dict.synthetic.pkl``,
        ``GOLD_XYZ_OSC.0001_1024.synthetic.hdf5``), so it never stands where a real download is looked for. The
        ISM folder's name (``ism2017``) is this project's own, not the published set's, and is kept."""
        if self.layout == "ism":
            return self.file_name
        stem, suffix = os.path.splitext(self.file_name)
        return f"{stem}.synthetic{suffix}"

    def synthesizer(self, seed: int = 0, channel: str | None = None) -> Synthesizer | ISMSynthesizer:
        if self.layout == "ism":
            return ISMSynthesizer(snrs=self.snrs, seed=seed, channel=channel or self.channel, length=self.length)
        return Synthesizer(self.classes, self.length, channel=channel or self.channel, snrs=self.snrs, seed=seed)


PRESETS: dict[str, DatasetPreset] = {
    preset.name: preset
    for preset in (
        DatasetPreset("rml2016.10a", 128, tuple(range(-20, 20, 2)), "rml2016", 1000, "pickle", "RML2016.10a_dict.pkl"),
        DatasetPreset("rml2016.10b", 128, tuple(range(-20, 20, 2)), "rml2016", 6000, "pickle", "RML2016.10b.dat"),
        DatasetPreset(
            "rml2018.01a", 1024, tuple(range(-20, 32, 2)), "wireless", 4096, "hdf5", "GOLD_XYZ_OSC.0001_1024.hdf5"
        ),
        DatasetPreset("ism2017", 128, tuple(range(-20, 21, 2)), "ism", 715, "ism", "ism2017"),
    )
}


def get_preset(name: str) -> DatasetPreset:
    if name not in PRESETS:
        raise ValueError(f"unknown dataset preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


def file_keys(rows: RowsT, num_snrs: int, per_key: int) -> tuple[RowsT, RowsT, RowsT]:
    """(class index, SNR index, example within the key) of file rows, in the loader's row order.

    Rows are class-major, then SNR, then example in both RadioML layouts (as their loaders order
    them). Works on torch tensors and numpy arrays alike.
    """
    return rows // (num_snrs * per_key), (rows // per_key) % num_snrs, rows % per_key


def source_indices(
    rows: torch.Tensor | np.ndarray | Sequence[int], num_classes: int, num_snrs: int, per_key: int
) -> torch.Tensor:
    """Synthesizer example index held by each row of a written file, in the loader's row order.

    The synthesizer cycles class fastest, then SNR (:class:`rfml.dsp.Synthesizer`).
    """
    cls, snr, example = file_keys(torch.as_tensor(rows, dtype=torch.int64), num_snrs, per_key)
    return cls + num_classes * (snr + num_snrs * example)


class SyntheticSignals(SignalDataset):
    """A map-style dataset over :class:`rfml.dsp.Synthesizer` (or the given ``synthesizer``, e.g. an
    :class:`rfml.dsp.ism.ISMSynthesizer`): example ``i`` is ``generate([i])``.

    ``size`` examples; any ``C * S`` consecutive indices hold every (class, SNR) pair once.
    ``get_batch`` generates the whole batch at once.
    """

    def __init__(
        self,
        classes: str | list[str] = "rml2016.10a",
        length: int = 128,
        size: int = 22000,
        snrs: Sequence[int] = tuple(range(-20, 20, 2)),
        channel: str = "rml2016",
        seed: int = 0,
        samples_per_symbol: int = 8,
        synthesizer: Synthesizer | ISMSynthesizer | None = None,
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive number of examples, got {size!r}")
        self.synthesizer = synthesizer or Synthesizer(
            classes, length, samples_per_symbol=samples_per_symbol, channel=channel, snrs=snrs, seed=seed
        )
        if any(s != round(s) for s in self.synthesizer.snrs):
            raise ValueError(f"snrs must be whole dB values (labels are int64), got {list(snrs)}")
        self.classes = self.synthesizer.classes
        self.snrs = sorted({int(s) for s in self.synthesizer.snrs})
        self.y, snr = self.synthesizer.labels(torch.arange(size))
        self.snr = snr.round().to(torch.int64)

    @classmethod
    def from_preset(
        cls, name: str, per_key: int | None = None, seed: int = 0, channel: str | None = None
    ) -> SyntheticSignals:
        preset = get_preset(name)
        size = len(preset.classes) * len(preset.snrs) * (per_key or preset.per_key)
        return cls(size=size, synthesizer=preset.synthesizer(seed, channel))

    @property
    def length(self) -> int:
        return self.synthesizer.length

    def get_batch(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> Batch:
        return self.synthesizer.generate(torch.from_numpy(self._check_indices(indices)))

    def __repr__(self) -> str:
        return f"SyntheticSignals({len(self)} examples, {self.synthesizer!r})"


# ---- writers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    preset: str
    seed: int
    channel: str
    per_key: int
    threads: int


_synthesizers: dict[_Job, Synthesizer | ISMSynthesizer] = {}  # one per process, rebuilt only when the job changes


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _generate_rows(start: int, stop: int, job: _Job) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Frames of file rows ``[start, stop)``: (start, x float32 [n, 2, L], y, snr) as numpy."""
    if job not in _synthesizers:
        _synthesizers.clear()
        _synthesizers[job] = get_preset(job.preset).synthesizer(job.seed, job.channel)
    synth = _synthesizers[job]
    idx = source_indices(torch.arange(start, stop), len(synth.classes), len(synth.snrs), job.per_key)
    out = synth.generate(idx)
    return start, out["x"].numpy(), out["y"].numpy(), out["snr"].numpy()


class _RowStream:
    """Generated row ranges in file order, from ``workers`` processes with a bounded queue.

    Whatever order workers finish in, ranges are handed out in file order and each carries its
    start row; the worker's labels are checked against the labels of the rows' file positions
    before anything is yielded, so a writer can store them as they come.
    """

    def __init__(self, job: _Job, ranges: list[tuple[int, int]], workers: int) -> None:
        self.job, self.ranges, self.workers = job, ranges, workers

    def __iter__(self) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        preset = get_preset(self.job.preset)
        if self.workers <= 1:
            results: Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = (
                _generate_rows(a, b, self.job) for a, b in self.ranges
            )
            yield from self._checked(results, preset)
            return
        context = multiprocessing.get_context("spawn")  # no fork after torch has started threads
        with ProcessPoolExecutor(
            self.workers, mp_context=context, initializer=_init_worker, initargs=(self.job.threads,)
        ) as pool:
            yield from self._checked(self._ordered(pool), preset)

    def _ordered(self, pool: ProcessPoolExecutor) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        pending: deque[Future[tuple[int, np.ndarray, np.ndarray, np.ndarray]]] = deque()
        for a, b in self.ranges:
            pending.append(pool.submit(_generate_rows, a, b, self.job))
            if len(pending) >= 2 * self.workers:  # bounded: at most 2 ranges per worker in flight
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def _checked(
        self, results: Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]], preset: DatasetPreset
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        expected_start = 0
        for start, x, y, snr in results:
            cls, snr_index, _ = file_keys(np.arange(start, start + len(x)), len(preset.snrs), self.job.per_key)
            if start != expected_start or not (
                np.array_equal(y, cls) and np.array_equal(snr, np.asarray(preset.snrs)[snr_index])
            ):
                raise RuntimeError(f"generated rows {start}.. do not match their file positions; refusing to write")
            expected_start = start + len(x)
            yield start, x, y, snr


def _row_ranges(total: int, step: int) -> list[tuple[int, int]]:
    return [(a, min(a + step, total)) for a in range(0, total, step)]


class _PendingArray:
    """Pickles as the array ``make()`` returns, made only when the pickler reaches it."""

    def __init__(self, make: Callable[[], np.ndarray]) -> None:
        self.make = make

    def __reduce_ex__(self, protocol: int):  # type: ignore[override]
        return self.make().__reduce_ex__(protocol)


RowChunks = Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]


def _write_pickle(handle: object, preset: DatasetPreset, stream: RowChunks, bar: tqdm) -> None:
    def next_key() -> np.ndarray:
        _, x, _, _ = next(stream)
        bar.update(len(x))
        return x

    keys = [(name, snr) for name in preset.classes for snr in preset.snrs]
    # Fast mode keeps no memo, so each array is released once written: memory holds one key.
    pickler = pickle.Pickler(handle, protocol=4)
    pickler.fast = True
    pickler.dump({key: _PendingArray(next_key) for key in keys})


def write_hdf5(
    path: str,
    stream: RowChunks,
    rows: int,
    length: int,
    num_classes: int,
    bar: tqdm,
    attrs: Mapping[str, Any] | None = None,
) -> None:
    """Write RadioML 2018's HDF5 layout (``X`` float32 (N, L, 2), ``Y`` one-hot int64, ``Z`` int64 (N, 1)) from
    ``stream``'s ``(start, x [n, 2, L], y, snr)`` chunks, with ``attrs`` on the file; one chunk in memory at a time."""
    chunk_rows = max(1, min(rows, (2 << 20) // (length * 8)))  # about 2 MiB per chunk of X
    with h5py.File(path, "w") as handle:
        handle.attrs.update(attrs or {})
        x_set = handle.create_dataset("X", (rows, length, 2), dtype="f4", chunks=(chunk_rows, length, 2))
        y_set = handle.create_dataset("Y", (rows, num_classes), dtype="i8", chunks=True)
        z_set = handle.create_dataset("Z", (rows, 1), dtype="i8", chunks=True)
        for start, x, y, snr in stream:
            stop = start + len(x)
            x_set[start:stop] = x.transpose(0, 2, 1)
            y_set[start:stop] = np.eye(num_classes, dtype=np.int64)[y]
            z_set[start:stop, 0] = snr
            bar.update(len(x))


def _write_ism(
    folder: str, preset: DatasetPreset, stream: RowChunks, per_key: int, bar: tqdm, staged: list[tuple[str, str]]
) -> None:
    """Schmidt's layout: ``data_iq.p`` float32 (classes, SNRs, per_key, L, 2) and ``labels.p`` int64 (classes,
    SNRs, per_key), each a pickled numpy array, written to temporary names in ``folder``. Each
    ``(temporary, final)`` pair goes into ``staged`` before its file is opened; the caller renames them once the
    provenance record is written, and removes them on failure."""
    shape = (len(preset.classes), len(preset.snrs), per_key)
    data = np.empty((*shape, preset.length, 2), dtype=np.float32)
    labels = np.empty(shape, dtype=np.int64)
    for start, x, y, _ in stream:
        cls, snr, example = file_keys(np.arange(start, start + len(x)), len(preset.snrs), per_key)
        data[cls, snr, example] = x.transpose(0, 2, 1)
        labels[cls, snr, example] = y
        bar.update(len(x))
    for name, array in (("data_iq.p", data), ("labels.p", labels)):
        temporary = _partial_path(folder, name)
        staged.append((temporary, os.path.join(folder, name)))
        with open(temporary, "wb") as handle:
            pickle.dump(array, handle, protocol=4)


_PARTIAL = re.compile(r"\.(?P<name>.+)\.(?P<pid>[0-9]{1,10})\.partial")


def _partial_path(folder: str, name: str) -> str:
    """The temporary name :func:`write_dataset` writes ``folder/name`` under: hidden, and carrying the writer's pid,
    so a later run can tell a dead writer's leftover from a live writer's file (:func:`remove_stale_partials`)."""
    return os.path.join(folder, f".{name}.{os.getpid()}.partial")


def _stage_json(folder: str, name: str, payload: Mapping[str, Any], staged: list[tuple[str, str]]) -> None:
    """Write ``payload`` (JSON, indent 1, trailing newline) to ``name``'s partial file, staged to be renamed into
    place before the data files; named as :func:`_partial_path` says, so a killed run's leftover is found and removed
    (``ondevice.io.write_json_atomic``'s random temporary names could not be told from a live writer's)."""
    temporary = _partial_path(folder, name)
    staged.insert(0, (temporary, os.path.join(folder, name)))
    with open(temporary, "w") as handle:
        handle.write(json.dumps(payload, indent=1) + "\n")


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` may still be running (when unsure: yes, so its files are left alone)."""
    if pid <= 0 or pid == os.getpid() or os.name != "posix":
        return True  # 0 and negatives name process groups, not writers; os.kill on Windows would end the process
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # PermissionError: it exists, as another user's process
        return True
    return True


def remove_stale_partials(folder: str, names: Sequence[str]) -> list[str]:
    """Remove the partial files (``.{name}.{pid}.partial``) that a killed :func:`write_dataset` left in ``folder`` for
    any of ``names``, when the process ``pid`` no longer exists; returns the paths removed, each also logged.

    A live writer's partial (its pid exists: another ``rfml generate`` writing the same target right now), partials
    of other names and anything that is not a regular file are left alone. A pid reused by an unrelated process
    only keeps a leftover longer; it never removes a live writer's file.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for entry in entries:
        match = _PARTIAL.fullmatch(entry.name)
        if not match or match["name"] not in names or not entry.is_file(follow_symlinks=False):
            continue
        pid = int(match["pid"])
        if _process_alive(pid):
            continue
        try:
            size = entry.stat(follow_symlinks=False).st_size
            os.remove(entry.path)
        except FileNotFoundError:
            continue  # another run removed it first
        except OSError as err:
            log.warning("could not remove %s, left by an interrupted rfml generate (pid %d): %s", entry.path, pid, err)
            continue
        log.warning(
            "removed %s (%d bytes), a partial file left by an interrupted rfml generate (pid %d, no longer running)",
            entry.path,
            size,
            pid,
        )
        removed.append(entry.path)
    return removed


def _whole_number(name: str, value: Any, minimum: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _means_folder(out: str) -> bool:
    """``out`` names a folder: it ends with a separator, is an existing folder, or its name has no suffix."""
    separators = tuple({os.sep, os.altsep or os.sep})
    return out.endswith(separators) or os.path.isdir(out) or not os.path.splitext(os.path.basename(out))[1]


def _check_folder(out: str, folder: str) -> None:
    """``folder`` exists as a folder or can be made: the nearest existing path above it is a folder."""
    here = os.path.abspath(folder)
    while not os.path.exists(here):
        here = os.path.dirname(here)
    if not os.path.isdir(here):
        raise ValueError(f"{out}: {here} is a file, so the folder {folder} cannot be made there")


def output_path(preset: str, out: str | os.PathLike[str]) -> tuple[str, str]:
    """Where :func:`write_dataset` writes ``preset`` for ``out``: ``(path, folder)``, checked but not created.

    ``out`` is a folder (ending in ``/``, an existing folder, or a name without a suffix: created if missing, and
    it receives :attr:`DatasetPreset.synthetic_name`) or a file path, whose folder must exist. For ``ism2017``
    ``out`` is always the folder that receives ``data_iq.p``, ``labels.p`` and ``provenance.json``.
    """
    spec = get_preset(preset)
    given = os.fspath(out)
    if not given:
        raise ValueError("out must name a file or a folder, got an empty path")
    if spec.layout == "ism":
        folder = path = given.rstrip("/" + os.sep) or given
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise ValueError(f"{given}: {spec.name} is written as a folder (data_iq.p, labels.p); a file is there")
        _check_folder(given, folder)
        return path, folder
    if _means_folder(given):
        folder = given
        _check_folder(given, folder)
        return os.path.join(folder, spec.synthetic_name), folder
    folder = os.path.dirname(os.path.abspath(given))
    if not os.path.isdir(folder):
        if os.path.exists(folder):
            raise ValueError(f"{given}: {folder} is a file, not a folder")
        raise FileNotFoundError(
            f"{given}: the folder {folder} does not exist (give --out {os.path.dirname(given) or '.'}/ to have a "
            "folder made, which receives the preset's synthetic file name)"
        )
    return given, folder


def provenance_record(preset: str, per_key: int, seed: int, channel: str, files: Mapping[str, int]) -> dict[str, Any]:
    """What a generated file records about itself; ``files`` ties the record to the bytes it describes."""
    spec = get_preset(preset)
    return {
        "generator": "rfml generate",
        "preset": spec.name,
        "seed": int(seed),
        "channel": channel,
        "per_key": int(per_key),
        "classes": list(spec.classes),
        "snrs": [int(snr) for snr in spec.snrs],
        "length": spec.length,
        "version": version_of(),
        **({"files": dict(files)} if files else {}),
    }


def write_dataset(
    preset: str,
    out: str | os.PathLike[str],
    per_key: int | None = None,
    seed: int = 0,
    workers: int = 1,
    channel: str | None = None,
    progress: bool = True,
) -> str:
    """Generate a dataset in a published layout and write it atomically, with its provenance record.

    ``out`` is a folder (it ends in ``/``, exists as a folder, or has no suffix; made if missing) that receives the
    preset's *synthetic* name, :attr:`DatasetPreset.synthetic_name` (``RML2016.10a_dict.synthetic.pkl``,
    ``RML2016.10b.synthetic.dat``, ``GOLD_XYZ_OSC.0001_1024.synthetic.hdf5``), never the real file's name; or a
    file path (its folder must exist), written as given. For ``ism2017`` it is the folder that receives
    ``data_iq.p`` and ``labels.p``. Every argument is checked before any frame is generated (``seed`` must be an
    integer in ``[0, 2**64)``, :func:`rfml.dsp.rng.check_seed`).

    The provenance record (preset, seed, channel, per_key, class set, SNR grid, library version) is stored in the
    file where the layout allows (the HDF5 attribute ``rfml_provenance``) and otherwise in a JSON record that also
    holds the data files' sizes: ``<file>.provenance.json`` beside a pickle, ``provenance.json`` in the ISM folder.
    The loaders check a file against its record and announce every load (``synthetic data (…) at PATH``).

    Frames are generated in ranges of rows by ``workers`` processes and written in file order as they come,
    so memory stays bounded (one range per worker in flight; for the 2016 pickle, one key).
    Everything is written to hidden ``.{name}.{pid}.partial`` files first, renamed into place once complete (the
    record before the data), so the file appears under its name only when complete. Partial files of the same
    target that a killed earlier run left behind (their pid no longer runs) are removed before writing
    (:func:`remove_stale_partials`); a live concurrent writer's are left alone. Returns the path written.
    """
    spec = get_preset(preset)
    per_key = spec.per_key if per_key is None else _whole_number("per_key", per_key, 1)
    seed = rng.check_seed(seed)
    workers = _whole_number("workers", workers, 1)
    channel = channel or spec.channel
    channel_preset(channel)
    path, folder = output_path(spec.name, out)
    if os.path.basename(path) == spec.file_name and spec.layout != "ism":
        log.warning("writing synthetic data under the real %s file name %s; every load of it says so", spec.name, path)
    os.makedirs(folder, exist_ok=True)
    if spec.layout == "ism":
        targets = ["data_iq.p", "labels.p", ISM_RECORD]
    else:
        targets = [os.path.basename(path), os.path.basename(sidecar_path(path))]
    remove_stale_partials(folder, targets)
    total = len(spec.classes) * len(spec.snrs) * per_key
    # One pickle key per range; HDF5 and ISM ranges of about 16 MiB of frames.
    step = per_key if spec.layout == "pickle" else max(1, (16 << 20) // (spec.length * 8))
    threads = max(1, (os.cpu_count() or 1) // workers)
    job = _Job(spec.name, seed, channel, per_key, threads)
    stream = iter(_RowStream(job, _row_ranges(total, step), workers))
    staged: list[tuple[str, str]] = []  # (temporary, final), renamed once the record is in place
    bar = tqdm(
        total=total,
        unit="frame",
        unit_scale=True,
        desc=f"{spec.name} -> {os.path.basename(path)}",
        disable=not progress,
    )
    try:
        if spec.layout == "ism":
            _write_ism(folder, spec, stream, per_key, bar, staged)
            sizes = {os.path.basename(final): os.path.getsize(temporary) for temporary, final in staged}
            _stage_json(folder, ISM_RECORD, provenance_record(spec.name, per_key, seed, channel, sizes), staged)
        else:
            temporary = _partial_path(folder, os.path.basename(path))
            staged.append((temporary, path))
            if spec.layout == "pickle":
                with open(temporary, "wb") as handle:
                    _write_pickle(handle, spec, stream, bar)
                record = provenance_record(spec.name, per_key, seed, channel, {"data": os.path.getsize(temporary)})
                _stage_json(folder, os.path.basename(sidecar_path(path)), record, staged)
            else:
                record = provenance_record(spec.name, per_key, seed, channel, {})
                attrs = {PROVENANCE_ATTR: json.dumps(record)}
                write_hdf5(temporary, stream, total, spec.length, len(spec.classes), bar, attrs)
        for temporary, final in staged:  # the record first, so a data file never stands without its record
            os.replace(temporary, final)
    finally:
        bar.close()
        for temporary, _ in staged:
            if os.path.exists(temporary):
                os.remove(temporary)
    return path
