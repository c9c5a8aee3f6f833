"""A tour of the synthetic data: generate a RadioML-2016.10a-style dataset, summarise it, plot it, and
write it in the real file layout.

    python -m rfml.examples.dataset_tour --out tour_out [--class-set rml2016.10a] [--per-key 100] [--channel rml2016]

Writes ``overview.png`` (one example per class in time, IQ plane and spectrum), ``snr.png``
(requested vs measured SNR), ``summary.json`` and the dataset file in its published layout (for the
RadioML class sets at their published length) into ``--out``, then reads the file back through the
loader and a ``SignalDataModule``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ondevice.io import save_figure
from rfml.data import PRESETS as DATASET_PRESETS
from rfml.data import open_dataset, source_indices, write_dataset
from rfml.dsp import CLASS_SETS, Synthesizer
from rfml.dsp.channel import PRESETS


def summarise(synth: Synthesizer, per_key: int, batch_size: int) -> dict:
    """Generate ``per_key`` examples per (class, SNR) in batches; gather per-key statistics."""
    num_classes, num_snrs = len(synth.classes), len(synth.snrs)
    total = num_classes * num_snrs * per_key
    measured = torch.zeros(num_classes, num_snrs, dtype=torch.float64)
    papr = torch.zeros(num_classes, dtype=torch.float64)
    start = time.perf_counter()
    with tqdm(total=total, unit="ex", desc="generating", unit_scale=True) as bar:
        for first in range(0, total, batch_size):
            indices = torch.arange(first, min(first + batch_size, total))
            batch = synth.generate(indices, return_clean=True)
            clean, noise = batch["clean"], batch["x"] - batch["clean"]
            snr = 10 * torch.log10(clean.pow(2).sum((1, 2)) / noise.pow(2).sum((1, 2))).double()
            measured.index_put_((batch["y"], synth.snr_index(indices)), snr, accumulate=True)
            power = clean.pow(2).sum(1)
            papr.index_add_(0, batch["y"], (10 * torch.log10(power.max(1).values / power.mean(1))).double())
            bar.update(len(batch["y"]))
    seconds = time.perf_counter() - start
    measured /= per_key
    papr /= num_snrs * per_key
    return {
        "examples": total,
        "seconds": seconds,
        "examples_per_s": total / seconds,
        "classes": synth.classes,
        "snrs_db": synth.snrs,
        "measured_snr_db": measured.tolist(),
        "mean_papr_db": papr.tolist(),
        "worst_snr_error_db": float((measured - torch.tensor(synth.snrs)).abs().max()),
    }


def plot_overview(synth: Synthesizer, path: Path, snr_db: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num_classes = len(synth.classes)
    batch = synth.generate(range(num_classes), snr_db=snr_db)
    many = synth.generate(range(num_classes * 64), snr_db=snr_db)
    fig, axes = plt.subplots(3, num_classes, figsize=(2.1 * num_classes, 6.3), squeeze=False)
    for c, name in enumerate(synth.classes):
        x = batch["x"][c].numpy()
        axes[0, c].plot(x[0], lw=0.8, label="I")
        axes[0, c].plot(x[1], lw=0.8, label="Q")
        axes[0, c].set_title(name, fontsize=9)
        axes[1, c].plot(x[0], x[1], ".", ms=1.5)
        axes[1, c].set_aspect("equal")
        rows = many["x"][many["y"] == c]
        iq = rows[:, 0] + 1j * rows[:, 1]
        psd = (np.abs(np.fft.fftshift(np.fft.fft(iq.numpy(), axis=1), axes=1)) ** 2).mean(0)
        freqs = np.fft.fftshift(np.fft.fftfreq(iq.shape[1]))
        axes[2, c].plot(freqs, 10 * np.log10(psd / psd.max() + 1e-12), lw=0.8)
        axes[2, c].set_ylim(-60, 3)
        for ax in axes[:, c]:
            ax.tick_params(labelsize=6)
    axes[0, 0].set_ylabel("time (I, Q)", fontsize=8)
    axes[1, 0].set_ylabel("IQ plane", fontsize=8)
    axes[2, 0].set_ylabel("PSD dB (64 ex.)", fontsize=8)
    axes[2, 0].set_xlabel("cycles/sample", fontsize=7)
    fig.suptitle(f"{synth!r}, channel at {snr_db:g} dB", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def plot_snr(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    snrs = np.array(summary["snrs_db"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, row in zip(summary["classes"], summary["measured_snr_db"], strict=True):
        ax.plot(snrs, np.array(row) - snrs, marker=".", lw=0.8, label=name)
    ax.axhspan(-0.2, 0.2, color="0.9", label="±0.2 dB")
    ax.set_xlabel("requested SNR (dB)")
    ax.set_ylabel("measured − requested (dB)")
    ax.set_title("SNR of every (class, SNR) key: 10·log10(P_clean / P_noise)")
    ax.legend(fontsize=6, ncol=3)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def file_round_trip(synth: Synthesizer, preset: str, out: Path, per_key: int, channel: str) -> dict:
    """Write the set in ``preset``'s real layout, read it back, compare with the synthesizer, split it."""
    from rfml.data import SignalDataModule

    path = write_dataset(preset, out, per_key=per_key, seed=synth.seed, channel=channel)
    data = open_dataset(path)
    rows = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:512]
    expected = synth.generate(source_indices(rows, len(synth.classes), len(synth.snrs), per_key))
    got = data.get_batch(rows)
    module = SignalDataModule(path, split="6:2:2", snrs="0:18", batch_size=256)
    module.setup()
    batch = next(iter(module.train_dataloader()))
    return {
        "file": path,
        "file_mb": os.path.getsize(path) / 1e6,
        "frames": len(data),
        "round_trip_equal": all(torch.equal(got[key], expected[key]) for key in ("x", "y", "snr")),
        "split_0_to_18_db": {name: int(rows.numel()) for name, rows in module.rows.items()},
        "batch_x_shape": list(batch["x"].shape),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("tour_out"))
    parser.add_argument("--class-set", choices=sorted(CLASS_SETS), default="rml2016.10a")
    parser.add_argument("--channel", choices=sorted(PRESETS), default="rml2016")
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--per-key", type=int, default=100, help="examples per (class, SNR)")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    synth = Synthesizer(args.class_set, args.length, channel=args.channel, seed=args.seed)
    summary = summarise(synth, args.per_key, args.batch_size)
    args.out.mkdir(parents=True, exist_ok=True)
    plot_overview(synth, args.out / "overview.png", snr_db=18)
    plot_snr(summary, args.out / "snr.png")
    preset = DATASET_PRESETS.get(args.class_set)
    if preset is not None and preset.length == args.length and preset.snrs == tuple(synth.snrs):
        summary["file"] = file_round_trip(synth, preset.name, args.out, args.per_key, args.channel)
    tmp = args.out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(args.out / "summary.json")

    print(f"\n{synth!r}, channel {args.channel!r}")
    print(f"{summary['examples']} examples in {summary['seconds']:.2f} s ({summary['examples_per_s']:.0f} /s)")
    print(f"{'class':>10} {'PAPR dB':>8} {'SNR err @-10/0/10 dB':>22}")
    snrs = synth.snrs
    for c, name in enumerate(synth.classes):
        errors = [summary["measured_snr_db"][c][snrs.index(s)] - s for s in (-10, 0, 10) if s in snrs]
        print(f"{name:>10} {summary['mean_papr_db'][c]:8.2f} {' '.join(f'{e:+6.3f}' for e in errors):>22}")
    print(f"worst |measured - requested| SNR over all keys: {summary['worst_snr_error_db']:.3f} dB")
    print(f"plots: {args.out / 'overview.png'}, {args.out / 'snr.png'}")
    if "file" in summary:
        written = summary["file"]
        print(
            f"file: {written['file']} ({written['frames']} frames, {written['file_mb']:.1f} MB), read back by "
            f"the RadioML loader: equal to the synthesizer: {written['round_trip_equal']}"
        )
        print(
            f"SignalDataModule 6:2:2 over 0..18 dB: {written['split_0_to_18_db']}, batch x {written['batch_x_shape']}"
        )
    return summary


if __name__ == "__main__":
    main()
