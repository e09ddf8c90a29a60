"""Tests for the sans-IO handshake (trio_distribute._proto.handshake)."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import random
from collections.abc import Callable, Iterator

import attrs
import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_distribute._cookie import cookie_keys
from trio_distribute._proto.frames import MAX_PREAUTH_FRAME, TICK, FrameDecoder, frame
from trio_distribute._proto.handshake import (
    HandshakeCompleted,
    HandshakeEvent,
    HandshakeFailed,
    HandshakeMachine,
    HandshakeState,
    LocalProtocolError,
    PeerAuthenticated,
    Role,
)
from trio_distribute.errors import AuthenticationError, HandshakeError, VersionMismatchError

ALICE = "alice@10.0.0.1"
BOB = "bob@10.0.0.2"
COOKIE = b"cookie-SECRET-0123456789abcdef"

Splitter = Callable[[bytes], list[bytes]]
Decider = Callable[[HandshakeMachine], list[HandshakeEvent]]


def whole(data: bytes) -> list[bytes]:
    return [data]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def random_splitter(seed: int) -> Splitter:
    rng = random.Random(seed)

    def split(data: bytes) -> list[bytes]:
        points = sorted({0, len(data), *(rng.randint(0, len(data)) for _ in range(3))})
        return [data[a:b] for a, b in itertools.pairwise(points)]

    return split


# Named, so each test builds its own (seeded) splitter and does not depend on
# which tests ran before it.
SPLITTERS = ["whole", "bytewise", *(f"random{seed}" for seed in range(8))]


def splitter(name: str) -> Splitter:
    if name == "whole":
        return whole
    if name == "bytewise":
        return bytewise
    return random_splitter(int(name.removeprefix("random")))


def nonces(seed: int) -> Callable[[], bytes]:
    rng = random.Random(seed)
    return lambda: rng.randbytes(32)


def initiator(
    *,
    name: str = ALICE,
    creation: int = 11,
    cookie: bytes = COOKIE,
    versions: tuple[int, ...] = (1,),
    expected_peer: str | None = None,
    seed: int = 1,
) -> HandshakeMachine:
    return HandshakeMachine(
        role=Role.INITIATOR,
        local_name=name,
        creation=creation,
        cookie=cookie,
        versions=versions,
        expected_peer=expected_peer,
        nonce_factory=nonces(seed),
    )


def acceptor(
    *,
    name: str = BOB,
    creation: int = 22,
    cookie: bytes = COOKIE,
    versions: tuple[int, ...] = (1,),
    seed: int = 2,
) -> HandshakeMachine:
    return HandshakeMachine(
        role=Role.ACCEPTOR,
        local_name=name,
        creation=creation,
        cookie=cookie,
        versions=versions,
        nonce_factory=nonces(seed),
    )


def accept(machine: HandshakeMachine) -> list[HandshakeEvent]:
    return machine.accept()


@attrs.define
class Run:
    """What happened on both sides of one pumped handshake."""

    initiator_events: list[HandshakeEvent] = attrs.Factory(list)
    acceptor_events: list[HandshakeEvent] = attrs.Factory(list)
    # Everything each side put on the wire, handshake and beyond.
    initiator_wire: bytes = b""
    acceptor_wire: bytes = b""
    # Bytes that arrived after a side was established (established phase).
    initiator_after: bytes = b""
    acceptor_after: bytes = b""


def deliver(
    machine: HandshakeMachine, data: bytes, split: Splitter, events: list[HandshakeEvent]
) -> tuple[bytes, bool]:
    """Feed ``data`` in chunks; return (bytes arriving after ESTABLISHED, authenticated?)."""
    after = b""
    authenticated = False
    for chunk in split(data):
        if machine.state is HandshakeState.ESTABLISHED:
            after += chunk
            continue
        new = machine.receive_data(chunk)
        events.extend(new)
        authenticated |= any(isinstance(e, PeerAuthenticated) for e in new)
    return after, authenticated


def pump(
    init: HandshakeMachine,
    acc: HandshakeMachine,
    split: Splitter = whole,
    decide: Decider = accept,
    after_ack: bytes = b"",
) -> Run:
    """Run the handshake, moving bytes both ways until nobody has anything to say.

    ``after_ack`` is what the acceptor's driver writes right after ``ack``
    (pipelined established-phase frames).
    """
    run = Run()
    init.initiate()
    for _ in range(20):
        out = init.data_to_send()
        run.initiator_wire += out
        after, authenticated = deliver(acc, out, split, run.acceptor_events)
        run.acceptor_after += after
        if authenticated:
            run.acceptor_events.extend(decide(acc))
        back = acc.data_to_send()
        if back and acc.state is HandshakeState.ESTABLISHED:
            back += after_ack
        run.acceptor_wire += back
        after, _ = deliver(init, back, split, run.initiator_events)
        run.initiator_after += after
        if not out and not back:
            return run
    raise AssertionError("handshake did not settle")


def state(machine: HandshakeMachine) -> HandshakeState:
    """The machine's state, read through a call so mypy does not keep a stale narrowing."""
    return machine.state


def failed(events: list[HandshakeEvent]) -> HandshakeFailed:
    assert len(events) == 1, events
    event = events[-1]
    assert isinstance(event, HandshakeFailed), events
    return event


def decode_frames(wire: bytes) -> list[dict[str, object]]:
    decoder = FrameDecoder(MAX_PREAUTH_FRAME)
    messages = []
    for payload in decoder.feed(wire):
        message = cbor2.loads(payload)
        assert isinstance(message, dict)
        messages.append(message)
    return messages


def msg(**fields: object) -> bytes:
    return frame(cbor2.dumps(fields))


def valid_hello(**overrides: object) -> dict[str, object]:
    hello: dict[str, object] = {
        "m": "hello",
        "versions": [1],
        "name": ALICE,
        "creation": 11,
        "nonce": b"\x01" * 32,
    }
    hello.update(overrides)
    return hello


def valid_challenge(**overrides: object) -> dict[str, object]:
    challenge: dict[str, object] = {
        "m": "challenge",
        "version": 1,
        "name": BOB,
        "creation": 22,
        "nonce": b"\x02" * 32,
    }
    challenge.update(overrides)
    return challenge


# -- success -------------------------------------------------------------------


@pytest.mark.parametrize("split", SPLITTERS)
def test_success_on_both_sides(split: str) -> None:
    init, acc = initiator(expected_peer=BOB), acceptor()
    run = pump(init, acc, splitter(split))
    assert run.initiator_events == [HandshakeCompleted(BOB, 22, 1)]
    assert run.acceptor_events == [
        PeerAuthenticated(ALICE, 11, 1),
        HandshakeCompleted(ALICE, 11, 1),
    ]
    for machine, peer, creation in ((init, BOB, 22), (acc, ALICE, 11)):
        assert machine.state is HandshakeState.ESTABLISHED
        assert machine.peer_name == peer
        assert machine.peer_creation == creation
        assert machine.version == 1
        assert machine.leftover() == b""
        assert machine.data_to_send() == b""


