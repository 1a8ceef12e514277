"""Padding masks: a padded batch gives, at the real positions and after pooling, what each
sentence alone (unpadded) gives, layer by layer and for whole sequence models."""

from __future__ import annotations

import pytest
import torch

import archlab
from archlab.exceptions import SpecError

PAD, V, D = 0, 11, 8
LENGTHS = (5, 2, 4)  # the batch holds sentences of these lengths, padded to 5


def _sentences(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, V, (n,), generator=g) for n in LENGTHS]


def _padded(sentences: list[torch.Tensor], width: int = max(LENGTHS)) -> torch.Tensor:
    out = torch.full((len(sentences), width), PAD, dtype=torch.long)
    for i, s in enumerate(sentences):
        out[i, : len(s)] = s
    return out


def _seq_spec(layers: list, width: int = max(LENGTHS)) -> dict:
    return {"input": {"shape": [width], "dtype": "long", "pad_id": PAD},
            "layers": [{"embedding": {"input_dim": V, "output_dim": D}}, *layers]}


def _model(spec: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return archlab.build(spec).eval()


def _alone(model, sentence: torch.Tensor | None = None, **named: torch.Tensor) -> torch.Tensor:
    """The model on one unpadded sentence (a graph-form model: one of each named input): a spec of
    exactly its lengths, the same weights."""
    spec = model.spec.to_dict()
    if sentence is not None:
        spec["input"]["shape"] = [len(sentence)]
    for name, ids in named.items():
        spec["inputs"][name]["shape"] = [len(ids)]
    alone = archlab.build(spec).eval()
    alone.load_state_dict(model.state_dict())
    with torch.no_grad():
        if sentence is not None:
            return alone(sentence.unsqueeze(0))[0]
        return alone(**{name: ids.unsqueeze(0) for name, ids in named.items()})[0]


SEQUENCE_LAYERS = {  # (time, D) -> (time, D): compared at the real positions
    "embedding+positional": [{"positional_embedding": {"max_len": 8}}],
    "positional sinusoidal": [{"positional_embedding": {"max_len": 8, "kind": "sinusoidal"}}],
    "multi_head_attention": [{"multi_head_attention": {"num_heads": 2}}],
    "multi_head_attention causal": [{"multi_head_attention": {"num_heads": 2, "causal": True}}],
    "multi_head_attention grouped rotary": [{"multi_head_attention": {"num_heads": 4, "num_kv_heads": 2,
                                                                      "rotary": True}}],
    "transformer_block": [{"transformer_block": {"num_heads": 2, "ff_dim": 12, "causal": False}}],
    "transformer_block causal window": [{"transformer_block": {"num_heads": 2, "ff_dim": 12, "sliding_window": 2}}],
    "transformer_encoder": [{"transformer_encoder": {"num_heads": 2, "ff_dim": 16}}],
    "transformer_encoder norm_first causal": [
        {"transformer_encoder": {"num_heads": 2, "ff_dim": 16, "norm_first": True, "causal": True}}],
    "gru sequences": [{"gru": {"units": 6, "return_sequences": True, "bidirectional": True}}],
    "lstm sequences": [{"lstm": {"units": 6, "return_sequences": True, "num_layers": 2}}],
    "simple_rnn sequences": [{"simple_rnn": {"units": 6, "return_sequences": True}}],
    "attention in a residual": [{"residual": {"layers": [{"multi_head_attention": {"num_heads": 2}}]}},
                                "layernorm", {"dense": {"units": 4, "activation": "relu"}}],
}
POOLED_LAYERS = {  # (time, D) -> (F,): one vector per sentence
    "additive_attention last": [{"additive_attention": {"units": 5}}],
    "additive_attention learned": [{"additive_attention": {"units": 5, "query": "learned"}}],
    "gru final": [{"gru": {"units": 6}}],
    "gru bidirectional final": [{"gru": {"units": 6, "bidirectional": True, "num_layers": 2}}],
    "lstm final": [{"lstm": {"units": 6, "bidirectional": True}}],
    "simple_rnn bidirectional final": [{"simple_rnn": {"units": 6, "bidirectional": True}}],
    "reduce mean": [{"reduce": {"op": "mean"}}],
    "reduce max": [{"reduce": {"op": "max"}}],
    "reduce sum after attention": [{"multi_head_attention": {"num_heads": 2}}, {"reduce": {"op": "sum"}}],
}


@pytest.mark.parametrize("name", list(SEQUENCE_LAYERS))
def test_padded_batch_matches_each_sentence_alone_at_real_positions(name):
    model = _model(_seq_spec(SEQUENCE_LAYERS[name]))
    sentences = _sentences()
    with torch.no_grad():
        batch = model(_padded(sentences))
    for i, s in enumerate(sentences):
        torch.testing.assert_close(batch[i, : len(s)], _alone(model, s), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", list(POOLED_LAYERS))
def test_padded_batch_matches_each_sentence_alone_after_pooling(name):
    model = _model(_seq_spec(POOLED_LAYERS[name]))
    sentences = _sentences()
    with torch.no_grad():
        batch = model(_padded(sentences))
    for i, s in enumerate(sentences):
        torch.testing.assert_close(batch[i], _alone(model, s), atol=1e-5, rtol=1e-4)


def test_without_pad_id_the_padding_changes_the_result():
    """The comparison above is not vacuous: the same spec without pad_id mixes the padding in."""
    spec = _seq_spec(POOLED_LAYERS["gru final"])
    del spec["input"]["pad_id"]
    model = _model(spec)
    assert model.masks is None
    s = _sentences()[1]
    with torch.no_grad():
        padded = model(_padded([s]))[0]
    masked = _model(_seq_spec(POOLED_LAYERS["gru final"]))
    masked.load_state_dict(model.state_dict())
    assert not torch.allclose(padded, _alone(masked, s), atol=1e-4)


def _seq2seq_spec(src_len: int, tgt_len: int) -> dict:
    return {
        "inputs": {"source": {"shape": [src_len], "dtype": "long", "pad_id": PAD},
                   "target": {"shape": [tgt_len], "dtype": "long", "pad_id": PAD}},
        "graph": {
            "src": {"from": "source", "layers": [{"embedding": {"input_dim": V, "output_dim": D}},
                                                  {"positional_embedding": {"max_len": 8}}]},
            "memory": {"from": "src", "layers": [{"transformer_encoder": {"num_heads": 2, "ff_dim": 16}},
                                                 {"transformer_encoder": {"num_heads": 2, "ff_dim": 16}}]},
            "tgt": {"from": "target", "layers": [{"embedding": {"input_dim": V, "output_dim": D}},
                                                  {"positional_embedding": {"max_len": 8}}]},
            "dec": {"from": ["tgt", "memory"],
                    "layers": [{"transformer_decoder": {"num_heads": 2, "ff_dim": 16, "causal": True}},
                               {"dense": {"units": V}}]},
        },
        "outputs": "dec",
    }


def test_transformer_encoder_decoder_padded_batch_matches_each_pair_alone():
    torch.manual_seed(0)
    model = archlab.build(_seq2seq_spec(5, 4)).eval()
    sources, targets = _sentences(1), [t[:3] for t in _sentences(2)][::-1]
    targets = [torch.cat([torch.tensor([2]), t[: n]]) for t, n in zip(targets, (3, 1, 2), strict=True)]
    with torch.no_grad():
        logits = model(source=_padded(sources), target=_padded(targets, 4))
    assert logits.shape == (3, 4, V)
    for i, (s, t) in enumerate(zip(sources, targets, strict=True)):
        torch.testing.assert_close(logits[i, : len(t)], _alone(model, source=s, target=t), atol=1e-5, rtol=1e-4)


def test_gru_encoder_graph_padded_batch_matches_each_sentence_alone():
    def spec(n: int) -> dict:
        return {"inputs": {"tokens": {"shape": [n], "dtype": "long", "pad_id": PAD}},
                "graph": {"enc": {"from": "tokens", "layers": [{"embedding": {"input_dim": V, "output_dim": D}},
                                                                {"gru": {"units": 6}}, {"dense": {"units": 3}}]}},
                "outputs": "enc"}

    torch.manual_seed(0)
    model = archlab.build(spec(5)).eval()
    sentences = _sentences(3)
    with torch.no_grad():
        batch = model(tokens=_padded(sentences))
    for i, s in enumerate(sentences):
        torch.testing.assert_close(batch[i], _alone(model, tokens=s), atol=1e-5, rtol=1e-4)


def test_rnn_attention_decoder_padded_batch_matches_each_pair_alone():
    """additive_cross_attention gives the source's padded steps no weight: a GRU encoder-decoder
    with the seed's attention (examples/translation/gru-attention-multi30k.yaml, tiny)."""
    def spec(s: int, t: int) -> dict:
        return {"inputs": {"source": {"shape": [s], "dtype": "long", "pad_id": PAD},
                           "target": {"shape": [t], "dtype": "long", "pad_id": PAD}},
                "graph": {"enc": {"from": "source", "layers": [{"embedding": {"input_dim": V, "output_dim": D}},
                                                                {"gru": {"units": 6, "return_sequences": True}}]},
                          "dec": {"from": "target", "layers": [{"embedding": {"input_dim": V, "output_dim": D}},
                                                                {"gru": {"units": 6, "return_sequences": True}}]},
                          "ctx": {"from": ["dec", "enc"], "layers": [{"additive_cross_attention": {"units": 5}}]},
                          "out": {"from": ["dec", "ctx"], "merge": "concat", "axis": -1,
                                  "layers": [{"dense": {"units": V}}]}},
                "outputs": "out"}

    torch.manual_seed(0)
    model = archlab.build(spec(5, 5)).eval()
    sources, targets = _sentences(3), _sentences(3)[::-1]
    with torch.no_grad():
        batch = model(source=_padded(sources), target=_padded(targets))
    for i, (src, tgt) in enumerate(zip(sources, targets, strict=True)):
        torch.testing.assert_close(batch[i, :len(tgt)], _alone(model, source=src, target=tgt), atol=1e-5, rtol=1e-4)


def test_masks_follow_the_time_axis_and_stop_where_it_ends():
    parsed = archlab.parse(_seq_spec([{"gru": {"units": 6, "return_sequences": True}}, {"dense": {"units": 4}},
                                      "flatten", {"dense": {"units": 2}}]))
    assert parsed.pad_ids == {"input": 0}
    masks = [node.output.mask for node in parsed.root.items]
    assert masks == ["input", "input", "input", None, None]


def test_training_mode_masked_model_still_ignores_padding():
    model = _model(_seq_spec(POOLED_LAYERS["gru final"]))
    model.train()
    s = _sentences()[1]
    out = model(_padded([s]))
    out.sum().backward()
    emb = model.net[0].weight.grad
    assert emb[PAD].abs().sum() == 0  # the pad id's vector influenced nothing


def test_pad_id_is_validated_with_its_path():
    spec = _seq_spec([{"gru": {"units": 2}}])
    spec["input"]["dtype"] = "float"
    with pytest.raises(SpecError, match="pad_id applies to token ids") as info:
        archlab.parse(spec)
    assert info.value.path == "input.pad_id"
    spec["input"].update(dtype="long", pad_id=-1)
    with pytest.raises(SpecError, match="integer >= 0"):
        archlab.parse(spec)


def test_schema_and_validate_show_pad_id():
    from archlab.schema import spec_schema

    props = spec_schema()["$defs"]["input"]["oneOf"][1]["properties"]
    assert props["pad_id"] == {"type": "integer", "minimum": 0, "description": props["pad_id"]["description"]}
    parsed = archlab.parse(_seq_spec([{"gru": {"units": 2}}]))
    assert str(parsed.raw_inputs["input"]) == "(5,) long pad_id 0"  # validate's "input ..." line
    from archlab.analysis import analyze
    from archlab.analysis._report import render_text

    analysis = analyze(parsed)
    assert analysis.inputs == {"input": {"shape": [5], "dtype": "long", "pad_id": 0}}
    assert "Padding masked" in render_text(analysis) and "input pad_id 0" in render_text(analysis)


@pytest.mark.parametrize("kind", ["transformer", "gru"])
def test_masked_model_exports_to_onnx_and_matches(tmp_path, kind):
    """torch.onnx traces the masks (tensor operations on the inputs); the file, run on padded
    batches, computes what the model computes."""
    pytest.importorskip("onnxruntime")
    from archlab.deploy._export import export_model

    torch.manual_seed(0)
    if kind == "transformer":
        model = archlab.build(_seq2seq_spec(5, 4)).eval()
        batch = {"source": _padded(_sentences(1) * 3), "target": _padded([s[:3] for s in _sentences(2)] * 3, 4)}
        example = {k: v[:2] for k, v in batch.items()}
    else:  # one direction: exported without packing
        model = archlab.build(_seq_spec([{"gru": {"units": 6, "num_layers": 2}}])).eval()
        batch = _padded(_sentences() * 3)
        example = batch[:2]
    result = export_model(model, tmp_path / "m.onnx", example=example, check_inputs=batch)
    assert result.checked_samples == 9 and result.max_abs_diff < 1e-5


@pytest.mark.parametrize("name", ["transformer_encoder", "multi_head_attention"])
def test_an_empty_sentence_in_the_batch_stays_finite(name):
    model = _model(_seq_spec([*SEQUENCE_LAYERS[name], {"additive_attention": {"units": 5}}]))
    sentences = _sentences()
    batch = _padded(sentences)
    batch[1] = PAD  # a row of padding only
    with torch.no_grad():
        out = model(batch)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], _alone(model, sentences[0]), atol=1e-5, rtol=1e-4)


def test_keras_style_input_declares_pad_id():
    from archlab import layers

    model = archlab.Sequential([layers.Input((5,), dtype="long", pad_id=0), layers.Embedding(V, D),
                                layers.GRU(4)])
    assert model.to_spec().to_dict()["input"] == {"shape": [5], "dtype": "long", "pad_id": 0}
