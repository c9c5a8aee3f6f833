"""One training of an SNR study: which rows it trains and validates on, the Lightning fit, and what it records.

A run is described by a *spec*, a small JSON dict, and named by the hash of that spec, so the same training asked
for by two experiments (the single-SNR model at 2 dB is also the +2 dB offset model of the 0 dB target) is run once.
:func:`execute` is the task every executor runs: it opens the study's data (once per process), resolves the spec to
dataset rows, fits a :class:`rfml.trainers.Classifier` (or the SNR estimator) with early stopping on the validation
loss, restores the best epoch's weights, tests on the whole test split and returns one JSON record.

Spec fields (``kind == "train"``):

- ``train_snrs``: the SNRs whose training rows it trains on;
- ``holdout``: a target SNR whose training rows lose their Boosting hold-out share (``None``: nothing held out);
- ``size``/``draw``: train on ``size`` rows drawn at random (seed ``draw``) from those rows (``None``: all of them);
- ``val``: ``"split"`` (the validation split at ``val_snrs``) or ``"holdout"`` (the hold-out rows of ``holdout``);
- ``seed``: the seed of the model's initialisation and of the shuffle.

``kind == "estimator"`` trains the learned SNR estimator on every SNR of the training split (raw I/Q input).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
import json
import math
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from ondevice.io import atomic_path
from rfml.data import SignalDataModule
from rfml.data.splits import snr_mask
from rfml.models.registry import get
from rfml.studies.machine import machine_info
from rfml.studies.snr.config import DataConfig, SNRStudyConfig, TrainConfig
from rfml.trainers.callbacks import BestWeights, EpochTimer, WarmEarlyStopping
from rfml.trainers.quiet import QUIET_TRAINER_ARGS, quiet_lightning

_DATA: dict[str, SignalDataModule] = {}


def spec_key(spec: dict[str, Any]) -> str:
    """The name of a training: a hash of its canonical JSON (identical trainings share one)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def train_spec(
    train_snrs: list[int],
    seed: int,
    val: str = "split",
    val_snrs: list[int] | None = None,
    holdout: int | None = None,
    size: int | None = None,
    draw: int | None = None,
) -> dict[str, Any]:
    """A classifier training; see the module docstring for the fields."""
    if val not in ("split", "holdout"):
        raise ValueError(f"val must be 'split' or 'holdout', got {val!r}")
    if val == "holdout" and holdout is None:
        raise ValueError("val='holdout' needs the holdout target SNR")
    return {
        "kind": "train",
        "train_snrs": sorted(int(s) for s in train_snrs),
        "holdout": None if holdout is None else int(holdout),
        "size": None if size is None else int(size),
        "draw": None if draw is None else int(draw),
        "val": val,
        "val_snrs": sorted(int(s) for s in (val_snrs if val_snrs is not None else train_snrs))
        if val == "split"
        else [],
        "seed": int(seed),
    }


def estimator_spec(seed: int) -> dict[str, Any]:
    """The learned SNR estimator, trained on every SNR of the training split."""
    return {"kind": "estimator", "seed": int(seed)}


# -- data --------------------------------------------------------------------------------------------


