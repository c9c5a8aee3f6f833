"""The ISM synthesizer's physics: where each class sits in the 10 MHz window, how wide it is, and its SNR."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rfml.dsp import ism
from rfml.dsp.ism import CENTRE_MHZ, ISM_CLASSES, ISMSynthesizer, in_band_powers, zigbee_chip_table

BIN_MHZ = 10.0 / 128  # one bin of the data set's 128-point FFT: 78.125 kHz


@pytest.fixture(scope="module")
def spectra() -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Mean Hann-windowed 128-point power spectrum of each class's clean vectors (the data set's own resolution),
    as (MHz, power) with the power summing to 1, from the default channel and burst timing."""
    synth = ISMSynthesizer(seed=3)
    out = synth.generate(torch.arange(15 * 200), snr_db=20.0, return_clean=True)
    z = out["clean"][:, 0].numpy() + 1j * out["clean"][:, 1].numpy()
    power = np.abs(np.fft.fftshift(np.fft.fft(z * np.hanning(128), axis=-1), axes=-1)) ** 2
    freqs = CENTRE_MHZ + (np.arange(128) - 64) * BIN_MHZ
    result = {}
    for c in range(15):
        p = power[out["y"].numpy() == c].mean(0)
        result[c] = (freqs, p / p.sum())
    return result


def centroid(freqs: np.ndarray, p: np.ndarray) -> float:
    return float((freqs * p).sum())


def width_above(freqs: np.ndarray, p: np.ndarray, db: float) -> float:
    """Width of the band where the spectrum is within ``db`` of its peak (bin centres, plus one bin)."""
    above = freqs[10 * np.log10(p / p.max()) > -db]
    return float(above.max() - above.min() + (freqs[1] - freqs[0]))


def occupied(freqs: np.ndarray, p: np.ndarray, share: float = 0.99) -> float:
    """The band holding ``share`` of the power (ITU occupied bandwidth)."""
    cumulative = np.cumsum(p)
    return float(np.interp((1 + share) / 2, cumulative, freqs) - np.interp((1 - share) / 2, cumulative, freqs))


@pytest.mark.parametrize("c", [c for c in range(15) if ISM_CLASSES[c].technology != "WiFi"])
def test_bluetooth_and_zigbee_sit_at_the_reference_centre(spectra, c: int) -> None:
    freqs, p = spectra[c]
    assert abs(centroid(freqs, p) - ISM_CLASSES[c].centre_mhz) < BIN_MHZ


@pytest.mark.parametrize("c", range(10))
def test_bluetooth_width_is_one_mhz_by_its_20_db_bandwidth(spectra, c: int) -> None:
    # The Bluetooth Core Specification defines the channel's width as its -20 dB bandwidth (at most 1 MHz). The
    # 99 % power bandwidth of GFSK at BT 0.5, h 0.32 is narrower, about 0.87 MHz.
    freqs, p = spectra[c]
    assert 0.8 < occupied(freqs, p) < 1.0
    assert abs(width_above(*spectra[c], 20.0) - 1.0) < BIN_MHZ


@pytest.mark.parametrize("c", [13, 14])
def test_zigbee_width_is_two_mhz_by_its_10_db_bandwidth(spectra, c: int) -> None:
    # Half-sine O-QPSK at 2 Mchip/s is MSK-like: its first nulls are 3 MHz apart and 99 % of the power lies
    # within about 2.4 MHz (1.18 times the chip rate for MSK); the nominal 2 MHz channel is its -10 dB bandwidth.
    freqs, p = spectra[c]
    assert 2.2 < occupied(freqs, p) < 2.5
    assert abs(width_above(*spectra[c], 10.0) - 2.0) < BIN_MHZ


def wifi_dsss_spectrum(freqs: np.ndarray, centre_mhz: float) -> np.ndarray:
    """802.11b's power spectrum: raised cosine of roll-off 1 at 11 Mchip/s (22 MHz wide) times the Barker-11 code's
    spectrum (symbols at 1 Msym/s are independent, so the code's own spectrum shapes the chips')."""
    d = freqs - centre_mhz
    raised_cosine = np.where(np.abs(d) <= 11, 0.5 * (1 + np.cos(np.pi * d / 11)), 0.0)
    code = np.abs(np.exp(-2j * np.pi * np.outer(d / 11, np.arange(11))) @ np.array(ism._BARKER11, float)) ** 2
    return raised_cosine * code


@pytest.mark.parametrize("c", [10, 11, 12])
def test_wifi_fills_its_visible_part_with_the_802_11b_shape_at_the_reference_centre(spectra, c: int) -> None:
    freqs, p = spectra[c]
    lo, hi = ISM_CLASSES[c].visible_range_mhz()
    assert (lo, hi) == (2421.5, 2431.5)  # 22 MHz wide: every WiFi channel covers the whole window
    assert width_above(freqs, p, 20.0) == pytest.approx(hi - lo, abs=BIN_MHZ)
    # Its centre (outside the window for WiFi-2432) is where the 802.11b shape fits the visible part best (least
    # squares with a free scale, the bins within 0.5 MHz of the window's edges left out).
    inner = (freqs > lo + 0.5) & (freqs < hi - 0.5)
    candidates = np.arange(2415.0, 2440.0, 0.005)
    shapes = np.stack([wifi_dsss_spectrum(freqs[inner], fc) for fc in candidates])
    scale = shapes @ p[inner] / (shapes * shapes).sum(1)
    residual = ((p[inner] - scale[:, None] * shapes) ** 2).sum(1)
    assert abs(candidates[residual.argmin()] - ISM_CLASSES[c].centre_mhz) < BIN_MHZ


