"""Run steps on one host: one connection, facts in one round trip, plan, apply, verify.

:func:`run_host` is the whole life of a host in a deploy (and in each slot
of a rollout):

1. connect once (:mod:`tasks.runtime.ssh`);
2. read the facts of every selected step in ONE remote script;
3. for each step in order: plan against the facts; nothing to do -> ``ok``;
   otherwise apply, read the facts again (one round trip that both verifies
   this step — its plan must now be empty — and feeds the next steps) and
   report ``changed``, or ``failed`` with one line of why;
4. stop at the first failure (later steps build on earlier ones), or at
   Ctrl-C, saying which steps were not run.

With ``plan_only`` the same code stops after planning: it connects and reads
facts but changes nothing, and lists what each step would change.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

from ..runtime.errors import BadInput, RemoteError, StepFailed, one_line
from ..runtime.executor import INTERRUPTED
from ..runtime.facts import gather, ordered
from ..runtime.guarded import Interrupted
from ..runtime.hostrun import HostRun
from ..runtime.report import CHANGED, FAILED, OK, HostReport, Output, StepResult
from ..runtime.ssh import ConnectError, ConnectOptions, connect
from ..steps.base import BLOCKED
from ..steps.bridge import BridgeStep
from ..steps.container import ContainerStep
from ..steps.docker import DockerStep
from ..steps.image import ImageStep
from ..steps.iso import IsoStep
from ..steps.xcat import XcatConfigStep, known_stamp

#: Every step in deploy order.
STEP_CLASSES = (DockerStep, ImageStep, BridgeStep, ContainerStep, XcatConfigStep, IsoStep)

#: Steps that cannot run without the container's static address.
NEEDS_CONTAINER_IP = ("container", "xcat-config")

#: ``--verify``: ``quick`` trusts xcatfab's records (the xCAT table stamp kept on the
#: controller, the ISO sums recorded on the host at staging); ``deep`` re-reads xCAT's
#: tables and re-hashes every recorded ISO on the host, in the same one fact round trip.
VERIFY_MODES = ("quick", "deep")


def parse_verify(value) -> str:
    """``--verify`` as given (None: the default, quick) -> ``quick`` or ``deep``; else bad input."""
    if value is None or value == "":
        return "quick"
    text = str(value).strip().lower()
    if text not in VERIFY_MODES:
        raise BadInput("--verify", None, f"{value!r} is not one of: {', '.join(VERIFY_MODES)}")
    return text


def step_names() -> list[str]:
    return [c.name for c in STEP_CLASSES]


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
            raise BadInput(cfg.name, "container_ip",
                           f"not set, and {' and '.join(needing)} need it: set container_ip=ADDR/PREFIX "
                           f"on the host's inventory line or with --set")


@dataclass
class DeployOptions:
    """Everything a run needs besides the host's own settings."""

    connect: ConnectOptions = field(default_factory=ConnectOptions)
    plan_only: bool = False
    #: host name -> {step name: options}: what a task asks of its steps on each host.
    step_options: dict = field(default_factory=dict)
    #: ``--diff``: report the before/after of every file a step writes.
    show_diff: bool = False
    #: ``--verify``: ``quick`` (trust the records) or ``deep`` (re-read tables, re-hash ISOs).
    verify: str = "quick"


def fragments_of(steps) -> list[str]:
    """Every fact fragment the steps read, in run order."""
    return ordered(fragment for step in steps for fragment in step.fragments)


def fact_context(cfg, verify: str = "quick") -> dict:
    """Template variables of the fact script: the settings plus what the controller remembers.

    ``verify="deep"`` passes no table stamp (so xCAT's tables are read) and asks the
    ``iso`` fragment to hash every ISO it holds a record of.
    """
    deep = verify == "deep"
    return dict(cfg.as_template_vars(), xcat_known_stamp="" if deep else known_stamp(cfg), iso_deep=deep,
                container_address=str(cfg.container_ip.ip) if cfg.container_ip else "")


