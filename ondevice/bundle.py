"""Host side of on-device profiling: write a bundle for a board, and read its results back.

A bundle is a folder: ONNX models, their example inputs (.npy), `manifest.json`, `profile_bundle.py` (a copy of
`ondevice/device/runner.py`) and `manifest.py` (of `ondevice/device/manifest.py`, the manifest checks it
imports); the two need only numpy and onnxruntime.

Bundles and results come back from another machine and are read as untrusted: `read_manifest` keeps every path
inside the bundle and checks every field; `ingest` reads a results file only up to `MAX_RESULTS_BYTES` (16 MiB;
`ingest(..., max_bytes=N)` or `ondevice ingest --max-results-mib N` raises it) and checks every number and cell
before it returns a report, so nothing is written from a file that is refused.
"""

from __future__ import annotations

import datetime as dt
import numbers
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ondevice.device import manifest as device_manifest
from ondevice.device import runner as device_runner
from ondevice.device.manifest import (
    BUNDLE_FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    BundleError,
    read_json_file,
    read_manifest,
)
from ondevice.device.runner import RESULTS_FORMAT
from ondevice.errors import InputError
from ondevice.export import (
    ExampleInputs,
    as_input_tuple,
    default_input_names,
    export_onnx,
    external_data_path,
    quantize_dynamic_int8,
    verify_onnx,
)
from ondevice.io import sha256_file, share_like_umask, write_json_atomic
from ondevice.profile import model_facts
from ondevice.report import LatencyReport

README = """Latency bundle written by `ondevice bundle` ({created}).

On the device (needs Python 3.10+, numpy and onnxruntime; torch is not needed):

    python profile_bundle.py . --threads 1          # or --threads 1,2,4

It writes results-<host>-<threads>t.json here. Copy that file back and run on the host:

    ondevice ingest results-<host>-<threads>t.json --bundle <this folder>
"""


MAX_RESULTS_BYTES = 16 * 2**20
"""The largest device results file `ingest` reads unless told otherwise. A results file holds every timed call
(~16 bytes each: 50 repeats x 300 cells is ~0.3 MB), so the default holds ~1 million; parsing a hostile file
takes up to ~26x its size in memory (~0.45 GB at the default). Raise it with `ingest(..., max_bytes=N)` or
`ondevice ingest --max-results-mib N`."""

_RESULTS_HINT = "; raise it with ingest(..., max_bytes=N) or `ondevice ingest --max-results-mib N`"


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_file_name(name: object, what: str) -> None:
    """A model or input name becomes part of a file name in the bundle: it must not name another folder."""
    if not isinstance(name, str) or not name or name.startswith(".") or any(c in name for c in "/\\\0"):
        raise InputError(
            f"{what} {name!r} must be a non-empty name without '/', '\\' or NUL that does not start with '.' "
            "(it names files in the bundle)"
        )


def _check_settings(batch_sizes: Sequence[int], warmup: int, repeats: int, rounds: int) -> list[int]:
    """The batch sizes as ints, after the checks `read_manifest` makes on the device."""
    for name, value, minimum in (("warmup", warmup, 0), ("repeats", repeats, 1), ("rounds", rounds, 1)):
        if not _is_int(value) or value < minimum:
            raise InputError(f"{name} must be an integer >= {minimum}; got {value!r}")
    sizes = list(batch_sizes)
    if not sizes:
        raise InputError("batch_sizes must be a non-empty list of integers >= 1; got none")
    for k, size in enumerate(sizes):
        if not _is_int(size) or size < 1:
            raise InputError(f"batch_sizes[{k}] must be an integer >= 1; got {size!r}")
        if size in sizes[:k]:
            raise InputError(f"batch_sizes[{k}] must be a batch size not already listed; got {size!r}")
    return [int(size) for size in sizes]


