"""Training throughput of the Multi30k Transformer in target tokens/s: archlab's fit path vs hand-written PyTorch.

Every contender trains examples/translation/transformer-multi30k.yaml at full size (width 256, 4
heads, 3 + 3 pre-norm blocks, feed-forward 1,024, one tied 8,000-id embedding; 7,578,624
parameters) on the same real Multi30k rows (English -> German, the example's BPE tokenizer trained
on the training split), with the example's recipe: batch 64, length bucketing (batches of rows of
similar length, trimmed of their all-padding columns), label smoothing 0.1 with pad 0 ignored,
AdamW (lr 5e-4, weight decay 1e-4), a one-cycle schedule (max lr 1e-3) stepped per batch, gradient
clipping at 1.0. Each round times one slice of ``--steps`` batches (the same training rows every
round) per contender, back to back, after an untimed warm-up slice each; the order of the
contenders rotates from round to round, so the shared machine's noise hits all of them alike.
Noise only ever slows a contender down, so besides the median of the rounds the best round of each
is reported; the ratios are the median of the per-round ratios (each round's contenders ran back to
back) and the ratio of the best rounds.

- archlab: ``archlab.training.fit_spec`` (the path ``archlab train`` takes; verbose 0, no run
  directory) with the recipe of one epoch over the slice, on ``prepare_splits``' tensors, training
  the same model in place round after round (a new optimizer and schedule per slice, as for a new
  fit). Its loop also sums the epoch's loss, counts its tokens and checks the loss is finite every
  step, as in every run. Once with the recipe's precision (``auto``: bf16 autocast where that is
  faster, the first line printed says what it chose here) and once with ``precision: fp32``.
- hand, built module: the loop a competent user writes around the module ``archlab.build`` makes
  (the same seed, so the same initial weights): their own bucketing (the same rule as archlab's:
  the shuffled rows sorted by length in pools of 50 batches, the batches shuffled, from a generator
  seeded as archlab's, so the batches are the same ones; the benchmark checks that), each batch cut
  to its longest sentence from lengths counted once, ``nn.CrossEntropyLoss(ignore_index=0,
  label_smoothing=0.1)``, ``model.train()``, ``zero_grad(set_to_none=True)``, backward,
  ``clip_grad_norm_``, AdamW and OneCycleLR steps. In fp32 (the baseline of the ratios) and
  under ``torch.autocast("cpu", bfloat16)``.
- hand, nn.Transformer: the same loop on a model written by hand from ``nn.TransformerEncoder`` /
  ``nn.TransformerDecoder`` (the same layers, sizes, tying and sinusoidal positions; padding and
  causal masks passed as torch expects), loaded with the built module's initial weights: this one
  also carries none of archlab's model code (graph dispatch, mask scope), so it bounds archlab's
  overhead inside the model too.

Target tokens are the non-pad tokens of the targets (``y != 0``: each sentence's tokens and its
``</s>``), the tokens the loss is computed on; every contender trains on all rows of the slice once
per round, so all process the same count; the hand loops count theirs batch by batch and the
benchmark checks that it equals the data's count, and archlab's own ``tokens_per_s`` row agrees.
Besides wall-clock tokens/s, each slice's tokens per CPU second of this process
(``time.process_time``) are reported: on a machine shared with other jobs, time spent waiting for a
core does not count there, so with one thread that rate shows the work each contender does.

    ARCHLAB_DATA=/work/shared/data python benchmarks/translation_throughput.py [--rounds 7] [--steps 12] \
        [--threads 1] [--budget 360]

No round starts after ``--budget`` seconds of timed rounds, so a run stays under about 10 minutes
on a loaded machine (it reports how many rounds it ran).

Needs Multi30k (``archlab.data.load_dataset("multi30k")``).
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

import archlab
from archlab.builder import parse
from archlab.data import load_dataset
from archlab.training import Splits, fit_spec, prepare_model, prepare_splits, resolve_recipe, resolve_task
from archlab.training._engine import BUCKET_POOL
from archlab.training._train import as_arrays

SPEC = Path(__file__).resolve().parent.parent / "examples" / "translation" / "transformer-multi30k.yaml"
PAD = 0


def target_tokens(y: torch.Tensor) -> int:
    """The target tokens a batch or split trains on: its non-pad ids (pad = 0 is ignored by the loss)."""
    return int((y != PAD).sum())


def real_lengths(ids: torch.Tensor) -> torch.Tensor:
    """Per row, how many ids are not padding (padding is trailing)."""
    return (ids != PAD).sum(dim=1)


class PlainTransformer(nn.Module):
    """The example's model as one writes it with torch's own Transformer modules."""

    def __init__(self, vocab: int = 8000, dim: int = 256, heads: int = 4, ff: int = 1024, blocks: int = 3,
                 max_len: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)  # source, target and output head share it
        encoder = nn.TransformerEncoderLayer(dim, heads, ff, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(encoder, blocks, norm=nn.LayerNorm(dim), enable_nested_tensor=False)
        decoder = nn.TransformerDecoderLayer(dim, heads, ff, dropout, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(decoder, blocks, norm=nn.LayerNorm(dim))
        self.dropout = nn.Dropout(dropout)
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        table = torch.zeros(max_len, dim)
        table[:, 0::2], table[:, 1::2] = torch.sin(position * freq), torch.cos(position * freq)
        self.register_buffer("position", table, persistent=False)

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = target.shape[1]
        source_pad, target_pad = source == PAD, target == PAD
        causal = torch.ones(t, t, dtype=torch.bool, device=target.device).triu(1)
        memory = self.encoder(self.dropout(self.embed(source) + self.position[:source.shape[1]]),
                              src_key_padding_mask=source_pad)
        h = self.decoder(self.dropout(self.embed(target) + self.position[:t]), memory, tgt_mask=causal,
                         tgt_key_padding_mask=target_pad, memory_key_padding_mask=source_pad, tgt_is_causal=True)
        return h @ self.embed.weight.T  # (B, T, V) logits


def plain_copy(built: nn.Module) -> PlainTransformer:
    """A PlainTransformer holding the built module's weights (both create them in the same order)."""
    plain = PlainTransformer()
    ours, theirs = list(built.parameters()), list(plain.parameters())
    if [p.shape for p in ours] != [p.shape for p in theirs]:
        raise RuntimeError("the hand-written Transformer's parameters do not line up with the built module's")
    with torch.no_grad():
        for a, b in zip(ours, theirs, strict=True):
            b.copy_(a)
    return plain


