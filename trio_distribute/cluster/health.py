"""Health: what membership and the election say about a node and the cluster.

A read-only view over the other services, cheap enough to poll (the
``status`` command and health endpoints call it).
"""

from __future__ import annotations

import attrs

from .._proto.swim import MemberStatus
from ..election.raft_lite import Election
from ..transport import Transport
from .membership import Membership

__all__ = ["ClusterHealth", "Health", "NodeHealth"]


@attrs.frozen
class NodeHealth:
    """One member as this node sees it.

    Attributes:
        name: the member.
        status: its membership status (``None``: unknown to membership).
        last_rtt: seconds of the last answered direct probe, if any.
        incarnation: its incarnation number, if known.
        connected: whether this node has a connection to it now.
    """

    name: str
    status: MemberStatus | None
    last_rtt: float | None
    incarnation: int | None
    connected: bool


@attrs.frozen
class ClusterHealth:
    """The cluster as this node sees it (this node included in the counts).

    Attributes:
        alive, suspect, dead, left: members in each status.
        has_quorum: a majority of the election's voters is live.
        leader: the elected leader's name, if known.
        term: the election term.
        health_multiplier: Lifeguard's local health score (0 is healthy;
            each point stretches this node's probe interval).
    """

    alive: int
    suspect: int
    dead: int
    left: int
    has_quorum: bool
    leader: str | None
    term: int
    health_multiplier: int


@attrs.define(eq=False, kw_only=True)
class Health:
    """A node's health view: ``node.health``."""

    transport: Transport
    membership: Membership
    election: Election

    def __repr__(self) -> str:
        return f"<Health of {self.transport.name}>"

    def node(self, name: str) -> NodeHealth:
        """What this node knows about ``name`` (itself included)."""
        connected = name == self.transport.name or self.transport.is_connected(name)
        if not self.membership.enabled:
            return NodeHealth(name, None, None, None, connected)
        core = self.membership.core
        member = core.member(name)
        return NodeHealth(
            name=name,
            status=None if member is None else member.status,
            last_rtt=core.last_rtt(name),
            incarnation=None if member is None else member.incarnation,
            connected=connected,
        )

    def cluster(self) -> ClusterHealth:
        """Counts by status, quorum, leader and local health."""
        if not self.membership.enabled:
            alive = 1 + len(self.transport.peers())
            return ClusterHealth(alive, 0, 0, 0, True, None, 0, 0)
        core = self.membership.core
        counts = core.counts()
        election = self.election
        leader: str | None = None
        term = 0
        has_quorum = True
        if election.enabled:
            leader = election.core.leader
            term = election.core.term
            has_quorum = election.has_quorum()
        return ClusterHealth(
            alive=counts[MemberStatus.ALIVE],
            suspect=counts[MemberStatus.SUSPECT],
            dead=counts[MemberStatus.DEAD],
            left=counts[MemberStatus.LEFT],
            has_quorum=has_quorum,
            leader=leader,
            term=term,
            health_multiplier=core.health_multiplier,
        )

    def is_healthy(self) -> bool:
        """This node is a live member, Lifeguard sees no local trouble, and
        a quorum of voters is live."""
        if not self.membership.enabled:
            return True
        core = self.membership.core
        cluster = self.cluster()
        return not core.leaving and cluster.health_multiplier == 0 and cluster.has_quorum
