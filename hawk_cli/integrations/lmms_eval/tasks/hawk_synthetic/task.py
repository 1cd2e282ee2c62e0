"""lmms-eval task class of `hawk_synthetic`: the documents are built in memory (offline, nothing downloaded)."""

from __future__ import annotations

import datasets
from lmms_eval.api.task import ConfigurableMessagesTask

from hawk_cli.integrations.lmms_eval.synthetic import (
    DEFAULT_QUESTIONS,
    doc_to_target,
    doc_to_text,
    doc_to_visual,
    documents,
    process_results,
)

__all__ = ["HawkSyntheticTask", "doc_to_target", "doc_to_text", "doc_to_visual", "process_results"]


class HawkSyntheticTask(ConfigurableMessagesTask):
    """The held-out questions of hawk's built-in model; `metadata.questions` sets how many (default all 2000)."""

    def __init__(self, config=None, **kwargs) -> None:
        # lmms-eval hands a task class its whole YAML, `class` key included, which its TaskConfig does not take.
        super().__init__(config={k: v for k, v in (config or {}).items() if k != "class"}, **kwargs)

    def download(self, dataset_kwargs=None) -> None:
        metadata = self.config.metadata if isinstance(self.config.metadata, dict) else {}
        count = int(metadata.get("questions", DEFAULT_QUESTIONS))
        self.dataset = datasets.DatasetDict({"test": datasets.Dataset.from_list(documents(count))})
        self.dataset_no_image = self.dataset
