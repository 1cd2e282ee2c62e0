"""A loaded model with its adapter, ready to answer requests: what `run`, `bench`, `calibrate` and `eval` share."""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from hawk_cli.adapters import ADAPTERS, adapter_class, adapter_for
from hawk_cli.adapters.graphs import CudaGraphCapture, GraphCache
from hawk_cli.engine.decode_step import DecodeStep
from hawk_cli.engine.generation import GenerationSettings, generate
from hawk_cli.engine.head_weights import resolve_head_weights
from hawk_cli.engine.results import GenerationResult, RowStats, grid_blocks, kept_per_block
from hawk_cli.errors import HawkWarning, InputError, ResourceError, UsageError
from hawk_cli.io.models import LoadedModel, load_model, resolve_device
from hawk_cli.io.requests import Request
from hawk_cli.io.text import refuse_control_tokens
from hawk_cli.scorers import HawkScorer, Scorer, get_scorer_class

RECOMMENDED_SETTINGS_FILE = "hawk_settings.json"


@dataclass(frozen=True)
class Answer:
    text: str
    tokens: list[int]
    stats: RowStats
    visual_keep: torch.Tensor | None = None  # [n_visual] bool: the row's visual tokens, prompt order
    visual_scores: torch.Tensor | None = None  # [n_visual] float32 scores (None at ratio 0)
    visual_grids: tuple[tuple[int, int, int], ...] = ()  # (t, h, w) in patches: the row's images, then its video
    visual_blocks: tuple[int, ...] = ()  # visual tokens of each image, then of the video, in prompt order

    def kept_per_block(self) -> tuple[int, ...]:
        """Visual tokens kept of each image (then of the video): how the prompt's one budget was spent."""
        return kept_per_block(self.visual_keep, self.visual_blocks)


@dataclass
class BatchOutput:
    answers: list[Answer]
    result: GenerationResult
    notices: list[str] = field(default_factory=list)


DECODE_CHOICES = ("auto", "eager", "graphs", "compile")
# Vision-tower graphs kept (one per list of image grids; a stream of same-sized images reuses one). They share one
# memory pool, so more graphs cost little memory beyond their outputs.
TOWER_GRAPHS = 4


def resolve_decode_mode(requested: str, device: torch.device) -> str:
    """ "auto": decode steps captured as CUDA graphs on CUDA, eager elsewhere."""
    if requested not in DECODE_CHOICES:
        raise UsageError(f"unknown decode mode '{requested}'", f"Use one of {', '.join(DECODE_CHOICES)}")
    if requested == "auto":
        return "graphs" if device.type == "cuda" else "eager"
    if requested in ("graphs", "compile") and device.type != "cuda":
        what = "CUDA graphs need" if requested == "graphs" else "a compiled decode step needs"
        raise ResourceError(
            f"{what} a CUDA device, and the model is on {device}",
            "Decode eagerly on this device, or load the model on a GPU",
        )
    return requested


