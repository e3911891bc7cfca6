"""Day-2 tasks on deployed docker hosts: ``xcat``, ``node``, ``status``, ``teardown``.

    fab -H h1[,h2] xcat -- lsdef compute1            (argv after --, exactly)
    fab -H h1[,h2] xcat --cmd 'lsdef -t node | grep -c Object'   (a command line)
    fab -H h node compute1 --bmc A --bmc-user U [--groups G] [--mgt M]
                  [--set-attr K=V ...] [--prompt-bmc-password] [--plan]
    fab -H h1,h2 status
    fab -H h teardown [--restore-network] [--purge-data] [--plan]

Every task checks its input first (the inventory for every ``-H`` host, the
flags, the secret sources): bad input is one line and exit status 2, and no
host is contacted. Fabric calls a task once per ``-H`` host; these tasks
serve every ``-H`` host on the first call (in parallel, in a bounded pool,
output prefixed by host when there are several) and let the later calls
pass, so ``status`` prints one table and the recap is one recap.

``xcat`` runs the command in the container (``docker exec``, xCAT's profile
sourced) and exits with the command's status, the worst one over several
hosts (255: the host could not be reached; 125: the container is not
running). It exits itself, so the anonymous task Fabric appends for a ``--``
remainder (``c.run`` of the remainder on every host, fabric/executor.py
``expand_calls``) never runs. Password values in its output (``*password*=``
attributes, ``nodels`` password columns, password columns of ``tabdump``) and
any secret the run knows are masked unless ``--show-passwords``; commands that
would put a password on a command line are refused (use ``node``).

``node`` is the guide's mkdef/chdef step. The BMC password comes from
``$XCATFAB_BMC_PASSWORD``, the chmod-600 file named by
``$XCATFAB_BMC_PASSWORD_FILE``, or ``--prompt-bmc-password``, and reaches
xCAT only as a ``mkdef -z``/``chdef -z`` stanza on stdin. The node is read
with ``lsdef`` first; password values are hashed with a random salt inside
the container, so xcatfab can tell "unchanged" without ever seeing the
stored password, and a run that matches changes nothing.

``status`` reads docker, image, bridge, container, static address, xcatd
(a real TCP connection to port 3001 from the host), staged ISOs and copied
media in one round trip per host: the step fact fragments plus
``templates/host/admin-facts.sh.j2``.

``teardown`` removes the container, its Docker network, the netns watcher and
the macvlan shim (whatever exists, whatever ``network_mode`` says now), keeps
the image, and keeps ``data_dir`` unless ``--purge-data``. With
``--restore-network`` it also removes the ``DOCKER-USER`` rule and the netplan
file xcatfab added and runs ``STATE/bridge-restore.sh`` (the first rollback
script of the bridge step: the network as it was before deploy) the way the
bridge step changes the network: an undo armed on the host first, the
restore run detached from the SSH session whose address it moves, checked
from the controller over a new connection if need be, and the undo disarmed
only then. A second run finds nothing to do.
"""

from __future__ import annotations

import concurrent.futures
import csv
import hashlib
import ipaddress
import os
import re
import secrets as _random
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from invoke import task
from invoke.exceptions import Exit

from .bridge import default_route, guard_cancelled, ipv4, links, movable_routes, move_needed, netplan_file
from .container import container_addresses, container_diff, shim_name, veth_names
from .docker import engine_error, inspected
from .inventory import EXIT_BAD_INPUT, HostConfig
from .remote import RemoteError
from .report import CHANGED, FAILED, OK, HostReport, Output, StepResult, print_recap
from .secret import MASK, Secret, SecretError, lookup, mask_in, prompt_for
from .ssh import ConnectError, ConnectOptions, connect
from .step import Action, Facts, Run, StepFailed, fact_script, parse_sections
from .templating import render
from .xcat import node_stanza, validate_node_name

#: Hosts served at once (each slot holds one SSH connection), as rollout's --forks.
DEFAULT_FORKS = 10
#: ``xcat``'s exit status for a host that could not be reached (as ssh's).
UNREACHABLE = 255
#: Environment variable of the BMC password (``_FILE``: a chmod-600 file holding it).
BMC_PASSWORD_ENV = "XCATFAB_BMC_PASSWORD"

COMMON_HELP = {
    "inventory": "inventory file (default: $XCATFAB_INVENTORY or ./hosts.ini)",
    "set": "override an inventory key for this run, KEY=VALUE (repeatable)",
    "accept_new_host_keys": "record unknown host keys in known_hosts (a changed key is still refused)",
    "forks": f"at most this many hosts at once (default {DEFAULT_FORKS})",
}


class BadInput(Exception):
    """A flag or argument that cannot be used: one line naming it."""


# ====================================================================== many hosts
#: (task, hosts) pairs already served in this process (see :func:`_first_call`).
_SERVED: set = set()


def _first_call(task_name: str, cfgs) -> bool:
    """True the first time ``task_name`` runs for these hosts in this process.

    Fabric calls a task once per ``-H`` host; the first call serves them all
    (one table, one recap) and the later ones have nothing left to do.
    """
    key = (task_name, tuple(cfg.name for cfg in cfgs))
    if key in _SERVED:
        return False
    _SERVED.add(key)
    return True


def host_configs(c, inventory, sets) -> list[HostConfig]:
    """Every ``-H`` host's validated settings (bad input: exit 2 before any connection)."""
    from .remote_tasks import cli_host_configs

    return cli_host_configs(c, inventory, sets)


def connect_options(c, accept_new_host_keys: bool) -> ConnectOptions:
    """Connection options of the run (the sudo password source is checked here: exit 2)."""
    from .remote_tasks import connect_options as options

    return options(c, accept_new_host_keys)


def many_hosts(c, task_name, inventory, sets, forks, accept_new_host_keys, check_flags=None):
    """(host settings, connection options, pool size) for a task that serves every ``-H`` host at once.

    Everything is validated before any connection: ``check_flags()``, then
    ``--forks`` and the inventory; bad input from any of them exits 2 with
    its one line. None on Fabric's later calls of the same task (see
    :func:`_first_call`).
    """
    try:
        if check_flags:
            check_flags()
        pool = parse_forks(forks)
    except BadInput as exc:
        _exit_bad_input(exc)
    cfgs = host_configs(c, inventory, sets)
    if not _first_call(task_name, cfgs):
        return None
    return cfgs, connect_options(c, accept_new_host_keys), pool


