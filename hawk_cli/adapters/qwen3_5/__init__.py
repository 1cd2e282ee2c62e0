"""Qwen3.5 and Qwen3.5-MoE: the hybrid (Gated DeltaNet + gated attention) adapter, its prompts, compaction oracle
and stand-in processors."""

from hawk_cli.adapters.qwen3_5.adapter import Qwen35Adapter

__all__ = ["Qwen35Adapter"]
