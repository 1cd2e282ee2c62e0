"""Static-cache capacities rounded up to a few buckets, so a few captured decode graphs serve every prompt length.

A CUDA graph replays on fixed tensor addresses and shapes, so every distinct (batch, capacity) needs its own
static cache and its own capture. The rule: below `minimum` slots, `minimum`; above it, round up to a multiple of
a quarter of the largest power of two below the need, and never to less than a multiple of `minimum`:

    256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096, 5120, 6144, ...

So a bucket wastes less than a quarter of what it holds (less than `minimum` slots when small) and each doubling
of the prompt length adds at most four buckets. The unused slots cost only attention reads over masked keys.
"""

from __future__ import annotations

MINIMUM_SLOTS = 256
STEPS_PER_DOUBLING = 4


def capacity_bucket(needed: int, minimum: int = MINIMUM_SLOTS, steps_per_doubling: int = STEPS_PER_DOUBLING) -> int:
    """The smallest bucket holding `needed` cache slots (prompt plus new tokens)."""
    if needed < 1 or minimum < 1 or steps_per_doubling < 1:
        raise ValueError(
            f"capacity_bucket needs positive sizes, got needed={needed}, minimum={minimum}, "
            f"steps_per_doubling={steps_per_doubling}"
        )
    if needed <= minimum:
        return minimum
    below = 1 << ((needed - 1).bit_length() - 1)  # the largest power of two strictly below `needed`
    step = max(minimum, below // steps_per_doubling)
    return -(-needed // step) * step


PREFILL_MINIMUM_STEP = 32
PREFILL_STEPS_PER_DOUBLING = 8


def prefill_bucket(length: int) -> int:
    """The padded length a captured prefill of `length` prompt columns runs at: a multiple of 32 up to 256, then
    eight even steps per doubling (288, 320, ..., 512, 576, ..., 1024, 1152, ...), so padding adds under an eighth
    of the prompt's work while a stream of prompts of similar lengths reuses a few graphs."""
    return capacity_bucket(length, PREFILL_MINIMUM_STEP, PREFILL_STEPS_PER_DOUBLING)
