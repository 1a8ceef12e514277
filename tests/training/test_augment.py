"""``train.augment`` entries: each operation against an independent computation on a tiny batch, the
entries' checks (exit 2 from the CLI), soft targets in the loss, and training with several entries
on: the same under its seed, exactly the same when resumed, evaluation untouched, and a real run."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

import archlab
from archlab._tokens import UNK_ID
from archlab.cli import run
from archlab.exceptions import RegistryError, SpecError
from archlab.training import Callback, make_loss, resolve_recipe, train
from archlab.training._augment import (
    AugmentEntry,
    augmentations,
    build_augment,
    cutout,
    elastic,
    input_traits,
    random_erasing,
    register_augmentation,
    rotate,
)
from archlab.training._engine import Engine


def apply(entries: list, x: torch.Tensor | dict, y: torch.Tensor, seed: int = 0, task: str = "classification",
          classes: int = 10, pad_ids: dict | None = None) -> tuple:
    """The batch as the engine's ``Augment`` callback leaves it, drawing from a generator seeded ``seed``."""
    augment = build_augment(entries, input_traits(x), task, lambda: classes, pad_ids)
    return augment.on_batch(SimpleNamespace(generator=torch.Generator().manual_seed(seed)), x, y)


def test_crop_is_the_padded_image_cut_at_the_drawn_offsets() -> None:
    x = torch.rand(6, 2, 5, 7)
    out, _ = apply([{"crop": {"padding": 3}}], x, torch.zeros(6, dtype=torch.long))
    offsets = torch.randint(0, 7, (2, 6), generator=torch.Generator().manual_seed(0))  # the draws, in order
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3))
    for i in range(6):
        top, left = offsets[:, i].tolist()
        assert torch.equal(out[i], padded[i, :, top:top + 5, left:left + 7])


def test_rotate_by_90_degrees_is_rot90_and_drawn_angles_stay_in_range() -> None:
    x = torch.rand(3, 2, 5, 5)
    torch.testing.assert_close(rotate(x, torch.full((3,), 90.0)), torch.rot90(x, 1, dims=(2, 3)), atol=1e-6, rtol=0)
    torch.testing.assert_close(rotate(x, torch.full((3,), -90.0)), torch.rot90(x, -1, dims=(2, 3)), atol=1e-6, rtol=0)
    wide = torch.rand(2, 1, 4, 6)
    torch.testing.assert_close(rotate(wide, torch.full((2,), 180.0)), torch.flip(wide, (2, 3)), atol=1e-6, rtol=0)
    dot = torch.zeros(200, 1, 21, 21)
    dot[:, :, 10, 20] = 1.0  # a pixel on the right edge's middle: turned by a, it moves to angle a about the centre
    turned, _ = apply([{"rotate": {"degrees": 30}}], dot, torch.zeros(200, dtype=torch.long))
    rows, cols = torch.meshgrid(torch.arange(21.0), torch.arange(21.0), indexing="ij")
    mass = turned[:, 0].sum((1, 2))
    row, col = (turned[:, 0] * rows).sum((1, 2)) / mass, (turned[:, 0] * cols).sum((1, 2)) / mass
    angle = torch.rad2deg(torch.atan2(10 - row, col - 10))  # counter-clockwise, row 0 on top
    assert angle.abs().max() <= 30.5 and angle.min() < -20 and angle.max() > 20


def test_elastic_with_alpha_0_is_the_identity_and_moves_a_ramp_by_at_most_alpha() -> None:
    x = torch.rand(4, 3, 9, 9)
    torch.testing.assert_close(elastic(x, 0.0, 4.0, torch.Generator()), x, atol=1e-6, rtol=0)
    ramp = torch.arange(32.0).expand(8, 1, 32, 32).clone()  # each pixel's value is its column
    moved = elastic(ramp, 2.0, 3.0, torch.Generator().manual_seed(1))
    dx = (moved - ramp)[:, :, 4:-4, 4:-4]  # bilinear on a ramp gives back the sampled column: x + dx
    assert dx.abs().max() <= 2.0 and dx.abs().max() > 0.05
    # smooth: neighbours move alike (unsmoothed uniform noise would differ by 4/3 of its mean size)
    assert dx.diff(dim=-1).abs().mean() < 0.5 * dx.abs().mean()


