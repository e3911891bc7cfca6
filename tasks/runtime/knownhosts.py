"""Host keys: known_hosts read by xcatfab itself, and the policy that checks a server's key.

Fabric's ``Connection`` accepts any host key (it installs paramiko's
``AutoAddPolicy`` and never loads known_hosts: fabric#1804, #2071).
:func:`guard` puts xcatfab's own policy on the connection's client (and on
every ProxyJump gateway's) before it opens; :mod:`tasks.runtime.ssh` calls it
for every connection. What the policy checks:

* known_hosts is read from the user's file, every ``UserKnownHostsFile``
  that ssh_config names, and the inventory's ``known_hosts`` (by xcatfab
  itself: see :func:`read_known_hosts`), and the server's key is checked
  against every entry for the host, hashed and wildcard names included;
* an unknown host key is refused, saying how to accept it, unless
  ``accept_new`` is set (OpenSSH's ``accept-new``: record the new key, but
  still refuse a changed one); a changed or ``@revoked`` key is always
  refused; ProxyJump gateways are checked the same way.
"""

from __future__ import annotations

import fcntl
import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from .config import HostConfig
from .errors import ConnectError

USER_KNOWN_HOSTS = "~/.ssh/known_hosts"


def fingerprint(key) -> str:
    import base64
    import hashlib

    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def host_entry(hostname: str, port: int) -> str:
    """The name known_hosts files use for a host: ``host``, or ``[host]:port`` off port 22."""
    if hostname.startswith("["):
        return hostname  # already in known_hosts form
    return hostname if port == 22 else f"[{hostname}]:{port}"


# ------------------------------------------------------------------ known_hosts
#
# xcatfab reads known_hosts files itself instead of with paramiko's
# load_system_host_keys, which (paramiko 5.1) raises on the first line it
# cannot parse, an ``@cert-authority`` line included, so one such line in a
# user's file stopped every connection with a traceback; and which ignores
# ``@revoked``. It also checks a server key against EVERY entry for the host,
# as OpenSSH does, where paramiko compares with the first entry of that key
# type only (a stale line in ~/.ssh/known_hosts would hide a correct one in
# the inventory's file).

#: Host-key algorithms that can prove a key of each type (paramiko names).
_ALGORITHMS_FOR_TYPE = {
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
}
#: Every host-key algorithm we may have to switch off to make a server use a known key type.
_ALL_HOST_KEY_ALGORITHMS = (
    "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa", "ssh-dss",
    "ssh-ed25519-cert-v01@openssh.com", "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com", "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "rsa-sha2-512-cert-v01@openssh.com", "rsa-sha2-256-cert-v01@openssh.com",
    "ssh-rsa-cert-v01@openssh.com",
)


@dataclass
class KnownKey:
    """One key line of a known_hosts file: its host patterns, key and ``file:line``."""

    patterns: tuple
    key: Any
    where: str


@dataclass
class KnownHosts:
    """Every usable line of the trusted known_hosts files, in file order."""

    keys: list = field(default_factory=list)
    revoked: list = field(default_factory=list)  # KnownKey with patterns=()

    def for_host(self, entry: str) -> list:
        """The keys recorded for ``entry`` (``host`` or ``[host]:port``)."""
        return [k for k in self.keys if host_matches(entry, k.patterns)]

    def revoked_entry(self, key) -> Optional[KnownKey]:
        """The ``@revoked`` line naming ``key``, if any."""
        return next((k for k in self.revoked if _same_key(k.key, key)), None)


def _same_key(a, b) -> bool:
    return a.get_name() == b.get_name() and a.asbytes() == b.asbytes()


def _pattern_matches(name: str, pattern: str) -> bool:
    """One known_hosts host pattern: exact, hashed (``|1|salt|hash``) or a ``*``/``?`` glob."""
    import hmac

    from paramiko.hostkeys import HostKeys

    if pattern.startswith("|1|"):
        try:
            return hmac.compare_digest(HostKeys.hash_host(name, pattern), pattern)
        except Exception:  # a malformed hashed entry matches nothing
            return False
    if "*" in pattern or "?" in pattern:
        # Only * and ? are special (not fnmatch's [...]: "[host]:port" is literal).
        regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
        return re.fullmatch(regex, name, re.IGNORECASE) is not None
    return pattern.lower() == name.lower()


