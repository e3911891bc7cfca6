"""Step ``bridge``: the host's address moves from its interface onto ``mydocker0``.

The guide does this by hand (``brctl addbr``, ``ip addr del`` on eth0,
``brctl addif``, ``ip addr add`` on the bridge) over the same SSH session
that the change can cut. xcatfab makes it a guarded change
(:mod:`tasks.runtime.guarded`): an undo that puts the host back exactly as it
is now is armed on the host first, the change runs detached in one script
(bridge created, its MAC pinned to the interface's so neighbours' ARP caches
and DHCP leases stay valid, STP off and forward delay 0 so there is no 30 s
blackout, addresses and routes moved, default route kept), the controller
confirms it (reconnecting if the session died) and only then disarms.

The first change records the network as it was (``state_dir/network-before.json``):
``teardown --restore-network`` puts that back.

Where the host uses netplan, the bridge is also written to
``/etc/netplan/90-xcatfab-<bridge>.yaml`` so it survives a reboot; xcatfab
does not run ``netplan try`` (it refuses bridges with custom parameters and
its revert is unreliable before netplan 1.2) nor ``netplan apply``.

Docker loads ``br_netfilter`` and sets the FORWARD policy to DROP, which
silently drops traffic crossing a bridge Docker does not manage; an ACCEPT
rule for the bridge in ``DOCKER-USER`` keeps the container reachable.

Fact fragments: ``host`` (:mod:`tasks.steps.hostnet`), ``bridge``
(``templates/host/facts/bridge.sh.j2``, parsed here) and ``guard``
(:mod:`tasks.runtime.guarded`).
"""

from __future__ import annotations

import json
from typing import Optional

from ..runtime.facts import Facts
from ..runtime.guarded import GuardedChange, apply_guarded, disarm, pending
from ..runtime.templating import render
from . import netplan
from .base import Action, Step, StepFailed, boot_unit_needed
from .hostnet import (
    bridge_info,
    default_route,
    dynamic,
    gateway_for,
    ipv4,
    is_up,
    links,
    movable_routes,
)

#: The bridge step's guard on the host (its undo's files, timer unit and claim).
GUARD = "bridge-rollback"


# ------------------------------------------------------------------ facts
def forward_rule(cfg) -> str:
    """The DOCKER-USER rule that accepts traffic across the bridge, as ``iptables -S`` prints it."""
    return f"-A DOCKER-USER -i {cfg.bridge} -o {cfg.bridge} -j ACCEPT"


def forward_rule_needed(cfg, facts: Facts) -> bool:
    """True when bridged traffic on the bridge could hit Docker's FORWARD DROP."""
    if facts.kv("bridge.forward").get("nf_call_iptables", "0") != "1":
        return False
    return forward_rule(cfg) not in facts.lines("bridge.docker_user")


def forward_unit(cfg) -> tuple[str, str]:
    """The unit and script that put the DOCKER-USER rule back at every start of docker (systemd hosts)."""
    return (render("host/xcatfab-forward@.service.j2", state_dir=cfg.state_dir),
            render("host/docker-user-accept.sh.j2"))


def forward_unit_needed(cfg, facts: Facts) -> bool:
    """On a systemd host: the rule's unit is missing, disabled or not xcatfab's current one."""
    return boot_unit_needed(facts.kv("bridge.forward_unit"), *forward_unit(cfg))


def forward_rule_present(cfg, facts: Facts) -> bool:
    return forward_rule(cfg) in facts.lines("bridge.docker_user")


def netplan_present(facts: Facts) -> bool:
    return facts.kv("bridge.netplan").get("present") == "yes"


def netplan_text(facts: Facts) -> str:
    """xcatfab's netplan file for the bridge, as it is on the host ('' when absent)."""
    return facts.text("bridge.netplan_file")


def recorded_network(facts: Facts) -> Optional[dict]:
    """The network before xcatfab first changed it (``network-before.json``), or None."""
    data = facts.json("bridge.before")
    return data if isinstance(data, dict) and "before" in data else None


# ------------------------------------------------------------------ plan
def desired_address(cfg, iface, bridge):
    """The host address that must end up on the bridge, or a StepFailed."""
    on_iface, on_bridge = ipv4(iface), ipv4(bridge)
    if cfg.host_ip is not None:
        if cfg.host_ip not in on_iface + on_bridge:
            found = ", ".join(str(a) for a in on_iface + on_bridge) or "no IPv4 address"
            raise StepFailed(f"host_ip {cfg.host_ip} ({cfg.where('host_ip')}) is not on "
                             f"{cfg.mgmt_interface} or {cfg.bridge} (found {found})")
        return cfg.host_ip
    if on_bridge:
        return on_bridge[0]
    if on_iface:
        return on_iface[0]
    raise StepFailed(f"no IPv4 address on {cfg.mgmt_interface} or {cfg.bridge} to move")


def _interfaces(cfg, facts: Facts) -> tuple[dict, Optional[dict]]:
    all_links = links(facts)
    iface = all_links.get(cfg.mgmt_interface)
    if iface is None:
        raise StepFailed(f"interface {cfg.mgmt_interface} not found on the host "
                         f"(mgmt_interface, {cfg.where('mgmt_interface')})")
    return iface, all_links.get(cfg.bridge)


