"""SignalDataModule: any signal dataset (real file, generated file, on-the-fly) as a LightningDataModule."""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl
import torch

from rfml.data.base import (
    ClassSubset,
    DatasetIdentityError,
    SignalDataset,
    check_identity,
    describe_provenance,
    regenerate_command,
    sidecar_path,
)
from rfml.data.ism import ISMInterference
from rfml.data.radioml import RadioML2016, RadioML2018
from rfml.data.sampling import BatchStream, BlockShuffleSampler, EpochLoader
from rfml.data.selection import BandSelect, Pipeline, SampleSelect, visible_classes
from rfml.data.splits import parse_snrs, parse_split, snr_mask, stratified_split
from rfml.data.synthetic import PRESETS, SyntheticSignals, get_preset, write_dataset
from rfml.data.views import View
from rfml.dsp.channel import channel_preset
from rfml.dsp.ism import ISM_CLASSES

SYNTHETIC_PREFIX = "synthetic:"


def dataset_path(dataset: str, data_dir: str = "data") -> str | None:
    """The generated file a preset name stands for inside ``data_dir``: its synthetic name
    (:attr:`rfml.data.synthetic.DatasetPreset.synthetic_name`, e.g. ``RML2016.10a_dict.synthetic.pkl``), never the
    real file's; ``None`` for paths and on-the-fly sets."""
    return os.path.join(data_dir, PRESETS[dataset].synthetic_name) if dataset in PRESETS else None


def _claimed_preset(path: str) -> str | None:
    """The preset whose real or synthetic file name ``path`` carries: what the file says it is. (The published ISM
    set has no name of its own, so an ISM folder claims nothing by its name.)"""
    name = os.path.basename(os.path.normpath(path))
    named = (p for p in PRESETS.values() if p.layout != "ism" and name in (p.file_name, p.synthetic_name))
    return next((p.name for p in named), None)


def check_request(
    data: SignalDataset,
    path: str,
    preset: str | None,
    per_key: int | None,
    seed: int | None,
    channel: str | None,
) -> None:
    """Refuse ``data`` (opened from ``path``) unless it is what was asked for.

    A generated file's provenance record must agree with each setting given (``None``: not asked); a file without
    one must hold the class set, SNR grid and per-key count of ``preset`` (``per_key`` or the published count).
    Raises :class:`DatasetIdentityError` naming what differs and the command that writes the right file.
    """
    record = data.provenance
    if record is None:
        if preset is None:
            return
        spec = get_preset(preset)
        wanted = spec.per_key if per_key is None else per_key
        hint = (
            f"it is not the published {preset} file its name claims: rename it if it holds other data on purpose "
            f"(per_key accepts another count), or for synthetic data use dataset: {preset} with a data_dir"
        )
        check_identity(data, path, spec.classes, spec.snrs, wanted, f"the {preset} preset", hint)
        return
    asked = {"preset": preset, "per_key": per_key, "seed": seed, "channel": channel}
    differs = [
        (name, record[name], value) for name, value in asked.items() if value is not None and record[name] != value
    ]
    if not differs:
        return
    settings = {name: record[name] if value is None else value for name, value in asked.items()}
    command = regenerate_command(settings["preset"], settings["per_key"], settings["seed"], settings["channel"], path)
    found = ", ".join(f"{name} {held} in the file but {value} asked for" for name, held, value in differs)
    sidecar = sidecar_path(path)
    also = f" and {sidecar}" if os.path.isfile(sidecar) else ""
    raise DatasetIdentityError(
        path,
        differs[0][0],
        f"a stale synthetic file ({describe_provenance(record)}): {found}; regenerate it: {command}, "
        f"or delete {path}{also} to have prepare_data write it",
    )


def missing_path(path: str) -> FileNotFoundError:
    """The error for a dataset path that does not exist: a path is real data, which nothing generates."""
    claimed = _claimed_preset(path)
    instead = (
        f"; for synthetic data use the preset name (dataset: {claimed}), generated in data_dir"
        if claimed
        else f"; or give a folder with data_iq.p, one of {sorted(PRESETS)} or synthetic:<preset>"
    )
    return FileNotFoundError(
        f"{path}: no such dataset file; a path names real data, which is never generated: place the file there or "
        f"correct the path{instead}"
    )


