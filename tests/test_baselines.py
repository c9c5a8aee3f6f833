"""The published AMR baselines: shapes at two lengths, parameter counts, ONNX export (hint layers: test_models)."""

import math

import pytest
import torch
from _layer_counts import param_count

import rfml.models.cldnn
import rfml.models.lstm
import rfml.models.resnet
import rfml.models.vtcnn2  # noqa: F401  (importing a family registers its models)
from ondevice.export import export_onnx, verify_onnx
from rfml.models.lstm import amplitude_phase
from rfml.models.registry import create

NAMES = ("vtcnn2", "resnet", "cldnn", "mcldnn", "lstm2")

# Published counts at L=128, 11 classes: VT-CNN2 from DeepSig's Keras notebook summary, MCLDNN from the
# authors' Keras code (CuDNNLSTM, two biases), LSTM2 as the Keras model is usually quoted (one bias).
PUBLISHED_128 = {"vtcnn2": 2_830_427, "mcldnn": 406_199, "lstm2": 200_075}


def build(name: str, num_classes: int = 11, length: int = 128) -> torch.nn.Module:
    torch.manual_seed(0)
    return create(name, num_classes, length).eval()


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("length", [128, 1024])
def test_logits_shape_and_finite(name, length):
    model = build(name, 11, length)
    with torch.no_grad():
        y = model(torch.randn(3, 2, length, generator=torch.Generator().manual_seed(1)))
    assert y.shape == (3, 11)
    assert torch.isfinite(y).all()


# The exact counts are summed from each model's layer list (tests/_layer_counts.py), not read from the model:
# a change to a model shows up here. The docstrings state the same figures.
@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_at_128(name):
    model = build(name)
    count = n_params(model)
    assert count == param_count(name, 11, 128)
    assert f"{count:,}" in type(model).__doc__
    if name in PUBLISHED_128:
        assert abs(count - PUBLISHED_128[name]) <= 0.15 * PUBLISHED_128[name]


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_at_1024_with_24_classes(name):
    model = build(name, 24, 1024)
    count = n_params(model)
    assert count == param_count(name, 24, 1024)
    assert f"{count:,}" in type(model).__doc__


def test_only_the_flattening_models_grow_with_the_length():
    # VT-CNN2's dense layer grows with the length; ResNet gains no stack past 6 but a longer flatten;
    # the recurrent models do not depend on the length.
    growth = {name: n_params(build(name, 11, 1024)) - n_params(build(name, 11, 128)) for name in NAMES}
    assert growth == {
        "vtcnn2": 80 * (1024 - 128) * 256,
        "resnet": 32 * (16 - 2) * 128,
        "cldnn": 0,
        "mcldnn": 0,
        "lstm2": 0,
    }


