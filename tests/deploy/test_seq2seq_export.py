"""archlab export on sequence runs: a seq2seq run as an ONNX encoder and decoder step whose greedy
decode in ONNX Runtime gives PyTorch's tokens; a language model as one graph; what does not apply
to a seq2seq export refused before any work."""

from __future__ import annotations

import contextlib
import io
import json
import re
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest
import torch

import archlab
from archlab.cli import run
from archlab.deploy import (
    ExportError,
    export_run,
    export_seq2seq,
    load_run_model,
    onnx_beam_search,
    onnx_greedy_decode,
    read_metadata,
)
from archlab.exceptions import SpecError
from archlab.generation import beam_search, greedy_search
from archlab.text import Tokenizers
from archlab.training import train

pytestmark = pytest.mark.usefixtures("one_thread")

HELD_OUT = ["a dog runs", "the big red house sits", "a man", "cat", "blue dog sits a big house"]


@pytest.fixture(scope="module")
def corpus(toy_text) -> str:
    """600 sentence pairs of a word-for-word 'translation' (3-5 words each), as tests/text's."""
    return toy_text(600)["pairs"]


def seq2seq_spec(data: str) -> dict:
    inputs = {"source": {"shape": [12], "dtype": "long", "pad_id": 0},
              "target": {"shape": [12], "dtype": "long", "pad_id": 0}}
    return {
        "name": "tiny-mt", "inputs": inputs, "task": {"kind": "seq2seq"},
        "graph": {
            "encoder": {"from": "source", "layers": [
                {"embedding": {"input_dim": 80, "output_dim": 32}, "name": "emb"},
                {"positional_embedding": {"max_len": 12, "kind": "sinusoidal"}},
                {"transformer_encoder": {"num_heads": 2, "ff_dim": 64, "dropout": 0.0}}]},
            "embedded": {"from": "target", "layers": [
                {"embedding": {"input_dim": 80, "output_dim": 32}, "tie": "emb"},
                {"positional_embedding": {"max_len": 12, "kind": "sinusoidal"}}]},
            "dec": {"from": ["embedded", "encoder"], "layers": [
                {"transformer_decoder": {"num_heads": 2, "ff_dim": 64, "dropout": 0.0, "causal": True}},
                {"dense": {"units": 80}}]},
        },
        "outputs": "dec",
        "train": {"data": data, "epochs": 6, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.003},
                  "validation_split": 0.1, "tokenizer": {"kind": "bpe", "vocab_size": 80}, "device": "cpu",
                  "bucketing": True},
    }


@pytest.fixture(scope="module")
def mt_run(tmp_path_factory, corpus):
    return train(seq2seq_spec(corpus), out=tmp_path_factory.mktemp("runs"), verbose=0).run_dir


@pytest.fixture(scope="module")
def exported(mt_run, tmp_path_factory):
    """The run exported on the command line (one export for every test here: each takes seconds)."""
    folder = tmp_path_factory.mktemp("export") / "mt"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = run(["export", str(mt_run), "-o", str(folder), "--samples", "16", "--weights", "last", "--quiet"])
    return SimpleNamespace(code=code, printed=printed.getvalue(), folder=folder,
                           encoder=folder / "encoder_model.onnx", decoder=folder / "decoder_model.onnx")


def session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def held_out_ids(run_dir) -> list[list[int]]:
    """Source ids of sentences the model never saw, of 1 to 6 words (then </s>, as translate adds it)."""
    return [row + [3] for row in Tokenizers.load(run_dir).source.encode(HELD_OUT)]


