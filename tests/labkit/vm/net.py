"""The VM lab's network on the controller: its bridge, one tap per VM, and its isolation rules.

The controller holds 198.18.64.1/24 on bridge ``xfabvm0``; each VM's NIC is a
tap on it. iptables rules tagged ``xcatfab-vmlab`` accept bridged lab traffic
and drop anything a VM would send beyond the bridge or to any address of the
machine but 198.18.64.1 (DHCP broadcasts to the controller excepted), and
anything from elsewhere routed into the bridge. Nothing here touches the
machine's own interfaces, addresses or routes.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from ._shared import _run
from .config import BRIDGE, BRIDGE_MAC, CONTROLLER_IP, PREFIX, RULE_COMMENT, TAP_RE, VmHost


def link_names() -> list[str]:
    """Names of every network interface of the controller (``ip -j link``)."""
    return [link["ifname"] for link in json.loads(_run(["ip", "-j", "link", "show"]).stdout or "[]")]


def _disable_ipv6(ifname: str) -> None:
    """No IPv6 on the lab's links: the lab speaks IPv4 in 198.18.64.0/24 only."""
    Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6").write_text("1\n")


def make_bridge() -> None:
    """Create ``xfabvm0`` with the controller's lab address (no STP, no forward delay)."""
    _run(["ip", "link", "add", BRIDGE, "address", BRIDGE_MAC, "type", "bridge",
          "stp_state", "0", "forward_delay", "0"])
    _disable_ipv6(BRIDGE)
    _run(["ip", "addr", "add", f"{CONTROLLER_IP}/{PREFIX}", "dev", BRIDGE])
    _run(["ip", "link", "set", BRIDGE, "up"])


def make_tap(host: VmHost) -> None:
    """The VM's tap on the lab bridge (created once; QEMU opens it by name)."""
    if host.tap not in link_names():
        _run(["ip", "tuntap", "add", "dev", host.tap, "mode", "tap"])
        _disable_ipv6(host.tap)
    _run(["ip", "link", "set", host.tap, "master", BRIDGE, "up"])


def iptables_rules() -> list[list[str]]:
    """The lab's rules as ``iptables`` argument lists (chain first, without -A/-I)."""
    tag = ["-m", "comment", "--comment", RULE_COMMENT]
    return [
        # Bridged lab traffic (when br_netfilter is loaded) goes through FORWARD.
        ["FORWARD", "-i", BRIDGE, "-o", BRIDGE, *tag, "-j", "ACCEPT"],
        # The controller never routes VM traffic anywhere else, in either direction.
        ["FORWARD", "-i", BRIDGE, "!", "-o", BRIDGE, *tag, "-j", "DROP"],
        ["FORWARD", "!", "-i", BRIDGE, "-o", BRIDGE, *tag, "-j", "DROP"],
        # DHCP requests (broadcast) reach the lab's DHCP server when a scenario runs one.
        ["INPUT", "-i", BRIDGE, "-p", "udp", "--dport", "67", "-d", "255.255.255.255", *tag, "-j", "ACCEPT"],
        # Nor does a VM reach any other address of the machine.
        ["INPUT", "-i", BRIDGE, "!", "-d", CONTROLLER_IP, *tag, "-j", "DROP"],
    ]


def add_rules() -> None:
    """Insert the rules at the top of their chains, in order, ahead of anything else."""
    counters: dict[str, int] = {}
    for rule in iptables_rules():
        counters[rule[0]] = counters.get(rule[0], 0) + 1
        _run(["iptables", "-w", "-I", rule[0], str(counters[rule[0]]), *rule[1:]])


def present_rules() -> list[str]:
    """The lab's rules now present (``iptables -S`` lines carrying its comment)."""
    out = _run(["iptables", "-w", "-S"], check=False).stdout
    return [line for line in out.splitlines()
            if f"--comment {RULE_COMMENT}" in line or f'--comment "{RULE_COMMENT}"' in line]


def remove_rules() -> None:
    """Delete every rule carrying the lab's comment (and only those)."""
    for line in present_rules():
        args = shlex.split(line)
        if args and args[0] == "-A":
            _run(["iptables", "-w", "-D", *args[1:]], check=False)


def lab_links() -> list[str]:
    """The lab's links that exist now: its bridge and taps."""
    return [name for name in link_names() if name == BRIDGE or TAP_RE.match(name)]


def remove_links() -> None:
    """Delete the lab's taps and bridge (their addresses go with them)."""
    for name in sorted(lab_links(), key=lambda n: n == BRIDGE):
        _run(["ip", "link", "del", name], check=False)
