"""ClST training-step throughput on this CPU: the settings before and after, as ratios measured side by side.

    python benchmarks/train_speed.py [--threads 2] [--batch-size 256] [--rounds 5] [--steps 8] [--out DIR]

A training step is what ``rfml.trainers.Classifier`` does per batch: forward, cross-entropy, backward, optimizer
step, on a [B, 2, 128] batch of 11 classes. Each variant is built and warmed up (for ``torch.compile``, the
compilation is done before timing and reported separately), then the variants are timed in interleaved rounds, so
a busy machine slows all of them alike; the figure is each variant's median frames per second over the rounds, and
the ratio is taken against ``before`` (ClST with the settings of the tree before issue 18, eager, Adam). The
variants also give KD-MobileNet for scale. Writes ``train_speed.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

# Today's ClST without its stem (the default since issue 18): what the speed work alone changed.
NO_STEM: dict[str, Any] = {"stem": 0}
# ClST as shipped before issue 18 (the constructor's defaults then, PSCA's forward then), trained eagerly with the
# unfused optimizer.
BEFORE: dict[str, Any] = {
    "dims": (32, 64, 96),
    "depths": (1, 2, 2),
    "heads": (1, 2, 4),
    "embed_kernels": (7, 3, 3),
    "mlp_ratio": 4.0,
    "dropout": 0.1,
    **NO_STEM,
}


def psca_before(self: Any, x: Any) -> Any:
    """PSCA's forward as it was before issue 18: the shared MLP called once per pooled column, two products."""
    import torch

    channel = torch.sigmoid(self.channel_mlp(x.mean(-1, keepdim=True)) + self.channel_mlp(x.amax(-1, keepdim=True)))
    temporal = torch.sigmoid(self.temporal_conv(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)))
    return x * channel + x * temporal


def variants() -> dict[str, dict[str, Any]]:
    """name → (model, model kwargs, compile, fused optimizer)."""
    return {
        "before": {"model": "clst", "kwargs": BEFORE, "compile": False, "fused": False, "psca_before": True},
        "clst eager": {"model": "clst", "kwargs": {}, "compile": False, "fused": True},
        "clst compile": {"model": "clst", "kwargs": {}, "compile": True, "fused": True},
        "clst stem0 eager": {"model": "clst", "kwargs": NO_STEM, "compile": False, "fused": True},
        "clst stem0 compile": {"model": "clst", "kwargs": NO_STEM, "compile": True, "fused": True},
        "kd_mobilenet eager": {"model": "kd_mobilenet", "kwargs": {}, "compile": False, "fused": True},
    }


def build(spec: dict[str, Any], batch_size: int) -> tuple[Any, float]:
    """A closure running one training step, and the seconds its warm-up (and compilation) took."""
    import torch
    import torch.nn.functional as F

    from rfml.models import create

    torch.manual_seed(0)
    net = create(spec["model"], 11, 128, **spec["kwargs"]).train()
    if spec.get("psca_before"):
        from rfml.models.clst import PSCA

        for module in net.modules():
            if isinstance(module, PSCA):
                module.forward = psca_before.__get__(module)
    if spec["compile"]:
        net.compile()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, fused=spec["fused"] or None)
    x = torch.randn(batch_size, 2, 128)
    y = torch.randint(0, 11, (batch_size,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        optimizer.step()

    start = time.perf_counter()
    for _ in range(3):
        step()
    return step, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant per round")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)

    import torch

    from ondevice.device.runner import environment
    from ondevice.io import write_json_atomic
    from ondevice.profile import count_macs
    from rfml.models import create

    torch.set_num_threads(args.threads)
    specs = variants()
    steps, warmup = {}, {}
    for name, spec in specs.items():
        steps[name], warmup[name] = build(spec, args.batch_size)
        print(f"{name:<20} warm-up {warmup[name]:6.1f} s", flush=True)
    rates: dict[str, list[float]] = {name: [] for name in specs}
    for _ in range(args.rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            rates[name].append(args.steps * args.batch_size / (time.perf_counter() - start))
    before = statistics.median(rates["before"])
    rows = []
    for name, spec in specs.items():
        net = create(spec["model"], 11, 128, **spec["kwargs"]).eval()
        median = statistics.median(rates[name])
        rows.append(
            {
                "variant": name,
                **{k: spec[k] for k in ("model", "compile", "fused")},
                "model_kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in spec["kwargs"].items()},
                "params": sum(p.numel() for p in net.parameters()),
                "macs": count_macs(net, torch.randn(1, 2, 128)),
                "frames_per_s": median,
                "frames_per_s_rounds": rates[name],
                "ratio_to_before": median / before,
                "warmup_s": warmup[name],
            }
        )
        print(f"{name:<20} {median:8.0f} frames/s  ×{median / before:.2f}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "train_speed.json", {"settings": vars(args), "environment": environment(), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
