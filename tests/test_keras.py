"""The Keras-style API writes the same spec a person writes in YAML."""

from __future__ import annotations

import pytest
import torch

import archlab
from archlab import Spec, SpecError, layers

SEED_YAML = """\
name: seed-mnist-cnn
input: [1, 28, 28]
layers:
  - conv2d: {filters: 32, kernel_size: 3, activation: relu}
  - maxpool2d: {pool_size: 2}
  - conv2d: {filters: 64, kernel_size: 3, activation: relu}
  - maxpool2d: {pool_size: 2}
  - flatten
  - dense: {units: 128, activation: relu}
  - dense: {units: 10, activation: softmax}
"""


def seed_model() -> archlab.Sequential:
    return archlab.Sequential([
        layers.Conv2D(32, (3, 3), activation="relu", input_shape=(1, 28, 28)),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ], name="seed-mnist-cnn")


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_seed_spec_equals_the_hand_written_yaml() -> None:
    model = seed_model()
    assert model.spec == archlab.load(SEED_YAML).to_dict()
    assert model.to_spec() == archlab.load(SEED_YAML)


def test_seed_params_by_analysis_and_by_module() -> None:
    model = seed_model()
    assert model.count_params() == 225_034
    net = model.build()
    assert n_params(net) == 225_034
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_seed_summary_text() -> None:
    text = seed_model().summary()
    assert "seed-mnist-cnn" in text
    assert "225,034" in text
    assert "layers[5]" in text and "dense" in text


def test_yaml_and_json_round_trip_of_spec() -> None:
    spec = seed_model().spec
    assert archlab.load(archlab.dump(spec)).to_dict() == spec
    assert archlab.load(archlab.dump(spec, format="json")).to_dict() == spec
    assert archlab.dump(spec) == SEED_YAML.replace("  - ", "- ")  # the dumper does not indent list items


def test_spec_is_a_fresh_plain_dict() -> None:
    model = seed_model()
    spec = model.spec
    spec["layers"][0]["conv2d"]["filters"] = 1
    assert model.spec["layers"][0]["conv2d"]["filters"] == 32


@pytest.mark.parametrize("layer,item", [
    (layers.Conv2D(8, (3, 5)), {"conv2d": {"filters": 8, "kernel_size": [3, 5]}}),
    (layers.Conv2D(8, 3, strides=(2, 2), padding="same"),
     {"conv2d": {"filters": 8, "kernel_size": 3, "strides": 2, "padding": "same"}}),
    (layers.Conv1D(4, 5, dilation_rate=2), {"conv1d": {"filters": 4, "kernel_size": 5, "dilation_rate": 2}}),
    (layers.MaxPooling2D(), {"maxpool2d": {"pool_size": 2}}),
    (layers.MaxPool2D(3, 1), {"maxpool2d": {"pool_size": 3, "strides": 1}}),
    (layers.AveragePooling1D(4), {"avgpool1d": {"pool_size": 4}}),
    (layers.GlobalAveragePooling2D(), "global_avgpool2d"),
    (layers.GlobalMaxPooling1D(), "global_maxpool1d"),
    (layers.Flatten(), "flatten"),
    (layers.Reshape((4, 4)), {"reshape": {"shape": [4, 4]}}),
    (layers.Reshape(target_shape=(-1, 2)), {"reshape": {"shape": [-1, 2]}}),
    (layers.Dropout(0.5), {"dropout": {"rate": 0.5}}),
    (layers.SpatialDropout2D(0.2), {"spatial_dropout": {"rate": 0.2}}),
    (layers.SpatialDropout1D(rate=0.1), {"spatial_dropout": {"rate": 0.1}}),
    (layers.BatchNormalization(momentum=0.01), {"batchnorm": {"momentum": 0.01}}),
    (layers.LayerNormalization(epsilon=1e-6), {"layernorm": {"epsilon": 1e-6}}),
    (layers.RMSNormalization(epsilon=1e-6), {"rmsnorm": {"epsilon": 1e-6}}),
    (layers.Transpose((0, 2)), {"transpose": {"axes": [0, 2]}}),
    (layers.Spectrogram(400, hop_length=160), {"spectrogram": {"n_fft": 400, "hop_length": 160}}),
    (layers.LogMel(400, 16000, 80, top_db=80.0),
     {"log_mel": {"n_fft": 400, "sample_rate": 16000, "n_mels": 80, "top_db": 80.0}}),
    (layers.MFCC(256, 8000, 40, 13), {"mfcc": {"n_fft": 256, "sample_rate": 8000, "n_mels": 40, "n_mfcc": 13}}),
    (layers.SpecAugment(time_masks=1, time_mask_width=20), {"spec_augment": {"time_masks": 1, "time_mask_width": 20}}),
    (layers.GatedMLP(64, activation="gelu"), {"gated_mlp": {"ff_dim": 64, "activation": "gelu"}}),
    (layers.MixtureOfExperts(8, 64, top_k=1), {"moe": {"num_experts": 8, "ff_dim": 64, "top_k": 1}}),
    (layers.ReLU(), "relu"),
    (layers.Softmax(), "softmax"),
    (layers.Activation("relu"), "relu"),
    (layers.Activation("gelu"), "gelu"),
    (layers.Embedding(100, 8), {"embedding": {"input_dim": 100, "output_dim": 8}}),
    (layers.PositionalEmbedding(64, kind="sinusoidal"),
     {"positional_embedding": {"max_len": 64, "kind": "sinusoidal"}}),
    (layers.SimpleRNN(16, return_sequences=True), {"simple_rnn": {"units": 16, "return_sequences": True}}),
    (layers.GRU(8), {"gru": {"units": 8}}),
    (layers.Bidirectional(layers.LSTM(8)), {"lstm": {"units": 8, "bidirectional": True}}),
    (layers.AdditiveAttention(32), {"additive_attention": {"units": 32}}),
    (layers.MultiHeadAttention(4, causal=True), {"multi_head_attention": {"num_heads": 4, "causal": True}}),
    (layers.TransformerEncoder(4, 256), {"transformer_encoder": {"num_heads": 4, "ff_dim": 256}}),
    (layers.MultiHeadAttention(8, num_kv_heads=2, rotary=True, causal=True),
     {"multi_head_attention": {"num_heads": 8, "num_kv_heads": 2, "rotary": True, "causal": True}}),
    (layers.TransformerBlock(32, 11008, num_kv_heads=8), {"transformer_block": {"num_heads": 32, "ff_dim": 11008,
                                                                                 "num_kv_heads": 8}}),
    (layers.TransformerDecoder(4, 256), {"transformer_decoder": {"num_heads": 4, "ff_dim": 256}}),
])
def test_constructor_items(layer: layers.KerasLayer, item: object) -> None:
    assert layer.item == item


