"""Runtime-first search figures on this CPU (ONNX Runtime, batch 1): the survey's Qwen inversion, the latency
predictor's accuracy on held-out shapes, and a search at a 50 M-parameter budget against three reference shapes.

    python benchmarks/slm_search.py --threads 2 --out benchmarks/results/slm_search

Each stage saves its JSON under --out and is skipped when that file exists (delete it to measure again).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from ondevice.io import write_json_atomic
from ondevice.profile import profile
from slm.arch import ArchConfig
from slm.latency import LatencyPredictor, LatencyTable, evaluate, export_candidates, measure, plot_predictions
from slm.search import Budget, Objective, SearchSpace, host_measure, predictor_screen, run_search, shape_name

PROMPT, PAST = 64, 256
VOCAB = 32000  # MobileLLM's tokenizer size: a realistic vocabulary for a 50 M-parameter model


def timing(args: argparse.Namespace) -> dict[str, Any]:
    return dict(threads=args.threads, warmup=args.warmup, repeats=args.repeats, rounds=args.rounds)


def stage(out: Path, name: str, run: Any) -> dict[str, Any]:
    path = out / f"{name}.json"
    if path.is_file():
        print(f"[{name}] reusing {path}", file=sys.stderr)
        return json.loads(path.read_text())
    start = time.perf_counter()
    result = run()
    result["wall_s"] = time.perf_counter() - start
    write_json_atomic(path, result)
    return result


def spread(record: Any) -> list[float]:
    return [record.p10_ms, record.p90_ms]


def inversion(args: argparse.Namespace) -> dict[str, Any]:
    """Qwen1.5-0.5B (more parameters) against Qwen2-0.5B, prefill of 64 and decode at past 256, side by side."""
    configs = {n: ArchConfig.from_name(n) for n in ("qwen1.5-0.5b", "qwen2-0.5b")}
    table = measure(configs, prompt_length=PROMPT, past_lengths=(PAST,), **timing(args))
    old, new = "qwen1.5-0.5b", "qwen2-0.5b"
    rows = {
        n: {
            "params_total": c.num_params,
            "params_compute": c.num_params_compute,
            "prefill_ms": table.get(n, "prefill", PROMPT),
            "decode_ms": table.get(n, "decode", PAST),
            "prefill_p10_p90_ms": [
                table.record(n, "prefill", PROMPT).p10_ms,
                table.record(n, "prefill", PROMPT).p90_ms,
            ],
            "decode_p10_p90_ms": [table.record(n, "decode", PAST).p10_ms, table.record(n, "decode", PAST).p90_ms],
        }
        for n, c in configs.items()
    }
    return {
        "rows": rows,
        "prefill_speedup_old_over_new": rows[new]["prefill_ms"] / rows[old]["prefill_ms"],
        "decode_speedup_old_over_new": rows[new]["decode_ms"] / rows[old]["decode_ms"],
        "table": table.to_dict(),
    }


def measure_in_groups(configs: dict[str, ArchConfig], anchors: list[str], args: argparse.Namespace, work: Path):
    """Export once, then time groups of shapes with the anchors in every group (ONNX Runtime sessions of
    dozens of 50 M-parameter graphs at once would not fit in memory); ratios are taken within a group."""
    candidates = export_candidates(configs, work / "onnx", prompt_length=PROMPT, past_lengths=(PAST,))
    others = [n for n in configs if n not in anchors]
    groups = [others[i : i + args.group] for i in range(0, len(others), args.group)] or [[]]
    tables = []
    for members in groups:
        names = anchors + members
        chosen = {k: v for k, v in candidates.items() if k.split("/")[0] in names}
        report = profile(chosen, backends=("onnxruntime",), workdir=work / "profile", **timing(args))
        tables.append(LatencyTable.from_report(report, {n: configs[n] for n in names}))
    return tables


def predictor_accuracy(args: argparse.Namespace, space: SearchSpace, work: Path) -> dict[str, Any]:
    """Fit on shapes between 10 M and 100 M parameters; score on other shapes of that range never seen in fitting."""
    budget = Budget(10_000_000, 100_000_000)
    shapes = space.random_feasible(args.calibration + args.held_out, budget, random.Random(7))
    configs = {shape_name(c): c for c in shapes}
    names = list(configs)
    train, held = names[: args.calibration], names[args.calibration :]
    tables = measure_in_groups(configs, [], args, work / "calibration")
    table = LatencyTable(
        records=[r for t in tables for r in t.records],
        configs=configs,
        environment=tables[0].environment,
        settings=tables[0].settings,
    )
    predictor = LatencyPredictor.fit(table.subset(train))
    scores = evaluate(predictor, table.subset(held))
    plot_predictions(scores, args.out / "predictor_heldout.png")
    predictor.save_json(args.out / "predictor.json")
    return {
        "train": train,
        "held_out": held,
        "evaluation": scores,
        "predictor": predictor.describe(),
        "table": table.to_dict(),
    }


def fit_layers(base: ArchConfig, budget: Budget) -> ArchConfig:
    """The layer count that brings `base` closest to the middle of the budget."""
    middle = (budget.min_params + budget.max_params) / 2
    best = min(range(1, 80), key=lambda n: abs(budget.params(base.replace(num_layers=n)) - middle))
    config = base.replace(num_layers=best)
    if not budget.contains(config):
        raise ValueError(f"no layer count puts {base.summary()} inside {budget}")
    return config


def search_and_compare(args: argparse.Namespace, space: SearchSpace, predictor: LatencyPredictor, work: Path):
    budget = Budget(47_500_000, 52_500_000)
    objective = Objective({"decode_ms": 1.0, "prefill_ms": 1.0})
    result = run_search(
        space,
        budget,
        objective,
        screen=predictor_screen(predictor, PROMPT, PAST),
        measure=host_measure(PROMPT, PAST, workdir=work / "search", **timing(args)),
        top_k=args.top_k,
        population=args.population,
        generations=args.generations,
        seed=0,
    )
    result.save(args.out / "search")
    chosen = result.chosen
    deep_thin = fit_layers(  # MobileLLM-like: narrow, many layers, GQA
        ArchConfig(vocab_size=VOCAB, hidden_size=384, num_layers=1, num_heads=6, num_kv_heads=2, ffn_size=1024), budget
    )
    wide_shallow = fit_layers(  # PhoneLM-like: wide, few layers, MHA, ReLU, FFN 4×
        ArchConfig(vocab_size=VOCAB, hidden_size=768, num_layers=1, num_heads=12, ffn_size=3072, activation="relu"),
        budget,
    )
    randoms = space.random_feasible(args.randoms, budget, random.Random(11))
    configs = {"chosen": chosen, "deep-thin": deep_thin, "wide-shallow": wide_shallow}
    configs |= {f"random{i:02d}-{shape_name(c)}": c for i, c in enumerate(randoms)}
    tables = measure_in_groups(configs, ["chosen", "deep-thin", "wide-shallow"], args, work / "compare")
    ratios: dict[str, dict[str, list[float]]] = {}
    for table in tables:
        for kind, length in (("decode", PAST), ("prefill", PROMPT)):
            mine = table.get("chosen", kind, length)
            for ref in ("deep-thin", "wide-shallow"):
                ratios.setdefault(ref, {}).setdefault(kind, []).append(table.get(ref, kind, length) / mine)
            group_randoms = [n for n in table.configs if n.startswith("random")]
            for n in group_randoms:
                ratios.setdefault("randoms", {}).setdefault(kind, []).append(table.get(n, kind, length) / mine)
    summary = {
        ref: {kind: statistics.median(values) for kind, values in by_kind.items()} for ref, by_kind in ratios.items()
    }
    return {
        "budget": budget.to_dict(),
        "objective": objective.to_dict(),
        "chosen": chosen.to_dict(),
        "chosen_summary": chosen.summary(),
        "references": {"deep-thin": deep_thin.summary(), "wide-shallow": wide_shallow.summary()},
        "search_timings_s": result.timings,
        "screened": len(result.screened),
        "measured": len(result.measured),
        "ratios_reference_over_chosen": summary,
        "ratios_all": ratios,
        "tables": [t.to_dict() for t in tables],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/slm_search"))
    parser.add_argument("--work", type=Path, default=Path("runs/slm_search_bench"), help="exported graphs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--group", type=int, default=10, help="shapes per interleaved timing run")
    parser.add_argument("--calibration", type=int, default=12, help="shapes the predictor is fitted on")
    parser.add_argument("--held-out", type=int, default=8, help="shapes it is scored on")
    parser.add_argument("--randoms", type=int, default=30)
    parser.add_argument("--top-k", type=int, default=4)
    parser.add_argument("--population", type=int, default=32)
    parser.add_argument("--generations", type=int, default=15)
    parser.add_argument("--stages", default="predictor,search,inversion", help="which figures, comma list")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    space = SearchSpace(
        hidden_sizes=tuple(range(256, 1025, 64)), num_layers=tuple(range(2, 41)), vocab_size=VOCAB, context_length=2048
    )
    stages = set(args.stages.split(","))
    if "predictor" in stages:
        acc = stage(args.out, "predictor", lambda: predictor_accuracy(args, space, args.work))
        print(json.dumps(acc["evaluation"]["groups"], indent=1))
    if "search" in stages:
        predictor = LatencyPredictor.load_json(args.out / "predictor.json")
        comparison = stage(args.out, "search", lambda: search_and_compare(args, space, predictor, args.work))
        keys = ("chosen_summary", "search_timings_s", "ratios_reference_over_chosen")
        print(json.dumps({k: comparison[k] for k in keys}, indent=1))
    if "inversion" in stages:
        inv = stage(args.out, "inversion", lambda: inversion(args))
        print(json.dumps({k: v for k, v in inv.items() if k != "table"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
