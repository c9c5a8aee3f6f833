"""``rfml dataset info | verify | convert``: describe a dataset file, check it against its card, convert a pickle.

Exit codes: 0 good; 1 the file does not match its card (the verdict says why); 2 bad usage or a file that
cannot be read (a message on stderr). Only the standard library is imported here; the work is in
:mod:`rfml.data.verify`, imported when a command runs.
"""

from __future__ import annotations

import argparse
import pickle
import sys


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of examples, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of examples, got {value}")
    return value


ACTIONS = {  # name: (the line `rfml dataset --help` shows, the longer text of `rfml dataset NAME --help`)
    "info": ("what a dataset file holds: layout, card, classes, SNRs, counts, arrays", None),
    "verify": (
        "check a file against its card: layout, shapes, dtypes, class order, SNR grid, counts, checksum",
        "Check a dataset file against its card (datasets/<name>.md) and print a verdict. A file written by "
        "`rfml generate --per-key N` verifies with --per-key N.",
    ),
    "convert": (
        "write a RadioML 2016 pickle as streamed HDF5 (X/Y/Z, read lazily by RadioML2018)",
        "Convert a RadioML 2016 pickle to the RadioML 2018 HDF5 layout, so the frames are read from disk on demand "
        "instead of held in memory. The output keeps the pickle's classes and SNRs.",
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``info``, ``verify`` and ``convert`` actions of ``rfml dataset``."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    made = {
        name: actions.add_parser(name, help=line, description=text or line) for name, (line, text) in ACTIONS.items()
    }
    made["info"].add_argument("path", metavar="PATH", help="a RadioML pickle or HDF5 file, or the ISM folder")
    verify = made["verify"]
    verify.add_argument("path", metavar="PATH", help="the file (or the ISM folder, with data_iq.p) to check")
    verify.add_argument("--dataset", metavar="NAME", help="the card (e.g. rml2016.10a); default: the matching one")
    verify.add_argument("--per-key", type=_count, metavar="N", help="examples per (class, SNR); default: the card's")
    verify.add_argument("--sha256", metavar="HEX", help="compare the file's sha256 with this; default: the card's")
    convert = made["convert"]
    convert.add_argument("src", metavar="SRC", help="the RadioML 2016 pickle")
    convert.add_argument("dst", metavar="DST", help="the .hdf5 file to write, or a folder to receive <SRC stem>.hdf5")
    convert.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    """Run the chosen action; returns the exit code."""
    from rfml.data import verify as checks  # torch, h5py and numpy: only once a command runs

    try:
        if args.action == "info":
            print(checks.info(args.path).describe())
            return 0
        if args.action == "verify":
            report = checks.verify(args.path, args.dataset, args.per_key, args.sha256)
            print(report)
            return 0 if report.ok else 1
        written = checks.convert(args.src, args.dst, progress=not args.quiet)
    except (FileNotFoundError, ValueError, OSError, pickle.UnpicklingError) as err:
        print(f"rfml dataset {args.action}: error: {err}", file=sys.stderr)
        return 2
    print(written)
    return 0
