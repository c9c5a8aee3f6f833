"""Runtime-first search figures on this CPU (ONNX Runtime, batch 1): the survey's Qwen inversion, the latency
predictor's accuracy on held-out shapes, and a search at a 50 M-parameter budget against two reference shapes and
30 random ones.

    python benchmarks/slm_search.py --out benchmarks/results/slm_search   # one ORT thread
    python benchmarks/slm_search.py --stages finalists --repeats 60       # the kept runs' choices, replicated

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
from slm.latency import (
    LatencyPredictor,
    LatencyTable,
    evaluate,
    export_candidates,
    measure,
    on_common_scale,
    plot_predictions,
)
from slm.search import Budget, Objective, SearchSpace, host_measure, predictor_screen, run_search, shape_name

PROMPT, PAST = 64, 256
VOCAB = 32000  # MobileLLM's tokenizer size: a realistic vocabulary for a 50 M-parameter model
# Decode latency first, then prefill (issue 19): prefill weighs a tenth, so it only breaks near-ties in decode.
OBJECTIVE = Objective({"decode_ms": 1.0, "prefill_ms": 0.1})


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


def measure_in_groups(
    configs: dict[str, ArchConfig], anchors: list[str], args: argparse.Namespace, work: Path, repeats: int | None = None
):
    """Export once, then time groups of shapes with the anchors in every group (ONNX Runtime sessions of
    dozens of 50 M-parameter graphs at once would not fit in memory); ratios are taken within a group.
    `repeats` overrides --repeats (the comparison's calls)."""
    candidates = export_candidates(configs, work / "onnx", prompt_length=PROMPT, past_lengths=(PAST,))
    others = [n for n in configs if n not in anchors]
    groups = [others[i : i + args.group] for i in range(0, len(others), args.group)] or [[]]
    tables = []
    for members in groups:
        names = anchors + members
        chosen = {k: v for k, v in candidates.items() if k.split("/")[0] in names}
        settings = {**timing(args), **({} if repeats is None else {"repeats": repeats})}
        report = profile(chosen, backends=("onnxruntime",), workdir=work / "profile", **settings)
        tables.append(LatencyTable.from_report(report, {n: configs[n] for n in names}))
    return tables


def predictor_accuracy(
    args: argparse.Namespace, space: SearchSpace, work: Path, budget: Budget, prefix: str = ""
) -> dict[str, Any]:
    """Fit on shapes inside `budget`; score on other shapes of that range never seen in fitting. Writes
    <prefix>latency_predictor.json and <prefix>predictor_heldout.png under --out.

    The shapes are timed in groups of --group (memory), each group with three anchors from the fitted set (the
    smallest, middle and largest by decode MACs) that put every group on one scale (`on_common_scale`). Fitted
    and held-out shapes are mixed across the groups, so no split sits alone in one run.
    """
    shapes = space.random_feasible(args.calibration + args.held_out, budget, random.Random(7))
    configs = {shape_name(c): c for c in shapes}
    names = list(configs)
    train, held = names[: args.calibration], names[args.calibration :]
    by_macs = sorted(train, key=lambda n: configs[n].decode_macs(PAST))
    anchors = [by_macs[0], by_macs[len(by_macs) // 2], by_macs[-1]]
    order = [n for n in names if n not in anchors]
    random.Random(3).shuffle(order)
    tables = measure_in_groups({n: configs[n] for n in anchors + order}, anchors, args, work / "calibration")
    table, factors = on_common_scale(tables, anchors)
    predictor = LatencyPredictor.fit(table.subset(train))
    scores = evaluate(predictor, table.subset(held))
    plot_predictions(scores, args.out / f"{prefix}predictor_heldout.png")
    predictor.save_json(args.out / f"{prefix}latency_predictor.json")
    return {
        "budget": budget.to_dict(),
        "train": train,
        "held_out": held,
        "anchors": anchors,
        "group_factors": factors,
        "groups": [sorted(t.configs) for t in tables],
        "evaluation": scores,
        "predictor": predictor.describe(),
        "table": table.to_dict(),
        "group_tables": [t.to_dict() for t in tables],
    }


def fit_layers(base: ArchConfig, budget: Budget) -> ArchConfig:
    """`base` brought to the middle of the budget: the closest layer count, then, if that still falls outside
    (a wide shape moves in big steps), the FFN width (multiples of 64) closest to the middle at that depth."""
    middle = (budget.min_params + budget.max_params) / 2
    layers = min(range(1, 80), key=lambda n: abs(budget.params(base.replace(num_layers=n)) - middle))
    config = base.replace(num_layers=layers)
    if not budget.contains(config):
        widths = range(64, 4 * base.ffn_size + 1, 64)
        ffn = min(widths, key=lambda f: abs(budget.params(config.replace(ffn_size=f)) - middle))
        config = config.replace(ffn_size=ffn)
    if not budget.contains(config):
        raise ValueError(f"no layer count or FFN width puts {base.summary()} inside {budget}")
    return config


def search_and_compare(
    args: argparse.Namespace,
    space: SearchSpace,
    predictor: LatencyPredictor,
    work: Path,
    budget: Budget,
    references: dict[str, ArchConfig],
    name: str = "search",
) -> dict[str, Any]:
    """Search at `budget`, then time the chosen shape, the references (their layer counts fitted to the budget's
    middle) and --randoms random feasible shapes side by side, in groups that all hold the chosen shape and the
    references; every ratio is taken within a group."""
    objective = OBJECTIVE
    result = run_search(
        space,
        budget,
        objective,
        screen=predictor_screen(predictor, PROMPT, PAST),
        # the shortlist in groups of --group with three anchors each, as the predictor's shapes (memory)
        measure=host_measure(
            PROMPT, PAST, workdir=work / name, group_size=args.group + 3, replicas=args.replicas, **timing(args)
        ),
        confirm_measure=host_measure(PROMPT, PAST, workdir=work / name, replicas=args.confirm_replicas, **timing(args)),
        top_k=args.top_k,
        measure_front=args.measure_front,
        margin=args.margin,
        confirm=args.confirm,
        population=args.population,
        generations=args.generations,
        seed=0,
    )
    result.save(args.out / name)
    chosen = result.chosen
    fitted = {ref: fit_layers(base, budget) for ref, base in references.items()}
    randoms = space.random_feasible(args.randoms, budget, random.Random(11))
    configs = {"chosen": chosen, **fitted}
    configs |= {f"random{i:02d}-{shape_name(c)}": c for i, c in enumerate(randoms)}
    anchors = ["chosen", *fitted]
    tables = measure_in_groups(configs, anchors, args, work / f"{name}_compare", repeats=args.compare_repeats)
    ratios: dict[str, dict[str, list[float]]] = {}
    random_ratios: dict[str, dict[str, float]] = {}  # random shape → kind → its time over the chosen one's
    for table in tables:
        for kind, length in (("decode", PAST), ("prefill", PROMPT)):
            mine = table.get("chosen", kind, length)
            for ref in fitted:
                ratios.setdefault(ref, {}).setdefault(kind, []).append(table.get(ref, kind, length) / mine)
            for n in (n for n in table.configs if n.startswith("random")):
                random_ratios.setdefault(n, {})[kind] = table.get(n, kind, length) / mine
    ratios["randoms"] = {kind: [r[kind] for r in random_ratios.values()] for kind in ("decode", "prefill")}
    summary = {
        ref: {kind: statistics.median(values) for kind, values in by_kind.items()} for ref, by_kind in ratios.items()
    }
    # The median random shape by decode latency (relative to the chosen one, so groups compare): with an even
    # count, the lower of the two middle ones.
    ranked = sorted(random_ratios, key=lambda n: random_ratios[n]["decode"])
    median_random = ranked[(len(ranked) - 1) // 2]
    return {
        "budget": budget.to_dict(),
        "objective": objective.to_dict(),
        "chosen": chosen.to_dict(),
        "chosen_summary": chosen.summary(),
        "references": {ref: c.to_dict() for ref, c in fitted.items()},
        "references_summary": {ref: c.summary() for ref, c in fitted.items()},
        "median_random": {
            "name": median_random,
            "arch": configs[median_random].to_dict(),
            **random_ratios[median_random],
        },
        "search_timings_s": result.timings,
        "counts": result.counts,
        "ratios_reference_over_chosen": summary,
        "ratios_all": ratios,
        "tables": [t.to_dict() for t in tables],
    }


FINALIST_RUNS = ("search_front_only", "search_margin", "search_confirm1", "search")


def finalists(args: argparse.Namespace, work: Path, budget: Budget, references: dict[str, ArchConfig]) -> dict:
    """The shapes each kept search run chose, and both references, in one group timed --finalist-replicas times,
    each time in fresh processes: the sharpest ranking of the top this machine gives (the floor shrinks as
    1/√replicas)."""
    configs: dict[str, ArchConfig] = {}
    chosen_by: dict[str, list[str]] = {}
    for run in FINALIST_RUNS:
        path = args.out / f"{run}.json"
        if path.is_file():
            config = ArchConfig.from_dict(json.loads(path.read_text())["chosen"])
            configs.setdefault(shape_name(config), config)
            chosen_by.setdefault(shape_name(config), []).append(run)
    configs |= {ref: fit_layers(base, budget) for ref, base in references.items()}
    # One run per replica, each in fresh processes; every ratio is taken inside its run, then the median.
    tables = [
        measure(configs, prompt_length=PROMPT, past_lengths=(PAST,), workdir=work / "finalists", **timing(args))
        for _ in range(args.finalist_replicas)
    ]
    rows = {}
    for n, c in configs.items():
        ratios = [t.get(n, "decode", PAST) / t.get("wide-shallow", "decode", PAST) for t in tables]
        prefill = [t.get(n, "prefill", PROMPT) / t.get("wide-shallow", "prefill", PROMPT) for t in tables]
        rows[n] = {
            "chosen_by": chosen_by.get(n, []),
            "summary": c.summary(),
            "params_compute": c.num_params_compute,
            "decode_over_wide_shallow": statistics.median(ratios),
            "decode_over_wide_shallow_runs": ratios,
            "prefill_over_wide_shallow": statistics.median(prefill),
            "decode_ms_runs": [t.get(n, "decode", PAST) for t in tables],
        }
    return {"rows": rows, "replicas": args.finalist_replicas, "tables": [t.to_dict() for t in tables]}


DEEP_THIN = ArchConfig(  # MobileLLM-like: narrow, many layers, GQA
    vocab_size=VOCAB, hidden_size=384, num_layers=1, num_heads=6, num_kv_heads=2, ffn_size=1024
)
WIDE_SHALLOW = ArchConfig(  # PhoneLM-like: wide, few layers, MHA, ReLU, FFN 4×
    vocab_size=VOCAB, hidden_size=768, num_layers=1, num_heads=12, ffn_size=3072, activation="relu"
)


def timing_and_search_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments this benchmark shares with benchmarks/slm_premise.py: timing, groups, predictor, search."""
    parser.add_argument("--threads", type=int, default=1, help="ORT intra-op threads when timing (the issue: one)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--group", type=int, default=10, help="shapes per interleaved timing run")
    parser.add_argument("--calibration", type=int, default=20, help="shapes the predictor is fitted on")
    parser.add_argument("--held-out", type=int, default=10, help="shapes it is scored on")
    parser.add_argument("--randoms", type=int, default=30)
    parser.add_argument("--top-k", type=int, default=4)
    parser.add_argument(
        "--measure-front", type=int, default=48, help="front and near-best shapes timed for real, at most"
    )
    parser.add_argument(
        "--margin", type=float, default=0.08, help="also time shapes predicted within this of the best score"
    )
    parser.add_argument(
        "--compare-repeats", type=int, default=100, help="timed calls per shape in the comparison with references"
    )
    parser.add_argument("--confirm", type=int, default=4, help="the best measured shapes timed again to choose")
    parser.add_argument("--confirm-replicas", type=int, default=3, help="runs of the confirmation, fresh processes")
    parser.add_argument("--replicas", type=int, default=1, help="runs of the first pass (shortlist), fresh processes")
    parser.add_argument("--population", type=int, default=32)
    parser.add_argument("--generations", type=int, default=15)


def predictor_stage(args: argparse.Namespace, space: SearchSpace, around: Budget) -> None:
    """The predictor figure (`predictor_accuracy` on shapes of `around`) as predictor.json; prints its groups."""
    acc = stage(args.out, "predictor", lambda: predictor_accuracy(args, space, args.work, around))
    print(json.dumps(acc["evaluation"]["groups"], indent=1))


def search_stage(
    args: argparse.Namespace,
    space: SearchSpace,
    budget: Budget,
    references: dict[str, ArchConfig],
    name: str = "search",
) -> dict[str, Any]:
    """The search figure (`search_and_compare` with the saved latency_predictor.json), saved as `<name>.json`."""
    predictor = LatencyPredictor.load_json(args.out / "latency_predictor.json")
    comparison = stage(
        args.out, name, lambda: search_and_compare(args, space, predictor, args.work, budget, references, name=name)
    )
    keys = ("chosen_summary", "references_summary", "median_random", "counts", "search_timings_s")
    print(json.dumps({k: comparison[k] for k in (*keys, "ratios_reference_over_chosen")}, indent=1))
    return comparison


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/slm_search"))
    parser.add_argument("--work", type=Path, default=Path("runs/slm_search_bench"), help="exported graphs")
    parser.add_argument("--stages", default="predictor,search,inversion", help="which figures, comma list")
    parser.add_argument("--finalist-replicas", type=int, default=6, help="finalists stage: runs in fresh processes")
    timing_and_search_arguments(parser)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    space = SearchSpace(
        hidden_sizes=tuple(range(256, 1025, 64)), num_layers=tuple(range(2, 41)), vocab_size=VOCAB, context_length=2048
    )
    stages = set(args.stages.split(","))
    if "predictor" in stages:
        predictor_stage(args, space, Budget(10_000_000, 100_000_000))
    budget = Budget(47_500_000, 52_500_000)  # the search and its finalists
    references = {"deep-thin": DEEP_THIN, "wide-shallow": WIDE_SHALLOW}
    if "search" in stages:
        search_stage(args, space, budget, references)
    if "search-replicated" in stages:  # the first pass replicated too (--replicas, at least 3 here)
        replicated = argparse.Namespace(**{**vars(args), "replicas": max(args.replicas, 3)})
        search_stage(replicated, space, budget, references, name="search_replicated")
    if "finalists" in stages:
        top = stage(args.out, "finalists", lambda: finalists(args, args.work, budget, references))
        for name, row in sorted(top["rows"].items(), key=lambda kv: kv[1]["decode_over_wide_shallow"]):
            runs = ", ".join(f"{r:.3f}" for r in row["decode_over_wide_shallow_runs"])
            print(f"{name}: decode {row['decode_over_wide_shallow']:.3f}× wide-shallow ({runs})")
    if "inversion" in stages:
        inv = stage(args.out, "inversion", lambda: inversion(args))
        print(json.dumps({k: v for k, v in inv.items() if k != "table"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
