"""Qwen2-VL and Qwen2.5-VL: the adapter, its batched vision tower, prompt building, pixels and video."""

from hawk_cli.adapters.qwen2_vl.adapter import QwenVLAdapter

__all__ = ["QwenVLAdapter"]
