"""The one place remote commands run.

A :class:`Remote` wraps one open SSH transport to one docker host. Every
command xcatfab runs there goes through :meth:`Remote.run`: a shell script
passed to ``sh -c`` (through ``sudo`` when the login user is not root), with
optional data on stdin. Scripts never contain secrets; secrets travel on
stdin only (the sudo password as its first line, xCAT stanzas after it), so
nothing secret shows up in ``ps`` on the host or in a log line here.

Commands are counted per host, so benchmarks and tests can check the cost of
a converged run.
"""

from __future__ import annotations

import logging
import select
import shlex
import threading
import time
from dataclasses import dataclass
from typing import BinaryIO, Callable, Optional, Union

from .errors import RemoteError
from .secret import Secret, mask_in
from .templating import render

log = logging.getLogger("xcatfab.remote")

#: What ``stdin=`` takes: bytes, text, a binary file object (streamed), or None.
Data = Union[bytes, str, None, BinaryIO]


@dataclass
class Result:
    """What one remote command returned."""

    rc: int
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def tail(self, lines: int = 3) -> str:
        """The last lines of stderr (else stdout), for one-line error messages."""
        text = (self.err or self.out).strip().splitlines()
        return " | ".join(text[-lines:]) if text else f"exit status {self.rc}"


class Remote:
    """Run commands on one host over one SSH transport.

    ``become`` adds sudo: ``sudo -n`` when the user needs no password,
    otherwise ``sudo -S -k -p ''`` with the password as stdin's first line
    (``-k`` makes sudo always read it, so it never leaks into the command's
    own stdin from a cached-credentials run).
    """

    def __init__(self, name: str, transport, *, user: str = "root", become: bool = False,
                 sudo_password: Optional[Secret] = None, connection=None, timeout: Optional[float] = None):
        self.name = name
        self.transport = transport
        self.user = user
        self.become = become
        self.sudo_password = sudo_password
        self.sudo_needs_password = False
        self.connection = connection  # the fabric Connection, kept open with us
        self.commands = 0
        #: Seconds any one command may run when the caller gives no limit of its own.
        self.timeout = timeout
        self.lock = threading.Lock()

    # ------------------------------------------------------------ commands
    def command_line(self, script: str, sudo: bool = True) -> str:
        """The exact command line the host sees (no secret ever in it)."""
        line = "sh -c " + shlex.quote(script)
        if sudo and self.become:
            if self.sudo_needs_password:
                return "sudo -S -k -p '' -- " + line
            return "sudo -n -- " + line
        return line

    def run(self, script: str, *, stdin: Data = None, sudo: bool = True, check: bool = False,
            step: str = "run", timeout: Optional[float] = None,
            on_line: Optional[Callable[[str], None]] = None) -> Result:
        """Run ``script`` with ``sh -c`` and return its :class:`Result`.

        ``stdin`` is sent, then closed. ``on_line`` receives stdout lines as
        they arrive (live output). A command still running after ``timeout``
        seconds (default: the host's ``command_timeout``) is abandoned and
        raises :class:`RemoteError` ("timed out after N s"), as does a lost
        connection. With ``check``, a non-zero exit raises :class:`RemoteError`
        naming ``step``.
        """
        stream = stdin if hasattr(stdin, "read") else None
        data = self._stdin_bytes(None if stream else stdin, sudo)
        limit = timeout or self.timeout
        with self.lock:
            self.commands += 1
        started = time.monotonic()
        chan = self.transport.open_session(timeout=30)
        try:
            chan.exec_command(self.command_line(script, sudo))
            writer = self._send(chan, data, stream)
            try:
                out, err = _collect(chan, limit, on_line)
            except TimeoutError:
                raise RemoteError(self.name, step, f"timed out after {limit:.0f}s (the command was abandoned; "
                                                   "see command_timeout)") from None
            if chan.closed and not chan.eof_received and not self.transport.is_active():
                raise RemoteError(self.name, step, "connection lost (SSH transport closed by the host "
                                                   "or the network) while the command ran")
            rc = chan.recv_exit_status()
            if writer:
                writer.join()
        finally:
            chan.close()
        secrets = [self.sudo_password] if self.sudo_password else []
        result = Result(rc, mask_in(out, secrets), mask_in(err, secrets))
        log.info("[%s] %s (exit %d, %.2fs)", step, _first_line(script), rc, time.monotonic() - started,
                 extra={"host": self.name})
        if check and not result.ok:
            raise RemoteError(self.name, step, result.tail())
        return result

    def _stdin_bytes(self, stdin, sudo: bool) -> bytes:
        """What goes to stdin before any stream: the sudo password's line first when sudo needs it."""
        data = stdin.encode() if isinstance(stdin, str) else (stdin or b"")
        if sudo and self.become and self.sudo_needs_password:
            data = (self.sudo_password.reveal() + "\n").encode() + data
        return data

    @staticmethod
    def _send(chan, data: bytes, stream) -> Optional[threading.Thread]:
        """Send stdin: small data at once; big data or a stream from a thread (returned)."""
        if stream is None and len(data) <= 32768:
            if data:
                chan.sendall(data)
            chan.shutdown_write()
            return None
        writer = threading.Thread(target=_feed, args=(chan, data, stream), daemon=True)
        writer.start()
        return writer

    def template(self, template_name: str, /, *, stdin: Data = None, step: str = "run", check: bool = False,
                 on_line=None, timeout=None, **context) -> Result:
        """Render ``templates/<template_name>`` and run it."""
        return self.run(render(template_name, **context), stdin=stdin, step=step, check=check,
                        on_line=on_line, timeout=timeout)

    def write_file(self, path: str, content: Data, mode: int = 0o644, step: str = "write") -> Result:
        """Atomically replace ``path`` with ``content`` (temp file + rename, as root)."""
        return self.template("host/write-file.sh.j2", path=path, mode=f"{mode:o}",
                             stdin=content, step=step, check=True)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
        else:
            self.transport.close()


