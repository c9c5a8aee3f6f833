"""Deployable AMR exports: `rfml.export` stores the preprocessing in the ONNX props, and `ondevice.device.predict`
(numpy + onnxruntime, torch blocked from import) reproduces the torch pipeline from them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from ondevice.device import ModelPropsError, Predictor
from ondevice.device.predict import FORMAT_KEY
from ondevice.export import write_metadata_props
from ondevice.io import sha256_file
from rfml.data import write_dataset
from rfml.export import datamodule_from_checkpoint, export_model
from rfml.models import create
from rfml.trainers.checkpoints import model_from_checkpoint
from rfml.trainers.cli import lightning_main

CONFIGS = Path(__file__).resolve().parents[1] / "rfml" / "configs"
FRAMES = 500
SHORT = ["--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"]
SHORT += ["--trainer.logger", "false", "--trainer.callbacks", "[]"]
# Torch cannot be imported in the device process: what predict needs must be numpy and onnxruntime alone.
DEVICE_PRELUDE = """
import sys
sys.modules["torch"] = None
import numpy as np
from ondevice.device import predict
names, logits = predict(sys.argv[1], np.load(sys.argv[2]))
assert not any(m.startswith(("torch", "rfml", "lightning")) for m in sys.modules if sys.modules[m] is not None)
np.save(sys.argv[3], logits)
print("\\n".join(names))
"""


def fit(config: str, root: Path, extra: list[str]) -> Path:
    lightning_main(["fit", "-c", str(CONFIGS / config), *extra, *SHORT, "--trainer.default_root_dir", str(root)])
    (ckpt,) = (root / "checkpoints").glob("*.ckpt")
    return ckpt


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two `rfml fit` checkpoints trained two steps: ISM with 4 MHz band selection + PCA, and RadioML IQ kd_cnn."""
    work = tmp_path_factory.mktemp("deploy")
    data = work / "data"
    data.mkdir()
    write_dataset("ism2017", data, per_key=3, seed=0, progress=False)
    write_dataset("rml2016.10a", data, per_key=5, seed=0, progress=False)
    ism = ["--data.init_args.data_dir", str(data), "--data.init_args.per_key", "3", "--data.init_args.split", "1:1:1"]
    ism += ["--data.init_args.batch_size", "32", "--data.init_args.view", "fft_amp_phase"]
    ism += ["--data.init_args.selection", "pca", "--data.init_args.selection_rate", "4"]
    ism += ["--model.init_args.model_kwargs", '{"hidden": 32}']
    iq = ["--data.init_args.data_dir", str(data), "--data.init_args.per_key", "5", "--data.init_args.batch_size", "64"]
    return {
        "ism_band_pca": fit("ism_cnn_band4mhz.yaml", work / "ism", ism),
        "iq_kd_cnn": fit("kd_cnn.yaml", work / "iq", iq),
    }


