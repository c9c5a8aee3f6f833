"""What the hardened pickle reader costs: load_array_pickle and RadioML2016 against plain pickle.load, one file each.

    python benchmarks/pickle_load.py [--per-key 1000] [--dir /tmp/rfml_bench] [--tree PATH]

Writes a RadioML 2016.10a-layout pickle with ``rfml generate``'s writer (protocol 4; 220,000 frames at
``--per-key 1000``, 225 MB) and a protocol-2 copy of it (the protocol of the real file, written by Python 2: array
bytes travel as latin-1 text through ``_codecs.encode``), then times, best of three, in this process:

- ``pickle.load``: the unrestricted reader, which would run any code in the file (the reference, not an option);
- ``load_array_pickle``: the opcode scan, then the restricted load;
- ``RadioML2016``: the loader (load, layout and SNR checks, the finite check, tensors).

``--tree PATH`` imports ``rfml`` from another checkout (an older commit, say) so two readers can be compared
through their ratio to the same ``pickle.load``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from collections.abc import Callable
from pathlib import Path


def best_of(call: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-key", type=int, default=1000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/rfml_bench"))
    parser.add_argument("--tree", type=Path, help="a checkout whose rfml is timed (default: this one)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.tree:
        sys.path.insert(0, str(args.tree.resolve()))
    import torch

    torch.set_num_threads(1)
    from rfml.data import RadioML2016, write_dataset
    from rfml.data.safe_pickle import load_array_pickle

    args.dir.mkdir(parents=True, exist_ok=True)
    p4 = args.dir / f"rml2016_pk{args.per_key}.pkl"
    p2 = args.dir / f"rml2016_pk{args.per_key}_protocol2.pkl"
    if not p4.exists():
        write_dataset("rml2016.10a", p4, per_key=args.per_key, seed=0, progress=False)
    if not p2.exists():
        data = load_array_pickle(p4)
        with open(p2.with_suffix(".partial"), "wb") as f:
            pickle.dump(data, f, protocol=2)
        os.replace(p2.with_suffix(".partial"), p2)
    report: dict[str, dict[str, float]] = {}
    for name, path in (("protocol 4", p4), ("protocol 2", p2)):

        def plain(path: Path = path) -> object:
            # The unrestricted reader, as the reference only: on the files this script has just written itself.
            with open(path, "rb") as f:
                return pickle.load(f, encoding="latin1")

        row = {
            "mb": path.stat().st_size / 1e6,
            "pickle.load": best_of(plain),
            "load_array_pickle": best_of(lambda path=path: load_array_pickle(path)),
            "RadioML2016": best_of(lambda path=path: RadioML2016(path)),
        }
        report[name] = row
    tree = str(args.tree or Path(__file__).resolve().parents[1])
    print(f"rfml from {tree}; best of 3 in one process, one torch thread")
    print("| file | MB | pickle.load (s) | load_array_pickle (s) | ratio | RadioML2016 (s) | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, row in report.items():
        base = row["pickle.load"]
        print(
            f"| {name} | {row['mb']:.0f} | {base:.3f} | {row['load_array_pickle']:.3f} | "
            f"{row['load_array_pickle'] / base:.2f} | {row['RadioML2016']:.3f} | {row['RadioML2016'] / base:.2f} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"tree": tree, "per_key": args.per_key, "seconds": report}, indent=2) + "\n")


if __name__ == "__main__":
    main()
