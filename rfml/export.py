"""``rfml export``: a trained AMR network to ONNX, with what a device needs to feed it stored in ``metadata_props``.

The props (read back by :mod:`ondevice.device.predict`, numpy only) hold the class names, the view, the norm and its
fitted statistics, the band and sample selection, the input length, the checkpoint's sha256, the library version and
``preprocessing``: a JSON list of numpy-reproducible steps from a raw ``[B, 2, L]`` I/Q frame to the model's input.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ondevice.checkpoint_paths import load_checkpoint
from ondevice.command_line import version_of
from ondevice.device.predict import FORMAT, FORMAT_KEY
from ondevice.export import ExportCheck, export_onnx, quantize_dynamic_int8, verify_onnx, write_metadata_props
from ondevice.io import sha256_file
from rfml.data.module import SignalDataModule
from rfml.trainers.checkpoints import model_from_checkpoint

DATAMODULE_STATE_KEY = "SignalDataModule"


@dataclass(frozen=True)
class RfmlExport:
    """What :func:`export_model` wrote: the ONNX file (and its int8 twin), the check against torch and the props."""

    path: Path
    check: ExportCheck
    props: dict[str, str]
    int8_path: Path | None = None


def datamodule_from_checkpoint(path: str | os.PathLike) -> SignalDataModule:
    """The ``SignalDataModule`` a ``rfml fit`` checkpoint was trained with, its fitted statistics restored.

    Lightning stores the datamodule's init arguments (``datamodule_hyper_parameters``) and its ``state_dict`` (the
    standardisation mean/std, the PCA or magnitude selection, fitted on the training split) in the checkpoint, so
    nothing is refitted and no training data is read for a preset; a dataset given by path is opened for its class
    names only.

    Raises:
        ondevice.checkpoint_paths.RemoteCheckpointError: ``path`` is a URL (checkpoints are local files).
        ValueError: the checkpoint has no datamodule hyper-parameters, or its stateful steps were never fitted.
    """
    checkpoint = load_checkpoint(path)
    hparams = checkpoint.get("datamodule_hyper_parameters") if isinstance(checkpoint, dict) else None
    if not hparams:
        raise ValueError(
            f"{path}: field 'datamodule_hyper_parameters' is missing; the checkpoint must come from `rfml fit` "
            "with a SignalDataModule (a bare state_dict carries no preprocessing: export it with --model)"
        )
    kwargs = {k: v for k, v in hparams.items() if not k.startswith("_")}
    datamodule = SignalDataModule(**kwargs)
    state = checkpoint.get(DATAMODULE_STATE_KEY)
    if state is not None:
        datamodule.load_state_dict(state)
    view, selection = datamodule.view, datamodule.selection
    if view.norm == "standardize" and not view.fitted:
        raise ValueError(f"{path}: field {DATAMODULE_STATE_KEY!r}: norm 'standardize' has no fitted mean/std")
    if selection is not None and not selection.fitted:
        raise ValueError(f"{path}: field {DATAMODULE_STATE_KEY!r}: selection {selection.method!r} was never fitted")
    return datamodule


def preprocessing_steps(datamodule: SignalDataModule) -> list[dict[str, Any]]:
    """The datamodule's transform as plain steps (see :mod:`ondevice.device.predict` for their meaning)."""
    view = datamodule.view
    steps: list[dict[str, Any]] = []
    if view.norm == "rms":
        steps.append({"op": "unit_power"})
    steps.append({"op": "view", "kind": view.kind})
    if view.norm in ("l1", "l2"):
        steps.append({"op": "frame_norm", "norm": view.norm})
    elif view.norm == "standardize":
        steps.append({"op": "standardize", "mean": view.mean.tolist(), "std": view.std.tolist()})
    if datamodule.band is not None:
        steps.append({"op": "select_bins", "bins": datamodule.band.bins.tolist(), "length": datamodule.band.length})
    selection = datamodule.selection
    if selection is not None:
        if selection.method == "pca":
            assert selection.mean is not None and selection.components is not None
            steps.append(
                {
                    "op": "project",
                    "mean": selection.mean.tolist(),
                    "components": selection.components.tolist(),
                    "length": selection.length,
                }
            )
        else:
            assert selection.bins is not None
            steps.append({"op": "select_bins", "bins": selection.bins.tolist(), "length": selection.length})
    return steps


