"""ondevice.profile: statistics, MAC counts, interleaving, explicit threads, isolation, reports, bad input."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from ondevice.cli import main as ondevice_main
from ondevice.device.runner import OrtRunner, ProfileError, measure_interleaved, summarize_latency, tile_batch
from ondevice.examples import small_cnn, transformer_block
from ondevice.export import export_onnx
from ondevice.profile import TorchRunner, count_macs, profile
from ondevice.report import LatencyReport


def test_summary_statistics_are_the_percentiles_of_the_samples():
    samples = [0.001 * v for v in range(1, 101)]  # 1 .. 100 ms
    s = summarize_latency(samples, batch_size=4)
    assert s["n"] == 100
    assert s["median_ms"] == pytest.approx(50.5)
    assert s["p10_ms"] == pytest.approx(10.9)
    assert s["p90_ms"] == pytest.approx(90.1)
    assert s["iqr_ms"] == pytest.approx(75.25 - 25.75)
    assert s["samples_per_s"] == pytest.approx(4 / 0.0505)


def test_tile_batch_repeats_the_example_rows():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = tile_batch(a, 5)
    assert t.shape == (5, 3) and t.flags.c_contiguous
    np.testing.assert_array_equal(t, a[[0, 1, 0, 1, 0]])


def test_macs_come_from_torchs_flop_counter_and_match_the_layer_arithmetic():
    model, inputs = small_cnn(channels=2, length=256, width=16, num_classes=11)
    # conv 2->16 k7 at 256, conv 16->16 k5 at 128, conv 16->16 k3 at 64, linear 16->11
    assert count_macs(model, inputs) == 2 * 16 * 7 * 256 + 16 * 16 * 5 * 128 + 16 * 16 * 3 * 64 + 16 * 11
    block, x = transformer_block(d_model=32, heads=4, length=12)
    d, n = 32, 12
    # q/k/v and output projections, QK^T and AV, two FFN matmuls: fused CPU kernels are counted too
    assert count_macs(block, x) == n * d * 3 * d + n * d * d + 2 * n * n * d + 2 * n * d * 4 * d
    assert count_macs(block, torch.cat([x[0]] * 3)) == count_macs(block, x)  # per example


class _Recorder:
    def __init__(self, log, name, fail_at=None):
        self.log, self.name, self.fail_at = log, name, fail_at
        self.rss_before_bytes, self.peak_reset = 0, False

    def prepare(self, batch_size, warmup):
        self.log.append((self.name, "prepare", batch_size))

    def run(self, n):
        if self.fail_at is not None and len([e for e in self.log if e[0] == self.name]) >= self.fail_at:
            raise RuntimeError("boom")
        self.log.append((self.name, "run", n))
        return [0.001 * (len(self.log))] * n

    def peak_rss_bytes(self):
        return 123

    def close(self):
        self.log.append((self.name, "close", None))


def test_candidates_are_interleaved_round_by_round():
    log = []
    loaders = {("A", "torch", 1): lambda: _Recorder(log, "A"), ("B", "torch", 1): lambda: _Recorder(log, "B")}
    out = measure_interleaved(loaders, batch_sizes=[1], warmup=0, repeats=10, rounds=4, progress=None)
    runs = [(name, n) for name, op, n in log if op == "run"]
    assert runs == [("A", 3), ("B", 3), ("A", 3), ("B", 3), ("A", 2), ("B", 2), ("A", 2), ("B", 2)]
    assert [m["n"] for m in out] == [10, 10]
    assert [e[1] for e in log[:2]] == ["prepare", "prepare"]  # both warmed before either is timed
    assert [e[:2] for e in log[-2:]] == [("A", "close"), ("B", "close")]


def test_a_failing_runner_names_model_backend_and_batch_size():
    log = []
    loaders = {("net", "onnxruntime", 1): lambda: _Recorder(log, "net", fail_at=3)}
    with pytest.raises(ProfileError, match=r"model 'net' failed on backend 'onnxruntime' at batch size 8: boom"):
        measure_interleaved(loaders, batch_sizes=[1, 8], warmup=0, repeats=2, rounds=1)
    assert log[-1] == ("net", "close", None)  # closed on failure too

    def cannot_load():
        raise FileNotFoundError("no such graph")

    log.clear()
    loaders = {("ok", "torch", 1): lambda: _Recorder(log, "ok"), ("bad", "onnxruntime", 2): cannot_load}
    with pytest.raises(ProfileError, match=r"model 'bad' on backend 'onnxruntime': could not load: no such graph"):
        measure_interleaved(loaders, batch_sizes=[1], warmup=0, repeats=2, rounds=1)
    assert log == [("ok", "close", None)]  # the runners loaded before it are closed


def test_torch_runner_sets_and_restores_threads():
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append(torch.get_num_threads())
            return x * 2

    before = torch.get_num_threads()
    runner = TorchRunner(Probe(), torch.ones(1, 3), threads=1)
    runner.prepare(4, warmup=2)
    torch.set_num_threads(2)  # another runner's turn in between
    samples = runner.run(3)
    runner.close()
    assert len(samples) == 3 and all(s > 0 for s in samples)
    assert set(seen) == {1}
    assert torch.get_num_threads() == before


@pytest.fixture(scope="module")
def cnn_work(tmp_path_factory):
    """One profile of a small CNN on every backend, with its exported files kept: (report, work folder)."""
    work = tmp_path_factory.mktemp("work")
    model, inputs = small_cnn(width=16, length=256)
    report = profile(model, inputs, batch_sizes=(1, 4), warmup=2, repeats=12, rounds=3, workdir=work, progress=False)
    return report, work


@pytest.fixture(scope="module")
def cnn_report(cnn_work):
    return cnn_work[0]


def test_ort_runner_uses_the_requested_threads(cnn_work):
    _, work = cnn_work
    path = work / "Sequential.onnx"  # kept in the workdir the caller gave
    x = small_cnn(width=16, length=256)[1][0].numpy()
    runner = OrtRunner(path, {"x": x}, threads=2)
    options = runner.session.get_session_options()
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
    runner.prepare(3, warmup=1)
    assert runner.feeds["x"].shape == (3, 2, 256)
    assert len(runner.run(2)) == 2
    with pytest.raises(ValueError, match=r"graph's inputs are \['x'\], the example gives \['y'\]"):
        OrtRunner(path, {"y": x}, threads=1)


def test_profile_reports_every_backend_and_batch_size(cnn_report):
    r = cnn_report
    assert [(m.backend, m.batch_size) for m in r.measurements] == [
        ("torch", 1), ("onnxruntime", 1), ("onnxruntime-int8", 1),
        ("torch", 4), ("onnxruntime", 4), ("onnxruntime-int8", 4),
    ]  # fmt: skip
    for m in r.measurements:
        assert m.n == 12 and len(m.samples_ms) == 12
        assert m.p10_ms <= m.median_ms <= m.p90_ms
        assert m.samples_per_s == pytest.approx(m.batch_size * 1e3 / m.median_ms)
        assert m.threads == 1
    # ONNX Runtime ran in worker processes of its own: their peak memory is theirs alone.
    ort_cells = [m for m in r.measurements if m.backend.startswith("onnxruntime")]
    assert all(m.peak_rss_exclusive and m.peak_rss_bytes > 10 * 2**20 for m in ort_cells)
    model, inputs = small_cnn(width=16, length=256)
    assert r.models["Sequential"]["params"] == sum(p.numel() for p in model.parameters())
    assert r.models["Sequential"]["macs"] == count_macs(model, inputs)
    env = r.environment
    assert env["torch"] == torch.__version__ and env["onnxruntime"] and env["onnx"]
    assert env["cpu_count"] >= 1 and env["cpu_model"] and isinstance(env["cpu_flags"], list)
    assert env["torch_threads"] >= 1
    assert any("parallel backend" in line for line in env["torch_parallel_info"])
    assert r.settings["graph_optimization_level"] == "all" and r.settings["threads"] == [1]
    assert r.ratio("onnxruntime", "torch", 4) == pytest.approx(
        r.get("onnxruntime", 4).median_ms / r.get("torch", 4).median_ms
    )


def test_report_round_trips_through_json_and_renders(cnn_report, tmp_path):
    paths = cnn_report.save(tmp_path)
    loaded = LatencyReport.load_json(paths["json"])
    assert loaded.measurements == cnn_report.measurements
    assert loaded.models == cnn_report.models
    md = paths["markdown"].read_text()
    m = cnn_report.get("onnxruntime-int8", 4)
    assert f"| Sequential | onnxruntime-int8 | 1 | 4 | {m.median_ms:.4g} |" in md
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latency.json", "latency.md", "latency.png"]
    with pytest.raises(ValueError, match="field 'format'"):
        (tmp_path / "other.json").write_text(json.dumps({"format": "x"}))
        LatencyReport.load_json(tmp_path / "other.json")


def test_cli_profile_runs_factories_in_their_own_processes_and_compares_them(tmp_path, capsys):
    out = tmp_path / "report"
    timing = ["--warmup", "1", "--repeats", "4", "--rounds", "2"]
    models = ["--model", "ondevice.examples:small_cnn", "--model", "block=ondevice.examples:transformer_block"]
    assert ondevice_main(["profile", *models, "--backends", "torch,onnxruntime", *timing, "--out", str(out)]) == 0
    report = LatencyReport.load_json(out / "latency.json")
    assert sorted(report.models) == ["block", "small_cnn"]
    assert [(m.model, m.backend) for m in report.measurements] == [
        (c, b) for c in ("small_cnn", "block") for b in ("torch", "onnxruntime")
    ]
    assert all(m.n == 4 for m in report.measurements)
    assert all(m.peak_rss_exclusive for m in report.measurements)  # every backend had its own process
    assert (out / "latency.png").is_file() and (out / "latency.md").is_file()
    assert "| block | torch | 1 | 1 |" in capsys.readouterr().out
    assert ondevice_main(["profile", "--model", "nowhere.mod:f"]) == 2
    assert "error: factory 'nowhere.mod:f': cannot import module" in capsys.readouterr().err
    assert ondevice_main(["profile", "--model", "a=x.y:f,a=x.y:g"]) == 2
    assert "two models are named 'a'" in capsys.readouterr().err


def test_threads_sweep_gives_one_cell_per_thread_count():
    model, inputs = small_cnn(width=8, length=64)
    report = profile(model, inputs, backends=("torch",), threads=(1, 2), warmup=1, repeats=3, progress=False)
    assert [m.threads for m in report.measurements] == [1, 2]
    assert not any(m.peak_rss_exclusive for m in report.measurements)  # a module object is measured in this process


class _BatchOneOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(8, 3)

    def forward(self, x):
        return self.linear(x.reshape(1, 8))


def test_forward_failure_names_the_backend_and_batch_size():
    x = torch.randn(1, 8)
    with pytest.raises(ProfileError, match=r"failed on backend 'torch' at batch size 4"):
        profile(_BatchOneOnly(), x, backends=("torch",), batch_sizes=(1, 4), warmup=0, repeats=2, progress=False)
    with pytest.raises(ProfileError, match=r"export for backend 'onnxruntime' failed \(tracing at batch size 2\)"):
        profile(_BatchOneOnly(), x, backends=("onnxruntime",), warmup=0, repeats=2, progress=False)


def test_fixed_batch_onnx_file_fails_at_the_batch_size_it_cannot_take(tmp_path):
    model, inputs = small_cnn(width=8, length=64)
    path = export_onnx(model, inputs, tmp_path / "fixed.onnx", dynamic_batch=False)
    with pytest.raises(ProfileError, match=r"model 'fixed' failed on backend 'onnxruntime' at batch size 3"):
        profile(path, inputs, backends=("onnxruntime",), batch_sizes=(1, 3), warmup=0, repeats=2, progress=False)
    with pytest.raises(ValueError, match=r"the 'torch' backend needs an nn\.Module or a factory"):
        profile(path, inputs, backends=("torch",), progress=False)


def test_bad_arguments_are_named():
    model, inputs = small_cnn(width=8, length=64)
    with pytest.raises(ValueError, match="unknown backends"):
        profile(model, inputs, backends=("tflite",), progress=False)
    with pytest.raises(ValueError, match="example_inputs are required"):
        profile(model, progress=False)
    with pytest.raises(ValueError, match=r"factory 'no_such_pkg\.mod:make': cannot import module"):
        profile("no_such_pkg.mod:make", progress=False)


def test_in_process_mode_measures_the_same_cells(cnn_work):
    isolated, work = cnn_work
    x = small_cnn(width=16, length=256)[1]
    backends = ("onnxruntime", "onnxruntime-int8")
    report = profile(work / "Sequential.onnx", x, backends=backends, warmup=1, repeats=3, isolate=False, progress=False)
    cells = [(m.model, m.backend, m.batch_size) for m in report.measurements]
    assert cells == [(m.model, m.backend, m.batch_size) for m in isolated.measurements if m.backend in backends][:2]
    assert not any(m.peak_rss_exclusive for m in report.measurements)
    assert report.settings["isolate"] is False


def test_count_macs_adds_the_gate_products_of_recurrent_layers() -> None:
    from ondevice.profile import count_macs

    lstm = torch.nn.LSTM(2, 16, num_layers=2, batch_first=True)
    gru = torch.nn.GRU(3, 8, bidirectional=True, batch_first=True)
    # Per step: 4 gates × (input + hidden) × hidden per layer; layer 2 reads layer 1's 16 outputs.
    assert count_macs(lstm, torch.randn(1, 10, 2)) == 10 * (4 * (2 + 16) * 16 + 4 * (16 + 16) * 16)
    # GRU: 3 gates, two directions.
    assert count_macs(gru, torch.randn(1, 7, 3)) == 7 * 2 * 3 * (3 + 8) * 8