def parse_forks(value) -> int:
    """``--forks``: a positive number of hosts at once."""
    if value is None:
        return DEFAULT_FORKS
    try:
        forks = int(value)
    except (TypeError, ValueError):
        raise BadInput(f"--forks: {value!r} is not a number") from None
    if forks < 1:
        raise BadInput(f"--forks: {forks} must be at least 1")
    return forks


def for_each_host(cfgs, fn: Callable, forks: int = DEFAULT_FORKS) -> list:
    """``fn(cfg)`` for every host in a bounded pool; results in ``cfgs``' order.

    ``fn`` reports host failures in what it returns; it must not raise.
    """
    if len(cfgs) == 1:
        return [fn(cfgs[0])]
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(forks, len(cfgs)),
                                               thread_name_prefix="xcatfab-host") as pool:
        return list(pool.map(fn, cfgs))


def _exit_bad_input(exc: Exception):
    """Bad input: one line on stderr, exit status 2 (nothing has been contacted yet)."""
    raise Exit(f"xcatfab: {exc}", code=EXIT_BAD_INPUT) from None


def _one_line(exc: BaseException) -> str:
    """The first line of an exception's message (for one-line failures in a recap)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ====================================================================== xcat
#: ``key=value`` with "password" in the key: a password on a command line.
PASSWORD_ASSIGNMENT = re.compile(r"[\w.]*password[\w.]*=", re.IGNORECASE)
#: An output line showing a password attribute (lsdef, stanzas).
PASSWORD_LINE = re.compile(r"^(\s*[\w.]*password[\w.]*\s*=).*$", re.IGNORECASE)


#: The words after ``--`` that :func:`claim_remainder` took for ``xcat``.
_CLAIMED: list = []


def _remainder_words(core, argv) -> list:
    """The words after ``--``, exactly as the shell passed them.

    Invoke keeps the remainder as one string joined with spaces, which loses
    the user's quoting (``"groups=a b"``); the program's argv still has the
    words. Falls back to splitting the string when argv does not match it.
    """
    remainder = core.remainder or ""
    if "--" in argv[1:]:
        words = argv[argv.index("--", 1) + 1:]
        if " ".join(words) == remainder:
            return words
    return shlex.split(remainder)


def claim_remainder() -> None:
    """Take the ``--`` remainder for ``xcat`` before Fabric's executor sees it.

    Runs when ``fab`` loads the task collection (after it parsed its own
    flags and the remainder, before it expands the task calls). Fabric 3.2's
    ``Executor.expand_calls`` raises NothingToDo ("not given any hosts") for
    any task given with a ``--`` remainder (its recursion for pre-tasks runs
    without the -H hosts), and would otherwise add an anonymous task that
    ``c.run()``s the remainder on every host, over Fabric's own connection
    that accepts any host key. ``xcat`` runs the words itself instead.
    """
    try:
        from fabric.main import program
    except Exception:
        return
    core = getattr(program, "core", None)
    if core is None or not getattr(core, "remainder", "") or "xcat" not in (core.unparsed or []):
        return
    _CLAIMED[:] = _remainder_words(core, list(program.argv or []))
    core.remainder = ""


def remainder_argv() -> Optional[list]:
    """The words after ``--`` for ``xcat`` (claimed at collection load), or None."""
    if _CLAIMED:
        return list(_CLAIMED)
    try:
        from fabric.main import program

        core = program.core
        if core is not None and core.remainder:
            return _remainder_words(core, list(program.argv or []))
    except Exception:
        pass
    return None


def container_command(words: Optional[list], line: Optional[str]) -> str:
    """The command line the container's shell runs.

    ``words`` (after ``--``) keep their exact argv: each is quoted. ``line``
    (``--cmd``) is a shell command line as typed (pipes and all).
    """
    if words and line:
        raise BadInput("give the command either after -- or with --cmd, not both")
    if words:
        command = shlex.join(words)
    elif line and line.strip():
        command = line
    else:
        raise BadInput("no command: fab -H HOST xcat -- lsdef compute1 (or --cmd 'lsdef compute1')")
    if "\0" in command:
        raise BadInput("the command contains a NUL byte")
    if PASSWORD_ASSIGNMENT.search(command):
        raise BadInput("the command sets a password on a command line, where `ps` on the host shows it; "
                       "use `fab node NAME --bmc ... --bmc-user ...` with $XCATFAB_BMC_PASSWORD")
    return command


def output_masker(show_passwords: bool, known: list) -> Callable[[str], str]:
    """A function that hides password values (and any known secret) in the output lines of one host.

    It knows the three shapes xCAT prints a password in: ``attr=value``
    (lsdef), ``node: table.password: value`` (nodels), and a password column
    of a ``tabdump`` CSV (the ``#...`` header line names the columns, so the
    masker keeps state: make one per host's output stream).
    """
    csv_columns: list = []  # password columns of the tabdump being printed

    def mask(line: str) -> str:
        """``line`` with password values and known secrets replaced by the mask."""
        nonlocal csv_columns
        line = mask_in(line, known)
        if show_passwords:
            return line
        if line.startswith("#") and "," in line:
            names = [n.strip().lower() for n in line[1:].split(",")]
            csv_columns = [i for i, n in enumerate(names) if "password" in n]
            return line
        if csv_columns and line.startswith('"'):
            return _mask_csv_columns(line, csv_columns)
        line = NODELS_PASSWORD.sub(lambda m: m.group(1) + MASK, line)
        return PASSWORD_LINE.sub(lambda m: m.group(1) + MASK, line)

    return mask


#: ``nodels NODE ipmi.password`` prints ``NODE: ipmi.password: VALUE``.
NODELS_PASSWORD = re.compile(r"^(\S+:\s*[\w.]*password[\w.]*:\s*)\S.*$", re.IGNORECASE)


def _mask_csv_columns(line: str, columns: list) -> str:
    """A tabdump row (``"a","b",,"c"``) with the non-empty fields at ``columns`` masked."""
    try:
        fields = next(csv.reader([line]))
    except (csv.Error, StopIteration):
        return MASK  # a row that cannot be parsed might hold a password: hide it whole
    if not any(i < len(fields) and fields[i] for i in columns):
        return line
    for i in columns:
        if i < len(fields) and fields[i]:
            fields[i] = MASK
    return ",".join('"' + f.replace('"', '""') + '"' if f else "" for f in fields)


def known_secrets() -> list:
    """Secrets this run may know about (to mask them wherever they would show)."""
    found = []
    for name in (BMC_PASSWORD_ENV, "XCATFAB_SUDO_PASSWORD"):
        try:
            value = lookup(name)
        except SecretError:
            value = None
        if value:
            found.append(value)
    return found


def run_xcat(cfg, command: str, options: ConnectOptions, out: Output, err: Output,
             mask: Callable[[str], str]) -> int:
    """Run ``command`` in ``cfg``'s container; stream its output; return its exit status."""
    host = cfg.name
    # Prefixed output already names the host; a single host's error line names it itself.
    named = "" if err.prefix else f"{host}: "
    try:
        remote = connect(cfg, options)
    except ConnectError as exc:
        err.line(host, f"{named}{exc.step}: {exc.message}")
        return UNREACHABLE
    try:
        result = remote.template("host/admin-xcat.sh.j2", step="xcat", name=cfg.container_name,
                                 command=command, on_line=lambda text: out.line(host, mask(text)))
    except Exception as exc:  # the connection dropped mid-command: one line, never a traceback
        err.line(host, f"{named}xcat: {type(exc).__name__}: {mask(_one_line(exc))}")
        return UNREACHABLE
    finally:
        try:
            remote.close()
        except Exception:
            pass
    for text in result.err.splitlines():
        err.line(host, mask(text))
    return result.rc


@task(name="xcat", help=dict(COMMON_HELP, cmd="the xCAT command as one shell command line (instead of after --)",
                             show_passwords="print password attribute values instead of ********"),
      iterable=["set"])
def xcat_task(c, cmd=None, show_passwords=False, inventory=None, set=None, accept_new_host_keys=False,
              forks=None):
    """Run an xCAT command in the container: fab -H h1,h2 xcat -- lsdef compute1.

    The words after -- are the command's argv, exactly; --cmd takes a
    command line for the container's shell instead (pipes, globs). Output is
    the command's (prefixed by host when there are several hosts); the exit
    status is the command's, the worst over all hosts.
    """
    try:
        command = container_command(remainder_argv(), cmd)
        pool = parse_forks(forks)
    except BadInput as exc:
        _exit_bad_input(exc)
    cfgs = host_configs(c, inventory, set)
    options = connect_options(c, accept_new_host_keys)
    several = len(cfgs) > 1
    out, err = Output(prefix=several), Output(stream=sys.stderr, prefix=several)
    secrets = known_secrets() + ([options.sudo_password] if options.sudo_password else [])
    codes = for_each_host(
        cfgs, lambda cfg: run_xcat(cfg, command, options, out, err, output_masker(show_passwords, secrets)), pool)
    # Exit here, with the worst status: Fabric would otherwise go on to the
    # other -H hosts and then c.run() the remainder on each of them.
    raise Exit(code=max(codes))


# ====================================================================== node
#: Attributes the flags set; --set-attr may not set them twice.
NODE_FLAG_ATTRS = {"bmc": "--bmc", "bmcusername": "--bmc-user", "groups": "--groups", "mgt": "--mgt",
                   "objtype": None, "bmcpassword": "$XCATFAB_BMC_PASSWORD"}
ATTR_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.]*")


