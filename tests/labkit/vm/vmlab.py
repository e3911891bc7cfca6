"""The :class:`VmLab` object: a running VM lab, its files, and what tests do to its VMs.

Operations for scenario tests: :meth:`VmLab.kill` (power loss: SIGKILL to the
VM's QEMU), :meth:`VmLab.boot` (power on from its overlay), :meth:`VmLab.wait_ssh`,
:meth:`VmLab.reboot` (``systemctl reboot``, power on again, then a new boot id),
:meth:`VmLab.shutdown` (``systemctl poweroff``), and :meth:`VmLab.snapshot` /
:meth:`VmLab.restore` of a powered-off VM's disk (internal qcow2 snapshots).
Checks go through plain OpenSSH with the lab's ssh_config (host keys checked), one
master connection per VM and user (:mod:`.sshmux`).
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from . import qemu, seed, sshmux
from ._shared import LabError, _tcp_banner, _wait_for
from .base import BaseImage
from .config import ADMIN_USER, BASE_TARBALL_URL_PATH, VmHost, make_host, repo_url

#: Boot to SSH under TCG takes about 26 s alone and about twice that with two VMs on two cores.
BOOT_TIMEOUT = 300
#: How long a guest may take from ``systemctl reboot`` or ``poweroff`` until its QEMU exits.
SHUTDOWN_TIMEOUT = 180
#: Snapshot of every VM's overlay as ``vmlab.up`` made it, before its first boot (seed not yet applied).
FRESH_SNAPSHOT = "fresh"


@dataclass
class VmLab:
    """A VM lab as recorded in its state directory (``STATE/vmlab.json``).

    ``inventory`` is the xcatfab inventory (group ``vmlab``), ``ssh_config``
    lets plain OpenSSH reach each VM by name (``ssh -F <ssh_config> vm1``) with
    its host key checked against ``known_hosts``, ``ssh_key`` is the client
    key (root and the sudo user ``vmadmin``, whose password is in
    ``admin_password_file``), ``accel`` is ``kvm`` or ``tcg``.
    """

    state_dir: Path
    hosts: list[VmHost]
    base: BaseImage
    accel: str
    has_xcat_package: bool = False
    timings: dict = field(default_factory=dict)

    # -- files
    @property
    def record(self) -> Path:
        return self.state_dir / "vmlab.json"

    @property
    def inventory(self) -> Path:
        return self.state_dir / "hosts.ini"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.state_dir / "ssh_config"

    @property
    def ssh_key(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def admin_user(self) -> str:
        return ADMIN_USER

    @property
    def admin_password_file(self) -> Path:
        """The sudo user's password (mode 0600)."""
        return self.state_dir / f"{ADMIN_USER}.password"

    @property
    def repo_url(self) -> str:
        return repo_url()

    @property
    def base_tarball_url(self) -> str:
        """The bookworm minbase tarball (the lab preset's FROM image), as the VMs fetch it."""
        return f"{repo_url()}/{BASE_TARBALL_URL_PATH}"

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.hosts]

    def host(self, name: str) -> VmHost:
        """The VM called ``name``."""
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(f"no VM {name!r} in the VM lab (have {', '.join(self.names)})")

    def console_log(self, name: str) -> Path:
        """The VM's serial console log (every boot, appended)."""
        return self.host(name).console_log

    def console_tail(self, name: str, lines: int = 30) -> str:
        """The last ``lines`` lines of the VM's console, for failure messages."""
        path = self.console_log(name)
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    # -- commands
    def ssh(self, name: str, cmd: str, user: str = "root", check: bool = True, timeout: float = 120,
            input: Optional[str] = None, options: tuple = ()) -> subprocess.CompletedProcess:
        """Run ``cmd`` on the VM with plain OpenSSH and the lab's ssh_config (strict host keys)."""
        argv = self.ssh_argv(name, cmd, user, options)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"ssh {user}@{name} {cmd!r} timed out after {timeout:.0f}s") from exc
        if check and proc.returncode != 0:
            raise LabError(f"ssh {user}@{name} {cmd!r} exited {proc.returncode}\n"
                           f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
        return proc

    def ssh_argv(self, name: str, cmd: str, user: str = "root", options: tuple = ()) -> list[str]:
        """``ssh -F <ssh_config> ... -l user name cmd``, sent over the VM's master connection
        (:mod:`.sshmux`; ``options`` come first, so they win)."""
        return ["ssh", "-F", str(self.ssh_config), *options, *sshmux.options(self.state_dir, name, user),
                "-l", user, name, cmd]

    def disconnect(self, name: str) -> None:
        """End the VM's master connections (the next session opens a new one): whenever the VM
        loses power, reboots or boots, or a test may have cut it off (a hung master would make
        every session wait for its keepalives to give up)."""
        sshmux.close(self.state_dir, name)

    def _answers(self, name: str) -> Optional[str]:
        """The VM's boot id when SSH answers right now, else None."""
        if not _tcp_banner(self.host(name).ip, 22, timeout=3).startswith("SSH-"):
            return None
        try:
            proc = self.ssh(name, "cat /proc/sys/kernel/random/boot_id", check=False, timeout=30,
                            options=("-o", "ConnectTimeout=5"))
        except LabError:
            return None
        return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None

    def boot_id(self, name: str) -> str:
        """The VM's current boot id (``/proc/sys/kernel/random/boot_id``)."""
        return self.ssh(name, "cat /proc/sys/kernel/random/boot_id", timeout=30).stdout.strip()

    # -- power
    def pid(self, name: str) -> Optional[int]:
        """Pid of the VM's QEMU, or None when it is powered off."""
        return qemu.running_pid(self.host(name))

    def boot(self, name: str, wait: bool = True, timeout: float = BOOT_TIMEOUT) -> int:
        """Power the VM on from its overlay (as it was left); unless ``wait=False``, wait for SSH and
        for systemd to finish starting up (:meth:`settle`)."""
        started = time.monotonic()
        self.disconnect(name)  # a master of the VM's last boot is dead
        pid = qemu.start(self.host(name), self.base, self.accel)
        if wait:
            self.wait_ssh(name, timeout)
            answered = time.monotonic()
            state = self.settle(name, timeout)
            self._time(name, "boot", ssh=answered - started, settled=time.monotonic() - started, state=state)
        return pid

    def settle(self, name: str, timeout: float = BOOT_TIMEOUT) -> str:
        """Wait until systemd on the VM has finished starting up; return its state (``running``, ``degraded``).

        SSH answers before every unit has started (docker.service, say): a test
        that starts right after a boot would otherwise race the boot itself.
        """
        return self.ssh(name, "systemctl is-system-running --wait", check=False, timeout=timeout).stdout.strip()

    def wait_ssh(self, name: str, timeout: float = BOOT_TIMEOUT, not_boot_id: Optional[str] = None) -> str:
        """Wait until the VM answers SSH (in a boot other than ``not_boot_id``); return its boot id."""
        found: dict = {}

        def up() -> bool:
            if self.pid(name) is None:
                raise LabError(f"{name} is powered off (QEMU exited); console:\n{self.console_tail(name)}")
            boot = self._answers(name)
            if boot and boot != not_boot_id:
                found["boot"] = boot
                return True
            return False

        try:
            _wait_for(up, timeout, f"SSH on {name}", interval=1.0)
        except LabError as exc:
            raise LabError(f"{exc}; console of {name}:\n{self.console_tail(name)}") from None
        return found["boot"]

    def kill(self, name: str) -> int:
        """Power loss: SIGKILL the VM's QEMU; return the pid killed."""
        try:
            return qemu.kill(self.host(name))
        finally:
            self.disconnect(name)

    def reboot(self, name: str, timeout: float = BOOT_TIMEOUT) -> str:
        """``systemctl reboot`` on the VM: the guest shuts down and resets, which ends its QEMU
        (``-no-reboot``); the VM is powered on again from its disk. Then wait for SSH in a new
        boot and for systemd to settle; return the new boot id."""
        old = self.boot_id(name)
        pid = self.pid(name)
        started = time.monotonic()
        # The connection may drop before ssh sees the exit status: that is the reboot working.
        self.ssh(name, "systemctl reboot", check=False, timeout=30)
        self.disconnect(name)
        try:
            qemu.wait_powered_off(self.host(name), SHUTDOWN_TIMEOUT, pid)
        except LabError as exc:
            raise LabError(f"{exc}; the guest never reset after systemctl reboot; console of {name}:\n"
                           f"{self.console_tail(name)}") from None
        down = time.monotonic()
        self.boot(name, wait=False)
        try:
            boot = self.wait_ssh(name, timeout, not_boot_id=old)
        except LabError as exc:
            raise LabError(f"{exc}\n{self.post_mortem(name)}") from None
        answered = time.monotonic()
        state = self.settle(name, timeout)
        self._time(name, "reboot", shutdown=down - started, ssh=answered - down,
                   settled=time.monotonic() - down, state=state)
        return boot

    def _time(self, name: str, what: str, **parts) -> None:
        """Print where a power operation's time went (``[vmlab] vm1 reboot: shutdown 12.0s ...``):
        pytest shows it for a failed test, and with ``-rP`` for every test."""
        text = ", ".join(f"{k} {v:.1f}s" if isinstance(v, float) else f"{k} {v}" for k, v in parts.items())
        print(f"[vmlab] {name} {what}: {text}", flush=True)

    def post_mortem(self, name: str) -> str:
        """After a boot that never answered SSH: power-cycle the VM and return what that boot's
        journal (kept on disk, synced every second) says of the network and sshd."""
        try:
            self.kill(name)
            self.boot(name)
            return "journal of the boot that did not answer (journalctl -b -1):\n" + self.ssh(
                name, "journalctl -b -1 --no-pager -o short-monotonic -p info -u systemd-networkd -u ssh "
                      "-u 'xcatfab*' -u docker | tail -n 80; networkctl status eth0 mydocker0 2>&1 | head -40",
                check=False, timeout=60).stdout
        except Exception as exc:  # a post-mortem must never hide the failure it explains
            return f"(no post-mortem: {type(exc).__name__}: {exc})"

    def shutdown(self, name: str, timeout: float = SHUTDOWN_TIMEOUT) -> None:
        """``systemctl poweroff`` on the VM and wait until its QEMU has exited."""
        if self.pid(name) is None:
            return
        started = time.monotonic()
        self.ssh(name, "systemctl poweroff", check=False, timeout=30)
        self.disconnect(name)
        qemu.wait_powered_off(self.host(name), timeout)
        self._time(name, "poweroff", shutdown=time.monotonic() - started)

    # -- disks
    def _powered_off(self, name: str, what: str) -> VmHost:
        host = self.host(name)
        if qemu.running_pid(host) is not None:
            raise LabError(f"{what} needs {name} powered off (shutdown() or kill() first)")
        return host

    def snapshot(self, name: str, tag: str) -> None:
        """Record the powered-off VM's disk as ``tag`` (an internal qcow2 snapshot of its overlay)."""
        seed.snapshot(self._powered_off(name, "snapshot"), tag)

    def restore(self, name: str, tag: str) -> None:
        """Put the powered-off VM's disk back as it was at snapshot ``tag``."""
        seed.restore(self._powered_off(name, "restore"), tag)

    def reset(self, name: str, tag: str = FRESH_SNAPSHOT, wait: bool = True) -> None:
        """Power the VM off hard, put its disk back to snapshot ``tag`` and boot it.

        With the default tag the VM is as ``vmlab.up`` made it: bare, first boot.
        """
        if self.pid(name) is not None:
            self.kill(name)
        self.restore(name, tag)
        self.boot(name, wait=wait)

    def has_snapshot(self, name: str, tag: str) -> bool:
        """Whether the VM's disk has snapshot ``tag``."""
        return tag in seed.snapshots(self.host(name))

    # -- record
    def save(self, complete: bool) -> None:
        """Write ``STATE/vmlab.json``."""
        from ._shared import _write

        _write(self.record, json.dumps({
            "hosts": self.names, "base": str(self.base.dir), "accel": self.accel, "complete": complete,
            "has_xcat_package": self.has_xcat_package, "timings": self.timings,
            "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1))


def load(state: Path) -> Optional[VmLab]:
    """The VM lab recorded in ``state`` (running or not), or None."""
    try:
        record = json.loads((state / "vmlab.json").read_text())
    except (OSError, ValueError):
        return None
    return VmLab(state_dir=state, hosts=[make_host(n, state) for n in record["hosts"]],
                 base=BaseImage(Path(record["base"])), accel=record.get("accel", "tcg"),
                 has_xcat_package=record.get("has_xcat_package", False), timings=record.get("timings", {}))
