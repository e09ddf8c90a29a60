"""Membership events are status changes: a metadata update is not a ``MemberUp``."""

from __future__ import annotations

import anyio
import pytest
from virtual import anyio_backend, fake_network, open_cluster

import trio_distribute as td
from trio_distribute.testing import wait_until

__all__ = ["anyio_backend", "fake_network"]  # fixtures


async def test_a_metadata_update_is_not_published_as_member_up() -> None:
    config = td.NodeConfig.local(metadata=b"role=db")
    with anyio.fail_after(20):
        async with open_cluster(["a", "b"], cookie="events", config=config) as (a, b):
            await wait_until(lambda: sorted(b.membership.alive()) == [a.name, b.name])
            async with b.membership.subscribe() as events:
                a.membership.update_metadata(b"role=cache")
                await wait_until(
                    lambda: getattr(b.membership.member(a.name), "metadata", None) == b"role=cache"
                )
                # Nothing else happened in the cluster meanwhile.
                assert events.statistics().current_buffer_used == 0
                with pytest.raises(anyio.WouldBlock):
                    events.receive_nowait()