def test_message_sequence_on_the_wire() -> None:
    init, acc = initiator(), acceptor()
    run = pump(init, acc)
    sent = [m["m"] for m in decode_frames(run.initiator_wire)]
    answered = [m["m"] for m in decode_frames(run.acceptor_wire)]
    assert sent == ["hello", "proof"]
    assert answered == ["challenge", "ack"]
    hello = decode_frames(run.initiator_wire)[0]
    assert hello == {
        "m": "hello",
        "versions": [1],
        "name": ALICE,
        "creation": 11,
        "nonce": nonces(1)(),
    }


def test_highest_common_version_wins() -> None:
    init, acc = initiator(versions=(1, 2, 3)), acceptor(versions=(5, 3, 2))
    run = pump(init, acc)
    assert run.initiator_events == [HandshakeCompleted(BOB, 22, 3)]
    assert init.version == acc.version == 3


def test_states_along_the_way() -> None:
    init, acc = initiator(), acceptor()
    assert state(init) is HandshakeState.IDLE
    assert state(acc) is HandshakeState.AWAITING_HELLO
    assert init.peer_name is None
    assert init.version is None
    assert init.peer_creation is None
    init.initiate()
    assert state(init) is HandshakeState.AWAITING_CHALLENGE
    assert acc.receive_data(init.data_to_send()) == []
    assert state(acc) is HandshakeState.AWAITING_PROOF
    assert acc.peer_name == ALICE
    assert init.receive_data(acc.data_to_send()) == []
    assert state(init) is HandshakeState.AWAITING_ACK
    assert acc.receive_data(init.data_to_send()) == [PeerAuthenticated(ALICE, 11, 1)]
    assert state(acc) is HandshakeState.AWAITING_DECISION
    assert acc.data_to_send() == b""
    assert acc.accept() == [HandshakeCompleted(ALICE, 11, 1)]
    assert init.receive_data(acc.data_to_send()) == [HandshakeCompleted(BOB, 22, 1)]
    assert "ESTABLISHED" in repr(init)


def test_ticks_during_the_handshake_are_ignored() -> None:
    init, acc = initiator(), acceptor()
    init.initiate()
    assert acc.receive_data(TICK + init.data_to_send() + TICK) == []
    assert init.receive_data(TICK + acc.data_to_send()) == []
    assert acc.receive_data(init.data_to_send()) == [PeerAuthenticated(ALICE, 11, 1)]


# -- failures --------------------------------------------------------------------


@pytest.mark.parametrize("split", SPLITTERS)
def test_wrong_cookie_fails_on_both_sides(split: str) -> None:
    init, acc = initiator(cookie=b"guess"), acceptor()
    run = pump(init, acc, splitter(split))
    for events in (run.initiator_events, run.acceptor_events):
        event = failed(events)
        assert isinstance(event.error, AuthenticationError)
        assert event.reason == "authentication"
    assert init.state is acc.state is HandshakeState.FAILED
    assert decode_frames(run.acceptor_wire)[-1]["m"] == "reject"


def test_no_common_version() -> None:
    init, acc = initiator(versions=(1,)), acceptor(versions=(2, 3))
    run = pump(init, acc)
    for events in (run.initiator_events, run.acceptor_events):
        event = failed(events)
        assert isinstance(event.error, VersionMismatchError)
        assert event.reason == "version"
    assert "[2, 3]" in str(failed(run.acceptor_events).error)


@pytest.mark.parametrize("split", SPLITTERS)
def test_acceptor_rejects_simultaneous_connect(split: str) -> None:
    init, acc = initiator(), acceptor()
    run = pump(
        init, acc, splitter(split), decide=lambda m: m.reject("simultaneous", "bob@ dials too")
    )
    event = failed(run.initiator_events)
    assert event.reason == "simultaneous"
    assert type(event.error) is HandshakeError
    assert "simultaneous" in str(event.error)
    assert run.acceptor_events[0] == PeerAuthenticated(ALICE, 11, 1)
    mine = failed(run.acceptor_events[1:])
    assert mine.reason == "simultaneous"
    assert type(mine.error) is HandshakeError
    assert init.state is acc.state is HandshakeState.FAILED
    reject = decode_frames(run.acceptor_wire)[-1]
    assert reject == {"m": "reject", "reason": "simultaneous", "detail": "bob@ dials too"}


def test_expected_peer_mismatch() -> None:
    init, acc = initiator(expected_peer="carol@10.0.0.3"), acceptor()
    run = pump(init, acc)
    event = failed(run.initiator_events)
    assert event.reason == "unexpected peer"
    assert type(event.error) is HandshakeError
    assert "carol@10.0.0.3" in str(event.error)
    assert BOB in str(event.error)
    # The acceptor is told why, and never authenticated anyone.
    theirs = failed(run.acceptor_events)
    assert theirs.reason == "unexpected peer"
    assert [m["m"] for m in decode_frames(run.initiator_wire)] == ["hello", "reject"]


def test_acceptor_refuses_its_own_name() -> None:
    init, acc = initiator(name=BOB), acceptor(name=BOB)
    run = pump(init, acc)
    assert failed(run.acceptor_events).reason == "protocol"
    assert failed(run.initiator_events).reason == "protocol"
    assert decode_frames(run.acceptor_wire)[0]["reason"] == "protocol"


def test_initiator_refuses_a_challenge_with_its_own_name() -> None:
    init = initiator()
    init.initiate()
    events = init.receive_data(msg(**valid_challenge(name=ALICE)))
    assert failed(events).reason == "protocol"


def test_initiator_refuses_a_version_it_did_not_offer() -> None:
    init = initiator(versions=(1, 2))
    init.initiate()
    event = failed(init.receive_data(msg(**valid_challenge(version=3))))
    assert event.reason == "protocol"
    assert "version 3" in str(event.error)


def test_bad_ack_proof() -> None:
    init, acc = initiator(), acceptor()
    init.initiate()
    acc.receive_data(init.data_to_send())
    init.receive_data(acc.data_to_send())
    acc.receive_data(init.data_to_send())
    event = failed(init.receive_data(msg(m="ack", proof=b"\x00" * 32)))
    assert isinstance(event.error, AuthenticationError)
    assert str(event.error) == "peer did not prove the cookie"
    # The acceptor believes it is established by now: no reject is sent.
    assert init.data_to_send() == b""


@pytest.mark.parametrize(
    ("reason", "error_type"),
    [
        ("authentication", AuthenticationError),
        ("version", VersionMismatchError),
        ("busy", HandshakeError),
    ],
)
def test_peer_reject_reasons_map_to_errors(reason: str, error_type: type[Exception]) -> None:
    init = initiator()
    init.initiate()
    init.data_to_send()
    event = failed(init.receive_data(msg(m="reject", reason=reason, detail="why", extra=1)))
    assert type(event.error) is error_type
    assert event.reason == reason
    assert "why" in str(event.error)
    # Never answer a reject with a reject.
    assert init.data_to_send() == b""


