"""The runs of an ISM study: one :class:`RunSpec` per setting and seed, and the complete ``rfml fit`` config of each."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rfml.studies.ism.config import HEADLINE_SETTINGS, ISMStudyConfig, init_args, parse_setting
from rfml.trainers.quiet import QUIET_TRAINER_ARGS


@dataclass(frozen=True)
class RunSpec:
    """One training run: a setting and a seed."""

    setting: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.setting}/s{self.seed}"

    @property
    def label(self) -> str:
        return f"{self.setting} seed {self.seed}"

    @property
    def folder(self) -> str:
        return f"{self.setting.replace('/', '-')}-s{self.seed}"


def plan_runs(config: ISMStudyConfig) -> list[RunSpec]:
    """The runs of a study in order: headline settings with ``seeds`` seeds, every other with ``sweep_seeds``."""
    names: list[str] = []
    for setting in config.settings:
        expanded = (
            [f"sample/{m}/{r}" for m in config.methods for r in config.rates] if setting == "sample" else [setting]
        )
        names += [name for name in expanded if name not in names]
    return [
        RunSpec(name, seed)
        for name in names
        for seed in range(config.seeds if name in HEADLINE_SETTINGS else config.sweep_seeds)
    ]


def split_counts(per_key: int, split: str) -> list[int]:
    """Examples per (class, SNR) in each part of ``split`` (``rfml.data.splits.stratified_split``'s rounding)."""
    from rfml.data.splits import parse_split

    bounds, total = [], 0.0
    for fraction in parse_split(split):
        total += fraction
        bounds.append(math.floor(per_key * total + 0.5))
    bounds[-1] = per_key
    return [b - a for a, b in zip([0, *bounds[:-1]], bounds, strict=True)]


# Callbacks of the base config that every run replaces with the study's own settings.
_REPLACED_CALLBACKS = ("EarlyStopping", "ModelCheckpoint", "EpochTimer")


def run_yaml(config: ISMStudyConfig, base: dict[str, Any], spec: RunSpec, data: Path, run_dir: Path) -> dict[str, Any]:
    """The complete LightningCLI config of one run (written to ``run_dir/config.yaml``)."""
    cfg = copy.deepcopy(base)
    setting = parse_setting(spec.setting)
    cfg["seed_everything"] = spec.seed
    trainer = cfg.setdefault("trainer", {})
    trainer.update(
        max_epochs=config.max_epochs,
        default_root_dir=str(run_dir),
        logger={"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(run_dir)}},
        **QUIET_TRAINER_ARGS,
    )
    kept = [
        callback
        for callback in trainer.get("callbacks") or []
        if isinstance(callback, dict)
        and str(callback.get("class_path", "")).rsplit(".", 1)[-1] not in _REPLACED_CALLBACKS
    ]
    kept += [
        {
            "class_path": "lightning.pytorch.callbacks.EarlyStopping",
            "init_args": {"monitor": "val/loss", "patience": config.patience},
        },
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {
                "monitor": "val/loss",
                "dirpath": str(run_dir / "checkpoints"),
                "filename": "best",
                "enable_version_counter": False,
                "save_weights_only": True,
            },
        },
        {"class_path": "rfml.trainers.EpochTimer"},
    ]
    trainer["callbacks"] = kept
    model = init_args(cfg["model"])
    model["model"] = config.model
    model["model_kwargs"] = dict(config.model_kwargs) or None
    model["report_dir"] = str(run_dir / "report")
    if config.lr is not None:
        optimizer = model.get("optimizer")
        if isinstance(optimizer, dict):
            optimizer.setdefault("init_args", {})["lr"] = config.lr
        else:
            model["optimizer"] = {"class_path": "torch.optim.Adam", "init_args": {"lr": config.lr}}
    data_args = init_args(cfg["data"])
    for key in ("bands", "selection", "selection_rate"):
        data_args.pop(key, None)
    data_args.update(
        dataset=str(data),
        per_key=None,  # a folder path is read whole
        view=setting["view"],
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        seed=0,  # the split (and the shuffling order, which the module draws from the same seed) stay fixed
    )
    if setting["bands"] is not None:
        data_args["bands"] = [list(band) for band in setting["bands"]]
    if setting["selection"] is not None:
        data_args["selection"] = setting["selection"]
        data_args["selection_rate"] = setting["selection_rate"]
    return cfg
