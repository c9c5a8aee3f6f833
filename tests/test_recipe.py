"""The AMR training recipe: the warm-up + cosine schedule, augmentation on training batches only, label smoothing in
the training loss only, ``compile``, the argument checks, and a YAML config using every piece (``rfml fit``)."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import itertools
import math
from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint
from test_classify import _dataset, _trainer
from torch import Tensor, nn

from rfml.trainers import SKD, Classifier, SignalAugment
from rfml.trainers.cli import lightning_main
from rfml.trainers.recipe import warmup_cosine

TINY_CLST = {"dims": [8, 16, 16], "depths": [1, 1, 1], "heads": [1, 1, 1]}
TINY_KD_CNN = {"widths": [8, 8, 8, 8]}


def _lrs(warmup: int, total: int, steps: int) -> list[float]:
    """The rate of each of ``steps`` optimizer steps under ``warmup_cosine`` with base rate 1."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_cosine(optimizer, warmup, total)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_warmup_cosine_rises_linearly_then_halves_at_the_midpoint_and_ends_at_zero() -> None:
    lrs = _lrs(warmup=4, total=12, steps=14)
    assert lrs[:5] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])  # step 0 is 1/warmup; 1 from the last warm-up step
    assert lrs[6] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lrs[8] == pytest.approx(0.5)  # the cosine's midpoint: 4 of its 8 steps
    assert lrs[12] == pytest.approx(0.0, abs=1e-12) and lrs[13] == pytest.approx(0.0, abs=1e-12)  # stays at 0
    assert all(a > b for a, b in itertools.pairwise(lrs[4:13]))  # strictly falling after warm-up
    assert _lrs(warmup=0, total=4, steps=5) == pytest.approx(
        [1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.1464466, 0]
    )


@pytest.mark.parametrize(("warmup", "total"), [(0, 0), (-1, 10), (10, 10), (11, 10)])
def test_warmup_cosine_refuses_a_warmup_outside_the_run(warmup: int, total: int) -> None:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match=r"warmup_cosine: need 0 <= warmup_steps < total_steps"):
        warmup_cosine(optimizer, warmup, total)


class LRRecorder(pl.Callback):
    """The optimizer's rate at the start of every training batch (the rate that batch's step uses)."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_warmup_cosine_schedule_steps_every_optimizer_step_over_the_trainers_run(tmp_path: Path) -> None:
    model = Classifier(
        "clst",
        num_classes=4,
        model_kwargs=TINY_CLST,
        optimizer=partial(torch.optim.SGD, lr=0.1),
        schedule="warmup_cosine",
        warmup_epochs=1,
    )
    recorder = LRRecorder()
    trainer = _trainer(tmp_path, max_epochs=2, limit_train_batches=3, callbacks=[recorder])
    trainer.fit(model, _dataset())
    # 2 epochs of 3 steps, 1 epoch of warm-up: 3 rising steps, then a half cosine over 3 steps to 0.
    assert trainer.lr_scheduler_configs[0].interval == "step"
    assert recorder.lrs == pytest.approx([0.1 / 3, 0.2 / 3, 0.1, 0.1, 0.075, 0.025])
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def _record_inputs(module: nn.Module) -> list[tuple[bool, Tensor]]:
    """Record (training mode, input) of every call of ``module``."""
    calls: list[tuple[bool, Tensor]] = []
    module.register_forward_pre_hook(lambda m, args: calls.append((m.training, args[0].detach().clone())))
    return calls


def test_augmentation_reaches_training_batches_and_never_validation(tmp_path: Path) -> None:
    model = Classifier("kd_cnn", num_classes=4, model_kwargs=TINY_KD_CNN, augment=SignalAugment(p=0.5, seed=3))
    calls = _record_inputs(model.net)
    batches = _dataset()
    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=2, num_sanity_val_steps=0)
    trainer.fit(model, batches, batches)
    train = [x for training, x in calls if training]
    val = [x for training, x in calls if not training]
    raw = [b["x"] for b in list(batches)[:2]]
    reference = SignalAugment(p=0.5, seed=3)  # the same seed: the same sequence of augmented batches
    assert len(train) == len(val) == 2
    for seen, x in zip(train, raw, strict=True):
        assert not torch.allclose(seen, x)
        torch.testing.assert_close(seen, reference(x))
    for seen, x in zip(val, raw, strict=True):
        torch.testing.assert_close(seen, x, rtol=0, atol=0)


def _logged(monkeypatch: pytest.MonkeyPatch, module: pl.LightningModule) -> dict[str, Any]:
    """Capture what ``module.log`` is given, without a trainer."""
    logged: dict[str, Any] = {}
    monkeypatch.setattr(module, "log", lambda name, value, *args, **kwargs: logged.__setitem__(name, value))
    return logged


def _record_outputs(module: nn.Module) -> list[Tensor]:
    outputs: list[Tensor] = []
    module.register_forward_hook(lambda m, args, out: outputs.append(out.detach().clone()))
    return outputs


def _confident(head: nn.Linear) -> None:
    """Bias a fresh network's last layer so its logits are far from uniform (where smoothing changes little)."""
    with torch.no_grad():
        head.bias.copy_(torch.tensor([3.0, -2.0, 0.0, 1.0]))


