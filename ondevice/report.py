"""LatencyReport: what `ondevice.profile` measured, as JSON, a markdown table and a plot.

It needs no torch, so reports measured on a device (`ondevice ingest`) load the same way as host ones.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ondevice.io import atomic_path, save_figure, write_json_atomic

REPORT_FORMAT = "ondevice-latency-report"


def _refuse(where: str, field: str, expected: str, value: Any) -> ValueError:
    text = repr(value)
    shown = text if len(text) <= 80 else text[:77] + "..."
    return ValueError(f"{where}: field '{field}' must be {expected}; got {shown}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _object(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise _refuse(where, key, "an object", value)
    return dict(value)


@dataclass(frozen=True)
class Measurement:
    """One (model, backend, threads, batch size) cell: per-call latency statistics and peak memory."""

    model: str
    backend: str
    batch_size: int
    threads: int
    n: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    iqr_ms: float
    samples_per_s: float
    peak_rss_bytes: int | None = None
    rss_before_bytes: int | None = None
    peak_rss_exclusive: bool = False
    samples_ms: tuple[float, ...] = ()

    @classmethod
    def from_dict(cls, data: dict[str, Any], field: str = "measurement", where: str = "report") -> Measurement:
        """A measurement from its JSON form, every value checked first; unknown keys are ignored.

        A ValueError names `where` (the file), the field (`field.median_ms`) and what it must be: non-empty
        model and backend names; batch_size, threads and n integers >= 1; the latencies and samples_per_s
        finite and > 0 (iqr_ms >= 0); samples_ms, if given, n finite numbers >= 0; the RSS figures null or
        integers >= 0; peak_rss_exclusive a bool.
        """
        if not isinstance(data, dict):
            raise _refuse(where, field, "an object", data)
        for key in ("model", "backend", "batch_size", "threads", "n", "median_ms", "p10_ms", "p90_ms", "iqr_ms",
                    "samples_per_s"):  # fmt: skip
            if key not in data:
                raise ValueError(f"{where}: field '{field}.{key}' is missing")
        for key in ("model", "backend"):
            if not isinstance(data[key], str) or not data[key]:
                raise _refuse(where, f"{field}.{key}", "a non-empty string", data[key])
        for key in ("batch_size", "threads", "n"):
            if not _is_int(data[key]) or data[key] < 1:
                raise _refuse(where, f"{field}.{key}", "an integer >= 1", data[key])
        for key in ("median_ms", "p10_ms", "p90_ms", "samples_per_s"):
            if not _is_number(data[key]) or data[key] <= 0:
                raise _refuse(where, f"{field}.{key}", "a finite number > 0", data[key])
        if not _is_number(data["iqr_ms"]) or data["iqr_ms"] < 0:
            raise _refuse(where, f"{field}.iqr_ms", "a finite number >= 0", data["iqr_ms"])
        for key in ("peak_rss_bytes", "rss_before_bytes"):
            value = data.get(key)
            if value is not None and (not _is_int(value) or value < 0):
                raise _refuse(where, f"{field}.{key}", "null or an integer >= 0", value)
        if not isinstance(data.get("peak_rss_exclusive", False), bool):
            raise _refuse(where, f"{field}.peak_rss_exclusive", "true or false", data["peak_rss_exclusive"])
        samples = data.get("samples_ms", [])
        if not isinstance(samples, list) or (samples and len(samples) != data["n"]):
            raise _refuse(where, f"{field}.samples_ms", f"a list of n = {data['n']} numbers", samples)
        for i, value in enumerate(samples):
            if not _is_number(value) or value < 0:
                raise _refuse(where, f"{field}.samples_ms[{i}]", "a finite number >= 0", value)
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["samples_ms"] = tuple(samples)
        return cls(**values)


@dataclass
class LatencyReport:
    """Latency measurements with the model facts and the environment they were taken in."""

    measurements: list[Measurement]
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)

    def get(self, backend: str, batch_size: int, model: str | None = None, threads: int | None = None) -> Measurement:
        """The one measurement matching the arguments; `model`/`threads` may be left out when unambiguous."""
        found = [
            m
            for m in self.measurements
            if m.backend == backend
            and m.batch_size == batch_size
            and (model is None or m.model == model)
            and (threads is None or m.threads == threads)
        ]
        if len(found) != 1:
            have = sorted({(m.model, m.backend, m.threads, m.batch_size) for m in self.measurements})
            raise KeyError(
                f"{len(found)} measurements match backend={backend!r}, batch_size={batch_size}, model={model!r}, "
                f"threads={threads!r}; the report holds (model, backend, threads, batch) = {have}"
            )
        return found[0]

    def ratio(self, backend: str, baseline: str, batch_size: int, model: str | None = None) -> float:
        """Median latency of `backend` over `baseline` at one batch size (< 1: `backend` is faster)."""
        return self.get(backend, batch_size, model).median_ms / self.get(baseline, batch_size, model).median_ms

    # ------------------------------------------------------------------------------------- persistence

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT,
            "version": 1,
            "models": self.models,
            "environment": self.environment,
            "settings": self.settings,
            "source": self.source,
            "measurements": [{**asdict(m), "samples_ms": list(m.samples_ms)} for m in self.measurements],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "report") -> LatencyReport:
        """A report from its JSON form (a saved report, or a device's results), checked before anything is built.

        A ValueError names `where`, the field and what it must be: a non-empty list of measurements, each
        checked by `Measurement.from_dict`, no cell (model, backend, threads, batch size) measured twice;
        models, environment, settings and source objects; each model's params and macs null or integers >= 0.
        """
        if not isinstance(data, dict):
            raise ValueError(f"{where}: must hold a JSON object (a latency report); got {type(data).__name__}")
        raw = data.get("measurements")
        if not isinstance(raw, list) or not raw:
            raise _refuse(where, "measurements", "a non-empty list of measurements", raw)
        measurements = [Measurement.from_dict(m, f"measurements[{i}]", where) for i, m in enumerate(raw)]
        first: dict[tuple[str, str, int, int], int] = {}
        for i, m in enumerate(measurements):
            cell = (m.model, m.backend, m.threads, m.batch_size)
            if cell in first:
                raise ValueError(
                    f"{where}: field 'measurements[{i}]' must be a cell not already measured; got model {m.model!r}, "
                    f"backend {m.backend!r}, {m.threads} threads, batch {m.batch_size}, as measurements[{first[cell]}]"
                )
            first[cell] = i
        models = _object(data, "models", where)
        for name, info in models.items():
            if not isinstance(info, dict):
                raise _refuse(where, f"models.{name}", "an object {params, macs}", info)
            for key in ("params", "macs"):
                value = info.get(key)
                if value is not None and (not _is_int(value) or value < 0):
                    raise _refuse(where, f"models.{name}.{key}", "null or an integer >= 0", value)
        return cls(
            measurements=measurements,
            models=models,
            environment=_object(data, "environment", where),
            settings=_object(data, "settings", where),
            source=_object(data, "source", where),
        )

    def save_json(self, path: str | os.PathLike) -> Path:
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load_json(cls, path: str | os.PathLike) -> LatencyReport:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not a latency report: not valid JSON ({exc})") from exc
        if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"{path}: field 'format' must be {REPORT_FORMAT!r}, got {found!r}")
        return cls.from_dict(data, where=str(path))

    def save(self, out_dir: str | os.PathLike, stem: str = "latency") -> dict[str, Path]:
        """Write `<stem>.json`, `<stem>.md` and `<stem>.png` into `out_dir`, all three or none.

        Each is rendered into a temporary file beside its target first; only when all three are done are they
        renamed into place, so a report that fails to render (a plot that cannot be drawn) leaves nothing.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / f"{stem}.json", "markdown": out / f"{stem}.md", "plot": out / f"{stem}.png"}
        with contextlib.ExitStack() as stack:
            tmp = {kind: stack.enter_context(atomic_path(path)) for kind, path in paths.items()}
            write_json_atomic(tmp["json"], self.to_dict())
            tmp["markdown"].write_text(self.to_markdown())
            self.plot(tmp["plot"])
        return paths

    # ---------------------------------------------------------------------------------------- views

    def to_markdown(self) -> str:
        env, s = self.environment, self.settings
        lines = [
            "## Latency",
            "",
            f"- CPU: {env.get('cpu_model', '?')} ({env.get('usable_cores', '?')} usable of "
            f"{env.get('cpu_count', '?')} cores, {env.get('machine', '?')}), {env.get('platform', '?')}",
            "- versions: "
            + ", ".join(f"{k} {env[k]}" for k in ("python", "torch", "onnxruntime", "onnx", "numpy") if env.get(k)),
            f"- settings: warm-up {s.get('warmup')}, {s.get('repeats')} timed calls in {s.get('rounds')} interleaved "
            f"rounds, ONNX Runtime graph optimisation '{s.get('graph_optimization_level')}', "
            f"{'one process per backend' if s.get('isolate') else 'one process'}",
        ]
        if self.source:
            lines.append("- source: " + ", ".join(f"{k} {v}" for k, v in self.source.items()))
        if self.models:
            lines += ["", "| model | parameters | MACs per example |", "|---|---:|---:|"]
            for name, info in self.models.items():
                params, macs = info.get("params"), info.get("macs")
                lines.append(
                    f"| {name} | {'?' if params is None else f'{params:,}'} | {'?' if macs is None else f'{macs:,}'} |"
                )
        lines += [
            "",
            "| model | backend | threads | batch | median ms | p10 ms | p90 ms | IQR ms | samples/s | peak RSS MiB |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for m in self.measurements:
            peak = "?" if m.peak_rss_bytes is None else f"{m.peak_rss_bytes / 2**20:.0f}"
            lines.append(
                f"| {m.model} | {m.backend} | {m.threads} | {m.batch_size} | {m.median_ms:.4g} | {m.p10_ms:.4g} | "
                f"{m.p90_ms:.4g} | {m.iqr_ms:.3g} | {m.samples_per_s:,.1f} | {peak} |"
            )
        return "\n".join(lines) + "\n"

    def plot(self, path: str | os.PathLike) -> Path:
        """Median latency (p10–p90 band) and throughput against batch size, one line per model/backend."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        series: dict[tuple[str, str, int], list[Measurement]] = {}
        for m in self.measurements:
            series.setdefault((m.model, m.backend, m.threads), []).append(m)
        fig, (ax_lat, ax_thr) = plt.subplots(1, 2, figsize=(11, 4.2))
        for (model, backend, threads), ms in series.items():
            ms = sorted(ms, key=lambda m: m.batch_size)
            b = [m.batch_size for m in ms]
            label = f"{model} / {backend} / {threads} thr" if len(self.models) > 1 else f"{backend} / {threads} thr"
            (line,) = ax_lat.plot(b, [m.median_ms for m in ms], marker="o", label=label)
            ax_lat.fill_between(b, [m.p10_ms for m in ms], [m.p90_ms for m in ms], color=line.get_color(), alpha=0.2)
            ax_thr.plot(b, [m.samples_per_s for m in ms], marker="o", color=line.get_color(), label=label)
        batch_sizes = sorted({m.batch_size for m in self.measurements})
        for ax, ylabel in ((ax_lat, "latency per call, ms (median, p10–p90)"), (ax_thr, "samples/s")):
            ax.set_xscale("log", base=2)
            ax.set_xticks(batch_sizes, [str(b) for b in batch_sizes])
            ax.set_yscale("log")
            ax.set_xlabel("batch size")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
        ax_thr.legend(fontsize=8)
        fig.suptitle(f"{self.environment.get('cpu_model', '')} — {', '.join(self.models) or 'latency'}", fontsize=10)
        fig.tight_layout()
        return save_figure(fig, path)
