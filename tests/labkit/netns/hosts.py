"""The netns lab's names and numbers, and :class:`LabHost`, one lab machine.

Everything here is derived: a host's addresses, MACs and paths follow from
its name and the state directory, so a :class:`LabHost` can be rebuilt from
its name alone (that is how ``lab.down`` finds what a crashed lab left).
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..common import LabError, live_pid, run

# --------------------------------------------------------------------------- constants

#: Lab switch bridge in the root namespace; holds the controller's lab address.
BRIDGE = "xfablab0"
#: The lab subnet: RFC 2544 benchmarking space, never a private range.
SUBNET = ipaddress.IPv4Network("198.18.0.0/24")
PREFIX = SUBNET.prefixlen
CONTROLLER_IP = "198.18.0.1"
#: Namespace of the controller's local engine (``inv build-image``).
CONTROLLER_NETNS = "labctl"
CONTROLLER_ENGINE_IP = "198.18.0.2"
#: Docker's own default bridge inside every lab engine's namespace. Docker would
#: otherwise take 172.17.0.0/16; the lab uses no private range at all.
ENGINE_BRIDGE_IP = "198.19.0.1/24"
ENGINE_ADDRESS_POOL = "base=198.19.128.0/17,size=24"
#: Comment on every iptables rule the lab adds, so down/up find exactly those.
RULE_COMMENT = "xcatfab-lab"
#: Where the stand-in repositories are served (the controller's lab address only).
REPO_PORT = 8089
#: The lab's Docker registry (image_source=pull), plain HTTP. It runs in the
#: controller engine's namespace, so nothing on the machine (say a
#: docker-registry service the package started on *:5000) can take its port.
REGISTRY = f"{CONTROLLER_ENGINE_IP}:5000"
#: The base image every lab engine gets; the lab preset builds FROM it.
BASE_IMAGE_REPO = "xcatfab/bookworm-minbase"
BASE_IMAGE_TAGS = ("latest", "bookworm")
BASE_IMAGE = f"{BASE_IMAGE_REPO}:{BASE_IMAGE_TAGS[0]}"
#: Machine-wide non-root user for sudo tests (lab hosts share the machine's users).
ADMIN_USER = "labadmin"
#: GECOS field of that user: down removes the user only when it carries this.
ADMIN_MARKER = "xcatfab lab sudo test user (inv lab.down removes it)"
SUDOERS_FILE = Path("/etc/sudoers.d/xcatfab-lab")
NETNS_ETC = Path("/etc/netns")
#: Machine paths the lab's engines create whatever their flags say: dockerd 20.10
#: keeps its engine ID key in /etc/docker/key.json, containerd shims put their
#: sockets under /run/containerd/s. Down removes those the lab was first to make
#: (recorded in lab.json, and for the directory also by a marker file in it, so
#: a crash that loses the record does not make the next lab take it for the machine's).
ENGINE_MACHINE_PATHS = (Path("/etc/docker/key.json"), Path("/run/containerd"))
CREATED_MARKER = ".made-by-xcatfab-lab"
#: Short paths for exec-roots (containerd puts unix sockets under them) and the
#: per-host UTS namespace files. Fixed: one lab per machine.
RUN_DIR = Path("/run/xcatfab-lab")
#: The docker client of the engines' own package (docker.io): a real host's client matches its
#: engine, where a newer client elsewhere on the machine speaks an API the lab's engines lack.
DOCKER_CLIENT = "/usr/bin/docker"
#: PATH of the lab's daemons (started with an otherwise empty environment).
DAEMON_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: cgroup parent of every lab container, so leftovers can be found and removed.
CGROUP_PARENT = "xcatfab-lab"
MAX_HOSTS = 50
HOST_NAME_RE = re.compile(r"^lab([0-9]+)$")
LAB_NETNS_RE = re.compile(r"^lab([0-9]+|ctl)$")
VETH_RE = re.compile(r"^lab([0-9]+|ctl)-h$")

#: Programs whose leftovers are swept when their command line names a lab path.
LAB_DAEMONS = ("dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2",
               "docker-proxy", "sshd", "gpg-agent", "runc", "python3", "python", "docker-registry")


def state_dir() -> Path:
    """The lab's state directory: ``$XCATFAB_LAB_DIR`` or /var/lib/xcatfab-lab."""
    return Path(os.environ.get("XCATFAB_LAB_DIR") or "/var/lib/xcatfab-lab")


# --------------------------------------------------------------------------- one host


