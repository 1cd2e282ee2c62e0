"""One JSONL request made ready for a batch: what worker threads and forked workers run."""

from __future__ import annotations

from hawk_cli.io.requests import load_request


def prepare_request(session, spec, fps: float):
    """Worker thread: open the files, resize images and write the chat text (no tokenizer call, no device
    work); image patches are finished on the device when the batch is moved there (see the adapter's prompts)."""
    request = load_request(spec, fps)
    return request, session.prompts.encode(request, defer_pixels=True)
