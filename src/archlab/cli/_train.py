"""Subcommands that train and use models: train, evaluate, predict."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.table import Table

from archlab.exceptions import Interrupted

from ._app import Quiet, _out, app, data_help

if TYPE_CHECKING:
    from archlab import training

RunArg = Annotated[Path, typer.Argument(help="A run directory written by archlab train, or an ensemble directory "
                                         "(archlab ensemble).", show_default=False)]
Weights = Annotated[Literal["best", "last"], typer.Option(help="Which weights of the run to use.")]


def interrupted(exc: Interrupted) -> typer.Exit:
    """One line on Ctrl-C (what was kept, the command that continues) and exit code 130."""
    print(f"interrupted: {exc}", file=sys.stderr, flush=True)
    return typer.Exit(130)


def _early_stopping_line(result: training.TrainResult) -> str | None:
    history, recipe = result.history, result.recipe
    if not history.stopped_early or recipe is None or recipe.early_stopping is None:
        return None
    es = recipe.early_stopping
    restored = (f"restored the weights of epoch {history.best_epoch}" if es.restore_best
                else f"kept the last epoch's weights (the best was epoch {history.best_epoch})")
    return (f"early stopping: stopped after epoch {history.epoch[-1]} of {recipe.epochs} ({es.monitor} did not "
            f"improve for {max(es.patience, 1)} epochs); {restored}")


def _text_lines(text: dict | None) -> list[str]:
    """What the encoding of a text data set changed (summary.json's ``text``): sentences cut to the
    spec's input lengths, and characters the tokenizer never saw (each became <unk>)."""
    if not text:
        return []
    lines = []
    cut = text["truncated"]
    if cut:
        total = sum(sum(by_input.values()) for by_input in cut.values())
        where = "; ".join(f"{split}: " + ", ".join(f"{name} {n}" for name, n in by_input.items())
                          for split, by_input in cut.items())
        lines.append(f"truncated: {total} sentences longer than the spec's inputs were cut ({where}); lengthen "
                     "the inputs (and max_len) to keep them")
    unknown = text["unknown_characters"]
    if unknown:
        common = ", ".join(f"{c!r} {n}" for c, n in text.get("unknown_most_common", {}).items())
        lines.append(f"unknown characters: {sum(unknown.values())} that the tokenizer never saw became <unk> ("
                     + ", ".join(f"{split} {n}" for split, n in unknown.items()) + (f"; {common}" if common else "")
                     + ")")
    return lines


@app.command()
def train(
    spec: Annotated[Path | None, typer.Argument(help="The spec to train (not needed with --resume).")] = None,
    data: Annotated[str | None, typer.Option(help=data_help("train.data"))] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where to look for data files first.")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="train.epochs; with --resume, extend the run to this "
                                               "many epochs in all.")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (train.optimizer.lr).")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    device: Annotated[str | None, typer.Option(help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:1, mps.")] = None,
    precision: Annotated[Literal["auto", "fp32", "bf16"] | None, typer.Option(help="auto, fp32 or bf16.")] = None,
    data_loading: Annotated[str | None, typer.Option(help="auto, memory or stream (train.data_loading): "
                                                     "the training split in memory, or streamed from disk.")] = None,
    workers: Annotated[int | None, typer.Option(min=0, help="DataLoader workers of the streaming path "
                                                "(train.workers).")] = None,
    validation: Annotated[Literal["last", "stratified", "group"] | None,
                          typer.Option(help="train.validation: the last rows, a stratified split, or whole "
                                       "groups (speakers) never trained on.")] = None,
    out: Annotated[Path, typer.Option(help="Folder of run directories.")] = Path("runs"),
    resume: Annotated[Path | None, typer.Option(help="Continue this run from its last checkpoint.")] = None,
    quiet: Quiet = False,
) -> None:
    """Train SPEC on a data set; writes runs/<name>-<timestamp>/ and reports test metrics."""
    from archlab import training  # torch: only when the command runs

    if spec is None and resume is None:
        raise typer.BadParameter("give a SPEC to train, or --resume RUN")
    if resume is not None and spec is not None:
        raise typer.BadParameter("--resume continues a run with its own spec and recipe; drop the SPEC")
    try:
        result = training.train(spec, data=data, data_dir=data_dir, out=out, resume=resume,
                                verbose=0 if quiet else 1, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                                device=device, precision=precision, data_loading=data_loading, workers=workers,
                                validation=validation)
    except Interrupted as exc:
        raise interrupted(exc) from None
    for note in (_early_stopping_line(result), *_text_lines(result.summary.get("text"))):
        if note:
            _out.print(note, markup=False, soft_wrap=True)
    test = "  ".join(f"{k} {v:.4f}" for k, v in result.test_metrics.items())
    _out.print(f"run: {result.run_dir}", markup=False)
    _out.print(f"test: {test}", markup=False)


