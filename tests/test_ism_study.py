"""`rfml ism-study` and its EpochTimer: timing bookkeeping, per-technology accuracy, the report, resume, end to end."""

from __future__ import annotations

import json
import math
import os
from importlib import resources
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from rfml.cli import main
from rfml.data.ism import CLASSES_ISM
from rfml.studies.ism import runs as ism_runs
from rfml.studies.ism.config import ISMStudyConfig, base_config_path, fingerprint, load_base_config, parse_setting
from rfml.studies.ism.plan import RunSpec, plan_runs, run_yaml, split_counts
from rfml.studies.ism.report import PAPER_PCA, write_ism_report
from rfml.studies.ism.runs import technology_accuracy
from rfml.studies.ism.study import load_ism_results, run_study
from rfml.studies.results import StudyConfigError
from rfml.trainers.callbacks import EpochTimer

ROOT = Path(__file__).resolve().parents[1]
TRAIN_STEP = 1.0  # clock seconds each training batch takes
VAL_STEP = 100.0  # clock seconds each validation batch takes: must never show in the training seconds
TRAIN_BATCHES = 3
VAL_BATCHES = 2
EPOCH = TRAIN_BATCHES * TRAIN_STEP


class Clock:
    """A counter in place of EpochTimer's wall clock, advanced by the scripted steps: exact, on any machine."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    counter = Clock()
    monkeypatch.setattr(EpochTimer, "clock", staticmethod(counter))
    return counter


class Scripted(pl.LightningModule):
    """Training and validation steps of known duration on ``clock``; the validation loss of epoch e is ``losses[e]``."""

    def __init__(self, losses: list[float], clock: Clock) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)
        self.losses = losses
        self.clock = clock

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.clock.now += TRAIN_STEP
        x, y = batch
        return F.cross_entropy(self.layer(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.clock.now += VAL_STEP
        loss = self.losses[self.current_epoch] if not self.trainer.sanity_checking else 99.0
        self.log("val/loss", loss, batch_size=len(batch[0]))
        self.log("val/acc", 1.0 / (1 + self.current_epoch), batch_size=len(batch[0]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loaders() -> tuple[DataLoader, DataLoader]:
    gen = torch.Generator().manual_seed(0)
    train = TensorDataset(torch.randn(4 * TRAIN_BATCHES, 4, generator=gen), torch.randint(0, 2, (4 * TRAIN_BATCHES,)))
    val = TensorDataset(torch.randn(4 * VAL_BATCHES, 4, generator=gen), torch.randint(0, 2, (4 * VAL_BATCHES,)))
    return DataLoader(train, batch_size=4), DataLoader(val, batch_size=4)


def trainer(tmp_path: Path, max_epochs: int, callbacks: list[Any]) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=pl.loggers.CSVLogger(tmp_path),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )


def test_epoch_timer_counts_training_only_and_finds_the_best_epoch(tmp_path: Path, clock: Clock) -> None:
    losses = [3.0, 1.0, 2.0, 2.5, 0.1]  # best at epoch 2; patience 1 stops after epoch 3
    timer = EpochTimer()
    fit = trainer(tmp_path, 10, [timer, EarlyStopping("val/loss", patience=1)])
    train, val = loaders()
    fit.fit(Scripted(losses, clock), train, val)

    assert timer.epochs == 3 == len(timer.epoch_seconds) == fit.current_epoch
    assert timer.val_loss == [3.0, 1.0, 2.0]  # the sanity check (99.0) is not an epoch
    assert timer.val_acc == pytest.approx([1.0, 1 / 2, 1 / 3])
    # Every training batch is in, no validation batch (100 clock seconds each, the sanity check's included).
    assert timer.epoch_seconds == [EPOCH] * 3
    assert clock.now == 3 * EPOCH + (3 + 1) * VAL_BATCHES * VAL_STEP
    assert timer.best_epoch == 2
    assert timer.seconds_to_best == 2 * EPOCH
    assert timer.total_seconds == 3 * EPOCH
    assert timer.median_epoch_seconds == EPOCH
    assert timer.best_val_acc == pytest.approx(1 / 2)
    assert fit.callback_metrics["time/train_epoch_s"].item() == EPOCH
    logged = (Path(fit.logger.log_dir) / "metrics.csv").read_text().splitlines()
    column = logged[0].split(",").index("time/train_epoch_s")
    values = [float(row.split(",")[column]) for row in logged[1:] if row.split(",")[column]]
    assert values == [EPOCH] * 3


@pytest.mark.parametrize("on_train_epoch_end", [True, False], ids=["saved-on-epoch-end", "saved-on-validation-end"])
def test_epoch_timer_continues_its_lists_after_a_checkpoint_resume(
    tmp_path: Path, clock: Clock, on_train_epoch_end: bool
) -> None:
    losses = [3.0, 2.0, 0.5, 1.0]
    train, val = loaders()
    first = EpochTimer()
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", save_last=True, monitor="val/loss", save_on_train_epoch_end=on_train_epoch_end
    )
    trainer(tmp_path, 2, [first, checkpoint]).fit(Scripted(losses, clock), train, val)
    assert first.epoch_seconds == [EPOCH, EPOCH]
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["callbacks"]
    state = next(v for k, v in saved.items() if k.startswith("EpochTimer"))
    # Written on validation end, the checkpoint is inside epoch 2: its seconds so far travel separately.
    in_progress = [state["epoch_in_progress_seconds"]] if "epoch_in_progress_seconds" in state else []
    assert bool(in_progress) != on_train_epoch_end
    assert state["epoch_seconds"] + in_progress == [EPOCH, EPOCH]
    assert state["val_loss"] == [3.0, 2.0]

    resumed = EpochTimer()
    fit = trainer(tmp_path, 4, [resumed, ModelCheckpoint(dirpath=tmp_path / "ckpt2", monitor="val/loss")])
    fit.fit(Scripted(losses, clock), train, val, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert resumed.epochs == 4
    assert resumed.epoch_seconds == [EPOCH] * 4  # the carried seconds of epoch 2, and no batch counted twice
    assert resumed.val_loss == [3.0, 2.0, 0.5, 1.0]
    assert resumed.best_epoch == 3
    assert resumed.seconds_to_best == 3 * EPOCH

    restored = EpochTimer()
    restored.load_state_dict(resumed.state_dict())
    assert restored.summary() == resumed.summary()


def test_technology_accuracy_from_a_known_confusion_matrix() -> None:
    classes = ["BT-2422", "BT-2423", "WiFi-2427", "WiFi-2432", "Zigbee-2430"]
    confusion = [
        [8, 2, 0, 0, 0],  # BT: 8 + 5 right of 10 + 10
        [5, 5, 0, 0, 0],
        [0, 0, 3, 7, 0],  # WiFi: 3 + 6 right of 10 + 10 (a WiFi channel taken for another is wrong)
        [0, 0, 4, 6, 0],
        [1, 0, 0, 0, 9],  # Zigbee: 9 of 10
    ]
    assert technology_accuracy(confusion, classes) == pytest.approx({"BT": 13 / 20, "WiFi": 9 / 20, "Zigbee": 0.9})
    only_bt = technology_accuracy([[1, 1], [0, 2]], ["BT-2429", "BT-2430"])
    assert only_bt == {"BT": 0.75, "WiFi": None, "Zigbee": None}
    with pytest.raises(ValueError, match="3 class names for a 2-row"):
        technology_accuracy([[1, 0], [0, 1]], classes[:3])


def test_plan_expands_sample_and_gives_headline_rows_their_seeds() -> None:
    config = ISMStudyConfig(out="x", data="d", seeds=3, sweep_seeds=1, methods=["pca", "uniform"], rates=[2, 16])
    keys = [spec.key for spec in plan_runs(config)]
    assert keys == [
        "full/s0", "full/s1", "full/s2", "band4/s0", "band4/s1", "band4/s2", "band2/s0",
        "sample/pca/2/s0", "sample/pca/16/s0", "sample/uniform/2/s0", "sample/uniform/16/s0",
    ]  # fmt: skip
    assert len(plan_runs(ISMStudyConfig(out="x", data="d"))) == 23  # 3 + 3 + 1 + 4 methods × 4 rates
    with pytest.raises(ValueError, match="unknown setting 'band3'"):
        ISMStudyConfig(out="x", data="d", settings=["band3"])
    with pytest.raises(ValueError, match="exactly one of data"):
        ISMStudyConfig(out="x")


def test_the_base_config_is_the_packaged_one() -> None:
    shipped = resources.files("rfml") / "configs"
    assert base_config_path(ISMStudyConfig(out="x", data="d")) == shipped / "ism_cnn.yaml"
    assert base_config_path(ISMStudyConfig(out="x", data="d", model="ism_resnet")) == shipped / "ism_resnet.yaml"
    assert base_config_path(ISMStudyConfig(out="x", data="d", model="ism_new")) == shipped / "ism_cnn.yaml"
    with pytest.raises(FileNotFoundError, match=r"nothing\.yaml: no such config"):
        base_config_path(ISMStudyConfig(out="x", data="d", config="nothing.yaml"))


def test_split_counts_follow_the_stratified_split() -> None:
    assert split_counts(715, "384:96:235") == [384, 96, 235]  # the paper's 480 / 235, 96 for validation
    assert split_counts(6, "384:96:235") == [3, 1, 2]
    assert split_counts(5, "384:96:235") == [3, 0, 2]


def test_too_few_generated_examples_for_a_validation_part_are_refused(tmp_path: Path, fake: Any) -> None:
    with pytest.raises(ValueError, match=r"gives \[3, 0, 2\] examples.*try 6 or more"):
        run_study(ISMStudyConfig(out=str(tmp_path), generate_per_key=5, settings=["full"]), progress=False)
    assert fake.calls == []


# -- fake runs: the report and resume logic without training ------------------------------------------------

SNRS = list(range(-20, 21, 2))
BAND_CLASSES = {
    "full": list(CLASSES_ISM),
    "band4": [*CLASSES_ISM[:3], *CLASSES_ISM[7:10], "WiFi-2422", "WiFi-2432", "Zigbee-2425", "Zigbee-2430"],
    "band2": [*CLASSES_ISM[7:10], "WiFi-2422", "WiFi-2427", "WiFi-2432", "Zigbee-2430"],
}
LENGTHS = {"full": 128, "band4": 52, "band2": 26}


def fake_record(spec: RunSpec, accuracy: float, seconds_per_epoch: float, best: int = 3) -> dict[str, Any]:
    setting = parse_setting(spec.setting)
    classes = BAND_CLASSES.get(spec.setting, list(CLASSES_ISM))
    n = len(classes)
    per_class = 100
    right = round(accuracy * per_class)
    confusion = [
        [right if i == j else (per_class - right if j == (i + 1) % n else 0) for j in range(n)] for i in range(n)
    ]
    low = max(0.0, accuracy - 0.2)
    high = min(1.0, accuracy + 0.1)
    by_snr = [low if s <= -10 else high if s >= 0 else accuracy for s in SNRS]
    epochs = best + 2
    length = LENGTHS.get(spec.setting, 128 // max(1, setting["selection_rate"]))
    return {
        "key": spec.key,
        "setting": spec.setting,
        "seed": spec.seed,
        **setting,
        "classes": classes,
        "num_classes": n,
        "length": length,
        "parameters": 1000 * length,
        "split_sizes": {"train": 384 * n * 21, "val": 96 * n * 21, "test": 235 * n * 21},
        "accuracy": accuracy,
        "snrs_db": SNRS,
        "accuracy_by_snr": by_snr,
        "accuracy_by_class": [right / per_class] * n,
        "confusion": confusion,
        "technology_accuracy": technology_accuracy(confusion, classes),
        "seconds_per_epoch": seconds_per_epoch,
        "epoch_seconds": [seconds_per_epoch] * epochs,
        "val_loss": [1.0 / (i + 1) if i < best else 1.0 for i in range(epochs)],
        "epochs": epochs,
        "best_epoch": best,
        "seconds_to_best": seconds_per_epoch * best,
        "total_seconds": seconds_per_epoch * epochs,
        "device": "cpu",
        "gpu": None,
    }


ACCURACY = {"full": [0.9, 0.8, 0.85], "band4": [0.86, 0.86, 0.86], "band2": [0.7]}
SECONDS = {"full": 4.0, "band4": 2.0, "band2": 1.0}


class FakeTraining:
    """Stands in for ``train_run``; counts the runs it was asked for and can fail at a chosen call."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls: list[str] = []
        self.fail_at = fail_at

    def __call__(self, config: ISMStudyConfig, spec: RunSpec, config_path: Path, run_dir: Path) -> dict[str, Any]:
        assert config_path.is_file() and config_path.parent == run_dir
        if self.fail_at is not None and len(self.calls) + 1 == self.fail_at:
            raise KeyboardInterrupt
        self.calls.append(spec.key)
        if spec.setting in ACCURACY:
            return fake_record(spec, ACCURACY[spec.setting][spec.seed], SECONDS[spec.setting])
        rate = int(spec.setting.rsplit("/", 1)[1])
        return fake_record(spec, 0.9 - 0.01 * rate, 1.5)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeTraining:
    training = FakeTraining()
    monkeypatch.setattr(ism_runs, "train_run", training)
    return training


