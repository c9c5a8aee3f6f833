"""Bundles for a device: written on the host, profiled with numpy + onnxruntime only, ingested back."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from ondevice.bundle import ingest, write_bundle
from ondevice.cli import main as ondevice_main
from ondevice.device.runner import BundleError, read_manifest
from ondevice.examples import small_cnn, transformer_block

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "ondevice" / "device" / "runner.py"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    models = {"cnn": small_cnn(width=16, length=256), "block": transformer_block(d_model=32, length=16)}
    return write_bundle(
        models, tmp_path_factory.mktemp("b") / "bundle", batch_sizes=(1, 2), warmup=1, repeats=6, rounds=3
    )


@pytest.fixture(scope="module")
def no_torch_path(tmp_path_factory):
    """A PYTHONPATH entry on which `import torch` and `import ondevice` fail, for this process's children too."""
    shadow = tmp_path_factory.mktemp("shadow")
    for package in ("torch", "ondevice"):
        (shadow / package).mkdir()
        (shadow / package / "__init__.py").write_text(f"raise ImportError('{package} is not on this device')\n")
    return shadow


def _run_device(args, env_path, cwd):
    code = (
        "import sys, runpy; sys.modules['torch'] = None; sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, env_path))}
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_bundle_holds_models_inputs_manifest_and_the_runner(bundle):
    manifest = read_manifest(bundle)
    assert [(e["name"], e["backend"]) for e in manifest["models"]] == [
        ("cnn", "onnxruntime"), ("cnn", "onnxruntime-int8"), ("block", "onnxruntime"), ("block", "onnxruntime-int8"),
    ]  # fmt: skip
    cnn = manifest["models"][0]
    assert cnn["inputs"] == [{"name": "x", "file": "inputs/cnn.x.npy", "shape": ["batch", 2, 256], "dtype": "float32"}]
    assert np.load(bundle / cnn["inputs"][0]["file"]).shape == (1, 2, 256)
    assert cnn["params"] == sum(p.numel() for p in small_cnn(width=16, length=256)[0].parameters())
    assert manifest["settings"] == {"warmup": 1, "repeats": 6, "rounds": 3}
    assert (bundle / "profile_bundle.py").read_bytes() == RUNNER.read_bytes()
    assert not [p for p in bundle.parent.iterdir() if p.name.endswith(".partial")]


@pytest.fixture(scope="module")
def board(bundle, no_torch_path, tmp_path_factory):
    """The bundle copied to a "board" and profiled there by its own profile_bundle.py; returns the board folder.

    Only the bundle folder, numpy and onnxruntime: neither torch nor the ondevice package can load.
    """
    board = tmp_path_factory.mktemp("device") / "board"
    shutil.copytree(bundle, board)
    proc = _run_device([board / "profile_bundle.py", board, "--threads", "1"], [no_torch_path], cwd=board.parent)
    assert proc.returncode == 0, proc.stderr
    return board


@pytest.fixture(scope="module")
def results_file(board, tmp_path_factory):
    """The board's results, copied back to a folder of their own on the host."""
    (written,) = board.glob("results-*-1t.json")
    return Path(shutil.copyfile(written, tmp_path_factory.mktemp("results") / "results-board-1t.json"))


def test_copied_runner_profiles_the_bundle_without_torch_or_ondevice(bundle, board):
    (results_file,) = board.glob("results-*-1t.json")  # the default name: results-<host>-<threads>t.json
    results = json.loads(results_file.read_text())
    assert results["bundle_id"] == read_manifest(bundle)["bundle_id"]
    cells = [(m["model"], m["backend"], m["batch_size"]) for m in results["measurements"]]
    assert sorted(cells) == sorted(
        (n, b, s) for n in ("cnn", "block") for b in ("onnxruntime", "onnxruntime-int8") for s in (1, 2)
    )
    assert all(m["n"] == 6 and m["median_ms"] > 0 and m["peak_rss_exclusive"] for m in results["measurements"])
    assert "torch" not in results["environment"] and results["environment"]["onnxruntime"]


def test_python_m_ondevice_device_runs_with_torch_blocked(bundle, no_torch_path, tmp_path):
    board = tmp_path / "board"
    shutil.copytree(bundle, board)
    code = (
        "import sys, runpy; sys.modules['torch'] = None; sys.argv = ['ondevice.device', *sys.argv[1:]]; "
        "runpy.run_module('ondevice.device', run_name='__main__')"
    )
    shadow_torch_only = tmp_path / "shadow"
    shutil.copytree(no_torch_path / "torch", shadow_torch_only / "torch")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow_torch_only), str(REPO)])}
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(board), "--threads", "1", "--in-process", "--repeats", "3", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())
    assert {m["n"] for m in results["measurements"]} == {3}
    assert results["settings"]["isolate"] is False


