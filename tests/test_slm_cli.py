"""The `slm` command: the device path of the search end to end, profile, export, and the dispatch table."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import onnx
import onnxruntime as ort
import yaml
from test_slm_model import check_graphs_at_other_lengths

from slm.arch import ArchConfig
from slm.cli import main
from slm.export import random_model
from slm.latency import LatencyPredictor, LatencyRecord, LatencyTable, features
from slm.search import Budget, Evaluated, Objective, pareto_front
from slm.search.device import STATE_NAME

REPO = Path(__file__).resolve().parents[1]
TINY_SPACE = [
    "--vocab-size", "256", "--context-length", "512", "--hidden-sizes", "64,96,128", "--num-layers", "1,2",
    "--head-dims", "32", "--prompt-length", "16", "--past-length", "32",
]  # fmt: skip
QUICK_TIMING = ["--threads", "1", "--warmup", "1", "--repeats", "2", "--rounds", "1"]


def run_device_without_torch(bundle: Path, out: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """`python -m ondevice.device` where `import torch` fails, as on a board with numpy and onnxruntime only."""
    shadow = tmp_path / "shadow" / "torch"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('torch is not on this board')\n")
    code = (
        "import sys, runpy; sys.modules['torch'] = None; sys.argv = ['ondevice.device', *sys.argv[1:]]; "
        "runpy.run_module('ondevice.device', run_name='__main__')"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow.parent), str(REPO)])}
    args = [str(bundle), "--threads", "1", "--repeats", "5", "--rounds", "2", "--in-process", "--out", str(out)]
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=600)


def law_predictor(path: Path) -> Path:
    """A predictor fitted on latencies made up from a known law over shapes of TINY_SPACE, saved to ``path``.

    Calibrating on this machine means exporting eight graph pairs; `test_slm_latency` covers that path, so here
    the search screens with this one and only the shortlist is exported (one- and two-layer shapes: cheap to export).
    """
    base = ArchConfig.from_name("tiny").replace(vocab_size=256, context_length=512, head_dim=32, num_kv_heads=None)
    configs = {
        f"c{h}x{n}x{f}": base.replace(hidden_size=h, num_layers=n, num_heads=h // 32, num_kv_heads=h // 32, ffn_size=f)
        for h, n, f in [(64, 1, 128), (64, 3, 256), (96, 2, 192), (96, 4, 384), (128, 1, 512), (128, 3, 256),
                        (128, 4, 384), (64, 2, 192), (96, 1, 256)]
    }  # fmt: skip
    records = []
    for name, config in configs.items():
        for kind, length in (("prefill", 16), ("decode", 32)):
            f = features(config, kind, length)
            ms = 0.05 + 2e-6 * f["macs"] + 1e-7 * f["weight_bytes"] + 0.01 * f["num_layers"]
            records.append(LatencyRecord(name, kind, length, "onnxruntime", 1, ms, 0.9 * ms, 1.1 * ms))
    return LatencyPredictor.fit(LatencyTable(records, configs)).save_json(path)


def test_device_search_bundles_the_shortlist_and_picks_the_fastest_from_the_board(tmp_path, capsys):
    bundle, out = tmp_path / "bundle", tmp_path / "search"
    predictor = law_predictor(tmp_path / "law.json")
    argv = ["search", "--budget", "50k:400k", *TINY_SPACE, "--predictor", str(predictor), "--top-k", "2"]
    argv += ["--population", "8", "--generations", "2", "--measure-front", "3", "--margin", "0"]
    argv += ["--device-bundle", str(bundle), "--out", str(out)]
    assert main(argv + QUICK_TIMING) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    state = json.loads((bundle / STATE_NAME).read_text())
    # The bundle holds the screened front up to --measure-front shapes, and at least --top-k.
    screened = [Evaluated.from_dict(e, "state") for e in state["screened"]]
    inside = [e for e in screened if Budget.parse("50k:400k").contains(e.config)]
    front = pareto_front([e.metrics for e in inside], ("decode_ms", "prefill_ms"))
    timed = max(2, min(len(front), 3))  # the law's decode and prefill agree here: a front of one, so top-k fills
    assert len(state["configs"]) == timed
    assert {inside[i].config for i in front} & {ArchConfig.from_dict(c) for c in state["configs"].values()}
    assert len(manifest["models"]) == 2 * timed  # a prefill and a decode graph per shape
    for entry in manifest["models"]:  # the fast graphs (slm.graphs), their weights in a file beside them
        graph = onnx.load(str(bundle / entry["file"]), load_external_data=False)
        assert graph.producer_name == "slm.graphs"
        locations = {d.value for t in graph.graph.initializer for d in t.external_data if d.key == "location"}
        assert len(locations) == 1 and (bundle / locations.pop()).is_file()
    assert not (out / "predictor.json").exists()  # the given predictor screened the space: nothing calibrated

    results = tmp_path / "results.json"
    proc = run_device_without_torch(bundle, results, tmp_path)
    assert proc.returncode == 0, proc.stderr
    measured = json.loads(results.read_text())
    assert "torch" not in measured["environment"]

    assert main(["search", "--ingest", str(results), "--bundle", str(bundle), "--out", str(out)]) == 0
    # The fastest by the board's own numbers: decode and prefill, each over its median across the shapes.
    by_alias = {m["model"]: m["median_ms"] for m in measured["measurements"]}
    timings = {}
    for alias, candidate in state["aliases"].items():
        name, kind = candidate.split("/")
        timings.setdefault(name, {})[kind.split("@")[0]] = by_alias[alias]
    medians = {k: statistics.median(t[k] for t in timings.values()) for k in ("decode", "prefill")}
    score = {n: t["decode"] / medians["decode"] + t["prefill"] / medians["prefill"] for n, t in timings.items()}
    fastest = min(score, key=score.get)
    front_json = json.loads((out / "front.json").read_text())
    assert front_json["chosen"] == fastest
    assert {k: front_json["settings"][k] for k in ("top_k", "measure_front", "margin")} == {
        "top_k": 2,
        "measure_front": 3,
        "margin": 0.0,
    }
    assert front_json["counts"] == {
        "screened": len(screened),
        "screened_front": len(front),
        "front_measured": min(len(front), timed),
        "near_best": 1,  # --margin 0: the best-scored shape alone, which the bundle holds
        "near_best_measured": 1,
        "measured": timed,
        "confirmed": 0,  # the board timed the bundle in one run
        "predicted_only": len({e.config for e in screened}) - timed,
    }
    assert f"timed for real: {timed} shapes; predicted only: {len(screened) - timed} of {len(screened)}" in (
        capsys.readouterr().out
    )
    chosen = yaml.safe_load((out / "chosen.yaml").read_text())
    assert ArchConfig.from_dict(chosen["model"]["init_args"]["arch"]) == ArchConfig.from_dict(state["configs"][fastest])
    assert chosen["data"]["init_args"]["vocab_size"] == 256
    assert (out / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_host_search_times_front_and_near_best_in_groups_then_chooses_from_a_replicated_confirmation(tmp_path, capsys):
    out = tmp_path / "search"
    argv = ["search", "--budget", "50k:400k", *TINY_SPACE, "--predictor", str(law_predictor(tmp_path / "law.json"))]
    argv += ["--population", "8", "--generations", "2", "--top-k", "5", "--measure-front", "5", "--margin", "0.08"]
    argv += ["--group-size", "4", "--confirm", "2", "--confirm-replicas", "2", "--out", str(out)]
    assert main(argv + QUICK_TIMING) == 0
    front = json.loads((out / "front.json").read_text())
    counts = front["counts"]
    assert counts["measured"] == len(front["measured"]) == 5 and counts["confirmed"] == 2
    assert counts["predicted_only"] == counts["screened"] - 5
    assert front["settings"] | {"margin": 0.08, "confirm": 2, "measure_front": 5} == front["settings"]
    # the two best measured, timed again; the choice is the better of the two by that run alone
    measured = {e["name"]: e["metrics"] for e in front["measured"]}
    objective = Objective({"decode_ms": 1.0, "prefill_ms": 1.0})
    scores = objective.scores(list(measured.values()))
    best2 = [name for _, name in sorted(zip(scores, measured, strict=True))[:2]]
    confirmed = {e["name"]: e["metrics"] for e in front["confirmed"]}
    assert list(confirmed) == best2
    final = objective.scores(list(confirmed.values()))
    assert front["chosen"] == best2[final.index(min(final))]
    printed = capsys.readouterr().out
    assert f"chosen from one confirmation run of the 2 best measured: {', '.join(best2)}" in printed
    assert "timed for real: 5 shapes" in printed


def test_profile_and_export_commands(tmp_path, capsys):
    # Timed on torch: the ONNX Runtime path of `slm.latency.measure` is timed in test_slm_latency, and each export
    # costs seconds.
    assert main(["profile", "--model", "tiny", "--prompt-length", "16", "--past-lengths", "32,64", "--backends",
                 "torch", "--out", str(tmp_path), *QUICK_TIMING]) == 0  # fmt: skip
    table = json.loads((tmp_path / "latency.json").read_text())
    kinds = sorted((r["kind"], r["length"], r["backend"]) for r in table["records"])
    assert kinds == [("decode", 32, "torch"), ("decode", 64, "torch"), ("prefill", 16, "torch")]
    assert "tiny" in capsys.readouterr().out
    assert main(["profile", "--model", "tiny", "--past-lengths", "32", "--replicas", "2"]) == 2
    assert "--replicas applies to ONNX Runtime backends only" in capsys.readouterr().err
    # --model takes an slm fit config too: its model.init_args.arch (here the preset name "tiny").
    assert (
        main(["export", "--model", str(REPO / "slm" / "configs" / "tiny.yaml"), "--out", str(tmp_path / "onnx")]) == 0
    )
    files = {kind: tmp_path / "onnx" / f"tiny.{kind}.onnx" for kind in ("prefill", "decode")}
    session = ort.InferenceSession(str(files["decode"]), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()][:3] == ["token", "past_key_0", "past_value_0"]
    # `slm export` draws the weights as random_model does (seed 0): the graphs hold at other lengths too.
    check_graphs_at_other_lengths(random_model(ArchConfig.from_name("tiny")), files)


def test_search_needs_a_budget_and_names_unreachable_ones(tmp_path, capsys):
    assert main(["search", *TINY_SPACE]) == 2
    assert "slm search: error: --budget MIN:MAX is required" in capsys.readouterr().err
    assert main(["search", "--budget", "900M:1000M", *TINY_SPACE, "--out", str(tmp_path), *QUICK_TIMING]) == 2
    assert "slm search: error: budget" in capsys.readouterr().err


def test_help_and_version_load_neither_torch_nor_lightning():
    code = (
        "import sys, contextlib, io\n"
        "import slm.cli\n"
        "for argv in (['--help'], ['search', '--help'], ['profile', '--help'], ['--version']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        "        slm.cli.main(argv)\n"
        "    assert out.getvalue(), argv\n"
        "print(sorted(m for m in ('torch', 'lightning', 'numpy') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def exit_code(argv: list[str]) -> int:
    """What `slm ARGV` exits with: main's return value, or the code of the SystemExit that argparse raised."""
    try:
        return main(argv)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 1


def test_version_and_unknown_commands(capsys):
    assert exit_code(["--version"]) == 0
    assert capsys.readouterr().out.startswith("slm ")
    assert exit_code(["train"]) == 2
    assert "invalid choice: 'train'" in capsys.readouterr().err


def test_lightning_subcommands_take_the_rest_of_the_command_line(capsys):
    """`slm fit ARGS` goes to the LightningCLI whole: here it prints the composed config and stops."""
    config = REPO / "slm" / "configs" / "tiny.yaml"
    assert exit_code(["fit", "-c", str(config), "--model.init_args.lr", "0.01", "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == "slm.train.LanguageModel"
    assert printed["model"]["init_args"]["lr"] == 0.01
