"""Latency and memory profiling on torch and ONNX Runtime, with the habits that make the numbers hold.

Warm-up before timing; one timed call per sample; median and spread, never a mean of a few runs;
threads set explicitly for both runtimes; each ONNX Runtime backend (and torch, for a factory) in a
process of its own so thread pools never share one; candidates interleaved round by round.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ondevice.device.runner import (
    GRAPH_OPTIMIZATION_LEVELS,
    InProcess,
    OrtRunner,
    ProfileError,
    WorkerClient,
    environment,
    measure_interleaved,
    ort_runner,
    serve,
    tile_batch,
)
from ondevice.export import ExampleInputs, as_input_tuple, export_onnx, quantize_dynamic_int8
from ondevice.report import LatencyReport, Measurement

BACKENDS = ("torch", "onnxruntime", "onnxruntime-int8")

__all__ = [
    "BACKENDS",
    "LatencyReport",
    "Measurement",
    "ProfileError",
    "count_macs",
    "load_factory",
    "model_facts",
    "profile",
]


def load_factory(spec: str) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Import `package.module:factory` and call it; it must return `(model, example_inputs)`."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"factory {spec!r}: expected 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"factory {spec!r}: cannot import module {module_name!r} ({exc})") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"factory {spec!r}: module {module_name!r} has no callable {attr!r}")
    result = factory()
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], nn.Module)):
        raise TypeError(f"factory {spec!r} must return (model, example_inputs), got {type(result).__name__}")
    return result[0], as_input_tuple(result[1])


def count_macs(model: nn.Module, example_inputs: ExampleInputs) -> int:
    """Multiply-accumulates for one example, counted by torch's own FLOP counter (matmul, conv, attention).

    Recurrent layers (``nn.LSTM``/``nn.GRU``/``nn.RNN``) may run as fused kernels the counter does not see; what
    it misses of their gate products is added from the layer's shape: per step, direction and layer, gates ×
    (input + hidden) × hidden. Element-wise work (activations, norms, softmax) is not counted, as in the papers'
    MAC figures.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    inputs = tuple(t[:1] for t in as_input_tuple(example_inputs))
    was_training, fastpath = model.training, torch.backends.mha.get_fastpath_enabled()
    model.eval()
    # The counter does not see fused CPU kernels (the encoder-layer fast path, CPU flash attention);
    # the plain paths compute the same products through matmuls it does count.
    torch.backends.mha.set_fastpath_enabled(False)
    counter = FlopCounterMode(display=False)
    recurrent_macs: list[int] = []
    seen_before: list[int] = []

    def before(layer: nn.Module, args: Any) -> None:
        seen_before.append(counter.get_total_flops())

    def after(layer: nn.Module, args: Any, out: Any) -> None:
        # Some recurrent kernels are seen by the counter (GRU on CPU), others are fused and unseen (LSTM):
        # add only what it missed.
        seen = (counter.get_total_flops() - seen_before.pop()) // 2
        recurrent_macs.append(max(0, _recurrent_macs(layer, args[0]) - seen))

    recurrent = [m for m in model.modules() if isinstance(m, nn.RNNBase)]
    hooks = [m.register_forward_pre_hook(before) for m in recurrent] + [
        m.register_forward_hook(after) for m in recurrent
    ]
    try:
        with counter, torch.no_grad(), sdpa_kernel([SDPBackend.MATH]):
            model(*inputs)
    finally:
        model.train(was_training)
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for hook in hooks:
            hook.remove()
    return int(counter.get_total_flops()) // 2 + sum(recurrent_macs)


