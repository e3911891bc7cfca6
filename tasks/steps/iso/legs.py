"""The relay programs' ends on the controller: a leg per host, and the controller's data sender.

A leg runs templates/host/iso-receive.sh.j2 on one host and talks to it in
lines (``OFFSET``, ``CONFIG``, ``LISTEN``, ``READY``, ``END``, ``DONE`` ...).
Its bytes travel one of two ways (the host's ``iso_transport``):

* ``tcp``: the leg is a channel of xcatfab's own SSH connection carrying
  only those lines (the one-shot token, the sums); the controller's
  :class:`TcpSender` connects to the port the host's relay program listens
  on (its connect address only) and sends the file with ``sendfile`` (no
  copy through this process, no cipher);
* ``ssh``: the bytes follow the lines on the leg's stdin: the OpenSSH client
  (the same host, port, user, keys and known_hosts as xcatfab's own
  connection, strict host key checking, AES-GCM first when the CPU has AES
  instructions, file pages spliced into its pipe), else a channel of a
  paramiko transport.

Every sender gives up on a host that takes no data for a while (a stalled
leg fails that host with one line; :func:`stall_seconds`), and every wait
for an answer has a limit.
"""

from __future__ import annotations

import errno
import fcntl
import os
import queue
import select
import shutil
import socket
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
#: Seconds a host's relay program waits on a socket that moves no byte (its upstream, its next host).
STALL_SECONDS = 30
#: Bytes of the socket's send buffer to a host (a deep queue keeps the link busy between sendfile calls).
SOCKET_BUFFER = 4 * MIB


def stall_seconds() -> int:
    """The hosts' stall limit (``$XCATFAB_ISO_STALL_SECONDS`` overrides it, for tests)."""
    try:
        return max(1, int(os.environ.get("XCATFAB_ISO_STALL_SECONDS", STALL_SECONDS)))
    except ValueError:
        return STALL_SECONDS


def sender_stall_seconds() -> int:
    """How long the controller waits on a host that takes no data: longer than the hosts' own limit,
    since a host that waits on its next host (up to that limit) stops reading meanwhile."""
    return 2 * stall_seconds() + 5


class LegError(Exception):
    """A relay program ended without the answer expected from it, or a sender could not go on."""


class Leg:
    """One relay program on one host: lines to its stdin, lines (and progress) from its stdout."""

    #: The sender can take the file's bytes straight from the page cache (no read here).
    zero_copy = False

    def __init__(self, host: str, on_progress=None):
        self.host = host
        self.on_progress = on_progress
        self.lines: queue.Queue = queue.Queue()
        self.notes: list = []
        self.err = bytearray()
        self.threads: list = []
        self.kept: Optional[int] = None  # bytes of the .part the host kept (KEPT), when it said so
        self.position = 0  # the host's last progress report
        self.last_heard = time.monotonic()

    def _line(self, line: str) -> None:
        self.last_heard = time.monotonic()
        if line.startswith("P "):
            try:
                self.position = int(line[2:])
            except ValueError:
                return
            if self.on_progress is not None:
                self.on_progress(self.position)
        elif line.startswith("DOWNLOST "):
            self.notes.append(line[len("DOWNLOST "):])
        elif line.startswith("KEPT "):
            try:
                self.kept = int(line[len("KEPT "):])
            except ValueError:
                pass
        elif line:
            self.lines.put(line)

    def _read_lines(self, read) -> None:
        """Split what ``read()`` returns (bytes; b"" at the end; None: nothing yet) into lines."""
        pending = b""
        try:
            while True:
                chunk = read()
                if chunk is None:
                    continue
                if not chunk:
                    break
                *whole, pending = (pending + chunk).split(b"\n")
                for raw in whole:
                    self._line(raw.decode("utf-8", "replace").strip())
        except (OSError, ValueError, EOFError):
            pass
        except Exception:  # noqa: BLE001 - a reader thread must never print a traceback
            pass
        finally:
            if pending.strip():
                self._line(pending.decode("utf-8", "replace").strip())
            self.lines.put(None)

    def _read_err(self, read) -> None:
        try:
            while True:
                block = read()
                if block is None:
                    continue
                if not block:
                    break
                self.err += block[: max(0, 65536 - len(self.err))]
        except Exception:  # noqa: BLE001 - see _read_lines
            pass

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self.threads.append(thread)

    def expect(self, *words: str, timeout: Optional[float] = None, idle: Optional[float] = None) -> list:
        """The next answer line, split; raises :class:`LegError` on FAIL, a wrong word, the end, after
        ``timeout`` seconds, or once the host has said nothing (not even progress) for ``idle`` seconds."""
        line = self._next_line(timeout, idle)
        if line is None:
            self.lines.put(None)  # stay at the end for later callers
            raise LegError(self.ended())
        fields = line.split()
        if fields[0] in words:
            return fields
        if fields[0] == "FAIL":
            raise LegError(line[len("FAIL "):])
        raise LegError(line)

    def _next_line(self, timeout: Optional[float], idle: Optional[float]) -> Optional[str]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = None if idle is None else 1.0
            if deadline is not None:
                wait = max(0.0, min(wait if wait is not None else timeout, deadline - time.monotonic()))
            try:
                return self.lines.get(timeout=wait)
            except queue.Empty:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    raise LegError(f"no answer within {timeout:.0f}s") from None
                if idle is not None and now - self.last_heard >= idle:
                    raise LegError(f"the host reported no progress for {idle:.0f}s") from None

    def ended(self) -> str:
        """Why the relay program's output ended without an answer."""
        return self.stderr_tail() or f"the relay program ended (exit {self.exit_code()})"

    def stderr_tail(self) -> str:
        text = [line for line in self.err.decode("utf-8", "replace").splitlines() if line.strip()]
        return " | ".join(text[-2:])

    # implemented by subclasses
    def send(self, data) -> None:
        raise NotImplementedError

    def send_range(self, fd: int, offset: int, count: int, data=None) -> None:
        """Send the file ``fd``'s ``count`` bytes at ``offset``; ``data``, when given, holds them already."""
        self.send(data if data is not None else os.pread(fd, count, offset))

    def send_line(self, text: str) -> None:
        self.send((text + "\n").encode())

    def close_input(self) -> None:
        raise NotImplementedError

    def exit_code(self) -> Optional[int]:
        raise NotImplementedError

    def finish(self, timeout: float = 30) -> Optional[int]:
        raise NotImplementedError


