"""The latency table: measured latency per config × kind × length × backend, with the configs' shapes and where
it was taken; read from a profile report, saved as JSON, rendered as Markdown."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ondevice.io import write_json_atomic
from ondevice.report import LatencyReport
from slm.arch import ArchConfig
from slm.latency.counts import check_config_name, check_configs, check_kind, check_length, memory_bytes, parse_candidate

TABLE_FORMAT = "slm-latency-table"
FORMAT_VERSION = 1
# The fields a record takes as they are from an `ondevice.report.Measurement`.
_MEASURED = ("backend", "threads", "median_ms", "p10_ms", "p90_ms", "peak_rss_bytes")


def read_json(path: str | os.PathLike) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


def check_format(data: Any, expected: str, where: str) -> None:
    """A ValueError naming `where` unless `data` is a mapping of format `expected` at FORMAT_VERSION."""
    if not isinstance(data, dict) or data.get("format") != expected:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{where}: field 'format' must be {expected!r}, got {found!r}")
    if data.get("version") != FORMAT_VERSION:
        raise ValueError(f"{where}: field 'version' is {data.get('version')!r}; this reader reads {FORMAT_VERSION}")


@dataclass(frozen=True)
class LatencyRecord:
    """One measured call: a config's prefill of `length` tokens, or decode step after `length` cached ones."""

    config: str
    kind: str
    length: int
    backend: str
    threads: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    peak_rss_bytes: int | None = None

    @property
    def key(self) -> tuple[str, str, int, str, int]:
        return (self.config, self.kind, self.length, self.backend, self.threads)


@dataclass
class LatencyTable:
    """Measured latency per config × kind × length × backend, with the configs' shapes and where it was taken."""

    records: list[LatencyRecord]
    configs: dict[str, ArchConfig]
    environment: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.configs:
            check_config_name(name)
        seen: set[tuple[str, str, int, str, int]] = set()
        for i, r in enumerate(self.records):
            where = f"LatencyTable record {i} ({r.config}/{r.kind}@{r.length}, {r.backend})"
            if r.config not in self.configs:
                raise ValueError(
                    f"{where}: config {r.config!r} is not among the table's configs {sorted(self.configs)}"
                )
            check_kind(r.kind)
            check_length(r.length, f"{where}: length")
            if not (isinstance(r.median_ms, (int, float)) and math.isfinite(r.median_ms) and r.median_ms > 0):
                raise ValueError(f"{where}: median_ms must be a positive number, got {r.median_ms!r}")
            if r.key in seen:
                raise ValueError(f"{where}: measured twice at {r.threads} threads")
            seen.add(r.key)

    # ------------------------------------------------------------------------------------ construction

    @classmethod
    def from_report(cls, report: LatencyReport, configs: Mapping[str, ArchConfig]) -> LatencyTable:
        """Read a profile whose candidates are named `CONFIG/KIND@LENGTH`, as `export_candidates` names them.

        Every measurement must be at batch size 1 and name a config in `configs`; anything else is an
        error, so a table never silently drops what was measured.
        """
        check_configs(configs)
        records, unknown = [], []
        for m in report.measurements:
            config, kind, length = parse_candidate(m.model)
            if config not in configs:
                unknown.append(m.model)
                continue
            if m.batch_size != 1:
                raise ValueError(f"measurement {m.model!r} ({m.backend}) is at batch size {m.batch_size}; expected 1")
            timing = {name: getattr(m, name) for name in _MEASURED}
            records.append(LatencyRecord(config=config, kind=kind, length=length, **timing))
        if unknown:
            raise ValueError(
                f"measurements of configs not given: {sorted(set(unknown))}; configs given: {sorted(configs)}"
            )
        used = {r.config for r in records}
        return cls(
            records=records,
            configs={name: c for name, c in configs.items() if name in used},
            environment=dict(report.environment),
            settings=dict(report.settings),
        )

    def subset(self, config_names: Iterable[str]) -> LatencyTable:
        """The records of some configs only (a train/held-out split)."""
        names = list(config_names)
        missing = sorted(set(names) - set(self.configs))
        if missing:
            raise KeyError(f"configs {missing} are not in the table; it holds {sorted(self.configs)}")
        keep = set(names)
        return LatencyTable(
            records=[r for r in self.records if r.config in keep],
            configs={n: c for n, c in self.configs.items() if n in keep},
            environment=dict(self.environment),
            settings=dict(self.settings),
        )

    # ------------------------------------------------------------------------------------------- access

    def record(
        self, config_name: str, kind: str, length: int, backend: str = "onnxruntime", threads: int | None = None
    ) -> LatencyRecord:
        found = [
            r
            for r in self.records
            if (r.config, r.kind, r.length, r.backend) == (config_name, kind, length, backend)
            and (threads is None or r.threads == threads)
        ]
        if len(found) != 1:
            have = sorted({(r.config, r.kind, r.length, r.backend, r.threads) for r in self.records})
            raise KeyError(
                f"{len(found)} records match {config_name}/{kind}@{length} on {backend!r} (threads={threads!r}); "
                f"the table holds (config, kind, length, backend, threads) = {have}"
            )
        return found[0]

    def get(
        self, config_name: str, kind: str, length: int, backend: str = "onnxruntime", threads: int | None = None
    ) -> float:
        """Median latency (ms) of one call."""
        return self.record(config_name, kind, length, backend, threads).median_ms

    def lengths(self, kind: str) -> list[int]:
        return sorted({r.length for r in self.records if r.kind == check_kind(kind)})

    @property
    def backends(self) -> list[str]:
        return sorted({r.backend for r in self.records})

    # -------------------------------------------------------------------------------------- persistence

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": TABLE_FORMAT,
            "version": FORMAT_VERSION,
            "configs": {name: c.to_dict() for name, c in self.configs.items()},
            "environment": self.environment,
            "settings": self.settings,
            "records": [dataclasses.asdict(r) for r in self.records],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "latency table") -> LatencyTable:
        check_format(data, TABLE_FORMAT, where)
        if not isinstance(data.get("configs"), dict) or not isinstance(data.get("records"), list):
            raise ValueError(f"{where}: fields 'configs' (a mapping) and 'records' (a list) are required")
        configs = {
            name: ArchConfig.from_dict(c, where=f"{where}: configs[{name!r}]") for name, c in data["configs"].items()
        }
        known = {f.name for f in dataclasses.fields(LatencyRecord)}
        records = []
        for i, r in enumerate(data["records"]):
            if not isinstance(r, dict) or set(r) - known or {"config", "kind", "length", "backend"} - set(r):
                raise ValueError(f"{where}: records[{i}] must be a mapping with the fields {sorted(known)}, got {r!r}")
            try:
                records.append(LatencyRecord(**r))
            except TypeError as exc:
                raise ValueError(f"{where}: records[{i}]: {exc}") from exc
        try:
            return cls(records, configs, dict(data.get("environment", {})), dict(data.get("settings", {})))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from exc

    def save_json(self, path: str | os.PathLike) -> Path:
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load_json(cls, path: str | os.PathLike) -> LatencyTable:
        return cls.from_dict(read_json(path), where=str(path))

    # --------------------------------------------------------------------------------------------- views

    def to_markdown(self) -> str:
        """One row per config and backend: compute parameters, median ms per call, analytic memory and peak RSS."""
        env, s = self.environment, self.settings
        prefill, decode = self.lengths("prefill"), self.lengths("decode")
        threads = ", ".join(map(str, sorted({r.threads for r in self.records}))) or "?"
        lines = [
            "## Candidate latency",
            "",
            f"- CPU: {env.get('cpu_model', '?')} ({env.get('usable_cores', '?')} usable cores), "
            f"{threads} threads, warm-up {s.get('warmup', '?')}, {s.get('repeats', '?')} timed calls "
            f"in {s.get('rounds', '?')} interleaved rounds",
            "- memory: analytic = fp32 weights + KV cache + logits at the longest call (the search's objective); "
            "peak RSS = measured, runtime included",
            "",
        ]
        columns = [f"prefill@{p} ms" for p in prefill] + [f"decode@{t} ms" for t in decode]
        lines.append(
            "| config | backend | params compute M | " + " | ".join(columns) + " | analytic MB | peak RSS MB |"
        )
        lines.append("|---|---|---:|" + "---:|" * (len(columns) + 2))
        for name, config in self.configs.items():
            for backend in self.backends:
                rows = [r for r in self.records if r.config == name and r.backend == backend]
                if not rows:
                    continue
                cells = []
                for kind, lengths in (("prefill", prefill), ("decode", decode)):
                    for length in lengths:
                        match = [r for r in rows if r.kind == kind and r.length == length]
                        cells.append(" / ".join(f"{r.median_ms:.4g}" for r in match) or "–")
                analytic = max(memory_bytes(config, r.kind, r.length) for r in rows)
                peaks = [r.peak_rss_bytes for r in rows if r.peak_rss_bytes is not None]
                peak = f"{max(peaks) / 1e6:.0f}" if peaks else "?"
                lines.append(
                    f"| {name} | {backend} | {config.num_params_compute / 1e6:.2f} | "
                    + " | ".join(cells)
                    + f" | {analytic / 1e6:.1f} | {peak} |"
                )
        return "\n".join(lines) + "\n"


