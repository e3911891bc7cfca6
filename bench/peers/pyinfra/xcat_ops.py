"""pyinfra facts and operations for what pyinfra has no operation for.

pyinfra 3 has no bridge operation and no xCAT operation, so a pyinfra user
writes their own, the way pyinfra's own operations are written: a fact reads
the state, the operation yields commands only when the state differs (run at
execution time, so the facts are read after the earlier operations ran).
"""

from __future__ import annotations

import json
import shlex

from pyinfra import host
from pyinfra.api import FactBase, operation


class NetState(FactBase):
    """Links (``ip -j -d addr``) and the IPv4 default route(s), as one JSON object."""

    def command(self):
        return ("printf '{\"links\": %s, \"routes\": %s}' "
                "\"$(ip -j -d addr show)\" \"$(ip -j -4 route show default)\"")

    def process(self, output):
        return json.loads("".join(output))


class XcatSite(FactBase):
    """xCAT's site table as a dict (waits up to 60 s for xcatd after a fresh start)."""

    def command(self, container):
        c = shlex.quote(container)
        return (f"for i in $(seq 60); do out=$(docker exec {c} /opt/xcat/sbin/tabdump site 2>&1) "
                "&& { printf '%s\\n' \"$out\"; exit 0; }; sleep 1; done; "
                "printf '%s\\n' \"$out\" >&2; exit 1")

    def process(self, output):
        values = {}
        for line in output:
            if line.startswith('"'):
                fields = line.split('","')
                if len(fields) >= 2:
                    values[fields[0].strip('"')] = fields[1].split('"')[0]
        return values


class XcatNetworks(FactBase):
    """xCAT's networks table: the (net, mask) of every entry."""

    def command(self, container):
        c = shlex.quote(container)
        return f"docker exec {c} /opt/xcat/sbin/tabdump networks"

    def process(self, output):
        present = []
        for line in output:
            if line.startswith('"'):
                fields = line.split('","')
                if len(fields) >= 3:
                    present.append((fields[1], fields[2].split('"')[0]))
        return present


def _inet(link):
    return [a for a in link.get("addr_info", []) if a.get("family") == "inet"]


@operation()
def bridge(bridge, iface, address, gateway=""):
    """``address`` (CIDR) on ``bridge`` with ``iface`` enslaved, STP off, the default route on it."""
    state = host.get_fact(NetState)
    links = {link["ifname"]: link for link in state["links"]}
    nic = links[iface]
    name = bridge
    br = links.get(name, {})
    info = br.get("linkinfo", {})
    data = info.get("info_data", {}) if info.get("info_kind") == "bridge" else {}
    converged = (
        bool(data)
        and nic.get("master") == name
        and br.get("address") == nic.get("address")
        and data.get("stp_state", 1) == 0
        and data.get("forward_delay", 1) == 0
        and "UP" in br.get("flags", [])
        and address.split("/")[0] in [a["local"] for a in _inet(br)]
        and not _inet(nic)
        and (not gateway or any(r.get("dev") == name for r in state["routes"]))
    )
    if converged:
        host.noop(f"{address} is on {name}")
        return
    lines = [
        "set -e",
        f"ip link show dev {name} >/dev/null 2>&1 || ip link add name {name} type bridge",
        f"ip link set dev {name} address {nic['address']}",
        f"ip link set dev {name} type bridge stp_state 0 forward_delay 0",
    ]
    lines += [f"ip addr del {a['local']}/{a['prefixlen']} dev {iface} || true" for a in _inet(nic)]
    lines += [
        f"ip link set dev {iface} master {name}",
        f"ip link set dev {name} up",
        f"ip addr replace {address} dev {name}",
    ]
    if gateway:
        lines.append(f"ip route replace default via {gateway} dev {name}")
    # One command line: the SSH session survives the address moving under it.
    yield "; ".join(lines)


@operation()
def xcat_site(container, values):
    """Set site-table ``values`` (key -> value) with chdef, only those that differ."""
    have = host.get_fact(XcatSite, container=container)
    changes = {k: v for k, v in values.items() if have.get(k) != v}
    if not changes:
        host.noop("site table is set")
        return
    args = " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(changes.items()))
    yield f"docker exec {shlex.quote(container)} /opt/xcat/bin/chdef -t site {args}"


@operation()
def xcat_networks(container, entries):
    """A networks entry (mkdef -t network) for each of ``entries`` whose net/mask has none."""
    present = set(host.get_fact(XcatNetworks, container=container))
    missing = [e for e in entries if (e["net"], e["mask"]) not in present]
    if not missing:
        host.noop("networks table has the entries")
        return
    for e in missing:
        args = " ".join(shlex.quote(f"{k}={e[k]}") for k in ("net", "mask", "gateway", "mgtifname", "usercomment"))
        yield (f"docker exec {shlex.quote(container)} /opt/xcat/bin/mkdef -t network "
               f"-o {shlex.quote(e['netname'])} {args}")
