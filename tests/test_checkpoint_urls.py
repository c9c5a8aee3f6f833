"""No code from remote checkpoints (issue 21, item 3): every path that loads a checkpoint takes a local file only.

A loopback HTTP server started here serves a checkpoint whose unpickling writes a marker file. ``slm export
--checkpoint URL`` and ``rfml test --ckpt_path URL`` (the house ``--checkpoint`` spelling, and ``ckpt_path`` in a
config file) must stop with one line and exit code 2 naming the URL, before anything is fetched: the server sees
no request, no marker is written and nothing lands in ``$TORCH_HOME``. The library readers refuse URLs too.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from ondevice.checkpoint_paths import RemoteCheckpointError, refuse_remote, remote_reason

BIN = Path(sys.executable).parent


class _Payload:
    """Unpickling this creates the file ``marker``: the code a checkpoint could run if it were unpickled fully."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (self.marker, "w")


class _Server:
    """A loopback HTTP server that serves ``body`` at every path and records each request's path."""

    def __init__(self, body: bytes) -> None:
        requests: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.requests = requests
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/evil.ckpt"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def evil(tmp_path: Path) -> Iterator[tuple[_Server, Path]]:
    """A server for this test and the marker path its checkpoint's unpickling would create."""
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"state_dict": {}, "hyper_parameters": {"arch": "tiny"}, "payload": _Payload(str(marker))}, buffer)
    server = _Server(buffer.getvalue())
    try:
        yield server, marker
    finally:
        server.stop()


