"""Fast candidate graphs (`slm.graphs`) against torch's exporter (`slm.export`): build time at ~50 M parameters,
equality with one GPT's weights on five shapes, and latency of the two graph pairs side by side.

    python benchmarks/slm_graphs.py --out benchmarks/results/slm_graphs

1. Build: one prefill + decode pair of each 50 M shape, exported (no verification) and built, one after the other,
   three times alternating; the ratio is per shape.
2. Equality: five small shapes covering GQA, MHA, a tied and an untied head, gated and plain FFNs, QKV bias, layer
   norm and every activation; both pairs run in ONNX Runtime on the same inputs at several prompt and past lengths;
   the largest |fast - exported| over every output.
3. Latency: both pairs of each 50 M shape in one interleaved `ondevice.profile` run (prefill of 64, decode after
   256), one thread; each over the exported pair per call. The third pair is what `slm export` ships (the fast
   graphs with a `GPT`'s weights). `--graphs export,fast,inline` instead adds the fast graphs with their weights
   inline in the proto (as the exporter keeps them), which tells the weights' storage apart from the graph itself.

`--stages latency` runs the last figure alone (into slm_graphs_latency.json, or slm_graphs_latency_<graphs>.json for
other `--graphs`), exporting the pairs it needs.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ondevice.io import write_json_atomic
from slm.arch import ArchConfig

PROMPT, PAST = 64, 256
VOCAB = 32000

# ~50 M compute parameters (non-embedding + LM head) each: a GQA/SiLU shape and an MHA/ReLU one with QKV bias.
BIG = {
    "gqa-h512-l11": ArchConfig(
        vocab_size=VOCAB, hidden_size=512, num_layers=11, num_heads=8, num_kv_heads=2, ffn_size=1536
    ),
    "mha-h640-l6-bias": ArchConfig(
        vocab_size=VOCAB, hidden_size=640, num_layers=6, num_heads=10, ffn_size=2048, activation="relu", qkv_bias=True
    ),
}

SMALL = {
    "gqa-tied-silu": ArchConfig(
        vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, ffn_size=128, context_length=512
    ),
    "mha-untied-bias": ArchConfig(
        vocab_size=600,
        hidden_size=96,
        num_layers=2,
        num_heads=6,
        ffn_size=256,
        qkv_bias=True,
        tie_embeddings=False,
        context_length=512,
    ),
    "gqa-bias-relu": ArchConfig(
        vocab_size=512,
        hidden_size=128,
        num_layers=3,
        num_heads=8,
        num_kv_heads=2,
        ffn_size=320,
        activation="relu",
        qkv_bias=True,
        context_length=512,
    ),
    "plain-gelu-layernorm": ArchConfig(
        vocab_size=400,
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        ffn_size=256,
        gated_ffn=False,
        activation="gelu",
        norm="layer",
        tie_embeddings=False,
        context_length=512,
    ),
    "mqa-headdim32": ArchConfig(
        vocab_size=512,
        hidden_size=96,
        num_layers=1,
        num_heads=4,
        num_kv_heads=1,
        head_dim=32,
        ffn_size=192,
        context_length=512,
        rope_theta=1e6,
    ),
}


def pair(work: Path, how: str, repeat: int, shape: str, kind: str) -> Path:
    """Where build stage `repeat` leaves one graph: `<work>/<how>-<repeat>/<shape>/model.<kind>.onnx`."""
    return work / f"{how}-{repeat}" / shape / f"model.{kind}.onnx"


def build_times(work: Path, repeats: int) -> dict[str, Any]:
    from slm.export import export_graphs, random_model
    from slm.graphs import build_graphs

    rows = {}
    for name, config in BIG.items():
        exported, fast = [], []
        for r in range(repeats):
            model = random_model(config)  # not timed: both paths start from a shape
            start = time.perf_counter()
            export_graphs(model, pair(work, "export", r, name, "prefill").parent, verify=False, via="torch")
            exported.append(time.perf_counter() - start)
            start = time.perf_counter()
            build_graphs(config, pair(work, "fast", r, name, "prefill").parent)
            fast.append(time.perf_counter() - start)
        rows[name] = {
            "params_compute": config.num_params_compute,
            "export_s": exported,
            "fast_s": fast,
            "export_median_s": statistics.median(exported),
            "fast_median_s": statistics.median(fast),
            "ratio": statistics.median(exported) / statistics.median(fast),
        }
        print(f"[build] {name}: export {rows[name]['export_median_s']:.1f} s, fast {rows[name]['fast_median_s']:.2f} s")
    return rows


def equality(work: Path) -> dict[str, Any]:
    import onnxruntime as ort

    from slm.export import as_arrays, decode_inputs, export_graphs, prefill_inputs, random_model
    from slm.graphs import build_graphs, cache_names, weights_from_model

    def session(path: Path) -> Any:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    rows = {}
    for name, config in SMALL.items():
        model = random_model(config, seed=3)
        folder = work / "equality" / name
        export_graphs(model, folder, stem="export", via="torch")  # checked against torch to 1e-4
        fast = build_graphs(config, folder, stem="fast", weights=weights_from_model(model))
        pairs = {
            "prefill": (session(folder / "export.prefill.onnx"), session(fast["prefill"])),
            "decode": (session(folder / "export.decode.onnx"), session(fast["decode"])),
        }
        worst = {"prefill": 0.0, "decode": 0.0}
        names = ["token", *cache_names(config.num_layers, "past")]
        for batch in (1, 2):
            for length in (2, 17, 128):
                feeds = {
                    "prefill": {"tokens": prefill_inputs(config, length, batch, seed=length)[0].numpy()},
                    "decode": as_arrays(decode_inputs(config, length, batch, seed=length), names),
                }
                for kind, (exported, built) in pairs.items():
                    a, b = exported.run(None, feeds[kind]), built.run(None, feeds[kind])
                    worst[kind] = max(worst[kind], *(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True)))
        rows[name] = {"summary": config.summary(), "max_abs_diff": worst}
        print(f"[equality] {name}: prefill {worst['prefill']:.2e}, decode {worst['decode']:.2e}")
    return {"lengths": [2, 17, 128], "batch_sizes": [1, 2], "shapes": rows}


def ensure_pairs(work: Path, graphs: list[str]) -> None:
    """Repeat 0's pairs of each 50 M shape, written now if the build stage did not run: "export" (torch's exporter),
    "fast" (`slm.graphs`, random weights), "inline" (the fast graphs with their weights inline in the proto, as the
    exporter keeps them) and "shipped" (what `slm export` writes: the fast graphs with a `GPT`'s weights)."""
    import onnx

    from slm.export import export_graphs, random_model
    from slm.graphs import build_graphs

    for name, config in BIG.items():
        if "export" in graphs and not pair(work, "export", 0, name, "decode").is_file():
            export_graphs(
                random_model(config), pair(work, "export", 0, name, "prefill").parent, verify=False, via="torch"
            )
        if not pair(work, "fast", 0, name, "decode").is_file():
            build_graphs(config, pair(work, "fast", 0, name, "prefill").parent)
        if "shipped" in graphs:
            export_graphs(random_model(config), pair(work, "shipped", 0, name, "prefill").parent, verify=False)
        for kind in ("prefill", "decode") if "inline" in graphs else ():
            inline = pair(work, "inline", 0, name, kind)
            inline.parent.mkdir(parents=True, exist_ok=True)
            onnx.save(onnx.load(str(pair(work, "fast", 0, name, kind))), str(inline))  # external data read in


GRAPHS = ("export", "fast", "inline", "shipped")


def latency(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from ondevice.profile import profile
    from slm.export import as_arrays, decode_inputs, prefill_inputs
    from slm.graphs import cache_names

    graphs = args.graphs
    ensure_pairs(work, graphs)
    candidates = {}
    for name, config in BIG.items():
        tokens = prefill_inputs(config, PROMPT)[0].numpy()
        past = as_arrays(decode_inputs(config, PAST), ["token", *cache_names(config.num_layers, "past")])
        for how in graphs:
            candidates[f"{name}/{how}/prefill@{PROMPT}"] = (pair(work, how, 0, name, "prefill"), {"tokens": tokens})
            candidates[f"{name}/{how}/decode@{PAST}"] = (pair(work, how, 0, name, "decode"), past)
    report = profile(
        candidates,
        backends=("onnxruntime",),
        threads=args.threads,
        warmup=args.warmup,
        repeats=args.repeats,
        rounds=args.rounds,
        workdir=work / "profile",
    )
    timed = {m.model: m for m in report.measurements}
    rows = {}
    for name in BIG:
        for kind in (f"prefill@{PROMPT}", f"decode@{PAST}"):
            row = {}
            for how in graphs:
                m = timed[f"{name}/{how}/{kind}"]
                row[f"{how}_ms"], row[f"{how}_p10_p90_ms"] = m.median_ms, [m.p10_ms, m.p90_ms]
            base = graphs[0]
            row.update({f"{how}_over_{base}": row[f"{how}_ms"] / row[f"{base}_ms"] for how in graphs[1:]})
            rows[f"{name}/{kind}"] = row
            print(f"[latency] {name} {kind}: " + ", ".join(f"{how} {row[how + '_ms']:.2f} ms" for how in graphs))
    return {"graphs": graphs, "rows": rows, "environment": report.environment, "settings": report.settings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/slm_graphs"))
    parser.add_argument("--stages", default="build,equality,latency", help="which figures, comma list")
    parser.add_argument("--build-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--graphs", default="export,fast,shipped", help=f"latency stage: which pairs, comma list of {GRAPHS}"
    )
    args = parser.parse_args()
    args.graphs = args.graphs.split(",")
    if not args.graphs or sorted(set(args.graphs) - set(GRAPHS)) or len(set(args.graphs)) < len(args.graphs):
        raise SystemExit(f"--graphs: give distinct pairs from {GRAPHS}, got {args.graphs}")
    stages = args.stages.split(",")
    unknown = sorted(set(stages) - {"build", "equality", "latency"})
    if unknown:
        raise SystemExit(f"--stages: unknown {unknown}; choose from build, equality, latency")

    import onnx
    import onnxruntime
    import torch

    torch.set_num_threads(args.threads)
    runs = {"build": lambda work: build_times(work, args.build_repeats), "equality": equality}
    runs["latency"] = lambda work: latency(work, args)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="slm-graphs-") as tmp:
        result = {name: runs[name](Path(tmp)) for name in ("build", "equality", "latency") if name in stages}
    result["versions"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    name = "slm_graphs" if len(stages) == 3 else f"slm_graphs_{'_'.join(stages)}"
    if "latency" in stages and args.graphs != ["export", "fast", "shipped"]:
        name += "_" + "_".join(args.graphs)
    name += ".json"
    write_json_atomic(args.out / name, result)
    print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
