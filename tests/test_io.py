"""ondevice.io, and the self-contained copy inside the device runner that must behave the same."""

import hashlib
import json

import pytest

from ondevice import io
from ondevice.device import manifest, runner


@pytest.mark.parametrize("module", [io, runner], ids=["io", "runner"])
def test_write_json_atomic_writes_indented_json_and_leaves_no_temporary(tmp_path, module):
    path = module.write_json_atomic(tmp_path / "sub" / "a.json", {"b": [1, 2]})
    assert json.loads(path.read_text()) == {"b": [1, 2]}
    assert path.read_text().endswith("\n")
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]


@pytest.mark.parametrize("module", [io, runner], ids=["io", "runner"])
def test_atomic_path_failure_keeps_the_old_file_and_removes_the_temporary(tmp_path, module):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), module.atomic_path(target) as tmp:
        assert tmp.suffix == ".txt" and tmp.parent == tmp_path
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


@pytest.mark.parametrize("module", [io, runner], ids=["io", "runner"])
def test_atomic_files_get_the_mode_open_would_give(tmp_path, module):
    import os

    mask = os.umask(0o027)
    try:
        path = module.write_json_atomic(tmp_path / "a.json", {})
    finally:
        os.umask(mask)
    # The umask read at import applies (not the private 0600 of the temporary file, nor the 0027 set later).
    assert path.stat().st_mode & 0o777 == 0o666 & ~module._UMASK != 0o600
    os.chmod(path, 0o640)
    module.write_json_atomic(path, {"again": 1})
    assert path.stat().st_mode & 0o777 == 0o640  # a replaced file keeps its mode


def test_runner_copy_agrees_with_ondevice_io(tmp_path):
    """The runner ships alone in bundles, so it keeps a copy; the copy must give the same bytes and digests."""
    payload = {"z": 1.5, "a": ["é", None]}
    a = io.write_json_atomic(tmp_path / "io.json", payload)
    b = runner.write_json_atomic(tmp_path / "runner.json", payload)
    assert a.read_bytes() == b.read_bytes()
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 9000)  # > 1 MiB, so the block loop runs more than once
    assert io.sha256_file(blob) == manifest.sha256_file(blob)
    assert io.sha256_file(blob) == hashlib.sha256(blob.read_bytes()).hexdigest()
