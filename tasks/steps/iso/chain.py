"""One ISO sent once down a chain of hosts: controller (or a holder) -> h1 -> h2 ...

Every host writes while forwarding to the next over one TCP connection it
opens to a one-shot listener the next host started over xcatfab's SSH
connection (token on stdin, never on a command line; see
templates/host/iso-relay.py.j2). With ``iso_transport=tcp`` (the default)
the controller feeds the first host the same way, with ``sendfile``; with
``ssh`` a chain is one host, fed on the stdin of an SSH session. Hosts never
need each other's SSH keys. Every host verifies the whole-file sum against
the controller's, sent to it over its own SSH connection.
"""

from __future__ import annotations

import hashlib
import os
import queue
import secrets as token_source
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Optional

from ...runtime.errors import ConnectError, StepFailed
from ...runtime.executor import INTERRUPTED
from ...runtime.ssh import connect
from ...runtime.templating import render
from .legs import (
    HANDSHAKE_SECONDS,
    Leg,
    LegError,
    OpenSSHLeg,
    ParamikoLeg,
    TcpSender,
    cpu_has_aes,
    openssh_argv,
    peer_address,
    sender_stall_seconds,
    stall_seconds,
)
from .local import CHUNK, MIB, LocalIso, remember_sum
from .progress import BOARD

#: Bytes per sendfile/splice call when the controller reads nothing itself (the sum is known).
SPAN = 8 * MIB
#: Why a transfer stopped when Ctrl-C stopped it.
INTERRUPT = "interrupted (Ctrl-C)"


@dataclass
class Receiver:
    """One host taking an ISO in a chain, and how that went."""

    cfg: object
    remote: object
    sha256: Optional[str] = None
    error: Optional[str] = None
    #: True when it failed because of the chain (not of itself): worth sending again from elsewhere.
    relay_problem: bool = False
    leg: Optional[Leg] = None
    offset: int = 0  # bytes its .part already had (resumed)
    say: Optional[object] = None  # prints a line for this host
    upstream: str = ""  # who fed it: "the controller" or a host name
    connect_options: Optional[object] = None  # how xcatfab connected (for a second, faster connection)
    interrupted: bool = False  # Ctrl-C stopped its transfer
    kept: Optional[int] = None  # bytes of its .part kept for a resume (as the host said)
    #: The controller could not open a TCP connection to it: the bytes go over SSH instead.
    tcp_unreachable: bool = False
    #: Why the chain broke before it (the host before it lost its next one), when it did.
    broken_by: Optional[str] = None

    @property
    def transport(self) -> str:
        """``tcp`` or ``ssh`` (see :func:`run_chain`): ``ssh`` when the host asks for it or has no TCP path."""
        if getattr(self.cfg, "iso_transport", "tcp") == "ssh" or self.tcp_unreachable:
            return "ssh"
        return "tcp" if peer_address(self.remote) else "ssh"

    def reset(self, upstream: str) -> None:
        """Ready for another attempt, fed by ``upstream``."""
        self.error, self.relay_problem, self.leg, self.upstream = None, False, None, upstream
        self.sha256, self.offset, self.kept, self.broken_by = None, 0, None, None


@dataclass
class Holder:
    """A host that has the ISO, verified, and can feed others."""

    cfg: object
    remote: object
    sha256: str


@dataclass
class ChainReport:
    """What one chain run did: bytes the controller sent, seconds, the data path, warnings."""

    sent: int = 0
    seconds: float = 0.0  # the whole chain: start, handshake, data, verdicts
    streaming: float = 0.0  # the data alone: first byte sent to the last host's verdict
    path: str = ""
    warnings: list = field(default_factory=list)


def _relay_script(cfg, mode: str, iso: LocalIso, expected: str, tag: str) -> str:
    return render("host/iso-receive.sh.j2", mode=mode, iso_dir=cfg.iso_dir, state_dir=cfg.state_dir,
                  name=iso.name, size=iso.size, expected=expected, tag=tag)


