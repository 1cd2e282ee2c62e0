"""Head-importance files: safetensors with tensor `head_importance` (fp32, one value per query head) + metadata."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hawk_cli.errors import InputError
from hawk_cli.io.atomic import atomic_path

TENSOR_NAME = "head_importance"
FORMAT_VERSION = "1"

# The authors' layer-0 vector for Qwen2.5-VL-7B (peppery77/HAWK, src/hawk/config.py, "legacy" raw values);
# at run time they are rescaled to sum to 1, as the release does. Only top-k order matters.
PUBLISHED_QWEN2_5_VL_7B_RAW = (
    0.0875,
    0.3000,
    0.0480,
    0.0321,
    0.0104,
    0.0102,
    0.0336,
    0.0460,
    0.0540,
    0.0472,
    0.0234,
    0.0537,
    0.0109,
    0.0573,
    0.0276,
    0.0403,
    0.0429,
    0.0352,
    0.0162,
    0.0519,
    0.0553,
    0.0266,
    0.0222,
    0.0480,
    0.0337,
    0.0250,
    0.0000,
    0.0224,
)
QWEN2_5_VL_7B_SHAPE = {"model_type": "qwen2_5_vl", "num_heads": 28, "hidden_size": 3584, "num_layers": 28}


@dataclass
class HeadWeights:
    values: torch.Tensor  # [H] float32
    source: str  # where they came from: a path, "published:qwen2.5-vl-7b", "uniform", "builtin"
    metadata: dict = field(default_factory=dict)
    extra_tensors: dict = field(default_factory=dict)

    @property
    def num_heads(self) -> int:
        return int(self.values.numel())


def published_qwen2_5_vl_7b() -> HeadWeights:
    raw = torch.tensor(PUBLISHED_QWEN2_5_VL_7B_RAW, dtype=torch.float32)
    return HeadWeights(
        values=raw / raw.sum(),
        source="published:qwen2.5-vl-7b",
        metadata={"model_type": "qwen2_5_vl", "num_heads": "28", "layer": "0", "method": "ablation (authors' release)"},
    )


def save_head_weights(path: Path, weights: HeadWeights, overwrite: bool = False) -> None:
    """Write atomically (an existing file only with `overwrite`); metadata values become strings (safetensors
    metadata is str -> str)."""
    from safetensors.torch import save_file

    tensors = {TENSOR_NAME: weights.values.float().contiguous().cpu()}
    tensors.update({k: v.float().contiguous().cpu() for k, v in weights.extra_tensors.items()})
    metadata = {"format_version": FORMAT_VERSION}
    metadata.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in weights.metadata.items()})
    with atomic_path(Path(path), overwrite) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)


def load_head_weights(path: str | Path) -> HeadWeights:
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"weights file '{path}' does not exist", "Check the path, or make one with 'hawk calibrate'")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            names = set(handle.keys())
            if TENSOR_NAME not in names:
                raise InputError(f"'{path}' has no '{TENSOR_NAME}' tensor", "Use a file written by 'hawk calibrate'")
            tensors = {name: handle.get_tensor(name) for name in names}
    except InputError:
        raise
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise InputError(
            f"'{path}' is not a valid safetensors file ({error})", "Re-create it with 'hawk calibrate'"
        ) from error
    values = tensors.pop(TENSOR_NAME).float().flatten()
    if not torch.isfinite(values).all() or (values < 0).any() or values.sum() <= 0:
        raise InputError(
            f"'{path}' holds negative, zero-sum or non-finite head weights", "Re-create it with 'hawk calibrate'"
        )
    return HeadWeights(values=values, source=str(path), metadata=metadata, extra_tensors=tensors)


def validate_for_model(weights: HeadWeights, model_type: str, num_heads: int, layer: int = 0) -> None:
    """Refuse weights made for another family, head count or scoring layer, naming both sides and the fix."""
    if weights.num_heads != num_heads:
        raise InputError(
            f"'{weights.source}' holds {weights.num_heads} head weights but this model's scoring layer "
            f"has {num_heads} query heads",
            "Run 'hawk calibrate' for this model, or omit {weights}",
        )
    made_for = weights.metadata.get("model_type")
    if made_for and made_for != model_type:
        raise InputError(
            f"'{weights.source}' was calibrated for model type '{made_for}', not '{model_type}'",
            "Run 'hawk calibrate' for this model, or omit {weights}",
        )
    made_at = weights.metadata.get("layer")
    if made_at is not None and str(made_at).isdigit() and int(made_at) != layer:
        raise InputError(
            f"'{weights.source}' was calibrated at layer {made_at}, but the scorer reads layer {layer}",
            f"Run 'hawk calibrate --layer {layer}', or score at layer {made_at}",
        )
