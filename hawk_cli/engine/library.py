"""The library's model object: `load` a checkpoint (or wrap a loaded transformers model), then `HawkModel.generate`
answers prompts, chats or a user's processor output with pruning, greedy or sampled.

Public through `hawk_cli.api` (the stable surface, documented there); kept in the engine so that every face (the
API, the harness integrations) answers through the same code. Never prints; raises `HawkError`s.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from hawk_cli.engine.generation import GenerationSettings
from hawk_cli.engine.generation import generate as engine_generate
from hawk_cli.engine.likelihood import score_continuations
from hawk_cli.engine.results import RowStats, grid_blocks, kept_per_block, visual_blocks
from hawk_cli.engine.sampling import Sampling
from hawk_cli.engine.session import HawkSession
from hawk_cli.errors import HawkWarning, InputError, UsageError
from hawk_cli.io.images import load_image
from hawk_cli.io.models import LoadedModel, builtin_dir
from hawk_cli.io.requests import Request
from hawk_cli.io.text import refuse_control_tokens
from hawk_cli.io.weights import HeadWeights, validate_for_model
from hawk_cli.scorers import HawkScorer, Scorer, get_scorer_class

ImageLike = Any  # a PIL image, a path, or a NumPy HxWx3 uint8 array


@dataclass(frozen=True)
class Generation:
    """One prompt's answer: the text, the generated token ids and the token accounting of the pruned prompt."""

    text: str
    tokens: list[int]
    stats: RowStats  # visual_tokens, visual_tokens_kept, prompt_tokens, prompt_tokens_kept, query_tokens, ...
    ratio: float
    scorer: dict = field(default_factory=dict)  # the scorer and head weights used (echoed in the JSON record of a run)
    sampling: dict = field(default_factory=dict)  # do_sample, temperature, top_k, top_p, repetition_penalty, seed
    visual_keep: torch.Tensor | None = field(default=None, repr=False)  # [n_visual] bool, prompt order
    # (kept, visual tokens) per image, then the video (one entry however the family interleaves its frames with
    # timestamps); for a caller's own processor output, per contiguous run of visual tokens
    kept_per_image: tuple[tuple[int, int], ...] = ()

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "tokens": list(self.tokens),
            "ratio": self.ratio,
            **self.stats.to_dict(),
            "kept_per_image": [list(pair) for pair in self.kept_per_image],
            "scorer": dict(self.scorer),
            "sampling": dict(self.sampling),
        }


@dataclass
class Likelihood:
    """How likely one continuation is after its prompt (the prompt's visual tokens pruned as `generate` prunes)."""

    logprob: float  # the sum of the continuation tokens' log-probabilities (natural log)
    greedy: bool  # whether greedy decoding from the prompt produces exactly these tokens
    tokens: list[int]  # the continuation's token ids
    stats: RowStats  # the pruned prompt's token accounting, as for `Generation`
    ratio: float
    scorer: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "logprob": self.logprob,
            "greedy": self.greedy,
            "tokens": list(self.tokens),
            "ratio": self.ratio,
            **self.stats.to_dict(),
            "scorer": dict(self.scorer),
        }


