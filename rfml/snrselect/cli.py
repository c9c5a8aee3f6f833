"""``rfml snr-study``: the arguments and entry point of the SNR-selection study."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rfml.snrselect.study import EXPERIMENTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "experiments",
        nargs="+",
        choices=[*EXPERIMENTS, "all", "report"],
        help="what to run: single, offset, boost, bag, router, all; report only rewrites OUT/report.md",
    )
    parser.add_argument(
        "-c", "--config", help="study YAML (see configs/rfml/snr_study_*.yaml); default settings if none"
    )
    parser.add_argument("--out", default="snr_study", help="study folder (results.jsonl, models/, report.md)")
    parser.add_argument("--executor", choices=["local", "ray"], default="local", help="process pool here, or Ray")
    parser.add_argument("--workers", type=int, default=None, help="local processes (default cores // threads; 0: here)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray instance)")
    parser.add_argument("--restart", action="store_true", help="discard trainings recorded under other settings")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    from rfml.snrselect.config import StudyConfig
    from rfml.snrselect.executor import make_executor
    from rfml.snrselect.report import write_report
    from rfml.snrselect.study import Study, run_experiments

    try:
        config = StudyConfig.load(args.config) if args.config else StudyConfig()
    except (OSError, ValueError) as exc:
        print(f"rfml snr-study: {exc}", file=sys.stderr)
        return 2
    names = [n for n in args.experiments if n != "report"]
    if names:
        with make_executor(args.executor, args.workers, args.threads, args.address) as executor:
            study = Study(config, args.out, executor=executor, restart=args.restart, progress=not args.quiet)
            run_experiments(study, names)
    if not (Path(args.out) / "study.json").exists():
        print(f"rfml snr-study: {args.out} holds no study yet; run an experiment first", file=sys.stderr)
        return 2
    print(write_report(args.out))
    return 0
