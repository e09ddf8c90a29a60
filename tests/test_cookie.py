"""The cookie: stretched into keys with scrypt, generated fresh by the CLI,
and a weak one is reported at start."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import io
import logging
import re
import string

import pytest

import trio_distribute as td
from trio_distribute import _cookie
from trio_distribute.__main__ import main
from trio_distribute._cookie import cookie_keys, cookie_weakness, generate_cookie
from trio_distribute.cluster.gossip import DatagramSealer
from trio_distribute.transport import PROTOCOL_VERSIONS

COOKIE = b"trio-distribute-test"


def test_protocol_version_2_is_the_only_one_spoken() -> None:
    # Version 1 keyed the handshake and datagram HMACs with the cookie itself.
    assert PROTOCOL_VERSIONS == (2,)


def test_the_datagram_key_is_stretched_from_the_cookie_with_scrypt() -> None:
    master = hashlib.scrypt(COOKIE, salt=b"trio_distribute cookie v2", n=2**14, r=8, p=1, dklen=32)
    key = hmac.new(master, b"trio_distribute membership datagram key v2", hashlib.sha256).digest()
    assert cookie_keys(COOKIE).datagram == key
    assert cookie_keys(COOKIE).handshake != key
    payload = b"\x81\x82\x01\x05"
    sealed = DatagramSealer(COOKIE).seal(payload)
    assert sealed == payload + hmac.new(key, payload, hashlib.sha256).digest()


def test_a_datagram_tagged_without_scrypt_is_refused() -> None:
    payload = b"\x81\x82\x01\x05"
    sealer = DatagramSealer(COOKIE)
    for key in (
        COOKIE,  # the cookie itself
        hmac.new(COOKIE, b"trio_distribute membership datagram v1", hashlib.sha256).digest(),  # v1
    ):
        assert sealer.open(payload + hmac.new(key, payload, hashlib.sha256).digest()) is None
    assert sealer.open(sealer.seal(payload)) == payload


def test_keys_are_derived_once_per_cookie() -> None:
    cookie = b"a cookie used by this test only, derived once"
    before = cookie_keys.cache_info()
    first = cookie_keys(cookie)
    assert cookie_keys(cookie) is first
    after = cookie_keys.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 1)
    assert "key" not in repr(first).lower().replace("cookiekeys", "")


def run_cli(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["cookie", *args]) == 0
    return out.getvalue()


def test_cli_prints_a_fresh_256_bit_hex_cookie() -> None:
    cookies = {run_cli().strip() for _ in range(5)}
    assert len(cookies) == 5  # fresh every time
    for cookie in cookies:
        assert re.fullmatch(r"[0-9a-f]{64}", cookie)
        assert cookie_weakness(cookie.encode()) is None


def test_cli_prints_a_fresh_256_bit_urlsafe_cookie() -> None:
    cookies = {run_cli("--urlsafe").strip() for _ in range(5)}
    assert len(cookies) == 5
    for cookie in cookies:
        assert len(cookie) == 43
        assert set(cookie) <= set(string.ascii_letters + string.digits + "-_")
        assert len(base64.urlsafe_b64decode(cookie + "=")) == 32
        assert cookie_weakness(cookie.encode()) is None


@pytest.mark.parametrize(
    ("cookie", "reason"),
    [
        (b"secret", "6 bytes long"),
        (b"0123456789abcde", "15 bytes long"),
        (b"a" * 64, "entropy is 0 bits"),
        (b"secretsecretsecretsecret", "entropy"),
    ],
)
def test_weak_cookies(cookie: bytes, reason: str) -> None:
    weakness = cookie_weakness(cookie)
    assert weakness is not None and reason in weakness


def test_strong_cookies() -> None:
    assert _cookie.MIN_COOKIE_BYTES == 16 and _cookie.MIN_COOKIE_BITS == 64
    for _ in range(50):
        assert cookie_weakness(generate_cookie().encode()) is None
        assert cookie_weakness(generate_cookie("urlsafe").encode()) is None
    # 16 distinct bytes: exactly at both limits.
    assert cookie_weakness(bytes(range(16))) is None
    assert cookie_weakness(bytes(range(15)) + b"\x00") is not None


WEAK = "the cookie is weak"


async def test_a_weak_cookie_logs_a_warning_at_start(caplog: pytest.LogCaptureFixture) -> None:
    config = td.NodeConfig.local()
    with caplog.at_level(logging.WARNING, logger="trio_distribute"):
        async with td.open_node("weak@127.0.0.1", cookie="secret", config=config):
            pass
    warnings = [r.getMessage() for r in caplog.records if WEAK in r.getMessage()]
    assert len(warnings) == 1
    assert "weak@127.0.0.1" in warnings[0] and "6 bytes long" in warnings[0]
    assert "secret" not in warnings[0].replace("weak@", "")  # the cookie is not logged


async def test_a_generated_cookie_logs_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    config = td.NodeConfig.local()
    with caplog.at_level(logging.WARNING, logger="trio_distribute"):
        async with td.open_node("strong@127.0.0.1", cookie=generate_cookie(), config=config):
            pass
    assert not [r for r in caplog.records if WEAK in r.getMessage()]
