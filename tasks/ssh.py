"""The one place SSH connections are made.

Fabric's ``Connection`` accepts any host key (it installs paramiko's
``AutoAddPolicy`` and never loads known_hosts: fabric#1804, #2071). xcatfab
keeps Fabric for what it does well — ssh_config resolution (HostName, Port,
User, IdentityFile, ProxyJump) and key handling — and fixes the rest before
the connection opens:

* known_hosts is read from the user's file, every ``UserKnownHostsFile``
  that ssh_config names, and the inventory's ``known_hosts`` (by xcatfab
  itself: see :func:`read_known_hosts`), and the server's key is checked
  against every entry for the host, hashed and wildcard names included;
* an unknown host key is refused, saying how to accept it, unless
  ``accept_new`` is set (OpenSSH's ``accept-new``: record the new key, but
  still refuse a changed one); a changed or ``@revoked`` key is always
  refused; ProxyJump gateways are checked the same way;
* every connection has a connect timeout and a keepalive, and gives up on a
  peer that stops answering (TCP_USER_TIMEOUT);
* for a non-root user, sudo is probed once: no password needed, or the
  given password works, or a clear error.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import socket
from dataclasses import dataclass, field
from typing import Any, Optional

from .inventory import HostConfig
from .remote import Remote, RemoteError
from .secret import Secret
from .templating import render

KEEPALIVE_SECONDS = 15

# paramiko logs a traceback through Python's last-resort handler when a peer
# drops during the banner; xcatfab reports such failures itself, in one line.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
#: Unanswered keepalives for this long end a connection (as ServerAliveCountMax 3 would).
DEAD_PEER_SECONDS = 4 * KEEPALIVE_SECONDS
USER_KNOWN_HOSTS = "~/.ssh/known_hosts"


@dataclass
class ConnectOptions:
    """How to connect, shared by every host of a run."""

    accept_new_host_keys: bool = False
    sudo_password: Optional[Secret] = None
    #: The Fabric Config of the `fab` run (carries -S ssh_config, -i, -t); None: defaults.
    fabric_config: Any = None
    extra_connect_kwargs: dict = field(default_factory=dict)


class ConnectError(RemoteError):
    """The host could not be connected to (step ``connect``)."""

    def __init__(self, host: str, message: str):
        super().__init__(host, "connect", message)


def _fingerprint(key) -> str:
    import base64
    import hashlib

    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _host_entry(hostname: str, port: int) -> str:
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
                raise ConnectError(self.name, f"host key {key.get_name()} {_fingerprint(key)} of {self.entry} "
                                              f"is REVOKED ({revoked.where}): refusing to connect")
            if any(_same_key(k.key, key) for k in ours):
                return
            if ours:
                raise ConnectError(self.name, _changed_message(self.entry, key, ours))
            if not self.accept_new:
                raise ConnectError(
                    self.name,
                    f"unknown host key {key.get_name()} {_fingerprint(key)} for {self.entry}: "
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
    return (f"host key for {entry} CHANGED (now {key.get_name()} {_fingerprint(key)}; "
            f"{first.where} has {first.key.get_name()} {_fingerprint(first.key)}): refusing to connect; "
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


def _guard(conn, name: str, cfg: HostConfig, options: "ConnectOptions") -> None:
    """Put host-key checking on ``conn`` and on every ProxyJump gateway before it.

    Fabric builds each gateway Connection with AutoAddPolicy too, so a jump
    host's key would otherwise go unchecked.
    """
    from fabric import Connection

    entry = _host_entry(conn.host, conn.port)
    try:
        known = read_known_hosts(known_hosts_files(cfg, conn.ssh_config))
    except OSError as exc:
        raise ConnectError(name, str(exc)) from None
    hash_names = str(conn.ssh_config.get("hashknownhosts", "no")).lower() == "yes"
    policy = _make_policy()(name, entry, known, record_file(cfg, conn.ssh_config),
                            options.accept_new_host_keys, hash_names)
    conn.client.set_missing_host_key_policy(policy)
    disabled = _disabled_host_key_algorithms(known.for_host(entry))
    if disabled:
        current = dict(conn.connect_kwargs.get("disabled_algorithms") or {})
        current["keys"] = sorted(set(current.get("keys", [])) | set(disabled))
        conn.connect_kwargs["disabled_algorithms"] = current
    if isinstance(conn.gateway, Connection):
        _guard(conn.gateway, f"{name} (via {conn.gateway.host})", cfg, options)


def connect(cfg: HostConfig, options: Optional[ConnectOptions] = None) -> Remote:
    """Open one SSH connection to ``cfg``'s host and return its :class:`Remote`.

    Raises :class:`ConnectError` (one line naming the host) on unreachable
    hosts, refused or changed host keys, failed authentication and sudo
    problems.
    """
    import paramiko
    from fabric import Config, Connection

    options = options or ConnectOptions()
    config = options.fabric_config if options.fabric_config is not None else Config()
    connect_kwargs = {"banner_timeout": cfg.connect_timeout, "auth_timeout": cfg.connect_timeout}
    if cfg.ssh_key:
        connect_kwargs["key_filename"] = [cfg.ssh_key]
    connect_kwargs.update(options.extra_connect_kwargs)
    kwargs = dict(host=cfg.connect_address, config=config, connect_timeout=cfg.connect_timeout,
                  connect_kwargs=connect_kwargs)
    if "port" in cfg.origin:
        kwargs["port"] = cfg.port
    conn = Connection(**kwargs)
    # ssh_config's User wins over our default (root), explicit settings over both.
    if "user" in cfg.origin:
        conn.user = cfg.user
    elif "user" not in conn.ssh_config:
        conn.user = "root"
    if "port" not in cfg.origin and "port" not in conn.ssh_config:
        conn.port = cfg.port

    _guard(conn, cfg.name, cfg, options)

    where = f"{conn.user}@{conn.host}:{conn.port}"
    try:
        try:
            conn.open()
        except BaseException:
            # A refused key or failed login leaves paramiko's transport thread and socket open.
            conn.client.close()
            raise
    except ConnectError:
        raise
    except paramiko.BadHostKeyException as exc:  # only if paramiko's own stores were filled
        raise ConnectError(cfg.name, f"host key for {conn.host} CHANGED (now {_fingerprint(exc.key)}): "
                                     f"refusing to connect") from None
    except paramiko.AuthenticationException as exc:
        raise ConnectError(cfg.name, f"authentication failed for {where}: {exc}") from None
    except (socket.timeout, TimeoutError):
        raise ConnectError(cfg.name, f"cannot reach {where}: timed out after {cfg.connect_timeout}s") from None
    except paramiko.ssh_exception.NoValidConnectionsError as exc:
        reasons = {e.strerror or str(e) for e in exc.errors.values()}
        raise ConnectError(cfg.name, f"cannot reach {where}: {', '.join(sorted(reasons))}") from None
    except (OSError, paramiko.SSHException, EOFError) as exc:
        if "no acceptable host key" in str(exc) and conn.connect_kwargs.get("disabled_algorithms"):
            # We asked for the key types known_hosts has for it; the host has none of them now.
            raise ConnectError(cfg.name, f"host key for {_host_entry(conn.host, conn.port)} CHANGED: the host "
                                         f"offers none of the key types known_hosts has for it; refusing to "
                                         f"connect") from None
        raise ConnectError(cfg.name, f"cannot reach {where}: {exc or type(exc).__name__}") from None
    transport = conn.transport
    transport.set_keepalive(KEEPALIVE_SECONDS)
    _give_up_on_dead_peers(transport.sock)
    remote = Remote(cfg.name, transport, user=conn.user, become=conn.user != "root",
                    sudo_password=options.sudo_password, connection=conn)
    if remote.become:
        try:
            _probe_sudo(remote)
        except BaseException:
            conn.close()  # a refused sudo must not leave the transport open for the rest of a rollout
            raise
    return remote


def _give_up_on_dead_peers(sock) -> None:
    """Drop the connection when keepalives go unanswered for DEAD_PEER_SECONDS.

    paramiko's keepalive only sends; with a host that vanished without a
    reset (powered off, cable pulled) the kernel would retransmit for about
    15 minutes before the run noticed. TCP_USER_TIMEOUT (Linux) ends it like
    OpenSSH's ServerAliveCountMax does. Not for a gateway channel (no socket).
    """
    if isinstance(sock, socket.socket) and hasattr(socket, "TCP_USER_TIMEOUT"):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, DEAD_PEER_SECONDS * 1000)
        except OSError:
            pass


def _probe_sudo(remote: Remote) -> None:
    """Find out whether sudo needs a password, and check the one we have."""
    probe = remote.run(render("host/sudo-probe.sh.j2"), sudo=False, step="sudo")
    if probe.ok:
        return  # NOPASSWD: sudo -n works
    if not remote.sudo_password:
        raise ConnectError(
            remote.name,
            f"user {remote.user} needs a sudo password: use --prompt-for-sudo-password "
            f"or set XCATFAB_SUDO_PASSWORD",
        )
    remote.sudo_needs_password = True
    check = remote.run("true", step="sudo")
    if not check.ok:
        raise ConnectError(remote.name, f"sudo failed for user {remote.user}: wrong sudo password?")
