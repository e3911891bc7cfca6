"""Step ``xcat-config``: xCAT inside the container knows its static address — and nothing else changes.

The guide's "Configure xCAT Service" sets the site table's ``master`` and
``nameservers`` to the container's address and recreates the networks table
with ``makenetworks``. xCAT's tables are the admin's data, so xcatfab owns
exactly what its inputs determine, and nothing more:

* site ``master`` and ``nameservers`` (the container's static address) and
  ``domain`` (the domain of ``container_fqdn``): an admin's edit of one of
  these is shown by ``--plan`` and set back by ``deploy``, saying so;
* a networks entry for each subnet the container is on: created when the
  table has no entry for that net/mask (named as makenetworks names it, with
  the gateway and the container's interface, and ``usercomment=xcatfab``);
  an entry xcatfab created for a subnet the container has left is removed.

Every other site key, every other networks entry and every other column of
an entry (``dynamicrange``, ``dhcpserver``, ``tftpserver`` ...), node
definitions and passwd entries are never touched: no table is ever emptied,
here or in the image's entrypoint, so they survive restarts, reboots,
redeploys and image upgrades. Changes are made from outside with xCAT's own
commands (``chdef -t site``, ``mkdef``/``rmdef -t network``), which work with
any xCAT image.

Facts come from the container fragment (``tabdump site`` and ``tabdump
networks`` in one ``docker exec``, skipped when the tables' files have not
changed since xcatfab last verified them: a controller-side stamp).
"""

from __future__ import annotations

import csv
import hashlib
import io
import ipaddress
import json

from ..runtime.cache import Cache, make_key
from ..runtime.facts import Facts
from .base import Action, Step, StepFailed, blocked, refuse_blocked
from .container import container_ip
from .container.hostfacts import container_links
from .hostnet import gateway_for, ipv4

#: The usercomment (networks.comments) of the entries xcatfab creates, and may remove.
OWNED_MARK = "xcatfab"
#: The site keys xcatfab owns.
SITE_KEYS = ("master", "nameservers", "domain")