def check_same_function(built: nn.Module, plain: nn.Module, data: Splits) -> None:
    """The two models compute the same logits from the same weights (eval mode, a few padded rows)."""
    source, target = data.x["source"][:8], data.x["target"][:8]
    with torch.no_grad():
        ours, theirs = built.eval()(source=source, target=target), plain.eval()(source, target)
    real = target != PAD  # padded positions' logits are never scored
    if not torch.allclose(ours[real], theirs[real], atol=1e-4, rtol=1e-4):
        raise RuntimeError("the hand-written Transformer does not compute the built module's function")


class ArchlabContender:
    def __init__(self, spec: archlab.Spec, recipe_raw: dict, data: Splits, precision: str | None) -> None:
        overrides = {"epochs": 1, "validation_split": 0.0, "device": "cpu"}
        self.recipe = resolve_recipe(recipe_raw, **overrides, **({"precision": precision} if precision else {}))
        self.task = resolve_task(self.recipe, spec, "seq2seq")
        self.model, self.head = prepare_model(spec, self.recipe, self.task)
        self.data = data
        result = self.run()
        chosen = result.engine.precision
        self.precision = chosen
        self.name = f"archlab fit_spec, {precision or self.recipe.precision}" + (
            f": {chosen.precision}" if (precision or self.recipe.precision) == "auto" else "")

    def run(self, callbacks=()):
        result = fit_spec(None, self.recipe, self.task, self.data, model=self.model, output_activation=self.head,
                          callbacks=callbacks)
        self.tokens_per_s = result.history.history["tokens_per_s"][-1]
        return result


