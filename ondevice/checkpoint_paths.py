"""Checkpoints come from local files only: the one check every reader of a checkpoint makes first.

A checkpoint is a pickle. The readers of this project open it with ``torch.load(weights_only=True)``, which builds
tensors and plain containers only, but a URL would go elsewhere: Lightning's ``ckpt_path`` fetches ``http…`` with
``torch.hub.load_state_dict_from_url`` and ``weights_only=False`` (so the file's pickle runs, and a copy stays
under ``$TORCH_HOME``), and hands any other ``scheme://`` or ``proto::`` chain to fsspec. So every path that loads a
checkpoint (``rfml``/``slm`` ``fit|validate|test|predict --ckpt_path`` or ``--checkpoint``, a config's
``ckpt_path``, ``slm export --checkpoint``, the teacher checkpoints) passes its path through :func:`refuse_remote`
first, and every reader of the three packages reads through :func:`load_checkpoint`, which does: anything that
names a remote location is refused with an :class:`~ondevice.errors.InputError` (one line, exit code 2 on the
command line) before a byte is fetched. To use a published checkpoint, download it, check it, and give its local
path.

This module imports only the standard library (torch only inside :func:`load_checkpoint`, when it reads).
"""

from __future__ import annotations

import os
import re
from typing import Any, TypeVar

from ondevice.errors import InputError

# A URL scheme (``http:``, ``s3:``, ``file:``) or an fsspec protocol (``simplecache::…``). A one-letter "scheme" is a
# Windows drive (``C:\\runs``), which stays a local path.
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
# Lightning's ckpt_path keywords that name local files of the run; ``registry`` (Lightning's model registry, which
# downloads) is refused below.
LIGHTNING_KEYWORDS = ("best", "last", "hpc")
LOCAL_ONLY = "a checkpoint must be a local file path (download it, check it, and give its path)"

_P = TypeVar("_P")


class RemoteCheckpointError(InputError):
    """A checkpoint named by a URL or another remote location; only local files are read."""


def remote_reason(value: Any) -> str | None:
    """Why ``value`` names a remote location rather than a local file (``"URL scheme 'http'"`` …); ``None`` for a
    local path, for Lightning's local keywords (``best``, ``last``, ``hpc``) and for anything that is not a path."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    found = _SCHEME.match(text)
    if found and len(found.group(1)) > 1:
        return f"URL scheme {found.group(1).lower()!r}"
    if text.lower() == "registry":
        return "Lightning's model registry, which downloads"
    if text.lower().startswith("http"):  # Lightning fetches every ckpt_path that starts so, URL or not
        return f"Lightning fetches a path starting with 'http' as a URL; write ./{text} for a local file"
    return None


def refuse_remote(value: _P, field: str = "checkpoint") -> _P:
    """``value`` as it is when it is a local path (or ``None``, or one of Lightning's local keywords).

    Raises:
        RemoteCheckpointError: ``value`` is a URL (any ``scheme:`` of two letters or more: ``http://``, ``https://``,
            ``ftp://``, ``s3://``, ``file://`` …), an fsspec chain (``simplecache::…``), Lightning's ``registry``,
            or starts with ``http`` (which Lightning fetches); the message names ``field`` and the value.
    """
    reason = remote_reason(value)
    if reason is not None:
        text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
        raise RemoteCheckpointError(f"{field}: {text!r} is not read: {reason}; {LOCAL_ONLY}")
    return value


def load_checkpoint(path: str | os.PathLike[str], field: str = "checkpoint") -> Any:
    """The one way this project reads a checkpoint or state dict: ``path`` must be a local file (a URL is refused by
    :func:`refuse_remote` before anything is fetched), read with ``torch.load(map_location="cpu",
    weights_only=True)`` (tensors and plain containers, never code). torch is imported here, on first use.

    Raises:
        RemoteCheckpointError: ``path`` names a remote location.
        FileNotFoundError: no file at ``path`` (``PATH: no such checkpoint``).
    """
    refuse_remote(path, field)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{os.fspath(path)}: no such checkpoint")
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def check_cli_ckpt_path(cli: Any) -> None:
    """Refuse a remote ``ckpt_path`` in a LightningCLI's parsed config, from the command line (``--ckpt_path``,
    the house ``--checkpoint``) or a config file alike; called by ``rfml``'s and ``slm``'s LightningCLI in
    ``before_instantiate_classes``, before any class is built and before the Trainer could fetch it."""
    config = cli.config[cli.subcommand] if getattr(cli, "subcommand", None) else cli.config
    getter = getattr(config, "get", None)
    if getter is not None:
        refuse_remote(getter("ckpt_path"), "ckpt_path (--checkpoint)")
