"""Architecture search on Optuna: spaces written as specs with markers, budgets from the capacity
analysis, multi-fidelity pruning, several objectives, and any SQLAlchemy storage for many workers."""

from typing import TYPE_CHECKING

from archlab._lazy import lazy_attributes

from ._space import Dimension, choice_labels, dimensions, grid_space, sample, space_differences
from ._study import PRUNERS, SAMPLERS, Objective, StorageError, open_storage, parse_objectives, public_url

if TYPE_CHECKING:
    from ._search import (
        SearchConfig,
        SearchProgress,
        SearchResult,
        count_trials,
        epochs_spent,
        load_report,
        run_worker,
        search,
        trial_rows,
        write_results,
    )

# _search imports numpy; the CLI reads SAMPLERS and PRUNERS for its help text without running a search.
__getattr__, __dir__ = lazy_attributes(__name__, dict.fromkeys(
    ("SearchConfig", "SearchProgress", "SearchResult", "count_trials", "epochs_spent", "load_report", "run_worker",
     "search", "trial_rows", "write_results"), "archlab.search._search"))

__all__ = ["PRUNERS", "SAMPLERS", "Dimension", "Objective", "SearchConfig", "SearchProgress", "SearchResult",
           "StorageError", "choice_labels", "count_trials", "dimensions", "epochs_spent", "grid_space", "load_report",
           "open_storage", "parse_objectives", "public_url", "run_worker", "sample", "search", "space_differences",
           "trial_rows", "write_results"]
