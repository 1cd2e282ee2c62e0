"""lmms-eval plugin: `--model hawk` through the `lmms_eval.models` entry point, and the `hawk_synthetic` task.

Installed with `pip install "hawk-vlm[lmms-eval]"`; lmms-eval (0.7+) reads the entry point declared in hawk's
pyproject (`hawk = "hawk_cli.integrations.lmms_eval:manifest"`), so no environment variable and no fork is needed.
The task lives in `TASKS_DIR`, passed to lmms-eval with `--include_path` (docs/harness.md).
Importing this module does not import lmms-eval; `manifest()` does, when lmms-eval asks for it.
"""

from __future__ import annotations

from pathlib import Path

MODEL_ID = "hawk"
MODEL_CLASS_PATH = "hawk_cli.integrations.lmms_eval.model.HawkLmms"
TASKS_DIR: Path = Path(__file__).resolve().parent / "tasks"


def manifest():
    """The payload of hawk's `lmms_eval.models` entry point: a chat-style model named `hawk`."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, chat_class_path=MODEL_CLASS_PATH)
