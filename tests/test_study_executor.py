"""The pieces the studies share: the local and Ray executors, the append-only results log and the study folder's
header, the machine facts, and Lightning's quieting."""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import signal
import stat
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _study_tasks as tasks
import pytest
import torch

from rfml.studies.executor import (
    LocalExecutor,
    RayExecutor,
    RemoteTraceback,
    TaskError,
    make_executor,
)
from rfml.studies.machine import machine_info, machine_line
from rfml.studies.results import ResultsLog, ResultsLogError, StudyConfigError, open_results
from rfml.trainers.quiet import quiet_lightning

# -- executors ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool() -> Iterator[LocalExecutor]:
    """Two spawned workers with one torch thread each, shared by the module (spawning them costs seconds)."""
    with LocalExecutor(workers=2, threads=1) as ex:
        yield ex


def _pulled(items: list[dict[str, Any]], into: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """``items``, recording in ``into`` each one the executor draws."""
    for item in items:
        into.append(item)
        yield item


def test_local_pool_uses_two_processes_with_one_thread_each(pool: LocalExecutor) -> None:
    items = [{"x": i, "sleep": 0.25} for i in range(6)]
    results = list(pool.map_unordered(tasks.worker_info, items))
    assert sorted(item["x"] for item, _ in results) == list(range(6))  # every item exactly once
    for item, result in results:
        assert result["double"] == 2 * item["x"]
        assert result["threads"] == 1
    pids = {result["pid"] for _, result in results}
    assert len(pids) == 2
    assert os.getpid() not in pids

    # completion order: with both workers up, the slow first item comes back last
    items = [{"x": 0, "sleep": 1.0}, {"x": 1}, {"x": 2}]
    order = [item["x"] for item, _ in pool.map_unordered(tasks.worker_info, items)]
    assert sorted(order) == [0, 1, 2]
    assert order[-1] == 0

    info = pool.describe()
    assert info["kind"] == "local"
    assert info["workers"] == 2
    assert info["threads"] == 1
    assert info["start_method"] == "spawn"
    assert info["machine"]["cpu_count"] == os.cpu_count()
    assert info["machine"]["torch"] == torch.__version__
    assert info["machine"]["pid"] == os.getpid()  # the driver's machine and process


def test_in_process_executor_runs_here_and_restores_threads() -> None:
    before = torch.get_num_threads()
    with LocalExecutor(workers=0, threads=before + 1) as ex:
        results = {item["x"]: result for item, result in ex.map_unordered(tasks.worker_info, [{"x": 3}, {"x": 4}])}
        assert ex.describe()["start_method"] == "in-process"
    assert results == {
        3: {"pid": os.getpid(), "threads": before + 1, "double": 6},
        4: {"pid": os.getpid(), "threads": before + 1, "double": 8},
    }
    assert torch.get_num_threads() == before


def test_failing_task_raises_task_error_and_stops_submitting(pool: LocalExecutor) -> None:
    items = [{"x": 0, "fail": True}] + [{"x": i, "sleep": 0.3} for i in range(1, 12)]
    pulled: list[dict[str, Any]] = []
    yielded: list[tuple[dict[str, Any], int]] = []
    with pytest.raises(TaskError) as caught:
        for pair in pool.map_unordered(tasks.maybe_fail, _pulled(items, pulled)):
            yielded.append(pair)
    err = caught.value
    assert err.item == {"x": 0, "fail": True}
    assert err.message == "ValueError: bad item 0"
    assert str(err) == 'task {"fail": true, "x": 0} failed: ValueError: bad item 0'
    assert "Traceback" in err.remote_traceback
    assert "in maybe_fail" in err.remote_traceback
    assert isinstance(err.__cause__, RemoteTraceback)
    # at most 2 × workers in flight, and none drawn after the failure came back
    assert len(pulled) <= 4 + 1
    assert len(pulled) < len(items)
    # the tasks that were running finished and were handed over, with their results
    assert all(result == item["x"] for item, result in yielded)
    assert {item["x"] for item, _ in yielded} <= {item["x"] for item in pulled[1:]}
    # the pool is still usable
    assert [r for _, r in pool.map_unordered(tasks.maybe_fail, [{"x": 7}])] == [7]


def test_a_worker_told_to_exit_during_a_task_fails_that_task_not_the_study(pool: LocalExecutor) -> None:
    # Lightning raises SIGTERMException (a SystemExit) in a worker sent SIGTERM during a fit: the study must get a
    # TaskError naming the item, not a SystemExit that ends it without a word.
    with pytest.raises(TaskError) as caught:
        list(pool.map_unordered(tasks.maybe_fail, [{"x": 5, "exit": "stop"}]))
    assert caught.value.item == {"x": 5, "exit": "stop"}
    assert caught.value.message == "SystemExit: the worker was told to stop during this task (stop)"
    assert [r for _, r in pool.map_unordered(tasks.maybe_fail, [{"x": 7}])] == [7]


def test_in_process_failure_draws_no_further_item() -> None:
    items = [{"x": 1}, {"x": 2, "fail": True}, {"x": 3}]
    pulled: list[dict[str, Any]] = []
    yielded = []
    with LocalExecutor(workers=0) as ex, pytest.raises(TaskError, match=r'"x": 2.*ValueError: bad item 2'):
        for pair in ex.map_unordered(tasks.maybe_fail, _pulled(items, pulled)):
            yielded.append(pair)
    assert yielded == [({"x": 1}, 1)]
    assert pulled == items[:2]


def test_local_executor_refuses_what_it_cannot_run(pool: LocalExecutor) -> None:
    with pytest.raises(TypeError, match="top-level function"):
        list(pool.map_unordered(lambda item: item, [{"x": 1}]))
    with pytest.raises(ValueError, match=r"workers must be a non-negative integer.*-1"):
        LocalExecutor(workers=-1)
    with pytest.raises(ValueError, match=r"threads must be a positive integer.*0"):
        LocalExecutor(workers=0, threads=0)
    closed = LocalExecutor(workers=0)
    closed.close()
    with pytest.raises(RuntimeError, match="closed"):
        list(closed.map_unordered(tasks.maybe_fail, [{"x": 1}]))


def test_task_error_pickles_and_ray_is_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    err = pickle.loads(pickle.dumps(TaskError({"x": 1}, "ValueError: no", "Traceback ...")))
    assert (err.item, err.message, err.remote_traceback) == ({"x": 1}, "ValueError: no", "Traceback ...")
    assert str(err) == 'task {"x": 1} failed: ValueError: no'
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(ImportError, match=r"^ray is not installed: pip install 'ondevice\[ray\]'$"):
        RayExecutor()


def test_make_executor_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match=r"'dask'.*local, ray"):
        make_executor("dask", None, 1, None)
    with pytest.raises(ValueError, match="'auto'"):
        make_executor("local", None, 1, "auto")
    with pytest.raises(ValueError, match="workers=2"):
        make_executor("ray", 2, 1, "auto")
    with make_executor("local", 0, 1, None) as ex:
        assert isinstance(ex, LocalExecutor)
        assert (ex.workers, ex.threads) == (0, 1)


