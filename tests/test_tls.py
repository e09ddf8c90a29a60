"""TLS transport (mutual TLS), with the cookie check still running inside it."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import anyio
import attrs
import pytest

import trio_distribute as td

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None,
    reason="the openssl command is needed to make test certificates",
)

COOKIE = "tls-cookie"
FAST = td.NodeConfig.local()


@attrs.frozen
class Pki:
    ca: Path
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA and one certificate for 127.0.0.1, made with openssl."""
    d = tmp_path_factory.mktemp("pki")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "1", "-subj", "/CN=trio-distribute test CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "node.key", "-out", "node.csr",
        "-subj", "/CN=127.0.0.1")  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "node.pem", "-days", "1", "-extfile", "san.ext")  # fmt: skip
    return Pki(ca=d / "ca.pem", cert=d / "node.pem", key=d / "node.key")


def contexts(pki: Pki, *, with_cert: bool = True) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    server.load_cert_chain(pki.cert, pki.key)
    server.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: clients need a certificate
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    if with_cert:
        client.load_cert_chain(pki.cert, pki.key)
    return server, client


async def test_tls_nodes_connect_ping_and_message(pki: Pki) -> None:
    server, client = contexts(pki)
    with anyio.fail_after(10):
        async with (
            td.open_node(
                "a@127.0.0.1", cookie=COOKIE, config=FAST, ssl_context=server,
                client_ssl_context=client,
            ) as a,
            td.open_node(
                "b@127.0.0.1", cookie=COOKIE, config=FAST, ssl_context=server,
                client_ssl_context=client,
            ) as b,
        ):  # fmt: skip
            assert await a.connect(f"b@127.0.0.1:{b.address[1]}") == "b@127.0.0.1"
            assert await a.ping("b@127.0.0.1") > 0
            async with b.open_process() as proc:
                for i in range(100):
                    await a.send(proc.pid, i)
                assert [await proc.receive() for _ in range(100)] == list(range(100))


async def test_tls_still_checks_the_cookie(pki: Pki) -> None:
    server, client = contexts(pki)
    with anyio.fail_after(10):
        async with (
            td.open_node("a@127.0.0.1", cookie=COOKIE, config=FAST, ssl_context=server,
                         client_ssl_context=client) as a,
            td.open_node("b@127.0.0.1", cookie="wrong", config=FAST, ssl_context=server,
                         client_ssl_context=client) as b,
        ):  # fmt: skip
            with pytest.raises(td.AuthenticationError):
                await b.connect(f"a@127.0.0.1:{a.address[1]}")
            assert a.nodes() == []


async def test_plain_and_tls_nodes_cannot_talk(pki: Pki) -> None:
    server, client = contexts(pki)
    with anyio.fail_after(10):
        async with (
            td.open_node("a@127.0.0.1", cookie=COOKIE, config=FAST, ssl_context=server,
                         client_ssl_context=client) as tls_node,
            td.open_node("b@127.0.0.1", cookie=COOKIE, config=FAST) as plain,
        ):  # fmt: skip
            with pytest.raises(td.ConnectError):
                await plain.connect(f"a@127.0.0.1:{tls_node.address[1]}")
            with pytest.raises(td.ConnectError):
                await tls_node.connect(f"b@127.0.0.1:{plain.address[1]}")
            assert tls_node.nodes() == [] and plain.nodes() == []


async def test_mutual_tls_refuses_a_client_without_a_certificate(pki: Pki) -> None:
    server, client = contexts(pki)
    _, anonymous = contexts(pki, with_cert=False)
    with anyio.fail_after(10):
        async with (
            td.open_node("a@127.0.0.1", cookie=COOKIE, config=FAST, ssl_context=server,
                         client_ssl_context=client) as a,
            td.open_node("b@127.0.0.1", cookie=COOKIE, config=FAST, ssl_context=server,
                         client_ssl_context=anonymous) as b,
        ):  # fmt: skip
            with pytest.raises(td.ConnectError):
                await b.connect(f"a@127.0.0.1:{a.address[1]}")
            assert a.nodes() == []
