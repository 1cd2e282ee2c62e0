"""The JSONL splitter over GPUs, with fake workers (small Python processes) instead of `hawk run` on GPUs.

Oracle: the fake worker answers a line with its question reversed, so the expected merged output of a file is
computable line by line, independently of how lines were dealt to workers.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hawk_cli.cli.output import Output
from hawk_cli.cli.run_gpus import run_over_gpus
from hawk_cli.errors import Interrupted, UsageError
from hawk_cli.serving.multi_gpu import deal, parse_gpus, run_sharded

FAKE_WORKER = r"""
import json, sys, time
path, mode, gpu = sys.argv[1], sys.argv[2], sys.argv[3]
lines = [(number, line) for number, line in enumerate(open(path, encoding="utf-8"), start=1) if line.strip()]
for answered, (local, text) in enumerate(lines):
    data = json.loads(text)
    if mode == "crash" and answered == 2:
        sys.stdout.write('{"id": "torn", "li')  # killed mid-write
        sys.stdout.flush()
        sys.exit(3)
    if mode == "hang":
        time.sleep(60)
    record = {"id": data.get("id", local), "line": local, "answer": data["question"][::-1], "gpu": gpu}
    print(json.dumps(record), flush=True)
    if mode == "noisy":  # a repeated record and one for a line this worker never got
        print(json.dumps({**record, "answer": "second copy"}), flush=True)
        print(json.dumps({**record, "line": 10_000}), flush=True)
