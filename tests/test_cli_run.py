"""`hawk run` end to end on a tiny model saved to a temp folder: stdout/stderr split, --json, exit codes."""

from __future__ import annotations

import json

import pytest
from cli_helpers import run_cli
from tiny_models import random_image


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "scene.png"
    random_image(224, 224, 7).save(path)
    return path


def test_answer_on_stdout_and_stats_on_stderr(capsys, model_dir, image_path):
    code, out, err = run_cli(
        capsys, "run", str(image_path), "what color is the circle ?", "--model", str(model_dir), "--max-new-tokens", "3"
    )
    assert code == 0
    assert len(out.strip().splitlines()) == 1  # the answer alone
    assert "kept 13/64 visual tokens (ratio 0.80)" in err
    assert "uniform weights" in err  # tiny model: no calibrated weights, the note says so
    assert "Traceback" not in err


def test_json_is_one_parseable_object_with_counts_and_versions(capsys, model_dir, image_path):
    code, out, _ = run_cli(
        capsys,
        "run",
        str(image_path),
        "what color is the circle ?",
        "--model",
        str(model_dir),
        "--json",
        "--ratio",
        "0.5",
        "--max-new-tokens",
        "2",
    )
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["visual_tokens"] == 64 and record["visual_tokens_kept"] == 32
    assert record["ratio"] == 0.5 and record["scorer"] == "hawk" and record["head_weights"] == "uniform"
    assert record["prompt_tokens"] - record["prompt_tokens_kept"] == 32
    assert set(record["versions"]) == {"hawk", "torch", "transformers"}
    assert record["timings"]["total_s"] > 0 and record["kv_cache_bytes"] > 0


def test_ratio_zero_keeps_every_visual_token(capsys, model_dir, image_path):
    code, out, _ = run_cli(
        capsys,
        "run",
        str(image_path),
        "what color is the circle ?",
        "--model",
        str(model_dir),
        "--json",
        "--ratio",
        "0",
        "--max-new-tokens",
        "2",
    )
    record = json.loads(out)
    assert code == 0 and record["visual_tokens_kept"] == record["visual_tokens"] == 64


def test_question_from_stdin(capsys, monkeypatch, model_dir, image_path):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("how many stars are there ?\n"))
    code, out, _ = run_cli(
        capsys, "run", str(image_path), "-", "--model", str(model_dir), "--json", "--max-new-tokens", "2"
    )
    assert code == 0 and json.loads(out)["query_tokens"] == 6


@pytest.mark.parametrize(
    "argv, fragment, exit_code",
    [
        (["run", "missing.png", "q ?"], "image 'missing.png' does not exist", 2),
        (["run", "IMG", "q ?", "--ratio", "1.0"], "--ratio must be in [0, 1), got 1.0", 2),
        (["run", "IMG", "q ?", "--ratio", "-0.1"], "--ratio must be in [0, 1)", 2),
        (["run", "IMG", "q ?", "--ratio", "abc"], "Invalid value for '--ratio'", 2),
        (["run", "IMG", "q ?", "--model", "/no/such/model"], "model path '/no/such/model' does not exist", 1),
        (["run", "IMG", "   "], "the question is empty", 2),
        (["run", "IMG"], "needs at least one image and a question", 2),
    ],
)
def test_bad_input_gives_one_line_and_exit_code(capsys, image_path, argv, fragment, exit_code):
    argv = [str(image_path) if a == "IMG" else a for a in argv]
    code, out, err = run_cli(capsys, *argv)
    assert code == exit_code
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("hawk: error: ") and fragment in err


def test_weights_with_wrong_head_count_are_refused(capsys, tmp_path, model_dir, image_path):
    import torch

    from hawk_cli.io.weights import HeadWeights, save_head_weights

    path = tmp_path / "w.safetensors"
    save_head_weights(
        path, HeadWeights(values=torch.ones(28) / 28, source="test", metadata={"model_type": "qwen2_5_vl"})
    )
    code, out, err = run_cli(capsys, "run", str(image_path), "q ?", "--model", str(model_dir), "--weights", str(path))
    assert code == 2 and out == ""
    assert "holds 28 head weights but this model's scoring layer has 4 query heads" in err


