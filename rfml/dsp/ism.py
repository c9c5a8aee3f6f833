"""Bluetooth, Zigbee and WiFi bursts seen through the 10 MHz ISM window of Schmidt et al. (INDIN 2017).

The 15 classes, their order and centre frequencies are those of the reference data set (Schmidt et al.; see
the ISM card in ``datasets/``): a receiver tuned to 2426.5 MHz samples 2421.5–2431.5 MHz at 10 MS/s and cuts
vectors of 128 complex samples (12.8 µs).

How a vector is made (all batched, every random number a function of ``(seed, index)``):

1. Each technology is modulated at a rate that is a whole multiple of its symbol or chip rate, over a
   64 µs span (640 output samples) around the vector:

   - Bluetooth: GFSK, 1 Msym/s, BT 0.5, modulation index 0.32, at 20 MS/s;
   - Zigbee (IEEE 802.15.4, 2.4 GHz): 4-bit symbols spread to 32-chip sequences, O-QPSK with half-sine
     chips at 2 Mchip/s (an MSK waveform), at 20 MS/s;
   - WiFi (IEEE 802.11b DSSS): 1 Mbit/s DBPSK or 2 Mbit/s DQPSK symbols spread by the Barker-11 code,
     11 Mchip/s, root-raised-cosine chips of roll-off 1 (22 MHz wide), at 44 MS/s.

   A random sub-symbol timing offset is applied, and a burst envelope (``edge_probability`` of the vectors
   hold a burst's start or its end, with a 1 µs raised-cosine ramp; at least half the vector is on air).
2. The span is moved to the class's centre frequency relative to 2426.5 MHz and band-limited to the window
   by keeping the FFT bins inside ±5 MHz (an ideal anti-alias filter; the offsets are whole bins of the span,
   so the shift is exact), which leaves 640 samples at 10 MS/s. WiFi is 22 MHz wide, so only part of it
   is inside the window.
3. The channel of :mod:`rfml.dsp.channel` (preset ``"ism"``: indoor multipath with Rician fading, carrier
   offset, random phase) is applied and the middle 128 samples are kept.
4. White Gaussian noise is added at the requested SNR, **defined in the signal's own bandwidth**:
   ``SNR = P / (N0 · B)``, where ``P`` is the clean signal's mean power over the vector's on-air samples,
   ``N0`` the noise power density and ``B`` the class's bandwidth inside the window (Bluetooth 1 MHz,
   Zigbee 2 MHz, WiFi the visible part of its 22 MHz, here the whole 10 MHz). The noise power per
   complex sample is therefore ``P · (10 MHz / B) / 10**(SNR/10)``: at the same SNR a Bluetooth vector
   holds 10 dB more noise relative to its power than a WiFi one.
5. The vector (and the clean reference, by the same factor) is scaled to unit mean power, as an AGC would.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from rfml.dsp import rng
from rfml.dsp.channel import ChannelConfig, carrier, channel_preset, multipath_fading
from rfml.dsp.modulate import continuous_phase_fsk, pulse_shape
from rfml.dsp.rng import Stream
from rfml.dsp.synthesizer import snr_db_value

SAMPLE_RATE_HZ = 10e6
CENTRE_MHZ = 2426.5
LENGTH = 128
SNRS_ISM: list[int] = list(range(-20, 21, 2))


@dataclass(frozen=True)
class ISMClass:
    """One class of the reference set: its technology, centre frequency and nominal width (MHz)."""

    name: str
    technology: str
    centre_mhz: float
    width_mhz: float

    @property
    def offset_hz(self) -> float:
        """Centre frequency relative to the window centre (2426.5 MHz)."""
        return (self.centre_mhz - CENTRE_MHZ) * 1e6

    @property
    def range_mhz(self) -> tuple[float, float]:
        return self.centre_mhz - self.width_mhz / 2, self.centre_mhz + self.width_mhz / 2

    def visible_range_mhz(self) -> tuple[float, float]:
        """The part of the class's band inside the 10 MHz window."""
        lo, hi = self.range_mhz
        half = SAMPLE_RATE_HZ / 2e6
        return max(lo, CENTRE_MHZ - half), min(hi, CENTRE_MHZ + half)

    @property
    def visible_width_mhz(self) -> float:
        lo, hi = self.visible_range_mhz()
        return hi - lo


