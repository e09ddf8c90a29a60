"""The split of property tests (docs/internals/test-suite.rst): correctness
properties run a fifth of their examples in ``nox -s tests`` and all of them
under the "properties" profile; properties that feed untrusted input to a
decoder keep a literal, full count in every run."""

from __future__ import annotations

import ast
from pathlib import Path

from hypothesis import settings
from property_examples import FULL_PROFILE, MINIMUM, examples

TESTS = Path(__file__).resolve().parent

# Untrusted input: a literal count, never examples(), at least this many.
UNTRUSTED = {
    "test_codec.py": {"test_garbage_decodes_or_raises_decode_error": 1000},
    "test_sliced_decode.py": {"test_sliced_decode_refuses_what_decode_refuses": 150},
    "proto/test_swim_wire.py": {
        "test_garbage_raises_only_the_typed_error": 500,
        "test_mutated_datagrams_raise_only_the_typed_error": 300,
    },
    "proto/test_swim.py": {
        "test_garbage_datagrams_raise_the_typed_error_and_change_nothing": 300,
        "test_every_datagram_fits_the_budget": 40,
    },
    "proto/test_raft.py": {
        "test_garbage_bytes_raise_only_raft_decode_error": 500,
        "test_garbage_structures_raise_only_raft_decode_error": 500,
    },
}
# Correctness: examples(full count), as the page lists them.
SPLIT = {
    "test_codec.py": {
        "test_allowed_values_round_trip_exactly": 400,
        "test_encode_frame_is_encode_of_a_list": 200,
    },
    "test_sliced_decode.py": {"test_sliced_decode_gives_what_decode_gives": 120},
    "proto/test_swim_wire.py": {
        "test_datagram_round_trip_and_size": 300,
        "test_stream_round_trip": 200,
    },
    "test_local_send.py": {"test_the_fast_copy_is_the_codec_round_trip": 200},
    "proto/test_broadcast_queue.py": {"test_model": 200},
}


def max_examples(path: str) -> dict[str, ast.expr]:
    """``{test name: the max_examples expression of its @settings}``."""
    tree = ast.parse((TESTS / path).read_text(encoding="utf-8"))
    found = {}
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", "") == "settings":
                for keyword in decorator.keywords:
                    if keyword.arg == "max_examples":
                        found[node.name] = keyword.value
    return found


def test_untrusted_input_properties_keep_a_literal_full_count() -> None:
    for path, tests in UNTRUSTED.items():
        counts = max_examples(path)
        for name, at_least in tests.items():
            value = counts[name]
            assert isinstance(value, ast.Constant), f"{path}::{name} must keep a literal count"
            assert isinstance(value.value, int) and value.value >= at_least, f"{path}::{name}"


def test_correctness_properties_use_examples_of_their_full_count() -> None:
    for path, tests in SPLIT.items():
        counts = max_examples(path)
        for name, full in tests.items():
            expected = f"examples({full})"
            assert ast.unparse(counts[name]) == expected, f"{path}::{name}"


def test_examples_is_a_fifth_by_default_and_all_under_the_properties_profile() -> None:
    assert settings.get_current_profile_name() != FULL_PROFILE
    assert examples(400) == 80
    assert examples(120) == MINIMUM == 25
    previous = settings.get_current_profile_name()
    settings.load_profile(FULL_PROFILE)
    try:
        assert examples(400) == 400
        assert examples(120) == 120
    finally:
        settings.load_profile(previous)
