"""hawk inside evaluation harnesses (lmms-eval, VLMEvalKit): thin wrappers over `hawk_cli.api`."""
