"""Prefill and decode-step ONNX graphs written straight from an `ArchConfig` with onnx's graph API: the graphs the
search times, built in about a second where torch's exporter takes minutes at 50 M parameters.

The graphs compute what `slm.export`'s do, with the same operators in the same order (the dynamo exporter's
decomposition of `slm.model.GPT`: RMSNorm as Pow/ReduceMean/Sqrt/Reciprocal, linear layers as MatMul against
[in, out] weights, RoPE by rotate-half, GQA by Unsqueeze/Expand/Reshape, attention as scaled MatMul/Softmax/MatMul,
the LM head as Gemm with transB), and the same inputs, outputs and symbolic axes, so the two are interchangeable in
`ondevice.profile`, a device bundle and ONNX Runtime. `tests/test_slm_graphs.py` checks they agree to 1e-4 with one
`GPT`'s weights; `benchmarks/slm_graphs.py` times them against the exported ones.

Weights are random (latency depends on the shape, not the values) unless a `GPT`'s are given
(`weights_from_model`); they live outside the graph protos, drawn once for both graphs, so building costs about what
writing the weights to disk costs. Torch-free: numpy and onnx only.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from slm.arch import ArchConfig

if TYPE_CHECKING:
    from slm.model import GPT

OPSET = 18
DATA_ALIGNMENT = 4096
RANDOM_POOL = 1 << 20
_FLOAT_MIN = float(np.finfo(np.float32).min)


def cache_names(num_layers: int, prefix: str) -> list[str]:
    """`past_key_0, past_value_0, …` (or `present_…`): one key and one value tensor per layer (both graph kinds
    and both ways of building them use these names)."""
    return [f"{prefix}_{kind}_{i}" for i in range(num_layers) for kind in ("key", "value")]


def weight_shapes(config: ArchConfig) -> dict[str, tuple[int, ...]]:
    """Every weight the graphs read, by `GPT` state-dict name, in the layout the graphs use: linear weights
    as [in, out] (the transpose of torch's), the LM head as torch's [vocab, hidden] (Gemm transB)."""
    h, q, kv, f = config.hidden_size, config.q_width, config.kv_width, config.ffn_size
    shapes: dict[str, tuple[int, ...]] = {"embed.weight": (config.vocab_size, h)}
    norm = ("weight", "bias") if config.norm == "layer" else ("weight",)
    for i in range(config.num_layers):
        p = f"blocks.{i}."
        for which in ("attn_norm", "ffn_norm"):
            shapes.update({f"{p}{which}.{n}": (h,) for n in norm})
        shapes.update({f"{p}attn.q_proj.weight": (h, q), f"{p}attn.k_proj.weight": (h, kv)})
        shapes.update({f"{p}attn.v_proj.weight": (h, kv), f"{p}attn.o_proj.weight": (q, h)})
        if config.qkv_bias:
            shapes.update({f"{p}attn.q_proj.bias": (q,), f"{p}attn.k_proj.bias": (kv,), f"{p}attn.v_proj.bias": (kv,)})
        if config.gated_ffn:
            shapes[f"{p}ffn.gate_proj.weight"] = (h, f)
        shapes.update({f"{p}ffn.up_proj.weight": (h, f), f"{p}ffn.down_proj.weight": (f, h)})
    shapes.update({f"norm.{n}": (h,) for n in norm})
    if not config.tie_embeddings:
        shapes["lm_head.weight"] = (config.vocab_size, h)
    return shapes


def _layout(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, int]]:
    """Byte (offset, length) of each weight in the data file, each offset aligned to 4 KiB (ONNX Runtime maps
    aligned external data instead of copying it)."""
    layout, offset = {}, 0
    for name, shape in shapes.items():
        length = 4 * math.prod(shape)
        layout[name] = (offset, length)
        offset += -(-length // DATA_ALIGNMENT) * DATA_ALIGNMENT
    return layout


def _write_data(
    file: BinaryIO, shapes: Mapping[str, tuple[int, ...]], weights: Mapping[str, np.ndarray] | None, seed: int
) -> None:
    """Write every weight at its `_layout` offset: the given arrays, or random ones (N(0, 0.02²) matrices streamed
    from a pool of 2²⁰ draws at a random start each, unit norm scales, zero biases; latency does not depend on
    the values, and drawing 50 M normals would take longer than writing them)."""
    rng = np.random.default_rng(seed)
    pool = rng.standard_normal(RANDOM_POOL, dtype=np.float32)
    pool *= 0.02
    layout = _layout(shapes)
    for name, shape in shapes.items():
        offset, length = layout[name]
        file.seek(offset)
        if weights is not None:
            if name not in weights:
                raise KeyError(f"no weight {name!r}, which the config implies; the weights hold {len(weights)} others")
            array = np.ascontiguousarray(weights[name], dtype=np.float32)
            if array.shape != shape:
                raise ValueError(f"weight {name!r} has shape {array.shape}; the config implies {shape}")
            file.write(memoryview(array).cast("B"))
        elif len(shape) == 1:
            file.write(np.full(shape, 1.0 if name.endswith("weight") else 0.0, np.float32).tobytes())
        else:
            left, start = length // 4, int(rng.integers(RANDOM_POOL))
            while left:
                chunk = pool[start : start + left]
                file.write(memoryview(chunk).cast("B"))
                left, start = left - chunk.size, 0
    end = max(offset + length for offset, length in layout.values())
    file.truncate(end)


def weights_from_model(model: GPT) -> dict[str, np.ndarray]:
    """A `GPT`'s weights in the graphs' layout (linear weights transposed to [in, out]); `build_graphs` checks
    them against the config."""
    state = {k: v.detach().cpu().float().numpy() for k, v in model.state_dict().items()}
    return {
        name: np.ascontiguousarray(state[name].T if name.endswith("_proj.weight") else state[name])
        for name in weight_shapes(model.config)
        if name in state
    }


class _Builder:
    """Nodes and initializers of one graph, with fresh value names; weights point into the external data file."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], data_file: str) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.shapes, self.layout, self.data_file = shapes, _layout(shapes), data_file
        self._used: set[str] = set()
        self._consts: dict[tuple, str] = {}
        self._count = 0

    def fresh(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        name = out or self.fresh(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], **attrs))
        return name

    def weight(self, name: str) -> str:
        if name not in self._used:
            self._used.add(name)
            offset, length = self.layout[name]
            tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=self.shapes[name])
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in (("location", self.data_file), ("offset", str(offset)), ("length", str(length))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            self.initializers.append(tensor)
        return name

    def const(self, value: Any, dtype: Any = np.int64) -> str:
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            self._consts[key] = self.fresh("const")
            self.initializers.append(numpy_helper.from_array(array, self._consts[key]))
        return self._consts[key]


def _norm(b: _Builder, config: ArchConfig, x: str, prefix: str) -> str:
    if config.norm == "layer":
        return b.op(
            "LayerNormalization",
            x,
            b.weight(f"{prefix}.weight"),
            b.weight(f"{prefix}.bias"),
            axis=-1,
            epsilon=config.norm_eps,
        )
    mean = b.op("ReduceMean", b.op("Pow", x, b.const(2.0, np.float32)), b.const([-1]), keepdims=1)
    rms = b.op("Reciprocal", b.op("Sqrt", b.op("Add", mean, b.const(config.norm_eps, np.float32))))
    return b.op("Mul", b.op("Mul", x, rms), b.weight(f"{prefix}.weight"))


def _linear(b: _Builder, x: str, prefix: str, bias: bool = False) -> str:
    y = b.op("MatMul", x, b.weight(f"{prefix}.weight"))
    return b.op("Add", y, b.weight(f"{prefix}.bias")) if bias else y


def _heads(b: _Builder, x: str, heads: int, head_dim: int, out: str | None = None) -> str:
    """[B, L, heads·d] → [B, heads, L, d]."""
    return b.op("Transpose", b.op("Reshape", x, b.const([0, -1, heads, head_dim])), perm=[0, 2, 1, 3], out=out)


def _rope(b: _Builder, x: str, cos: str, sin: str, head_dim: int, out: str | None = None) -> str:
    half = head_dim // 2
    axis = b.const([3])
    first = b.op("Slice", x, b.const([0]), b.const([half]), axis)
    second = b.op("Slice", x, b.const([half]), b.const([head_dim]), axis)
    rotated = b.op("Concat", b.op("Neg", second), first, axis=-1)
    return b.op("Add", b.op("Mul", x, cos), b.op("Mul", rotated, sin), out=out)


def _repeat_kv(b: _Builder, x: str, config: ArchConfig) -> str:
    """GQA: [B, kv, T, d] → [B, heads, T, d], each KV head repeated for its query heads (repeat_interleave)."""
    repeat = config.num_heads // config.num_kv_heads
    if repeat == 1:
        return x
    expanded = b.op("Expand", b.op("Unsqueeze", x, b.const([2])), b.const([1, 1, repeat, 1, 1]))
    return b.op("Reshape", expanded, b.const([0, config.num_heads, -1, config.head_dim]))


def _activation(b: _Builder, config: ArchConfig, x: str) -> str:
    if config.activation == "relu":
        return b.op("Relu", x)
    if config.activation == "silu":
        return b.op("Mul", x, b.op("Sigmoid", x))
    # exact GELU, as F.gelu: x · ½ · (1 + erf(x / √2))
    erf = b.op("Erf", b.op("Mul", x, b.const(1 / np.sqrt(2.0), np.float32)))
    return b.op("Mul", b.op("Mul", x, b.const(0.5, np.float32)), b.op("Add", erf, b.const(1.0, np.float32)))


def _graph(config: ArchConfig, data_file: str, decode: bool) -> onnx.ModelProto:
    c = config
    b = _Builder(weight_shapes(config), data_file)
    names = cache_names(c.num_layers, "past")
    cos_table, sin_table = c.rope_tables()
    b.initializers += [numpy_helper.from_array(cos_table, "rope_cos"), numpy_helper.from_array(sin_table, "rope_sin")]
    tokens = "token" if decode else "tokens"
    # Positions start after the cache (decode) or at 0 (prefill); the new length is the token axis.
    if decode:
        start = b.op("Shape", names[0], start=2, end=3)
        stop = b.op("Add", start, b.const([1]))
    else:
        start, stop = b.const([0]), b.op("Shape", tokens, start=1, end=2)
    cos = b.op("Slice", "rope_cos", start, stop, b.const([0]))
    sin = b.op("Slice", "rope_sin", start, stop, b.const([0]))
    embed = b.weight("embed.weight")
    x = b.op("Gather", embed, tokens, axis=0)
    mask = None
    if not decode:
        # Causal mask: 0 on and below the diagonal, float32's minimum above it (as SDPA's is_causal exports).
        square = b.op("Concat", stop, stop, axis=0)
        ones = b.op("ConstantOfShape", square, value=numpy_helper.from_array(np.ones(1, np.float32)))
        lower = b.op("Trilu", ones, upper=0)
        keep = b.op("Equal", lower, b.const(1.0, np.float32))
        mask = b.op("Where", keep, b.const(0.0, np.float32), b.const(_FLOAT_MIN, np.float32))
    scale = b.const(np.sqrt(1.0 / np.sqrt(c.head_dim)), np.float32)  # on q and on kᵀ, as the exporter splits it
    outputs = []
    for i in range(c.num_layers):
        p = f"blocks.{i}."
        h = _norm(b, c, x, f"{p}attn_norm")
        key, value = f"present_key_{i}", f"present_value_{i}"
        # Prefill's new keys and values are the cache; decode's are appended to the past ones.
        new_key, new_value = (None, None) if decode else (key, value)
        q = _heads(b, _linear(b, h, f"{p}attn.q_proj", c.qkv_bias), c.num_heads, c.head_dim)
        k = _heads(b, _linear(b, h, f"{p}attn.k_proj", c.qkv_bias), c.num_kv_heads, c.head_dim)
        v = _heads(b, _linear(b, h, f"{p}attn.v_proj", c.qkv_bias), c.num_kv_heads, c.head_dim, out=new_value)
        q, k = _rope(b, q, cos, sin, c.head_dim), _rope(b, k, cos, sin, c.head_dim, out=new_key)
        if decode:
            b.op("Concat", names[2 * i], k, axis=2, out=key)
            b.op("Concat", names[2 * i + 1], v, axis=2, out=value)
        outputs += [key, value]
        keys_t = b.op("Transpose", _repeat_kv(b, key, c), perm=[0, 1, 3, 2])
        scores = b.op("MatMul", b.op("Mul", q, scale), b.op("Mul", keys_t, scale))
        if mask is not None:
            scores = b.op("Add", scores, mask)
        attended = b.op("MatMul", b.op("Softmax", scores, axis=-1), _repeat_kv(b, value, c))
        merged = b.op("Reshape", b.op("Transpose", attended, perm=[0, 2, 1, 3]), b.const([0, -1, c.q_width]))
        x = b.op("Add", x, b.op("MatMul", merged, b.weight(f"{p}attn.o_proj.weight")))
        h = _norm(b, c, x, f"{p}ffn_norm")
        if c.gated_ffn:
            gate = _activation(b, c, _linear(b, h, f"{p}ffn.gate_proj"))
            inner = b.op("Mul", gate, _linear(b, h, f"{p}ffn.up_proj"))
        else:
            inner = _activation(b, c, _linear(b, h, f"{p}ffn.up_proj"))
        x = b.op("Add", x, _linear(b, inner, f"{p}ffn.down_proj"))
    last = b.op("Gather", _norm(b, c, x, "norm"), b.const(-1), axis=1)
    head = embed if c.tie_embeddings else b.weight("lm_head.weight")
    b.op("Gemm", last, head, transB=1, out="logits")

    kv = ["batch", c.num_kv_heads, "past", c.head_dim]
    present = ["batch", c.num_kv_heads, "past_plus_1" if decode else "prompt", c.head_dim]
    inputs = [helper.make_tensor_value_info(tokens, TensorProto.INT64, ["batch", 1 if decode else "prompt"])]
    if decode:
        inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, kv) for n in names]
    outs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", c.vocab_size])]
    outs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, present) for n in outputs]
    graph = helper.make_graph(b.nodes, "decode" if decode else "prefill", inputs, outs, b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="slm.graphs")
    model.ir_version = 8  # ONNX Runtime 1.14 and later read it; onnx's default is newer than some device runtimes
    return model


