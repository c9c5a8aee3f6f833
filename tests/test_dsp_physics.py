"""Physics checks of the synthesizer: symbol error rates, SNR and occupied bandwidth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import brentq
from scipy.signal import welch
from scipy.special import erfc

from rfml.dsp import CLASSES_RML2016A, CLASSES_RML2018A, Synthesizer, constellation, esn0_db, rng
from rfml.dsp.channel import awgn
from rfml.dsp.filters import rrc_taps
from rfml.dsp.modulate import RRC_SPAN, pulse_shape


def q_function(x: np.ndarray) -> np.ndarray:
    return 0.5 * erfc(x / math.sqrt(2))


def closed_form_ser(name: str, esn0: float) -> float:
    """Exact AWGN symbol error rate of coherent ML detection at linear Es/N0."""
    if name == "BPSK":
        return float(q_function(math.sqrt(2 * esn0)))
    if name == "QPSK":
        q = q_function(math.sqrt(esn0))
        return float(2 * q - q * q)
    order = {"16QAM": 16, "64QAM": 64}[name]
    side = math.sqrt(order)
    p_axis = 2 * (1 - 1 / side) * q_function(math.sqrt(3 * esn0 / (order - 1)))
    return float(1 - (1 - p_axis) ** 2)


# Es/N0 (dB) points where the SER lies between about 1e-1 and 1e-3.
SER_POINTS = {
    "BPSK": (0.5, 4.0, 6.5),
    "QPSK": (5.0, 8.0, 10.0),
    "16QAM": (13.0, 15.5, 17.5),
    "64QAM": (19.5, 22.0, 23.5),
}
SHORT_NAME = {"BPSK": "psk2", "QPSK": "qpsk", "16QAM": "qam16", "64QAM": "qam64"}


@pytest.mark.parametrize("name", list(SER_POINTS))
def test_awgn_symbol_error_rate_matches_closed_form(name: str) -> None:
    sps, rolloff = 4, 0.35
    points = constellation(SHORT_NAME[name])
    mf = rrc_taps(rolloff, sps, RRC_SPAN)
    edge = RRC_SPAN * sps  # samples cut at each end so the frame holds only steady-state signal
    for point, esn0 in enumerate(SER_POINTS[name]):
        expected = closed_form_ser(name, 10 ** (esn0 / 10))
        assert 1e-3 <= expected <= 1e-1
        frames = 64
        per_frame = math.ceil(2000 / expected / frames) + 2 * RRC_SPAN
        gen = torch.Generator().manual_seed(point)
        labels = torch.randint(points.numel(), (frames, per_frame), generator=gen)
        signal = pulse_shape(points[labels], sps, rolloff)[:, edge:-edge]
        keys = rng.example_keys(100 + point, torch.arange(frames))
        snr_db = torch.full((frames,), esn0 - 10 * math.log10(sps))  # the documented SNR definition
        assert esn0_db(float(snr_db[0]), sps) == pytest.approx(esn0)
        iq = torch.view_as_real(signal).transpose(1, 2).contiguous()
        noisy = awgn(iq, keys, snr_db)
        filtered = F.conv1d(noisy.reshape(-1, 1, noisy.shape[-1]), mf.view(1, 1, -1)).view(frames, 2, -1)
        # symbol k peaks at k*sps + (taps-1)/2 - edge; the matched filter adds another (taps-1)/2
        first = RRC_SPAN  # the first symbol whose whole pulse lies in the cropped frame
        centres = filtered[:, :, first * sps - edge :: sps]
        count = min(centres.shape[-1], per_frame - 2 * RRC_SPAN)
        received = torch.complex(centres[:, 0, :count], centres[:, 1, :count]) / math.sqrt(sps)
        decided = (received[..., None] - points).abs().argmin(-1)
        errors = int((decided != labels[:, first : first + count]).sum())
        measured = errors / decided.numel()
        assert errors >= 500, f"{name} at {esn0} dB counted only {errors} errors"
        assert measured == pytest.approx(expected, rel=0.10), f"{name} Es/N0 {esn0} dB"


@pytest.mark.parametrize("snr_db", [-10, 0, 10])
def test_measured_snr_matches_requested_for_every_class(snr_db: int) -> None:
    classes = sorted(set(CLASSES_RML2016A) | set(CLASSES_RML2018A))
    synth = Synthesizer(classes, length=128, channel="rml2016", seed=5)
    num_classes = len(classes)
    batch = synth.generate(range(2000 * num_classes), snr_db=snr_db, return_clean=True)
    noise = batch["x"] - batch["clean"]
    measured = 10 * torch.log10(batch["clean"].pow(2).sum((1, 2)) / noise.pow(2).sum((1, 2)))
    per_class = torch.zeros(num_classes).index_add_(0, batch["y"], measured.double().float()) / 2000
    assert torch.bincount(batch["y"]).tolist() == [2000] * num_classes
    worst = int((per_class - snr_db).abs().argmax())
    assert (per_class - snr_db).abs().max() < 0.2, f"{classes[worst]}: {per_class[worst]:.3f} dB"
    assert (batch["snr"] == snr_db).all()


def test_gnuradio_compat_snr_is_twice_the_label() -> None:
    """RadioML 2016 used the noise amplitude 10**(-snr/10) as a standard deviation."""
    synth = Synthesizer(["QPSK", "8PSK"], length=128, channel="rml2016-compat", seed=2)
    for label in (-6, 4):
        batch = synth.generate(range(2000), snr_db=label, return_clean=True)
        noise = batch["x"] - batch["clean"]
        measured = 10 * torch.log10(batch["clean"].pow(2).sum((1, 2)) / noise.pow(2).sum((1, 2)))
        assert float(measured.mean()) == pytest.approx(2 * label, abs=0.2)
        # L1 frame normalisation: each noisy frame's |x| sums to one
        magnitude = batch["x"].pow(2).sum(1).sqrt().sum(1)
        torch.testing.assert_close(magnitude, torch.ones(2000), rtol=1e-4, atol=0)


def rrc_occupied_bandwidth(rolloff: float, fraction: float = 0.99) -> float:
    """Closed-form ``fraction`` power bandwidth of an RRC-shaped signal, in symbol rates.

    The power spectrum is the raised cosine; the power beyond the roll-off angle ``v`` from the band
    edge is ``rolloff / (2 pi) * (v - sin v)`` of the total on each side.
    """
    tail = (1 - fraction) / 2
    v = brentq(lambda v: rolloff / (2 * math.pi) * (v - math.sin(v)) - tail, 1e-9, math.pi)
    return (1 + rolloff) - 2 * rolloff * v / math.pi


@pytest.mark.parametrize("rolloff", [0.2, 0.35, 0.5])
def test_rrc_power_bandwidth(rolloff: float) -> None:
    """(1 + rolloff) * symbol_rate is the full RRC band: it must hold >= 99.5 % of the power, and the
    99 % power bandwidth must match the closed form for the raised-cosine spectrum within 5 %
    (the 99 % bandwidth itself is below (1 + rolloff) * Rs: 1.167 Rs at roll-off 0.35)."""
    sps = 8
    synth = Synthesizer(["QPSK"], length=4096, samples_per_symbol=sps, channel="clean", rolloff=rolloff)
    clean = synth.generate(range(64), return_clean=True)["clean"].numpy()
    iq = clean[:, 0] + 1j * clean[:, 1]
    freqs, psd = welch(iq, fs=sps, nperseg=1024, return_onesided=False, axis=-1)  # fs in symbol rates
    psd = psd.mean(0)
    order = np.argsort(freqs)
    freqs, psd = freqs[order], psd[order]
    cumulative = np.cumsum(psd) / psd.sum()
    low = np.interp(0.005, cumulative, freqs)
    high = np.interp(0.995, cumulative, freqs)
    assert high - low == pytest.approx(rrc_occupied_bandwidth(rolloff), rel=0.05)
    inside = np.abs(freqs) <= (1 + rolloff) / 2
    assert psd[inside].sum() / psd.sum() >= 0.995