@dataclass
class NodeRequest:
    """What ``node`` is asked for: attributes to enforce, defaults for a new node, the password."""

    name: str
    attrs: dict = field(default_factory=dict)
    create_defaults: dict = field(default_factory=dict)
    password: Optional[Secret] = None


def _value(flag: str, value, pattern: Optional[str] = None) -> str:
    """A required flag value that fits on one stanza line (and ``pattern``), or BadInput."""
    if value is None or not str(value).strip():
        raise BadInput(f"{flag}: required")
    value = str(value)
    if "\n" in value or "\r" in value or value != value.strip():
        raise BadInput(f"{flag}: {value!r} has a line break or surrounding spaces")
    if pattern and not re.fullmatch(pattern, value):
        raise BadInput(f"{flag}: {value!r} is not valid")
    return value


def node_request(name, bmc, bmc_user, groups=None, mgt=None, set_attr=(), password=None) -> NodeRequest:
    """Check ``node``'s arguments (raise :class:`BadInput` naming the flag) and build the request."""
    try:
        validate_node_name(name)
    except StepFailed as exc:
        raise BadInput(f"NAME: {exc}") from None
    req = NodeRequest(name, password=password)
    req.attrs["bmc"] = _value("--bmc", bmc, r"[A-Za-z0-9][A-Za-z0-9.:_\[\]-]*")
    req.attrs["bmcusername"] = _value("--bmc-user", bmc_user)
    if groups is not None:
        req.attrs["groups"] = _value("--groups", groups, r"[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*")
    else:
        req.create_defaults["groups"] = "all"  # mkdef needs groups; xCAT's own default
    if mgt is not None:
        req.attrs["mgt"] = _value("--mgt", mgt, r"[a-z0-9]+")
    else:
        req.create_defaults["mgt"] = "ipmi"
    for item in set_attr or ():
        key, sep, value = str(item).partition("=")
        if not sep or not ATTR_NAME.fullmatch(key):
            raise BadInput(f"--set-attr: expected ATTR=VALUE, got {item!r}")
        if "password" in key.lower():
            raise BadInput(f"--set-attr: {key}: a password on the command line shows in `ps`; "
                           f"BMC passwords come from ${BMC_PASSWORD_ENV}")
        if key in NODE_FLAG_ATTRS:
            raise BadInput(f"--set-attr: {key}: set it with {NODE_FLAG_ATTRS[key] or 'nothing (fixed)'}")
        if "\n" in value or "\r" in value:
            raise BadInput(f"--set-attr: {key}: the value has a line break")
        req.attrs[key] = value
    if password is not None:
        text = password.reveal()
        if not text:
            raise BadInput("BMC password: empty")
        if "\n" in text or "\r" in text or text != text.strip():
            raise BadInput("BMC password: has a line break or surrounding spaces (a stanza cannot carry them)")
    return req


def bmc_password(prompt: bool) -> Secret:
    """The BMC password: a prompt when asked for, else the environment or its _FILE."""
    try:
        if prompt:
            return prompt_for("BMC password: ")
        found = lookup(BMC_PASSWORD_ENV)
    except SecretError as exc:
        raise BadInput(f"BMC password: {exc}") from None
    if not found:
        raise BadInput(f"BMC password: set ${BMC_PASSWORD_ENV} (or ${BMC_PASSWORD_ENV}_FILE naming a "
                       f"chmod-600 file), or use --prompt-bmc-password")
    return found


