"""What the container should be: its ``docker run`` arguments, mounts, network and names.

Everything here follows from the host's settings alone (plus the gateway the
host facts give); :mod:`.compare` checks a running container against it.
"""

from __future__ import annotations

import hashlib

from ...runtime.errors import StepFailed
from ..hostnet import gateway_for

#: Device cgroup rules for loop devices and /dev/loop-control (copycds) when not privileged.
DEVICE_RULES = ["b 7:* rmw", "c 10:237 rmw"]
#: Label on the Docker networks xcatfab created (and so may remove).
MANAGED_LABEL = "io.xcatfab.managed"
#: Host data directories under ``data_dir`` and where the container sees them;
#: seeded from the image when empty, the first time the container is created.
DATA_MOUNTS = (("install", "/install"), ("etc-xcat", "/etc/xcat"), ("dbbackup", "/.dbbackup"),
               ("log", "/var/log/xcat"))
#: The container's /etc files xcatfab keeps on the host (``data_dir/xcatfab``), bind-mounted read-write.
ETC_FILES = ("hosts", "resolv.conf")


def container_ip(cfg) -> str:
    if cfg.container_ip is None:
        raise StepFailed(f"container_ip is not set for {cfg.name} (inventory or --set container_ip=A/P)")
    return str(cfg.container_ip.ip)


def data_root(cfg) -> str:
    return cfg.data_dir.rstrip("/")


def binds(cfg) -> list[str]:
    """Every bind mount, sorted: /iso, xCAT's data, and /etc/hosts and resolv.conf from the host.

    The two /etc files are the host's files, so Docker leaves them alone (it
    regenerates its own on every start), a write inside the container (xCAT's
    makehosts, makedns) lands in them and survives restarts, and xcatfab keeps
    its lines in them without the image's help.
    """
    data = data_root(cfg)
    mounts = [f"{cfg.iso_dir}:/iso"] + [f"{data}/{sub}:{path}" for sub, path in DATA_MOUNTS]
    mounts += [f"{data}/xcatfab/{name}:/etc/{name}" for name in ETC_FILES]
    return sorted(mounts)


def host_dirs(cfg) -> list[str]:
    """The host directories the container's mounts need."""
    data = data_root(cfg)
    return [cfg.iso_dir] + [f"{data}/{sub}" for sub, _path in DATA_MOUNTS] + [f"{data}/xcatfab"]


def seeds(cfg) -> list[tuple]:
    """(host directory, the image's path) of every data directory a new container is seeded from."""
    return [(f"{data_root(cfg)}/{sub}", path) for sub, path in DATA_MOUNTS]


def caps(values) -> list[str]:
    """Capability names as Docker reports them: upper case, no ``CAP_`` prefix, sorted, once."""
    return sorted({v.upper().removeprefix("CAP_") for v in values or []})


def docker_network_mode(cfg) -> str:
    return "none" if cfg.network_mode == "netns" else cfg.docker_network


def mac_address(cfg) -> str:
    """The container's MAC, the same in every network mode: a mode switch keeps neighbours' ARP caches valid.

    Locally administered (02:...), derived from the container's name and address.
    """
    digest = hashlib.sha256(f"{cfg.container_name}/{container_ip(cfg)}".encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in digest[:5])


def veth_names(cfg) -> tuple[str, str]:
    """Host-side and temporary peer names for netns mode (<= 15 chars, stable)."""
    tag = hashlib.sha1(cfg.container_name.encode()).hexdigest()[:8]
    return f"xfv{tag}", f"xfp{tag}"


def shim_name(cfg) -> str:
    return f"xfshim{hashlib.sha1(cfg.bridge.encode()).hexdigest()[:6]}"


def run_args(cfg) -> list[str]:
    """The ``docker run`` arguments (after ``docker run -d``), image last."""
    args = ["--name", cfg.container_name, "--hostname", cfg.container_hostname,
            "--restart", cfg.restart_policy, "--network", docker_network_mode(cfg)]
    if cfg.network_mode != "netns":
        args += ["--ip", container_ip(cfg), "--mac-address", mac_address(cfg)]
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
