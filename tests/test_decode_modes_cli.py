"""How `hawk run` decodes: CUDA graphs by default on CUDA, eager on the CPU, `--no-cuda-graphs` and `--compile`
as the switches; the answer says which ran, and impossible choices fail in one line before the model loads."""

from __future__ import annotations

import json

import pytest
import torch
from cli_helpers import run_cli
from tiny_models import random_image

from hawk_cli.engine.session import resolve_decode_mode
from hawk_cli.errors import ResourceError, UsageError


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "scene.png"
    random_image(224, 224, 7).save(path)
    return path


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("hawk: error:")]


@pytest.mark.parametrize("flags", [[], ["--no-cuda-graphs"]])
def test_the_cpu_decodes_eagerly_and_says_so(capsys, model_dir, image_path, flags):
    code, out, err = run_cli(
        capsys,
        "run",
        image_path,
        "what color is the circle ?",
        "--model",
        model_dir,
        "--device",
        "cpu",
        "--json",
        "--max-new-tokens",
        "3",
        *flags,
    )
    assert code == 0, err
    assert json.loads(out)["decode"] == "eager"


def test_jsonl_mode_reports_its_decode_mode(capsys, model_dir, image_path, tmp_path):
    requests = tmp_path / "requests.jsonl"
    requests.write_text(
        "".join(json.dumps({"id": i, "images": [str(image_path)], "question": "what color ?"}) + "\n" for i in range(3))
    )
    code, out, err = run_cli(
        capsys,
        "run",
        "--input",
        requests,
        "--model",
        model_dir,
        "--device",
        "cpu",
        "--batch-size",
        "2",
        "--max-new-tokens",
        "3",
    )
    assert code == 0, err
    assert {json.loads(line)["decode"] for line in out.splitlines()} == {"eager"}


def test_compile_on_a_cpu_fails_in_one_line(capsys, model_dir, image_path):
    code, out, err = run_cli(capsys, "run", image_path, "q ?", "--model", model_dir, "--device", "cpu", "--compile")
    assert code == 1 and out == ""
    assert _errors(err) == [
        "hawk: error: a compiled decode step needs a CUDA device, and the model is on cpu. "
        "Decode eagerly on this device, or load the model on a GPU."
    ]


def test_compile_and_no_cuda_graphs_exclude_each_other(capsys, model_dir, image_path):
    code, _, err = run_cli(capsys, "run", image_path, "q ?", "--model", model_dir, "--compile", "--no-cuda-graphs")
    assert code == 2 and len(_errors(err)) == 1 and "exclude each other" in err


def test_auto_means_graphs_on_cuda_and_eager_elsewhere():
    assert resolve_decode_mode("auto", torch.device("cpu")) == "eager"
    assert resolve_decode_mode("auto", torch.device("cuda")) == "graphs"
    assert resolve_decode_mode("eager", torch.device("cuda")) == "eager"
    with pytest.raises(ResourceError):
        resolve_decode_mode("graphs", torch.device("cpu"))
    with pytest.raises(UsageError):
        resolve_decode_mode("fast", torch.device("cpu"))