def parse_tabdump(text: str) -> list[dict]:
    """``tabdump`` CSV (``#col,col,...`` header) -> list of row dicts."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("#"):
        return []
    reader = csv.reader(io.StringIO("\n".join(lines)))
    header = next(reader)
    header[0] = header[0].lstrip("#")
    return [dict(zip(header, row)) for row in reader]


def site_values(facts: Facts) -> dict:
    return {row.get("key"): row.get("value", "") for row in parse_tabdump(facts.text("xcat.site"))}


def network_rows(facts: Facts) -> list[dict]:
    return parse_tabdump(facts.text("xcat.networks"))


def wanted_site(cfg) -> dict:
    ip = container_ip(cfg)
    return {"master": ip, "nameservers": ip, "domain": cfg.container_domain}


def netname(network: ipaddress.IPv4Network) -> str:
    """The name makenetworks gives a network: ``10_0_0_0-255_255_255_0``."""
    return f"{network.network_address}-{network.netmask}".replace(".", "_")


def wanted_networks(cfg, facts: Facts) -> list[dict]:
    """One entry for each subnet the container is on (its static address's, when it is not running)."""
    found = {}
    for link in container_links(facts):
        for address in ipv4(link):
            if not (address.ip.is_loopback or address.ip.is_link_local):
                found.setdefault(address.network, link.get("ifname") or "eth0")
    if not found:
        found[cfg.container_ip.network] = "eth0"
    gateway = gateway_for(cfg, facts)
    return [{"netname": netname(net), "net": str(net.network_address), "mask": str(net.netmask),
             "mgtifname": ifname,
             "gateway": gateway if gateway and ipaddress.IPv4Address(gateway) in net else "<xcatmaster>"}
            for net, ifname in sorted(found.items())]


# Reading xCAT's tables means `docker exec` + tabdump (a Perl client talking to
# xcatd in real xCAT): the slowest fact by far. The fact script hashes the
# table files' stat data (plus the boot and the container's PID) into a stamp;
# when the stamp equals the one recorded here after xcatfab last verified the
# tables, nothing can have changed them and they are not read again.
#: The stamps of hosts' xCAT tables when they were last verified (see tasks/runtime/cache.py).
STAMPS = Cache("xcat-stamps", max_entries=4096)


def _stamp_key(cfg) -> str:
    return make_key("xcat-stamp", cfg.name, cfg.connect_address, cfg.container_name)


def _wanted_key(cfg) -> str:
    wanted = dict(wanted_site(cfg), network=str(cfg.container_ip.network))
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()


def known_stamp(cfg) -> str:
    """The stamp of xCAT's tables when they were last verified for these settings."""
    data = STAMPS.get_json(_stamp_key(cfg))
    if not isinstance(data, dict) or cfg.container_ip is None or data.get("wanted") != _wanted_key(cfg):
        return ""
    return data.get("stamp", "")


def remember_stamp(cfg, facts: Facts) -> None:
    """Record the stamp of tables just verified (controller side: nothing on the host)."""
    stamp = facts.kv("xcat.stamp")
    if not stamp.get("stamp") or stamp.get("external_db") == "yes":
        return
    STAMPS.put_json(_stamp_key(cfg), {"stamp": stamp["stamp"], "wanted": _wanted_key(cfg)})


def site_action(cfg, facts: Facts):
    have, want = site_values(facts), wanted_site(cfg)
    changes = {k: v for k, v in want.items() if have.get(k, "") != v}
    if not changes:
        return None
    parts = [f"{k} {have.get(k) or '(unset)'} -> {v}" for k, v in sorted(changes.items())]
    set_back = [k for k in changes if have.get(k)]
    note = f" (set back: xcatfab owns site {', '.join(sorted(set_back))})" if set_back else ""
    return Action("site", "site: " + ", ".join(parts) + note, {"values": changes})


def network_actions(cfg, facts: Facts) -> list[Action]:
    rows = network_rows(facts)
    present = {(row.get("net"), row.get("mask")) for row in rows}
    names = {row.get("netname") for row in rows}
    wanted = wanted_networks(cfg, facts)
    actions = []
    for entry in wanted:
        if (entry["net"], entry["mask"]) not in present:
            if entry["netname"] in names:
                entry = dict(entry, netname=entry["netname"] + "-xcatfab")
            actions.append(Action("network_add", f"networks: add {entry['netname']} "
                                                 f"({entry['net']}/{entry['mask']}, gateway {entry['gateway']})",
                                  {"entry": entry}))
    keep = {(e["net"], e["mask"]) for e in wanted}
    for row in rows:
        if row.get("comments") == OWNED_MARK and (row.get("net"), row.get("mask")) not in keep:
            actions.append(Action("network_del", f"networks: remove {row.get('netname')} (xcatfab made it for "
                                                 f"{row.get('net')}/{row.get('mask')}; the container left it)",
                                  {"netname": row.get("netname")}))
    return actions


class XcatConfigStep(Step):
    name = "xcat-config"
    fragments = ("host", "docker", "container")

    def plan(self, run) -> list[Action]:
        cfg, facts = run.cfg, run.facts
        if facts.kv("xcat.stamp").get("unchanged") == "yes":
            return []  # verified by an earlier run, and the tables have not changed since
        if not facts.text("xcat.site").lstrip().startswith("#"):
            detail = facts.text("xcat.site").strip().splitlines()
            why = detail[-1] if detail else "container not running"
            if run.plan_only:
                return [blocked(f"cannot read the site table yet ({why})")]
            raise StepFailed(f"cannot read xCAT's site table in {cfg.container_name}: {why}")
        site = site_action(cfg, facts)
        return ([site] if site else []) + network_actions(cfg, facts)

    def remember(self, run) -> None:
        remember_stamp(run.cfg, run.facts)

    def apply(self, run, actions) -> None:
        refuse_blocked(actions)
        site = next((a.data["values"] for a in actions if a.kind == "site"), {})
        run.remote.template("host/xcat-config.sh.j2", step=self.name, check=True, name=run.cfg.container_name,
                            site=site, add=[a.data["entry"] for a in actions if a.kind == "network_add"],
                            remove=[a.data["netname"] for a in actions if a.kind == "network_del"],
                            mark=OWNED_MARK)
