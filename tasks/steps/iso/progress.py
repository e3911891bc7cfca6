"""Live progress of ISO transfers: a rich bar per host and ISO on a terminal, else a plain line."""

from __future__ import annotations

import os
import sys
import threading
import time

from .local import MIB, mib


class Board:
    """Live progress per host and ISO: rich bars on a terminal, a plain line every few seconds otherwise."""

    PLAIN_EVERY = 5.0

    def __init__(self):
        self.lock = threading.Lock()
        self.users = 0
        self.progress = None
        self.out = None
        self.plain_next: dict = {}

    @staticmethod
    def live() -> bool:
        return sys.stdout.isatty() and not os.environ.get("XCATFAB_NO_PROGRESS")

    def start(self, out) -> None:
        with self.lock:
            self.out = self.out or out
            self.users += 1
            if self.users == 1 and self.live():
                import rich.progress as bars

                self.progress = bars.Progress(bars.TextColumn("{task.description}"), bars.BarColumn(),
                                              bars.DownloadColumn(binary_units=True), bars.TransferSpeedColumn(),
                                              bars.TimeRemainingColumn(), transient=True)
                self.progress.start()

    def stop(self) -> None:
        with self.lock:
            self.users -= 1
            if self.users == 0 and self.progress is not None:
                self.progress.stop()
                self.progress = None

    def track(self, host: str, name: str, size: int, start: int):
        """A callback taking the host's position in the file (bytes)."""
        started, label = time.monotonic(), f"{host}: {name}"
        task = self.progress.add_task(label, total=size, completed=start) if self.progress else None

        def update(position: int) -> None:
            if task is not None:
                self.progress.update(task, completed=position)
                return
            # Every few seconds, and once at the end.
            now, due = time.monotonic(), self.plain_next.get(label, started + self.PLAIN_EVERY)
            if due is None or (position < size and now < due):
                return
            self.plain_next[label] = now + self.PLAIN_EVERY if position < size else None
            rate = (position - start) / max(now - started, 1e-6)
            eta = (size - position) / rate if rate > 0 else 0
            text = (f"iso: {name} {mib(position)} of {mib(size)} ({position * 100 // size}%) "
                    f"{rate / MIB:.0f} MiB/s ETA {eta:.0f}s")
            if self.out is not None:
                self.out.line(host, text)

        return update


BOARD = Board()
