"""Runtime-first shape search: an NSGA-II Pareto search over decoder shapes inside a parameter budget, driven by a
pluggable latency source (predictor, host timing or device results), whose shortlist is then measured for real."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import numbers
import random
import re
import sys
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ondevice.device.runner import atomic_path, write_json_atomic
from slm.arch import ACTIVATIONS, NORMS, ArchConfig

METRICS = ("decode_ms", "prefill_ms", "memory_bytes")
COUNTS = ("compute", "total")
RESULT_FORMAT = "slm-search"
RESULT_VERSION = 1
FRONT_NAME = "front.json"
PLOT_NAME = "front.png"
CHOSEN_NAME = "chosen.yaml"

Evaluator = Callable[[Sequence[ArchConfig]], list[dict[str, float]]]
# A shape's genes: hidden size, layers, FFN ratio, head dim, query heads per KV head, activation.
Genes = tuple[int, int, float, int, int, str]


def _name(hidden: int, layers: int, ffn: int, heads: int, kv_heads: int, head_dim: int, activation: str) -> str:
    name = f"h{hidden}-l{layers}-f{ffn}-q{heads}kv{kv_heads}-{activation}"
    # The head dim only needs spelling out when it is not hidden / heads, as it always is inside a SearchSpace.
    return name if heads * head_dim == hidden else f"{name}-d{head_dim}"


def shape_name(config: ArchConfig) -> str:
    """A readable name for a shape, e.g. `h512-l16-f1536-q8kv2-relu`."""
    c = config
    return _name(c.hidden_size, c.num_layers, c.ffn_size, c.num_heads, c.num_kv_heads, c.head_dim, c.activation)


# ------------------------------------------------------------------------------------------------- budget


def _parse_count(text: str, where: str) -> int:
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMbBgG]?)\s*", text)
    if not match:
        raise ValueError(f"{where}: {text!r} is not a parameter count; expected e.g. 40e6, 40M or 1.5B")
    scale = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9}[match.group(2).lower()]
    return round(float(match.group(1)) * scale)


@dataclass(frozen=True)
class Budget:
    """Shapes whose parameter count (`count`: compute = non-embedding + LM head, or total) is in [min, max]."""

    min_params: int
    max_params: int
    count: Literal["compute", "total"] = "compute"

    def __post_init__(self) -> None:
        for name in ("min_params", "max_params"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
                raise ValueError(f"Budget.{name} must be a whole number of parameters, got {value!r}")
            if value < 0:
                raise ValueError(f"Budget.{name} must be >= 0, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.min_params > self.max_params:
            raise ValueError(f"Budget.min_params ({self.min_params}) must not exceed max_params ({self.max_params})")
        if self.count not in COUNTS:
            raise ValueError(f"Budget.count must be one of {COUNTS}, got {self.count!r}")

    @classmethod
    def parse(cls, text: str, count: Literal["compute", "total"] = "compute") -> Budget:
        """`"40e6:60e6"` or `"40M:60M"` (suffixes k, M, B) as a budget, for the command line."""
        parts = str(text).split(":")
        if len(parts) != 2:
            raise ValueError(f"budget {text!r} must be MIN:MAX, e.g. 40e6:60e6 or 40M:60M")
        return cls(_parse_count(parts[0], "budget minimum"), _parse_count(parts[1], "budget maximum"), count)

    def params(self, config: ArchConfig) -> int:
        return config.budget_params(self.count)

    def contains(self, config: ArchConfig) -> bool:
        return self.min_params <= self.params(config) <= self.max_params

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Budget:
        unknown = sorted(set(data) - {"min_params", "max_params", "count"})
        if unknown:
            raise ValueError(f"Budget: unknown fields {unknown}; expected min_params, max_params and count")
        return cls(**data)

    def __str__(self) -> str:
        return f"{self.min_params / 1e6:.2f} M..{self.max_params / 1e6:.2f} M {self.count} parameters"


# --------------------------------------------------------------------------------------------- objective


def _metric_matrix(
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
        values = _metric_matrix(points, self.metrics)
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


# ------------------------------------------------------------------------------------------------ Pareto


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
    values = _metric_matrix(points, metrics)
    dominated = np.zeros(len(points), dtype=bool)
    # Row by row keeps memory at O(n·m), where an n×n×m broadcast would not fit for large candidate sets.
    for i in range(len(points)):
        dominated |= _dominated_by(values, i)
    return [int(i) for i in np.flatnonzero(~dominated)]


def nondominated_sort(points: Sequence[Mapping[str, float]], metrics: Sequence[str]) -> list[list[int]]:
    """The points' Pareto fronts, best first (NSGA-II's fast non-dominated sort); indices ascending in each."""
    if not points:
        return []
    values = _metric_matrix(points, metrics)
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
    values = _metric_matrix([points[i] for i in front], metrics)
    distance = np.zeros(len(front))
    for j in range(values.shape[1]):
        order = np.argsort(values[:, j], kind="stable")
        low, high = values[order[0], j], values[order[-1], j]
        distance[order[0]] = distance[order[-1]] = math.inf
        if high > low:
            distance[order[1:-1]] += (values[order[2:], j] - values[order[:-2], j]) / (high - low)
    return [float(d) for d in distance]


# ------------------------------------------------------------------------------------------ search space


def _sorted_unique(values: Iterable[Any], name: str, kind: type) -> tuple:
    values = tuple(values)
    if not values:
        raise ValueError(f"SearchSpace.{name} must not be empty")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real if kind is float else numbers.Integral) or not v > 0:
            raise ValueError(f"SearchSpace.{name} must hold positive {kind.__name__}s, got {v!r}")
    return tuple(sorted({kind(v) for v in values}))


def _neighbour(options: Sequence[Any], current: Any, rng: random.Random) -> Any:
    """The option one step left or right of `current` (the only one there is at either end); needs two options."""
    i = options.index(current)
    steps = [s for s in (-1, 1) if 0 <= i + s < len(options)]
    return options[i + rng.choice(steps)]


@dataclass(frozen=True)
class SearchSpace:
    """Decoder shapes built from six genes; everything else is fixed (the tokenizer's vocabulary, context, ...).

    Attention is parametrised by `head_dims` and `kv_groups`: num_heads = hidden / head_dim (only head dims that
    divide the hidden size are allowed) and num_kv_heads = num_heads / g for g in `kv_groups` dividing num_heads
    (g = 1 is MHA). ffn_size = ratio × hidden rounded to a multiple of `ffn_multiple`.
    """

    hidden_sizes: tuple[int, ...] = tuple(range(256, 1537, 64))
    num_layers: tuple[int, ...] = tuple(range(4, 41))
    ffn_ratios: tuple[float, ...] = (2.0, 2.5, 3.0, 3.5, 4.0)
    head_dims: tuple[int, ...] = (64, 128)
    kv_groups: tuple[int, ...] = (1, 2, 4, 8)
    activations: tuple[str, ...] = ("relu", "silu", "gelu")
    # Fixed fields: vocab_size defaults to slm.data.TextDataModule's; set it to the tokenizer actually used.
    vocab_size: int = 2048
    context_length: int = 2048
    gated_ffn: bool = True
    tie_embeddings: bool = True
    qkv_bias: bool = False
    norm: Literal["rms", "layer"] = "rms"
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    ffn_multiple: int = 64

    def __post_init__(self) -> None:
        def set_(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)  # the dataclass is frozen; normalising happens once, here

        for name in ("hidden_sizes", "num_layers", "head_dims", "kv_groups"):
            set_(name, _sorted_unique(getattr(self, name), name, int))
        set_("ffn_ratios", _sorted_unique(self.ffn_ratios, "ffn_ratios", float))
        activations = tuple(dict.fromkeys(self.activations))
        if not activations or any(a not in ACTIVATIONS for a in activations):
            raise ValueError(f"SearchSpace.activations must be a non-empty subset of {ACTIVATIONS}, got {activations}")
        set_("activations", activations)
        if self.norm not in NORMS:
            raise ValueError(f"SearchSpace.norm must be one of {NORMS}, got {self.norm!r}")
        for name in ("vocab_size", "context_length", "ffn_multiple"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SearchSpace.{name} must be a positive integer, got {value!r}")
        odd = [d for d in self.head_dims if d % 2]
        if odd:
            raise ValueError(f"SearchSpace.head_dims must be even for RoPE, got {odd}")
        options = {}
        for hidden in self.hidden_sizes:
            options[hidden] = [
                (d, g) for d in self.head_dims if hidden % d == 0 for g in self.kv_groups if (hidden // d) % g == 0
            ]
            if not options[hidden]:
                raise ValueError(
                    f"SearchSpace.hidden_sizes: {hidden} has no head dim in head_dims {self.head_dims} dividing it "
                    f"with a kv group in kv_groups {self.kv_groups} dividing the head count"
                )
        # Caches beside the fields (not among them), so equality and hashing stay those of the fields.
        set_("_attention", options)
        set_("_feasible", {})
        set_("_params", {})

    # ----------------------------------------------------------------------------------------- genes

    def ffn_size(self, hidden: int, ratio: float) -> int:
        m = self.ffn_multiple
        return max(m, math.floor(ratio * hidden / m + 0.5) * m)

    def attention_options(self, hidden: int) -> list[tuple[int, int]]:
        """The (head_dim, kv_group) pairs allowed at this hidden size."""
        return list(self._attention[hidden])

    def build(self, genes: Genes) -> ArchConfig:
        hidden, layers, ratio, head_dim, group, activation = genes
        heads, ffn = hidden // head_dim, self.ffn_size(hidden, ratio)
        return ArchConfig(
            vocab_size=self.vocab_size,
            hidden_size=hidden,
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=heads // group,
            head_dim=head_dim,
            ffn_size=ffn,
            activation=activation,
            gated_ffn=self.gated_ffn,
            qkv_bias=self.qkv_bias,
            norm=self.norm,
            tie_embeddings=self.tie_embeddings,
            context_length=self.context_length,
            rope_theta=self.rope_theta,
            norm_eps=self.norm_eps,
            name=_name(hidden, layers, ffn, heads, heads // group, head_dim, activation),
        )

    def genes(self, config: ArchConfig) -> Genes:
        """The genes that build `config`; a ValueError names the first field outside the space."""
        fixed = ("vocab_size", "context_length", "gated_ffn", "tie_embeddings", "qkv_bias", "norm")
        fixed += ("rope_theta", "norm_eps")
        for name in fixed:
            if getattr(config, name) != getattr(self, name):
                raise ValueError(f"{name}={getattr(config, name)!r}, the space fixes {getattr(self, name)!r}")
        checks = (
            ("hidden_size", config.hidden_size, self.hidden_sizes),
            ("num_layers", config.num_layers, self.num_layers),
            ("head_dim", config.head_dim, self.head_dims),
            ("activation", config.activation, self.activations),
        )
        for name, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not one of {allowed}")
        if config.num_heads * config.head_dim != config.hidden_size:
            raise ValueError(
                f"num_heads × head_dim = {config.q_width}, the space needs hidden_size {config.hidden_size}"
            )
        group = config.num_heads // config.num_kv_heads
        if group not in self.kv_groups:
            raise ValueError(f"num_heads / num_kv_heads = {group} is not one of kv_groups {self.kv_groups}")
        ratios = [r for r in self.ffn_ratios if self.ffn_size(config.hidden_size, r) == config.ffn_size]
        if not ratios:
            sizes = sorted({self.ffn_size(config.hidden_size, r) for r in self.ffn_ratios})
            raise ValueError(f"ffn_size={config.ffn_size} is not one of {sizes} at hidden_size {config.hidden_size}")
        return (config.hidden_size, config.num_layers, ratios[0], config.head_dim, group, config.activation)

    def contains(self, config: ArchConfig) -> bool:
        try:
            self.genes(config)
        except ValueError:
            return False
        return True

    def _genes_of(self, config: ArchConfig, what: str) -> Genes:
        try:
            return self.genes(config)
        except ValueError as exc:
            raise ValueError(f"{what} {shape_name(config)} is not in the search space: {exc}") from None

    def _repair_attention(self, hidden: int, head_dim: int, group: int) -> tuple[int, int]:
        """The allowed (head_dim, group) at `hidden` nearest the given one, head dim first (by option index)."""
        d_index, g_index = self.head_dims.index(head_dim), self.kv_groups.index(group)
        return min(
            self._attention[hidden],
            key=lambda o: (abs(self.head_dims.index(o[0]) - d_index), abs(self.kv_groups.index(o[1]) - g_index), o),
        )

    # -------------------------------------------------------------------------------------- operators

    def sample(self, rng: random.Random) -> ArchConfig:
        """A shape drawn uniformly gene by gene (attention uniformly over the pairs allowed at its hidden size)."""
        hidden = rng.choice(self.hidden_sizes)
        head_dim, group = rng.choice(self._attention[hidden])
        genes = (hidden, rng.choice(self.num_layers), rng.choice(self.ffn_ratios), head_dim, group)
        return self.build((*genes, rng.choice(self.activations)))

    def _gene_options(self, gene: str, genes: Genes) -> list[Any]:
        """The values `gene` may take with the other genes as they are (FFN ratios listed once per FFN size)."""
        hidden, _, _, head_dim, _, _ = genes
        if gene == "hidden":
            return list(self.hidden_sizes)
        if gene == "layers":
            return list(self.num_layers)
        if gene == "ffn":
            # One ratio per distinct FFN size, so a move always changes the shape even where two ratios round alike.
            by_size = {self.ffn_size(hidden, r): r for r in reversed(self.ffn_ratios)}
            return [by_size[size] for size in sorted(by_size)]
        if gene == "head_dim":
            return sorted({d for d, _ in self._attention[hidden]})
        if gene == "kv":
            return sorted({g for d, g in self._attention[hidden] if d == head_dim})
        return list(self.activations)

    def mutate(self, config: ArchConfig, rng: random.Random) -> ArchConfig:
        """Move one or two genes to a neighbouring value (another activation); returns `config` only when the
        space has no other shape to move to."""
        genes = list(self._genes_of(config, "mutate: config"))
        position = {"hidden": 0, "layers": 1, "ffn": 2, "head_dim": 3, "kv": 4, "activation": 5}
        changed: set[str] = set()
        for _ in range(rng.choice((1, 2))):
            # Options are re-read after each move: a new hidden size changes which head dims and groups exist.
            movable = [g for g in position if g not in changed and len(self._gene_options(g, tuple(genes))) > 1]
            if not movable:
                break
            gene = rng.choice(movable)
            changed.add(gene)
            options = self._gene_options(gene, tuple(genes))
            i = position[gene]
            if gene == "activation":
                genes[i] = rng.choice([a for a in options if a != genes[i]])
            elif gene == "ffn":
                current = self.ffn_size(genes[0], genes[2])
                sizes = [self.ffn_size(genes[0], r) for r in options]
                genes[i] = options[sizes.index(_neighbour(sizes, current, rng))]
            else:
                genes[i] = _neighbour(options, genes[i], rng)
            if gene in ("hidden", "head_dim"):
                genes[3], genes[4] = self._repair_attention(genes[0], genes[3], genes[4])
        return self.build(tuple(genes))

    def crossover(self, a: ArchConfig, b: ArchConfig, rng: random.Random) -> ArchConfig:
        """Uniform crossover: each gene from either parent; attention (head dim and kv group) travels as a pair
        and is moved to the nearest allowed pair if the child's hidden size rules it out."""
        ga, gb = self._genes_of(a, "crossover: parent a"), self._genes_of(b, "crossover: parent b")
        hidden, layers, ratio, attention, activation = (
            (ga if rng.random() < 0.5 else gb)[part] for part in (0, 1, 2, slice(3, 5), 5)
        )
        head_dim, group = self._repair_attention(hidden, *attention)
        return self.build((hidden, layers, ratio, head_dim, group, activation))

    # ------------------------------------------------------------------------------------------ budget

    def _trunks(self) -> list[Genes]:
        """Every shape at the first layer count and activation, one per distinct FFN size."""
        trunks = []
        for hidden in self.hidden_sizes:
            ratios = {self.ffn_size(hidden, r): r for r in reversed(self.ffn_ratios)}  # first ratio per size wins
            for ratio in sorted(ratios.values()):
                for head_dim, group in self._attention[hidden]:
                    trunks.append((hidden, self.num_layers[0], ratio, head_dim, group, self.activations[0]))
        return trunks

    def _layer_params(self, genes: Genes, count: str) -> tuple[int, int]:
        """(params without any block, params per block) under `count`: the count is linear in the layer count."""
        key = (genes[0], self.ffn_size(genes[0], genes[2]), genes[3], genes[4], count)
        if key not in self._params:
            # Cached because repair and sampling ask for the same few hundred trunks over and over.
            config = self.build(genes)
            per_layer = config.layer_params
            self._params[key] = (config.budget_params(count) - config.num_layers * per_layer, per_layer)
        return self._params[key]

    def params(self, genes: Genes, count: Literal["compute", "total"] = "compute") -> int:
        """The parameter count (under `count`) of the shape these genes build, without building it."""
        base, per_layer = self._layer_params(genes, count)
        return base + genes[1] * per_layer

    def feasible_layers(self, genes: Genes, budget: Budget) -> list[int]:
        """The layer counts in the space that put this shape (its other genes as given) inside the budget."""
        base, per_layer = self._layer_params(genes, budget.count)
        return [n for n in self.num_layers if budget.min_params <= base + n * per_layer <= budget.max_params]

    def param_range(self, count: Literal["compute", "total"] = "compute") -> tuple[int, int]:
        """The fewest and most parameters (under `count`) of any shape in the space."""
        low, high = math.inf, 0
        for trunk in self._trunks():
            base, per_layer = self._layer_params(trunk, count)
            low = min(low, base + self.num_layers[0] * per_layer)
            high = max(high, base + self.num_layers[-1] * per_layer)
        return int(low), int(high)

    def repair(self, config: ArchConfig, budget: Budget, rng: random.Random | None = None) -> ArchConfig | None:
        """`config` moved into the budget by the fewest steps of one gene: layers, FFN size or hidden size
        (attention following the hidden size). Ties go to `rng`'s pick (without one, the first in that gene
        order), so a mutation that left the budget is not always undone; None when no single gene can do it."""
        genes = self._genes_of(config, "repair: config")
        if budget.contains(config):
            return config
        fixes: list[tuple[int, Genes]] = []
        for gene, i in (("layers", 1), ("ffn", 2), ("hidden", 0)):
            options = self._gene_options(gene, genes)
            at = options.index(genes[i])
            for j, value in enumerate(options):
                candidate = list(genes)
                candidate[i] = value
                if gene == "hidden":
                    candidate[3], candidate[4] = self._repair_attention(value, genes[3], genes[4])
                if j != at and budget.min_params <= self.params(tuple(candidate), budget.count) <= budget.max_params:
                    fixes.append((abs(j - at), tuple(candidate)))
        if not fixes:
            return None
        fewest = min(steps for steps, _ in fixes)
        nearest = [candidate for steps, candidate in fixes if steps == fewest]
        return self.build(rng.choice(nearest) if rng is not None else nearest[0])

    def _feasible_trunks(self, budget: Budget) -> list[tuple[Genes, list[int]]]:
        if budget in self._feasible:
            return self._feasible[budget]
        feasible = []
        for trunk in self._trunks():
            layers = self.feasible_layers(trunk, budget)
            if layers:
                feasible.append((trunk, layers))
        if not feasible:
            low, high = self.param_range(budget.count)
            # Inside the reachable range a narrow budget can still fall between two neighbouring shapes.
            hint = "; it falls between the shapes' counts, so widen it" if low <= budget.min_params <= high else ""
            raise ValueError(
                f"budget {budget} is unreachable in this search space: its shapes have {low / 1e6:.2f} M to "
                f"{high / 1e6:.2f} M {budget.count} parameters ({low}..{high}){hint}"
            )
        self._feasible[budget] = feasible
        return feasible

    def draw_feasible(
        self, n: int, budget: Budget, rng: random.Random, *, exclude: Collection[ArchConfig] = (), max_tries: int = 0
    ) -> list[ArchConfig]:
        """Up to n distinct shapes inside the budget and not in `exclude`, uniformly over such shapes; fewer only
        when fewer remain. `max_tries` caps rejected draws (0: 50 × n + 1000)."""
        feasible = self._feasible_trunks(budget)
        excluded = {c for c in exclude if self.contains(c) and budget.contains(c)}
        remaining = sum(len(layers) for _, layers in feasible) * len(self.activations) - len(excluded)
        n = min(n, remaining)
        if n <= 0:
            return []
        if remaining <= 4 * n:
            # Rejection would spend most draws on repeats near the end; listing the few left is cheaper.
            every = [
                self.build((t[0], layers, *t[2:5], a))
                for t, options in feasible
                for layers in options
                for a in self.activations
            ]
            return rng.sample([c for c in every if c not in excluded], n)
        cum_weights = list(itertools.accumulate(len(layers) for _, layers in feasible))
        chosen: dict[ArchConfig, None] = {}
        tries = max_tries or 50 * n + 1000
        while len(chosen) < n:
            if tries == 0:
                raise RuntimeError(f"draw_feasible: found only {len(chosen)} of {n} new shapes in the budget")
            tries -= 1
            trunk, layers = rng.choices(feasible, cum_weights=cum_weights)[0]
            config = self.build((trunk[0], rng.choice(layers), *trunk[2:5], rng.choice(self.activations)))
            if config not in excluded and config not in chosen:
                chosen[config] = None
        return list(chosen)

    def random_feasible(self, n: int, budget: Budget, rng: random.Random, max_tries: int = 0) -> list[ArchConfig]:
        """n distinct shapes inside the budget, uniformly over such shapes; an error when the budget is out of
        the space's reach (naming the range it reaches) or holds fewer than n shapes."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"random_feasible: n must be a positive integer, got {n!r}")
        configs = self.draw_feasible(n, budget, rng, max_tries=max_tries)
        if len(configs) < n:
            raise ValueError(f"budget {budget} holds only {len(configs)} shapes of this search space; asked for {n}")
        return configs

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpace:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"SearchSpace: unknown fields {unknown}; known fields: {sorted(known)}")
        return cls(**data)


# ------------------------------------------------------------------------------------------------ search


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


def _evaluate(
    fn: Callable[[Sequence[ArchConfig]], Sequence[Mapping[str, Any]]],
    configs: Sequence[ArchConfig],
    metrics: Sequence[str],
    what: str,
) -> list[dict[str, float]]:
    """Call an evaluator and check it returned one finite value of each metric per config."""
    results = fn(list(configs))
    if not isinstance(results, Sequence) or len(results) != len(configs):
        got = len(results) if isinstance(results, Sequence) else type(results).__name__
        raise ValueError(f"{what} must return one dict of metrics per config: {len(configs)} configs, got {got}")
    kept = []
    for config, result in zip(configs, results, strict=True):
        if not isinstance(result, Mapping):
            raise ValueError(f"{what}: result for {config.name} must be a dict of metrics, got {result!r}")
        # Extra finite numbers (say an unweighted memory figure) are kept for the record; other fields are not.
        numeric = {
            k: float(v)
            for k, v in result.items()
            if isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
        }
        _metric_matrix([result], metrics, where=what, labels=[config.name])
        kept.append(numeric)
    return kept


def _select(candidates: Sequence[Evaluated], k: int, metrics: Sequence[str]) -> list[Evaluated]:
    """NSGA-II survival: whole fronts best first, the last one cut by crowding distance (widest first)."""
    points = [c.metrics for c in candidates]
    survivors: list[int] = []
    for front in nondominated_sort(points, metrics):
        if len(survivors) + len(front) <= k:
            survivors += front
            continue
        distance = crowding_distance(points, metrics, front)
        ranked = sorted(range(len(front)), key=lambda i: (-distance[i], front[i]))
        survivors += [front[i] for i in ranked[: k - len(survivors)]]
        break
    return [candidates[i] for i in survivors]


def _tournament(parents: Sequence[Evaluated], rank: Mapping[int, tuple], rng: random.Random) -> ArchConfig:
    """Binary tournament: the better of two random parents by (front, crowding), ties to the lower index."""
    return parents[min(rng.sample(range(len(parents)), 2), key=rank.__getitem__)].config


def evolve(
    space: SearchSpace,
    budget: Budget,
    evaluate: Evaluator,
    objective: Objective,
    *,
    population: int = 32,
    generations: int = 20,
    seed: int = 0,
    progress: bool = True,
) -> list[Evaluated]:
    """NSGA-II over the space inside the budget; returns every evaluated shape, in evaluation order.

    `evaluate` gets a batch of configs and returns one dict of metrics each (it must hold the objective's
    metrics). Each generation breeds `population` new shapes (tournament, crossover, mutation; children outside
    the budget get their layer count repaired or are dropped), so no shape is evaluated twice; the search stops
    early once every shape in the budget has been evaluated. Deterministic for a seed and evaluator.
    """
    from tqdm.auto import tqdm

    for name, value, low in (("population", population, 2), ("generations", generations, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"evolve: {name} must be an integer >= {low}, got {value!r}")
    rng = random.Random(seed)
    metrics = objective.metrics
    cache: dict[ArchConfig, Evaluated] = {}

    def run(configs: Sequence[ArchConfig], generation: int) -> list[Evaluated]:
        results = _evaluate(evaluate, configs, metrics, "evaluate")
        for config, result in zip(configs, results, strict=True):
            cache[config] = Evaluated(config, result, generation)
        return [cache[c] for c in configs]

    parents = run(space.random_feasible(population, budget, rng), 0)
    bar = tqdm(range(1, generations + 1), desc="slm search", unit="gen", disable=not progress)
    for generation in bar:
        points = [p.metrics for p in parents]
        rank = {}
        for r, front in enumerate(nondominated_sort(points, metrics)):
            for i, d in zip(front, crowding_distance(points, metrics, front), strict=True):
                rank[i] = (r, -d, i)

        children: dict[ArchConfig, None] = {}
        for _ in range(20 * population):
            if len(children) == population:
                break
            child = _tournament(parents, rank, rng)
            if rng.random() < 0.9:
                child = space.crossover(child, _tournament(parents, rank, rng), rng)
            child = space.mutate(child, rng)
            if not budget.contains(child):
                child = space.repair(child, budget, rng)
            if child is not None and child not in cache and child not in children:
                children[child] = None
        batch = list(children)
        if len(batch) < population:
            # Breeding stalls once the population's neighbourhood is used up; fresh shapes keep the evaluation count.
            batch += space.draw_feasible(population - len(batch), budget, rng, exclude=[*cache, *children])
        if not batch:
            break
        parents = _select(parents + run(batch, generation), population, metrics)
        # Per-metric bests, not a score: scores are relative to medians that shift as the search improves.
        best = {m: f"{min(e.metrics[m] for e in cache.values()):.4g}" for m in metrics}
        bar.set_postfix(evaluated=len(cache), **best)
    bar.close()  # an early stop leaves the loop before tqdm would close the bar itself
    return list(cache.values())


@dataclass
class SearchResult:
    """Screened (predicted) and measured candidates, the measured Pareto front and the chosen shape.

    `front` and `chosen_index` index `measured`; both come from the measured numbers only.
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

    @property
    def chosen(self) -> ArchConfig:
        return self.measured[self.chosen_index].config

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
            "settings": self.settings,
            "space": self.space.to_dict() if self.space is not None else None,
            "measured": measured,
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
        measured blue, the measured front ringed and the chosen shape starred."""
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
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120)
        plt.close(fig)
        return Path(path)

    @classmethod
    def load(cls, out_dir: str | Path) -> SearchResult:
        """Read a result back from the front.json that `save` wrote in `out_dir`."""
        path = Path(out_dir) / FRONT_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no {FRONT_NAME}; is {out_dir} an slm search output folder?")
        data = json.loads(path.read_text())
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
            )
        except KeyError as exc:
            raise ValueError(f"{path}: missing field {exc.args[0]!r}") from None


def shortlist(candidates: Sequence[Evaluated], objective: Objective, k: int) -> list[Evaluated]:
    """The k candidates to measure: the Pareto front by scalarised score, then the rest by score."""
    points = [c.metrics for c in candidates]
    scores = objective.scores(points)
    front = set(pareto_front(points, objective.metrics))
    order = sorted(range(len(candidates)), key=lambda i: (i not in front, scores[i], i))
    return [candidates[i] for i in order[:k]]


def run_search(
    space: SearchSpace,
    budget: Budget,
    objective: Objective,
    *,
    screen: Evaluator,
    measure: Evaluator,
    top_k: int = 8,
    population: int = 32,
    generations: int = 20,
    seed: int = 0,
    progress: bool = True,
) -> SearchResult:
    """Screen shapes with `screen` (a cheap predictor) through `evolve`, measure the top_k with `measure`, and
    take the front and the chosen shape (lowest scalarised score) from the measured numbers alone."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"run_search: top_k must be a positive integer, got {top_k!r}")
    start = time.perf_counter()
    screened = evolve(
        space, budget, screen, objective, population=population, generations=generations, seed=seed, progress=progress
    )
    screened_at = time.perf_counter()
    candidates = shortlist([e for e in screened if budget.contains(e.config)], objective, top_k)
    results = _evaluate(measure, [c.config for c in candidates], objective.metrics, "measure")
    measured = [Evaluated(c.config, r, c.generation) for c, r in zip(candidates, results, strict=True)]
    measured_at = time.perf_counter()
    points = [e.metrics for e in measured]
    scores = objective.scores(points)
    chosen = min(range(len(measured)), key=lambda i: (scores[i], i))
    return SearchResult(
        screened=screened,
        measured=measured,
        front=pareto_front(points, objective.metrics),
        chosen_index=chosen,
        objective=objective,
        budget=budget,
        timings={
            "screen_s": screened_at - start,
            "measure_s": measured_at - screened_at,
            "total_s": measured_at - start,
        },
        space=space,
        settings={"population": population, "generations": generations, "seed": seed, "top_k": top_k},
    )


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
        raise ValueError(f"no measured candidate is inside the budget {budget}")
    points = [metrics[n] for n in names]
    _metric_matrix(points, objective.metrics, where="metrics", labels=names)
    scores = objective.scores(points)
    chosen = min(range(len(names)), key=lambda i: (scores[i], i))
    return [names[i] for i in pareto_front(points, objective.metrics)], names[chosen]


# ------------------------------------------------------------------------------- latency sources


def metrics_from_table(table: Any, config_name: str, prompt_length: int, past_length: int) -> dict[str, float]:
    """The search's metrics for one config of a `slm.latency.LatencyTable` (measured on the host or a device)."""
    from slm.latency import memory_bytes

    config = table.configs[config_name]
    return {
        "decode_ms": table.get(config_name, "decode", past_length),
        "prefill_ms": table.get(config_name, "prefill", prompt_length),
        "memory_bytes": float(memory_bytes(config, "decode", past_length)),
    }


def predictor_screen(predictor: Any, prompt_length: int = 64, past_length: int = 256) -> Evaluator:
    """An evaluator from a fitted `slm.latency.LatencyPredictor`: no timing, milliseconds per thousand shapes."""
    from slm.latency import memory_bytes

    def screen(configs: Sequence[ArchConfig]) -> list[dict[str, float]]:
        return [
            {
                "decode_ms": predictor.predict(c, "decode", past_length),
                "prefill_ms": predictor.predict(c, "prefill", prompt_length),
                "memory_bytes": float(memory_bytes(c, "decode", past_length)),
            }
            for c in configs
        ]

    return screen


def host_measure(prompt_length: int = 64, past_length: int = 256, **measure_kwargs: Any) -> Evaluator:
    """An evaluator that exports and times the shapes on this machine (`slm.latency.measure`), side by side."""
    from slm.latency import measure

    def run(configs: Sequence[ArchConfig]) -> list[dict[str, float]]:
        named = {shape_name(c): c for c in configs}
        table = measure(named, prompt_length=prompt_length, past_lengths=(past_length,), **measure_kwargs)
        return [metrics_from_table(table, name, prompt_length, past_length) for name in named]

    return run
