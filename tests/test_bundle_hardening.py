"""Bundles and device results are untrusted input: paths stay inside the bundle, every field is checked, and
`ondevice ingest` checks every number (and the file's size) before it writes anything.

One tiny bundle is built per module and measured once in this process (2 timed calls per cell); each test
edits a copy of its manifest or of its results.
"""

import builtins
import copy
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ondevice.bundle import ingest, write_bundle
from ondevice.cli import main as ondevice_main
from ondevice.device import runner
from ondevice.device.manifest import BundleError, read_manifest, sha256_file
from ondevice.device.runner import profile_bundle
from ondevice.errors import InputError
from ondevice.examples import small_cnn
from ondevice.report import LatencyReport

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    models = {"cnn": small_cnn(width=8, length=64)}
    out = tmp_path_factory.mktemp("b") / "bundle"
    return write_bundle(models, out, batch_sizes=(1, 2), int8=False, warmup=0, repeats=2, rounds=1)


@pytest.fixture(scope="module")
def results(bundle):
    """The results document the board would write, measured here in this process."""
    return profile_bundle(bundle, isolate=False)


def _copy_bundle(bundle: Path, tmp_path: Path, edit=None) -> Path:
    """A copy of the bundle in tmp_path/bundle, its manifest changed by `edit(manifest)`."""
    copied = tmp_path / "bundle"
    shutil.copytree(bundle, copied)
    if edit is not None:
        path = copied / "manifest.json"
        manifest = json.loads(path.read_text())
        edit(manifest)
        path.write_text(json.dumps(manifest))
    return copied


def _write_results(results: dict, folder: Path, edit=None, manifest: Path | None = None) -> Path:
    """The results as a file alone in `folder`, changed by `edit(doc)`; re-signed for `manifest` if given."""
    doc = copy.deepcopy(results)
    if manifest is not None:
        doc["manifest_sha256"] = sha256_file(manifest)
    if edit is not None:
        edit(doc)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "results-board-1t.json"
    path.write_text(json.dumps(doc))
    return path


def _nothing_written(*folders: Path) -> None:
    for folder in folders:
        written = [p.name for p in folder.glob("*")] if folder.exists() else []
        assert not [n for n in written if n.startswith(("latency", ".latency")) or ".report." in n], written


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ------------------------------------------------------------------------------------ paths stay inside


