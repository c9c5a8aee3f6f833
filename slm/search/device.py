"""The search's device mode: the shortlist goes to the board as an `ondevice` bundle, and its results come back.

slm search ... --device-bundle DIR        # screen on the host, export the shortlist into DIR
python -m ondevice.device DIR             # on the board: numpy + onnxruntime only
slm search --ingest DIR/results-....json  # pick from the board's own timings
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ondevice.device.runner import BundleError
from ondevice.io import write_json_atomic
from ondevice.report import LatencyReport
from slm.arch import ArchConfig
from slm.latency import LatencyTable, export_candidates
from slm.latency.table import read_json
from slm.search.pareto import Objective, pareto_front
from slm.search.result import Evaluated, SearchResult, select_from_measurements
from slm.search.sources import metrics_from_table
from slm.search.space import Budget, SearchSpace, shape_name

STATE_NAME = "slm_search.json"
STATE_FORMAT = "slm-device-search"


def _bundle_name(candidate: str) -> str:
    # Bundle entries are file names: "h512-l8-.../decode@256" becomes "h512-l8-....decode256".
    return re.sub(r"[^A-Za-z0-9._-]", "", candidate.replace("/", "."))


def write_search_bundle(
    shortlist: Sequence[Evaluated],
    out_dir: str | os.PathLike,
    *,
    space: SearchSpace,
    budget: Budget,
    objective: Objective,
    screened: Sequence[Evaluated] = (),
    prompt_length: int = 64,
    past_length: int = 256,
    warmup: int = 5,
    repeats: int = 30,
    rounds: int = 5,
    selection: Mapping[str, Any] | None = None,
) -> Path:
    """Export each shortlisted shape's prefill and decode graphs (fp32) into a new bundle at `out_dir`, with
    the search's state beside the manifest so `ingest_search_results` can finish the selection. `selection`
    (say top_k, measure_front and margin: how the shortlist was drawn) goes into the result's settings."""
    from ondevice.bundle import write_bundle

    configs = {shape_name(e.config): e.config for e in shortlist}
    with tempfile.TemporaryDirectory(prefix="slm-device-bundle-") as work:
        candidates = export_candidates(configs, work, prompt_length=prompt_length, past_lengths=(past_length,))
        aliases = {_bundle_name(name): name for name in candidates}
        bundle = write_bundle(
            {alias: candidates[name] for alias, name in aliases.items()},
            out_dir,
            int8=False,
            warmup=warmup,
            repeats=repeats,
            rounds=rounds,
        )
    state = {
        "format": STATE_FORMAT,
        "aliases": aliases,
        "configs": {name: c.to_dict() for name, c in configs.items()},
        "predicted": {shape_name(e.config): e.metrics for e in shortlist},
        "screened": [e.to_dict() for e in screened],
        "space": space.to_dict(),
        "budget": budget.to_dict(),
        "objective": objective.to_dict(),
        "prompt_length": prompt_length,
        "past_length": past_length,
        "selection": dict(selection or {}),
    }
    write_json_atomic(bundle / STATE_NAME, state)
    return bundle


def _read_state(bundle: Path) -> dict[str, Any]:
    path = bundle / STATE_NAME
    if not path.is_file():
        raise BundleError(f"{bundle}: no {STATE_NAME}; was this bundle written by `slm search --device-bundle`?")
    state = read_json(path)
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise BundleError(f"{path}: field 'format' must be {STATE_FORMAT!r}")
    return state


def ingest_search_results(results_path: str | os.PathLike, bundle_dir: str | os.PathLike | None = None) -> SearchResult:
    """Check the board's results against the bundle (`ondevice.bundle.ingest`) and choose from its timings."""
    from ondevice.bundle import ingest

    results_path = Path(results_path)
    bundle = Path(bundle_dir) if bundle_dir is not None else results_path.parent
    state = _read_state(bundle)
    report = ingest(results_path, bundle)
    aliases = state["aliases"]
    report = LatencyReport(
        measurements=[dataclasses.replace(m, model=aliases[m.model]) for m in report.measurements],
        models={aliases[k]: v for k, v in report.models.items()},
        environment=report.environment,
        settings=report.settings,
        source=report.source,
    )
    configs = {name: ArchConfig.from_dict(c, where=f"{bundle / STATE_NAME}") for name, c in state["configs"].items()}
    table = LatencyTable.from_report(report, configs)
    prompt, past = state["prompt_length"], state["past_length"]
    metrics = {name: metrics_from_table(table, name, prompt, past) for name in configs}
    budget, objective = Budget.from_dict(state["budget"]), Objective.from_dict(state["objective"])
    _, chosen_name = select_from_measurements(configs, metrics, budget, objective)
    names = [n for n in configs if budget.contains(configs[n])]
    measured = [Evaluated(configs[n], metrics[n], -1) for n in names]
    return SearchResult(
        screened=[Evaluated.from_dict(e, where=str(bundle / STATE_NAME)) for e in state["screened"]],
        measured=measured,
        front=pareto_front([e.metrics for e in measured], objective.metrics),
        chosen_index=names.index(chosen_name),
        objective=objective,
        budget=budget,
        timings={},
        space=SearchSpace.from_dict(state["space"]),
        settings={
            **state.get("selection", {}),
            "device": report.environment,
            "results": str(results_path),
            "bundle": str(bundle),
        },
    )
