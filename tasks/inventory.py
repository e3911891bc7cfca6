"""The ``hosts.ini`` inventory: parsing, precedence and validation.

The format is the subset of Ansible's INI inventory that admins actually use::

    [dockerhosts]
    dhost1 address=203.0.113.10 container_ip=203.0.113.20/24

    [dockerhosts:vars]
    container_fqdn=xcatmn.cluster.example

    [site:children]
    dockerhosts

Values resolve, lowest first: built-in defaults (:mod:`tasks.defaults`) <
the preset's defaults < ``[all:vars]`` < ``[group:vars]`` (a child group
beats its parent) < the host line < command-line ``--set KEY=VALUE`` flags.

Everything that can be checked without a connection is checked here, and
every problem is raised as one :class:`InventoryError` naming ``file:line``
and the key, so a bad inventory never reaches a host.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from .defaults import ALIASES, KEYS, PRESETS, preset_value

#: Exit status for bad input (inventory, flags), as the issue tracker agreed.
EXIT_BAD_INPUT = 2


class InventoryError(Exception):
    """Bad input, located: ``where`` is ``file:line``, ``--set`` or a host."""

    def __init__(self, where: str, key: Optional[str], message: str):
        self.where, self.key, self.message = where, key, message
        super().__init__(str(self))

    def __str__(self) -> str:
        key = f" {self.key}:" if self.key else ""
        return f"{self.where}:{key} {self.message}"


@dataclass(frozen=True)
class IsoSpec:
    """One ISO to stage: its local path and what copycds should be told."""

    path: str
    sha256: Optional[str] = None
    distro: Optional[str] = None
    arch: Optional[str] = None

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


@dataclass
class _Group:
    name: str
    line: int = 0
    hosts: list = field(default_factory=list)
    vars: dict = field(default_factory=dict)  # key -> (value, where)
    children: list = field(default_factory=list)  # (name, where)


@dataclass
class HostConfig:
    """The resolved settings of one docker host.

    ``values`` holds every key of :data:`tasks.defaults.KEYS`, converted to
    its type; ``origin`` says where each explicitly set value came from, so
    later errors can point at the line to fix. Keys read as attributes:
    ``cfg.container_ip``.
    """

    name: str
    values: dict
    origin: dict
    groups: tuple = ()

    def __getattr__(self, key: str) -> Any:
        try:
            return self.__dict__["values"][key]
        except KeyError:
            raise AttributeError(key) from None

    def where(self, key: str) -> str:
        """Where ``key`` was set (``file:line``, ``--set``) or ``default``."""
        return self.origin.get(key, "default")

    # Derived values used across steps.
    @property
    def connect_address(self) -> str:
        return self.values["address"] or self.name

    @property
    def become(self) -> bool:
        """True when privileged commands must go through sudo."""
        return self.values["user"] != "root"

    @property
    def container_hostname(self) -> str:
        return self.values["container_fqdn"].split(".", 1)[0]

    @property
    def container_domain(self) -> str:
        return self.values["container_fqdn"].partition(".")[2]

    @property
    def container_iface(self) -> Optional[ipaddress.IPv4Interface]:
        return self.values["container_ip"]

    @property
    def host_iface(self) -> Optional[ipaddress.IPv4Interface]:
        return self.values["host_ip"]

    @property
    def preset_data(self) -> dict:
        return PRESETS[self.values["preset"]]

    @property
    def family(self) -> str:
        return self.preset_data["family"]

    def as_template_vars(self) -> dict:
        """Every value plus the derived ones, for Jinja2 templates."""
        data = dict(self.preset_data)
        data.update(self.values)
        data.update(
            host_name=self.name,
            container_hostname=self.container_hostname,
            container_domain=self.container_domain,
            family=self.family,
        )
        return data


class Inventory:
    """A parsed inventory: groups, host lines and where each came from."""

    def __init__(self, path: Optional[str] = None):
        self.path = path
        self.groups: dict[str, _Group] = {"all": _Group("all")}
        self.host_lines: dict[str, tuple] = {}  # host -> (vars, where)
        self.host_order: list[str] = []

    # ------------------------------------------------------------------ parse
    @classmethod
    def parse(cls, text: str, path: str = "hosts.ini") -> "Inventory":
        """Parse inventory text; raise :class:`InventoryError` on any defect."""
        inv = cls(path)
        section, kind = "ungrouped", "hosts"
        inv._group(section, 0)
        for lineno, raw in enumerate(text.splitlines(), 1):
            where = f"{path}:{lineno}"
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                m = re.fullmatch(r"\[([A-Za-z0-9_.-]+)(?::(vars|children))?\]", line)
                if not m:
                    raise InventoryError(where, None, f"malformed section header {line!r}")
                section, kind = m.group(1), m.group(2) or "hosts"
                inv._group(section, lineno)
                continue
            if kind == "hosts":
                inv._host_line(section, line, where)
            elif kind == "vars":
                key, sep, value = line.partition("=")
                if not sep or not key.strip():
                    raise InventoryError(where, None, f"expected key=value, got {line!r}")
                key = _canonical_key(key.strip(), where)
                value = convert(key, _unquote(value.strip(), where), where)
                inv.groups[section].vars[key] = (value, where)
            else:  # children
                if not re.fullmatch(r"[A-Za-z0-9_.-]+", line):
                    raise InventoryError(where, None, f"malformed child group name {line!r}")
                inv.groups[section].children.append((line, where))
        inv._check_groups()
        return inv

    @classmethod
    def load(cls, path: str) -> "Inventory":
        """Read and parse ``path``; a missing file is bad input too."""
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise InventoryError(path, None, f"cannot read inventory: {exc.strerror}") from None
        return cls.parse(text, path)

    def _group(self, name: str, lineno: int) -> _Group:
        group = self.groups.get(name)
        if group is None:
            group = self.groups[name] = _Group(name, lineno)
        return group

    def _host_line(self, group: str, line: str, where: str) -> None:
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as exc:
            raise InventoryError(where, None, f"malformed host line: {exc}") from None
        name, rest = tokens[0], tokens[1:]
        if "=" in name or not re.fullmatch(r"[A-Za-z0-9_.:-]+", name):
            raise InventoryError(where, None, f"malformed host name {name!r}")
        hostvars = {}
        for token in rest:
            key, sep, value = token.partition("=")
            if not sep or not key:
                raise InventoryError(where, None, f"expected key=value after the host name, got {token!r}")
            key = _canonical_key(key, where)
            if key in hostvars:
                raise InventoryError(where, key, "given twice on this line")
            hostvars[key] = convert(key, value, where)
        if name in self.host_lines:
            prev_vars, prev_where = self.host_lines[name]
            if name in self.groups[group].hosts:
                raise InventoryError(where, None, f"duplicate host {name!r} (also at {prev_where})")
            if hostvars and prev_vars and hostvars != prev_vars:
                raise InventoryError(
                    where, None,
                    f"duplicate host {name!r} with different variables (first at {prev_where})",
                )
            if hostvars and not prev_vars:
                self.host_lines[name] = (hostvars, where)
        else:
            self.host_lines[name] = (hostvars, where)
            self.host_order.append(name)
        self.groups[group].hosts.append(name)

    def _check_groups(self) -> None:
        for group in list(self.groups.values()):
            for child, _where in group.children:
                if child not in self.groups:
                    # Ansible creates empty groups on reference; so do we.
                    self._group(child, 0)
        # Cycles: depth-first over children.
        state: dict[str, int] = {}

        def visit(name: str, stack: list) -> None:
            state[name] = 1
            for child, where in self.groups[name].children:
                if state.get(child) == 1:
                    cycle = " -> ".join(stack + [name, child])
                    raise InventoryError(where, None, f"group cycle: {cycle}")
                if not state.get(child):
                    visit(child, stack + [name])
            state[name] = 2

        for name in list(self.groups):
            if not state.get(name):
                visit(name, [])

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
                    (of(p) for p in parents[name] if p != "all"), default=0
                )
            return depth[name]

        return {name: of(name) for name in self.groups}

    def groups_of(self, host: str) -> list[str]:
        """Every group ``host`` belongs to, directly or through children."""
        direct = {g.name for g in self.groups.values() if host in g.hosts}
        result = set(direct)
        changed = True
        while changed:
            changed = False
            for group in self.groups.values():
                if group.name not in result and any(c in result for c, _ in group.children):
                    result.add(group.name)
                    changed = True
        result.add("all")
        return sorted(result)

    def hosts(self) -> list[str]:
        """Host names in the order they first appear."""
        return list(self.host_order)

    def select(self, pattern: Optional[str]) -> list[str]:
        """Hosts matching ``--limit``: a group, a host, a glob, or a comma list of those."""
        if not pattern:
            return self.hosts()
        import fnmatch

        chosen: list[str] = []
        for part in pattern.split(","):
            part = part.strip()
            if part in self.groups:
                members = [h for h in self.host_order if part in self.groups_of(h)]
            else:
                members = [h for h in self.host_order if fnmatch.fnmatchcase(h, part)]
            if not members:
                raise InventoryError("--limit", None, f"{part!r} matches no host or group in {self.path}")
            chosen.extend(h for h in members if h not in chosen)
        return chosen

    def host(self, name: str, overrides: Optional[dict] = None) -> HostConfig:
        """Resolve ``name``'s settings; hosts not in the inventory get defaults."""
        overrides = overrides or {}
        raw: dict[str, tuple] = {}  # key -> (string value, where)
        depths = self._depths()
        # A host that is only named on the command line gets defaults plus flags.
        known = name in self.host_lines
        groups = sorted(self.groups_of(name) if known else [], key=lambda g: (depths[g], g))
        for group in groups:
            raw.update(self.groups[group].vars)
        if name in self.host_lines:
            hostvars, where = self.host_lines[name]
            raw.update({k: (v, where) for k, v in hostvars.items()})
        raw.update(overrides)
        return resolve_host(name, raw, tuple(g for g in groups if g != "all"))


