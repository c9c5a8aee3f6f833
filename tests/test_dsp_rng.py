"""The counter-based generator: exact hash, distributions, and independence from batch layout."""

from __future__ import annotations

import numpy as np
import torch

from rfml.dsp import rng


def splitmix64_reference(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def test_mix64_matches_unsigned_reference() -> None:
    values = np.array([0, 1, 2**63 - 1, 2**63, 2**64 - 1, 0x9E3779B97F4A7C15, 123456789], dtype=np.uint64)
    expected = splitmix64_reference(values).view(np.int64)
    got = rng.mix64(torch.from_numpy(values.view(np.int64))).numpy()
    np.testing.assert_array_equal(got, expected)


def test_uniform_moments_and_range() -> None:
    u = rng.uniform(rng.example_keys(0, torch.arange(256)), 1, 4096).double()
    assert 0.0 < float(u.min()) and float(u.max()) < 1.0
    assert abs(float(u.mean()) - 0.5) < 2e-3
    assert abs(float(u.var()) - 1 / 12) < 1e-3


def test_complex_normal_is_circular_unit_power_gaussian() -> None:
    iq = rng.complex_normal(rng.example_keys(1, torch.arange(256)), 2, 4096).double()
    z = torch.complex(iq[:, 0], iq[:, 1])
    assert abs(float(z.abs().pow(2).mean()) - 1.0) < 5e-3
    assert abs(float(z.real.var()) - 0.5) < 5e-3 and abs(float(z.imag.var()) - 0.5) < 5e-3
    assert abs(float((z.real * z.imag).mean())) < 3e-3
    x = z.real / z.real.std()
    assert abs(float(x.pow(4).mean()) - 3.0) < 0.05  # Gaussian kurtosis
    assert abs(float((z[:, 1:] * z[:, :-1].conj()).mean().abs())) < 3e-3  # white


def test_integers_are_uniform_over_range() -> None:
    draws = rng.integers(rng.example_keys(2, torch.arange(100)), 3, 1000, 7)
    assert int(draws.min()) == 0 and int(draws.max()) == 6
    counts = torch.bincount(draws.flatten(), minlength=7).double()
    chi2 = float(((counts - 1e5 / 7) ** 2 / (1e5 / 7)).sum())
    assert chi2 < 22.5  # 6 degrees of freedom, p = 0.001


def test_streams_and_keys_are_independent_of_batch_layout() -> None:
    keys = rng.example_keys(7, torch.tensor([5, 9, 1000]))
    single = rng.example_keys(7, torch.tensor([9]))
    assert torch.equal(keys[1:2], single)
    assert torch.equal(rng.random_bits(keys, 4, 10)[1:2], rng.random_bits(single, 4, 10))
    assert not torch.equal(rng.random_bits(keys, 4, 10), rng.random_bits(keys, 5, 10))
    assert not torch.equal(rng.example_keys(8, torch.tensor([5, 9, 1000])), keys)
