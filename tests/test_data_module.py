"""SignalDataModule: built from a YAML config, prepares files once, splits, filters, views and normalises."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from jsonargparse import ArgumentParser

from rfml.data import PRESETS, SignalDataModule
from rfml.data.views import unit_power


def from_yaml(text: str) -> SignalDataModule:
    parser = ArgumentParser()
    parser.add_class_arguments(SignalDataModule, "data")
    # ``instantiate`` replaced ``instantiate_classes`` in jsonargparse 4.49; the project allows >= 4.39.
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    init = instantiate(parser.parse_string(text))
    assert isinstance(init.data, SignalDataModule)
    return init.data


def first_train_batch(dm: SignalDataModule) -> dict[str, torch.Tensor]:
    return next(iter(dm.train_dataloader()))


def all_batches(loader: object) -> dict[str, torch.Tensor]:
    batches = list(loader)  # type: ignore[call-overload]
    return {key: torch.cat([b[key] for b in batches]) for key in ("x", "y", "snr")}


def write_2016(path: Path, per_key: int = 10, length: int = 16, seed: int = 0) -> Path:
    """A small RadioML 2016 layout: I ~ N(3, 2^2), Q ~ N(-1, 0.5^2), two classes, SNRs 0 and 10."""
    rng = np.random.default_rng(seed)
    data = {}
    for name in ("BPSK", "QPSK"):
        for snr in (0, 10):
            frames = np.empty((per_key, 2, length), dtype=np.float32)
            frames[:, 0] = rng.normal(3.0, 2.0, (per_key, length))
            frames[:, 1] = rng.normal(-1.0, 0.5, (per_key, length))
            data[(name, snr)] = frames
    path.write_bytes(pickle.dumps(data, protocol=2))
    return path


# ---- configuration through jsonargparse ------------------------------------------------------------------------


def test_yaml_config_builds_a_synthetic_module_that_yields_typed_batches() -> None:
    dm = from_yaml(
        """
data:
  dataset: synthetic:rml2016.10a
  per_key: 5
  data_seed: 3
  batch_size: 16
  snrs: "0:10"
  seed: 1
"""
    )
    assert dm.hparams.batch_size == 16 and dm.hparams.per_key == 5 and dm.keep_snrs == [0, 2, 4, 6, 8, 10]
    assert dm.classes == PRESETS["rml2016.10a"].classes and dm.num_classes == 11 and dm.length == 128
    dm.prepare_data()  # nothing to write for on-the-fly data
    dm.setup("fit")
    batch = first_train_batch(dm)
    assert batch["x"].dtype == torch.float32 and batch["x"].shape == (16, 2, 128)
    assert batch["y"].dtype == torch.int64 and batch["y"].shape == (16,)
    assert int(batch["y"].min()) >= 0 and int(batch["y"].max()) < 11
    assert batch["snr"].dtype == torch.int64 and set(batch["snr"].tolist()) <= {0, 2, 4, 6, 8, 10}
    # The batch is the dataset's own examples: the synthesizer's, for the rows it names.
    assert torch.isfinite(batch["x"]).all() and float(batch["x"].abs().sum()) > 0


def test_yaml_config_for_rml2018_generates_the_file_once(tmp_path: Path) -> None:
    dm = from_yaml(
        f"""
data:
  dataset: rml2018.01a
  data_dir: {tmp_path / "data"}
  per_key: 2
  data_seed: 5
  batch_size: 8
  snrs: 10
