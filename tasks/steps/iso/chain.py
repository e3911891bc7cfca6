"""One ISO sent once down a chain of hosts: controller (or a holder) -> h1 -> h2 ...

Every host writes while forwarding to the next over one TCP connection it
opens to a one-shot listener the next host started over xcatfab's SSH
connection (token on stdin, never on a command line; see
templates/host/iso-relay.py.j2). Hosts never need each other's SSH keys.
Every host verifies the whole-file sum against the controller's, sent to it
over its own SSH connection.
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
from ...runtime.ssh import connect
from ...runtime.templating import render
from .legs import HANDSHAKE_SECONDS, Leg, LegError, OpenSSHLeg, ParamikoLeg, cpu_has_aes, openssh_argv
from .local import CHUNK, MIB, LocalIso, remember_sum
from .progress import BOARD


@dataclass
class Receiver:
    """One host taking an ISO in a chain, and how that went."""

    cfg: object
    remote: object
    sha256: Optional[str] = None
    error: Optional[str] = None
    #: True when it failed because of the chain (not of itself): worth sending again from the controller.
    relay_problem: bool = False
    leg: Optional[Leg] = None
    offset: int = 0  # bytes its .part already had (resumed)
    say: Optional[object] = None  # prints a line for this host
    upstream: str = ""  # who fed it: "the controller" or a host name
    connect_options: Optional[object] = None  # how xcatfab connected (for a second, faster connection)


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


def _listen_address(cfg) -> str:
    return cfg.connect_address


def _start(receivers, iso, expected, tag, head_takes_stdin, report, progress_for):
    """Start the relay program on every receiver; return {host: offset} of those that answered."""
    offsets = {}
    for index, rcv in enumerate(receivers):
        script = _relay_script(rcv.cfg, "receive", iso, expected, tag)
        on_progress = progress_for(rcv)
        try:
            if index == 0 and head_takes_stdin:
                rcv.leg = _open_data_leg(rcv, script, on_progress, report)
            else:
                rcv.leg = ParamikoLeg(rcv.remote, script, on_progress)
            offsets[rcv.cfg.name] = rcv.offset = int(rcv.leg.expect("OFFSET", timeout=HANDSHAKE_SECONDS)[1])
        except (LegError, OSError, EOFError) as exc:
            rcv.error = str(exc) or type(exc).__name__
            if rcv.leg is not None:
                rcv.leg.finish(5)
    return offsets


def _open_data_leg(rcv, script, on_progress, report) -> Leg:
    """The head's leg: OpenSSH when installed and it connects, else paramiko.

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
              bwlimit: Optional[float] = None, out=None) -> ChainReport:
    """Send ``iso`` once through ``receivers`` (controller or ``holder`` -> r1 -> r2 ...).

    Fills each :class:`Receiver`'s ``sha256`` (verified and in place) or
    ``error``. Never raises for a host's failure.
    """
    chain = _Chain(receivers, iso, holder, bwlimit)
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

    def __init__(self, receivers: list, iso: LocalIso, holder: Optional[Holder], bwlimit: Optional[float]):
        self.receivers, self.iso, self.holder, self.bwlimit = receivers, iso, holder, bwlimit
        self.report = ChainReport()
        self.started = time.monotonic()
        self.from_controller = holder is None
        self.expected = iso.sha256 or (holder.sha256 if holder else None) or "-"
        self.tag = holder.sha256 if holder else iso.tag
        self.trackers: dict = {}
        self.serve: Optional[Leg] = None
        self.alive: list = []

    def progress_for(self, rcv):
        def update(position):
            tracker = self.trackers.get(rcv.cfg.name)  # made once the stream's start is known
            if tracker is not None:
                tracker(position)
        return update

    def run(self) -> None:
        offsets = _start(self.receivers, self.iso, self.expected, self.tag, self.from_controller,
                         self.report, self.progress_for)
        self.alive = [r for r in self.receivers if r.error is None]
        if not self.alive:
            return
        stream = min(offsets[r.cfg.name] for r in self.alive)
        for rcv in self.alive:
            self.trackers[rcv.cfg.name] = BOARD.track(rcv.cfg.name, self.iso.name, self.iso.size, stream)
        down = self.link(stream)
        streaming = time.monotonic()
        digest = self.feed_from_controller(stream, down) if self.from_controller else self.feed_from_holder(
            stream, down)
        if digest is False:
            return
        self.end(digest)
        for rcv in self.alive:
            if rcv.error is None:
                _collect(rcv, self.iso, self.expected, digest)
        self.report.streaming = time.monotonic() - streaming

    def link(self, stream: int) -> tuple[str, str]:
        """Listeners from the tail up, so each host's next one is listening when it is told about it.

        Returns the (address:port, token) the head (or the holder) sends to."""
        listeners = self.alive[1:] if self.from_controller else self.alive
        down, down_token = "-", "-"
        for rcv in reversed(listeners):
            token = token_source.token_hex(16)
            try:
                rcv.leg.send_line(f"CONFIG stream={stream} listen={_listen_address(rcv.cfg)} token={token} "
                                  f"down={down} down_token={down_token}")
                # (it hashes the part it keeps before it listens: give a long resumed part time)
                port = int(rcv.leg.expect("LISTEN", timeout=HANDSHAKE_SECONDS * 10)[1])
            except (LegError, OSError, ValueError) as exc:
                rcv.error = str(exc)
                continue
            down, down_token = f"{_listen_address(rcv.cfg)}:{port}", token
        return down, down_token

    def _fail_rest(self, why: str, start: int = 0) -> None:
        for rcv in self.alive[start:]:
            if rcv.error is None:
                rcv.error, rcv.relay_problem = why, True

    def feed_from_controller(self, stream: int, down: tuple):
        """The head takes the bytes on its stdin: the whole file's sum, None (the head failed), False (no data)."""
        head = self.alive[0]
        try:
            head.leg.send_line(f"CONFIG stream={stream} listen=- token=- down={down[0]} down_token={down[1]}")
            head.leg.expect("READY", timeout=HANDSHAKE_SECONDS * 10)
        except (LegError, OSError) as exc:
            head.error = str(exc)
            self._fail_rest(f"relay head {head.cfg.name} failed", 1)
            return False
        digest = _pump(head.leg, self.iso, stream, self.bwlimit, self.report)
        if digest is None:
            head.error = head.error or _final_error(head)
        else:
            remember_sum(self.iso, digest)
            self.report.sent = self.iso.size - stream
        return digest

    def feed_from_holder(self, stream: int, down: tuple):
        """A host that has the ISO serves it to the first receiver: its sum, or False."""
        holder = self.holder
        try:
            self.serve = ParamikoLeg(holder.remote, _relay_script(holder.cfg, "serve", self.iso, self.expected,
                                                                  self.tag))
            self.serve.expect("OFFSET", timeout=HANDSHAKE_SECONDS)
            self.serve.send_line(f"CONFIG stream={stream} listen=- token=- down={down[0]} down_token={down[1]}")
            self.serve.expect("DONE")
        except (LegError, OSError, EOFError) as exc:
            self._fail_rest(f"{holder.cfg.name} could not serve it: {exc}")
            return False
        return holder.sha256

    def end(self, digest: Optional[str]) -> None:
        """Tell every host the whole file's sum (END), or that the chain broke before it.

        Past a host that lost its next one, no host got the data: those get no
        END, so they give up at once ("the controller went away", their parts
        kept) and deliver() sends to them itself."""
        serve = self.serve
        broken = f"{self.holder.cfg.name}: {serve.notes[0]}" if serve is not None and serve.notes else None
        for index, rcv in enumerate(self.alive):
            if rcv.error is not None or rcv.leg is None:
                continue
            if broken:
                rcv.error, rcv.relay_problem = broken, True
            elif digest is not None and not (self.from_controller and index == 0):
                try:
                    rcv.leg.send_line(f"END {digest}")  # (the head had it after its data)
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
        if self.serve is not None:
            self.serve.close_input()
            self.serve.finish(10)


