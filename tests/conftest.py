"""Test isolation: no network, no hub cache, deterministic CPU float32."""

import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", str(Path(__file__).parent / ".hf-home-unused"))
sys.path.insert(0, str(Path(__file__).parent))

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A tiny random Qwen2.5-VL checkpoint folder (config, weights, tokenizer, image processor), CPU float32.

    Shared read-only by the CLI tests: `--model <folder>` loads it the standard way."""
    from tiny_models import save_tiny_checkpoint

    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-qwen2_5_vl"))


SYNTHETIC_N, SYNTHETIC_BATCH = 24, 8


@pytest.fixture(scope="session")
def synthetic_eval_norm():
    """`hawk eval -n 24 --ratios 0.8 --methods norm --batch-size 8` on the built-in model (its recommended scorer,
    which the harness wrappers use when no scorer is named): the tally holds the answers in question order."""
    from hawk_cli.engine.session import HawkSession
    from hawk_cli.tasks.evaluation import EvalSettings, evaluate

    report = evaluate(
        HawkSession.open("builtin", device="cpu"),
        EvalSettings(ratios=(0.8,), methods=("norm",), n=SYNTHETIC_N, batch_size=SYNTHETIC_BATCH),
    )
    return report.results[0].tally
