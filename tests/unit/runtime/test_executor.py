"""The host executor without a lab: batches, the failure threshold, the pool, the recap.

Batching and the threshold follow Ansible (``serial``, ``max_fail_percentage``:
the share of failed hosts in a batch must EXCEED the threshold; a batch in
which every host failed stops the play). The engine is exercised with plain
functions standing in for a host's run.
"""

from __future__ import annotations

import io
import re
import sys
import threading
from fractions import Fraction
from pathlib import Path

import pytest

from tasks.runtime.errors import BadInput
from tasks.runtime.executor import (
    DEFAULT_FORKS,
    batch_size,
    make_batches,
    parse_forks,
    parse_percent,
    parse_serial,
    pool_size,
    print_hosts_recap,
    run_hosts,
    stop_reason,
    threshold_exceeded,
)
from tasks.runtime.report import CHANGED, FAILED, OK, HostReport, Output, StepResult
from tasks.runtime.secret import MASK, Secret

ROOT = Path(__file__).resolve().parents[2]
FAB = str(Path(sys.executable).with_name("fab"))


# --------------------------------------------------------------------------- --serial


@pytest.mark.parametrize("text,expected", [
    (None, ()), ("", ()), ("3", (3,)), ("30%", ("30%",)), ("1,25%", (1, "25%")),
    (" 1 , 5 , 20% ", (1, 5, "20%")), ("100%", ("100%",)),
])
def test_parse_serial_accepts_counts_percentages_and_lists(text, expected):
    assert parse_serial(text) == expected


@pytest.mark.parametrize("text", ["0", "0%", "101%", "abc", "-1", "2.5", "1,,2", "%", "5 %x"])
def test_parse_serial_rejects_with_one_line_naming_the_flag(text):
    with pytest.raises(BadInput) as info:
        parse_serial(text)
    assert str(info.value).startswith("--serial:") and "\n" not in str(info.value)


@pytest.mark.parametrize("item,total,size", [
    (3, 10, 3), ("30%", 10, 3), ("25%", 4, 1), ("10%", 3, 1),  # int(0.3) is 0 -> at least 1
    ("50%", 5, 2), ("100%", 7, 7), ("1%", 1000, 10), ("33%", 3, 1),
])
def test_batch_size_is_ansibles_pct_to_int(item, total, size):
    assert batch_size(item, total) == size


@pytest.mark.parametrize("hosts,serial,sizes", [
    (10, (), [10]),                          # default: one batch of every host
    (10, ("30%",), [3, 3, 3, 1]),            # a percentage of ALL hosts, not of those left
    (4, (1, "25%"), [1, 1, 1, 1]),
    (20, (1, 5, "20%"), [1, 5, 4, 4, 4, 2]),  # the last item repeats
    (3, (5,), [3]),                          # bigger than the inventory: one batch
    (3, ("10%",), [1, 1, 1]),
    (0, (2,), []),
])
def test_make_batches_like_ansible_serial(hosts, serial, sizes):
    names = [f"h{i}" for i in range(hosts)]
    batches = make_batches(names, serial)
    assert [len(b) for b in batches] == sizes
    assert [h for b in batches for h in b] == names  # every host once, in inventory order


# --------------------------------------------------------------------------- --max-fail-percent


@pytest.mark.parametrize("failed,size,pct,exceeded", [
    (1, 4, "25", False),   # 25% failed is not MORE than 25%
    (2, 4, "25", True),
    (2, 4, "49", True),    # Ansible's doc: 4 hosts, abort at 2 failures -> use 49
    (2, 4, "50", False),
    (1, 1, "0", True),
    (0, 3, "0", False),
    (3, 3, "100", False),  # never exceeded (but a fully failed batch stops anyway)
    (1, 3, "33.3", True),  # exact arithmetic: 33.33..% > 33.3%
    (1, 3, "33.4", False),
])
def test_threshold_must_be_exceeded(failed, size, pct, exceeded):
    assert threshold_exceeded(failed, size, parse_percent(pct)) is exceeded


def test_no_threshold_is_never_exceeded():
    assert threshold_exceeded(5, 5, None) is False


@pytest.mark.parametrize("text", ["101", "-1", "abc", "1e2", "50%%"])
def test_parse_percent_rejects(text):
    with pytest.raises(BadInput) as info:
        parse_percent(text)
    assert str(info.value).startswith("--max-fail-percent:")


def test_parse_percent_accepts_a_trailing_percent_sign_and_decimals():
    assert parse_percent("25%") == 25 and parse_percent("12.5") == Fraction(25, 2)
    assert parse_percent(None) is None


def test_stop_reason_scoped_per_batch():
    # Two of four failed with 25%: exceeded. The same count in a bigger batch is not.
    assert "more than --max-fail-percent 25%" in stop_reason(2, 4, Fraction(25), 1)
    assert stop_reason(2, 10, Fraction(25), 2) is None
    # Every host of the batch failed: stop even without a threshold (Ansible does).
    assert "every host of batch 3 failed" in stop_reason(2, 2, None, 3)
    assert stop_reason(1, 2, None, 1) is None
    assert stop_reason(0, 2, Fraction(0), 1) is None


@pytest.mark.parametrize("text,expected", [(None, DEFAULT_FORKS), ("1", 1), ("100", 100)])
def test_parse_forks(text, expected):
    assert parse_forks(text) == expected


@pytest.mark.parametrize("text", ["0", "101", "x", "-2"])
def test_parse_forks_rejects(text):
    with pytest.raises(BadInput):
        parse_forks(text)


def test_pool_size_is_the_batch_bounded_by_forks():
    assert pool_size(3, 10) == 3 and pool_size(30, 10) == 10 and pool_size(0, 10) == 1


