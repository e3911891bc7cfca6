"""The ``hosts.ini`` inventory: parsing, host selection and precedence.

The format is the part of Ansible's INI inventory that admins use::

    [dockerhosts]
    dhost[1:4] container_ip=... ansible_user=ubuntu   # a host range
    dhost9:2222 address=203.0.113.19                  # host:port

    [dockerhosts:vars]
    container_fqdn=xcatmn.cluster.example

    [site:children]
    dockerhosts

Values resolve, lowest first: built-in defaults < the preset's < ``[all:vars]``
< ``[group:vars]`` (a child group beats its parent) < the host line <
``--set KEY=VALUE`` < a user or port written in ``-H``. How a value is written
(quotes, comments) is :mod:`tasks.runtime.values`; the checks on the result
are :mod:`tasks.runtime.validate`.

Variables xcatfab does not know are errors (with a did-you-mean), so a typo
never passes silently. An Ansible inventory with variables of its own loads
with ``xcatfab_unknown_vars=ignore`` in ``[all:vars]`` (or
``$XCATFAB_UNKNOWN_VARS=ignore``): unknown variables are then skipped, but one
that looks like a misspelt xcatfab key is still an error.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
import string
from dataclasses import dataclass, field
from typing import Iterable, Optional

from .config import ALIASES, KEYS, HostConfig
from .errors import BadInput
from .presets import PRESETS, preset_value
from .validate import check_host, check_hosts
from .values import convert, split_words, unquote, vars_value

#: The switch that lets an inventory carry variables xcatfab does not know.
UNKNOWN_VARS_KEY = "xcatfab_unknown_vars"
UNKNOWN_VARS_ENV = "XCATFAB_UNKNOWN_VARS"
HOST_NAME = re.compile(r"[A-Za-z0-9_.-]+")
GROUP_NAME = re.compile(r"[A-Za-z0-9_.-]+")
#: A host range: ``www[01:50]`` or ``db-[a:f]`` (an optional third part is the stride).
HOST_RANGE = re.compile(r"\[([0-9a-z]+):([0-9a-z]+)(?::([0-9]+))?\]")


@dataclass
class _Group:
    name: str
    line: int = 0
    hosts: list = field(default_factory=list)
    vars: dict = field(default_factory=dict)  # key -> (value, where)
    children: list = field(default_factory=list)  # (name, where)


# --------------------------------------------------------------------------- reading
def read_text(path: str) -> str:
    """The inventory file's text (UTF-8, with or without a BOM); unreadable or not UTF-8 is bad input."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise BadInput(path, None, f"cannot read inventory: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise BadInput(f"{path}:{line}", None, f"not UTF-8 (byte 0x{data[exc.start]:02x}): "
                                               "save the inventory as UTF-8") from None
    return text.removeprefix("\ufeff")


def expand_host(pattern: str, where: str) -> list[str]:
    """``www[01:03]`` -> www01, www02, www03; ``db-[a:c]`` -> db-a, db-b, db-c (Ansible's ranges)."""
    match = HOST_RANGE.search(pattern)
    if not match:
        return [pattern]
    head, tail = pattern[:match.start()], pattern[match.end():]
    items = _range_items(match.group(1), match.group(2), int(match.group(3) or 1) or 1)
    if items is None:
        raise BadInput(where, None, f"malformed host range [{match.group(0)[1:-1]}] in {pattern!r}")
    if not items:
        raise BadInput(where, None, f"host range in {pattern!r} is empty")
    return [name for item in items for name in expand_host(head + item + tail, where)]


def _range_items(first: str, last: str, stride: int) -> Optional[list]:
    """The items of ``[first:last:stride]``: zero-padded numbers, or single letters; None if neither."""
    if first.isdigit() and last.isdigit():
        width = len(first) if first.startswith("0") else 0
        return [str(n).zfill(width) for n in range(int(first), int(last) + 1, stride)]
    letters = string.ascii_lowercase
    if len(first) == 1 and len(last) == 1 and first in letters and last in letters:
        return [chr(c) for c in range(ord(first), ord(last) + 1, stride)]
    return None


def split_port(name: str, where: str) -> tuple[str, Optional[str]]:
    """``host:port`` -> (host, port); a bare host -> (host, None)."""
    host, sep, port = name.rpartition(":")
    if not sep:
        return name, None
    if not port.isdigit():
        raise BadInput(where, None, f"malformed host {name!r}: the part after ':' must be a port number")
    return host, port