ISM_CLASSES: list[ISMClass] = (
    [ISMClass(f"BT-{mhz}", "Bluetooth", float(mhz), 1.0) for mhz in range(2422, 2432)]
    + [ISMClass(f"WiFi-{mhz}", "WiFi", float(mhz), 22.0) for mhz in (2422, 2427, 2432)]
    + [ISMClass(f"Zigbee-{mhz}", "Zigbee", float(mhz), 2.0) for mhz in (2425, 2430)]
)
CLASSES_ISM: list[str] = [c.name for c in ISM_CLASSES]
TECHNOLOGIES: tuple[str, ...] = ("Bluetooth", "WiFi", "Zigbee")

SPAN = 640  # output samples (64 µs) modulated around each vector; every class offset is a whole bin of it
_RAMP_S = 1e-6

# IEEE 802.15.4 (2.4 GHz O-QPSK PHY) chip sequence of data symbol 0, chips c0..c31. Symbols 1..7 are it
# rotated right by 4, 8, ..., 28 chips; symbols 8..15 are symbols 0..7 with every odd-indexed chip inverted.
_ZIGBEE_SYMBOL0 = "11011001110000110101001000101110"
_BARKER11 = (1, -1, 1, 1, -1, 1, 1, 1, -1, -1, -1)


def zigbee_chip_table() -> torch.Tensor:
    """``[16, 32]`` chips (±1) of the 16 data symbols of the 802.15.4 2.4 GHz PHY."""
    base = np.array([1.0 if c == "1" else -1.0 for c in _ZIGBEE_SYMBOL0])
    first = np.stack([np.roll(base, 4 * k) for k in range(8)])
    odd = np.where(np.arange(32) % 2 == 1, -1.0, 1.0)
    return torch.from_numpy(np.concatenate([first, first * odd]).astype(np.float32))


def _pick(iq: torch.Tensor, offset: torch.Tensor, length: int) -> torch.Tensor:
    """Per-row slices ``iq[b, :, offset[b] : offset[b] + length]``: a random sub-symbol timing."""
    index = (offset.view(-1, 1) + torch.arange(length, device=iq.device)).unsqueeze(1).expand(-1, 2, -1)
    return torch.gather(iq, 2, index)


def bluetooth(keys: torch.Tensor, samples: int, rate_hz: float) -> torch.Tensor:
    """GFSK (1 Msym/s, BT 0.5, h 0.32), unit power, ``[B, 2, samples]`` at ``rate_hz``."""
    sps = round(rate_hz / 1e6)
    iq = continuous_phase_fsk(keys, samples + sps, sps, modulation_index=0.32, bt=0.5)
    return _pick(iq, rng.integers(keys, Stream.TIMING, 1, sps)[:, 0], samples)


