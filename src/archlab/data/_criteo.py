"""DeepCTR's 200-row sample of the Criteo display-ads data: a tiny click-through data set.

``criteo_sample.txt`` (gzip or not) from ``criteo_sample/`` (``data_dir``, ``$ARCHLAB_DATA`` or
the cache): a header ``label,I1..I13,C1..C26``, 0/1 click labels, 13 integer counts and 26
hashed categories. It is read as 39 categorical fields: the counts discretised by the Criteo
winners' rule (``discretise``), an empty cell its own value. Too small to learn from, it is
there to test the click-through path end to end; not downloaded (it ships with DeepCTR).
"""

from __future__ import annotations

import gzip
import hashlib
import zlib

from ._dataset import DataError, Dataset
from ._files import _read_table, field_table
from ._paths import describe_search, find_file
from ._registry import DatasetRequest, find_data_dir, register_dataset

__all__ = ["FILE", "SHA256", "load_criteo_sample"]

FILE = "criteo_sample.txt"
#: SHA-256 of the uncompressed file: DeepCTR's examples/criteo_sample.txt (52,518 bytes).
SHA256 = "08b84f12a22438fb534e989a5e4fa245726b2bda001983556bc2aea2f094f724"
NUMERIC = tuple(f"I{i}" for i in range(1, 14))
CATEGORICAL = tuple(f"C{i}" for i in range(1, 27))
_FIX = ("replace it with examples/criteo_sample.txt from https://github.com/shenweichen/DeepCTR "
        "(gzip or not)")


@register_dataset("criteo-sample", files=(FILE,), folder="criteo_sample")
def load_criteo_sample(request: DatasetRequest) -> Dataset:
    """200 rows as x (N, 39) int64 global ids (I1-I13 then C1-C26), y the click (task binary).

    The split is the usual fixed stratified 80/20 one (160 train, 40 test rows); vocabularies
    are fitted on the training rows, so many test categories are out of vocabulary (``oov``).
    """
    folder = find_data_dir("criteo-sample", request.data_dir)
    path = None if folder is None else find_file(folder, FILE)
    if path is None:
        raise DataError(f"dataset 'criteo-sample': {FILE} was not found; {_FIX}.\n"
                        + describe_search("criteo_sample", request.data_dir, [FILE]))
    if request.verify:
        try:
            blob = path.read_bytes()
            blob = gzip.decompress(blob) if path.suffix == ".gz" else blob
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: cannot be read ({exc}); {_FIX}", path) from None
        if hashlib.sha256(blob).hexdigest() != SHA256:
            raise DataError(f"{path}: its content differs from DeepCTR's {FILE}; {_FIX}", path)
    names, rows, lines = _read_table(path)
    missing = [c for c in ("label", *NUMERIC, *CATEGORICAL) if c not in names]
    if missing:
        raise DataError(f"{path}: lacks the column(s) {', '.join(missing)}; {_FIX}", path)
    return field_table(request.name, path, names, rows, lines, names.index("label"), list(CATEGORICAL),
                       list(NUMERIC), "binary")
