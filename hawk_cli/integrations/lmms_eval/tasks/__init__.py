"""lmms-eval task folders (passed to lmms-eval with `--include_path`)."""
