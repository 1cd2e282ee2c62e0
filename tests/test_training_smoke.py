"""The built-in model's training script: its fast paths equal the stock model, and a few CPU steps run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "training"))

import train_builtin as T  # noqa: E402

from hawk_cli.adapters.qwen2_vl.prompts import build_inputs  # noqa: E402
from hawk_cli.io.requests import Request  # noqa: E402
from hawk_cli.synthetic import scenes as S  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = T.build_model(seed=0).eval()
    layout = T.Layout()
    questions = S.heldout_set(4)[:1] + S.calibration_set(2)[:1]
    return model, layout, questions


def _stock_inputs(layout, questions):
    return build_inputs(layout.tok, T.image_processor(), [Request(q.question, images=(q.image,)) for q in questions])


def test_layout_equals_build_inputs_and_rope_index(setup):
    model, layout, questions = setup
    inputs = _stock_inputs(layout, questions)
    stock_pos, _ = model.model.get_rope_index(
        inputs.input_ids,
        inputs.mm_token_type_ids,
        image_grid_thw=inputs.image_grid_thw,
        attention_mask=inputs.attention_mask,
    )
    fast_pos = layout.positions()
    for i, q in enumerate(questions):
        row, answer_pos = layout.encode(q.question, q.answer)
        real = inputs.attention_mask[i].bool()
        stock_ids = inputs.input_ids[i][real].numpy()
        assert np.array_equal(row[: answer_pos + 1], stock_ids)
        assert row[answer_pos + 1] == layout.vocab[q.answer]
        assert torch.equal(fast_pos[:, : answer_pos + 1], stock_pos[:, i][:, real])


def test_fast_pixels_and_vision_equal_stock(setup):
    model, layout, questions = setup
    inputs = _stock_inputs(layout, questions)
    images = torch.from_numpy(np.stack([np.asarray(q.image) for q in questions]))
    fast = T.FastVision(model.model.visual, torch.device("cpu"))
    # Pixel values: the fast normalisation in the processor's patch layout.
    x = fast.normalize(images)  # (B, 3, 448, 448)
    b, p, m = x.shape[0], 14, 2
    g = 448 // p // m
    patches = x[:, None].expand(b, 2, 3, 448, 448).reshape(b, 2, 3, g, m, p, g, m, p)
    patches = patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(b * g * g * m * m, -1)
    assert (patches - inputs.pixel_values).abs().max() < 1e-5
    with torch.no_grad():
        stock = model.model.get_image_features(inputs.pixel_values, inputs.image_grid_thw).pooler_output
        stock = torch.stack(list(stock))
        ours = fast(images)
    assert ours.shape == stock.shape == (len(questions), 256, 256)
    scale = stock.abs().max()
    assert (ours - stock).abs().max() <= 1e-4 * scale


def test_fast_logits_equal_stock_forward(setup):
    model, layout, questions = setup
    inputs = _stock_inputs(layout, questions)
    images = torch.from_numpy(np.stack([np.asarray(q.image) for q in questions]))
    rows, apos = zip(*(layout.encode(q.question, q.answer) for q in questions), strict=True)
    ids = torch.from_numpy(np.stack(rows))
    apos = torch.tensor(apos)
    with torch.no_grad():
        fast = T.FastVision(model.model.visual, torch.device("cpu"))
        ours = T.lm_logits(model, layout, ids, layout.positions(), fast(images), apos, per_image=1)[:, 0]
        stock = model(
            input_ids=inputs.input_ids,
            attention_mask=inputs.attention_mask,
            mm_token_type_ids=inputs.mm_token_type_ids,
            pixel_values=inputs.pixel_values,
            image_grid_thw=inputs.image_grid_thw,
        ).logits[:, -1]
    assert (ours - stock).abs().max() < 1e-4


def test_hidden_visual_tokens_give_the_logits_of_the_pruned_sequence(setup):
    """Fine-tuning with simulated pruning hides dropped visual tokens from attention at their original positions;
    that must equal running the stock decoder on the kept tokens alone (what hawk feeds the model)."""
    model, layout, questions = setup
    images = torch.from_numpy(np.stack([np.asarray(q.image) for q in questions[:1]]))
    row, answer_pos = layout.encode(questions[0].question, questions[0].answer)
    ids, apos = torch.from_numpy(row[None]), torch.tensor([answer_pos])
    keep = torch.zeros(1, T.N_VISUAL, dtype=torch.bool)
    keep[0, torch.randperm(T.N_VISUAL, generator=torch.Generator().manual_seed(0))[:52]] = True
    lm = model.model.language_model
    with torch.no_grad():
        feats = T.FastVision(model.model.visual, torch.device("cpu"))(images)
        ours = T.lm_logits(model, layout, ids, layout.positions(), feats, apos, 1, visual_keep=keep)[:, 0]
        unpruned = T.lm_logits(model, layout, ids, layout.positions(), feats, apos, 1)[:, 0]
        emb = lm.embed_tokens(ids)
        emb = torch.cat([emb[:, : layout.image_start], feats.to(emb.dtype), emb[:, layout.text_start :]], dim=1)
        kept = torch.ones(ids.shape[1], dtype=torch.bool)
        kept[layout.image_start : layout.text_start] = keep[0]
        positions = layout.positions()[:, kept]
        hidden = lm(inputs_embeds=emb[:, kept], position_ids=positions[:, None, :].expand(3, 1, -1)).last_hidden_state
        pruned = model.lm_head(hidden[:, int(kept[: answer_pos + 1].sum()) - 1])
    assert (ours - pruned).abs().max() < 1e-4
    assert (unpruned - pruned).abs().max() > 1e-3  # negative control: the hidden tokens did matter


def test_simulated_pruning_keeps_all_or_drops_a_share_within_the_range():
    features = torch.randn(8, T.N_VISUAL, 16)
    keep = T.sample_visual_keep(features, 4, 0.9, torch.Generator().manual_seed(0), norm_share=1.0)
    kept = keep.sum(dim=1)
    assert keep.shape == (32, T.N_VISUAL)
    assert all(k == T.N_VISUAL or 26 <= k <= 180 for k in kept.tolist())  # ratio 0, or 0.3-0.9 removed
    assert (kept == T.N_VISUAL).any() and (kept < T.N_VISUAL).any()
    row = int((kept < T.N_VISUAL).nonzero()[0])
    norms = features.norm(dim=-1)[row // 4]
    assert norms[keep[row]].min() >= norms[~keep[row]].max()  # norm_share 1: the lowest norms are the ones dropped


def test_smoke_training_run(tmp_path):
    out = tmp_path / "smoke"
    proc = subprocess.run(
        [sys.executable, str(REPO / "training" / "train_builtin.py"), "--smoke", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == 3 and results["skipped_steps"] == 0
    assert "loss nan" not in proc.stdout and "non-finite" not in proc.stdout
    assert (out / "model" / "model.safetensors").stat().st_size <= 12_000_000
