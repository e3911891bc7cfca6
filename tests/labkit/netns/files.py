"""The files of a lab host, every one rendered from a template in templates/lab/.

- ``/etc/netns/labN/{hosts,hostname,resolv.conf,docker/daemon.json}``: what
  the host's SSH sessions see as /etc (``ip netns exec`` bind-mounts them);
- ``STATE/labN/restart-dockerd``: the script that (re)starts exactly this
  host's dockerd (the inventory's ``docker_restart``);
- ``STATE/labN/sshd_config`` and the host's own ed25519 host key;
- the per-host iso, data and xcatfab state directories.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tasks.runtime.templating import render

from ..common import run, write
from .engines import dockerd_flags
from .hosts import ADMIN_USER, CONTROLLER_IP, DAEMON_PATH, LAB_NETNS_RE, NETNS_ETC, LabHost

#: Files of /etc/netns/labN that `ip netns exec` bind-mounts one by one over /etc.
ETC_FILES = {"hosts": "lab/hosts.j2", "hostname": "lab/hostname.j2", "resolv.conf": "lab/resolv.conf.j2"}


def host_ctx(host: LabHost) -> dict:
    """Template variables of one host (paths as strings)."""
    ctx = {
        "name": host.name, "ip": host.ip, "netns": host.netns, "netns_path": host.netns_path,
        "uts_path": str(host.uts_path), "docker_sock": str(host.docker_sock),
        "docker_host": host.docker_host, "dockerd_pidfile": str(host.dockerd_pidfile),
        "dockerd_log": str(host.dockerd_log), "restart_dockerd": str(host.restart_dockerd),
        "sshd_config": str(host.sshd_config), "sshd_pidfile": str(host.sshd_pidfile),
        "sshd_log": str(host.sshd_log), "host_key": str(host.host_key),
        "iso_dir": str(host.iso_dir), "data_dir": str(host.data_dir),
        "xcatfab_state_dir": str(host.xcatfab_state_dir),
        "container_ip": host.container_ip, "shim_ip": host.shim_ip,
    }
    if host.has_sshd and host.host_key_pub.exists():
        ctx["public_key"] = host.public_key
    return ctx


def _hosts_ctx(host: LabHost, lab_hosts: list[LabHost]) -> dict:
    return {"host": host_ctx(host), "hosts": [host_ctx(h) for h in lab_hosts], "controller_ip": CONTROLLER_IP}


def write_host_files(host: LabHost, lab_hosts: list[LabHost], state: Path) -> None:
    """Per-host /etc (under /etc/netns), sshd config and key, dockerd script, per-host dirs."""
    host.dir.mkdir(parents=True, exist_ok=True)
    for d in (host.iso_dir, host.data_dir, host.xcatfab_state_dir):
        d.mkdir(parents=True, exist_ok=True)
    ctx = _hosts_ctx(host, lab_hosts)
    write_etc_files(host, lab_hosts)
    write(host.daemon_json, render("lab/daemon.json.j2"))
    write(host.restart_dockerd, render("lab/restart-dockerd.j2", dockerd_flags=dockerd_flags(host),
                                       daemon_path=DAEMON_PATH,
                                       anchor_pidfile=str(state / "http.pid"), **ctx), mode=0o755)
    if host.has_sshd:
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{host.name}", "-f", host.host_key])
        write(host.sshd_config, render("lab/sshd_config.j2", authorized_keys=str(state / "authorized_keys"),
                                       admin_user=ADMIN_USER, **ctx), mode=0o600)


def write_etc_files(host: LabHost, lab_hosts: list[LabHost]) -> None:
    """Write the host's /etc files under /etc/netns/labN, in place.

    In place, not by rename: sshd's mount namespace has each file bind-mounted
    by inode, so a renamed-over file would never reach its sessions.
    """
    ctx = _hosts_ctx(host, lab_hosts)
    host.etc_dir.mkdir(parents=True, exist_ok=True)
    for name, template in ETC_FILES.items():
        with open(host.etc_dir / name, "w") as fh:
            fh.write(render(template, **ctx))


def remove_other_etc_files(host: LabHost) -> None:
    """Anything a session put in the host's own /etc (under /etc/netns) but the lab's files goes."""
    expected = set(ETC_FILES) | {"docker", "docker/daemon.json"}
    for path in sorted(host.etc_dir.rglob("*"), reverse=True):
        if str(path.relative_to(host.etc_dir)) not in expected:
            run(["rm", "-rf", "--one-file-system", "--", path])


def empty_dir(directory: Path) -> None:
    """Remove everything inside ``directory`` (created if missing), never crossing mounts."""
    directory.mkdir(parents=True, exist_ok=True)
    for entry in directory.iterdir():
        run(["rm", "-rf", "--one-file-system", "--", str(entry)])


def remove_etc_dirs() -> None:
    """Remove every lab host's /etc/netns entry, and /etc/netns itself when that leaves it empty."""
    for entry in NETNS_ETC.glob("*"):
        if LAB_NETNS_RE.match(entry.name):
            shutil.rmtree(entry, ignore_errors=True)
    if NETNS_ETC.exists() and not any(NETNS_ETC.iterdir()):
        NETNS_ETC.rmdir()