def test_a_seq2seq_run_exports_an_encoder_a_decoder_step_and_its_tokenizer(mt_run, exported) -> None:
    folder = exported.folder
    assert exported.code == 0
    assert sorted(p.name for p in folder.iterdir()) == ["decoder_model.onnx", "encoder_model.onnx", "tokenizer.json"]
    assert (folder / "tokenizer.json").read_bytes() == (mt_run / "tokenizer.json").read_bytes()
    text = exported.printed
    assert f"exported: {exported.encoder} (ONNX opset 20" in text
    assert f"exported: {exported.decoder} (ONNX opset 20" in text
    assert f"tokenizer: {folder / 'tokenizer.json'}" in text
    assert "greedy decode: ORT tokens equal PyTorch's on 16/16 held-out sentences" in text
    match = re.search(r"parity: max \|onnx - torch\| = (\S+) \(encoder memory\), (\S+) \(decoder log-probabilities\) "
                      r"within atol 1e-05 \+ rtol 0\.001 \* \|torch\| on 16 held-out test sentences \(batches of 1, "
                      r"7, 8\): ok", text)
    assert match and float(match.group(1)) < 1e-4 and float(match.group(2)) < 1e-4
    for part, path in (("encoder", exported.encoder), ("decoder", exported.decoder)):
        meta = read_metadata(path)
        assert meta["archlab.part"] == part and meta["archlab.weights"] == "last"
        assert "name: tiny-mt" in meta["archlab.spec"]
        assert set(json.loads(meta["archlab.metrics"])["metrics"]) >= {"perplexity", "token_accuracy"}
    enc, dec = session(exported.encoder), session(exported.decoder)
    assert [i.name for i in enc.get_inputs()] == ["source"]
    assert [o.name for o in enc.get_outputs()] == ["memory", "source_padding"]
    assert [i.name for i in dec.get_inputs()] == ["memory", "source_padding", "target"]
    assert [o.name for o in dec.get_outputs()] == ["log_probs"]


def test_ort_greedy_decode_gives_pytorchs_tokens_on_padded_held_out_sentences(mt_run, exported) -> None:
    _, _, _, model = load_run_model(mt_run, "last")
    sources = held_out_ids(mt_run)
    assert len({len(s) for s in sources}) >= 4  # a batch whose shorter rows are padded
    ort_hyps = onnx_greedy_decode(exported.encoder, exported.decoder, sources, max_len=12)
    torch_hyps = greedy_search(model, sources, max_len=12)
    assert [h.tokens for h in ort_hyps] == [h.tokens for h in torch_hyps]
    assert [h.finished for h in ort_hyps] == [h.finished for h in torch_hyps]
    assert [h.log_prob for h in ort_hyps] == pytest.approx([h.log_prob for h in torch_hyps], abs=1e-4)
    assert any(h.tokens for h in torch_hyps)  # a model that decodes words, not </s> at once
    # each sentence alone (no padding, PyTorch's KV-cache path) decodes as it does in the padded batch
    for source, hyp in zip(sources, ort_hyps, strict=True):
        [alone] = onnx_greedy_decode(exported.encoder, exported.decoder, np.array([source]), max_len=12)
        assert alone.tokens == hyp.tokens


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_ort_beam_search_gives_pytorchs_beams_on_padded_held_out_sentences(mt_run, exported,
                                                                          length_penalty) -> None:
    _, _, _, model = load_run_model(mt_run, "last")
    sources = held_out_ids(mt_run)
    ort_hyps = onnx_beam_search(exported.encoder, exported.decoder, sources, max_len=12, beam_size=3,
                                length_penalty=length_penalty)
    torch_hyps = beam_search(model, sources, max_len=12, beam_size=3, length_penalty=length_penalty)
    assert [h.tokens for h in ort_hyps] == [h.tokens for h in torch_hyps]
    assert [h.log_prob for h in ort_hyps] == pytest.approx([h.log_prob for h in torch_hyps], abs=1e-4)
    greedy = onnx_greedy_decode(exported.encoder, exported.decoder, sources, max_len=12)
    assert [h.log_prob for h in ort_hyps] != [h.log_prob for h in greedy]  # beams that find other outputs


def test_the_encoder_memory_and_the_decoder_step_match_pytorch(mt_run, exported) -> None:
    _, _, _, model = load_run_model(mt_run, "last")
    sources = held_out_ids(mt_run)
    width = max(map(len, sources))
    source = torch.tensor([s + [0] * (width - len(s)) for s in sources])
    target = torch.tensor([[2, 5, 9, 14]] * len(sources))
    seen = {}
    hook = model.net.nodes["encoder"].register_forward_hook(lambda m, i, out: seen.update(memory=out))
    with torch.no_grad():
        logits = model(source=source, target=target)
    hook.remove()
    memory, source_padding = session(exported.encoder).run(None, {"source": source.numpy()})
    real = (source != 0).numpy()
    assert np.array_equal(source_padding, ~real)
    np.testing.assert_allclose(memory[real], seen["memory"].numpy()[real], rtol=1e-3, atol=1e-5)
    [log_probs] = session(exported.decoder).run(None, {"memory": memory, "source_padding": source_padding,
                                                       "target": target.numpy()})
    expected = torch.log_softmax(logits[:, -1], dim=-1).numpy()
    np.testing.assert_allclose(log_probs, expected, rtol=1e-3, atol=1e-5)


