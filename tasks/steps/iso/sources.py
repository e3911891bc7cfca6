"""What the ``iso`` step needs on every run, without the transfer machinery.

:class:`IsoOptions` (what the ``iso`` task asks of a host's step) and
:data:`SOURCES` (the hosts of this process holding a verified ISO) are read
by every deploy, converged or not; the chain, its legs and the relay
programs (:mod:`.delivery`, :mod:`.chain`, :mod:`.legs`) are loaded only
when something is staged (start-up time: a converged ``fab deploy`` does
not import them).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Optional

from ...runtime.executor import INTERRUPTED


@dataclass
class IsoOptions:
    """What the ``iso`` task adds to a host's run (deploy uses the defaults)."""

    isos: Optional[list] = None  # LocalIso list; None: the inventory's
    copycds: bool = True
    bwlimit: Optional[float] = None  # MiB/s the controller sends at most
    relay: Any = None  # a delivery.RelayGroup


class Sources:
    """Hosts of this process holding a verified ISO, so later hosts pull it from them.

    Filled by hosts that staged an ISO and by hosts found holding it (a
    rerun: :meth:`tasks.steps.iso.step.IsoStep.remember`). ``turn(key)`` lets
    one host at a time stage a given ISO outside a relay group, so hosts
    deployed in parallel wait for the first copy instead of each taking one
    from the controller.
    """

    def __init__(self):
        self.cond = threading.Condition()
        self.holders: dict = {}  # key -> [(cfg, sha256)]
        self.busy: set = set()

    @contextmanager
    def turn(self, key: str):
        with self.cond:
            while key in self.busy and not INTERRUPTED.is_set():
                self.cond.wait(1.0)
            self.busy.add(key)
        try:
            yield
        finally:
            with self.cond:
                self.busy.discard(key)
                self.cond.notify_all()

    def holding(self, key: str, exclude) -> list:
        exclude = {exclude} if isinstance(exclude, str) else set(exclude)
        with self.cond:
            return [(cfg, sha) for cfg, sha in self.holders.get(key, []) if cfg.name not in exclude]

    def add(self, key: str, cfg, sha256: str) -> None:
        with self.cond:
            entries = [e for e in self.holders.get(key, []) if e[0].name != cfg.name]
            self.holders[key] = entries + [(cfg, sha256)]

    def clear(self) -> None:
        with self.cond:
            self.holders.clear()


SOURCES = Sources()
