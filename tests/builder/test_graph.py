"""The graph form: several inputs, merges, several outputs, transformer_decoder reading
[x, memory]; forward by position and by keyword; and every way a graph can be broken."""

from __future__ import annotations

import pytest
import torch

import archlab
from archlab.layers.attention import TransformerBlock


def rand(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def build(spec: dict) -> archlab.ArchlabModel:
    torch.manual_seed(0)
    model = archlab.build(spec).eval()
    assert model.num_params() == archlab.analyze(spec).total_params
    return model


FUSION = {
    "name": "fusion",
    "inputs": {"image": [1, 6, 6], "meta": [3]},
    "graph": {
        "img": {"from": "image", "layers": [{"conv2d": {"filters": 2, "kernel_size": 3}}, "flatten",
                                            {"dense": {"units": 4}}]},
        "tab": {"from": "meta", "layers": [{"dense": {"units": 5, "activation": "relu"}}]},
        "fused": {"from": ["img", "tab"], "merge": "concat", "layers": [{"dense": {"units": 2}}]},
    },
    "outputs": "fused",
}


def test_two_inputs_merged_by_concat():
    model = build(FUSION)
    nodes = model.net.nodes
    assert list(nodes) == ["img", "tab", "fused"]
    image, meta = rand(3, 1, 6, 6), rand(3, 3, seed=2)
    expected = nodes["fused"].layers(torch.cat([nodes["img"].layers(image), nodes["tab"].layers(meta)], dim=1))
    torch.testing.assert_close(model(image, meta), expected)
    torch.testing.assert_close(model(image=image, meta=meta), expected)
    torch.testing.assert_close(model(meta=meta, image=image), expected)
    torch.testing.assert_close(model(image, meta=meta), expected)
    parsed = archlab.parse(FUSION)
    assert parsed.is_graph and [i.shape for i in parsed.output_infos] == [(2,)]
    assert parsed.graph["fused"].input.shape == (9,)


def test_forward_with_a_missing_or_extra_input_says_which():
    model = build(FUSION)
    with pytest.raises(TypeError, match="missing: meta"):
        model(rand(1, 1, 6, 6))
    with pytest.raises(TypeError, match="takes the inputs \\(image, meta\\)"):
        model(rand(1, 1, 6, 6), rand(1, 3), rand(1, 3))


@pytest.mark.parametrize("merge,combine", [
    ("add", lambda a, b: a + b), ("mean", lambda a, b: (a + b) / 2), ("max", torch.maximum),
    ("mul", lambda a, b: a * b), ("concat", lambda a, b: torch.cat([a, b], dim=1)),
])
def test_graph_merges(merge, combine):
    spec = {"inputs": {"a": [4], "b": [4]},
            "graph": {"h": {"from": "a", "layers": [{"dense": {"units": 4}}]},
                      "out": {"from": ["h", "b"], "merge": merge}},
            "outputs": "out"}
    model = build(spec)
    a, b = rand(2, 4), rand(2, 4, seed=3)
    torch.testing.assert_close(model(a, b), combine(model.net.nodes["h"].layers(a), b))


def test_graph_concat_along_an_axis():
    spec = {"inputs": {"x": [3, 4], "y": [3, 2]},
            "graph": {"z": {"from": ["x", "y"], "merge": "concat", "axis": -1, "layers": ["relu"]}},
            "outputs": "z"}
    model = build(spec)
    x, y = rand(2, 3, 4), rand(2, 3, 2, seed=4)
    torch.testing.assert_close(model(x, y), torch.relu(torch.cat([x, y], dim=-1)))
    assert archlab.parse(spec).output_infos[0].shape == (3, 6)


def test_several_outputs_come_back_as_a_tuple_in_order():
    spec = {"inputs": {"x": [4]},
            "graph": {"trunk": {"from": "x", "layers": [{"dense": {"units": 6, "activation": "relu"}}]},
                      "cls": {"from": "trunk", "layers": [{"dense": {"units": 3}}]},
                      "reg": {"from": "trunk", "layers": [{"dense": {"units": 1}}]}},
            "outputs": ["reg", "cls", "trunk"]}
    model = build(spec)
    x = rand(5, 4)
    reg, cls, trunk = model(x)
    assert (reg.shape, cls.shape, trunk.shape) == ((5, 1), (5, 3), (5, 6))
    torch.testing.assert_close(cls, model.net.nodes["cls"].layers(trunk))
    assert [i.shape for i in archlab.parse(spec).output_infos] == [(1,), (3,), (6,)]
    assert [o["shape"] for o in archlab.analyze(spec).outputs] == [[1], [3], [6]]


DECODER = {
    "inputs": {"tokens": {"shape": [5], "dtype": "long"}, "memory": [3, 8]},
    "graph": {
        "x": {"from": "tokens", "layers": [{"embedding": {"input_dim": 12, "output_dim": 8}},
                                           {"positional_embedding": {"max_len": 5}}]},
        "enc": {"from": "memory", "layers": [{"transformer_encoder": {"num_heads": 2, "ff_dim": 16}}]},
        "dec": {"from": ["x", "enc"], "layers": [
            {"transformer_decoder": {"num_heads": 2, "ff_dim": 16, "causal": True}},
            {"dense": {"units": 12}}]},
    },
    "outputs": "dec",
}


def test_transformer_decoder_reads_x_and_memory():
    model = build(DECODER)
    nodes = model.net.nodes
    decoder = nodes["dec"].layers[0]
    assert isinstance(decoder, TransformerBlock)
    assert isinstance(decoder.block, torch.nn.TransformerDecoderLayer)
    tokens = torch.tensor([[1, 2, 3, 4, 5], [11, 0, 0, 7, 7]])
    memory = rand(2, 3, 8)
    x, enc = nodes["x"].layers(tokens), nodes["enc"].layers(memory)
    expected = nodes["dec"].layers[1](decoder(x, enc))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens, memory), expected)
        torch.testing.assert_close(model(memory=memory, tokens=tokens), expected)
        # causal: the first step's output does not depend on later tokens
        changed = tokens.clone()
        changed[:, 3:] = 9
        torch.testing.assert_close(model(changed, memory)[:, :3], model(tokens, memory)[:, :3])
        # but every step depends on the memory
        assert not torch.allclose(model(tokens, memory + 1)[:, 0], model(tokens, memory)[:, 0])
    assert archlab.parse(DECODER).output_infos[0].shape == (5, 12)