@pytest.mark.parametrize("layer,item", [
    (layers.Dense(3, name="head"), {"dense": {"units": 3}, "name": "head"}),
    (layers.Dense(3, trainable=False), {"dense": {"units": 3}, "trainable": False}),
    (layers.Dense(3, trainable=True), {"dense": {"units": 3}}),
    (layers.Dense(50, use_bias=False, tie="wte"), {"dense": {"units": 50, "use_bias": False}, "tie": "wte"}),
    (layers.Flatten(name="f"), {"flatten": None, "name": "f"}),
    (layers.Activation("relu", name="r"), {"relu": None, "name": "r"}),
])
def test_item_keywords(layer: layers.KerasLayer, item: object) -> None:
    assert layer.item == item


def test_too_many_positional_arguments() -> None:
    with pytest.raises(TypeError, match=r"Conv2D takes at most 2 positional arguments \(filters, kernel_size\), got 4"):
        layers.Conv2D(8, 3, 1, "same")


def test_input_long_dtype_and_bidirectional_lstm() -> None:
    model = archlab.Sequential([layers.Input((16,), dtype="long"), layers.Embedding(100, 8),
                                layers.Bidirectional(layers.LSTM(8)), layers.Dense(2)], name="text")
    assert model.spec == {
        "name": "text",
        "input": {"shape": [16], "dtype": "long"},
        "layers": [{"embedding": {"input_dim": 100, "output_dim": 8}},
                   {"lstm": {"units": 8, "bidirectional": True}},
                   {"dense": {"units": 2}}],
    }
    # embedding 100*8; per direction 4 gates * (8*(8+8) + 2*8); dense 16*2 + 2
    expected = 800 + 2 * 4 * (8 * 16 + 16) + 34
    assert model.count_params() == expected
    net = model.build()
    assert n_params(net) == expected
    assert net(torch.randint(0, 100, (3, 16))).shape == (3, 2)


def test_input_float_is_the_plain_shape() -> None:
    model = archlab.Sequential([layers.Input((4,)), layers.Dense(2)])
    assert model.spec == {"name": "model", "input": [4], "layers": [{"dense": {"units": 2}}]}


def test_input_shape_through_bidirectional() -> None:
    model = archlab.Sequential([layers.Bidirectional(layers.SimpleRNN(4), input_shape=(10, 3))])
    assert model.spec["input"] == [10, 3]
    assert model.spec["layers"] == [{"simple_rnn": {"units": 4, "bidirectional": True}}]
    inner = archlab.Sequential([layers.Bidirectional(layers.GRU(4, input_shape=(10, 3)))])
    assert inner.spec["input"] == [10, 3]


