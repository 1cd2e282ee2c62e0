"""The shipped built-in model: loads offline with stock classes and answers the synthetic questions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hawk_cli.adapters.qwen2_vl.prompts import build_inputs
from hawk_cli.builtin import BUILTIN_DIR
from hawk_cli.io.requests import Request

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_images"
SUBSET = 200  # the first 200 questions of heldout_set(): 50 fixed held-out scenes


@pytest.fixture(scope="module")
def stock():
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration
    from transformers.models.auto.image_processing_auto import AutoImageProcessor

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(BUILTIN_DIR).eval()
    tokenizer = AutoTokenizer.from_pretrained(BUILTIN_DIR)
    processor = AutoImageProcessor.from_pretrained(BUILTIN_DIR, backend="pil")
    return model, tokenizer, processor


def _answer(stock, pairs, batch: int = 20) -> list[str]:
    """Stock `generate` (greedy, unpruned) on (image, question) pairs; a reply is the decoded new text."""
    model, tokenizer, processor = stock
    replies = []
    for start in range(0, len(pairs), batch):
        chunk = pairs[start : start + batch]
        inputs = build_inputs(tokenizer, processor, [Request(q, images=(im,)) for im, q in chunk])
        with torch.no_grad():
            out = model.generate(
                input_ids=inputs.input_ids,
                attention_mask=inputs.attention_mask,
                mm_token_type_ids=inputs.mm_token_type_ids,
                pixel_values=inputs.pixel_values,
                image_grid_thw=inputs.image_grid_thw,
                max_new_tokens=3,
                do_sample=False,
            )
        for row in out[:, inputs.input_ids.shape[1] :]:
            replies.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return replies


def test_folder_is_a_small_plain_hf_model():
    weights = BUILTIN_DIR / "model.safetensors"
    assert weights.stat().st_size <= 12_000_000
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        keys = list(f.keys())
        assert all(f.get_slice(k).get_dtype() == "BF16" for k in keys)
    assert not any("probe" in k for k in keys)  # the training-only probe is not shipped
    config = json.loads((BUILTIN_DIR / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl" and config["dtype"] == "float32"
    for name in (
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "preprocessor_config.json",
        "training_info.json",
        "MODEL_CARD.md",
    ):
        assert (BUILTIN_DIR / name).is_file(), name


def test_loads_offline_in_a_fresh_process(tmp_path):
    code = (
        "import time; t = time.time()\n"
        "from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration\n"
        "from transformers.models.auto.image_processing_auto import AutoImageProcessor\n"
        "from hawk_cli.builtin import BUILTIN_DIR\n"
        "m = Qwen2_5_VLForConditionalGeneration.from_pretrained(BUILTIN_DIR)\n"
        "t = AutoTokenizer.from_pretrained(BUILTIN_DIR)\n"
        "p = AutoImageProcessor.from_pretrained(BUILTIN_DIR, backend='pil')\n"
        "print(m.dtype, len(t), type(p).__name__)\n"
    )
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(REPO)
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "torch.float32 68 Qwen2VLImageProcessor" in proc.stdout


def test_heldout_subset_unpruned(stock):
    from hawk_cli.synthetic.scenes import heldout_set

    questions = heldout_set(SUBSET)
    replies = _answer(stock, [(q.image, q.question) for q in questions])
    accuracy = sum(r == q.answer for r, q in zip(replies, questions, strict=True)) / len(questions)
    assert accuracy >= 0.93, accuracy


def test_sample_questions_all_right_unpruned(stock):
    from PIL import Image

    rows = [json.loads(line) for line in (SAMPLES / "questions.jsonl").read_text().splitlines() if line.strip()]
    assert len({r["image"] for r in rows}) >= 4
    pairs = [(Image.open(SAMPLES / r["image"]).convert("RGB"), r["question"]) for r in rows]
    replies = _answer(stock, pairs)
    wrong = [
        (r["image"], r["question"], r["answer"], got)
        for r, got in zip(rows, replies, strict=True)
        if got != r["answer"]
    ]
    assert not wrong
    for name in {r["image"] for r in rows}:
        assert (SAMPLES / name).stat().st_size < 150_000


def test_sample_questions_at_default_pruning(tmp_path):
    """`hawk run` at its defaults (the model's recommended pruning, keep 20 %) answers every sample question right
    (counts included: the shipped weights were fine-tuned with visual tokens removed)."""
    rows = [json.loads(line) for line in (SAMPLES / "questions.jsonl").read_text().splitlines() if line.strip()]
    requests = tmp_path / "requests.jsonl"
    requests.write_text(
        "".join(
            json.dumps({"id": str(i), "images": [str(SAMPLES / r["image"])], "question": r["question"]}) + "\n"
            for i, r in enumerate(rows)
        )
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "hawk_cli", "run", "--input", str(requests), "-b", str(len(rows))],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    answers = {int(r["id"]): r.get("answer", "").strip() for r in map(json.loads, proc.stdout.splitlines())}
    right = sum(answers.get(i) == r["answer"] for i, r in enumerate(rows))
    wrong = [(r["question"], r["answer"], answers.get(i)) for i, r in enumerate(rows) if answers.get(i) != r["answer"]]
    assert right == len(rows), wrong
