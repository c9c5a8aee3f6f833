"""The ISM-band interference models: shapes at every selected width, exact sizes, length checks, fitting a batch."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from rfml.models import available, create
from rfml.models.cldnn import CLDNN
from rfml.models.ism import ISMCNN

ISM = ("ism_cnn", "ism_resnet", "ism_cldnn", "ism_lstm")
LENGTHS = (8, 16, 26, 32, 52, 64, 128)  # band and sample selections of a 128-sample frame
LENGTH_BOUND = ("ism_cnn", "ism_resnet")  # their heads flatten a length-dependent map


def test_registry_lists_the_four_ism_models() -> None:
    assert set(ISM) <= set(available())
    assert isinstance(create("ism_cldnn", 15), CLDNN)  # the CLDNN family, with one more convolution


@pytest.mark.parametrize("name", ISM)
@pytest.mark.parametrize("length", LENGTHS)
def test_every_ism_model_maps_frames_to_logits_at_each_width(name: str, length: int) -> None:
    model = create(name, 15, length).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 2, length))
    assert out.shape == (3, 15)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("name", "params"),
    [("ism_cnn", 32_916_751), ("ism_resnet", 127_407), ("ism_cldnn", 127_911), ("ism_lstm", 1_065_131)],
)
def test_sizes_at_128_samples_and_15_classes_are_the_documented_ones(name: str, params: int) -> None:
    model = create(name, 15, 128)
    assert sum(p.numel() for p in model.parameters()) == params
    assert f"{params:,}" in type(model).__doc__


def test_ism_cnn_size_is_the_published_layer_arithmetic() -> None:
    conv1, conv2 = 256 * 3 + 256, 256 * 256 * 2 * 3 + 256
    dense, out = 256 * 124 * 1024 + 1024, 1024 * 15 + 15
    assert conv1 + conv2 + dense + out == 32_916_751
    # Only the dense layer depends on the width: 256 × (L - 4) inputs.
    assert sum(p.numel() for p in create("ism_cnn", 15, 8).parameters()) == 32_916_751 - 256 * 120 * 1024


def test_ism_cnn_needs_five_samples_for_its_two_valid_convolutions() -> None:
    assert ISMCNN(15, length=5)(torch.randn(2, 2, 5)).shape == (2, 15)
    with pytest.raises(ValueError, match="length >= 5"):
        ISMCNN(15, length=4)


@pytest.mark.parametrize("name", LENGTH_BOUND)
def test_length_bound_models_name_the_expected_shape(name: str) -> None:
    model = create(name, 15, 64)
    with pytest.raises(ValueError, match=r"built for inputs \[B, 2, 64\], got \[2, 2, 128\]"):
        model(torch.randn(2, 2, 128))


@pytest.mark.parametrize("name", ["ism_cldnn", "ism_lstm"])
def test_recurrent_models_take_any_length_once_built(name: str) -> None:
    model = create(name, 15, 128).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 2, 26)).shape == (2, 15)


@pytest.mark.parametrize(("length", "steps"), [(8, 1), (26, 1), (52, 2), (128, 4)])
def test_ism_resnet_pooling_rounds_up_so_short_selections_keep_a_step(length: int, steps: int) -> None:
    model = create("ism_resnet", 15, length).eval()
    with torch.no_grad():
        assert model.features(torch.randn(2, 2, length)).shape == (2, 32, steps)


@pytest.mark.parametrize(
    ("name", "shape"),
    [("ism_cnn", (2, 256, 1, 28)), ("ism_resnet", (2, 32, 1)), ("ism_cldnn", (2, 50)), ("ism_lstm", (2, 4))],
)
def test_hint_layer_is_the_last_feature_map(name: str, shape: tuple[int, ...]) -> None:
    model = create(name, 15, 32).eval()
    captured = {}
    layer = dict(model.named_modules())[model.hint_layer]
    handle = layer.register_forward_hook(lambda m, a, out: captured.setdefault("out", out))
    with torch.no_grad():
        model(torch.randn(2, 2, 32))
    handle.remove()
    assert captured["out"].shape == shape


SMALL = {
    "ism_cnn": {"channels": (16, 16), "hidden": 64, "dropout": 0.0},
    "ism_resnet": {"channels": 16, "hidden": 32, "dropout": 0.0},
    "ism_cldnn": {"filters": 8, "lstm_hidden": 16, "hidden": 32, "dropout": 0.0},
    "ism_lstm": {"hidden": (32, 4)},
}


def tones(n: int = 30, classes: int = 3, length: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy complex tones as ``[n, 2, length]`` I/Q, the class setting the frequency, the phase random."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % classes
    angle = 2 * math.pi * ((y[:, None] + 1) / 8 * torch.arange(length) + torch.rand(n, 1, generator=g))
    x = torch.stack([angle.cos(), angle.sin()], 1) + 0.3 * torch.randn(n, 2, length, generator=g)
    return x, y


@pytest.mark.parametrize("name", ISM)
def test_each_model_fits_a_tiny_batch(name: str) -> None:
    x, y = tones()
    torch.manual_seed(0)
    model = create(name, 3, 32, **SMALL[name]).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with torch.no_grad():
        start = F.cross_entropy(model(x), y).item()
    for _ in range(120):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        logits = model(x)
    assert start > 0.9  # about ln 3 before training
    assert F.cross_entropy(logits, y).item() < 0.2
    assert (logits.argmax(1) == y).all()
