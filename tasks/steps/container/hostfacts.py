"""The ``container`` fact fragment (templates/host/facts/container.sh.j2): its one parser.

What xcatfab keeps for the container on the host (its /etc files, the data
directories), the netns watcher whatever the mode (so a mode switch finds the
old mode's pieces), and the running container seen from the host: whether
xcatd listens on 3001, its loop devices, its addresses and MACs.
"""

from __future__ import annotations

from ...runtime.facts import Facts
from ..hostnet import ipv4, is_up, links, routes
from .spec import container_ip, shim_name


def etc_file(facts: Facts, name: str) -> str:
    """The host's copy of the container's /etc file ``name`` ('' when absent)."""
    return facts.text(f"container.{'resolv' if name == 'resolv.conf' else name}")


def missing_dirs(facts: Facts) -> list[str]:
    return [line.split("=", 1)[1] for line in facts.lines("container.dirs") if line.startswith("missing=")]


def empty_dirs(facts: Facts) -> list[str]:
    return [line.split("=", 1)[1] for line in facts.lines("container.dirs") if line.startswith("empty=")]


def watcher(facts: Facts) -> dict:
    """The netns watcher: ``unit`` (systemd state), ``enabled``, ``pid``, ``attach_sha``, ``watch_script``."""
    return facts.kv("container.watcher")


def watcher_left(facts: Facts) -> bool:
    """True when any piece of a netns watcher is on the host (running, enabled, or its scripts)."""
    state = watcher(facts)
    return bool(state.get("pid") or state.get("enabled") or state.get("attach_sha") or state.get("watch_script")
                or state.get("unit") in ("active", "activating"))


def running_pid(facts: Facts) -> int:
    """The container's PID (0: not running)."""
    pid = facts.kv("container.pid").get("pid", "")
    return int(pid) if pid.isdigit() else 0


def xcatd_listening(facts: Facts) -> bool:
    return facts.kv("ctr.ready").get("xcatd") == "up"


def loop_devices(facts: Facts) -> int:
    """Loop device nodes in the container's /dev."""
    count = facts.kv("ctr.ready").get("loops", "0")
    return int(count) if count.isdigit() else 0


def container_links(facts: Facts) -> list:
    return facts.json("ctr.addrs", default=[]) or []


def container_addresses(facts: Facts) -> list:
    """IPv4 addresses inside the container, read from the host with nsenter."""
    return [address for link in container_links(facts) for address in ipv4(link)]


def mac_of(facts: Facts, cfg) -> str:
    """The MAC of the container's link that holds its static address ('' when none does)."""
    for link in container_links(facts):
        if cfg.container_ip in ipv4(link):
            return (link.get("address") or "").lower()
    return ""


def shim_ok(cfg, facts: Facts) -> bool:
    """The macvlan shim is up on the bridge with its own address and the route to the container."""
    link = links(facts).get(shim_name(cfg))
    if not link or not is_up(link) or link.get("link") != cfg.bridge:
        return False
    if [str(a) for a in ipv4(link)] != [f"{cfg.macvlan_shim_ip}/32"]:
        return False
    return any(r.get("dst") == container_ip(cfg) and r.get("dev") == shim_name(cfg) for r in routes(facts))
