"""slm.train: `slm fit` on the tiny config learns, checkpoints reload, sampling, the LR schedule and distillation."""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import pytest
import torch
from tokenizers import Tokenizer

from slm.data import TextDataModule
from slm.train import LanguageModel, lightning_main, lr_factor, sample, sample_tokens

CONFIGS = Path(__file__).resolve().parents[1] / "slm" / "configs"
MAX_FILES = 100  # the first 100 stdlib sources: ~0.75 M training tokens at vocab 512, tokenized in ~3 s
FIT_STEPS = 120  # enough to lower val/loss by ~1.8 nats; validated every 40 steps
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the configs' relative paths (runs/slm/…, runs/slm_data/tiny) resolve in."""
    return tmp_path_factory.mktemp("slm_train")


@pytest.fixture(autouse=True)
def _in_workdir(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)


def data_args(max_files: int = MAX_FILES) -> list[str]:
    return ["--data.init_args.max_files", str(max_files)]


@pytest.fixture(scope="module")
def fitted(workdir: Path) -> Iterator[dict]:
    """`slm fit -c tiny.yaml` for FIT_STEPS steps, with the untrained model's validation loss measured first."""
    # Module fixtures run before the autouse chdir; the configs' relative paths must land in workdir too.
    previous = os.getcwd()
    os.chdir(workdir)
    args = ["fit", "-c", str(CONFIGS / "tiny.yaml"), *data_args(), "--trainer.max_steps", str(FIT_STEPS)]
    args += ["--trainer.val_check_interval", str(FIT_STEPS // 3), *QUIET]
    cli = lightning_main(args, run=False)
    initial = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]["val/loss"]
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    seconds = time.perf_counter() - start
    final = float(cli.trainer.callback_metrics["val/loss"])
    print(f"\nslm fit tiny: {FIT_STEPS} steps in {seconds:.1f} s; val/loss {initial:.3f} -> {final:.3f}")
    yield {"cli": cli, "initial": initial, "best": Path(cli.trainer.checkpoint_callback.best_model_path)}
    os.chdir(previous)


def test_fit_lowers_validation_loss_by_over_a_nat(fitted: dict) -> None:
    cli = fitted["cli"]
    assert cli.trainer.global_step == FIT_STEPS
    # An untrained model is near uniform over the 512 tokens.
    assert abs(fitted["initial"] - math.log(512)) < 0.3
    final = float(cli.trainer.callback_metrics["val/loss"])
    assert final < fitted["initial"] - 1.5
    assert float(cli.trainer.callback_metrics["val/ppl"]) == pytest.approx(math.exp(final), rel=1e-5)
    # The CLI set the data's vocabulary from the model's arch.
    assert cli.datamodule.vocab_size == cli.model.arch.vocab_size == 512


def test_lr_schedule_ends_at_min_ratio_after_fit(fitted: dict) -> None:
    cli = fitted["cli"]
    scheduler = cli.trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.get_last_lr() == pytest.approx([3e-3 * 0.1, 3e-3 * 0.1])
    groups = cli.trainer.optimizers[0].param_groups
    # Matrices and embeddings decay, norm weights do not; the tied LM head is counted once.
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert all(p.ndim >= 2 for p in groups[0]["params"]) and all(p.ndim == 1 for p in groups[1]["params"])
    assert sum(p.numel() for g in groups for p in g["params"]) == cli.model.arch.num_params


def test_lr_factor_warmup_and_cosine() -> None:
    warmup, total, ratio = 20, 300, 0.1
    rising = [lr_factor(s, warmup, total, ratio) for s in range(warmup + 1)]
    assert rising[0] == pytest.approx(1 / 21) and rising[-1] == 1.0
    assert all(a < b for a, b in itertools.pairwise(rising))
    assert lr_factor(warmup + (total - warmup) // 2, warmup, total, ratio) == pytest.approx((1 + ratio) / 2)
    assert lr_factor(total, warmup, total, ratio) == pytest.approx(ratio)
    assert lr_factor(total + 50, warmup, total, ratio) == pytest.approx(ratio)
    # A warmup longer than the run is cut to the run.
    assert lr_factor(4, 20, 5, ratio) == pytest.approx(5 / 6)


def test_checkpoint_reloads_with_same_val_loss_and_samples(fitted: dict) -> None:
    cli, best = fitted["cli"], fitted["best"]
    assert best.name == "best.ckpt" and (best.parent / "last.ckpt").is_file()
    reloaded = LanguageModel.load_from_checkpoint(best)
    assert reloaded.arch == cli.model.arch and reloaded.teacher is None
    score = cli.trainer.validate(reloaded, datamodule=cli.datamodule, verbose=False)[0]["val/loss"]
    assert score == pytest.approx(float(cli.trainer.checkpoint_callback.best_model_score), abs=1e-5)
    # The same through `slm validate --ckpt_path`, which rebuilds the model from the checkpoint's hyperparameters.
    args = ["validate", "-c", str(CONFIGS / "tiny.yaml"), *data_args(), "--ckpt_path", str(best), *QUIET]
    again = lightning_main(args)
    assert float(again.trainer.callback_metrics["val/loss"]) == pytest.approx(score, abs=1e-5)

    text, ids = sample_tokens(best, "def ", max_new_tokens=24, temperature=0.8, top_k=40, seed=3)
    tokenizer = Tokenizer.from_file(str(cli.datamodule.tokenizer_path))
    assert len(ids) == 24 and all(0 <= i < 512 for i in ids)
    assert text == "def " + tokenizer.decode(ids, skip_special_tokens=False)
    assert sample(best, "def ", max_new_tokens=24, temperature=0.8, top_k=40, seed=3) == text
    greedy = sample(best, "import ", max_new_tokens=8, temperature=0)
    assert greedy.startswith("import ") and len(greedy) > len("import ")


@pytest.fixture(scope="module")
def teacher(fitted: dict, workdir: Path) -> Path:
    """`slm fit -c tiny_teacher.yaml` for 10 steps on the same data dir (hence the same tokenizer) as the student."""
    args = [
        "fit",
        "-c",
        str(CONFIGS / "tiny_teacher.yaml"),
        *data_args(),
        "--trainer.max_steps",
        "10",
        "--trainer.val_check_interval",
        "5",
        "--checkpoint.dirpath",
        str(workdir / "teacher_ckpts"),
        *QUIET,
    ]
    lightning_main(args)
    return workdir / "teacher_ckpts" / "best.ckpt"


def test_distillation_keeps_teacher_frozen_and_out_of_the_checkpoint(teacher: Path, workdir: Path) -> None:
    saved = torch.load(teacher, map_location="cpu", weights_only=True)["state_dict"]
    args = [
        "fit",
        "-c",
        str(CONFIGS / "tiny_distill.yaml"),
        *data_args(),
        "--model.init_args.teacher_checkpoint",
        str(teacher),
        "--trainer.max_steps",
        "6",
        "--trainer.val_check_interval",
        "3",
        "--checkpoint.dirpath",
        str(workdir / "student_ckpts"),
        *QUIET,
    ]
    cli = lightning_main(args)
    model = cli.model
    assert model.teacher is not None and model.teacher.config.hidden_size == 128
    assert not model.teacher.training
    assert all(not p.requires_grad for p in model.teacher.parameters())
    for name, value in model.teacher.state_dict().items():
        assert torch.equal(value, saved[f"model.{name}"]), name
    optimized = {id(p) for g in cli.trainer.optimizers[0].param_groups for p in g["params"]}
    assert optimized.isdisjoint(id(p) for p in model.teacher.parameters())
    metrics = cli.trainer.callback_metrics
    assert {"train/kd", "train/ce", "val/loss"} <= set(metrics)
    # The objective mixes CE and KD with alpha 0.5.
    assert float(metrics["train/loss"]) == pytest.approx(
        0.5 * float(metrics["train/ce"]) + 0.5 * float(metrics["train/kd"])
    )

    student = workdir / "student_ckpts" / "best.ckpt"
    checkpoint = torch.load(student, map_location="cpu", weights_only=True)
    assert not [k for k in checkpoint["state_dict"] if k.startswith("teacher.")]
    assert "teacher_checkpoint" not in checkpoint["hyper_parameters"]
    assert checkpoint["slm"]["teacher_checkpoint"] == str(teacher)
    reloaded = LanguageModel.load_from_checkpoint(student)
    assert reloaded.teacher is None and reloaded.arch.hidden_size == 64


def test_teacher_with_another_vocabulary_is_refused(workdir: Path) -> None:
    arch = (
        '{"vocab_size": 640, "hidden_size": 32, "num_layers": 1, "num_heads": 2, "ffn_size": 64, "context_length": 256}'
    )
    args = [
        "fit",
        "-c",
        str(CONFIGS / "tiny_teacher.yaml"),
        "--model.init_args.arch",
        arch,
        "--data.init_args.data_dir",
        str(workdir / "data640"),
        *data_args(20),
        "--trainer.max_steps",
        "2",
        "--trainer.val_check_interval",
        "2",
        "--checkpoint.dirpath",
        str(workdir / "v640"),
        *QUIET,
    ]
    cli = lightning_main(args)
    # A full ArchConfig from the command line reaches the model and, through the link, the tokenizer.
    assert cli.model.arch.vocab_size == 640 and cli.datamodule.vocab_size == 640
    with pytest.raises(ValueError, match=r"vocab_size 640 but the student's arch has vocab_size 512"):
        LanguageModel("tiny", teacher_checkpoint=str(workdir / "v640" / "best.ckpt"))


def test_teacher_with_another_tokenizer_is_refused(teacher: Path, workdir: Path) -> None:
    model = LanguageModel("tiny", teacher_checkpoint=str(teacher))
    data = TextDataModule(data_dir=str(workdir / "data20"), vocab_size=512, max_files=20, batch_size=4)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match=r"trained with another tokenizer"):
        trainer.fit(model, datamodule=data)


def test_missing_teacher_checkpoint_names_the_path() -> None:
    with pytest.raises(FileNotFoundError, match=r"teacher_checkpoint: nowhere/best.ckpt: no such file"):
        LanguageModel("tiny", teacher_checkpoint="nowhere/best.ckpt")
    # The config's default teacher path does not exist in this fresh folder; jsonargparse re-raises the model's
    # error as a ValueError that keeps its message.
    with pytest.raises(ValueError, match=r"runs/slm/tiny_teacher/checkpoints/best.ckpt: no such file; train the"):
        lightning_main(["fit", "-c", str(CONFIGS / "tiny_distill.yaml"), *data_args(), *QUIET], run=False)


def test_data_vocabulary_larger_than_the_model_is_refused(workdir: Path) -> None:
    data = TextDataModule(data_dir=str(workdir / "data600"), vocab_size=600, max_files=10, batch_size=4)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match=r"data's vocab_size 600 exceeds the model's arch.vocab_size 512"):
        trainer.fit(LanguageModel("tiny"), datamodule=data)


def test_unbounded_run_is_refused_by_the_schedule(fitted: dict) -> None:
    trainer = L.Trainer(max_steps=-1, max_epochs=-1, logger=False, enable_checkpointing=False)
    with pytest.raises(ValueError, match=r"set trainer.max_steps"):
        trainer.fit(LanguageModel("tiny"), datamodule=fitted["cli"].datamodule)
