"""Runtime-first search's latency side: export and profile candidate shapes, tabulate them, and fit an
inspectable latency predictor (non-negative linear in exact counts) to pick shapes without timing each one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ondevice.device.runner import atomic_path, write_json_atomic
from ondevice.report import LatencyReport
from slm.arch import ArchConfig

KINDS = ("prefill", "decode")
FEATURES = ("macs", "weight_bytes", "kv_bytes", "lm_head_macs", "attention_macs", "activation_bytes", "num_layers")
TABLE_FORMAT = "slm-latency-table"
PREDICTOR_FORMAT = "slm-latency-predictor"
FORMAT_VERSION = 1
BYTES_PER_PARAM = 4  # the graphs are exported and timed in fp32

# Config names become file stems and the part before "/" in a candidate name, so they are kept to safe characters.
_CONFIG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_CANDIDATE = re.compile(r"(?P<config>[^/]+)/(?P<kind>[a-z]+)@(?P<length>[1-9][0-9]*)")
# Display units for `describe`: coefficients per MAC or byte are ~1e-9 ms, unreadable as they are.
_UNITS = {
    "macs": (1e9, "GMAC"),
    "lm_head_macs": (1e9, "GMAC"),
    "attention_macs": (1e9, "GMAC"),
    "weight_bytes": (1e6, "MB"),
    "kv_bytes": (1e6, "MB"),
    "activation_bytes": (1e6, "MB"),
    "num_layers": (1.0, "layer"),
}

__all__ = [
    "FEATURES",
    "KINDS",
    "LatencyLaw",
    "LatencyPredictor",
    "LatencyRecord",
    "LatencyTable",
    "candidate_name",
    "evaluate",
    "export_candidates",
    "features",
    "measure",
    "memory_bytes",
    "parse_candidate",
    "plot_predictions",
]


# ------------------------------------------------------------------------------------------------ names


def _check_config_name(name: str) -> str:
    if not isinstance(name, str) or not _CONFIG_NAME.fullmatch(name):
        raise ValueError(
            f"config name {name!r}: expected letters, digits and '._+-' (no '/' or '@'), starting with a letter/digit"
        )
    return name


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return kind


def _check_length(length: int, what: str = "length") -> int:
    if not isinstance(length, (int, np.integer)) or isinstance(length, bool) or length < 1:
        raise ValueError(f"{what} must be a positive integer, got {length!r}")
    return int(length)


def candidate_name(config_name: str, kind: str, length: int) -> str:
    """`name/prefill@64` (a prompt of 64 tokens) or `name/decode@256` (one step after 256 cached tokens)."""
    return f"{_check_config_name(config_name)}/{_check_kind(kind)}@{_check_length(length)}"


def parse_candidate(text: str) -> tuple[str, str, int]:
    """The inverse of `candidate_name`: `"name/decode@256"` → `("name", "decode", 256)`."""
    match = _CANDIDATE.fullmatch(text) if isinstance(text, str) else None
    if match is None or match["kind"] not in KINDS or not _CONFIG_NAME.fullmatch(match["config"]):
        raise ValueError(f"candidate name {text!r}: expected 'CONFIG/KIND@LENGTH' (KIND one of {KINDS}, LENGTH > 0)")
    return match["config"], match["kind"], int(match["length"])


# ------------------------------------------------------------------------------------------ exact counts


def _tokens_and_keys(kind: str, length: int) -> tuple[int, int]:
    """Queries computed and keys attended to: a prompt of P sees P keys; a decode step after T sees T + 1."""
    return (length, length) if kind == "prefill" else (1, length + 1)


def features(config: ArchConfig, kind: str, length: int) -> dict[str, float]:
    """The predictor's inputs for one call, every one an exact count from `config`.

    `length` is the prompt length P for prefill, the cached length T for decode. `macs` is the whole call
    (`prefill_macs(P)` / `decode_macs(T)`); `weight_bytes` the fp32 weights every call reads (non-embedding
    + LM head); `kv_bytes` the cache written (prefill, P tokens) or read (decode, T tokens);
    `attention_macs` the scores and weighted values over every key; `activation_bytes` the fp32 residual
    stream and FFN hidden per token and layer, 4·tokens·layers·(hidden + ffn), which prefill pays per token.
    """
    _check_kind(kind)
    length = _check_length(length)
    tokens, keys = _tokens_and_keys(kind, length)
    macs = config.prefill_macs(length) if kind == "prefill" else config.decode_macs(length)
    return {
        "macs": float(macs),
        "weight_bytes": float(config.num_params_compute * BYTES_PER_PARAM),
        "kv_bytes": float(config.kv_cache_bytes(length)),
        "lm_head_macs": float(config.lm_head_macs(1)),
        "attention_macs": float(config.num_layers * 2 * tokens * keys * config.q_width),
        "activation_bytes": float(
            BYTES_PER_PARAM * tokens * config.num_layers * (config.hidden_size + config.ffn_size)
        ),
        "num_layers": float(config.num_layers),
    }


def _read_json(path: str | os.PathLike) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


def memory_bytes(config: ArchConfig, kind: str, length: int) -> int:
    """Analytic peak working set of one call: fp32 weights (all stored parameters) + KV cache + logits.

    This is the memory objective the search uses: exact and device-independent. The cache is the one
    the call leaves (P tokens after prefill, T + 1 after a decode step); a runtime that copies the past
    into a new present holds both for a moment, which this does not count. The measured peak RSS, which
    adds the runtime itself, is reported beside it in `LatencyTable.to_markdown`.
    """
    _check_kind(kind)
    length = _check_length(length)
    cached = length if kind == "prefill" else length + 1
    if cached > config.context_length:
        raise ValueError(
            f"{kind} at length {length} needs {cached} cached tokens, past context {config.context_length}"
        )
    return config.weight_bytes(BYTES_PER_PARAM, "total") + config.kv_cache_bytes(cached) + config.logits_bytes(1)


# ------------------------------------------------------------------------------------------- export


def _check_configs(configs: Mapping[str, ArchConfig]) -> None:
    if not isinstance(configs, Mapping) or not configs:
        raise ValueError("configs must be a non-empty mapping of name → ArchConfig")
    for name, config in configs.items():
        _check_config_name(name)
        if not isinstance(config, ArchConfig):
            raise TypeError(f"configs[{name!r}] must be an ArchConfig, got {type(config).__name__}")


def _check_lengths(configs: Mapping[str, ArchConfig], prompt_length: int, past_lengths: Sequence[int]) -> None:
    _check_length(prompt_length, "prompt_length")
    if isinstance(past_lengths, (int, str)) or not past_lengths:
        raise ValueError(f"past_lengths must be a non-empty sequence of positive integers, got {past_lengths!r}")
    for t in past_lengths:
        _check_length(t, "past_lengths entry")
    for name, config in configs.items():
        # The graphs' symbolic axes stop at the context length; say which config is too short.
        if prompt_length > config.context_length or max(past_lengths) + 1 > config.context_length:
            raise ValueError(
                f"config {name!r}: context_length {config.context_length} is too short for prompt_length "
                f"{prompt_length} and past length {max(past_lengths)} (+1 new token)"
            )


def export_candidates(
    configs: Mapping[str, ArchConfig],
    out_dir: str | os.PathLike,
    *,
    prompt_length: int = 64,
    past_lengths: Sequence[int] = (256,),
    verify: bool = False,
    progress: bool = True,
    seed: int = 0,
) -> dict[str, tuple[Path, dict[str, np.ndarray]]]:
    """Export each config's prefill and decode graphs (random weights from `seed`) into `out_dir`.

    Returns candidate name → (ONNX path, input arrays), the pair form `ondevice.profile.profile` and
    `ondevice.bundle.write_bundle` take. One decode graph serves every past length (its past axis is
    symbolic); only the arrays differ.
    """
    from tqdm.auto import tqdm

    from slm.export import (
        as_arrays,
        cache_names,
        decode_inputs,
        export_decode,
        export_prefill,
        prefill_inputs,
        random_model,
    )

    _check_configs(configs)
    _check_lengths(configs, prompt_length, past_lengths)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    candidates: dict[str, tuple[Path, dict[str, np.ndarray]]] = {}
    for name, config in tqdm(configs.items(), desc="exporting", unit="config", disable=not progress, leave=False):
        model = random_model(config, seed=seed)
        prefill_path, decode_path = out / f"{name}.prefill.onnx", out / f"{name}.decode.onnx"
        export_prefill(model, prefill_path, verify=verify)
        export_decode(model, decode_path, verify=verify)
        tokens = prefill_inputs(config, prompt_length, seed=seed)[0].numpy()
        candidates[candidate_name(name, "prefill", prompt_length)] = (prefill_path, {"tokens": tokens})
        input_names = ["token", *cache_names(config.num_layers, "past")]
        for t in past_lengths:
            arrays = as_arrays(decode_inputs(config, t, seed=seed), input_names)
            candidates[candidate_name(name, "decode", t)] = (decode_path, arrays)
    return candidates


def _torch_candidates(
    configs: Mapping[str, ArchConfig], prompt_length: int, past_lengths: Sequence[int], seed: int
) -> dict[str, tuple[Any, tuple[Any, ...]]]:
    from slm.export import DecodeGraph, PrefillGraph, decode_inputs, prefill_inputs, random_model

    candidates: dict[str, tuple[Any, tuple[Any, ...]]] = {}
    for name, config in configs.items():
        model = random_model(config, seed=seed)
        candidates[candidate_name(name, "prefill", prompt_length)] = (
            PrefillGraph(model),
            prefill_inputs(config, prompt_length, seed=seed),
        )
        for t in past_lengths:
            candidates[candidate_name(name, "decode", t)] = (DecodeGraph(model), decode_inputs(config, t, seed=seed))
    return candidates


def measure(
    configs: Mapping[str, ArchConfig],
    *,
    prompt_length: int = 64,
    past_lengths: Sequence[int] = (256,),
    backends: Sequence[str] = ("onnxruntime",),
    threads: int = 2,
    warmup: int = 5,
    repeats: int = 30,
    rounds: int = 5,
    isolate: bool = True,
    workdir: str | os.PathLike | None = None,
    progress: bool = True,
    seed: int = 0,
) -> LatencyTable:
    """Export every config and time its prefill and decode calls; all ONNX candidates in one interleaved run.

    Interleaving (A B A B round by round) puts every candidate under the same drift, so their ratios hold
    even when the machine's speed wanders. A "torch" backend is timed in a second run over the eager
    PrefillGraph/DecodeGraph modules (same seed, same weights), since an ONNX file cannot run on torch.
    `workdir` keeps the exported graphs (under `onnx/`); by default they go to a temporary folder.
    """
    from ondevice.profile import BACKENDS, profile

    _check_configs(configs)
    _check_lengths(configs, prompt_length, past_lengths)
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        raise ValueError(f"backends {list(backends)!r}: choose from {BACKENDS}")
    ort_backends = tuple(b for b in backends if b != "torch")
    settings = dict(prompt_length=prompt_length, past_lengths=list(past_lengths), seed=seed, threads=threads)
    owned = tempfile.TemporaryDirectory(prefix="slm-latency-") if workdir is None else None
    work = Path(owned.name if owned else workdir)
    try:
        reports = []
        timing = dict(threads=threads, warmup=warmup, repeats=repeats, rounds=rounds, progress=progress)
        if ort_backends:
            candidates = export_candidates(
                configs,
                work / "onnx",
                prompt_length=prompt_length,
                past_lengths=past_lengths,
                progress=progress,
                seed=seed,
            )
            profile_dir = work / "profile"
            profile_dir.mkdir(parents=True, exist_ok=True)
            reports.append(profile(candidates, backends=ort_backends, isolate=isolate, workdir=profile_dir, **timing))
        if "torch" in backends:
            candidates = _torch_candidates(configs, prompt_length, past_lengths, seed)
            reports.append(profile(candidates, backends=("torch",), isolate=isolate, **timing))
    finally:
        if owned is not None:
            owned.cleanup()
    merged = LatencyReport(
        measurements=[m for r in reports for m in r.measurements],
        models={k: v for r in reports for k, v in r.models.items()},
        environment=reports[0].environment,
        settings={**reports[0].settings, **settings, "backends": list(backends)},
    )
    return LatencyTable.from_report(merged, configs)


# -------------------------------------------------------------------------------------------- the table


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
            _check_config_name(name)
        seen: set[tuple[str, str, int, str, int]] = set()
        for i, r in enumerate(self.records):
            where = f"LatencyTable record {i} ({r.config}/{r.kind}@{r.length}, {r.backend})"
            if r.config not in self.configs:
                raise ValueError(
                    f"{where}: config {r.config!r} is not among the table's configs {sorted(self.configs)}"
                )
            _check_kind(r.kind)
            _check_length(r.length, f"{where}: length")
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
        _check_configs(configs)
        records, unknown = [], []
        for m in report.measurements:
            config, kind, length = parse_candidate(m.model)
            if config not in configs:
                unknown.append(m.model)
                continue
            if m.batch_size != 1:
                raise ValueError(f"measurement {m.model!r} ({m.backend}) is at batch size {m.batch_size}; expected 1")
            records.append(
                LatencyRecord(
                    config=config,
                    kind=kind,
                    length=length,
                    backend=m.backend,
                    threads=m.threads,
                    median_ms=m.median_ms,
                    p10_ms=m.p10_ms,
                    p90_ms=m.p90_ms,
                    peak_rss_bytes=m.peak_rss_bytes,
                )
            )
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
        return sorted({r.length for r in self.records if r.kind == _check_kind(kind)})

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
        if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"{where}: field 'format' must be {TABLE_FORMAT!r}, got {found!r}")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"{where}: field 'version' is {data.get('version')!r}; this reader reads {FORMAT_VERSION}")
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
        return cls.from_dict(_read_json(path), where=str(path))

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


# ------------------------------------------------------------------------------------------- predictor


@dataclass(frozen=True)
class LatencyLaw:
    """One fitted (kind, backend) law: ms = intercept + Σ coefficient·feature, every coefficient ≥ 0."""

    kind: str
    backend: str
    threads: int
    coefficients: dict[str, float]
    intercept: float
    configs: tuple[str, ...]
    lengths: tuple[int, ...]
    rel_rmse: float
    shares: dict[str, float]

    def predict(self, values: Mapping[str, float]) -> float:
        return self.intercept + sum(c * values[f] for f, c in self.coefficients.items())

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "configs": list(self.configs), "lengths": list(self.lengths)}


def _nnls_relative(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative w minimising Σ ((x·w − y) / y)²: every row counts by its relative error."""
    from scipy.optimize import nnls

    a = x / y[:, None]
    # Columns span ~1e0 (intercept) to ~1e9 (MACs); scaling them to unit size keeps NNLS well conditioned.
    scale = np.abs(a).max(axis=0)
    scale[scale == 0] = 1.0
    w, _ = nnls(a / scale, np.ones_like(y), maxiter=50 * x.shape[1])
    return w / scale


