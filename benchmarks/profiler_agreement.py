"""Does `ondevice.profile` measure what the reference tools measure? One run, a small CNN, one thread.

    python benchmarks/profiler_agreement.py [--threads 1] [--reps 3] [--json out.json]

For batch sizes 1 and 256 and `--reps` alternating repetitions:
(1) our torch median (`profile(..., backends=("torch",))`, in this process) against the median of
    `torch.utils.benchmark.Timer(...).blocked_autorange()` at the same thread count;
(2) our ONNX Runtime median (a worker process of its own) against a plain loop here over
    `InferenceSession.run` with the same session options, timed per call;
(3) ratios from our report: ONNX Runtime / torch, and dynamic int8 / fp32 ONNX Runtime;
(4) what int8 costs in accuracy: the relative L2 error of the int8 model's logits against torch's on
    256 random inputs, with 7-bit weights (`reduce_range=True`, our default) and with full 8-bit ones.
Each agreement figure is the median over repetitions of ours / reference; 5 % is the bar.
The model is `ondevice.examples.small_cnn()` (1-D CNN over [B, 2, 1024], 34,827 parameters).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch.utils import benchmark

from ondevice.examples import small_cnn
from ondevice.export import export_onnx, quantize_dynamic_int8
from ondevice.profile import profile


def timer_median_ms(model, x: torch.Tensor, threads: int, min_run_time: float) -> float:
    timer = benchmark.Timer(stmt="model(x)", globals={"model": model, "x": x}, num_threads=threads)
    with torch.inference_mode():  # the same grad mode our torch runner uses
        return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def plain_ort_median_ms(path: Path, x: np.ndarray, threads: int, warmup: int, calls: int) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {"x": x}
    for _ in range(warmup):
        session.run(None, feeds)
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        session.run(None, feeds)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


def int8_relative_error(model, onnx_path: Path, reduce_range: bool) -> float:
    q = quantize_dynamic_int8(
        onnx_path, onnx_path.with_suffix(f".rr{int(reduce_range)}.onnx"), reduce_range=reduce_range
    )
    x = torch.randn(256, 2, 1024, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = model(x).numpy()
    got = ort.InferenceSession(str(q), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    return float(np.linalg.norm(got - expected) / np.linalg.norm(expected))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    model, (example,) = small_cnn()
    settings = {
        1: {"repeats": 300, "warmup": 30, "min_run_time": 1.0},
        256: {"repeats": 20, "warmup": 3, "min_run_time": 4.0},
    }
    rows = []
    with tempfile.TemporaryDirectory() as work:
        onnx_path = export_onnx(model, example, Path(work) / "small_cnn.onnx")
        int8_error = {rr: int8_relative_error(model, onnx_path, rr) for rr in (True, False)}
        for batch, s in settings.items():
            x = example.repeat(batch, 1, 1)
            for rep in range(args.reps):
                report = profile(
                    model,
                    example,
                    backends=("torch", "onnxruntime", "onnxruntime-int8"),
                    threads=args.threads,
                    warmup=s["warmup"],
                    repeats=s["repeats"],
                    batch_sizes=(batch,),
                    progress=False,
                )
                torch.set_num_threads(args.threads)
                ref_timer = timer_median_ms(model, x, args.threads, s["min_run_time"])
                ref_ort = plain_ort_median_ms(onnx_path, x.numpy(), args.threads, s["warmup"], s["repeats"])
                row = {
                    "batch": batch,
                    "rep": rep,
                    "torch_ms": report.get("torch", batch).median_ms,
                    "timer_ms": ref_timer,
                    "ort_ms": report.get("onnxruntime", batch).median_ms,
                    "plain_ort_ms": ref_ort,
                    "int8_ms": report.get("onnxruntime-int8", batch).median_ms,
                }
                rows.append(row)
                print(
                    f"batch {batch:>3} rep {rep}: torch {row['torch_ms']:.4f} vs Timer {ref_timer:.4f} ms | "
                    f"ORT {row['ort_ms']:.4f} vs plain loop {ref_ort:.4f} ms | int8 {row['int8_ms']:.4f} ms",
                    flush=True,
                )
    env = report.environment
    print(f"\n{env['cpu_model']}, {env['usable_cores']} cores, torch {env['torch']}, onnxruntime {env['onnxruntime']}")
    print(f"threads {args.threads}, {args.reps} repetitions; figure = median over repetitions\n")
    print("| batch | ours/Timer (torch) | ours/plain loop (ORT) | ORT/torch | int8/fp32 (ORT) ", end="")
    print("| torch ms | ORT ms | int8 ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    summary = {}
    for batch in settings:
        rs = [r for r in rows if r["batch"] == batch]

        def med(key, rs=rs):
            return statistics.median(r[key] for r in rs)

        def ratio(a, b, rs=rs):
            return statistics.median(r[a] / r[b] for r in rs)

        summary[batch] = {
            "torch_vs_timer": ratio("torch_ms", "timer_ms"),
            "ort_vs_plain_loop": ratio("ort_ms", "plain_ort_ms"),
            "ort_over_torch": ratio("ort_ms", "torch_ms"),
            "int8_over_fp32": ratio("int8_ms", "ort_ms"),
        }
        f = summary[batch]
        print(
            f"| {batch} | {f['torch_vs_timer']:.3f} | {f['ort_vs_plain_loop']:.3f} | {f['ort_over_torch']:.3f} | "
            f"{f['int8_over_fp32']:.3f} | {med('torch_ms'):.4g} | {med('ort_ms'):.4g} | {med('int8_ms'):.4g} |"
        )
    print(
        f"\nint8 logits vs torch, relative L2 error: {int8_error[True]:.4f} with 7-bit weights (reduce_range), "
        f"{int8_error[False]:.4f} with 8-bit weights"
    )
    within = all(abs(f[k] - 1) <= 0.05 for f in summary.values() for k in ("torch_vs_timer", "ort_vs_plain_loop"))
    print(f"\nagreement within 5 %: {'yes' if within else 'NO'}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"rows": rows, "summary": summary, "int8_relative_error": int8_error, "environment": env}, indent=1
            )
        )


if __name__ == "__main__":
    main()
