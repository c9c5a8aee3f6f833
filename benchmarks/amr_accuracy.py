"""AMR accuracy on the synthetic RadioML 2016.10a-like set: ClST against the baselines, SKD students against the
same students trained alone, with parameters, MACs and ONNX Runtime latency measured side by side.

    python benchmarks/amr_accuracy.py train   --work amr_work [--per-key 1000] [--max-epochs 30] [--patience 5]
                                              [--seeds 3] [--parallel 4] [--accelerator auto]
    python benchmarks/amr_accuracy.py profile --work amr_work          # on the target CPU, one thread
    python benchmarks/amr_accuracy.py table   --work amr_work --out benchmarks/results

``train`` writes the dataset once (``rfml generate`` layout, 11 classes × 20 SNRs × per-key frames), then trains
every run with Lightning (``rfml.trainers.Classifier`` / ``SKD``), the same 6:2:2 split, batch size, Adam lr 1e-3,
epoch cap and early stopping on validation loss for all, and tests each run's best checkpoint. Runs:
ClST and every baseline with seed 0; KD-CNN and KD-MobileNet with cross-entropy alone and with SKD (hybrid loss,
and logit-only KD as the ablation), seeds 0…seeds−1. Each run is a process of its own (``--parallel`` at a time)
and leaves ``<work>/runs/<run>/result.json``; a run with a result is skipped, so an interrupted ``train`` resumes.
``profile`` measures every model with ``ondevice.profile`` (ONNX Runtime, batch 1 and 256, interleaved).
``table`` joins both into ``amr_accuracy.md`` / ``.json`` / ``.png`` under ``--out`` and checks the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

BASELINES = ("vtcnn2", "resnet", "cldnn", "mcldnn", "lstm2")
STUDENTS = ("kd_cnn", "kd_mobilenet")
ALL_MODELS = ("clst", *BASELINES, *STUDENTS)
TEACHER_RUN = "clst-ce-s0"
DATA_FILE = "RML2016.10a_dict.pkl"


def run_id(model: str, kind: str, seed: int) -> str:
    return f"{model}-{kind}-s{seed}"


def plan(seeds: int, ablation: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The runs that need no teacher, and those that do (SKD)."""
    first = [{"model": m, "kind": "ce", "seed": 0} for m in ("clst", *BASELINES)]
    first += [{"model": m, "kind": "ce", "seed": s} for m in STUDENTS for s in range(seeds)]
    modes = ("hybrid", "logit") if ablation else ("hybrid",)
    second = [{"model": m, "kind": mode, "seed": s} for mode in modes for m in STUDENTS for s in range(seeds)]
    return first, second


