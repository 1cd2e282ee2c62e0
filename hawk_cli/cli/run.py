"""`hawk run IMAGE... QUESTION`: answer a question about images, pruning visual tokens first."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from hawk_cli.cli.options import (AttnOpt, DeviceOpt, DtypeOpt, JsonOpt, MaxNewTokensOpt, ModelOpt, QuietOpt,
                                  RatioOpt, ScorerOpt, WeightsOpt)
from hawk_cli.cli.output import Output
from hawk_cli.errors import InputError, UsageError

DEFAULT_RATIO = 0.8


def split_arguments(arguments: list[str]) -> tuple[list[str], str]:
    """IMAGE... QUESTION -> (images, question); QUESTION '-' is read from stdin."""
    if len(arguments) < 2:
        raise UsageError("hawk run needs at least one image and a question",
                         "Example: hawk run photo.jpg \"what is in the picture?\"")
    *images, question = arguments
    if question == "-":
        question = sys.stdin.read()
    question = question.strip()
    if not question:
        raise InputError("the question is empty", "Pass the question as the last argument, or '-' to read stdin")
    return images, question


def stats_line(stats, ratio: float, seconds: float) -> str:
    return (f"kept {stats.visual_tokens_kept}/{stats.visual_tokens} visual tokens (ratio {ratio:.2f}), "
            f"prompt {stats.prompt_tokens}\u2192{stats.prompt_tokens_kept}, {seconds:.2f} s"
            + (" (no instruction after the image: scored with the user's text)" if stats.query_fallback else ""))


def run_command(
    arguments: Annotated[list[str], typer.Argument(metavar="IMAGE... QUESTION",
                                                   help="One or more images, then the question ('-': stdin).")],
    model: ModelOpt = None,
    ratio: RatioOpt = DEFAULT_RATIO,
    weights: WeightsOpt = None,
    scorer: ScorerOpt = None,
    max_new_tokens: MaxNewTokensOpt = 32,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    attn: AttnOpt = "sdpa",
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Answer QUESTION about IMAGE(s) with HAWK pruning. The answer goes to stdout, stats to stderr.

    Examples: hawk run scene.png "what color is the circle ?" | hawk run a.jpg b.jpg "what changed?" --ratio 0.9
    | echo "how many stars are there ?" | hawk run scene.png - --json
    """
    from hawk_cli.engine.generation import GenerationSettings
    from hawk_cli.engine.session import HawkSession, versions
    from hawk_cli.io.images import load_image
    from hawk_cli.io.prompts import Request

    out = Output(json_mode=json_output, quiet=quiet)
    image_paths, question = split_arguments(arguments)
    settings = GenerationSettings(ratio=ratio, max_new_tokens=max_new_tokens)
    images = tuple(load_image(path) for path in image_paths)
    session = HawkSession.open(model, device=device, dtype=dtype, attn=attn)
    method, notices = session.make_scorer(scorer, weights)
    for notice in notices:
        out.note(notice)
    batch = session.run([Request(question=question, images=images)], method, settings)
    answer, timings = batch.answers[0], batch.result.timings
    if json_output:
        out.record({"answer": answer.text, "ratio": ratio, **method.describe(), **session.describe(),
                    **answer.stats.to_dict(), "generated_tokens": len(answer.tokens),
                    "timings": timings, "kv_cache_bytes": batch.result.kv_cache_bytes, "versions": versions()})
    else:
        out.result(answer.text)
        out.info(stats_line(answer.stats, ratio, timings["total_s"]))
