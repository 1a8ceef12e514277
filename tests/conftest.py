"""Fixtures shared by every test folder."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on one intra-op thread: on a busy machine torch's thread pool makes them a hundred
    times slower (its threads wait for cores that other processes hold), and tiny layers gain
    nothing from it. Restored after the module; modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_mlp() -> dict:
    """A dense model for the 8x8 digits (2,410 parameters) with two quick epochs and a validation
    split: the trained run that the export, bench and shrink tests start from. Shared by every test
    that asks, so copy it before changing it."""
    return {
        "name": "tiny",
        "input": [1, 8, 8],
        "task": {"kind": "classification", "classes": 10},
        "layers": ["flatten", {"dense": {"units": 32, "activation": "relu"}},
                   {"dense": {"units": 10, "activation": "softmax"}}],
        "train": {"data": "digits", "epochs": 2, "batch_size": 64, "device": "cpu", "validation_split": 0.2},
    }


#: The task kinds every command is tested on with a two-input spec (``named_task``).
TASK_KINDS = ("classification", "binary", "multilabel", "regression")


def _named_arrays(task: str, n: int = 240, seed: int = 0):
    """Two named inputs, ``ids`` (3 fields of int64 ids below 10) and ``num`` (4 floats), and a
    target of ``task`` that both of them carry signal for."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 10, (n, 3))
    num = rng.normal(size=(n, 4)).astype(np.float32)
    signal = (ids[:, 0] >= 5) * 1.5 + num[:, 0] - 0.75
    if task == "classification":
        y = np.digitize(signal + 0.3 * num[:, 1], [-0.5, 0.7])  # three classes
    elif task == "binary":
        y = (signal > 0).astype(np.int64)
    elif task == "multilabel":
        y = np.stack([signal > 0, num[:, 1] > 0], axis=1).astype(np.float32)
    else:
        y = (signal + 0.1 * rng.normal(size=n)).astype(np.float32)
    return ids, num, y


def _named_spec(task: str, data: str) -> dict:
    """A graph-form spec reading both inputs (embedding + dense, concatenated) with ``task``'s head."""
    head = {"classification": {"dense": {"units": 3, "activation": "softmax"}},
            "binary": {"dense": {"units": 1, "activation": "sigmoid"}},
            "multilabel": {"dense": {"units": 2, "activation": "sigmoid"}},
            "regression": {"dense": {"units": 1}}}[task]
    return {
        "name": f"two-inputs-{task}",
        "inputs": {"ids": {"shape": [3], "dtype": "long"}, "num": [4]},
        "task": {"kind": task},
        "graph": {
            "emb": {"from": "ids", "layers": [{"embedding": {"input_dim": 10, "output_dim": 4}}, "flatten"]},
            "dense": {"from": "num", "layers": [{"dense": {"units": 8, "activation": "relu"}}]},
            "out": {"from": ["emb", "dense"], "merge": "concat",
                    "layers": [{"dense": {"units": 16, "activation": "relu"}}, head]},
        },
        "outputs": "out",
        "train": {"data": data, "epochs": 3, "batch_size": 32, "device": "cpu", "validation_split": 0.2,
                  "optimizer": {"name": "adam", "lr": 0.01}},
    }


@pytest.fixture(scope="session")
def named_task(tmp_path_factory):
    """``named_task(kind)`` -> (data name, spec dict): a tiny data set of two named inputs
    (``npz:`` with arrays ``x/ids`` and ``x/num``) for task ``kind`` (one of TASK_KINDS) and a
    graph-form spec that reads both. The spec dict is new on each call."""
    import numpy as np

    folder = tmp_path_factory.mktemp("named")

    def make(task: str) -> tuple[str, dict]:
        path = folder / f"{task}.npz"
        if not path.is_file():
            ids, num, y = _named_arrays(task)
            np.savez(path, **{"x/ids": ids, "x/num": num, "y": y})
        query = {"classification": "", "binary": "?task=binary", "multilabel": "?task=regression",
                 "regression": "?task=regression"}[task]
        data = f"npz:{path}{query}"
        return data, _named_spec(task, data)

    return make


