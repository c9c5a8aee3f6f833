"""rfml.studies.snr: the five experiments end to end on a crafted two-SNR set, resumption, the router and the report.

The toy set (tests/_study_tasks.py) has SNRs 0 and 10 dB: at 10 dB the four classes are carriers at four phases
(trivially learnable), at 0 dB every frame is pure noise. So the single-SNR model at 10 dB is near perfect, the one at
0 dB is at chance, and Boosting for the 10 dB target must choose 10 dB over the noise.
"""

from __future__ import annotations

import json
import multiprocessing
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from _study_tasks import toy_config

from rfml.cli import main as rfml_main
from rfml.studies.snr.config import SNRStudyConfig
from rfml.studies.snr.router import SNRRouter
from rfml.studies.snr.runs import decode_labels, rows_at, spec_key, train_spec
from rfml.studies.snr.study import Study, majority_vote, run_experiments


@pytest.fixture
def toy(snr_toy: dict[str, Any]) -> dict[str, Any]:
    """The toy study with every experiment run (once per test session, ``conftest.snr_toy``)."""
    return snr_toy


def test_single_snr_against_all_snr(toy: dict[str, Any]) -> None:
    single, study = toy["results"]["single"], toy["study"]
    rows = {r["snr"]: r for r in single["rows"]}
    assert sorted(rows) == [0, 10]
    assert rows[10]["single"] >= 0.9  # carriers at 10 dB are trivial
    assert rows[0]["single"] <= 0.6  # pure noise: chance is 0.25
    every = study.records[spec_key(train_spec([0, 10], 0))]
    singles = [study.records[spec_key(train_spec([s], 0))] for s in (0, 10)]
    assert single["all_timing"]["train_seconds"] == every["train_seconds"]
    assert single["total_single_seconds"] == pytest.approx(sum(r["train_seconds"] for r in singles))
    mean_single = sum(r["train_seconds"] for r in singles) / 2
    assert single["speedup_per_model"] == pytest.approx(every["train_seconds"] / mean_single)
    assert single["total_cost_ratio"] == pytest.approx(2 * mean_single / every["train_seconds"])
    assert every["train_examples"] == sum(r["train_examples"] for r in singles)  # all SNRs = the union
    assert {r["single_timing"]["best_epoch"] >= 1 for r in single["rows"]} == {True}
    # patience (1) is judged only from min_steps (25) on: at 3 batches per epoch that is epoch 9, so a single-SNR
    # fit runs at least 10 epochs although max_epochs is 1
    for record in singles:
        steps_per_epoch = -(-record["train_examples"] // 16)
        assert record["epochs"] * steps_per_epoch >= 25 + steps_per_epoch


def test_offset_table_reads_the_model_trained_at_the_offset_snr(toy: dict[str, Any]) -> None:
    table, study = toy["results"]["offset"]["accuracy"], toy["study"]
    trained_at_10 = study.records[spec_key(train_spec([10], 0))]
    trained_at_0 = study.records[spec_key(train_spec([0], 0))]
    assert table["0"]["10"] == trained_at_10["test_accuracy"]["0"]  # true 0 dB, model trained at 0 + 10
    assert table["10"]["-10"] == trained_at_0["test_accuracy"]["10"]
    assert table["10"]["0"] == trained_at_10["test_accuracy"]["10"]
    assert table["0"]["-10"] is None and table["10"]["10"] is None  # -10 and 20 dB are not in the data


def test_boosting_chooses_the_signal_over_pure_noise(toy: dict[str, Any]) -> None:
    rows = {r["target"]: r for r in toy["results"]["boost"]["rows"]}
    at10 = rows[10]
    first = at10["rounds"][0]["scores"]
    assert at10["order"][0] == 10 and first["10"] >= 0.9 and first["10"] > first["0"] + 0.3
    assert at10["chosen"] == [10]  # adding the noise SNR gains nothing
    assert not at10["rounds"][-1]["added"] and at10["rounds"][-1]["gain"] <= 0.01
    assert at10["boost"] >= 0.9
    study = toy["study"]
    trainings = sum(len(r["scores"]) for r in at10["rounds"]) + 1
    assert at10["trainings"] == trainings
    # the hold-out is 25 % of each class at the target, and the candidates never train on it
    kept = rows_at(study.module, "train", [10]).numel()
    holdout_key = spec_key(train_spec([10], 0, val="holdout", holdout=10))
    assert study.records[holdout_key]["val_examples"] == kept // 4
    assert study.records[holdout_key]["train_examples"] == kept - kept // 4


def test_majority_vote_breaks_ties_with_the_first_model() -> None:
    votes = torch.tensor([[0, 1, 2, 3], [0, 2, 2, 1], [1, 2, 0, 2]])
    assert majority_vote(votes).tolist() == [0, 2, 2, 3]


def test_bagging_is_the_majority_of_its_members(toy: dict[str, Any]) -> None:
    study, rows = toy["study"], toy["results"]["bag"]["rows"]
    y, snr = study.test_labels()
    for row in rows:
        t = row["target"]
        assert row["size"] == round(0.5 * rows_at(study.module, "train", [t]).numel())
        members = [train_spec([0, 10], 0, val_snrs=[t], size=row["size"], draw=d) for d in range(3)]
        preds = torch.stack([decode_labels(study.records[spec_key(m)]["pred"])[snr == t] for m in members])
        assert row["bag"] == pytest.approx(float((majority_vote(preds) == y[snr == t]).float().mean()))
        for spec, acc in zip(members, row["bag_members"], strict=True):
            assert study.records[spec_key(spec)]["train_examples"] == row["size"]
            assert acc == study.records[spec_key(spec)]["test_accuracy"][str(t)]


def test_router_with_oracle_snr_equals_the_single_snr_models(toy: dict[str, Any]) -> None:
    router, single = toy["results"]["router"], toy["results"]["single"]
    variants = router["variants"]
    assert {"oracle", "learned+0dB", "learned+1dB", "m2m4+0dB", "m2m4+1dB", "all_snr", "boost_oracle"} <= set(variants)
    for row in single["rows"]:
        assert variants["oracle"]["per_snr"][str(row["snr"])] == pytest.approx(row["single"])
        assert variants["all_snr"]["per_snr"][str(row["snr"])] == pytest.approx(row["all"])
    errors = router["estimator_errors"]
    assert set(errors) == {"learned", "m2m4"} and set(errors["m2m4"]) == {"0", "10"}
    assert errors["m2m4"]["10"]["count"] == int((toy["study"].test_labels()[1] == 10).sum())


def test_router_dispatch_matches_the_static_export_path(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    experts = [torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 16, 3)) for _ in range(3)]

    class Fixed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, 0, 0] * 10  # the "estimate" is read from the first sample

    router = SNRRouter(Fixed(), experts, grid=[-10, 0, 10], bias_db=1.0).eval()
    x = torch.randn(8, 2, 16)
    x[:, 0, 0] = torch.tensor([-2.0, -0.6, -0.4, 0.0, 0.3, 0.45, 0.9, 3.0])  # estimates -20 … 30 dB
    with torch.no_grad():
        dynamic = router(x)
        # nearest of -10/0/10 to estimate + 1 dB; -6 + 1 = -5 is a tie, which goes to the higher SNR
        expected_index = torch.tensor([0, 1, 1, 1, 1, 2, 2, 2])
        assert torch.equal(router.route(router.estimator(x)), expected_index)
        for b in range(8):
            assert torch.allclose(dynamic[b], experts[int(expected_index[b])](x[b : b + 1])[0])
        monkeypatch.setattr("rfml.studies.snr.router._exporting", lambda: True)
        assert torch.allclose(router(x), dynamic)
    exported = torch.export.export(router, (x,))
    assert torch.allclose(exported.module()(x), dynamic, atol=1e-6)


