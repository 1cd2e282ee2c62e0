"""`hawk calibrate` on Qwen3-VL: every replica of the ablation pass carries the DeepStack features, the cached
vision outputs include them, and the shared-prefix path hands them to the prefix that holds the image."""

from __future__ import annotations

import json

import pytest
import torch
from cli_helpers import run_cli
from test_qwen3_vl_contract import DeepStackDropped
from tiny_models import random_image, tiny_image_processor, tiny_model, tiny_tokenizer

from hawk_cli.adapters import adapter_for
from hawk_cli.engine.session import HawkSession
from hawk_cli.io.calibration_data import load_calibration_data
from hawk_cli.io.models import LoadedModel
from hawk_cli.io.requests import Request
from hawk_cli.io.weights import load_head_weights
from hawk_cli.tasks import calibration
from hawk_cli.tasks.calibration import VisionCache, replicated_pass, sample_drops, shared_prefixes

# Everything here leans on transformers internals (processor, rope index, auto classes, tower outputs) that
# changed between 5.17 and 5.25: run on the oldest supported release too.
pytestmark = pytest.mark.contract
FAMILY = "qwen3_vl"


def _session(model) -> HawkSession:
    loaded = LoadedModel(
        model=model,
        tokenizer=tiny_tokenizer(),
        image_processor=tiny_image_processor(family=FAMILY),
        name="tiny",
        path="tiny",
        device=torch.device("cpu"),
        dtype=torch.float32,
        attn="sdpa",
        is_builtin=False,
    )
    return HawkSession(loaded)


@pytest.fixture(scope="module")
def builtin_batch():
    """builtin:4 asks two questions per scene: a batch where prefixes can be shared, built through VisionCache."""
    session = _session(tiny_model(FAMILY, device="cpu", dtype=torch.float32))
    data = load_calibration_data("builtin:4")
    cache = VisionCache(session.adapter, session.tokenizer, session.loaded.image_processor)
    with torch.inference_mode():
        inputs, features = cache.build([Request(s.question, s.images()) for s in data.samples], "cpu")
        prefill = session.adapter.build_prefill(inputs, features)
    return session, inputs, features, prefill


def test_vision_cache_keeps_every_encoded_output(builtin_batch):
    session, inputs, features, _ = builtin_batch
    with torch.inference_mode():
        direct = session.adapter.encode_vision(inputs)
    assert set(features) == set(direct) == {"image", "image_deepstack"}
    for name in direct:
        assert torch.equal(features[name], direct[name]), name


def test_unablated_replica_reproduces_stock_generate():
    """Replica 0's teacher-forced log-likelihood of the stock greedy answer equals the sum over the model's own
    `generate` logits; without the DeepStack features in the replicated prefill it does not (CPU, fp32)."""
    model, tokenizer = tiny_model(FAMILY, device="cpu", dtype=torch.float32), tiny_tokenizer()
    adapter = adapter_for(model, tokenizer)
    requests = [
        Request("what color is the circle ?", (random_image(224, 224, 1),)),
        Request("how many stars are there ?", (random_image(128, 160, 2),)),
    ]
    inputs = adapter.prompts(tokenizer, tiny_image_processor(family=FAMILY)).collate(requests)
    with torch.inference_mode():
        stock = model.generate(
            **adapter.stock_generate_inputs(inputs),
            max_new_tokens=3,
            min_new_tokens=3,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=0,
        )
        answers = stock.sequences[:, inputs.input_ids.shape[1] :].tolist()
        expected = sum(
            logits.float().log_softmax(-1).gather(1, torch.tensor(answers)[:, [step]]).squeeze(1).double()
            for step, logits in enumerate(stock.logits)
        )
        prefill = adapter.build_prefill(inputs, adapter.encode_vision(inputs))
        score, measured = replicated_pass(adapter, prefill, [0, 1, 2, 3], 0, answers, {2}, 3)
        broken, _ = replicated_pass(DeepStackDropped(model, adapter.tokens), prefill, [0], 0, answers, {2}, 3)
    assert measured.tolist() == [3, 3]
    assert torch.allclose(score[0], expected, atol=1e-4)
    assert not torch.allclose(broken[0], expected, atol=1e-2)


def test_shared_image_prefixes_with_deepstack_give_the_same_drops(builtin_batch, monkeypatch):
    session, _, _, prefill = builtin_batch
    plan = shared_prefixes(prefill, session.adapter.tokens.vision_end)
    assert plan is not None and plan.group.tolist() == [0, 0, 1, 1]
    targets = [[5, 6, 2]] * 4
    for method, answers in (("ablation", targets), ("kl", None)):
        with torch.inference_mode():
            shared, _ = sample_drops(session.adapter, prefill, 0, method, answers, session.eos_ids, 3)
            whole, _ = sample_drops(
                session.adapter, prefill, 0, method, answers, session.eos_ids, 3, share_prefixes=False
            )
        assert torch.allclose(shared, whole, atol=1e-4), method
    # Negative control: the shared prefix run without its DeepStack features gives other drops.
    monkeypatch.setattr(calibration, "_left_padded_extras", lambda extras, picks: None)
    with torch.inference_mode():
        shared, _ = sample_drops(session.adapter, prefill, 0, "ablation", targets, session.eos_ids, 3)
    assert not torch.allclose(shared, whole, atol=1e-3)


def test_prefixes_with_other_deepstack_features_are_not_shared(builtin_batch):
    """Two rows whose prefixes agree in ids, positions and embeddings but not in DeepStack features must each
    run their own prefix."""
    session, _, _, prefill = builtin_batch
    values = prefill.extras.values["deepstack"].clone()
    second_row = prefill.extras.mask[:1].sum()
    values[second_row] += 1.0  # one feature of row 1 (sharing its prefix with row 0) changes
    changed = type(prefill)(
        input_ids=prefill.input_ids,
        inputs_embeds=prefill.inputs_embeds,
        position_ids=prefill.position_ids,
        attention_mask=prefill.attention_mask,
        extras=type(prefill.extras)(mask=prefill.extras.mask, values={"deepstack": values}),
    )
    plan = shared_prefixes(changed, session.adapter.tokens.vision_end)
    assert plan is not None and plan.group.tolist() == [0, 1, 2, 2]


def test_calibrate_command_on_a_qwen3_vl_checkpoint(capsys, tmp_path):
    folder = tmp_path / "model"
    tiny_model(FAMILY, device="cpu", dtype=torch.float32).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    tiny_image_processor(family=FAMILY).save_pretrained(folder)
    path = tmp_path / "heads.safetensors"
    code, out, err = run_cli(capsys, "calibrate", "builtin:4", "-o", path, "--model", folder, "--json", "-b", "2")
    assert code == 0, err
    weights = load_head_weights(path)
    assert weights.metadata["model_type"] == FAMILY and weights.values.shape == (4,)
    assert abs(float(weights.values.sum()) - 1) < 1e-6
    assert len(json.loads(out)["head_importance"]) == 4
