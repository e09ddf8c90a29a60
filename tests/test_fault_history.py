"""The kernel fault suite's history checker, on hand-made histories: each
invariant fails on the history that breaks it and holds on one that does
not (the suite itself needs root and namespaces: ``tests/faults``)."""

from __future__ import annotations

from typing import Any

from faults import history as h
from faults.history import Cut, Exit, History, Timeline

NAMES = ["a@x", "b@x", "c@x"]


def snap(node: str, t: float, **over: Any) -> dict[str, Any]:
    """A snapshot of a healthy three-node cluster led by a@x in term 2."""
    record: dict[str, Any] = {
        "k": "s",
        "t": t,
        "c": 7,
        "lead": ["a@x", 2],
        "term": 2,
        "il": node == "a@x",
        "alive": NAMES,
        "conn": [n for n in NAMES if n != node],
        "names": {f"w.{n[0]}": [n, 1, 7] for n in NAMES},
        "groups": {"faults": sorted([n, 1, 7] for n in NAMES)},
    }
    record.update(over)
    return record


def healthy(t0: float, t1: float) -> dict[str, list[list[dict[str, Any]]]]:
    steps = int((t1 - t0) / 0.1)
    return {n: [[snap(n, t0 + k * 0.1) for k in range(steps + 1)]] for n in NAMES}


def timeline(**over: Any) -> Timeline:
    fields: dict[str, Any] = {"names": NAMES, "fault_start": 0.0, "last_heal": 0.0, "stop": 10.0}
    fields.update(over)
    return Timeline(**fields)


def by_name(results: list[h.Result]) -> dict[str, h.Result]:
    return {r.invariant: r for r in results}


def test_a_healthy_history_passes_everything_but_traffic() -> None:
    results = by_name(h.check_all(History(files=healthy(0, 10)), timeline(), []))
    assert results["no crash/hang"].status == h.PASS
    assert results["1 leader/term"].status == h.PASS
    assert results["no minority leader"].status == h.NA
    for component in ("mesh", "leader", "registry", "groups"):
        assert results[f"heal: {component}"].status == h.PASS
        assert results[f"heal: {component}"].seconds == 0.0
    # No message was recorded at all: no traffic is a failure.
    assert results["traffic after heal"].status == h.FAIL


def test_two_leaders_in_one_term_fail() -> None:
    files = healthy(0, 2)
    files["b@x"][0].append(snap("b@x", 1.05, il=True, lead=["b@x", 2]))
    result = h.check_one_leader_per_term(History(files=files))
    assert result.status == h.FAIL
    assert "term 2: ['a@x', 'b@x']" in result.detail
    # A later term with another leader is fine.
    files = healthy(0, 2)
    files["b@x"][0].append(snap("b@x", 1.05, il=True, lead=["b@x", 3], term=3))
    assert h.check_one_leader_per_term(History(files=files)).status == h.PASS


def test_a_leader_on_the_minority_side_fails_after_the_grace() -> None:
    cut = Cut(1.0, 6.0, frozenset({"a@x"}))
    # a@x still leads 0.5 s into the cut: within its lease, allowed.
    files = healthy(0, 1.5)
    tl = timeline(cuts=[cut])
    assert h.check_minority_leader(History(files=files), tl).status == h.PASS
    # ... but 3 s into it, a violation.
    files = healthy(0, 4.0)
    result = h.check_minority_leader(History(files=files), tl)
    assert result.status == h.FAIL
    assert "a@x led term 2 on the minority side" in result.detail


def test_heal_time_is_when_views_last_became_equal() -> None:
    files = healthy(0, 10)
    # c@x misses b@x until 3.0 s: the mesh heals 2 s after the heal at 1.0 s.
    files["c@x"][0] = [
        snap("c@x", r["t"], conn=["a@x"]) if r["t"] < 3.0 else r for r in files["c@x"][0]
    ]
    results = by_name(h.check_heal(History(files=files), timeline(last_heal=1.0)))
    assert results["heal: mesh"].status == h.PASS
    assert results["heal: mesh"].seconds is not None
    assert abs(results["heal: mesh"].seconds - 2.0) < 0.11
    assert results["heal: leader"].seconds == 0.0
    # Past the bound: a failure even though it healed in the end.
    late = h.HEAL_BOUND + 3.0
    files = healthy(0, late + 2)
    files["c@x"][0] = [
        snap("c@x", r["t"], conn=["a@x"]) if r["t"] < late else r for r in files["c@x"][0]
    ]
    result = by_name(h.check_heal(History(files=files), timeline(last_heal=1.0, stop=late + 2)))
    assert result["heal: mesh"].status == h.FAIL


