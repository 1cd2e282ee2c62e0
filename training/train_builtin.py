"""Train hawk's built-in model: a tiny stock Qwen2.5-VL on the synthetic scenes of `hawk_cli.synthetic.scenes`.

Run on a GPU (the figures in docs/builtin-model.md came from one H200):

    python3 training/train_builtin.py --out OUT_DIR --steps 4400 --device cuda

and on a CPU as a smoke test (a few tiny steps, used by tests/test_training_smoke.py):

    python training/train_builtin.py --smoke --out /tmp/smoke

The model is a stock `Qwen2_5_VLForConditionalGeneration` built from a config. Training uses fast paths that are
equal to the stock model (tests check them on a CPU): a batched vision tower (windows as a batch dimension), a fixed
right-padded prompt layout with explicit mRoPE positions, and the LM head applied only at the answer positions. A
training-only linear probe on the merged visual tokens adds a dense per-token loss (kind, colour, digit); it is
discarded at save. The saved weights are rounded to bf16 and evaluated in fp32 from the saved folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import queue
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from hawk_cli.synthetic import scenes as S  # noqa: E402
from hawk_cli.synthetic.tokenizer import build_word_tokenizer  # noqa: E402

IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP, as Qwen2VLImageProcessor
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
N_VISUAL = S.GRID * S.GRID  # 256 merged tokens per 448x448 image
MAX_QUESTION_WORDS = 8
N_PROBE = (len(S.OBJECT_KINDS) + 1, len(S.COLORS) + 1, 10)  # kind (+bg), colour (+bg), digit


# ---------------------------------------------------------------------------------------------- model


def build_config():
    from transformers import Qwen2_5_VLConfig

    tok = build_word_tokenizer()
    ids = {
        t: tok.convert_tokens_to_ids(t)
        for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|im_end|>", "<|endoftext|>")
    }
    vision = dict(
        depth=4,
        hidden_size=192,
        intermediate_size=512,
        num_heads=4,
        window_size=112,
        fullatt_block_indexes=[1, 3],
        patch_size=14,
        temporal_patch_size=2,
        spatial_merge_size=2,
        out_hidden_size=256,
        in_channels=3,
        hidden_act="silu",
    )
    text = dict(
        vocab_size=len(tok),
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [4, 6, 6]},
        rms_norm_eps=1e-6,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=False,
    )
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    config._attn_implementation = "sdpa"
    return config


def build_model(seed: int = 0):
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    config = build_config()
    model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.float32, attn_implementation="sdpa")
    return model


def save_processor_files(directory: Path) -> None:
    """Tokenizer, chat template, image processor and generation config beside the weights."""
    from transformers import GenerationConfig, Qwen2VLImageProcessorPil

    tok = build_word_tokenizer()
    tok.save_pretrained(directory)
    image_processor().save_pretrained(directory)
    GenerationConfig(
        do_sample=False,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.pad_token_id,
        max_new_tokens=4,
    ).save_pretrained(directory)
    del Qwen2VLImageProcessorPil


def image_processor():
    from transformers import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(size={"shortest_edge": 56 * 56, "longest_edge": 448 * 448})


# ---------------------------------------------------------------------------------------------- layout


class Layout:
    """The stock prompt layout of one 448x448 image and a question, right padded to a fixed length.

    Row: 12 prefix tokens (system turn, user header, <|vision_start|>), 256 <|image_pad|>, <|vision_end|>,
    the question (<= 8 words), <|im_end|> <|im_start|> assistant, then the answer word (teacher forcing).
    The logits at `assistant` predict the answer, the logits at the answer predict <|im_end|>.
    """

    def __init__(self, tokenizer=None):
        tok = tokenizer or build_word_tokenizer()
        self.tok = tok
        self.vocab = tok.get_vocab()
        marker = "QUESTIONMARK"
        text = tok.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": marker}]}],
            add_generation_prompt=True,
            tokenize=False,
        )
        before, after = text.split(marker)
        pre_ids = tok(before, add_special_tokens=False)["input_ids"]
        self.suffix = tok(after, add_special_tokens=False)["input_ids"]
        image_id = self.vocab["<|image_pad|>"]
        start = pre_ids.index(image_id)
        self.prefix = pre_ids[:start]
        self.vision_end = pre_ids[start + 1 :]
        self.image_start = len(self.prefix)
        self.text_start = self.image_start + N_VISUAL
        self.length = self.text_start + len(self.vision_end) + MAX_QUESTION_WORDS + len(self.suffix) + 1
        self.im_end = self.vocab["<|im_end|>"]
        self.pad = tok.pad_token_id
        self.image_id = image_id
        self.answer_ids = {a: self.vocab[a] for a in S.ANSWERS}

    def encode(self, question: str, answer: str) -> tuple[np.ndarray, int]:
        words = question.lower().split()
        assert len(words) <= MAX_QUESTION_WORDS, question
        ids = self.prefix + [self.image_id] * N_VISUAL + self.vision_end + [self.vocab[w] for w in words] + self.suffix
        answer_pos = len(ids) - 1
        ids = ids + [self.vocab[answer]]
        row = np.full(self.length, self.pad, dtype=np.int64)
        row[: len(ids)] = ids
        return row, answer_pos

    def positions(self) -> torch.Tensor:
        """(3, length) mRoPE ids: text sequential, image (s, s+r, s+c), text after the image resumes at s+16."""
        pos = np.zeros((3, self.length), dtype=np.int64)
        s = self.image_start
        pos[:, :s] = np.arange(s)
        r, c = np.divmod(np.arange(N_VISUAL), S.GRID)
        pos[0, s : self.text_start] = s
        pos[1, s : self.text_start] = s + r
        pos[2, s : self.text_start] = s + c
        pos[:, self.text_start :] = s + S.GRID + np.arange(self.length - self.text_start)
        return torch.from_numpy(pos)


# ---------------------------------------------------------------------------------------------- fast paths


class FastVision:
    """Batched re-run of the stock vision tower's own modules for B equal 448x448 images (uint8 NHWC).

    Equal to `model.get_image_features` on the processor's pixel values: the patch embedding runs as a 2D
    convolution with the two (identical) temporal frames' kernels summed, windows become a batch dimension.
    """

    def __init__(self, visual, device):
        from transformers.vision_utils import get_vision_position_ids, get_vision_window_index

        self.visual = visual
        cfg = visual.config
        self.patch, self.merge = cfg.patch_size, cfg.spatial_merge_size
        side = S.IMAGE_SIZE // self.patch  # 32 patches
        grid = torch.tensor([[1, side, side]])
        window_index, cu = get_vision_window_index(grid, self.merge, cfg.window_size, self.patch)
        unit = self.merge**2
        self.window_tokens = int(cu[1] - cu[0])  # patches per window (64)
        self.perm = (window_index[:, None] * unit + torch.arange(unit)).flatten().to(device)
        self.reverse = torch.argsort(window_index).to(device)
        pos = get_vision_position_ids(grid, self.merge).float()  # (1024, 2) block-major h, w
        inv_freq = visual.rotary_pos_emb.inv_freq.float().cpu()
        freqs = pos[:, :, None] * inv_freq  # (N, 2, F)
        emb = torch.cat([freqs[:, 0], freqs[:, 1]], dim=-1)
        emb = torch.cat([emb, emb], dim=-1)[self.perm.cpu()]
        self.cos = emb.cos()[None, :, None, :].to(device)  # (1, N, 1, head_dim)
        self.sin = emb.sin()[None, :, None, :].to(device)
        self.mean = torch.tensor(IMAGE_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGE_STD, device=device).view(1, 3, 1, 1)
        self.full = set(cfg.fullatt_block_indexes)

    def normalize(self, images_u8: torch.Tensor) -> torch.Tensor:
        x = images_u8.permute(0, 3, 1, 2).float() * (1.0 / 255.0)
        return (x - self.mean) / self.std

    def __call__(self, images_u8: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = self.normalize(images_u8)
        b = x.shape[0]
        w = v.patch_embed.proj.weight  # (D, C, T, P, P)
        x = F.conv2d(x.to(w.dtype), w.sum(dim=2), stride=self.patch)  # (B, D, 32, 32)
        d, g = x.shape[1], x.shape[2] // self.merge
        x = x.view(b, d, g, self.merge, g, self.merge).permute(0, 2, 4, 3, 5, 1).reshape(b, -1, d)
        x = x[:, self.perm]
        n = x.shape[1]
        for index, blk in enumerate(v.blocks):
            attn = blk.attn
            h = blk.norm1(x)
            qkv = attn.qkv(h).view(b, n, 3, attn.num_heads, -1)
            q, k, val = qkv.unbind(2)
            dtype = q.dtype
            qf, kf = q.float(), k.float()
            q = (qf * self.cos + _rotate_half(qf) * self.sin).to(dtype)
            k = (kf * self.cos + _rotate_half(kf) * self.sin).to(dtype)
            shape = (b, n) if index in self.full else (b * (n // self.window_tokens), self.window_tokens)
            q, k, val = (t.reshape(*shape, attn.num_heads, -1).transpose(1, 2) for t in (q, k, val))
            out = F.scaled_dot_product_attention(q, k, val, scale=attn.scaling)
            out = out.transpose(1, 2).reshape(b, n, -1)
            x = x + attn.proj(out)
            x = x + blk.mlp(blk.norm2(x))
        merged = v.merger(x.reshape(b * n, -1)).view(b, n // self.merge**2, -1)
        return merged[:, self.reverse]


def _rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def lm_logits(
    model,
    layout: Layout,
    ids: torch.Tensor,
    positions: torch.Tensor,
    features: torch.Tensor,
    answer_pos: torch.Tensor,
    per_image: int,
    visual_keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits at the answer position and the next one: (N, 2, vocab). `features` is (B, 256, hidden).

    `visual_keep` (N, 256) bool hides the dropped visual tokens from attention. With the original positions kept,
    that is what pruning them does: no later token sees them, and the answer positions never depend on their rows.
    """
    lm = model.model.language_model
    emb = lm.embed_tokens(ids)
    feats = features.to(emb.dtype).repeat_interleave(per_image, dim=0)
    emb = torch.cat([emb[:, : layout.image_start], feats, emb[:, layout.text_start :]], dim=1)
    n = ids.shape[0]
    mask = None
    if visual_keep is not None:
        mask = torch.ones(ids.shape, dtype=torch.long, device=ids.device)
        mask[:, layout.image_start : layout.text_start] = visual_keep.long()
    out = lm(
        inputs_embeds=emb, position_ids=positions[:, None, :].expand(3, n, -1), attention_mask=mask, use_cache=False
    )
    hidden = out.last_hidden_state
    idx = torch.stack([answer_pos, answer_pos + 1], dim=1)
    picked = hidden.gather(1, idx[:, :, None].expand(-1, -1, hidden.shape[-1]))
    return model.lm_head(picked)