def parse_lsdef(text: str) -> dict:
    """``lsdef -l`` output -> {object name: {attr: value}} (other lines ignored)."""
    objects, current = {}, None
    for line in text.splitlines():
        if line.startswith("Object name: "):
            current = objects.setdefault(line[len("Object name: "):].strip(), {})
        elif current is not None and line.startswith((" ", "\t")) and "=" in line:
            key, _sep, value = line.strip().partition("=")
            current[key] = value
    return objects


def salted_digest(salt: str, secret: Secret) -> str:
    """What the read script prints for a password attribute holding ``secret``."""
    return "sha256:" + hashlib.sha256((salt + secret.reveal()).encode()).hexdigest()


def read_node(remote, cfg, node: str) -> Optional[dict]:
    """The node's attributes (passwords as salted digests, with the salt under ``""``), or None if absent."""
    salt = _random.token_hex(16)
    result = remote.template("host/admin-node-read.sh.j2", step="node", stdin=salt + "\n",
                             name=cfg.container_name, node=node)
    marker = re.search(r"^@@xcatfab:lsdef-rc=(\d+)$", result.out, re.M)
    if not result.ok or not marker:
        raise StepFailed(f"cannot read node {node}: {result.tail()}")
    text = result.out[:marker.start()]
    found = parse_lsdef(text)
    if node in found:
        found[node][""] = salt
        return found[node]
    # xCAT says "Could not find any objects of type 'node'." (exit 0) when there is
    # no node at all, and "Could not find an object named 'X' ..." (exit 1) otherwise.
    if "Could not find any objects of type" in text or "Could not find an object named" in text:
        return None
    lines = text.strip().splitlines()
    raise StepFailed(f"lsdef {node} failed (exit {marker.group(1)}): {lines[-1] if lines else 'no output'}")


def plan_node(req: NodeRequest, current: Optional[dict]):
    """(``"create"``/``"change"``/None, change lines, stanza attributes) for ``req`` against ``current``.

    Change lines never hold a password: a Secret formats as ``********``.
    """
    if current is None:
        attrs = dict(req.create_defaults)
        attrs.update(req.attrs)
        if req.password is not None:
            attrs["bmcpassword"] = req.password
        return "create", [f"create node {req.name}: " + ", ".join(f"{k}={v}" for k, v in attrs.items())], attrs
    changes, attrs = [], {}
    for key, value in req.attrs.items():
        have = current.get(key)
        if have != value:
            attrs[key] = value
            changes.append(f"{key}: {have if have is not None else '(unset)'} -> {value}")
    if req.password is not None:
        have = current.get("bmcpassword")
        if have != salted_digest(current.get("", ""), req.password):
            attrs["bmcpassword"] = req.password
            changes.append(f"bmcpassword: {'(unset)' if not have else 'changed'} -> {MASK}")
    if not attrs:
        return None, [], {}
    return "change", [f"change node {req.name}: " + "; ".join(changes)], attrs


def run_node(cfg, req: NodeRequest, options: ConnectOptions, out: Output, plan_only: bool = False) -> HostReport:
    """Define or change the node on one host; never raises for host failures."""
    report = HostReport(cfg.name)
    started = time.monotonic()
    secrets = [req.password] if req.password else []

    def finish(status, changes=(), error=None) -> HostReport:
        """Record and print the node step's result (any error masked), end the report."""
        error = mask_in(error, secrets) if error else error
        result = report.add(StepResult("node", status, list(changes), error, time.monotonic() - started))
        out.result(cfg.name, result)
        report.finished = time.monotonic()
        return report

    try:
        remote = connect(cfg, options)
    except ConnectError as exc:
        result = report.add(StepResult("connect", FAILED, error=exc.message))
        out.result(cfg.name, result)
        report.finished = time.monotonic()
        return report
    try:
        kind, changes, attrs = plan_node(req, read_node(remote, cfg, req.name))
        if kind is None:
            return finish(OK)
        if plan_only:
            return finish(CHANGED, ["would " + line for line in changes])
        applied = remote.template("host/admin-node-apply.sh.j2", step="node",
                                  stdin=node_stanza(req.name, attrs), name=cfg.container_name,
                                  node=req.name, create=kind == "create")
        if not applied.ok:
            return finish(FAILED, changes, f"{'mkdef' if kind == 'create' else 'chdef'} -z failed: "
                                           f"{applied.tail()}")
        left, leftover, _attrs = plan_node(req, read_node(remote, cfg, req.name))
        if left is not None:
            return finish(FAILED, changes, "still differs after apply: " + "; ".join(leftover))
        return finish(CHANGED, changes)
    except (StepFailed, RemoteError) as exc:
        return finish(FAILED, error=exc.message if isinstance(exc, RemoteError) else _one_line(exc))
    except Exception as exc:  # a dropped connection: one line, never a traceback
        return finish(FAILED, error=f"{type(exc).__name__}: {_one_line(exc)}")
    finally:
        try:
            remote.close()
        except Exception:
            pass


@task(name="node", positional=["name"], iterable=["set_attr", "set"], help=dict(
    COMMON_HELP, name="the xCAT node name (e.g. compute1)", bmc="the node's BMC address (bmc)",
    bmc_user="the BMC user (bmcusername)", groups="comma list of groups (default for a new node: all)",
    mgt="hardware management (default for a new node: ipmi)",
    set_attr="another node attribute, ATTR=VALUE (repeatable; no passwords)",
    prompt_bmc_password=f"ask for the BMC password (else ${BMC_PASSWORD_ENV} or ${BMC_PASSWORD_ENV}_FILE)",
    plan="read the node, print what would change, change nothing"))
def node_task(c, name, bmc=None, bmc_user=None, groups=None, mgt=None, set_attr=None,
              prompt_bmc_password=False, plan=False, inventory=None, set=None, accept_new_host_keys=False,
              forks=None):
    """Define or change an xCAT node (the guide's mkdef/chdef step) on every -H host.

    Creates the node when it is absent, changes only what differs when it
    exists, and reports no change when everything matches. The BMC password
    comes from $XCATFAB_BMC_PASSWORD(_FILE) or --prompt-bmc-password and
    reaches xCAT as a stanza on stdin; it is never printed.
    """
    run = many_hosts(c, "node", inventory, set, forks, accept_new_host_keys,
                     # the flags, before the inventory
                     check_flags=lambda: node_request(name, bmc, bmc_user, groups, mgt, set_attr))
    if run is None:
        return
    cfgs, options, pool = run
    try:
        req = node_request(name, bmc, bmc_user, groups, mgt, set_attr, bmc_password(prompt_bmc_password))
    except BadInput as exc:
        _exit_bad_input(exc)
    out = Output()
    reports = for_each_host(cfgs, lambda cfg: run_node(cfg, req, options, out, plan), pool)
    print_recap(reports, out, table=len(reports) > 1)
    if any(r.failed for r in reports):
        raise Exit(code=1)


