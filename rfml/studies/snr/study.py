"""The experiments of ``rfml snr-study`` over one resumable store of trainings.

Wang, Ju, Zhang, Ramjee, El Gamal, "Efficient Training of Deep Classifiers for Wireless Source Identification using
Test SNR Estimates" (IEEE WCL 2020, arXiv 1912.11896).

- :func:`single`: one model per SNR of the data, trained on that SNR only, against one model on all SNRs.
- :func:`offset`: the model trained at (target + k) dB, tested at the target (k in ``offsets``).
- :func:`boost`: SNR Boosting, greedy forward selection of training SNRs per target.
- :func:`bag`: SNR Bagging, a majority vote of models trained on draws from the target ± ``spread_db``.
- :func:`router`: SNR-routed inference (``rfml.studies.snr.router``) with estimated against oracle SNRs.

Every training is a spec (``rfml.studies.snr.runs``) named by its hash. :class:`Study` runs the missing ones on an
executor (a local process pool, or Ray) and appends one JSON line per finished training to ``OUT/results.jsonl``
(:mod:`rfml.studies.results`); a study that is stopped resumes where it stopped, and a training two experiments share
is run once. Each experiment writes its summary to ``OUT/<experiment>.json``;
:func:`rfml.studies.snr.report.write_snr_report` turns them into tables and figures.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from ondevice.io import write_json_atomic
from rfml.studies.results import open_results
from rfml.studies.snr.config import EXPERIMENTS, SNRStudyConfig
from rfml.studies.snr.runs import (
    decode_labels,
    estimator_spec,
    execute,
    holdout_rows,
    rows_at,
    spec_key,
    study_data,
    train_spec,
)

STUDY_FORMAT = "rfml-snr-study"


class Study:
    """The trainings of one study: runs the missing ones on ``executor`` and records them in ``OUT/results.jsonl``.

    Args:
        config: the study's settings.
        out: the study folder (``study.json``, ``results.jsonl``, ``models/``, summaries, report).
        executor: what runs the trainings (``rfml.studies.executor``); default: in this process.
        restart: forget the recorded trainings when the settings they depend on changed (otherwise refused).
        progress: show a progress bar over each batch of trainings.
    """

    def __init__(
        self,
        config: SNRStudyConfig,
        out: str | Path,
        executor: Any = None,
        restart: bool = False,
        progress: bool = True,
    ) -> None:
        from rfml.studies.executor import LocalExecutor

        self.config = config
        self.out = Path(out)
        self.executor = executor if executor is not None else LocalExecutor(workers=0)
        self.progress = progress
        self.log = open_results(
            self.out, STUDY_FORMAT, config.fingerprint(), {"config": config.to_dict()}, restart, discard=["models"]
        )
        self.records: dict[str, dict[str, Any]] = self.log.load()

    # -- the data's facts ---------------------------------------------------------------------------

    @property
    def module(self) -> Any:
        return study_data(self.config.data)

    @property
    def grid(self) -> list[int]:
        """The SNRs of the data, ascending."""
        return sorted(int(s) for s in torch.unique(self.module.data.snr[self.module.rows["train"]]))

    @property
    def targets(self) -> list[int]:
        grid = self.grid
        if self.config.targets is None:
            return grid
        missing = [t for t in self.config.targets if t not in grid]
        if missing:
            raise ValueError(f"targets {missing} are not SNRs of the data {grid}")
        return sorted(self.config.targets)

    def test_labels(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels and SNRs of the test split, in the order of every record's ``pred``."""
        rows = self.module.rows["test"]
        return self.module.data.y[rows], self.module.data.snr[rows]

    # -- running ------------------------------------------------------------------------------------

    def run(self, specs: Iterable[dict[str, Any]], what: str = "trainings") -> list[dict[str, Any]]:
        """The records of ``specs`` (in order), training those not recorded yet."""
        specs = list(specs)
        todo: dict[str, dict[str, Any]] = {}
        for spec in specs:
            key = spec_key(spec)
            if key not in self.records and key not in todo:
                todo[key] = spec
        if todo:
            tasks = [
                {"spec": spec, "config": self.config.to_dict(), "models_dir": str(self.out / "models")}
                for spec in todo.values()
            ]
            bar = None
            if self.progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=len(tasks), desc=what, unit="run", leave=False)
            for _, record in self.executor.map_unordered(execute, tasks):
                self.log.append(record)
                self.records[record["key"]] = record
                if bar is not None:
                    bar.update(1)
            if bar is not None:
                bar.close()
        return [self.records[spec_key(spec)] for spec in specs]

    def save(self, name: str, summary: dict[str, Any]) -> dict[str, Any]:
        write_json_atomic(self.out / f"{name}.json", summary)
        return summary

    def model_path(self, record: dict[str, Any]) -> Path:
        return self.out / "models" / f"{record['key']}.pt"


def _acc(record: dict[str, Any], snr: int) -> float:
    return record["test_accuracy"][str(snr)]


def _timing(record: dict[str, Any]) -> dict[str, Any]:
    return {
        k: record[k]
        for k in ("train_examples", "epochs", "best_epoch", "median_epoch_seconds", "seconds_to_best", "train_seconds")
    }


