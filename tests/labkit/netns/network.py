"""The lab's network: the switch bridge, a namespace and veth pair per host, the isolation rules.

- :func:`make_bridge`: ``xfablab0`` in the root namespace, holding the
  controller's lab address 198.18.0.1/24, IPv6 off;
- :func:`make_netns`: namespace ``labN`` with ``eth0`` (one end of a veth
  pair, the other end ``labN-h`` a port of the bridge), its address, lo and a
  default route via the controller; :func:`make_uts` its hostname;
- :func:`add_iptables_rules`: the four root-namespace rules, tagged
  ``xcatfab-lab``, that keep lab traffic on the lab switch;
- :func:`reset_network` puts one host's network back as it was booted,
  :func:`remove_network` takes every namespace, link and rule of the lab away.

The machine's own interfaces, addresses and routes are never touched.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import Iterable

from ..common import LabError, run
from .hosts import BRIDGE, CONTROLLER_IP, LAB_NETNS_RE, PREFIX, RULE_COMMENT, RUN_DIR, VETH_RE, LabHost

#: Links a lab host keeps through a reset: anything else in its namespace goes.
KEPT_LINKS = ("lo", "eth0", "docker0")

# --------------------------------------------------------------------------- isolation rules


def iptables_rules() -> list[list[str]]:
    """The lab's rules as ``iptables`` argument lists (without -A/-I and chain)."""
    tag = ["-m", "comment", "--comment", RULE_COMMENT]
    return [
        # Bridged lab traffic (when br_netfilter is loaded) goes through FORWARD.
        ["FORWARD", "-i", BRIDGE, "-o", BRIDGE, *tag, "-j", "ACCEPT"],
        # The controller never routes lab traffic anywhere else, in either direction.
        ["FORWARD", "-i", BRIDGE, "!", "-o", BRIDGE, *tag, "-j", "DROP"],
        ["FORWARD", "!", "-i", BRIDGE, "-o", BRIDGE, *tag, "-j", "DROP"],
        # Nor does a lab host reach the machine's other addresses.
        ["INPUT", "-i", BRIDGE, "!", "-d", CONTROLLER_IP, *tag, "-j", "DROP"],
    ]


def add_iptables_rules() -> None:
    """Insert the lab's rules at the top of their chains."""
    # Inserted from the last so they end up first, in order, ahead of anything
    # else (a root-namespace Docker's FORWARD DROP policy, for one).
    counters: dict[str, int] = {}
    for rule in iptables_rules():
        counters[rule[0]] = counters.get(rule[0], 0) + 1
        run(["iptables", "-w", "-I", rule[0], str(counters[rule[0]]), *rule[1:]])


def lab_iptables_rules() -> list[str]:
    """The lab's rules now present (``iptables -S`` lines carrying the lab comment)."""
    out = run(["iptables", "-w", "-S"], check=False).stdout
    return [line for line in out.splitlines() if f"--comment {RULE_COMMENT}" in line
            or f'--comment "{RULE_COMMENT}"' in line]


def _remove_iptables_rules() -> None:
    for line in lab_iptables_rules():
        args = shlex.split(line)
        if args and args[0] == "-A":
            run(["iptables", "-w", "-D", *args[1:]], check=False)


# --------------------------------------------------------------------------- links and namespaces


def link_names() -> list[str]:
    """Names of the root namespace's links."""
    return [link["ifname"] for link in json.loads(run(["ip", "-j", "link", "show"]).stdout or "[]")]


def lab_netns_names() -> list[str]:
    """Names of the lab's network namespaces that exist now (``ip netns list``)."""
    try:
        out = run(["ip", "netns", "list"], check=False).stdout
    except LabError:
        return []
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if LAB_NETNS_RE.match(n)]


def netns_inodes(names: Iterable[str]) -> dict[int, str]:
    """Inode of each existing lab namespace's nsfs file -> namespace name."""
    inodes = {}
    for name in names:
        try:
            inodes[os.stat(f"/run/netns/{name}").st_ino] = name
        except OSError:
            pass
    return inodes


def _sysctl_disable_ipv6(ifname: str) -> None:
    Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6").write_text("1\n")


def make_bridge() -> None:
    """The lab switch with the controller's lab address."""
    # IPv6 off before the link is up, so it never gets a link-local address.
    run(["ip", "link", "add", BRIDGE, "address", "02:58:46:ff:00:01", "type", "bridge",
         "stp_state", "0", "forward_delay", "0"])
    _sysctl_disable_ipv6(BRIDGE)
    run(["ip", "addr", "add", f"{CONTROLLER_IP}/{PREFIX}", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])


def make_netns(host: LabHost) -> None:
    """Namespace, veth pair (eth0 inside), address, lo, default route, no IPv6."""
    run(["ip", "netns", "add", host.netns])
    host.in_netns("sh", "-c", "for f in all default lo; do echo 1 > /proc/sys/net/ipv6/conf/$f/disable_ipv6; done")
    run(["ip", "link", "add", host.veth, "address", host.veth_mac, "type", "veth",
         "peer", "name", "eth0", "address", host.mac, "netns", host.netns])
    _sysctl_disable_ipv6(host.veth)
    run(["ip", "link", "set", host.veth, "master", BRIDGE, "up"])
    batch = "\n".join([
        "link set lo up",
        f"addr add {host.host_ip} dev eth0",
        "link set eth0 up",
        f"route add default via {CONTROLLER_IP} dev eth0",
    ]) + "\n"
    host.in_netns("sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6")
    run(["ip", "-n", host.netns, "-batch", "-"], input=batch)


