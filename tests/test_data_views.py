"""Input views and per-frame / per-channel normalisation of [B, 2, L] batches."""

from __future__ import annotations

import math

import pytest
import torch

from rfml.data.views import NORMS, VIEWS, View, apply_view


def random_batch(b: int = 4, length: int = 64, seed: int = 0, scale: float = 1.0, offset: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 2, length, generator=g) * scale + offset


def tone(length: int, k: int) -> torch.Tensor:
    """exp(j 2π k n / L) as a [1, 2, L] batch."""
    phase = 2 * math.pi * k * torch.arange(length, dtype=torch.float64) / length
    return torch.stack((phase.cos(), phase.sin())).unsqueeze(0).float()


def test_iq_view_is_identity() -> None:
    x = random_batch()
    assert torch.equal(apply_view(x, "iq"), x)


def test_amp_phase_of_known_values() -> None:
    x = torch.tensor([[[3.0, 0.0, -1.0, 0.0], [4.0, 2.0, 0.0, -1.0]]])
    out = apply_view(x, "amp_phase")
    assert out.dtype == torch.float32 and out.shape == (1, 2, 4)
    torch.testing.assert_close(out[0, 0], torch.tensor([5.0, 2.0, 1.0, 1.0]))
    torch.testing.assert_close(out[0, 1], torch.tensor([math.atan2(4, 3), math.pi / 2, math.pi, -math.pi / 2]))


@pytest.mark.parametrize(("length", "k"), [(64, 5), (64, -3), (63, 7), (17, 0)])
def test_fft_iq_puts_a_tone_in_its_shifted_bin(length: int, k: int) -> None:
    out = apply_view(tone(length, k), "fft_iq")
    # Orthonormal scaling: a unit-amplitude tone of L samples has energy L, all of it in one bin of value sqrt(L).
    expected_bin = length // 2 + k
    power = out[0, 0].square() + out[0, 1].square()
    assert int(power.argmax()) == expected_bin
    assert float(out[0, 0, expected_bin]) == pytest.approx(math.sqrt(length), rel=1e-5)
    assert float(out[0, 1, expected_bin]) == pytest.approx(0.0, abs=1e-4)
    rest = torch.cat((power[:expected_bin], power[expected_bin + 1 :]))
    assert float(rest.max()) < 1e-8 * length


@pytest.mark.parametrize("length", [64, 127])
def test_fft_iq_preserves_energy(length: int) -> None:
    x = random_batch(5, length, seed=2)
    out = apply_view(x, "fft_iq")
    assert out.shape == x.shape and out.dtype == torch.float32
    torch.testing.assert_close(out.square().sum(dim=(1, 2)), x.square().sum(dim=(1, 2)), rtol=1e-5, atol=1e-5)


def test_fft_amp_phase_is_polar_form_of_fft_iq() -> None:
    x = random_batch(3, 32, seed=4)
    cart = apply_view(x, "fft_iq")
    polar = apply_view(x, "fft_amp_phase")
    torch.testing.assert_close(polar[:, 0], torch.hypot(cart[:, 0], cart[:, 1]))
    torch.testing.assert_close(polar[:, 1], torch.atan2(cart[:, 1], cart[:, 0]))
    # A tone of bin k = 2 at length 32: amplitude sqrt(32) at index 16 + 2.
    assert float(apply_view(tone(32, 2), "fft_amp_phase")[0, 0, 18]) == pytest.approx(math.sqrt(32), rel=1e-5)


def test_views_are_per_example_in_a_batch() -> None:
    x = random_batch(6, 40, seed=9)
    for kind in VIEWS:
        whole = apply_view(x, kind, "l2")
        single = torch.cat([apply_view(x[i : i + 1], kind, "l2") for i in range(x.shape[0])])
        torch.testing.assert_close(whole, single)


@pytest.mark.parametrize("kind", VIEWS)
def test_l1_frames_have_unit_abs_sum(kind: str) -> None:
    out = apply_view(random_batch(4, 50, seed=1, scale=7.0), kind, "l1")
    torch.testing.assert_close(out.abs().sum(dim=(1, 2)), torch.ones(4))