def single_specs(study: Study) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
    """One single-SNR spec per SNR of the data (validated at that SNR), and the all-SNR spec."""
    seed = study.config.seed
    return {s: train_spec([s], seed) for s in study.grid}, train_spec(study.grid, seed)


def single(study: Study) -> dict[str, Any]:
    """Single-SNR training against all-SNR training: accuracy at each SNR, time per model and in total."""
    singles, every = single_specs(study)
    records = study.run([*singles.values(), every], "single-SNR trainings")
    by_snr = dict(zip(singles, records[:-1], strict=True))
    all_snr = records[-1]
    rows = [
        {"snr": s, "single": _acc(r, s), "all": _acc(all_snr, s), "single_timing": _timing(r)}
        for s, r in by_snr.items()
    ]
    mean_single = statistics.fmean(r["train_seconds"] for r in by_snr.values())
    mean_single_best = statistics.fmean(r["seconds_to_best"] for r in by_snr.values())
    summary = {
        "rows": rows,
        "all_timing": _timing(all_snr),
        "mean_accuracy": {
            "single": statistics.fmean(r["single"] for r in rows),
            "all": statistics.fmean(r["all"] for r in rows),
        },
        "single_train_seconds_mean": mean_single,
        "single_seconds_to_best_mean": mean_single_best,
        "speedup_per_model": all_snr["train_seconds"] / mean_single,
        "speedup_to_best_per_model": all_snr["seconds_to_best"] / mean_single_best,
        "epoch_time_ratio": all_snr["median_epoch_seconds"]
        / statistics.fmean(r["median_epoch_seconds"] for r in by_snr.values()),
        "total_single_seconds": sum(r["train_seconds"] for r in by_snr.values()),
        "total_cost_ratio": sum(r["train_seconds"] for r in by_snr.values()) / all_snr["train_seconds"],
        "machine": all_snr["machine"],
    }
    return study.save("single", summary)


def offset(study: Study) -> dict[str, Any]:
    """Accuracy at each target when the model was trained at target + k dB (the single-SNR models)."""
    grid = study.grid
    singles, _ = single_specs(study)
    wanted = sorted({t + k for t in study.targets for k in study.config.offsets if t + k in grid})
    records = dict(zip(wanted, study.run([singles[s] for s in wanted], "offset trainings"), strict=True))
    table = {
        str(t): {str(k): (_acc(records[t + k], t) if t + k in records else None) for k in study.config.offsets}
        for t in study.targets
    }
    return study.save("offset", {"offsets": study.config.offsets, "accuracy": table})


def _boost_spec(study: Study, target: int, chosen: list[int]) -> dict[str, Any]:
    return train_spec(chosen, study.config.seed, val="holdout", holdout=target)


def boost(study: Study) -> dict[str, Any]:
    """SNR Boosting for every target, the targets' rounds run side by side.

    Per target: hold out ``boost.holdout`` of the training data at the target; start with no SNR chosen; each round
    trains a fresh model on (chosen ∪ {c}) for every remaining candidate c and scores it on the hold-out; the best
    candidate is added if it gains more than ``boost.min_gain`` over the last score (the first round always adds
    one); then the final model is trained on the chosen SNRs with the hold-out returned, validated at the target.
    """
    cfg, grid = study.config.boost, study.grid
    state: dict[int, dict[str, Any]] = {
        t: {"chosen": [], "score": 0.0, "rounds": [], "done": False, "keys": []} for t in study.targets
    }

    def candidates(t: int) -> list[int]:
        pool = [s for s in grid if s not in state[t]["chosen"]]
        return [s for s in pool if cfg.window_db is None or abs(s - t) <= cfg.window_db]

    while True:
        wave: dict[int, dict[int, dict[str, Any]]] = {}
        for t, st in state.items():
            if st["done"]:
                continue
            if not candidates(t) or (cfg.max_rounds is not None and len(st["chosen"]) >= cfg.max_rounds):
                st["done"] = True
                continue
            wave[t] = {c: _boost_spec(study, t, [*st["chosen"], c]) for c in candidates(t)}
        if not wave:
            break
        flat = [spec for per in wave.values() for spec in per.values()]
        study.run(flat, f"boosting round {max(len(state[t]['rounds']) for t in wave) + 1}")
        for t, per in wave.items():
            st = state[t]
            scores = {c: study.records[spec_key(spec)]["val_acc_best"] for c, spec in per.items()}
            st["keys"].extend(spec_key(spec) for spec in per.values())
            # best score; on a tie the candidate nearest the target, then the higher SNR (optimism hurts less)
            best = max(scores, key=lambda c: (scores[c], -abs(c - t), c))
            gain = scores[best] - st["score"]
            added = not st["chosen"] or gain > cfg.min_gain
            st["rounds"].append(
                {"scores": {str(c): v for c, v in scores.items()}, "best": best, "gain": gain, "added": added}
            )
            if added:
                st["chosen"].append(best)
                st["score"] = scores[best]
            else:
                st["done"] = True
    finals = {t: train_spec(st["chosen"], study.config.seed, val_snrs=[t]) for t, st in state.items()}
    records = dict(zip(finals, study.run(finals.values(), "boosting final trainings"), strict=True))
    singles, every = single_specs(study)
    base = dict(zip([*singles, "all"], study.run([*singles.values(), every], "single-SNR trainings"), strict=True))
    rows = []
    for t, st in state.items():
        spent = [study.records[k]["train_seconds"] for k in st["keys"]] + [records[t]["train_seconds"]]
        rows.append(
            {
                "target": t,
                "chosen": sorted(st["chosen"]),
                "order": st["chosen"],
                "rounds": st["rounds"],
                "boost": _acc(records[t], t),
                "single": _acc(base[t], t),
                "all": _acc(base["all"], t),
                "trainings": len(spent),
                "compute_seconds": sum(spent),
                "final_key": records[t]["key"],
            }
        )
    return study.save(
        "boost",
        {
            "rows": rows,
            "holdout": cfg.holdout,
            "min_gain": cfg.min_gain,
            "window_db": cfg.window_db,
            "all_train_seconds": base["all"]["train_seconds"],
        },
    )


