"""ONNX export with a dynamic batch axis, a check that ONNX Runtime agrees with torch, and int8 quantisation."""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ondevice.device.runner import ort_session, tile_batch
from ondevice.io import atomic_path

ExampleInputs = torch.Tensor | Sequence[torch.Tensor]


class ExportMismatchError(RuntimeError):
    """ONNX Runtime's outputs differ from torch's by more than the stated tolerance."""


@dataclass(frozen=True)
class ExportCheck:
    """The largest |ORT - torch| difference over all outputs and the batch sizes checked."""

    max_abs_error: float
    atol: float
    batch_sizes: tuple[int, ...]

    @property
    def ok(self) -> bool:
        return self.max_abs_error <= self.atol


def as_input_tuple(example_inputs: ExampleInputs) -> tuple[torch.Tensor, ...]:
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    if not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise TypeError("example inputs must be a tensor or a non-empty sequence of tensors")
    if any(t.ndim == 0 for t in inputs):
        raise ValueError("every example input needs a batch axis (axis 0)")
    return inputs


def default_input_names(inputs: Sequence[torch.Tensor]) -> list[str]:
    return ["x"] if len(inputs) == 1 else [f"x{i}" for i in range(len(inputs))]


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    # The exporter logs progress and notes about optional packages (torchvision) that are not errors.
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript", "")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def external_data_path(path: str | os.PathLike) -> Path:
    """Where `export_onnx` keeps a graph's weights when they are stored outside it."""
    path = Path(path)
    return path.with_name(path.name + ".data")


@contextlib.contextmanager
def _atomic_onnx_path(path: Path) -> Iterator[Path]:
    # The graph names its external data file (if the exporter writes one), so both are written under their
    # final names in a private folder, then moved: the data first, so the graph never points at a missing
    # or older file.
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.stem}.", suffix=".partial", dir=path.parent) as folder:
        staged = Path(folder) / path.name
        yield staged
        if external_data_path(staged).is_file():
            os.replace(external_data_path(staged), external_data_path(path))
        else:
            external_data_path(path).unlink(missing_ok=True)  # a stale one from an earlier export
        os.replace(staged, path)


def export_onnx(
    model: nn.Module,
    example_inputs: ExampleInputs,
    path: str | os.PathLike,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_batch: bool = True,
    dynamic_axes: Sequence[dict[int, torch.export.Dim]] | None = None,
    external_data: bool | None = None,
    opset: int = 18,
) -> Path:
    """Export `model` (in eval mode) to ONNX with torch's exporter; axis 0 of every input is dynamic.

    `dynamic_axes` adds more symbolic axes, one `{axis: torch.export.Dim}` per input (a Dim shared by
    several inputs ties their sizes), e.g. a sequence length or a KV-cache length. `external_data=True` stores
    the weights beside the graph in `<name>.onnx.data`; the default (None) leaves it to the exporter, which
    does so past its size threshold (protobuf cannot hold 2 GB). The files appear only when complete
    (written under temporary names, then renamed).
    """
    path = Path(path)
    inputs = as_input_tuple(example_inputs)
    names = list(input_names) if input_names is not None else default_input_names(inputs)
    if len(names) != len(inputs):
        raise ValueError(f"{len(names)} input names for {len(inputs)} example inputs")
    if dynamic_axes is not None and len(dynamic_axes) != len(inputs):
        raise ValueError(f"{len(dynamic_axes)} dynamic-axes entries for {len(inputs)} example inputs")
    if dynamic_batch and any(t.shape[0] == 1 for t in inputs):
        # torch.export treats a size-1 axis as a constant, so trace with two rows to keep the batch symbolic.
        inputs = tuple(torch.cat([t, t]) for t in inputs)
    dynamic_shapes = None
    if dynamic_batch or dynamic_axes is not None:
        batch = torch.export.Dim("batch")
        extra = dynamic_axes if dynamic_axes is not None else [{} for _ in inputs]
        per_input = [({0: batch} if dynamic_batch else {}) | dict(axes) for axes in extra]
        # Keyed by parameter name, so a forward(*tensors) signature gets its shapes grouped as torch.export expects.
        dynamic_shapes = dict(inspect.signature(model.forward).bind(*per_input).arguments)
    try:
        with _atomic_onnx_path(path) as tmp, _quiet_exporter(), _eval_mode(model), torch.no_grad():
            program = torch.onnx.export(
                model,
                inputs,
                dynamo=True,
                input_names=names,
                output_names=list(output_names) if output_names is not None else None,
                dynamic_shapes=dynamic_shapes,
                opset_version=opset,
                verbose=False,
            )
            program.save(str(tmp), external_data=external_data)
    except Exception as exc:
        raise RuntimeError(f"ONNX export of {type(model).__name__} to {path} failed: {exc}") from exc
    return path


