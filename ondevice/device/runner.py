"""Latency measurement that runs on the target device: numpy, onnxruntime and the standard library only.

This file and :mod:`ondevice.device.manifest` (the manifest checks) are the whole device side. `ondevice bundle`
copies them into every bundle as `profile_bundle.py` and `manifest.py`, so a board or phone needs no
install beyond numpy and onnxruntime:

    python profile_bundle.py BUNDLE_DIR --threads 4        # or: python -m ondevice.device BUNDLE_DIR

The host's profiler (`ondevice.profile`) drives the same runners and the same worker protocol, so a
figure measured on the host and one measured on the board come from the same timing loop.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

if __package__:
    from ondevice.device.manifest import FORMAT_VERSION, BundleError, read_manifest
else:  # run as a script (a bundle's profile_bundle.py, a host profiler's worker): the manifest.py beside this file
    import importlib.util

    _spec = importlib.util.spec_from_file_location("manifest", Path(__file__).with_name("manifest.py"))
    if _spec is None or _spec.loader is None:
        raise ImportError(f"{Path(__file__).with_name('manifest.py')}: the bundle's manifest checks are missing")
    _manifest = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_manifest)
    FORMAT_VERSION, BundleError, read_manifest = (
        _manifest.FORMAT_VERSION,
        _manifest.BundleError,
        _manifest.read_manifest,
    )

RESULTS_FORMAT = "ondevice-device-results"
GRAPH_OPTIMIZATION_LEVELS = {
    "disabled": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


class ProfileError(RuntimeError):
    """A model could not be measured; the message names the model, backend and batch size."""


def summarize_latency(samples_s: Sequence[float], batch_size: int) -> dict[str, Any]:
    """Median, p10, p90 and IQR of per-call latencies (ms), and the throughput the median implies."""
    if len(samples_s) == 0:
        raise ValueError("no latency samples to summarise")
    ms = np.asarray(samples_s, dtype=np.float64) * 1e3
    p10, p25, median, p75, p90 = np.percentile(ms, [10, 25, 50, 75, 90])
    return {
        "n": int(ms.size),
        "median_ms": float(median),
        "p10_ms": float(p10),
        "p90_ms": float(p90),
        "iqr_ms": float(p75 - p25),
        "samples_per_s": float(batch_size * 1e3 / median),
        "samples_ms": [round(float(v), 6) for v in ms],
    }


_STATUS = Path("/proc/self/status")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int | None:
    """Resident set size now (Linux and Android; None elsewhere)."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def peak_rss_bytes() -> int | None:
    """Peak resident set size of this process since start or since the last `reset_peak_rss()`."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (ImportError, OSError):
        return None
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); False where the platform does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        # x86 names the model and flags per core; ARM boards use Hardware/Processor and Features.
        if sep and key in ("model name", "Hardware", "Processor", "flags", "Features", "CPU part") and key not in info:
            info[key] = value.strip()
    return info


def environment() -> dict[str, Any]:
    """What a latency figure depends on, read off this machine: CPU, cores, OS and runtime versions."""
    cpu = _cpuinfo()
    model = cpu.get("model name") or cpu.get("Hardware") or cpu.get("Processor") or platform.processor()
    try:
        usable_cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable_cores = os.cpu_count()
    env: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": model or "unknown",
        "cpu_flags": (cpu.get("flags") or cpu.get("Features") or "").split(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "thread_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ},
    }
    try:
        import onnxruntime as ort

        env["onnxruntime"] = ort.__version__
        env["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        env["onnxruntime"] = None
    return env


def tile_batch(array: np.ndarray, batch_size: int) -> np.ndarray:
    """The example repeated along axis 0 until it holds `batch_size` rows (C-contiguous)."""
    if array.ndim == 0:
        raise ValueError("an example input must have a batch axis (axis 0)")
    reps = -(-batch_size // array.shape[0])
    return np.ascontiguousarray(np.concatenate([array] * reps, axis=0)[:batch_size])


def ort_session(onnx_path: str | os.PathLike, threads: int, graph_optimization_level: str = "all"):
    """A CPU InferenceSession with `threads` intra-op threads, one inter-op thread, sequential execution."""
    import onnxruntime as ort

    if graph_optimization_level not in GRAPH_OPTIMIZATION_LEVELS:
        raise ValueError(
            f"graph_optimization_level must be one of {sorted(GRAPH_OPTIMIZATION_LEVELS)}, "
            f"got {graph_optimization_level!r}"
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = getattr(
        ort.GraphOptimizationLevel, GRAPH_OPTIMIZATION_LEVELS[graph_optimization_level]
    )
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


class OrtRunner:
    """One ONNX Runtime session with explicit threads, timed one `run` call per sample."""

    backend = "onnxruntime"

    def __init__(
        self,
        onnx_path: str | os.PathLike,
        inputs: Mapping[str, np.ndarray],
        threads: int,
        graph_optimization_level: str = "all",
    ) -> None:
        self.session = ort_session(onnx_path, threads, graph_optimization_level)
        expected = [i.name for i in self.session.get_inputs()]
        if sorted(expected) != sorted(inputs):
            raise ValueError(f"{onnx_path}: the graph's inputs are {expected}, the example gives {sorted(inputs)}")
        self.examples = dict(inputs)
        self.feeds: dict[str, np.ndarray] = {}

    def prepare(self, batch_size: int, warmup: int) -> None:
        self.feeds = {name: tile_batch(a, batch_size) for name, a in self.examples.items()}
        for _ in range(warmup):
            self.session.run(None, self.feeds)

    def run(self, n: int) -> list[float]:
        run, feeds, clock = self.session.run, self.feeds, time.perf_counter
        samples = []
        for _ in range(n):
            start = clock()
            run(None, feeds)
            samples.append(clock() - start)
        return samples

    def close(self) -> None:
        self.session = None


# A parent measures each runner in a worker process of its own, so no two runtimes' thread pools ever
# share a process, and interleaves them round by round. One JSON object per line each way.
def serve(make_runner: Callable[[dict], Any]) -> None:
    """Answer a parent's requests on stdin/stdout until it says `exit`; errors go back as messages."""
    # The protocol owns the real stdout; anything a library prints goes to stderr instead.
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    runner = None
    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        try:
            if op == "exit":
                break
            if op == "load":
                runner = make_runner(request)
                reply: dict[str, Any] = {"ok": True, "pid": os.getpid()}
            elif op == "prepare":
                runner.prepare(int(request["batch_size"]), int(request["warmup"]))
                reply = {"ok": True, "rss_before_bytes": rss_bytes(), "peak_reset": reset_peak_rss()}
            elif op == "run":
                reply = {"ok": True, "samples": runner.run(int(request["n"]))}
            elif op == "memory":
                reply = {"ok": True, "peak_rss_bytes": peak_rss_bytes()}
            else:
                reply = {"ok": False, "error": f"unknown request {op!r}", "type": "ValueError"}
        except Exception as exc:  # every failure is reported to the parent, which names the context
            reply = {"ok": False, "error": str(exc), "type": type(exc).__name__}
        channel.write(json.dumps(reply) + "\n")
    channel.close()