def majority_vote(predictions: torch.Tensor) -> torch.Tensor:
    """Per column, the label most models predict ``[M, N] -> [N]``; a tie goes to the first model's label among
    the most voted (so with three models and three different votes, the first model decides)."""
    counts = torch.nn.functional.one_hot(predictions, int(predictions.max()) + 1).sum(0)  # [N, C]
    top = counts.max(-1, keepdim=True).values
    tied = counts.gather(-1, predictions.T) == top.expand(-1, predictions.shape[0])  # [N, M]: model m's label is top
    first = tied.float().argmax(-1)
    return predictions.T.gather(-1, first[:, None]).squeeze(-1)


def bag(study: Study) -> dict[str, Any]:
    """SNR Bagging against single-SNR training at equal training-set size, per target and size."""
    cfg, grid, seed = study.config.bag, study.grid, study.config.seed
    y, snr = study.test_labels()
    rows, specs = [], []
    plan = []
    for t in study.targets:
        per_snr = rows_at(study.module, "train", [t]).numel()
        near = [s for s in grid if abs(s - t) <= cfg.spread_db]
        for fraction in cfg.fractions:
            size = max(1, round(fraction * per_snr))
            bags = [train_spec(near, seed, val_snrs=[t], size=size, draw=d) for d in range(cfg.models)]
            alone = train_spec([t], seed, val_snrs=[t], size=size, draw=0)
            plan.append((t, fraction, size, bags, alone))
            specs.extend([*bags, alone])
    study.run(specs, "bagging trainings")
    for t, fraction, size, bags, alone in plan:
        at = snr == t
        votes = torch.stack([decode_labels(study.records[spec_key(b)]["pred"])[at] for b in bags])
        voted = majority_vote(votes)
        rows.append(
            {
                "target": t,
                "fraction": fraction,
                "size": size,
                "bag": float((voted == y[at]).float().mean()),
                "bag_members": [_acc(study.records[spec_key(b)], t) for b in bags],
                "single": _acc(study.records[spec_key(alone)], t),
                "bag_seconds": sum(study.records[spec_key(b)]["train_seconds"] for b in bags),
                "single_seconds": study.records[spec_key(alone)]["train_seconds"],
            }
        )
    return study.save("bag", {"rows": rows, "models": cfg.models, "spread_db": cfg.spread_db})


def router(study: Study) -> dict[str, Any]:
    """SNR-routed inference end to end: estimator accuracy, and routed accuracy with estimated, biased-estimate and
    oracle SNRs, against the all-SNR model (experts: the single-SNR models; and with Boosting models at the targets
    when ``boost`` has run)."""
    from rfml.studies.snr.router import evaluate_router

    singles, every = single_specs(study)
    records = study.run([*singles.values(), every, estimator_spec(study.config.seed)], "router trainings")
    boost_summary = study.out / "boost.json"
    boosted = {}
    if boost_summary.exists():
        for row in json.loads(boost_summary.read_text())["rows"]:
            boosted[row["target"]] = study.records[row["final_key"]]
    summary = evaluate_router(
        study,
        experts=dict(zip(singles, records[: len(singles)], strict=True)),
        all_snr=records[len(singles)],
        estimator=records[-1],
        boosted=boosted,
    )
    return study.save("router", summary)


RUNNERS = {"single": single, "offset": offset, "boost": boost, "bag": bag, "router": router}


def run_experiments(study: Study, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Run the named experiments in the order of :data:`EXPERIMENTS` (``all`` runs every one)."""
    names = list(names)
    if "all" in names:
        names = list(EXPERIMENTS)
    unknown = [n for n in names if n not in RUNNERS]
    if unknown:
        raise ValueError(f"unknown experiment(s) {unknown}; choose from {[*EXPERIMENTS, 'all']}")
    return {name: RUNNERS[name](study) for name in EXPERIMENTS if name in names}


__all__ = [
    "EXPERIMENTS",
    "Study",
    "bag",
    "boost",
    "holdout_rows",
    "majority_vote",
    "offset",
    "router",
    "run_experiments",
    "single",
]
