"""Files and formats: images, prompts, head-weight files, atomic writes, model loading."""
