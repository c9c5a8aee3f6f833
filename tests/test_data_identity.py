"""Data that is what it says it is: generated files carry a provenance record, are checked against what a config
asks for, never take a real dataset's name silently, and ``prepare_data`` never generates under a real-data path."""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from rfml.data import PRESETS, RadioML2016, RadioML2018, SignalDataModule, open_dataset, write_dataset
from rfml.data.base import PROVENANCE_ATTR, DatasetFormatError, DatasetIdentityError, sidecar_path
from rfml.data.verify import verify

RFML = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "rfml"
CONFIGS = Path(__file__).resolve().parents[1] / "rfml" / "configs"
SYNTHETIC_10A = "RML2016.10a_dict.synthetic.pkl"


def rfml(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(RFML), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def rml2016_pickle(path: Path, classes: list[str], snrs: list[int], per_key: int) -> Path:
    """A RadioML 2016 dict with no provenance record, as a real download is."""
    rng = np.random.default_rng(0)
    data = {(c, s): rng.standard_normal((per_key, 2, 128)).astype(np.float32) for c in classes for s in snrs}
    path.write_bytes(pickle.dumps(data, protocol=2))
    return path


# ---- rfml generate: folders, names, arguments ----------------------------------------------------------------


def test_generate_into_a_missing_folder_creates_it_and_writes_the_synthetic_name(tmp_path: Path) -> None:
    done = rfml("generate", "--preset", "rml2016.10a", "--out", "missing/", "--per-key", "2", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    written = tmp_path / "missing" / SYNTHETIC_10A
    assert done.stdout.strip() == os.path.join("missing", SYNTHETIC_10A)
    # the data file and its record; no partial file, and never the real download's name
    assert sorted(p.name for p in written.parent.iterdir()) == [SYNTHETIC_10A, SYNTHETIC_10A + ".provenance.json"]
    assert not (tmp_path / "missing" / PRESETS["rml2016.10a"].file_name).exists()
    assert len(RadioML2016(written)) == 11 * 20 * 2
    # a name without a suffix is a folder too, made with its parents
    done = rfml("generate", "--preset", "rml2018.01a", "--out", "a/b", "--per-key", "1", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a" / "b" / "GOLD_XYZ_OSC.0001_1024.synthetic.hdf5").is_file()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--per-key", "0"], "per_key must be >= 1, got 0"),
        (["--workers", "0"], "workers must be >= 1, got 0"),
        (["--out", "afile/sub/"], "afile is a file"),
        (["--out", "nodir/x.hdf5"], "the folder"),
    ],
)
def test_bad_arguments_fail_before_any_generation_with_one_line(tmp_path: Path, args: list[str], words: str) -> None:
    (tmp_path / "afile").write_text("not a folder")
    # rml2018.01a at its published 4096 per key would take many minutes: a quick exit shows nothing was generated.
    argv = ["generate", "--preset", "rml2018.01a", "--quiet", *args, *([] if "--out" in args else ["--out", "out/"])]
    started = time.monotonic()
    done = rfml(*argv, cwd=tmp_path)
    assert time.monotonic() - started < 60
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rfml generate: error: ") and words in lines[0], done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # no folder made, no file written


# ---- a stale file is refused with the command that regenerates it -----------------------------------------------


