"""SNR-selected fast training (Wang et al., IEEE WCL 2020) on both tasks: every figure of ``rfml snr-study``.

For each task (``radioml``: a synthetic RadioML 2016.10b-like set with a ResNet; ``ism``: the synthetic ISM
interference set with the ISM CNN) it runs the five experiments of ``rfml.snrselect`` from the task's config
(``configs/rfml/snr_study_<task>.yaml``) and writes ``<out>/<task>/report.md``, the experiment summaries and figures:

- single-SNR against all-SNR: per-model speed-up (paper: 26–35× on RadioML, ~8× on ISM), accuracy at each SNR, and
  the total cost of one model per SNR;
- the training-SNR offset table (k = −4 … +4 dB);
- SNR Boosting at the targets against the all-SNR and single-SNR models, with the SNRs chosen and the compute;
- SNR Bagging at 2 … 20 % of one SNR's data against single-SNR training at equal size;
- the SNR estimators' error (learned ``snr_cnn`` and M2M4) per SNR, and SNR-routed accuracy with estimated against
  oracle SNRs.

Trainings run on a local process pool (``--workers`` processes × ``--threads`` torch threads), or on Ray with
``--executor ray``. The study resumes: the same command after an interruption runs only the missing trainings. The
data are generated once into ``<out>/data`` (ignored by git; the preset file name does not carry its size, so each
study keeps its own copy).

    python benchmarks/snr_study.py --out benchmarks/results/snr_study            # both tasks, config sizes
    python benchmarks/snr_study.py --tasks radioml --per-key 40 --out /tmp/snr    # a quicker look
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from rfml.snrselect.config import StudyConfig
from rfml.snrselect.executor import make_executor
from rfml.snrselect.report import write_report
from rfml.snrselect.study import Study, run_experiments

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "rfml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/snr_study")
    parser.add_argument("--tasks", default="radioml,ism", help="comma-separated: radioml, ism")
    parser.add_argument("--experiments", default="all", help="comma-separated experiments, or all")
    parser.add_argument("--per-key", type=int, default=None, help="override the config's examples per (class, SNR)")
    parser.add_argument("--boost-window", type=int, default=None, help="override boost.window_db (dB)")
    parser.add_argument("--targets", default=None, help="override the targets, comma-separated dB")
    parser.add_argument("--executor", choices=["local", "ray"], default="local")
    parser.add_argument("--workers", type=int, default=None, help="local processes (default: cores // threads)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training")
    parser.add_argument("--address", default=None, help="Ray cluster address")
    args = parser.parse_args(argv)
    out = Path(args.out)
    for task in args.tasks.split(","):
        config = StudyConfig.load(CONFIGS / f"snr_study_{task}.yaml")
        config.data.data_dir = str(out / "data" / task)
        if args.per_key is not None:
            config.data.per_key = args.per_key
        if args.boost_window is not None:
            config.boost.window_db = args.boost_window
        if args.targets is not None:
            config.targets = [int(t) for t in args.targets.split(",")]
        started = time.perf_counter()
        with make_executor(args.executor, args.workers, args.threads, args.address) as executor:
            study = Study(config, out / task, executor=executor)
            run_experiments(study, args.experiments.split(","))
            described = executor.describe()
        elapsed = time.perf_counter() - started
        report = write_report(out / task)
        meta = {
            "task": task,
            "wall_seconds_this_call": elapsed,
            "executor": described,
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "platform": platform.platform(),
            "command": "python benchmarks/snr_study.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        }
        (out / task / "run.json").write_text(json.dumps(meta, indent=1) + "\n")
        print(f"{task}: {report} ({elapsed / 60:.1f} min this call)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
