"""Decoding speed with and without the key/value cache (archlab.generation, ``use_cache``).

A seq2seq Transformer (width 128, 4 heads, 2 encoder and 2 decoder blocks, vocabulary 1000,
source and target of 48 positions), untrained, decodes 16 source sentences by greedy and by beam
search (4 beams) to the full 48 tokens (``</s>`` is masked off so that every run does the same
work), once with sources of the full 48 ids and once with a spec that declares ``pad_id: 0`` and
sources of 8 to 48 ids, padded (a real test batch; the cache masks the padding). Each contender
runs ``--rounds`` times, alternating; the best round of each is reported (noise on a shared
machine only slows a run down), with the ratio of the best rounds.

    python benchmarks/decode_cache.py [--threads 1] [--rounds 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch

import archlab
from archlab.generation import EOS_ID, beam_search, greedy_search

VOCAB, LENGTH, WIDTH = 1000, 48, 128


def model(device: str, padded: bool) -> archlab.ArchlabModel:
    block = {"num_heads": 4, "ff_dim": 4 * WIDTH, "dropout": 0.0}
    ids = {"shape": [LENGTH], "dtype": "long", **({"pad_id": 0} if padded else {})}
    spec = {
        "inputs": {"source": ids, "target": ids},
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
    source = torch.randint(4, VOCAB, (16, LENGTH), generator=torch.Generator().manual_seed(1)).to(args.device)
    lengths = torch.randint(8, LENGTH + 1, (16, 1), generator=torch.Generator().manual_seed(2)).to(args.device)
    padded = torch.where(torch.arange(LENGTH, device=args.device) < lengths, source, 0)
    for label, m, src in (("full-length sources", model(args.device, False), source),
                          ("padded sources (8-48 ids)", model(args.device, True), padded)):
        searches = {"greedy": lambda cache, m=m, src=src: greedy_search(m, src, use_cache=cache),
                    "beam 4": lambda cache, m=m, src=src: beam_search(m, src, beam_size=4, use_cache=cache)}
        for name, search in searches.items():
            if [h.tokens for h in search(True)] != [h.tokens for h in search(False)]:
                raise SystemExit(f"{name}, {label}: the cached and the full decode disagree")
            best = {True: float("inf"), False: float("inf")}
            for _ in range(args.rounds):
                for cache in (False, True):
                    began = time.perf_counter()
                    search(cache)
                    if args.device.startswith("cuda"):
                        torch.cuda.synchronize()
                    best[cache] = min(best[cache], time.perf_counter() - began)
            print(f"{name}, {label}: full {best[False]:.3f} s, cached {best[True]:.3f} s, speed-up "
                  f"{best[False] / best[True]:.2f}x ({args.device}, {args.threads} thread(s), 16 sentences x "
                  f"{LENGTH} tokens)")


if __name__ == "__main__":
    main()