def host_matches(name: str, patterns) -> bool:
    """OpenSSH's rule: some pattern matches and no negated (``!``) pattern does."""
    matched = False
    for pattern in patterns:
        if pattern.startswith("!"):
            if _pattern_matches(name, pattern[1:]):
                return False
        elif _pattern_matches(name, pattern):
            matched = True
    return matched


def read_known_hosts(paths) -> KnownHosts:
    """Read every existing file of ``paths``; lines that cannot be used are skipped.

    Skipped, as OpenSSH skips them: comments, malformed lines, unknown key
    types, and ``@cert-authority`` lines (xcatfab does not verify host
    certificates, so such a line vouches for no plain key). ``@revoked``
    lines are kept: a revoked key is refused even when another line lists it.
    """
    from paramiko.hostkeys import HostKeyEntry

    known = KnownHosts()
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                lines = fh.read().splitlines()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise OSError(f"cannot read known_hosts {path}: {exc.strerror}") from None
        for lineno, raw in enumerate(lines, 1):
            fields = raw.split()
            if not fields or fields[0].startswith("#"):
                continue
            marker = fields.pop(0) if fields[0].startswith("@") else None
            if marker not in (None, "@revoked") or len(fields) < 3:
                continue
            try:
                entry = HostKeyEntry.from_line(" ".join(fields[:3]), lineno)
            except Exception:  # bad base64, a key paramiko cannot load: skip the line
                entry = None
            if entry is None or entry.key is None:
                continue
            where = f"{path}:{lineno}"
            if marker == "@revoked":
                known.revoked.append(KnownKey((), entry.key, where))
            else:
                known.keys.append(KnownKey(tuple(fields[0].split(",")), entry.key, where))
    return known


def _disabled_host_key_algorithms(known: list) -> list:
    """Host-key algorithms to switch off so the server proves a key type we know (as OpenSSH prefers)."""
    if not known:
        return []
    allowed = set()
    for k in known:
        allowed.update(_ALGORITHMS_FOR_TYPE.get(k.key.get_name(), (k.key.get_name(),)))
    return [alg for alg in _ALL_HOST_KEY_ALGORITHMS if alg not in allowed]


def _make_policy():
    """The host-key policy class, built on first use so paramiko loads lazily."""
    import paramiko

    class CheckKnownHosts(paramiko.MissingHostKeyPolicy):
        """Check the server's key against every known_hosts entry for the host.

        paramiko's own stores stay empty, so this is called on every
        connection. Known and matching: connect. Revoked, or known with
        other keys (changed): refuse. Unknown: refuse, saying how to accept,
        or with ``record_in`` set record it there (OpenSSH's accept-new).
        """

        def __init__(self, name: str, entry: str, known: KnownHosts, record_in: str,
                     accept_new: bool, hash_names: bool):
            self.name, self.entry, self.known = name, entry, known
            self.record_in, self.accept_new, self.hash_names = record_in, accept_new, hash_names

        def missing_host_key(self, client, hostname, key):
            ours = self.known.for_host(self.entry)
            revoked = self.known.revoked_entry(key)
            if revoked:
                raise ConnectError(self.name, f"host key {key.get_name()} {fingerprint(key)} of {self.entry} "
                                              f"is REVOKED ({revoked.where}): refusing to connect")
            if any(_same_key(k.key, key) for k in ours):
                return
            if ours:
                raise ConnectError(self.name, _changed_message(self.entry, key, ours))
            if not self.accept_new:
                raise ConnectError(
                    self.name,
                    f"unknown host key {key.get_name()} {fingerprint(key)} for {self.entry}: "
                    f"verify it, then rerun with --accept-new-host-keys "
                    f"(or add it with: ssh-keyscan {_keyscan_args(self.entry)} >> {self.record_in})",
                )
            self.record(key)

        def record(self, key) -> None:
            """Append the key to ``record_in`` under an exclusive lock (hosts run in parallel)."""
            from paramiko.hostkeys import HostKeys

            name = HostKeys.hash_host(self.entry) if self.hash_names else self.entry
            directory = os.path.dirname(self.record_in) or "."
            try:
                os.makedirs(directory, mode=0o700, exist_ok=True)
                with open(self.record_in, "a", encoding="ascii") as fh:
                    fcntl.flock(fh, fcntl.LOCK_EX)
                    fh.write(f"{name} {key.get_name()} {key.get_base64()}\n")
            except OSError as exc:
                raise ConnectError(self.name, f"cannot record the new host key of {self.entry} "
                                              f"in {self.record_in}: {exc.strerror}") from None

    return CheckKnownHosts


