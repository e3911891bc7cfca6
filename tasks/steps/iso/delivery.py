"""Staging one ISO on one or many hosts: the chain, routing around a dead host, peers and the relay group.

* :func:`deliver` runs one chain for the hosts of a run; the hosts it could
  not serve because of another host (a dead or stalled one before them) get
  another chain, fed by a host that already holds the verified file when
  there is one, else by the controller; a host the controller cannot reach
  over TCP gets the bytes over SSH.
* :data:`SOURCES` knows the hosts of this process that hold a verified ISO
  (staged by this run, or found staged: a rerun), so later hosts pull it from
  them (peer pull) rather than from the controller.
* :class:`RelayGroup` gathers the hosts of a ``fab iso`` run per ISO, so the
  controller sends it once down a chain.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Optional

from ...runtime.errors import ConnectError, StepFailed
from ...runtime.executor import INTERRUPTED
from ...runtime.guarded import Interrupted
from ...runtime.ssh import connect
from .chain import INTERRUPT, ChainReport, Holder, Receiver, run_chain
from .local import MIB, LocalIso, mib
from .sources import SOURCES, IsoOptions, Sources

__all__ = ["IsoOptions", "RelayGroup", "SOURCES", "Sources", "deliver", "stage"]

CONTROLLER = "the controller"


def _announce(receivers, iso: LocalIso, report: ChainReport) -> None:
    for rcv in receivers:
        if rcv.sha256 is None or rcv.say is None:
            continue
        rate = (iso.size - rcv.offset) / max(report.streaming or report.seconds, 1e-6) / MIB
        resumed = f", resumed after {mib(rcv.offset)}" if rcv.offset else ""
        if rcv.upstream == CONTROLLER:
            how = f"{mib(report.sent)} sent from the controller via {report.path}"
        else:
            how = f"relayed from {rcv.upstream}"
        rcv.say(f"staged {iso.name} ({mib(iso.size)}) in {report.seconds:.1f}s (data {rate:.0f} MiB/s), "
                f"{how}{resumed}; sha256 {rcv.sha256} verified")


class _Delivery:
    """One ISO to a set of receivers, in rounds until each has it or failed for a reason of its own."""

    def __init__(self, iso: LocalIso, bwlimit: Optional[float], out, holder: Optional[Holder]):
        self.iso, self.bwlimit, self.out = iso, bwlimit, out
        self.holders = [holder] if holder else []  # hosts that can feed others, best first
        self.failed_sources: set = set()  # holders that could not serve it
        self.warnings: list = []

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        if self.out is not None:
            host, _sep, rest = text.partition(": ")
            self.out.line(host, "warning: " + rest)

    def chain(self, receivers: list, holder: Optional[Holder], transport: str = "tcp") -> None:
        previous = holder.cfg.name if holder else CONTROLLER
        for rcv in receivers:
            rcv.upstream, previous = previous, rcv.cfg.name
        report = run_chain(receivers, self.iso, holder, self.bwlimit, self.out, transport)
        for text in report.warnings:
            self.warn(text)
        _announce(receivers, self.iso, report)
        if holder is not None and not any(r.sha256 for r in receivers):
            self.failed_sources.add(holder.cfg.name)  # it served nobody: try another source next
        for rcv in receivers:
            if rcv.sha256:
                self.holders.append(Holder(rcv.cfg, rcv.remote, rcv.sha256))

    def source_for(self, retry: list) -> Optional[Holder]:
        """A host holding the verified file to feed ``retry``: not one that failed to, nor one whose
        next host was among them (a link that broke once may break again)."""
        broke = {r.upstream for r in retry}
        usable = [h for h in self.holders if h.cfg.name not in self.failed_sources]
        for holder in sorted(usable, key=lambda h: h.cfg.name in broke):
            return holder
        return None

    def run(self, receivers: list) -> None:
        by_ssh = [r for r in receivers if r.transport == "ssh"]
        by_ssh += self.tcp_rounds([r for r in receivers if r.transport != "ssh"])
        for rcv in by_ssh:
            if INTERRUPTED.is_set():
                break
            if rcv.error:
                self.warn(f"{rcv.cfg.name}: {self.iso.name} did not arrive over TCP ({self._reason(rcv)}); "
                          "sending it from the controller over SSH")
            rcv.reset(CONTROLLER)
            self.chain([rcv], None, "ssh")

    def tcp_rounds(self, pending: list) -> list:
        """Chains until every host has it or failed of itself; returns the hosts left for SSH."""
        holder = self.holders[0] if self.holders else None
        by_ssh: list = []
        for _round in range(len(pending) + 2):
            if not pending or INTERRUPTED.is_set():
                break
            self.chain(pending, holder)
            unreachable, retry = _after_chain(pending)
            by_ssh += unreachable
            if retry and holder is None and len(retry) == len(pending):
                return by_ssh + retry  # the controller's own TCP chain served no one: SSH, one by one
            holder = self.source_for(retry)
            for rcv in retry:
                self._again(rcv, holder)
            pending = retry
        return by_ssh

    def _reason(self, rcv: Receiver) -> str:
        return (rcv.error or "").removeprefix(f"{rcv.cfg.name}: {self.iso.name}: ")

    def _again(self, rcv: Receiver, holder: Optional[Holder]) -> None:
        source = holder.cfg.name if holder else CONTROLLER
        via = f"{rcv.upstream}" if rcv.upstream != CONTROLLER else "the relay"
        self.warn(f"{rcv.cfg.name}: {self.iso.name} did not arrive through {via} ({self._reason(rcv)}); "
                  f"sending it from {source}")
        rcv.reset(source)


def _after_chain(receivers: list) -> tuple[list, list]:
    """(the hosts the controller could not reach over TCP, those that failed because of another host)."""
    unreachable = [r for r in receivers if r.tcp_unreachable]
    retry = [r for r in receivers if r.error and r.relay_problem and not r.tcp_unreachable]
    return unreachable, retry


def deliver(receivers: list, iso: LocalIso, bwlimit: Optional[float] = None, out=None,
            holder: Optional[Holder] = None) -> list:
    """Stage ``iso`` on every receiver: one chain, then more for those the chain missed.

    A host that failed because of another host before it in the chain (dead,
    stalled, unreachable from it) is sent to again, with the others it took
    down, from a host that now holds the verified file (else from the
    controller); the controller's TCP path failing for a host means SSH for
    it. Returns the warnings (each also printed for the host it concerns).
    """
    delivery = _Delivery(iso, bwlimit, out, holder)
    delivery.run(receivers)
    return delivery.warnings




@contextmanager
def peer_holder(iso: LocalIso, exclude, connect_options, warn):
    """A connected :class:`Holder` of ``iso`` among :data:`SOURCES` (None when there is none to reach)."""
    want = iso.sha256
    peer = None
    for peer_cfg, digest in SOURCES.holding(iso.key, exclude):
        if (want and digest != want) or connect_options is None:
            continue
        try:
            peer = Holder(peer_cfg, connect(peer_cfg, connect_options), digest)
            break
        except ConnectError as exc:
            warn(f"cannot reach {peer_cfg.name} to pull {iso.name} from it: {exc.message}")
    try:
        yield peer
    finally:
        if peer is not None:
            peer.remote.close()


def wants_ssh(rcv: Receiver) -> bool:
    """The host's inventory asks for every ISO byte inside SSH (no relay, no peer)."""
    return getattr(rcv.cfg, "iso_transport", "tcp") == "ssh"