# ====================================================================== facts
def read_facts(remote, cfg, fragments) -> Facts:
    """The step fragments and the admin sections, in ONE round trip."""
    from .deploy import fact_context

    context = fact_context(cfg)
    script = fact_script(fragments, context) + "\n" + render(
        "host/admin-facts.sh.j2", **dict(context, container_ip=str(cfg.container_ip.ip) if cfg.container_ip else ""))
    result = remote.run(script, step="facts")
    facts = parse_sections(result.out)
    if "admin.end" not in facts:
        raise StepFailed(f"fact script did not finish (exit {result.rc}): {result.tail()}")
    return facts


# ====================================================================== status
STATUS_COLUMNS = ("host", "docker", "image", "bridge", "container", "address", "xcatd", "ISOs", "media", "problems")
ARCHES = ("x86_64", "ppc64le", "ppc64", "aarch64", "s390x", "armv7l", "i386", "i686")


def _size(n: int) -> str:
    """A byte count as a short human size (``3.6G``)."""
    for unit in ("B", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def iso_fragments() -> tuple:
    """("iso",) when the iso step's fact fragment exists (it reads what the step recorded)."""
    from .templating import TEMPLATE_DIR

    return ("iso",) if os.path.exists(os.path.join(TEMPLATE_DIR, "host", "facts", "iso.sh.j2")) else ()


def staged_isos(facts: Facts) -> list:
    """(name, size) of the ISOs in iso_dir: the iso fragment's list when it ran, else admin.isos."""
    found = []
    if "iso.files" in facts:  # "size mtime inode name" lines
        for line in facts.lines("iso.files"):
            parts = line.split(" ", 3)
            if len(parts) == 4 and parts[0].isdigit():
                found.append((parts[3], int(parts[0])))
        return found
    for line in facts.lines("admin.isos"):  # "size name" lines
        size, _sep, name = line.partition(" ")
        if size.isdigit() and name:
            found.append((name, int(size)))
    return found


def copied_media(facts: Facts) -> list:
    """``distro/arch`` trees copycds filled under /install (and those the iso step recorded)."""
    media = [m for m in facts.lines("admin.media") if m.rsplit("/", 1)[-1] in ARCHES]
    for line in facts.lines("iso.copied"):  # "record distro arch install(yes|no) osdistro"
        parts = line.split()
        if len(parts) >= 4 and parts[3] == "yes" and f"{parts[1]}/{parts[2]}" not in media:
            media.append(f"{parts[1]}/{parts[2]}")
    return sorted(media)


def status_row(cfg, facts: Facts) -> dict:
    """One host's status table row from its facts (pure: unit-tested with recorded facts)."""
    row = {"host": cfg.name}
    problems = []
    binaries = facts.text("docker.bin")
    down = engine_error(facts)
    version = facts.text("admin.docker").strip()
    if "dockerd" not in binaries and not version:
        row["docker"] = "not installed"
    elif down:
        row["docker"] = "down"
        problems.append(down)
    else:
        row["docker"] = f"{version or '?'} up"
    objs = inspected(facts, cfg) if not down else {"container": None, "image": None, "network": None}
    image, ctr = objs["image"], objs["container"]
    row["image"] = f"{cfg.image} {image['Id'].removeprefix('sha256:')[:12]}" if image else f"{cfg.image} missing"
    try:
        diffs = move_needed(cfg, facts)
    except StepFailed as exc:
        diffs = [str(exc)]
    bridge = links(facts).get(cfg.bridge)
    if bridge is None:
        row["bridge"] = f"{cfg.bridge} missing"
    else:
        addrs = ", ".join(str(a) for a in ipv4(bridge)) or "no address"
        row["bridge"] = f"{cfg.bridge} ({cfg.mgmt_interface}, {addrs})"
    if diffs and bridge is not None:
        row["bridge"] += " differs"
        problems.append("bridge: " + "; ".join(diffs))
    if ctr is None:
        row["container"] = f"{cfg.container_name} missing"
    else:
        state = ctr.get("State") or {}
        text = state.get("Status") or "?"
        health = (state.get("Health") or {}).get("Status")
        row["container"] = f"{cfg.container_name} {text}" + (f" ({health})" if health else "")
        drift = container_diff(cfg, ctr, image) if cfg.container_ip else []
        if drift:
            row["container"] += " differs"
            problems.append("container: " + "; ".join(drift))
    want = cfg.container_ip
    have = container_addresses(facts) if ctr is not None else []
    if want is None:
        row["address"] = "container_ip unset"
    elif want in have:
        row["address"] = str(want)
    else:
        row["address"] = f"missing ({want})"
        if ctr is not None and (ctr.get("State") or {}).get("Running"):
            problems.append(f"address: {want} not in the container (has {', '.join(map(str, have)) or 'none'})")
    port = facts.kv("admin.port")
    listening = facts.kv("ctr.ready").get("xcatd") == "up"
    if port.get("running") != "yes":
        row["xcatd"] = "-"
    elif port.get("connect") == "yes":
        row["xcatd"] = f"answering on {want.ip if want else '?'}:3001"
    elif listening:
        row["xcatd"] = "listening, no answer" if port.get("connect") == "no" else "listening"
        if port.get("connect") == "no":
            problems.append("xcatd: listens on 3001 but the host cannot connect to it")
    else:
        row["xcatd"] = "down"
        problems.append("xcatd: nothing listens on 3001 in the container")
    row["ISOs"] = ", ".join(f"{name} ({_size(size)})" for name, size in staged_isos(facts)) or "none"
    row["media"] = ", ".join(copied_media(facts)) or "none"
    row["problems"] = "; ".join(problems)
    return row


def read_status(cfg, options: ConnectOptions) -> dict:
    """One host's row (an unreachable host's row says why); never raises."""
    try:
        remote = connect(cfg, options)
    except ConnectError as exc:
        return dict({c: "?" for c in STATUS_COLUMNS}, host=cfg.name, problems=f"{exc.step}: {exc.message}")
    try:
        return status_row(cfg, read_facts(remote, cfg, ("host", "docker", "bridge", "container") + iso_fragments()))
    except Exception as exc:
        return dict({c: "?" for c in STATUS_COLUMNS}, host=cfg.name,
                    problems=f"facts: {type(exc).__name__}: {_one_line(exc)}")
    finally:
        try:
            remote.close()
        except Exception:
            pass


def print_status(rows: list, stream=None) -> None:
    """One table, a row per host (rich), wide enough that no cell wraps."""
    from rich.console import Console
    from rich.table import Table

    stream = stream or sys.stdout
    grid = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for column in STATUS_COLUMNS:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*(str(row.get(c, "")) for c in STATUS_COLUMNS))
    needed = sum(max(len(c), *(len(str(r.get(c, ""))) for r in rows)) + 2 for c in STATUS_COLUMNS)
    Console(file=stream, width=max(120, needed), highlight=False, soft_wrap=True).print(grid)


