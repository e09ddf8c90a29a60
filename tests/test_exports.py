"""The public API: every documented name is importable from the top-level package,
and nothing else public is exported by accident."""

from __future__ import annotations

import trio_distribute as td


def test_all_names_are_importable_and_listed() -> None:
    for name in td.__all__:
        assert getattr(td, name) is not None, name
    public = {n for n in dir(td) if not n.startswith("_")}
    modules = {"codec", "config", "errors", "groups", "messaging", "monitor", "node"}
    modules |= {"registry", "testing", "transport", "cluster", "election"}
    modules |= {"supervisor"}
    modules |= {"metrics"}  # optional (prometheus extra): never imported by the package
    assert public - modules - {"annotations"} == set(td.__all__)


def test_contract_names_exist() -> None:
    for name in [
        "open_node", "Node", "NodeConfig", "MembershipConfig", "ElectionConfig",
        "RegistryConfig", "GroupsConfig",
        "Pid", "Ref", "message", "Process", "current_process", "NodeUp", "NodeDown",
        "ProcessDown", "ExitReason", "ConnectError", "AuthenticationError",
        "HandshakeError", "VersionMismatchError", "NodeDownError", "ProtocolError",
        "DecodeError", "EncodeError", "MessageTooLargeError", "NameNotFoundError",
        "RpcTimeoutError", "BadRpcError", "RemoteError", "Ok", "Err", "rpc", "remote_call",
        "settings", "log", "Leader", "NoLeader", "LeaderChanged", "MemberStatus", "MemberUp",
        "MemberSuspect", "MemberDown", "MemberLeft", "NodeHealth", "ClusterHealth",
        "open_supervisor", "ChildSpec", "open_pool", "open_singleton",
        "ExitSignal", "Call", "CallTimeoutError", "ProcessDownError", "AlreadyRepliedError",
        "ProcessExitError",
    ]:  # fmt: skip
        assert name in td.__all__, name


def test_connect_errors_share_a_base() -> None:
    for error in (td.AuthenticationError, td.HandshakeError, td.VersionMismatchError):
        assert issubclass(error, td.ConnectError)
    assert issubclass(td.ConnectError, td.DistributionError)
    assert issubclass(td.DecodeError, td.ProtocolError)
    assert issubclass(td.EncodeError, TypeError)


def test_call_and_exit_errors() -> None:
    assert issubclass(td.CallTimeoutError, TimeoutError)
    assert issubclass(td.AlreadyRepliedError, ValueError)
    for error in (td.CallTimeoutError, td.ProcessDownError, td.ProcessExitError):
        assert issubclass(error, td.DistributionError)