class WorkerClient:
    """The parent's handle on one worker process; the same prepare/run calls as an in-process runner."""

    def __init__(self, command: Sequence[str], load: dict, env: Mapping[str, str] | None = None) -> None:
        self._log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            list(command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
            env=None if env is None else {**os.environ, **env},
        )
        self.rss_before_bytes: int | None = None
        self.peak_reset = False
        self.request({"op": "load", **load})

    def request(self, message: dict) -> dict:
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            self.process.wait(timeout=10)
            self._log.seek(0)
            tail = self._log.read()[-2000:]
            raise ProfileError(f"the worker process exited (code {self.process.returncode}):\n{tail}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise ProfileError(f"{reply.get('type', 'Error')}: {reply.get('error')}")
        return reply

    def prepare(self, batch_size: int, warmup: int) -> None:
        reply = self.request({"op": "prepare", "batch_size": batch_size, "warmup": warmup})
        self.rss_before_bytes, self.peak_reset = reply["rss_before_bytes"], reply["peak_reset"]

    def run(self, n: int) -> list[float]:
        return self.request({"op": "run", "n": n})["samples"]

    def peak_rss_bytes(self) -> int | None:
        return self.request({"op": "memory"})["peak_rss_bytes"]

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"op": "exit"}) + "\n")
                self.process.stdin.close()
                self.process.wait(timeout=30)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()
        self._log.close()