@dataclass
class LatencyPredictor:
    """Latency per call from exact shape counts: one non-negative linear law per (kind, backend)."""

    laws: dict[tuple[str, str], LatencyLaw]
    features: tuple[str, ...] = FEATURES

    @classmethod
    def fit(
        cls, table: LatencyTable, features: Sequence[str] = FEATURES, threads: int | None = None
    ) -> LatencyPredictor:
        """Fit a law per (kind, backend) in `table` by NNLS on relative error, with an intercept.

        Dividing each row and its target by the measured latency makes a 1 ms and a 100 ms model count
        equally. Non-negative coefficients keep each term a cost, so the law stays readable and does not
        extrapolate to negative time. Every length of a kind is fitted together: length enters the features.
        """
        names = tuple(features)
        bad = [f for f in names if f not in FEATURES]
        if bad or not names or len(set(names)) != len(names):
            raise ValueError(f"features {list(names)!r}: choose distinct names from {FEATURES}")
        groups: dict[tuple[str, str], list[LatencyRecord]] = {}
        for r in table.records:
            if threads is None or r.threads == threads:
                groups.setdefault((r.kind, r.backend), []).append(r)
        if not groups:
            raise ValueError(f"the table has no records to fit (threads={threads!r})")
        laws = {}
        for (kind, backend), rows in sorted(groups.items()):
            counts = sorted({r.threads for r in rows})
            if len(counts) > 1:
                raise ValueError(f"{kind} on {backend} was measured at threads {counts}; pass threads= to pick one")
            columns = len(names) + 1
            if len(rows) < columns:
                raise ValueError(
                    f"{kind} on {backend}: {len(rows)} measured rows cannot fit {columns} coefficients "
                    f"({len(names)} features + intercept); measure more configs or lengths, or pass fewer features"
                )
            x = np.array(
                [[features_of[f] for f in names] + [1.0] for features_of in _feature_rows(table, rows)],
                dtype=np.float64,
            )
            y = np.array([r.median_ms for r in rows], dtype=np.float64)
            w = _nnls_relative(x, y)
            fitted = x @ w
            # Each term's part of the fitted time per row; a row fitted at 0 ms (all weights zero) has no parts.
            parts = np.divide(x * w, fitted[:, None], out=np.zeros_like(x), where=fitted[:, None] > 0)
            laws[(kind, backend)] = LatencyLaw(
                kind=kind,
                backend=backend,
                threads=counts[0],
                coefficients={f: float(c) for f, c in zip(names, w[:-1], strict=True)},
                intercept=float(w[-1]),
                configs=tuple(sorted({r.config for r in rows})),
                lengths=tuple(sorted({r.length for r in rows})),
                rel_rmse=float(np.sqrt(np.mean(((fitted - y) / y) ** 2))),
                shares={f: float(np.mean(parts[:, j])) for j, f in enumerate([*names, "intercept"])},
            )
        return cls(laws=laws, features=names)

    def law(self, kind: str, backend: str = "onnxruntime") -> LatencyLaw:
        if (kind, backend) not in self.laws:
            raise KeyError(
                f"no latency law fitted for {kind!r} on {backend!r}; fitted: {sorted(self.laws)} (kind, backend)"
            )
        return self.laws[(kind, backend)]

    def predict(self, config: ArchConfig, kind: str, length: int, backend: str = "onnxruntime") -> float:
        """Predicted median ms of one call (prefill of `length` tokens, or decode after `length` cached)."""
        return self.law(_check_kind(kind), backend).predict(features(config, kind, length))

    def coefficients(self, kind: str, backend: str = "onnxruntime") -> dict[str, float]:
        """Feature → ms per unit (per MAC, per byte, per layer), and 'intercept' → ms."""
        law = self.law(kind, backend)
        return {**law.coefficients, "intercept": law.intercept}

    def describe(self) -> str:
        lines = []
        for (kind, backend), law in sorted(self.laws.items()):
            lines.append(
                f"{kind} on {backend} ({law.threads} threads): fitted on {len(law.configs)} configs at lengths "
                f"{', '.join(map(str, law.lengths))}; relative RMS error {100 * law.rel_rmse:.1f} %"
            )
            lines.append(f"  {'term':<18}{'coefficient':>26}{'mean share':>12}")
            for name, coef in [*law.coefficients.items(), ("intercept", law.intercept)]:
                per, unit = _UNITS.get(name, (1.0, ""))
                text = f"{coef * per:.4g} ms per {unit}" if unit else f"{coef:.4g} ms"
                lines.append(f"  {name:<18}{text:>26}{100 * law.shares[name]:>11.1f}%")
        return "\n".join(lines) + "\n"

    # -------------------------------------------------------------------------------------- persistence

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PREDICTOR_FORMAT,
            "version": FORMAT_VERSION,
            "features": list(self.features),
            "laws": [law.to_dict() for _, law in sorted(self.laws.items())],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "latency predictor") -> LatencyPredictor:
        if not isinstance(data, dict) or data.get("format") != PREDICTOR_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"{where}: field 'format' must be {PREDICTOR_FORMAT!r}, got {found!r}")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"{where}: field 'version' is {data.get('version')!r}; this reader reads {FORMAT_VERSION}")
        names = tuple(data.get("features", ()))
        if not names or any(f not in FEATURES for f in names):
            raise ValueError(f"{where}: field 'features' must list names from {FEATURES}, got {list(names)!r}")
        laws = {}
        for i, entry in enumerate(data.get("laws", [])):
            try:
                law = LatencyLaw(**{**entry, "configs": tuple(entry["configs"]), "lengths": tuple(entry["lengths"])})
            except (TypeError, KeyError) as exc:
                raise ValueError(f"{where}: laws[{i}] is malformed ({exc})") from exc
            if set(law.coefficients) != set(names) or law.kind not in KINDS:
                raise ValueError(
                    f"{where}: laws[{i}] must have kind in {KINDS} and a coefficient for each of {list(names)}"
                )
            laws[(law.kind, law.backend)] = law
        if not laws:
            raise ValueError(f"{where}: field 'laws' must be a non-empty list")
        return cls(laws=laws, features=names)

    def save_json(self, path: str | os.PathLike) -> Path:
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load_json(cls, path: str | os.PathLike) -> LatencyPredictor:
        return cls.from_dict(_read_json(path), where=str(path))


