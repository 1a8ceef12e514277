"""train.bucketing: batches of similar lengths, trimmed of their all-padding columns, reproducible
with the seed and exact on resume; token targets counted per second."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import archlab
from archlab.exceptions import SpecError
from archlab.training import Callback, Recipe
from archlab.training._engine import TARGETS, Engine, bucketed_batches, trim_groups, trim_padding

V, D, WIDTH = 13, 8, 9


def _spec(width: int = WIDTH) -> dict:
    """A tiny Transformer encoder-decoder: inputs source and target (<s> + tokens), logits (T, V)."""
    return {
        "inputs": {"source": {"shape": [width], "dtype": "long", "pad_id": 0},
                   "target": {"shape": [width], "dtype": "long", "pad_id": 0}},
        "graph": {
            "src": {"from": "source", "layers": [{"embedding": {"input_dim": V, "output_dim": D}},
                                                  {"positional_embedding": {"max_len": WIDTH}},
                                                  {"transformer_encoder": {"num_heads": 2, "ff_dim": 16}}]},
            "tgt": {"from": "target", "layers": [{"embedding": {"input_dim": V, "output_dim": D}},
                                                  {"positional_embedding": {"max_len": WIDTH}}]},
            "dec": {"from": ["tgt", "src"],
                    "layers": [{"transformer_decoder": {"num_heads": 2, "ff_dim": 16, "causal": True}},
                               {"dense": {"units": V}}]},
        },
        "outputs": "dec",
    }


def _data(n: int = 40, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Copy task rows of lengths 1..WIDTH-1: target = <s> tokens, y = tokens </s>, padded with 0."""
    g = torch.Generator().manual_seed(seed)
    source, target, y = (torch.zeros(n, WIDTH, dtype=torch.long) for _ in range(3))
    for i in range(n):
        k = int(torch.randint(1, WIDTH - 1, (1,), generator=g))
        tokens = torch.randint(4, V, (k,), generator=g)
        source[i, :k], target[i, 0], target[i, 1:k + 1] = tokens, 2, tokens
        y[i, :k], y[i, k] = tokens, 3
    return {"source": source, "target": target}, y


def _token_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out.transpose(1, 2), y, ignore_index=0)


def test_trimmed_batch_has_the_loss_of_the_untrimmed_one():
    torch.manual_seed(0)
    model = archlab.build(_spec()).eval()
    x, y = _data()
    short = {k: v[:6] for k, v in x.items()}
    short["source"][:, 5:] = 0  # a batch of short rows: columns 5.. are all padding
    short["target"][:, 5:] = 0
    yb = y[:6].clone()
    yb[:, 5:] = 0
    xt, yt = trim_padding(short, yb, model.masks.pad_ids)
    assert xt["target"].shape[1] == yt.shape[1] <= 5 < WIDTH and xt["source"].shape[1] <= 5
    with torch.no_grad():
        full, trimmed = _token_loss(model(**short), yb), _token_loss(model(**xt), yt)
    torch.testing.assert_close(trimmed, full, atol=1e-6, rtol=1e-5)
    assert torch.equal(xt["source"], short["source"][:, :xt["source"].shape[1]])


def test_the_source_is_cut_to_its_own_length_and_the_targets_with_the_target():
    # the copy rows: target and y are one longer than the source, so a batch's source needs one column less
    torch.manual_seed(0)
    model = archlab.build(_spec()).eval()
    groups = trim_groups(model, model.masks.pad_ids)
    assert sorted(map(sorted, groups)) == [[TARGETS, "target"], ["source"]]
    x, y = _data()
    xb, yb = {k: v[:6] for k, v in x.items()}, y[:6]
    longest = int((xb["source"] != 0).sum(1).max())
    xt, yt = trim_padding(xb, yb, model.masks.pad_ids, groups)
    assert xt["source"].shape[1] == longest and xt["target"].shape[1] == yt.shape[1] == longest + 1
    with torch.no_grad():
        torch.testing.assert_close(_token_loss(model(**xt), yt), _token_loss(model(**xb), yb), atol=1e-6, rtol=1e-5)


def test_inputs_merged_position_by_position_are_cut_to_one_width():
    # a segment input added to the source step by step: the two keep one width, the target its own
    spec = _spec()
    spec["inputs"]["segment"] = {"shape": [WIDTH], "dtype": "long", "pad_id": 0}
    spec["graph"] = {"ids": {"from": "source", "layers": [{"embedding": {"input_dim": V, "output_dim": D}}]},
                     "seg": {"from": "segment", "layers": [{"embedding": {"input_dim": 3, "output_dim": D}}]},
                     "src": {"from": ["ids", "seg"], "merge": "add", "layers": spec["graph"]["src"]["layers"][1:]},
                     **{k: v for k, v in spec["graph"].items() if k != "src"}}
    model = archlab.build(spec).eval()
    groups = trim_groups(model, model.masks.pad_ids)
    assert sorted(map(sorted, groups)) == [[TARGETS, "target"], ["segment", "source"]]
    x, y = _data()
    xb, yb = {k: v[:6] for k, v in x.items()}, y[:6]
    xb["segment"] = torch.zeros_like(xb["source"])
    xb["segment"][:, 0] = 1  # only the first step is marked: its own width would be 1
    xt, yt = trim_padding(xb, yb, model.masks.pad_ids, groups)
    longest = int((xb["source"] != 0).sum(1).max())
    assert xt["source"].shape[1] == xt["segment"].shape[1] == longest > 1
    assert xt["target"].shape[1] == yt.shape[1] == longest + 1
    with torch.no_grad():
        assert model(**xt).shape == (6, longest + 1, V)


