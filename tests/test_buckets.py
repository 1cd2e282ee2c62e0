"""Static-cache capacity buckets: a few captured graphs serve every prompt length, and no bucket wastes much."""

from __future__ import annotations

import bisect

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hawk_cli.engine.buckets import capacity_bucket


def documented_buckets(limit: int) -> list[int]:
    """The list the module docstring shows, built independently: 256 to 1024 in steps of 256, then four even
    steps per doubling."""
    values = {256 * m for m in range(1, 5)}
    power = 1024
    while power < limit:
        values.update(power + j * power // 4 for j in range(1, 5))
        power *= 2
    return sorted(values)


BUCKETS = documented_buckets(1 << 17)


def oracle(needed: int, buckets: list[int] = BUCKETS) -> int:
    return buckets[bisect.bisect_left(buckets, needed)]


def test_every_length_up_to_64k_gets_the_smallest_documented_bucket():
    assert BUCKETS[:13] == [256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096, 5120]
    mismatches = [n for n in range(1, 1 << 16) if capacity_bucket(n) != oracle(n)]
    assert mismatches == []


def test_the_oracle_rejects_power_of_two_rounding():
    """Negative control: rounding up to a power of two (the obvious alternative) disagrees with the rule."""

    def power_of_two(n: int) -> int:
        return max(256, 1 << (n - 1).bit_length())

    assert [n for n in (1100, 1400, 3000) if power_of_two(n) != oracle(n)] == [1100, 1400, 3000]


@given(st.integers(min_value=1, max_value=1 << 22))
def test_a_bucket_holds_the_need_and_wastes_under_a_quarter(needed):
    bucket = capacity_bucket(needed)
    assert bucket >= needed
    assert bucket - needed < max(256, needed / 4)
    assert bucket % 256 == 0


@given(st.integers(min_value=8, max_value=21))
def test_each_doubling_adds_at_most_four_buckets(exponent):
    low, high = 1 << exponent, 1 << (exponent + 1)
    seen = {capacity_bucket(n) for n in range(low + 1, high + 1, max(1, low // 512))} | {capacity_bucket(high)}
    assert len(seen) <= 4


def test_the_7b_prompts_of_the_benchmark_share_few_buckets():
    """The benchmark's prompts (1337 tokens unpruned, 282 at ratio 0.8) plus 16 or 64 new tokens."""
    assert {capacity_bucket(1337 + n) for n in (16, 64)} == {1536}
    assert {capacity_bucket(282 + n) for n in (16, 64)} == {512}


@pytest.mark.parametrize("args", [(0,), (-5,), (10, 0), (10, 256, 0)])
def test_nonpositive_sizes_are_refused(args):
    with pytest.raises(ValueError):
        capacity_bucket(*args)