class Inventory:
    """A parsed inventory: groups, host lines and where each came from."""

    def __init__(self, path: Optional[str] = None):
        self.path = path
        self.groups: dict[str, _Group] = {"all": _Group("all"), "ungrouped": _Group("ungrouped")}
        self.host_lines: dict[str, tuple] = {}  # host -> (vars, where)
        self.host_order: list[str] = []
        self.unknown_vars = os.environ.get(UNKNOWN_VARS_ENV, "error")

    # ------------------------------------------------------------------ parse
    @classmethod
    def parse(cls, text: str, path: str = "hosts.ini") -> "Inventory":
        """Parse inventory text; raise :class:`BadInput` on any defect."""
        inv = cls(path)
        lines = text.removeprefix("\ufeff").splitlines()
        inv._read_switch(lines)
        section, kind = "ungrouped", "hosts"
        for lineno, raw in enumerate(lines, 1):
            where = f"{path}:{lineno}"
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section, kind = inv._section(line, lineno, where)
            elif kind == "hosts":
                inv._host_line(section, line, where)
            elif kind == "vars":
                inv._vars_line(section, line, where)
            else:
                inv._child_line(section, line, where)
        inv._check_groups()
        return inv

    @classmethod
    def load(cls, path: str) -> "Inventory":
        """Read and parse ``path``; a missing, unreadable or non-UTF-8 file is bad input too."""
        return cls.parse(read_text(path), path)

    def _read_switch(self, lines: list) -> None:
        """``xcatfab_unknown_vars=`` anywhere in ``[all:vars]`` applies to the whole file."""
        section = None
        for lineno, raw in enumerate(lines, 1):
            line = raw.strip()
            if line.startswith("["):
                section = line
            elif section == "[all:vars]" and line.startswith(UNKNOWN_VARS_KEY):
                _key, value = vars_value(line, f"{self.path}:{lineno}")
                if value not in ("error", "ignore"):
                    raise BadInput(f"{self.path}:{lineno}", UNKNOWN_VARS_KEY, f"{value!r} is not error or ignore")
                self.unknown_vars = value

    def _section(self, line: str, lineno: int, where: str) -> tuple[str, str]:
        m = re.fullmatch(r"\[([A-Za-z0-9_.-]+)(?::(vars|children))?\]", line)
        if not m:
            raise BadInput(where, None, f"malformed section header {line!r}")
        self._group(m.group(1), lineno)
        return m.group(1), m.group(2) or "hosts"

    def _group(self, name: str, lineno: int) -> _Group:
        group = self.groups.get(name)
        if group is None:
            group = self.groups[name] = _Group(name, lineno)
        return group

    def _key(self, key: str, where: str) -> Optional[str]:
        """Our name for ``key`` (aliases mapped); None for a foreign variable that is to be skipped."""
        key = ALIASES.get(key, key)
        if key in KEYS:
            return key
        if key == UNKNOWN_VARS_KEY:
            return None
        close = difflib.get_close_matches(key, list(KEYS) + list(ALIASES), n=1, cutoff=0.6)
        if self.unknown_vars == "ignore" and not difflib.get_close_matches(
                key, list(KEYS) + list(ALIASES), n=1, cutoff=0.8):
            return None
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise BadInput(where, key, f"unknown key{hint}")

    def _vars_line(self, section: str, line: str, where: str) -> None:
        key, value = vars_value(line, where)
        name = self._key(key, where)
        if name is not None:
            self.groups[section].vars[name] = (convert(name, unquote(value, where), where), where)

    def _child_line(self, section: str, line: str, where: str) -> None:
        words = split_words(line, where, "child group line")
        if len(words) != 1 or not GROUP_NAME.fullmatch(words[0]):
            raise BadInput(where, None, f"malformed child group name {line!r}")
        self.groups[section].children.append((words[0], where))

    def _host_vars(self, words: list, where: str) -> dict:
        hostvars = {}
        for token in words:
            key, sep, value = token.partition("=")
            if not sep or not key:
                raise BadInput(where, None, f"expected key=value after the host name, got {token!r}")
            name = self._key(key, where)
            if name is None:
                continue
            if name in hostvars:
                raise BadInput(where, name, "given twice on this line")
            hostvars[name] = convert(name, unquote(value, where), where)
        return hostvars

    def _host_line(self, group: str, line: str, where: str) -> None:
        words = split_words(line, where, "host line")
        pattern, rest = words[0], words[1:]
        if "=" in pattern or not re.fullmatch(r"[A-Za-z0-9_.:\[\]-]+", pattern):
            raise BadInput(where, None, f"malformed host name {pattern!r}")
        hostvars = self._host_vars(rest, where)
        for name in expand_host(pattern, where):
            host, port = split_port(name, where)
            if not HOST_NAME.fullmatch(host):
                raise BadInput(where, None, f"malformed host name {name!r}")
            values = dict(hostvars)
            if port is not None:
                if "port" in values:
                    raise BadInput(where, "port", f"given both in {name!r} and as port=")
                values["port"] = convert("port", port, where)
            self._add_host(group, host, values, where)

    def _add_host(self, group: str, name: str, hostvars: dict, where: str) -> None:
        if name in self.host_lines:
            prev_vars, prev_where = self.host_lines[name]
            if name in self.groups[group].hosts:
                raise BadInput(where, None, f"duplicate host {name!r} (also at {prev_where})")
            if hostvars and prev_vars and hostvars != prev_vars:
                raise BadInput(where, None, f"duplicate host {name!r} with different variables "
                                            f"(first at {prev_where})")
            if hostvars and not prev_vars:
                self.host_lines[name] = (hostvars, where)
        else:
            self.host_lines[name] = (hostvars, where)
            self.host_order.append(name)
        self.groups[group].hosts.append(name)

    def _check_groups(self) -> None:
        for group in list(self.groups.values()):
            for child, _where in group.children:
                self._group(child, 0)  # Ansible creates empty groups on reference; so do we.
        state: dict[str, int] = {}
        for name in list(self.groups):
            if not state.get(name):
                self._visit(name, [], state)

    def _visit(self, name: str, stack: list, state: dict) -> None:
        """Depth-first over children: a child group that is already on the path is a cycle."""
        state[name] = 1
        for child, where in self.groups[name].children:
            if state.get(child) == 1:
                raise BadInput(where, None, f"group cycle: {' -> '.join(stack + [name, child])}")
            if not state.get(child):
                self._visit(child, stack + [name], state)
        state[name] = 2

    # ---------------------------------------------------------------- resolve
    def _depths(self) -> dict[str, int]:
        """Depth of each group below ``all``: a child is deeper than its parents."""
        parents: dict[str, list] = {name: [] for name in self.groups}
        for group in self.groups.values():
            for child, _ in group.children:
                parents[child].append(group.name)
        depth: dict[str, int] = {}

        def of(name: str) -> int:
            if name not in depth:
                depth[name] = 0 if name == "all" else 1 + max(
                    (of(p) for p in parents[name] if p != "all"), default=0)
            return depth[name]

        return {name: of(name) for name in self.groups}

    def groups_of(self, host: str) -> list[str]:
        """Every group ``host`` belongs to, directly or through children (``all`` included)."""
        result = {g.name for g in self.groups.values() if host in g.hosts}
        changed = True
        while changed:
            grown = {g.name for g in self.groups.values()
                     if g.name not in result and any(c in result for c, _ in g.children)}
            result |= grown
            changed = bool(grown)
        result.add("all")
        return sorted(result)

    def hosts(self) -> list[str]:
        """Host names in the order they first appear."""
        return list(self.host_order)

    def _matching(self, part: str) -> list[str]:
        if part in self.groups:
            return [h for h in self.host_order if part in self.groups_of(h)]
        return [h for h in self.host_order if fnmatch.fnmatchcase(h, part)]

    def select(self, pattern: Optional[str]) -> list[str]:
        """Hosts matching ``--limit`` (None: every host).

        A comma (or colon) list of groups, hosts and globs; ``!x`` removes
        what ``x`` matches and ``&x`` keeps only what ``x`` matches too, as
        Ansible's host patterns do. Every part must match something.
        """
        if pattern is None:
            return self.hosts()
        parts = [p.strip() for p in re.split(r"[,:]", pattern)]
        if not any(parts):
            raise BadInput("--limit", None, "empty: name a group, a host or a glob (--limit all for every host)")
        chosen: list[str] = []
        for part in (p for p in parts if p):
            chosen = self._apply_part(chosen, part)
        if not chosen:
            raise BadInput("--limit", None, f"{pattern!r} leaves no host")
        return chosen

    def _apply_part(self, chosen: list, part: str) -> list:
        """``chosen`` after one part of a ``--limit`` pattern (``x``, ``!x`` or ``&x``)."""
        members = self._matching(part.lstrip("!&"))
        if not members:
            raise BadInput("--limit", None, f"{part.lstrip('!&')!r} matches no host or group in {self.path}")
        if part.startswith("!"):
            return [h for h in chosen if h not in members]
        if part.startswith("&"):
            return [h for h in chosen if h in members]
        return chosen + [h for h in members if h not in chosen]

    def explicit(self, name: str) -> tuple[dict, tuple]:
        """(key -> (value, where), groups) set for ``name`` by the inventory, lowest precedence first."""
        raw: dict[str, tuple] = {}
        depths = self._depths()
        known = name in self.host_lines
        groups = sorted(self.groups_of(name) if known else [], key=lambda g: (depths[g], g))
        for group in groups:
            raw.update(self.groups[group].vars)
        if known:
            hostvars, where = self.host_lines[name]
            raw.update({k: (v, where) for k, v in hostvars.items()})
        return raw, tuple(g for g in groups if g != "all")

    def host(self, name: str, overrides: Optional[dict] = None) -> HostConfig:
        """Resolve ``name``'s settings; hosts not in the inventory get defaults (plus ``overrides``)."""
        raw, groups = self.explicit(name)
        raw.update(overrides or {})
        return resolve_host(name, raw, groups)


