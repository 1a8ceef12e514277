"""``train.augment``: image and text augmentation as recipe entries, each a name or ``{name: {options}}``
(``augment: [shift, {rotate: {degrees: 10}}, {mixup: {alpha: 0.2}}]``), applied in order to each
training batch by the ``Augment`` callback and never at evaluation (only training batches pass
``on_batch``).

Each entry is a class in the ``augmentations`` registry (``@register_augmentation``): its options
(a pydantic model), the inputs it applies to (``InputKind``: images (N, C, H, W) float, or integer
tokens (N, T)) and whether it mixes samples (and so their targets: classification only). A
plugin's entry takes part as a built-in does. Every draw is per sample and comes from the engine's
generator, whose state the checkpoint keeps: a run is the same under its seed and a resumed run
draws what it would have. Waveforms have their own section, ``augment_audio`` (``_audio_augment.py``).

The geometry is torch's own (``affine_grid``/``grid_sample``), vectorised over the batch, rather than
torchvision's transforms: no torchvision release matches the torch pinned here (2.13), so archlab may
not depend on it; and its transforms draw one set of parameters per call (a whole batch turned by one
angle) from torch's global RNG, where these draw per sample from the engine's generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from torch import nn

from archlab._inputs import SINGLE, as_named, fmt_shape, is_named
from archlab._registry import Registry
from archlab._tokens import PAD_ID, UNK_ID
from archlab.exceptions import RegistryError, SpecError, suggest

from ._callbacks import Callback

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["IMAGES", "TOKENS", "Augment", "AugmentEntry", "InputKind", "augmentations", "beta", "build_augment",
           "cutout", "dominant_label", "elastic", "input_traits", "mix_targets", "parse_augment", "random_erasing",
           "register_augmentation", "rotate", "shift", "token_dropout"]

#: a training input as the checks see it: its shape with the rows first, and whether it holds floats
InputTraits = tuple[tuple[int, ...], bool]


@dataclass(frozen=True)
class InputKind:
    """The inputs an entry applies to: ``fits(shape, floating)``, and how a message names them."""

    description: str
    fits: Callable[[tuple[int, ...], bool], bool]


IMAGES = InputKind("images (N, C, H, W) float", lambda shape, floating: len(shape) == 4 and floating)
TOKENS = InputKind("integer tokens (N, T)", lambda shape, floating: len(shape) == 2 and not floating)


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AugmentEntry:
    """One ``train.augment`` entry. Subclass it, set ``Options`` and ``applies_to`` (and ``mixes``
    for an entry that mixes samples), implement ``transform`` (one input, per sample), or
    ``__call__`` (all the inputs it applies to at once, and the targets), and register it with
    ``@register_augmentation("name")``."""

    name: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = _Options
    applies_to: ClassVar[InputKind] = IMAGES
    #: mixes samples and their targets, which become class probabilities (N, classes): classification only
    mixes: ClassVar[bool] = False

    def __init__(self, options: BaseModel) -> None:
        self.options = options

    def __call__(self, inputs: dict[str, torch.Tensor], y: torch.Tensor, generator: torch.Generator,
                 pad_ids: Mapping[str, int]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The inputs it applies to (by name) and the targets, augmented: each input on its own draws,
        by the subclass's ``transform(x, generator, pad_id)`` (``pad_id``: that input's pad id)."""
        return {name: self.transform(x, generator, pad_ids.get(name, PAD_ID)) for name, x in inputs.items()}, y


#: the augmentation entries by name; plugins register through the ``archlab.augmentations`` entry points
augmentations: Registry[type[AugmentEntry]] = Registry("augmentation", "archlab.augmentations")


def register_augmentation(name: str) -> Callable[[type[AugmentEntry]], type[AugmentEntry]]:
    """Register an ``AugmentEntry`` subclass as the ``train.augment`` entry ``name``."""

    def add(cls: type[AugmentEntry]) -> type[AugmentEntry]:
        if not (isinstance(cls, type) and issubclass(cls, AugmentEntry)):
            raise RegistryError(f"augmentation {name!r} must subclass AugmentEntry; got {cls!r}")
        if not hasattr(cls, "transform") and cls.__call__ is AugmentEntry.__call__:
            # refused here, at import, rather than at the first training batch
            raise RegistryError(f"augmentation {name!r} ({cls.__name__}) implements neither transform(x, "
                                "generator, pad_id) nor __call__(inputs, y, generator, pad_ids)")
        cls.name = name
        augmentations.add(name, cls)
        return cls

    return add


