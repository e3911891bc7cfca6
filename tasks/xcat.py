"""Step ``xcat-config``: xCAT inside the container knows its static address.

The guide's "Configure xCAT Service": after the address change, set the site
table's ``master`` and ``nameservers`` (and ``domain``) to the container's
address, delete the old networks and recreate them with ``makenetworks``
(which never overwrites an existing entry, so the table is emptied first).

Facts come from the fact script's single ``docker exec`` (``tabdump site``,
``tabdump networks`` and the container's own addresses); the result is read
back the same way, so a changed value or a stale network (an old subnet,
Docker's 172.17/16) counts as drift and is fixed.

This module also runs arbitrary xCAT commands in the container for
``fab xcat -- CMD`` and defines nodes for ``fab node`` (passwords as
``chdef -z`` stanzas on stdin, never on a command line).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os

from .container import container_addresses, container_ip
from .step import Action, Step, StepFailed


def parse_tabdump(text: str) -> list[dict]:
    """``tabdump`` CSV (``#col,col,...`` header) -> list of row dicts."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("#"):
        return []
    reader = csv.reader(io.StringIO("\n".join(lines)))
    header = next(reader)
    header[0] = header[0].lstrip("#")
    return [dict(zip(header, row)) for row in reader]


def site_values(facts) -> dict:
    return {row.get("key"): row.get("value", "") for row in parse_tabdump(facts.text("xcat.site"))}


def table_networks(facts) -> set:
    """(net, mask) pairs in the networks table."""
    return {(row.get("net"), row.get("mask")) for row in parse_tabdump(facts.text("xcat.networks"))}


def wanted_networks(facts) -> set:
    """(net, mask) of every connected IPv4 network inside the container."""
    nets = set()
    for addr in container_addresses(facts):
        if addr.ip.is_loopback or addr.ip.is_link_local:
            continue
        nets.add((str(addr.network.network_address), str(addr.network.netmask)))
    return nets


def wanted_site(cfg) -> dict:
    ip = container_ip(cfg)
    return {"master": ip, "nameservers": ip, "domain": cfg.container_domain}


# Reading xCAT's tables means `docker exec` + tabdump (a Perl client talking to
# xcatd in real xCAT): the slowest fact by far. The fact script hashes the
# table files' stat data (plus the boot and the container's PID) into a stamp;
# when the stamp equals the one recorded here after xcatfab last verified the
# tables, nothing can have changed them and they are not read again.
def _stamp_path(cfg) -> str:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    key = f"{cfg.name}-{cfg.connect_address}-{cfg.container_name}".replace("/", "_")
    return os.path.join(root, "xcatfab", "xcat-stamps", key + ".json")


def _wanted_key(cfg) -> str:
    return hashlib.sha256(json.dumps(wanted_site(cfg), sort_keys=True).encode()).hexdigest()


def known_stamp(cfg) -> str:
    """The stamp of xCAT's tables when they were last verified for these settings."""
    try:
        with open(_stamp_path(cfg), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return ""
    return data.get("stamp", "") if data.get("wanted") == _wanted_key(cfg) else ""


def remember_stamp(cfg, facts) -> None:
    """Record the stamp of tables just verified (controller side: nothing on the host)."""
    stamp = facts.kv("xcat.stamp")
    if not stamp.get("stamp") or stamp.get("external_db") == "yes":
        return
    path = _stamp_path(cfg)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"stamp": stamp["stamp"], "wanted": _wanted_key(cfg)}, fh)
    os.replace(tmp, path)


class XcatConfigStep(Step):
    name = "xcat-config"
    facts = ("host", "docker", "container")

    def plan(self, run) -> list[Action]:
        cfg, facts = run.cfg, run.facts
        if facts.kv("xcat.stamp").get("unchanged") == "yes":
            return []  # verified by an earlier run, and the tables have not changed since
        if not facts.text("xcat.site").lstrip().startswith("#"):
            detail = (facts.text("xcat.site") or facts.text("container.exec")).strip().splitlines()
            why = detail[-1] if detail else "container not running"
            if run.plan_only:
                return [Action("blocked", f"cannot read the site table yet ({why})")]
            raise StepFailed(f"cannot read xCAT's site table in {cfg.container_name}: {why}")
        actions = []
        have, want = site_values(facts), wanted_site(cfg)
        changes = {k: v for k, v in want.items() if have.get(k, "") != v}
        if changes:
            actions.append(Action("site", "site: " + ", ".join(
                f"{k} {have.get(k) or '(unset)'} -> {v}" for k, v in sorted(changes.items())),
                {"values": changes}))
        have_nets, want_nets = table_networks(facts), wanted_networks(facts)
        if not want_nets:
            want_nets = {(str(cfg.container_ip.network.network_address),
                          str(cfg.container_ip.network.netmask))}
        if have_nets != want_nets:
            stale = sorted(have_nets - want_nets)
            missing = sorted(want_nets - have_nets)
            parts = [f"drop {n}/{m}" for n, m in stale] + [f"add {n}/{m}" for n, m in missing]
            actions.append(Action("networks", "networks: empty the table and makenetworks (" + ", ".join(parts) + ")"))
        return actions

    def remember(self, run) -> None:
        remember_stamp(run.cfg, run.facts)

    def apply(self, run, actions) -> None:
        kinds = {a.kind: a for a in actions}
        if "blocked" in kinds:
            raise StepFailed(kinds["blocked"].summary)
        values = kinds["site"].data["values"] if "site" in kinds else {}
        run.remote.template("host/xcat-config.sh.j2", step=self.name, check=True,
                            name=run.cfg.container_name, site=values,
                            networks="networks" in kinds)


def node_stanza(node: str, attrs: dict) -> str:
    """A ``chdef -z`` stanza: how attributes (passwords too) reach xCAT on stdin."""
    lines = [f"{node}:", "    objtype=node"]
    for key, value in attrs.items():
        text = value.reveal() if hasattr(value, "reveal") else str(value)
        if "\n" in text:
            raise StepFailed(f"attribute {key} may not contain a newline")
        lines.append(f"    {key}={text}")
    return "\n".join(lines) + "\n"


def validate_node_name(node: str) -> str:
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", node or ""):
        raise StepFailed(f"{node!r} is not a valid xCAT node name")
    return node