class ToyText:
    """Tiny parallel corpora for the tests of text tasks: a word-for-word 'translation' of 3-5
    words a sentence, which a tiny Transformer learns in seconds."""

    WORDS = {"a": "ein", "man": "mann", "dog": "hund", "cat": "katze", "runs": "läuft", "sits": "sitzt",
             "red": "rot", "blue": "blau", "big": "groß", "house": "haus"}

    def __init__(self, root: Path) -> None:
        self.root = root
        self._written: dict[tuple[int, int], dict[str, str]] = {}

    def pairs(self, n: int, seed: int = 0) -> list[tuple[str, str]]:
        rng = random.Random(seed)
        english = [" ".join(rng.choice(list(self.WORDS)) for _ in range(rng.randint(3, 5))) for _ in range(n)]
        return [(s, " ".join(self.WORDS[w] for w in s.split())) for s in english]

    @staticmethod
    def write(folder: Path, rows: list[tuple[str, str]]) -> dict[str, str]:
        """``rows`` as ``c.en`` and ``c.de`` in ``folder``: their ``text:`` sources, the parallel
        corpus (``pairs``) and its English side alone (``plain``, for a language model)."""
        (folder / "c.en").write_text("".join(s + "\n" for s, _ in rows), encoding="utf-8")
        (folder / "c.de").write_text("".join(t + "\n" for _, t in rows), encoding="utf-8")
        return {"pairs": f"text:{folder / 'c.en'},{folder / 'c.de'}", "plain": f"text:{folder / 'c.en'}"}

    def __call__(self, n: int, seed: int = 0) -> dict[str, str]:
        """n pairs, written once per (n, seed) for the whole session."""
        if (n, seed) not in self._written:
            folder = self.root / f"corpus-{n}-{seed}"
            folder.mkdir()
            self._written[n, seed] = self.write(folder, self.pairs(n, seed))
        return self._written[n, seed]


@pytest.fixture(scope="session")
def toy_text(tmp_path_factory) -> ToyText:
    return ToyText(tmp_path_factory.mktemp("toy-text"))


@pytest.fixture(scope="session")
def ensemble_dir(tmp_path_factory, tiny_mlp):
    """``ensemble_dir(combine="mean", weights=(1, 1, 1), named=None, **keys)`` -> a new ensemble
    directory in the format of docs/ensembles.md (``ensemble.json``, ``spec.yaml``, ``members/00``...),
    its members copies of three tiny digits runs trained once per session (1 epoch at lr 0.01, seeds 0-2;
    ``members/00`` also holds ``snapshot-2.safetensors``, member 02's weights). ``named``: a
    (data, spec) of ``named_task`` instead, trained the same way. ``keys`` replace top-level keys of
    ensemble.json; ``members`` replaces its members list."""
    import copy
    import json
    import shutil

    from archlab.spec import dump, load
    from archlab.training import train

    root = tmp_path_factory.mktemp("ensembles")
    trained: dict[str, list[Path]] = {}

    def members_of(spec: dict, data: str) -> list[Path]:
        if data not in trained:
            out = root / f"runs-{len(trained)}"
            runs = []
            for seed in range(3):
                one = copy.deepcopy(spec)
                one["train"] = {**one["train"], "epochs": 1, "seed": seed, "optimizer": {"name": "adam", "lr": 0.01}}
                runs.append(train(one, data=data, out=out, verbose=0).run_dir)
            shutil.copyfile(runs[2] / "best.safetensors", runs[0] / "snapshot-2.safetensors")
            trained[data] = runs
        return trained[data]

    def make(combine: str = "mean", weights=(1.0, 1.0, 1.0), named: tuple[str, dict] | None = None,
             **keys) -> Path:
        data, spec = named if named is not None else ("digits", tiny_mlp)
        runs = members_of(spec, data)
        path = root / f"ensemble-{len(list(root.glob('ensemble-*')))}"
        for i, run in enumerate(runs):
            shutil.copytree(run, path / "members" / f"{i:02d}")
        (path / "spec.yaml").write_text(dump(load(spec)), encoding="utf-8")
        record = {"format": "archlab-ensemble/1", "method": "seeds", "combine": combine,
                  "task": spec["task"]["kind"], "data": data,
                  "members": [{"dir": f"members/{i:02d}", "weights": "best", "weight": w, "seed": i}
                              for i, w in enumerate(weights)],
                  "info": {"made_by": "tests/conftest.py"}, **keys}
        (path / "ensemble.json").write_text(json.dumps(record), encoding="utf-8")
        return path

    return make