def _bridge_diffs(cfg, iface: dict, bridge: dict) -> list[str]:
    info = bridge_info(bridge)
    if not info:
        raise StepFailed(f"{cfg.bridge} exists but is not a bridge")
    checks = [
        (iface.get("master") != cfg.bridge, f"enslave {cfg.mgmt_interface} to {cfg.bridge}"),
        (bridge.get("address") != iface.get("address"),
         f"pin {cfg.bridge} MAC to {iface.get('address')} (is {bridge.get('address')})"),
        (info.get("stp_state", 0) != 0, "turn STP off"),
        (info.get("forward_delay", 0) != 0, f"forward delay {info.get('forward_delay')} -> 0"),
        (not is_up(bridge), f"bring {cfg.bridge} up"),
    ]
    return [text for differs, text in checks if differs]


def move_needed(cfg, facts: Facts) -> list[str]:
    """What differs between the host and 'address on the bridge' (empty: converged)."""
    iface, bridge = _interfaces(cfg, facts)
    address = desired_address(cfg, iface, bridge)
    if bridge is None:
        return [f"create bridge {cfg.bridge}", f"move {address} from {cfg.mgmt_interface}"]
    diffs = _bridge_diffs(cfg, iface, bridge)
    if address not in ipv4(bridge):
        diffs.append(f"add {address} to {cfg.bridge}")
    leftover = ipv4(iface)
    if leftover:
        diffs.append(f"remove {', '.join(map(str, leftover))} from {cfg.mgmt_interface}")
    route = default_route(facts)
    gateway = gateway_for(cfg, facts)
    if gateway and (route is None or route.get("dev") != cfg.bridge):
        diffs.append(f"default route via {gateway} on {cfg.bridge}")
    return diffs


def uses_netplan(cfg, facts: Facts) -> bool:
    if cfg.netplan == "no":
        return False
    present = netplan_present(facts)
    if cfg.netplan == "yes" and not present:
        raise StepFailed("netplan=yes but the host has no netplan (no /etc/netplan or netplan command)")
    return present


def netplan_file(cfg) -> str:
    return f"/etc/netplan/90-xcatfab-{cfg.bridge}.yaml"


def render_netplan(cfg, address, gateway, mac, extra_addrs=(), static_routes=()) -> str:
    """The bridge as netplan should bring it up after a reboot: every address and static route the
    live change moves (``address`` first), so a reboot cannot cut off a path the move kept."""
    addresses = [str(address)] + [str(a) for a in extra_addrs if str(a) != str(address)]
    routes = [{"to": r["dst"] if "/" in r["dst"] else f"{r['dst']}/32", "via": r["gateway"]}
              for r in static_routes if r.get("gateway") and r.get("dst")]
    return render("host/netplan-bridge.yaml.j2", bridge=cfg.bridge, iface=cfg.mgmt_interface,
                  addresses=list(dict.fromkeys(addresses)), gateway=gateway or "", mac=mac, routes=routes)


def move_data(cfg, facts: Facts, address, iface: dict, bridge: Optional[dict]) -> dict:
    """Everything the change and its undo are rendered from: the move, and the host exactly as it is now."""
    route = default_route(facts)
    return {
        "address": str(address), "gateway": gateway_for(cfg, facts) or "", "mac": iface.get("address"),
        "iface_addrs": [str(a) for a in ipv4(iface)],
        "routes": movable_routes(facts, cfg.mgmt_interface),
        "before": {
            "bridge_existed": bridge is not None,
            "bridge_addrs": [str(a) for a in ipv4(bridge)],
            "bridge_mac": (bridge or {}).get("address", ""),
            "iface_master": iface.get("master", ""),
            "default_dev": route.get("dev", "") if route else "",
            "default_gateway": route.get("gateway", "") if route else "",
            "bridge_routes": movable_routes(facts, cfg.bridge),
        },
    }


