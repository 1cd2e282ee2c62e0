"""A 100-question `hawk eval` of the built-in model (CPU, under a minute): the bounds behave as bounds.

The oracle keeps every target token and stays within a few points of unpruned on single-object questions;
random keeps about the keep fraction of target tokens; the same seed gives the same answers.
"""

from __future__ import annotations

import pytest

from hawk_cli.io.models import builtin_dir
from hawk_cli.synthetic.scenes import heldout_set
from hawk_cli.tasks.evaluation import EvalSettings, evaluate

pytestmark = pytest.mark.skipif(
    not (builtin_dir() / "tokenizer.json").is_file() or not (builtin_dir() / "model.safetensors").is_file(),
    reason="the built-in model is not installed in this checkout",
)

N = 100
SINGLE_OBJECT = ("color", "shape", "digit")


@pytest.fixture(scope="module")
def session():
    from hawk_cli.engine.session import HawkSession

    return HawkSession.open("builtin", device="cpu")


@pytest.fixture(scope="module")
def questions():
    return heldout_set(N)


@pytest.fixture(scope="module")
def report(session, questions):
    return evaluate(
        session, EvalSettings(ratios=(0.8,), methods=("random", "oracle"), n=N, batch_size=20), questions=questions
    )


def _single_object_accuracy(tally) -> float:
    return sum(tally.correct[k] for k in SINGLE_OBJECT) / sum(tally.total[k] for k in SINGLE_OBJECT)


def test_unpruned_model_answers_well(report):
    assert report.unpruned_figures()["accuracy"] >= 0.93


def test_oracle_keeps_every_target_and_stays_near_unpruned_on_single_object_questions(report):
    oracle = next(r for r in report.results if r.method == "oracle")
    assert oracle.figures()["target_recall"] == 1.0  # every target grid fits in 52 kept tokens
    assert _single_object_accuracy(oracle.tally) >= _single_object_accuracy(report.unpruned) - 0.05


def test_random_recall_is_close_to_the_keep_fraction(report):
    random = next(r for r in report.results if r.method == "random").figures()
    assert random["keep_fraction"] == pytest.approx(52 / 256)
    assert abs(random["target_recall"] - 52 / 256) < 0.05
    oracle = next(r for r in report.results if r.method == "oracle").figures()
    assert oracle["accuracy"] > random["accuracy"]  # the benchmark discriminates


def test_same_seed_same_answers(session, questions, report):
    again = evaluate(
        session, EvalSettings(ratios=(0.8,), methods=("random",), n=20, batch_size=20), questions=questions[:20]
    )
    assert again.unpruned.answers == report.unpruned.answers[:20]
    first = next(r for r in report.results if r.method == "random")
    assert again.results[0].tally.answers == first.tally.answers[:20]
