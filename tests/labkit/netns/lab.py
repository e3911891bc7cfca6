""":class:`Lab`, a running lab: its hosts, the files that let tools reach them, and the
between-test support (:meth:`Lab.reset_host`, :meth:`Lab.snapshot`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..common import run
from .engines import reset_docker, restore_daemon_json
from .files import empty_dir, remove_other_etc_files, write_etc_files
from .hosts import ADMIN_USER, CONTROLLER_IP, REGISTRY, REPO_PORT, LabHost
from .network import netns_iptables_save, normalized_rules, reset_network, restore_boot_rules
from .processes import kill_orphans_in_netns
from .services import start_sshd

#: What :meth:`Lab.snapshot` lists of an engine: kind -> (``docker`` listing, ``docker X inspect``).
_DOCKER_OBJECTS = {"containers": (["ps", "-aq", "--no-trunc"], "container"),
                   "networks": (["network", "ls", "-q", "--no-trunc"], "network"),
                   "images": (["image", "ls", "-q", "--no-trunc"], "image")}


@dataclass
class Lab:
    """A running lab: its hosts and the files that let tools reach them.

    ``inventory`` is the xcatfab inventory of the hosts (group ``lab``);
    ``ssh_config`` lets plain OpenSSH reach them (``ssh -F <ssh_config> lab1``)
    with host keys checked against ``known_hosts``; ``ssh_key`` is the client
    key; ``controller_docker_host`` is the ``DOCKER_HOST`` of the controller's
    local engine (also in ``env_file``); ``repo_url`` serves the stand-in
    xCAT repositories; ``admin_user``/``admin_password_file`` are the non-root
    sudo user.
    """

    state_dir: Path
    hosts: list[LabHost]
    controller: LabHost
    http_pid: Optional[int] = None
    has_xcat_package: bool = False
    timings: dict = field(default_factory=dict)

    # -- files
    @property
    def inventory(self) -> Path:
        return self.state_dir / "hosts.ini"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def ssh_key(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def ssh_config(self) -> Path:
        return self.state_dir / "ssh_config"

    @property
    def env_file(self) -> Path:
        return self.state_dir / "env"

    @property
    def admin_user(self) -> str:
        return ADMIN_USER

    @property
    def admin_password_file(self) -> Path:
        return self.state_dir / f"{ADMIN_USER}.password"

    @property
    def controller_docker_host(self) -> str:
        return self.controller.docker_host

    @property
    def repo_url(self) -> str:
        return f"http://{CONTROLLER_IP}:{REPO_PORT}"

    @property
    def registry(self) -> str:
        """``host:port`` of the lab's Docker registry, as image names use it."""
        return REGISTRY

    @property
    def registry_log(self) -> Path:
        return self.state_dir / "registry.log"

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.hosts]

    def host(self, name: str) -> LabHost:
        """The lab host called ``name`` (``labctl`` included)."""
        for h in self.hosts + [self.controller]:
            if h.name == name:
                return h
        raise KeyError(f"no lab host {name!r} (have {', '.join(self.names)})")

    def engines(self) -> list[LabHost]:
        """Every namespace with a dockerd: the hosts and the controller engine."""
        return self.hosts + [self.controller]

    # -- test support
    def reset_host(self, name: str, images: bool = False) -> None:
        """Put host ``name`` back to its just-booted state.

        Removes its containers, volumes and non-default Docker networks; moves
        its lab address from any bridge back onto eth0 with the default route,
        deletes every other interface but lo, eth0 and docker0 and every route
        not made by the kernel; rewrites its /etc files (hosts, hostname,
        resolv.conf) and removes any other file under /etc/netns/labN; restores the
        lab's daemon.json (and restarts its dockerd when the file had been
        changed or dockerd is not running); empties its iso, data and
        xcatfab state directories; kills what SSH sessions left running in its namespace
        (rollback sleepers). With ``images=True`` it also removes every image
        but the base image.
        """
        host = self.host(name)
        kill_orphans_in_netns(host)
        reset_docker(host, images)
        reset_network(host)
        write_etc_files(host, self.hosts)
        remove_other_etc_files(host)
        restore_daemon_json(host)
        restore_boot_rules(host)
        if host.has_sshd and host.sshd_pid() is None:
            start_sshd(host)
        for directory in (host.iso_dir, host.data_dir, host.xcatfab_state_dir):
            empty_dir(directory)

    def snapshot(self, name: str) -> dict:
        """The host's state, read independently of xcatfab's own code.

        ``addr``/``link``/``route``: ``ip -j`` output from the host's namespace;
        ``containers``/``networks``/``images``: ``docker inspect`` of each, via
        the host's own socket; ``files``: path -> sha256 of every file under the
        host's /etc/netns directory and its iso, data and xcatfab state directories;
        ``iptables``: the namespace's ruleset (``iptables-save`` without
        counters); ``pids``: its sshd and dockerd. Use it for before/after comparisons.
        """
        host = self.host(name)
        snap: dict = {}
        for what in ("addr", "link", "route"):
            proc = run(["ip", "-n", host.netns, "-j", what, "show"])
            snap[what] = json.loads(proc.stdout or "[]")
        for kind in _DOCKER_OBJECTS:
            snap[kind] = _inspect_all(host, kind)
        snap["files"] = {}
        for root in (host.etc_dir, host.iso_dir, host.data_dir, host.xcatfab_state_dir):
            snap["files"].update(_tree_digest(root))
        snap["iptables"] = normalized_rules(netns_iptables_save(host))
        snap["pids"] = {"sshd": host.sshd_pid(), "dockerd": host.dockerd_pid()}
        return snap


def _inspect_all(host: LabHost, kind: str) -> list:
    """``docker inspect`` of every object of ``kind`` on the host's engine, mounts sorted."""
    listing, inspect = _DOCKER_OBJECTS[kind]
    ids = host.docker(*listing).stdout.split()
    if not ids:
        return []
    objects = json.loads(host.docker(inspect, "inspect", *sorted(set(ids))).stdout)
    for obj in objects:
        # Docker lists mounts in Go map order: sort them so equal states compare equal.
        if obj.get("Mounts"):
            obj["Mounts"].sort(key=lambda m: (m.get("Destination") or "", m.get("Source") or ""))
    return objects


def _tree_digest(root: Path) -> dict:
    """``{path: sha256 or 'dir' or 'link -> target'}`` of everything under ``root``."""
    result = {}
    if not root.exists():
        return result
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            result[str(Path(dirpath, d))] = "dir"
        for f in filenames:
            result[str(Path(dirpath, f))] = _file_digest(Path(dirpath, f))
    return result


def _file_digest(p: Path) -> str:
    if p.is_symlink():
        return f"link -> {os.readlink(p)}"
    try:
        return hashlib.sha256(p.read_bytes()).hexdigest()
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
