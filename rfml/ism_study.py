"""``rfml ism-study``: the band- and sample-selection tables of Zhang et al. (SPAWC 2019) on the ISM interference set.

Zhang, Seyfi, Ju, Ramjee, El Gamal, Eldar, "Deep Learning for Interference Identification: Band, Training SNR, and
Sample Selection" (arXiv 1905.08054), on the 15-class data of Schmidt et al. (``shared/reference/ism.md``).

Settings (one trained model each, per seed):

- ``full``: FFT I/Q over the whole 10 MHz (128 bins, 15 classes);
- ``band4``: only the FFT bins of 2422–2424 and 2429–2431 MHz (52 bins; the 10 classes seen there);
- ``band2``: only 2429–2431 MHz (26 bins, 7 classes);
- ``sample/<method>/<rate>``: the FFT amplitude/phase view reduced to 1/rate of its components by ``uniform``,
  ``random``, ``magnitude`` or ``pca`` selection (fitted on the training split).

Every run goes through the project's LightningCLI path (``rfml fit`` with a per-run YAML written beside the results:
``OUT/runs/<run>/config.yaml``, which ``rfml fit -c`` reruns as is), stops early on the validation split, and tests its
best checkpoint. ``OUT/results.json`` is rewritten after every run, so an interrupted study resumes where it stopped;
``OUT/report.md`` and ``OUT/accuracy_vs_snr*.png`` hold the tables and figures next to the paper's numbers.

Python API: :func:`run_study` (a :class:`StudyConfig`) and :func:`write_report`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import platform
import shutil
import statistics
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ondevice.device.runner import atomic_path, write_json_atomic

RESULTS_FORMAT = "rfml.ism_study"
RESULTS_VERSION = 1
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "rfml"
DEFAULT_CONFIG = "ism_cnn"

BAND_SETTINGS: dict[str, dict[str, Any]] = {
    "full": {"view": "fft_iq", "bands": None, "label": "10 MHz (whole window)"},
    "band4": {
        "view": "fft_iq",
        "bands": [(2422.0, 2424.0), (2429.0, 2431.0)],
        "label": "4 MHz (2422–2424 + 2429–2431)",
    },
    "band2": {"view": "fft_iq", "bands": [(2429.0, 2431.0)], "label": "2 MHz (2429–2431)"},
}
HEADLINE_SETTINGS = ("full", "band4")
METHODS = ("uniform", "random", "magnitude", "pca")
RATES = (2, 4, 8, 16)
SAMPLE_VIEW = "fft_amp_phase"

# The paper's numbers (Zhang et al. 2019; shared/reference/snr_selection.md, section (b)).
PAPER_BAND: dict[str, dict[str, float | None]] = {
    "full": {"accuracy": 0.896, "seconds": 108.0},
    "band4": {"accuracy": 0.861, "seconds": 65.0},
    "band2": {"accuracy": None, "seconds": 41.0},
}
PAPER_TIME_RATIO = 108.0 / 65.0
PAPER_PCA: dict[int, float] = {2: 0.873, 4: 0.858, 8: 0.849, 16: 0.841}
PAPER_TECHNOLOGY_FULL: dict[str, float] = {"BT": 0.940, "WiFi": 0.747, "Zigbee": 0.892}
PAPER_WIFI_BAND2 = 0.53
TECHNOLOGIES: dict[str, str] = {"BT": "Bluetooth", "WiFi": "WiFi", "Zigbee": "Zigbee"}
LOW_SNR_DB = -10  # "low SNR" in the sample-selection table: SNR <= this
HIGH_SNR_DB = 0  # "high SNR": SNR >= this


class StudyConfigError(ValueError):
    """The study in ``OUT/results.json`` was run with another configuration."""


# -- configuration and plan -------------------------------------------------------------------------------


@dataclass
class StudyConfig:
    """What ``rfml ism-study`` runs. Exactly one of ``data`` (a folder with Schmidt's ``data_iq.p`` and
    ``labels.p``) and ``generate_per_key`` (a synthetic set in that layout, generated into ``OUT/data``) is given.

    Fields that change results (model, kwargs, data, epochs, patience, batch size, learning rate, the base config)
    form the study's fingerprint: a changed fingerprint for an existing ``out`` is refused unless ``restart``.
    ``seeds``, ``settings``, ``methods`` and ``rates`` only choose runs, so they may grow between calls.
    """

    out: str
    data: str | None = None
    generate_per_key: int | None = None
    data_seed: int = 0
    model: str = "ism_cnn"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    config: str | None = None  # base YAML; default configs/rfml/<model>.yaml, else ism_cnn.yaml
    seeds: int = 3
    sweep_seeds: int = 1
    settings: Sequence[str] = ("full", "band4", "band2", "sample")
    methods: Sequence[str] = METHODS
    rates: Sequence[int] = RATES
    max_epochs: int = 100
    patience: int = 10
    batch_size: int = 256
    lr: float | None = None  # default: the base config's
    num_workers: int = 0
    keep_checkpoints: bool = False
    restart: bool = False

    def __post_init__(self) -> None:
        if (self.data is None) == (self.generate_per_key is None):
            raise ValueError("give exactly one of data (a folder with data_iq.p) and generate_per_key")
        if self.generate_per_key is not None and self.generate_per_key < 1:
            raise ValueError(f"generate_per_key must be >= 1, got {self.generate_per_key}")
        for name in ("seeds", "sweep_seeds", "max_epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.patience < 0 or self.num_workers < 0:
            raise ValueError("patience and num_workers must be >= 0")
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ValueError(f"unknown sample-selection method(s) {bad}; choose from {list(METHODS)}")
        bad_rates = [r for r in self.rates if int(r) < 2]
        if bad_rates:
            raise ValueError(f"rates are denominators >= 2 (keep 1/rate of the components), got {bad_rates}")
        self.settings = tuple(self.settings)
        self.methods = tuple(self.methods)
        self.rates = tuple(int(r) for r in self.rates)
        for setting in self.settings:
            parse_setting(setting, allow_group=True)


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


def parse_setting(setting: str, allow_group: bool = False) -> dict[str, Any]:
    """What a setting name means for the data: view, bands, selection method and rate.

    ``full``, ``band4``, ``band2`` or ``sample/<method>/<rate>``; with ``allow_group`` the group name ``sample``
    (every method and rate) is accepted too.
    """
    if setting in BAND_SETTINGS:
        spec = BAND_SETTINGS[setting]
        return {"view": spec["view"], "bands": spec["bands"], "selection": None, "selection_rate": 1}
    if allow_group and setting == "sample":
        return {"view": SAMPLE_VIEW, "bands": None, "selection": "*", "selection_rate": 0}
    parts = setting.split("/")
    if len(parts) == 3 and parts[0] == "sample" and parts[1] in METHODS and parts[2].isdigit() and int(parts[2]) >= 2:
        return {"view": SAMPLE_VIEW, "bands": None, "selection": parts[1], "selection_rate": int(parts[2])}
    raise ValueError(
        f"unknown setting {setting!r}; choose from {[*BAND_SETTINGS, 'sample']} or sample/<method>/<rate> "
        f"with method in {list(METHODS)} and rate >= 2"
    )


def plan_runs(config: StudyConfig) -> list[RunSpec]:
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


def base_config_path(config: StudyConfig) -> Path:
    if config.config is not None:
        path = Path(config.config)
    else:
        own = CONFIG_DIR / f"{config.model}.yaml"
        path = own if own.is_file() else CONFIG_DIR / f"{DEFAULT_CONFIG}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config; give the base LightningCLI YAML with --config")
    return path


def load_base_config(config: StudyConfig) -> dict[str, Any]:
    import yaml

    path = base_config_path(config)
    loaded = yaml.safe_load(path.read_text())
    if not isinstance(loaded, dict) or not {"trainer", "model", "data"} <= set(loaded):
        raise ValueError(f"{path}: expected a LightningCLI config with trainer, model and data sections")
    return loaded


def _init_args(section: dict[str, Any]) -> dict[str, Any]:
    return section.setdefault("init_args", {})


def base_lr(base: dict[str, Any]) -> float | None:
    optimizer = _init_args(base["model"]).get("optimizer")
    if isinstance(optimizer, dict):
        lr = optimizer.get("init_args", {}).get("lr")
        return None if lr is None else float(lr)
    return None


def data_source(config: StudyConfig) -> dict[str, Any]:
    if config.data is not None:
        return {"kind": "path", "path": os.path.abspath(config.data)}
    return {"kind": "synthetic", "preset": "ism2017", "per_key": config.generate_per_key, "seed": config.data_seed}


def data_folder(config: StudyConfig) -> Path:
    if config.data is not None:
        return Path(config.data).resolve()
    return Path(config.out).resolve() / "data" / f"ism2017-k{config.generate_per_key}-s{config.data_seed}"


def fingerprint(config: StudyConfig, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """What must match for earlier runs in the same ``out`` to count: everything that changes a run's result."""
    base = load_base_config(config) if base is None else base
    canonical = json.dumps(base, sort_keys=True, default=str).encode()
    lr = config.lr if config.lr is not None else base_lr(base)
    return {
        "model": config.model,
        "model_kwargs": config.model_kwargs,
        "data": data_source(config),
        "split": _init_args(base["data"]).get("split"),
        "max_epochs": config.max_epochs,
        "patience": config.patience,
        "batch_size": config.batch_size,
        "lr": lr,
        "base_config": base_config_path(config).name,
        "base_config_sha256": hashlib.sha256(canonical).hexdigest()[:16],
    }


