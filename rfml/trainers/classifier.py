"""The AMR ``Classifier`` (cross-entropy), the evaluation it shares with ``SKD``, and ``rfml predict``'s writer.

Both LightningModules take batches ``{"x": [B, 2, L], "y": [B], "snr": [B]}`` from a ``SignalDataModule``,
build their networks by name through ``rfml.models.create``, log ``train/loss``, ``val/loss`` and ``val/acc``,
and on ``test`` write a report folder (metrics JSON, accuracy vs SNR, confusion matrices for all SNRs and for
SNR ≥ 10 dB).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from rfml.models import create
from rfml.trainers.augment import SignalAugment
from rfml.trainers.evaluation import HIGH_SNR_DB, SNRConfusion, summarize_confusion, write_amr_report
from rfml.trainers.recipe import Schedule, TrainingRecipe

DEFAULT_LR = 1e-3


def unpack_batch(batch: Any, stage: str) -> tuple[Tensor, Tensor, Tensor | None]:
    if not isinstance(batch, dict) or "x" not in batch or "y" not in batch:
        got = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"{stage}: expected a batch dict with 'x' [B, 2, L], 'y' [B] and 'snr' [B], got {got}")
    return batch["x"], batch["y"], batch.get("snr")


def default_optimizer(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=DEFAULT_LR)


class AMREvaluation:
    """The evaluation both AMR modules share: accuracy while validating, the full report on ``test``.

    Mixed into a LightningModule whose ``__init__`` calls :meth:`_init_amr` and whose :attr:`network_attribute`
    names the attribute holding the network it evaluates; ``test`` and ``predict`` run that network alone.
    """

    num_classes: int
    report_dir: str | None
    network_attribute: str

    def _init_amr(self, num_classes: int, length: int, report_dir: str | None) -> None:
        """What both AMR modules hold besides their networks and recipe: sizes, report folder, metrics."""
        self.num_classes = num_classes
        self.report_dir = report_dir
        self.example_input_array = torch.zeros(1, 2, length)
        self.test_confusion = SNRConfusion(num_classes)

    @property
    def network(self) -> nn.Module:
        """The network being evaluated (the classifier's own, or SKD's student)."""
        return getattr(self, self.network_attribute)

    def _class_names(self) -> list[str] | None:
        datamodule = getattr(self.trainer, "datamodule", None)
        classes = getattr(datamodule, "classes", None)
        return list(classes) if classes is not None and len(classes) == self.num_classes else None

    def _report_dir(self) -> Path:
        if self.report_dir is not None:
            return Path(self.report_dir)
        root = self.trainer.log_dir or self.trainer.default_root_dir
        return Path(root) / "report"

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """Logs ``test/loss`` and counts (SNR, true, predicted) for the report."""
        x, y, snr = unpack_batch(batch, "test")
        if snr is None:
            raise ValueError("test: batches need 'snr' for the per-SNR report; SignalDataModule provides it")
        logits = self.network(x)
        self.log("test/loss", F.cross_entropy(logits, y), batch_size=len(y), sync_dist=True)
        self.test_confusion.update(logits, y, snr)

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        """``logits``, ``pred`` and ``prob`` per example, with ``y`` and ``snr`` when the batch has them."""
        x = batch["x"] if isinstance(batch, dict) else batch
        logits = self.network(x)
        out = {"logits": logits.float(), "pred": logits.argmax(-1), "prob": logits.softmax(-1)}
        if isinstance(batch, dict):
            out.update({key: batch[key] for key in ("y", "snr") if key in batch})
        return out

    def on_test_epoch_end(self) -> None:
        """Log ``test/acc`` and ``test/acc_snr_ge_10db``; rank zero writes the report folder."""
        summary = summarize_confusion(self.test_confusion.compute(), self._class_names())
        self.test_confusion.reset()
        self.log("test/acc", summary["accuracy"] or 0.0, sync_dist=False)
        high = summary[f"accuracy_snr_ge_{HIGH_SNR_DB}db"]
        if high is not None:
            self.log(f"test/acc_snr_ge_{HIGH_SNR_DB}db", high, sync_dist=False)
        self.test_summary = summary
        if self.trainer.is_global_zero:
            paths = write_amr_report(summary, self._report_dir(), self.report_name)
            self.print(f"AMR report: {paths['metrics'].parent}")

    @property
    def report_name(self) -> str:
        return type(self).__name__


class Classifier(AMREvaluation, TrainingRecipe, pl.LightningModule):
    """Trains a registered AMR model with cross-entropy, under the common protocol or the recipe.

    Args:
        model: a name from ``rfml.models.available()`` (``clst``, ``kd_cnn``, ``vtcnn2`` …).
        num_classes: classes of the data (the CLI links it from the DataModule).
        length: samples per frame (the CLI links it from the DataModule).
        model_kwargs: constructor options of the model (widths, ablation switches …).
        optimizer: from parameters to an optimizer; default Adam, lr 1e-3 (the common AMR protocol).
        scheduler: from an optimizer to an LR scheduler, e.g. ReduceLROnPlateau; it monitors ``scheduler_monitor``.
        scheduler_monitor: the metric a plateau scheduler watches.
        augment, label_smoothing, schedule, warmup_epochs, compile: the training recipe, see
            :mod:`rfml.trainers.recipe` (all off by default: the common protocol).
        report_dir: where ``test`` writes its report; default ``<log_dir>/report``. Not saved in checkpoints:
            LightningCLI lets a checkpoint's hyperparameters override the command line, and the folder of a later
            ``rfml test`` must be the one asked for then.
    """

    network_attribute = "net"

    def __init__(
        self,
        model: str = "clst",
        num_classes: int = 11,
        length: int = 128,
        model_kwargs: dict[str, Any] | None = None,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_monitor: str = "val/loss",
        augment: SignalAugment | None = None,
        label_smoothing: float = 0.0,
        schedule: Schedule = "constant",
        warmup_epochs: float = 1.0,
        compile: bool = False,
        report_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "augment", "report_dir"])
        self.net = create(model, num_classes, length, **(model_kwargs or {}))
        self.optimizer = optimizer
        self.val_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self._init_amr(num_classes, length, report_dir)
        self._init_recipe(augment, label_smoothing, schedule, warmup_epochs, compile, scheduler, scheduler_monitor)

    @property
    def report_name(self) -> str:
        return str(self.hparams["model"])

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def configure_optimizers(self) -> Any:
        return self._optimizers_with_schedule((self.optimizer or default_optimizer)(self.parameters()))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y, _ = unpack_batch(batch, "training")
        loss = F.cross_entropy(self(self._augmented(x)), y, label_smoothing=self.label_smoothing)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(y))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y, _ = unpack_batch(batch, "validation")
        logits = self(x)
        self.val_accuracy(logits, y)
        self.log("val/loss", F.cross_entropy(logits, y), prog_bar=True, batch_size=len(y), sync_dist=True)
        self.log("val/acc", self.val_accuracy, prog_bar=True, batch_size=len(y))
