"""Transmit-limited broadcast queue (trio_distribute._proto.broadcast_queue)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from property_examples import examples

from trio_distribute._proto.broadcast_queue import BroadcastQueue, retransmit_limit


@pytest.mark.parametrize(
    ("n", "expected"),
    [(0, 4), (1, 4), (9, 4), (10, 8), (32, 8), (99, 8), (100, 12), (1000, 16), (10000, 20)],
)
def test_retransmit_limit_is_mult_times_ceil_log10(n: int, expected: int) -> None:
    assert retransmit_limit(4, n) == expected


def test_least_transmitted_then_largest_then_newest_first() -> None:
    queue = BroadcastQueue()
    queue.queue("a", b"a" * 10)
    queue.queue("b", b"b" * 30)
    queue.queue("c", b"c" * 10)
    queue.queue("d", b"d" * 20)
    assert queue.take(1000, 10) == [b"b" * 30, b"d" * 20, b"c" * 10, b"a" * 10]
    queue.queue("e", b"e" * 5)  # never sent: goes before everything sent once
    assert queue.take(1000, 10)[0] == b"e" * 5


def test_take_respects_space_and_skips_what_does_not_fit() -> None:
    queue = BroadcastQueue()
    queue.queue("big", b"x" * 50)
    queue.queue("mid", b"y" * 30)
    queue.queue("small", b"z" * 10)
    assert queue.take(45, 10) == [b"y" * 30, b"z" * 10]
    assert queue.transmits("big") == 0
    assert queue.transmits("mid") == 1
    # With a per-message overhead, fewer fit.
    assert queue.take(45, 10, overhead=10) == [b"y" * 30]  # "big" still does not fit


def test_new_news_about_a_member_replaces_the_old() -> None:
    queue = BroadcastQueue()
    queue.queue("a", b"old")
    queue.take(100, 10)
    queue.queue("a", b"newer")
    assert len(queue) == 1
    assert queue.transmits("a") == 0
    assert queue.take(100, 10) == [b"newer"]
    queue.invalidate("a")
    assert "a" not in queue
    assert queue.take(100, 10) == []


def test_dropped_after_the_retransmit_limit() -> None:
    queue = BroadcastQueue()
    queue.queue("a", b"news")
    sent = [queue.take(100, 3) for _ in range(5)]
    assert sent == [[b"news"]] * 3 + [[]] * 2
    assert len(queue) == 0


def test_prune_and_max_depth() -> None:
    queue = BroadcastQueue(max_depth=3)
    for name in "abc":
        queue.queue(name, name.encode())
    queue.take(1, 10)  # sends "c" (newest of equal size) once
    queue.queue("d", b"d")
    assert len(queue) == 3
    assert "c" not in queue  # the most-transmitted went first
    queue.take(100, 10)
    queue.prune(1)
    assert len(queue) == 0


def test_max_count() -> None:
    queue = BroadcastQueue()
    for i in range(10):
        queue.queue(str(i), b"x")
    assert len(queue.take(1000, 5, max_count=4)) == 4


operations = st.lists(
    st.one_of(
        st.tuples(st.just("queue"), st.sampled_from("abcdefgh"), st.integers(1, 120)),
        st.tuples(st.just("take"), st.integers(0, 400), st.integers(1, 6)),
        st.tuples(st.just("invalidate"), st.sampled_from("abcdefgh"), st.just(0)),
    ),
    max_size=80,
)


@settings(max_examples=examples(200), deadline=None)
@given(operations)
def test_model(ops: list[tuple[str, str | int, int]]) -> None:
    """Against a plain dict model: sizes fit, only queued news is sent, each
    at most ``limit`` times, in (transmits, -size, -age) order."""
    queue = BroadcastQueue()
    model: dict[str, tuple[bytes, int, int]] = {}  # name -> (payload, transmits, age)
    sent_counts: Counter[bytes] = Counter()
    age = 0
    for op, arg, value in ops:
        if op == "queue":
            assert isinstance(arg, str)
            age += 1
            payload = f"{arg}:{age}:".encode().ljust(value, b"_")
            queue.queue(arg, payload)
            model[arg] = (payload, 0, age)
        elif op == "invalidate":
            assert isinstance(arg, str)
            queue.invalidate(arg)
            model.pop(arg, None)
        else:
            assert isinstance(arg, int)
            space, limit = arg, value
            for name, (_, transmits, _) in list(model.items()):
                if transmits >= limit:
                    del model[name]  # already sent as often as the new limit allows
            # memberlist's greedy walk over (transmits, -size, -age) order.
            expected: list[bytes] = []
            room = space
            for name, (payload, transmits, born) in sorted(
                model.items(), key=lambda item: (item[1][1], -len(item[1][0]), -item[1][2])
            ):
                if len(payload) <= room:
                    expected.append(payload)
                    room -= len(payload)
                    if transmits + 1 >= limit:
                        del model[name]
                    else:
                        model[name] = (payload, transmits + 1, born)
            taken = queue.take(space, limit)
            assert taken == expected
            for payload in taken:
                sent_counts[payload] += 1
                assert sent_counts[payload] <= limit
        assert len(queue) == len(model)
        for name, (_, transmits, _) in model.items():
            assert queue.transmits(name) == transmits


def test_broadcast_queue_eviction_with_several_entries_per_bucket() -> None:
    # max_depth holds however the entries are spread over transmit buckets,
    # and the one evicted is the oldest of the most-transmitted bucket.
    queue = BroadcastQueue(max_depth=4)
    for name in ("a", "b", "c"):
        queue.queue(name, name.encode() * 10)
    assert len(queue.take(space=1000, limit=10)) == 3  # a, b, c: sent once
    queue.queue("d", b"d" * 10)  # d in bucket 0; a, b, c in bucket 1
    assert len(queue) == 4
    queue.queue("e", b"e" * 10)  # over max_depth: drop the oldest sent-once
    assert len(queue) == 4
    assert "a" not in queue and {"b", "c", "d", "e"} <= {n for n in "bcde" if n in queue}
    queue.queue("f", b"f" * 10)
    assert len(queue) == 4 and "b" not in queue and "c" in queue
    queue.queue("g", b"g" * 10)
    assert len(queue) == 4 and "c" not in queue
    # Bucket 1 is empty now: the oldest of bucket 0 goes next.
    queue.queue("h", b"h" * 10)
    assert len(queue) == 4 and "d" not in queue
    assert [n for n in "efgh" if n in queue] == ["e", "f", "g", "h"]


def test_broadcast_queue_eviction_picks_the_oldest_not_the_smallest() -> None:
    queue = BroadcastQueue(max_depth=3)
    queue.queue("old-big", b"x" * 50)
    queue.queue("new-small", b"y")
    queue.queue("newer", b"z" * 20)
    queue.queue("newest", b"w" * 5)
    assert "old-big" not in queue
    assert {"new-small", "newer", "newest"} == {
        n for n in ("new-small", "newer", "newest") if n in queue
    }


def test_broadcast_queue_default_depth_is_4096() -> None:
    queue = BroadcastQueue()
    for i in range(4096):
        queue.queue(f"m{i}", b"x")
    assert len(queue) == 4096 and "m0" in queue
    queue.queue("one-more", b"x")
    assert len(queue) == 4096 and "m0" not in queue and "one-more" in queue


@pytest.mark.parametrize("field", ["buckets", "payload", "name_of", "where", "next_id"])
def test_broadcast_queue_state_is_not_a_constructor_argument(field: str) -> None:
    # Only queue() fills the tables, so they always agree with each other.
    with pytest.raises(TypeError):
        BroadcastQueue(**{field: 0})


def test_broadcast_queue_take_caps_at_255_messages() -> None:
    # A compound datagram holds at most 255 parts.
    queue = BroadcastQueue()
    for i in range(300):
        queue.queue(f"m{i}", b"x")
    assert len(queue.take(space=10**6, limit=10)) == 255


def test_broadcast_queue_take_prefers_the_largest_that_fits() -> None:
    queue = BroadcastQueue()
    queue.queue("small", b"s" * 5)
    queue.queue("large", b"l" * 10)
    queue.queue("huge", b"h" * 50)
    assert queue.take(space=12, limit=10, max_count=1) == [b"l" * 10]
    assert queue.take(space=12, limit=10) == [b"s" * 5]


def test_broadcast_queue_take_fills_the_last_byte_from_later_buckets() -> None:
    queue = BroadcastQueue()
    queue.queue("a", b"a")
    assert queue.take(space=10, limit=10) == [b"a"]  # a: sent once
    queue.queue("b", b"bb")
    assert queue.take(space=3, limit=10) == [b"bb", b"a"]


def test_broadcast_queue_take_prunes_what_a_lowered_limit_has_used_up() -> None:
    # The cluster shrank: news already sent as often as the new limit allows
    # is dropped unsent, not sent once more ahead of the limit's check.
    queue = BroadcastQueue()
    queue.queue("a", b"a")
    for _ in range(3):
        assert queue.take(space=100, limit=10) == [b"a"]
    assert queue.transmits("a") == 3
    assert queue.take(space=100, limit=2) == []
    assert "a" not in queue and len(queue) == 0
