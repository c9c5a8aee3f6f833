"""Lightning callbacks of rfml.

- ``EpochTimer``: training seconds per epoch with validation (and checkpointing) left out, with the epoch's
  validation loss and accuracy beside them, so a study can report "seconds to the best epoch" as the interference
  papers do (their times exclude evaluation and stop at the best epoch). The one epoch clock of the project.
- ``BestWeights``: the weights of the epoch with the lowest validation loss, kept in memory (no checkpoint file).
- ``WarmEarlyStopping``: early stopping whose patience counts only from ``min_steps`` optimizer steps on.
- ``EpochLine``: one printed line per epoch (metrics and seconds), readable in a pipe or a log.
- ``SavePredictions``: ``rfml predict``'s default writer: one ``.npz`` with class names, labels, SNRs, logits,
  predicted classes and probabilities.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, EarlyStopping

from ondevice.io import atomic_path


def _as_float(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().cpu().item())
    return float(value)


class EpochTimer(Callback):
    """Seconds of training per epoch, validation excluded, and the validation loss/accuracy of each epoch.

    An epoch's clock runs from ``on_train_epoch_start`` to the first of ``on_validation_epoch_start`` (sanity
    checking is ignored) or ``on_train_epoch_end``; when validation runs mid-epoch (``val_check_interval`` < 1) the
    clock resumes at the next training batch, so every training batch is counted and no validation batch is. On a
    GPU the device is synchronised before each reading, so queued kernels are charged to the right side.

    After each validation the epoch's ``val/loss`` and ``val/acc`` are read from ``trainer.callback_metrics`` (the
    last validation of an epoch wins); an epoch without validation records NaN. ``time/train_epoch_s`` is logged at
    the end of every training epoch.

    Attributes:
        epoch_seconds: training seconds of each finished epoch, in order.
        val_loss, val_acc: the epoch's validation loss and accuracy, aligned with ``epoch_seconds`` (NaN if none).

    The lists are saved in checkpoints (``state_dict``), so a resumed fit continues them.
    """

    def __init__(self, monitor: str = "val/loss", accuracy: str = "val/acc", log_name: str = "time/train_epoch_s"):
        super().__init__()
        self.monitor = monitor
        self.accuracy = accuracy
        self.log_name = log_name
        self.epoch_seconds: list[float] = []
        self.val_loss: list[float] = []
        self.val_acc: list[float] = []
        self._started: float | None = None
        self._elapsed = 0.0
        self._in_epoch = False
        self._carried: float | None = None  # seconds of an unfinished epoch, from a checkpoint

    # -- the clock ------------------------------------------------------------------------------------

    # Seconds from an arbitrary origin. A class attribute, so a test can put a counter in its place and check the
    # bookkeeping exactly instead of against a busy machine's wall clock.
    clock = staticmethod(time.perf_counter)

    def _now(self, pl_module: pl.LightningModule) -> float:
        device = getattr(pl_module, "device", None)
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        return self.clock()

    def _pause(self, pl_module: pl.LightningModule) -> None:
        if self._started is not None:
            self._elapsed += self._now(pl_module) - self._started
            self._started = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A fit resumed from a checkpoint written inside an epoch (e.g. on validation end) replays that epoch's
        # remainder: its seconds before the checkpoint are carried over.
        self._elapsed = self._carried or 0.0
        self._carried = None
        self._in_epoch = True
        self._started = self._now(pl_module)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        if self._started is None:  # training resumes after a mid-epoch validation
            self._started = self._now(pl_module)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._pause(pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":  # not a stand-alone `validate` either
            return
        metrics = trainer.callback_metrics
        loss = _as_float(metrics[self.monitor]) if self.monitor in metrics else math.nan
        acc = _as_float(metrics[self.accuracy]) if self.accuracy in metrics else math.nan
        # The epoch being validated is still running: its training epoch ends after validation.
        self._record(len(self.epoch_seconds), loss, acc)

    def _record(self, epoch: int, loss: float, acc: float) -> None:
        while len(self.val_loss) < epoch:
            self.val_loss.append(math.nan)
            self.val_acc.append(math.nan)
        if len(self.val_loss) == epoch:
            self.val_loss.append(loss)
            self.val_acc.append(acc)
        else:  # validated again in the same epoch: the last one stands
            self.val_loss[epoch] = loss
            self.val_acc[epoch] = acc

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pause(pl_module)
        seconds = self._elapsed
        self._in_epoch = False
        self._carried = None
        self.epoch_seconds.append(seconds)
        if len(self.val_loss) < len(self.epoch_seconds):
            self._record(len(self.epoch_seconds) - 1, math.nan, math.nan)
        pl_module.log(self.log_name, seconds, on_step=False, on_epoch=True)

    # -- what a study reads ---------------------------------------------------------------------------

    @property
    def epochs(self) -> int:
        """Training epochs finished."""
        return len(self.epoch_seconds)

    @property
    def best_epoch(self) -> int | None:
        """1-based epoch of the lowest validation loss (the first, on ties); ``None`` before any validation."""
        scored = [(loss, i) for i, loss in enumerate(self.val_loss[: self.epochs]) if not math.isnan(loss)]
        return min(scored)[1] + 1 if scored else None

    @property
    def seconds_to_best(self) -> float | None:
        """Training seconds up to and including the best epoch."""
        best = self.best_epoch
        return None if best is None else math.fsum(self.epoch_seconds[:best])

    @property
    def total_seconds(self) -> float:
        """Training seconds of all finished epochs."""
        return math.fsum(self.epoch_seconds)

    @property
    def median_epoch_seconds(self) -> float | None:
        """The median epoch's training seconds (robust to an epoch slowed by a busy machine); ``None`` before any."""
        return statistics.median(self.epoch_seconds) if self.epoch_seconds else None

    @property
    def best_val_acc(self) -> float | None:
        """The validation accuracy of the best epoch (:attr:`best_epoch`); ``None`` before any validation."""
        best = self.best_epoch
        return None if best is None else self.val_acc[best - 1]

    def summary(self) -> dict[str, Any]:
        """The figures above as one JSON-ready dict."""
        return {
            "epoch_seconds": list(self.epoch_seconds),
            "val_loss": list(self.val_loss),
            "val_acc": list(self.val_acc),
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "seconds_to_best": self.seconds_to_best,
            "total_seconds": self.total_seconds,
            "median_epoch_seconds": self.median_epoch_seconds,
            "best_val_acc": self.best_val_acc,
        }

    # -- checkpoints ----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "epoch_seconds": list(self.epoch_seconds),
            "val_loss": list(self.val_loss),
            "val_acc": list(self.val_acc),
        }
        if self._in_epoch:  # written inside an epoch: a resumed fit finishes this epoch and adds these seconds
            running = 0.0 if self._started is None else self.clock() - self._started
            state["epoch_in_progress_seconds"] = self._elapsed + running
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epoch_seconds = [float(s) for s in state_dict.get("epoch_seconds", [])]
        self.val_loss = [float(s) for s in state_dict.get("val_loss", [])]
        self.val_acc = [float(s) for s in state_dict.get("val_acc", [])]
        carried = state_dict.get("epoch_in_progress_seconds")
        self._carried = None if carried is None else float(carried)
        self._elapsed = self._carried or 0.0  # in case the resumed epoch does not start again
        self._started = None
        self._in_epoch = False


