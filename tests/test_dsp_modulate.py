"""Constellations, pulse shapes and the modulators' power and phase properties."""

from __future__ import annotations

import math

import pytest
import torch

from rfml.dsp import MODULATIONS, constellation, rng
from rfml.dsp.modulate import continuous_phase_fsk, modulate, offset_qpsk, speech_like_message


def as_complex(iq: torch.Tensor) -> torch.Tensor:
    return torch.complex(iq[:, 0].double(), iq[:, 1].double())


ALL_CONSTELLATIONS = [
    "psk2", "qpsk", "psk8", "psk16", "psk32", "pam4", "ask2", "ask4", "ask8",
    "qam16", "qam32", "qam64", "qam128", "qam256", "apsk16", "apsk32", "apsk64", "apsk128",
]  # fmt: skip
GRAY = ["psk2", "qpsk", "psk8", "psk16", "psk32", "pam4", "ask4", "ask8", "qam16", "qam64", "qam256"]


@pytest.mark.parametrize("name", ALL_CONSTELLATIONS)
def test_constellation_has_unit_average_energy_and_distinct_points(name: str) -> None:
    points = constellation(name).to(torch.complex128)
    order = int(name.lstrip("apskqmd")) if name != "qpsk" else 4
    assert points.numel() == order
    assert float(points.abs().pow(2).mean()) == pytest.approx(1.0, abs=1e-6)
    distances = (points[:, None] - points[None, :]).abs() + torch.eye(order) * 10
    assert float(distances.min()) > 1e-3


@pytest.mark.parametrize("name", GRAY)
def test_gray_mapping_nearest_neighbours_differ_in_one_bit(name: str) -> None:
    points = constellation(name).to(torch.complex128)
    distances = (points[:, None] - points[None, :]).abs()
    distances.fill_diagonal_(float("inf"))
    nearest = distances.min()
    pairs = torch.nonzero(distances < nearest * (1 + 1e-4))
    assert len(pairs) >= points.numel()  # every point has at least one nearest neighbour pair
    for a, b in pairs.tolist():
        assert bin(a ^ b).count("1") == 1, f"{name}: labels {a} and {b} are neighbours"


def test_square_qam_and_psk_geometry() -> None:
    qam16 = constellation("qam16").to(torch.complex128) * math.sqrt(10)  # levels +-1, +-3
    assert sorted({round(v) for v in qam16.real.tolist()}) == [-3, -1, 1, 3]
    psk8 = constellation("psk8")
    torch.testing.assert_close(psk8.abs(), torch.ones(8))


def test_every_modulation_produces_unit_power_frames() -> None:
    keys = rng.example_keys(0, torch.arange(32))
    for name, modulation in MODULATIONS.items():
        x = modulate(keys, modulation, 512, 8, 0.35)
        assert x.shape == (32, 2, 512) and x.dtype == torch.float32
        power = float(x.pow(2).sum(1).mean())
        if modulation.kind == "analog":
            assert 0.2 < power < 3.0, name  # speech-like messages: power varies with silences
        else:
            assert power == pytest.approx(1.0, rel=0.05), name


def test_continuous_phase_fsk_advances_phase_by_pi_h_per_symbol() -> None:
    keys = rng.example_keys(3, torch.arange(16))
    sps, h = 8, 0.5
    x = as_complex(continuous_phase_fsk(keys, 800, sps, h, bt=0.0))
    torch.testing.assert_close(x.abs(), torch.ones_like(x.abs()))  # constant envelope
    per_symbol = torch.angle(x[:, sps:] * x[:, :-sps].conj())  # phase moved over one symbol
    assert float(per_symbol.abs().max()) <= math.pi * h + 1e-3
    # at one alignment (the symbol boundaries) every whole symbol moves the phase by exactly +-pi*h
    exact = [
        bool(torch.allclose(per_symbol[:, o::sps].abs(), torch.tensor(math.pi * h).double(), atol=1e-3))
        for o in range(sps)
    ]
    assert sum(exact) == 1


def test_offset_qpsk_envelope_avoids_zero_crossings() -> None:
    keys = rng.example_keys(4, torch.arange(64))
    oqpsk = as_complex(offset_qpsk(keys, 4096, 8, 0.35))
    qpsk_name = MODULATIONS["QPSK"]
    qpsk = as_complex(modulate(keys, qpsk_name, 4096, 8, 0.35))
    # the half-symbol offset means I and Q never switch together: far fewer deep envelope nulls
    assert float((oqpsk.abs() < 0.1).float().mean()) < 0.25 * float((qpsk.abs() < 0.1).float().mean())


def test_speech_like_message_is_band_limited_with_silences() -> None:
    keys = rng.example_keys(5, torch.arange(128))
    message = speech_like_message(keys, 8192)
    spectrum = torch.fft.rfft(message, dim=1).abs().pow(2).mean(0)
    freqs = torch.fft.rfftfreq(8192)
    in_band = spectrum[(freqs > 300 / 200e3) & (freqs < 3400 / 200e3)].sum()
    assert float(in_band / spectrum.sum()) > 0.9
    # silent stretches: a good share of short windows hold < -20 dB of the mean power
    windows = message.unfold(1, 64, 64).pow(2).mean(-1)
    quiet = windows < 0.01 * windows.mean(1, keepdim=True)
    assert 0.1 < float(quiet.float().mean()) < 0.6
