"""Batched channel impairments and the channel presets.

Signals are real ``[B, 2, n]`` tensors (row 0 = I, row 1 = Q), the layout of the data contract:
complex elementwise ops are several times slower than real ones on CPU, and this layout lets every
FIR run on the ``[2B, n]`` view of the same memory.

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
from rfml.dsp.filters import farrow_coefficients, farrow_taps, fir
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


def _from_db(db: torch.Tensor, per_decade: float) -> torch.Tensor:
    """``10 ** (db / per_decade)`` via ``exp``: torch's vectorised and scalar ``pow`` kernels round
    differently, which would make a row's bits depend on its position in the batch; ``exp`` agrees."""
    return torch.exp(db * (math.log(10.0) / per_decade))


def _signed_uniform(keys: torch.Tensor, stream: int, n: int, limit: float) -> torch.Tensor:
    return (2.0 * rng.uniform(keys, stream, n) - 1.0) * limit


def _rotate(iq: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``iq [B, 2, n]`` times the complex numbers ``cos + 1j*sin`` (``[B, n]``), added to ``out`` if given.

    Fused multiply-adds into the destination; no stacked temporaries.
    """
    i, q = iq[:, 0], iq[:, 1]
    if out is None:
        out = torch.empty(iq.shape, dtype=iq.dtype, device=iq.device)
        torch.mul(i, cos, out=out[:, 0])
        torch.mul(i, sin, out=out[:, 1])
    else:
        out[:, 0].addcmul_(i, cos)
        out[:, 1].addcmul_(i, sin)
    out[:, 0].addcmul_(q, sin, value=-1.0)
    out[:, 1].addcmul_(q, cos)
    return out


def iq_imbalance(iq: torch.Tensor, keys: torch.Tensor, config: ChannelConfig) -> torch.Tensor:
    """Transmitter IQ imbalance: ``I' = I``, ``Q' = g (Q cos(phi) - I sin(phi))`` per example, i.e.
    ``mu*x + nu*conj(x)`` with ``mu = (1 + g e^{-j phi}) / 2`` and ``nu = (1 - g e^{j phi}) / 2``."""
    draws = _signed_uniform(keys, Stream.IQ_IMBALANCE, 2, 1.0)
    gain = _from_db(draws[:, :1] * config.iq_amplitude_imbalance_max_db, 20.0)
    phi = draws[:, 1:] * math.radians(config.iq_phase_imbalance_max_deg)
    out = iq.clone()
    out[:, 1].mul_(gain * torch.cos(phi)).addcmul_(iq[:, 0], gain * torch.sin(phi), value=-1.0)
    return out


def resample(iq: torch.Tensor, keys: torch.Tensor, length: int, config: ChannelConfig) -> torch.Tensor:
    """Cut ``length`` samples at a random fractional start, resampled by ``1 + ppm*1e-6`` per example.

    A 12-tap, degree-4 Farrow interpolator (error < -60 dB up to 0.3 cycles/sample): one fixed FIR per
    polynomial coefficient, then a gather at each output's base sample and a Horner step in its
    fraction. ``iq`` needs ``2 * _HALF_WIDTH`` spare samples beyond the stretched frame.
    """
    b, _, n = iq.shape
    draws = rng.uniform(keys, Stream.SAMPLE_RATE, 2)
    ratio = 1.0 + (2 * draws[:, :1].double() - 1) * (config.sample_rate_offset_max_ppm * 1e-6)
    # positions from _HALF_WIDTH - 1 up to n - _HALF_WIDTH - 1 have full interpolator support
    room = (n - 2 * _HALF_WIDTH) - (length - 1) * ratio
    start = _HALF_WIDTH - 1 + draws[:, 1:].double() * torch.clamp(room, min=0.0)
    positions = start + torch.arange(length, device=iq.device, dtype=torch.float64) * ratio
    base = torch.floor(positions)
    mu = (positions - base).float().repeat_interleave(2, dim=0)  # one row each for I and Q
    index = (base.long() - (_HALF_WIDTH - 1)).repeat_interleave(2, dim=0)
    rows = iq.reshape(2 * b, n)
    out = torch.gather(fir(rows, _FARROW[-1]), 1, index)
    for d in range(_FARROW.shape[0] - 2, -1, -1):  # Horner in mu over the polynomial coefficients
        out = torch.addcmul(torch.gather(fir(rows, _FARROW[d]), 1, index), out, mu)
    return out.view(b, 2, length)


def _delay_path(iq: torch.Tensor, delay: float, length: int, margin: int) -> torch.Tensor:
    """``[B, 2, length]`` with output ``n`` = input at ``n + margin - _HALF_WIDTH - delay``: a slice for
    whole-sample delays, a Farrow fractional-delay FIR otherwise."""
    lead = margin - _HALF_WIDTH
    if float(delay).is_integer():
        start = lead - int(delay)
        return iq[:, :, start : start + length]
    whole = math.floor(lead - delay)
    taps = farrow_taps(_FARROW, lead - delay - whole)
    first = whole - _HALF_WIDTH + 1
    segment = iq[:, :, first : first + length + taps.numel() - 1]
    return fir(segment.reshape(-1, segment.shape[-1]), taps).view(iq.shape[0], 2, length)


def multipath_fading(iq: torch.Tensor, keys: torch.Tensor, length: int, config: ChannelConfig) -> torch.Tensor:
    """Tapped delay line with per-path Rician/Rayleigh gains from a sum of sinusoids (Doppler).

    ``iq`` carries ``config.multipath_margin()`` extra samples; returns ``[B, 2, length]``.
    """
    amplitudes = torch.tensor(config.path_amplitudes, device=iq.device)
    amplitudes = amplitudes / amplitudes.pow(2).sum().sqrt()
    gain_re, gain_im = _sum_of_sinusoids(keys, len(amplitudes), length, config, amplitudes)  # [B, P, L]
    margin = config.multipath_margin()
    out = None
    for p, delay in enumerate(config.path_delays_samples):
        out = _rotate(_delay_path(iq, delay, length, margin), gain_re[:, p], gain_im[:, p], out)
    return out


def _sum_of_sinusoids(
    keys: torch.Tensor, paths: int, length: int, config: ChannelConfig, amplitudes: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Complex gains as (real, imaginary) ``[B, P, L]``, unit power times ``amplitudes [P]``: a
    line-of-sight term (Rician K) plus ``N`` scattered sinusoids with random arrival angles and
    phases, Doppler up to ``max_doppler_hz``."""
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
    scatter_angle = w[..., None] * grid + phases[..., None]  # [B, P, N, G]
    los_w = 2 * math.pi * doppler * torch.cos(2 * math.pi * u[..., -2:-1])
    los_angle = los_w * grid + 2 * math.pi * u[..., -1:]  # [B, P, G]
    k = config.rician_k
    los_weight, scatter_weight = math.sqrt(k / (k + 1)), math.sqrt(1 / (k + 1) / n_sin)
    parts = [
        torch.add(los_weight * torch.cos(los_angle), torch.cos(scatter_angle).sum(dim=2), alpha=scatter_weight),
        torch.add(los_weight * torch.sin(los_angle), torch.sin(scatter_angle).sum(dim=2), alpha=scatter_weight),
    ]  # [B, P, G] each
    if amplitudes is not None:
        parts = [p * amplitudes[:, None] for p in parts]
    if step > 1:  # linear interpolation between grid points
        frac = torch.arange(step, device=keys.device, dtype=torch.float32) / step
        parts = [torch.addcmul(p[..., :-1, None], p.diff(dim=-1)[..., None], frac).flatten(-2) for p in parts]
    return parts[0][..., :length], parts[1][..., :length]


def carrier(iq: torch.Tensor, keys: torch.Tensor, config: ChannelConfig) -> torch.Tensor:
    """Carrier frequency offset with linear drift, and a uniform random phase."""
    draws = rng.uniform(keys, Stream.CARRIER, 3)
    fs = config.sample_rate_hz
    offset = (2 * draws[:, :1] - 1) * (config.carrier_offset_max_hz / fs)  # cycles / sample
    drift = (2 * draws[:, 1:2] - 1) * (config.carrier_drift_max_hz_per_s / fs**2)  # cycles / sample^2
    phase0 = 2 * math.pi * draws[:, 2:] if config.random_phase else torch.zeros_like(offset)
    t = torch.arange(iq.shape[-1], device=iq.device, dtype=torch.float32)
    cycles = t * (offset + 0.5 * drift * t)
    phase = 2 * math.pi * (cycles - torch.round(cycles)) + phase0
    return _rotate(iq, torch.cos(phase), torch.sin(phase))


def power(iq: torch.Tensor) -> torch.Tensor:
    """Mean power per complex sample of each example, ``[B, 1, 1]``."""
    norm = torch.linalg.vector_norm(iq.flatten(1), dim=1)
    return (norm.square() / iq.shape[-1]).view(-1, 1, 1)


def awgn(clean: torch.Tensor, keys: torch.Tensor, snr_db: torch.Tensor, convention: str = "per_sample") -> torch.Tensor:
    """Add circular white Gaussian noise to ``clean [B, 2, L]`` at ``snr_db [B]``.

    ``per_sample``: noise variance = the frame's mean clean power / 10**(snr/10). ``gnuradio``: noise
    standard deviation = 10**(-snr/10) whatever the signal power (the RadioML 2016 convention).
    """
    snr = snr_db.to(device=clean.device, dtype=torch.float32).view(-1, 1)
    if convention == "gnuradio":
        std = _from_db(-snr, 10.0)
    elif convention == "per_sample":
        std = torch.sqrt(power(clean).view(-1, 1) * _from_db(-snr, 10.0))
    else:
        raise ValueError(f"convention must be one of {SNR_CONVENTIONS}, got {convention!r}")
    return clean + rng.complex_normal_iq(keys, Stream.NOISE, clean.shape[-1], scale=std)


def apply_channel(
    iq: torch.Tensor,
    keys: torch.Tensor,
    length: int,
    snr_db: torch.Tensor,
    config: ChannelConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Impair ``iq [B, 2, config.input_length(length, ...)]`` and add noise at ``snr_db [B]``.

    Order: transmitter IQ imbalance, sample-rate offset and frame cut, multipath fading, carrier
    offset/drift and phase, then per-frame power normalisation of the clean frame and AWGN.
    Returns ``(noisy, clean)``, both ``float32 [B, 2, length]``.
    """
    if config.iq_amplitude_imbalance_max_db or config.iq_phase_imbalance_max_deg:
        iq = iq_imbalance(iq, keys, config)
    iq = resample(iq, keys, length + config.multipath_margin(), config)
    if config.fading:
        iq = multipath_fading(iq, keys, length, config)
    if config.carrier_offset_max_hz or config.carrier_drift_max_hz_per_s or config.random_phase:
        iq = carrier(iq, keys, config)
    clean = iq * torch.rsqrt(power(iq).clamp_min(1e-24))
    noisy = awgn(clean, keys, snr_db, config.snr_convention)
    if config.frame_normalization == "l1":
        scale = torch.linalg.vector_norm(noisy, dim=1).sum(dim=1).view(-1, 1, 1)
        noisy, clean = noisy / scale, clean / scale
    return noisy, clean
