"""The latency predictor: one non-negative linear law per (kind, backend) in exact shape counts, fitted on a
latency table, and how well it ranks and predicts held-out shapes."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ondevice.io import save_figure, write_json_atomic
from slm.arch import ArchConfig
from slm.latency.counts import FEATURES, KINDS, check_kind, features
from slm.latency.table import FORMAT_VERSION, LatencyRecord, LatencyTable, check_format, read_json

PREDICTOR_FORMAT = "slm-latency-predictor"
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
        return self.law(check_kind(kind), backend).predict(features(config, kind, length))

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
        check_format(data, PREDICTOR_FORMAT, where)
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
        return cls.from_dict(read_json(path), where=str(path))


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
    return save_figure(fig, path)
