"""``make demo``: the main job on built-in synthetic data, end to end, in minutes on two CPU cores.

    python -m rfml.examples.demo --out demo_out [--per-key 80] [--epochs 8] [--student-epochs 6]

1. writes a small synthetic RadioML 2016.10a-like file (11 classes × 20 SNRs × ``--per-key``, the real layout);
2. trains ClST (``rfml.trainers.Classifier``) with the training recipe (``rfml.trainers.recipe.RECIPE``: unit-power
   frames, AdamW with warm-up and cosine, batch augmentation, label smoothing, the best ``val/acc`` checkpoint);
3. distils KD-CNN and KD-MobileNet from it with SKD (the shipped SKD defaults), same recipe;
4. trains the same two students with cross-entropy alone, same recipe and epochs;
5. measures every model's ONNX Runtime batch-1 latency side by side (``ondevice.profile``, one thread) and prints
   one table: parameters, MACs, latency, overall accuracy and accuracy at SNR ≥ 10 dB on the test split;
6. saves ``accuracy_vs_snr.png`` (all five models), ``summary.json``, ``table.md`` and each model's report folder
   (metrics JSON, accuracy vs SNR, confusion matrices) under ``--out``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from ondevice.io import atomic_path, write_json_atomic
from ondevice.profile import profile
from rfml.data import SignalDataModule, write_dataset
from rfml.trainers import SKD, Classifier
from rfml.trainers.callbacks import EpochLine
from rfml.trainers.evaluation import plot_accuracy_vs_snr
from rfml.trainers.quiet import silence_lightning
from rfml.trainers.recipe import RECIPE

RUNS = (
    ("clst", "ClST (teacher)", "ce"),
    ("kd_cnn", "KD-CNN + SKD", "skd"),
    ("kd_mobilenet", "KD-MobileNet + SKD", "skd"),
    ("kd_cnn", "KD-CNN alone", "ce"),
    ("kd_mobilenet", "KD-MobileNet alone", "ce"),
)


def run_folder(out: Path, label: str) -> Path:
    """The folder of one run's checkpoint and report, named after its table label."""
    return out / label.replace(" ", "_").replace("+", "with").replace("(", "").replace(")", "")


def fit_and_test(
    module: Classifier | SKD, data: SignalDataModule, out: Path, epochs: int, label: str
) -> tuple[dict[str, Any], str, float]:
    """Fit under the recipe, test the checkpoint it selects; returns (test summary, checkpoint, seconds)."""
    checkpoint, *averaging = RECIPE.callbacks(out)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        callbacks=[checkpoint, *averaging, EpochLine(label)],
        logger=False,
        enable_model_summary=False,
        enable_progress_bar=False,  # one line per epoch instead (EpochLine): readable in a pipe
        default_root_dir=out,
    )
    print(f"\n== {label} ({epochs} epochs)", flush=True)
    start = time.perf_counter()
    trainer.fit(module, data)
    seconds = time.perf_counter() - start
    trainer.test(module, data, ckpt_path=checkpoint.best_model_path, verbose=False)
    return module.test_summary, checkpoint.best_model_path, seconds


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo_out"))
    parser.add_argument("--per-key", type=int, default=80, help="frames per (class, SNR); 80 → 17,600 frames")
    parser.add_argument("--epochs", type=int, default=8, help="epochs of the ClST teacher")
    parser.add_argument("--student-epochs", type=int, default=6, help="epochs of every student run")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per round for the latency")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    silence_lightning(banners=True)  # Lightning's notices that do not apply here: the demo's own output stays readable
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    path = write_dataset("rml2016.10a", out, per_key=args.per_key, seed=args.seed)
    data = SignalDataModule(str(path), split="6:2:2", batch_size=args.batch_size, seed=args.seed)
    print(f"data: {path} ({11 * 20 * args.per_key:,} frames, split 6:2:2 per class and SNR)")

    results: dict[str, dict[str, Any]] = {}
    teacher_ckpt = ""
    for model, label, mode in RUNS:
        pl.seed_everything(args.seed, verbose=False)
        report = str(run_folder(out, label))
        recipe = RECIPE.module_kwargs(seed=args.seed)
        if mode == "ce":
            module: Classifier | SKD = Classifier(model, data.num_classes, data.length, report_dir=report, **recipe)
        else:
            module = SKD(model, "clst", teacher_ckpt, data.num_classes, data.length, report_dir=report, **recipe)
        epochs = args.epochs if model == "clst" else args.student_epochs
        summary, ckpt, seconds = fit_and_test(module, data, Path(report), epochs, label)
        if model == "clst":
            teacher_ckpt = ckpt
        results[label] = {
            "model": model,
            "mode": mode,
            "net": module.network.eval(),
            "summary": summary,
            "fit_seconds": seconds,
        }

    print("\n== ONNX Runtime latency, batch 1, one thread, all five interleaved", flush=True)
    latency = profile(
        {label: r["net"] for label, r in results.items()},
        torch.randn(1, 2, data.length),
        backends=("onnxruntime",),
        threads=1,
        repeats=args.repeats,
        rounds=5,
        workdir=out / "onnx",
    )
    latency.save(out, stem="latency")

    rows = []
    for label, r in results.items():
        facts = latency.models[label]
        summary = r["summary"]
        rows.append(
            {
                "model": label,
                "params": facts["params"],
                "macs": facts["macs"],
                "ort_b1_ms": latency.get("onnxruntime", 1, label).median_ms,
                "accuracy": summary["accuracy"],
                "accuracy_snr_ge_10db": summary["accuracy_snr_ge_10db"],
                "fit_seconds": r["fit_seconds"],
            }
        )
    lines = [
        "| model | params | MACs | ORT b1 ms | overall acc % | acc % SNR ≥ 10 dB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['params']:,} | {row['macs'] / 1e6:.2f} M | {row['ort_b1_ms']:.3f} | "
            f"{100 * row['accuracy']:.1f} | {100 * row['accuracy_snr_ge_10db']:.1f} |"
        )
    table = "\n".join(lines) + "\n"
    with atomic_path(out / "table.md") as tmp:
        tmp.write_text(table)
    plot_accuracy_vs_snr(
        {label: r["summary"] for label, r in results.items()},
        out / "accuracy_vs_snr.png",
        title=f"synthetic RadioML 2016.10a-like ({args.per_key} per class and SNR), test split",
    )
    summary = {"data": str(path), "per_key": args.per_key, "rows": rows, "latency_environment": latency.environment}
    write_json_atomic(out / "summary.json", summary)
    print("\n" + table)
    print(f"plots: {out / 'accuracy_vs_snr.png'}, {out / 'latency.png'}, and one report folder per model in {out}")
    return summary


if __name__ == "__main__":
    main()
