"""Data that never sits whole in memory: ``npy:DIR``, a folder of memory-mapped .npy files, and
``write_npy_dir``, which fills one from any data set (a ``csv:`` table chunk by chunk).

The folder holds the split already made: ``x_train.npy y_train.npy x_test.npy y_test.npy``, or for
named inputs ``x_train/<name>.npy`` and ``x_test/<name>.npy`` beside the two target files, and
optionally ``meta.json`` (``task``, ``classes``, ``fields``, ``fields_input``, ``oov``; see
docs/data.md). Inputs are opened with ``np.load(mmap_mode="c")``: nothing is read until a batch
asks for its rows, and copy-on-write keeps the files unchanged while torch may view the pages.
Targets (one value per row) are read into memory.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from archlab._inputs import SINGLE, as_named, is_named

from ._dataset import DataError, Dataset, Field, split_train_test
from ._fields import encode_column
from ._files import (
    CATEGORICAL_INPUT,
    CSV_OPTIONS,
    DENSE_INPUT,
    _names,
    _resolve,
    _split_options,
    _targets,
    _to_float,
    check_width,
    column_kinds,
    field_values,
    join_targets,
    table_header,
    table_rows,
    target_column,
    target_part,
)
from ._registry import DatasetRequest, load_dataset, register_dataset, registry

__all__ = ["CHUNK_ROWS", "META", "load_npy", "write_npy_dir"]

#: The optional file of what the arrays cannot say: the task, the class names, the fields.
META = "meta.json"
#: Rows a conversion reads and writes at a time: its memory is a chunk, not the table.
CHUNK_ROWS = 65_536
_TASKS = ("classification", "binary", "regression")


def _layout(folder: Path) -> str:
    return (f"a folder with x_train.npy, y_train.npy, x_test.npy and y_test.npy (or, for named inputs, "
            f"x_train/<name>.npy and x_test/<name>.npy) and optionally {META}; write one with "
            f"'archlab data convert SOURCE {folder}'")


def _open(path: Path, *, mmap: bool = True) -> np.ndarray:
    """One .npy file, memory-mapped (copy-on-write) or read; a DataError naming it when it is none."""
    try:
        array = np.load(path, mmap_mode="c" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:  # not .npy (pickle refused), object dtype, truncated
        raise DataError(f"{path}: is not a readable .npy file of numbers ({exc}); save it with "
                        "np.save(path, array) from a numeric array", path) from None
    if not isinstance(array, np.ndarray):  # an .npz archive
        raise DataError(f"{path}: holds an .npz archive, not one .npy array; save each array with np.save", path)
    return array


def _inputs_of(folder: Path, split: str) -> np.ndarray | dict[str, np.ndarray] | None:
    """``x_<split>.npy`` memory-mapped, or the named inputs of ``x_<split>/``; None when neither is there."""
    single, named = folder / f"x_{split}.npy", folder / f"x_{split}"
    if single.exists() and named.is_dir():
        raise DataError(f"{folder}: holds both x_{split}.npy and named inputs x_{split}/; keep one of the two",
                        folder)
    if named.is_dir():
        files = sorted(named.iterdir())
        strangers = [p.name for p in files if p.suffix != ".npy"]
        if strangers or not files:
            raise DataError(f"{named}: named inputs are .npy files <name>.npy, found "
                            f"{', '.join(strangers) or 'nothing'}; remove other files or write the inputs with "
                            "np.save", named)
        return {p.stem: _input(_open(p), p) for p in files}
    return _input(_open(single), single) if single.exists() else None


def _input(x: np.ndarray, path: Path) -> np.ndarray:
    if x.dtype.kind not in "biuf" or x.ndim == 0:
        raise DataError(f"{path}: holds {x.dtype} {x.shape}; inputs are numbers (N, *input_shape)", path)
    return x.reshape(len(x), 1) if x.ndim == 1 else x  # a view: (N,) is one feature per sample


def _read_meta(folder: Path) -> dict[str, Any]:
    path = folder / META
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: is not JSON ({exc}); write it as an object such as "
                        '{"task": "classification", "classes": ["no", "yes"]}', path) from None
    known = {"task", "classes", "fields", "fields_input", "oov", "source", "name"}
    if not isinstance(meta, dict) or set(meta) - known:
        extra = sorted(set(meta) - known) if isinstance(meta, dict) else meta
        raise DataError(f"{path}: keys are {', '.join(sorted(known))}; got {extra!r}", path)
    if meta.get("task") is not None and meta["task"] not in _TASKS:
        raise DataError(f"{path}: task is one of {', '.join(_TASKS)}, got {meta['task']!r}", path)
    return meta


def _targets_from(meta: dict[str, Any], y_all: np.ndarray, path: Path
                  ) -> tuple[np.ndarray, str, tuple[str, ...] | None]:
    """Class ids and names, or regression targets: the ids as written when meta.json names the
    classes, else as for an .npz (integers and text are classes, floats a regression target)."""
    classes = meta.get("classes")
    if classes is None or meta.get("task") == "regression":
        return _targets(y_all, meta.get("task"), f"{path}, y_train.npy/y_test.npy", path)
    if y_all.dtype.kind not in "iu" or (y_all.size and (y_all.min() < 0 or y_all.max() >= len(classes))):
        raise DataError(f"{path}: with classes in {META}, y_train.npy and y_test.npy hold class ids 0.."
                        f"{len(classes) - 1} (integers); remove classes from {META} to have them read as labels",
                        path)
    return y_all.astype(np.int64), meta.get("task") or "classification", tuple(map(str, classes))


@register_dataset("npy", argument="DIR")
def load_npy(request: DatasetRequest) -> Dataset:
    """A folder of .npy files, inputs memory-mapped (see the module's docstring and docs/data.md)."""
    path_text = request.argument or ""
    folder = Path(path_text).expanduser()
    if not folder.is_dir() and not folder.is_absolute() and request.data_dir is not None \
            and (request.data_dir / folder).is_dir():
        folder = request.data_dir / folder
    if not folder.is_dir():
        raise DataError(f"dataset {request.name!r}: no folder {folder.resolve()}; npy:DIR reads {_layout(folder)}",
                        folder)
    meta = _read_meta(folder)
    x_train, x_test = _inputs_of(folder, "train"), _inputs_of(folder, "test")
    missing = [f"{k}.npy" for k, v in (("x_train", x_train), ("x_test", x_test)) if v is None]
    missing += [f"{k}.npy" for k in ("y_train", "y_test") if not (folder / f"{k}.npy").is_file()]
    if missing:
        raise DataError(f"{folder}: lacks {', '.join(missing)}; npy:DIR reads {_layout(folder)}", folder)
    if is_named(x_train) != is_named(x_test) or (is_named(x_train) and list(x_train) != list(x_test)):
        names = [", ".join(x) if is_named(x) else f"{s}.npy" for s, x in (("x_train", x_train), ("x_test", x_test))]
        raise DataError(f"{folder}: the inputs of x_train ({names[0]}) and x_test ({names[1]}) differ; give both "
                        "the same named inputs, or both one array", folder)
    ys = {k: _open(folder / f"{k}.npy", mmap=False) for k in ("y_train", "y_test")}
    for split, xs in (("train", x_train), ("test", x_test)):
        y = ys[f"y_{split}"]
        for name, x in as_named(xs).items():
            label = f"x_{split}/{name}.npy" if is_named(xs) else f"x_{split}.npy"
            if y.ndim == 0 or len(x) != len(y):
                raise DataError(f"{folder}: {label} has {len(x)} rows but y_{split}.npy {y.shape}; every input "
                                "needs one row per target", folder)
    y, task, classes = _targets_from(meta, np.concatenate([ys["y_train"], ys["y_test"]]), folder)
    n = len(ys["y_train"])
    fields = meta.get("fields")
    try:
        fields = None if fields is None else tuple(Field(str(f["name"]), int(f["size"]), int(f["offset"]))
                                                   for f in fields)
    except (TypeError, KeyError, ValueError):
        raise DataError(f"{folder / META}: fields is a list of {{name, size, offset}}, got {fields!r}",
                        folder) from None
    return Dataset(request.name, x_train, y[:n], x_test, y[n:], task, classes, str(folder.resolve()), fields=fields,
                   oov=meta.get("oov"), fields_input=meta.get("fields_input", SINGLE))


# -- writing ---------------------------------------------------------------------------------

def write_npy_dir(name: str, folder: str | Path, *, data_dir: str | Path | None = None,
                  chunk_rows: int = CHUNK_ROWS) -> Path:
    """Write data set ``name`` as an ``npy:`` folder, ready to be trained on memory-mapped.

    A ``csv:PATH`` table (with any of its options) is converted in chunks of ``chunk_rows`` rows and
    never held whole: a first pass reads the target column (the split needs it), a second the
    training rows' categories (for ``categorical=``/``numeric=``: the vocabularies), and the last
    encodes each chunk into arrays created with ``np.lib.format.open_memmap``. The result holds
    the same arrays, split, fields and classes as ``load_dataset(name)``. Any other registered
    data set is loaded and written as it is.

    Args:
        name: a data set name, e.g. ``"csv:ratings.csv?categorical=user,item"`` or ``"digits"``.
        folder: the folder to create (it must not exist, or be empty); written whole or not at all.
        data_dir: as ``load_dataset``'s.
        chunk_rows: rows per chunk of a CSV conversion.

    Returns:
        The folder: load it with ``load_dataset(f"npy:{folder}")``.

    Raises:
        DataError: as ``load_dataset`` for the source, or ``folder`` exists and is not an empty folder.

    Example:
        >>> import tempfile
        >>> out = write_npy_dir("digits", tempfile.mkdtemp() + "/digits")
        >>> load_dataset(f"npy:{out}").describe().split(": ", 1)[1]
        'classification, input (1, 8, 8), 1437 train / 360 test samples, 10 classes: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9'
    """
    folder = Path(folder).expanduser()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise DataError(f"{folder}: exists and is not an empty folder; give a new folder to write the .npy files "
                        "into", folder)
    if chunk_rows < 1:
        raise DataError(f"chunk_rows is a positive number of rows, got {chunk_rows}")
    parts = registry.parse_parts(name)  # a pairing (fsdd+mnist) is loaded and written as any other set
    _, source, argument = parts[0]
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed at the end: a failed conversion leaves no half folder.
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        if source.name == "csv" and len(parts) == 1:
            request = DatasetRequest(name.strip(), "csv", argument,
                                     None if data_dir is None else Path(data_dir).expanduser())
            meta = _convert_csv(request, work, chunk_rows)
        else:
            meta = _write_dataset(load_dataset(name, data_dir), work)
        (work / META).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        if folder.exists():
            folder.rmdir()
        work.rename(folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return folder


def _meta(dataset_name: str, source: str, task: str, classes: Any, fields: Any, fields_input: str, oov: Any
          ) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": dataset_name, "source": source, "task": task,
                            "classes": None if classes is None else list(classes)}
    if fields is not None:
        meta.update(fields=[{"name": f.name, "size": f.size, "offset": f.offset} for f in fields],
                    fields_input=fields_input, oov=oov or {})
    return meta


def _write_dataset(dataset: Dataset, work: Path) -> dict[str, Any]:
    """A loaded data set's arrays as they are (a small one: it is in memory already)."""
    for split, xs, y in (("train", dataset.x_train, dataset.y_train), ("test", dataset.x_test, dataset.y_test)):
        if dataset.named:
            (work / f"x_{split}").mkdir()
            for key, x in xs.items():
                np.save(work / f"x_{split}" / f"{key}.npy", np.asarray(x))
        else:
            np.save(work / f"x_{split}.npy", np.asarray(xs))
        np.save(work / f"y_{split}.npy", np.asarray(y))
    return _meta(dataset.name, dataset.source, dataset.task, dataset.classes, dataset.fields, dataset.fields_input,
                 dataset.oov)


def _chunks(path: Path, width: int, has_header: bool, size: int) -> Iterator[tuple[int, list[int], list[list[str]]]]:
    """The data rows of a table in chunks: the first row's index, the line numbers, the rows."""
    rows_iter = table_rows(path)
    if has_header:
        next(rows_iter)
    start, lines, rows = 0, [], []
    for line, row in rows_iter:
        check_width(path, line, row, width, has_header)
        lines.append(line)
        rows.append(row)
        if len(rows) == size:
            yield start, lines, rows
            start, lines, rows = start + size, [], []
    if rows:
        yield start, lines, rows


def _convert_csv(request: DatasetRequest, work: Path, chunk_rows: int) -> dict[str, Any]:
    """``csv:PATH?...`` into ``work`` as ``load_csv`` would read it, one chunk of rows at a time."""
    path_text, options = _split_options(request, CSV_OPTIONS)
    path = _resolve(path_text, request)
    names, has_header = table_header(path, next((row for _, row in table_rows(path)), None))
    target = target_column(names, options.get("target"), request.name, path)
    fielded = bool(options.keys() & {"categorical", "numeric", "dense"})
    if fielded:
        dense_cols, features, kinds = column_kinds(request.name, path, names, target,
                                                   _names(options.get("categorical")), _names(options.get("numeric")),
                                                   _names(options.get("dense")))
    else:
        dense_cols, features, kinds = [j for j in range(len(names)) if j != target], [], {}

    # Pass 1: the targets (one value per row), which the split and the task need.
    parts = [target_part([row[target] for row in rows], chunk_lines, names[target], options.get("task"), path)
             for _, chunk_lines, rows in _chunks(path, len(names), has_header, chunk_rows)]
    if not parts:
        raise DataError(f"{path}: has a header but no data rows", path)
    y, task, classes = join_targets(parts, names[target], options.get("task"), path)
    del parts
    n = len(y)
    train, test, y_train, y_test = split_train_test(np.arange(n), y, stratify=task != "regression",
                                                    where=f"dataset {request.name!r}")
    # Where each row of the file goes: its position in x_train or x_test (-1 in the other).
    position = {"train": np.full(n, -1, np.int64), "test": np.full(n, -1, np.int64)}
    position["train"][train], position["test"][test] = np.arange(len(train)), np.arange(len(test))

    # Pass 2: each field's vocabulary, from the training rows only (as encode_fields fits it).
    vocabs = [np.array([], dtype=object) for _ in features]
    if features:
        for start, chunk_lines, rows in _chunks(path, len(names), has_header, chunk_rows):
            in_train = position["train"][start:start + len(rows)] >= 0
            for f, j in enumerate(features):
                values = field_values(kinds[j], [row[j] for row in rows], chunk_lines, names[j], path)
                vocabs[f] = np.unique(np.concatenate([vocabs[f], np.unique(values[in_train])]))
    sizes = [len(v) + 1 for v in vocabs]  # each field's last id is its out-of-vocabulary id
    offsets = np.cumsum([0, *sizes[:-1]]).astype(np.int64)
    fields = tuple(Field(names[j], sizes[f], int(offsets[f])) for f, j in enumerate(features)) if fielded else None

    # Pass 3: encode each chunk and write its rows where they go.
    inputs = {}
    if features:
        inputs[CATEGORICAL_INPUT if dense_cols else SINGLE] = (np.int64, len(features))
    if dense_cols:
        inputs[DENSE_INPUT if features else SINGLE] = (np.float32, len(dense_cols))
    named = len(inputs) > 1
    out: dict[str, dict[str, np.ndarray]] = {}
    for split, count in (("train", len(train)), ("test", len(test))):
        if named:
            (work / f"x_{split}").mkdir()
        out[split] = {key: np.lib.format.open_memmap(
            work / (f"x_{split}/{key}.npy" if named else f"x_{split}.npy"), mode="w+", dtype=dtype,
            shape=(count, width)) for key, (dtype, width) in inputs.items()}
    oov: dict[str, dict[str, int]] = {}
    for start, chunk_lines, rows in _chunks(path, len(names), has_header, chunk_rows):
        chunk: dict[str, np.ndarray] = {}
        if features:
            columns = []
            for f, j in enumerate(features):
                ids, _ = encode_column(vocabs[f], field_values(kinds[j], [row[j] for row in rows], chunk_lines,
                                                               names[j], path))
                columns.append(ids + offsets[f])
            chunk[CATEGORICAL_INPUT if dense_cols else SINGLE] = np.stack(columns, axis=1)
            unseen = np.stack([ids == offsets[f] + sizes[f] - 1 for f, ids in enumerate(columns)], axis=1)
        if dense_cols:
            what = "dense value" if features else "feature"
            chunk[DENSE_INPUT if features else SINGLE] = _to_float(
                [[row[j] for j in dense_cols] for row in rows], chunk_lines, [names[j] for j in dense_cols], path,
                what).astype(np.float32)
        for split in ("train", "test"):
            where = position[split][start:start + len(rows)]
            mine = where >= 0
            for key, values in chunk.items():
                out[split][key][where[mine]] = values[mine]
            if features:
                for f, count in enumerate(unseen[mine].sum(axis=0)):
                    if count:
                        oov.setdefault(split, {})[names[features[f]]] = \
                            oov.get(split, {}).get(names[features[f]], 0) + int(count)
    for split in out.values():
        for array in split.values():
            array.flush()
    del out
    np.save(work / "y_train.npy", y_train)
    np.save(work / "y_test.npy", y_test)
    # encode_fields lists the splits as it meets them; keep its order so the two compare equal.
    oov = {s: {names[j]: oov[s][names[j]] for j in features if names[j] in oov[s]} for s in ("train", "test")
           if s in oov}
    return _meta(request.name, str(path.resolve()), task, classes, fields,
                 CATEGORICAL_INPUT if named else SINGLE, oov)

