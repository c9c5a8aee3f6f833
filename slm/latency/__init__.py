"""Runtime-first search's latency side: export and profile candidate shapes, tabulate them, and fit an
inspectable latency predictor (non-negative linear in exact counts) to pick shapes without timing each one.

- ``counts``: candidate names, the predictor's exact-count features, the analytic memory of a call;
- ``measurement``: export the graphs and time them side by side;
- ``table``: the measured table (from a profile report, to and from JSON, as Markdown);
- ``predictor``: the fitted laws and their evaluation on held-out shapes.
"""

from slm.latency.counts import BYTES_PER_PARAM, FEATURES, KINDS, candidate_name, features, memory_bytes, parse_candidate
from slm.latency.measurement import export_candidates, measure, timing_groups
from slm.latency.predictor import PREDICTOR_FORMAT, LatencyLaw, LatencyPredictor, evaluate, plot_predictions
from slm.latency.table import FORMAT_VERSION, TABLE_FORMAT, LatencyRecord, LatencyTable, on_common_scale

__all__ = [
    "BYTES_PER_PARAM",
    "FEATURES",
    "FORMAT_VERSION",
    "KINDS",
    "PREDICTOR_FORMAT",
    "TABLE_FORMAT",
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
    "on_common_scale",
    "parse_candidate",
    "plot_predictions",
    "timing_groups",
]