def _stage_from_peers(run, me: Receiver, iso: LocalIso, opts: IsoOptions) -> None:
    """Deploy path: pull from a host of this process that has the ISO, else from the controller."""
    with SOURCES.turn(iso.key):
        if wants_ssh(me):
            deliver([me], iso, opts.bwlimit, run.out)
        else:
            with peer_holder(iso, run.cfg.name, run.connect_options, lambda text: run.say("warning: " + text)) \
                    as holder:
                if holder is not None:
                    run.connections += 1
                deliver([me], iso, opts.bwlimit, run.out, holder)
        if me.sha256:
            SOURCES.add(iso.key, run.cfg, me.sha256)


def stage(run, iso: LocalIso, opts: IsoOptions) -> str:
    """Stage one ISO on the run's host (through the task's relay, a peer, or from the controller)."""
    me = Receiver(run.cfg, run.remote, say=run.say, connect_options=run.connect_options)
    if opts.relay is not None:
        opts.relay.stage(me, iso)
    else:
        _stage_from_peers(run, me, iso, opts)
    if me.sha256 and not me.error:
        return me.sha256
    name = run.cfg.name
    if me.interrupted or (INTERRUPTED.is_set() and not me.sha256):
        raise Interrupted(f"{name}: {iso.name}: {INTERRUPT}", interrupted_note(name, iso, me.kept))
    error = me.error or f"{name}: {iso.name}: not staged"
    raise StepFailed(error if error.startswith(name + ":") else f"{name}: {iso.name}: {error}")


