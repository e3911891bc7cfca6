"""``fab teardown``: remove what deploy made; ``--restore-network`` puts the interface back.

``teardown`` removes the container, its Docker network, the netns watcher
and the macvlan shim (whatever exists, whatever ``network_mode`` says now),
keeps the image, and keeps ``data_dir`` unless ``--purge-data``.

``--restore-network`` also removes the ``DOCKER-USER`` rule and the netplan
file xcatfab added, and puts the interface back as the bridge step recorded
it before its first change (``state_dir/network-before.json``), as a guarded
change (:mod:`tasks.runtime.guarded`): an undo that puts the bridge back is
armed first, the restore runs detached from the SSH session whose address it
moves, it is confirmed from the controller (over a new connection if need
be), and the undo is disarmed only then. A second run finds nothing to do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..runtime.errors import RemoteError, StepFailed, one_line
from ..runtime.facts import Facts
from ..runtime.guarded import GuardedChange, apply_guarded, disarm
from ..runtime.hostrun import HostRun
from ..runtime.report import CHANGED, FAILED, OK, HostReport, Output, StepResult
from ..runtime.ssh import ConnectOptions
from ..runtime.templating import render
from ..steps import netplan
from ..steps.base import Action
from ..steps.bridge import GUARD as BRIDGE_GUARD
from ..steps.bridge import forward_rule_present, netplan_file, netplan_text, recorded_network
from ..steps.container import shim_name, veth_names
from ..steps.container.shim import shim_unit_left
from ..steps.docker import engine_error, inspected
from ..steps.hostnet import default_route, ipv4, links, movable_routes
from .deploy import DeployOptions, fact_context, finish, open_run
from .status import read_facts

#: The guard of teardown's network restore on the host.
GUARD = "restore-undo"
FRAGMENTS = ("host", "docker", "bridge", "guard", "admin")


# ------------------------------------------------------------------ remove
def _watcher_left(cfg, facts: Facts) -> bool:
    watcher = facts.kv("admin.watcher")
    return any(watcher.get(k) for k in ("pidfile", "pid", "enabled", "netns-attach", "netns-watch")) \
        or watcher.get("unit") == "active" or veth_names(cfg)[0] in links(facts)


def teardown_plan(cfg, facts: Facts, purge: bool) -> list:
    """What removing the deployment takes (empty: nothing left)."""
    actions = []
    if _watcher_left(cfg, facts):
        actions.append(Action("watcher", f"stop the netns watcher of {cfg.container_name}"))
    installed = "dockerd" in facts.text("docker.bin") or facts.text("admin.docker").strip()
    down = engine_error(facts)
    if down and installed:
        raise StepFailed(f"docker engine not answering: {down}")
    objs = inspected(facts, cfg) if installed else {"container": None, "network": None}
    if objs["container"] is not None:
        state = (objs["container"].get("State") or {}).get("Status", "?")
        actions.append(Action("container", f"remove container {cfg.container_name} ({state})"))
    if objs["network"] is not None:
        actions.append(Action("network", f"remove Docker network {cfg.docker_network}"))
    if shim_name(cfg) in links(facts) or shim_unit_left(facts):
        actions.append(Action("shim", f"remove the macvlan shim {shim_name(cfg)} and its boot unit"))
    if purge and facts.kv("admin.state").get("data_dir") == "yes":
        actions.append(Action("purge", f"remove {cfg.data_dir} (xCAT's tables, /install, logs)"))
    return actions


# ------------------------------------------------------------------ restore
@dataclass
class Recorded:
    """The network before xcatfab's first bridge change, from ``network-before.json``."""

    data: dict

    @property
    def before(self) -> dict:
        return self.data["before"]

    @property
    def addresses(self) -> list:
        return list(self.data.get("iface_addrs") or [])

    @property
    def bridge_addresses(self) -> list:
        return list(self.before.get("bridge_addrs") or [])


def restore_diffs(cfg, facts: Facts, recorded: Recorded) -> list:
    """How the host differs from the recorded pre-deploy network (empty: as before)."""
    host_links = links(facts)
    iface = host_links.get(cfg.mgmt_interface)
    if iface is None:
        raise StepFailed(f"interface {cfg.mgmt_interface} not found on the host "
                         f"(mgmt_interface, {cfg.where('mgmt_interface')})")
    diffs = _link_diffs(cfg, iface, host_links.get(cfg.bridge), recorded)
    bridge = host_links.get(cfg.bridge)
    have = [str(a) for a in ipv4(iface)]
    diffs += [f"put {a} back on {cfg.mgmt_interface}" for a in recorded.addresses if a not in have]
    on_bridge = [str(a) for a in ipv4(bridge)]
    diffs += [f"put {a} back on {cfg.bridge}" for a in recorded.bridge_addresses if a not in on_bridge]
    gateway, dev = recorded.before.get("default_gateway"), recorded.before.get("default_dev")
    route = default_route(facts)
    if gateway and (not route or route.get("dev") != dev or route.get("gateway") != gateway):
        diffs.append(f"default route via {gateway} on {dev}")
    return diffs


