"""The pruning engine: token roles, scoring inputs, selection, compaction and the generation loop. Never prints."""
