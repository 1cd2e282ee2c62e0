"""JSONL requests for `hawk run --input FILE` / `hawk run -`: one JSON object per line, checked line by line.

A line: `{"id": ..., "images": [paths] | "image": path | "video": path or [frame paths], "question": "...",
"ratio": 0.8, "max_new_tokens": 16, "fps": 2}`. Unknown keys (a reference answer, say) are ignored. A bad line
becomes a `BadLine` carrying its line number and id, and parsing goes on with the next line.
Relative paths resolve against `base` (the input file's folder, or the current folder for stdin).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from hawk_cli.errors import HawkError, InputError
from hawk_cli.io.frames import DEFAULT_FPS, read_frames, validate_fps
from hawk_cli.io.images import MAX_IMAGES_PER_PROMPT, URL_PREFIXES, load_images
from hawk_cli.io.text import check_question


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


FIELDS = ("id", "images", "image", "video", "question", "ratio", "keep", "keep_tokens", "max_new_tokens", "fps")
BUDGET_FIELDS = ("ratio", "keep", "keep_tokens")  # one visual-token budget: at most one of them per request
# A line holds one request: a question of at most 100 000 characters (400 kB of UTF-8 at most) and some paths.
# A longer line is skipped (an error record) while it is read, never held in memory whole.
MAX_LINE_BYTES = 1 << 20
_SKIP_CHUNK = 1 << 16
UTF8_BOM = b"\xef\xbb\xbf"


def decoded_lines(stream: BinaryIO, limit: int = MAX_LINE_BYTES) -> Iterator[str | InputError]:
    """The lines of a binary stream as text, one item per line (so item k is line k): a str, or an InputError for
    a line over `limit` bytes (read past in chunks, never held whole) or not valid UTF-8. A byte-order mark
    opening the stream is dropped. Files and pipes go through here alike, so they decode identically."""
    number = 0
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        number += 1
        if len(line) > limit and not line.endswith(b"\n"):
            while True:
                rest = stream.readline(_SKIP_CHUNK)
                if not rest or rest.endswith(b"\n"):
                    break
            yield InputError(
                f"line {number} is over hawk's limit of {limit:,} bytes per line",
                "Put one request per line, with a question of at most 100,000 characters",
            )
            continue
        if number == 1 and line.startswith(UTF8_BOM):
            line = line[len(UTF8_BOM) :]
        try:
            yield line.decode("utf-8")
        except UnicodeDecodeError as error:
            yield InputError(
                f"line {number} is not valid UTF-8 (byte 0x{line[error.start]:02x} at byte {error.start + 1})",
                "Save the requests as UTF-8",
            )


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of the range of a number")
    return value


def strict_json(text: str):
    """json.loads without Python's extensions: NaN, Infinity and numbers that overflow to infinity are refused
    (they would make output records that are not JSON), and so are strings with an unpaired surrogate escape
    (`"\\ud800"`: not Unicode text, so no UTF-8 output, path or tokenizer can take it)."""
    data = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    pending = [data]
    while pending:  # iterative: the parser's own nesting limit stays the only one
        value = pending.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("a string holds an unpaired surrogate escape") from None
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return data


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
    keep_tokens: int | None = None  # visual tokens kept, instead of a ratio


def ratio_for_keep(keep: float) -> float:
    """The ratio removing what `keep` does not keep, as the decimal 1 - keep (exact: `keep_count` reads the
    ratio's decimal, so keep 0.7 must give 0.3, not 0.30000000000000004)."""
    return float(1 - Fraction(str(float(keep))))


@dataclass(frozen=True)
class BadLine:
    line: int
    id: object
    error: HawkError


def _paths(value, key: str, base: Path) -> tuple[Path, ...]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and v.strip() for v in values):
        raise InputError(f"'{key}' must be a path or a list of paths", f'Write e.g. "{key}": ["a.png"]')
    if key == "images" and len(values) > MAX_IMAGES_PER_PROMPT:
        raise InputError(
            f"'{key}' lists {len(values)} images, over hawk's limit of {MAX_IMAGES_PER_PROMPT} per prompt",
            "Give fewer images per request",
        )
    for text in values:
        if text.lower().startswith(URL_PREFIXES):
            raise InputError(f"'{key}' holds the URL '{text}'; hawk reads local files only", "Download it first")
        if "\x00" in text:
            raise InputError(f"'{key}' holds a path with a NUL character", "Check the path")
    return tuple(p if p.is_absolute() else base / p for p in (Path(v).expanduser() for v in values))


