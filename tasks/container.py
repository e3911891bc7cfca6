"""Step ``container``: the xCAT container running with its static address.

What the guide does by hand after ``docker run -it --privileged``, done so it
lasts:

* ``docker run -d`` with the name, hostname (plus ``--add-host`` with the
  FQDN so xCAT derives the domain), restart policy, the host's ``iso_dir``
  bind-mounted at /iso (the guide's ``VOLUME`` was never the host's /iso),
  persistent /install, /etc/xcat, /.dbbackup and /var/log/xcat under
  ``data_dir``, ``--privileged`` or the configured capabilities (plus the
  loop-device cgroup rules copycds needs when not privileged);
* the static address, by ``network_mode``:

  - ``bridge`` (default): a Docker network on the existing ``mydocker0``
    (``-o com.docker.network.bridge.name``, ``inhibit_ipv4`` so Docker leaves
    the host's address alone) and ``docker run --network --ip``; Docker keeps
    it across restarts.
  - ``netns``: the guide's way, with the step it forgets: the container is
    plugged into ``mydocker0`` with a veth (pipework style), then addressed
    inside its namespace with ``nsenter``. A namespace address dies with the
    container, so a host-side watcher (a systemd unit, or a detached process
    where systemd is absent) re-applies it on every ``start`` event.
  - ``macvlan``: a macvlan Docker network on the bridge, plus a host-side
    macvlan shim so the host itself can reach the container. The shim has an
    address of its own (``macvlan_shim_ip``) and answers ARP only for it: had
    it the host's address, it would answer the LAN's ARP for the host with its
    own MAC and steal the host's traffic from the bridge.

* /etc/hosts and /etc/resolv.conf: rendered into ``data_dir/xcatfab`` and
  written in place by the entrypoint on every start (Docker regenerates both,
  and renaming over them fails with EBUSY), and in place right away when only
  they drifted.

Convergence compares every managed attribute, as community.docker does:
image ID, network and address, hostname, extra hosts, capabilities or
privileged, device rules, binds, environment and restart policy. Any
difference recreates the container; a stopped container is started.
"""

from __future__ import annotations

import hashlib

from .bridge import gateway_for, ipv4, is_up, links, routes
from .docker import engine_error, inspected
from .step import Action, Step, StepFailed
from .templating import render

DEVICE_RULES = ["b 7:* rmw", "c 10:237 rmw"]  # loop devices and /dev/loop-control
MANAGED_LABEL = "io.xcatfab.managed"  # on Docker networks xcatfab created


def _managed(network: dict) -> bool:
    return (network.get("Labels") or {}).get(MANAGED_LABEL) == "true"


# ---------------------------------------------------------------- wanted
def container_ip(cfg) -> str:
    if cfg.container_ip is None:
        raise StepFailed(f"container_ip is not set for {cfg.name} (inventory or --set container_ip=A/P)")
    return str(cfg.container_ip.ip)


def normal_bind(bind: str) -> str:
    """``SRC:DST[:OPTS]`` with the default ``rw`` dropped: ``a:b:rw`` means ``a:b``
    (community.docker writes the former, xcatfab the latter)."""
    src, _, rest = bind.partition(":")
    dst, _, opts = rest.partition(":")
    kept = sorted(o for o in opts.split(",") if o and o != "rw")
    return f"{src}:{dst}" + (":" + ",".join(kept) if kept else "")


def binds(cfg) -> list[str]:
    data = cfg.data_dir.rstrip("/")
    return sorted([
        f"{cfg.iso_dir}:/iso",
        f"{data}/install:/install",
        f"{data}/etc-xcat:/etc/xcat",
        f"{data}/dbbackup:/.dbbackup",
        f"{data}/log:/var/log/xcat",
        f"{data}/xcatfab:/etc/xcatfab:ro",
    ])


def host_dirs(cfg) -> list[str]:
    data = cfg.data_dir.rstrip("/")
    return [cfg.iso_dir] + [f"{data}/{d}" for d in ("install", "etc-xcat", "dbbackup", "log", "xcatfab")]


def env(cfg) -> dict:
    return {"XCATFAB_MGMT_IP": container_ip(cfg), "XCATFAB_LOOP_DEVICES": str(cfg.loop_devices)}


def _caps(values) -> list[str]:
    return sorted({v.upper().removeprefix("CAP_") for v in values or []})


def docker_network_mode(cfg) -> str:
    return "none" if cfg.network_mode == "netns" else cfg.docker_network