def sample_visual_keep(
    features: torch.Tensor,
    per_image: int,
    max_ratio: float,
    generator: torch.Generator,
    norm_share: float = 0.5,
) -> torch.Tensor:
    """Per question row, which visual tokens survive a simulated pruning: a quarter of the rows keep all, the rest
    drop a fraction drawn uniformly from [0.3, max_ratio], chosen at random or (a `norm_share` of the time) the
    lowest feature norms, as hawk's `norm` scorer would. Teaches the model to answer (and count) from what pruning
    leaves."""
    rows = features.shape[0] * per_image
    norms = features.detach().float().norm(dim=-1).repeat_interleave(per_image, dim=0).cpu()  # (rows, 256)
    noise = torch.rand(rows, N_VISUAL, generator=generator)
    by_norm = torch.rand(rows, generator=generator) < norm_share
    order = torch.where(by_norm[:, None], norms, noise).argsort(dim=1, descending=True)
    ratio = 0.3 + (max_ratio - 0.3) * torch.rand(rows, generator=generator)
    ratio[torch.rand(rows, generator=generator) < 0.25] = 0.0
    kept = torch.clamp(torch.ceil(N_VISUAL * (1 - ratio)), min=1).long()
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(N_VISUAL).expand(rows, -1).contiguous())
    return (rank < kept[:, None]).to(features.device)