def study(tmp_path: Path, **kwargs: Any) -> ISMStudyConfig:
    (tmp_path / "data").mkdir(exist_ok=True)
    options: dict[str, Any] = {
        "out": str(tmp_path / "out"),
        "data": str(tmp_path / "data"),
        "methods": ["pca", "random"],
        "rates": [2, 16],
    }
    return ISMStudyConfig(**{**options, **kwargs})


def test_report_holds_every_setting_and_the_papers_numbers(tmp_path: Path, fake: FakeTraining) -> None:
    results = run_study(study(tmp_path), progress=False)
    assert len(fake.calls) == 11
    out = tmp_path / "out"
    report = (out / "report.md").read_text()
    for number in ("0.896", "0.861", "| 108 |", "| 65 |", "| 41 |", "1.66", "0.940", "0.747", "0.892", "0.530"):
        assert number in report, number
    for rate in (2, 16):
        assert f"{PAPER_PCA[rate]:.3f}" in report
    assert "| PCA (paper) | 0.873 | 0.841 |" in report
    # Band table: mean ± std over seeds, classes, bins, seconds; ratio full / 4 MHz = 4 s / 2 s per epoch.
    assert "| full | 10 MHz (whole window) | 15 | 128 | 0.850 ± 0.050 (3 seeds) | 0.896 | 4.00 | 3.0 | 12.0 |" in report
    assert "| band4 | 4 MHz (2422–2424 + 2429–2431) | 10 | 52 | 0.860 ± 0.000 (3 seeds) |" in report
    assert "| band2 | 2 MHz (2429–2431) | 7 | 26 | 0.700 (1 seed) |" in report
    assert "full / 4 MHz: **2.00** (seconds to best epoch), **2.00** (seconds per epoch)" in report
    # Sample table: one row per method, a column per rate, and low/high SNR accuracy.
    assert "| pca | 0.880 | 0.740 |" in report and "| random | 0.880 | 0.740 |" in report
    assert "| pca | 0.680 / 0.980 | 0.540 / 0.840 |" in report
    # Technology table: the fake confusion gets each class right at the run's accuracy.
    assert "| Bluetooth | 0.850 | 0.860 | 0.700 | 0.940 | — |" in report
    assert "| WiFi | 0.850 | 0.860 | 0.700 | 0.747 | 0.530 |" in report
    assert "validation split" in report and "test split" in report
    assert f"the user's ISM data at `{tmp_path / 'data'}` (715 vectors per (class, SNR))" in report
    assert "| full/s1 | 15 | 128 | 0.800 | 5 | 3 | 4.00 | 12.0 | 20.0 | 128,000 |" in report
    assert f"{os.cpu_count()}-core" in report and f"torch {torch.__version__}" in report
    for key in results["runs"]:
        assert f"| {key} |" in report
    assert (out / "accuracy_vs_snr.png").stat().st_size > 1000
    assert (out / "accuracy_vs_snr_rate16.png").stat().st_size > 1000
    # The report is a function of the stored results alone (study.json and results.jsonl).
    assert len((out / "results.jsonl").read_text().splitlines()) == 11
    rewritten = write_ism_report(load_ism_results(out), tmp_path / "again")
    assert rewritten["report"].read_text() == report