def verify_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    example_inputs: ExampleInputs,
    *,
    atol: float = 1e-4,
    batch_sizes: Sequence[int] = (1, 3),
    raise_on_mismatch: bool = True,
) -> ExportCheck:
    """Run the ONNX file in ONNX Runtime and torch on the same inputs at several batch sizes.

    The tolerance is absolute: every output element must satisfy |ORT - torch| <= `atol` (1e-4 for fp32).
    Batch sizes other than the exported one also check that the batch axis really is dynamic.
    """
    path = Path(path)
    inputs = as_input_tuple(example_inputs)
    session = ort_session(path, threads=1)
    names = [i.name for i in session.get_inputs()]
    if len(names) != len(inputs):
        raise ValueError(f"{path}: the graph takes {len(names)} inputs ({names}), {len(inputs)} examples were given")
    worst = 0.0
    for batch_size in batch_sizes:
        arrays = [tile_batch(t.detach().cpu().numpy(), batch_size) for t in inputs]
        with _eval_mode(model), torch.no_grad():
            expected = model(*(torch.from_numpy(a) for a in arrays))
        expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
        got = session.run(None, dict(zip(names, arrays, strict=True)))
        if len(got) != len(expected):
            raise ExportMismatchError(f"{path}: ONNX Runtime returns {len(got)} outputs, torch {len(expected)}")
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            e = e.detach().cpu().numpy()
            if g.shape != e.shape:
                raise ExportMismatchError(
                    f"{path}: output {i} at batch size {batch_size} has shape {g.shape} in ONNX Runtime, "
                    f"{e.shape} in torch"
                )
            error = float(np.max(np.abs(g.astype(np.float64) - e.astype(np.float64)))) if e.size else 0.0
            worst = max(worst, error)
            if raise_on_mismatch and error > atol:
                raise ExportMismatchError(
                    f"{path}: output {i} at batch size {batch_size} differs from torch by up to {error:.3g} "
                    f"(tolerance: absolute {atol:g})"
                )
    return ExportCheck(max_abs_error=worst, atol=atol, batch_sizes=tuple(batch_sizes))


def quantize_dynamic_int8(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    weight_type: str = "qint8",
    per_channel: bool = False,
    reduce_range: bool = True,
) -> Path:
    """Dynamic int8 quantisation with ONNX Runtime: int8 weights, activations quantised at run time.

    `reduce_range` keeps weights to 7 bits. On x86 CPUs without VNNI the u8×s8 kernels add pairs of
    products in int16 and saturate with full 8-bit weights: on this project's AVX2 machines the logits
    of `ondevice.examples.small_cnn` are 4.4 % off (relative L2) with full range and 1.1 % off with
    reduced range (`benchmarks/profiler_agreement.py`).

    Whether it is faster than fp32 depends on the CPU (VNNI) and the model; measure it with
    `ondevice.profile(..., backends=("onnxruntime", "onnxruntime-int8"))` before relying on it.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    types = {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}
    if weight_type not in types:
        raise ValueError(f"weight_type must be one of {sorted(types)}, got {weight_type!r}")
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such ONNX file to quantise")
    with atomic_path(dst) as tmp, _quiet_exporter():
        quantize_dynamic(src, tmp, weight_type=types[weight_type], per_channel=per_channel, reduce_range=reduce_range)
    return dst


def write_metadata_props(path: str | os.PathLike, props: Mapping[str, str]) -> Path:
    """Set the ONNX file's ``metadata_props`` to ``props`` (string keys and values), replacing any there.

    The graph is rewritten atomically beside itself; weights kept in an external data file stay where they are
    (the graph names that file relative to its own folder).
    """
    import onnx

    path = Path(path)
    bad = [key for key, value in props.items() if not isinstance(key, str) or not isinstance(value, str)]
    if bad:
        raise TypeError(f"metadata_props keys and values must be strings; not so for {bad}")
    model = onnx.load(str(path), load_external_data=False)
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    return path
