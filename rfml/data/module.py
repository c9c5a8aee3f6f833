"""SignalDataModule: any signal dataset (real file, generated file, on-the-fly) as a LightningDataModule."""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl
import torch

from rfml.data.base import SignalDataset
from rfml.data.ism import ISMInterference
from rfml.data.radioml import RadioML2016, RadioML2018
from rfml.data.sampling import BatchStream, BlockShuffleSampler, EpochLoader
from rfml.data.splits import parse_snrs, parse_split, snr_mask, stratified_split
from rfml.data.synthetic import PRESETS, SyntheticSignals, get_preset, write_dataset
from rfml.data.views import View

SYNTHETIC_PREFIX = "synthetic:"


def dataset_path(dataset: str, data_dir: str = "data") -> str | None:
    """The file a preset name stands for inside ``data_dir``; ``None`` for paths and on-the-fly sets."""
    return os.path.join(data_dir, PRESETS[dataset].file_name) if dataset in PRESETS else None


def open_dataset(
    dataset: str,
    data_dir: str = "data",
    per_key: int | None = None,
    data_seed: int = 0,
    class_order: str = "corrected",
) -> SignalDataset:
    """Open a dataset by preset name, ``"synthetic:<preset>"`` or path.

    - ``rml2016.10a`` / ``rml2016.10b`` / ``rml2018.01a``: the file of that name in ``data_dir``
      (a real download, or one made by ``rfml generate`` / ``SignalDataModule.prepare_data``);
    - ``synthetic:<preset>``: generated on the fly, ``per_key`` examples per (class, SNR);
    - a path: ``*.hdf5``/``*.h5`` is RadioML 2018, a folder or ``data_iq.p`` is the ISM set, any
      other file is a RadioML 2016 pickle.
    """
    if dataset.startswith(SYNTHETIC_PREFIX):
        return SyntheticSignals.from_preset(dataset[len(SYNTHETIC_PREFIX) :], per_key, seed=data_seed)
    path = dataset_path(dataset, data_dir) or dataset
    if not os.path.exists(path):
        hint = (
            f"; run `rfml generate --preset {dataset} --out {path}` or place the real file there"
            if dataset in PRESETS
            else f"; give a file path, a folder with data_iq.p, one of {sorted(PRESETS)} or synthetic:<preset>"
        )
        raise FileNotFoundError(f"{path}: no such dataset file{hint}")
    if os.path.isdir(path) or os.path.basename(path) == "data_iq.p":
        return ISMInterference(path)
    if path.endswith((".hdf5", ".h5")):
        return RadioML2018(path, class_order=class_order)
    return RadioML2016(path)