def test_a_stale_per_key_file_is_refused_with_the_regenerate_command(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    path = Path(write_dataset("rml2016.10a", str(data_dir) + "/", per_key=2, seed=0, progress=False))
    assert path == data_dir / SYNTHETIC_10A
    dm = SignalDataModule("rml2016.10a", data_dir=str(data_dir), per_key=3)
    stamp = path.stat().st_mtime_ns
    dm.prepare_data()  # a file is there: it is not overwritten behind the user's back ...
    assert path.stat().st_mtime_ns == stamp
    with pytest.raises(DatasetIdentityError) as caught:  # ... and it is not used either
        dm.setup("fit")
    message = str(caught.value)
    assert message.startswith(f"{path}: field 'per_key': ")
    assert "per_key 2 in the file but 3 asked for" in message
    assert f"`rfml generate --preset rml2016.10a --per-key 3 --seed 0 --channel rml2016 --out {path}`" in message
    assert f"or delete {path}" in message
    assert isinstance(caught.value, DatasetFormatError) and isinstance(caught.value, ValueError)  # the CLI's types
    # the config's default count (the published 1000) is a request too
    with pytest.raises(DatasetIdentityError, match=r"per_key 2 in the file but 1000 asked for.*--per-key 1000"):
        open_dataset("rml2016.10a", str(data_dir))
    with pytest.raises(DatasetIdentityError, match=r"field 'seed': .*seed 0 in the file but 4 asked for.*--seed 4"):
        open_dataset("rml2016.10a", str(data_dir), per_key=2, data_seed=4)
    with pytest.raises(DatasetIdentityError, match=r"channel rml2016 in the file but awgn asked for"):
        open_dataset("rml2016.10a", str(data_dir), per_key=2, channel="awgn")
    assert len(open_dataset("rml2016.10a", str(data_dir), per_key=2)) == 11 * 20 * 2  # the right request opens it


def test_a_file_given_by_path_is_checked_against_the_settings_given(tmp_path: Path) -> None:
    path = write_dataset("rml2016.10b", tmp_path / "mine.dat", per_key=2, seed=5, progress=False)
    assert len(SignalDataModule(path)._dataset()) == 10 * 20 * 2  # nothing asked: the file's own settings
    with pytest.raises(DatasetIdentityError, match=r"per_key 2 in the file but 6 asked for"):
        open_dataset(path, per_key=6)
    # a generated 2016.10b under the 2016.10a real name says it is something it is not
    wrong = write_dataset("rml2016.10b", tmp_path / "RML2016.10a_dict.pkl", per_key=2, progress=False)
    with pytest.raises(DatasetIdentityError, match=r"field 'preset': .*preset rml2016.10b in the file but rml2016.10a"):
        open_dataset(wrong)


def test_a_record_that_no_longer_fits_its_file_is_refused(tmp_path: Path) -> None:
    path = Path(write_dataset("rml2016.10a", tmp_path / "x.pkl", per_key=2, progress=False))
    rml2016_pickle(path, PRESETS["rml2016.10a"].classes, list(PRESETS["rml2016.10a"].snrs), per_key=3)
    with pytest.raises(DatasetIdentityError, match=r"x.pkl: field '<file bytes>': its provenance record .*bytes"):
        RadioML2016(path)


# ---- a synthetic file under a real name announces itself, once per load -----------------------------------------


def test_a_synthetic_file_under_a_real_name_announces_itself_by_default(tmp_path: Path) -> None:
    path = write_dataset("rml2016.10a", tmp_path / "RML2016.10a_dict.pkl", per_key=2, seed=3, progress=False)
    line = f"synthetic data (preset rml2016.10a, seed 3, channel rml2016, per_key 2) at {path}"
    # A fresh interpreter with no logging set up: the line reaches stderr, once per load.
    code = f"from rfml.data import open_dataset, RadioML2016; open_dataset({path!r}); RadioML2016({path!r})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert [text for text in done.stderr.splitlines() if "synthetic data" in text] == [line, line]


def test_every_load_of_a_generated_file_logs_exactly_one_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    name = PRESETS["rml2018.01a"].file_name
    path = write_dataset("rml2018.01a", tmp_path / name, per_key=1, seed=2, progress=False)
    caplog.set_level(logging.INFO, logger="rfml.data")
    caplog.clear()
    dm = SignalDataModule(path, batch_size=8)  # as the real-data config names it
    dm.prepare_data()
    dm.setup("fit")
    next(iter(dm.train_dataloader()))
    records = [r for r in caplog.records if r.name == "rfml.data"]
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.WARNING, f"synthetic data (preset rml2018.01a, seed 2, channel wireless, per_key 1) at {path}")
    ]


# ---- the record in the file: HDF5 attribute, sidecars, verify -------------------------------------------------