def test_ingest_returns_a_latency_report_of_the_device_results(bundle, results_file):
    report = ingest(results_file, bundle)
    raw = json.loads(results_file.read_text())
    assert len(report.measurements) == 8
    m = report.get("onnxruntime-int8", 2, model="block")
    (expected,) = [
        r
        for r in raw["measurements"]
        if (r["model"], r["backend"], r["batch_size"]) == ("block", "onnxruntime-int8", 2)
    ]
    assert m.median_ms == expected["median_ms"] and list(m.samples_ms) == expected["samples_ms"]
    assert report.models["cnn"]["macs"] == read_manifest(bundle)["models"][0]["macs"] > 0
    assert report.source["bundle_id"] == read_manifest(bundle)["bundle_id"]


def test_cli_ingest_writes_the_report_beside_the_results(bundle, results_file, capsys):
    assert ondevice_main(["ingest", str(results_file), "--bundle", str(bundle)]) == 0
    written = sorted(p.name for p in results_file.parent.iterdir())
    assert written == [results_file.name] + [f"{results_file.stem}.report.{s}" for s in ("json", "md", "png")]
    assert "| cnn | onnxruntime | 1 | 1 |" in capsys.readouterr().out


def test_results_from_another_bundle_are_refused(bundle, results_file, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(bundle, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["bundle_id"] = "0" * 32
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        BundleError, match=r"refused: these results were measured on bundle '[0-9a-f]{32}', but .* is bundle '0{32}'"
    ):
        ingest(results_file, other)
    # Same id, edited manifest: refused too.
    manifest["bundle_id"] = read_manifest(bundle)["bundle_id"]
    manifest["settings"]["repeats"] = 99
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="has changed since these results were measured"):
        ingest(results_file, other)
    not_results = tmp_path / "x.json"
    not_results.write_text(json.dumps({"format": "ondevice-latency-report"}))
    with pytest.raises(BundleError, match="field 'format' must be 'ondevice-device-results'"):
        ingest(not_results, bundle)


def test_a_missing_onnx_file_names_the_manifest_entry(bundle, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    (broken / "block.int8.onnx").unlink()
    with pytest.raises(
        BundleError, match=r"models\[3\] \('block', 'onnxruntime-int8'\): ONNX file 'block.int8.onnx' is missing"
    ):
        read_manifest(broken)
    proc = _run_device([RUNNER, broken, "--threads", "1"], [], cwd=tmp_path)
    assert proc.returncode == 2
    assert "models[3] ('block', 'onnxruntime-int8')" in proc.stderr
    assert not list(broken.glob("results-*"))
    (broken / "cnn.onnx").write_bytes(b"not the exported model")
    with pytest.raises(
        BundleError, match=r"models\[0\] \('cnn', 'onnxruntime'\): 'cnn.onnx' does not match the sha256"
    ):
        read_manifest(broken)


def test_bundle_refuses_an_existing_folder_and_leaves_nothing_on_failure(tmp_path):
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("no")

    import torch

    with pytest.raises(RuntimeError, match="ONNX export of Broken"):
        write_bundle({"broken": (Broken(), torch.zeros(1, 3))}, tmp_path / "b")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "b").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        write_bundle({"cnn": small_cnn(width=8, length=64)}, tmp_path / "b")


def test_cli_bundle_names_the_models_and_takes_the_batch_sizes(tmp_path, capsys):
    args = ["bundle", "--model", "tiny=ondevice.examples:small_cnn", "--out", str(tmp_path / "b")]
    assert ondevice_main([*args, "--batch-sizes", "1,4"]) == 0
    manifest = read_manifest(tmp_path / "b")
    assert [(e["name"], e["backend"], e["batch_sizes"]) for e in manifest["models"]] == [
        ("tiny", "onnxruntime", [1, 4])
    ]
    assert f"bundle: {tmp_path / 'b'} (1 models)" in capsys.readouterr().out
    assert ondevice_main(args) == 2  # the folder exists now
    assert "already exists" in capsys.readouterr().err
