"""A model spread by accelerate's device map: hawk follows the dispatched model and answers as if it were whole.

No machine with several GPUs is at hand here, so the model is spread over CPU blocks with accelerate's hooks
forced on: every hooked block moves its inputs to its execution device, and hawk's direct calls (layer 0's q/k
projections, the vision tower, the output head) go through the device-following code paths. fp32 on the CPU:
the spread model must give exactly the tokens and logits of the whole one.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from cli_helpers import run_cli
from tiny_models import random_image, tiny_image_processor, tiny_model, tiny_tokenizer

from hawk_cli.engine.generation import GenerationSettings
from hawk_cli.engine.session import HawkSession
from hawk_cli.io.models import LoadedModel
from hawk_cli.io.placement import dispatch, is_dispatched, model_devices, random_spread_model
from hawk_cli.io.requests import Request

pytest.importorskip("accelerate")

SPREAD = {
    "model.visual": "cpu",
    "model.language_model.embed_tokens": "cpu",
    "model.language_model.layers.0": "cpu",
    "model.language_model.layers.1": "cpu",
    "model.language_model.layers.2": "cpu",
    "model.language_model.norm": "cpu",
    "model.language_model.rotary_emb": "cpu",
    "lm_head": "cpu",
}


def _session(model, family: str = "qwen2_5_vl") -> HawkSession:
    loaded = LoadedModel(
        model=model,
        tokenizer=tiny_tokenizer(),
        image_processor=tiny_image_processor(family=family),
        name="tiny",
        path="tiny",
        device=torch.device("cpu"),
        dtype=torch.float32,
        attn="sdpa",
        is_builtin=False,
        devices=model_devices(model),
    )
    return HawkSession(loaded, decode="eager")


def _requests() -> list[Request]:
    return [
        Request("what colour is the square?", (random_image(112, 84, seed=1),)),
        Request("count the dots please", (random_image(84, 112, seed=2), random_image(56, 56, seed=3))),
    ]


def _answer(session: HawkSession, layer: int | None = 0):
    scorer, _ = session.make_scorer("hawk", layer=layer)
    settings = GenerationSettings(ratio=0.5, max_new_tokens=5, record_logits=True, cache="dynamic")
    result = session.run(_requests(), scorer, settings, eos_ids=set()).result
    return result.tokens, torch.stack(result.step_logits), result.keep_mask


def _spread(model):
    return dispatch(copy.deepcopy(model), SPREAD, force_hooks=True)


def spread_map(model) -> dict[str, str]:
    """Every top block of a model on its own map entry (all on the CPU): the tower, each decoder layer, the
    embedding, norm, rotary table and output head."""
    text = model.model.language_model
    mapping = {"model.visual": "cpu"}
    for name, _ in text.named_children():
        if name == "layers":
            mapping.update({f"model.language_model.layers.{i}": "cpu" for i in range(len(text.layers))})
        else:
            mapping[f"model.language_model.{name}"] = "cpu"
    mapping["lm_head"] = "cpu"
    return mapping


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen3_5"])
def test_other_families_spread_answer_as_whole(family):
    """Qwen3-VL (DeepStack levels, q/k after q_norm / k_norm) and Qwen3.5 (scoring at the first full-attention
    layer, a partial pass) at their default scoring layers."""
    whole = tiny_model(family, device="cpu", dtype=torch.float32)
    mapping = spread_map(whole)
    spread = dispatch(copy.deepcopy(whole), mapping, force_hooks=True)
    assert all(hasattr(spread.get_submodule(name), "_hf_hook") for name in mapping)
    tokens, logits, keep = _answer(_session(whole, family), None)
    spread_tokens, spread_logits, spread_keep = _answer(_session(spread, family), None)
    assert spread_tokens == tokens and torch.equal(spread_keep, keep) and torch.equal(spread_logits, logits)


@pytest.mark.parametrize("layer", [0, 1])
def test_spread_model_gives_the_same_tokens_logits_and_keep_sets_as_the_whole_model(layer):
    whole = tiny_model(device="cpu", dtype=torch.float32)
    spread = _spread(whole)
    # accelerate's hooks are active on the blocks the map names (so activations really go through them)
    assert is_dispatched(spread) and not is_dispatched(whole)
    assert all(hasattr(spread.get_submodule(name), "_hf_hook") for name in SPREAD)
    tokens, logits, keep = _answer(_session(whole), layer)
    spread_tokens, spread_logits, spread_keep = _answer(_session(spread), layer)
    assert spread_tokens == tokens
    assert torch.equal(spread_keep, keep)
    assert torch.equal(spread_logits, logits)


def test_the_comparison_fails_for_a_spread_model_whose_weights_differ():
    """Negative control: the exact comparison above notices one changed weight of the spread copy."""
    whole = tiny_model(device="cpu", dtype=torch.float32)
    spread = _spread(whole)
    with torch.no_grad():
        spread.model.language_model.layers[2].mlp.down_proj.weight.mul_(1.5)
    _, logits, _ = _answer(_session(whole))
    _, spread_logits, _ = _answer(_session(spread))
    assert not torch.equal(spread_logits, logits)


def test_a_dispatched_model_decodes_eagerly_and_the_session_says_so():
    whole_session = _session(tiny_model(device="cpu", dtype=torch.float32))
    spread_session = _session(_spread(tiny_model(device="cpu", dtype=torch.float32)))
    assert whole_session.adapter.decode_capturable
    assert not spread_session.adapter.decode_capturable  # a CUDA graph is never captured across hooks
    spread_session.decode_mode = "graphs"  # what "auto" picks on CUDA
    assert spread_session.decode_label == "eager"
    assert "eagerly" in spread_session.decode_notice
    whole_session.decode_mode = "graphs"
    assert whole_session.decode_notice is None


def test_random_weights_are_created_on_the_devices_of_the_map():
    from tiny_models import tiny_config

    model = random_spread_model(tiny_config(), torch.float32, "sdpa", "auto")
    assert model_devices(model) == (torch.device("cpu"),)
    weights = model.model.language_model.layers[0].self_attn.q_proj.weight
    assert weights.device.type == "cpu" and 0.05 < float(weights.detach().std()) < 0.2  # the config's initializer_range
    assert torch.equal(model.model.language_model.norm.weight, torch.ones_like(model.model.language_model.norm.weight))


# --- the command line ------------------------------------------------------------------------------------------
def _json_answer(capsys, *argv):
    code, out, err = run_cli(capsys, "run", *argv, "--json", "--max-new-tokens", "4", "--quiet")
    assert code == 0, err
    return json.loads(out)


def test_run_with_a_device_map_file_loads_through_transformers_and_answers_as_without(capsys, model_dir, tmp_path):
    image = tmp_path / "a.png"
    random_image(112, 84, seed=4).save(image)
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"": "cpu"}))
    plain = _json_answer(capsys, image, "what is here?", "--model", model_dir)
    mapped = _json_answer(capsys, image, "what is here?", "--model", model_dir, "--device-map", mapping)
    assert mapped["answer"] == plain["answer"]
    assert mapped["visual_tokens_kept"] == plain["visual_tokens_kept"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "is not a JSON object"),
        ('{"": "cuda:7"}', "puts '' on cuda:7"),
        ('{"model.visual": "disk", "lm_head": "cpu"}', "offloading"),
        ('{"lm_head": "tpu"}', "unknown device 'tpu'"),
        ('{"lm_head": [0]}', "gives module 'lm_head' the device [0]"),
    ],
)
def test_a_bad_device_map_file_is_one_line_naming_the_problem(capsys, model_dir, tmp_path, content, expected):
    mapping = tmp_path / "map.json"
    mapping.write_text(content)
    code, out, err = run_cli(capsys, "run", "-", "--model", model_dir, "--device-map", mapping)
    assert code != 0 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hawk: error: ") and expected in lines[0], err
    assert "Traceback" not in err


def test_a_missing_device_map_file_and_a_device_beside_a_map_are_one_line_errors(capsys, model_dir, tmp_path):
    code, _, err = run_cli(capsys, "run", "-", "--model", model_dir, "--device-map", tmp_path / "nope.json")
    assert code == 2 and "neither auto nor balanced nor an existing file" in err and len(err.splitlines()) == 1
    code, _, err = run_cli(capsys, "bench", "--device", "cpu", "--device-map", "auto")
    assert code == 2 and "--device and --device-map exclude each other" in err and len(err.splitlines()) == 1


def test_the_shipped_72b_config_has_the_published_size_and_accelerate_spreads_it_over_two_gpus():
    """Qwen2.5-VL-72B-Instruct has 73.4 B parameters (its model card); built without weights, accelerate's
    balanced map for two 80 GiB budgets puts half the decoder on each GPU and the vision tower whole on one."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForImageTextToText

    from hawk_cli.io.placement import infer_device_map
    from hawk_cli.tasks.benchmark import resolve_config

    config = AutoConfig.from_pretrained(str(resolve_config("qwen2.5-vl-72b")))
    with init_empty_weights():
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    assert 73.0e9 < sum(p.numel() for p in model.parameters()) < 73.8e9
    device_map = infer_device_map(model, "auto", torch.bfloat16, max_memory={0: 80 * 2**30, 1: 80 * 2**30})
    layers = {value for name, value in device_map.items() if ".layers." in name}
    assert layers == {0, 1}
    tower = {value for name, value in device_map.items() if name.startswith("model.visual")}
    assert len(tower) == 1  # the batched tower runs (it needs the tower on one device)


