"""Invoke tasks of the netns lab: ``inv lab.up [--hosts N]``, ``inv lab.status``, ``inv lab.down``.

The collection is :data:`ns` (named ``lab``); the project's ``inv`` collection
(tasks/cli/local.py) adds it.
"""

from __future__ import annotations

from invoke import Collection, task
from invoke.exceptions import Exit

from ..common import LabError
from .lifecycle import lab_down, lab_status, lab_up
from .network import iptables_rules


def _print_services(status: dict) -> None:
    repo = status["repo_server"]
    print(f"state {status['state_dir']}  inventory {status['inventory']}")
    registry = status["registry"]
    print(f"repo server {repo['url']} pid {repo['pid'] or 'NOT RUNNING'}; "
          f"registry {registry['address']} pid {registry['pid'] or 'NOT RUNNING'}; "
          f"isolation rules {status['isolation_rules']}/{len(iptables_rules())}; "
          f"controller engine DOCKER_HOST={status['controller_docker_host']}")


def _print_hosts(hosts: dict) -> None:
    print(f"{'host':8} {'address':14} {'sshd pid':>9} {'dockerd pid':>11}  {'ssh':8} docker info")
    for name, h in hosts.items():
        ssh = "-" if "ssh" not in h else (h["ssh"] and "answers" or "NO")
        print(f"{name:8} {h['ip']:14} {h['sshd_pid'] or '-':>9} {h['dockerd_pid'] or 'DEAD':>11}  "
              f"{ssh:8} {h['docker_info'] or 'NO ANSWER'}")


def print_status(status: dict) -> None:
    """The status table: the lab's services, then one line per engine."""
    if not status["hosts"]:
        print(f"no lab recorded in {status['state_dir']}"
              + (" (but leftovers exist: run `inv lab.down`)" if status.get("leftovers") else ""))
        return
    _print_services(status)
    _print_hosts(status["hosts"])
    print("lab is up" if status["up"] else "lab is NOT healthy")


def _exit_on_lab_error(fn):
    """Run ``fn``; a :class:`LabError` becomes one line on stderr and exit status 1."""
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
    print_status(result)
    if not result["up"]:
        raise Exit(code=1)


ns = Collection("lab", up, down, status)
