"""The trained network inside a checkpoint written by ``rfml fit`` (a ``Classifier``'s net, an ``SKD``'s student)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from ondevice.checkpoint_paths import load_checkpoint
from ondevice.distill import load_weights
from rfml.models import create


def saved_model_kwargs(name: str, kwargs: Mapping[str, Any] | None, keys: Iterable[str]) -> dict[str, Any]:
    """``kwargs`` for ``create(name, ...)`` that rebuild the network whose weights are named ``keys``, for weights
    saved before a default changed. ClST's two-layer stem became its default in issue 18: ClST weights without
    ``stem.*`` keys were saved with ``stem=0`` (the default then), so that is added unless ``kwargs`` set it."""
    out = dict(kwargs or {})
    if name == "clst" and "stem" not in out and not any(k.startswith("stem.") or ".stem." in k for k in keys):
        out["stem"] = 0
    return out


def checkpoint_keys(path: str | Path) -> list[str]:
    """The tensor names in a local state_dict file or Lightning checkpoint (read with ``weights_only=True``)."""
    checkpoint = load_checkpoint(path)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else {}
    return [str(key) for key in state] if isinstance(state, Mapping) else []


def model_from_checkpoint(path: str | Path) -> tuple[nn.Module, int]:
    """The trained network of a ``Classifier`` or ``SKD`` checkpoint (the student for SKD) and its frame length.

    Raises:
        ondevice.checkpoint_paths.RemoteCheckpointError: ``path`` is a URL (checkpoints are local files).
        FileNotFoundError: no file at ``path``.
        ValueError: the checkpoint has no ``hyper_parameters`` naming ``model`` (Classifier) or ``student`` (SKD).
    """
    checkpoint = load_checkpoint(path)
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
    state = checkpoint.get("state_dict", {})
    kwargs = saved_model_kwargs(name, kwargs, (k for k in state if not k.startswith("teacher.")))
    net = create(name, int(hparams["num_classes"]), int(hparams["length"]), **kwargs)
    load_weights(net, path)
    return net, int(hparams["length"])
