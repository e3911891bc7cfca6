"""The one place SSH connections are made.

xcatfab keeps Fabric for what it does well — ssh_config resolution
(HostName, Port, User, IdentityFile, ProxyJump), ``-i``, ``-S`` and key
handling — and adds what a fleet of docker hosts needs before each
connection opens:

* host keys checked against known_hosts (:mod:`tasks.runtime.knownhosts`);
* a connect timeout that holds, from (highest first) ``--set`` or the
  inventory's ``connect_timeout``, Fabric's ``-t/--connect-timeout``,
  ssh_config's ``ConnectTimeout`` for the host, ``timeouts.connect`` in a
  Fabric config file, else 10 s; a stalled TCP or SSH handshake fails with
  "timed out after N s";
* a keepalive, and giving up on a peer that stops answering (TCP_USER_TIMEOUT);
* for a non-root user, sudo probed once: no password needed, or the given
  password works, or a clear error.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from .config import KEYS, HostConfig
from .errors import ConnectError
from .knownhosts import fingerprint, guard, host_entry
from .remote import Remote
from .secret import Secret
from .templating import render

KEEPALIVE_SECONDS = 15
#: Unanswered keepalives for this long end a connection (as ServerAliveCountMax 3 would).
DEAD_PEER_SECONDS = 4 * KEEPALIVE_SECONDS

# paramiko logs a traceback through Python's last-resort handler when a peer
# drops during the banner; xcatfab reports such failures itself, in one line.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


@dataclass
class ConnectOptions:
    """How to connect, shared by every host of a run."""

    accept_new_host_keys: bool = False
    sudo_password: Optional[Secret] = None
    #: The Fabric Config of the `fab` run (carries -S ssh_config, -i, -t); None: defaults.
    fabric_config: Any = None
    extra_connect_kwargs: dict = field(default_factory=dict)
    #: Seconds any one remote command may run (None: each host's command_timeout).
    command_timeout: Optional[float] = None


def connect_timeout(cfg: HostConfig, config, ssh_config) -> tuple[int, str]:
    """(seconds, where it came from), in the documented precedence (see the module docstring)."""
    if "connect_timeout" in cfg.origin:
        return cfg.connect_timeout, cfg.where("connect_timeout")
    flag = (config.get("connect_kwargs") or {}).get("timeout") if config is not None else None
    if flag:
        return int(flag), "-t/--connect-timeout"
    if ssh_config.get("connecttimeout"):
        return int(ssh_config["connecttimeout"]), "ssh_config ConnectTimeout"
    configured = (config.get("timeouts") or {}).get("connect") if config is not None else None
    if configured:
        return int(configured), "Fabric config timeouts.connect"
    return KEYS["connect_timeout"].default, "default"


def _connection(cfg: HostConfig, options: ConnectOptions):
    """A Fabric Connection for ``cfg`` (not yet open), with the user, port and timeouts settled."""
    from fabric import Config, Connection

    config = options.fabric_config if options.fabric_config is not None else Config()
    kwargs: dict = dict(host=cfg.connect_address, config=config)
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
    seconds, _source = connect_timeout(cfg, config, conn.ssh_config)
    conn.connect_timeout = seconds
    # Config's connect_kwargs (-i, --prompt-for-passphrase ...) plus our handshake limits.
    merged = dict(conn.connect_kwargs or {})
    merged.pop("timeout", None)  # Fabric passes connect_timeout itself
    merged.update(banner_timeout=seconds, auth_timeout=seconds, channel_timeout=seconds)
    if cfg.ssh_key:
        merged["key_filename"] = [cfg.ssh_key] + list(merged.get("key_filename") or [])
    merged.update(options.extra_connect_kwargs)
    conn.connect_kwargs = merged
    return conn


def connect(cfg: HostConfig, options: Optional[ConnectOptions] = None) -> Remote:
    """Open one SSH connection to ``cfg``'s host and return its :class:`Remote`.

    Raises :class:`ConnectError` (one line naming the host) on unreachable
    hosts, timeouts, refused or changed host keys, failed authentication and
    sudo problems.
    """
    options = options or ConnectOptions()
    conn = _connection(cfg, options)
    guard(conn, cfg.name, cfg, options.accept_new_host_keys)
    _open(conn, cfg)
    transport = conn.transport
    transport.set_keepalive(KEEPALIVE_SECONDS)
    _give_up_on_dead_peers(transport.sock)
    timeout = options.command_timeout or cfg.command_timeout
    remote = Remote(cfg.name, transport, user=conn.user, become=conn.user != "root",
                    sudo_password=options.sudo_password, connection=conn, timeout=timeout)
    if remote.become:
        try:
            _probe_sudo(remote)
        except BaseException:
            conn.close()  # a refused sudo must not leave the transport open for the rest of a rollout
            raise
    return remote


def _open(conn, cfg: HostConfig) -> None:
    """``conn.open()``, every failure turned into one :class:`ConnectError` line."""
    import paramiko

    where = f"{conn.user}@{conn.host}:{conn.port}"
    started = time.monotonic()
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
        raise ConnectError(cfg.name, f"host key for {conn.host} CHANGED (now {fingerprint(exc.key)}): "
                                     "refusing to connect") from None
    except paramiko.AuthenticationException as exc:
        raise ConnectError(cfg.name, f"authentication failed for {where}: {exc}") from None
    except (OSError, paramiko.SSHException, EOFError) as exc:
        raise ConnectError(cfg.name, _failure(conn, exc, where, time.monotonic() - started)) from None


def _failure(conn, exc: BaseException, where: str, elapsed: float) -> str:
    """Why a connection could not be opened, in one line."""
    import paramiko

    if isinstance(exc, (socket.timeout, TimeoutError)) or elapsed >= conn.connect_timeout - 0.5:
        return f"cannot reach {where}: timed out after {conn.connect_timeout}s"
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        reasons = {e.strerror or str(e) for e in exc.errors.values()}
        return f"cannot reach {where}: {', '.join(sorted(reasons))}"
    if "no acceptable host key" in str(exc) and conn.connect_kwargs.get("disabled_algorithms"):
        # We asked for the key types known_hosts has for it; the host has none of them now.
        return (f"host key for {host_entry(conn.host, conn.port)} CHANGED: the host offers none of the "
                "key types known_hosts has for it; refusing to connect")
    return f"cannot reach {where}: {str(exc) or type(exc).__name__}"


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
        raise ConnectError(remote.name, f"user {remote.user} needs a sudo password: use "
                                        "--prompt-for-sudo-password or set XCATFAB_SUDO_PASSWORD")
    remote.sudo_needs_password = True
    check = remote.run("true", step="sudo")
    if not check.ok:
        raise ConnectError(remote.name, f"sudo failed for user {remote.user}: wrong sudo password?")
