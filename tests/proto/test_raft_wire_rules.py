"""Every bound of the election's wire decoder, on both sides of its edge."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest

from trio_distribute._proto.raft import (
    MAX_MESSAGE_SIZE,
    MAX_NAME_LENGTH,
    MAX_TERM,
    Heartbeat,
    PreVote,
    RaftDecodeError,
    Remove,
    decode_message,
    encode_message,
)

EMOJI = "\N{GRINNING FACE}"

GOOD: list[list[Any]] = [
    [1, 1, 0, 1, None],
    [2, 1, 2, True],
    [3, 1, 0, 1, ["a"]],
    [4, 1, False],
    [5, 1, 0.5, 0, 1, ["a", "b"]],
    [6, 1, 2, 0, 1],
    [7, "a"],
]


def decode(value: object) -> object:
    return decode_message(cbor2.dumps(value))


def refused(match: str, value: object) -> None:
    with pytest.raises(RaftDecodeError, match=match):
        decode(value)


def test_every_kind_takes_its_exact_field_count() -> None:
    for message in GOOD:
        decode(message)
        for bad in (message[:-1], [*message, 0]):
            refused(f"takes {len(message) - 1} fields", bad)
    for kind in (0, 8, True, "1", None, 1.0):
        refused("unknown raft message kind", [kind, 1])
    shapes: list[object] = [[], {"a": 1}, "x", 5]
    for shape in shapes:
        refused("non-empty CBOR array", shape)


@pytest.mark.parametrize(
    ("template", "index"),
    [
        ([1, 0, 0, 0, None], 1),
        ([1, 0, 0, 0, None], 2),
        ([1, 0, 0, 0, None], 3),
        ([2, 0, 0, True], 1),
        ([2, 0, 0, True], 2),
        ([4, 0, True], 1),
        ([5, 0, 0.0, 0, 0, []], 1),
        ([5, 0, 0.0, 0, 0, []], 3),
        ([5, 0, 0.0, 0, 0, []], 4),
        ([6, 0, 0.0, 0, 0], 1),
    ],
)
def test_terms_are_ints_in_zero_to_max_term(template: list[Any], index: int) -> None:
    assert MAX_TERM == 2**63 - 1
    for good in (0, 1, MAX_TERM):
        decode([*template[:index], good, *template[index + 1 :]])
    for bad in (-1, MAX_TERM + 1, True, 1.0, "1", None):
        refused("bad term", [*template[:index], bad, *template[index + 1 :]])


def test_flags_are_bools_only() -> None:
    for flag in (True, False):
        decode([4, 1, flag])
        decode([2, 1, 2, flag])
    for bad in (0, 1, None, "true"):
        refused("bad flag", [4, 1, bad])
        refused("bad flag", [2, 1, 2, bad])


def test_stamps_are_finite_numbers() -> None:
    for stamp in (0, -5, 1.5, 1e300):
        decode([5, 1, stamp, 0, 1, []])
        decode([6, 1, stamp, 0, 1])
    for bad in (float("nan"), float("inf"), float("-inf"), True, None, "1"):
        refused("bad stamp", [5, 1, bad, 0, 1, []])
        refused("bad stamp", [6, 1, bad, 0, 1])


@pytest.mark.parametrize(
    "where",
    ["remove", "heartbeat", "pre-vote", "vote"],
)
def test_names_are_1_to_318_characters(where: str) -> None:
    def message(name: object) -> list[Any]:
        if where == "remove":
            return [7, name]
        if where == "heartbeat":
            return [5, 1, 0.0, 0, 1, ["z", name]]
        return [1 if where == "pre-vote" else 3, 1, 0, 1, [name, "z"]]

    assert MAX_NAME_LENGTH == 318
    for name in ("a", "a" * 318, EMOJI * 318):
        decode(message(name))
    for bad in ("", "a" * 319, EMOJI * 319, b"a", 1, None):
        refused("bad node name", message(bad))


def test_a_voter_set_is_a_list_without_repeats() -> None:
    for voters in ([], ["a"], ["a", "b", "c"]):
        heartbeat = decode([5, 1, 0.0, 0, 1, voters])
        assert isinstance(heartbeat, Heartbeat)
        assert heartbeat.voters == tuple(voters)
    refused("a name twice", [5, 1, 0.0, 0, 1, ["a", "b", "a"]])
    refused("a name twice", [1, 1, 0, 1, ["a", "a"]])
    for bad in ("a", {"a": 1}, None, 5):
        refused("bad voter set", [5, 1, 0.0, 0, 1, bad])
    pre_vote = decode([1, 1, 0, 1, None])
    assert isinstance(pre_vote, PreVote)
    assert pre_vote.proposal is None
    pre_vote = decode([1, 1, 0, 1, ["a", "b"]])
    assert isinstance(pre_vote, PreVote)
    assert pre_vote.proposal == ("a", "b")


def test_depth_is_three() -> None:
    refused("bad node name", [5, 1, 0.0, 0, 1, [["a"]]])
    refused("max_depth", [5, 1, 0.0, 0, 1, [[["a"]]]])


def _heartbeat_of_size(size: int) -> bytes:
    # Voter names of 300 characters, the last one trimmed to hit ``size``.
    names = [f"{i:06d}" + "x" * 294 for i in range((size - 20) // 303)]
    base = len(encode_message(Heartbeat(1, 0.0, (0, 1), tuple(names))))
    for length in range(1, MAX_NAME_LENGTH + 1):
        last = "y" * length
        data = encode_message(Heartbeat(1, 0.0, (0, 1), (*names, last)))
        if len(data) == size:
            return data
        assert len(data) > base
    raise AssertionError(f"no heartbeat of {size} bytes")


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_message_size_bound_is_exact(kind: type) -> None:
    assert MAX_MESSAGE_SIZE == 256 * 1024
    message = decode_message(kind(_heartbeat_of_size(MAX_MESSAGE_SIZE)))
    assert isinstance(message, Heartbeat)
    with pytest.raises(RaftDecodeError, match=f"of {MAX_MESSAGE_SIZE + 1} bytes"):
        decode_message(kind(_heartbeat_of_size(MAX_MESSAGE_SIZE + 1)))


def test_other_inputs_are_refused_by_type() -> None:
    for bad in ("x", None, [7, "a"]):
        with pytest.raises(RaftDecodeError, match="expected bytes"):
            decode_message(bad)  # type: ignore[arg-type]


def test_remove_round_trips_a_non_ascii_name() -> None:
    assert decode_message(encode_message(Remove(EMOJI * 318))) == Remove(EMOJI * 318)
