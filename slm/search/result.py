"""What a search leaves: evaluated shapes, the result (measured front, chosen shape) with its files
(front.json, front.png, chosen.yaml), and the choice made from measurements that came back from a device."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ondevice.io import atomic_path, save_figure, write_json_atomic
from slm.arch import ArchConfig
from slm.latency.table import read_json
from slm.search.pareto import Objective, metric_matrix, near_best, pareto_front
from slm.search.space import Budget, BudgetError, SearchSpace, shape_name

RESULT_FORMAT = "slm-search"
RESULT_VERSION = 1
FRONT_NAME = "front.json"
PLOT_NAME = "front.png"
CHOSEN_NAME = "chosen.yaml"


@dataclass(frozen=True)
class Evaluated:
    """A shape with its metrics and the generation that first proposed it (0: the initial population)."""

    config: ArchConfig
    metrics: dict[str, float]
    generation: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.config.name or shape_name(self.config),
            "arch": self.config.to_dict(),
            "params": {"compute": self.config.num_params_compute, "total": self.config.num_params},
            "metrics": dict(self.metrics),
            "generation": self.generation,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> Evaluated:
        try:
            return cls(ArchConfig.from_dict(data["arch"], where), dict(data["metrics"]), int(data["generation"]))
        except KeyError as exc:
            raise ValueError(f"{where}: missing field {exc.args[0]!r}") from None


@dataclass
class SearchResult:
    """Screened (predicted) and measured candidates, the measured Pareto front and the chosen shape.

    `front` and `chosen_index` index `measured`; both come from the measured numbers only. `confirmed`, when
    the search ran a confirmation, holds the best measured shapes timed again together in one run, and the
    chosen shape is the best of those by that run.
    """

    screened: list[Evaluated]
    measured: list[Evaluated]
    front: list[int]
    chosen_index: int
    objective: Objective
    budget: Budget
    timings: dict[str, float]
    space: SearchSpace | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    confirmed: list[Evaluated] = field(default_factory=list)

    @property
    def chosen(self) -> ArchConfig:
        return self.measured[self.chosen_index].config

    @property
    def counts(self) -> dict[str, int]:
        """How many shapes the search timed for real against how many it only predicted.

        screened: shapes the cheap source scored; screened_front: those on the screened Pareto front (inside the
        budget); front_measured: how many of the screened front were timed; near_best: screened shapes scored
        within the search's `margin` of the best (inside the budget); near_best_measured: how many of those were
        timed; measured: shapes timed for real; confirmed: the best of them timed again in one run to choose;
        predicted_only: screened shapes never timed.
        """
        measured = {e.config for e in self.measured}
        inside = [e for e in self.screened if self.budget.contains(e.config)]
        points = [e.metrics for e in inside]
        front = [inside[i].config for i in pareto_front(points, self.objective.metrics)]
        near = [inside[i].config for i in near_best(self.objective.scores(points), self.settings.get("margin", 0.0))]
        return {
            "screened": len(self.screened),
            "screened_front": len(front),
            "front_measured": sum(c in measured for c in front),
            "near_best": len(near),
            "near_best_measured": sum(c in measured for c in near),
            "measured": len(self.measured),
            "confirmed": len(self.confirmed),
            "predicted_only": len({e.config for e in self.screened} - measured),
        }

    def fit_config(self) -> dict[str, Any]:
        """An `slm fit` config that pre-trains the chosen shape."""
        arch = {k: v for k, v in self.chosen.to_dict().items() if k != "name"}
        return {
            "model": {"class_path": "slm.train.LanguageModel", "init_args": {"arch": arch}},
            "data": {"class_path": "slm.data.TextDataModule", "init_args": {"vocab_size": arch["vocab_size"]}},
        }

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write front.json, front.png and chosen.yaml (each atomically) into `out_dir`."""
        import yaml

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        on_front = set(self.front)
        screened_metrics = {e.config: e.metrics for e in self.screened}
        measured = []
        for i, e in enumerate(self.measured):
            entry = e.to_dict()
            entry["predicted"] = screened_metrics.get(e.config)
            entry["on_front"] = i in on_front
            entry["chosen"] = i == self.chosen_index
            measured.append(entry)
        payload = {
            "format": RESULT_FORMAT,
            "version": RESULT_VERSION,
            "budget": self.budget.to_dict(),
            "objective": self.objective.to_dict(),
            "chosen": self.chosen.name,
            "front": [self.measured[i].config.name for i in self.front],
            "timings": self.timings,
            "counts": self.counts,
            "settings": self.settings,
            "space": self.space.to_dict() if self.space is not None else None,
            "measured": measured,
            "confirmed": [e.to_dict() for e in self.confirmed],
            "screened": [e.to_dict() for e in self.screened],
        }
        paths = {"front": write_json_atomic(out / FRONT_NAME, payload), "plot": out / PLOT_NAME}
        self.plot(paths["plot"])
        chosen = self.measured[self.chosen_index]
        header = [
            f"chosen by slm search: {self.chosen.name}",
            f"budget: {self.budget}; objective: {self.objective.describe()}",
            "measured: " + ", ".join(f"{k}={v:.6g}" for k, v in chosen.metrics.items()),
            f"params: {self.chosen.num_params_compute / 1e6:.2f} M compute, {self.chosen.num_params / 1e6:.2f} M total",
        ]
        text = "".join(f"# {line}\n" for line in header) + yaml.safe_dump(self.fit_config(), sort_keys=False)
        paths["config"] = out / CHOSEN_NAME
        with atomic_path(paths["config"]) as tmp:
            tmp.write_text(text)
        return paths

    def plot(self, path: str | Path) -> Path:
        """Scatter of the first two objective metrics (or the one metric against parameters): screened grey,
        measured blue, the measured front ringed, the confirmed shapes (where the search confirmed) boxed, and the
        chosen shape starred. Points sit at their first measurement; the choice among the confirmed ones comes
        from their confirmation run."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        axes_of = {
            "decode_ms": ("decode latency (ms / token)", 1.0),
            "prefill_ms": ("prefill latency (ms / prompt)", 1.0),
            "memory_bytes": ("memory (MiB)", 1 / 2**20),
        }
        metrics = self.objective.metrics
        y_metric = metrics[0]
        x_metric = metrics[1] if len(metrics) > 1 else None
        x_label = axes_of[x_metric][0] if x_metric else f"{self.budget.count} parameters (M)"

        def xy(items: Sequence[Evaluated]) -> tuple[list[float], list[float]]:
            ys = [e.metrics[y_metric] * axes_of[y_metric][1] for e in items]
            if x_metric:
                return [e.metrics[x_metric] * axes_of[x_metric][1] for e in items], ys
            return [self.budget.params(e.config) / 1e6 for e in items], ys

        fig, ax = plt.subplots(figsize=(7, 5))
        ax.scatter(*xy(self.screened), s=10, c="0.7", label=f"screened, predicted ({len(self.screened)})")
        ax.scatter(*xy(self.measured), s=30, c="tab:blue", label=f"measured ({len(self.measured)})")
        front = [self.measured[i] for i in self.front]
        ax.scatter(*xy(front), s=90, facecolors="none", edgecolors="tab:red", linewidths=1.5, label="measured front")
        if self.confirmed:
            measured_at = {e.config: e for e in self.measured}
            boxed = [measured_at[e.config] for e in self.confirmed if e.config in measured_at]
            label = f"confirmed: the best {len(self.confirmed)} timed again, the choice among them"
            ax.scatter(*xy(boxed), s=140, marker="s", facecolors="none", edgecolors="k", linewidths=1.0, label=label)
        chosen = [self.measured[self.chosen_index]]
        ax.scatter(
            *xy(chosen), s=250, marker="*", c="gold", edgecolors="k", zorder=5, label=f"chosen: {self.chosen.name}"
        )
        ax.set_xlabel(x_label)
        ax.set_ylabel(axes_of[y_metric][0])
        ax.set_title(f"slm search, budget {self.budget}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        return save_figure(fig, path)

    @classmethod
    def load(cls, out_dir: str | Path) -> SearchResult:
        """Read a result back from the front.json that `save` wrote in `out_dir`."""
        path = Path(out_dir) / FRONT_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no {FRONT_NAME}; is {out_dir} an slm search output folder?")
        data = read_json(path)
        if not isinstance(data, dict) or data.get("format") != RESULT_FORMAT:
            raise ValueError(f"{path}: field 'format' must be {RESULT_FORMAT!r}")
        if data.get("version") != RESULT_VERSION:
            raise ValueError(f"{path}: field 'version' is {data.get('version')!r}; this reader reads {RESULT_VERSION}")
        try:
            measured = [Evaluated.from_dict(e, f"{path}: measured[{i}]") for i, e in enumerate(data["measured"])]
            screened = [Evaluated.from_dict(e, f"{path}: screened[{i}]") for i, e in enumerate(data["screened"])]
            chosen = [i for i, e in enumerate(data["measured"]) if e["chosen"]]
            if len(chosen) != 1:
                raise ValueError(f"{path}: exactly one measured entry must have 'chosen': true, found {len(chosen)}")
            return cls(
                screened=screened,
                measured=measured,
                front=[i for i, e in enumerate(data["measured"]) if e["on_front"]],
                chosen_index=chosen[0],
                objective=Objective.from_dict(data["objective"]),
                budget=Budget.from_dict(data["budget"]),
                timings={k: float(v) for k, v in data["timings"].items()},
                space=SearchSpace.from_dict(data["space"]) if data.get("space") else None,
                settings=dict(data.get("settings") or {}),
                confirmed=[
                    Evaluated.from_dict(e, f"{path}: confirmed[{i}]") for i, e in enumerate(data.get("confirmed", []))
                ],
            )
        except KeyError as exc:
            raise ValueError(f"{path}: missing field {exc.args[0]!r}") from None


def select_from_measurements(
    configs: Mapping[str, ArchConfig],
    metrics: Mapping[str, Mapping[str, float]],
    budget: Budget,
    objective: Objective,
) -> tuple[list[str], str]:
    """(front names, chosen name) from measurements that came back from a device, keyed by candidate name.

    Candidates outside the budget or without a measurement are left out, with a note on stderr.
    """
    unknown = sorted(set(metrics) - set(configs))
    if unknown:
        raise ValueError(f"metrics has candidates not in configs: {unknown}; configs has {sorted(configs)}")
    names = []
    for name, config in configs.items():
        if name not in metrics:
            print(f"note: {name} left out: no measurement came back for it", file=sys.stderr)
        elif not budget.contains(config):
            params = budget.params(config)
            print(
                f"note: {name} left out: {params / 1e6:.2f} M {budget.count} parameters, outside {budget}",
                file=sys.stderr,
            )
        else:
            names.append(name)
    if not names:
        raise BudgetError(f"no measured candidate is inside the budget {budget}")
    points = [metrics[n] for n in names]
    metric_matrix(points, objective.metrics, where="metrics", labels=names)
    scores = objective.scores(points)
    chosen = min(range(len(names)), key=lambda i: (scores[i], i))
    return [names[i] for i in pareto_front(points, objective.metrics)], names[chosen]