def open_dataset(
    dataset: str,
    data_dir: str = "data",
    per_key: int | None = None,
    data_seed: int | None = None,
    class_order: str = "corrected",
    channel: str | None = None,
    finite: bool = True,
    allow_external: bool = False,
) -> SignalDataset:
    """Open a dataset by preset name, ``"synthetic:<preset>"`` or path, and check it is what was asked for.

    - ``rml2016.10a`` / ``rml2016.10b`` / ``rml2018.01a`` / ``ism2017``: *synthetic* data, the file
      :func:`dataset_path` names in ``data_dir`` (written by ``rfml generate --out DATA_DIR/`` or
      :meth:`SignalDataModule.prepare_data`); its provenance record must match the preset, ``per_key`` (default:
      the published count), ``data_seed`` (default 0) and ``channel`` (default: the preset's);
    - ``synthetic:<preset>``: generated on the fly, ``per_key`` examples per (class, SNR);
    - a path (real data, or a generated file): ``*.hdf5``/``*.h5`` is RadioML 2018, a folder or ``data_iq.p`` is
      the ISM set, any other file is a RadioML 2016 pickle. A generated file must match the settings given (those
      left ``None`` are not checked); a file without a record that carries a published file name
      (``RML2016.10a_dict.pkl`` …) must hold that set's classes, SNR grid and ``per_key`` (default: published).

    A mismatch raises :class:`rfml.data.base.DatasetIdentityError` (a ``ValueError``) that says what differs and
    gives the ``rfml generate`` command that writes the right file.

    ``finite`` and ``allow_external`` go to the file loaders: a frame holding NaN or ±Inf is refused unless
    ``finite`` is ``False``; HDF5 data stored outside the file is refused unless ``allow_external`` is ``True``
    (see :class:`rfml.data.RadioML2018`).
    """
    if dataset.startswith(SYNTHETIC_PREFIX):
        return SyntheticSignals.from_preset(
            dataset[len(SYNTHETIC_PREFIX) :], per_key, seed=data_seed or 0, channel=channel
        )
    preset = dataset if dataset in PRESETS else None
    path = dataset_path(dataset, data_dir) or dataset
    if not os.path.exists(path):
        if preset is not None:
            spec = PRESETS[preset]
            command = regenerate_command(preset, per_key or spec.per_key, data_seed or 0, channel, path)
            hint = f"; run {command} (or SignalDataModule.prepare_data), or give a real file's path as the dataset"
            raise FileNotFoundError(f"{path}: no such dataset file{hint}")
        raise missing_path(path)
    if os.path.isdir(path) or os.path.basename(path) == "data_iq.p":
        data: SignalDataset = ISMInterference(path, finite=finite)
    elif path.endswith((".hdf5", ".h5")):
        data = RadioML2018(path, class_order=class_order, finite=finite, allow_external=allow_external)
    else:
        data = RadioML2016(path, finite=finite)
    if preset is not None:
        if data.provenance is None:
            raise DatasetIdentityError(
                path,
                "provenance",
                f"has no provenance record, but the preset name {preset!r} means synthetic data written by rfml "
                f"(its record is missing); real data is given by its path (dataset: {path}), or regenerate: "
                + regenerate_command(preset, per_key or PRESETS[preset].per_key, data_seed or 0, channel, path),
            )
        spec = PRESETS[preset]
        check_request(data, path, preset, per_key or spec.per_key, data_seed or 0, channel or spec.channel)
    else:
        check_request(data, path, _claimed_preset(path), per_key, data_seed, channel)
    return data


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
        dataset: a preset name (``rml2016.10a``, ``rml2016.10b``, ``rml2018.01a``, ``ism2017``): synthetic data,
            read from ``data_dir`` under the preset's synthetic name (``RML2016.10a_dict.synthetic.pkl`` …) and
            generated there by :meth:`prepare_data` when missing; ``synthetic:<preset>`` (on the fly, nothing
            written); or a path: real data (or a file you generated), never generated. See :func:`open_dataset`.
        data_dir: folder of the generated preset files.
        split: train:val:test weights, stratified per (class, SNR), e.g. ``"6:2:2"``.
        snrs: SNRs to keep (dB): ``None``/``"all"``, ``10``, ``"0,10,18"`` or ``"-10:18"`` (step 2).
        view: ``iq``, ``amp_phase``, ``fft_iq`` or ``fft_amp_phase``.
        norm: ``rms`` (default: each I/Q frame at unit mean power, before the view; why: :class:`View`), ``none``,
            ``l1``, ``l2`` (per viewed frame) or ``standardize`` (per channel, fitted on train).
        batch_size: examples per batch.
        num_workers: ``DataLoader`` worker processes (also the writer's processes in prepare_data).
        seed: seed of the split and of the shuffling.
        per_key: examples per (class, SNR) of generated data (default: the real dataset's count); a generated file
            of another count is refused with the command that regenerates it.
        data_seed: seed of generated data (default 0 for a preset name; for a path, ``None`` accepts the file's
            own seed and a number must match its provenance record).
        channel: channel preset of generated data (default: the preset's own), checked like ``data_seed``.
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
        finite: refuse a dataset file holding a NaN or ±Inf frame, naming the frame (default); ``False`` loads it.
            An HDF5 file's frames are checked as they are first read (:class:`rfml.data.RadioML2018`), not on opening.
        allow_external: read an HDF5 file whose data lives outside it (external storage, virtual sources in other
            files, external links); refused by default, as such a file can make the reader return any file's bytes.
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
        data_seed: int | None = None,
        class_order: str = "corrected",
        block_rows: int | None = None,
        window_rows: int = 8192,
        fit_examples: int = 65536,
        pin_memory: bool = False,
        bands: list[tuple[float, float]] | None = None,
        selection: str | None = None,
        selection_rate: int = 1,
        channel: str | None = None,
        finite: bool = True,
        allow_external: bool = False,
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
        if channel is not None:
            channel_preset(channel)
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
        """Write the synthetic file a preset name stands for when it is missing; nothing else is ever generated.

        A path names real data: when it is missing this raises ``FileNotFoundError`` naming it, before any
        training starts. An existing file is left as it is (:meth:`setup` checks that it is what was asked for).
        """
        dataset = self.hparams.dataset
        if dataset.startswith(SYNTHETIC_PREFIX):
            return
        path = dataset_path(dataset, self.hparams.data_dir)
        if path is None:
            if not os.path.exists(dataset):
                raise missing_path(dataset)
            return
        if not os.path.exists(path):
            os.makedirs(self.hparams.data_dir, exist_ok=True)
            write_dataset(
                dataset,
                path,
                self.hparams.per_key,
                self.hparams.data_seed or 0,
                workers=max(1, self.hparams.num_workers),
                channel=self.hparams.channel,
            )

    def _dataset(self) -> SignalDataset:
        if self.data is None:
            self.data = open_dataset(
                self.hparams.dataset,
                self.hparams.data_dir,
                self.hparams.per_key,
                self.hparams.data_seed,
                self.hparams.class_order,
                self.hparams.channel,
                finite=self.hparams.finite,
                allow_external=self.hparams.allow_external,
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