def test_cutout_zeroes_exactly_size_by_size_pixels() -> None:
    out = cutout(torch.ones(50, 2, 8, 8), 3, 1, torch.Generator().manual_seed(0))
    zero = out == 0
    assert torch.equal(zero[:, 0], zero[:, 1])  # every channel of the square
    zero = zero[:, 0]
    assert torch.equal(zero.sum((1, 2)), torch.full((50,), 9))
    assert torch.equal(zero.any(2).sum(1), torch.full((50,), 3))  # 3 rows
    assert torch.equal(zero.any(1).sum(1), torch.full((50,), 3))  # by 3 columns
    two = cutout(torch.ones(50, 1, 8, 8), 2, 2, torch.Generator().manual_seed(0))
    assert ((two == 0).sum((1, 2, 3)) <= 8).all() and ((two == 0).sum((1, 2, 3)) >= 4).all()


def test_random_erasing_erases_one_rectangle_of_the_drawn_share_with_probability_p() -> None:
    out = random_erasing(torch.ones(400, 1, 10, 10), 0.5, (0.1, 0.3), (0.5, 2.0), torch.Generator().manual_seed(0))
    zero = out[:, 0] == 0
    erased = zero.flatten(1).any(1)
    assert 0.4 < erased.float().mean() < 0.6
    rectangle = zero.any(2)[:, :, None] & zero.any(1)[:, None, :]
    assert torch.equal(zero, rectangle)  # one rectangle, nothing else
    area = zero.sum((1, 2))[erased].float()
    assert area.min() >= 6 and area.max() <= 36  # 10-30% of 100 pixels, sides rounded


def test_mixup_targets_are_the_drawn_mixture_of_one_hots() -> None:
    n = 8
    x = torch.arange(float(n)).view(n, 1, 1, 1).expand(n, 1, 3, 3).clone()  # image i is all i
    y = torch.arange(n)  # so class i is image i
    out, soft = apply([{"mixup": {"alpha": 0.4}}], x, y, seed=3, classes=n)
    generator = torch.Generator().manual_seed(3)
    partner = torch.randperm(n, generator=generator)
    lam = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator))).beta(0.4, 0.4, n)
    lam = torch.from_numpy(lam).float()[:, None]
    eye = torch.eye(n)
    torch.testing.assert_close(soft, lam * eye[y] + (1 - lam) * eye[y[partner]])
    torch.testing.assert_close(soft.sum(1), torch.ones(n))
    torch.testing.assert_close(out[:, 0, 0, 0], soft @ torch.arange(float(n)))  # the images mixed as the targets


def test_cutmix_pastes_the_partners_box_and_targets_its_share() -> None:
    n = 64
    x = torch.arange(float(n)).view(n, 1, 1, 1).expand(n, 2, 10, 12).clone()
    out, soft = apply([{"cutmix": {"alpha": 1.0}}], x, torch.arange(n), seed=5, classes=n)
    torch.testing.assert_close(soft.sum(1), torch.ones(n))
    own = (out[:, 0] == torch.arange(float(n))[:, None, None]).float().mean((1, 2))
    torch.testing.assert_close(soft[torch.arange(n), torch.arange(n)], own)  # share of own pixels = own probability
    pasted = out[:, 0] != torch.arange(float(n))[:, None, None]
    box = pasted.any(2)[:, :, None] & pasted.any(1)[:, None, :]
    assert torch.equal(pasted, box) and (own < 1).sum() > n // 2  # one rectangle per image, most images cut


