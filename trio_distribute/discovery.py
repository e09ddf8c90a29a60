"""Discovery: where a node finds the others, for as long as it runs.

``open_node(..., seeds=...)`` takes plain ``"host:port"`` (or
``"name@host:port"``) seeds, joined on start as before, and discovery
strategies, given as objects or as strings:

* ``"dns:NAME:PORT"`` -- :class:`DnsDiscovery`: the A/AAAA records of
  ``NAME``, every address found a seed on ``PORT`` (a Kubernetes headless
  service, a compose service name).
* ``"dns-srv:_service._tcp.NAME"`` -- :class:`DnsSrvDiscovery`: the SRV
  records of that name (target and port of each), queried with a small DNS
  client of our own over UDP (no resolver library needed).
* ``"file:PATH"`` -- :class:`FileDiscovery`: one ``host:port`` a line,
  re-read when the file changes.
* anything that implements :class:`Discovery` (a cloud API, a static list).

Each strategy is polled every ``interval`` seconds for the node's lifetime.
An address this node is not connected to is dialled; connecting to a node
joins its cluster (membership exchanges full state), so nodes that appear
later are joined. A poll or a dial that fails is logged (one line per
strategy and kind of failure per ``LOG_INTERVAL``), published as a
:class:`~trio_distribute.telemetry.DiscoveryFailed` event and retried at the
next poll; it never ends the node.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import struct
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

import anyio
import anyio.lowlevel
import attrs
from attrs import validators as v

from ._addresses import split_host_port
from ._ratelimit import LogLimiter
from .errors import ConnectError, HandshakeError
from .telemetry import DiscoveryFailed, DiscoveryJoined

if TYPE_CHECKING:
    from .transport import Transport

__all__ = [
    "Discovery",
    "DnsDiscovery",
    "DnsSrvDiscovery",
    "FileDiscovery",
    "parse_seed",
    "run_discovery",
    "split_seeds",
]

logger = logging.getLogger("trio_distribute.discovery")

#: At most one log line per strategy and kind of failure this often (s).
LOG_INTERVAL: Final = 10.0
#: Default cap on the addresses taken from one poll (the rest are ignored
#: and counted as ``discovery_addresses_ignored``).
DEFAULT_MAX_ADDRESSES: Final = 256
#: The largest seed file read (bytes); a longer file is read up to this.
MAX_FILE_BYTES: Final = 1 << 20


def _positive(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{attribute.name} must be a positive number, got {value!r}")


def _count(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if type(value) is not int or value < 1:
        raise ValueError(f"{attribute.name} must be an int of at least 1, got {value!r}")


@runtime_checkable
class Discovery(Protocol):
    """What a discovery strategy implements.

    ``addresses()`` returns the ``"host:port"`` (or ``"name@host:port"``)
    addresses of the nodes it knows now; it is called every ``interval``
    seconds for the node's lifetime, and at most ``max_addresses`` of what
    it returns are used. An exception it raises is logged and the next
    poll tries again.
    """

    @property
    def interval(self) -> float: ...

    @property
    def max_addresses(self) -> int: ...

    async def addresses(self) -> Collection[str]: ...


@attrs.frozen
class DnsDiscovery:
    """Every A/AAAA address of ``name`` is a node listening on ``port``.

    Attributes:
        name: the DNS name (a headless service, a compose service name).
        port: the nodes' port.
        interval: seconds between lookups (default 5).
        max_addresses: addresses used from one lookup (default 256).
    """

    name: str = attrs.field(validator=v.and_(v.instance_of(str), v.min_len(1)))
    port: int = attrs.field(validator=v.and_(v.instance_of(int), v.gt(0), v.lt(65536)))
    interval: float = attrs.field(default=5.0, validator=_positive)
    max_addresses: int = attrs.field(default=DEFAULT_MAX_ADDRESSES, validator=_count)

    async def addresses(self) -> list[str]:
        # Looked up through the module attribute so a test can install a
        # resolver it controls.
        infos = await anyio.getaddrinfo(self.name, self.port, type=socket.SOCK_STREAM)
        found: dict[str, None] = {}
        for _family, _type, _proto, _canon, sockaddr in infos:
            found[f"{sockaddr[0]}:{sockaddr[1]}"] = None
        return list(found)

    def __str__(self) -> str:
        return f"dns:{self.name}:{self.port}"


@attrs.frozen
class DnsSrvDiscovery:
    """The SRV records of ``service`` (``_name._tcp.domain``): each record's
    target, resolved to its addresses, on the record's port.

    The query goes over UDP to ``nameserver`` (default: the first
    ``nameserver`` of ``/etc/resolv.conf``) without EDNS, so answers are
    limited to 512 bytes (a truncated answer is used as far as it goes).

    Attributes:
        service: the SRV name.
        nameserver: ``"host"`` or ``"host:port"`` of the DNS server to ask.
        interval: seconds between lookups (default 5).
        timeout: seconds to wait for an answer (default 2).
        max_addresses: addresses used from one lookup (default 256).
    """

    service: str = attrs.field(validator=v.and_(v.instance_of(str), v.min_len(1)))
    nameserver: str | None = attrs.field(default=None, validator=v.optional(v.instance_of(str)))
    interval: float = attrs.field(default=5.0, validator=_positive)
    timeout: float = attrs.field(default=2.0, validator=_positive)
    max_addresses: int = attrs.field(default=DEFAULT_MAX_ADDRESSES, validator=_count)

    async def addresses(self) -> list[str]:
        host, port = _nameserver(self.nameserver)
        records = await query_srv(self.service, host, port, timeout=self.timeout)
        found: dict[str, None] = {}
        for _priority, _weight, target_port, target in sorted(records):
            infos = await anyio.getaddrinfo(target, target_port, type=socket.SOCK_STREAM)
            for _family, _type, _proto, _canon, sockaddr in infos:
                found[f"{sockaddr[0]}:{sockaddr[1]}"] = None
        return list(found)

    def __str__(self) -> str:
        return f"dns-srv:{self.service}"


@attrs.frozen
class FileDiscovery:
    """A file of ``host:port`` addresses, one a line (blank lines and lines
    starting with ``#`` are ignored), re-read when it changes. A missing
    file is an empty list (logged), so the file may be written later.

    Attributes:
        path: the file.
        interval: seconds between checks for a change (default 1).
        max_addresses: addresses used from the file (default 256).
    """

    path: Path = attrs.field(converter=Path)
    interval: float = attrs.field(default=1.0, validator=_positive)
    max_addresses: int = attrs.field(default=DEFAULT_MAX_ADDRESSES, validator=_count)
    # (stat signature, addresses) of the last read: re-read only on change.
    _cache: list[tuple[tuple[int, int, int], list[str]]] = attrs.field(
        factory=list, eq=False, repr=False, init=False
    )

    async def addresses(self) -> list[str]:
        await anyio.lowlevel.checkpoint()
        stat = os.stat(self.path)  # a missing file raises: logged, retried
        signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if self._cache and self._cache[0][0] == signature:
            return self._cache[0][1]
        # A small local file: read in place (the node's loop waits on it
        # for about as long as on a stat).
        text = _read_head(self.path)
        found = [
            line.strip()
            for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")
        ]
        self._cache[:] = [(signature, found)]
        return found

    def __str__(self) -> str:
        return f"file:{self.path}"


def _read_head(path: Path) -> str:
    with open(path, "rb") as file:
        return file.read(MAX_FILE_BYTES).decode("utf-8", "replace")


def parse_seed(seed: str | Discovery) -> str | Discovery:
    """A seed as ``open_node`` takes it: a ``dns:``, ``dns-srv:`` or
    ``file:`` string becomes its strategy; a plain address or a strategy
    object is returned as it is.

    Raises:
        ValueError: a ``dns:`` seed without ``NAME:PORT``, or a seed that
            is neither a string nor a :class:`Discovery`.
    """
    if not isinstance(seed, str):
        if isinstance(seed, Discovery):
            return seed
        raise ValueError(f"a seed is 'host:port', a discovery URI or a Discovery, got {seed!r}")
    scheme, colon, rest = seed.partition(":")
    if not colon or rest.isdigit():
        return seed  # "host:port", including a host called "dns" or "file"
    if scheme == "dns":
        parsed = split_host_port(rest)
        if parsed is None:
            raise ValueError(f"a DNS seed is 'dns:NAME:PORT', got {seed!r}")
        return DnsDiscovery(*parsed)
    if scheme == "dns-srv":
        return DnsSrvDiscovery(rest)
    if scheme == "file":
        return FileDiscovery(rest)
    return seed


def split_seeds(seeds: Iterable[str | Discovery]) -> tuple[list[str], list[Discovery]]:
    """Plain addresses and discovery strategies, each in the order given."""
    plain: list[str] = []
    strategies: list[Discovery] = []
    for seed in seeds:
        parsed = parse_seed(seed)
        if isinstance(parsed, str):
            plain.append(parsed)
        else:
            strategies.append(parsed)
    return plain, strategies


async def run_discovery(transport: Transport, strategy: Discovery) -> None:
    """Poll ``strategy`` and connect to every address found that this node
    is not connected to, until cancelled (the node stops)."""
    source = str(strategy)
    limiter = LogLimiter(logger, interval=LOG_INTERVAL)
    # address -> the node found there (this node's own name for itself).
    known: dict[str, str] = {}

    def failed(kind: str, error: str) -> None:
        transport.on_event(DiscoveryFailed(source, error))
        limiter.warning(kind, "%s: discovery %s: %s (retrying)", transport.name, source, error)

    def wanted(address: str) -> bool:
        if address not in known and address == "{}:{}".format(*transport.address):
            known[address] = transport.name  # ourselves, bound to that address
        name = known.get(address)
        if name is None:
            return True
        return not (
            name == transport.name
            or transport.is_connected(name)
            or transport.was_disconnected(name)
            or transport.is_blocked(name)
        )

    async def join(address: str) -> None:
        try:
            name = await transport.connect(address)
        except HandshakeError as exc:
            if "our own name" in str(exc):
                known[address] = transport.name  # this node: never dial it again
                return
            failed("connect", f"{address}: {exc}")
        except (ConnectError, ValueError) as exc:
            failed("connect", f"{address}: {exc}")
        else:
            if known.get(address) != name:
                logger.info(
                    "%s: discovery %s found %s at %s", transport.name, source, name, address
                )
                transport.on_event(DiscoveryJoined(source, address, name))
            known[address] = name

    while True:
        try:
            found = list(await strategy.addresses())
        except Exception as exc:  # a strategy of any kind must not end the node
            failed("poll", f"{type(exc).__name__}: {exc}")
        else:
            cap = strategy.max_addresses
            if len(found) > cap:
                for _ in range(len(found) - cap):
                    transport.count_drop("discovery_addresses_ignored")
                limiter.warning(
                    "cap",
                    "%s: discovery %s: %d addresses, using %d",
                    transport.name,
                    source,
                    len(found),
                    cap,
                )
                found = found[:cap]
            async with anyio.create_task_group() as task_group:
                for address in dict.fromkeys(found):
                    if wanted(address):
                        task_group.start_soon(join, address)
        await anyio.sleep(strategy.interval)


# ----------------------------------------------------------- a small DNS client

_SRV: Final = 33
_IN: Final = 1
#: Compression pointers followed in one name before it is called malformed.
_MAX_POINTERS: Final = 32


def _nameserver(configured: str | None) -> tuple[str, int]:
    text = configured
    if text is None:
        try:
            with open("/etc/resolv.conf") as file:
                for line in file:
                    parts = line.split()
                    if len(parts) >= 2 and parts[0] == "nameserver":
                        text = parts[1]
                        break
        except OSError:
            pass
    if text is None:
        raise OSError("no nameserver configured (and none in /etc/resolv.conf)")
    host, colon, port = text.rpartition(":")
    if colon and port.isdigit() and (host.count(":") == 0 or host.startswith("[")):
        return host.strip("[]"), int(port)
    return text, 53


def build_query(query_id: int, name: str, qtype: int = _SRV) -> bytes:
    """A DNS query for ``name`` (recursion desired)."""
    header = struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0)
    question = b"".join(
        bytes([len(label)]) + label
        for label in (part.encode("idna") for part in name.rstrip(".").split("."))
    )
    return header + question + b"\x00" + struct.pack("!HH", qtype, _IN)


def _read_name(data: bytes, offset: int) -> tuple[str, int]:
    """The name at ``offset`` and the offset just after it (in place)."""
    labels: list[str] = []
    end = -1
    for _ in range(_MAX_POINTERS):
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if end < 0:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            continue
        if length == 0:
            return ".".join(labels), (offset + 1 if end < 0 else end)
        labels.append(data[offset + 1 : offset + 1 + length].decode("ascii", "replace"))
        offset += 1 + length
    raise ValueError("DNS name with too many compression pointers")


def parse_srv_answer(data: bytes, query_id: int) -> list[tuple[int, int, int, str]]:
    """``[(priority, weight, port, target), ...]`` from a DNS answer.

    Raises:
        ValueError: not an answer to ``query_id``, an error rcode, or malformed.
    """
    try:
        qid, flags, qdcount, ancount, _ns, _ar = struct.unpack_from("!HHHHHH", data)
        if qid != query_id or not flags & 0x8000:
            raise ValueError("not the answer to our query")
        rcode = flags & 0xF
        if rcode == 3:
            return []  # NXDOMAIN: no such service (yet)
        if rcode:
            raise ValueError(f"DNS error rcode {rcode}")
        offset = 12
        for _ in range(qdcount):
            _, offset = _read_name(data, offset)
            offset += 4
        records: list[tuple[int, int, int, str]] = []
        for _ in range(ancount):
            _, offset = _read_name(data, offset)
            rtype, _rclass, _ttl, length = struct.unpack_from("!HHIH", data, offset)
            offset += 10
            if rtype == _SRV:
                priority, weight, port = struct.unpack_from("!HHH", data, offset)
                target, _ = _read_name(data, offset + 6)
                records.append((priority, weight, port, target))
            offset += length
        return records
    except (struct.error, IndexError) as exc:
        raise ValueError(f"malformed DNS answer: {exc}") from None


async def query_srv(
    service: str, host: str, port: int = 53, *, timeout: float = 2.0
) -> list[tuple[int, int, int, str]]:
    """Ask ``host:port`` for the SRV records of ``service``.

    Raises:
        TimeoutError: no answer within ``timeout``.
        ValueError: the answer is an error or malformed.
    """
    query_id = secrets.randbelow(65536)
    async with await anyio.create_connected_udp_socket(host, port) as sock:
        await sock.send(build_query(query_id, service))
        with anyio.fail_after(timeout):
            while True:
                data = await sock.receive()
                if len(data) >= 2 and struct.unpack_from("!H", data)[0] == query_id:
                    return parse_srv_answer(data, query_id)