def load(
    model: str | Path | torch.nn.Module = "builtin",
    *,
    processor: Any = None,
    tokenizer: Any = None,
    image_processor: Any = None,
    device: str = "auto",
    dtype: str = "auto",
    attn: str = "sdpa",
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> HawkModel:
    """A model ready for `generate`: "builtin", a hub id, a local folder, or a transformers model you loaded.

    For your own model object pass its `processor` (or `tokenizer` and `image_processor`); it is used on the
    device and in the dtype it already has (`device`, `dtype` and `attn` apply only to models loaded here).
    `min_pixels` / `max_pixels` bound each image's resized area, as the Qwen processor's settings of those names
    do (a copy of the image processor is changed, never yours); None keeps the checkpoint's values.
    """
    hawk_model = _load(model, processor, tokenizer, image_processor, device, dtype, attn)
    if min_pixels is not None or max_pixels is not None:
        hawk_model.session.loaded.image_processor = _with_pixel_bounds(
            hawk_model.session.loaded.image_processor, min_pixels, max_pixels
        )
        hawk_model.session = HawkSession(hawk_model.session.loaded)
    return hawk_model


def _with_pixel_bounds(image_processor: Any, min_pixels: int | None, max_pixels: int | None) -> Any:
    import copy

    from transformers.image_utils import SizeDict

    size = image_processor.size
    bounds: list[int] = []
    for name, given, key in (("min_pixels", min_pixels, "shortest_edge"), ("max_pixels", max_pixels, "longest_edge")):
        value = given if given is not None else getattr(size, key, None)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(
                f"must be a positive integer, got {value!r}", "Use e.g. {max_pixels=}1003520", setting=name
            )
        bounds.append(value)
    low, high = bounds
    if low > high:
        raise UsageError(f"min_pixels {low} is above max_pixels {high}", "Give min_pixels <= max_pixels")
    changed = copy.deepcopy(image_processor)
    changed.size = SizeDict(shortest_edge=low, longest_edge=high)
    return changed


def _load(
    model: Any, processor: Any, tokenizer: Any, image_processor: Any, device: str, dtype: str, attn: str
) -> HawkModel:
    if isinstance(model, torch.nn.Module):
        if processor is not None:
            tokenizer = tokenizer or getattr(processor, "tokenizer", None)
            image_processor = image_processor or getattr(processor, "image_processor", None)
        if tokenizer is None or image_processor is None:
            raise UsageError(
                "a model object needs its tokenizer and image processor",
                "Pass processor=AutoProcessor.from_pretrained(...) (or tokenizer= and image_processor=)",
            )
        source = str(getattr(model.config, "_name_or_path", "") or "")
        is_builtin = bool(source) and Path(source).resolve() == builtin_dir().resolve()
        loaded = LoadedModel(
            model=model.eval(),
            tokenizer=tokenizer,
            image_processor=image_processor,
            name=source or type(model).__name__,
            path=source if Path(source).is_dir() else "",
            is_builtin=is_builtin,
        )
        return HawkModel(HawkSession(loaded))
    if not isinstance(model, (str, Path)):
        raise UsageError(
            f"cannot load a model from a {type(model).__name__}",
            "Pass 'builtin', a hub id, a local folder, or a transformers model object",
        )
    with _quiet_loading():
        return HawkModel(HawkSession.open(str(model), device=device, dtype=dtype, attn=attn))


@contextmanager
def _quiet_loading():
    """transformers' weight-loading progress bar off while hawk loads, then back as it was (the library prints
    nothing; load the model yourself and pass it in to see the bar)."""
    from transformers.utils import logging as transformers_logging

    was_enabled = transformers_logging.is_progress_bar_enabled()
    if was_enabled:
        transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()


class HawkModel:
    """A loaded model with its adapter; `generate` answers prompts with pruning. Build it with `load`."""

    def __init__(self, session: HawkSession) -> None:
        self.session = session
        self._scorers: dict[tuple, Scorer] = {}

    @property
    def name(self) -> str:
        return self.session.loaded.name

    def describe(self) -> dict:
        """Model, device, dtype, attention and model type (echoed in the JSON record of a run)."""
        return self.session.describe()

    def scorer(self, scorer: str | Scorer | None = None, weights: Any = None, layer: int | None = None) -> Scorer:
        """The scorer `generate` uses for these arguments: head weights resolved and checked against the model
        (None: the model's recommended setting if it ships one, else the published HAWK)."""
        if isinstance(scorer, Scorer):
            if weights is not None or layer is not None:
                raise UsageError(
                    "weights and layer belong to a scorer built here, not to a scorer object",
                    "Set them on the scorer object, or pass the scorer by name",
                )
            return scorer
        key = (scorer, _weights_key(weights), layer)
        if key not in self._scorers:
            self._scorers[key] = self._build_scorer(scorer, weights, layer)
        return self._scorers[key]

    def _build_scorer(self, name: str | None, weights: Any, layer: int | None) -> Scorer:
        if weights is None or isinstance(weights, (str, Path)):
            built, notices = self.session.make_scorer(name, None if weights is None else str(weights), layer)
            for notice in notices:
                if "recommended" not in notice:  # the chosen setting is echoed in each Generation instead
                    warnings.warn(notice, HawkWarning, stacklevel=4)
            return built
        scorer_class = get_scorer_class(name or "hawk")
        if not issubclass(scorer_class, HawkScorer):
            raise UsageError(f"scorer '{scorer_class.name}' takes no head weights", "Leave {weights} out")
        values = torch.as_tensor(weights, dtype=torch.float32).flatten()
        layer = self.session.adapter.default_scoring_layer if layer is None else layer
        validate_for_model(
            HeadWeights(values=values, source="user"),
            str(getattr(self.session.model.config, "model_type", "")),
            self.session.adapter.num_query_heads,
            layer,
        )
        return scorer_class(head_weights=values, layer=layer, weights_source="user")

    def generate(
        self,
        images: ImageLike | Sequence | None = None,
        prompt: str | Sequence[str] | None = None,
        *,
        messages: Sequence | None = None,
        inputs: Any = None,
        ratio: float = 0.8,
        max_new_tokens: int = 32,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        repetition_penalty: float = 1.0,
        seed: int | None = None,
        scorer: str | Scorer | None = None,
        weights: Any = None,
        layer: int | None = None,
        batch_size: int | None = None,
    ) -> Generation | list[Generation]:
        """Answer one prompt (returns a `Generation`) or a batch (a list of prompts, a list of chats or a
        processor output: returns a list, in order).

        Give the prompt one way: `images` + `prompt` (a question after the images), `messages` (a chat), or
        `inputs` (your processor's output for the whole batch). Prompts without an image run unpruned.
        `batch_size` splits a long list into batches of that many prompts (default: one batch).
        """
        given = [
            name
            for name, value in (("prompt", prompt), ("messages", messages), ("inputs", inputs))
            if value is not None
        ]
        if len(given) != 1:
            raise UsageError(
                "give exactly one of prompt, messages or inputs" + (f" (got {', '.join(given)})" if given else ""),
                "e.g. generate(image, 'what is in the picture?')",
            )
        if inputs is not None and images is not None:
            raise UsageError("images come inside the processor output when inputs is given", "Leave images out")
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise UsageError(
                f"must be a positive integer, got {batch_size!r}", "Use e.g. {batch_size=}8", setting="batch_size"
            )
        settings = GenerationSettings(ratio=ratio, max_new_tokens=max_new_tokens)  # validates both
        sampling = Sampling(
            do_sample=do_sample,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            seed=seed,
        ).seeded()
        chosen = self.scorer(scorer, weights, layer) if settings.ratio > 0 else None
        if sampling.is_greedy:
            settings = GenerationSettings(ratio=ratio, max_new_tokens=max_new_tokens)
        else:
            settings = GenerationSettings(ratio=ratio, max_new_tokens=max_new_tokens, choice=sampling)
        if inputs is not None:
            batch = self.session.prompts.from_features(inputs)
            return self._run_inputs(batch, chosen, settings, sampling)
        requests, single = _requests(images, prompt, messages)
        step = batch_size or len(requests)
        results: list[Generation] = []
        for start in range(0, len(requests), step):
            results.extend(self._run_requests(requests[start : start + step], chosen, settings, sampling))
        return results[0] if single else results

    def loglikelihood(
        self,
        images: ImageLike | Sequence | None = None,
        prompt: str | Sequence[str] | None = None,
        continuation: str | Sequence[str] | None = None,
        *,
        messages: Sequence | None = None,
        ratio: float = 0.8,
        scorer: str | Scorer | None = None,
        weights: Any = None,
        layer: int | None = None,
        batch_size: int | None = None,
    ) -> Likelihood | list[Likelihood]:
        """How likely `continuation` (the answer's text, as the assistant would write it) is after the prompt, the
        prompt's visual tokens pruned as `generate` prunes them: for scoring multiple-choice answers.

        The prompt is given as for `generate` (`images` + `prompt`, or `messages`); one prompt takes one
        continuation and returns a `Likelihood`, a batch takes a list of continuations (one per prompt) and
        returns a list, in order. To compare several answers to one question, repeat the prompt.
        """
        if (prompt is None) == (messages is None):
            raise UsageError(
                "give exactly one of prompt or messages", "e.g. loglikelihood(image, 'what is it?', 'a cat')"
            )
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise UsageError(
                f"must be a positive integer, got {batch_size!r}", "Use e.g. {batch_size=}8", setting="batch_size"
            )
        GenerationSettings(ratio=ratio, max_new_tokens=1)  # validates the ratio
        requests, single = _requests(images, prompt, messages)
        texts = [continuation] if single else continuation
        if not isinstance(texts, (list, tuple)) or len(texts) != len(requests):
            raise InputError(
                f"{len(requests)} prompt(s) need as many continuations",
                "Give one continuation string per prompt (a list for a batch)",
            )
        answers = [text for text in texts if isinstance(text, str) and text]
        if len(answers) != len(texts):
            raise InputError("a continuation must be non-empty text", "Give each answer to score as a string")
        refuse_control_tokens(self.session.tokenizer, answers, ["the continuation"] * len(answers))
        token_ids = [list(ids) for ids in self.session.tokenizer(answers, add_special_tokens=False)["input_ids"]]
        chosen = self.scorer(scorer, weights, layer) if ratio > 0 else None
        step = batch_size or len(requests)
        results: list[Likelihood] = []
        for start in range(0, len(requests), step):
            results.extend(
                self._score_requests(requests[start : start + step], token_ids[start : start + step], chosen, ratio)
            )
        return results[0] if single else results

    # --- internals -------------------------------------------------------------------------------------------
    def _run_requests(
        self, requests: list[Request], scorer: Scorer | None, settings: GenerationSettings, sampling: Sampling
    ) -> list[Generation]:
        """Rows with an image at `settings.ratio`, rows without one unpruned (nothing to prune), merged in order."""
        with_image, without = _rows_by_image(requests)
        groups = [(rows, group) for rows, group in ((with_image, settings), (without, _unpruned(settings))) if rows]
        out: list[Generation | None] = [None] * len(requests)
        for rows, group_settings in groups:
            batch = self.session.build_inputs([requests[i] for i in rows])
            grids = self.session.prompts.row_grids(batch, [requests[i] for i in rows])
            blocks = [grid_blocks(row_grids, self.session.merge_size) for row_grids in grids]
            generations = self._run_inputs(batch, scorer, group_settings, sampling, blocks)
            for row, generation in zip(rows, generations, strict=True):
                out[row] = generation
        return [generation for generation in out if generation is not None]

    def _score_requests(
        self, requests: list[Request], token_ids: list[list[int]], scorer: Scorer | None, ratio: float
    ) -> list[Likelihood]:
        """Rows with an image at `ratio`, rows without one unpruned (nothing to prune), merged in order."""
        session = self.session
        with_image, without = _rows_by_image(requests)
        out: list[Likelihood | None] = [None] * len(requests)
        for rows, row_ratio in ((with_image, ratio), (without, 0.0)):
            if not rows:
                continue
            batch = session.build_inputs([requests[i] for i in rows])
            session.check_fits_context(batch, [len(token_ids[i]) for i in rows])
            active = scorer if row_ratio > 0 else None
            scores, stats = score_continuations(
                session.adapter, batch.to(session.loaded.device), active, [token_ids[i] for i in rows], row_ratio
            )
            described = active.describe() if active is not None else {"scorer": None}
            for row, score, row_stats in zip(rows, scores, stats, strict=True):
                out[row] = Likelihood(
                    logprob=score.logprob,
                    greedy=score.greedy,
                    tokens=token_ids[row],
                    stats=row_stats,
                    ratio=row_ratio,
                    scorer=described,
                )
        return [likelihood for likelihood in out if likelihood is not None]

    def _run_inputs(
        self,
        batch: Any,
        scorer: Scorer | None,
        settings: GenerationSettings,
        sampling: Sampling,
        blocks: list[tuple[int, ...]] | None = None,
    ) -> list[Generation]:
        """`blocks`: each row's visual tokens per image (then video); None when the requests are unknown (a
        caller's own processor output), then read from the runs of visual tokens in the prompt."""
        session = self.session
        inputs = batch.to(session.loaded.device)
        active = scorer if settings.ratio > 0 else None
        result = engine_generate(session.adapter, inputs, active, settings, session.eos_ids)
        described = active.describe() if active is not None else {"scorer": None}
        return [
            Generation(
                text=session.decode(tokens),
                tokens=tokens,
                stats=stats,
                ratio=settings.ratio,
                scorer=described,
                sampling=sampling.describe(),
                visual_keep=result.keep_mask[row][result.visual_mask[row]],
                kept_per_image=_kept_per_image(
                    result.keep_mask[row][result.visual_mask[row]],
                    blocks[row] if blocks is not None else visual_blocks(result.visual_mask[row]),
                ),
            )
            for row, (tokens, stats) in enumerate(zip(result.tokens, result.rows, strict=True))
        ]


def _kept_per_image(visual_keep: torch.Tensor, blocks: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """(kept, total) per image (then video) of a row."""
    return tuple(zip(kept_per_block(visual_keep, blocks), blocks, strict=True))


def _rows_by_image(requests: list[Request]) -> tuple[list[int], list[int]]:
    """Indices of the requests with an image or video (pruned) and of those without (nothing to prune)."""
    visual = [bool(r.images or r.video) for r in requests]
    return [i for i, v in enumerate(visual) if v], [i for i, v in enumerate(visual) if not v]


def _unpruned(settings: GenerationSettings) -> GenerationSettings:
    return GenerationSettings(ratio=0.0, max_new_tokens=settings.max_new_tokens, choice=settings.choice)


def _weights_key(weights: Any) -> Any:
    if weights is None or isinstance(weights, (str, Path)):
        return None if weights is None else str(weights)
    return tuple(float(v) for v in torch.as_tensor(weights, dtype=torch.float32).flatten().tolist())


def _image(value: ImageLike) -> Image.Image:
    if isinstance(value, Image.Image):
        return value if value.mode == "RGB" else value.convert("RGB")
    if isinstance(value, (str, Path)):
        return load_image(value)
    if hasattr(value, "__array__"):
        import numpy as np

        array = np.asarray(value)
        if array.ndim == 3 and array.shape[2] in (3, 4) and array.dtype == np.uint8:
            return Image.fromarray(array).convert("RGB")
    raise InputError(
        f"cannot use a {type(value).__name__} as an image", "Pass a PIL image, a path, or an HxWx3 uint8 array"
    )


def _images(value: Any) -> tuple[Image.Image, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(_image(item) for item in value)
    return (_image(value),)


def _requests(images: Any, prompt: Any, messages: Any) -> tuple[list[Request], bool]:
    """(requests, single): one prompt or a batch of them, from a question or chats."""
    if messages is not None:
        if not isinstance(messages, (list, tuple)) or not messages:
            raise InputError(
                "messages must be a non-empty list of chat turns",
                "e.g. [{'role': 'user', 'content': 'hello'}], or a list of such chats",
            )
        if isinstance(messages[0], dict):
            return [_chat_request(messages)], True
        return [_chat_request(chat) for chat in messages], False
    if isinstance(prompt, str):
        return [Request(question=_question(prompt), images=_images(images))], True
    if not isinstance(prompt, (list, tuple)) or not prompt:
        raise InputError(
            "prompt must be a question or a non-empty list of questions",
            "e.g. generate(image, 'what is in the picture?')",
        )
    per_row = [None] * len(prompt) if images is None else images
    if not isinstance(per_row, (list, tuple)) or len(per_row) != len(prompt):
        raise InputError(
            f"a batch of {len(prompt)} questions needs one entry of images per question",
            "Pass images as a list as long as the questions (an image, a list of images, or None)",
        )
    return [
        Request(question=_question(text), images=_images(row)) for text, row in zip(prompt, per_row, strict=True)
    ], False


def _question(text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"a question must be non-empty text, got {text!r}", "Give the question as a string")
    return text.strip()


_ROLES = ("system", "user", "assistant")


def _chat_request(chat: Any) -> Request:
    """A chat in transformers' format -> a Request: media parts become placeholders, media collected in order."""
    if not isinstance(chat, (list, tuple)) or not chat or not all(isinstance(turn, dict) for turn in chat):
        raise InputError(
            "a chat must be a non-empty list of {'role': ..., 'content': ...} turns",
            "e.g. [{'role': 'user', 'content': [{'type': 'image', 'image': img}, "
            "{'type': 'text', 'text': 'what is this?'}]}]",
        )
    images: list[Image.Image] = []
    video: tuple[Image.Image, ...] = ()
    turns, texts = [], []
    for turn in chat:
        role, content = turn.get("role"), turn.get("content")
        if role not in _ROLES:
            raise InputError(f"unknown chat role {role!r}", f"Use one of: {', '.join(_ROLES)}")
        if isinstance(content, str):
            turns.append({"role": role, "content": content})
            texts.append(content)
            continue
        if not isinstance(content, (list, tuple)):
            raise InputError(
                f"a {role} turn's content must be text or a list of parts", "e.g. [{'type': 'text', 'text': '...'}]"
            )
        parts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                parts.append({"type": "text", "text": str(part.get("text", ""))})
                texts.append(str(part.get("text", "")))
            elif kind == "image":
                if video:
                    raise InputError("an image comes after the video in this chat", "Put the video after every image")
                source = next((part[k] for k in ("image", "url", "path") if part.get(k) is not None), None)
                images.append(_image(source))
                parts.append({"type": "image"})
            elif kind == "video":
                if video:
                    raise InputError("a chat holds at most one video", "Give one video per chat")
                frames = part.get("video")
                if not isinstance(frames, (list, tuple)) or not frames:
                    raise InputError(
                        "a video part must hold its frames as a list of images",
                        "e.g. {'type': 'video', 'video': [frame0, frame1, ...]}",
                    )
                video = tuple(_image(frame) for frame in frames)
                parts.append({"type": "video"})
            else:
                raise InputError(f"unknown content part {kind!r}", "Use parts of type text, image or video")
        turns.append({"role": role, "content": parts})
    question = next((text for text in reversed(texts) if text.strip()), "")
    return Request(question=question, images=tuple(images), video=video, messages=tuple(turns))