class ParamikoLeg(Leg):
    """A relay program on a channel of xcatfab's own SSH transport (or of a second one, ``owned``)."""

    #: A large receive window and packets: progress lines and answers never stall the channel.
    WINDOW = 64 * MIB
    PACKET = 32768

    def __init__(self, remote, script: str, on_progress=None, owned: bool = False):
        super().__init__(remote.name, on_progress)
        self.remote = remote
        self.owned = owned  # a connection of its own, closed with the leg
        with remote.lock:
            remote.commands += 1
        try:
            self.chan = remote.transport.open_session(window_size=self.WINDOW, max_packet_size=self.PACKET,
                                                      timeout=30)
            self.chan.exec_command(remote.command_line(script))
        except Exception as exc:  # noqa: BLE001 - paramiko's SSHException, EOFError, socket errors
            raise LegError(self._lost(exc)) from None
        # A send that waits this long for the host's window fails: the host took no data.
        self.chan.settimeout(sender_stall_seconds())
        if remote.become and remote.sudo_needs_password:
            self.send((remote.sudo_password.reveal() + "\n").encode())
        self._spawn(self._read_lines, self._reader(self.chan.recv))
        self._spawn(self._read_err, self._reader(self.chan.recv_stderr))

    @staticmethod
    def _reader(recv):
        def read():
            try:
                return recv(65536)
            except socket.timeout:
                return None  # quiet for a while: go on waiting (the overall limits are the caller's)
        return read

    def _lost(self, exc: BaseException) -> str:
        if not self.remote.transport.is_active():
            return "the SSH connection to the host was lost"
        return f"cannot start the relay program: {str(exc) or type(exc).__name__}"

    def ended(self) -> str:
        if not self.remote.transport.is_active():
            return "the SSH connection to the host was lost"
        return super().ended()

    def send(self, data) -> None:
        try:
            self.chan.sendall(data)
        except socket.timeout:
            raise LegError(f"the host took no data for {sender_stall_seconds()}s") from None
        except OSError as exc:
            raise LegError(f"the host stopped taking data: {exc}") from None

    def close_input(self) -> None:
        try:
            self.chan.shutdown_write()
        except (OSError, EOFError):
            pass

    def exit_code(self) -> Optional[int]:
        return self.chan.recv_exit_status() if self.chan.exit_status_ready() else None

    def finish(self, timeout: float = 30) -> Optional[int]:
        deadline = time.monotonic() + timeout
        while not self.chan.exit_status_ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        code = self.exit_code()
        self.chan.close()
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self.owned:
            self.remote.close()
        return code


