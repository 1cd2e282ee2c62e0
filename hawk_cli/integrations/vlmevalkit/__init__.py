"""VLMEvalKit: a model class with VLMEvalKit's `generate(message, dataset)` shape, and a launcher that registers it in
`vlmeval.config.supported_VLM` at run time and runs VLMEvalKit's own inference and evaluation on its datasets.

VLMEvalKit has no plugin mechanism; registering into its model table from outside is the least invasive route
(no fork, no edited file). `python -m hawk_cli.integrations.vlmevalkit --help`; docs/harness.md.
"""

from hawk_cli.integrations.vlmevalkit.model import HawkVLM

__all__ = ["HawkVLM"]