@task(name="status", help=COMMON_HELP, iterable=["set"])
def status_task(c, inventory=None, set=None, accept_new_host_keys=False, forks=None):
    """One table for every -H host: docker, image, bridge, container, address, xcatd, ISOs, media.

    Changes nothing; one connection and one round trip per host. Exits 1
    when a host could not be read.
    """
    run = many_hosts(c, "status", inventory, set, forks, accept_new_host_keys)
    if run is None:
        return
    cfgs, options, pool = run
    rows = for_each_host(cfgs, lambda cfg: read_status(cfg, options), pool)
    print_status(rows)
    if any(row.get("docker") == "?" for row in rows):
        raise Exit(code=1)


# ====================================================================== teardown
#: Directories --purge-data refuses to remove, whatever the inventory says.
def forward_rule(cfg) -> str:
    """The DOCKER-USER rule the bridge step adds, as ``iptables -S`` prints it."""
    return f"-A DOCKER-USER -i {cfg.bridge} -o {cfg.bridge} -j ACCEPT"


def teardown_plan(cfg, facts: Facts, purge: bool) -> list:
    """What removing the deployment takes (empty: nothing left)."""
    actions = []
    host_links = links(facts)
    watcher = facts.kv("admin.watcher")
    veth = veth_names(cfg)[0]
    if (watcher.get("pidfile") or watcher.get("pid") or watcher.get("unit") == "active"
            or watcher.get("enabled") or watcher.get("netns-attach") or watcher.get("netns-watch")
            or veth in host_links):
        actions.append(Action("watcher", f"stop the netns watcher of {cfg.container_name}"))
    installed = "dockerd" in facts.text("docker.bin") or facts.text("admin.docker").strip()
    down = engine_error(facts)
    if down and installed:
        raise StepFailed(f"docker engine not answering: {down}")
    objs = inspected(facts, cfg) if installed else {"container": None, "network": None}
    ctr = objs["container"]
    if ctr is not None:
        state = (ctr.get("State") or {}).get("Status", "?")
        actions.append(Action("container", f"remove container {cfg.container_name} ({state})"))
    if objs["network"] is not None:
        actions.append(Action("network", f"remove Docker network {cfg.docker_network}"))
    if shim_name(cfg) in host_links:
        actions.append(Action("shim", f"remove the macvlan shim {shim_name(cfg)}"))
    if purge and facts.kv("admin.state").get("data_dir") == "yes":
        actions.append(Action("purge", f"remove {cfg.data_dir} (xCAT's tables, /install, logs)"))
    return actions


@dataclass
class Recorded:
    """The network before deploy, as STATE/bridge-restore.sh puts it back."""

    addresses: list  # on the interface
    gateway: Optional[str]  # of the default route
    default_dev: Optional[str]
    deletes_bridge: bool
    master: Optional[str] = None  # of the interface (a bridge it was already in)
    bridge_addresses: list = field(default_factory=list)  # of a bridge that existed before


def parse_restore(script: str, iface: str, bridge: str) -> Recorded:
    """Read what bridge-restore.sh (templates/host/bridge-rollback.sh.j2) puts back.

    Only its ``ip`` commands count: addresses put on the interface and on a
    bridge that existed before, the interface's master, the default route,
    and whether the bridge is deleted.
    """
    addresses, bridge_addresses = [], []
    for address, dev in re.findall(r"^ip addr replace (\S+) dev (\S+)\s*$", script, re.M):
        if dev == iface:
            addresses.append(ipaddress.IPv4Interface(address))
        elif dev == bridge:
            bridge_addresses.append(ipaddress.IPv4Interface(address))
    gateway = default_dev = None
    for via, dev in re.findall(r"^ip route replace default via (\S+) dev (\S+)\s*$", script, re.M):
        gateway, default_dev = via, dev
    master = None
    for dev, name in re.findall(r"^ip link set dev (\S+) master (\S+)", script, re.M):
        if dev == iface:
            master = name
    deletes = re.search(rf"^ip link del dev {re.escape(bridge)}(\s|$)", script, re.M) is not None
    return Recorded(addresses, gateway, default_dev, deletes, master, bridge_addresses)


def restore_diffs(cfg, facts: Facts, recorded: Recorded) -> list:
    """How the host differs from the recorded pre-deploy network (empty: as before)."""
    host_links = links(facts)
    iface = host_links.get(cfg.mgmt_interface)
    if iface is None:
        raise StepFailed(f"interface {cfg.mgmt_interface} not found on the host "
                         f"(mgmt_interface, {cfg.where('mgmt_interface')})")
    diffs = []
    master = iface.get("master")
    if master != recorded.master:
        diffs.append(f"put {cfg.mgmt_interface} in {recorded.master}" if recorded.master
                     else f"release {cfg.mgmt_interface} from {master}")
    bridge = host_links.get(cfg.bridge)
    if recorded.deletes_bridge and bridge is not None:
        diffs.append(f"delete {cfg.bridge}")
    have = ipv4(iface)
    for address in recorded.addresses:
        if address not in have:
            diffs.append(f"put {address} back on {cfg.mgmt_interface}")
    on_bridge = ipv4(bridge)
    for address in recorded.bridge_addresses:
        if address not in on_bridge:
            diffs.append(f"put {address} back on {cfg.bridge}")
    if recorded.gateway:
        route = default_route(facts)
        if (not route or route.get("dev") != recorded.default_dev
                or route.get("gateway") != recorded.gateway):
            diffs.append(f"default route via {recorded.gateway} on {recorded.default_dev}")
    return diffs


