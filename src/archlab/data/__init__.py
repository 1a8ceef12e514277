"""Datasets for training: one ``load_dataset(name)`` for built-in data and a user's own files.

Sources: ``digits`` (scikit-learn's 8x8 digits, no download), ``mnist`` (the IDX files, found
in ``data_dir``, ``$ARCHLAB_DATA/mnist`` or the user cache, else downloaded and checked),
``movielens-100k`` (MovieLens 100K ratings as 25 categorical fields, from ``$ARCHLAB_DATA/ml-100k``),
``criteo-sample`` (DeepCTR's 200-row Criteo sample, 39 fields), ``csv:PATH``, ``npz:PATH`` and
``npy:DIR`` (memory-mapped .npy files, for data larger than memory; ``write_npy_dir`` writes one),
the audio sources ``fsdd`` (spoken digits, the speaker as each sample's group) and ``audio:DIR``
(a user's WAV files, label = sub-folder, or a CSV manifest), and the text sources ``multi30k`` and
``text:PATH[,PATH]``, which return a TextDataset of sentences. ``A+B`` pairs two classification
sources of different modalities by label (``fsdd+mnist``: named inputs ``audio`` and ``image``).
Register more with ``@register_dataset``. Every source returns a Dataset with a fixed
train/test split: float32 channels-first inputs, or for categorical fields int64 ids in one id
space (``Dataset.fields``). Every failure is a DataError that names the file and says how to fix it.

Example:
    >>> from archlab.data import load_dataset
    >>> load_dataset("digits").describe()
    'digits: classification, input (1, 8, 8), 1437 train / 360 test samples, 10 classes: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9'
"""

from . import _audio, _criteo, _digits, _files, _mnist, _movielens, _npy, _text  # noqa: F401  (registers the built-in sources)
from ._audio import AudioOptions, audio_options, decode_wav, fit_length, resample
from ._dataset import DataError, Dataset, Field, encode_labels, split_train_test
from ._npy import write_npy_dir
from ._paths import ENV_VAR, cache_dir
from ._registry import (
    DatasetRegistry,
    DatasetRequest,
    find_data_dir,
    list_datasets,
    load_dataset,
    register_dataset,
    registry,
)
from ._textset import TextDataset, TextSplit

__all__ = ["ENV_VAR", "DataError", "Dataset", "DatasetRegistry", "DatasetRequest", "Field", "cache_dir",
           "encode_labels", "find_data_dir", "list_datasets", "load_dataset", "register_dataset", "registry",
           "split_train_test", "TextDataset", "TextSplit", "write_npy_dir",
           "AudioOptions", "audio_options", "decode_wav", "fit_length", "resample"]
