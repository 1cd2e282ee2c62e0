"""Importing and using hawk's library changes no process-wide state and prints nothing.

Run in a fresh interpreter: first transformers alone loads and samples from the built-in model (the control: what
the libraries hawk builds on do by themselves), then the state is snapshotted, then hawk is imported, loads the
same model and generates greedily and by sampling, and the state is compared. Negative control: a deliberate
change after hawk's calls is reported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hawk_cli.io.models import builtin_dir

pytestmark = pytest.mark.skipif(
    not (builtin_dir() / "model.safetensors").is_file(), reason="the built-in model is not installed in this checkout"
)

ROOT = Path(__file__).resolve().parent.parent
MARK = "=== hawk starts here ==="

SCRIPT = r"""
import json, logging, os, sys, warnings
import torch

def snapshot():
    loggers = {name: logger for name, logger in logging.Logger.manager.loggerDict.items()
               if isinstance(logger, logging.Logger)}
    return {
        "warnings_filters": repr(warnings.filters), "showwarning": repr(warnings.showwarning),
        "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_rng": torch.get_rng_state().tolist(), "grad_enabled": torch.is_grad_enabled(),
        "default_dtype": str(torch.get_default_dtype()), "environment": dict(os.environ),
        "root_handlers": [id(h) for h in logging.root.handlers], "root_level": logging.root.level,
        "logger_handlers": {n: [id(h) for h in l.handlers] for n, l in loggers.items() if l.handlers},
        "logger_levels": {n: [l.level, l.propagate, l.disabled] for n, l in loggers.items()},
    }

from transformers import AutoModelForImageTextToText, AutoTokenizer
from hawk_cli.builtin import BUILTIN_DIR
control = AutoModelForImageTextToText.from_pretrained(BUILTIN_DIR)
control.generate(**AutoTokenizer.from_pretrained(BUILTIN_DIR)(["what color"], return_tensors="pt"),
                 max_new_tokens=2, do_sample=True)
before = snapshot()
sys.stdout.write("MARK\n"); sys.stdout.flush(); sys.stderr.write("MARK\n"); sys.stderr.flush()

from hawk_cli import api
from hawk_cli.synthetic.scenes import heldout_set
scene = heldout_set(1)[0]
model = api.load("builtin", device="cpu")
model.generate(scene.image, scene.question)
model.generate([scene.image, None], [scene.question, "how many ?"], do_sample=True, top_k=5)


def changed(after):
    return sorted(k for k in before if before[k] != after[k]
                  and not (k == "logger_levels" and all(after[k][n] == v for n, v in before[k].items())))

report = {"hawk": changed(snapshot())}
warnings.simplefilter("ignore")  # the negative control: deliberate changes must be reported
torch.set_num_threads(1)
report["spoiled"] = changed(snapshot())
sys.stdout.write(json.dumps(report) + "\n")
""".replace("MARK", MARK)


def test_import_and_generate_change_no_global_state_and_print_nothing():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out_after = done.stdout.split(MARK, 1)[1].strip().splitlines()
    report = json.loads(out_after[-1])
    assert report["hawk"] == []
    assert report["spoiled"] == ["torch_threads", "warnings_filters"]  # the snapshot does see changes
    assert out_after[:-1] == []  # nothing printed on stdout by hawk
    assert done.stderr.split(MARK, 1)[1].strip() == ""  # nor on stderr (no progress bar, no warning)
