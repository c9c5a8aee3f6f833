"""Closed-form references and the measurements that check the synthesizer against them.

Used by the tests and by ``benchmarks/synth_physics.py``; handy for plotting theory next to data.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import brentq
from scipy.signal import welch
from scipy.special import erfc

from rfml.dsp import rng
from rfml.dsp.channel import awgn
from rfml.dsp.filters import rrc_taps
from rfml.dsp.modulate import RRC_SPAN, constellation, pulse_shape

SER_CONSTELLATIONS = {"BPSK": "psk2", "QPSK": "qpsk", "16QAM": "qam16", "64QAM": "qam64"}
# Es/N0 (dB) points where each closed-form SER lies between about 1e-1 and 1e-3.
SER_CHECK_POINTS = {
    "BPSK": (0.5, 4.0, 6.5),
    "QPSK": (5.0, 8.0, 10.0),
    "16QAM": (13.0, 15.5, 17.5),
    "64QAM": (19.5, 22.0, 23.5),
}


def _q(x: float) -> float:
    return 0.5 * erfc(x / math.sqrt(2))


def symbol_error_rate(name: str, esn0_db: float) -> float:
    """Exact AWGN symbol error rate of coherent ML detection: BPSK, QPSK (Gray), square 16/64QAM."""
    esn0 = 10 ** (esn0_db / 10)
    if name == "BPSK":
        return _q(math.sqrt(2 * esn0))
    if name == "QPSK":
        q = _q(math.sqrt(esn0))
        return 2 * q - q * q
    if name in ("16QAM", "64QAM"):
        order = int(name[:-3])
        per_axis = 2 * (1 - 1 / math.sqrt(order)) * _q(math.sqrt(3 * esn0 / (order - 1)))
        return 1 - (1 - per_axis) ** 2
    raise ValueError(f"name must be one of {sorted(SER_CONSTELLATIONS)}, got {name!r}")


def measure_symbol_error_rate(
    name: str,
    esn0_db: float,
    min_errors: int = 2000,
    samples_per_symbol: int = 4,
    rolloff: float = 0.35,
    seed: int = 0,
) -> tuple[float, int]:
    """(SER, errors) of RRC-shaped symbols through :func:`rfml.dsp.channel.awgn` at the per-sample
    SNR that the documented definition maps to ``esn0_db``, with a matched filter, symbol-centre
    sampling and nearest-point decisions. Draws enough symbols for about ``min_errors`` errors."""
    sps = samples_per_symbol
    points = constellation(SER_CONSTELLATIONS[name])
    expected = symbol_error_rate(name, esn0_db)
    frames = 64
    per_frame = math.ceil(min_errors / expected / frames) + 2 * RRC_SPAN
    labels = torch.randint(points.numel(), (frames, per_frame), generator=torch.Generator().manual_seed(seed))
    edge = RRC_SPAN * sps  # cut the ramps at both ends: the frame holds only steady-state signal
    iq = pulse_shape(points[labels], sps, rolloff)[:, :, edge:-edge]
    snr_db = torch.full((frames,), esn0_db - 10 * math.log10(sps))
    noisy = awgn(iq, rng.example_keys(1000 + seed, torch.arange(frames)), snr_db)
    matched = rrc_taps(rolloff, sps, RRC_SPAN).view(1, 1, -1)
    filtered = F.conv1d(noisy.reshape(-1, 1, noisy.shape[-1]), matched).view(frames, 2, -1)
    # symbol k peaks at k*sps + (taps-1)/2 - edge; the matched filter adds another (taps-1)/2
    first = RRC_SPAN  # the first symbol whose whole pulse lies inside the cut frame
    centres = filtered[:, :, first * sps - edge :: sps]
    count = min(centres.shape[-1], per_frame - 2 * RRC_SPAN)
    received = torch.complex(centres[:, 0, :count], centres[:, 1, :count]) / math.sqrt(sps)
    decided = (received[..., None] - points).abs().argmin(-1)
    errors = int((decided != labels[:, first : first + count]).sum())
    return errors / decided.numel(), errors


def rrc_occupied_bandwidth(rolloff: float, fraction: float = 0.99) -> float:
    """Closed-form ``fraction`` power bandwidth of an RRC-shaped signal, in symbol rates.

    The power spectrum is the raised cosine; beyond roll-off angle ``v`` from the band edge lies
    ``rolloff / (2 pi) * (v - sin v)`` of the power on each side. At roll-off 0.35 the 99 % band is
    1.167 Rs, below the full (1 + rolloff) Rs band that holds all of it.
    """
    tail = (1 - fraction) / 2
    v = brentq(lambda v: rolloff / (2 * math.pi) * (v - math.sin(v)) - tail, 1e-12, math.pi)
    return (1 + rolloff) - 2 * rolloff * v / math.pi


def power_spectrum(iq: torch.Tensor, sample_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Welch power spectrum of the examples ``iq [B, 2, L]``, averaged over examples, sorted by
    frequency: ``(freqs, psd)``."""
    data = iq.numpy()
    segment = min(1024, data.shape[-1])
    freqs, psd = welch(data[:, 0] + 1j * data[:, 1], fs=sample_rate, nperseg=segment, return_onesided=False)
    order = np.argsort(freqs)
    return freqs[order], psd.mean(0)[order]


def occupied_bandwidth(freqs: np.ndarray, psd: np.ndarray, fraction: float = 0.99) -> float:
    """Width of the band between the ``(1 - fraction) / 2`` and ``(1 + fraction) / 2`` power quantiles."""
    cumulative = np.cumsum(psd) / psd.sum()
    tail = (1 - fraction) / 2
    return float(np.interp(1 - tail, cumulative, freqs) - np.interp(tail, cumulative, freqs))


def power_share_within(freqs: np.ndarray, psd: np.ndarray, half_band: float) -> float:
    """Share of the power within ``+-half_band`` of DC."""
    return float(psd[np.abs(freqs) <= half_band].sum() / psd.sum())


def measured_snr_db(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-example ``10 log10(P_clean / P(x - clean))`` of a batch generated with ``return_clean``."""
    noise = batch["x"] - batch["clean"]
    return 10 * torch.log10(batch["clean"].pow(2).sum((1, 2)) / noise.pow(2).sum((1, 2)))
