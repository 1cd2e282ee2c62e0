"""Per-head importance of one decoder layer, by ablation: what `hawk calibrate` computes. Never prints.

A head is disabled by zeroing its slice of the input to the layer's output projection (`o_proj`), through a
forward pre-hook on that module instance that is removed afterwards. The ablations are batched: each sample's
prompt is replicated once per ablated head plus once unablated, and one hook zeroes a different head in each
replica, so one forward pass measures every head on every sample of a batch. Runs are unpruned.

- `ablation` (labelled, the paper's Eq. 3): the drop of head i on a sample is the reference answer's
  teacher-forced log-likelihood (answer tokens, then the end-of-turn token) unablated minus ablated.
- `kl` (label-free, an extension): the drop is the mean over the model's own greedy answer of
  KL(unablated || ablated) between next-token distributions (the answer is greedy-decoded by the unablated
  replica and fed to every replica, so all see the same prefix).

Drops are averaged per subset (question type or benchmark) and reduced by `eq3`: shift by the per-subset minimum,
L1-normalise per subset, average over subsets.

Answer tokens are appended after the generation prompt at rotary ids continuing from the prompt's largest
original id + 1, exactly as greedy decoding places them, with a KV cache (prefill, then one step per token).

Work is shared where it is provably identical: each distinct image is preprocessed and encoded once
(`VisionCache`), and when several questions of a batch start with the same image, the prompt up to the image's
end token is run once per replica and its KV cache fanned out to those questions (causal attention: that prefix
does not see the question). Both only change speed; tests pin the drops against the unshared computation.

Per-visual-token extras of the prefill (Qwen3-VL's DeepStack features) go with every replica, and with the
shared prefix that holds their tokens (all visual tokens sit before the last vision-end token).
Prefix sharing is off for decoders where masking is not dropping (Qwen3.5's Gated DeltaNet): there the suffixes'
padding would sit inside the row, and the recurrence would step through it.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from hawk_cli.adapters.base import ModelAdapter, VisualExtras
from hawk_cli.engine.finish_watch import FinishWatch
from hawk_cli.errors import UsageError
from hawk_cli.io.calibration_data import CalibrationData, CalibrationSample
from hawk_cli.io.requests import Request

METHODS = ("ablation", "kl")
MEASURES = {
    "ablation": "drop of the reference answer's log-likelihood (nats, answer + end-of-turn token)",
    "kl": "mean KL(unablated || ablated) of next-token distributions over the model's greedy answer (nats)",
}
ABLATION = "zero the head's slice of the o_proj input (forward pre-hook)"


@dataclass(frozen=True)
class CalibrationSettings:
    method: str = "ablation"
    layer: int | None = None  # None: the adapter's scoring layer
    batch_size: int = 8  # samples per forward pass; each is replicated (heads per pass + 1) times
    max_new_tokens: int = 16  # kl: longest greedy answer measured
    heads_per_pass: int | None = None  # None: every head in one pass
    share_prefixes: bool = True  # compute a prompt prefix shared by several questions (same image) once
    # (only where masking equals dropping: a suffix padded inside the row would step a recurrence through padding)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UsageError(f"unknown calibration method '{self.method}'", f"Use one of: {', '.join(METHODS)}")
        if self.batch_size < 1:
            raise UsageError(
                f"must be at least 1, got {self.batch_size}", "Use e.g. {batch_size=}4", setting="batch_size"
            )
        if self.max_new_tokens < 1:
            raise UsageError(
                f"must be at least 1, got {self.max_new_tokens}",
                "Use e.g. {max_new_tokens=}16",
                setting="max_new_tokens",
            )
        if self.heads_per_pass is not None and self.heads_per_pass < 1:
            raise UsageError(f"heads per pass must be at least 1, got {self.heads_per_pass}", "Use e.g. 8")


@dataclass
class CalibrationResult:
    importance: Tensor  # [H] float32, Eq. 3, sums to 1
    subset_drops: Tensor  # [S, H] float32, mean drop per subset and head (before Eq. 3)
    subsets: list[str]
    counts: dict[str, int]  # samples per subset
    layer: int = 0  # the decoder layer whose heads were ablated
    baseline: dict[str, float] = field(default_factory=dict)  # ablation: mean unablated answer log-likelihood
    seconds: float = 0.0


def eq3(drops: Tensor) -> Tensor:
    """[S, H] drops (S subsets, H heads) -> [H] weights summing to 1 (the paper's Eq. 3).

    Per subset: subtract the minimum over heads (the least important head gets 0, negative drops vanish),
    divide by the sum over heads; then average over subsets. A subset in which every head has the same drop
    says nothing about the heads and contributes uniform weights 1/H.
    """
    drops = drops.double()
    shifted = drops - drops.min(dim=1, keepdim=True).values
    sums = shifted.sum(dim=1, keepdim=True)
    uniform = torch.full_like(shifted, 1.0 / shifted.shape[1])
    normalised = torch.where(sums > 0, shifted / torch.where(sums > 0, sums, torch.ones_like(sums)), uniform)
    return normalised.mean(dim=0).float()


@contextmanager
def ablate_heads(module: torch.nn.Module, keep: Tensor) -> Iterator[None]:
    """While active, zero the input slices of heads where `keep[row, head]` is False, on `module` only.

    `keep` is [N, H] bool for a batch of N rows; the module's input is [N, T, H*d] in head order.
    """
    heads = keep.shape[1]

    def hook(_module, args):
        hidden = args[0]
        rows, length, width = hidden.shape
        if rows != keep.shape[0] or width % heads:
            raise RuntimeError(
                f"head ablation expected {keep.shape[0]} rows of {heads} heads, got {tuple(hidden.shape)}"
            )
        dropped = ~keep.to(hidden.device)[:, None, :, None]
        split = hidden.reshape(rows, length, heads, width // heads)
        masked = split.masked_fill(dropped, 0).reshape(rows, length, width)
        return (masked, *args[1:])

    handle = module.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def answer_tokens(tokenizer, answer: str, end_id: int) -> list[int]:
    """The reference answer as the model should produce it: its tokens, then the end-of-turn token."""
    return list(tokenizer(answer, add_special_tokens=False)["input_ids"]) + [end_id]


def _head_keep(rows_per_replica: int, heads: list[int], num_heads: int, device) -> Tensor:
    """[R * n, H] bool: replica 0 keeps every head, replica r drops heads[r - 1]."""
    keep = torch.ones((len(heads) + 1) * rows_per_replica, num_heads, dtype=torch.bool, device=device)
    for replica, head in enumerate(heads, start=1):
        keep[replica * rows_per_replica : (replica + 1) * rows_per_replica, head] = False
    return keep


def _left_padded(prefill, picks: list[tuple[int, Tensor]]) -> tuple[Tensor, Tensor, Tensor]:
    """Embeddings [N, W, D], rotary ids [P, N, W] and mask [N, W] of the chosen (row, columns) of `prefill`,
    each right-aligned in a block of width W (padding first, masked out)."""
    width = max(len(cols) for _, cols in picks)
    embeds = prefill.inputs_embeds.new_zeros(len(picks), width, prefill.inputs_embeds.shape[-1])
    positions = prefill.position_ids.new_zeros(prefill.position_ids.shape[0], len(picks), width)
    mask = prefill.attention_mask.new_zeros(len(picks), width)
    for index, (row, cols) in enumerate(picks):
        n = len(cols)
        embeds[index, width - n :] = prefill.inputs_embeds[row, cols]
        positions[:, index, width - n :] = prefill.position_ids[:, row, cols]
        mask[index, width - n :] = 1
    return embeds, positions, mask


def _replicated_extras(extras: VisualExtras | None, replicas: int) -> VisualExtras | None:
    """The extras of a batch stacked `replicas` times along the batch (row-major order: replica by replica)."""
    if extras is None:
        return None
    return VisualExtras(
        mask=extras.mask.repeat(replicas, 1),
        values={name: value.repeat(replicas, *([1] * (value.dim() - 1))) for name, value in extras.values.items()},
    )


def _extras_rows(extras: VisualExtras, row: int, cols: Tensor) -> Tensor:
    """Indices into `extras.values` of the visual tokens among columns `cols` of `row`, in column order."""
    slot = torch.full(extras.mask.shape, -1, dtype=torch.long, device=extras.mask.device)
    slot[extras.mask] = torch.arange(int(extras.mask.sum()), device=extras.mask.device)
    picked = slot[row, cols]
    return picked[picked >= 0]


def _left_padded_extras(extras: VisualExtras | None, picks: list[tuple[int, Tensor]]) -> VisualExtras | None:
    """The extras laid out like `_left_padded(prefill, picks)`: None when the picked columns hold no visual token."""
    if extras is None:
        return None
    width = max(len(cols) for _, cols in picks)
    mask = extras.mask.new_zeros(len(picks), width)
    rows = []
    for index, (row, cols) in enumerate(picks):
        mask[index, width - len(cols) :] = extras.mask[row, cols]
        rows.append(_extras_rows(extras, row, cols))
    order = torch.cat(rows)
    if order.numel() == 0:
        return None
    return VisualExtras(mask=mask, values={name: value[order] for name, value in extras.values.items()})


@dataclass
class SharedPrefixes:
    """Rows whose prompts start with the same image (and template): the prefix up to the last vision-end token
    is computed once per distinct prefix, since causal attention makes it independent of the question."""

    prefixes: list[tuple[int, Tensor]]  # (representative row, its prefix columns)
    suffixes: list[tuple[int, Tensor]]  # (row, columns after the prefix), one per row
    group: Tensor  # [B] index into `prefixes`


def shared_prefixes(prefill, vision_end: int) -> SharedPrefixes | None:
    """The sharing plan of a batch, or None when no two rows share a prefix (or a row has no image first)."""
    spans = []
    for row in range(prefill.batch_size):
        cols = prefill.attention_mask[row].nonzero().flatten()
        ends = (prefill.input_ids[row, cols] == vision_end).nonzero().flatten()
        if len(ends) == 0 or int(ends[-1]) + 1 >= len(cols):
            return None
        cut = int(ends[-1]) + 1
        spans.append((cols[:cut], cols[cut:]))
    extras = prefill.extras
    if extras is not None and any(bool(extras.mask[row, suffix].any()) for row, (_, suffix) in enumerate(spans)):
        return None  # a visual token after the last vision-end token: the suffix would need extras of its own

    def same_extras(other: int, theirs: Tensor, row: int, prefix: Tensor) -> bool:
        return extras is None or all(
            torch.equal(value[_extras_rows(extras, other, theirs)], value[_extras_rows(extras, row, prefix)])
            for value in extras.values.values()
        )

    representatives: list[int] = []
    group = []
    for row, (prefix, _) in enumerate(spans):
        for index, other in enumerate(representatives):
            theirs = spans[other][0]
            if (
                len(theirs) == len(prefix)
                and torch.equal(prefill.input_ids[other, theirs], prefill.input_ids[row, prefix])
                and torch.equal(prefill.position_ids[:, other, theirs], prefill.position_ids[:, row, prefix])
                and torch.equal(prefill.inputs_embeds[other, theirs], prefill.inputs_embeds[row, prefix])
                and same_extras(other, theirs, row, prefix)
            ):
                group.append(index)
                break
        else:
            group.append(len(representatives))
            representatives.append(row)
    if len(representatives) == prefill.batch_size:
        return None
    return SharedPrefixes(
        prefixes=[(row, spans[row][0]) for row in representatives],
        suffixes=[(row, spans[row][1]) for row in range(prefill.batch_size)],
        group=torch.tensor(group, device=prefill.input_ids.device),
    )


def _replicated_prefill(
    adapter: ModelAdapter, prefill, heads: list[int], layer: int, cache, share: bool
) -> tuple[Tensor, Tensor]:
    """Prefill every replica of every sample; ([R * B, V] next-token logits, [R * B, W] attention mask)."""
    batch = prefill.batch_size
    replicas = len(heads) + 1
    projection = adapter.head_output_projection(layer)
    device = prefill.inputs_embeds.device
    plan = shared_prefixes(prefill, adapter.tokens.vision_end) if share else None
    if plan is None:
        mask = prefill.attention_mask.repeat(replicas, 1)
        with ablate_heads(projection, _head_keep(batch, heads, adapter.num_query_heads, device)):
            hidden = adapter.decode(
                prefill.inputs_embeds.repeat(replicas, 1, 1),
                prefill.position_ids.repeat(1, replicas, 1),
                mask,
                cache,
                _replicated_extras(prefill.extras, replicas),
            )
        return adapter.logits(hidden[:, -1]).float(), mask
    unique = len(plan.prefixes)
    embeds, positions, prefix_mask = _left_padded(prefill, plan.prefixes)
    prefix_extras = _replicated_extras(_left_padded_extras(prefill.extras, plan.prefixes), replicas)
    with ablate_heads(projection, _head_keep(unique, heads, adapter.num_query_heads, device)):
        adapter.decode(
            embeds.repeat(replicas, 1, 1),
            positions.repeat(1, replicas, 1),
            prefix_mask.repeat(replicas, 1),
            cache,
            prefix_extras,
        )
    cache.reorder_cache((torch.arange(replicas, device=device)[:, None] * unique + plan.group[None]).flatten())
    embeds, positions, suffix_mask = _left_padded(prefill, plan.suffixes)
    mask = torch.cat([prefix_mask[plan.group], suffix_mask], dim=1).repeat(replicas, 1)
    with ablate_heads(projection, _head_keep(batch, heads, adapter.num_query_heads, device)):
        hidden = adapter.decode(embeds.repeat(replicas, 1, 1), positions.repeat(1, replicas, 1), mask, cache)
    return adapter.logits(hidden[:, -1]).float(), mask


def replicated_pass(
    adapter: ModelAdapter,
    prefill,
    heads: list[int],
    layer: int,
    targets: list[list[int]] | None,
    eos_ids: set[int],
    max_new_tokens: int,
    share_prefixes: bool = True,
) -> tuple[Tensor, Tensor]:
    """One forward of every sample × (unablated, then each head of `heads` ablated).

    Returns (score [R, B], tokens [B]) with R = len(heads) + 1 replicas: with `targets`, the teacher-forced
    log-likelihood of each sample's target tokens; without, the summed KL(unablated || replica) over the
    unablated replica's greedy answer (row 0 is then 0); `tokens` counts the measured positions per sample.
    """
    batch = prefill.batch_size
    replicas = len(heads) + 1
    rows = replicas * batch
    device = prefill.inputs_embeds.device
    rope_rows = prefill.position_ids.shape[0]
    next_position = adapter.next_positions(prefill.position_ids, prefill.attention_mask).repeat(replicas)
    steps = max(len(t) for t in targets) if targets is not None else max_new_tokens
    if targets is not None:
        target = torch.full((batch, steps), adapter.tokens.pad, dtype=torch.long, device=device)
        for row, ids in enumerate(targets):
            target[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        lengths = torch.tensor([len(t) for t in targets], device=device)
    eos = torch.tensor(sorted(eos_ids), device=device)
    score = torch.zeros(replicas, batch, dtype=torch.float64, device=device)
    measured = torch.zeros(batch, dtype=torch.long, device=device)
    active = torch.ones(batch, dtype=torch.bool, device=device)
    cache = adapter.new_cache("dynamic", prefill.attention_mask.shape[1] + steps)
    logits, mask = _replicated_prefill(adapter, prefill, heads, layer, cache, share_prefixes)
    length = mask.shape[1]
    mask_buffer = torch.cat([mask, mask.new_zeros(rows, steps)], dim=1)
    # Teacher-forced targets end where the longest does (`steps`); a step after every row ended adds nothing
    # (inactive rows are masked out of the score), so a late stop is harmless.
    watch = FinishWatch(device) if targets is None else None
    with ablate_heads(adapter.head_output_projection(layer), _head_keep(batch, heads, adapter.num_query_heads, device)):
        for t in range(steps):
            logp = logits.log_softmax(-1).view(replicas, batch, -1)
            if targets is not None:
                active = t < lengths
                token = target[:, t]
                gained = logp.gather(2, token.view(1, batch, 1).expand(replicas, batch, 1)).squeeze(2)
                following = t + 1 < lengths
            else:
                base = logp[0]
                token = torch.where(
                    active, base.argmax(-1), torch.full_like(active, adapter.tokens.pad, dtype=torch.long)
                )
                gained = (base.exp()[None] * (base[None] - logp)).sum(-1)
                following = active & ~torch.isin(token, eos)
            score += torch.where(active[None], gained.double(), torch.zeros_like(score))
            measured += active.long()
            if t == steps - 1:
                break
            if watch is not None:  # greedy answers end at different steps: learn it without a host wait
                watch.push(~following)
                if watch.done():
                    break
            mask_buffer[:, length + t] = 1
            step_positions = (next_position + t).view(1, rows, 1).expand(rope_rows, rows, 1)
            hidden = adapter.decode(
                adapter.embed(token.repeat(replicas)[:, None]), step_positions, mask_buffer[:, : length + t + 1], cache
            )
            logits = adapter.logits(hidden[:, -1]).float()
            active = following
    return score, measured


def sample_drops(
    adapter: ModelAdapter,
    prefill,
    layer: int,
    method: str,
    targets: list[list[int]] | None,
    eos_ids: set[int],
    max_new_tokens: int,
    heads_per_pass: int | None = None,
    share_prefixes: bool = True,
) -> tuple[Tensor, Tensor]:
    """([B, H] drop of every head on every sample, [B] unablated score) for one prepared prefill."""
    heads = list(range(adapter.num_query_heads))
    chunk = heads_per_pass or len(heads)
    drops, base = [], None
    for start in range(0, len(heads), chunk):
        part = heads[start : start + chunk]
        score, measured = replicated_pass(
            adapter,
            prefill,
            part,
            layer,
            targets if method == "ablation" else None,
            eos_ids,
            max_new_tokens,
            share_prefixes,
        )
        if method == "ablation":
            drops.append((score[0][None] - score[1:]).T)
        else:
            drops.append((score[1:] / measured.clamp(min=1)[None]).T)
        base = score[0]
    return torch.cat(drops, dim=1).float(), base.float()


class VisionCache:
    """Preprocess and encode each distinct image once: calibration sets often ask several questions per image.

    Wraps the image processor for `build_inputs` (per-image results, keyed by a digest of the pixels) and
    encodes only the images whose features are not cached yet. Holds the most recent `size` images.
    """

    def __init__(self, adapter: ModelAdapter, tokenizer, image_processor, size: int = 32) -> None:
        self.adapter = adapter
        self.prompts = adapter.prompts(tokenizer, self)
        self.inner = image_processor
        self.merge_size = image_processor.merge_size
        self.size = size
        self.processed: OrderedDict[str, tuple[Tensor, Tensor]] = OrderedDict()
        self.features: OrderedDict[str, dict[str, Tensor]] = OrderedDict()  # per image: every encoded output
        self.order: list[str] = []  # image keys of the batch being built, in placeholder order

    @staticmethod
    def _key(image) -> str:
        digest = hashlib.blake2b(image.tobytes(), digest_size=16)
        digest.update(f"{image.mode}{image.size}".encode())
        return digest.hexdigest()

    @staticmethod
    def _remember(store: OrderedDict, key: str, value, size: int) -> None:
        store[key] = value
        store.move_to_end(key)
        while len(store) > size:
            store.popitem(last=False)

    def __call__(self, images, return_tensors: str = "pt", **kwargs):
        pixels, grids = [], []
        for image in images:
            key = self._key(image)
            if key not in self.processed:
                out = self.inner(images=[image], return_tensors=return_tensors, **kwargs)
                self._remember(self.processed, key, (out["pixel_values"], out["image_grid_thw"]), self.size)
            self.order.append(key)
            pixel, grid = self.processed[key]
            pixels.append(pixel)
            grids.append(grid)
        return {"pixel_values": torch.cat(pixels), "image_grid_thw": torch.cat(grids)}

    def build(self, requests: list[Request], device) -> tuple:
        """(ModelInputs, features {"image": [n, D], and any per-token output the family adds, e.g. DeepStack
        levels}) of a batch, encoding only images not seen recently."""
        self.order = []
        inputs = self.prompts.collate(requests).to(device)
        if inputs.pixel_values is None:
            return inputs, {}
        missing = list(dict.fromkeys(k for k in self.order if k not in self.features))
        if missing:
            pixels = torch.cat([self.processed[k][0] for k in missing]).to(device)
            grids = torch.cat([self.processed[k][1] for k in missing]).to(device)
            encoded = self.adapter.encode_vision(replace(inputs, pixel_values=pixels, image_grid_thw=grids))
            counts = [int(g.prod()) // self.merge_size**2 for g in grids]
            parts = {name: value.split(counts) for name, value in encoded.items()}
            for index, key in enumerate(missing):
                self._remember(self.features, key, {name: split[index] for name, split in parts.items()}, self.size)
        names = self.features[self.order[0]].keys()
        return inputs, {name: torch.cat([self.features[k][name] for k in self.order]) for name in names}


def calibration_layer(adapter: ModelAdapter, layer: int | None) -> int:
    """The layer to calibrate (None: the adapter's scoring layer), refused early if it does not exist or has no
    attention heads to ablate (a hybrid model's linear-attention layers)."""
    layer = adapter.default_scoring_layer if layer is None else layer
    if not 0 <= layer < adapter.num_layers:
        raise UsageError(
            f"must be in [0, {adapter.num_layers - 1}] for this model, got {layer}",
            f"Use {{layer=}}{adapter.default_scoring_layer} (the layer HAWK scores at)",
            setting="layer",
        )
    adapter.head_output_projection(layer)
    return layer


def calibrate(
    session, data: CalibrationData, settings: CalibrationSettings, progress: Callable[[int], None] | None = None
) -> CalibrationResult:
    """Head importance of `settings.layer` of the session's model on `data`; `progress(n)` after each batch."""
    adapter: ModelAdapter = session.adapter
    layer = calibration_layer(adapter, settings.layer)
    share = settings.share_prefixes and adapter.masking_equals_dropping
    if settings.method == "ablation":
        data.require_answers()
    started = time.perf_counter()
    samples = data.samples
    end_id = adapter.tokens.im_end
    all_drops, all_base = [], []
    vision = VisionCache(adapter, session.tokenizer, session.loaded.image_processor)
    with torch.inference_mode():
        for start in range(0, len(samples), settings.batch_size):
            batch: list[CalibrationSample] = samples[start : start + settings.batch_size]
            requests = [Request(question=s.question, images=s.images()) for s in batch]
            inputs, features = vision.build(requests, session.loaded.device)
            prefill = adapter.build_prefill(inputs, features)
            targets = (
                [answer_tokens(session.tokenizer, s.answer, end_id) for s in batch]
                if settings.method == "ablation"
                else None
            )
            drops, base = sample_drops(
                adapter,
                prefill,
                layer,
                settings.method,
                targets,
                session.eos_ids,
                settings.max_new_tokens,
                settings.heads_per_pass,
                share,
            )
            all_drops.append(drops.cpu())
            all_base.append(base.cpu())
            if progress is not None:
                progress(len(batch))
    drops, base = torch.cat(all_drops), torch.cat(all_base)
    subsets = list(dict.fromkeys(s.subset for s in samples))
    members = {name: torch.tensor([s.subset == name for s in samples]) for name in subsets}
    subset_drops = torch.stack([drops[members[name]].mean(dim=0) for name in subsets])
    baseline = {name: float(base[members[name]].mean()) for name in subsets} if settings.method == "ablation" else {}
    return CalibrationResult(
        importance=eq3(subset_drops),
        subset_drops=subset_drops,
        subsets=subsets,
        counts={name: int(members[name].sum()) for name in subsets},
        baseline=baseline,
        seconds=time.perf_counter() - started,
        layer=layer,
    )
