"""Qwen3.5's prompts: Qwen2-VL's for images; videos marked with text timestamps, one vision span per frame group.

The stock `Qwen3VLProcessor` (which Qwen3.5 uses) replaces a video's `<|vision_start|><|video_pad|><|vision_end|>`
with, for every temporal patch (`temporal_patch_size` frames), `<{t:.1f} seconds>` followed by its own
`<|vision_start|>` + one `<|video_pad|>` per merged patch + `<|vision_end|>`, where t is the mean time of the
group's first and last frame (the last frame repeated to fill a group). `get_rope_index` then splits
`video_grid_thw` into one grid per frame group. Pixels are Qwen2-VL's video layout (the same patch order), built
from the image processor as for Qwen2.5-VL, so no torchvision is needed.
"""

from __future__ import annotations

from dataclasses import replace

from hawk_cli.adapters.qwen2_vl.prompts import VIDEO_PAD, EncodedRequest, ModelInputs, QwenPrompts
from hawk_cli.io.requests import Request

VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"


def frame_group_times(frames: int, fps: float, group: int) -> list[float]:
    """Seconds of each temporal patch: the mean time of its first and last frame, in the stock processor's
    arithmetic (the printed `{t:.1f}` must round the same way)."""
    seconds = [index / fps for index in list(range(frames)) + [frames - 1] * (-frames % group)]
    return [(seconds[start] + seconds[start + group - 1]) / 2 for start in range(0, len(seconds), group)]


def timestamped_video(text: str, times: list[float]) -> str:
    """The chat text with its one video placeholder written out as timestamped frame groups."""
    wrapped = VISION_START + VIDEO_PAD + VISION_END
    spans = "".join(f"<{seconds:.1f} seconds>{wrapped}" for seconds in times)
    return text.replace(wrapped, VIDEO_PAD).replace(VIDEO_PAD, spans, 1)


class Qwen35Prompts(QwenPrompts):
    """Input building for Qwen3.5 (and its MoE): Qwen2-VL's, except the video's text layout."""

    def encode(self, request: Request, defer_pixels: bool = False) -> EncodedRequest:
        encoded = super().encode(request, defer_pixels=defer_pixels)
        if not request.video:
            return encoded
        groups = int(encoded.video_grid_thw[0, 0])
        per_group = encoded.placeholder_tokens[-1] // groups
        times = frame_group_times(len(request.video), request.fps, int(self.image_processor.temporal_patch_size))
        return replace(
            encoded,
            text=timestamped_video(encoded.text, times),
            placeholder_tokens=encoded.placeholder_tokens[:-1] + (per_group,) * groups,
        )

    def collate(self, requests: list[Request], encoded: list[EncodedRequest | None] | None = None) -> ModelInputs:
        encoded = [
            done or self.encode(request)
            for request, done in zip(requests, encoded or [None] * len(requests), strict=True)
        ]
        return super().collate(requests, encoded)
