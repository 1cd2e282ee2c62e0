"""hawk inside evaluation harnesses (lmms-eval, VLMEvalKit): thin wrappers over the library model
(`hawk_cli.engine.library`, public as `hawk_cli.api`)."""
