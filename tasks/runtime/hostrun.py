"""One host's run: its settings, its connection, its facts, and what it has done.

A :class:`HostRun` is what every step and day-2 operation works with: it
holds the open :class:`~tasks.runtime.remote.Remote`, the facts read so far,
and the output; it replaces the connection when a network change cut it
(:meth:`HostRun.replace_connection`), keeping the run's connection and command
counts right for the recap.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .facts import Facts


@dataclass
class HostRun:
    """One host's run: settings, connection, facts and shared results."""

    cfg: Any
    remote: Any
    facts: Facts = field(default_factory=Facts)
    out: Any = None
    plan_only: bool = False
    show_diff: bool = False
    #: Values steps hand to later steps in the same run.
    shared: dict = field(default_factory=dict)
    #: Opens a fresh connection to the same host (a callable returning a Remote).
    reconnect: Optional[Callable[[], Any]] = None
    #: Template variables of the fact script.
    context: dict = field(default_factory=dict)
    #: How the run connected (for steps that open more connections: ISO transfers).
    connect_options: Any = None
    #: Per-step options a task gives its steps (``iso``: the ISOs of ``fab iso``), by step name.
    step_options: dict = field(default_factory=dict)
    connections: int = 1
    #: Commands run over connections that have been replaced.
    earlier_commands: int = 0

    def say(self, text: str) -> None:
        """A progress line for this host (prefixed with its name)."""
        if self.out is not None:
            self.out.line(self.cfg.name, text)

    @property
    def commands(self) -> int:
        """Remote commands this run has made, over every connection it used."""
        return self.earlier_commands + self.remote.commands

    def replace_connection(self, deadline: float) -> bool:
        """Open a new connection (retrying) and use it from now on; False once
        ``deadline`` (a time.monotonic() value) passes."""
        while time.monotonic() < deadline:
            try:
                fresh = self.reconnect()
            except Exception:  # the host is still unreachable: try again
                time.sleep(1)
                continue
            self.earlier_commands += self.remote.commands
            self.close()
            self.remote = fresh
            self.connections += 1
            return True
        return False

    def close(self) -> None:
        """Close the connection; a connection that is already gone is fine."""
        try:
            self.remote.close()
        except Exception:
            pass
