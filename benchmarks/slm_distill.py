"""Does distilling from a bigger teacher help the tiny LM? The shipped configs run through `slm fit`: the teacher,
then the tiny student alone and distilled, over the same data, seed and number of steps.

    python benchmarks/slm_distill.py [--steps 400] [--teacher-steps 800] [--max-files 300] [--kd 0.5:2.0,0.9:1.0]
                                     [--threads 1] [--workdir DIR] [--out benchmarks/results/slm_distill.json]

Data: the first ``--max-files`` sources of the installed standard library (tokenizer of 512 trained on them, 5 %
of the files held out). The teacher (slm/configs/tiny_teacher.yaml, 4 × 128) trains ``--teacher-steps``; the
student (tiny.yaml, 2 × 64) trains ``--steps`` on cross-entropy alone, then once per ``alpha:T`` pair in ``--kd``
from the teacher's best checkpoint (tiny_distill.yaml). Every model is scored at the end of its run on the whole
validation split: the student's plain token-mean cross-entropy, so all rows compare directly.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import tokenizers
import torch

from ondevice.device.runner import environment
from ondevice.io import write_json_atomic
from slm.train import lightning_main

CONFIGS = Path(__file__).resolve().parents[1] / "slm" / "configs"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def validation_scores(cli: Any) -> dict[str, float]:
    """A finished `slm fit`'s final weights scored on the whole validation split (val/loss, val/ppl)."""
    evaluator = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return evaluator.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]


def run(config: str, name: str, steps: int, max_files: int, extra: list[str]) -> dict[str, Any]:
    """`slm fit -c slm/configs/<config>` for ``steps`` steps, then its final weights scored on all of validation."""
    interval = max(1, min(100, steps // 4))
    args = [
        "fit",
        "-c",
        str(CONFIGS / config),
        "--data.init_args.max_files",
        str(max_files),
        "--trainer.max_steps",
        str(steps),
        "--trainer.val_check_interval",
        str(interval),
        "--checkpoint.dirpath",
        f"runs/{name}/checkpoints",
        *QUIET,
        *extra,
    ]
    start = time.perf_counter()
    cli = lightning_main(args)
    seconds = time.perf_counter() - start
    scores = validation_scores(cli)
    hparams = cli.model.hparams
    row = {
        "name": name,
        "config": f"slm/configs/{config}",
        "arch": cli.model.arch.summary(),
        "params": cli.model.arch.num_params,
        "steps": cli.trainer.global_step,
        "seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / max(cli.trainer.global_step, 1), 4),
        "val_loss": float(scores["val/loss"]),
        "val_ppl": float(scores["val/ppl"]),
        "best_val_loss_subset": float(cli.trainer.checkpoint_callback.best_model_score),
        "best_checkpoint": str(Path(cli.trainer.checkpoint_callback.best_model_path).resolve()),
        "alpha": hparams["alpha"] if cli.model.teacher is not None else None,
        "temperature": hparams["temperature"] if cli.model.teacher is not None else None,
        "val_tokens": len(cli.datamodule.val_set) * cli.datamodule.block_size,
    }
    print(f"{name}: {row['steps']} steps in {seconds:.0f} s, val/loss {row['val_loss']:.4f}", flush=True)
    return row


def kd_settings(text: str) -> list[tuple[float, float]]:
    pairs = []
    for part in text.split(","):
        try:
            alpha, temperature = (float(v) for v in part.split(":"))
        except ValueError:
            raise SystemExit(
                f"--kd: expected alpha:T pairs separated by commas (0.5:2.0,0.9:1.0), got {part!r}"
            ) from None
        pairs.append((alpha, temperature))
    return pairs


def markdown(rows: list[dict[str, Any]], student_loss: float) -> str:
    lines = [
        "| run | params | steps | alpha | T | val loss (nats/token) | val ppl | Δ vs student alone | s/step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        delta = "" if r["name"] == "teacher" else f"{r['val_loss'] - student_loss:+.4f}"
        alpha = "" if r["alpha"] is None else f"{r['alpha']:g}"
        temperature = "" if r["temperature"] is None else f"{r['temperature']:g}"
        lines.append(
            f"| {r['name']} | {r['params']:,} | {r['steps']} | {alpha} | {temperature} | {r['val_loss']:.4f} | "
            f"{r['val_ppl']:.2f} | {delta} | {r['seconds_per_step']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=400, help="student steps, alone and distilled (default 400)")
    parser.add_argument("--teacher-steps", type=int, default=800, help="teacher steps (default 800)")
    parser.add_argument("--max-files", type=int, default=300, help="stdlib sources in the corpus (default 300)")
    parser.add_argument("--kd", default="0.5:2.0", help="alpha:T pairs, one distilled run each (default 0.5:2.0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--workdir", default=None, help="where runs/ go (default: a temporary folder)")
    parser.add_argument("--out", default="benchmarks/results/slm_distill.json", help="the JSON report")
    args = parser.parse_args()
    settings = kd_settings(args.kd)
    torch.set_num_threads(args.threads)
    out = Path(args.out).resolve()
    with tempfile.TemporaryDirectory(prefix="slm_distill_") as tmp:
        work = Path(args.workdir or tmp).resolve()
        work.mkdir(parents=True, exist_ok=True)
        # The configs' paths (runs/slm_data/tiny, runs/slm/...) are relative: every run shares one data dir here.
        os.chdir(work)
        total = time.perf_counter()
        teacher = run("tiny_teacher.yaml", "teacher", args.teacher_steps, args.max_files, [])
        student = run("tiny.yaml", "student", args.steps, args.max_files, [])
        distilled = [
            run(
                "tiny_distill.yaml",
                f"distilled_a{alpha:g}_T{temperature:g}",
                args.steps,
                args.max_files,
                [
                    "--model.init_args.teacher_checkpoint",
                    teacher["best_checkpoint"],
                    "--model.init_args.alpha",
                    str(alpha),
                    "--model.init_args.temperature",
                    str(temperature),
                ],
            )
            for alpha, temperature in settings
        ]
        total = time.perf_counter() - total
    rows = [teacher, student, *distilled]
    for row in rows:
        row.pop("best_checkpoint")  # a temporary path, gone after the run
    report = {
        "benchmark": "slm_distill",
        "command": " ".join(["python", "benchmarks/slm_distill.py", *sys.argv[1:]]),
        "steps": args.steps,
        "teacher_steps": args.teacher_steps,
        "max_files": args.max_files,
        "threads": args.threads,
        "seconds_total": round(total, 1),
        "runs": rows,
        "distillation_helped": {r["name"]: r["val_loss"] < student["val_loss"] for r in distilled},
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "lightning": L.__version__,
            "tokenizers": tokenizers.__version__,
        },
        "machine": environment(),
    }
    write_json_atomic(out, report)
    print()
    print(markdown(rows, student["val_loss"]))
    print(f"\n{out} ({total:.0f} s)")


if __name__ == "__main__":
    main()
