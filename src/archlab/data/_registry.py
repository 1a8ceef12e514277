"""The dataset registry: every source (``mnist``, ``csv:PATH``, a user's own) is one entry here.

A source is a function taking a DatasetRequest and returning a Dataset, registered under a
name with ``@register_dataset``. ``load_dataset("csv:iris.csv")`` splits the name at the
first ``:`` into the source (``csv``) and its argument (``iris.csv``). The registry is one
object, not module globals, and unknown names get a suggestion and the list of known ones.

A name with ``+`` is a pairing of several sources (``fsdd+mnist``): it is split at every ``+``
first, each part is parsed and loaded as above, and ``archlab.data._paired`` pairs the parts'
samples by label. Each source names its part's input by its ``modality`` (``audio``, ``image``).
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from archlab.exceptions import suggest

from ._dataset import DataError, Dataset
from ._paired import Part, pair_datasets
from ._paths import holds_files, search_dirs
from ._textset import TextDataset

__all__ = ["DatasetRegistry", "DatasetRequest", "Loader", "find_data_dir", "list_datasets", "load_dataset",
           "register_dataset", "registry"]

logger = logging.getLogger("archlab")
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_MODALITY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # an input name of a graph-form spec


@dataclass(frozen=True)
class DatasetRequest:
    """What a source is asked to load; one object, so that sources can ignore what they do not need.

    Attributes:
        name: the full name as given, e.g. ``"csv:data/iris.csv?target=species"``.
        source: the registered source, e.g. ``"csv"``.
        argument: the text after the first ``:``, or ``None`` when there is none.
        data_dir: the ``data_dir`` passed to ``load_dataset``, or ``None``.
        download: whether the source may download missing files.
        verify: whether the source checks files against known checksums.
    """

    name: str
    source: str
    argument: str | None
    data_dir: Path | None
    download: bool = True
    verify: bool = True


Loader = Callable[[DatasetRequest], Dataset | TextDataset]  # text becomes arrays once tokenized


@dataclass(frozen=True)
class _Source:
    name: str
    loader: Loader
    argument: str | None  # how the argument is shown in messages ("PATH"), None when it takes none
    files: tuple[str, ...]  # files read from a data folder (each may carry .gz), for find_data_dir
    folder: str  # the data folder's name under $ARCHLAB_DATA and the cache (MovieLens ships as ml-100k/)
    options: bool = False  # whether a source without an argument takes '?key=value' options ('fsdd?rate=16000')
    modality: str = ""  # the input name of this source's part in a pairing ('audio' for fsdd in 'fsdd+mnist')

    @property
    def usage(self) -> str:
        return f"{self.name}:{self.argument}" if self.argument else self.name


class DatasetRegistry:
    """All dataset sources by name."""

    def __init__(self) -> None:
        self._sources: dict[str, _Source] = {}

    def register(self, name: str, loader: Loader, *, argument: str | None = None, files: tuple[str, ...] = (),
                 folder: str | None = None, options: bool = False, modality: str | None = None,
                 override: bool = False) -> None:
        if not _NAME.match(name):
            raise DataError(f"a dataset source name is lower case letters, digits, '_' and '-', starting with a "
                            f"letter, got {name!r}")
        modality = name.replace("-", "_") if modality is None else modality
        if not _MODALITY.match(modality):
            raise DataError(f"dataset source {name!r}: modality is an input name (letters, digits, '_', not "
                            f"starting with a digit), got {modality!r}")
        if name in self._sources and not override:
            warnings.warn(f"dataset source {name!r} was registered before; the new one replaces it "
                          "(pass override=True to silence this)", stacklevel=3)
        self._sources[name] = _Source(name, loader, argument, tuple(files), folder or name, options, modality)

    def unregister(self, name: str) -> None:
        self._sources.pop(name, None)

    def get(self, name: str) -> _Source:
        try:
            return self._sources[name]
        except KeyError:
            raise DataError(self._unknown(name)) from None

    def parse(self, name: str) -> tuple[_Source, str | None]:
        """Split ``"csv:PATH"`` into its source and argument, and check the argument is wanted."""
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"a dataset name is a non-empty string such as 'mnist', got {name!r}; "
                            f"known sources: {self._known()}")
        head, colon, argument = name.strip().partition(":")
        head, mark, query = head.partition("?")
        source = self.get(head.lower())
        if mark:
            # 'fsdd?rate=16000': options of a source without an argument reach it as the argument '?...'
            if not source.options:
                raise DataError(f"dataset {name!r}: the {source.name!r} source takes no '?' options; write "
                                f"{source.usage!r}")
            return source, f"?{query}"
        if source.argument is None and colon:
            raise DataError(f"dataset {name!r}: the {source.name!r} source takes no argument; write {source.name!r}")
        if source.argument is not None and not argument:
            raise DataError(f"dataset {name!r}: the {source.name!r} source needs an argument: "
                            f"write '{source.usage}'")
        return source, (argument if colon else None)

    def parse_parts(self, name: str) -> list[tuple[str, _Source, str | None]]:
        """Each part of ``"A+B"`` (one part without ``+``) as (its text, source, argument), all checked.

        Every part is parsed before any is loaded, and two parts may not share a modality (it
        names their input), so that a bad pairing fails before any work.
        """
        if not isinstance(name, str) or "+" not in name:
            source, argument = self.parse(name)
            return [(name.strip(), source, argument)]
        texts = self._split_pairing(name.strip())
        parts = []
        for i, text in enumerate(texts, 1):
            where = f"dataset {name.strip()!r}, part {i} of {len(texts)}"
            if not text:
                raise DataError(f"{where} is empty; a pairing is written A+B with a data set on each side of the "
                                "'+', e.g. 'fsdd+mnist'")
            try:
                source, argument = self.parse(text)
            except DataError as exc:
                raise DataError(f"{where}: {exc}", exc.path) from None
            parts.append((text, source, argument))
        seen: dict[str, str] = {}
        for text, source, _ in parts:
            if source.modality in seen:
                raise DataError(f"dataset {name.strip()!r}: parts {seen[source.modality]!r} and {text!r} are both "
                                f"of modality {source.modality!r} (the name of their input); pair data sets of "
                                "different modalities, e.g. 'fsdd+mnist' (audio and image)")
            seen[source.modality] = text
        return parts

    def _split_pairing(self, name: str) -> list[str]:
        """``name`` cut at each ``+`` that starts a part: a ``+`` inside a part's path argument
        (``csv:a+b.csv``, ``audio:my+dir``) stays in the path unless a registered source's name
        follows it (``audio:DIR+mnist``); after a part without a path every ``+`` cuts, so that a
        misspelt part (``fsdd+mnsit``) gets the registry's suggestion."""
        first, *pieces = name.split("+")
        texts = [first]
        for piece in pieces:
            head = re.split(r"[?:]", piece, maxsplit=1)[0].strip().lower()
            if ":" in texts[-1] and head not in self._sources:
                texts[-1] += f"+{piece}"
            else:
                texts.append(piece)
        return [text.strip() for text in texts]

    def usages(self) -> list[str]:
        """Every source as it is written, sorted: ``csv:PATH`` for one that takes an argument."""
        return [self._sources[n].usage for n in sorted(self._sources)]

    def _known(self) -> str:
        return ", ".join(self.usages())

    def _unknown(self, name: str) -> str:
        message = f"unknown dataset {name!r}{suggest(name, self._sources)} (known: {self._known()})"
        lower = name.lower()
        for ext in ("csv", "npz"):
            if ext in self._sources and (lower.endswith(f".{ext}") or lower.endswith(f".{ext}.gz")):
                message += f"; to read a file, prefix the source: '{ext}:{name}'"
        return message

    def __contains__(self, name: object) -> bool:
        return name in self._sources

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._sources))