@pytest.mark.parametrize("kind", VIEWS)
def test_l2_frames_have_unit_euclidean_norm(kind: str) -> None:
    out = apply_view(random_batch(4, 50, seed=1, scale=0.01), kind, "l2")
    torch.testing.assert_close(out.square().sum(dim=(1, 2)).sqrt(), torch.ones(4))


def test_l2_scales_frames_independently() -> None:
    x = random_batch(2, 16, seed=3)
    x[1] *= 1000.0
    out = apply_view(x, "iq", "l2")
    torch.testing.assert_close(out[0], x[0] / x[0].norm())
    torch.testing.assert_close(out[1], x[1] / x[1].norm())


@pytest.mark.parametrize("kind", VIEWS)
@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_zero_frame_stays_zero_and_finite(kind: str, norm: str) -> None:
    x = random_batch(3, 16)
    x[1] = 0.0
    out = apply_view(x, kind, norm)
    assert bool(torch.isfinite(out).all())
    # For the polar views too: the amplitude of zero is 0 and atan2(0, 0) is 0.
    assert bool((out[1] == 0).all())
    torch.testing.assert_close(out[0], apply_view(x[:1], kind, norm)[0])


def test_output_keeps_float64_input_dtype() -> None:
    x = random_batch().double()
    for kind in VIEWS:
        assert apply_view(x, kind, "l2").dtype == torch.float64


