"""Atomic file writes, JSON writes and sha256: the one place the project gets them.

``ondevice/device/runner.py`` keeps its own copy of these three, because it ships alone inside device
bundles (numpy and onnxruntime only); ``tests/test_io.py`` checks that the two copies agree.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def sha256_file(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


os.umask(_UMASK := os.umask(0o022))  # the process's umask, read once: reading it sets it for a moment


def umask_mode(directory: bool = False) -> int:
    """The mode ``open()`` (0666) or ``mkdir()`` (0777) would give a new file or folder under the user's umask."""
    return (0o777 if directory else 0o666) & ~_UMASK


def share_like_umask(path: str | os.PathLike) -> Path:
    """Give a file or folder made by ``tempfile`` (always private: 0600 / 0700) the mode of a plain new one, so
    what is renamed into place is as readable as anything else the user writes (a bundle copied to a board)."""
    path = Path(path)
    os.chmod(path, umask_mode(directory=path.is_dir()))
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed onto `path` on success, removed on failure.

    The temporary name keeps the suffix, so writers that pick a format by extension (savefig) still work.
    A reader never sees half a file, and a failed write leaves nothing behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp's file is private (0600): keep the replaced file's mode, or give the one open() would.
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else umask_mode())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_json_atomic(path: str | os.PathLike, payload: Any) -> Path:
    """Write JSON (indent 1, trailing newline) through `atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1) + "\n")
    return Path(path)


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure through `atomic_path` (format from the suffix), then close it, also on failure."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)
    return Path(path)


def refuse_to_overwrite(folders: Any, pattern: str, flag: str) -> None:
    """Raise ``FileExistsError`` if any of ``folders`` already holds files matching ``pattern`` (an earlier run's
    checkpoints, say), naming them and ``flag``, the option that allows writing over them."""
    found = sorted(str(p) for folder in folders if folder is not None for p in Path(folder).glob(pattern))
    if found:
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise FileExistsError(f"{shown} already exist(s) from an earlier run; pass {flag} to write over them")
