"""Greedy and beam search over tiny seq2seq models built from graph-form specs: checked against a
teacher-forced scorer, an exhaustive search and a model trained to reverse sequences."""

from __future__ import annotations

import itertools

import pytest
import torch

import archlab
from archlab.generation import BOS_ID, EOS_ID, Hypothesis, beam_search, greedy_search
from archlab.generation._common import GenerationError


def seq2seq_spec(vocab: int, source_len: int, target_len: int, dim: int = 16, dropout: float = 0.0) -> dict:
    """embedding + positions + encoder for the source; a causal decoder reading [target, memory]; dense to V."""
    block = {"num_heads": 2, "ff_dim": 2 * dim, "dropout": dropout}
    return {
        "inputs": {"source": {"shape": [source_len], "dtype": "long"},
                   "target": {"shape": [target_len], "dtype": "long"}},
        "graph": {
            "enc": {"from": "source", "layers": [{"embedding": {"input_dim": vocab, "output_dim": dim}},
                                                 {"positional_embedding": {"max_len": source_len}},
                                                 {"transformer_encoder": block}]},
            "emb": {"from": "target", "layers": [{"embedding": {"input_dim": vocab, "output_dim": dim}},
                                                 {"positional_embedding": {"max_len": target_len}}]},
            "dec": {"from": ["emb", "enc"], "layers": [{"transformer_decoder": {**block, "causal": True}},
                                                       {"dense": {"units": vocab}}]},
        },
        "outputs": "dec",
    }


def random_model(vocab: int = 7, source_len: int = 4, target_len: int = 6, seed: int = 0,
                 sharpness: float = 4.0) -> archlab.ArchlabModel:
    """An untrained model whose next-token distributions are peaked (logits scaled), so that greedy,
    beam and length penalty disagree as they do on trained models."""
    torch.manual_seed(seed)
    model = archlab.build(seq2seq_spec(vocab, source_len, target_len)).eval()
    head = model.net.nodes["dec"].layers[1]
    with torch.no_grad():
        for p in head.parameters():
            p.mul_(sharpness)
    return model


def sources(n: int, length: int, vocab: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(4, vocab, (n, length), generator=torch.Generator().manual_seed(seed))


def teacher_forced(model, source: torch.Tensor, hypothesis: Hypothesis) -> float:
    """The model's log-probability of the hypothesis, from one forward pass on the whole sequence."""
    steps = hypothesis.tokens + ([EOS_ID] if hypothesis.finished else [])
    target = torch.tensor([[BOS_ID] + steps[:-1]])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(source=source[None], target=target), dim=-1)[0]  # (t, V)
    return float(log_probs[torch.arange(len(steps)), torch.tensor(steps)].sum())


def teacher_forced_all(model, source: torch.Tensor, hypotheses: list[Hypothesis]) -> list[float]:
    """``teacher_forced`` for many hypotheses in one pass: padded at the end, which a causal decoder
    never looks back at."""
    steps = [h.tokens + ([EOS_ID] if h.finished else []) for h in hypotheses]
    width = max(len(s) for s in steps)
    target = torch.tensor([[BOS_ID] + s[:-1] + [0] * (width - len(s)) for s in steps])  # (N, width)
    ids = torch.tensor([s + [0] * (width - len(s)) for s in steps])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(source=source.expand(len(steps), -1), target=target), dim=-1)
    picked = log_probs.gather(2, ids[..., None]).squeeze(2)  # (N, width)
    counted = torch.arange(width)[None] < torch.tensor([len(s) for s in steps])[:, None]
    return (picked * counted).sum(1).tolist()


def test_greedy_equals_beam_search_with_one_beam():
    model = random_model()
    src = sources(6, 4, 7)
    greedy = greedy_search(model, src)
    beam = beam_search(model, src, beam_size=1)
    assert [h.tokens for h in beam] == [h.tokens for h in greedy]
    assert [h.finished for h in beam] == [h.finished for h in greedy]
    assert [h.log_prob for h in beam] == pytest.approx([h.log_prob for h in greedy], abs=1e-5)
    assert any(h.finished for h in greedy) and all(EOS_ID not in h.tokens for h in greedy)