def torch_pipeline(ckpt: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Class names, FRAMES raw frames and the logits of the datamodule's transform + the trained network."""
    datamodule = datamodule_from_checkpoint(ckpt)
    datamodule.setup("fit")
    data = datamodule._dataset()
    rows = torch.randperm(len(data), generator=torch.Generator().manual_seed(1))[:FRAMES]
    x = data.get_batch(rows)["x"]
    net, _ = model_from_checkpoint(ckpt)
    with torch.no_grad():
        logits = net.eval()(datamodule.transform(x)).numpy()
    return datamodule.classes, x.numpy(), logits


@pytest.mark.parametrize("name", ["ism_band_pca", "iq_kd_cnn"])
def test_device_predict_without_torch_equals_the_torch_pipeline(
    name: str, checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    ckpt = checkpoints[name]
    exported = export_model(tmp_path / f"{name}.onnx", checkpoint=ckpt)
    assert exported.check.ok
    classes, frames, expected = torch_pipeline(ckpt)
    assert frames.shape[0] == FRAMES
    np.save(tmp_path / "frames.npy", frames)
    run = subprocess.run(
        [sys.executable, "-c", DEVICE_PRELUDE, str(exported.path), str(tmp_path / "frames.npy"), str(tmp_path / "l")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == classes
    got = np.load(tmp_path / "l.npy")
    assert got.shape == expected.shape == (FRAMES, len(classes))
    np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_props_are_present_and_parse(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    ckpt = checkpoints["ism_band_pca"]
    path = export_model(tmp_path / "ism.onnx", checkpoint=ckpt).path
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    datamodule = datamodule_from_checkpoint(ckpt)
    assert json.loads(props["class_names"]) == datamodule.classes and len(datamodule.classes) == 10
    assert (props["input_length"], props["frame_length"]) == ("13", "128")  # 52 band bins, PCA keeps 1/4
    assert props["checkpoint_sha256"] == sha256_file(ckpt)
    assert (props["view"], props["norm"], props["trained"]) == ("fft_amp_phase", "none", "true")
    assert json.loads(props["bands"]) == [[2422.0, 2424.0], [2429.0, 2431.0]]
    assert json.loads(props["selection"]) == {"method": "pca", "rate": 4, "length": 52, "seed": 0}
    steps = json.loads(props["preprocessing"])
    assert [s["op"] for s in steps] == ["view", "select_bins", "project"]
    assert len(steps[1]["bins"]) == 52
    assert np.asarray(steps[2]["components"]).shape == (2, 52, 13)
    np.testing.assert_array_equal(np.asarray(steps[2]["mean"]), datamodule.selection.mean.numpy())
    assert props["library_version"]


def test_standardize_statistics_reach_the_props_and_the_device(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    # The IQ checkpoint's datamodule, refitted with norm='standardize', must carry its mean/std into the props.
    ckpt = torch.load(checkpoints["iq_kd_cnn"], weights_only=True)
    ckpt["datamodule_hyper_parameters"]["norm"] = "standardize"
    datamodule = datamodule_from_checkpoint(checkpoints["iq_kd_cnn"])
    datamodule.view.norm = "standardize"
    datamodule.setup("fit")
    ckpt["SignalDataModule"] = datamodule.state_dict()
    edited = tmp_path / "standardized.ckpt"
    torch.save(ckpt, edited)
    path = export_model(tmp_path / "std.onnx", checkpoint=edited).path
    props = Predictor(path).props
    stats = json.loads(props["norm_stats"])
    np.testing.assert_allclose(stats["mean"], datamodule.view.mean.numpy())
    np.testing.assert_allclose(stats["std"], datamodule.view.std.numpy())
    classes, frames, _ = torch_pipeline(checkpoints["iq_kd_cnn"])
    net, _ = model_from_checkpoint(edited)
    with torch.no_grad():
        expected = net.eval()(datamodule.transform(torch.from_numpy(frames))).numpy()
    names, got = Predictor(path)(frames)
    assert names == classes
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_untrained_export_says_so_and_the_device_refuses_it(tmp_path: Path) -> None:
    exported = export_model(tmp_path / "bare.onnx", model=create("kd_cnn", 11, 128), length=128)
    assert exported.props["trained"] == "false" and exported.props["input_length"] == "128"
    assert "class_names" not in exported.props
    with pytest.raises(ModelPropsError, match=r"bare.onnx.*'trained'"):
        Predictor(exported.path)


def test_device_predict_names_missing_or_unknown_props(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    path = export_model(tmp_path / "iq.onnx", checkpoint=checkpoints["iq_kd_cnn"]).path
    props = Predictor(path).props
    write_metadata_props(path, {**props, FORMAT_KEY: "ondevice-rfml-classifier/99"})
    with pytest.raises(ModelPropsError, match=r"iq.onnx.*ondevice.format.*/99"):
        Predictor(path)
    write_metadata_props(path, {k: v for k, v in props.items() if k != "preprocessing"})
    with pytest.raises(ModelPropsError, match=r"iq.onnx.*'preprocessing'"):
        Predictor(path)
    write_metadata_props(path, {})
    with pytest.raises(ModelPropsError, match=r"no 'ondevice.format'"):
        Predictor(path)
    write_metadata_props(path, props)
    with pytest.raises(ValueError, match=r"\[B, 2, 128\]"):
        Predictor(path)(np.zeros((3, 2, 64), dtype=np.float32))


def test_module_entry_predicts_and_keeps_the_bundle_entry(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    path = export_model(tmp_path / "iq.onnx", checkpoint=checkpoints["iq_kd_cnn"]).path
    classes, frames, expected = torch_pipeline(checkpoints["iq_kd_cnn"])
    np.save(tmp_path / "frames.npy", frames[:4])
    out = tmp_path / "pred.npz"
    run = subprocess.run(
        [sys.executable, "-m", "ondevice.device", "predict", str(path), str(tmp_path / "frames.npy"), "--out", out],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [f"{i} {classes[k]}" for i, k in enumerate(expected[:4].argmax(axis=1))]
    with np.load(out) as saved:
        np.testing.assert_allclose(saved["logits"], expected[:4], rtol=0, atol=1e-4)
        assert saved["class_names"].tolist() == classes
    bundle = subprocess.run(
        [sys.executable, "-m", "ondevice.device", str(tmp_path / "no_bundle")], capture_output=True, text=True
    )
    assert bundle.returncode != 0 and "no_bundle" in bundle.stderr
