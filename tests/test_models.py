"""ClST and the SKD students (shapes, derived sizes, ablations, ONNX parity), every AMR hint layer, the registry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _layer_counts import clst_counts, mac_count, param_count

import rfml
from ondevice.export import export_onnx, verify_onnx
from ondevice.profile import count_macs
from rfml.models import KDCNN, ClST, KDMobileNet, available, create
from rfml.models.clst import PSCA, CTPAttention

OURS = ("clst", "kd_cnn", "kd_mobilenet")


def test_registry_lists_every_model_and_names_close_matches() -> None:
    amr = ["clst", "kd_cnn", "kd_mobilenet", "vtcnn2", "resnet", "cldnn", "mcldnn", "lstm2"]
    assert available() == sorted([*amr, "ism_cnn", "ism_resnet", "ism_cldnn", "ism_lstm", "snr_cnn"])
    with pytest.raises(KeyError, match=r"unknown model 'clts'; did you mean clst\?"):
        create("clts", 11)
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        create("clst", 1)


def test_top_level_imports_are_the_registered_classes() -> None:
    assert (rfml.ClST, rfml.KDCNN, rfml.KDMobileNet) == (ClST, KDCNN, KDMobileNet)
    assert type(create("kd_mobilenet", 5)) is KDMobileNet


@pytest.mark.parametrize("name", available())
@pytest.mark.parametrize("length", [128, 1024])
def test_every_registered_model_maps_iq_frames_to_logits(name: str, length: int) -> None:
    # ism_cnn's dense layer grows with the length (268 M parameters at 1024); its own tests cover its widths.
    model = create(name, 24, length, **({"hidden": 64} if name == "ism_cnn" else {})).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 2, length))
    assert out.shape == (2, 24)
    assert torch.isfinite(out).all()


# The expected sizes are summed from each model's layer list (tests/_layer_counts.py), not read from the model.
@pytest.mark.parametrize("name", OURS)
def test_sizes_are_the_documented_ones(name: str) -> None:
    model = create(name, 11, 128)
    params, macs = param_count(name, 11, 128), mac_count(name, 11, 128)
    assert sum(p.numel() for p in model.parameters()) == params
    assert count_macs(model, torch.randn(1, 2, 128)) == macs
    assert f"{params:,}" in type(model).__doc__
    assert f"{macs / 1e6:.2f} M MACs" in type(model).__doc__


@pytest.mark.parametrize("name", OURS)
@pytest.mark.parametrize("length", [100, 1024])
def test_parameters_do_not_depend_on_the_length_and_macs_follow_the_layers(name: str, length: int) -> None:
    model = create(name, 24, length)
    assert sum(p.numel() for p in model.parameters()) == param_count(name, 24, length) == param_count(name, 24, 128)
    assert count_macs(model, torch.randn(1, 2, length)) == mac_count(name, 24, length)


def test_kd_mobilenet_costs_under_a_fifth_of_clst_macs() -> None:
    x = torch.randn(1, 2, 128)
    assert count_macs(create("clst", 11), x) >= 5 * count_macs(create("kd_mobilenet", 11), x)


def test_ctp_attention_strides_keys_and_values_but_not_queries() -> None:
    attn = CTPAttention(dim=32, heads=2, kv_stride=2)
    x = torch.randn(3, 32, 40)
    assert attn.q(x).shape == (3, 32, 40)
    assert attn.k(x).shape == attn.v(x).shape == (3, 32, 20)
    assert attn(x).shape == (3, 40, 32)  # one token per query position


def test_psca_scales_channels_and_time_from_the_same_input() -> None:
    psca = PSCA(dim=8)
    x = torch.randn(2, 8, 16)
    out = psca(x)
    channel = torch.sigmoid(psca.channel_mlp(x.mean(-1, keepdim=True)) + psca.channel_mlp(x.amax(-1, keepdim=True)))
    pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
    temporal = torch.sigmoid(psca.temporal_conv(pooled))
    torch.testing.assert_close(out, x * channel + x * temporal)
    # Each branch weight lies in (0, 1), so the fused map never exceeds twice the input's magnitude.
    assert (out.abs() <= 2 * x.abs() + 1e-6).all()


@pytest.mark.parametrize(
    ("switch", "missing"),
    [("psca", PSCA), ("conv_projection", torch.nn.BatchNorm1d)],
)
def test_clst_ablation_switches_remove_their_part(switch: str, missing: type) -> None:
    full, ablated = create("clst", 11), create("clst", 11, **{switch: False})
    # In the stages: the stem (before them) has BatchNorm of its own.
    assert any(isinstance(m, missing) for m in full.stages.modules())
    assert not any(isinstance(m, missing) for m in ablated.stages.modules())
    assert ablated(torch.randn(2, 2, 128)).shape == (2, 11)
    params, macs = clst_counts(11, 128, **{switch: False})
    assert sum(p.numel() for p in ablated.parameters()) == params
    assert count_macs(ablated, torch.randn(1, 2, 128)) == macs


def test_clst_without_conv_embedding_uses_non_overlapping_patches() -> None:
    model = create("clst", 11, conv_embedding=False)
    first = model.stages[0].embed.proj
    assert first.kernel_size == first.stride == (2,)
    assert sum(p.numel() for p in model.parameters()) == clst_counts(11, 128, conv_embedding=False)[0]
    assert create("clst", 11).stages[0].embed.proj.kernel_size == (7,)


@pytest.mark.parametrize("stem", [0, 16, 32])
def test_clst_stem_runs_at_full_length_and_feeds_the_first_embedding(stem: int) -> None:
    model = create("clst", 11, stem=stem)
    x = torch.randn(2, 2, 128)
    expected = (2, stem or 2, 128)
    assert model.stem(x).shape == expected
    assert model.stages[0].embed.proj.in_channels == (stem or 2)
    params, macs = clst_counts(11, 128, stem=stem)
    assert sum(p.numel() for p in model.parameters()) == params
    assert count_macs(model, x[:1]) == macs
    with pytest.raises(ValueError, match="stem must be 0"):
        create("clst", 11, stem=-1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"embed_norm": "batch"},
        {"embed_norm": "batch", "embed_pool": True},
        {"embed_pool": True},
        {"stem": 32, "stem_layers": 2},
        {"stem": 16, "stem_layers": 3, "embed_norm": "batch"},
    ],
)
def test_clst_embedding_and_stem_switches_match_their_counts(kwargs: dict) -> None:
    model = create("clst", 11, **kwargs)
    x = torch.randn(1, 2, 128)
    params, macs = clst_counts(11, 128, **kwargs)
    assert sum(p.numel() for p in model.parameters()) == params
    assert count_macs(model, x) == macs
    embed = model.stages[0].embed
    # BatchNorm embeddings drop the conv's bias (BatchNorm's shift replaces it); pooling moves the stride to the pool.
    assert (embed.proj.bias is None) == (kwargs.get("embed_norm") == "batch")
    assert embed.proj.stride == ((1,) if kwargs.get("embed_pool") else (2,))
    assert embed(model.stem(x)).shape == (1, 32, 64)
    if kwargs.get("embed_norm") == "batch":
        assert (embed(model.stem(x)) >= 0).all()  # ReLU after BatchNorm


def test_clst_refuses_unknown_embedding_norm_and_empty_stem() -> None:
    with pytest.raises(ValueError, match="embed_norm must be one of"):
        create("clst", 11, embed_norm="group")
    with pytest.raises(ValueError, match="stem_layers must be >= 1"):
        create("clst", 11, stem=32, stem_layers=0)


def test_clst_refuses_frames_shorter_than_its_total_stride() -> None:
    with pytest.raises(ValueError, match="shorter than the stages' total stride 64"):
        create("clst", 11, length=32, embed_strides=(4, 4, 4))


# The output of each AMR model's hint layer (its last feature map) for a batch of 3 frames of 128 samples.
HINT_SHAPES = {
    "clst": (3, 96, 16),
    "kd_cnn": (3, 64, 32),
    "kd_mobilenet": (3, 128, 16),
    "vtcnn2": (3, 80, 1, 132),
    "resnet": (3, 32, 2),
    "cldnn": (3, 50),
    "mcldnn": (3, 128),
    "lstm2": (3, 128),
}


@pytest.mark.parametrize("name", HINT_SHAPES)
def test_hint_layer_outputs_the_last_feature_map_as_one_tensor(name: str) -> None:
    model = create(name, 11, 128).eval()
    module = model.get_submodule(type(model).hint_layer)
    captured = []
    handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.no_grad():
            model(torch.randn(3, 2, 128))
    finally:
        handle.remove()
    assert len(captured) == 1
    assert isinstance(captured[0], torch.Tensor)
    assert captured[0].shape == HINT_SHAPES[name]


@pytest.mark.parametrize("name", OURS)
def test_onnx_export_matches_torch(name: str, tmp_path: Path) -> None:
    model = create(name, 11, 128).eval()
    x = torch.randn(2, 2, 128)
    path = export_onnx(model, x, tmp_path / f"{name}.onnx")
    check = verify_onnx(model, path, x, atol=1e-4)
    assert check.ok and check.max_abs_error < 1e-4