def _first_line(script: str) -> str:
    """The first line of a script that says what it is (its leading comment), for ``-v``."""
    for line in script.splitlines():
        if line.strip() and not line.startswith(("#!", "{")):
            return line.strip().lstrip("# ")[:100]
    return ""


def _feed(chan, data: bytes, stream=None) -> None:
    """Send ``data``, then everything ``stream`` yields, to stdin; then close it."""
    try:
        if data:
            chan.sendall(data)
        while stream is not None:
            chunk = stream.read(1 << 20)
            if not chunk:
                break
            chan.sendall(chunk)
        chan.shutdown_write()
    except Exception:  # OSError, paramiko's SSHException, EOFError: the command exited early or the
        pass  # connection dropped; the command's exit status (or the lost connection) tells the story


def _collect(chan, timeout: Optional[float], on_line) -> tuple[str, str]:
    """Read stdout and stderr until EOF without letting either block the other."""
    out, err = bytearray(), bytearray()
    pending = b""
    deadline = time.monotonic() + timeout if timeout else None
    while True:
        if chan.recv_ready():
            chunk = chan.recv(65536)
            out += chunk
            if on_line:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    on_line(line.decode(errors="replace"))
            continue
        if chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)
            continue
        if chan.exit_status_ready() and chan.eof_received:
            break
        if chan.closed:
            # The connection dropped (sshd stopped, host gone): paramiko closes
            # the channel without EOF, and waiting for one would spin forever.
            break
        if deadline and time.monotonic() > deadline:
            chan.close()
            raise TimeoutError(f"no exit after {timeout:.0f}s")
        select.select([chan], [], [], 0.2)
    if on_line and pending:
        on_line(pending.decode(errors="replace"))
    return out.decode(errors="replace"), err.decode(errors="replace")
