"""AMR accuracy on the synthetic RadioML 2016.10a-like set under two training set-ups, the common AMR protocol and
the training recipe: ClST against the baselines, SKD students against the same students trained alone, with
parameters, MACs and ONNX Runtime latency side by side.

    python benchmarks/amr_accuracy.py train   --work amr_work [--per-key 1000] [--max-epochs 30] [--patience 5]
                                              [--recipes protocol,recipe] [--seeds 3] [--clst-seeds 2]
                                              [--parallel 4] [--accelerator auto] [--only REGEX]
    python benchmarks/amr_accuracy.py profile --work amr_work          # on the target CPU, one thread
    python benchmarks/amr_accuracy.py table   --work amr_work --out benchmarks/results [--stem amr_recipe]
    python benchmarks/amr_accuracy.py cost    --per-key 250 --max-epochs 20 --parallel 2 --threads 1  # before train
    python benchmarks/amr_accuracy.py restore --work amr_work --restore-from benchmarks/results/amr_recipe_runs.json

``train`` writes the dataset once (``rfml generate`` layout, 11 classes × 20 SNRs × per-key frames) and trains
every run with Lightning (``rfml.trainers.Classifier`` / ``SKD``) on the same 6:2:2 split, batch size and epoch cap,
then tests each run's best checkpoint. Frames are scaled to unit mean power (``SignalDataModule(norm="rms")``) in
both set-ups: that input scale is part of the data contract, so protocol against recipe isolates the training.

- ``protocol``: Adam lr 1e-3 at a constant rate, plain cross-entropy, no augmentation, early stopping on
  ``val/loss`` (``--patience``), best checkpoint on ``val/loss``. ClST, every baseline and both students, seed 0.
- ``recipe``: ``rfml.trainers.recipe.RECIPE`` as shipped (AdamW, linear warm-up then cosine decay to zero over
  the full ``--max-epochs``, ``SignalAugment``, label smoothing, best checkpoint on ``val/acc``; no EMA, which
  did not pay in the ablation); no early stopping. Every baseline seed 0, ClST seeds 0…clst-seeds−1, and both
  students with ``ce``, ``logit`` (logit KD) and ``hybrid`` (KD plus feature hint) for seeds 0…seeds−1. SKD
  distils from the recipe ClST seed 0 (``clst-ce-recipe-s0``) with SKD's default α, T, β unless
  ``--alpha/--temperature/--beta`` are given.

Run ids are ``{model}-{training}-{recipe}-s{seed}``. Each run is a process of its own (``--parallel`` at a time) and
leaves ``<work>/runs/<run>/result.json``; a run with a result is skipped, so an interrupted ``train`` resumes. The
teacher-free runs go first, then the SKD runs. ``profile`` measures every model with ``ondevice.profile`` (ONNX
Runtime, batch 1 and 256, interleaved) into ``<work>/latency.json``. ``table`` writes ``<stem>.json`` (one entry per
run), ``<stem>_table.json`` (rows, targets, latency), ``<stem>.md`` and ``<stem>.png`` under ``--out`` and checks
the targets, and ``<stem>_runs.json`` (every run's full result). ``restore`` writes the result of each run
recorded in such a file into a work folder that lacks it, so a benchmark longer than one session resumes in the
next: ``train`` then skips the restored runs and ``table`` reports them, marked with the file they came from.
``cost`` times one training step of each model (and of each SKD student with its teacher) and projects ``train``'s
process-hours and wall time for the given size, epochs and parallelism, before any data is made.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

BASELINES = ("vtcnn2", "resnet", "cldnn", "mcldnn", "lstm2")
STUDENTS = ("kd_cnn", "kd_mobilenet")
ALL_MODELS = ("clst", *BASELINES, *STUDENTS)
RECIPES = ("protocol", "recipe")
TRAININGS = ("ce", "logit", "hybrid")
LABEL = {"ce": "CE", "logit": "SKD logit KD", "hybrid": "SKD hybrid"}
SKD_ARGS = ("alpha", "temperature", "beta")
LOW_SNR_DB = -10
DATA_FILE = "RML2016.10a_dict.synthetic.pkl"
ACC_KEYS = ("accuracy", "accuracy_snr_ge_10db", "accuracy_snr_le_m10db")
RUN_KEYS = ("model", "training", "recipe", "seed", *ACC_KEYS, "epochs")


def run_id(model: str, training: str, recipe: str, seed: int) -> str:
    return f"{model}-{training}-{recipe}-s{seed}"


TEACHER_RUN = run_id("clst", "ce", "recipe", 0)


def plan(recipes: list[str], seeds: int, clst_seeds: int) -> list[list[dict[str, Any]]]:
    """The runs that need no teacher, and the SKD runs (recipe only), as (model, training, recipe, seed) dicts.
    The SKD teacher (:data:`TEACHER_RUN`) comes first, so that the SKD runs can start while the others train."""
    first: list[tuple[str, str, str, int]] = []
    second: list[tuple[str, str, str, int]] = []
    if "recipe" in recipes:
        first.append(("clst", "ce", "recipe", 0))
    if "protocol" in recipes:
        first += [(m, "ce", "protocol", 0) for m in ALL_MODELS]
    if "recipe" in recipes:
        first += [("clst", "ce", "recipe", s) for s in range(1, clst_seeds)]
        first += [(m, "ce", "recipe", 0) for m in BASELINES]
        first += [(m, "ce", "recipe", s) for m in STUDENTS for s in range(seeds)]
        second += [(m, mode, "recipe", s) for mode in ("logit", "hybrid") for m in STUDENTS for s in range(seeds)]
    return [[dict(zip(("model", "training", "recipe", "seed"), r, strict=True)) for r in p] for p in (first, second)]


def accuracy_at_or_below(summary: dict[str, Any], snr_db: int = LOW_SNR_DB) -> float | None:
    """Accuracy over the test examples with SNR ≤ ``snr_db``: correct counts summed over those SNRs, exactly."""
    rows = zip(summary["snrs_db"], summary["accuracy_by_snr"], summary["examples_by_snr"], strict=True)
    kept = [(acc, n) for snr, acc, n in rows if snr <= snr_db and n]
    total = sum(n for _, n in kept)
    return sum(round(acc * n) for acc, n in kept) / total if total else None


def train_one(spec: dict[str, Any]) -> dict[str, Any]:
    """One Lightning run under ``spec["recipe"]``: fit, test the best checkpoint, write result.json."""
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from ondevice.io import write_json_atomic
    from rfml.data import SignalDataModule
    from rfml.trainers import SKD, Classifier
    from rfml.trainers.recipe import RECIPE

    torch.set_num_threads(spec["threads"])
    run_dir = Path(spec["run_dir"])
    pl.seed_everything(spec["seed"], workers=True, verbose=False)
    # One split and one shuffling order for every run (seed 0): runs differ only in model, training and init.
    data = SignalDataModule(spec["data"], split="6:2:2", norm="rms", batch_size=spec["batch_size"], seed=0)
    data.setup("fit")
    empty = [split for split, rows in data.rows.items() if rows.numel() == 0]
    if empty:
        raise SystemExit(f"{spec['data']}: the 6:2:2 split leaves {empty} empty; --per-key must be >= 4")
    callbacks: list[Callback]
    if spec["recipe"] == "recipe":
        kwargs: dict[str, Any] = RECIPE.module_kwargs(seed=spec["seed"])
        callbacks = RECIPE.callbacks(run_dir)
    else:
        kwargs = {}
        checkpoint = ModelCheckpoint(
            dirpath=run_dir, filename="best", monitor="val/loss", mode="min", enable_version_counter=False
        )
        callbacks = [checkpoint, EarlyStopping("val/loss", mode="min", patience=spec["patience"])]
    checkpoint = next(c for c in callbacks if isinstance(c, ModelCheckpoint))
    report = str(run_dir / "report")
    if spec["training"] == "ce":
        module: Classifier | SKD = Classifier(spec["model"], data.num_classes, data.length, report_dir=report, **kwargs)
    else:
        module = SKD(
            student=spec["model"],
            teacher="clst",
            teacher_checkpoint=spec["teacher_checkpoint"],
            num_classes=data.num_classes,
            length=data.length,
            mode=spec["training"],
            report_dir=report,
            **{k: spec[k] for k in SKD_ARGS if spec[k] is not None},
            **kwargs,
        )
    trainer = pl.Trainer(
        accelerator=spec["accelerator"],
        devices=1,
        max_epochs=spec["max_epochs"],
        callbacks=callbacks,
        logger=CSVLogger(run_dir, name="", version=""),
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(module, data)
    fit_seconds = time.perf_counter() - start
    trainer.test(module, data, ckpt_path=checkpoint.best_model_path, verbose=False)
    summary = module.test_summary
    dataset = data.data
    result = {
        **{k: spec[k] for k in ("model", "training", "recipe", "seed")},
        "per_key": len(dataset) // (len(dataset.classes) * len(dataset.snrs)),
        "epochs": trainer.current_epoch,
        "monitor": checkpoint.monitor,
        "best_score": float(checkpoint.best_model_score),
        "fit_seconds": fit_seconds,
        "params": sum(p.numel() for p in module.network.parameters()),
        "device": torch.cuda.get_device_name(0)
        if spec["accelerator"] != "cpu" and torch.cuda.is_available()
        else "cpu",
        "accuracy": summary["accuracy"],
        "accuracy_snr_ge_10db": summary["accuracy_snr_ge_10db"],
        "accuracy_snr_le_m10db": accuracy_at_or_below(summary),
        "snrs_db": summary["snrs_db"],
        "accuracy_by_snr": summary["accuracy_by_snr"],
        "examples_by_snr": summary["examples_by_snr"],
        "test_examples": summary["examples"],
        "classes": summary["classes"],
        "confusion_snr_ge_10db": summary["confusion_snr_ge_10db"],
    }
    if isinstance(module, SKD):
        result["skd"] = {k: module.hparams[k] for k in SKD_ARGS}
    write_json_atomic(run_dir / "result.json", result)
    return result


def launch(spec: dict[str, Any], script: str = __file__) -> tuple[str, int, float]:
    """Run ``script _run SPEC`` in a process of its own, logging to ``<run_dir>/log.txt``; skip a finished run."""
    run_dir = Path(spec["run_dir"])
    if (run_dir / "result.json").exists():
        return run_dir.name, 0, 0.0
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(run_dir / "log.txt", "w") as log:
        code = subprocess.call([sys.executable, script, "_run", json.dumps(spec)], stdout=log, stderr=subprocess.STDOUT)
    return run_dir.name, code, time.perf_counter() - start


def run_all(
    specs: list[dict[str, Any]],
    parallel: int,
    script: str = __file__,
    launcher: Callable[[dict[str, Any]], tuple[str, int, float]] | None = None,
) -> list[str]:
    """Every spec through :func:`launch` (or ``launcher``), ``parallel`` at a time in order, one line per run as
    it ends; the names of the failed runs."""
    failed = []
    launcher = launcher or (lambda spec: launch(spec, script))
    with ThreadPoolExecutor(parallel) as pool:
        for future in as_completed([pool.submit(launcher, spec) for spec in specs]):
            name, code, seconds = future.result()
            status = "ok" if code == 0 else f"FAILED (exit {code}, see its log.txt)"
            print(f"  {name:<44} {seconds:7.1f} s  {status}", flush=True)
            if code:
                failed.append(name)
    return failed


def _recipes(text: str) -> list[str]:
    names = [r.strip() for r in text.split(",") if r.strip()]
    unknown = [r for r in names if r not in RECIPES]
    if not names or unknown:
        raise SystemExit(f"--recipes: expected a comma list of {', '.join(RECIPES)}, got {text!r}")
    return names


def run_queue(
    first: list[dict[str, Any]],
    second: list[dict[str, Any]],
    teacher: Path,
    parallel: int,
    launcher: Callable[[dict[str, Any]], tuple[str, int, float]] = launch,
) -> list[str]:
    """The teacher-free runs, then the SKD runs, in one queue of ``parallel`` slots: each SKD run waits until the
    teacher run (:data:`TEACHER_RUN`, the first recipe run) has ended, and is skipped (failed) if it left no
    ``teacher`` checkpoint. One queue, so no slot idles between the two groups. The names of the failed runs."""
    teacher_done = threading.Event()
    if not any(Path(s["run_dir"]).name == TEACHER_RUN for s in first):
        teacher_done.set()  # not in this selection: trained earlier, or not wanted

    def run(spec: dict[str, Any]) -> tuple[str, int, float]:
        name = Path(spec["run_dir"]).name
        if spec["training"] != "ce":
            teacher_done.wait()
            if not teacher.is_file():
                print(f"  {name}: skipped, the teacher {TEACHER_RUN} left no {teacher}", flush=True)
                return name, 1, 0.0
        try:
            return launcher(spec)
        finally:
            if name == TEACHER_RUN:
                teacher_done.set()

    return run_all(first + second, parallel, launcher=run)


def train(args: argparse.Namespace) -> int:
    from rfml.data import write_dataset

    work = Path(args.work)
    data = work / DATA_FILE
    work.mkdir(parents=True, exist_ok=True)
    if not data.exists():
        write_dataset("rml2016.10a", data, args.per_key, seed=0, workers=args.generate_workers)
    teacher = work / "runs" / TEACHER_RUN / "best.ckpt"
    common = {
        "data": str(data),
        "teacher_checkpoint": str(teacher),
        **{k: getattr(args, k) for k in ("accelerator", "max_epochs", "patience", "batch_size", "threads")},
        **{k: getattr(args, k) for k in SKD_ARGS},
    }
    pattern = re.compile(args.only or ".*")

    def specs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        names = [run_id(r["model"], r["training"], r["recipe"], r["seed"]) for r in runs]
        return [
            {**common, **r, "run_dir": str(work / "runs" / name)}
            for r, name in zip(runs, names, strict=True)
            if pattern.fullmatch(name)
        ]

    first, second = map(specs, plan(_recipes(args.recipes), args.seeds, args.clst_seeds))
    print(f"{len(first)} + {len(second)} SKD runs, {args.parallel} at a time, data {data}", flush=True)
    return 1 if run_queue(first, second, teacher, args.parallel) else 0


def step_seconds(model: str, training: str, batch_size: int, threads: int, steps: int) -> dict[str, float]:
    """Seconds of one recipe training step of ``model`` (augmentation, forward, loss, backward, AdamW) and of one
    evaluation forward, per batch of ``batch_size``, median over ``steps`` after two warm-up steps. For SKD the
    step adds ClST's forward (eval mode, no gradient): the teacher's cost; its weights do not change the time."""
    import torch
    import torch.nn.functional as F

    from rfml.models import create
    from rfml.trainers import SignalAugment
    from rfml.trainers.recipe import RECIPE

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    network = create(model, 11, 128)
    teacher = create("clst", 11, 128).eval() if training != "ce" else None
    augment = SignalAugment(p=RECIPE.augment_p, seed=0)
    optimizer = torch.optim.AdamW(network.parameters(), lr=RECIPE.lr, weight_decay=RECIPE.weight_decay)
    x, y = torch.randn(batch_size, 2, 128), torch.randint(0, 11, (batch_size,))

    def train_step() -> None:
        inputs = augment(x)
        if teacher is not None:
            with torch.no_grad():
                teacher(inputs)
        loss = F.cross_entropy(network(inputs), y, label_smoothing=RECIPE.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def eval_step() -> None:
        with torch.no_grad():
            network(x)

    times = {}
    for name, step, mode in (("train", train_step, True), ("eval", eval_step, False)):
        network.train(mode)
        samples = []
        for i in range(steps + 2):
            start = time.perf_counter()
            step()
            if i >= 2:
                samples.append(time.perf_counter() - start)
        times[name] = statistics.median(samples)
    return times


def cost(args: argparse.Namespace) -> int:
    """Project ``train``'s wall time from measured step times: every run at ``--max-epochs`` (the protocol's early
    stopping can only shorten it), ``--parallel`` runs at a time with ``--threads`` threads each, packed perfectly
    (a lower bound on the wall time). Run it on a quiet machine."""
    frames = 11 * 20 * args.per_key
    train_frames, eval_frames = frames * 6 // 10, frames * 2 // 10
    steps = -(-train_frames // args.batch_size)
    eval_batches = -(-eval_frames // args.batch_size)
    first, second = plan(_recipes(args.recipes), args.seeds, args.clst_seeds)
    runs = first + second
    kinds = sorted({(r["model"], "ce" if r["training"] == "ce" else "skd") for r in runs})
    print(f"step times, batch {args.batch_size}, {args.threads} thread(s), median of {args.cost_steps} steps:")
    measured = {}
    for model, training in kinds:
        measured[model, training] = t = step_seconds(model, training, args.batch_size, args.threads, args.cost_steps)
        ms = {k: v * 1e3 for k, v in t.items()}
        print(f"  {model:<13} {training:<4} train {ms['train']:8.1f} ms  eval {ms['eval']:7.1f} ms", flush=True)
    per_run = {}
    for r in runs:
        t = measured[r["model"], "ce" if r["training"] == "ce" else "skd"]
        # Each epoch: the training steps and one validation pass; then one test pass.
        epoch = steps * t["train"] + eval_batches * t["eval"]
        per_run[run_id(r["model"], r["training"], r["recipe"], r["seed"])] = (
            args.max_epochs * epoch + eval_batches * t["eval"]
        )
    total = sum(per_run.values())
    wall = max(total / args.parallel, max(per_run.values()))
    result = {
        "per_key": args.per_key,
        "max_epochs": args.max_epochs,
        "batch_size": args.batch_size,
        "parallel": args.parallel,
        "threads": args.threads,
        "runs": len(runs),
        "step_seconds": {f"{m}/{t}": v for (m, t), v in measured.items()},
        "run_seconds": per_run,
        "process_hours": total / 3600,
        "wall_hours_at_least": wall / 3600,
    }
    print(
        f"{len(runs)} runs at {args.per_key} per key, {args.max_epochs} epochs: {total / 3600:.1f} process-hours, "
        f"at least {wall / 3600:.1f} h wall with {args.parallel} at a time"
    )
    if args.cost_out:
        from ondevice.io import write_json_atomic

        write_json_atomic(Path(args.cost_out), result)
    return 0


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


def _mean_std(values: list[float | None]) -> tuple[float, float] | None:
    """Mean and sample std of the values in percent (std 0 for one value); None if any value is missing."""
    if any(v is None for v in values):
        return None
    pct = [100 * v for v in values]  # type: ignore[operator]
    return statistics.fmean(pct), statistics.stdev(pct) if len(pct) > 1 else 0.0


def _targets(
    by: dict[tuple[str, str, str], dict[str, Any]], results: list[dict[str, Any]], models: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The benchmark's four targets, each with its numbers and ``ok``; a target lacking runs says which."""

    def mean(model: str, training: str) -> float | None:
        row = by.get((model, training, "recipe"))
        return row["accuracy_pct"][0] if row and row["accuracy_pct"] else None

    targets: dict[str, Any] = {}
    clst = mean("clst", "ce")
    baselines = {m: a for m in BASELINES if (a := mean(m, "ce")) is not None}
    if clst is not None and baselines:
        best = max(baselines, key=lambda m: baselines[m])
        targets["clst_beats_every_baseline_by_0.5_points"] = {
            "clst_pct": clst,
            "best_baseline": best,
            "best_baseline_pct": baselines[best],
            "margin_points": clst - baselines[best],
            "ok": clst >= baselines[best] + 0.5,
        }
    else:
        targets["clst_beats_every_baseline_by_0.5_points"] = {"missing": "recipe clst or baseline runs", "ok": False}
    for student in STUDENTS:
        ce = mean(student, "ce")
        skd = {m: a for m in ("logit", "hybrid") if (a := mean(student, m)) is not None}
        key = f"skd_gain_{student}_1_point"
        if ce is None or not skd:
            targets[key] = {"missing": f"recipe {student} ce or SKD runs", "ok": False}
            continue
        mode = max(skd, key=lambda m: skd[m])
        gain = skd[mode] - ce
        targets[key] = {"ce_pct": ce, "best_mode": mode, "skd_pct": skd[mode], "gain_points": gain, "ok": gain >= 1.0}
    worst = min(results, key=lambda r: r["accuracy"] or 0.0)
    targets["no_run_below_30pct"] = {
        "lowest_run": run_id(worst["model"], worst["training"], worst["recipe"], worst["seed"]),
        "lowest_pct": 100 * (worst["accuracy"] or 0.0),
        "ok": (worst["accuracy"] or 0.0) >= 0.30,
    }
    clst_macs, mobile_macs = models["clst"]["macs"], models["kd_mobilenet"]["macs"]
    targets["kd_mobilenet_macs_at_most_one_fifth_of_clst"] = {
        "kd_mobilenet_macs": mobile_macs,
        "clst_macs": clst_macs,
        "clst_over_kd_mobilenet": clst_macs / mobile_macs,
        "ok": 5 * mobile_macs <= clst_macs,
    }
    return targets


