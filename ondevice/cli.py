"""The ``ondevice`` command: latency on this host, bundles for a device, and their results read back.

- ``ondevice profile FACTORY…``: torch and ONNX Runtime latency side by side (``ondevice.profile``).
- ``ondevice bundle FACTORY… --out DIR``: ONNX models, inputs, a manifest and ``profile_bundle.py`` for a board.
- ``ondevice ingest RESULTS``: a board's results JSON checked against its bundle, as a latency report.

Every subcommand's code is imported only when it is chosen, so ``ondevice --help`` loads neither torch nor Lightning.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ondevice.command_line import (
    Subcommand,
    add_model_flag,
    add_out_flag,
    add_runtime_flags,
    chosen_backends,
    default_out,
    dispatch,
    positive_ints,
)
from ondevice.errors import InputError, one_line

FACTORY_HELP = "'package.module:factory' (returns (model, example_inputs)); 'name=package.module:factory' names it"


def _reports_bad_input(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Bad input (a malformed bundle, a model that cannot be measured, a missing file) → its message, exit 2."""

    @functools.wraps(run)
    def wrapped(args: argparse.Namespace) -> int:
        from ondevice.device.runner import BundleError, ProfileError

        try:
            return run(args)
        except (
            BundleError,
            ProfileError,
            FileExistsError,
            FileNotFoundError,
            InputError,
            ValueError,
            TypeError,
        ) as exc:
            print(f"ondevice {args.command}: error: {one_line(exc)}", file=sys.stderr)
            return 2

    return wrapped


def _named_specs(specs: Sequence[str]) -> dict[str, str]:
    named: dict[str, str] = {}
    for spec in specs:
        name, sep, target = spec.partition("=")
        if not sep:
            name, target = spec.rpartition(":")[2], spec
        if name in named:
            raise ValueError(f"two models are named {name!r}; name them: NAME=package.module:factory")
        named[name] = target
    return named


def _timing_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-sizes", type=positive_ints, default=[1], help="e.g. 1,32,256 (default 1)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls per runner and batch size (default 10)")
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per runner and batch size (default 50)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaving rounds the timed calls are split into")


def _model_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    add_model_flag(parser, f"{FACTORY_HELP}{what}", required=False)
    parser.add_argument("factories", nargs="*", metavar="FACTORY", help="the same as --model (the older spelling)")


def _models(args: argparse.Namespace) -> dict[str, str]:
    """``--model`` and the positional factories (warned: the one spelling is ``--model``), by name."""
    if args.factories:
        print(
            f"ondevice {args.command}: warning: give models as --model FACTORY; positional ones will go",
            file=sys.stderr,
        )
    specs = [*args.models, *args.factories]
    if not specs:
        raise InputError("give at least one model: --model package.module:factory")
    return _named_specs(specs)


def profile_arguments(parser: argparse.ArgumentParser) -> None:
    _model_arguments(parser, "; several are interleaved A B A B")
    add_runtime_flags(parser, backends="torch, onnxruntime, onnxruntime-int8")
    parser.add_argument(
        "--graph-optimization", default="all", choices=["disabled", "basic", "extended", "all"],
        help="ONNX Runtime graph optimisation level (default all)",
    )  # fmt: skip
    parser.add_argument("--no-isolate", action="store_true", help="measure every backend in this one process")
    add_out_flag(parser, "folder for latency.json / .md / .png", default_out("ondevice", "profile"))
    _timing_arguments(parser)


def bundle_arguments(parser: argparse.ArgumentParser) -> None:
    _model_arguments(parser, "")
    add_out_flag(parser, "the new bundle folder")
    parser.add_argument("--int8", action="store_true", help="also bundle the dynamic-int8 twins")
    parser.add_argument("--no-int8", action="store_true", help=argparse.SUPPRESS)  # the old opt-out: now the default
    _timing_arguments(parser)


def ingest_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", help="results-<host>-<threads>t.json written by profile_bundle.py")
    parser.add_argument("--bundle", help="the bundle folder (default: the folder holding the results)")
    parser.add_argument("--out", help="folder for latency.json/.md/.png (default: RESULTS.report.* beside the results)")
    parser.add_argument(
        "--max-results-mib", type=_positive_mib, default=16.0, metavar="N",
        help="refuse a results file larger than N MiB before reading it (default 16)",
    )  # fmt: skip


def _positive_mib(text: str) -> float:
    """argparse type for --max-results-mib: a size in MiB > 0 (fractions allowed)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a size in MiB > 0, got {text!r}")
    return value


@_reports_bad_input
def _profile(args: argparse.Namespace) -> int:
    from ondevice.profile import profile

    report = profile(
        _models(args),
        backends=chosen_backends(args),
        threads=args.threads,
        warmup=args.warmup,
        repeats=args.repeats,
        batch_sizes=args.batch_sizes,
        rounds=args.rounds,
        isolate=not args.no_isolate,
        graph_optimization_level=args.graph_optimization,
    )
    paths = report.save(args.out)
    print(report.to_markdown())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


@_reports_bad_input
def _bundle(args: argparse.Namespace) -> int:
    from ondevice.bundle import write_bundle
    from ondevice.profile import load_factory

    if args.no_int8:
        print(
            "ondevice bundle: warning: --no-int8 is the default now (give --int8 to add the int8 twins)",
            file=sys.stderr,
        )
    models = {name: load_factory(spec) for name, spec in _models(args).items()}
    out = write_bundle(
        models,
        args.out,
        batch_sizes=args.batch_sizes,
        int8=args.int8,
        warmup=args.warmup,
        repeats=args.repeats,
        rounds=args.rounds,
    )
    print(f"bundle: {out} ({len(models)} models). On the device: python profile_bundle.py . --threads 1")
    return 0


@_reports_bad_input
def _ingest(args: argparse.Namespace) -> int:
    from ondevice.bundle import ingest

    report = ingest(args.results, args.bundle, max_bytes=int(args.max_results_mib * 2**20))
    results = Path(args.results)
    if args.out:
        paths = report.save(args.out)
    else:  # beside the results, never over them
        paths = report.save(results.parent, stem=f"{results.stem}.report")
    print(report.to_markdown())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


COMMANDS: dict[str, Subcommand] = {
    "profile": Subcommand(
        help="measure latency on this machine (torch and ONNX Runtime)",
        description="Profile models interleaved round by round, each ONNX Runtime session (and torch, for a "
        "factory) in a process of its own; writes latency.json / .md / .png into --out.",
        run="ondevice.cli:_profile",
        arguments="ondevice.cli:profile_arguments",
    ),
    "bundle": Subcommand(
        help="write ONNX models + manifest + profile_bundle.py for a device",
        description="Export each model (fp32 and dynamic int8), check it against torch, and write a bundle folder "
        "that a board profiles with numpy and onnxruntime alone.",
        run="ondevice.cli:_bundle",
        arguments="ondevice.cli:bundle_arguments",
    ),
    "ingest": Subcommand(
        help="load a device's results JSON back as a latency report",
        description="Check a results file against the bundle it was measured on, then write it as a latency report.",
        run="ondevice.cli:_ingest",
        arguments="ondevice.cli:ingest_arguments",
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch("ondevice", "Latency on this host, bundles for a device, and their results.", COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
