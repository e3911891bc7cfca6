"""The container step's plan and apply (see the package docstring for what it keeps)."""

from __future__ import annotations

from ...runtime.facts import Facts
from ...runtime.templating import render
from ..base import Action, Step, blocked, refuse_blocked, sha256_text
from ..docker import engine_error, inspected
from ..hostnet import gateway_for, links
from .compare import container_diff, network_diff
from .etcfiles import wanted_files
from .hostfacts import (
    container_addresses,
    etc_file,
    loop_devices,
    mac_of,
    missing_dirs,
    shim_ok,
    watcher,
    watcher_left,
    xcatd_listening,
)
from .shim import UNIT as SHIM_UNIT
from .shim import shim_args, shim_files, shim_unit_left, shim_unit_needed, shim_unit_state
from .spec import (
    MANAGED_LABEL,
    container_ip,
    data_root,
    host_dirs,
    mac_address,
    network_spec,
    run_args,
    seeds,
    shim_name,
    veth_names,
)

#: Actions that give the host a new container process (start, restart, or a new container).
NEW_PROCESS = ("run", "recreate", "start", "restart")


def _managed(network: dict) -> bool:
    return (network.get("Labels") or {}).get(MANAGED_LABEL) == "true"


def netns_context(cfg, facts: Facts) -> dict:
    """Template variables of the netns attach and watch scripts."""
    host_if, peer = veth_names(cfg)
    return dict(name=cfg.container_name, bridge=cfg.bridge, host_if=host_if, peer=peer,
                address=str(cfg.container_ip), ip=container_ip(cfg), gateway=gateway_for(cfg, facts) or "",
                state_dir=cfg.state_dir, mac=mac_address(cfg))


class ContainerStep(Step):
    name = "container"
    fragments = ("host", "docker", "container")

    def plan(self, run) -> list[Action]:
        cfg, facts = run.cfg, run.facts
        container_ip(cfg)  # a clear failure when it is not set
        if engine_error(facts):
            return [blocked(f"docker engine not answering: {engine_error(facts)}")]
        objs = inspected(facts, cfg)
        actions = self._files(cfg, facts) + self._leftovers(cfg, facts, objs["network"])
        network_actions = self._network(cfg, facts, objs["network"])
        actions += network_actions
        actions += self._container(cfg, objs["container"], objs["image"],
                                   any(a.data.get("recreate") for a in network_actions))
        fresh = any(a.kind in NEW_PROCESS for a in actions)
        actions += self._mode_pieces(cfg, facts, fresh)
        if not fresh and objs["container"] is not None:
            actions += self._inside(cfg, facts)
        return actions

    # ------------------------------------------------------------ plan parts
    @staticmethod
    def _files(cfg, facts: Facts) -> list[Action]:
        """Host directories, and the container's /etc files as they must read (only the owned lines change)."""
        missing = missing_dirs(facts)
        want = wanted_files(cfg, facts, etc_file)
        stale = {name: text for name, text in want.items() if etc_file(facts, name).strip() != text.strip()}
        if not missing and not stale:
            return []
        path = f"{data_root(cfg)}/xcatfab"
        what = [f"create {d}" for d in missing] + [f"write the container's /etc/{n} ({path}/{n})" for n in stale]
        diffs = [(f"{path}/{n}", etc_file(facts, n), text) for n, text in stale.items()]
        return [Action("files", "; ".join(what), {"files": stale, "dirs": missing}, diffs)]

    @staticmethod
    def _leftovers(cfg, facts: Facts, network) -> list[Action]:
        """What another network_mode left on the host: named, then removed."""
        actions = []
        mode = cfg.network_mode
        if mode != "netns" and (watcher_left(facts) or veth_names(cfg)[0] in links(facts)):
            actions.append(Action("unwatch", f"remove the netns watcher and veth of {cfg.container_name} "
                                             f"(network_mode is {mode} now)"))
        if mode != "macvlan" and (shim_name(cfg) in links(facts) or shim_unit_left(facts)):
            actions.append(Action("unshim", f"remove the macvlan shim {shim_name(cfg)}, its route and its unit "
                                            f"(network_mode is {mode} now)"))
        if mode == "netns" and network is not None and _managed(network):
            # Left from an earlier bridge/macvlan deploy: its forwarding rules would
            # otherwise keep working by accident and hide a missing DOCKER-USER rule.
            actions.append(Action("network_rm", f"remove Docker network {cfg.docker_network} "
                                                "(netns mode does not use it)"))
        return actions

    @staticmethod
    def _network(cfg, facts: Facts, network) -> list[Action]:
        if cfg.network_mode == "netns":
            return []
        spec = network_spec(cfg, facts)
        if network is None:
            return [Action("network", f"create Docker network {cfg.docker_network} "
                                      f"({spec['driver']} on {cfg.bridge}, {spec['subnet']})", {"spec": spec})]
        diffs = network_diff(spec, network)
        if not diffs:
            return []
        return [Action("network", f"recreate Docker network {cfg.docker_network}: " + "; ".join(diffs),
                       {"spec": spec, "recreate": True})]

    @staticmethod
    def _container(cfg, ctr, image, network_recreated: bool) -> list[Action]:
        if ctr is None:
            return [Action("run", f"docker run {cfg.container_name} ({cfg.network_mode} mode, {container_ip(cfg)}; "
                                  "empty data directories seeded from the image)")]
        diffs = container_diff(cfg, ctr, image) or (["its network is recreated"] if network_recreated else [])
        if diffs:
            return [Action("recreate", f"recreate {cfg.container_name}: " + "; ".join(diffs))]
        state = ctr.get("State") or {}
        if not state.get("Running"):
            return [Action("start", f"start {cfg.container_name} (was {state.get('Status')})")]
        return []

    @staticmethod
    def _mode_pieces(cfg, facts: Facts, fresh: bool) -> list[Action]:
        """netns: the watcher and the address; macvlan: the host's shim."""
        actions = []
        if cfg.network_mode == "macvlan" and (not shim_ok(cfg, facts) or shim_unit_needed(cfg, facts)):
            systemd = shim_unit_state(facts).get("systemd") == "yes"
            boot = f", made again at every boot by {SHIM_UNIT}" if systemd else ""
            actions.append(Action("shim", f"host macvlan shim {shim_name(cfg)} on {cfg.bridge} "
                                          f"with a route to {container_ip(cfg)}{boot}"))
        if cfg.network_mode != "netns":
            return actions
        state = watcher(facts)
        attach = render("host/netns-attach.sh.j2", **netns_context(cfg, facts))
        running = state.get("pid") or state.get("unit") == "active"
        if not running or state.get("attach_sha") != sha256_text(attach):
            actions.append(Action("watcher", f"start the netns watcher for {cfg.container_name} "
                                             "(re-applies the address on every start)"))
        if not fresh and (cfg.container_ip not in container_addresses(facts) or mac_of(facts, cfg) != mac_address(cfg)):
            actions.append(Action("attach", f"plug {cfg.container_name} into {cfg.bridge} "
                                            f"with {cfg.container_ip} (netns)"))
        return actions

    @staticmethod
    def _inside(cfg, facts: Facts) -> list[Action]:
        """A running container: its loop devices, and xcatd answering."""
        actions = []
        if loop_devices(facts) < cfg.loop_devices:
            actions.append(Action("loops", f"make /dev/loop0..{cfg.loop_devices - 1} in {cfg.container_name} "
                                           f"(copycds loop-mounts ISOs; it has {loop_devices(facts)})"))
        if not xcatd_listening(facts):
            age = facts.kv("container.pid").get("age", "")
            if age.isdigit() and int(age) < cfg.ready_timeout:
                actions.append(Action("wait", f"wait for xcatd in {cfg.container_name} (started {age}s ago)"))
            else:
                actions.append(Action("restart", f"restart {cfg.container_name}: xcatd is not listening on 3001"))
        return actions

    # ------------------------------------------------------------ apply
    def apply(self, run, actions) -> None:
        refuse_blocked(actions)
        cfg = run.cfg
        kinds = {a.kind: a for a in actions}
        context = dict(name=cfg.container_name, image=cfg.image, data_dir=data_root(cfg), state_dir=cfg.state_dir,
                       ready_timeout=cfg.ready_timeout)
        context.update(_files_context(cfg, kinds), **_docker_context(cfg, kinds),
                       **_mode_context(cfg, run.facts, kinds))
        run.remote.template("host/container-apply.sh.j2", step=self.name, check=True,
                            timeout=cfg.ready_timeout + 300, **context)