def interrupted_note(host: str, iso: LocalIso, kept: Optional[int]) -> str:
    """What Ctrl-C left on the host, and the command that finishes the job."""
    if kept:
        left = f"{iso.name}.part kept on the host ({mib(kept)} of {mib(iso.size)}, resumable)"
    elif kept == 0:
        left = f"nothing of {iso.name} was written yet"
    else:
        left = f"{iso.name} not staged (any .part the host kept is resumable)"
    return f"interrupted while staging {iso.name}: {left}; to resume: fab -H {host} iso --src {iso.path}"


class RelayGroup:
    """The hosts of one ``fab iso`` run, meeting per ISO so the controller sends it once down a chain.

    Each host's step declares the ISOs it may stage, then offers itself for
    each (in one global order); when every host that may need an ISO has
    offered, declined or left, the last one to arrive runs the chain for all
    of them, in the order the hosts were given, fed by a host already holding
    the verified file when there is one (a rerun), else by the controller.
    Hosts with ``iso_transport=ssh`` take theirs over SSH on their own.
    """

    def __init__(self, hosts, bwlimit: Optional[float] = None, out=None):
        self.order = list(hosts)
        self.bwlimit, self.out = bwlimit, out
        self.cond = threading.Condition()
        self.needs: dict = {}
        self.left: set = set()
        self.offers: dict = {}  # key -> {host: Receiver}
        self.served: dict = {}  # key -> set of hosts the chain ran for
        self.running: set = set()

    def declare(self, host: str, keys) -> None:
        with self.cond:
            self.needs[host] = set(keys)
            self.cond.notify_all()

    def skip(self, host: str, key: str) -> None:
        with self.cond:
            self.needs.setdefault(host, set()).discard(key)
            self.cond.notify_all()

    def leave(self, host: str) -> None:
        with self.cond:
            self.left.add(host)
            self.cond.notify_all()

    def _waiting_for(self, key: str) -> list:
        offered = self.offers.get(key, {})
        return [h for h in self.order if h not in self.left and h not in offered
                and (h not in self.needs or key in self.needs[h])]

    def stage(self, me: Receiver, iso: LocalIso) -> None:
        host, key = me.cfg.name, iso.key
        if wants_ssh(me):
            self.skip(host, key)
            deliver([me], iso, self.bwlimit, self.out)
            return
        batch = self._meet(me, iso)
        if not batch:
            return
        try:
            names = [r.cfg.name for r in batch]
            with peer_holder(iso, names, me.connect_options, lambda text: self._warn(host, text)) as holder:
                deliver(batch, iso, self.bwlimit, self.out, holder)
        finally:
            with self.cond:
                self.served.setdefault(key, set()).update(r.cfg.name for r in batch)
                self.offers[key] = {}
                self.running.discard(key)
                self.cond.notify_all()

    def _meet(self, me: Receiver, iso: LocalIso) -> list:
        """Wait for the others; the batch this host runs the chain for ([] when another one ran it)."""
        host, key = me.cfg.name, iso.key
        with self.cond:
            self.offers.setdefault(key, {})[host] = me
            self.cond.notify_all()
            while True:
                if host in self.served.get(key, set()):
                    return []
                if key not in self.running and (not self._waiting_for(key) or INTERRUPTED.is_set()):
                    self.running.add(key)
                    return [self.offers[key][h] for h in self.order if h in self.offers[key]]
                self.cond.wait(1.0)

    def _warn(self, host: str, text: str) -> None:
        if self.out is not None:
            self.out.line(host, "warning: " + text)
