"""hawk's VLMEvalKit model class and launcher: registered in VLMEvalKit's model table at run time, run through its
inference loop on the built-in model's held-out questions, they answer exactly as `hawk eval` does.

Always: a stand-in `vlmeval` (the four names the launcher uses, with VLMEvalKit's contracts: `supported_VLM`
entries built by name, `set_dump_image`, `dataset.build_prompt`, `model.generate(message=..., dataset=...)`, a
prediction file, `dataset.evaluate`). When VLMEvalKit itself is importable: its real `build_dataset` (a custom
dataset from a local TSV, as VLMEvalKit documents for your own data) and `infer_data_job`, in a fresh interpreter.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import SYNTHETIC_N as N

from hawk_cli.integrations.lmms_eval.synthetic import is_correct
from hawk_cli.integrations.vlmevalkit import HawkVLM
from hawk_cli.integrations.vlmevalkit.launcher import run
from hawk_cli.io.models import builtin_dir
from hawk_cli.synthetic.scenes import heldout_set

ROOT = Path(__file__).resolve().parent.parent
MODEL_KWARGS = dict(pretrained="builtin", ratio=0.8, device="cpu", max_new_tokens=2)  # hawk eval's 2 tokens

pytestmark = pytest.mark.skipif(
    not (builtin_dir() / "model.safetensors").is_file(), reason="the built-in model is not installed in this checkout"
)


class StandInDataset:
    """An image VQA dataset with VLMEvalKit's interface, holding the synthetic held-out questions."""

    def __init__(self, name: str, image_root: Path) -> None:
        self.dataset_name, self.image_root = name, image_root
        questions = heldout_set(N)
        self.data = [{"index": i, "question": q.question, "answer": q.answer} for i, q in enumerate(questions)]
        self._images = {i: q.image for i, q in enumerate(questions)}

    def dump_image(self, line) -> list[str]:
        path = self.image_root / f"{line['index']}.png"
        self._images[line["index"]].save(path)
        return [str(path)]

    def build_prompt(self, line) -> list[dict]:
        return [
            *({"type": "image", "value": p} for p in self.dump_image(line)),
            {"type": "text", "value": line["question"]},
        ]

    def evaluate(self, eval_file, **judge_kwargs) -> dict:
        predictions = json.loads(Path(eval_file).read_text())
        correct = [is_correct(line, predictions[str(line["index"])]) for line in self.data]
        return {"exact_match": sum(correct) / len(correct), "judge": judge_kwargs.get("model")}


def stand_in_vlmeval(tmp_path: Path) -> SimpleNamespace:
    supported_VLM: dict = {}

    def infer_data_job(model, work_dir, model_name, dataset, verbose=False, api_nproc=4):
        model = supported_VLM[model_name]() if isinstance(model, str) else model  # as VLMEvalKit builds models
        model.set_dump_image(dataset.dump_image)
        predictions = {}
        for line in dataset.data:
            if model.use_custom_prompt(dataset.dataset_name):
                struct = model.build_prompt(line, dataset=dataset.dataset_name)
            else:
                struct = dataset.build_prompt(line)
            predictions[str(line["index"])] = model.generate(message=struct, dataset=dataset.dataset_name)
        Path(get_pred_file_path(work_dir, model_name, dataset.dataset_name)).write_text(json.dumps(predictions))
        return model

    def get_pred_file_path(work_dir, model_name, dataset_name, use_env_format=True):
        return str(Path(work_dir) / f"{model_name}_{dataset_name}.json")

    return SimpleNamespace(
        config=SimpleNamespace(supported_VLM=supported_VLM),
        dataset=SimpleNamespace(build_dataset=lambda name: StandInDataset(name, tmp_path)),
        inference=SimpleNamespace(infer_data_job=infer_data_job),
        smp=SimpleNamespace(get_pred_file_path=get_pred_file_path),
    )


def test_the_launcher_registers_hawk_and_vlmevalkits_loop_gives_hawk_evals_answers(tmp_path, synthetic_eval_norm):
    vlmeval = stand_in_vlmeval(tmp_path)
    done = run(["hawk_synthetic"], "hawk-0.8", str(tmp_path), MODEL_KWARGS, vlmeval=vlmeval)[0]
    entry = vlmeval.config.supported_VLM["hawk-0.8"]
    assert isinstance(entry, partial) and entry.func is HawkVLM and entry.keywords == MODEL_KWARGS
    predictions = json.loads(Path(done.prediction_file).read_text())
    assert [predictions[str(i)] for i in range(N)] == synthetic_eval_norm.answers
    assert done.results == {"exact_match": sum(synthetic_eval_norm.correct.values()) / N, "judge": "exact_matching"}
    assert (done.visual_tokens, done.visual_tokens_kept) == (N * 256, N * 52)


def test_message_shapes_vlmevalkit_sends_are_read_in_order(tmp_path):
    image = tmp_path / "a.png"
    heldout_set(1)[0].image.save(image)
    model = HawkVLM.__new__(HawkVLM)  # the parsing needs no model
    assert model.preproc_content("hi") == [{"type": "text", "value": "hi"}]
    assert model.preproc_content([str(image), "what color is the triangle ?"]) == [
        {"type": "image", "value": str(image)},
        {"type": "text", "value": "what color is the triangle ?"},
    ]
    assert model.use_custom_prompt("MME") is False


def test_the_launcher_says_how_to_install_vlmevalkit_when_it_is_missing(capsys):
    if importlib.util.find_spec("vlmeval") is not None:
        pytest.skip("VLMEvalKit is installed here")
    from hawk_cli.integrations.vlmevalkit.__main__ import main

    assert main(["--data", "MME"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hawk: error: VLMEvalKit is not importable") and "pip install -e VLMEvalKit" in err


REAL_SCRIPT = r"""
import json, sys
import pandas as pd
from hawk_cli.integrations.vlmevalkit.launcher import run
done = run(["hawk_synthetic"], "hawk-0.8", sys.argv[1], json.loads(sys.argv[2]))[0]
table = pd.read_csv(done.prediction_file, sep="\t")
print("RESULT " + json.dumps({"answers": [str(a) for a in table.sort_values("index")["prediction"]],
                              "notes": done.notes, "kept": done.visual_tokens_kept}))
"""


@pytest.mark.skipif(
    importlib.util.find_spec("vlmeval") is None,
    reason="VLMEvalKit is not installed (it is not on PyPI: install it from its repository to run "
    "this through its real build_dataset and infer_data_job)",
)
def test_vlmevalkits_real_inference_loop_gives_hawk_evals_answers(tmp_path, synthetic_eval_norm):
    data, work = tmp_path / "LMUData", tmp_path / "outputs"
    data.mkdir(), work.mkdir()
    rows = []
    for index, q in enumerate(heldout_set(N)):
        buffer = io.BytesIO()
        q.image.save(buffer, format="PNG")
        rows.append(f"{index}\t{base64.b64encode(buffer.getvalue()).decode()}\t{q.question}\t{q.answer}")
    (data / "hawk_synthetic.tsv").write_text("index\timage\tquestion\tanswer\n" + "\n".join(rows) + "\n")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LMUData": str(data),
        "PRED_FORMAT": "tsv",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", REAL_SCRIPT, str(work), json.dumps(MODEL_KWARGS)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[len("RESULT ") :])
    assert result["answers"] == synthetic_eval_norm.answers
    assert result["kept"] == N * 52
    assert "no evaluator" in result["notes"][0]  # VLMEvalKit scores no custom VQA data; hawk eval's rule does