def test_reject_without_detail() -> None:
    acc = acceptor()
    event = failed(acc.receive_data(msg(m="reject", reason="busy")))
    assert event.reason == "busy"


# -- leftover -------------------------------------------------------------------


@pytest.mark.parametrize("extra_size", [1, 4, 5, 100, 5000])
def test_leftover_after_ack(extra_size: int) -> None:
    # Normal frames pipelined right behind "ack" belong to the established
    # phase, even when larger than the pre-authentication limit.
    pipelined = frame(b"m" * 5000) + frame(b"second")
    after_ack = pipelined[:extra_size]
    init, acc = initiator(), acceptor()
    run = pump(init, acc, whole, after_ack=after_ack)
    assert run.initiator_events == [HandshakeCompleted(BOB, 22, 1)]
    assert init.leftover() == after_ack
    assert run.initiator_after == b""


def test_leftover_split_across_calls() -> None:
    init, acc = initiator(), acceptor()
    pipelined = frame(b"m" * 5000)
    run = pump(init, acc, random_splitter(7), after_ack=pipelined)
    assert run.initiator_events == [HandshakeCompleted(BOB, 22, 1)]
    # Whatever came in the chunk carrying the end of "ack" is leftover; the
    # rest arrived after ESTABLISHED and went to the established phase.
    assert init.leftover() + run.initiator_after == pipelined


def test_receive_after_established_is_a_local_error() -> None:
    init, acc = initiator(), acceptor()
    pump(init, acc)
    with pytest.raises(LocalProtocolError):
        init.receive_data(frame(b"normal"))
    with pytest.raises(LocalProtocolError):
        acc.receive_data(b"")


def test_acceptor_holds_bytes_that_arrive_while_deciding() -> None:
    init, acc = initiator(), acceptor()
    init.initiate()
    acc.receive_data(init.data_to_send())
    init.receive_data(acc.data_to_send())
    early = frame(b"early")
    assert acc.receive_data(init.data_to_send() + early[:3]) == [PeerAuthenticated(ALICE, 11, 1)]
    assert acc.receive_data(early[3:]) == []
    assert acc.accept() == [HandshakeCompleted(ALICE, 11, 1)]
    assert acc.leftover() == early


def test_acceptor_limits_bytes_while_deciding() -> None:
    init, acc = initiator(), acceptor()
    init.initiate()
    acc.receive_data(init.data_to_send())
    init.receive_data(acc.data_to_send())
    assert acc.receive_data(init.data_to_send()) == [PeerAuthenticated(ALICE, 11, 1)]
    event = failed(acc.receive_data(b"x" * (MAX_PREAUTH_FRAME + 1)))
    assert event.reason == "protocol"
    assert decode_frames(acc.data_to_send())[0]["m"] == "reject"
    # The failure was already reported; a late decision is a no-op.
    assert acc.accept() == []
    assert acc.reject("simultaneous") == []


# -- end of file -------------------------------------------------------------------


def test_eof_before_hello() -> None:
    acc = acceptor()
    event = failed(acc.receive_data(b""))
    assert event.reason == "closed"
    assert "awaiting hello" in str(event.error)
    assert acc.data_to_send() == b""
    assert acc.receive_data(b"more") == []


def test_eof_at_every_stage() -> None:
    for stage in range(4):
        init, acc = initiator(), acceptor()
        init.initiate()
        steps: list[tuple[HandshakeMachine, HandshakeMachine]] = [
            (acc, init),
            (init, acc),
            (acc, init),
            (init, acc),
        ]
        for receiver, sender in steps[:stage]:
            receiver.receive_data(sender.data_to_send())
        receiver = steps[stage][0]
        events = receiver.receive_data(b"")
        assert failed(events).reason == "closed", stage
        assert receiver.state is HandshakeState.FAILED


def test_eof_while_deciding_then_decision_is_noop() -> None:
    init, acc = initiator(), acceptor()
    init.initiate()
    acc.receive_data(init.data_to_send())
    init.receive_data(acc.data_to_send())
    acc.receive_data(init.data_to_send())
    assert acc.state is HandshakeState.AWAITING_DECISION
    assert failed(acc.receive_data(b"")).reason == "closed"
    assert acc.accept() == []
    assert acc.data_to_send() == b""


def test_eof_mid_frame() -> None:
    init, acc = initiator(), acceptor()
    init.initiate()
    hello = init.data_to_send()
    assert acc.receive_data(hello[:10]) == []
    assert failed(acc.receive_data(b"")).reason == "closed"


# -- reflection and replay ---------------------------------------------------------


def test_relayed_hello_to_ourselves_is_refused() -> None:
    # Mallory bounces alice's own hello back to alice's listener.
    alice_out = initiator(name=ALICE, expected_peer="mallory@evil")
    alice_in = acceptor(name=ALICE, seed=3)
    alice_out.initiate()
    event = failed(alice_in.receive_data(alice_out.data_to_send()))
    assert event.reason == "protocol"
    assert "own name" in str(event.error)


def test_reflection_through_both_halves_of_a_node_fails() -> None:
    # Alice dials mallory; mallory dials alice and relays between the two
    # connections, renaming itself, hoping alice's initiator proof verifies
    # at alice's acceptor. The names and role labels in the transcript make
    # it fail.
    mallory = "mallory@evil"
    alice_out = initiator(name=ALICE, expected_peer=mallory, seed=1)
    alice_in = acceptor(name=ALICE, creation=11, seed=3)
    alice_out.initiate()
    hello = cbor2.loads(alice_out.data_to_send()[4:])
    hello["name"] = mallory
    assert alice_in.receive_data(frame(cbor2.dumps(hello))) == []
    challenge = cbor2.loads(alice_in.data_to_send()[4:])
    assert challenge["m"] == "challenge"
    challenge["name"] = mallory
    assert alice_out.receive_data(frame(cbor2.dumps(challenge))) == []
    proof = alice_out.data_to_send()
    event = failed(alice_in.receive_data(proof))
    assert isinstance(event.error, AuthenticationError)
    assert alice_in.state is HandshakeState.FAILED


def test_acceptor_proof_replayed_as_initiator_proof_fails() -> None:
    # Record a real session, then replay its hello to an acceptor that (by
    # bad luck) picks the same nonce, so the transcript is identical. The
    # recorded "ack" proof still fails as a "proof": the role label differs.
    init, acc = initiator(), acceptor(seed=9)
    run = pump(init, acc)
    hello_frame = run.initiator_wire[: 4 + int.from_bytes(run.initiator_wire[:4], "big")]
    ack = decode_frames(run.acceptor_wire)[-1]
    assert ack["m"] == "ack"
    victim = acceptor(seed=9)
    assert victim.receive_data(hello_frame) == []
    event = failed(victim.receive_data(msg(m="proof", proof=ack["proof"])))
    assert isinstance(event.error, AuthenticationError)


