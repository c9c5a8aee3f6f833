"""The AMR benchmark's run queue: SKD runs wait for the teacher run, and are skipped if it left no checkpoint."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import amr_accuracy


def specs(tmp_path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    first, second = amr_accuracy.plan(["recipe"], seeds=1, clst_seeds=1)
    for spec in first + second:
        name = amr_accuracy.run_id(spec["model"], spec["training"], spec["recipe"], spec["seed"])
        spec["run_dir"] = str(tmp_path / "runs" / name)
    return first, second


class FakeLauncher:
    """Records when each run starts and ends; the teacher run writes its checkpoint unless told to fail."""

    def __init__(self, teacher: Path, teacher_ok: bool = True, teacher_seconds: float = 0.2) -> None:
        self.teacher, self.teacher_ok, self.teacher_seconds = teacher, teacher_ok, teacher_seconds
        self.events: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, spec: dict[str, Any]) -> tuple[str, int, float]:
        name = Path(spec["run_dir"]).name
        with self.lock:
            self.events.append(("start", name))
        if name == amr_accuracy.TEACHER_RUN:
            time.sleep(self.teacher_seconds)
            if self.teacher_ok:
                self.teacher.parent.mkdir(parents=True, exist_ok=True)
                self.teacher.write_bytes(b"weights")
        with self.lock:
            self.events.append(("end", name))
        return name, 0 if name != amr_accuracy.TEACHER_RUN or self.teacher_ok else 1, 0.0


def test_plan_puts_the_teacher_first_and_logit_before_hybrid() -> None:
    first, second = amr_accuracy.plan(["recipe"], seeds=2, clst_seeds=2)
    assert amr_accuracy.run_id(**first[0]) == amr_accuracy.TEACHER_RUN
    assert [s["training"] for s in second] == ["logit"] * 4 + ["hybrid"] * 4
    assert len(first) == 2 + len(amr_accuracy.BASELINES) + 2 * len(amr_accuracy.STUDENTS)
    both, _ = amr_accuracy.plan(["protocol", "recipe"], seeds=2, clst_seeds=2)
    assert amr_accuracy.run_id(**both[0]) == amr_accuracy.TEACHER_RUN
    assert [r["recipe"] for r in both[1 : 1 + len(amr_accuracy.ALL_MODELS)]] == ["protocol"] * len(
        amr_accuracy.ALL_MODELS
    )
    assert len(both) == len(first) + len(amr_accuracy.ALL_MODELS)


def test_skd_runs_start_only_after_the_teacher_ends(tmp_path: Path) -> None:
    first, second = specs(tmp_path)
    teacher = tmp_path / "runs" / amr_accuracy.TEACHER_RUN / "best.ckpt"
    # One teacher-free run besides the teacher: the second slot reaches the SKD runs while the teacher trains.
    launcher = FakeLauncher(teacher)
    failed = amr_accuracy.run_queue(first[:2], second, teacher, parallel=2, launcher=launcher)
    assert failed == []
    order = [name for what, name in launcher.events]
    teacher_end = launcher.events.index(("end", amr_accuracy.TEACHER_RUN))
    skd = {amr_accuracy.run_id(**{k: s[k] for k in ("model", "training", "recipe", "seed")}) for s in second}
    assert skd and all(launcher.events.index(("start", name)) > teacher_end for name in skd)
    assert set(order) == {Path(s["run_dir"]).name for s in first[:2] + second}


def test_skd_runs_are_skipped_when_the_teacher_leaves_no_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = specs(tmp_path)
    teacher = tmp_path / "runs" / amr_accuracy.TEACHER_RUN / "best.ckpt"
    launcher = FakeLauncher(teacher, teacher_ok=False, teacher_seconds=0.0)
    failed = amr_accuracy.run_queue(first[:1], second, teacher, parallel=2, launcher=launcher)
    names = [Path(s["run_dir"]).name for s in second]
    assert sorted(failed) == sorted([amr_accuracy.TEACHER_RUN, *names])
    assert [name for what, name in launcher.events if what == "start"] == [amr_accuracy.TEACHER_RUN]
    assert "skipped, the teacher clst-ce-recipe-s0 left no" in capsys.readouterr().out


def test_an_earlier_teacher_lets_skd_runs_start_at_once(tmp_path: Path) -> None:
    _, second = specs(tmp_path)
    teacher = tmp_path / "runs" / amr_accuracy.TEACHER_RUN / "best.ckpt"
    teacher.parent.mkdir(parents=True)
    teacher.write_bytes(b"weights")
    launcher = FakeLauncher(teacher)
    assert amr_accuracy.run_queue([], second, teacher, parallel=2, launcher=launcher) == []
    assert len([e for e in launcher.events if e[0] == "start"]) == len(second)


def test_cost_projects_every_run_from_the_step_times(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``cost`` multiplies the measured step times by the plan's steps: with 1 s a training step and 0.5 s an
    evaluation batch, a run at 4 per key (880 frames: 528 train, 176 val, 176 test; batch 256: 3 steps and 1
    batch each) over 2 epochs costs 2·(3·1 + 1·0.5) + 0.5 = 7.5 s, and SKD steps are timed as SKD."""
    kinds = []

    def fake(model: str, training: str, batch_size: int, threads: int, steps: int) -> dict[str, float]:
        kinds.append((model, training))
        return {"train": 1.0, "eval": 0.5}

    monkeypatch.setattr(amr_accuracy, "step_seconds", fake)
    out = tmp_path / "cost.json"
    argv = ["cost", "--per-key", "4", "--max-epochs", "2", "--recipes", "recipe", "--seeds", "1"]
    assert amr_accuracy.main([*argv, "--clst-seeds", "1", "--parallel", "2", "--cost-out", str(out)]) == 0
    result = json.loads(out.read_text())
    runs = 1 + len(amr_accuracy.BASELINES) + 3 * len(amr_accuracy.STUDENTS)
    assert result["runs"] == runs and len(result["run_seconds"]) == runs
    assert set(result["run_seconds"].values()) == {7.5}
    assert result["process_hours"] == pytest.approx(runs * 7.5 / 3600)
    assert result["wall_hours_at_least"] == pytest.approx(runs * 7.5 / 2 / 3600)
    assert ("kd_cnn", "skd") in kinds and ("clst", "skd") not in kinds and len(kinds) == len(set(kinds))