def test_weights_for_another_model_type_are_refused(capsys, tmp_path, model_dir, image_path):
    import torch

    from hawk_cli.io.weights import HeadWeights, save_head_weights

    path = tmp_path / "w.safetensors"
    save_head_weights(path, HeadWeights(values=torch.ones(4) / 4, source="test", metadata={"model_type": "llava"}))
    code, _, err = run_cli(capsys, "run", str(image_path), "q ?", "--model", str(model_dir), "--weights", str(path))
    assert code == 2 and "calibrated for model type 'llava', not 'qwen2_5_vl'" in err


def test_unsupported_family_names_the_supported_ones(capsys, tmp_path, image_path):
    from transformers import LlamaConfig

    folder = tmp_path / "llama"
    folder.mkdir()
    LlamaConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=68
    ).save_pretrained(folder)
    code, _, err = run_cli(capsys, "run", str(image_path), "q ?", "--model", str(folder))
    assert code == 1 and err.count("\n") == 1
    assert (
        "model type 'llama' is not supported. Supported: qwen2_5_vl, qwen2_vl, qwen3_5, qwen3_5_moe, qwen3_vl, "
        "qwen3_vl_moe." in err
    )


def test_cuda_asked_for_without_a_gpu(capsys, model_dir, image_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, _, err = run_cli(capsys, "run", str(image_path), "q ?", "--model", str(model_dir), "--device", "cuda")
    assert code == 1 and "no CUDA GPU is available" in err


def test_transformers_outside_tested_range_warns_on_one_line(capsys, monkeypatch, model_dir, image_path):
    import transformers

    monkeypatch.setattr(transformers, "__version__", "5.99.0")
    code, _, err = run_cli(capsys, "run", str(image_path), "q ?", "--model", str(model_dir), "--max-new-tokens", "1")
    assert code == 0
    assert "hawk: warning: transformers 5.99.0 is outside hawk's tested range 5.17.0-5.25.x" in err


def test_weights_calibrated_at_another_layer_are_refused(capsys, tmp_path, model_dir, image_path):
    import torch

    from hawk_cli.io.weights import HeadWeights, save_head_weights

    path = tmp_path / "w.safetensors"
    save_head_weights(
        path, HeadWeights(values=torch.ones(4) / 4, source="test", metadata={"model_type": "qwen2_5_vl", "layer": "2"})
    )
    code, _, err = run_cli(capsys, "run", str(image_path), "q ?", "--model", str(model_dir), "--weights", str(path))
    assert code == 2 and "was calibrated at layer 2, but the scorer reads layer 0" in err


def test_json_says_where_the_pruning_settings_came_from(capsys, model_dir, image_path):
    _, out, _ = run_cli(
        capsys, "run", str(image_path), "q ?", "--model", str(model_dir), "--json", "--max-new-tokens", "1"
    )
    assert json.loads(out)["settings_from"] == "default"
    _, out, _ = run_cli(
        capsys,
        "run",
        str(image_path),
        "q ?",
        "--model",
        str(model_dir),
        "--json",
        "--max-new-tokens",
        "1",
        "--scorer",
        "hawk-uniform",
    )
    assert json.loads(out)["settings_from"] == "user"


def test_builtin_model_echoes_its_recommended_settings(capsys):
    from pathlib import Path

    scene = Path(__file__).resolve().parent.parent / "sample_images" / "scene_1.png"
    code, out, err = run_cli(capsys, "run", str(scene), "what color is the triangle ?", "--json", "--device", "cpu")
    record = json.loads(out)
    assert code == 0 and record["settings_from"] == "model recommendation" and record["scorer"] == "norm"
    assert "recommended pruning settings (norm, layer 0)" in err
