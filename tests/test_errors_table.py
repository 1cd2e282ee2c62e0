"""Every row of docs/errors.md, run through the real CLI entry point: one line on stderr naming the problem and
the fix, the documented exit code, no traceback, nothing on stdout. The table and this list must agree."""

from __future__ import annotations

import json
import re
import shutil
import struct
import zlib
from pathlib import Path

import pytest
import torch
from tiny_models import random_image

from hawk_cli.cli.app import main
from hawk_cli.io.weights import HeadWeights, save_head_weights

DOCS = Path(__file__).resolve().parent.parent / "docs" / "errors.md"

# (id, argv with {placeholders}, exit code, message fragment)
CASES = [
    ("image-missing", ["run", "{missing}", "q ?", "-m", "{model}"], 2, "image '{missing}' does not exist"),
    ("image-folder", ["run", "{tmp}", "q ?", "-m", "{model}"], 2, "is a folder"),
    ("image-empty", ["run", "{empty}", "q ?", "-m", "{model}"], 2, "is empty (0 bytes)"),
    ("image-not-an-image", ["run", "{text}", "q ?", "-m", "{model}"], 2, "is not an image Pillow can read"),
    ("image-truncated", ["run", "{truncated}", "q ?", "-m", "{model}"], 2, "is unreadable or truncated"),
    ("image-huge", ["run", "{huge}", "q ?", "-m", "{model}"], 2, "over hawk's 50 Mpx limit"),
    ("question-empty", ["run", "{image}", "  ", "-m", "{model}"], 2, "the question is empty"),
    ("question-before-image", ["run", "what color ?", "{image}", "-m", "{model}"], 2, "the question must come last"),
    (
        "ratio-negative",
        ["run", "{image}", "q ?", "--ratio", "-0.1", "-m", "{model}"],
        2,
        "--ratio must be in [0, 1), got -0.1",
    ),
    (
        "ratio-one",
        ["run", "{image}", "q ?", "--ratio", "1.0", "-m", "{model}"],
        2,
        "--ratio must be in [0, 1), got 1.0",
    ),
    (
        "ratio-above-one",
        ["run", "{image}", "q ?", "--ratio", "1.5", "-m", "{model}"],
        2,
        "--ratio must be in [0, 1), got 1.5",
    ),
    ("ratio-not-a-number", ["run", "{image}", "q ?", "--ratio", "abc"], 2, "Invalid value for '--ratio'"),
    (
        "max-new-tokens-zero",
        ["run", "{image}", "q ?", "--max-new-tokens", "0", "-m", "{model}"],
        2,
        "--max-new-tokens must be at least 1, got 0",
    ),
    (
        "max-new-tokens-negative",
        ["run", "{image}", "q ?", "--max-new-tokens", "-3", "-m", "{model}"],
        2,
        "--max-new-tokens must be at least 1, got -3",
    ),
    ("model-path-missing", ["run", "{image}", "q ?", "-m", "{tmp}/nope"], 1, "model path '{tmp}/nope' does not exist"),
    ("folder-not-a-model", ["run", "{image}", "q ?", "-m", "{tmp}"], 1, "is not a model folder (no config.json)"),
    (
        "unsupported-family",
        ["run", "{image}", "q ?", "-m", "{llama}"],
        1,
        "model type 'llama' is not supported. "
        "Supported: qwen2_5_vl, qwen2_vl, qwen3_5, qwen3_5_moe, qwen3_vl, qwen3_vl_moe",
    ),
    ("unknown-scorer", ["run", "{image}", "q ?", "--scorer", "magic", "-m", "{model}"], 2, "unknown scorer 'magic'"),
    (
        "scoring-layer-missing",
        ["run", "{image}", "q ?", "--layer", "9", "-m", "{model}"],
        2,
        "scoring layer 9 does not exist: this model has 3 decoder layers",
    ),
    ("unknown-device", ["run", "{image}", "q ?", "--device", "tpu", "-m", "{model}"], 2, "unknown device 'tpu'"),
    ("unknown-dtype", ["run", "{image}", "q ?", "--dtype", "int8", "-m", "{model}"], 2, "unknown dtype 'int8'"),
    (
        "cuda-without-gpu",
        ["run", "{image}", "q ?", "--device", "cuda", "-m", "{model}"],
        1,
        "--device cuda was asked for but no CUDA GPU is available",
    ),
    (
        "device-and-device-map",
        ["run", "{image}", "q ?", "-m", "{model}", "--device", "cpu", "--device-map", "auto"],
        2,
        "--device and --device-map exclude each other",
    ),
    (
        "gpus-without-input",
        ["run", "{image}", "q ?", "-m", "{model}", "--gpus", "0,1"],
        2,
        "--gpus splits a JSONL file",
    ),
    (
        "gpus-with-device",
        ["run", "--input", "{bad_jsonl}", "-m", "{model}", "--gpus", "0,1", "--device", "cpu"],
        2,
        "--gpus puts one whole model on each GPU; it excludes --device and --device-map",
    ),
    (
        "weights-corrupt",
        ["run", "{image}", "q ?", "--weights", "{corrupt}", "-m", "{model}"],
        2,
        "is not a valid safetensors file",
    ),
    (
        "weights-missing",
        ["run", "{image}", "q ?", "--weights", "{missing}", "-m", "{model}"],
        2,
        "weights file '{missing}' does not exist",
    ),
    (
        "weights-wrong-head-count",
        ["run", "{image}", "q ?", "--weights", "{weights28}", "-m", "{model}"],
        2,
        "holds 28 head weights but this model's scoring layer has 4 query heads",
    ),
    (
        "weights-other-model-type",
        ["run", "{image}", "q ?", "--weights", "{weights_llava}", "-m", "{model}"],
        2,
        "was calibrated for model type 'llava', not 'qwen2_5_vl'",
    ),
    (
        "output-folder-missing",
        ["calibrate", "{data}", "-o", "{tmp}/no/such/dir/w.safetensors", "-m", "{model}"],
        1,
        "does not exist. Create it first",
    ),
    (
        "output-exists",
        ["calibrate", "{data}", "-o", "{existing}", "-m", "{model}"],
        2,
        "already exists. Pass --force to overwrite it",
    ),
    (
        "calibration-data-missing",
        ["calibrate", "{tmp}/no-data", "-o", "{tmp}/w.safetensors", "-m", "{model}"],
        2,
        "does not exist",
    ),
    (
        "calibration-jsonl-malformed",
        ["calibrate", "{bad_jsonl}", "-o", "{tmp}/w.safetensors", "-m", "{model}"],
        2,
        "line 2",
    ),
    ("eval-bad-ratio", ["eval", "--ratio", "0.5,2"], 2, "must be in [0, 1)"),
    ("bench-bad-batch", ["bench", "--batch-size", "0", "-m", "{model}"], 2, "batch"),
    # Limits (docs/errors.md, "Limits"), each checked before the work it guards.
    (
        "question-too-long",
        ["run", "{image}", "{long_question}", "-m", "{model}"],
        2,
        "the question is 100,001 characters long, over hawk's limit of 100,000",
    ),
    (
        "prompt-over-context",
        ["run", "{image}", "q ?", "-m", "{small_context}", "--max-new-tokens", "150"],
        2,
        "new tokens were asked for, over the model's context of 160 tokens",
    ),
    (
        "max-new-tokens-over-context",
        ["run", "{image}", "q ?", "-m", "{model}", "--max-new-tokens", "4096"],
        2,
        "--max-new-tokens 4,096 leaves no room for a prompt in the model's context of 4,096 tokens",
    ),
    (
        "image-aspect-ratio",
        ["run", "{thin}", "q ?", "-m", "{model}"],
        2,
        "the model's image processor refuses the image (201x1): absolute aspect ratio must be smaller than 200",
    ),
    (
        "too-many-images",
        ["run", "{images65}", "q ?", "-m", "{model}"],
        2,
        "the prompt has 65 images, over hawk's limit of 64",
    ),
    (
        "prompt-pixels",
        ["run", "{big_headers}", "q ?", "-m", "{model}"],
        2,
        "the prompt's images hold 245 Mpx together, over hawk's limit of 200 Mpx per prompt",
    ),
    (
        "builtin-n-too-large",
        ["calibrate", "builtin:10001", "-o", "{tmp}/w.safetensors", "-m", "{model}"],
        2,
        "builtin:10,001 is over hawk's limit of 10,000 generated questions",
    ),
    ("eval-n-too-large", ["eval", "-n", "10001"], 2, "-n must be at most 10,000"),
    (
        "batch-size-too-large",
        ["run", "--input", "{bad_jsonl}", "--batch-size", "1025", "-m", "{model}"],
        2,
        "--batch-size must be at most 1,024",
    ),
    ("bench-too-many-repeats", ["bench", "--repeats", "1001", "-m", "{model}"], 2, "--repeats must be at most 1,000"),
]
CASES += [
    # Images and arguments (docs/errors.md rows)
    (
        "question-missing",
        ["run", "{image}", "{image}", "-m", "{model}"],
        2,
        "the question is missing: the last argument '{image}' names a file",
    ),
    (
        "image-url",
        ["run", "https://example.com/a.png", "q ?", "-m", "{model}"],
        2,
        "image 'https://example.com/a.png' is a URL; hawk reads local files only",
    ),
    (
        "image-fifo",
        ["run", "{fifo}", "q ?", "-m", "{model}"],
        2,
        "image '{fifo}' is a FIFO (named pipe), not a regular file",
    ),
    (
        "image-symlink-loop",
        ["run", "{loop}", "q ?", "-m", "{model}"],
        2,
        "cannot open image '{loop}' (Too many levels of symbolic links)",
    ),
    (
        "question-control-token",
        ["run", "{image}", "what <|vision_start|> ?", "-m", "{model}"],
        2,
        "the question contains the model's control token '<|vision_start|>'",
    ),
    (
        "output-is-an-input",
        ["run", "{image}", "q ?", "-o", "{image}", "--force", "-m", "{model}"],
        2,
        "--output '{image}' is also an input image; writing it would destroy the input",
    ),
    (
        "output-equals-overlay",
        ["run", "{image}", "q ?", "-o", "{tmp}/x.png", "--overlay", "{tmp}/x.png", "-m", "{model}"],
        2,
        "--output and --overlay name the same file",
    ),
    (
        "budget-given-twice",
        ["run", "{image}", "q ?", "--ratio", "0.5", "--keep", "0.5", "-m", "{model}"],
        2,
        "--ratio and --keep each set the visual-token budget",
    ),
    (
        "keep-out-of-range",
        ["run", "{image}", "q ?", "--keep", "1.5", "-m", "{model}"],
        2,
        "--keep must be in (0, 1], got 1.5",
    ),
    (
        "hub-id-offline",
        ["run", "{image}", "q ?", "-m", "Qwen/Qwen2.5-VL-7B-Instruct"],
        1,
        "'Qwen/Qwen2.5-VL-7B-Instruct' is a hub id, the hub is switched off (HF_HUB_OFFLINE=1), and the model is not "
        "in the local cache",
    ),
    (
        "model-url",
        ["run", "{image}", "q ?", "-m", "https://huggingface.co/Qwen/Qwen2.5-VL-7B-Instruct"],
        1,
        "is a URL. Pass the hub id (--model Qwen/Qwen2.5-VL-7B-Instruct) or a local folder",
    ),
    (
        "image-float-range",
        ["run", "{float_image}", "q ?", "-m", "{model}"],
        2,
        "holds floating-point pixels from 0 to 2; hawk reads float images as 0.0-1.0",
    ),
]
LIST_PLACEHOLDERS = ("{images65}", "{big_headers}")  # each stands for several arguments