def test_a_second_call_trains_nothing_and_a_changed_config_is_refused(tmp_path: Path, fake: FakeTraining) -> None:
    config = study(tmp_path, settings=["full", "band2"], seeds=2)
    first = run_study(config, progress=False)
    assert fake.calls == ["full/s0", "full/s1", "band2/s0"]
    again = run_study(config, progress=False)
    assert fake.calls == ["full/s0", "full/s1", "band2/s0"]  # nothing new
    assert again["runs"] == first["runs"]

    more = study(tmp_path, settings=["full", "band2"], seeds=3)  # more seeds: only the new run trains
    run_study(more, progress=False)
    assert fake.calls[3:] == ["full/s2"]

    changed = study(tmp_path, settings=["full", "band2"], seeds=3, max_epochs=5)
    with pytest.raises(StudyConfigError, match=r"max_epochs: 100 -> 5.*--restart"):
        run_study(changed, progress=False)
    with pytest.raises(StudyConfigError, match="model_kwargs"):
        run_study(study(tmp_path, model_kwargs={"hidden": 8}), progress=False)
    assert len(fake.calls) == 4

    restarted = study(tmp_path, settings=["full", "band2"], seeds=3, max_epochs=5, restart=True)
    results = run_study(restarted, progress=False)
    assert fake.calls[4:] == ["full/s0", "full/s1", "full/s2", "band2/s0"]
    assert results["study"]["max_epochs"] == 5