def veth_names(cfg) -> tuple[str, str]:
    """Host-side and temporary peer names for netns mode (<= 15 chars, stable)."""
    tag = hashlib.sha1(cfg.container_name.encode()).hexdigest()[:8]
    return f"xfv{tag}", f"xfp{tag}"


def shim_name(cfg) -> str:
    return f"xfshim{hashlib.sha1(cfg.bridge.encode()).hexdigest()[:6]}"


def run_args(cfg) -> list[str]:
    """The ``docker run`` arguments (after ``docker run -d``), image last."""
    ip = container_ip(cfg)
    args = ["--name", cfg.container_name, "--hostname", cfg.container_hostname,
            "--add-host", f"{cfg.container_fqdn}:{ip}",
            "--restart", cfg.restart_policy, "--network", docker_network_mode(cfg)]
    if cfg.network_mode != "netns":
        args += ["--ip", ip]
    for key, value in env(cfg).items():
        args += ["--env", f"{key}={value}"]
    for bind in binds(cfg):
        args += ["--volume", bind]
    if cfg.privileged:
        args.append("--privileged")
    else:
        for cap in cfg.cap_add:
            args += ["--cap-add", cap]
        for cap in cfg.cap_drop:
            args += ["--cap-drop", cap]
        for rule in DEVICE_RULES:
            args += ["--device-cgroup-rule", rule]
    args.append(cfg.image)
    return args


def network_spec(cfg, facts) -> dict:
    """The Docker network the container sits on (bridge and macvlan modes)."""
    subnet = str(cfg.container_ip.network)
    gateway = gateway_for(cfg, facts) or (str(cfg.host_ip.ip) if cfg.host_ip else None)
    spec = {"subnet": subnet, "gateway": gateway, "ip_range": f"{container_ip(cfg)}/32"}
    if cfg.network_mode == "macvlan":
        spec.update(driver="macvlan", options={"parent": cfg.bridge})
    else:
        spec.update(driver="bridge", options={
            "com.docker.network.bridge.name": cfg.bridge,
            "com.docker.network.bridge.inhibit_ipv4": "true",
        })
    return spec


def hosts_file(cfg) -> str:
    return render("host/container-hosts.j2", ip=container_ip(cfg), fqdn=cfg.container_fqdn,
                  short=cfg.container_hostname)


def resolv_file(cfg, facts) -> str:
    dns = cfg.container_dns or gateway_for(cfg, facts)
    return render("host/container-resolv.conf.j2", domain=cfg.container_domain,
                  nameserver=str(dns) if dns else "")


# ---------------------------------------------------------------- compare
def network_diff(spec: dict, network: dict) -> list[str]:
    """What differs between a Docker network and ``spec`` (empty: converged)."""
    diffs = []
    if network.get("Driver") != spec["driver"]:
        diffs.append(f"driver {network.get('Driver')} -> {spec['driver']}")
    options = network.get("Options") or {}
    for key, value in spec["options"].items():
        if options.get(key) != value:
            diffs.append(f"option {key}={options.get(key)} -> {value}")
    configs = (network.get("IPAM") or {}).get("Config") or [{}]
    have = configs[0]
    for key, field in (("subnet", "Subnet"), ("gateway", "Gateway"), ("ip_range", "IPRange")):
        if (have.get(field) or None) != (spec[key] or None):
            diffs.append(f"{key} {have.get(field)} -> {spec[key]}")
    return diffs


