"""Build the model inputs of a batch of (images, question) requests without the stock processor.

Why not `AutoProcessor`: the stock Qwen-VL processor needs torchvision's video processor, which does not
import beside the CPU torch wheel. The recipe here is the processor's own: chat template, PIL image
processor, each `<|image_pad|>` expanded to its merged patch count, left padding, `mm_token_type_ids`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from PIL import Image

from hawk_cli.errors import InputError
from hawk_cli.io.video import DEFAULT_FPS, build_video

IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"


@dataclass(frozen=True)
class Request:
    """One prompt: images shown before the question (or after, with `question_first`), and video frames.

    `video` holds the frames of one video (shown after the images), sampled at `fps` frames per second.
    """

    question: str
    images: tuple[Image.Image, ...] = ()
    question_first: bool = False
    video: tuple[Image.Image, ...] = ()
    fps: float = DEFAULT_FPS


@dataclass
class ModelInputs:
    """Tensors for one left-padded batch, in the stock processor's layout."""

    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L] 1 = real token
    mm_token_type_ids: torch.Tensor  # [B, L] 0 text, 1 image, 2 video
    pixel_values: torch.Tensor | None = None  # [sum patches, C*T*P*P]
    image_grid_thw: torch.Tensor | None = None  # [n_images, 3]
    pixel_values_videos: torch.Tensor | None = None
    video_grid_thw: torch.Tensor | None = None
    second_per_grid_ts: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)

    def to(self, device: torch.device | str) -> "ModelInputs":
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(self).items()}
        return ModelInputs(**moved)

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])


def _messages(request: Request) -> list[dict]:
    visual = [{"type": "image"} for _ in request.images] + ([{"type": "video"}] if request.video else [])
    text = [{"type": "text", "text": request.question}]
    return [{"role": "user", "content": text + visual if request.question_first else visual + text}]


@dataclass(frozen=True)
class EncodedRequest:
    """One request's chat text (placeholders expanded) and pixels: the per-request half of `build_inputs`,
    safe to compute in a worker thread (no tokenizer call)."""

    text: str
    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None  # [n_images, 3]
    pixel_values_videos: torch.Tensor | None = None
    video_grid_thw: torch.Tensor | None = None  # [1, 3]
    second_per_grid_t: float | None = None


def encode_request(tokenizer, image_processor, request: Request) -> EncodedRequest:
    merge = int(image_processor.merge_size) ** 2
    text = tokenizer.apply_chat_template(_messages(request), add_generation_prompt=True, tokenize=False)
    pixels = grids = video = None
    if request.images:
        processed = image_processor(images=[im.convert("RGB") for im in request.images], return_tensors="pt")
        pixels, grids = processed["pixel_values"], processed["image_grid_thw"]
        for grid in grids:
            text = text.replace(IMAGE_PAD, "\0" * (int(grid.prod()) // merge), 1)
    if request.video:
        video = build_video(image_processor, request.video, request.fps)
        text = text.replace(VIDEO_PAD, "\1" * (int(video.video_grid_thw.prod()) // merge), 1)
    return EncodedRequest(text=text.replace("\0", IMAGE_PAD).replace("\1", VIDEO_PAD), pixel_values=pixels,
                          image_grid_thw=grids,
                          pixel_values_videos=None if video is None else video.pixel_values_videos,
                          video_grid_thw=None if video is None else video.video_grid_thw[None],
                          second_per_grid_t=None if video is None else video.second_per_grid_t)


def _cat(tensors: list[torch.Tensor]) -> torch.Tensor | None:
    return None if not tensors else tensors[0] if len(tensors) == 1 else torch.cat(tensors)


def build_inputs(tokenizer, image_processor, requests: list[Request],
                 encoded: list[EncodedRequest | None] | None = None) -> ModelInputs:
    """Tokenise and preprocess `requests` into one left-padded batch (`encoded`: rows already encoded)."""
    if not requests:
        raise InputError("no requests to run", "Give at least one image and a question")
    rows = [done or encode_request(tokenizer, image_processor, request)
            for request, done in zip(requests, encoded or [None] * len(requests))]
    tokens = tokenizer([row.text for row in rows], padding=True, return_tensors="pt", padding_side="left")
    input_ids = tokens["input_ids"]
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    video_id = tokenizer.convert_tokens_to_ids(VIDEO_PAD)
    mm_types = (input_ids == image_id).long() + 2 * (input_ids == video_id).long()
    videos = [row for row in rows if row.pixel_values_videos is not None]
    return ModelInputs(
        input_ids=input_ids,
        attention_mask=tokens["attention_mask"],
        mm_token_type_ids=mm_types,
        pixel_values=_cat([row.pixel_values for row in rows if row.pixel_values is not None]),
        image_grid_thw=_cat([row.image_grid_thw for row in rows if row.image_grid_thw is not None]),
        pixel_values_videos=_cat([row.pixel_values_videos for row in videos]),
        video_grid_thw=_cat([row.video_grid_thw for row in videos]),
        second_per_grid_ts=torch.tensor([row.second_per_grid_t for row in videos], dtype=torch.float32)
        if videos else None,
    )