def build_graphs(
    config: ArchConfig,
    out_dir: str | os.PathLike,
    stem: str = "model",
    *,
    weights: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
) -> dict[str, Path]:
    """Write `<stem>.prefill.onnx` and `<stem>.decode.onnx` into `out_dir`, random weights from `seed` unless
    `weights` are given (`weights_from_model(gpt)`).

    The weights go beside each graph in `<file>.onnx.data`, as `ondevice.export` names external data (so
    `ondevice.bundle` carries them); they are drawn or converted once, written for the prefill graph and copied
    for the decode graph. Every file appears complete or not at all.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {kind: out / f"{stem}.{kind}.onnx" for kind in ("prefill", "decode")}
    shapes = weight_shapes(config)
    with tempfile.TemporaryDirectory(prefix=f".{stem}.", suffix=".partial", dir=out) as folder:
        staged = {kind: Path(folder) / path.name for kind, path in files.items()}
        data = {kind: path.with_name(path.name + ".data") for kind, path in staged.items()}
        with open(data["prefill"], "wb") as file:
            _write_data(file, shapes, weights, seed)
        shutil.copyfile(data["prefill"], data["decode"])  # not a hard link: onnx's checker refuses those
        for kind, path in staged.items():
            onnx.save_model(_graph(config, data[kind].name, decode=kind == "decode"), path)
        # data first, so a graph never names a missing or older weights file
        for kind, path in files.items():
            os.replace(data[kind], path.with_name(path.name + ".data"))
            os.replace(staged[kind], path)
    return files
