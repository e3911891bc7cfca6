"""Invoke tasks of the VM lab: ``inv vmlab.up [--hosts N]``, ``inv vmlab.status``, ``inv vmlab.down``.

The collection is :data:`ns` (named ``vmlab``); the project's ``inv`` collection adds it.
"""

from __future__ import annotations

from invoke import Collection, task
from invoke.exceptions import Exit

from ._shared import LabError
from .lifecycle import vmlab_down, vmlab_status, vmlab_up


def _exit_on_lab_error(fn):
    """Run ``fn``; a :class:`LabError` becomes one line on stderr and exit status 1."""
    try:
        return fn()
    except LabError as exc:
        raise Exit(f"xcatfab vmlab: {exc}", code=1) from None


def print_status(status: dict) -> None:
    """The status table: one line per VM."""
    if not status["hosts"]:
        print(f"no VM lab recorded in {status['state_dir']}"
              + (" (but leftovers exist: run `inv vmlab.down`)" if status.get("leftovers") else ""))
        return
    repo = status["repo_server"]
    print(f"state {status['state_dir']}  inventory {status['inventory']}  accelerator {status['accel']}")
    print(f"repo server {repo['url']} pid {repo['pid'] or 'NOT RUNNING'}; "
          f"isolation rules {status['isolation_rules']}/{status['expected_rules']}")
    print(f"{'vm':6} {'address':14} {'qemu pid':>9}  {'ssh':8} systemd")
    for name, h in status["hosts"].items():
        ssh = "answers" if h["ssh"] == name else "NO"
        print(f"{name:6} {h['ip']:14} {h['pid'] or 'DEAD':>9}  {ssh:8} {h['systemd'] or '-'}")
    print("VM lab is up" if status["up"] else "VM lab is NOT healthy")


@task(help={"hosts": "number of VMs, vm1..vmN (default 2)"})
def up(c, hosts=2):
    """Bring up the VM lab: N Debian 12 VMs (systemd, netplan, sshd, no docker), its apt repo, an inventory."""
    lab = _exit_on_lab_error(lambda: vmlab_up(int(hosts)))
    print(f"  inventory: {lab.inventory}")
    print(f"  ssh:       ssh -F {lab.ssh_config} vm1")
    print(f"  consoles:  {lab.state_dir}/vmN/console.log")


@task
def down(c):
    """Stop every VM and server of the VM lab; remove taps, bridge, rules, overlays and state (not the cache)."""
    _exit_on_lab_error(vmlab_down)


@task
def status(c):
    """Per VM: QEMU pid alive, SSH answers, systemd state (exit 1 if anything is unhealthy)."""
    result = vmlab_status()
    print_status(result)
    if not result["up"]:
        raise Exit(code=1)


ns = Collection("vmlab")
ns.add_task(up)
ns.add_task(down)
ns.add_task(status)
