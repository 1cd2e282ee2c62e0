"""A word-level tokenizer with Qwen's special tokens and chat template, for the built-in model and test models.

Why word-level: the synthetic questions use a few dozen words, so a 68-entry vocabulary keeps the embedding
table tiny while the prompt layout (system turn, vision span, question, assistant header) stays exactly Qwen's.
"""

from __future__ import annotations

# Qwen2-VL / Qwen2.5-VL special tokens in Qwen's order; <|image_pad|> is index 12.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
UNKNOWN_TOKEN = "[UNK]"

COLORS = ("red", "green", "blue", "yellow", "purple", "orange", "cyan")
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "star")
SHAPE_PLURALS = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "diamond": "diamonds",
    "cross": "crosses",
    "star": "stars",
}
DIGITS = tuple(str(d) for d in range(10))
COUNT_WORDS = ("one", "two", "three")

TEMPLATE_WORDS = (
    "system",
    "user",
    "assistant",
    "you",
    "are",
    "a",
    "helpful",
    ".",
    "?",
    "what",
    "color",
    "is",
    "the",
    "shape",
    "object",
    "digit",
    "in",
    "box",
    "how",
    "many",
    "there",
)

VOCABULARY = (
    QWEN_SPECIAL_TOKENS
    + (UNKNOWN_TOKEN,)
    + TEMPLATE_WORDS
    + COLORS
    + SHAPES
    + tuple(SHAPE_PLURALS.values())
    + DIGITS
    + COUNT_WORDS
)

# Qwen2-VL's chat template (default system prompt, image/video placeholders, generation prompt).
QWEN_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_word_tokenizer(words: tuple[str, ...] = VOCABULARY):
    """A `PreTrainedTokenizerFast` over `words` (specials first), left padding, eos `<|im_end|>`."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: index for index, word in enumerate(dict.fromkeys(words))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNKNOWN_TOKEN))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=UNKNOWN_TOKEN,
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        additional_special_tokens=[t for t in QWEN_SPECIAL_TOKENS if t not in ("<|endoftext|>", "<|im_end|>")],
        padding_side="left",
    )
    tokenizer.chat_template = QWEN_VL_CHAT_TEMPLATE
    return tokenizer