def test_transformer_decoder_with_memory_of_another_length_and_width():
    spec = {"inputs": {"x": [4, 8], "memory": [7, 6]},
            "graph": {"d": {"from": ["x", "memory"], "layers": [{"transformer_decoder": {"num_heads": 2,
                                                                                        "ff_dim": 4}}]}},
            "outputs": "d"}
    with pytest.raises(archlab.ShapeError) as info:
        archlab.parse(spec)
    assert info.value.path == "graph.d.layers[0]"
    assert "reads x (4, 8) and memory (7, 6) of different widths: add 'dense: {units: 8}'" in str(info.value)
    spec["inputs"]["memory"] = [7, 8]
    assert build(spec)(rand(2, 4, 8), rand(2, 7, 8)).shape == (2, 4, 8)


def test_transformer_decoder_in_the_sequential_form_is_refused():
    with pytest.raises(archlab.SpecError) as info:
        archlab.parse({"input": [4, 8], "layers": [{"transformer_decoder": {"num_heads": 2, "ff_dim": 8}}]})
    assert info.value.path == "layers[0]"
    assert "reads 2 tensors (x, memory): use it as the first layer of a graph node with from: [x, memory]" in str(
        info.value)


def test_an_output_may_be_an_input_and_a_node_without_layers_passes_through():
    spec = {"inputs": {"x": [4]}, "graph": {"same": {"from": "x"}}, "outputs": ["same", "x"]}
    model = build(spec)
    x = rand(2, 4)
    a, b = model(x)
    torch.testing.assert_close(a, x)
    torch.testing.assert_close(b, x)


