"""`rfml predict` writes predictions.npz where it says, and a second `rfml fit` does not silently replace best.ckpt."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_cli import short_run

from rfml.data import write_dataset
from rfml.data.synthetic import PRESETS

RFML = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "rfml")
PER_KEY = 5
SHORT = ["--data.init_args.per_key", str(PER_KEY), *short_run(), "--trainer.enable_model_summary", "false"]


def rfml(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([RFML, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where `rfml fit -c kd_cnn` ran once on a tiny synthetic RadioML 2016.10a file."""
    work = tmp_path_factory.mktemp("predict")
    write_dataset("rml2016.10a", work / "data", per_key=PER_KEY, seed=0, progress=False)
    done = rfml("fit", "-c", "kd_cnn", "--data.init_args.data_dir", "data", *SHORT, cwd=work)
    assert done.returncode == 0, done.stderr
    assert (work / "runs" / "kd_cnn" / "checkpoints" / "best.ckpt").is_file()
    return work


def test_predict_writes_class_names_and_logits_at_the_printed_path(fitted: Path) -> None:
    ckpt = "runs/kd_cnn/checkpoints/best.ckpt"
    done = rfml("predict", "-c", "kd_cnn", "--data.init_args.data_dir", "data", *SHORT, "--ckpt_path", ckpt, cwd=fitted)
    assert done.returncode == 0, done.stderr
    printed = re.search(r"predictions: (\S+) \((\d+) examples, (\d+) classes\)", done.stdout + done.stderr)
    assert printed is not None, done.stdout + done.stderr
    path = fitted / printed.group(1)
    assert path == fitted / "runs" / "kd_cnn" / "predictions.npz"
    with np.load(path) as npz:
        classes = list(PRESETS["rml2016.10a"].classes)
        assert list(npz["class_names"]) == classes
        n = int(printed.group(2))
        assert npz["logits"].shape == (n, len(classes)) == npz["prob"].shape
        assert np.array_equal(npz["pred"], npz["logits"].argmax(1))
        assert np.allclose(npz["prob"], np.exp(npz["logits"]) / np.exp(npz["logits"]).sum(1, keepdims=True), atol=1e-5)
        assert list(npz["pred_class"]) == [classes[i] for i in npz["pred"]]
        assert npz["y"].shape == npz["snr"].shape == (n,)
        assert set(npz["snr"].tolist()) <= set(PRESETS["rml2016.10a"].snrs)
    assert not list(path.parent.glob("*.partial*"))


def test_a_second_fit_refuses_to_overwrite_best_ckpt_until_told(fitted: Path) -> None:
    best = fitted / "runs" / "kd_cnn" / "checkpoints" / "best.ckpt"
    before = best.read_bytes()
    again = rfml("fit", "-c", "kd_cnn", "--data.init_args.data_dir", "data", *SHORT, cwd=fitted)
    assert again.returncode == 2
    assert "best.ckpt already exist(s)" in again.stderr and "--overwrite_checkpoints true" in again.stderr
    assert best.read_bytes() == before
    forced = rfml(
        "fit",
        "-c",
        "kd_cnn",
        "--data.init_args.data_dir",
        "data",
        *SHORT,
        "--overwrite_checkpoints",
        "true",
        cwd=fitted,
    )
    assert forced.returncode == 0, forced.stderr
    assert best.is_file()


def test_fit_help_lists_the_modules_and_the_registered_networks(tmp_path: Path) -> None:
    from rfml.models import available

    done = rfml("fit", "--help", cwd=tmp_path)
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "rfml.trainers.Classifier" in text and "rfml.trainers.SKD" in text
    assert all(name in text for name in available())
