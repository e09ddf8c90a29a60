"""TLS around a node's connections (``ssl_context``, ``client_ssl_context``).

The transport wraps the stream its network gave it, on both sides, before
the distribution handshake runs inside it; everything after (the cookie
handshake, frames) is the same with or without TLS. Connections skip TLS's
closing handshake (anyio's ``standard_compatible=False``): the protocol
says goodbye in its own frames, and a peer that closes without TLS's
close_notify is an ordinary end of the connection, not an attack on it.
"""

from __future__ import annotations

import ssl

import anyio
import anyio.abc
from anyio.streams.tls import TLSStream

__all__ = ["TLS_HANDSHAKE_ERRORS", "client_side", "server_side"]

#: What a TLS handshake that fails (a bad certificate, a peer that speaks
#: no TLS, a socket closed halfway) raises.
TLS_HANDSHAKE_ERRORS = (ssl.SSLError, anyio.BrokenResourceError, anyio.EndOfStream)


async def client_side(
    stream: anyio.abc.ByteStream, *, hostname: str, context: ssl.SSLContext
) -> anyio.abc.ByteStream:
    """``stream`` (just dialled) with TLS on top, as the client that
    checks ``hostname``; ``stream`` is closed if the TLS handshake fails."""
    try:
        return await TLSStream.wrap(
            stream,
            server_side=False,
            hostname=hostname,
            ssl_context=context,
            standard_compatible=False,
        )
    except BaseException:
        await anyio.aclose_forcefully(stream)
        raise


async def server_side(
    stream: anyio.abc.ByteStream, *, context: ssl.SSLContext
) -> anyio.abc.ByteStream:
    """``stream`` (just accepted) with TLS on top, as the server. On
    failure the caller closes ``stream`` (it holds a handshake slot)."""
    return await TLSStream.wrap(
        stream, server_side=True, ssl_context=context, standard_compatible=False
    )
