"""Shapes of decoder-only language models, with their exact parameter, MAC and memory counts.

Torch-free on purpose: the search, the latency predictor and device-side scripts read configs where
torch may be absent. The counts match `slm.model.GPT` (and Hugging Face Llama/Qwen2 for the same shape).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ACTIVATIONS = ("relu", "silu", "gelu")
NORMS = ("rms", "layer")


@dataclass(frozen=True)
class ArchConfig:
    """The shape of a pre-norm decoder-only transformer with RoPE, GQA and a (gated) FFN.

    Counts are for batch 1 unless a method takes `batch_size`. MACs count every matrix multiply (the
    projections, attention scores and values over every key, and the LM head) and nothing else: norms,
    RoPE, softmax and activations are elementwise and small beside them.
    """

    vocab_size: int = 49152
    hidden_size: int = 576
    num_layers: int = 30
    num_heads: int = 9
    num_kv_heads: int | None = None
    head_dim: int | None = None
    ffn_size: int = 1536
    activation: Literal["relu", "silu", "gelu"] = "silu"
    gated_ffn: bool = True
    qkv_bias: bool = False
    norm: Literal["rms", "layer"] = "rms"
    tie_embeddings: bool = True
    context_length: int = 2048
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        # Derived defaults are filled in here, LitGPT style, so every instance carries concrete values.
        if self.num_kv_heads is None:
            object.__setattr__(self, "num_kv_heads", self.num_heads)
        if self.head_dim is None:
            if self.num_heads > 0 and self.hidden_size % self.num_heads:
                raise ValueError(
                    f"ArchConfig: hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}; "
                    "give head_dim explicitly"
                )
            object.__setattr__(self, "head_dim", self.hidden_size // max(self.num_heads, 1))
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "ffn_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ArchConfig.{name} must be a positive integer, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"ArchConfig.num_kv_heads ({self.num_kv_heads}) must divide num_heads ({self.num_heads}) for GQA"
            )
        if self.head_dim % 2:
            raise ValueError(f"ArchConfig.head_dim must be even for RoPE, got {self.head_dim}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"ArchConfig.activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.norm not in NORMS:
            raise ValueError(f"ArchConfig.norm must be one of {NORMS}, got {self.norm!r}")
        if self.context_length < 1:
            raise ValueError(f"ArchConfig.context_length must be positive, got {self.context_length}")

    # ------------------------------------------------------------------------------------ construction

    @classmethod
    def from_name(cls, preset: str, **overrides: Any) -> ArchConfig:
        """A named preset (`ArchConfig.from_name("qwen2-0.5b")`), optionally with fields overridden."""
        if preset not in PRESETS:
            from ondevice.errors import UnknownNameError

            raise UnknownNameError("preset", preset, PRESETS)
        return cls(**{**PRESETS[preset], "name": preset, **overrides})

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> ArchConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where}: unknown ArchConfig fields {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> ArchConfig:
        """Read a YAML file holding the fields, or an `slm fit` config with them under model.init_args.arch."""
        import yaml

        path = Path(path)
        data = yaml.safe_load(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of ArchConfig fields, got {type(data).__name__}")
        if "model" in data:
            try:
                data = data["model"]["init_args"]["arch"]
            except (KeyError, TypeError) as exc:
                raise ValueError(f"{path}: an slm fit config needs model.init_args.arch") from exc
        if isinstance(data, str):
            return cls.from_name(data)
        return cls.from_dict(data, where=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> ArchConfig:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------------------------- parameters

    @property
    def q_width(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def norm_params(self) -> int:
        return self.hidden_size * (2 if self.norm == "layer" else 1)

    @property
    def attention_params(self) -> int:
        h = self.hidden_size
        weights = h * self.q_width + 2 * h * self.kv_width + self.q_width * h
        bias = (self.q_width + 2 * self.kv_width) if self.qkv_bias else 0
        return weights + bias

    @property
    def ffn_params(self) -> int:
        return (3 if self.gated_ffn else 2) * self.hidden_size * self.ffn_size

    @property
    def layer_params(self) -> int:
        """One transformer block: attention, FFN and its two norms."""
        return self.attention_params + self.ffn_params + 2 * self.norm_params

    @property
    def num_params_embedding(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def num_params_lm_head(self) -> int:
        """The LM head's weight matrix, used on every token whether or not it is tied to the embedding."""
        return self.vocab_size * self.hidden_size

    @property
    def num_params_non_embedding(self) -> int:
        """Blocks and the final norm: everything but the embedding table and the LM head."""
        return self.num_layers * self.layer_params + self.norm_params

    @property
    def num_params(self) -> int:
        """Total stored parameters (a tied LM head is stored once, as the embedding)."""
        head = 0 if self.tie_embeddings else self.num_params_lm_head
        return self.num_params_embedding + self.num_params_non_embedding + head

    @property
    def num_params_compute(self) -> int:
        """Non-embedding parameters plus the LM head once: the weights every decoded token reads."""
        return self.num_params_non_embedding + self.num_params_lm_head

    def budget_params(self, count: Literal["compute", "total"] = "compute") -> int:
        """The parameter count a budget is judged by: `compute` (non-embedding + LM head) or `total`."""
        if count == "compute":
            return self.num_params_compute
        if count == "total":
            return self.num_params
        raise ValueError(f"parameter count must be 'compute' or 'total', got {count!r}")

    # ------------------------------------------------------------------------------------------- MACs

    def layer_macs(self, new_tokens: int, past_length: int = 0) -> int:
        """One block's MACs for `new_tokens` queries attending to `past_length + new_tokens` keys.

        Attention is counted over every key (no causal halving), as dense kernels and torch's FLOP
        counter do.
        """
        n, keys = new_tokens, past_length + new_tokens
        projections = n * (self.attention_params - (self.q_width + 2 * self.kv_width if self.qkv_bias else 0))
        attention = 2 * n * keys * self.q_width  # scores Q·Kᵀ and the weighted sum of V, per query head
        return projections + attention + n * self.ffn_params

    def lm_head_macs(self, tokens: int = 1) -> int:
        return tokens * self.num_params_lm_head

    def prefill_macs(self, prompt_length: int, batch_size: int = 1) -> int:
        """MACs to read a prompt of P tokens and emit the next token's logits (LM head on the last token)."""
        self._check_length(prompt_length, "prompt_length")
        per_row = self.num_layers * self.layer_macs(prompt_length) + self.lm_head_macs(1)
        return batch_size * per_row

    def decode_macs(self, past_length: int, batch_size: int = 1) -> int:
        """MACs for one decode step: one new token attending to `past_length` cached tokens and itself."""
        self._check_length(past_length + 1, "past_length + 1")
        per_row = self.num_layers * self.layer_macs(1, past_length) + self.lm_head_macs(1)
        return batch_size * per_row

    # ----------------------------------------------------------------------------------------- memory

    def weight_bytes(self, bytes_per_param: float = 4.0, count: Literal["compute", "total"] = "total") -> int:
        return int(self.budget_params(count) * bytes_per_param)

    def kv_cache_bytes(self, length: int, batch_size: int = 1, bytes_per_element: int = 4) -> int:
        """Keys and values for `length` tokens in every layer."""
        return 2 * self.num_layers * self.kv_width * length * batch_size * bytes_per_element

    def logits_bytes(self, tokens: int = 1, batch_size: int = 1, bytes_per_element: int = 4) -> int:
        """The logits buffer: one row of vocab_size scores per token kept."""
        return self.vocab_size * tokens * batch_size * bytes_per_element

    def _check_length(self, length: int, what: str) -> None:
        if length < 1 or length > self.context_length:
            raise ValueError(f"{what} must be in 1..context_length ({self.context_length}), got {length}")

    def rope_tables(self) -> tuple[Any, Any]:
        """cos and sin of the rotary angles, float32 numpy arrays [context_length, head_dim] (rotate-half layout):
        the one source of the tables the torch model holds and the ONNX graphs carry."""
        import numpy as np

        inv_freq = 1.0 / self.rope_theta ** (np.arange(0, self.head_dim, 2, dtype=np.float64) / self.head_dim)
        angles = np.outer(np.arange(self.context_length, dtype=np.float64), inv_freq)
        angles = np.concatenate([angles, angles], axis=-1)
        return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)

    def summary(self) -> str:
        shape = (
            f"{self.num_layers}×{self.hidden_size}, heads {self.num_heads}/{self.num_kv_heads}×{self.head_dim}, "
            f"FFN {self.ffn_size} ({'gated ' if self.gated_ffn else ''}{self.activation})"
        )
        return (
            f"{self.name or 'custom'}: {shape}; {self.num_params / 1e6:.1f} M params "
            f"({self.num_params_compute / 1e6:.1f} M non-embedding + head)"
        )