class OpenSSHLeg(Leg):
    """A relay program behind the OpenSSH client: the ``ssh`` transport's fast path for the bytes.

    It runs in a session of its own, so Ctrl-C reaches xcatfab (which stops
    the transfer and reports the part kept) rather than killing it first."""

    def __init__(self, remote, argv: list, script: str, on_progress=None):
        super().__init__(remote.name, on_progress)
        with remote.lock:
            remote.commands += 1
        self.proc = subprocess.Popen(argv + [remote.command_line(script)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
                                     start_new_session=True)
        self.fd = self.proc.stdin.fileno()
        self.splice = hasattr(os, "splice")  # Linux, Python 3.10+
        self.zero_copy = self.splice
        try:
            # One MiB in flight to ssh instead of the default 64 KiB: fewer wake-ups per MiB on both sides.
            fcntl.fcntl(self.fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), CHUNK)
        except OSError:
            pass
        os.set_blocking(self.fd, False)  # every write waits in select(), with the stall limit
        if remote.become and remote.sudo_needs_password:
            self.send((remote.sudo_password.reveal() + "\n").encode())
        self._spawn(self._read_lines, lambda: self.proc.stdout.read(65536))
        self._spawn(self._read_err, lambda: self.proc.stderr.read(4096))

    def _writable(self) -> None:
        try:
            ready = select.select([], [self.fd], [], sender_stall_seconds())[1]
        except (OSError, ValueError):
            raise LegError("the host stopped taking data") from None
        if not ready:
            raise LegError(f"the host took no data for {sender_stall_seconds()}s")

    def send(self, data) -> None:
        view = memoryview(data)
        try:
            while view:
                self._writable()
                try:
                    view = view[os.write(self.fd, view):]
                except BlockingIOError:
                    continue
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.EBADF):
                raise LegError("the host stopped taking data") from None
            raise

    def send_range(self, fd: int, offset: int, count: int, data=None) -> None:
        """Splice the file's pages into ssh's pipe (no copy through this process), else write them."""
        if not self.splice:
            super().send_range(fd, offset, count, data)
            return
        done = 0
        try:
            while done < count:
                self._writable()
                try:
                    done += os.splice(fd, self.fd, count - done, offset_src=offset + done)
                except BlockingIOError:
                    continue
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.EBADF):
                raise LegError("the host stopped taking data") from None
            if exc.errno not in (errno.EINVAL, errno.ENOSYS):
                raise
            self.splice = self.zero_copy = False  # a file system that cannot splice: plain writes from here on
            super().send_range(fd, offset + done, count - done, None if data is None else data[done:])

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


class TcpSender:
    """The controller's end of the ``tcp`` transport: one connection to a host's relay program, token first.

    The file's bytes go with ``sendfile`` (straight from the page cache, no
    cipher); a host that takes nothing for the stall limit fails it."""

    zero_copy = True

    def __init__(self, address: str, port: int, token: str, connect_timeout: float):
        self.where = f"{address}:{port}"
        self.stall = sender_stall_seconds()
        try:
            self.sock = socket.create_connection((address, port), timeout=connect_timeout)
        except OSError as exc:
            raise LegError(f"cannot connect to {self.where}: {_why(exc)}") from None
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        except OSError:
            pass
        self.sock.setblocking(False)
        self.send((token + "\n").encode())

    def _writable(self) -> None:
        try:
            ready = select.select([], [self.sock], [], self.stall)[1]
        except (OSError, ValueError):
            raise LegError("the connection to the host was closed") from None
        if not ready:
            raise LegError(f"the host took no data for {self.stall}s")

    def send(self, data) -> None:
        view = memoryview(data)
        while view:
            self._writable()
            try:
                view = view[self.sock.send(view):]
            except BlockingIOError:
                continue
            except OSError as exc:
                raise LegError(f"the host stopped taking data: {_why(exc)}") from None

    def send_range(self, fd: int, offset: int, count: int, data=None) -> None:
        done = 0
        while done < count:
            self._writable()
            try:
                sent = os.sendfile(self.sock.fileno(), fd, offset + done, count - done)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise LegError(f"the host stopped taking data: {_why(exc)}") from None
            if sent == 0:
                raise LegError("the local file ended early")
            done += sent

    def close(self) -> None:
        """End the stream (the host sees its end) and close."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.sock.close()


def _why(exc: OSError) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    return exc.strerror or str(exc) or type(exc).__name__


def peer_address(remote) -> Optional[str]:
    """The address xcatfab's SSH connection reached the host at (None through a gateway: no TCP path)."""
    conn = getattr(remote, "connection", None)
    if conn is not None and getattr(conn, "gateway", None):
        return None
    sock = getattr(getattr(remote, "transport", None), "sock", None)
    if not isinstance(sock, socket.socket):
        return None
    try:
        return sock.getpeername()[0]
    except OSError:
        return None


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
