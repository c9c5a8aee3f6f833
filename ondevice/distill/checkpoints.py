"""Loading weights from files: a plain state_dict or a Lightning checkpoint into any network, and the student
out of a `DistillationModule` checkpoint."""

from __future__ import annotations

import os
from collections.abc import Mapping

from torch import Tensor, nn

from ondevice.checkpoint_paths import load_checkpoint


def _load_state_dict_file(path: str | os.PathLike[str]) -> Mapping[str, Tensor]:
    obj = load_checkpoint(path)
    state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else obj
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{os.fspath(path)}: expected a state_dict or a Lightning checkpoint with a 'state_dict'")
    return state


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> str:
    """Load a plain state_dict or a Lightning checkpoint into ``model``, strictly; returns the key prefix used.

    The general checkpoint loader: it fills any network (a teacher to distil from, a trained classifier to export
    or evaluate) from a local file of tensors (a URL is refused), read with ``torch.load(weights_only=True)``. A
    Lightning checkpoint prefixes the keys with the attribute that held the network (``model.``, ``student.``); the
    prefix chosen is the one under which the checkpoint's keys are exactly ``model``'s keys.

    Raises:
        ondevice.checkpoint_paths.RemoteCheckpointError: ``path`` is a URL.
        ValueError: the file holds no state_dict, no prefix gives exactly ``model``'s keys (the message names the
            closest prefix with its missing and unexpected keys), or the shapes under matching names differ.
    """
    state = _load_state_dict_file(path)
    expected = set(model.state_dict())
    prefixes = {""}
    for key in state:
        parts = key.split(".")
        prefixes.update(".".join(parts[:i]) + "." for i in range(1, len(parts)) if ".".join(parts[i:]) in expected)
    best: tuple[int, str, set[str]] = (-1, "", set())
    for prefix in sorted(prefixes):
        found = {key[len(prefix) :] for key in state if key.startswith(prefix)}
        if found == expected:
            weights = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
            try:
                model.load_state_dict(weights, strict=True)
            except RuntimeError as err:  # shapes differ under matching names
                raise ValueError(f"{os.fspath(path)}: weights under prefix {prefix!r} do not fit: {err}") from err
            return prefix
        best = max(best, (len(found & expected), prefix, found), key=lambda item: item[0])
    _, prefix, found = best
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    raise ValueError(
        f"{os.fspath(path)}: its keys do not match the {type(model).__name__} under any prefix; "
        f"closest prefix {prefix!r}: missing {missing[:5]}{' …' if len(missing) > 5 else ''}, "
        f"unexpected {unexpected[:5]}{' …' if len(unexpected) > 5 else ''}"
    )


def student_state_dict(checkpoint_path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The student's weights in a :class:`DistillationModule` checkpoint, without the ``student.`` prefix."""
    state = _load_state_dict_file(checkpoint_path)
    weights = {key[len("student.") :]: value for key, value in state.items() if key.startswith("student.")}
    if not weights:
        raise ValueError(
            f"{os.fspath(checkpoint_path)}: no 'student.*' keys; expected a DistillationModule checkpoint "
            f"(first keys: {list(state)[:5]})"
        )
    return weights
