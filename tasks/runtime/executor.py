"""The one host executor: every task that takes several hosts runs them here.

Fabric runs ``fab -H h1,h2 deploy`` one host after the other, stops at the
first failed host, and has no batches, threshold or recap (fabric-and-peers.md
§1-2). Every xcatfab task that takes hosts (``deploy`` and its steps,
``rollout``, ``iso``, ``xcat``, ``node``, ``status``, ``teardown``) runs them
through :func:`run_hosts` instead, with Ansible's semantics (ibid. §4):

* **Batches** (``--serial``) as Ansible's ``serial``: a number of hosts, a
  percentage of the selected hosts (rounded down, at least 1), or a comma
  list of those whose last item repeats (``1,25%``: a canary host, then a
  quarter at a time). Default: every selected host in one batch.
* **Within a batch** the hosts run in parallel in a bounded thread pool
  (``--forks``, default :data:`DEFAULT_FORKS`): each slot holds one SSH
  connection. A host that is down or fails mid-run never stops the others:
  ``run_one`` reports failures instead of raising them (and a bug that
  raises fails that host only).
* **Between batches**, as Ansible's ``max_fail_percentage``, failures are
  counted per batch and the threshold must be *exceeded*, not met (4 hosts,
  ``--max-fail-percent 25``: one failure goes on, two stop). A batch in which
  every host failed stops the run even without ``--max-fail-percent``. Later
  batches are then not started, and the recap names them NOT ATTEMPTED.
* **Ctrl-C**: no further host starts; the running ones are told to stop at
  their next safe point, and each host's report says what state it was left
  in and what to run to finish.
* **One exit rule** (:meth:`HostsResult.exit_code`): 130 after Ctrl-C, else
  the worst host's code: 0 ok, 1 failed or not attempted (``xcat`` passes its
  command's status through). Bad input never gets here: it exits 2 first.
"""

from __future__ import annotations

import concurrent.futures
import re
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Optional, Sequence, Union

from .errors import EXIT_INTERRUPTED, BadInput
from .report import FAILED, HostReport, Output, StepResult, print_recap
from .secret import mask_in

#: Pool size when --forks is not given. Ansible's default is 5; xcatfab's
#: slots mostly wait on remote commands (image builds, apt), so a few more
#: keep a batch of ten docker hosts going at once without loading the controller.
DEFAULT_FORKS = 10
#: Upper bound for --forks: each slot is a thread with an open SSH connection.
MAX_FORKS = 100

SerialItem = Union[int, str]  # a host count, or "N%"


# --------------------------------------------------------------------------- pure logic


def parse_serial(text: Optional[str]) -> tuple:
    """``--serial`` -> a tuple of host counts (int) and percentages ("30%"); () = one batch.

    Accepts ``N``, ``N%`` or a comma list of those (Ansible's ``serial: [1, 5, "20%"]``).
    Raises :class:`BadInput` (bad input) for anything else, including 0 and 0%.
    """
    if text is None or str(text).strip() == "":
        return ()
    items = []
    for raw in str(text).split(","):
        item = raw.strip()
        match = re.fullmatch(r"([0-9]+)(%?)", item)
        if not match:
            raise BadInput("--serial", None,
                                 f"{item!r} is not a host count or a percentage (e.g. 2, 30%, 1,25%)")
        number = int(match.group(1))
        if match.group(2):
            if not 1 <= number <= 100:
                raise BadInput("--serial", None, f"{item!r}: a percentage must be 1% to 100%")
            items.append(f"{number}%")
        else:
            if number < 1:
                raise BadInput("--serial", None, f"{item!r}: a batch needs at least one host")
            items.append(number)
    return tuple(items)


def batch_size(item: SerialItem, total: int) -> int:
    """Hosts in a batch for one ``--serial`` item: Ansible's ``pct_to_int``.

    A percentage is of ``total`` (all selected hosts, not those left),
    rounded down, and at least 1.
    """
    if isinstance(item, str) and item.endswith("%"):
        return int(Fraction(int(item[:-1]), 100) * total) or 1
    return int(item)


def make_batches(hosts: Sequence, serial: Sequence[SerialItem] = ()) -> list[list]:
    """Split ``hosts`` (in order) into batches the way Ansible's ``serial`` does.

    Each batch takes the next item of ``serial`` (the last item repeats);
    no items: one batch of every host.
    """
    hosts = list(hosts)
    if not serial:
        return [hosts] if hosts else []
    batches, index, total = [], 0, len(hosts)
    while hosts:
        size = batch_size(serial[min(index, len(serial) - 1)], total)
        batches.append(hosts[:size])
        hosts = hosts[size:]
        index += 1
    return batches


