"""The LightningCLI behind ``rfml fit | validate | test | predict``: any LightningModule × any LightningDataModule."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import LightningCLI

from ondevice.checkpoint_paths import check_cli_ckpt_path
from ondevice.io import refuse_to_overwrite
from ondevice.quiet import silence_lightning

PREDICTIONS_NAME = "predictions.npz"
OVERWRITE_FLAG = "--overwrite_checkpoints true"


def _epilog() -> str:
    from rfml.models import available

    return (
        "LightningModules (--model): rfml.trainers.Classifier, rfml.trainers.SKD, rfml.trainers.SNRRegressor. "
        f"Registered networks (--model.init_args.model): {', '.join(available())}. "
        f"rfml predict writes {PREDICTIONS_NAME} beside the checkpoint's run folder (or in trainer.default_root_dir)."
    )


def default_predictions_path(ckpt_path: str | None, default_root_dir: str) -> Path:
    """Where ``rfml predict`` writes: the run folder of ``ckpt_path`` (the folder above ``checkpoints/``, or the
    checkpoint's own folder), else the trainer's ``default_root_dir`` (``runs/<config>`` in the shipped configs)."""
    if ckpt_path and ckpt_path not in ("best", "last", "hpc", "registry"):
        folder = Path(ckpt_path).parent
        return (folder.parent if folder.name == "checkpoints" else folder) / PREDICTIONS_NAME
    return Path(default_root_dir) / PREDICTIONS_NAME


class RFMLCLI(LightningCLI):
    """Links the DataModule's ``num_classes`` and ``length`` into the model's, so one config names each once.

    ``fit`` refuses to write over an earlier run's checkpoints (``--overwrite_checkpoints true`` allows it);
    ``predict`` writes ``predictions.npz`` (:class:`rfml.trainers.callbacks.SavePredictions`) unless the config
    names a prediction writer of its own. Every subcommand refuses a ``ckpt_path`` (``--ckpt_path``,
    ``--checkpoint`` or a config's) that is a URL or another remote location, before any class is built
    (:func:`ondevice.checkpoint_paths.check_cli_ckpt_path`): Lightning would fetch it and unpickle it in full.
    """

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.length", "model.init_args.length", apply_on="instantiate")
        parser.add_argument(
            "--overwrite_checkpoints",
            type=bool,
            default=False,
            help="fit: write over the checkpoints an earlier run left in a ModelCheckpoint's dirpath",
        )

    def before_instantiate_classes(self) -> None:
        check_cli_ckpt_path(self)

    def _subcommand_config(self) -> Any:
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_fit(self) -> None:
        config = self._subcommand_config()
        if self.trainer.fast_dev_run or config.get("ckpt_path") or config.get("overwrite_checkpoints"):
            return  # fast_dev_run writes no checkpoint; a resumed fit continues its own run
        folders = [getattr(cb, "dirpath", None) for cb in self.trainer.checkpoint_callbacks]
        try:
            refuse_to_overwrite(folders, "*.ckpt", OVERWRITE_FLAG)
        except FileExistsError as error:
            self.parser.error(f"rfml fit: {error} (or set a new trainer.default_root_dir / dirpath)")

    def before_predict(self) -> None:
        if any(isinstance(cb, BasePredictionWriter) for cb in self.trainer.callbacks):
            return
        from rfml.trainers.callbacks import SavePredictions

        path = default_predictions_path(self._subcommand_config().get("ckpt_path"), self.trainer.default_root_dir)
        self.trainer.callbacks.append(SavePredictions(str(path)))


def lightning_main(args: Sequence[str] | None) -> RFMLCLI:
    """Run ``rfml fit|validate|test|predict ARGS``; returns the LightningCLI (its model, datamodule and trainer)."""
    silence_lightning()
    return RFMLCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={command: {"epilog": _epilog()} for command in ("fit", "validate", "test", "predict")},
        args=None if args is None else list(args),
    )