def _new_process(kinds: dict) -> bool:
    return bool(set(kinds) & set(NEW_PROCESS))


def _files_context(cfg, kinds: dict) -> dict:
    files = kinds.get("files")
    return dict(dirs=host_dirs(cfg) if files else [], files=files.data["files"] if files else {})


def _docker_context(cfg, kinds: dict) -> dict:
    """The Docker network and the container: what to remove, create, start or restart."""
    network = kinds.get("network")
    new = _new_process(kinds)
    return dict(
        network=network.data if network else None, network_rm="network_rm" in kinds, label=MANAGED_LABEL,
        docker_network=cfg.docker_network,
        remove="recreate" in kinds or "network_rm" in kinds or bool(network and network.data.get("recreate")),
        run=("run" in kinds or "recreate" in kinds), seeds=seeds(cfg), run_args=run_args(cfg),
        start="start" in kinds, restart="restart" in kinds,
        loops=cfg.loop_devices if ("loops" in kinds or new) else 0, wait=new or "wait" in kinds)


def _mode_context(cfg, facts: Facts, kinds: dict) -> dict:
    """The network mode's pieces: the netns watcher and attach, the macvlan shim, and the old mode's leftovers."""
    netns = netns_context(cfg, facts) if cfg.network_mode == "netns" else None
    shim = None
    if "shim" in kinds:
        unit, script = shim_files(cfg)
        shim = dict(shim_args(cfg), unit=unit, script=script)
    return dict(
        unwatch="unwatch" in kinds or "watcher" in kinds, veth=veth_names(cfg)[0],
        unshim=shim_name(cfg) if "unshim" in kinds else "", netns=netns, watcher="watcher" in kinds,
        attach=bool(netns) and ("attach" in kinds or _new_process(kinds)),
        attach_script=render("host/netns-attach.sh.j2", **netns) if netns else "",
        watch_script=render("host/netns-watch.sh.j2", **netns) if netns else "",
        unit=render("host/xcatfab-netns@.service.j2", state_dir=cfg.state_dir) if netns else "", shim=shim)