def test_recorded_proof_fails_against_a_fresh_nonce() -> None:
    init, acc = initiator(), acceptor(seed=9)
    run = pump(init, acc)
    victim = acceptor(seed=10)
    # Replay alice's whole side of the old session.
    events = victim.receive_data(run.initiator_wire)
    assert isinstance(failed(events).error, AuthenticationError)


def test_echoed_nonce_is_refused() -> None:
    init = initiator(seed=5)
    init.initiate()
    own_nonce = decode_frames(init.data_to_send())[0]["nonce"]
    event = failed(init.receive_data(msg(**valid_challenge(nonce=own_nonce))))
    assert event.reason == "protocol"
    acc = acceptor(seed=5)
    event = failed(acc.receive_data(msg(**valid_hello(nonce=own_nonce))))
    assert event.reason == "protocol"


def test_cookie_never_crosses_the_wire() -> None:
    scenarios: list[tuple[HandshakeMachine, HandshakeMachine]] = [
        (initiator(), acceptor()),
        (initiator(cookie=b"wrong"), acceptor()),
        (initiator(), acceptor(cookie=b"wrong")),
        (initiator(versions=(7,)), acceptor()),
        (initiator(expected_peer="carol@x"), acceptor()),
    ]
    for init, acc in scenarios:
        run = pump(init, acc, random_splitter(1))
        for wire in (run.initiator_wire, run.acceptor_wire):
            assert COOKIE not in wire
            assert COOKIE[:8] not in wire
        assert COOKIE.decode() not in repr(init) + repr(acc)


# -- malformed input -----------------------------------------------------------------


BAD_HELLOS: list[tuple[str, bytes]] = [
    ("not a map", frame(cbor2.dumps([1, 2]))),
    ("missing name", msg(m="hello", versions=[1], creation=1, nonce=b"\x01" * 32)),
    ("name not text", msg(**valid_hello(name=b"alice@h"))),
    ("bad name", msg(**valid_hello(name="alice"))),
    ("name with port", msg(**valid_hello(name="alice@h:1234"))),
    ("negative creation", msg(**valid_hello(creation=-1))),
    ("creation too big", msg(**valid_hello(creation=2**63))),
    ("creation bool", msg(**valid_hello(creation=True))),
    ("creation float", msg(**valid_hello(creation=1.0))),
    ("short nonce", msg(**valid_hello(nonce=b"\x01" * 31))),
    ("long nonce", msg(**valid_hello(nonce=b"\x01" * 33))),
    ("nonce text", msg(**valid_hello(nonce="x" * 32))),
    ("versions empty", msg(**valid_hello(versions=[]))),
    ("versions too many", msg(**valid_hello(versions=list(range(1, 18))))),
    ("versions not list", msg(**valid_hello(versions=1))),
    ("versions bool", msg(**valid_hello(versions=[True]))),
    ("versions text", msg(**valid_hello(versions=["1"]))),
    ("m not text", msg(**valid_hello(m=1))),
    ("m missing", frame(cbor2.dumps({"versions": [1]}))),
    ("unknown m", msg(**valid_hello(m="helo"))),
    ("out of order proof", msg(m="proof", proof=b"\x00" * 32)),
    ("out of order ack", msg(m="ack", proof=b"\x00" * 32)),
    ("bytes key", frame(cbor2.dumps({b"m": "hello"}))),
    ("int key", frame(b"\xa1\x01\x02")),
    ("trailing bytes", frame(cbor2.dumps(valid_hello()) + b"\x00")),
    ("not cbor", frame(b"\xff\xff")),
    ("truncated cbor", frame(cbor2.dumps(valid_hello())[:-1])),
    ("datetime tag", frame(b"\xc1\x01")),
    ("shareable tag", frame(b"\xd8\x1c\xa1\x61m\x65hello")),
    ("stringref namespace", frame(b"\xd9\x01\x00\xa1\x61m\x65hello")),
    ("self-describe tag", frame(b"\xd9\xd9\xf7\xa1\x61m\x65hello")),
    ("unknown tag", frame(cbor2.dumps(cbor2.CBORTag(9999, valid_hello())))),
    ("tag inside", msg(**valid_hello(creation=cbor2.CBORTag(2, b"\x01")))),
    ("indefinite map", frame(b"\xbf\x61m\x65hello\xff")),
    ("duplicate key", frame(b"\xa2\x61m\x65hello\x61m\x65hello")),
    ("too deep", msg(**valid_hello(extra=[[[[[[[[[[1]]]]]]]]]]))),
    ("undefined value", frame(b"\xa1\x61m\xf7")),
    ("oversized frame", (MAX_PREAUTH_FRAME + 1).to_bytes(4, "big")),
    ("huge announced string", frame(b"\xa1\x61m\x7b" + (2**62).to_bytes(8, "big"))),
]


@pytest.mark.parametrize(("label", "data"), BAD_HELLOS, ids=[label for label, _ in BAD_HELLOS])
@pytest.mark.parametrize("split", ["whole", "bytewise"])
def test_malformed_hello_is_a_protocol_failure(label: str, data: bytes, split: str) -> None:
    acc = acceptor()
    events: list[HandshakeEvent] = []
    for chunk in splitter(split)(data):
        events.extend(acc.receive_data(chunk))
    event = failed(events)
    assert event.reason == "protocol", label
    assert type(event.error) is HandshakeError
    assert acc.state is HandshakeState.FAILED
    reject = decode_frames(acc.data_to_send())
    assert [(r["m"], r["reason"]) for r in reject] == [("reject", "protocol")]
    # Everything later is ignored.
    assert acc.receive_data(msg(**valid_hello())) == []
    assert acc.receive_data(b"") == []
    assert acc.data_to_send() == b""


def test_hello_with_unknown_extra_keys_is_accepted() -> None:
    acc = acceptor()
    assert acc.receive_data(msg(**valid_hello(future="feature"))) == []
    assert acc.state is HandshakeState.AWAITING_PROOF


@pytest.mark.parametrize(
    "challenge",
    [
        valid_challenge(extra=1),
        valid_challenge(version="1"),
        valid_challenge(version=True),
        valid_challenge(nonce=b"short"),
        valid_challenge(name="nope"),
        valid_challenge(creation=-5),
        {"m": "challenge", "version": 1},
        {"m": "hello", "versions": [1]},
    ],
)
def test_malformed_challenge_is_a_protocol_failure(challenge: dict[str, object]) -> None:
    init = initiator()
    init.initiate()
    init.data_to_send()
    event = failed(init.receive_data(msg(**challenge)))
    assert event.reason == "protocol"
    # The acceptor waits for our proof, so it is told why.
    assert decode_frames(init.data_to_send())[0]["reason"] == "protocol"


