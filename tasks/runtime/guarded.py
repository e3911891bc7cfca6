"""The guarded change: how xcatfab changes what could cut a host off.

Moving the host's address onto the bridge (the bridge step) and putting it
back (``teardown --restore-network``) both change the network of the very
SSH session that asks for it. Both go through :func:`apply_guarded`:

1. **Arm the undo first, on the host**: a script that puts the host back
   exactly as it is now, scheduled to run after ``seconds`` — a transient
   systemd timer where systemd is PID 1, a detached sleeper otherwise
   (templates/host/guard.sh.j2) — unless xcatfab cancels it.
2. **Apply detached** (``setsid``), in the same round trip, so losing the
   session half-way cannot leave the host half-changed.
3. **Confirm from the controller**: the same session if it survived, a new
   connection otherwise; the caller's ``verify`` must find nothing left to
   change.
4. **Disarm**, or — when the change cannot be confirmed in time, or the undo
   won the race for its claim — **wait for the undo** and report, in one
   line, what the host looks like after it.

On Ctrl-C (:data:`tasks.runtime.executor.INTERRUPTED`) the confirmation stops;
the report then says that the undo is armed, when it fires, and what to run
to confirm instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

from .errors import StepFailed
from .executor import INTERRUPTED
from .facts import Facts, gather
from .hostrun import HostRun

#: Marker line between the undo script and the change script on the launcher's stdin.
SPLIT = "#@@xcatfab-split@@"
#: Seconds the launcher may take to arm the undo and start the change.
LAUNCH_SECONDS = 20


class Interrupted(StepFailed):
    """Ctrl-C stopped a step; ``note`` says what the host was left with and what to run."""

    def __init__(self, message: str, note: str):
        super().__init__(message)
        self.note = note


@dataclass
class GuardedChange:
    """One guarded change: what it does, how to undo it, and how to tell it worked."""

    #: Guard name on the host (``bridge-rollback``, ``restore-undo``): its files and timer unit.
    guard: str
    #: Step name for messages (``bridge``, ``restore-network``).
    step: str
    undo: str
    apply: str
    seconds: int
    #: What still differs in fresh facts (empty list: confirmed).
    verify: Callable[[Facts], list]
    #: One line on the host's state after the undo ran (from fresh facts).
    after_undo: Callable[[Facts], str]
    #: How to finish after an interruption (``fab -H host bridge``).
    finish_with: str
    fragments: tuple = ("host", "bridge", "guard")


def guard_state(facts: Facts, guard: str) -> dict:
    """The guard fragment's record of one guarded change: ``apply``, ``undone``, ``pending``."""
    return facts.kv(f"guard.{guard}")


def pending(facts: Facts, guard: str) -> bool:
    """True when an undo is still armed (an earlier run was interrupted before confirming)."""
    return guard_state(facts, guard).get("pending") == guard


def apply_guarded(run: HostRun, change: GuardedChange) -> None:
    """Arm, apply detached, confirm (reconnecting), disarm — or await the undo and raise."""
    deadline = time.monotonic() + change.seconds
    run.say(f"{change.step}: undo armed for {change.seconds}s, applying detached")
    launched = None
    try:
        launched = run.remote.template(
            "host/guarded-launch.sh.j2", step=change.step, timeout=LAUNCH_SECONDS,
            stdin=f"{change.undo}\n{SPLIT}\n{change.apply}", name=change.guard,
            state_dir=run.cfg.state_dir, seconds=change.seconds)
    except Exception as exc:  # the session died as the network changed: confirm over a new one
        run.say(f"{change.step}: session lost during the change ({type(exc).__name__}); reconnecting")
    if launched is not None and not launched.ok and "armed" not in launched.out:
        raise StepFailed(f"could not arm the undo: {launched.tail()}")
    problem = _confirm(run, change, deadline)
    if problem is None:
        run.say(f"{change.step}: verified from the controller, undo disarmed")
        return
    _await_undo(run, change, deadline, problem)