# -- the operations, vectorised over the batch: (N, C, H, W) -------------------------------------------------------

def _uniform(low: float | torch.Tensor, high: float | torch.Tensor, rows: int,
             generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(rows, generator=generator)


def beta(alpha: float, rows: int, generator: torch.Generator) -> torch.Tensor:
    """``rows`` draws of Beta(alpha, alpha) (mixup's and cutmix's lambda), float32 on the CPU. torch's
    Beta takes no generator, so one int64 drawn from ``generator`` seeds numpy's: the same under a
    seed, and a resumed run (whose generator state the checkpoint keeps) draws the same."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.from_numpy(np.random.default_rng(seed).beta(alpha, alpha, rows)).float()


def shift(x: torch.Tensor, generator: torch.Generator, pixels: int = 2) -> torch.Tensor:
    """Translate each image by up to ``pixels`` in each direction, filling with zeros: a random
    crop of the image padded by ``pixels`` on each side."""
    batch, _, height, width = x.shape  # (B, C, H, W)
    padded = nn.functional.pad(x, (pixels, pixels, pixels, pixels))
    offsets = torch.randint(0, 2 * pixels + 1, (2, batch), generator=generator).to(x.device)
    rows = (offsets[0, :, None] + torch.arange(height, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (offsets[1, :, None] + torch.arange(width, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
    b = torch.arange(batch, device=x.device)[:, None, None, None]
    c = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[b, c, rows, cols]


def _sample(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear resampling of ``x`` at ``grid`` (N, H, W, 2) in [-1, 1], zeros outside."""
    return nn.functional.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Each image turned by its angle (N,) in degrees, counter-clockwise as displayed (row 0 on top),
    about its centre, bilinear, zeros coming in at the corners. The normalised grid's axes are scaled
    by the aspect ratio, so that a non-square image turns rigidly."""
    batch, _, height, width = x.shape  # (N, C, H, W)
    angle = torch.deg2rad(degrees.double())
    cos, sin = angle.cos(), angle.sin()
    theta = torch.zeros(batch, 2, 3, dtype=torch.float64)  # output (x, y) in [-1, 1] -> input (x, y)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * height / width
    theta[:, 1, 0], theta[:, 1, 1] = sin * width / height, cos
    grid = nn.functional.affine_grid(theta, [batch, 1, height, width], align_corners=False)  # (N, H, W, 2)
    return _sample(x, grid.to(x.device))


def _gaussian_blur(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """``field`` (M, 1, H, W) smoothed by a Gaussian of ``sigma`` pixels (separable, zero padding)."""
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=field.dtype)
    kernel = torch.exp(-taps**2 / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(field.device)
    field = nn.functional.conv2d(field, kernel.view(1, 1, 1, -1), padding=(0, radius))
    return nn.functional.conv2d(field, kernel.view(1, 1, -1, 1), padding=(radius, 0))


def elastic(x: torch.Tensor, alpha: float, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Simard et al. (2003)'s elastic distortion: per image, a displacement field of uniform(-1, 1)
    per pixel and axis, smoothed by a Gaussian of ``sigma`` pixels and scaled by ``alpha`` pixels,
    by which each output pixel samples the input (bilinear, zeros outside). alpha 0: the identity."""
    batch, _, height, width = x.shape  # (N, C, H, W)
    noise = 2 * torch.rand(batch * 2, 1, height, width, generator=generator) - 1
    field = alpha * _gaussian_blur(noise, sigma).view(batch, 2, height, width)  # (N, [dx, dy], H, W) in pixels
    identity = torch.eye(2, 3).expand(batch, 2, 3)
    grid = nn.functional.affine_grid(identity, [batch, 1, height, width], align_corners=False)  # (N, H, W, 2)
    scale = torch.tensor([2 / width, 2 / height])  # one pixel in the normalised grid
    grid = grid + field.permute(0, 2, 3, 1) * scale
    return _sample(x, grid.to(x.device))


def _box_mask(top: torch.Tensor, left: torch.Tensor, h: torch.Tensor, w: torch.Tensor,
              height: int, width: int) -> torch.Tensor:
    """(N, 1, H, W) True inside each row's box of ``h`` x ``w`` pixels at (``top``, ``left``)."""
    rows = torch.arange(height)[None, :] - top[:, None]  # (N, H)
    cols = torch.arange(width)[None, :] - left[:, None]  # (N, W)
    inside_rows = (rows >= 0) & (rows < h[:, None])
    inside_cols = (cols >= 0) & (cols < w[:, None])
    return (inside_rows[:, :, None] & inside_cols[:, None, :])[:, None]


def cutout(x: torch.Tensor, size: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """DeVries & Taylor (2017)'s cutout: ``count`` squares of ``size`` x ``size`` pixels (at most
    the image) set to 0 in each image, each placed uniformly where it fits whole (theirs may cross
    the border, hiding less), so a square always hides size² pixels; squares may overlap."""
    batch, _, height, width = x.shape  # (N, C, H, W)
    side = min(size, height, width)
    hidden = torch.zeros(batch, 1, height, width, dtype=torch.bool)
    edge = torch.full((batch,), side)
    for _ in range(count):
        top = torch.randint(0, height - side + 1, (batch,), generator=generator)
        left = torch.randint(0, width - side + 1, (batch,), generator=generator)
        hidden |= _box_mask(top, left, edge, edge, height, width)
    return x.masked_fill(hidden.to(x.device), 0)


def random_erasing(x: torch.Tensor, p: float, scale: tuple[float, float], ratio: tuple[float, float],
                   generator: torch.Generator) -> torch.Tensor:
    """Zhong et al. (2020)'s random erasing: with probability ``p`` per image, a rectangle of a
    fraction of the area drawn from ``scale`` and an aspect ratio (height / width) drawn
    log-uniformly from ``ratio`` set to 0, placed uniformly where it fits. Where theirs draws again
    until the rectangle fits, its sides are clipped to the image's here (one draw, vectorised)."""
    batch, _, height, width = x.shape  # (N, C, H, W)
    erase = torch.rand(batch, generator=generator) < p
    area = _uniform(*scale, batch, generator) * height * width
    aspect = torch.exp(_uniform(math.log(ratio[0]), math.log(ratio[1]), batch, generator))
    h = (area * aspect).sqrt().round().clamp(1, height).long()
    w = (area / aspect).sqrt().round().clamp(1, width).long()
    top = (torch.rand(batch, generator=generator) * (height - h + 1)).floor().long()
    left = (torch.rand(batch, generator=generator) * (width - w + 1)).floor().long()
    hidden = _box_mask(top, left, h, w, height, width) & erase[:, None, None, None]
    return x.masked_fill(hidden.to(x.device), 0)


def token_dropout(x: torch.Tensor, p: float, replacement: int, pad_id: int, generator: torch.Generator) -> torch.Tensor:
    """Each token of (N, T) ids that is not padding replaced by ``replacement`` with probability ``p``
    (word dropout, Bowman et al. 2016; Sennrich et al. 2016 with the pad id)."""
    drop = (torch.rand(x.shape, generator=generator) < p).to(x.device) & (x != pad_id)
    return x.masked_fill(drop, replacement)


def _broadcast(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N,) values shaped (N, 1, ...) to multiply ``like`` (N, ...) row by row, on its device and dtype."""
    return values.to(like.device, like.dtype).view(-1, *([1] * (like.dim() - 1)))


def mix_targets(y: torch.Tensor, partner: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Class probabilities (N, classes): ``lam`` of each row's own and 1 - ``lam`` of its partner's."""
    weight = _broadcast(lam, y)
    return weight * y + (1 - weight) * y[partner.to(y.device)]


def dominant_label(y: torch.Tensor) -> torch.Tensor:
    """The class with the largest share of each row of class probabilities (N, classes): what the
    epoch's training accuracy counts a mixed sample against."""
    return y.argmax(dim=1)


# -- the entries ---------------------------------------------------------------------------------------------------

class ShiftOptions(_Options):
    pixels: Annotated[int, Field(ge=1)] = 2


@register_augmentation("shift")
class Shift(AugmentEntry):
    """Each image translated by up to ``pixels`` on each axis, zeros coming in."""

    Options = ShiftOptions

    def transform(self, x: torch.Tensor, generator: torch.Generator, pad_id: int) -> torch.Tensor:
        return shift(x, generator, self.options.pixels)


class CropOptions(_Options):
    padding: Annotated[int, Field(ge=1)] = 4


@register_augmentation("crop")
class Crop(AugmentEntry):
    """CIFAR's random crop: the image padded by ``padding`` zeros on each side, cut back to its size at
    a random place; that is a shift of up to ``padding`` pixels, so it is ``shift``'s operation."""

    Options = CropOptions

    def transform(self, x: torch.Tensor, generator: torch.Generator, pad_id: int) -> torch.Tensor:
        return shift(x, generator, self.options.padding)


class RotateOptions(_Options):
    degrees: Annotated[float, Field(gt=0, le=180)] = 10.0


@register_augmentation("rotate")
class Rotate(AugmentEntry):
    """Each image turned by an angle drawn uniformly from [-degrees, degrees]."""

    Options = RotateOptions

    def transform(self, x: torch.Tensor, generator: torch.Generator, pad_id: int) -> torch.Tensor:
        degrees = self.options.degrees
        return rotate(x, _uniform(-degrees, degrees, len(x), generator))


class ElasticOptions(_Options):
    #: Simard et al.'s values for 28 x 28 MNIST digits, in pixels
    alpha: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 34.0
    sigma: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 4.0


@register_augmentation("elastic")
class Elastic(AugmentEntry):
    """Simard et al. (2003)'s elastic distortion (``elastic``)."""

    Options = ElasticOptions

    def transform(self, x: torch.Tensor, generator: torch.Generator, pad_id: int) -> torch.Tensor:
        return elastic(x, self.options.alpha, self.options.sigma, generator)


class CutoutOptions(_Options):
    size: Annotated[int, Field(ge=1)] = 8
    count: Annotated[int, Field(ge=1)] = 1


@register_augmentation("cutout")
class Cutout(AugmentEntry):
    """``count`` squares of ``size`` pixels set to 0 in each image (``cutout``)."""

    Options = CutoutOptions

    def transform(self, x: torch.Tensor, generator: torch.Generator, pad_id: int) -> torch.Tensor:
        return cutout(x, self.options.size, self.options.count, generator)


def _low_first(value: tuple[float, float]) -> tuple[float, float]:
    if value[0] > value[1]:
        raise ValueError("a [low, high] range, low first")
    return value


class RandomErasingOptions(_Options):
    p: Annotated[float, Field(gt=0, le=1)] = 0.5
    scale: tuple[Annotated[float, Field(gt=0, le=1)], Annotated[float, Field(gt=0, le=1)]] = (0.02, 0.4)
    ratio: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]] = (0.3, 3.3)

    @field_validator("scale", "ratio")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        return _low_first(value)


