"""Band and sample selection on the synthetic ISM interference set: the tables of Zhang et al. (SPAWC 2019).

Runs ``rfml ism-study`` with the paper's CNN (``ism_cnn``, FFT I/Q input, Adam lr 1e-4, batch 256, early stopping
on a validation split) on a synthetic set in Schmidt's layout (15 classes × 21 SNRs × per-key vectors of 128
samples, generated once into ``<out>/data``). It measures, per setting:

- test accuracy (mean over SNRs), accuracy by SNR and per technology (Bluetooth / WiFi / Zigbee);
- training seconds with validation left out: per epoch (median), to the best validation epoch, in total; and the
  full-band / 4 MHz ratio the paper reports as 108 s / 65 s = 1.66;
- settings: the whole 10 MHz, the 4 MHz and 2 MHz bands (headline rows full and 4 MHz with 3 seeds), and the
  FFT amplitude/phase view cut to 1/2 … 1/16 by uniform, random, magnitude and PCA selection (1 seed each).

The report lands in ``<out>/report.md`` (with ``study.json``, ``results.jsonl`` and accuracy-vs-SNR figures). The
study resumes: run the same command again after an interruption. Full size (the paper's 715 per class and SNR, the
32.9 M-parameter CNN, 23 runs; a GPU is advised):

    python benchmarks/ism_study.py --per-key 715 --out benchmarks/results/ism_study

A quick CPU check (narrow CNN, fewer examples and epochs):

    python benchmarks/ism_study.py --per-key 60 --model-kwargs '{"channels": [32, 32], "hidden": 128}' \\
        --max-epochs 15 --patience 3 --out ism_study_small
"""

from __future__ import annotations

import argparse
import shlex
import sys

from rfml.cli import main as rfml_main


def command(args: argparse.Namespace) -> list[str]:
    """The ``rfml ism-study`` arguments this benchmark runs."""
    source = ["--data", args.data] if args.data else ["--generate-per-key", str(args.per_key)]
    argv = [
        "ism-study",
        *source,
        "--out",
        args.out,
        "--model",
        "ism_cnn",
        "--model-kwargs",
        args.model_kwargs,
        "--seeds",
        str(args.seeds),
        "--sweep-seeds",
        str(args.sweep_seeds),
        "--settings",
        args.settings,
        "--methods",
        args.methods,
        "--rates",
        args.rates,
        "--max-epochs",
        str(args.max_epochs),
        "--patience",
        str(args.patience),
        "--batch-size",
        str(args.batch_size),
        "--num-workers",
        str(args.num_workers),
    ]
    if args.lr is not None:
        argv += ["--lr", str(args.lr)]
    if args.restart:
        argv.append("--restart")
    return argv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-key", type=int, default=715, help="synthetic vectors per (class, SNR) (default 715)")
    parser.add_argument("--data", default=None, help="a folder with the real data_iq.p / labels.p instead")
    parser.add_argument("--model-kwargs", default="{}", help="JSON options of ism_cnn, e.g. a narrower CNN")
    parser.add_argument("--max-epochs", type=int, default=100, help="epoch cap (default 100)")
    parser.add_argument("--patience", type=int, default=10, help="early-stopping patience (default 10)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the headline rows (default 3)")
    parser.add_argument("--sweep-seeds", type=int, default=1, help="seeds of the other settings (default 1)")
    parser.add_argument("--settings", default="full,band4,band2,sample", help="settings (default all)")
    parser.add_argument("--methods", default="uniform,random,magnitude,pca", help="sample-selection methods")
    parser.add_argument("--rates", default="2,4,8,16", help="sample-selection rates")
    parser.add_argument("--batch-size", type=int, default=256, help="batch size (default 256)")
    parser.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: the config's 1e-4)")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (default 0)")
    parser.add_argument("--out", default="ism_study_out", help="study folder (default ism_study_out)")
    parser.add_argument("--restart", action="store_true", help="discard earlier results made with other options")
    args = parser.parse_args(argv)
    study = command(args)
    print("rfml " + shlex.join(study), flush=True)
    return rfml_main(study)


if __name__ == "__main__":
    sys.exit(main())
