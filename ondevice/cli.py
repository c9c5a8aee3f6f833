"""`ondevice profile | bundle | ingest`: latency on this host, bundles for a device, and their results."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

FACTORY_HELP = "'package.module:factory' (returns (model, example_inputs)); 'name=package.module:factory' names it"


def positive_ints(text: str) -> list[int]:
    """argparse type: positive integers separated by commas (`1,2,4`)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _named_specs(specs: Sequence[str]) -> dict[str, str]:
    named: dict[str, str] = {}
    for spec in specs:
        name, sep, target = spec.partition("=")
        if not sep:
            name, target = spec.rpartition(":")[2], spec
        if name in named:
            raise SystemExit(f"error: two models are named {name!r}; name them: NAME=package.module:factory")
        named[name] = target
    return named


def _add_timing(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-sizes", type=positive_ints, default=[1], help="e.g. 1,32,256 (default 1)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls per runner and batch size")
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per runner and batch size")
    parser.add_argument("--rounds", type=int, default=10, help="interleaving rounds the timed calls are split into")


def _profile(args: argparse.Namespace) -> int:
    from ondevice.profile import profile

    report = profile(
        _named_specs(args.models),
        backends=args.backends.split(","),
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


def _bundle(args: argparse.Namespace) -> int:
    from ondevice.bundle import write_bundle
    from ondevice.profile import load_factory

    models = {name: load_factory(spec) for name, spec in _named_specs(args.models).items()}
    out = write_bundle(
        models,
        args.out,
        batch_sizes=args.batch_sizes,
        int8=not args.no_int8,
        warmup=args.warmup,
        repeats=args.repeats,
        rounds=args.rounds,
    )
    print(f"bundle: {out} ({len(models)} models). On the device: python profile_bundle.py . --threads 1")
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from ondevice.bundle import ingest

    report = ingest(args.results, args.bundle)
    results = Path(args.results)
    if args.out:
        paths = report.save(args.out)
    else:  # beside the results, never over them
        paths = report.save(results.parent, stem=f"{results.stem}.report")
    print(report.to_markdown())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ondevice", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("profile", help="measure latency on this machine (torch and ONNX Runtime)")
    p.add_argument("models", nargs="+", help=FACTORY_HELP + "; several are interleaved A B A B")
    p.add_argument("--backends", default="torch,onnxruntime,onnxruntime-int8")
    p.add_argument("--threads", type=positive_ints, default=[1], help="threads for both runtimes, e.g. 1 or 1,2")
    p.add_argument("--graph-optimization", default="all", choices=["disabled", "basic", "extended", "all"])
    p.add_argument("--no-isolate", action="store_true", help="measure every backend in this one process")
    p.add_argument("--out", default="latency_report", help="folder for latency.json/.md/.png")
    _add_timing(p)
    p.set_defaults(run=_profile)

    p = commands.add_parser("bundle", help="write ONNX models + manifest + profile_bundle.py for a device")
    p.add_argument("models", nargs="+", help=FACTORY_HELP)
    p.add_argument("--out", required=True, help="the new bundle folder")
    p.add_argument("--no-int8", action="store_true", help="leave out the dynamic-int8 variants")
    _add_timing(p)
    p.set_defaults(run=_bundle)

    p = commands.add_parser("ingest", help="load a device's results JSON back as a latency report")
    p.add_argument("results", help="results-<host>-<threads>t.json written by profile_bundle.py")
    p.add_argument("--bundle", help="the bundle folder (default: the folder holding the results)")
    p.add_argument("--out", help="folder for latency.json/.md/.png (default: RESULTS.report.* beside the results)")
    p.set_defaults(run=_ingest)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from ondevice.device.runner import BundleError, ProfileError

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (BundleError, ProfileError, FileExistsError, FileNotFoundError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
