"""Synthesizer throughput (examples/s) against TorchSig 2.2, measured side by side in one run.

    python benchmarks/synth_throughput.py [--torchsig-python .venv-torchsig/bin/python]

Ours: ``rfml.dsp.Synthesizer`` at L = 128 (RadioML 2016.10a class set) and L = 1024 (2018.01a class
set) with the full ``rml2016`` and ``wireless`` channels, torch threads = 2, batches of
``--batch-size`` consecutive indices. TorchSig: narrowband generation, impairment level 2, at the
same lengths, one example at a time as TorchSig generates (``benchmarks/torchsig_throughput.py`` in
the separate venv that ``benchmarks/torchsig_env.sh`` makes). Ours is measured before and after
TorchSig and averaged, so drift in machine load hits both sides alike. Prints a Markdown table for
``benchmarks/RESULTS.md`` and, with ``--json``, writes the raw figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import torch

from ondevice.device.runner import environment
from rfml.dsp import Synthesizer

REPO = Path(__file__).resolve().parent.parent
CONFIGS = [
    ("rml2016.10a", 128, "rml2016"),
    ("rml2016.10a", 128, "wireless"),
    ("rml2018.01a", 1024, "rml2016"),
    ("rml2018.01a", 1024, "wireless"),
]


def ours(class_set: str, length: int, channel: str, batch_size: int, seconds: float) -> float:
    """Examples per second of back-to-back ``generate`` calls over ``seconds`` (after one warm-up)."""
    synth = Synthesizer(class_set, length, channel=channel)
    synth.generate(range(batch_size))
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        synth.generate(range(batch_size + done, 2 * batch_size + done))
        done += batch_size
    return done / (time.perf_counter() - start)


def torchsig(python: Path, lengths: list[int], num_samples: int, threads: int) -> dict:
    if not python.exists():
        raise SystemExit(f"{python} not found: run `bash benchmarks/torchsig_env.sh` first (or pass --skip-torchsig)")
    env = dict(os.environ, PYTHONPATH=str(REPO / "benchmarks" / "torchsig_standin"))
    command = [str(python), str(REPO / "benchmarks" / "torchsig_throughput.py"), "--lengths", *map(str, lengths)]
    command += ["--num-samples", str(num_samples), "--impairment-level", "2", "--threads", str(threads)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"TorchSig benchmark failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def machine() -> str:
    env = environment()
    return f"{env['cpu_model']}, {env['cpu_count']} logical CPUs, Python {env['python']}, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--torchsig-python", type=Path, default=REPO / ".venv-torchsig" / "bin" / "python")
    parser.add_argument("--skip-torchsig", action="store_true", help="measure ours only")
    parser.add_argument("--torchsig-samples", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--seconds", type=float, default=5.0, help="timing window per configuration and pass")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    before = {cfg: ours(*cfg, args.batch_size, args.seconds) for cfg in CONFIGS}
    reference = None
    if not args.skip_torchsig:
        reference = torchsig(args.torchsig_python, sorted({c[1] for c in CONFIGS}), args.torchsig_samples, args.threads)
    after = {cfg: ours(*cfg, args.batch_size, args.seconds) for cfg in CONFIGS}
    theirs = {r["length"]: r["samples_per_s"] for r in reference["results"]} if reference else {}

    rows = []
    for cfg in CONFIGS:
        mean = (before[cfg] + after[cfg]) / 2
        row = {
            "class_set": cfg[0],
            "length": cfg[1],
            "channel": cfg[2],
            "ours_per_s": round(mean, 1),
            "ours_passes_per_s": [round(before[cfg], 1), round(after[cfg], 1)],
            "torchsig_per_s": theirs.get(cfg[1]),
            "ratio": round(mean / theirs[cfg[1]], 1) if cfg[1] in theirs else None,
        }
        rows.append(row)

    print(f"\nmachine: {machine()}; torch threads {args.threads}; batch {args.batch_size}")
    if reference:
        print(
            f"TorchSig {reference['torchsig_version']}, impairment level 2, {reference['num_classes']} classes, "
            f"{reference['num_samples']} examples per length"
        )
    print("\n| length | class set | our channel | ours (ex/s) | TorchSig L2 (ex/s) | ratio |")
    print("|---:|---|---|---:|---:|---:|")
    for r in rows:
        theirs_cell = f"{r['torchsig_per_s']:.1f}" if r["torchsig_per_s"] else "—"
        ratio_cell = f"{r['ratio']:.0f}×" if r["ratio"] else "—"
        cells = [str(r["length"]), r["class_set"], r["channel"], f"{r['ours_per_s']:.0f}", theirs_cell, ratio_cell]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps({"machine": machine(), "torchsig": reference, "rows": rows}, indent=1))
        tmp.replace(args.json)


if __name__ == "__main__":
    main()