class HandContender:
    """The hand-written loop; ``model`` takes ``(source, target)`` and returns logits."""

    def __init__(self, model: nn.Module, name: str, data: Splits, recipe_raw: dict, bf16: bool = False) -> None:
        self.model, self.name, self.bf16 = model, name, bf16
        self.source, self.target, self.y = data.x["source"], data.x["target"], data.y
        self.source_len, self.target_len = real_lengths(self.source), real_lengths(self.target)
        self.key = torch.maximum(self.source_len, self.target_len)  # bucket by the longer side
        self.batch = recipe_raw["batch_size"]
        self.optim, self.sched = recipe_raw["optimizer"], recipe_raw["schedule"]
        self.seed = recipe_raw.get("seed", 0)
        self.loss_fn = nn.CrossEntropyLoss(ignore_index=PAD, label_smoothing=recipe_raw["label_smoothing"])
        self.clip = recipe_raw["grad_clip"]

    def batches(self) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(self.y), generator=generator)
        pool, batches = self.batch * BUCKET_POOL, []
        for start in range(0, len(order), pool):
            rows = order[start:start + pool]
            batches.extend(rows[torch.sort(self.key[rows], stable=True).indices].split(self.batch))
        return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]

    def run(self, record: list | None = None) -> int:
        model = self.model
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=self.optim["lr"],
                                      weight_decay=self.optim["weight_decay"])
        batches = self.batches()
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.sched["max_lr"],
                                                        total_steps=len(batches), pct_start=self.sched["pct_start"])
        tokens = torch.zeros((), dtype=torch.long)
        for index in batches:
            s, t = int(self.source_len[index].max()), int(self.target_len[index].max())
            source, target, y = self.source[index, :s], self.target[index, :t], self.y[index, :t]
            if record is not None:
                record.append((tuple(source.shape), tuple(target.shape), target_tokens(y)))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                logits = model(source, target)
            loss = self.loss_fn(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), self.clip)
            optimizer.step()
            scheduler.step()
            tokens += (y != PAD).sum()
        return int(tokens)