class InProcess:
    """Adapts a runner that lives in this process to the worker interface (prepare/run/peak memory)."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.rss_before_bytes: int | None = None
        self.peak_reset = False

    def prepare(self, batch_size: int, warmup: int) -> None:
        self.runner.prepare(batch_size, warmup)
        self.rss_before_bytes, self.peak_reset = rss_bytes(), reset_peak_rss()

    def run(self, n: int) -> list[float]:
        return self.runner.run(n)

    def peak_rss_bytes(self) -> int | None:
        return peak_rss_bytes()

    def close(self) -> None:
        self.runner.close()


def measure_interleaved(
    loaders: Mapping[tuple[str, str, int], Callable[[], Any]],
    batch_sizes: Sequence[int],
    warmup: int,
    repeats: int,
    rounds: int,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Load every (model, backend, threads) runner, time each at every batch size interleaved, then close them all.

    `loaders[key]()` returns the runner (a `WorkerClient`, or an `InProcess`). At each batch size every runner is
    warmed up, then `repeats` timed calls are split into `rounds` rounds and the runners take turns (A B A B ...),
    so slow drift on a shared machine falls on all of them alike instead of on whichever ran last. A failure
    names the model and the backend, and the batch size once they are loaded.
    """
    if warmup < 0 or repeats < 1 or rounds < 1:
        raise ValueError(f"need warmup >= 0, repeats >= 1 and rounds >= 1; got {warmup}, {repeats}, {rounds}")
    rounds = min(rounds, repeats)
    per_round = [repeats // rounds + (1 if r < repeats % rounds else 0) for r in range(rounds)]
    runners: dict[tuple[str, str, int], Any] = {}
    measurements: list[dict[str, Any]] = []
    try:
        for key, load in loaders.items():
            try:
                runners[key] = load()
            except Exception as exc:
                raise ProfileError(f"model {key[0]!r} on backend {key[1]!r}: could not load: {exc}") from exc
        for batch_size in batch_sizes:
            samples: dict[tuple[str, str, int], list[float]] = {key: [] for key in runners}
            try:
                for key, runner in runners.items():
                    if progress:
                        progress(f"warm-up {key[0]} / {key[1]} at batch {batch_size}")
                    runner.prepare(batch_size, warmup)
                for r, n in enumerate(per_round):
                    for key, runner in runners.items():
                        if progress:
                            progress(f"batch {batch_size}: round {r + 1}/{rounds}, {key[0]} / {key[1]}")
                        samples[key].extend(runner.run(n))
            except Exception as exc:
                where = f"model {key[0]!r} failed on backend {key[1]!r} at batch size {batch_size}"
                raise ProfileError(f"{where}: {exc}") from exc
            measurements += [
                {
                    "model": model,
                    "backend": backend,
                    "batch_size": int(batch_size),
                    "threads": int(threads),
                    **summarize_latency(samples[(model, backend, threads)], batch_size),
                    "peak_rss_bytes": runner.peak_rss_bytes(),
                    "rss_before_bytes": runner.rss_before_bytes,
                    # Peak is per runner only where the runner had a process (or a peak reset) of its own.
                    "peak_rss_exclusive": isinstance(runner, WorkerClient) and runner.peak_reset,
                }
                for (model, backend, threads), runner in runners.items()
            ]
        return measurements
    finally:
        for runner in runners.values():
            runner.close()


# atomic_path and write_json_atomic are copies of ondevice.io's: this file ships in bundles without the package.
# tests/test_io.py checks that the copies agree.
os.umask(_UMASK := os.umask(0o022))  # the process's umask, read once: reading it sets it for a moment


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed onto `path` on success, removed on failure.

    The temporary name keeps the suffix, so writers that pick a format by extension (savefig) still work.
    A reader never sees half a file, and a failed write leaves nothing behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp's file is private (0600): keep the replaced file's mode, or give the one open() would.
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_json_atomic(path: str | os.PathLike, payload: Any) -> Path:
    """Write JSON (indent 1, trailing newline) through `atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1) + "\n")
    return Path(path)


def profile_bundle(
    bundle_dir: str | os.PathLike,
    threads: Sequence[int] = (1,),
    warmup: int | None = None,
    repeats: int | None = None,
    rounds: int | None = None,
    graph_optimization_level: str = "all",
    isolate: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure every model in a bundle on this machine; returns the results document (not yet written)."""
    bundle = Path(bundle_dir)
    manifest = read_manifest(bundle)
    settings = manifest.get("settings", {})
    warmup = settings.get("warmup", 10) if warmup is None else warmup
    repeats = settings.get("repeats", 50) if repeats is None else repeats
    rounds = settings.get("rounds", 10) if rounds is None else rounds
    measurements: list[dict[str, Any]] = []
    batch_groups: dict[tuple[int, ...], list[dict]] = {}
    for entry in manifest["models"]:
        batch_groups.setdefault(tuple(entry["batch_sizes"]), []).append(entry)
    for batch_sizes, entries in batch_groups.items():
        loaders = {}
        for n_threads in threads:
            for entry in entries:
                load = {
                    "onnx": str(bundle / entry["file"]),
                    "inputs": {s["name"]: str(bundle / s["file"]) for s in entry["inputs"]},
                    "threads": int(n_threads),
                    "graph_optimization_level": graph_optimization_level,
                }
                loaders[entry["name"], entry["backend"], int(n_threads)] = functools.partial(ort_runner, load, isolate)
        measurements += measure_interleaved(loaders, batch_sizes, warmup, repeats, rounds, progress)
    return {
        "format": RESULTS_FORMAT,
        "version": FORMAT_VERSION,
        "bundle_id": manifest["bundle_id"],
        "manifest_sha256": manifest["sha256"],
        "models": {e["name"]: {"params": e.get("params"), "macs": e.get("macs")} for e in manifest["models"]},
        "files": {f"{e['name']}/{e['backend']}": e["sha256"] for e in manifest["models"]},
        "environment": environment(),
        "settings": {
            "warmup": warmup,
            "repeats": repeats,
            "rounds": rounds,
            "threads": list(threads),
            "graph_optimization_level": graph_optimization_level,
            "isolate": isolate,
            "interop_threads": 1,
            "execution_mode": "sequential",
        },
        "measurements": measurements,
    }


def _ort_runner(load: Mapping[str, Any]) -> OrtRunner:
    inputs = {name: np.load(path, allow_pickle=False) for name, path in load["inputs"].items()}
    return OrtRunner(load["onnx"], inputs, load["threads"], load.get("graph_optimization_level", "all"))


def ort_runner(load: Mapping[str, Any], isolate: bool = True) -> WorkerClient | InProcess:
    """An ONNX Runtime runner for `load` ({"onnx": path, "inputs": {name: .npy path}, "threads", optionally
    "graph_optimization_level"}): in a worker process of its own running this file, or in this process."""
    if isolate:
        return WorkerClient([sys.executable, os.path.abspath(__file__), "--worker"], load)
    return InProcess(_ort_runner(load))


def _stderr_progress(message: str) -> None:
    # A terminal gets one line rewritten in place; a log file gets only the warm-up lines.
    if sys.stderr.isatty():
        print(f"\r{message[:100]:<100}", end="", file=sys.stderr, flush=True)
    elif message.startswith("warm-up"):
        print(message, file=sys.stderr, flush=True)


def _int_at_least_option(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    """The device command. A malformed bundle is one line on stderr (`error: FILE: field 'F' must be ...`) and
    exit code 2, as is a bad option; a model that fails to run is exit code 2 with its worker's last output."""
    parser = argparse.ArgumentParser(
        prog="python -m ondevice.device",
        description="Profile every ONNX model of a bundle on this device (needs only numpy and onnxruntime).",
    )
    parser.add_argument("bundle", help="the bundle folder written by `ondevice bundle`")
    parser.add_argument("--threads", default="1", help="intra-op threads, or a list: 1,2,4 (default 1)")
    at_least = _int_at_least_option
    parser.add_argument("--warmup", type=at_least(0), help="untimed calls per model and batch size (default: manifest)")
    parser.add_argument("--repeats", type=at_least(1), help="timed calls per model and batch size (default: manifest)")
    parser.add_argument("--rounds", type=at_least(1), help="interleaving rounds (default: manifest)")
    parser.add_argument("--graph-optimization", default="all", choices=sorted(GRAPH_OPTIMIZATION_LEVELS))
    parser.add_argument("--in-process", action="store_true", help="no worker processes (for one-process sandboxes)")
    parser.add_argument("--out", help="results JSON (default: BUNDLE/results-HOST-<threads>t.json)")
    args = parser.parse_args(argv)
    try:
        threads = [int(t) for t in str(args.threads).split(",") if t.strip()]
    except ValueError:
        threads = []
    if not threads or min(threads) < 1:
        parser.error(f"--threads must be integers >= 1 separated by commas, got {args.threads!r}")
    try:
        results = profile_bundle(
            args.bundle,
            threads=threads,
            warmup=args.warmup,
            repeats=args.repeats,
            rounds=args.rounds,
            graph_optimization_level=args.graph_optimization,
            isolate=not args.in_process,
            progress=_stderr_progress,
        )
    except BundleError as exc:  # raised before any measuring starts: one line
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except ProfileError as exc:  # the worker's last output follows the message
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2
    print(file=sys.stderr)
    tag = "-".join(str(t) for t in threads)
    out = Path(args.out) if args.out else Path(args.bundle) / f"results-{socket.gethostname()}-{tag}t.json"
    write_json_atomic(out, results)
    for m in results["measurements"]:
        print(
            f"{m['model']:<24} {m['backend']:<17} threads {m['threads']:<3} batch {m['batch_size']:<5} "
            f"median {m['median_ms']:9.3f} ms  p10 {m['p10_ms']:9.3f}  p90 {m['p90_ms']:9.3f}  "
            f"{m['samples_per_s']:12.1f} samples/s"
        )
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:  # a worker process of `ort_runner`, answering on stdin/stdout
        serve(_ort_runner)
    else:
        sys.exit(main())
