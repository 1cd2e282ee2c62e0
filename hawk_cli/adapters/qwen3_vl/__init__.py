"""Qwen3-VL and Qwen3-VL-MoE: the adapter (DeepStack features pruned with the tokens), prompt building with
the family's text timestamps for video, the stock tower's features, and stand-in processors."""

from hawk_cli.adapters.qwen3_vl.adapter import Qwen3VLAdapter

__all__ = ["Qwen3VLAdapter"]
