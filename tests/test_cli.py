"""The `rfml` command end to end: every config fits (fast_dev_run), then test, predict, DDP, export and profile.

The configs are the shipped ones; only the data folder (a tiny generated RadioML 2016.10a file) and run lengths
are overridden, as a user would on the command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _layer_counts import param_count

from rfml.cli import main
from rfml.data import SignalDataModule, write_dataset
from rfml.models import create
from rfml.trainers.cli import lightning_main

CONFIGS = Path(__file__).resolve().parents[1] / "rfml" / "configs"
# snr_cnn.yaml (a regressor) has its own test in test_snr_estimation.py; snr_study_*.yaml are rfml snr-study configs
MODEL_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.startswith(("skd_", "ism_", "snr_")))
ISM_CONFIGS = sorted(CONFIGS.glob("ism_*.yaml"))
SKD_CONFIGS = sorted(CONFIGS.glob("skd_*.yaml"))
PER_KEY = 5


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a tiny synthetic RadioML 2016.10a file and, once fitted, the ClST teacher checkpoint."""
    work = tmp_path_factory.mktemp("rfml_cli")
    (work / "data").mkdir()
    write_dataset("rml2016.10a", work / "data", per_key=PER_KEY, seed=0, progress=False)
    return work


def data_args(work: Path) -> list[str]:
    return ["--data.init_args.data_dir", str(work / "data"), "--data.init_args.per_key", str(PER_KEY)]


def short_run(epochs: int = 1) -> list[str]:
    return [
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.limit_train_batches",
        "2",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.enable_progress_bar",
        "false",
    ]


@pytest.fixture(scope="module")
def teacher(workdir: Path) -> Path:
    """`rfml fit -c clst.yaml` for one short epoch: the checkpoint lands where the SKD configs look for it."""
    with pytest.MonkeyPatch.context() as patch:  # module scope: restore the working directory after the fit
        patch.chdir(workdir)
        cli = lightning_main(["fit", "-c", str(CONFIGS / "clst.yaml"), *data_args(workdir), *short_run()])
    ckpt = workdir / "runs" / "clst" / "checkpoints" / "best.ckpt"
    assert ckpt.is_file()
    assert cli.model.num_classes == 11 and cli.model.net.head[-1].out_features == 11
    return ckpt


@pytest.fixture(autouse=True)
def _in_workdir(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)


def test_every_model_config_covers_a_registered_model() -> None:
    names = {p.stem for p in MODEL_CONFIGS}
    assert names == {"clst", "kd_cnn", "kd_mobilenet", "vtcnn2", "resnet", "cldnn", "mcldnn", "lstm2"}


@pytest.mark.parametrize("config", MODEL_CONFIGS, ids=lambda p: p.stem)
def test_fit_fast_dev_run_for_every_model_config(config: Path, workdir: Path) -> None:
    cli = lightning_main(["fit", "-c", str(config), *data_args(workdir), "--trainer.fast_dev_run", "1"])
    assert cli.trainer.state.finished
    assert cli.model.hparams["model"] == config.stem
    # The DataModule's classes and frame length reached the model through the CLI's links.
    assert (cli.model.hparams["num_classes"], cli.model.hparams["length"]) == (11, 128)
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    assert 0.0 <= float(cli.trainer.callback_metrics["val/acc"]) <= 1.0


# (classes, input width) each ISM config gives the model: band selection drops the classes with no energy in the kept
# band (4 MHz: 52 bins, 10 classes; 2 MHz: 26 bins, 7 classes) and PCA at 1/16 keeps 8 of 128 components.
ISM_SHAPES = {
    "ism_cnn": (15, 128),
    "ism_resnet": (15, 128),
    "ism_cldnn": (15, 128),
    "ism_lstm": (15, 128),
    "ism_cnn_band4mhz": (10, 52),
    "ism_cnn_band2mhz": (7, 26),
    "ism_cnn_pca16": (15, 8),
}


def test_every_ism_config_is_checked() -> None:
    assert {p.stem for p in ISM_CONFIGS} == set(ISM_SHAPES)


@pytest.mark.parametrize("config", ISM_CONFIGS, ids=lambda p: p.stem)
def test_fit_fast_dev_run_for_every_ism_config(config: Path, workdir: Path) -> None:
    # The synthetic ISM set (3 vectors per class and SNR) is generated into the data folder on first use.
    args = ["--data.init_args.data_dir", str(workdir / "data"), "--data.init_args.per_key", "3"]
    args += ["--data.init_args.split", "1:1:1", "--data.init_args.batch_size", "32"]
    small = ["--model.init_args.model_kwargs", '{"hidden": 32}'] if "cnn" in config.stem else []
    cli = lightning_main(["fit", "-c", str(config), *args, *small, "--trainer.fast_dev_run", "1"])
    assert cli.trainer.state.finished
    assert (cli.model.hparams["num_classes"], cli.model.hparams["length"]) == ISM_SHAPES[config.stem]
    assert cli.datamodule.classes == cli.trainer.datamodule.classes
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])


@pytest.mark.parametrize("mode", ["hybrid", "logit", "ce"])
@pytest.mark.parametrize("config", SKD_CONFIGS, ids=lambda p: p.stem)
def test_skd_configs_fit_from_the_clst_checkpoint(config: Path, mode: str, workdir: Path, teacher: Path) -> None:
    args = ["fit", "-c", str(config), *data_args(workdir), "--trainer.fast_dev_run", "1"]
    cli = lightning_main([*args, "--model.init_args.mode", mode])
    model = cli.model
    assert model.hparams["teacher_checkpoint"] == "runs/clst/checkpoints/best.ckpt"
    trained_teacher = torch.load(teacher, weights_only=True)["state_dict"]
    torch.testing.assert_close(model.teacher.head[-1].weight, trained_teacher["net.head.2.weight"])
    assert ("train/hint/features->stages.2" in cli.trainer.callback_metrics) == (mode == "hybrid")
    assert model.loss.alpha == (0.0 if mode == "ce" else 0.5)  # the shipped alpha