def test_token_dropout_never_touches_padding() -> None:
    ids = torch.randint(4, 50, (300, 20))
    ids[:, 15:] = 0  # padding
    out, _ = apply([{"token_dropout": {"p": 0.3}}], ids, torch.zeros(300, dtype=torch.long))
    assert torch.equal(out[:, 15:], ids[:, 15:])
    dropped = out[:, :15] != ids[:, :15]
    assert (out[:, :15][dropped] == UNK_ID).all() and 0.27 < dropped.float().mean() < 0.33
    ids[:, 15:] = 9  # an input that declares pad id 9, replaced by its pad id
    out, _ = apply([{"token_dropout": {"p": 0.3, "replace": "pad"}}], ids, torch.zeros(300, dtype=torch.long),
                   pad_ids={"input": 9})
    assert torch.equal(out[:, 15:], ids[:, 15:]) and (out[out != ids] == 9).all()


def test_training_drops_tokens_around_the_models_declared_pad_id() -> None:
    """The engine gives token_dropout each input's pad_id (here 3); a later callback sees the augmented batch."""
    spec = {"name": "tok", "input": {"shape": [6], "dtype": "long", "pad_id": 3},
            "task": {"kind": "classification", "classes": 2},
            "layers": [{"embedding": {"input_dim": 20, "output_dim": 4}}, "flatten",
                       {"dense": {"units": 2, "activation": "softmax"}}]}
    seen = []

    class Spy(Callback):
        def on_batch(self, engine, xb, yb):
            seen.append(xb)
            return xb, yb

    recipe = resolve_recipe({"device": "cpu", "epochs": 1, "batch_size": 50, "validation_split": 0,
                             "augment": [{"token_dropout": {"p": 0.4, "replace": "pad"}}]})
    x = torch.randint(4, 20, (200, 6))
    x[:, 4:] = 3
    Engine(archlab.build(spec), recipe, "classification", verbose=0).fit(x, torch.randint(0, 2, (200,)),
                                                                          callbacks=[Spy()])
    batches = torch.cat(seen)
    assert (batches[:, 4:] == 3).all()
    dropped = (batches[:, :4] == 3).float().mean()
    assert 0.32 < dropped < 0.48 and set(batches[:, :4].unique().tolist()) <= set(range(3, 20))


def test_one_name_is_a_list_of_one_and_none_is_empty() -> None:
    assert resolve_recipe({"augment": "shift"}).augment == ["shift"]
    assert resolve_recipe({"augment": "none"}).augment == [] == resolve_recipe({}).augment
    assert resolve_recipe({"augment": {"rotate": {"degrees": 5}}}).augment == [{"rotate": {"degrees": 5}}]


def test_named_inputs_each_image_and_each_token_input() -> None:
    x = {"image": torch.ones(40, 1, 8, 8), "ids": torch.randint(4, 9, (40, 6)), "vector": torch.ones(40, 3)}
    out, _ = apply([{"cutout": {"size": 2}}, {"token_dropout": {"p": 0.5}}], x, torch.zeros(40, dtype=torch.long))
    assert torch.equal((out["image"] == 0).sum((1, 2, 3)), torch.full((40,), 4))
    assert (out["ids"] == UNK_ID).any() and torch.equal(out["vector"], x["vector"])


def test_soft_targets_take_label_smoothing_in_the_loss() -> None:
    out, soft = torch.randn(5, 4), torch.softmax(torch.randn(5, 4), dim=1)
    smoothed = soft * 0.9 + 0.1 / 4
    want = -(smoothed * out.log_softmax(dim=1)).sum(1).mean()
    torch.testing.assert_close(make_loss("classification", 0.1)(out, soft), want)