@dataclass(frozen=True)
class LabHost:
    """One lab machine: a network namespace with its own dockerd (and sshd).

    ``index`` is N of ``labN``; the controller engine ``labctl`` has index 0 and
    no sshd. Every path is derived from the state directory and the name, so a
    LabHost can be rebuilt from its name alone (that is how down finds
    leftovers of a crashed lab).
    """

    name: str
    index: int
    ip: str
    state: Path
    has_sshd: bool = True

    # -- network
    @property
    def netns(self) -> str:
        """Network namespace name (same as the host name)."""
        return self.name

    @property
    def netns_path(self) -> str:
        """The namespace's bind mount, for ``nsenter --net``."""
        return f"/run/netns/{self.name}"

    @property
    def veth(self) -> str:
        """Root-namespace end of the host's veth pair (a port of the lab bridge)."""
        return f"{self.name}-h"

    @property
    def mac(self) -> str:
        """Pinned MAC of the host's eth0 (locally administered, 'XF' in the middle)."""
        return "02:58:46:00:00:%02x" % int(self.ip.rsplit(".", 1)[1])

    @property
    def veth_mac(self) -> str:
        """Pinned MAC of the root end of the veth pair."""
        return "02:58:46:01:00:%02x" % int(self.ip.rsplit(".", 1)[1])

    @property
    def host_ip(self) -> str:
        """Address with prefix, as the inventory's ``host_ip``."""
        return f"{self.ip}/{PREFIX}"

    @property
    def container_ip(self) -> Optional[str]:
        """The xCAT container's address on this host: 198.18.0.(110+N)."""
        return str(SUBNET.network_address + 110 + self.index) if self.has_sshd else None

    @property
    def shim_ip(self) -> Optional[str]:
        """The address of this host's macvlan shim (macvlan mode): 198.18.0.(160+N)."""
        return str(SUBNET.network_address + 160 + self.index) if self.has_sshd else None

    # -- files
    @property
    def dir(self) -> Path:
        """STATE/labN: everything of this host that is not under /etc/netns."""
        return self.state / self.name

    @property
    def etc_dir(self) -> Path:
        """``/etc/netns/labN``: bind-mounted over /etc for the host's SSH sessions."""
        return NETNS_ETC / self.name

    @property
    def daemon_json(self) -> Path:
        """The host's /etc/docker/daemon.json (dockerd reads it with --config-file)."""
        return self.etc_dir / "docker" / "daemon.json"

    @property
    def docker_sock(self) -> Path:
        return self.dir / "docker.sock"

    @property
    def docker_host(self) -> str:
        """``DOCKER_HOST`` value for this host's engine."""
        return f"unix://{self.docker_sock}"

    @property
    def docker_root(self) -> Path:
        return self.dir / "docker"

    @property
    def exec_root(self) -> Path:
        """Short on purpose: containerd's sockets live under it (108-byte limit)."""
        return RUN_DIR / self.name

    @property
    def uts_path(self) -> Path:
        """Bind mount of the host's UTS namespace (its hostname)."""
        return RUN_DIR / "uts" / self.name

    @property
    def dockerd_pidfile(self) -> Path:
        return self.dir / "dockerd.pid"

    @property
    def dockerd_log(self) -> Path:
        return self.dir / "dockerd.log"

    @property
    def restart_dockerd(self) -> Path:
        """Script that (re)starts exactly this host's dockerd: the inventory's docker_restart."""
        return self.dir / "restart-dockerd"

    @property
    def sshd_config(self) -> Path:
        return self.dir / "sshd_config"

    @property
    def sshd_pidfile(self) -> Path:
        return self.dir / "sshd.pid"

    @property
    def sshd_log(self) -> Path:
        return self.dir / "sshd.log"

    @property
    def host_key(self) -> Path:
        return self.dir / "ssh_host_ed25519_key"

    @property
    def host_key_pub(self) -> Path:
        return self.dir / "ssh_host_ed25519_key.pub"

    @property
    def iso_dir(self) -> Path:
        """The inventory's ``iso_dir`` for this host (production: /iso)."""
        return self.dir / "iso"

    @property
    def data_dir(self) -> Path:
        """The inventory's ``data_dir`` for this host (production: /xcatdata)."""
        return self.dir / "xcatdata"

    @property
    def xcatfab_state_dir(self) -> Path:
        """The inventory's ``state_dir`` for this host: xcatfab's own files on it (production: /var/lib/xcatfab)."""
        return self.dir / "xcatfab"

    @property
    def iptables_boot(self) -> Path:
        """The namespace's firewall rules as dockerd made them when the lab came up."""
        return self.dir / "iptables.boot"

    @property
    def public_key(self) -> str:
        """``ssh-ed25519 AAAA...`` of the host key (no comment)."""
        return " ".join(self.host_key_pub.read_text().split()[:2])

    # -- processes
    def dockerd_pid(self) -> Optional[int]:
        """Pid of this host's running dockerd, or None."""
        return live_pid(self.dockerd_pidfile, f"--pidfile {self.dockerd_pidfile}")

    def sshd_pid(self) -> Optional[int]:
        """Pid of this host's running sshd (the listener), or None."""
        if not self.has_sshd:
            return None
        return live_pid(self.sshd_pidfile, f"-f {self.sshd_config}")

    def docker(self, *args: str, check: bool = True, timeout: float = 120,
               input: Optional[str] = None) -> subprocess.CompletedProcess:
        """Run the docker CLI against this host's engine (on the controller)."""
        return run([DOCKER_CLIENT, *args], env={"DOCKER_HOST": self.docker_host}, check=check,
                   timeout=timeout, input=input)

    def in_netns(self, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a command in the host's network namespace (machine mount namespace)."""
        return run(["nsenter", f"--net={self.netns_path}", "--", *argv], check=check, timeout=timeout)


def make_host(name: str, state: Path) -> LabHost:
    """The LabHost called ``name`` (``labN`` or ``labctl``)."""
    if name == CONTROLLER_NETNS:
        return LabHost(CONTROLLER_NETNS, 0, CONTROLLER_ENGINE_IP, state, has_sshd=False)
    match = HOST_NAME_RE.match(name)
    if not match:
        raise LabError(f"{name!r} is not a lab host name (labN)")
    n = int(match.group(1))
    return LabHost(name, n, str(SUBNET.network_address + 10 + n), state)
