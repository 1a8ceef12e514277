"""Incremental decoding with cached keys and values gives the tokens of the full forward pass, and
is used only where it is exact."""

from __future__ import annotations

import pytest
import torch

import archlab
from archlab.generation import EOS_ID, beam_search, generate, greedy_search
from archlab.generation._common import GenerationError


def seq2seq(norm_first: bool, blocks: int = 2, causal: bool = True, vocab: int = 9, seed: int = 0,
            eos_bias: float = 5.0, pad_id: int | None = None):
    block = {"num_heads": 2, "ff_dim": 32, "dropout": 0.1, "norm_first": norm_first, "activation": "gelu"}
    padding = {} if pad_id is None else {"pad_id": pad_id}
    spec = {
        "inputs": {"source": {"shape": [5], "dtype": "long", **padding},
                   "target": {"shape": [7], "dtype": "long", **padding}},
        "graph": {
            "enc": {"from": "source", "layers": [{"embedding": {"input_dim": vocab, "output_dim": 16}},
                                                 {"positional_embedding": {"max_len": 5, "kind": "sinusoidal"}},
                                                 {"transformer_encoder": block}]},
            "emb": {"from": "target", "layers": [{"embedding": {"input_dim": vocab, "output_dim": 16}},
                                                 {"positional_embedding": {"max_len": 7}},
                                                 {"dropout": {"rate": 0.1}}]},
            "dec": {"from": ["emb", "enc"], "layers": [{"transformer_decoder": {**block, "causal": causal}}]},
            "more": {"from": ["dec", "enc"], "layers": [{"transformer_decoder": {**block, "causal": causal}}]}
            if blocks == 2 else {"from": "dec", "layers": ["layernorm"]},
            "head": {"from": "more", "layers": ["layernorm", {"dense": {"units": vocab}}]},
        },
        "outputs": "head",
    }
    torch.manual_seed(seed)
    model = archlab.build(spec)
    with torch.no_grad():
        for p in model.net.nodes["head"].layers[1].parameters():
            p.mul_(4.0)  # peaked distributions, so that ties do not decide the tokens
        model.net.nodes["head"].layers[1].bias[EOS_ID] += eos_bias  # sentences that end, at several lengths
    return model


def language_model(seed: int = 0):
    torch.manual_seed(seed)
    return archlab.build({
        "inputs": {"tokens": {"shape": [10], "dtype": "long"}},
        "graph": {"lm": {"from": "tokens", "layers": [
            {"embedding": {"input_dim": 11, "output_dim": 16}}, {"positional_embedding": {"max_len": 10}},
            {"repeat": {"times": 2, "layers": [
                {"transformer_encoder": {"num_heads": 4, "ff_dim": 32, "causal": True, "norm_first": True}}]}},
            {"dense": {"units": 11}}]}},
        "outputs": "lm",
    })


def calls(module: torch.nn.Module) -> list[int]:
    """A counter of the module's forward calls."""
    count = [0]
    module.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1))
    return count


