"""Streams of requests (JSONL mode): read ahead, prepared on worker threads while the model runs earlier
batches, run in batches of equal ratio with per-row error isolation, results in input order. Never prints."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator

from hawk_cli.errors import UsageError, failure_text
from hawk_cli.serving.prepare import prepare_request


class RequestRow:
    """A window entry: line number and id, with the parsed spec and loaded request, or the error."""

    def __init__(self, line: int, request_id: object) -> None:
        self.line, self.id = line, request_id
        self.spec = self.request = self.encoded = self.error = self.future = None

    def resolve(self) -> RequestRow:
        if self.future is not None:
            try:
                self.request, self.encoded = self.future.result()
            except Exception as error:  # noqa: BLE001 - becomes this row's error record
                self.error = error
            self.future = None
        return self


def prepare_workers(session, configured: int | None = None) -> int:
    """Threads preparing requests while a GPU runs; none on CPU, where they would compete with torch's own
    threads. `configured` (e.g. from HAWK_PREPARE_WORKERS) overrides; 0 prepares in the main thread."""
    if configured is not None:
        return configured
    if session.loaded.device.type == "cpu":
        return 0
    return max(1, min(8, (os.cpu_count() or 2) - 2))


PREPARE_MODES = ("threads", "processes")


def prepare_in_processes(mode: str = "threads") -> bool:
    """Whether the workers are forked processes (engine/prepare_processes.py) rather than threads (default).

    Processes are opt-in: measured, they beat threads only while the main thread was pinned to its own core,
    and lost with the shipped affinity (docs/run-workloads.md#throughput)."""
    if mode not in PREPARE_MODES:
        raise UsageError(f"unknown preparation mode '{mode}'", "Set HAWK_PREPARE to threads or processes")
    return mode == "processes"


class Prefetcher:
    """Reads requests on a thread and prepares them in a pool while the model runs earlier batches.

    Rows come out in input order. At most `lookahead` rows are read ahead of the batch being run.
    """

    _END = object()

    def __init__(
        self,
        items,
        prepare,
        lookahead: int,
        workers: int,
        pool=None,
        finish=None,
        on_thread_start: Callable[[], None] | None = None,
    ) -> None:
        """`pool`: an executor to prepare in instead of `workers` threads; `finish` maps its results back.
        `on_thread_start` runs first on the reader thread, which also starts the pool's workers (e.g. to set the
        CPU affinity they inherit)."""
        import queue
        import threading
        from concurrent.futures import ThreadPoolExecutor

        self._queue: queue.Queue = queue.Queue(maxsize=lookahead)
        if pool is None and workers:
            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hawk-prepare")
        self._pool, self._finish = pool, finish
        self._items, self._prepare, self._failure = items, prepare, None
        self._on_thread_start = on_thread_start
        self.last_wait_s = 0.0
        self._thread = threading.Thread(target=self._read, name="hawk-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        from hawk_cli.io.requests import BadLine

        try:
            if self._on_thread_start is not None:
                self._on_thread_start()
            for item in self._items:
                row = RequestRow(item.line, item.id)
                if isinstance(item, BadLine):
                    row.error = item.error
                else:
                    row.spec = item
                    row.future = (
                        _Finished(self._pool.submit(self._prepare, item), self._finish)
                        if self._pool
                        else _PrepareLater(self._prepare, item)
                    )
                self._queue.put(row)
        except BaseException as error:  # noqa: BLE001 - re-raised in the main thread
            self._failure = error
        finally:
            self._queue.put(self._END)

    def windows(self, batch_size: int, wait_for_full: bool) -> Iterator[list[RequestRow]]:
        """Windows of up to `batch_size` runnable rows; `last_wait_s` is how long the latest one kept the caller
        waiting for lines to arrive and rows to be prepared (0 when preparation keeps ahead of the model)."""
        import queue
        import time

        finished = False
        while not finished:
            started = time.perf_counter()
            first = self._queue.get()
            if first is self._END:
                break
            window = [first]
            runnable = int(first.spec is not None)
            while runnable < batch_size:
                try:
                    row = self._queue.get() if wait_for_full else self._queue.get_nowait()
                except queue.Empty:
                    break
                if row is self._END:
                    finished = True
                    break
                window.append(row)
                runnable += int(row.spec is not None)
            window = [row.resolve() for row in window]
            self.last_wait_s = time.perf_counter() - started
            yield window
        if self._failure is not None:
            raise self._failure

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


class _Finished:
    """A pool's future whose result is mapped by `finish` (e.g. arrays from a worker process back to tensors)."""

    def __init__(self, future, finish) -> None:
        self.future, self.finish = future, finish

    def result(self):
        result = self.future.result()
        return self.finish(result) if self.finish is not None else result


class _PrepareLater:
    """Prepared in the main thread when asked for (no workers: on a CPU device torch already uses every core)."""

    def __init__(self, function, argument) -> None:
        self.function, self.argument = function, argument

    def result(self):
        return self.function(self.argument)


def run_window(
    session,
    method,
    rows: list[RequestRow],
    default_ratio: float,
    default_tokens: int,
    default_keep_tokens: int | None = None,
) -> list:
    """Run the window's good rows in batches of one visual-token budget (a ratio, or a number of tokens kept);
    per row a result dict or an error string. A row's own budget replaces the defaults."""
    from hawk_cli.engine.generation import GenerationSettings

    outcomes: list = [failure_text(row.error) if row.error is not None else None for row in rows]
    groups: dict[float, list[int]] = {}
    for index, row in enumerate(rows):
        if row.request is not None and row.error is None:
            if row.spec.ratio is not None:
                budget = (row.spec.ratio, None)
            elif row.spec.keep_tokens is not None:
                budget = (default_ratio, row.spec.keep_tokens)
            else:
                budget = (default_ratio, default_keep_tokens)
            groups.setdefault(budget, []).append(index)
    for (group_ratio, keep_tokens), indices in groups.items():
        limits = [rows[i].spec.max_new_tokens or default_tokens for i in indices]
        settings = GenerationSettings(ratio=group_ratio, max_new_tokens=max(limits), keep_tokens=keep_tokens)
        results = session.run_isolated(
            [rows[i].request for i in indices], method, settings, [rows[i].encoded for i in indices], limits
        )
        for index, limit, (answer, timings, rows_run) in zip(indices, limits, results, strict=True):
            if isinstance(answer, BaseException):
                outcomes[index] = failure_text(answer)
                continue
            tokens = answer.tokens[:limit]  # a row asking fewer tokens: the greedy prefix of the batch's run
            outcomes[index] = {
                "answer": session.decode(tokens),
                "ratio": group_ratio if keep_tokens is None else None,
                "keep_tokens": keep_tokens,
                **answer.stats.to_dict(),
                "visual_tokens_per_image": list(answer.visual_blocks),
                "visual_tokens_kept_per_image": list(answer.kept_per_block()),
                "generated_tokens": len(tokens),
                "batch_size": rows_run,
                "batch_timings": timings,
                "_answer": answer,
            }
    return outcomes


def answer_stream(
    session,
    method,
    items: Iterable,
    *,
    batch_size: int,
    wait_for_full: bool,
    default_ratio: float,
    default_keep_tokens: int | None = None,
    default_tokens: int,
    fps: float,
    workers: int,
    processes: bool = False,
    pin_cpus: bool = True,
    on_close: Callable[[Callable[[], None]], None] | None = None,
) -> Iterator[list[tuple[RequestRow, object]]]:
    """Every parsed line of `items` (RequestSpec or BadLine) with its outcome (result dict or error string), in
    input order, one list per window (a batch and the bad lines read with it): what `hawk run --input` writes,
    and what benchmarks/jsonl_throughput.py times. `on_close` receives the cleanup to run if the consumer stops
    early (e.g. an ExitStack callback). `processes`: prepare in `workers` forked processes instead of threads
    (Linux; engine/prepare_processes.py). `pin_cpus`: with workers on a GPU, keep them off one core, left free
    for the main thread (engine/affinity.py)."""
    from hawk_cli.serving import processes as prepare_processes
    from hawk_cli.serving.affinity import HelperCpus

    lookahead = max(2 * batch_size, 16)
    helpers = HelperCpus(enabled=pin_cpus and workers > 0 and session.loaded.device.type == "cuda")
    if processes and workers and prepare_processes.available():
        pool = prepare_processes.process_pool(session, workers)
        reader = Prefetcher(
            items,
            prepare_processes.prepare_task(fps),
            lookahead=lookahead,
            workers=workers,
            pool=pool,
            finish=prepare_processes.from_wire,
            on_thread_start=helpers.confine,
        )
    else:
        reader = Prefetcher(
            items,
            lambda spec: prepare_request(session, spec, fps),
            lookahead=lookahead,
            workers=workers,
            on_thread_start=helpers.confine,
        )
    if on_close is not None:
        on_close(reader.close)
    try:
        for window in reader.windows(batch_size, wait_for_full=wait_for_full):
            outcomes = run_window(session, method, window, default_ratio, default_tokens, default_keep_tokens)
            merged: dict[int, dict] = {}  # the wait belongs to the window: added to each of its batches' timings
            for outcome in outcomes:
                if isinstance(outcome, dict):
                    timings = outcome["batch_timings"]
                    outcome["batch_timings"] = merged.setdefault(
                        id(timings), {**timings, "input_wait_s": reader.last_wait_s}
                    )
            yield list(zip(window, outcomes, strict=True))
    finally:
        reader.close()
