"""One JSONL file answered by several worker processes (one per GPU), merged back into input order.

Why processes, one per GPU, each with the whole model: a request is small and independent, so data parallelism
needs no communication; separate processes keep one CUDA context and one interpreter lock per GPU (threads in
one process would share the lock that the host-bound decode loop already saturates), and a worker that dies
(out of memory, a driver fault) takes down only its own share. Each worker is an ordinary `hawk run --input`
on its share of the lines, its stdout written to a file as it goes, so what it answered before dying is kept.

The splitter is generic over `launch`, which starts one worker (`WorkerTask` -> a `subprocess.Popen`-like
handle): the CLI starts `python -m hawk_cli run`, the tests start small fake workers.

Guarantees: every non-blank input line gets exactly one record, in input order (a worker's record for a line it
did not receive, or a second one, is ignored); a line whose worker ended without answering it gets an error
record naming the worker; on Ctrl-C (or any failure of the parent) every worker is stopped and the shard files
are deleted, so nothing partial is left (the caller writes the merged records atomically).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from hawk_cli.errors import UsageError

STOP_GRACE_S = 5.0  # a stopped worker's time to exit after SIGTERM before it is killed


class WorkerHandle(Protocol):
    """What the splitter needs of a started worker (subprocess.Popen has it)."""

    returncode: int | None

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


@dataclass(frozen=True)
class WorkerTask:
    """One worker's share: its GPU, its input (a JSONL file holding its lines at their original line numbers,
    every other line blank, so its records carry the input's line numbers, ids and messages), and the file its
    stdout (one JSON record per line) goes to."""

    gpu: str
    input_path: Path
    output: IO[str]
    lines: tuple[int, ...]  # the line numbers of its share


def parse_gpus(spec: str) -> list[str]:
    """ "0,1,3" -> ["0", "1", "3"] (distinct non-negative indices)."""
    parts = [part.strip() for part in spec.split(",")]
    if not parts or any(not part.isdigit() for part in parts):
        raise UsageError(
            f"must be a comma-separated list of GPU indices, got '{spec}'", "Use e.g. {gpus=}0,1", setting="gpus"
        )
    if len(set(parts)) != len(parts):
        raise UsageError(f"names a GPU twice ('{spec}')", "Name each GPU once", setting="gpus")
    return parts


def numbered_lines(lines: Iterable[str]) -> list[tuple[int, str]]:
    """(1-based line number, text) of the non-blank lines, as `hawk run --input` numbers them."""
    return [(number, text.rstrip("\n")) for number, text in enumerate(lines, start=1) if text.strip()]


def deal(lines: list[tuple[int, str]], workers: int) -> list[list[tuple[int, str]]]:
    """Round robin: worker w gets lines w, w + n, ... so a file whose hard requests cluster still balances."""
    return [lines[w::workers] for w in range(workers)]


def expected_id(number: int, text: str) -> object:
    """The id a single `hawk run` gives the line's record: its "id", else its line number (None if unparsable)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    return data.get("id", number) if isinstance(data, dict) else None


def run_sharded(
    lines: Iterable[str],
    gpus: list[str],
    launch: Callable[[WorkerTask], WorkerHandle],
    poll_s: float = 0.05,
    workdir: Path | None = None,
) -> Iterator[dict]:
    """Records for every non-blank line of `lines`, in input order, answered by one worker per GPU.

    Runs the workers to completion first (the records are merged afterwards), then yields. Any exception or
    KeyboardInterrupt while they run stops them all and removes their files before it propagates."""
    numbered = numbered_lines(lines)
    shards = [shard for shard in deal(numbered, len(gpus)) if shard]
    folder = Path(tempfile.mkdtemp(prefix="hawk-gpus-", dir=workdir))
    handles: list[WorkerHandle] = []
    outputs: list[IO[str]] = []
    try:
        tasks = []
        for index, shard in enumerate(shards):
            input_path = folder / f"shard-{index}.jsonl"
            input_path.write_text(_in_place(shard), encoding="utf-8")
            # kept open for the worker's stdout and read back after it ends; closed in `finally`
            output = open(folder / f"shard-{index}.out.jsonl", "w+", encoding="utf-8")  # noqa: SIM115
            outputs.append(output)
            tasks.append(
                WorkerTask(
                    gpu=gpus[index], input_path=input_path, output=output, lines=tuple(number for number, _ in shard)
                )
            )
        for task in tasks:
            handles.append(launch(task))
        while any(handle.poll() is None for handle in handles):
            time.sleep(poll_s)
        answered: dict[int, dict] = {}
        for task, handle, written in zip(tasks, handles, outputs, strict=True):
            answered.update(_worker_records(task, handle.returncode, written))
    except BaseException:
        _stop(handles)
        raise
    finally:
        for written in outputs:
            written.close()
        shutil.rmtree(folder, ignore_errors=True)
    by_task = {number: task for task in tasks for number in task.lines}
    for number, text in numbered:
        record = answered.get(number)
        if record is None:
            task = by_task[number]
            record = {
                "id": expected_id(number, text),
                "line": number,
                "error": f"the worker on GPU {task.gpu} ended (exit code {_exit_code(task, handles, tasks)}) "
                "before answering this request",
            }
        yield record


def _in_place(shard: list[tuple[int, str]]) -> str:
    """The shard's lines at their own line numbers, blank lines between (blank lines are skipped by readers)."""
    text = [""] * (shard[-1][0] if shard else 0)
    for number, line in shard:
        text[number - 1] = line
    return "".join(line + "\n" for line in text)


def _exit_code(task: WorkerTask, handles: list[WorkerHandle], tasks: list[WorkerTask]) -> int | None:
    return handles[tasks.index(task)].returncode


def _worker_records(task: WorkerTask, returncode: int | None, output: IO[str]) -> dict[int, dict]:
    """The worker's records by line number: the first per line of its share; a torn last line (a worker killed
    mid-write) and records of lines it was not given are dropped."""
    output.flush()
    output.seek(0)
    mine = set(task.lines)
    records: dict[int, dict] = {}
    for text in output:
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            continue
        number = record.get("line") if isinstance(record, dict) else None
        if isinstance(number, int) and number in mine and number not in records:
            records[number] = record
    return records


def _stop(handles: list[WorkerHandle]) -> None:
    """SIGTERM every running worker, then kill those still running after the grace period."""
    for handle in handles:
        if handle.poll() is None:
            handle.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for handle in handles:
        try:
            handle.wait(timeout=max(0.0, deadline - time.monotonic()))
        except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired: kill below
            handle.kill()
            handle.wait()
