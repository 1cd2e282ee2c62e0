"""Build the model inputs of a batch of (images, question) requests without the stock processor.

Why not `AutoProcessor`: the stock Qwen-VL processor needs torchvision's video processor, which does not
import beside the CPU torch wheel. The recipe here is the processor's own: chat template, PIL image
processor, each `<|image_pad|>` expanded to its merged patch count, left padding, `mm_token_type_ids`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from hawk_cli.adapters.qwen2_vl.pixels import PixelRecipe
from hawk_cli.adapters.qwen2_vl.video import build_video
from hawk_cli.errors import InputError
from hawk_cli.io.requests import Request

IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"


@dataclass
class ModelInputs:
    """Tensors for one left-padded batch, in the stock processor's layout.

    `pending_pixels`: uint8 images whose patches are computed on the device by `to()` (see io/pixels.py);
    `pixel_values` is None until then. `host`: CPU copies of the index tensors, kept by `to()`, so index
    bookkeeping (rotary ids, window plans, row grids) runs without a device round trip per image.
    """

    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L] 1 = real token
    mm_token_type_ids: torch.Tensor  # [B, L] 0 text, 1 image, 2 video
    pixel_values: torch.Tensor | None = None  # [sum patches, C*T*P*P]
    image_grid_thw: torch.Tensor | None = None  # [n_images, 3]
    pixel_values_videos: torch.Tensor | None = None
    video_grid_thw: torch.Tensor | None = None
    second_per_grid_ts: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)
    pending_pixels: PendingPixels | None = None
    host: HostCopy | None = None

    INDEX_FIELDS = (
        "input_ids",
        "attention_mask",
        "mm_token_type_ids",
        "image_grid_thw",
        "video_grid_thw",
        "second_per_grid_ts",
    )

    def _index_tensors(self) -> tuple:
        return tuple(getattr(self, name) for name in self.INDEX_FIELDS)

    def to(self, device: torch.device | str) -> ModelInputs:
        # Asynchronous only from the host (pageable memory is staged before the call returns); a copy back to
        # the host must complete before its tensor is read.
        moved = {
            k: (v.to(device, non_blocking=v.device.type == "cpu") if isinstance(v, torch.Tensor) else v)
            for k, v in vars(self).items()
            if k not in ("pending_pixels", "host")
        }
        if self.pending_pixels is not None:
            moved["pixel_values"] = self.pending_pixels.patches(device)
        result = ModelInputs(**moved)
        result.host = HostCopy(self.on_host(), result._index_tensors())
        return result

    def on_host(self) -> ModelInputs:
        """The index tensors on the CPU (pixels left out): these inputs themselves when they live there, else
        the copy `to()` kept, if it still mirrors these very tensors (a `replace` of one of them drops it)."""
        if self.input_ids.device.type == "cpu":
            return self
        if self.host is not None and all(
            a is b for a, b in zip(self.host.mirrors, self._index_tensors(), strict=False)
        ):
            return self.host.inputs
        return ModelInputs(
            **{n: None if getattr(self, n) is None else getattr(self, n).cpu() for n in self.INDEX_FIELDS}
        )

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass(frozen=True)
class HostCopy:
    """CPU copies of a device batch's index tensors, and the device tensors they mirror."""

    inputs: ModelInputs
    mirrors: tuple


@dataclass(frozen=True)
class PendingPixels:
    """Resized uint8 images of a batch, in prompt order, and the recipe that turns them into patches."""

    images: tuple[torch.Tensor, ...]
    recipe: PixelRecipe

    def patches(self, device: torch.device | str) -> torch.Tensor:
        return self.recipe.patches(list(self.images), device)


def _messages(request: Request) -> list[dict]:
    if request.messages is not None:
        return [dict(message) for message in request.messages]
    visual = [{"type": "image"} for _ in request.images] + ([{"type": "video"}] if request.video else [])
    text = [{"type": "text", "text": request.question}]
    return [{"role": "user", "content": text + visual if request.question_first else visual + text}]


