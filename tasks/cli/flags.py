"""xcatfab's one flag grammar: every flag means the same in every task that has it.

* No automatic short flags (Invoke's first-free-letter rule made ``-p`` mean
  ``--plan`` in one task and ``--purge-data`` in another); the only short
  flag is ``-v`` (``--verbose``), and anything destructive is long-only.
* ``--plan`` (alias ``--check``, Ansible's word) connects and reads facts and
  changes nothing; ``--diff`` shows the before/after of every file xcatfab
  writes on a host; ``--json`` prints the recap and every step's result as
  JSON on stdout (for CI); ``-v`` prints every remote command with its exit
  status and time.
* Hosts: ``-H`` and ``--limit`` everywhere (see :mod:`tasks.cli.targets`).

:func:`xtask` is Invoke's ``@task`` with this grammar and these help texts.
"""

from __future__ import annotations

import inspect

from invoke import task

from ..runtime.executor import DEFAULT_FORKS
from .fabric_compat import XTask

HELP = {
    "inventory": "inventory file (default: $XCATFAB_INVENTORY or ./hosts.ini)",
    "limit": "inventory hosts to run on: groups, hosts, globs, !exclusions (comma list); all: every host",
    "set": "override an inventory key for this run's hosts, KEY=VALUE (repeatable)",
    "plan": "connect and read facts, print what would change, change nothing",
    "check": "the same as --plan (Ansible's name for it)",
    "diff": "show the before/after of each file xcatfab writes on a host (daemon.json, netplan, hosts, resolv.conf)",
    "json": "print the recap and every step's result as JSON on stdout (live output goes to stderr)",
    "verbose": "print every remote command with its exit status and time",
    "forks": f"at most this many hosts at once (default {DEFAULT_FORKS})",
    "serial": "batch size: N hosts, N% of the selected hosts, or a list like 1,25% (default: all at once)",
    "max_fail_percent": "stop before the next batch when MORE than this percent of a batch failed "
                        "(a batch in which every host failed always stops)",
    "verify": "quick (default): trust xcatfab's records (xCAT table stamps, ISO sums taken at staging); "
              "deep: re-read xCAT's tables and re-hash the staged ISOs on the host",
    "accept_new_host_keys": "record unknown host keys in known_hosts (a changed key is still refused)",
}


def xtask(*args, help=None, **kwargs):
    """``@task`` with xcatfab's flag grammar (:class:`~tasks.cli.fabric_compat.XTask`) and the shared help."""

    def decorate(body):
        params = inspect.signature(body).parameters
        texts = {name: text for name, text in HELP.items() if name in params}
        texts.update(help or {})
        iterable = list(kwargs.pop("iterable", []))
        if "set" in params and "set" not in iterable:
            iterable.append("set")
        return task(klass=XTask, help=texts, iterable=iterable, **kwargs)(body)

    if args and callable(args[0]):
        return decorate(args[0])
    return decorate
