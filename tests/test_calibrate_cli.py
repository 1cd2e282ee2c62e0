"""`hawk calibrate` end to end on a tiny model saved to a temp folder: the file, its metadata, `run` using and
refusing it, --force, bad DATA, Ctrl-C."""

from __future__ import annotations

import json

import pytest
import torch
from cli_helpers import run_cli
from tiny_models import random_image

from hawk_cli.cli.app import main
from hawk_cli.io.weights import HeadWeights, load_head_weights, save_head_weights


@pytest.fixture(scope="module")
def calibrated(model_dir, tmp_path_factory):
    """One real calibration (builtin:4, ablation), shared by the tests that only read the file."""
    path = tmp_path_factory.mktemp("weights") / "heads.safetensors"
    with pytest.raises(SystemExit) as exited:
        main(["calibrate", "builtin:4", "-o", str(path), "--model", str(model_dir), "--json", "-b", "2"])
    assert exited.value.code == 0
    return path


def test_file_round_trip_and_metadata(calibrated, model_dir):
    weights = load_head_weights(calibrated)
    assert weights.values.dtype == torch.float32 and weights.values.shape == (4,)
    assert abs(float(weights.values.sum()) - 1) < 1e-6 and (weights.values >= 0).all()
    meta = weights.metadata
    assert meta["model"] == str(model_dir) and meta["model_type"] == "qwen2_5_vl"
    assert (meta["num_heads"], meta["hidden_size"], meta["num_layers"], meta["layer"]) == ("4", "64", "3", "0")
    assert meta["method"] == "ablation" and meta["data"] == "builtin:4" and len(meta["data_fingerprint"]) == 64
    counts = json.loads(meta["samples_per_subset"])
    assert sum(counts.values()) == 4 and json.loads(meta["subsets"]) == list(counts)
    assert meta["hawk_version"] and meta["transformers_version"] and meta["created_utc"].endswith("+00:00")
    assert meta["command"].startswith("hawk calibrate builtin:4 -o ")
    assert weights.extra_tensors["subset_drops"].shape == (len(counts), 4)


def test_json_summary_and_human_output(capsys, model_dir, tmp_path):
    code, out, err = run_cli(
        capsys,
        "calibrate",
        "builtin:2",
        "-o",
        tmp_path / "k.safetensors",
        "--model",
        model_dir,
        "--method",
        "kl",
        "--max-new-tokens",
        "2",
        "--json",
    )
    record = json.loads(out)
    assert code == 0 and len(out.strip().splitlines()) == 1
    assert record["path"] == str(tmp_path / "k.safetensors") and record["method"] == "kl"
    assert len(record["head_importance"]) == 4 and set(record["subset_drops"]) == set(record["samples_per_subset"])
    assert record["seconds"] > 0 and "\x1b" not in out
    code, out, err = run_cli(capsys, "calibrate", "builtin:2", "-o", tmp_path / "h.safetensors", "--model", model_dir)
    assert code == 0 and out.strip() == str(tmp_path / "h.safetensors")  # stdout: the path alone
    assert "calibrating 4 heads of layer 0 by ablation on 2 questions" in err and "top heads" in err


def test_run_uses_the_file_and_refuses_wrong_head_count_or_model_type(capsys, calibrated, model_dir, tmp_path):
    image = tmp_path / "scene.png"
    random_image(112, 112, 5).save(image)
    code, out, _ = run_cli(
        capsys,
        "run",
        image,
        "what color is the circle ?",
        "--model",
        model_dir,
        "--weights",
        calibrated,
        "--json",
        "--max-new-tokens",
        "1",
    )
    assert code == 0 and json.loads(out)["head_weights"] == str(calibrated)
    original = load_head_weights(calibrated)
    for values, model_type, fragment in (
        (torch.ones(8) / 8, "qwen2_5_vl", "holds 8 head weights but this model's"),
        (original.values, "qwen2_vl", "calibrated for model type 'qwen2_vl', not"),
    ):
        bad = tmp_path / "bad.safetensors"
        save_head_weights(
            bad,
            HeadWeights(values=values, source="t", metadata={**original.metadata, "model_type": model_type}),
            overwrite=True,
        )
        code, out, err = run_cli(capsys, "run", image, "q ?", "--model", model_dir, "--weights", bad)
        last = err.strip().splitlines()[-1]  # (transformers may draw its loading bar first)
        assert code == 2 and out == "" and last.startswith("hawk: error: ") and fragment in last


def test_existing_output_needs_force(capsys, calibrated, model_dir, tmp_path):
    target = tmp_path / "w.safetensors"
    target.write_bytes(b"keep me")
    code, out, err = run_cli(capsys, "calibrate", "builtin:2", "-o", target, "--model", model_dir)
    assert code == 2 and out == "" and err.count("\n") == 1 and "already exists. Pass --force" in err
    assert target.read_bytes() == b"keep me"
    code, _, _ = run_cli(capsys, "calibrate", "builtin:2", "-o", target, "--model", model_dir, "--force", "-q")
    assert code == 0 and load_head_weights(target).num_heads == 4


def test_ctrl_c_leaves_no_file_and_exits_130(capsys, monkeypatch, model_dir, tmp_path):
    import hawk_cli.tasks.calibration as calibration

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(calibration, "sample_drops", interrupted)
    code, out, err = run_cli(capsys, "calibrate", "builtin:2", "-o", tmp_path / "w.safetensors", "--model", model_dir)
    assert code == 130 and out == "" and "interrupted; no weights file was written" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "data, extra, fragment",
    [
        ("{d}/missing", [], "calibration data '{d}/missing' does not exist"),
        ("{d}/broken.jsonl", [], "line 2 is not valid JSON"),
        ("{d}/noimage.jsonl", [], "line 1: image 'gone.png' does not exist"),
        ("{d}/unlabelled.jsonl", [], "line 1 has no 'answer', and --method ablation needs"),
        ("builtin:0", [], "'builtin:0' is not builtin:N"),
        ("builtin:2", ["--method", "fisher"], "unknown calibration method 'fisher'"),
        ("builtin:2", ["--limit", "0"], "--limit must be at least 1"),
    ],
)
def test_bad_data_gives_one_line_and_exit_2(capsys, tmp_path, data, extra, fragment):
    random_image(32, 32).save(tmp_path / "a.png")
    (tmp_path / "broken.jsonl").write_text('{"image": "a.png", "question": "q ?", "answer": "red"}\n{"image": \n')
    (tmp_path / "noimage.jsonl").write_text('{"image": "gone.png", "question": "q ?", "answer": "red"}\n')
    (tmp_path / "unlabelled.jsonl").write_text('{"image": "a.png", "question": "q ?"}\n')
    code, out, err = run_cli(capsys, "calibrate", data.format(d=tmp_path), "-o", tmp_path / "w.safetensors", *extra)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("hawk: error: ") and fragment.format(d=tmp_path) in err
    assert not (tmp_path / "w.safetensors").exists()
