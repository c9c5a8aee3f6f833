"""``OUT/report.md`` and figures of an SNR study, next to the paper's numbers (Wang et al., IEEE WCL 2020)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ondevice.io import atomic_path
from rfml.studies.machine import machine_line

# Wang, Ju, Zhang, Ramjee, El Gamal, IEEE WCL 2020 (arXiv 1912.11896). RadioML 2016.10b, ResNet unless stated.
PAPER = {
    "radioml": {
        "single": "ResNet 49.7 s vs 1320 s per model (26.6×), CLDNN 88.5 s vs 3120 s (35×); mean accuracy "
        "60.5 % (single) vs 63.0 % (all); −10 dB ≈ 38 % vs 28 %, high SNR ≈ 80 % vs 91 %",
        "boost": {-4: (0.80, 0.69), -8: (0.51, 0.38)},
        "offset": "−4 dB is catastrophic at mid SNR (2 dB test: 84 % at 0 dB offset vs 25 % at −4); too high hurts "
        "less than too low",
        "bag": "helps only with scarce data",
    },
    "ism": {
        "single": "≈ 8× faster per model; CNN mean accuracy 90.2 % (single) vs 89.7 % (all)",
        "boost": {},
        "offset": "at most ≈ 5 points lost, only below −8 dB",
        "bag": "−10 dB with 2 % of the data: 84.7 % (bag) vs 81.7 % (single)",
    },
}


def task_of(dataset: str) -> str:
    return "ism" if "ism" in dataset.lower() or "data_iq" in dataset else "radioml"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _read(out: Path, name: str) -> dict[str, Any] | None:
    path = out / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def write_snr_report(out: str | Path) -> Path:
    """Write ``report.md`` (and the PNGs) from the experiment summaries present in ``out``."""
    out = Path(out)
    study = json.loads((out / "study.json").read_text())
    config = study["config"]
    task = task_of(config["data"]["dataset"])
    paper = PAPER[task]
    lines = [
        "# SNR-selected training study",
        "",
        f"Data `{config['data']['dataset']}` (per_key {config['data']['per_key']}, split {config['data']['split']}, "
        f"view {config['data']['view']}); model `{config['train']['model']}` {config['train']['model_kwargs']}, "
        f"Adam lr {config['train']['lr']}, at most {config['train']['max_epochs']} epochs, early stopping on the "
        f"validation loss (patience {config['train']['patience']}). Times are training seconds without evaluation; "
        "epochs to best are the early-stopping callback's best epoch.",
        "",
    ]
    single = _read(out, "single")
    if single:
        all_t, first = single["all_timing"], single["rows"][0]["single_timing"]
        epoch_single = sum(r["single_timing"]["median_epoch_seconds"] for r in single["rows"]) / len(single["rows"])
        lines += [
            "## Single-SNR against all-SNR training",
            "",
            f"Machine: {machine_line(single['machine'])} per training.",
            "",
            "| | all-SNR model | single-SNR model (mean over SNRs) | ratio |",
            "|---|---|---|---|",
            f"| training examples | {all_t['train_examples']} | {first['train_examples']} | |",
            f"| s / epoch (median) | {all_t['median_epoch_seconds']:.2f} | "
            f"{epoch_single:.3f} | "
            f"{single['epoch_time_ratio']:.1f}× |",
            f"| training s (to early stop) | {all_t['train_seconds']:.1f} | "
            f"{single['single_train_seconds_mean']:.2f} | "
            f"**{single['speedup_per_model']:.1f}×** |",
            f"| training s to best epoch | {all_t['seconds_to_best']:.1f} | "
            f"{single['single_seconds_to_best_mean']:.2f} | "
            f"{single['speedup_to_best_per_model']:.1f}× |",
            f"| one model per SNR, total s | {all_t['train_seconds']:.1f} | {single['total_single_seconds']:.1f} | "
            f"{single['total_cost_ratio']:.2f}× the all-SNR cost |",
            f"| mean test accuracy over SNRs (%) | {_pct(single['mean_accuracy']['all'])} | "
            f"{_pct(single['mean_accuracy']['single'])} | |",
            "",
            f"Paper: {paper['single']}.",
            "",
            "| test SNR (dB) | " + " | ".join(str(r["snr"]) for r in single["rows"]) + " |",
            "|---|" + "---|" * len(single["rows"]),
            "| single-SNR (%) | " + " | ".join(_pct(r["single"]) for r in single["rows"]) + " |",
            "| all-SNR (%) | " + " | ".join(_pct(r["all"]) for r in single["rows"]) + " |",
            "| epochs to best (single) | "
            + " | ".join(str(r["single_timing"]["best_epoch"]) for r in single["rows"])
            + " |",
            "",
        ]
    offset = _read(out, "offset")
    if offset:
        ks = offset["offsets"]
        lines += [
            "## Training-SNR offset (train at true + k dB, test at the true SNR)",
            "",
            "| true SNR (dB) | " + " | ".join(f"k = {k:+d}" for k in ks) + " |",
            "|---|" + "---|" * len(ks),
        ]
        for t, row in offset["accuracy"].items():
            lines.append(f"| {t} | " + " | ".join(_pct(row[str(k)]) for k in ks) + " |")
        lines += ["", f"Paper: {paper['offset']}.", ""]
    boost = _read(out, "boost")
    if boost:
        window = f", candidates within ±{boost['window_db']} dB" if boost["window_db"] is not None else ""
        lines += [
            "## SNR Boosting",
            "",
            f"Hold-out {boost['holdout']:.0%} of the target's training data; stop at a gain ≤ "
            f"{100 * boost['min_gain']:g} point(s){window}.",
            "",
            "| target (dB) | chosen SNRs (in order) | Boosting (%) | all-SNR (%) | single-SNR (%) "
            "| paper Boosting / all (%) | trainings | compute s | compute / all-SNR training |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for row in boost["rows"]:
            ref = paper["boost"].get(row["target"])
            ref_text = f"{_pct(ref[0])} / {_pct(ref[1])}" if ref else "–"
            lines.append(
                f"| {row['target']} | {row['order']} | **{_pct(row['boost'])}** | {_pct(row['all'])} | "
                f"{_pct(row['single'])} | {ref_text} | {row['trainings']} | {row['compute_seconds']:.1f} | "
                f"{row['compute_seconds'] / boost['all_train_seconds']:.2f}× |"
            )
        lines.append("")
    bag = _read(out, "bag")
    if bag:
        lines += [
            f"## SNR Bagging ({bag['models']} models, target ± {bag['spread_db']} dB, majority vote)",
            "",
            "| target (dB) | share of one SNR's data | examples | Bagging (%) | members (%) "
            "| single-SNR, same size (%) |",
            "|---|---|---|---|---|---|",
        ]
        for row in bag["rows"]:
            members = ", ".join(_pct(m) for m in row["bag_members"])
            lines.append(
                f"| {row['target']} | {row['fraction']:.0%} | {row['size']} | **{_pct(row['bag'])}** | {members} | "
                f"{_pct(row['single'])} |"
            )
        lines += ["", f"Paper: {paper['bag']}.", ""]
    router = _read(out, "router")
    if router:
        grid = router["grid"]
        names = list(router["variants"])
        lines += [
            "## SNR-routed inference",
            "",
            "Each test frame's SNR is estimated, biased, rounded to the grid and sent to that SNR's model "
            "(`oracle`: the true SNR; `learned`: the snr_cnn regressor; `m2m4`: the moment estimator; `boost_*`: "
            "Boosting models at the targets they were built for, single-SNR models elsewhere).",
            "",
            "| routing | overall (%) |",
            "|---|---|",
        ]
        lines += [f"| {n} | {_pct(router['variants'][n]['overall'])} |" for n in names]
        lines += [
            "",
            "| estimator | " + " | ".join(f"{s} dB" for s in grid) + " |",
            "|---|" + "---|" * len(grid),
        ]
        for name, errors in router["estimator_errors"].items():
            lines.append(
                f"| {name}: MAE / bias (dB) | "
                + " | ".join(
                    f"{errors[str(s)]['mae']:.2f} / {errors[str(s)]['bias']:+.2f}" if str(s) in errors else "–"
                    for s in grid
                )
                + " |"
            )
        lines.append("")
    figures = plot(out, single, offset, boost, router)
    lines += [f"![{name}]({name})" for name in figures]
    path = out / "report.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path


def plot(
    out: Path,
    single: dict[str, Any] | None,
    offset: dict[str, Any] | None,
    boost: dict[str, Any] | None,
    router: dict[str, Any] | None,
) -> list[str]:
    """``accuracy_vs_snr.png`` (per method) and ``offset.png`` (per target); returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if single:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        snrs = [r["snr"] for r in single["rows"]]
        ax.plot(snrs, [100 * r["all"] for r in single["rows"]], "o-", label="all-SNR model")
        ax.plot(snrs, [100 * r["single"] for r in single["rows"]], "s-", label="single-SNR models")
        if boost:
            ax.plot(
                [r["target"] for r in boost["rows"]],
                [100 * r["boost"] for r in boost["rows"]],
                "D",
                ms=8,
                label="SNR Boosting",
            )
        if router:
            for name, style in (("oracle", ":"), ("learned+0dB", "--")):
                if name in router["variants"]:
                    per = router["variants"][name]["per_snr"]
                    ax.plot([int(s) for s in per], [100 * v for v in per.values()], style, label=f"router ({name})")
        ax.set(xlabel="test SNR (dB)", ylabel="accuracy (%)", title="Accuracy vs SNR by training method")
        ax.grid(alpha=0.3)
        ax.legend()
        written.append(_save(fig, out / "accuracy_vs_snr.png"))
    if offset:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for t, row in offset["accuracy"].items():
            ks = [int(k) for k, v in row.items() if v is not None]
            ax.plot(ks, [100 * row[str(k)] for k in ks], "o-", label=f"true SNR {t} dB")
        ax.set(
            xlabel="training SNR − true SNR (dB)", ylabel="accuracy at the true SNR (%)", title="Training-SNR offset"
        )
        ax.grid(alpha=0.3)
        ax.legend()
        written.append(_save(fig, out / "offset.png"))
    plt.close("all")
    return written


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    return path.name