def test_nodes_may_be_written_in_any_order():
    spec = {"inputs": {"x": [4]},
            "graph": {"head": {"from": "mid", "layers": [{"dense": {"units": 2}}]},
                      "mid": {"from": "x", "layers": [{"dense": {"units": 3}}]}},
            "outputs": "head"}
    parsed = archlab.parse(spec)
    assert list(parsed.graph) == ["mid", "head"]  # run order
    model = build(spec)
    x = rand(2, 4)
    torch.testing.assert_close(model(x), model.net.nodes["head"].layers(model.net.nodes["mid"].layers(x)))


def test_graph_nodes_can_hold_connections_and_ties_across_nodes():
    spec = {"inputs": {"ids": {"shape": [4], "dtype": "long"}},
            "graph": {"emb": {"from": "ids", "layers": [{"embedding": {"input_dim": 9, "output_dim": 6},
                                                          "name": "wte"}]},
                      "body": {"from": "emb", "layers": [{"residual": {"layers": [{"dense": {"units": 6}}, "gelu"]}},
                                                          {"dense": {"units": 9}, "tie": "wte"}]}},
            "outputs": "body"}
    model = build(spec)
    assert model.net.nodes["body"].layers[1].weight is model.net.nodes["emb"].layers[0].weight
    assert model(torch.zeros(2, 4, dtype=torch.long)).shape == (2, 4, 9)


def _graph(graph: dict, inputs: dict | None = None, outputs="out") -> dict:
    return {"inputs": inputs or {"a": [4], "b": [4]}, "graph": graph, "outputs": outputs}