def test_ray_matches_local_and_sets_threads(pool: LocalExecutor, ray_executor: RayExecutor) -> None:
    import ray

    items = [{"seed": s} for s in range(6)]
    local = {item["seed"]: result for item, result in pool.map_unordered(tasks.seeded_values, items)}
    remote = {item["seed"]: result for item, result in ray_executor.map_unordered(tasks.seeded_values, items)}
    assert sorted(remote) == list(range(6))
    assert remote == local
    assert all(result["threads"] == 1 for result in remote.values())
    assert remote[0] != remote[1]

    info = ray_executor.describe()
    assert info["kind"] == "ray"
    assert info["address"] == "local"
    assert info["cluster_cpus"] == 2.0
    assert (info["threads"], info["slots"], info["nodes"]) == (1, 2, 1)
    assert info["ray"] == ray.__version__

    # a second executor reuses the running instance, gives each task 2 threads, and leaves Ray running
    with RayExecutor(threads=2) as wide:
        threads = [r["threads"] for _, r in wide.map_unordered(tasks.seeded_values, items[:2])]
        assert wide.describe()["slots"] == 1
    assert threads == [2, 2]
    assert ray.is_initialized()


def test_ray_failure_names_the_item(ray_executor: RayExecutor) -> None:
    with pytest.raises(TaskError) as caught:
        list(ray_executor.map_unordered(tasks.maybe_fail, [{"x": 5, "fail": True}, {"x": 6}]))
    assert caught.value.item == {"x": 5, "fail": True}
    assert caught.value.message == "ValueError: bad item 5"
    assert "in maybe_fail" in caught.value.remote_traceback