@pytest.fixture(scope="module")
def rfml_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a tiny synthetic set where ``rfml test -c kd_cnn`` finds it, and a config naming a URL."""
    from rfml.data import write_dataset

    folder = tmp_path_factory.mktemp("rfml")
    write_dataset("rml2016.10a", folder / "data", per_key=2, seed=0, progress=False)
    return folder


def _run(prog: str, args: list[str], cwd: Path, torch_home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TORCH_HOME": str(torch_home), "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(BIN / prog), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _run_here(main, args: list[str], cwd: Path, torch_home: Path, monkeypatch) -> subprocess.CompletedProcess[str]:
    """``main(args)`` in this process, as the console script runs it: its exit code and what it printed."""
    torch_home.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def _assert_refused(done: subprocess.CompletedProcess[str], start: str, url: str, evil, torch_home: Path) -> None:
    server, marker = evil
    lines = [line for line in done.stderr.splitlines() if line.strip() and "warning:" not in line]
    assert not marker.exists(), "the checkpoint's pickle ran"
    assert server.requests == [], f"the checkpoint was fetched: {server.requests}"
    assert list(torch_home.rglob("*")) == [], "a copy was cached under TORCH_HOME"
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, lines
    assert lines[0].startswith(start), lines[0]
    assert repr(url) in lines[0] and "URL scheme 'http'" in lines[0], lines[0]
    assert "must be a local file path" in lines[0], lines[0]


def test_slm_export_refuses_a_checkpoint_url(evil, tmp_path: Path) -> None:
    server, _ = evil
    (tmp_path / "home").mkdir()
    done = _run("slm", ["export", "--checkpoint", server.url, "--out", "o"], tmp_path, tmp_path / "home")
    _assert_refused(done, "slm export: error: --checkpoint: ", server.url, evil, tmp_path / "home")
    assert not (tmp_path / "o").exists()


RFML_TEST = ["test", "-c", "kd_cnn", "--data.init_args.data_dir", "data", "--data.init_args.per_key", "2"]


def test_rfml_test_refuses_a_checkpoint_url_before_lightning_fetches_it(evil, rfml_folder, tmp_path) -> None:
    """The probe of the issue, through the console script: Lightning fetched the URL with weights_only=False."""
    server, _ = evil
    (tmp_path / "home").mkdir()
    done = _run("rfml", [*RFML_TEST, "--ckpt_path", server.url], rfml_folder, tmp_path / "home")
    _assert_refused(done, "rfml test: error: ckpt_path (--checkpoint): ", server.url, evil, tmp_path / "home")


@pytest.mark.parametrize("spelling", ["--checkpoint=", "config"])
def test_the_house_spelling_and_a_config_file_are_refused_too(evil, rfml_folder, tmp_path, spelling, monkeypatch):
    """``--checkpoint`` (rewritten to ``--ckpt_path``) and ``ckpt_path:`` in a ``-c`` file reach the same check; run
    in this process (the console script's dispatch, without a second interpreter's start)."""
    from rfml.cli import main

    server, _ = evil
    if spelling == "config":
        (tmp_path / "url.yaml").write_text(yaml.safe_dump({"ckpt_path": server.url}))
        args = [*RFML_TEST, "-c", str(tmp_path / "url.yaml")]
    else:
        args = [*RFML_TEST, spelling + server.url]
    done = _run_here(main, args, rfml_folder, tmp_path / "home", monkeypatch)
    _assert_refused(done, "rfml test: error: ckpt_path (--checkpoint): ", server.url, evil, tmp_path / "home")


def test_slm_lightning_commands_refuse_a_checkpoint_url(evil, tmp_path, monkeypatch) -> None:
    """``slm validate --checkpoint URL``: refused by the same check, before the model or the data are built."""
    from slm.cli import main

    server, _ = evil
    args = ["validate", "-c", "tiny", "--checkpoint", server.url]
    done = _run_here(main, args, tmp_path, tmp_path / "home", monkeypatch)
    _assert_refused(done, "slm validate: error: ckpt_path (--checkpoint): ", server.url, evil, tmp_path / "home")
    assert not (tmp_path / "runs").exists()  # no tokenizer trained, no data written


@pytest.mark.parametrize(
    "value",
    ["http://h/x.ckpt", "HTTPS://h/x.ckpt", "ftp://h/x", "s3://bucket/x.ckpt", "file:///tmp/x.ckpt",
     "gs://b/x", "simplecache::/tmp/x.ckpt", "registry", "registry:model:v1", "http_best.ckpt", " http://h/x"],
)  # fmt: skip
def test_every_remote_form_is_refused(value: str) -> None:
    with pytest.raises(RemoteCheckpointError, match=r"^teacher: .* is not read: .*must be a local file path"):
        refuse_remote(value, "teacher")
    with pytest.raises(RemoteCheckpointError):
        refuse_remote(Path(value), "teacher")  # Path("http://h") is "http:/h": still refused


@pytest.mark.parametrize(
    "value", [None, "best", "last", "hpc", "runs/x/best.ckpt", "/abs/best.ckpt", r"C:\runs\x.ckpt"]
)
def test_local_paths_and_lightning_keywords_pass(value: str | None) -> None:
    assert remote_reason(value) is None
    assert refuse_remote(value) is value


def test_every_library_reader_refuses_a_url(evil) -> None:
    """The readers that call torch.load themselves: a clear refusal naming the URL, and nothing fetched."""
    from torch import nn

    from ondevice.distill import load_weights
    from rfml.export import datamodule_from_checkpoint
    from rfml.trainers.checkpoints import checkpoint_keys, model_from_checkpoint
    from slm.export import export_checkpoint
    from slm.train import read_checkpoint, sample

    server, marker = evil
    readers = [
        lambda url: load_weights(nn.Linear(2, 2), url),
        datamodule_from_checkpoint,
        checkpoint_keys,
        model_from_checkpoint,
        read_checkpoint,
        lambda url: export_checkpoint(url, "unused"),
        lambda url: sample(url, "hi"),
    ]
    for read in readers:
        with pytest.raises(RemoteCheckpointError, match=re.escape(repr(server.url)) + ".*must be a local file path"):
            read(server.url)
    assert server.requests == [] and not marker.exists()