def _link_diffs(cfg, iface: dict, bridge, recorded: Recorded) -> list:
    """The interface's master and the bridge's existence, against the record."""
    diffs = []
    master, want_master = iface.get("master"), recorded.before.get("iface_master") or None
    if master != want_master:
        diffs.append(f"put {cfg.mgmt_interface} in {want_master}" if want_master
                     else f"release {cfg.mgmt_interface} from {master}")
    if not recorded.before.get("bridge_existed") and bridge is not None:
        diffs.append(f"delete {cfg.bridge}")
    return diffs


def restore_plan(cfg, facts: Facts) -> tuple:
    """(actions, note) for --restore-network; the note says why nothing can be restored."""
    actions, note = [], None
    if forward_rule_present(cfg, facts) or facts.kv("bridge.forward_unit").get("enabled") == "yes":
        actions.append(Action("forward", f"remove the DOCKER-USER rule accepting traffic across {cfg.bridge}"))
    if netplan_text(facts).strip():
        actions.append(Action("netplan", f"remove {netplan_file(cfg)}"))
    saved = list(dict.fromkeys(netplan.backups(facts)))
    if saved:
        actions.append(Action("host_netplan", "put back the host's own netplan file(s) from xcatfab's copies: "
                              + ", ".join(saved), {"paths": saved}))
    data = recorded_network(facts)
    if data is not None:
        recorded = Recorded(data)
        diffs = restore_diffs(cfg, facts, recorded)
        if diffs:
            actions.append(Action("restore", f"restore {cfg.mgmt_interface} as before deploy: " + "; ".join(diffs),
                                  {"recorded": recorded}))
        else:
            actions.append(Action("forget", f"forget {cfg.state_dir}/network-before.json "
                                            "(the network already is as it records)"))
    elif links(facts).get(cfg.mgmt_interface, {}).get("master"):
        note = (f"no {cfg.state_dir}/network-before.json: xcatfab has no record of {cfg.mgmt_interface} "
                "before deploy (it never moved the address here), so the network is left as it is")
    return actions, note


def undo_script(cfg, facts: Facts) -> str:
    """The script that puts the bridge back as it is now (the undo of the restore)."""
    host_links = links(facts)
    bridge, iface = host_links.get(cfg.bridge), host_links.get(cfg.mgmt_interface)
    addrs = ipv4(bridge)
    if bridge is None or not addrs or iface is None:
        return ""  # the SSH session does not depend on the bridge: nothing to undo
    route = default_route(facts)
    gateway = route.get("gateway") if route and route.get("dev") == cfg.bridge else ""
    return render("host/bridge-apply.sh.j2", bridge=cfg.bridge, iface=cfg.mgmt_interface,
                  state_dir=cfg.state_dir, address=str(addrs[0]), mac=iface.get("address"),
                  iface_addrs=[str(a) for a in addrs], gateway=gateway or "",
                  routes=movable_routes(facts, cfg.bridge), record="")


def restore_change(run: HostRun, recorded: Recorded) -> GuardedChange:
    """--restore-network as a guarded change: restore from the record; the undo puts the bridge back."""
    cfg = run.cfg
    ctx = dict(recorded.data, bridge=cfg.bridge, iface=cfg.mgmt_interface, netplan_path=netplan_file(cfg))

    def after_undo(facts: Facts) -> str:
        bridge = ipv4(links(facts).get(cfg.bridge))
        return (f"{cfg.bridge} has {', '.join(map(str, bridge)) or 'no address'}; "
                "rerun deploy to re-persist it")

    return GuardedChange(guard=GUARD, step="restore-network", seconds=cfg.rollback_seconds,
                         undo=undo_script(cfg, run.facts), apply=render("host/bridge-undo.sh.j2", **ctx),
                         verify=lambda facts: restore_diffs(cfg, facts, recorded), after_undo=after_undo,
                         finish_with=f"fab -H {cfg.name} teardown --restore-network",
                         fragments=("host", "bridge", "guard"))


