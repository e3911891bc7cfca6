"""Does the running container (and its Docker network) match what it should be?

Every managed attribute is compared, as community.docker does: image ID,
hostname, network and address, MAC, privileged or the capability set and
device rules, bind mounts (the default ``rw`` dropped) and restart policy.
Any difference recreates the container.
"""

from __future__ import annotations

from .spec import DEVICE_RULES, binds, caps, container_ip, docker_network_mode, mac_address


def network_diff(spec: dict, network: dict) -> list[str]:
    """What differs between a Docker network and ``spec`` (empty: converged)."""
    diffs = []
    if network.get("Driver") != spec["driver"]:
        diffs.append(f"driver {network.get('Driver')} -> {spec['driver']}")
    options = network.get("Options") or {}
    diffs += [f"option {key}={options.get(key)} -> {value}" for key, value in spec["options"].items()
              if options.get(key) != value]
    have = ((network.get("IPAM") or {}).get("Config") or [{}])[0]
    for key, field in (("subnet", "Subnet"), ("gateway", "Gateway"), ("ip_range", "IPRange")):
        if (have.get(field) or None) != (spec[key] or None):
            diffs.append(f"{key} {have.get(field)} -> {spec[key]}")
    return diffs


def normal_bind(bind: str) -> str:
    """``SRC:DST[:OPTS]`` with the default ``rw`` dropped: ``a:b:rw`` means ``a:b``
    (community.docker writes the former, xcatfab the latter)."""
    src, _, rest = bind.partition(":")
    dst, _, opts = rest.partition(":")
    kept = sorted(o for o in opts.split(",") if o and o != "rw")
    return f"{src}:{dst}" + (":" + ",".join(kept) if kept else "")


def _identity(cfg, ctr: dict, image) -> list[str]:
    config = ctr.get("Config") or {}
    diffs = []
    if image is None or ctr.get("Image") != image.get("Id"):
        diffs.append(f"image {str(ctr.get('Image'))[:19]} -> {cfg.image}")
    if config.get("Hostname") != cfg.container_hostname:
        diffs.append(f"hostname {config.get('Hostname')} -> {cfg.container_hostname}")
    policy = ((ctr.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or "no"
    if policy != cfg.restart_policy:
        diffs.append(f"restart policy {policy} -> {cfg.restart_policy}")
    return diffs


def _network(cfg, ctr: dict) -> list[str]:
    mode = docker_network_mode(cfg)
    have_mode = (ctr.get("HostConfig") or {}).get("NetworkMode")
    if have_mode != mode:
        return [f"network {have_mode} -> {mode}"]
    if cfg.network_mode == "netns":
        return []
    net = ((ctr.get("NetworkSettings") or {}).get("Networks") or {}).get(mode) or {}
    diffs = []
    have_ip = (net.get("IPAMConfig") or {}).get("IPv4Address")
    if have_ip != container_ip(cfg):
        diffs.append(f"address {have_ip} -> {container_ip(cfg)}")
    have_mac = net.get("MacAddress") or (ctr.get("Config") or {}).get("MacAddress")
    if (have_mac or "").lower() != mac_address(cfg):
        diffs.append(f"MAC {have_mac} -> {mac_address(cfg)}")
    return diffs


def _privileges(cfg, host: dict) -> list[str]:
    if bool(host.get("Privileged")) != cfg.privileged:
        return [f"privileged {bool(host.get('Privileged'))} -> {cfg.privileged}"]
    if cfg.privileged:
        return []
    diffs = [f"{label} {caps(have)} -> {caps(want)}"
             for label, have, want in (("cap_add", host.get("CapAdd"), cfg.cap_add),
                                       ("cap_drop", host.get("CapDrop"), cfg.cap_drop))
             if caps(have) != caps(want)]
    if sorted(host.get("DeviceCgroupRules") or []) != sorted(DEVICE_RULES):
        diffs.append("loop device cgroup rules")
    return diffs


def container_diff(cfg, ctr: dict, image) -> list[str]:
    """Every managed attribute of the container that differs from ``cfg``."""
    host = ctr.get("HostConfig") or {}
    diffs = _identity(cfg, ctr, image) + _network(cfg, ctr) + _privileges(cfg, host)
    have_binds = sorted(normal_bind(b) for b in host.get("Binds") or [])
    if have_binds != [normal_bind(b) for b in binds(cfg)]:
        diffs.append(f"mounts {have_binds} -> {binds(cfg)}")
    return diffs