def _truncated_png(path: Path) -> None:
    random_image(64, 64).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _huge_png_header(path: Path, width: int = 20000, height: int = 20000) -> None:
    """A PNG whose header claims 20000x20000: refused from the header, before any pixel is decoded."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    ihdr = struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + ihdr + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    )


@pytest.fixture(scope="module")
def places(tmp_path_factory, model_dir) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("errors")
    model = model_dir
    random_image(112, 112).save(tmp / "image.png")
    (tmp / "empty.png").write_bytes(b"")
    (tmp / "text.png").write_text("this is not an image\n")
    _truncated_png(tmp / "truncated.png")
    _huge_png_header(tmp / "huge.png")
    (tmp / "corrupt.safetensors").write_bytes(b"\x00\x01garbage" * 10)
    save_head_weights(tmp / "w28.safetensors", HeadWeights(torch.ones(28) / 28, "t", {"model_type": "qwen2_5_vl"}))
    save_head_weights(tmp / "wllava.safetensors", HeadWeights(torch.ones(4) / 4, "t", {"model_type": "llava"}))
    (tmp / "existing.safetensors").write_text("keep me")
    (tmp / "bad.jsonl").write_text('{"image": "image.png", "question": "q ?", "answer": "red"}\n{not json\n')
    data = tmp / "data"
    data.mkdir()
    random_image(112, 112).save(data / "a.png")
    (data / "questions.jsonl").write_text(
        '{"image": "a.png", "question": "what color is the circle ?", "answer": "red"}\n'
    )
    from transformers import LlamaConfig

    (tmp / "llama").mkdir()
    LlamaConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=68
    ).save_pretrained(tmp / "llama")
    (tmp / "many").mkdir()
    for index in range(65):
        random_image(8, 8).save(tmp / "many" / f"{index}.png")
    for index in range(5):  # 7000x7000 headers: 49 Mpx each, 245 Mpx together; never decoded
        _huge_png_header(tmp / "many" / f"big{index}.png", 7000, 7000)
    random_image(201, 1).save(tmp / "thin.png")
    shutil.copytree(model, tmp / "small-context")
    config = json.loads((tmp / "small-context" / "config.json").read_text())
    config["text_config"]["max_position_embeddings"] = 160
    (tmp / "small-context" / "config.json").write_text(json.dumps(config))
    import os

    import numpy as np
    from PIL import Image

    os.mkfifo(tmp / "fifo.png")
    os.symlink(tmp / "loop_b.png", tmp / "loop_a.png")
    os.symlink(tmp / "loop_a.png", tmp / "loop_b.png")
    float_pixels = np.zeros((4, 4), dtype=np.float32)
    float_pixels[0, 0] = 2.0
    Image.fromarray(float_pixels, "F").save(tmp / "float.tif")
    return {
        "fifo": str(tmp / "fifo.png"),
        "loop": str(tmp / "loop_a.png"),
        "float_image": str(tmp / "float.tif"),
        "tmp": str(tmp),
        "model": str(model),
        "long_question": "a" * 100_001,
        "thin": str(tmp / "thin.png"),
        "images65": [str(tmp / "many" / f"{i}.png") for i in range(65)],
        "big_headers": [str(tmp / "many" / f"big{i}.png") for i in range(5)],
        "small_context": str(tmp / "small-context"),
        "image": str(tmp / "image.png"),
        "missing": str(tmp / "missing.png"),
        "empty": str(tmp / "empty.png"),
        "text": str(tmp / "text.png"),
        "truncated": str(tmp / "truncated.png"),
        "huge": str(tmp / "huge.png"),
        "corrupt": str(tmp / "corrupt.safetensors"),
        "weights28": str(tmp / "w28.safetensors"),
        "weights_llava": str(tmp / "wllava.safetensors"),
        "existing": str(tmp / "existing.safetensors"),
        "bad_jsonl": str(tmp / "bad.jsonl"),
        "data": str(data),
        "llama": str(tmp / "llama"),
    }


@pytest.mark.parametrize("case_id, argv, exit_code, fragment", CASES, ids=[c[0] for c in CASES])
def test_documented_error_case(capsys, places, case_id, argv, exit_code, fragment):
    if case_id == "cuda-without-gpu" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    existing_before = Path(places["existing"]).read_text()
    text_places = {key: value for key, value in places.items() if isinstance(value, str)}
    expanded = [
        item
        for part in argv
        for item in (places[part.strip("{}")] if part in LIST_PLACEHOLDERS else [part.format(**text_places)])
    ]
    with pytest.raises(SystemExit) as exited:
        main(expanded)
    captured = capsys.readouterr()
    assert exited.value.code == exit_code, captured.err
    assert captured.out == ""
    lines = [line for line in captured.err.splitlines() if line.startswith("hawk: error: ")]
    assert len(lines) == 1 and captured.err.rstrip("\n").endswith(lines[0]), captured.err
    assert fragment.format(**text_places) in lines[0]
    assert "Traceback" not in captured.err
    assert Path(places["existing"]).read_text() == existing_before  # nothing overwritten


def test_out_of_memory_maps_to_a_one_line_resource_error(capsys):
    from hawk_cli.cli.app import _exit_code_for

    code = _exit_code_for(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    err = capsys.readouterr().err
    assert code == 1
    assert err == (
        "hawk: error: the device ran out of memory. Use a smaller --batch-size, a higher --ratio, or smaller images.\n"
    )


def test_docs_table_lists_exactly_the_tested_cases():
    rows = [line for line in DOCS.read_text().splitlines() if re.match(r"^\| `[a-z0-9-]+` \|", line)]
    documented = {}
    for row in rows:
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", row.strip("|"))]  # "\|" is a literal pipe
        documented[cells[0].strip("`")] = int(cells[2])
    assert documented == {case_id: code for case_id, _, code, _ in CASES}


def test_every_test_the_docs_name_exists():
    """The fault rows and limits name their pinning tests: each must exist (a renamed test would unpin a row)."""
    import ast

    named = set(re.findall(r"`(tests/[a-z_]+\.py)::([a-z0-9_]+)", DOCS.read_text()))
    assert len(named) >= 9
    root = DOCS.parent.parent
    missing = []
    for path, name in sorted(named):
        tree = ast.parse((root / path).read_text())
        if name not in {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}:
            missing.append(f"{path}::{name}")
    assert missing == []
