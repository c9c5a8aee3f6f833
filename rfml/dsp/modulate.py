"""Batched digital and analog modulators producing baseband IQ at unit average power.

Every modulator takes per-example keys (see :mod:`rfml.dsp.rng`) and returns real ``[B, 2, n]``
(row 0 = I, row 1 = Q), the layout the channel and the data contract use.
Digital: linear constellations with root-raised-cosine shaping, offset QPSK, and continuous-phase
FSK (CPFSK, GFSK, GMSK). Analog: AM (DSB/SSB, with or without carrier) and FM from a band-limited,
speech-like random message with silent stretches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from rfml.dsp import rng
from rfml.dsp.filters import gaussian_frequency_pulse, rrc_taps, upsample_fir
from rfml.dsp.rng import Stream

# --------------------------------------------------------------------------------------------------
# Constellations, indexed by bit label (point ``k`` carries the bits of ``k``).


def gray_code(n: np.ndarray) -> np.ndarray:
    return n ^ (n >> 1)


def _unit_energy(points: np.ndarray) -> torch.Tensor:
    points = points / np.sqrt(np.mean(np.abs(points) ** 2))
    return torch.from_numpy(points.astype(np.complex64))


def psk_points(order: int, offset_rad: float = 0.0) -> torch.Tensor:
    """Gray-mapped M-PSK: neighbouring phases differ in one bit."""
    k = np.arange(order)
    points = np.empty(order, dtype=np.complex128)
    points[gray_code(k)] = np.exp(1j * (2 * np.pi * k / order + offset_rad))
    return _unit_energy(points)


def pam_points(order: int, unipolar: bool = False) -> torch.Tensor:
    """Gray-mapped M-PAM (bipolar levels) or M-ASK (unipolar levels 0 .. M-1, OOK when M = 2)."""
    k = np.arange(order)
    levels = k.astype(float) if unipolar else 2.0 * k - (order - 1)
    points = np.empty(order, dtype=np.complex128)
    points[gray_code(k)] = levels
    return _unit_energy(points)


def qam_points(order: int) -> torch.Tensor:
    """M-QAM. Square orders are Gray-mapped per axis; cross orders (32, 128) drop the corners of
    the next square grid and are labelled in raster order (no exact Gray map exists for them)."""
    bits = round(math.log2(order))
    if 2**bits != order:
        raise ValueError(f"QAM order must be a power of two, got {order}")
    if bits % 2 == 0:
        side = 2 ** (bits // 2)
        k = np.arange(side)
        level = 2.0 * k - (side - 1)
        gi, gq = np.meshgrid(gray_code(k), gray_code(k), indexing="ij")
        li, lq = np.meshgrid(level, level, indexing="ij")
        points = np.empty(order, dtype=np.complex128)
        points[(gi << (bits // 2)) | gq] = li + 1j * lq
        return _unit_energy(points)
    side = 3 * 2 ** ((bits - 3) // 2)  # 6 for 32-QAM, 12 for 128-QAM
    corner = side // 6  # corner squares removed on each corner
    level = 2.0 * np.arange(side) - (side - 1)
    li, lq = np.meshgrid(level, level, indexing="ij")
    ii, qq = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    far_i = np.minimum(ii, side - 1 - ii) < corner
    far_q = np.minimum(qq, side - 1 - qq) < corner
    keep = ~(far_i & far_q)
    points = (li + 1j * lq)[keep]
    assert points.size == order
    return _unit_energy(points)


# Ring sizes and radii after the DVB-S2 (16/32APSK) and DVB-S2X (64/128APSK) constellations.
_APSK_RINGS: dict[int, tuple[tuple[int, ...], tuple[float, ...]]] = {
    16: ((4, 12), (1.0, 2.57)),
    32: ((4, 12, 16), (1.0, 2.53, 4.30)),
    64: ((4, 12, 20, 28), (1.0, 2.4, 4.3, 7.0)),
    128: ((16, 16, 16, 16, 16, 48), (1.0, 1.72, 2.12, 2.68, 3.25, 3.82)),
}


def apsk_points(order: int) -> torch.Tensor:
    """Amplitude-phase-shift keying rings; labels run ring by ring, phase order within a ring
    (rings of 12, 20 and 28 points admit no Gray code, so the labels are not Gray)."""
    if order not in _APSK_RINGS:
        raise ValueError(f"APSK order must be one of {sorted(_APSK_RINGS)}, got {order}")
    sizes, radii = _APSK_RINGS[order]
    rings = [r * np.exp(1j * (2 * np.pi * np.arange(n) / n + np.pi / n)) for n, r in zip(sizes, radii, strict=True)]
    return _unit_energy(np.concatenate(rings))


# --------------------------------------------------------------------------------------------------
# Modulation specifications and the name sets of the RadioML datasets.


@dataclass(frozen=True)
class Modulation:
    """How to synthesise one class. ``kind`` is linear, oqpsk, fsk or analog."""

    kind: str
    points: str = ""  # constellation for linear kinds, e.g. "psk8", "qam16", "apsk32", "ask4"
    modulation_index: float = 0.5  # FSK: h (the phase advances by pi*h per symbol)
    bt: float = 0.0  # FSK: Gaussian bandwidth-time product; 0 means rectangular (CPFSK)
    analog: str = ""  # am-dsb-wc, am-dsb-sc, am-ssb-wc, am-ssb-sc, fm


def constellation(name: str) -> torch.Tensor:
    """Constellation by short name: ``psk{M}``, ``qpsk``, ``pam{M}``, ``ask{M}``, ``qam{M}``, ``apsk{M}``."""
    if name == "qpsk":
        return psk_points(4, math.pi / 4)
    family = name.rstrip("0123456789")
    order = int(name[len(family) :])
    if family == "psk":
        return psk_points(order)
    if family == "pam":
        return pam_points(order)
    if family == "ask":
        return pam_points(order, unipolar=True)
    if family == "qam":
        return qam_points(order)
    if family == "apsk":
        return apsk_points(order)
    raise ValueError(f"unknown constellation {name!r}")


# GFSK in the RadioML 2016 generator: BT 0.35, sensitivity 0.1 rad/sample at 8 samples/symbol,
# i.e. modulation index h = 0.1 * 8 / pi.
MODULATIONS: dict[str, Modulation] = {
    # RadioML 2016.10a / 10b names
    "8PSK": Modulation("linear", "psk8"),
    "AM-DSB": Modulation("analog", analog="am-dsb-wc"),
    "AM-SSB": Modulation("analog", analog="am-ssb-sc"),
    "BPSK": Modulation("linear", "psk2"),
    "CPFSK": Modulation("fsk", modulation_index=0.5),
    "GFSK": Modulation("fsk", modulation_index=0.8 / math.pi, bt=0.35),
    "PAM4": Modulation("linear", "pam4"),
    "QAM16": Modulation("linear", "qam16"),
    "QAM64": Modulation("linear", "qam64"),
    "QPSK": Modulation("linear", "qpsk"),
    "WBFM": Modulation("analog", analog="fm"),
    # RadioML 2018.01a names (BPSK, QPSK, 8PSK shared with 2016)
    "OOK": Modulation("linear", "ask2"),
    "4ASK": Modulation("linear", "ask4"),
    "8ASK": Modulation("linear", "ask8"),
    "16PSK": Modulation("linear", "psk16"),
    "32PSK": Modulation("linear", "psk32"),
    "16APSK": Modulation("linear", "apsk16"),
    "32APSK": Modulation("linear", "apsk32"),
    "64APSK": Modulation("linear", "apsk64"),
    "128APSK": Modulation("linear", "apsk128"),
    "16QAM": Modulation("linear", "qam16"),
    "32QAM": Modulation("linear", "qam32"),
    "64QAM": Modulation("linear", "qam64"),
    "128QAM": Modulation("linear", "qam128"),
    "256QAM": Modulation("linear", "qam256"),
    "AM-SSB-WC": Modulation("analog", analog="am-ssb-wc"),
    "AM-SSB-SC": Modulation("analog", analog="am-ssb-sc"),
    "AM-DSB-WC": Modulation("analog", analog="am-dsb-wc"),
    "AM-DSB-SC": Modulation("analog", analog="am-dsb-sc"),
    "FM": Modulation("analog", analog="fm"),
    "GMSK": Modulation("fsk", modulation_index=0.5, bt=0.3),
    "OQPSK": Modulation("oqpsk", "qpsk"),
}


# --------------------------------------------------------------------------------------------------
# Digital modulators.

RRC_SPAN = 12  # root-raised-cosine length in symbols


def _phasor_iq(phase: torch.Tensor) -> torch.Tensor:
    """``exp(1j * phase)`` for real ``phase [B, n]`` as IQ ``[B, 2, n]``."""
    return torch.stack([torch.cos(phase), torch.sin(phase)], dim=1)


def pulse_shape(
    symbols: torch.Tensor, samples_per_symbol: int, rolloff: float, span_symbols: int = RRC_SPAN
) -> torch.Tensor:
    """RRC-shape complex ``symbols [B, N]`` -> IQ ``[B, 2, (N - 1) * sps + taps]``, full convolution.

    The taps are scaled by ``sqrt(samples_per_symbol)``, so unit-energy symbols give unit average
    power. Symbol ``k`` peaks at sample ``k * sps + (taps - 1) / 2``.
    """
    taps = rrc_taps(rolloff, samples_per_symbol, span_symbols) * math.sqrt(samples_per_symbol)
    rows = torch.view_as_real(symbols).transpose(1, 2).reshape(2 * symbols.shape[0], -1)
    return upsample_fir(rows, taps, samples_per_symbol).view(symbols.shape[0], 2, -1)


def linear(
    keys: torch.Tensor,
    points: torch.Tensor,
    num_samples: int,
    samples_per_symbol: int,
    rolloff: float,
    row_offset: torch.Tensor | None = None,
    row_order: torch.Tensor | None = None,
) -> torch.Tensor:
    """Random symbols from ``points``, RRC-shaped; unit average power when the points have unit energy.

    Rows may use different constellations: ``points`` is then several tables end to end and row ``b``
    draws from ``points[row_offset[b] : row_offset[b] + row_order[b]]``.
    """
    num_symbols = -(-num_samples // samples_per_symbol) + RRC_SPAN + 1
    if row_order is None:
        labels = rng.integers(keys, Stream.SYMBOLS, num_symbols, points.numel())
    else:
        labels = rng.integers(keys, Stream.SYMBOLS, num_symbols, row_order) + row_offset.to(keys.device)[:, None]
    shaped = pulse_shape(points.to(keys.device)[labels], samples_per_symbol, rolloff)
    start = RRC_SPAN * samples_per_symbol + 1  # skip the filter's start-up transient
    return shaped[:, :, start : start + num_samples]


def offset_qpsk(keys: torch.Tensor, num_samples: int, samples_per_symbol: int, rolloff: float) -> torch.Tensor:
    """QPSK with the quadrature rail delayed by half a symbol."""
    delay = samples_per_symbol // 2
    x = linear(keys, constellation("qpsk"), num_samples + delay, samples_per_symbol, rolloff)
    return torch.stack([x[:, 0, delay:], x[:, 1, :num_samples]], dim=1)


def continuous_phase_fsk(
    keys: torch.Tensor,
    num_samples: int,
    samples_per_symbol: int,
    modulation_index: float,
    bt: float = 0.0,
) -> torch.Tensor:
    """Binary continuous-phase FSK; ``bt > 0`` adds Gaussian pulse shaping (GFSK, GMSK)."""
    sps = samples_per_symbol
    if bt > 0:
        pulse = gaussian_frequency_pulse(bt, sps)
    else:
        pulse = torch.full((sps,), 1.0 / sps)
    num_symbols = -(-num_samples // sps) + pulse.numel() // sps + 2
    bits = rng.integers(keys, Stream.SYMBOLS, num_symbols, 2)
    frequency = upsample_fir((2.0 * bits - 1.0).float(), pulse, sps)
    start = pulse.numel()
    phase = torch.cumsum(frequency[:, start : start + num_samples] * (math.pi * modulation_index), dim=1)
    return _phasor_iq(phase)


# --------------------------------------------------------------------------------------------------
# Analog modulators.

# Speech band 300 Hz .. 3.4 kHz at the 200 kHz sample rate of RadioML 2016, as fractions of fs.
SPEECH_BAND = (300.0 / 200e3, 3400.0 / 200e3)


def speech_like_message(
    keys: torch.Tensor,
    num_samples: int,
    band: tuple[float, float] = SPEECH_BAND,
    silence_fraction: float = 0.3,
    mean_segment: float | None = None,
    floor_db: float = -40.0,
) -> torch.Tensor:
    """Real ``[B, n]`` message: band-limited noise with a speech-like spectral tilt, unit RMS while
    talking, gated by random talk spurts and silences (mean durations ``mean_segment`` samples)."""
    b = keys.shape[0]
    device = keys.device
    white = rng.normal(keys, Stream.MESSAGE, num_samples)
    spectrum = torch.fft.rfft(white, dim=1)
    f = torch.fft.rfftfreq(num_samples, device=device)
    low, high = band
    # smooth band edges and a 1/f tilt above the low edge, like the long-term speech spectrum
    shape = torch.sigmoid((f - low) / (0.15 * low)) * torch.sigmoid((high - f) / (0.05 * high))
    shape = shape * torch.sqrt(low / torch.clamp(f, min=low))
    message = torch.fft.irfft(spectrum * shape, n=num_samples, dim=1)
    message = message / message.pow(2).mean(dim=1, keepdim=True).sqrt().clamp_min(1e-12)

    mean_segment = mean_segment or max(num_samples / 3.0, 16.0)
    num_segments = 2 * math.ceil(num_samples / mean_segment) + 4
    u = rng.uniform(keys, Stream.SPEECH_GATE, num_segments + 1)
    durations = -torch.log(u[:, 1:]) * mean_segment
    # alternate talk and silence; the silence segments are scaled so they fill silence_fraction
    talk_scale = 2.0 * (1.0 - silence_fraction)
    silence_scale = 2.0 * silence_fraction
    parity = torch.arange(num_segments, device=device) % 2
    durations = durations * torch.where(parity == 0, talk_scale, silence_scale)
    ends = torch.cumsum(durations, dim=1) - u[:, :1] * durations[:, :1] * 2  # random phase into the pattern
    t = torch.arange(num_samples, device=device, dtype=torch.float32).expand(b, -1).contiguous()
    segment = torch.searchsorted(ends.contiguous(), t)
    talking = (segment % 2 == 0).float()
    # soft on/off so gating adds no clicks: a moving average over 2 * ramp + 1 samples
    ramp = max(num_samples // 64, 1)
    running = F.pad(torch.cumsum(F.pad(talking, (ramp + 1, ramp), mode="replicate"), dim=1), (1, 0))
    envelope = (running[:, 2 * ramp + 2 :] - running[:, 1 : -2 * ramp - 1]) / (2 * ramp + 1)
    floor = 10 ** (floor_db / 20)
    return message * (floor + (1 - floor) * envelope)


def analog(message: torch.Tensor, kind: str, am_index: float = 0.5, fm_deviation: float = 0.125) -> torch.Tensor:
    """AM (``am-dsb-wc``, ``am-dsb-sc``, ``am-ssb-wc``, ``am-ssb-sc``) or ``fm`` of a real
    ``message [B, n]`` (see :func:`speech_like_message`). ``fm_deviation`` is the RMS frequency
    deviation in cycles per sample."""
    num_samples = message.shape[1]
    if kind == "fm":
        return _phasor_iq(torch.cumsum(message * (2 * math.pi * fm_deviation), dim=1))
    if kind.startswith("am-ssb"):
        spectrum = torch.fft.fft(message, dim=1)
        f = torch.fft.fftfreq(num_samples, device=message.device)
        analytic = torch.fft.ifft(spectrum * (2.0 * (f > 0) + (f == 0)), dim=1)  # upper sideband
        iq = torch.view_as_real(analytic.to(torch.complex64)).transpose(1, 2).contiguous()
    elif kind.startswith("am-dsb"):
        iq = torch.stack([message, torch.zeros_like(message)], dim=1)
    else:
        raise ValueError(f"unknown analog modulation {kind!r}")
    if kind.endswith("-wc"):
        iq = iq * am_index
        iq[:, 0] += 1.0
    return iq


def modulate(
    keys: torch.Tensor,
    modulation: Modulation,
    num_samples: int,
    samples_per_symbol: int,
    rolloff: float,
) -> torch.Tensor:
    """Dispatch to the modulator of ``modulation``; IQ ``[B, 2, num_samples]``."""
    class_index = torch.zeros(keys.shape[0], dtype=torch.int64, device=keys.device)
    return modulate_classes(keys, class_index, [modulation], num_samples, samples_per_symbol, rolloff)


def modulate_classes(
    keys: torch.Tensor,
    class_index: torch.Tensor,
    modulations: list[Modulation],
    num_samples: int,
    samples_per_symbol: int,
    rolloff: float,
) -> torch.Tensor:
    """Modulate a mixed batch: row ``b`` uses ``modulations[class_index[b]]``.

    Rows are grouped by modulator, not by class: every linear constellation shares one call through a
    per-row constellation table, all analog rows share one message generator. Each row's output
    depends only on its key and its modulation, never on the rest of the batch.
    """
    out = torch.empty(keys.shape[0], 2, num_samples, device=keys.device)
    present = torch.unique(class_index).tolist()

    def rows_of(classes: list[int]) -> torch.Tensor:
        lookup = torch.zeros(len(modulations), dtype=torch.bool, device=keys.device)
        lookup[classes] = True
        return torch.nonzero(lookup[class_index]).squeeze(1)

    linear_classes = [c for c in present if modulations[c].kind == "linear"]
    if linear_classes:
        tables = [constellation(modulations[c].points) for c in linear_classes]
        offset = torch.zeros(len(modulations), dtype=torch.int64)
        order = torch.ones(len(modulations), dtype=torch.int64)
        offset[linear_classes] = torch.tensor(np.cumsum([0] + [t.numel() for t in tables[:-1]]), dtype=torch.int64)
        order[linear_classes] = torch.tensor([t.numel() for t in tables])
        rows = rows_of(linear_classes)
        row_class = class_index[rows].cpu()
        out[rows] = linear(
            keys[rows], torch.cat(tables), num_samples, samples_per_symbol, rolloff, offset[row_class], order[row_class]
        )
    analog_classes = [c for c in present if modulations[c].kind == "analog"]
    if analog_classes:
        rows = rows_of(analog_classes)
        message = speech_like_message(keys[rows], num_samples)
        for c in analog_classes:
            mine = torch.nonzero(class_index[rows] == c).squeeze(1)
            out[rows[mine]] = analog(message[mine], modulations[c].analog)
    for c in present:
        modulation = modulations[c]
        if modulation.kind in ("linear", "analog"):
            continue
        rows = rows_of([c])
        if modulation.kind == "oqpsk":
            out[rows] = offset_qpsk(keys[rows], num_samples, samples_per_symbol, rolloff)
        elif modulation.kind == "fsk":
            out[rows] = continuous_phase_fsk(
                keys[rows], num_samples, samples_per_symbol, modulation.modulation_index, modulation.bt
            )
        else:
            raise ValueError(f"unknown modulation kind {modulation.kind!r}")
    return out
