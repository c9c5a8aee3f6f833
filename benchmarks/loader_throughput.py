"""RadioML 2018 loader throughput and memory on a >= 2 GB file, three ways side by side in one run.

    python benchmarks/loader_throughput.py [--file PATH] [--per-key 420] [--seconds 12]

(a) raw: h5py reads of X in large sequential slices (8,192 rows), nothing else: the practical upper limit.
(b) ours: ``BatchStream`` with ``BlockShuffleSampler`` over every row (blocks of 256 rows, windows
    of 8,192 rows, batches of 256, shuffled every epoch), batches ``{"x" [B,2,L], "y", "snr"}``;
    also with ``contiguous=True``, which pays the [B,L,2] -> [B,2,L] transposition in the loader.
(c) naive: a torch ``DataLoader`` (batch 256, ``shuffle=True``) over a map-style dataset whose
    ``__getitem__`` reads ``X[i]``, ``Y[i]``, ``Z[i]`` with h5py, the usual pattern in AMR repos.

All three run in this process with ``num_workers=0`` and the page cache warm (the file is read once
first); (b) and (c) are also run with 2 ``DataLoader`` workers. The sequence is run twice and each
figure averaged. Peak RSS of one full epoch
of (b) is measured in a fresh child process (``--epoch-rss``). Writes the file with ``rfml generate``
logic when it is missing (24 classes x 26 SNRs x ``per_key`` frames of 8 KiB; 420 gives 2.15 GB).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ondevice.device.runner import environment
from rfml.data import BatchStream, BlockShuffleSampler, EpochLoader, RadioML2018, write_dataset

BATCH = 256


def raw_read(path: str, seconds: float, slice_rows: int = 8192) -> float:
    """Rows/s of sequential ``X[a:b]`` reads, wrapping around the file until ``seconds`` pass."""
    with h5py.File(path, "r") as handle:
        x_set = handle["X"]
        rows, done, start = x_set.shape[0], 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for first in range(0, rows, slice_rows):
                done += x_set[first : first + slice_rows].shape[0]
        return done / (time.perf_counter() - start)


def ours(path: str, seconds: float, contiguous: bool, workers: int | None = None, finite: bool = True) -> float:
    """Rows/s of whole shuffled epochs of our stream: at least one, and as many as fit in ``seconds``.

    ``workers=None`` iterates the stream itself; a number iterates it through an ``EpochLoader``
    with that many ``DataLoader`` workers (the SignalDataModule path). ``finite=False`` skips the loader's
    NaN/Inf check of every read (on by default), to measure what it costs.
    """
    data = RadioML2018(path, finite=finite)
    sampler = BlockShuffleSampler(np.arange(len(data)), block_rows=256, window_rows=8192, seed=0)
    stream = BatchStream(data, sampler, BATCH, contiguous=contiguous)
    loader = stream if workers is None else EpochLoader(stream, num_workers=workers)
    done, epochs, start = 0, 0, time.perf_counter()
    while epochs == 0 or time.perf_counter() - start < seconds:
        stream.set_epoch(epochs)
        epochs += 1
        for batch in loader:
            done += batch["x"].shape[0]
    return done / (time.perf_counter() - start)


class PerIndexH5(Dataset):
    """The naive pattern: one h5py read per example and per field."""

    def __init__(self, path: str) -> None:
        self.path = path
        with h5py.File(path, "r") as handle:
            self.rows = handle["X"].shape[0]
        self.handle: h5py.File | None = None

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.handle is None:
            self.handle = h5py.File(self.path, "r")
        x = torch.from_numpy(self.handle["X"][index]).T
        y = int(np.argmax(self.handle["Y"][index]))
        snr = int(self.handle["Z"][index][0])
        return x, torch.tensor(y), torch.tensor(snr)


def naive(path: str, seconds: float, workers: int = 0) -> float:
    loader = DataLoader(PerIndexH5(path), batch_size=BATCH, shuffle=True, num_workers=workers)
    done, start = 0, time.perf_counter()
    for x, _, _ in loader:
        done += x.shape[0]
        if time.perf_counter() - start >= seconds:
            break
    return done / (time.perf_counter() - start)


def _status_mib(field: str) -> float:
    # VmHWM is this process's own peak; ru_maxrss would carry the parent's peak across fork and exec.
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def epoch_rss(path: str) -> dict:
    """Peak RSS of this (fresh) process over one full epoch of (b), against its RSS after imports."""
    baseline = _status_mib("VmRSS")
    start = time.perf_counter()
    rows = ours(path, seconds=0.0, contiguous=False)
    return {
        "baseline_mib": baseline,
        "peak_mib": _status_mib("VmHWM"),
        "epoch_s": time.perf_counter() - start,
        "rows_per_s": rows,
    }


def warm(path: str) -> None:
    with open(path, "rb") as handle:
        while handle.read(64 << 20):
            pass


METHODS: dict[str, Callable[[str, float], float]] = {
    "a": raw_read,
    "b": functools.partial(ours, contiguous=False),
    "b_unchecked": functools.partial(ours, contiguous=False, finite=False),
    "b_contiguous": functools.partial(ours, contiguous=True),
    "c": naive,
    "b_workers": functools.partial(ours, contiguous=False, workers=2),
    "c_workers": functools.partial(naive, workers=2),
}
NAMES = {
    "a": "(a) raw h5py X[a:b], 8,192-row slices",
    "b": "(b) ours: BatchStream, block shuffle",
    "b_unchecked": "(b) with finite=False (no NaN/Inf check)",
    "b_contiguous": "(b') ours, contiguous [B,2,L] copy",
    "c": "(c) naive DataLoader, per-index h5py",
    "b_workers": "(b) through EpochLoader, 2 workers",
    "c_workers": "(c) naive, 2 workers",
}
RATIOS = [("b", "a"), ("b", "c"), ("b_contiguous", "a"), ("b_contiguous", "c"), ("b", "b_unchecked")]
RATIOS += [("b_workers", "c_workers")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", default="/tmp/rfml_bench/GOLD_XYZ_OSC.0001_1024.hdf5")
    parser.add_argument("--per-key", type=int, default=420)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--workers", type=int, default=2, help="generator processes if the file is made")
    parser.add_argument("--epoch-rss", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--only",
        default=",".join(METHODS),
        help=f"comma-separated methods to run, of {','.join(METHODS)} (default: all; the naive ones take minutes)",
    )
    args = parser.parse_args()
    if args.epoch_rss:
        print(json.dumps(epoch_rss(args.file)))
        return
    if not os.path.exists(args.file):
        os.makedirs(os.path.dirname(args.file), exist_ok=True)
        start = time.perf_counter()
        write_dataset("rml2018.01a", args.file, per_key=args.per_key, workers=args.workers)
        print(f"wrote {args.file} in {time.perf_counter() - start:.0f} s")
    size_gb = os.path.getsize(args.file) / 1e9
    warm(args.file)
    only = [key for key in args.only.split(",") if key]
    unknown = sorted(set(only) - set(METHODS))
    if unknown:
        parser.error(f"--only: unknown method(s) {unknown}; choose from {','.join(METHODS)}")
    runs: dict[str, list[float]] = {key: [] for key in METHODS if key in only}
    for _ in range(2):
        for key in runs:
            runs[key].append(METHODS[key](args.file, args.seconds))
    mean = {key: float(np.mean(values)) for key, values in runs.items()}
    child = subprocess.run(
        [sys.executable, __file__, "--file", args.file, "--epoch-rss"], capture_output=True, text=True, check=True
    )
    rss = json.loads(child.stdout.strip().splitlines()[-1])
    report = {
        "file_gb": size_gb,
        "runs": runs,
        "mean_rows_per_s": mean,
        **{
            f"{top}_over_{bottom}": mean[top] / mean[bottom] for top, bottom in RATIOS if top in mean and bottom in mean
        },
        "epoch_rss": rss,
        "machine": "{cpu_model}, {cpu_count} CPUs".format(**environment()),
        "versions": {"torch": torch.__version__, "h5py": h5py.__version__, "hdf5": h5py.version.hdf5_version},
    }
    print(f"file: {args.file} ({size_gb:.2f} GB), batch {BATCH}, warm page cache; ratios use the num_workers=0 rows")
    print("| method | rows/s (run 1, run 2) | mean rows/s |")
    print("|---|---|---:|")
    for key in runs:
        print(f"| {NAMES[key]} | {', '.join(f'{v:,.0f}' for v in runs[key])} | {mean[key]:,.0f} |")
    ratios = {key.replace("_over_", " / "): value for key, value in report.items() if "_over_" in key}
    print("; ".join(f"{name} = {value:.2f}" for name, value in ratios.items()))
    print(
        f"one epoch of (b) in a fresh process: peak RSS {rss['peak_mib']:.0f} MiB "
        f"(after imports {rss['baseline_mib']:.0f} MiB), {rss['epoch_s']:.1f} s"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