def restore_plan(cfg, facts: Facts) -> tuple:
    """(actions, note) for --restore-network; the note says why nothing can be restored."""
    actions, note = [], None
    if forward_rule(cfg) in facts.lines("bridge.docker_user"):
        actions.append(Action("forward", f"remove the DOCKER-USER rule accepting traffic across {cfg.bridge}"))
    if facts.text("bridge.netplan_file").strip():
        actions.append(Action("netplan", f"remove {netplan_file(cfg)}"))
    script = facts.text("admin.restore")
    if script.strip():
        recorded = parse_restore(script, cfg.mgmt_interface, cfg.bridge)
        diffs = restore_diffs(cfg, facts, recorded)
        if diffs:
            actions.append(Action("restore", f"restore {cfg.mgmt_interface} as before deploy: " + "; ".join(diffs),
                                  {"recorded": recorded}))
        else:
            actions.append(Action("forget", f"forget {cfg.state_dir}/bridge-restore.sh "
                                            f"(the network already is as it records)"))
    elif links(facts).get(cfg.mgmt_interface, {}).get("master"):
        note = (f"no {cfg.state_dir}/bridge-restore.sh: xcatfab has no record of {cfg.mgmt_interface} "
                f"before deploy (it never moved the address here), so the network is left as it is")
    return actions, note


def undo_script(cfg, facts: Facts) -> str:
    """The script that puts the bridge back as it is now (the undo of the restore)."""
    host_links = links(facts)
    bridge, iface = host_links.get(cfg.bridge), host_links.get(cfg.mgmt_interface)
    addrs = ipv4(bridge)
    if bridge is None or not addrs or iface is None:
        return ""  # the SSH session does not depend on the bridge: nothing to undo
    route = default_route(facts)
    gateway = route.get("gateway") if route and route.get("dev") == cfg.bridge else ""
    return render("host/bridge-apply.sh.j2", bridge=cfg.bridge, iface=cfg.mgmt_interface,
                  state_dir=cfg.state_dir, address=str(addrs[0]), mac=iface.get("address"),
                  iface_addrs=[str(a) for a in addrs], gateway=gateway or "",
                  routes=movable_routes(facts, cfg.bridge))


class Teardown:
    """One host's teardown: plan, apply, verify (the restore like the bridge step)."""

    FRAGMENTS = ("host", "docker", "bridge")

    def __init__(self, run: Run, restore_network: bool, purge: bool):
        self.run, self.restore_network, self.purge = run, restore_network, purge

    def read(self) -> Facts:
        """Read (and keep) the host's facts: one round trip."""
        self.run.facts = read_facts(self.run.remote, self.run.cfg, self.FRAGMENTS)
        return self.run.facts

    def remove(self, actions) -> None:
        """Container, network, watcher, shim, data: one script."""
        cfg = self.run.cfg
        kinds = {a.kind for a in actions}
        self.run.remote.template(
            "host/admin-teardown.sh.j2", step="teardown", check=True, name=cfg.container_name,
            state_dir=cfg.state_dir, watcher="watcher" in kinds, veth=veth_names(cfg)[0],
            container="container" in kinds, network=cfg.docker_network if "network" in kinds else "",
            shim=shim_name(cfg) if "shim" in kinds else "", purge=cfg.data_dir if "purge" in kinds else "",
            bridge=cfg.bridge, forward=False, netplan="",
            announce=[str(a.ip) for a in ipv4(links(self.run.facts).get(cfg.bridge))])

    def unbridge(self, actions) -> None:
        """The DOCKER-USER rule and the netplan file (before the address moves)."""
        cfg = self.run.cfg
        kinds = {a.kind for a in actions}
        if not {"forward", "netplan"} & kinds:
            return
        self.run.remote.template(
            "host/admin-teardown.sh.j2", step="restore-network", check=True, name=cfg.container_name,
            state_dir=cfg.state_dir, watcher=False, veth="", container=False, network="", shim="", purge="",
            bridge=cfg.bridge, forward="forward" in kinds, netplan=netplan_file(cfg) if "netplan" in kinds else "",
            announce=[])

    def finish(self, disarm: bool) -> bool:
        """Cancel the undo (after a confirmed restore) and forget the bridge change record.

        False when the undo had already started (too late to cancel: it puts
        the bridge back, and the record stays).
        """
        result = self.run.remote.template("host/admin-restore-finish.sh.j2", step="restore-network",
                                          state_dir=self.run.cfg.state_dir, disarm=disarm)
        return guard_cancelled(result, "restore-network: finishing failed")

    # -------------------------------------------------------------- the restore
    def restore(self, action) -> None:
        """Run bridge-restore.sh detached, with an undo armed; confirm from the controller."""
        run, cfg = self.run, self.run.cfg
        recorded = action.data["recorded"]
        undo = undo_script(cfg, run.facts)
        deadline = time.monotonic() + cfg.rollback_seconds
        run.say(f"restore-network: undo armed for {cfg.rollback_seconds}s, restoring detached")
        launched = None
        try:
            launched = run.remote.template("host/admin-restore-launch.sh.j2", step="restore-network",
                                           timeout=20, stdin=undo, state_dir=cfg.state_dir,
                                           seconds=cfg.rollback_seconds, iface=cfg.mgmt_interface)
        except Exception as exc:  # the session died as the address moved: reconnect below
            run.say(f"restore-network: session lost during the change ({type(exc).__name__}); reconnecting")
        if launched is not None and not launched.ok and "armed" not in launched.out:
            raise StepFailed(f"could not arm the undo: {launched.tail()}")
        problem = self._confirm(recorded, deadline)
        if problem is None:
            if self.finish(disarm=True):
                run.say("restore-network: verified from the controller, undo disarmed")
                return
            problem = "verified, but the undo had started before it could be cancelled"
        self._await_undo(deadline, problem)

    def _confirm(self, recorded: Recorded, deadline: float) -> Optional[str]:
        """Check the restored network from the controller (reconnecting if needed): None, or the problem."""
        run, cfg = self.run, self.run.cfg
        problem = "no answer from the host"
        while time.monotonic() < deadline - 2:
            try:
                facts = read_facts(run.remote, cfg, ("host", "bridge"))
            except Exception as exc:  # the session is gone: open a new one
                problem = f"lost the connection ({type(exc).__name__})"
                if not self.run.replace_connection(deadline):
                    break
                continue
            status = facts.kv("admin.state").get("restore-apply", "")
            if status in ("", "running"):
                time.sleep(0.2)
                continue
            run.facts.update(facts)
            if status.startswith("failed"):
                return f"bridge-restore.sh {status}"
            diffs = restore_diffs(cfg, facts, recorded)
            if diffs:
                return "after the restore the host still differs: " + "; ".join(diffs)
            return None
        return problem

    def _await_undo(self, deadline: float, problem: str) -> None:
        """Not confirmed: let the host's undo put the bridge back, then say so."""
        run, cfg = self.run, self.run.cfg
        run.say(f"restore-network: {problem}; waiting for the host's undo")
        while time.monotonic() < deadline + 5:
            time.sleep(1)
        end = deadline + 60
        while time.monotonic() < end:
            if self.run.replace_connection(end):
                try:
                    facts = read_facts(run.remote, cfg, ("host", "bridge"))
                except Exception:
                    continue
                run.facts.update(facts)
                undone = facts.kv("admin.state").get("restore-undo", "unknown")
                bridge = ipv4(links(facts).get(cfg.bridge))
                raise StepFailed(f"network restore not confirmed ({problem}); the host put the bridge back "
                                 f"after {cfg.rollback_seconds}s ({undone}): {cfg.bridge} has "
                                 f"{', '.join(map(str, bridge)) or 'no address'}; rerun deploy to re-persist it")
            time.sleep(2)
        raise StepFailed(f"network restore not confirmed ({problem}) and the host is unreachable "
                         f"{cfg.rollback_seconds + 60}s later: check its console")


