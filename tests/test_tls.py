"""TLS transport (mutual TLS), with the cookie check still running inside it."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from contextlib import AbstractAsyncContextManager
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


def tls_node(
    name: str, server: ssl.SSLContext, client: ssl.SSLContext, *, cookie: str = COOKIE
) -> AbstractAsyncContextManager[td.Node]:
    return td.open_node(
        f"{name}@127.0.0.1",
        cookie=cookie,
        config=FAST,
        ssl_context=server,
        client_ssl_context=client,
    )


async def test_tls_nodes_connect_ping_and_message(pki: Pki) -> None:
    server, client = contexts(pki)
    with anyio.fail_after(10):
        async with (
            tls_node("a", server, client) as a,
            tls_node("b", server, client) as b,
        ):
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
            tls_node("a", server, client) as a,
            tls_node("b", server, client, cookie="wrong") as b,
        ):
            with pytest.raises(td.AuthenticationError):
                await b.connect(f"a@127.0.0.1:{a.address[1]}")
            assert a.nodes() == []


async def test_plain_and_tls_nodes_cannot_talk(pki: Pki) -> None:
    server, client = contexts(pki)
    with anyio.fail_after(10):
        async with (
            tls_node("a", server, client) as secure,
            td.open_node("b@127.0.0.1", cookie=COOKIE, config=FAST) as plain,
        ):
            with pytest.raises(td.ConnectError):
                await plain.connect(f"a@127.0.0.1:{secure.address[1]}")
            with pytest.raises(td.ConnectError):
                await secure.connect(f"b@127.0.0.1:{plain.address[1]}")
            assert secure.nodes() == [] and plain.nodes() == []


async def test_mutual_tls_refuses_a_client_without_a_certificate(pki: Pki) -> None:
    server, client = contexts(pki)
    _, anonymous = contexts(pki, with_cert=False)
    with anyio.fail_after(10):
        async with (
            tls_node("a", server, client) as a,
            tls_node("b", server, anonymous) as b,
        ):
            with pytest.raises(td.ConnectError):
                await b.connect(f"a@127.0.0.1:{a.address[1]}")
            assert a.nodes() == []