_LLAMA_LIKE = {"activation": "silu", "gated_ffn": True, "norm": "rms", "qkv_bias": False}

# Shapes from each model's released config.json; sources named per entry.
PRESETS: dict[str, dict[str, Any]] = {
    # PhoneLM (Yi et al. 2024, arXiv 2411.05046), released configs: ReLU gated FFN, MHA, tied.
    "phonelm-0.5b": dict(
        vocab_size=49152,
        hidden_size=1024,
        num_layers=24,
        num_heads=16,
        num_kv_heads=16,
        ffn_size=4864,
        activation="relu",
        gated_ffn=True,
        norm="rms",
        tie_embeddings=True,
        context_length=2048,
        norm_eps=1e-6,
    ),
    "phonelm-1.5b": dict(
        vocab_size=49152,
        hidden_size=2560,
        num_layers=19,
        num_heads=16,
        num_kv_heads=16,
        ffn_size=6816,
        activation="relu",
        gated_ffn=True,
        norm="rms",
        tie_embeddings=True,
        context_length=2048,
        norm_eps=1e-6,
    ),
    # Qwen2-0.5B: GQA 14/2, QKV bias, tied embeddings.
    "qwen2-0.5b": dict(
        **{**_LLAMA_LIKE, "qkv_bias": True},
        vocab_size=151936,
        hidden_size=896,
        num_layers=24,
        num_heads=14,
        num_kv_heads=2,
        ffn_size=4864,
        tie_embeddings=True,
        context_length=32768,
        rope_theta=1000000.0,
        norm_eps=1e-6,
    ),
    # Qwen1.5-0.5B: MHA 16/16, QKV bias, untied LM head (0.62 B parameters, 25 % more than Qwen2-0.5B).
    "qwen1.5-0.5b": dict(
        **{**_LLAMA_LIKE, "qkv_bias": True},
        vocab_size=151936,
        hidden_size=1024,
        num_layers=24,
        num_heads=16,
        num_kv_heads=16,
        ffn_size=2816,
        tie_embeddings=False,
        context_length=32768,
        rope_theta=1000000.0,
        norm_eps=1e-6,
    ),
    # SmolLM (Hugging Face 2024): Llama shape, GQA, tied.
    "smollm-135m": dict(
        **_LLAMA_LIKE,
        vocab_size=49152,
        hidden_size=576,
        num_layers=30,
        num_heads=9,
        num_kv_heads=3,
        ffn_size=1536,
        tie_embeddings=True,
        context_length=2048,
    ),
    "smollm-360m": dict(
        **_LLAMA_LIKE,
        vocab_size=49152,
        hidden_size=960,
        num_layers=32,
        num_heads=15,
        num_kv_heads=5,
        ffn_size=2560,
        tie_embeddings=True,
        context_length=2048,
    ),
    # MobileLLM-125M (Liu et al. 2024, arXiv 2402.14905): deep and thin, 30 × 576, GQA 9/3, tied, 32 k vocab.
    "mobilellm-125m": dict(
        **_LLAMA_LIKE,
        vocab_size=32000,
        hidden_size=576,
        num_layers=30,
        num_heads=9,
        num_kv_heads=3,
        ffn_size=1536,
        tie_embeddings=True,
        context_length=2048,
    ),
    # Tiny shapes for tests and the demo: a byte-level BPE vocabulary of 512.
    "tiny": dict(
        **_LLAMA_LIKE,
        vocab_size=512,
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        ffn_size=128,
        tie_embeddings=True,
        context_length=256,
    ),
    "tiny-teacher": dict(
        **_LLAMA_LIKE,
        vocab_size=512,
        hidden_size=128,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        ffn_size=384,
        tie_embeddings=True,
        context_length=256,
    ),
}