def _selection_record(datamodule: SignalDataModule) -> dict[str, Any] | None:
    selection = datamodule.selection
    if selection is None:
        return None
    return {"method": selection.method, "rate": selection.rate, "length": selection.length, "seed": selection.seed}


def checkpoint_props(checkpoint: str | os.PathLike, net_length: int, num_classes: int) -> dict[str, str]:
    """``metadata_props`` for a network trained by ``rfml fit`` from ``checkpoint``."""
    datamodule = datamodule_from_checkpoint(checkpoint)
    classes = datamodule.classes
    if len(classes) != num_classes or datamodule.length != net_length:
        raise ValueError(
            f"{checkpoint}: the network takes {net_length} samples into {num_classes} classes, but its datamodule "
            f"gives {datamodule.length} samples and {len(classes)} classes"
        )
    view = datamodule.view
    return {
        FORMAT_KEY: FORMAT,
        "trained": "true",
        "class_names": json.dumps(classes),
        "input_length": str(net_length),
        "frame_length": str(datamodule.frame_length),
        "view": view.kind,
        "norm": view.norm,
        "norm_stats": json.dumps(
            {"mean": view.mean.tolist(), "std": view.std.tolist(), "eps": view.eps}
            if view.norm == "standardize"
            else None
        ),
        "bands": json.dumps(datamodule.hparams.bands),
        "selection": json.dumps(_selection_record(datamodule)),
        "preprocessing": json.dumps(preprocessing_steps(datamodule)),
        "dataset": str(datamodule.hparams.dataset),
        "checkpoint_sha256": sha256_file(checkpoint),
        "library_version": version_of(),
    }


def untrained_props(length: int) -> dict[str, str]:
    """``metadata_props`` for a bare registered model: its input length, no classes, and that it is untrained."""
    return {
        FORMAT_KEY: FORMAT,
        "trained": "false",
        "input_length": str(length),
        "library_version": version_of(),
    }


def export_model(
    out: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    model: nn.Module | None = None,
    length: int | None = None,
    atol: float = 1e-4,
    int8: bool = False,
) -> RfmlExport:
    """Export a ``rfml fit`` checkpoint (or, without one, an untrained ``model`` of input ``length``) to ``out``.

    The graph takes ``x`` ``[B, 2, length]`` (the preprocessed input) and returns ``logits``; it is checked against
    torch to ``atol``, then its props are written (atomically, like the graph). With ``int8`` a dynamically
    quantised copy with the same props is written to ``out`` with suffix ``.int8.onnx``.

    Raises:
        FileNotFoundError, ValueError: a missing or unusable checkpoint, or neither/both of checkpoint and model.
    """
    if (checkpoint is None) == (model is None):
        raise ValueError("give either checkpoint (a `rfml fit` checkpoint) or model and length (an untrained net)")
    if checkpoint is not None:
        net, length = model_from_checkpoint(checkpoint)
    elif length is None:
        raise ValueError("an export without checkpoint needs the model's input length")
    else:
        net = model
    net.eval()
    example = torch.randn(2, 2, length, generator=torch.Generator().manual_seed(0))
    if checkpoint is not None:
        with torch.no_grad():
            classes_out = int(net(example).shape[-1])
        props = checkpoint_props(checkpoint, length, classes_out)
    else:
        props = untrained_props(length)
    path = export_onnx(net, example, out, input_names=["x"], output_names=["logits"])
    check = verify_onnx(net, path, example, atol=atol)
    write_metadata_props(path, props)
    int8_path = None
    if int8:
        int8_path = quantize_dynamic_int8(path, Path(out).with_suffix(".int8.onnx"))
        write_metadata_props(int8_path, props)
    return RfmlExport(path=path, check=check, props=props, int8_path=int8_path)
