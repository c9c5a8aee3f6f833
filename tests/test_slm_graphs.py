"""slm.graphs: prefill and decode graphs written from an ArchConfig compute what GPT and slm.export's graphs compute,
at lengths of every kind, and are written atomically (weights beside the graph when large)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from test_slm_model import SHAPES, check_graphs_at_other_lengths

from slm.arch import ArchConfig
from slm.export import as_arrays, decode_inputs, export_graphs, prefill_inputs, random_model
from slm.graphs import build_graphs, cache_names, weight_shapes, weights_from_model

# test_slm_model's five shapes (GQA and MQA, tied and untied heads, gated and plain FFNs, QKV bias, layer norm,
# every activation, a head_dim that is not hidden/heads) and one with a RoPE base of 10⁶.
FAST_SHAPES = {**SHAPES, "rope-1e6-bias": ArchConfig.from_name("tiny", qkv_bias=True, rope_theta=1e6)}


def session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", list(FAST_SHAPES))
def test_fast_graphs_equal_the_model_at_every_prompt_and_past_length(name, tmp_path):
    config = FAST_SHAPES[name]
    model = random_model(config, seed=5)
    files = build_graphs(config, tmp_path, weights=weights_from_model(model))
    for path in files.values():
        onnx.checker.check_model(str(path))
    check_graphs_at_other_lengths(model, files)  # prompt 30, then seven decode steps, against a full forward
    prefill, decode = session(files["prefill"]), session(files["decode"])
    names = ["token", *cache_names(config.num_layers, "past")]
    with torch.no_grad():
        for batch, length in ((1, 1), (2, 5), (2, 64)):
            tokens = prefill_inputs(config, length, batch, seed=length)[0]
            logits, cache = model.prefill(tokens)
            out = prefill.run(None, {"tokens": tokens.numpy()})
            expected = [logits, *(t for layer in cache for t in layer)]
            for got, want in zip(out, expected, strict=True):
                np.testing.assert_allclose(got, want.numpy(), atol=1e-4, rtol=0)
            inputs = decode_inputs(config, length, batch, seed=length)
            logits, cache = model.decode(inputs[0], [(inputs[1 + 2 * i], inputs[2 + 2 * i]) for i in range(len(cache))])
            out = decode.run(None, as_arrays(inputs, names))
            expected = [logits, *(t for layer in cache for t in layer)]
            for got, want in zip(out, expected, strict=True):
                np.testing.assert_allclose(got, want.numpy(), atol=1e-4, rtol=0)
            assert out[1].shape == (batch, config.num_kv_heads, length + 1, config.head_dim)


def test_fast_graphs_equal_the_exported_graphs_and_keep_their_interface(tmp_path):
    config = ArchConfig.from_name("tiny", qkv_bias=True)  # GQA 4/2, tied head, gated SiLU FFN, QKV bias
    model = random_model(config, seed=7)
    exported = export_graphs(model, tmp_path / "export", verify=False, via="torch")
    fast = build_graphs(config, tmp_path / "fast", weights=weights_from_model(model))
    names = ["token", *cache_names(config.num_layers, "past")]
    for kind in ("prefill", "decode"):
        a, b = session(exported[kind]), session(fast[kind])
        assert [i.name for i in a.get_inputs()] == [i.name for i in b.get_inputs()]
        assert [o.name for o in a.get_outputs()] == [o.name for o in b.get_outputs()]
        assert [i.shape for i in a.get_inputs()] == [i.shape for i in b.get_inputs()]
        for length in (2, 9, 100):
            if kind == "prefill":
                feed = {"tokens": prefill_inputs(config, length, 2, seed=length)[0].numpy()}
            else:
                feed = as_arrays(decode_inputs(config, length, 2, seed=length), names)
            for x, y in zip(a.run(None, feed), b.run(None, feed), strict=True):
                np.testing.assert_allclose(y, x, atol=1e-4, rtol=0)
    # the same operator mix per layer as the exporter's (latency rests on it): matmuls and the softmax
    for kind in ("prefill", "decode"):
        ops = [[n.op_type for n in onnx.load(str(f[kind])).graph.node] for f in (exported, fast)]
        for op in ("MatMul", "Gemm", "Softmax", "Gather"):
            assert ops[0].count(op) == ops[1].count(op), (kind, op)


def test_random_weights_have_every_shape_and_the_models_layout(tmp_path):
    config = SHAPES["mha-untied-bias"]
    files = build_graphs(config, tmp_path, seed=1)
    weights = {
        t.name: numpy_helper.to_array(t, str(tmp_path)) for t in onnx.load(str(files["decode"])).graph.initializer
    }
    weights = {k: v for k, v in weights.items() if k in weight_shapes(config)}
    assert {k: v.shape for k, v in weights.items()} == weight_shapes(config)
    assert sum(v.size for v in weights.values()) == config.num_params
    assert all(v.dtype == np.float32 for v in weights.values())
    assert np.all(weights["norm.weight"] == 1) and np.all(weights["blocks.0.attn.q_proj.bias"] == 0)
    assert 0.018 < float(weights["blocks.0.ffn.up_proj.weight"].std()) < 0.022
    assert not np.array_equal(weights["blocks.0.ffn.up_proj.weight"], weights["blocks.1.ffn.up_proj.weight"])
    again = build_graphs(config, tmp_path / "again", seed=1)["prefill"]
    assert (
        again.with_name(again.name + ".data").read_bytes()
        == files["decode"].with_name(files["decode"].name + ".data").read_bytes()
    )  # a seed gives the same weights, and both graphs read the same ones
    model = random_model(config)
    from_model = weights_from_model(model)
    np.testing.assert_array_equal(
        from_model["blocks.1.attn.q_proj.weight"], model.blocks[1].attn.q_proj.weight.detach().T
    )


def test_a_model_of_another_shape_is_refused(tmp_path):
    config = SHAPES["deep-thin"]
    model = random_model(config.replace(ffn_size=config.ffn_size + 8))
    model.config = config  # a checkpoint whose weights do not fit the config it claims
    with pytest.raises(
        ValueError, match=r"weight 'blocks.0.ffn.gate_proj.weight' has shape \(32, 72\); the config implies \(32, 64\)"
    ):
        build_graphs(config, tmp_path, weights=weights_from_model(model))
    weights = weights_from_model(random_model(config))
    del weights["blocks.1.attn.o_proj.weight"]
    with pytest.raises(KeyError, match=r"no weight 'blocks\.1\.attn\.o_proj\.weight', which the config implies"):
        build_graphs(config, tmp_path, weights=weights)
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left


def test_weights_are_written_once_beside_both_graphs_and_no_partial_file_is_left(tmp_path):
    config = ArchConfig.from_name("tiny")
    files = build_graphs(config, tmp_path)
    feeds = {
        "prefill": {"tokens": np.zeros((1, 3), np.int64)},
        "decode": as_arrays(decode_inputs(config, 3), ["token", *cache_names(config.num_layers, "past")]),
    }
    data = {kind: path.with_name(path.name + ".data") for kind, path in files.items()}
    assert data["prefill"].stat().st_size >= 4 * config.num_params  # every weight, the tied head once
    assert data["prefill"].read_bytes() == data["decode"].read_bytes()
    for kind, path in files.items():
        assert path.stat().st_size < 50_000  # the graph alone: its weights are in the data file
        assert session(path).run(None, feeds[kind])[0].shape == (1, config.vocab_size)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"model.{k}.onnx{ext}" for k in ("decode", "prefill") for ext in ("", ".data")]
    )
    build_graphs(config.replace(num_layers=1), tmp_path)  # rebuilt in place: replaced whole, no leftovers
    assert len(list(tmp_path.iterdir())) == 4
    assert session(files["decode"]).get_inputs()[-1].name == "past_value_0"


def test_graphs_build_without_torch(tmp_path):
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from slm.arch import ArchConfig; from slm.graphs import build_graphs\n"
        f"build_graphs(ArchConfig.from_name('tiny'), {str(tmp_path)!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "model.decode.onnx").is_file()
