from __future__ import annotations

import json
from pathlib import Path

import pytest

from rfml import RadioML2016, SignalDataModule
from rfml.examples.dataset_tour import main


def test_demo_writes_a_real_layout_file_that_reads_back_equal_and_splits_6_2_2(tmp_path: Path) -> None:
    summary = main(["--out", str(tmp_path), "--per-key", "5", "--batch-size", "512"])
    written = summary["file"]
    assert written["round_trip_equal"] is True
    assert written["frames"] == 11 * 20 * 5
    # 0..18 dB keeps 10 of 20 SNRs; groups of 5 split 3:1:1.
    assert written["split_0_to_18_db"] == {"train": 11 * 10 * 3, "val": 11 * 10, "test": 11 * 10}
    assert written["batch_x_shape"] == [256, 2, 128]
    assert len(RadioML2016(written["file"])) == 1100
    assert json.loads((tmp_path / "summary.json").read_text())["file"]["round_trip_equal"] is True
    assert summary["worst_snr_error_db"] < 0.5


def test_rfml_exports_the_data_classes_lazily() -> None:
    assert SignalDataModule.__module__ == "rfml.data.module"
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        import rfml

        _ = rfml.Nope
