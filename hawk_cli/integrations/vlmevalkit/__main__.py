"""`python -m hawk_cli.integrations.vlmevalkit`: VLMEvalKit's inference and evaluation with HAWK pruning.

    python -m hawk_cli.integrations.vlmevalkit --data MME TextVQA_VAL --model ./Qwen2.5-VL-7B-Instruct \
        --ratio 0.8 --min-pixels 1003520 --max-pixels 12845056 --work-dir outputs/hawk-0.8

Predictions and scores land where VLMEvalKit puts them (`--work-dir`); one JSON line per dataset on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys

from hawk_cli.errors import HawkError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hawk_cli.integrations.vlmevalkit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", nargs="+", required=True, help="VLMEvalKit dataset names, e.g. MME TextVQA_VAL")
    p.add_argument("--model", default="builtin", help="hub id or local folder (default: builtin)")
    p.add_argument("--name", default=None, help="model name in VLMEvalKit's tables and files (default: hawk-<ratio>)")
    p.add_argument("--ratio", type=float, default=0.8, help="fraction of visual tokens REMOVED (0: unpruned)")
    p.add_argument("--scorer", default=None, help="hawk, hawk-uniform, random, ... (default: the model's own)")
    p.add_argument("--weights", default=None, help="head-importance file from 'hawk calibrate'")
    p.add_argument("--min-pixels", type=int, default=None, help="VLMEvalKit's Qwen2.5-VL: 1003520 (1280*28*28)")
    p.add_argument("--max-pixels", type=int, default=None, help="VLMEvalKit's Qwen2.5-VL: 12845056 (16384*28*28)")
    p.add_argument("--max-new-tokens", type=int, default=2048)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--attn", default="sdpa")
    p.add_argument("--work-dir", default="./outputs")
    p.add_argument("--judge", default="exact_matching", help="VLMEvalKit judge (exact_matching needs no API key)")
    p.add_argument("--nproc", type=int, default=4)
    return p


def main(argv: list[str] | None = None) -> int:
    from hawk_cli.integrations.vlmevalkit.launcher import run

    args = parser().parse_args(argv)
    name = args.name or f"hawk-{args.ratio:g}"
    model_kwargs = dict(
        pretrained=args.model,
        ratio=args.ratio,
        scorer=args.scorer,
        weights=args.weights,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
        max_new_tokens=args.max_new_tokens,
        device=args.device,
        dtype=args.dtype,
        attn=args.attn,
    )
    try:
        runs = run(args.data, name, args.work_dir, model_kwargs, judge=args.judge, nproc=args.nproc)
    except HawkError as error:
        sys.stderr.write(f"hawk: error: {error.render()}\n")
        return error.exit_code
    for done in runs:
        if done.results is None and not done.notes:  # another rank under torchrun: rank 0 reports
            continue
        results = done.results.to_dict() if hasattr(done.results, "to_dict") else done.results
        sys.stdout.write(
            json.dumps(
                {
                    "model": name,
                    "dataset": done.dataset,
                    "ratio": args.ratio,
                    "visual_tokens": done.visual_tokens,
                    "visual_tokens_kept": done.visual_tokens_kept,
                    "predictions": done.prediction_file,
                    "results": results,
                    "notes": done.notes,
                },
                default=str,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