@pytest.mark.parametrize(
    "message",
    [
        {"m": "proof", "proof": b"\x00" * 31},
        {"m": "proof", "proof": "x" * 32},
        {"m": "proof"},
        {"m": "proof", "proof": b"\x00" * 32, "extra": 1},
        {"m": "hello", "versions": [1], "name": ALICE, "creation": 1, "nonce": b"\x05" * 32},
        {"m": "reject", "reason": ""},
        {"m": "reject", "reason": "x" * 65},
        {"m": "reject", "reason": "caf\u00e9"},
        {"m": "reject", "reason": "ok", "detail": 5},
        {"m": "reject"},
    ],
)
def test_malformed_message_to_acceptor_awaiting_proof(message: dict[str, object]) -> None:
    init, acc = initiator(), acceptor()
    init.initiate()
    acc.receive_data(init.data_to_send())
    acc.data_to_send()
    event = failed(acc.receive_data(msg(**message)))
    assert event.reason == "protocol"
    assert [m["m"] for m in decode_frames(acc.data_to_send())] == ["reject"]


def test_initiator_before_initiate_refuses_messages() -> None:
    init = initiator()
    assert failed(init.receive_data(msg(**valid_challenge()))).reason == "protocol"
    # The peer is not waiting for anything from us: nothing is sent.
    assert init.data_to_send() == b""


def test_messages_after_completion_of_a_failed_handshake_are_ignored() -> None:
    init, acc = initiator(cookie=b"bad"), acceptor()
    run = pump(init, acc)
    assert failed(run.initiator_events)
    assert init.receive_data(msg(m="ack", proof=b"\x00" * 32)) == []
    assert acc.receive_data(run.initiator_wire) == []


# -- local misuse --------------------------------------------------------------------


def test_local_misuse_raises() -> None:
    init, acc = initiator(), acceptor()
    with pytest.raises(LocalProtocolError):
        acc.initiate()
    with pytest.raises(LocalProtocolError):
        acc.accept()
    with pytest.raises(LocalProtocolError):
        acc.reject("simultaneous")
    with pytest.raises(LocalProtocolError):
        init.accept()
    init.initiate()
    with pytest.raises(LocalProtocolError):
        init.initiate()
    pump_init, pump_acc = initiator(), acceptor()
    pump(pump_init, pump_acc)
    with pytest.raises(LocalProtocolError):
        pump_acc.accept()
    with pytest.raises(LocalProtocolError):
        pump_acc.reject("late")


def test_reject_reason_is_validated() -> None:
    init, acc = initiator(), acceptor()
    init.initiate()
    acc.receive_data(init.data_to_send())
    init.receive_data(acc.data_to_send())
    acc.receive_data(init.data_to_send())
    for bad in ("", "x" * 65, "tab\there", "caf\u00e9"):
        with pytest.raises(ValueError, match="reason"):
            acc.reject(bad)
    with pytest.raises(TypeError):
        acc.reject("ok", detail=5)  # type: ignore[arg-type]
    # A long, non-ASCII detail is trimmed so the reject still fits a frame.
    events = acc.reject("busy", "\u00e9" * 5000)
    assert failed(events).reason == "busy"
    (reject,) = decode_frames(acc.data_to_send())
    assert reject["reason"] == "busy"
    assert isinstance(reject["detail"], str)
    assert 0 < len(reject["detail"].encode()) <= 256


@pytest.mark.parametrize(
    "kwargs",
    [
        {"local_name": "nope"},
        {"creation": -1},
        {"creation": 2**63},
        {"cookie": b""},
        {"versions": ()},
        {"versions": (1, 1)},
        {"versions": (0,)},
        {"versions": [1]},
        {"versions": tuple(range(1, 18))},
        {"expected_peer": "bad"},
        {"nonce_factory": lambda: b"short"},
    ],
)
def test_constructor_validation(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {
        "role": Role.INITIATOR,
        "local_name": ALICE,
        "creation": 1,
        "cookie": COOKIE,
    }
    args.update(kwargs)
    with pytest.raises(ValueError):  # noqa: PT011 - each case names a different rule
        HandshakeMachine(**args)  # type: ignore[arg-type]


def test_expected_peer_is_initiator_only() -> None:
    with pytest.raises(ValueError, match="initiator"):
        HandshakeMachine(
            role=Role.ACCEPTOR, local_name=BOB, creation=1, cookie=COOKIE, expected_peer=ALICE
        )


# -- properties -------------------------------------------------------------------------


def count_events(events: list[HandshakeEvent]) -> tuple[int, int, int]:
    return (
        sum(isinstance(e, PeerAuthenticated) for e in events),
        sum(isinstance(e, HandshakeCompleted) for e in events),
        sum(isinstance(e, HandshakeFailed) for e in events),
    )


def feed(machine: HandshakeMachine, chunks: list[bytes]) -> list[HandshakeEvent]:
    events: list[HandshakeEvent] = []
    for chunk in chunks:
        if machine.state is HandshakeState.ESTABLISHED:
            break
        new = machine.receive_data(chunk)
        events.extend(new)
        if any(isinstance(e, PeerAuthenticated) for e in new):
            events.extend(machine.accept())
    return events


def fresh(role: Role) -> HandshakeMachine:
    if role is Role.INITIATOR:
        machine = initiator()
        machine.initiate()
        return machine
    return acceptor()


# An explicit alphabet (ASCII, Latin-1, a surrogate-free astral char) keeps
# input generation fast on a cold Hypothesis cache, where st.text() would first
# build its Unicode tables.
_ALPHABET = "abcxyz@._- \t\x00\u00e9\u2603\U0001f600"
_FIELD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64) + 1, max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(_ALPHABET, max_size=40),
    st.sampled_from([ALICE, BOB, "x@y", "self@", "@host"]),
    st.binary(max_size=40),
    st.binary(min_size=32, max_size=32),
    st.lists(st.integers(min_value=-3, max_value=20), max_size=20),
    st.dictionaries(st.text(_ALPHABET, max_size=5), st.integers(), max_size=3),
)
_MESSAGES = st.fixed_dictionaries(
    {"m": st.sampled_from(["hello", "challenge", "proof", "ack", "reject", "other"])},
    optional=dict.fromkeys(
        ("versions", "version", "name", "creation", "nonce", "proof", "reason", "detail"),
        _FIELD_VALUES,
    ),
)
# Well-framed CBOR maps that look like handshake messages reach the field
# validation; raw bytes mostly exercise framing and decoding.
_CHUNKS = st.one_of(
    st.binary(max_size=300),
    _MESSAGES.map(lambda message: frame(cbor2.dumps(message))),
)


@given(role=st.sampled_from(Role), chunks=st.lists(_CHUNKS, max_size=8))
def test_garbage_never_raises(role: Role, chunks: list[bytes]) -> None:
    machine = fresh(role)
    events = feed(machine, chunks)
    authenticated, completed, failures = count_events(events)
    assert failures <= 1
    assert authenticated == completed == 0
    if failures:
        assert machine.state is HandshakeState.FAILED


