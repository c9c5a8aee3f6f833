"""The trained network inside a checkpoint written by ``rfml fit`` (a ``Classifier``'s net, an ``SKD``'s student)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ondevice.distill import load_weights
from rfml.models import create


def model_from_checkpoint(path: str | Path) -> tuple[nn.Module, int]:
    """The trained network of a ``Classifier`` or ``SKD`` checkpoint (the student for SKD) and its frame length.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the checkpoint has no ``hyper_parameters`` naming ``model`` (Classifier) or ``student`` (SKD).
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not hparams or not ({"model", "student"} & set(hparams)):
        raise ValueError(
            f"{path}: field 'hyper_parameters' must name 'model' (Classifier) or 'student' (SKD); "
            "is this a checkpoint of `rfml fit`? For a bare state_dict use --model"
        )
    name, kwargs = (
        (hparams["model"], hparams.get("model_kwargs"))
        if "model" in hparams
        else (hparams["student"], hparams.get("student_kwargs"))
    )
    net = create(name, int(hparams["num_classes"]), int(hparams["length"]), **(kwargs or {}))
    load_weights(net, path)
    return net, int(hparams["length"])
