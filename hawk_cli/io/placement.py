"""Where a model's parts live when it is spread over devices by accelerate's `device_map`.

hawk places nothing itself: transformers (`from_pretrained(device_map=...)`) or accelerate (`dispatch_model`)
put each module on its device and attach hooks that move a hooked module's inputs to it. This module reads and
checks the user's map (a name accelerate knows, or a JSON file), and answers the questions the engine asks of a
dispatched model: where inputs go (the input embedding's device), which devices it uses, and where a module that
hawk calls directly (without its block's hook) runs.

Offloading (a map naming "disk", or "cpu" beside GPUs) is refused: offloaded weights sit on the meta device until
a block's hook loads them, and hawk calls some submodules (layer 0's q/k projections, the vision tower's blocks)
directly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from hawk_cli.errors import InputError, ModelError, ResourceError

DEVICE_MAP_NAMES = ("auto", "balanced")
DeviceMap = str | dict[str, str | int]


def require_accelerate() -> None:
    try:
        import accelerate  # noqa: F401
    except ImportError:
        raise ModelError(
            "spreading a model over devices needs the 'accelerate' package",
            "Install it: pip install 'hawk-vlm[multi-gpu]'",
        ) from None


def read_device_map(spec: str) -> DeviceMap:
    """ "auto", "balanced", or the contents of a JSON file mapping module names to devices (checked)."""
    if spec in DEVICE_MAP_NAMES:
        return spec
    path = Path(spec).expanduser()
    if not path.is_file():
        raise InputError(
            f"device map '{spec}' is neither {' nor '.join(DEVICE_MAP_NAMES)} nor an existing file",
            'Give auto, balanced, or a JSON file such as {"model.visual": 0, "lm_head": 1}',
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(
            f"device map file '{path}' is not valid JSON ({str(error).splitlines()[0][:120]})",
            "Write one JSON object mapping module names to devices",
        ) from None
    if not isinstance(data, dict) or not data:
        raise InputError(
            f"device map file '{path}' is not a JSON object of module names to devices",
            'Write e.g. {"model.visual": 0, "model.language_model": 1, "lm_head": 1}',
        )
    for name, device in data.items():
        if not isinstance(device, (str, int)) or isinstance(device, bool):
            raise InputError(
                f"device map file '{path}' gives module '{name}' the device {device!r}",
                'Use a GPU index (0), "cuda:0" or "cpu"',
            )
    check_devices(data, str(path))
    return data


def check_devices(device_map: dict[str, str | int], source: str = "the device map") -> None:
    """Every device named exists, and none is an offload target (see the module docstring)."""
    devices = set()
    for name, value in device_map.items():
        device = as_device(value, name, source)
        devices.add(device.type)
        if device.type == "cuda":
            available = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if device.index is not None and device.index >= available:
                raise ResourceError(
                    f"{source} puts '{name}' on {device}, but this machine has "
                    f"{available} visible GPU{'' if available == 1 else 's'}",
                    "Name only GPUs that exist (see nvidia-smi / CUDA_VISIBLE_DEVICES)",
                )
    if "cuda" in devices and "cpu" in devices:
        raise ResourceError(
            f"{source} mixes the CPU with GPUs (weights offloaded to the CPU)",
            "Put every module on a GPU, or every module on the CPU",
        )


def check_fits(device_map: dict[str, str | int]) -> None:
    """A map accelerate computed ("auto", "balanced") offloads what does not fit on the GPUs to the CPU or disk
    (and, on a machine without GPUs, what does not fit in memory to disk); hawk refuses that placement (see the
    module docstring) with what to do instead."""
    values = {str(value) for value in device_map.values()}
    on_gpus = bool(values - {"cpu", "disk"})
    offloaded = [name for name, value in device_map.items() if str(value) == "disk" or (on_gpus and value == "cpu")]
    if offloaded:
        where = "the visible GPUs" if on_gpus else "memory"
        raise ResourceError(
            f"the model does not fit in {where}: accelerate's placement offloads "
            f"{len(offloaded)} module{'' if len(offloaded) == 1 else 's'} (e.g. '{offloaded[0]}') "
            "to the CPU or disk",
            "Make more GPUs visible, or use a smaller model or dtype",
        )


def as_device(value: str | int, name: str = "", source: str = "the device map") -> torch.device:
    if isinstance(value, int):
        return torch.device("cuda", value)
    if value in ("disk", "meta"):
        raise ResourceError(
            f"{source} puts '{name}' on '{value}' (offloading), which hawk does not support",
            "Put every module on a GPU or on the CPU",
        )
    try:
        device = torch.device(value)
    except RuntimeError:
        raise InputError(
            f"{source} names an unknown device '{value}' for '{name}'", 'Use a GPU index (0), "cuda:0" or "cpu"'
        ) from None
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"{source} names the device '{value}' for '{name}'", "Use a GPU index, cuda:N or cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", 0)
    return device


def first_device(device_map: DeviceMap) -> torch.device:
    """The device a map's first module goes to: what picks the default dtype (bf16 on a GPU)."""
    if isinstance(device_map, dict):
        return as_device(next(iter(device_map.values())))
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def module_device(module: torch.nn.Module) -> torch.device:
    """Where `module` computes: the execution device of accelerate's hook on it or on its block, else the device
    of its first parameter or buffer (CPU for a module without tensors)."""
    hook = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is not None:
        return as_device(device) if not isinstance(device, torch.device) else device
    for parameter in module.parameters():
        return parameter.device
    for buffer in module.buffers():
        return buffer.device
    return torch.device("cpu")