def shard_rows(rows: torch.Tensor, rank: int, world_size: int, equal: bool) -> torch.Tensor:
    """This process's share of ``rows`` under data parallelism: every ``world_size``-th row from ``rank``.

    Shares are disjoint, so evaluation counts each example once. With ``equal`` (training) every share is cut to
    the same length, so all processes take the same number of steps and none waits on a missing all-reduce.
    """
    share = rows[rank::world_size]
    return share[: rows.numel() // world_size] if equal else share


class SignalDataModule(pl.LightningDataModule):
    """Splits, SNR filter, view and loaders over one signal dataset.

    Args:
        dataset: a preset name (``rml2016.10a``, ``rml2016.10b``, ``rml2018.01a``; read from
            ``data_dir``, generated there by :meth:`prepare_data` when missing),
            ``synthetic:<preset>`` (on the fly, nothing written) or a path; see :func:`open_dataset`.
        data_dir: folder of the preset files.
        split: train:val:test weights, stratified per (class, SNR), e.g. ``"6:2:2"``.
        snrs: SNRs to keep (dB): ``None``/``"all"``, ``10``, ``"0,10,18"`` or ``"-10:18"`` (step 2).
        view: ``iq``, ``amp_phase``, ``fft_iq`` or ``fft_amp_phase``.
        norm: ``none``, ``l1``, ``l2`` (per frame) or ``standardize`` (per channel, fitted on train).
        batch_size: examples per batch.
        num_workers: ``DataLoader`` worker processes (also the writer's processes in prepare_data).
        seed: seed of the split and of the shuffling.
        per_key: examples per (class, SNR) of generated data (default: the real dataset's count).
        data_seed: seed of generated data.
        class_order: RadioML 2018 class order, ``corrected`` or ``shipped`` (see RadioML2018).
        block_rows: rows per shuffled block; default 256 for file-backed data, 1 (a full shuffle)
            for data held in memory or generated.
        window_rows: rows read and shuffled together.
        fit_examples: at most this many training examples fit the ``standardize`` statistics.
        pin_memory: pin batches for faster host-to-GPU copies.
    """

    def __init__(
        self,
        dataset: str = "rml2016.10a",
        data_dir: str = "data",
        split: str = "6:2:2",
        snrs: str | int | list[int] | None = None,
        view: str = "iq",
        norm: str = "none",
        batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        per_key: int | None = None,
        data_seed: int = 0,
        class_order: str = "corrected",
        block_rows: int | None = None,
        window_rows: int = 8192,
        fit_examples: int = 65536,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if dataset.startswith(SYNTHETIC_PREFIX):
            get_preset(dataset[len(SYNTHETIC_PREFIX) :])
        self.fractions = parse_split(split)
        if len(self.fractions) != 3:
            raise ValueError(f"split must give train:val:test weights (three parts), got {split!r}")
        self.keep_snrs = parse_snrs(snrs)
        self.view = View(view, norm)
        if batch_size < 1 or num_workers < 0:
            raise ValueError(f"batch_size must be >= 1 and num_workers >= 0, got {batch_size} and {num_workers}")
        self.data: SignalDataset | None = None
        self.rows: dict[str, torch.Tensor] = {}

    # -- what models need to know before setup --------------------------------------------------

    @property
    def classes(self) -> list[str]:
        name = self.hparams.dataset.removeprefix(SYNTHETIC_PREFIX)
        synthetic = name != self.hparams.dataset
        if name in PRESETS and (synthetic or self.hparams.class_order == "corrected"):
            return list(PRESETS[name].classes)
        return self._dataset().classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def length(self) -> int:
        name = self.hparams.dataset.removeprefix(SYNTHETIC_PREFIX)
        return PRESETS[name].length if name in PRESETS else self._dataset().length

    # -- LightningDataModule ----------------------------------------------------------------------

    def prepare_data(self) -> None:
        path = dataset_path(self.hparams.dataset, self.hparams.data_dir)
        if path is not None and not os.path.exists(path):
            os.makedirs(self.hparams.data_dir, exist_ok=True)
            write_dataset(
                self.hparams.dataset,
                path,
                self.hparams.per_key,
                self.hparams.data_seed,
                workers=max(1, self.hparams.num_workers),
            )

    def _dataset(self) -> SignalDataset:
        if self.data is None:
            self.data = open_dataset(
                self.hparams.dataset,
                self.hparams.data_dir,
                self.hparams.per_key,
                self.hparams.data_seed,
                self.hparams.class_order,
            )
        return self.data

    def setup(self, stage: str | None = None) -> None:
        if self.rows:
            return
        data = self._dataset()
        kept = torch.nonzero(snr_mask(data.snr, self.keep_snrs)).flatten()
        if kept.numel() == 0:
            raise ValueError(f"no examples have an SNR in {self.keep_snrs}; the dataset has {data.snrs}")
        parts = stratified_split(data.y[kept], data.snr[kept], self.fractions, seed=self.hparams.seed)
        self.rows = {name: kept[part] for name, part in zip(("train", "val", "test"), parts, strict=True)}
        if self.view.norm == "standardize" and not self.view.fitted:
            self._fit_view()

    def _fit_view(self) -> None:
        train = self.rows["train"]
        if train.numel() > self.hparams.fit_examples:
            generator = torch.Generator().manual_seed(self.hparams.seed)
            train = train[torch.randperm(train.numel(), generator=generator)[: self.hparams.fit_examples]]
        self.view.fit(self._stream(train, shuffle=False, transform=False))

    def _stream(self, rows: torch.Tensor, shuffle: bool, transform: bool = True) -> BatchStream:
        data = self._dataset()
        block_rows = self.hparams.block_rows or data.read_block_rows
        sampler = BlockShuffleSampler(
            rows, block_rows, self.hparams.window_rows, shuffle=shuffle, seed=self.hparams.seed
        )
        return BatchStream(data, sampler, self.hparams.batch_size, transform=self.view if transform else None)

    def _loader(self, split: str, shuffle: bool) -> EpochLoader:
        if not self.rows:
            raise RuntimeError("call setup() before asking for data loaders")
        rows = self.rows[split]
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            rows = shard_rows(rows, trainer.global_rank, trainer.world_size, equal=split == "train")
        stream = self._stream(rows, shuffle)
        return EpochLoader(stream, num_workers=self.hparams.num_workers, pin_memory=self.hparams.pin_memory)

    def train_dataloader(self) -> EpochLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> EpochLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> EpochLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> EpochLoader:
        return self._loader("test", shuffle=False)

    def state_dict(self) -> dict[str, Any]:
        return {"view": self.view.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "view" in state_dict:
            self.view.load_state_dict(state_dict["view"])

    def __repr__(self) -> str:
        return (
            f"SignalDataModule({self.hparams.dataset!r}, split={self.fractions}, snrs={self.keep_snrs}, "
            f"view={self.view!r}, batch_size={self.hparams.batch_size})"
        )
