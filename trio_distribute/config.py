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

__all__ = ["ElectionConfig", "MembershipConfig", "NodeConfig"]

_positive = v.gt(0)
_positive_float = v.gt(0.0)


@attrs.frozen(kw_only=True)
class MembershipConfig:
    """SWIM membership knobs; defaults are memberlist's LAN profile."""

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

    def __attrs_post_init__(self) -> None:
        if self.probe_timeout >= self.probe_interval:
            raise ValueError(
                f"probe_timeout ({self.probe_timeout}) must be below "
                f"probe_interval ({self.probe_interval})"
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
        )


@attrs.frozen(kw_only=True)
class ElectionConfig:
    """Raft-lite election knobs. Election timeouts are drawn from
    ``[election_timeout, 2 * election_timeout)``.

    Attributes:
        bootstrap_expect: a node that is not yet part of a cluster never
            campaigns until it knows at least this many members, itself
            included (Consul's ``bootstrap_expect``). Set it to the number of
            voters you start together (more than half of them is enough for
            safety); 1 lets a lone node elect itself (development). The
            default, 3, is the smallest cluster that survives a failure, and
            a lone node or a pair never elects itself by accident.
    """

    enabled: bool = True
    election_timeout: float = attrs.field(default=1.0, converter=float, validator=_positive_float)
    heartbeat_interval: float = attrs.field(default=0.1, converter=float, validator=_positive_float)
    bootstrap_expect: int = attrs.field(default=3, validator=[v.instance_of(int), _positive])

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
        tick_timeout: a connection silent for this long is declared down
            (Erlang's ``net_ticktime``); ticks are sent every quarter of it.
        handshake_timeout: deadline for a whole handshake.
        max_pending_handshakes: unauthenticated connections allowed at once;
            more are closed on accept.
        max_message_size: largest encoded message accepted or sent
            (default: ``settings.max_message_size()`` when the config is made).
        max_mailbox: messages a process mailbox holds before new ones are
            dropped (and counted).
        send_buffer_size: bytes queued per connection before senders wait.
        connect_all: connect to every member learned through membership.
        allow_any_module: let RPC resolve ``"module.function"`` by import
            (default: ``settings.allow_any_module()`` when the config is made).
        state_dir: where the election persists ``(term, voted_for)`` and its
            voter set.
        metadata: up to 512 bytes gossiped with this node's membership.
    """

    membership: MembershipConfig = attrs.field(factory=MembershipConfig)
    election: ElectionConfig = attrs.field(factory=ElectionConfig)
    tick_timeout: float = attrs.field(default=60.0, converter=float, validator=_positive_float)
    handshake_timeout: float = attrs.field(default=5.0, converter=float, validator=_positive_float)
    max_pending_handshakes: int = attrs.field(default=64, validator=[v.instance_of(int), _positive])
    max_message_size: int = attrs.field(
        factory=settings.max_message_size, validator=[v.instance_of(int), v.ge(1024)]
    )
    max_mailbox: int = attrs.field(default=100_000, validator=[v.instance_of(int), _positive])
    send_buffer_size: int = attrs.field(
        default=256 * 1024, validator=[v.instance_of(int), v.ge(1024)]
    )
    connect_all: bool = True
    allow_any_module: bool = attrs.field(
        factory=settings.allow_any_module, validator=v.instance_of(bool)
    )
    state_dir: Path | None = attrs.field(default=None, converter=_state_dir)
    metadata: bytes = attrs.field(default=b"", validator=_metadata)

    @classmethod
    def local(cls, **overrides: Any) -> NodeConfig:
        """Fast timers for loopback clusters and tests; keyword arguments
        override individual fields."""
        fields: dict[str, Any] = {
            "membership": MembershipConfig.local(),
            "election": ElectionConfig.local(),
            "tick_timeout": 4.0,
            "handshake_timeout": 2.0,
        }
        fields.update(overrides)
        return cls(**fields)
