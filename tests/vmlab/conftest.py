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

#: VMs this session booted from their fresh disk (``vmlab.up`` or a reset). The smoke tests
#: only read vm1 (what they change, they change on vm2), so vm1 is still bare when the
#: scenarios start and the deploy from bare needs no reset of it.
FIRST_BOOT: set[str] = set()



def pytest_configure(config):
    config.addinivalue_line("markers", "vmlab: test against the VM lab's QEMU virtual machines (root only)")


#: Order of the VM tier's modules: the smoke tests see bare VMs, the scenarios reuse
#: each other's VM states where they can, and the last module takes the lab down.
MODULE_ORDER = ("test_vmlab", "test_scenarios_deploy", "test_scenarios_reboot", "test_zz_vmlab_down")


def _rank(item) -> int:
    stem = Path(str(item.fspath)).stem
    return MODULE_ORDER.index(stem) if stem in MODULE_ORDER else len(MODULE_ORDER) - 1


def pytest_collection_modifyitems(config, items):
    slots = []
    for index, item in enumerate(items):
        if HERE in Path(str(item.fspath)).resolve().parents:
            slots.append(index)
            item.add_marker(pytest.mark.vmlab)
            if os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason=NOT_ROOT_REASON))
    # Reorder the VM tier's items among their own slots only (stable within a module).
    ordered = sorted((items[i] for i in slots), key=_rank)
    for index, item in zip(slots, ordered):
        items[index] = item


@pytest.fixture(scope="session")
def vmlab():
    """The running VM lab: brought up once (or a healthy one reused), down at the end of the session."""
    from tests.labkit.vm import current_vmlab, healthy, vmlab_down, vmlab_up

    existing = current_vmlab()
    # Reused when healthy but for VMs powered off (the scenarios power vm2 off; tests boot what they need).
    problems = healthy(existing) if existing else ["no VM lab"]
    if existing and len(existing.hosts) >= VMLAB_HOSTS and all(p.endswith("QEMU not running") for p in problems):
        lab = existing
    else:
        lab = vmlab_up(VMLAB_HOSTS, log=lambda msg: print(f"[vmlab] {msg}"))
        FIRST_BOOT.update(lab.names)
    yield lab
    if current_vmlab() is not None and not os.environ.get("XCATFAB_VMLAB_KEEP"):
        vmlab_down(log=lambda msg: print(f"[vmlab] {msg}"))


@pytest.fixture(scope="session")
def scenarios(vmlab):
    """The scenario helpers (:class:`tests.vmlab.scenario.Scenarios`) on the session's VM lab.

    Scenarios run on vm1 only: the other VMs are powered off cleanly first, so
    the two cores go to the VM under test.
    """
    from .scenario import Scenarios

    for name in vmlab.names[1:]:
        vmlab.shutdown(name)
    s = Scenarios(vmlab)
    if vmlab.names[0] in FIRST_BOOT and vmlab.pid(vmlab.names[0]) is not None:
        s.mark(vmlab.names[0], "fresh")
    return s


@pytest.fixture(scope="session")
def vm_names(vmlab):
    """The VMs the smoke tests use (vm1, vm2), each bare and running.

    A VM lab reused from an earlier session may hold VMs a scenario left
    deployed or powered off: those are put back to their fresh disk first.
    """
    names = vmlab.names[:VMLAB_HOSTS]
    for name in names:
        if vmlab.pid(name) is None or vmlab.ssh(name, "command -v docker", check=False).returncode == 0:
            vmlab.reset(name)
            FIRST_BOOT.add(name)
    return names


@pytest.fixture(scope="session")
def vm_ssh(vmlab):
    """``vm_ssh(vm, cmd, user="root", check=True, input=None, timeout=120, options=())``.

    Plain OpenSSH with the VM lab's ssh_config (StrictHostKeyChecking yes against
    its known_hosts); returns the CompletedProcess, raising AssertionError on a
    non-zero exit when ``check``.
    """

    def run(vm: str, cmd: str, user: str = "root", check: bool = True, input: str | None = None,
            timeout: float = 120, options: tuple = ()) -> subprocess.CompletedProcess:
        proc = subprocess.run(vmlab.ssh_argv(vm, cmd, user, options), capture_output=True, text=True,
                              input=input, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"ssh {user}@{vm} {cmd!r} exited {proc.returncode}\n"
                                 f"stdout: {proc.stdout}\nstderr: {proc.stderr}\n"
                                 f"console of {vm}:\n{vmlab.console_tail(vm)}")
        return proc

    return run
