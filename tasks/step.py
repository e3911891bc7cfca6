"""What every step shares: facts in one round trip, plans, actions.

A step (docker, image, bridge, container, xcat, iso) is a class with:

* ``facts``: the fact fragments it reads (``templates/host/facts/<name>.sh.j2``);
* ``plan(run)``: a pure function from the host's facts and settings to a list
  of :class:`Action` (empty when converged);
* ``apply(run, actions)``: makes the changes.

:func:`gather` runs the fragments of every step of a run as ONE remote
script, so a converged host costs one round trip; the output is split into
named sections (``@@xcatfab:<section>`` marker lines) that steps parse.
After a step applies, facts are gathered again: that second read both
verifies the step (its plan must now be empty) and feeds the next steps.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from .templating import render

MARKER = "@@xcatfab:"

#: Fact fragments in the order they run; later fragments may rely on earlier ones.
FRAGMENTS = ("host", "docker", "bridge", "container", "iso")


@dataclass
class Action:
    """One change a step will make; ``summary`` is what ``--plan`` prints."""

    kind: str
    summary: str
    data: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return self.summary


class StepFailed(Exception):
    """A step could not do its job; the message is one line for the recap."""


class Facts(dict):
    """Raw fact sections by name, with JSON helpers."""

    def text(self, name: str) -> str:
        return self.get(name, "")

    def lines(self, name: str) -> list[str]:
        return [line for line in self.text(name).splitlines() if line.strip()]

    def json(self, name: str, default: Any = None) -> Any:
        text = self.text(name).strip()
        if not text:
            return default
        try:
            return json.loads(text)
        except ValueError:
            return default

    def kv(self, name: str) -> dict:
        """``key=value`` lines of a section as a dict."""
        result = {}
        for line in self.lines(name):
            key, sep, value = line.partition("=")
            if sep:
                result[key.strip()] = value.strip()
        return result


def parse_sections(output: str) -> Facts:
    """Split fact-script output on marker lines into :class:`Facts`."""
    facts, name, buf = Facts(), None, []
    for line in output.splitlines():
        if line.startswith(MARKER):
            if name is not None:
                facts[name] = "\n".join(buf)
            name, buf = line[len(MARKER):].strip(), []
        elif name is not None:
            buf.append(line)
    if name is not None:
        facts[name] = "\n".join(buf)
    return facts


def fact_script(fragments, context: dict) -> str:
    """The one remote script that reads every fragment in ``fragments``."""
    wanted = [f for f in FRAGMENTS if f in set(fragments)]
    return render("host/facts.sh.j2", fragments=wanted, **context)


def gather(remote, fragments, context: dict) -> Facts:
    """Run the fact script on ``remote`` (one round trip) and parse it."""
    result = remote.run(fact_script(fragments, context), step="facts")
    facts = parse_sections(result.out)
    if "end" not in facts:
        raise StepFailed(f"fact script did not finish (exit {result.rc}): {result.tail()}")
    return facts


class Step:
    """Base class: subclasses set ``name`` and ``facts`` and implement plan/apply."""

    name = "step"
    facts: tuple = ("host",)
    #: True when the step's apply may drop the SSH connection (it reconnects itself).
    reconnects = False

    def plan(self, run) -> list[Action]:
        raise NotImplementedError

    def apply(self, run, actions: list[Action]) -> None:
        raise NotImplementedError

    def describe(self, actions: list[Action]) -> list[str]:
        return [a.summary for a in actions]

    def remember(self, run) -> None:
        """Called after the step ended converged (ok or verified changed); default: nothing."""


@dataclass
class Run:
    """One host's run: its settings, connection, facts and shared results."""

    cfg: Any
    remote: Any
    facts: Facts
    out: Any = None
    options: Any = None
    plan_only: bool = False
    shared: dict = field(default_factory=dict)
    reconnect: Optional[Any] = None  # callable returning a fresh Remote
    context: dict = field(default_factory=dict)  # template variables of the fact script

    def say(self, text: str) -> None:
        if self.out is not None:
            self.out.line(self.cfg.name, text)

    def replace_connection(self, deadline: float) -> bool:
        """Open a new connection (retrying) and use it from now on; False once
        ``deadline`` (a time.monotonic() value) passes. The old connection's
        command count is kept, so the run's totals stay right."""
        while time.monotonic() < deadline:
            try:
                fresh = self.reconnect()
            except Exception:  # the host is still unreachable: try again
                time.sleep(1)
                continue
            self.shared["commands_before_reconnect"] = (
                self.shared.get("commands_before_reconnect", 0) + self.remote.commands)
            try:
                self.remote.close()
            except Exception:
                pass
            self.remote = fresh
            self.shared["connections"] = self.shared.get("connections", 1) + 1
            return True
        return False
