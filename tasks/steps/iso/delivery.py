"""Staging one ISO on one or many hosts: the chain, fan-out on failure, peers and the relay group."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional

from ...runtime.errors import ConnectError, StepFailed
from ...runtime.ssh import connect
from .chain import ChainReport, Holder, Receiver, run_chain
from .local import MIB, LocalIso, mib


@dataclass
class IsoOptions:
    """What the ``iso`` task adds to a host's run (deploy uses the defaults)."""

    isos: Optional[list] = None  # LocalIso list; None: the inventory's
    copycds: bool = True
    bwlimit: Optional[float] = None  # MiB/s the controller sends at most
    relay: Optional["RelayGroup"] = None


def _announce(receivers, iso: LocalIso, report: ChainReport) -> None:
    for rcv in receivers:
        if rcv.sha256 is None or rcv.say is None:
            continue
        rate = (iso.size - rcv.offset) / max(report.streaming or report.seconds, 1e-6) / MIB
        resumed = f", resumed after {mib(rcv.offset)}" if rcv.offset else ""
        if rcv.upstream == "the controller":
            how = f"{mib(report.sent)} sent from the controller via {report.path}"
        else:
            how = f"relayed from {rcv.upstream}"
        rcv.say(f"staged {iso.name} ({mib(iso.size)}) in {report.seconds:.1f}s (data {rate:.0f} MiB/s), "
                f"{how}{resumed}; sha256 {rcv.sha256} verified")


def deliver(receivers: list, iso: LocalIso, bwlimit: Optional[float] = None, out=None,
            holder: Optional[Holder] = None) -> list:
    """Stage ``iso`` on every receiver with one chain; then fan out from the controller to those it missed.

    Returns the warnings (each also printed for the host it concerns, when it happens).
    """
    warnings = []

    def warn(text: str) -> None:
        warnings.append(text)
        if out is not None:
            host, _sep, rest = text.partition(": ")
            out.line(host, "warning: " + rest)

    previous = holder.cfg.name if holder else "the controller"
    for rcv in receivers:
        rcv.upstream, previous = previous, rcv.cfg.name
    report = run_chain(receivers, iso, holder, bwlimit, out)
    for text in report.warnings:
        warn(text)
    _announce(receivers, iso, report)
    # A host the chain did not serve is sent to directly: from a holder, any failure may be the holder's.
    retry = [r for r in receivers if r.error and (r.relay_problem or holder is not None)]
    for rcv in retry:
        source = holder.cfg.name if holder else "the relay"
        reason = rcv.error.removeprefix(f"{rcv.cfg.name}: {iso.name}: ")
        warn(f"{rcv.cfg.name}: {iso.name} did not arrive through {source} ({reason}); sending it from the controller")
        rcv.error, rcv.relay_problem, rcv.leg, rcv.upstream = None, False, None, "the controller"
        rcv.sha256, rcv.offset = None, 0
        single = run_chain([rcv], iso, None, bwlimit, out)
        for text in single.warnings:
            warn(text)
        _announce([rcv], iso, single)
    return warnings


class Sources:
    """Hosts of this process holding a verified ISO, so later hosts pull it from them (deploy of many hosts).

    ``turn(key)`` lets one host at a time stage a given ISO, so hosts deployed
    in parallel wait for the first copy instead of each taking one from the
    controller.
    """

    def __init__(self):
        self.cond = threading.Condition()
        self.holders: dict = {}  # key -> [(cfg, sha256)]
        self.busy: set = set()

    @contextmanager
    def turn(self, key: str):
        with self.cond:
            while key in self.busy:
                self.cond.wait()
            self.busy.add(key)
        try:
            yield
        finally:
            with self.cond:
                self.busy.discard(key)
                self.cond.notify_all()

    def holding(self, key: str, exclude: str) -> list:
        with self.cond:
            return [(cfg, sha) for cfg, sha in self.holders.get(key, []) if cfg.name != exclude]

    def add(self, key: str, cfg, sha256: str) -> None:
        with self.cond:
            entries = [e for e in self.holders.get(key, []) if e[0].name != cfg.name]
            self.holders[key] = entries + [(cfg, sha256)]


SOURCES = Sources()


def _stage_from_peers(run, me: Receiver, iso: LocalIso, opts: IsoOptions) -> None:
    """Deploy path: pull from a host of this run that has the ISO, else from the controller."""
    connect_options = run.connect_options
    with SOURCES.turn(iso.key):
        for peer_cfg, digest in SOURCES.holding(iso.key, exclude=run.cfg.name):
            if (iso.sha256 and digest != iso.sha256) or connect_options is None:
                continue
            try:
                peer = connect(peer_cfg, connect_options)
            except ConnectError as exc:
                run.say(f"warning: cannot reach {peer_cfg.name} to pull {iso.name} from it: {exc.message}")
                continue
            run.connections += 1
            try:
                deliver([me], iso, opts.bwlimit, run.out, Holder(peer_cfg, peer, digest))
            finally:
                peer.close()
            break
        else:
            deliver([me], iso, opts.bwlimit, run.out)
        if me.sha256:
            SOURCES.add(iso.key, run.cfg, me.sha256)


def stage(run, iso: LocalIso, opts: IsoOptions) -> str:
    """Stage one ISO on the run's host (through the task's relay, a peer, or from the controller)."""
    me = Receiver(run.cfg, run.remote, say=run.say, connect_options=run.connect_options)
    if opts.relay is not None:
        opts.relay.stage(me, iso)
    else:
        _stage_from_peers(run, me, iso, opts)
    if me.error or not me.sha256:
        error = me.error or f"{run.cfg.name}: {iso.name}: not staged"
        raise StepFailed(error if error.startswith(run.cfg.name + ":") else f"{run.cfg.name}: {iso.name}: {error}")
    return me.sha256


class RelayGroup:
    """The hosts of one ``fab iso`` run, meeting per ISO so the controller sends it once down a chain.

    Each host's step declares the ISOs it may stage, then offers itself for
    each (in one global order); when every host that may need an ISO has
    offered, declined or left, the last one to arrive runs the chain for all
    of them, in the order the hosts were given.
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
        with self.cond:
            self.offers.setdefault(key, {})[host] = me
            self.cond.notify_all()
            while True:
                if host in self.served.get(key, set()):
                    return
                if key not in self.running and not self._waiting_for(key):
                    self.running.add(key)
                    batch = [self.offers[key][h] for h in self.order if h in self.offers[key]]
                    break
                self.cond.wait()
        try:
            deliver(batch, iso, self.bwlimit, self.out)
        finally:
            with self.cond:
                self.served.setdefault(key, set()).update(r.cfg.name for r in batch)
                self.offers[key] = {}
                self.running.discard(key)
                self.cond.notify_all()
