"""Many hosts at once: ``fab rollout``, in batches, with a failure threshold and a recap.

    fab rollout [--inventory F] [--limit GROUP|HOST|GLOB] [--serial N|N%[,...]]
                [--max-fail-percent P] [--forks N] [--plan] [--set K=V ...]
                [--accept-new-host-keys]

Fabric runs ``fab -H h1,h2 deploy`` one host after the other and has no
batches, threshold or recap (fabric-and-peers.md §1-2). This module adds them
with Ansible's semantics (ibid. §4), because that is what admins already know:

* **Batches** (``--serial``) as Ansible's ``serial``: a number of hosts, a
  percentage of the selected hosts (rounded down, at least 1), or a comma
  list of those whose last item repeats (``1,25%``: a canary host, then a
  quarter at a time). Default: every selected host in one batch.
* **Within a batch** the hosts run in parallel in a bounded thread pool
  (``--forks``, default :data:`DEFAULT_FORKS`): each slot holds one SSH
  connection, so the bound is what keeps a big inventory from opening
  hundreds of sessions at once. A host that is down or fails mid-run never
  stops the others in its batch: :func:`tasks.deploy.run_host` reports
  failures instead of raising them.
* **Between batches**, as Ansible's ``max_fail_percentage``, failures are
  counted per batch and the threshold must be *exceeded*, not met (4 hosts,
  ``--max-fail-percent 25``: one failure goes on, two stop). As in Ansible,
  a batch in which every host failed stops the rollout even without
  ``--max-fail-percent``. Later batches are then not started, and the recap
  names the hosts that were not attempted and why.
* ``--plan`` connects to every selected host (all in one pool: nothing
  changes, so one unreachable host should not hide the others' plans), prints
  what each step would change and the batches a real run would use.

Every input is checked before anything connects (every inventory host and
key, cross-host checks, ``--limit``, the flags, the sudo password source);
bad input is one line naming the flag or ``file:line`` and exit status 2.
Live output goes through :class:`tasks.report.Output`: whole lines, each
prefixed with its host, never interleaved mid-line. The run ends with the
recap (``HOST : ok=N changed=N failed=N`` lines and a table with each host's
duration and first error) and exits 1 when any host failed.

:func:`run_batches` is the engine, independent of what runs on a host, so
other many-host tasks can reuse the same batching, pool and threshold.
"""

from __future__ import annotations

import concurrent.futures
import re
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Optional, Sequence, Union

from invoke import task
from invoke.exceptions import Exit

from . import bad_input_exits
from .inventory import InventoryError, default_inventory_path, load_hosts
from .report import FAILED, HostReport, Output, StepResult, print_recap
from .secret import Secret, SecretError, lookup, mask_in

#: Pool size when --forks is not given. Ansible's default is 5; xcatfab's
#: slots mostly wait on remote commands (image builds, apt), so a few more
#: keep a batch of ten docker hosts going at once without loading the controller.
DEFAULT_FORKS = 10
#: Upper bound for --forks: each slot is a thread with an open SSH connection.
MAX_FORKS = 100

#: Secrets a rollout may find in its environment: no deploy step uses them, but they are
#: checked like any secret source (an owner-only ``<VAR>_FILE``, else exit 2) and masked in
#: every line the rollout prints, should a host's output ever echo one.
#: name -> environment variable.
SECRET_SOURCES = {
    "bmc_password": "XCATFAB_BMC_PASSWORD",
}

SerialItem = Union[int, str]  # a host count, or "N%"


# --------------------------------------------------------------------------- pure logic


def parse_serial(text: Optional[str]) -> tuple:
    """``--serial`` -> a tuple of host counts (int) and percentages ("30%"); () = one batch.

    Accepts ``N``, ``N%`` or a comma list of those (Ansible's ``serial: [1, 5, "20%"]``).
    Raises :class:`InventoryError` (bad input) for anything else, including 0 and 0%.
    """
    if text is None or str(text).strip() == "":
        return ()
    items = []
    for raw in str(text).split(","):
        item = raw.strip()
        match = re.fullmatch(r"([0-9]+)(%?)", item)
        if not match:
            raise InventoryError("--serial", None,
                                 f"{item!r} is not a host count or a percentage (e.g. 2, 30%, 1,25%)")
        number = int(match.group(1))
        if match.group(2):
            if not 1 <= number <= 100:
                raise InventoryError("--serial", None, f"{item!r}: a percentage must be 1% to 100%")
            items.append(f"{number}%")
        else:
            if number < 1:
                raise InventoryError("--serial", None, f"{item!r}: a batch needs at least one host")
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
        raise InventoryError("--max-fail-percent", None, f"{text!r} is not a percentage from 0 to 100")
    value = Fraction(item)
    if value > 100:
        raise InventoryError("--max-fail-percent", None, f"{text!r} is more than 100")
    return value