registry = DatasetRegistry()


def register_dataset(name: str, *, argument: str | None = None, files: tuple[str, ...] = (),
                     folder: str | None = None, options: bool = False, modality: str | None = None,
                     override: bool = False) -> Callable[[Loader], Loader]:
    """Function decorator adding a dataset source under ``name``.

    Args:
        name: the source name, lower case (``-`` and ``_`` allowed); ``load_dataset(name)`` calls the function.
        argument: how the source's argument reads in messages (``"PATH"`` for ``csv:PATH``);
            ``None`` for a source that takes none.
        files: the file names the source reads from its data folder (each may also be gzipped,
            with ``.gz``), so that ``find_data_dir`` and the not-found message know what to look for.
        folder: the name of the source's data folder (under ``$ARCHLAB_DATA``, the cache, ``data_dir``);
            default ``name``.
        options: a source without an argument takes ``?key=value`` options (``fsdd?rate=16000``); the
            loader gets them as its argument, ``"?rate=16000"``.
        modality: the name of this source's input when it is a part of a pairing (``"audio"`` for
            ``fsdd`` in ``fsdd+mnist``); default ``name`` (``-`` read as ``_``). Two parts of one
            pairing may not share it.
        override: replace an existing source without a warning.

    Example:
        >>> import numpy as np
        >>> @register_dataset("ones", override=True)
        ... def load_ones(request):
        ...     x, y = np.ones((4, 2), np.float32), np.array([0, 1, 0, 1])
        ...     return Dataset(request.name, x, y, x, y, "classification", ("a", "b"), "generated")
        >>> load_dataset("ones").num_classes
        2
        >>> registry.unregister("ones")
    """

    def decorate(loader: Loader) -> Loader:
        registry.register(name, loader, argument=argument, files=files, folder=folder, options=options,
                          modality=modality, override=override)
        return loader

    return decorate