def _open_data_leg(rcv, script, on_progress, report) -> Leg:
    """The ``ssh`` transport's leg: OpenSSH when installed and it connects, else paramiko.

    The first answer line is left for the caller; OpenSSH's exit status 255
    (could not connect or authenticate) means "use paramiko", anything else
    is the relay program's own answer."""
    argv = None if os.environ.get("XCATFAB_ISO_PARAMIKO") else openssh_argv(rcv.remote, rcv.cfg)
    if argv:
        leg = OpenSSHLeg(rcv.remote, argv, script, on_progress)
        try:
            first = leg.lines.get(timeout=HANDSHAKE_SECONDS)
        except queue.Empty:
            first = None
        if first is not None:
            leg.lines.queue.appendleft(first)
            report.path = "openssh"
            return leg
        code = leg.finish(5)
        if code != 255:
            raise LegError(leg.stderr_tail() or f"the relay program ended (exit {code})")
        report.warnings.append(f"{rcv.cfg.name}: OpenSSH could not connect ({leg.stderr_tail() or 'exit 255'}); "
                               "sending through paramiko instead")
    fast = _gcm_connection(rcv)
    report.path = "paramiko, aes128-gcm" if fast else "paramiko"
    return ParamikoLeg(fast or rcv.remote, script, on_progress, owned=fast is not None)


def _gcm_connection(rcv) -> Optional[object]:
    """A second connection to the host that negotiates AES-GCM, or None.

    paramiko prefers aes-ctr with a separate HMAC, which costs it a third of
    its throughput; the connection xcatfab already has keeps its cipher, so
    the bytes get their own connection (same host, user, keys, known_hosts).
    """
    if rcv.connect_options is None or not cpu_has_aes():
        return None
    import paramiko

    others = [c for c in paramiko.Transport._preferred_ciphers if "-gcm@" not in c]
    extra = dict(rcv.connect_options.extra_connect_kwargs or {}, disabled_algorithms={"ciphers": others})
    try:
        return connect(rcv.cfg, replace(rcv.connect_options, extra_connect_kwargs=extra))
    except (ConnectError, OSError, paramiko.SSHException):
        return None  # e.g. the server offers no AES-GCM: the open connection carries the bytes


def run_chain(receivers: list, iso: LocalIso, holder: Optional[Holder] = None,
              bwlimit: Optional[float] = None, out=None, transport: str = "tcp") -> ChainReport:
    """Send ``iso`` once through ``receivers`` (controller or ``holder`` -> r1 -> r2 ...).

    ``transport``: ``tcp`` (every host listens for its upstream, the
    controller's included) or ``ssh`` (one receiver, fed by the controller on
    the stdin of an SSH session; no holder). Fills each :class:`Receiver`'s
    ``sha256`` (verified and in place) or ``error``. Never raises for a
    host's failure.
    """
    chain = _Chain(receivers, iso, holder, bwlimit, transport)
    BOARD.start(out)
    try:
        chain.run()
        return chain.report
    finally:
        chain.close()
        BOARD.stop()
        chain.report.seconds = time.monotonic() - chain.started