def parse_forks(text) -> int:
    """``--forks`` -> the pool size bound (1 to :data:`MAX_FORKS`)."""
    if text is None or str(text).strip() == "":
        return DEFAULT_FORKS
    item = str(text).strip()
    if not re.fullmatch(r"[0-9]+", item) or not 1 <= int(item) <= MAX_FORKS:
        raise InventoryError("--forks", None, f"{text!r} is not a number from 1 to {MAX_FORKS}")
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
class RolloutResult:
    """What a rollout did: one report per attempted host, and the hosts it never started."""

    batches: list
    reports: list = field(default_factory=list)  # HostReport, in host order
    not_attempted: list = field(default_factory=list)  # host names
    stop_reason: Optional[str] = None
    interrupted: bool = False

    @property
    def failed(self) -> bool:
        """True when any host failed or was not attempted."""
        return bool(self.not_attempted) or any(r.failed for r in self.reports)


def _crashed(name: str, exc: BaseException, secrets: Sequence) -> HostReport:
    """A report for a host whose run raised (a bug, not a host failure): one line, masked."""
    report = HostReport(name)
    text = str(exc).strip().splitlines()
    message = mask_in(f"{type(exc).__name__}: {text[0] if text else ''}", secrets)
    report.add(StepResult("rollout", FAILED, error=f"internal error: {message}"))
    report.finished = time.monotonic()
    return report


def run_batches(hosts: Sequence, run_one: Callable[[object], HostReport], *,
                serial: Sequence[SerialItem] = (), max_fail: Optional[Fraction] = None,
                forks: int = DEFAULT_FORKS, out: Optional[Output] = None,
                name: Callable[[object], str] = lambda h: h.name, secrets: Sequence = (),
                single_batch: bool = False) -> RolloutResult:
    """Run ``run_one(host)`` for every host, batch after batch, each batch in a bounded pool.

    ``run_one`` must report host failures in its :class:`HostReport` (an
    exception is turned into a failed report, so one host's bug cannot end
    the others' runs). After each batch, :func:`stop_reason` decides whether
    the next batch starts. ``single_batch`` runs every host in one pool
    whatever ``serial`` says (for ``--plan``, which changes nothing).
    On Ctrl-C no further host starts; running hosts finish their run.
    """
    out = out or Output()
    batches = make_batches(list(hosts), () if single_batch else serial)
    result = RolloutResult(batches=[[name(h) for h in b] for b in batches])
    by_name: dict = {}
    for number, batch in enumerate(batches, 1):
        if len(batches) > 1:
            out.line(None, f"BATCH {number}/{len(batches)}: {', '.join(name(h) for h in batch)}")
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=pool_size(len(batch), forks),
                                                     thread_name_prefix="xcatfab-host")
        futures = {pool.submit(run_one, host): host for host in batch}
        try:
            for future in concurrent.futures.as_completed(futures):
                host = futures[future]
                try:
                    report = future.result()
                except Exception as exc:  # a bug in a step: this host fails, the others go on
                    report = _crashed(name(host), exc, secrets)
                by_name[name(host)] = report
                _say_done(out, report)
        except KeyboardInterrupt:
            result.interrupted = True
            out.line(None, "interrupted: no more hosts start; waiting for the running ones to finish")
            pool.shutdown(wait=True, cancel_futures=True)
            for future, host in futures.items():
                if future.done() and not future.cancelled() and name(host) not in by_name:
                    try:
                        by_name[name(host)] = future.result()
                    except Exception as exc:
                        by_name[name(host)] = _crashed(name(host), exc, secrets)
            result.stop_reason = "interrupted (Ctrl-C)"
        else:
            pool.shutdown(wait=True)
            failed = sum(1 for h in batch if by_name[name(h)].failed)
            result.stop_reason = stop_reason(failed, len(batch), max_fail, number)
        if result.stop_reason:
            break
    result.reports = [by_name[name(h)] for h in hosts if name(h) in by_name]
    result.not_attempted = [name(h) for h in hosts if name(h) not in by_name]
    return result


