"""Request preparation in forked worker processes (experimental, opt-in: `HAWK_PREPARE=processes`).

Why: on a GPU the main thread is bound by Python (launching small kernels for a small model), and preparation
threads spend time per request in Python too (Pillow's file parsing, the chat template), holding the
interpreter lock the main thread needs (docs/run-workloads.md#throughput). In processes that work runs truly
beside the model.

How: a `fork` pool (Linux), like torch's DataLoader workers: the children inherit the loaded tokenizer and
image processor without pickling, and never touch the GPU. Results come back as NumPy arrays (plain pickling,
no shared-memory file descriptors) and are turned back into tensors without a copy. Children ignore SIGINT:
Ctrl-C is the parent's to handle (it cancels what is queued).
"""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import signal
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from hawk_cli.serving.prepare import prepare_request

_worker_session = None  # set in each child by _init_child, from the parent's memory (fork); never in the parent


def available() -> bool:
    return sys.platform.startswith("linux")


def process_pool(session, workers: int) -> ProcessPoolExecutor:
    """A pool of `workers` forked children preparing requests for `session` (children start on first use)."""
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_init_child,
        initargs=(session,),
    )


def prepare_task(fps: float):
    """The picklable task the pool runs for one RequestSpec."""
    return functools.partial(_prepare_in_child, fps=fps)


def _init_child(session) -> None:
    global _worker_session
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)  # preparation is one request per child; torch's pool would oversubscribe the cores
    _worker_session = session


def _prepare_in_child(spec, fps: float):
    request, encoded = prepare_request(_worker_session, spec, fps)
    return request, _to_wire(encoded)


def _to_wire(encoded):
    return dataclasses.replace(
        encoded, **{name: _map(value, lambda t: t.numpy()) for name, value in _tensor_fields(encoded)}
    )


def from_wire(result):
    """(Request, EncodedRequest) as prepared in the parent: NumPy arrays back to tensors (no copy)."""
    request, encoded = result
    return request, dataclasses.replace(
        encoded, **{name: _map(value, torch.from_numpy) for name, value in _tensor_fields(encoded)}
    )


def _tensor_fields(encoded):
    for field in dataclasses.fields(encoded):
        value = getattr(encoded, field.name)
        if isinstance(value, (torch.Tensor, np.ndarray)) or (
            isinstance(value, tuple) and value and isinstance(value[0], (torch.Tensor, np.ndarray))
        ):
            yield field.name, value


def _map(value, convert):
    return tuple(convert(v) for v in value) if isinstance(value, tuple) else convert(value)