def chat_text(tokenizer, request: Request) -> str:
    """The request through the tokenizer's chat template: one placeholder per image and per video; ready for the
    answer, or (a chat ending with an assistant turn) continuing that turn."""
    messages = _messages(request)
    continued = messages[-1].get("role") == "assistant"
    return tokenizer.apply_chat_template(
        messages, add_generation_prompt=not continued, continue_final_message=continued, tokenize=False
    )


@dataclass(frozen=True)
class EncodedRequest:
    """One request's chat text (one placeholder per image / video) with each placeholder's token count, and
    its pixels: the per-request half of `build_inputs`, safe to compute in a worker thread (no tokenizer
    call). With `defer_pixels`, images stay resized uint8 (`images_u8`) for the device to finish."""

    text: str
    placeholder_tokens: tuple[int, ...] = ()  # tokens of each image, then of the video, in prompt order
    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None  # [n_images, 3]
    pixel_values_videos: torch.Tensor | None = None
    video_grid_thw: torch.Tensor | None = None  # [1, 3]
    second_per_grid_t: float | None = None
    images_u8: tuple[torch.Tensor, ...] = ()
    recipe: PixelRecipe | None = None


def encode_request(tokenizer, image_processor, request: Request, defer_pixels: bool = False) -> EncodedRequest:
    """`defer_pixels`: leave images as resized uint8 when the processor's steps can run on the device
    (`PixelRecipe`); otherwise, and always for video, the stock processor computes float patches here."""
    merge = int(image_processor.merge_size) ** 2
    text = chat_text(tokenizer, request)
    counts: list[int] = []
    pixels = grids = video = recipe = None
    images_u8: tuple[torch.Tensor, ...] = ()
    if request.images:
        recipe = PixelRecipe.of(image_processor) if defer_pixels else None
        with _processor_limits(request.images, "image"):
            if recipe is not None:
                images_u8 = tuple(recipe.resize(image) for image in request.images)
                grids = torch.tensor([recipe.grid(image) for image in images_u8], dtype=torch.long)
            else:
                processed = image_processor(images=[im.convert("RGB") for im in request.images], return_tensors="pt")
                pixels, grids = processed["pixel_values"], processed["image_grid_thw"]
        counts.extend(int(grid.prod()) // merge for grid in grids)
    if request.video:
        with _processor_limits(request.video[:1], "video frame"):
            video = build_video(image_processor, request.video, request.fps)
        counts.append(int(video.video_grid_thw.prod()) // merge)
    return EncodedRequest(
        text=text,
        placeholder_tokens=tuple(counts),
        pixel_values=pixels,
        image_grid_thw=grids,
        pixel_values_videos=None if video is None else video.pixel_values_videos,
        video_grid_thw=None if video is None else video.video_grid_thw[None],
        second_per_grid_t=None if video is None else video.second_per_grid_t,
        images_u8=images_u8,
        recipe=recipe,
    )


@contextmanager
def _processor_limits(images, what: str):
    """The image processor's own refusals (Qwen's `smart_resize`: an aspect ratio of 200:1 or more) as input
    errors naming the image's size, instead of internal errors."""
    try:
        yield
    except ValueError as error:
        sizes = ", ".join(f"{image.width}x{image.height}" for image in images)
        which = f"the {what}" if len(images) == 1 else f"one of the {what}s"
        raise InputError(
            f"the model's image processor refuses {which} ({sizes}): {error}",
            "Crop or pad it to a less extreme aspect ratio",
        ) from None


def _cat(tensors: list[torch.Tensor]) -> torch.Tensor | None:
    return None if not tensors else tensors[0] if len(tensors) == 1 else torch.cat(tensors)


def _token_ids(tokenizer, rows: list[EncodedRequest]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and mask, each placeholder expanded to its token count in id space.

    Equal to tokenising the text with every placeholder written out (tests/test_prompts.py), which makes the
    tokenizer walk every visual token (several times the cost of the short texts: docs/run-workloads.md#throughput);
    here it is one short text per row and list repeats.
    """
    placeholders = {tokenizer.convert_tokens_to_ids(IMAGE_PAD), tokenizer.convert_tokens_to_ids(VIDEO_PAD)}
    expanded = []
    for ids, row in zip(tokenizer([row.text for row in rows])["input_ids"], rows, strict=True):
        slots = [index for index, token in enumerate(ids) if token in placeholders]
        if len(slots) != len(row.placeholder_tokens):
            raise InputError(
                "a question contains the model's image or video placeholder token",
                f"Remove '{IMAGE_PAD}' / '{VIDEO_PAD}' from the question text",
            )
        counts = dict(zip(slots, row.placeholder_tokens, strict=False))
        out: list[int] = []
        for index, token in enumerate(ids):
            out.extend([token] * counts[index] if index in counts else (token,))
        expanded.append(out)
    length = max(len(ids) for ids in expanded)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (length - len(ids)) + ids for ids in expanded], dtype=torch.long)
    attention_mask = torch.tensor([[0] * (length - len(ids)) + [1] * len(ids) for ids in expanded], dtype=torch.long)
    return input_ids, attention_mask


def build_inputs(
    tokenizer, image_processor, requests: list[Request], encoded: list[EncodedRequest | None] | None = None
) -> ModelInputs:
    """Tokenise and preprocess `requests` into one left-padded batch (`encoded`: rows already encoded)."""
    if not requests:
        raise InputError("no requests to run", "Give at least one image and a question")
    rows = [
        done or encode_request(tokenizer, image_processor, request)
        for request, done in zip(requests, encoded or [None] * len(requests), strict=True)
    ]
    input_ids, attention_mask = _token_ids(tokenizer, rows)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    video_id = tokenizer.convert_tokens_to_ids(VIDEO_PAD)
    mm_types = (input_ids == image_id).long() + 2 * (input_ids == video_id).long()
    videos = [row for row in rows if row.pixel_values_videos is not None]
    deferred = [row for row in rows if row.images_u8]
    pending = None
    if deferred and len(deferred) == sum(row.image_grid_thw is not None for row in rows):
        pending = PendingPixels(tuple(image for row in deferred for image in row.images_u8), deferred[0].recipe)
    pixel_values = (
        None
        if pending is not None
        else _cat(
            [
                row.pixel_values if not row.images_u8 else row.recipe.patches(list(row.images_u8), "cpu")
                for row in rows
                if row.image_grid_thw is not None
            ]
        )
    )
    return ModelInputs(
        input_ids=input_ids,
        attention_mask=attention_mask,
        mm_token_type_ids=mm_types,
        pixel_values=pixel_values,
        image_grid_thw=_cat([row.image_grid_thw for row in rows if row.image_grid_thw is not None]),
        pixel_values_videos=_cat([row.pixel_values_videos for row in videos]),
        video_grid_thw=_cat([row.video_grid_thw for row in videos]),
        # Families that mark time in the text (Qwen3-VL) have no per-video timing.
        second_per_grid_ts=torch.tensor([row.second_per_grid_t for row in videos], dtype=torch.float32)
        if videos and all(row.second_per_grid_t is not None for row in videos)
        else None,
        pending_pixels=pending,
    )


class QwenPrompts:
    """The Qwen-VL families' input building, bound to one tokenizer and image processor: what the engine, tasks
    and serving call (`ModelAdapter.prompts`), so none of them knows the processor's fields."""

    def __init__(self, tokenizer, image_processor) -> None:
        self.tokenizer, self.image_processor = tokenizer, image_processor

    def encode(self, request: Request, defer_pixels: bool = False) -> EncodedRequest:
        """The per-request half (no tokenizer call): safe in worker threads and forked processes."""
        return encode_request(self.tokenizer, self.image_processor, request, defer_pixels=defer_pixels)

    def collate(self, requests: list[Request], encoded: list[EncodedRequest | None] | None = None) -> ModelInputs:
        return build_inputs(self.tokenizer, self.image_processor, requests, encoded)

    def from_features(self, features) -> ModelInputs:
        """The batch a user's own processor made (a `BatchFeature` or dict of the stock processor's fields), in
        hawk's layout: rows re-padded on the left (the processor may pad on the right), the token types derived
        from the placeholder ids, pixels and grids as given."""
        if "input_ids" not in features:
            raise InputError(
                "the processor output has no input_ids",
                "Pass what the model's processor returns for text and images (return_tensors='pt')",
            )
        input_ids = torch.as_tensor(features["input_ids"])
        input_ids = input_ids[None] if input_ids.dim() == 1 else input_ids
        mask = features.get("attention_mask")
        mask = torch.ones_like(input_ids) if mask is None else torch.as_tensor(mask).reshape(input_ids.shape)
        rows = [ids[keep.bool()].tolist() for ids, keep in zip(input_ids, mask, strict=True)]
        length, pad = max(len(row) for row in rows), self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (length - len(row)) + row for row in rows], dtype=torch.long)
        attention_mask = torch.tensor([[0] * (length - len(row)) + [1] * len(row) for row in rows], dtype=torch.long)
        image_id = self.tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        video_id = self.tokenizer.convert_tokens_to_ids(VIDEO_PAD)
        mm_types = ((input_ids == image_id).long() + 2 * (input_ids == video_id).long()) * attention_mask

        def tensor(name: str, dtype=None):
            value = features.get(name)
            return None if value is None else torch.as_tensor(value, dtype=dtype)

        return ModelInputs(
            input_ids=input_ids,
            attention_mask=attention_mask,
            mm_token_type_ids=mm_types,
            pixel_values=tensor("pixel_values"),
            image_grid_thw=tensor("image_grid_thw", torch.long),
            pixel_values_videos=tensor("pixel_values_videos"),
            video_grid_thw=tensor("video_grid_thw", torch.long),
            second_per_grid_ts=tensor("second_per_grid_ts", torch.float32),
        )

    def visual_tokens(self, image) -> int:
        """Visual tokens the processor makes of one image (merged patches)."""
        grid = self.image_processor(images=[image.convert("RGB")], return_tensors="pt")["image_grid_thw"][0]
        return int(grid.prod()) // int(self.image_processor.merge_size) ** 2

    def downscaled(self, image, visual_tokens: int):
        """`image` resized the way a user would (a max_pixels budget) to yield at most `visual_tokens` tokens."""
        import importlib

        from PIL import Image

        smart_resize = importlib.import_module(type(self.image_processor).__module__).smart_resize
        factor = int(self.image_processor.patch_size) * int(self.image_processor.merge_size)
        size = self.image_processor.size
        min_pixels = int(
            (size.get("shortest_edge") if isinstance(size, dict) else getattr(size, "shortest_edge", 0))
            or factor * factor
        )
        height, width = smart_resize(
            image.height, image.width, factor=factor, min_pixels=min_pixels, max_pixels=visual_tokens * factor * factor
        )
        return image.resize((width, height), Image.BICUBIC)

    @staticmethod
    def row_grids(inputs: ModelInputs, requests: list[Request]) -> list[tuple[tuple[int, int, int], ...]]:
        """Split the batch's flat image / video grids back into rows (images in order, then the row's video)."""
        host = inputs.on_host()
        images = iter([] if host.image_grid_thw is None else host.image_grid_thw.tolist())
        videos = iter([] if host.video_grid_thw is None else host.video_grid_thw.tolist())
        return [
            tuple(tuple(next(images)) for _ in request.images) + ((tuple(next(videos)),) if request.video else ())
            for request in requests
        ]
