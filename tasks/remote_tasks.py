"""The remote tasks, as the Invoke collection ``fab`` loads (see fabfile.py).

    fab -H dhost1 deploy [--plan] [--inventory F] [--set KEY=VALUE ...]
    fab -H dhost1 docker | image | bridge | container | xcat-config

Each task validates the inventory (every host, every key) before anything
connects, runs the requested steps through :func:`tasks.deploy.run_host`,
prints Ansible-style results and a recap, and exits non-zero when a step
failed. Bad input exits with status 2 and one line.

Fabric hands each task a ``Connection`` per ``-H`` host; xcatfab only reads
the host name and the ``fab`` configuration from it (ssh_config, ``-i``,
``-t``, ``--prompt-for-sudo-password``) and opens its own connection with
host-key checking (tasks/ssh.py).
"""

from __future__ import annotations

from invoke import Collection, task
from invoke.exceptions import Exit

from . import bad_input_exits
from .deploy import DeployOptions, check_required, run_host, step_names
from .inventory import default_inventory_path, load_hosts
from .report import Output, print_recap
from .secret import Secret, SecretError, lookup
from .ssh import ConnectOptions

COMMON_HELP = {
    "inventory": "inventory file (default: $XCATFAB_INVENTORY or ./hosts.ini)",
    "set": "override an inventory key for this run, KEY=VALUE (repeatable)",
    "plan": "connect and read facts, print what would change, change nothing",
    "accept_new_host_keys": "record unknown host keys in known_hosts (a changed key is still refused)",
}


def split_host(text: str) -> tuple[str, list[str]]:
    """A ``-H`` entry ``[user@]host[:port]`` -> (host, its ``user=``/``port=`` settings).

    Fabric connects to the host part only; xcatfab takes the user and port
    given there as settings of that host that beat the inventory, so
    ``-H ubuntu@h`` never silently connects as the inventory's user.
    IPv6 addresses with a port are written ``[addr]:port``.
    """
    settings = []
    user, at, host = text.rpartition("@")
    if at:
        settings.append(f"user={user}")
    if host.startswith("["):
        addr, _sep, rest = host[1:].partition("]")
        host = addr
        if rest.startswith(":"):
            settings.append(f"port={rest[1:]}")
    elif host.count(":") == 1:
        host, port = host.split(":")
        settings.append(f"port={port}")
    return host, settings


def cli_targets() -> dict[str, list[str]]:
    """Every host given with ``fab -H``, in order, with the settings its entry carries."""
    try:
        from fabric.main import program

        value = program.core[0].args.hosts.value
    except Exception:
        return {}
    targets: dict[str, list[str]] = {}
    for entry in (value or "").split(","):
        if entry.strip():
            host, settings = split_host(entry.strip())
            targets.setdefault(host, []).extend(settings)
    return targets


def cli_hosts() -> list[str]:
    """Every host named with ``fab -H`` (so all are validated before the first connects)."""
    return list(cli_targets())


def cli_host_configs(c, inventory, sets) -> list:
    """Every ``-H`` host's validated settings, this task's host included (bad input: exit 2)."""
    targets = cli_targets()
    targets.setdefault(this_host(c), [])
    with bad_input_exits():
        return load_hosts(inventory or default_inventory_path(), names=list(targets), overrides=sets,
                          host_overrides=targets)


def this_host(c) -> str:
    host = getattr(c, "original_host", None)
    if not host:
        raise Exit("xcatfab: no host: run `fab -H HOST <task>`, or `fab rollout` for the inventory", code=2)
    return host


def sudo_password(c):
    """``--prompt-for-sudo-password`` (Fabric's), else $XCATFAB_SUDO_PASSWORD(_FILE)."""
    configured = c.config.get("sudo", {}).get("password")
    if configured:
        return Secret(str(configured), "--prompt-for-sudo-password")
    try:
        return lookup("XCATFAB_SUDO_PASSWORD")
    except SecretError as exc:
        raise Exit(f"xcatfab: sudo password: {exc}", code=2) from None


def connect_options(c, accept_new_host_keys=False) -> ConnectOptions:
    return ConnectOptions(accept_new_host_keys=accept_new_host_keys,
                          sudo_password=sudo_password(c), fabric_config=c.config)


def run_steps(c, names, inventory=None, set=None, plan=False, accept_new_host_keys=False):
    cfgs = cli_host_configs(c, inventory, set)
    with bad_input_exits():
        check_required(cfgs, names)
    cfg = next(cfg for cfg in cfgs if cfg.name == this_host(c))
    options = DeployOptions(connect=connect_options(c, accept_new_host_keys), plan_only=plan)
    out = Output()
    report = run_host(cfg, names, options, out)
    print_recap([report], out, table=False)
    if report.failed:
        raise Exit(code=1)
    return report


def _step_task(step, doc):
    def body(c, inventory=None, set=None, plan=False, accept_new_host_keys=False):
        run_steps(c, [step], inventory, set, plan, accept_new_host_keys)

    body.__doc__ = doc
    body.__name__ = step.replace("-", "_")
    return task(name=step, help=COMMON_HELP, iterable=["set"])(body)


@task(help=COMMON_HELP, iterable=["set"])
def deploy(c, inventory=None, set=None, plan=False, accept_new_host_keys=False):
    """Bare docker host -> reachable xCAT node: docker, image, bridge, container, xcat-config.

    A second run on a converged host changes nothing (changed=0) and costs
    one connection and one round trip of fact reading.
    """
    run_steps(c, step_names(), inventory, set, plan, accept_new_host_keys)


docker = _step_task("docker", "Install docker.io, merge /etc/docker/daemon.json, start dockerd.")
image = _step_task("image", "Get the xCAT image onto the host (build, ship, pull or load).")
bridge = _step_task("bridge", "Move the host's address onto the bridge (mydocker0), with rollback.")
container = _step_task("container", "Run the xCAT container with its static address on the bridge.")
xcat_config = _step_task("xcat-config", "Point xCAT's site table and networks at the static address.")

from .admin import node_task, status_task, teardown_task, xcat_task  # noqa: E402  (admin imports this module lazily)
from .iso import iso  # noqa: E402  (the iso task lives with its step)
from .rollout import rollout  # noqa: E402  (rollout imports this module's helpers lazily)

ns = Collection(deploy, docker, image, bridge, container, xcat_config, rollout,
                xcat_task, node_task, status_task, teardown_task, iso)
