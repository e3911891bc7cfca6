"""The lab's services: an sshd per host, the stand-in repository server, the registry, the sudo user.

- :func:`start_sshd`: Debian's sshd in the host's network and UTS
  namespaces, started through ``ip netns exec`` so its sessions see the
  host's /etc, with a clean environment;
- :func:`start_repo_server`: ``python3 -m http.server`` over STATE/repo only,
  bound to 198.18.0.1:8089 only;
- :func:`start_registry`: Debian's docker-registry on 198.18.0.2:5000, in the
  controller engine's namespace (see :data:`~.hosts.REGISTRY`);
- :func:`create_admin_user`: the machine-wide sudo test user ``labadmin``.

Every one is recorded by pid and found again by pid and command line.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import Optional

from tasks.runtime.templating import render

from ..common import LabError, live_pid, run, start_server, stop_pid, tcp_banner, wait_for, write
from .hosts import (
    ADMIN_MARKER,
    ADMIN_USER,
    CONTROLLER_IP,
    DAEMON_PATH,
    REGISTRY,
    REPO_PORT,
    SUDOERS_FILE,
    LabHost,
)

# --------------------------------------------------------------------------- sshd


def start_sshd(host: LabHost) -> int:
    """Start ``host``'s sshd in its network and UTS namespaces; return its pid."""
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    host.sshd_pidfile.unlink(missing_ok=True)
    # A clean environment: nothing of the caller's (DOCKER_HOST, proxies, ...) reaches sessions.
    run(["env", "-i", f"PATH={DAEMON_PATH}", "LANG=C.UTF-8",
         "nsenter", f"--uts={host.uts_path}", "--", "ip", "netns", "exec", host.netns,
         "/usr/sbin/sshd", "-f", host.sshd_config, "-E", host.sshd_log])
    wait_for(lambda: sshd_answers(host), 20, f"sshd of {host.name} on {host.ip}:22")
    return host.sshd_pid()


def sshd_answers(host: LabHost) -> bool:
    """Whether the host's sshd runs and greets on port 22."""
    return host.sshd_pid() is not None and tcp_banner(host.ip, 22).startswith("SSH-")


def stop_sshd(host: LabHost) -> None:
    """Stop the host's sshd by pid (its sessions are swept afterwards)."""
    stop_pid(host.sshd_pid(), f"-f {host.sshd_config}", timeout=10)


# --------------------------------------------------------------------------- repo server and registry


def start_repo_server(state: Path) -> int:
    """Serve STATE/repo (and nothing else of STATE) on 198.18.0.1:8089; return the pid."""
    return start_server(state, "http", [sys.executable, "-m", "http.server", REPO_PORT, "--bind", CONTROLLER_IP,
                                        "--directory", state / "repo"], f"{CONTROLLER_IP}:{REPO_PORT}",
                        state / "repo")


def start_registry(state: Path, controller: LabHost) -> int:
    """Run Debian's docker-registry on 198.18.0.2:5000 (the controller engine's namespace); return the pid."""
    config = state / "registry.yml"
    write(config, render("lab/registry.yml.j2", root=str(state / "registry"), addr=REGISTRY))
    return start_server(state, "registry", ["nsenter", f"--net={controller.netns_path}", "--",
                                            "docker-registry", "serve", config], REGISTRY, state)


def registry_pid(state: Path) -> Optional[int]:
    return live_pid(state / "registry.pid", str(state / "registry.yml"))


def repo_server_pid(state: Path) -> Optional[int]:
    return live_pid(state / "http.pid", f"--directory {state / 'repo'}")


def stop_servers(state: Path) -> None:
    """Stop the repo server and the registry by pid, and any gpg agent the repository signing left."""
    stop_pid(repo_server_pid(state), f"--directory {state / 'repo'}", timeout=5)
    stop_pid(registry_pid(state), str(state / "registry.yml"), timeout=5)
    run(["gpgconf", "--kill", "all"], env={"GNUPGHOME": str(state / "gnupg")}, check=False)


# --------------------------------------------------------------------------- the sudo test user


def create_admin_user(state: Path) -> bool:
    """Create the sudo test user with a fresh password in STATE; True if created now."""
    password = secrets.token_urlsafe(18)
    created = False
    if run(["getent", "passwd", ADMIN_USER], check=False).returncode != 0:
        run(["useradd", "--create-home", "--shell", "/bin/bash", "--comment", ADMIN_MARKER, ADMIN_USER])
        created = True
    elif admin_gecos() != ADMIN_MARKER:
        raise LabError(f"user {ADMIN_USER} exists and was not made by the lab; remove or rename it first")
    # On stdin, never on a command line (every process's argv is visible to all).
    run(["chpasswd"], input=f"{ADMIN_USER}:{password}\n")
    write(state / f"{ADMIN_USER}.password", password + "\n", mode=0o600)
    SUDOERS_FILE.parent.mkdir(mode=0o750, exist_ok=True)
    write(SUDOERS_FILE, render("lab/sudoers.j2", admin_user=ADMIN_USER,
                               password_file=str(state / f"{ADMIN_USER}.password")), mode=0o440)
    check = run(["visudo", "-c", "-q", "-f", SUDOERS_FILE], check=False)
    if check.returncode != 0:
        SUDOERS_FILE.unlink()
        raise LabError(f"rendered sudoers file is invalid: {check.stderr or check.stdout}")
    return created


def admin_gecos() -> Optional[str]:
    """The GECOS field of the sudo test user, or None when there is no such user."""
    proc = run(["getent", "passwd", ADMIN_USER], check=False)
    if proc.returncode != 0:
        return None
    return proc.stdout.strip().split(":")[4]


def admin_user_ok() -> bool:
    """Whether the lab's sudo test user and its sudoers file are there."""
    return admin_gecos() == ADMIN_MARKER and SUDOERS_FILE.exists()


def remove_admin_user() -> None:
    """Remove the sudoers file, and the user when the lab made it (its GECOS says so)."""
    SUDOERS_FILE.unlink(missing_ok=True)
    if admin_gecos() == ADMIN_MARKER:
        run(["userdel", "--remove", ADMIN_USER], check=False)
