"""Step ``bridge``: the host's address moves from its interface onto ``mydocker0``.

The guide does this by hand (``brctl addbr``, ``ip addr del`` on eth0,
``brctl addif``, ``ip addr add`` on the bridge) over the same SSH session
that the change can cut. xcatfab makes it safe:

1. **Arm a rollback first, on the host.** A script that puts the address,
   routes and netplan files back is scheduled to run after
   ``rollback_seconds``: a transient systemd timer (``systemd-run
   --on-active``) where systemd is PID 1, a detached sleeper otherwise (the
   lab). It fires unless xcatfab disarms it.
2. **Apply the whole change in one detached script** (``setsid``), so losing
   the session half-way cannot leave the host half-changed: bridge created,
   its MAC pinned to the interface's (the host keeps its ARP identity and
   DHCP lease), STP off and forward delay 0 (no 30 s blackout), addresses and
   routes moved, default route kept.
3. **Reconnect and verify from the controller**: the same session if it
   survived, a new connection otherwise; the facts must show the address on
   the bridge and not on the interface.
4. **Disarm.** If verification fails or the host cannot be reached, xcatfab
   waits for the host's own rollback and reports the failure.

Where the host uses netplan, the bridge is also written to
``/etc/netplan/90-xcatfab-<bridge>.yaml`` so it survives a reboot; xcatfab
does not run ``netplan try`` (it refuses bridges with custom parameters and
its revert is unreliable before netplan 1.2) nor ``netplan apply``.

Docker loads ``br_netfilter`` and sets the FORWARD policy to DROP, which
silently drops traffic crossing a bridge Docker does not manage; an ACCEPT
rule for the bridge in ``DOCKER-USER`` keeps the container reachable.

This module also parses the host's ``ip -j -d addr`` / ``ip -j route``
facts for the other steps.
"""

from __future__ import annotations

import ipaddress
import time

from .remote import RemoteError
from .step import Action, Step, StepFailed, gather
from .templating import render


# ------------------------------------------------------------------ facts
def links(facts) -> dict:
    """Links by name from ``ip -j -d addr`` (MAC, master, kind, addresses)."""
    return {link["ifname"]: link for link in facts.json("host.links", default=[]) or []}


def ipv4(link) -> list:
    """The global-scope IPv4 addresses of a link, as IPv4Interface."""
    if not link:
        return []
    return [ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}")
            for a in link.get("addr_info", [])
            if a.get("family") == "inet" and a.get("scope", "global") == "global"]


def routes(facts) -> list:
    return facts.json("host.routes", default=[]) or []


def default_route(facts):
    for route in routes(facts):
        if route.get("dst") == "default":
            return route
    return None


def bridge_info(link) -> dict:
    info = (link or {}).get("linkinfo", {})
    return info.get("info_data", {}) if info.get("info_kind") == "bridge" else {}


def is_up(link) -> bool:
    return bool(link) and "UP" in link.get("flags", [])


def movable_routes(facts, dev: str) -> list:
    """Static routes through ``dev`` (kernel-made subnet routes follow the address)."""
    return [r for r in routes(facts)
            if r.get("dev") == dev and r.get("protocol") != "kernel" and r.get("dst") != "default"]


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


def move_needed(cfg, facts) -> list[str]:
    """What differs between the host and 'address on the bridge' (empty: converged)."""
    all_links = links(facts)
    iface, bridge = all_links.get(cfg.mgmt_interface), all_links.get(cfg.bridge)
    if iface is None:
        raise StepFailed(f"interface {cfg.mgmt_interface} not found on the host "
                         f"(mgmt_interface, {cfg.where('mgmt_interface')})")
    address = desired_address(cfg, iface, bridge)
    diffs = []
    if bridge is None:
        return [f"create bridge {cfg.bridge}", f"move {address} from {cfg.mgmt_interface}"]
    info = bridge_info(bridge)
    if not info:
        raise StepFailed(f"{cfg.bridge} exists but is not a bridge")
    if iface.get("master") != cfg.bridge:
        diffs.append(f"enslave {cfg.mgmt_interface} to {cfg.bridge}")
    if bridge.get("address") != iface.get("address"):
        diffs.append(f"pin {cfg.bridge} MAC to {iface.get('address')} (is {bridge.get('address')})")
    if info.get("stp_state", 0) != 0:
        diffs.append("turn STP off")
    if info.get("forward_delay", 0) != 0:
        diffs.append(f"forward delay {info.get('forward_delay')} -> 0")
    if not is_up(bridge):
        diffs.append(f"bring {cfg.bridge} up")
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


