"""Calibration questions for `hawk calibrate`: a folder with `questions.jsonl`, a JSONL file, or `builtin:N`.

Each JSONL line is an object with `image` (a path, or a list of paths, relative to the JSONL file's folder),
`question`, and optionally `answer` (needed by `--method ablation`) and `subset` (questions are grouped by it for
Eq. 3; default "all"). Everything is checked before the model loads: a bad line or a missing image is one clear
error naming the file and line, and every image is read once for the data fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from hawk_cli.errors import InputError, UsageError
from hawk_cli.io.images import URL_PREFIXES, check_local_file, load_image
from hawk_cli.io.requests import decoded_lines, strict_json
from hawk_cli.io.text import MAX_QUESTION_CHARS

QUESTIONS_FILE = "questions.jsonl"
BUILTIN_PREFIX = "builtin:"
# builtin:N questions are generated up front, 2 per scene, each scene's image held in memory (0.6 MB): 10 000
# questions hold about 3 GB. The shipped head weights came from 400.
MAX_BUILTIN_QUESTIONS = 10_000
DEFAULT_SUBSET = "all"


@dataclass(frozen=True)
class CalibrationSample:
    question: str
    answer: str | None
    subset: str
    where: str  # "questions.jsonl line 3" or "builtin #17": named in errors
    image_paths: tuple[Path, ...] = ()
    pil_images: tuple[Image.Image, ...] = ()  # builtin samples carry their images in memory

    def images(self) -> tuple[Image.Image, ...]:
        if self.pil_images:
            return self.pil_images
        return tuple(load_image(path) for path in self.image_paths)


@dataclass
class CalibrationData:
    samples: list[CalibrationSample]
    source: str  # DATA as the user gave it
    fingerprint: str  # sha256 (hex) of questions, answers, subsets and image bytes, in order

    @property
    def labelled(self) -> bool:
        return all(sample.answer is not None for sample in self.samples)

    def subset_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for sample in self.samples:
            counts[sample.subset] = counts.get(sample.subset, 0) + 1
        return counts

    def require_answers(self) -> None:
        missing = next((s for s in self.samples if s.answer is None), None)
        if missing is not None:
            raise InputError(
                f"{missing.where} has no 'answer', and {{method=}}ablation needs the reference answer of "
                f"every question",
                "Add answers, or use {method=}kl (label-free)",
            )


def load_calibration_data(spec: str, limit: int | None = None) -> CalibrationData:
    """Parse and check DATA; `limit` keeps the first N questions."""
    if limit is not None and limit < 1:
        raise UsageError(f"must be at least 1, got {limit}", "Use e.g. {limit=}100", setting="limit")
    if spec.startswith(BUILTIN_PREFIX):
        samples, digest = _builtin(spec, limit)
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise InputError(
                f"calibration data '{spec}' does not exist",
                f"Give a folder with {QUESTIONS_FILE}, a JSONL file, or builtin:N",
            )
        if path.is_dir():
            path = path / QUESTIONS_FILE
            if not path.is_file():
                raise InputError(
                    f"folder '{spec}' has no {QUESTIONS_FILE}",
                    'Add one line per question: {"image": ..., "question": ..., "answer": ...}',
                )
        samples = _jsonl(path, limit)
        digest = hashlib.sha256()
        image_digests: dict[Path, str] = {}
        for sample in samples:
            for image in sample.image_paths:
                if image not in image_digests:
                    image_digests[image] = hashlib.sha256(image.read_bytes()).hexdigest()
            digest.update(
                json.dumps(
                    [sample.question, sample.answer, sample.subset, [image_digests[p] for p in sample.image_paths]]
                ).encode()
            )
    if not samples:
        raise InputError(f"calibration data '{spec}' holds no questions", "Add at least one question")
    return CalibrationData(samples=samples, source=spec, fingerprint=digest.hexdigest())


def _builtin(spec: str, limit: int | None) -> tuple[list[CalibrationSample], hashlib._Hash]:
    from hawk_cli.synthetic.scenes import CALIBRATION_SEED, GENERATOR_VERSION, calibration_set

    count = spec[len(BUILTIN_PREFIX) :]
    if not count.isdigit() or int(count) < 1:
        raise UsageError(f"'{spec}' is not builtin:N with N a positive whole number", "Use e.g. builtin:200")
    if int(count) > MAX_BUILTIN_QUESTIONS:
        raise UsageError(
            f"builtin:{int(count):,} is over hawk's limit of {MAX_BUILTIN_QUESTIONS:,} generated questions",
            "Use e.g. builtin:400 (the shipped head weights used 400)",
        )
    n = min(int(count), limit) if limit else int(count)
    digest = hashlib.sha256(f"builtin generator {GENERATOR_VERSION} seed {CALIBRATION_SEED}".encode())
    samples = []
    seen: dict[int, str] = {}
    for index, item in enumerate(calibration_set(n)):
        if id(item.image) not in seen:
            seen[id(item.image)] = hashlib.sha256(item.image.tobytes()).hexdigest()
        digest.update(json.dumps([item.question, item.answer, item.kind, seen[id(item.image)]]).encode())
        samples.append(
            CalibrationSample(
                question=item.question,
                answer=item.answer,
                subset=item.kind,
                where=f"builtin #{index}",
                pil_images=(item.image,),
            )
        )
    return samples, digest


def _text_field(record: dict, key: str, where: str, required: bool) -> str | None:
    value = record.get(key)
    if value is None:
        if required:
            raise InputError(f"{where} has no '{key}'", 'Each line needs "image" and "question"')
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InputError(f"{where}: '{key}' must be a string, got {type(value).__name__}", "Quote the value")
    value = str(value)
    if len(value) > MAX_QUESTION_CHARS:
        raise InputError(
            f"{where}: '{key}' is {len(value):,} characters long, over hawk's limit of {MAX_QUESTION_CHARS:,}",
            "Shorten it",
        )
    value = value.strip()
    if required and not value:
        raise InputError(f"{where}: '{key}' is empty", f"Give a non-empty {key}")
    return value


def _jsonl(path: Path, limit: int | None) -> list[CalibrationSample]:
    """The file's lines read as `hawk run` reads JSONL (bounded line length, UTF-8, a BOM allowed, strict JSON);
    any bad line stops here, before the model loads, naming the file and the line."""
    try:
        with open(path, "rb") as handle:
            return _samples(decoded_lines(handle), path, limit)
    except OSError as error:
        raise InputError(f"cannot read '{path}' ({error.strerror})", "Give a readable UTF-8 JSONL file") from None


def _samples(lines, path: Path, limit: int | None) -> list[CalibrationSample]:
    folder = path.parent
    samples: list[CalibrationSample] = []
    for number, line in enumerate(lines, start=1):
        if limit is not None and len(samples) >= limit:
            break
        where = f"'{path}' line {number}"
        if isinstance(line, InputError):
            raise InputError(f"'{path}' {line.message}", line.fix)
        if not line.strip():
            continue
        try:
            record = strict_json(line)
        except json.JSONDecodeError as error:
            raise InputError(
                f"{where} is not valid JSON ({error.msg} at column {error.colno})", "Write one JSON object per line"
            ) from None
        except (ValueError, RecursionError) as error:
            reason = "nested too deeply" if isinstance(error, RecursionError) else str(error).split(";")[0]
            raise InputError(f"{where} is not valid JSON ({reason})", "Write one JSON object per line") from None
        if not isinstance(record, dict):
            raise InputError(f"{where} is not a JSON object", "Write one JSON object per line")
        images = record.get("image", record.get("images"))
        if isinstance(images, str):
            images = [images]
        if not images or not isinstance(images, list) or not all(isinstance(i, str) and i for i in images):
            raise InputError(
                f"{where} has no 'image' (a path or a list of paths)", 'Each line needs "image" and "question"'
            )
        image_paths = []
        for name in images:
            image = Path(name).expanduser()
            image = image if image.is_absolute() else folder / image
            if not image.exists() and not name.lower().startswith(URL_PREFIXES):
                raise InputError(
                    f"{where}: image '{name}' does not exist (looked for '{image}')",
                    "Paths are relative to the JSONL file's folder",
                )
            try:
                check_local_file(name if name.lower().startswith(URL_PREFIXES) else image)
            except InputError as error:
                raise InputError(f"{where}: {error.message}", error.fix) from None
            image_paths.append(image)
        question = _text_field(record, "question", where, required=True)
        answer = _text_field(record, "answer", where, required=False)
        subset = _text_field(record, "subset", where, required=False) or DEFAULT_SUBSET
        samples.append(
            CalibrationSample(
                question=question, answer=answer or None, subset=subset, where=where, image_paths=tuple(image_paths)
            )
        )
    return samples
