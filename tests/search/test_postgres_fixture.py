"""The ``postgres_url`` fixture gives a working database for Optuna's RDB storage."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

# Self-contained: the fixture comes from this folder's conftest, so the file also runs on its own;
# the timeout bounds a server that hangs on start (well under the suite's 300 s).
pytestmark = pytest.mark.timeout(180)


def test_optuna_rdb_storage_on_postgres(postgres_url: str) -> None:
    storage = optuna.storages.RDBStorage(postgres_url)
    try:
        study = optuna.create_study(study_name="fixture-check", storage=storage)
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)

        reloaded = optuna.load_study(study_name="fixture-check", storage=storage)
        trials = reloaded.get_trials(deepcopy=False)
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
        assert sorted(t.number for t in trials) == [0, 1, 2]
    finally:
        storage.engine.dispose()  # close pooled connections before the fixture stops the server