@app.command()
def evaluate(
    run: RunArg,
    data: Annotated[str | None, typer.Option(help=data_help("the run's", "Another data set of the same shape"))] = None,
    split: Annotated[str, typer.Option(help="Which split of the data: test or train; a text data set's own held-out "
                                            "splits by name too (multi30k: val, test_2016_flickr, test_2017_flickr, "
                                            "test_2018_flickr, test_2017_mscoco).")] = "test",
    weights: Weights = "best",
    data_dir: Annotated[Path | None, typer.Option(help="Where to look for data files first.")] = None,
    beam: Annotated[int, typer.Option(help="Beam size of the decoding that BLEU and chrF score (seq2seq); "
                                           "1 is greedy.")] = 1,
    corrupt: Annotated[list[str] | None, typer.Option(metavar="NAME=MODE", help="That input of every sample "
                                                      "replaced, MODE zero or noise (of the input's mean and std); "
                                                      "MODE alone: each input in turn. Repeat for more; adds a "
                                                      "robustness table.", show_default=False)] = None,
    seed: Annotated[int, typer.Option(help="The seed of --corrupt's noise: the same numbers every time.")] = 0,
    quiet: Quiet = False,
) -> None:
    """Metrics and a confusion matrix of a trained RUN, stored in the run directory under a name of
    the data, split and weights (evaluation-test-best.json, ...)."""
    from archlab import training  # torch: only when the command runs

    result = training.evaluate_run(run, data=data, split=split, weights=weights, data_dir=data_dir,
                                   beam_size=beam, corrupt=corrupt or (), seed=seed)
    # the heading on a line of its own: as a table title, a long data name would wrap to the table's width
    # an ensemble's "best" is each member's weights as ensemble.json names them (best, last or a snapshot)
    which = "each member's recorded weights" if "members" in result and weights == "best" else f"{weights} weights"
    _out.print(f"{result['data']} {split} ({result['samples']} samples, {which})", markup=False, soft_wrap=True)
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result["metrics"].items():
        table.add_row(key, f"{value:.4f}")
    _out.print(table)
    if "members" in result:  # an ensemble: each member beside the combination, by the headline metric
        _out.print(_members_table(result))
        gain = result["gain_over_best_member"]
        _out.print(f"{result['ensemble']['method']} ensemble of {len(result['members'])}, combined by "
                   f"{result['ensemble']['combine']}: {result['headline']} {gain:+.4f} over the best member "
                   f"({result['best_member']})", markup=False, soft_wrap=True)
    if result.get("groups"):  # the split's groups (FSDD's speakers), each scored on its rows alone
        by_group = Table(title="per group")
        names = [k for k in next(iter(result["groups"].values())) if k != "samples"]
        for column in ("group", "samples", *names):
            by_group.add_column(column, justify="left" if column == "group" else "right")
        for group, row in result["groups"].items():
            by_group.add_row(group, str(row["samples"]), *(f"{row[k]:.4f}" for k in names))
        _out.print(by_group)
    if "robustness" in result:  # one row per condition: clean, then each input corrupted
        conditions = result["robustness"]["conditions"]
        robust = Table(title=f"robustness (seed {result['robustness']['seed']})")
        names = list(conditions["clean"])
        for column in ("condition", *names):
            robust.add_column(column, justify="left" if column == "condition" else "right")
        for condition, row in conditions.items():
            robust.add_row(condition, *(f"{row[k]:.4f}" for k in names))
        _out.print(robust)
    _out.print(f"written: {', '.join(str(Path(run) / f) for f in result['files'])}", markup=False, soft_wrap=True)


