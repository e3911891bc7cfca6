"""The remote tasks, as the collection ``fab`` loads (see fabfile.py).

    fab -H dhost1[,dhost2] deploy [--plan|--check] [--diff] [--json] [-v] [--set KEY=VALUE ...]
    fab -H dhost1 docker | image | bridge | container | xcat-config | iso
    fab rollout [--limit GROUP] [--serial N|N%] [--max-fail-percent P]
    fab -H dhost1 xcat -- lsdef compute1
    fab -H dhost1 node compute1 --bmc ADDR --bmc-user USER
    fab status | teardown | inventory

Every task validates its input first (flags, the inventory for every
selected host, secret sources): bad input is one line and exit status 2, and
no host is contacted. Every task that takes hosts runs them through the one
host executor (all hosts attempted, bounded by ``--forks``, every host in the
recap) and exits with its one rule (:mod:`tasks.runtime.executor`). Fabric
hands each task every ``-H`` entry at once (:mod:`tasks.cli.fabric_compat`);
xcatfab opens its own connections, with host-key checking
(:mod:`tasks.runtime.ssh`), using the ``fab`` configuration (ssh_config,
``-i``, ``-t``, ``--prompt-for-sudo-password``).
"""

from __future__ import annotations

import sys
from dataclasses import replace

from invoke import Collection
from invoke.exceptions import Exit

from ..ops.deploy import DeployOptions, check_required, parse_verify, run_host, step_names
from ..ops.inventory_view import print_inventory
from ..ops.node import bmc_password, node_request, run_node
from ..ops.status import print_status, read_status
from ..ops.teardown import run_teardown
from ..ops.xcatcmd import container_command, output_masker, run_xcat
from ..runtime.errors import BadInput
from ..runtime.executor import make_batches
from ..runtime.report import Output
from ..steps.iso.local import parse_bwlimit, resolve_specs, validate_local
from ..steps.iso.sources import IsoOptions
from .flags import xtask
from .runner import Flags, bad_input_exits, finish, prepare, run


def _flags(inventory, limit, set, forks, plan, check, diff, json, verbose, accept_new_host_keys,
           serial=None, max_fail_percent=None) -> Flags:
    return Flags(inventory=inventory, limit=limit, sets=list(set or []), forks=forks, plan=plan or check,
                 diff=diff, json=json, verbose=verbose, accept_new_host_keys=accept_new_host_keys,
                 serial=serial, max_fail_percent=max_fail_percent)


def run_steps(c, names, flags: Flags, targets, task: str, default_all: bool = False, table=None, verify=None):
    """Validate, then run the named steps on every selected host; recap (``table``: the recap
    table too; default: with several hosts); exit status."""
    with bad_input_exits():
        mode = parse_verify(verify)
    session = prepare(c, flags, targets, task, default_all, check=lambda cfgs: check_required(cfgs, names))
    options = DeployOptions(connect=session.connect, plan_only=flags.plan, show_diff=flags.diff, verify=mode)
    if flags.plan and len(session.configs) > 1 and session.serial:
        planned = make_batches([cfg.name for cfg in session.configs], session.serial)
        session.out.line(None, f"PLAN: {len(session.configs)} host(s) in {len(planned)} batch(es) of a real run: "
                         + "; ".join(f"{i}: {', '.join(b)}" for i, b in enumerate(planned, 1)))
    result = run(session, lambda cfg: run_host(cfg, names, options, session.out))
    return finish(session, result, table=table)


@xtask
def deploy(c, inventory=None, limit=None, set=None, plan=False, check=False, diff=False, json=False,
           verbose=False, forks=None, serial=None, max_fail_percent=None, accept_new_host_keys=False, verify=None,
           _targets=None):
    """Bare docker host -> reachable xCAT node: docker, image, bridge, container, xcat-config, iso.

    A second run on a converged host changes nothing (changed=0) and costs
    one connection and one round trip of fact reading.
    """
    flags = _flags(inventory, limit, set, forks, plan, check, diff, json, verbose, accept_new_host_keys,
                   serial, max_fail_percent)
    return run_steps(c, step_names(), flags, _targets, "deploy", verify=verify)


def _step_task(step: str, doc: str):
    def body(c, inventory=None, limit=None, set=None, plan=False, check=False, diff=False, json=False,
             verbose=False, forks=None, accept_new_host_keys=False, verify=None, _targets=None):
        flags = _flags(inventory, limit, set, forks, plan, check, diff, json, verbose, accept_new_host_keys)
        return run_steps(c, [step], flags, _targets, step, verify=verify)

    body.__doc__ = doc
    body.__name__ = step.replace("-", "_")
    return xtask(name=step)(body)


docker = _step_task("docker", "Install docker.io, merge /etc/docker/daemon.json, start dockerd.")
image = _step_task("image", "Get the xCAT image onto the host (build, ship, pull or load).")
bridge = _step_task("bridge", "Move the host's address onto the bridge (mydocker0), with rollback.")
container = _step_task("container", "Run the xCAT container with its static address on the bridge.")
xcat_config = _step_task("xcat-config", "Point xCAT's site table and networks at the static address.")


