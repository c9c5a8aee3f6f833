"""PhoneLM's premise, tested: at a fixed parameter budget, does pre-training quality hardly depend on the shape while
the speed on a device does? Three shapes at about 7 M compute parameters are pre-trained with `slm fit` on the
default corpus at equal tokens and the same recipe, and their decode latency is timed side by side.

    python benchmarks/slm_premise.py --out benchmarks/results/slm_premise    # about 45 min on 2 cores

Stages (each saves its JSON under --out and is skipped when that file exists):
1. predictor: a latency predictor fitted at this size (ORT, one thread; 20 shapes fitted, 10 held out);
2. search: `slm.search.run_search` at 6.5–7.5 M compute parameters, then the chosen shape timed beside a
   MobileLLM-style deep-thin reference, a wide-shallow one and 30 random feasible shapes (benchmarks/slm_search.py);
3. train: `slm fit` of the chosen shape, the median random shape (by decode latency) and the deep-thin reference,
   each for --steps steps of 16 × 128 tokens, scored at the end on the whole validation split.
The claim holds if the three validation losses sit within 3 % of each other while the decode latencies differ.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from slm_search import PAST, predictor_stage, search_stage, stage, timing_and_search_arguments

from ondevice.device.runner import environment
from ondevice.io import atomic_path
from slm.arch import ArchConfig
from slm.latency import LatencyTable
from slm.search import Budget, SearchSpace

VOCAB = 2048  # the default TextDataModule tokenizer: a vocabulary the default corpus can fill
BUDGET = Budget(6_500_000, 7_500_000)
DEEP_THIN = ArchConfig(  # MobileLLM's recipe scaled down: narrow, deep, GQA 3/1, FFN 2.67×, SiLU-gated
    vocab_size=VOCAB, hidden_size=192, num_layers=1, num_heads=3, num_kv_heads=1, ffn_size=512, context_length=512
)
WIDE_SHALLOW = ArchConfig(  # wide, few layers, MHA, ReLU, FFN 4×
    vocab_size=VOCAB, hidden_size=512, num_layers=1, num_heads=8, ffn_size=2048, activation="relu", context_length=512
)
RECIPE = Path(__file__).resolve().parents[1] / "slm" / "configs" / "tiny.yaml"  # lr, schedule, batch, block
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def pretrain(name: str, config: ArchConfig, args: argparse.Namespace) -> dict[str, Any]:
    """`slm fit` with tiny.yaml's recipe and this shape for --steps steps; its final weights scored on all of val."""
    from slm_distill import validation_scores

    from slm.train import lightning_main

    run_dir = args.work / "train" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    shape = run_dir / "shape.yaml"
    arch = {k: v for k, v in config.to_dict().items() if k != "name"}
    with atomic_path(shape) as tmp:
        tmp.write_text(yaml.safe_dump({"model": {"init_args": {"arch": arch}}}, sort_keys=False))
    argv = ["fit", "-c", str(RECIPE), "-c", str(shape)]
    argv += ["--trainer.max_steps", str(args.steps), "--trainer.val_check_interval", str(max(1, args.steps // 4))]
    argv += ["--trainer.default_root_dir", str(run_dir), "--trainer.logger.init_args.save_dir", str(run_dir)]
    argv += ["--checkpoint.dirpath", str(run_dir / "checkpoints"), "--seed_everything", "0"]
    argv += ["--data.init_args.data_dir", str(args.work / "data"), "--data.init_args.max_files", str(args.max_files)]
    start = time.perf_counter()
    cli = lightning_main([*argv, *QUIET])
    seconds = time.perf_counter() - start
    if cli.model.arch != config:
        raise RuntimeError(f"{name}: slm fit trained {cli.model.arch.summary()}, not {config.summary()}")
    scores = validation_scores(cli)
    data = cli.datamodule
    row = {
        "name": name,
        "arch": config.to_dict(),
        "summary": config.summary(),
        "params_compute": config.num_params_compute,
        "params_total": config.num_params,
        "steps": cli.trainer.global_step,
        "tokens": cli.trainer.global_step * data.batch_size * data.block_size,
        "seconds": round(seconds, 1),
        "val_loss": float(scores["val/loss"]),
        "val_ppl": float(scores["val/ppl"]),
        "val_tokens": len(data.val_set) * data.block_size,
    }
    print(f"{name}: {row['steps']} steps in {seconds:.0f} s, val/loss {row['val_loss']:.4f}", flush=True)
    return row


def decode_latencies(comparison: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """Decode ms at past 256 of the three trained shapes from the one timing group that holds all of them."""
    for table in map(LatencyTable.from_dict, comparison["tables"]):
        if all(n in table.configs for n in names.values()):
            return {
                role: {
                    "decode_ms": table.get(n, "decode", PAST),
                    "p10_p90_ms": [table.record(n, "decode", PAST).p10_ms, table.record(n, "decode", PAST).p90_ms],
                }
                for role, n in names.items()
            }
    raise ValueError(f"no timing group holds all of {sorted(names.values())}")


def train_three(args: argparse.Namespace, comparison: dict[str, Any]) -> dict[str, Any]:
    import lightning as L
    import torch

    torch.set_num_threads(args.train_threads)
    median = comparison["median_random"]
    shapes = {
        "chosen": ArchConfig.from_dict(comparison["chosen"]),
        "median-random": ArchConfig.from_dict(median["arch"]),
        "deep-thin": ArchConfig.from_dict(comparison["references"]["deep-thin"]),
    }
    rows = {name: pretrain(name, config, args) for name, config in shapes.items()}
    latency = decode_latencies(
        comparison, {"chosen": "chosen", "median-random": median["name"], "deep-thin": "deep-thin"}
    )
    losses = [r["val_loss"] for r in rows.values()]
    decode = [latency[n]["decode_ms"] for n in rows]
    spread_loss = (max(losses) - min(losses)) / min(losses)
    spread_decode = max(decode) / min(decode)
    return {
        "rows": rows,
        "decode_at_past_256": latency,
        "val_loss_spread": spread_loss,
        "decode_max_over_min": spread_decode,
        "claim_holds": spread_loss <= 0.03 and spread_decode >= 1.10,
        "settings": {
            "steps": args.steps,
            "max_files": args.max_files,
            "threads": args.train_threads,
            "recipe": str(RECIPE.relative_to(RECIPE.parents[2])),
        },
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "lightning": L.__version__},
        "machine": environment(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/slm_premise"))
    parser.add_argument("--work", type=Path, default=Path("runs/slm_premise"), help="graphs, data and training runs")
    parser.add_argument("--train-threads", type=int, default=2, help="torch threads when pre-training")
    parser.add_argument("--steps", type=int, default=500, help="optimizer steps per shape (16 × 128 tokens each)")
    parser.add_argument("--max-files", type=int, default=300, help="stdlib sources in the corpus")
    parser.add_argument("--stages", default="predictor,search,train", help="which stages, comma list")
    timing_and_search_arguments(parser)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    space = SearchSpace(
        hidden_sizes=tuple(range(128, 769, 64)), num_layers=tuple(range(2, 41)), vocab_size=VOCAB, context_length=512
    )
    stages = set(args.stages.split(","))
    if "predictor" in stages:
        predictor_stage(args, space, Budget(3_000_000, 15_000_000))
    if "search" in stages:
        search_stage(args, space, BUDGET, {"deep-thin": DEEP_THIN, "wide-shallow": WIDE_SHALLOW})
    if "train" in stages:
        comparison = json.loads((args.out / "search.json").read_text())
        result = stage(args.out, "train", lambda: train_three(args, comparison))
        print(json.dumps({k: v for k, v in result.items() if k not in ("machine", "rows")}, indent=1))
        for row in result["rows"].values():
            print(f"{row['name']:>14}: {row['summary']}  val loss {row['val_loss']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
