"""Channel impairments measured on known signals: SRO, CFO, multipath fading, IQ imbalance."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from rfml.dsp import CHANNEL_PRESETS, ChannelConfig, rng
from rfml.dsp import channel as ch


def tone(batch: int, length: int, frequency: float) -> torch.Tensor:
    """A unit complex tone as ``[B, 2, L]`` IQ."""
    t = torch.arange(length, dtype=torch.float64)
    angle = 2 * math.pi * frequency * t
    return torch.stack([torch.cos(angle), torch.sin(angle)]).float().expand(batch, -1, -1).contiguous()


def as_complex(iq: torch.Tensor) -> torch.Tensor:
    return torch.complex(iq[:, 0].double(), iq[:, 1].double())


def test_resample_applies_the_drawn_rate_offset_to_within_a_ppm() -> None:
    config = replace(CHANNEL_PRESETS["clean"], sample_rate_offset_max_ppm=500.0)
    keys = rng.example_keys(1, torch.arange(64))
    frequency, length = 0.05, 2048
    x = tone(64, config.input_length(length, 8), frequency)
    y = as_complex(ch.resample(x, keys, length, config))
    measured_ppm = (torch.angle(y[:, 1:] * y[:, :-1].conj()).mean(1) / (2 * math.pi * frequency) - 1) * 1e6
    drawn = rng.uniform(keys, ch.Stream.SAMPLE_RATE, 2)[:, 0].double()
    expected_ppm = (2 * drawn - 1) * 500.0
    assert float((measured_ppm - expected_ppm).abs().max()) < 1.0
    assert float(expected_ppm.abs().max()) > 300  # the draws really span the range
    torch.testing.assert_close(y.abs(), torch.ones_like(y.abs()), atol=1e-3, rtol=0)  # interpolation is clean


@pytest.mark.parametrize("ppm", [0.0, 50.0, 2000.0])
def test_resample_interpolates_band_limited_signals_accurately(ppm: float) -> None:
    """Three tones up to 0.2 cycles/sample come out as the same tones, stretched by the drawn ratio,
    with a residual below -55 dB (from segments and Taylor terms at 2000 ppm, one FIR at 0 ppm)."""
    config = replace(CHANNEL_PRESETS["clean"], sample_rate_offset_max_ppm=ppm)
    keys = rng.example_keys(7, torch.arange(16))
    length, freqs = 1000, torch.tensor([0.02, 0.11, 0.2], dtype=torch.float64)
    t = torch.arange(config.input_length(length, 8), dtype=torch.float64)
    x = torch.exp(2j * math.pi * freqs[:, None] * t).sum(0).expand(16, -1)
    y = as_complex(ch.resample(torch.stack([x.real, x.imag], 1).float(), keys, length, config))
    ratio = 1 + (2 * rng.uniform(keys, ch.Stream.SAMPLE_RATE, 2)[:, 0].double() - 1) * ppm * 1e-6
    n = torch.arange(length, dtype=torch.float64)
    for row in range(16):
        basis = torch.exp(2j * math.pi * freqs[None, :] * ratio[row] * n[:, None])  # [L, 3]
        amplitudes = torch.linalg.lstsq(basis, y[row, :, None]).solution
        residual = y[row] - (basis @ amplitudes)[:, 0]
        assert float(amplitudes.abs().min()) > 0.99  # each tone passes at full amplitude
        assert 10 * math.log10(float(residual.abs().pow(2).mean()) / 3.0) < -55.0


def test_carrier_offset_shifts_a_tone_by_the_drawn_frequency() -> None:
    config = ChannelConfig(sample_rate_hz=1e6, carrier_offset_max_hz=20e3, random_phase=True)
    keys = rng.example_keys(2, torch.arange(32))
    y = as_complex(ch.carrier(tone(32, 4096, 0.0), keys, config))
    measured_hz = torch.angle(y[:, 1:] * y[:, :-1].conj()).mean(1) / (2 * math.pi) * 1e6
    draws = rng.uniform(keys, ch.Stream.CARRIER, 3).double()
    torch.testing.assert_close(measured_hz, (2 * draws[:, 0] - 1) * 20e3, atol=1.0, rtol=0)
    start_phase = torch.polar(torch.ones(32, dtype=torch.float64), draws[:, 2] * 2 * math.pi)
    assert float((y[:, 0] - start_phase).abs().max()) < 1e-4


@pytest.mark.parametrize("k", [0.0, 4.0])
def test_fading_gains_have_unit_power_and_rician_fourth_moment(k: float) -> None:
    config = ChannelConfig(sample_rate_hz=1e6, max_doppler_hz=100.0, rician_k=k, num_sinusoids=8)
    keys = rng.example_keys(3, torch.arange(20000))
    real, imag = ch._sum_of_sinusoids(keys, 1, 64, config)
    gains = torch.complex(real[:, 0, 0].double(), imag[:, 0, 0].double())
    los, scattered = k / (k + 1), 1 / (k + 1)
    # |g|^4 of a LOS phasor plus a sum of N random-phase phasors: exact finite-N moment
    fourth = los**2 + 4 * los * scattered + scattered**2 * (2 - 1 / config.num_sinusoids)
    assert float(gains.abs().pow(2).mean()) == pytest.approx(1.0, abs=0.02)
    assert float(gains.abs().pow(4).mean()) == pytest.approx(fourth, rel=0.04)


def test_fading_gain_spectrum_stays_within_max_doppler() -> None:
    config = ChannelConfig(sample_rate_hz=1e4, max_doppler_hz=50.0, rician_k=0.0)
    keys = rng.example_keys(4, torch.arange(256))
    real, imag = ch._sum_of_sinusoids(keys, 1, 8192, config)
    gains = torch.complex(real[:, 0], imag[:, 0])
    spectrum = torch.fft.fft(gains * torch.hann_window(8192), dim=1).abs().pow(2).mean(0)
    freqs_hz = torch.fft.fftfreq(8192, d=1 / 1e4)
    inside = spectrum[freqs_hz.abs() <= 55.0].sum() / spectrum.sum()
    assert float(inside) > 0.99
    assert float(spectrum[freqs_hz.abs() > 40].sum() / spectrum.sum()) > 0.1  # Doppler really spreads


def test_multipath_delays_follow_the_power_delay_profile() -> None:
    """With a frozen channel (no Doppler motion), an impulse comes out as one tap per path."""
    config = ChannelConfig(path_delays_samples=(0.0, 3.0, 7.0), path_amplitudes=(1.0, 0.5, 0.25), max_doppler_hz=0.0)
    keys = rng.example_keys(5, torch.arange(4000))
    margin, length = config.multipath_margin(), 32
    x = torch.zeros(4000, 2, length + margin)
    x[:, 0, margin - ch._HALF_WIDTH + 10] = 1.0  # arrives at output sample 10 on the direct path
    y = ch.multipath_fading(x, keys, length, config)
    power = y.pow(2).sum(1).mean(0)
    profile = power[[10, 13, 17]] / power.sum()
    expected = torch.tensor([1.0, 0.25, 0.0625]) / 1.3125
    torch.testing.assert_close(profile, expected, atol=0.02, rtol=0)


def test_iq_imbalance_image_matches_gain_and_phase() -> None:
    config = ChannelConfig(iq_amplitude_imbalance_max_db=2.0, iq_phase_imbalance_max_deg=10.0)
    keys = rng.example_keys(6, torch.arange(16))
    y = as_complex(ch.iq_imbalance(tone(16, 1024, 0.125), keys, config))
    spectrum = torch.fft.fft(y, dim=1).abs().pow(2)
    image_ratio = spectrum[:, 1024 - 128] / spectrum[:, 128]
    draws = rng.uniform(keys, ch.Stream.IQ_IMBALANCE, 2).double() * 2 - 1
    g = 10 ** (draws[:, 0] * 2.0 / 20)
    phi = draws[:, 1] * math.radians(10.0)
    expected = (1 - 2 * g * torch.cos(phi) + g**2) / (1 + 2 * g * torch.cos(phi) + g**2)
    torch.testing.assert_close(image_ratio, expected, rtol=1e-3, atol=1e-9)


def test_bad_channel_configs_are_rejected() -> None:
    with pytest.raises(ValueError, match="snr_convention"):
        ChannelConfig(snr_convention="db")
    with pytest.raises(ValueError, match="path_amplitudes"):
        ChannelConfig(path_delays_samples=(0.0, 1.0), path_amplitudes=(1.0,))
    with pytest.raises(ValueError, match="channel must be one of"):
        ch.channel_preset("rml2019")