def container_diff(cfg, ctr: dict, image: dict) -> list[str]:
    """Every managed attribute of the container that differs from ``cfg``."""
    diffs = []
    config, host = ctr.get("Config") or {}, ctr.get("HostConfig") or {}
    if image is None or ctr.get("Image") != image.get("Id"):
        diffs.append(f"image {str(ctr.get('Image'))[:19]} -> {cfg.image}")
    if config.get("Hostname") != cfg.container_hostname:
        diffs.append(f"hostname {config.get('Hostname')} -> {cfg.container_hostname}")
    want_hosts = [f"{cfg.container_fqdn}:{container_ip(cfg)}"]
    if sorted(host.get("ExtraHosts") or []) != want_hosts:
        diffs.append(f"extra hosts {host.get('ExtraHosts')} -> {want_hosts}")
    mode = docker_network_mode(cfg)
    if host.get("NetworkMode") != mode:
        diffs.append(f"network {host.get('NetworkMode')} -> {mode}")
    if cfg.network_mode != "netns":
        net = ((ctr.get("NetworkSettings") or {}).get("Networks") or {}).get(mode) or {}
        have_ip = (net.get("IPAMConfig") or {}).get("IPv4Address")
        if have_ip != container_ip(cfg):
            diffs.append(f"address {have_ip} -> {container_ip(cfg)}")
    if bool(host.get("Privileged")) != cfg.privileged:
        diffs.append(f"privileged {bool(host.get('Privileged'))} -> {cfg.privileged}")
    if not cfg.privileged:
        for label, have, want in (("cap_add", host.get("CapAdd"), cfg.cap_add),
                                  ("cap_drop", host.get("CapDrop"), cfg.cap_drop)):
            if _caps(have) != _caps(want):
                diffs.append(f"{label} {_caps(have)} -> {_caps(want)}")
        if sorted(host.get("DeviceCgroupRules") or []) != sorted(DEVICE_RULES):
            diffs.append("loop device cgroup rules")
    have_binds = sorted(normal_bind(b) for b in host.get("Binds") or [])
    if have_binds != [normal_bind(b) for b in binds(cfg)]:
        diffs.append(f"mounts {have_binds} -> {binds(cfg)}")
    have_env = dict(item.split("=", 1) for item in config.get("Env") or [] if "=" in item)
    for key, value in env(cfg).items():
        if have_env.get(key) != value:
            diffs.append(f"env {key}={have_env.get(key)} -> {value}")
    policy = (host.get("RestartPolicy") or {}).get("Name") or "no"
    if policy != cfg.restart_policy:
        diffs.append(f"restart policy {policy} -> {cfg.restart_policy}")
    return diffs


def container_addresses(facts) -> list:
    """IPv4 addresses inside the container, from the fact script's docker exec."""
    result = []
    for link in facts.json("ctr.addrs", default=[]) or []:
        result.extend(ipv4(link))
    return result