# ------------------------------------------------------------------ one host
class Teardown:
    """One host's teardown: plan, apply, verify (the restore as a guarded change)."""

    def __init__(self, run: HostRun, restore_network: bool, purge: bool):
        self.run, self.restore_network, self.purge = run, restore_network, purge

    def read(self) -> Facts:
        """Read (and keep) the host's facts: one round trip."""
        self.run.facts = read_facts(self.run.remote, self.run.cfg, FRAGMENTS)
        return self.run.facts

    def _script(self, step: str, **parts) -> None:
        cfg = self.run.cfg
        context = dict(name=cfg.container_name, state_dir=cfg.state_dir, watcher=False, veth="",
                       container=False, network="", shim="", purge="", bridge=cfg.bridge, forward=False,
                       netplan="", announce=[], forget=False, host_netplan=[], cloud_init_cfg="")
        context.update(parts)
        self.run.remote.template("host/admin-teardown.sh.j2", step=step, check=True, **context)

    def remove(self) -> tuple:
        """Container, network, watcher, shim, data: plan, apply, verify -> (status, changes, error)."""
        cfg = self.run.cfg
        actions = teardown_plan(cfg, self.run.facts, self.purge)
        if not actions:
            return OK, [], None
        summaries = [a.summary for a in actions]
        if self.run.plan_only:
            return CHANGED, ["would " + s for s in summaries], None
        kinds = {a.kind for a in actions}
        self._script("teardown", watcher="watcher" in kinds, veth=veth_names(cfg)[0],
                     container="container" in kinds, network=cfg.docker_network if "network" in kinds else "",
                     shim=shim_name(cfg) if "shim" in kinds else "", purge=cfg.data_dir if "purge" in kinds else "",
                     announce=[str(a.ip) for a in ipv4(links(self.run.facts).get(cfg.bridge))])
        leftover = teardown_plan(cfg, self.read(), self.purge)
        if leftover:
            return FAILED, summaries, "still present after teardown: " + "; ".join(a.summary for a in leftover)
        return CHANGED, summaries, None

    def restore(self) -> tuple:
        """DOCKER-USER rule, netplan file, the interface: plan, apply (guarded), verify."""
        cfg = self.run.cfg
        actions, note = restore_plan(cfg, self.run.facts)
        if note:
            self.run.say(f"restore-network: {note}")
        if not actions:
            return OK, [], None
        summaries = [a.summary for a in actions]
        if self.run.plan_only:
            return CHANGED, ["would " + s for s in summaries], None
        by_kind = {a.kind: a for a in actions}
        if {"forward", "netplan", "host_netplan"} & set(by_kind):
            saved = by_kind["host_netplan"].data["paths"] if "host_netplan" in by_kind else []
            self._script("restore-network", forward="forward" in by_kind,
                         netplan=netplan_file(cfg) if "netplan" in by_kind else "",
                         host_netplan=saved, cloud_init_cfg=netplan.CLOUD_INIT_CFG)
        if "restore" in by_kind:
            apply_guarded(self.run, restore_change(self.run, by_kind["restore"].data["recorded"]))
        # An armed bridge rollback (an interrupted deploy) would undo the restore: cancel it too.
        disarm(self.run, BRIDGE_GUARD)
        self._script("restore-network", forget=True)
        leftover, _note = restore_plan(cfg, self.read())
        if leftover:
            return FAILED, summaries, "still differs after the restore: " + "; ".join(a.summary for a in leftover)
        return CHANGED, summaries, None


def _step(report: HostReport, out: Output, name: str, body) -> StepResult:
    """Run one reported step: ``body`` returns (status, changes, error)."""
    started = time.monotonic()
    try:
        status, changes, error = body()
    except (StepFailed, RemoteError) as exc:
        status, changes, error = FAILED, [], one_line(exc)
    except Exception as exc:  # a dropped connection mid-step: one line, never a traceback
        status, changes, error = FAILED, [], f"{type(exc).__name__}: {one_line(exc)}"
    result = report.add(StepResult(name, status, changes, error, time.monotonic() - started))
    out.result(report.host, result)
    return result


def run_teardown(cfg, options: ConnectOptions, out: Output, restore_network: bool = False,
                 purge: bool = False, plan_only: bool = False) -> HostReport:
    """Tear one host down; never raises for host failures."""
    report = HostReport(cfg.name)
    run = open_run(cfg, DeployOptions(connect=options, plan_only=plan_only), out, report)
    if run is None:
        return finish(run, report)
    run.context = fact_context(cfg)
    job = Teardown(run, restore_network, purge)
    try:
        started = time.monotonic()
        try:
            job.read()
        except Exception as exc:
            out.result(cfg.name, report.add(StepResult("facts", FAILED, error=one_line(exc))))
            return report
        report.add(StepResult("facts", OK, seconds=time.monotonic() - started))
        result = _step(report, out, "teardown", job.remove)
        if restore_network and (result.status != FAILED or plan_only):
            _step(report, out, "restore-network", job.restore)
    finally:
        finish(run, report)
    return report
