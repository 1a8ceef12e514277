"""The template library: proven starting architectures shipped as ordinary spec files.

Each template is ``src/archlab/templates/<name>.yaml``, a complete spec at one default size.
The table below says what each one is for and which of its values are its *width* and its
*depth*, so that ``suggest`` can resize it; the files themselves stay plain specs that
``archlab summary`` and ``archlab train`` read like any other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

from archlab.exceptions import RegistryError, suggest
from archlab.spec import Spec, load

InputKind = Literal["tabular", "image", "sequence", "tokens", "fields"]


@dataclass(frozen=True)
class TemplateInfo:
    """What a template is for and how it is resized.

    Attributes:
        name: the file's stem, e.g. ``"small-cnn"``.
        purpose: one line, what the template is for.
        input_kind: the data it expects: ``tabular`` (F,), ``image`` (C, H, W), ``tokens``
            (T,) integer ids, ``sequence`` (T, F) feature vectors, or ``fields`` (F,) ids of
            categorical fields in one id space.
        base_width: the width the file is written at; every ``filters``, ``units``,
            ``output_dim`` and ``ff_dim`` (except the output layer's) scales with width / base_width.
        depth_path: the path of the value that sets the depth (a ``repeat.times`` or ``num_layers``).
        max_depth: the deepest ``suggest`` makes it.
        min_width: the narrowest ``suggest`` makes it.
        width_factor: k in the width rule, width = 2 ** round(log2(k * log2(samples))).
        width_paths: where only some width values scale (an embedding of width 1 is a weight per id,
            not a width): each path and its multiple of the width; empty: every width value scales.
        vocab_paths: the embeddings' ``input_dim`` values, set to the data's vocabulary size.
        outputs: None when the last layer is the output ``dense``, replaced by the task's head; else
            the body already ends in this many outputs and the last layer is the output activation.
        recipe: the template's own recipe values over the general ones (docs/design.md, rule 6).
        patience: the early-stopping patience of its recipe.
    """

    name: str
    purpose: str
    input_kind: InputKind
    base_width: int
    depth_path: str
    max_depth: int
    min_width: int
    width_factor: float
    width_paths: tuple[tuple[str, int], ...] = ()
    vocab_paths: tuple[str, ...] = ()
    outputs: int | None = None
    recipe: Mapping[str, Any] = field(default_factory=dict)
    patience: int = 8


_CNN_RECIPE = {"optimizer": {"name": "adam", "lr": 0.002}}

_TEMPLATES: dict[str, TemplateInfo] = {t.name: t for t in (
    TemplateInfo("mlp", "tabular data: a vector of numeric features per sample", "tabular",
                 128, "hidden.times", 4, 8, 12.0),
    TemplateInfo("small-cnn", "small images (sides up to 32), VGG-style like the seed MNIST CNN", "image",
                 32, "stages.times", 4, 4, 3.0, recipe=_CNN_RECIPE),
    TemplateInfo("resnet-small", "larger images (a side above 32): a small residual CNN after ResNet-18", "image",
                 32, "stage1.times", 4, 4, 3.0, recipe=_CNN_RECIPE),
    TemplateInfo("rnn-attention", "sequences up to 256 steps: embedding, GRU, additive attention pooling", "tokens",
                 64, "rnn.num_layers", 3, 8, 6.0, vocab_paths=("embed.input_dim",)),
    TemplateInfo("transformer-small", "long sequences of token ids (over 256 steps): a small transformer encoder",
                 "tokens", 64, "blocks.times", 6, 8, 6.0, vocab_paths=("embed.input_dim",),
                 recipe={"optimizer": {"name": "adamw", "lr": 0.0005, "weight_decay": 0.01}, "grad_clip": 1.0}),
    # The recipe of examples/recsys/deepfm-movielens.yaml, chosen on MovieLens's validation split
    # (docs/results.md, Recommendation): a constant lr, batch 256, fp32 as it was measured, and
    # patience 6, since the validation score dips for an epoch or two after epoch 2-3.
    TemplateInfo("deepfm", "categorical fields (recommendation, click-through): first order + FM + MLP", "fields",
                 32, "hidden.times", 3, 4, 2.0,
                 width_paths=(("embed.output_dim", 1), ("hidden.layers[0].dense.units", 4)),
                 vocab_paths=("first_order.input_dim", "embed.input_dim"), outputs=1,
                 recipe={"epochs": 30, "batch_size": 256, "optimizer": {"name": "adam", "lr": 0.001},
                         "schedule": "none", "precision": "fp32"}, patience=6),
)}


def list_templates() -> list[TemplateInfo]:
    """The shipped templates, in the order ``archlab templates`` lists them.

    Example:
        >>> from archlab.design import list_templates
        >>> [t.name for t in list_templates()][:2]
        ['mlp', 'small-cnn']
    """
    return list(_TEMPLATES.values())


def get_template_info(name: str) -> TemplateInfo:
    """The TemplateInfo of ``name``; an unknown name is a RegistryError listing the known ones."""
    if name not in _TEMPLATES:
        raise RegistryError(f"unknown template {name!r}{suggest(name, _TEMPLATES)}; "
                            f"templates: {', '.join(_TEMPLATES)}")
    return _TEMPLATES[name]


def template_text(name: str) -> str:
    """The YAML text of a template file, comment header included."""
    get_template_info(name)
    return resources.files("archlab").joinpath("templates", f"{name}.yaml").read_text(encoding="utf-8")


def load_template(name: str) -> Spec:
    """The template ``name`` as a Spec, at its default size.

    Example:
        >>> import archlab
        >>> from archlab.design import load_template
        >>> archlab.analyze(load_template("mlp")).total_params > 0
        True
    """
    return load(template_text(name))
