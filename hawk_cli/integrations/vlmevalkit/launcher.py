"""Run VLMEvalKit's own inference and evaluation with `HawkVLM`, registered in its model table at run time.

`vlmeval` is VLMEvalKit's package (installed from its repository); a stand-in module with the same four names can
be passed instead (the tests do): `config.supported_VLM`, `dataset.build_dataset`, `inference.infer_data_job`,
`smp.get_pred_file_path`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from functools import partial
from types import SimpleNamespace
from typing import Any

from hawk_cli.errors import ResourceError
from hawk_cli.integrations.vlmevalkit.model import HawkVLM


@dataclass
class DatasetRun:
    dataset: str
    prediction_file: str
    results: Any  # what the dataset's `evaluate` returned (a dict or a pandas DataFrame)
    visual_tokens: int = 0
    visual_tokens_kept: int = 0
    notes: list[str] = field(default_factory=list)


def import_vlmeval() -> SimpleNamespace:
    """VLMEvalKit's modules, or a clear error saying how to install it."""
    try:
        return SimpleNamespace(
            config=importlib.import_module("vlmeval.config"),
            dataset=importlib.import_module("vlmeval.dataset"),
            inference=importlib.import_module("vlmeval.inference"),
            smp=importlib.import_module("vlmeval.smp"),
        )
    except ImportError as error:
        raise ResourceError(
            f"VLMEvalKit is not importable ({error})",
            "Install it from its repository: git clone https://github.com/open-compass/VLMEvalKit "
            "&& pip install -e VLMEvalKit",
        ) from None


def register(vlmeval, name: str, **model_kwargs) -> str:
    """Add `name` to VLMEvalKit's `supported_VLM`, built as `HawkVLM(**model_kwargs)` like its own entries."""
    vlmeval.config.supported_VLM[name] = partial(HawkVLM, **model_kwargs)
    return name


def run(
    datasets: list[str],
    name: str,
    work_dir: str,
    model_kwargs: dict,
    judge: str = "exact_matching",
    nproc: int = 4,
    vlmeval=None,
    dataset_kwargs: dict | None = None,
) -> list[DatasetRun]:
    """Register the model, then per dataset: VLMEvalKit's `build_dataset`, `infer_data_job` and the dataset's
    `evaluate` (judge `exact_matching` needs no API key; VLMEvalKit's GPT judges read their keys from its .env)."""
    vlmeval = vlmeval or import_vlmeval()
    register(vlmeval, name, **model_kwargs)
    rank = _start_distributed()
    runs, model = [], name  # the name the first time (VLMEvalKit builds it), then the model it returned
    for dataset_name in datasets:
        dataset = vlmeval.dataset.build_dataset(dataset_name, **(dataset_kwargs or {}))
        if dataset is None:
            raise ResourceError(
                f"VLMEvalKit could not build dataset '{dataset_name}'",
                "Check the name against VLMEvalKit's supported datasets",
            )
        before = _token_counts(model)
        model = vlmeval.inference.infer_data_job(
            model=model, work_dir=work_dir, model_name=name, dataset=dataset, verbose=False, api_nproc=nproc
        )
        after = _token_counts(model)
        prediction_file = vlmeval.smp.get_pred_file_path(work_dir, name, dataset_name, use_env_format=True)
        notes, results = [], None
        if rank == 0:  # VLMEvalKit gathers every rank's predictions into rank 0's file
            try:
                results = dataset.evaluate(prediction_file, model=judge, nproc=nproc, verbose=False)
            except NotImplementedError:  # VLMEvalKit's custom VQA datasets (a local TSV) have no scorer
                notes.append(
                    f"VLMEvalKit has no evaluator for '{dataset_name}'; the predictions are in {prediction_file}"
                )
        runs.append(
            DatasetRun(
                dataset=dataset_name,
                prediction_file=prediction_file,
                results=results,
                visual_tokens=after[0] - before[0],
                visual_tokens_kept=after[1] - before[1],
                notes=notes,
            )
        )
    return runs


def _token_counts(model) -> tuple[int, int]:
    """Visual tokens seen and kept so far by a built HawkVLM (0, 0 before VLMEvalKit builds it, or when it reused
    earlier predictions)."""
    return int(getattr(model, "visual_tokens", 0)), int(getattr(model, "visual_tokens_kept", 0))


def _start_distributed() -> int:
    """Under torchrun (WORLD_SIZE > 1), the process group VLMEvalKit's inference waits on, as its run.py starts it
    (NCCL on GPUs); this process's rank, 0 when alone."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank()