def on_common_scale(tables: Sequence[LatencyTable], anchors: Sequence[str]) -> tuple[LatencyTable, list[dict]]:
    """One table from runs timed separately, each holding the `anchors`: every run's records are rescaled, per
    kind, length, backend and thread count, by the geometric mean over the anchors of the first run's time over
    this run's, so the machine's drift between runs does not land in the data. A call timed in several runs (an
    anchor, or a shape timed again) takes the median of its rescaled records (median, p10 and p90 each). Returns
    the table and each run's factors (`kind@length/backend/threads`)."""
    if not tables:
        raise ValueError("on_common_scale: no tables given")
    first = tables[0]
    missing = [(i, a) for i, t in enumerate(tables) for a in anchors if a not in t.configs]
    if missing:
        raise ValueError(f"on_common_scale: anchors missing from groups (group, anchor): {missing}")
    timed: dict[tuple, list[LatencyRecord]] = {}
    factors = []
    for table in tables:
        scale = {}
        for key in sorted({(r.kind, r.length, r.backend, r.threads) for r in table.records}):
            kind, length, backend, threads = key
            logs = [
                math.log(first.get(a, kind, length, backend, threads) / table.get(a, kind, length, backend, threads))
                for a in anchors
            ]
            scale[key] = math.exp(sum(logs) / len(logs)) if logs else 1.0
        factors.append({f"{k}@{n}/{b}/{t}t": f for (k, n, b, t), f in scale.items()})
        for r in table.records:
            f = scale[(r.kind, r.length, r.backend, r.threads)]
            scaled = dataclasses.replace(r, median_ms=r.median_ms * f, p10_ms=r.p10_ms * f, p90_ms=r.p90_ms * f)
            timed.setdefault(r.key, []).append(scaled)
    records = []
    for runs in timed.values():
        middle = {name: statistics.median(getattr(r, name) for r in runs) for name in ("median_ms", "p10_ms", "p90_ms")}
        records.append(dataclasses.replace(runs[0], **middle))
    configs = {n: c for t in tables for n, c in t.configs.items()}
    return LatencyTable(records, configs, dict(first.environment), dict(first.settings)), factors
