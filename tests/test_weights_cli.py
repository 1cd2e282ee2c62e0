"""`hawk weights show FILE`: bars + metadata on stdout, `--json`, one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
from cli_helpers import run_cli

from hawk_cli.cli.weights import bar
from hawk_cli.io.weights import HeadWeights, save_head_weights


@pytest.fixture
def weights_file(tmp_path):
    path = tmp_path / "w.safetensors"
    save_head_weights(
        path,
        HeadWeights(
            values=torch.tensor([0.1, 0.6, 0.0, 0.3]),
            source="t",
            metadata={
                "model_type": "qwen2_5_vl",
                "method": "ablation",
                "layer": 0,
                "subsets": ["color", "count"],
                "samples_per_subset": {"color": 3, "count": 2},
            },
            extra_tensors={"subset_drops": torch.tensor([[0.1, 0.9, 0.0, 0.2], [0.3, 0.5, 0.1, 0.4]])},
        ),
    )
    return path


def test_bar_is_proportional_in_eighths():
    assert bar(1.0, 1.0, 4) == "████" and bar(0.5, 1.0, 4) == "██" and bar(0.0, 1.0) == ""
    assert bar(1 / 32, 1.0, 4) == "▏"


def test_show_prints_bars_drops_and_metadata(capsys, weights_file):
    code, out, err = run_cli(capsys, "weights", "show", weights_file)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"{weights_file}: 4 head weights (sum 1.0000)"
    assert lines[2] == "  head   1  0.6000  " + "█" * 32  # the largest weight gets the full bar
    assert lines[3] == "  head   2  0.0000  "
    assert "raw drops per subset (before Eq. 3):" in out and "  color" in out
    assert "  method" in out and "format_version" in out


def test_show_json(capsys, weights_file):
    code, out, _ = run_cli(capsys, "weights", "show", weights_file, "--json")
    record = json.loads(out)
    assert code == 0 and len(out.strip().splitlines()) == 1
    assert record["head_importance"] == pytest.approx([0.1, 0.6, 0.0, 0.3])
    assert record["metadata"]["samples_per_subset"] == {"color": 3, "count": 2}
    assert record["metadata"]["layer"] == "0" and record["tensors"]["subset_drops"][1][1] == pytest.approx(0.5)


def test_show_missing_or_invalid_file_is_one_line(capsys, tmp_path):
    code, out, err = run_cli(capsys, "weights", "show", tmp_path / "nope.safetensors")
    assert code == 2 and out == "" and err.count("\n") == 1 and "does not exist" in err
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    code, _, err = run_cli(capsys, "weights", "show", junk)
    assert code == 2 and err.count("\n") == 1 and "is not a valid safetensors file" in err
