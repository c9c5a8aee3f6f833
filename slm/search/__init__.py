"""Runtime-first shape search: an NSGA-II Pareto search over decoder shapes inside a parameter budget, driven by a
pluggable latency source (predictor, host timing or device results), whose shortlist is then measured for real.

- ``space``: the search space and the parameter budget;
- ``pareto``: the objective, Pareto fronts and NSGA-II ranking;
- ``evolution``: NSGA-II and the screen-then-measure search;
- ``result``: evaluated shapes, the result and its files;
- ``sources``: latency sources (predictor, host timing, a latency table);
- ``device``: the round trip through a board (a bundle out, its results in).
"""

from slm.search.device import ingest_search_results, write_search_bundle
from slm.search.evolution import Evaluator, evolve, run_search, shortlist
from slm.search.pareto import METRICS, Objective, crowding_distance, near_best, nondominated_sort, pareto_front
from slm.search.result import (
    CHOSEN_NAME,
    FRONT_NAME,
    PLOT_NAME,
    RESULT_FORMAT,
    RESULT_VERSION,
    Evaluated,
    SearchResult,
    select_from_measurements,
)
from slm.search.sources import host_measure, metrics_from_table, predictor_screen
from slm.search.space import COUNTS, Budget, Genes, SearchSpace, shape_name

__all__ = [
    "CHOSEN_NAME",
    "COUNTS",
    "FRONT_NAME",
    "METRICS",
    "PLOT_NAME",
    "RESULT_FORMAT",
    "RESULT_VERSION",
    "Budget",
    "Evaluated",
    "Evaluator",
    "Genes",
    "Objective",
    "SearchResult",
    "SearchSpace",
    "crowding_distance",
    "evolve",
    "host_measure",
    "ingest_search_results",
    "metrics_from_table",
    "near_best",
    "nondominated_sort",
    "pareto_front",
    "predictor_screen",
    "run_search",
    "select_from_measurements",
    "shape_name",
    "shortlist",
    "write_search_bundle",
]
