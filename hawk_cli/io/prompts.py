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


def build_inputs(tokenizer, image_processor, requests: list[Request]) -> ModelInputs:
    """Tokenise and preprocess `requests` into one left-padded batch."""
    if not requests:
        raise InputError("no requests to run", "Give at least one image and a question")
    merge = int(image_processor.merge_size) ** 2
    texts, all_images, image_grids = [], [], []
    all_videos, video_grids, seconds_per_grid = [], [], []
    for request in requests:
        text = tokenizer.apply_chat_template(_messages(request), add_generation_prompt=True, tokenize=False)
        if request.images:
            processed = image_processor(images=[im.convert("RGB") for im in request.images], return_tensors="pt")
            all_images.append(processed["pixel_values"])
            for grid in processed["image_grid_thw"]:
                image_grids.append(grid)
                text = text.replace(IMAGE_PAD, "\0" * (int(grid.prod()) // merge), 1)
        if request.video:
            video = build_video(image_processor, request.video, request.fps)
            all_videos.append(video.pixel_values_videos)
            video_grids.append(video.video_grid_thw)
            seconds_per_grid.append(video.second_per_grid_t)
            text = text.replace(VIDEO_PAD, "\1" * (int(video.video_grid_thw.prod()) // merge), 1)
        texts.append(text.replace("\0", IMAGE_PAD).replace("\1", VIDEO_PAD))
    encoded = tokenizer(texts, padding=True, return_tensors="pt", padding_side="left")
    input_ids = encoded["input_ids"]
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    video_id = tokenizer.convert_tokens_to_ids(VIDEO_PAD)
    mm_types = (input_ids == image_id).long() + 2 * (input_ids == video_id).long()
    return ModelInputs(
        input_ids=input_ids,
        attention_mask=encoded["attention_mask"],
        mm_token_type_ids=mm_types,
        pixel_values=torch.cat(all_images) if all_images else None,
        image_grid_thw=torch.stack(image_grids) if image_grids else None,
        pixel_values_videos=torch.cat(all_videos) if all_videos else None,
        video_grid_thw=torch.stack(video_grids) if video_grids else None,
        second_per_grid_ts=torch.tensor(seconds_per_grid, dtype=torch.float32) if video_grids else None,
    )
