"""Running an ISM study: every planned run not yet recorded, one line each in ``OUT/results.jsonl``, then the report.

``OUT/study.json`` records the settings the runs were made with (:func:`rfml.studies.results.open_results`): a call
with other settings is refused unless ``restart``.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ondevice.io import atomic_path
from rfml.studies.ism import runs
from rfml.studies.ism.config import ISMStudyConfig, data_folder, fingerprint, load_base_config
from rfml.studies.ism.plan import plan_runs, run_yaml
from rfml.studies.ism.report import write_ism_report
from rfml.studies.machine import machine_info
from rfml.studies.results import HEADER_NAME, LOG_NAME, ResultsLog, open_results, read_header

RESULTS_FORMAT = "rfml-ism-study"
RESULTS_VERSION = 2  # 1 was one whole results.json, rewritten after every run; 2: study.json + results.jsonl


def load_ism_results(out: str | Path) -> dict[str, Any]:
    """The study in ``out`` as its report reads it: ``{"format", "version", "study", "meta", "runs"}``, where
    ``study`` is the settings' fingerprint and ``runs`` the records by key."""
    out = Path(out)
    header = read_header(out, RESULTS_FORMAT)
    if header is None:
        raise FileNotFoundError(f"{out / HEADER_NAME}: no such file; {out} holds no ISM study")
    return {
        "format": RESULTS_FORMAT,
        "version": header.get("version"),
        "study": header.get("fingerprint", {}),
        "meta": header.get("meta", {}),
        "runs": ResultsLog(out / LOG_NAME).load(),
    }


def _run_line(record: dict[str, Any]) -> str:
    acc = record.get("accuracy")
    acc_text = "n/a" if acc is None else f"{acc:.3f}"
    best = record.get("best_epoch")
    to_best = record.get("seconds_to_best")
    timing = "" if to_best is None else f", {to_best:.1f} s to best epoch {best}/{record.get('epochs')}"
    return f"acc {acc_text} ({record['num_classes']} classes, {record['length']} inputs){timing}"


def run_study(config: ISMStudyConfig, progress: bool = True) -> dict[str, Any]:
    """Run every planned run not yet in ``OUT/results.jsonl``, appending each as it finishes; write the report.

    Returns the study as :func:`load_ism_results` reads it.
    """
    import yaml

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    base = load_base_config(config)
    study = fingerprint(config, base)
    plan = plan_runs(config)
    meta = {
        "machine": machine_info(),
        "data_folder": str(data_folder(config)),
        "config": {k: v for k, v in asdict(config).items() if k != "restart"},
        "plan": [spec.key for spec in plan],
    }
    header = {"version": RESULTS_VERSION, "meta": meta}
    log = open_results(out, RESULTS_FORMAT, study, header, restart=config.restart, discard=["runs"])
    done = log.load()
    todo = [spec for spec in plan if spec.key not in done]
    if progress:
        print(f"ism-study: {len(plan)} runs planned, {len(plan) - len(todo)} done earlier; results in {out}")
    data = runs.ensure_data(config, str(study["split"]), progress) if todo else data_folder(config)
    for i, spec in enumerate(plan, 1):
        if spec.key in done:
            if progress:
                print(f"[{i}/{len(plan)}] {spec.label}: done earlier, {_run_line(done[spec.key])}", flush=True)
            continue
        if progress:
            print(f"[{i}/{len(plan)}] {spec.label} …", flush=True)
        run_dir = (out / "runs" / spec.folder).resolve()
        shutil.rmtree(run_dir, ignore_errors=True)  # a run cut short earlier starts again from scratch
        run_dir.mkdir(parents=True)
        cfg_path = run_dir / "config.yaml"
        with atomic_path(cfg_path) as tmp:
            tmp.write_text(yaml.safe_dump(run_yaml(config, base, spec, data, run_dir), sort_keys=False))
        started = time.perf_counter()
        record = runs.train_run(config, spec, cfg_path, run_dir)
        record["run_dir"] = os.path.relpath(run_dir, out.resolve())
        record["wall_seconds"] = time.perf_counter() - started
        log.append(record)
        if progress:
            print(f"[{i}/{len(plan)}] {spec.label}: {_run_line(record)}", flush=True)
    results = load_ism_results(out)  # the report reads what is on disk, as `rfml ism-study` on a finished study does
    paths = write_ism_report(results, out)
    if progress:
        print(f"report: {paths['report']}")
    return results
