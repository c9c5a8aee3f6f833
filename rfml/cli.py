"""The ``rfml`` command: radio-signal ML on small devices.

- ``rfml fit | validate | test | predict -c CONFIG``: LightningCLI over any LightningModule and any
  LightningDataModule; ``CONFIG`` is a YAML path or the name of a shipped config (``rfml configs`` lists them).
- ``rfml generate``: a synthetic dataset written in a published file layout.
- ``rfml dataset info | verify | convert``: inspect, check or convert a real (or generated) dataset file.
- ``rfml export`` / ``rfml profile``: ONNX export checked against torch; latency side by side (``ondevice.profile``).
- ``rfml ism-study`` / ``rfml snr-study``: the band/sample-selection and SNR-selection studies.

Every subcommand's code is imported only when it is chosen, so ``rfml --help`` loads neither torch nor Lightning.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ondevice.command_line import (
    Subcommand,
    add_model_flag,
    add_out_flag,
    add_runtime_flags,
    chosen_backends,
    default_out,
    dispatch,
    json_object,
    lightning_commands,
    positive_ints,
)
from ondevice.errors import InputError


def generate_arguments(parser: argparse.ArgumentParser) -> None:
    from rfml.data.synthetic import PRESETS
    from rfml.dsp.channel import PRESETS as CHANNEL_PRESETS

    parser.add_argument("--preset", required=True, choices=sorted(PRESETS), help="dataset layout and class set")
    add_out_flag(
        parser,
        "output file (its folder must exist), or a folder (DIR/, made if missing) to receive the preset's synthetic "
        "file name, e.g. RML2016.10a_dict.synthetic.pkl",
    )
    parser.add_argument("--per-key", type=int, default=None, help="examples per (class, SNR); default: as published")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (example i is a function of seed and i)")
    parser.add_argument("--workers", type=int, default=1, help="generator processes (output is identical for any)")
    parser.add_argument(
        "--channel", choices=sorted(CHANNEL_PRESETS), default=None, help="channel preset; default: the preset's own"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _generate(args: argparse.Namespace) -> int:
    from rfml.data.synthetic import write_dataset

    try:
        path = write_dataset(
            args.preset, args.out, args.per_key, args.seed, args.workers, args.channel, progress=not args.quiet
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"rfml generate: error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-classes", type=int, default=11, help="classes (default 11, RadioML 2016.10a)")
    parser.add_argument("--length", type=int, default=128, help="samples per frame (default 128)")
    parser.add_argument("--model-kwargs", type=json_object, default={}, help="JSON object of constructor options")


def export_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a checkpoint written by `rfml fit` (Classifier or SKD)")
    source.add_argument("--model", help="a registered model name (untrained weights)")
    _model_arguments(parser)
    add_out_flag(parser, "the .onnx file to write")
    parser.add_argument("--atol", type=float, default=1e-4, help="largest |ORT − torch| allowed (default 1e-4)")
    parser.add_argument("--int8", action="store_true", help="also write <out>.int8.onnx (dynamic int8)")


def _export(args: argparse.Namespace) -> int:
    from rfml.export import export_model
    from rfml.models import create

    if args.checkpoint:
        source = {"checkpoint": args.checkpoint}
    else:
        source = {
            "model": create(args.model, args.num_classes, args.length, **args.model_kwargs),
            "length": args.length,
        }
    try:
        done = export_model(args.out, atol=args.atol, int8=args.int8, **source)
    except (FileNotFoundError, ValueError) as err:  # a missing or unusable checkpoint: it and the field are named
        raise InputError(str(err)) from err
    print(f"{done.path}: ONNX Runtime matches torch, max |diff| {done.check.max_abs_error:.2e} (atol {args.atol:g})")
    trained = done.props.get("trained") == "true"
    print(
        f"{done.path}: metadata_props for `python -m ondevice.device predict` ("
        + ("classes, preprocessing, checkpoint sha256" if trained else "untrained: length only")
        + ")"
    )
    if done.int8_path:
        print(f"{done.int8_path}: dynamic int8, same metadata_props")
    return 0


def profile_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_flag(parser, "registered model names (clst, kd_cnn …)")
    _model_arguments(parser)
    add_runtime_flags(parser, backends="torch, onnxruntime, onnxruntime-int8")
    parser.add_argument("--batch-sizes", type=positive_ints, default=[1], help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per round and cell (default 50)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    add_out_flag(parser, "folder for latency.json / .md / .png", default_out("rfml", "profile"))


def _profile(args: argparse.Namespace) -> int:
    import torch

    from ondevice.profile import profile
    from rfml.models import create

    models = {name: create(name, args.num_classes, args.length, **args.model_kwargs).eval() for name in args.models}
    report = profile(
        models,
        torch.randn(1, 2, args.length),
        backends=chosen_backends(args),
        threads=args.threads,
        batch_sizes=args.batch_sizes,
        repeats=args.repeats,
        rounds=args.rounds,
    )
    paths = report.save(args.out)
    print(report.to_markdown())
    print(f"report: {paths['json']}, {paths['markdown']}, {paths['plot']}")
    return 0


COMMANDS: dict[str, Subcommand] = {
    **lightning_commands("rfml", "rfml.trainers.cli:lightning_main", ("fit", "validate", "test", "predict")),
    "generate": Subcommand(
        help="write a synthetic dataset in a published layout (RadioML 2016 pickle, RadioML 2018 HDF5, ISM)",
        description="Generate a dataset with rfml.dsp and write it atomically in the real layout, readable by the "
        "same loader as the real file.",
        run="rfml.cli:_generate",
        arguments="rfml.cli:generate_arguments",
    ),
    "dataset": Subcommand(
        help="inspect, verify or convert a dataset file (RadioML 2016/2018, ISM)",
        run="rfml.data.dataset_command:main",
        arguments="rfml.data.dataset_command:add_arguments",
    ),
    "export": Subcommand(
        help="export a model to ONNX and check it against torch",
        description="Export to ONNX (dynamic batch) and verify ONNX Runtime against torch at batch 1 and 3. Give a "
        "checkpoint of `rfml fit` (the model, classes and length are read from it), or a model name.",
        run="rfml.cli:_export",
        arguments="rfml.cli:export_arguments",
    ),
    "profile": Subcommand(
        help="latency of registered models side by side (ondevice.profile)",
        description="Profile models interleaved, each ONNX Runtime session in its own process; writes "
        "latency.json / .md / .png into --out.",
        run="rfml.cli:_profile",
        arguments="rfml.cli:profile_arguments",
        aliases={"--models": "--model"},
    ),
    "ism-study": Subcommand(
        help="band and sample selection on the ISM interference set (Zhang et al., SPAWC 2019)",
        description="Train and test one model per setting (10/4/2 MHz bands, sample selection methods × rates) "
        "through `rfml fit`, resumable; writes OUT/results.jsonl, OUT/report.md (tables beside the paper's numbers) "
        "and accuracy-vs-SNR figures.",
        run="rfml.studies.ism.cli:main",
        arguments="rfml.studies.ism.cli:add_arguments",
    ),
    "snr-study": Subcommand(
        help="SNR-selected training: single-SNR, offset, SNR Boosting, SNR Bagging, SNR-routed inference",
        description="The experiments of Wang et al. (IEEE WCL 2020) over one resumable store of trainings "
        "(OUT/results.jsonl, one line per finished training), run on a local process pool or on Ray; writes "
        "OUT/<experiment>.json, OUT/report.md beside the paper's numbers, and figures.",
        run="rfml.studies.snr.cli:main",
        arguments="rfml.studies.snr.cli:add_arguments",
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch("rfml", "Radio-signal ML on small devices.", COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
