"""ONNX graphs of a language model for a device: prefill (prompt → logits, cache) and one decode step.

The decode graph takes the past keys and values of every layer as inputs and returns the grown cache
as outputs, so a runtime loops it token by token.

`export_graphs` ships the graphs `slm.graphs` writes from the model's config, with the model's weights, and checks
them against torch to 1e-4: the graphs the search timed, built in seconds. `via="torch"` traces the model through
torch's dynamo exporter instead (`export_prefill`, `export_decode`: minutes at 50 M parameters). The two compute the
same thing (`tests/test_slm_graphs.py`), but the exporter's graphs spend ~0.1 ms a layer more per decode step on
shape arithmetic (`benchmarks/RESULTS.md`, slm § 0), so what ships by default is the leaner one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ondevice.checkpoint_paths import refuse_remote
from ondevice.export import ExportCheck, export_onnx, quantize_dynamic_int8, verify_onnx
from ondevice.io import atomic_path, sha256_file
from slm.arch import ArchConfig
from slm.graphs import build_graphs, cache_names, weights_from_model
from slm.model import GPT


class PrefillGraph(nn.Module):
    """tokens [B, P] → (next-token logits [B, V], present keys/values per layer [B, kv_heads, P, head_dim])."""

    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor) -> tuple[Tensor, ...]:
        logits, cache = self.model.prefill(tokens)
        return (logits, *(t for layer in cache for t in layer))


class DecodeGraph(nn.Module):
    """(token [B, 1], past keys/values [B, kv_heads, T, head_dim] per layer) → (logits [B, V], present at T+1)."""

    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.model = model

    def forward(self, token: Tensor, *past: Tensor) -> tuple[Tensor, ...]:
        cache = [(past[2 * i], past[2 * i + 1]) for i in range(len(past) // 2)]
        logits, cache = self.model.decode(token, cache)
        return (logits, *(t for layer in cache for t in layer))


def prefill_inputs(config: ArchConfig, prompt_length: int, batch_size: int = 1, seed: int = 0) -> tuple[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randint(0, config.vocab_size, (batch_size, prompt_length), generator=generator),)


def decode_inputs(config: ArchConfig, past_length: int, batch_size: int = 1, seed: int = 0) -> tuple[Tensor, ...]:
    """A token and a random cache of `past_length` tokens (shape alone decides the cost)."""
    generator = torch.Generator().manual_seed(seed)
    token = torch.randint(0, config.vocab_size, (batch_size, 1), generator=generator)
    shape = (batch_size, config.num_kv_heads, past_length, config.head_dim)
    past = tuple(torch.randn(shape, generator=generator) for _ in range(2 * config.num_layers))
    return (token, *past)


def export_prefill(
    model: GPT, path: str | os.PathLike, prompt_length: int = 8, verify: bool = True
) -> ExportCheck | None:
    """Export the prefill graph with symbolic batch and prompt length; check it against torch to 1e-4."""
    config = model.config
    inputs = prefill_inputs(config, prompt_length, batch_size=2)
    # The exporter specialises a length it sees as 1, and asks that the traced length be inside the range.
    prompt = torch.export.Dim("prompt", min=2, max=config.context_length)
    graph = PrefillGraph(model)
    export_onnx(
        graph,
        inputs,
        path,
        input_names=["tokens"],
        output_names=["logits", *cache_names(config.num_layers, "present")],
        dynamic_axes=[{1: prompt}],
    )
    return check_against_torch(graph, path, inputs) if verify else None


def export_decode(model: GPT, path: str | os.PathLike, past_length: int = 8, verify: bool = True) -> ExportCheck | None:
    """Export one decode step with symbolic batch and past length; check it against torch to 1e-4."""
    config = model.config
    inputs = decode_inputs(config, past_length, batch_size=2)
    past = torch.export.Dim("past", min=2, max=config.context_length - 1)
    graph = DecodeGraph(model)
    export_onnx(
        graph,
        inputs,
        path,
        input_names=["token", *cache_names(config.num_layers, "past")],
        output_names=["logits", *cache_names(config.num_layers, "present")],
        dynamic_axes=[{}, *({2: past} for _ in range(2 * config.num_layers))],
    )
    return check_against_torch(graph, path, inputs) if verify else None


def check_against_torch(graph: nn.Module, path: str | os.PathLike, inputs: tuple[Tensor, ...]) -> ExportCheck:
    """Every output of the ONNX file against the torch module to 1e-4, at batch sizes 1 and 2."""
    return verify_onnx(graph, path, inputs, atol=1e-4, batch_sizes=(1, 2))


EXPORTERS = ("graphs", "torch")


def export_graphs(
    model: GPT,
    out_dir: str | os.PathLike,
    stem: str = "model",
    *,
    int8: bool = False,
    verify: bool = True,
    via: str = "graphs",
) -> dict[str, Path]:
    """Write `<stem>.prefill.onnx` and `<stem>.decode.onnx` (and `.int8.onnx` twins) into `out_dir`, checked
    against torch to 1e-4 at batch sizes 1 and 2 unless `verify` is False.

    `via="graphs"` (the default) writes them with `slm.graphs.build_graphs` from the model's config and weights,
    which live beside each graph in `<file>.onnx.data`; `via="torch"` traces the model through torch's exporter.
    """
    if via not in EXPORTERS:
        raise ValueError(f"via must be one of {EXPORTERS}, got {via!r}")
    out = Path(out_dir)
    files = {"prefill": out / f"{stem}.prefill.onnx", "decode": out / f"{stem}.decode.onnx"}
    if via == "torch":
        export_prefill(model, files["prefill"], verify=verify)
        export_decode(model, files["decode"], verify=verify)
    else:
        build_graphs(model.config, out, stem=stem, weights=weights_from_model(model))
        if verify:  # at the lengths export_prefill and export_decode trace at
            check_against_torch(PrefillGraph(model), files["prefill"], prefill_inputs(model.config, 8, batch_size=2))
            check_against_torch(DecodeGraph(model), files["decode"], decode_inputs(model.config, 8, batch_size=2))
    if int8:
        for kind in ("prefill", "decode"):
            files[f"{kind}-int8"] = quantize_dynamic_int8(files[kind], out / f"{stem}.{kind}.int8.onnx")
    return files


def random_model(config: ArchConfig, seed: int = 0) -> GPT:
    """Random weights: enough for latency, which depends on the shape alone."""
    torch.manual_seed(seed)
    return GPT(config).eval()


def as_arrays(inputs: tuple[Tensor, ...], names: list[str]) -> dict[str, np.ndarray]:
    return {n: t.numpy() for n, t in zip(names, inputs, strict=True)}


@dataclass(frozen=True)
class CheckpointExport:
    """What `export_checkpoint` wrote: the graphs (as `export_graphs` names them), the tokenizer copied beside them,
    and the check that the copy loads with the model's vocabulary size."""

    files: dict[str, Path]
    tokenizer: Path
    tokenizer_vocab_size: int
    model_vocab_size: int

    @property
    def vocab_ok(self) -> bool:
        return self.tokenizer_vocab_size == self.model_vocab_size

    def verification_line(self) -> str:
        return (
            f"{self.tokenizer}: loads, vocab {self.tokenizer_vocab_size} = the model's {self.model_vocab_size}"
            if self.vocab_ok
            else f"{self.tokenizer}: vocab {self.tokenizer_vocab_size}, the model's {self.model_vocab_size}"
        )