def test_views_that_never_agree_fail_and_a_later_break_is_reported() -> None:
    files = healthy(0, 10)
    files["b@x"][0] = [snap("b@x", r["t"], names={"w.a": ["a@x", 1, 7]}) for r in files["b@x"][0]]
    files["c@x"][0] = [
        snap("c@x", r["t"], lead=None) if 1.0 < r["t"] < 2.5 or r["t"] > 9.5 else r
        for r in files["c@x"][0]
    ]
    results = by_name(h.check_heal(History(files=files), timeline(last_heal=1.0)))
    assert results["heal: registry"].status == h.FAIL
    assert "b@x sees ['w.a']" in results["heal: registry"].detail
    # The leader view healed at 2.5 s and held for longer than the window:
    # it passes, and its break at 9.6 s is reported.
    leader = results["heal: leader"]
    assert leader.status == h.PASS and leader.seconds is not None
    assert abs(leader.seconds - 1.5) < 0.11
    assert "broke again later" in leader.detail
    assert results["heal: groups"].status == h.PASS
    # A heal that never holds for the whole window does not count.
    files = healthy(0, 10)
    files["c@x"][0] = [
        snap("c@x", r["t"], lead=None) if int(r["t"] * 10) % 15 == 0 else r for r in files["c@x"][0]
    ]
    results = by_name(h.check_heal(History(files=files), timeline(last_heal=1.0)))
    assert results["heal: leader"].status == h.FAIL


def recv(t: float, seq: int, se: int = 1, re: int = 1) -> dict[str, Any]:
    return {"k": "r", "t": t, "f": "a@x", "c": 7, "s": seq, "se": se, "re": re}


def test_a_gap_or_a_reorder_on_one_connection_fails() -> None:
    tl = timeline(names=["a@x", "b@x"])
    gap = History(files={"b@x": [[recv(1, 1), recv(2, 2), recv(3, 4)]]})
    order = by_name(h.check_messages(gap, tl))["no loss/reorder"]
    assert order.status == h.FAIL and "1 lost" in order.detail
    swapped = History(files={"b@x": [[recv(1, 1), recv(2, 3), recv(3, 2)]]})
    assert by_name(h.check_messages(swapped, tl))["no loss/reorder"].status == h.FAIL
    # A gap where either side saw the connection change is allowed.
    new_sender_epoch = History(files={"b@x": [[recv(1, 1), recv(2, 2), recv(3, 9, se=3)]]})
    assert by_name(h.check_messages(new_sender_epoch, tl))["no loss/reorder"].status == h.PASS
    new_receiver_epoch = History(files={"b@x": [[recv(1, 1), recv(2, 5, re=2)]]})
    assert by_name(h.check_messages(new_receiver_epoch, tl))["no loss/reorder"].status == h.PASS


def test_traffic_must_flow_on_every_pair_at_the_end() -> None:
    tl = timeline(names=["a@x", "b@x"], stop=10.0)
    b_to_a = {"k": "r", "t": 9.5, "f": "b@x", "c": 7, "s": 1, "se": 1, "re": 1}
    fresh = History(files={"b@x": [[recv(9.5, 1)]], "a@x": [[b_to_a]]})
    assert by_name(h.check_messages(fresh, tl))["traffic after heal"].status == h.PASS
    stale = History(files={"b@x": [[recv(2.0, 1)]], "a@x": [[b_to_a]]})
    result = by_name(h.check_messages(stale, tl))["traffic after heal"]
    assert result.status == h.FAIL and "a@x->b@x" in result.detail


