"""Physics checks of the synthesizer: symbol error rates, SNR and occupied bandwidth."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm

from rfml.dsp import CLASSES_RML2016A, CLASSES_RML2018A, Synthesizer, esn0_db
from rfml.dsp.verify import (
    SER_CHECK_POINTS,
    measure_symbol_error_rate,
    measured_snr_db,
    occupied_bandwidth,
    power_share_within,
    power_spectrum,
    rrc_occupied_bandwidth,
    symbol_error_rate,
)


def test_closed_form_symbol_error_rates() -> None:
    assert symbol_error_rate("BPSK", 9.59) == pytest.approx(1.0e-5, rel=0.02)  # the classic 9.6 dB for 1e-5
    q = norm.sf(math.sqrt(10.0))  # an independent Q function, at Es/N0 = 10 dB
    assert symbol_error_rate("QPSK", 10.0) == pytest.approx(1 - (1 - q) ** 2, rel=1e-9)
    per_axis = 1.5 * norm.sf(math.sqrt(3 * 100 / 15))  # 16QAM at 20 dB: 2 (1 - 1/4) Q(sqrt(3 Es/N0 / 15))
    assert symbol_error_rate("16QAM", 20.0) == pytest.approx(1 - (1 - per_axis) ** 2, rel=1e-9)
    for name, order in (("BPSK", 2), ("QPSK", 4), ("16QAM", 16), ("64QAM", 64)):  # guessing at -40 dB
        assert symbol_error_rate(name, -40.0) == pytest.approx((order - 1) / order, rel=0.02)
    with pytest.raises(ValueError, match="name must be one of"):
        symbol_error_rate("8PSK", 10.0)


@pytest.mark.parametrize("name", list(SER_CHECK_POINTS))
def test_awgn_symbol_error_rate_matches_closed_form(name: str) -> None:
    assert esn0_db(0.0, 4) == pytest.approx(6.0206, abs=1e-4)  # the SNR definition the measurement uses
    for point, esn0 in enumerate(SER_CHECK_POINTS[name]):
        expected = symbol_error_rate(name, esn0)
        assert 1e-3 <= expected <= 1e-1
        measured, errors = measure_symbol_error_rate(name, esn0, min_errors=2000, seed=point)
        assert errors >= 500, f"{name} at {esn0} dB counted only {errors} errors"
        assert measured == pytest.approx(expected, rel=0.10), f"{name} Es/N0 {esn0} dB"


@pytest.mark.parametrize("snr_db", [-10, 0, 10])
def test_measured_snr_matches_requested_for_every_class(snr_db: int) -> None:
    classes = sorted(set(CLASSES_RML2016A) | set(CLASSES_RML2018A))
    synth = Synthesizer(classes, length=128, channel="rml2016", seed=5)
    num_classes = len(classes)
    batch = synth.generate(range(2000 * num_classes), snr_db=snr_db, return_clean=True)
    per_class = torch.zeros(num_classes).index_add_(0, batch["y"], measured_snr_db(batch)) / 2000
    assert torch.bincount(batch["y"]).tolist() == [2000] * num_classes
    worst = int((per_class - snr_db).abs().argmax())
    assert (per_class - snr_db).abs().max() < 0.2, f"{classes[worst]}: {per_class[worst]:.3f} dB"
    assert (batch["snr"] == snr_db).all()


def test_gnuradio_compat_snr_is_twice_the_label() -> None:
    """RadioML 2016 used the noise amplitude 10**(-snr/10) as a standard deviation."""
    synth = Synthesizer(["QPSK", "8PSK"], length=128, channel="rml2016-compat", seed=2)
    for label in (-6, 4):
        batch = synth.generate(range(2000), snr_db=label, return_clean=True)
        assert float(measured_snr_db(batch).mean()) == pytest.approx(2 * label, abs=0.2)
        # L1 frame normalisation: each noisy frame's |x| sums to one
        magnitude = batch["x"].pow(2).sum(1).sqrt().sum(1)
        torch.testing.assert_close(magnitude, torch.ones(2000), rtol=1e-4, atol=0)


@pytest.mark.parametrize("rolloff", [0.2, 0.35, 0.5])
def test_rrc_power_bandwidth(rolloff: float) -> None:
    """(1 + rolloff) * symbol_rate is the full RRC band: it must hold >= 99.5 % of the power, and the
    99 % power bandwidth must match the closed form for the raised-cosine spectrum within 5 %
    (the 99 % bandwidth itself is below (1 + rolloff) * Rs: 1.167 Rs at roll-off 0.35)."""
    synth = Synthesizer(["QPSK"], length=4096, samples_per_symbol=8, channel="clean", rolloff=rolloff)
    freqs, psd = power_spectrum(synth.generate(range(64), return_clean=True)["clean"], sample_rate=8)  # in Rs
    assert occupied_bandwidth(freqs, psd) == pytest.approx(rrc_occupied_bandwidth(rolloff), rel=0.05)
    assert power_share_within(freqs, psd, (1 + rolloff) / 2) >= 0.995


def test_rrc_closed_form_bandwidth_limits() -> None:
    assert rrc_occupied_bandwidth(0.35) == pytest.approx(1.1666, abs=1e-3)
    assert rrc_occupied_bandwidth(0.35, fraction=0.999999) == pytest.approx(1.35, abs=0.01)