def zigbee(keys: torch.Tensor, samples: int, rate_hz: float) -> torch.Tensor:
    """802.15.4 O-QPSK with half-sine chips (2 Mchip/s), unit power, ``[B, 2, samples]`` at ``rate_hz``."""
    half = round(rate_hz / 2e6)  # samples per chip; each rail's half-sine pulse lasts two chips
    pulse = torch.sin(math.pi * (torch.arange(2 * half, device=keys.device) + 0.5) / (2 * half))
    pairs = -(-(samples + 4 * half) // (2 * half))  # I/Q chip pairs to cover the span, timing and the Q delay
    symbols = rng.integers(keys, Stream.SYMBOLS, -(-pairs // 16), 16)
    chips = zigbee_chip_table().to(keys.device)[symbols].flatten(1)[:, : 2 * pairs]  # [B, 2 * pairs]
    i_rail = (chips[:, 0::2, None] * pulse).flatten(1)
    q_rail = (chips[:, 1::2, None] * pulse).flatten(1)
    iq = torch.stack((i_rail[:, half:], q_rail[:, :-half]), dim=1)  # Q lags I by one chip
    offset = rng.integers(keys, Stream.TIMING, 1, 2 * half)[:, 0]
    return _pick(iq, offset, samples)


def wifi_dsss(keys: torch.Tensor, samples: int, rate_hz: float) -> torch.Tensor:
    """802.11b DSSS: DBPSK or DQPSK symbols (1 Msym/s) times Barker-11 (11 Mchip/s), RRC roll-off 1."""
    sps = round(rate_hz / 11e6)
    num_symbols = -(-samples // (11 * sps)) + 3  # + start-up, timing offset and filter tail
    qpsk = rng.integers(keys, Stream.PHY_MODE, 1, 2)  # 0: 1 Mbit/s DBPSK, 1: 2 Mbit/s DQPSK
    steps = rng.integers(keys, Stream.SYMBOLS, num_symbols, 4)
    steps = torch.where(qpsk.bool(), steps, 2 * (steps % 2))  # DBPSK moves by 0 or pi only
    phase = torch.cumsum(steps.float(), dim=1) * (math.pi / 2)
    barker = torch.tensor(_BARKER11, dtype=torch.float32, device=keys.device)
    chips = (torch.polar(torch.ones_like(phase), phase)[:, :, None] * barker).flatten(1)
    shaped = pulse_shape(chips, sps, rolloff=1.0)
    start = 12 * sps  # past the filter's start-up: its span is 12 chips
    offset = start + rng.integers(keys, Stream.TIMING, 1, 11 * sps)[:, 0]
    return _pick(shaped, offset, samples)


# technology -> (modulator, native sample rate)
_MODULATORS = {
    "Bluetooth": (bluetooth, 20e6),
    "Zigbee": (zigbee, 20e6),
    "WiFi": (wifi_dsss, 44e6),
}


def _burst_gate(keys: torch.Tensor, times: torch.Tensor, first: float, length: int, probability: float) -> torch.Tensor:
    """Burst envelope ``[B, n]`` at ``times`` (in output samples): on, or switching on or off inside the vector.

    A share ``probability`` of the vectors hold an edge, half of them a start and half an end, placed uniformly
    so that at least half of the ``length`` samples from ``first`` are on air.
    """
    draws = rng.uniform(keys, Stream.BURST, 3)
    edge = draws[:, :1] < probability
    start_edge = draws[:, 1:2] < 0.5
    ramp = _RAMP_S * SAMPLE_RATE_HZ
    # A start ramps up in the first half (less one ramp), an end ramps down in the second half.
    position = first + draws[:, 2:] * (length / 2 - ramp)
    position = torch.where(start_edge, position, position + ramp + length / 2)
    rising = ((times - position) / ramp).clamp(0, 1)
    falling = ((position - times) / ramp + 1).clamp(0, 1)
    shape = torch.where(start_edge, rising, falling)
    gate = 0.5 - 0.5 * torch.cos(math.pi * shape)
    return torch.where(edge, gate, torch.ones_like(gate))


def _to_window(iq: torch.Tensor, offset_hz: torch.Tensor, rate_hz: float) -> torch.Tensor:
    """Shift ``iq [B, 2, n]`` (``n`` samples at ``rate_hz`` spanning SPAN output samples) by ``offset_hz``
    and keep the ±5 MHz band: ``[B, 2, SPAN]`` at 10 MS/s."""
    n = iq.shape[-1]
    spectrum = torch.fft.fft(torch.complex(iq[:, 0], iq[:, 1]), dim=-1)
    bin_hz = rate_hz / n  # = 10 MS/s / SPAN for every technology
    shift = torch.round(offset_hz / bin_hz).to(torch.int64)  # offsets are whole bins (0.5 MHz = 32 bins)
    freq_bins = torch.arange(-(SPAN // 2), SPAN // 2, device=iq.device)  # window bins, lowest first
    source = (freq_bins[None, :] - shift[:, None]) % n  # window bin k holds the input at k - shift
    window = torch.gather(spectrum, 1, source)
    out = torch.fft.ifft(torch.fft.ifftshift(window, dim=-1), dim=-1) * (SPAN / n)
    return torch.stack((out.real, out.imag), dim=1)


def in_band_powers(
    noisy: torch.Tensor, clean: torch.Tensor, classes: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-vector power of the clean signal and of the noise ``noisy - clean`` inside each class's visible band.

    The bins of the vectors' FFT whose centre lies in the class's visible range count. The SNR as defined in the
    module docstring is estimated by ``10 log10(signal.sum() / noise.sum())`` over many vectors of one class and SNR
    (a ratio of sums: the mean of per-vector ratios is biased upward). The clean power that leaks outside the band
    is left out, a few hundredths of a dB for these waveforms.
    """
    length = noisy.shape[-1]
    freqs = CENTRE_MHZ + (torch.arange(length) - length // 2) * (SAMPLE_RATE_HZ / length / 1e6)

    def power(iq: torch.Tensor) -> torch.Tensor:
        return torch.fft.fft(torch.complex(iq[:, 0], iq[:, 1]), dim=-1).abs().square()

    ranges = torch.tensor([ISM_CLASSES[int(c)].visible_range_mhz() for c in classes])
    shifted = torch.fft.ifftshift(freqs)  # the frequency of each unshifted FFT bin
    mask = ((shifted >= ranges[:, :1]) & (shifted <= ranges[:, 1:])).to(noisy.dtype)
    return (power(clean) * mask).sum(-1), (power(noisy - clean) * mask).sum(-1)


class ISMSynthesizer:
    """Batched generator of the 15 ISM interference classes (see the module docstring for the physics).

    Example ``i`` has class ``i % 15`` and SNR ``snrs[(i // 15) % len(snrs)]``, the convention of
    :class:`rfml.dsp.Synthesizer`, and is a pure function of ``(seed, i)``.

    Args:
        snrs: SNRs (dB, in the signal's own bandwidth) cycled through by index.
        seed: the dataset seed.
        channel: a :mod:`rfml.dsp.channel` preset name or :class:`ChannelConfig` at 10 MS/s (``"ism"``).
        edge_probability: share of vectors holding a burst's start or end.
        length: complex samples per vector (128 in the reference set).
    """

    chunk_samples = 1 << 21

    def __init__(
        self,
        snrs: Iterable[float] = SNRS_ISM,
        seed: int = 0,
        channel: str | ChannelConfig = "ism",
        edge_probability: float = 0.25,
        length: int = LENGTH,
    ) -> None:
        self.snrs = [snr_db_value(s, "snrs") for s in snrs]
        if not self.snrs:
            raise ValueError("snrs must hold at least one finite SNR in dB, got an empty sequence")
        if not 0.0 <= edge_probability <= 1.0:
            raise ValueError(f"edge_probability must be in [0, 1], got {edge_probability!r}")
        if isinstance(length, bool) or not isinstance(length, int) or not 8 <= length <= SPAN // 2:
            raise ValueError(f"length must be an integer number of samples in [8, {SPAN // 2}], got {length!r}")
        self.channel = channel if isinstance(channel, ChannelConfig) else channel_preset(channel)
        if self.channel.sample_rate_hz != SAMPLE_RATE_HZ:
            raise ValueError(f"channel must be at {SAMPLE_RATE_HZ:g} S/s, got {self.channel.sample_rate_hz:g}")
        if self.channel.sample_rate_offset_max_ppm or self.channel.iq_amplitude_imbalance_max_db:
            raise ValueError("channel: sample-rate offset and IQ imbalance are not applied by the ISM synthesizer")
        self.seed = rng.check_seed(seed)
        self.edge_probability = float(edge_probability)
        self.length = length
        self.classes = list(CLASSES_ISM)
        self.margin = self.channel.multipath_margin()
        widths = torch.tensor([c.visible_width_mhz for c in ISM_CLASSES], dtype=torch.float64)
        self._bandwidth_ratio = (SAMPLE_RATE_HZ / 1e6 / widths).float()  # fs / B per class
        self._offsets = torch.tensor([c.offset_hz for c in ISM_CLASSES], dtype=torch.float64)
        self._technology = torch.tensor([list(_MODULATORS).index(c.technology) for c in ISM_CLASSES])

    def __repr__(self) -> str:
        return (
            f"ISMSynthesizer({len(self.classes)} classes, length={self.length}, snrs={self.snrs[0]:g}.."
            f"{self.snrs[-1]:g} dB ({len(self.snrs)}), seed={self.seed}, edge_probability={self.edge_probability})"
        )

    def labels(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class index and SNR (dB, float) of each example index."""
        snr_table = torch.tensor(self.snrs, dtype=torch.float32, device=indices.device)
        return indices % len(self.classes), snr_table[(indices // len(self.classes)) % len(self.snrs)]

    @torch.no_grad()
    def generate(
        self, indices: Sequence[int] | torch.Tensor, snr_db: float | None = None, return_clean: bool = False
    ) -> dict[str, torch.Tensor]:
        """``{"x": float32 [B, 2, L], "y": int64 [B], "snr": int64 [B]}`` (and ``"clean"``, ``"on_air"``
        ``[B, L]`` bool, with ``return_clean``) for example ``indices``. ``snr_db`` overrides every row's SNR."""
        idx = rng.example_indices(indices)
        y, snr = self.labels(idx)
        if snr_db is not None:
            snr = torch.full_like(snr, snr_db_value(snr_db, "snr_db"))
        keys = rng.example_keys(self.seed, idx)
        x = torch.empty(idx.numel(), 2, self.length)
        clean = torch.empty_like(x)
        on_air = torch.empty(idx.numel(), self.length, dtype=torch.bool)
        rows = max(1, self.chunk_samples // (SPAN * 4))
        for first in range(0, idx.numel(), rows):
            part = slice(first, first + rows)
            x[part], clean[part], on_air[part] = self._synthesize(keys[part], y[part], snr[part])
        out = {"x": x, "y": y, "snr": torch.round(snr).to(torch.int64)}
        if return_clean:
            out.update(clean=clean, on_air=on_air)
        return out

    def _synthesize(
        self, keys: torch.Tensor, y: torch.Tensor, snr: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = keys.numel()
        span = torch.empty(rows, 2, SPAN)
        first = (SPAN - self.length) // 2  # the vector's first sample within the span
        technology = self._technology[y]
        for t, (modulate, rate) in enumerate(_MODULATORS.values()):
            chosen = torch.nonzero(technology == t).flatten()
            if chosen.numel() == 0:
                continue
            samples = round(SPAN * rate / SAMPLE_RATE_HZ)
            iq = modulate(keys[chosen], samples, rate)
            times = torch.arange(samples) * (SAMPLE_RATE_HZ / rate)  # in output samples
            iq = iq * _burst_gate(keys[chosen], times, first, self.length, self.edge_probability)[:, None]
            span[chosen] = _to_window(iq, self._offsets[y[chosen]], rate)
        lead = first - self.margin
        iq = span[:, :, lead : first + self.length]
        if self.channel.fading:
            iq = multipath_fading(iq, keys, self.length, self.channel)
        if self.channel.carrier_offset_max_hz or self.channel.random_phase:
            iq = carrier(iq, keys, self.channel)
        times = torch.arange(self.length, dtype=torch.float32) + first
        gate = _burst_gate(keys, times, first, self.length, self.edge_probability)
        on_air = gate >= 0.5
        power_on = (iq.square().sum(1) * on_air).sum(-1) / on_air.sum(-1)
        clean = iq * torch.rsqrt(power_on.clamp_min(1e-24)).view(-1, 1, 1)
        noise_var = self._bandwidth_ratio[y] * torch.exp(-snr * (math.log(10) / 10))
        noisy = clean + rng.complex_normal(keys, Stream.NOISE, self.length, scale=noise_var.sqrt().view(-1, 1))
        scale = torch.rsqrt(noisy.square().sum((1, 2)) / self.length).view(-1, 1, 1)
        return noisy * scale, clean * scale, on_air