def _recurrent_macs(layer: nn.RNNBase, x: torch.Tensor) -> int:
    """Gate MACs of one call of an ``nn.LSTM``/``nn.GRU``/``nn.RNN`` on one example (batch 1)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(
            f"count_macs: {type(layer).__name__} got a {type(x).__name__}; packed sequences are not counted"
        )
    steps = x.shape[1] if layer.batch_first and x.ndim == 3 else x.shape[0]
    gates = {"LSTM": 4, "GRU": 3}.get(layer.mode, 1)
    directions = 2 if layer.bidirectional else 1
    hidden = layer.hidden_size
    out = layer.proj_size or hidden
    per_step = 0
    for index in range(layer.num_layers):
        width = layer.input_size if index == 0 else out * directions
        per_step += gates * (width + out) * hidden + (hidden * out if layer.proj_size else 0)
    return steps * directions * per_step


class TorchRunner:
    """Eager torch inference (`inference_mode`) at a fixed thread count, timed one call per sample."""

    backend = "torch"

    def __init__(self, model: nn.Module, example_inputs: ExampleInputs, threads: int) -> None:
        self.model = model.eval()
        self.examples = [t.detach().cpu().numpy() for t in as_input_tuple(example_inputs)]
        self.threads = int(threads)
        self.restore_threads = torch.get_num_threads()
        self.inputs: tuple[torch.Tensor, ...] = ()

    def prepare(self, batch_size: int, warmup: int) -> None:
        torch.set_num_threads(self.threads)
        self.inputs = tuple(torch.from_numpy(tile_batch(a, batch_size)) for a in self.examples)
        with torch.inference_mode():
            self.model(*self.inputs)  # the first call also proves the forward works at this batch size
            for _ in range(warmup):
                self.model(*self.inputs)

    def run(self, n: int) -> list[float]:
        # Another in-process runner may have changed the pool size between rounds.
        torch.set_num_threads(self.threads)
        model, inputs, clock = self.model, self.inputs, time.perf_counter
        samples = []
        with torch.inference_mode():
            for _ in range(n):
                start = clock()
                model(*inputs)
                samples.append(clock() - start)
        return samples

    def close(self) -> None:
        torch.set_num_threads(self.restore_threads)


def _torch_worker_runner(request: dict) -> TorchRunner:
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already fixed for this process
        pass
    model, inputs = load_factory(request["factory"])
    return TorchRunner(model, inputs, request["threads"])


@dataclass
class _Candidate:
    name: str
    model: nn.Module | None = None
    factory: str | None = None
    onnx: Path | None = None
    inputs: tuple[torch.Tensor, ...] | dict[str, np.ndarray] = ()


def _is_onnx_path(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike)) and str(value).endswith(".onnx")


def _onnx_input_names(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    return [i.name for i in graph.input if i.name not in initializers]


def _has_own_inputs(value: Any) -> bool:
    """A `(model or path, example_inputs)` pair: candidates of different input shapes in one comparison."""
    return isinstance(value, tuple) and len(value) == 2 and (isinstance(value[0], nn.Module) or _is_onnx_path(value[0]))


def _candidate(name: str | None, value: Any, example_inputs: Any) -> _Candidate:
    if isinstance(value, nn.Module):
        if example_inputs is None:
            raise ValueError(f"model {name or type(value).__name__!r}: example_inputs are required with a module")
        return _Candidate(name or type(value).__name__, model=value, inputs=as_input_tuple(example_inputs))
    if _is_onnx_path(value):
        path = Path(value)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file")
        if example_inputs is None:
            raise ValueError(f"{path}: example_inputs are required with an ONNX file")
        graph_inputs = _onnx_input_names(path)
        if isinstance(example_inputs, Mapping):
            arrays = {k: np.asarray(v) for k, v in example_inputs.items()}
        else:
            tensors = (example_inputs,) if isinstance(example_inputs, (torch.Tensor, np.ndarray)) else example_inputs
            arrays = {
                n: (t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t))
                for n, t in zip(graph_inputs, tensors, strict=True)
            }
        return _Candidate(name or path.stem, onnx=path, inputs=arrays)
    if isinstance(value, str) and ":" in value:
        model, inputs = load_factory(value)
        return _Candidate(name or value.rpartition(":")[2], model=model, factory=value, inputs=inputs)
    raise TypeError(
        f"cannot profile {value!r}: give an nn.Module, a path to an .onnx file, or 'package.module:factory'"
    )


def _host_environment() -> dict[str, Any]:
    import onnx

    env = environment()
    env.update(
        torch=torch.__version__,
        onnx=onnx.__version__,
        torch_threads=torch.get_num_threads(),
        torch_interop_threads=torch.get_num_interop_threads(),
        torch_parallel_info=[line.strip() for line in torch.__config__.parallel_info().splitlines() if line.strip()],
    )
    return env


def model_facts(model: nn.Module, example_inputs: ExampleInputs) -> dict[str, Any]:
    """Parameter count and MACs per example, as reports and bundle manifests record them."""
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "macs": count_macs(model, example_inputs),
        "macs_counted": "matmul/conv/attention, torch.utils.flop_counter, per example",
    }


def _model_facts(candidate: _Candidate) -> dict[str, Any]:
    if candidate.model is not None:
        return model_facts(candidate.model, candidate.inputs)
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(candidate.onnx)).graph
    return {"params": int(sum(numpy_helper.to_array(t).size for t in graph.initializer)), "macs": None}


def _progress_bar(total: int, enabled: bool) -> tuple[Callable[[str], None] | None, Callable[[], None]]:
    if not enabled:
        return None, lambda: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="profiling", unit="step", leave=False)

    def update(message: str) -> None:
        bar.set_postfix_str(message, refresh=False)
        bar.update(1)

    return update, bar.close


def profile(
    model_or_onnx: nn.Module | str | os.PathLike | Mapping[str, Any],
    example_inputs: ExampleInputs | Mapping[str, np.ndarray] | None = None,
    backends: Sequence[str] = BACKENDS,
    threads: int | Sequence[int] = 1,
    warmup: int = 10,
    repeats: int = 50,
    batch_sizes: Sequence[int] = (1,),
    *,
    rounds: int = 10,
    isolate: bool = True,
    graph_optimization_level: str = "all",
    workdir: str | os.PathLike | None = None,
    progress: bool = True,
) -> LatencyReport:
    """Measure per-call latency of one model, or of several candidates interleaved, on each backend.

    `model_or_onnx` is an `nn.Module` (with `example_inputs`), a path to an `.onnx` file (ONNX Runtime
    backends only), a `"package.module:factory"` string whose function returns `(model, example_inputs)`,
    or a mapping of names to any of these to compare candidates side by side; in a mapping, a value may
    also be a `(model or path, example_inputs)` pair with inputs of its own. Example inputs are tiled
    along axis 0 to each batch size. With `isolate` (default), every ONNX Runtime session runs in a
    worker process of its own that never imports torch, and torch does too when the model comes from a
    factory (a module object stays in this process); `threads` is set for both runtimes either way.
    """
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        raise ValueError(f"unknown backends {unknown}; choose from {BACKENDS}")
    if graph_optimization_level not in GRAPH_OPTIMIZATION_LEVELS:
        raise ValueError(f"graph_optimization_level must be one of {sorted(GRAPH_OPTIMIZATION_LEVELS)}")
    thread_counts = [threads] if isinstance(threads, int) else list(threads)
    if not thread_counts or any(int(t) < 1 for t in thread_counts):
        raise ValueError(f"threads must be positive, got {threads!r}")
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise ValueError(f"batch sizes must be positive, got {batch_sizes!r}")
    if isinstance(model_or_onnx, Mapping):
        candidates = [
            _candidate(name, *(value if _has_own_inputs(value) else (value, example_inputs)))
            for name, value in model_or_onnx.items()
        ]
    else:
        candidates = [_candidate(None, model_or_onnx, example_inputs)]
    for c in candidates:
        if c.onnx is not None and "torch" in backends:
            raise ValueError(f"model {c.name!r} is an ONNX file; the 'torch' backend needs an nn.Module or a factory")

    owned = tempfile.TemporaryDirectory(prefix="ondevice-profile-") if workdir is None else None
    work = Path(owned.name if owned else workdir)
    work.mkdir(parents=True, exist_ok=True)
    try:
        onnx_files = _prepare_onnx(candidates, backends, work)
        loaders = {
            (c.name, backend, int(n)): functools.partial(
                _make_runner, c, backend, int(n), onnx_files, work, isolate, graph_optimization_level
            )
            for n in thread_counts
            for c in candidates
            for backend in backends
        }
        update, close_bar = _progress_bar(len(batch_sizes) * len(loaders) * (min(rounds, repeats) + 1), progress)
        try:
            measurements = measure_interleaved(loaders, [int(b) for b in batch_sizes], warmup, repeats, rounds, update)
        finally:
            close_bar()
    finally:
        if owned is not None:
            owned.cleanup()
    return LatencyReport(
        measurements=[Measurement.from_dict(m) for m in measurements],
        models={c.name: _model_facts(c) for c in candidates},
        environment=_host_environment(),
        settings={
            "warmup": warmup,
            "repeats": repeats,
            "rounds": min(rounds, repeats),
            "threads": thread_counts,
            "graph_optimization_level": graph_optimization_level,
            "isolate": isolate,
            "onnxruntime_interop_threads": 1,
            "onnxruntime_execution_mode": "sequential",
        },
    )


def _prepare_onnx(candidates: list[_Candidate], backends: Sequence[str], work: Path) -> dict[tuple[str, str], Path]:
    files: dict[tuple[str, str], Path] = {}
    if not any(b.startswith("onnxruntime") for b in backends):
        return files
    for c in candidates:
        fp32 = c.onnx
        if fp32 is None:
            inputs = c.inputs
            try:
                fp32 = export_onnx(c.model, inputs, work / f"{_file_stem(c.name)}.onnx")
            except Exception as exc:
                traced = max(2, inputs[0].shape[0])
                raise ProfileError(
                    f"model {c.name!r}: export for backend 'onnxruntime' failed (tracing at batch size {traced}): {exc}"
                ) from exc
        files[(c.name, "onnxruntime")] = fp32
        if "onnxruntime-int8" in backends:
            files[(c.name, "onnxruntime-int8")] = quantize_dynamic_int8(fp32, work / f"{_file_stem(c.name)}.int8.onnx")
    return files


def _file_stem(name: str) -> str:
    """A file name for a candidate or input name ("model/decode@256" holds a slash), unique per name."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return safe if safe == name else f"{safe}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def _input_arrays(c: _Candidate, session_inputs: Sequence[str]) -> dict[str, np.ndarray]:
    if isinstance(c.inputs, dict):
        return c.inputs
    return {n: t.detach().cpu().numpy() for n, t in zip(session_inputs, c.inputs, strict=True)}


