"""The lab: real docker hosts on one machine, for `make demo` and every integration test.

Each lab host ``labN`` is a network namespace on this machine with

- an ``eth0`` (one end of a veth pair; the other end, ``labN-h``, is a port of
  the lab switch bridge ``xfablab0`` in the root namespace, which holds the
  controller's lab address 198.18.0.1/24), address 198.18.0.(10+N)/24, a
  pinned MAC, a default route via the controller and no IPv6;
- its own UTS namespace (hostname ``labN``), so ``hostname`` in an SSH session
  and ``docker info`` name the host they run on;
- its own OpenSSH ``sshd`` (Debian openssh-server) with its own ed25519 host
  key, key-only login with the lab client key, listening on the lab address
  only, started with ``ip netns exec`` so its sessions see a per-host /etc
  (``/etc/netns/labN/``: hosts, hostname, resolv.conf, docker/daemon.json);
- its own ``dockerd`` (Debian docker.io) with its own data-root, exec-root,
  socket and pidfile, started with ``nsenter --net`` (``ip netns exec`` remounts
  /sys, which hides the cgroup mounts dockerd needs); sshd hands its socket to
  every session as ``DOCKER_HOST``.

One more namespace, ``labctl`` (198.18.0.2), holds the controller's local engine
(no sshd) that ``inv build-image`` uses through ``STATE/env``.

Isolation: iptables rules in the root namespace, tagged with the comment
``xcatfab-lab``, drop anything from the lab bridge that would be forwarded to
another interface or delivered to an address of the machine other than the
controller's lab address, and accept bridged lab traffic. The lab never
changes the machine's own interfaces, addresses or routes.

The base image comes from ``debootstrap --variant=minbase bookworm`` into a
cache directory (no registry is reachable), is ``docker import``-ed into each
engine and reused. The stand-in xCAT package (tests/standin, NOT real xCAT) is
served from signed apt repositories on http://198.18.0.1:8089/. A Docker
registry (Debian's docker-registry, plain HTTP, storage in the state
directory) listens on 198.18.0.2:5000 for ``image_source=pull``.

The lab writes an inventory (``STATE/hosts.ini``), a known_hosts file, an
OpenSSH client config and the controller engine's ``STATE/env``; see
:class:`Lab`. Everything it starts is recorded by pid and stopped by pid by
:func:`lab_down`, which also removes every namespace, link, rule, mount, file
and the ``labadmin`` user it made.

Library API: :func:`lab_up`, :func:`lab_down`, :func:`lab_status`,
:func:`current_lab`, :class:`Lab` (``reset_host``, ``snapshot``).
Invoke tasks: ``inv lab.up [--hosts N]``, ``inv lab.status``, ``inv lab.down``.
"""

from __future__ import annotations

import concurrent.futures
import datetime as _dt
import hashlib
import ipaddress
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

from invoke import Collection, task
from invoke.exceptions import Exit

from .templating import render

# --------------------------------------------------------------------------- constants

#: The project's top directory (tests/standin lives there).
PROJECT_DIR = Path(__file__).resolve().parent.parent

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
REPO_SUITE = "bookworm"
REPO_KEY_NAME = "xcat-lab.asc"
#: The lab's Docker registry (image_source=pull), plain HTTP. It runs in the
#: controller engine's namespace, so nothing on the machine (say a
#: docker-registry service the package started on *:5000) can take its port.
REGISTRY = f"{CONTROLLER_ENGINE_IP}:5000"
#: The base image every lab engine gets; the lab preset builds FROM it.
BASE_IMAGE_REPO = "xcatfab/bookworm-minbase"
BASE_IMAGE_TAGS = ("latest", "bookworm")
BASE_IMAGE = f"{BASE_IMAGE_REPO}:{BASE_IMAGE_TAGS[0]}"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SUITE = "bookworm"
BASE_PACKAGES = (
    "iproute2", "procps", "python3-minimal", "xorriso", "openssh-server",
    "rsyslog", "ca-certificates", "gpgv",
)
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


def cache_dir() -> Path:
    """The base-image cache: ``$XCATFAB_CACHE_DIR`` or ~/.cache/xcatfab (kept by down)."""
    return Path(os.environ.get("XCATFAB_CACHE_DIR") or Path.home() / ".cache" / "xcatfab")


class LabError(RuntimeError):
    """The lab could not be brought up, checked or taken down."""


