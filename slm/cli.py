"""The ``slm`` command.

- ``slm fit | validate | test -c CONFIG``: LightningCLI pre-training (``slm.train``); ``CONFIG`` is a YAML path or
  the name of a shipped config (``slm configs`` lists them).
- ``slm profile --model NAME|FILE.yaml``: prefill and decode latency, side by side (``slm.latency``).
- ``slm search --budget 40e6:60e6``: runtime-first shape search (``slm.search``); ``--device-bundle DIR`` sends
  the shortlist to a board, ``--ingest RESULTS.json`` finishes from the board's timings (``slm.search.device``).
- ``slm export``: prefill and decode ONNX graphs of a preset, a config or a trained checkpoint: the graphs the
  search times (``slm.graphs``), with the model's weights, checked against torch.

Every subcommand's code is imported only when it is chosen, so ``slm --help`` loads neither torch nor Lightning.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ondevice.checkpoint_paths import refuse_remote
from ondevice.command_line import (
    DEFAULT_THREADS,
    Subcommand,
    add_model_flag,
    add_out_flag,
    add_runtime_flags,
    chosen_backends,
    default_out,
    dispatch,
    floats,
    lightning_commands,
    positive_ints,
)
from ondevice.errors import InputError

if TYPE_CHECKING:  # annotations only: importing these at run time would load numpy for `slm --help`
    from slm.arch import ArchConfig
    from slm.latency import LatencyPredictor
    from slm.search import Budget, SearchResult, SearchSpace

DESCRIPTION = "Small language models shaped for a device: runtime-first shape search, latency, pre-training."
DEFAULT_SEARCH_OUT = default_out("slm", "search")
# Shapes were named with --preset NAME and --config FILE; both are --model now.
MODEL_ALIASES = {"--preset": "--model", "--config": "--model"}


# ------------------------------------------------------------------------------------------------- arguments


def _shape_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    add_model_flag(
        parser, "a preset name (`slm profile --help` lists them) or an ArchConfig / slm fit YAML", required=required
    )


def _timing_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per graph (default 3)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per graph and round (default 20)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")


def _threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads", type=positive_ints, default=list(DEFAULT_THREADS), help="intra-op threads (default 1)"
    )


def profile_arguments(parser: argparse.ArgumentParser) -> None:
    _shape_arguments(parser)
    parser.add_argument("--prompt-length", type=int, default=64, help="prefill tokens (default 64)")
    parser.add_argument("--past-lengths", type=positive_ints, default=[256], help="decode past lengths, e.g. 256,1024")
    add_runtime_flags(parser, backends="torch, onnxruntime, onnxruntime-int8", one_thread_count=True)
    add_out_flag(parser, "folder for latency.json", default_out("slm", "profile"))
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="time the whole run this many times in fresh processes and take medians (ONNX Runtime backends; one "
        "process carries ~2.5 %% timing error of its own)",
    )
    _timing_arguments(parser)


def export_arguments(parser: argparse.ArgumentParser) -> None:
    _shape_arguments(parser, required=False)
    parser.add_argument(
        "--checkpoint", help="a checkpoint written by slm fit, a local file (instead of --model); URLs are refused"
    )
    parser.add_argument("--int8", action="store_true", help="also write dynamic int8 graphs")
    add_out_flag(parser, "the folder for <name>.prefill.onnx and <name>.decode.onnx")


def search_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budget", help="parameter range MIN:MAX, e.g. 40e6:60e6 or 40M:60M")
    parser.add_argument("--count", choices=("compute", "total"), default="compute",
                        help="budget counts non-embedding + LM head (compute, default) or all parameters")  # fmt: skip
    parser.add_argument(
        "--objective",
        default="decode_ms=1,prefill_ms=1",
        help="weights of decode_ms, prefill_ms, memory_bytes (default: decode_ms=1,prefill_ms=1)",
    )
    parser.add_argument("--vocab-size", type=int, default=32000, help="the tokenizer's vocabulary (fixed)")
    parser.add_argument("--context-length", type=int, default=2048, help="the model's context (default 2048)")
    parser.add_argument("--hidden-sizes", type=positive_ints, help="comma list (default 256..1536 by 64)")
    parser.add_argument("--num-layers", type=positive_ints, help="comma list (default 4..40)")
    parser.add_argument("--head-dims", type=positive_ints, help="comma list (default 64,128)")
    parser.add_argument("--ffn-ratios", type=floats, help="comma list (default 2,2.5,3,3.5,4)")
    parser.add_argument("--prompt-length", type=int, default=64, help="prefill tokens timed (default 64)")
    parser.add_argument("--past-length", type=int, default=256, help="decode past length timed (default 256)")
    parser.add_argument("--predictor", help="a predictor JSON saved by an earlier search (skips calibration)")
    parser.add_argument("--calibration", type=int, default=12, help="shapes timed to fit the predictor")
    parser.add_argument("--top-k", type=int, default=6, help="screened shapes measured for real, at least")
    parser.add_argument(
        "--measure-front",
        type=int,
        default=16,
        help="time every shape of the screened Pareto front, then the near-best ones (--margin), up to this many "
        "(default 16; 0: top-k only)",
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=0.08,
        help="also time the shapes whose predicted score is within this fraction of the best (default 0.08, about "
        "twice the predictor's held-out error at 10-100 M; 0: the front only)",
    )
    parser.add_argument(
        "--confirm",
        type=int,
        default=4,
        help="time the best this many measured shapes again, together, and choose from that run (default 4; 0: off)",
    )
    parser.add_argument(
        "--confirm-replicas",
        type=int,
        default=3,
        help="the confirmation's runs, each in fresh worker processes, medians taken (default 3; one process "
        "carries ~2.5 %% timing error of its own)",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="runs of the first timing pass, each in fresh processes, medians taken (default 1; 3 ranks the near-best "
        "more surely, at 3× the time)",
    )
    parser.add_argument(
        "--group-size",
        type=int,
        default=12,
        help="shapes per interleaved timing run, anchored to one scale (memory: 12 at 50 M took 6.5 GB; default 12)",
    )
    parser.add_argument("--population", type=int, default=32, help="NSGA-II population (default 32)")
    parser.add_argument("--generations", type=int, default=20, help="NSGA-II generations (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration shapes and the evolution")
    parser.add_argument("--device-bundle", help="write the shortlist as a bundle for the board, then stop")
    parser.add_argument("--ingest", help="a results JSON from `python -m ondevice.device` on the bundle")
    parser.add_argument("--bundle", help="the bundle folder of --ingest (default: the results file's folder)")
    parser.add_argument(
        "--out",
        metavar="PATH",
        help=f"output folder (default {DEFAULT_SEARCH_OUT}; with --ingest: search/ beside the results)",
    )
    _threads_argument(parser)
    _timing_arguments(parser)


# ------------------------------------------------------------------------------------------------------ runs


def _configs(args: argparse.Namespace) -> dict[str, ArchConfig]:
    from slm.arch import ArchConfig

    configs: dict[str, ArchConfig] = {}
    for model in args.models:
        if model.endswith((".yaml", ".yml")) or Path(model).is_file():
            config = ArchConfig.from_file(model)
            configs[config.name or Path(model).stem] = config
        else:
            configs[model] = ArchConfig.from_name(model)
    if not configs:
        raise InputError("give at least one --model PRESET or --model FILE.yaml")
    return configs


def _one_thread_count(args: argparse.Namespace) -> int:
    if len(args.threads) != 1:
        raise InputError(f"slm times one thread count per run; got --threads {','.join(map(str, args.threads))}")
    return args.threads[0]


def _timing(args: argparse.Namespace) -> dict[str, int]:
    return {"warmup": args.warmup, "repeats": args.repeats, "rounds": args.rounds}


def _profile(args: argparse.Namespace) -> int:
    from slm.latency import measure

    backends = chosen_backends(args)
    if args.replicas > 1 and "torch" in backends:
        raise InputError("--replicas applies to ONNX Runtime backends only; give --backends onnxruntime")
    table = measure(
        _configs(args),
        prompt_length=args.prompt_length,
        past_lengths=args.past_lengths,
        backends=backends,
        threads=_one_thread_count(args),
        replicas=args.replicas,
        **_timing(args),
    )
    print(table.to_markdown())
    print(f"saved {table.save_json(Path(args.out) / 'latency.json')}")
    return 0


def _export(args: argparse.Namespace) -> int:
    if args.checkpoint:  # a local file only, refused before torch is imported (`ondevice.checkpoint_paths`)
        refuse_remote(args.checkpoint, "--checkpoint")
    from slm.export import export_checkpoint, export_graphs, random_model

    if args.checkpoint:
        if args.models:
            raise InputError("give --checkpoint or --model, not both")
        try:
            done = export_checkpoint(args.checkpoint, args.out, int8=args.int8)
        except ValueError as err:  # an unusable checkpoint or tokenizer: the file and the field are named
            raise InputError(str(err)) from err
        for kind, path in done.files.items():
            print(f"{kind}: {path}")
        print(done.verification_line())
        return 0
    if not args.models:
        raise InputError("give --checkpoint (a checkpoint of slm fit) or --model PRESET|FILE.yaml")
    for name, config in _configs(args).items():
        for kind, path in export_graphs(random_model(config), args.out, stem=name, int8=args.int8).items():
            print(f"{kind}: {path}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from slm.search import Budget, Objective, SearchSpace, evolve, host_measure, predictor_screen, run_search, shortlist

    if args.ingest:
        from slm.search.device import ingest_search_results

        result = ingest_search_results(args.ingest, args.bundle)
        return _report(result, Path(args.out or Path(args.ingest).parent / "search"))
    if not args.budget:
        raise InputError("--budget MIN:MAX is required (e.g. --budget 40e6:60e6)")
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
    screen = predictor_screen(_predictor(args, space, budget), args.prompt_length, args.past_length)
    evolution = {"population": args.population, "generations": args.generations, "seed": args.seed}
    lengths = {"prompt_length": args.prompt_length, "past_length": args.past_length}
    selection = {"top_k": args.top_k, "measure_front": args.measure_front, "margin": args.margin}
    if args.device_bundle:
        from slm.search.device import write_search_bundle

        screened = evolve(space, budget, screen, objective, **evolution)
        inside = [e for e in screened if budget.contains(e.config)]
        chosen = shortlist(inside, objective, args.top_k, measure_front=args.measure_front, margin=args.margin)
        bundle = write_search_bundle(
            chosen,
            args.device_bundle,
            space=space,
            budget=budget,
            objective=objective,
            screened=screened,
            selection=selection,
            **lengths,
            **_timing(args),
        )
        print(f"bundle of {len(chosen)} shapes: {bundle}")
        threads = _one_thread_count(args)
        print(f"on the board:  python -m ondevice.device {bundle} --threads {threads}")
        print(f"then here:     slm search --ingest {bundle}/results-<host>-{threads}t.json")
        return 0
    timing = dict(threads=_one_thread_count(args), group_size=args.group_size, **_timing(args))
    measure = host_measure(args.prompt_length, args.past_length, replicas=args.replicas, **timing)
    again = host_measure(args.prompt_length, args.past_length, replicas=args.confirm_replicas, **timing)
    confirmation = {"confirm": args.confirm, "confirm_measure": again}
    result = run_search(
        space, budget, objective, screen=screen, measure=measure, **confirmation, **selection, **evolution
    )
    return _report(result, Path(args.out or DEFAULT_SEARCH_OUT))


def _predictor(args: argparse.Namespace, space: SearchSpace, budget: Budget) -> LatencyPredictor:
    """A saved predictor, or one fitted now on shapes around the budget measured on this machine."""
    from slm.latency import FEATURES, LatencyPredictor, measure
    from slm.search import Budget, shape_name

    if args.predictor:
        return LatencyPredictor.load_json(args.predictor)
    needed = len(FEATURES) + 1
    if args.calibration < needed:
        raise InputError(f"--calibration must be at least {needed} (the predictor's coefficients)")
    # Calibrate over a wider range than the budget so the fitted law holds at its edges.
    around = Budget(max(1, budget.min_params // 2), budget.max_params * 2, count=budget.count)
    shapes = space.random_feasible(args.calibration, around, random.Random(args.seed))
    table = measure(
        {shape_name(c): c for c in shapes},
        prompt_length=args.prompt_length,
        past_lengths=(args.past_length,),
        threads=_one_thread_count(args),
        group_size=args.group_size,
        **_timing(args),
    )
    predictor = LatencyPredictor.fit(table)
    out = Path(args.out or DEFAULT_SEARCH_OUT)
    print(f"calibration table: {table.save_json(out / 'calibration.json')}", file=sys.stderr)
    print(f"predictor: {predictor.save_json(out / 'predictor.json')}", file=sys.stderr)
    return predictor


def _report(result: SearchResult, out: Path) -> int:
    paths = result.save(out)
    chosen = result.measured[result.chosen_index]
    print(f"chosen: {result.chosen.summary()}")
    print("measured: " + ", ".join(f"{k} {v:.4g}" for k, v in chosen.metrics.items()))
    counts = result.counts
    print(
        f"timed for real: {counts['measured']} shapes; predicted only: {counts['predicted_only']} of "
        f"{counts['screened']} screened; screened front: {counts['front_measured']} of {counts['screened_front']} "
        f"timed; within the margin of the best: {counts['near_best_measured']} of {counts['near_best']} timed"
    )
    if result.confirmed:
        names = ", ".join(e.config.name for e in result.confirmed)
        print(f"chosen from one confirmation run of the {counts['confirmed']} best measured: {names}")
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


COMMANDS: dict[str, Subcommand] = {
    **lightning_commands("slm", "slm.train:lightning_main", ("fit", "validate", "test")),
    "profile": Subcommand(
        help="time prefill and decode of shapes side by side",
        description="Export each shape's prefill and decode graphs (random weights) and time them interleaved, "
        "round by round; prints a Markdown table and, with --out, writes latency.json.",
        run="slm.cli:_profile",
        arguments="slm.cli:profile_arguments",
        aliases=MODEL_ALIASES,
    ),
    "export": Subcommand(
        help="prefill and decode ONNX graphs, checked against torch to 1e-4",
        description="Write <name>.prefill.onnx and <name>.decode.onnx (and int8 twins with --int8) for each preset, "
        "config or checkpoint of `slm fit`.",
        run="slm.cli:_export",
        arguments="slm.cli:export_arguments",
        aliases=MODEL_ALIASES,
    ),
    "search": Subcommand(
        help="runtime-first shape search at a parameter budget",
        description="NSGA-II over decoder shapes inside --budget, screened by a latency predictor (fitted now on "
        "this machine, or --predictor), then the shortlist (the screened front and the shapes predicted within "
        "--margin of the best) measured for real in anchored groups, and the best --confirm of those timed again "
        "together, --confirm-replicas times; writes front.json, front.png and chosen.yaml (an slm fit config). "
        "--device-bundle sends the shortlist to a board; --ingest finishes from "
        "the board's results.",
        run="slm.cli:_search",
        arguments="slm.cli:search_arguments",
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch("slm", DESCRIPTION, COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
