"""Host side of on-device profiling: write a bundle for a board, and read its results back.

A bundle is a folder: ONNX models, their example inputs (.npy), `manifest.json`, and `profile_bundle.py`
(a copy of `ondevice/device/runner.py`, which needs only numpy and onnxruntime).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ondevice.device import runner as device_runner
from ondevice.device.runner import (
    BUNDLE_FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    RESULTS_FORMAT,
    BundleError,
    read_manifest,
)
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
    """
    out = Path(out_dir)
    if out.exists():
        raise FileExistsError(f"{out} already exists; choose a new --out folder or remove it")
    if not models:
        raise ValueError("a bundle needs at least one model")
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
                        "batch_sizes": [int(b) for b in batch_sizes],
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


def ingest(results_path: str | os.PathLike, bundle_dir: str | os.PathLike | None = None) -> LatencyReport:
    """Load a device's results JSON as a LatencyReport, after checking it belongs to this bundle."""
    results_path = Path(results_path)
    bundle = Path(bundle_dir) if bundle_dir is not None else results_path.parent
    try:
        results: dict[str, Any] = json.loads(results_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{results_path}: cannot read device results ({exc})") from exc
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
    expected = {f"{e['name']}/{e['backend']}": e["sha256"] for e in manifest["models"]}
    if results.get("files") != expected:
        raise BundleError(f"{results_path}: refused: the models measured are not the bundle's models (sha256 differ)")
    try:
        report = LatencyReport.from_dict(results, where=str(results_path))
    except ValueError as exc:
        raise BundleError(str(exc)) from exc
    report.source = {"bundle_id": manifest["bundle_id"], "results": str(results_path)}
    return report