def study_model_kwargs(model: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` for the study's classifier, with ``init="torch"`` for a model that has an ``init`` switch and is
    not given one: the study's published figures were measured with PyTorch's initialisation, before the AMR
    baselines' defaults moved to the one each trains best with under the AMR recipe (``rfml.models.layers``)."""
    kwargs = copy.deepcopy(kwargs)
    if "init" in inspect.signature(get(model)).parameters:
        kwargs.setdefault("init", "torch")
    return kwargs


def study_data(data: DataConfig, view: str | None = None) -> SignalDataModule:
    """The study's data module, set up (split once, per (class, SNR)); cached per process."""
    values = dataclasses.asdict(data)
    if view is not None:
        values["view"] = view
    cache_key = json.dumps(values, sort_keys=True)
    if cache_key not in _DATA:
        module = SignalDataModule(
            dataset=values["dataset"],
            data_dir=values["data_dir"],
            per_key=values["per_key"],
            split=values["split"],
            view=values["view"],
            # The study's published figures were measured on unscaled frames; it keeps them.
            norm="none",
            batch_size=values["batch_size"],
            data_seed=values["data_seed"],
            seed=values["split_seed"],
        )
        module.prepare_data()
        module.setup("fit")
        _DATA[cache_key] = module
    return _DATA[cache_key]


def rows_at(module: SignalDataModule, split: str, snrs: list[int] | None) -> torch.Tensor:
    """The rows of ``split`` whose SNR is in ``snrs`` (``None``: all), in split order."""
    rows = module.rows[split]
    return rows[snr_mask(module.data.snr[rows], snrs)]


def holdout_rows(
    module: SignalDataModule, target: int, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the training rows at ``target`` into (kept, held out): ``fraction`` of each class held out at random."""
    rows = rows_at(module, "train", [target])
    labels = module.data.y[rows]
    generator = torch.Generator().manual_seed(seed * 1009 + target)
    held = []
    for label in torch.unique(labels):
        group = rows[labels == label]
        order = torch.randperm(group.numel(), generator=generator)
        held.append(group[order[: max(1, round(fraction * group.numel()))]])
    out = torch.cat(held)
    keep = rows[~torch.isin(rows, out)]
    return keep, torch.sort(out).values


def resolve_rows(
    spec: dict[str, Any], config: SNRStudyConfig, module: SignalDataModule
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (train, validation) rows of a ``train`` spec."""
    train = rows_at(module, "train", spec["train_snrs"])
    held = None
    if spec["holdout"] is not None:
        _, held = holdout_rows(module, spec["holdout"], config.boost.holdout, config.seed)
        train = train[~torch.isin(train, held)]
    if spec["size"] is not None:
        if spec["size"] > train.numel():
            raise ValueError(
                f"run asks for {spec['size']} training rows but SNRs {spec['train_snrs']} have {train.numel()}"
            )
        generator = torch.Generator().manual_seed(1_000_003 * (spec["draw"] or 0) + spec["size"])
        train = torch.sort(train[torch.randperm(train.numel(), generator=generator)[: spec["size"]]]).values
    val = held if spec["val"] == "holdout" else rows_at(module, "val", spec["val_snrs"])
    if train.numel() == 0 or val is None or val.numel() == 0:
        raise ValueError(f"run {spec} has no training or no validation rows (SNRs of the data: {module.data.snrs})")
    return train, val


# -- training ----------------------------------------------------------------------------------------


class _Rows(pl.LightningDataModule):
    def __init__(self, source: SignalDataModule, train: torch.Tensor, val: torch.Tensor, seed: int) -> None:
        super().__init__()
        self.source, self.train, self.val, self.seed = source, train, val, seed

    def train_dataloader(self) -> Any:
        return self.source.loader(self.train, shuffle=True, seed=self.seed)

    def val_dataloader(self) -> Any:
        return self.source.loader(self.val, shuffle=False)


def fit(module: pl.LightningModule, data: pl.LightningDataModule, train: TrainConfig) -> dict[str, Any]:
    """Fit with early stopping on ``val/loss`` (patience counted from ``train.min_steps`` steps on); restore the
    best epoch's weights; return the timing summary.

    Times are training seconds only (validation excluded, by :class:`rfml.trainers.EpochTimer`, which also gives
    the median epoch and the best epoch's validation accuracy).
    """
    timer, best = EpochTimer(), BestWeights()
    steps_per_epoch = max(1, len(data.train_dataloader()))
    stopper = WarmEarlyStopping(train.min_steps, monitor="val/loss", patience=train.patience)
    with quiet_lightning():  # the Trainer's own banners (GPU/TPU available) too, once per training otherwise
        trainer = pl.Trainer(
            max_epochs=max(train.max_epochs, 2 * math.ceil(train.min_steps / steps_per_epoch)),
            callbacks=[stopper, timer, best],
            logger=False,
            enable_checkpointing=False,
            num_sanity_val_steps=0,
            accelerator="cpu" if not torch.cuda.is_available() else "auto",
            devices=1,
            **QUIET_TRAINER_ARGS,
        )
        trainer.fit(module, datamodule=data)
    if best.state is not None:
        module.load_state_dict(best.state)
    return timer.summary()


@torch.no_grad()
def predict(model: torch.nn.Module, module: SignalDataModule, rows: torch.Tensor) -> torch.Tensor:
    """Predicted labels (or the model's single output, for the estimator) of ``rows``, in order."""
    model.eval()
    outputs = []
    for batch in module.loader(rows, shuffle=False):
        out = model(batch["x"].to(model.device if hasattr(model, "device") else "cpu")).cpu()
        outputs.append(out.argmax(-1) if out.ndim == 2 and out.shape[-1] > 1 else out.reshape(-1))
    return torch.cat(outputs)


def per_snr_accuracy(pred: torch.Tensor, y: torch.Tensor, snr: torch.Tensor) -> dict[str, float]:
    """Accuracy at each SNR (JSON keys are strings)."""
    return {str(int(s)): float((pred[snr == s] == y[snr == s]).float().mean()) for s in torch.unique(snr)}


def encode_labels(pred: torch.Tensor) -> str:
    """Labels (< 256 classes) as a hex string: two characters per test row, compact in a JSON line."""
    return bytes(pred.to(torch.uint8).tolist()).hex()


def decode_labels(text: str) -> torch.Tensor:
    return torch.tensor(list(bytes.fromhex(text)), dtype=torch.int64)


def _save(state: dict[str, torch.Tensor], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def execute(task: dict[str, Any]) -> dict[str, Any]:
    """Run one training (the executors' task): ``task = {"spec", "config", "models_dir"}`` → one JSON record."""
    from rfml.trainers import Classifier
    from rfml.trainers.snr_regressor import SNRRegressor

    spec, config = task["spec"], SNRStudyConfig.from_dict(task["config"])
    key = spec_key(spec)
    pl.seed_everything(spec["seed"], verbose=False)
    started = time.perf_counter()
    if spec["kind"] == "estimator":
        module = study_data(config.data, view="iq")
        train, val = module.rows["train"], module.rows["val"]
        model: pl.LightningModule = SNRRegressor(
            model=config.estimator.model,
            length=module.length,
            model_kwargs=copy.deepcopy(config.estimator.model_kwargs),
            optimizer=lambda p: torch.optim.Adam(p, lr=config.estimator.lr),
        )
        timing = fit(model, _Rows(module, train, val, spec["seed"]), config.estimator)
    elif spec["kind"] == "train":
        module = study_data(config.data)
        train, val = resolve_rows(spec, config, module)
        model = Classifier(
            model=config.train.model,
            num_classes=module.num_classes,
            length=module.length,
            model_kwargs=study_model_kwargs(config.train.model, config.train.model_kwargs),
            optimizer=lambda p: torch.optim.Adam(p, lr=config.train.lr),
        )
        timing = fit(model, _Rows(module, train, val, spec["seed"]), config.train)
    else:
        raise ValueError(f"unknown run kind {spec.get('kind')!r} in {spec}")
    fit_wall = time.perf_counter() - started
    test = module.rows["test"]
    out = predict(model, module, test)
    y, snr = module.data.y[test], module.data.snr[test]
    record: dict[str, Any] = {
        "key": key,
        "spec": spec,
        "train_examples": int(train.numel()),
        "val_examples": int(val.numel()),
        "epochs": timing["epochs"],
        "best_epoch": timing["best_epoch"],
        "epoch_seconds": timing["epoch_seconds"],
        "median_epoch_seconds": timing["median_epoch_seconds"],
        "seconds_to_best": timing["seconds_to_best"],
        "train_seconds": timing["total_seconds"],
        "wall_seconds": fit_wall,
        "val_loss": timing["val_loss"],
        "val_acc_best": timing["best_val_acc"],
        "machine": machine_info(),
    }
    if spec["kind"] == "estimator":
        from rfml.dsp.snr import estimation_errors

        record["errors"] = {str(k): v for k, v in estimation_errors(out, snr.float()).items()}
    else:
        record["test_accuracy"] = per_snr_accuracy(out, y, snr)
        record["pred"] = encode_labels(out)
    _save(model.state_dict(), Path(task["models_dir"]) / f"{key}.pt")
    return record
