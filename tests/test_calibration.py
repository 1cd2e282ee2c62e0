"""Calibration engine and data: Eq. 3 by hand, a head built to carry the answer ranks first under both methods,
the ablation hook leaves the model unchanged, batched replicas match the plain greedy run, DATA parsing."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import random_image, tiny_image_processor, tiny_model, tiny_tokenizer

from hawk_cli.adapters import adapter_for
from hawk_cli.adapters.qwen2_vl.prompts import build_inputs
from hawk_cli.engine.generation import GenerationSettings, generate
from hawk_cli.engine.session import HawkSession
from hawk_cli.errors import InputError, UsageError
from hawk_cli.io.calibration_data import load_calibration_data
from hawk_cli.io.models import LoadedModel
from hawk_cli.io.requests import Request
from hawk_cli.tasks.calibration import CalibrationSettings, ablate_heads, calibrate, eq3, replicated_pass, sample_drops

# --- Eq. 3 ---------------------------------------------------------------------------------------------------


def test_eq3_matches_a_hand_worked_example():
    # subset A: drops (0.5, 0.2, -0.1) -> shift by -0.1 -> (0.6, 0.3, 0) -> /0.9 -> (2/3, 1/3, 0)
    # subset B: drops (1.0, 3.0, 2.0)  -> shift by 1.0  -> (0, 2, 1)     -> /3   -> (0, 2/3, 1/3)
    # mean over subsets -> (1/3, 1/2, 1/6)
    weights = eq3(torch.tensor([[0.5, 0.2, -0.1], [1.0, 3.0, 2.0]]))
    assert weights.dtype == torch.float32
    assert torch.allclose(weights, torch.tensor([1 / 3, 1 / 2, 1 / 6]), atol=1e-7)
    assert abs(float(weights.sum()) - 1) < 1e-6


def test_eq3_subset_with_equal_drops_counts_as_uniform():
    weights = eq3(torch.tensor([[0.5, 0.2, -0.1], [0.4, 0.4, 0.4]]))
    assert torch.allclose(weights, (torch.tensor([2 / 3, 1 / 3, 0.0]) + 1 / 3) / 2, atol=1e-7)


# --- the model side ------------------------------------------------------------------------------------------

DOMINANT = 2


def _session(model) -> HawkSession:
    loaded = LoadedModel(
        model=model,
        tokenizer=tiny_tokenizer(),
        image_processor=tiny_image_processor(),
        name="tiny",
        path="tiny",
        device=torch.device("cpu"),
        dtype=torch.float32,
        attn="sdpa",
        is_builtin=False,
    )
    return HawkSession(loaded)


def _dominant_head_model(head: int = DOMINANT, scale: float = 8.0):
    """A tiny model whose layer-0 head `head` carries the answer: its slice of o_proj is scaled up."""
    model = tiny_model("qwen2_5_vl")
    projection = model.model.language_model.layers[0].self_attn.o_proj
    width = projection.in_features // model.config.get_text_config().num_attention_heads
    with torch.no_grad():
        projection.weight[:, head * width : (head + 1) * width] *= scale
    return model


@pytest.fixture(scope="module")
def dominant():
    session = _session(_dominant_head_model())
    data = load_calibration_data("builtin:4")
    inputs = build_inputs(
        session.tokenizer, session.loaded.image_processor, [Request(s.question, s.images()) for s in data.samples]
    )
    with torch.inference_mode():
        greedy = generate(
            session.adapter,
            inputs,
            None,
            GenerationSettings(ratio=0.0, max_new_tokens=3, record_logits=True),
            session.eos_ids,
        )
        prefill = session.adapter.build_prefill(inputs, session.adapter.encode_vision(inputs))
    return session, data, greedy, prefill


def test_both_methods_rank_the_dominant_head_first(dominant):
    session, data, greedy, prefill = dominant
    with torch.inference_mode():
        ablation, _ = sample_drops(session.adapter, prefill, 0, "ablation", greedy.tokens, session.eos_ids, 3)
    assert int(eq3(ablation.mean(0, keepdim=True)).argmax()) == DOMINANT
    result = calibrate(session, data, CalibrationSettings(method="kl", batch_size=3, max_new_tokens=3))
    assert int(result.importance.argmax()) == DOMINANT
    assert result.subset_drops.shape == (len(result.subsets), 4) and abs(float(result.importance.sum()) - 1) < 1e-6
    others = torch.cat([result.subset_drops[:, :DOMINANT], result.subset_drops[:, DOMINANT + 1 :]], dim=1)
    assert (result.subset_drops[:, DOMINANT] > 5 * others.max(1).values).all()


def test_unablated_replica_reproduces_the_plain_greedy_run(dominant):
    """Answer tokens sit at the unpruned run's positions: the teacher-forced log-likelihood of the greedy
    answer in replica 0 equals the one computed from `generate`'s own step logits."""
    session, _, greedy, prefill = dominant
    with torch.inference_mode():
        score, measured = replicated_pass(session.adapter, prefill, [0, 1, 2, 3], 0, greedy.tokens, session.eos_ids, 3)
    expected = torch.zeros(len(greedy.tokens), dtype=torch.float64)
    for step, logits in enumerate(greedy.step_logits):
        logp = logits.log_softmax(-1)
        for row, tokens in enumerate(greedy.tokens):
            if step < len(tokens):
                expected[row] += float(logp[row, tokens[step]])
    assert torch.allclose(score[0], expected, atol=1e-4)
    assert measured.tolist() == [len(t) for t in greedy.tokens]


