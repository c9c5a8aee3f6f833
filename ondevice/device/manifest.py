"""A bundle's manifest, checked before anything in the bundle is used: the one reader for the device and for ingest.

Standard library only. `ondevice bundle` copies this file into every bundle as `manifest.py`, beside
`profile_bundle.py` (a copy of :mod:`ondevice.device.runner`), which imports it from there on a board.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

BUNDLE_FORMAT = "ondevice-bundle"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
ORT_BACKENDS = ("onnxruntime", "onnxruntime-int8")


class BundleError(ValueError):
    """A bundle or a results file is malformed or does not belong together."""


# sha256_file is a copy of ondevice.io's: this file ships alone in bundles. tests/test_io.py checks that the copies
# agree.
def sha256_file(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


MAX_MANIFEST_BYTES = 16 * 2**20
"""The largest manifest.json `read_manifest` reads unless told otherwise (one of hundreds of models is < 1 MiB)."""

_MANIFEST_HINT = "; `ondevice bundle` writes none this large (read_manifest(..., max_bytes=N) takes it)"
_HEX_DIGITS = frozenset("0123456789abcdef")


def read_json_file(path: str | os.PathLike, what: str, max_bytes: int, raise_hint: str = "") -> Any:
    """The JSON document in the regular file `path`, read only once `os.stat` shows it holds at most `max_bytes`.

    A size check before reading bounds the memory a hostile file can take (parsed JSON takes up to ~26x its
    bytes), and nesting too deep to parse is refused like any other bad JSON. Every failure is a `BundleError`
    naming the file and `what` it should be; `raise_hint` ends the over-the-cap message (how to raise the cap).
    """
    path = Path(path)
    try:
        info = os.stat(path)
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the {what} ({exc.strerror})") from exc
    if not stat.S_ISREG(info.st_mode):
        raise BundleError(f"{path}: the {what} must be a regular file")
    over = f"over the cap of {max_bytes:,} bytes{raise_hint}"
    if info.st_size > max_bytes:
        raise BundleError(f"{path}: the {what} is {info.st_size:,} bytes, {over}")
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the {what} ({exc.strerror})") from exc
    if len(data) > max_bytes:  # it grew after the stat
        raise BundleError(f"{path}: the {what} is more than {max_bytes:,} bytes, {over}")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BundleError(f"{path}: the {what} is not valid JSON ({exc})") from exc


def _shown(value: Any) -> str:
    # Long enough for a whole path (the thing a user must find), short enough for one line of a hostile value.
    text = repr(value)
    return text if len(text) <= 300 else text[:297] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _refuse(path: Path, field: str, expected: str, value: Any, why: str = "") -> BundleError:
    return BundleError(f"{path}: field '{field}' must be {expected}; got {_shown(value)}{why}")


def _field(doc: Mapping[str, Any], key: str, path: Path, field: str, expected: str) -> Any:
    if key not in doc:
        raise BundleError(f"{path}: field '{field}' is missing; it must be {expected}")
    return doc[key]


def _int_at_least(value: Any, minimum: int, path: Path, field: str) -> int:
    if not _is_int(value) or value < minimum:
        raise _refuse(path, field, f"an integer >= {minimum}", value)
    return value


def _string(doc: Mapping[str, Any], key: str, path: Path, field: str) -> str:
    value = _field(doc, key, path, field, "a non-empty string")
    if not isinstance(value, str) or not value:
        raise _refuse(path, field, "a non-empty string", value)
    return value


def _inside(doc: Mapping[str, Any], key: str, root: Path, path: Path, field: str) -> None:
    """Refuse a manifest path `doc[key]` that is not a relative path resolving (symlinks followed) inside `root`."""
    expected = "a relative path inside the bundle"
    value = _field(doc, key, path, field, expected)
    if not isinstance(value, str) or not value or "\x00" in value:
        raise _refuse(path, field, expected, value)
    relative = Path(value)
    if relative.is_absolute() or relative.anchor:
        raise _refuse(path, field, expected, value, ", an absolute path")
    if ".." in relative.parts:
        raise _refuse(path, field, expected, value, ", which climbs out with '..'")
    resolved = (root / relative).resolve()
    if not resolved.is_relative_to(root):
        raise _refuse(path, field, expected, value, f", which resolves to {resolved}, outside the bundle {root}")


def _check_entry(entry: Any, field: str, path: Path, root: Path) -> None:
    """Type- and range-check one `models[i]` entry of a manifest (its files are checked later)."""
    if not isinstance(entry, dict):
        raise _refuse(path, field, "an object {name, backend, file, sha256, inputs, batch_sizes}", entry)
    _string(entry, "name", path, f"{field}.name")
    backend = _field(entry, "backend", path, f"{field}.backend", f"one of {', '.join(ORT_BACKENDS)}")
    if not isinstance(backend, str) or backend not in ORT_BACKENDS:
        raise _refuse(path, f"{field}.backend", f"one of {', '.join(ORT_BACKENDS)}", backend)
    _inside(entry, "file", root, path, f"{field}.file")
    digest = _field(entry, "sha256", path, f"{field}.sha256", "64 hex digits")
    if not isinstance(digest, str) or len(digest) != 64 or not set(digest) <= _HEX_DIGITS:
        raise _refuse(path, f"{field}.sha256", "64 hex digits (lower case)", digest)
    expected = "a non-empty list of objects {name, file}"
    inputs = _field(entry, "inputs", path, f"{field}.inputs", expected)
    if not isinstance(inputs, list) or not inputs:
        raise _refuse(path, f"{field}.inputs", expected, inputs)
    names: set[str] = set()
    for j, spec in enumerate(inputs):
        where = f"{field}.inputs[{j}]"
        if not isinstance(spec, dict):
            raise _refuse(path, where, "an object {name, file}", spec)
        name = _field(spec, "name", path, f"{where}.name", "a non-empty string")
        if not isinstance(name, str) or not name or name in names:
            raise _refuse(path, f"{where}.name", "a non-empty string naming no other input", name)
        names.add(name)
        _inside(spec, "file", root, path, f"{where}.file")
    expected = "a non-empty list of integers >= 1"
    batch_sizes = _field(entry, "batch_sizes", path, f"{field}.batch_sizes", expected)
    if not isinstance(batch_sizes, list) or not batch_sizes:
        raise _refuse(path, f"{field}.batch_sizes", expected, batch_sizes)
    for k, batch_size in enumerate(batch_sizes):
        _int_at_least(batch_size, 1, path, f"{field}.batch_sizes[{k}]")
        if batch_size in batch_sizes[:k]:
            raise _refuse(path, f"{field}.batch_sizes[{k}]", "a batch size not already listed", batch_size)
    for key in ("params", "macs"):
        value = entry.get(key)
        if value is not None and (not _is_int(value) or value < 0):
            raise _refuse(path, f"{field}.{key}", "null or an integer >= 0", value)


def read_manifest(bundle_dir: str | os.PathLike, max_bytes: int = MAX_MANIFEST_BYTES) -> dict[str, Any]:
    """Load and check a bundle's manifest; returns it with "sha256", the manifest file's own hash, added.

    A bundle is untrusted input, so every failure is a `BundleError` naming the manifest, the field
    (`models[0].inputs[1].file`, say) and what it must be:

    - the file is read only if it is a regular file of at most `max_bytes` (`MAX_MANIFEST_BYTES`);
    - every field has its type and range: format, version, a non-empty bundle_id, settings.warmup >= 0,
      settings.repeats and settings.rounds >= 1, a non-empty list of model entries, each with a name, a known
      backend, a sha256, inputs with distinct names, distinct batch sizes >= 1, and params/macs null or >= 0;
      no two entries share a (name, backend) pair;
    - every path (`models[i].file`, `models[i].inputs[j].file`) is relative, has no '..' and resolves, symlinks
      followed, to a file inside the bundle folder;
    - every ONNX file matches the sha256 the manifest records.
    """
    bundle = Path(bundle_dir)
    path = bundle / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{bundle}: no {MANIFEST_NAME}; is this a bundle written by `ondevice bundle`?")
    manifest = read_json_file(path, "bundle manifest", max_bytes, _MANIFEST_HINT)
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: must hold a JSON object (a bundle manifest); got {_shown(manifest)}")
    if manifest.get("format") != BUNDLE_FORMAT:
        raise _refuse(path, "format", repr(BUNDLE_FORMAT), manifest.get("format"))
    version = manifest.get("version")
    if not _is_int(version) or version != FORMAT_VERSION:
        raise _refuse(path, "version", f"{FORMAT_VERSION} (the format this runner reads)", version)
    _string(manifest, "bundle_id", path, "bundle_id")
    settings = manifest.get("settings", {})
    if not isinstance(settings, dict):
        raise _refuse(path, "settings", "an object {warmup, repeats, rounds}", settings)
    for key, minimum in (("warmup", 0), ("repeats", 1), ("rounds", 1)):
        if key in settings:
            _int_at_least(settings[key], minimum, path, f"settings.{key}")
    models = _field(manifest, "models", path, "models", "a non-empty list of model entries")
    if not isinstance(models, list) or not models:
        raise _refuse(path, "models", "a non-empty list of model entries", models)
    root = bundle.resolve()
    first: dict[tuple[str, str], int] = {}
    for i, entry in enumerate(models):
        _check_entry(entry, f"models[{i}]", path, root)
        key = (entry["name"], entry["backend"])
        if key in first:
            raise _refuse(path, f"models[{i}]", f"a (name, backend) pair not already in models[{first[key]}]", key)
        first[key] = i
    for i, entry in enumerate(models):
        where = f"{path}: models[{i}] ({entry['name']!r}, {entry['backend']!r})"
        onnx_file = bundle / entry["file"]
        if not onnx_file.is_file():
            raise BundleError(f"{where}: ONNX file {entry['file']!r} is missing from {bundle}")
        if sha256_file(onnx_file) != entry["sha256"]:
            raise BundleError(f"{where}: {entry['file']!r} does not match the sha256 the manifest records")
        for spec in entry["inputs"]:
            if not (bundle / spec["file"]).is_file():
                raise BundleError(f"{where}: example input file {spec['file']!r} is missing from {bundle}")
    manifest["sha256"] = sha256_file(path)
    return manifest