def test_a_batch_decodes_as_its_sentences_one_by_one():
    model = random_model(seed=3)
    src = sources(5, 4, 7, seed=2)
    for search in (greedy_search, lambda m, s: beam_search(m, s, beam_size=3)):
        batched = search(model, src)
        single = [search(model, src[i:i + 1])[0] for i in range(len(src))]
        assert [h.tokens for h in batched] == [h.tokens for h in single]
        assert [h.log_prob for h in batched] == pytest.approx([h.log_prob for h in single], abs=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_search_scores_at_least_greedy_and_its_scores_are_the_models(alpha):
    model = random_model(seed=5)
    src = sources(8, 4, 7, seed=4)
    greedy = greedy_search(model, src)
    beam = beam_search(model, src, beam_size=4, length_penalty=alpha, early_stopping=False)
    for i, (g, b) in enumerate(zip(greedy, beam, strict=True)):
        assert b.log_prob == pytest.approx(teacher_forced(model, src[i], b), abs=1e-4)
        assert g.log_prob == pytest.approx(teacher_forced(model, src[i], g), abs=1e-4)
        assert b.score(alpha) >= g.score(alpha) - 1e-6
    assert any(b.score(alpha) > g.score(alpha) + 1e-4 for g, b in zip(greedy, beam, strict=True))


def test_a_beam_wider_than_every_prefix_finds_the_best_sequence():
    """With more beams than prefixes, beam search is exhaustive: compare it with scoring every sequence."""
    vocab, max_len = 6, 4
    model = random_model(vocab=vocab, target_len=max_len, seed=7, sharpness=2.0)
    src = sources(3, 4, vocab, seed=6)
    others = [t for t in range(vocab) if t != EOS_ID]
    candidates = [Hypothesis(list(p), 0.0, True) for n in range(max_len) for p in itertools.product(others, repeat=n)]
    candidates += [Hypothesis(list(p), 0.0, False) for p in itertools.product(others, repeat=max_len)]
    scored = [[Hypothesis(c.tokens, lp, c.finished)
               for c, lp in zip(candidates, teacher_forced_all(model, s, candidates), strict=True)] for s in src]
    for i, j in ((0, 5), (1, -1)):  # a finished hypothesis and an unfinished one, scored alone
        assert scored[i][j].log_prob == pytest.approx(teacher_forced(model, src[i], scored[i][j]), abs=1e-4)
    for alpha in (0.0, 1.0):
        found = beam_search(model, src, beam_size=len(others) ** max_len, length_penalty=alpha)
        for i, hypothesis in enumerate(found):
            best = max(scored[i], key=lambda h: h.score(alpha))
            assert (hypothesis.tokens, hypothesis.finished) == (best.tokens, best.finished)
            assert hypothesis.score(alpha) == pytest.approx(best.score(alpha), abs=1e-4)


def test_a_larger_length_penalty_gives_longer_outputs():
    model = random_model(seed=11, sharpness=2.0)
    src = sources(12, 4, 7, seed=8)
    lengths = [[h.length for h in beam_search(model, src, beam_size=5, length_penalty=alpha)]
               for alpha in (0.0, 1.0, 3.0)]
    for shorter, longer in itertools.pairwise(lengths):
        assert all(a <= b for a, b in zip(shorter, longer, strict=True))
    assert sum(lengths[2]) > sum(lengths[0])


def reverse_data(n: int, generator: torch.Generator, length: int = 5, vocab: int = 12):
    """Source: `length` symbols; decoder input <s> + the reversed symbols; targets: the reversed symbols + </s>."""
    src = torch.randint(4, vocab, (n, length), generator=generator)
    rev = src.flip(1)
    target_in = torch.cat([torch.full((n, 1), BOS_ID), rev], dim=1)
    y = torch.cat([rev, torch.full((n, 1), EOS_ID)], dim=1)
    return src, target_in, y


def test_a_model_trained_to_reverse_decodes_held_out_sequences_exactly():
    torch.manual_seed(0)
    model = archlab.build(seq2seq_spec(12, 5, 6, dim=32))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    data = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(300):
        src, target_in, y = reverse_data(64, data)
        logits = model(source=src, target=target_in)  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    held_out, _, expected = reverse_data(32, torch.Generator().manual_seed(123))
    want = expected[:, :-1].tolist()
    greedy = greedy_search(model, held_out)
    beam = beam_search(model, held_out, beam_size=3)
    assert model.training  # left as it was
    assert [h.tokens for h in greedy] == want
    assert [h.tokens for h in beam] == want
    assert all(h.finished for h in greedy + beam)


def test_id_lists_are_padded_and_the_limits_come_from_the_spec():
    model = random_model()
    lists = greedy_search(model, [[4, 5, 6, 4], [6, 6, 5, 4]])
    assert [h.tokens for h in lists] == [h.tokens for h in greedy_search(model, torch.tensor([[4, 5, 6, 4],
                                                                                             [6, 6, 5, 4]]))]
    assert all(h.length <= 6 for h in lists)
    assert all(h.length <= 2 for h in beam_search(model, [[4, 5]], max_len=2))


@pytest.mark.parametrize(("call", "message"), [
    (lambda m: beam_search(m, [[4]], beam_size=0), "beam_size must be at least 1, got 0"),
    (lambda m: greedy_search(m, [[4]], max_len=7), "max_len 7 is longer than the spec's 'target' (6 positions)"),
    (lambda m: greedy_search(m, [[4]], max_len=0), "max_len must be at least 1, got 0"),
    (lambda m: greedy_search(m, [[4], []]), "source[1] is empty"),
    (lambda m: greedy_search(m, torch.rand(2, 3)), "source: expected a (batch, length) tensor of ids"),
    (lambda m: greedy_search(m, [[4]], target_name="tgt"), "the model takes the inputs (source, target), not 'tgt'"),
])
def test_bad_requests_say_what_to_change(call, message):
    with pytest.raises(GenerationError) as info:
        call(random_model())
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)
