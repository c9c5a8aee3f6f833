"""What does Lightning cost per training epoch? ``rfml.trainers.Classifier`` under ``lightning.Trainer`` against a
bare PyTorch loop over the same network, the same DataModule loader, batch size, optimizer and seed.

    python benchmarks/train_overhead.py [--models clst,kd_cnn] [--per-key 100] [--reps 5] [--threads 2] [--json out]

Each repetition times one full training epoch (train split of the synthetic RadioML 2016.10a-like set, 6:2:2,
no validation) both ways, alternating which goes first; the figure is the median over repetitions of
Lightning's epoch time / the bare loop's. The Lightning run is what ``rfml fit`` runs: progress bar, logging of
``train/loss`` every step, no checkpoint or validation. Target: at most 1.10.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from rfml.data import SignalDataModule, write_dataset
from rfml.trainers import Classifier


def lightning_epoch(model_name: str, data: SignalDataModule, seed: int) -> float:
    pl.seed_everything(seed, verbose=False)
    module = Classifier(model_name, data.num_classes, data.length)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=True,
    )
    start = time.perf_counter()
    trainer.fit(module, data)
    return time.perf_counter() - start


def bare_epoch(model_name: str, data: SignalDataModule, seed: int) -> float:
    pl.seed_everything(seed, verbose=False)
    net = Classifier(model_name, data.num_classes, data.length).net
    start = time.perf_counter()
    data.setup("fit")
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for batch in data.train_dataloader():
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(batch["x"]), batch["y"])
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="clst,kd_cnn")
    parser.add_argument("--per-key", type=int, default=100)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = write_dataset("rml2016.10a", tmp, per_key=args.per_key, seed=0, progress=False)
        for name in args.models.split(","):
            data = SignalDataModule(str(path), split="6:2:2", batch_size=args.batch_size)
            data.setup("fit")
            steps = -(-len(data.rows["train"]) // args.batch_size)
            bare_epoch(name, data, 0)  # warm-up: allocator, kernels, page cache
            times: dict[str, list[float]] = {"lightning": [], "bare": []}
            for rep in range(args.reps):
                order = ("lightning", "bare") if rep % 2 == 0 else ("bare", "lightning")
                for kind in order:
                    run = lightning_epoch if kind == "lightning" else bare_epoch
                    times[kind].append(run(name, data, rep))
            ratios = [a / b for a, b in zip(times["lightning"], times["bare"], strict=True)]
            results[name] = {
                "steps_per_epoch": steps,
                "lightning_s": times["lightning"],
                "bare_s": times["bare"],
                "ratio_median": statistics.median(ratios),
                "ratios": ratios,
            }
            print(
                f"{name}: {steps} steps/epoch, Lightning {statistics.median(times['lightning']):.2f} s, bare loop "
                f"{statistics.median(times['bare']):.2f} s, ratio (median of {args.reps}) "
                f"{statistics.median(ratios):.3f}",
                flush=True,
            )
    payload = {
        "settings": vars(args) | {"json": str(args.json)},
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "results": results,
    }
    if args.json:
        args.json.write_text(json.dumps(payload, indent=1))
    print(json.dumps({k: v["ratio_median"] for k, v in results.items()}))


if __name__ == "__main__":
    main()