@pytest.mark.parametrize(("entries", "x", "task", "match"), [
    (["rotate"], torch.zeros(4, 8000), "classification",
     r"train.augment\[0\]: rotate applies to images \(N, C, H, W\) float; this run's inputs are \(N, 8000\) float; "
     r"entries that apply: none; a waveform \(N, samples\) takes train.augment_audio \(speed, shift, noise_snr_db\)"),
    (["shift", "token_dropout"], torch.zeros(4, 1, 8, 8), "classification",
     r"train.augment\[1\]: token_dropout applies to integer tokens \(N, T\); this run's inputs are \(N, 1, 8, 8\) "
     r"float; entries that apply: crop, cutmix, cutout, elastic, mixup, random_erasing, rotate, shift"),
    (["mixup"], torch.zeros(4, 1, 8, 8), "regression",
     r"train.augment\[0\]: mixup mixes samples .* classification only; this run's task is regression"),
    (["cutout"], {"ids": torch.zeros(4, 5, dtype=torch.long)}, "classification",
     r"this run's inputs are ids \(N, 5\) integer; entries that apply: token_dropout"),
])
def test_entries_that_do_not_fit_are_refused(entries: list, x: object, task: str, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        build_augment(entries, input_traits(x), task, lambda: 2)


def test_a_plugin_entry_takes_part_like_a_built_in() -> None:
    @register_augmentation("negate_test")
    class Negate(AugmentEntry):
        """Images times -1."""

        def transform(self, x: torch.Tensor, generator: torch.Generator, pad_id: int) -> torch.Tensor:
            return -x

    try:
        x = torch.rand(3, 1, 4, 4)
        out, _ = apply(["negate_test"], x, torch.zeros(3, dtype=torch.long))
        assert torch.equal(out, -x) and resolve_recipe({"augment": "negate_test"}).augment == ["negate_test"]
        with pytest.raises(SpecError, match=r"negate_test: unknown option 'k' \(negate_test takes: no options\)"):
            resolve_recipe({"augment": [{"negate_test": {"k": 1}}]})
    finally:
        augmentations.unregister("negate_test")


def test_an_entry_that_augments_nothing_is_refused_when_it_registers() -> None:
    with pytest.raises(RegistryError, match=r"augmentation 'idle_test' \(Idle\) implements neither transform"):
        @register_augmentation("idle_test")
        class Idle(AugmentEntry):
            """Overrides neither hook."""
    assert augmentations.find("idle_test") is None


# -- training with entries on ----------------------------------------------------------------------------------

CNN = {"name": "aug-cnn", "input": [1, 8, 8], "task": {"kind": "classification", "classes": 3},
       "layers": [{"conv2d": {"filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"}},
                  "flatten", {"dropout": {"rate": 0.2}}, {"dense": {"units": 3, "activation": "softmax"}}]}
ENTRIES = ["shift", {"rotate": {"degrees": 15}}, {"elastic": {"alpha": 2, "sigma": 2}}, {"cutout": {"size": 3}},
           "random_erasing", {"mixup": {"alpha": 0.4}}, {"cutmix": {"alpha": 1.0}}]


def images() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    y = torch.arange(60) % 3
    x = torch.rand(60, 1, 8, 8, generator=g) * 0.3
    x[:, :, :, 2:4] += (y == 0).float()[:, None, None, None]  # a bar whose place is the class
    x[:, :, 2:4, :] += (y == 1).float()[:, None, None, None]
    return x, y


def engine(run_dir: Path | None, epochs: int, seed: int = 3, **recipe: object) -> Engine:
    torch.manual_seed(0)
    recipe = {"device": "cpu", "epochs": epochs, "batch_size": 16, "seed": seed, "validation_split": 0,
              "label_smoothing": 0.1, "augment": ENTRIES, **recipe}
    return Engine(archlab.build(CNN), resolve_recipe(recipe), "classification", run_dir=run_dir, verbose=0)


def test_same_seed_same_weights_and_the_entries_reach_the_batches(helpers) -> None:
    x, y = images()
    runs, accuracy = [], []
    for seed, recipe in ((3, {}), (3, {}), (4, {}), (3, {"augment": "none"})):
        eng = engine(None, 2, seed, **recipe)
        history = eng.fit(x, y)
        runs.append(helpers.model_weights(eng))
        accuracy.append(history.history["accuracy"])
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])  # another seed: other draws
    assert not all(torch.equal(runs[0][k], runs[3][k]) for k in runs[0])
    assert all(0 <= a <= 1 for a in accuracy[0])  # counted against each mixed sample's dominant class


