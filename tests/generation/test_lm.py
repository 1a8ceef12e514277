"""Generation from a tiny decoder-only language model: greedy, seeded sampling, top-k and top-p."""

from __future__ import annotations

import pytest
import torch

import archlab
from archlab.generation import BOS_ID, EOS_ID, filter_logits, generate
from archlab.generation._common import GenerationError

VOCAB, CONTEXT = 9, 6


def lm(seed: int = 0, sharpness: float = 3.0) -> archlab.ArchlabModel:
    """tokens -> embedding + positions -> one causal encoder block -> dense to V (logits scaled to be peaked)."""
    torch.manual_seed(seed)
    model = archlab.build({
        "inputs": {"tokens": {"shape": [CONTEXT], "dtype": "long"}},
        "graph": {"lm": {"from": "tokens", "layers": [
            {"embedding": {"input_dim": VOCAB, "output_dim": 16}}, {"positional_embedding": {"max_len": CONTEXT}},
            {"transformer_encoder": {"num_heads": 2, "ff_dim": 32, "dropout": 0.0, "causal": True}},
            {"dense": {"units": VOCAB}}]}},
        "outputs": "lm",
    }).eval()
    with torch.no_grad():
        for p in head(model).parameters():
            p.mul_(sharpness)
    return model


def head(model) -> torch.nn.Linear:
    return model.net.nodes["lm"].layers[-1]


def next_probs(model, prompt: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(model(tokens=torch.tensor([[BOS_ID] + prompt]))[0, -1], dim=-1)  # (V,)


def greedy_oracle(model, prompt: list[int], steps: int) -> list[int]:
    """Greedy decoding written out step by step, one prompt at a time."""
    ids = [BOS_ID] + prompt
    out = []
    for _ in range(steps):
        with torch.no_grad():
            token = int(model(tokens=torch.tensor([ids[-CONTEXT:]]))[0, -1].argmax())
        if token == EOS_ID:
            break
        out.append(token)
        ids.append(token)
    return out


PROMPTS = [[4, 5], [6], [7, 8], [4, 4, 4]]


def test_greedy_is_the_likeliest_token_at_each_step_past_the_context():
    model = lm()
    assert generate(model, PROMPTS, max_new_tokens=9, greedy=True) == \
        [greedy_oracle(model, p, 9) for p in PROMPTS]


def test_top_k_of_one_is_greedy():
    model = lm(seed=1)
    greedy = generate(model, PROMPTS, max_new_tokens=8, greedy=True)
    sampled = generate(model, PROMPTS, max_new_tokens=8, top_k=1, temperature=0.7,
                       generator=torch.Generator().manual_seed(5))
    assert sampled == greedy


def test_sampling_is_reproducible_with_the_seed():
    model = lm(seed=2, sharpness=1.0)
    prompts = PROMPTS * 4

    def draw(seed: int) -> list[list[int]]:
        return generate(model, prompts, max_new_tokens=6, temperature=1.5, top_p=0.95,
                        generator=torch.Generator().manual_seed(seed))

    assert draw(0) == draw(0)
    assert draw(0) != draw(1)


def test_top_p_samples_only_the_nucleus_in_its_proportions():
    model = lm(seed=3, sharpness=1.5)
    probs = next_probs(model, [4, 5]).double()
    order = probs.argsort(descending=True)
    cumulative = probs[order].cumsum(0)
    top_p = float((cumulative[1] + cumulative[2]) / 2)  # a nucleus of three tokens, whatever they are
    nucleus = order[:3].tolist()
    n = 3000
    draws = generate(model, [[4, 5]] * n, max_new_tokens=1, top_p=top_p, bos_id=BOS_ID,
                     generator=torch.Generator().manual_seed(0), eos_id=-1)
    tokens = torch.tensor([d[0] for d in draws])
    assert set(tokens.tolist()) == set(nucleus)
    expected = probs[nucleus] / probs[nucleus].sum()
    frequency = torch.tensor([(tokens == t).sum() for t in nucleus], dtype=torch.double) / n
    sigma = (expected * (1 - expected) / n).sqrt()
    assert torch.all((frequency - expected).abs() < 4 * sigma), (frequency, expected)


def test_filter_logits_on_known_distributions():
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    kept = lambda **kw: filter_logits(logits, **kw).isfinite().tolist()  # noqa: E731
    assert kept(top_p=0.75) == [True, True, False, False]
    assert kept(top_p=0.85) == [True, True, True, False]
    assert kept(top_p=0.4) == [True, False, False, False]
    assert kept(top_k=3) == [True, True, True, False]
    assert kept(top_k=3, top_p=0.75) == [True, True, False, False]
    assert kept(top_p=1.0) == [True] * 4
    # temperature divides the logits: a lower one sharpens the distribution
    torch.testing.assert_close(filter_logits(logits, temperature=0.5), logits * 2)
    # rows are filtered independently
    rows = torch.stack([logits, logits.flip(0)])
    assert filter_logits(rows, top_k=1).isfinite().tolist() == [[True, False, False, False],
                                                                [False, False, False, True]]


def test_generation_stops_at_the_end_token_and_leaves_the_model_as_it_was():
    model = lm(seed=4)
    model.train()
    out = generate(model, PROMPTS, max_new_tokens=20, greedy=True)
    assert model.training
    assert out == [greedy_oracle(model.eval(), p, 20) for p in PROMPTS]
    assert any(len(o) < 20 for o in out)  # rows that ended with </s>, which is not returned


@pytest.mark.parametrize(("options", "message"), [
    ({"temperature": 0.0}, "temperature must be above 0"),
    ({"top_k": 0}, "top_k must be at least 1, got 0"),
    ({"top_p": 1.5}, "top_p must be in (0, 1], got 1.5"),
    ({"max_new_tokens": 0}, "max_new_tokens must be at least 1, got 0"),
    ({"input_name": "input"}, "the model takes the inputs (tokens), not 'input'"),
])
def test_bad_options_say_what_to_change(options, message):
    with pytest.raises(GenerationError) as info:
        generate(lm(), [[4]], **({"max_new_tokens": 2} | options))
    assert message in str(info.value)
