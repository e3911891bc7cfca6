"""The VM lab's fixed names, addresses and paths, and one VM's identity.

The VM lab lives beside the netns lab (bridge ``xfablab0``, 198.18.0.0/24 and
198.19.0.0/16) without sharing anything with it: its own bridge ``xfabvm0``,
its own subnet 198.18.64.0/24 (RFC 2544 benchmarking space, never a private
range), its own iptables comment, state directory and tap names.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

#: The VM lab's switch on the controller; holds the controller's VM-lab address.
BRIDGE = "xfabvm0"
BRIDGE_MAC = "02:58:46:ff:40:01"
SUBNET = ipaddress.IPv4Network("198.18.64.0/24")
PREFIX = SUBNET.prefixlen
CONTROLLER_IP = "198.18.64.1"
#: Comment on every iptables rule the VM lab adds (the netns lab's is ``xcatfab-lab``).
RULE_COMMENT = "xcatfab-vmlab"
#: The lab's HTTP server (apt repositories, base-image tarball) on the controller's address only.
REPO_PORT = 8089
#: Name of the Debian repository (docker.io and its closure) under the served tree.
DEBIAN_REPO = "debian"
#: Where the netns lab's bookworm minbase tarball (the lab preset's FROM image) is served.
BASE_TARBALL_URL_PATH = "images/bookworm-minbase.tar"
#: The sudo test user every VM has.
ADMIN_USER = "vmadmin"
#: Tap devices: ``xfabvmtN`` for vmN (15 characters at most, as the kernel wants).
TAP_RE = re.compile(r"^xfabvmt([0-9]+)$")
HOST_NAME_RE = re.compile(r"^vm([0-9]+)$")
#: Two VMs is what the tests need; a few more fit in memory, not in 2 cores.
MAX_HOSTS = 8
#: Guest size under TCG (lab-facts: 2 GiB and 2 vCPUs boot Debian 12 to SSH in about 26 s).
VM_MEMORY_MB = 2048
VM_CPUS = 2
#: Marker in every QEMU command line the lab starts (with the VM name after it).
QEMU_NAME_PREFIX = "xcatfab-vmlab-"


def state_dir() -> Path:
    """The VM lab's state directory: ``$XCATFAB_VMLAB_DIR`` or /var/lib/xcatfab-vmlab."""
    return Path(os.environ.get("XCATFAB_VMLAB_DIR") or "/var/lib/xcatfab-vmlab")


def repo_url() -> str:
    """Base URL of the lab's HTTP server as the VMs see it."""
    return f"http://{CONTROLLER_IP}:{REPO_PORT}"


@dataclass(frozen=True)
class VmHost:
    """One VM of the lab, all derived from its index N (``vmN``) and the state directory."""

    index: int
    state: Path

    @property
    def name(self) -> str:
        """``vmN``: the VM's hostname and its name in the inventory and ssh_config."""
        return f"vm{self.index}"

    @property
    def ip(self) -> str:
        """198.18.64.(10+N): the static address its netplan file gives eth0."""
        return str(SUBNET.network_address + 10 + self.index)

    @property
    def host_ip(self) -> str:
        """The address with its prefix (the inventory's ``host_ip``)."""
        return f"{self.ip}/{PREFIX}"

    @property
    def container_ip(self) -> str:
        """198.18.64.(110+N): reserved for the xCAT container on this VM."""
        return str(SUBNET.network_address + 110 + self.index)

    @property
    def shim_ip(self) -> str:
        """198.18.64.(210+N): reserved for this VM's macvlan shim."""
        return str(SUBNET.network_address + 210 + self.index)

    @property
    def mac(self) -> str:
        """The pinned MAC of the VM's NIC (QEMU's 52:54:00 prefix, 'XF' after it)."""
        return "52:54:00:58:46:%02x" % (10 + self.index)

    @property
    def tap(self) -> str:
        """The tap device on the controller that is the VM's cable to the lab bridge."""
        return f"xfabvmt{self.index}"

    @property
    def qemu_name(self) -> str:
        """``-name`` of its QEMU process: how a lab QEMU is told from any other."""
        return f"{QEMU_NAME_PREFIX}{self.name}"

    # -- files
    @property
    def dir(self) -> Path:
        """STATE/vmN: overlay, seed, console log, pidfile, host key."""
        return self.state / self.name

    @property
    def disk(self) -> Path:
        """Copy-on-write qcow2 overlay on the shared base image."""
        return self.dir / "disk.qcow2"

    @property
    def seed_image(self) -> Path:
        """Small read-only ext4 disk the base's first-boot unit copies from."""
        return self.dir / "seed.img"

    @property
    def console_log(self) -> Path:
        """The VM's serial console (kernel, systemd, getty), appended across boots."""
        return self.dir / "console.log"

    @property
    def pidfile(self) -> Path:
        return self.dir / "qemu.pid"

    @property
    def qemu_log(self) -> Path:
        """QEMU's own stderr (before it daemonizes) for diagnosis."""
        return self.dir / "qemu.log"

    @property
    def host_key(self) -> Path:
        """The VM's own ed25519 host key, generated on the controller for this VM only."""
        return self.dir / "ssh_host_ed25519_key"

    @property
    def public_key(self) -> str:
        """``ssh-ed25519 AAAA...`` of the VM's host key (no comment)."""
        return " ".join(Path(f"{self.host_key}.pub").read_text().split()[:2])

    def context(self) -> dict:
        """Template variables of this VM."""
        return {"name": self.name, "index": self.index, "ip": self.ip, "host_ip": self.host_ip,
                "prefix": PREFIX, "container_ip": self.container_ip, "shim_ip": self.shim_ip,
                "mac": self.mac, "gateway": CONTROLLER_IP}


def make_host(name: str, state: Path) -> VmHost:
    """The VmHost called ``name`` (``vmN``)."""
    match = HOST_NAME_RE.match(name)
    if not match:
        raise ValueError(f"{name!r} is not a VM lab host name (vmN)")
    return VmHost(int(match.group(1)), state)