def _recorded_session() -> tuple[bytes, bytes]:
    init, acc = initiator(), acceptor()
    run = pump(init, acc)
    return run.initiator_wire, run.acceptor_wire


INITIATOR_WIRE, ACCEPTOR_WIRE = _recorded_session()


@given(
    role=st.sampled_from(Role),
    cut=st.integers(min_value=0, max_value=len(INITIATOR_WIRE) + len(ACCEPTOR_WIRE)),
    flip=st.none() | st.tuples(st.integers(min_value=0), st.integers(min_value=1, max_value=255)),
    pieces=st.integers(min_value=1, max_value=6),
    eof=st.booleans(),
)
def test_truncated_or_corrupted_transcripts_never_raise(
    role: Role, cut: int, flip: tuple[int, int] | None, pieces: int, eof: bool
) -> None:
    # Replay the peer's side of a recorded session, cut short and perhaps
    # with one byte changed, into a machine that uses the same nonce as in
    # the recording (so the untouched transcript would succeed).
    wire = ACCEPTOR_WIRE if role is Role.INITIATOR else INITIATOR_WIRE
    data = bytearray(wire[:cut])
    if flip is not None and data:
        index, xor = flip[0] % len(data), flip[1]
        data[index] ^= xor
    step = max(1, len(data) // pieces)
    chunks = [bytes(data[i : i + step]) for i in range(0, len(data), step)]
    if eof:
        chunks.append(b"")
    machine = fresh(role)
    events = feed(machine, chunks)
    _, completed, failures = count_events(events)
    assert failures <= 1
    if flip is None and cut >= len(wire):
        assert completed == 1
    if flip is None and cut < len(wire):
        assert completed == 0
        assert failures == (1 if eof else 0)


def test_recorded_transcript_replays_cleanly() -> None:
    # Sanity check for the property above: the recording is a full session.
    for role, wire in ((Role.INITIATOR, ACCEPTOR_WIRE), (Role.ACCEPTOR, INITIATOR_WIRE)):
        events = feed(fresh(role), [wire])
        assert count_events(events)[1] == 1


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 50])
def test_recorded_transcript_in_fixed_chunks(size: int) -> None:
    for role, wire in ((Role.INITIATOR, ACCEPTOR_WIRE), (Role.ACCEPTOR, INITIATOR_WIRE)):
        events = feed(fresh(role), list(_chunks(wire, size)))
        assert count_events(events) == ((1 if role is Role.ACCEPTOR else 0), 1, 0)


# -- keys ------------------------------------------------------------------------


def test_the_handshake_key_is_stretched_from_the_cookie_with_scrypt() -> None:
    master = hashlib.scrypt(COOKIE, salt=b"trio_distribute cookie v2", n=2**14, r=8, p=1, dklen=32)
    expected = hmac.new(master, b"trio_distribute handshake key v2", hashlib.sha256).digest()
    assert cookie_keys(COOKIE).handshake == expected


@pytest.mark.parametrize("split", SPLITTERS)
def test_a_proof_keyed_with_the_raw_cookie_is_refused(split: str) -> None:
    # Version 1 keyed the proof's HMAC with the cookie itself: a peer (or an
    # offline guesser) that skips scrypt cannot produce a valid proof.
    init, acc = initiator(), acceptor()
    init._key = COOKIE
    run = pump(init, acc, splitter(split))
    event = failed(run.acceptor_events)
    assert isinstance(event.error, AuthenticationError)
    assert acc.state is HandshakeState.FAILED


# -- each protective rule, fed the input it exists for -------------------------

from trio_distribute._proto import handshake as _hs  # noqa: E402


def reject_detail(machine: HandshakeMachine) -> str:
    (reject,) = decode_frames(machine.data_to_send())
    detail = reject["detail"]
    assert isinstance(detail, str)
    return detail


@pytest.mark.parametrize("shift", range(4))
@pytest.mark.parametrize("char", ["é", "€", "😀"])
def test_reject_detail_cut_never_splits_a_character(shift: int, char: str) -> None:
    # A hello whose name is multi-byte text makes the error quote it past
    # MAX_DETAIL_BYTES; at every alignment the cut must stay valid UTF-8
    # and receive_data must not raise.
    name = "x" * shift + char * 120 + "@h"
    acc = acceptor()
    event = failed(acc.receive_data(msg(**valid_hello(name=name))))
    assert event.reason == "protocol"
    detail = reject_detail(acc)
    assert 0 < len(detail.encode()) <= _hs.MAX_DETAIL_BYTES
    assert len(detail.encode()) > _hs.MAX_DETAIL_BYTES - 4  # cut, not dropped


@pytest.mark.parametrize("shift", range(4))
def test_reject_detail_from_the_driver_is_cut_at_a_character(shift: int) -> None:
    init, acc = initiator(), acceptor()
    run = pump(init, acc, decide=lambda m: m.reject("busy", "y" * shift + "😀" * 100))
    assert run.acceptor_events[-1] == failed(run.acceptor_events[1:])
    assert failed(run.acceptor_events[1:]).reason == "busy"
    detail = failed(run.initiator_events).error
    assert "busy" in str(detail)
    (reject,) = [m for m in decode_frames(run.acceptor_wire) if m["m"] == "reject"]
    assert isinstance(reject["detail"], str)
    assert len(reject["detail"].encode()) > _hs.MAX_DETAIL_BYTES - 4


def test_unauthenticated_emoji_message_type_never_raises() -> None:
    acc = acceptor()
    event = failed(acc.receive_data(msg(**valid_hello(m="😀" * 100))))
    assert event.reason == "protocol"
    reject_detail(acc)


def _hello_bytes(**overrides: object) -> bytes:
    return cbor2.dumps(valid_hello(**overrides))


HARDENING = [
    # Each would be a valid hello if the decoder let the rule go.
    ("duplicate key", b"\xa6" + _hello_bytes()[1:] + b"\x64name" + cbor2.dumps(ALICE)),
    ("indefinite map", b"\xbf" + _hello_bytes()[1:] + b"\xff"),
    ("shareable tag 28", b"\xd8\x1c" + _hello_bytes()),
    ("self-describe tag", b"\xd9\xd9\xf7" + _hello_bytes()),
    ("unknown tag", cbor2.dumps(cbor2.CBORTag(9999, valid_hello()))),
    ("tag in an extra field", _hello_bytes(extra=cbor2.CBORTag(6000, 1))),
    ("shared reference 29", _hello_bytes(extra=[1])[:-2] + b"\xd8\x1d\x00"),
    ("int key in an extra map", _hello_bytes(extra={1: 2})),
    ("depth 9", _hello_bytes(extra=[[[[[[[[1]]]]]]]])),
    ("trailing byte string", _hello_bytes() + b"\x41x"),
]


