"""A user's own data as a file: ``csv:PATH`` (a table) and ``npz:PATH`` (numpy arrays).

Both take options after a ``?``: ``target=COL`` picks the target column of a CSV file, and
``task=classification|regression`` overrides the guess made from the target values (whole
numbers and text mean classes, other numbers a regression target). Files without a test
split get the same fixed 80/20 split as every other source.
"""

from __future__ import annotations

import csv
import gzip
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from archlab._inputs import as_named, map_inputs
from archlab.exceptions import suggest

from ._dataset import DataError, Dataset, Task, encode_labels, split_train_test
from ._fields import discretise, encode_fields
from ._registry import DatasetRequest, register_dataset

__all__ = ["CSV_OPTIONS", "TARGET_NAMES", "check_width", "column_kinds", "field_table", "field_values", "join_targets",
           "load_csv", "load_npz", "target_part", "table_header", "table_rows", "target_column"]

#: Column names taken as the target when none is given, in this order (case does not matter).
TARGET_NAMES = ("target", "label", "y", "class")
_TASKS = ("classification", "binary", "regression")
#: The options of ``csv:PATH?...``.
CSV_OPTIONS = ("target", "task", "categorical", "numeric", "dense")


def _split_options(request: DatasetRequest, known: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """``"a.csv?target=y&task=regression"`` -> ``("a.csv", {"target": "y", "task": "regression"})``."""
    text = request.argument or ""
    path, mark, query = text.rpartition("?")
    if not mark or "=" not in query:  # no options; a '?' that is part of the file name stays in it
        return text, {}
    options: dict[str, str] = {}
    for item in query.split("&"):
        key, equals, value = item.partition("=")
        if key not in known or not equals or not value:
            hint = suggest(key, known) if key not in known else ""
            raise DataError(f"dataset {request.name!r}: bad option {item!r}{hint}; options are "
                            + ", ".join(f"{k}=..." for k in known) + f", e.g. '{request.source}:{path}?"
                            f"{known[0]}=...'")
        options[key] = value
    task = options.get("task")
    if task is not None and task not in _TASKS:
        raise DataError(f"dataset {request.name!r}: task is 'classification', 'binary' or 'regression', got "
                        f"{task!r}{suggest(task, _TASKS)}")
    return path, options


def _resolve(path_text: str, request: DatasetRequest) -> Path:
    """The file, as given (relative to the working folder), else under ``data_dir``."""
    path = Path(path_text).expanduser()
    candidates = [path]
    if not path.is_absolute() and request.data_dir is not None:
        candidates.append(request.data_dir / path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = " and ".join(str(c.resolve()) for c in candidates)
    raise DataError(f"dataset {request.name!r}: file not found: looked for {looked}; give an existing path "
                    f"('{request.source}:path/to/file'), absolute or relative to the working folder"
                    + (" or to data_dir" if request.data_dir is not None else ""), path)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _to_float(cells: list[list[str]], lines: list[int], names: list[str], path: Path, what: str) -> np.ndarray:
    """Parse a table of text cells as float64, or name the first cell that is not a finite number."""
    try:
        values = np.array(cells, dtype=np.float64)
    except ValueError:
        # The fast path above does not say where; find the first bad cell.
        for i, row in enumerate(cells):
            for j, cell in enumerate(row):
                if not _is_number(cell):
                    problem = ("is empty (a missing value); fill or drop missing values" if not cell else
                               f"{cell!r} is not a number; encode text {what}s as numbers or drop the column")
                    raise DataError(f"{path}, line {lines[i]}, column {names[j]!r}: {problem}", path) from None
        raise
    bad = ~np.isfinite(values)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise DataError(f"{path}, line {lines[i]}, column {names[j]!r}: {cells[i][j]!r} is not a finite number; "
                        f"replace NaN/inf {what}s", path)
    return values


def _targets(raw: np.ndarray | list[str], task: str | None, where: str, path: Path
             ) -> tuple[np.ndarray, Task, tuple[str, ...] | None]:
    """Class ids and names, or float32 regression targets, from the target values."""
    values = np.asarray(raw)
    if values.dtype.kind == "S":  # bytes from np.savez of byte strings: name classes by their text
        values = values.astype(str)
    numeric = values.dtype.kind in "biuf"
    if task is None:
        # A float column holding only whole numbers (1.0, 2.0) is still class ids.
        task = "classification" if not numeric or values.dtype.kind in "biu" or \
            bool(np.all(np.mod(values, 1) == 0)) else "regression"
    if task == "regression":
        if not numeric:
            raise DataError(f"{where}: a regression target must be numeric, got text such as "
                            f"{str(values.flat[0])!r}; drop task=regression to treat it as class names", path)
        return values.astype(np.float32), "regression", None
    if task == "binary":
        flat = values.reshape(-1)
        bad = ~np.isin(flat, (0, 1)) if numeric else np.ones(flat.shape, bool)
        if bad.any():
            raise DataError(f"{where}: {flat[bad][0].item()!r} is not a binary label; task binary takes labels 0 "
                            "and 1 (map the positive class to 1), or drop task=binary", path)
        return flat.astype(np.int64), "binary", ("0", "1")
    ids, classes = encode_labels(values.reshape(len(values), -1)[:, 0] if values.ndim > 1 else values)
    return ids, "classification", classes


def _delimiter(path: Path) -> str:
    compressed = path.suffix == ".gz"
    return "\t" if Path(path.stem if compressed else path.name).suffix == ".tsv" else ","


def table_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Each non-blank row of a CSV/TSV file (``.gz`` read through gzip) as its line number and its
    stripped cells, read one at a time so that a file larger than memory can be walked."""
    compressed = path.suffix == ".gz"
    delimiter = _delimiter(path)
    try:
        with (gzip.open(path, "rt", encoding="utf-8-sig", newline="") if compressed
              else open(path, encoding="utf-8-sig", newline="")) as file:
            reader = csv.reader(file, delimiter=delimiter)
            for row in reader:
                if any(cell.strip() for cell in row):
                    yield reader.line_num, [cell.strip() for cell in row]
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot be read as a CSV file ({exc}); save it as UTF-8 text with "
                        f"'{delimiter}' between cells" + (" (gzip-compressed)" if compressed else ""), path) from None


def table_header(path: Path, first: list[str] | None) -> tuple[list[str], bool]:
    """The column names from the first row, and whether that row is a header (any cell not a
    number; else the columns are named 0, 1, ...); ``first`` is None for an empty file."""
    if first is None:
        raise DataError(f"{path}: is empty; a CSV dataset needs feature columns and a target column", path)
    has_header = not all(_is_number(cell) for cell in first)
    names = first if has_header else [str(j) for j in range(len(first))]
    if len(names) < 2:
        raise DataError(f"{path}: has {len(names)} column; a CSV dataset needs at least one feature column and a "
                        "target column", path)
    return names, has_header


def check_width(path: Path, line: int, row: list[str], width: int, has_header: bool) -> None:
    if len(row) != width:
        raise DataError(f"{path}, line {line}: has {len(row)} cells, but the "
                        f"{'header' if has_header else 'first row'} has {width}; every row needs one cell "
                        "per column", path)


def _read_table(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """The column names, the rows of text cells and each row's line number of a CSV/TSV file."""
    lines, rows = [], []
    for line, row in table_rows(path):
        lines.append(line)
        rows.append(row)
    names, has_header = table_header(path, rows[0] if rows else None)
    if has_header:
        rows, lines = rows[1:], lines[1:]
    for line, row in zip(lines, rows, strict=True):
        check_width(path, line, row, len(names), has_header)
    if not rows:
        raise DataError(f"{path}: has a header but no data rows", path)
    return names, rows, lines


def _find_column(wanted: str, names: list[str], where: str, path: Path) -> int:
    """A column by name or 0-based index, or a DataError listing the columns."""
    width = len(names)
    if wanted in names:
        return names.index(wanted)
    if wanted.lstrip("-").isdigit() and -width <= int(wanted) < width:
        return int(wanted) % width
    raise DataError(f"{where}: no column {wanted!r} in {path}{suggest(wanted, names)}; "
                    f"columns: {', '.join(names)} (or a 0-based index below {width})", path)


def _binary_targets(column: list[str], lines: list[int], name: str, path: Path) -> np.ndarray:
    """0/1 labels of a binary task; the first other value is an error naming its line."""
    for line, cell in zip(lines, column, strict=True):
        if not _is_number(cell) or float(cell) not in (0.0, 1.0):
            raise DataError(f"{path}, line {line}, column {name!r}: {cell!r} is not a binary label; task binary "
                            "takes labels 0 and 1 (map the positive class to 1), or drop task=binary", path)
    return np.array([float(cell) for cell in column]).astype(np.int64)


def target_part(column: list[str], lines: list[int], name: str, task: str | None, path: Path
                ) -> tuple[np.ndarray | None, np.ndarray]:
    """Some rows' target cells, checked: their values as numbers (0/1 ids for task binary; None
    when a cell is text) and the cells as text. A table read in chunks gives one part per chunk."""
    for line, cell in zip(lines, column, strict=True):
        if not cell:
            raise DataError(f"{path}, line {line}, column {name!r}: the target is empty; "
                            "fill or drop rows without a target", path)
    text = np.array(column, dtype=str)
    if task == "binary":
        return _binary_targets(column, lines, name, path), text
    if all(_is_number(cell) for cell in column):
        return _to_float([[c] for c in column], lines, [name], path, "target")[:, 0], text
    return None, text


def join_targets(parts: Sequence[tuple[np.ndarray | None, np.ndarray]], name: str, task: str | None, path: Path
                 ) -> tuple[np.ndarray, Task, tuple[str, ...] | None]:
    """The targets of all rows from their parts (``target_part``): numbers when every cell is one,
    else the text as class names."""
    if task == "binary":
        return np.concatenate([numbers for numbers, _ in parts]), "binary", ("0", "1")
    numeric = all(numbers is not None for numbers, _ in parts)
    raw = np.concatenate([numbers if numeric else text for numbers, text in parts])
    return _targets(raw, task, f"{path}, column {name!r}", path)


def _target_values(column: list[str], lines: list[int], name: str, task: str | None, path: Path
                   ) -> tuple[np.ndarray, Task, tuple[str, ...] | None]:
    return join_targets([target_part(column, lines, name, task, path)], name, task, path)


def _numeric_cells(cells: list[str], lines: list[int], name: str, path: Path) -> np.ndarray:
    """A numeric field's values, NaN where a cell is empty (missing); NaN or inf written out is an error."""
    values = np.full(len(cells), np.nan)
    for i, cell in enumerate(cells):
        if not cell:
            continue
        if not _is_number(cell):
            raise DataError(f"{path}, line {lines[i]}, column {name!r}: {cell!r} is not a number; list the "
                            "column in categorical= instead of numeric=", path)
        values[i] = float(cell)
        if not np.isfinite(values[i]):
            raise DataError(f"{path}, line {lines[i]}, column {name!r}: {cell!r} is not a finite number (the "
                            "first such row); leave the cell empty for a missing value, or drop the row", path)
    return values


#: The named inputs of a table with ``dense=`` columns: the field ids and the raw numbers.
CATEGORICAL_INPUT, DENSE_INPUT = "categorical", "dense"


def column_kinds(name: str, path: Path, names: list[str], target: int, categorical: Sequence[str],
                 numeric: Sequence[str], dense: Sequence[str]) -> tuple[list[int], list[int], dict[int, str]]:
    """The columns of ``dense=`` and those that become fields (in column order), and each
    column's kind, checked: every feature column declared once, none of them the target."""
    where = f"dataset {name!r}"
    kinds: dict[int, str] = {}
    for kind, wanted in (("categorical", categorical), ("numeric", numeric), ("dense", dense)):
        for column in wanted:
            j = _find_column(column, names, f"{where}, option {kind}=", path)
            if j == target:
                raise DataError(f"{where}, option {kind}=: {names[j]!r} is the target column; list only "
                                "feature columns", path)
            if kinds.get(j, kind) != kind:
                raise DataError(f"{where}: column {names[j]!r} is both {kinds[j]} and {kind}; list it in one "
                                "option only", path)
            kinds[j] = kind
    undeclared = [names[j] for j in range(len(names)) if j != target and j not in kinds]
    if undeclared:
        raise DataError(f"{where}: column(s) {', '.join(map(repr, undeclared))} are in none of categorical=, "
                        "numeric= and dense=. A table of categorical fields gives one id per column, so list every "
                        "feature column in one of them (numeric= columns are discretised into buckets, dense= "
                        "columns stay numbers in a second named input), or drop it", path)
    if not any(kind != "dense" for kind in kinds.values()):
        raise DataError(f"{where}: dense= needs categorical= (or numeric=) columns beside it; a table of numbers "
                        f"alone is read without options: 'csv:{path.name}'", path)
    return ([j for j in sorted(kinds) if kinds[j] == "dense"], [j for j in sorted(kinds) if kinds[j] != "dense"],
            kinds)


def field_values(kind: str, cells: list[str], lines: list[int], name: str, path: Path) -> np.ndarray:
    """A field column's categories: a numeric column's buckets (``discretise``), else the cells as written."""
    if kind == "numeric":
        return discretise(_numeric_cells(cells, lines, name, path))
    return np.array(cells, dtype=object)


def target_column(names: list[str], wanted: str | None, name: str, path: Path) -> int:
    """The target: ``?target=`` (a name or a 0-based index), else the first column named as in
    TARGET_NAMES, else the last."""
    if wanted is not None:
        return _find_column(wanted, names, f"dataset {name!r}", path)
    lowered = [n.lower() for n in names]
    return next((lowered.index(n) for n in TARGET_NAMES if n in lowered), len(names) - 1)


def field_table(name: str, path: Path, names: list[str], rows: list[list[str]], lines: list[int], target: int,
                categorical: list[str], numeric: list[str], task: str | None, dense: Sequence[str] = ()) -> Dataset:
    """A table of declared categorical and numeric columns as global field ids (see ``_fields``).

    Numeric columns are discretised (``discretise``: floor(ln(x)^2) above 2, an empty cell its own
    bucket); categorical cells are categories as written, an empty cell one more category. The
    split is the usual fixed 80/20 one, and the vocabularies are fitted on its training part.

    With ``dense`` columns the data set has two named inputs, as DeepFM and Wide & Deep take
    numbers beside ids: ``categorical`` (the fields' ids, int64 (N, F)) and ``dense`` (those
    columns' values as they are, float32 (N, D); every cell a finite number).
    """
    dense_cols, features, kinds = column_kinds(name, path, names, target, categorical, numeric, dense)
    columns = [field_values(kinds[j], [row[j] for row in rows], lines, names[j], path) for j in features]
    y, task, classes = _target_values([row[target] for row in rows], lines, names[target], task, path)
    index = np.arange(len(rows))
    train, test, y_train, y_test = split_train_test(index, y, stratify=task != "regression",
                                                    where=f"dataset {name!r}")
    x_train, x_test, fields, oov = encode_fields([names[j] for j in features], [c[train] for c in columns],
                                                 [c[test] for c in columns])
    if not dense_cols:
        return Dataset(name, x_train, y_train, x_test, y_test, task, classes, str(path.resolve()), fields=fields,
                       oov=oov)
    values = _to_float([[row[j] for j in dense_cols] for row in rows], lines, [names[j] for j in dense_cols], path,
                       "dense value").astype(np.float32)
    return Dataset(name, {CATEGORICAL_INPUT: x_train, DENSE_INPUT: values[train]}, y_train,
                   {CATEGORICAL_INPUT: x_test, DENSE_INPUT: values[test]}, y_test, task, classes, str(path.resolve()),
                   fields=fields, oov=oov, fields_input=CATEGORICAL_INPUT)


def _names(option: str | None) -> list[str]:
    return [c.strip() for c in (option or "").split(",") if c.strip()]


@register_dataset("csv", argument="PATH")
def load_csv(request: DatasetRequest) -> Dataset:
    """A table: numeric feature columns plus one target column; x (N, F) float32.

    The first row is a header when any of its cells is not a number (else columns are named
    0, 1, ...). The target is the column given by ``?target=`` (a name or a 0-based index), else
    the first column named target, label, y or class, else the last column. ``.tsv`` files are
    tab-separated, and ``.gz`` files are read through gzip.

    With ``?categorical=a,b`` (and ``numeric=c,d`` for the other feature columns) the table is
    categorical fields instead: x (N, F) int64 ids in one id space, see ``field_table``; adding
    ``dense=e,f`` keeps those columns as numbers in a second named input (``categorical`` and
    ``dense``, for a graph-form spec with both ``inputs``).
    """
    path_text, options = _split_options(request, CSV_OPTIONS)
    path = _resolve(path_text, request)
    names, rows, lines = _read_table(path)
    target = target_column(names, options.get("target"), request.name, path)
    if options.keys() & {"categorical", "numeric", "dense"}:
        return field_table(request.name, path, names, rows, lines, target, _names(options.get("categorical")),
                           _names(options.get("numeric")), options.get("task"), _names(options.get("dense")))
    feature_cols = [j for j in range(len(names)) if j != target]
    x = _to_float([[row[j] for j in feature_cols] for row in rows], lines, [names[j] for j in feature_cols],
                  path, "feature")
    y, task, classes = _target_values([row[target] for row in rows], lines, names[target], options.get("task"), path)
    x_train, x_test, y_train, y_test = split_train_test(x.astype(np.float32), y, stratify=task != "regression",
                                                        where=f"dataset {request.name!r}")
    return Dataset(request.name, x_train, y_train, x_test, y_test, task, classes, str(path.resolve()))


def _array(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as exc:  # object arrays need pickle, which a data file must never run
        raise DataError(f"{path}: array {key!r} cannot be read without pickle ({exc}); save it as a "
                        "numeric array (e.g. arr.astype(np.float32))", path) from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: array {key!r} is damaged ({exc})", path) from None


def _inputs(x: np.ndarray, key: str, path: Path, keep_integers: bool = False) -> np.ndarray:
    if x.dtype.kind not in "biuf":
        raise DataError(f"{path}: array {key!r} has dtype {x.dtype}; inputs must be numbers", path)
    if x.ndim == 0:
        raise DataError(f"{path}: array {key!r} is a scalar; inputs are (N, *input_shape)", path)
    x = x.reshape(len(x), 1) if x.ndim == 1 else x  # (N,) -> (N, 1): one feature per sample
    x = x.astype(np.int64 if keep_integers and x.dtype.kind in "iu" else np.float32)
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
        raise DataError(f"{path}: array {key!r} holds {x[index]} at index {index}; inputs must be finite", path)
    return x


def _named_inputs(archive: np.lib.npyio.NpzFile, held: list[str], prefix: str, path: Path) -> dict[str, np.ndarray]:
    """The arrays ``<prefix>/<name>`` as named inputs: integers stay int64 (ids), the rest float32."""
    named = {}
    for key in (k for k in held if k.startswith(prefix + "/")):
        x = _inputs(_array(archive, key, path), key, path, keep_integers=True)
        named[key.removeprefix(prefix + "/")] = x
    return named


@register_dataset("npz", argument="PATH")
def load_npz(request: DatasetRequest) -> Dataset:
    """Arrays ``x`` and ``y``, and optionally ``x_test`` and ``y_test``, from ``np.savez``.

    Inputs keep their shape after the sample axis and become float32 (a 1-D ``x`` is one feature
    per sample). Integer, boolean and text ``y`` are classes (ids follow the sorted values); float
    ``y`` is a regression target unless ``?task=classification``. Without a test split, 20% is
    held out (stratified for classes, ``random_state=0``).

    Named inputs, for a graph-form spec: arrays ``x/<name>`` in place of ``x`` (and
    ``x_test/<name>`` in place of ``x_test``), e.g. ``np.savez(path, **{"x/user": ids, "x/age":
    ages, "y": y})``; integer arrays stay int64 (ids for an embedding), others become float32.
    """
    path_text, options = _split_options(request, ("task",))
    path = _resolve(path_text, request)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot be read as an .npz file ({exc}); save it with "
                        "np.savez(path, x=..., y=...)", path) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: holds a single array (.npy), not named arrays; save it with "
                        "np.savez(path, x=..., y=...)", path)
    with archive:
        held = list(archive.files)
        named = any(k.startswith("x/") for k in held)
        if named and "x" in held:
            raise DataError(f"{path}: holds both 'x' and named inputs 'x/<name>'; keep one of the two", path)
        x_keys = ("x/<name>", "x_test/<name>") if named else ("x", "x_test")
        has = {"x": named or "x" in held, "y": "y" in held,
               "x_test": any(k.startswith("x_test/") for k in held) if named else "x_test" in held,
               "y_test": "y_test" in held}
        missing = [key for key in ("x", "y") if not has[key]]
        if missing or has["x_test"] != has["y_test"]:
            missing += [k for k in ("x_test", "y_test") if not has[k] and not missing]
            shown = [x_keys[0] if k == "x" else x_keys[1] if k == "x_test" else k for k in missing]
            raise DataError(f"{path}: lacks array(s) {', '.join(map(repr, shown))}; it holds "
                            f"{', '.join(map(repr, held)) or 'no arrays'}. Save with np.savez(path, x=..., y=...) "
                            "(or named inputs 'x/<name>') and, for your own test split, x_test=..., y_test=... "
                            "(both or neither)", path)
        arrays = {key: _array(archive, key, path) for key in ("x", "y", "x_test", "y_test") if key in held}
        if named:
            arrays["x"] = _named_inputs(archive, held, "x", path)
            if has["x_test"]:
                arrays["x_test"] = _named_inputs(archive, held, "x_test", path)
                if list(arrays["x_test"]) != list(arrays["x"]):
                    raise DataError(f"{path}: the named inputs of x ({', '.join(arrays['x'])}) and x_test "
                                    f"({', '.join(arrays['x_test'])}) differ; give the same names", path)

    x = arrays["x"] if named else _inputs(arrays["x"], "x", path)
    has_test = has["x_test"]
    x_test = (arrays["x_test"] if named else _inputs(arrays["x_test"], "x_test", path)) if has_test else None
    for xk, yk in (("x", "y"), ("x_test", "y_test")) if has_test else (("x", "y"),):
        for label, xa in (as_named(arrays[xk]).items() if named else [(xk, arrays[xk])]):
            label = f"{xk}/{label}" if named else xk
            if arrays[yk].ndim == 0 or len(xa) != len(arrays[yk]):
                raise DataError(f"{path}: {label} has shape {xa.shape} and {yk} {arrays[yk].shape}; they need "
                                "the same number of samples (first axis)", path)
    if x_test is not None:
        for key, xa in as_named(x).items():
            if as_named(x_test)[key].shape[1:] != xa.shape[1:]:
                label = f"/{key}" if named else ""
                raise DataError(f"{path}: x{label} has samples of shape {xa.shape[1:]} but x_test{label} "
                                f"{as_named(x_test)[key].shape[1:]}; they must match", path)

    y_all = np.concatenate([arrays["y"], arrays["y_test"]]) if has_test else arrays["y"]
    if y_all.dtype.kind not in "biufUS":
        raise DataError(f"{path}: y has dtype {y_all.dtype}; targets are numbers or text", path)
    task = options.get("task") or ("regression" if y_all.dtype.kind == "f" else "classification")
    if task != "regression" and y_all.ndim > 1 and y_all.shape[1:] != (1,):
        raise DataError(f"{path}: y has shape {arrays['y'].shape}; class labels are one per sample, (N,). "
                        "For several numeric targets add ?task=regression", path)
    if y_all.dtype.kind == "f" and not np.isfinite(y_all).all():
        raise DataError(f"{path}: y holds NaN or inf; targets must be finite", path)
    y, task, classes = _targets(y_all, task, f"{path}, array 'y'", path)
    if has_test:
        n = len(arrays["y"])
        x_train, y_train, y_test = x, y[:n], y[n:]
    else:
        index = np.arange(len(y))
        train, test, y_train, y_test = split_train_test(index, y, stratify=task != "regression",
                                                        where=f"dataset {request.name!r}")
        x_train, x_test = map_inputs(lambda a: a[train], x), map_inputs(lambda a: a[test], x)
    return Dataset(request.name, x_train, y_train, x_test, y_test, task, classes, str(path.resolve()))
