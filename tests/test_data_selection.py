"""Band selection and sample selection of frequency components (Zhang et al., SPAWC 2019)."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest
import torch

from rfml.data.selection import (
    METHODS,
    BandSelect,
    Pipeline,
    SampleSelect,
    band_bins,
    bin_frequencies_mhz,
    visible_classes,
)
from rfml.data.views import View

BANDS_4MHZ = [(2422.0, 2424.0), (2429.0, 2431.0)]
BANDS_2MHZ = [(2429.0, 2431.0)]
FS = 10e6
L = 128

# The 15 ISM classes: Bluetooth 0-9 (1 MHz), WiFi 10-12 (22 MHz), Zigbee 13-14 (2 MHz).
ISM_CLASS_RANGES = (
    [(c - 0.5, c + 0.5) for c in range(2422, 2432)]
    + [(c - 11.0, c + 11.0) for c in (2422, 2427, 2432)]
    + [(c - 1.0, c + 1.0) for c in (2425, 2430)]
)


def tone_at_bin(k: int, length: int = L, fs: float = FS) -> torch.Tensor:
    """exp(2πj f n / fs) with f the baseband offset of fftshifted bin k, as a float64 [1, 2, L] batch."""
    f = (k - length // 2) * fs / length
    phase = 2 * math.pi * f * torch.arange(length, dtype=torch.float64) / fs
    return torch.stack((phase.cos(), phase.sin())).unsqueeze(0)


def random_batch(b: int, length: int = L, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 2, length, generator=g, dtype=torch.float64)


def structured_batch(b: int, length: int, seed: int, scale_decay: float = 0.8) -> torch.Tensor:
    """Gaussian data with a random rotation, decaying per-direction scales and a non-zero mean per row."""
    g = torch.Generator().manual_seed(1234)  # the same distribution for every seed
    q, _ = torch.linalg.qr(torch.randn(2, length, length, generator=g, dtype=torch.float64))
    scales = scale_decay ** torch.arange(length, dtype=torch.float64)
    offset = torch.randn(2, length, generator=g, dtype=torch.float64) * 3
    z = torch.randn(b, 2, length, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.einsum("bcl,clm->bcm", z * scales, q.transpose(1, 2)) + offset


def numpy_pca(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row mean [2, L], top-k directions [2, L, k] and eigenvalues [2, k] via np.cov."""
    means, comps, eigs = [], [], []
    for c in range(2):
        rows = x[:, c, :]
        w, v = np.linalg.eigh(np.cov(rows, rowvar=False))
        order = np.argsort(w)[::-1][:k]
        means.append(rows.mean(axis=0))
        comps.append(v[:, order])
        eigs.append(w[order])
    return np.stack(means), np.stack(comps), np.stack(eigs)


def assert_same_up_to_sign(a: np.ndarray, b: np.ndarray, atol: float = 1e-8) -> None:
    """Columns of a and b ([2, L, K]) agree up to a per-column sign."""
    signs = np.sign(np.einsum("clk,clk->ck", a, b))
    np.testing.assert_allclose(a, b * signs[:, None, :], atol=atol)


# --- frequencies, bands, classes ---------------------------------------------------------------------------------


def test_bin_frequencies() -> None:
    f = bin_frequencies_mhz()
    assert f.dtype == torch.float64 and f.shape == (128,)
    assert f[0].item() == pytest.approx(2421.5)
    assert f[64].item() == pytest.approx(2426.5)
    assert f[127].item() == pytest.approx(2426.5 + 63 * 0.078125)
    assert (f[1] - f[0]).item() == pytest.approx(0.078125)


def test_band_bins_match_the_paper_counts() -> None:
    four = band_bins(BANDS_4MHZ)
    two = band_bins(BANDS_2MHZ)
    assert four.dtype == torch.int64 and two.dtype == torch.int64
    assert four.tolist() == list(range(7, 33)) + list(range(96, 122))
    assert len(four) == 52
    assert two.tolist() == list(range(96, 122))
    assert len(two) == 26


