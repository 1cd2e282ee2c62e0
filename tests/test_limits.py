"""Limits checked before work starts (docs/errors.md, "Limits"): question length, JSONL line length, prompt tokens
against the model's context (images and frames included), the processor's own image limits, images per prompt,
and memory that stays bounded whatever the input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import run_cli
from tiny_models import random_image

from hawk_cli.io.requests import MAX_LINE_BYTES, decoded_lines
from hawk_cli.io.text import MAX_QUESTION_CHARS

ROOT = Path(__file__).resolve().parent.parent
CONTEXT = 160  # the small-context copy of the tiny model


@pytest.fixture(scope="module")
def small_context_model(tmp_path_factory, model_dir):
    """The tiny test model with a 160-token context (the weights do not depend on it)."""
    folder = tmp_path_factory.mktemp("small-context")
    shutil.copytree(model_dir, folder, dirs_exist_ok=True)
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["max_position_embeddings"] = CONTEXT
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("limits")
    random_image(224, 224, 1).save(folder / "a.png")  # 64 visual tokens in the tiny model
    random_image(112, 112, 2).save(folder / "small.png")  # 16 visual tokens
    frames = [random_image(224, 224, 10 + i) for i in range(4)]
    frames[0].save(folder / "clip.gif", save_all=True, append_images=frames[1:], duration=500)
    return folder


def _expected_prompt_tokens(model_dir, visual: int, question: str) -> int:
    """Independent count: the chat text with one placeholder, tokenised, placeholder replaced by its tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return len(tokenizer(text)["input_ids"]) - 1 + visual


def test_a_prompt_over_the_context_is_refused_before_work_and_one_that_fits_runs(capsys, small_context_model, files):
    question = "what color is the circle ?"
    prompt = _expected_prompt_tokens(small_context_model, 64, question)
    fits = CONTEXT - prompt
    code, out, err = run_cli(
        capsys, "run", files / "a.png", question, "-m", small_context_model, "--max-new-tokens", fits + 1
    )
    assert code == 2 and out == "" and "Traceback" not in err
    assert (
        f"the prompt is {prompt} tokens (64 of them visual) and {fits + 1} new tokens were asked for, over "
        f"the model's context of {CONTEXT} tokens"
    ) in err
    code, out, err = run_cli(
        capsys, "run", files / "a.png", question, "-m", small_context_model, "--max-new-tokens", fits, "--json"
    )
    assert code == 0, err  # negative control: exactly at the context is allowed
    assert json.loads(out)["prompt_tokens"] == prompt


def test_video_frames_count_towards_the_context(capsys, small_context_model, files):
    code, out, err = run_cli(
        capsys,
        "run",
        "--video",
        files / "clip.gif",
        "what shape is there ?",
        "-m",
        small_context_model,
        "--max-new-tokens",
        60,
    )
    assert code == 2 and "(128 of them visual)" in err and f"context of {CONTEXT} tokens" in err


def test_max_new_tokens_at_the_context_is_a_usage_error_naming_the_flag(capsys, small_context_model, files):
    code, out, err = run_cli(
        capsys, "run", files / "a.png", "q ?", "-m", small_context_model, "--max-new-tokens", CONTEXT
    )
    assert code == 2 and out == ""
    assert err.strip().endswith(
        f"--max-new-tokens {CONTEXT} leaves no room for a prompt in the model's context of "
        f"{CONTEXT} tokens. Use e.g. --max-new-tokens 32."
    )


def test_jsonl_rows_over_the_context_get_error_records_and_the_rest_run(capsys, small_context_model, files):
    requests = files / "context.jsonl"
    requests.write_text(
        "".join(
            json.dumps(row) + "\n"
            for row in [
                {"id": "ok1", "image": "small.png", "question": "what color ?"},
                {"id": "absurd", "image": "small.png", "question": "what color ?", "max_new_tokens": 10**30},
                {"id": "long", "image": "a.png", "question": "what color ?", "max_new_tokens": 150},
                {"id": "ok2", "image": "small.png", "question": "what shape ?", "max_new_tokens": 3},
            ]
        )
    )
    code, out, err = run_cli(
        capsys, "run", "--input", requests, "-m", small_context_model, "--batch-size", 4, "--max-new-tokens", 2
    )
    records = {r["id"]: r for r in map(json.loads, out.splitlines())}
    assert code == 1 and list(records) == ["ok1", "absurd", "long", "ok2"]
    assert "answer" in records["ok1"] and "answer" in records["ok2"]
    assert (
        records["absurd"]["error"].startswith("max_new_tokens 1,000,")
        and "context of 160 tokens" in records["absurd"]["error"]
    )
    assert "over the model's context of 160 tokens" in records["long"]["error"]


