"""AMR evaluation: a confusion matrix per SNR as one torchmetrics Metric, and the report folder made from it.

Every AMR figure (overall accuracy, accuracy per SNR, accuracy at SNR ≥ 10 dB, the confusion matrices) is a sum
over one count tensor ``counts[snr, true, predicted]``, so one metric state gives all of them exactly, and
torchmetrics sums it across processes under DDP.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from ondevice.io import save_figure, write_json_atomic

SNR_MIN_DB = -64
SNR_MAX_DB = 63
HIGH_SNR_DB = 10  # the default threshold of the "high SNR" figures: accuracy and confusion at SNR >= this


class SNRConfusion(Metric):
    """Counts of (SNR, true class, predicted class) for integer SNRs in [-64, 63] dB.

    ``update(preds, target, snr)`` takes logits ``[B, C]`` or predicted classes ``[B]``; ``compute()`` returns the
    count tensor ``[128, C, C]`` (row ``snr + 64``). :func:`summarize_confusion` turns it into the AMR figures.
    """

    full_state_update = False
    counts: Tensor

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        bins = SNR_MAX_DB - SNR_MIN_DB + 1
        self.add_state("counts", torch.zeros(bins, num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, snr: Tensor) -> None:
        if preds.ndim == 2:
            preds = preds.argmax(-1)
        snr = snr.reshape(-1).long()
        if snr.numel() and (int(snr.min()) < SNR_MIN_DB or int(snr.max()) > SNR_MAX_DB):
            raise ValueError(
                f"SNRConfusion: SNR labels must be integers in [{SNR_MIN_DB}, {SNR_MAX_DB}] dB, "
                f"got {int(snr.min())}..{int(snr.max())}"
            )
        classes = self.num_classes
        flat = ((snr - SNR_MIN_DB) * classes + target.reshape(-1).long()) * classes + preds.reshape(-1).long()
        self.counts += torch.bincount(flat, minlength=self.counts.numel()).view_as(self.counts)

    def compute(self) -> Tensor:
        return self.counts


def summarize_confusion(
    counts: Tensor, classes: Sequence[str] | None = None, high_snr_db: int = HIGH_SNR_DB
) -> dict[str, Any]:
    """The AMR figures from ``counts[snr_bin, true, predicted]``: accuracy overall, per SNR, at SNR ≥ high_snr_db.

    The high-SNR figures are keyed by their threshold (``accuracy_snr_ge_10db``, ``confusion_snr_ge_10db`` for
    10 dB), and ``high_snr_db`` records it, so :func:`write_amr_report` finds them for any threshold.
    """
    counts = counts.detach().cpu().long()
    num_classes = counts.shape[-1]
    names = list(classes) if classes is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"summarize_confusion: {len(names)} class names for a {num_classes}-class confusion matrix")
    per_snr_total = counts.sum((1, 2))
    present = torch.nonzero(per_snr_total).flatten()
    snrs = (present + SNR_MIN_DB).tolist()
    correct = counts.diagonal(dim1=1, dim2=2).sum(-1)
    total = int(per_snr_total.sum())
    high = present[present + SNR_MIN_DB >= high_snr_db]
    confusion = counts.sum(0)
    confusion_high = counts[high].sum(0)

    def ratio(num: Tensor, den: Tensor) -> float | None:
        return float(num) / float(den) if int(den) else None

    return {
        "examples": total,
        "classes": names,
        "high_snr_db": high_snr_db,
        "accuracy": ratio(correct.sum(), per_snr_total.sum()),
        f"accuracy_snr_ge_{high_snr_db}db": ratio(correct[high].sum(), per_snr_total[high].sum()),
        "snrs_db": snrs,
        "accuracy_by_snr": [ratio(correct[i], per_snr_total[i]) for i in present],
        "examples_by_snr": per_snr_total[present].tolist(),
        "accuracy_by_class": [ratio(confusion[c, c], confusion[c].sum()) for c in range(num_classes)],
        "confusion": confusion.tolist(),
        f"confusion_snr_ge_{high_snr_db}db": confusion_high.tolist(),
    }


def plot_accuracy_vs_snr(summaries: dict[str, dict[str, Any]], path: str | Path, title: str = "") -> None:
    """Accuracy against SNR, one line per named summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, summary in summaries.items():
        acc = [np.nan if a is None else 100 * a for a in summary["accuracy_by_snr"]]
        ax.plot(summary["snrs_db"], acc, marker="o", ms=3, lw=1.2, label=f"{name} ({100 * summary['accuracy']:.1f} %)")
    ax.set_xlabel("SNR (dB)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="model (overall)", title_fontsize=8)
    ax.set_title(title or "accuracy vs SNR", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def plot_confusion(confusion: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path, title: str) -> None:
    """A row-normalised confusion matrix (true class per row), percentages written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(confusion, dtype=np.float64)
    rows = counts.sum(1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    size = max(4.0, 0.42 * len(classes) + 1.5)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(100 * share, cmap="Blues", vmin=0, vmax=100)
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    if len(classes) <= 24:
        for (i, j), value in np.ndenumerate(share):
            if value >= 0.005:
                color = "white" if value > 0.6 else "black"
                ax.text(j, i, f"{100 * value:.0f}", ha="center", va="center", fontsize=5.5, color=color)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, label="% of true class")
    fig.tight_layout()
    save_figure(fig, path)


def write_amr_report(summary: dict[str, Any], out_dir: str | Path, name: str = "model") -> dict[str, Path]:
    """Write a :func:`summarize_confusion` summary as ``metrics.json``, ``accuracy_vs_snr.png``, ``confusion.png`` and
    ``confusion_snr_ge_<T>db.png`` (``T``: the summary's ``high_snr_db``, 10 by default)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    threshold = summary["high_snr_db"]
    paths = {
        "metrics": out / "metrics.json",
        "accuracy_vs_snr": out / "accuracy_vs_snr.png",
        "confusion": out / "confusion.png",
        "confusion_high_snr": out / f"confusion_snr_ge_{threshold}db.png",
    }
    write_json_atomic(paths["metrics"], {"model": name, **summary})
    plot_accuracy_vs_snr({name: summary}, paths["accuracy_vs_snr"], title=f"{name}: accuracy vs SNR")
    overall = summary["accuracy"]
    plot_confusion(
        summary["confusion"], summary["classes"], paths["confusion"], f"{name}, all SNRs ({100 * overall:.1f} %)"
    )
    high = summary[f"accuracy_snr_ge_{threshold}db"]
    high_text = "no examples" if high is None else f"{100 * high:.1f} %"
    plot_confusion(
        summary[f"confusion_snr_ge_{threshold}db"],
        summary["classes"],
        paths["confusion_high_snr"],
        f"{name}, SNR ≥ {threshold} dB ({high_text})",
    )
    return paths