# --------------------------------------------------------------------------- data


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
        return _live_pid(self.dockerd_pidfile, f"--pidfile {self.dockerd_pidfile}")

    def sshd_pid(self) -> Optional[int]:
        """Pid of this host's running sshd (the listener), or None."""
        if not self.has_sshd:
            return None
        return _live_pid(self.sshd_pidfile, f"-f {self.sshd_config}")

    def docker(self, *args: str, check: bool = True, timeout: float = 120,
               input: Optional[str] = None) -> subprocess.CompletedProcess:
        """Run the docker CLI against this host's engine (on the controller)."""
        return _run(["docker", *args], env={"DOCKER_HOST": self.docker_host}, check=check,
                    timeout=timeout, input=input)

    def in_netns(self, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a command in the host's network namespace (machine mount namespace)."""
        return _run(["nsenter", f"--net={self.netns_path}", "--", *argv], check=check, timeout=timeout)


def _make_host(name: str, state: Path) -> LabHost:
    """The LabHost called ``name`` (``labN`` or ``labctl``)."""
    if name == CONTROLLER_NETNS:
        return LabHost(CONTROLLER_NETNS, 0, CONTROLLER_ENGINE_IP, state, has_sshd=False)
    match = HOST_NAME_RE.match(name)
    if not match:
        raise LabError(f"{name!r} is not a lab host name (labN)")
    n = int(match.group(1))
    return LabHost(name, n, str(SUBNET.network_address + 10 + n), state)


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
        _kill_orphans_in_netns(host)
        _reset_docker(host, images)
        _reset_network(host)
        _write_etc_files(host, self.hosts)
        # Anything else a session put in the host's own /etc (under /etc/netns) goes.
        expected = set(ETC_FILES) | {"docker", "docker/daemon.json"}
        for path in sorted(host.etc_dir.rglob("*"), reverse=True):
            if str(path.relative_to(host.etc_dir)) not in expected:
                _run(["rm", "-rf", "--one-file-system", "--", path])
        pristine = render("lab/daemon.json.j2")
        current = host.daemon_json.read_text() if host.daemon_json.is_file() else None
        if current != pristine or host.dockerd_pid() is None:
            _write(host.daemon_json, pristine)
            _start_dockerd(host)
        # Firewall rules a step added in the host's namespace (DOCKER-USER, ...) go:
        # back to what dockerd had made when the lab came up.
        boot_rules = host.iptables_boot.read_text() if host.iptables_boot.is_file() else None
        if boot_rules is not None and _normalized_rules(_netns_iptables_save(host)) != _normalized_rules(boot_rules):
            _run(["nsenter", f"--net={host.netns_path}", "--", "iptables-restore", "-w"], input=boot_rules)
        if host.has_sshd and host.sshd_pid() is None:
            _start_sshd(host)
        for directory in (host.iso_dir, host.data_dir, host.xcatfab_state_dir):
            _empty_dir(directory)

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
            proc = _run(["ip", "-n", host.netns, "-j", what, "show"])
            snap[what] = json.loads(proc.stdout or "[]")
        for kind, listing in (("containers", ["ps", "-aq", "--no-trunc"]),
                              ("networks", ["network", "ls", "-q", "--no-trunc"]),
                              ("images", ["image", "ls", "-q", "--no-trunc"])):
            ids = host.docker(*listing).stdout.split()
            if not ids:
                snap[kind] = []
                continue
            inspect = {"containers": "container", "networks": "network", "images": "image"}[kind]
            snap[kind] = json.loads(host.docker(inspect, "inspect", *sorted(set(ids))).stdout)
            for obj in snap[kind]:
                # Docker lists mounts in Go map order: sort them so equal states compare equal.
                if obj.get("Mounts"):
                    obj["Mounts"].sort(key=lambda m: (m.get("Destination") or "", m.get("Source") or ""))
        snap["files"] = {}
        for root in (host.etc_dir, host.iso_dir, host.data_dir, host.xcatfab_state_dir):
            snap["files"].update(_tree_digest(root))
        snap["iptables"] = _normalized_rules(_netns_iptables_save(host))
        snap["pids"] = {"sshd": host.sshd_pid(), "dockerd": host.dockerd_pid()}
        return snap


class EgressCounter:
    """Bytes the controller sends to each lab host, counted by the kernel: one
    iptables counting rule (no target) per host address on OUTPUT, tagged so
    that only these rules are removed. Independent of what xcatfab reports.

        with EgressCounter(lab, ["lab1", "lab2"], "my-tag") as egress:
            ...
        sent = egress.read()   # {"lab1": bytes, "lab2": bytes}
    """

    def __init__(self, lab: "Lab", hosts: Iterable[str], tag: str):
        self.ips = {name: lab.host(name).ip for name in hosts}
        self.tag = tag

    def _rule(self, ip: str) -> list:
        return ["OUTPUT", "-o", BRIDGE, "-d", ip, "-m", "comment", "--comment", self.tag]

    def __enter__(self) -> "EgressCounter":
        for ip in self.ips.values():
            _run(["iptables", "-w", "-I", *self._rule(ip)])
        return self

    def __exit__(self, *exc) -> None:
        for ip in self.ips.values():
            _run(["iptables", "-w", "-D", *self._rule(ip)], check=False)

    def read(self) -> dict:
        out = _run(["iptables", "-w", "-L", "OUTPUT", "-v", "-x", "-n"]).stdout
        counts = {}
        for line in out.splitlines():
            fields = line.split()  # pkts bytes [target] prot opt in out source destination /* tag */
            if self.tag in fields:
                for ip in self.ips.values():
                    if ip in fields:
                        counts[ip] = int(fields[1])
        return {name: counts.get(ip, 0) for name, ip in self.ips.items()}


def received_bytes(lab: "Lab", name: str) -> int:
    """Bytes host ``name`` received from anyone: what its veth's root-namespace end sent."""
    return int(Path(f"/sys/class/net/{lab.host(name).veth}/statistics/tx_bytes").read_text())


# --------------------------------------------------------------------------- small helpers


def _run(argv: list, *, check: bool = True, env: Optional[dict] = None, timeout: float = 300,
         input: Optional[str] = None, cwd=None) -> subprocess.CompletedProcess:
    """Run ``argv`` and capture its output; raise :class:`LabError` on failure."""
    full_env = None
    if env:
        full_env = dict(os.environ)
        full_env.update(env)
    try:
        proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=full_env,
                              timeout=timeout, input=input, cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timed out after {timeout}s: {shlex.join(map(str, argv))}") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise LabError(f"failed (exit {proc.returncode}): {shlex.join(map(str, argv))}\n{detail}")
    return proc


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` (parents created) with ``mode``, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _cmdline(pid: int) -> Optional[str]:
    """The process's command line with spaces between arguments, or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip() or None


def _live_pid(pidfile: Path, marker: str) -> Optional[int]:
    """The pid in ``pidfile`` when that process is alive and its command line has ``marker``.

    The marker check keeps a recycled pid from ever being taken for a lab process.
    """
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    cmdline = _cmdline(pid)
    return pid if cmdline and marker in cmdline else None


def _stop_pid(pid: Optional[int], marker: str, timeout: float = 20) -> bool:
    """SIGTERM ``pid`` if its command line has ``marker``, SIGKILL after ``timeout``.

    Returns True when a process was signalled.
    """
    if not pid:
        return False
    cmdline = _cmdline(pid)
    if not cmdline or marker not in cmdline:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    if not _wait_gone([pid], timeout):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _wait_gone([pid], 5)
    return True


def _wait_gone(pids: Iterable[int], timeout: float) -> bool:
    """Wait until none of ``pids`` exists (zombies of our own children are reaped)."""
    deadline = time.monotonic() + timeout
    pids = list(pids)
    while True:
        alive = []
        for pid in pids:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            status = Path(f"/proc/{pid}/stat")
            try:
                # A zombie that is not our child goes away with its parent; treat it as gone.
                if status.read_text().split(") ", 1)[1].startswith("Z"):
                    continue
                alive.append(pid)
            except (OSError, IndexError):
                pass
        if not alive:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    """Poll ``check`` until it is true; raise :class:`LabError` naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _tcp_banner(ip: str, port: int, timeout: float = 2.0) -> str:
    """The first line a TCP server sends (sshd: ``SSH-2.0-...``), or '' if none."""
    try:
        with socket.create_connection((ip, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(256).decode(errors="replace").strip()
    except OSError:
        return ""


def _docker_api(sock_path: Path, path: str, timeout: float = 3.0) -> Optional[tuple[int, bytes]]:
    """GET ``path`` from a Docker engine's unix socket: (status, body), or None if it does not answer.

    A few lines of HTTP/1.0 keep the health check free of subprocesses, so a
    warm ``lab.up`` returns in well under a second.
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(sock_path))
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except OSError:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None
    return status, body


def _engine_answers(host: LabHost) -> bool:
    reply = _docker_api(host.docker_sock, "/_ping")
    return bool(reply and reply[0] == 200)


def _has_base_image(host: LabHost) -> bool:
    reply = _docker_api(host.docker_sock, f"/images/{BASE_IMAGE}/json")
    return bool(reply and reply[0] == 200)


def _netns_iptables_save(host: LabHost) -> str:
    """``iptables-save`` of the host's namespace."""
    return _run(["nsenter", f"--net={host.netns_path}", "--", "iptables-save"]).stdout


def _normalized_rules(saved: str) -> list[str]:
    """An ``iptables-save`` text without comments and packet counters, for comparison."""
    return [re.sub(r" \[\d+:\d+\]$", "", line) for line in saved.splitlines()
            if line.strip() and not line.startswith("#")]


def _tree_digest(root: Path) -> dict:
    """``{path: sha256 or 'dir' or 'link -> target'}`` of everything under ``root``."""
    result = {}
    if not root.exists():
        return result
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            result[str(Path(dirpath, d))] = "dir"
        for f in filenames:
            p = Path(dirpath, f)
            if p.is_symlink():
                result[str(p)] = f"link -> {os.readlink(p)}"
            else:
                try:
                    result[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
                except OSError as exc:
                    result[str(p)] = f"unreadable: {exc.strerror}"
    return result


def _empty_dir(directory: Path) -> None:
    """Remove everything inside ``directory`` (created if missing), never crossing mounts."""
    directory.mkdir(parents=True, exist_ok=True)
    for entry in directory.iterdir():
        _run(["rm", "-rf", "--one-file-system", "--", str(entry)])


def _process_table() -> list[dict]:
    """Every process: pid, ppid, argv0 basename, command line, net ns inode, cgroup text."""
    procs = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            stat = Path(f"/proc/{pid}/stat").read_text()
            cgroup = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            continue
        try:
            netns = os.stat(f"/proc/{pid}/ns/net").st_ino
        except OSError:
            netns = None
        argv = raw.split(b"\0")
        procs.append({
            "pid": pid,
            "ppid": int(stat.rsplit(")", 1)[1].split()[1]),
            "prog": os.path.basename(argv[0].decode(errors="replace")) if argv and argv[0] else "",
            "cmdline": raw.replace(b"\0", b" ").decode(errors="replace").strip(),
            "netns": netns,
            "cgroup": cgroup,
            "zombie": stat.rsplit(")", 1)[1].split()[0] == "Z",
        })
    return procs


def _own_lineage() -> set[int]:
    """This process and its ancestors: never signalled by a sweep."""
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return pids


def _netns_inodes(names: Iterable[str]) -> dict[int, str]:
    """Inode of each existing lab namespace's nsfs file -> namespace name."""
    inodes = {}
    for name in names:
        try:
            inodes[os.stat(f"/run/netns/{name}").st_ino] = name
        except OSError:
            pass
    return inodes


def lab_processes(state: Optional[Path] = None) -> list[dict]:
    """Every live process that belongs to the lab, found without trusting pidfiles.

    A process belongs to the lab when it runs in a lab network namespace (sshd,
    dockerd and what they started), or in a lab container's cgroup, or is one
    of the lab's daemons (dockerd, containerd, shims, sshd, gpg-agent, the repo
    server) whose command line names the lab's state or run directory. This
    process and its ancestors are never included.
    """
    state = state or state_dir()
    markers = (str(state) + "/", str(RUN_DIR) + "/")
    inodes = _netns_inodes(_lab_netns_names())
    mine = _own_lineage()
    found = []
    for proc in _process_table():
        if proc["pid"] in mine or proc["zombie"]:
            continue
        reason = None
        if proc["netns"] in inodes:
            reason = f"in netns {inodes[proc['netns']]}"
        elif f"/{CGROUP_PARENT}/" in proc["cgroup"]:
            reason = "in a lab container cgroup"
        elif (proc["prog"] in LAB_DAEMONS or proc["prog"].startswith("containerd-shim")) and any(
                m in proc["cmdline"] + "/" for m in markers):
            reason = "names a lab path"
        if reason:
            proc["reason"] = reason
            found.append(proc)
    return found


def _lab_netns_names() -> list[str]:
    """Names of the lab's network namespaces that exist now (``ip netns list``)."""
    try:
        out = _run(["ip", "netns", "list"], check=False).stdout
    except LabError:
        return []
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if LAB_NETNS_RE.match(n)]


def _kill_orphans_in_netns(host: LabHost) -> list[int]:
    """Kill what SSH sessions left running in ``host``'s namespace (e.g. rollback sleepers).

    Kept alive: the host's sshd and its session processes, its dockerd and
    everything dockerd started, and containerd shims. What remains in the
    namespace was left behind by a session (a ``sleep N; rollback`` job
    detached with setsid/nohup) and is killed. Returns the pids killed.
    """
    inode = _netns_inodes([host.netns])
    if not inode:
        return []
    procs = {p["pid"]: p for p in _process_table()}
    keep_roots = {p for p in (host.sshd_pid(), host.dockerd_pid()) if p}
    mine = _own_lineage()

    def descends_from_kept(pid: int) -> bool:
        seen = set()
        while pid in procs and pid not in seen:
            if pid in keep_roots:
                return True
            seen.add(pid)
            pid = procs[pid]["ppid"]
        return False

    victims = [p["pid"] for p in procs.values()
               if p["netns"] in inode and not p["zombie"] and p["pid"] not in mine
               and not p["prog"].startswith("containerd-shim")
               and not descends_from_kept(p["pid"])]
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _wait_gone(victims, 5)
    return victims


# --------------------------------------------------------------------------- base image


def _base_tarball() -> Path:
    return cache_dir() / f"{DEBIAN_SUITE}-minbase.tar"


def _base_recipe() -> dict:
    """What the cached tarball was made from; a change makes it be rebuilt."""
    return {"suite": DEBIAN_SUITE, "variant": "minbase", "include": sorted(BASE_PACKAGES),
            "mirror": DEBIAN_MIRROR, "format": 2}


def ensure_base_tarball(log: Callable[[str], None] = print) -> Path:
    """The cached bookworm minbase tarball, made with debootstrap when missing or stale.

    The tree's apt sources are emptied (no mirror is reachable from the lab
    hosts) and its apt lists, caches and documentation removed. The tarball
    is kept in the cache directory across lab.down, so a warm lab.up never
    runs debootstrap.
    """
    tarball = _base_tarball()
    stamp = tarball.with_suffix(".json")
    recipe = _base_recipe()
    if tarball.exists() and stamp.exists():
        try:
            if json.loads(stamp.read_text()) == recipe:
                return tarball
        except ValueError:
            pass
    tarball.parent.mkdir(parents=True, exist_ok=True)
    work = tarball.with_suffix(".tree")
    _remove_tree(work)
    log(f"debootstrap {DEBIAN_SUITE} (minbase) into {work} (once; cached in {tarball.parent})")
    started = time.monotonic()
    _run(["debootstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES),
          DEBIAN_SUITE, work, DEBIAN_MIRROR], timeout=1800)
    (work / "etc/apt/sources.list").write_text("")
    for pattern in ("etc/apt/sources.list.d/*", "var/lib/apt/lists/*", "var/cache/apt/*.bin",
                    "var/cache/apt/archives/*.deb", "usr/share/doc/*", "usr/share/man/*",
                    "usr/share/info/*", "var/log/*.log", "var/log/apt/*"):
        for path in work.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    partial = tarball.with_suffix(".tar.partial")
    _run(["tar", "--numeric-owner", "--xattrs", "-C", work, "-cf", partial, "."], timeout=600)
    os.replace(partial, tarball)
    stamp.write_text(json.dumps(recipe))
    _remove_tree(work)
    log(f"base tarball ready in {time.monotonic() - started:.0f}s: {tarball}")
    return tarball


def _remove_tree(path: Path) -> None:
    """Remove ``path`` after unmounting anything a killed debootstrap left mounted in it."""
    if not path.exists():
        return
    _unmount_under([path])
    _run(["rm", "-rf", "--one-file-system", "--", path])


def import_base_image(host: LabHost, tarball: Path) -> bool:
    """``docker import`` the base tarball into ``host``'s engine unless it has it; True if imported."""
    if _has_base_image(host):
        return False
    host.docker("import", "--change", 'CMD ["/bin/bash"]', "--message", "debootstrap minbase "
                + DEBIAN_SUITE + " (xcatfab lab)", tarball, BASE_IMAGE, timeout=900)
    for tag in BASE_IMAGE_TAGS[1:]:
        host.docker("tag", BASE_IMAGE, f"{BASE_IMAGE_REPO}:{tag}")
    return True


# --------------------------------------------------------------------------- stand-in repository


def _build_standin_deb(out: Path, log: Callable[[str], None]) -> Optional[Path]:
    """Build the stand-in xCAT .deb with tests/standin/build_deb.py; None if that is missing."""
    builder = PROJECT_DIR / "tests" / "standin" / "build_deb.py"
    if not builder.exists():
        log(f"WARNING: {builder} is missing: the xcat-core repository is served empty")
        return None
    out.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, builder, out], cwd=PROJECT_DIR, timeout=300)
    debs = sorted(out.glob("xcat_*_all.deb"))
    if not debs:
        raise LabError(f"{builder} made no xcat_*_all.deb in {out}")
    return debs[-1]


def build_repos(state: Path, log: Callable[[str], None] = print) -> bool:
    """Make the signed stand-in repositories under STATE/repo; True if xcat-core has the package.

    ``xcat-core`` holds the stand-in xCAT package, ``xcat-dep`` is empty but
    valid; both have dists/<suite>/main/binary-amd64/Packages(.gz), Release,
    Release.gpg and InRelease, signed with a key generated into STATE/gnupg,
    whose armored public key is served as /xcat-lab.asc.
    """
    repo_root = state / "repo"
    gnupg = state / "gnupg"
    gnupg.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = {"GNUPGHOME": str(gnupg)}
    gpg = ["gpg", "--batch", "--quiet", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""]
    try:
        _run(gpg + ["--quick-gen-key", "xcatfab lab stand-in repository (NOT xCAT) <lab@xcatfab.invalid>",
                    "ed25519", "sign", "0"], env=env)
        _write(repo_root / REPO_KEY_NAME, _run(gpg + ["--armor", "--export"], env=env).stdout)
        deb = _build_standin_deb(state / "standin", log)
        for repo, debs in (("xcat-core", [deb] if deb else []), ("xcat-dep", [])):
            top = repo_root / repo
            pool = top / "pool" / "main"
            pool.mkdir(parents=True, exist_ok=True)
            for d in debs:
                shutil.copy2(d, pool / d.name)
            dist = top / "dists" / REPO_SUITE
            index_dir = dist / "main" / "binary-amd64"
            index_dir.mkdir(parents=True, exist_ok=True)
            packages = _run(["dpkg-scanpackages", "--multiversion", "pool", "/dev/null"], cwd=top).stdout
            (index_dir / "Packages").write_text(packages)
            _run(["gzip", "-9nkf", index_dir / "Packages"])
            files = []
            for rel in ("main/binary-amd64/Packages", "main/binary-amd64/Packages.gz"):
                data = (dist / rel).read_bytes()
                files.append({"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
            date = _dt.datetime.now(_dt.timezone.utc).strftime("%a, %d %b %Y %H:%M:%S UTC")
            (dist / "Release").write_text(render(
                "lab/Release.j2", label=repo, suite=REPO_SUITE, date=date, files=files,
                description=f"xcatfab lab {repo}: stand-in packages, NOT xCAT"))
            _run(gpg + ["--yes", "--digest-algo", "SHA256", "--clearsign", "-o", dist / "InRelease",
                        dist / "Release"], env=env)
            _run(gpg + ["--yes", "--digest-algo", "SHA256", "-abs", "-o", dist / "Release.gpg",
                        dist / "Release"], env=env)
    finally:
        # gpg leaves an agent running; it was started by us, so stop it here.
        _run(["gpgconf", "--kill", "all"], env=env, check=False)
    return deb is not None


def _start_server(state: Path, name: str, argv: list, address: str, cwd: Path) -> int:
    """Start a lab server (STATE/NAME.pid, STATE/NAME.log); wait until it listens on ``address`` (ip:port)."""
    log = open(state / f"{name}.log", "ab")
    proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True, cwd=str(cwd))
    log.close()
    (state / f"{name}.pid").write_text(f"{proc.pid}\n")

    def answers() -> bool:
        if proc.poll() is not None:
            raise LabError(f"the lab's {name} server exited; see {state / (name + '.log')}")
        try:
            with socket.create_connection((ip, int(port)), timeout=1):
                return True
        except OSError:
            return False

    ip, port = address.rsplit(":", 1)
    _wait_for(answers, 15, f"the lab's {name} server on {address}")
    return proc.pid


def _start_repo_server(state: Path) -> int:
    """Serve STATE/repo (and nothing else of STATE) on 198.18.0.1:8089; return the pid."""
    return _start_server(state, "http", [sys.executable, "-m", "http.server", REPO_PORT, "--bind", CONTROLLER_IP,
                                         "--directory", state / "repo"], f"{CONTROLLER_IP}:{REPO_PORT}",
                         state / "repo")


def _start_registry(state: Path, controller: LabHost) -> int:
    """Run Debian's docker-registry on 198.18.0.2:5000 (the controller engine's namespace); return the pid."""
    config = state / "registry.yml"
    _write(config, render("lab/registry.yml.j2", root=str(state / "registry"), addr=REGISTRY))
    return _start_server(state, "registry", ["nsenter", f"--net={controller.netns_path}", "--",
                                             "docker-registry", "serve", config], REGISTRY, state)


def _registry_pid(state: Path) -> Optional[int]:
    return _live_pid(state / "registry.pid", str(state / "registry.yml"))


def _repo_server_pid(state: Path) -> Optional[int]:
    return _live_pid(state / "http.pid", f"--directory {state / 'repo'}")


# --------------------------------------------------------------------------- network


def _iptables_rules() -> list[list[str]]:
    """The lab's rules as ``iptables`` argument lists (without -A/-I and chain)."""
    tag = ["-m", "comment", "--comment", RULE_COMMENT]
    return [
        # Bridged lab traffic (when br_netfilter is loaded) goes through FORWARD.
        ["FORWARD", "-i", BRIDGE, "-o", BRIDGE, *tag, "-j", "ACCEPT"],
        # The controller never routes lab traffic anywhere else, in either direction.
        ["FORWARD", "-i", BRIDGE, "!", "-o", BRIDGE, *tag, "-j", "DROP"],
        ["FORWARD", "!", "-i", BRIDGE, "-o", BRIDGE, *tag, "-j", "DROP"],
        # Nor does a lab host reach the machine's other addresses.
        ["INPUT", "-i", BRIDGE, "!", "-d", CONTROLLER_IP, *tag, "-j", "DROP"],
    ]


def _add_iptables_rules() -> None:
    # Inserted from the last so they end up first, in order, ahead of anything
    # else (a root-namespace Docker's FORWARD DROP policy, for one).
    counters: dict[str, int] = {}
    for rule in _iptables_rules():
        counters[rule[0]] = counters.get(rule[0], 0) + 1
        _run(["iptables", "-w", "-I", rule[0], str(counters[rule[0]]), *rule[1:]])


def lab_iptables_rules() -> list[str]:
    """The lab's rules now present (``iptables -S`` lines carrying the lab comment)."""
    out = _run(["iptables", "-w", "-S"], check=False).stdout
    return [line for line in out.splitlines() if f"--comment {RULE_COMMENT}" in line
            or f'--comment "{RULE_COMMENT}"' in line]


def _remove_iptables_rules() -> None:
    for line in lab_iptables_rules():
        args = shlex.split(line)
        if args and args[0] == "-A":
            _run(["iptables", "-w", "-D", *args[1:]], check=False)


def _link_names() -> list[str]:
    return [link["ifname"] for link in json.loads(_run(["ip", "-j", "link", "show"]).stdout or "[]")]


def _make_bridge() -> None:
    # IPv6 off before the link is up, so it never gets a link-local address.
    _run(["ip", "link", "add", BRIDGE, "address", "02:58:46:ff:00:01", "type", "bridge",
          "stp_state", "0", "forward_delay", "0"])
    _sysctl_disable_ipv6(BRIDGE)
    _run(["ip", "addr", "add", f"{CONTROLLER_IP}/{PREFIX}", "dev", BRIDGE])
    _run(["ip", "link", "set", BRIDGE, "up"])


def _sysctl_disable_ipv6(ifname: str) -> None:
    Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6").write_text("1\n")


def _make_netns(host: LabHost) -> None:
    """Namespace, veth pair (eth0 inside), address, lo, default route, no IPv6."""
    _run(["ip", "netns", "add", host.netns])
    host.in_netns("sh", "-c", "for f in all default lo; do echo 1 > /proc/sys/net/ipv6/conf/$f/disable_ipv6; done")
    _run(["ip", "link", "add", host.veth, "address", host.veth_mac, "type", "veth",
          "peer", "name", "eth0", "address", host.mac, "netns", host.netns])
    _sysctl_disable_ipv6(host.veth)
    _run(["ip", "link", "set", host.veth, "master", BRIDGE, "up"])
    batch = "\n".join([
        "link set lo up",
        f"addr add {host.host_ip} dev eth0",
        "link set eth0 up",
        f"route add default via {CONTROLLER_IP} dev eth0",
    ]) + "\n"
    host.in_netns("sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6")
    _run(["ip", "-n", host.netns, "-batch", "-"], input=batch)


def _make_uts(host: LabHost) -> None:
    """A UTS namespace with hostname ``host.name``, kept by a bind mount under RUN_DIR/uts."""
    _run(["touch", host.uts_path])
    _run(["unshare", f"--uts={host.uts_path}", "hostname", host.name])


def _prepare_uts_dir() -> None:
    # Namespace files can only be bind-mounted onto a private mount (as ip netns does).
    uts = RUN_DIR / "uts"
    uts.mkdir(parents=True, exist_ok=True)
    _run(["mount", "--bind", uts, uts])
    _run(["mount", "--make-private", uts])


# --------------------------------------------------------------------------- daemons


def _dockerd_flags(host: LabHost) -> list[tuple[str, str]]:
    """The (flag, value) pairs of ``host``'s dockerd; rendered into its restart-dockerd script.

    Network settings are flags, not daemon.json keys, so the lab's daemon.json
    starts empty as on a fresh host (dockerd refuses a setting given both ways).
    """
    return [
        ("--data-root", str(host.docker_root)),
        ("--exec-root", str(host.exec_root)),
        ("-H", host.docker_host),
        ("--pidfile", str(host.dockerd_pidfile)),
        ("--config-file", str(host.daemon_json)),
        # docker0 and address pools in benchmarking space, not Docker's 172.17/16.
        ("--bip", ENGINE_BRIDGE_IP),
        ("--default-address-pool", ENGINE_ADDRESS_POOL),
        # Containers' DNS goes to the controller's lab address, never off the machine.
        ("--dns", CONTROLLER_IP),
        # The lab's registry speaks plain HTTP (image_source=pull tests).
        ("--insecure-registry", REGISTRY),
        ("--cgroup-parent", f"/{CGROUP_PARENT}/{host.name}"),
    ]


def _write_host_files(host: LabHost, lab_hosts: list[LabHost], state: Path) -> None:
    """Per-host /etc (under /etc/netns), sshd config and key, dockerd script, per-host dirs."""
    host.dir.mkdir(parents=True, exist_ok=True)
    for d in (host.iso_dir, host.data_dir, host.xcatfab_state_dir):
        d.mkdir(parents=True, exist_ok=True)
    ctx = {"host": _host_ctx(host), "hosts": [_host_ctx(h) for h in lab_hosts], "controller_ip": CONTROLLER_IP}
    _write_etc_files(host, lab_hosts)
    _write(host.daemon_json, render("lab/daemon.json.j2"))
    _write(host.restart_dockerd, render("lab/restart-dockerd.j2", dockerd_flags=_dockerd_flags(host),
                                        daemon_path=DAEMON_PATH,
                                        anchor_pidfile=str(state / "http.pid"), **ctx), mode=0o755)
    if host.has_sshd:
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{host.name}", "-f", host.host_key])
        _write(host.sshd_config, render("lab/sshd_config.j2", authorized_keys=str(state / "authorized_keys"),
                                        admin_user=ADMIN_USER, **ctx), mode=0o600)


#: Files of /etc/netns/labN that `ip netns exec` bind-mounts one by one over /etc.
ETC_FILES = {"hosts": "lab/hosts.j2", "hostname": "lab/hostname.j2", "resolv.conf": "lab/resolv.conf.j2"}


def _write_etc_files(host: LabHost, lab_hosts: list[LabHost]) -> None:
    """Write the host's /etc files under /etc/netns/labN, in place.

    In place, not by rename: sshd's mount namespace has each file bind-mounted
    by inode, so a renamed-over file would never reach its sessions.
    """
    ctx = {"host": _host_ctx(host), "hosts": [_host_ctx(h) for h in lab_hosts], "controller_ip": CONTROLLER_IP}
    host.etc_dir.mkdir(parents=True, exist_ok=True)
    for name, template in ETC_FILES.items():
        with open(host.etc_dir / name, "w") as fh:
            fh.write(render(template, **ctx))


def _host_ctx(host: LabHost) -> dict:
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


def _start_sshd(host: LabHost) -> int:
    """Start ``host``'s sshd in its network and UTS namespaces; return its pid."""
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    host.sshd_pidfile.unlink(missing_ok=True)
    # A clean environment: nothing of the caller's (DOCKER_HOST, proxies, ...) reaches sessions.
    _run(["env", "-i", f"PATH={DAEMON_PATH}", "LANG=C.UTF-8",
          "nsenter", f"--uts={host.uts_path}", "--", "ip", "netns", "exec", host.netns,
          "/usr/sbin/sshd", "-f", host.sshd_config, "-E", host.sshd_log])
    _wait_for(lambda: host.sshd_pid() is not None and _tcp_banner(host.ip, 22).startswith("SSH-"),
              20, f"sshd of {host.name} on {host.ip}:22")
    return host.sshd_pid()


def _start_dockerd(host: LabHost) -> int:
    """(Re)start ``host``'s dockerd with its restart-dockerd script; return its pid."""
    _run([host.restart_dockerd], timeout=180)
    pid = host.dockerd_pid()
    if pid is None:
        raise LabError(f"dockerd of {host.name} did not stay up; see {host.dockerd_log}")
    return pid


def _create_admin_user(state: Path) -> bool:
    """Create the sudo test user with a fresh password in STATE; True if created now."""
    password = secrets.token_urlsafe(18)
    created = False
    if _run(["getent", "passwd", ADMIN_USER], check=False).returncode != 0:
        _run(["useradd", "--create-home", "--shell", "/bin/bash", "--comment", ADMIN_MARKER, ADMIN_USER])
        created = True
    elif _admin_gecos() != ADMIN_MARKER:
        raise LabError(f"user {ADMIN_USER} exists and was not made by the lab; remove or rename it first")
    # On stdin, never on a command line (every process's argv is visible to all).
    _run(["chpasswd"], input=f"{ADMIN_USER}:{password}\n")
    _write(state / f"{ADMIN_USER}.password", password + "\n", mode=0o600)
    SUDOERS_FILE.parent.mkdir(mode=0o750, exist_ok=True)
    _write(SUDOERS_FILE, render("lab/sudoers.j2", admin_user=ADMIN_USER,
                                password_file=str(state / f"{ADMIN_USER}.password")), mode=0o440)
    check = _run(["visudo", "-c", "-q", "-f", SUDOERS_FILE], check=False)
    if check.returncode != 0:
        SUDOERS_FILE.unlink()
        raise LabError(f"rendered sudoers file is invalid: {check.stderr or check.stdout}")
    return created


def _admin_gecos() -> Optional[str]:
    proc = _run(["getent", "passwd", ADMIN_USER], check=False)
    if proc.returncode != 0:
        return None
    return proc.stdout.strip().split(":")[4]


# --------------------------------------------------------------------------- state record


def _record_path(state: Path) -> Path:
    return state / "lab.json"


def current_lab() -> Optional[Lab]:
    """The lab recorded in the state directory (running or not), or None."""
    state = state_dir()
    try:
        record = json.loads(_record_path(state).read_text())
    except (OSError, ValueError):
        return None
    return Lab(state_dir=state,
               hosts=[_make_host(n, state) for n in record["hosts"]],
               controller=_make_host(CONTROLLER_NETNS, state),
               http_pid=record.get("http_pid"),
               has_xcat_package=record.get("has_xcat_package", False),
               timings=record.get("timings", {}))


def _healthy(lab: Lab) -> list[str]:
    """What is wrong with a recorded lab, cheaply checked (empty list: healthy)."""
    problems = []
    if _repo_server_pid(lab.state_dir) is None:
        problems.append("repo server not running")
    if _registry_pid(lab.state_dir) is None:
        problems.append("registry not running")
    netns = set(_lab_netns_names())
    for host in lab.engines():
        if host.netns not in netns:
            problems.append(f"{host.name}: no namespace")
            continue
        if host.dockerd_pid() is None or not _engine_answers(host):
            problems.append(f"{host.name}: dockerd not answering")
        elif not _has_base_image(host):
            problems.append(f"{host.name}: base image missing")
        if host.has_sshd and (host.sshd_pid() is None or not _tcp_banner(host.ip, 22).startswith("SSH-")):
            problems.append(f"{host.name}: sshd not answering")
    if len(lab_iptables_rules()) != len(_iptables_rules()):
        problems.append("isolation rules missing")
    if _admin_gecos() != ADMIN_MARKER or not SUDOERS_FILE.exists():
        problems.append(f"sudo test user {ADMIN_USER} or its sudoers file missing")
    for path in (lab.inventory, lab.known_hosts, lab.ssh_config, lab.ssh_key, lab.env_file):
        if not path.exists():
            problems.append(f"{path} missing")
    return problems


# --------------------------------------------------------------------------- up / down / status


def lab_up(n: int = 3, log: Callable[[str], None] = print) -> Lab:
    """Bring up a lab of ``n`` hosts (lab1..labN) and return it.

    Idempotent: a healthy lab with the same hosts is returned at once. Anything
    else found (a crashed lab, a lab of another size) is taken down first,
    by recorded pids and the lab's own names only.
    """
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, dockerd, sshd, iptables)")
    if not 1 <= n <= MAX_HOSTS:
        raise LabError(f"--hosts must be between 1 and {MAX_HOSTS}")
    _check_tools()
    started = time.monotonic()
    existing = current_lab()
    if existing and len(existing.hosts) == n:
        problems = _healthy(existing)
        if not problems:
            log(f"lab is up with {n} host(s) (checked in {time.monotonic() - started:.2f}s)")
            return existing
        log("lab is not healthy (" + "; ".join(problems) + "): rebuilding it")
    if existing or _leftovers():
        lab_down(log=log)

    state = state_dir()
    state.mkdir(mode=0o755, parents=True, exist_ok=False)
    RUN_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    hosts = [_make_host(f"lab{i}", state) for i in range(1, n + 1)]
    controller = _make_host(CONTROLLER_NETNS, state)
    engines = hosts + [controller]
    lab = Lab(state_dir=state, hosts=hosts, controller=controller)
    created_paths = [str(p) for p in ENGINE_MACHINE_PATHS
                     if not p.exists() or (p / CREATED_MARKER).exists()]
    for path in ENGINE_MACHINE_PATHS:
        if str(path) in created_paths and path.suffix == "":
            path.mkdir(parents=True, exist_ok=True)
            (path / CREATED_MARKER).touch()
    # Written first, so a crash from here on is cleaned up by the next up or down.
    _write(_record_path(state), json.dumps({"hosts": [h.name for h in hosts], "complete": False,
                                            "created_paths": created_paths}, indent=1))

    # The slow parts that need no network run beside the rest.
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=4)
    try:
        return _bring_up(lab, state, engines, created_paths, pool, started, log)
    finally:
        # On failure too: no debootstrap or import keeps running behind the caller's back.
        pool.shutdown(wait=True, cancel_futures=True)


def _bring_up(lab: Lab, state: Path, engines: list[LabHost], created_paths: list[str],
              pool: concurrent.futures.ThreadPoolExecutor, started: float, log: Callable[[str], None]) -> Lab:
    """The steps of :func:`lab_up` after the state directory and record exist."""
    hosts, controller = lab.hosts, lab.controller
    timings: dict = {}

    def mark(step: str) -> None:
        timings[step] = round(time.monotonic() - started, 2)

    base = pool.submit(ensure_base_tarball, log)

    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "xcatfab-lab-client", "-f", lab.ssh_key])
    _write(state / "authorized_keys", render("lab/authorized_keys.j2",
                                             public_key=(state / "id_ed25519.pub").read_text().strip()))
    _make_bridge()
    _add_iptables_rules()
    _prepare_uts_dir()
    for host in engines:
        _make_netns(host)
        _make_uts(host)
        _write_host_files(host, hosts, state)
    mark("network")
    repos = pool.submit(build_repos, state, log)
    dockerds = [pool.submit(_start_dockerd, host) for host in engines]
    admin_created = _create_admin_user(state)
    for host in hosts:
        _start_sshd(host)
    mark("sshd")
    lab.has_xcat_package = repos.result()
    lab.http_pid = _start_repo_server(state)
    _start_registry(state, controller)
    for future in dockerds:
        future.result()
    mark("dockerd")
    tarball = base.result()
    mark("base tarball")
    for future in [pool.submit(import_base_image, host, tarball) for host in engines]:
        future.result()
    mark("base image imported")
    for host in engines:
        host.iptables_boot.write_text(_netns_iptables_save(host))

    ctx = {"hosts": [_host_ctx(h) for h in hosts], "ssh_key": str(lab.ssh_key),
           "known_hosts": str(lab.known_hosts), "ssh_config": str(lab.ssh_config),
           "inventory": str(lab.inventory), "controller_ip": CONTROLLER_IP, "prefix": PREFIX,
           "controller_docker_host": controller.docker_host,
           "repo": {"core_url": f"{lab.repo_url}/xcat-core", "dep_url": f"{lab.repo_url}/xcat-dep",
                    "key_url": f"{lab.repo_url}/{REPO_KEY_NAME}", "suite": REPO_SUITE}}
    _write(lab.known_hosts, render("lab/known_hosts.j2", **ctx))
    _write(lab.ssh_config, render("lab/ssh_config.j2", **ctx))
    _write(lab.inventory, render("lab/hosts.ini.j2", **ctx))
    _write(lab.env_file, render("lab/env.j2", **ctx))
    mark("total")
    lab.timings = timings
    _write(_record_path(state), json.dumps({
        "hosts": [h.name for h in hosts], "complete": True, "http_pid": lab.http_pid,
        "admin_user_created": admin_created, "has_xcat_package": lab.has_xcat_package,
        "created_paths": created_paths,
        "timings": timings}, indent=1))
    log(f"lab is up: {len(hosts)} host(s) in {timings['total']:.1f}s; inventory {lab.inventory}")
    return lab


def _check_tools() -> None:
    missing = [t for t in ("dockerd", "docker", "sshd", "ssh-keygen", "ip", "iptables", "nsenter",
                           "unshare", "debootstrap", "dpkg-scanpackages", "gpg", "visudo", "useradd",
                           "docker-registry")
               if not shutil.which(t) and not Path("/usr/sbin", t).exists()]
    if missing:
        raise LabError("missing tools: " + ", ".join(missing) + " (apt packages: tests/lab/apt-packages.txt)")


def _leftovers() -> bool:
    """Whether anything of a lab is on the machine (namespace, link, rule, state, /etc/netns entry)."""
    return bool(_lab_netns_names() or state_dir().exists() or RUN_DIR.exists()
                or BRIDGE in _link_names() or lab_iptables_rules()
                or any(LAB_NETNS_RE.match(p.name) for p in NETNS_ETC.glob("*")))


def _stop_engine(host: LabHost) -> None:
    """Remove the engine's containers (so no shim is left), then stop dockerd by pid."""
    pid = host.dockerd_pid()
    if pid is None:
        return
    if _engine_answers(host):
        ids = host.docker("ps", "-aq", check=False, timeout=30).stdout.split()
        if ids:
            host.docker("rm", "-f", *ids, check=False, timeout=120)
    _stop_pid(pid, f"--pidfile {host.dockerd_pidfile}", timeout=30)


def lab_down(log: Callable[[str], None] = print) -> None:
    """Take the lab down and remove every trace of it but the base-image cache.

    Stops, by pid, every process the lab started (sshd, containers, dockerd
    and its containerd, the repo server) and then sweeps whatever is still in
    a lab namespace or names a lab path (see :func:`lab_processes`); unmounts
    everything under the state and run directories; deletes the namespaces,
    veths, bridge, iptables rules, /etc/netns entries, the sudo test user and
    its sudoers file, lab cgroups, and the state directory. Works on a
    crashed or half-built lab too.
    """
    if os.geteuid() != 0:
        raise LabError("taking the lab down needs root")
    started = time.monotonic()
    state = state_dir()
    names = set(_lab_netns_names())
    names.update(p.name for p in state.glob("lab*") if p.is_dir() and LAB_NETNS_RE.match(p.name))
    names.update(p.name for p in NETNS_ETC.glob("*") if LAB_NETNS_RE.match(p.name))
    engines = [_make_host(n, state) for n in sorted(names)]
    record: dict = {}
    try:
        record = json.loads(_record_path(state).read_text())
    except (OSError, ValueError):
        pass

    # 1. Processes, gracefully and by pid first.
    for host in engines:
        _stop_pid(host.sshd_pid(), f"-f {host.sshd_config}", timeout=10)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(engines))) as pool:
        list(pool.map(_stop_engine, engines))
    _stop_pid(_repo_server_pid(state), f"--directory {state / 'repo'}", timeout=5)
    _stop_pid(_registry_pid(state), str(state / "registry.yml"), timeout=5)
    _run(["gpgconf", "--kill", "all"], env={"GNUPGHOME": str(state / "gnupg")}, check=False)
    # 2. Whatever is left (a crash leaves shims, sessions, sleepers): TERM, then KILL.
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        leftovers = [p["pid"] for p in lab_processes(state)]
        for pid in leftovers:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        _wait_gone(leftovers, wait)
    still = lab_processes(state)
    if still:
        log("WARNING: lab processes still alive: " + ", ".join(f"{p['pid']} ({p['prog']})" for p in still))
    # 3. Mounts, namespaces, links, rules.
    _unmount_under([state, RUN_DIR])
    for name in _lab_netns_names():
        _run(["ip", "netns", "del", name], check=False)
    for name in _link_names():
        if name == BRIDGE or VETH_RE.match(name):
            _run(["ip", "link", "del", name], check=False)
    _remove_iptables_rules()
    # 4. Files, user, cgroups.
    for entry in NETNS_ETC.glob("*"):
        if LAB_NETNS_RE.match(entry.name):
            shutil.rmtree(entry, ignore_errors=True)
    if NETNS_ETC.exists() and not any(NETNS_ETC.iterdir()):
        NETNS_ETC.rmdir()
    SUDOERS_FILE.unlink(missing_ok=True)
    if _admin_gecos() == ADMIN_MARKER:
        _run(["userdel", "--remove", ADMIN_USER], check=False)
    _remove_lab_cgroups()
    _remove_created_paths(set(record.get("created_paths", []))
                          | {str(p) for p in ENGINE_MACHINE_PATHS if (p / CREATED_MARKER).exists()})
    for path in (state, RUN_DIR):
        if path.exists():
            if _mounts_under([path]):
                raise LabError(f"still mounted under {path}: " + ", ".join(_mounts_under([path])))
            _run(["rm", "-rf", "--one-file-system", "--", path])
    log(f"lab is down ({time.monotonic() - started:.1f}s)" + ("" if record else " (no lab record found)"))


def _mounts_under(roots: list[Path]) -> list[str]:
    """Mount points at or under any of ``roots`` in this mount namespace, deepest first."""
    prefixes = [str(r).rstrip("/") for r in roots]
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        target = line.split()[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
        if any(target == p or target.startswith(p + "/") for p in prefixes):
            found.append(target)
    return sorted(set(found), key=lambda t: (-t.count("/"), t))


def _unmount_under(roots: list[Path]) -> None:
    """Unmount everything at or under ``roots``, deepest first (lazily when busy)."""
    for _ in range(5):
        targets = _mounts_under(roots)
        if not targets:
            return
        for target in targets:
            if _run(["umount", target], check=False).returncode != 0:
                _run(["umount", "-l", target], check=False)


def _remove_created_paths(paths: Iterable[str]) -> None:
    """Remove machine paths the lab's engines created: a file, or a directory tree once empty."""
    for name in paths:
        path = Path(name)
        if path.is_file():
            path.unlink()
        elif path.is_dir():
            (path / CREATED_MARKER).unlink(missing_ok=True)
            for dirpath, _dirs, _files in os.walk(path, topdown=False):
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass


def _remove_lab_cgroups() -> None:
    """rmdir the (empty) cgroups lab containers were put under, in every hierarchy."""
    for top in Path("/sys/fs/cgroup").glob(f"*/{CGROUP_PARENT}"):
        for dirpath, _dirs, _files in os.walk(top, topdown=False):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass
    top = Path("/sys/fs/cgroup") / CGROUP_PARENT
    if top.is_dir():
        for dirpath, _dirs, _files in os.walk(top, topdown=False):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


def lab_status() -> dict:
    """Per host: sshd and dockerd pids and whether they are alive, whether SSH and ``docker info`` answer.

    Returns ``{"up": bool, "state_dir": ..., "repo_server": {...}, "hosts": {name: {...}}}``;
    ``up`` is true only when every check passed. SSH is checked with plain
    OpenSSH and the lab's ssh_config (host key checking on).
    """
    lab = current_lab()
    if lab is None:
        return {"up": False, "state_dir": str(state_dir()), "hosts": {},
                "leftovers": _leftovers()}
    repo_pid = _repo_server_pid(lab.state_dir)
    registry_pid = _registry_pid(lab.state_dir)
    status = {"up": True, "state_dir": str(lab.state_dir), "inventory": str(lab.inventory),
              "controller_docker_host": lab.controller_docker_host,
              "repo_server": {"pid": repo_pid, "url": lab.repo_url},
              "registry": {"pid": registry_pid, "address": lab.registry}, "hosts": {},
              "isolation_rules": len(lab_iptables_rules())}
    if repo_pid is None or registry_pid is None or status["isolation_rules"] != len(_iptables_rules()):
        status["up"] = False

    def check(host: LabHost) -> dict:
        entry = {"ip": host.ip, "dockerd_pid": host.dockerd_pid(), "sshd_pid": host.sshd_pid()}
        info = host.docker("info", "--format", "{{.Name}} {{.ServerVersion}}", check=False, timeout=20)
        entry["docker_info"] = info.stdout.strip() if info.returncode == 0 else None
        if host.has_sshd:
            ssh = _run(["ssh", "-F", lab.ssh_config, host.name, "hostname"], check=False, timeout=20)
            entry["ssh"] = ssh.stdout.strip() if ssh.returncode == 0 else None
            entry["ok"] = bool(entry["dockerd_pid"] and entry["sshd_pid"] and entry["docker_info"]
                               and entry["ssh"] == host.name)
        else:
            entry["ok"] = bool(entry["dockerd_pid"] and entry["docker_info"])
        return entry

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        for host, entry in zip(lab.engines(), pool.map(check, lab.engines())):
            status["hosts"][host.name] = entry
            status["up"] = status["up"] and entry["ok"]
    return status


# --------------------------------------------------------------------------- reset helpers


def _reset_docker(host: LabHost, images: bool) -> None:
    if host.dockerd_pid() is None or not _engine_answers(host):
        return
    ids = host.docker("ps", "-aq").stdout.split()
    if ids:
        host.docker("rm", "-f", "--volumes", *ids)
    custom = host.docker("network", "ls", "-q", "--filter", "type=custom").stdout.split()
    if custom:
        host.docker("network", "rm", *custom)
    volumes = host.docker("volume", "ls", "-q").stdout.split()
    if volumes:
        host.docker("volume", "rm", "-f", *volumes)
    if images:
        keep = {f"{BASE_IMAGE_REPO}:{t}" for t in BASE_IMAGE_TAGS}
        rows = host.docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}").stdout.split("\n")
        doomed = [r.split()[0] if not r.startswith("<none>") else r.split()[1]
                  for r in rows if r.strip() and r.split()[0] not in keep]
        if doomed:
            host.docker("image", "rm", "-f", *doomed, check=False)


def _reset_network(host: LabHost) -> None:
    """Lab address back on eth0 with the default route; only lo, eth0 and docker0 remain."""
    links = json.loads(_run(["ip", "-n", host.netns, "-j", "link", "show"]).stdout or "[]")
    addrs = json.loads(_run(["ip", "-n", host.netns, "-j", "addr", "show"]).stdout or "[]")
    cmds = []
    for link in addrs:
        for a in link.get("addr_info", []):
            if a.get("family") == "inet" and a.get("local") == host.ip and link["ifname"] != "eth0":
                cmds.append(f"addr del {a['local']}/{a['prefixlen']} dev {link['ifname']}")
    for link in links:
        if link.get("master") and link["ifname"] == "eth0":
            cmds.append("link set eth0 nomaster")
    for link in links:
        if link["ifname"] not in ("lo", "eth0", "docker0"):
            cmds.append(f"link del {link['ifname']}")
    for cmd in cmds:
        _run(["ip", "-n", host.netns, *cmd.split()], check=False)
    eth0 = json.loads(_run(["ip", "-n", host.netns, "-j", "addr", "show", "dev", "eth0"]).stdout or "[]")
    have = [a for link in eth0 for a in link.get("addr_info", []) if a.get("family") == "inet"]
    for a in have:
        if a["local"] != host.ip or a["prefixlen"] != PREFIX:
            _run(["ip", "-n", host.netns, "addr", "del", f"{a['local']}/{a['prefixlen']}", "dev", "eth0"])
    if not any(a["local"] == host.ip and a["prefixlen"] == PREFIX for a in have):
        _run(["ip", "-n", host.netns, "addr", "add", host.host_ip, "dev", "eth0"])
    _run(["ip", "-n", host.netns, "link", "set", "eth0", "address", host.mac, "up"])
    for route in json.loads(_run(["ip", "-n", host.netns, "-j", "-4", "route", "show"]).stdout or "[]"):
        if route.get("protocol") != "kernel" and route["dst"] != "default":
            _run(["ip", "-n", host.netns, "route", "del", route["dst"], "dev", route["dev"]], check=False)
    _run(["ip", "-n", host.netns, "route", "replace", "default", "via", CONTROLLER_IP, "dev", "eth0"])


# --------------------------------------------------------------------------- invoke tasks


def _print_status(status: dict) -> None:
    if not status["hosts"]:
        print(f"no lab recorded in {status['state_dir']}"
              + (" (but leftovers exist: run `inv lab.down`)" if status.get("leftovers") else ""))
        return
    repo = status["repo_server"]
    print(f"state {status['state_dir']}  inventory {status['inventory']}")
    registry = status["registry"]
    print(f"repo server {repo['url']} pid {repo['pid'] or 'NOT RUNNING'}; "
          f"registry {registry['address']} pid {registry['pid'] or 'NOT RUNNING'}; "
          f"isolation rules {status['isolation_rules']}/{len(_iptables_rules())}; "
          f"controller engine DOCKER_HOST={status['controller_docker_host']}")
    print(f"{'host':8} {'address':14} {'sshd pid':>9} {'dockerd pid':>11}  {'ssh':8} docker info")
    for name, h in status["hosts"].items():
        ssh = "-" if "ssh" not in h else (h["ssh"] and "answers" or "NO")
        print(f"{name:8} {h['ip']:14} {h['sshd_pid'] or '-':>9} {h['dockerd_pid'] or 'DEAD':>11}  "
              f"{ssh:8} {h['docker_info'] or 'NO ANSWER'}")
    print("lab is up" if status["up"] else "lab is NOT healthy")


def _exit_on_lab_error(fn):
    try:
        return fn()
    except LabError as exc:
        raise Exit(f"xcatfab lab: {exc}", code=1) from None


@task(help={"hosts": "number of lab hosts, lab1..labN (default 3)"})
def up(c, hosts=3):
    """Bring up the lab: N namespace hosts with sshd + dockerd, the stand-in xCAT repo, an inventory."""
    lab = _exit_on_lab_error(lambda: lab_up(int(hosts)))
    print(f"  inventory:   {lab.inventory}")
    print(f"  ssh:         ssh -F {lab.ssh_config} lab1")
    print(f"  build-image: export $(grep -v '^#' {lab.env_file})")


@task
def down(c):
    """Stop everything the lab started and remove its namespaces, bridge, rules, user and state."""
    _exit_on_lab_error(lab_down)


@task
def status(c):
    """Per host: sshd/dockerd pids alive, SSH answers, docker info answers (exit 1 if unhealthy)."""
    result = lab_status()
    _print_status(result)
    if not result["up"]:
        raise Exit(code=1)


ns = Collection("lab")
ns.add_task(up)
ns.add_task(down)
ns.add_task(status)
