"""``SKD``: signal knowledge distillation of a small AMR student from a trained, frozen teacher (ClST by default)."""

from __future__ import annotations

import os
from typing import Any, Literal

from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from ondevice.distill import DistillationLoss, DistillationModule, DistillOn, FeatureHint
from rfml.models import create
from rfml.trainers.augment import SignalAugment
from rfml.trainers.checkpoints import checkpoint_keys, saved_model_kwargs
from rfml.trainers.classifier import AMREvaluation, default_optimizer
from rfml.trainers.recipe import Schedule, TrainingRecipe

SKDMode = Literal["ce", "logit", "hybrid"]


def skd_loss(
    mode: SKDMode,
    student: nn.Module,
    teacher: nn.Module,
    alpha: float,
    temperature: float,
    beta: float,
    label_smoothing: float = 0.0,
    distill_on: DistillOn = "all",
) -> DistillationLoss:
    """The SKD objective for an ablation ``mode``.

    - ``ce``: cross-entropy on the labels only (α = 0);
    - ``logit``: (1−α)·CE + α·T²·KL(teacher/T ‖ student/T);
    - ``hybrid``: ``logit`` + β·MSE between the student's last feature map (1×1 adapter, resampled in time) and the
      teacher's last stage, the layers each model names in ``hint_layer``.

    ``distill_on="teacher_correct"`` applies the KD term only to the frames the teacher classifies right
    (:class:`ondevice.distill.DistillationLoss`).
    """
    if mode == "ce":
        return DistillationLoss(alpha=0.0, temperature=temperature, label_smoothing=label_smoothing)
    common = {"temperature": temperature, "label_smoothing": label_smoothing, "distill_on": distill_on}
    if mode == "logit":
        return DistillationLoss(alpha=alpha, **common)
    if mode == "hybrid":
        missing = [type(m).__name__ for m in (student, teacher) if not getattr(m, "hint_layer", None)]
        if missing:
            raise ValueError(f"SKD hybrid mode: {missing} name no hint_layer for the feature hint")
        hint = FeatureHint(student=student.hint_layer, teacher=teacher.hint_layer, weight=beta)
        return DistillationLoss(alpha=alpha, hints=[hint], **common)
    raise ValueError(f"SKD mode must be 'ce', 'logit' or 'hybrid', got {mode!r}")


class SKD(AMREvaluation, TrainingRecipe, DistillationModule):
    """Signal knowledge distillation: a small student learns from a trained (frozen) teacher, ClST by default.

    Args:
        student: the student's registered name (``kd_cnn``, ``kd_mobilenet`` …).
        teacher: the teacher's registered name (``clst``).
        teacher_checkpoint: the teacher's trained weights: a checkpoint of ``rfml fit`` with a ``Classifier`` (its
            ``net.`` prefix is found) or a bare state_dict. Required unless ``mode`` is ``ce``.
        num_classes, length: of the data (the CLI links them from the DataModule).
        mode: the ablation switch: ``ce`` (labels alone), ``logit`` (KD on soft targets) or ``hybrid`` (KD plus a
            feature hint); see :func:`skd_loss`.
        alpha, temperature, beta: weight of the KD term, softmax temperature, weight of the feature hint.
        student_kwargs, teacher_kwargs: constructor options; the teacher's must match its checkpoint.
        optimizer, scheduler, scheduler_monitor, report_dir: as for :class:`Classifier` (default Adam, lr 1e-3).
        augment, label_smoothing, schedule, warmup_epochs, compile: the training recipe as for :class:`Classifier`;
            the teacher sees the same augmented batch as the student, and ``compile`` compiles the student.
        cache_teacher_logits: run the teacher once per distinct example (``logit`` mode, deterministic data, so
            not with ``augment``).
        distill_on: ``all`` (every frame) or ``teacher_correct`` (the KD term only on the frames the teacher
            classifies right; the rest learn from the labels alone).

    Checkpoints hold the student alone; ``rfml.trainers.Classifier(model=student)`` loads them through
    ``ondevice.distill.student_state_dict``.
    """

    network_attribute = "student"
    hparams_ignore = ("optimizer", "scheduler", "augment", "report_dir")

    def __init__(
        self,
        student: str = "kd_cnn",
        teacher: str = "clst",
        teacher_checkpoint: str | None = None,
        num_classes: int = 11,
        length: int = 128,
        mode: SKDMode = "hybrid",
        alpha: float = 0.5,
        temperature: float = 4.0,
        beta: float = 0.1,
        student_kwargs: dict[str, Any] | None = None,
        teacher_kwargs: dict[str, Any] | None = None,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_monitor: str = "val/loss",
        augment: SignalAugment | None = None,
        label_smoothing: float = 0.0,
        schedule: Schedule = "constant",
        warmup_epochs: float = 1.0,
        compile: bool = False,
        report_dir: str | None = None,
        cache_teacher_logits: bool = False,
        distill_on: DistillOn = "all",
    ) -> None:
        if teacher_checkpoint is None and mode != "ce":
            raise ValueError(
                f"SKD: mode {mode!r} needs teacher_checkpoint, the trained teacher's weights (the checkpoint of "
                "`rfml fit -c rfml/configs/clst.yaml`)"
            )
        if teacher_checkpoint is not None and not os.path.isfile(teacher_checkpoint):
            raise FileNotFoundError(f"SKD: teacher_checkpoint {teacher_checkpoint}: no such file")
        if cache_teacher_logits and augment is not None:
            raise ValueError(
                "SKD: cache_teacher_logits keys the teacher's logits by the example's bytes, which augmentation"
                " changes every step; drop augment or set cache_teacher_logits=False"
            )
        student_net = create(student, num_classes, length, **(student_kwargs or {}))
        if teacher_checkpoint is not None:  # weights saved before a default changed rebuild as they were saved
            teacher_kwargs = saved_model_kwargs(teacher, teacher_kwargs, checkpoint_keys(teacher_checkpoint))
        teacher_net = create(teacher, num_classes, length, **(teacher_kwargs or {}))
        super().__init__(
            student=student_net,
            teacher=teacher_net,
            loss=skd_loss(mode, student_net, teacher_net, alpha, temperature, beta, label_smoothing, distill_on),
            teacher_checkpoint=teacher_checkpoint,
            # The AMR protocol's Adam, lr 1e-3, unless the config says otherwise (not DistillationModule's AdamW).
            optimizer=optimizer or default_optimizer,
            cache_teacher_logits=cache_teacher_logits,
        )
        self.save_hyperparameters(ignore=list(self.hparams_ignore))
        self._init_amr(num_classes, length, report_dir)
        # The hint adapters exist from the start (sized on one zero frame), so callbacks that copy the module before
        # its setup, like EMAWeightAveraging, copy them too.
        self.build_adapters(self.example_input_array)
        self._init_recipe(augment, label_smoothing, schedule, warmup_epochs, compile, scheduler, scheduler_monitor)

    @property
    def report_name(self) -> str:
        return f"{self.hparams['student']} (SKD {self.hparams['mode']})"

    def configure_optimizers(self) -> Any:
        return self._optimizers_with_schedule(super().configure_optimizers())

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """The SKD loss on the augmented batch: student and teacher both see the recipe's augmentation."""
        if self.augment is not None:
            batch = {**batch, "x": self._augmented(batch["x"])}
        return super().training_step(batch, batch_idx)
