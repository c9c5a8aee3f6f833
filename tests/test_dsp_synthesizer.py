"""The Synthesizer contract: shapes, labels, determinism and argument validation."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
import torch

from rfml.dsp import CLASSES_RML2016A, CLASSES_RML2016B, CLASSES_RML2018A, Synthesizer


def test_class_sets_match_the_radioml_datasets() -> None:
    assert len(CLASSES_RML2016A) == 11 and CLASSES_RML2016A == sorted(CLASSES_RML2016A)
    assert CLASSES_RML2016B == [c for c in CLASSES_RML2016A if c != "AM-SSB"]
    assert len(CLASSES_RML2018A) == 24 and CLASSES_RML2018A[0] == "OOK" and CLASSES_RML2018A[-1] == "OQPSK"


def test_generate_returns_the_data_contract() -> None:
    synth = Synthesizer(CLASSES_RML2016A, length=128, snrs=[-4, 6])
    batch = synth.generate(range(44), return_clean=True)
    assert batch["x"].shape == (44, 2, 128) and batch["x"].dtype == torch.float32
    assert batch["clean"].shape == (44, 2, 128)
    assert batch["y"].dtype == torch.int64 and batch["snr"].dtype == torch.int64
    assert batch["y"].tolist() == [i % 11 for i in range(44)]
    assert batch["snr"].tolist() == [[-4, 6][(i // 11) % 2] for i in range(44)]
    assert torch.isfinite(batch["x"]).all()
    # the clean frame has unit mean power per complex sample
    torch.testing.assert_close(batch["clean"].pow(2).sum(1).mean(1), torch.ones(44), rtol=1e-4, atol=0)


def test_snr_override_applies_to_every_row() -> None:
    synth = Synthesizer("rml2018.01a", length=64)
    assert synth.generate([0, 5, 99], snr_db=12)["snr"].tolist() == [12, 12, 12]


@pytest.mark.parametrize("channel", ["clean", "rml2016", "wireless", "rml2016-compat"])
def test_examples_do_not_depend_on_batch_composition_or_order(channel: str) -> None:
    synth = Synthesizer("rml2018.01a", length=256, channel=channel, seed=11)
    whole = synth.generate(range(600), return_clean=True)
    picked = torch.tensor([599, 3, 250, 17, 18, 400, 3])
    part = synth.generate(picked, return_clean=True)
    assert torch.equal(whole["x"][picked], part["x"])
    assert torch.equal(whole["clean"][picked], part["clean"])
    assert torch.equal(whole["x"][250:251], synth.generate([250])["x"])


@pytest.mark.parametrize("channel", ["clean", "rml2016", "wireless", "rml2016-compat"])
def test_chunking_does_not_change_the_output(channel: str, monkeypatch: pytest.MonkeyPatch) -> None:
    synth = Synthesizer("rml2018.01a", length=100, channel=channel, seed=4)
    whole = synth.generate(range(240), return_clean=True)  # every one of the 24 classes 10 times
    for rows in (1, 7, 33):  # counts not multiples of any vector width; 7 and 33 rows leave a short last chunk
        monkeypatch.setattr(Synthesizer, "chunk_samples", 100 * rows)
        chunked = synth.generate(range(240), return_clean=True)
        assert torch.equal(whole["x"], chunked["x"]) and torch.equal(whole["clean"], chunked["clean"])


def test_elementwise_kernels_agree_between_vector_and_scalar_paths() -> None:
    """The synthesizer's batch independence rests on this: every elementwise function it applies
    gives the same bits whether torch runs an element through its SIMD loop or its scalar tail.
    (``pow`` with a tensor exponent does not, which is why the channel converts dB with ``exp``.)"""
    x = torch.rand(6000, generator=torch.Generator().manual_seed(0)) * 6.2 + 1e-3
    functions = {
        "cos": torch.cos, "sin": torch.sin, "log": torch.log, "exp": lambda v: torch.exp(v - 3),
        "sqrt": torch.sqrt, "rsqrt": torch.rsqrt, "addcmul": lambda v: torch.addcmul(v, v, v * 0.37),
        "add_alpha": lambda v: torch.add(v, v * 1.3, alpha=0.77), "round": lambda v: torch.round(v * 7.3),
    }  # fmt: skip
    for name, function in functions.items():
        vectorised = function(x)
        scalar = torch.cat([function(x[i : i + 3]) for i in range(0, x.numel(), 3)])
        assert torch.equal(vectorised, scalar), name


def _digest_in_subprocess(seed: int) -> str:
    code = (
        "import hashlib, torch\n"
        "torch.set_num_threads(1)\n"
        "from rfml.dsp import Synthesizer\n"
        f"s = Synthesizer('rml2016.10a', length=128, channel='wireless', seed={seed})\n"
        "x = s.generate([7, 123456, 42, 9])['x']\n"
        "print(hashlib.sha256(x.numpy().tobytes()).hexdigest())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return result.stdout.strip()


def test_same_seed_gives_bit_identical_data_across_processes_and_thread_counts() -> None:
    torch.set_num_threads(2)  # this process: two threads; the subprocesses: one
    first, second = _digest_in_subprocess(3), _digest_in_subprocess(3)
    here = Synthesizer("rml2016.10a", length=128, channel="wireless", seed=3).generate([7, 123456, 42, 9])["x"]
    assert first == second == hashlib.sha256(here.numpy().tobytes()).hexdigest()


def test_different_seeds_give_different_data() -> None:
    a = Synthesizer("rml2016.10a", length=128, seed=1).generate(range(22))
    b = Synthesizer("rml2016.10a", length=128, seed=2).generate(range(22))
    assert torch.equal(a["y"], b["y"])
    assert not torch.isclose(a["x"], b["x"]).all(dim=(1, 2)).any()  # every example differs


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"classes": ["QPSK", "QAM1024"]}, r"classes contains unknown names \['QAM1024'\]; allowed: .*'QPSK'"),
        ({"classes": "rml2020"}, r"classes must be .* one of \['rml2016.10a'"),
        ({"length": -5}, r"length must be a positive integer number of samples, got -5"),
        ({"length": 0}, r"length must be a positive integer"),
        ({"samples_per_symbol": 1}, r"samples_per_symbol must be an integer >= 2, got 1"),
        ({"snrs": [0, float("nan")]}, r"snrs must be a finite number of dB \(not NaN or infinite\), got nan"),
        ({"channel": "indoor"}, r"channel must be one of \['clean', 'ism', 'rml2016', 'rml2016-compat', 'wireless'\]"),
        ({"rolloff": 0.0}, r"rolloff must be in \(0, 1\]"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_the_argument(kwargs: dict, pattern: str) -> None:
    arguments = {"classes": ["QPSK"], "length": 128} | kwargs
    with pytest.raises(ValueError, match=pattern):
        Synthesizer(**arguments)


def test_bad_generate_arguments_are_rejected() -> None:
    synth = Synthesizer(["QPSK"], length=32)
    with pytest.raises(ValueError, match=r"snr_db must be a finite number of dB \(not NaN"):
        synth.generate([0], snr_db=float("nan"))
    with pytest.raises(ValueError, match="indices must be >= 0"):
        synth.generate([-1])
