"""Decoding speed with and without the key/value cache (archlab.generation, ``use_cache``).

A seq2seq Transformer (width 128, 4 heads, 2 encoder and 2 decoder blocks, vocabulary 1000,
source and target of 48 positions), untrained, decodes 16 source sentences by greedy and by beam
search (4 beams) to the full 48 tokens (``</s>`` is masked off so that every run does the same
work). Each contender runs ``--rounds`` times, alternating; the best round of each is reported
(noise on a shared machine only slows a run down), with the ratio of the best rounds.

    python benchmarks/decode_cache.py [--threads 1] [--rounds 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch

import archlab
from archlab.generation import EOS_ID, beam_search, greedy_search

VOCAB, LENGTH, WIDTH = 1000, 48, 128


def model(device: str) -> archlab.ArchlabModel:
    block = {"num_heads": 4, "ff_dim": 4 * WIDTH, "dropout": 0.0}
    spec = {
        "inputs": {"source": {"shape": [LENGTH], "dtype": "long"}, "target": {"shape": [LENGTH], "dtype": "long"}},
        "graph": {
            "enc": {"from": "source", "layers": [{"embedding": {"input_dim": VOCAB, "output_dim": WIDTH}},
                                                 {"positional_embedding": {"max_len": LENGTH}},
                                                 {"repeat": {"times": 2, "layers": [{"transformer_encoder": block}]}}]},
            "emb": {"from": "target", "layers": [{"embedding": {"input_dim": VOCAB, "output_dim": WIDTH}},
                                                 {"positional_embedding": {"max_len": LENGTH}}]},
            "dec1": {"from": ["emb", "enc"], "layers": [{"transformer_decoder": {**block, "causal": True}}]},
            "dec2": {"from": ["dec1", "enc"], "layers": [{"transformer_decoder": {**block, "causal": True}},
                                                         {"dense": {"units": VOCAB}}]},
        },
        "outputs": "dec2",
    }
    torch.manual_seed(0)
    built = archlab.build(spec, device=device).eval()
    with torch.no_grad():
        built.net.nodes["dec2"].layers[1].bias[EOS_ID] = -1e4  # never ends: every run decodes LENGTH tokens
    return built


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    m = model(args.device)
    source = torch.randint(4, VOCAB, (16, LENGTH), generator=torch.Generator().manual_seed(1)).to(args.device)
    searches = {"greedy": lambda cache: greedy_search(m, source, use_cache=cache),
                "beam 4": lambda cache: beam_search(m, source, beam_size=4, use_cache=cache)}
    for name, search in searches.items():
        if [h.tokens for h in search(True)] != [h.tokens for h in search(False)]:
            raise SystemExit(f"{name}: the cached and the full decode disagree")
        best = {True: float("inf"), False: float("inf")}
        for _ in range(args.rounds):
            for cache in (False, True):
                began = time.perf_counter()
                search(cache)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                best[cache] = min(best[cache], time.perf_counter() - began)
        print(f"{name}: full {best[False]:.3f} s, cached {best[True]:.3f} s, speed-up {best[False] / best[True]:.2f}x "
              f"({args.device}, {args.threads} thread(s), 16 sentences x {LENGTH} tokens)")


if __name__ == "__main__":
    main()
