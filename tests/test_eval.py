"""`hawk eval` on a tiny random model: deterministic for a seed, the --json schema, the table, the plot, the errors.

The tiny model answers at chance; what is checked here is the bookkeeping (target masks in prompt coordinates,
keep fractions, recall, retention, standard errors). Accuracy bounds on the built-in model: test_eval_builtin.py.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from cli_helpers import run_cli
from tiny_models import tiny_image_processor, tiny_model, tiny_tokenizer

from hawk_cli.engine.session import HawkSession
from hawk_cli.errors import InputError, UsageError
from hawk_cli.synthetic.scenes import heldout_set
from hawk_cli.tasks.evaluation import EvalSettings, evaluate, normalise_answer, proportion, target_masks

N = 8
FIGURES = {
    "method",
    "bound",
    "ratio",
    "keep_fraction",
    "visual_tokens_kept_per_image",
    "questions",
    "correct",
    "accuracy",
    "accuracy_se",
    "retention",
    "retention_se",
    "target_recall",
    "per_type",
    "scoring_s",
    "prefill_s",
    "scoring_share_of_unpruned_prefill",
    "unpruned",
    "model",
    "device",
    "dtype",
    "versions",
    "seed",
    "held_out_seed",
    "batch_size",
    "eval_s",
    "benchmark",
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny Qwen2.5-VL whose image processor keeps the 448x448 scenes whole: 16x16 = 256 visual tokens."""
    folder = tmp_path_factory.mktemp("tiny-eval")
    tiny_model().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    tiny_image_processor(max_pixels=448 * 448).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def session(model_dir):
    return HawkSession.open(str(model_dir), device="cpu")


@pytest.fixture(scope="module")
def questions():
    return heldout_set(N)


@pytest.fixture(scope="module")
def report(session, questions):
    return evaluate(
        session,
        EvalSettings(ratios=(0.5, 0.8), methods=("random", "oracle", "norm"), n=N, batch_size=3),
        questions=questions,
    )


def test_deterministic_for_a_seed_and_independent_of_batch_size(session, questions, report):
    again = evaluate(session, EvalSettings(ratios=(0.8,), methods=("random",), n=N, batch_size=N), questions=questions)
    first = next(r for r in report.results if (r.method, r.ratio) == ("random", 0.8))
    assert again.results[0].tally.targets_kept == first.tally.targets_kept
    assert again.results[0].tally.answers == first.tally.answers
    assert again.unpruned.answers == report.unpruned.answers
    other_seed = evaluate(session, EvalSettings(ratios=(0.8,), methods=("random",), n=N, seed=1), questions=questions)
    assert other_seed.results[0].tally.targets_kept != report.results[1].tally.targets_kept


def test_keep_fraction_recall_and_oracle_keeps_every_target(report):
    by_key = {(r.method, r.ratio): r.figures() for r in report.results}
    for (_method, ratio), figures in by_key.items():
        assert figures["keep_fraction"] == pytest.approx(math.ceil(256 * (1 - ratio)) / 256)
        assert figures["questions"] == N and sum(k["questions"] for k in figures["per_type"].values()) == N
    # every target grid of these questions fits in a 20 % keep set, so the oracle keeps all of them
    assert by_key["oracle", 0.8]["target_recall"] == 1.0 and by_key["oracle", 0.5]["target_recall"] == 1.0
    assert by_key["random", 0.5]["target_recall"] < 1.0


def test_target_masks_map_the_grid_row_major_onto_visual_tokens(session, questions):
    from hawk_cli.adapters.qwen2_vl.prompts import build_inputs
    from hawk_cli.io.requests import Request

    inputs = build_inputs(
        session.tokenizer, session.loaded.image_processor, [Request(q.question, (q.image,)) for q in questions[:2]]
    )
    visual = inputs.mm_token_type_ids == 1
    masks = target_masks(visual, questions[:2])
    for row in range(2):
        assert torch.equal(masks[row][visual[row]], torch.from_numpy(questions[row].target_mask.reshape(-1)))
        assert not masks[row][~visual[row]].any()
    fewer = visual.clone()
    fewer[0, visual[0].nonzero()[0]] = False
    with pytest.raises(InputError, match="not the 256"):
        target_masks(fewer, questions[:2])


