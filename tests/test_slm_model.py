"""The decoder: cached decoding equals a full forward, exact MAC counts, and ONNX prefill/decode graphs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from ondevice.export import ExportMismatchError
from ondevice.profile import count_macs
from slm.arch import ArchConfig
from slm.export import (
    DecodeGraph,
    PrefillGraph,
    as_arrays,
    cache_names,
    decode_inputs,
    export_graphs,
    prefill_inputs,
    random_model,
)
from slm.model import GPT

SHAPES = {
    "tiny-gqa": ArchConfig.from_name("tiny"),
    "mha-untied-bias": ArchConfig(
        vocab_size=300,
        hidden_size=96,
        num_layers=3,
        num_heads=6,
        ffn_size=200,
        qkv_bias=True,
        tie_embeddings=False,
        context_length=128,
    ),
    "plain-ffn-layernorm-gelu": ArchConfig(
        vocab_size=257,
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=1,
        ffn_size=96,
        gated_ffn=False,
        norm="layer",
        activation="gelu",
        context_length=128,
    ),
    "relu-wide-head": ArchConfig(
        vocab_size=400,
        hidden_size=64,
        num_layers=2,
        num_heads=2,
        head_dim=48,
        ffn_size=160,
        activation="relu",
        context_length=128,
    ),
    "deep-thin": ArchConfig(
        vocab_size=512,
        hidden_size=32,
        num_layers=6,
        num_heads=2,
        num_kv_heads=1,
        ffn_size=64,
        context_length=128,
    ),
}


@pytest.mark.parametrize("name", SHAPES)
def test_parameters_equal_the_config_count(name):
    config = SHAPES[name]
    assert sum(p.numel() for p in GPT(config).parameters()) == config.num_params


@pytest.mark.parametrize("name", SHAPES)
def test_cached_decoding_matches_a_full_forward(name):
    config = SHAPES[name]
    model = random_model(config, seed=1)
    tokens = torch.randint(0, config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = model(tokens)
        logits, cache = model.prefill(tokens[:, :9])
        torch.testing.assert_close(logits, full[:, 8], atol=1e-4, rtol=0)
        for t in range(9, 24):
            logits, cache = model.decode(tokens[:, t], cache)
            torch.testing.assert_close(logits, full[:, t], atol=1e-4, rtol=0)
    assert cache[0][0].shape == (2, config.num_kv_heads, 24, config.head_dim)


@pytest.mark.parametrize("name", SHAPES)
def test_mac_counts_equal_torch_flop_counter(name):
    config = SHAPES[name]
    model = random_model(config)
    assert count_macs(PrefillGraph(model), prefill_inputs(config, 19)) == config.prefill_macs(19)
    assert count_macs(DecodeGraph(model), decode_inputs(config, 33)) == config.decode_macs(33)


def test_greedy_generation_follows_the_argmax_of_full_forwards():
    model = random_model(SHAPES["tiny-gqa"], seed=5)
    prompt = torch.tensor([[1, 2, 3, 4]])
    out = model.generate(prompt, max_new_tokens=6, temperature=0)
    expected = prompt
    with torch.no_grad():
        for _ in range(6):
            expected = torch.cat([expected, model(expected)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, expected)
    sampled = model.generate(prompt, 5, temperature=1.0, top_k=3, generator=torch.Generator().manual_seed(0))
    assert sampled.shape == (1, 9)


def test_context_and_cache_errors():
    config = SHAPES["deep-thin"]
    model = random_model(config)
    with pytest.raises(ValueError, match="context length 128"):
        model(torch.zeros(1, 129, dtype=torch.long))
    _, cache = model.prefill(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="cache has 2 layers, the model 6"):
        model.decode(torch.zeros(1, dtype=torch.long), cache[:2])


def check_graphs_at_other_lengths(model: GPT, files: dict) -> None:
    """The exported prefill and decode graphs equal torch to 1e-4 at lengths other than the traced ones (the prompt
    and past axes are symbolic). Also run on the graphs `slm export` writes (tests/test_slm_cli.py)."""
    config = model.config
    prefill = ort.InferenceSession(str(files["prefill"]), providers=["CPUExecutionProvider"])
    decode = ort.InferenceSession(str(files["decode"]), providers=["CPUExecutionProvider"])
    tokens = torch.randint(0, config.vocab_size, (1, 37), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        full = model(tokens)
    out = prefill.run(None, {"tokens": tokens[:, :30].numpy()})
    np.testing.assert_allclose(out[0], full[:, 29].numpy(), atol=1e-4, rtol=0)
    past = out[1:]
    names = ["token", *cache_names(config.num_layers, "past")]
    for t in range(30, 37):
        out = decode.run(None, dict(zip(names, [tokens[:, t : t + 1].numpy(), *past], strict=True)))
        np.testing.assert_allclose(out[0], full[:, t].numpy(), atol=1e-4, rtol=0)
        past = out[1:]
    assert past[0].shape == (1, config.num_kv_heads, 37, config.head_dim)
    assert [o.name for o in decode.get_outputs()][:3] == ["logits", "present_key_0", "present_value_0"]
    arrays = as_arrays(decode_inputs(config, 50), names)
    assert decode.run(None, arrays)[1].shape[2] == 51


def test_export_ships_the_searched_graphs_checked_against_torch_with_int8_twins(tmp_path, monkeypatch):
    # The tiny GQA preset is checked the same way through `slm export` (test_slm_cli).
    model = random_model(SHAPES["mha-untied-bias"], seed=2)
    files = export_graphs(model, tmp_path, stem="mha", int8=True)  # verifies both graphs against torch to 1e-4
    assert sorted(files) == ["decode", "decode-int8", "prefill", "prefill-int8"]
    for kind in ("prefill", "decode"):
        # slm.graphs' graphs (what the search timed), the model's weights beside them
        assert onnx.load(str(files[kind]), load_external_data=False).producer_name == "slm.graphs"
        assert files[kind].with_name(files[kind].name + ".data").stat().st_size >= 4 * model.config.num_params
    check_graphs_at_other_lengths(model, files)
    # the int8 twins load and stay close to fp32 on the decode step
    names = ["token", *cache_names(model.config.num_layers, "past")]
    feed = as_arrays(decode_inputs(model.config, 20), names)
    fp32, int8 = (
        ort.InferenceSession(str(files[k]), providers=["CPUExecutionProvider"]) for k in ("decode", "decode-int8")
    )
    a, b = fp32.run(None, feed)[0], int8.run(None, feed)[0]
    assert np.linalg.norm(b - a) / np.linalg.norm(a) < 0.1
    # the check is real: weights that drift from the model's are refused, naming the graph
    import slm.export

    convert = slm.export.weights_from_model
    monkeypatch.setattr(
        slm.export, "weights_from_model", lambda m: {k: v + 0.01 * (k == "norm.weight") for k, v in convert(m).items()}
    )
    with pytest.raises(ExportMismatchError, match=r"mha\.prefill\.onnx.*differs from torch"):
        export_graphs(model, tmp_path / "drift", stem="mha")
    with pytest.raises(ValueError, match="via must be one of"):
        export_graphs(model, tmp_path, via="dynamo")