def run_yaml(config: StudyConfig, base: dict[str, Any], spec: RunSpec, data: Path, run_dir: Path) -> dict[str, Any]:
    """The complete LightningCLI config of one run (written to ``run_dir/config.yaml``)."""
    cfg = copy.deepcopy(base)
    setting = parse_setting(spec.setting)
    cfg["seed_everything"] = spec.seed
    trainer = cfg.setdefault("trainer", {})
    trainer.update(
        max_epochs=config.max_epochs,
        default_root_dir=str(run_dir),
        enable_progress_bar=False,
        enable_model_summary=False,
        logger={"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(run_dir)}},
    )
    callbacks = [c for c in trainer.get("callbacks") or [] if isinstance(c, dict)]
    kept: list[dict[str, Any]] = []
    for callback in callbacks:
        name = str(callback.get("class_path", "")).rsplit(".", 1)[-1]
        if name in ("EarlyStopping", "ModelCheckpoint", "EpochTimer"):
            continue  # replaced below with the study's settings
        kept.append(callback)
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
        {"class_path": "rfml.callbacks.EpochTimer"},
    ]
    trainer["callbacks"] = kept
    model = _init_args(cfg["model"])
    model["model"] = config.model
    model["model_kwargs"] = dict(config.model_kwargs) or None
    model["report_dir"] = str(run_dir / "report")
    if config.lr is not None:
        optimizer = model.get("optimizer")
        if isinstance(optimizer, dict):
            optimizer.setdefault("init_args", {})["lr"] = config.lr
        else:
            model["optimizer"] = {"class_path": "torch.optim.Adam", "init_args": {"lr": config.lr}}
    data_args = _init_args(cfg["data"])
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


