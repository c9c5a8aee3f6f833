"""`DistillationModule`: a LightningModule that trains any student classifier against a frozen teacher on the
hybrid loss, optionally caching the teacher's logits; its checkpoints keep the student alone."""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torchmetrics.functional.classification import multiclass_accuracy

from ondevice.distill.checkpoints import load_weights
from ondevice.distill.hints import FeatureHint, FeatureRecorder, adapter_layer, find_modules, make_adapter
from ondevice.distill.losses import DistillationLoss, classification_ce, flat_logits

DEFAULT_LR = 1e-3


def row_digests(x: Tensor) -> list[bytes]:
    """A 16-byte BLAKE2b digest of each row of ``x`` (dtype and row shape included), the teacher-cache key."""
    rows = x.detach().cpu().contiguous()
    header = f"{rows.dtype}{tuple(rows.shape[1:])}".encode()
    # A fixed-length digest of the header keeps header and row bytes from running into each other.
    base = hashlib.blake2b(hashlib.blake2b(header, digest_size=16).digest(), digest_size=16)
    data = rows.reshape(rows.shape[0], math.prod(rows.shape[1:])).view(torch.uint8).numpy()
    digests = []
    for row in data:  # hashing is per row by nature; each call hashes a whole example in C
        h = base.copy()
        h.update(row)
        digests.append(h.digest())
    return digests


def split_batch(batch: Any) -> tuple[Any, Tensor | None]:
    """(inputs, targets) of a ``{"x", "y", ...}`` dict, an ``(x, y, ...)`` tuple/list or a bare input tensor."""
    if isinstance(batch, Mapping):
        if "x" not in batch:
            raise ValueError(f"a dict batch needs the inputs under 'x' (and targets under 'y'); got keys {list(batch)}")
        return batch["x"], batch.get("y")
    if isinstance(batch, (tuple, list)) and batch:
        return batch[0], batch[1] if len(batch) > 1 else None
    if isinstance(batch, Tensor):
        return batch, None
    raise ValueError(
        f"expected a batch as a dict with 'x'/'y', a tuple/list (x, y) or a tensor, got {type(batch).__name__}"
    )