def list_datasets() -> list[str]:
    """Names of every registered dataset source, sorted.

    Example:
        >>> {"digits", "mnist", "csv", "npz"} <= set(list_datasets())
        True
    """
    return list(registry)


def find_data_dir(name: str, data_dir: str | Path | None = None) -> Path | None:
    """The first folder holding every file of dataset ``name``, or ``None``.

    Looks in ``data_dir`` (the folder itself, then its ``name/`` subfolder), then
    ``$ARCHLAB_DATA/name``, then the user cache folder (``platformdirs.user_cache_dir("archlab")/name``).
    Sources that read no folder (``digits``, ``csv:PATH``) always give ``None``.

    Raises:
        DataError: ``name`` is not a registered source.
    """
    source = registry.get(name.partition(":")[0].lower())
    if not source.files:
        return None
    for folder, _label in search_dirs(source.folder, data_dir):
        if holds_files(folder, source.files):
            return folder
    return None


def load_dataset(name: str, data_dir: str | Path | None = None, *, download: bool = True,
                 verify: bool = True) -> Dataset | TextDataset:
    """Load a dataset by name: ``"mnist"``, ``"digits"``, ``"csv:PATH"``, ``"npz:PATH"`` or a registered one.

    Args:
        name: the source, with its argument after a ``:`` when it takes one; or a pairing of
            classification sources, ``"A+B"`` (``"fsdd+mnist"``), whose inputs are named by
            each source's modality (see ``archlab.data._paired``).
        data_dir: where to look first for the dataset's files (see ``find_data_dir``); relative
            ``csv:``/``npz:`` paths are also looked up under it.
        download: fetch missing files (MNIST) into the user cache folder; with ``False`` a
            missing file is an error at once.
        verify: check files with known SHA-256 digests (MNIST) and refuse those that differ.

    Returns:
        The Dataset, inputs float32 channels first; for a text source (``multi30k``, ``text:PATH``) a
        TextDataset of sentences, which ``archlab.text`` tokenizes.

    Raises:
        DataError: unknown name (with a suggestion), missing files (saying where to put them),
            a file that is corrupt, truncated or of the wrong kind (naming it), or parts of a
            pairing that cannot be paired (saying why).

    Example:
        >>> ds = load_dataset("digits")
        >>> ds.x_train.shape, ds.x_test.shape, ds.num_classes
        ((1437, 1, 8, 8), (360, 1, 8, 8), 10)
    """
    parts = registry.parse_parts(name)
    if len(parts) > 1:
        loaded = [Part(text, source.modality, load_dataset(text, data_dir, download=download, verify=verify))
                  for text, source, _ in parts]
        return pair_datasets(name.strip(), loaded)
    _, source, argument = parts[0]
    request = DatasetRequest(name=name.strip(), source=source.name, argument=argument,
                             data_dir=None if data_dir is None else Path(data_dir).expanduser(),
                             download=download, verify=verify)
    start = time.perf_counter()
    dataset = source.loader(request)
    if not isinstance(dataset, Dataset | TextDataset):
        raise DataError(f"dataset source {source.name!r} returned {type(dataset).__name__}, not a Dataset or "
                        "TextDataset")
    logger.info("loaded %s in %.2f s from %s", dataset.describe(), time.perf_counter() - start, dataset.source)
    return dataset
