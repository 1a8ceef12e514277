"""Start-up: the commands that never build a module import neither torch nor the other heavy
libraries, so they answer in a fraction of a second (timings in docs/benchmarks.md).

Checked in fresh ``python -X importtime`` processes: in this one, pytest and other tests have
already imported everything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HEAVY = {"torch", "numpy", "optuna", "sklearn", "matplotlib"}


def _python(*args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``python -X importtime ARGS``; return the process and the top-level packages it imported."""
    env = {**os.environ, "COLUMNS": "160", "NO_COLOR": "1"}
    done = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    # each line: "import time:   self [us] | cumulative | <indent>package.module"
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    return done, imported


@pytest.mark.parametrize(("args", "expected"), [
    (["--help"], "validate"),
    (["validate", str(EXAMPLES / "digits-cnn.yaml")], "valid (sequential form; input (1, 8, 8); output (10,))"),
    (["schema"], '"conv2d"'),
    (["layers"], "transformer_decoder"),
    # tied weights (wte) and 124M parameters, counted by formula: no module is built
    (["summary", str(EXAMPLES / "gpt2-small.yaml")], "124,439,808"),
    # the planner is arithmetic on shapes too (docs/plan.md)
    (["plan", str(EXAMPLES / "gpt3-175b.yaml"), "--gpus", "1024", "--tp", "8", "--pp", "8"], "verdict: fits"),
], ids=["help", "validate", "schema", "layers", "summary", "plan"])
def test_commands_that_never_build_import_no_heavy_library(args: list[str], expected: str) -> None:
    done, imported = _python("-m", "archlab", *args)
    assert done.returncode == 0, done.stderr[-2000:]
    assert expected in done.stdout
    assert "archlab.cli" in done.stderr  # the parse below did see the imports
    assert imported & HEAVY == set()


def test_schema_output_is_still_the_whole_document() -> None:
    done, _ = _python("-m", "archlab", "schema")
    schema = json.loads(done.stdout)
    assert "dense" in json.dumps(schema) and "transformer_encoder" in json.dumps(schema)


BUILD = """
import sys
import archlab
assert "torch" not in sys.modules, "import archlab loaded torch"
from archlab import build
import torch
model = build({"input": [4], "layers": [{"dense": {"units": 3, "activation": "relu"}}, {"dense": {"units": 2}}]})
assert isinstance(model, archlab.ArchlabModel)
print(tuple(model(torch.zeros(5, 4)).shape), sum(p.numel() for p in model.parameters()))
from archlab.layers.core import Dense
from archlab.layers.conv import Conv2d
print(type(model).__module__, Dense.__module__, Conv2d.__module__)
"""


def test_import_archlab_is_light_and_build_still_builds() -> None:
    done, imported = _python("-c", BUILD)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "(5, 2) 23"  # 4*3+3 + 3*2+2
    assert lines[1] == "archlab.builder._modules archlab.layers._core_modules archlab.layers._conv_modules"
    assert "torch" in imported


def test_every_public_name_is_listed_and_resolves() -> None:
    done, _ = _python("-c", "import sys, archlab\n"
                            "assert set(archlab.__all__) <= set(dir(archlab)), 'dir() misses lazy names'\n"
                            "assert 'torch' not in sys.modules\n"
                            "from archlab import *\n"
                            "names = globals()\n"
                            "missing = [n for n in archlab.__all__ if names.get(n) is not getattr(archlab, n)]\n"
                            "print(missing, archlab.train.__module__, archlab.Sequential.__module__, "
                            "archlab.Model.__module__, issubclass(archlab.Sequential, archlab.Model))")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["[]", "archlab.training._train", "archlab.sequential", "archlab.model", "True"]


def test_callback_is_public_and_the_out_checks_need_no_torch() -> None:
    done, _ = _python("-c", "import sys, archlab\n"
                            "from archlab._paths import check_out_dir, check_out_file\n"
                            "assert 'torch' not in sys.modules, 'the --out checks imported torch'\n"
                            "import archlab.training as t\n"
                            "print('Callback' in archlab.__all__, archlab.Callback is t.Callback,\n"
                            "      t.check_out_dir is check_out_dir, t.check_out_file is check_out_file)")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "True", "True", "True"]
