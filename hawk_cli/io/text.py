"""User text (questions, reference answers) checked before it reaches a tokenizer.

Two rules, both documented in docs/errors.md:
* length: at most `MAX_QUESTION_CHARS` characters, checked before tokenising (the tokenizer's time and memory grow
  with the text; a longer text is refused instead of being tokenised only to overflow the model's context);
* control tokens: text a user typed is plain text. A tokenizer matches its added tokens (`<|im_start|>`,
  `<|vision_start|>`, `<|image_pad|>` ...) inside any text it is given, so typed markers would become real
  control tokens, move HAWK's query span or inject a turn. hawk refuses such text (it does not rewrite it):
  the user sees exactly why, and the model never sees a prompt other than the one asked for.
"""

from __future__ import annotations

from collections.abc import Iterable

from hawk_cli.errors import InputError

# About 25 000 tokens of English: far more than a visual question needs, far less than would strain memory.
MAX_QUESTION_CHARS = 100_000


def check_question(text: str, what: str = "the question") -> str:
    """`text` stripped; InputError when empty or over the length limit (checked before any tokenising)."""
    if len(text) > MAX_QUESTION_CHARS:
        raise InputError(
            f"{what} is {len(text):,} characters long, over hawk's limit of {MAX_QUESTION_CHARS:,}", "Shorten it"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:  # bytes the terminal could not decode (surrogate escapes)
        raise InputError(
            f"{what} is not valid text (character {error.start + 1} is an undecodable byte)",
            "Give the question as UTF-8 text",
        ) from None
    text = text.strip()
    if not text:
        raise InputError(f"{what} is empty", "Give a non-empty text")
    return text


def control_token_ids(tokenizer) -> dict[int, str]:
    """Every token the tokenizer matches in raw text before its normal splitting: its added tokens (special or
    not: Qwen's `<tool_call>` is added but not special) and its special tokens, except the unknown token."""
    ids = {int(i): str(getattr(t, "content", t)) for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()}
    for token, token_id in zip(tokenizer.all_special_tokens, tokenizer.all_special_ids, strict=True):
        ids.setdefault(int(token_id), token)
    ids.pop(tokenizer.unk_token_id, None)  # what unknown words become: no control meaning
    return ids


def refuse_control_tokens(tokenizer, texts: Iterable[str], labels: Iterable[str] | None = None) -> None:
    """InputError when tokenising any of `texts` on its own yields a control token (see the module docstring).

    `labels` name each text in the message (default: "the question")."""
    texts = list(texts)
    if not texts:
        return
    labels = list(labels) if labels is not None else ["the question"] * len(texts)
    control = control_token_ids(tokenizer)
    for label, ids in zip(labels, tokenizer(texts, add_special_tokens=False)["input_ids"], strict=True):
        found = next((control[i] for i in ids if i in control), None)
        if found is not None:
            raise InputError(
                f"{label} contains the model's control token '{found}'",
                "Remove it: hawk passes user text as plain text and refuses control tokens in it",
            )


def read_question(stream) -> str:
    """The question from a stream (stdin), read up to the length limit: a longer one is refused without being
    read whole. Bytes are decoded as UTF-8 (a byte-order mark dropped), as JSONL lines are."""
    binary = getattr(stream, "buffer", None)
    if binary is None:  # a text stream (tests, embedding callers)
        return check_question(stream.read(MAX_QUESTION_CHARS + 1))
    data = binary.read(4 * MAX_QUESTION_CHARS + 4)  # UTF-8 takes at most 4 bytes a character
    if binary.read(1):
        raise InputError(
            f"the question on stdin is over hawk's limit of {MAX_QUESTION_CHARS:,} characters", "Shorten it"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(
            f"the question on stdin is not valid UTF-8 (byte 0x{data[error.start]:02x} at byte {error.start + 1})",
            "Send it as UTF-8",
        ) from None
    return check_question(text)
