"""Qwen3-VL inputs: Qwen2-VL's processor-free builder (images, left padding, `mm_token_type_ids`) with the
family's video layout, one `<|video_pad|>` run per temporal patch behind a text timestamp (video.py)."""

from __future__ import annotations

from dataclasses import replace

from hawk_cli.adapters.qwen2_vl.prompts import EncodedRequest, QwenPrompts, chat_text
from hawk_cli.adapters.qwen2_vl.prompts import encode_request as encode_images
from hawk_cli.adapters.qwen3_vl.video import build_video, with_timestamps
from hawk_cli.io.requests import Request


def encode_request(tokenizer, image_processor, request: Request, defer_pixels: bool = False) -> EncodedRequest:
    """One request's text and pixels; a video contributes one placeholder per temporal patch."""
    encoded = encode_images(tokenizer, image_processor, replace(request, video=()), defer_pixels=defer_pixels)
    if not request.video:
        return encoded
    video = build_video(image_processor, request.video, request.fps)
    patches, height, width = (int(v) for v in video.video_grid_thw)
    per_patch = height * width // int(image_processor.merge_size) ** 2
    return replace(
        encoded,
        text=with_timestamps(chat_text(tokenizer, request), video.timestamps),
        placeholder_tokens=encoded.placeholder_tokens + (per_patch,) * patches,
        pixel_values_videos=video.pixel_values_videos,
        video_grid_thw=video.video_grid_thw[None],
        second_per_grid_t=None,
    )


class Qwen3Prompts(QwenPrompts):
    """The Qwen-VL input builder with Qwen3-VL's video layout."""

    def encode(self, request: Request, defer_pixels: bool = False) -> EncodedRequest:
        return encode_request(self.tokenizer, self.image_processor, request, defer_pixels=defer_pixels)

    def collate(self, requests: list[Request], encoded: list[EncodedRequest | None] | None = None):
        encoded = [
            done or self.encode(request)
            for request, done in zip(requests, encoded or [None] * len(requests), strict=True)
        ]
        return super().collate(requests, encoded)
