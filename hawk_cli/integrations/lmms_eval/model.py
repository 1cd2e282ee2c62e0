"""`--model hawk` for lmms-eval (0.7+): a chat-style model (`is_simple = False`) answering with HAWK pruning.

    lmms-eval eval --model hawk --model_args pretrained=Qwen/Qwen2.5-VL-7B-Instruct,ratio=0.8 --tasks mme

Model arguments: see `runner.HarnessSettings` (pretrained, ratio, scorer, weights, layer, device, dtype,
attn_implementation, batch_size, min_pixels, max_pixels, max_new_tokens, seed, system_prompt). The harness's
`--batch_size` sets the batch. Each answer reports the pruned prompt's length as its input tokens (lmms-eval's
per-sample token accounting), and each batch logs the kept visual tokens of every image. Likelihood requests
(multiple-choice tasks) score each target after the same pruned prompt (`HawkModel.loglikelihood`).
"""

from __future__ import annotations

import copy

from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
from loguru import logger as eval_logger
from tqdm import tqdm

from hawk_cli.engine.library import Generation
from hawk_cli.errors import InputError
from hawk_cli.integrations.lmms_eval.runner import HarnessRunner, HarnessSettings


class HawkLmms(lmms):
    """hawk's pruned generation behind lmms-eval's chat-model interface."""

    is_simple = False

    def __init__(self, max_batch_size=None, **model_args) -> None:
        super().__init__()
        device = model_args.get("device")
        if device in (None, "cuda"):  # one process per GPU under `accelerate launch`: this process's own GPU
            model_args["device"] = self._distributed_device() or device or "auto"
        batch = model_args.get("batch_size", 1)
        model_args["batch_size"] = 1 if str(batch).startswith("auto") else batch
        self.settings = HarnessSettings.parse(model_args)
        self.runner = HarnessRunner(self.settings)
        self.kept_images = self.visual_images = 0

    def _distributed_device(self) -> str | None:
        try:
            from accelerate import Accelerator
        except ImportError:
            return None
        accelerator = Accelerator()
        if accelerator.num_processes <= 1:
            return None
        self.accelerator = accelerator
        self._rank, self._world_size = accelerator.process_index, accelerator.num_processes
        return f"cuda:{accelerator.local_process_index}"

    @property
    def batch_size(self) -> int:
        return self.settings.batch_size

    # --- lmms-eval's interface ---------------------------------------------------------------------------------
    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        items = [(self._chat(request, request.args[1](self._doc(request))), request.args[2]) for request in requests]
        progress = tqdm(total=len(requests), disable=self.rank != 0, desc="hawk answering")
        answers = self.runner.answer(items, on_batch=lambda outputs: self._after_batch(outputs, progress))
        progress.close()
        results = []
        for request, (text, output) in zip(requests, answers, strict=True):
            self.cache_hook.add_partial("generate_until", (request.args[0], request.args[2]), text)
            results.append(_result(text, output))
        return results

    def generate_until_multi_round(self, requests: list[Instance]) -> list[list[str]]:
        """Rounds as lmms-eval's chat models run them: round 0 is `doc_to_messages(doc)`, each later round
        `doc_to_messages(doc, round_idx=..., previous_output=..., previous_round_info=...)` until it signals the
        end; every round is a fresh, pruned prefill. Rounds of different documents are batched together."""
        rounds: list[list[str]] = [[] for _ in requests]
        state = {index: None for index in range(len(requests))}  # previous_round_info per active request
        chats = {index: request.args[1](self._doc(request)) for index, request in enumerate(requests)}
        round_idx = 0
        while chats:
            order = sorted(chats)
            answers = self.runner.answer(
                [(self._chat(requests[i], chats[i]), requests[i].args[2]) for i in order],
                on_batch=lambda outputs: self._after_batch(outputs, None),
            )
            round_idx += 1
            following = {}
            for index, (text, _) in zip(order, answers, strict=True):
                rounds[index].append(text)
                request = requests[index]
                payload = request.args[1](
                    self._doc(request),
                    round_idx=round_idx,
                    previous_output=list(rounds[index]),
                    previous_round_info=state[index],
                )
                if isinstance(payload, tuple) and len(payload) == 4 and not payload[1] and payload[0] is not None:
                    following[index], state[index] = payload[0], payload[3]
            chats = following
        return rounds

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """(log-probability of the target after the pruned prompt, whether greedy decoding writes exactly it) per
        request, as lmms-eval's multiple-choice and likelihood tasks score answers. The request carries the
        context text, the target (text, or a function of the document) and the document's visuals."""
        items = []
        for request in requests:
            context, target, doc_to_visual, *_ = request.args
            doc = self._doc(request)
            continuation = target if isinstance(target, str) else target(doc)
            if not isinstance(continuation, str):
                raise InputError(
                    f"a loglikelihood target must be text, got {type(continuation).__name__}",
                    "Make the task's doc_to_target return the answer's text",
                )
            visuals = doc_to_visual(doc) if callable(doc_to_visual) else doc_to_visual
            content = [{"type": "image", "url": image} for image in _flat(visuals or []) if image is not None]
            chat = [{"role": "user", "content": [*content, {"type": "text", "text": context}]}]
            items.append((self._chat(request, chat), continuation))
        results = []
        for request, (_, continuation), scored in zip(requests, items, self.runner.loglikelihood(items), strict=True):
            result = (scored.logprob, scored.greedy)
            self.cache_hook.add_partial("loglikelihood", (request.args[0], continuation), result)
            results.append(result)
        return results

    # --- helpers ---------------------------------------------------------------------------------------------------
    def _doc(self, request: Instance) -> dict:
        _, _, _, doc_id, task, split = request.args
        return self.task_dict[task][split][doc_id]

    def _chat(self, request: Instance, messages) -> list:
        if not self.settings.system_prompt:
            return messages
        return self._apply_system_prompt(
            copy.deepcopy(list(messages)), self._resolve_system_prompt(self.settings.system_prompt)
        )

    def _after_batch(self, outputs: list[Generation], progress) -> None:
        per_image = [pair for output in outputs for pair in output.kept_per_image]
        self.kept_images += sum(kept for kept, _ in per_image)
        self.visual_images += sum(total for _, total in per_image)
        eval_logger.info(
            "hawk: ratio {} kept visual tokens per image (kept/total): {}",
            self.settings.ratio,
            " ".join(f"{kept}/{total}" for kept, total in per_image) or "no images",
        )
        if progress is not None:
            progress.update(len(outputs))


def _result(text: str, output: Generation) -> GenerationResult:
    """The answer with the PRUNED prompt's length as its input tokens (what the language model actually read)."""
    return GenerationResult(
        text=text,
        token_counts=TokenCounts(input_tokens=output.stats.prompt_tokens_kept, output_tokens=len(output.tokens)),
    )


def _flat(visuals) -> list:
    """A document's visuals as one list (lmms-eval's doc_to_visual may nest them per image)."""
    if not isinstance(visuals, (list, tuple)):
        return [visuals]
    return [item for entry in visuals for item in _flat(entry)]