def _confident_batch() -> dict[str, Tensor]:
    """A batch whose labels are all the class :func:`_confident` favours: smoothing then raises the loss clearly."""
    batch = next(iter(_dataset()))
    return {**batch, "y": torch.zeros_like(batch["y"])}


def _tiny_skd(**kwargs: Any) -> SKD:
    return SKD(
        "kd_cnn", num_classes=4, mode="ce", student_kwargs=TINY_KD_CNN, teacher_kwargs=TINY_CLST, **kwargs
    )  # mode ce: no teacher checkpoint needed


def test_skd_teacher_and_student_see_the_same_augmented_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    skd = _tiny_skd(augment=SignalAugment(p=0.5, seed=5))
    _logged(monkeypatch, skd)
    student, teacher = _record_inputs(skd.student), _record_inputs(skd.teacher)
    batch = next(iter(_dataset()))
    skd.train()
    skd.training_step(batch, 0)
    expected = SignalAugment(p=0.5, seed=5)(batch["x"])
    assert not torch.allclose(expected, batch["x"])
    torch.testing.assert_close(student[0][1], expected)
    torch.testing.assert_close(teacher[0][1], expected)


def test_classifier_trains_on_smoothed_cross_entropy_and_validates_on_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    model = Classifier("clst", num_classes=4, model_kwargs=TINY_CLST, label_smoothing=0.2)
    _confident(model.net.head[-1])
    logged = _logged(monkeypatch, model)
    logits = _record_outputs(model.net)
    batch = _confident_batch()
    loss = model.training_step(batch, 0)
    smoothed = F.cross_entropy(logits[0], batch["y"], label_smoothing=0.2)
    torch.testing.assert_close(loss, smoothed)
    torch.testing.assert_close(logged["train/loss"], smoothed)
    assert abs(float(smoothed) - float(F.cross_entropy(logits[0], batch["y"]))) > 1e-2  # ε did act
    model.eval()
    model.validation_step(batch, 0)
    plain = F.cross_entropy(logits[1], batch["y"])
    torch.testing.assert_close(logged["val/loss"], plain)
    assert abs(float(plain) - float(F.cross_entropy(logits[1], batch["y"], label_smoothing=0.2))) > 1e-2


