"""The one place SSH connections are made.

Fabric's ``Connection`` accepts any host key (it installs paramiko's
``AutoAddPolicy`` and never loads known_hosts: fabric#1804, #2071). xcatfab
keeps Fabric for what it does well — ssh_config resolution (HostName, Port,
User, IdentityFile, ProxyJump) and key handling — and fixes the rest before
the connection opens:

* known_hosts is loaded from the user's file, every ``UserKnownHostsFile``
  that ssh_config names, and the inventory's ``known_hosts``;
* an unknown host key is refused, saying how to accept it, unless
  ``accept_new`` is set (OpenSSH's ``accept-new``: record the new key, but
  still refuse a changed one); a changed key is always refused;
* every connection has a connect timeout and a keepalive;
* for a non-root user, sudo is probed once: no password needed, or the
  given password works, or a clear error.
"""

from __future__ import annotations

import fcntl
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Optional

from .inventory import HostConfig
from .remote import Remote, RemoteError
from .secret import Secret
from .templating import render

KEEPALIVE_SECONDS = 15
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
    return hostname if port == 22 else f"[{hostname}]:{port}"


def _make_policies():
    """Host-key policies, built on first use so paramiko loads lazily."""
    import paramiko

    class RefuseUnknown(paramiko.MissingHostKeyPolicy):
        """Refuse a host whose key no known_hosts file holds."""

        def __init__(self, name: str, port: int):
            self.name, self.port = name, port

        def missing_host_key(self, client, hostname, key):
            entry = _host_entry(hostname, self.port)
            raise ConnectError(
                self.name,
                f"unknown host key {key.get_name()} {_fingerprint(key)} for {entry}: "
                f"verify it, then rerun with --accept-new-host-keys "
                f"(or add it with: ssh-keyscan -p {self.port} {hostname} >> ~/.ssh/known_hosts)",
            )

    class AcceptNew(paramiko.MissingHostKeyPolicy):
        """Record an unknown key in ``path`` (locked append), like accept-new."""

        def __init__(self, name: str, port: int, path: str):
            self.name, self.port, self.path = name, port, path

        def missing_host_key(self, client, hostname, key):
            entry = _host_entry(hostname, self.port)
            os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
            with open(self.path, "a", encoding="ascii") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                fh.write(f"{entry} {key.get_name()} {key.get_base64()}\n")
            client.get_host_keys().add(entry, key.get_name(), key)

    return RefuseUnknown, AcceptNew


def known_hosts_files(cfg: HostConfig, ssh_config) -> list[str]:
    """known_hosts files to trust: the user's, ssh_config's and the inventory's."""
    paths = [os.path.expanduser(USER_KNOWN_HOSTS)]
    for value in ssh_config.get("userknownhostsfile", "").split():
        paths.append(os.path.expanduser(value))
    if cfg.known_hosts:
        paths.append(cfg.known_hosts)
    seen, result = set(), []
    for path in paths:
        if path not in seen:
            seen.add(path)
            result.append(path)
    return result


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

    files = known_hosts_files(cfg, conn.ssh_config)
    client = conn.client
    for path in files:
        if os.path.exists(path):
            try:
                client.load_system_host_keys(path)
            except (OSError, paramiko.SSHException) as exc:
                raise ConnectError(cfg.name, f"cannot read known_hosts {path}: {exc}") from None
    refuse, accept_new = _make_policies()
    if options.accept_new_host_keys:
        record_in = cfg.known_hosts or (files[1] if len(files) > 1 else files[0])
        client.set_missing_host_key_policy(accept_new(cfg.name, conn.port, record_in))
    else:
        client.set_missing_host_key_policy(refuse(cfg.name, conn.port))

    where = f"{conn.user}@{conn.host}:{conn.port}"
    try:
        conn.open()
    except ConnectError:
        raise
    except paramiko.BadHostKeyException as exc:
        raise ConnectError(
            cfg.name,
            f"host key for {conn.host} CHANGED (now {_fingerprint(exc.key)}): refusing to connect; "
            f"if the host was reinstalled, remove the old key (ssh-keygen -R {conn.host}) and verify the new one",
        ) from None
    except paramiko.AuthenticationException as exc:
        raise ConnectError(cfg.name, f"authentication failed for {where}: {exc}") from None
    except (socket.timeout, TimeoutError):
        raise ConnectError(cfg.name, f"cannot reach {where}: timed out after {cfg.connect_timeout}s") from None
    except paramiko.ssh_exception.NoValidConnectionsError as exc:
        reasons = {e.strerror or str(e) for e in exc.errors.values()}
        raise ConnectError(cfg.name, f"cannot reach {where}: {', '.join(sorted(reasons))}") from None
    except (OSError, paramiko.SSHException, EOFError) as exc:
        raise ConnectError(cfg.name, f"cannot reach {where}: {exc or type(exc).__name__}") from None
    transport = conn.transport
    transport.set_keepalive(KEEPALIVE_SECONDS)
    remote = Remote(cfg.name, transport, user=conn.user, become=conn.user != "root",
                    sudo_password=options.sudo_password, connection=conn)
    if remote.become:
        _probe_sudo(remote)
    return remote


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