def test_helpers():
    assert normalise_answer(" Red.") == "red" and normalise_answer("") == "" and normalise_answer("7 !") == "7"
    p, se = proportion(3, 4)
    assert p == 0.75 and se == pytest.approx(math.sqrt(0.75 * 0.25 / 4))
    assert proportion(0, 0) == (None, None)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(ratios=(1.0,)), "ratio must be in [0, 1)"),
        (dict(ratios=(0.0,)), "ratio 0 is the unpruned run"),
        (dict(ratios=(0.5, 0.5)), "repeats"),
        (dict(methods=("nope",)), "unknown scorer 'nope'"),
        (dict(n=0), "n must be at least 1"),
        (dict(batch_size=0), "batch_size must be at least 1"),
    ],
)
def test_bad_settings_are_usage_errors(kwargs, fragment):
    with pytest.raises(UsageError) as raised:
        EvalSettings(**kwargs)
    assert fragment in raised.value.render()


def test_json_records_one_per_method_and_ratio_with_the_environment(capsys, model_dir):
    code, out, err = run_cli(
        capsys,
        "eval",
        "--model",
        str(model_dir),
        "-n",
        "4",
        "--ratio",
        "0.5,0.8",
        "--scorer",
        "random,oracle",
        "--json",
        "--batch-size",
        "4",
    )
    assert code == 0, err
    records = [json.loads(line) for line in out.strip().splitlines()]
    assert [(r["method"], r["ratio"]) for r in records] == [
        ("random", 0.5),
        ("random", 0.8),
        ("oracle", 0.5),
        ("oracle", 0.8),
    ]
    for record in records:
        assert set(record) >= FIGURES
        assert set(record["per_type"]) == {"color", "shape", "digit", "count"}
        assert set(record["per_type"]["count"]) == {
            "questions",
            "accuracy",
            "accuracy_se",
            "retention",
            "target_recall",
        }
        assert record["unpruned"]["questions"] == 4 and record["questions"] == 4
        assert set(record["versions"]) == {"hawk", "torch", "transformers"}
        assert "proxy" in record["benchmark"]
    assert records[0]["bound"] == "lower bound" and records[2]["bound"] == "upper bound"
    assert records[0]["seed"] == 0
    assert "Traceback" not in err


def test_plot_is_a_png_written_atomically(capsys, model_dir, tmp_path):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "retention.png"
    code, _, err = run_cli(
        capsys,
        "eval",
        "--model",
        str(model_dir),
        "-n",
        "2",
        "--ratio",
        "0.5,0.8",
        "--scorer",
        "random",
        "--plot",
        str(plot),
        "-q",
    )
    assert code == 0, err
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["retention.png"]  # no temporary file left behind


def test_plot_without_matplotlib_fails_before_any_work(capsys, monkeypatch, model_dir, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, out, err = run_cli(capsys, "eval", "--model", str(model_dir), "--plot", str(tmp_path / "r.png"))
    assert code == 1 and out == "" and "pip install 'hawk-vlm[plot]'" in err


def test_table_on_stdout(capsys, model_dir):
    code, out, err = run_cli(
        capsys, "eval", "--model", str(model_dir), "-n", "2", "--ratio", "0.8", "--scorer", "norm,oracle", "-q"
    )
    assert code == 0, err
    assert "unpruned" in out and "oracle (upper bound)" in out and "norm" in out and "count" in out
    assert "proxy" in out and "hawk: note" not in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--ratio", "0.5,x"], "--ratio must be numbers in (0, 1)"),
        (["--ratio", "1.2"], "--ratio must be in [0, 1), got 1.2"),
        (["--scorer", "hawk,bogus"], "unknown scorer 'bogus'"),
        (["-n", "0"], "-n must be at least 1"),
        (["--plot", "out.jpg"], "--plot writes a PNG"),
        (["--plot", "/no/such/folder/x.png"], "does not exist"),
    ],
)
def test_bad_arguments_are_one_line_errors(capsys, model_dir, argv, fragment):
    code, out, err = run_cli(capsys, "eval", "--model", str(model_dir), *argv)
    assert code in (1, 2) and out == ""
    assert fragment in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_existing_plot_needs_force(capsys, model_dir, tmp_path):
    plot = tmp_path / "r.png"
    plot.write_bytes(b"old")
    code, _, err = run_cli(
        capsys,
        "eval",
        "--model",
        str(model_dir),
        "-n",
        "1",
        "--ratio",
        "0.8",
        "--scorer",
        "random",
        "--plot",
        str(plot),
        "-q",
    )
    assert code == 2 and "--force" in err and plot.read_bytes() == b"old"
