"""The one resumable results store of the studies: an append-only JSON-lines log, one object per finished run, and
the header (``study.json``) that says which settings the logged runs were made with.

Every record has a unique string ``"key"``. A study appends each record as its training finishes, so an interrupted
study (Ctrl-C, a killed job, a power cut) keeps everything it finished and resumes with the missing keys.
:func:`open_results` opens a study folder's log after checking its header: runs made with other settings are
refused (or, with ``restart``, discarded), so results that would not be comparable are never mixed.

Why an append is safe without a temporary file and a rename: the record is one line written by ONE ``os.write`` on a
descriptor opened with ``O_APPEND``, so the kernel places it at the end of the file in one step, and it cannot
interleave with or overwrite an earlier line; ``fsync`` follows before :meth:`ResultsLog.append` returns, so a
record reported as written survives a power cut. A crash during the write can only leave a prefix of the last line
(no newline, or with a power cut possibly garbage in the file's last block). :meth:`ResultsLog.load` never deletes
it: a last line that parses (a complete record that lacks only its newline, e.g. from an editor) is kept and the
newline added; a last line that does not parse is appended to ``<log>.rejected`` beside the log (never truncated),
and only then is the log rewritten without it (temporary file, ``fsync``, ``os.replace``), so the next append starts
on a fresh line; that training is simply run again. Any other malformed line cannot come from a crash, and is an
error naming the line.

Appends and repairs hold an exclusive ``flock`` on the file (where the platform has one), so a reader that sees a
write in progress does not take it for a torn line: it repairs only what is still torn once it holds the lock. One
process appends to a log at a time (the study's driver): keys are checked against what this object has read.

Numbers: NaN and ±Infinity (a diverged training's loss) are written the way Python's ``json`` writes them (``NaN``,
``Infinity``) and read back as the same floats; readers of strict JSON (``jq``) reject those tokens. Lines are ASCII
(non-ASCII characters are escaped).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shutil
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ondevice.io import atomic_path, write_json_atomic

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one process at a time must use the file
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

HEADER_NAME = "study.json"
LOG_NAME = "results.jsonl"


class StudyConfigError(ValueError):
    """A study folder holds runs made with other settings, or is not a folder of this study."""


class ResultsLogError(ValueError):
    """The file holds something no crash can leave: a malformed line before the last, or a key twice."""


def _write_durably(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``, ``fsync`` it and close it (the descriptor is closed whatever happens)."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make a new or renamed entry of ``folder`` durable (not possible on every platform, e.g. Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class ResultsLog:
    """An append-only JSON-lines file of records with unique ``"key"`` strings (see the module's notes).

    Args:
        path: the file; created, with its folder, by the first :meth:`append`. The folder is created at once.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._records: dict[str, dict[str, Any]] | None = None

    def __repr__(self) -> str:
        return f"ResultsLog({str(self.path)!r})"

    # -- reading ----------------------------------------------------------------------------------------------------

    @property
    def rejected_path(self) -> Path:
        """``<log>.rejected``: where :meth:`load` sets aside a last line that does not parse (appended, never
        deleted)."""
        return self.path.with_name(self.path.name + ".rejected")

    def load(self) -> dict[str, dict[str, Any]]:
        """Every record, by key, in file order; the file's last line repaired if a crash (or an editor) left it so.

        - A complete last record without its newline is kept, and the newline added.
        - A last line that does not parse as JSON (torn by an interrupted write, or hand-edited) is set aside: its
          bytes are appended to :attr:`rejected_path` (a line of its own there; the file is only ever appended to)
          and ``fsync``-ed, and only then is the log rewritten without it (atomically). Its training runs again.

        Both repairs happen under the writers' lock and are logged as a warning naming the file(s).

        Raises:
            ResultsLogError: a line other than the last is not a JSON object with a string ``"key"``, the last line
                parses as JSON but is not such an object, or a key occurs twice. Nothing is changed then.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            self._records = {}
            return {}
        records, repaired, rejected = self._parse(data)
        if repaired is not None:
            # Repair under the writers' lock: a live writer holds it for its whole write, so a tail still torn once
            # the lock is ours was left by a dead one (what was read above may have been a write in progress).
            with self._locked() as fd:
                current = _read_fd(fd)
                if current != data:
                    records, repaired, rejected = self._parse(current)
                if repaired is not None:
                    if rejected is not None:
                        self._set_aside(rejected)
                        log.warning(
                            "%s: the last line does not parse as JSON (%d bytes: a torn last line left by an "
                            "interrupted write, or a hand edit); set aside in %s and removed from the log; its "
                            "training runs again",
                            self.path,
                            len(rejected),
                            self.rejected_path,
                        )
                    else:
                        log.warning(
                            "%s: the last record (key %r) had no newline (an interrupted write or an editor); kept, "
                            "and the newline added",
                            self.path,
                            next(reversed(records)),
                        )
                    self._rewrite(repaired)
        self._records = records
        return copy.deepcopy(records)

    def _parse(self, data: bytes) -> tuple[dict[str, dict[str, Any]], bytes | None, bytes | None]:
        """The records of the file's content ``data``; the content to write back (None: nothing to repair); and the
        last line to set aside, as one line (None: none).

        The last line is complete if it parses as JSON, newline or not (a missing newline is added); otherwise it is
        set aside. Every line kept must then be a JSON object with a string ``"key"``.
        """
        lines = data.split(b"\n")
        tail = lines.pop()  # what follows the last newline: b"" unless the last write was torn (or hand-edited)
        rejected = None
        if tail:
            if _parses(tail):
                lines.append(tail)  # a complete record that lacks only its newline
            else:
                rejected = tail + b"\n"
        elif lines and not _parses(lines[-1]):
            # a newline-terminated last line that is not JSON: a crash left garbage at the end (e.g. zeros after a
            # power cut extended the file), or an editor; it is the last line, so nothing after it depends on it
            rejected = lines.pop() + b"\n"
        records: dict[str, dict[str, Any]] = {}
        first_line: dict[str, int] = {}
        for number, raw in enumerate(lines, start=1):
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ResultsLogError(
                    f"{self.path}: line {number} is not valid JSON ({exc}); only the last line can be torn by a "
                    "crash, so the file was changed by something else: fix or remove that line"
                ) from exc
            key = record.get("key") if isinstance(record, dict) else None
            if not isinstance(key, str):
                raise ResultsLogError(f"{self.path}: line {number} is not a JSON object with a string 'key'")
            if key in records:
                raise ResultsLogError(
                    f"{self.path}: key {key!r} is recorded twice (lines {first_line[key]} and {number}); this log "
                    "refuses duplicate appends, so the file was changed by something else: remove one of them"
                )
            records[key] = record
            first_line[key] = number
        if not tail and rejected is None:
            return records, None, None
        return records, b"".join(line + b"\n" for line in lines), rejected

    def _set_aside(self, line: bytes) -> None:
        """Append ``line`` to :attr:`rejected_path` durably (created with the log's permissions)."""
        mode = stat.S_IMODE(self.path.stat().st_mode)
        _write_durably(os.open(self.rejected_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode), line)
        _fsync_dir(self.path.parent)

    @contextlib.contextmanager
    def _locked(self, flags: int = os.O_RDONLY) -> Iterator[int]:
        """A descriptor of the file as it is now at ``path``, under an exclusive ``flock`` (none where unsupported).

        A repair replaces the file, so a descriptor opened before it and locked after it would point at the old,
        unlinked file: the path is opened again until the locked descriptor is the file at ``path``.
        """
        while True:
            fd = os.open(self.path, flags, 0o644)  # the mode only matters with O_CREAT
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    current = os.path.samestat(os.fstat(fd), os.stat(self.path))
                except FileNotFoundError:
                    current = False
            except BaseException:
                os.close(fd)
                raise
            if current:
                break
            os.close(fd)
        try:
            yield fd
        finally:
            os.close(fd)  # releases the lock

    def _rewrite(self, data: bytes) -> None:
        """Replace the file's content by ``data`` atomically and durably, keeping its permissions."""
        mode = stat.S_IMODE(self.path.stat().st_mode)
        with atomic_path(self.path) as tmp:
            _write_durably(os.open(tmp, os.O_WRONLY | os.O_TRUNC), data)
            os.chmod(tmp, mode)
        _fsync_dir(self.path.parent)

    def _loaded(self) -> dict[str, dict[str, Any]]:
        if self._records is None:
            self.load()
        assert self._records is not None
        return self._records

    @property
    def keys(self) -> list[str]:
        """The recorded keys, in file order."""
        return list(self._loaded())

    def __contains__(self, key: object) -> bool:
        return key in self._loaded()

    def __len__(self) -> int:
        return len(self._loaded())

    def records(self) -> list[dict[str, Any]]:
        """The records in file order (copies)."""
        return copy.deepcopy(list(self._loaded().values()))

    # -- writing ----------------------------------------------------------------------------------------------------

    def append(self, record: dict[str, Any]) -> None:
        """Add ``record`` as one line, durably (``fsync``) before returning.

        Raises:
            ValueError: ``record`` has no non-empty string ``"key"``, its key is already recorded, or it is not
                JSON-serialisable.
        """
        if not isinstance(record, dict):
            raise ValueError(f"{self.path}: a record must be a dict, got {type(record).__name__}")
        key = record.get("key")
        if not isinstance(key, str) or not key:
            raise ValueError(f"{self.path}: a record needs a non-empty string 'key', got {key!r}")
        records = self._loaded()  # also repairs a torn tail, so this line starts on a line of its own
        if key in records:
            raise ValueError(f"{self.path}: key {key!r} is already recorded")
        try:
            line = json.dumps(record, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{self.path}: record {key!r} cannot be written as JSON: {exc}") from exc
        data = (line + "\n").encode("ascii")  # json.dumps escapes non-ASCII, and every newline inside a value
        created = not self.path.exists()
        try:
            with self._locked(os.O_WRONLY | os.O_APPEND | os.O_CREAT) as fd:
                written = os.write(fd, data)
                if written != len(data):
                    raise OSError(
                        f"{self.path}: short write ({written} of {len(data)} bytes, disk full?); the partial line "
                        f"is set aside in {self.rejected_path.name} on the next load"
                    )
                os.fsync(fd)
        except BaseException:
            self._records = None  # the tail may be torn now: read (and repair) the file again before the next append
            raise
        if created:
            _fsync_dir(self.path.parent)
        records[key] = json.loads(line)  # what load() will read: a copy, with tuples as lists


def _read_fd(fd: int) -> bytes:
    """The whole content of the file open as ``fd``, from its start."""
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _parses(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return True


# -- the study folder -----------------------------------------------------------------------------------------------


def read_header(out: str | os.PathLike, format_id: str) -> dict[str, Any] | None:
    """The header ``out/study.json`` of a study whose format id is ``format_id``; ``None`` if there is none yet.

    Raises:
        StudyConfigError: the header is not JSON, or belongs to another kind of study.
    """
    path = Path(out) / HEADER_NAME
    if not path.is_file():
        return None
    try:
        header = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise StudyConfigError(f"{path}: not valid JSON ({err}); move it away, or pass --restart") from None
    found = header.get("format") if isinstance(header, dict) else None
    if found != format_id:
        raise StudyConfigError(
            f"{path}: field 'format' is {found!r}, expected {format_id!r}: not a folder of this study; choose "
            "another --out"
        )
    return header


def _changes(old: Any, new: Any) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        return "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
    return f"fingerprint: {old!r} -> {new!r}"


def open_results(
    out: str | os.PathLike,
    format_id: str,
    fingerprint: Any,
    header: dict[str, Any],
    restart: bool = False,
    discard: Sequence[str] = (),
) -> ResultsLog:
    """The results log ``out/results.jsonl`` of a study, once its recorded runs are known to be comparable.

    ``fingerprint`` (JSON: a dict of settings, or a hash) names everything a run's result depends on. When
    ``out/study.json`` records another fingerprint, the study is refused with a :class:`StudyConfigError` naming
    what changed, unless ``restart``: then the log and the folders ``discard`` (the old runs' files) are deleted.
    The header is (re)written as ``{"format": format_id, "fingerprint": …, **header}``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = json.loads(json.dumps(fingerprint))  # as the header will hold it: tuples as lists
    try:
        recorded = read_header(out, format_id)
    except StudyConfigError:
        if not restart:
            raise
        recorded = {"fingerprint": None}  # unreadable: whatever it held is discarded
    if recorded is not None and recorded.get("fingerprint") != fingerprint:
        if not restart:
            raise StudyConfigError(
                f"{out / HEADER_NAME}: the recorded runs were made with other data/model/training settings "
                f"({_changes(recorded.get('fingerprint'), fingerprint)}); choose another --out, or pass --restart "
                "to discard them"
            )
        (out / LOG_NAME).unlink(missing_ok=True)
        for folder in discard:
            shutil.rmtree(out / folder, ignore_errors=True)
    write_json_atomic(out / HEADER_NAME, {"format": format_id, "fingerprint": fingerprint, **header})
    return ResultsLog(out / LOG_NAME)
