"""Model selection: cross-validated sweeps over spec values, the one-standard-error choice and a
diagnosis of under- and over-fitting."""

from ._cv import CVInterrupted, CVResult, cross_validate, parse_sweeps
from ._diagnose import (
    diagnose,
    diagnose_regularization,
    learning_curve_answer,
    one_standard_error,
    regularize_advice,
    regularizer_of,
)

__all__ = ["CVInterrupted", "CVResult", "cross_validate", "diagnose", "diagnose_regularization",
           "learning_curve_answer", "one_standard_error", "parse_sweeps", "regularize_advice", "regularizer_of"]
