"""hawk's lmms-eval model and its `hawk_synthetic` task give `hawk eval`'s answers on the same questions.

The wrapper (the harness settings, decoding keywords, batching and the task's documents and scoring) is checked
always, without lmms-eval; the whole path through lmms-eval's own evaluator runs when lmms-eval is importable
(`pip install "hawk-vlm[lmms-eval]"`), in a fresh interpreter, and is skipped with the reason otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from conftest import SYNTHETIC_BATCH as BATCH
from conftest import SYNTHETIC_N as N

from hawk_cli.errors import InputError, UsageError
from hawk_cli.integrations.lmms_eval import MODEL_CLASS_PATH, TASKS_DIR
from hawk_cli.integrations.lmms_eval.runner import Decoding, HarnessRunner, HarnessSettings, hawk_chat
from hawk_cli.integrations.lmms_eval.synthetic import doc_to_text, doc_to_visual, documents, process_results
from hawk_cli.io.models import builtin_dir

ROOT = Path(__file__).resolve().parent.parent
TASK_KWARGS = {"max_new_tokens": 2, "temperature": 0, "do_sample": False}  # hawk_synthetic.yaml's

needs_builtin = pytest.mark.skipif(
    not (builtin_dir() / "model.safetensors").is_file(), reason="the built-in model is not installed in this checkout"
)


def _harness_chats(docs):
    """The chats lmms-eval builds for a chat model from doc_to_visual + doc_to_text (its _build_user_turn)."""
    return [
        [
            {
                "role": "user",
                "content": [
                    *({"type": "image", "url": image} for image in doc_to_visual(doc)),
                    {"type": "text", "text": doc_to_text(doc)},
                ],
            }
        ]
        for doc in docs
    ]


@needs_builtin
def test_the_wrapper_answers_the_synthetic_task_exactly_as_hawk_eval(synthetic_eval_norm):
    docs = documents(N)
    runner = HarnessRunner(
        HarnessSettings.parse({"pretrained": "builtin", "ratio": "0.8", "device": "cpu", "batch_size": BATCH})
    )
    answers = runner.answer([(chat, TASK_KWARGS) for chat in _harness_chats(docs)])
    assert [text for text, _ in answers] == synthetic_eval_norm.answers
    scores = [process_results(doc, [text])["exact_match"] for doc, (text, _) in zip(docs, answers, strict=True)]
    assert sum(scores) == sum(synthetic_eval_norm.correct.values())
    assert all(output.stats.visual_tokens_kept == 52 for _, output in answers)
    # Negative control: another scorer answers differently, so the comparison above can fail.
    random = HarnessRunner(
        HarnessSettings(ratio=0.8, scorer="random", device="cpu", batch_size=BATCH), model=runner.model
    )
    assert [
        text for text, _ in random.answer([(chat, TASK_KWARGS) for chat in _harness_chats(docs)])
    ] != synthetic_eval_norm.answers


def test_task_documents_are_hawk_evals_questions_with_their_images():
    from hawk_cli.synthetic.scenes import heldout_set

    docs, questions = documents(9), heldout_set(9)
    assert [(d["question"], d["answer"], d["kind"]) for d in docs] == [
        (q.question, q.answer, q.kind) for q in questions
    ]
    assert all(doc_to_visual(d)[0].tobytes() == q.image.tobytes() for d, q in zip(docs, questions, strict=True))
    assert process_results(docs[0], [f"{docs[0]['answer'].upper()}."]) == {"exact_match": 1.0}
    assert process_results(docs[0], ["no"]) == {"exact_match": 0.0}


def test_decoding_keywords_follow_lmms_evals_conventions():
    greedy = Decoding.of({"max_new_tokens": 5, "temperature": 0, "top_p": 0.5, "until": ["\n\n"]}, 128)
    assert (greedy.do_sample, greedy.top_p, greedy.max_new_tokens) == (False, 1.0, 5)
    assert greedy.cut("yes\n\nand more") == "yes"
    sampled = Decoding.of({"temperature": 0.7, "top_p": 0.9, "top_k": 20}, 128)
    assert (sampled.do_sample, sampled.temperature, sampled.top_p, sampled.top_k, sampled.max_new_tokens) == (
        True,
        0.7,
        0.9,
        20,
        128,
    )
    with pytest.raises(UsageError, match="beam search"):
        Decoding.of({"num_beams": 4}, 128)


def test_model_arguments_are_converted_and_unknown_ones_refused():
    settings = HarnessSettings.parse(
        {"pretrained": "builtin", "ratio": "0.9", "batch_size": "4", "scorer": "None", "max_pixels": 1003520.0}
    )
    assert (settings.ratio, settings.batch_size, settings.scorer, settings.max_pixels) == (0.9, 4, None, 1003520)
    with pytest.raises(UsageError, match="unknown model argument"):
        HarnessSettings.parse({"ratoi": 0.8})
    with pytest.raises(UsageError, match="batch_size must be an integer"):
        HarnessSettings.parse({"batch_size": "2.5"})


def test_harness_messages_become_hawk_chats():
    chat = hawk_chat(
        [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "image", "url": "a.png"}, {"type": "text", "text": "q"}]},
        ]
    )
    assert chat[1]["content"][0] == {"type": "image", "url": "a.png"} and chat[0]["content"] == "be brief"


def test_the_entry_point_names_the_manifest_and_the_model_class():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["lmms_eval.models"] == {"hawk": "hawk_cli.integrations.lmms_eval:manifest"}
    assert any(spec.startswith("lmms-eval") for spec in project["optional-dependencies"]["lmms-eval"])
    module, _ = MODEL_CLASS_PATH.rsplit(".", 1)
    assert (ROOT / (module.replace(".", "/") + ".py")).is_file()
    assert (TASKS_DIR / "hawk_synthetic" / "hawk_synthetic.yaml").is_file()


def _stand_in_lmms_eval(monkeypatch):
    """The few names `model.py` imports from lmms-eval and loguru, as minimal stand-ins (this test only), so the
    wrapper's request handling runs where lmms-eval is not installed."""
    import types

    class Lmms:  # lmms_eval.api.model.lmms: rank, cache_hook, task_dict
        def __init__(self):
            self._rank, self._world_size = 0, 1
            self.cache_hook = types.SimpleNamespace(calls=[])
            self.cache_hook.add_partial = lambda *args: self.cache_hook.calls.append(args)

        @property
        def rank(self):
            return self._rank

        def _apply_system_prompt(self, messages, prompt):
            return [{"role": "system", "content": prompt}, *messages]

        def _resolve_system_prompt(self, prompt):
            return prompt

    modules = {
        "lmms_eval": types.ModuleType("lmms_eval"),
        "lmms_eval.api": types.ModuleType("lmms_eval.api"),
        "lmms_eval.api.instance": types.SimpleNamespace(
            GenerationResult=dict, Instance=object, TokenCounts=dict, __name__="lmms_eval.api.instance"
        ),
        "lmms_eval.api.model": types.SimpleNamespace(lmms=Lmms, __name__="lmms_eval.api.model"),
        "loguru": types.SimpleNamespace(logger=types.SimpleNamespace(info=lambda *a, **k: None)),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    import importlib

    name = "hawk_cli.integrations.lmms_eval.model"
    monkeypatch.setitem(sys.modules, name, None)  # undone after the test: the module as it was (or absent)
    del sys.modules[name]
    return importlib.import_module(name)


@needs_builtin
def test_likelihood_requests_score_targets_after_the_pruned_prompt_and_agree_with_hawk_eval(
    monkeypatch, synthetic_eval_norm
):
    """lmms-eval's loglikelihood requests (context, target, doc_to_visual, doc_id, task, split): the target is
    greedy exactly where `hawk eval`'s answer on the same question starts with it, and the right answer of a
    question the model gets right scores above a wrong one."""
    import types

    plugin = _stand_in_lmms_eval(monkeypatch)
    docs = documents(N)
    model = plugin.HawkLmms(pretrained="builtin", ratio="0.8", device="cpu", batch_size=str(BATCH))
    model.task_dict = {"hawk_synthetic": {"test": docs}}

    def request(doc_id, target):
        return types.SimpleNamespace(
            args=(doc_to_text(docs[doc_id]), target, doc_to_visual, doc_id, "hawk_synthetic", "test")
        )

    scored = model.loglikelihood([request(i, doc["answer"]) for i, doc in enumerate(docs)])
    first_words = [answer.split()[0] if answer.split() else "" for answer in synthetic_eval_norm.answers]
    assert [greedy for _, greedy in scored] == [
        word == doc["answer"] for word, doc in zip(first_words, docs, strict=True)
    ]
    assert len(model.cache_hook.calls) == N and model.cache_hook.calls[0][0] == "loglikelihood"
    # a target given as a function of the document (lmms-eval's doc_to_target) is the same request
    assert model.loglikelihood([request(0, lambda doc: doc["answer"])]) == scored[:1]
    right = next(i for i, (_, greedy) in enumerate(scored) if greedy)
    wrong = "purple" if docs[right]["answer"] != "purple" else "red"
    ((logprob, greedy),) = model.loglikelihood([request(right, wrong)])
    assert not greedy and logprob < scored[right][0]
    with pytest.raises(InputError, match="must be text"):
        model.loglikelihood([request(0, lambda doc: 3)])


LMMS_SCRIPT = r"""
import json, sys
from lmms_eval import evaluator
from lmms_eval.models import MODEL_REGISTRY_V2
from lmms_eval.tasks import TaskManager
from hawk_cli.integrations.lmms_eval import TASKS_DIR, manifest
if "hawk" not in MODEL_REGISTRY_V2.list_model_names():  # running from a checkout: no installed entry point
    MODEL_REGISTRY_V2.register_manifest(manifest())
results = evaluator.simple_evaluate(model="hawk", model_args="pretrained=builtin,ratio=0.8,device=cpu",
                                    tasks=["hawk_synthetic"], limit=int(sys.argv[1]), batch_size=int(sys.argv[2]),
                                    task_manager=TaskManager(include_path=str(TASKS_DIR)), log_samples=True)
samples = results["samples"]["hawk_synthetic"]
print("RESULT " + json.dumps({
    "accuracy": results["results"]["hawk_synthetic"]["exact_match,none"],
    "answers": [s["resps"][0][0] if isinstance(s["resps"][0], list) else s["resps"][0]
                for s in sorted(samples, key=lambda s: s["doc_id"])],
    "input_tokens": [(s.get("token_counts") or [{}])[0].get("input_tokens")
                     for s in sorted(samples, key=lambda s: s["doc_id"])]}))
"""


@needs_builtin
@pytest.mark.skipif(
    importlib.util.find_spec("lmms_eval") is None,
    reason="lmms-eval is not installed (pip install 'hawk-vlm[lmms-eval]' runs this end to end)",
)
def test_lmms_eval_runs_the_task_end_to_end_with_hawk_evals_accuracy(synthetic_eval_norm):
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", LMMS_SCRIPT, str(N), str(BATCH)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    assert result["accuracy"] == pytest.approx(sum(synthetic_eval_norm.correct.values()) / N)
    assert result["answers"] == synthetic_eval_norm.answers
    # Token accounting: each answer's input tokens are its PRUNED prompt, 204 of the 256 visual tokens fewer.
    from hawk_cli.api import load
    from hawk_cli.io.requests import Request

    session = load("builtin", device="cpu").session
    full = [
        int(
            session.build_inputs([Request(question=d["question"], images=tuple(doc_to_visual(d)))]).attention_mask.sum()
        )
        for d in documents(N)
    ]
    assert result["input_tokens"] == [length - 256 + 52 for length in full]
