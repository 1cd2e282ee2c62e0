"""JSONL serving plumbing: read ahead, prepare requests in workers, batch, isolate failures."""
