"""SNRRegressor: a LightningModule that learns to estimate a frame's SNR (dB) from its I/Q samples."""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor
from torchmetrics import MeanAbsoluteError
from torchmetrics.aggregation import CatMetric

from rfml.dsp.snr import estimation_errors, overall_errors
from rfml.models import get
from rfml.trainers.classifier import default_optimizer, unpack_batch

SNRLoss = Literal["l1", "mse", "huber"]
LOSSES = ("l1", "mse", "huber")


class SNRRegressor(pl.LightningModule):
    """Trains a registered model with one output (``snr_cnn`` by default) to regress the SNR in dB of each frame.

    Batches are those of :class:`rfml.data.SignalDataModule`, ``{"x": [B, 2, L], "y": [B], "snr": [B]}``; the
    target is ``snr`` and the class label is ignored. Logs ``train/loss``, ``val/loss`` and ``val/mae`` (dB); on
    ``test`` logs ``test/loss``, ``test/mae`` and ``test/bias`` and keeps per-SNR errors in :attr:`test_errors`.

    Args:
        model: a name from ``rfml.models.available()``; it is built with a single output (the SNR in dB).
        num_classes: the dataset's class count, which the CLI links from the DataModule; a regressor has no
            classes, so it is recorded and not used.
        length: samples per frame (the CLI links it from the DataModule).
        model_kwargs: constructor options of the model.
        optimizer: from parameters to an optimizer; default Adam, lr 1e-3 (as :class:`rfml.trainers.Classifier`).
        loss: ``l1`` (mean absolute error, the figure reported), ``mse`` or ``huber`` (``huber_delta`` dB; squared
            below it, absolute above, so early large errors do not dominate).
        huber_delta: where the Huber loss turns from squared to absolute, in dB.
        scale_db: the estimate is ``scale_db`` times the network's output, so a freshly initialised network, whose
            outputs are of order 1, spans the usual −20…20 dB within a few Adam steps instead of hundreds.

    Attributes:
        test_errors: after ``test``, :func:`rfml.dsp.snr.estimation_errors` of the test frames,
            ``{snr_db: {"mae", "bias", "rmse", "count"}}``.
        test_overall: after ``test``, the same figures over all test frames (:func:`rfml.dsp.snr.overall_errors`).
    """

    def __init__(
        self,
        model: str = "snr_cnn",
        num_classes: int | None = None,
        length: int = 128,
        model_kwargs: dict[str, Any] | None = None,
        optimizer: OptimizerCallable | None = None,
        loss: SNRLoss = "huber",
        huber_delta: float = 1.0,
        scale_db: float = 10.0,
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"SNRRegressor: loss must be one of {LOSSES}, got {loss!r}")
        if huber_delta <= 0:
            raise ValueError(f"SNRRegressor: huber_delta must be > 0 dB, got {huber_delta}")
        if scale_db <= 0:
            raise ValueError(f"SNRRegressor: scale_db must be > 0 dB, got {scale_db}")
        self.save_hyperparameters(ignore=["optimizer"])
        # Built through the registry's class, not ``create``: that one asks for >= 2 classes, a regressor has 1 output.
        self.net = get(model)(num_classes=1, length=length, **(model_kwargs or {}))
        self.optimizer = optimizer
        self.example_input_array = torch.zeros(1, 2, length)
        self.val_mae = MeanAbsoluteError()
        self.test_estimates = CatMetric()
        self.test_truths = CatMetric()
        self.test_errors: dict[int, dict[str, float]] = {}
        self.test_overall: dict[str, float] = {}

    def forward(self, x: Tensor) -> Tensor:
        """Frames ``[B, 2, L]`` → estimated SNR ``[B]`` in dB."""
        out = self.net(x)
        if out.ndim != 2 or out.shape[1] != 1:
            raise ValueError(f"SNRRegressor: model {self.hparams['model']!r} must return [B, 1], got {list(out.shape)}")
        return out[:, 0] * self.hparams["scale_db"]

    def _loss(self, estimate: Tensor, target: Tensor) -> Tensor:
        if self.hparams["loss"] == "l1":
            return F.l1_loss(estimate, target)
        if self.hparams["loss"] == "mse":
            return F.mse_loss(estimate, target)
        return F.huber_loss(estimate, target, delta=self.hparams["huber_delta"])

    def _target(self, batch: Any, stage: str) -> tuple[Tensor, Tensor]:
        x, _, snr = unpack_batch(batch, stage)
        if snr is None:
            raise ValueError(f"{stage}: SNRRegressor learns the SNR, so batches need 'snr' [B] (SignalDataModule's do)")
        return x, snr.to(x.dtype)

    def configure_optimizers(self) -> Any:
        return (self.optimizer or default_optimizer)(self.parameters())

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, snr = self._target(batch, "training")
        loss = self._loss(self(x), snr)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(snr))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, snr = self._target(batch, "validation")
        estimate = self(x)
        self.val_mae(estimate, snr)
        self.log("val/loss", self._loss(estimate, snr), prog_bar=True, batch_size=len(snr), sync_dist=True)
        self.log("val/mae", self.val_mae, prog_bar=True, batch_size=len(snr))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, snr = self._target(batch, "test")
        estimate = self(x)
        self.log("test/loss", self._loss(estimate, snr), batch_size=len(snr), sync_dist=True)
        self.test_estimates.update(estimate)
        self.test_truths.update(snr)

    def on_test_epoch_end(self) -> None:
        """Log ``test/mae`` and ``test/bias`` over all test frames; keep the per-SNR table in ``test_errors``."""
        estimated, true = self.test_estimates.compute(), self.test_truths.compute()
        self.test_estimates.reset()
        self.test_truths.reset()
        self.test_errors = estimation_errors(estimated, true)
        self.test_overall = overall_errors(estimated, true)
        self.log("test/mae", self.test_overall["mae"], sync_dist=False)
        self.log("test/bias", self.test_overall["bias"], sync_dist=False)

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        """``snr_hat`` (dB) per frame, with the true ``snr`` (and ``y``) when the batch has them."""
        x = batch["x"] if isinstance(batch, dict) else batch
        out = {"snr_hat": self(x)}
        if isinstance(batch, dict):
            out.update({key: batch[key] for key in ("y", "snr") if key in batch})
        return out
