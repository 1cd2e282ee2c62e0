"""JSONL requests for `hawk run --input FILE` / `hawk run -`: one JSON object per line, checked line by line.

A line: `{"id": ..., "images": [paths] | "image": path | "video": path or [frame paths], "question": "...",
"ratio": 0.8, "max_new_tokens": 16, "fps": 2}`. Unknown keys (a reference answer, say) are ignored. A bad line
becomes a `BadLine` carrying its line number and id, and parsing goes on with the next line.
Relative paths resolve against `base` (the input file's folder, or the current folder for stdin).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from typing import Iterable, Iterator

from hawk_cli.errors import HawkError, InputError
from hawk_cli.io.images import load_image
from hawk_cli.io.frames import DEFAULT_FPS, read_frames, validate_fps

@dataclass(frozen=True)
class Request:
    """One prompt: images shown before the question (or after, with `question_first`), and video frames.

    `video` holds the frames of one video (shown after the images), sampled at `fps` frames per second.
    `messages`, when given, is the whole chat instead (system prompt, several turns; transformers' format, each
    image or video entry a placeholder `{"type": "image"}` / `{"type": "video"}` standing for `images` in order,
    then `video`); a chat ending with an assistant turn is continued rather than answered.
    """

    question: str
    images: tuple[Image.Image, ...] = ()
    question_first: bool = False
    video: tuple[Image.Image, ...] = ()
    fps: float = DEFAULT_FPS
    messages: tuple[dict, ...] | None = None



FIELDS = ("id", "images", "image", "video", "question", "ratio", "max_new_tokens", "fps")


@dataclass(frozen=True)
class RequestSpec:
    """One well-formed line; files are not opened yet."""

    line: int
    id: object
    question: str
    images: tuple[Path, ...] = ()
    video: tuple[Path, ...] = ()  # one folder / multi-frame file, or several frame files
    fps: float | None = None
    ratio: float | None = None
    max_new_tokens: int | None = None


@dataclass(frozen=True)
class BadLine:
    line: int
    id: object
    error: HawkError


def _paths(value, key: str, base: Path) -> tuple[Path, ...]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
        raise InputError(f"'{key}' must be a path or a list of paths", f'Write e.g. "{key}": ["a.png"]')
    return tuple(p if p.is_absolute() else base / p for p in (Path(v).expanduser() for v in values))


def _number(data: dict, key: str, kind: type):
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        raise InputError(f"'{key}' must be {'an integer' if kind is int else 'a number'}, got {value!r}",
                         f"Fix '{key}' or leave it out")
    return kind(value)


def parse_request(data: object, line: int, base: Path) -> RequestSpec:
    """Check one decoded line; raises InputError naming the field."""
    if not isinstance(data, dict):
        raise InputError(f"a request must be a JSON object, got {type(data).__name__}",
                         'Write one object per line, e.g. {"id": 1, "images": ["a.png"], "question": "..."}')
    request_id = data.get("id", line)
    question = data.get("question")
    if not isinstance(question, str) or not question.strip():
        raise InputError("'question' is missing or empty", 'Add "question": "..."')
    if "images" in data and "image" in data:
        raise InputError("both 'images' and 'image' are given", "Use one of them")
    images = _paths(data["images"] if "images" in data else data["image"], "images", base) \
        if ("images" in data or "image" in data) else ()
    video = _paths(data["video"], "video", base) if "video" in data else ()
    if not images and not video:
        raise InputError("the request has no 'images' and no 'video'", 'Add "images": ["a.png"] or "video": "clip.gif"')
    ratio = _number(data, "ratio", float)
    if ratio is not None and not 0 <= ratio < 1:
        raise InputError(f"'ratio' must be in [0, 1), got {ratio}", "0.8 removes 80% of the visual tokens")
    max_new_tokens = _number(data, "max_new_tokens", int)
    if max_new_tokens is not None and max_new_tokens < 1:
        raise InputError(f"'max_new_tokens' must be at least 1, got {max_new_tokens}", "Use e.g. 16")
    fps = _number(data, "fps", float)
    if fps is not None:
        if "video" not in data:
            raise InputError("'fps' is given without a 'video'", "Leave 'fps' out, or add the video")
        validate_fps(fps)
    return RequestSpec(line=line, id=request_id, question=question.strip(), images=images, video=video, fps=fps,
                       ratio=ratio, max_new_tokens=max_new_tokens)


def read_requests(lines: Iterable[str], base: Path) -> Iterator[RequestSpec | BadLine]:
    """Lazily parse JSONL lines (1-based numbers; blank lines skipped), so a pipe is read as it arrives."""
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            yield BadLine(line=number, id=None, error=InputError(f"line {number} is not valid JSON ({error.msg})",
                                                                 "Write one JSON object per line"))
            continue
        try:
            yield parse_request(data, number, base)
        except HawkError as error:
            request_id = data.get("id", number) if isinstance(data, dict) else None
            yield BadLine(line=number, id=request_id, error=error)


def load_request(spec: RequestSpec, default_fps: float) -> Request:
    """Open the request's images and frames (InputError on a missing or unreadable file)."""
    images = tuple(load_image(path) for path in spec.images)
    frames = tuple(read_frames(list(spec.video))) if spec.video else ()
    return Request(question=spec.question, images=images, video=frames,
                   fps=spec.fps if spec.fps is not None else default_fps)
