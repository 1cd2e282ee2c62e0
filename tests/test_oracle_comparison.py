"""The step-comparison rule of the oracle check: differences must be within tolerance while inputs agree, and a
greedy divergence is accepted only at a near-tie of the oracle's top two logits."""

import torch

from hawk_cli.tasks.oracle import compare_step_logits


def test_equal_runs_pass_and_compare_every_step():
    steps = [torch.tensor([[0.0, 2.0, 1.0]]), torch.tensor([[3.0, 0.0, 1.0]])]
    comparison = compare_step_logits(steps, [s.clone() for s in steps])
    assert comparison.passed(1e-5) and comparison.diverged_at_step is None
    assert comparison.tokens_equal == comparison.tokens_compared == 2


def test_divergence_at_a_near_tie_passes_and_stops_the_comparison():
    ours = [torch.tensor([[1.0, 1.00004, 0.0]]), torch.tensor([[9.0, 0.0, 0.0]])]
    oracle = [torch.tensor([[1.00003, 1.0, 0.0]]), torch.tensor([[0.0, 9.0, 0.0]])]
    comparison = compare_step_logits(ours, oracle)
    assert comparison.diverged_at_step == 0 and len(comparison.step_max_abs_logit_diff) == 1
    assert comparison.passed(1e-4)
    assert not comparison.passed(1e-5)  # the same flip is not a tie at a tighter tolerance


def test_divergence_with_a_clear_winner_fails():
    ours = [torch.tensor([[0.0, 2.0, 0.0]])]
    oracle = [torch.tensor([[2.0, 0.0, 0.0]])]
    assert not compare_step_logits(ours, oracle).passed(0.1)


def test_logit_drift_without_divergence_fails():
    ours = [torch.tensor([[0.0, 2.5, 0.0]])]
    oracle = [torch.tensor([[0.0, 2.0, 0.0]])]
    comparison = compare_step_logits(ours, oracle)
    assert comparison.diverged_at_step is None and not comparison.passed(0.1)