def _make_runner(
    c: _Candidate,
    backend: str,
    threads: int,
    onnx_files: dict[tuple[str, str], Path],
    work: Path,
    isolate: bool,
    graph_optimization_level: str,
) -> Any:
    if backend == "torch":
        if isolate and c.factory is not None:
            # The worker imports the factory as this process does: same sys.path.
            child_env = {"PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)}
            command = [sys.executable, "-m", "ondevice.profile", "--torch-worker"]
            return WorkerClient(command, {"factory": c.factory, "threads": threads}, env=child_env)
        return InProcess(TorchRunner(c.model, c.inputs, threads))
    path = onnx_files[(c.name, backend)]
    arrays = _input_arrays(c, _onnx_input_names(path))
    if not isolate:
        return InProcess(OrtRunner(path, arrays, threads, graph_optimization_level))
    files = {}
    for name, array in arrays.items():
        files[name] = str(work / f"{_file_stem(c.name)}.{_file_stem(name)}.npy")
        np.save(files[name], array, allow_pickle=False)
    return ort_runner(
        {"onnx": str(path), "inputs": files, "threads": threads, "graph_optimization_level": graph_optimization_level}
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["--torch-worker"]:
        serve(_torch_worker_runner)
    else:
        sys.exit("usage: python -m ondevice.profile --torch-worker (internal); use the `ondevice profile` command")