def restore(args: argparse.Namespace) -> int:
    """Write ``<work>/runs/<run>/result.json`` for each run recorded in ``--restore-from`` (a ``table`` output:
    ``<stem>_runs.json``, or the compact ``<stem>.json``) that the work folder lacks, so that ``train`` skips it
    and ``table`` reports it. Each restored result records the file it came from."""
    from ondevice.io import write_json_atomic

    if not args.restore_from:
        raise SystemExit("restore: --restore-from FILE is required (a table's <stem>_runs.json or <stem>.json)")
    source = Path(args.restore_from)
    try:
        record = json.loads(source.read_text())
        per_key, runs = record["per_key"], record["runs"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SystemExit(f"{source}: expected a JSON object with 'per_key' and 'runs' ({err})") from err
    pattern = re.compile(args.only or ".*")
    restored = 0
    for i, run in enumerate(runs):
        missing = [k for k in RUN_KEYS if k not in run]
        if missing:
            raise SystemExit(f"{source}: runs[{i}] lacks {missing}")
        name = run_id(run["model"], run["training"], run["recipe"], run["seed"])
        target = Path(args.work) / "runs" / name / "result.json"
        if target.exists() or not pattern.fullmatch(name):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(target, {"per_key": per_key, **run, "restored_from": run.get("restored_from", str(source))})
        restored += 1
    print(f"{restored} runs restored from {source} into {args.work}/runs", flush=True)
    return 0


def table(args: argparse.Namespace) -> int:
    import numpy as np

    from ondevice.io import atomic_path, write_json_atomic
    from ondevice.report import LatencyReport
    from rfml.trainers.evaluation import plot_accuracy_vs_snr

    work = Path(args.work)
    results = [json.loads(p.read_text()) for p in sorted((work / "runs").glob("*/result.json"))]
    if not results:
        raise SystemExit(f"{work}/runs: no result.json; run `python benchmarks/amr_accuracy.py train` first")
    latency_path = work / "latency.json"
    if not latency_path.is_file():
        raise SystemExit(
            f"{latency_path}: missing; run `python benchmarks/amr_accuracy.py profile --work {work}` first "
            "(on the target CPU), then `table` again"
        )
    latency = LatencyReport.load_json(latency_path)
    per_keys = sorted({r["per_key"] for r in results})
    if len(per_keys) != 1:
        raise SystemExit(f"{work}/runs: runs were trained on data of different per-key counts {per_keys}")
    order = {"model": ALL_MODELS, "training": TRAININGS, "recipe": RECIPES}
    results.sort(key=lambda r: (*(order[k].index(r[k]) for k in ("recipe", "model", "training")), r["seed"]))
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["model"], r["training"], r["recipe"]), []).append(r)
    rows = []
    for (model, training, recipe), runs in groups.items():
        facts = latency.models[model]
        rows.append(
            {
                "model": model,
                "training": training,
                "recipe": recipe,
                "seeds": [r["seed"] for r in runs],
                "device": ", ".join(sorted({r.get("device", "cpu") for r in runs})),
                **{f"{key}_pct": _mean_std([r[key] for r in runs]) for key in ACC_KEYS},
                "epochs": [r["epochs"] for r in runs],
                "fit_seconds": statistics.fmean(t)
                if (t := [r["fit_seconds"] for r in runs if "fit_seconds" in r])
                else None,
                "restored_from": sorted({r["restored_from"] for r in runs if "restored_from" in r}),
                "params": facts["params"],
                "macs": facts["macs"],
                "ort_b1_ms": latency.get("onnxruntime", 1, model).median_ms,
                "ort_b256_samples_per_s": latency.get("onnxruntime", 256, model).samples_per_s,
            }
        )
    targets = _targets({(r["model"], r["training"], r["recipe"]): r for r in rows}, results, latency.models)

    def cell(value: tuple[float, float] | None, seeds: int) -> str:
        return "n/a" if value is None else f"{value[0]:.2f} ± {value[1]:.2f}" if seeds > 1 else f"{value[0]:.2f}"

    lines = [
        "| model | training | recipe | seeds | overall acc % | acc % SNR ≥ 10 dB | acc % SNR ≤ −10 dB | epochs "
        "| params | MACs | ORT b1 ms | trained on |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        n = len(r["seeds"])
        accs = " | ".join(cell(r[f"{k}_pct"], n) for k in ACC_KEYS)
        lines.append(
            f"| {r['model']} | {LABEL[r['training']]} | {r['recipe']} | {n} | {accs} | "
            f"{'/'.join(map(str, r['epochs']))} | {r['params']:,} | {r['macs'] / 1e6:.2f} M | {r['ort_b1_ms']:.3f} | "
            f"{r['device']}{' †' if r['restored_from'] else ''} |"
        )
    checks = [
        f"- {'ok' if t['ok'] else 'MISSED'} {name}: "
        + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in t.items() if k != "ok")
        for name, t in targets.items()
    ]
    markdown = (
        "\n".join(lines)
        + (
            "\n\n† restored from an earlier session's record (`restore`)."
            if any(r["restored_from"] for r in rows)
            else ""
        )
        + f"\n\nTargets (accuracy targets on recipe means; SKD teacher {TEACHER_RUN}):\n\n"
        + "\n".join(checks)
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [{k: r[k] for k in RUN_KEYS} for r in results]
    write_json_atomic(out / f"{args.stem}.json", {"per_key": per_keys[0], "runs": runs})
    # Every run's full result, so that a later session can `restore` the finished runs and train only the rest.
    write_json_atomic(out / f"{args.stem}_runs.json", {"per_key": per_keys[0], "runs": results})
    table_json = {"per_key": per_keys[0], "rows": rows, "targets": targets, "latency_environment": latency.environment}
    write_json_atomic(out / f"{args.stem}_table.json", {**table_json, "settings": vars(args)})
    with atomic_path(out / f"{args.stem}.md") as tmp:
        tmp.write_text(markdown + "\n")
    curves = {}
    for (model, training, recipe), group in groups.items():
        if recipe != "recipe" or training == "logit" or any("accuracy_by_snr" not in r for r in group):
            continue  # restored runs from a compact record carry no per-SNR accuracy
        by_snr = np.array([r["accuracy_by_snr"] for r in group], dtype=float).mean(axis=0)
        name = model if model not in STUDENTS else f"{model} ({LABEL[training]})"
        curves[name] = {
            "snrs_db": group[0]["snrs_db"],
            "accuracy_by_snr": [None if np.isnan(a) else float(a) for a in by_snr],
            "accuracy": statistics.fmean(r["accuracy"] or 0.0 for r in group),
        }
    title = f"synthetic RadioML 2016.10a-like, {per_keys[0]} per class and SNR, recipe, test split"
    plot_accuracy_vs_snr(curves, out / f"{args.stem}.png", title=title)
    print(markdown)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_run"]:
        train_one(json.loads(argv[1]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("train", "profile", "table", "all", "cost", "restore"))
    parser.add_argument("--work", default="amr_work", help="folder for the data, runs, checkpoints, latency")
    parser.add_argument("--out", default="benchmarks/results", help="folder for the tables and plot")
    parser.add_argument("--stem", default="amr_recipe", help="file name stem of the tables, JSON and plot")
    parser.add_argument("--per-key", type=int, default=1000, help="frames per (class, SNR); 1000 as published")
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma list of the set-ups to train")
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=5, help="protocol: early stopping on val/loss")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seeds", type=int, default=3, help="recipe: seeds of each student run")
    parser.add_argument("--clst-seeds", type=int, default=2, help="recipe: seeds of ClST")
    for name in SKD_ARGS:
        parser.add_argument(f"--{name}", type=float, default=None, help=f"SKD {name} (default: SKD's own)")
    parser.add_argument("--only", default=None, help="run only the runs whose id (e.g. kd_cnn-ce-recipe-s1) matches")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time (processes)")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch threads per run")
    parser.add_argument("--accelerator", default="auto", help="cpu, gpu or auto")
    parser.add_argument("--generate-workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--profile-threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cost-steps", type=int, default=5, help="cost: timed training steps per model")
    parser.add_argument("--cost-out", default=None, help="cost: write the projection to this JSON file")
    parser.add_argument("--restore-from", default=None, help="restore: a table's <stem>_runs.json or <stem>.json")
    args = parser.parse_args(argv)
    for name in ("seeds", "clst_seeds", "max_epochs", "parallel", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    commands = {"train": (train,), "profile": (profile_models,), "table": (table,), "cost": (cost,)}
    commands["restore"] = (restore,)
    commands["all"] = (train, profile_models, table)
    for command in commands[args.command]:
        code = command(args)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