class RecordBatches(archlab.training.Callback):
    """Keeps the shapes and target tokens of archlab's batches, to check the hand loop's are the same."""

    def __init__(self) -> None:
        self.seen: list = []

    def on_batch(self, engine, xb, yb):
        self.seen.append((tuple(xb["source"].shape), tuple(xb["target"].shape), target_tokens(yb)))
        return xb, yb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=12, help="batches per timed slice")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--skip-bf16", action="store_true", help="only the fp32 contenders")
    parser.add_argument("--budget", type=float, default=360,
                        help="seconds of timed rounds: no round starts after them (a loaded machine stays in time)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    spec = archlab.load(SPEC)
    recipe_raw = spec.to_dict()["train"]
    recipe = resolve_recipe(recipe_raw)
    dataset = load_dataset(recipe.data)
    parsed = parse(spec)
    task = resolve_task(recipe, spec, dataset.task)
    encoded = as_arrays(dataset, parsed, task, recipe)
    full = prepare_splits(encoded, recipe, task, parsed)
    n = args.steps * recipe.batch_size
    data = Splits({k: v[:n] for k, v in full.x.items()}, full.y[:n])
    tokens = target_tokens(data.y)

    # every model is built by prepare_model, which seeds the build: all start from the same weights
    fp32 = ArchlabContender(spec, recipe_raw, data, "fp32")
    contenders = [fp32]
    if not args.skip_bf16:
        contenders.insert(0, ArchlabContender(spec, recipe_raw, data, None))
    hand = HandContender(prepare_model(spec, fp32.recipe, fp32.task)[0], "hand loop, built module, fp32",
                         data, recipe_raw)
    contenders.append(hand)
    if not args.skip_bf16:
        contenders.append(HandContender(prepare_model(spec, fp32.recipe, fp32.task)[0],
                                        "hand loop, built module, bf16 autocast", data, recipe_raw, bf16=True))
    start = prepare_model(spec, fp32.recipe, fp32.task)[0]
    plain = plain_copy(start)
    check_same_function(start, plain, data)
    contenders.append(HandContender(plain, "hand loop, nn.Transformer, fp32", data, recipe_raw))

    # the same batches on both sides, and the hand loop's count of tokens is the data's
    recorder = RecordBatches()
    fp32.run([recorder])
    seen: list = []
    counted = hand.run(seen)
    if seen != recorder.seen or counted != tokens or sum(b[2] for b in seen) != tokens:
        raise RuntimeError(f"the hand loop's batches are not archlab's ({len(seen)} vs {len(recorder.seen)} batches, "
                           f"{counted} vs {tokens} target tokens)")
    for contender in contenders:  # warm-up of those that have not run yet: first-call costs untimed
        if isinstance(contender, HandContender) and contender is not hand:
            contender.run()

    print(f"{platform.processor() or platform.machine()}, python {sys.version.split()[0]}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    if not args.skip_bf16:
        print(f"precision auto: {contenders[0].precision.precision} ({contenders[0].precision.reason})")
    print(f"{args.rounds} interleaved rounds of {len(seen)} bucketed batches of {recipe.batch_size} = {n} sentence "
          f"pairs, {tokens:,} target tokens per contender ({tokens / n:.1f} per pair; {built_params(spec):,} "
          "parameters)", flush=True)

    rates: dict[str, list[float]] = {c.name: [] for c in contenders}
    cpu_rates: dict[str, list[float]] = {c.name: [] for c in contenders}
    ours = [c for c in contenders if isinstance(c, ArchlabContender)]
    began_rounds = time.perf_counter()
    for r in range(args.rounds):
        if r and time.perf_counter() - began_rounds > args.budget:
            print(f"stopping after {r} rounds: the {args.budget:.0f} s budget is spent")
            break
        order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
        for contender in order:
            began, began_cpu = time.perf_counter(), time.process_time()
            contender.run()
            rates[contender.name].append(tokens / (time.perf_counter() - began))
            cpu_rates[contender.name].append(tokens / (time.process_time() - began_cpu))
        print(f"round {r + 1}: " + ", ".join(f"{c.name} {rates[c.name][-1]:,.0f} ({cpu_rates[c.name][-1]:,.0f})"
                                             for c in contenders)
              + " target tokens/s (per CPU second)", flush=True)
        print("  archlab's own tokens_per_s row (its loop alone): "
              + ", ".join(f"{c.name} {c.tokens_per_s:,.0f}" for c in ours), flush=True)

    def ratio(values: dict[str, list[float]], name: str, base: str) -> float:
        return statistics.median(a / b for a, b in zip(values[name], values[base], strict=True))

    base = hand.name
    print(f"\n| contender | target tokens/s, median | best round | / {base}, median of rounds | best rounds "
          "| target tokens per CPU second, median | / hand, median of rounds |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in rates:
        print(f"| {name} | {statistics.median(rates[name]):,.0f} | {max(rates[name]):,.0f} "
              f"| {ratio(rates, name, base):.3f} | {max(rates[name]) / max(rates[base]):.3f} "
              f"| {statistics.median(cpu_rates[name]):,.0f} | {ratio(cpu_rates, name, base):.3f} |")
    if not args.skip_bf16:
        mine, theirs = contenders[0].name, contenders[3].name
        print(f"\n{mine} / {theirs}: median of rounds {ratio(rates, mine, theirs):.3f}, best rounds "
              f"{max(rates[mine]) / max(rates[theirs]):.3f}; per CPU second {ratio(cpu_rates, mine, theirs):.3f}")


def built_params(spec: archlab.Spec) -> int:
    return archlab.build(spec).num_params()


if __name__ == "__main__":
    main()
