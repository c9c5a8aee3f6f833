"""How long do the three commands take to print their help, with and without a byte-code cache?

    python benchmarks/startup.py [--reps 5] [--json out.json]

Each cell is the median wall time of ``REPS`` fresh processes, the cells interleaved round by round so that load on
a shared machine falls on all of them alike. "cached" runs as ``make`` leaves the venv (every module byte-compiled
once by compileall); "no cache" points ``-X pycache_prefix`` at an empty folder, so Python finds no byte code and
compiles every module it imports from source, as it did in every process before the Makefile compiled them (these
machines set ``PYTHONDONTWRITEBYTECODE=1``, so no cache is ever written on the fly). ``import lightning.pytorch`` is
the reference: it is what ``rfml --help`` imported before the CLI dispatched lazily. Target: each help < 2 s cached.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

from ondevice.io import write_json_atomic

COMMANDS = {
    "rfml --help": ["-m", "rfml.cli", "--help"],
    "slm --help": ["-m", "slm.cli", "--help"],
    "ondevice --help": ["-m", "ondevice.cli", "--help"],
    "import lightning.pytorch": ["-c", "import lightning.pytorch"],
}


def wall_seconds(args: list[str], no_cache: str | None) -> float:
    prefix = ["-X", f"pycache_prefix={no_cache}"] if no_cache else []
    start = time.perf_counter()
    subprocess.run([sys.executable, *prefix, *args], check=True, capture_output=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="fresh processes per cell (default 5)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    samples: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as empty:
        for _ in range(args.reps):
            for name, command in COMMANDS.items():
                for mode, prefix in (("cached", None), ("no cache", empty)):
                    samples.setdefault((name, mode), []).append(wall_seconds(command, prefix))
    rows = []
    print(f"| command | cached (s) | no cache (s) | no cache / cached |  (median of {args.reps})")
    print("|---|---:|---:|---:|")
    for name in COMMANDS:
        cached, cold = (statistics.median(samples[(name, mode)]) for mode in ("cached", "no cache"))
        rows.append({"command": name, "cached_s": cached, "no_cache_s": cold, "ratio": cold / cached})
        print(f"| `{name}` | {cached:.2f} | {cold:.2f} | {cold / cached:.1f}× |")
    result = {"python": sys.version.split()[0], "reps": args.reps, "rows": rows}
    if args.json:
        write_json_atomic(args.json, result)
    return result


if __name__ == "__main__":
    main()