def gateway_for(cfg, facts):
    """The gateway to keep: the inventory's, else the host's current default."""
    if cfg.gateway is not None:
        return str(cfg.gateway)
    route = default_route(facts)
    return route.get("gateway") if route else None


def forward_rule_needed(cfg, facts) -> bool:
    """True when bridged traffic on the bridge could hit Docker's FORWARD DROP."""
    state = facts.kv("bridge.forward")
    if state.get("nf_call_iptables", "0") != "1":
        return False
    rule = f"-A DOCKER-USER -i {cfg.bridge} -o {cfg.bridge} -j ACCEPT"
    return rule not in facts.lines("bridge.docker_user")


def uses_netplan(cfg, facts) -> bool:
    if cfg.netplan == "no":
        return False
    present = facts.kv("bridge.netplan").get("present") == "yes"
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


class BridgeStep(Step):
    name = "bridge"
    facts = ("host", "bridge")
    reconnects = True

    def plan(self, run) -> list[Action]:
        cfg, facts = run.cfg, run.facts
        actions = []
        diffs = move_needed(cfg, facts)
        all_links = links(facts)
        iface, bridge = all_links[cfg.mgmt_interface], all_links.get(cfg.bridge)
        address = desired_address(cfg, iface, bridge)
        gateway = gateway_for(cfg, facts)
        if diffs:
            route = default_route(facts)
            actions.append(Action("move", f"{cfg.bridge}: " + "; ".join(diffs), {
                "address": str(address), "gateway": gateway or "", "mac": iface.get("address"),
                "iface_addrs": [str(a) for a in ipv4(iface)],
                "routes": movable_routes(facts, cfg.mgmt_interface),
                # What the rollback restores: the host exactly as it is now.
                "before": {
                    "bridge_existed": bridge is not None,
                    "bridge_addrs": [str(a) for a in ipv4(bridge)],
                    "bridge_mac": (bridge or {}).get("address", ""),
                    "iface_master": iface.get("master", ""),
                    "default_dev": route.get("dev", "") if route else "",
                    "default_gateway": route.get("gateway", "") if route else "",
                    "bridge_routes": movable_routes(facts, cfg.bridge),
                },
            }))
        elif facts.kv("bridge.rollback").get("pending") == "bridge-rollback":
            # An earlier run applied the change and was interrupted before confirming it: the
            # host would roll back a bridge that is right. This run reached the host, so confirm.
            actions.append(Action("disarm", "confirm the change an interrupted run left unconfirmed "
                                            "and cancel its pending rollback"))
        if forward_rule_needed(cfg, facts):
            actions.append(Action("forward", f"accept forwarding across {cfg.bridge} in DOCKER-USER "
                                             "(br_netfilter would drop it)"))
        if uses_netplan(cfg, facts):
            content = render_netplan(cfg, address, gateway, iface.get("address"),
                                     extra_addrs=ipv4(bridge) + ipv4(iface),
                                     static_routes=movable_routes(facts, cfg.bridge)
                                     + movable_routes(facts, cfg.mgmt_interface))
            if facts.text("bridge.netplan_file").strip() != content.strip():
                actions.append(Action("netplan", f"write {netplan_file(cfg)} (persists across reboot)",
                                      {"content": content}))
        return actions

    def apply(self, run, actions) -> None:
        by_kind = {a.kind: a for a in actions}
        if "move" in by_kind:
            self._move(run, by_kind["move"])
        if "disarm" in by_kind and not self._disarm(run):
            raise StepFailed("the rollback an interrupted run left armed has started: it puts the host "
                             "back as it was before that run; run the step again once it has finished")
        if "netplan" in by_kind:
            run.remote.write_file(netplan_file(run.cfg), by_kind["netplan"].data["content"],
                                  mode=0o600, step=self.name)
        if "forward" in by_kind:
            run.remote.template("host/bridge-forward.sh.j2", step=self.name, check=True,
                                bridge=run.cfg.bridge)

    # ------------------------------------------------------------ the move
    def _move(self, run, action) -> None:
        cfg = run.cfg
        ctx = dict(action.data, bridge=cfg.bridge, iface=cfg.mgmt_interface,
                   state_dir=cfg.state_dir, seconds=cfg.rollback_seconds,
                   netplan_path=netplan_file(cfg), systemd=run.facts.kv("host.system").get("systemd") == "yes")
        rollback = render("host/bridge-rollback.sh.j2", **ctx)
        apply_script = render("host/bridge-apply.sh.j2", **ctx)
        deadline = time.monotonic() + cfg.rollback_seconds
        run.say(f"bridge: rollback armed for {cfg.rollback_seconds}s, applying detached")
        launched = None
        try:
            # One round trip: write both scripts, arm the rollback, launch the apply
            # detached, and wait (briefly) for it to report.
            launched = run.remote.template(
                "host/bridge-launch.sh.j2", step=self.name, timeout=20,
                stdin=_bundle(rollback, apply_script), **ctx)
        except (TimeoutError, RemoteError, OSError, EOFError) as exc:
            run.say(f"bridge: session lost during the change ({type(exc).__name__}); reconnecting")
        except Exception as exc:  # paramiko's SSHException and friends
            run.say(f"bridge: session lost during the change ({type(exc).__name__}); reconnecting")
        if launched is not None and not launched.ok and "armed" not in launched.out:
            raise StepFailed(f"could not arm the rollback: {launched.tail()}")
        problem = self._confirm(run, deadline)
        if problem is None:
            return
        self._await_rollback(run, deadline, problem)

    def _confirm(self, run, deadline):
        """Verify from the controller, reconnecting if needed; disarm on success."""
        cfg = run.cfg
        problem = "no answer from the host"
        while time.monotonic() < deadline - 2:
            try:
                facts = gather(run.remote, ("host", "bridge"), run.context)
            except Exception as exc:  # the session is gone: open a new one
                problem = f"lost the connection ({type(exc).__name__})"
                if not run.replace_connection(deadline):
                    break
                continue
            status = facts.kv("bridge.rollback").get("apply", "")
            if status == "running" or status == "":
                time.sleep(0.2)
                continue
            if status.startswith("failed"):
                problem = f"apply script {status}"
                break
            run.facts.update(facts)
            diffs = move_needed(cfg, facts)
            if diffs:
                problem = "after the change the host still differs: " + "; ".join(diffs)
                break
            if not self._disarm(run):
                return "verified, but the rollback had started before it could be cancelled"
            run.say("bridge: verified from the controller, rollback disarmed")
            return None
        return problem

    def _disarm(self, run) -> bool:
        """Cancel the pending rollback; False when it has already started (it then runs to its end)."""
        result = run.remote.template("host/bridge-disarm.sh.j2", step=self.name, state_dir=run.cfg.state_dir)
        return guard_cancelled(result, "could not disarm the rollback")

    def _await_rollback(self, run, deadline, problem) -> None:
        """The change is not confirmed: let the host roll back, then say so."""
        cfg = run.cfg
        run.say(f"bridge: {problem}; waiting for the host's rollback")
        while time.monotonic() < deadline + 5:
            time.sleep(1)
        end = deadline + 60
        while time.monotonic() < end:
            if run.replace_connection(end):
                try:
                    facts = gather(run.remote, ("host", "bridge"), run.context)
                except Exception:
                    continue
                run.facts.update(facts)
                state = facts.kv("bridge.rollback").get("rollback", "")
                on_iface = ipv4(links(facts).get(cfg.mgmt_interface))
                raise StepFailed(
                    f"bridge change not confirmed ({problem}); the host rolled it back "
                    f"after {cfg.rollback_seconds}s ({state or 'rollback state unknown'}): "
                    f"{cfg.mgmt_interface} has {', '.join(map(str, on_iface)) or 'no address'}")
            time.sleep(2)
        raise StepFailed(f"bridge change not confirmed ({problem}) and the host is unreachable "
                         f"{cfg.rollback_seconds + 60}s later: check its console")


def guard_cancelled(result, failure: str) -> bool:
    """How a script that cancels a host-side guard (templates/host/guard.sh.j2) ended: True when
    it cancelled it, False when it was too late (the guard had started and runs to its end)."""
    if result.ok:
        return True
    if "too late" in result.err:
        return False
    raise StepFailed(f"{failure}: {result.tail()}")


def _bundle(rollback: str, apply_script: str) -> str:
    """Both scripts on one stdin, split by the launcher at the marker line."""
    return rollback + "\n#@@xcatfab-split@@\n" + apply_script
