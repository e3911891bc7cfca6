"""Run steps on one host: one connection, facts in one round trip, plan, apply, verify.

:func:`run_host` is the whole life of a host in a deploy (and in each slot
of a rollout):

1. connect once (tasks/ssh.py);
2. read the facts of every selected step in ONE remote script;
3. for each step in order: plan against the facts; nothing to do -> ``ok``;
   otherwise apply, read the facts again (one round trip that both verifies
   this step — its plan must now be empty — and feeds the next steps) and
   report ``changed``, or ``failed`` with one line of why;
4. stop at the first failure (later steps build on earlier ones).

With ``plan_only`` the same code stops after planning: it connects and reads
facts but changes nothing, and lists what each step would change.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

from .bridge import BridgeStep
from .container import ContainerStep
from .docker import DockerStep
from .image import ImageStep
from .inventory import InventoryError
from .iso import IsoStep
from .remote import RemoteError
from .report import CHANGED, FAILED, OK, HostReport, Output, StepResult
from .ssh import ConnectError, ConnectOptions, connect
from .step import Facts, Run, StepFailed, gather
from .xcat import XcatConfigStep, known_stamp

#: Every step in deploy order.
STEP_CLASSES = [DockerStep, ImageStep, BridgeStep, ContainerStep, XcatConfigStep, IsoStep]


def register_step(cls, after: Optional[str] = None) -> None:
    """Add a step class to the deploy order (after the named step, else last)."""
    if any(c.name == cls.name for c in STEP_CLASSES):
        return
    if after is None:
        STEP_CLASSES.append(cls)
    else:
        index = [c.name for c in STEP_CLASSES].index(after)
        STEP_CLASSES.insert(index + 1, cls)


def step_names() -> list[str]:
    return [c.name for c in STEP_CLASSES]


#: Steps that cannot run without the container's static address.
NEEDS_CONTAINER_IP = ("container", "xcat-config")


def check_required(cfgs, names) -> None:
    """Refuse, before any connection, a host that lacks a setting the chosen steps need.

    ``container_ip`` has no sensible default; without this check a deploy
    would install Docker and move the host's address onto the bridge before
    failing at the container step.
    """
    needing = [n for n in names if n in NEEDS_CONTAINER_IP]
    if not needing:
        return
    for cfg in cfgs:
        if cfg.container_ip is None:
            raise InventoryError(cfg.name, "container_ip",
                                 f"not set, and {' and '.join(needing)} need it: set container_ip=ADDR/PREFIX "
                                 f"on the host's inventory line or with --set")


@dataclass
class DeployOptions:
    """Everything a run needs besides the host's own settings."""

    connect: ConnectOptions = field(default_factory=ConnectOptions)
    plan_only: bool = False


def _fragments(steps) -> list[str]:
    wanted = []
    for step in steps:
        for fragment in step.facts:
            if fragment not in wanted:
                wanted.append(fragment)
    return wanted


def fact_context(cfg) -> dict:
    """Template variables of the fact script: the settings plus what the controller remembers."""
    return dict(cfg.as_template_vars(), xcat_known_stamp=known_stamp(cfg))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def run_host(cfg, names, options: Optional[DeployOptions] = None,
             out: Optional[Output] = None) -> HostReport:
    """Run the named steps on ``cfg``'s host; never raises for host failures."""
    options = options or DeployOptions()
    report = HostReport(cfg.name)
    steps = [cls() for cls in STEP_CLASSES if cls.name in names]
    try:
        remote = connect(cfg, options.connect)
    except ConnectError as exc:
        result = report.add(StepResult("connect", FAILED, error=exc.message))
        if out is not None:
            out.result(cfg.name, result)
        report.finished = time.monotonic()
        return report
    run = Run(cfg, remote, Facts(), out=out, options=options, plan_only=options.plan_only,
              reconnect=lambda: connect(cfg, options.connect))
    run.shared["connections"] = 1
    context = run.context = fact_context(cfg)
    commands = 0
    try:
        started = time.monotonic()
        try:
            run.facts = gather(run.remote, _fragments(steps), context)
        except Exception as exc:  # StepFailed, RemoteError, a dropped connection, a timeout
            result = report.add(StepResult("facts", FAILED, error=_one_line(exc)))
            if out is not None:
                out.result(cfg.name, result)
            return report
        report.add(StepResult("facts", OK, seconds=time.monotonic() - started))
        for index, step in enumerate(steps):
            result = _run_step(run, step, steps[index:], context)
            report.add(result)
            if out is not None:
                out.result(cfg.name, result)
            if result.status == FAILED and not options.plan_only:
                break
    finally:
        commands = run.remote.commands
        try:
            run.remote.close()
        except Exception:
            pass
        report.commands = commands + run.shared.get("commands_before_reconnect", 0)
        report.connections = run.shared.get("connections", 1)
        report.finished = time.monotonic()
    return report


def _run_step(run, step, remaining, context) -> StepResult:
    started = time.monotonic()

    def done(status, changes=(), error=None):
        return StepResult(step.name, status, list(changes), error, time.monotonic() - started)

    try:
        actions = step.plan(run)
        if not actions:
            if not run.plan_only:
                step.remember(run)
            return done(OK)
        summaries = step.describe(actions)
        if run.plan_only:
            # A "blocked" action is a note (the step can only be judged after earlier ones run).
            return done(CHANGED, [s if a.kind == "blocked" else "would " + s
                                  for a, s in zip(actions, summaries)])
        step.apply(run, actions)
        run.facts.update(gather(run.remote, _fragments(remaining), context))
        leftover = step.plan(run)
        if leftover:
            return done(FAILED, summaries, "still differs after apply: "
                        + "; ".join(step.describe(leftover)))
        step.remember(run)
        return done(CHANGED, summaries)
    except (StepFailed, RemoteError) as exc:
        message = exc.message if isinstance(exc, RemoteError) else _one_line(exc)
        return done(FAILED, error=message)
    except Exception as exc:  # paramiko/socket errors mid-step: one line, never a traceback
        return done(FAILED, error=f"{type(exc).__name__}: {_one_line(exc)}")