def test_skd_ce_mode_trains_on_smoothed_cross_entropy_and_logs_plain_val_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    skd = _tiny_skd(label_smoothing=0.2)
    assert skd.loss.label_smoothing == 0.2
    _confident(skd.student.head[-1])
    logged = _logged(monkeypatch, skd)
    logits = _record_outputs(skd.student)
    batch = _confident_batch()
    skd.train()
    loss = skd.training_step(batch, 0)
    smoothed = F.cross_entropy(logits[0], batch["y"], label_smoothing=0.2)
    torch.testing.assert_close(loss, smoothed)
    torch.testing.assert_close(logged["train/loss"], smoothed)
    skd.eval()
    skd.validation_step(batch, 0)
    plain = F.cross_entropy(logits[1], batch["y"])
    torch.testing.assert_close(logged["val/loss"], plain)
    assert abs(float(plain) - float(F.cross_entropy(logits[1], batch["y"], label_smoothing=0.2))) > 1e-2


# One ClST stage: every kind of ClST layer, few enough kernels that inductor compiles them in seconds.
ONE_STAGE_CLST = {"dims": [8], "depths": [1], "heads": [1], "embed_kernels": [7], "embed_strides": [2]}


@pytest.fixture(scope="module")
def compiled_pair() -> tuple[Classifier, Classifier, Tensor]:
    """An eager Classifier, a compiled one with the same weights (compiled by ``setup``, run once), and an input."""
    torch.manual_seed(0)
    eager = Classifier("clst", num_classes=4, model_kwargs=ONE_STAGE_CLST).eval()
    compiled = Classifier("clst", num_classes=4, model_kwargs=ONE_STAGE_CLST, compile=True)
    compiled.load_state_dict(eager.state_dict())
    compiled.setup("fit")
    compiled.eval()
    x = torch.randn(3, 2, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        compiled(x)  # compile now, once for the module's tests
    return eager, compiled, x


def test_compile_gives_the_eager_logits_and_the_eager_state_dict(
    compiled_pair: tuple[Classifier, Classifier, Tensor],
) -> None:
    eager, compiled, x = compiled_pair
    impl = compiled.net._compiled_call_impl
    assert impl is not None and eager.net._compiled_call_impl is None
    compiled.setup("fit")  # a second setup (validate or test after fit) does not compile again
    assert compiled.net._compiled_call_impl is impl
    with torch.no_grad():
        assert (compiled(x) - eager(x)).abs().max() <= 1e-4
    assert list(compiled.state_dict()) == list(eager.state_dict())  # no _orig_mod: checkpoints load either way
    assert not any("_orig_mod" in key for key in compiled.state_dict())


def test_a_compiled_classifier_deep_copies_as_weight_averaging_does(
    compiled_pair: tuple[Classifier, Classifier, Tensor],
) -> None:
    eager, compiled, x = compiled_pair
    twin = copy.deepcopy(compiled)
    for name, value in compiled.state_dict().items():
        torch.testing.assert_close(twin.state_dict()[name], value, rtol=0, atol=0)
    assert twin.net.stages[0].embed.proj.weight is not compiled.net.stages[0].embed.proj.weight
    with torch.no_grad():
        assert (twin(x) - eager(x)).abs().max() <= 1e-4
    assert compiled.net._compiled_call_impl is not None  # the original stays compiled


def test_recipe_arguments_are_checked() -> None:
    plateau = partial(torch.optim.lr_scheduler.ReduceLROnPlateau, patience=1)
    with pytest.raises(ValueError, match=r"schedule='warmup_cosine' and a scheduler were both given"):
        Classifier("kd_cnn", num_classes=4, schedule="warmup_cosine", scheduler=plateau)
    smoothing = r"label_smoothing must lie in \[0, 1\), got 1\.0"
    with pytest.raises(ValueError, match=smoothing):
        Classifier("kd_cnn", num_classes=4, label_smoothing=1.0)
    with pytest.raises(ValueError, match=smoothing):
        _tiny_skd(label_smoothing=1.0)
    with pytest.raises(ValueError, match=r"schedule must be one of \('constant', 'warmup_cosine'\), got 'linear'"):
        Classifier("kd_cnn", num_classes=4, schedule="linear")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"warmup_epochs must be >= 0, got -1"):
        Classifier("kd_cnn", num_classes=4, warmup_epochs=-1)
    with pytest.raises(ValueError, match=r"augment must be an rfml.trainers.SignalAugment or None, got Identity"):
        Classifier("kd_cnn", num_classes=4, augment=nn.Identity())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"cache_teacher_logits"):
        _tiny_skd(augment=SignalAugment(), cache_teacher_logits=True)