def test_a_finished_study_runs_nothing_again(toy: dict[str, Any]) -> None:
    results = toy["root"] / "out" / "results.jsonl"
    lines = results.read_text().splitlines()
    keys = [json.loads(line)["key"] for line in lines]
    assert len(keys) == len(set(keys)) == len(toy["study"].records)
    again = Study(toy["config"], toy["root"] / "out", progress=False)
    run_experiments(again, ["single", "offset", "boost", "bag"])
    assert results.read_text().splitlines() == lines


def test_changed_settings_are_refused_unless_restarted(toy: dict[str, Any], tmp_path: Path) -> None:
    Study(toy["config"], tmp_path, progress=False)
    changed = SNRStudyConfig.from_dict(toy_config(toy["data"], seed=1))
    with pytest.raises(ValueError, match="other data/model/training settings"):
        Study(changed, tmp_path, progress=False)
    (tmp_path / "results.jsonl").write_text('{"key": "x"}\n')
    Study(changed, tmp_path, progress=False, restart=True)
    assert not (tmp_path / "results.jsonl").exists()


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['boost.min_gian'\]"):
        SNRStudyConfig.from_dict({"boost": {"min_gian": 0.01}})
    with pytest.raises(ValueError, match=r"train\.max_epochs must be int"):
        SNRStudyConfig.from_dict({"train": {"max_epochs": "ten"}})
    with pytest.raises(ValueError, match=r"boost\.holdout must be in"):
        SNRStudyConfig.from_dict({"boost": {"holdout": 1.5}})
    bad = tmp_path / "study.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ValueError, match=r"study\.yaml: expected a mapping"):
        SNRStudyConfig.load(bad)


