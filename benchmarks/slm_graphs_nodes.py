"""Where the exported GQA decode graph spends the time the fast one does not: ONNX Runtime's per-node profile of both
decode graphs of benchmarks/slm_graphs.py's 50 M GQA shape (one thread, 40 calls after 5 warm-up), summed per op.

    python benchmarks/slm_graphs_nodes.py --out benchmarks/results/slm_graphs/nodes_gqa_decode.json
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

import onnxruntime as ort
import torch
from slm_graphs import BIG, PAST

from ondevice.io import write_json_atomic
from slm.export import as_arrays, decode_inputs, export_decode, random_model
from slm.graphs import build_graphs, cache_names


def node_times(path: Path, feeds: dict, calls: int, prefix: Path) -> dict:
    """µs per call by op type, node counts, and the whole call, from a profiled session after a warm one."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.enable_profiling, options.profile_file_prefix = True, str(prefix)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(5 + calls):
        session.run(None, feeds)
    events = json.loads(Path(session.end_profiling()).read_text())
    runs = [e["dur"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run"][5:]
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    kernels = kernels[len(kernels) * 5 // (5 + calls) :]  # drop the warm-up calls' nodes
    us, nodes = collections.Counter(), collections.Counter()
    for e in kernels:
        us[e["args"]["op_name"]] += e["dur"] / calls
        nodes[e["args"]["op_name"]] += 1 / calls
    return {"call_us": sum(runs) / len(runs), "op_us": dict(us), "op_nodes": {k: round(v) for k, v in nodes.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/slm_graphs/nodes_gqa_decode.json"))
    parser.add_argument("--calls", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = BIG["gqa-h512-l11"]
    feeds = as_arrays(decode_inputs(config, PAST), ["token", *cache_names(config.num_layers, "past")])
    with tempfile.TemporaryDirectory(prefix="slm-nodes-") as tmp:
        work = Path(tmp)
        export_decode(random_model(config), work / "export.decode.onnx", verify=False)
        build_graphs(config, work, stem="fast")
        result = {
            how: node_times(work / f"{how}.decode.onnx", feeds, args.calls, work / how) for how in ("export", "fast")
        }
    write_json_atomic(args.out, {"shape": "gqa-h512-l11", "past": PAST, "calls": args.calls, **result})
    e, f = result["export"], result["fast"]
    print(f"whole call: export {e['call_us']:.0f} us, fast {f['call_us']:.0f} us")
    for op in sorted(e["op_us"], key=lambda o: f["op_us"].get(o, 0.0) - e["op_us"][o])[:8]:
        print(f"{op:14} export {e['op_us'][op]:8.1f} us ({e['op_nodes'][op]} nodes)  "
              f"fast {f['op_us'].get(op, 0.0):8.1f} us ({f['op_nodes'].get(op, 0)} nodes)")  # fmt: skip


if __name__ == "__main__":
    main()
