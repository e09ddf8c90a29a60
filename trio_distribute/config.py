"""Frozen, validated configuration for a node and its subsystems.

Defaults follow Erlang/OTP for the transport (60 s tick time) and
memberlist's LAN profile for membership. :meth:`NodeConfig.local` is a
profile with fast timers for loopback clusters and tests.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import attrs
from attrs import validators as v

from . import settings

__all__ = ["ElectionConfig", "GroupsConfig", "MembershipConfig", "NodeConfig", "RegistryConfig"]

_positive = v.gt(0)
_positive_float = v.gt(0.0)
_MiB = 1024 * 1024


@attrs.frozen(kw_only=True)
class MembershipConfig:
    """SWIM membership knobs; defaults are memberlist's LAN profile.

    Attributes:
        enabled: run membership at all (the election needs it).
        probe_interval: seconds between two probes this node sends (one
            member probed per interval, round robin).
        probe_timeout: seconds a direct probe waits for its answer before
            indirect probes are sent; below ``probe_interval``.
        indirect_checks: members asked to probe an unanswering member for
            this node.
        suspicion_mult: the minimum suspicion timeout is
            ``suspicion_mult * max(1, log10 n) * probe_interval``.
        suspicion_max_timeout_mult: the suspicion timeout starts at this
            times the minimum and shrinks as others confirm the suspicion.
        retransmit_mult: each update is piggybacked
            ``retransmit_mult * log10(n + 1)`` times (at least once).
        gossip_interval: seconds between two gossip rounds.
        gossip_nodes: members each gossip round sends to.
        push_pull_interval: seconds between two full-state exchanges over
            TCP with a random member.
        awareness_max_multiplier: the most Lifeguard's local health score
            may stretch this node's probe interval and timeout.
        reconnect_interval: seconds between two attempts to reach a dead
            member again; also the longest wait between seed retries.
        reconnect_timeout: seconds a dead member keeps being retried.
        redial_min_interval: with ``connect_all``, the first redial of a
            live member this node is not connected to waits this long.
        redial_max_interval: each failed redial doubles the wait, up to
            this, with up to 25 % random jitter on top.
        max_mesh_dials: with ``connect_all``, the most connections this
            node dials at once to make and keep the full mesh (first dials
            and redials); the others wait their turn. Handshakes started
            all at once on a busy machine miss their deadline together.
        stall_threshold: a membership timer that fires more than this many
            seconds late means this node's event loop was starved: the
            time it lost does not count against the peers it was waiting
            for, and Lifeguard's local health score rises.
    """

    enabled: bool = True
    probe_interval: float = attrs.field(default=1.0, converter=float, validator=_positive_float)
    probe_timeout: float = attrs.field(default=0.5, converter=float, validator=_positive_float)
    indirect_checks: int = attrs.field(default=3, validator=[v.instance_of(int), v.ge(0)])
    suspicion_mult: int = attrs.field(default=4, validator=[v.instance_of(int), _positive])
    suspicion_max_timeout_mult: int = attrs.field(
        default=6, validator=[v.instance_of(int), _positive]
    )
    retransmit_mult: int = attrs.field(default=4, validator=[v.instance_of(int), _positive])
    gossip_interval: float = attrs.field(default=0.2, converter=float, validator=_positive_float)
    gossip_nodes: int = attrs.field(default=3, validator=[v.instance_of(int), v.ge(0)])
    push_pull_interval: float = attrs.field(
        default=30.0, converter=float, validator=_positive_float
    )
    awareness_max_multiplier: int = attrs.field(
        default=8, validator=[v.instance_of(int), _positive]
    )
    reconnect_interval: float = attrs.field(
        default=30.0, converter=float, validator=_positive_float
    )
    reconnect_timeout: float = attrs.field(
        default=24 * 3600.0, converter=float, validator=_positive_float
    )
    #: With ``connect_all``: the first redial of a live member we are not
    #: connected to waits this long; each failure doubles the wait, up to
    #: ``redial_max_interval``, with up to 25 % random jitter on top.
    redial_min_interval: float = attrs.field(
        default=0.5, converter=float, validator=_positive_float
    )
    redial_max_interval: float = attrs.field(
        default=8.0, converter=float, validator=_positive_float
    )
    #: With ``connect_all``: mesh dials (first dials and redials) this node
    #: runs at once; a join storm's handshakes then finish instead of
    #: timing out together.
    max_mesh_dials: int = attrs.field(default=4, validator=[v.instance_of(int), _positive])
    stall_threshold: float = attrs.field(default=0.05, converter=float, validator=_positive_float)

    def __attrs_post_init__(self) -> None:
        if self.probe_timeout >= self.probe_interval:
            raise ValueError(
                f"probe_timeout ({self.probe_timeout}) must be below "
                f"probe_interval ({self.probe_interval})"
            )
        if self.redial_min_interval > self.redial_max_interval:
            raise ValueError(
                f"redial_min_interval ({self.redial_min_interval}) must not exceed "
                f"redial_max_interval ({self.redial_max_interval})"
            )

    def suspicion_timeouts(self, n: int) -> tuple[float, float]:
        """Lifeguard's (min, max) suspicion timeout in a cluster of ``n``:
        ``suspicion_mult * max(1, log10 n) * probe_interval`` and
        ``suspicion_max_timeout_mult`` times that."""
        low = self.suspicion_mult * max(1.0, math.log10(max(n, 1))) * self.probe_interval
        return low, low * self.suspicion_max_timeout_mult

    def dead_bound(self, n: int) -> float:
        """The worst case from a silent crash to "dead" at every member of a
        cluster of ``n`` (target M3): the longest suspicion timeout plus
        four probe intervals to notice and spread it."""
        return self.suspicion_timeouts(n)[1] + 4 * self.probe_interval

    @classmethod
    def local(cls) -> MembershipConfig:
        """Fast timers for loopback clusters and tests."""
        return cls(
            probe_interval=0.2,
            probe_timeout=0.1,
            indirect_checks=2,
            suspicion_mult=3,
            retransmit_mult=2,
            gossip_interval=0.05,
            push_pull_interval=2.0,
            reconnect_interval=1.0,
            reconnect_timeout=60.0,
            redial_min_interval=0.05,
            redial_max_interval=0.5,
        )


@attrs.frozen(kw_only=True)
class ElectionConfig:
    """Raft-lite election knobs. Election timeouts are drawn from
    ``[election_timeout, 2 * election_timeout)``.

    Attributes:
        enabled: run the election (it needs membership).
        election_timeout: ``E``: a follower that hears no leader for a
            random time in ``[E, 2E)`` starts a (pre-)vote; a leader that
            does not hear from a majority within ``0.75 E`` steps down.
        heartbeat_interval: seconds between a leader's heartbeats; below
            ``election_timeout``.
        bootstrap_expect: a node that is not yet part of a cluster never
            campaigns until it knows at least this many members, itself
            included (Consul's ``bootstrap_expect``). Set it to the number of
            voters you start together (more than half of them is enough for
            safety); 1 lets a lone node elect itself (development). The
            default, 3, is the smallest cluster that survives a failure, and
            a lone node or a pair never elects itself by accident.
        max_voters: the most voters the leader keeps (default 5, as Consul
            and etcd recommend: an odd number survives as many failures as
            the next even one). Other members are learners: they never vote
            or campaign and hear from the leader every ``learner_interval``
            only; a voter declared dead is replaced by a live learner.
        learner_interval: seconds between the leader's messages to learners
            (default 2.0); a learner forgets a leader silent for three.
    """

    enabled: bool = True
    election_timeout: float = attrs.field(default=1.0, converter=float, validator=_positive_float)
    heartbeat_interval: float = attrs.field(default=0.1, converter=float, validator=_positive_float)
    bootstrap_expect: int = attrs.field(default=3, validator=[v.instance_of(int), _positive])
    max_voters: int = attrs.field(default=5, validator=[v.instance_of(int), _positive])
    learner_interval: float = attrs.field(default=2.0, converter=float, validator=_positive_float)

    def __attrs_post_init__(self) -> None:
        if self.heartbeat_interval >= self.election_timeout:
            raise ValueError(
                f"heartbeat_interval ({self.heartbeat_interval}) must be below "
                f"election_timeout ({self.election_timeout})"
            )

    @classmethod
    def local(cls, **overrides: Any) -> ElectionConfig:
        """Short timeouts for loopback clusters and tests; keyword arguments
        override individual fields (``bootstrap_expect`` keeps its default)."""
        fields: dict[str, Any] = {"election_timeout": 0.3, "heartbeat_interval": 0.05}
        fields.update(overrides)
        return cls(**fields)


@attrs.frozen(kw_only=True)
class RegistryConfig:
    """Bounds of the global registry (see the "Global registry" guide).

    Attributes:
        lock_timeout: how long a lock request waits for a peer's answer. A
            peer that leaves one unanswered this long is disconnected
            (``registry_unanswered``); an attempt whose locks took longer
            than this to gather is abandoned and retried, so that it never
            commits on a lock whose lease may have run out.
        lock_lease: a lock granted to a node and neither committed nor
            released within this is dropped (``registry_lock_expired``);
            its holder may not take that name's lock again for one more
            lease. Must be above ``lock_timeout`` (twice it by default).
        commit_timeout: how long a commit or unregister waits for each
            peer's acknowledgement (the wait is shielded from cancellation,
            so this bounds leaving a node's block too); a peer that does
            not acknowledge in time is counted (``registry_unacknowledged``)
            and no longer waited for.
        contention_timeout: ``register`` raises ``TimeoutError`` after the
            name stayed locked by others for this long; at least
            ``lock_lease + lock_timeout`` so an abandoned lock never makes
            it fail.
        max_locks_per_node: locks one peer may hold here at once; more are
            answered "busy" (``registry_lock_limit``).
        sync_chunk: names per frame of the table sent to a new peer (fewer
            if the frame would exceed ``max_message_size``).
        apply_slice: names applied from a peer's frame before yielding to
            other tasks.
        max_backlog: names from one peer waiting to be applied; beyond it
            the peer is disconnected (``registry_backlog``).
    """

    lock_timeout: float = attrs.field(default=5.0, converter=float, validator=_positive_float)
    lock_lease: float = attrs.field(default=10.0, converter=float, validator=_positive_float)
    commit_timeout: float = attrs.field(default=5.0, converter=float, validator=_positive_float)
    contention_timeout: float = attrs.field(
        default=30.0, converter=float, validator=_positive_float
    )
    max_locks_per_node: int = attrs.field(default=10_000, validator=[v.instance_of(int), _positive])
    sync_chunk: int = attrs.field(default=1000, validator=[v.instance_of(int), _positive])
    apply_slice: int = attrs.field(default=1000, validator=[v.instance_of(int), _positive])
    max_backlog: int = attrs.field(default=1_000_000, validator=[v.instance_of(int), _positive])

    def __attrs_post_init__(self) -> None:
        if self.lock_lease <= self.lock_timeout:
            raise ValueError(
                f"lock_lease ({self.lock_lease}) must be above lock_timeout ({self.lock_timeout})"
            )
        if self.contention_timeout < self.lock_lease + self.lock_timeout:
            raise ValueError(
                f"contention_timeout ({self.contention_timeout}) must be at least "
                f"lock_lease + lock_timeout ({self.lock_lease + self.lock_timeout})"
            )

    @classmethod
    def local(cls) -> RegistryConfig:
        """Short timeouts for loopback clusters and tests."""
        return cls(lock_timeout=2.0, lock_lease=4.0, commit_timeout=1.0, contention_timeout=12.0)


@attrs.frozen(kw_only=True)
class GroupsConfig:
    """Bounds of process groups (see the "Process groups" guide).

    Attributes:
        max_remote_entries: memberships one peer may announce (all groups
            together); more are dropped (``group_limit``).
        sync_chunk: memberships per frame of the view sent to a new peer
            (fewer if the frame would exceed ``max_message_size``).
        apply_slice: memberships applied from a peer's frame before
            yielding to other tasks.
        max_backlog: memberships from one peer waiting to be applied;
            beyond it the peer is disconnected (``group_backlog``).
    """

    max_remote_entries: int = attrs.field(
        default=1_000_000, validator=[v.instance_of(int), _positive]
    )
    sync_chunk: int = attrs.field(default=2000, validator=[v.instance_of(int), _positive])
    apply_slice: int = attrs.field(default=2000, validator=[v.instance_of(int), _positive])
    max_backlog: int = attrs.field(default=2_000_000, validator=[v.instance_of(int), _positive])


def _metadata(instance: object, attribute: attrs.Attribute[bytes], value: bytes) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"metadata must be bytes, got {type(value).__name__}")
    if len(value) > 512:
        raise ValueError(f"metadata must be at most 512 bytes, got {len(value)}")


def _state_dir(value: str | Path | None) -> Path | None:
    return None if value is None else Path(value)


@attrs.frozen(kw_only=True)
class NodeConfig:
    """Everything a node can be tuned with.

    Attributes:
        membership: membership knobs (:class:`MembershipConfig`).
        election: election knobs (:class:`ElectionConfig`).
        tick_timeout: a connection silent for this long is declared down
            (Erlang's ``net_ticktime``); ticks are sent every quarter of it.
        handshake_timeout: deadline for a whole handshake.
        max_pending_handshakes: unauthenticated connections allowed at once;
            when full, a new one evicts the oldest (counted as
            ``handshake_evicted``), so silent sockets cannot lock peers out.
        max_pending_handshakes_per_host: unauthenticated connections allowed
            at once from one source address; a new one beyond it evicts that
            address's oldest (``handshake_evicted_per_host``).
        shutdown_timeout: how long leaving ``open_node`` waits for the
            goodbye to every peer to be written (a peer that does not read
            cannot hold the node longer); also bounds ``disconnect``.
        max_message_size: largest encoded message accepted or sent
            (default: ``settings.max_message_size()`` when the config is made).
        max_mailbox: messages a process mailbox holds before new ones are
            dropped (and counted).
        send_buffer_size: bytes queued per connection before senders wait.
        max_send_queue: bytes a connection may hold unwritten before the
            peer is dropped as a slow consumer (counted as ``slow_consumer``).
            Frames answered from the connection's reader (RPC replies, pongs)
            cannot wait for space, so a peer that sends requests and never
            reads the answers meets this cap. Default: 64 MiB, or
            ``2 * (send_buffer_size + max_message_size)`` if that is larger
            (the least accepted: what one waiting sender can hold).
        max_mailbox_bytes: encoded bytes of messages a process mailbox
            holds before new ones are dropped (counted as
            ``mailbox_bytes``); a message reaching a mailbox that holds no
            such bytes is always taken. A local send counts the frame it
            would have had over the wire; the node's own notifications
            (``ProcessDown`` and the like) count 0 bytes.
        max_rpc_concurrency: RPC calls and casts from one peer that may run
            as tasks at once (``async def`` functions); a call over it is
            refused with ``BadRpcError`` whose ``reason`` is ``"busy"``, a
            cast over it is dropped; both counted as ``rpc_busy``.
        max_rpc_bytes: encoded bytes of the requests of one peer's calls and
            casts running at once (their arguments); a request over it is
            refused like one over ``max_rpc_concurrency``. A request arriving
            while none of that peer's run is always taken.
        max_monitors_per_peer: monitors one peer node may hold on this
            node's processes at once; a MONITOR beyond it closes that
            connection (counted as ``monitor_limit``), whose monitors then
            all fire ``noconnection`` on the peer. Calls from that peer
            waiting for a reply here (``Process.call``) are bounded by the
            same number, counted separately (``call_limit``).
        max_links_per_peer: links between this node's processes and one
            peer node's processes at once; a LINK beyond it closes that
            connection (counted as ``link_limit``), whose links then all
            fire ``noconnection``.
        frame_buffer_reserve: bytes of an incomplete incoming frame each
            connection may hold on its own.
        max_frame_buffers: bytes of incomplete incoming frames beyond each
            connection's reserve, summed over all connections; a connection
            that needs more than what is left is closed (counted as
            ``frame_buffers_full``).
        connect_all: connect to every member learned through membership.
        allow_any_module: let RPC resolve ``"module.function"`` by import
            (default: ``settings.allow_any_module()`` when the config is made).
        state_dir: where the election persists ``(term, voted_for)`` and its
            voter set.
        metadata: up to 512 bytes gossiped with this node's membership.
        registry: bounds of the global registry (:class:`RegistryConfig`).
        groups: bounds of process groups (:class:`GroupsConfig`).
    """

    membership: MembershipConfig = attrs.field(factory=MembershipConfig)
    election: ElectionConfig = attrs.field(factory=ElectionConfig)
    tick_timeout: float = attrs.field(default=60.0, converter=float, validator=_positive_float)
    handshake_timeout: float = attrs.field(default=5.0, converter=float, validator=_positive_float)
    max_pending_handshakes: int = attrs.field(default=64, validator=[v.instance_of(int), _positive])
    max_pending_handshakes_per_host: int = attrs.field(
        default=8, validator=[v.instance_of(int), _positive]
    )
    shutdown_timeout: float = attrs.field(default=2.0, converter=float, validator=_positive_float)
    max_message_size: int = attrs.field(
        factory=settings.max_message_size, validator=[v.instance_of(int), v.ge(1024)]
    )
    max_mailbox: int = attrs.field(default=100_000, validator=[v.instance_of(int), _positive])
    send_buffer_size: int = attrs.field(
        default=256 * 1024, validator=[v.instance_of(int), v.ge(1024)]
    )
    max_send_queue: int = attrs.field(
        default=attrs.Factory(
            lambda self: max(64 * _MiB, 2 * (self.send_buffer_size + self.max_message_size)),
            takes_self=True,
        ),
        validator=v.instance_of(int),
    )
    max_mailbox_bytes: int = attrs.field(
        default=64 * _MiB, validator=[v.instance_of(int), v.ge(1024)]
    )
    max_rpc_concurrency: int = attrs.field(default=256, validator=[v.instance_of(int), _positive])
    max_rpc_bytes: int = attrs.field(default=64 * _MiB, validator=[v.instance_of(int), v.ge(0)])
    max_monitors_per_peer: int = attrs.field(
        default=100_000, validator=[v.instance_of(int), _positive]
    )
    max_links_per_peer: int = attrs.field(
        default=100_000, validator=[v.instance_of(int), _positive]
    )
    frame_buffer_reserve: int = attrs.field(
        default=256 * 1024, validator=[v.instance_of(int), v.ge(1024)]
    )
    max_frame_buffers: int = attrs.field(default=64 * _MiB, validator=[v.instance_of(int), v.ge(0)])
    connect_all: bool = True
    allow_any_module: bool = attrs.field(
        factory=settings.allow_any_module, validator=v.instance_of(bool)
    )
    state_dir: Path | None = attrs.field(default=None, converter=_state_dir)
    metadata: bytes = attrs.field(default=b"", validator=_metadata)
    registry: RegistryConfig = attrs.field(factory=RegistryConfig)
    groups: GroupsConfig = attrs.field(factory=GroupsConfig)

    def __attrs_post_init__(self) -> None:
        # One sender that waits for space can hold a full send buffer plus
        # one message queued, and as much again in the write under way: a
        # lower cap would drop honest peers that merely read slowly.
        least = 2 * (self.send_buffer_size + self.max_message_size)
        if self.max_send_queue < least:
            raise ValueError(
                f"max_send_queue ({self.max_send_queue}) must be at least "
                f"2 * (send_buffer_size + max_message_size) = {least}"
            )

    @classmethod
    def local(cls, **overrides: Any) -> NodeConfig:
        """Fast timers for loopback clusters and tests; keyword arguments
        override individual fields."""
        fields: dict[str, Any] = {
            "membership": MembershipConfig.local(),
            "election": ElectionConfig.local(),
            "tick_timeout": 4.0,
            "handshake_timeout": 2.0,
            "shutdown_timeout": 0.5,
            "registry": RegistryConfig.local(),
        }
        fields.update(overrides)
        return cls(**fields)