def test_the_provenance_record_lives_in_the_hdf5_file_and_verify_accepts_it(tmp_path: Path) -> None:
    path = write_dataset("rml2018.01a", tmp_path, per_key=1, seed=9, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["GOLD_XYZ_OSC.0001_1024.synthetic.hdf5"]  # no sidecar needed
    with h5py.File(path, "r") as handle:
        record = json.loads(handle.attrs[PROVENANCE_ATTR])
        assert sorted(handle.keys()) == ["X", "Y", "Z"]  # still the published layout
    assert {k: record[k] for k in ("preset", "seed", "channel", "per_key", "length")} == {
        "preset": "rml2018.01a",
        "seed": 9,
        "channel": "wireless",
        "per_key": 1,
        "length": 1024,
    }
    assert record["snrs"] == list(range(-20, 32, 2)) and len(record["classes"]) == 24 and record["version"]
    assert RadioML2018(path).provenance == record
    assert RadioML2018(path, class_order="shipped").provenance == record  # names are the caller's for 2018
    report = verify(path, per_key=1)
    assert report.ok, str(report)


def test_the_pickle_and_the_ism_folder_keep_their_record_beside_the_data(tmp_path: Path) -> None:
    path = write_dataset("rml2016.10a", tmp_path / "a.pkl", per_key=1, seed=1, progress=False)
    record = json.loads(Path(sidecar_path(path)).read_text())
    assert record["files"] == {"data": os.path.getsize(path)} and record["seed"] == 1 and record["per_key"] == 1
    assert verify(path, per_key=1).ok
    folder = write_dataset("ism2017", tmp_path / "ism", per_key=1, seed=2, progress=False)
    assert sorted(os.listdir(folder)) == ["data_iq.p", "labels.p", "provenance.json"]
    record = json.loads((Path(folder) / "provenance.json").read_text())
    assert record["files"] == {n: os.path.getsize(Path(folder) / n) for n in ("data_iq.p", "labels.p")}
    assert open_dataset(folder, per_key=1, data_seed=2).provenance == record
    assert verify(folder, per_key=1).ok


# ---- a real-layout file without a record is checked against the preset its name claims -------------------------


def test_a_real_named_file_that_is_not_that_dataset_is_refused_with_what_differs(tmp_path: Path) -> None:
    spec = PRESETS["rml2016.10a"]
    path = tmp_path / spec.file_name
    rml2016_pickle(path, [c for c in spec.classes if c != "AM-SSB"], list(spec.snrs), per_key=3)
    with pytest.raises(
        DatasetIdentityError, match=r"field 'classes': holds 10 classes, .* expects 11: missing \['AM-SSB'\]"
    ):
        SignalDataModule(str(path), per_key=3).setup()
    rml2016_pickle(path, spec.classes, list(range(-10, 20, 2)), per_key=3)
    with pytest.raises(DatasetIdentityError, match=r"field 'SNR grid': .*missing \[-20, -18, -16, -14, -12\]"):
        open_dataset(str(path), per_key=3)
    rml2016_pickle(path, spec.classes, list(spec.snrs), per_key=3)
    with pytest.raises(DatasetIdentityError, match=r"field 'per_key': holds 3 examples .*expects per_key 1000"):
        open_dataset(str(path))  # the published count: a real download holds 1000 per key
    assert len(open_dataset(str(path), per_key=3)) == 11 * 20 * 3  # said so: accepted
    other = rml2016_pickle(tmp_path / "subset.pkl", ["BPSK", "QPSK"], [0, 10], per_key=3)
    assert open_dataset(str(other)).classes == ["BPSK", "QPSK"]  # a name that claims nothing is not checked


# ---- prepare_data: presets are synthetic, paths are real ---------------------------------------------------------


def test_prepare_data_under_a_real_data_config_does_not_generate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for config in ("rml2016.10a.yaml", "rml2018.01a.yaml"):
        init = yaml.safe_load((CONFIGS / "data" / config).read_text())["data"]["init_args"]
        dm = SignalDataModule(**init)
        with pytest.raises(FileNotFoundError) as caught:
            dm.prepare_data()
        assert str(caught.value).startswith(f"{init['dataset']}: no such dataset file; a path names real data")
        assert "dataset: rml20" in str(caught.value)  # and how to ask for synthetic data instead
        assert list(tmp_path.iterdir()) == []  # nothing generated, no folder made


def test_prepare_data_for_a_preset_name_writes_the_synthetic_name_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    real = rml2016_pickle(data_dir / "RML2016.10a_dict.pkl", ["BPSK"], [0], per_key=1)  # a real file stays untouched
    dm = SignalDataModule("rml2016.10a", data_dir=str(data_dir), per_key=1, data_seed=6)
    dm.prepare_data()
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(
        [real.name, SYNTHETIC_10A, SYNTHETIC_10A + ".provenance.json"]
    )
    dm.setup("fit")
    assert dm._dataset().provenance["seed"] == 6 and len(dm._dataset()) == 220
    # a file under the synthetic name that rfml did not write is not taken for generated data
    (data_dir / SYNTHETIC_10A).unlink()
    (data_dir / (SYNTHETIC_10A + ".provenance.json")).unlink()
    rml2016_pickle(data_dir / SYNTHETIC_10A, PRESETS["rml2016.10a"].classes, list(PRESETS["rml2016.10a"].snrs), 1)
    with pytest.raises(DatasetIdentityError, match=r"has no provenance record.*real data is given by its path"):
        open_dataset("rml2016.10a", str(data_dir), per_key=1)


def test_shipped_configs_with_preset_names_read_the_synthetic_name() -> None:
    for config in sorted(CONFIGS.glob("*.yaml")):
        text = yaml.safe_load(config.read_text())
        data = text["data"].get("init_args", text["data"])
        if data.get("dataset") in PRESETS:
            assert data.get("data_dir") == "data/synthetic", config.name
    for config in sorted((CONFIGS / "data").glob("*.yaml")):
        dataset = yaml.safe_load(config.read_text())["data"]["init_args"]["dataset"]
        assert os.path.basename(dataset) in {p.file_name for p in PRESETS.values()}, config.name
    assert yaml.safe_load((CONFIGS / "data" / "rml2018.01a.yaml").read_text())["data"]["init_args"]["num_workers"] == 0


# ---- the traps through `rfml fit` ----------------------------------------------------------------------------------

FAST_FIT = ["--trainer.fast_dev_run", "1", "--trainer.enable_progress_bar", "false"]


def test_rfml_fit_on_a_stale_file_stops_with_one_line_and_the_regenerate_command(tmp_path: Path) -> None:
    path = write_dataset("rml2016.10a", tmp_path / "data", per_key=2, progress=False)
    config = str(CONFIGS / "kd_cnn.yaml")
    done = rfml("fit", "-c", config, "--data.init_args.data_dir", "data", *FAST_FIT, cwd=tmp_path)  # per_key: 1000
    assert done.returncode == 2
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith(f"rfml fit: error: {os.path.relpath(path, tmp_path)}: field 'per_key': ")
    assert "per_key 2 in the file but 1000 asked for" in error and "--per-key 1000 --seed 0" in error
    assert "Traceback" not in done.stderr


def test_rfml_fit_with_the_real_data_config_on_a_synthetic_file_says_so_once(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    write_dataset("rml2016.10a", tmp_path / "data" / "RML2016.10a_dict.pkl", per_key=2, seed=0, progress=False)
    configs = ["-c", str(CONFIGS / "kd_cnn.yaml"), "-c", str(CONFIGS / "data" / "rml2016.10a.yaml")]
    done = rfml("fit", *configs, *FAST_FIT, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    line = "synthetic data (preset rml2016.10a, seed 0, channel rml2016, per_key 2) at data/RML2016.10a_dict.pkl"
    assert [text for text in done.stderr.splitlines() if "synthetic data (" in text] == [line]
