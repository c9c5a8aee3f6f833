"""Export candidate shapes' prefill and decode graphs and time them side by side (`ondevice.profile`), into a
`LatencyTable`."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ondevice.report import LatencyReport
from slm.arch import ArchConfig
from slm.latency.counts import candidate_name, check_configs, check_length, parse_candidate
from slm.latency.table import LatencyTable, on_common_scale

# How candidate graphs are written: from the config (slm.graphs) or through torch's exporter (slm.export).
GRAPH_BUILDERS = ("fast", "torch")


def _check_lengths(configs: Mapping[str, ArchConfig], prompt_length: int, past_lengths: Sequence[int]) -> None:
    check_length(prompt_length, "prompt_length")
    if isinstance(past_lengths, (int, str)) or not past_lengths:
        raise ValueError(f"past_lengths must be a non-empty sequence of positive integers, got {past_lengths!r}")
    for t in past_lengths:
        check_length(t, "past_lengths entry")
    for name, config in configs.items():
        # The graphs' symbolic axes stop at the context length; say which config is too short.
        if prompt_length > config.context_length or max(past_lengths) + 1 > config.context_length:
            raise ValueError(
                f"config {name!r}: context_length {config.context_length} is too short for prompt_length "
                f"{prompt_length} and past length {max(past_lengths)} (+1 new token)"
            )


def export_candidates(
    configs: Mapping[str, ArchConfig],
    out_dir: str | os.PathLike,
    *,
    prompt_length: int = 64,
    past_lengths: Sequence[int] = (256,),
    graphs: str = "fast",
    verify: bool = False,
    progress: bool = True,
    seed: int = 0,
) -> dict[str, tuple[Path, dict[str, np.ndarray]]]:
    """Write each config's prefill and decode graphs (random weights from `seed`) into `out_dir`.

    `graphs="fast"` (the default) writes them straight from the config (`slm.graphs`: about a second at 50 M
    parameters), the graphs `slm export` ships; `graphs="torch"` traces a random `GPT` through torch's exporter
    (`slm.export.export_prefill`/`export_decode`: minutes at 50 M), checked against torch if `verify`. Both give the
    same computation and the same inputs and outputs; the exporter's decode graphs run ~0.1 ms a layer slower.

    Returns candidate name → (ONNX path, input arrays), the pair form `ondevice.profile.profile` and
    `ondevice.bundle.write_bundle` take. One decode graph serves every past length (its past axis is
    symbolic); only the arrays differ.
    """
    from tqdm.auto import tqdm

    from slm.export import as_arrays, decode_inputs, prefill_inputs
    from slm.graphs import build_graphs, cache_names

    if graphs not in GRAPH_BUILDERS:
        raise ValueError(f"graphs must be one of {GRAPH_BUILDERS}, got {graphs!r}")
    check_configs(configs)
    _check_lengths(configs, prompt_length, past_lengths)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    candidates: dict[str, tuple[Path, dict[str, np.ndarray]]] = {}
    bar = tqdm(configs.items(), desc="writing graphs", unit="config", disable=not progress, leave=False)
    for name, config in bar:
        prefill_path, decode_path = out / f"{name}.prefill.onnx", out / f"{name}.decode.onnx"
        if graphs == "fast":
            build_graphs(config, out, stem=name, seed=seed)
        else:
            from slm.export import export_decode, export_prefill, random_model

            model = random_model(config, seed=seed)
            export_prefill(model, prefill_path, verify=verify)
            export_decode(model, decode_path, verify=verify)
        tokens = prefill_inputs(config, prompt_length, seed=seed)[0].numpy()
        candidates[candidate_name(name, "prefill", prompt_length)] = (prefill_path, {"tokens": tokens})
        input_names = ["token", *cache_names(config.num_layers, "past")]
        for t in past_lengths:
            arrays = as_arrays(decode_inputs(config, t, seed=seed), input_names)
            candidates[candidate_name(name, "decode", t)] = (decode_path, arrays)
    return candidates


def _torch_candidates(
    configs: Mapping[str, ArchConfig], prompt_length: int, past_lengths: Sequence[int], seed: int
) -> dict[str, tuple[Any, tuple[Any, ...]]]:
    from slm.export import DecodeGraph, PrefillGraph, decode_inputs, prefill_inputs, random_model

    candidates: dict[str, tuple[Any, tuple[Any, ...]]] = {}
    for name, config in configs.items():
        model = random_model(config, seed=seed)
        candidates[candidate_name(name, "prefill", prompt_length)] = (
            PrefillGraph(model),
            prefill_inputs(config, prompt_length, seed=seed),
        )
        for t in past_lengths:
            candidates[candidate_name(name, "decode", t)] = (DecodeGraph(model), decode_inputs(config, t, seed=seed))
    return candidates


def timing_groups(
    configs: Mapping[str, ArchConfig], group_size: int | None, anchors: int = 3, past_length: int = 256
) -> tuple[list[str], list[list[str]]]:
    """Split configs into interleaved runs of at most `group_size` shapes: ([], [all]) when they fit in one.

    Otherwise every group holds the same `anchors` shapes, spread evenly by decode MACs at `past_length` (for 3:
    the smallest, the middle and the largest), and the other shapes in their given order fill the rest.
    """
    names = list(configs)
    if group_size is None or len(names) <= group_size:
        return [], [names]
    for what, value, low in (("anchors", anchors, 1), ("group_size", group_size, anchors + 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{what} must be an integer >= {low}, got {value!r}")
    by_macs = sorted(names, key=lambda n: (configs[n].decode_macs(past_length), n))
    picks = list(dict.fromkeys(by_macs[round(j * (len(names) - 1) / max(anchors - 1, 1))] for j in range(anchors)))
    others = [n for n in names if n not in picks]
    step = group_size - len(picks)
    return picks, [picks + others[i : i + step] for i in range(0, len(others), step)]


def measure(
    configs: Mapping[str, ArchConfig],
    *,
    prompt_length: int = 64,
    past_lengths: Sequence[int] = (256,),
    backends: Sequence[str] = ("onnxruntime",),
    threads: int = 2,
    warmup: int = 5,
    repeats: int = 30,
    rounds: int = 5,
    isolate: bool = True,
    workdir: str | os.PathLike | None = None,
    graphs: str = "fast",
    group_size: int | None = None,
    anchors: int = 3,
    replicas: int = 1,
    progress: bool = True,
    seed: int = 0,
) -> LatencyTable:
    """Export every config and time its prefill and decode calls; all ONNX candidates in one interleaved run, or
    in runs of at most `group_size` shapes.

    Interleaving (A B A B round by round) puts every candidate under the same drift, so their ratios hold
    even when the machine's speed wanders. A "torch" backend is timed in a second run over the eager
    PrefillGraph/DecodeGraph modules (same seed, same weights), since an ONNX file cannot run on torch.
    `workdir` keeps the graphs (under `onnx/`); by default they go to a temporary folder. `graphs` says how they
    are written (`export_candidates`).

    Every shape's sessions stay open through a run, so memory grows with the run: 12 shapes at 50 M parameters
    took 6.5 GB. With `group_size`, larger sets are timed in groups that all hold `anchors` shapes
    (`timing_groups`), and each group's times are put on the first group's scale by its anchors
    (`on_common_scale`); the table's settings record the groups and their factors. Ratios inside a group are
    as good as in one run; across groups they carry the anchors' error too (~1–2 %).

    One worker process times a graph with an error of its own that more calls do not remove (±2.3–2.9 % at 50 M
    on this project's machines: `benchmarks/profile_noise.py`). `replicas` > 1 times every run again in fresh
    processes, puts all runs on one scale (`on_common_scale`; without groups, every shape is an anchor) and takes
    each call's median over its replicas: the error shrinks about as 1/√replicas, the time grows as replicas.
    """
    from ondevice.profile import BACKENDS, profile

    check_configs(configs)
    _check_lengths(configs, prompt_length, past_lengths)
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        raise ValueError(f"backends {list(backends)!r}: choose from {BACKENDS}")
    ort_backends = tuple(b for b in backends if b != "torch")
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ValueError(f"replicas must be an integer >= 1, got {replicas!r}")
    anchor_names, groups = timing_groups(configs, group_size, anchors, max(past_lengths))
    if (anchor_names or replicas > 1) and "torch" in backends:
        raise ValueError(
            "group_size and replicas apply to ONNX Runtime runs only; time the torch backend in a measure of its own"
        )
    if replicas > 1 and not anchor_names:
        anchor_names = list(configs)  # one group: every shape carries the scale from replica to replica
    runs = [members for _ in range(replicas) for members in groups]
    settings = dict(
        prompt_length=prompt_length, past_lengths=list(past_lengths), seed=seed, threads=threads, graphs=graphs
    )
    owned = tempfile.TemporaryDirectory(prefix="slm-latency-") if workdir is None else None
    work = Path(owned.name if owned else workdir)
    try:
        reports = []
        timing = dict(threads=threads, warmup=warmup, repeats=repeats, rounds=rounds, progress=progress)
        if ort_backends:
            candidates = export_candidates(
                configs,
                work / "onnx",
                prompt_length=prompt_length,
                past_lengths=past_lengths,
                graphs=graphs,
                progress=progress,
                seed=seed,
            )
            profile_dir = work / "profile"
            profile_dir.mkdir(parents=True, exist_ok=True)
            for members in runs:
                keep = set(members)
                part = {k: v for k, v in candidates.items() if parse_candidate(k)[0] in keep}
                reports.append(profile(part, backends=ort_backends, isolate=isolate, workdir=profile_dir, **timing))
        if "torch" in backends:
            candidates = _torch_candidates(configs, prompt_length, past_lengths, seed)
            reports.append(profile(candidates, backends=("torch",), isolate=isolate, **timing))
    finally:
        if owned is not None:
            owned.cleanup()
    if anchor_names:
        tables = [LatencyTable.from_report(r, {n: configs[n] for n in g}) for r, g in zip(reports, runs, strict=True)]
        table, factors = on_common_scale(tables, anchor_names)
        grouping = {"group_size": group_size, "anchors": anchor_names, "groups": groups, "group_factors": factors}
        grouping["replicas"] = replicas
        table.settings = {**table.settings, **settings, "backends": list(backends), **grouping}
        return table
    merged = LatencyReport(
        measurements=[m for r in reports for m in r.measurements],
        models={k: v for r in reports for k, v in r.models.items()},
        environment=reports[0].environment,
        settings={**reports[0].settings, **settings, "backends": list(backends)},
    )
    return LatencyTable.from_report(merged, configs)
