"""transformer_block against Hugging Face's LLaMA, Mistral and Mixtral (an independent implementation):
tiny models with the same weights give the same logits, rotary positions, grouped-query attention
and Mistral's sliding window included; LLaMA-2 7B and Mixtral 8x7B have their parameter counts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import archlab

transformers = pytest.importorskip("transformers")  # the dev extra installs it

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "llm"
VOCAB, WIDTH, FF, HEADS, KV_HEADS, LENGTH = 61, 32, 48, 4, 2, 10

#: Hugging Face's parameter names -> archlab's (blocks under a two-block repeat)
RENAMES = [
    (r"^model\.embed_tokens\.", "net.0."),
    (r"^model\.layers\.(\d+)\.", r"net.1.blocks.\1.0."),
    (r"self_attn\.(q|k|v|o)_proj\.", r"attn.\1."),
    (r"mlp\.(gate|up|down)_proj\.", r"mlp.\1."),
    (r"input_layernorm\.", "attn_norm."),
    (r"post_attention_layernorm\.", "mlp_norm."),
    (r"^model\.norm\.", "net.2."),
    (r"^lm_head\.", "net.3."),
]


def archlab_name(hf_name: str) -> str:
    for pattern, replacement in RENAMES:
        hf_name = re.sub(pattern, replacement, hf_name)
    return hf_name


def tiny_spec(**block) -> dict:
    return {"input": {"shape": [LENGTH], "dtype": "long"}, "layers": [
        {"embedding": {"input_dim": VOCAB, "output_dim": WIDTH}},
        {"repeat": {"times": 2, "layers": [{"transformer_block": {
            "num_heads": HEADS, "num_kv_heads": KV_HEADS, "ff_dim": FF, "norm_eps": 1e-6, **block}}]}},
        {"rmsnorm": {"epsilon": 1e-6}},
        {"dense": {"units": VOCAB, "use_bias": False}}]}


def archlab_state(hf: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Hugging Face's state dict under archlab's names; Mixtral's experts, stored as (E, 2·ff, D)
    gate-and-up and (E, D, ff) down tensors, split into archlab's one gated_mlp per expert."""
    state = {}
    for name, value in hf.state_dict().items():
        name = archlab_name(name.replace("mlp.gate.weight", "mlp.router.weight"))  # Mixtral's router
        if name.endswith("experts.gate_up_proj"):
            for e, (gate, up) in enumerate(expert.chunk(2, dim=0) for expert in value):  # (2·ff, D) each
                state[f"{name[:-len('gate_up_proj')]}{e}.gate.weight"] = gate
                state[f"{name[:-len('gate_up_proj')]}{e}.up.weight"] = up
        elif name.endswith("experts.down_proj"):
            for e, down in enumerate(value):
                state[f"{name[:-len('down_proj')]}{e}.down.weight"] = down
        else:
            state[name] = value
    return state


def same_weights(hf: torch.nn.Module, spec: dict) -> archlab.ArchlabModel:
    model = archlab.build(spec).eval()
    state = archlab_state(hf)
    assert set(state) == set(model.state_dict()), "every weight maps one to one"
    model.load_state_dict(state)
    return model


def config(cls, **extra):
    return cls(vocab_size=VOCAB, hidden_size=WIDTH, intermediate_size=FF, num_hidden_layers=2,
               num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, rms_norm_eps=1e-6,
               max_position_embeddings=64, tie_word_embeddings=False, attn_implementation="eager",
               initializer_range=0.2, **extra)  # weights large enough that attention is far from uniform


def test_llama_blocks_give_hugging_face_llamas_logits_with_rotary_and_grouped_query_attention():
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(config(transformers.LlamaConfig, rope_theta=500.0)).eval()
    model = same_weights(hf, tiny_spec(rope_theta=500.0))
    ids = torch.randint(0, VOCAB, (3, LENGTH))
    with torch.no_grad():
        expected = hf(ids).logits
        assert torch.allclose(model(ids), expected, atol=1e-5)
        # the oracle is sensitive to what it checks: another rope_theta gives other logits
        other = same_weights(hf, tiny_spec(rope_theta=10000.0))
        assert not torch.allclose(other(ids), expected, atol=1e-3)


def test_mistral_blocks_give_hugging_face_mistrals_logits_with_the_sliding_window():
    torch.manual_seed(1)
    hf = transformers.MistralForCausalLM(config(transformers.MistralConfig, sliding_window=3)).eval()
    model = same_weights(hf, tiny_spec(sliding_window=3))
    ids = torch.randint(0, VOCAB, (2, LENGTH))
    with torch.no_grad():
        expected = hf(ids).logits
        assert torch.allclose(model(ids), expected, atol=1e-5)
        # a window of 3 over 10 positions changes the later positions' logits
        unwindowed = same_weights(hf, tiny_spec())
        assert not torch.allclose(unwindowed(ids)[:, 3:], expected[:, 3:], atol=1e-3)
        assert torch.allclose(unwindowed(ids)[:, :3], expected[:, :3], atol=1e-5)  # the window holds them all


def test_mixtral_blocks_give_hugging_face_mixtrals_logits_with_top_2_of_4_experts():
    torch.manual_seed(2)
    hf = transformers.MixtralForCausalLM(config(transformers.MixtralConfig, num_local_experts=4,
                                                num_experts_per_tok=2, rope_theta=1e6)).eval()
    model = same_weights(hf, tiny_spec(moe={"num_experts": 4, "top_k": 2}, rope_theta=1e6))
    ids = torch.randint(0, VOCAB, (2, LENGTH))
    with torch.no_grad():
        assert torch.allclose(model(ids), hf(ids).logits, atol=1e-5)


def test_llama_2_7b_has_llama_for_causal_lms_parameter_count():
    config = transformers.LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                                      num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                                      tie_word_embeddings=False)
    with torch.device("meta"):
        hf = transformers.LlamaForCausalLM(config)
    assert sum(p.numel() for p in hf.parameters()) == archlab.analyze(str(EXAMPLES / "llama-2-7b.yaml")).total_params


def test_mixtral_8x7b_has_mixtral_for_causal_lms_parameter_count():
    config = transformers.MixtralConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                                        num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                        num_local_experts=8, num_experts_per_tok=2, tie_word_embeddings=False)
    with torch.device("meta"):
        hf = transformers.MixtralForCausalLM(config)
    assert sum(p.numel() for p in hf.parameters()) == archlab.analyze(str(EXAMPLES / "mixtral-8x7b.yaml")).total_params