def _say_done(out: Output, report: HostReport) -> None:
    """One line when a host finishes: its counts, or where it failed."""
    if report.failed:
        step = next(r.step for r in report.results if r.status == FAILED)
        out.line(report.host, f"FAILED after {report.seconds:.1f}s (at step {step})")
    else:
        out.line(report.host, f"done in {report.seconds:.1f}s: {report.recap_line().split(' : ', 1)[1]}")


def print_rollout_recap(result: RolloutResult, out: Optional[Output] = None) -> None:
    """The recap of every attempted host, then the hosts that were not attempted and why."""
    out = out or Output()
    print_recap(result.reports, out)
    if result.not_attempted:
        width = max(len(n) for n in result.not_attempted)
        out.line(None, f"NOT ATTEMPTED: {result.stop_reason}")
        for host in result.not_attempted:
            out.line(None, f"{host:<{width}} : not attempted")


# --------------------------------------------------------------------------- the fab task


def carried_secrets() -> dict:
    """The BMC password from the environment or an owner-only file, when set."""
    found = {}
    for key, env_name in SECRET_SOURCES.items():
        try:
            secret = lookup(env_name)
        except SecretError as exc:
            raise InventoryError(f"${env_name}_FILE", None, str(exc)) from None
        if secret:
            found[key] = secret
    return found


ROLLOUT_HELP = {
    "inventory": "inventory file (default: $XCATFAB_INVENTORY or ./hosts.ini)",
    "limit": "hosts to run on: a group, a host, a glob, or a comma list of those (default: all)",
    "serial": "batch size: N hosts, N% of the selected hosts, or a list like 1,25% (default: all at once)",
    "max_fail_percent": "stop before the next batch when MORE than this percent of a batch failed "
                        "(a batch in which every host failed always stops)",
    "forks": f"at most this many hosts at once within a batch (default {DEFAULT_FORKS})",
    "plan": "connect and read facts, print what would change and the batches, change nothing",
    "set": "override an inventory key for this run, KEY=VALUE (repeatable)",
    "accept_new_host_keys": "record unknown host keys in known_hosts (a changed key is still refused)",
}


@task(help=ROLLOUT_HELP, iterable=["set"])
def rollout(c, inventory=None, limit=None, serial=None, max_fail_percent=None, forks=None,
            plan=False, set=None, accept_new_host_keys=False):
    """Deploy to many inventory hosts: batches, a bounded pool per batch, a failure threshold, a recap.

    Every step of `fab deploy` runs on each selected host. Hosts come from the
    inventory (--limit), not from -H.
    """
    from .deploy import DeployOptions, check_required, run_host, step_names
    from .remote_tasks import cli_hosts, connect_options

    with bad_input_exits():
        if cli_hosts():
            raise InventoryError("-H", None, "rollout takes its hosts from the inventory: "
                                 "use --limit " + ",".join(cli_hosts()) + " instead of -H")
        batches_spec = parse_serial(serial)
        max_fail = parse_percent(max_fail_percent)
        pool_bound = parse_forks(forks)
        path = inventory or default_inventory_path()
        if not path:
            raise InventoryError("--inventory", None, "no inventory: give --inventory FILE, "
                                 "set $XCATFAB_INVENTORY, or put a hosts.ini here")
        configs = load_hosts(path, limit=limit, overrides=set)
        check_required(configs, step_names())
        secrets = carried_secrets()
    options = DeployOptions(connect=connect_options(c, accept_new_host_keys), plan_only=plan)
    known_secrets = [s for s in [options.connect.sudo_password, *secrets.values()] if isinstance(s, Secret)]
    out = Output()
    names = step_names()
    planned = make_batches([cfg.name for cfg in configs], batches_spec)
    if plan:
        out.line(None, f"PLAN: {len(configs)} host(s) in {len(planned)} batch(es) of a real run: "
                 + "; ".join(f"{i}: {', '.join(b)}" for i, b in enumerate(planned, 1)))
    result = run_batches(configs, lambda cfg: run_host(cfg, names, options, out),
                         serial=batches_spec, max_fail=max_fail, forks=pool_bound, out=out,
                         secrets=known_secrets, single_batch=plan)
    print_rollout_recap(result, out)
    if result.interrupted:
        raise Exit(code=130)
    if result.failed:
        raise Exit(code=1)
    return result
