"""Checks on resolved settings that need no connection.

:func:`check_host` checks one host's values against each other (addresses in
the host's subnet, a macvlan shim address, names, files on the controller,
host directories); :func:`check_hosts` checks across hosts (no address
claimed twice). Each problem is one :class:`~tasks.runtime.errors.BadInput`
naming where the offending value was set and the key.
"""

from __future__ import annotations

import os
import re
from typing import Iterable

from .config import HostConfig
from .errors import BadInput

#: Directories a host directory key may never be (their subdirectories are fine).
SYSTEM_DIRS = frozenset({"/", "/home", "/media", "/mnt", "/opt", "/root", "/srv", "/var", "/var/lib",
                         "/var/cache", "/var/tmp", "/usr/local"})
#: Trees a host directory key may be neither equal to nor inside: the system's own files.
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run",
                "/sbin", "/sys", "/tmp", "/usr", "/var/lib/docker", "/var/lib/containerd", "/var/lib/dpkg",
                "/var/lib/apt", "/var/lib/systemd", "/var/log", "/var/run", "/var/spool", "/var/mail")
#: The host directory keys: xcatfab creates, chmods and bind-mounts them, and
#: ``teardown --purge-data`` deletes data_dir.
HOST_DIR_KEYS = ("state_dir", "iso_dir", "data_dir")
#: The characters a host directory may have: nothing a shell, a systemd unit or a
#: command line built around it would treat specially.
DIR_CHARS = re.compile(r"[A-Za-z0-9_./+@-]+")
#: An RFC 1123 host name label.
LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def normal_dir(path: str) -> str:
    """``path`` as one spelling: no ``//``, ``.``, ``..`` or trailing slash (``//etc/./`` -> ``/etc``)."""
    normal = os.path.normpath(path)
    return "/" + normal.lstrip("/") if normal.startswith("/") else normal


def inside(path: str, tree: str) -> bool:
    """True when ``path`` is ``tree`` or below it (both normalised)."""
    return path == tree or path.startswith(tree.rstrip("/") + "/")


def check_host(cfg: HostConfig) -> None:
    """Every single-host check, in the order a user would fix them."""
    for check in (_check_addresses, _check_shim, _check_names, _check_files, check_host_dirs):
        check(cfg)


def _check_addresses(cfg: HostConfig) -> None:
    """container_ip and gateway inside host_ip's subnet, and not the host's or gateway's own address."""
    host_ip, ctr_ip, gw = cfg.host_ip, cfg.container_ip, cfg.gateway
    if ctr_ip is not None and host_ip is not None:
        if ctr_ip.ip not in host_ip.network:
            raise BadInput(cfg.where("container_ip"), "container_ip",
                           f"{ctr_ip} is outside host {cfg.name}'s subnet {host_ip.network}")
        if ctr_ip.ip == host_ip.ip:
            raise BadInput(cfg.where("container_ip"), "container_ip", f"{ctr_ip.ip} is host {cfg.name}'s own address")
    if ctr_ip is not None and gw is not None and ctr_ip.ip == gw:
        raise BadInput(cfg.where("container_ip"), "container_ip", f"{ctr_ip.ip} is host {cfg.name}'s gateway")
    if gw is not None and host_ip is not None and gw not in host_ip.network:
        raise BadInput(cfg.where("gateway"), "gateway", f"{gw} is outside host {cfg.name}'s subnet {host_ip.network}")
    if ctr_ip is not None and gw is not None and gw not in ctr_ip.network:
        raise BadInput(cfg.where("gateway"), "gateway",
                       f"{gw} is outside the container's subnet {ctr_ip.network} (container_ip)")


def _check_shim(cfg: HostConfig) -> None:
    """macvlan mode needs a free shim address in the host's subnet."""
    shim = cfg.macvlan_shim_ip
    if cfg.network_mode == "macvlan" and shim is None:
        raise BadInput(cfg.where("network_mode"), "macvlan_shim_ip",
                       f"network_mode=macvlan needs macvlan_shim_ip for host {cfg.name}: a free "
                       "address the host's shim can use to reach the container")
    if shim is None:
        return
    if cfg.host_ip is not None and shim not in cfg.host_ip.network:
        raise BadInput(cfg.where("macvlan_shim_ip"), "macvlan_shim_ip",
                       f"{shim} is outside host {cfg.name}'s subnet {cfg.host_ip.network}")
    taken = {"host_ip": cfg.host_ip.ip if cfg.host_ip else None,
             "container_ip": cfg.container_ip.ip if cfg.container_ip else None, "gateway": cfg.gateway}
    for key, ip in taken.items():
        if ip is not None and shim == ip:
            raise BadInput(cfg.where("macvlan_shim_ip"), "macvlan_shim_ip", f"{shim} is host {cfg.name}'s {key}")