# --------------------------------------------------------------------------- the engine


class Host:
    """A stand-in for a HostConfig: the engine only reads ``.name``."""

    def __init__(self, name):
        self.name = name


def report_for(name, fail_at=None):
    report = HostReport(name)
    report.add(StepResult("facts", OK))
    report.add(StepResult("docker", CHANGED, ["install"]))
    if fail_at:
        report.add(StepResult(fail_at, FAILED, error=f"{fail_at} broke"))
    report.finished = report.started
    return report


def hosts(*names):
    return [Host(n) for n in names]


def test_later_batches_do_not_start_once_the_threshold_is_exceeded():
    started = []

    def run_one(host):
        started.append(host.name)
        return report_for(host.name, "connect" if host.name == "a" else None)

    out = io.StringIO()
    result = run_hosts(hosts("a", "b", "c", "d"), run_one, serial=(1,), max_fail=Fraction(0),
                         out=Output(out))
    assert started == ["a"]
    assert result.not_attempted == ["b", "c", "d"] and result.failed
    assert "1 of 1 host(s) failed in batch 1" in result.stop_reason
    assert "BATCH 1/4: a" in out.getvalue() and "BATCH 2/4" not in out.getvalue()


def test_a_failure_at_the_threshold_goes_on_to_the_next_batch():
    def run_one(host):
        return report_for(host.name, "image" if host.name == "a" else None)

    result = run_hosts(hosts("a", "b", "c", "d"), run_one, serial=(2,), max_fail=Fraction(50),
                         out=Output(io.StringIO()))
    assert [r.host for r in result.reports] == ["a", "b", "c", "d"]
    assert result.not_attempted == [] and result.stop_reason is None
    assert result.failed  # a still failed: the exit status must say so


def test_a_fully_failed_batch_stops_without_a_threshold():
    result = run_hosts(hosts("a", "b", "c"), lambda h: report_for(h.name, "connect"), serial=(1,),
                         out=Output(io.StringIO()))
    assert result.not_attempted == ["b", "c"] and "every host of batch 1 failed" in result.stop_reason


def test_failures_in_a_batch_do_not_stop_the_others_in_it():
    result = run_hosts(hosts("a", "b", "c"), lambda h: report_for(h.name, "connect" if h.name != "c" else None),
                         out=Output(io.StringIO()))
    assert [r.host for r in result.reports] == ["a", "b", "c"]
    assert [r.failed for r in result.reports] == [True, True, False]


def test_hosts_of_a_batch_run_at_once_within_the_fork_bound():
    # Each host waits until `forks` hosts are inside at the same time: with a
    # serial pool the barrier breaks and every host reports a failure.
    forks = 3
    barrier = threading.Barrier(forks, timeout=30)
    lock = threading.Lock()
    active = {"now": 0, "max": 0}

    def run_one(host):
        with lock:
            active["now"] += 1
            active["max"] = max(active["max"], active["now"])
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return report_for(host.name, "barrier")
        finally:
            with lock:
                active["now"] -= 1
        return report_for(host.name)

    result = run_hosts(hosts(*"abcdef"), run_one, forks=forks, out=Output(io.StringIO()))
    assert not result.failed
    assert active["max"] == forks


def test_a_crashing_host_run_fails_that_host_only_and_masks_secrets():
    secret = Secret("hunter2-bmc")

    def run_one(host):
        if host.name == "b":
            raise RuntimeError(f"boom with {secret.reveal()} inside\nsecond line")
        return report_for(host.name)

    result = run_hosts(hosts("a", "b", "c"), run_one, out=Output(io.StringIO()), secrets=[secret], task="rollout")
    by_host = {r.host: r for r in result.reports}
    assert not by_host["a"].failed and not by_host["c"].failed
    assert by_host["b"].first_error == f"rollout: internal error: RuntimeError: boom with {MASK} inside"


def test_plan_runs_every_host_in_one_pool_whatever_serial_says():
    seen = []
    result = run_hosts(hosts("a", "b", "c"), lambda h: seen.append(h.name) or report_for(h.name, "connect"),
                         serial=(1,), max_fail=Fraction(0), single_batch=True, out=Output(io.StringIO()))
    assert sorted(seen) == ["a", "b", "c"] and result.not_attempted == []


def test_recap_lists_hosts_not_attempted_and_why():
    result = run_hosts(hosts("web1", "b", "c"), lambda h: report_for(h.name, "connect"), serial=(1,),
                         out=Output(io.StringIO()))
    out = io.StringIO()
    print_hosts_recap(result, Output(out))
    text = out.getvalue()
    assert re.search(r"^web1 : ok=2 changed=1 failed=1$", text, re.M)
    assert "NOT ATTEMPTED: every host of batch 1 failed (1 of 1)" in text
    assert re.search(r"^b\s+: not attempted$", text, re.M) and re.search(r"^c\s+: not attempted$", text, re.M)
    # The table's row for web1 is one line with its duration and first error.
    assert re.search(r"^web1\s+2\s+1\s+1\s+\d+\.\d\s+connect: connect broke\s*$", text, re.M)


def test_output_lines_never_interleave():
    # Eight threads each write multi-line texts; every line must come out whole, prefixed once.
    stream = io.StringIO()
    out = Output(stream)
    text = "\n".join(f"line {i} " + "x" * 200 for i in range(20))

    def writer(name):
        for _ in range(25):
            out.line(name, text)

    threads = [threading.Thread(target=writer, args=(f"host{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 8 * 25 * 20
    assert all(re.fullmatch(r"host[0-7] \| line \d+ x{200}", line) for line in lines)