@xtask
def rollout(c, inventory=None, limit=None, set=None, plan=False, check=False, diff=False, json=False,
            verbose=False, forks=None, serial=None, max_fail_percent=None, accept_new_host_keys=False,
            verify=None, _targets=None):
    """Deploy the inventory's hosts (all, or --limit): batches, a failure threshold, a recap.

    Every step of `fab deploy` runs on each selected host, in parallel batches
    (--serial), stopping before the next batch when more than
    --max-fail-percent of a batch failed. Hosts come from the inventory, not -H.
    """
    if _targets:
        raise Exit("xcatfab: -H: rollout takes its hosts from the inventory: use --limit "
                   + ",".join(_targets) + " instead of -H", code=2)
    flags = _flags(inventory, limit, set, forks, plan, check, diff, json, verbose, accept_new_host_keys,
                   serial, max_fail_percent)
    return run_steps(c, step_names(), flags, None, "rollout", default_all=True, table=True, verify=verify)


@xtask(iterable=["src"], help={
    "src": "local ISO path or glob (repeatable); default: the inventory's isos",
    "checksums": "a SHA256SUMS file (sha256sum format) the ISOs must match",
    "copycds": "run copycds after staging (--no-copycds: only stage)",
    "bwlimit": "send at most this many MiB/s from the controller"})
def iso(c, src=None, checksums=None, copycds=True, bwlimit=None, inventory=None, limit=None, set=None,
        plan=False, check=False, json=False, verbose=False, forks=None, accept_new_host_keys=False, verify=None,
        _targets=None):
    """Stage ISOs into each host's iso_dir (verified, resumable, relayed host to host), then copycds.

    With several hosts, the controller sends each ISO once: the hosts relay
    it down a chain, each writing while forwarding, each verifying the
    sha256 (a dead host is routed around; a host that holds the ISO already
    feeds the others). Local files and checksums are checked before anything
    connects. The bytes go over plain TCP with a one-shot token (the sums over
    SSH); iso_transport=ssh in the inventory keeps every byte inside SSH.
    """
    flags = _flags(inventory, limit, set, forks, plan, check, False, json, verbose, accept_new_host_keys)
    with bad_input_exits():
        mode = parse_verify(verify)
    chosen: dict = {}

    def check_isos(configs):
        nonlocal chosen
        chosen = _chosen_isos(configs, src, checksums)

    session = prepare(c, flags, _targets, "iso", check=check_isos)
    with bad_input_exits():
        limit_mibs = parse_bwlimit(bwlimit)
    relay = None
    if len(session.configs) > 1 and not flags.plan:
        from ..steps.iso.delivery import RelayGroup  # the transfer machinery, for fab iso only

        relay = RelayGroup([cfg.name for cfg in session.configs], limit_mibs, session.out)
    step_options = {cfg.name: {"iso": IsoOptions(isos=chosen.get(cfg.name, []), copycds=copycds,
                                                 bwlimit=limit_mibs, relay=relay)} for cfg in session.configs}
    options = DeployOptions(connect=session.connect, plan_only=flags.plan, step_options=step_options, verify=mode)

    def one(cfg):
        try:
            return run_host(cfg, ["iso"], options, session.out)
        finally:
            if relay is not None:
                relay.leave(cfg.name)

    # Every host in one pool: the relay needs all of them at once.
    session = replace(session, forks=max(session.forks, len(session.configs)))
    return finish(session, run(session, one, single_batch=True))


def _chosen_isos(configs, src, checksums) -> dict:
    """host -> the validated LocalIso list it stages (one LocalIso per local file across hosts)."""
    chosen, validated = {}, {}
    for cfg in configs:
        specs = resolve_specs(cfg.isos, src, checksums)
        where = "--src" if src else cfg.where("isos")
        for local in validate_local(specs, where=where, checksums=checksums):
            validated.setdefault(local.path, local)
            chosen.setdefault(cfg.name, []).append(validated[local.path])
    if not validated:
        raise BadInput("--src", None, "no ISO to stage: give --src PATH or list isos in the inventory")
    return chosen


@xtask(name="xcat", help={"cmd": "the xCAT command as one shell command line (instead of after --)",
                          "show_passwords": "print password attribute values instead of ********"})
def xcat_task(c, cmd=None, show_passwords=False, inventory=None, limit=None, set=None, json=False,
              verbose=False, forks=None, accept_new_host_keys=False, _targets=None, _remainder=None):
    """Run an xCAT command in the container: fab -H h1,h2 xcat -- lsdef compute1.

    The words after -- are the command's argv, exactly; --cmd takes a
    command line for the container's shell instead (pipes, globs). Output is
    the command's (prefixed by host when there are several hosts); the exit
    status is the command's, the worst over all hosts (255: unreachable).
    """
    with bad_input_exits():
        command = container_command(_remainder, cmd)
    flags = _flags(inventory, limit, set, forks, False, False, False, json, verbose, accept_new_host_keys)
    session = prepare(c, flags, _targets, "xcat")
    several = len(session.configs) > 1
    out, err = Output(prefix=several), Output(stream=sys.stderr, prefix=several)
    result = run(session, lambda cfg: run_xcat(cfg, command, session.connect, out, err,
                                               output_masker(show_passwords, session.secrets)), announce=False)
    code = result.exit_code()
    if flags.json:
        finish(session, result)
    if code:
        raise Exit(code=code)
    return result


