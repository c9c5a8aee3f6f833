"""`make demo` end to end on a tiny set: five models trained, timed and tabulated, every file where it is promised."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _layer_counts import mac_count, param_count

from rfml.examples.demo import main, run_folder


def test_demo_trains_distils_times_and_tabulates_five_models(tmp_path: Path) -> None:
    summary = main(
        ["--out", str(tmp_path), "--per-key", "5", "--epochs", "1", "--student-epochs", "1", "--repeats", "3"]
    )
    rows = {row["model"]: row for row in summary["rows"]}
    assert list(rows) == ["ClST (teacher)", "KD-CNN + SKD", "KD-MobileNet + SKD", "KD-CNN alone", "KD-MobileNet alone"]
    assert rows["ClST (teacher)"]["params"] == param_count("clst", 11)
    assert rows["KD-CNN + SKD"]["params"] == rows["KD-CNN alone"]["params"] == param_count("kd_cnn", 11)
    assert rows["KD-MobileNet + SKD"]["macs"] == mac_count("kd_mobilenet", 11)
    for label, row in rows.items():
        assert row["ort_b1_ms"] > 0
        folder = run_folder(tmp_path, label)
        metrics = json.loads((folder / "metrics.json").read_text())
        # The table shows the test report of each model's best checkpoint: 11 classes × 20 SNRs × 1 test frame.
        assert metrics["examples"] == 220
        assert row["accuracy"] == pytest.approx(metrics["accuracy"])
        assert (folder / "best.ckpt").is_file() and (folder / "confusion_snr_ge_10db.png").is_file()
    table = (tmp_path / "table.md").read_text()
    params, macs = param_count("kd_mobilenet", 11), mac_count("kd_mobilenet", 11)
    assert table.count("\n") == 2 + 5 and f"| KD-MobileNet + SKD | {params:,} | {macs / 1e6:.2f} M |" in table
    for name in ("accuracy_vs_snr.png", "latency.png", "summary.json", "RML2016.10a_dict.synthetic.pkl"):
        assert (tmp_path / name).is_file()
