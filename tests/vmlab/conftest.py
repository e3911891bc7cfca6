"""Fixtures for the VM lab tests: Debian 12 VMs under QEMU (root only).

Every test under tests/vmlab is marked ``vmlab``. Where the tests do not run as
root they are all skipped with the reason shown in the summary (``-rs``). As
root the session brings up one VM lab of :data:`VMLAB_HOSTS` VMs, or reuses a
healthy one, and ``test_zz_vmlab_down.py`` takes it down last (a session that
stops early takes it down at its end unless ``XCATFAB_VMLAB_KEEP=1``).

Checks are independent of xcatfab's own code: plain OpenSSH with the VM lab's
ssh_config (host keys checked against its known_hosts), ``ip -j``, ``systemctl``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

#: VMs the session needs (the tests use at most two at once).
VMLAB_HOSTS = int(os.environ.get("XCATFAB_VMLAB_HOSTS", "2"))
HERE = Path(__file__).resolve().parent
NOT_ROOT_REASON = ("VM lab tests need root (taps, a bridge, iptables, QEMU): "
                   "run them as root, as .ci/run does")


def pytest_configure(config):
    config.addinivalue_line("markers", "vmlab: test against the VM lab's QEMU virtual machines (root only)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.vmlab)
            if os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason=NOT_ROOT_REASON))


@pytest.fixture(scope="session")
def vmlab():
    """The running VM lab: brought up once (or a healthy one reused), down at the end of the session."""
    from tests.labkit.vm import current_vmlab, healthy, vmlab_down, vmlab_up

    existing = current_vmlab()
    if existing and len(existing.hosts) >= VMLAB_HOSTS and not healthy(existing):
        lab = existing
    else:
        lab = vmlab_up(VMLAB_HOSTS, log=lambda msg: print(f"[vmlab] {msg}"))
    yield lab
    if current_vmlab() is not None and not os.environ.get("XCATFAB_VMLAB_KEEP"):
        vmlab_down(log=lambda msg: print(f"[vmlab] {msg}"))


@pytest.fixture(scope="session")
def vm_names(vmlab):
    """The VMs the tests may use, in order (vm1, vm2)."""
    return vmlab.names[:VMLAB_HOSTS]


@pytest.fixture(scope="session")
def vm_ssh(vmlab):
    """``vm_ssh(vm, cmd, user="root", check=True, input=None, timeout=120, options=())``.

    Plain OpenSSH with the VM lab's ssh_config (StrictHostKeyChecking yes against
    its known_hosts); returns the CompletedProcess, raising AssertionError on a
    non-zero exit when ``check``.
    """

    def run(vm: str, cmd: str, user: str = "root", check: bool = True, input: str | None = None,
            timeout: float = 120, options: tuple = ()) -> subprocess.CompletedProcess:
        argv = ["ssh", "-F", str(vmlab.ssh_config), *options, "-l", user, vm, cmd]
        proc = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"ssh {user}@{vm} {cmd!r} exited {proc.returncode}\n"
                                 f"stdout: {proc.stdout}\nstderr: {proc.stderr}\n"
                                 f"console of {vm}:\n{vmlab.console_tail(vm)}")
        return proc

    return run
