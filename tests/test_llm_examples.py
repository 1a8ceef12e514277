"""The large-model specs in examples/llm/: each total is the published one, exactly, by analysis
alone (no weights); a scaled-down LLaMA builds with the analysed parameter count."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import archlab

LLM = Path(__file__).resolve().parents[1] / "examples" / "llm"

#: model cards and papers: LLaMA-2 (Touvron et al. 2023, table 1) and LLaMA (table 2) as Hugging
#: Face's LlamaForCausalLM counts them, Mistral 7B v0.1, GPT-2 as GPT2LMHeadModel (tied head)
PUBLISHED = {
    "llama-2-7b": 6_738_415_616,
    "llama-2-13b": 13_015_864_320,
    "llama-2-70b": 68_976_648_192,
    "llama-1-65b": 65_285_660_672,
    "mistral-7b": 7_241_732_096,
    "gpt2-small": 124_439_808,
    "gpt2-medium": 354_823_168,
    "gpt2-large": 774_030_080,
    "gpt2-xl": 1_557_611_200,
    "mixtral-8x7b": 46_702_792_704,
}
#: Mixtral's per-token parameters (its paper's 12.9B): the router, 2 of 8 experts, and the rest
ACTIVE = {"mixtral-8x7b": 12_879_925_248}


def test_every_llm_example_is_pinned():
    assert sorted(p.stem for p in LLM.glob("*.yaml")) == sorted(PUBLISHED)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_the_published_count_exactly_and_in_the_header(name):
    text = (LLM / f"{name}.yaml").read_text()
    assert f"{PUBLISHED[name]:,}" in text.split("\nname:")[0], "the header states the published count"
    analysis = archlab.analyze(LLM / f"{name}.yaml")
    assert analysis.name == name
    assert analysis.total_params == analysis.trainable_params == PUBLISHED[name]
    assert analysis.active_params == ACTIVE.get(name, PUBLISHED[name])
    if name in ACTIVE:
        assert f"{ACTIVE[name]:,}" in text.split("\nname:")[0], "the header states the active count"


def test_gpt2_small_as_transformer_block_counts_as_the_transformer_encoder_spec():
    """The same model written with torch's encoder layer (examples/gpt2-small.yaml): same parameters
    and the same FLOPs, whatever the block type."""
    block = archlab.analyze(LLM / "gpt2-small.yaml")
    encoder = archlab.analyze(LLM.parent / "gpt2-small.yaml")
    assert (block.total_params, block.macs, block.flops) == (encoder.total_params, encoder.macs, encoder.flops)


def test_the_window_halves_mistrals_attention_scores_over_8192_tokens():
    spec = yaml.safe_load((LLM / "mistral-7b.yaml").read_text())
    windowed = archlab.analyze(spec)
    spec["layers"][1]["repeat"]["layers"][0]["transformer_block"].pop("sliding_window")
    full = archlab.analyze(spec)
    t, heads, q_dim, layers = 8192, 32, 4096, 32
    # QK^T and AV: 2 * T * keys * q_dim MACs per block; 4 FLOPs per score (scale, softmax)
    per_key = layers * (2 * 2 * t * q_dim + 4 * heads * t)
    assert full.flops - windowed.flops == per_key * (8192 - 4096)


def test_a_scaled_down_llama_builds_with_the_analysed_parameters():
    spec = yaml.safe_load((LLM / "llama-2-7b.yaml").read_text())
    spec["input"]["shape"] = [16]
    spec["layers"][0]["embedding"] = {"input_dim": 100, "output_dim": 64}
    spec["layers"][1]["repeat"].update(times=2, layers=[{"transformer_block": {"num_heads": 4, "ff_dim": 172}}])
    spec["layers"][-1]["dense"]["units"] = 100
    model = archlab.build(spec)
    expected = 2 * 100 * 64 + 2 * (4 * 64 * 64 + 3 * 64 * 172 + 2 * 64) + 64  # embeddings, blocks, final norm
    assert archlab.analyze(spec).total_params == sum(p.numel() for p in model.parameters()) == expected
