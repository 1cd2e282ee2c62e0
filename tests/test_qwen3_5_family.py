"""Qwen3.5 beyond the engine contract: video prompts as the stock processor writes them, rotary ids as the stock
batched call computes them, the scoring layer and head weights, calibration of gated-attention heads, the shipped
9B config and its stand-in processors, `hawk bench` on a random-weight hybrid config, and the scoring-cost script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_helpers import run_cli
from tiny_models import DEVICE, TOLERANCE, random_image, tiny_image_processor, tiny_model, tiny_tokenizer

from hawk_cli.adapters import adapter_for
from hawk_cli.adapters.qwen3_5 import Qwen35Adapter
from hawk_cli.adapters.qwen3_5.prompts import frame_group_times
from hawk_cli.engine.session import HawkSession
from hawk_cli.errors import UsageError
from hawk_cli.io.calibration_data import load_calibration_data
from hawk_cli.io.models import LoadedModel
from hawk_cli.io.requests import Request
from hawk_cli.scorers import HawkScorer
from hawk_cli.tasks.benchmark import CONFIG_DIR
from hawk_cli.tasks.calibration import CalibrationSettings, calibrate, eq3, sample_drops
from hawk_cli.tasks.oracle import check_against_oracle

ROOT = Path(__file__).resolve().parent.parent
EOS = {2}
FRAMES = tuple(random_image(128, 96, seed) for seed in range(5))


def _mixed_requests():
    return [
        Request("what happens ?", (), video=FRAMES, fps=2.0),
        Request("what color is the circle ?", (random_image(224, 224, 1),), video=FRAMES[:2], fps=1.0),
        Request("how many stars are there ?", (random_image(112, 168, 2),)),
    ]


def _adapter(model=None):
    model = model or tiny_model("qwen3_5")
    tokenizer = tiny_tokenizer()
    adapter = adapter_for(model, tokenizer)
    return adapter, adapter.prompts(tokenizer, tiny_image_processor(family="qwen3_5"))


# --- video and rotary ids --------------------------------------------------------------------------------------


def test_video_is_written_as_timestamped_frame_groups_like_the_stock_processor():
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

    adapter, prompts = _adapter()
    for frames, fps in ((5, 2.0), (2, 1.0), (8, 3.0)):
        stock = Qwen3VLProcessor._calculate_timestamps(None, list(range(frames)), fps, 2)  # the processor's rule
        assert frame_group_times(frames, fps, 2) == stock
    encoded = prompts.encode(_mixed_requests()[0])
    times = frame_group_times(5, 2.0, 2)
    expected = "".join(f"<{t:.1f} seconds><|vision_start|><|video_pad|><|vision_end|>" for t in times)
    assert expected in encoded.text and encoded.text.count("<|vision_start|>") == 3
    assert encoded.placeholder_tokens == (12, 12, 12)  # 3 groups of 6x8 patches merged 2x2
    inputs = prompts.collate(_mixed_requests())
    row = inputs.input_ids[0][inputs.attention_mask[0].bool()]
    assert int((row == adapter.tokens.vision_start).sum()) == 3 and int((row == adapter.tokens.video).sum()) == 36


@pytest.mark.contract
def test_prompt_rotary_ids_equal_the_stock_batched_call():
    """Per-row cached ids (each video grid split into frame groups first) against the stock `get_rope_index` on
    the whole left-padded batch: videos, images and both in one row."""
    adapter, prompts = _adapter()
    inputs = prompts.collate(_mixed_requests())
    stock, _ = adapter.inner.get_rope_index(
        inputs.input_ids,
        inputs.mm_token_type_ids,
        image_grid_thw=inputs.image_grid_thw,
        video_grid_thw=inputs.video_grid_thw.clone(),
        attention_mask=inputs.attention_mask,
    )
    assert torch.equal(adapter.rope_index(inputs.on_host()), stock)


@pytest.mark.contract
def test_video_and_image_prompts_match_the_compaction_oracle():
    adapter, prompts = _adapter()
    inputs = prompts.collate(_mixed_requests()).to(DEVICE)
    report = check_against_oracle(adapter, inputs, HawkScorer(), 0.7, 4, EOS, TOLERANCE)
    assert report.oracle == "compaction" and report.visual_tokens_kept < report.visual_tokens
    assert report.passed, report


# --- scoring layer and head weights --------------------------------------------------------------------------


def _session(model=None) -> HawkSession:
    loaded = LoadedModel(
        model=model or tiny_model("qwen3_5"),
        tokenizer=tiny_tokenizer(),
        image_processor=tiny_image_processor(family="qwen3_5"),
        name="tiny",
        path="tiny",
        device=torch.device("cpu"),
        dtype=torch.float32,
        attn="sdpa",
        is_builtin=False,
    )
    return HawkSession(loaded)


def test_scoring_defaults_to_the_first_full_attention_layer_with_uniform_weights_and_a_note():
    session = _session()
    scorer, notices = session.make_scorer()
    assert (
        session.adapter.default_scoring_layer
        == 3
        == list(session.model.config.text_config.layer_types).index("full_attention")
    )
    assert scorer.layer == 3 and scorer.weights_source == "uniform"
    assert torch.allclose(scorer.head_weights, torch.full((4,), 0.25))  # num_attention_heads at that layer
    assert any("uniform weights" in notice for notice in notices)
    deltanet, _ = session.make_scorer("hawk", None, 0)  # the alternative: layer-0 DeltaNet q/k
    assert deltanet.layer == 0 and deltanet.head_weights.shape == (2,)  # linear_num_key_heads
    with pytest.raises(UsageError, match="scoring layer 9 does not exist"):
        session.make_scorer("hawk", None, 9)


def test_a_weights_file_is_checked_against_the_scoring_layers_own_head_count(tmp_path):
    """Attention layers have num_attention_heads query heads, DeltaNet layers linear_num_key_heads: a vector
    calibrated for one does not pass for the other."""
    from hawk_cli.errors import InputError
    from hawk_cli.io.weights import HeadWeights, save_head_weights

    session = _session()
    path = tmp_path / "w.safetensors"
    save_head_weights(
        path,
        HeadWeights(values=torch.full((4,), 0.25), source="test", metadata={"model_type": "qwen3_5", "num_heads": "4"}),
    )
    scorer, _ = session.make_scorer("hawk", str(path), 3)
    assert torch.equal(scorer.head_weights, torch.full((4,), 0.25))
    with pytest.raises(InputError, match="holds 4 head weights but this model's scoring layer has 2 query heads"):
        session.make_scorer("hawk", str(path), 0)


def test_the_scoring_layer_follows_the_configs_layer_types():
    from tiny_models import tiny_config

    config = tiny_config("qwen3_5")
    config.text_config.layer_types = ["linear_attention", "full_attention"] + ["linear_attention"] * 3
    torch.manual_seed(0)
    model = type(tiny_model("qwen3_5"))._from_config(config, attn_implementation="sdpa", dtype=torch.float32)
    adapter = Qwen35Adapter(model, adapter_for(model, tiny_tokenizer()).tokens)
    assert adapter.default_scoring_layer == 1
    assert adapter.query_heads(1) == 4 and adapter.query_heads(0) == 2


# --- calibration -----------------------------------------------------------------------------------------------

DOMINANT = 2


def _dominant_head_session(layer: int = 3, scale: float = 8.0) -> HawkSession:
    """A tiny Qwen3.5 whose gated-attention head `DOMINANT` carries the answer: its slice of o_proj scaled up."""
    model = tiny_model("qwen3_5")
    projection = model.model.language_model.layers[layer].self_attn.o_proj
    width = projection.in_features // model.config.text_config.num_attention_heads
    with torch.no_grad():
        projection.weight[:, DOMINANT * width : (DOMINANT + 1) * width] *= scale
    return _session(model)


def test_calibration_ranks_the_dominant_gated_attention_head_first():
    """o_proj's input is attention * sigmoid(gate), both per head in head order: zeroing head h's slice removes
    exactly head h, so the head built to matter ranks first; the default layer is the scoring layer."""
    session = _dominant_head_session()
    result = calibrate(
        session, load_calibration_data("builtin:2"), CalibrationSettings(method="kl", batch_size=2, max_new_tokens=2)
    )
    assert result.layer == 3 and result.subset_drops.shape[1] == 4
    assert int(result.importance.argmax()) == DOMINANT


def test_calibrating_a_deltanet_layer_is_refused_in_one_line():
    with pytest.raises(UsageError) as raised:
        calibrate(_session(), load_calibration_data("builtin:2"), CalibrationSettings(layer=0))
    message = raised.value.render()
    assert "Gated DeltaNet" in message and "no attention heads" in message and "3" in message
    assert "\n" not in message


def test_shared_prefixes_are_not_used_where_masking_is_not_dropping():
    """Sharing an image prefix pads each question's suffix inside the row; the DeltaNet recurrence steps through
    that padding, so shared drops differ from whole prompts (negative control), and calibrate() does not share."""
    session = _dominant_head_session()
    adapter = session.adapter
    data = load_calibration_data("builtin:4")
    prompts = adapter.prompts(session.tokenizer, session.loaded.image_processor)
    inputs = prompts.collate([Request(s.question, s.images()) for s in data.samples])
    with torch.inference_mode():
        prefill = adapter.build_prefill(inputs, adapter.encode_vision(inputs))
        shared, _ = sample_drops(adapter, prefill, 3, "kl", None, session.eos_ids, 2)
        whole, _ = sample_drops(adapter, prefill, 3, "kl", None, session.eos_ids, 2, share_prefixes=False)
    assert not torch.allclose(shared, whole, atol=1e-4)
    result = calibrate(session, data, CalibrationSettings(method="kl", batch_size=4, max_new_tokens=2))
    expected = torch.stack(
        [whole[torch.tensor([s.subset == name for s in data.samples])].mean(0) for name in result.subsets]
    )
    assert torch.allclose(result.subset_drops, expected, atol=1e-4)
    assert torch.allclose(result.importance, eq3(expected), atol=1e-5)


# --- the shipped config and stand-in processors -----------------------------------------------------------------


def test_the_shipped_9b_config_builds_on_meta_with_the_published_shape():
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(str(CONFIG_DIR / "qwen3.5-9b.json"))
    text, vision = config.text_config, config.vision_config
    assert (
        config.model_type,
        text.hidden_size,
        text.num_hidden_layers,
        text.num_attention_heads,
        text.num_key_value_heads,
        text.head_dim,
        text.intermediate_size,
        text.vocab_size,
    ) == ("qwen3_5", 4096, 32, 16, 4, 256, 12288, 248320)
    assert list(text.layer_types) == (["linear_attention"] * 3 + ["full_attention"]) * 8
    assert (
        text.linear_num_key_heads,
        text.linear_num_value_heads,
        text.linear_key_head_dim,
        text.linear_conv_kernel_dim,
    ) == (16, 32, 128, 4)
    rope = text.rope_parameters
    assert rope["partial_rotary_factor"] == 0.25 and rope["mrope_section"] == [11, 11, 10]
    assert (vision.depth, vision.hidden_size, vision.patch_size, vision.out_hidden_size) == (27, 1152, 16, 4096)
    assert (config.image_token_id, config.video_token_id, config.vision_start_token_id, config.vision_end_token_id) == (
        248056,
        248057,
        248053,
        248054,
    )
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    assert 9.3e9 < sum(p.numel() for p in model.parameters()) < 9.5e9  # "about 9.4 B" (h200-anchors)
    assert type(model).__name__ == "Qwen3_5ForConditionalGeneration"


def test_standin_processors_carry_the_configs_ids_and_the_published_patch_grid():
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(CONFIG_DIR / "qwen3.5-9b.json"))
    tokenizer, processor = Qwen35Adapter.standin_processors(config)
    ids = tokenizer.convert_tokens_to_ids(["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"])
    assert ids == [
        config.image_token_id,
        config.video_token_id,
        config.vision_start_token_id,
        config.vision_end_token_id,
    ]
    grid = processor(images=[random_image(1024, 1024)], return_tensors="pt")["image_grid_thw"][0]
    assert int(grid.prod()) // processor.merge_size**2 == 1024  # 1024x1024 -> 1024 visual tokens


# --- hawk bench on a random-weight hybrid config, and the scoring-cost script -------------------------------------


def _tiny_published_config(folder: Path) -> Path:
    """The shipped 9B config at toy widths (published ids and vocabulary, so the stand-in tokenizer applies)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from qwen35_scoring_cost import tiny_config_file
    finally:
        sys.path.pop(0)
    return tiny_config_file(folder, CONFIG_DIR / "qwen3.5-9b.json")