@pytest.mark.parametrize("max_steps", [-1, 4], ids=["no_max_steps", "max_steps"])
def test_warmup_cosine_needs_max_epochs(tmp_path: Path, max_steps: int) -> None:
    model = Classifier("kd_cnn", num_classes=4, model_kwargs=TINY_KD_CNN, schedule="warmup_cosine")
    trainer = _trainer(tmp_path, max_epochs=-1, max_steps=max_steps)
    with pytest.raises(ValueError, match=r"schedule=warmup_cosine needs a finite length.*trainer\.max_epochs"):
        trainer.fit(model, _dataset())


RECIPE_YAML = """\
seed_everything: 0
trainer:
  max_epochs: 3
  logger: false
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: lightning.pytorch.callbacks.EMAWeightAveraging
      init_args: {{decay: 0.9}}
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{monitor: val/acc, mode: max, dirpath: checkpoints, filename: best}}
model:
  class_path: rfml.trainers.{module}
  init_args:
{model}
    optimizer:
      class_path: torch.optim.AdamW
      init_args: {{lr: 0.002, weight_decay: 0.05}}
    augment:
      class_path: rfml.trainers.SignalAugment
      init_args: {{p: 0.5}}
    label_smoothing: 0.1
    schedule: warmup_cosine
    warmup_epochs: 1
data:
  class_path: rfml.data.SignalDataModule
  init_args:
    dataset: synthetic:rml2016.10a
    per_key: 2
    batch_size: 32
"""
MODELS = {
    "Classifier": "    model: clst\n    model_kwargs: {dims: [8, 16, 16], depths: [1, 1, 1], heads: [1, 1, 1]}",
    "SKD": (
        "    student: kd_cnn\n    mode: ce\n    student_kwargs: {widths: [8, 8, 8, 8]}\n"
        "    teacher_kwargs: {dims: [8, 16, 16], depths: [1, 1, 1], heads: [1, 1, 1]}"
    ),
}


