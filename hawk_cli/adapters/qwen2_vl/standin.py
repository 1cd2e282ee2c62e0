"""A tokenizer and image processor for a Qwen-VL model built from a published config with no checkpoint
(`hawk bench --config ... --random-weights`): prompts then have the released layout and vision ids."""

from __future__ import annotations

# Qwen2.5-VL's published preprocessor bounds (28x28 merged patches): a 1008x1008 image is 36x36 = 1296 tokens.
PUBLISHED_MIN_PIXELS, PUBLISHED_MAX_PIXELS = 56 * 56, 28 * 28 * 16384


def qwen_id_tokenizer(first_special_id: int = 151643):
    """Word-level tokenizer whose special tokens carry Qwen's real ids (151643...), for models built from a
    published config without a checkpoint: prompts then have the released layout and vision ids."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from hawk_cli.synthetic import tokenizer as words

    plain = dict.fromkeys((words.UNKNOWN_TOKEN,) + words.VOCABULARY[len(words.QWEN_SPECIAL_TOKENS) :])
    vocab = {word: index for index, word in enumerate(plain)}
    vocab.update({token: first_special_id + index for index, token in enumerate(words.QWEN_SPECIAL_TOKENS)})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=words.UNKNOWN_TOKEN))
    backend.normalizer, backend.pre_tokenizer = normalizers.Lowercase(), pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=words.UNKNOWN_TOKEN,
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        additional_special_tokens=[t for t in words.QWEN_SPECIAL_TOKENS if t not in ("<|endoftext|>", "<|im_end|>")],
        padding_side="left",
    )
    tokenizer.chat_template = words.QWEN_VL_CHAT_TEMPLATE
    return tokenizer


def qwen2_vl_image_processor():
    from transformers import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(size={"shortest_edge": PUBLISHED_MIN_PIXELS, "longest_edge": PUBLISHED_MAX_PIXELS})