def test_an_interrupted_study_resumes_after_the_last_finished_run(tmp_path: Path, monkeypatch: Any) -> None:
    failing = FakeTraining(fail_at=3)
    monkeypatch.setattr(ism_runs, "train_run", failing)
    config = study(tmp_path, settings=["full", "band2"], seeds=2)
    with pytest.raises(KeyboardInterrupt):
        run_study(config, progress=False)
    lines = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["full/s0", "full/s1"]
    assert sorted(load_ism_results(tmp_path / "out")["runs"]) == ["full/s0", "full/s1"]
    resumed = FakeTraining()
    monkeypatch.setattr(ism_runs, "train_run", resumed)
    run_study(config, progress=False)
    assert resumed.calls == ["band2/s0"]
    assert (tmp_path / "out" / "results.jsonl").read_text().splitlines()[:2] == lines  # kept as they were


def test_a_folder_of_another_study_is_refused(tmp_path: Path, fake: FakeTraining) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "study.json").write_text('{"format": "rfml-snr-study", "fingerprint": "abc"}')
    with pytest.raises(StudyConfigError, match=r"study\.json: field 'format' is 'rfml-snr-study', expected 'rfml-ism"):
        run_study(study(tmp_path), progress=False)
    with pytest.raises(StudyConfigError, match="field 'format'"):
        load_ism_results(tmp_path / "out")
    with pytest.raises(FileNotFoundError, match=r"study\.json: no such file"):
        load_ism_results(tmp_path)
    assert fake.calls == []


