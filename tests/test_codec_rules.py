"""Codec rules that mutation testing showed unpinned, each fed the input
it exists for at its exact bound."""

from __future__ import annotations

import attrs
import pytest

from trio_distribute import Pid, Ref, codec


@pytest.mark.parametrize(
    ("kind", "decoded", "encoded"),
    [("pid", "_PID_CACHE", "_PID_BYTES"), ("ref", "_REF_CACHE", "_REF_BYTES")],
)
def test_id_caches_hold_4096_entries_then_start_over(kind: str, decoded: str, encoded: str) -> None:
    # A peer can send any number of distinct pids: each cache keeps at most
    # 4096 (its bound, exactly) and then starts over.
    make = Pid if kind == "pid" else Ref
    for name in (decoded, encoded):
        cache = getattr(codec, name)
        cache.clear()
    for i in range(4096):
        codec.decode(codec.encode(make("cache@rules", i, 7)))
    assert len(getattr(codec, decoded)) == 4096
    assert len(getattr(codec, encoded)) == 4096
    codec.decode(codec.encode(make("cache@rules", 4096, 7)))
    assert len(getattr(codec, decoded)) == 1
    assert len(getattr(codec, encoded)) == 1


def test_message_version_zero_is_allowed_negative_is_not() -> None:
    @codec.message("rules.version-zero", version=0, accepts=[0, 1])
    @attrs.frozen
    class VersionZero:
        x: int

    assert codec.decode(codec.encode(VersionZero(5))) == VersionZero(5)
    for version, accepts in ((-1, None), (1, [1, -1]), (True, None)):
        with pytest.raises(TypeError, match="non-negative int"):
            codec.message("rules.version-negative", version=version, accepts=accepts)
