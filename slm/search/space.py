"""The search space (decoder shapes built from six genes, with mutation, crossover and repair) and the parameter
budget its shapes must fit."""

from __future__ import annotations

import dataclasses
import itertools
import math
import numbers
import random
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ondevice.errors import InputError
from slm.arch import ACTIVATIONS, NORMS, ArchConfig

COUNTS = ("compute", "total")

# A shape's genes: hidden size, layers, FFN ratio, head dim, query heads per KV head, activation.
Genes = tuple[int, int, float, int, int, str]


class BudgetError(InputError, ValueError):
    """A parameter budget that is malformed, or that the search space cannot meet; the commands print it as one line."""


def _name(hidden: int, layers: int, ffn: int, heads: int, kv_heads: int, head_dim: int, activation: str) -> str:
    name = f"h{hidden}-l{layers}-f{ffn}-q{heads}kv{kv_heads}-{activation}"
    # The head dim only needs spelling out when it is not hidden / heads, as it always is inside a SearchSpace.
    return name if heads * head_dim == hidden else f"{name}-d{head_dim}"


def shape_name(config: ArchConfig) -> str:
    """A readable name for a shape, e.g. `h512-l16-f1536-q8kv2-relu`."""
    c = config
    return _name(c.hidden_size, c.num_layers, c.ffn_size, c.num_heads, c.num_kv_heads, c.head_dim, c.activation)


# --------------------------------------------------------------------------------------------- budget


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
                raise BudgetError(f"Budget.{name} must be a whole number of parameters, got {value!r}")
            if value < 0:
                raise BudgetError(f"Budget.{name} must be >= 0, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.min_params > self.max_params:
            raise BudgetError(f"Budget.min_params ({self.min_params}) must not exceed max_params ({self.max_params})")
        if self.count not in COUNTS:
            raise BudgetError(f"Budget.count must be one of {COUNTS}, got {self.count!r}")

    @classmethod
    def parse(cls, text: str, count: Literal["compute", "total"] = "compute") -> Budget:
        """`"40e6:60e6"` or `"40M:60M"` (suffixes k, M, B) as a budget, for the command line."""
        parts = str(text).split(":")
        if len(parts) != 2:
            raise BudgetError(f"budget {text!r} must be MIN:MAX, e.g. 40e6:60e6 or 40M:60M")
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
            raise BudgetError(f"Budget: unknown fields {unknown}; expected min_params, max_params and count")
        return cls(**data)

    def __str__(self) -> str:
        return f"{self.min_params / 1e6:.2f} M..{self.max_params / 1e6:.2f} M {self.count} parameters"


# --------------------------------------------------------------------------------------- search space


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
            raise BudgetError(
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
            raise BudgetError(f"budget {budget} holds only {len(configs)} shapes of this search space; asked for {n}")
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