class DistillationModule(L.LightningModule):
    """Trains ``student`` on the hybrid loss against a frozen ``teacher``; checkpoints keep the student alone.

    Args:
        student: the network being trained; maps inputs to logits [B, C] (or [B, ..., C]).
        teacher: the network distilled from; frozen, always in eval mode, run under ``torch.no_grad``.
        loss: the objective; default ``DistillationLoss()`` (alpha 0.9, T 4, no hints).
        teacher_checkpoint: a state_dict or Lightning checkpoint file loaded into the teacher (see
            :func:`load_weights`).
        optimizer: a callable from parameters to an optimizer (LightningCLI ``OptimizerCallable``); default
            AdamW with lr 1e-3. It receives the student's and the hint adapters' parameters only.
        cache_teacher_logits: keep the teacher's logits for every example seen, keyed by a hash of the example's
            bytes, so the teacher runs once per distinct example. Right for deterministic data (no random
            augmentation); the cache lives in CPU memory and grows with the number of distinct examples.
            Feature hints need the teacher's features each step, so they cannot be combined with the cache.

    Hint adapters are sized by one dry run on an example input: ``example_input_array`` when set, else the first
    batch of the LightningDataModule's training loader, else call :meth:`build_adapters` before fitting.
    """

    # Further constructor arguments of a subclass that are objects, not hyperparameters (the hparams are collected
    # from the subclass's constructor too).
    hparams_ignore: tuple[str, ...] = ()

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        loss: DistillationLoss | None = None,
        teacher_checkpoint: str | None = None,
        optimizer: OptimizerCallable | None = None,
        cache_teacher_logits: bool = False,
    ) -> None:
        super().__init__()
        # The networks, the loss and the optimizer factory are objects, not hyperparameters: keeping them out
        # keeps the checkpoint loadable with torch.load(weights_only=True).
        self.save_hyperparameters(ignore=["student", "teacher", "loss", "optimizer", *self.hparams_ignore])
        self.student = student
        self.teacher = teacher
        self.loss = loss if loss is not None else DistillationLoss()
        if cache_teacher_logits and self.loss.hints:
            raise ValueError(
                "DistillationModule: cache_teacher_logits cannot be combined with feature hints, since the teacher "
                f"must run every step to produce the hinted features {[h.teacher for h in self.loss.hints]}; "
                "drop the hints or set cache_teacher_logits=False"
            )
        find_modules(student, (hint.student for hint in self.loss.hints), "student")
        find_modules(teacher, (hint.teacher for hint in self.loss.hints), "teacher")
        if teacher_checkpoint is not None:
            load_weights(teacher, teacher_checkpoint)
        teacher.requires_grad_(False)
        teacher.eval()
        self.adapters = nn.ModuleDict()
        self.optimizer_factory = optimizer
        self.cache_teacher_logits = cache_teacher_logits
        self.teacher_cache: dict[bytes, Tensor] = {}

    def train(self, mode: bool = True) -> DistillationModule:
        """Set the student (and adapters) to ``mode``; the teacher stays in eval mode whatever ``mode`` is."""
        super().train(mode)
        # Lightning calls .train() at every epoch start; the teacher's dropout and batch-norm must not switch.
        self.teacher.eval()
        return self

    def forward(self, x: Any) -> Tensor:
        """The student's logits."""
        return self.student(x)

    # ---- adapters ----

    def _missing_hints(self) -> list[FeatureHint]:
        return [hint for hint in self.loss.hints if hint.key not in self.adapters]

    @torch.no_grad()
    def build_adapters(self, example_input: Any) -> None:
        """Size the hint adapters by one forward pass of both networks on ``example_input`` (a batch of inputs).

        Adapters that already exist are kept; call this before fitting when neither ``example_input_array``
        nor a LightningDataModule can provide an example.
        """
        missing = self._missing_hints()
        if not missing:
            return
        param = next(self.student.parameters(), None)
        if isinstance(example_input, Tensor):
            example_input = example_input[:2]
            if param is not None:
                example_input = example_input.to(param.device)
        # The dry run must not update the student's batch-norm statistics, so it runs in eval mode.
        modes = {module: module.training for module in self.student.modules()}
        self.student.eval()
        try:
            with (
                FeatureRecorder(self.student, (h.student for h in missing), "student") as s_rec,
                FeatureRecorder(self.teacher, (h.teacher for h in missing), "teacher") as t_rec,
            ):
                self.student(example_input)
                self.teacher(example_input)
        finally:
            for module, mode in modes.items():
                module.training = mode
        for hint in missing:
            self.adapters[hint.key] = make_adapter(hint, s_rec.get(hint.student), t_rec.get(hint.teacher))

    def _example_input(self) -> Any:
        if self.example_input_array is not None:
            return self.example_input_array
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        if datamodule is not None:
            return split_batch(next(iter(datamodule.train_dataloader())))[0]
        return None

    def setup(self, stage: str) -> None:
        """Build the hint adapters before Lightning builds the optimizer (which needs their parameters)."""
        if stage == "fit" and self._missing_hints():
            example = self._example_input()
            # Without an example, resuming still works: on_load_checkpoint rebuilds the adapters from their
            # saved shapes before configure_optimizers; otherwise configure_optimizers says what to do.
            if example is not None:
                self.build_adapters(example)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """The optimizer over the student's and adapters' parameters (never the teacher's)."""
        missing = self._missing_hints()
        if missing:
            raise RuntimeError(
                f"DistillationModule: the adapters of hints {[h.name for h in missing]} are not built; they need one "
                "example input to learn the feature widths before the optimizer exists. Set "
                "`module.example_input_array = x` (a batch of inputs), call `module.build_adapters(x)` before "
                "trainer.fit, or fit with a LightningDataModule"
            )
        params = [p for p in itertools.chain(self.student.parameters(), self.adapters.parameters()) if p.requires_grad]
        if self.optimizer_factory is None:
            return torch.optim.AdamW(params, lr=DEFAULT_LR)
        return self.optimizer_factory(params)

    # ---- steps ----

    def _teacher_logits(self, x: Any) -> tuple[Tensor, float | None]:
        if not self.cache_teacher_logits:
            with torch.no_grad():
                return self.teacher(x), None
        keys = row_digests(x)
        cached = [self.teacher_cache.get(key) for key in keys]
        missing = [i for i, value in enumerate(cached) if value is None]
        if missing:
            # Only the rows never seen run; the teacher is in eval mode, so a row's logits do not depend on the batch.
            rows = x if len(missing) == len(keys) else x[torch.tensor(missing, device=x.device)]
            with torch.no_grad():
                fresh = self.teacher(rows).detach().cpu()
            for i, logits in zip(missing, fresh, strict=True):
                cached[i] = self.teacher_cache[keys[i]] = logits
        return torch.stack(cached).to(x.device), 1.0 - len(missing) / len(keys)

    def _terms(self, x: Any, y: Tensor) -> tuple[dict[str, Tensor], Tensor, float | None]:
        hints = self.loss.hints
        if not hints:
            student_logits = self.student(x)
            teacher_logits, hit_rate = self._teacher_logits(x)
            return self.loss(student_logits, teacher_logits, y), student_logits, hit_rate
        if self._missing_hints():  # validate/test without fit: size the adapters on this batch
            self.build_adapters(x)
        with (
            FeatureRecorder(self.student, (h.student for h in hints), "student") as s_rec,
            FeatureRecorder(self.teacher, (h.teacher for h in hints), "teacher") as t_rec,
        ):
            student_logits = self.student(x)
            with torch.no_grad():
                teacher_logits = self.teacher(x)
        s_features = {h.student: s_rec.get(h.student) for h in hints}
        t_features = {h.teacher: t_rec.get(h.teacher) for h in hints}
        terms = self.loss(student_logits, teacher_logits, y, s_features, t_features, self.adapters)
        return terms, student_logits, None

    def _batch(self, batch: Any, stage: str) -> tuple[Any, Tensor, int]:
        x, y = split_batch(batch)
        if y is None:
            raise ValueError(f"{stage} batches need targets: a dict with 'y' or a tuple (x, y)")
        return x, y, int(y.shape[0]) if y.ndim > 0 else 1

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """The hybrid loss; logs ``train/ce``, ``train/kd``, ``train/hint/...`` and ``train/loss`` (the total)."""
        x, y, batch_size = self._batch(batch, "training")
        terms, _, hit_rate = self._terms(x, y)
        for name, value in terms.items():
            key = "loss" if name == "total" else name
            self.log(f"train/{key}", value, batch_size=batch_size, prog_bar=key == "loss")
        if hit_rate is not None:
            self.log("train/teacher_cache_hit_rate", hit_rate, batch_size=batch_size, on_step=False, on_epoch=True)
        return terms["total"]

    def _evaluate(self, batch: Any, stage: str) -> None:
        x, y, batch_size = self._batch(batch, stage)
        terms, student_logits, hit_rate = self._terms(x, y)
        flat = flat_logits(student_logits, "student logits")
        # Micro accuracy weighted by batch_size averages to the exact accuracy over the epoch.
        acc = multiclass_accuracy(flat.argmax(-1), y.reshape(-1), num_classes=flat.shape[-1], average="micro")
        # The logged loss is plain CE even when training smooths the labels, so runs stay comparable.
        loss = classification_ce(student_logits, y) if self.loss.label_smoothing else terms["ce"]
        self.log(f"{stage}/loss", loss, batch_size=batch_size, prog_bar=True)
        self.log(f"{stage}/acc", acc, batch_size=batch_size, prog_bar=True)
        for name, value in terms.items():
            if name != "ce":
                self.log(f"{stage}/{name}", value, batch_size=batch_size)
        if hit_rate is not None:
            self.log(f"{stage}/teacher_cache_hit_rate", hit_rate, batch_size=batch_size)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Logs ``val/loss`` (the student's CE), ``val/acc``, ``val/kd``, ``val/hint/...`` and ``val/total``."""
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """As :meth:`validation_step`, under ``test/``."""
        self._evaluate(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        """The student's logits."""
        return self.student(split_batch(batch)[0])

    # ---- checkpoints ----

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Drop the teacher's weights: the checkpoint holds the student (and the adapters, to resume)."""
        state = checkpoint["state_dict"]
        for key in [key for key in state if key.startswith("teacher.")]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Put the current teacher's weights back and rebuild missing adapters, so strict loading works."""
        state = checkpoint["state_dict"]
        for key, value in self.teacher.state_dict().items():
            state.setdefault(f"teacher.{key}", value)
        for hint in self._missing_hints():
            weight = state.get(f"adapters.{hint.key}.weight")
            if weight is not None:
                param = next(self.student.parameters(), weight)
                adapter = adapter_layer(weight.ndim, weight.shape[1], weight.shape[0])
                self.adapters[hint.key] = adapter.to(device=param.device, dtype=weight.dtype)