@xtask(name="node", positional=["name"], iterable=["set_attr"], help={
    "name": "the xCAT node name (e.g. compute1)", "bmc": "the node's BMC address (bmc)",
    "bmc_user": "the BMC user (bmcusername)", "groups": "comma list of groups (default for a new node: all)",
    "mgt": "hardware management (default for a new node: ipmi)",
    "set_attr": "another node attribute, ATTR=VALUE (repeatable; no passwords)",
    "prompt_bmc_password": "ask for the BMC password (else $XCATFAB_BMC_PASSWORD or $XCATFAB_BMC_PASSWORD_FILE)",
    "plan": "read the node, print what would change, change nothing"})
def node_task(c, name, bmc=None, bmc_user=None, groups=None, mgt=None, set_attr=None, prompt_bmc_password=False,
              inventory=None, limit=None, set=None, plan=False, check=False, json=False, verbose=False, forks=None,
              accept_new_host_keys=False, _targets=None):
    """Define or change an xCAT node (the guide's mkdef/chdef step) on every host.

    Creates the node when it is absent, changes only what differs when it
    exists, and reports no change when everything matches. The BMC password
    comes from $XCATFAB_BMC_PASSWORD(_FILE) or --prompt-bmc-password and
    reaches xCAT as a stanza on stdin; it is never printed.
    """
    with bad_input_exits():
        node_request(name, bmc, bmc_user, groups, mgt, set_attr)  # the flags, before the inventory
    flags = _flags(inventory, limit, set, forks, plan, check, False, json, verbose, accept_new_host_keys)
    session = prepare(c, flags, _targets, "node")
    with bad_input_exits():
        req = node_request(name, bmc, bmc_user, groups, mgt, set_attr, bmc_password(prompt_bmc_password))
    session.secrets.append(req.password)
    result = run(session, lambda cfg: run_node(cfg, req, session.connect, session.out, flags.plan))
    return finish(session, result)


@xtask(name="status")
def status_task(c, inventory=None, limit=None, set=None, json=False, verbose=False, forks=None,
                accept_new_host_keys=False, _targets=None):
    """One table for every host (default: the whole inventory): docker, image, bridge, container, address,
    xcatd, ISOs, media.

    Changes nothing; one connection and one round trip per host. Exits 1
    when a host could not be read.
    """
    flags = _flags(inventory, limit, set, forks, False, False, False, json, verbose, accept_new_host_keys)
    session = prepare(c, flags, _targets, "status", default_all=True)
    result = run(session, lambda cfg: read_status(cfg, session.connect), announce=False)
    if not flags.json:
        print_status([r.detail for r in result.reports])
    code = result.exit_code()
    if flags.json:
        finish(session, result)
    if code:
        raise Exit(code=code)
    return result


@xtask(name="teardown", help={
    "restore_network": "also put the interface back as before deploy (address, routes; bridge, "
                       "DOCKER-USER rule and netplan file removed)",
    "purge_data": "also delete data_dir (xCAT's tables, /install, logs); the image always stays",
    "plan": "connect and read facts, print what would be removed, change nothing"})
def teardown_task(c, restore_network=False, purge_data=False, inventory=None, limit=None, set=None, plan=False,
                  check=False, json=False, verbose=False, forks=None, accept_new_host_keys=False, _targets=None):
    """Remove the xCAT container, its Docker network, netns watcher and macvlan shim.

    Keeps the image, and the data unless --purge-data. --restore-network puts
    the interface back as it was before deploy, safely (undo armed, restore
    detached, confirmed from the controller). A second run has nothing to do.
    """
    flags = _flags(inventory, limit, set, forks, plan, check, False, json, verbose, accept_new_host_keys)
    session = prepare(c, flags, _targets, "teardown")
    result = run(session, lambda cfg: run_teardown(cfg, session.connect, session.out, restore_network,
                                                   purge_data, flags.plan))
    return finish(session, result)


@xtask(name="inventory", help={"host": "only this host (repeatable with -H)"})
def inventory_task(c, host=None, inventory=None, limit=None, set=None, json=False, _targets=None):
    """Print each host's resolved settings and where each came from (default, preset, group, host line, --set).

    Reads only the inventory: no host is contacted.
    """
    targets = list(_targets or []) + ([host] if host else [])
    flags = _flags(inventory, limit, set, None, False, False, False, json, False, False)
    session = prepare(None, flags, targets, "inventory", default_all=True)
    print_inventory(session.configs, as_json=json)


ns = Collection(deploy, docker, image, bridge, container, xcat_config, rollout, iso, xcat_task, node_task,
                status_task, teardown_task, inventory_task)