def train_one(spec: dict[str, Any]) -> dict[str, Any]:
    """One Lightning run: fit with early stopping, test the best checkpoint, write result.json."""
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from ondevice.io import write_json_atomic
    from rfml.data import SignalDataModule
    from rfml.trainers import SKD, Classifier

    torch.set_num_threads(spec["threads"])
    run_dir = Path(spec["run_dir"])
    pl.seed_everything(spec["seed"], workers=True, verbose=False)
    # One split and one shuffling order for every run (seed 0): runs differ only in model and initialisation.
    data = SignalDataModule(spec["data"], split="6:2:2", batch_size=spec["batch_size"], seed=0)
    report = str(run_dir / "report")
    if spec["kind"] == "ce":
        module: Classifier | SKD = Classifier(spec["model"], data.num_classes, data.length, report_dir=report)
    else:
        module = SKD(
            student=spec["model"],
            teacher="clst",
            teacher_checkpoint=spec["teacher_checkpoint"],
            num_classes=data.num_classes,
            length=data.length,
            mode=spec["kind"],
            alpha=spec["alpha"],
            temperature=spec["temperature"],
            beta=spec["beta"],
            report_dir=report,
        )
    checkpoint = ModelCheckpoint(dirpath=run_dir, filename="best", monitor="val/loss", enable_version_counter=False)
    trainer = pl.Trainer(
        accelerator=spec["accelerator"],
        devices=1,
        max_epochs=spec["max_epochs"],
        callbacks=[EarlyStopping("val/loss", patience=spec["patience"]), checkpoint],
        logger=CSVLogger(run_dir, name="", version=""),
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(module, data)
    fit_seconds = time.perf_counter() - start
    trainer.test(module, data, ckpt_path=checkpoint.best_model_path, verbose=False)
    summary = module.test_summary
    net = module.network
    result = {
        **{k: spec[k] for k in ("model", "kind", "seed")},
        "epochs": trainer.current_epoch,
        "best_val_loss": float(checkpoint.best_model_score),
        "fit_seconds": fit_seconds,
        "params": sum(p.numel() for p in net.parameters()),
        "device": torch.cuda.get_device_name(0)
        if spec["accelerator"] != "cpu" and torch.cuda.is_available()
        else "cpu",
        "accuracy": summary["accuracy"],
        "accuracy_snr_ge_10db": summary["accuracy_snr_ge_10db"],
        "snrs_db": summary["snrs_db"],
        "accuracy_by_snr": summary["accuracy_by_snr"],
        "test_examples": summary["examples"],
    }
    write_json_atomic(run_dir / "result.json", result)
    return result


def _launch(spec: dict[str, Any]) -> tuple[str, int, float]:
    run_dir = Path(spec["run_dir"])
    if (run_dir / "result.json").exists():
        return run_dir.name, 0, 0.0
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(run_dir / "log.txt", "w") as log:
        code = subprocess.call(
            [sys.executable, __file__, "_run", json.dumps(spec)], stdout=log, stderr=subprocess.STDOUT
        )
    return run_dir.name, code, time.perf_counter() - start


def _run_all(specs: list[dict[str, Any]], parallel: int) -> list[str]:
    failed = []
    with ThreadPoolExecutor(parallel) as pool:
        for name, code, seconds in pool.map(_launch, specs):
            status = "ok" if code == 0 else f"FAILED (exit {code}, see its log.txt)"
            print(f"  {name:<24} {seconds:7.1f} s  {status}", flush=True)
            if code:
                failed.append(name)
    return failed


def train(args: argparse.Namespace) -> int:
    from rfml.data import write_dataset

    work = Path(args.work)
    data = work / DATA_FILE
    work.mkdir(parents=True, exist_ok=True)
    if not data.exists():
        write_dataset("rml2016.10a", data, args.per_key, seed=0, workers=args.generate_workers)
    common = {
        "data": str(data),
        "accelerator": args.accelerator,
        "max_epochs": args.max_epochs,
        "patience": args.patience,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "alpha": args.alpha,
        "temperature": args.temperature,
        "beta": args.beta,
        "teacher_checkpoint": str(work / "runs" / TEACHER_RUN / "best.ckpt"),
    }
    first, second = plan(args.seeds, not args.no_ablation)
    specs = [
        {**common, **s, "run_dir": str(work / "runs" / run_id(s["model"], s["kind"], s["seed"]))}
        for s in first + second
    ]
    if args.only:
        pattern = re.compile(args.only)
        first = [s for s in first if pattern.fullmatch(run_id(s["model"], s["kind"], s["seed"]))]
        specs = [s for s in specs if pattern.fullmatch(Path(s["run_dir"]).name)]
    print(f"{len(specs)} runs, {args.parallel} at a time, data {data}", flush=True)
    failed = _run_all(specs[: len(first)], args.parallel)
    if TEACHER_RUN in failed or (len(specs) > len(first) and not Path(common["teacher_checkpoint"]).is_file()):
        print("the ClST teacher failed; SKD runs skipped", file=sys.stderr)
        return 1
    failed += _run_all(specs[len(first) :], args.parallel)
    return 1 if failed else 0


def profile_models(args: argparse.Namespace) -> int:
    import torch

    from ondevice.profile import profile
    from rfml.models import create

    models = {name: create(name, 11, 128).eval() for name in ALL_MODELS}
    report = profile(
        models,
        torch.randn(1, 2, 128),
        backends=("onnxruntime",),
        threads=args.profile_threads,
        batch_sizes=(1, 256),
        repeats=args.repeats,
        rounds=args.rounds,
        workdir=Path(args.work) / "onnx",
    )
    report.save(Path(args.work), stem="latency")
    print(report.to_markdown())
    return 0


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table(args: argparse.Namespace) -> int:
    import numpy as np

    from ondevice.io import atomic_path, write_json_atomic
    from ondevice.report import LatencyReport
    from rfml.trainers.evaluation import plot_accuracy_vs_snr

    work = Path(args.work)
    results = [json.loads(p.read_text()) for p in sorted((work / "runs").glob("*/result.json"))]
    if not results:
        raise SystemExit(f"{work}/runs: no result.json; run `train` first")
    latency = LatencyReport.load_json(work / "latency.json")
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["model"], r["kind"]), []).append(r)
    label = {"ce": "alone (CE)", "hybrid": "SKD hybrid", "logit": "SKD logit KD"}
    rows = []
    for (model, kind), runs in sorted(groups.items(), key=lambda kv: (ALL_MODELS.index(kv[0][0]), kv[0][1])):
        overall = _mean_std([100 * r["accuracy"] for r in runs])
        high = _mean_std([100 * r["accuracy_snr_ge_10db"] for r in runs])
        b1 = latency.get("onnxruntime", 1, model)
        b256 = latency.get("onnxruntime", 256, model)
        facts = latency.models[model]
        rows.append(
            {
                "model": model,
                "training": label[kind],
                "kind": kind,
                "seeds": len(runs),
                "device": ", ".join(sorted({r["device"] for r in runs})),
                "accuracy_pct": overall,
                "accuracy_snr_ge_10db_pct": high,
                "epochs": [r["epochs"] for r in runs],
                "fit_seconds": statistics.fmean(r["fit_seconds"] for r in runs),
                "params": facts["params"],
                "macs": facts["macs"],
                "ort_b1_ms": b1.median_ms,
                "ort_b256_samples_per_s": b256.samples_per_s,
            }
        )
    by = {(r["model"], r["kind"]): r for r in rows}
    targets = {}
    if ("clst", "ce") in by:
        clst = by[("clst", "ce")]["accuracy_pct"][0]
        baselines = [(by[(m, "ce")]["accuracy_pct"][0], m) for m in BASELINES if (m, "ce") in by]
        if baselines:
            best = max(baselines)
            targets["clst_beats_every_baseline"] = {
                "clst": clst,
                "best_baseline": best[1],
                "best": best[0],
                "ok": clst >= best[0],
            }
        for student in STUDENTS:
            for mode in ("hybrid", "logit"):
                if (student, mode) in by and (student, "ce") in by:
                    gain = by[(student, mode)]["accuracy_pct"][0] - by[(student, "ce")]["accuracy_pct"][0]
                    targets[f"skd_{mode}_gain_{student}_points"] = {"gain": gain, "ok": gain >= 1.0}
        ratio = (
            by[("clst", "ce")]["macs"] / by[("kd_mobilenet", "ce")]["macs"] if ("kd_mobilenet", "ce") in by else None
        )
        targets["clst_macs_over_kd_mobilenet"] = {"ratio": ratio, "ok": ratio is not None and ratio >= 5}

    lines = [
        "| model | training | seeds | overall acc % | acc % at SNR ≥ 10 dB | epochs | params | MACs "
        "| ORT b1 ms | ORT b256 samples/s | trained on |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        (m1, s1), (m2, s2) = r["accuracy_pct"], r["accuracy_snr_ge_10db_pct"]
        spread = (lambda m, s: f"{m:.2f} ± {s:.2f}") if r["seeds"] > 1 else (lambda m, s: f"{m:.2f}")
        lines.append(
            f"| {r['model']} | {r['training']} | {r['seeds']} | {spread(m1, s1)} | {spread(m2, s2)} | "
            f"{'/'.join(map(str, r['epochs']))} | {r['params']:,} | {r['macs'] / 1e6:.2f} M | {r['ort_b1_ms']:.3f} | "
            f"{r['ort_b256_samples_per_s']:,.0f} | {r['device']} |"
        )
    markdown = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = latency.environment
    write_json_atomic(
        out / f"{args.stem}.json",
        {"rows": rows, "targets": targets, "runs": results, "latency_environment": env, "settings": vars(args)},
    )
    with atomic_path(out / f"{args.stem}.md") as tmp:
        tmp.write_text(markdown + "\n```json\n" + json.dumps(targets, indent=1) + "\n```\n")
    curves = {}
    for (model, kind), runs in groups.items():
        if kind == "logit":
            continue
        acc = np.mean([r["accuracy_by_snr"] for r in runs], axis=0)
        name = model if kind == "ce" and model not in STUDENTS else f"{model} ({label[kind]})"
        curves[name] = {
            "snrs_db": runs[0]["snrs_db"],
            "accuracy_by_snr": acc.tolist(),
            "accuracy": statistics.fmean(r["accuracy"] for r in runs),
        }
    title = f"synthetic RadioML 2016.10a-like, {args.per_key} per class and SNR, test split"
    plot_accuracy_vs_snr(curves, out / f"{args.stem}.png", title=title)
    print(markdown)
    print(json.dumps(targets, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_run"]:
        train_one(json.loads(argv[1]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("train", "profile", "table", "all"))
    parser.add_argument("--work", default="amr_work", help="folder for the data, runs, checkpoints, latency")
    parser.add_argument("--out", default="benchmarks/results", help="folder for the table and plot")
    parser.add_argument("--stem", default="amr_accuracy", help="file name stem of the table, JSON and plot")
    parser.add_argument("--per-key", type=int, default=1000, help="frames per (class, SNR); 1000 as published")
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=5, help="early stopping on val/loss")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seeds", type=int, default=3, help="seeds of each student run")
    parser.add_argument("--no-ablation", action="store_true", help="skip the logit-only SKD runs")
    parser.add_argument("--alpha", type=float, default=0.7)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--only", default=None, help="run only the runs whose name (e.g. kd_cnn-ce-s1) matches")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time (processes)")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch threads per run")
    parser.add_argument("--accelerator", default="auto", help="cpu, gpu or auto")
    parser.add_argument("--generate-workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--profile-threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    commands = {"train": (train,), "profile": (profile_models,), "table": (table,)}
    commands["all"] = (train, profile_models, table)
    for command in commands[args.command]:
        code = command(args)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