def open_run(cfg, options: DeployOptions, out: Optional[Output], report: HostReport) -> Optional[HostRun]:
    """Connect to ``cfg``'s host (a failure is reported as the ``connect`` step and gives None)."""
    try:
        remote = connect(cfg, options.connect)
    except ConnectError as exc:
        _report(report, out, StepResult("connect", FAILED, error=exc.message))
        return None
    return HostRun(cfg, remote, out=out, plan_only=options.plan_only, show_diff=options.show_diff,
                   reconnect=lambda: connect(cfg, options.connect), context=fact_context(cfg, options.verify),
                   connect_options=options.connect, step_options=options.step_options.get(cfg.name, {}))


def _report(report: HostReport, out: Optional[Output], result: StepResult) -> StepResult:
    report.add(result)
    if out is not None:
        out.result(report.host, result)
    return result


def finish(run: Optional[HostRun], report: HostReport) -> HostReport:
    """Close the run's connection and record what it cost."""
    if run is not None:
        report.commands, report.connections = run.commands, run.connections
        run.close()
    report.finished = time.monotonic()
    return report


def run_host(cfg, names, options: Optional[DeployOptions] = None, out: Optional[Output] = None) -> HostReport:
    """Run the named steps on ``cfg``'s host; never raises for host failures."""
    options = options or DeployOptions()
    report = HostReport(cfg.name)
    steps = [cls() for cls in STEP_CLASSES if cls.name in names]
    run = open_run(cfg, options, out, report)
    try:
        if run is not None and _read_facts(run, steps, report, out) and _preflight(run, steps, report, out):
            _run_steps(run, steps, report, out)
    finally:
        finish(run, report)
    return report


def _read_facts(run: HostRun, steps, report: HostReport, out) -> bool:
    started = time.monotonic()
    try:
        run.facts = gather(run.remote, fragments_of(steps), run.context)
    except Exception as exc:  # StepFailed, RemoteError, a dropped connection, a timeout
        _report(report, out, StepResult("facts", FAILED, error=one_line(exc)))
        return False
    report.add(StepResult("facts", OK, seconds=time.monotonic() - started))
    return True


def _preflight(run: HostRun, steps, report: HostReport, out) -> bool:
    """Every step's own refusals, before any step changes anything (a refused host runs no step)."""
    for step in steps:
        try:
            step.preflight(run)
        except StepFailed as exc:
            _report(report, out, StepResult(step.name, FAILED, error=one_line(exc)))
            return False
    return True


def _run_steps(run: HostRun, steps, report: HostReport, out) -> None:
    for index, step in enumerate(steps):
        if INTERRUPTED.is_set() and not run.plan_only:
            rest = ", ".join(s.name for s in steps[index:])
            report.notes.append(f"interrupted before step {step.name}: not run: {rest}; "
                                f"to finish, run: fab -H {run.cfg.name} deploy")
            return
        result = _report(report, out, run_step(run, step, steps[index:], report))
        if result.status == FAILED and not run.plan_only:
            return


def run_step(run: HostRun, step, remaining, report: HostReport) -> StepResult:
    """Plan one step and, unless planning only, apply and verify it."""
    started = time.monotonic()

    actions: list = []

    def done(status, changes=(), error=None):
        diffs = [d for a in actions for d in a.diffs] if run.show_diff else []
        return StepResult(step.name, status, list(changes), error, time.monotonic() - started, diffs)

    try:
        actions = step.plan(run)
        if not actions:
            if not run.plan_only:
                step.remember(run)
            return done(OK)
        summaries = step.describe(actions)
        if run.plan_only:
            # A "blocked" action is a note (the step can only be judged after earlier ones run).
            return done(CHANGED, [s if a.kind == BLOCKED else "would " + s for a, s in zip(actions, summaries)])
        step.apply(run, actions)
        run.facts.update(gather(run.remote, fragments_of(remaining), run.context))
        leftover = step.plan(run)
        if leftover:
            return done(FAILED, summaries, "still differs after apply: " + "; ".join(step.describe(leftover)))
        step.remember(run)
        return done(CHANGED, summaries)
    except Interrupted as exc:
        report.notes.append(exc.note)
        return done(FAILED, error=str(exc))
    except (StepFailed, RemoteError) as exc:
        return done(FAILED, error=one_line(exc))
    except Exception as exc:  # paramiko/socket errors mid-step: one line, never a traceback
        return done(FAILED, error=f"{type(exc).__name__}: {one_line(exc)}")
