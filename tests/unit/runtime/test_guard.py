"""The host-side guard (templates/host/guard.sh.j2) run for real with sh: armed, cancelled, fired."""

import os
import subprocess
import time

import pytest

from tasks.runtime.templating import environment
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