def checkpoint_tokenizer(checkpoint: Mapping[str, Any], where: str) -> Path:
    """The tokenizer an `slm fit` checkpoint was trained with: the path it records (``slm.tokenizer_path``), else
    ``tokenizer.json`` in its datamodule's ``data_dir``; its sha256 must match the one recorded."""
    from slm.data import TOKENIZER_NAME
    from slm.train import CHECKPOINT_KEY

    record = checkpoint.get(CHECKPOINT_KEY) or {}
    data_dir = (checkpoint.get("datamodule_hyper_parameters") or {}).get("data_dir")
    recorded = record.get("tokenizer_path")
    path = Path(recorded) if recorded else Path(data_dir) / TOKENIZER_NAME if data_dir else None
    if path is None:
        raise ValueError(f"{where}: fields 'slm.tokenizer_path' and 'datamodule_hyper_parameters.data_dir' are empty")
    if not path.is_file():
        raise FileNotFoundError(
            f"{where}: its tokenizer {path} (field 'slm.tokenizer_path') is missing; rerun `slm fit`'s data "
            "preparation with the same data settings, which writes it again"
        )
    expected = record.get("tokenizer_sha256")
    if expected and sha256_file(path) != expected:
        raise ValueError(
            f"{where}: {path} is not the tokenizer it was trained with (field 'slm.tokenizer_sha256' is "
            f"{expected[:12]}…, the file's {sha256_file(path)[:12]}…)"
        )
    return path


def export_checkpoint(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    int8: bool = False,
    tokenizer: str | os.PathLike | None = None,
) -> CheckpointExport:
    """Export an `slm fit` checkpoint's model with `export_graphs` (stem: the checkpoint's file stem) and copy its
    tokenizer beside the graphs as ``tokenizer.json`` (written atomically).

    The checkpoint, a local file, is read with ``torch.load(weights_only=True)``: tensors and plain containers, never
    code. ``tokenizer`` overrides the path the checkpoint records.

    Raises:
        ondevice.checkpoint_paths.RemoteCheckpointError: ``checkpoint`` is a URL.
        FileNotFoundError: no checkpoint, or no tokenizer file.
        ValueError: not an `slm fit` checkpoint, a tokenizer other than the one recorded, or one whose vocabulary
            size differs from the model's.
    """
    from tokenizers import Tokenizer

    from slm.data import TOKENIZER_NAME
    from slm.train import load_gpt, read_checkpoint

    checkpoint = Path(refuse_remote(checkpoint, "checkpoint"))  # a URL named as given, before Path folds its //
    state = read_checkpoint(checkpoint)
    model = load_gpt(state, str(checkpoint)).eval()
    source = Path(tokenizer) if tokenizer is not None else checkpoint_tokenizer(state, str(checkpoint))
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such tokenizer file")
    vocab = Tokenizer.from_file(str(source)).get_vocab_size()
    if vocab != model.config.vocab_size:
        raise ValueError(
            f"{source}: the tokenizer has {vocab} tokens but {checkpoint}'s model (field 'hyper_parameters.arch."
            f"vocab_size') has {model.config.vocab_size}; export with the tokenizer it was trained with"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = export_graphs(model, out, stem=checkpoint.stem, int8=int8)
    copied = out / TOKENIZER_NAME
    with atomic_path(copied) as tmp:
        shutil.copyfile(source, tmp)
    loaded = Tokenizer.from_file(str(copied)).get_vocab_size()
    result = CheckpointExport(files, copied, loaded, model.config.vocab_size)
    if not result.vocab_ok:
        raise ValueError(f"{copied}: the copied tokenizer has {loaded} tokens, the model {model.config.vocab_size}")
    return result