def test_report_has_every_table_and_figure(toy: dict[str, Any], tmp_path: Path) -> None:
    out = toy["root"] / "out"
    assert rfml_main(["snr-study", "report", "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    for heading in (
        "Single-SNR against all-SNR",
        "Training-SNR offset",
        "SNR Boosting",
        "SNR Bagging",
        "SNR-routed inference",
    ):
        assert heading in text
    speedup = toy["results"]["single"]["speedup_per_model"]
    assert f"**{speedup:.1f}×**" in text
    assert (out / "accuracy_vs_snr.png").stat().st_size > 10_000 and (out / "offset.png").stat().st_size > 10_000
    assert rfml_main(["snr-study", "report", "--out", str(tmp_path / "none")]) == 2


def test_a_killed_study_resumes_without_duplicate_or_lost_lines(toy: dict[str, Any], tmp_path: Path) -> None:
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(toy_config(toy["data"], targets=[10])))
    out = tmp_path / "out"
    args = ["snr-study", "single", "-c", str(config), "--out", str(out), "--workers", "0", "--quiet"]
    results = out / "results.jsonl"
    # The study runs in a forked copy of this process (torch and the study's code already loaded: no start-up
    # cost), which is killed with SIGKILL as soon as its first training is recorded.
    child = multiprocessing.get_context("fork").Process(target=rfml_main, args=(args,))
    child.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.is_alive():
        if results.exists() and results.read_text().count("\n") >= 1:
            break
        time.sleep(0.01)
    child.kill()
    child.join()
    assert child.exitcode == -signal.SIGKILL, "the study should have been killed mid-way"
    before = results.read_text().splitlines()
    assert 1 <= len(before) < 3, "the study should have been killed mid-way"
    assert rfml_main(args) == 0
    after = results.read_text().splitlines()
    keys = [json.loads(line)["key"] for line in after]
    assert after[: len(before)] == before  # finished trainings are kept as they were, not rerun
    assert len(keys) == len(set(keys)) == 3  # the single-SNR models at 0 and 10 dB, and the all-SNR model


def test_router_rounds_like_round_to_grid() -> None:
    from rfml.dsp.snr import round_to_grid

    grid = list(range(-20, 20, 2))
    router = SNRRouter(torch.nn.Identity(), [torch.nn.Identity()] * len(grid), grid, bias_db=1.0)
    estimates = torch.arange(-120, 121) * 0.25  # quarter-dB steps, exact in float32, ties included
    assert torch.equal(router.route(estimates), round_to_grid(estimates, grid, bias_db=1.0))


@pytest.mark.parametrize("task", ["radioml", "ism"])
def test_shipped_study_configs_load(task: str) -> None:
    config = SNRStudyConfig.load(Path(__file__).resolve().parents[1] / "rfml" / "configs" / f"snr_study_{task}.yaml")
    assert config.targets == [-10, -4, 0, 10] and config.estimator.model == "snr_cnn"
    assert config.data.view == ("fft_iq" if task == "ism" else "iq")