def test_restore_writes_only_the_missing_runs_and_train_then_skips_them(tmp_path: Path) -> None:
    """A compact record (the `<stem>.json` shape) restores into run folders: existing results are kept, the
    restored ones name their source, a bad record names the file and the run, and `launch` skips restored runs."""
    record = tmp_path / "amr_recipe.json"
    runs = [
        {"model": m, "training": "ce", "recipe": "recipe", "seed": 0, "accuracy": a, "epochs": 12}
        | {"accuracy_snr_ge_10db": 0.8, "accuracy_snr_le_m10db": 0.2}
        for m, a in (("resnet", 0.49), ("cldnn", 0.54))
    ]
    record.write_text(json.dumps({"per_key": 250, "runs": runs}))
    work = tmp_path / "work"
    kept = work / "runs" / "cldnn-ce-recipe-s0" / "result.json"
    kept.parent.mkdir(parents=True)
    kept.write_text(json.dumps({"accuracy": 0.6}))
    assert amr_accuracy.main(["restore", "--work", str(work), "--restore-from", str(record)]) == 0
    restored = json.loads((work / "runs" / "resnet-ce-recipe-s0" / "result.json").read_text())
    assert restored["accuracy"] == 0.49 and restored["per_key"] == 250
    assert restored["restored_from"] == str(record)
    assert json.loads(kept.read_text()) == {"accuracy": 0.6}
    spec = {"run_dir": str(work / "runs" / "resnet-ce-recipe-s0")}
    assert amr_accuracy.launch(spec) == ("resnet-ce-recipe-s0", 0, 0.0)

    del runs[0]["epochs"]
    record.write_text(json.dumps({"per_key": 250, "runs": runs}))
    with pytest.raises(SystemExit, match=r"amr_recipe.json: runs\[0\] lacks \['epochs'\]"):
        amr_accuracy.main(["restore", "--work", str(tmp_path / "other"), "--restore-from", str(record)])
    record.write_text("[]")
    with pytest.raises(SystemExit, match="expected a JSON object with 'per_key' and 'runs'"):
        amr_accuracy.main(["restore", "--work", str(tmp_path / "other"), "--restore-from", str(record)])