def _check_names(cfg: HostConfig) -> None:
    """The FQDN is a host name with a domain; interface names fit the kernel's 15 characters."""
    fqdn = cfg.container_fqdn.rstrip(".")
    labels = fqdn.split(".")
    if len(labels) < 2:
        raise BadInput(cfg.where("container_fqdn"), "container_fqdn",
                       f"{cfg.container_fqdn!r} needs a domain, e.g. xcatmn.cluster")
    if len(fqdn) > 253 or not all(LABEL.fullmatch(label) for label in labels):
        raise BadInput(cfg.where("container_fqdn"), "container_fqdn",
                       f"{cfg.container_fqdn!r} is not a host name (letters, digits and - between dots)")
    for key in ("bridge", "mgmt_interface"):
        value = getattr(cfg, key)
        if len(value) > 15 or value in (".", ".."):
            raise BadInput(cfg.where(key), key, f"{value!r} is not a valid interface name (at most 15 characters)")
    if cfg.bridge == cfg.mgmt_interface:
        raise BadInput(cfg.where("bridge"), "bridge", f"{cfg.bridge!r} is also mgmt_interface")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", cfg.container_name):
        raise BadInput(cfg.where("container_name"), "container_name",
                       f"{cfg.container_name!r} is not a valid container name")


def _check_files(cfg: HostConfig) -> None:
    """Files on the controller that the run will read exist."""
    if cfg.image_source == "load" and not cfg.image_tarball:
        raise BadInput(cfg.where("image_source"), "image_tarball", "image_source=load needs image_tarball")
    if cfg.image_source == "load" and not os.path.isfile(cfg.image_tarball):
        raise BadInput(cfg.where("image_tarball"), "image_tarball", f"{cfg.image_tarball}: no such file")
    for iso in cfg.isos:
        if not os.path.isfile(iso.path):
            raise BadInput(cfg.where("isos"), "isos", f"{iso.path}: no such file")
    for key in ("ssh_key", "known_hosts"):
        if '"' in (getattr(cfg, key) or ""):  # OpenSSH's -o option values quote with '"' and cannot carry one
            raise BadInput(cfg.where(key), key, f"{getattr(cfg, key)!r}: a path with '\"' cannot be given to OpenSSH")
    if cfg.ssh_key and not os.path.isfile(cfg.ssh_key):
        raise BadInput(cfg.where("ssh_key"), "ssh_key", f"{cfg.ssh_key}: no such file")


def check_host_dirs(cfg: HostConfig) -> None:
    """state_dir, iso_dir and data_dir: absolute, xcatfab's own, neither system trees nor nested in each other."""
    seen: dict = {}
    for key in HOST_DIR_KEYS:
        raw = getattr(cfg, key) or ""
        if raw and not DIR_CHARS.fullmatch(raw):
            raise BadInput(cfg.where(key), key, f"{raw!r}: a host directory may have letters, digits and _ . / + @ - "
                                                "only (no blanks, quotes or shell characters)")
        path = normal_dir(raw)
        if not raw.startswith("/") or path in SYSTEM_DIRS or any(inside(path, tree) for tree in SYSTEM_TREES):
            raise BadInput(cfg.where(key), key, f"{raw!r} must be an absolute directory of its own, "
                                                "not a system directory or inside one")
        for other, other_path in seen.items():
            if inside(path, other_path) or inside(other_path, path):
                raise BadInput(cfg.where(key), key, f"{raw!r} overlaps {other} {getattr(cfg, other)!r}: "
                                                    "each needs a directory of its own")
        seen[key] = path


def check_hosts(configs: Iterable[HostConfig]) -> None:
    """Checks across hosts: no two hosts may share a container, host or shim address.

    A clash is reported where a command-line setting (``--set``, ``-H``)
    caused it, else at the later of the two hosts.
    """
    taken: dict = {}
    for cfg in configs:
        for key, ip in _claims(cfg):
            other = taken.get(ip)
            if other and other[0].name != cfg.name:
                first, first_key = other
                here, mine, theirs = (first, first_key, (cfg, key)) if _from_flags(first, first_key) and not \
                    _from_flags(cfg, key) else (cfg, key, other)
                raise BadInput(here.where(mine), mine, f"{ip} of host {here.name} is already the {theirs[1]} "
                                                       f"of host {theirs[0].name}")
            taken.setdefault(ip, (cfg, key))


def _from_flags(cfg: HostConfig, key: str) -> bool:
    return cfg.where(key).startswith(("--set", "-H"))


def _claims(cfg: HostConfig) -> list:
    claims = []
    if cfg.container_ip is not None:
        claims.append(("container_ip", cfg.container_ip.ip))
    if cfg.host_ip is not None:
        claims.append(("host_ip", cfg.host_ip.ip))
    if cfg.macvlan_shim_ip is not None:
        claims.append(("macvlan_shim_ip", cfg.macvlan_shim_ip))
    return claims