class _Chain:
    """One run of the chain: start every receiver, link them up, stream, collect the verdicts."""

    def __init__(self, receivers: list, iso: LocalIso, holder: Optional[Holder], bwlimit: Optional[float],
                 transport: str):
        self.receivers, self.iso, self.holder, self.bwlimit = receivers, iso, holder, bwlimit
        self.tcp = transport == "tcp"
        self.report = ChainReport(path="tcp" if self.tcp else "")
        self.started = time.monotonic()
        self.expected = iso.sha256 or (holder.sha256 if holder else None) or "-"
        self.tag = iso.tag
        self.trackers: dict = {}
        self.serve: Optional[Leg] = None
        self.alive: list = []

    def progress_for(self, rcv):
        def update(position):
            tracker = self.trackers.get(rcv.cfg.name)  # made once the stream's start is known
            if tracker is not None:
                tracker(position)
        return update

    def deadline(self, rcv) -> float:
        """Seconds left of the host's command_timeout (the limit of its whole transfer)."""
        return max(1.0, self.started + getattr(rcv.cfg, "command_timeout", 1800) - time.monotonic())

    def start(self) -> dict:
        """Start the relay program on every receiver; {host: offset} of those that answered."""
        offsets = {}
        for rcv in self.receivers:
            script = _relay_script(rcv.cfg, "receive", self.iso, self.expected, self.tag)
            try:
                if self.tcp:
                    rcv.leg = ParamikoLeg(rcv.remote, script, self.progress_for(rcv))
                else:
                    rcv.leg = _open_data_leg(rcv, script, self.progress_for(rcv), self.report)
                offsets[rcv.cfg.name] = rcv.offset = int(rcv.leg.expect("OFFSET", timeout=HANDSHAKE_SECONDS)[1])
            except (LegError, OSError, EOFError, ValueError) as exc:
                rcv.error = str(exc) or type(exc).__name__
                if rcv.leg is not None:
                    rcv.leg.finish(5)
        return offsets

    def run(self) -> None:
        offsets = self.start()
        self.alive = [r for r in self.receivers if r.error is None]
        if not self.alive:
            return
        stream = min(offsets[r.cfg.name] for r in self.alive)
        for rcv in self.alive:
            self.trackers[rcv.cfg.name] = BOARD.track(rcv.cfg.name, self.iso.name, self.iso.size, stream)
        if INTERRUPTED.is_set():
            self.stop_all(INTERRUPT, interrupted=True)
            return
        streaming = time.monotonic()
        if not self.tcp:
            digest = self.feed_stdin(stream)
        else:
            head, down = self.link(stream)
            if head is None:
                return
            digest = self.feed_tcp(stream, head, down) if self.holder is None else self.feed_from_holder(stream, down)
        if digest is False:
            return
        self.end(digest)
        for rcv in self.alive:
            if rcv.error is None:
                _collect(rcv, self.iso, self.expected, digest, self.deadline(rcv))
        self.report.streaming = time.monotonic() - streaming

    def link(self, stream: int):
        """Listeners from the tail up, so each host's next one is listening when it is told about it.

        Returns (the first host listening, (its address:port, token)), or (None, None)."""
        down, down_token, head = "-", "-", None
        for rcv in reversed(self.alive):
            token = token_source.token_hex(16)
            address = peer_address(rcv.remote)
            try:
                rcv.leg.send_line(f"CONFIG stream={stream} listen={address} token={token} "
                                  f"down={down} down_token={down_token} stall={stall_seconds()}")
                # (it hashes the part it keeps before it listens: give a long resumed part time)
                port = int(rcv.leg.expect("LISTEN", timeout=HANDSHAKE_SECONDS * 10)[1])
            except (LegError, OSError, ValueError) as exc:
                rcv.error = str(exc)
                continue
            down, down_token, head = f"{address}:{port}", token, rcv
        return head, (down, down_token)

    def stop_all(self, why: str, start: int = 0, interrupted: bool = False) -> None:
        """Every receiver from ``start`` on failed because of the chain (or Ctrl-C)."""
        for rcv in self.alive[start:]:
            if rcv.error is None:
                rcv.error, rcv.relay_problem, rcv.interrupted = why, not interrupted, interrupted

    def feed_stdin(self, stream: int):
        """``ssh``: the head takes the bytes on its stdin: the whole file's sum, None (it failed), False (no data)."""
        head = self.alive[0]
        try:
            head.leg.send_line(f"CONFIG stream={stream} listen=- token=- down=- down_token=- "
                               f"stall={stall_seconds()}")
            head.leg.expect("READY", timeout=HANDSHAKE_SECONDS * 10)
        except (LegError, OSError) as exc:
            head.error = str(exc)
            return False
        return self.pumped(head, head.leg, stream)

    def feed_tcp(self, stream: int, head: Receiver, down: tuple):
        """``tcp``: the controller connects to the first listening host and sends with sendfile."""
        address, _sep, port = down[0].rpartition(":")
        try:
            sender = TcpSender(address, int(port), down[1], getattr(head.cfg, "connect_timeout", 10))
        except LegError as exc:
            head.error, head.relay_problem, head.tcp_unreachable = str(exc), True, True
            self.stop_all(f"the controller could not reach {head.cfg.name} over TCP")
            return False
        try:
            return self.pumped(head, sender, stream)
        finally:
            sender.close()

    def pumped(self, head: Receiver, sender, stream: int):
        """Send the bytes to the head: the sum, or None when it stopped (Ctrl-C, or the head failed)."""
        digest, stopped = _pump(sender, self.iso, stream, self.bwlimit)
        if digest is not None:
            if self.iso.sha256 is None:
                remember_sum(self.iso, digest)
            self.report.sent = self.iso.size - stream
            return digest
        if stopped == INTERRUPT:
            self.stop_all(INTERRUPT, interrupted=True)
            return None
        head.error = head.error or _host_reason(head) or stopped
        return None

    def feed_from_holder(self, stream: int, down: tuple):
        """A host that has the ISO serves it to the first receiver: its sum, or False."""
        holder = self.holder
        try:
            self.serve = ParamikoLeg(holder.remote, _relay_script(holder.cfg, "serve", self.iso, self.expected,
                                                                  self.tag))
            self.serve.expect("OFFSET", timeout=HANDSHAKE_SECONDS)
            self.serve.send_line(f"CONFIG stream={stream} listen=- token=- down={down[0]} down_token={down[1]} "
                                 f"stall={stall_seconds()}")
            self.serve.expect("DONE", timeout=self.deadline(holder), idle=sender_stall_seconds())
        except (LegError, OSError, EOFError) as exc:
            self.stop_all(f"{holder.cfg.name} could not serve it: {exc}")
            return False
        return holder.sha256

    def end(self, digest: Optional[str]) -> None:
        """Tell every host the whole file's sum (END), up to the first host that lost its next one.

        Past that host no one got all the data: those get no END, so one still
        waiting for its upstream gives up at once ("the controller went
        away", its part kept) rather than after a wait; each then says what
        happened to it, and :func:`tasks.steps.iso.delivery.deliver` sends to
        them again from elsewhere."""
        serve = self.serve
        broken = f"{self.holder.cfg.name}: {serve.notes[0]}" if serve is not None and serve.notes else None
        for rcv in self.alive:
            if rcv.error is not None or rcv.leg is None:
                continue
            if broken:
                rcv.broken_by = broken
            elif digest is not None:
                try:
                    rcv.leg.send_line(f"END {digest}")
                except LegError:
                    pass
            rcv.leg.close_input()
            if rcv.leg.notes and not broken:
                broken = f"{rcv.cfg.name}: {rcv.leg.notes[0]}"

    def close(self) -> None:
        for rcv in self.receivers:
            if rcv.leg is not None:
                rcv.leg.close_input()
                rcv.leg.finish(10)
                if rcv.interrupted or rcv.error:
                    rcv.kept = rcv.leg.kept
        if self.serve is not None:
            self.serve.close_input()
            self.serve.finish(10)


