"""The ISM set on disk (Schmidt's layout), the generator that writes it, and band / sample selection in the
DataModule."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from rfml.cli import main as rfml_main
from rfml.data import CLASSES_ISM, DatasetFormatError, ISMInterference, load_array_pickle
from rfml.data.module import SignalDataModule
from rfml.data.selection import SampleSelect, band_bins
from rfml.data.synthetic import get_preset, source_indices, write_dataset
from rfml.data.views import View

PER_KEY = 6


@pytest.fixture(scope="module")
def ism_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ism") / "ism2017"
    write_dataset("ism2017", folder, per_key=PER_KEY, seed=4, progress=False)
    return folder


def test_generate_writes_schmidts_layout_and_the_loader_reads_it_back(ism_dir: Path) -> None:
    # the two pickles and the provenance record; nothing partial left behind
    assert sorted(os.listdir(ism_dir)) == ["data_iq.p", "labels.p", "provenance.json"]
    data = load_array_pickle(ism_dir / "data_iq.p")  # the restricted unpickler: only numpy arrays
    labels = load_array_pickle(ism_dir / "labels.p")
    assert data.shape == (15, 21, PER_KEY, 128, 2) and data.dtype == np.float32
    assert labels.shape == (15, 21, PER_KEY) and labels.dtype == np.int64
    assert np.array_equal(labels, np.broadcast_to(np.arange(15)[:, None, None], labels.shape))
    loaded = ISMInterference(ism_dir)
    assert loaded.classes == CLASSES_ISM and loaded.snrs == list(range(-20, 21, 2))
    # Writing then reading returns equal tensors: row r of the loader is data[class, snr, example] as [2, L].
    assert torch.equal(loaded.x, torch.from_numpy(data.reshape(-1, 128, 2).transpose(0, 2, 1).copy()))
    assert torch.equal(loaded.y, torch.from_numpy(labels.reshape(-1)))
    assert loaded.snr.tolist()[: 2 * PER_KEY] == [-20] * PER_KEY + [-18] * PER_KEY
    # ... and the file holds exactly what the synthesizer makes for those indices, a function of (seed, index).
    rows = torch.tensor([0, 7, 21 * PER_KEY + 3, len(loaded) - 1])
    synth = get_preset("ism2017").synthesizer(seed=4)
    expected = synth.generate(source_indices(rows, 15, 21, PER_KEY))
    assert torch.equal(loaded.get_batch(rows)["x"], expected["x"])
    assert torch.equal(loaded.get_batch(rows)["y"], expected["y"])


def test_the_command_line_writes_the_same_files(ism_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli_ism"
    code = rfml_main(["generate", "--preset", "ism2017", "--out", str(out), "--per-key", str(PER_KEY)])
    assert code == 0
    code = rfml_main(["generate", "--preset", "ism2017", "--out", str(out), "--per-key", str(PER_KEY), "--seed", "4"])
    assert code == 0
    assert (out / "data_iq.p").read_bytes() == (ism_dir / "data_iq.p").read_bytes()


def test_a_failed_generation_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rfml.data.synthetic as synthetic

    def broken(start: int, stop: int, job: object) -> None:
        raise RuntimeError("generator died")

    monkeypatch.setattr(synthetic, "_generate_rows", broken)
    with pytest.raises(RuntimeError, match="generator died"):
        write_dataset("ism2017", tmp_path / "broken", per_key=2, progress=False)
    assert os.listdir(tmp_path / "broken") == []


def write_pickles(folder: Path, data: np.ndarray, labels: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in (("data_iq.p", data), ("labels.p", labels)):
        with open(folder / name, "wb") as f:
            pickle.dump(array, f, protocol=2)
    return folder


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((15, 20, 3, 128, 2), r"axis 1 \(SNR\) has 20 entries, expected 21"),
        ((14, 21, 3, 128, 2), r"axis 0 \(class\) has 14 entries, expected 15"),
        ((15, 21, 3, 128, 3), r"axis 4 \(I/Q\) has 3 entries, expected 2"),
        ((15, 21, 0, 128, 2), r"axis 2 \(vector\) has 0 entries, expected at least 1"),
        ((15, 21, 128, 2), r"expected 5 axes"),
    ],
)
def test_a_wrong_shape_names_the_file_the_field_and_the_axis(tmp_path: Path, shape: tuple, message: str) -> None:
    data = np.zeros(shape, dtype=np.float32)
    folder = write_pickles(tmp_path / "bad", data, np.zeros((15, 21, 3), dtype=np.int64))
    with pytest.raises(DatasetFormatError, match=message) as info:
        ISMInterference(folder)
    assert str(folder / "data_iq.p") in str(info.value) and info.value.field == "data_iq"


def test_labels_of_the_wrong_shape_name_the_axis(tmp_path: Path) -> None:
    data = np.zeros((15, 21, 3, 128, 2), dtype=np.float64)  # real files may hold float64: accepted
    folder = write_pickles(tmp_path / "bad", data, np.zeros((15, 21, 4), dtype=np.int64))
    with pytest.raises(DatasetFormatError, match=r"axis 2 \(vector\) differs") as info:
        ISMInterference(folder)
    assert info.value.field == "labels"


def module(ism_dir: Path, **kwargs: object) -> SignalDataModule:
    dm = SignalDataModule(dataset=str(ism_dir), split="4:1:1", batch_size=64, **kwargs)
    dm.setup("fit")
    return dm


def test_band_selection_keeps_the_bins_of_the_bands_and_drops_the_classes_without_energy(ism_dir: Path) -> None:
    bands = [(2422.0, 2424.0), (2429.0, 2431.0)]
    dm = module(ism_dir, view="fft_iq", bands=bands)
    kept = ["BT-2422", "BT-2423", "BT-2424", "BT-2429", "BT-2430", "BT-2431", "WiFi-2422", "WiFi-2427", "WiFi-2432"]
    assert dm.classes == [*kept, "Zigbee-2430"] and dm.num_classes == 10 and dm.length == 52
    bins = band_bins(bands)
    assert bins.tolist() == [*range(7, 33), *range(96, 122)]
    data = ISMInterference(ism_dir)
    for split in ("train", "val", "test"):
        rows = dm.rows[split]
        names = [CLASSES_ISM[int(c)] for c in data.y[rows].unique()]
        assert sorted(names) == sorted(dm.classes)  # every kept class, and no dropped one, in every split
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape[1:] == (2, 52)
    assert 0 <= int(batch["y"].min()) and int(batch["y"].max()) <= 9
    # The batch is exactly the full FFT view at the band's bins, labels renumbered in the kept order.
    rows = dm.rows["train"][:5]
    full = View("fft_iq", "rms")(data.get_batch(rows)["x"])  # the DataModule's default norm
    sub = dm.transform(data.get_batch(rows)["x"])
    assert torch.equal(sub, full[..., bins])
    relabelled = dm._dataset().get_batch(rows)["y"]
    assert [dm.classes[i] for i in relabelled] == [CLASSES_ISM[int(c)] for c in data.y[rows]]


def test_pca_is_fitted_on_the_training_split_only(ism_dir: Path) -> None:
    dm = module(ism_dir, view="fft_amp_phase", selection="pca", selection_rate=16)
    assert dm.length == 8 and dm.selection.fitted
    data = ISMInterference(ism_dir)
    view = View("fft_amp_phase")
    on_train = SampleSelect("pca", 16).fit([view(data.get_batch(dm.rows["train"])["x"])])
    assert torch.allclose(dm.selection.mean, on_train.mean, atol=1e-9)
    assert torch.allclose(dm.selection.components.abs(), on_train.components.abs(), atol=1e-6)
    everything = torch.cat([dm.rows[s] for s in ("train", "val", "test")])
    on_all = SampleSelect("pca", 16).fit([view(data.get_batch(everything)["x"])])
    assert not torch.allclose(dm.selection.mean, on_all.mean, atol=1e-6)
    test_batch = next(iter(dm.test_dataloader()))
    assert test_batch["x"].shape[1:] == (2, 8)
    # The fitted state travels with checkpoints: a fresh module restores it without refitting.
    fresh = SignalDataModule(
        dataset=str(ism_dir), split="4:1:1", view="fft_amp_phase", selection="pca", selection_rate=16
    )
    fresh.load_state_dict(dm.state_dict())
    x = data.get_batch(dm.rows["test"][:4])["x"]
    assert torch.equal(fresh.transform(x), dm.transform(x))


def test_selection_arguments_are_checked(ism_dir: Path) -> None:
    with pytest.raises(ValueError, match="view must be fft_iq or fft_amp_phase"):
        SignalDataModule(dataset=str(ism_dir), bands=[(2422, 2424)])
    with pytest.raises(ValueError, match="view must be fft_amp_phase"):
        SignalDataModule(dataset=str(ism_dir), view="fft_iq", selection="pca", selection_rate=4)
    with pytest.raises(ValueError, match="needs a selection method"):
        SignalDataModule(dataset=str(ism_dir), view="fft_amp_phase", selection_rate=4)
    radioml = SignalDataModule(dataset="synthetic:rml2016.10a", view="fft_iq", bands=[(2422, 2424)])
    with pytest.raises(ValueError, match="frequency range, known for the ISM classes only"):
        _ = radioml.classes
