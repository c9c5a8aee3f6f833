"""A decoder-only transformer with a KV cache, in reading order: norm, RoPE, attention, FFN, block, model.

The shape comes from `slm.arch.ArchConfig`; the parameter and MAC counts there match this module exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slm.arch import ArchConfig

# One (keys, values) pair per layer, each [batch, kv_heads, length, head_dim].
KVCache = list[tuple[Tensor, Tensor]]

ACTIVATION_FUNCTIONS = {"relu": F.relu, "silu": F.silu, "gelu": F.gelu}


def make_norm(config: ArchConfig) -> nn.Module:
    if config.norm == "rms":
        return nn.RMSNorm(config.hidden_size, eps=config.norm_eps)
    return nn.LayerNorm(config.hidden_size, eps=config.norm_eps)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate [batch, heads, length, head_dim] by the angles of its positions (cos/sin: [length, head_dim])."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, config: ArchConfig) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, config.q_width, bias=config.qkv_bias)
        self.k_proj = nn.Linear(config.hidden_size, config.kv_width, bias=config.qkv_bias)
        self.v_proj = nn.Linear(config.hidden_size, config.kv_width, bias=config.qkv_bias)
        self.o_proj = nn.Linear(config.q_width, config.hidden_size, bias=False)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, past: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        present = (k, v)
        # GQA: each KV head serves num_heads / num_kv_heads query heads.
        repeat = self.num_heads // self.num_kv_heads
        if repeat > 1:
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        if length == 1:
            y = F.scaled_dot_product_attention(q, k, v)  # one query sees every cached key
        elif past is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            # New queries at positions past..past+length-1 see keys up to their own position.
            keys = k.shape[2]
            mask = torch.ones(length, keys, dtype=torch.bool, device=x.device).tril(keys - length)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)
        return self.o_proj(y), present


class FeedForward(nn.Module):
    def __init__(self, config: ArchConfig) -> None:
        super().__init__()
        self.act = ACTIVATION_FUNCTIONS[config.activation]
        self.gate_proj = nn.Linear(config.hidden_size, config.ffn_size, bias=False) if config.gated_ffn else None
        self.up_proj = nn.Linear(config.hidden_size, config.ffn_size, bias=False)
        self.down_proj = nn.Linear(config.ffn_size, config.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.gate_proj is not None:
            return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(self.act(self.up_proj(x)))


class Block(nn.Module):
    def __init__(self, config: ArchConfig) -> None:
        super().__init__()
        self.attn_norm = make_norm(config)
        self.attn = Attention(config)
        self.ffn_norm = make_norm(config)
        self.ffn = FeedForward(config)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, past: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        attended, present = self.attn(self.attn_norm(x), cos, sin, past)
        x = x + attended
        return x + self.ffn(self.ffn_norm(x)), present


class GPT(nn.Module):
    """Token embedding, `num_layers` pre-norm blocks, a final norm and the LM head (tied if configured)."""

    def __init__(self, config: ArchConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.norm = make_norm(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        cos, sin = config.rope_tables()
        self.register_buffer("rope_cos", torch.from_numpy(cos), persistent=False)
        self.register_buffer("rope_sin", torch.from_numpy(sin), persistent=False)
        self.apply(self._init_weights)
        # GPT-2's scaling: each residual branch's output projection shrinks with depth.
        for block in self.blocks:
            for proj in (block.attn.o_proj, block.ffn.down_proj):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * config.num_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def _run(self, tokens: Tensor, cache: KVCache | None) -> tuple[Tensor, KVCache]:
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be [batch, length], got shape {tuple(tokens.shape)}")
        start = 0 if cache is None else cache[0][0].shape[2]
        length = tokens.shape[1]
        if start + length > self.config.context_length:
            raise ValueError(
                f"{start} cached + {length} new tokens exceed the context length {self.config.context_length}"
            )
        cos, sin = self.rope_cos[start : start + length], self.rope_sin[start : start + length]
        x = self.embed(tokens)
        present: KVCache = []
        for i, block in enumerate(self.blocks):
            x, layer_cache = block(x, cos, sin, None if cache is None else cache[i])
            present.append(layer_cache)
        return self.norm(x), present

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits [batch, length, vocab] for every position (training and evaluation)."""
        hidden, _ = self._run(tokens, None)
        return self.lm_head(hidden)

    def prefill(self, tokens: Tensor) -> tuple[Tensor, KVCache]:
        """Read a prompt [batch, P]: the next token's logits [batch, vocab] and the cache of all P tokens."""
        hidden, cache = self._run(tokens, None)
        return self.lm_head(hidden[:, -1]), cache

    def decode(self, token: Tensor, cache: KVCache) -> tuple[Tensor, KVCache]:
        """One step: `token` [batch] or [batch, 1] after the cached tokens; logits [batch, vocab] and the new cache."""
        if token.ndim == 1:
            token = token[:, None]
        if len(cache) != self.config.num_layers:
            raise ValueError(f"the cache has {len(cache)} layers, the model {self.config.num_layers}")
        hidden, cache = self._run(token, cache)
        return self.lm_head(hidden[:, -1]), cache

    @torch.no_grad()
    def generate(
        self,
        prompt: Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        eos_token: int | None = None,
    ) -> Tensor:
        """Continue `prompt` [batch, P] by up to `max_new_tokens`; temperature 0 picks the most likely token."""
        if prompt.ndim == 1:
            prompt = prompt[None]
        logits, cache = self.prefill(prompt)
        out = [prompt]
        for step in range(max_new_tokens):
            if temperature <= 0:
                token = logits.argmax(dim=-1)
            else:
                scaled = logits / temperature
                if top_k is not None:
                    kth = torch.topk(scaled, min(top_k, scaled.shape[-1])).values[:, -1:]
                    scaled = scaled.masked_fill(scaled < kth, float("-inf"))
                token = torch.multinomial(scaled.softmax(dim=-1), 1, generator=generator)[:, 0]
            out.append(token[:, None])
            if eos_token is not None and bool((token == eos_token).all()):
                break
            if step + 1 < max_new_tokens:
                logits, cache = self.decode(token, cache)
        return torch.cat(out, dim=1)
