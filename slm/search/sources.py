"""The latency sources a search screens and measures with: a fitted predictor (no timing), timing on this
machine, or a latency table (measured here or on a device)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from slm.arch import ArchConfig
from slm.latency import LatencyPredictor, LatencyTable, measure, memory_bytes
from slm.search.evolution import Evaluator
from slm.search.space import shape_name


def _metrics(config: ArchConfig, decode_ms: float, prefill_ms: float, past_length: int) -> dict[str, float]:
    return {
        "decode_ms": decode_ms,
        "prefill_ms": prefill_ms,
        "memory_bytes": float(memory_bytes(config, "decode", past_length)),
    }


def metrics_from_table(table: LatencyTable, config_name: str, prompt_length: int, past_length: int) -> dict[str, float]:
    """The search's metrics for one config of a latency table (measured on the host or a device)."""
    decode_ms = table.get(config_name, "decode", past_length)
    prefill_ms = table.get(config_name, "prefill", prompt_length)
    return _metrics(table.configs[config_name], decode_ms, prefill_ms, past_length)


def predictor_screen(predictor: LatencyPredictor, prompt_length: int = 64, past_length: int = 256) -> Evaluator:
    """An evaluator from a fitted latency predictor: no timing, milliseconds per thousand shapes."""

    def screen(configs: Sequence[ArchConfig]) -> list[dict[str, float]]:
        decode = [predictor.predict(c, "decode", past_length) for c in configs]
        prefill = [predictor.predict(c, "prefill", prompt_length) for c in configs]
        return [_metrics(*row, past_length) for row in zip(configs, decode, prefill, strict=True)]

    return screen


def host_measure(prompt_length: int = 64, past_length: int = 256, **measure_kwargs: Any) -> Evaluator:
    """An evaluator that exports and times the shapes on this machine (`slm.latency.measure`), side by side."""

    def run(configs: Sequence[ArchConfig]) -> list[dict[str, float]]:
        named = {shape_name(c): c for c in configs}
        table = measure(named, prompt_length=prompt_length, past_lengths=(past_length,), **measure_kwargs)
        return [metrics_from_table(table, name, prompt_length, past_length) for name in named]

    return run