def test_band_bins_are_ascending_whatever_the_band_order() -> None:
    assert torch.equal(band_bins(BANDS_4MHZ[::-1]), band_bins(BANDS_4MHZ))


def test_band_edges_exactly_on_a_bin_are_included() -> None:
    f = bin_frequencies_mhz()
    bins = band_bins([(f[10].item(), f[12].item())])
    assert bins.tolist() == [10, 11, 12]
    # The full window keeps every bin.
    assert band_bins([(2421.5, 2431.5)]).tolist() == list(range(128))


@pytest.mark.parametrize(
    ("bands", "match"),
    [
        ([(2424.0, 2422.0)], "lo < hi"),
        ([(2423.0, 2423.0)], "lo < hi"),
        ([(2420.0, 2423.0)], r"not inside the sampled window \[2421.5, 2431.5\]"),
        ([(2430.0, 2432.0)], "not inside the sampled window"),
        ([(2422.0, 2425.0), (2424.0, 2426.0)], "overlap"),
        ([(2422.0, 2422.04)], "select no bins"),
        ([], "non-empty"),
        ([(2422.0,)], "pair"),
    ],
)
def test_band_bins_errors(bands: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        band_bins(bands)


def test_touching_bands_are_allowed() -> None:
    assert band_bins([(2422.0, 2423.0), (2423.0, 2424.0)]).tolist() == band_bins([(2422.0, 2424.0)]).tolist()


def test_visible_classes_match_the_paper() -> None:
    four = visible_classes(BANDS_4MHZ, ISM_CLASS_RANGES)
    # BT 2422, 2423, 2424, 2429, 2430, 2431; WiFi 2422, 2427, 2432; Zigbee 2430.
    assert four == [0, 1, 2, 7, 8, 9, 10, 11, 12, 14]
    assert len(four) == 10
    two = visible_classes(BANDS_2MHZ, ISM_CLASS_RANGES)
    # BT 2429, 2430, 2431; the three WiFi channels; Zigbee 2430.
    assert two == [7, 8, 9, 10, 11, 12, 14]
    assert len(two) == 7


def test_touching_a_band_edge_does_not_make_a_class_visible() -> None:
    # Zigbee 2425 occupies [2424, 2426] and only touches the (2422, 2424) band.
    assert visible_classes([(2422.0, 2424.0)], [(2424.0, 2426.0), (2423.9, 2426.0)]) == [1]


def test_visible_classes_rejects_bad_ranges() -> None:
    with pytest.raises(ValueError, match="class_ranges"):
        visible_classes(BANDS_4MHZ, [(2425.0, 2424.0)])


# --- BandSelect ----------------------------------------------------------------------------------------------------


def test_band_select_is_plain_indexing() -> None:
    select = BandSelect(BANDS_4MHZ)
    assert select.output_length == 52
    assert torch.equal(select.bins, band_bins(BANDS_4MHZ))
    x = random_batch(5).float()
    out = select(x)
    assert out.shape == (5, 2, 52) and out.dtype == torch.float32
    assert torch.equal(out, x[..., select.bins])


@pytest.mark.parametrize("k", [20, 100])
def test_tone_in_a_band_is_the_argmax_and_one_outside_vanishes(k: int) -> None:
    view = View("fft_amp_phase")
    select = BandSelect(BANDS_4MHZ)
    inside = select(view(tone_at_bin(k)))
    amplitude = inside[0, 0]
    position = select.bins.tolist().index(k)
    assert int(amplitude.argmax()) == position
    assert amplitude[position].item() == pytest.approx(math.sqrt(L))
    # A tone in a bin outside both bands (2426.5 MHz, DC; and 2421.5 MHz, bin 0) leaves no energy behind.
    for outside_bin in (64, 0, 50, 127):
        leaked = select(view(tone_at_bin(outside_bin)))[0, 0]
        assert leaked.abs().max().item() < 1e-5 * math.sqrt(L)


def test_band_select_rejects_wrong_length_and_shape() -> None:
    select = BandSelect(BANDS_2MHZ)
    with pytest.raises(ValueError, match=r"length=128.*L=64"):
        select(random_batch(2, length=64))
    with pytest.raises(ValueError, match=r"\[B, 2, L\]"):
        select(torch.zeros(2, 3, 128))


def test_band_select_state_round_trip() -> None:
    select = BandSelect(BANDS_4MHZ)
    state = json.loads(json.dumps(select.state_dict()))
    again = BandSelect.from_state_dict(state)
    x = random_batch(3)
    assert torch.equal(again(x), select(x))
    assert again.load_state_dict(state) is again
    with pytest.raises(ValueError, match="not for BandSelect"):
        BandSelect(BANDS_2MHZ).load_state_dict(state)
    with pytest.raises(ValueError, match="missing keys"):
        BandSelect.from_state_dict({"bands": BANDS_4MHZ})
    assert "output_length=52" in repr(select)


# --- SampleSelect ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("rate", [2, 4, 8, 16])
def test_sample_select_output_shapes(method: str, rate: int) -> None:
    train = random_batch(40, seed=1)
    select = SampleSelect(method, rate).fit([train[:20], train[20:]])
    assert select.fitted and select.output_length == L // rate
    out = select(random_batch(3, seed=2).float())
    assert out.shape == (3, 2, L // rate) and out.dtype == torch.float32


def test_uniform_picks_every_rate_th_bin_including_dc() -> None:
    assert SampleSelect("uniform", 4).bins.tolist() == list(range(0, 128, 4))
    assert SampleSelect("uniform", 16).bins.tolist() == [0, 16, 32, 48, 64, 80, 96, 112]
    assert SampleSelect("uniform", 1).bins.tolist() == list(range(128))
    # The grid is aligned on DC (L // 2), so it stays in when rate does not divide L // 2.
    assert SampleSelect("uniform", 128).bins.tolist() == [64]
    assert SampleSelect("uniform", 2, length=6).bins.tolist() == [1, 3, 5]
    x = random_batch(2)
    assert torch.equal(SampleSelect("uniform", 8)(x), x[..., ::8])


def test_random_is_fixed_by_seed() -> None:
    a, b, c = SampleSelect("random", 4, seed=3), SampleSelect("random", 4, seed=3), SampleSelect("random", 4, seed=4)
    assert a.bins.tolist() == b.bins.tolist()
    assert a.bins.tolist() != c.bins.tolist()
    bins = a.bins.tolist()
    assert bins == sorted(set(bins)) and len(bins) == 32 and 0 <= bins[0] and bins[-1] < 128
    x = random_batch(2)
    assert torch.equal(a(x), x[..., a.bins])
    assert torch.equal(a(x), b(x))


def test_magnitude_finds_planted_strong_bins() -> None:
    g = torch.Generator().manual_seed(5)
    planted = [3, 17, 40, 64, 65, 90, 111, 127]
    x = torch.rand(64, 2, L, generator=g, dtype=torch.float64)
    x[:, 0, planted] += 10.0
    select = SampleSelect("magnitude", 16)
    assert not select.fitted
    select.fit([{"x": x[:32]}, (x[32:], torch.zeros(32))])
    assert select.fitted
    assert select.bins.tolist() == planted
    torch.testing.assert_close(select.amplitude_mean, x[:, 0].mean(dim=0))
    assert torch.equal(select(x), x[..., planted])


def test_pca_matches_numpy_on_the_train_set() -> None:
    train = structured_batch(300, 32, seed=0)
    select = SampleSelect("pca", 4, length=32).fit(train.split(64))
    mean, comps, eigs = numpy_pca(train.numpy(), 8)
    np.testing.assert_allclose(select.mean.numpy(), mean, atol=1e-10)
    assert_same_up_to_sign(select.components.numpy(), comps)
    np.testing.assert_allclose(select.explained_variance.numpy(), eigs, rtol=1e-8)
    total = np.stack([np.trace(np.cov(train[:, c].numpy(), rowvar=False)) for c in range(2)])
    np.testing.assert_allclose(select.explained_variance_ratio.numpy(), eigs / total[:, None], rtol=1e-8)
    # Components are orthonormal, in decreasing variance order, and each one's largest entry is positive.
    gram = torch.einsum("clk,clm->ckm", select.components, select.components)
    torch.testing.assert_close(gram, torch.eye(8, dtype=torch.float64).expand(2, 8, 8))
    assert (select.explained_variance.diff(dim=1) <= 0).all()
    peak = select.components.abs().argmax(dim=1, keepdim=True)
    assert (select.components.gather(1, peak) > 0).all()


def test_pca_transforms_test_data_with_train_statistics_only() -> None:
    train = structured_batch(200, 32, seed=0)
    test = structured_batch(50, 32, seed=1)
    select = SampleSelect("pca", 2, length=32).fit([train])
    components = select.components.clone()
    mean, comps, _ = numpy_pca(train.numpy(), 16)
    comps = comps * np.sign(np.einsum("clk,clk->ck", select.components.numpy(), comps))[:, None, :]
    expected = np.einsum("bcl,clk->bck", test.numpy() - mean, comps)
    np.testing.assert_allclose(select(test).numpy(), expected, atol=1e-8)
    # Transforming (other) test data leaves the fitted statistics alone.
    select(test * 5 + 1)
    assert torch.equal(select.components, components)
    # Fitting on train + test would give different components: the train-only fit never saw the test set.
    leaky = SampleSelect("pca", 2, length=32).fit([train, test * 5 + 1])
    assert not torch.allclose(leaky.components, components)


def test_pca_keeps_everything_at_rate_one_even_for_rank_deficient_data() -> None:
    g = torch.Generator().manual_seed(7)
    basis = torch.randn(2, 3, L, generator=g, dtype=torch.float64)
    train = torch.einsum("bcr,crl->bcl", torch.randn(50, 2, 3, generator=g, dtype=torch.float64), basis) + 2.0
    select = SampleSelect("pca", 1).fit([train])
    out = select(train)
    assert out.shape == (50, 2, L)
    rebuilt = torch.einsum("bck,clk->bcl", out, select.components) + select.mean
    torch.testing.assert_close(rebuilt, train, rtol=0, atol=1e-9)
    # Rank 3: the first three components carry all the variance.
    torch.testing.assert_close(select.explained_variance_ratio[:, :3].sum(dim=1), torch.ones(2, dtype=torch.float64))


def test_pca_streaming_fit_equals_one_batch_fit() -> None:
    train = structured_batch(120, 16, seed=3)
    whole = SampleSelect("pca", 2, length=16).fit([train])
    streamed = SampleSelect("pca", 2, length=16).fit(train.split(7))
    torch.testing.assert_close(streamed.mean, whole.mean)
    torch.testing.assert_close(streamed.components, whole.components)


@pytest.mark.parametrize("method", METHODS)
def test_state_dict_round_trip_gives_identical_outputs(method: str) -> None:
    train = structured_batch(100, L, seed=0)
    select = SampleSelect(method, 8, seed=11).fit([train])
    state = select.state_dict()
    state = json.loads(json.dumps(state))  # plain Python types only
    again = SampleSelect.from_state_dict(state)
    assert again.fitted
    x = structured_batch(4, L, seed=9)
    assert torch.equal(again(x), select(x))
    assert torch.equal(SampleSelect(method, 8, seed=11).load_state_dict(state)(x), select(x))
    assert repr(again) == repr(select)
    with pytest.raises(ValueError, match="state is for"):
        SampleSelect(method, 4, seed=11).load_state_dict(state)


def test_unfitted_state_round_trip_stays_unfitted() -> None:
    state = SampleSelect("pca", 4).state_dict()
    again = SampleSelect.from_state_dict(state)
    assert not again.fitted
    with pytest.raises(RuntimeError, match="not fitted"):
        again(random_batch(1))


def test_load_state_dict_rejects_bad_values() -> None:
    state = SampleSelect("pca", 4, length=16).fit([structured_batch(20, 16, seed=0)]).state_dict()
    state["components"] = state["components"][:1]
    with pytest.raises(ValueError, match="shaped"):
        SampleSelect.from_state_dict(state)
    with pytest.raises(ValueError, match="missing keys"):
        SampleSelect.from_state_dict({"method": "pca", "rate": 4, "length": 16, "seed": 0})
    random_state = SampleSelect("random", 4).state_dict()
    random_state["bins"] = list(range(32))
    with pytest.raises(ValueError, match="differ"):
        SampleSelect.from_state_dict(random_state)


@pytest.mark.parametrize("rate", [0, 3, 5, -2, 2.0, True, 256])
def test_bad_rate(rate: object) -> None:
    with pytest.raises(ValueError, match="rate must be an int dividing length=128"):
        SampleSelect("uniform", rate)  # type: ignore[arg-type]


def test_bad_method() -> None:
    with pytest.raises(ValueError, match="method must be one of"):
        SampleSelect("largest", 4)


@pytest.mark.parametrize("method", ["magnitude", "pca"])
def test_unfitted_use_raises(method: str) -> None:
    select = SampleSelect(method, 4)
    with pytest.raises(RuntimeError, match=r"fit.*training split"):
        select(random_batch(2))
    if method == "pca":
        with pytest.raises(RuntimeError, match="not fitted"):
            select.explained_variance_ratio  # noqa: B018


def test_explained_variance_ratio_is_pca_only() -> None:
    with pytest.raises(ValueError, match="only defined for method='pca'"):
        SampleSelect("uniform", 4).explained_variance_ratio  # noqa: B018


@pytest.mark.parametrize("method", METHODS)
def test_wrong_input_length(method: str) -> None:
    select = SampleSelect(method, 4).fit([random_batch(4)])
    with pytest.raises(ValueError, match=r"length=128.*L=52"):
        select(random_batch(2, length=52))
    with pytest.raises(ValueError, match="length=128"):
        SampleSelect(method, 4).fit([random_batch(4, length=52)])


def test_fit_needs_data() -> None:
    with pytest.raises(ValueError, match="at least one non-empty"):
        SampleSelect("uniform", 4).fit([])
    with pytest.raises(ValueError, match="at least 2"):
        SampleSelect("pca", 4).fit([random_batch(1)])


# --- Pipeline ----------------------------------------------------------------------------------------------------


def test_pipeline_composes_view_band_and_sample_selection() -> None:
    view = View("fft_amp_phase")
    band = BandSelect(BANDS_4MHZ)
    train = random_batch(60, seed=0)
    sample = SampleSelect("pca", 4, length=band.output_length).fit([band(view(train))])
    pipe = Pipeline(view, band, sample)
    assert pipe.steps == (view, band, sample)
    x = random_batch(3, seed=1)
    out = pipe(x)
    assert out.shape == (3, 2, 13)
    assert torch.equal(out, sample(band(view(x))))
    again = pickle.loads(pickle.dumps(pipe))
    assert torch.equal(again(x), out)
    assert repr(pipe).startswith("Pipeline(View(kind='fft_amp_phase'") and "BandSelect(" in repr(pipe)
    assert torch.equal(Pipeline()(x), x)
    with pytest.raises(ValueError, match="step 1 must be callable"):
        Pipeline(view, 3)  # type: ignore[arg-type]