class BestWeights(Callback):
    """Keeps a copy of the weights of the epoch with the lowest ``monitor`` (sanity checks ignored), in memory.

    After the fit, ``pl_module.load_state_dict(callback.state)`` restores the best epoch without a checkpoint file
    (a study's hundreds of small trainings would otherwise each write and read one).
    """

    def __init__(self, monitor: str = "val/loss") -> None:
        self.monitor = monitor
        self.best = math.inf
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        if value < self.best:
            self.best = value
            self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


class WarmEarlyStopping(EarlyStopping):
    """Early stopping whose patience starts counting once ``min_steps`` optimizer steps are done.

    Lightning's ``Trainer(min_steps=…)`` only defers a stop: a stop signalled early ends the fit the moment
    ``min_steps`` is reached, even when the validation loss is still falling. Here the validations before
    ``min_steps`` are not judged at all, so a small training set gets ``min_steps`` steps and then ``patience``.
    """

    def __init__(self, min_steps: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.min_steps = min_steps

    def _run_early_stopping_check(self, trainer: pl.Trainer) -> None:
        if trainer.global_step >= self.min_steps:
            super()._run_early_stopping_check(trainer)


class EpochLine(Callback):
    """One flushed line per epoch: ``label epoch 3/8  train/loss 1.234  val/loss 1.100  val/acc 55.1 %  12 s``.

    For logs and pipes, where a progress bar's carriage returns show nothing until the end; the line is printed by
    rank zero after each epoch's validation (or training, without validation).
    """

    def __init__(self, label: str = "", metrics: tuple[str, ...] = ("train/loss", "val/loss", "val/acc")) -> None:
        super().__init__()
        self.label = label
        self.metrics = metrics
        self._started = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        parts = [f"{self.label} epoch {trainer.current_epoch + 1}/{trainer.max_epochs}".strip()]
        for name in self.metrics:
            value = trainer.callback_metrics.get(name)
            if value is not None:
                value = _as_float(value)
                parts.append(f"{name} {100 * value:.1f} %" if name.endswith("acc") else f"{name} {value:.3f}")
        parts.append(f"{time.perf_counter() - self._started:.0f} s")
        print("  ".join(parts), flush=True)


class SavePredictions(BasePredictionWriter):
    """Writes a predict run to one ``.npz``, atomically, and prints its path.

    The arrays are those the module's ``predict_step`` returns, concatenated over batches: for rfml's AMR modules
    (``Classifier``, ``SKD``) ``logits`` [N, C] (float32), ``prob`` [N, C], ``pred`` [N] (class index), and ``y``
    (labels) and ``snr`` [N] when the data has them. With ``logits``, ``class_names`` [C] (the DataModule's
    ``classes``, or ``class_0 …`` when it has none of the right length) and ``pred_class`` [N] (each prediction's
    name) are added. Load with ``np.load(path)`` (no pickle needed).
    """

    def __init__(self, output: str = "predictions.npz") -> None:
        super().__init__(write_interval="epoch")
        self.output = output

    def write_on_epoch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any] | None,
    ) -> None:
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        if not batches:
            raise ValueError("SavePredictions: the predict loop produced no batches")
        arrays = {key: torch.cat([b[key] for b in batches]).cpu().numpy() for key in batches[0]}
        said = ""
        if "logits" in arrays:
            num_classes = arrays["logits"].shape[1]
            classes = list(getattr(trainer.datamodule, "classes", None) or [])
            names = np.array(classes if len(classes) == num_classes else [f"class_{i}" for i in range(num_classes)])
            arrays["class_names"] = names
            arrays["pred_class"] = names[arrays.setdefault("pred", arrays["logits"].argmax(-1))]
            said = f", {num_classes} classes"
        path = Path(self.output)
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        count = len(next(iter(arrays.values())))
        pl_module.print(f"predictions: {path} ({count} examples{said})")


# The writer a config names as rfml.trainers.PredictionWriter (its earlier name, when it wrote pred/prob/y/snr only).
PredictionWriter = SavePredictions
