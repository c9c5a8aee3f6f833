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
from rfml.dsp.filters import farrow_coefficients, farrow_taps, fir, taylor_taps
from rfml.dsp.rng import Stream

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

    def resample_plan(self, length: int) -> tuple[int, int]:
        """``(segment_length, taylor_terms)`` for resampling ``length`` output samples.

        Within a segment the fraction drifts by at most ``_MAX_DRIFT`` either side of its centre, and
        the Taylor terms kept leave a tail below -70 dB of full scale (one term without rate offset).
        """
        drift_per_sample = self.sample_rate_offset_max_ppm * 1e-6
        if drift_per_sample == 0:
            return length, 1
        count = -(-length // max(16, int(2 * _MAX_DRIFT / drift_per_sample)))
        segment = -(-length // count)  # equal segments, as long as the drift bound allows
        drift = drift_per_sample * segment / 2
        terms = next(k for k in range(1, len(_TERM_NORMS) + 1) if sum(
            n * drift**j for j, n in enumerate(_TERM_NORMS) if j >= k) < 3e-4)  # fmt: skip
        return segment, terms

    def input_length(self, length: int, timing_span: int) -> int:
        """Samples the channel needs from the modulator to produce ``length``: interpolator support,
        path delays, the resampling stretch and ``timing_span`` samples of random frame start."""
        resampled = length + self.multipath_margin()
        segment, _ = self.resample_plan(resampled)
        padded = -(-resampled // segment) * segment
        stretch = math.ceil(padded * self.sample_rate_offset_max_ppm * 1e-6)
        return padded + 2 * _HALF_WIDTH + 4 + stretch + timing_span


_HALF_WIDTH = 6  # interpolator: 2 * 6 + 1 taps
_FARROW = farrow_coefficients(_HALF_WIDTH)
_MAX_DRIFT = 0.03  # of the 0.1 the fit allows (span 0.6 minus the largest centre fraction 0.5)
# Largest L1 norm of each re-centred Taylor term over centre fractions in [-0.5, 0.5].
_TERM_NORMS = [
    float(taylor_taps(_FARROW, torch.linspace(-0.5, 0.5, 101), _FARROW.shape[0])[:, k].abs().sum(-1).max())
    for k in range(_FARROW.shape[0])
]

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
    # Indoor 2.4 GHz at 10 MS/s (rfml.dsp.ism): delays of 0, 60 and 150 ns, quasi-static Rician fading (walking
    # speed gives a few Hz of Doppler), and a carrier offset inside the +-40 ppm that 802.15.4 allows (+-96 kHz)
    # but below one 78 kHz bin of a 128-point FFT.
    "ism": ChannelConfig(
        sample_rate_hz=10e6,
        random_phase=True,
        carrier_offset_max_hz=30e3,
        path_delays_samples=(0.0, 0.6, 1.5),
        path_amplitudes=(1.0, 0.4, 0.2),
        max_doppler_hz=5.0,
        rician_k=6.0,
        num_sinusoids=8,
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

    Output ``n`` is the input at ``start + n * ratio``. The frame is split into segments short
    enough that the fraction drifts by at most 0.03 sample around each segment's centre ``mu``; the
    Farrow interpolator (13 taps, degree 5, error < -64 dB to 0.25 cycles/sample) is re-centred at
    ``mu`` per segment, so a segment costs one gather and ``terms`` FIRs with per-row taps, the
    output being ``sum_k delta_n**k (T_k(mu) * x)`` with ``delta_n`` the drift from the centre.
    """
    b, _, n = iq.shape
    segment, terms = config.resample_plan(length)
    count = -(-length // segment)
    draws = rng.uniform(keys, Stream.SAMPLE_RATE, 2).double()
    epsilon = (2 * draws[:, :1] - 1) * (config.sample_rate_offset_max_ppm * 1e-6)  # [B, 1]
    first, last = _HALF_WIDTH + 1, n - _HALF_WIDTH - 3  # positions with full interpolator support
    room = last - first - (count * segment - 1) * (1 + epsilon)
    start = first + draws[:, 1:] * torch.clamp(room, min=0.0)
    middle = (segment - 1) // 2
    centre = start + (torch.arange(count, device=iq.device) * segment + middle) * (1 + epsilon)  # [B, S]
    base = torch.round(centre)
    mu = (centre - base).flatten()  # [B*S] in [-0.5, 0.5]
    offsets = torch.arange(segment + 2 * _HALF_WIDTH, device=iq.device)
    index = (base.long() - middle - _HALF_WIDTH)[..., None] + offsets  # [B, S, W]
    pieces = torch.gather(iq, 2, index.view(b, 1, -1).expand(b, 2, -1).clamp(0, n - 1))
    rows = pieces.view(b * 2 * count, -1)  # rows ordered (example, I/Q, segment)
    taps = taylor_taps(_FARROW, mu, terms).view(b, 1, count, terms, -1).expand(b, 2, count, terms, -1)
    taps = taps.reshape(b * 2 * count, terms, -1)
    delta = ((torch.arange(segment, device=iq.device) - middle) * epsilon).float()  # [B, segment]
    delta = delta.view(b, 1, 1, segment).expand(b, 2, count, segment).reshape(b * 2 * count, segment)
    out = fir(rows, taps[:, terms - 1])
    for k in range(terms - 2, -1, -1):  # Horner in delta
        out = torch.addcmul(fir(rows, taps[:, k]), out, delta)
    return out.view(b, 2, count * segment)[:, :, :length]


def _delay_path(iq: torch.Tensor, delay: float, length: int, margin: int) -> torch.Tensor:
    """``[B, 2, length]`` with output ``n`` = input at ``n + margin - _HALF_WIDTH - delay``: a slice for
    whole-sample delays, a Farrow fractional-delay FIR otherwise."""
    lead = margin - _HALF_WIDTH
    if float(delay).is_integer():
        start = lead - int(delay)
        return iq[:, :, start : start + length]
    nearest = round(lead - delay)
    taps = farrow_taps(_FARROW, lead - delay - nearest)
    segment = iq[:, :, nearest - _HALF_WIDTH : nearest + _HALF_WIDTH + length]
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
    return clean + rng.complex_normal(keys, Stream.NOISE, clean.shape[-1], scale=std)


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
