"""Batched channel impairments and the channel presets.

SNR definition (physical mode, the default): the ratio of the frame's mean clean-signal power per
complex sample to the noise variance per complex sample, both over the full sampled band. The clean
frame is the signal after every other impairment. For a linearly modulated signal at
``samples_per_symbol`` samples per symbol this gives ``Es/N0 = SNR * samples_per_symbol`` (in dB:
``esn0_db = snr_db + 10*log10(samples_per_symbol)``); see :func:`esn0_db`.

Compatibility mode (``snr_convention="gnuradio"``): RadioML 2016 was made with GNU Radio's channel
model, whose noise amplitude ``10**(-snr/10)`` is used as the noise standard deviation of a unit-power
signal, so its true per-sample SNR is twice the label in dB. Frames are then divided by the sum of
``|x|`` (L1), as the RadioML 2016 generator did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from rfml.dsp import rng
from rfml.dsp.filters import complex_rows, farrow_coefficients, farrow_taps, fir, from_complex_rows
from rfml.dsp.modulate import Stream

SNR_CONVENTIONS = ("per_sample", "gnuradio")
FRAME_NORMALIZATIONS = ("power", "l1")


@dataclass(frozen=True)
class ChannelConfig:
    """Channel impairments. Ranges are drawn uniformly per example from ``[-max, +max]``."""

    sample_rate_hz: float = 200e3
    random_phase: bool = False
    carrier_offset_max_hz: float = 0.0
    carrier_drift_max_hz_per_s: float = 0.0
    sample_rate_offset_max_ppm: float = 0.0
    # Multipath: one fractional delay and relative amplitude per path; fading off when max_doppler_hz
    # is None. rician_k applies to every path (0 gives Rayleigh).
    path_delays_samples: tuple[float, ...] = (0.0,)
    path_amplitudes: tuple[float, ...] = (1.0,)
    max_doppler_hz: float | None = None
    rician_k: float = 0.0
    num_sinusoids: int = 8
    iq_amplitude_imbalance_max_db: float = 0.0
    iq_phase_imbalance_max_deg: float = 0.0
    snr_convention: str = "per_sample"
    frame_normalization: str = "power"

    def __post_init__(self) -> None:
        if self.snr_convention not in SNR_CONVENTIONS:
            raise ValueError(f"snr_convention must be one of {SNR_CONVENTIONS}, got {self.snr_convention!r}")
        if self.frame_normalization not in FRAME_NORMALIZATIONS:
            raise ValueError(
                f"frame_normalization must be one of {FRAME_NORMALIZATIONS}, got {self.frame_normalization!r}"
            )
        if len(self.path_delays_samples) != len(self.path_amplitudes):
            raise ValueError(
                "path_delays_samples and path_amplitudes must have the same length, got "
                f"{len(self.path_delays_samples)} and {len(self.path_amplitudes)}"
            )
        if any(d < 0 for d in self.path_delays_samples):
            raise ValueError(f"path_delays_samples must be >= 0, got {self.path_delays_samples}")

    @property
    def fading(self) -> bool:
        return self.max_doppler_hz is not None

    def multipath_margin(self) -> int:
        """Extra samples the tapped delay line consumes ahead of the frame (0 without fading)."""
        return math.ceil(max(self.path_delays_samples)) + 2 * _HALF_WIDTH if self.fading else 0

    def input_length(self, length: int, timing_span: int) -> int:
        """Samples the channel needs from the modulator to produce ``length``: interpolator support,
        path delays, the resampling stretch and ``timing_span`` samples of random frame start."""
        resampled = length + self.multipath_margin()
        stretch = math.ceil(resampled * self.sample_rate_offset_max_ppm * 1e-6)
        return resampled + 2 * _HALF_WIDTH + stretch + timing_span


_HALF_WIDTH = 6  # interpolator half width, samples
_FARROW = farrow_coefficients(_HALF_WIDTH, degree=4, beta=7.0)

# RadioML 2016's GNU Radio dynamic channel: SRO and CFO random walks (std 0.01 Hz per sample, max
# 50 Hz and 500 Hz); we draw the walks' state uniformly within a band that a walk of that step size
# reaches over a 1e6-sample run (about +-10 Hz), since the frames were cut long after start-up.
PRESETS: dict[str, ChannelConfig] = {
    "clean": ChannelConfig(),
    "rml2016": ChannelConfig(
        sample_rate_hz=200e3,
        random_phase=True,
        carrier_offset_max_hz=10.0,
        sample_rate_offset_max_ppm=10.0 / 200e3 * 1e6,
        path_delays_samples=(0.0, 0.9, 1.7),
        path_amplitudes=(1.0, 0.8, 0.3),
        max_doppler_hz=1.0,
        rician_k=4.0,
        num_sinusoids=8,
    ),
    # A harsher over-the-air channel, comparable to TorchSig's impairment level 2.
    "wireless": ChannelConfig(
        sample_rate_hz=1e6,
        random_phase=True,
        carrier_offset_max_hz=5e3,
        carrier_drift_max_hz_per_s=2e5,
        sample_rate_offset_max_ppm=100.0,
        path_delays_samples=(0.0, 1.0, 2.5, 4.0),
        path_amplitudes=(1.0, 0.6, 0.35, 0.2),
        max_doppler_hz=200.0,
        rician_k=2.0,
        num_sinusoids=8,
        iq_amplitude_imbalance_max_db=1.0,
        iq_phase_imbalance_max_deg=5.0,
    ),
}
PRESETS["rml2016-compat"] = replace(PRESETS["rml2016"], snr_convention="gnuradio", frame_normalization="l1")


def channel_preset(name: str) -> ChannelConfig:
    if name not in PRESETS:
        raise ValueError(f"channel must be one of {sorted(PRESETS)} or a ChannelConfig, got {name!r}")
    return PRESETS[name]


def esn0_db(snr_db: float, samples_per_symbol: int) -> float:
    """Es/N0 of a linearly modulated signal at per-sample SNR ``snr_db`` (physical convention)."""
    return snr_db + 10.0 * math.log10(samples_per_symbol)


def _signed_uniform(keys: torch.Tensor, stream: int, n: int, limit: float) -> torch.Tensor:
    return (2.0 * rng.uniform(keys, stream, n) - 1.0) * limit


def iq_imbalance(x: torch.Tensor, keys: torch.Tensor, config: ChannelConfig) -> torch.Tensor:
    """``y = mu*x + nu*conj(x)`` for amplitude imbalance g and phase imbalance phi per example."""
    draws = _signed_uniform(keys, Stream.IQ_IMBALANCE, 2, 1.0)
    gain = 10 ** (draws[:, :1] * config.iq_amplitude_imbalance_max_db / 20)
    phi = draws[:, 1:] * math.radians(config.iq_phase_imbalance_max_deg)
    mu = (1 + gain * torch.exp(torch.complex(torch.zeros_like(phi), -phi))) / 2
    nu = (1 - gain * torch.exp(torch.complex(torch.zeros_like(phi), phi))) / 2
    return mu * x + nu * x.conj()


def _power(x: torch.Tensor) -> torch.Tensor:
    """Mean power per complex sample of each row, ``[B, 1]``."""
    norm = torch.linalg.vector_norm(torch.view_as_real(x).flatten(1), dim=1, keepdim=True)
    return norm.square() / x.shape[1]


def resample(x: torch.Tensor, keys: torch.Tensor, length: int, config: ChannelConfig) -> torch.Tensor:
    """Cut ``length`` samples at a random fractional start, resampled by ``1 + ppm*1e-6`` per example.

    A 12-tap, degree-4 Farrow interpolator (error < -60 dB up to 0.3 cycles/sample): one fixed
    convolution gives the polynomial coefficients at every input sample, then each output needs a
    gather of 5 values and a Horner step in its fraction.
    """
    n = x.shape[1]
    draws = rng.uniform(keys, Stream.SAMPLE_RATE, 2)
    ratio = 1.0 + (2 * draws[:, :1].double() - 1) * (config.sample_rate_offset_max_ppm * 1e-6)
    # positions from _HALF_WIDTH - 1 up to n - _HALF_WIDTH - 1 have full interpolator support
    room = (n - 2 * _HALF_WIDTH) - (length - 1) * ratio
    start = _HALF_WIDTH - 1 + draws[:, 1:].double() * torch.clamp(room, min=0.0)
    positions = start + torch.arange(length, device=x.device, dtype=torch.float64) * ratio
    base = torch.floor(positions)
    mu = (positions - base).float().repeat_interleave(2, dim=0)  # one row each for I and Q
    index = (base.long() - (_HALF_WIDTH - 1)).repeat_interleave(2, dim=0)
    parts = complex_rows(x)
    out = torch.gather(fir(parts, _FARROW[-1]), 1, index)
    for d in range(_FARROW.shape[0] - 2, -1, -1):  # Horner in mu over the polynomial coefficients
        out = torch.addcmul(torch.gather(fir(parts, _FARROW[d]), 1, index), out, mu)
    return from_complex_rows(out)


def _delay_path(x: torch.Tensor, delay: float, length: int, margin: int) -> torch.Tensor:
    """``[B, length]`` with output ``n`` = input at ``n + margin - _HALF_WIDTH - delay``: a slice for
    whole-sample delays, a Farrow fractional-delay FIR otherwise."""
    lead = margin - _HALF_WIDTH
    if float(delay).is_integer():
        start = lead - int(delay)
        return x[:, start : start + length]
    whole = math.floor(lead - delay)
    taps = farrow_taps(_FARROW, lead - delay - whole)
    first = whole - _HALF_WIDTH + 1
    return from_complex_rows(fir(complex_rows(x[:, first : first + length + taps.numel() - 1]), taps))


def multipath_fading(x: torch.Tensor, keys: torch.Tensor, length: int, config: ChannelConfig) -> torch.Tensor:
    """Tapped delay line with per-path Rician/Rayleigh gains from a sum of sinusoids (Doppler).

    ``x`` carries ``config.multipath_margin()`` extra samples; returns ``[B, length]``.
    """
    amplitudes = torch.tensor(config.path_amplitudes)
    amplitudes = (amplitudes / amplitudes.pow(2).sum().sqrt()).tolist()
    gains = _sum_of_sinusoids(keys, len(amplitudes), length, config)  # [B, P, L]
    margin = config.multipath_margin()
    out = None
    for p, delay in enumerate(config.path_delays_samples):
        path = _delay_path(x, delay, length, margin) * gains[:, p]
        out = path * amplitudes[p] if out is None else torch.add(out, path, alpha=amplitudes[p])
    return out


def _sum_of_sinusoids(keys: torch.Tensor, paths: int, length: int, config: ChannelConfig) -> torch.Tensor:
    """Unit-power complex gains ``[B, P, L]``: a line-of-sight term (Rician K) plus ``N`` scattered
    sinusoids with random arrival angles and phases, Doppler up to ``max_doppler_hz``."""
    n_sin = config.num_sinusoids
    doppler = config.max_doppler_hz / config.sample_rate_hz  # cycles per sample
    # Evaluate on a coarse grid and interpolate linearly: the gains turn < 0.05 rad per grid step.
    step = int(min(64, max(1, 0.05 / (2 * math.pi * max(doppler, 1e-12)))))
    grid = torch.arange(0, length + step, step, device=keys.device, dtype=torch.float32)
    u = rng.uniform(keys, Stream.FADING, paths * (n_sin + 3)).view(-1, paths, n_sin + 3)
    # Scatterers: arrival angles spread evenly with a random rotation (Zheng & Xiao), random phases.
    angles = (2 * math.pi * (torch.arange(n_sin, device=keys.device) + u[..., :1])) / n_sin
    phases = 2 * math.pi * u[..., 1 : 1 + n_sin]
    w = 2 * math.pi * doppler * torch.cos(angles)  # [B, P, N]
    scattered = rng.unit_phasor(w[..., None] * grid + phases[..., None]).sum(dim=2) / math.sqrt(n_sin)
    los_w = 2 * math.pi * doppler * torch.cos(2 * math.pi * u[..., -2:-1])
    los = rng.unit_phasor(los_w * grid + 2 * math.pi * u[..., -1:])
    k = config.rician_k
    gains = math.sqrt(k / (k + 1)) * los + math.sqrt(1 / (k + 1)) * scattered  # [B, P, G]
    if step > 1:
        frac = torch.arange(step, device=keys.device, dtype=torch.float32) / step
        start, delta = gains[..., :-1, None], gains.diff(dim=-1)[..., None]
        gains = (start + delta * frac).flatten(-2)
    return gains[..., :length]


def carrier(x: torch.Tensor, keys: torch.Tensor, config: ChannelConfig) -> torch.Tensor:
    """Carrier frequency offset with linear drift, and a uniform random phase."""
    draws = rng.uniform(keys, Stream.CARRIER, 3)
    fs = config.sample_rate_hz
    offset = (2 * draws[:, :1] - 1) * (config.carrier_offset_max_hz / fs)  # cycles / sample
    drift = (2 * draws[:, 1:2] - 1) * (config.carrier_drift_max_hz_per_s / fs**2)  # cycles / sample^2
    phase0 = 2 * math.pi * draws[:, 2:] if config.random_phase else torch.zeros_like(offset)
    t = torch.arange(x.shape[1], device=x.device, dtype=torch.float32)
    cycles = t * (offset + 0.5 * drift * t)
    phase = 2 * math.pi * (cycles - torch.round(cycles)) + phase0
    return x * rng.unit_phasor(phase)


def awgn(clean: torch.Tensor, keys: torch.Tensor, snr_db: torch.Tensor, convention: str = "per_sample") -> torch.Tensor:
    """Add circular white Gaussian noise to ``clean [B, L]`` at ``snr_db [B]``.

    ``per_sample``: noise variance = the frame's mean clean power / 10**(snr/10). ``gnuradio``: noise
    standard deviation = 10**(-snr/10) whatever the signal power (the RadioML 2016 convention).
    """
    snr = snr_db.to(device=clean.device, dtype=torch.float32)[:, None]
    if convention == "gnuradio":
        std = torch.pow(10.0, -snr / 10.0)
    elif convention == "per_sample":
        std = torch.sqrt(_power(clean) * torch.pow(10.0, -snr / 10.0))
    else:
        raise ValueError(f"convention must be one of {SNR_CONVENTIONS}, got {convention!r}")
    return clean + rng.complex_normal(keys, Stream.NOISE, clean.shape[1], scale=std)


def apply_channel(
    x: torch.Tensor,
    keys: torch.Tensor,
    length: int,
    snr_db: torch.Tensor,
    config: ChannelConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Impair ``x [B, config.input_length(length, ...)]`` and add noise at ``snr_db [B]``.

    Order: transmitter IQ imbalance, sample-rate offset and frame cut, multipath fading, carrier
    offset/drift and phase, then per-frame power normalisation of the clean frame and AWGN.
    Returns ``(noisy, clean)``, both ``complex64 [B, length]``.
    """
    if config.iq_amplitude_imbalance_max_db or config.iq_phase_imbalance_max_deg:
        x = iq_imbalance(x, keys, config)
    x = resample(x, keys, length + config.multipath_margin(), config)
    if config.fading:
        x = multipath_fading(x, keys, length, config)
    if config.carrier_offset_max_hz or config.carrier_drift_max_hz_per_s or config.random_phase:
        x = carrier(x, keys, config)
    clean = x * torch.rsqrt(_power(x).clamp_min(1e-24))
    noisy = awgn(clean, keys, snr_db, config.snr_convention)
    if config.frame_normalization == "l1":
        scale = noisy.abs().sum(dim=1, keepdim=True)
        noisy, clean = noisy / scale, clean / scale
    return noisy, clean