def shim_ok(cfg, facts) -> bool:
    link = links(facts).get(shim_name(cfg))
    if not link or not is_up(link) or link.get("link") != cfg.bridge:
        return False
    if [str(a) for a in ipv4(link)] != [f"{cfg.macvlan_shim_ip}/32"]:
        return False
    want = f"{container_ip(cfg)}"
    return any(r.get("dst") == want and r.get("dev") == shim_name(cfg) for r in routes(facts))


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class ContainerStep(Step):
    name = "container"
    facts = ("host", "docker", "container")

    def plan(self, run) -> list[Action]:
        cfg, facts = run.cfg, run.facts
        ip = container_ip(cfg)
        if engine_error(facts):
            return [Action("blocked", f"docker engine not answering: {engine_error(facts)}")]
        objs = inspected(facts, cfg)
        ctr, image, network = objs["container"], objs["image"], objs["network"]
        actions = []
        files = facts.kv("container.files")
        missing = [line.split("=", 1)[1] for line in facts.lines("container.files")
                   if line.startswith("missing_dir=")]
        hosts, resolv = hosts_file(cfg), resolv_file(cfg, facts)
        want_files = {"hosts": hosts, "resolv.conf": resolv}
        stale = [name for name, text in want_files.items() if files.get(name) != sha256(text)]
        if missing or stale:
            what = [f"create {d}" for d in missing] + [f"render {cfg.data_dir}/xcatfab/{n}" for n in stale]
            actions.append(Action("files", "; ".join(what), {"files": want_files}))
        recreate_for_network = False
        if cfg.network_mode == "netns" and network is not None and _managed(network):
            # Left from an earlier bridge/macvlan deploy: its forwarding rules would
            # otherwise keep working by accident and hide a missing DOCKER-USER rule.
            actions.append(Action("network_rm", f"remove Docker network {cfg.docker_network} "
                                                "(netns mode does not use it)"))
        if cfg.network_mode in ("bridge", "macvlan"):
            spec = network_spec(cfg, facts)
            if network is None:
                actions.append(Action("network", f"create Docker network {cfg.docker_network} "
                                      f"({spec['driver']} on {cfg.bridge}, {spec['subnet']})", {"spec": spec}))
            else:
                diffs = network_diff(spec, network)
                if diffs:
                    recreate_for_network = True
                    actions.append(Action("network", f"recreate Docker network {cfg.docker_network}: "
                                          + "; ".join(diffs), {"spec": spec, "recreate": True}))
        if ctr is None:
            actions.append(Action("run", f"docker run {cfg.container_name} ({cfg.network_mode} mode, {ip})"))
        else:
            diffs = container_diff(cfg, ctr, image)
            if recreate_for_network and not diffs:
                diffs = ["its network is recreated"]
            if diffs:
                actions.append(Action("recreate", f"recreate {cfg.container_name}: " + "; ".join(diffs)))
            elif not (ctr.get("State") or {}).get("Running"):
                actions.append(Action("start", f"start {cfg.container_name} "
                                      f"(was {(ctr.get('State') or {}).get('Status')})"))
        new_container = any(a.kind in ("run", "recreate", "start") for a in actions)
        # (a "restart" for a dead xcatd is decided below, once the rest is known to match)
        if cfg.network_mode == "macvlan" and not shim_ok(cfg, facts):
            actions.append(Action("shim", f"host macvlan shim {shim_name(cfg)} on {cfg.bridge} "
                                          f"with a route to {ip}"))
        if cfg.network_mode == "netns":
            watcher = facts.kv("container.watcher")
            attach = render("host/netns-attach.sh.j2", **self._netns_context(cfg, facts))
            if (not (watcher.get("pid") or watcher.get("unit") == "active")
                    or watcher.get("attach_sha") != sha256(attach)):
                actions.append(Action("watcher", f"start the netns watcher for {cfg.container_name} "
                                      "(re-applies the address on every start)"))
            if not new_container and cfg.container_ip not in container_addresses(facts):
                actions.append(Action("attach", f"plug {cfg.container_name} into {cfg.bridge} "
                                      f"with {cfg.container_ip} (netns)"))
        if not new_container and ctr is not None:
            inside = {"hosts": facts.text("ctr.hosts"), "resolv.conf": facts.text("ctr.resolv")}
            drift = [n for n, text in want_files.items() if inside[n].strip() != text.strip()]
            if drift:
                actions.append(Action("etc", "rewrite " + ", ".join(f"/etc/{n}" for n in drift)
                                      + " in the container", {"names": drift}))
            elif facts.kv("ctr.ready").get("ready") != "yes":
                actions.append(Action("wait", f"wait for {cfg.container_name}'s entrypoint to finish"))
            elif facts.kv("ctr.ready").get("xcatd") != "up":
                actions.append(Action("restart", f"restart {cfg.container_name}: xcatd is not listening on 3001"))
        return actions

    def _netns_context(self, cfg, facts) -> dict:
        host_if, peer = veth_names(cfg)
        gateway = gateway_for(cfg, facts) or ""
        return dict(name=cfg.container_name, bridge=cfg.bridge, host_if=host_if, peer=peer,
                    address=str(cfg.container_ip), ip=container_ip(cfg), gateway=gateway,
                    state_dir=cfg.state_dir)

    def apply(self, run, actions) -> None:
        cfg, facts = run.cfg, run.facts
        kinds = {a.kind: a for a in actions}
        if "blocked" in kinds:
            raise StepFailed(kinds["blocked"].summary)
        netns = self._netns_context(cfg, facts) if cfg.network_mode == "netns" else None
        files = kinds["files"].data["files"] if "files" in kinds else {}
        context = dict(
            dirs=host_dirs(cfg), data_dir=cfg.data_dir.rstrip("/"), files=files,
            network=kinds["network"].data if "network" in kinds else None,
            network_rm="network_rm" in kinds, label=MANAGED_LABEL,
            docker_network=cfg.docker_network, name=cfg.container_name,
            run=("run" in kinds or "recreate" in kinds), remove="recreate" in kinds or "network_rm" in kinds or (
                "network" in kinds and kinds["network"].data.get("recreate")),
            start="start" in kinds, restart="restart" in kinds, run_args=run_args(cfg),
            state_dir=cfg.state_dir,
            netns=netns, watcher="watcher" in kinds, attach="attach" in kinds,
            attach_script=render("host/netns-attach.sh.j2", **netns) if netns else "",
            watch_script=render("host/netns-watch.sh.j2", **netns) if netns else "",
            unit=render("host/xcatfab-netns@.service.j2", state_dir=cfg.state_dir) if netns else "",
            shim=({"name": shim_name(cfg), "bridge": cfg.bridge, "shim_ip": str(cfg.macvlan_shim_ip),
                   "ip": container_ip(cfg)} if "shim" in kinds else None),
            etc=kinds["etc"].data["names"] if "etc" in kinds else [],
            etc_files={"hosts": hosts_file(cfg), "resolv.conf": resolv_file(cfg, facts)},
            wait=bool({"run", "recreate", "start", "restart", "wait"} & set(kinds)),
        )
        run.remote.template("host/container-apply.sh.j2", step=self.name, check=True,
                            timeout=300, **context)