# ---------------------------------------------------------------------------------------------- data


SUB_BATCH = 16


def make_sub_batch(layout: Layout, worker: int, counter: int, n_images: int, per_image: int):
    images = np.empty((n_images, S.IMAGE_SIZE, S.IMAGE_SIZE, 3), dtype=np.uint8)
    ids = np.empty((n_images * per_image, layout.length), dtype=np.int64)
    answer_pos = np.empty(n_images * per_image, dtype=np.int64)
    labels = np.empty((n_images, 3, N_VISUAL), dtype=np.int64)
    kinds = []
    for i in range(n_images):
        scene, specs = S.training_scene(worker, counter * n_images + i, per_image)
        images[i] = scene.pixels
        labels[i] = scene.labels.reshape(3, -1)
        for j, spec in enumerate(specs):
            ids[i * per_image + j], answer_pos[i * per_image + j] = layout.encode(spec.question, spec.answer)
            kinds.append(spec.kind)
    return images, ids, answer_pos, labels, kinds


def _worker_main(worker, slots, free_q, out_q, n_images, per_image):
    torch.set_num_threads(1)
    layout = Layout()
    counter = 0
    while True:
        slot = free_q.get()
        if slot is None:
            return
        images, ids, answer_pos, labels, kinds = make_sub_batch(layout, worker, counter, n_images, per_image)
        slots[slot].numpy()[:] = images
        out_q.put((worker, slot, ids, answer_pos, labels, kinds))
        counter += 1


