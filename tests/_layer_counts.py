"""Parameter and MAC counts of the AMR models worked out from their layer lists, without building them.

Each model family is written out here from its documented architecture and constructor defaults, layer by
layer, so that the tests compare what the model code builds with an independent sum: a change to a model
(a width, a bias, a block) shows up as a failure. Layer rules (PyTorch's conventions):

- Conv (any dimension), ``in → out``, kernel of ``k`` elements, ``g`` groups: ``in/g · out · k`` weights,
  plus ``out`` biases; MACs ``in/g · k`` per output element.
- Linear ``in → out``: ``in · out + out``; MACs ``in · out`` per token.
- LSTM ``in → h``: four gates, each with an input and a recurrent matrix and two bias vectors (PyTorch and
  CuDNN): ``4 · (in·h + h·h + 2h)``.
- BatchNorm over ``C`` channels and LayerNorm over ``D`` features: a scale and a shift each, ``2C`` / ``2D``.
- Attention of ``Tq`` queries on ``Tk`` keys at width ``D`` (all heads together): ``Tq · Tk · D`` MACs for the
  scores and as many for the weighted sum of the values.

MACs count the products of convolutions, linear layers and attention only (no bias additions, norms,
activations or pooling), as the papers' MAC figures do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def conv(in_channels: int, out_channels: int, kernel: int | Sequence[int], groups: int = 1, bias: bool = True) -> int:
    taps = math.prod(kernel) if isinstance(kernel, Sequence) else kernel
    return in_channels // groups * out_channels * taps + (out_channels if bias else 0)


def linear(in_features: int, out_features: int) -> int:
    return in_features * out_features + out_features


def lstm(input_size: int, hidden: int) -> int:
    return 4 * (input_size * hidden + hidden * hidden + 2 * hidden)


def batch_norm(channels: int) -> int:
    return 2 * channels


def layer_norm(features: int) -> int:
    return 2 * features


def conv_out_length(length: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    return (length + 2 * padding - kernel) // stride + 1


def conv_macs(in_channels: int, out_channels: int, kernel: int, out_length: int, groups: int = 1) -> int:
    return out_length * out_channels * (in_channels // groups) * kernel


def attention_macs(queries: int, keys: int, width: int) -> int:
    return 2 * queries * keys * width


# --- the baselines -------------------------------------------------------------------------------------------


def vtcnn2_params(num_classes: int, length: int, channels: tuple[int, int] = (256, 80), hidden: int = 256) -> int:
    """Conv 1×3 (1 → 256), Conv 2×3 (256 → 80), each padded by 2 in time (L + 2 then L + 4 steps, one row),
    Dense 80·(L + 4) → 256, Dense 256 → classes."""
    c1, c2 = channels
    return conv(1, c1, (1, 3)) + conv(c1, c2, (2, 3)) + linear(c2 * (length + 4), hidden) + linear(hidden, num_classes)


def resnet_params(num_classes: int, length: int, channels: int = 32, kernel_size: int = 3, hidden: int = 128) -> int:
    """Stacks of (1×1 conv, two residual units of two k-convs, max pool 2), as many as leave two steps (at most
    6); flatten channels · L / 2**stacks → FC hidden → FC hidden → FC classes."""
    stacks = min(6, int(math.log2(length)) - 1)
    unit = 2 * conv(channels, channels, kernel_size)
    features = sum(conv(2 if i == 0 else channels, channels, 1) + 2 * unit for i in range(stacks))
    flat = channels * (length // 2**stacks)
    return features + linear(flat, hidden) + linear(hidden, hidden) + linear(hidden, num_classes)


def cldnn_params(
    num_classes: int,
    filters: int = 50,
    kernel_size: int = 8,
    lstm_hidden: int = 50,
    hidden: int = 256,
    num_convs: int = 3,
) -> int:
    """Convs 1×8 (1 → 50, then 50 → 50 twice); the first and last concatenated, 2·50 channels × the I and Q rows
    per step into LSTM 50; Dense 50 → 256 → classes."""
    convs = conv(1, filters, (1, kernel_size)) + (num_convs - 1) * conv(filters, filters, (1, kernel_size))
    recurrent = lstm(2 * filters * 2, lstm_hidden)
    return convs + recurrent + linear(lstm_hidden, hidden) + linear(hidden, num_classes)


def mcldnn_params(
    num_classes: int, filters: int = 50, kernel_size: int = 8, lstm_hidden: int = 128, hidden: int = 128
) -> int:
    """Conv 2×8 on I/Q (1 → 50); Conv1D k8 on I and on Q (1 → 50 each); Conv 1×8 on their stack (50 → 50);
    Conv 2×5 on the concatenation (100 → 100); LSTM 100 → 128, LSTM 128 → 128; Dense 128 → 128 → 128 → classes."""
    convs = (
        conv(1, filters, (2, kernel_size))
        + 2 * conv(1, filters, kernel_size)
        + conv(filters, filters, (1, kernel_size))
        + conv(2 * filters, 2 * filters, (2, 5))
    )
    recurrent = lstm(2 * filters, lstm_hidden) + lstm(lstm_hidden, lstm_hidden)
    return convs + recurrent + linear(lstm_hidden, hidden) + linear(hidden, hidden) + linear(hidden, num_classes)


def lstm2_params(num_classes: int, hidden: int = 128) -> int:
    """LSTM over (amplitude, phase): 2 → 128, then 128 → 128; Dense 128 → classes."""
    return lstm(2, hidden) + lstm(hidden, hidden) + linear(hidden, num_classes)


# --- the SKD students ----------------------------------------------------------------------------------------

KD_CNN = {"widths": (32, 48, 64, 64), "kernels": (7, 5, 3, 3), "pool_after": (1, 2)}
KD_MOBILENET = {
    "stem": 16,
    "blocks": ((1, 16, 1), (4, 24, 2), (4, 24, 1), (4, 32, 2), (4, 32, 1), (4, 48, 2)),
    "last": 128,
    "kernel_size": 5,
}


def kd_cnn_counts(num_classes: int, length: int = 128) -> tuple[int, int]:
    """(parameters, MACs): bias-free Conv1d → BatchNorm per layer, same padding, max pool 2 after the listed
    layers; global average pool; Linear widths[-1] → classes."""
    params = macs = 0
    in_channels, steps = 2, length
    for i, (width, kernel) in enumerate(zip(KD_CNN["widths"], KD_CNN["kernels"], strict=True)):
        params += conv(in_channels, width, kernel, bias=False) + batch_norm(width)
        macs += conv_macs(in_channels, width, kernel, steps)
        if i in KD_CNN["pool_after"]:
            steps //= 2
        in_channels = width
    return params + linear(in_channels, num_classes), macs + in_channels * num_classes


def kd_mobilenet_counts(num_classes: int, length: int = 128) -> tuple[int, int]:
    """(parameters, MACs): bias-free Conv1d k5 stem (2 → 16) + BatchNorm; per ``(expand, out, stride)`` block a
    pointwise expansion (skipped when expand is 1), a depthwise k5 conv at the stride and a pointwise projection,
    each with BatchNorm; pointwise conv to 128 + BatchNorm; global average pool; Linear 128 → classes."""
    stem, kernel = KD_MOBILENET["stem"], KD_MOBILENET["kernel_size"]
    params = conv(2, stem, 5, bias=False) + batch_norm(stem)
    macs = conv_macs(2, stem, 5, length)
    in_channels, steps = stem, length
    for expand, out_channels, stride in KD_MOBILENET["blocks"]:
        hidden = in_channels * expand
        if expand != 1:
            params += conv(in_channels, hidden, 1, bias=False) + batch_norm(hidden)
            macs += conv_macs(in_channels, hidden, 1, steps)
        steps = conv_out_length(steps, kernel, stride, kernel // 2)
        params += conv(hidden, hidden, kernel, groups=hidden, bias=False) + batch_norm(hidden)
        macs += conv_macs(hidden, hidden, kernel, steps, groups=hidden)
        params += conv(hidden, out_channels, 1, bias=False) + batch_norm(out_channels)
        macs += conv_macs(hidden, out_channels, 1, steps)
        in_channels = out_channels
    last = KD_MOBILENET["last"]
    params += conv(in_channels, last, 1, bias=False) + batch_norm(last) + linear(last, num_classes)
    macs += conv_macs(in_channels, last, 1, steps) + last * num_classes
    return params, macs


# --- the teacher ---------------------------------------------------------------------------------------------


def clst_counts(
    num_classes: int,
    length: int = 128,
    dims: Sequence[int] = (32, 64, 96),
    depths: Sequence[int] = (1, 2, 2),
    embed_kernels: Sequence[int] = (7, 3, 3),
    embed_stride: int = 2,
    kv_stride: int = 2,
    mlp_ratio: float = 4.0,
    conv_embedding: bool = True,
    conv_projection: bool = True,
    psca: bool = True,
    stem: int = 32,
    stem_layers: int = 2,
    embed_norm: str = "layer",
    embed_pool: bool = False,
) -> tuple[int, int]:
    """(parameters, MACs) of ClST. An optional stem: a k7 Conv1d 2 → ``stem`` without bias at full length and
    BatchNorm, then ``stem_layers - 1`` k5 Conv1d ``stem`` → ``stem`` without bias and BatchNorm. Per stage: a
    token embedding (a strided Conv1d with bias, padding k // 2, or with ``conv_embedding=False`` a Conv1d whose
    kernel is its stride) and LayerNorm; with ``embed_norm="batch"`` the Conv1d has no bias and BatchNorm replaces
    LayerNorm; with ``embed_pool`` the Conv1d runs at stride 1 (a max-pool shortens it after); ``depth`` pre-norm blocks
    of LayerNorm, attention with Q, K, V projections (depthwise k3 conv without bias → BatchNorm → pointwise conv
    with bias, K and V at ``kv_stride``; or pointwise convs at full length), a Linear output, LayerNorm and an MLP
    dim → 4·dim → dim; PSCA (a pointwise bottleneck dim → max(dim / 4, 4) → dim applied to the average- and the
    max-pooled vector, and a k7 conv 2 → 1 over time). Head: LayerNorm and Linear dims[-1] → classes."""
    params = macs = 0
    in_channels, steps = 2, length
    if stem:
        params += conv(2, stem, 7, bias=False) + batch_norm(stem)
        macs += conv_macs(2, stem, 7, length)
        for _ in range(stem_layers - 1):
            params += conv(stem, stem, 5, bias=False) + batch_norm(stem)
            macs += conv_macs(stem, stem, 5, length)
        in_channels = stem
    bias = embed_norm == "layer"
    for dim, depth, kernel in zip(dims, depths, embed_kernels, strict=True):
        if conv_embedding:
            params += conv(in_channels, dim, kernel, bias=bias)
            conv_steps = conv_out_length(steps, kernel, 1 if embed_pool else embed_stride, kernel // 2)
            macs += conv_macs(in_channels, dim, kernel, conv_steps)
            steps = conv_steps // embed_stride if embed_pool else conv_steps
        else:
            params += conv(in_channels, dim, embed_stride, bias=bias)
            steps = conv_out_length(steps, embed_stride, embed_stride)
            macs += conv_macs(in_channels, dim, embed_stride, steps)
        params += layer_norm(dim) if embed_norm == "layer" else batch_norm(dim)
        hidden = int(dim * mlp_ratio)
        for _ in range(depth):
            if conv_projection:
                kv_steps = conv_out_length(steps, 3, kv_stride, 1)
                projection = conv(dim, dim, 3, groups=dim, bias=False) + batch_norm(dim) + conv(dim, dim, 1)
                params += 3 * projection
                for projected in (steps, kv_steps, kv_steps):
                    macs += conv_macs(dim, dim, 3, projected, groups=dim) + conv_macs(dim, dim, 1, projected)
            else:
                kv_steps = steps
                params += 3 * conv(dim, dim, 1)
                macs += 3 * conv_macs(dim, dim, 1, steps)
            macs += attention_macs(steps, kv_steps, dim)
            params += 2 * layer_norm(dim) + linear(dim, dim) + linear(dim, hidden) + linear(hidden, dim)
            macs += steps * (dim * dim + dim * hidden + hidden * dim)
        if psca:
            bottleneck = max(dim // 4, 4)
            params += conv(dim, bottleneck, 1) + conv(bottleneck, dim, 1) + conv(2, 1, 7)
            macs += 2 * (dim * bottleneck + bottleneck * dim) + conv_macs(2, 1, 7, steps)
        in_channels = dim
    params += layer_norm(in_channels) + linear(in_channels, num_classes)
    return params, macs + in_channels * num_classes


def param_count(name: str, num_classes: int, length: int = 128) -> int:
    """The derived parameter count of a registered AMR model at its defaults."""
    if name == "vtcnn2":
        return vtcnn2_params(num_classes, length)
    if name == "resnet":
        return resnet_params(num_classes, length)
    by_classes = {"cldnn": cldnn_params, "mcldnn": mcldnn_params, "lstm2": lstm2_params}
    if name in by_classes:
        return by_classes[name](num_classes)
    counts = {"clst": clst_counts, "kd_cnn": kd_cnn_counts, "kd_mobilenet": kd_mobilenet_counts}
    return counts[name](num_classes, length)[0]


def mac_count(name: str, num_classes: int, length: int = 128) -> int:
    """The derived MACs of one frame through ClST or a student at its defaults."""
    counts = {"clst": clst_counts, "kd_cnn": kd_cnn_counts, "kd_mobilenet": kd_mobilenet_counts}
    return counts[name](num_classes, length)[1]
