"""What hawk's lmms-eval model does with a harness's requests, without lmms-eval: settings from `--model_args`,
the harness's generation keywords, batching, stop strings. `model.HawkLmms` wraps it in lmms-eval's types.

Kept apart so that it can be tested (and reused by another harness) where lmms-eval is not installed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields

from hawk_cli.engine.library import Generation, HawkModel, Likelihood, load
from hawk_cli.errors import InputError, UsageError
from hawk_cli.io.frames import read_frames


@dataclass(frozen=True)
class HarnessSettings:
    """`--model_args` of `--model hawk`: which model, how much to prune, with what; values may come as strings."""

    pretrained: str = "builtin"  # "builtin", a hub id or a local folder
    ratio: float = 0.8  # fraction of visual tokens removed (0: the unpruned model, the baseline row)
    scorer: str | None = None  # hawk, hawk-uniform, random, ...; None: the model's recommended setting or hawk
    weights: str | None = None  # a head-importance file (hawk calibrate); None: published / shipped / uniform
    layer: int | None = None
    device: str = "auto"
    dtype: str = "auto"
    attn_implementation: str = "sdpa"
    batch_size: int = 1
    min_pixels: int | None = None
    max_pixels: int | None = None
    max_new_tokens: int = 128  # when the task gives none (lmms-eval's Qwen2.5-VL default)
    seed: int = 0  # of sampled answers (tasks with temperature > 0); greedy tasks ignore it
    system_prompt: str | None = None

    @classmethod
    def parse(cls, arguments: dict) -> HarnessSettings:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(arguments) - set(known))
        if unknown:
            raise UsageError(
                f"unknown model argument(s) {', '.join(unknown)} for the hawk model", f"Use some of: {', '.join(known)}"
            )
        values = {}
        for name, value in arguments.items():
            if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
                values[name] = None if name in _OPTIONAL else getattr(cls, name)
                continue
            values[name] = _convert(name, value, _KINDS[name])
        return cls(**values)


_OPTIONAL = {"scorer", "weights", "layer", "min_pixels", "max_pixels", "system_prompt"}
_KINDS = {
    "pretrained": str,
    "ratio": float,
    "scorer": str,
    "weights": str,
    "layer": int,
    "device": str,
    "dtype": str,
    "attn_implementation": str,
    "batch_size": int,
    "min_pixels": int,
    "max_pixels": int,
    "max_new_tokens": int,
    "seed": int,
    "system_prompt": str,
}


def _convert(name: str, value, kind: type):
    try:
        if kind is str:
            return str(value)
        number = float(value)
        if kind is int and not number.is_integer():
            raise ValueError
        return int(number) if kind is int else number
    except (TypeError, ValueError):
        wanted = "an integer" if kind is int else "a number"
        raise UsageError(
            f"model argument {name} must be {wanted}, got {value!r}", f"e.g. {name}={_EXAMPLES.get(name, '1')}"
        ) from None


_EXAMPLES = {
    "ratio": "0.8",
    "batch_size": "8",
    "layer": "0",
    "max_pixels": "1003520",
    "min_pixels": "3136",
    "max_new_tokens": "128",
    "seed": "0",
}


@dataclass(frozen=True)
class Decoding:
    """A task's generation keywords in hawk's terms (lmms-eval's conventions: temperature 0 means greedy)."""

    max_new_tokens: int
    do_sample: bool
    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    until: tuple[str, ...]

    @classmethod
    def of(cls, gen_kwargs: dict | None, default_tokens: int) -> Decoding:
        kwargs = dict(gen_kwargs or {})
        beams = int(kwargs.get("num_beams", 1) or 1)
        if beams != 1:
            raise UsageError(
                f"beam search ({beams} beams) is not supported with pruning",
                "Use greedy or sampled decoding (num_beams=1)",
            )
        temperature = float(kwargs.get("temperature", 0.0) or 0.0)
        until = kwargs.get("until") or ()
        until = (until,) if isinstance(until, str) else tuple(str(u) for u in until)
        return cls(
            max_new_tokens=int(kwargs.get("max_new_tokens", kwargs.get("max_gen_toks", default_tokens))),
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else 1.0,
            top_p=float(kwargs.get("top_p") or 1.0) if temperature > 0 else 1.0,
            top_k=int(kwargs.get("top_k") or 0) if temperature > 0 else 0,
            repetition_penalty=float(kwargs.get("repetition_penalty") or 1.0),
            until=until,
        )

    def generate_kwargs(self) -> dict:
        return {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": self.do_sample,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repetition_penalty": self.repetition_penalty,
        }

    def cut(self, text: str) -> str:
        """The answer up to the first stop string (lmms-eval's `until`)."""
        for stop in self.until:
            if stop and stop in text:
                text = text[: text.index(stop)]
        return text


class HarnessRunner:
    """Answers a harness's chats in batches of `batch_size`, grouped by generation keywords, in request order."""

    def __init__(self, settings: HarnessSettings, model: HawkModel | None = None) -> None:
        self.settings = settings
        self.model = model or load(
            settings.pretrained,
            device=settings.device,
            dtype=settings.dtype,
            attn=settings.attn_implementation,
            min_pixels=settings.min_pixels,
            max_pixels=settings.max_pixels,
        )

    def answer(
        self, items: list[tuple[list[dict], dict | None]], on_batch: Callable[[list[Generation]], None] | None = None
    ) -> list[tuple[str, Generation]]:
        """`items`: (chat in transformers' / lmms-eval's message format, the task's generation keywords)."""
        groups: dict[str, list[int]] = {}
        for index, (_, gen_kwargs) in enumerate(items):
            groups.setdefault(json.dumps(gen_kwargs or {}, sort_keys=True, default=str), []).append(index)
        results: list[tuple[str, Generation] | None] = [None] * len(items)
        for indices in groups.values():
            decoding = Decoding.of(items[indices[0]][1], self.settings.max_new_tokens)
            for start in range(0, len(indices), self.settings.batch_size):
                batch = indices[start : start + self.settings.batch_size]
                outputs = self.model.generate(
                    messages=[hawk_chat(items[i][0]) for i in batch],
                    ratio=self.settings.ratio,
                    scorer=self.settings.scorer,
                    weights=self.settings.weights,
                    layer=self.settings.layer,
                    seed=self.settings.seed,
                    **decoding.generate_kwargs(),
                )
                for index, output in zip(batch, outputs, strict=True):
                    results[index] = (decoding.cut(output.text), output)
                if on_batch is not None:
                    on_batch(outputs)
        return [result for result in results if result is not None]

    def loglikelihood(self, items: list[tuple[list[dict], str]]) -> list[Likelihood]:
        """`items`: (chat ending where the answer starts, the answer to score); batches of `batch_size`, in order."""
        if not items:
            return []
        scored = self.model.loglikelihood(
            messages=[hawk_chat(chat) for chat, _ in items],
            continuation=[continuation for _, continuation in items],
            ratio=self.settings.ratio,
            scorer=self.settings.scorer,
            weights=self.settings.weights,
            layer=self.settings.layer,
            batch_size=self.settings.batch_size,
        )
        return scored if isinstance(scored, list) else [scored]


def hawk_chat(messages: Iterable[dict]) -> list[dict]:
    """lmms-eval's messages (`{"type": "image", "url": image or path}`, `{"type": "video", "url": path}`) as the
    chats `HawkModel.generate` takes; a video path is read as frames (a folder of frames or an animated image)."""
    chat = []
    for message in messages:
        message = dict(message) if isinstance(message, dict) else message.model_dump()
        content = message.get("content")
        if isinstance(content, list):
            content = [_part(part if isinstance(part, dict) else part.model_dump()) for part in content]
        chat.append({"role": message.get("role"), "content": content})
    return chat


def _part(part: dict) -> dict:
    kind = part.get("type")
    if kind == "video":
        source = part.get("video", part.get("url"))
        if isinstance(source, (list, tuple)):
            return {"type": "video", "video": list(source)}
        if isinstance(source, str):
            return {"type": "video", "video": read_frames([source])}
        raise InputError(
            f"cannot read a video from a {type(source).__name__}",
            "Give a folder of frames, an animated image, or a list of frames",
        )
    return dict(part)