def model_devices(model: torch.nn.Module) -> tuple[torch.device, ...]:
    """The devices a model's weights live on, in the order of its modules (the input side first)."""
    mapped = getattr(model, "hf_device_map", None)
    values = list(mapped.values()) if isinstance(mapped, dict) and mapped else None
    seen: list[torch.device] = []
    for device in [as_device(v) for v in values] if values is not None else [p.device for p in model.parameters()]:
        if device not in seen:
            seen.append(device)
    return tuple(seen) or (torch.device("cpu"),)


def input_device(model: torch.nn.Module) -> torch.device:
    """Where a dispatched model takes its inputs: its input embedding's device."""
    embeddings = model.get_input_embeddings()  # type: ignore[operator]
    return module_device(embeddings)


def is_dispatched(model: torch.nn.Module) -> bool:
    """Whether accelerate's hooks move activations between this model's modules."""
    return any(hasattr(module, "_hf_hook") for module in model.modules())


def dispatch(model: torch.nn.Module, device_map: dict[str, str | int], force_hooks: bool = False) -> torch.nn.Module:
    """Spread a model whose weights are materialised by accelerate's `dispatch_model` (its placement and hooks).
    `force_hooks`: attach the hooks even when the map names one device (tests spread a model over CPU blocks)."""
    require_accelerate()
    from accelerate import dispatch_model

    check_devices(device_map)
    dispatch_model(model, device_map=device_map, force_hooks=force_hooks)
    setattr(model, "hf_device_map", dict(device_map))  # noqa: B010 - an attribute Module's type does not declare
    return model


def infer_device_map(
    model: torch.nn.Module, spec: str, dtype: torch.dtype, max_memory: dict | None = None
) -> dict[str, str | int]:
    """accelerate's own map for "auto" / "balanced" (both balance the blocks over the visible GPUs, as
    transformers does for these names), never splitting a decoder layer or a vision block. `max_memory`:
    accelerate's per-device budget (default: what the visible devices have)."""
    require_accelerate()
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    no_split = list(getattr(model, "_no_split_modules", None) or [])
    memory = get_balanced_memory(model, max_memory=max_memory, dtype=dtype, no_split_module_classes=no_split)
    return dict(infer_auto_device_map(model, max_memory=memory, no_split_module_classes=no_split, dtype=dtype))


def random_spread_model(config: Any, dtype: torch.dtype, attn: str, spec: DeviceMap, seed: int = 0) -> torch.nn.Module:
    """A model of `config` with random weights created directly on the devices of a map (a 72B model fits on no
    single device, nor in host memory): built without weights, placed by accelerate, initialised in place by
    the model's own initialisation, dispatched."""
    require_accelerate()
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device
    from transformers import AutoModelForImageTextToText

    with init_empty_weights(include_buffers=False):  # buffers (rotary tables) stay real, on the host
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype, attn_implementation=attn)
    device_map = infer_device_map(model, spec, dtype) if isinstance(spec, str) else dict(spec)
    check_fits(device_map)
    check_devices(device_map)
    for name, parameter in list(model.named_parameters()):
        target = _mapped_device(device_map, name)
        set_module_tensor_to_device(
            model, name, target, value=torch.empty(parameter.shape, dtype=parameter.dtype, device=target)
        )
    for module in model.modules():  # built empty: the flags of the meta-device initialisation are stale
        module.__dict__.pop("_is_hf_initialized", None)
        for tensor in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            tensor.__dict__.pop("_is_hf_initialized", None)
    torch.manual_seed(seed)
    model.initialize_weights()
    model.tie_weights()
    return dispatch(model.eval(), device_map, force_hooks=False)


def _mapped_device(device_map: dict[str, str | int], name: str) -> torch.device:
    """The device of the longest map entry that is `name` or one of its parents ("" is the whole model)."""
    best, device = -1, None
    for prefix, value in device_map.items():
        if (prefix == "" or name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
            best, device = len(prefix), value
    if device is None:
        raise InputError(
            f"the device map places no module containing '{name}'", "Map every module (or its parent) to a device"
        )
    return as_device(device)
