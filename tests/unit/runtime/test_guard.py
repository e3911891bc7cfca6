"""The host-side guard (templates/host/guard.sh.j2) run for real with sh: armed, cancelled, fired."""

import os
import subprocess
import time

import pytest

from tasks.runtime import guarded
from tasks.runtime.facts import Facts
from tasks.runtime.templating import environment
from tests.unit.factshapes import plan_cfg
from tests.unit.steps.test_scripts import shellcheck

GUARD_SCRIPT = """{% import "host/guard.sh.j2" as guard %}
set -u
run_dir={{ run_dir | q }}
{{ guard.define_cancel("demo") }}
case "$1" in
arm)
{{ guard.arm("demo", 1, "echo fired >>'$run_dir/fired'") }}
    ;;
cancel) if cancel_demo; then echo cancelled; else echo too-late; fi ;;
pending)
{{ guard.report_pending("demo") }}
    ;;
esac
"""


@pytest.fixture
def guard(tmp_path):
    """``guard(action)``: the guard macros run for real with sh (no systemd here: the sleeper path)."""
    assert not os.path.isdir("/run/systemd/system"), "this test exercises the sleeper path"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    script = tmp_path / "guard.sh"
    script.write_text(environment().from_string(GUARD_SCRIPT).render(run_dir=str(run_dir)))

    def run(action):
        return subprocess.run(["sh", str(script), action], capture_output=True, text=True, timeout=10).stdout.strip()

    run.run_dir = run_dir
    yield run
    run("cancel")  # never leave a sleeper behind


def test_guard_script_lints():
    shellcheck(environment().from_string(GUARD_SCRIPT).render(run_dir="/var/lib/xcatfab/run"), "guard")


def test_a_cancelled_guard_never_fires_and_is_no_longer_pending(guard):
    guard("arm")
    assert guard("pending") == "pending=demo"
    assert guard("cancel") == "cancelled"
    assert guard("pending") == ""
    time.sleep(1.6)
    assert not (guard.run_dir / "fired").exists()
    assert guard("cancel") == "too-late"  # the claim is taken: nothing left to cancel


def test_a_guard_that_fired_is_not_cancelled_and_runs_once(guard):
    guard("arm")
    deadline = time.monotonic() + 10
    while not (guard.run_dir / "fired").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert guard("cancel") == "too-late"
    assert guard("pending") == ""
    time.sleep(0.5)
    assert (guard.run_dir / "fired").read_text() == "fired\n"


def test_cancel_never_kills_a_process_that_reused_the_pid(guard):
    guard("arm")
    stranger = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        guard("cancel")  # stop the real sleeper first, then pretend its pid was reused
        guard("arm")
        real = (guard.run_dir / "demo.pid").read_text()
        os.kill(int(real), 15)  # (our own sleeper, made for this test)
        (guard.run_dir / "demo.pid").write_text(f"{stranger.pid}\n")
        assert guard("cancel") == "cancelled"
        assert stranger.poll() is None, "cancel killed a process that was not its sleeper"
    finally:
        stranger.kill()
        stranger.wait()


# ------------------------------------------------ the controller waits for the undo
class _Run:
    """What ``_await_undo`` uses of a host run: a connection that always comes back."""

    def __init__(self, cfg):
        self.cfg, self.facts, self.context, self.remote, self.said = cfg, {}, {}, None, []

    def say(self, line):
        self.said.append(line)

    def replace_connection(self, _end):
        return True


def _change(after_undo):
    return guarded.GuardedChange(guard="bridge-rollback", step="bridge", undo="", apply="", seconds=30,
                         verify=lambda f: [], after_undo=after_undo, finish_with="fab -H lab1 bridge")


def test_the_rollback_is_reported_once_the_host_has_finished_it(monkeypatch):
    """Read mid-undo, the host looks half-changed (eth0 without its address yet): that is no
    verdict. The report waits for the undo's own mark and describes the host after it."""

    reads = iter([{"undone": ""}, {"undone": ""}, {"undone": "2026-12-05T08:00:00Z"}])

    def gather(_remote, _fragments, _context):
        facts = Facts()
        state = next(reads)
        facts["guard.bridge-rollback"] = f"undone={state['undone']}" if state["undone"] else "apply=done"
        facts["state"] = "restored" if state["undone"] else "mid-undo"
        return facts

    monkeypatch.setattr(guarded, "gather", gather)
    monkeypatch.setattr(guarded.time, "sleep", lambda _s: None)
    run = _Run(plan_cfg())
    with pytest.raises(guarded.StepFailed) as failed:
        guarded._await_undo(run, _change(lambda f: f"eth0 is {f.text('state')}"), time.monotonic() - 10, "lost")
    assert "rolled it back after 30s (at 2026-12-05T08:00:00Z): eth0 is restored" in str(failed.value)


def test_an_undo_that_never_finishes_is_not_called_a_rollback(monkeypatch):

    clock = iter(range(0, 10_000, 5))
    monkeypatch.setattr(guarded.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(guarded.time, "sleep", lambda _s: None)
    monkeypatch.setattr(guarded, "gather", lambda *_a: Facts())
    run = _Run(plan_cfg())
    with pytest.raises(guarded.StepFailed) as failed:
        guarded._await_undo(run, _change(lambda f: "eth0 has no address"), 0, "lost")
    message = str(failed.value)
    assert "rolled it back" not in message
    assert "its undo had not finished 90s later (now: eth0 has no address)" in message
    assert "/st/run/bridge-rollback-undo.log" in message
