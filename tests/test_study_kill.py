"""Workers die with their study (issue 21, item 4): an ``rfml snr-study`` killed during a Lightning fit leaves no
process behind.

The pool worker asks the kernel for a signal when its parent dies (``PR_SET_PDEATHSIG``). With SIGTERM, Lightning's
handler turned that signal into a ``SIGTERMException`` at the next batch, the pool caught it and the orphan kept
serving; a plain sleeping task died, so only a real fit shows the difference. Linux only (``/proc`` and prctl).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from _study_tasks import toy_config, write_toy_rml

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG and /proc are Linux's")


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state first); ``None`` when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rsplit(")", 1)[1].split()


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")  # a zombie has ended; only its exit code waits


def _session(sid: int) -> list[int]:
    """The living processes of session ``sid`` (the study started one of its own: it and everything it started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            if int(fields[3]) == sid and fields[0] not in ("Z", "X"):  # field 6 of stat: the session id
                found.append(int(entry.name))
    return found


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except (FileNotFoundError, ProcessLookupError):
        return "(gone)"


def _fitting(pid: int) -> bool:
    """Whether ``pid`` is inside a Lightning fit: the Trainer catches SIGTERM only from the start of ``fit`` to its
    teardown (a worker's Python leaves SIGTERM at its default), and ``/proc/PID/status`` lists the caught signals."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    caught = next((line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), "0")
    return bool(int(caught, 16) >> (signal.SIGTERM - 1) & 1)


def test_a_study_killed_during_a_fit_leaves_no_worker_behind(tmp_path: Path) -> None:
    data = write_toy_rml(str(tmp_path / "toy.pkl"))
    config = toy_config(data)
    config["train"].update(max_epochs=100_000, patience=100_000)  # every training runs until it is killed
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(config))
    args = ["snr-study", "single", "-c", "study.yaml", "--out", "out", "--workers", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = tmp_path / "stderr.txt"
    with log.open("wb") as stderr:
        study = subprocess.Popen(
            [str(BIN / "rfml"), *args], cwd=tmp_path, env=env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert study.poll() is None, log.read_text()
            workers = [pid for pid in _session(study.pid) if pid != study.pid]
            seen.update(workers)
            if any(_fitting(pid) for pid in workers):
                break
            time.sleep(0.25)
        else:
            pytest.fail("no worker of the study started fitting within 120 s")
        seen.update(_session(study.pid))
        seen.discard(study.pid)
        study.kill()  # what a user's kill -9 or the OOM killer does: the study cannot clean up after itself
        study.wait(timeout=10)
        killed = time.monotonic()
        while time.monotonic() - killed < 10 and any(_alive(pid) for pid in seen):
            time.sleep(0.1)
        survivors = {pid: _command(pid) for pid in seen if _alive(pid)}
        assert survivors == {}, f"processes of the killed study still run after 10 s: {survivors}"
        assert not list((tmp_path / "out").rglob("*.pt")), "a worker wrote a model after its study died"
    finally:
        for pid in {study.pid, *seen, *_session(study.pid)}:  # whatever survived a failing test: by its id
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        study.wait(timeout=10)