@pytest.mark.parametrize(("label", "payload"), HARDENING, ids=[h[0] for h in HARDENING])
def test_handshake_decoder_safety_options(label: str, payload: bytes) -> None:
    acc = acceptor()
    event = failed(acc.receive_data(frame(payload)))
    assert event.reason == "protocol", label
    assert "undecodable" in str(event.error) or "must be" in str(event.error), label


def test_handshake_decoder_depth_limit_is_exact() -> None:
    acc = acceptor()
    assert acc.receive_data(msg(**valid_hello(extra=[[[[[[[1]]]]]]]))) == []  # depth 8
    assert acc.state is HandshakeState.AWAITING_PROOF


def _acceptor_ack(init: HandshakeMachine, acc: HandshakeMachine) -> bytes:
    """Run to the point where the initiator waits for ack; the ack's payload."""
    init.initiate()
    acc.receive_data(init.data_to_send())
    init.receive_data(acc.data_to_send())
    assert isinstance(acc.receive_data(init.data_to_send())[0], PeerAuthenticated)
    acc.accept()
    (payload,) = FrameDecoder(MAX_PREAUTH_FRAME).feed(acc.data_to_send())
    return payload


def test_ack_with_extra_keys_is_refused() -> None:
    init, acc = initiator(), acceptor()
    ack = cbor2.loads(_acceptor_ack(init, acc))
    event = failed(init.receive_data(msg(**ack, extra=1)))
    assert event.reason == "protocol" and "unexpected keys" in str(event.error)
    assert init.state is HandshakeState.FAILED


def test_ack_with_a_wrong_proof_fails_authentication() -> None:
    init, acc = initiator(), acceptor()
    ack = cbor2.loads(_acceptor_ack(init, acc))
    ack["proof"] = bytes(32)
    event = failed(init.receive_data(msg(**ack)))
    assert event.reason == "authentication"
    assert type(event.error) is AuthenticationError


def test_decision_after_a_pre_auth_failure_is_a_local_error() -> None:
    acc = acceptor()
    failed(acc.receive_data(msg(**valid_hello(name="bad name"))))
    with pytest.raises(LocalProtocolError):
        acc.accept()
    with pytest.raises(LocalProtocolError):
        acc.reject("busy")


def _deciding_acceptor(extra: bytes = b"") -> HandshakeMachine:
    init, acc = initiator(), acceptor()
    init.initiate()
    acc.receive_data(init.data_to_send())
    init.receive_data(acc.data_to_send())
    events = acc.receive_data(init.data_to_send() + extra)
    assert isinstance(events[0], PeerAuthenticated)
    assert acc.state is HandshakeState.AWAITING_DECISION
    return acc


@pytest.mark.parametrize("buffered", [0, 1, 10])
def test_held_bytes_bound_is_exact(buffered: int) -> None:
    # While the driver decides, at most MAX_PREAUTH_FRAME bytes are kept,
    # counting those already behind the proof in the frame decoder.
    acc = _deciding_acceptor(b"z" * buffered)
    assert acc.receive_data(b"h" * (MAX_PREAUTH_FRAME - buffered)) == []
    event = failed(acc.receive_data(b"h"))
    assert f"{MAX_PREAUTH_FRAME + 1} bytes" in str(event.error)
    acc = _deciding_acceptor(b"z" * buffered)
    assert acc.receive_data(b"h" * (MAX_PREAUTH_FRAME - buffered)) == []
    (done,) = acc.accept()
    assert isinstance(done, HandshakeCompleted)
    assert acc.leftover() == b"z" * buffered + b"h" * (MAX_PREAUTH_FRAME - buffered)


def test_creation_zero_and_the_largest_are_accepted() -> None:
    for creation in (0, _hs.MAX_CREATION - 1):
        acc = acceptor(creation=creation)
        assert acc.receive_data(msg(**valid_hello(creation=creation))) == []
        (challenge,) = decode_frames(acc.data_to_send())
        assert challenge["creation"] == creation
        initiator(creation=creation)
    for creation in (-1, _hs.MAX_CREATION):
        acc = acceptor()
        assert failed(acc.receive_data(msg(**valid_hello(creation=creation)))).reason == (
            "protocol"
        )
        with pytest.raises(ValueError, match="creation"):
            initiator(creation=creation)


def test_sixteen_versions_are_accepted_seventeen_are_not() -> None:
    sixteen = tuple(range(1, 17))
    initiator(versions=sixteen)
    with pytest.raises(ValueError, match="versions"):
        initiator(versions=(*sixteen, 17))
    with pytest.raises(ValueError, match="versions"):
        initiator(versions=())
    acc = acceptor()
    assert acc.receive_data(msg(**valid_hello(versions=list(sixteen)))) == []
    acc = acceptor()
    event = failed(acc.receive_data(msg(**valid_hello(versions=[*sixteen, 17]))))
    assert "1 to 16" in str(event.error)


@pytest.mark.parametrize("length", [1, 64])
def test_reason_of_one_and_sixty_four_characters(length: int) -> None:
    reason = "r" * length
    init, acc = initiator(), acceptor()
    run = pump(init, acc, decide=lambda m: m.reject(reason))
    assert failed(run.initiator_events).reason == reason
    init = initiator()
    init.initiate()
    assert failed(init.receive_data(msg(m="reject", reason=reason))).reason == reason


@pytest.mark.parametrize("reason", ["", "r" * 65])
def test_reason_out_of_bounds_is_refused(reason: str) -> None:
    with pytest.raises(ValueError, match="reason"):
        _deciding_acceptor().reject(reason)
    init = initiator()
    init.initiate()
    assert failed(init.receive_data(msg(m="reject", reason=reason))).reason == "protocol"


def test_short_cuts_at_sixty_characters() -> None:
    assert _hs._short("x" * 58) == repr("x" * 58)  # 60 characters: whole
    assert _hs._short("x" * 59) == repr("x" * 59)[:57] + "..."
    assert len(_hs._short("x" * 1000)) == 60
    acc = acceptor()
    event = failed(acc.receive_data(msg(**valid_hello(m="m" * 58))))
    assert repr("m" * 58) in str(event.error)


def test_name_errors_are_cut_at_three_hundred_characters() -> None:
    def error_for(name: str) -> str:
        acc = acceptor()
        return str(failed(acc.receive_data(msg(**valid_hello(name=name)))).error)

    base = "invalid node name: "
    for length in range(1, 400, 7):
        text = error_for("n" * length)
        assert text.startswith(base)
        assert len(text) - len(base) <= 300
    # Find a name whose validation message is exactly 300 / 301 characters.
    from trio_distribute._ids import validate_node_name

    def message(name: str) -> str:
        try:
            validate_node_name(name)
        except ValueError as exc:
            return str(exc)
        raise AssertionError(name)

    extra = 300 - len(message("n"))
    exact, over = "n" * (1 + extra), "n" * (2 + extra)
    assert len(message(exact)) == 300 and len(message(over)) == 301
    assert error_for(exact) == base + message(exact)
    assert error_for(over) == base + message(over)[:297] + "..."