def parse_percent(text: Optional[str]) -> Optional[Fraction]:
    """``--max-fail-percent`` -> an exact Fraction in [0, 100], or None when not given."""
    if text is None or str(text).strip() == "":
        return None
    item = str(text).strip()
    item = item[:-1] if item.endswith("%") else item
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", item):
        raise BadInput("--max-fail-percent", None, f"{text!r} is not a percentage from 0 to 100")
    value = Fraction(item)
    if value > 100:
        raise BadInput("--max-fail-percent", None, f"{text!r} is more than 100")
    return value


def parse_forks(text) -> int:
    """``--forks`` -> the pool size bound (1 to :data:`MAX_FORKS`)."""
    if text is None or str(text).strip() == "":
        return DEFAULT_FORKS
    item = str(text).strip()
    if not re.fullmatch(r"[0-9]+", item) or not 1 <= int(item) <= MAX_FORKS:
        raise BadInput("--forks", None, f"{text!r} is not a number from 1 to {MAX_FORKS}")
    return int(item)


def threshold_exceeded(failed: int, size: int, max_fail: Optional[Fraction]) -> bool:
    """Ansible's test: more than ``max_fail`` percent of the batch failed (meeting it is fine)."""
    if max_fail is None or size == 0:
        return False
    return failed * 100 > max_fail * size


def stop_reason(failed: int, size: int, max_fail: Optional[Fraction], number: int) -> Optional[str]:
    """Why batch ``number``'s failures stop the rollout, or None to go on.

    Two rules, both Ansible's: the threshold is exceeded, or every host of the
    batch failed (this one holds even without ``--max-fail-percent``).
    """
    if size and threshold_exceeded(failed, size, max_fail):
        share = Fraction(failed * 100, size)
        return (f"{failed} of {size} host(s) failed in batch {number} "
                f"({_percent(share)}, more than --max-fail-percent {_percent(max_fail)})")
    if size and failed == size:
        return f"every host of batch {number} failed ({failed} of {size})"
    return None


def _percent(value: Fraction) -> str:
    number = float(value)
    return f"{number:.0f}%" if number == int(number) else f"{number:.1f}%"


def pool_size(batch_len: int, forks: int) -> int:
    """Threads for one batch: the batch's size, bounded by ``forks``."""
    return max(1, min(batch_len, forks))


# --------------------------------------------------------------------------- the engine


@dataclass
class HostsResult:
    """What a run over many hosts did: one report per attempted host, and the hosts it never started."""

    batches: list
    reports: list = field(default_factory=list)  # HostReport, in host order
    not_attempted: list = field(default_factory=list)  # host names
    stop_reason: Optional[str] = None
    interrupted: bool = False

    @property
    def failed(self) -> bool:
        """True when any host failed or was not attempted."""
        return bool(self.not_attempted) or any(r.failed for r in self.reports)

    def exit_code(self) -> int:
        """The run's exit status: 130 after Ctrl-C, else the worst host's (not attempted: 1)."""
        if self.interrupted:
            return EXIT_INTERRUPTED
        codes = [r.exit_code for r in self.reports] + [1 for _ in self.not_attempted]
        return max(codes, default=0)


def _crashed(name: str, exc: BaseException, secrets: Sequence, task: str) -> HostReport:
    """A report for a host whose run raised (a bug, not a host failure): one line, masked."""
    report = HostReport(name)
    text = str(exc).strip().splitlines()
    message = mask_in(f"{type(exc).__name__}: {text[0] if text else ''}", secrets)
    report.add(StepResult(task, FAILED, error=f"internal error: {message}"))
    report.finished = time.monotonic()
    return report


class _Batch:
    """One batch in a bounded pool: collects each host's report as it finishes."""

    def __init__(self, hosts: list, run_one: Callable, name: Callable, forks: int, out: Output, secrets,
                 announce: bool = True, task: str = "run"):
        self.hosts, self.run_one, self.name, self.out, self.secrets = hosts, run_one, name, out, secrets
        self.announce, self.task = announce, task
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=pool_size(len(hosts), forks),
                                                          thread_name_prefix="xcatfab-host")
        self.futures = {self.pool.submit(run_one, host): host for host in hosts}
        self.reports: dict = {}

    def _take(self, future, host) -> None:
        try:
            report = future.result()
        except Exception as exc:  # a bug in a step: this host fails, the others go on
            report = _crashed(self.name(host), exc, self.secrets, self.task)
        self.reports[self.name(host)] = report

    def wait(self) -> dict:
        """Every host's report, as they finish (printing a line for each)."""
        for future in concurrent.futures.as_completed(self.futures):
            self._take(future, self.futures[future])
            if self.announce:
                _say_done(self.out, self.reports[self.name(self.futures[future])])
        self.pool.shutdown(wait=True)
        return self.reports

    def interrupt(self) -> dict:
        """Ctrl-C: start nothing more, let the running hosts reach their end, keep their reports."""
        self.out.line(None, "interrupted: no more hosts start; waiting for the running ones to stop")
        INTERRUPTED.set()
        try:
            self.pool.shutdown(wait=True, cancel_futures=True)
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting
            pass
        for future, host in self.futures.items():
            if future.done() and not future.cancelled() and self.name(host) not in self.reports:
                self._take(future, host)
        return self.reports