def test_the_stock_tower_through_the_hooks_gives_the_same_answer():
    """A tower split over devices runs stock, block by block through accelerate's hooks (forced here on one CPU
    map, where the batched tower would otherwise run): same tokens, logits and keep sets as the whole model."""
    whole = tiny_model(device="cpu", dtype=torch.float32)
    spread_map = {key: value for key, value in SPREAD.items() if key != "model.visual"}
    spread_map.update(
        {
            "model.visual.patch_embed": "cpu",
            "model.visual.rotary_pos_emb": "cpu",
            "model.visual.blocks.0": "cpu",
            "model.visual.blocks.1": "cpu",
            "model.visual.merger": "cpu",
        }
    )
    spread = dispatch(copy.deepcopy(whole), spread_map, force_hooks=True)
    assert hasattr(spread.model.visual.blocks[1], "_hf_hook")
    session = _session(spread)
    session.adapter._tower_on_one_device = lambda: False  # as for a tower on two GPUs (this instance only)
    stock_calls: list[int] = []
    spread.model.visual.register_forward_hook(lambda *_: stock_calls.append(1))  # the batched tower never calls it
    tokens, logits, keep = _answer(session)
    assert stock_calls
    whole_tokens, whole_logits, whole_keep = _answer(_session(whole))
    assert tokens == whole_tokens and torch.equal(keep, whole_keep) and torch.equal(logits, whole_logits)


def test_a_placement_that_offloads_to_the_cpu_is_refused_with_what_to_do():
    from hawk_cli.errors import ResourceError
    from hawk_cli.io.placement import check_fits

    check_fits({"model": 0, "lm_head": 1})
    check_fits({"": "cpu"})  # a CPU-only model offloads nothing
    with pytest.raises(ResourceError, match="does not fit in the visible GPUs.*2 modules"):
        check_fits({"model.visual": 0, "model.language_model": "cpu", "lm_head": "disk"})