def disarm(run: HostRun, guard: str) -> bool:
    """Cancel the armed undo; False when it has already started (it then runs to its end)."""
    result = run.remote.template("host/guarded-disarm.sh.j2", step="disarm", name=guard,
                                 state_dir=run.cfg.state_dir)
    if result.ok:
        return True
    if "too late" in result.err:
        return False
    raise StepFailed(f"could not disarm the undo: {result.tail()}")


def _interrupted(run: HostRun, change: GuardedChange, deadline: float) -> Interrupted:
    fires = time.strftime("%H:%M:%S", time.localtime(time.time() + max(0.0, deadline - time.monotonic())))
    return Interrupted(
        "interrupted before the change was confirmed",
        f"{change.step}: interrupted before the change was confirmed: the host undoes it at about {fires} "
        f"unless it is confirmed first; to keep it, run: {change.finish_with}")


def _confirm(run: HostRun, change: GuardedChange, deadline: float) -> Optional[str]:
    """Verify from the controller, reconnecting if needed; disarm on success. None, or the problem."""
    problem = "no answer from the host"
    while time.monotonic() < deadline - 2:
        if INTERRUPTED.is_set():
            raise _interrupted(run, change, deadline)
        try:
            facts = gather(run.remote, change.fragments, run.context)
        except Exception as exc:  # the session is gone: open a new one
            problem = f"lost the connection ({type(exc).__name__})"
            if not run.replace_connection(deadline):
                break
            continue
        verdict = _verdict(facts, change)
        if verdict == "wait":
            time.sleep(0.2)
            continue
        run.facts.update(facts)
        if verdict:
            return verdict
        return None if disarm(run, change.guard) else "verified, but the undo had started before it was cancelled"
    return problem


def _verdict(facts: Facts, change: GuardedChange) -> str:
    """"wait" while the change runs; "" when confirmed; else what went wrong."""
    state = guard_state(facts, change.guard)
    if state.get("undone"):
        return f"the host undid the change at {state['undone']} before it was confirmed"
    status = state.get("apply", "")
    if status in ("running", ""):
        return "wait"
    if status.startswith("failed"):
        return f"the change {status}"
    diffs = change.verify(facts)
    return "after the change the host still differs: " + "; ".join(diffs) if diffs else ""


def _await_undo(run: HostRun, change: GuardedChange, deadline: float, problem: str) -> None:
    """The change is not confirmed: let the host undo it, then say so (always raises)."""
    run.say(f"{change.step}: {problem}; waiting for the host's undo")
    while time.monotonic() < deadline + 5:
        if INTERRUPTED.is_set():
            raise _interrupted(run, change, deadline)
        time.sleep(1)
    end = deadline + 60
    seen = None  # the last facts read: the host answers, its undo may not have finished
    while time.monotonic() < end:
        if INTERRUPTED.is_set():
            raise _interrupted(run, change, deadline)
        facts = _read_again(run, change, end)
        if facts is not None:
            seen = facts
            undone = guard_state(facts, change.guard).get("undone")
            if undone:  # reported only once the undo has run: mid-undo the host looks half-changed
                raise StepFailed(f"{change.step} change not confirmed ({problem}); the host rolled it back after "
                                 f"{change.seconds}s (at {undone}): {change.after_undo(facts)}")
        time.sleep(2)
    if seen is not None:
        raise StepFailed(f"{change.step} change not confirmed ({problem}); the host answers but its undo had not "
                         f"finished {change.seconds + 60}s later (now: {change.after_undo(seen)}): check "
                         f"{run.cfg.state_dir}/run/{change.guard}-undo.log on it")
    raise StepFailed(f"{change.step} change not confirmed ({problem}) and the host is unreachable "
                     f"{change.seconds + 60}s later: check its console")


def _read_again(run: HostRun, change: GuardedChange, end: float) -> Optional[Facts]:
    """The change's fragments read over a new connection, or None (no connection, or the read failed)."""
    if not run.replace_connection(end):
        return None
    try:
        facts = gather(run.remote, change.fragments, run.context)
    except Exception:  # the connection dropped again: the caller tries once more
        return None
    run.facts.update(facts)
    return facts