class HawkSession:
    """`decode`: how decode steps run ("auto": CUDA graphs on CUDA, eager elsewhere; "eager", "graphs",
    "compile"). The session keeps one decode step, so captured graphs serve every later request."""

    def __init__(self, loaded: LoadedModel, decode: str = "auto") -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.adapter = adapter_for(loaded.model, loaded.tokenizer)
        self.prompts = self.adapter.prompts(loaded.tokenizer, loaded.image_processor)
        self.eos_ids = self._eos_ids()
        self.decode_mode = resolve_decode_mode(decode, torch.device(loaded.device or "cpu"))
        if self.decode_mode == "compile" and self.adapter.dispatched:
            raise ResourceError(
                f"a compiled decode step needs the model on one device, and it spans "
                f"{len(loaded.devices)} ({', '.join(map(str, loaded.devices))})",
                "Decode eagerly, or load the model on one GPU",
            )
        self._decode_step: DecodeStep | None = None
        if self.decode_mode == "graphs" and not self.adapter.dispatched:
            self.adapter.vision_graphs = GraphCache(TOWER_GRAPHS, CudaGraphCapture(shared_pool=True))

    @classmethod
    def open(
        cls,
        spec: str | None,
        device: str = "auto",
        dtype: str = "auto",
        attn: str = "sdpa",
        decode: str = "auto",
        device_map: str | None = None,
    ) -> HawkSession:
        """`device_map`: spread the model with accelerate ("auto", "balanced" or a JSON file) instead of
        loading it on `device`."""
        warn_if_untested_transformers()
        if device_map is None:
            resolve_decode_mode(decode, resolve_device(device))  # a bad choice fails before the model loads
        return cls(
            load_model(
                spec,
                set(ADAPTERS),
                device=device,
                dtype=dtype,
                attn=attn,
                device_map=device_map,
                image_processor_loader=lambda location, model_type: adapter_class(model_type).load_image_processor(
                    location
                ),
            ),
            decode=decode,
        )

    @property
    def decode_step(self) -> DecodeStep:
        """The session's decode step (made on first use), keeping its graphs and caches between requests."""
        if self._decode_step is None:
            self._decode_step = DecodeStep(self.adapter, self.decode_mode)
        return self._decode_step

    @property
    def compile_seconds(self) -> float:
        """Host time compiled decode steps have spent compiling so far (0 unless decode steps are compiled)."""
        return self._decode_step.compile_seconds if self._decode_step is not None else 0.0

    @property
    def decode_label(self) -> str:
        """How decode steps actually run: "cuda-graphs", "compiled" or "eager" (graphs asked for but the
        attention backend builds its mask per step: eager)."""
        if self.decode_mode == "compile":
            return "compiled"
        return "cuda-graphs" if self.decode_mode == "graphs" and self.adapter.decode_capturable else "eager"

    @property
    def decode_notice(self) -> str | None:
        """Why CUDA graphs were asked for (the default on CUDA) but decode steps run eagerly, if that is why."""
        if self.decode_mode == "graphs" and self.adapter.dispatched:
            return (
                f"the model spans {len(self.loaded.devices)} devices; decode steps run eagerly "
                "(CUDA graphs are captured only for a model on one device)"
            )
        return None

    def _eos_ids(self) -> set[int]:
        ids = {self.adapter.tokens.im_end}
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if configured is not None:
            ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        return ids

    def recommended_settings(self) -> dict:
        """Pruning settings a model ships beside its weights (`hawk_settings.json`), used only when the user
        gives none; the published HAWK stays the default for every other model."""
        path = Path(self.loaded.path) / RECOMMENDED_SETTINGS_FILE
        return json.loads(path.read_text()) if self.loaded.is_builtin and path.is_file() else {}

    def make_scorer(
        self, name: str | None = None, weights_path: str | None = None, layer: int | None = None
    ) -> tuple[Scorer, list[str]]:
        """The scorer with its head weights resolved and validated; notices go to the user's stderr."""
        recommended = self.recommended_settings() if name is None and weights_path is None else {}
        name = name or recommended.get("scorer", "hawk")
        layer = layer if layer is not None else int(recommended.get("layer", self.adapter.default_scoring_layer))
        if not 0 <= layer < self.adapter.num_layers:
            raise UsageError(
                f"scoring layer {layer} does not exist: this model has {self.adapter.num_layers} decoder layers",
                f"Choose {{layer}} in [0, {self.adapter.num_layers - 1}]",
            )
        scorer_class = get_scorer_class(name)
        scorer: Scorer
        if issubclass(scorer_class, HawkScorer):
            weights, notices = resolve_head_weights(
                self.model.config,
                weights_path,
                self.loaded.path,
                self.loaded.is_builtin,
                layer,
                self.adapter.query_heads(layer),
            )
            if name != "hawk":
                notices = []
            scorer = scorer_class(head_weights=weights.values, layer=layer, weights_source=weights.source)
        else:
            scorer, notices = scorer_class(), []
        if recommended:
            notices.append(
                f"using the model's recommended pruning settings ({name}, layer {layer}); pass {{scorer}} to choose"
            )
        return scorer, notices

    @property
    def context_tokens(self) -> int | None:
        """How many tokens (prompt and answer) the language model's positions cover; None when not stated."""
        config = getattr(self.model.config, "text_config", None) or self.model.config
        value = getattr(config, "max_position_embeddings", None)
        return int(value) if isinstance(value, int) and value > 0 else None

    def check_new_tokens(self, max_new_tokens: int, setting: str = "max_new_tokens") -> None:
        """Refuse, before any work, a generation length the context cannot hold even with an empty prompt
        (`setting`: the name the value was given under)."""
        context = self.context_tokens
        if context is not None and max_new_tokens >= context:
            raise UsageError(
                f"{max_new_tokens:,} leaves no room for a prompt in the model's context of {context:,} tokens",
                f"Use e.g. {{{setting}=}}32",
                setting=setting,
            )

    def check_fits_context(self, inputs: Any, new_tokens: list[int]) -> None:
        """Each row's whole prompt (every visual token counted: pruning happens inside the model's run) plus its
        new tokens must fit the context; checked on the host before any device work."""
        context = self.context_tokens
        if context is None:
            return
        for max_new_tokens in new_tokens:
            self.check_new_tokens(max_new_tokens)
        lengths = inputs.attention_mask.sum(dim=1).tolist()
        visual = ((inputs.mm_token_type_ids > 0) & inputs.attention_mask.bool()).sum(dim=1).tolist()
        for length, n_visual, max_new_tokens in zip(lengths, visual, new_tokens, strict=True):
            if length + max_new_tokens > context:
                raise InputError(
                    f"the prompt is {length:,} tokens ({n_visual:,} of them visual) and "
                    f"{max_new_tokens:,} new tokens were asked for, over the model's context of "
                    f"{context:,} tokens",
                    "Use fewer or smaller images or frames, a shorter question, or fewer new tokens",
                )

    def run(
        self,
        requests: list[Request],
        scorer: Scorer | None,
        settings: GenerationSettings,
        encoded: list | None = None,
        eos_ids: set[int] | None = None,
        row_limits: list[int] | None = None,
    ) -> BatchOutput:
        """`encoded`: the rows' `self.prompts.encode` output when already computed (e.g. in a worker);
        `eos_ids`: end-of-sequence ids other than the model's (a benchmark forcing lengths); `row_limits`: new
        tokens each row asks for, when fewer than `settings.max_new_tokens` (the batch's run): the context check
        holds each row to its own.

        User text is checked first (no control tokens), and every row against the model's context, before any
        device work. Timings add `inputs_s`: host time to collate the batch and queue its copies to the device."""
        started = time.perf_counter()
        refuse_control_tokens(self.tokenizer, [request.question for request in requests])
        encoded = [
            done or self.prompts.encode(request, defer_pixels=True)
            for request, done in zip(requests, encoded or [None] * len(requests), strict=True)
        ]
        inputs = self.build_inputs(requests, encoded)
        self.check_fits_context(inputs, row_limits or [settings.max_new_tokens] * len(requests))
        inputs = inputs.to(self.loaded.device)
        inputs_s = time.perf_counter() - started
        result = generate(
            self.adapter,
            inputs,
            scorer,
            settings,
            self.eos_ids if eos_ids is None else eos_ids,
            decode_step=self.decode_step,
        )
        result.timings["inputs_s"] = inputs_s
        visual = result.visual_mask
        answers = [
            Answer(
                text=self.decode(tokens),
                tokens=tokens,
                stats=stats,
                visual_keep=result.keep_mask[row][visual[row]],
                visual_scores=None if result.scores is None else result.scores[row][visual[row]],
                visual_grids=grids,
                visual_blocks=grid_blocks(grids, self.merge_size),
            )
            for row, (tokens, stats, grids) in enumerate(
                zip(result.tokens, result.rows, self.prompts.row_grids(inputs, requests), strict=True)
            )
        ]
        return BatchOutput(answers=answers, result=result)

    @property
    def merge_size(self) -> int:
        """Patches merged per side into one visual token."""
        return int(self.loaded.image_processor.merge_size)

    def build_inputs(self, requests: list[Request], encoded: list | None = None) -> Any:
        """One left-padded batch of model inputs on the host (the family's own layout)."""
        return self.prompts.collate(requests, encoded)

    def run_isolated(
        self,
        requests: list[Request],
        scorer: Scorer | None,
        settings: GenerationSettings,
        encoded: list | None = None,
        row_limits: list[int] | None = None,
    ) -> list[tuple[Answer | Exception, dict, int]]:
        """Run `requests` as one batch; if the batch fails, run each alone (with its own `row_limits` entry as
        its generation length), so one bad row cannot sink the rest.

        Returns per row (answer or the exception it raised, timings and row count of the batch that ran it).
        """
        encoded = encoded or [None] * len(requests)
        limits = row_limits or [settings.max_new_tokens] * len(requests)
        try:
            batch = self.run(requests, scorer, settings, encoded, row_limits=limits)
            return [(answer, batch.result.timings, len(requests)) for answer in batch.answers]
        except Exception as error:  # noqa: BLE001 - isolated per row below
            if len(requests) == 1:
                return [(error, {}, 1)]
        outcomes = []
        for request, done, limit in zip(requests, encoded, limits, strict=True):
            alone = replace(settings, max_new_tokens=limit)
            outcomes.extend(self.run_isolated([request], scorer, alone, [done]))
        return outcomes

    def decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True).strip()

    def describe(self) -> dict:
        config: Any = self.model.config  # a transformers config (read as untyped)
        spread = {"devices": [str(device) for device in self.loaded.devices]} if self.loaded.spread else {}
        return {
            "model": self.loaded.name,
            "device": str(self.loaded.device),
            **spread,
            "dtype": str(self.loaded.dtype).replace("torch.", ""),
            "attn": self.loaded.attn,
            "decode": self.decode_label,
            "model_type": config.model_type,
        }


TESTED_TRANSFORMERS = ("5.17.0", "5.25")  # keep in step with pyproject.toml


def warn_if_untested_transformers() -> None:
    """The adapters rely on Qwen-VL internals that move between releases: say so outside the tested range."""
    import transformers

    installed = tuple(int(part) for part in transformers.__version__.split(".")[:2] if part.isdigit())
    if not (5, 17) <= installed <= (5, 25):
        warnings.warn(
            f"transformers {transformers.__version__} is outside hawk's tested range "
            f"{TESTED_TRANSFORMERS[0]}-{TESTED_TRANSFORMERS[1]}.x; check its results against the model's own "
            "generate before trusting them (the oracle check: docs/benchmarks.md)",
            HawkWarning,
            stacklevel=2,
        )


def versions() -> dict:
    import transformers

    from hawk_cli import __version__

    return {"hawk": __version__, "torch": torch.__version__, "transformers": transformers.__version__}
