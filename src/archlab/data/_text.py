"""Text sources: ``multi30k`` (English->German captions) and ``text:`` for a user's own corpus.

``multi30k`` reads Multi30k task 1's raw gzip files (``train``, ``val``, ``test_2016_flickr``,
``test_2017_flickr``, ``test_2018_flickr``, ``test_2017_mscoco``; ``.en`` and ``.de`` each) from
``data_dir``, ``$ARCHLAB_DATA/multi30k`` or the cache, and checks each file's line count against
the published one. ``text:a.en,a.de`` is a parallel corpus (line i of one translates line i of the
other), ``text:corpus.txt`` a plain corpus for a language model; either gets a fixed seeded
train/test split, as array files do.
"""

from __future__ import annotations

from ._dataset import DataError
from ._files import _resolve
from ._paths import describe_search
from ._registry import DatasetRequest, find_data_dir, register_dataset
from ._textset import TextDataset, TextSplit, read_lines, read_parallel, split_text

__all__ = ["MULTI30K_SPLITS", "load_multi30k", "load_text"]

#: Multi30k task 1's splits and their sentence pairs (the data set's README; torchtext's Multi30k
#: uses the first three).
MULTI30K_SPLITS = {"train": 29000, "val": 1014, "test_2016_flickr": 1000, "test_2017_flickr": 1000,
                   "test_2018_flickr": 1071, "test_2017_mscoco": 461}
_LANGUAGES = ("en", "de")
_FILES = tuple(f"{split}.{lang}" for split in MULTI30K_SPLITS for lang in _LANGUAGES)
_FIX = ("get the raw files of https://github.com/multi30k/dataset (data/task1/raw/*.gz) again; archlab "
        "does not download them")


@register_dataset("multi30k", files=_FILES)
def load_multi30k(request: DatasetRequest) -> TextDataset:
    """Multi30k task 1, English source and German target, validated on ``val``, tested on
    ``test_2016_flickr`` first (the usual test set), then the 2017, 2018 and MS COCO ones."""
    folder = find_data_dir("multi30k", request.data_dir)
    if folder is None:
        raise DataError(f"dataset 'multi30k': the Multi30k files were not found; {_FIX}.\n"
                        + describe_search("multi30k", request.data_dir, list(_FILES)))
    splits = {}
    for split, expected in MULTI30K_SPLITS.items():
        paths = [folder / f"{split}.{lang}" for lang in _LANGUAGES]
        paths = [p if p.is_file() else p.with_name(p.name + ".gz") for p in paths]
        pair = read_parallel(*paths)
        if len(pair) != expected:
            raise DataError(f"{paths[0]}: {len(pair)} lines, but Multi30k's {split} split has {expected}; "
                            f"the file is truncated or not Multi30k's: {_FIX}", paths[0])
        splits[split] = pair
    return TextDataset(request.name, "seq2seq", splits, str(folder.resolve()), _LANGUAGES, validation="val",
                       test_splits=tuple(s for s in MULTI30K_SPLITS if s.startswith("test")))


@register_dataset("text", argument="PATH[,PATH]")
def load_text(request: DatasetRequest) -> TextDataset:
    """``text:SOURCE,TARGET`` (a parallel corpus, two aligned files) or ``text:CORPUS`` (a language
    model's sentences); UTF-8, gzip when a name ends in ``.gz``, one sentence per line."""
    names = [part.strip() for part in (request.argument or "").split(",")]
    if len(names) > 2 or not all(names):
        raise DataError(f"dataset {request.name!r}: write 'text:CORPUS' for a plain corpus or "
                        "'text:SOURCE,TARGET' for two aligned files of a parallel corpus (one comma)")
    paths = [_resolve(name, request) for name in names]
    whole = read_parallel(*paths) if len(paths) == 2 else TextSplit(read_lines(paths[0]))
    splits = split_text(whole)
    languages = tuple(p.name.removesuffix(".gz").rpartition(".")[2] for p in paths)
    return TextDataset(request.name, "seq2seq" if len(paths) == 2 else "language_model", splits,
                       ",".join(str(p.resolve()) for p in paths),
                       languages if all(languages) and len(set(languages)) == len(languages) else (),
                       test_splits=("test",) if "test" in splits else ())