SOURCE = torch.randint(4, 9, (6, 5), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("norm_first", [False, True])
def test_cached_greedy_and_beam_search_give_the_full_passes_tokens(norm_first):
    model = seq2seq(norm_first)
    for search in (greedy_search, lambda m, s, **kw: beam_search(m, s, beam_size=3, early_stopping=False, **kw)):
        full = search(model, SOURCE, use_cache=False)
        cached = search(model, SOURCE, use_cache=True)
        assert [h.tokens for h in cached] == [h.tokens for h in full]
        assert [h.log_prob for h in cached] == pytest.approx([h.log_prob for h in full], abs=1e-4)
        assert len({h.length for h in full}) > 1  # sentences that end at several steps


def test_the_cache_runs_the_encoder_once_and_is_the_default():
    model = seq2seq(False)
    encoder, head = calls(model.net.nodes["enc"]), calls(model.net.nodes["head"].layers[1])
    hypotheses = greedy_search(model, SOURCE)
    steps = max(h.length for h in hypotheses)
    assert (encoder[0], head[0]) == (1, steps)
    greedy_search(model, SOURCE, use_cache=False)
    assert (encoder[0], head[0]) == (1 + steps, 2 * steps)  # the full pass runs the encoder at every step


def test_cached_sampling_from_a_language_model_draws_the_same_tokens():
    model = language_model()
    prompts = [[4, 5, 6], [7], [8, 9, 10, 4]]  # several ids at once in the first step: a causal mask among them
    for options in ({"greedy": True}, {"temperature": 1.3, "top_p": 0.9}):
        full = generate(model, prompts, max_new_tokens=5, use_cache=False,
                        generator=torch.Generator().manual_seed(0), **options)
        cached = generate(model, prompts, max_new_tokens=5, use_cache=True,
                          generator=torch.Generator().manual_seed(0), **options)
        assert cached == full


@pytest.mark.parametrize("norm_first", [False, True])
def test_padded_sources_decode_cached_as_the_full_pass_and_as_each_sentence_alone(norm_first):
    padded = SOURCE.clone()
    padded[0, 3:], padded[2, 1:], padded[4, 4:] = 0, 0, 0  # sources of 3, 1 and 4 ids among full ones
    model = seq2seq(norm_first, pad_id=0).eval()
    encoder = calls(model.net.nodes["enc"])
    for search in (greedy_search, lambda m, s, **kw: beam_search(m, s, beam_size=3, **kw)):
        cached, full = search(model, padded, use_cache=True), search(model, padded, use_cache=False)
        assert [h.tokens for h in cached] == [h.tokens for h in full]
        assert [h.log_prob for h in cached] == pytest.approx([h.log_prob for h in full], abs=1e-4)
        alone = [search(model, padded[i:i + 1, :int((padded[i] != 0).sum())])[0] for i in range(len(padded))]
        assert [h.tokens for h in cached] == [h.tokens for h in alone]
    encoder[0] = 0
    greedy_search(model, padded)
    assert encoder[0] == 1  # the cache is the default on padded sources too: the encoder runs once


def test_where_the_cache_is_not_exact_it_is_refused_or_skipped():
    not_causal = seq2seq(False, blocks=1, causal=False)
    with pytest.raises(GenerationError, match=r"graph.dec.layers\[0\] is a transformer block without 'causal: true'"):
        greedy_search(not_causal, SOURCE, use_cache=True)
    encoder, head = calls(not_causal.net.nodes["enc"]), calls(not_causal.net.nodes["head"].layers[1])
    greedy_search(not_causal, SOURCE)
    assert encoder[0] == head[0]  # the full pass at every step

    lm = language_model()
    with pytest.raises(GenerationError, match=r"use_cache: 4 prompt ids and max_new_tokens 7 pass the spec's 'tokens'"):
        generate(lm, [[4, 5, 6]], max_new_tokens=7, use_cache=True)
    cropped = generate(lm, [[4, 5, 6]], max_new_tokens=7, greedy=True)
    assert cropped == generate(lm, [[4, 5, 6]], max_new_tokens=7, greedy=True, use_cache=False)


@pytest.mark.parametrize("block", [
    {"num_kv_heads": 2, "rope_theta": 100.0},  # LLaMA: rotary positions from the cached length on, grouped heads
    {"num_kv_heads": 1, "sliding_window": 3},  # Mistral: the window over cached and new keys
    {"moe": {"num_experts": 3, "top_k": 2}, "mlp": "geglu"},  # Mixtral: per-token experts
    {"mlp": "gelu", "norm": "layernorm", "use_bias": True, "rotary": False},  # GPT-2: torch's attention
])
def test_a_language_model_of_transformer_blocks_decodes_with_the_cache_as_without(block):
    torch.manual_seed(0)
    model = archlab.build({
        "inputs": {"tokens": {"shape": [10], "dtype": "long"}},
        "graph": {"lm": {"from": "tokens", "layers": [
            {"embedding": {"input_dim": 11, "output_dim": 16}},
            {"repeat": {"times": 2, "layers": [{"transformer_block": {"num_heads": 4, "ff_dim": 24, **block}}]}},
            "rmsnorm", {"dense": {"units": 11}}]}},
        "outputs": "lm",
    }).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)  # attention far from uniform, so that positions and the window decide the tokens
    prompts = [[4, 5, 6], [7], [8, 9, 10, 4]]
    for options in ({"greedy": True}, {"temperature": 1.3}):
        full = generate(model, prompts, max_new_tokens=5, use_cache=False,
                        generator=torch.Generator().manual_seed(0), **options)
        assert generate(model, prompts, max_new_tokens=5, use_cache=True,
                        generator=torch.Generator().manual_seed(0), **options) == full


def test_a_transformer_block_without_causal_is_refused_by_the_cache():
    model = archlab.build({
        "inputs": {"tokens": {"shape": [6], "dtype": "long"}},
        "graph": {"lm": {"from": "tokens", "layers": [
            {"embedding": {"input_dim": 11, "output_dim": 8}},
            {"transformer_block": {"num_heads": 2, "ff_dim": 8, "causal": False}}, {"dense": {"units": 11}}]}},
        "outputs": "lm"})
    with pytest.raises(GenerationError, match=r"graph.lm.layers\[1\].attn is self-attention without 'causal: true'"):
        generate(model, [[4, 5]], max_new_tokens=2, greedy=True, use_cache=True)
