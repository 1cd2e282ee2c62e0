"""hawk: training-free visual-token pruning for multimodal LLMs. Importing it changes nothing anywhere."""

__version__ = "0.1.0"