@pytest.mark.parametrize("snr", [-20.0, -4.0, 10.0, 20.0])
def test_snr_in_the_signals_own_bandwidth_matches_the_request(snr: float) -> None:
    synth = ISMSynthesizer(seed=5, edge_probability=0.0)
    out = synth.generate(torch.arange(15 * 120), snr_db=snr, return_clean=True)
    signal, noise = in_band_powers(out["x"], out["clean"], out["y"].tolist())
    for c in range(15):
        rows = out["y"] == c
        measured = 10 * torch.log10(signal[rows].sum() / noise[rows].sum())
        assert abs(float(measured) - snr) < 0.5, ISM_CLASSES[c].name


def test_noise_per_sample_follows_the_bandwidth_ratio() -> None:
    # At one SNR a Bluetooth vector carries 10 dB more noise relative to its power than a WiFi one (1 vs 10 MHz).
    synth = ISMSynthesizer(seed=2, edge_probability=0.0)
    out = synth.generate(torch.arange(15 * 100), snr_db=0.0, return_clean=True)
    noise = (out["x"] - out["clean"]).square().sum(1).mean(-1)
    clean = out["clean"].square().sum(1).mean(-1)
    ratio = noise / clean
    bt, wifi, zigbee = (float(ratio[out["y"] == c].mean()) for c in (0, 11, 13))
    assert 10 * np.log10(bt) == pytest.approx(10.0, abs=0.3)
    assert 10 * np.log10(wifi) == pytest.approx(0.0, abs=0.3)
    assert 10 * np.log10(zigbee) == pytest.approx(10 * np.log10(5.0), abs=0.3)
    # AGC: every vector leaves at unit mean power.
    assert torch.allclose(out["x"].square().sum(1).mean(-1), torch.ones(len(out["x"])), atol=1e-4)


def test_output_is_a_function_of_seed_and_index() -> None:
    synth = ISMSynthesizer(seed=11)
    whole = synth.generate(torch.arange(60))["x"]
    parts = torch.cat([synth.generate(torch.arange(i, min(i + 7, 60)))["x"] for i in range(0, 60, 7)])
    assert torch.equal(whole, parts)
    picked = synth.generate(torch.tensor([41, 3, 17]))["x"]
    assert torch.equal(picked, whole[[41, 3, 17]])
    assert not torch.equal(ISMSynthesizer(seed=12).generate(torch.arange(60))["x"], whole)
    labels = synth.generate(torch.arange(40))
    assert labels["y"].tolist() == [i % 15 for i in range(40)]
    assert labels["snr"].tolist() == [-20 + 2 * ((i // 15) % 21) for i in range(40)]


def test_bursts_start_or_end_inside_some_vectors() -> None:
    synth = ISMSynthesizer(seed=1, edge_probability=0.5)
    out = synth.generate(torch.arange(600), snr_db=20.0, return_clean=True)
    on = out["on_air"]
    partial = ~on.all(-1)
    assert 0.4 < float(partial.float().mean()) < 0.6  # half of the vectors hold an edge
    assert bool((on.sum(-1) >= 64).all())  # at least half of each vector is on air
    starts = partial & ~on[:, 0]
    ends = partial & ~on[:, -1]
    assert bool(starts.any()) and bool(ends.any()) and not bool((starts & ends).any())
    # Off air the clean signal is (almost) silent: the ramp is 1 us, 10 samples.
    power = out["clean"].square().sum(1)
    quiet = power[starts][:, :1].mean()
    assert float(quiet) < 1e-3 * float(power[starts].max(-1).values.mean())


def test_zigbee_chip_table_is_the_802_15_4_one() -> None:
    table = zigbee_chip_table()
    assert table.shape == (16, 32)
    bits = lambda row: "".join("1" if c > 0 else "0" for c in row.tolist())  # noqa: E731
    assert bits(table[0]) == "11011001110000110101001000101110"
    assert bits(table[1]) == "11101101100111000011010100100010"
    assert bits(table[8]) == "10001100100101100000011101111011"
    # Nearly orthogonal: any two symbols agree on at most 20 of 32 chips, apart from themselves.
    agreement = (table @ table.T + 32) / 2
    assert float(agreement.diagonal().min()) == 32
    assert float((agreement - 32 * torch.eye(16)).max()) <= 20


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="edge_probability"):
        ISMSynthesizer(edge_probability=1.5)
    with pytest.raises(ValueError, match="channel must be at 1e\\+07"):
        ISMSynthesizer(channel="rml2016")
    with pytest.raises(ValueError, match="length"):
        ISMSynthesizer(length=ism.SPAN)
    with pytest.raises(ValueError, match="snrs"):
        ISMSynthesizer(snrs=[])