def test_the_processors_aspect_ratio_limit_is_an_input_error_at_its_exact_bound(capsys, model_dir, tmp_path):
    random_image(201, 1).save(tmp_path / "thin.png")
    random_image(200, 1).save(tmp_path / "edge.png")
    code, out, err = run_cli(capsys, "run", tmp_path / "thin.png", "q ?", "-m", model_dir, "--max-new-tokens", 1)
    assert code == 2 and "the model's image processor refuses the image (201x1)" in err and "Traceback" not in err
    code, out, err = run_cli(capsys, "run", tmp_path / "edge.png", "q ?", "-m", model_dir, "--max-new-tokens", 1)
    assert code == 0, err  # 200:1 is the processor's own last accepted ratio


def test_image_count_and_pixel_total_are_checked_from_headers_before_the_model_loads(capsys, tmp_path):
    from test_errors_table import _huge_png_header

    for index in range(65):
        random_image(8, 8).save(tmp_path / f"{index}.png")
    images = [tmp_path / f"{index}.png" for index in range(65)]
    # The model path does not exist: an error about it would mean the images were checked after loading.
    code, _, err = run_cli(capsys, "run", *images, "q ?", "-m", tmp_path / "no-model")
    assert code == 2 and "the prompt has 65 images, over hawk's limit of 64" in err
    code, _, err = run_cli(capsys, "run", *images[:64], "q ?", "-m", tmp_path / "no-model")
    assert code == 1 and "model path" in err  # 64 images pass the check (negative control)
    for index in range(5):  # headers of 7000x7000: 49 Mpx each, 245 Mpx together; never decoded
        _huge_png_header(tmp_path / f"big{index}.png", 7000, 7000)
    code, _, err = run_cli(
        capsys, "run", *[tmp_path / f"big{i}.png" for i in range(5)], "q ?", "-m", tmp_path / "no-model"
    )
    assert code == 2 and "hold 245 Mpx together, over hawk's limit of 200 Mpx per prompt" in err


def test_a_long_jsonl_line_becomes_an_error_record_and_the_next_line_runs(capsys, model_dir, files, tmp_path):
    requests = tmp_path / "long.jsonl"
    long_line = json.dumps({"id": "big", "image": str(files / "a.png"), "question": "x " * MAX_LINE_BYTES})
    good = json.dumps({"id": "next", "image": str(files / "a.png"), "question": "what color ?"})
    requests.write_text(long_line + "\n" + good + "\n")
    code, out, err = run_cli(capsys, "run", "--input", requests, "-m", model_dir, "--max-new-tokens", 1)
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and [r["line"] for r in records] == [1, 2]
    assert records[0]["error"].startswith("line 1 is over hawk's limit of 1,048,576 bytes per line")
    assert records[1]["id"] == "next" and "answer" in records[1]


def test_line_reader_bounds_each_line_and_keeps_numbering(tmp_path):
    import io

    data = b"a" * 10 + b"\n" + b"b" * 25 + b"\n" + b"\xef\xbb\xbfc\n" + b"d" * 20
    items = list(decoded_lines(io.BytesIO(data), limit=20))
    assert items[0] == "a" * 10 + "\n"
    assert "line 2 is over hawk's limit of 20 bytes" in items[1].message
    assert items[2] == "\ufeffc\n"  # a BOM is dropped only where the stream starts
    assert items[3] == "d" * 20 and len(items) == 4  # exactly at the limit, no newline at the end: kept


def test_question_length_is_checked_before_tokenising_in_every_entry(capsys, model_dir, files, tmp_path):
    long_question = "a" * (MAX_QUESTION_CHARS + 1)
    requests = tmp_path / "q.jsonl"
    requests.write_text(
        json.dumps({"id": 1, "image": str(files / "a.png"), "question": long_question})
        + "\n"
        + json.dumps({"id": 2, "image": str(files / "a.png"), "question": "a" * MAX_QUESTION_CHARS})
        + "\n"
    )
    code, out, err = run_cli(capsys, "run", "--input", requests, "-m", model_dir, "--max-new-tokens", 1)
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and records[0]["error"].startswith("'question' is 100,001 characters long, over hawk's limit")
    assert "answer" in records[1] or "context" in records[1]["error"]  # at the limit: not refused for its length