def test_resumed_run_ends_with_the_uninterrupted_weights(tmp_path: Path, helpers) -> None:
    helpers.assert_resume_is_exact(tmp_path, engine, *images())


def test_validation_sees_the_batches_as_they_are() -> None:
    x, y = images()
    eng = engine(None, 1)
    history = eng.fit(x[:45], y[:45], x[45:], y[45:])
    metrics, _ = eng.evaluate(x[45:], y[45:])  # the plain split, after training: what validation must have seen
    assert history.history["val_loss"] == [metrics["loss"]] and history.history["val_accuracy"] == [metrics["accuracy"]]


def test_digits_with_shift_and_rotate_trains_well(helpers) -> None:
    """A pixel of an 8 x 8 digit is an eighth of it: shift by 1 (2 slows this CNN's 3 epochs to ~0.5)."""
    spec = helpers.spec_with(helpers.small_cnn, data="digits", epochs=3, batch_size=32, device="cpu",
                             optimizer={"name": "adam", "lr": 1e-2},
                             augment=[{"shift": {"pixels": 1}}, {"rotate": {"degrees": 10}}])
    result = train(spec, out=None, verbose=0)
    assert result.test_metrics["accuracy"] > 0.8  # seeds 0, 1, 2: 0.856, 0.831, 0.878; no augmentation: 0.917


# -- bad input through the CLI ---------------------------------------------------------------------------------

IMAGE_SPEC = {"name": "bad", "input": [1, 8, 8], "task": {"kind": "classification", "classes": 10},
              "layers": ["flatten", {"dense": {"units": 10, "activation": "softmax"}}]}
FLAT_SPEC = {"name": "flat", "input": [64], "task": {"kind": "classification", "classes": 10},
             "layers": [{"dense": {"units": 10, "activation": "softmax"}}]}
REGRESSION_SPEC = {"name": "reg", "input": [1, 4, 4], "task": {"kind": "regression"},
                   "layers": ["flatten", {"dense": {"units": 1}}]}


@pytest.mark.parametrize(("spec", "data", "augment", "expected"), [
    (IMAGE_SPEC, "digits", ["shift", "rotat"],
     "train.augment[1]: unknown augmentation 'rotat'; did you mean 'rotate'? (known: crop,"),
    (IMAGE_SPEC, "digits", [{"cutout": {"size": 0}}],
     "train.augment[0]: cutout.size: input should be greater than or equal to 1; got 0 (cutout takes: size, count)"),
    (FLAT_SPEC, "flat.npz", ["rotate"],
     "train.augment[0]: rotate applies to images (N, C, H, W) float; this run's inputs are (N, 64) float; "
     "entries that apply: none"),
    (REGRESSION_SPEC, "reg.npz", ["shift", {"mixup": {"alpha": 0.2}}],
     "train.augment[1]: mixup mixes samples and their class targets, for classification only; this run's task "
     "is regression"),
])
def test_cli_refuses_bad_entries_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture, spec: dict, data: str,
                                             augment: list, expected: str) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "flat.npz", x=rng.random((40, 64), np.float32), y=np.arange(40) % 10)
    np.savez(tmp_path / "reg.npz", x=rng.random((40, 1, 4, 4), np.float32), y=rng.random(40, np.float32))
    source = data if data == "digits" else f"npz:{tmp_path / data}"
    body = {**spec, "train": {"data": source, "epochs": 1, "device": "cpu", "augment": augment}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(body))
    code = run(["train", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and "Traceback" not in err, err
    assert not list(tmp_path.glob("runs/*/last.safetensors"))  # refused before any epoch