@pytest.mark.parametrize("layer", ["3", "0"])
def test_bench_check_passes_against_the_compaction_oracle(capsys, tmp_path, layer):
    config = _tiny_published_config(tmp_path)
    code, out, err = run_cli(
        capsys,
        "bench",
        "--config",
        config,
        "--random-weights",
        "--check",
        "--batch",
        "2",
        "--size",
        "128",
        "--max-new-tokens",
        "3",
        "--check-steps",
        "3",
        "--device",
        "cpu",
        "--layer",
        layer,
        "--json",
    )
    assert code == 0, err
    record = json.loads(out)
    assert record["check"] == "PASS" and record["oracle"] == "compaction" and record["model_type"] == "qwen3_5"
    assert record["visual_tokens_kept"] < record["visual_tokens"]


def test_bench_records_count_the_hybrid_cache_states(capsys, tmp_path):
    from test_bench import check_record

    config = _tiny_published_config(tmp_path)
    code, out, err = run_cli(
        capsys,
        "bench",
        "--config",
        config,
        "--random-weights",
        "--batch",
        "1",
        "--size",
        "128",
        "--max-new-tokens",
        "2",
        "--warmup",
        "0",
        "--repeats",
        "1",
        "--device",
        "cpu",
        "--no-stock",
        "--json",
    )
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    for record in records:
        check_record(record)
        assert 0 < record["cache_state_bytes"] < record["kv_cache_bytes"] <= record["kv_cache_allocated_bytes"]
    pruned = next(r for r in records if r["variant"] == "pruned")
    assert pruned["environment"]["scorer"] == {"scorer": "hawk", "layer": 3, "head_weights": "uniform"}