def test_containers() -> None:
    model = archlab.Sequential([
        layers.Input((3, 8, 8)),
        layers.Residual([layers.Conv2D(8, 3, padding="same"), layers.BatchNormalization(), layers.ReLU()],
                        post=[layers.ReLU()]),
        layers.Parallel([[layers.Conv2D(4, 1)], layers.Conv2D(4, 3, padding="same")], merge="concat"),
        layers.Repeat([layers.Conv2D(8, 3, padding="same", activation="relu")], times=3, share_weights=True),
        layers.Residual([layers.Conv2D(8, 1)], shortcut="identity", name="res"),
        layers.GlobalAveragePooling2D(),
        layers.Dense(2),
    ], name="blocks")
    assert model.spec["layers"] == [
        {"residual": {"layers": [{"conv2d": {"filters": 8, "kernel_size": 3, "padding": "same"}}, "batchnorm", "relu"],
                      "post": ["relu"]}},
        {"parallel": {"merge": "concat", "branches": [[{"conv2d": {"filters": 4, "kernel_size": 1}}],
                                                      [{"conv2d": {"filters": 4, "kernel_size": 3,
                                                                   "padding": "same"}}]]}},
        {"repeat": {"times": 3, "layers": [{"conv2d": {"filters": 8, "kernel_size": 3, "padding": "same",
                                                       "activation": "relu"}}],
                    "share_weights": True}},
        {"residual": {"layers": [{"conv2d": {"filters": 8, "kernel_size": 1}}], "shortcut": "identity"}, "name": "res"},
        "global_avgpool2d",
        {"dense": {"units": 2}},
    ]
    # residual: conv 8*27+8, bn 16, auto projection 1x1 conv 8*3 (no bias) + bn 16;
    # parallel: 4*8+4 and 4*72+4; repeat shares one conv 8*72+8; identity residual 1x1 conv 8*8+8; head 8*2+2
    expected = (224 + 16 + 24 + 16) + (36 + 292) + 584 + 72 + 18
    assert model.count_params() == expected
    net = model.build()
    assert n_params(net) == expected
    assert net(torch.zeros(2, 3, 8, 8)).shape == (2, 2)


def test_parallel_add_with_axis() -> None:
    block = layers.Parallel([layers.Dense(4), layers.Dense(4)], merge="add")
    assert block.item == {"parallel": {"merge": "add", "branches": [[{"dense": {"units": 4}}],
                                                                    [{"dense": {"units": 4}}]]}}
    concat = layers.Parallel([[layers.Dense(4)], [layers.Dense(4)]], axis=-1)
    assert concat.item["parallel"]["axis"] == -1


def test_name_tie_trainable() -> None:
    model = archlab.Sequential([
        layers.Input((6,), dtype="long"),
        layers.Embedding(50, 8, name="wte"),
        layers.Dense(8, trainable=False),
        layers.Dense(50, use_bias=False, tie="wte"),
    ])
    assert model.spec["layers"] == [
        {"embedding": {"input_dim": 50, "output_dim": 8}, "name": "wte"},
        {"dense": {"units": 8}, "trainable": False},
        {"dense": {"units": 50, "use_bias": False}, "tie": "wte"},
    ]
    analysis = model.analyze()
    assert analysis.total_params == 50 * 8 + (8 * 8 + 8)  # the tied head adds no weight
    assert analysis.trainable_params == 50 * 8
    net = model.build()
    assert n_params(net) == 50 * 8 + 72
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == 400


def test_sequential_add_accepts_items_and_strings() -> None:
    model = archlab.Sequential(name="mixed", input_shape=(4,))
    model.add(layers.Dense(8))
    model.add({"dense": {"units": 3}})
    model.add("softmax")
    assert model.spec == {"name": "mixed", "input": [4],
                          "layers": [{"dense": {"units": 8}}, {"dense": {"units": 3}}, "softmax"]}
    assert model.count_params() == 40 + 27


def test_sequential_task() -> None:
    task = {"kind": "classification", "classes": 10}
    model = archlab.Sequential([layers.Dense(10, input_shape=(4,))], task=task)
    assert model.spec["task"] == task
    assert isinstance(model.to_spec(), Spec)


def test_input_shape_on_a_later_layer_is_an_error() -> None:
    with pytest.raises(SpecError, match="input_shape is given on layer 1; only the first layer takes it"):
        archlab.Sequential([layers.Dense(4, input_shape=(4,)), layers.Dense(4, input_shape=(4,))])
    model = archlab.Sequential([layers.Dense(4, input_shape=(4,))])
    with pytest.raises(SpecError, match="input_shape is given on layer 1"):
        model.add(layers.Dense(2, input_shape=(4,)))


def test_input_after_a_layer_is_an_error() -> None:
    with pytest.raises(SpecError, match="layers.Input is given after 1 layer"):
        archlab.Sequential([layers.Dense(4, input_shape=(4,)), layers.Input((4,))])


@pytest.mark.parametrize("use", ["spec", "to_spec", "count_params", "build", "summary"])
def test_no_input_shape_is_a_spec_error(use: str) -> None:
    model = archlab.Sequential([layers.Dense(4), layers.Dense(2)])
    with pytest.raises(SpecError, match="the model has no input shape: pass input_shape="):
        value = getattr(model, use)
        if callable(value):
            value()


def test_spec_errors_from_the_builder_name_the_path() -> None:
    model = archlab.Sequential([layers.Conv2D(4, 3, input_shape=(1, 8, 8)), layers.Dense(2)])
    with pytest.raises(SpecError) as info:
        model.count_params()
    assert info.value.path == "layers[1]"
    assert "add 'flatten' before it" in str(info.value)
