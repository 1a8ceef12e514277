"""scikit-learn's bundled 8x8 digits: a real image dataset that needs no download, for quick runs."""

from __future__ import annotations

import numpy as np

from ._dataset import Dataset, split_train_test
from ._registry import DatasetRequest, register_dataset

__all__ = ["load_digits"]


@register_dataset("digits", modality="image")
def load_digits(request: DatasetRequest) -> Dataset:
    """1797 digits as x (N, 1, 8, 8) float32 in [0, 1] (pixel counts 0-16 divided by 16), y int64 0-9.

    The test set is a fixed stratified 20%: ``train_test_split(test_size=0.2, random_state=0,
    stratify=y)``, giving 1437 train and 360 test samples.
    """
    import sklearn
    from sklearn.datasets import load_digits as sklearn_digits  # scikit-learn is slow to import

    bunch = sklearn_digits()
    x = np.divide(bunch.data, 16, dtype=np.float32).reshape(-1, 1, 8, 8)  # (N, 64) -> (N, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = split_train_test(x, y, stratify=True, where="dataset 'digits'")
    source = f"sklearn.datasets.load_digits (scikit-learn {sklearn.__version__})"
    return Dataset(request.name, x_train, y_train, x_test, y_test, "classification",
                   tuple(str(d) for d in range(10)), source)
