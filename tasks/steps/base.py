"""What every step shares: actions, and the plan/apply contract.

A step (docker, image, bridge, container, xcat-config, iso) is a class with:

* ``name`` — how the recap and ``--plan`` call it;
* ``fragments`` — the fact fragments it reads (``templates/host/facts/<name>.sh.j2``,
  parsed in the step's own module);
* ``plan(run)`` — a pure function from the host's facts and settings to a list
  of :class:`Action` (empty when converged);
* ``apply(run, actions)`` — makes the changes;
* ``remember(run)`` — optional: record, on the controller, what a converged
  host looked like (see the xcat-config step's table stamp).

:func:`tasks.ops.deploy.run_host` runs the life cycle: facts in one round
trip, plan, apply, re-read the facts and re-plan to verify.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ..runtime.errors import StepFailed

__all__ = ["Action", "Step", "StepFailed", "blocked"]


@dataclass
class Action:
    """One change a step will make; ``summary`` is what ``--plan`` prints."""

    kind: str
    summary: str
    data: dict = field(default_factory=dict)
    #: For ``--diff``: (path on the host, its text now, the text xcatfab writes) of each file it writes.
    diffs: list = field(default_factory=list)

    def __str__(self) -> str:
        return self.summary


#: The kind of an action that is only a note: the step cannot be judged before earlier steps run.
BLOCKED = "blocked"


def blocked(why: str) -> Action:
    """A note for ``--plan`` (and a failure for a real run): the step cannot proceed yet."""
    return Action(BLOCKED, why)


def refuse_blocked(actions: list) -> None:
    """Raise the note of a blocked plan as the step's failure."""
    for action in actions:
        if action.kind == BLOCKED:
            raise StepFailed(action.summary)


class Step:
    """Base class: subclasses set ``name`` and ``fragments`` and implement plan/apply."""

    name = "step"
    fragments: tuple = ("host",)

    def plan(self, run) -> list[Action]:
        raise NotImplementedError

    def apply(self, run, actions: list[Action]) -> None:
        raise NotImplementedError

    def preflight(self, run) -> None:
        """Called for every step of a run once the facts are read, before any step changes
        anything: raise :class:`StepFailed` to refuse the host outright; default: nothing."""

    def describe(self, actions: list[Action]) -> list[str]:
        return [a.summary for a in actions]

    def remember(self, run) -> None:
        """Called after the step ended converged (ok or verified changed); default: nothing."""


def sha256_text(text: str) -> str:
    """The sha256 of ``text`` as the fact scripts print it (``sha256sum`` of the file)."""
    return hashlib.sha256(text.encode()).hexdigest()


def boot_unit_needed(state: dict, unit: str, script: str) -> bool:
    """On a systemd host (``state``: a fact section with ``systemd``, ``enabled``, ``unit_sha``,
    ``script_sha``): a unit that puts something back at boot is missing, disabled or not ours now."""
    if state.get("systemd") != "yes":
        return False
    return (state.get("enabled") != "yes" or state.get("unit_sha") != sha256_text(unit)
            or state.get("script_sha") != sha256_text(script))
