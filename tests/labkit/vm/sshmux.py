"""One OpenSSH connection per VM and user for the lab's checks (OpenSSH's ControlMaster).

A new SSH connection costs a guest under TCG about 1.5 s of its CPU (key
exchange and authentication); a session over a live master costs about 0.15 s.
The tier's independent checks make hundreds of them, many while `fab` runs on
the same guest, so :meth:`VmLab.ssh` shares one master connection per VM and
user. It is still plain OpenSSH with the lab's ssh_config: the master checked
the VM's host key against the lab's known_hosts when it connected. A test that
checks the host key itself makes its own connection, without these options.

A master lives at most as long as its VM's boot: :meth:`VmLab.disconnect` ends
it whenever the VM loses power, reboots or boots (a master on a VM killed by
SIGKILL would hang every session sent to it) and after a `fab` run that failed
(it may have cut the VM off: a rollback, a firewall), and ``vmlab.down`` ends
them all. Keepalives end a master whose VM stopped answering within about 15 s;
``ControlPersist`` ends an idle one.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

#: An idle master exits after this many seconds.
PERSIST_SECONDS = 300


def _dir(state: Path) -> Path:
    return state / "mux"


def options(state: Path, name: str, user: str) -> list[str]:
    """ssh options that send a session over the master of ``user``@``name`` (made by the first one)."""
    sockets = _dir(state)
    sockets.mkdir(mode=0o700, exist_ok=True)
    return ["-o", "ControlMaster=auto", "-o", f"ControlPath={sockets / f'{name}-{user}'}",
            "-o", f"ControlPersist={PERSIST_SECONDS}", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]


def _exit(socket: Path) -> None:
    """End the master listening on ``socket`` (``ssh -O exit``); its sessions end with it."""
    subprocess.run(["ssh", "-o", f"ControlPath={socket}", "-O", "exit", "master"],
                   capture_output=True, timeout=10, check=False)
    socket.unlink(missing_ok=True)


def close(state: Path, name: str) -> None:
    """End every master of ``name``."""
    sockets = _dir(state)
    if sockets.is_dir():
        for socket in sorted(sockets.glob(f"{name}-*")):
            _exit(socket)


def close_all(state: Path) -> None:
    """End every master of the lab (``vmlab.down``)."""
    sockets = _dir(state)
    if sockets.is_dir():
        for socket in sorted(sockets.iterdir()):
            _exit(socket)
