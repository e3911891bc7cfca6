"""The ``host`` fact fragment: the host's identity, init system, links and routes.

Every step reads this fragment (``templates/host/facts/host.sh.j2``: ``id``,
systemd or not, ``ip -j -d addr``, ``ip -j -4 route``, read with netlink and
never /sys); this module is its one parser.
"""

from __future__ import annotations

import ipaddress
from typing import Optional

from ..runtime.facts import Facts


def links(facts: Facts) -> dict:
    """Links by name from ``ip -j -d addr`` (MAC, master, kind, addresses)."""
    return {link["ifname"]: link for link in facts.json("host.links", default=[]) or []}


def ipv4(link: Optional[dict]) -> list:
    """The global-scope IPv4 addresses of a link, as IPv4Interface."""
    if not link:
        return []
    return [ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}")
            for a in link.get("addr_info", [])
            if a.get("family") == "inet" and a.get("scope", "global") == "global"]


def dynamic(link: Optional[dict]) -> bool:
    """True when an IPv4 address of the link has a lease (DHCP: a finite valid lifetime)."""
    return any(a.get("family") == "inet" and a.get("dynamic") for a in (link or {}).get("addr_info", []))


def routes(facts: Facts) -> list:
    return facts.json("host.routes", default=[]) or []


def default_route(facts: Facts) -> Optional[dict]:
    for route in routes(facts):
        if route.get("dst") == "default":
            return route
    return None


def bridge_info(link: Optional[dict]) -> dict:
    """A bridge's own settings (stp_state, forward_delay ...); {} for anything else."""
    info = (link or {}).get("linkinfo", {})
    return info.get("info_data", {}) if info.get("info_kind") == "bridge" else {}


def is_up(link: Optional[dict]) -> bool:
    return bool(link) and "UP" in link.get("flags", [])


def movable_routes(facts: Facts, dev: str) -> list:
    """Static routes through ``dev`` (kernel-made subnet routes follow the address)."""
    return [r for r in routes(facts)
            if r.get("dev") == dev and r.get("protocol") != "kernel" and r.get("dst") != "default"]


def has_systemd(facts: Facts) -> bool:
    return facts.kv("host.system").get("systemd") == "yes"


def gateway_for(cfg, facts: Facts) -> Optional[str]:
    """The gateway to keep: the inventory's, else the host's current default."""
    if cfg.gateway is not None:
        return str(cfg.gateway)
    route = default_route(facts)
    return route.get("gateway") if route else None
