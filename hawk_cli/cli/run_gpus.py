"""`hawk run --input FILE --gpus 0,1,...`: the file split over GPUs, one `hawk run` process per GPU, one output.

Why a flag on `hawk run` rather than `torchrun` / `accelerate launch`: the workers never talk to each other (no
process group, no collective), so a launcher's rendezvous buys nothing, and the parent must own the merge, the
failure records and Ctrl-C anyway. Each worker is `python -m hawk_cli run --input SHARD` with
CUDA_VISIBLE_DEVICES set to its GPU, so it loads, batches and isolates failures exactly as a one-GPU run does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from hawk_cli.cli.output import Output
from hawk_cli.errors import InputError, Interrupted, ResourceError
from hawk_cli.serving.multi_gpu import WorkerHandle, WorkerTask


def worker_flags(**options: object) -> list[str]:
    """The worker's `hawk run` flags from the parent's option values (None / False: left out)."""
    flags: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is None or value is False:
            continue
        flags.extend([flag] if value is True else [flag, str(value)])
    return flags


def subprocess_launcher(flags: list[str]) -> Callable[[WorkerTask], subprocess.Popen]:
    """Starts `python -m hawk_cli run --input SHARD FLAGS` on one GPU, its stdout into the shard's output file.
    GPU indices count the GPUs this process sees: under CUDA_VISIBLE_DEVICES=2,3, `--gpus 0,1` means 2 and 3."""
    visible = [part.strip() for part in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if part.strip()]

    def launch(task: WorkerTask) -> subprocess.Popen:
        index = int(task.gpu)
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": visible[index] if index < len(visible) else task.gpu}
        command = [sys.executable, "-m", "hawk_cli", "run", "--input", str(task.input_path), "--quiet", *flags]
        return subprocess.Popen(command, stdout=task.output, env=env)

    return launch


def check_gpus_exist(gpus: list[str]) -> None:
    """Where CUDA is available, every index names a visible GPU. (Without CUDA the workers run on the CPU, as a
    one-process `hawk run` does: how the splitter is exercised on machines without GPUs.)"""
    import torch

    if not torch.cuda.is_available():
        return
    count = torch.cuda.device_count()
    missing = [gpu for gpu in gpus if int(gpu) >= count]
    if missing:
        raise ResourceError(
            f"--gpus names GPU {missing[0]}, but {count} GPU{'' if count == 1 else 's'} "
            f"{'is' if count == 1 else 'are'} visible",
            f"Use indices 0 to {count - 1}",
        )


def run_over_gpus(
    out: Output,
    input_file: str,
    gpus: str,
    output: str | None,
    force: bool,
    flags: list[str],
    launch: Callable[[WorkerTask], WorkerHandle] | None = None,
) -> int:
    from hawk_cli.io.atomic import atomic_path, check_writable
    from hawk_cli.serving.multi_gpu import parse_gpus, run_sharded

    devices = parse_gpus(gpus)
    check_gpus_exist(devices)
    path = Path(input_file)
    if not path.is_file():
        raise InputError(f"input file '{path}' does not exist", "Give a JSONL file")
    if output is not None:
        check_writable(Path(output), force)
    started = time.perf_counter()
    counts = {"done": 0, "failed": 0}
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as handle:
            records = list(run_sharded(handle, devices, launch or subprocess_launcher(flags)))
        with ExitStack() as stack:
            sink = None
            if output is not None:
                temporary = stack.enter_context(atomic_path(check_writable(Path(output), force)))
                sink = stack.enter_context(open(temporary, "w", encoding="utf-8"))
            for record in records:
                counts["done"] += 1
                if "error" in record:
                    counts["failed"] += 1
                    out.warn(f"line {record['line']} (id {record.get('id')!r}): {record['error']}")
                if sink is None:
                    out.record(record)
                else:
                    sink.write(json.dumps(record, ensure_ascii=False) + "\n")
    except KeyboardInterrupt:
        raise Interrupted("interrupted; every worker was stopped and no output file was written") from None
    seconds = time.perf_counter() - started
    out.info(
        f"{counts['done']} requests over {len(devices)} GPUs, {counts['failed']} failed, {seconds:.2f} s "
        f"({counts['done'] / max(seconds, 1e-9):.2f} requests/s, loading included)"
    )
    return 1 if counts["failed"] else 0