# -- one run ------------------------------------------------------------------------------------------------


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


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    try:
        import lightning

        info["lightning"] = lightning.__version__
    except ImportError:  # pragma: no cover - lightning is a dependency
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


@contextlib.contextmanager
def _quiet_lightning(log_path: Path) -> Iterator[None]:
    """Lightning's banners and the per-run prints go to ``log_path``; the study prints one line per run."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as sink, contextlib.redirect_stdout(sink), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=r".*number of training batches.*")
        warnings.filterwarnings("ignore", message=r".*IterableDataset. has .__len__. defined.*")
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
        warnings.filterwarnings("ignore", message=r".*LightningCLI's args parameter is intended.*")
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def train_run(config: StudyConfig, spec: RunSpec, run_yaml_path: Path, run_dir: Path) -> dict[str, Any]:
    """Fit one run through ``rfml fit -c run_yaml_path``, test its best checkpoint and return its record."""
    import gc

    import torch

    from rfml.callbacks import EpochTimer
    from rfml.cli import lightning_main

    with _quiet_lightning(run_dir / "stdout.log"):
        cli = lightning_main(["fit", "-c", str(run_yaml_path)])
        trainer, model, datamodule = cli.trainer, cli.model, cli.datamodule
        timer = next((cb for cb in trainer.callbacks if isinstance(cb, EpochTimer)), None)
        if timer is None:
            raise RuntimeError(f"{run_yaml_path}: the run has no rfml.callbacks.EpochTimer callback")
        trainer.test(model, datamodule=datamodule, ckpt_path="best", verbose=False)
    summary = model.test_summary
    names = list(getattr(datamodule, "classes", None) or [])
    classes = names if len(names) == len(summary["confusion"]) else list(summary["classes"])
    rows = getattr(datamodule, "rows", {}) or {}
    split_sizes = {name: int(part.numel()) for name, part in rows.items()}
    parameters = sum(p.numel() for p in model.network.parameters())
    record = {
        "key": spec.key,
        "setting": spec.setting,
        "seed": spec.seed,
        **{k: v for k, v in parse_setting(spec.setting).items()},
        "classes": classes,
        "num_classes": len(classes),
        "length": int(datamodule.length),
        "parameters": int(parameters),
        "split_sizes": split_sizes,
        "accuracy": summary["accuracy"],
        "snrs_db": list(summary["snrs_db"]),
        "accuracy_by_snr": list(summary["accuracy_by_snr"]),
        "accuracy_by_class": list(summary["accuracy_by_class"]),
        "confusion": summary["confusion"],
        "technology_accuracy": technology_accuracy(summary["confusion"], classes),
        "seconds_per_epoch": _median(timer.epoch_seconds),
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


# -- the study -----------------------------------------------------------------------------------------------


def _empty_results(study: dict[str, Any]) -> dict[str, Any]:
    return {"format": RESULTS_FORMAT, "version": RESULTS_VERSION, "study": study, "meta": {}, "runs": {}}


def load_results(out: Path, study: dict[str, Any], restart: bool) -> dict[str, Any]:
    """The results so far in ``out/results.json``: empty if none (or ``restart``); refused if the study differs."""
    path = out / "results.json"
    if restart or not path.is_file():
        return _empty_results(study)
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise StudyConfigError(f"{path}: not valid JSON ({err}); move it away or pass --restart") from None
    if not isinstance(results, dict) or results.get("format") != RESULTS_FORMAT:
        raise StudyConfigError(f"{path}: not an rfml ism-study results file; pick another --out")
    old = results.get("study", {})
    if old != study:
        changed = sorted(k for k in set(old) | set(study) if old.get(k) != study.get(k))
        lines = "; ".join(f"{k}: {old.get(k)!r} -> {study.get(k)!r}" for k in changed)
        raise StudyConfigError(
            f"{path} holds a study with another configuration ({lines}). Its runs would not be comparable: "
            "pass --restart to discard them, or choose another --out"
        )
    results.setdefault("runs", {})
    results.setdefault("meta", {})
    return results


def split_counts(per_key: int, split: str) -> list[int]:
    """Examples per (class, SNR) in each part of ``split`` (``rfml.data.splits.stratified_split``'s rounding)."""
    from rfml.data.splits import parse_split

    bounds, total = [], 0.0
    for fraction in parse_split(split):
        total += fraction
        bounds.append(math.floor(per_key * total + 0.5))
    bounds[-1] = per_key
    return [b - a for a, b in zip([0, *bounds[:-1]], bounds, strict=True)]


def _ensure_data(config: StudyConfig, split: str, progress: bool) -> Path:
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


def _run_line(record: dict[str, Any]) -> str:
    acc = record.get("accuracy")
    acc_text = "n/a" if acc is None else f"{acc:.3f}"
    best = record.get("best_epoch")
    to_best = record.get("seconds_to_best")
    timing = "" if to_best is None else f", {to_best:.1f} s to best epoch {best}/{record.get('epochs')}"
    return f"acc {acc_text} ({record['num_classes']} classes, {record['length']} inputs){timing}"


def run_study(config: StudyConfig, progress: bool = True) -> dict[str, Any]:
    """Run every planned run not yet in ``OUT/results.json``, rewrite it after each, then write the report."""
    import yaml

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    base = load_base_config(config)
    study = fingerprint(config, base)
    results = load_results(out, study, config.restart)
    if config.restart:
        shutil.rmtree(out / "runs", ignore_errors=True)
    plan = plan_runs(config)
    todo = [spec for spec in plan if spec.key not in results["runs"]]
    results["meta"].update(
        {
            "machine": machine(),
            "data_folder": str(data_folder(config)),
            "config": {k: v for k, v in asdict(config).items() if k not in ("restart",)},
            "plan": [spec.key for spec in plan],
        }
    )
    if progress:
        print(f"ism-study: {len(plan)} runs planned, {len(plan) - len(todo)} done earlier; results in {out}")
    data = _ensure_data(config, str(study["split"]), progress) if todo else data_folder(config)
    write_json_atomic(out / "results.json", results)
    for i, spec in enumerate(plan, 1):
        done = results["runs"].get(spec.key)
        if done is not None:
            if progress:
                print(f"[{i}/{len(plan)}] {spec.label}: done earlier, {_run_line(done)}", flush=True)
            continue
        if progress:
            print(f"[{i}/{len(plan)}] {spec.label} …", flush=True)
        run_dir = (out / "runs" / spec.folder).resolve()
        shutil.rmtree(run_dir, ignore_errors=True)  # a run cut short earlier starts again from scratch
        run_dir.mkdir(parents=True)
        cfg_path = run_dir / "config.yaml"
        with atomic_path(cfg_path) as tmp:
            tmp.write_text(yaml.safe_dump(run_yaml(config, base, spec, data, run_dir), sort_keys=False))
        started = time.time()
        record = json.loads(json.dumps(train_run(config, spec, cfg_path, run_dir)))  # as results.json holds it
        record["run_dir"] = os.path.relpath(run_dir, out.resolve())
        record["wall_seconds"] = time.time() - started
        results["runs"][spec.key] = record
        write_json_atomic(out / "results.json", results)
        if progress:
            print(f"[{i}/{len(plan)}] {spec.label}: {_run_line(record)}", flush=True)
    paths = write_report(results, out)
    if progress:
        print(f"report: {paths['report']}")
    return results


# -- the report ----------------------------------------------------------------------------------------------


def _runs_of(results: dict[str, Any], setting: str) -> list[dict[str, Any]]:
    runs = [r for r in results.get("runs", {}).values() if r.get("setting") == setting]
    return sorted(runs, key=lambda r: r["seed"])


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return math.fsum(kept) / len(kept) if kept else None


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _accuracy_cell(runs: list[dict[str, Any]]) -> str:
    accs = [r["accuracy"] for r in runs if r.get("accuracy") is not None]
    if not accs:
        return "—"
    if len(accs) == 1:
        return f"{accs[0]:.3f} (1 seed)"
    return f"{statistics.fmean(accs):.3f} ± {statistics.stdev(accs):.3f} ({len(accs)} seeds)"


def mean_summary(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Accuracy by SNR averaged over runs (seeds), in the shape ``plot_accuracy_vs_snr`` reads."""
    runs = [r for r in runs if r.get("snrs_db")]
    if not runs:
        return None
    snrs = sorted({s for r in runs for s in r["snrs_db"]})
    by_snr = []
    for snr in snrs:
        by_snr.append(_mean([r["accuracy_by_snr"][r["snrs_db"].index(snr)] for r in runs if snr in r["snrs_db"]]))
    return {"snrs_db": snrs, "accuracy_by_snr": by_snr, "accuracy": _mean([r["accuracy"] for r in runs])}


def _snr_range_accuracy(runs: list[dict[str, Any]], low: bool) -> float | None:
    summary = mean_summary(runs)
    if summary is None:
        return None
    picked = [
        a
        for s, a in zip(summary["snrs_db"], summary["accuracy_by_snr"], strict=True)
        if (s <= LOW_SNR_DB if low else s >= HIGH_SNR_DB)
    ]
    return _mean(picked)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _data_text(results: dict[str, Any]) -> str:
    source = results.get("study", {}).get("data", {})
    folder = results.get("meta", {}).get("data_folder", "?")
    runs = list(results.get("runs", {}).values())
    per_key = None
    for r in runs:
        if r.get("split_sizes") and r.get("snrs_db") and r.get("num_classes"):
            per_key = sum(r["split_sizes"].values()) / (r["num_classes"] * len(r["snrs_db"]))
            break
    if source.get("kind") == "synthetic":
        text = (
            f"synthetic ISM set in Schmidt's layout (`rfml generate --preset ism2017 --per-key "
            f"{source.get('per_key')} --seed {source.get('seed')}`), at `{folder}`: 15 classes × 21 SNRs × "
            f"{source.get('per_key')} vectors of 128 samples. It imitates the published set; it is not the recordings."
        )
    else:
        count = f"{per_key:g} vectors per (class, SNR)" if per_key else "vectors per (class, SNR) as in the files"
        text = f"the user's ISM data at `{source.get('path', folder)}` ({count})."
    return text


def _split_text(results: dict[str, Any]) -> str:
    split = results.get("study", {}).get("split") or "?"
    sizes = next((r.get("split_sizes") for r in results.get("runs", {}).values() if r.get("split_sizes")), None)
    counted = ""
    if sizes:
        counted = (
            f" ({sizes.get('train', 0)} / {sizes.get('val', 0)} / {sizes.get('test', 0)} examples in the first run)"
        )
    return (
        f"per (class, SNR) {split} train : validation : test{counted}; the paper trains on 480 and tests on 235 "
        "per (class, SNR); here 96 of the 480 are held out for early stopping."
    )


def _machine_text(results: dict[str, Any]) -> str:
    m = results.get("meta", {}).get("machine", {})
    devices = sorted({str(r.get("gpu") or r.get("device")) for r in results.get("runs", {}).values()})
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
    return (
        f"{m.get('platform', '?')}, {m.get('cpus', '?')} CPUs ({m.get('processor', '?')}){gpu}; "
        f"torch {m.get('torch', '?')}, Lightning {m.get('lightning', '?')}, Python {m.get('python', '?')}. "
        f"Runs trained on: {', '.join(devices) or '—'}."
    )


def _band_section(results: dict[str, Any]) -> list[str]:
    lines = [
        "## 1. Band selection (FFT I/Q; only the FFT bins of the kept band, classes not seen there dropped)",
        "",
        "| setting | band | classes | bins | accuracy | paper accuracy | s/epoch | epochs to best | s to best | "
        "total s | paper time (s) | parameters |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    means: dict[str, dict[str, float | None]] = {}
    for setting, spec in BAND_SETTINGS.items():
        runs = _runs_of(results, setting)
        paper = PAPER_BAND[setting]
        if not runs:
            lines.append(
                f"| {setting} | {spec['label']} | — | — | not run | {_fmt(paper['accuracy'])} | — | — | — | — | "
                f"{paper['seconds']:.0f} | — |"
            )
            continue
        m = {
            "spe": _mean([r.get("seconds_per_epoch") for r in runs]),
            "best": _mean([r.get("best_epoch") for r in runs]),
            "to_best": _mean([r.get("seconds_to_best") for r in runs]),
            "total": _mean([r.get("total_seconds") for r in runs]),
        }
        means[setting] = m
        lines.append(
            f"| {setting} | {spec['label']} | {runs[0]['num_classes']} | {runs[0]['length']} | "
            f"{_accuracy_cell(runs)} | "
            f"{_fmt(paper['accuracy'])} | {_fmt(m['spe'], 2)} | {_fmt(m['best'], 1)} | {_fmt(m['to_best'], 1)} | "
            f"{_fmt(m['total'], 1)} | {paper['seconds']:.0f} | {runs[0]['parameters']:,} |"
        )
    lines.append("")
    full, band4 = means.get("full"), means.get("band4")
    if full and band4:
        to_best = _ratio(full["to_best"], band4["to_best"])
        per_epoch = _ratio(full["spe"], band4["spe"])
        lines.append(
            f"Training-time ratio full / 4 MHz: **{_fmt(to_best, 2)}** (seconds to best epoch), "
            f"**{_fmt(per_epoch, 2)}** (seconds per epoch); paper: 108 s / 65 s = {PAPER_TIME_RATIO:.2f} "
            "(its times also stop at the best epoch and leave evaluation out)."
        )
    else:
        lines.append(
            "Training-time ratio full / 4 MHz: needs both the full and band4 runs; paper: 108 s / 65 s = 1.66."
        )
    lines += [
        "",
        "Accuracy is the mean over all test examples (= the mean over SNRs: the test split is balanced), mean ± "
        "standard deviation over seeds. Times are training seconds with validation and checkpointing left out "
        "(rfml.callbacks.EpochTimer): s/epoch is the median epoch, averaged over seeds; *s to best* sums the epochs up "
        "to the best validation loss. Paper: 10 MHz 0.896 in 108 s, 4 MHz 0.861 in 65 s, 2 MHz 41 s (WiFi falls to "
        "0.53).",
        "",
    ]
    return lines


def _sample_section(results: dict[str, Any]) -> list[str]:
    runs = [r for r in results.get("runs", {}).values() if str(r.get("setting", "")).startswith("sample/")]
    lines = [
        "## 2. Sample selection (FFT amplitude/phase, 1/rate of the components kept)",
        "",
    ]
    if not runs:
        return [*lines, "Not run.", ""]
    methods = [m for m in METHODS if any(r["selection"] == m for r in runs)]
    rates = sorted({int(r["selection_rate"]) for r in runs})

    def cell_runs(method: str, rate: int) -> list[dict[str, Any]]:
        return _runs_of(results, f"sample/{method}/{rate}")

    header = "| method | " + " | ".join(f"1/{r}" for r in rates) + " |"
    rule = "|---|" + "---:|" * len(rates)
    lines += ["Mean test accuracy:", "", header, rule]
    for method in methods:
        cells = [_fmt(_mean([r["accuracy"] for r in cell_runs(method, rate)])) for rate in rates]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines.append("| PCA (paper) | " + " | ".join(_fmt(PAPER_PCA.get(rate)) for rate in rates) + " |")
    lines += [
        "",
        f"Low SNR (≤ {LOW_SNR_DB} dB) / high SNR (≥ {HIGH_SNR_DB} dB) accuracy; the paper reports that random and "
        "uniform selection hold up at high SNR down to 1/4 but fall at low SNR (no numbers given):",
        "",
        header,
        rule,
    ]
    for method in methods:
        cells = [
            f"{_fmt(_snr_range_accuracy(cell_runs(method, rate), True))} / "
            f"{_fmt(_snr_range_accuracy(cell_runs(method, rate), False))}"
            for rate in rates
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    inputs = {rate: sorted({r["length"] for r in runs if int(r["selection_rate"]) == rate}) for rate in rates}
    lines += [
        "",
        "Input length per channel at each rate: "
        + ", ".join(f"1/{rate}: {'/'.join(str(v) for v in inputs[rate])}" for rate in rates)
        + ". Full-band reference (FFT I/Q, all 128 components): "
        + _fmt(_mean([r["accuracy"] for r in _runs_of(results, "full")]))
        + ".",
        "",
    ]
    return lines


def _technology_section(results: dict[str, Any]) -> list[str]:
    present = [s for s in BAND_SETTINGS if _runs_of(results, s)]
    lines = ["## 3. Accuracy per technology (test examples of each technology; the exact class must be predicted)", ""]
    if not present:
        return [*lines, "No band-selection runs yet.", ""]
    lines += [
        "| technology | " + " | ".join(present) + " | paper (10 MHz) | paper (2 MHz) |",
        "|---|" + "---:|" * len(present) + "---:|---:|",
    ]
    for tech, name in TECHNOLOGIES.items():
        cells = [_fmt(_mean([r["technology_accuracy"].get(tech) for r in _runs_of(results, s)])) for s in present]
        paper2 = _fmt(PAPER_WIFI_BAND2) if tech == "WiFi" else "—"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_fmt(PAPER_TECHNOLOGY_FULL[tech])} | {paper2} |")
    lines += ["", "— where a technology has no class left in the band.", ""]
    return lines


def _runs_section(results: dict[str, Any]) -> list[str]:
    plan = list(results.get("meta", {}).get("plan") or [])
    plan += [key for key in results.get("runs", {}) if key not in plan]  # runs of earlier, wider calls
    lines = [
        "## All runs",
        "",
        "| run | classes | inputs | accuracy | epochs | best epoch | s/epoch | s to best | total s | parameters |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    missing = []
    for key in plan:
        r = results.get("runs", {}).get(key)
        if r is None:
            missing.append(key)
            continue
        lines.append(
            f"| {key} | {r['num_classes']} | {r['length']} | {_fmt(r['accuracy'])} | {r['epochs']} | "
            f"{r['best_epoch']} | {_fmt(r['seconds_per_epoch'], 2)} | {_fmt(r['seconds_to_best'], 1)} | "
            f"{_fmt(r['total_seconds'], 1)} | {r['parameters']:,} |"
        )
    if missing:
        lines += ["", f"Not run yet ({len(missing)}): {', '.join(missing)}. Run the same command again to finish."]
    lines.append("")
    return lines


def _caveats(results: dict[str, Any]) -> list[str]:
    study = results.get("study", {})
    synthetic = study.get("data", {}).get("kind") == "synthetic"
    items = [
        "Early stopping and the choice of the best epoch use the validation split (96 of the paper's 480 training "
        "examples per class and SNR); the test split is touched once, by the best checkpoint. The paper picked its "
        "best epoch on the test split, which flatters its accuracies slightly, and trained on all 480.",
        "Times depend on the machine, the batch pipeline and the stopping rule; the paper does not name its machine. "
        "Compare the ratios (full / 4 MHz) rather than the seconds.",
        "Seeds change the model's initialisation and dropout; the data split and the shuffling order (drawn by "
        "SignalDataModule from its one data seed) are the same in every run, so the spread over seeds understates "
        "the spread over splits.",
        "The sample-selection runs use the FFT amplitude/phase view; the band runs use FFT I/Q as the paper does.",
    ]
    spreads = [
        max(r["epoch_seconds"]) / r["seconds_per_epoch"]
        for r in results.get("runs", {}).values()
        if r.get("epoch_seconds") and r.get("seconds_per_epoch")
    ]
    if spreads and max(spreads) > 2:
        slow = sum(1 for x in spreads if x > 2)
        items.append(
            f"In {slow} of {len(spreads)} runs some epoch took more than twice the run's median epoch (up to "
            f"{max(spreads):.1f}×): the machine was busy or throttled. The median s/epoch is the robust figure; "
            "*s to best* and *total s* include the slow epochs."
        )
    if synthetic:
        items.insert(
            0,
            "The data are synthetic (rfml's imitation of Schmidt's captures: same classes, band plan, SNRs and "
            "frame size). Absolute accuracies are not the paper's; the comparisons inside a column are what carry "
            "over.",
        )
    return ["## Caveats", "", *[f"- {item}" for item in items], ""]


def write_report(results: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """Write ``report.md``, ``accuracy_vs_snr.png`` (band settings) and, with sample-selection runs,
    ``accuracy_vs_snr_rate<r>.png`` (one per rate: the methods side by side) into ``out``. Returns the paths."""
    from rfml.evaluation import plot_accuracy_vs_snr

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    study = results.get("study", {})
    runs = list(results.get("runs", {}).values())
    full_runs = _runs_of(results, "full")
    params = full_runs[0]["parameters"] if full_runs else (runs[0]["parameters"] if runs else None)
    kwargs = study.get("model_kwargs") or {}
    kwargs_text = f" {json.dumps(kwargs)}" if kwargs else " (default widths)"
    lines = [
        "# ISM interference identification: band and sample selection",
        "",
        "Reproduction of the tables of Zhang et al., *Deep Learning for Interference Identification: Band, Training "
        "SNR, and Sample Selection* (SPAWC 2019, arXiv 1905.08054) on the 15-class ISM data of Schmidt et al. "
        "Written by `rfml ism-study`; the numbers are in `results.json`, each run's LightningCLI config in "
        "`runs/<run>/config.yaml` (`rfml fit -c` reruns it).",
        "",
        f"- **Data**: {_data_text(results)}",
        f"- **Split**: {_split_text(results)}",
        f"- **Model**: `{study.get('model', '?')}`{kwargs_text}, "
        + (f"{params:,} parameters on the full band" if params is not None else "parameter count: no run yet")
        + f"; Adam lr {study.get('lr')}, batch {study.get('batch_size')}, at most {study.get('max_epochs')} epochs, "
        f"early stopping on the validation loss (patience {study.get('patience')}).",
        f"- **Machine**: {_machine_text(results)}",
        f"- **Runs**: {len(runs)} of {len(results.get('meta', {}).get('plan') or runs)} planned.",
        "",
    ]
    lines += _band_section(results)
    lines += _sample_section(results)
    lines += _technology_section(results)
    lines += _caveats(results)
    lines += _runs_section(results)

    paths: dict[str, Path] = {"report": out / "report.md", "results": out / "results.json"}
    band_summaries = {}
    for setting, spec in BAND_SETTINGS.items():
        runs_here = _runs_of(results, setting)
        summary = mean_summary(runs_here)
        if summary is not None:
            band_summaries[f"{setting}: {spec['label']}, {runs_here[0]['num_classes']} cl."] = summary
    figures = []
    if band_summaries:
        paths["accuracy_vs_snr"] = out / "accuracy_vs_snr.png"
        title = "band selection: accuracy vs SNR (mean over seeds)"
        plot_accuracy_vs_snr(band_summaries, paths["accuracy_vs_snr"], title)
        figures.append("`accuracy_vs_snr.png` (band selection)")
    rates = sorted({int(r["selection_rate"]) for r in runs if str(r.get("setting", "")).startswith("sample/")})
    for rate in rates:
        summaries = {}
        full = mean_summary(full_runs)
        if full is not None:
            summaries["full band, FFT I/Q"] = full
        for method in METHODS:
            summary = mean_summary(_runs_of(results, f"sample/{method}/{rate}"))
            if summary is not None:
                summaries[f"{method} 1/{rate}"] = summary
        paths[f"accuracy_vs_snr_rate{rate}"] = out / f"accuracy_vs_snr_rate{rate}.png"
        plot_accuracy_vs_snr(summaries, paths[f"accuracy_vs_snr_rate{rate}"], f"sample selection at 1/{rate}")
    if rates:
        names = ", ".join(f"`accuracy_vs_snr_rate{r}.png`" for r in rates)
        figures.append(f"{names} (sample selection, one per rate)")
    if figures:
        lines += ["Figures: " + "; ".join(figures) + ".", ""]
    with atomic_path(paths["report"]) as tmp:
        tmp.write_text("\n".join(lines))
    return paths


# -- command line --------------------------------------------------------------------------------------------


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``rfml ism-study``."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--data", help="folder with Schmidt's data_iq.p and labels.p (the real set, or a generated one)"
    )
    source.add_argument(
        "--generate-per-key", type=int, help="generate a synthetic set with N vectors per (class, SNR) into OUT/data"
    )
    parser.add_argument("--out", required=True, help="study folder: results.json, report.md, figures, runs/")
    parser.add_argument("--model", default="ism_cnn", help="registered model (default ism_cnn)")
    parser.add_argument("--model-kwargs", default="{}", help="JSON object of model options, e.g. '{\"hidden\": 256}'")
    parser.add_argument("--config", default=None, help="base LightningCLI YAML (default configs/rfml/<model>.yaml)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the headline rows full and band4 (default 3)")
    parser.add_argument("--sweep-seeds", type=int, default=1, help="seeds of every other setting (default 1)")
    parser.add_argument(
        "--settings",
        default="full,band4,band2,sample",
        help="comma-separated: full, band4, band2, sample, sample/<method>/<rate> (default full,band4,band2,sample)",
    )
    parser.add_argument("--methods", default=",".join(METHODS), help="sample selection methods (default all four)")
    parser.add_argument("--rates", default="2,4,8,16", help="sample selection rates 1/r (default 2,4,8,16)")
    parser.add_argument("--max-epochs", type=int, default=100, help="epoch cap (default 100)")
    parser.add_argument("--patience", type=int, default=10, help="early-stopping patience in epochs (default 10)")
    parser.add_argument("--batch-size", type=int, default=256, help="batch size (default 256, the paper's)")
    parser.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: the config's)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the generated data (default 0)")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (default 0)")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep each run's best checkpoint")
    parser.add_argument("--restart", action="store_true", help="discard the results in OUT when the config differs")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def config_from_args(args: argparse.Namespace) -> StudyConfig:
    try:
        kwargs = json.loads(args.model_kwargs)
    except json.JSONDecodeError as err:
        raise ValueError(f"--model-kwargs: not JSON ({err})") from None
    if not isinstance(kwargs, dict):
        raise ValueError(f"--model-kwargs: expected a JSON object, got {args.model_kwargs!r}")
    try:
        rates = [int(r) for r in _csv(args.rates)]
    except ValueError:
        raise ValueError(f"--rates: expected comma-separated integers, got {args.rates!r}") from None
    return StudyConfig(
        out=args.out,
        data=args.data,
        generate_per_key=args.generate_per_key,
        data_seed=args.data_seed,
        model=args.model,
        model_kwargs=kwargs,
        config=args.config,
        seeds=args.seeds,
        sweep_seeds=args.sweep_seeds,
        settings=_csv(args.settings),
        methods=_csv(args.methods),
        rates=rates,
        max_epochs=args.max_epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        lr=args.lr,
        num_workers=args.num_workers,
        keep_checkpoints=args.keep_checkpoints,
        restart=args.restart,
    )


def main(args: argparse.Namespace) -> int:
    """``rfml ism-study``: exit status 2 with a one-line error for bad options or a changed study."""
    try:
        config = config_from_args(args)
        run_study(config, progress=not args.quiet)
    except (ValueError, FileNotFoundError) as err:
        print(f"rfml ism-study: error: {err}", file=sys.stderr)
        return 2
    return 0
