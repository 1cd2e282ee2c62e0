"""The `hawk_synthetic` task: the built-in model's held-out questions, offline."""