#: Set on Ctrl-C: long host-side waits check it and stop at their next safe point.
INTERRUPTED = threading.Event()


def run_hosts(hosts: Sequence, run_one: Callable[[object], HostReport], *,
              serial: Sequence[SerialItem] = (), max_fail: Optional[Fraction] = None,
              forks: int = DEFAULT_FORKS, out: Optional[Output] = None,
              name: Callable[[object], str] = lambda h: h.name, secrets: Sequence = (),
              single_batch: bool = False, announce: bool = True, task: str = "run") -> HostsResult:
    """Run ``run_one(host)`` for every host, batch after batch, each batch in a bounded pool.

    ``run_one`` must report host failures in its :class:`HostReport` (an
    exception is turned into a failed report, so one host's bug cannot end
    the others' runs). After each batch, :func:`stop_reason` decides whether
    the next batch starts. ``single_batch`` runs every host in one pool
    whatever ``serial`` says (for ``--plan``, which changes nothing).
    ``announce`` prints a line as each host finishes (not for ``status``,
    whose output is one table, nor ``xcat``, whose output is the command's).
    ``task`` names the step of a host whose run raised (a bug) in the recap.
    """
    out = out or Output()
    INTERRUPTED.clear()
    batches = make_batches(list(hosts), () if single_batch else serial)
    result = HostsResult(batches=[[name(h) for h in b] for b in batches])
    by_name = _run_batches(batches, lambda batch: _Batch(batch, run_one, name, forks, out, secrets, announce, task),
                           name, max_fail, out, result)
    result.reports = [by_name[name(h)] for h in hosts if name(h) in by_name]
    result.not_attempted = [name(h) for h in hosts if name(h) not in by_name]
    return result


def _run_batches(batches: list, start: Callable, name: Callable, max_fail, out: Output, result: HostsResult) -> dict:
    """Run the batches one after the other until one stops the run; every attempted host's report by name."""
    by_name: dict = {}
    for number, batch in enumerate(batches, 1):
        if len(batches) > 1:
            out.line(None, f"BATCH {number}/{len(batches)}: {', '.join(name(h) for h in batch)}")
        if not _one_batch(start(batch), by_name, result):
            break
        failed = sum(1 for h in batch if by_name[name(h)].failed)
        result.stop_reason = stop_reason(failed, len(batch), max_fail, number)
        if result.stop_reason:
            break
    return by_name


def _one_batch(running: "_Batch", by_name: dict, result: HostsResult) -> bool:
    """Run one batch into ``by_name``; False after Ctrl-C (the run stops there)."""
    try:
        by_name.update(running.wait())
        return True
    except KeyboardInterrupt:
        by_name.update(running.interrupt())
        result.interrupted, result.stop_reason = True, "interrupted (Ctrl-C)"
        return False


def _say_done(out: Output, report: HostReport) -> None:
    """One line when a host finishes: its counts, or where it failed."""
    if report.failed:
        step = next(r.step for r in report.results if r.status == FAILED)
        out.line(report.host, f"FAILED after {report.seconds:.1f}s (at step {step})")
    else:
        out.line(report.host, f"done in {report.seconds:.1f}s: {report.recap_line().split(' : ', 1)[1]}")


def print_hosts_recap(result: HostsResult, out: Optional[Output] = None, table: bool = True) -> None:
    """The recap of every attempted host, the hosts that were not attempted and why, and each host's notes."""
    out = out or Output()
    print_recap(result.reports, out, table=table)
    if result.not_attempted:
        width = max(len(n) for n in result.not_attempted)
        out.line(None, f"NOT ATTEMPTED: {result.stop_reason}")
        for host in result.not_attempted:
            out.line(None, f"{host:<{width}} : not attempted")
    for report in result.reports:
        for note in report.notes:
            out.line(report.host, note)