def test_hangs_crashes_and_early_exits_fail() -> None:
    files = healthy(0, 10)
    ok = [Exit(node=n, incarnation=0, returncode=0, took=0.3) for n in NAMES]
    killed = Exit(node="a@x", incarnation=0, returncode=-9, took=None, killed_on_purpose=True)
    assert h.check_exits(History(files=files), timeline(), [*ok, killed]).status == h.PASS
    hung = Exit(node="a@x", incarnation=0, returncode=-9, took=None, hung=True)
    assert "hang" in h.check_exits(History(files=files), timeline(), [hung]).detail
    early = Exit(node="a@x", incarnation=0, returncode=1, took=None, early=True)
    assert h.check_exits(History(files=files), timeline(), [early]).status == h.FAIL
    files["b@x"][0].append({"k": "crash", "t": 5.0, "error": "BrokenResourceError()", "tb": ""})
    result = h.check_exits(History(files=files), timeline(), ok)
    assert result.status == h.FAIL and "BrokenResourceError" in result.detail


def test_a_stalled_event_loop_fails_unless_paused_on_purpose() -> None:
    files = healthy(0, 10)
    files["b@x"][0] = [r for r in files["b@x"][0] if not 2.0 < r["t"] < 8.5]
    assert h.check_exits(History(files=files), timeline(), []).status == h.FAIL
    paused = timeline(absent=[("b@x", 2.0, 8.4)])
    assert h.check_exits(History(files=files), paused, []).status == h.PASS


def test_the_table_has_one_row_per_fault() -> None:
    good = h.check_heal(History(files=healthy(0, 10)), timeline())
    bad = [h.Result("heal: mesh", h.FAIL, "x"), h.Result("no crash/hang", h.FAIL, "y")]
    text = h.table([("none", good), ("output-drop", bad)])
    lines = text.splitlines()
    assert lines[0].startswith("fault ") and "time to heal" in lines[0]
    assert lines[2].startswith("none ") and "PASS 0.0s" in lines[2]
    assert lines[3].startswith("output-drop") and "not healed" in lines[3]


def event(t: float, peer: str, up: bool, reason: str | None = None) -> dict[str, Any]:
    return {"k": "ne", "t": t, "peer": peer, "up": up, "reason": reason}


def test_node_events_must_be_honest() -> None:
    tl = timeline(names=["a@x", "b@x"], fault_start=5.0, killed=[("b@x", 6.0)])
    clean = History(
        files={"a@x": [[event(1, "b@x", True), event(6.1, "b@x", False, "tick_timeout")]]}
    )
    assert h.check_node_events(clean, tl).status == h.PASS
    flap = History(
        files={
            "a@x": [
                [
                    event(1, "b@x", True),
                    event(1.1, "b@x", False, "connection_closed"),
                    event(1.2, "b@x", True),
                ]
            ]
        }
    )
    result = h.check_node_events(flap, tl)
    assert result.status == h.FAIL
    assert "NodeDown(b@x, connection_closed) while the cluster formed" in result.detail
    assert "2 NodeUp for b@x" in result.detail
    killed_as_shutdown = History(
        files={"a@x": [[event(1, "b@x", True), event(6.1, "b@x", False, "shutdown")]]}
    )
    assert "'shutdown'" in h.check_node_events(killed_as_shutdown, tl).detail
    disconnect = History(files={"a@x": [[event(7, "b@x", False, "disconnect")]]})
    assert "nobody disconnected" in h.check_node_events(disconnect, tl).detail


def test_a_down_seen_within_the_record_resolution_of_a_kill_counts() -> None:
    # A peer may see the socket close the moment the kernel tears the victim
    # down; its record, rounded, may then carry a time just before the kill.
    tl = timeline(names=["a@x", "b@x"], fault_start=5.0, killed=[("b@x", 6.00004)])
    seen_at_once = History(
        files={
            "a@x": [
                [
                    event(1, "b@x", True),
                    event(6.0, "b@x", False, "connection_closed"),
                    event(7, "b@x", True),
                    event(9, "b@x", False, "shutdown"),
                ]
            ]
        }
    )
    assert h.check_node_events(seen_at_once, tl).status == h.PASS