# -- the results log ------------------------------------------------------------------------------------------------


def _lines(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return [json.loads(line) for line in data.decode("ascii").splitlines()]


def test_results_log_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "results.jsonl"
    log = ResultsLog(path)
    assert path.parent.is_dir()
    assert log.load() == {}
    records = [
        {"key": "r0", "acc": {"-10": 0.25, "10": 0.875}, "snrs": [-10, 10]},
        {"key": "r1", "loss": float("nan"), "best": float("inf"), "note": "fine — two\nlines"},
        {"key": "r2", "nested": {"a": [1, {"b": None}]}, "ok": True},
    ]
    for record in records:
        log.append(record)
    assert (log.keys, len(log), "r1" in log, "r9" in log) == (["r0", "r1", "r2"], 3, True, False)

    again = ResultsLog(path)
    loaded = again.load()
    assert list(loaded) == ["r0", "r1", "r2"]
    assert loaded["r0"] == records[0]
    assert loaded["r2"] == records[2]
    assert math.isnan(loaded["r1"]["loss"])
    assert loaded["r1"]["best"] == math.inf
    assert loaded["r1"]["note"] == "fine — two\nlines"
    assert [r["key"] for r in again.records()] == ["r0", "r1", "r2"]
    assert len(path.read_bytes().splitlines()) == 3


def test_results_log_refuses_duplicates_and_bad_records(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    log = ResultsLog(path)
    log.append({"key": "a", "v": 1})
    with pytest.raises(ValueError, match="key 'a' is already recorded"):
        log.append({"key": "a", "v": 2})
    with pytest.raises(ValueError, match="key 'a' is already recorded"):
        ResultsLog(path).append({"key": "a", "v": 3})  # a fresh instance reads the file first
    with pytest.raises(ValueError, match="non-empty string 'key'"):
        log.append({"v": 4})
    with pytest.raises(ValueError, match="cannot be written as JSON"):
        log.append({"key": "b", "v": object()})
    assert _lines(path) == [{"key": "a", "v": 1}]


@pytest.mark.parametrize(
    "tail",
    [b'{"key": "r2", "va', b"\x00\x00\x00\x00\n"],  # a complete record without its newline is kept: see
    ids=["partial-line", "garbage-line"],  # tests/test_hardening_synth_log.py, which also checks the .rejected file
)
def test_results_log_repairs_a_torn_last_line(tmp_path: Path, tail: bytes, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "results.jsonl"
    log = ResultsLog(path)
    log.append({"key": "r0", "v": 0})
    log.append({"key": "r1", "v": 1})
    clean = path.read_bytes()
    os.chmod(path, 0o640)
    with open(path, "ab") as f:
        f.write(tail)

    fresh = ResultsLog(path)
    with caplog.at_level(logging.WARNING, logger="rfml.studies.results"):
        assert list(fresh.load()) == ["r0", "r1"]
    assert "torn last line" in caplog.text
    assert path.read_bytes() == clean  # repaired on disk
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    # no temporary left behind; the torn line is set aside, not deleted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.jsonl", "results.jsonl.rejected"]

    fresh.append({"key": "r2", "v": 2})
    assert _lines(path) == [{"key": "r0", "v": 0}, {"key": "r1", "v": 1}, {"key": "r2", "v": 2}]


def test_results_log_rejects_damage_a_crash_cannot_cause(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"key": "r0"}\n{"key": "r1", oops\n{"key": "r2"}\n')
    with pytest.raises(ResultsLogError, match=r"results\.jsonl: line 2 is not valid JSON"):
        ResultsLog(path).load()
    path.write_bytes(b'{"key": "r0"}\n{"key": "r1"}\n{"key": "r0", "v": 1}\n')
    with pytest.raises(ResultsLogError, match=r"results\.jsonl: key 'r0' is recorded twice \(lines 1 and 3\)"):
        ResultsLog(path).load()
    path.write_bytes(b'{"key": "r0"}\n[1, 2]\n')
    with pytest.raises(ResultsLogError, match="line 2 is not a JSON object with a string 'key'"):
        ResultsLog(path).load()


def test_results_log_reader_waits_for_a_write_in_progress(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    ResultsLog(path).append({"key": "r0"})
    loaded: list[list[str]] = []
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        fcntl = pytest.importorskip("fcntl")
        fcntl.flock(fd, fcntl.LOCK_EX)  # as ResultsLog.append holds it for its write
        os.write(fd, b'{"key": "r1", ')  # the first half of a line: what a reader sees mid-write
        reader = threading.Thread(target=lambda: loaded.append(list(ResultsLog(path).load())))
        reader.start()
        time.sleep(0.3)
        assert loaded == []  # it saw a torn tail, and waits for the lock before repairing
        os.write(fd, b'"v": 1}\n')
    finally:
        os.close(fd)  # releases the lock
    reader.join(timeout=10)
    assert loaded == [["r0", "r1"]]  # the finished line is kept, not repaired away
    assert _lines(path) == [{"key": "r0"}, {"key": "r1", "v": 1}]


def test_open_results_refuses_other_settings_and_restart_discards_the_old_runs(tmp_path: Path) -> None:
    settings = {"lr": 0.01, "model": "resnet"}
    log = open_results(tmp_path, "rfml-test-study", settings, {"config": {"note": "first"}})
    log.append({"key": "r0"})
    (tmp_path / "models").mkdir()
    header = json.loads((tmp_path / "study.json").read_text())
    assert header == {"format": "rfml-test-study", "fingerprint": settings, "config": {"note": "first"}}
    assert open_results(tmp_path, "rfml-test-study", settings, {}).keys == ["r0"]  # same settings: the runs count
    with pytest.raises(StudyConfigError, match=r"study\.json: the recorded runs .* \(lr: 0\.01 -> 0\.1\).*--restart"):
        open_results(tmp_path, "rfml-test-study", {**settings, "lr": 0.1}, {})
    with pytest.raises(StudyConfigError, match="field 'format' is 'rfml-test-study', expected 'rfml-other'"):
        open_results(tmp_path, "rfml-other", settings, {})
    assert (tmp_path / "results.jsonl").exists() and (tmp_path / "models").exists()  # a refusal touches nothing
    fresh = open_results(tmp_path, "rfml-test-study", {**settings, "lr": 0.1}, {}, restart=True, discard=["models"])
    assert fresh.load() == {} and not (tmp_path / "models").exists()
    assert json.loads((tmp_path / "study.json").read_text())["fingerprint"]["lr"] == 0.1


def test_machine_facts_and_their_report_line() -> None:
    info = machine_info()
    assert info["pid"] == os.getpid() and info["cpu_count"] == os.cpu_count()
    assert info["torch"] == torch.__version__ and info["torch_threads"] == torch.get_num_threads()
    assert "cpu_flags" not in info and json.loads(json.dumps(info)) == info
    line = machine_line(info)
    assert line.startswith(f"{os.cpu_count()}-core {info['cpu_model']} ({info['hostname']}), ")
    assert f"torch {torch.__version__}" in line and f"{torch.get_num_threads()} torch thread(s)" in line
    assert machine_line({"cpu_count": 4, "cpu_model": "x", "torch": "2.0"}) == "4-core x; torch 2.0"


def test_quiet_lightning_sends_prints_to_the_log_and_restores_the_loggers(tmp_path: Path) -> None:
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    original = rank_zero.level
    rank_zero.setLevel(logging.DEBUG)
    notice = "The 'train_dataloader' does not have many workers which may be a bottleneck."
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with quiet_lightning(tmp_path / "run" / "stdout.log"):
                print("a banner")
                assert rank_zero.level == logging.WARNING
                warnings.warn(notice, UserWarning, stacklevel=1)
            assert rank_zero.level == logging.DEBUG
            assert caught == []  # silenced inside the block
            warnings.warn(notice, UserWarning, stacklevel=1)
        assert [str(w.message) for w in caught] == [notice]  # and only there
    finally:
        rank_zero.setLevel(original)
    assert (tmp_path / "run" / "stdout.log").read_text() == "a banner\n"


WRITER = """
import sys
from rfml.studies.results import ResultsLog

log = ResultsLog(sys.argv[1])
for i in range(1_000_000):
    log.append({"key": f"r{i:07d}", "i": i, "payload": str(i) * 4096})
"""


def test_results_log_survives_a_killed_writer(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=tmp_path, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not (path.exists() and path.read_bytes().count(b"\n") >= 40):
            assert writer.poll() is None, writer.stderr.read().decode() if writer.stderr else "writer exited"
            assert time.monotonic() < deadline, "the writer wrote fewer than 40 records in 20 s"
            time.sleep(0.02)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        if writer.stderr:
            writer.stderr.close()
    assert writer.returncode == -signal.SIGKILL

    records = ResultsLog(path).load()
    n = len(records)
    assert n >= 40
    assert list(records) == [f"r{i:07d}" for i in range(n)]  # appended in order, none twice, none missing
    for i, record in enumerate(records.values()):
        assert record == {"key": f"r{i:07d}", "i": i, "payload": str(i) * 4096}
    assert [line["i"] for line in _lines(path)] == list(range(n))


def test_ray_runs_the_boosting_study_and_chooses_what_the_local_run_chooses(
    ray_executor: RayExecutor, snr_toy: dict[str, Any], tmp_path: Path
) -> None:
    """SNR Boosting of the toy study (``conftest.snr_toy``: 10 dB learnable, 0 dB pure noise) for the 10 dB target
    through Ray, against the same study run in this process: same seeds, so the same chosen SNRs, the same scores
    of every round and the same recorded trainings."""
    from rfml.studies.snr.config import SNRStudyConfig
    from rfml.studies.snr.study import Study, boost

    config = SNRStudyConfig.from_dict(tasks.toy_config(snr_toy["data"], targets=[10]))
    remote = boost(Study(config, tmp_path / "ray", executor=ray_executor, progress=False))
    local = {row["target"]: row for row in snr_toy["results"]["boost"]["rows"]}[10]
    assert [r["chosen"] for r in remote["rows"]] == [local["chosen"]] == [[10]]
    assert [r["rounds"] for r in remote["rows"]] == [local["rounds"]]
    ray_records = [json.loads(x) for x in (tmp_path / "ray" / "results.jsonl").read_text().splitlines()]
    here = snr_toy["study"].records
    assert {r["key"] for r in ray_records} <= set(here)  # the same trainings, named by their specs
    for record in ray_records:
        assert record["val_acc_best"] == here[record["key"]]["val_acc_best"]
        assert record["pred"] == here[record["key"]]["pred"]  # the same test predictions, label for label
    assert os.getpid() not in {r["machine"]["pid"] for r in ray_records}  # the trainings ran in Ray's workers