# ------------------------------------------------------------------- values
def _canonical_key(key: str, where: str) -> str:
    """Map aliases to our names and reject unknown keys with a suggestion."""
    key = ALIASES.get(key, key)
    if key not in KEYS:
        close = difflib.get_close_matches(key, list(KEYS) + list(ALIASES), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InventoryError(where, key, f"unknown key{hint}")
    return key


def _unquote(value: str, where: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        try:
            return shlex.split(value)[0]
        except (ValueError, IndexError):
            raise InventoryError(where, None, f"malformed quoted value {value!r}") from None
    return value


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def convert(key: str, value: Any, where: str) -> Any:
    """Convert one raw (string) value to the type :data:`KEYS` declares."""
    spec = KEYS[key]
    if not isinstance(value, str):
        return value
    text = value.strip()
    kind = spec.kind
    try:
        if kind == "int":
            number = int(text)
            if number < 0:
                raise ValueError
            return number
        if kind == "bool":
            low = text.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError
        if kind == "ip":
            return ipaddress.IPv4Address(text)
        if kind == "cidr":
            if "/" not in text:
                raise InventoryError(where, key, f"{text!r} needs a prefix length, e.g. {text}/24")
            iface = ipaddress.IPv4Interface(text)
            if iface.network.prefixlen >= 31 or iface.ip in (
                iface.network.network_address, iface.network.broadcast_address
            ):
                raise InventoryError(where, key, f"{text} is not a usable host address")
            return iface
        if kind == "list":
            return [item.strip() for item in text.split(",") if item.strip()]
        if kind == "json":
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError
            return data
        if kind == "path":
            return os.path.expanduser(text) if text else None
        if kind == "choice":
            if text not in spec.choices:
                raise InventoryError(where, key, f"{text!r} is not one of {', '.join(spec.choices)}")
            return text
        if kind == "isos":
            return parse_isos(text, where)
        return text
    except InventoryError:
        raise
    except (ValueError, json.JSONDecodeError):
        expected = {
            "int": "a non-negative integer",
            "bool": "true or false",
            "ip": "an IPv4 address",
            "cidr": "an IPv4 address/prefix",
            "json": "a JSON object",
        }.get(kind, kind)
        raise InventoryError(where, key, f"{text!r} is not {expected}") from None


_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def parse_isos(text: str, where: str) -> list[IsoSpec]:
    """``path [sha256=HEX] [distro=D] [arch=A]; path ...`` -> :class:`IsoSpec` list."""
    specs = []
    for entry in text.split(";"):
        fields = entry.split()
        if not fields:
            continue
        path, opts = os.path.expanduser(fields[0]), {}
        for item in fields[1:]:
            name, sep, value = item.partition("=")
            if not sep or name not in ("sha256", "distro", "arch") or not value:
                raise InventoryError(where, "isos", f"{item!r}: expected sha256=, distro= or arch=")
            opts[name] = value
        if "sha256" in opts:
            if not _SHA256.fullmatch(opts["sha256"]):
                raise InventoryError(where, "isos", f"{path}: sha256 must be 64 hex digits")
            opts["sha256"] = opts["sha256"].lower()
        specs.append(IsoSpec(path, **opts))
    return specs


def resolve_host(name: str, raw: dict, groups: tuple = ()) -> HostConfig:
    """Defaults < preset < explicit values; convert, then check the host alone."""
    explicit = {key: convert(key, value, where) for key, (value, where) in raw.items()}
    origin = {key: where for key, (value, where) in raw.items()}
    preset = explicit.get("preset", KEYS["preset"].default)
    values = {key: spec.default for key, spec in KEYS.items()}
    version = explicit.get("xcat_version") or PRESETS[preset]["xcat_version"]
    for key in KEYS:
        if key in PRESETS[preset]:
            values[key] = preset_value(preset, key, version)
    values.update(explicit)
    # Keys whose defaults depend on other keys.
    if values["image"] is None:
        values["image"] = preset_value(preset, "image", version)
    if values["container_dns"] is None:
        values["container_dns"] = values["gateway"]
    cfg = HostConfig(name, values, origin, groups)
    _check_host(cfg)
    return cfg


def _check_host(cfg: HostConfig) -> None:
    """Checks on one host's values that need no connection."""
    v = cfg.values
    host_ip, ctr_ip, gw = v["host_ip"], v["container_ip"], v["gateway"]
    if ctr_ip is not None and host_ip is not None:
        if ctr_ip.ip not in host_ip.network:
            raise InventoryError(cfg.where("container_ip"), "container_ip",
                                 f"{ctr_ip} is outside host {cfg.name}'s subnet {host_ip.network}")
        if ctr_ip.ip == host_ip.ip:
            raise InventoryError(cfg.where("container_ip"), "container_ip",
                                 f"{ctr_ip.ip} is host {cfg.name}'s own address")
    if ctr_ip is not None and gw is not None and ctr_ip.ip == gw:
        raise InventoryError(cfg.where("container_ip"), "container_ip",
                             f"{ctr_ip.ip} is host {cfg.name}'s gateway")
    if gw is not None and host_ip is not None and gw not in host_ip.network:
        raise InventoryError(cfg.where("gateway"), "gateway",
                             f"{gw} is outside host {cfg.name}'s subnet {host_ip.network}")
    shim = v["macvlan_shim_ip"]
    if v["network_mode"] == "macvlan" and shim is None:
        raise InventoryError(cfg.where("network_mode"), "macvlan_shim_ip",
                             f"network_mode=macvlan needs macvlan_shim_ip for host {cfg.name}: a free "
                             "address the host's shim can use to reach the container")
    if shim is not None:
        if host_ip is not None and shim not in host_ip.network:
            raise InventoryError(cfg.where("macvlan_shim_ip"), "macvlan_shim_ip",
                                 f"{shim} is outside host {cfg.name}'s subnet {host_ip.network}")
        taken = {"host_ip": host_ip.ip if host_ip else None, "container_ip": ctr_ip.ip if ctr_ip else None,
                 "gateway": gw}
        for key, ip in taken.items():
            if ip is not None and shim == ip:
                raise InventoryError(cfg.where("macvlan_shim_ip"), "macvlan_shim_ip",
                                     f"{shim} is host {cfg.name}'s {key}")
    if not v["container_fqdn"] or "." not in v["container_fqdn"].strip("."):
        raise InventoryError(cfg.where("container_fqdn"), "container_fqdn",
                             f"{v['container_fqdn']!r} needs a domain, e.g. xcatmn.cluster")
    for key in ("bridge", "mgmt_interface"):
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", v[key] or ""):
            raise InventoryError(cfg.where(key), key, f"{v[key]!r} is not a valid interface name")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v["container_name"] or ""):
        raise InventoryError(cfg.where("container_name"), "container_name",
                             f"{v['container_name']!r} is not a valid container name")
    if v["image_source"] == "load" and not v["image_tarball"]:
        raise InventoryError(cfg.where("image_source"), "image_tarball",
                             "image_source=load needs image_tarball")
    if v["image_source"] == "load" and not os.path.isfile(v["image_tarball"]):
        raise InventoryError(cfg.where("image_tarball"), "image_tarball",
                             f"{v['image_tarball']}: no such file")
    for iso in v["isos"]:
        if not os.path.isfile(iso.path):
            raise InventoryError(cfg.where("isos"), "isos", f"{iso.path}: no such file")
    for key in ("ssh_key",):
        if v[key] and not os.path.isfile(v[key]):
            raise InventoryError(cfg.where(key), key, f"{v[key]}: no such file")
    _check_host_dirs(cfg)


#: Directories a host directory key (state_dir, iso_dir, data_dir) may never be:
#: xcatfab creates, chmods and bind-mounts them, and teardown --purge-data deletes data_dir.
SYSTEM_DIRS = frozenset({
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/media", "/mnt", "/opt", "/proc",
    "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/lib"})
#: Bounds of rollback_seconds: long enough to apply and confirm, short enough to matter.
ROLLBACK_SECONDS = (10, 3600)


def _check_host_dirs(cfg: HostConfig) -> None:
    """Host directories are absolute and xcatfab's own, never a system directory."""
    v = cfg.values
    for key in ("state_dir", "iso_dir", "data_dir"):
        path = v[key] or ""
        if not path.startswith("/") or os.path.normpath(path) in SYSTEM_DIRS:
            raise InventoryError(cfg.where(key), key, f"{path!r} must be an absolute directory of its own, "
                                 "not a system directory")
    low, high = ROLLBACK_SECONDS
    if not low <= v["rollback_seconds"] <= high:
        raise InventoryError(cfg.where("rollback_seconds"), "rollback_seconds",
                             f"{v['rollback_seconds']} is not between {low} and {high}")


def check_hosts(configs: Iterable[HostConfig]) -> None:
    """Checks across hosts: no two hosts may share a container or host address."""
    taken: dict = {}
    for cfg in configs:
        claims = []
        if cfg.container_iface is not None:
            claims.append(("container_ip", cfg.container_iface.ip))
        if cfg.host_iface is not None:
            claims.append(("host_ip", cfg.host_iface.ip))
        if cfg.macvlan_shim_ip is not None:
            claims.append(("macvlan_shim_ip", cfg.macvlan_shim_ip))
        for key, ip in claims:
            other = taken.get(ip)
            if other and other[0] != cfg.name:
                raise InventoryError(
                    cfg.where(key), key,
                    f"{ip} of host {cfg.name} is already the {other[1]} of host {other[0]}",
                )
            taken.setdefault(ip, (cfg.name, key))


def parse_overrides(pairs: Iterable[str], where: str = "--set") -> dict:
    """``KEY=VALUE`` settings from the command line -> raw values tagged with ``where`` they came from."""
    raw = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep:
            raise InventoryError(where, None, f"expected KEY=VALUE, got {pair!r}")
        key = _canonical_key(key.strip(), where)
        raw[key] = (value, where)
    return raw


def default_inventory_path() -> Optional[str]:
    """``$XCATFAB_INVENTORY``, else ./hosts.ini when present."""
    env = os.environ.get("XCATFAB_INVENTORY")
    if env:
        return env
    return "hosts.ini" if os.path.exists("hosts.ini") else None


def load_hosts(
    inventory: Optional[str],
    names: Optional[Iterable[str]] = None,
    limit: Optional[str] = None,
    overrides: Iterable[str] = (),
    host_overrides: Optional[dict] = None,
) -> list[HostConfig]:
    """Resolve and validate every selected host before anything connects.

    ``names`` are hosts given with ``-H`` (not necessarily in the inventory);
    otherwise ``limit`` selects from the inventory. The whole inventory is
    resolved, so a defect on any host line is reported even when that host is
    not selected, and cross-host checks see every host. ``host_overrides``
    (name -> ``KEY=VALUE`` list, from ``-H user@host:port``) beat ``--set``.
    """
    flags = parse_overrides(overrides)
    inv = Inventory.load(inventory) if inventory else Inventory(None)
    everyone = {name: inv.host(name, flags) for name in inv.hosts()}
    for name, pairs in (host_overrides or {}).items():
        if pairs:
            everyone[name] = inv.host(name, {**flags, **parse_overrides(pairs, where=f"-H {name}")})
    if names:
        chosen = [everyone.get(n) or inv.host(n, flags) for n in names]
    else:
        chosen = [everyone[n] for n in inv.select(limit)]
    check_hosts(list(everyone.values()) + [c for c in chosen if c.name not in everyone])
    return chosen
