"""Frame kinds: the first element of every frame after the handshake.

Each frame is one CBOR array ``[kind, ...]``; the rest of its shape is given
beside each kind. Kept in one place so the wire vocabulary is easy to audit.
"""

from __future__ import annotations

import enum

__all__ = ["Kind"]


class Kind(enum.IntEnum):
    """What a frame is."""

    INFO = 1  # [INFO, {"host": str, "port": int}]: where the sender listens
    BYE = 2  # [BYE, reason]: the sender is closing this connection on purpose
    PING = 3  # [PING, seq]
    PONG = 4  # [PONG, seq]
    SEND = 10  # [SEND, dest: Pid, message]
    SEND_NAMED = 11  # [SEND_NAMED, name: str, message]
    MONITOR = 12  # [MONITOR, ref: Ref, target: Pid]
    DEMONITOR = 13  # [DEMONITOR, ref: Ref]
    DOWN = 14  # [DOWN, ref: Ref, target: Pid, kind: str, detail: str]
    SEND_TRACED = 15  # [SEND_TRACED, dest: Pid, message, correlation_id: str]
    SEND_NAMED_TRACED = 16  # [SEND_NAMED_TRACED, name: str, message, correlation_id: str]
    GROUP_SYNC = 20  # [GROUP_SYNC, {group: [Pid, ...]}]: all of the sender's memberships
    GROUP_JOIN = 21  # [GROUP_JOIN, group, [Pid, ...]]
    GROUP_LEAVE = 22  # [GROUP_LEAVE, group, [Pid, ...]]
    REG_LOCK = 30  # [REG_LOCK, request_id, name]: may the sender register name?
    REG_REPLY = 31  # [REG_REPLY, request_id, "granted" | "taken" | "busy" | "done"]
    REG_COMMIT = 32  # [REG_COMMIT, request_id, name, Pid]: registered; releases the lock
    REG_RELEASE = 33  # [REG_RELEASE, name]: the sender gives its lock up
    REG_UNREGISTER = 34  # [REG_UNREGISTER, request_id, name, Pid]; request_id 0: no reply
    REG_SYNC = 35  # [REG_SYNC, {name: Pid}]: every name the sender knows
    RPC_CALL = 40  # [RPC_CALL, request_id, function, args: list, kwargs: map, correlation_id|None]
    RPC_CAST = 41  # [RPC_CAST, function, args: list, kwargs: map, correlation_id|None]
    RPC_CANCEL = 42  # [RPC_CANCEL, request_id]: the caller gave up; stop the task
    RPC_REPLY = 43  # [RPC_REPLY, request_id, status: int, value]; see remote_call
    MEMBER_STREAM = 50  # [MEMBER_STREAM, payload: bytes]: a SWIM stream message (push-pull, probe)
    ELECTION = 55  # [ELECTION, payload: bytes]: a raft-lite election message
    LINK = 60  # [LINK, origin: Pid, target: Pid]: origin (the sender's) links to target
    UNLINK = 61  # [UNLINK, origin: Pid, target: Pid]
    LINK_EXIT = 62  # [LINK_EXIT, origin: Pid, target: Pid, kind: str, detail: str]: origin ended
    EXIT = 63  # [EXIT, origin: Pid, target: Pid, kind: str ("kill" too), detail: str]: exit/2
    UNLINK_ACK = 64  # [UNLINK_ACK, origin: Pid, target: Pid]: the UNLINK target->origin is done
    CALL = 65  # [CALL, ref: Ref, caller: Pid, dest: Pid | str, request]: a monitored request
    REPLY = 66  # [REPLY, caller: Pid, ref: Ref, value]: the answer to the CALL with ref
    CALL_DOWN = 67  # [CALL_DOWN, ref: Ref, caller: Pid, kind: str, detail: str]: callee ended
    CALL_DONE = 68  # [CALL_DONE, ref: Ref]: the caller stopped waiting; forget the call