@register_augmentation("random_erasing")
class RandomErasing(AugmentEntry):
    """Zhong et al. (2020)'s random erasing (``random_erasing``); defaults are theirs (s_l 0.02, s_h 0.4, r_1 0.3)."""

    Options = RandomErasingOptions

    def transform(self, x: torch.Tensor, generator: torch.Generator, pad_id: int) -> torch.Tensor:
        o = self.options
        return random_erasing(x, o.p, o.scale, o.ratio, generator)


class MixupOptions(_Options):
    alpha: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 0.2  # Zhang et al.'s for ImageNet


class CutMixOptions(_Options):
    alpha: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0  # Yun et al.'s: lam uniform


class _Mixing(AugmentEntry):
    """An entry that mixes each sample with a partner (the batch permuted, drawn first) and its
    class probabilities with the partner's. Each subclass defines ``mix(inputs, partner, generator)``:
    the mixed inputs and each sample's own share of its targets."""

    mixes = True

    def __call__(self, inputs: dict[str, torch.Tensor], y: torch.Tensor, generator: torch.Generator,
                 pad_ids: Mapping[str, int]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        partner = torch.randperm(len(y), generator=generator)
        mixed, own = self.mix(inputs, partner, generator)
        return mixed, mix_targets(y, partner, own)


@register_augmentation("mixup")
class Mixup(_Mixing):
    """Zhang et al. (2018)'s mixup: each sample becomes lam of itself and 1 - lam of a partner (the
    batch permuted), lam ~ Beta(alpha, alpha) drawn per sample; so do its class probabilities.
    Every image input of a sample is mixed with the same partner and lam; integer inputs are not."""

    Options = MixupOptions

    def mix(self, inputs: dict[str, torch.Tensor], partner: torch.Tensor,
            generator: torch.Generator) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        lam = beta(self.options.alpha, len(partner), generator)
        mixed = {}
        for name, x in inputs.items():
            weight = _broadcast(lam, x)
            mixed[name] = weight * x + (1 - weight) * x[partner.to(x.device)]
        return mixed, lam


@register_augmentation("cutmix")
class CutMix(_Mixing):
    """Yun et al. (2019)'s CutMix: per sample, a box of a partner's image (the batch permuted) pasted
    in: lam ~ Beta(alpha, alpha), a box of sides sqrt(1 - lam) of the image's, centred uniformly and
    clipped to the image; the targets take 1 - lam = the box's share of the pixels. With several
    image inputs, each takes the box at the same place relative to its size, and the targets the
    first's share."""

    Options = CutMixOptions

    def mix(self, inputs: dict[str, torch.Tensor], partner: torch.Tensor,
            generator: torch.Generator) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        rows = len(partner)
        side = (1 - beta(self.options.alpha, rows, generator)).sqrt()  # the box's side, a fraction of the image's
        centre_y, centre_x = torch.rand(rows, generator=generator), torch.rand(rows, generator=generator)
        mixed, kept = {}, None
        for name, x in inputs.items():
            height, width = x.shape[-2:]  # (N, C, H, W)
            top = ((centre_y - side / 2) * height).round().long().clamp(0, height)
            bottom = ((centre_y + side / 2) * height).round().long().clamp(0, height)
            left = ((centre_x - side / 2) * width).round().long().clamp(0, width)
            right = ((centre_x + side / 2) * width).round().long().clamp(0, width)
            box = _box_mask(top, left, bottom - top, right - left, height, width).to(x.device)
            mixed[name] = torch.where(box, x[partner.to(x.device)], x)
            if kept is None:
                kept = 1 - ((bottom - top) * (right - left)).float() / (height * width)
        return mixed, kept


class TokenDropoutOptions(_Options):
    p: Annotated[float, Field(gt=0, lt=1)] = 0.1
    #: unk: the tokenizer's <unk> id; pad: the input's pad id (as if the token were missing)
    replace: Literal["unk", "pad"] = "unk"


@register_augmentation("token_dropout")
class TokenDropout(AugmentEntry):
    """Each non-padding token of integer (N, T) inputs replaced by <unk> (or the pad id) with probability ``p``."""

    Options = TokenDropoutOptions
    applies_to = TOKENS

    def transform(self, x: torch.Tensor, generator: torch.Generator, pad_id: int) -> torch.Tensor:
        replacement = UNK_ID if self.options.replace == "unk" else pad_id
        return token_dropout(x, self.options.p, replacement, pad_id, generator)


# -- the recipe's entries, checked, and the callback -------------------------------------------------------------

def parse_augment(entries: list[Any], where: str = "train.augment") -> list[AugmentEntry]:
    """The recipe's ``augment`` list as entries with their validated options; a SpecError at
    ``train.augment[i]`` for an unknown name (the closest and the known ones) or bad options.

    Example:
        >>> [(e.name, e.options.degrees) for e in parse_augment([{"rotate": {"degrees": 5}}])]
        [('rotate', 5.0)]
    """
    parsed = []
    for i, entry in enumerate(entries):
        path = f"{where}[{i}]"
        if isinstance(entry, str):
            name, options = entry, {}
        elif isinstance(entry, Mapping) and len(entry) == 1 and isinstance(next(iter(entry.values())),
                                                                           (Mapping, type(None))):
            name, options = next(iter(entry.items()))
        else:
            raise SpecError(f"an entry is a name or {{name: {{options}}}} (one name); got {entry!r}", path)
        cls = augmentations.find(name) if isinstance(name, str) else None
        if cls is None:
            raise SpecError(augmentations.unknown(name), path)
        try:
            parsed.append(cls(cls.Options.model_validate(options or {})))
        except ValidationError as exc:
            err = exc.errors()[0]
            option = ".".join(str(p) for p in err["loc"])
            known = list(cls.Options.model_fields)
            takes = f"({name} takes: {', '.join(known) or 'no options'})"
            if err["type"] == "extra_forbidden":
                raise SpecError(f"{name}: unknown option '{option}'{suggest(option, known)} {takes}", path) from None
            msg = err["msg"].removeprefix("Value error, ")
            raise SpecError(f"{name}.{option}: {msg[0].lower()}{msg[1:]}; got {err.get('input')!r} {takes}",
                            path) from None
    return parsed


def input_traits(x: Any) -> dict[str, InputTraits]:
    """Each training input by name (one tensor: ``input``): its shape, the rows as N, and whether it
    holds floats. ``x``: tensors, or the streamed split (``MappedSplit``: ``shapes`` and ``dtypes``)."""
    if hasattr(x, "dtypes"):
        shapes, dtypes = as_named(x.shapes), as_named(x.dtypes)
        return {name: ((len(x), *shapes[name]), np.dtype(dtypes[name]).kind == "f") for name in shapes}
    return {name: (tuple(t.shape), t.is_floating_point()) for name, t in as_named(x).items()}


def _describe(traits: dict[str, InputTraits]) -> str:
    def one(shape: tuple[int, ...], floating: bool) -> str:
        return f"{fmt_shape(('N', *shape[1:]))} {'float' if floating else 'integer'}"  # type: ignore[arg-type]

    if list(traits) == [SINGLE]:
        return one(*traits[SINGLE])
    return ", ".join(f"{name} {one(*t)}" for name, t in traits.items())


def build_augment(entries: list[Any], traits: dict[str, InputTraits], task_name: str,
                  classes: Callable[[], int], pad_ids: Mapping[str, int] | None = None) -> Augment | None:
    """The ``Augment`` callback of the recipe's ``augment`` list for these training inputs (``input_traits``),
    or None for an empty list. Each entry applies to each input of its kind; a SpecError at
    ``train.augment[i]`` before any training for an entry that applies to none of them (with the
    entries that do), or one that mixes samples when the task is not classification. ``classes()``
    (asked only for a mixing entry): how many classes the targets' probabilities span."""
    plan = []
    for i, entry in enumerate(parse_augment(entries)):
        path = f"train.augment[{i}]"
        names = [name for name, (shape, floating) in traits.items() if entry.applies_to.fits(shape, floating)]
        if not names:
            fitting = [n for n in augmentations
                       if any(augmentations.find(n).applies_to.fits(*t) for t in traits.values())]
            # a waveform (N, samples) has entries of its own, in train.augment_audio (_audio_augment.py)
            audio = any(len(shape) == 2 and floating for shape, floating in traits.values())
            hint = "; a waveform (N, samples) takes train.augment_audio (speed, shift, noise_snr_db)" if audio else ""
            raise SpecError(f"{entry.name} applies to {entry.applies_to.description}; this run's inputs are "
                            f"{_describe(traits)}; entries that apply: {', '.join(fitting) or 'none'}{hint}", path)
        if entry.mixes and task_name != "classification":
            raise SpecError(f"{entry.name} mixes samples and their class targets, for classification only; this "
                            f"run's task is {task_name}: drop it", path)
        plan.append((entry, names))
    if not plan:
        return None
    mixes = any(entry.mixes for entry, _ in plan)
    return Augment(plan, classes() if mixes else None, dict(pad_ids or {}))


class Augment(Callback):
    """``train.augment``: each training batch through the entries in order, each on the inputs it
    applies to. With an entry that mixes samples, class-id targets become class probabilities
    (N, ``classes``) first (one-hot), which the cross-entropy takes as they are (label smoothing
    still applies), and the epoch's training accuracy counts each sample against its dominant
    class (``dominant_label``). The draws come from the engine's generator: see the module."""

    def __init__(self, plan: list[tuple[AugmentEntry, list[str]]], classes: int | None,
                 pad_ids: Mapping[str, int]) -> None:
        self.plan, self.classes, self.pad_ids = plan, classes, pad_ids

    @property
    def mixes(self) -> bool:
        return self.classes is not None

    def on_batch(self, engine: Engine, xb: torch.Tensor | dict[str, torch.Tensor],
                 yb: torch.Tensor) -> tuple[torch.Tensor | dict[str, torch.Tensor], torch.Tensor]:
        named = dict(as_named(xb))
        if self.classes is not None and not yb.is_floating_point():
            yb = nn.functional.one_hot(yb, self.classes).float()  # (N, classes)
        for entry, names in self.plan:
            out, yb = entry({name: named[name] for name in names}, yb, engine.generator, self.pad_ids)
            named.update(out)
        return (named if is_named(xb) else named[SINGLE]), yb
