"""The ``slm`` command.

- ``slm fit | validate | test -c configs/slm/<x>.yaml``: LightningCLI pre-training (``slm.train``).
- ``slm profile --preset NAME | --config FILE``: prefill and decode latency, side by side (``slm.latency``).
- ``slm search --budget 40e6:60e6``: runtime-first shape search (``slm.search``); ``--device-bundle DIR`` sends
  the shortlist to a board, ``--ingest RESULTS.json`` finishes from the board's timings (``slm.device_search``).
- ``slm export``: prefill and decode ONNX graphs of a preset, a config or a trained checkpoint.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence
from pathlib import Path

from ondevice.cli import positive_ints

LIGHTNING_COMMANDS = ("fit", "validate", "test")


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def _configs(args: argparse.Namespace) -> dict:
    from slm.arch import ArchConfig

    configs = {name: ArchConfig.from_name(name) for name in args.preset or []}
    for path in args.config or []:
        config = ArchConfig.from_file(path)
        configs[config.name or Path(path).stem] = config
    if not configs:
        raise SystemExit("slm: give at least one --preset NAME or --config FILE")
    return configs


def _timing(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)


def _profile(args: argparse.Namespace) -> int:
    from slm.latency import measure

    configs = _configs(args)
    table = measure(
        configs,
        prompt_length=args.prompt_length,
        past_lengths=args.past_lengths,
        backends=args.backends.split(","),
        threads=args.threads,
        warmup=args.warmup,
        repeats=args.repeats,
        rounds=args.rounds,
    )
    print(table.to_markdown())
    if args.out:
        print(f"saved {table.save_json(Path(args.out) / 'latency.json')}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from slm.export import export_graphs, random_model

    if args.checkpoint:
        from slm.train import LanguageModel

        models = {Path(args.checkpoint).stem: LanguageModel.load_from_checkpoint(args.checkpoint).model.eval()}
    else:
        models = {name: random_model(config) for name, config in _configs(args).items()}
    for name, model in models.items():
        for kind, path in export_graphs(model, args.out, stem=name, int8=args.int8).items():
            print(f"{kind}: {path}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from slm.search import Budget, Objective, SearchSpace, host_measure, predictor_screen, run_search

    if args.ingest:
        from slm.device_search import ingest_search_results

        result = ingest_search_results(args.ingest, args.bundle)
        return _report(result, Path(args.out or Path(args.ingest).parent / "search"))
    if not args.budget:
        raise SystemExit("slm search: --budget MIN:MAX is required (e.g. --budget 40e6:60e6)")
    budget = Budget.parse(args.budget, count=args.count)
    objective = Objective.parse(args.objective)
    shape = {
        "hidden_sizes": args.hidden_sizes,
        "num_layers": args.num_layers,
        "head_dims": args.head_dims,
        "ffn_ratios": args.ffn_ratios,
    }
    space = SearchSpace(
        vocab_size=args.vocab_size,
        context_length=args.context_length,
        **{k: tuple(v) for k, v in shape.items() if v is not None},
    )
    predictor = _predictor(args, space, budget)
    screen = predictor_screen(predictor, args.prompt_length, args.past_length)
    if args.device_bundle:
        from slm.device_search import write_search_bundle
        from slm.search import evolve, shortlist

        screened = evolve(
            space, budget, screen, objective, population=args.population, generations=args.generations, seed=args.seed
        )
        chosen = shortlist([e for e in screened if budget.contains(e.config)], objective, args.top_k)
        bundle = write_search_bundle(
            chosen,
            args.device_bundle,
            space=space,
            budget=budget,
            objective=objective,
            screened=screened,
            prompt_length=args.prompt_length,
            past_length=args.past_length,
            warmup=args.warmup,
            repeats=args.repeats,
            rounds=args.rounds,
        )
        print(f"bundle of {len(chosen)} shapes: {bundle}")
        print(f"on the board:  python -m ondevice.device {bundle} --threads {args.threads}")
        print(f"then here:     slm search --ingest {bundle}/results-<host>-{args.threads}t.json")
        return 0
    measure = host_measure(
        args.prompt_length,
        args.past_length,
        threads=args.threads,
        warmup=args.warmup,
        repeats=args.repeats,
        rounds=args.rounds,
    )
    result = run_search(
        space,
        budget,
        objective,
        screen=screen,
        measure=measure,
        top_k=args.top_k,
        population=args.population,
        generations=args.generations,
        seed=args.seed,
    )
    return _report(result, Path(args.out or "runs/slm_search"))


def _predictor(args: argparse.Namespace, space, budget):
    """A saved predictor, or one fitted now on shapes around the budget measured on this machine."""
    from slm.latency import FEATURES, LatencyPredictor, measure
    from slm.search import Budget, shape_name

    if args.predictor:
        return LatencyPredictor.load_json(args.predictor)
    needed = len(FEATURES) + 1
    if args.calibration < needed:
        raise SystemExit(f"slm search: --calibration must be at least {needed} (the predictor's coefficients)")
    # Calibrate over a wider range than the budget so the fitted law holds at its edges.
    around = Budget(max(1, budget.min_params // 2), budget.max_params * 2, count=budget.count)
    shapes = space.random_feasible(args.calibration, around, random.Random(args.seed))
    table = measure(
        {shape_name(c): c for c in shapes},
        prompt_length=args.prompt_length,
        past_lengths=(args.past_length,),
        threads=args.threads,
        warmup=args.warmup,
        repeats=args.repeats,
        rounds=args.rounds,
    )
    predictor = LatencyPredictor.fit(table)
    out = Path(args.out or "runs/slm_search")
    print(f"calibration table: {table.save_json(out / 'calibration.json')}", file=sys.stderr)
    print(f"predictor: {predictor.save_json(out / 'predictor.json')}", file=sys.stderr)
    return predictor


def _report(result, out: Path) -> int:
    paths = result.save(out)
    chosen = result.measured[result.chosen_index]
    print(f"chosen: {result.chosen.summary()}")
    print("measured: " + ", ".join(f"{k} {v:.4g}" for k, v in chosen.metrics.items()))
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slm",
        description="Small language models shaped for a device. Training: slm fit|validate|test -c CONFIG.yaml "
        "(LightningCLI; `slm fit --help`). Tools:",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    profile = commands.add_parser("profile", help="time prefill and decode of shapes side by side")
    profile.add_argument("--preset", action="append", help="a preset name (repeatable)")
    profile.add_argument("--config", action="append", help="an ArchConfig YAML or an slm fit config (repeatable)")
    profile.add_argument("--prompt-length", type=int, default=64)
    profile.add_argument("--past-lengths", type=positive_ints, default=[256], help="decode past lengths, e.g. 256,1024")
    profile.add_argument("--backends", default="onnxruntime", help="onnxruntime, onnxruntime-int8, torch (comma list)")
    profile.add_argument("--out", help="folder for latency.json")
    _timing(profile)
    profile.set_defaults(run=_profile)

    export = commands.add_parser("export", help="prefill and decode ONNX graphs, checked against torch to 1e-4")
    export.add_argument("--preset", action="append")
    export.add_argument("--config", action="append")
    export.add_argument("--checkpoint", help="a checkpoint written by slm fit")
    export.add_argument("--int8", action="store_true", help="also write dynamic int8 graphs")
    export.add_argument("--out", required=True)
    export.set_defaults(run=_export)

    search = commands.add_parser("search", help="runtime-first shape search at a parameter budget")
    search.add_argument("--budget", help="parameter range MIN:MAX, e.g. 40e6:60e6 or 40M:60M")
    search.add_argument("--count", choices=("compute", "total"), default="compute",
                        help="budget counts non-embedding + LM head (compute, default) or all parameters")  # fmt: skip
    search.add_argument(
        "--objective",
        default="decode_ms=1,prefill_ms=1",
        help="weights of decode_ms, prefill_ms, memory_bytes (default: decode_ms=1,prefill_ms=1)",
    )
    search.add_argument("--vocab-size", type=int, default=32000, help="the tokenizer's vocabulary (fixed)")
    search.add_argument("--context-length", type=int, default=2048)
    search.add_argument("--hidden-sizes", type=positive_ints, help="comma list (default 256..1536 by 64)")
    search.add_argument("--num-layers", type=positive_ints, help="comma list (default 4..40)")
    search.add_argument("--head-dims", type=positive_ints, help="comma list (default 64,128)")
    search.add_argument("--ffn-ratios", type=_floats, help="comma list (default 2,2.5,3,3.5,4)")
    search.add_argument("--prompt-length", type=int, default=64)
    search.add_argument("--past-length", type=int, default=256)
    search.add_argument("--predictor", help="a predictor JSON saved by an earlier search (skips calibration)")
    search.add_argument("--calibration", type=int, default=12, help="shapes timed to fit the predictor")
    search.add_argument("--top-k", type=int, default=6, help="screened shapes measured for real")
    search.add_argument("--population", type=int, default=32)
    search.add_argument("--generations", type=int, default=20)
    search.add_argument("--seed", type=int, default=0)
    search.add_argument("--device-bundle", help="write the shortlist as a bundle for the board, then stop")
    search.add_argument("--ingest", help="a results JSON from `python -m ondevice.device` on the bundle")
    search.add_argument("--bundle", help="the bundle folder of --ingest (default: the results file's folder)")
    search.add_argument("--out", help="output folder (default runs/slm_search)")
    _timing(search)
    search.set_defaults(run=_search)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LIGHTNING_COMMANDS:
        from slm.train import lightning_main

        lightning_main(argv)
        return 0
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
