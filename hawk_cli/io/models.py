"""Load a checkpoint (hub id or local folder, or the built-in model) the standard way, with clear failures."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hawk_cli.errors import ModelError, ResourceError, UsageError
from hawk_cli.io.hub import resolve_hub_id
from hawk_cli.io.placement import (
    check_fits,
    first_device,
    input_device,
    is_dispatched,
    model_devices,
    read_device_map,
    require_accelerate,
)

BUILTIN_NAMES = ("builtin",)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ATTENTION_BACKENDS = ("sdpa", "eager", "flash_attention_2")


@dataclass
class LoadedModel:
    """A model with its tokenizer and image processor. Device, dtype and attention default to the model's own, so a
    library caller can wrap a model it loaded itself: `LoadedModel(model, tokenizer, image_processor)`."""

    model: torch.nn.Module
    tokenizer: Any  # a transformers tokenizer (read as untyped)
    image_processor: Any
    name: str = "model"  # as the user gave it ("builtin", a hub id, a folder)
    path: str = ""  # where it was loaded from ("" when unknown: no files beside the weights are read)
    device: torch.device | None = None  # where inputs go: the input embedding's device
    dtype: torch.dtype | None = None
    attn: str | None = None
    is_builtin: bool = False
    # Every device the weights live on (input side first); more than one when spread by a device map.
    devices: tuple[torch.device, ...] = ()
    device_map: dict | None = None  # the module -> device map accelerate dispatched, when one was used

    def __post_init__(self) -> None:
        parameter = next(self.model.parameters(), None)
        # a model object the caller spread with a device map: inputs go to its embedding's device
        dispatched = is_dispatched(self.model)
        if self.device is None and dispatched:
            self.device = input_device(self.model)
        if self.device is None:
            self.device = parameter.device if parameter is not None else torch.device("cpu")
        if self.dtype is None:
            self.dtype = parameter.dtype if parameter is not None else torch.float32
        if self.attn is None:
            self.attn = str(getattr(self.model.config, "_attn_implementation", None) or "sdpa")
        if not self.devices:
            self.devices = model_devices(self.model) if dispatched else (torch.device(self.device),)
        if self.device_map is None and dispatched:
            self.device_map = dict(getattr(self.model, "hf_device_map", None) or {}) or None

    @property
    def spread(self) -> bool:
        """Whether the model spans several devices."""
        return len(self.devices) > 1


def builtin_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "builtin"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ResourceError(
                f"{name} was asked for but no CUDA GPU is available", "Use {device=}cpu (or auto)", setting="device"
            )
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise UsageError(f"unknown device '{name}'", "Use auto, cpu or cuda")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """auto: bfloat16 on CUDA, float32 on CPU (CPU bf16 is slow and changes greedy output)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise UsageError(f"unknown dtype '{name}'", f"Use auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def _locate(spec: str) -> tuple[str, bool]:
    """(path or hub id, is_builtin). A spec that looks like a path must exist."""
    if spec in BUILTIN_NAMES:
        folder = builtin_dir()
        if not (folder / "model.safetensors").is_file():
            raise ModelError(
                "the built-in model is not installed with this copy of hawk",
                "Reinstall hawk-vlm, or pass {model} with a Qwen2-VL / Qwen2.5-VL / Qwen3-VL / Qwen3.5 checkpoint",
            )
        return str(folder), True
    if spec.lower().startswith(("http://", "https://", "hf://")):
        repo = "/".join(spec.split("://", 1)[1].split("/")[1:3]) if "huggingface.co" in spec else ""
        raise ModelError(
            f"model '{spec}' is a URL", f"Pass the hub id ({{model=}}{repo or 'ORG/NAME'}) or a local folder"
        )
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelError(
                f"'{spec}' is not a model folder (no config.json)",
                "Pass a folder saved with save_pretrained, or a hub id",
            )
        return str(path), False
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise ModelError(f"model path '{spec}' does not exist", "Check the path, or use {model=}builtin")
    return spec, False


def read_model_type(location: str) -> str:
    from transformers import AutoConfig

    try:
        return str(AutoConfig.from_pretrained(location).model_type)
    except (OSError, ValueError, json.JSONDecodeError, KeyError) as error:
        raise ModelError(
            f"cannot load model '{location}': {str(error).splitlines()[0][:200]}",
            "Pass a local checkpoint folder (no hub downloads happen offline)",
        ) from None


def pil_image_processor(location: str, model_type: str):
    """The checkpoint's image processor through transformers' auto class, PIL backend."""
    from transformers.models.auto.image_processing_auto import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(location, backend="pil")


def load_model(
    spec: str | None,
    supported: set[str],
    device: str = "auto",
    dtype: str = "auto",
    attn: str = "sdpa",
    image_processor_loader: Callable[[str, str], object] = pil_image_processor,
    device_map: str | None = None,
) -> LoadedModel:
    """`image_processor_loader(location, model_type)`: the family's own loader (its adapter knows which
    processor class a checkpoint of its type uses when the settings do not name one). `device_map`: "auto",
    "balanced" or a JSON file: the model is spread by transformers / accelerate (their own placement and hooks)
    instead of moved to `device`."""
    if attn not in ATTENTION_BACKENDS:
        raise UsageError(f"unknown attention backend '{attn}'", f"Use one of: {', '.join(ATTENTION_BACKENDS)}")
    name = spec or "builtin"
    location, is_builtin = _locate(name)
    placement = None
    if device_map is not None:
        require_accelerate()
        placement = read_device_map(device_map)
        torch_device = first_device(placement)
    else:
        torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    # A hub id: fail at once offline unless cached; a cached one then loads from its local snapshot folder.
    location = resolve_hub_id(location) if location == name and not Path(location).exists() else location
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    model_type = read_model_type(location)
    if model_type not in supported:
        raise ModelError(f"model type '{model_type}' is not supported", f"Supported: {', '.join(sorted(supported))}")
    try:
        # use_kernels=False: transformers 5.25 swaps in hub kernels on CUDA by default, which needs a download.
        placed = {} if placement is None else {"device_map": placement}
        model = AutoModelForImageTextToText.from_pretrained(
            location, dtype=torch_dtype, attn_implementation=attn, use_kernels=False, **placed
        )
        tokenizer = AutoTokenizer.from_pretrained(location, padding_side="left")
        # PIL backend everywhere: torchvision's pixels differ slightly and would change top-k choices.
        image_processor = image_processor_loader(location, model_type)
    except ImportError as error:
        raise ModelError(
            f"cannot load '{name}' with attention '{attn}': {str(error).splitlines()[0][:200]}",
            "Use {attn=}sdpa, or install the missing package",
        ) from None
    except (OSError, ValueError) as error:
        raise ModelError(
            f"cannot load model '{name}': {str(error).splitlines()[0][:200]}",
            "Check that the folder holds a complete checkpoint (config, weights, tokenizer)",
        ) from None
    if placement is None:
        model = model.to(torch_device).eval()
        return LoadedModel(
            model=model,
            tokenizer=tokenizer,
            image_processor=image_processor,
            name=name,
            path=location,
            device=torch_device,
            dtype=torch_dtype,
            attn=attn,
            is_builtin=is_builtin,
        )
    check_fits(dict(getattr(model, "hf_device_map", None) or {}))
    model = model.eval()
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        image_processor=image_processor,
        name=name,
        path=location,
        device=input_device(model),
        dtype=torch_dtype,
        attn=attn,
        is_builtin=is_builtin,
        devices=model_devices(model),
        device_map=dict(getattr(model, "hf_device_map", None) or {}) or None,
    )