def _members_table(result: dict) -> Table:
    headline = result["headline"]
    table = Table(title="members")
    for column in ("member", "weights", "weight", headline):
        table.add_column(column, justify="left" if column in ("member", "weights") else "right")
    for i, member in enumerate(result["members"]):
        table.add_row(f"{i} {member['dir']}", member["weights"], f"{member['weight']:.4g}",
                      f"{member['metrics'][headline]:.4f}")
    table.add_row("ensemble", result["ensemble"]["combine"], "", f"{result['metrics'][headline]:.4f}")
    return table


@app.command()
def predict(
    run: RunArg,
    input_path: Annotated[str, typer.Argument(metavar="INPUT", help=".npy or a .csv of rows, used as they are (on "
                                              "the scale the model was trained on); or a .png/.jpg image, "
                                              "resized to the input (with a warning) and scaled to [0, 1]; "
                                              "a .wav recording for a waveform input, resampled to the run's "
                                              "rate and cut or padded to the input (with a warning); "
                                              "for a spec with several inputs an .npz with an array per "
                                              "input, named as the inputs; for a translation run a sentence "
                                              "(a language model's: a prompt), or a text file of one per "
                                              "line.")],
    top: Annotated[int | None, typer.Option(help="How many classes to show (default 3); not for text runs.",
                                            show_default=False)] = None,
    weights: Weights = "best",
    beam: Annotated[int | None, typer.Option(help="Beam size of a translation; 1 (the default) is greedy.",
                                             show_default=False)] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Language model: the most tokens added to each prompt "
                                                       "(default 20).", show_default=False)] = None,
    temperature: Annotated[float | None, typer.Option(help="Language model: the sampling temperature (default 1); "
                                                      "0 is greedy.", show_default=False)] = None,
    top_k: Annotated[int | None, typer.Option(help="Language model: sample from the k likeliest tokens only.",
                                              show_default=False)] = None,
    top_p: Annotated[float | None, typer.Option(help="Language model: sample from the likeliest tokens whose "
                                                "probabilities reach p, in (0, 1] (nucleus).",
                                                show_default=False)] = None,
    greedy: Annotated[bool, typer.Option("--greedy", help="Language model: the likeliest token at each step "
                                         "(as --temperature 0).")] = False,
    seed: Annotated[int | None, typer.Option(help="Language model: the seed of the sampling, for the same "
                                             "continuation every time.", show_default=False)] = None,
    quiet: Quiet = False,
) -> None:
    """The top classes of a trained RUN for each sample in INPUT, with probabilities; a translation
    run's translation of each sentence; a language model's continuation of each prompt."""
    from archlab import training  # torch: only when the command runs

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = training.predict_run(run, input_path, top=top, weights=weights, beam_size=beam,
                                       max_new_tokens=max_new_tokens, greedy=greedy, temperature=temperature,
                                       top_k=top_k, top_p=top_p, seed=seed)
    for warning in caught:  # a resized image or recording: one line on stderr, the results stay alone on stdout
        print(f"warning: {warning.message}", file=sys.stderr)
    for i, result in enumerate(results):
        if "translation" in result or "text" in result:  # a translation; a prompt and its continuation
            _out.print(result.get("translation", result.get("text")), markup=False, soft_wrap=True)
            continue
        if "top" in result:
            line = ", ".join(f"{r['class']} {r['probability']:.4f}" for r in result["top"])
        else:
            line = ", ".join(f"{v:.4f}" for v in result["output"])
        if "members_agree" in result:  # an ensemble's prediction
            line += f" ({result['members_agree']}/{result['members']} members agree)"
        _out.print(f"sample {i}: {line}", markup=False)