def test_validate_test_writes_the_report_and_predict_writes_every_prediction(workdir: Path, teacher: Path) -> None:
    data = SignalDataModule("rml2016.10a", str(workdir / "data"), per_key=PER_KEY)
    data.setup()
    test_rows = data.rows["test"]
    config = ["-c", str(CONFIGS / "clst.yaml"), *data_args(workdir), "--ckpt_path", str(teacher)]
    validated = lightning_main(["validate", *config])
    assert 0.0 <= float(validated.trainer.callback_metrics["val/acc"]) <= 1.0
    lightning_main(["test", *config, "--model.init_args.report_dir", "report"])
    summary = json.loads((workdir / "report" / "metrics.json").read_text())
    assert summary["examples"] == len(test_rows)
    assert summary["snrs_db"] == list(range(-20, 20, 2))
    assert summary["classes"][:3] == ["8PSK", "AM-DSB", "AM-SSB"]
    assert sum(map(sum, summary["confusion"])) == len(test_rows)
    assert {p.name for p in (workdir / "report").glob("*.png")} == {
        "accuracy_vs_snr.png",
        "confusion.png",
        "confusion_snr_ge_10db.png",
    }

    writer = workdir / "writer.yaml"
    writer.write_text(
        "trainer:\n  callbacks:\n    - class_path: rfml.trainers.PredictionWriter\n"
        "      init_args: {output: preds.npz}\n"
    )
    lightning_main(["predict", *config, "-c", str(writer)])
    preds = np.load(workdir / "preds.npz")
    assert len(preds["pred"]) == len(test_rows)
    np.testing.assert_array_equal(np.sort(preds["y"]), np.sort(data.data.y[test_rows].numpy()))
    np.testing.assert_allclose(preds["prob"].sum(1), 1.0, atol=1e-5)
    assert (preds["pred"] == preds["prob"].argmax(1)).all()


def test_print_config_shows_the_resolved_classes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        lightning_main(["fit", "-c", str(CONFIGS / "skd_kd_mobilenet.yaml"), "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "class_path: rfml.trainers.SKD" in printed
    assert "student: kd_mobilenet" in printed
    assert "class_path: rfml.data.SignalDataModule" in printed


def test_ddp_fit_on_two_cpu_processes_gives_a_checkpoint_that_test_loads(workdir: Path) -> None:
    root = workdir / "ddp"
    fit = [
        "fit",
        "-c",
        str(CONFIGS / "kd_cnn.yaml"),
        *data_args(workdir),
        *short_run(),
        "--trainer.strategy",
        "ddp",
        "--trainer.devices",
        "2",
        "--trainer.accelerator",
        "cpu",
        "--trainer.callbacks.init_args.dirpath",
        str(root),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "rfml.cli", *fit]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in done.stderr + done.stdout
    ckpt = root / "best.ckpt"
    assert ckpt.is_file()
    test = ["test", "-c", str(CONFIGS / "kd_cnn.yaml"), *data_args(workdir), "--ckpt_path", str(ckpt)]
    cli = lightning_main([*test, "--model.init_args.report_dir", "ddp_report"])
    weights = torch.load(ckpt, weights_only=True)["state_dict"]
    torch.testing.assert_close(cli.model.net.head[-1].weight, weights["net.head.1.weight"])
    assert json.loads((workdir / "ddp_report" / "metrics.json").read_text())["examples"] > 0


def test_export_writes_onnx_that_matches_the_checkpoint(workdir: Path, teacher: Path) -> None:
    import onnxruntime as ort

    out = workdir / "clst.onnx"
    assert main(["export", "--checkpoint", str(teacher), "--out", str(out), "--int8"]) == 0
    assert out.is_file() and out.with_suffix(".int8.onnx").is_file()
    net = create("clst", 11, 128)
    net.load_state_dict({k[4:]: v for k, v in torch.load(teacher, weights_only=True)["state_dict"].items()})
    x = torch.randn(5, 2, 128)
    with torch.no_grad():
        expected = net.eval()(x).numpy()
    (got,) = ort.InferenceSession(str(out)).run(None, {"x": x.numpy()})
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_export_names_the_field_a_foreign_checkpoint_lacks(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = workdir / "bare.pt"
    torch.save(create("kd_cnn", 11).state_dict(), path)
    assert main(["export", "--checkpoint", str(path), "--out", str(workdir / "x.onnx")]) == 2
    assert "bare.pt: field 'hyper_parameters' must name 'model'" in capsys.readouterr().err
    assert not (workdir / "x.onnx").exists()


def test_profile_reports_each_model_with_its_size(workdir: Path) -> None:
    out = workdir / "prof"
    args = ["profile", "--model", "kd_cnn,kd_mobilenet", "--backends", "onnxruntime", "--repeats", "3"]
    assert main([*args, "--rounds", "1", "--out", str(out)]) == 0
    report = json.loads((out / "latency.json").read_text())
    assert report["models"]["kd_cnn"]["params"] == param_count("kd_cnn", 11)
    assert report["models"]["kd_mobilenet"]["params"] == param_count("kd_mobilenet", 11)
    assert {m["model"] for m in report["measurements"]} == {"kd_cnn", "kd_mobilenet"}


def test_unknown_command_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train"]) == 2
    assert "invalid choice: 'train'" in capsys.readouterr().err