def test_scoring_cost_script_runs_on_a_tiny_config():
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "qwen35_scoring_cost.py"),
            "--tiny",
            "--device",
            "cpu",
            "--batch",
            "1",
            "--size",
            "128",
            "--warmup",
            "0",
            "--repeats",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["record"] == "environment"
    choices = {line["choice"]: line for line in lines[1:]}
    assert set(choices) == {"first_full_attention", "deltanet_layer_0"}
    assert (choices["first_full_attention"]["scoring_layer"], choices["deltanet_layer_0"]["mixer"]) == (
        3,
        "linear_attention",
    )
    for line in choices.values():
        assert (
            line["scoring_ms"] > 0
            and line["unpruned_prefill_ms"] > 0
            and line["visual_tokens_kept"] < line["visual_tokens"]
        )


# --- the commands on a checkpoint folder -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen3_5_dir(tmp_path_factory):
    """A tiny random Qwen3.5 checkpoint folder (config, weights, tokenizer, image processor), CPU float32."""
    folder = tmp_path_factory.mktemp("tiny-qwen3_5")
    tiny_model("qwen3_5", device="cpu", dtype=torch.float32).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    tiny_image_processor(family="qwen3_5").save_pretrained(folder)
    return folder


def test_run_and_calibrate_on_a_checkpoint_folder(capsys, qwen3_5_dir, tmp_path):
    image = tmp_path / "a.png"
    random_image(224, 224, 1).save(image)
    common = ["--model", qwen3_5_dir, "--device", "cpu"]
    code, out, err = run_cli(
        capsys, "run", image, "what color is the circle ?", "--max-new-tokens", "3", "--json", *common
    )
    assert code == 0, err
    record = json.loads(out)
    assert (record["model_type"], record["layer"], record["head_weights"]) == ("qwen3_5", 3, "uniform")
    assert record["visual_tokens_kept"] < record["visual_tokens"] and "uniform weights" in err
    weights = tmp_path / "w.safetensors"
    code, out, err = run_cli(
        capsys, "calibrate", "builtin:2", "-o", weights, "--method", "kl", "--max-new-tokens", "2", "--json", *common
    )
    assert code == 0, err
    assert json.loads(out)["layer"] == 3 and len(json.loads(out)["head_importance"]) == 4
    code, out, err = run_cli(
        capsys,
        "run",
        image,
        "what color is the circle ?",
        "--max-new-tokens",
        "2",
        "--json",
        "--weights",
        weights,
        *common,
    )
    assert code == 0, err
    assert json.loads(out)["head_weights"] == str(weights) and "uniform" not in err
    code, _, err = run_cli(capsys, "calibrate", "builtin:2", "-o", tmp_path / "w0.safetensors", "--layer", "0", *common)
    assert code == 2 and "Gated DeltaNet" in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "w0.safetensors").exists()
