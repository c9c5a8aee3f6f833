"""SignalAugment and its transforms: power and SNR kept, exact inverses, batched shift, seeding, eval identity."""

from __future__ import annotations

import math

import pytest
import torch

from rfml.trainers.augment import SignalAugment, circular_shift, conjugate, reverse_time, rotate_phase

B, L = 6, 32


def frames(seed: int = 0, batch: int = B, length: int = L, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(batch, 2, length, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def params(seed: int = 1, batch: int = B, length: int = L) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "angle": torch.rand(batch, generator=g, dtype=torch.float64) * 2 * math.pi,
        "conj": torch.rand(batch, generator=g) < 0.5,
        "rev": torch.rand(batch, generator=g) < 0.5,
        "shift": torch.randint(0, length, (batch,), generator=g),
    }


def augment_all(x: torch.Tensor, prm: dict[str, torch.Tensor]) -> torch.Tensor:
    x = rotate_phase(x, prm["angle"])
    x = conjugate(x, prm["conj"])
    x = reverse_time(x, prm["rev"])
    return circular_shift(x, prm["shift"])


def power(x: torch.Tensor) -> torch.Tensor:
    return (x**2).sum(dim=1).mean(dim=-1)  # mean |I+jQ|² per frame


TRANSFORMS = {
    "rotate_phase": lambda x, prm: rotate_phase(x, prm["angle"]),
    "conjugate": lambda x, prm: conjugate(x, prm["conj"]),
    "reverse_time": lambda x, prm: reverse_time(x, prm["rev"]),
    "circular_shift": lambda x, prm: circular_shift(x, prm["shift"]),
    "all": augment_all,
}


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_each_transform_keeps_the_power_of_each_frame(name: str) -> None:
    x, prm = frames(), params()
    out = TRANSFORMS[name](x, prm)
    assert out.shape == x.shape and out.dtype == x.dtype
    torch.testing.assert_close(power(out), power(x), rtol=1e-5, atol=1e-5)


def test_the_masks_and_params_do_act() -> None:
    """Each transform changes the frames it is asked to change, and only those."""
    x, prm = frames(), params()
    mask = torch.tensor([True, False, True, False, False, True])
    assert torch.equal(conjugate(x, mask)[:, 0], x[:, 0])
    torch.testing.assert_close(conjugate(x, mask)[mask, 1], -x[mask, 1])
    torch.testing.assert_close(conjugate(x, mask)[~mask], x[~mask])
    torch.testing.assert_close(reverse_time(x, mask)[mask], x[mask].flip(-1))
    torch.testing.assert_close(reverse_time(x, mask)[~mask], x[~mask])
    quarter = torch.full((B,), math.pi / 2)
    # (I + jQ)·j = −Q + jI
    torch.testing.assert_close(rotate_phase(x, quarter), torch.stack((-x[:, 1], x[:, 0]), dim=1))
    assert not torch.allclose(circular_shift(x, prm["shift"]), x)


def test_a_clean_noisy_pair_keeps_its_snr() -> None:
    g = torch.Generator().manual_seed(7)
    symbols = torch.randint(0, 4, (B, L // 4), generator=g)
    s = torch.exp(1j * (math.pi / 4 + math.pi / 2 * symbols.double())).repeat_interleave(4, dim=-1)  # QPSK, 4 sps
    n = 0.3 * torch.randn(B, L, generator=g, dtype=torch.complex128)
    clean = torch.stack((s.real, s.imag), dim=1)
    noisy = torch.stack(((s + n).real, (s + n).imag), dim=1)

    def snr_db(c: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 10 * torch.log10(power(c) / power(y - c))

    before = snr_db(clean, noisy)
    prm = params()
    after = snr_db(augment_all(clean, prm), augment_all(noisy, prm))
    assert torch.all((after - before).abs() < 1e-4), (before, after)
    assert before.std() > 0.05  # the frames differ in SNR, so a mix-up of frames would be caught


def test_each_transform_has_its_inverse() -> None:
    x, prm = frames(), params()
    torch.testing.assert_close(rotate_phase(rotate_phase(x, prm["angle"]), -prm["angle"]), x, rtol=1e-5, atol=1e-5)
    assert torch.equal(conjugate(conjugate(x, prm["conj"]), prm["conj"]), x)
    assert torch.equal(reverse_time(reverse_time(x, prm["rev"]), prm["rev"]), x)
    assert torch.equal(circular_shift(circular_shift(x, prm["shift"]), (L - prm["shift"]) % L), x)


def test_circular_shift_matches_torch_roll_per_example() -> None:
    x = frames(batch=4, length=9)
    shift = torch.tensor([0, 1, 5, 8])
    expected = torch.stack([torch.roll(x[b], int(shift[b]), dims=-1) for b in range(4)])
    assert torch.equal(circular_shift(x, shift), expected)
    assert torch.equal(circular_shift(x, shift + 9), expected)  # taken modulo L


def test_a_fixed_seed_gives_the_same_batches_and_another_seed_others() -> None:
    x1, x2 = frames(0), frames(1)
    a, b, c = SignalAugment(seed=3), SignalAugment(seed=3), SignalAugment(seed=4)
    a1, a2 = a(x1), a(x2)
    assert torch.equal(a1, b(x1)) and torch.equal(a2, b(x2))
    assert not torch.allclose(a1, c(x1))
    assert not torch.allclose(a(x1), a1)  # the sequence moves on
    a.reset_seed()
    assert torch.equal(a(x1), a1)


def test_the_module_applies_what_it_draws() -> None:
    """The module's output is the pure functions applied with the parameters its generator draws, in order."""
    x = frames()
    g = torch.Generator().manual_seed(5)
    angle = torch.rand(B, generator=g, dtype=torch.float64) * 2 * math.pi
    conj = torch.rand(B, generator=g) < 0.3
    rev = torch.rand(B, generator=g) < 0.3
    shift = torch.randint(0, L, (B,), generator=g)
    expected = augment_all(x, {"angle": angle, "conj": conj, "rev": rev, "shift": shift})
    torch.testing.assert_close(SignalAugment(p=0.3, seed=5)(x), expected)
    torch.testing.assert_close(power(SignalAugment(seed=5)(x)), power(x))


def test_switches_and_p_select_the_transforms() -> None:
    x = frames()
    assert torch.equal(SignalAugment(phase=False, conjugate=False, reverse=False, shift=False)(x), x)
    assert torch.equal(SignalAugment(phase=False, shift=False, p=0.0)(x), x)
    mirrored = SignalAugment(phase=False, reverse=False, shift=False, p=1.0)(x)
    assert torch.equal(mirrored, conjugate(x, torch.ones(B, dtype=torch.bool)))


def test_eval_mode_is_identity_and_the_input_is_not_modified() -> None:
    x = frames()
    copy = x.clone()
    augment = SignalAugment(p=1.0)
    out = augment(x)
    assert torch.equal(x, copy) and not torch.allclose(out, x)
    augment.eval()
    assert torch.equal(augment(x), copy)
    augment.train()
    assert not torch.allclose(augment(x), copy)


@pytest.mark.parametrize("shape", [(4, 3, 8), (2, 8), (1, 2, 3, 4)])
def test_a_bad_shape_is_refused_with_the_shape_named(shape: tuple[int, ...]) -> None:
    bad = torch.zeros(shape)
    for call in (
        lambda: SignalAugment()(bad),
        lambda: SignalAugment().eval()(bad),
        lambda: rotate_phase(bad, torch.zeros(shape[0])),
        lambda: circular_shift(bad, torch.zeros(shape[0], dtype=torch.long)),
    ):
        with pytest.raises(ValueError, match=r"\[B, 2, L\].*" + "\\(" + ", ".join(map(str, shape))):
            call()


def test_bad_arguments_are_refused() -> None:
    x = frames()
    for p in (-0.1, 1.5, "0.5", True):
        with pytest.raises(ValueError, match="p must be a probability in \\[0, 1\\]"):
            SignalAugment(p=p)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed must be an int"):
        SignalAugment(seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"mask must have one value per example, shape \(6,\); got \(5,\)"):
        conjugate(x, torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="shift must be an integer tensor"):
        circular_shift(x, torch.zeros(B))
    with pytest.raises(ValueError, match="real floating-point"):
        SignalAugment()(x.long())


def test_extra_repr_lists_what_is_on() -> None:
    text = repr(SignalAugment(conjugate=False, shift=False, p=0.25, seed=9))
    assert "on=[phase, reverse]" in text and "p=0.25" in text and "seed=9" in text
