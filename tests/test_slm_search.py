"""slm.search: Pareto ranking, the search space and its operators, budgets, NSGA-II and the screen-then-measure search,
all against analytic latency functions of the shapes' exact MAC and memory counts (no timing)."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence

import numpy as np
import pytest
import yaml

from slm.arch import ArchConfig
from slm.search import (
    Budget,
    Objective,
    SearchResult,
    SearchSpace,
    crowding_distance,
    evolve,
    near_best,
    nondominated_sort,
    pareto_front,
    run_search,
    select_from_measurements,
    shape_name,
)

SPACE = SearchSpace()
BUDGET = Budget(20_000_000, 40_000_000)


def analytic(configs: Sequence[ArchConfig], layer_cost: float = 0.05) -> list[dict[str, float]]:
    """Deterministic stand-in for a latency source: MAC counts at a fixed rate plus a per-layer overhead."""
    return [
        {
            "decode_ms": c.decode_macs(255) / 1e9 + c.kv_cache_bytes(256) / 1e9 + layer_cost * c.num_layers,
            "prefill_ms": c.prefill_macs(256) / 2e10 + 4 * layer_cost * c.num_layers,
            "memory_bytes": float(c.weight_bytes() + c.kv_cache_bytes(2048)),
        }
        for c in configs
    ]


def dominates(a: dict[str, float], b: dict[str, float], metrics: Sequence[str]) -> bool:
    return all(a[m] <= b[m] for m in metrics) and any(a[m] < b[m] for m in metrics)


def by_hand_scores(points: list[dict[str, float]], weights: dict[str, float]) -> list[float]:
    medians = {m: float(np.median([p[m] for p in points])) for m in weights}
    return [sum(w * p[m] / medians[m] for m, w in weights.items()) for p in points]


# ----------------------------------------------------------------------------------------------- Pareto

POINTS = [
    {"a": 1, "b": 5},  # 0 front
    {"a": 2, "b": 2},  # 1 front
    {"a": 2, "b": 2},  # 2 front: a duplicate of 1, which it does not dominate
    {"a": 5, "b": 1},  # 3 front
    {"a": 2, "b": 3},  # 4 tied with 1 on a, worse on b: second front
    {"a": 3, "b": 3},  # 5 dominated by 4 as well: third front
    {"a": 5, "b": 1},  # 6 front: duplicate of 3
    {"a": 6, "b": 6},  # 7 dominated by everything
]


def test_pareto_front_keeps_duplicates_and_drops_ties_that_lose():
    assert pareto_front(POINTS, ["a", "b"]) == [0, 1, 2, 3, 6]
    assert pareto_front([{"a": 1}, {"a": 1}, {"a": 2}], ["a"]) == [0, 1]
    assert pareto_front(POINTS, ["b"]) == [3, 6]
    assert pareto_front([], ["a"]) == []


def test_nondominated_sort_ranks_and_crowding():
    assert nondominated_sort(POINTS, ["a", "b"]) == [[0, 1, 2, 3, 6], [4], [5], [7]]
    # Interior point 1 spans the full range of both metrics between its neighbours 0 and 3.
    assert crowding_distance(POINTS, ["a", "b"], [0, 1, 3]) == [math.inf, 2.0, math.inf]
    assert crowding_distance(POINTS, ["a", "b"], [7]) == [math.inf]


def test_pareto_errors_name_point_and_metric():
    with pytest.raises(ValueError, match=r"points\[1\] has no 'b'"):
        pareto_front([{"a": 1, "b": 1}, {"a": 2}], ["a", "b"])
    with pytest.raises(ValueError, match=r"points\[0\]\['a'\] must be a finite number"):
        pareto_front([{"a": math.nan}], ["a"])
    with pytest.raises(ValueError, match="no metrics"):
        pareto_front([{"a": 1}], [])


# ------------------------------------------------------------------------------------------ objective


def test_objective_scores_are_weighted_sums_over_medians():
    objective = Objective({"decode_ms": 2.0, "memory_bytes": 1.0, "prefill_ms": 0.0})
    assert objective.metrics == ("decode_ms", "memory_bytes")
    points = [{"decode_ms": 1.0, "memory_bytes": 100.0}, {"decode_ms": 2.0, "memory_bytes": 300.0}]
    points.append({"decode_ms": 4.0, "memory_bytes": 200.0})
    # Medians 2 ms and 200 bytes: 2·1/2 + 100/200 = 1.5, 2·2/2 + 300/200 = 3.5, 2·4/2 + 200/200 = 5.
    assert objective.scores(points) == pytest.approx([1.5, 3.5, 5.0])
    assert Objective.parse("decode_ms=2, memory_bytes").weights == {"decode_ms": 2.0, "memory_bytes": 1.0}


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"latency": 1.0}, "unknown metric 'latency'"),
        ({"decode_ms": -1.0}, r"weights\['decode_ms'\] must be a finite number >= 0"),
        ({"decode_ms": math.nan}, r"weights\['decode_ms'\]"),
        ({"decode_ms": 0.0}, "at least one weight must be positive"),
        ({}, "non-empty mapping"),
    ],
)
def test_objective_rejects_bad_weights(weights, message):
    with pytest.raises(ValueError, match=message):
        Objective(weights)


# --------------------------------------------------------------------------------------------- budget


def test_budget_parse_and_contains():
    assert Budget.parse("40e6:60e6") == Budget(40_000_000, 60_000_000, "compute")
    assert Budget.parse("40M:60M", count="total") == Budget(40_000_000, 60_000_000, "total")
    assert Budget.parse("1.5B:2b") == Budget(1_500_000_000, 2_000_000_000)
    config = ArchConfig.from_name("smollm-135m")
    assert Budget(config.num_params_compute, config.num_params_compute).contains(config)
    assert not Budget(config.num_params_compute + 1, 10**12).contains(config)
    assert Budget(config.num_params, config.num_params, "total").contains(config)
    assert str(Budget.parse("40M:60M")) == "40.00 M..60.00 M compute parameters"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Budget.parse("60e6:40e6"), r"min_params \(60000000\) must not exceed max_params \(40000000\)"),
        (lambda: Budget.parse("40e6"), "must be MIN:MAX"),
        (lambda: Budget.parse("lots:60e6"), "budget minimum: 'lots' is not a parameter count"),
        (lambda: Budget(1, 2, "embedding"), "Budget.count must be one of"),
        (lambda: Budget(1.5, 2), "Budget.min_params must be a whole number"),
        (lambda: Budget(-1, 2), "Budget.min_params must be >= 0"),
    ],
)
def test_budget_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# ------------------------------------------------------------------------------------------ the space


def test_space_operators_stay_in_the_space():
    rng = random.Random(0)
    genes = SPACE.genes
    previous = SPACE.sample(rng)
    for _ in range(300):
        config = SPACE.sample(rng)
        assert SPACE.contains(config)
        assert config.name == shape_name(config)
        assert config.num_heads * config.head_dim == config.hidden_size
        assert config.ffn_size % 64 == 0 and config.gated_ffn and config.tie_embeddings

        child = SPACE.mutate(config, rng)
        assert SPACE.contains(child) and child != config
        moved = [i for i in (0, 1, 2, 5) if genes(child)[i] != genes(config)[i]]
        assert len(moved) <= 2
        if 0 in moved:
            assert abs(child.hidden_size - config.hidden_size) == 64
        if 1 in moved:
            assert abs(child.num_layers - config.num_layers) == 1

        mixed = SPACE.crossover(config, previous, rng)
        assert SPACE.contains(mixed)
        for gene in (0, 1, 2, 5):
            assert genes(mixed)[gene] in (genes(config)[gene], genes(previous)[gene])
        previous = config


def test_shape_names_and_contains():
    config = SPACE.build((512, 16, 3.0, 64, 4, "relu"))
    assert config.name == "h512-l16-f1536-q8kv2-relu"
    assert SPACE.genes(config) == (512, 16, 3.0, 64, 4, "relu")
    assert not SPACE.contains(config.replace(vocab_size=4096))
    assert not SPACE.contains(config.replace(num_layers=41))
    assert not SPACE.contains(config.replace(ffn_size=1000))
    assert not SPACE.contains(ArchConfig.from_name("smollm-135m"))
    with pytest.raises(ValueError, match="mutate: config h576-l30-f1536-q9kv3-silu is not in the search space"):
        SPACE.mutate(ArchConfig.from_name("smollm-135m", vocab_size=2048), random.Random(0))


def test_space_validation_names_the_field():
    with pytest.raises(ValueError, match="hidden_sizes: 96 has no head dim"):
        SearchSpace(hidden_sizes=(96,), head_dims=(64,))
    with pytest.raises(ValueError, match="activations must be a non-empty subset"):
        SearchSpace(activations=("tanh",))
    with pytest.raises(ValueError, match="num_layers must hold positive ints"):
        SearchSpace(num_layers=(0, 4))
    with pytest.raises(ValueError, match=r"head_dims must be even for RoPE, got \[65\]"):
        SearchSpace(head_dims=(64, 65))


@pytest.mark.parametrize("count", ["compute", "total"])
def test_random_feasible_is_distinct_and_inside_the_budget(count):
    # An untied, larger vocabulary makes the two counts differ by the embedding table.
    space = SearchSpace(vocab_size=8192, tie_embeddings=False)
    budget = Budget(30_000_000, 50_000_000, count)
    configs = space.random_feasible(64, budget, random.Random(1))
    assert len(set(configs)) == 64
    assert all(space.contains(c) and budget.contains(c) for c in configs)
    assert all(budget.min_params <= c.budget_params(count) <= budget.max_params for c in configs)
    assert configs == space.random_feasible(64, budget, random.Random(1))


def test_unreachable_budget_names_the_reachable_range():
    low, high = SPACE.param_range("compute")
    assert 0 < low < high
    with pytest.raises(ValueError, match=rf"unreachable.*\({low}\.\.{high}\)"):
        SPACE.random_feasible(4, Budget(high + 1, 2 * high), random.Random(0))
    with pytest.raises(ValueError, match=rf"unreachable.*\({low}\.\.{high}\)"):
        SPACE.random_feasible(4, Budget(0, low - 1), random.Random(0))
    smallest = SPACE.build((256, 4, 2.0, 64, 4, "relu")).num_params_compute  # one KV head
    assert smallest == low
    with pytest.raises(ValueError, match="falls between the shapes' counts, so widen it"):
        SPACE.random_feasible(1, Budget(smallest + 1, smallest + 2), random.Random(0))
    tiny = SearchSpace(hidden_sizes=(256,), num_layers=(4,), ffn_ratios=(2.0,), head_dims=(64,), kv_groups=(1,))
    with pytest.raises(ValueError, match="holds only 3 shapes of this search space; asked for 5"):
        tiny.random_feasible(5, Budget(0, 10**9), random.Random(0))


def test_repair_changes_one_gene_by_the_fewest_steps():
    config = SPACE.build((512, 12, 3.0, 64, 1, "silu"))
    assert config.num_params_compute > BUDGET.max_params
    # One step of layers, FFN size or hidden size each fits; without an rng the layer count, tried first, moves.
    assert SPACE.repair(config, BUDGET).name == "h512-l11-f1536-q8kv8-silu"
    fixes = {SPACE.repair(config, BUDGET, random.Random(seed)).name for seed in range(10)}
    assert fixes == {"h512-l11-f1536-q8kv8-silu", "h512-l12-f1280-q8kv8-silu", "h448-l12-f1344-q7kv7-silu"}
    # 40 layers would need 29 steps down; four steps of hidden size are fewer.
    far = SPACE.repair(SPACE.build((512, 40, 3.0, 64, 1, "silu")), BUDGET)
    assert far.name == "h256-l40-f768-q4kv4-silu" and BUDGET.contains(far)
    assert SPACE.repair(far, BUDGET) is far
    # From the smallest corner no single gene reaches 150 M parameters.
    assert SPACE.repair(SPACE.build((256, 4, 2.0, 64, 1, "relu")), Budget(150_000_000, 200_000_000)) is None


# ---------------------------------------------------------------------------------------------- evolve


class Counting:
    """An evaluator that records every config it is asked about."""

    def __init__(self, fn=analytic) -> None:
        self.fn = fn
        self.seen: list[ArchConfig] = []

    def __call__(self, configs: Sequence[ArchConfig]) -> list[dict[str, float]]:
        self.seen += configs
        return self.fn(configs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evolve_beats_random_sampling_with_equal_evaluations(seed):
    objective = Objective({"decode_ms": 1.0})
    budget = Budget(20_000_000, 120_000_000)  # ~11 k shapes, so 112 random draws rarely land near the best
    evaluate = Counting()
    found = evolve(SPACE, budget, evaluate, objective, population=16, generations=6, seed=seed, progress=False)
    assert len(found) == 16 * 7
    assert len(evaluate.seen) == len(set(evaluate.seen)) == len(found)
    assert all(budget.contains(e.config) and SPACE.contains(e.config) for e in found)
    assert [e.metrics for e in found] == analytic([e.config for e in found])

    randoms = SPACE.random_feasible(len(found), budget, random.Random(seed))
    best_random = min(m["decode_ms"] for m in analytic(randoms))
    best_found = min(e.metrics["decode_ms"] for e in found)
    assert best_found <= best_random
    again = evolve(SPACE, budget, analytic, objective, population=16, generations=6, seed=seed, progress=False)
    assert [e.config for e in again] == [e.config for e in found]


def test_evolve_front_is_non_dominated():
    objective = Objective({"decode_ms": 1.0, "prefill_ms": 1.0})
    found = evolve(SPACE, BUDGET, analytic, objective, population=12, generations=4, seed=3, progress=False)
    points = [e.metrics for e in found]
    front = pareto_front(points, objective.metrics)
    assert front
    for i in front:
        assert not any(dominates(points[j], points[i], objective.metrics) for j in range(len(points)))
    for i in set(range(len(points))) - set(front):
        assert any(dominates(points[j], points[i], objective.metrics) for j in front)
    assert {e.generation for e in found} == set(range(5))


def test_evolve_stops_when_the_space_is_used_up():
    tiny = SearchSpace(
        hidden_sizes=(256,),
        num_layers=(4, 5, 6),
        ffn_ratios=(2.0,),
        head_dims=(64,),
        kv_groups=(1,),
        activations=("relu", "silu"),
    )
    evaluate = Counting()
    found = evolve(tiny, Budget(0, 10**9), evaluate, Objective(), population=2, generations=10, progress=False)
    assert len(found) == len(set(evaluate.seen)) == len(evaluate.seen) == 6


def test_evolve_checks_the_evaluator():
    with pytest.raises(ValueError, match="one dict of metrics per config: 4 configs, got 3"):
        evolve(SPACE, BUDGET, lambda cs: analytic(cs)[:-1], Objective(), population=4, generations=1, progress=False)
    with pytest.raises(ValueError, match=r"evaluate\['h.*'\] has no 'prefill_ms'"):
        evolve(SPACE, BUDGET, lambda cs: [{"decode_ms": 1.0}] * len(cs), Objective(), population=4, progress=False)


# ---------------------------------------------------------------------------------------------- run_search


def screen(configs: Sequence[ArchConfig]) -> list[dict[str, float]]:
    """A biased predictor: per-layer overhead inverted, so it prefers deep shapes a device would not."""
    return [
        {**m, "decode_ms": m["decode_ms"] - 0.05 * c.num_layers + 0.05 * (44 - c.num_layers)}
        for c, m in zip(configs, analytic(configs), strict=True)
    ]


def measure(configs: Sequence[ArchConfig]) -> list[dict[str, float]]:
    return analytic(configs, layer_cost=0.08)


def test_run_search_chooses_by_measured_numbers_and_saves(tmp_path):
    objective = Objective({"decode_ms": 1.0, "prefill_ms": 0.5})
    result = run_search(
        SPACE, BUDGET, objective, screen=screen, measure=measure, top_k=6, measure_front=0, population=12,
        generations=4, progress=False,
    )  # fmt: skip
    assert len(result.screened) == 12 * 5 and len(result.measured) == 6
    measured_configs = [e.config for e in result.measured]
    assert [e.metrics for e in result.measured] == measure(measured_configs)
    # The shortlist is the predicted front first, then the rest, each by predicted score.
    predicted = {e.config: e.metrics for e in result.screened}
    points = list(predicted.values())
    on_front = set(pareto_front(points, objective.metrics))
    predicted_all = by_hand_scores(points, objective.weights)
    order = sorted(range(len(points)), key=lambda i: (i not in on_front, predicted_all[i]))
    assert measured_configs == [result.screened[i].config for i in order[:6]]

    scores = by_hand_scores([e.metrics for e in result.measured], objective.weights)
    assert result.chosen_index == int(np.argmin(scores))
    assert result.chosen == measured_configs[int(np.argmin(scores))]
    predicted_scores = by_hand_scores([predicted[c] for c in measured_configs], objective.weights)
    assert int(np.argmin(predicted_scores)) != result.chosen_index  # the bias matters; the measurement decides
    assert result.front == pareto_front([e.metrics for e in result.measured], objective.metrics)
    assert result.chosen_index in result.front
    assert set(result.timings) == {"screen_s", "measure_s", "confirm_s", "total_s"}

    paths = result.save(tmp_path / "search")
    assert {p.name for p in paths.values()} == {"front.json", "front.png", "chosen.yaml"}
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fit = yaml.safe_load(paths["config"].read_text())
    assert paths["config"].read_text().startswith(f"# chosen by slm search: {result.chosen.name}\n")
    assert fit["model"]["class_path"] == "slm.train.LanguageModel"
    assert ArchConfig.from_dict(fit["model"]["init_args"]["arch"]) == result.chosen
    assert "name" not in fit["model"]["init_args"]["arch"]
    assert fit["data"] == {"class_path": "slm.data.TextDataModule", "init_args": {"vocab_size": SPACE.vocab_size}}

    front = json.loads(paths["front"].read_text())
    assert front["chosen"] == result.chosen.name
    assert [e["on_front"] for e in front["measured"]] == [i in result.front for i in range(6)]
    assert [e["params"]["compute"] for e in front["measured"]] == [c.num_params_compute for c in measured_configs]
    assert [e["predicted"] for e in front["measured"]] == [predicted[c] for c in measured_configs]

    loaded = SearchResult.load(tmp_path / "search")
    assert [(e.config, e.metrics, e.generation) for e in loaded.measured] == [
        (e.config, e.metrics, e.generation) for e in result.measured
    ]
    assert [(e.config, e.metrics) for e in loaded.screened] == [(e.config, e.metrics) for e in result.screened]
    assert (loaded.front, loaded.chosen_index, loaded.chosen) == (result.front, result.chosen_index, result.chosen)
    assert (loaded.objective, loaded.budget, loaded.space) == (objective, BUDGET, SPACE)
    assert loaded.timings == result.timings and loaded.settings == result.settings


def test_run_search_times_the_screened_front_up_to_measure_front_and_counts_what_it_timed(tmp_path):
    objective = Objective({"decode_ms": 1.0, "prefill_ms": 0.5})
    evolution = dict(population=12, generations=4, progress=False)
    screened = evolve(SPACE, BUDGET, screen, objective, **evolution)
    points = [e.metrics for e in screened]
    front = {screened[i].config for i in pareto_front(points, objective.metrics)}
    assert len(front) == 19  # the biased screen's front over 60 shapes: more than top_k, fewer than 30
    for measure_front, timed in ((0, 3), (5, 5), (19, 19), (30, 19)):
        result = run_search(
            SPACE, BUDGET, objective, screen=screen, measure=measure, top_k=3, measure_front=measure_front, margin=0,
            **evolution,
        )  # fmt: skip
        assert [e.config for e in result.screened] == [e.config for e in screened]  # same seed, same screening
        measured = [e.config for e in result.measured]
        assert len(measured) == len(set(measured)) == timed
        # The whole front is timed when it fits; otherwise only front shapes are, best predicted score first.
        assert set(measured) <= front if measure_front <= 19 else set(measured) == front
        assert result.counts == {
            "screened": 60,
            "screened_front": 19,
            "front_measured": timed,
            "near_best": 1,  # at margin 0, the best-scored shape alone
            "near_best_measured": 1,
            "measured": timed,
            "confirmed": 4 if timed > 4 else 0,
            "predicted_only": 60 - timed,
        }
        assert result.settings["measure_front"] == measure_front
    # With a margin, the shapes scored within it of the best are timed too, after the front.
    scores = objective.scores(points)
    near = {screened[i].config for i, s in enumerate(scores) if s <= 1.08 * min(scores)}
    assert len(near) == 10 and len(near - front) == 7  # counted on this screen: 7 of the 10 are off the front
    for measure_front, timed in ((19, 19), (40, 26)):
        result = run_search(
            SPACE, BUDGET, objective, screen=screen, measure=measure, top_k=3, measure_front=measure_front, margin=0.08,
            **evolution,
        )  # fmt: skip
        measured = {e.config for e in result.measured}
        assert measured == front if measure_front == 19 else measured == front | near
        counts = result.counts
        assert (counts["near_best"], counts["near_best_measured"], counts["measured"]) == (10, timed - 16, timed)
        assert result.settings["margin"] == 0.08
    saved = json.loads(result.save(tmp_path / "search")["front"].read_text())
    assert saved["counts"] == result.counts
    assert SearchResult.load(tmp_path / "search").counts == result.counts
    with pytest.raises(ValueError, match="run_search: measure_front must be an integer >= 0, got -1"):
        run_search(SPACE, BUDGET, objective, screen=screen, measure=measure, measure_front=-1, **evolution)
    with pytest.raises(ValueError, match=r"run_search: margin must be a number in \[0, 1\)"):
        run_search(SPACE, BUDGET, objective, screen=screen, measure=measure, margin=1.5, **evolution)
    assert near_best([1.0, 1.05, 1.1, 2.0], 0.08) == [0, 1] and near_best([], 0.5) == []


def test_run_search_confirms_the_best_measured_in_one_run_and_chooses_from_it(tmp_path):
    objective = Objective({"decode_ms": 1.0, "prefill_ms": 0.5})
    calls: list[list[ArchConfig]] = []

    def grouped_then_one_run(configs):
        """The first timing (the shortlist, in groups) flatters the truly second-best shape by half its decode
        time; the confirmation run tells the truth."""
        calls.append(list(configs))
        truth = measure(configs)
        if len(calls) == 1:
            scores = objective.scores(truth)
            flattered = sorted(range(len(truth)), key=scores.__getitem__)[1]
            truth[flattered] = {**truth[flattered], "decode_ms": 0.5 * truth[flattered]["decode_ms"]}
        return truth

    evolution = dict(top_k=8, measure_front=0, population=12, generations=4, progress=False)
    first = run_search(SPACE, BUDGET, objective, screen=screen, measure=grouped_then_one_run, confirm=0, **evolution)
    fooled = first.chosen
    assert len(calls) == 1 and not first.confirmed and first.counts["confirmed"] == 0
    calls.clear()
    result = run_search(SPACE, BUDGET, objective, screen=screen, measure=grouped_then_one_run, confirm=4, **evolution)
    assert len(calls) == 2 and len(calls[0]) == 8
    scores = objective.scores([e.metrics for e in result.measured])
    best4 = [result.measured[i].config for i in sorted(range(8), key=scores.__getitem__)[:4]]
    assert calls[1] == best4 and best4[0] == fooled  # the flattered shape led the first timing
    truth = objective.scores(measure(best4))
    assert result.chosen == best4[min(range(4), key=truth.__getitem__)] != fooled
    assert [e.metrics for e in result.confirmed] == measure(best4)
    assert result.counts["confirmed"] == 4 and result.settings["confirm"] == 4
    result.save(tmp_path / "search")
    loaded = SearchResult.load(tmp_path / "search")
    assert [(e.config, e.metrics) for e in loaded.confirmed] == [(e.config, e.metrics) for e in result.confirmed]
    assert loaded.chosen == result.chosen
    # a confirmation evaluator of its own (say more replicas) times the confirmation, and only it
    calls.clear()
    confirmations: list[list[ArchConfig]] = []
    confirming = run_search(
        SPACE, BUDGET, objective, screen=screen, measure=grouped_then_one_run, confirm=4,
        confirm_measure=lambda configs: confirmations.append(list(configs)) or measure(configs), **evolution,
    )  # fmt: skip
    assert len(calls) == 1 and confirmations == [best4] and confirming.chosen == result.chosen
    with pytest.raises(ValueError, match="run_search: confirm must be an integer >= 0, got -2"):
        run_search(SPACE, BUDGET, objective, screen=screen, measure=measure, confirm=-2, **evolution)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no front\.json"):
        SearchResult.load(tmp_path)
    (tmp_path / "front.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="field 'format' must be 'slm-search'"):
        SearchResult.load(tmp_path)
    (tmp_path / "front.json").write_text('{"format": "slm-search",')
    with pytest.raises(ValueError, match=r"front\.json: not valid JSON"):
        SearchResult.load(tmp_path)


# ------------------------------------------------------------------------------------------- device mode


def test_select_from_measurements_excludes_out_of_budget(capsys):
    rng = random.Random(5)
    inside = SPACE.random_feasible(4, BUDGET, rng)
    outside = SPACE.build((256, 4, 2.0, 64, 1, "relu"))
    assert not BUDGET.contains(outside)
    configs = {c.name: c for c in [*inside, outside]}
    metrics = {c.name: m for c, m in zip(configs.values(), analytic(list(configs.values())), strict=True)}
    objective = Objective({"decode_ms": 1.0, "memory_bytes": 1.0})
    # The small shape outside the budget would win on both metrics if it were allowed.
    assert all(metrics[outside.name]["decode_ms"] < metrics[c.name]["decode_ms"] for c in inside)

    front, chosen = select_from_measurements(configs, metrics, BUDGET, objective)
    scores = by_hand_scores([metrics[c.name] for c in inside], objective.weights)
    assert chosen == inside[int(np.argmin(scores))].name
    expected_front = pareto_front([metrics[c.name] for c in inside], objective.metrics)
    assert front == [inside[i].name for i in expected_front]
    assert f"note: {outside.name} left out" in capsys.readouterr().err

    with pytest.raises(ValueError, match=r"candidates not in configs: \['ghost'\]"):
        select_from_measurements(configs, {**metrics, "ghost": {"decode_ms": 1.0}}, BUDGET, objective)
    with pytest.raises(ValueError, match="no measured candidate is inside the budget"):
        select_from_measurements({outside.name: outside}, {outside.name: metrics[outside.name]}, BUDGET, objective)


def test_chosen_yaml_is_an_slm_fit_config(tmp_path, monkeypatch):
    """The file `slm fit -c` is meant to read: the real CLI parses it into the chosen shape (nothing is trained)."""
    from slm.train import lightning_main

    space = SearchSpace(vocab_size=512, context_length=256)
    budget = Budget.parse("1M:3M")
    result = run_search(
        space,
        budget,
        Objective(),
        screen=analytic,
        measure=measure,
        top_k=3,
        population=6,
        generations=1,
        progress=False,
    )
    paths = result.save(tmp_path / "search")
    monkeypatch.chdir(tmp_path)  # anything the trainer sets up lands here
    cli = lightning_main(["-c", str(paths["config"]), "--trainer.accelerator=cpu"], run=False)
    assert cli.model.arch == result.chosen
    assert cli.datamodule.vocab_size == 512
