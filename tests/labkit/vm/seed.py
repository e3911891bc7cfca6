"""One VM's own disk state: its qcow2 overlay on the base and its seed disk.

The seed is a small ext4 image made with ``mkfs.ext4 -d`` (no loop mount) from
files rendered from templates/vmlab/seed/: hostname, /etc/hosts, resolv.conf,
eth0's netplan file ``01-eth0.yaml``, the VM's own ed25519 host key (made here,
so known_hosts is written before the VM boots), root's and the sudo user's
authorized_keys, that user's password hash (``chpasswd -e``) and the lab
repository's signing key. The base's first-boot unit copies them into place.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ._shared import _run, _write, render
from .base import BaseImage
from .config import ADMIN_USER, CONTROLLER_IP, VmHost

SEED_SIZE = "16M"

#: Seed files rendered from templates: name on the seed -> (template, mode).
SEED_TEMPLATES = {
    "hostname": ("hostname.j2", 0o644),
    "hosts": ("hosts.j2", 0o644),
    "resolv.conf": ("resolv.conf.j2", 0o644),
    "01-eth0.yaml": ("01-eth0.yaml.j2", 0o600),
    "authorized_keys": ("authorized_keys.j2", 0o600),
    "chpasswd": ("chpasswd.j2", 0o600),
}


def password_hash(password: str) -> str:
    """A SHA-512 crypt hash of ``password`` (``openssl passwd -6``, the password on stdin)."""
    return _run(["openssl", "passwd", "-6", "-stdin"], input=password + "\n").stdout.strip()


def make_host_key(host: VmHost) -> None:
    """Generate the VM's own ed25519 host key on the controller."""
    host.dir.mkdir(parents=True, exist_ok=True)
    for path in (host.host_key, Path(f"{host.host_key}.pub")):
        path.unlink(missing_ok=True)
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{host.name}", "-f", host.host_key])


def make_seed(host: VmHost, hosts: list[VmHost], client_public_key: str, admin_hash: str, repo_key: Path) -> None:
    """Write the VM's seed image (``STATE/vmN/seed.img``) from its rendered files."""
    tree = host.dir / "seed"
    shutil.rmtree(tree, ignore_errors=True)
    ctx = {"host": host.context(), "hosts": [h.context() for h in hosts], "controller_ip": CONTROLLER_IP,
           "public_key": client_public_key, "user": ADMIN_USER, "password_hash": admin_hash}
    for name, (template, mode) in SEED_TEMPLATES.items():
        _write(tree / name, render(f"vmlab/seed/{template}", **ctx), mode=mode)
    shutil.copy2(host.host_key, tree / "ssh_host_ed25519_key")
    shutil.copy2(f"{host.host_key}.pub", tree / "ssh_host_ed25519_key.pub")
    shutil.copy2(repo_key, tree / "repo-key.asc")
    host.seed_image.unlink(missing_ok=True)
    _run(["truncate", "-s", SEED_SIZE, host.seed_image])
    _run(["mkfs.ext4", "-q", "-F", "-L", "xcfseed", "-d", tree, host.seed_image])
    shutil.rmtree(tree)


def make_overlay(host: VmHost, base: BaseImage) -> None:
    """A fresh copy-on-write overlay for the VM on the (raw) base disk."""
    host.disk.unlink(missing_ok=True)
    _run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base.disk, "-F", "raw", host.disk])


def snapshot(host: VmHost, tag: str) -> None:
    """Record the powered-off VM's disk as internal qcow2 snapshot ``tag`` (replacing one of that name)."""
    _run(["qemu-img", "snapshot", "-d", tag, host.disk], check=False)
    _run(["qemu-img", "snapshot", "-c", tag, host.disk], timeout=600)


def restore(host: VmHost, tag: str) -> None:
    """Put the powered-off VM's disk back to snapshot ``tag``."""
    _run(["qemu-img", "snapshot", "-a", tag, host.disk], timeout=600)


def snapshots(host: VmHost) -> list[str]:
    """Tags of the VM disk's internal snapshots."""
    out = _run(["qemu-img", "snapshot", "-l", "-U", host.disk]).stdout
    tags = []
    for line in out.splitlines()[2:]:
        fields = line.split()
        if len(fields) >= 2:
            tags.append(fields[1])
    return tags