class DataPipe:
    """Fork workers that render sub-batches into shared-memory slots; only small metadata goes through queues."""

    def __init__(self, n_workers: int, n_images: int, per_image: int, slots_per_worker: int = 3):
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        self.out_q = ctx.Queue()
        self.workers, self.free_qs, self.slots = [], [], []
        for w in range(n_workers):
            slots = [
                torch.empty((n_images, S.IMAGE_SIZE, S.IMAGE_SIZE, 3), dtype=torch.uint8).share_memory_()
                for _ in range(slots_per_worker)
            ]
            free_q = ctx.Queue()
            for s in range(slots_per_worker):
                free_q.put(s)
            p = ctx.Process(target=_worker_main, args=(w, slots, free_q, self.out_q, n_images, per_image), daemon=True)
            p.start()
            self.workers.append(p)
            self.free_qs.append(free_q)
            self.slots.append(slots)
        self.wait_s = 0.0  # prefetch thread waiting on workers
        self.step_wait_s = 0.0  # training loop waiting on the prefetch thread (the GPU starved)

    def get_host(self, out: torch.Tensor | None = None):
        """One sub-batch; its images are copied out of the shared slot (into `out` when given), which then goes
        back to its worker."""
        t = time.perf_counter()
        worker, slot, ids, answer_pos, labels, kinds = self.out_q.get(timeout=300)
        self.wait_s += time.perf_counter() - t
        images = self.slots[worker][slot].clone() if out is None else out.copy_(self.slots[worker][slot])
        self.free_qs[worker].put(slot)
        return images, torch.from_numpy(ids), torch.from_numpy(answer_pos), torch.from_numpy(labels), kinds

    def start_prefetch(self, parts: int, pin: bool, depth: int = 3):
        """A thread joins `parts` sub-batches into one step's batch (pinned when `pin`), `depth` steps ahead."""
        self.batches: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        sub = self.slots[0][0].shape[0]
        # depth queued + one being filled + one in use by the training step: never overwritten while copied.
        pool = [
            torch.empty((parts * sub, S.IMAGE_SIZE, S.IMAGE_SIZE, 3), dtype=torch.uint8, pin_memory=pin)
            for _ in range(depth + 2)
        ]

        def run():
            n = 0
            while not self.stop.is_set():
                buf = pool[n % len(pool)]
                items = [self.get_host(buf[i * sub : (i + 1) * sub]) for i in range(parts)]
                batch = [buf] + [torch.cat([item[k] for item in items]) for k in range(1, 4)]
                if pin:
                    batch = [batch[0]] + [t.pin_memory() for t in batch[1:]]
                self.batches.put(batch)
                n += 1

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def next_batch(self, device):
        t = time.perf_counter()
        batch = self.batches.get(timeout=300)
        self.step_wait_s += time.perf_counter() - t
        return [b.to(device, non_blocking=True) for b in batch]

    def close(self):
        if getattr(self, "stop", None) is not None:
            self.stop.set()
        for q in self.free_qs:
            q.put(None)
        for p in self.workers:  # workers may sit blocked on a full queue: do not wait for them
            p.join(timeout=0.05)
            if p.is_alive():
                p.terminate()


