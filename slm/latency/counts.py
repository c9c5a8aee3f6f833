"""Names and exact counts of the calls the latency side times: `CONFIG/KIND@LENGTH` candidate names, the
predictor's features (every one an exact count from the shape) and the analytic memory of one call."""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from slm.arch import ArchConfig

KINDS = ("prefill", "decode")
FEATURES = ("macs", "weight_bytes", "kv_bytes", "lm_head_macs", "attention_macs", "activation_bytes", "num_layers")
BYTES_PER_PARAM = 4  # the graphs are exported and timed in fp32

# Config names become file stems and the part before "/" in a candidate name, so they are kept to safe characters.
_CONFIG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_CANDIDATE = re.compile(r"(?P<config>[^/]+)/(?P<kind>[a-z]+)@(?P<length>[1-9][0-9]*)")


def check_config_name(name: str) -> str:
    if not isinstance(name, str) or not _CONFIG_NAME.fullmatch(name):
        raise ValueError(
            f"config name {name!r}: expected letters, digits and '._+-' (no '/' or '@'), starting with a letter/digit"
        )
    return name


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return kind


def check_length(length: int, what: str = "length") -> int:
    if not isinstance(length, (int, np.integer)) or isinstance(length, bool) or length < 1:
        raise ValueError(f"{what} must be a positive integer, got {length!r}")
    return int(length)


def check_configs(configs: Mapping[str, ArchConfig]) -> None:
    if not isinstance(configs, Mapping) or not configs:
        raise ValueError("configs must be a non-empty mapping of name → ArchConfig")
    for name, config in configs.items():
        check_config_name(name)
        if not isinstance(config, ArchConfig):
            raise TypeError(f"configs[{name!r}] must be an ArchConfig, got {type(config).__name__}")


def candidate_name(config_name: str, kind: str, length: int) -> str:
    """`name/prefill@64` (a prompt of 64 tokens) or `name/decode@256` (one step after 256 cached tokens)."""
    return f"{check_config_name(config_name)}/{check_kind(kind)}@{check_length(length)}"


def parse_candidate(text: str) -> tuple[str, str, int]:
    """The inverse of `candidate_name`: `"name/decode@256"` → `("name", "decode", 256)`."""
    match = _CANDIDATE.fullmatch(text) if isinstance(text, str) else None
    if match is None or match["kind"] not in KINDS or not _CONFIG_NAME.fullmatch(match["config"]):
        raise ValueError(f"candidate name {text!r}: expected 'CONFIG/KIND@LENGTH' (KIND one of {KINDS}, LENGTH > 0)")
    return match["config"], match["kind"], int(match["length"])


# ------------------------------------------------------------------------------------------ exact counts


def _tokens_and_keys(kind: str, length: int) -> tuple[int, int]:
    """Queries computed and keys attended to: a prompt of P sees P keys; a decode step after T sees T + 1."""
    return (length, length) if kind == "prefill" else (1, length + 1)


def features(config: ArchConfig, kind: str, length: int) -> dict[str, float]:
    """The predictor's inputs for one call, every one an exact count from `config`.

    `length` is the prompt length P for prefill, the cached length T for decode. `macs` is the whole call
    (`prefill_macs(P)` / `decode_macs(T)`); `weight_bytes` the fp32 weights every call reads (non-embedding
    + LM head); `kv_bytes` the cache written (prefill, P tokens) or read (decode, T tokens);
    `attention_macs` the scores and weighted values over every key; `activation_bytes` the fp32 residual
    stream and FFN hidden per token and layer, 4·tokens·layers·(hidden + ffn), which prefill pays per token.
    """
    check_kind(kind)
    length = check_length(length)
    tokens, keys = _tokens_and_keys(kind, length)
    macs = config.prefill_macs(length) if kind == "prefill" else config.decode_macs(length)
    return {
        "macs": float(macs),
        "weight_bytes": float(config.num_params_compute * BYTES_PER_PARAM),
        "kv_bytes": float(config.kv_cache_bytes(length)),
        "lm_head_macs": float(config.lm_head_macs(1)),
        "attention_macs": float(config.num_layers * 2 * tokens * keys * config.q_width),
        "activation_bytes": float(
            BYTES_PER_PARAM * tokens * config.num_layers * (config.hidden_size + config.ffn_size)
        ),
        "num_layers": float(config.num_layers),
    }


def memory_bytes(config: ArchConfig, kind: str, length: int) -> int:
    """Analytic peak working set of one call: fp32 weights (all stored parameters) + KV cache + logits.

    This is the memory objective the search uses: exact and device-independent. The cache is the one
    the call leaves (P tokens after prefill, T + 1 after a decode step); a runtime that copies the past
    into a new present holds both for a moment, which this does not count. The measured peak RSS, which
    adds the runtime itself, is reported beside it in `LatencyTable.to_markdown`.
    """
    check_kind(kind)
    length = check_length(length)
    cached = length if kind == "prefill" else length + 1
    if cached > config.context_length:
        raise ValueError(
            f"{kind} at length {length} needs {cached} cached tokens, past context {config.context_length}"
        )
    return config.weight_bytes(BYTES_PER_PARAM, "total") + config.kv_cache_bytes(cached) + config.logits_bytes(1)
