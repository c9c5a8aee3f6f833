"""The AMR training recipe, one set of switches that ``Classifier`` and ``SKD`` apply the same way to every model.

The pieces, each chosen from YAML (``model.init_args``) and each off by default, so that the common AMR protocol
(Adam 1e-3, constant rate, plain cross-entropy, early stopping on ``val/loss``) stays what an empty config gives:

- ``augment``: a :class:`~rfml.trainers.augment.SignalAugment` applied to every training batch (never to
  validation, test or predict batches);
- ``label_smoothing``: ε of the cross-entropy's smoothed targets (validation still logs plain cross-entropy);
- ``schedule: warmup_cosine``: the learning rate rises linearly for ``warmup_epochs``, then follows a half cosine
  to zero at the trainer's last step (``max_epochs``), stepped every optimizer step;
- ``compile``: ``torch.compile`` the trained network in place (inductor; on CPU it needs a C compiler). The
  weights, their names and the checkpoints are those of the eager network.

Checkpoint selection on ``val/acc`` is a trainer callback, set in the same YAML (``rfml/configs/clst.yaml``), as is
weight averaging (Lightning's ``EMAWeightAveraging`` or ``StochasticWeightAveraging``), which the shipped recipe
leaves out (see :class:`RecipeSettings`).
The optimizer (AdamW in the shipped configs) is ``model.init_args.optimizer``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LRSchedulerCallable
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from rfml.trainers.augment import SignalAugment

Schedule = Literal["constant", "warmup_cosine"]
SCHEDULES: tuple[str, ...] = get_args(Schedule)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> LambdaLR:
    """Linear warm-up from ``1/warmup_steps`` of the base rate to the base rate, then a half cosine down to 0 at
    ``total_steps``; one scheduler step per optimizer step."""
    if total_steps < 1 or not 0 <= warmup_steps < total_steps:
        raise ValueError(
            f"warmup_cosine: need 0 <= warmup_steps < total_steps and total_steps >= 1, got {warmup_steps} and "
            f"{total_steps}"
        )

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


class TrainingRecipe:
    """The recipe's state and hooks, mixed into a LightningModule that calls :meth:`_init_recipe` in ``__init__``.

    ``network_attribute`` names the attribute holding the trained network (``net`` or ``student``), the one
    :class:`~rfml.trainers.classifier.AMREvaluation` evaluates.
    """

    network_attribute: str
    augment: SignalAugment | None
    label_smoothing: float

    def _init_recipe(
        self,
        augment: SignalAugment | None,
        label_smoothing: float,
        schedule: Schedule,
        warmup_epochs: float,
        compile: bool,
        scheduler: LRSchedulerCallable | None,
        scheduler_monitor: str,
    ) -> None:
        if augment is not None and not isinstance(augment, SignalAugment):
            raise ValueError(f"augment must be an rfml.trainers.SignalAugment or None, got {type(augment).__name__}")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        if schedule != "constant" and scheduler is not None:
            raise ValueError(
                f"schedule={schedule!r} and a scheduler were both given; choose one (schedule: constant to use the "
                "scheduler)"
            )
        self.augment = augment
        self.label_smoothing = float(label_smoothing)
        self.schedule = schedule
        self.warmup_epochs = float(warmup_epochs)
        self.compile_network = bool(compile)
        self.scheduler = scheduler
        self.scheduler_monitor = scheduler_monitor

    def _augmented(self, x: Tensor) -> Tensor:
        """The training batch's inputs through the augmentation (unchanged without one)."""
        return x if self.augment is None else self.augment(x)

    def _compile_network(self) -> None:
        """Compile the trained network in place once (``nn.Module.compile``: same parameters and state_dict)."""
        net: nn.Module = getattr(self, self.network_attribute)
        if self.compile_network and getattr(net, "_compiled_call_impl", None) is None:
            net.compile()

    def setup(self, stage: str) -> None:
        super().setup(stage)  # type: ignore[misc]
        self._compile_network()

    def _optimizers_with_schedule(self, optimizer: torch.optim.Optimizer) -> Any:
        """``configure_optimizers``' return: the optimizer, with the recipe's schedule or the given scheduler."""
        if self.schedule == "warmup_cosine":
            trainer = self.trainer  # type: ignore[attr-defined]
            total = trainer.estimated_stepping_batches  # also sets up the training loader
            epochs = trainer.max_epochs
            if not math.isfinite(total) or total < 1 or epochs is None or epochs < 1:
                raise ValueError(
                    "schedule=warmup_cosine needs a finite length to decay over: set trainer.max_epochs (>= 1) "
                    f"(got max_epochs={epochs}, {total} estimated steps)"
                )
            total = int(total)
            per_epoch = trainer.num_training_batches / trainer.accumulate_grad_batches
            per_epoch = math.ceil(per_epoch) if math.isfinite(per_epoch) else total / epochs
            warmup = min(total - 1, round(self.warmup_epochs * per_epoch))
            scheduler = warmup_cosine(optimizer, warmup, total)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        if self.scheduler is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler(optimizer), "monitor": self.scheduler_monitor},
        }


@dataclass(frozen=True)
class RecipeSettings:
    """The recipe's values as shipped: every AMR config in ``rfml/configs`` repeats them (a test checks), and
    ``make demo`` and ``benchmarks/amr_accuracy.py`` build their runs from them, so a comparison stays fair.

    Chosen on the validation split (``benchmarks/amr_ablation.py``, table in ``benchmarks/RESULTS.md``).
    """

    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    augment_p: float = 0.5
    label_smoothing: float = 0.1
    # Off: Lightning's EMAWeightAveraging averages BatchNorm's running statistics too, and with them a BN-heavy
    # network (KD-MobileNet) validated at chance after 90 steps at decay 0.99 (benchmarks/RESULTS.md).
    ema_decay: float | None = None
    monitor: str = "val/acc"

    def module_kwargs(self, seed: int = 0) -> dict[str, Any]:
        """The ``Classifier``/``SKD`` arguments of the recipe (optimizer, schedule, augmentation, smoothing)."""
        lr, weight_decay = self.lr, self.weight_decay

        def adamw(params: Any) -> torch.optim.Optimizer:
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

        return {
            "optimizer": adamw,
            "schedule": "warmup_cosine",
            "warmup_epochs": self.warmup_epochs,
            "augment": SignalAugment(p=self.augment_p, seed=seed),
            "label_smoothing": self.label_smoothing,
        }

    def callbacks(self, dirpath: str | Path, filename: str = "best") -> list[Callback]:
        """The checkpoint of the best :attr:`monitor` (first), and an EMA of the weights when :attr:`ema_decay` is
        set (validated and checkpointed averaged)."""
        from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint

        mode = "max" if self.monitor.endswith("acc") else "min"
        checkpoint = ModelCheckpoint(
            dirpath=dirpath, filename=filename, monitor=self.monitor, mode=mode, enable_version_counter=False
        )
        return [checkpoint] if self.ema_decay is None else [checkpoint, EMAWeightAveraging(decay=self.ema_decay)]


RECIPE = RecipeSettings()
