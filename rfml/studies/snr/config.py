"""The YAML configuration of ``rfml snr-study``: data, model, training, and each experiment's settings.

Standard library only (YAML is read on demand), so ``rfml snr-study --help`` stays light.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXPERIMENTS = ("single", "offset", "boost", "bag", "router")


@dataclass
class DataConfig:
    """One signal dataset split once, stratified per (class, SNR); every training draws from its splits.

    The fields are those of :class:`rfml.data.SignalDataModule` that a study needs.
    """

    dataset: str = "rml2016.10b"
    data_dir: str = "data/synthetic"
    per_key: int | None = 100
    split: str = "6:2:2"
    view: str = "iq"
    batch_size: int = 256
    data_seed: int = 0
    split_seed: int = 0


@dataclass
class TrainConfig:
    """One training: a registered model, Adam at ``lr``, early stopping on the validation loss.

    ``min_steps`` keeps early stopping from judging a training before that many optimizer steps (patience counts
    from there): a single-SNR or a Bagging training set can be a few batches, and ``patience`` epochs of it are
    too few steps to learn anything. The epoch cap is raised to twice the epochs that ``min_steps`` takes.
    """

    model: str = "resnet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    lr: float = 1e-3
    max_epochs: int = 30
    patience: int = 5
    min_steps: int = 0


@dataclass
class BoostConfig:
    """SNR Boosting (Wang et al. 2020): greedy forward selection of training SNRs for one target SNR.

    ``holdout`` of the target SNR's training data scores the candidates; a candidate is added while it gains more
    than ``min_gain`` (accuracy, 0.01 = one point). ``window_db`` (a reduction, off by default) limits candidates to
    SNRs within that many dB of the target; ``max_rounds`` caps the number of SNRs chosen.
    """

    holdout: float = 0.2
    min_gain: float = 0.01
    window_db: int | None = None
    max_rounds: int | None = None


@dataclass
class BagConfig:
    """SNR Bagging: ``models`` models on random draws from the target SNR ± ``spread_db``, majority vote, at
    training-set sizes of ``fractions`` of one SNR's training data."""

    models: int = 3
    spread_db: int = 2
    fractions: list[float] = field(default_factory=lambda: [0.02, 0.04, 0.06, 0.10, 0.12, 0.20])


@dataclass
class RouterConfig:
    """SNR-routed inference: upward biases (dB) added to each frame's SNR estimate before rounding to the grid."""

    bias_db: list[float] = field(default_factory=lambda: [0.0, 1.0])


@dataclass
class SNRStudyConfig:
    """Everything one study runs. ``targets`` are the target (test) SNRs of the offset, Boosting and Bagging
    experiments (default: every SNR of the data); the single-SNR experiment trains one model per SNR of the data."""

    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    estimator: TrainConfig = field(default_factory=lambda: TrainConfig(model="snr_cnn", max_epochs=30, patience=5))
    targets: list[int] | None = None
    offsets: list[int] = field(default_factory=lambda: [-4, -2, 0, 2, 4])
    boost: BoostConfig = field(default_factory=BoostConfig)
    bag: BagConfig = field(default_factory=BagConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    seed: int = 0

    # -- I/O -------------------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> SNRStudyConfig:
        """Build from a plain dict (parsed YAML); an unknown key or a wrong type names its dotted path."""
        return _build(cls, values, source, "")

    @classmethod
    def load(cls, path: str | Path) -> SNRStudyConfig:
        import yaml

        text = Path(path).read_text()
        try:
            values = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of study settings, got {type(values).__name__}")
        return cls.from_dict(values, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Hash of the settings every finished training depends on (data, models, training, seed, holdout).

        Targets, offsets, bagging sizes and router biases only add or read trainings, so they may change between
        runs of one study; a change of anything hashed here makes the recorded trainings stale.
        """
        keep = {
            "data": dataclasses.asdict(self.data),
            "train": dataclasses.asdict(self.train),
            "estimator": dataclasses.asdict(self.estimator),
            "seed": self.seed,
            "holdout": self.boost.holdout,
        }
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]

    def validate(self) -> SNRStudyConfig:
        if not 0 < self.boost.holdout < 1:
            raise ValueError(f"boost.holdout must be in (0, 1), got {self.boost.holdout}")
        if self.boost.min_gain < 0:
            raise ValueError(f"boost.min_gain must be >= 0 (0.01 = one point of accuracy), got {self.boost.min_gain}")
        if self.bag.models < 1 or self.bag.spread_db < 0:
            raise ValueError(
                f"bag.models must be >= 1 and bag.spread_db >= 0, got {self.bag.models}, {self.bag.spread_db}"
            )
        bad = [f for f in self.bag.fractions if not 0 < f <= 1]
        if bad:
            raise ValueError(f"bag.fractions must lie in (0, 1] (shares of one SNR's training data), got {bad}")
        for name, train in (("train", self.train), ("estimator", self.estimator)):
            if train.max_epochs < 1 or train.patience < 1 or train.lr <= 0 or train.min_steps < 0:
                raise ValueError(f"{name}: max_epochs and patience must be >= 1, lr > 0, min_steps >= 0, got {train}")
        return self


def _build(cls: type, values: Any, source: str, prefix: str) -> Any:
    if not isinstance(values, dict):
        raise ValueError(f"{source}: {prefix.rstrip('.') or 'the file'} must be a mapping, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {[prefix + k for k in unknown]}; expected one of {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    defaults = cls()
    for name, value in values.items():
        default = getattr(defaults, name)
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, source, f"{prefix}{name}.")
        else:
            kwargs[name] = _check_type(value, default, source, prefix + name)
    config = cls(**kwargs)
    return config.validate() if isinstance(config, SNRStudyConfig) else config


def _check_type(value: Any, default: Any, source: str, key: str) -> Any:
    if value is None or default is None:
        return value
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) and isinstance(default, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ValueError(f"{source}: {key} must be {type(default).__name__}, got {value!r}")
    return value
