"""The floor under every interleaved timing on this machine: one graph, timed as N candidates (N worker processes)
in one interleaved run. Every candidate runs the same file on the same inputs, so any spread between their medians
is the measurement's own, per process, and more calls per process do not remove it.

    python benchmarks/profile_noise.py --repeats 60 200 --out benchmarks/results/profile_noise.json

The graph is the decode step after 256 cached tokens of a 3 × 768 MHA shape (47.6 M compute parameters, vocabulary
32,000; the family the 50 M search chooses), built by `slm.graphs`, one ONNX Runtime thread.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from ondevice.io import write_json_atomic
from ondevice.profile import profile
from slm.arch import ArchConfig
from slm.export import as_arrays, decode_inputs
from slm.graphs import build_graphs, cache_names

SHAPE = ArchConfig(vocab_size=32000, hidden_size=768, num_layers=3, num_heads=12, ffn_size=2304)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=6, help="worker processes, each timing the same graph")
    parser.add_argument("--repeats", type=int, nargs="+", default=[60, 200], help="timed calls per process, per run")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/profile_noise.json"))
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory(prefix="profile-noise-") as tmp:
        files = build_graphs(SHAPE, tmp)
        feeds = as_arrays(decode_inputs(SHAPE, 256), ["token", *cache_names(SHAPE.num_layers, "past")])
        for repeats in args.repeats:
            candidates = {f"replica{i}": (files["decode"], feeds) for i in range(args.replicas)}
            report = profile(
                candidates,
                backends=("onnxruntime",),
                threads=args.threads,
                warmup=3,
                repeats=repeats,
                rounds=args.rounds,
                workdir=tmp,
                progress=False,
            )
            medians = {m.model: m.median_ms for m in report.measurements}
            values = list(medians.values())
            runs.append(
                {
                    "repeats": repeats,
                    "medians_ms": medians,
                    "max_over_min": max(values) / min(values),
                    "relative_sd": statistics.stdev(values) / statistics.fmean(values),
                    "environment": report.environment,
                }
            )
            print(f"{repeats} calls × {args.replicas} processes: max/min {runs[-1]['max_over_min']:.3f}, "
                  f"relative SD {runs[-1]['relative_sd']:.3f}")  # fmt: skip
    write_json_atomic(args.out, {"shape": SHAPE.to_dict(), "summary": SHAPE.summary(), "runs": runs})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