def test_heads_split_over_passes_give_the_same_drops(dominant):
    session, _, greedy, prefill = dominant
    with torch.inference_mode():
        together, _ = sample_drops(session.adapter, prefill, 0, "ablation", greedy.tokens, session.eos_ids, 3)
        split, _ = sample_drops(
            session.adapter, prefill, 0, "ablation", greedy.tokens, session.eos_ids, 3, heads_per_pass=3
        )
    assert torch.allclose(together, split, atol=1e-4)


def test_ablation_hook_leaves_the_model_unchanged():
    model = tiny_model("qwen2_5_vl")
    session = _session(model)
    tokenizer, processor = session.tokenizer, session.loaded.image_processor
    inputs = build_inputs(tokenizer, processor, [Request("what color is the circle ?", (random_image(112, 112, 3),))])
    projection = session.adapter.head_output_projection(0)

    def logits():
        with torch.inference_mode():
            return model(**{k: v for k, v in vars(inputs).items() if v is not None and k != "extras"}).logits

    before = logits()
    with ablate_heads(projection, torch.tensor([[True, False, True, True]])):
        during = logits()
    assert not torch.equal(before, during)  # the hook did act
    data = load_calibration_data("builtin:2")
    calibrate(session, data, CalibrationSettings(method="ablation", batch_size=2))
    calibrate(session, data, CalibrationSettings(method="kl", batch_size=2, max_new_tokens=2))
    with pytest.raises(KeyboardInterrupt):  # an interrupted run removes its hook too
        calibrate(session, data, CalibrationSettings(), progress=lambda n: (_ for _ in ()).throw(KeyboardInterrupt))
    assert len(projection._forward_pre_hooks) == 0
    assert torch.equal(before, logits())


def test_layer_out_of_range_is_a_usage_error():
    session = _session(tiny_model("qwen2_5_vl"))
    with pytest.raises(UsageError, match=r"^layer must be in \[0, 2\]"):
        calibrate(session, load_calibration_data("builtin:1"), CalibrationSettings(layer=3))
    with pytest.raises(UsageError, match="unknown calibration method 'fisher'"):
        CalibrationSettings(method="fisher")


# --- DATA ----------------------------------------------------------------------------------------------------


