"""NSGA-II over the search space inside the budget, and the screen-then-measure search built on it: a cheap
latency source screens many shapes, the shortlist is measured, and only the measurements choose."""

from __future__ import annotations

import math
import numbers
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from slm.arch import ArchConfig
from slm.search.pareto import (
    Objective,
    crowding_distance,
    metric_matrix,
    near_best,
    nondominated_sort,
    pareto_front,
)
from slm.search.result import Evaluated, SearchResult
from slm.search.space import Budget, SearchSpace

# A latency source: a batch of shapes in, one dict of metrics per shape out.
Evaluator = Callable[[Sequence[ArchConfig]], list[dict[str, float]]]


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
        metric_matrix([result], metrics, where=what, labels=[config.name])
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


def _check_counts(where: str, **minimums: tuple[Any, int]) -> None:
    """Each keyword is (value, least allowed): an integer, not a bool, at least that."""
    for name, (value, low) in minimums.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{where}: {name} must be an integer >= {low}, got {value!r}")


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

    _check_counts("evolve", population=(population, 2), generations=(generations, 0))
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


def shortlist(
    candidates: Sequence[Evaluated],
    objective: Objective,
    k: int,
    *,
    measure_front: int = 0,
    margin: float = 0.0,
) -> list[Evaluated]:
    """The candidates to measure: the Pareto front, then the shapes whose scalarised score is within `margin`
    (relative) of the best, then the rest, each part by score.

    At least `k` are taken, and more when the front and the near-best shapes are more: all of them up to
    `measure_front`, so that a cheap measurement times every shape the predictor cannot tell from the best
    (set `margin` to about twice its error) rather than trusting it.
    """
    _check_counts("shortlist", k=(k, 1), measure_front=(measure_front, 0))
    _check_margin("shortlist", margin)
    points = [c.metrics for c in candidates]
    scores = objective.scores(points)
    front = set(pareto_front(points, objective.metrics))
    near = set(near_best(scores, margin))
    order = sorted(range(len(candidates)), key=lambda i: (i not in front, i not in near, scores[i], i))
    return [candidates[i] for i in order[: max(k, min(len(front | near), measure_front))]]


def _check_margin(where: str, margin: float) -> None:
    if isinstance(margin, bool) or not isinstance(margin, numbers.Real) or not 0 <= margin < 1:
        raise ValueError(f"{where}: margin must be a number in [0, 1) (0.08 is 8 % of the best score), got {margin!r}")


def run_search(
    space: SearchSpace,
    budget: Budget,
    objective: Objective,
    *,
    screen: Evaluator,
    measure: Evaluator,
    top_k: int = 8,
    measure_front: int = 16,
    margin: float = 0.08,
    confirm: int = 4,
    confirm_measure: Evaluator | None = None,
    population: int = 32,
    generations: int = 20,
    seed: int = 0,
    progress: bool = True,
) -> SearchResult:
    """Screen shapes with `screen` (a cheap predictor) through `evolve`, measure the shortlist with `measure`
    (the screened front and the shapes scored within `margin` of the best, up to `measure_front` shapes, and at
    least `top_k`: `shortlist`), and take the front from the measured numbers alone.

    The chosen shape is the lowest scalarised score. When more than `confirm` shapes were measured (in groups, or
    one long run), the `confirm` best are measured again together, and the choice comes from that one run: near
    the best, shapes sit within the measurement's noise of each other, and one run of a few shapes is the
    sharpest comparison there is. `confirm_measure` times the confirmation (default: `measure`), say with
    more replicas (`host_measure(replicas=3)`). `confirm=0` or 1 chooses from the first measurement.
    `SearchResult.counts` says how many shapes were timed and how many only predicted.
    """
    _check_counts("run_search", top_k=(top_k, 1), measure_front=(measure_front, 0))
    _check_margin("run_search", margin)
    _check_counts("run_search", confirm=(confirm, 0))
    start = time.perf_counter()
    screened = evolve(
        space, budget, screen, objective, population=population, generations=generations, seed=seed, progress=progress
    )
    screened_at = time.perf_counter()
    inside = [e for e in screened if budget.contains(e.config)]
    candidates = shortlist(inside, objective, top_k, measure_front=measure_front, margin=margin)
    results = _evaluate(measure, [c.config for c in candidates], objective.metrics, "measure")
    measured = [Evaluated(c.config, r, c.generation) for c, r in zip(candidates, results, strict=True)]
    measured_at = time.perf_counter()
    points = [e.metrics for e in measured]
    scores = objective.scores(points)
    chosen = min(range(len(measured)), key=lambda i: (scores[i], i))
    confirmed: list[Evaluated] = []
    if confirm > 1 and len(measured) > confirm:
        best = sorted(range(len(measured)), key=lambda i: (scores[i], i))[:confirm]
        configs = [measured[i].config for i in best]
        again = _evaluate(confirm_measure or measure, configs, objective.metrics, "confirm_measure")
        confirmed = [Evaluated(measured[i].config, r, measured[i].generation) for i, r in zip(best, again, strict=True)]
        final = objective.scores([e.metrics for e in confirmed])
        chosen = best[min(range(len(best)), key=lambda j: (final[j], j))]
    confirmed_at = time.perf_counter()
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
            "confirm_s": confirmed_at - measured_at,
            "total_s": confirmed_at - start,
        },
        space=space,
        settings={
            "population": population,
            "generations": generations,
            "seed": seed,
            "top_k": top_k,
            "measure_front": measure_front,
            "margin": margin,
            "confirm": confirm,
        },
        confirmed=confirmed,
    )