def prepare_uts_dir() -> None:
    """RUN_DIR/uts as a private bind mount, where the hosts' UTS namespaces are kept."""
    # Namespace files can only be bind-mounted onto a private mount (as ip netns does).
    uts = RUN_DIR / "uts"
    uts.mkdir(parents=True, exist_ok=True)
    run(["mount", "--bind", uts, uts])
    run(["mount", "--make-private", uts])


def make_uts(host: LabHost) -> None:
    """A UTS namespace with hostname ``host.name``, kept by a bind mount under RUN_DIR/uts."""
    run(["touch", host.uts_path])
    run(["unshare", f"--uts={host.uts_path}", "hostname", host.name])


def remove_network() -> None:
    """Delete the lab's namespaces, its veths and bridge, and its isolation rules."""
    for name in lab_netns_names():
        run(["ip", "netns", "del", name], check=False)
    for name in link_names():
        if name == BRIDGE or VETH_RE.match(name):
            run(["ip", "link", "del", name], check=False)
    _remove_iptables_rules()


# --------------------------------------------------------------------------- a host's firewall


def netns_iptables_save(host: LabHost) -> str:
    """``iptables-save`` of the host's namespace."""
    return run(["nsenter", f"--net={host.netns_path}", "--", "iptables-save"]).stdout


def normalized_rules(saved: str) -> list[str]:
    """An ``iptables-save`` text without comments and packet counters, for comparison."""
    return [re.sub(r" \[\d+:\d+\]$", "", line) for line in saved.splitlines()
            if line.strip() and not line.startswith("#")]


def save_boot_rules(host: LabHost) -> None:
    """Record the namespace's rules as dockerd made them (``reset_host`` restores these)."""
    host.iptables_boot.write_text(netns_iptables_save(host))


def restore_boot_rules(host: LabHost) -> None:
    """Firewall rules a step added in the host's namespace (DOCKER-USER, ...) go:
    back to what dockerd had made when the lab came up."""
    boot_rules = host.iptables_boot.read_text() if host.iptables_boot.is_file() else None
    if boot_rules is not None and normalized_rules(netns_iptables_save(host)) != normalized_rules(boot_rules):
        run(["nsenter", f"--net={host.netns_path}", "--", "iptables-restore", "-w"], input=boot_rules)


# --------------------------------------------------------------------------- a host's reset


def _ip_json(host: LabHost, *args: str) -> list:
    """``ip -n NETNS -j ARGS`` as parsed JSON."""
    return json.loads(run(["ip", "-n", host.netns, "-j", *args]).stdout or "[]")


def _unwind_commands(host: LabHost) -> list[str]:
    """``ip`` commands that undo a bridge move: the lab address off any other link,
    eth0 out of any bridge, every link but :data:`KEPT_LINKS` deleted."""
    links = _ip_json(host, "link", "show")
    addrs = _ip_json(host, "addr", "show")
    cmds = [f"addr del {a['local']}/{a['prefixlen']} dev {link['ifname']}"
            for link in addrs for a in link.get("addr_info", [])
            if a.get("family") == "inet" and a.get("local") == host.ip and link["ifname"] != "eth0"]
    cmds += ["link set eth0 nomaster" for link in links if link.get("master") and link["ifname"] == "eth0"]
    cmds += [f"link del {link['ifname']}" for link in links if link["ifname"] not in KEPT_LINKS]
    return cmds


def _restore_eth0_address(host: LabHost) -> None:
    """eth0 holds the lab address with the lab prefix, and no other IPv4 address."""
    eth0 = _ip_json(host, "addr", "show", "dev", "eth0")
    have = [a for link in eth0 for a in link.get("addr_info", []) if a.get("family") == "inet"]
    for a in have:
        if a["local"] != host.ip or a["prefixlen"] != PREFIX:
            run(["ip", "-n", host.netns, "addr", "del", f"{a['local']}/{a['prefixlen']}", "dev", "eth0"])
    if not any(a["local"] == host.ip and a["prefixlen"] == PREFIX for a in have):
        run(["ip", "-n", host.netns, "addr", "add", host.host_ip, "dev", "eth0"])


def _drop_added_routes(host: LabHost) -> None:
    """Every IPv4 route the kernel did not make goes, but the default route."""
    for route in _ip_json(host, "-4", "route", "show"):
        if route.get("protocol") != "kernel" and route["dst"] != "default":
            run(["ip", "-n", host.netns, "route", "del", route["dst"], "dev", route["dev"]], check=False)


def reset_network(host: LabHost) -> None:
    """Lab address back on eth0 with the default route; only lo, eth0 and docker0 remain."""
    for cmd in _unwind_commands(host):
        run(["ip", "-n", host.netns, *cmd.split()], check=False)
    _restore_eth0_address(host)
    run(["ip", "-n", host.netns, "link", "set", "eth0", "address", host.mac, "up"])
    _drop_added_routes(host)
    run(["ip", "-n", host.netns, "route", "replace", "default", "via", CONTROLLER_IP, "dev", "eth0"])
