"""The training planner against published figures: GPT-3's training FLOPs (Brown et al. 2020),
LLaMA-65B's run (Touvron et al. 2023), the ZeRO paper's memory (Rajbhandari et al. 2020, figure 1),
Korthikanti et al. 2022's activation formulas, and the pipeline bubble (Narayanan et al. 2021)."""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path

import pytest

import archlab
from archlab.layers import TransformerShape, registry
from archlab.plan import (
    PlanConfig,
    block_activation_bytes,
    budget_for,
    compute_optimal,
    get_gpu,
    model_shape,
    model_state_bytes,
    output_activation_bytes,
    plan_training,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GPT3 = EXAMPLES / "gpt3-175b.yaml"
DAY = 86400


def test_gpt3_175b_on_300b_tokens_is_3_14e23_flops() -> None:
    """Brown et al. 2020 table D.1: 3.14e23 training FLOPs for GPT-3 175B (6N on 300B tokens)."""
    p = plan_training(GPT3, PlanConfig(tokens=300e9, gpus=1024, tp=8, pp=8))
    assert p.model.total_params == p.model.active_params == 174_604_259_328
    assert f"{p.total_flops:.3g}" == "3.14e+23"
    assert p.flops_per_token == 6 * 174_604_259_328
    # PaLM appendix B: + 12·L·H·Q·T with L 96 blocks, H 96 heads of Q 128, T 2048
    assert p.flops_per_token_palm - p.flops_per_token == 12 * 96 * 96 * 128 * 2048


def _llama65b_like() -> dict:
    """LLaMA-1 65B's width 8192, 80 blocks, 64 heads and parameter count in transformer_encoder blocks:
    its gated MLP's three 8192 x 22016 matrices are two of 8192 x 33024 here (the biases and
    layernorms add 0.01%)."""
    return {"name": "llama-65b-like", "input": {"shape": [2048], "dtype": "long"}, "layers": [
        {"embedding": {"input_dim": 32000, "output_dim": 8192}},
        {"repeat": {"times": 80, "layers": [{"transformer_encoder": {
            "num_heads": 64, "ff_dim": 33024, "norm_first": True, "causal": True, "dropout": 0.0}}]}},
        {"layernorm": {}}, {"dense": {"units": 32000, "use_bias": False}}]}


@pytest.mark.parametrize("spec", [
    pytest.param(EXAMPLES / "llm" / "llama-1-65b.yaml", id="examples-llm-llama-1-65b"),
    pytest.param(_llama65b_like(), id="encoder-stack-of-the-same-size"),
])
def test_llama_65b_at_380_tokens_per_second_on_2048_a100s_is_21_days_and_47_percent_mfu(spec) -> None:
    """Touvron et al. 2023 section 2.4: 380 tokens/s/GPU on 2048 A100-80GB, 1.4T tokens in about 21
    days; 6N · 380 / 312 TFLOP/s ≈ 47% MFU."""
    if isinstance(spec, Path) and not spec.exists():
        pytest.skip(f"{spec.name} comes with the LLaMA reference specs of issue 13 (another branch)")
    p = plan_training(spec, PlanConfig(tokens=1.4e12, gpus=2048, gpu="a100-80gb", tokens_per_second=380,
                                       tp=8, pp=4, global_batch=1024))
    assert abs(p.model.total_params - 65_285_660_672) / 65_285_660_672 < 1e-3
    assert p.time_s == pytest.approx(1.4e12 / (380 * 2048))
    assert round(p.time_s / DAY) == 21
    assert 0.47 <= p.mfu < 0.48  # 47.7%: "about 47%"
    assert p.mfu == pytest.approx(380 * 6 * p.model.active_params / 312e12)


def test_time_at_a_given_mfu_is_the_flops_over_the_delivered_rate() -> None:
    p = plan_training(GPT3, PlanConfig(tokens=300e9, gpus=1024, tp=8, pp=8, mfu=0.5))
    assert p.time_s == pytest.approx(3.14e23 / (1024 * 312e12 * 0.5), rel=1e-3)
    assert p.gpu_hours == pytest.approx(p.time_s * 1024 / 3600)


def test_full_recompute_costs_another_forward_pass_without_changing_the_mfu() -> None:
    base = plan_training(GPT3, PlanConfig(tokens=300e9, gpus=1024, tp=8, pp=8, recompute="none"))
    full = plan_training(GPT3, PlanConfig(tokens=300e9, gpus=1024, tp=8, pp=8, recompute="full"))
    n, attention = 174_604_259_328, 4 * 96 * 96 * 128 * 2048
    assert full.hardware_flops_per_token == 8 * n + 4 * attention  # 8N + 16·L·H·Q·T
    assert base.hardware_flops_per_token == base.flops_per_token_palm
    assert full.mfu == base.mfu and full.hfu > base.hfu and full.time_s == base.time_s
    assert any("8N" in note for note in full.notes)


PSI, N_D = 7_500_000_000, 64  # the ZeRO paper's figure 1: 7.5B parameters on 64 GPUs


@pytest.mark.parametrize(("zero", "total", "published_gb"), [
    (0, 16 * PSI, 120.0),
    (1, 4 * PSI + 12 * PSI // N_D, 31.4),
    (2, 2 * PSI + 14 * PSI // N_D, 16.6),
    (3, 16 * PSI // N_D, 1.9),
])
def test_zero_stages_match_the_paper(zero: int, total: int, published_gb: float) -> None:
    states = model_state_bytes(PSI, N_D, zero, "adam", "bf16")
    assert sum(states.values()) == total
    assert round(total / 1e9, 1) == published_gb


@pytest.mark.parametrize(("optimizer", "precision", "per_param"), [
    ("adam", "bf16", (2, 2, 12)),  # mixed precision: 16 bytes a parameter
    ("adamw", "fp16", (2, 2, 12)),
    ("adam", "fp32", (4, 4, 8)),  # no master copy
    ("sgd", "bf16", (2, 2, 8)),  # master weights + momentum
    ("sgd", "fp32", (4, 4, 4)),
])
def test_bytes_per_parameter_by_optimizer(optimizer: str, precision: str, per_param: tuple) -> None:
    states = model_state_bytes(1000, 1, 0, optimizer, precision)
    assert (states["weights"], states["gradients"], states["optimizer"]) == tuple(1000 * b for b in per_param)


S, H, A, T = 2048, 12288, 96, 8  # a GPT-3 block
GPT3_BLOCK = TransformerShape(hidden=H, seq_len=S, heads=A, kv_heads=A, head_dim=H // A, ff_dim=4 * H)
SBH = S * H


@pytest.mark.parametrize(("tp", "sp", "recompute", "formula"), [
    (1, False, "none", SBH * (34 + Fraction(5 * A * S, H))),
    (T, False, "none", SBH * (10 + Fraction(24, T) + Fraction(5 * A * S, H * T))),
    (T, True, "none", Fraction(SBH, T) * (34 + Fraction(5 * A * S, H))),
    (T, True, "selective", Fraction(34 * SBH, T)),
    (T, False, "selective", SBH * (10 + Fraction(24, T))),
    (1, False, "full", 2 * SBH),
], ids=["no-parallelism", "tensor", "tensor-sequence", "selective-with-sp", "selective", "full"])
def test_korthikanti_activations_per_gpt_block_exactly(tp: int, sp: bool, recompute: str, formula) -> None:
    """Korthikanti et al. 2022 equations 1-4 and table 2, 16-bit, one sample."""
    assert block_activation_bytes(GPT3_BLOCK, 1, tp, sp, recompute, 2) == formula


def test_activations_scale_with_the_micro_batch_and_the_element_width() -> None:
    one = block_activation_bytes(GPT3_BLOCK, 1)
    assert block_activation_bytes(GPT3_BLOCK, 4) == 4 * one
    # fp32 training keeps 4-byte tensors; the dropout masks stay one byte
    masks = 2 * SBH + A * S * S
    assert block_activation_bytes(GPT3_BLOCK, 1, element_bytes=4) == 2 * (one - masks) + masks


def _per_sample(shape: TransformerShape) -> Fraction:
    return block_activation_bytes(shape, 1, 1, False, "none", 2)


def test_generalised_counts_differ_from_the_gpt_block_by_the_tensors_that_change() -> None:
    """Each variant changes exactly the tensors the paper's section 4.1 counts for it (16-bit)."""
    gpt = _per_sample(GPT3_BLOCK)
    # no dropout: the two 1-byte masks after attention and the MLP, the scores' mask and dropout output
    assert _per_sample(dataclasses.replace(GPT3_BLOCK, dropout=False)) == gpt - 2 * SBH - 3 * A * S * S
    # 8 KV heads instead of 96: K and V are 2·s·kv·d_h each
    assert _per_sample(dataclasses.replace(GPT3_BLOCK, kv_heads=8)) == gpt - 2 * 2 * S * (A - 8) * (H // A)
    # a 512-key window: scores a·s·512 instead of a·s²
    assert _per_sample(dataclasses.replace(GPT3_BLOCK, window=512)) == gpt - 5 * A * S * (S - 512)
    # gated MLP of width f: four s·f tensors (gate, up, activation, product) instead of two
    f = 32768
    assert _per_sample(dataclasses.replace(GPT3_BLOCK, ff_dim=f, gated=True)) == gpt - 16 * SBH + 4 * 2 * S * f
    # experts: top-2 of 8 routed, the router's probabilities kept
    moe = dataclasses.replace(GPT3_BLOCK, experts=8, top_k=2)
    assert _per_sample(moe) == gpt + 16 * SBH + 2 * S * 8


def test_output_layer_activations_are_the_papers_4sbh_over_t_times_1_plus_v_over_h() -> None:
    v = 51200
    assert output_activation_bytes(S, H, v, 1, T, True) == Fraction(4 * SBH, T) * (1 + Fraction(v, H))


def test_memory_per_gpu_places_blocks_embeddings_and_head_by_stage() -> None:
    p = plan_training(GPT3, PlanConfig(tokens=300e9, gpus=1024, tp=8, pp=8, zero=0))
    shape = p.model
    first = -(-(shape.block_params // 8 + shape.before_params) // 8)  # blocks/8 + embeddings, split by tp
    assert p.stage == "first" and p.memory["weights"] == 2 * first and p.memory["optimizer"] == 12 * first
    # 1F1B: the first stage holds 8 micro-batches in flight of 12 blocks each: 96 blocks' worth
    block = block_activation_bytes(GPT3_BLOCK, 1, 8, False, "selective", 2)
    embedding_mask = 8 * SBH  # one byte per element for each micro-batch in flight
    assert p.memory["activations"] == 96 * block + embedding_mask
    assert p.memory["total"] == sum(v for k, v in p.memory.items() if k != "total")
    assert p.fits == (p.memory["total"] <= 0.9 * get_gpu("a100-80gb").memory_bytes)


def test_pipeline_bubble_is_p_minus_one_over_m() -> None:
    p = plan_training(GPT3, PlanConfig(tokens=300e9, gpus=1024, tp=8, pp=8, global_batch=1536))
    assert p.dp == 16 and p.micro_batches == 1536 // 16 and p.bubble == 7 / 96
    assert plan_training(GPT3, PlanConfig(tokens=300e9, gpus=1024, tp=8, pp=8)).bubble == 7 / 32  # default m = 4p


def test_a_layout_that_does_not_fit_lists_the_smallest_changes_that_do() -> None:
    p = plan_training(GPT3, PlanConfig(tokens=300e9, gpus=1024, micro_batch=4, global_batch=4096))
    assert not p.fits and p.fixes
    changed = [frozenset(k for k in ("tp", "sp", "pp", "zero", "recompute", "micro_batch")
                         if getattr(f.config, k) != getattr(p.config, k)) for f in p.fixes]
    for fix, keys in zip(p.fixes, changed, strict=True):
        replanned = plan_training(GPT3, fix.config)
        assert replanned.fits and replanned.memory["total"] == fix.memory_bytes
        assert not any(other < keys for other in changed)  # none contains a smaller fix
    ratios = [f.step_time_ratio for f in p.fixes]
    assert ratios == sorted(ratios)
    assert "raise tp to" in p.fixes[0].text and p.table().count("\n  - ") == len(p.fixes)


def test_when_no_layout_of_the_gpus_fits_the_note_names_the_fewest_gpus_that_do() -> None:
    llama70b = EXAMPLES / "llm" / "llama-2-70b.yaml"
    p = plan_training(llama70b, PlanConfig(gpus=8, gpu="h100-sxm", tp=8))
    assert not p.fits and p.fixes == []
    assert "no layout of 8 GPUs fits" in p.table() and "16 GPUs would fit (global batch 2, " in p.table()
    fixed = plan_training(llama70b, PlanConfig(gpus=16, gpu="h100-sxm", tp=8, global_batch=2))
    assert not fixed.fits and fixed.fixes  # 16 fit with a change of layout, as the note says
    assert fixed.fixes[0].text in p.table()
    p = plan_training(llama70b, PlanConfig(gpus=1, gpu="l4"))
    assert "use GPUs with more memory" not in p.table() and "GPUs would fit" in p.table()


def test_a_fitting_layout_has_no_fixes_and_says_fits() -> None:
    p = plan_training(EXAMPLES / "gpt2-small.yaml", PlanConfig(tokens=1e9, gpus=1, gpu="a10", micro_batch=4))
    assert p.fits and p.fixes == [] and "verdict: fits" in p.table()
    assert p.config.seq_len == 1024 and p.config.global_batch == 4


def test_model_shape_reads_blocks_counts_vocabulary_and_placement() -> None:
    shape = model_shape(GPT3)
    assert shape.layers == 96 and shape.hidden == 12288 and shape.vocab == 50257 and shape.seq_len == 2048
    assert shape.groups == [(GPT3_BLOCK.__class__(**{**dataclasses.asdict(GPT3_BLOCK), "dropout": True}), 96)]
    assert shape.embedding_params == 50257 * 12288
    assert shape.before_params == 50257 * 12288 + 2048 * 12288  # token and position embeddings
    assert shape.after_params == 2 * 12288 + 50257 * 12288  # ln_f and the tied head's own copy
    assert shape.before_params + shape.block_params + 2 * 12288 == archlab.analyze(GPT3).total_params


def test_model_shape_of_an_encoder_decoder_reads_cross_attention() -> None:
    shape = model_shape(EXAMPLES / "translation" / "transformer-multi30k.yaml")
    decoders = [g for g in shape.blocks if g.shape.memory_len is not None]
    assert decoders and all(g.shape.memory_len > 0 for g in decoders)
    assert shape.layers == sum(g.count for g in shape.blocks) > len(decoders)


def test_a_spec_without_transformer_blocks_is_refused() -> None:
    with pytest.raises(archlab.SpecError, match="plan sizes Transformer stacks.*transformer_encoder"):
        model_shape(EXAMPLES / "digits-cnn.yaml")


def _encoder_stack(times: int, share: bool) -> dict:
    return {"input": {"shape": [16], "dtype": "long"}, "layers": [
        {"embedding": {"input_dim": 100, "output_dim": 32}},
        {"repeat": {"times": times, "share_weights": share,
                    "layers": [{"transformer_encoder": {"num_heads": 4, "ff_dim": 64}}]}}]}


def test_a_shared_block_holds_its_weights_once_and_costs_flops_every_pass() -> None:
    shared, distinct = model_shape(_encoder_stack(4, True)), model_shape(_encoder_stack(4, False))
    block = archlab.get_layer("transformer_encoder")
    one = block.count_params(block.Params(num_heads=4, ff_dim=64), archlab.layers.TensorInfo((16, 32)))
    assert shared.layers == distinct.layers == 4
    assert shared.total_params == 100 * 32 + one and shared.block_params == one
    assert shared.active_params == distinct.active_params == distinct.total_params == 100 * 32 + 4 * one


@pytest.fixture
def plugin_block():
    """A user's layer type with the encoder's rules under another name, registered for one test."""
    base = archlab.get_layer("transformer_encoder")
    archlab.register_layer("planned_block_for_test")(type("PlannedBlock", (type(base),), {}))
    yield "planned_block_for_test"
    registry.unregister("planned_block_for_test")


def test_a_users_layer_type_with_the_transformer_trait_is_planned(plugin_block: str) -> None:
    """The planner asks the trait, not the type's name: a plugin block is sized like a built-in one."""
    spec = {"input": {"shape": [16], "dtype": "long"}, "layers": [
        {"embedding": {"input_dim": 100, "output_dim": 32}},
        {plugin_block: {"num_heads": 4, "ff_dim": 64, "dropout": 0.0}}]}
    shape = model_shape(spec)
    assert shape.groups == [(TransformerShape(hidden=32, seq_len=16, heads=4, kv_heads=4, head_dim=8, ff_dim=64,
                                              causal=False, dropout=False), 1)]
    plan = plan_training(spec, PlanConfig(tokens=1e6, gpus=1))
    assert plan.flops_per_token == 6 * shape.active_params and plan.fits


def test_the_plan_carries_the_serving_costs_of_the_same_model_and_gpus() -> None:
    """GPT-2 small: 12 causal blocks of 12 heads of 64, so 2 · 12 · 64 · 2 bytes · 12 blocks per token in 16 bits."""
    p = plan_training(EXAMPLES / "gpt2-small.yaml", PlanConfig(tokens=1e9, gpus=1, gpu="a10", batch=8))
    assert p.kv_cache_bytes_per_token == 2 * 12 * 64 * 2 * 12 == 36_864
    assert p.inference.serving.context == p.config.context == 1024 and p.inference.serving.batch == 8
    assert p.inference.memory.kv_cache == 8 * 1024 * 36_864
    assert p.inference.memory_bytes == p.usable_bytes and p.inference.fits
    assert "inference (batch 8 x context 1,024" in p.table() and p.to_dict()["inference"]["kv_cache_bytes_per_token"]


def test_llama_2_7b_kv_cache_is_524288_bytes_per_token() -> None:
    spec = EXAMPLES / "llm" / "llama-2-7b.yaml"
    if not spec.exists():
        pytest.skip("llama-2-7b.yaml comes with the LLaMA reference specs of issue 13 (another branch)")
    p = plan_training(spec, PlanConfig(tokens=2e12, gpus=8, precision="fp16"))
    assert p.kv_cache_bytes_per_token == 524_288


def test_a_budget_plans_the_compute_optimal_size_scaled_from_the_spec() -> None:
    budget = 1e21
    p = plan_training(EXAMPLES / "gpt2-small.yaml", PlanConfig(budget_flops=budget, gpus=8))
    optimum = compute_optimal(budget)
    assert p.sizing == optimum and p.spec is not None
    assert archlab.analyze(p.spec).total_params == p.model.total_params
    assert abs(p.model.total_params / optimum.params - 1) < 0.05
    assert p.total_flops == pytest.approx(budget)  # the budget spent on the scaled spec's exact count
    assert p.model.blocks[0].shape.head_dim == 64
    assert "compute-optimal size for 1e+21 FLOPs" in p.table() and p.to_dict()["sizing"]["spec"] == p.spec.name


def test_the_default_tokens_are_the_compute_optimal_ones() -> None:
    p = plan_training(EXAMPLES / "gpt2-small.yaml", PlanConfig(gpus=1))
    assert p.config.tokens == budget_for(p.model.active_params).tokens
    assert 19 < p.config.tokens / p.model.active_params < 21  # Chinchilla's ~20 tokens a parameter


def test_a_layout_the_planner_cannot_plan_is_an_archlab_error_naming_what_divides() -> None:
    from archlab.plan import PlanError

    with pytest.raises(PlanError, match="32 heads do not divide by 3") as caught:
        plan_training(EXAMPLES / "llm" / "llama-2-7b.yaml", PlanConfig(tp=3))
    assert isinstance(caught.value, archlab.ArchlabError) and isinstance(caught.value, ValueError)
