"""The relay programs' two ends on the controller: a leg per host.

A leg runs templates/host/iso-receive.sh.j2 on one host and talks to it in
lines (``OFFSET``, ``CONFIG``, ``LISTEN``, ``READY``, ``END``, ``DONE`` ...),
carrying the ISO's bytes when the host is the head of a chain. Two kinds:
the OpenSSH client (the fast path: the same host, port, user, keys and
known_hosts as xcatfab's own connection, strict host key checking, AES-GCM
first when the CPU has AES instructions, file pages spliced into its pipe),
and a channel of a paramiko transport.
"""

from __future__ import annotations

import errno
import fcntl
import os
import queue
import shutil
import subprocess
import threading
import time
from typing import Optional

from ...runtime.knownhosts import known_hosts_files
from .local import CHUNK, MIB

#: Cipher preference for the OpenSSH data path when the CPU has AES instructions
#: (AES-GCM is about twice as fast as OpenSSH's default chacha20-poly1305 there).
AES_FIRST_CIPHERS = ("aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,"
                     "aes128-ctr,aes192-ctr,aes256-ctr")
#: Seconds to wait for a relay program's first lines (it answers at once).
HANDSHAKE_SECONDS = 60


class LegError(Exception):
    """A relay program ended without the answer expected from it."""


class Leg:
    """One relay program on one host: lines to its stdin, lines (and progress) from its stdout."""

    def __init__(self, host: str, on_progress=None):
        self.host = host
        self.on_progress = on_progress
        self.lines: queue.Queue = queue.Queue()
        self.notes: list = []
        self.err = bytearray()
        self.threads: list = []

    def _read_lines(self, stream) -> None:
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").strip()
                if line.startswith("P "):
                    if self.on_progress is not None:
                        try:
                            self.on_progress(int(line[2:]))
                        except ValueError:
                            pass
                elif line.startswith("DOWNLOST "):
                    self.notes.append(line[len("DOWNLOST "):])
                elif line:
                    self.lines.put(line)
        except (OSError, ValueError):
            pass
        finally:
            self.lines.put(None)

    def _read_err(self, stream) -> None:
        try:
            for block in iter(lambda: stream.read(4096), b""):
                self.err += block[: max(0, 65536 - len(self.err))]
        except (OSError, ValueError):
            pass

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self.threads.append(thread)

    def expect(self, *words: str, timeout: Optional[float] = None) -> list:
        """The next answer line, split; raises :class:`LegError` on FAIL, a wrong word or the end."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise LegError(f"no answer within {timeout:.0f}s") from None
        if line is None:
            self.lines.put(None)  # stay at the end for later callers
            raise LegError(self.stderr_tail() or f"the relay program ended (exit {self.exit_code()})")
        fields = line.split()
        if fields[0] in words:
            return fields
        if fields[0] == "FAIL":
            raise LegError(line[len("FAIL "):])
        raise LegError(line)

    def stderr_tail(self) -> str:
        text = [line for line in self.err.decode("utf-8", "replace").splitlines() if line.strip()]
        return " | ".join(text[-2:])

    # implemented by subclasses
    def send(self, data) -> None:
        raise NotImplementedError

    def send_from(self, fd: int, offset: int, data) -> None:
        """Send ``data``, which is the file ``fd``'s bytes at ``offset`` (a leg may take them from the file)."""
        self.send(data)

    def send_line(self, text: str) -> None:
        self.send((text + "\n").encode())

    def close_input(self) -> None:
        raise NotImplementedError

    def exit_code(self) -> Optional[int]:
        raise NotImplementedError

    def finish(self, timeout: float = 30) -> Optional[int]:
        raise NotImplementedError


class ParamikoLeg(Leg):
    """A relay program on a channel of xcatfab's own SSH transport."""

    #: A large receive window and packets: progress lines and answers never stall the channel.
    WINDOW = 64 * MIB
    PACKET = 32768

    def __init__(self, remote, script: str, on_progress=None, owned: bool = False):
        super().__init__(remote.name, on_progress)
        self.remote = remote
        self.owned = owned  # a connection of its own, closed with the leg
        with remote.lock:
            remote.commands += 1
        self.chan = remote.transport.open_session(window_size=self.WINDOW, max_packet_size=self.PACKET,
                                                  timeout=30)
        self.chan.exec_command(remote.command_line(script))
        if remote.become and remote.sudo_needs_password:
            self.chan.sendall((remote.sudo_password.reveal() + "\n").encode())
        self._spawn(self._read_lines, self.chan.makefile("rb"))
        self._spawn(self._read_err, self.chan.makefile_stderr("rb"))

    def send(self, data) -> None:
        try:
            self.chan.sendall(data)
        except OSError as exc:
            raise LegError(f"the host stopped taking data: {exc}") from None

    def close_input(self) -> None:
        try:
            self.chan.shutdown_write()
        except OSError:
            pass

    def exit_code(self) -> Optional[int]:
        return self.chan.recv_exit_status() if self.chan.exit_status_ready() else None

    def finish(self, timeout: float = 30) -> Optional[int]:
        deadline = time.monotonic() + timeout
        while not self.chan.exit_status_ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        code = self.exit_code()
        self.chan.close()
        if self.owned:
            self.remote.close()
        return code


