"""What ``rfml ism-study`` runs: :class:`ISMStudyConfig`, the settings it names, and the base ``rfml fit`` config.

Standard library only (YAML is read on demand), so ``rfml ism-study --help`` stays light.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

DEFAULT_MODEL = "ism_cnn"

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
TECHNOLOGIES: dict[str, str] = {"BT": "Bluetooth", "WiFi": "WiFi", "Zigbee": "Zigbee"}


@dataclass
class ISMStudyConfig:
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
    model: str = DEFAULT_MODEL
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    config: str | None = None  # base YAML; default the shipped rfml/configs/<model>.yaml, else ism_cnn.yaml
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


def base_config_path(config: ISMStudyConfig) -> Path:
    """The base LightningCLI YAML: ``config.config`` (a file, or a shipped config's name), else the package's own
    ``configs/<model>.yaml`` (found through ``importlib.resources``, so an installed package finds it too), else
    ``configs/ism_cnn.yaml``."""
    from ondevice.command_line import resolve_config, shipped_configs

    if config.config is not None:
        path = Path(resolve_config(config.config, "rfml"))
    else:
        shipped = shipped_configs("rfml")
        path = shipped.get(config.model, shipped[DEFAULT_MODEL])
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config; give the base LightningCLI YAML with --config")
    return path


def load_base_config(config: ISMStudyConfig) -> dict[str, Any]:
    import yaml

    path = base_config_path(config)
    loaded = yaml.safe_load(path.read_text())
    if not isinstance(loaded, dict) or not {"trainer", "model", "data"} <= set(loaded):
        raise ValueError(f"{path}: expected a LightningCLI config with trainer, model and data sections")
    return loaded


def init_args(section: dict[str, Any]) -> dict[str, Any]:
    """The ``init_args`` of a ``class_path`` section of a LightningCLI config (created empty if absent)."""
    return section.setdefault("init_args", {})


def base_lr(base: dict[str, Any]) -> float | None:
    optimizer = init_args(base["model"]).get("optimizer")
    if isinstance(optimizer, dict):
        lr = optimizer.get("init_args", {}).get("lr")
        return None if lr is None else float(lr)
    return None


def data_source(config: ISMStudyConfig) -> dict[str, Any]:
    if config.data is not None:
        return {"kind": "path", "path": os.path.abspath(config.data)}
    return {"kind": "synthetic", "preset": "ism2017", "per_key": config.generate_per_key, "seed": config.data_seed}


def data_folder(config: ISMStudyConfig) -> Path:
    if config.data is not None:
        return Path(config.data).resolve()
    return Path(config.out).resolve() / "data" / f"ism2017-k{config.generate_per_key}-s{config.data_seed}"


def fingerprint(config: ISMStudyConfig, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """What must match for earlier runs in the same ``out`` to count: everything that changes a run's result."""
    base = load_base_config(config) if base is None else base
    canonical = json.dumps(base, sort_keys=True, default=str).encode()
    lr = config.lr if config.lr is not None else base_lr(base)
    return {
        "model": config.model,
        "model_kwargs": config.model_kwargs,
        "data": data_source(config),
        "split": init_args(base["data"]).get("split"),
        "max_epochs": config.max_epochs,
        "patience": config.patience,
        "batch_size": config.batch_size,
        "lr": lr,
        "base_config": base_config_path(config).name,
        "base_config_sha256": hashlib.sha256(canonical).hexdigest()[:16],
    }
