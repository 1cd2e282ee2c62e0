"""What the engine needs from a model family. Everything family-specific lives behind this interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from hawk_cli.adapters.graphs import GraphCache
from hawk_cli.io.placement import input_device, is_dispatched, model_devices, module_device


@dataclass(frozen=True)
class SpecialTokens:
    """Token ids that give prompt tokens their roles; read from the config and tokenizer, never hard-coded."""

    image: int
    video: int
    vision_start: int
    vision_end: int
    im_start: int
    im_end: int
    pad: int


@dataclass
class VisualExtras:
    """Per-token values that travel with the visual tokens through pruning and compaction."""

    mask: Tensor  # [B, L] bool: the visual tokens the rows of `values` belong to, row-major
    values: dict[str, Tensor]  # each [mask.sum(), ...]

    def pruned(self, keep: Tensor, gather_columns) -> VisualExtras:
        """The values of kept tokens (`keep` [B, L]), with their mask laid out like the compacted batch
        (`gather_columns` maps a [B, L] tensor to the compacted [B, L'] layout)."""
        kept_rows = keep[self.mask]
        return VisualExtras(
            mask=gather_columns(self.mask & keep),
            values={name: value[kept_rows] for name, value in self.values.items()},
        )


@dataclass
class Prefill:
    """The decoder input of the whole, unpruned prompt, as the stock model would build it."""

    input_ids: Tensor  # [B, L]
    inputs_embeds: Tensor  # [B, L, D]
    position_ids: Tensor  # [P, B, L] original rotary ids (P = 3 for mRoPE)
    attention_mask: Tensor  # [B, L] long, 1 = real token (left padding)
    # Per-visual-token values the decoder consumes besides the embeddings (e.g. Qwen3-VL's DeepStack features):
    # each [n_visual, ...], rows in row-major order of the batch's visual tokens (image and video placeholders
    # of real rows). Pruning gathers them with the same keep set as the tokens (`VisualExtras.pruned`).
    extras: VisualExtras | None = None

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])


