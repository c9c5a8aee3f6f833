"""SNR-selected fast training (Wang et al., IEEE WCL 2020) on both tasks: every figure of ``rfml snr-study``.

For each task (``radioml``: a synthetic RadioML 2016.10b-like set with a ResNet; ``ism``: the synthetic ISM
interference set with the ISM CNN) it runs the five experiments of ``rfml.studies.snr`` from the task's config
(``rfml/configs/snr_study_<task>.yaml``) and writes ``<out>/<task>/report.md``, the experiment summaries and figures:

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
import sys
import time
from importlib import resources
from pathlib import Path

from ondevice.io import write_json_atomic
from rfml.studies.executor import make_executor
from rfml.studies.snr.config import SNRStudyConfig
from rfml.studies.snr.report import write_snr_report
from rfml.studies.snr.study import Study, run_experiments


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
        config = SNRStudyConfig.load(resources.files("rfml") / "configs" / f"snr_study_{task}.yaml")
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
        report = write_snr_report(out / task)
        meta = {
            "task": task,
            "wall_seconds_this_call": elapsed,
            "executor": described,  # with the machine: rfml.studies.machine.machine_info()
            "command": "python benchmarks/snr_study.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        }
        write_json_atomic(out / task / "run.json", meta)
        print(f"{task}: {report} ({elapsed / 60:.1f} min this call)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