def _pump(sender, iso: LocalIso, stream: int, bwlimit: Optional[float]) -> tuple[Optional[str], str]:
    """Send ``[stream, size)`` of the file to ``sender``: (the whole file's sha256 or None, why it stopped).

    With the sum known and a sender that takes pages straight from the page
    cache (sendfile, splice), nothing is read here. Otherwise each block is
    read once into a buffer and hashed from it in a thread of its own
    (hashlib lets go of the GIL), so hashing one block overlaps sending the
    next; the kept prefix on the host, ``[0, stream)``, is only hashed. Ctrl-C
    (the executor's INTERRUPTED) stops it between blocks.
    """
    known = iso.sha256
    with open(iso.path, "rb") as fh:
        if known and getattr(sender, "zero_copy", False):
            return _send_known(sender, fh.fileno(), iso, stream, bwlimit)
        return _send_hashing(sender, fh, iso, stream, bwlimit)


class _Pace:
    """``--bwlimit``: sleep so the bytes sent stay under the rate."""

    def __init__(self, bwlimit: Optional[float]):
        self.rate = bwlimit * MIB if bwlimit else None
        self.sent = 0
        self.started = time.monotonic()

    def add(self, n: int) -> None:
        self.sent += n
        if self.rate:
            ahead = self.sent / self.rate - (time.monotonic() - self.started)
            if ahead > 0:
                time.sleep(ahead)