def _jsonl(folder, lines, name="questions.jsonl"):
    path = folder / name
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_folder_and_jsonl_data_with_subsets_limit_and_fingerprint(tmp_path):
    random_image(64, 64, 1).save(tmp_path / "a.png")
    (tmp_path / "img").mkdir()
    random_image(64, 64, 2).save(tmp_path / "img" / "b.png")
    _jsonl(
        tmp_path,
        [
            {"image": "a.png", "question": "what color is the circle ?", "answer": "red", "subset": "x"},
            "",
            {"image": ["img/b.png"], "question": "how many stars are there ?", "answer": 2},
            {"image": "a.png", "question": "what shape is the red object ?"},
        ],
    )
    data = load_calibration_data(str(tmp_path))
    assert [s.subset for s in data.samples] == ["x", "all", "all"]
    assert data.samples[1].answer == "2" and data.samples[2].answer is None and not data.labelled
    assert data.subset_counts() == {"x": 1, "all": 2}
    assert data.samples[1].images()[0].size == (64, 64)
    same = load_calibration_data(str(tmp_path / "questions.jsonl"))
    assert same.fingerprint == data.fingerprint and len(data.fingerprint) == 64
    assert len(load_calibration_data(str(tmp_path), limit=1).samples) == 1
    random_image(64, 64, 9).save(tmp_path / "a.png")  # same names, other pixels: another fingerprint
    assert load_calibration_data(str(tmp_path)).fingerprint != data.fingerprint
    with pytest.raises(InputError) as raised:
        data.require_answers()
    assert "line 4 has no 'answer'" in raised.value.render() and "method=kl" in raised.value.render()


def test_builtin_data_is_the_calibration_generator():
    data = load_calibration_data("builtin:6")
    assert len(data.samples) == 6 and data.labelled
    assert set(data.subset_counts()) <= {"color", "shape", "digit", "count"}
    assert data.fingerprint == load_calibration_data("builtin:6").fingerprint
    assert len(load_calibration_data("builtin:6", limit=2).samples) == 2


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda d: str(d / "nope"), "calibration data '{d}/nope' does not exist"),
        (lambda d: str(d), "has no questions.jsonl"),
        (
            lambda d: str(_jsonl(d, [{"image": "a.png", "question": "q ?"}, "{not json"], "q.jsonl")),
            "line 2 is not valid JSON",
        ),
        (
            lambda d: str(_jsonl(d, [{"image": "gone.png", "question": "q ?"}], "q.jsonl")),
            "line 1: image 'gone.png' does not exist",
        ),
        (lambda d: str(_jsonl(d, [{"image": "a.png"}], "q.jsonl")), "line 1 has no 'question'"),
        (lambda d: str(_jsonl(d, ["[1, 2]"], "q.jsonl")), "line 1 is not a JSON object"),
        (lambda d: str(_jsonl(d, [""], "q.jsonl")), "holds no questions"),
        (lambda d: "builtin:lots", "'builtin:lots' is not builtin:N"),
    ],
)
def test_bad_data_is_one_clear_error(tmp_path, make, fragment):
    random_image(32, 32).save(tmp_path / "a.png")
    with pytest.raises((InputError, UsageError)) as raised:
        load_calibration_data(make(tmp_path))
    assert fragment.format(d=tmp_path) in raised.value.render()
    assert "\n" not in raised.value.render()


def test_adapter_exposes_the_output_projection_of_every_layer():
    model = tiny_model("qwen2_vl")
    adapter = adapter_for(model, tiny_tokenizer())
    assert adapter.head_output_projection(1) is model.model.language_model.layers[1].self_attn.o_proj


def test_shared_image_prefixes_give_the_same_drops(dominant):
    """builtin data asks 2 questions per scene: the shared-prefix path must equal running every prompt whole."""
    session, _, greedy, prefill = dominant
    from hawk_cli.tasks.calibration import shared_prefixes

    plan = shared_prefixes(prefill, session.adapter.tokens.vision_end)
    assert plan is not None and plan.group.tolist() == [0, 0, 1, 1]
    for method, targets in (("ablation", greedy.tokens), ("kl", None)):
        with torch.inference_mode():
            shared, _ = sample_drops(session.adapter, prefill, 0, method, targets, session.eos_ids, 3)
            whole, _ = sample_drops(
                session.adapter, prefill, 0, method, targets, session.eos_ids, 3, share_prefixes=False
            )
        assert torch.allclose(shared, whole, atol=1e-4), method
