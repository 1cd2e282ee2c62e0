"""Which head weights a run uses: a user file, the built-in model's calibrated file, the authors' 7B vector,
or uniform weights (with a note that calibrated ones score better)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hawk_cli.io.weights import (
    QWEN2_5_VL_7B_SHAPE,
    HeadWeights,
    load_head_weights,
    published_qwen2_5_vl_7b,
    validate_for_model,
)

BUILTIN_WEIGHTS_FILE = "head_importance.safetensors"


def model_shape(config: Any) -> dict:
    text = config.get_text_config()
    return {
        "model_type": config.model_type,
        "num_heads": int(text.num_attention_heads),
        "hidden_size": int(text.hidden_size),
        "num_layers": int(text.num_hidden_layers),
    }


def resolve_head_weights(
    config: Any, path: str | None, model_dir: str | None, is_builtin: bool, layer: int = 0, num_heads: int | None = None
) -> tuple[HeadWeights, list[str]]:
    """(weights, notices for stderr). Validation happens here, before any tensor work. `num_heads`: the scoring
    layer's query heads when they differ from the config's attention heads (a hybrid model's linear layers)."""
    shape = model_shape(config)
    if num_heads is not None:
        shape["num_heads"] = int(num_heads)
    notices: list[str] = []
    if path:
        weights = load_head_weights(path)
    elif layer != 0:  # the shipped and published vectors are layer-0 importances
        weights = HeadWeights(values=torch.full((shape["num_heads"],), 1.0 / shape["num_heads"]), source="uniform")
        notices.append(
            f"no head weights for layer {layer}: using uniform weights; "
            f"weights calibrated on this model for layer {layer} score better (docs/calibration.md)"
        )
    elif is_builtin and model_dir and (Path(model_dir) / BUILTIN_WEIGHTS_FILE).is_file():
        weights = load_head_weights(Path(model_dir) / BUILTIN_WEIGHTS_FILE)
        weights.source = "builtin"
    elif shape == QWEN2_5_VL_7B_SHAPE:
        weights = published_qwen2_5_vl_7b()
    else:
        weights = HeadWeights(values=torch.full((shape["num_heads"],), 1.0 / shape["num_heads"]), source="uniform")
        notices.append(
            "no head weights for this model: using uniform weights; weights calibrated on it score better "
            "(docs/calibration.md)"
        )
    validate_for_model(weights, shape["model_type"], shape["num_heads"], layer)
    return weights, notices
