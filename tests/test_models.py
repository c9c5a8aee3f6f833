"""ClST and the SKD students: shapes at every length, exact sizes, ablation switches, ONNX parity, the registry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import rfml
from ondevice.export import export_onnx, verify_onnx
from ondevice.profile import count_macs
from rfml.models import KDCNN, ClST, KDMobileNet, available, create
from rfml.models.clst import PSCA, CTPAttention

torch.set_num_threads(1)

OURS = ("clst", "kd_cnn", "kd_mobilenet")


def test_registry_lists_every_model_and_names_close_matches() -> None:
    amr = ["clst", "kd_cnn", "kd_mobilenet", "vtcnn2", "resnet", "cldnn", "mcldnn", "lstm2"]
    assert available() == sorted([*amr, "ism_cnn", "ism_resnet", "ism_cldnn", "ism_lstm", "snr_cnn"])
    with pytest.raises(KeyError, match=r"unknown model 'clts'.*did you mean \['clst'\]"):
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


@pytest.mark.parametrize(
    ("name", "params", "macs"),
    [("clst", 375_944, 7_752_256), ("kd_cnn", 30_763, 2_024_128), ("kd_mobilenet", 44_315, 1_522_048)],
)
def test_sizes_are_the_documented_ones(name: str, params: int, macs: int) -> None:
    model = create(name, 11, 128)
    assert sum(p.numel() for p in model.parameters()) == params
    assert count_macs(model, torch.randn(1, 2, 128)) == macs
    assert f"{params:,}" in type(model).__doc__


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
    assert any(isinstance(m, missing) for m in full.modules())
    assert not any(isinstance(m, missing) for m in ablated.modules())
    assert ablated(torch.randn(2, 2, 128)).shape == (2, 11)


def test_clst_without_conv_embedding_uses_non_overlapping_patches() -> None:
    model = create("clst", 11, conv_embedding=False)
    first = model.stages[0].embed.proj
    assert first.kernel_size == first.stride == (2,)
    assert create("clst", 11).stages[0].embed.proj.kernel_size == (7,)


def test_clst_refuses_frames_shorter_than_its_total_stride() -> None:
    with pytest.raises(ValueError, match="shorter than the stages' total stride 64"):
        create("clst", 11, length=32, embed_strides=(4, 4, 4))


@pytest.mark.parametrize("name", OURS)
def test_hint_layer_is_the_last_feature_map(name: str) -> None:
    model = create(name, 11).eval()
    captured = {}
    layer = dict(model.named_modules())[model.hint_layer]
    handle = layer.register_forward_hook(lambda m, a, out: captured.setdefault("out", out))
    with torch.no_grad():
        model(torch.randn(2, 2, 128))
    handle.remove()
    width = {"clst": 96, "kd_cnn": 64, "kd_mobilenet": 128}[name]
    length = {"clst": 16, "kd_cnn": 32, "kd_mobilenet": 16}[name]
    assert captured["out"].shape == (2, width, length)


@pytest.mark.parametrize("name", OURS)
def test_onnx_export_matches_torch(name: str, tmp_path: Path) -> None:
    model = create(name, 11, 128).eval()
    x = torch.randn(2, 2, 128)
    path = export_onnx(model, x, tmp_path / f"{name}.onnx")
    check = verify_onnx(model, path, x, atol=1e-4)
    assert check.ok and check.max_abs_error < 1e-4