def run_teardown(cfg, options: ConnectOptions, out: Output, restore_network: bool = False,
                 purge: bool = False, plan_only: bool = False) -> HostReport:
    """Tear one host down; never raises for host failures."""
    report = HostReport(cfg.name)
    try:
        remote = connect(cfg, options)
    except ConnectError as exc:
        out.result(cfg.name, report.add(StepResult("connect", FAILED, error=exc.message)))
        report.finished = time.monotonic()
        return report
    run = Run(cfg, remote, Facts(), out=out, plan_only=plan_only, reconnect=lambda: connect(cfg, options))
    run.shared["connections"] = 1
    job = Teardown(run, restore_network, purge)

    def step(name, body) -> StepResult:
        """Run one reported step: ``body`` returns (status, changes, error)."""
        started = time.monotonic()
        try:
            status, changes, error = body()
        except (StepFailed, RemoteError) as exc:
            status, changes, error = FAILED, [], exc.message if isinstance(exc, RemoteError) else _one_line(exc)
        except Exception as exc:  # a dropped connection mid-step: one line, never a traceback
            status, changes, error = FAILED, [], f"{type(exc).__name__}: {_one_line(exc)}"
        result = report.add(StepResult(name, status, changes, error, time.monotonic() - started))
        out.result(cfg.name, result)
        return result

    def remove():
        """Container, network, watcher, shim, data: plan, apply, verify."""
        actions = teardown_plan(cfg, run.facts, purge)
        if not actions:
            return OK, [], None
        summaries = [a.summary for a in actions]
        if plan_only:
            return CHANGED, ["would " + s for s in summaries], None
        job.remove(actions)
        leftover = teardown_plan(cfg, job.read(), purge)
        if leftover:
            return FAILED, summaries, "still present after teardown: " + "; ".join(a.summary for a in leftover)
        return CHANGED, summaries, None

    def restore():
        """DOCKER-USER rule, netplan file, the interface: plan, apply (detached), verify."""
        actions, note = restore_plan(cfg, run.facts)
        if note:
            run.say(f"restore-network: {note}")
        if not actions:
            return OK, [], None
        summaries = [a.summary for a in actions]
        if plan_only:
            return CHANGED, ["would " + s for s in summaries], None
        by_kind = {a.kind: a for a in actions}
        job.unbridge(actions)
        if "restore" in by_kind:
            job.restore(by_kind["restore"])
        elif "forget" in by_kind:
            job.finish(disarm=False)
        leftover, _note = restore_plan(cfg, job.read())
        if leftover:
            return FAILED, summaries, "still differs after the restore: " + "; ".join(a.summary for a in leftover)
        return CHANGED, summaries, None

    try:
        started = time.monotonic()
        try:
            job.read()
        except Exception as exc:
            out.result(cfg.name, report.add(StepResult("facts", FAILED, error=_one_line(exc))))
            return report
        report.add(StepResult("facts", OK, seconds=time.monotonic() - started))
        result = step("teardown", remove)
        if restore_network and (result.status != FAILED or plan_only):
            step("restore-network", restore)
    finally:
        report.commands = run.remote.commands + run.shared.get("commands_before_reconnect", 0)
        report.connections = run.shared.get("connections", 1)
        try:
            run.remote.close()
        except Exception:
            pass
        report.finished = time.monotonic()
    return report


@task(name="teardown", iterable=["set"], help=dict(
    COMMON_HELP, restore_network="also put the interface back as before deploy (address, routes; bridge, "
                                 "DOCKER-USER rule and netplan file removed)",
    purge_data="also delete data_dir (xCAT's tables, /install, logs); the image always stays",
    plan="connect and read facts, print what would be removed, change nothing"))
def teardown_task(c, restore_network=False, purge_data=False, plan=False, inventory=None, set=None,
                  accept_new_host_keys=False, forks=None):
    """Remove the xCAT container, its Docker network, netns watcher and macvlan shim.

    Keeps the image, and the data unless --purge-data. --restore-network puts
    the interface back as it was before deploy, safely (undo armed, restore
    detached, confirmed from the controller). A second run has nothing to do.
    """
    # (data_dir, which --purge-data deletes, can never be a system directory: the inventory refuses it.)
    run = many_hosts(c, "teardown", inventory, set, forks, accept_new_host_keys)
    if run is None:
        return
    cfgs, options, pool = run
    out = Output()
    reports = for_each_host(
        cfgs, lambda cfg: run_teardown(cfg, options, out, restore_network, purge_data, plan), pool)
    print_recap(reports, out, table=len(reports) > 1)
    if any(r.failed for r in reports):
        raise Exit(code=1)


# Before fab expands the task calls (see claim_remainder): this module is
# imported while fab loads its task collection.
claim_remainder()
