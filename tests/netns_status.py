"""``status`` against a node on another host, in private network namespaces.

Run by ``tests/test_cli.py`` inside ``unshare -n``: this namespace gets
10.99.0.1 on one end of a veth pair, a nested namespace gets 10.99.0.2 on
the other end and runs ``trio-distribute node`` there. ``status`` from here
must connect from 10.99.0.1 (a node bound to 127.0.0.1 cannot reach
another host). Prints ``STATUS OK`` and exits 0 when it does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

COOKIE = "netns-status-cookie-0123456789"
NODE = "n@10.99.0.2"
STATUS = [sys.executable, "-m", "trio_distribute", "status", "--node", "10.99.0.2:4370"]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


def main() -> None:
    ip("link", "set", "lo", "up")
    ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
    ip("addr", "add", "10.99.0.1/24", "dev", "v0")
    ip("link", "set", "v0", "up")
    env = {**os.environ, "TRIO_DISTRIBUTE_COOKIE": COOKIE}
    remote = subprocess.Popen(
        [
            "unshare", "-n", "sh", "-c",
            "until ip link show v1 >/dev/null 2>&1; do sleep 0.05; done;"
            " ip link set lo up && ip addr add 10.99.0.2/24 dev v1 && ip link set v1 up &&"
            f" exec {sys.executable} -m trio_distribute node --name {NODE} --port 4370 --local",
        ],
        env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        # Move v1 only once the child is in its own namespace (before that,
        # the move would leave it here).
        own = os.readlink("/proc/self/ns/net")
        while os.readlink(f"/proc/{remote.pid}/ns/net") == own:
            if time.monotonic() > deadline:
                sys.exit("the child never entered its namespace")
            time.sleep(0.02)
        ip("link", "set", "v1", "netns", str(remote.pid))
        while True:
            result = subprocess.run(
                [*STATUS, "--json", "--timeout", "2"],
                capture_output=True,
                text=True,
                env=env,
                check=False,
            )
            if result.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # the node may still be starting
        print(result.stdout, result.stderr, flush=True)
        if result.returncode != 0:
            sys.exit(1)
        report = json.loads(result.stdout)
        assert report["node"] == NODE, report
        assert any(c.endswith("@10.99.0.1") for c in report["connections"]), report
    finally:
        remote.send_signal(signal.SIGTERM)
        code = remote.wait(timeout=30)
    assert code == 0, code
    print("STATUS OK", flush=True)


if __name__ == "__main__":
    main()