"""


def fake_launcher(modes: dict[str, str], started: list | None = None):
    def launch(task):
        handle = subprocess.Popen(
            [sys.executable, "-c", FAKE_WORKER, str(task.input_path), modes.get(task.gpu, "ok"), task.gpu],
            stdout=task.output,
        )
        if started is not None:
            started.append(handle)
        return handle

    return launch


def write_requests(path, count: int, blank_every: int = 4) -> list[str]:
    lines, questions = [], []
    for i in range(count):
        question = f"question number {i}"
        data = {"question": question, "images": ["x.png"]}
        if i % 2 == 0:
            data["id"] = f"req-{i}"
        lines.append(json.dumps(data))
        questions.append(question)
        if i % blank_every == 1:
            lines.append("")
    path.write_text("\n".join(lines) + "\n")
    return lines


def expected_records(lines: list[str]) -> list[tuple]:
    """(id, line, answer) a single process would give: line numbers count blank lines, ids default to them."""
    out = []
    for number, text in enumerate(lines, start=1):
        if text.strip():
            data = json.loads(text)
            out.append((data.get("id", number), number, data["question"][::-1]))
    return out


def test_records_come_back_in_input_order_with_the_original_ids_and_line_numbers(tmp_path):
    path = tmp_path / "in.jsonl"
    lines = write_requests(path, 11)
    with open(path) as handle:
        records = list(run_sharded(handle, ["0", "1", "2"], fake_launcher({})))
    assert [(r["id"], r["line"], r["answer"]) for r in records] == expected_records(lines)
    assert {r["gpu"] for r in records} == {"0", "1", "2"}  # really spread over the workers


def test_the_order_check_fails_for_a_worker_that_answers_wrongly(tmp_path):
    """Negative control: the oracle notices a wrong answer."""
    path = tmp_path / "in.jsonl"
    lines = write_requests(path, 5)
    with open(path) as handle:
        records = list(run_sharded(handle, ["0", "1"], fake_launcher({})))
    records[2]["answer"] += "!"
    assert [(r["id"], r["line"], r["answer"]) for r in records] != expected_records(lines)


def test_a_worker_that_crashes_midway_gives_error_records_for_exactly_its_unanswered_requests(tmp_path):
    path = tmp_path / "in.jsonl"
    lines = write_requests(path, 14)
    with open(path) as handle:
        records = list(run_sharded(handle, ["0", "1"], fake_launcher({"1": "crash"})))
    expected = expected_records(lines)
    assert [r["line"] for r in records] == [line for _, line, _ in expected]  # nothing lost, nothing duplicated
    worker_1_lines = [line for _, line, _ in expected][1::2]
    answered_by_1 = set(worker_1_lines[:2])  # it answered its first two lines, then died on the third
    for record, (request_id, line, answer) in zip(records, expected, strict=True):
        assert record["id"] == request_id
        if line in worker_1_lines and line not in answered_by_1:
            assert "error" in record and "GPU 1" in record["error"] and "exit code 3" in record["error"]
        else:
            assert record["answer"] == answer


def test_repeated_and_foreign_records_of_a_worker_are_ignored(tmp_path):
    path = tmp_path / "in.jsonl"
    lines = write_requests(path, 6)
    with open(path) as handle:
        records = list(run_sharded(handle, ["0", "1"], fake_launcher({"0": "noisy"})))
    assert [(r["id"], r["line"], r["answer"]) for r in records] == expected_records(lines)


def test_an_interrupt_stops_every_worker_and_leaves_no_files(tmp_path, monkeypatch):
    path = tmp_path / "in.jsonl"
    write_requests(path, 6)
    work = tmp_path / "work"
    work.mkdir()
    started: list = []
    launch = fake_launcher({"0": "hang", "1": "hang"}, started)
    sleeps = iter(range(10))

    def interrupting_sleep(_seconds):
        if next(sleeps) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr("hawk_cli.serving.multi_gpu.time.sleep", interrupting_sleep)
    with pytest.raises(KeyboardInterrupt), open(path) as handle:
        list(run_sharded(handle, ["0", "1"], launch, workdir=work))
    assert len(started) == 2 and all(handle.poll() is not None for handle in started)
    assert list(work.iterdir()) == []


def test_the_command_writes_no_output_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "in.jsonl"
    write_requests(path, 4)
    target = tmp_path / "out.jsonl"

    def interrupted_launch(task):
        raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        run_over_gpus(
            Output(json_mode=True, quiet=True), str(path), "0,1", str(target), False, [], launch=interrupted_launch
        )
    assert not target.exists() and [p.name for p in tmp_path.iterdir()] == ["in.jsonl"]


def test_the_command_writes_the_merged_file_and_fails_when_a_worker_failed(tmp_path):
    path = tmp_path / "in.jsonl"
    lines = write_requests(path, 8)
    target = tmp_path / "out.jsonl"
    code = run_over_gpus(
        Output(json_mode=True, quiet=True),
        str(path),
        "0,1",
        str(target),
        False,
        [],
        launch=fake_launcher({"0": "crash"}),
    )
    written = [json.loads(line) for line in target.read_text().splitlines()]
    assert code == 1 and [r["line"] for r in written] == [line for _, line, _ in expected_records(lines)]
    assert sum("error" in r for r in written) == 2  # worker 0 had 4 lines and answered 2


def test_gpu_lists_are_checked_and_lines_dealt_round_robin():
    assert parse_gpus("0, 1,3") == ["0", "1", "3"]
    for bad in ("", "0,,1", "a", "0,0", "-1"):
        with pytest.raises(UsageError):
            parse_gpus(bad)
    assert deal(list(range(7)), 3) == [[0, 3, 6], [1, 4], [2, 5]]


def test_real_workers_on_cpu_answer_as_one_process_does(capsys, model_dir, tmp_path):
    """`hawk run --gpus 0,1` end to end with the real worker command (on this CPU-only machine each worker's
    CUDA_VISIBLE_DEVICES names no GPU, so it runs on the CPU): the same records as one `hawk run --input`."""
    from cli_helpers import run_cli
    from tiny_models import random_image

    lines = []
    for i in range(5):
        image = tmp_path / f"im{i}.png"
        random_image(56 + 28 * (i % 3), 84, seed=i).save(image)
        request = {"images": [str(image)], "question": f"what is in picture {i}?"}
        if i != 3:
            request["id"] = f"r{i}"
        lines.append(json.dumps(request))
    lines.insert(2, "")
    lines.insert(4, "{broken")
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    flags = ["--model", str(model_dir), "--max-new-tokens", "3", "--batch-size", "2"]
    code, single, err = run_cli(capsys, "run", "--input", path, *flags, "--quiet")
    assert code == 1, err  # the broken line
    target = tmp_path / "out.jsonl"
    code, _, err = run_cli(capsys, "run", "--input", path, *flags, "--gpus", "0,1", "-o", target, "--quiet")
    assert code == 1, err
    keys = ("id", "line", "answer", "error", "visual_tokens_kept")
    expected = [{k: r.get(k) for k in keys} for r in map(json.loads, single.splitlines())]
    merged = [{k: r.get(k) for k in keys} for r in map(json.loads, target.read_text().splitlines())]
    assert merged == expected and len(merged) == 6