def test_a_failed_check_keeps_nothing(mt_run, tmp_path) -> None:
    folder = tmp_path / "strict"
    with pytest.raises(ExportError, match=r"the exported encoder differs from PyTorch .*memory.*files were not kept"):
        export_run(mt_run, out=folder, samples=3, weights="last", rtol=0.0, atol=0.0)
    assert list(folder.iterdir()) == []


def test_options_that_do_not_apply_to_a_seq2seq_export_exit_2_before_any_work(mt_run, tmp_path, capsys) -> None:
    assert run(["export", str(mt_run), "--format", "torchscript"]) == 2
    assert "a seq2seq run exports to ONNX only" in capsys.readouterr().err
    assert run(["export", str(mt_run), "-o", str(tmp_path / "model.onnx")]) == 2
    err = capsys.readouterr().err
    assert "a seq2seq run exports a folder (encoder_model.onnx, decoder_model.onnx, tokenizer.json)" in err
    assert "Traceback" not in err
    assert run(["bench", str(mt_run), "--format", "onnx"]) == 2
    assert "a seq2seq run exports as two files (an encoder and a decoder step" in capsys.readouterr().err
    assert not (mt_run / "export").exists() and list(tmp_path.iterdir()) == []


def test_a_language_model_run_exports_one_graph_over_any_prefix_with_its_tokenizer(tmp_path, corpus) -> None:
    english = corpus.removeprefix("text:").split(",")[0]
    spec = {"name": "tiny-lm", "input": {"shape": [8], "dtype": "long", "pad_id": 0},
            "task": {"kind": "language_model"},
            "layers": [{"embedding": {"input_dim": 40, "output_dim": 16}},
                       {"positional_embedding": {"max_len": 8, "kind": "learned"}},
                       {"transformer_encoder": {"num_heads": 2, "ff_dim": 32, "dropout": 0.0, "causal": True}},
                       {"dense": {"units": 40}}],
            "train": {"data": f"text:{english}", "epochs": 1, "batch_size": 64, "device": "cpu",
                      "tokenizer": {"kind": "bpe", "vocab_size": 40}}}
    run_dir = train(spec, out=tmp_path, verbose=0).run_dir
    result = export_run(run_dir, out=tmp_path / "lm.onnx", samples=5)
    assert result.path.name == "lm.onnx" and result.max_abs_diff < 1e-4
    assert (tmp_path / "tokenizer.json").read_bytes() == (run_dir / "tokenizer.json").read_bytes()
    lm = session(result.path)
    [tokens] = lm.get_inputs()
    assert tokens.name == "input" and tokens.shape == ["batch", "length"]
    # any prefix up to the context runs: the last position's logits are the next token's, as in PyTorch
    _, _, _, model = load_run_model(run_dir)
    prefix = torch.tensor([[2, 5, 7], [2, 9, 4]])
    [logits] = lm.run(None, {"input": prefix.numpy()})
    with torch.no_grad():
        expected = model(prefix)
    assert logits.shape == (2, 3, 40)
    np.testing.assert_allclose(logits, expected.numpy(), rtol=1e-3, atol=1e-5)


def test_a_model_without_pad_id_exports_without_source_padding(tmp_path) -> None:
    spec = seq2seq_spec("unused")
    for declared in spec["inputs"].values():
        del declared["pad_id"]
    torch.manual_seed(0)
    model = archlab.build(spec).eval()
    source, target = torch.randint(4, 80, (5, 12)), torch.randint(4, 80, (5, 12))
    result = export_seq2seq(model, tmp_path, check_source=source, check_target=target)
    assert result.greedy_equal == 5 and result.tokenizer is None
    assert [o.name for o in session(result.encoder).get_outputs()] == ["memory"]
    assert [i.name for i in session(result.decoder).get_inputs()] == ["memory", "target"]
    hyps = onnx_greedy_decode(result.encoder, result.decoder, source[:2, :7].numpy(), max_len=5)
    assert [h.tokens for h in hyps] == [h.tokens for h in greedy_search(model, source[:2, :7], max_len=5)]


