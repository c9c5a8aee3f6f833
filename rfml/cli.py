"""The ``rfml`` command.

- ``rfml fit | validate | test | predict -c configs/rfml/<x>.yaml``: LightningCLI over any LightningModule and any
  LightningDataModule (subclass mode); the DataModule's ``num_classes`` and ``length`` fill the model's.
- ``rfml export``: a registered model or a trained checkpoint to ONNX (optionally int8), verified against torch.
- ``rfml profile``: registered models side by side on torch / ONNX Runtime through ``ondevice.profile``.
- ``rfml generate``: a synthetic dataset written in a published file layout.
- ``rfml ism-study``: the band- and sample-selection tables of Zhang et al. (SPAWC 2019) on the ISM set.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
TOOL_COMMANDS = ("generate", "export", "profile", "ism-study", "snr-study")


def lightning_main(args: Sequence[str] | None) -> Any:
    """``rfml fit|validate|test|predict``; returns the LightningCLI (its model, datamodule and trainer).

    Lightning is imported here, so ``rfml generate`` stays light.
    """
    import lightning.pytorch as pl
    from lightning.pytorch.cli import LightningCLI

    class RFMLCLI(LightningCLI):
        def add_arguments_to_parser(self, parser: Any) -> None:
            parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
            parser.link_arguments("data.length", "model.init_args.length", apply_on="instantiate")

    return RFMLCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=None if args is None else list(args),
    )


def _tool_parser() -> argparse.ArgumentParser:
    from rfml.data.synthetic import PRESETS
    from rfml.dsp.channel import PRESETS as CHANNEL_PRESETS

    parser = argparse.ArgumentParser(
        prog="rfml",
        description="Radio-signal ML. Training: rfml fit|validate|test|predict -c CONFIG.yaml (LightningCLI; "
        "`rfml fit --help`). Tools:",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser(
        "generate",
        help="write a synthetic dataset in a published layout (RadioML 2016 pickle, RadioML 2018 HDF5)",
        description="Generate a dataset with rfml.dsp.Synthesizer and write it atomically in the real layout, "
        "readable by the same loader as the real file.",
    )
    generate.add_argument("--preset", required=True, choices=sorted(PRESETS), help="dataset layout and class set")
    generate.add_argument("--out", required=True, help="output file, or a folder to receive the usual file name")
    generate.add_argument("--per-key", type=int, default=None, help="examples per (class, SNR); default: as published")
    generate.add_argument("--seed", type=int, default=0, help="dataset seed (example i is a function of seed and i)")
    generate.add_argument("--workers", type=int, default=1, help="generator processes (output is identical for any)")
    generate.add_argument(
        "--channel", choices=sorted(CHANNEL_PRESETS), default=None, help="channel preset; default: the preset's own"
    )
    generate.add_argument("--quiet", action="store_true", help="no progress bar")

    def model_arguments(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--num-classes", type=int, default=11, help="classes (default 11, RadioML 2016.10a)")
        sub.add_argument("--length", type=int, default=128, help="samples per frame (default 128)")
        sub.add_argument("--model-kwargs", default="{}", help="JSON object of constructor options")

    export = commands.add_parser(
        "export",
        help="export a model to ONNX and check it against torch",
        description="Export to ONNX (dynamic batch) and verify ONNX Runtime against torch at batch 1 and 3. "
        "Give a checkpoint of `rfml fit` (the model, classes and length are read from it), or a model name.",
    )
    source = export.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a checkpoint written by `rfml fit` (Classifier or SKD)")
    source.add_argument("--model", help="a registered model name (untrained weights)")
    model_arguments(export)
    export.add_argument("--out", required=True, help="the .onnx file to write")
    export.add_argument("--atol", type=float, default=1e-4, help="largest |ORT − torch| allowed (default 1e-4)")
    export.add_argument("--int8", action="store_true", help="also write <out>.int8.onnx (dynamic int8)")

    prof = commands.add_parser(
        "profile",
        help="latency of registered models side by side (ondevice.profile)",
        description="Profile models interleaved, each ONNX Runtime session in its own process; writes "
        "latency.json / .md / .png into --out.",
    )
    prof.add_argument("--models", required=True, help="comma-separated registered names, e.g. clst,kd_cnn")
    model_arguments(prof)
    prof.add_argument("--backends", default="torch,onnxruntime", help="comma-separated: torch,onnxruntime,…-int8")
    prof.add_argument("--threads", default="1", help="comma-separated thread counts")
    prof.add_argument("--batch-sizes", default="1", help="comma-separated batch sizes")
    prof.add_argument("--repeats", type=int, default=50, help="timed calls per round and cell")
    prof.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    prof.add_argument("--out", default="profile_out", help="folder for the report")

    from rfml.ism_study import add_arguments as ism_study_arguments

    study = commands.add_parser(
        "ism-study",
        help="band and sample selection on the ISM interference set (Zhang et al., SPAWC 2019)",
        description="Train and test one model per setting (10/4/2 MHz bands, sample selection methods × rates) "
        "through `rfml fit`, resumable; writes OUT/results.json, OUT/report.md (tables beside the paper's numbers) "
        "and accuracy-vs-SNR figures.",
    )
    ism_study_arguments(study)

    from rfml.snrselect.cli import add_arguments as snr_study_arguments

    snr = commands.add_parser(
        "snr-study",
        help="SNR-selected training: single-SNR, offset, SNR Boosting, SNR Bagging, SNR-routed inference",
        description="The experiments of Wang et al. (IEEE WCL 2020) over one resumable store of trainings "
        "(OUT/results.jsonl, one line per finished training), run on a local process pool or on Ray; writes "
        "OUT/<experiment>.json, OUT/report.md beside the paper's numbers, and figures.",
    )
    snr_study_arguments(snr)
    return parser


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"rfml: {what}: expected comma-separated integers, got {text!r}") from None


def _model_kwargs(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise SystemExit(f"rfml: --model-kwargs: not JSON ({err})") from None
    if not isinstance(value, dict):
        raise SystemExit(f"rfml: --model-kwargs: expected a JSON object, got {text!r}")
    return value


def model_from_checkpoint(path: str) -> tuple[Any, int]:
    """The trained network in a ``Classifier`` or ``SKD`` checkpoint (the student for SKD) and its frame length."""
    import torch

    from ondevice.distill import load_teacher_weights
    from rfml.models import create

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SystemExit(f"rfml export: {path}: no such checkpoint") from None
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not hparams or not ({"model", "student"} & set(hparams)):
        raise SystemExit(
            f"rfml export: {path}: field 'hyper_parameters' must name 'model' (Classifier) or 'student' (SKD); "
            "is this a checkpoint of `rfml fit`? For a bare state_dict use --model"
        )
    name, kwargs = (
        (hparams["model"], hparams.get("model_kwargs"))
        if "model" in hparams
        else (hparams["student"], hparams.get("student_kwargs"))
    )
    net = create(name, int(hparams["num_classes"]), int(hparams["length"]), **(kwargs or {}))
    load_teacher_weights(net, path)
    return net, int(hparams["length"])


def _export(args: argparse.Namespace) -> int:
    import torch

    from ondevice.export import export_onnx, quantize_dynamic_int8, verify_onnx
    from rfml.models import create

    if args.checkpoint:
        net, length = model_from_checkpoint(args.checkpoint)
    else:
        net, length = create(args.model, args.num_classes, args.length, **_model_kwargs(args.model_kwargs)), args.length
    net.eval()
    example = torch.randn(2, 2, length, generator=torch.Generator().manual_seed(0))
    path = export_onnx(net, example, args.out, input_names=["x"], output_names=["logits"])
    check = verify_onnx(net, path, example, atol=args.atol)
    print(f"{path}: ONNX Runtime matches torch, max |diff| {check.max_abs_error:.2e} (atol {args.atol:g})")
    if args.int8:
        int8 = quantize_dynamic_int8(path, Path(args.out).with_suffix(".int8.onnx"))
        print(f"{int8}: dynamic int8")
    return 0


def _profile(args: argparse.Namespace) -> int:
    import torch

    from ondevice.profile import profile
    from rfml.models import create

    kwargs = _model_kwargs(args.model_kwargs)
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    models = {name: create(name, args.num_classes, args.length, **kwargs).eval() for name in names}
    example = torch.randn(1, 2, args.length)
    report = profile(
        models,
        example,
        backends=[b.strip() for b in args.backends.split(",") if b.strip()],
        threads=_ints(args.threads, "--threads"),
        batch_sizes=_ints(args.batch_sizes, "--batch-sizes"),
        repeats=args.repeats,
        rounds=args.rounds,
    )
    paths = report.save(args.out)
    print(report.to_markdown())
    print(f"report: {paths['json']}, {paths['markdown']}, {paths['plot']}")
    return 0


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


def _ism_study(args: argparse.Namespace) -> int:
    from rfml.ism_study import main as ism_study_main

    return ism_study_main(args)


def _snr_study(args: argparse.Namespace) -> int:
    from rfml.snrselect.cli import main as snr_study_main

    return snr_study_main(args)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in LIGHTNING_COMMANDS:
        lightning_main(None if argv is None else args)
        return 0
    if args and args[0] not in TOOL_COMMANDS and not args[0].startswith("-"):
        print(
            f"rfml: unknown command {args[0]!r}; choose from {[*LIGHTNING_COMMANDS, *TOOL_COMMANDS]}", file=sys.stderr
        )
        return 2
    parsed = _tool_parser().parse_args(args)
    handlers = {"generate": _generate, "export": _export, "profile": _profile}
    handler = {**handlers, "ism-study": _ism_study, "snr-study": _snr_study}[parsed.command]
    return handler(parsed)


if __name__ == "__main__":
    sys.exit(main())