def _out_of_bundle(how: str):
    def edit(bundle: Path) -> tuple[str, str]:
        """Move the model (or input) out of the bundle and point at it; returns (field, why)."""
        outside = bundle.parent / "outside"
        outside.mkdir()
        manifest_path = bundle / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        if how == "input":
            shutil.move(bundle / "inputs" / "cnn.x.npy", outside / "cnn.x.npy")
            manifest["models"][0]["inputs"][0]["file"] = "../outside/cnn.x.npy"
            manifest_path.write_text(json.dumps(manifest))
            return "models[0].inputs[0].file", "got '../outside/cnn.x.npy', which climbs out with '..'"
        moved = Path(shutil.move(bundle / "cnn.onnx", outside / "cnn.onnx")).resolve()
        if how == "dotdot":
            manifest["models"][0]["file"] = "../outside/cnn.onnx"
            why = "got '../outside/cnn.onnx', which climbs out with '..'"
        elif how == "absolute":
            manifest["models"][0]["file"] = str(moved)
            why = f"got '{moved}', an absolute path"
        else:
            (bundle / "cnn.onnx").symlink_to(moved)
            why = f"got 'cnn.onnx', which resolves to {moved}, outside the bundle {bundle.resolve()}"
        manifest_path.write_text(json.dumps(manifest))
        return "models[0].file", why

    return edit


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "input"])
def test_a_manifest_path_out_of_the_bundle_is_refused(bundle, results, tmp_path, capsys, how):
    copied = _copy_bundle(bundle, tmp_path)
    field, why = _out_of_bundle(how)(copied)
    manifest_path = copied / "manifest.json"
    with pytest.raises(BundleError) as info:
        read_manifest(copied)
    message = str(info.value)
    assert message.startswith(f"{manifest_path}: field '{field}' must be a relative path inside the bundle")
    assert why in message
    # The device entry: one line, exit code 2, nothing measured.
    out = tmp_path / "r.json"
    assert runner.main([str(copied), "--in-process", "--out", str(out)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(manifest_path) in line and f"field '{field}'" in line
    assert not out.exists()
    # The host: results signed for this manifest are refused too, and nothing is written.
    results_path = _write_results(results, tmp_path / "res", manifest=manifest_path)
    args = ["ingest", str(results_path), "--bundle", str(copied), "--out", str(tmp_path / "report")]
    assert ondevice_main(args) == 2
    assert f"field '{field}'" in _one_line(capsys.readouterr().err)
    _nothing_written(tmp_path / "report", results_path.parent)


# ------------------------------------------------------------------------------- every field is checked


def _put(*keys_and_value):
    *keys, value = keys_and_value

    def edit(doc):
        target = doc
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return edit


def _duplicate_entry(manifest):
    manifest["models"].append(copy.deepcopy(manifest["models"][0]))


MANIFEST_CASES = {
    "inputs: 5": (_put("models", 0, "inputs", 5), "models[0].inputs", "must be a non-empty list"),
    "models: [7]": (_put("models", [7]), "models[0]", "must be an object"),
    "repeats: -1": (_put("settings", "repeats", -1), "settings.repeats", "must be an integer >= 1"),
    "warmup: '10'": (_put("settings", "warmup", "10"), "settings.warmup", "must be an integer >= 0"),
    "rounds: true": (_put("settings", "rounds", True), "settings.rounds", "must be an integer >= 1"),
    "settings: []": (_put("settings", []), "settings", "must be an object"),
    "version: true": (_put("version", True), "version", "must be 1"),
    "bundle_id: 5": (_put("bundle_id", 5), "bundle_id", "must be a non-empty string"),
    "name: 3": (_put("models", 0, "name", 3), "models[0].name", "must be a non-empty string"),
    "backend": (_put("models", 0, "backend", "tensorrt"), "models[0].backend", "must be one of"),
    "file: 7": (_put("models", 0, "file", 7), "models[0].file", "must be a relative path inside the bundle"),
    "sha256: null": (_put("models", 0, "sha256", None), "models[0].sha256", "must be 64 hex digits"),
    "batch_sizes: 2": (_put("models", 0, "batch_sizes", 2), "models[0].batch_sizes", "must be a non-empty list"),
    "batch_sizes: [0]": (_put("models", 0, "batch_sizes", [0]), "models[0].batch_sizes[0]", "must be an integer >= 1"),
    "batch_sizes: [1, 1]": (_put("models", 0, "batch_sizes", [1, 1]), "models[0].batch_sizes[1]", "must be a batch"),
    "inputs: ['x']": (_put("models", 0, "inputs", ["x"]), "models[0].inputs[0]", "must be an object"),
    "input name": (_put("models", 0, "inputs", 0, "name", ""), "models[0].inputs[0].name", "must be a non-empty"),
    "params: -3": (_put("models", 0, "params", -3), "models[0].params", "must be null or an integer >= 0"),
    "no sha256": (lambda m: m["models"][0].pop("sha256"), "models[0].sha256", "is missing"),
    "duplicate": (_duplicate_entry, "models[1]", "must be a (name, backend) pair not already in models[0]"),
}


@pytest.mark.parametrize("case", MANIFEST_CASES)
def test_a_mistyped_manifest_field_is_named_with_exit_code_2(bundle, results, tmp_path, capsys, case):
    edit, field, expected = MANIFEST_CASES[case]
    copied = _copy_bundle(bundle, tmp_path, edit)
    manifest_path = copied / "manifest.json"
    with pytest.raises(BundleError, match=f"^{re.escape(f'{manifest_path}: field {field!r}')}"):
        read_manifest(copied)
    out = tmp_path / "r.json"
    assert runner.main([str(copied), "--in-process", "--out", str(out)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"error: {manifest_path}: field '{field}' {expected}"), line
    assert not out.exists()
    # `ondevice ingest` reads the same manifest: the same message, exit code 2.
    results_path = _write_results(results, tmp_path / "res", manifest=manifest_path)
    assert ondevice_main(["ingest", str(results_path), "--bundle", str(copied), "--out", str(tmp_path / "rep")]) == 2
    assert f"{manifest_path}: field '{field}' {expected}" in _one_line(capsys.readouterr().err)
    _nothing_written(tmp_path / "rep")


def test_python_m_ondevice_device_gives_one_line_and_exit_code_2(bundle, tmp_path):
    copied = _copy_bundle(bundle, tmp_path, _put("models", 0, "inputs", 5))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "ondevice.device", str(copied), "--in-process"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    line = _one_line(proc.stderr)
    assert line == (
        f"error: {copied / 'manifest.json'}: field 'models[0].inputs' must be a non-empty list of objects "
        "{name, file}; got 5"
    )
    assert not list(copied.glob("results-*"))


def test_the_device_entry_checks_its_own_options(bundle, tmp_path, capsys):
    for option in (["--repeats", "-1"], ["--rounds", "0"], ["--warmup", "-2"], ["--threads", "0"]):
        with pytest.raises(SystemExit) as info:
            runner.main([str(bundle), "--in-process", "--out", str(tmp_path / "r.json"), *option])
        assert info.value.code == 2
        assert option[0] in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize(
    ("models", "kwargs", "expected"),
    [
        ({"../evil": None}, {}, "model name '../evil' must be"),
        ({".hidden": None}, {}, "model name '.hidden' must be"),
        ({"cnn": None}, {"repeats": -1}, "repeats must be an integer >= 1; got -1"),
        ({"cnn": None}, {"batch_sizes": (1, 0)}, "batch_sizes[1] must be an integer >= 1; got 0"),
        ({"cnn": None}, {"warmup": 1.5}, "warmup must be an integer >= 0; got 1.5"),
    ],
)
def test_write_bundle_refuses_names_and_settings_its_runner_would_refuse(tmp_path, models, kwargs, expected):
    models = {name: small_cnn(width=4, length=16) for name in models}
    with pytest.raises(InputError) as info:
        write_bundle(models, tmp_path / "sub" / "b", **kwargs)
    assert expected in str(info.value)
    assert not list(tmp_path.rglob("*.onnx"))
    assert not (tmp_path / "sub").exists() or not list((tmp_path / "sub").iterdir())


# ------------------------------------------------------------------------------- ingest trusts no number


def _measurement(**changes):
    return lambda doc: doc["measurements"][0].update(changes)


RESULTS_CASES = {
    "nan median": (_measurement(median_ms=float("nan")), "measurements[0].median_ms", "must be a finite number > 0"),
    "negative median": (_measurement(median_ms=-1.0), "measurements[0].median_ms", "must be a finite number > 0"),
    "zero p10": (_measurement(p10_ms=0.0), "measurements[0].p10_ms", "must be a finite number > 0"),
    "string p90": (_measurement(p90_ms="fast"), "measurements[0].p90_ms", "must be a finite number > 0"),
    "inf throughput": (
        _measurement(samples_per_s=float("inf")),
        "measurements[0].samples_per_s",
        "must be a finite number > 0",
    ),
    "nan iqr": (_measurement(iqr_ms=float("nan")), "measurements[0].iqr_ms", "must be a finite number >= 0"),
    "nan sample": (
        lambda d: d["measurements"][0]["samples_ms"].__setitem__(1, float("nan")),
        "measurements[0].samples_ms[1]",
        "must be a finite number >= 0",
    ),
    "n: 0": (_measurement(n=0), "measurements[0].n", "must be an integer >= 1"),
    "n: true": (_measurement(n=True), "measurements[0].n", "must be an integer >= 1"),
    "samples short": (_measurement(n=3), "measurements[0].samples_ms", "must be a list of n = 3 numbers"),
    "peak rss": (_measurement(peak_rss_bytes=-5), "measurements[0].peak_rss_bytes", "must be null or an integer"),
    "no median": (lambda d: d["measurements"][0].pop("median_ms"), "measurements[0].median_ms", "is missing"),
    "foreign model": (_measurement(model="evil"), "measurements[0].model", "must be one of the bundle's models"),
    "foreign backend": (
        _measurement(backend="onnxruntime-int8"),
        "measurements[0].backend",
        "must be one of the backends",
    ),
    "foreign batch": (_measurement(batch_size=3), "measurements[0].batch_size", "must be one of the batch sizes"),
    "threads: 0": (_measurement(threads=0), "measurements[0].threads", "must be an integer >= 1"),
    "duplicate cell": (
        lambda d: d["measurements"].append(copy.deepcopy(d["measurements"][0])),
        "measurements[2]",
        "must be a cell not already measured",
    ),
    "empty measurements": (_put("measurements", []), "measurements", "must be a non-empty list"),
    "measurement: 7": (_put("measurements", [7]), "measurements[0]", "must be an object"),
    "environment: 5": (_put("environment", 5), "environment", "must be an object"),
    "settings: 'x'": (_put("settings", "x"), "settings", "must be an object"),
}


@pytest.mark.parametrize("case", RESULTS_CASES)
def test_ingest_refuses_bad_numbers_and_foreign_cells_and_writes_nothing(bundle, results, tmp_path, capsys, case):
    edit, field, expected = RESULTS_CASES[case]
    results_path = _write_results(results, tmp_path / "res", edit)
    with pytest.raises(BundleError, match=f"^{re.escape(f'{results_path}: field {field!r}')}"):
        ingest(results_path, bundle)
    # Both output places: --out, and beside the results.
    for out in (["--out", str(tmp_path / "report")], []):
        assert ondevice_main(["ingest", str(results_path), "--bundle", str(bundle), *out]) == 2
        line = _one_line(capsys.readouterr().err)
        assert f"{results_path}: field '{field}' {expected}" in line, line
    _nothing_written(tmp_path / "report", results_path.parent)
    assert [p.name for p in results_path.parent.iterdir()] == [results_path.name]


def test_ingest_takes_the_model_facts_from_the_bundle_not_the_results(bundle, results, tmp_path):
    results_path = _write_results(results, tmp_path / "res", _put("models", "cnn", "params", "many"))
    report = ingest(results_path, bundle)
    entry = read_manifest(bundle)["models"][0]
    assert report.models == {"cnn": {"params": entry["params"], "macs": entry["macs"]}}
    assert entry["params"] > 0
    assert sorted((m.model, m.backend, m.batch_size) for m in report.measurements) == [
        ("cnn", "onnxruntime", 1), ("cnn", "onnxruntime", 2),
    ]  # fmt: skip


def _guard_reads(monkeypatch, path: Path) -> None:
    """Fail the test if anything opens `path` (builtins.open, and io.open that pathlib uses)."""
    real_open = builtins.open

    def guarded(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and Path(file) == path:
            raise AssertionError(f"{path} was opened; its size should have refused it first")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    monkeypatch.setattr(io, "open", guarded)


def test_an_oversized_results_file_is_refused_before_it_is_read(bundle, tmp_path, capsys, monkeypatch):
    from ondevice import bundle as bundle_module

    cap = bundle_module.MAX_RESULTS_BYTES
    assert cap == 16 * 2**20
    big = tmp_path / "res" / "results-board-1t.json"
    big.parent.mkdir()
    with open(big, "wb") as f:
        f.truncate(cap + 1)  # sparse: costs no disk
    _guard_reads(monkeypatch, big)
    with pytest.raises(BundleError) as info:
        ingest(big, bundle)
    assert str(info.value) == (
        f"{big}: the device results file is {cap + 1:,} bytes, over the cap of {cap:,} bytes; raise it with "
        "ingest(..., max_bytes=N) or `ondevice ingest --max-results-mib N`"
    )
    assert ondevice_main(["ingest", str(big), "--bundle", str(bundle), "--out", str(tmp_path / "report")]) == 2
    assert "over the cap of 16,777,216 bytes" in _one_line(capsys.readouterr().err)
    _nothing_written(tmp_path / "report", big.parent)


def test_the_results_cap_is_raised_by_keyword_and_flag(bundle, results, tmp_path, capsys):
    results_path = _write_results(results, tmp_path / "res")
    size = results_path.stat().st_size
    with pytest.raises(BundleError, match=f"is {size:,} bytes, over the cap of {size - 1:,} bytes"):
        ingest(results_path, bundle, max_bytes=size - 1)
    assert len(ingest(results_path, bundle, max_bytes=size).measurements) == 2
    args = ["ingest", str(results_path), "--bundle", str(bundle), "--out", str(tmp_path / "report")]
    assert ondevice_main([*args, "--max-results-mib", str(1 / 2**20)]) == 2  # a one-byte cap
    assert "over the cap of 1 bytes" in _one_line(capsys.readouterr().err)
    assert ondevice_main([*args, "--max-results-mib", "0"]) == 2
    assert "--max-results-mib" in capsys.readouterr().err
    _nothing_written(tmp_path / "report")


def test_a_results_path_that_is_not_a_file_is_refused(bundle, tmp_path):
    folder = tmp_path / "results.json"
    folder.mkdir()
    with pytest.raises(BundleError, match=f"^{folder}: the device results file must be a regular file"):
        ingest(folder, bundle)


def test_results_nested_too_deep_to_parse_are_refused(bundle, tmp_path, capsys):
    deep = tmp_path / "res" / "results-board-1t.json"
    deep.parent.mkdir()
    deep.write_text("[" * 200_000)
    with pytest.raises(BundleError, match=f"^{deep}: the device results file is not valid JSON"):
        ingest(deep, bundle)
    assert ondevice_main(["ingest", str(deep), "--bundle", str(bundle)]) == 2
    assert "is not valid JSON" in _one_line(capsys.readouterr().err)
    _nothing_written(deep.parent)


# ------------------------------------------------------------------------------------ reports themselves


def test_a_report_that_fails_to_render_writes_nothing(bundle, results, tmp_path, monkeypatch):
    report = ingest(_write_results(results, tmp_path / "res"), bundle)

    def broken_plot(self, path):
        raise RuntimeError("no plot today")

    monkeypatch.setattr(LatencyReport, "plot", broken_plot)
    with pytest.raises(RuntimeError, match="no plot today"):
        report.save(tmp_path / "report")
    assert list((tmp_path / "report").iterdir()) == []


def test_a_saved_report_with_a_nan_is_refused_on_load(bundle, results, tmp_path):
    report = ingest(_write_results(results, tmp_path / "res"), bundle)
    path = report.save_json(tmp_path / "latency.json")
    data = json.loads(path.read_text())
    data["measurements"][1]["median_ms"] = float("nan")
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"^{path}: field 'measurements\[1\].median_ms' must be a finite number > 0"):
        LatencyReport.load_json(path)