# ---------------------------------------------------------------------------------------------- evaluation


def prepare_eval(layout: Layout, questions):
    """Group questions by image (in order) into uint8 images, ids, answer positions."""
    groups: list[list[int]] = []
    for i, q in enumerate(questions):
        if groups and questions[groups[-1][0]].image is q.image:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


@torch.no_grad()
def evaluate_fast(
    model, layout: Layout, questions, device, batch_images: int = 64, autocast: bool = False, norm_ratio: float = 0.0
):
    """Greedy one-word answers at the answer position (plus <|im_end|> next) through the fast paths; with
    `norm_ratio`, after removing that fraction of each image's visual tokens, the lowest feature norms first (the
    built-in model's recommended pruning, ceil(256 * (1 - ratio)) kept)."""
    model.eval()
    fast = FastVision(model.model.visual, device)
    positions = layout.positions().to(device)
    inv_vocab = {v: k for k, v in layout.vocab.items()}
    groups = prepare_eval(layout, questions)
    preds: list[str] = [""] * len(questions)
    ok = np.zeros(len(questions), dtype=bool)
    for start in range(0, len(groups), batch_images):
        chunk = groups[start : start + batch_images]
        # Equal question counts per image let the features repeat; evaluate each image's questions as slots.
        per_image = max(len(g) for g in chunk)
        images = torch.from_numpy(np.stack([np.asarray(questions[g[0]].image, dtype=np.uint8) for g in chunk]))
        rows, pos_list, index = [], [], []
        for g in chunk:
            for j in range(per_image):
                qi = g[min(j, len(g) - 1)]
                row, apos = layout.encode(questions[qi].question, questions[qi].answer)
                rows.append(row)
                pos_list.append(apos)
                index.append(qi if j < len(g) else -1)
        ids = torch.from_numpy(np.stack(rows)).to(device)
        apos = torch.tensor(pos_list, device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            feats = fast(images.to(device))
            keep = None
            if norm_ratio > 0:
                kept = max(1, math.ceil(N_VISUAL * (1 - norm_ratio)))
                top = feats.float().norm(dim=-1).topk(kept, dim=1).indices
                keep = torch.zeros(feats.shape[:2], dtype=torch.bool, device=device).scatter_(1, top, True)
                keep = keep.repeat_interleave(per_image, dim=0)
            logits = lm_logits(model, layout, ids, positions, feats, apos, per_image, keep).float()
        first = logits[:, 0].argmax(-1).cpu().numpy()
        second = logits[:, 1].argmax(-1).cpu().numpy()
        for r, qi in enumerate(index):
            if qi < 0:
                continue
            preds[qi] = inv_vocab[int(first[r])]
            ok[qi] = preds[qi] == questions[qi].answer and int(second[r]) == layout.im_end
    return preds, ok


def summarize(questions, ok) -> dict:
    out = {"n": len(questions), "all": round(100.0 * float(np.mean(ok)), 2)}
    kinds = np.array([q.kind for q in questions])
    for kind in S.QUESTION_KINDS:
        sel = kinds == kind
        out[kind] = round(100.0 * float(np.mean(ok[sel])), 2) if sel.any() else None
        out[f"n_{kind}"] = int(sel.sum())
    single = kinds != "count"
    out["single_object"] = round(100.0 * float(np.mean(ok[single])), 2)
    return out


@torch.no_grad()
def evaluate_generate(model, questions, device, batch: int = 50) -> list[tuple[str, bool]]:
    """Stock path: build_inputs (left padding) + `generate(max_new_tokens=3)`.

    Returns per question the first generated word and whether the answer is exactly that word then <|im_end|>.
    """
    from hawk_cli.adapters.qwen2_vl.prompts import build_inputs
    from hawk_cli.io.requests import Request

    tok = build_word_tokenizer()
    proc = image_processor()
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    answers = []
    model.eval()
    for start in range(0, len(questions), batch):
        chunk = questions[start : start + batch]
        inputs = build_inputs(tok, proc, [Request(q.question, images=(q.image,)) for q in chunk]).to(device)
        out = model.generate(
            input_ids=inputs.input_ids,
            attention_mask=inputs.attention_mask,
            mm_token_type_ids=inputs.mm_token_type_ids,
            pixel_values=inputs.pixel_values,
            image_grid_thw=inputs.image_grid_thw,
            max_new_tokens=3,
            do_sample=False,
        )
        new = out[:, inputs.input_ids.shape[1] :].cpu()
        for row, q in zip(new, chunk, strict=True):
            first = tok.convert_ids_to_tokens(int(row[0]))
            ended = len(row) > 1 and int(row[1]) == im_end
            answers.append((first, first == q.answer and ended))
    return answers


# ---------------------------------------------------------------------------------------------- training


def lr_at(step: int, total: int, peak: float, warmup: int, floor: float = 0.05) -> float:
    warm = min(1.0, (step + 1) / warmup)
    progress = min(1.0, step / max(1, total))
    return peak * warm * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def param_groups(model, probe, weight_decay: float):
    decay, no_decay = [], []
    for name, p in list(model.named_parameters()) + [("probe." + n, p) for n, p in probe.named_parameters()]:
        if p.ndim >= 2 and "embed_tokens" not in name:
            decay.append(p)
        else:
            no_decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="output folder (the saved model goes to OUT/model)")
    ap.add_argument("--steps", type=int, default=4400)
    ap.add_argument("--seed", type=int, default=0, help="model init seed")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--images", type=int, default=96, help="images per step")
    ap.add_argument("--questions", type=int, default=4, help="questions per image")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--aux", type=float, default=0.5, help="weight of the dense probe loss")
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    ap.add_argument(
        "--max-train-seconds",
        type=float,
        default=0.0,
        help="safety valve: if the measured pace cannot finish --steps in this time, shorten the schedule "
        "once (at step 300) to fit; 0 = off",
    )
    ap.add_argument("--eval-every", type=int, default=1000)
    ap.add_argument("--heldout", type=int, default=2000)
    ap.add_argument("--generate-check", type=int, default=200, help="held-out questions also run by stock generate")
    ap.add_argument("--max-skips", type=int, default=200)
    ap.add_argument("--smoke", action="store_true", help="tiny CPU run: 3 steps, 2 images x 4 questions")
    ap.add_argument("--init", type=Path, help="start from a saved model folder (fine-tuning) instead of a new model")
    ap.add_argument(
        "--token-drop",
        type=float,
        default=0.0,
        help="largest fraction of visual tokens hidden per question row (simulated pruning, see sample_visual_keep); "
        "0 = off",
    )
    ap.add_argument(
        "--norm-share",
        type=float,
        default=0.5,
        help="share of the pruned rows whose hidden tokens are the lowest feature norms (the rest: random)",
    )
    ap.add_argument(
        "--freeze-vision",
        action="store_true",
        help="train the language model only (the vision tower and its features fixed; no probe loss)",
    )
    ap.add_argument("--eval-ratio", type=float, default=0.8, help="also evaluate after norm pruning at this ratio")
    args = ap.parse_args(argv)
    if args.smoke:
        args.steps, args.images, args.workers, args.warmup = 3, 2, 1, 2
        args.heldout, args.generate_check, args.eval_every = 8, 4, 0
        args.device = "cpu"

    t_start = time.time()
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    args.out.mkdir(parents=True, exist_ok=True)
    layout = Layout()
    assert args.images % SUB_BATCH == 0 or args.images < SUB_BATCH
    sub = min(SUB_BATCH, args.images)
    pipe = DataPipe(args.workers, sub, args.questions)

    if args.init:
        from transformers import Qwen2_5_VLForConditionalGeneration

        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            args.init, dtype=torch.float32, attn_implementation="sdpa"
        ).to(device)
    else:
        model = build_model(args.seed).to(device)
    drop_generator = torch.Generator().manual_seed(args.seed + 1)
    if args.freeze_vision:
        model.model.visual.requires_grad_(False)
    n_params = sum(p.numel() for p in model.parameters())
    probe = torch.nn.Linear(model.config.text_config.hidden_size, sum(N_PROBE)).to(device)
    opt_kwargs = {"fused": True} if device.type == "cuda" else {}
    opt = torch.optim.AdamW(param_groups(model, probe, 0.05), lr=args.lr, betas=(0.9, 0.98), eps=1e-8, **opt_kwargs)
    fast = FastVision(model.model.visual, device)
    positions = layout.positions().to(device)
    params = [p for p in list(model.parameters()) + list(probe.parameters()) if p.requires_grad]
    pipe.start_prefetch(max(1, args.images // sub), pin=device.type == "cuda")
    log(f"model {n_params:,} params; layout length {layout.length}; {args.workers} data workers; device {device}")

    heldout = S.heldout_set(args.heldout)
    quick = heldout[: min(500, len(heldout))]
    log(f"held-out set ready ({len(heldout)} questions)")

    total_steps = args.steps
    skips = 0
    history = []
    t_train = time.time()
    step = 0
    t_100 = 0.0
    amp = device.type == "cuda"
    running = {"loss": 0.0, "ans": 0.0, "aux": 0.0, "acc": 0.0, "n": 0}
    while step < total_steps:
        model.train()
        images, ids, apos, labels = pipe.next_batch(device)
        lr = lr_at(step, total_steps, args.lr, args.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            with torch.set_grad_enabled(not args.freeze_vision):
                feats = fast(images)
            keep = None
            if args.token_drop:
                keep = sample_visual_keep(feats, args.questions, args.token_drop, drop_generator, args.norm_share)
            logits = lm_logits(model, layout, ids, positions, feats, apos, args.questions, keep).float()
            targets = ids.gather(1, (apos + 1)[:, None])[:, 0]
            loss_ans = F.cross_entropy(logits[:, 0], targets)
            loss_end = F.cross_entropy(logits[:, 1], torch.full_like(targets, layout.im_end))
            probe_out = probe(feats).float()
            a, b = N_PROBE[0], N_PROBE[0] + N_PROBE[1]
            aux = (
                F.cross_entropy(probe_out[..., :a].reshape(-1, a), labels[:, 0].reshape(-1))
                + F.cross_entropy(probe_out[..., a:b].reshape(-1, N_PROBE[1]), labels[:, 1].reshape(-1))
                + F.cross_entropy(
                    probe_out[..., b:].reshape(-1, N_PROBE[2]), labels[:, 2].reshape(-1), ignore_index=-100
                )
            )
            loss = loss_ans + 0.2 * loss_end + (0.0 if args.freeze_vision else args.aux) * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        if not torch.isfinite(norm):
            skips += 1
            opt.zero_grad(set_to_none=True)
            log(f"step {step}: non-finite gradient norm, step skipped ({skips} so far)")
            if skips >= args.max_skips:
                log("too many non-finite gradients: abort")
                pipe.close()
                return 2
        else:
            opt.step()
        running["loss"] += float(loss.detach()) if step % 25 == 0 or args.smoke else 0.0
        if step % 25 == 0 or args.smoke:
            running["ans"] += float(loss_ans.detach())
            running["aux"] += float(aux.detach())
            running["acc"] += float((logits[:, 0].argmax(-1) == targets).float().mean())
            running["n"] += 1
        step += 1
        elapsed = time.time() - t_train
        if step == 100:
            t_100 = elapsed
        if args.max_train_seconds and step == 300 and total_steps > 300:
            pace = (elapsed - t_100) / 200
            projected = elapsed + pace * (total_steps - step)
            if projected > args.max_train_seconds:
                new_total = step + int((args.max_train_seconds - elapsed) / pace)
                log(f"pace {pace:.3f} s/step: schedule shortened {total_steps} -> {new_total} steps")
                total_steps = new_total
        if args.max_train_seconds and elapsed > 1.06 * args.max_train_seconds and step < total_steps:
            log(f"hard stop at step {step}: {elapsed:.0f}s is past the time budget")
            total_steps = step
        if step % 100 == 0 or step == total_steps or args.smoke:
            n = max(1, running["n"])
            log(
                f"step {step}/{total_steps} lr {lr:.2e} loss {running['loss'] / n:.4f} ans {running['ans'] / n:.4f} "
                f"aux {running['aux'] / n:.4f} train-acc {running['acc'] / n:.3f} |g| {float(norm):.2f} "
                f"{elapsed:.0f}s {step * args.images / max(elapsed, 1e-9):.0f} img/s data-wait {pipe.step_wait_s:.1f}s"
            )
            if not math.isfinite(running["loss"]):
                log("non-finite loss")
            running = {k: 0.0 for k in running} | {"n": 0}
        if args.eval_every and step % args.eval_every == 0 and step < total_steps:
            _, ok = evaluate_fast(model, layout, quick, device, autocast=amp)
            summary = summarize(quick, ok)
            _, ok = evaluate_fast(model, layout, quick, device, autocast=amp, norm_ratio=args.eval_ratio)
            pruned = summarize(quick, ok)
            history.append({"step": step, "train_s": round(elapsed, 1), **summary, "pruned": pruned})
            log(f"eval@{step} (first {len(quick)} held-out, training weights): {summary}")
            log(f"  pruned (norm, ratio {args.eval_ratio}): {pruned}")
    train_s = time.time() - t_train
    pipe.close()
    log(f"training done: {step} steps in {train_s:.1f}s, {skips} skipped, data wait {pipe.step_wait_s:.1f}s")

    # Save: round to bf16, keep config dtype float32 so a plain from_pretrained loads fp32 on a CPU.
    model_dir = args.out / "model"
    model = model.float().cpu()
    state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    model.save_pretrained(model_dir, state_dict=state)
    del model, probe, opt
    # Evaluate the shipped file: reload it in fp32.
    from transformers import Qwen2_5_VLForConditionalGeneration

    shipped = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).to(device)
    t_eval = time.time()
    preds, ok = evaluate_fast(shipped, layout, heldout, device, autocast=False)
    final = summarize(heldout, ok)
    log(f"held-out (bf16 weights, fp32 eval, {len(heldout)} questions): {final}  [{time.time() - t_eval:.1f}s]")
    _, ok = evaluate_fast(shipped, layout, heldout, device, autocast=False, norm_ratio=args.eval_ratio)
    final_pruned = summarize(heldout, ok)
    log(f"held-out after norm pruning at ratio {args.eval_ratio}: {final_pruned}")
    gen_n = min(args.generate_check, len(heldout))
    t_gen = time.time()
    gen = evaluate_generate(shipped, heldout[:gen_n], device)
    agree = sum(g[0] == p for g, p in zip(gen, preds[:gen_n], strict=True))
    gen_ok = sum(g[1] for g in gen)
    log(
        f"stock generate on the first {gen_n}: {gen_ok} right, agrees with the fast path on {agree} "
        f"[{time.time() - t_gen:.1f}s]"
    )
    import transformers

    results = {
        "command": " ".join([Path(sys.argv[0]).name] + (sys.argv[1:] if argv is None else list(argv))),
        "steps": step,
        "planned_steps": args.steps,
        "images_per_step": args.images,
        "questions_per_image": args.questions,
        "peak_lr": args.lr,
        "warmup": args.warmup,
        "aux_weight": args.aux,
        "init_seed": args.seed,
        "training_stream_seed": S.TRAINING_SEED,
        "heldout_seed": S.HELDOUT_SEED,
        "generator_version": S.GENERATOR_VERSION,
        "skipped_steps": skips,
        "train_seconds": round(train_s, 1),
        "total_seconds": round(time.time() - t_start, 1),
        "data_wait_seconds": round(pipe.step_wait_s, 1),
        "images_seen": step * args.images,
        "params": n_params,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "init": str(args.init) if args.init else None,
        "token_drop": args.token_drop,
        "norm_share": args.norm_share,
        "heldout": final,
        f"heldout_norm_ratio_{args.eval_ratio}": final_pruned,
        "history": history,
        "generate_check": {"n": gen_n, "right": gen_ok, "agree_with_fast_path": agree},
        "safetensors_bytes": (model_dir / "model.safetensors").stat().st_size,
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    log(f"wrote {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