def write_bundle(
    models: Mapping[str, tuple[nn.Module, ExampleInputs] | tuple[str | os.PathLike, Mapping[str, np.ndarray]]],
    out_dir: str | os.PathLike,
    batch_sizes: Sequence[int] = (1,),
    *,
    int8: bool = True,
    warmup: int = 10,
    repeats: int = 50,
    rounds: int = 10,
    atol: float = 1e-4,
) -> Path:
    """Export each model (fp32, and dynamic int8 if `int8`) into a new bundle folder `out_dir`.

    A model is `(nn.Module, example_inputs)`, exported here and checked against torch (|ORT - torch| <=
    `atol`) before it goes in, or `(path.onnx, {input name: array})` for a graph exported and checked
    already (one with extra symbolic axes, say); its file (and external `.data`) is copied in. The folder
    appears complete or not at all: it is built under a temporary name and renamed.

    Model and input names become file names, so they may not hold '/', '\\' or NUL nor start with '.'; the
    settings and batch sizes are checked as the device's `read_manifest` checks them. Both are refused with
    `InputError` before anything is exported.
    """
    out = Path(out_dir)
    if out.exists():
        raise FileExistsError(f"{out} already exists; choose a new --out folder or remove it")
    if not models:
        raise ValueError("a bundle needs at least one model")
    for name in models:
        _check_file_name(name, "model name")
    batch_sizes = _check_settings(batch_sizes, warmup, repeats, rounds)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = share_like_umask(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        entries = []
        for name, (model, example) in models.items():
            if isinstance(model, nn.Module):
                inputs = as_input_tuple(example)
                fp32 = export_onnx(model, inputs, tmp / f"{name}.onnx")
                verify_onnx(model, fp32, inputs, atol=atol)
                arrays = {n: t.detach().cpu().numpy() for n, t in zip(default_input_names(inputs), inputs, strict=True)}
                facts = model_facts(model, inputs)
            else:
                fp32, arrays = _copy_onnx(Path(model), tmp / f"{name}.onnx"), dict(example)
                facts = {"params": None, "macs": None}
            (tmp / "inputs").mkdir(exist_ok=True)
            specs = []
            for input_name, array in arrays.items():
                _check_file_name(input_name, f"model {name!r}: input name")
                file = f"inputs/{name}.{input_name}.npy"
                np.save(tmp / file, np.asarray(array), allow_pickle=False)
                shape = ["batch", *np.shape(array)[1:]]
                specs.append({"name": input_name, "file": file, "shape": shape, "dtype": str(np.asarray(array).dtype)})
            files = {"onnxruntime": fp32}
            if int8:
                files["onnxruntime-int8"] = quantize_dynamic_int8(fp32, tmp / f"{name}.int8.onnx")
            for backend, path in files.items():
                entries.append(
                    {
                        "name": name,
                        "backend": backend,
                        "file": path.name,
                        "sha256": sha256_file(path),
                        "inputs": specs,
                        "batch_sizes": batch_sizes,
                        **facts,
                    }
                )
        created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        manifest = {
            "format": BUNDLE_FORMAT,
            "version": FORMAT_VERSION,
            "bundle_id": uuid.uuid4().hex,
            "created": created,
            "settings": {"warmup": warmup, "repeats": repeats, "rounds": rounds},
            "models": entries,
        }
        write_json_atomic(tmp / MANIFEST_NAME, manifest)
        shutil.copyfile(device_runner.__file__, tmp / "profile_bundle.py")
        shutil.copyfile(device_manifest.__file__, tmp / "manifest.py")  # profile_bundle.py imports it
        (tmp / "README.txt").write_text(README.format(created=created))
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _copy_onnx(src: Path, dst: Path) -> Path:
    if src.suffix != ".onnx" or not src.is_file():
        raise FileNotFoundError(f"{src}: no such ONNX file to put in the bundle")
    shutil.copyfile(src, dst)
    data = external_data_path(src)
    if data.is_file():
        # The graph names its data file: it keeps its original name beside the copy.
        if (dst.parent / data.name).exists():
            raise FileExistsError(f"{src}: two bundle models keep their weights in {data.name}; export them apart")
        shutil.copyfile(data, dst.parent / data.name)
    return dst


def ingest(
    results_path: str | os.PathLike,
    bundle_dir: str | os.PathLike | None = None,
    *,
    max_bytes: int = MAX_RESULTS_BYTES,
) -> LatencyReport:
    """Load a device's results JSON as a LatencyReport, after checking it belongs to this bundle.

    Everything is checked before the report is returned (so a caller that saves it writes nothing from a
    refused file), each failure a `BundleError` naming the results file, the field and what it must be:

    - the file is read only if `os.stat` shows a regular file of at most `max_bytes` (`MAX_RESULTS_BYTES`);
    - the bundle's manifest passes `read_manifest` (paths inside the bundle, every field checked), and the
      results name its bundle_id, its manifest's sha256 and its models' sha256;
    - every measurement passes `Measurement.from_dict` (finite, positive latencies and throughput; counts and
      sizes integers >= 1), the list is non-empty, and no cell is measured twice;
    - every cell is one the bundle holds: a model, a backend for that model, and a batch size for that pair.

    The model facts (params, MACs) come from the manifest, not from the results.
    """
    results_path = Path(results_path)
    bundle = Path(bundle_dir) if bundle_dir is not None else results_path.parent
    results: Any = read_json_file(results_path, "device results file", max_bytes, _RESULTS_HINT)
    if not isinstance(results, dict) or results.get("format") != RESULTS_FORMAT:
        raise BundleError(f"{results_path}: field 'format' must be {RESULTS_FORMAT!r}; not a device results file")
    manifest = read_manifest(bundle)
    if results.get("bundle_id") != manifest["bundle_id"]:
        raise BundleError(
            f"{results_path}: refused: these results were measured on bundle {results.get('bundle_id')!r}, but "
            f"{bundle / MANIFEST_NAME} is bundle {manifest['bundle_id']!r}; pass --bundle with the folder the "
            "results came from"
        )
    if results.get("manifest_sha256") != manifest["sha256"]:
        raise BundleError(
            f"{results_path}: refused: {bundle / MANIFEST_NAME} has changed since these results were measured "
            "(its sha256 differs)"
        )
    entries = {(e["name"], e["backend"]): e for e in manifest["models"]}
    if results.get("files") != {f"{name}/{backend}": e["sha256"] for (name, backend), e in entries.items()}:
        raise BundleError(f"{results_path}: refused: the models measured are not the bundle's models (sha256 differ)")
    facts = {e["name"]: {"params": e.get("params"), "macs": e.get("macs")} for e in manifest["models"]}
    try:
        report = LatencyReport.from_dict({**results, "models": facts}, where=str(results_path))
    except ValueError as exc:
        raise BundleError(str(exc)) from exc
    for i, m in enumerate(report.measurements):
        where = f"{results_path}: field 'measurements[{i}]"
        backends = [backend for name, backend in entries if name == m.model]
        if not backends:
            raise BundleError(f"{where}.model' must be one of the bundle's models {sorted(facts)}; got {m.model!r}")
        if m.backend not in backends:
            raise BundleError(
                f"{where}.backend' must be one of the backends the bundle holds for {m.model!r} {backends}; "
                f"got {m.backend!r}"
            )
        sizes = entries[m.model, m.backend]["batch_sizes"]
        if m.batch_size not in sizes:
            raise BundleError(
                f"{where}.batch_size' must be one of the batch sizes the bundle gives {m.model!r} on "
                f"{m.backend!r} {sizes}; got {m.batch_size!r}"
            )
    report.source = {"bundle_id": manifest["bundle_id"], "results": str(results_path)}
    return report