# Runs a Python program and reports, at exit, the peak resident memory of this very process image (VmHWM of
# /proc/self/status). ru_maxrss will not do: Linux carries the forking parent's peak over into the child's.
_MEASURED = (
    "import atexit, runpy, sys\n"
    "def report():\n"
    "    peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
    "    sys.stderr.write(f'PEAK_KIB {peak}\\n')\n"
    "atexit.register(report)\n"
    "sys.argv = sys.argv[1:]\n"
    "if sys.argv[0] == '-c':\n"
    "    exec(sys.argv[1])\n"
    "else:\n"
    "    runpy.run_module(sys.argv[0], run_name='__main__')\n"
)


def _peak_rss_kib(argv: list[str], stdin_path: Path | None = None) -> tuple[int, int, str]:
    """Run `python ARGV...` (a module name or -c CODE); (exit code, its peak resident memory in KiB, stderr)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    with open(stdin_path or os.devnull, "rb") as stdin:
        done = subprocess.run(
            [sys.executable, "-c", _MEASURED, *argv],
            cwd=ROOT,
            env=env,
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=300,
        )
    err = done.stderr.decode()
    peak = int(err.rsplit("PEAK_KIB ", 1)[1].split()[0])
    return done.returncode, peak, err


GROWTH_BOUND_KIB = 32 * 1024  # stated in docs/errors.md: a 128 MiB input moves peak memory by less than this
HUGE = 128 * 1024 * 1024


def _write_huge(path: Path, head: str = "", tail: str = "") -> None:
    with open(path, "w") as handle:
        handle.write(head)
        for _ in range(HUGE // (1 << 20)):
            handle.write("x" * (1 << 20))
        handle.write(tail)


def test_a_very_long_jsonl_question_is_refused_with_bounded_memory(tmp_path, model_dir, files):
    small, huge = tmp_path / "small.jsonl", tmp_path / "huge.jsonl"
    head = '{"id": 1, "image": "' + str(files / "a.png") + '", "question": "'
    small.write_text(head + "x" * 10 + '"}\n')
    _write_huge(huge, head, '"}\n')
    argv = ["hawk_cli", "run", "-", "-m", str(model_dir), "--max-new-tokens", "1"]
    base_code, base_rss, base_err = _peak_rss_kib(argv, small)
    code, rss, err = _peak_rss_kib(argv, huge)
    assert base_code == 0, base_err
    assert code == 1 and "line 1 is over hawk's limit" in err and "Traceback" not in err
    assert rss - base_rss < GROWTH_BOUND_KIB, (base_rss, rss)


READ_STDIN_QUESTION = (
    "import sys\nfrom hawk_cli.errors import InputError\nfrom hawk_cli.io.text import read_question\n"
    "try:\n    read_question(sys.stdin)\nexcept InputError as error:\n    print(error.render())"
)


def test_a_very_long_stdin_question_is_refused_with_bounded_memory(tmp_path):
    small, huge = tmp_path / "small.txt", tmp_path / "huge.txt"
    small.write_text("what color ?")
    _write_huge(huge)
    _, base_rss, _ = _peak_rss_kib(["-c", READ_STDIN_QUESTION], small)
    code, rss, err = _peak_rss_kib(["-c", READ_STDIN_QUESTION], huge)
    assert code == 0 and rss - base_rss < GROWTH_BOUND_KIB, (base_rss, rss, err)


def test_the_memory_measurement_sees_a_held_line(tmp_path):
    """Negative control: a reader that holds the whole input grows by about its size, so the bounded-memory tests
    above can see a line being held."""
    small, huge = tmp_path / "small.txt", tmp_path / "huge.txt"
    small.write_text("x\n")
    _write_huge(huge, tail="\n")
    _, held_rss, _ = _peak_rss_kib(["-c", "import sys; data = sys.stdin.buffer.readline()"], huge)
    _, empty_rss, _ = _peak_rss_kib(["-c", "import sys; data = sys.stdin.buffer.readline()"], small)
    assert held_rss - empty_rss > HUGE // 1024 - GROWTH_BOUND_KIB
