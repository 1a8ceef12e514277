"""The plots of a study, drawn with Optuna's matplotlib backend and saved as PNG."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

__all__ = ["plot_study"]


def plot_study(study: Any, objectives: list, run_dir: Path) -> dict[str, str]:
    """history.png, pareto.png (several objectives) and importances.png; returns {plot: why it was
    skipped} for plots the study cannot have yet (too few complete trials, one searched value)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as oplt

    from archlab.training import save_figure

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    skipped: dict[str, str] = {}
    first = objectives[0]
    target = None if len(objectives) == 1 else (lambda t: t.values[0])
    plots = {"history.png": lambda: oplt.plot_optimization_history(study, target=target, target_name=first.name)}
    if len(objectives) in (2, 3):
        plots["pareto.png"] = lambda: oplt.plot_pareto_front(study, target_names=[o.name for o in objectives])
    plots["importances.png"] = lambda: oplt.plot_param_importances(study, target=target, target_name=first.name)
    for name, draw in plots.items():
        if len(complete) < 2:
            skipped[name] = f"{len(complete)} complete trial(s); a plot needs at least 2"
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                axes = draw()
            except (ValueError, RuntimeError) as exc:  # e.g. importances of a space with one value searched
                skipped[name] = str(exc)
                continue
        fig = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
        fig.set_size_inches(8, 5)
        fig.tight_layout()
        save_figure(fig, run_dir / name)
    plt.close("all")
    return skipped
