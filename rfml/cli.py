"""The ``rfml`` command. ``rfml generate`` writes synthetic datasets in the published file layouts."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rfml.data.synthetic import PRESETS, write_dataset
from rfml.dsp.channel import PRESETS as CHANNEL_PRESETS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rfml", description="Radio-signal ML: datasets, models, training.")
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser(
        "generate",
        help="write a synthetic dataset in a published layout (RadioML 2016 pickle, RadioML 2018 HDF5)",
        description="Generate a dataset with rfml.dsp.Synthesizer and write it atomically in the real layout, "
        "readable by the same loader as the real file.",
    )
    generate.add_argument("--preset", required=True, choices=sorted(PRESETS), help="dataset layout and class set")
    generate.add_argument("--out", required=True, help="output file, or a folder to receive the usual file name")
    generate.add_argument("--per-key", type=int, default=None, help="examples per (class, SNR); default: as published")
    generate.add_argument("--seed", type=int, default=0, help="dataset seed (example i is a function of seed and i)")
    generate.add_argument("--workers", type=int, default=1, help="generator processes (output is identical for any)")
    generate.add_argument(
        "--channel", choices=sorted(CHANNEL_PRESETS), default=None, help="channel preset; default: the preset's own"
    )
    generate.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "generate":
        try:
            path = write_dataset(
                args.preset, args.out, args.per_key, args.seed, args.workers, args.channel, progress=not args.quiet
            )
        except (ValueError, FileNotFoundError) as err:
            print(f"rfml generate: error: {err}", file=sys.stderr)
            return 2
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
