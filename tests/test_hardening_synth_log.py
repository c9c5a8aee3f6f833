"""Issue 21, items 9 and 10: the synthesizer refuses nonsense, the results log never deletes a record, and
``rfml generate`` removes the partial files a killed run of it left for the same target.

- Synthesizer: SNRs outside :data:`rfml.dsp.synthesizer.SNR_DB_RANGE` (where frames overflow float32 or the int64
  label wraps), non-integer example indices (truncated before) and seeds outside ``[0, 2**64)`` (reduced modulo
  2**64 before, so 2**64 gave seed 0's data) are refused with a ``ValueError`` naming the argument, the value and
  the allowed range; both ends of the range give finite frames and exact labels.
- Results log: a complete last record without its newline is kept and the newline added; a last line that does not
  parse is appended, byte for byte, to ``<log>.rejected`` before the log is rewritten without it.
- ``rfml generate``: ``.{name}.{pid}.partial`` files of the same target whose writer process is gone are removed
  before writing; a live writer's, and other targets', are left alone.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rfml.cli import main as rfml_main
from rfml.data.synthetic import write_dataset
from rfml.dsp import Synthesizer, rng
from rfml.dsp.ism import ISMSynthesizer
from rfml.dsp.synthesizer import SNR_DB_RANGE
from rfml.studies.results import ResultsLog, ResultsLogError

LOW, HIGH = SNR_DB_RANGE
RANGE_TEXT = r"\[-100, 100\] dB"
SEED_RANGE = r"\[0, 2\*\*64\)"


# ---- the synthesizer -------------------------------------------------------------------------------------------


def test_the_snr_range_is_the_documented_one() -> None:
    assert SNR_DB_RANGE == (-100.0, 100.0)


@pytest.mark.parametrize("value", [-1000, 1e30, -100.5, 100.5])
def test_snr_db_outside_the_range_is_refused(value: float) -> None:
    synth = Synthesizer(["QPSK"], length=32)
    with pytest.raises(ValueError, match=rf"snr_db must be .*{RANGE_TEXT}.*, got {re.escape(repr(value))}"):
        synth.generate([0, 1], snr_db=value)


@pytest.mark.parametrize("value", [-1000, 1e30])
def test_snr_grids_outside_the_range_are_refused_by_both_synthesizers(value: float) -> None:
    with pytest.raises(ValueError, match=rf"snrs must be .*{RANGE_TEXT}.*, got {re.escape(repr(value))}"):
        Synthesizer(["QPSK"], length=32, snrs=[0, value])
    with pytest.raises(ValueError, match=rf"snrs must be .*{RANGE_TEXT}.*, got {re.escape(repr(value))}"):
        ISMSynthesizer(snrs=[0, value])
    with pytest.raises(ValueError, match=rf"snr_db must be .*{RANGE_TEXT}.*, got {re.escape(repr(value))}"):
        ISMSynthesizer(snrs=[0]).generate([0], snr_db=value)


@pytest.mark.parametrize("channel", ["clean", "rml2016", "wireless", "rml2016-compat"])
def test_both_ends_of_the_range_give_finite_frames_and_exact_labels(channel: str) -> None:
    synth = Synthesizer("rml2016.10a", length=128, channel=channel, snrs=[LOW, HIGH])
    rows = range(44)  # every class at both grid SNRs, twice
    grid = synth.generate(rows)
    assert torch.isfinite(grid["x"]).all()
    assert grid["snr"].tolist() == [[-100, 100][(i // 11) % 2] for i in rows]
    assert grid["x"].abs().amax(dim=(1, 2)).min() > 0  # the signal is not lost to underflow either
    for end in (LOW, HIGH):
        out = synth.generate(rows, snr_db=end, return_clean=True)
        assert torch.isfinite(out["x"]).all() and torch.isfinite(out["clean"]).all()
        assert out["snr"].tolist() == [int(end)] * 44
        assert out["x"].abs().amax(dim=(1, 2)).min() > 0
    ism = ISMSynthesizer(snrs=[LOW, HIGH])
    out = ism.generate(range(30))
    assert torch.isfinite(out["x"]).all() and out["snr"].tolist() == [-100] * 15 + [100] * 15


@pytest.mark.parametrize(
    ("indices", "dtype"),
    [
        ([1.5, 2.7], "float32"),
        (np.array([1.0, 2.0]), "float64"),  # integral values, but still not an integer dtype
        (torch.tensor([3.0], dtype=torch.float16), "float16"),
        ([True, False], "bool"),
        (torch.tensor([1 + 0j]), "complex64"),
    ],
)
def test_non_integer_indices_are_refused(indices: object, dtype: str) -> None:
    synth = Synthesizer(["QPSK", "BPSK"], length=16)
    with pytest.raises(ValueError, match=rf"indices must be integers \(an integer dtype\), got dtype {dtype}"):
        synth.generate(indices)
    with pytest.raises(ValueError, match=rf"indices must be integers .*, got dtype {dtype}"):
        ISMSynthesizer().generate(indices)


def test_integer_indices_of_any_width_give_the_same_examples() -> None:
    synth = Synthesizer(["QPSK", "BPSK"], length=16, seed=5)
    reference = synth.generate([3, 0, 7])
    for same in (np.array([3, 0, 7], dtype=np.int32), torch.tensor([3, 0, 7], dtype=torch.int16), range(3, 4)):
        out = synth.generate(same)
        rows = [0, 1, 2] if len(out["y"]) == 3 else [0]
        assert torch.equal(out["x"], reference["x"][rows])
    assert synth.generate([])["x"].shape == (0, 2, 16)  # an empty list is no index at all
    with pytest.raises(ValueError, match=r"indices must be < 2\*\*63, got 18446744073709551615"):
        synth.generate(np.array([2**64 - 1], dtype=np.uint64))


@pytest.mark.parametrize("seed", [2**64, 2**70, -1, -(2**63)])
def test_seeds_outside_64_bits_are_refused(seed: int) -> None:
    with pytest.raises(ValueError, match=rf"seed must be an integer in {SEED_RANGE}.*, got {seed}"):
        Synthesizer(["QPSK"], length=16, seed=seed)
    with pytest.raises(ValueError, match=rf"seed must be an integer in {SEED_RANGE}.*, got {seed}"):
        rng.example_keys(seed, torch.arange(3))  # every synthesizer's keys come from here
    with pytest.raises(ValueError, match=rf"seed must be an integer in {SEED_RANGE}.*, got {seed}"):
        ISMSynthesizer(seed=seed).generate([0])


@pytest.mark.parametrize("seed", [1.5, 2.0, True, "3"])
def test_seeds_that_are_not_integers_are_refused(seed: object) -> None:
    with pytest.raises(ValueError, match=rf"seed must be an integer in {SEED_RANGE}.*, got {re.escape(repr(seed))}"):
        Synthesizer(["QPSK"], length=16, seed=seed)  # type: ignore[arg-type]


def test_every_64_bit_seed_is_its_own_dataset() -> None:
    top = Synthesizer(["QPSK"], length=16, seed=2**64 - 1).generate(range(4))["x"]
    zero = Synthesizer(["QPSK"], length=16, seed=0).generate(range(4))["x"]
    numpy_seed = Synthesizer(["QPSK"], length=16, seed=np.uint64(2**64 - 1)).generate(range(4))["x"]
    assert torch.equal(top, numpy_seed)
    assert not torch.isclose(top, zero).all(dim=(1, 2)).any()


def test_generate_refuses_a_seed_outside_64_bits_with_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match=rf"seed must be an integer in {SEED_RANGE}.*, got {2**64}"):
        write_dataset("rml2016.10a", tmp_path, per_key=1, seed=2**64, progress=False)
    code = rfml_main(["generate", "--preset", "rml2016.10a", "--out", f"{tmp_path}/", "--seed", "-1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("rfml generate: error: seed must be an integer in [0, 2**64)")
    assert err.rstrip().endswith("got -1")
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


# ---- the results log -------------------------------------------------------------------------------------------


def _log_with_two_records(path: Path) -> bytes:
    log = ResultsLog(path)
    log.append({"key": "r0", "v": 0})
    log.append({"key": "r1", "v": 1})
    return path.read_bytes()


def test_a_complete_last_record_without_its_newline_is_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "results.jsonl"
    clean = _log_with_two_records(path)
    last = b'{"key": "r2", "v": 2}'
    os.chmod(path, 0o640)
    with open(path, "ab") as f:
        f.write(last)

    fresh = ResultsLog(path)
    with caplog.at_level(logging.WARNING, logger="rfml.studies.results"):
        records = fresh.load()
    assert list(records) == ["r0", "r1", "r2"] and records["r2"] == {"key": "r2", "v": 2}
    assert path.read_bytes() == clean + last + b"\n"  # the newline added, nothing else changed
    assert oct(path.stat().st_mode & 0o777) == oct(0o640)
    assert "newline" in caplog.text and str(path) in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.jsonl"]  # nothing set aside, no temporary

    fresh.append({"key": "r3", "v": 3})
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 5
    assert list(ResultsLog(path).load()) == ["r0", "r1", "r2", "r3"]


@pytest.mark.parametrize(
    ("tail", "set_aside"),
    [
        (b'{"key": "r2", oops}\n', b'{"key": "r2", oops}\n'),  # a hand-edited last line
        (b'{"key": "r2", "va', b'{"key": "r2", "va\n'),  # a torn write: one line of its own in the .rejected file
        (b"\x00\x00\x00\x00\n", b"\x00\x00\x00\x00\n"),  # a power cut's zeros
    ],
    ids=["hand-edited", "torn", "zeros"],
)
def test_a_last_line_that_does_not_parse_is_set_aside_not_deleted(
    tmp_path: Path, tail: bytes, set_aside: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "results.jsonl"
    rejected = tmp_path / "results.jsonl.rejected"
    clean = _log_with_two_records(path)
    with open(path, "ab") as f:
        f.write(tail)

    fresh = ResultsLog(path)
    with caplog.at_level(logging.WARNING, logger="rfml.studies.results"):
        assert list(fresh.load()) == ["r0", "r1"]
    assert path.read_bytes() == clean  # the other records kept, byte for byte
    assert rejected.read_bytes() == set_aside  # the line's exact bytes
    assert str(path) in caplog.text and str(rejected) in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.jsonl", "results.jsonl.rejected"]

    # a later bad line is appended to the .rejected file, never written over it
    fresh.append({"key": "r2", "v": 2})
    with open(path, "ab") as f:
        f.write(b"not json\n")
    assert list(ResultsLog(path).load()) == ["r0", "r1", "r2"]
    assert rejected.read_bytes() == set_aside + b"not json\n"
    assert path.read_bytes().count(b"\n") == 3


def test_damage_before_the_last_line_is_still_an_error_and_sets_nothing_aside(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"key": "r0"}\nbroken\n{"key": "r2"}')
    with pytest.raises(ResultsLogError, match=r"results\.jsonl: line 2 is not valid JSON"):
        ResultsLog(path).load()
    assert path.read_bytes() == b'{"key": "r0"}\nbroken\n{"key": "r2"}'
    assert not (tmp_path / "results.jsonl.rejected").exists()


# ---- rfml generate's stale partial files ------------------------------------------------------------------------


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_generate_removes_its_dead_partials_for_the_same_target_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = "RML2016.10a_dict.synthetic.pkl"
    dead = _dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = [tmp_path / f".{target}.{dead}.partial", tmp_path / f".{target}.provenance.json.{dead}.partial"]
        kept = [
            tmp_path / f".{target}.{live.pid}.partial",  # a live writer's
            tmp_path / f".{target}.{os.getppid()}.partial",  # another live process's
            tmp_path / f".GOLD_XYZ_OSC.0001_1024.synthetic.hdf5.{dead}.partial",  # another target's
            tmp_path / f".{target}.x{dead}.partial",  # not a pid
        ]
        for path in stale + kept:
            path.write_bytes(b"\x80" * 1000)
        with caplog.at_level(logging.WARNING, logger="rfml.data"):
            code = rfml_main(
                ["generate", "--preset", "rml2016.10a", "--out", f"{tmp_path}/", "--per-key", "1", "--quiet"]
            )
        assert code == 0
        assert not any(path.exists() for path in stale)
        assert all(path.read_bytes() == b"\x80" * 1000 for path in kept)
        assert (tmp_path / target).is_file() and (tmp_path / f"{target}.provenance.json").is_file()
        assert all(str(path) in caplog.text for path in stale) and str(dead) in caplog.text
    finally:
        live.kill()
        live.wait()


def test_generate_of_the_ism_folder_removes_its_dead_partials(tmp_path: Path) -> None:
    dead = _dead_pid()
    folder = tmp_path / "ism2017"
    folder.mkdir()
    stale = [folder / f".{name}.{dead}.partial" for name in ("data_iq.p", "labels.p", "provenance.json")]
    kept = folder / f".notes.txt.{dead}.partial"
    for path in [*stale, kept]:
        path.write_bytes(b"x")
    write_dataset("ism2017", folder, per_key=1, progress=False)
    assert not any(path.exists() for path in stale) and kept.exists()
    assert sorted(p.name for p in folder.iterdir()) == [kept.name, "data_iq.p", "labels.p", "provenance.json"]