class OpenSSHLeg(Leg):
    """A relay program behind the OpenSSH client: the fast path for the bytes of an ISO."""

    def __init__(self, remote, argv: list, script: str, on_progress=None):
        super().__init__(remote.name, on_progress)
        with remote.lock:
            remote.commands += 1
        self.proc = subprocess.Popen(argv + [remote.command_line(script)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        self.fd = self.proc.stdin.fileno()
        self.splice = hasattr(os, "splice")  # Linux, Python 3.10+
        try:
            # One MiB in flight to ssh instead of the default 64 KiB: fewer wake-ups per MiB on both sides.
            fcntl.fcntl(self.fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), CHUNK)
        except OSError:
            pass
        if remote.become and remote.sudo_needs_password:
            self.send((remote.sudo_password.reveal() + "\n").encode())
        self._spawn(self._read_lines, self.proc.stdout)
        self._spawn(self._read_err, self.proc.stderr)

    def send(self, data) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.EBADF):
                raise LegError("the host stopped taking data") from None
            raise

    def send_from(self, fd: int, offset: int, data) -> None:
        """Splice the file's pages into ssh's pipe (no copy through this process), else write them."""
        if not self.splice:
            self.send(data)
            return
        done = 0
        try:
            while done < len(data):
                done += os.splice(fd, self.fd, len(data) - done, offset_src=offset + done)
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.EBADF):
                raise LegError("the host stopped taking data") from None
            if exc.errno not in (errno.EINVAL, errno.ENOSYS):
                raise
            self.splice = False  # a file system that cannot splice: plain writes from here on
            self.send(data[done:])

    def close_input(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def exit_code(self) -> Optional[int]:
        return self.proc.poll()

    def finish(self, timeout: float = 30) -> Optional[int]:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        for thread in self.threads:
            thread.join(5)
        return code


def cpu_has_aes() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return "aes" in line.split(":", 1)[1].split()
    except OSError:
        pass
    return False


def openssh_argv(remote, cfg) -> Optional[list]:
    """The ``ssh`` command line that reaches the host exactly as xcatfab's connection does, or None.

    Same address, port and user as the open Fabric connection, its key files
    (IdentitiesOnly) or, like paramiko, the agent and default keys; the same
    known_hosts files (tasks/runtime/knownhosts.py) with strict checking and no global file.
    None when ``ssh`` is missing or the connection goes through a gateway.
    """
    ssh = shutil.which("ssh")
    conn = getattr(remote, "connection", None)
    if not ssh or conn is None or getattr(conn, "gateway", None):
        return None
    files = known_hosts_files(cfg, conn.ssh_config)
    keys = (conn.connect_kwargs or {}).get("key_filename") or conn.ssh_config.get("identityfile") or []
    keys = [keys] if isinstance(keys, str) else list(keys)
    argv = [ssh, "-F", "/dev/null", "-T", "-x", "-a",
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "CheckHostIP=no",
            "-o", "UserKnownHostsFile=" + " ".join(f'"{path}"' for path in files),
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "UpdateHostKeys=no",
            "-o", f"ConnectTimeout={getattr(conn, 'connect_timeout', None) or cfg.connect_timeout}",
            "-o", "ServerAliveInterval=15",
            "-o", "Compression=no", "-o", "LogLevel=ERROR", "-o", "ControlPath=none",
            "-p", str(conn.port), "-l", conn.user]
    if cpu_has_aes():
        argv += ["-o", "Ciphers=" + AES_FIRST_CIPHERS]
    for key in keys:
        argv += ["-i", os.path.expanduser(key)]
    if keys:
        argv += ["-o", "IdentitiesOnly=yes"]
    return argv + ["--", conn.host]