class BridgeStep(Step):
    name = "bridge"
    fragments = ("host", "bridge", "guard")

    def plan(self, run) -> list[Action]:
        cfg, facts = run.cfg, run.facts
        actions = self._move_actions(cfg, facts)
        if forward_rule_needed(cfg, facts):
            actions.append(Action("forward", f"accept forwarding across {cfg.bridge} in DOCKER-USER "
                                             "(br_netfilter would drop it)"))
        elif forward_unit_needed(cfg, facts):
            actions.append(Action("forward", f"keep the DOCKER-USER rule for {cfg.bridge} at every start of docker "
                                             f"(xcatfab-forward@{cfg.bridge}.service)"))
        actions.extend(self._netplan_actions(cfg, facts))
        return actions

    def _move_actions(self, cfg, facts: Facts) -> list[Action]:
        diffs = move_needed(cfg, facts)
        iface, bridge = _interfaces(cfg, facts)
        if diffs:
            address = desired_address(cfg, iface, bridge)
            return [Action("move", f"{cfg.bridge}: " + "; ".join(diffs),
                           move_data(cfg, facts, address, iface, bridge))]
        if pending(facts, GUARD):
            # An earlier run applied the change and was interrupted before confirming it: the
            # host would roll back a bridge that is right. This run reached the host, so confirm.
            return [Action("disarm", "confirm the change an interrupted run left unconfirmed "
                                     "and cancel its pending rollback")]
        return []

    def preflight(self, run) -> None:
        """Before any step changes anything: refuse an interface that gets its address by DHCP."""
        cfg, facts = run.cfg, run.facts
        iface, bridge = _interfaces(cfg, facts)
        if bridge is not None and iface.get("master") == cfg.bridge:
            return  # already moved
        source = netplan.uses_dhcp(cfg, facts, netplan_file(cfg)) if uses_netplan(cfg, facts) else None
        if dynamic(iface) or source:
            why = f" ({source} says dhcp4: true)" if source else ""
            raise StepFailed(f"{cfg.mgmt_interface} gets its address by DHCP{why}: xcatfab moves static addresses "
                             f"only; give {cfg.name} a static address (or a DHCP reservation made static) first")

    def _netplan_actions(self, cfg, facts: Facts) -> list[Action]:
        if not uses_netplan(cfg, facts):
            return []
        iface, bridge = _interfaces(cfg, facts)
        ours = netplan_file(cfg)
        content = render_netplan(cfg, desired_address(cfg, iface, bridge), gateway_for(cfg, facts),
                                 iface.get("address"), extra_addrs=ipv4(bridge) + ipv4(iface),
                                 static_routes=movable_routes(facts, cfg.bridge)
                                 + movable_routes(facts, cfg.mgmt_interface))
        changes = netplan.takeover(cfg, facts, ours)
        if netplan_text(facts).strip() == content.strip() and not changes:
            return []
        host_files = netplan.host_files(facts)
        diffs = [(ours, netplan_text(facts), content)] + [(p, host_files[p], t or "") for p, t in changes.items()]
        lines = [f"write {ours} (persists across reboot)"] + netplan.describe(changes, cfg)
        return [Action("netplan", "; ".join(lines), {"content": content, "changes": changes,
                                                   "fresh": not netplan_text(facts).strip()}, diffs)]

    def apply(self, run, actions) -> None:
        by_kind = {a.kind: a for a in actions}
        if "move" in by_kind:
            apply_guarded(run, self.change(run, by_kind["move"].data))
        if "disarm" in by_kind and not disarm(run, GUARD):
            raise StepFailed("the rollback an interrupted run left armed has started: it puts the host "
                             "back as it was before that run; run the step again once it has finished")
        if "netplan" in by_kind:
            self._write_netplan(run, by_kind["netplan"].data)
        if "forward" in by_kind:
            unit, script = forward_unit(run.cfg)
            run.remote.template("host/bridge-forward.sh.j2", step=self.name, check=True, bridge=run.cfg.bridge,
                                state_dir=run.cfg.state_dir, unit=unit, accept_script=script)

    @staticmethod
    def _write_netplan(run, data: dict) -> None:
        """xcatfab's file, and the host's files without the interface; netplan generate must accept them."""
        changes = data["changes"]
        parts = [data["content"]] + [f"#@@xcatfab-file {i}\n{text or ''}" for i, text in enumerate(changes.values(), 1)]
        stdin = "".join(p if p.endswith("\n") else p + "\n" for p in parts)  # each file whole, its last line ended
        run.remote.template("host/netplan-apply.sh.j2", step="bridge", check=True, stdin=stdin,
                            bridge=run.cfg.bridge, iface=run.cfg.mgmt_interface, state_dir=run.cfg.state_dir,
                            target=netplan_file(run.cfg), changes=changes, fresh=data["fresh"],
                            cloud_init=any(p.endswith("50-cloud-init.yaml") for p in changes),
                            cloud_init_cfg=netplan.CLOUD_INIT_CFG,
                            cloud_init_dir=netplan.CLOUD_INIT_CFG.rsplit("/", 1)[0])

    def change(self, run, data: dict) -> GuardedChange:
        """The move as a guarded change: the undo restores the host exactly as the plan saw it."""
        cfg = run.cfg
        ctx = dict(data, bridge=cfg.bridge, iface=cfg.mgmt_interface, state_dir=cfg.state_dir,
                   netplan_path=netplan_file(cfg))
        record = json.dumps(dict(data, iface=cfg.mgmt_interface, bridge=cfg.bridge), sort_keys=True)

        def after_undo(facts: Facts) -> str:
            host_links = links(facts)
            where = [f"{a} on {name}" for name in (cfg.mgmt_interface, cfg.bridge)
                     for a in ipv4(host_links.get(name))]
            return ", ".join(where) or f"no address on {cfg.mgmt_interface} or {cfg.bridge}"

        return GuardedChange(
            guard=GUARD, step=self.name, seconds=cfg.rollback_seconds,
            undo=render("host/bridge-undo.sh.j2", **ctx),
            apply=render("host/bridge-apply.sh.j2", record=record, **ctx),
            verify=lambda facts: move_needed(cfg, facts), after_undo=after_undo,
            finish_with=f"fab -H {cfg.name} bridge")