class ModelAdapter(ABC):
    """One model family. The engine calls only these methods; they call only the model's public modules."""

    model_types: tuple[str, ...] = ()
    # Whether masking a token out of attention is the same as dropping it: true for decoders whose only
    # token mixer is softmax attention. False for decoders that also mix tokens through a convolution or a
    # recurrence over the sequence (Qwen3.5's Gated DeltaNet): a masked token still moves their state, so
    # the exactness reference is the compaction oracle, and work that puts padding inside a row (calibration's
    # shared prefixes) is not exact there.
    masking_equals_dropping: bool = True

    def __init__(self, model: torch.nn.Module, tokens: SpecialTokens) -> None:
        self.model = model
        self.tokens = tokens
        # A model spread by accelerate's device map: its hooks move activations into each hooked block; the
        # adapter moves what it hands to modules it calls directly, and returns logits on the input device.
        self.dispatched = is_dispatched(model)
        self.devices = model_devices(model)
        self.input_device = input_device(model)
        # Set by the session where decode steps are captured: a family whose tower is a function of device tensors
        # and host grids replays it from these graphs (one per grid list); None: the tower runs eagerly.
        self.vision_graphs: GraphCache | None = None

    # --- shape -----------------------------------------------------------------------------------------
    @property
    @abstractmethod
    def num_query_heads(self) -> int: ...

    @property
    @abstractmethod
    def num_layers(self) -> int: ...

    # --- inputs ----------------------------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def standin_processors(cls, config) -> tuple:
        """(tokenizer, image processor) for a model built from `config` alone (random weights, no checkpoint):
        the family's real special-token ids and published image-processor settings."""

    default_scoring_layer: int = 0  # the decoder layer HAWK scores at unless head weights say otherwise

    @classmethod
    def load_image_processor(cls, location: str):
        """The family's image processor from a checkpoint folder (or hub id), PIL backend everywhere:
        torchvision's pixels differ slightly and would change top-k choices."""
        from transformers.models.auto.image_processing_auto import AutoImageProcessor

        return AutoImageProcessor.from_pretrained(location, backend="pil")

    def query_heads(self, layer: int) -> int:
        """Query heads `query_key(hidden, layer)` returns: the length of a head-weight vector for that layer."""
        return self.num_query_heads

    @abstractmethod
    def prompts(self, tokenizer, image_processor):
        """The family's input builder: `encode(request, defer_pixels)` (per request, worker-safe),
        `collate(requests, encoded)` -> batch inputs with `.to(device)`, `.on_host()`, `input_ids`,
        `attention_mask`; `from_features(features)` -> the same batch from a user's own processor output;
        `visual_tokens(image)`, `downscaled(image, tokens)`, `row_grids(inputs, requests)`."""

    # --- prefill ---------------------------------------------------------------------------------------
    @abstractmethod
    def encode_vision(self, inputs) -> dict[str, Tensor]:
        """Visual features by name, each [n_tokens, ...] with one row per placeholder token in placeholder order:
        "image" and "video" are the embeddings; a family may add its own (e.g. "image_deepstack") for its
        `build_prefill`. Every row belongs to one image or video, so callers may cache them per image."""

    @abstractmethod
    def build_prefill(self, inputs, features: dict[str, Tensor]) -> Prefill:
        """Embeddings with features scattered in, and the original position ids of every token."""

    @abstractmethod
    def query_key(self, hidden: Tensor, layer: int = 0) -> tuple[Tensor, Tensor]:
        """Pre-RoPE q [B, H, L, d] and k [B, H_kv, L, d] of decoder layer `layer` for its input `hidden`
        (the hidden states after `run_layers(..., layer)`). A family whose layer mixes tokens otherwise than
        by softmax attention returns that mixer's own query and key vectors and documents what they are."""

    def placed_query_key(self, hidden: Tensor, layer: int = 0) -> tuple[Tensor, Tensor]:
        """`query_key` for a model spread by a device map: its submodules are called directly, not through the
        block's hook, so `hidden` goes to the layer's device and q/k come back to the input device, where the
        scorer's masks are. Unchanged for a model on one device."""
        if not self.dispatched:
            return self.query_key(hidden, layer)
        block = self.decoder_module().layers[layer]
        q, k = self.query_key(hidden.to(module_device(block)), layer)
        return q.to(self.input_device), k.to(self.input_device)

    @abstractmethod
    def run_layers(
        self,
        embeds: Tensor,
        position_ids: Tensor,
        attention_mask: Tensor,
        n_layers: int,
        extras: VisualExtras | None = None,
    ) -> Tensor:
        """Hidden states entering decoder layer `n_layers`, from a pass over the full prompt (for deeper
        scoring); `extras` are the prefill's per-visual-token values, which the decoder consumes on the way."""

    def head_output_projection(self, layer: int = 0) -> torch.nn.Module:
        """The module of decoder layer `layer` whose input is the per-head attention outputs, concatenated
        [B, L, H*d] in head order (for head ablation in `hawk calibrate`)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its attention output projection")

    @abstractmethod
    def stock_generate_inputs(self, inputs) -> dict:
        """Keyword arguments for the model's own `generate` on the unpruned inputs (the stock baseline)."""

    @abstractmethod
    def stock_vision(self, inputs) -> None:
        """Run the model's own vision tower on the inputs' images (timed as the stock vision cost)."""

    # --- decoding --------------------------------------------------------------------------------------
    @abstractmethod
    def decode(
        self,
        embeds: Tensor,
        position_ids: Tensor,
        attention_mask: Tensor | None,
        cache,
        extras: VisualExtras | None = None,
    ) -> Tensor:
        """Run the decoder on new tokens with a KV cache; returns the last hidden state [B, T, D]. `extras`
        (prefill only) are the kept visual tokens' per-token values, laid out like `embeds`. `attention_mask`:
        2-D, the prepared 4-D form of `decode_mask`, or None (a decode step whose cache holds only real tokens)."""

    def decoder_weight_bytes(self) -> int:
        """Bytes one decode step must read: every decoder weight and the output head. The input-embedding table
        is only gathered (a few rows), so it is left out unless tied to the head."""
        head = self.model.get_output_embeddings()
        embed = self.model.get_input_embeddings().weight
        seen, total = set(), 0
        for parameter in list(self.decoder_module().parameters()) + list(head.parameters()):
            if id(parameter) in seen or (parameter is embed and parameter is not head.weight):
                continue
            seen.add(id(parameter))
            total += parameter.numel() * parameter.element_size()
        return total

    def decoder_module(self) -> torch.nn.Module:
        """The text decoder (its layers, final norm and embedding table)."""
        return self.model.model.language_model

    @abstractmethod
    def logits(self, hidden: Tensor) -> Tensor:
        """Vocabulary logits for hidden states [..., D]."""

    @abstractmethod
    def embed(self, token_ids: Tensor) -> Tensor:
        """Input embeddings of token ids [B, T] -> [B, T, D]."""

    @abstractmethod
    def new_cache(self, kind: str, max_length: int):
        """A fresh KV cache: "dynamic", or "static" holding `max_length` positions."""

    @property
    def oracle_name(self) -> str:
        """The exactness reference of this family: "masked" or "compaction" (see `oracle_generate`)."""
        return "masked" if self.masking_equals_dropping else "compaction"

    def oracle_generate(self, inputs, keep: Tensor, max_new_tokens: int, eos_ids: set[int]) -> list[Tensor]:
        """What a pruned run must equal, through the model's OWN `generate` (greedy; per-step logits [B, V],
        float32): the masked oracle where masking equals dropping, else the compaction oracle."""
        if self.masking_equals_dropping:
            return self.masked_generate(inputs, keep, max_new_tokens, eos_ids)
        return self.compaction_generate(inputs, keep, max_new_tokens, eos_ids)

    # Attention backends whose prepared 4-D mask the decoder passes through untouched (transformers' masking
    # returns a 4-D tensor as is): sdpa takes bool (True = attend), eager an additive float mask.
    PREPARED_MASK_BACKENDS = ("sdpa", "eager")

    def _attention_backend(self) -> str:
        return str(getattr(self.model.config, "_attn_implementation", None) or "eager")

    def _all_layers_full_attention(self) -> bool:
        text = self.model.config.get_text_config()
        return all(kind == "full_attention" for kind in (getattr(text, "layer_types", None) or ["full_attention"]))

    @property
    def decode_capturable(self) -> bool:
        """Whether a one-token decode step reads nothing but tensors it is given (a prepared mask, no per-step
        mask building from host values), so it can be captured as a CUDA graph and replayed. Not for a model
        dispatched by accelerate: its hooks run Python per block and move tensors between devices."""
        return (
            self._attention_backend() in self.PREPARED_MASK_BACKENDS
            and self._all_layers_full_attention()
            and not self.dispatched
        )

    def decode_mask(self, valid: Tensor) -> Tensor:
        """The attention mask of a decode step of one new token per row, from `valid` [B, S] bool (True: the new
        token may attend cache slot s, its own slot included).

        Where the backend takes one, the decoder's prepared 4-D form [B, 1, 1, S], so the model builds no mask
        per step (a view of `valid` for sdpa); otherwise the 2-D 0/1 mask the model builds its own from."""
        if not self.decode_capturable:
            return valid.long()
        return self._prepared_mask(valid[:, None, None, :])

    def prefill_mask(self, prompt_mask: Tensor, capacity: int) -> Tensor:
        """The prepared 4-D mask [B, 1, L, capacity] of a prefill of the left-padded `prompt_mask` [B, L] into
        slots 0..L-1 of a static cache (only for a backend that takes one: `decode_capturable`).

        A real token attends the real tokens up to itself, as the mask the model would build; a padding column
        attends itself alone (its output is never read, and no row is fully masked, which some kernels turn
        into NaN). Prepared once per prefill, so a recorded prefill builds no mask from host values."""
        length = prompt_mask.shape[1]
        query = torch.arange(length, device=prompt_mask.device)[:, None]
        key = torch.arange(capacity, device=prompt_mask.device)[None, :]
        real_keys = F.pad(prompt_mask.bool(), (0, capacity - length))  # [B, S]
        allowed = ((key <= query)[None] & real_keys[:, None, :]) | (key == query)[None]
        return self._prepared_mask(allowed[:, None])

    def _prepared_mask(self, allowed: Tensor) -> Tensor:
        """A 4-D bool mask (True: attend) in the form the backend takes as is: bool for sdpa, additive for eager."""
        if self._attention_backend() == "sdpa":
            return allowed
        dtype = self.embed_dtype
        return torch.zeros((), dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)

    @property
    def embed_dtype(self) -> torch.dtype:
        """The dtype of the decoder's activations (that of its input embeddings)."""
        return self.model.dtype

    @abstractmethod
    def masked_generate(self, inputs, keep: Tensor, max_new_tokens: int, eos_ids: set[int]) -> list[Tensor]:
        """The masked oracle through the model's OWN `generate`: the whole prompt, dropped tokens masked out
        of attention, original positions. Greedy; returns the per-step logits [B, V] (float32)."""

    def compaction_generate(self, inputs, keep: Tensor, max_new_tokens: int, eos_ids: set[int]) -> list[Tensor]:
        """The compaction oracle through the model's OWN `generate`: the stock embeddings of the kept tokens
        only (`keep` [B, L]), left-padded, at their original position ids. Greedy; per-step logits [B, V]."""
        raise NotImplementedError(f"{type(self).__name__} has no compaction oracle")

    @staticmethod
    def next_positions(prefill_positions: Tensor, attention_mask: Tensor) -> Tensor:
        """[B] rotary id of the first generated token: the largest original id of a real token, plus one.

        This is what an unpruned run uses (`rope_deltas` = max id + 1 - length), so decode positions of a
        pruned run equal the unpruned run's whatever was removed.
        """
        masked = prefill_positions.masked_fill(attention_mask[None] == 0, torch.iinfo(prefill_positions.dtype).min)
        return masked.amax(dim=(0, 2)) + 1