@pytest.mark.parametrize("spec,path,fragment", [
    (_graph({"p": {"from": "q"}, "q": {"from": "p"}, "out": {"from": ["p", "a", "b"], "merge": "add"}}),
     "graph.p.from", "cycle p -> q -> p"),
    (_graph({"out": {"from": ["out", "a"], "merge": "add"}}, inputs={"a": [4]}), "graph.out.from", "cycle out -> out"),
    (_graph({"out": {"from": ["a", "c"], "merge": "add"}}), "graph.out.from",
     "unknown source 'c' (inputs: a, b; nodes: out)"),
    (_graph({"out": {"from": ["a", "bb"], "merge": "add"}}), "graph.out.from",
     "unknown source 'bb'; did you mean 'b'?"),
    (_graph({"out": {"from": ["a", "b"], "merge": "add"}, "spare": {"from": "a"}}), "graph.spare",
     "node 'spare' does not lead to any output (outputs: out; reached: a, b, out)"),
    (_graph({"out": {"from": "a"}}), "inputs.b", "input 'b' is never read (reached: a, out)"),
    (_graph({"a": {"from": "b"}, "out": {"from": "a"}}), "graph.a", "node 'a' has the name of an input"),
    (_graph({"out": {"from": "a", "merge": "add"}}, inputs={"a": [4]}), "graph.out.merge",
     "merge joins several tensors, but this node reads only 'a'"),
    (_graph({"out": {"from": ["a"], "merge": "concat"}}, inputs={"a": [4]}), "graph.out.merge",
     "merge joins several tensors"),
    (_graph({"out": {"from": ["a", "b"]}}), "graph.out", "reads 2 tensors (a, b) but has no merge"),
    (_graph({"out": {"from": ["a", "b"], "layers": ["relu"]}}), "graph.out.layers[0]",
     "relu reads one tensor but receives 2: give the graph node a merge"),
    (_graph({"out": {"from": ["a", "b"], "layers": [{"residual": {"layers": []}}]}}), "graph.out.layers[0]",
     "'residual' reads one tensor, but this graph node reads 2: add a merge"),
    (_graph({"out": {"from": ["a", "b"], "merge": "sum"}}), "graph.out.merge", "unknown merge 'sum'"),
    (_graph({"out": {"from": ["a", "b"], "merge": "add", "axis": 0}}), "graph.out.axis",
     "axis applies to merge: concat only"),
    (_graph({"out": {"from": "a", "axis": 0}}, inputs={"a": [4]}), "graph.out.axis",
     "unknown key 'axis' in a graph node without merge"),
    (_graph({"out": {"form": "a"}}, inputs={"a": [4]}), "graph.out.form",
     "unknown key 'form' in a graph node; did you mean 'from'?"),
    (_graph({"out": {"layers": ["relu"]}}, inputs={"a": [4]}), "graph.out.from", "'from' is an input or node name"),
    (_graph({"out": {"from": []}}, inputs={"a": [4]}), "graph.out.from", "'from' is an input or node name"),
    (_graph({"out": {"from": 3}}, inputs={"a": [4]}), "graph.out.from", "'from' is an input or node name"),
    (_graph({"out": ["relu"]}, inputs={"a": [4]}), "graph.out", "a graph node is a mapping"),
    (_graph({"out": {"from": "a"}}, inputs={"a": [4]}, outputs="ot"), "outputs",
     "unknown output 'ot'; did you mean 'out'?"),
    (_graph({"out": {"from": "a"}}, inputs={"a": [4]}, outputs=[]), "outputs", "outputs is a node name or a list"),
    (_graph({"out": {"from": ["a", "b"], "merge": "concat"}}, inputs={"a": [4], "b": [2, 2]}), "graph.out",
     "(merge concat) along axis 0 needs inputs of one rank"),
    (_graph({"out": {"from": ["a", "b"], "merge": "mul"}}, inputs={"a": [4], "b": [3]}), "graph.out",
     "(merge mul) needs equal shapes but receives a (4,), b (3,)"),
    (_graph({"out": {"from": ["a", "b"], "merge": "add"}}, inputs={"a": [4], "b": {"shape": [4], "dtype": "long"}}),
     "graph.out", "(merge add) mixes integer ids and real values"),
    (_graph({"out": {"from": ["a", "b"], "merge": "mean"}},
            inputs={"a": {"shape": [4], "dtype": "long"}, "b": {"shape": [4], "dtype": "long"}}),
     "graph.out", "(merge mean) cannot average integer ids"),
    (_graph({"out": {"from": "a", "layers": [{"dense": {"units": 0}}]}}, inputs={"a": [4]}),
     "graph.out.layers[0].dense.units", "'units' should be greater than 0; got 0"),
])
def test_broken_graphs_name_the_path(spec, path, fragment):
    with pytest.raises(archlab.SpecError) as info:
        archlab.parse(spec)
    assert info.value.path == path, str(info.value)
    assert fragment in str(info.value)
    with pytest.raises(archlab.SpecError):
        archlab.build(spec)


@pytest.mark.parametrize("data,path,fragment", [
    ({"inputs": {"a": [4]}, "graph": {"out": {"from": "a"}}}, "", "the graph form needs 'outputs'"),
    ({"graph": {"out": {"from": "a"}}, "outputs": "out"}, "inputs", "the graph form needs 'inputs'"),
    ({"inputs": {"a": [4]}, "graph": {}, "outputs": "out"}, "graph", "'graph' must be a mapping of node names"),
    ({"input": [4], "graph": {"out": {"from": "a"}}, "outputs": "out"}, "input", "write inputs: {x: [dims...]}"),
    ({"inputs": {"a": [0]}, "graph": {"out": {"from": "a"}}, "outputs": "out"}, "inputs.a",
     "an input shape is a list of positive integers"),
    ({"input": [4], "layers": ["relu"], "outputs": "x"}, "outputs", "'outputs' belongs to the graph form"),
])
def test_graph_top_level_problems(data, path, fragment):
    with pytest.raises(archlab.SpecError) as info:
        archlab.parse(data)
    assert info.value.path == path
    assert fragment in str(info.value)
