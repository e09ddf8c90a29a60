"""deploy/: the compose file and the Kubernetes manifest parse and hold what
a cluster needs; the image's entrypoint runs ``node --help``. (No container
is built or started here: see docs/operations.rst.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="pyyaml is not installed (a test dependency)")

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
#: The node flags the deployment relies on (spelled as the CLI spells them).
FLAGS = ("--name", "--port", "--seed", "--expect", "--state-dir", "--cookie-file", "--metrics-port")


def flags_of(args: list[str]) -> dict[str, str]:
    assert args[0] == "node", args
    pairs = args[1:]
    assert len(pairs) % 2 == 0, args
    return dict(zip(pairs[::2], pairs[1::2], strict=True))


def test_compose_starts_five_nodes_that_find_each_other_by_dns() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert len(services) == 5
    names = set()
    for key, service in services.items():
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert "td-nodes" in service["networks"]["cluster"]["aliases"]
        assert service["secrets"] == ["cookie"]
        assert all(isinstance(arg, str) for arg in service["command"])
        flags = flags_of(service["command"])
        assert set(flags) == set(FLAGS)
        assert flags["--seed"] == "dns:td-nodes:4370"
        assert flags["--expect"] == "5"
        assert flags["--state-dir"] == "/data"
        assert flags["--cookie-file"] == "/run/secrets/cookie"
        # The name's host is the service's own DNS name: peers reach it there.
        short, _, host = flags["--name"].partition("@")
        assert host == service["hostname"] == key
        assert f"{key}-data:/data" in service["volumes"]
        assert service["ports"][0].endswith(":" + flags["--metrics-port"])
        names.add(short)
    assert len(names) == 5
    assert compose["secrets"]["cookie"]["file"] == "./cookie"
    assert set(compose["volumes"]) == {f"node{i}-data" for i in range(1, 6)}


def test_the_statefulset_and_its_headless_service() -> None:
    documents = list(
        yaml.safe_load_all((DEPLOY / "kubernetes" / "trio-distribute.yaml").read_text())
    )
    kinds = {doc["kind"]: doc for doc in documents}
    service, stateful = kinds["Service"], kinds["StatefulSet"]
    assert service["apiVersion"] == "v1" and stateful["apiVersion"] == "apps/v1"
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert {(p["port"], p["protocol"]) for p in service["spec"]["ports"]} >= {
        (4370, "TCP"),
        (4370, "UDP"),
    }
    spec = stateful["spec"]
    assert spec["serviceName"] == service["metadata"]["name"]
    assert spec["replicas"] == 5
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    (container,) = spec["template"]["spec"]["containers"]
    flags = flags_of(container["args"])
    assert set(flags) == set(FLAGS)
    assert flags["--seed"] == "dns:td-nodes.$(NAMESPACE).svc.cluster.local:4370"
    assert flags["--name"].startswith("$(POD_NAME)@$(POD_NAME).td-nodes.")
    assert flags["--expect"] == str(spec["replicas"])
    env = {e["name"] for e in container["env"]}
    assert env >= set(re.findall(r"\$\((\w+)\)", " ".join(container["args"])))
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["data"] == flags["--state-dir"]
    assert flags["--cookie-file"] == mounts["cookie"] + "/cookie"
    assert [t["metadata"]["name"] for t in spec["volumeClaimTemplates"]] == ["data"]
    ports = {(p["containerPort"], p["protocol"]) for p in container["ports"]}
    assert (int(flags["--metrics-port"]), "TCP") in ports and (4370, "UDP") in ports


def dockerfile_command() -> list[str]:
    text = (DEPLOY / "Dockerfile").read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT (.*)$", text, re.M).group(1))  # type: ignore[union-attr]
    cmd = json.loads(re.search(r"^CMD (.*)$", text, re.M).group(1))  # type: ignore[union-attr]
    result: list[str] = entry + cmd
    return result


def test_the_image_entrypoint_runs_node_help_and_knows_every_flag() -> None:
    command = dockerfile_command()
    assert command[:3] == ["python", "-m", "trio_distribute"]
    assert command[3:] == ["node", "--help"]
    root = str(DEPLOY.parent)
    out = subprocess.run(
        [sys.executable, *command[1:]],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
        env={"PYTHONPATH": root, "PATH": "/usr/bin:/bin"},
    ).stdout
    assert "--name" in out
    missing = [flag for flag in FLAGS if flag not in out]
    if "--seed" in missing:
        pytest.skip(f"this command line lacks {missing}: they come with the command-line rewrite")
    assert not missing, f"node --help does not know {missing}"
