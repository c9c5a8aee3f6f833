"""Validation-split ablation of the AMR recipe and of ClST's settings: one change at a time, one table.

    python benchmarks/amr_ablation.py train --work ablation_work [--per-key 100] [--parallel 2] [--only REGEX]
    python benchmarks/amr_ablation.py table --work ablation_work --out benchmarks/results

Every run trains on the train split of one generated RadioML 2016.10a-like set (``rfml generate`` layout) and is
scored on the validation split only (the test split is left for ``amr_accuracy.py``): the validation accuracy of the
checkpoint its monitor selects (``val/loss`` or ``val/acc``), and the best and last validation accuracy. A run is
a named variant (``VARIANTS``): a step of the recipe ladder (protocol → unit-power input → AdamW with warm-up and
cosine → augmentation → label smoothing → selection on ``val/acc`` → EMA), a ClST setting, or an SKD setting
(α, T, logit or hybrid loss, with the ladder's teacher). Each run is a process of its own with one torch thread,
``--parallel`` at a time, and leaves ``<work>/runs/<name>/result.json``; finished runs are skipped on a rerun.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from amr_accuracy import run_all  # the benchmarks' one process-per-run launcher (this folder is on sys.path)

DATA_FILE = "RML2016.10a_dict.synthetic.pkl"

PROTOCOL: dict[str, Any] = {
    "norm": "none",
    "optimizer": {"name": "Adam", "lr": 1e-3, "weight_decay": 0.0},
    "schedule": "constant",
    "warmup_epochs": 1.0,
    "augment": None,
    "label_smoothing": 0.0,
    "ema_decay": None,
    "monitor": "val/loss",
    "model_kwargs": {},
}
# The ladder adds one piece at a time on top of the previous step.
LADDER: list[tuple[str, dict[str, Any]]] = [
    ("protocol", {}),
    ("+rms", {"norm": "rms"}),
    ("+adamw_cosine", {"optimizer": {"name": "AdamW", "lr": 2e-3, "weight_decay": 0.05}, "schedule": "warmup_cosine"}),
    ("+augment", {"augment": {}}),
    ("+smooth0.1", {"label_smoothing": 0.1}),
    ("+select_val_acc", {"monitor": "val/acc"}),
    ("+ema", {"ema_decay": 0.99}),
]
# The recipe the ClST and SKD variants build on: the ladder without its last step (EMA, which does not pay).
RECIPE_STEP = "+select_val_acc"
# The ClST every ablation run was measured with: ClST's defaults before the two-layer stem became one (issue 18).
# Pinned so that the recorded ablation reproduces; ``clst-stem32x2`` is the current default.
ABLATED_CLST: dict[str, Any] = {"stem": 0, "stem_layers": 1}
LONG = 30  # epochs of the long-schedule student runs (the ablation's default schedule is 15)


def ladder(model: str, upto: int | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The recipe ladder's runs for ``model``: name and full settings of each step."""
    settings = {**PROTOCOL, "model": model}
    if model == "clst":
        settings["model_kwargs"] = dict(ABLATED_CLST)
    runs = []
    for step, change in LADDER[: upto or len(LADDER)]:
        settings = {**settings, **change}
        runs.append((f"{model}-{step}", dict(settings)))
    return runs


def base_recipe() -> dict[str, Any]:
    """The settings of the ladder's :data:`RECIPE_STEP`, less the model."""
    settings = dict(next(s for name, s in ladder("clst") if name == f"clst-{RECIPE_STEP}"))
    del settings["model"]
    settings["model_kwargs"] = {}
    return settings


