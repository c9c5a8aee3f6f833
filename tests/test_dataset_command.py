"""`rfml dataset info | verify | convert` and the cards in datasets/: generated files verify, defects are named."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from rfml.cli import main as rfml_main
from rfml.data import DatasetFormatError, RadioML2016, RadioML2018
from rfml.data.base import PROVENANCE_ATTR
from rfml.data.cards import CARDS
from rfml.data.synthetic import PRESETS, write_dataset
from rfml.data.verify import convert, info, verify

PER_KEY = 2
ROOT = Path(__file__).resolve().parents[1]
CLASSES_10A = PRESETS["rml2016.10a"].classes
SNRS_2016 = list(PRESETS["rml2016.10a"].snrs)
SNRS_2018 = list(PRESETS["rml2018.01a"].snrs)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """What `rfml generate --per-key 2` writes, for every preset."""
    folder = tmp_path_factory.mktemp("generated")
    return {
        name: Path(write_dataset(name, folder / name if preset.layout == "ism" else folder, PER_KEY, progress=False))
        for name, preset in PRESETS.items()
    }


# ---- files in the real layouts, each with one defect -------------------------------------------------------


def rml2016_pickle(path: Path, classes: list[str], snrs: list[int], per_key: int = 2, **replace: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    data = {(name, snr): rng.standard_normal((per_key, 2, 128)).astype(np.float32) for name in classes for snr in snrs}
    for key, value in replace.items():  # "BPSK_4" -> ("BPSK", 4)
        name, snr = key.rsplit("_", 1)
        data[(name, int(snr))] = value
    with open(path, "wb") as handle:
        pickle.dump(data, handle, protocol=4)
    return path


def rml2018_hdf5(
    path: Path, num_classes: int = 24, snrs: list[int] = SNRS_2018, per_key: int = 1, z_dtype: str = "i8", drop: int = 0
) -> Path:
    cls = np.repeat(np.arange(num_classes), len(snrs) * per_key)
    snr = np.tile(np.repeat(snrs, per_key), num_classes)
    rows = len(cls) - drop
    with h5py.File(path, "w") as handle:
        handle.create_dataset("X", data=np.zeros((rows, 1024, 2), dtype=np.float32))
        handle.create_dataset("Y", data=np.eye(num_classes, dtype=np.int64)[cls[:rows]])
        handle.create_dataset("Z", data=snr[:rows, None].astype(z_dtype))
    return path


def ism_folder(folder: Path, classes: int = 15, snrs: int = 21, per_key: int = 1, label_dtype: str = "i8") -> Path:
    folder.mkdir()
    data = np.zeros((classes, snrs, per_key, 128, 2), dtype=np.float32)
    labels = np.broadcast_to(np.arange(classes).reshape(-1, 1, 1), data.shape[:3]).astype(label_dtype)
    for name, array in (("data_iq.p", data), ("labels.p", labels)):
        with open(folder / name, "wb") as handle:
            pickle.dump(array, handle, protocol=4)
    return folder


# (make the file, the card, per_key, the checks that fail, the field and text the failing message names)
DEFECTS = {
    "pickle-snr-grid": (
        lambda p: rml2016_pickle(p / "a.pkl", CLASSES_10A, SNRS_2016[:-1]),
        "rml2016.10a", 2, {"SNR grid"}, "'keys (SNR dB)'", "missing [18]",
    ),
    "pickle-missing-class": (
        lambda p: rml2016_pickle(p / "a.pkl", [c for c in CLASSES_10A if c != "WBFM"], SNRS_2016),
        "rml2016.10a", 2, {"class order"}, "'keys (modulation)'", "missing ['WBFM']",
    ),
    "pickle-per-key-count": (
        lambda p: rml2016_pickle(p / "a.pkl", CLASSES_10A, SNRS_2016, BPSK_4=np.zeros((1, 2, 128), np.float32)),
        "rml2016.10a", 2, {"per-key counts"}, "\"key ('BPSK', 4)\"", "expected 2 examples per (class, SNR) key",
    ),
    "pickle-dtype": (
        lambda p: rml2016_pickle(p / "a.pkl", CLASSES_10A, SNRS_2016, QPSK_0=np.zeros((2, 2, 128), np.float64)),
        "rml2016.10a", 2, {"dtypes"}, "\"key ('QPSK', 0)\"", "expected dtype float32, found float64",
    ),
    "hdf5-snr-grid": (
        lambda p: rml2018_hdf5(p / "a.h5", snrs=SNRS_2018[:-1]),
        "rml2018.01a", 1, {"SNR grid"}, "'Z'", "missing [30]",
    ),
    "hdf5-missing-class": (
        lambda p: rml2018_hdf5(p / "a.h5", num_classes=23),
        "rml2018.01a", 1, {"class order"}, "'Y'", "expected 24 classes",
    ),
    "hdf5-per-key-count": (
        lambda p: rml2018_hdf5(p / "a.h5", per_key=2, drop=1),
        "rml2018.01a", 2, {"per-key counts"}, "\"Y/Z rows of 'OQPSK' at 30 dB\"", "found 1",
    ),
    "hdf5-dtype": (
        lambda p: rml2018_hdf5(p / "a.h5", z_dtype="f8"),
        "rml2018.01a", 1, {"dtypes", "per-key counts"}, "'Z'", "expected dtype int64, found float64",
    ),
    "ism-snr-grid": (
        lambda p: ism_folder(p / "ism", snrs=20),
        "ism2017", 1, {"SNR grid"}, "'data_iq axis 1 (SNR)'", "missing [20]",
    ),
    "ism-missing-class": (
        lambda p: ism_folder(p / "ism", classes=14),
        "ism2017", 1, {"class order"}, "'data_iq axis 0 (class)'", "expected 15 classes",
    ),
    "ism-per-key-count": (
        lambda p: ism_folder(p / "ism", per_key=1),
        "ism2017", 2, {"per-key counts"}, "'data_iq axis 2 (vector)'", "expected 2 examples",
    ),
    "ism-dtype": (
        lambda p: ism_folder(p / "ism", label_dtype="f8"),
        "ism2017", 1, {"dtypes"}, "'labels'", "expected an integer dtype, found float64",
    ),
}  # fmt: skip


# ---- verify ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_verify_accepts_every_generated_preset(generated: dict[str, Path], name: str) -> None:
    for dataset in (None, name):  # detected, then named
        report = verify(generated[name], dataset=dataset, per_key=PER_KEY)
        assert report.ok, str(report)
        assert report.dataset == name
        statuses = {check.name: check.status for check in report.checks}
        assert statuses == {
            "layout": "pass", "shapes": "pass", "dtypes": "pass", "class order": "pass", "SNR grid": "pass",
            "per-key counts": "pass", "checksum": "skip",
        }  # fmt: skip
        assert report.verdict().startswith("GOOD: ")


def test_verify_against_the_card_count_says_the_count_differs(generated: dict[str, Path]) -> None:
    report = verify(generated["rml2016.10a"])
    assert [check.name for check in report.failed] == ["per-key counts"]
    message = report.failed[0].message
    assert str(generated["rml2016.10a"]) in message
    assert "field \"key ('8PSK', -20)\"" in message
    assert "expected 1000 examples per (class, SNR) key (the card's count), found 2" in message
    assert "--per-key 2" in message
    assert report.verdict().startswith("BAD: ") and "per-key counts" in report.verdict()


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_verify_rejects_a_defect_naming_the_file_and_field(tmp_path: Path, defect: str) -> None:
    make, dataset, per_key, failing, field, text = DEFECTS[defect]
    path = make(tmp_path)
    report = verify(path, dataset=dataset, per_key=per_key)
    assert not report.ok
    assert {check.name for check in report.failed} == failing, str(report)
    (check,) = [check for check in report.failed if check.name == min(failing)]
    data_file = path / "data_iq.p" if path.is_dir() else path
    assert check.message.startswith(f"{data_file}: field {field}: "), check.message
    assert text in check.message


def test_verify_detects_the_card_of_a_pickle_missing_a_class(tmp_path: Path) -> None:
    path = rml2016_pickle(tmp_path / "a.pkl", [c for c in CLASSES_10A if c != "WBFM"], SNRS_2016)
    assert verify(path, per_key=2).dataset == "rml2016.10a"


def test_verify_compares_a_given_sha256(generated: dict[str, Path]) -> None:
    path = generated["rml2016.10b"]
    from ondevice.io import sha256_file

    assert verify(path, per_key=PER_KEY, sha256=sha256_file(path)).checks[-1].status == "pass"
    wrong = verify(path, per_key=PER_KEY, sha256="0" * 64)
    assert [check.name for check in wrong.failed] == ["checksum"]
    assert "expected sha256 " + "0" * 64 in wrong.failed[0].message


# ---- info --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_info_reports_the_counts(generated: dict[str, Path], name: str) -> None:
    preset = PRESETS[name]
    found = info(generated[name])
    assert found.dataset == name and found.layout == preset.layout
    assert found.class_names(preset) == preset.classes
    assert found.snrs == list(preset.snrs)
    assert found.length == preset.length
    assert found.examples == len(preset.classes) * len(preset.snrs) * PER_KEY
    assert set(found.counts.values()) == {PER_KEY}
    assert len(found.counts) == len(preset.classes) * len(preset.snrs)
    assert sum(found.files.values()) == sum(os.path.getsize(f) for f in found.files)
    assert f"examples: {found.examples:,} in {len(found.counts)} (class, SNR) keys" in found.describe()


# ---- convert -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rml2016.10a", "rml2016.10b"])
def test_convert_streams_tensors_equal_to_the_pickle(generated: dict[str, Path], tmp_path: Path, name: str) -> None:
    out = Path(convert(generated[name], tmp_path / "converted.hdf5", progress=False))
    pickled, streamed = RadioML2016(generated[name]), RadioML2018(out)
    assert streamed.classes == pickled.classes == PRESETS[name].classes
    assert streamed.snrs == pickled.snrs == list(PRESETS[name].snrs)
    assert len(streamed) == len(pickled)
    for rows in (np.arange(len(pickled)), np.random.default_rng(1).permutation(len(pickled))):
        a, b = pickled.get_batch(rows), streamed.get_batch(rows)
        assert torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"]) and torch.equal(a["snr"], b["snr"])
    report = verify(out, per_key=PER_KEY)
    assert report.ok and report.dataset == name, str(report)
    assert os.listdir(tmp_path) == ["converted.hdf5"]


def test_convert_refuses_a_bad_pickle_and_leaves_nothing(tmp_path: Path) -> None:
    src = rml2016_pickle(tmp_path / "a.pkl", CLASSES_10A, SNRS_2016, QPSK_0=np.zeros((2, 2, 128), np.float64))
    with pytest.raises(DatasetFormatError, match=r"field \"key \('QPSK', 0\)\": expected dtype float32"):
        convert(src, tmp_path / "out.hdf5", progress=False)
    assert os.listdir(tmp_path) == ["a.pkl"]
    with pytest.raises(DatasetFormatError, match="expected a pickled dict"):
        convert(rml2018_hdf5(tmp_path / "b.h5"), tmp_path / "out.hdf5", progress=False)


# ---- the command -------------------------------------------------------------------------------------------


def test_command_exit_codes(generated: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(generated["rml2016.10a"])
    assert rfml_main(["dataset", "verify", path, "--per-key", "2"]) == 0
    assert "GOOD: " in capsys.readouterr().out
    assert rfml_main(["dataset", "verify", path]) == 1
    out = capsys.readouterr().out
    assert "FAIL  per-key counts" in out and out.rstrip().splitlines()[-1].startswith("BAD: ")
    assert rfml_main(["dataset", "verify", str(tmp_path / "missing.pkl")]) == 2
    assert "missing.pkl: no such file" in capsys.readouterr().err
    assert rfml_main(["dataset", "verify", path, "--dataset", "rml1999"]) == 2
    assert "unknown dataset preset 'rml1999'" in capsys.readouterr().err
    assert rfml_main(["dataset", "verify", path, "--per-key", "0"]) == 2
    assert "expected a positive number of examples" in capsys.readouterr().err
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    assert rfml_main(["dataset", "info", str(tmp_path / "junk.pkl")]) == 2
    assert "junk.pkl: not a readable pickle" in capsys.readouterr().err
    assert rfml_main(["dataset", "info", path]) == 0
    described = capsys.readouterr().out
    assert "examples: 440 in 220 (class, SNR) keys: 220 of 2" in described
    assert "made by:  rfml generate (preset rml2016.10a, seed 0, channel rml2016, per_key 2, version " in described
    assert rfml_main(["dataset", "convert", path, str(tmp_path), "--quiet"]) == 0
    written = capsys.readouterr().out.strip()
    assert written == str(tmp_path / "RML2016.10a_dict.synthetic.hdf5") and os.path.isfile(written)
    # the generated pickle's provenance record travels into the converted file
    with h5py.File(written, "r") as handle:
        record = json.loads(handle.attrs[PROVENANCE_ATTR])
    assert (record["preset"], record["per_key"]) == ("rml2016.10a", 2) and "files" not in record
    assert rfml_main(["dataset"]) == 2


def test_command_module_imports_no_torch() -> None:
    code = (
        "import argparse, sys, rfml.data.dataset_command as c; c.add_arguments(argparse.ArgumentParser()); "
        "heavy = {'torch', 'numpy', 'h5py'} & set(sys.modules); assert not heavy, sorted(heavy)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ---- the cards ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_card_states_the_facts_the_code_checks(name: str) -> None:
    preset, card = PRESETS[name], CARDS[name]
    text = (ROOT / "datasets" / f"{name}.md").read_text()
    assert text.startswith(f"# {card.title}\n")
    block = text[text.index("**Class order") : text.index("**SNR grid")]
    assert re.findall(r"`([^`]+)`", block) == preset.classes
    step = preset.snrs[1] - preset.snrs[0]
    grid = f"**SNR grid:** {preset.snrs[0]} to {preset.snrs[-1]} dB in steps of {step} ({len(preset.snrs)} values)"
    assert grid in text
    assert f"**Examples per key:** {preset.per_key:,}" in text
    assert (f"**sha256:** {card.sha256}" if card.sha256 else "**sha256:** not recorded") in text
    assert f"]({name}.md)" in (ROOT / "datasets" / "README.md").read_text()
    assert sorted(CARDS) == sorted(PRESETS)