def _number(data: dict, key: str, kind: type):
    value = data.get(key)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or (kind is int and value != int(value))
    ):
        raise InputError(
            f"'{key}' must be {'an integer' if kind is int else 'a finite number'}, got {value!r}",
            f"Fix '{key}' or leave it out",
        )
    return kind(value)


def parse_request(data: object, line: int, base: Path) -> RequestSpec:
    """Check one decoded line; raises InputError naming the field."""
    if not isinstance(data, dict):
        raise InputError(
            f"a request must be a JSON object, got {type(data).__name__}",
            'Write one object per line, e.g. {"id": 1, "images": ["a.png"], "question": "..."}',
        )
    request_id = data.get("id", line)
    question = data.get("question")
    if not isinstance(question, str) or not question.strip():
        raise InputError("'question' is missing or empty", 'Add "question": "..."')
    question = check_question(question, "'question'")
    if "images" in data and "image" in data:
        raise InputError("both 'images' and 'image' are given", "Use one of them")
    images = (
        _paths(data["images"] if "images" in data else data["image"], "images", base)
        if ("images" in data or "image" in data)
        else ()
    )
    video = _paths(data["video"], "video", base) if "video" in data else ()
    if not images and not video:
        raise InputError("the request has no 'images' and no 'video'", 'Add "images": ["a.png"] or "video": "clip.gif"')
    budget = [key for key in BUDGET_FIELDS if data.get(key) is not None]
    if len(budget) > 1:
        raise InputError(
            f"{' and '.join(repr(k) for k in budget)} all set the visual-token budget",
            "Give one of 'ratio', 'keep' or 'keep_tokens'",
        )
    ratio = _number(data, "ratio", float)
    if ratio is not None and not 0 <= ratio < 1:
        raise InputError(f"'ratio' must be in [0, 1), got {ratio}", "0.8 removes 80% of the visual tokens")
    keep = _number(data, "keep", float)
    if keep is not None:
        if not 0 < keep <= 1:
            raise InputError(f"'keep' must be in (0, 1], got {keep}", "0.2 keeps 20% of the visual tokens")
        ratio = ratio_for_keep(keep)
    keep_tokens = _number(data, "keep_tokens", int)
    if keep_tokens is not None and keep_tokens < 1:
        raise InputError(f"'keep_tokens' must be at least 1, got {keep_tokens}", "Use e.g. 64")
    max_new_tokens = _number(data, "max_new_tokens", int)
    if max_new_tokens is not None and max_new_tokens < 1:
        raise InputError(f"'max_new_tokens' must be at least 1, got {max_new_tokens}", "Use e.g. 16")
    fps = _number(data, "fps", float)
    if fps is not None:
        if "video" not in data:
            raise InputError("'fps' is given without a 'video'", "Leave 'fps' out, or add the video")
        validate_fps(fps)
    return RequestSpec(
        line=line,
        id=request_id,
        question=question,
        images=images,
        video=video,
        fps=fps,
        ratio=ratio,
        max_new_tokens=max_new_tokens,
        keep_tokens=keep_tokens,
    )


def read_requests(lines: Iterable[str | HawkError], base: Path) -> Iterator[RequestSpec | BadLine]:
    """Lazily parse JSONL lines (1-based numbers; blank lines skipped), so a pipe is read as it arrives. An item
    may be an error already (a line `decoded_lines` could not read): it becomes that line's BadLine."""
    for number, text in enumerate(lines, start=1):
        if isinstance(text, HawkError):
            yield BadLine(line=number, id=None, error=text)
            continue
        if not text.strip():
            continue
        try:
            data = strict_json(text)
        except json.JSONDecodeError as error:
            yield BadLine(
                line=number,
                id=None,
                error=InputError(f"line {number} is not valid JSON ({error.msg})", "Write one JSON object per line"),
            )
            continue
        except (ValueError, RecursionError) as error:  # NaN / Infinity, a huge integer, nesting too deep
            reason = "nested too deeply" if isinstance(error, RecursionError) else str(error).split(";")[0]
            yield BadLine(
                line=number,
                id=None,
                error=InputError(f"line {number} is not valid JSON ({reason})", "Write one JSON object per line"),
            )
            continue
        try:
            yield parse_request(data, number, base)
        except HawkError as error:
            request_id = data.get("id", number) if isinstance(data, dict) else None
            yield BadLine(line=number, id=request_id, error=error)


def load_request(spec: RequestSpec, default_fps: float) -> Request:
    """Open the request's images and frames (InputError on a missing or unreadable file)."""
    images = load_images(spec.images)
    frames = tuple(read_frames(list(spec.video))) if spec.video else ()
    return Request(
        question=spec.question, images=images, video=frames, fps=spec.fps if spec.fps is not None else default_fps
    )
