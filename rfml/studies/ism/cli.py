"""``rfml ism-study``: the arguments and entry point of the band- and sample-selection study.

Only the standard library and the study's config module are imported here; the study (torch, Lightning) loads in
:func:`main`.
"""

from __future__ import annotations

import argparse
import sys

from ondevice.command_line import json_object, names, positive_ints
from rfml.studies.ism.config import METHODS, RATES, ISMStudyConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``rfml ism-study``."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--data", help="folder with Schmidt's data_iq.p and labels.p (the real set, or a generated one)"
    )
    source.add_argument(
        "--generate-per-key", type=int, help="generate a synthetic set with N vectors per (class, SNR) into OUT/data"
    )
    parser.add_argument("--out", required=True, help="study folder: study.json, results.jsonl, report.md, runs/")
    parser.add_argument("--model", default="ism_cnn", help="registered model (default ism_cnn)")
    parser.add_argument(
        "--model-kwargs", type=json_object, default={}, help="JSON object of model options, e.g. '{\"hidden\": 256}'"
    )
    parser.add_argument(
        "--config", default=None, help="base LightningCLI YAML, or a shipped config's name (default: the model's own)"
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the headline rows full and band4 (default 3)")
    parser.add_argument("--sweep-seeds", type=int, default=1, help="seeds of every other setting (default 1)")
    parser.add_argument(
        "--settings",
        type=names,
        default=["full", "band4", "band2", "sample"],
        help="comma-separated: full, band4, band2, sample, sample/<method>/<rate> (default full,band4,band2,sample)",
    )
    parser.add_argument("--methods", type=names, default=list(METHODS), help="sample selection methods (default all)")
    parser.add_argument(
        "--rates", type=positive_ints, default=list(RATES), help="sample selection rates 1/r (default 2,4,8,16)"
    )
    parser.add_argument("--max-epochs", type=int, default=100, help="epoch cap (default 100)")
    parser.add_argument("--patience", type=int, default=10, help="early-stopping patience in epochs (default 10)")
    parser.add_argument("--batch-size", type=int, default=256, help="batch size (default 256, the paper's)")
    parser.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: the config's)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the generated data (default 0)")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (default 0)")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep each run's best checkpoint")
    parser.add_argument("--restart", action="store_true", help="discard the results in OUT when the config differs")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def config_from_args(args: argparse.Namespace) -> ISMStudyConfig:
    """The study the parsed options describe (``ValueError`` naming the field when they contradict each other)."""
    return ISMStudyConfig(
        out=args.out,
        data=args.data,
        generate_per_key=args.generate_per_key,
        data_seed=args.data_seed,
        model=args.model,
        model_kwargs=args.model_kwargs,
        config=args.config,
        seeds=args.seeds,
        sweep_seeds=args.sweep_seeds,
        settings=args.settings,
        methods=args.methods,
        rates=args.rates,
        max_epochs=args.max_epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        lr=args.lr,
        num_workers=args.num_workers,
        keep_checkpoints=args.keep_checkpoints,
        restart=args.restart,
    )


def main(args: argparse.Namespace) -> int:
    """``rfml ism-study``: exit status 2 with a one-line error for bad options or a changed study."""
    from rfml.studies.ism.study import run_study

    try:
        run_study(config_from_args(args), progress=not args.quiet)
    except (ValueError, FileNotFoundError) as err:
        print(f"rfml ism-study: error: {err}", file=sys.stderr)
        return 2
    return 0