def variants(recipe: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every named run: the ladders, ClST settings and SKD settings, each on top of ``recipe`` where it applies."""
    runs: dict[str, dict[str, Any]] = {}
    for model in ("clst", "kd_cnn", "kd_mobilenet", "vtcnn2"):
        runs.update(ladder(model))
    clst = {**recipe, "model": "clst", "model_kwargs": dict(ABLATED_CLST)}
    for name, kwargs in {
        "drop_path0.1": {"drop_path": 0.1},
        "dropout0": {"dropout": 0.0},
        "heads2-4-4": {"heads": (2, 4, 4)},
        "embed_k7-5-5": {"embed_kernels": (7, 5, 5)},
        "depth2-2-2": {"depths": (2, 2, 2)},
        "depth1-2-3": {"depths": (1, 2, 3)},
        "dims48-64-96": {"dims": (48, 64, 96)},
        "kv_stride1": {"kv_stride": 1},
        "strides2-2-1": {"embed_strides": (2, 2, 1)},
        "heads2-4-4+embed_k7-5-5": {"heads": (2, 4, 4), "embed_kernels": (7, 5, 5)},
        # The high-SNR QPSK/8PSK confusion: the first stage at full length (the students' first layers are), the
        # same total stride of 8 or a shorter one; and without PSCA.
        "strides1-2-4": {"embed_strides": (1, 2, 4)},
        "strides1-2-2": {"embed_strides": (1, 2, 2)},
        "psca_off": {"psca": False},
        "stem32": {"stem": 32},
        # What the students have at their first layers and ClST lacks: BatchNorm → ReLU token embeddings instead of
        # LayerNorm ones, those with max-pooling in place of the strided conv, and a two-layer stem.
        "embed_bn": {"embed_norm": "batch"},
        "embed_bn_pool": {"embed_norm": "batch", "embed_pool": True},
        "stem32x2": {"stem": 32, "stem_layers": 2},
    }.items():
        runs[f"clst-{name}"] = {**clst, "model_kwargs": {**ABLATED_CLST, **kwargs}}
    no_phase = {**(recipe["augment"] or {}), "phase": False}
    runs["clst-no_phase_aug"] = {**clst, "augment": no_phase}
    runs[f"clst-{LONG}ep"] = {**clst, "max_epochs": LONG}
    # Second seeds: the run-to-run spread of the unchanged model and of the change that paid.
    runs["clst-seed1"] = {**clst, "seed": 1}
    runs["clst-stem32-seed1"] = {**runs["clst-stem32"], "seed": 1}
    for name in ("embed_bn", "embed_bn_pool", "stem32x2"):
        runs[f"clst-{name}-seed1"] = {**runs[f"clst-{name}"], "seed": 1}
    # The baselines under the same recipe: what ClST has to lead; initialised as Keras does and with PyTorch's
    # defaults (each model's default is the one it trained better with here).
    for model in ("resnet", "cldnn", "mcldnn", "lstm2", "vtcnn2"):
        for init in ("keras", "torch"):
            runs[f"{model}-recipe-{init}_init"] = {**recipe, "model": model, "model_kwargs": {"init": init}}
    runs["clst-smooth0"] = {**clst, "label_smoothing": 0.0}
    # LSTM2's slow start under the recipe: Keras' LSTM learning rate, and no phase rotation (it reads phase directly).
    lstm2 = runs["lstm2-recipe-keras_init"]
    runs["lstm2-recipe-lr1e-3"] = {**lstm2, "optimizer": {**recipe["optimizer"], "lr": 1e-3}}
    runs["lstm2-recipe-no_phase_aug"] = {**lstm2, "augment": no_phase}
    # The recipe's other pieces, one at a time off: weight decay, label smoothing, the augmentation.
    runs["lstm2-recipe-wd0"] = {**lstm2, "optimizer": {**recipe["optimizer"], "weight_decay": 0.0}}
    runs["lstm2-recipe-smooth0"] = {**lstm2, "label_smoothing": 0.0}
    runs["lstm2-recipe-no_augment"] = {**lstm2, "augment": None}
    # The published amplitude (unit L2 norm over the frame: about 0.09 a sample) against unit RMS (about 1).
    runs["lstm2-recipe-amp_rms"] = {**lstm2, "model_kwargs": {**lstm2["model_kwargs"], "amplitude_norm": "rms"}}
    # The students alone at twice the epochs: the twins of the long-schedule SKD runs.
    for student in ("kd_cnn", "kd_mobilenet"):
        runs[f"{student}-ce-{LONG}ep"] = {**recipe, "model": student, "max_epochs": LONG}
    return runs


def skd_variants(recipe: dict[str, Any], teacher: str) -> dict[str, dict[str, Any]]:
    """SKD runs of both students from the teacher run ``teacher``: the (α, T) sweep with logit KD, and hybrid."""
    runs = {}
    for student in ("kd_cnn", "kd_mobilenet"):
        base = {**recipe, "model": student, "teacher_run": teacher}
        for alpha in (0.5, 0.9):
            for temperature in (2.0, 4.0):
                runs[f"{student}-logit-a{alpha}-T{temperature:g}-{teacher}"] = {
                    **base,
                    "mode": "logit",
                    "alpha": alpha,
                    "temperature": temperature,
                }
        runs[f"{student}-hybrid-a0.9-T4-{teacher}"] = {**base, "mode": "hybrid", "alpha": 0.9, "temperature": 4.0}
        runs[f"{student}-hybrid-a0.5-T4-{teacher}"] = {**base, "mode": "hybrid", "alpha": 0.5, "temperature": 4.0}
        # KD only on the frames the teacher gets right: its high-SNR QPSK/8PSK errors are not taught.
        runs[f"{student}-logit-a0.5-T4-teacher_correct-{teacher}"] = {
            **base,
            "mode": "logit",
            "alpha": 0.5,
            "temperature": 4.0,
            "distill_on": "teacher_correct",
        }
        # A patient student (Beyer et al. 2022: consistent teaching pays over long schedules), against its twin.
        long = {**base, "mode": "logit", "alpha": 0.5, "temperature": 4.0, "max_epochs": LONG}
        runs[f"{student}-logit-a0.5-T4-{LONG}ep-{teacher}"] = long
    return runs


def train_one(spec: dict[str, Any]) -> None:
    """One run in this process: fit on train, score on validation, write result.json."""
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, EMAWeightAveraging, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from ondevice.io import write_json_atomic
    from rfml.data import SignalDataModule
    from rfml.trainers import SKD, Classifier, EpochTimer, SignalAugment

    torch.set_num_threads(1)
    run_dir = Path(spec["run_dir"])
    pl.seed_everything(spec.get("seed", 0), workers=True, verbose=False)
    data = SignalDataModule(spec["data"], split="6:2:2", batch_size=256, seed=0, norm=spec["norm"])
    opt = spec["optimizer"]
    optimizer_cls = getattr(torch.optim, opt["name"])

    def optimizer(params: Any) -> torch.optim.Optimizer:
        return optimizer_cls(params, lr=opt["lr"], weight_decay=opt["weight_decay"])

    recipe = {
        "optimizer": optimizer,
        "augment": None if spec["augment"] is None else SignalAugment(**spec["augment"], seed=spec.get("seed", 0)),
        "label_smoothing": spec["label_smoothing"],
        "schedule": spec["schedule"],
        "warmup_epochs": spec["warmup_epochs"],
    }
    if "mode" in spec:
        module: Classifier | SKD = SKD(
            student=spec["model"],
            teacher="clst",
            teacher_checkpoint=spec["teacher_checkpoint"],
            num_classes=data.num_classes,
            length=data.length,
            mode=spec["mode"],
            alpha=spec["alpha"],
            temperature=spec["temperature"],
            beta=spec.get("beta", 0.1),
            teacher_kwargs=spec.get("teacher_kwargs"),
            distill_on=spec.get("distill_on", "all"),
            **recipe,
        )
    else:
        module = Classifier(spec["model"], data.num_classes, data.length, model_kwargs=spec["model_kwargs"], **recipe)
    mode = "max" if spec["monitor"] == "val/acc" else "min"
    checkpoint = ModelCheckpoint(
        dirpath=run_dir, filename="best", monitor=spec["monitor"], mode=mode, enable_version_counter=False
    )
    timer = EpochTimer()
    callbacks: list[Any] = [checkpoint, timer]
    if spec["ema_decay"] is not None:
        callbacks.append(EMAWeightAveraging(decay=spec["ema_decay"]))
    if spec.get("patience"):
        callbacks.append(EarlyStopping(spec["monitor"], mode=mode, patience=spec["patience"]))
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=spec["max_epochs"],
        callbacks=callbacks,
        logger=CSVLogger(run_dir, name="", version=""),
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(module, data)
    seconds = time.perf_counter() - start
    # Read the epoch record first: validating from a checkpoint restores the callbacks' state of that epoch.
    val_acc, epoch_seconds = list(timer.val_acc), list(timer.epoch_seconds)
    # The selected checkpoint scored on the validation split through the test loop, for the per-SNR and per-class
    # figures (EMA weights when EMA is on: they are what is checkpointed).
    trainer.test(module, dataloaders=data.val_dataloader(), ckpt_path=checkpoint.best_model_path, verbose=False)
    summary = module.test_summary
    selected = summary["accuracy"]
    result = {
        "name": run_dir.name,
        "spec": {k: v for k, v in spec.items() if k not in ("run_dir", "data", "teacher_checkpoint")},
        "selected_val_acc": float(selected),
        "best_val_acc": max(val_acc),
        "last_val_acc": val_acc[-1],
        "val_acc_by_epoch": val_acc,
        "epochs": len(val_acc),
        "train_seconds": sum(epoch_seconds),
        "fit_seconds": seconds,
        "params": sum(p.numel() for p in module.network.parameters()),
        "val_acc_snr_ge_10db": summary["accuracy_snr_ge_10db"],
        "classes": summary["classes"],
        "val_confusion_snr_ge_10db": summary["confusion_snr_ge_10db"],
    }
    write_json_atomic(run_dir / "result.json", result)


def train(args: argparse.Namespace) -> int:
    from rfml.data import write_dataset

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = work / DATA_FILE
    if not data.exists():
        write_dataset("rml2016.10a", data, args.per_key, seed=0, workers=1)
    recipe = json.loads(args.recipe) if args.recipe else base_recipe()
    runs = variants(recipe)
    if args.teacher:
        runs.update(skd_variants(recipe, args.teacher))
    pattern = re.compile(args.only) if args.only else None
    specs = []
    for name, settings in runs.items():
        if pattern is not None and not pattern.fullmatch(name):
            continue
        epochs = settings.get("max_epochs", args.max_epochs)
        spec = {**settings, "data": str(data), "max_epochs": epochs, "run_dir": str(work / "runs" / name)}
        if "teacher_run" in spec:
            teacher = work / "runs" / spec["teacher_run"]
            spec["teacher_checkpoint"] = str(teacher / "best.ckpt")
            spec["teacher_kwargs"] = json.loads((teacher / "result.json").read_text())["spec"]["model_kwargs"]
        specs.append(spec)
    print(f"{len(specs)} runs, {args.parallel} at a time, data {data}", flush=True)
    return 1 if run_all(specs, args.parallel, script=__file__) else 0


def _macs(spec: dict[str, Any]) -> int:
    """MACs of one L = 128 frame through the run's network."""
    import torch

    from ondevice.profile import count_macs
    from rfml.models import create

    return count_macs(create(spec["model"], 11, 128, **spec.get("model_kwargs", {})), torch.randn(1, 2, 128))


def high_snr_class_accuracy(result: dict[str, Any], name: str) -> float | None:
    """The validation accuracy of class ``name`` at SNR ≥ 10 dB of the run's selected checkpoint; None for runs
    recorded before the per-class figures were."""
    if "val_confusion_snr_ge_10db" not in result:
        return None
    row = result["val_confusion_snr_ge_10db"][result["classes"].index(name)]
    return row[result["classes"].index(name)] / sum(row) if sum(row) else None


def table(args: argparse.Namespace) -> int:
    from ondevice.io import atomic_path, write_json_atomic

    work = Path(args.work)
    results = [json.loads(p.read_text()) for p in sorted((work / "runs").glob("*/result.json"))]
    if not results:
        raise SystemExit(f"{work}/runs: no result.json; run `train` first")
    order = {name: i for i, name in enumerate(variants(base_recipe()))}
    results.sort(key=lambda r: (order.get(r["name"], len(order)), r["name"]))
    lines = [
        "| run | params | MACs | epochs | val acc % (selected) | best | last | ≥ 10 dB | 8PSK / QPSK ≥ 10 dB | s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        r.setdefault("macs", _macs(r["spec"]))
        mark = " †" if r.get("session") == "earlier" else ""
        high = r.get("val_acc_snr_ge_10db")
        pair = [high_snr_class_accuracy(r, name) for name in ("8PSK", "QPSK")]
        lines.append(
            f"| {r['name']}{mark} | {r['params']:,} | {r['macs'] / 1e6:.2f} M | {r['epochs']} | "
            f"{100 * r['selected_val_acc']:.2f} | {100 * r['best_val_acc']:.2f} | {100 * r['last_val_acc']:.2f} | "
            f"{'—' if high is None else f'{100 * high:.2f}'} | "
            f"{'—' if None in pair else ' / '.join(f'{100 * a:.0f}' for a in pair)} | "
            f"{r['train_seconds']:.0f} |"
        )
    markdown = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / f"{args.stem}.json", {"per_key": args.per_key, "runs": results})
    with atomic_path(out / f"{args.stem}.md") as tmp:
        tmp.write_text(
            f"Validation accuracy, synthetic RadioML 2016.10a-like, {args.per_key} per class and SNR, "
            f"{args.max_epochs} epochs unless the epochs column says otherwise, seed 0 unless the run is named seed1, "
            "one torch thread per run. MACs of one frame (L = 128). † an earlier "
            "session's run on the same data and code path (its train seconds are another machine's; the VT-CNN2 "
            "ladder ran with PyTorch's initialisation, before `keras_init`).\n\n" + markdown
        )
    print(markdown)
    if len(results) > 1:
        print(f"mean selected: {statistics.fmean(r['selected_val_acc'] for r in results):.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_run"]:
        train_one(json.loads(argv[1]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("train", "table"))
    parser.add_argument("--work", default="ablation_work")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--stem", default="amr_ablation", help="table: file name stem of the JSON and markdown")
    parser.add_argument("--per-key", type=int, default=100)
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time, one torch thread each")
    parser.add_argument("--only", default=None, help="run only the runs whose name matches this regex")
    parser.add_argument("--recipe", default=None, help="JSON settings the ClST and SKD variants build on")
    parser.add_argument("--teacher", default=None, help="a finished ClST run to distil from (adds the SKD runs)")
    args = parser.parse_args(argv)
    return {"train": train, "table": table}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
