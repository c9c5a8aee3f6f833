"""The search's objective and Pareto ranking: weighted scores over medians, exact fronts, NSGA-II's sort and
crowding distance. Every metric is minimised."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

METRICS = ("decode_ms", "prefill_ms", "memory_bytes")


def metric_matrix(
    points: Sequence[Mapping[str, float]],
    metrics: Sequence[str],
    where: str = "points",
    labels: Sequence[str] | None = None,
) -> np.ndarray:
    """The points' values of `metrics` as an (n, m) array; a missing or non-finite value is an error naming the
    point (by `labels`, else by index) and the metric."""
    if not metrics:
        raise ValueError(f"{where}: no metrics to compare by")
    values = np.empty((len(points), len(metrics)), dtype=np.float64)
    for i, point in enumerate(points):
        label = f"{where}[{labels[i]!r}]" if labels is not None else f"{where}[{i}]"
        for j, metric in enumerate(metrics):
            if metric not in point:
                raise ValueError(f"{label} has no {metric!r}; it has {sorted(point)}")
            value = point[metric]
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"{label}[{metric!r}] must be a finite number, got {value!r}")
            values[i, j] = value
    return values


@dataclass(frozen=True)
class Objective:
    """Non-negative weights over `METRICS`, all minimised.

    The scalarised score of a candidate is Σ weight × value / median(value over the candidates), so metrics in
    different units (ms, bytes) weigh as the weights say. The Pareto front uses every metric with a non-zero weight.
    """

    weights: dict[str, float] = field(default_factory=lambda: {"decode_ms": 1.0, "prefill_ms": 1.0})

    def __post_init__(self) -> None:
        if not isinstance(self.weights, Mapping) or not self.weights:
            raise ValueError(f"Objective.weights must be a non-empty mapping of {METRICS} to weights")
        weights = {}
        for metric, weight in self.weights.items():
            if metric not in METRICS:
                raise ValueError(f"Objective.weights: unknown metric {metric!r}; expected one of {METRICS}")
            if (
                isinstance(weight, bool)
                or not isinstance(weight, (int, float))
                or not weight >= 0
                or weight == math.inf
            ):
                raise ValueError(f"Objective.weights[{metric!r}] must be a finite number >= 0, got {weight!r}")
            weights[metric] = float(weight)
        if not any(weights.values()):
            raise ValueError("Objective.weights: at least one weight must be positive")
        object.__setattr__(self, "weights", weights)

    @classmethod
    def parse(cls, text: str) -> Objective:
        """`"decode_ms=1,prefill_ms=0.5"` (a bare name weighs 1), for the command line."""
        weights: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in str(text).split(","))):
            metric, _, weight = item.partition("=")
            try:
                weights[metric.strip()] = float(weight) if weight else 1.0
            except ValueError:
                raise ValueError(f"objective {text!r}: weight of {metric.strip()!r} must be a number") from None
        return cls(weights)

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metrics with a non-zero weight, in `METRICS` order."""
        return tuple(m for m in METRICS if self.weights.get(m, 0.0) > 0)

    def scores(self, points: Sequence[Mapping[str, float]]) -> list[float]:
        """Each point's scalarised score (lower is better), normalised by the medians over `points`."""
        if not points:
            return []
        values = metric_matrix(points, self.metrics)
        total = np.zeros(len(points))
        for j, metric in enumerate(self.metrics):
            scale = float(np.median(values[:, j]))
            # A zero median (most candidates at 0) would divide by zero; the largest magnitude still removes units.
            if scale <= 0:
                scale = float(np.max(np.abs(values[:, j]))) or 1.0
            total += self.weights[metric] * values[:, j] / scale
        return [float(v) for v in total]

    def describe(self) -> str:
        return " + ".join(f"{self.weights[m]:g}×{m}" for m in self.metrics) + " (each over its median)"

    def to_dict(self) -> dict[str, Any]:
        return {"weights": dict(self.weights)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Objective:
        return cls(dict(data["weights"]))


def _dominated_by(values: np.ndarray, i: int) -> np.ndarray:
    """Which rows point i dominates: no worse in every metric and better in at least one."""
    row = values[i]
    return np.all(row <= values, axis=1) & np.any(row < values, axis=1)


def pareto_front(points: Sequence[Mapping[str, float]], metrics: Sequence[str]) -> list[int]:
    """Indices (ascending) of the points no other point dominates, all metrics minimised.

    Exact: equal points do not dominate each other, so duplicates on the front all stay on it.
    """
    if not points:
        return []
    values = metric_matrix(points, metrics)
    dominated = np.zeros(len(points), dtype=bool)
    # Row by row keeps memory at O(n·m), where an n×n×m broadcast would not fit for large candidate sets.
    for i in range(len(points)):
        dominated |= _dominated_by(values, i)
    return [int(i) for i in np.flatnonzero(~dominated)]


def nondominated_sort(points: Sequence[Mapping[str, float]], metrics: Sequence[str]) -> list[list[int]]:
    """The points' Pareto fronts, best first (NSGA-II's fast non-dominated sort); indices ascending in each."""
    if not points:
        return []
    values = metric_matrix(points, metrics)
    n = len(points)
    dominates = [np.flatnonzero(_dominated_by(values, i)) for i in range(n)]
    dominator_count = np.zeros(n, dtype=np.int64)
    for targets in dominates:
        dominator_count[targets] += 1
    fronts: list[list[int]] = []
    current = [int(i) for i in np.flatnonzero(dominator_count == 0)]
    while current:
        fronts.append(current)
        following = []
        for i in current:
            for j in dominates[i]:
                dominator_count[j] -= 1
                if dominator_count[j] == 0:
                    following.append(int(j))
        current = sorted(following)
    return fronts


def crowding_distance(
    points: Sequence[Mapping[str, float]], metrics: Sequence[str], front: Sequence[int]
) -> list[float]:
    """NSGA-II crowding distance of each point in `front` (in its order); a front's extremes get infinity."""
    if not front:
        return []
    values = metric_matrix([points[i] for i in front], metrics)
    distance = np.zeros(len(front))
    for j in range(values.shape[1]):
        order = np.argsort(values[:, j], kind="stable")
        low, high = values[order[0], j], values[order[-1], j]
        distance[order[0]] = distance[order[-1]] = math.inf
        if high > low:
            distance[order[1:-1]] += (values[order[2:], j] - values[order[:-2], j]) / (high - low)
    return [float(d) for d in distance]


def near_best(scores: Sequence[float], margin: float) -> list[int]:
    """Indices of the scores within `margin` (relative) of the lowest."""
    if not scores:
        return []
    best = min(scores)
    return [i for i, s in enumerate(scores) if s <= best + margin * abs(best)]
