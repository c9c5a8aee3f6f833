"""ArchConfig's counts against Hugging Face transformers (a test-only oracle, built on the meta device)."""

from __future__ import annotations

import random

import pytest
import torch
import yaml

from slm.arch import PRESETS, ArchConfig

transformers = pytest.importorskip("transformers")

LLAMA_FAMILY = ["phonelm-0.5b", "phonelm-1.5b", "smollm-135m", "smollm-360m", "mobilellm-125m", "tiny", "tiny-teacher"]
QWEN2_FAMILY = ["qwen2-0.5b", "qwen1.5-0.5b"]


def hf_model(config: ArchConfig) -> torch.nn.Module:
    """The same shape in transformers: Qwen2 where Q/K/V carry a bias (Llama's flag also biases O), else Llama."""
    common = dict(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        intermediate_size=config.ffn_size,
        hidden_act=config.activation,
        tie_word_embeddings=config.tie_embeddings,
        max_position_embeddings=config.context_length,
    )
    if config.qkv_bias:
        hf_config = transformers.Qwen2Config(**common)
        cls = transformers.Qwen2ForCausalLM
        assert config.head_dim == config.hidden_size // config.num_heads, "Qwen2 derives head_dim"
    else:
        hf_config = transformers.LlamaConfig(**common, head_dim=config.head_dim, attention_bias=False, mlp_bias=False)
        cls = transformers.LlamaForCausalLM
    with torch.device("meta"):
        return cls(hf_config)


def hf_counts(model: torch.nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())  # shared (tied) tensors are yielded once
    embedding = model.get_input_embeddings().weight.numel()
    return {"total": total, "embedding": embedding, "lm_head": model.get_output_embeddings().weight.numel()}


def assert_counts_match(config: ArchConfig) -> None:
    hf = hf_counts(hf_model(config))
    assert config.num_params == hf["total"], config
    assert config.num_params_embedding == hf["embedding"]
    assert config.num_params_lm_head == hf["lm_head"]
    head = 0 if config.tie_embeddings else hf["lm_head"]
    assert config.num_params_non_embedding == hf["total"] - hf["embedding"] - head


@pytest.mark.parametrize("preset", LLAMA_FAMILY + QWEN2_FAMILY)
def test_preset_parameter_counts_equal_transformers(preset):
    assert_counts_match(ArchConfig.from_name(preset))


def random_shape(rng: random.Random) -> ArchConfig:
    head_dim = rng.choice([16, 32, 64, 128])
    heads = rng.choice([2, 4, 6, 8, 12, 16])
    groups = [g for g in (1, 2, 3, 4, 6, 8) if heads % g == 0]
    qkv_bias = rng.random() < 0.5
    # Qwen2 (the oracle for Q/K/V bias) derives head_dim from hidden / heads; Llama takes any head_dim, but
    # transformers still asks that heads divide hidden.
    hidden = heads * (head_dim if qkv_bias else rng.choice([16, 24, 40, 64]))
    return ArchConfig(
        vocab_size=rng.choice([257, 1000, 32000, 49152]),
        hidden_size=hidden,
        num_layers=rng.randint(1, 12),
        num_heads=heads,
        num_kv_heads=heads // rng.choice(groups),
        head_dim=head_dim,
        ffn_size=rng.choice([64, 100, 256, 1000, 1536]),
        activation=rng.choice(["relu", "silu", "gelu"]),
        qkv_bias=qkv_bias,
        tie_embeddings=rng.random() < 0.5,
    )


def test_twenty_random_shapes_equal_transformers():
    rng = random.Random(20)
    shapes = [random_shape(rng) for _ in range(20)]
    assert len({(c.qkv_bias, c.tie_embeddings) for c in shapes}) == 4  # both oracles, tied and untied
    for config in shapes:
        assert_counts_match(config)


def test_survey_parameter_inversion_pair():
    # The SLM survey's pair: Qwen1.5-0.5B stores 25 % more parameters, yet reads fewer per decoded token.
    old, new = ArchConfig.from_name("qwen1.5-0.5b"), ArchConfig.from_name("qwen2-0.5b")
    assert old.num_params / new.num_params == pytest.approx(1.254, abs=0.002)
    assert old.num_params_compute < new.num_params_compute


def test_phonelm_presets_match_the_paper_sizes():
    assert ArchConfig.from_name("phonelm-0.5b").num_params == pytest.approx(0.51e9, rel=0.01)
    assert ArchConfig.from_name("phonelm-1.5b").num_params == pytest.approx(1.62e9, rel=0.01)
    assert ArchConfig.from_name("phonelm-1.5b").head_dim == 160


def test_macs_by_hand_for_a_small_shape():
    c = ArchConfig(vocab_size=100, hidden_size=8, num_layers=2, num_heads=2, num_kv_heads=1, ffn_size=16)
    # Per token per layer: q 8·8 + k,v 2·8·4 + o 8·8 = 192, gated FFN 3·8·16 = 384; attention 2·keys·8.
    assert c.decode_macs(past_length=3) == 2 * (192 + 384 + 2 * 4 * 8) + 800
    assert c.prefill_macs(prompt_length=4) == 2 * (4 * (192 + 384) + 2 * 4 * 4 * 8) + 800
    assert c.kv_cache_bytes(length=10) == 2 * 2 * 4 * 10 * 4
    assert c.logits_bytes() == 400


def test_layer_norm_and_plain_ffn_counts():
    c = ArchConfig(vocab_size=10, hidden_size=8, num_layers=1, num_heads=2, ffn_size=4, norm="layer", gated_ffn=False)
    attention, ffn, norms = 4 * 64, 2 * 8 * 4, 3 * 16
    assert c.num_params_non_embedding == attention + ffn + norms
    assert c.num_params == c.num_params_non_embedding + 80


def test_from_name_yaml_round_trip_and_errors(tmp_path):
    config = ArchConfig.from_name("smollm-135m")
    assert config.name == "smollm-135m"
    path = tmp_path / "arch.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    assert ArchConfig.from_file(path) == config
    fit = tmp_path / "fit.yaml"
    fit.write_text(yaml.safe_dump({"model": {"init_args": {"arch": config.to_dict()}}}))
    assert ArchConfig.from_file(fit) == config
    with pytest.raises(KeyError, match="smollm-135m"):
        ArchConfig.from_name("smollm-135")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"hidden": 8}))
    with pytest.raises(ValueError, match=r"bad\.yaml.*'hidden'"):
        ArchConfig.from_file(bad)
    with pytest.raises(ValueError, match="num_kv_heads"):
        ArchConfig(hidden_size=64, num_heads=4, num_kv_heads=3)
    with pytest.raises(ValueError, match="activation"):
        ArchConfig(activation="swish")
    with pytest.raises(ValueError, match="context_length"):
        ArchConfig.from_name("tiny").decode_macs(past_length=256)
    assert set(PRESETS) >= {"phonelm-0.5b", "qwen2-0.5b", "qwen1.5-0.5b", "smollm-135m", "mobilellm-125m"}


def test_arch_imports_without_torch():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from slm.arch import ArchConfig\n"
        "print(ArchConfig.from_name('qwen2-0.5b').num_params)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == ArchConfig.from_name("qwen2-0.5b").num_params