"""
    )
    path = tmp_path / "data" / PRESETS["rml2018.01a"].synthetic_name  # never the real download's name
    assert not path.exists()
    dm.prepare_data()
    assert path.is_file()
    stamp = (path.stat().st_mtime_ns, path.stat().st_ino, path.stat().st_size)
    dm.prepare_data()  # the file exists: it is not regenerated
    assert (path.stat().st_mtime_ns, path.stat().st_ino, path.stat().st_size) == stamp
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    dm.setup("fit")
    batch = first_train_batch(dm)
    assert batch["x"].dtype == torch.float32 and batch["x"].shape == (8, 2, 1024)
    assert batch["y"].dtype == torch.int64 and int(batch["y"].min()) >= 0 and int(batch["y"].max()) < 24
    assert batch["snr"].dtype == torch.int64 and batch["snr"].tolist() == [10] * 8
    assert dm.classes == PRESETS["rml2018.01a"].classes and dm.length == 1024


# ---- splits and SNR filter ---------------------------------------------------------------------------------------


def test_split_6_2_2_cuts_every_class_snr_group_6_2_2_and_parts_are_disjoint() -> None:
    dm = SignalDataModule(dataset="synthetic:rml2016.10a", per_key=10, split="6:2:2", seed=4)
    dm.setup()
    data = dm.data
    assert data is not None and len(data) == 11 * 20 * 10
    parts = [dm.rows[name] for name in ("train", "val", "test")]
    union = torch.cat(parts)
    assert union.unique().numel() == union.numel() == len(data)  # disjoint and complete
    groups = data.y * 100 + (data.snr + 20)  # one id per (class, SNR)
    for part, size in zip(parts, (6, 2, 2), strict=True):
        counts = torch.bincount(groups[part], minlength=1100)
        assert set(counts[counts > 0].tolist()) == {size}
        assert int((counts > 0).sum()) == 11 * 20


def test_same_seed_same_split_other_seed_other_split() -> None:
    def rows(seed: int) -> torch.Tensor:
        dm = SignalDataModule(dataset="synthetic:rml2016.10b", per_key=5, seed=seed)
        dm.setup()
        return dm.rows["train"]

    assert torch.equal(rows(1), rows(1))
    assert not torch.equal(rows(1), rows(2))


def test_snr_filter_keeps_only_that_snr_in_every_split() -> None:
    dm = SignalDataModule(dataset="synthetic:rml2016.10a", per_key=10, snrs="10")
    dm.setup()
    assert dm.data is not None
    kept = torch.cat([dm.rows[name] for name in ("train", "val", "test")])
    assert kept.numel() == 11 * 10
    assert dm.data.snr[kept].unique().tolist() == [10]
    assert {len(dm.rows["train"]), len(dm.rows["val"]), len(dm.rows["test"])} == {66, 22}


def test_snr_filter_with_no_match_is_a_clear_error() -> None:
    dm = SignalDataModule(dataset="synthetic:rml2016.10a", per_key=2, snrs=30)
    with pytest.raises(ValueError, match=r"no examples have an SNR in \[30\]"):
        dm.setup()


# ---- views and normalisation -------------------------------------------------------------------------------------


def test_amp_phase_view_gives_non_negative_amplitude_and_bounded_phase(tmp_path: Path) -> None:
    dm = SignalDataModule(dataset=str(write_2016(tmp_path / "d.pkl")), view="amp_phase", batch_size=8)
    dm.setup()
    batch = all_batches(dm.train_dataloader())
    assert batch["x"].shape == (24, 2, 16)
    assert float(batch["x"][:, 0].min()) >= 0.0
    assert float(batch["x"][:, 1].abs().max()) <= math.pi
    # Amplitude is |I + jQ| of the stored frames, each at unit mean power (the default norm, rms).
    assert dm.data is not None
    raw = unit_power(dm.data.get_batch(dm.rows["train"])["x"])
    assert torch.allclose(torch.sort(batch["x"][:, 0].flatten())[0], torch.sort(raw.norm(dim=1).flatten())[0])


def test_standardize_gives_zero_mean_unit_std_per_channel_on_training_batches(tmp_path: Path) -> None:
    dm = SignalDataModule(dataset=str(write_2016(tmp_path / "d.pkl")), norm="standardize", batch_size=5)
    dm.setup()
    assert dm.view.fitted
    torch.testing.assert_close(dm.view.mean, torch.tensor([3.0, -1.0], dtype=torch.float64), atol=0.4, rtol=0)
    torch.testing.assert_close(dm.view.std, torch.tensor([2.0, 0.5], dtype=torch.float64), atol=0.3, rtol=0)
    x = all_batches(dm.train_dataloader())["x"].to(torch.float64)
    assert x.shape == (24, 2, 16)
    # Fitted on exactly these rows, so the statistics are exact up to rounding.
    torch.testing.assert_close(x.mean(dim=(0, 2)), torch.zeros(2, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(dim=(0, 2), correction=0), torch.ones(2, dtype=torch.float64), atol=1e-5, rtol=0)
    # Held-out rows come from the same distribution: close, not exact.
    val = all_batches(dm.val_dataloader())["x"].to(torch.float64)
    assert float(val.mean(dim=(0, 2)).abs().max()) < 0.3
    assert float((val.std(dim=(0, 2)) - 1).abs().max()) < 0.3


def test_fit_examples_caps_the_rows_used_to_fit(tmp_path: Path) -> None:
    path = str(write_2016(tmp_path / "d.pkl"))
    full = SignalDataModule(dataset=path, norm="standardize")
    capped = SignalDataModule(dataset=path, norm="standardize", fit_examples=3)
    full.setup()
    capped.setup()
    assert capped.view.fitted and not torch.equal(capped.view.mean, full.view.mean)


def test_state_dict_round_trip_restores_the_view_statistics(tmp_path: Path) -> None:
    path = str(write_2016(tmp_path / "d.pkl"))
    fitted = SignalDataModule(dataset=path, norm="standardize", view="fft_iq")
    fitted.setup()
    state = fitted.state_dict()
    restored = SignalDataModule(dataset=path, norm="standardize", view="fft_iq")
    restored.load_state_dict(state)
    assert restored.view.fitted
    assert torch.equal(restored.view.mean, fitted.view.mean) and torch.equal(restored.view.std, fitted.view.std)
    restored.setup()  # keeps the restored statistics instead of refitting
    assert torch.equal(restored.view.mean, fitted.view.mean)
    assert torch.equal(all_batches(restored.val_dataloader())["x"], all_batches(fitted.val_dataloader())["x"])
    # Statistics from a checkpoint win over what the data would give.
    other = SignalDataModule(dataset=path, norm="standardize", view="fft_iq")
    other.load_state_dict({"view": {**state["view"], "mean": [0.25, -0.5], "std": [2.0, 4.0]}})
    other.setup()
    assert other.view.mean.tolist() == [0.25, -0.5] and other.view.std.tolist() == [2.0, 4.0]
    with pytest.raises(ValueError, match="not View"):
        SignalDataModule(dataset=path, norm="standardize", view="iq").load_state_dict(state)


# ---- errors ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("split", "words"),
    [("6:4", "three parts"), ("6:2:2:1", "three parts"), ("6:x:2", "colon-separated"), ("6:-2:2", "positive")],
)
def test_bad_split_is_a_clear_error(split: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        SignalDataModule(dataset="synthetic:rml2016.10a", split=split)


def test_unknown_dataset_names_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown dataset preset 'rml2099'.*rml2016\.10a"):
        SignalDataModule(dataset="synthetic:rml2099")
    dm = SignalDataModule(dataset="rml2099", data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"rml2099: no such dataset file.*synthetic:<preset>"):
        dm.setup()
    missing = SignalDataModule(dataset="rml2016.10b", data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"rfml generate --preset rml2016\.10b"):
        missing.setup()  # prepare_data was not called, so the file is missing


def test_bad_view_norm_and_sizes_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        SignalDataModule(dataset="synthetic:rml2016.10a", view="spectrogram")
    with pytest.raises(ValueError, match="norm must be one of"):
        SignalDataModule(dataset="synthetic:rml2016.10a", norm="zscore")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        SignalDataModule(dataset="synthetic:rml2016.10a", batch_size=0)


def test_loaders_before_setup_are_refused() -> None:
    dm = SignalDataModule(dataset="synthetic:rml2016.10a", per_key=2)
    with pytest.raises(RuntimeError, match=r"call setup\(\)"):
        dm.train_dataloader()


def test_classes_follow_the_shipped_order_when_asked(tmp_path: Path) -> None:
    from rfml.data import SHIPPED_CLASSES_RML2018A, SignalDataModule

    dm = SignalDataModule("rml2018.01a", data_dir=str(tmp_path), per_key=1, class_order="shipped")
    dm.prepare_data()
    assert dm.classes == SHIPPED_CLASSES_RML2018A
    assert SignalDataModule("rml2018.01a", data_dir=str(tmp_path), per_key=1).classes[:3] == ["OOK", "4ASK", "8ASK"]


def test_lightning_trainer_sees_every_training_example_once_per_epoch_in_a_new_order() -> None:
    import lightning.pytorch as pl
    import torch

    from rfml.data import SignalDataModule

    class Recorder(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2 * 128, 11)
            self.seen: list[list[tuple[int, int]]] = []

        def on_train_epoch_start(self) -> None:
            self.seen.append([])

        def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
            self.seen[-1].extend(zip(batch["y"].tolist(), batch["snr"].tolist(), strict=True))
            self.seen[-1].append((-1, float(batch["x"].sum())))  # fingerprint of the batch's frames
            return torch.nn.functional.cross_entropy(self.layer(batch["x"].flatten(1)), batch["y"])

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    dm = SignalDataModule("synthetic:rml2016.10a", per_key=5, batch_size=64, snrs="0:8")
    model = Recorder()
    trainer = pl.Trainer(
        max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0
    )
    trainer.fit(model, datamodule=dm)
    train = dm.rows["train"]
    assert train.numel() == 11 * 5 * 3  # 5 SNRs of 0..8 dB, 3 of 5 per group to train
    assert trainer.num_training_batches == -(-train.numel() // 64)
    for epoch in model.seen:
        labels = sorted(pair for pair in epoch if pair[0] >= 0)
        assert labels == sorted(zip(dm.data.y[train].tolist(), dm.data.snr[train].tolist(), strict=True))
    assert [p for p in model.seen[0] if p[0] < 0] != [p for p in model.seen[1] if p[0] < 0]
