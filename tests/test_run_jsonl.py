"""`hawk run` on JSONL requests: pipes, input order under batching, batched rows == alone, error records,
--output, overlays. A tiny random Qwen2.5-VL saved to a temp folder plays the model."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import run_cli
from PIL import Image
from tiny_models import random_image

from hawk_cli.io.overlay import KEPT_OUTLINE

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    for name, (w, h, seed) in {
        "a.png": (224, 224, 1),
        "b.png": (112, 168, 2),
        "c.png": (168, 112, 3),
        "d.png": (112, 112, 4),
        "e.png": (224, 112, 5),
    }.items():
        random_image(w, h, seed).save(folder / name)
    frames = [random_image(112, 112, 10 + i) for i in range(5)]
    frames[0].save(folder / "clip.gif", save_all=True, append_images=frames[1:], duration=500)
    return folder


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


REQUESTS = [
    {"id": "r1", "images": ["a.png"], "question": "what color is the circle ?"},
    {"id": "r2", "image": "b.png", "question": "how many stars are there ?", "max_new_tokens": 2},
    {"id": "r3", "images": ["c.png", "d.png"], "question": "what digit is in the red box ?"},
    {"id": "r4", "video": "clip.gif", "question": "what shape is there ?", "fps": 2},
    {"id": "r5", "images": ["e.png"], "video": "clip.gif", "question": "what color is the square ?"},
    {"id": "r6", "images": ["d.png"], "question": "what shape is there ?", "ratio": 0.5},
]
STABLE = (
    "id",
    "line",
    "answer",
    "ratio",
    "visual_tokens",
    "visual_tokens_kept",
    "prompt_tokens",
    "prompt_tokens_kept",
    "query_tokens",
    "generated_tokens",
)


def test_pipe_round_trip_through_a_subprocess(model_dir, files):
    lines = [
        json.dumps({"id": i, "images": [str(files / name)], "question": "what color is the circle ?"})
        for i, name in enumerate(["a.png", "b.png", "c.png"])
    ]
    command = (
        f"printf '%s\\n' {' '.join(repr(line) for line in lines)} | "
        f"{sys.executable} -m hawk_cli run - --json --model {model_dir} --max-new-tokens 2 --batch-size 2"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["id"] for r in records] == [0, 1, 2]
    assert all(1 <= r["batch_size"] <= 2 for r in records)  # a stream runs what has arrived, up to 2 rows
    assert all(isinstance(r["answer"], str) and r["visual_tokens_kept"] < r["visual_tokens"] for r in records)
    assert "3 requests, 0 failed," in done.stderr


def test_batched_rows_equal_rows_alone_in_input_order(capsys, monkeypatch, tmp_path, model_dir, files):
    monkeypatch.setenv("HAWK_PREPARE_WORKERS", "2")  # the batched run prepares requests on threads (GPU path)
    requests = write_jsonl(files / "requests.jsonl", REQUESTS)
    code, out, _ = run_cli(
        capsys,
        "run",
        "--input",
        requests,
        "--model",
        model_dir,
        "--batch-size",
        "8",
        "--max-new-tokens",
        "4",
        "--overlay",
        tmp_path / "overlays",
    )
    assert code == 0
    batched = [json.loads(line) for line in out.splitlines()]
    monkeypatch.setenv("HAWK_PREPARE_WORKERS", "0")
    code, out, _ = run_cli(
        capsys, "run", "--input", requests, "--model", model_dir, "--batch-size", "1", "--max-new-tokens", "4"
    )
    alone = [json.loads(line) for line in out.splitlines()]
    monkeypatch.setenv("HAWK_PREPARE_WORKERS", "2")
    monkeypatch.setenv("HAWK_PREPARE", "processes")  # forked preparation gives the same records
    code, out, _ = run_cli(
        capsys, "run", "--input", requests, "--model", model_dir, "--batch-size", "8", "--max-new-tokens", "4"
    )
    forked = [json.loads(line) for line in out.splitlines()]
    assert [{k: r[k] for k in STABLE} for r in forked] == [{k: r[k] for k in STABLE} for r in batched]
    assert [r["id"] for r in batched] == [f"r{i}" for i in range(1, 7)]
    assert [r["batch_size"] for r in batched] == [5, 5, 5, 5, 5, 1]  # ratio 0.8 rows together, r6 (0.5) apart
    assert {r["batch_size"] for r in alone} == {1}
    assert len({r["visual_tokens_kept"] for r in batched}) > 3  # rows really differ in kept counts
    assert batched[1]["generated_tokens"] <= 2 and batched[5]["ratio"] == 0.5
    assert [{k: r[k] for k in STABLE} for r in batched] == [{k: r[k] for k in STABLE} for r in alone]
    for record in batched:  # the overlay outlines exactly the kept cells
        picture = Image.open(record["overlay"]).convert("RGB")
        corners = sum(
            1
            for y in range(0, picture.height, 28)
            for x in range(0, picture.width, 28)
            if picture.getpixel((x, y)) == KEPT_OUTLINE
        )
        assert corners == record["visual_tokens_kept"], record["id"]


@pytest.mark.parametrize("workers", ["0", "2", "2 processes"])
def test_bad_requests_become_error_records_and_the_stream_goes_on(capsys, monkeypatch, model_dir, files, workers):
    monkeypatch.setenv("HAWK_PREPARE_WORKERS", workers.split()[0])
    if workers.endswith("processes"):
        monkeypatch.setenv("HAWK_PREPARE", "processes")
    requests = write_jsonl(
        files / "mixed.jsonl",
        [
            {"id": "ok1", "images": ["a.png"], "question": "what color is the circle ?"},
            "{not json",
            {"id": "gone", "images": ["missing.png"], "question": "what ?"},
            "",
            [1, 2],
            {"id": "noq", "images": ["a.png"]},
            {"id": "badratio", "images": ["a.png"], "question": "what ?", "ratio": 1.5},
            {"id": "notimg", "images": ["mixed.jsonl"], "question": "what ?"},
            {"id": "ok2", "images": ["b.png"], "question": "how many stars are there ?"},
        ],
    )
    code, out, err = run_cli(
        capsys, "run", "--input", requests, "--model", model_dir, "--batch-size", "4", "--max-new-tokens", "2"
    )
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 1
    assert [(r["id"], r["line"], "error" in r) for r in records] == [
        ("ok1", 1, False),
        (None, 2, True),
        ("gone", 3, True),
        (None, 5, True),
        ("noq", 6, True),
        ("badratio", 7, True),
        ("notimg", 8, True),
        ("ok2", 9, False),
    ]
    errors = {r["line"]: r["error"] for r in records if "error" in r}
    assert "not valid JSON" in errors[2] and "missing.png' does not exist" in errors[3]
    assert "must be a JSON object" in errors[5] and "'question' is missing" in errors[6]
    assert "'ratio' must be in [0, 1)" in errors[7] and "not an image Pillow can read" in errors[8]
    assert re.search(r"^8 requests, 6 failed, ", err, re.MULTILINE)  # blank line 4 is not a request
    assert "hawk: warning: line 3 (id 'gone')" in err


def test_a_row_failing_inside_a_batch_does_not_sink_the_others(capsys, monkeypatch, model_dir, files):
    from hawk_cli.engine.session import HawkSession

    real_run = HawkSession.run

    def flaky_run(self, requests, scorer, settings, encoded=None, eos_ids=None, row_limits=None):
        if any("boom" in r.question for r in requests):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
        return real_run(self, requests, scorer, settings, encoded, eos_ids, row_limits)

    monkeypatch.setattr(HawkSession, "run", flaky_run)
    requests = write_jsonl(
        files / "boom.jsonl",
        [
            {"id": 1, "images": ["a.png"], "question": "what color is the circle ?"},
            {"id": 2, "images": ["b.png"], "question": "boom"},
            {"id": 3, "images": ["c.png"], "question": "what shape is there ?"},
        ],
    )
    code, out, _ = run_cli(
        capsys, "run", "--input", requests, "--model", model_dir, "--batch-size", "3", "--max-new-tokens", "2"
    )
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 1
    assert [r["id"] for r in records] == [1, 2, 3]
    assert [r.get("batch_size") for r in records] == [1, None, 1]  # the batch of 3 failed, rows re-ran alone
    assert "answer" in records[0] and "answer" in records[2]
    assert records[1]["error"].startswith("the device ran out of memory")


def test_output_file_is_atomic_and_needs_force(capsys, tmp_path, model_dir, files):
    requests = write_jsonl(files / "two.jsonl", REQUESTS[:2])
    target = tmp_path / "results.jsonl"
    target.write_text("old\n")
    code, out, err = run_cli(capsys, "run", "--input", requests, "--model", model_dir, "--output", target)
    assert code == 2 and out == "" and "already exists" in err and target.read_text() == "old\n"
    code, out, _ = run_cli(
        capsys, "run", "--input", requests, "--model", model_dir, "--output", target, "--force", "--max-new-tokens", "2"
    )
    assert code == 0 and out == ""
    assert [json.loads(line)["id"] for line in target.read_text().splitlines()] == ["r1", "r2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.jsonl"]  # no temp file left


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--input", "REQ", "IMG", "q ?"], "--input takes no IMAGE or QUESTION arguments"),
        (["--input", "REQ", "--video", "IMG"], "--video is for one prompt"),
        (["--input", "/no/such.jsonl"], "input file '/no/such.jsonl' does not exist"),
        (["--input", "REQ", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["IMG", "q ?", "--fps", "0"], "fps must be a number from 0.01 to 1000"),
    ],
)
def test_bad_invocations_exit_2(capsys, model_dir, files, argv, fragment):
    requests = write_jsonl(files / "one.jsonl", REQUESTS[:1])
    argv = [requests if a == "REQ" else files / "a.png" if a == "IMG" else a for a in argv]
    code, out, err = run_cli(capsys, "run", *argv, "--model", model_dir)
    assert code == 2 and out == "" and fragment in err


def test_an_unknown_preparation_mode_exits_2_before_the_model_loads(capsys, monkeypatch, files):
    monkeypatch.setenv("HAWK_PREPARE", "fibers")
    requests = write_jsonl(files / "one.jsonl", REQUESTS[:1])
    code, out, err = run_cli(capsys, "run", "--input", requests, "--model", files / "no-model-here")
    assert code == 2 and out == "" and "unknown preparation mode 'fibers'" in err and "HAWK_PREPARE" in err
    assert "Traceback" not in err


def test_one_prompt_with_a_video_and_an_overlay(capsys, tmp_path, model_dir, files):
    overlay = tmp_path / "kept.png"
    code, out, _ = run_cli(
        capsys,
        "run",
        "--video",
        files / "clip.gif",
        "what shape is there ?",
        "--model",
        model_dir,
        "--json",
        "--max-new-tokens",
        "2",
        "--overlay",
        overlay,
    )
    record = json.loads(out)
    assert code == 0 and record["video_frames"] == 5 and record["visual_tokens"] == 3 * 16
    picture = Image.open(overlay).convert("RGB")
    assert picture.size == (3 * 112 + 2 * 8, 112)  # three temporal groups side by side


def test_video_with_the_question_on_stdin(capsys, monkeypatch, model_dir, files):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("what shape is there ?\n"))
    code, out, _ = run_cli(
        capsys,
        "run",
        "--video",
        files / "clip.gif",
        "-",
        "--model",
        model_dir,
        "--json",
        "--max-new-tokens",
        "2",
        "--ratio",
        "0.5",
    )
    record = json.loads(out)
    assert code == 0 and record["query_tokens"] == 5 and record["visual_tokens_kept"] == 24