def resolve_host(name: str, raw: dict, groups: tuple = ()) -> HostConfig:
    """Defaults < preset < explicit values (already converted); then check the host alone."""
    explicit = {key: value for key, (value, _where) in raw.items()}
    origin = {key: where for key, (_value, where) in raw.items()}
    preset = explicit.get("preset") or KEYS["preset"].default
    values = {key: spec.default for key, spec in KEYS.items()}
    version = explicit.get("xcat_version") or PRESETS[preset]["xcat_version"]
    for key in KEYS:
        if key in PRESETS[preset]:
            values[key] = preset_value(preset, key, version)
            origin.setdefault(key, f"preset {preset}")
    values.update(explicit)
    # Keys whose defaults depend on other keys.
    if values["image"] is None:
        values["image"] = preset_value(preset, "image", version)
        origin.setdefault("image", f"preset {preset}")
    if values["container_dns"] is None and values["gateway"] is not None:
        values["container_dns"] = values["gateway"]
        origin.setdefault("container_dns", "gateway")
    cfg = HostConfig(name=name, origin=origin, groups=groups, **values)
    check_host(cfg)
    return cfg


def parse_overrides(pairs: Iterable[str], where: str = "--set") -> dict:
    """``KEY=VALUE`` settings from the command line -> converted values tagged with ``where``."""
    raw = {}
    for pair in pairs or ():
        key, sep, value = str(pair).partition("=")
        if not sep or not key.strip():
            raise BadInput(where, None, f"expected KEY=VALUE, got {pair!r}")
        name = ALIASES.get(key.strip(), key.strip())
        if name not in KEYS:
            close = difflib.get_close_matches(name, list(KEYS), n=1, cutoff=0.6)
            raise BadInput(where, name, "unknown key" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raw[name] = (convert(name, value, where), where)
    return raw


def default_inventory_path() -> Optional[str]:
    """``$XCATFAB_INVENTORY``, else ./hosts.ini when present."""
    env = os.environ.get("XCATFAB_INVENTORY")
    if env:
        return env
    return "hosts.ini" if os.path.exists("hosts.ini") else None


def _chosen(inv: Inventory, names: list, limit: Optional[str], inventory: Optional[str]) -> list:
    """The host names a run selects: ``-H`` names (filtered by ``--limit``), else ``--limit`` of the inventory."""
    if names and limit is not None:
        chosen = [n for n in names if n in inv.select(limit)]
        if not chosen:
            raise BadInput("--limit", None, f"{limit!r} selects none of the -H hosts ({', '.join(names)})")
        return chosen
    if names:
        return names
    chosen = inv.select(limit)
    if not chosen:
        raise BadInput(inventory or "--inventory", None, "the inventory has no hosts")
    return chosen


def load_hosts(
    inventory: Optional[str],
    names: Optional[Iterable[str]] = None,
    limit: Optional[str] = None,
    overrides: Iterable[str] = (),
    host_overrides: Optional[dict] = None,
) -> list[HostConfig]:
    """Resolve and validate every selected host before anything connects.

    ``names`` are hosts given with ``-H`` (not necessarily in the inventory);
    otherwise ``limit`` selects from the inventory (None: every host). The
    whole inventory is resolved, so a defect on any host line is reported
    even when that host is not selected, and cross-host checks see every
    host with its effective values. ``overrides`` (``--set``) apply to the
    selected hosts only; ``host_overrides`` (name -> ``KEY=VALUE`` list, from
    ``-H user@host:port``) beat them.
    """
    flags = parse_overrides(overrides)
    inv = Inventory.load(inventory) if inventory else Inventory(None)
    chosen_names = _chosen(inv, list(names or []), limit, inventory)
    host_overrides = host_overrides or {}
    resolved = {}
    for name in inv.hosts() + [n for n in chosen_names if n not in inv.host_lines]:
        extra = parse_overrides(host_overrides.get(name, ()), where=f"-H {name}")
        resolved[name] = inv.host(name, {**flags, **extra} if name in chosen_names else None)
    check_hosts(resolved.values())  # in inventory order: a clash is reported at the later host
    return [resolved[name] for name in chosen_names]