def test_standardize_fit_gives_zero_mean_unit_std_per_channel() -> None:
    x = random_batch(8, 128, seed=5, scale=3.0, offset=2.0)
    x[:, 1] = x[:, 1] * 0.1 - 5.0
    view = View("iq", "standardize").fit([x])
    out = view(x).double()
    torch.testing.assert_close(out.mean(dim=(0, 2)), torch.zeros(2, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        out.std(dim=(0, 2), unbiased=False), torch.ones(2, dtype=torch.float64), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("kind", VIEWS)
def test_fit_matches_direct_float64_statistics(kind: str) -> None:
    x = random_batch(6, 64, seed=6, scale=0.5, offset=1.0)
    view = View(kind, "standardize").fit([x])
    viewed = apply_view(x, kind).double()
    torch.testing.assert_close(view.mean, viewed.mean(dim=(0, 2)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(view.std, viewed.std(dim=(0, 2), unbiased=False), rtol=1e-12, atol=1e-12)


def test_streaming_fit_equals_fit_on_concatenation() -> None:
    # Uneven batch sizes and a large offset exercise the parallel merge where sum-of-squares would lose digits.
    batches = [random_batch(b, 32, seed=s, offset=1e4) for s, b in enumerate((1, 5, 2, 9))]
    streamed = View("amp_phase", "standardize").fit(iter(batches))
    whole = View("amp_phase", "standardize").fit([torch.cat(batches)])
    torch.testing.assert_close(streamed.mean, whole.mean, rtol=1e-12, atol=0)
    torch.testing.assert_close(streamed.std, whole.std, rtol=1e-9, atol=0)


def test_fit_accepts_loader_tuples() -> None:
    x = random_batch(4, 32, seed=8)
    labels = torch.zeros(4, dtype=torch.int64)
    from_tuples = View("iq", "standardize").fit([(x[:2], labels[:2], labels[:2]), (x[2:], labels[2:], labels[2:])])
    from_tensor = View("iq", "standardize").fit([x])
    torch.testing.assert_close(from_tuples.mean, from_tensor.mean)
    torch.testing.assert_close(from_tuples.std, from_tensor.std)


def test_constant_channel_gives_finite_output() -> None:
    x = random_batch(4, 16)
    x[:, 0] = 3.0
    view = View("iq", "standardize").fit([x])
    assert float(view.std[0]) == pytest.approx(view.eps)
    out = view(x)
    assert bool(torch.isfinite(out).all())
    assert bool((out[:, 0] == 0).all())


def test_unfitted_standardize_raises() -> None:
    view = View("fft_iq", "standardize")
    assert not view.fitted
    with pytest.raises(RuntimeError, match=r"call \.fit\(batches\) on the training split"):
        view(random_batch())


def test_fit_on_nothing_raises() -> None:
    with pytest.raises(ValueError, match="at least one non-empty"):
        View("iq", "standardize").fit([])


def test_state_dict_round_trip() -> None:
    x = random_batch(4, 32, seed=10, offset=0.3)
    view = View("fft_amp_phase", "standardize").fit([x])
    state = view.state_dict()
    assert state["kind"] == "fft_amp_phase" and state["fitted"] is True
    assert all(isinstance(v, float) for v in state["mean"] + state["std"])
    restored = View("fft_amp_phase", "standardize").load_state_dict(state)
    assert torch.equal(restored(x), view(x))
    assert torch.equal(View.from_state_dict(state)(x), view(x))


def test_load_state_dict_rejects_mismatch_and_bad_values() -> None:
    state = View("iq", "standardize").fit([random_batch()]).state_dict()
    with pytest.raises(ValueError, match="not View"):
        View("amp_phase", "standardize").load_state_dict(state)
    with pytest.raises(ValueError, match="missing keys"):
        View("iq", "standardize").load_state_dict({"kind": "iq"})
    with pytest.raises(ValueError, match="std finite and positive"):
        View("iq", "standardize").load_state_dict({**state, "std": [1.0, 0.0]})


def test_view_class_matches_apply_view_for_stateless_norms() -> None:
    x = random_batch(3, 24, seed=12)
    for kind in VIEWS:
        for norm in ("none", "l1", "l2"):
            assert torch.equal(View(kind, norm)(x), apply_view(x, kind, norm))


def test_repr_names_kind_norm_and_fit_state() -> None:
    assert repr(View("fft_iq", "l2")) == "View(kind='fft_iq', norm='l2')"
    assert repr(View("iq", "standardize")) == "View(kind='iq', norm='standardize', fitted=False)"
    assert "mean=[" in repr(View("iq", "standardize").fit([random_batch()]))


@pytest.mark.parametrize(
    ("kind", "norm", "match"),
    [("spectrogram", "none", "kind must be one of"), ("iq", "max", "norm must be one of")],
)
def test_bad_kind_or_norm_lists_allowed_values(kind: str, norm: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as err:
        View(kind, norm)
    assert "fft_amp_phase" in str(err.value) or "standardize" in str(err.value)
    with pytest.raises(ValueError, match=match):
        apply_view(random_batch(), kind, norm)


def test_apply_view_refuses_standardize() -> None:
    with pytest.raises(ValueError, match="needs fitted statistics"):
        apply_view(random_batch(), "iq", "standardize")


@pytest.mark.parametrize(
    "x", [torch.zeros(2, 3, 8), torch.zeros(2, 8), torch.zeros(2, 2, 8, dtype=torch.int64)], ids=["rows", "2d", "int"]
)
def test_bad_batch_shape_or_dtype_is_rejected(x: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="x must be"):
        apply_view(x, "iq")


def test_allowed_values_are_exported() -> None:
    assert VIEWS == ("iq", "amp_phase", "fft_iq", "fft_amp_phase")
    assert NORMS == ("none", "rms", "l1", "l2", "standardize")


def test_rms_norm_puts_every_frame_at_unit_power_whatever_its_scale() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 2, 64) * torch.tensor([0.01, 1.0, 3.0, 100.0]).view(4, 1, 1)
    out = apply_view(x, "iq", "rms")
    torch.testing.assert_close(out.square().sum(1).mean(1), torch.ones(4))
    # A real RadioML frame (L1-normalised: divided by the sum of its magnitudes) and the same frame at its physical
    # scale are one input after the norm.
    l1_frame = x / torch.hypot(x[:, 0], x[:, 1]).sum(-1).view(4, 1, 1)
    torch.testing.assert_close(apply_view(l1_frame, "iq", "rms"), out)
    assert torch.equal(apply_view(torch.zeros(1, 2, 8), "iq", "rms"), torch.zeros(1, 2, 8))


def test_rms_norm_scales_the_signal_before_the_view_so_phase_is_untouched() -> None:
    torch.manual_seed(1)
    x = 5.0 * torch.randn(3, 2, 32)
    amp_phase = View("amp_phase", "rms")(x)
    torch.testing.assert_close(amp_phase[:, 1], torch.atan2(x[:, 1], x[:, 0]))
    torch.testing.assert_close(amp_phase[:, 0].square().mean(-1), torch.ones(3))
    spectrum = View("fft_iq", "rms")(x)
    torch.testing.assert_close(spectrum.square().sum(1).mean(-1), torch.ones(3))
