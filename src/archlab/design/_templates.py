"""The template library: proven starting architectures shipped as ordinary spec files.

Each template is ``src/archlab/templates/<name>.yaml``, a complete spec at one default size.
The table below says what each one is for and which of its values are its *width* and its
*depth*, so that ``suggest`` can resize it; the files themselves stay plain specs that
``archlab summary`` and ``archlab train`` read like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Literal

from archlab.exceptions import RegistryError, suggest
from archlab.spec import Spec, load

InputKind = Literal["tabular", "image", "sequence", "tokens"]


@dataclass(frozen=True)
class TemplateInfo:
    """What a template is for and how it is resized.

    Attributes:
        name: the file's stem, e.g. ``"small-cnn"``.
        purpose: one line, what the template is for.
        input_kind: the data it expects: ``tabular`` (F,), ``image`` (C, H, W), ``tokens``
            (T,) integer ids, or ``sequence`` (T, F) feature vectors.
        base_width: the width the file is written at; every ``filters``, ``units``,
            ``output_dim`` and ``ff_dim`` (except the output layer's) scales with width / base_width.
        depth_path: the path of the value that sets the depth (a ``repeat.times`` or ``num_layers``).
        max_depth: the deepest ``suggest`` makes it.
        min_width: the narrowest ``suggest`` makes it.
        width_factor: k in the width rule, width = 2 ** round(log2(k * log2(samples))).
    """

    name: str
    purpose: str
    input_kind: InputKind
    base_width: int
    depth_path: str
    max_depth: int
    min_width: int
    width_factor: float


_TEMPLATES: dict[str, TemplateInfo] = {t.name: t for t in (
    TemplateInfo("mlp", "tabular data: a vector of numeric features per sample", "tabular",
                 128, "hidden.times", 4, 8, 12.0),
    TemplateInfo("small-cnn", "small images (sides up to 32), VGG-style like the seed MNIST CNN", "image",
                 32, "stages.times", 4, 4, 3.0),
    TemplateInfo("resnet-small", "larger images (a side above 32): a small residual CNN after ResNet-18", "image",
                 32, "stage1.times", 4, 4, 3.0),
    TemplateInfo("rnn-attention", "sequences up to 256 steps: embedding, GRU, additive attention pooling", "tokens",
                 64, "rnn.num_layers", 3, 8, 6.0),
    TemplateInfo("transformer-small", "long sequences of token ids (over 256 steps): a small transformer encoder",
                 "tokens", 64, "blocks.times", 6, 8, 6.0),
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