def test_a_recurrent_decoder_is_refused_before_any_export(tmp_path) -> None:
    """torch.export traces a GRU over time at the example's length, so a GRU decoder's step would
    only run at that prefix length (torch.onnx falls back to that fixed size without an error)."""
    embed = {"embedding": {"input_dim": 30, "output_dim": 8}}
    spec = {"inputs": {"source": {"shape": [7], "dtype": "long", "pad_id": 0},
                       "target": {"shape": [6], "dtype": "long", "pad_id": 0}},
            "graph": {"encoder": {"from": "source", "layers": [
                          embed, {"gru": {"units": 6, "return_sequences": True, "bidirectional": True}}]},
                      "decoder": {"from": "target", "layers": [embed, {"gru": {"units": 6, "return_sequences": True}}]},
                      "context": {"from": ["decoder", "encoder"],
                                  "layers": [{"additive_cross_attention": {"units": 5}}]},
                      "out": {"from": ["decoder", "context"], "merge": "concat", "axis": -1,
                              "layers": [{"dense": {"units": 30}}]}},
            "outputs": "out"}
    model = archlab.build(spec).eval()
    source, target = torch.randint(4, 30, (4, 7)), torch.randint(4, 30, (4, 6))
    with pytest.raises(SpecError, match=r"graph.decoder.layers.1: a recurrent layer in the decoder: .*recurrent "
                                        r"decoders do not yet"):
        export_seq2seq(model, tmp_path, check_source=source, check_target=target)
    assert list(tmp_path.iterdir()) == []


def test_an_axis_the_exporter_fixed_is_caught() -> None:
    """torch.onnx falls back to the example's size without an error where tracing fixes an axis;
    the file's input shapes are read back, so such a part is never kept."""
    import onnx
    from onnx import TensorProto, helper

    from archlab.deploy._seq2seq import _check_dynamic

    def proto(length):
        target = helper.make_tensor_value_info("target", TensorProto.INT64, ["batch", length])
        out = helper.make_tensor_value_info("log_probs", TensorProto.INT64, ["batch", length])
        return helper.make_model(helper.make_graph([helper.make_node("Identity", ["target"], ["log_probs"])], "g",
                                                   [target], [out]))

    axes = ({0: torch.export.Dim("batch"), 1: torch.export.Dim("target_length", max=12)},)
    _check_dynamic(proto("target_length"), ["target"], axes, "decoder step")
    with pytest.raises(ExportError, match=r"the decoder step's input target came out with a fixed target_length of 2"):
        _check_dynamic(proto(2), ["target"], axes, "decoder step")
    assert onnx.checker.check_model(proto(2)) is None


def test_a_bidirectional_gru_encoder_over_padded_sources_exports_at_any_source_length(tmp_path) -> None:
    spec = {"inputs": {"source": {"shape": [7], "dtype": "long", "pad_id": 0},
                       "target": {"shape": [6], "dtype": "long", "pad_id": 0}},
            "graph": {"encoder": {"from": "source", "layers": [
                          {"embedding": {"input_dim": 30, "output_dim": 8}, "name": "embed"},
                          {"gru": {"units": 4, "return_sequences": True, "bidirectional": True}}]},
                      "emb": {"from": "target", "layers": [{"embedding": {"input_dim": 30, "output_dim": 8},
                                                            "tie": "embed"}, {"positional_embedding": {"max_len": 6}}]},
                      "dec": {"from": ["emb", "encoder"], "layers": [
                          {"transformer_decoder": {"num_heads": 2, "ff_dim": 16, "dropout": 0, "causal": True}},
                          {"dense": {"units": 30}}]}},
            "outputs": "dec"}
    torch.manual_seed(0)
    model = archlab.build(spec).eval()
    source, target = torch.randint(4, 30, (9, 7)), torch.randint(4, 30, (9, 6))
    for row, length in ((1, 3), (2, 2), (5, 4), (8, 1)):
        source[row, length:] = 0
    result = export_seq2seq(model, tmp_path, check_source=source, check_target=target)
    assert result.greedy_equal == 9 and result.memory_diff < 1e-5
    encoder = session(result.encoder)
    assert encoder.get_outputs()[0].shape == ["batch", "source_length", 8]
    short = source[:, :2].clone()
    short[3, 1] = 0
    memory, padding = encoder.run(None, {"source": short.numpy()})
    seen = {}
    hook = model.net.nodes["encoder"].register_forward_hook(lambda m, i, out: seen.update(memory=out))
    with torch.no_grad():
        model(source=short, target=target[:, :2])
    hook.remove()
    real = (short != 0).numpy()
    np.testing.assert_allclose(memory[real], seen["memory"].numpy()[real], rtol=1e-4, atol=1e-6)
    hyps = onnx_greedy_decode(result.encoder, result.decoder, short.numpy(), max_len=6)
    assert [h.tokens for h in hyps] == [h.tokens for h in greedy_search(model, short, max_len=6)]