def _send_known(sender, fd: int, iso: LocalIso, stream: int, bwlimit: Optional[float]):
    pace, position = _Pace(bwlimit), stream
    span = CHUNK if bwlimit else SPAN
    while position < iso.size:
        if INTERRUPTED.is_set():
            return None, INTERRUPT
        n = min(span, iso.size - position)
        try:
            sender.send_range(fd, position, n)
        except LegError as exc:
            return None, str(exc)
        position += n
        pace.add(n)
    return iso.sha256, ""


def _send_hashing(sender, fh, iso: LocalIso, stream: int, bwlimit: Optional[float]):
    digest = hashlib.sha256()
    buffers = [bytearray(CHUNK) for _ in range(4)]
    free: queue.Queue = queue.Queue()
    todo: queue.Queue = queue.Queue()
    for index in range(len(buffers)):
        free.put(index)

    def hasher() -> None:
        while True:
            item = todo.get()
            if item is None:
                return
            index, n = item
            digest.update(memoryview(buffers[index])[:n])
            free.put(index)

    thread = threading.Thread(target=hasher, daemon=True)
    thread.start()
    pace, position = _Pace(bwlimit), 0
    try:
        while position < iso.size:
            if INTERRUPTED.is_set():
                return None, INTERRUPT
            index = free.get()
            view = memoryview(buffers[index])
            n = fh.readinto(view[:min(CHUNK, iso.size - position)])
            if not n:
                raise StepFailed(f"{iso.path} shrank while it was being sent")
            skip = max(0, min(n, stream - position))  # the host's kept prefix: hashed here, never sent
            if skip < n:
                try:
                    sender.send_range(fh.fileno(), position + skip, n - skip, view[skip:n])
                except LegError as exc:
                    free.put(index)
                    return None, str(exc)
                pace.add(n - skip)
            todo.put((index, n))
            position += n
    finally:
        todo.put(None)
        thread.join()
    return digest.hexdigest(), ""


def _host_reason(rcv: Receiver) -> Optional[str]:
    """What the host says about a transfer that stopped (its FAIL line), if it says so soon."""
    try:
        rcv.leg.expect("DONE", timeout=5)
    except LegError as exc:
        text = str(exc)
        return None if text.startswith("no answer within") else text
    return None


def _collect(rcv: Receiver, iso: LocalIso, expected: str, digest: Optional[str], timeout: float) -> None:
    """Read a receiver's verdict into it."""
    name = rcv.cfg.name
    try:
        fields = rcv.leg.expect("DONE", "MISMATCH", timeout=timeout, idle=sender_stall_seconds())
    except LegError as exc:
        text = str(exc)
        rcv.relay_problem = text.startswith(("upstream", "no upstream", "the controller went away",
                                             "the stream ended"))
        # A host the chain broke before says only that its stream ended: the host before it knows why.
        rcv.error = f"{name}: {iso.name}: {rcv.broken_by if rcv.relay_problem and rcv.broken_by else text}"
        return
    if fields[0] == "DONE":
        rcv.sha256 = fields[1]
        return
    got = fields[1].partition("=")[2]
    want = fields[2].partition("=")[2]
    source = iso.origin if expected != "-" and want == expected else "sum of the bytes sent"
    rcv.error = (f"{name}: {iso.name}: sha256 mismatch: got {got}, expected {want} ({source}); "
                 f"the bytes changed on the way or the local file changed while it was sent; "
                 f"nothing of it kept (a file already under {iso.name} was left as it was)")