def _pump(leg: Leg, iso: LocalIso, stream: int, bwlimit: Optional[float], report: ChainReport) -> Optional[str]:
    """Hash ``[0, stream)``, then send ``[stream, size)`` while hashing it (one read); then END.

    Each block is read once into a buffer and hashed from it in a thread of
    its own (hashlib lets go of the GIL), so hashing one block overlaps
    sending the next; the OpenSSH leg takes the same block's pages straight
    from the page cache (splice) instead of a second copy through this
    process. A buffer is reused only once both are done with it. Returns the
    whole file's sha256, or None when the host stopped taking data.
    """
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
    rate = bwlimit * MIB if bwlimit else None
    stopped = False
    try:
        with open(iso.path, "rb") as fh:
            position, sent, started = 0, 0, time.monotonic()
            while position < iso.size:
                index = free.get()
                view = memoryview(buffers[index])
                n = fh.readinto(view[:min(CHUNK, iso.size - position)])
                if not n:
                    raise StepFailed(f"{iso.path} shrank while it was being sent")
                # The kept prefix on the host is only hashed here, never sent.
                skip = max(0, min(n, stream - position))
                if skip < n:
                    try:
                        leg.send_from(fh.fileno(), position + skip, view[skip:n])
                    except LegError:
                        stopped = True
                        free.put(index)
                        break
                    sent += n - skip
                todo.put((index, n))
                position += n
                if rate and sent:
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
    finally:
        todo.put(None)
        thread.join()
    if stopped:
        return None
    value = digest.hexdigest()
    try:
        leg.send_line(f"END {value}")
    except LegError:
        return None
    return value


def _final_error(rcv: Receiver) -> str:
    try:
        rcv.leg.expect("DONE", timeout=30)
    except LegError as exc:
        return str(exc)
    return "the host stopped taking data"


def _collect(rcv: Receiver, iso: LocalIso, expected: str, digest: Optional[str]) -> None:
    """Read a receiver's verdict into it."""
    name = rcv.cfg.name
    try:
        fields = rcv.leg.expect("DONE", "MISMATCH")
    except LegError as exc:
        text = str(exc)
        rcv.error = f"{name}: {iso.name}: {text}"
        rcv.relay_problem = text.startswith(("upstream", "no upstream", "the controller went away",
                                             "the stream ended"))
        return
    if fields[0] == "DONE":
        rcv.sha256 = fields[1]
        return
    got = fields[1].partition("=")[2]
    want = fields[2].partition("=")[2]
    if expected != "-" and digest is not None and digest != expected:
        rcv.error = (f"{name}: {iso.name}: sha256 mismatch: got {got}, expected {expected} ({iso.origin}); "
                     f"the local file {iso.path} hashes to {digest}{' as well' if got == digest else ''}; "
                     f"nothing left under {iso.name}")
    else:
        source = iso.origin if expected != "-" and want == expected else "sum of the bytes sent"
        rcv.error = (f"{name}: {iso.name}: sha256 mismatch: got {got}, expected {want} ({source}); "
                     f"nothing left under {iso.name}")
