"""Scorer registry: the scorer names every face offers come from here. A new method is one file and one line."""

from __future__ import annotations

from hawk_cli.errors import UsageError
from hawk_cli.scorers.base import Scorer, ScoringInputs
from hawk_cli.scorers.hawk import HawkScorer, UniformHawkScorer
from hawk_cli.scorers.hawk_attn import AttentionMassPriorScorer, AttentionMassScorer
from hawk_cli.scorers.norm import NormScorer
from hawk_cli.scorers.oracle import OracleScorer
from hawk_cli.scorers.random import RandomScorer

SCORERS: dict[str, type[Scorer]] = {
    cls.name: cls
    for cls in (
        HawkScorer,
        UniformHawkScorer,
        AttentionMassScorer,
        AttentionMassPriorScorer,
        RandomScorer,
        NormScorer,
        OracleScorer,
    )
}


def get_scorer_class(name: str) -> type[Scorer]:
    if name not in SCORERS:
        raise UsageError(f"unknown scorer '{name}'", f"Choose one of: {', '.join(sorted(SCORERS))}")
    return SCORERS[name]


__all__ = [
    "SCORERS",
    "Scorer",
    "ScoringInputs",
    "get_scorer_class",
    "HawkScorer",
    "UniformHawkScorer",
    "RandomScorer",
    "NormScorer",
    "OracleScorer",
    "AttentionMassScorer",
    "AttentionMassPriorScorer",
]
