"""One run of an ISM study: ``rfml fit`` on the run's config, the test of its best checkpoint, and its record."""

from __future__ import annotations

import gc
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rfml.studies.ism.config import TECHNOLOGIES, ISMStudyConfig, data_folder, parse_setting
from rfml.studies.ism.plan import RunSpec, split_counts


def technology_of(class_name: str) -> str:
    """``BT-2422`` → ``BT``: the class name's prefix."""
    return class_name.split("-", 1)[0]


def technology_accuracy(confusion: Sequence[Sequence[int]], classes: Sequence[str]) -> dict[str, float | None]:
    """Accuracy over the test examples of each technology: correct / total over the rows of its classes.

    A Bluetooth example counts as correct only when its own class (channel) is predicted. Technologies with no
    class among ``classes`` get ``None``.
    """
    if len(confusion) != len(classes):
        raise ValueError(f"{len(classes)} class names for a {len(confusion)}-row confusion matrix")
    out: dict[str, float | None] = {}
    for tech in TECHNOLOGIES:
        rows = [i for i, name in enumerate(classes) if technology_of(name) == tech]
        total = sum(int(sum(confusion[i])) for i in rows)
        out[tech] = sum(int(confusion[i][i]) for i in rows) / total if total else None
    return out


def train_run(config: ISMStudyConfig, spec: RunSpec, run_yaml_path: Path, run_dir: Path) -> dict[str, Any]:
    """Fit one run through ``rfml fit -c run_yaml_path``, test its best checkpoint and return its record."""
    import torch

    from rfml.trainers.callbacks import EpochTimer
    from rfml.trainers.cli import lightning_main
    from rfml.trainers.quiet import quiet_lightning

    with quiet_lightning(run_dir / "stdout.log"):
        cli = lightning_main(["fit", "-c", str(run_yaml_path)])
        trainer, model, datamodule = cli.trainer, cli.model, cli.datamodule
        timer = next((cb for cb in trainer.callbacks if isinstance(cb, EpochTimer)), None)
        if timer is None:
            raise RuntimeError(f"{run_yaml_path}: the run has no rfml.trainers.EpochTimer callback")
        trainer.test(model, datamodule=datamodule, ckpt_path="best", verbose=False)
    summary = model.test_summary
    names = list(getattr(datamodule, "classes", None) or [])
    classes = names if len(names) == len(summary["confusion"]) else list(summary["classes"])
    rows = getattr(datamodule, "rows", {}) or {}
    record = {
        "key": spec.key,
        "setting": spec.setting,
        "seed": spec.seed,
        **parse_setting(spec.setting),
        "classes": classes,
        "num_classes": len(classes),
        "length": int(datamodule.length),
        "parameters": int(sum(p.numel() for p in model.network.parameters())),
        "split_sizes": {name: int(part.numel()) for name, part in rows.items()},
        "accuracy": summary["accuracy"],
        "snrs_db": list(summary["snrs_db"]),
        "accuracy_by_snr": list(summary["accuracy_by_snr"]),
        "accuracy_by_class": list(summary["accuracy_by_class"]),
        "confusion": summary["confusion"],
        "technology_accuracy": technology_accuracy(summary["confusion"], classes),
        "seconds_per_epoch": timer.median_epoch_seconds,
        "epoch_seconds": list(timer.epoch_seconds),
        "val_loss": list(timer.val_loss),
        "epochs": timer.epochs,
        "best_epoch": timer.best_epoch,
        "seconds_to_best": timer.seconds_to_best,
        "total_seconds": timer.total_seconds,
        "device": str(model.device),
        "gpu": torch.cuda.get_device_name(model.device) if model.device.type == "cuda" else None,
    }
    del cli, trainer, model, datamodule
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if not config.keep_checkpoints:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return record


def ensure_data(config: ISMStudyConfig, split: str, progress: bool) -> Path:
    """The study's data folder: the user's (checked to exist), or the synthetic set, generated on first use."""
    folder = data_folder(config)
    if config.generate_per_key is not None:
        counts = split_counts(config.generate_per_key, split)
        if min(counts) < 1:
            raise ValueError(
                f"--generate-per-key {config.generate_per_key} with split {split} gives {counts} examples per "
                "(class, SNR) for train:val:test; every part needs at least one (try 6 or more)"
            )
    if config.data is not None:
        if not folder.exists():
            raise FileNotFoundError(f"{folder}: no such data folder (it should hold data_iq.p and labels.p)")
        return folder
    if not (folder / "data_iq.p").is_file() or not (folder / "labels.p").is_file():
        from rfml.data.synthetic import write_dataset

        if progress:
            print(f"generating the synthetic ISM set ({config.generate_per_key} per class and SNR) in {folder}")
        folder.mkdir(parents=True, exist_ok=True)
        write_dataset("ism2017", folder, per_key=config.generate_per_key, seed=config.data_seed, progress=progress)
    return folder
