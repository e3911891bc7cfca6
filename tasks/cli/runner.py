"""What every task that takes hosts does around its work, in one place.

1. Validate everything before any connection (:func:`prepare`): the flags,
   the inventory and every selected host, the secret sources. Bad input is
   one line (``xcatfab: where: key: why``) and exit status 2.
2. Run the hosts through the one host executor (:func:`tasks.runtime.executor.run_hosts`).
3. Print the recap — or, with ``--json``, the recap and every step's result
   as one JSON document on stdout (live output then goes to stderr) — and
   exit with the executor's one exit rule (:func:`finish`).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from invoke.exceptions import Exit

from ..runtime.errors import EXIT_BAD_INPUT, BadInput
from ..runtime.executor import HostsResult, parse_forks, parse_percent, parse_serial, print_hosts_recap, run_hosts
from ..runtime.report import Output
from ..runtime.secret import Secret, SecretError, lookup, mask_in
from ..runtime.ssh import ConnectOptions
from .targets import select

#: Secrets a run may find in its environment, masked in every line it prints.
SECRET_SOURCES = ("XCATFAB_BMC_PASSWORD", "XCATFAB_SUDO_PASSWORD")


@contextmanager
def bad_input_exits():
    """Turn :class:`BadInput` into one line on stderr and exit status 2."""
    try:
        yield
    except BadInput as exc:
        raise Exit(f"xcatfab: {exc}", code=EXIT_BAD_INPUT) from None


@dataclass
class Flags:
    """The flags every task that takes hosts shares, as given."""

    inventory: Optional[str] = None
    limit: Optional[str] = None
    sets: list = field(default_factory=list)
    forks: Any = None
    plan: bool = False
    diff: bool = False
    json: bool = False
    verbose: bool = False
    accept_new_host_keys: bool = False
    serial: Optional[str] = None
    max_fail_percent: Optional[str] = None


@dataclass
class Session:
    """One task run: its hosts, how to reach them, where output goes."""

    configs: list
    connect: ConnectOptions
    out: Output
    flags: Flags
    forks: int
    serial: tuple = ()
    max_fail: Any = None
    secrets: list = field(default_factory=list)
    task: str = "run"


def sudo_password(c) -> Optional[Secret]:
    """``--prompt-for-sudo-password`` (Fabric's), else $XCATFAB_SUDO_PASSWORD(_FILE)."""
    configured = c.config.get("sudo", {}).get("password") if c is not None else None
    if configured:
        return Secret(str(configured), "--prompt-for-sudo-password")
    try:
        return lookup("XCATFAB_SUDO_PASSWORD")
    except SecretError as exc:
        raise BadInput("sudo password", None, str(exc)) from None


def known_secrets() -> list:
    """Secrets the environment holds, checked like any secret source (an unsafe ``_FILE``: bad input)."""
    found = []
    for name in SECRET_SOURCES:
        try:
            value = lookup(name)
        except SecretError as exc:
            raise BadInput(f"${name}_FILE", None, str(exc)) from None
        if value:
            found.append(value)
    return found


def _one_line_thread_errors(out: Output, secrets: list) -> None:
    """A background thread's unexpected error is one line naming the thread, never a traceback."""
    def hook(args) -> None:
        if args.exc_type is SystemExit:
            return
        text = mask_in(f"{args.exc_type.__name__}: {args.exc_value}".splitlines()[0], secrets)
        out.line(None, f"xcatfab: error in {getattr(args.thread, 'name', 'a thread')}: {text}")

    threading.excepthook = hook


def _verbose_logging(out: Output) -> None:
    """``-v``: every remote command, its exit status and its time, prefixed with its host."""

    class ToOutput(logging.Handler):
        def emit(self, record):
            host = getattr(record, "host", None)
            out.line(host, record.getMessage())

    logger = logging.getLogger("xcatfab.remote")
    logger.setLevel(logging.INFO)
    logger.addHandler(ToOutput())


def prepare(c, flags: Flags, targets, task: str, default_all: bool = False,
            check: Optional[Callable[[list], None]] = None) -> Session:
    """Validate flags, hosts and secrets (bad input: exit 2) and open the session's output."""
    with bad_input_exits():
        forks = parse_forks(flags.forks)
        serial = parse_serial(flags.serial)
        max_fail = parse_percent(flags.max_fail_percent)
        configs = select(targets, flags.inventory, flags.limit, flags.sets, default_all, task)
        if check is not None:
            check(configs)
        secrets = known_secrets()
        connect = ConnectOptions(accept_new_host_keys=flags.accept_new_host_keys, sudo_password=sudo_password(c),
                                 fabric_config=c.config if c is not None else None)
    out = Output(stream=sys.stderr if flags.json else sys.stdout, prefix=True)
    if flags.verbose:
        _verbose_logging(out)
    if connect.sudo_password:
        secrets.append(connect.sudo_password)
    _one_line_thread_errors(out, secrets)
    return Session(configs, connect, out, flags, forks, serial, max_fail, secrets, task)


def run(session: Session, run_one: Callable, single_batch: bool = False, announce: bool = True) -> HostsResult:
    """Every selected host through the one host executor."""
    return run_hosts(session.configs, run_one, serial=session.serial, max_fail=session.max_fail,
                     forks=session.forks, out=session.out, secrets=session.secrets,
                     single_batch=single_batch or session.flags.plan, announce=announce, task=session.task)


def finish(session: Session, result: HostsResult, table: Optional[bool] = None) -> HostsResult:
    """The recap (or the JSON document), then exit with the run's exit status when it is not 0."""
    if session.flags.json:
        document = {"hosts": [r.as_dict() for r in result.reports], "not_attempted": result.not_attempted,
                    "stop_reason": result.stop_reason, "exit_code": result.exit_code()}
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        sys.stdout.flush()
    else:
        print_hosts_recap(result, session.out, table=len(result.reports) > 1 if table is None else table)
    code = result.exit_code()
    if code:
        raise Exit(code=code)
    return result
