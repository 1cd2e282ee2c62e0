"""hawk's built-in default model: a tiny stock Qwen2.5-VL trained on the synthetic scenes (see MODEL_CARD.md).

`BUILTIN_DIR` is a plain Hugging Face model folder: `Qwen2_5_VLForConditionalGeneration.from_pretrained(BUILTIN_DIR)`,
`AutoTokenizer.from_pretrained(BUILTIN_DIR)` and `AutoImageProcessor.from_pretrained(BUILTIN_DIR, backend="pil")`
load it offline.
"""

from __future__ import annotations

from pathlib import Path

BUILTIN_DIR: Path = Path(__file__).resolve().parent
BUILTIN_NAME = "builtin"

__all__ = ["BUILTIN_DIR", "BUILTIN_NAME"]