def test_without_the_masks_telling_tensors_of_one_length_are_cut_to_one_width():
    spec = {"inputs": {"a": {"shape": [WIDTH], "dtype": "long", "pad_id": 0},
                       "b": {"shape": [WIDTH], "dtype": "long", "pad_id": 0}},
            "graph": {"ea": {"from": "a", "layers": [{"embedding": {"input_dim": V, "output_dim": D}}]},
                      "eb": {"from": "b", "layers": [{"embedding": {"input_dim": V, "output_dim": D}}]},
                      "out": {"from": ["ea", "eb"], "merge": "add", "layers": [{"dense": {"units": V}}]}},
            "outputs": "out"}
    model = archlab.build(spec)
    assert trim_groups(model, model.masks.pad_ids) is None  # the sum's steps are no one input's
    a, b = torch.zeros(2, WIDTH, dtype=torch.long), torch.zeros(2, WIDTH, dtype=torch.long)
    a[:, :2], b[:, :4] = 5, 6
    xt, yt = trim_padding({"a": a, "b": b}, a.clone(), model.masks.pad_ids)
    assert xt["a"].shape[1] == xt["b"].shape[1] == yt.shape[1] == 4
    assert model(**xt).shape == (2, 4, V)


def test_bucketed_fit_feeds_the_source_at_its_own_length():
    class Widths(Callback):
        def __init__(self) -> None:
            self.seen: list[tuple[int, int, int]] = []

        def on_batch(self, engine, xb, yb):
            self.seen.append((xb["source"].shape[1], xb["target"].shape[1], yb.shape[1]))
            return xb, yb

    torch.manual_seed(0)
    recipe = Recipe(epochs=1, batch_size=8, bucketing=True, device="cpu", validation_split=0.0)
    engine = Engine(archlab.build(_spec()), recipe, "regression", verbose=0,
                    criterion=lambda xb, out, yb: _token_loss(out, yb))
    x, y = _data()
    widths = Widths()
    engine.fit(x, y, callbacks=[widths])
    assert len(widths.seen) == 5
    for source, target, targets in widths.seen:  # every batch's target is one longer than its source
        assert source + 1 == target == targets


def test_bucketed_batches_group_lengths_and_repeat_with_the_seed():
    lengths = torch.randint(1, 50, (1000,), generator=torch.Generator().manual_seed(1))

    def draw(seed: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return bucketed_batches(torch.randperm(1000, generator=g), lengths, 10, g)

    first, again, other = draw(0), draw(0), draw(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    assert sorted(torch.cat(first).tolist()) == list(range(1000)) and len(first) == 100
    spread = sum(int(lengths[b].max() - lengths[b].min()) for b in first) / len(first)
    assert spread <= 3  # random batches of 10 of lengths 1..49 spread about 40
    assert [len(b) for b in bucketed_batches(torch.arange(25), lengths, 10, None)] == [10, 10, 5]


def _fit(tmp_path, name: str, epochs: int, resume: bool = False) -> tuple[Engine, list[dict]]:
    torch.manual_seed(0)
    model = archlab.build(_spec())
    recipe = Recipe(epochs=epochs, batch_size=8, bucketing=True, device="cpu", validation_split=0.0,
                    optimizer={"name": "adam", "lr": 0.01})
    engine = Engine(model, recipe, "regression", run_dir=tmp_path / name, verbose=0,
                    criterion=lambda xb, out, yb: _token_loss(out, yb))
    (tmp_path / name).mkdir(exist_ok=True)
    x, y = _data()
    history = engine.fit(x, y, resume=resume)
    return engine, [{k: v for k, v in zip(history.history, vals, strict=True)}
                    for vals in zip(*history.history.values(), strict=True)]


def test_bucketed_training_resumes_exactly_and_counts_tokens(tmp_path):
    whole, rows = _fit(tmp_path, "whole", 3)
    _fit(tmp_path, "split", 2)
    resumed, resumed_rows = _fit(tmp_path, "split", 3, resume=True)
    assert [r["loss"] for r in resumed_rows] == [r["loss"] for r in rows]
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    tokens = int((_data()[1] != 0).sum())
    assert all(r["tokens_per_s"] == pytest.approx(tokens / r["seconds"], rel=0.05) for r in rows)
    assert rows[-1]["loss"] < rows[0]["loss"]


def test_bucketing_needs_a_pad_id():
    spec = _spec()
    for value in spec["inputs"].values():
        del value["pad_id"]
    with pytest.raises(SpecError, match="no input of the spec declares a pad_id"):
        Engine(archlab.build(spec), Recipe(bucketing=True, device="cpu"), "regression", verbose=0)


def test_bucketing_is_checked_with_the_recipe_before_any_data():
    from archlab.spec import Spec
    from archlab.training._recipe import resolve_recipe
    from archlab.training._train import resolve_task

    spec = Spec.from_dict({"name": "s", **_spec()})
    assert resolve_task(resolve_recipe({"bucketing": True}), spec).name == "classification"
    with pytest.raises(SpecError, match="train.data_loading: memory") as info:
        resolve_task(resolve_recipe({"bucketing": True, "data_loading": "stream"}), spec)
    assert info.value.path == "train.data_loading"
    bare = _spec()
    for value in bare["inputs"].values():
        del value["pad_id"]
    with pytest.raises(SpecError, match="declares a pad_id") as info:
        resolve_task(resolve_recipe({"bucketing": True}), Spec.from_dict({"name": "s", **bare}))
    assert info.value.path == "train.bucketing"
