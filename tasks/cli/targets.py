"""Which hosts a task runs on, with which settings — decided before anything connects.

Every task that takes hosts accepts ``-H`` (Fabric's own flag: a comma list of
``[user@]host[:port]``) and ``--limit`` (groups, hosts and globs of the
inventory, Ansible's way). With ``-H`` the named hosts run (filtered by
``--limit`` when both are given); without it, ``--limit`` selects from the
inventory; with neither, read-only tasks (``status``, ``inventory``) and
``rollout`` take the whole inventory and the others refuse, asking for ``-H``
or ``--limit`` (``--limit all`` is every host).
"""

from __future__ import annotations

import re
from typing import Optional

from ..runtime.errors import BadInput
from ..runtime.inventory import default_inventory_path, load_hosts

#: ``[user@]host[:port]``, ``[user@][v6addr]:port``.
_ENTRY = re.compile(r"(?:(?P<user>[A-Za-z0-9_][A-Za-z0-9_.-]*)@)?"
                    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_][A-Za-z0-9_.-]*))"
                    r"(?::(?P<port>[0-9]+))?")


def split_host(text: str) -> tuple[str, list[str]]:
    """A ``-H`` entry ``[user@]host[:port]`` -> (host, its ``user=``/``port=`` settings).

    Fabric connects to the host part only; xcatfab takes the user and port
    given there as settings of that host that beat the inventory, so
    ``-H ubuntu@h`` never silently connects as the inventory's user. IPv6
    addresses with a port are written ``[addr]:port``. Anything else is bad
    input (one line naming the entry).
    """
    text = text.strip()
    if text.count(":") >= 2 and "[" not in text and "@" not in text:
        return text, []  # a bare IPv6 address (a port needs the [addr]:port form)
    match = _ENTRY.fullmatch(text)
    if not match:
        raise BadInput("-H", None, f"{text!r} is not [user@]host[:port]")
    settings = []
    if match.group("user"):
        settings.append(f"user={match.group('user')}")
    if match.group("port"):
        port = int(match.group("port"))
        if not 1 <= port <= 65535:
            raise BadInput("-H", None, f"{text!r}: port {port} is not between 1 and 65535")
        settings.append(f"port={port}")
    return match.group("v6") or match.group("host"), settings


def parse_targets(entries) -> dict[str, list[str]]:
    """Every ``-H`` entry, in order: host -> the settings its entry carries."""
    targets: dict[str, list[str]] = {}
    for entry in entries or ():
        if entry.strip():
            host, settings = split_host(entry)
            targets.setdefault(host, []).extend(settings)
    return targets


def select(entries, inventory: Optional[str], limit: Optional[str], sets, default_all: bool,
           task: str) -> list:
    """The settings of every host the task runs on (validated; bad input raises :class:`BadInput`)."""
    targets = parse_targets(entries)
    path = inventory or default_inventory_path()
    if not targets and limit is None and not default_all:
        raise BadInput(task, None, "no host: name hosts with -H HOST[,HOST...] or select them from the "
                                   "inventory with --limit GROUP|HOST|GLOB (--limit all: every host)")
    if not targets and not path:
        raise BadInput("--inventory", None, "no inventory: give --inventory FILE, set $XCATFAB_INVENTORY, "
                                            "or put a hosts.ini here")
    return load_hosts(path, names=list(targets) or None, limit=limit, overrides=sets or (),
                      host_overrides=targets)
