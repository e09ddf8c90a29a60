"""What the SWIM core tests share: the member statuses by short name and the
timers of a test core."""

from __future__ import annotations

from trio_distribute._proto.swim import MemberStatus
from trio_distribute.config import MembershipConfig

ALIVE, SUSPECT, DEAD, LEFT = (
    MemberStatus.ALIVE,
    MemberStatus.SUSPECT,
    MemberStatus.DEAD,
    MemberStatus.LEFT,
)

#: Probes once a second; push-pull and reconnects far away, so a test sees
#: only the probe and gossip it drives.
CONFIG = MembershipConfig(
    probe_interval=1.0,
    probe_timeout=0.5,
    indirect_checks=3,
    suspicion_mult=4,
    suspicion_max_timeout_mult=6,
    push_pull_interval=1000.0,
    reconnect_interval=1000.0,
)
