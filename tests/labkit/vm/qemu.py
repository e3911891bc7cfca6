"""QEMU for the VM lab: the accelerator verdict, and starting and stopping one VM by its pid.

KVM is used only when a time-boxed probe boot of the guest kernel proves it
works (on these machines nested guests hang right after the kernel starts);
the verdict is cached, keyed by the host kernel, the QEMU version and the
guest kernel. Otherwise TCG: ``-accel tcg,thread=multi -cpu qemu64``.

The CPU model under TCG is ``qemu64`` (x86-64 baseline), not ``max``: with
``max`` the guest's glibc, OpenSSL and coreutils pick AVX2 and SSSE3 code paths
that TCG emulates slowly. Measured on this 2-core machine, two boots of each,
alternating: boot to systemd settled 48-51 s against 58-59 s, fork+exec 48-53 ms
against 56-68 ms, sha256 of 100 MB 2.1-3.7 s against 4.0-4.2 s. Debian 12 (and
docker.io, and the lab's bookworm image) needs no more than the baseline.

Each VM is one detached QEMU (``-daemonize``) with its pid in STATE/vmN/qemu.pid:
direct kernel boot, the qcow2 overlay as vda, the seed as a read-only vdb, a
virtio NIC on the VM's tap with its pinned MAC, the serial console appended to
STATE/vmN/console.log. A pid is signalled only when its command line names the
VM's own pidfile.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional

from ._shared import LabError, _live_pid, _run, _stop_pid, _wait_for, _write
from .base import BaseImage, cache_root
from .config import VM_CPUS, VM_MEMORY_MB, VmHost

QEMU = "qemu-system-x86_64"
#: Kernel command line of every VM (eth0 by name, console on the serial port).
KERNEL_APPEND = "root=/dev/vda rw console=ttyS0 net.ifnames=0 panic=10"
TCG = ["-accel", "tcg,thread=multi", "-cpu", "qemu64"]
KVM = ["-accel", "kvm", "-cpu", "host"]
#: How long a KVM probe boot may take to reach the initramfs (a working KVM needs a second or two).
PROBE_SECONDS = 30
#: What the guest kernel prints when it hands over to the initramfs: the probe's proof of life.
PROBE_MARK = "Run /init as init process"


def _qemu_version() -> str:
    return _run([QEMU, "--version"]).stdout.splitlines()[0].strip()


def _verdict_file() -> Path:
    return cache_root() / "accel.json"


def accelerator(base: BaseImage, log: Callable[[str], None] = print) -> str:
    """``"kvm"`` when a probe boot proves KVM works here, else ``"tcg"``; cached per kernel and QEMU."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    key = f"{os.uname().release}|{_qemu_version()}|{base.kernel_version}"
    try:
        verdicts = json.loads(_verdict_file().read_text())
    except (OSError, ValueError):
        verdicts = {}
    if key not in verdicts:
        log(f"probing KVM with a boot of the guest kernel (at most {PROBE_SECONDS}s, once per kernel and QEMU)")
        ok, detail = _probe_kvm(base)
        verdicts[key] = {"kvm": ok, "detail": detail, "probed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        _write(_verdict_file(), json.dumps(verdicts, indent=1))
    verdict = verdicts[key]
    return "kvm" if verdict["kvm"] else "tcg"


def _probe_kvm(base: BaseImage) -> tuple[bool, str]:
    """Boot the guest kernel under KVM until it starts the initramfs, within :data:`PROBE_SECONDS`."""
    console = cache_root() / "kvm-probe.console"
    console.unlink(missing_ok=True)
    argv = [QEMU, *KVM, "-m", "512", "-smp", "1", "-display", "none", "-monitor", "none", "-no-reboot",
            "-serial", f"file:{console}", "-kernel", base.kernel, "-initrd", base.initrd,
            "-append", "console=ttyS0 ignore_loglevel panic=-1"]
    proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + PROBE_SECONDS
    seen = ""
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            seen = console.read_text(errors="replace") if console.exists() else ""
            if PROBE_MARK in seen:
                return True, "the guest kernel reached its initramfs under KVM"
            time.sleep(0.5)
        if proc.poll() is not None:
            err = (proc.stderr.read() or "").strip().splitlines()
            return False, f"qemu exited {proc.returncode}: {err[-1] if err else 'no message'}"
        last = [line for line in seen.splitlines() if line.strip()]
        return False, f"no initramfs after {PROBE_SECONDS}s; last console line: {last[-1] if last else '(none)'}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        console.unlink(missing_ok=True)


def qemu_argv(host: VmHost, base: BaseImage, accel: str) -> list[str]:
    """The QEMU command line of ``host`` (detached, pidfile, console to its log).

    ``-no-reboot``: the guest's reset ends QEMU and :meth:`VmLab.reboot` powers the VM on
    again, so every boot starts in a new QEMU. Under multi-threaded TCG a warm reset once left
    the next guest kernel hung at 0.92 s (``pnp: PnP ACPI init``, docs/VMLAB.md defect 8);
    a cold start is what every other boot of the lab does.
    """
    return [str(a) for a in (
        QEMU, "-name", host.qemu_name, *(KVM if accel == "kvm" else TCG),
        "-m", VM_MEMORY_MB, "-smp", VM_CPUS, "-machine", "pc",
        "-display", "none", "-monitor", "none", "-nodefaults", "-vga", "none", "-no-reboot",
        "-chardev", f"file,id=console,path={host.console_log},append=on", "-serial", "chardev:console",
        "-kernel", base.kernel, "-initrd", base.initrd, "-append", KERNEL_APPEND,
        "-drive", f"file={host.disk},format=qcow2,if=virtio",
        "-drive", f"file={host.seed_image},format=raw,if=virtio,readonly=on",
        "-netdev", f"tap,id=n0,ifname={host.tap},script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=n0,mac={host.mac}",
        "-pidfile", host.pidfile, "-daemonize",
    )]


def _marker(host: VmHost) -> str:
    """What a QEMU of this VM has in its command line (the pidfile is the VM's own)."""
    return f"-pidfile {host.pidfile}"


def running_pid(host: VmHost) -> Optional[int]:
    """Pid of the VM's QEMU when it runs (pidfile checked against /proc/PID/cmdline), else None."""
    return _live_pid(host.pidfile, _marker(host))


def start(host: VmHost, base: BaseImage, accel: str) -> int:
    """Start the VM's QEMU detached (nothing happens when it already runs); return its pid."""
    pid = running_pid(host)
    if pid:
        return pid
    host.pidfile.unlink(missing_ok=True)
    with open(host.console_log, "a") as fh:
        fh.write(f"\n===== xcatfab VM lab: {host.name} powered on ({accel}) at "
                 f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} =====\n")
    proc = _run(qemu_argv(host, base, accel), check=False, timeout=60)
    if proc.returncode != 0:
        host.qemu_log.write_text(proc.stderr)
        raise LabError(f"QEMU of {host.name} did not start (exit {proc.returncode}): {proc.stderr.strip()}")
    pid = running_pid(host)
    if pid is None:
        raise LabError(f"QEMU of {host.name} started but is gone; see {host.console_log}")
    return pid


def stop(host: VmHost, timeout: float = 10) -> bool:
    """Power the VM off hard (SIGTERM to its QEMU, SIGKILL after ``timeout``); True if it ran."""
    pid = running_pid(host)
    stopped = _stop_pid(pid, _marker(host), timeout=timeout)
    if stopped:
        _wait_for(lambda: _exited(pid), 30, f"QEMU {pid} of {host.name} to exit")
    return stopped


def kill(host: VmHost) -> int:
    """Pull the VM's power cord: SIGKILL to its QEMU (no flush, no shutdown); return the pid."""
    pid = running_pid(host)
    if pid is None:
        raise LabError(f"{host.name} is not running")
    os.kill(pid, signal.SIGKILL)
    _wait_for(lambda: _exited(pid), 30, f"QEMU {pid} of {host.name} to exit after SIGKILL")
    return pid


def _exited(pid: int) -> bool:
    """The process and all its threads are gone (a zombie whose threads are all gone counts).

    A multi-threaded process's leader turns zombie while its other threads are
    still exiting, holding the disk image's lock; only once the last thread is
    gone are its files closed.
    """
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        threads = os.listdir(f"/proc/{pid}/task")
    except (OSError, IndexError):
        return True
    return state in ("Z", "X") and len(threads) <= 1


def wait_powered_off(host: VmHost, timeout: float, pid: Optional[int] = None) -> None:
    """Wait until the VM's QEMU (``pid``, else the running one) has exited: the guest powered
    itself off, or reset itself (``-no-reboot``)."""
    pid = pid or running_pid(host)
    if pid:
        _wait_for(lambda: _exited(pid), timeout, f"{host.name} to power off (see {host.console_log})")
