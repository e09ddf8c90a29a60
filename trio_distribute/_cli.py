"""The command line: ``trio-distribute`` / ``python -m trio_distribute``.

Every mistake a user can make (a bad option, a port in use, a wrong
cookie, an unreachable node) is one line on stderr and exit code 2; a
traceback means a bug. SIGINT (Ctrl-C) and SIGTERM stop a ``node`` cleanly:
it says goodbye to its peers (they see ``shutdown``) and exits 0.
"""

from __future__ import annotations

import argparse
import datetime
import errno
import json
import logging
import os
import secrets
import signal
import socket
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import attrs
import trio

from . import __version__, _demo
from ._addresses import parse_target
from ._cookie import generate_cookie
from ._ids import validate_node_name
from .cluster.membership import MemberDown, MemberLeft, MemberSuspect, MemberUp
from .config import ElectionConfig, MembershipConfig, NodeConfig
from .election.raft_lite import Leader, LeaderChanged
from .errors import DistributionError
from .monitor import NodeDown, NodeUp
from .node import Node, open_node

__all__ = ["main"]

#: The environment variable a cookie may come from (not visible in ``ps``).
COOKIE_ENV = "TRIO_DISTRIBUTE_COOKIE"
#: Exit code of every error the user can fix (bad options, unreachable
#: node, port in use, wrong cookie).
EXIT_USAGE = 2
LOG_LEVELS = ("debug", "info", "warning", "error")

logger = logging.getLogger("trio_distribute.cli")


class UserError(Exception):
    """A mistake reported as one line and exit code 2."""


def _program_name() -> str:
    """The program as the user invoked it, for the usage line."""
    invoked = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    if not invoked or invoked in ("__main__.py", "-m", "-c"):
        return "python -m trio_distribute"
    return invoked


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line (not the whole usage block) and exit 2, like every other
        # mistake; --help still shows the usage.
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value < 65536:
        raise argparse.ArgumentTypeError(f"{value} is not in 0..65535")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} must be more than 0")
    return value


def _node_count(text: str) -> int:
    value = _positive_int(text)
    if not 2 <= value <= 9:
        raise argparse.ArgumentTypeError(f"{value} is not in 2..9")
    return value


def _add_cookie_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--cookie-file",
        metavar="PATH",
        help="read the cookie from this file (surrounding whitespace is ignored)",
    )
    group.add_argument(
        "--cookie",
        help="the cookie itself; visible to other users in ps: "
        f"prefer --cookie-file or ${COOKIE_ENV}",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=_program_name(),
        description="Erlang-style distribution for trio: run a demo, a node, or ask a node "
        f"for its status. The cookie comes from --cookie-file, ${COOKIE_ENV} or --cookie.",
    )
    parser.add_argument("--version", action="version", version=f"trio-distribute {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="run a small local cluster and narrate it")
    demo.add_argument(
        "--nodes",
        type=_node_count,
        default=3,
        help="nodes in the cluster, 2-9 (default 3); one more joins and stops at the end",
    )

    node = commands.add_parser("node", help="run one node until SIGINT or SIGTERM")
    node.add_argument("--name", required=True, help="node name, e.g. a@10.0.0.5")
    node.add_argument(
        "--port", type=_port, default=0, help="TCP and UDP port to listen on (default 0: any free)"
    )
    node.add_argument(
        "--host",
        help="address to bind (default: the host part of --name; 0.0.0.0 for every interface)",
    )
    _add_cookie_options(node)
    node.add_argument(
        "--seed",
        "--join",
        dest="seeds",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="name@host:port or host:port of a node to join through (repeatable; "
        "retried with backoff until one answers, so nodes may start in any order)",
    )
    node.add_argument(
        "--state-dir",
        metavar="DIR",
        help="directory for the election's term and vote and the member snapshot "
        "(created if missing; default: none, nothing persisted)",
    )
    node.add_argument(
        "--expect",
        type=_positive_int,
        default=None,
        help="ElectionConfig.bootstrap_expect: voters to know before the first election",
    )
    node.add_argument(
        "--local",
        action="store_true",
        help="fast timers for loopback clusters (NodeConfig.local())",
    )
    node.add_argument(
        "--tls-cert", metavar="PEM", help="this node's certificate chain (enables TLS)"
    )
    node.add_argument(
        "--tls-key", metavar="PEM", help="its private key (default: in the --tls-cert file)"
    )
    node.add_argument(
        "--tls-ca",
        metavar="PEM",
        help="CA certificates that peers' certificates must chain to (mutual TLS)",
    )
    node.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (needs the "
        "prometheus extra: pip install 'trio_distribute[prometheus]')",
    )
    node.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info",
        help="log lines on stderr, with timestamps, at this level and above (default info)",
    )

    status = commands.add_parser("status", help="show a running node's members, leader, health")
    status.add_argument(
        "--node", required=True, metavar="ADDRESS", help="host:port or name@host:port of the node"
    )
    _add_cookie_options(status)
    status.add_argument(
        "--host",
        help="local address to connect from (default: the one the system routes to the node by)",
    )
    status.add_argument(
        "--timeout", type=_seconds, default=5.0, help="seconds to wait for the node (default 5)"
    )
    status.add_argument("--json", action="store_true", help="print the report as JSON")
    status.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="warning",
        help="log lines on stderr at this level and above (default warning)",
    )

    cookie = commands.add_parser("cookie", help="print a fresh random cookie (256 bits)")
    cookie.add_argument(
        "--urlsafe",
        action="store_true",
        help="43 URL-safe base64 characters instead of 64 hex digits",
    )
    return parser


