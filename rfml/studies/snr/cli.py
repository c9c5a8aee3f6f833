"""``rfml snr-study``: the arguments and entry point of the SNR-selection study.

Only the standard library and the study's config module are imported here; the study (torch, Lightning) loads in
:func:`main`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rfml.studies.snr.config import EXPERIMENTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``rfml snr-study``."""
    parser.add_argument(
        "experiments",
        nargs="+",
        choices=[*EXPERIMENTS, "all", "report"],
        help="what to run: single, offset, boost, bag, router, all; report only rewrites OUT/report.md",
    )
    parser.add_argument(
        "-c",
        "--config",
        help="study YAML, or a shipped one by name (snr_study_radioml, snr_study_ism); default settings if none",
    )
    parser.add_argument(
        "--out",
        default="runs/rfml-snr-study",
        help="study folder: results.jsonl, models/, report.md (default runs/rfml-snr-study)",
    )
    parser.add_argument("--executor", choices=["local", "ray"], default="local", help="process pool here, or Ray")
    parser.add_argument("--workers", type=int, default=None, help="local processes (default cores // threads; 0: here)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray instance)")
    parser.add_argument("--restart", action="store_true", help="discard trainings recorded under other settings")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    """``rfml snr-study``: exit status 2 with a one-line error for a bad config or a changed study."""
    from ondevice.command_line import resolve_config
    from rfml.studies.executor import make_executor
    from rfml.studies.results import StudyConfigError
    from rfml.studies.snr.config import SNRStudyConfig
    from rfml.studies.snr.report import write_snr_report
    from rfml.studies.snr.study import Study, run_experiments

    try:
        config = SNRStudyConfig.load(resolve_config(args.config, "rfml")) if args.config else SNRStudyConfig()
    except (OSError, ValueError) as exc:
        print(f"rfml snr-study: {exc}", file=sys.stderr)
        return 2
    names = [n for n in args.experiments if n != "report"]
    if names:
        with make_executor(args.executor, args.workers, args.threads, args.address) as executor:
            try:
                study = Study(config, args.out, executor=executor, restart=args.restart, progress=not args.quiet)
            except StudyConfigError as exc:
                print(f"rfml snr-study: {exc}", file=sys.stderr)
                return 2
            run_experiments(study, names)
    if not (Path(args.out) / "study.json").exists():
        print(f"rfml snr-study: {args.out} holds no study yet; run an experiment first", file=sys.stderr)
        return 2
    print(write_snr_report(args.out))
    return 0