def _feature_rows(table: LatencyTable, rows: Iterable[LatencyRecord]) -> list[dict[str, float]]:
    return [features(table.configs[r.config], r.kind, r.length) for r in rows]


# ------------------------------------------------------------------------------------------ evaluation


def evaluate(predictor: LatencyPredictor, table: LatencyTable, backend: str = "onnxruntime") -> dict[str, Any]:
    """How well `predictor` ranks and predicts the calls in `table` (held-out configs, typically) on `backend`.

    Returns `groups`: per `"KIND@LENGTH"`, `n`, `within_10pct` (share with |pred − meas| / meas ≤ 0.10),
    `mape` (mean |pred − meas| / meas) and `spearman` (rank correlation of predicted and measured; None
    with fewer than two rows or a constant side), and `rows`: per call, measured and predicted ms, the
    relative error (pred − meas) / meas, and whether the config was among those the law was fitted on.
    """
    from scipy.stats import spearmanr

    records = [r for r in table.records if r.backend == backend]
    if not records:
        raise ValueError(f"the table has no records on backend {backend!r}; it holds {table.backends}")
    rows = []
    for r in records:
        law = predictor.law(r.kind, backend)
        predicted = law.predict(features(table.configs[r.config], r.kind, r.length))
        rows.append(
            {
                "config": r.config,
                "kind": r.kind,
                "length": r.length,
                "backend": backend,
                "measured_ms": r.median_ms,
                "predicted_ms": predicted,
                "error": (predicted - r.median_ms) / r.median_ms,
                "held_out": r.config not in law.configs,
            }
        )
    groups: dict[str, dict[str, Any]] = {}
    for key in sorted({(row["kind"], row["length"]) for row in rows}, key=lambda k: (KINDS.index(k[0]), k[1])):
        members = [row for row in rows if (row["kind"], row["length"]) == key]
        errors = np.abs([row["error"] for row in members])
        measured = [row["measured_ms"] for row in members]
        predicted = [row["predicted_ms"] for row in members]
        rho = None
        if len(members) >= 2 and len(set(measured)) > 1 and len(set(predicted)) > 1:
            rho = float(spearmanr(predicted, measured).statistic)
        groups[f"{key[0]}@{key[1]}"] = {
            "kind": key[0],
            "length": key[1],
            "n": len(members),
            "within_10pct": float(np.mean(errors <= 0.10)),
            "mape": float(np.mean(errors)),
            "spearman": rho,
        }
    return {"backend": backend, "groups": groups, "rows": rows}


