"""SignalDataModule: any signal dataset (real file, generated file, on-the-fly) as a LightningDataModule."""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl
import torch

from rfml.data.base import ClassSubset, SignalDataset
from rfml.data.ism import ISMInterference
from rfml.data.radioml import RadioML2016, RadioML2018
from rfml.data.sampling import BatchStream, BlockShuffleSampler, EpochLoader
from rfml.data.selection import BandSelect, Pipeline, SampleSelect, visible_classes
from rfml.data.splits import parse_snrs, parse_split, snr_mask, stratified_split
from rfml.data.synthetic import PRESETS, SyntheticSignals, get_preset, write_dataset
from rfml.data.views import View
from rfml.dsp.ism import ISM_CLASSES

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
        norm: ``rms`` (default: each I/Q frame at unit mean power, before the view; why: :class:`View`), ``none``,
            ``l1``, ``l2`` (per viewed frame) or ``standardize`` (per channel, fitted on train).
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
        bands: band selection (ISM data, an FFT view): keep only the FFT bins whose centre lies in these
            ``(low, high)`` MHz ranges, e.g. ``[[2422, 2424], [2429, 2431]]``; classes with no energy there are
            dropped and the rest renumbered in order (``classes`` lists them).
        selection: sample selection on the ``fft_amp_phase`` view: ``uniform``, ``random``, ``magnitude`` or
            ``pca`` (``magnitude`` and ``pca`` are fitted on the training split only).
        selection_rate: keep 1/``selection_rate`` of the frequency components (2, 4, 8, 16 …).
    """

    def __init__(
        self,
        dataset: str = "rml2016.10a",
        data_dir: str = "data",
        split: str = "6:2:2",
        snrs: str | int | list[int] | None = None,
        view: str = "iq",
        norm: str = "rms",
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
        bands: list[tuple[float, float]] | None = None,
        selection: str | None = None,
        selection_rate: int = 1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if bands is not None and view not in ("fft_iq", "fft_amp_phase"):
            raise ValueError(f"bands select FFT bins, so view must be fft_iq or fft_amp_phase, got view={view!r}")
        if selection is not None and view != "fft_amp_phase":
            raise ValueError(
                f"selection picks frequency components of the amplitude/phase spectrum, so view must be "
                f"fft_amp_phase, got view={view!r}"
            )
        if selection is None and selection_rate != 1:
            raise ValueError(
                f"selection_rate={selection_rate} needs a selection method (uniform, random, magnitude, pca)"
            )
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
        self.band: BandSelect | None = None
        self.selection: SampleSelect | None = None
        self._steps_built = False

    # -- what models need to know before setup --------------------------------------------------

    def _all_classes(self) -> list[str]:
        name = self.hparams.dataset.removeprefix(SYNTHETIC_PREFIX)
        synthetic = name != self.hparams.dataset
        if name in PRESETS and (synthetic or self.hparams.class_order == "corrected"):
            return list(PRESETS[name].classes)
        return self._dataset().classes

    def _kept_classes(self) -> list[int]:
        """Indices (in the dataset's class list) of the classes that band selection keeps: all without bands."""
        names = self._all_classes()
        if self.hparams.bands is None:
            return list(range(len(names)))
        known = {c.name: c.range_mhz for c in ISM_CLASSES}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(
                f"bands: band selection needs each class's frequency range, known for the ISM classes only; "
                f"{self.hparams.dataset!r} has classes {unknown}"
            )
        kept = visible_classes(self.hparams.bands, [known[n] for n in names])
        if len(kept) < 2:
            raise ValueError(f"bands {self.hparams.bands} leave {len(kept)} class(es) with energy in them; need >= 2")
        return kept

    @property
    def classes(self) -> list[str]:
        """Class names, index = label; with ``bands``, only the classes with energy in the kept band."""
        names = self._all_classes()
        return [names[k] for k in self._kept_classes()]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def frame_length(self) -> int:
        """Complex samples per frame as stored (before band or sample selection)."""
        name = self.hparams.dataset.removeprefix(SYNTHETIC_PREFIX)
        return PRESETS[name].length if name in PRESETS else self._dataset().length

    @property
    def length(self) -> int:
        """Width of the model's input: the frame length, narrowed by band and sample selection."""
        self._build_steps()
        if self.selection is not None:
            return self.selection.output_length
        return self.band.output_length if self.band is not None else self.frame_length

    def _build_steps(self) -> None:
        if self._steps_built:
            return
        width = self.frame_length
        if self.hparams.bands is not None:
            self.band = BandSelect([tuple(b) for b in self.hparams.bands], length=width)
            width = self.band.output_length
        if self.hparams.selection is not None:
            self.selection = SampleSelect(
                self.hparams.selection, self.hparams.selection_rate, length=width, seed=self.hparams.seed
            )
        self._steps_built = True

    @property
    def transform(self) -> Pipeline:
        """View, then band selection, then sample selection: what every batch goes through."""
        self._build_steps()
        return Pipeline(*(step for step in (self.view, self.band, self.selection) if step is not None))

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
            if self.hparams.bands is not None:
                self.data = ClassSubset(self.data, self._kept_classes())
        return self.data

    def setup(self, stage: str | None = None) -> None:
        if self.rows:
            return
        data = self._dataset()
        kept = torch.nonzero(snr_mask(data.snr, self.keep_snrs) & (data.y >= 0)).flatten()
        if kept.numel() == 0:
            raise ValueError(f"no examples have an SNR in {self.keep_snrs}; the dataset has {data.snrs}")
        parts = stratified_split(data.y[kept], data.snr[kept], self.fractions, seed=self.hparams.seed)
        self.rows = {name: kept[part] for name, part in zip(("train", "val", "test"), parts, strict=True)}
        self._fit_steps()

    def _fit_rows(self) -> torch.Tensor:
        train = self.rows["train"]
        if train.numel() > self.hparams.fit_examples:
            generator = torch.Generator().manual_seed(self.hparams.seed)
            train = train[torch.randperm(train.numel(), generator=generator)[: self.hparams.fit_examples]]
        return train

    def _fit_steps(self) -> None:
        """Fit what needs statistics, on (at most ``fit_examples`` of) the training split only, each step on the
        output of the steps before it: the standardising view, then a magnitude or PCA sample selection."""
        self._build_steps()
        if self.view.norm == "standardize" and not self.view.fitted:
            self.view.fit(self._stream(self._fit_rows(), shuffle=False, transform=None))
        if self.selection is not None and not self.selection.fitted:
            before = Pipeline(*(step for step in (self.view, self.band) if step is not None))
            self.selection.fit(self._stream(self._fit_rows(), shuffle=False, transform=before))

    def _stream(
        self, rows: torch.Tensor, shuffle: bool, transform: Pipeline | None, seed: int | None = None
    ) -> BatchStream:
        data = self._dataset()
        block_rows = self.hparams.block_rows or data.read_block_rows
        seed = self.hparams.seed if seed is None else seed
        sampler = BlockShuffleSampler(rows, block_rows, self.hparams.window_rows, shuffle=shuffle, seed=seed)
        return BatchStream(data, sampler, self.hparams.batch_size, transform=transform)

    def loader(self, rows: torch.Tensor, shuffle: bool = False, seed: int | None = None) -> EpochLoader:
        """A loader over any rows of the dataset, through this module's transform (call :meth:`setup` first).

        The split loaders use it; so do studies that train many models on chosen subsets of one split
        (``rfml.studies.snr``). ``seed`` seeds the shuffle (default: the module's ``seed``).
        """
        if not self.rows:
            raise RuntimeError("call setup() before asking for data loaders")
        stream = self._stream(rows, shuffle, self.transform, seed)
        return EpochLoader(stream, num_workers=self.hparams.num_workers, pin_memory=self.hparams.pin_memory)

    def _loader(self, split: str, shuffle: bool) -> EpochLoader:
        if not self.rows:
            raise RuntimeError("call setup() before asking for data loaders")
        rows = self.rows[split]
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            rows = shard_rows(rows, trainer.global_rank, trainer.world_size, equal=split == "train")
        return self.loader(rows, shuffle)

    def train_dataloader(self) -> EpochLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> EpochLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> EpochLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> EpochLoader:
        return self._loader("test", shuffle=False)

    def state_dict(self) -> dict[str, Any]:
        self._build_steps()
        state = {"view": self.view.state_dict()}
        if self.selection is not None:
            state["selection"] = self.selection.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._build_steps()
        if "view" in state_dict:
            self.view.load_state_dict(state_dict["view"])
        if self.selection is not None and "selection" in state_dict:
            self.selection.load_state_dict(state_dict["selection"])

    def __repr__(self) -> str:
        return (
            f"SignalDataModule({self.hparams.dataset!r}, split={self.fractions}, snrs={self.keep_snrs}, "
            f"view={self.view!r}, bands={self.hparams.bands}, selection={self.selection!r}, "
            f"batch_size={self.hparams.batch_size})"
        )