@pytest.mark.parametrize("module", list(MODELS))
def test_the_whole_recipe_fits_from_yaml(module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "recipe.yaml"
    config.write_text(RECIPE_YAML.format(module=module, model=MODELS[module]))
    cli = lightning_main(["fit", "-c", str(config), "--trainer.fast_dev_run", "true"])
    model, trainer = cli.model, cli.trainer
    assert trainer.state.finished and type(model).__name__ == module
    assert isinstance(model.augment, SignalAugment) and model.augment.p == 0.5
    assert model.hparams["label_smoothing"] == 0.1 and model.label_smoothing == 0.1
    assert model.hparams["schedule"] == "warmup_cosine"
    optimizer = trainer.optimizers[0]
    assert type(optimizer) is torch.optim.AdamW and optimizer.defaults["weight_decay"] == 0.05
    # fast_dev_run is one step: no warm-up left, and the one step ends the cosine at 0.
    group = optimizer.param_groups[0]
    assert group["initial_lr"] == 0.002 and group["lr"] == pytest.approx(0.0, abs=1e-12)
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 1
    ema = next(c for c in trainer.callbacks if isinstance(c, EMAWeightAveraging))
    assert ema._average_model is not None and int(ema._average_model.n_averaged) == 1
    best = next(c for c in trainer.callbacks if isinstance(c, ModelCheckpoint))
    assert (best.monitor, best.mode) == ("val/acc", "max")
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert 0.0 <= float(trainer.callback_metrics["val/acc"]) <= 1.0


AMR_CONFIGS = ("clst", "cldnn", "kd_cnn", "kd_mobilenet", "lstm2", "mcldnn", "resnet", "vtcnn2")
SKD_CONFIGS = ("skd_kd_cnn", "skd_kd_mobilenet")


@pytest.mark.parametrize("name", AMR_CONFIGS + SKD_CONFIGS)
def test_every_shipped_amr_config_carries_the_recipe_as_recipe_settings_states_it(name: str) -> None:
    """One recipe for every model: the YAML users run, the demo and the benchmark must not drift apart."""
    import yaml

    from ondevice.command_line import resolve_config
    from rfml.trainers.recipe import RECIPE

    config = yaml.safe_load(Path(resolve_config(name, "rfml")).read_text())
    init = config["model"]["init_args"]
    assert init["optimizer"] == {
        "class_path": "torch.optim.AdamW",
        "init_args": {"lr": RECIPE.lr, "weight_decay": RECIPE.weight_decay},
    }
    assert (init["schedule"], init["warmup_epochs"]) == ("warmup_cosine", RECIPE.warmup_epochs)
    assert init["augment"] == {"class_path": "rfml.trainers.SignalAugment", "init_args": {"p": RECIPE.augment_p}}
    assert init["label_smoothing"] == RECIPE.label_smoothing
    callbacks = {c["class_path"].rsplit(".", 1)[1]: c["init_args"] for c in config["trainer"]["callbacks"]}
    assert set(callbacks) == {"ModelCheckpoint"} | ({"EMAWeightAveraging"} if RECIPE.ema_decay else set())
    assert (callbacks["ModelCheckpoint"]["monitor"], callbacks["ModelCheckpoint"]["mode"]) == (RECIPE.monitor, "max")
    if RECIPE.ema_decay:
        assert callbacks["EMAWeightAveraging"] == {"decay": RECIPE.ema_decay}
    assert config["data"]["init_args"]["norm"] == "rms"
    if name in SKD_CONFIGS:
        skd = inspect.signature(SKD.__init__).parameters
        assert (init["mode"], init["alpha"], init["temperature"]) == tuple(
            skd[k].default for k in ("mode", "alpha", "temperature")
        )


def test_recipe_settings_build_the_modules_arguments_and_callbacks(tmp_path: Path) -> None:
    from rfml.trainers.recipe import RECIPE

    kwargs = RECIPE.module_kwargs(seed=3)
    optimizer = kwargs["optimizer"](nn.Linear(2, 2).parameters())
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["lr"] == RECIPE.lr and optimizer.defaults["weight_decay"] == RECIPE.weight_decay
    assert kwargs["augment"].p == RECIPE.augment_p and kwargs["augment"].seed == 3
    module = Classifier("kd_cnn", 11, 128, **kwargs)
    assert module.label_smoothing == RECIPE.label_smoothing and module.schedule == "warmup_cosine"
    checkpoint, *averaging = RECIPE.callbacks(tmp_path)
    assert isinstance(checkpoint, ModelCheckpoint) and checkpoint.monitor == RECIPE.monitor and checkpoint.mode == "max"
    assert averaging == [] if RECIPE.ema_decay is None else isinstance(averaging[0], EMAWeightAveraging)
    with_ema = dataclasses.replace(RECIPE, ema_decay=0.9).callbacks(tmp_path)
    assert isinstance(with_ema[1], EMAWeightAveraging) and len(with_ema) == 2


def test_epoch_line_prints_one_flushed_line_per_epoch_with_the_validated_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rfml.trainers.callbacks import EpochLine

    module = Classifier("kd_cnn", num_classes=4, length=128)
    trainer = _trainer(tmp_path, max_epochs=2, callbacks=[EpochLine("KD-CNN")])
    trainer.fit(module, _dataset(), _dataset(32))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("KD-CNN epoch")]
    assert [line.split("  ")[0] for line in lines] == ["KD-CNN epoch 1/2", "KD-CNN epoch 2/2"]
    acc = 100 * float(trainer.callback_metrics["val/acc"])
    assert f"val/acc {acc:.1f} %" in lines[-1] and "val/loss " in lines[-1] and lines[-1].endswith(" s")
