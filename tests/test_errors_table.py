"""Every row of docs/errors.md, run through the real CLI entry point: one line on stderr naming the problem and
the fix, the documented exit code, no traceback, nothing on stdout. The table and this list must agree."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import pytest
import torch

from hawk_cli.cli.app import main
from hawk_cli.io.weights import HeadWeights, save_head_weights
from tiny_models import random_image

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
    ("question-before-image", ["run", "what color ?", "{image}", "-m", "{model}"], 2,
     "the question must come last"),
    ("ratio-negative", ["run", "{image}", "q ?", "--ratio", "-0.1", "-m", "{model}"], 2,
     "--ratio must be in [0, 1), got -0.1"),
    ("ratio-one", ["run", "{image}", "q ?", "--ratio", "1.0", "-m", "{model}"], 2, "--ratio must be in [0, 1), got 1.0"),
    ("ratio-above-one", ["run", "{image}", "q ?", "--ratio", "1.5", "-m", "{model}"], 2,
     "--ratio must be in [0, 1), got 1.5"),
    ("ratio-not-a-number", ["run", "{image}", "q ?", "--ratio", "abc"], 2, "Invalid value for '--ratio'"),
    ("max-new-tokens-zero", ["run", "{image}", "q ?", "--max-new-tokens", "0", "-m", "{model}"], 2,
     "--max-new-tokens must be at least 1, got 0"),
    ("max-new-tokens-negative", ["run", "{image}", "q ?", "--max-new-tokens", "-3", "-m", "{model}"], 2,
     "--max-new-tokens must be at least 1, got -3"),
    ("model-path-missing", ["run", "{image}", "q ?", "-m", "{tmp}/nope"], 1, "model path '{tmp}/nope' does not exist"),
    ("folder-not-a-model", ["run", "{image}", "q ?", "-m", "{tmp}"], 1, "is not a model folder (no config.json)"),
    ("unsupported-family", ["run", "{image}", "q ?", "-m", "{llama}"], 1,
     "model type 'llama' is not supported. Supported: qwen2_5_vl, qwen2_vl, qwen3_5, qwen3_5_moe, qwen3_vl, qwen3_vl_moe"),
    ("unknown-scorer", ["run", "{image}", "q ?", "--scorer", "magic", "-m", "{model}"], 2, "unknown scorer 'magic'"),
    ("scoring-layer-missing", ["run", "{image}", "q ?", "--layer", "9", "-m", "{model}"], 2,
     "scoring layer 9 does not exist: this model has 3 decoder layers"),
    ("unknown-device", ["run", "{image}", "q ?", "--device", "tpu", "-m", "{model}"], 2, "unknown device 'tpu'"),
    ("unknown-dtype", ["run", "{image}", "q ?", "--dtype", "int8", "-m", "{model}"], 2, "unknown dtype 'int8'"),
    ("cuda-without-gpu", ["run", "{image}", "q ?", "--device", "cuda", "-m", "{model}"], 1,
     "--device cuda was asked for but no CUDA GPU is available"),
    ("weights-corrupt", ["run", "{image}", "q ?", "--weights", "{corrupt}", "-m", "{model}"], 2,
     "is not a valid safetensors file"),
    ("weights-missing", ["run", "{image}", "q ?", "--weights", "{missing}", "-m", "{model}"], 2,
     "weights file '{missing}' does not exist"),
    ("weights-wrong-head-count", ["run", "{image}", "q ?", "--weights", "{weights28}", "-m", "{model}"], 2,
     "holds 28 head weights but this model's scoring layer has 4 query heads"),
    ("weights-other-model-type", ["run", "{image}", "q ?", "--weights", "{weights_llava}", "-m", "{model}"], 2,
     "was calibrated for model type 'llava', not 'qwen2_5_vl'"),
    ("output-folder-missing", ["calibrate", "{data}", "-o", "{tmp}/no/such/dir/w.safetensors", "-m", "{model}"], 1,
     "does not exist. Create it first"),
    ("output-exists", ["calibrate", "{data}", "-o", "{existing}", "-m", "{model}"], 2,
     "already exists. Pass --force to overwrite it"),
    ("calibration-data-missing", ["calibrate", "{tmp}/no-data", "-o", "{tmp}/w.safetensors", "-m", "{model}"], 2,
     "does not exist"),
    ("calibration-jsonl-malformed", ["calibrate", "{bad_jsonl}", "-o", "{tmp}/w.safetensors", "-m", "{model}"], 2,
     "line 2"),
    ("eval-bad-ratio", ["eval", "--ratios", "0.5,2"], 2, "must be in [0, 1)"),
    ("bench-bad-batch", ["bench", "--batch", "0", "-m", "{model}"], 2, "batch"),
]


def _truncated_png(path: Path) -> None:
    random_image(64, 64).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _huge_png_header(path: Path, width: int = 20000, height: int = 20000) -> None:
    """A PNG whose header claims 20000x20000: refused from the header, before any pixel is decoded."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    ihdr = struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + ihdr + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND")))


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
    (data / "questions.jsonl").write_text('{"image": "a.png", "question": "what color is the circle ?", '
                                          '"answer": "red"}\n')
    from transformers import LlamaConfig

    (tmp / "llama").mkdir()
    LlamaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                vocab_size=68).save_pretrained(tmp / "llama")
    return {"tmp": str(tmp), "model": str(model), "image": str(tmp / "image.png"), "missing": str(tmp / "missing.png"),
            "empty": str(tmp / "empty.png"), "text": str(tmp / "text.png"), "truncated": str(tmp / "truncated.png"),
            "huge": str(tmp / "huge.png"), "corrupt": str(tmp / "corrupt.safetensors"),
            "weights28": str(tmp / "w28.safetensors"), "weights_llava": str(tmp / "wllava.safetensors"),
            "existing": str(tmp / "existing.safetensors"), "bad_jsonl": str(tmp / "bad.jsonl"), "data": str(data),
            "llama": str(tmp / "llama")}


@pytest.mark.parametrize("case_id, argv, exit_code, fragment", CASES, ids=[c[0] for c in CASES])
def test_documented_error_case(capsys, places, case_id, argv, exit_code, fragment):
    if case_id == "cuda-without-gpu" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    existing_before = Path(places["existing"]).read_text()
    with pytest.raises(SystemExit) as exited:
        main([part.format(**places) for part in argv])
    captured = capsys.readouterr()
    assert exited.value.code == exit_code, captured.err
    assert captured.out == ""
    lines = [line for line in captured.err.splitlines() if line.startswith("hawk: error: ")]
    assert len(lines) == 1 and captured.err.rstrip("\n").endswith(lines[0]), captured.err
    assert fragment.format(**places) in lines[0]
    assert "Traceback" not in captured.err
    assert Path(places["existing"]).read_text() == existing_before  # nothing overwritten


def test_out_of_memory_maps_to_a_one_line_resource_error(capsys):
    from hawk_cli.cli.app import _exit_code_for

    code = _exit_code_for(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    err = capsys.readouterr().err
    assert code == 1
    assert err == ("hawk: error: the device ran out of memory. Use a smaller --batch-size, a higher --ratio, "
                   "or smaller images.\n")


def test_docs_table_lists_exactly_the_tested_cases():
    rows = [line for line in DOCS.read_text().splitlines() if re.match(r"^\| `[a-z0-9-]+` \|", line)]
    documented = {}
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        documented[cells[0].strip("`")] = int(cells[2])
    assert documented == {case_id: code for case_id, _, code, _ in CASES}