def test_creation_bound_is_two_to_the_sixty_three() -> None:
    # Pinned by value: creations must fit an int64 on every implementation.
    assert _hs.MAX_CREATION == 2**63
    top = 2**63 - 1
    initiator(creation=top)
    acc = acceptor()
    assert acc.receive_data(msg(**valid_hello(creation=top))) == []
    with pytest.raises(ValueError, match="creation"):
        initiator(creation=2**63)


def test_tag_refusals_name_the_handshake() -> None:
    acc = acceptor()
    event = failed(acc.receive_data(frame(cbor2.dumps(cbor2.CBORTag(9999, valid_hello())))))
    assert "unknown CBOR tag 9999 in the handshake" in str(event.error)


def test_reject_detail_with_a_lone_surrogate_is_sent() -> None:
    # The driver's detail may hold text that is not valid UTF-8 (a lone
    # surrogate from a filename, say): it is replaced, never raised on.
    acc = _deciding_acceptor()
    (event,) = acc.reject("busy", "bad \ud800 name")
    assert isinstance(event, HandshakeFailed) and event.reason == "busy"
    assert reject_detail(acc) == "bad ? name"


def test_detail_bound_is_256_bytes() -> None:
    assert _hs.MAX_DETAIL_BYTES == 256
    acc = acceptor()
    failed(acc.receive_data(msg(**valid_hello(name="x" * 400 + "@h"))))
    assert len(reject_detail(acc).encode()) == 256  # ASCII: cut exactly


def test_a_message_that_is_not_a_map_is_a_protocol_failure() -> None:
    for value in ([1, 2], "hello", 7):
        acc = acceptor()
        event = failed(acc.receive_data(frame(cbor2.dumps(value))))
        assert event.reason == "protocol" and "must be a CBOR map" in str(event.error)


def test_a_hello_with_a_byte_string_key_is_refused() -> None:
    hello: dict[object, object] = dict(valid_hello().items())
    hello[b"extra"] = 1
    acc = acceptor()
    event = failed(acc.receive_data(frame(cbor2.dumps(hello))))
    assert "keys must be text" in str(event.error)


def test_machine_arguments_are_checked() -> None:
    with pytest.raises(TypeError, match="role"):
        HandshakeMachine(role="initiator", local_name=ALICE, creation=1, cookie=COOKIE)  # type: ignore[arg-type]
    initiator(versions=(2**32 - 1,))
    with pytest.raises(ValueError, match="versions"):
        initiator(versions=(2**32,))
    machine = HandshakeMachine(role=Role.INITIATOR, local_name=ALICE, creation=1, cookie=COOKIE)
    machine.initiate()
    (hello,) = decode_frames(machine.data_to_send())
    assert hello["versions"] == [2]  # the current protocol version by default


# -- rules found unpinned by mutation testing ------------------------------------


def test_leftover_is_empty_before_the_handshake_ends() -> None:
    for machine in (initiator(), acceptor()):
        assert machine.leftover() == b""
    acc = acceptor()
    acc.receive_data(msg(m="nonsense"))
    assert acc.state is HandshakeState.FAILED
    assert acc.leftover() == b""


def test_repr_names_the_peer_once_known() -> None:
    acc = acceptor()
    assert f"{BOB} peer=? " in repr(acc)
    assert acc.receive_data(msg(**valid_hello())) == []
    assert f"peer={ALICE} " in repr(acc)


def test_accept_frees_the_held_bytes() -> None:
    acc = _deciding_acceptor()
    acc.receive_data(b"h" * 100)
    acc.accept()
    assert acc.leftover() == b"h" * 100
    assert len(acc._held) == 0


def test_failure_frees_the_held_and_buffered_bytes() -> None:
    # While deciding: the held bytes go when the peer breaks the bound.
    acc = _deciding_acceptor(b"z" * 10)
    acc.receive_data(b"h" * MAX_PREAUTH_FRAME)
    assert acc.state is HandshakeState.FAILED
    assert len(acc._held) == 0
    assert acc._decoder.buffered == 0
    # Before deciding: half a frame in the decoder goes with the failure.
    acc = acceptor()
    acc.receive_data(msg(m="nonsense") + b"\x00\x00\x01\x00" + b"x" * 50)
    assert acc.state is HandshakeState.FAILED
    assert acc._decoder.buffered == 0


def test_reject_detail_is_in_the_local_error_only_when_given() -> None:
    acc = _deciding_acceptor()
    (event,) = acc.reject("busy", "too many peers")
    assert isinstance(event, HandshakeFailed)
    assert str(event.error).endswith(": busy (too many peers)")
    acc = _deciding_acceptor()
    (event,) = acc.reject("busy")
    assert isinstance(event, HandshakeFailed)
    assert str(event.error).endswith(": busy")


def test_a_message_before_initiate_is_a_protocol_violation() -> None:
    # Nothing is expected before the initiator speaks: even a reject is a
    # violation then, not the peer's answer.
    for message in (msg(m="reject", reason="busy"), msg(**valid_hello())):
        event = failed(initiator().receive_data(message))
        assert event.reason == "protocol"
        assert "unexpected" in str(event.error)


def test_a_received_reject_names_the_peer_once_known() -> None:
    init = initiator()
    init.initiate()
    event = failed(init.receive_data(msg(m="reject", reason="busy")))
    assert str(event.error) == "the peer rejected the handshake: busy"
    run = pump(initiator(), acceptor(), decide=lambda m: m.reject("busy"))
    assert str(failed(run.initiator_events).error).startswith(f"{BOB} rejected the handshake: busy")


def test_proofs_bind_names_creations_nonces_and_version_in_order() -> None:
    # Known-answer test: both sides share the code, so a transcript built in
    # the wrong order (or missing a field) would still verify between them.
    # Computed independently here from the documented transcript.
    init, acc = initiator(creation=11), acceptor(creation=22)
    init.initiate()
    acc.receive_data(init.data_to_send())
    init.receive_data(acc.data_to_send())
    wire = init.data_to_send()
    (proof,) = decode_frames(wire)
    assert isinstance(acc.receive_data(wire)[0], PeerAuthenticated)
    acc.accept()
    (ack,) = decode_frames(acc.data_to_send())
    init_nonce, acc_nonce = nonces(1)(), nonces(2)()
    transcript = cbor2.dumps([ALICE, BOB, 11, 22, init_nonce, acc_nonce, 1])
    key = cookie_keys(COOKIE).handshake
    for message, label in ((proof, b"initiator"), (ack, b"acceptor")):
        expected = hmac.new(
            key, b"trio_distribute-handshake " + label + transcript, hashlib.sha256
        ).digest()
        assert message["proof"] == expected
