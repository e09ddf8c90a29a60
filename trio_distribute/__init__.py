"""Erlang-style distributed computing for trio.

Named nodes that authenticate each other with a cookie, connected over TCP
with one connection per peer; processes with pids and mailboxes, monitors,
a global registry, process groups, RPC, membership and leader election.
Everything public is importable from here; README.rst has a tour and the
documentation (docs/) a tutorial and the reference.
"""

from __future__ import annotations

import logging as _logging

from . import discovery as discovery
from . import log as log
from . import remote_call as remote_call
from . import remote_call as rpc
from . import settings as settings
from . import telemetry as telemetry
from ._calls import Call as Call
from ._ids import Pid as Pid
from ._ids import Ref as Ref
from ._links import ExitSignal as ExitSignal
from .cluster.health import ClusterHealth as ClusterHealth
from .cluster.health import Health as Health
from .cluster.health import NodeHealth as NodeHealth
from .cluster.membership import Member as Member
from .cluster.membership import MemberDown as MemberDown
from .cluster.membership import MemberLeft as MemberLeft
from .cluster.membership import Membership as Membership
from .cluster.membership import MemberStatus as MemberStatus
from .cluster.membership import MemberSuspect as MemberSuspect
from .cluster.membership import MemberUp as MemberUp
from .codec import message as message
from .config import ElectionConfig as ElectionConfig
from .config import GroupsConfig as GroupsConfig
from .config import MembershipConfig as MembershipConfig
from .config import NodeConfig as NodeConfig
from .config import RegistryConfig as RegistryConfig
from .election.raft_lite import Election as Election
from .election.raft_lite import Leader as Leader
from .election.raft_lite import LeaderChanged as LeaderChanged
from .election.raft_lite import NoLeader as NoLeader
from .errors import AlreadyRepliedError as AlreadyRepliedError
from .errors import AuthenticationError as AuthenticationError
from .errors import BadRpcError as BadRpcError
from .errors import CallTimeoutError as CallTimeoutError
from .errors import ConnectError as ConnectError
from .errors import DecodeError as DecodeError
from .errors import DistributionError as DistributionError
from .errors import EncodeError as EncodeError
from .errors import HandshakeError as HandshakeError
from .errors import MessageTooLargeError as MessageTooLargeError
from .errors import NameNotFoundError as NameNotFoundError
from .errors import NameTakenError as NameTakenError
from .errors import NodeDownError as NodeDownError
from .errors import ProcessDownError as ProcessDownError
from .errors import ProcessExitError as ProcessExitError
from .errors import ProtocolError as ProtocolError
from .errors import RemoteError as RemoteError
from .errors import RpcError as RpcError
from .errors import RpcTimeoutError as RpcTimeoutError
from .errors import VersionMismatchError as VersionMismatchError
from .groups import GroupJoined as GroupJoined
from .groups import GroupLeft as GroupLeft
from .messaging import Process as Process
from .messaging import current_process as current_process
from .monitor import ExitKind as ExitKind
from .monitor import ExitReason as ExitReason
from .monitor import NodeDown as NodeDown
from .monitor import NodeDownReason as NodeDownReason
from .monitor import NodeUp as NodeUp
from .monitor import ProcessDown as ProcessDown
from .node import Node as Node
from .node import NodeStatistics as NodeStatistics
from .node import open_node as open_node
from .registry import NameConflict as NameConflict
from .remote_call import Err as Err
from .remote_call import Ok as Ok
from .remote_call import Rpc as Rpc
from .remote_call import RpcStatistics as RpcStatistics
from .supervisor import ChildCounts as ChildCounts
from .supervisor import ChildInfo as ChildInfo
from .supervisor import ChildSpec as ChildSpec
from .supervisor import Pool as Pool
from .supervisor import PoolRef as PoolRef
from .supervisor import RestartIntensityExceeded as RestartIntensityExceeded
from .supervisor import Singleton as Singleton
from .supervisor import Supervisor as Supervisor
from .supervisor import SupervisorError as SupervisorError
from .supervisor import find_pool as find_pool
from .supervisor import open_dynamic_supervisor as open_dynamic_supervisor
from .supervisor import open_pool as open_pool
from .supervisor import open_singleton as open_singleton
from .supervisor import open_supervisor as open_supervisor

__version__ = "0.1.0.dev0"

__all__ = [
    "AlreadyRepliedError",
    "AuthenticationError",
    "BadRpcError",
    "Call",
    "CallTimeoutError",
    "ChildCounts",
    "ChildInfo",
    "ChildSpec",
    "ClusterHealth",
    "ConnectError",
    "DecodeError",
    "DistributionError",
    "Election",
    "ElectionConfig",
    "EncodeError",
    "Err",
    "ExitKind",
    "ExitReason",
    "ExitSignal",
    "GroupJoined",
    "GroupLeft",
    "GroupsConfig",
    "HandshakeError",
    "Health",
    "Leader",
    "LeaderChanged",
    "Member",
    "MemberDown",
    "MemberLeft",
    "MemberStatus",
    "MemberSuspect",
    "MemberUp",
    "Membership",
    "MembershipConfig",
    "MessageTooLargeError",
    "NameConflict",
    "NameNotFoundError",
    "NameTakenError",
    "NoLeader",
    "Node",
    "NodeConfig",
    "NodeDown",
    "NodeDownError",
    "NodeDownReason",
    "NodeHealth",
    "NodeStatistics",
    "NodeUp",
    "Ok",
    "Pid",
    "Pool",
    "PoolRef",
    "Process",
    "ProcessDown",
    "ProcessDownError",
    "ProcessExitError",
    "ProtocolError",
    "Ref",
    "RegistryConfig",
    "RemoteError",
    "RestartIntensityExceeded",
    "Rpc",
    "RpcError",
    "RpcStatistics",
    "RpcTimeoutError",
    "Singleton",
    "Supervisor",
    "SupervisorError",
    "VersionMismatchError",
    "current_process",
    "discovery",
    "find_pool",
    "log",
    "message",
    "open_dynamic_supervisor",
    "open_node",
    "open_pool",
    "open_singleton",
    "open_supervisor",
    "remote_call",
    "rpc",
    "settings",
    "telemetry",
]

# A library logs through the stdlib and lets the application decide where
# records go.
_logging.getLogger("trio_distribute").addHandler(_logging.NullHandler())
