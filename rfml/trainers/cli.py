"""The LightningCLI behind ``rfml fit | validate | test | predict``: any LightningModule × any LightningDataModule."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningCLI


class RFMLCLI(LightningCLI):
    """Links the DataModule's ``num_classes`` and ``length`` into the model's, so one config names each once."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.length", "model.init_args.length", apply_on="instantiate")


def lightning_main(args: Sequence[str] | None) -> RFMLCLI:
    """Run ``rfml fit|validate|test|predict ARGS``; returns the LightningCLI (its model, datamodule and trainer)."""
    return RFMLCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=None if args is None else list(args),
    )
