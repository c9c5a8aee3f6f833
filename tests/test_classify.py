"""The AMR metric, the report folder, Classifier and SKD: values checked against hand computations."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ondevice.distill import kd_loss, student_state_dict
from rfml.data.module import shard_rows
from rfml.models import create
from rfml.trainers import SKD, Classifier
from rfml.trainers.checkpoints import model_from_checkpoint, saved_model_kwargs
from rfml.trainers.evaluation import SNRConfusion, summarize_confusion, write_amr_report
from rfml.trainers.skd import skd_loss


def test_snr_confusion_counts_and_summary_match_a_hand_count() -> None:
    metric = SNRConfusion(num_classes=3)
    target = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    preds = torch.tensor([0, 1, 1, 2, 1, 2, 0])
    snr = torch.tensor([-10, -10, -10, 10, 10, 18, 18])
    metric.update(F.one_hot(preds, 3).float(), target, snr)  # logits are reduced by argmax
    summary = summarize_confusion(metric.compute(), ["a", "b", "c"])
    assert summary["examples"] == 7
    assert summary["snrs_db"] == [-10, 10, 18]
    assert summary["accuracy_by_snr"] == pytest.approx([2 / 3, 1 / 2, 1.0])
    assert summary["examples_by_snr"] == [3, 2, 2]
    assert summary["accuracy"] == pytest.approx(5 / 7)
    assert summary["accuracy_snr_ge_10db"] == pytest.approx(3 / 4)
    assert summary["confusion"] == [[2, 0, 1], [0, 2, 0], [0, 1, 1]]
    assert summary["confusion_snr_ge_10db"] == [[1, 0, 1], [0, 1, 0], [0, 0, 1]]
    assert summary["accuracy_by_class"] == pytest.approx([2 / 3, 1.0, 1 / 2])


def test_snr_confusion_refuses_snrs_outside_its_bins() -> None:
    with pytest.raises(ValueError, match=r"integers in \[-64, 63\] dB, got 70..70"):
        SNRConfusion(2).update(torch.tensor([0]), torch.tensor([0]), torch.tensor([70]))


def test_summary_without_high_snr_examples_says_none() -> None:
    metric = SNRConfusion(2)
    metric.update(torch.tensor([0, 1]), torch.tensor([0, 0]), torch.tensor([0, 2]))
    summary = summarize_confusion(metric.compute())
    assert summary["accuracy_snr_ge_10db"] is None
    assert summary["classes"] == ["0", "1"]


def test_report_folder_holds_the_metrics_and_three_plots(tmp_path: Path) -> None:
    metric = SNRConfusion(2)
    metric.update(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 0, 0]), torch.tensor([-4, 12, 12, 0]))
    summary = summarize_confusion(metric.compute(), ["BPSK", "QPSK"])
    paths = write_amr_report(summary, tmp_path / "report", name="kd_cnn")
    written = json.loads(paths["metrics"].read_text())
    assert written["model"] == "kd_cnn"
    assert written["accuracy"] == pytest.approx(3 / 4)
    assert written["accuracy_snr_ge_10db"] == pytest.approx(1 / 2)
    for key in ("accuracy_vs_snr", "confusion", "confusion_high_snr"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == sorted(
        ["metrics.json", "accuracy_vs_snr.png", "confusion.png", "confusion_snr_ge_10db.png"]
    )


def test_report_of_a_summary_at_another_high_snr_threshold_uses_its_keys(tmp_path: Path) -> None:
    metric = SNRConfusion(2)
    metric.update(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 0, 0]), torch.tensor([-4, 12, 12, 0]))
    summary = summarize_confusion(metric.compute(), ["BPSK", "QPSK"], high_snr_db=0)
    assert summary["high_snr_db"] == 0
    assert summary["accuracy_snr_ge_0db"] == pytest.approx(2 / 3)  # SNR 0 and 12: 2 right of 3
    assert summary["confusion_snr_ge_0db"] == [[1, 1], [0, 1]]
    assert "accuracy_snr_ge_10db" not in summary
    paths = write_amr_report(summary, tmp_path / "report", name="m")
    assert paths["confusion_high_snr"].name == "confusion_snr_ge_0db.png"
    assert paths["confusion_high_snr"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(paths["metrics"].read_text())["accuracy_snr_ge_0db"] == pytest.approx(2 / 3)


def test_shards_are_disjoint_cover_evaluation_and_are_equal_for_training() -> None:
    rows = torch.arange(103)
    evaluation = [shard_rows(rows, r, 2, equal=False) for r in range(2)]
    assert sorted(torch.cat(evaluation).tolist()) == list(range(103))
    training = [shard_rows(rows, r, 2, equal=True) for r in range(2)]
    assert [len(t) for t in training] == [51, 51]
    assert not set(training[0].tolist()) & set(training[1].tolist())


def _dataset(n: int = 64, length: int = 128) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 2, length, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    snr = torch.tensor([-10, 0, 10, 18]).repeat(n // 4)
    batches = [{"x": x[i : i + 16], "y": y[i : i + 16], "snr": snr[i : i + 16]} for i in range(0, n, 16)]
    return DataLoader(batches, batch_size=None)


def _trainer(tmp_path: Path, **kw: object) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kw,
    )


def test_classifier_test_report_counts_every_example_once(tmp_path: Path) -> None:
    model = Classifier("kd_cnn", num_classes=4, report_dir=str(tmp_path / "report"))
    batches = _dataset()
    _trainer(tmp_path).test(model, batches, verbose=False)
    summary = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert summary["model"] == "kd_cnn"
    assert summary["examples"] == 64
    assert summary["examples_by_snr"] == [16, 16, 16, 16]
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(b["x"]).argmax(-1) == b["y"]).sum()) for b in batches)
    assert summary["accuracy"] == pytest.approx(correct / 64)
    assert sum(map(sum, summary["confusion"])) == 64


def test_classifier_fits_with_the_configured_optimizer_and_plateau_scheduler(tmp_path: Path) -> None:
    from functools import partial

    model = Classifier(
        "kd_cnn",
        num_classes=4,
        optimizer=partial(torch.optim.SGD, lr=0.05),
        scheduler=partial(torch.optim.lr_scheduler.ReduceLROnPlateau, patience=0, factor=0.5),
    )
    batches = _dataset()
    trainer = _trainer(tmp_path, max_epochs=3)
    trainer.fit(model, batches, batches)
    assert isinstance(trainer.optimizers[0], torch.optim.SGD)
    assert trainer.lr_scheduler_configs[0].monitor == "val/loss"
    # Memorising 64 random frames: the training loss falls below chance (ln 4).
    assert float(trainer.callback_metrics["train/loss"]) < float(torch.log(torch.tensor(4.0)))


def test_skd_loss_modes_are_ce_logit_kd_and_hybrid() -> None:
    student, teacher = create("kd_cnn", 4), create("clst", 4)
    s, t, y = torch.randn(8, 4), torch.randn(8, 4), torch.randint(0, 4, (8,))
    ce = F.cross_entropy(s, y)
    assert skd_loss("ce", student, teacher, 0.7, 4.0, 0.1)(s, t, y)["total"] == pytest.approx(float(ce))
    logit = skd_loss("logit", student, teacher, 0.7, 4.0, 0.1)
    assert float(logit(s, t, y)["total"]) == pytest.approx(float(0.3 * ce + 0.7 * kd_loss(s, t, 4.0)), rel=1e-6)
    hybrid = skd_loss("hybrid", student, teacher, 0.7, 4.0, 0.1)
    assert [(h.student, h.teacher, h.weight) for h in hybrid.hints] == [("features", "stages.2", 0.1)]
    with pytest.raises(ValueError, match="'ce', 'logit' or 'hybrid'"):
        skd_loss("fitnet", student, teacher, 0.7, 4.0, 0.1)  # type: ignore[arg-type]


def test_skd_needs_a_teacher_checkpoint_except_for_ce(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode 'hybrid' needs teacher_checkpoint"):
        SKD("kd_cnn", num_classes=4)
    with pytest.raises(FileNotFoundError, match=r"nope\.ckpt: no such file"):
        SKD("kd_cnn", teacher_checkpoint=str(tmp_path / "nope.ckpt"), num_classes=4)
    assert SKD("kd_cnn", num_classes=4, mode="ce").loss.alpha == 0.0


def test_skd_distils_from_a_classifier_checkpoint_and_saves_the_student_alone(tmp_path: Path) -> None:
    teacher = Classifier("clst", num_classes=4)
    trainer = _trainer(tmp_path, max_epochs=1)
    batches = _dataset()
    trainer.fit(teacher, batches)
    ckpt = tmp_path / "teacher.ckpt"
    trainer.save_checkpoint(ckpt)

    skd = SKD("kd_cnn", teacher_checkpoint=str(ckpt), num_classes=4, mode="hybrid", report_dir=str(tmp_path / "r"))
    for name, value in teacher.net.state_dict().items():
        torch.testing.assert_close(skd.teacher.state_dict()[name], value)
    before = {k: v.clone() for k, v in skd.teacher.state_dict().items()}
    trainer = _trainer(tmp_path, max_epochs=1)
    trainer.fit(skd, batches, batches)
    # The hint adapter maps KD-CNN's 64 channels to ClST's last stage (96); the teacher never changed.
    adapter = skd.adapters["features__to__stages_2"]
    assert (adapter.in_channels, adapter.out_channels) == (64, 96)
    for name, value in skd.teacher.state_dict().items():
        torch.testing.assert_close(value, before[name])
    assert {"train/ce", "train/kd", "train/loss", "val/loss", "val/acc"} <= set(trainer.callback_metrics)

    student_ckpt = tmp_path / "student.ckpt"
    trainer.save_checkpoint(student_ckpt)
    state = student_state_dict(student_ckpt)
    assert set(state) == set(create("kd_cnn", 4).state_dict())
    trainer.test(skd, batches, verbose=False)
    summary = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert summary["model"] == "kd_cnn (SKD hybrid)"
    assert summary["examples"] == 64


def test_clst_checkpoints_from_before_the_default_stem_rebuild_without_it(tmp_path: Path) -> None:
    # A ClST Classifier saved when ClST had no stem (stem=0 was the default; its hparams name no stem).
    old = create("clst", 4, stem=0)
    hparams = {"model": "clst", "num_classes": 4, "length": 128, "model_kwargs": None}
    state = {f"model.{k}": v for k, v in old.state_dict().items()}
    ckpt = tmp_path / "old.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": hparams}, ckpt)
    net, length = model_from_checkpoint(ckpt)
    assert length == 128 and isinstance(net.stem, torch.nn.Identity)
    for name, value in old.state_dict().items():
        torch.testing.assert_close(net.state_dict()[name], value)
    skd = SKD("kd_cnn", teacher_checkpoint=str(ckpt), num_classes=4, mode="logit")
    assert isinstance(skd.teacher.stem, torch.nn.Identity)
    # A checkpoint with the stem, and kwargs that name the stem, are left as they are.
    assert saved_model_kwargs("clst", None, ["model.stem.0.weight"]) == {}
    assert saved_model_kwargs("clst", {"stem": 16}, ["model.head.0.weight"]) == {"stem": 16}
    assert saved_model_kwargs("kd_cnn", None, ["model.features.0.weight"]) == {}
    new = Classifier("clst", num_classes=4)
    assert isinstance(new.net.stem, torch.nn.Sequential) and len(new.net.stem) == 6  # two conv → BN → ReLU


def test_skd_and_classifier_default_to_the_protocols_adam() -> None:
    for module in (Classifier("kd_cnn", num_classes=4), SKD("kd_cnn", num_classes=4, mode="ce")):
        optimizer = module.configure_optimizers()
        assert type(optimizer) is torch.optim.Adam
        assert optimizer.defaults["lr"] == 1e-3 and optimizer.defaults["weight_decay"] == 0
