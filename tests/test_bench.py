"""`hawk bench` end to end on CPU: JSONL records match the documented schema, the table renders, the shipped
configs carry the published shapes, and `--check` passes on an honest engine and FAILS on a broken one."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import torch
from cli_helpers import run_cli
from tiny_models import DEVICE, DTYPE, TOLERANCE, random_image, tiny_image_processor, tiny_model, tiny_tokenizer

from hawk_cli.io.models import builtin_dir
from hawk_cli.tasks.benchmark import CONFIG_DIR, RANDOM_WEIGHTS_NOTE, SCHEMA, VARIANTS

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
QUICK = ["--size", "112", "--max-new-tokens", "3", "--warmup", "0", "--repeats", "1", "--device", "cpu"]
HAS_BUILTIN = (builtin_dir() / "model.safetensors").is_file()


def documented_fields() -> set[str]:
    """Field names listed in the schema table of docs/benchmarks.md (first column, in backticks)."""
    section = DOCS.read_text().split("## JSONL schema", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)`", section, flags=re.M))


def check_record(record: dict) -> None:
    documented = documented_fields()
    assert set(record) <= documented, f"undocumented fields: {set(record) - documented}"
    assert record["schema"] == SCHEMA and record["variant"] in VARIANTS
    assert isinstance(record["batch"], int) and 0 <= record["ratio"] < 1
    for name, summary in record["metrics"].items():
        assert summary["min"] <= summary["median"] <= summary["max"], name
    environment = record["environment"]
    for key in ("device", "device_name", "torch", "transformers", "dtype", "attn", "copy_bandwidth_bytes_per_s"):
        assert key in environment
    phases = {
        "vision_ms",
        "scoring_ms",
        "prefill_ms",
        "ttft_ms",
        "decode_ms_per_token",
        "total_ms",
        "tokens_per_s",
        "peak_run_bytes",
    }
    if record["variant"] == "run_path":  # timed as `hawk run` times itself: no per-phase memory, inputs included
        assert phases | {"inputs_ms"} <= set(record["metrics"]) and "peak_prefill_bytes" not in record["metrics"]
        assert record["metrics"]["inputs_ms"]["median"] < record["metrics"]["total_ms"]["median"]
    elif record["variant"] != "stock_generate":
        assert phases | {"peak_prefill_bytes"} <= set(record["metrics"])
    if record["variant"] != "stock_generate":
        assert record["kv_cache_bytes"] > 0 and record["decode_floor_ms"] > 0
        assert record["decode"] in ("eager", "cuda-graphs", "compiled")
    assert not any("accuracy" in key for key in record)


def test_jsonl_records_match_the_documented_schema(capsys, model_dir):
    code, out, err = run_cli(capsys, "bench", "--model", str(model_dir), "--batch-size", "1,2", "--json", *QUICK)
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["batch"], r["variant"]) for r in records] == [
        (b, v) for b in (1, 2) for v in ("unpruned", "stock_generate", "pruned", "downscaled", "run_path")
    ]
    for record in records:
        check_record(record)
    pruned = next(r for r in records if r["variant"] == "pruned" and r["batch"] == 2)
    unpruned = next(r for r in records if r["variant"] == "unpruned" and r["batch"] == 2)
    kept_fraction = pruned["prompt_tokens_kept"] / unpruned["prompt_tokens"]
    assert (
        pruned["ratio_to_unpruned"]
        and abs(pruned["kv_cache_bytes"] / unpruned["kv_cache_bytes"] - kept_fraction) < 0.01
    )
    downscaled = next(r for r in records if r["variant"] == "downscaled" and r["batch"] == 2)
    assert max(downscaled["visual_tokens"]) <= max(pruned["visual_tokens_kept"])  # same token budget, or fewer
    assert "note" not in pruned  # a real checkpoint: no random-weights note


def test_run_path_variant_runs_what_hawk_run_runs(capsys, model_dir):
    """The run_path record is `hawk run`'s call: the same pruning as the pruned variant (kept counts), the
    forced length, the CPU's eager decode, and the records' ratios taken against the same baselines."""
    code, out, err = run_cli(
        capsys, "bench", "--model", str(model_dir), "--batch", "2", "--json", "--no-stock", "--no-compile", *QUICK
    )
    assert code == 0, err
    records = {r["variant"]: r for r in map(json.loads, out.splitlines())}
    run_path, pruned, unpruned = records["run_path"], records["pruned"], records["unpruned"]
    check_record(run_path)
    assert run_path["ratio"] == pruned["ratio"] == 0.8 and run_path["batch"] == 2
    assert run_path["visual_tokens_kept"] == pruned["visual_tokens_kept"] < run_path["visual_tokens"]
    assert run_path["prompt_tokens_kept"] == pruned["prompt_tokens_kept"]
    assert run_path["generated_tokens"] == 3  # end-of-sequence never fires: lengths stay forced
    assert run_path["decode"] == "eager" and run_path["compiled_decode"] is False
    assert run_path["environment"]["run_path_decode"] == "eager"
    total = run_path["metrics"]["total_ms"]["median"]
    assert run_path["ratio_to_unpruned"]["total_ms"] == pytest.approx(total / unpruned["metrics"]["total_ms"]["median"])


@pytest.mark.skipif(not HAS_BUILTIN, reason="the built-in model is not installed")
def test_table_on_the_builtin_model(capsys):
    code, out, err = run_cli(capsys, "bench", "--batch-size", "1", *QUICK)
    assert code == 0, err
    assert "pruned r=0.8" in out and "unpruned" in out and "decode ms/token" in out
    assert "random weights" not in out


def test_random_weights_from_a_config_say_so(capsys, tmp_path):
    config = json.loads((CONFIG_DIR / "qwen2.5-vl-7b.json").read_text())
    config["text_config"].update(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
    )
    config["vision_config"].update(
        depth=2, hidden_size=32, intermediate_size=48, num_heads=2, out_hidden_size=64, fullatt_block_indexes=[1]
    )
    path = tmp_path / "small.json"
    path.write_text(json.dumps(config))
    code, out, err = run_cli(
        capsys, "bench", "--config", str(path), "--random-weights", "--batch-size", "1", "--json", "--no-stock", *QUICK
    )
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert {r["variant"] for r in records} == {"unpruned", "pruned", "downscaled", "run_path"}
    for record in records:
        check_record(record)
        assert record["note"] == RANDOM_WEIGHTS_NOTE and record["environment"]["random_weights"]
    assert "random weights" in err


def test_config_without_random_weights_is_refused(capsys):
    code, _, err = run_cli(capsys, "bench", "--config", "qwen2.5-vl-7b")
    assert code == 2 and "--random-weights" in err


@pytest.mark.parametrize(
    "name, text, vision_out, vision_mlp, tied",
    [
        (
            "qwen2.5-vl-7b",
            dict(
                num_hidden_layers=28,
                hidden_size=3584,
                num_attention_heads=28,
                num_key_value_heads=4,
                intermediate_size=18944,
                vocab_size=152064,
            ),
            3584,
            3420,
            False,
        ),
        (
            "qwen2.5-vl-3b",
            dict(
                num_hidden_layers=36,
                hidden_size=2048,
                num_attention_heads=16,
                num_key_value_heads=2,
                intermediate_size=11008,
                vocab_size=151936,
            ),
            2048,
            3420,
            True,
        ),
        # Qwen2.5-VL-32B-Instruct's published config.json (its tower's MLP is 3456 wide, not 3420)
        (
            "qwen2.5-vl-32b",
            dict(
                num_hidden_layers=64,
                hidden_size=5120,
                num_attention_heads=40,
                num_key_value_heads=8,
                intermediate_size=27648,
                vocab_size=152064,
            ),
            5120,
            3456,
            False,
        ),
        # Qwen2.5-VL-72B-Instruct's published config.json
        (
            "qwen2.5-vl-72b",
            dict(
                num_hidden_layers=80,
                hidden_size=8192,
                num_attention_heads=64,
                num_key_value_heads=8,
                intermediate_size=29568,
                vocab_size=152064,
            ),
            8192,
            3456,
            False,
        ),
    ],
)
def test_shipped_configs_carry_the_published_shapes(name, text, vision_out, vision_mlp, tied):
    from transformers import Qwen2_5_VLConfig

    config = Qwen2_5_VLConfig.from_json_file(str(CONFIG_DIR / f"{name}.json"))
    text_config, vision = config.get_text_config(), config.vision_config
    assert {key: getattr(text_config, key) for key in text} == text
    assert text_config.rope_parameters["mrope_section"] == [16, 24, 24]
    assert text_config.rope_parameters["rope_theta"] == 1e6
    assert (
        vision.depth,
        vision.hidden_size,
        vision.num_heads,
        vision.intermediate_size,
        vision.window_size,
        list(vision.fullatt_block_indexes),
        vision.out_hidden_size,
    ) == (32, 1280, 16, vision_mlp, 112, [7, 15, 23, 31], vision_out)
    assert (config.vision_start_token_id, config.vision_end_token_id, config.image_token_id, config.video_token_id) == (
        151652,
        151653,
        151655,
        151656,
    )
    assert config.tie_word_embeddings is tied


def test_check_passes_on_an_honest_engine(capsys, model_dir):
    code, out, err = run_cli(capsys, "bench", "--model", str(model_dir), "--check", "--batch-size", "2", *QUICK)
    assert code == 0, err
    assert out.startswith("PASS") and "tokens equal" in out


def test_check_fails_when_the_engine_renumbers_positions(capsys, model_dir, monkeypatch):
    from test_engine_contract import RenumberingAdapter

    from hawk_cli.engine import session as session_module

    honest = session_module.adapter_for
    monkeypatch.setattr(
        session_module,
        "adapter_for",
        lambda model, tokenizer: RenumberingAdapter(model, honest(model, tokenizer).tokens),
    )
    code, out, _ = run_cli(capsys, "bench", "--model", str(model_dir), "--check", "--batch-size", "2", "--json", *QUICK)
    assert code == 1
    record = json.loads(out)
    assert record["check"] == "FAIL" and max(record["step_max_abs_logit_diff"]) > record["tolerance"]


def test_images_are_read_from_files(capsys, model_dir, tmp_path):
    path = tmp_path / "a.png"
    random_image(140, 112, 3).save(path)
    code, out, err = run_cli(
        capsys,
        "bench",
        "--model",
        str(model_dir),
        "--image",
        str(path),
        "--batch-size",
        "1",
        "--json",
        "--no-stock",
        *QUICK,
    )
    assert code == 0, err
    assert {json.loads(line)["environment"]["images"][0] for line in out.splitlines()} == {"140x112"}


@pytest.mark.contract
@pytest.mark.skipif(DEVICE.type != "cuda", reason="the compiled decode step (CUDA graphs) runs on CUDA only")
@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_5"])
def test_compiled_decode_equals_eager_on_cuda(family):
    """The compiled static-cache step (CUDA graphs, dynamic shapes, pooled caches) gives the eager loop's logits,
    across prompt lengths and repeated calls (cache reuse); for Qwen3.5 the static cache is the hybrid one (conv
    and recurrent states updated in place beside the attention layers' keys and values)."""
    from hawk_cli.adapters import adapter_for
    from hawk_cli.engine.generation import DecodeStep, GenerationSettings, generate
    from hawk_cli.io.requests import Request
    from hawk_cli.scorers import HawkScorer

    model, tokenizer = tiny_model(family), tiny_tokenizer()
    adapter = adapter_for(model, tokenizer)
    requests = [
        Request("what color is the circle ?", (random_image(224, 224, 1),)),
        Request("how many stars are there ?", (random_image(112, 168, 2),)),
    ]
    inputs = adapter.prompts(tokenizer, tiny_image_processor(family=family)).collate(requests).to(DEVICE)
    step = DecodeStep(adapter, "compile")
    # bf16: the compiler reorders roundings (through the hybrid layers' recurrence too), so compiled and eager differ
    # by rounding noise whose size no fixed bound captures. The oracle is then the same weights run eagerly in fp32:
    # the captured step must be no further from it than twice the eager bf16 loop's own distance (plus TOLERANCE);
    # a broken cache or mask moves logits by their own scale, far beyond.
    reference = None
    if torch.float32 != DTYPE:
        reference_model = copy.deepcopy(model).float()
        reference = adapter_for(reference_model, tokenizer)
    decode_steps_compared = 0
    for _ in range(2):
        for ratio in (0.0, 0.8):
            settings = dict(ratio=ratio, max_new_tokens=6, cache="static", record_logits=True)
            eager = generate(adapter, inputs, HawkScorer(), GenerationSettings(**settings), set())
            compiled = generate(
                adapter, inputs, HawkScorer(), GenerationSettings(**settings, compile=True), set(), decode_step=step
            )
            if reference is None:  # fp32: every step, and the tokens, must agree
                for mine, theirs in zip(compiled.step_logits, eager.step_logits, strict=True):
                    assert (mine - theirs).abs().max() <= TOLERANCE
                assert compiled.tokens == eager.tokens
                continue
            exact = generate(reference, inputs, HawkScorer(), GenerationSettings(**settings), set())
            # a near-tie may pick another token in one run: steps are compared up to the first step whose tokens
            # differ in any row of any run (later steps see different contexts)
            runs = (compiled.tokens, eager.tokens, exact.tokens)
            steps = next(
                (
                    t + 1
                    for t in range(len(exact.step_logits))
                    if any(
                        len({row[t] if t < len(row) else None for row in rows}) > 1 for rows in zip(*runs, strict=True)
                    )
                ),
                len(exact.step_logits),
            )
            decode_steps_compared += steps - 1
            for t in range(steps):
                truth = exact.step_logits[t].float()
                compiled_error = (compiled.step_logits[t].float() - truth).abs().max().item()
                eager_error = (eager.step_logits[t].float() - truth).abs().max().item()
                print(f"{family} ratio {ratio} step {t}: compiled {compiled_error:.4f} eager {eager_error:.4f}")
                assert compiled_error <= 2 * eager_error + TOLERANCE
    assert reference is None or decode_steps_compared > 0
    if reference is not None:  # negative control: another model's logits are far outside the bound
        other_model = adapter_for(tiny_model(family, seed=1), tokenizer)
        other = generate(other_model, inputs, HawkScorer(), GenerationSettings(**settings), set())
        assert (other.step_logits[0].float() - exact.step_logits[0].float()).abs().max() > 2 * eager_error + TOLERANCE