def plot_predictions(evaluation: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Predicted against measured ms, log-log, with the y = x line and a ±10 % band; one colour per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, groups = evaluation.get("rows"), evaluation.get("groups")
    if not rows or not isinstance(groups, Mapping):
        raise ValueError("evaluation must be what `evaluate` returns: non-empty 'rows' and 'groups'")
    values = [v for row in rows for v in (row["measured_ms"], row["predicted_ms"]) if v > 0]
    low, high = min(values) / 1.5, max(values) * 1.5
    line = np.geomspace(low, high, 50)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.fill_between(line, line * 0.9, line * 1.1, color="0.85", label="±10 %")
    ax.plot(line, line, color="0.3", lw=1, label="y = x")
    for key, g in groups.items():
        members = [row for row in rows if f"{row['kind']}@{row['length']}" == key]
        rho = "–" if g["spearman"] is None else f"{g['spearman']:.2f}"
        ax.scatter(
            [row["measured_ms"] for row in members],
            [row["predicted_ms"] for row in members],
            s=22,
            label=f"{key}: {100 * g['within_10pct']:.0f} % within 10 %, ρ {rho} (n {g['n']})",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel("measured median ms")
    ax.set_ylabel("predicted ms")
    ax.set_title(f"latency predictor on {evaluation.get('backend', '?')}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)
    return path
