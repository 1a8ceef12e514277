"""Search efficiency on digits: TPE+ASHA against random search without pruning, equal wall-clock budgets.

The space is examples/search/digits-space.yaml (seven dimensions: the first layer's type, a choice
between a conv2d and a residual block, with the conv2d's filters and kernel size inside it; depth as
repeat.times; the repeated convolutions' width; dropout; dense units; learning rate; 9 epochs per
trial, batch 32). Each trial is scored by ``archlab.search.search`` on its stratified 20% validation
split of the digits training part (1,149 train / 288 validation images; the same split for every
trial and every contender).

Contenders, each given the same wall-clock budget per seed:

- random: ``search(..., sampler="random", pruner="none")``: every trial trains all 9 epochs;
- tpe+asha: ``search(..., sampler="tpe", pruner="asha")`` (archlab's default search; ``--pruner
  hyperband`` swaps in Optuna's Hyperband pruner);
- kerastuner (reference, needs the ``bench`` extra): ``keras_tuner.Hyperband(objective="val_accuracy",
  max_epochs=9, factor=3, seed=seed)`` on the Keras twin of the space (benchmarks/_keras_search.py),
  Keras 3 on the torch backend, the same split and batch size.

Both archlab contenders call ``search(space, "digits", 10_000, timeout=budget, ...)``: the study stops
starting trials once ``budget`` seconds have passed (Optuna's timeout), and the trial running then
finishes; KerasTuner's oracle is stopped the same way. Only what finished within the budget counts:
trials that end after it are reported as overrun and left out of every number below.

Runs are interleaved seed by seed (the order of the contenders rotates with the seed) after an
untimed warm-up of each, in one process with ``torch.set_num_threads(--threads)`` (default 1), so the
shared machine's noise hits all alike.

Compute is counted in epochs trained (``epochs_trained`` of every trial, pruned ones included; for
KerasTuner, the epochs each trial actually ran: a Hyperband round that resumes a checkpoint at epoch
3 and trains to 9 counts 6), in wall seconds since the run started and, for archlab's contenders, in
GFLOP (per epoch, 3 x the spec's forward FLOPs per training image plus one forward per validation
image). Per seed:

- B_r: random search's final best validation accuracy (best COMPLETE trial within the budget);
- the epochs and seconds TPE+ASHA needed to first reach >= B_r with a COMPLETE trial (a pruned
  trial's value is an intermediate one and does not count), walking its trials in completion order
  and adding up the epochs of every trial finished so far;
- the ratio of those to random's total compute (its epochs within the budget; the budget in seconds),
  and, stricter, to the compute random itself needed to first reach B_r.

The target (the issue): TPE+ASHA reaches B_r in at most half of random's compute.

For KerasTuner two readings are reported: its own score (each trial's best epoch, whose checkpoint
``get_best_models`` returns; short Hyperband rounds count), and archlab's rule (the last epoch of
trials trained to the full 9 epochs).

    python benchmarks/search_efficiency.py                       # 3 seeds x 90 s x 3 contenders, ~14 min
    python benchmarks/search_efficiency.py --quick               # a smoke run (1 seed, 10 s), to a temp dir
    python benchmarks/search_efficiency.py --budget 60 --seeds 0 1 2 3 --no-keras

Writes ``<out>/search_efficiency.png`` (best-so-far over seconds and over epochs, a thin line per
seed) and ``<out>/search_efficiency.json`` (every trial of every run, and the summary); ``--out``
defaults to docs/img.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
SPACE = ROOT / "examples" / "search" / "digits-space.yaml"
MAX_EPOCHS = 9
BATCH = 32
STYLES = {"random": ("tab:gray", "--"), "kerastuner": ("tab:orange", ":")}  # TPE: blue, solid
EPS = 1e-9  # accuracies are k/288 in float32 on every side; equal counts give equal floats


# -- the contenders --------------------------------------------------------------------------------
def run_archlab(sampler: str, pruner: str, budget: float, seed: int, tmp: Path, sizes: tuple[int, int]) -> dict:
    """One ``archlab.search.search`` run; trials as dicts with times in seconds since the call.

    ``gflop`` is the arithmetic a trial did: per epoch, 3 x the forward FLOPs of its spec
    (``archlab.analyze``) per training image (forward, and backward at twice the forward) plus one
    forward per validation image. It does not count a trial's fixed costs (building, bookkeeping).
    """
    import archlab.search as search_module

    name = f"{sampler}-{pruner}-s{seed}-{time.time_ns()}"
    t0 = dt.datetime.now()
    began = time.perf_counter()
    result = search_module.search(SPACE, "digits", 10_000, sampler=sampler, pruner=pruner, timeout=budget,
                                  seed=seed, out=tmp, study=name)
    wall = time.perf_counter() - began
    trials = []
    for t in result.study.get_trials(deepcopy=False):
        if t.datetime_complete is None:
            continue
        attrs = t.user_attrs
        epochs = int(attrs.get("epochs_trained", 0))
        trials.append({
            "number": t.number, "state": t.state.name,
            "start": (t.datetime_start - t0).total_seconds(), "end": (t.datetime_complete - t0).total_seconds(),
            "epochs_trained": epochs, "value": t.value,
            "gflop": epochs * attrs.get("flops", 0) * (3 * sizes[0] + sizes[1]) / 1e9,
            "counts": t.state.name == "COMPLETE", "pruned_by": attrs.get("pruned_by"),
            "params": t.params, "flops": attrs.get("flops"),
        })
    assert search_module.epochs_spent(result.study) == sum(t["epochs_trained"] for t in trials)  # noqa: S101
    return {"trials": trials, "wall": wall}


def digits_split() -> tuple[np.ndarray, ...]:
    """The split every archlab trial uses: ``split_validation`` with the space's recipe
    (validation_split 0.2, stratified, seed 0)."""
    from archlab.data import load_dataset
    from archlab.spec import first_point, load
    from archlab.training import resolve_recipe, split_validation

    data = load_dataset("digits")
    recipe = resolve_recipe(first_point(load(SPACE).to_dict())["train"], data="digits")
    assert recipe.validation == "stratified" and recipe.validation_split == 0.2  # noqa: S101
    assert recipe.batch_size == BATCH and recipe.epochs == MAX_EPOCHS  # noqa: S101
    return split_validation(data.x_train, data.y_train, recipe, "cross_entropy")


def run_keras(budget: float, seed: int, split: tuple[np.ndarray, ...]) -> dict:
    from _keras_search import run_hyperband

    out = run_hyperband(*split, budget=budget, seed=seed, max_epochs=MAX_EPOCHS, factor=3, batch_size=BATCH)
    for t in out["trials"]:
        t["counts"] = t["state"] == "COMPLETED" and t["value"] is not None
        # archlab's rule: a model trained to the full 9 epochs, scored on its last epoch
        t["counts_full"] = t["state"] == "COMPLETED" and t["to_epoch"] == MAX_EPOCHS
    return out


# -- analysis -------------------------------------------------------------------------------------
def curve(trials: list[dict], budget: float, counts: str = "counts", value: str = "value") -> list[dict]:
    """Best-so-far after each trial that finished within the budget, in completion order, with the
    epochs of every trial finished by then."""
    points, epochs, gflop, best = [], 0, 0.0, None
    for t in sorted(trials, key=lambda t: t["end"]):
        if t["end"] > budget:
            break
        epochs += t["epochs_trained"]
        gflop = None if gflop is None or t.get("gflop") is None else gflop + t["gflop"]
        if t[counts] and t[value] is not None and (best is None or t[value] > best):
            best = t[value]
        points.append({"seconds": t["end"], "epochs": epochs, "gflop": gflop, "best": best})
    return points


def first_reach(points: list[dict], target: float | None) -> dict | None:
    """The first point of a curve whose best-so-far is >= target."""
    if target is None:
        return None
    return next((p for p in points if p["best"] is not None and p["best"] >= target - EPS), None)


def run_summary(run: dict, budget: float, counts: str = "counts", value: str = "value") -> dict:
    points = curve(run["trials"], budget, counts, value)
    inside = [t for t in run["trials"] if t["end"] <= budget]
    final = points[-1]["best"] if points else None
    reached = first_reach(points, final)
    return {
        "trials": len(inside), "complete": sum(bool(t[counts]) for t in inside),
        "pruned": sum(t["state"] == "PRUNED" for t in inside),
        "pruned_after_last_epoch": sum(t["state"] == "PRUNED" and t["epochs_trained"] >= MAX_EPOCHS for t in inside),
        "overrun_trials": len(run["trials"]) - len(inside),
        "epochs": sum(t["epochs_trained"] for t in inside),
        "gflop": points[-1]["gflop"] if points else None,
        "epochs_with_overrun": sum(t["epochs_trained"] for t in run["trials"]),
        "wall": run["wall"], "final_best": final,
        "best_first_at_epochs": reached and reached["epochs"], "best_first_at_seconds": reached and reached["seconds"],
        "curve": points,
    }


def compare(random: dict, other: dict, budget: float) -> dict:
    """How much of random search's compute ``other`` needed to reach random's final best."""
    target = random["final_best"]
    hit = first_reach(other["curve"], target)
    out: dict[str, Any] = {"target": target, "reached": hit is not None}
    if hit is not None:
        out.update({
            "epochs": hit["epochs"], "seconds": hit["seconds"], "gflop": hit["gflop"],
            "epoch_ratio": hit["epochs"] / random["epochs"], "second_ratio": hit["seconds"] / budget,
            "gflop_ratio": None if hit["gflop"] is None else hit["gflop"] / random["gflop"],
            "epoch_ratio_to_random_reach": hit["epochs"] / random["best_first_at_epochs"],
            "second_ratio_to_random_reach": hit["seconds"] / random["best_first_at_seconds"],
        })
    return out


# -- output ---------------------------------------------------------------------------------------
def compact(obj: Any) -> Any:
    """Floats to 6 significant digits (accuracies are k/288: 6 digits tell them apart), for the JSON."""
    if isinstance(obj, float):
        return float(f"{obj:.6g}") if math.isfinite(obj) else str(obj)
    if isinstance(obj, dict):
        return {str(k): compact(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [compact(v) for v in obj]
    return obj


def write_record(record: dict, path: Path) -> None:
    """The runs' trials, the summaries without their curves (``curve()`` rebuilds them from the trials)."""
    record = {**record, "summaries": {name: {seed: {k: v for k, v in s.items() if k != "curve"}
                                             for seed, s in by_seed.items()}
                                      for name, by_seed in record["summaries"].items()}}
    path.write_text(json.dumps(compact(record), separators=(",", ":")) + "\n", encoding="utf-8")


def fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def plot(runs: dict[str, dict[int, dict]], comparisons: dict[str, dict[int, dict]], budget: float,
         path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    for name, by_seed in runs.items():
        for i, (seed, summary) in enumerate(by_seed.items()):
            pts = [p for p in summary["curve"] if p["best"] is not None]
            if not pts:
                continue
            xs_s = [p["seconds"] for p in pts] + [budget]
            xs_e = [p["epochs"] for p in pts] + [summary["epochs"]]
            ys = [p["best"] for p in pts] + [pts[-1]["best"]]
            label = name if i == 0 else None
            color, style = STYLES.get(name, ("tab:blue", "-"))
            axes[0].step(xs_s, ys, where="post", color=color, ls=style, lw=1.1, alpha=0.9, label=label)
            axes[1].step(xs_e, ys, where="post", color=color, ls=style, lw=1.1, alpha=0.9, label=label)
            hit = comparisons.get(name, {}).get(seed)
            if hit and hit["reached"]:  # where this contender first reached random's final best
                axes[0].plot(hit["seconds"], hit["target"], "o", ms=4, color=color)
                axes[1].plot(hit["epochs"], hit["target"], "o", ms=4, color=color)
    axes[0].set_xlabel("wall seconds since the search started")
    axes[1].set_xlabel("epochs trained (all trials, pruned ones included)")
    axes[0].set_ylabel("best validation accuracy so far")
    axes[0].axvline(budget, color="k", lw=0.6, ls=":")
    for ax in axes:
        ax.set_ylim(0.95, 1.0)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.suptitle(f"digits-space.yaml: best-so-far per seed (thin lines), {budget:g} s budget each; "
                 "dots: where random search's final best was first reached", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=90.0, help="wall-clock seconds per search run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (all contenders)")
    parser.add_argument("--pruner", choices=("asha", "hyperband"), default="asha", help="the TPE contender's pruner")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.975, 0.98, 0.985],
                        help="fixed validation accuracies whose first-reach compute is also reported")
    parser.add_argument("--no-keras", action="store_true", help="skip the KerasTuner reference")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 10 s, output to a temp dir")
    parser.add_argument("--out", type=Path, default=None, help="folder for the plot and JSON (default docs/img)")
    args = parser.parse_args()
    if args.quick:
        args.budget, args.seeds = 10.0, args.seeds[:1]
    out = args.out or (Path(tempfile.mkdtemp(prefix="search-efficiency-")) if args.quick else ROOT / "docs" / "img")
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")  # KerasTuner's resumes

    tpe = f"tpe+{args.pruner}"
    contenders: list[str] = ["random", tpe] + ([] if args.no_keras else ["kerastuner"])
    versions = {"python": sys.version.split()[0], "torch": torch.__version__}
    import optuna

    versions["optuna"] = optuna.__version__
    split = digits_split()
    sizes = (len(split[0]), len(split[2]))
    if not args.no_keras:
        import keras
        import keras_tuner

        versions.update(keras=keras.__version__, keras_tuner=keras_tuner.__version__)
    command = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    print(f"{command}\n{dt.date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch threads {torch.get_num_threads()}, " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"budget {args.budget:g} s per run; seeds {args.seeds}; contenders {contenders}; "
          f"{len(split[0])} train / {len(split[2])} validation images")

    def run(name: str, budget: float, seed: int, tmp: Path) -> dict:
        if name == "random":
            return run_archlab("random", "none", budget, seed, tmp, sizes)
        if name == "kerastuner":
            return run_keras(budget, seed, split)
        return run_archlab("tpe", args.pruner, budget, seed, tmp, sizes)

    raw: dict[str, dict[int, dict]] = {c: {} for c in contenders}
    with tempfile.TemporaryDirectory(prefix="search-efficiency-") as tmp_dir:
        tmp = Path(tmp_dir)
        for name in contenders[1:]:  # untimed warm-up: imports, first builds, allocator (random shares tpe's)
            run(name, 3.0, 10_000, tmp)
        for i, seed in enumerate(args.seeds):
            order = contenders[i % len(contenders):] + contenders[:i % len(contenders)]
            for name in order:
                began = time.perf_counter()
                raw[name][seed] = run(name, args.budget, seed, tmp)
                s = run_summary(raw[name][seed], args.budget)
                print(f"seed {seed} {name:>13}: {s['trials']} trials ({s['complete']} counted), {s['epochs']} epochs, "
                      f"best {fmt(s['final_best'])}, {time.perf_counter() - began:.1f} s", flush=True)

    summaries = {name: {seed: run_summary(r, args.budget) for seed, r in by_seed.items()}
                 for name, by_seed in raw.items()}
    if "kerastuner" in raw:
        summaries["kerastuner (9-epoch trials, last epoch)"] = {
            seed: run_summary(r, args.budget, "counts_full", "final_value") for seed, r in raw["kerastuner"].items()}
    comparisons = {name: {seed: compare(summaries["random"][seed], s, args.budget) for seed, s in by_seed.items()}
                   for name, by_seed in summaries.items() if name != "random"}

    # -- tables ---------------------------------------------------------------------------------
    print(f"\n### Per run ({args.budget:g} s each; trials that ended after the budget are left out)\n")
    print("| seed | contender | trials (counted / pruned) | epochs | GFLOP | final best val acc | "
          "first reached at (epochs, s) |")
    print("|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        for name, by_seed in summaries.items():
            s = by_seed[seed]
            print(f"| {seed} | {name} | {s['trials']} ({s['complete']} / {s['pruned']}) | {s['epochs']} | "
                  f"{fmt(s['gflop'], '.0f')} | {fmt(s['final_best'])} | "
                  f"{s['best_first_at_epochs']}, {fmt(s['best_first_at_seconds'], '.1f')} |")

    print("\n### Compute to first reach random search's final best B_r (ratio to random's whole run)\n")
    print("| seed | B_r | contender | epochs (ratio) | seconds (ratio) | GFLOP (ratio) | "
          "epochs / random's epochs to B_r | at most half? epochs, seconds |")
    print("|---|---|---|---|---|---|---|---|")
    verdicts: dict[str, list[bool]] = {name: [] for name in comparisons}
    for seed in args.seeds:
        for name, by_seed in comparisons.items():
            c = by_seed[seed]
            if c["reached"]:
                ok = c["epoch_ratio"] <= 0.5
                gflop = "-" if c["gflop"] is None else f"{c['gflop']:.0f} ({c['gflop_ratio']:.2f})"
                cells = (f"{c['epochs']} ({c['epoch_ratio']:.2f})", f"{c['seconds']:.1f} ({c['second_ratio']:.2f})",
                         gflop, f"{c['epoch_ratio_to_random_reach']:.2f}",
                         f"{'yes' if ok else 'no'}, {'yes' if c['second_ratio'] <= 0.5 else 'no'}")
            else:
                ok = False
                cells = ("not reached", "not reached", "-", "-", "no, no")
            verdicts[name].append(ok)
            print(f"| {seed} | {fmt(c['target'])} | {name} | " + " | ".join(cells) + " |")

    print("\n### Over the seeds (not reached counts as infinite)\n")
    print("| contender | final best, median (per seed) | epochs in budget, median | "
          "epoch ratio to B_r, median / mean | second ratio, median / mean | at most half the epochs on |")
    print("|---|---|---|---|---|---|")
    for name, by_seed in summaries.items():
        finals = [by_seed[s]["final_best"] for s in args.seeds]
        epochs = [by_seed[s]["epochs"] for s in args.seeds]
        known = [f for f in finals if f is not None]
        row = (f"| {name} | {fmt(statistics.median(known) if known else None)} "
               f"({', '.join(fmt(f) for f in finals)}) | {statistics.median(epochs):g} | ")
        if name == "random":
            print(row + "1 (by definition) | 1 | - |")
            continue
        c = comparisons[name]
        er = [c[s]["epoch_ratio"] if c[s]["reached"] else float("inf") for s in args.seeds]
        sr = [c[s]["second_ratio"] if c[s]["reached"] else float("inf") for s in args.seeds]
        print(row + f"{statistics.median(er):.2f} / {statistics.mean(er):.2f} | "
              f"{statistics.median(sr):.2f} / {statistics.mean(sr):.2f} | "
              f"{sum(verdicts[name])} of {len(args.seeds)} seeds |")

    print("\n### Compute to first reach fixed accuracies: median over seeds (not reached = infinite; "
          "seeds that reached it)\n")
    print("| contender | " + " | ".join(f">= {t:g}" for t in args.thresholds) + " |")
    print("|---|" + "---|" * len(args.thresholds))
    reach: dict[str, dict[float, list]] = {}
    for name, by_seed in summaries.items():
        cells = []
        for t in args.thresholds:
            hits = [first_reach(by_seed[s]["curve"], t) for s in args.seeds]
            reach.setdefault(name, {})[t] = hits
            secs = [h["seconds"] if h else float("inf") for h in hits]
            eps = [h["epochs"] if h else float("inf") for h in hits]
            n = f"({sum(h is not None for h in hits)}/{len(hits)})"
            cells.append(f"{statistics.median(secs):.1f} s, {statistics.median(eps):g} epochs {n}"
                         if math.isfinite(statistics.median(secs)) else f"not reached {n}")
        print(f"| {name} | " + " | ".join(cells) + " |")

    tpe_ok = verdicts[tpe]
    print(f"\n{tpe} reached random search's final best in at most half of random's epochs on {sum(tpe_ok)} of "
          f"{len(tpe_ok)} seeds: the target {'holds' if all(tpe_ok) else 'does NOT hold'} on every seed.")

    plot({k: v for k, v in summaries.items() if k in contenders}, comparisons, args.budget,
         out / "search_efficiency.png")
    record = {"command": command, "date": str(dt.date.today()), "budget": args.budget, "seeds": args.seeds,
              "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
              "cores": os.cpu_count(), "versions": versions, "space": str(SPACE.relative_to(ROOT)),
              "thresholds": {n: {str(t): h for t, h in r.items()} for n, r in reach.items()},
              "summaries": summaries, "comparisons": comparisons, "runs": raw}
    write_record(record, out / "search_efficiency.json")
    print(f"\nwrote {out / 'search_efficiency.png'} and {out / 'search_efficiency.json'}")


if __name__ == "__main__":
    main()