# ------------------------------------------------------------------ helpers


def _cookie(args: argparse.Namespace) -> str:
    if args.cookie_file is not None:
        try:
            text = Path(args.cookie_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read the cookie file {args.cookie_file}: {exc}") from None
        if not text:
            raise UserError(f"the cookie file {args.cookie_file} is empty")
        return text
    if args.cookie is not None:
        return str(args.cookie)
    from_env = os.environ.get(COOKIE_ENV, "").strip()
    if from_env:
        return from_env
    raise UserError(f"no cookie: give --cookie-file PATH, set ${COOKIE_ENV}, or --cookie")


def _ssl_contexts(args: argparse.Namespace) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """Server and client contexts for mutual TLS from the PEM files."""
    if args.tls_cert is None and args.tls_key is None and args.tls_ca is None:
        return None, None
    if args.tls_cert is None or args.tls_ca is None:
        raise UserError("TLS needs --tls-cert and --tls-ca (and --tls-key unless in the cert)")
    try:
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=args.tls_ca)
        server.load_cert_chain(args.tls_cert, args.tls_key)
        server.verify_mode = ssl.CERT_REQUIRED  # mutual: peers need a certificate too
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=args.tls_ca)
        client.load_cert_chain(args.tls_cert, args.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise UserError(f"cannot load the TLS files: {exc}") from None
    return server, client


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def _say(text: str) -> None:
    print(f"{_now()} {text}", flush=True)


def _describe(event: object) -> str:
    """One line per event, in words rather than reprs."""
    if isinstance(event, NodeUp):
        return f"node up: {event.node}"
    if isinstance(event, NodeDown):
        return f"node down: {event.node} ({event.reason})"
    if isinstance(event, MemberUp):
        return f"member up: {event.name} at {event.address} (incarnation {event.incarnation})"
    if isinstance(event, MemberSuspect):
        return f"member suspect: {event.name} (incarnation {event.incarnation})"
    if isinstance(event, MemberDown):
        return f"member dead: {event.name} (incarnation {event.incarnation})"
    if isinstance(event, MemberLeft):
        return f"member left: {event.name}"
    if isinstance(event, LeaderChanged):
        if event.leader is None:
            return f"no leader (term {event.term})"
        return f"leader: {event.leader} (term {event.term})"
    return repr(event)


def _bind_error(exc: OSError, host: str, port: int) -> UserError:
    reasons = {
        errno.EADDRINUSE: "the port is in use",
        errno.EADDRNOTAVAIL: "the address is not one of this machine's",
        errno.EACCES: "permission denied",
    }
    why = reasons.get(exc.errno or 0, exc.strerror or str(exc))
    return UserError(f"cannot listen on {host}:{port}: {why}")


# --------------------------------------------------------------------- node


@attrs.frozen
class _NodeSetup:
    """What ``node`` runs with, checked before anything starts."""

    config: NodeConfig
    server_ssl: ssl.SSLContext | None
    client_ssl: ssl.SSLContext | None


def _node_setup(args: argparse.Namespace) -> _NodeSetup:
    config = NodeConfig.local() if args.local else NodeConfig()
    if args.expect is not None:
        config = attrs.evolve(
            config, election=attrs.evolve(config.election, bootstrap_expect=args.expect)
        )
    if args.state_dir is not None:
        try:
            Path(args.state_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot use --state-dir {args.state_dir}: {exc}") from None
        config = attrs.evolve(config, state_dir=Path(args.state_dir))
    server_ssl, client_ssl = _ssl_contexts(args)
    return _NodeSetup(config=config, server_ssl=server_ssl, client_ssl=client_ssl)


async def _run_node(args: argparse.Namespace, cookie: str, setup: _NodeSetup) -> None:
    config, server_ssl, client_ssl = setup.config, setup.server_ssl, setup.client_ssl
    host = args.host if args.host is not None else args.name.partition("@")[2]
    # Signals are caught before the node starts, so a Ctrl-C at any moment
    # leaves through the node's block (a goodbye to every peer).
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for signum in signals:
                    logger.info("%s: stopping", signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            started = False
            try:
                node_cm = open_node(
                    args.name,
                    cookie=cookie,
                    port=args.port,
                    host=args.host,
                    config=config,
                    ssl_context=server_ssl,
                    client_ssl_context=client_ssl,
                    seeds=args.seeds,
                )
                async with node_cm as node:
                    started = True
                    address = f"{node.address[0]}:{node.address[1]}"
                    _say(f"{node.name} listening on {address}" + (" (TLS)" if server_ssl else ""))
                    if args.metrics_port is not None:
                        await _start_metrics(nursery, node, args.metrics_port, host)
                    await _print_events(node)
            except OSError as exc:
                if started or isinstance(exc, DistributionError):
                    raise
                raise _bind_error(exc, host, args.port) from None
            nursery.cancel_scope.cancel()
    _say("stopped")


async def _start_metrics(nursery: trio.Nursery, node: Node, port: int, host: str) -> None:
    try:
        from .metrics import serve_metrics
    except ImportError:
        raise UserError(
            "--metrics-port needs prometheus_client: pip install 'trio_distribute[prometheus]'"
        ) from None
    try:
        bound = await nursery.start(serve_metrics, node, port, host)
    except OSError as exc:
        raise UserError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
    _say(f"metrics at http://{host}:{bound}/metrics")


async def _print_events(node: Node) -> None:
    async with node.monitor_nodes() as events, trio.open_nursery() as nursery:
        # Seeds were connected while the node started, before this
        # subscription: show them, and not again if their NodeUp follows.
        early = set(node.nodes())
        for peer in sorted(early):
            _say(_describe(NodeUp(peer)))
        if node.membership.enabled:
            nursery.start_soon(_print_membership, node)
        if node.election.enabled:
            nursery.start_soon(_print_leaders, node)
        async for event in events:
            if isinstance(event, NodeUp) and event.node in early:
                early.discard(event.node)
                continue
            early.discard(event.node)
            _say(_describe(event))


async def _print_membership(node: Node) -> None:
    async with node.membership.subscribe() as events:
        async for event in events:
            _say(_describe(event))


async def _print_leaders(node: Node) -> None:
    async with node.election.subscribe() as changes:
        # Joining (inside open_node) may already have found a leader: show
        # it, then every change after the subscription.
        current = node.election.leader
        if isinstance(current, Leader):
            _say(_describe(LeaderChanged(current.term, current.name)))
        async for change in changes:
            _say(_describe(change))


# ------------------------------------------------------------------- status


def _local_address_towards(host: str, port: int) -> str:
    """This machine's address on the route to ``host`` (no packet is sent:
    connecting a UDP socket only picks the route)."""
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise UserError(f"cannot resolve {host!r}: {exc.strerror}") from None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(infos[0][4])
        except OSError as exc:
            raise UserError(f"no route to {host}: {exc.strerror}") from None
        local: str = probe.getsockname()[0]
    return local


async def _status(args: argparse.Namespace, cookie: str) -> int:
    try:
        _, host, port = parse_target(args.node)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if host is None or port is None:
        raise UserError(f"--node {args.node!r} needs a port: host:port or name@host:port")
    local = args.host if args.host is not None else _local_address_towards(host, port)
    # A throwaway node that takes no part in membership or elections, named
    # after and bound to an address the target can answer.
    config = NodeConfig(
        membership=MembershipConfig(enabled=False),
        election=ElectionConfig(enabled=False),
        handshake_timeout=args.timeout,
    )
    name = f"status-{secrets.token_hex(3)}@{local}"
    try:
        validate_node_name(name)
    except ValueError:
        raise UserError(f"--host {local!r} is not an address a node can be named by") from None
    started = False
    try:
        async with open_node(name, cookie=cookie, host=local, config=config) as node:
            started = True
            with trio.fail_after(args.timeout + 1):
                peer = await node.connect(args.node)
                report = await node.rpc.call(peer, "trio_distribute.status", timeout=args.timeout)
    except OSError as exc:
        if started or isinstance(exc, DistributionError):
            raise
        raise _bind_error(exc, local, 0) from None
    except trio.TooSlowError:
        raise UserError(f"{args.node} did not answer within {args.timeout}s") from None
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        _print_status(report)
    return 0


def _print_status(report: dict[str, Any]) -> None:
    print(f"node {report['node']}: connected to {', '.join(report['connections']) or 'nobody'}")
    health = report["health"]
    print(
        f"leader {health['leader'] or '-'} (term {health['term']}), quorum {health['has_quorum']},"
        f" healthy {health['healthy']}, local health multiplier {health['health_multiplier']}"
    )
    print(
        f"members: {health['alive']} alive, {health['suspect']} suspect,"
        f" {health['dead']} dead, {health['left']} left"
    )
    if "members" in report:
        print(f"  {'name':<28}{'status':<9}{'inc':>5}{'rtt':>11}  connected")
        for member in report["members"]:
            rtt = "-" if member["rtt"] is None else f"{member['rtt'] * 1e6:.0f} us"
            mark = " (leader)" if member["name"] == health["leader"] else ""
            print(
                f"  {member['name']:<28}{member['status']:<9}{member['incarnation']:>5}"
                f"{rtt:>11}  {member['connected']}{mark}"
            )


# --------------------------------------------------------------------- main


def _user_errors(exc: BaseException) -> list[BaseException]:
    """The leaves of ``exc`` (exception groups flattened)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _user_errors(inner)]
    return [exc]


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "cookie":
        print(generate_cookie("urlsafe" if args.urlsafe else "hex"))
        return 0
    if args.command == "demo":
        trio.run(_demo.run, args.nodes)
        return 0
    # Every check that needs no network runs first, so a mistake is
    # reported before anything starts.
    cookie = _cookie(args)
    if args.command == "status":
        _setup_logging(args.log_level)
        return trio.run(_status, args, cookie)
    validate_node_name(args.name)
    setup = _node_setup(args)
    _setup_logging(args.log_level)
    trio.run(_run_node, args, cookie, setup)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m trio_distribute`` and ``trio-distribute``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        # Only outside a node's run (the node itself handles SIGINT).
        return 130
    except BaseException as exc:
        leaves = _user_errors(exc)
        if all(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
            return 130  # the same, wrapped by a nursery
        mistakes = (UserError, ValueError, DistributionError, OSError, trio.TooSlowError)
        if all(isinstance(leaf, mistakes) for leaf in leaves):
            first = leaves[0]
            text = str(first) or type(first).__name__
            print(f"{parser.prog}: error: {text}", file=sys.stderr)
            return EXIT_USAGE
        raise
