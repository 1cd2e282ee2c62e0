"""The synthetic world of the built-in model: scenes, questions, per-token targets and a word-level tokenizer."""