def _keyscan_args(entry: str) -> str:
    match = re.fullmatch(r"\[(.*)\]:([0-9]+)", entry)
    return f"-p {match.group(2)} {match.group(1)}" if match else entry


def _changed_message(entry: str, key, ours: list) -> str:
    first = ours[0]
    return (f"host key for {entry} CHANGED (now {key.get_name()} {fingerprint(key)}; "
            f"{first.where} has {first.key.get_name()} {fingerprint(first.key)}): refusing to connect; "
            f"if the host was reinstalled, remove the old key "
            f"(ssh-keygen -R '{entry}' -f {first.where.rsplit(':', 1)[0]}) and verify the new one")


def known_hosts_files(cfg: HostConfig, ssh_config) -> list[str]:
    """known_hosts files to trust: the user's, ssh_config's and the inventory's."""
    paths = [os.path.expanduser(USER_KNOWN_HOSTS)]
    paths.extend(_ssh_config_known_hosts(ssh_config))
    if cfg.known_hosts:
        paths.append(cfg.known_hosts)
    seen, result = set(), []
    for path in paths:
        if path not in seen:
            seen.add(path)
            result.append(path)
    return result


def _ssh_config_known_hosts(ssh_config) -> list[str]:
    """Every file ssh_config's ``UserKnownHostsFile`` names (it may list several)."""
    return [os.path.expanduser(v) for v in ssh_config.get("userknownhostsfile", "").split()]


def record_file(cfg: HostConfig, ssh_config) -> str:
    """Where --accept-new-host-keys records a key: the inventory's known_hosts, else
    the first UserKnownHostsFile of ssh_config (as OpenSSH does), else ~/.ssh/known_hosts."""
    if cfg.known_hosts:
        return cfg.known_hosts
    listed = _ssh_config_known_hosts(ssh_config)
    return listed[0] if listed else os.path.expanduser(USER_KNOWN_HOSTS)


def guard(conn, name: str, cfg: HostConfig, accept_new: bool) -> None:
    """Put host-key checking on ``conn`` and on every ProxyJump gateway before it.

    Fabric builds each gateway Connection with AutoAddPolicy too, so a jump
    host's key would otherwise go unchecked.
    """
    from fabric import Connection

    entry = host_entry(conn.host, conn.port)
    try:
        known = read_known_hosts(known_hosts_files(cfg, conn.ssh_config))
    except OSError as exc:
        raise ConnectError(name, str(exc)) from None
    hash_names = str(conn.ssh_config.get("hashknownhosts", "no")).lower() == "yes"
    policy = _make_policy()(name, entry, known, record_file(cfg, conn.ssh_config),
                            accept_new, hash_names)
    conn.client.set_missing_host_key_policy(policy)
    disabled = _disabled_host_key_algorithms(known.for_host(entry))
    if disabled:
        current = dict(conn.connect_kwargs.get("disabled_algorithms") or {})
        current["keys"] = sorted(set(current.get("keys", [])) | set(disabled))
        conn.connect_kwargs["disabled_algorithms"] = current
    if isinstance(conn.gateway, Connection):
        guard(conn.gateway, f"{name} (via {conn.gateway.host})", cfg, accept_new)