@pytest.mark.parametrize(("length", "stacks"), [(64, 5), (128, 6), (1024, 6), (100, 5)])
def test_resnet_uses_as_many_stacks_as_leave_two_steps(length, stacks):
    model = build("resnet", 11, length)
    assert model.num_stacks == stacks
    assert n_params(model) == param_count("resnet", 11, length)
    with torch.no_grad():
        features = model.features(torch.randn(2, 2, length))
    assert features.shape == (2, 32, length // 2**stacks)
    assert features.shape[-1] >= 2


@pytest.mark.parametrize("name", ["cldnn", "mcldnn", "lstm2"])
def test_recurrent_models_take_any_length(name):
    model = build(name, 11, 128)
    with torch.no_grad():
        assert model(torch.randn(2, 2, 200)).shape == (2, 11)


@pytest.mark.parametrize(("name", "label"), [("vtcnn2", "VTCNN2"), ("resnet", "ResNetAMR")])
def test_flattening_models_reject_another_length(name, label):
    model = build(name, 11, 128)
    with pytest.raises(ValueError, match=rf"{label}.*\[B, 2, 128\]"):
        model(torch.randn(2, 2, 256))


def test_lstm2_is_invariant_to_the_frame_scale():
    model = build("lstm2")
    x = torch.randn(4, 2, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b, c = model(x), model(3.0 * x), model(1e-3 * x)
    torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
    torch.testing.assert_close(c, a, rtol=0, atol=1e-5)
    # ... but not to a change of shape: the logits do depend on the input.
    with torch.no_grad():
        assert (model(x.flip(-1)) - a).abs().max() > 1e-4


def test_amplitude_phase_values():
    # Samples 1+1j, -2+0j, 0-3j: amplitudes √2, 2, 3 (norm √15), phases π/4, π, -π/2.
    x = torch.tensor([[[1.0, -2.0, 0.0], [1.0, 0.0, -3.0]]])
    ap = amplitude_phase(x)
    assert ap.shape == (1, 3, 2)
    expected_amp = torch.tensor([math.sqrt(2), 2.0, 3.0]) / math.sqrt(15)
    torch.testing.assert_close(ap[0, :, 0], expected_amp)
    torch.testing.assert_close(ap[0, :, 1], torch.tensor([0.25, 1.0, -0.5]))
    assert torch.linalg.vector_norm(ap[0, :, 0]).item() == pytest.approx(1.0)
    # Unit RMS: the same amplitudes times √L (L = 3), the phases unchanged.
    rms = amplitude_phase(x, amplitude_norm="rms")
    torch.testing.assert_close(rms[0, :, 0], expected_amp * math.sqrt(3))
    assert rms[0, :, 0].pow(2).mean().item() == pytest.approx(1.0)
    torch.testing.assert_close(rms[0, :, 1], ap[0, :, 1])
    with pytest.raises(ValueError, match="amplitude_norm must be one of"):
        amplitude_phase(x, amplitude_norm="max")
    with pytest.raises(ValueError, match="LSTM2: amplitude_norm"):
        create("lstm2", 11, amplitude_norm="peak")


@pytest.mark.parametrize("name", NAMES)
def test_onnx_export_matches_torch(name, tmp_path):
    model = build(name)
    x = torch.randn(2, 2, 128, generator=torch.Generator().manual_seed(3))
    path = export_onnx(model, x, tmp_path / f"{name}.onnx")
    check = verify_onnx(model, path, x, atol=1e-4, batch_sizes=(1, 3))
    assert check.ok
    assert check.max_abs_error <= 1e-4


# Each baseline's default initialisation: the one it trained better with under the recipe (amr_ablation.py).
DEFAULT_INIT = {"vtcnn2": "keras", "resnet": "keras", "cldnn": "torch", "mcldnn": "torch", "lstm2": "keras"}


def _biases_all_zero(model: torch.nn.Module) -> bool:
    return all(torch.count_nonzero(m.bias) == 0 for m in model.modules() if isinstance(m, torch.nn.Linear))


@pytest.mark.parametrize("name", NAMES)
def test_default_initialisation(name):
    assert set(DEFAULT_INIT) == set(NAMES)
    torch.manual_seed(0)
    assert _biases_all_zero(create(name, 11, 128)) == (DEFAULT_INIT[name] == "keras")


@pytest.mark.parametrize("name", NAMES)
def test_keras_initialisation(name):
    """Glorot-uniform kernels (inside ±√(6/(fan_in+fan_out)), spread like it), zero biases, orthogonal recurrent
    kernels, and a forget-gate bias of 1 in each LSTM; ``init="torch"`` keeps PyTorch's uniform biases."""
    torch.manual_seed(0)
    model = create(name, 11, 128, init="keras")
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear))]
    assert layers
    for layer in layers:
        w = layer.weight
        receptive = w[0, 0].numel()
        fan_in, fan_out = w.shape[1] * receptive, w.shape[0] * receptive
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert w.abs().max() <= bound + 1e-7
        if w.numel() >= 1000:  # uniform on ±bound: std bound/√3
            assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
        if layer.bias is not None:
            assert torch.count_nonzero(layer.bias) == 0
    for lstm in (m for m in model.modules() if isinstance(m, torch.nn.LSTM)):
        h = lstm.hidden_size
        for layer in range(lstm.num_layers):
            w_hh = getattr(lstm, f"weight_hh_l{layer}")  # [4h, h]: orthonormal columns
            torch.testing.assert_close(w_hh.T @ w_hh, torch.eye(h), atol=1e-4, rtol=0)
            b_ih, b_hh = getattr(lstm, f"bias_ih_l{layer}"), getattr(lstm, f"bias_hh_l{layer}")
            expected = torch.zeros(4 * h)
            expected[h : 2 * h] = 1.0
            assert torch.equal(b_ih + b_hh, expected)
    torch.manual_seed(0)
    torch_init = create(name, 11, 128, init="torch")
    biases = [m.bias for m in torch_init.modules() if isinstance(m, torch.nn.Linear)]
    assert biases and all(torch.count_nonzero(b) > 0 for b in biases)


def test_unknown_initialisation_is_refused():
    with pytest.raises(ValueError, match="init must be one of keras, torch; got 'glorot'"):
        create("resnet", 11, 128, init="glorot")