def test_the_stored_benchmark_study_loads_and_reproduces_its_report(tmp_path: Path) -> None:
    stored = ROOT / "benchmarks" / "results" / "ism_study"
    results = load_ism_results(stored)
    assert results["format"] == "rfml-ism-study" and len(results["runs"]) == len(results["meta"]["plan"]) == 23
    report = write_ism_report(results, tmp_path)["report"].read_text()
    assert report == (stored / "report.md").read_text()


def test_cli_refuses_a_changed_study_with_a_clear_message(
    tmp_path: Path, fake: FakeTraining, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data").mkdir()
    args = ["ism-study", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--settings", "band2"]
    assert main([*args, "--quiet"]) == 0
    assert main([*args, "--quiet", "--patience", "3"]) == 2
    err = capsys.readouterr().err
    assert "rfml ism-study: error:" in err and "patience: 10 -> 3" in err and "--restart" in err
    assert main([*args, "--quiet", "--model-kwargs", "[1]"]) == 2
    assert "--model-kwargs: expected a JSON object" in capsys.readouterr().err
    assert main([*args, "--patience", "3", "--restart"]) == 0
    out = capsys.readouterr().out
    assert "[1/1] band2 seed 0 …" in out and "report:" in out
    assert fake.calls == ["band2/s0", "band2/s0"]


def test_run_config_is_a_complete_rfml_fit_config(tmp_path: Path) -> None:
    config = study(tmp_path, model_kwargs={"hidden": 16}, lr=0.01, patience=4)
    base = load_base_config(config)
    run_dir = tmp_path / "run"
    cfg = run_yaml(config, base, RunSpec("sample/pca/16", 2), tmp_path / "data", run_dir)
    assert cfg["seed_everything"] == 2
    data = cfg["data"]["init_args"]
    assert data["view"] == "fft_amp_phase" and data["selection"] == "pca" and data["selection_rate"] == 16
    assert data["split"] == "384:96:235" and data["dataset"] == str(tmp_path / "data") and data["seed"] == 0
    assert "bands" not in data
    model = cfg["model"]["init_args"]
    assert model["model_kwargs"] == {"hidden": 16} and model["optimizer"]["init_args"]["lr"] == 0.01
    names = {c["class_path"].rsplit(".", 1)[-1]: c.get("init_args", {}) for c in cfg["trainer"]["callbacks"]}
    assert names["EarlyStopping"]["patience"] == 4 and names["EarlyStopping"]["monitor"] == "val/loss"
    assert names["ModelCheckpoint"]["dirpath"] == str(run_dir / "checkpoints") and "EpochTimer" in names
    assert cfg["trainer"]["enable_progress_bar"] is False and cfg["trainer"]["enable_model_summary"] is False
    band4 = run_yaml(config, base, RunSpec("band4", 0), tmp_path / "data", run_dir)["data"]["init_args"]
    assert band4["bands"] == [[2422.0, 2424.0], [2429.0, 2431.0]] and band4["view"] == "fft_iq"
    assert fingerprint(config)["lr"] == 0.01
    assert fingerprint(study(tmp_path))["lr"] == pytest.approx(1e-4)  # the config's


# -- end to end -------------------------------------------------------------------------------------------------


def test_tiny_study_end_to_end_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "study"
    args = [
        "ism-study",
        "--generate-per-key", "6",
        "--out", str(out),
        "--model-kwargs", '{"channels": [8, 8], "hidden": 16}',
        "--settings", "full,band2,sample/pca/16",
        "--seeds", "1",
        "--max-epochs", "2",
        "--patience", "1",
        "--batch-size", "128",
    ]  # fmt: skip
    assert main(args) == 0
    runs = load_ism_results(out)["runs"]
    assert sorted(runs) == ["band2/s0", "full/s0", "sample/pca/16/s0"]
    full, band2, pca = runs["full/s0"], runs["band2/s0"], runs["sample/pca/16/s0"]
    assert full["classes"] == list(CLASSES_ISM) and full["length"] == 128
    assert band2["num_classes"] == 7 and band2["length"] == 26
    assert {c.split("-")[0] for c in band2["classes"]} == {"BT", "WiFi", "Zigbee"}
    assert pca["length"] == 8 and pca["num_classes"] == 15
    for run in runs.values():
        n = run["num_classes"]
        assert run["split_sizes"] == {"train": 3 * n * 21, "val": 1 * n * 21, "test": 2 * n * 21}
        assert len(run["confusion"]) == n and sum(map(sum, run["confusion"])) == 2 * n * 21
        assert run["snrs_db"] == SNRS and 0.0 <= run["accuracy"] <= 1.0
        correct = sum(run["confusion"][i][i] for i in range(n))
        assert run["accuracy"] == pytest.approx(correct / (2 * n * 21))
        assert 1 <= run["epochs"] <= 2 and len(run["epoch_seconds"]) == run["epochs"]
        assert run["best_epoch"] == 1 + min(range(run["epochs"]), key=lambda i: run["val_loss"][i])
        assert run["seconds_to_best"] == pytest.approx(sum(run["epoch_seconds"][: run["best_epoch"]]))
        assert not math.isnan(run["val_loss"][0])
        assert not (out / run["run_dir"] / "checkpoints").exists()  # deleted after the test
    assert band2["parameters"] < full["parameters"]
    report = (out / "report.md").read_text()
    assert "synthetic ISM set" in report and "| band2 | 2 MHz (2429–2431) | 7 | 26 |" in report
    assert (out / "accuracy_vs_snr.png").is_file() and (out / "accuracy_vs_snr_rate16.png").is_file()
    printed = capsys.readouterr().out
    assert "[1/3] full seed 0 …" in printed and "[3/3] sample/pca/16 seed 0:" in printed

    lines = (out / "results.jsonl").read_text()
    assert main([*args, "--quiet"]) == 0  # all done: nothing retrains, results unchanged
    assert (out / "results.jsonl").read_text() == lines
