"""Quiet, shareable output: files follow the umask, Lightning's advert and known notices are silenced, and
`slm fit` on a search's chosen.yaml gets finite trainer defaults with a metrics.csv under runs/."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ondevice.io import umask_mode
from ondevice.quiet import NOTICES
from slm.train import TRAINER_DEFAULTS, lightning_main, resolve_arch

BIN = Path(__file__).resolve().parents[1] / ".venv" / "bin"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_follow_the_umask(tmp_path: Path, umask: int) -> None:
    script = f"""
import os, torch
os.umask({umask})
from rfml.data import write_dataset
from ondevice.bundle import write_bundle
from ondevice.export import export_onnx
from slm.graphs import build_graphs
from slm.arch import ArchConfig
write_dataset("rml2016.10a", "data", per_key=1, seed=0, progress=False)
model = torch.nn.Linear(4, 3)
export_onnx(model, (torch.zeros(1, 4),), "onnx/m.onnx")
write_bundle({{"m": (model, torch.zeros(1, 4))}}, "bundle")
build_graphs(ArchConfig.from_name("tiny"), "slm_out")
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    file_mode, dir_mode = (0o644, 0o755) if umask == 0o022 else (0o600, 0o700)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    folders = [p for p in tmp_path.rglob("*") if p.is_dir()]
    assert any(p.suffix == ".pkl" for p in files) and (tmp_path / "onnx" / "m.onnx").is_file()
    assert list((tmp_path / "slm_out").glob("*.onnx")) and (tmp_path / "bundle").is_dir()
    assert {str(p.relative_to(tmp_path)): mode(p) for p in files} == {
        str(p.relative_to(tmp_path)): file_mode for p in files
    }
    assert {str(p.relative_to(tmp_path)): mode(p) for p in folders} == {
        str(p.relative_to(tmp_path)): dir_mode for p in folders
    }


def test_umask_mode_is_what_open_and_mkdir_give(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    assert umask_mode() == mode(tmp_path / "f") and umask_mode(directory=True) == mode(tmp_path / "d")


def _silenced(text: str) -> list[str]:
    import re

    return [p for p in NOTICES if re.search(p, text)] + [w for w in ("💡", "litmodels", "litlogger") if w in text]


def test_rfml_fit_prints_no_advert_and_no_silenced_notice(tmp_path: Path) -> None:
    from rfml.data import write_dataset

    write_dataset("rml2016.10a", tmp_path / "data", per_key=5, seed=0, progress=False)
    args = ["fit", "-c", "kd_cnn", "--data.init_args.data_dir", "data", "--data.init_args.per_key", "5"]
    args += ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]
    done = subprocess.run([BIN / "rfml", *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _silenced(done.stdout + done.stderr) == []
    assert "Warning" not in done.stderr and "warn" not in done.stderr.lower()
    assert (tmp_path / "runs" / "kd_cnn" / "checkpoints" / "best.ckpt").is_file()


def test_snr_study_inline_prints_only_its_bars_and_the_report_path(tmp_path: Path) -> None:
    from _study_tasks import toy_config, write_toy_rml

    data = write_toy_rml(str(tmp_path / "toy.pkl"))
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(toy_config(data, targets=[10])))
    args = ["snr-study", "single", "-c", "study.yaml", "--out", "out", "--workers", "0"]
    done = subprocess.run([BIN / "rfml", *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    text = done.stdout + done.stderr
    assert done.stdout.split() == ["out/report.md"]
    bars = [line for line in done.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert bars and all("run/s]" in line for line in bars), bars
    assert _silenced(text) == [] and "available" not in text


def test_slm_fit_on_a_chosen_yaml_stops_at_the_default_steps_and_writes_metrics(tmp_path: Path) -> None:
    arch = {k: v for k, v in resolve_arch("tiny").to_dict().items() if k != "name"}
    chosen = {
        "model": {"class_path": "slm.train.LanguageModel", "init_args": {"arch": arch}},
        "data": {"class_path": "slm.data.TextDataModule", "init_args": {"vocab_size": arch["vocab_size"]}},
    }
    (tmp_path / "chosen.yaml").write_text(yaml.safe_dump(chosen, sort_keys=False))
    os.chdir(tmp_path)
    parsed = lightning_main(["fit", "-c", "chosen.yaml"], run=False)
    assert parsed.trainer.max_steps == TRAINER_DEFAULTS["trainer.max_steps"] == 300
    assert Path(parsed.trainer.logger.save_dir) == Path("runs/slm")
    steps = "10"  # one log_every_n_steps; the default's 300 steps, shortened for the test's speed only (asserted above)
    small = ["--data.init_args.max_files", "20", "--data.init_args.block_size", "32", "--trainer.max_steps", steps]
    small += ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    done = subprocess.run(
        [BIN / "slm", "fit", "-c", "chosen.yaml", *small], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert f"max_steps={steps}` reached" in done.stdout + done.stderr
    metrics = list((tmp_path / "runs" / "slm").rglob("metrics.csv"))
    assert len(metrics) == 1 and not (tmp_path / "lightning_logs").exists()
    assert list(metrics[0].parent.glob("checkpoints/*.ckpt"))
    assert _silenced(done.stdout + done.stderr) == []
    # the run's checkpoints stay: a fit pointed at their folder is refused, naming the flag that allows it
    folder = str(metrics[0].parent / "checkpoints")
    again = subprocess.run(
        [BIN / "slm", "fit", "-c", "chosen.yaml", *small, "--checkpoint.dirpath", folder],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 2 and "--overwrite_checkpoints true" in again.stderr, again.stderr
