"""``fab rollout`` against real lab hosts: failures mid-run, batches, the threshold, the recap.

Hosts come from the ``test_hosts`` fixture (never by name); each test builds
its own inventory (the lab's, restricted to those hosts and ordered as the
test needs) and checks what happened on the hosts by independent means (the
docker CLI on each host's own socket, plain OpenSSH, the hosts' sshd logs).

Hosts are made to fail the way real ones do: sshd stopped by its pid (the
lab's record) before a run, or during a run together with the sessions it
serves (a host going down mid-rollout), a client key the host does not
accept, dockerd killed by its pid. Every host is put back afterwards
(``Lab.reset_host`` restarts a stopped sshd or dockerd), as soon as the run
under test has ended: while one of them is down the shared lab looks
unhealthy to other sessions.

The helpers live in fabrun.py, shared with test_hostkeys.py and test_secrets.py.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess

import pytest

from tests.lab.fabrun import (  # noqa: F401  (helpers shared by the fab-running tests)
    FAB,
    ROOT,
    Restorer,
    _host_line,
    children_of,
    container_address,
    container_running,
    fab_env,
    first_error,
    make_inventory,
    recap_line,
    restored,
    run_fab,
    sshd_accepted,
    stop_sshd,
    succeeded,
    wait_gone,
)


@pytest.fixture
def three(lab, test_hosts):
    """Three clean test hosts (containers gone, sshd and dockerd up)."""
    assert len(test_hosts) >= 3, "these tests need three lab hosts"
    for host in test_hosts[:3]:
        lab.reset_host(host)
    return list(test_hosts[:3])


def test_down_before_and_dropped_mid_rollout_the_rest_finish(lab, three, docker_on, tmp_path):
    """One host's sshd stopped before the rollout, another's mid-run: the third finishes.

    The mid-run host must build its image (a step that streams for seconds),
    and its sshd and sessions are stopped as soon as the build's first step
    shows in the live output: the connection drops under a running step.
    """
    down, mid, ok = three
    lab.reset_host(mid, images=True)
    inventory = make_inventory(lab, tmp_path / "hosts.ini", [down, mid, ok])
    dropped, mid_containers = [], []

    def mid_as_left():
        mid_containers.append(docker_on(mid, "ps", "-aq", "--filter", "name=^xcatmn$").stdout.strip())

    with restored(lab, down, mid, before={mid: mid_as_left}) as restorer:
        def watch(line):
            if not dropped and re.match(rf"{re.escape(mid)} \| Step \d+/\d+ :", line):
                dropped.append(stop_sshd(lab, mid, sessions=True))
            restorer(line)

        stop_sshd(lab, down)
        rc, out, err = run_fab("rollout", "--inventory", str(inventory), on_line=watch)
    assert dropped, f"{mid} never started building its image:\n{out}"
    assert rc == 1, out + err
    assert recap_line(out, down) == f"{down} : ok=0 changed=0 failed=1"
    assert first_error(out, down) == f"connect: cannot reach root@{lab.host(down).ip}:22: Connection refused"
    assert re.fullmatch(rf"{re.escape(mid)} : ok=\d changed=\d failed=1", recap_line(out, mid))
    assert re.fullmatch(r"image: connection lost \(SSH transport closed by the host or the network\) "
                        r"while the command ran", first_error(out, mid)), out
    assert succeeded(out, ok)
    assert first_error(out, ok) == ""
    # On the hosts themselves: the third one converged, the dropped one never got a container.
    assert container_running(docker_on, ok)
    assert lab.host(ok).container_ip in container_address(docker_on, ok).split()
    assert mid_containers == [""]
    # Live output: every host line is whole and prefixed by a host of the run.
    for line in out.split("\nRECAP ")[0].splitlines():
        assert line == "" or re.match(rf"({down}|{mid}|{ok}) \| ", line), line


def test_threshold_exceeded_stops_later_batches(lab, three, docker_on, tmp_path):
    """--serial 2 --max-fail-percent 40: one of two failed (50% > 40%): batch 2 never starts."""
    down, second, later = three
    inventory = make_inventory(lab, tmp_path / "hosts.ini", [down, second, later])
    before = sshd_accepted(lab, later)
    with restored(lab, down) as restorer:
        stop_sshd(lab, down)
        rc, out, err = run_fab("rollout", "--inventory", str(inventory), "--serial", "2",
                               "--max-fail-percent", "40", on_line=restorer)
    assert rc == 1, out + err
    assert f"BATCH 1/2: {down}, {second}" in out and "BATCH 2/2" not in out
    assert recap_line(out, down) == f"{down} : ok=0 changed=0 failed=1"
    assert succeeded(out, second)
    assert ("NOT ATTEMPTED: 1 of 2 host(s) failed in batch 1 (50%, more than --max-fail-percent 40%)"
            in out)
    assert re.search(rf"^{re.escape(later)}\s* : not attempted$", out, re.M)
    # Not attempted means not contacted: its sshd logged no login, it has no container.
    assert sshd_accepted(lab, later) == before
    assert not container_running(docker_on, later)
    assert container_running(docker_on, second)


def test_threshold_met_but_not_exceeded_goes_on(lab, three, docker_on, tmp_path):
    """--serial 2 --max-fail-percent 50: one of two failed is 50%, not more: batch 2 runs."""
    down, second, later = three
    inventory = make_inventory(lab, tmp_path / "hosts.ini", [down, second, later])
    with restored(lab, down) as restorer:
        stop_sshd(lab, down)
        rc, out, err = run_fab("rollout", "--inventory", str(inventory), "--serial", "2",
                               "--max-fail-percent", "50", on_line=restorer)
    assert rc == 1, out + err  # a host failed: the exit status says so
    assert "BATCH 2/2: " + later in out and "NOT ATTEMPTED" not in out
    assert succeeded(out, later)
    assert container_running(docker_on, later)


def test_auth_failure_is_one_line_and_the_others_go_on(lab, three, tmp_path):
    """A client key the host does not accept: 'authentication failed', named host and step."""
    wrong, good, _ = three
    key = tmp_path / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    inventory = make_inventory(lab, tmp_path / "hosts.ini", [wrong, good], host_vars={wrong: {"ssh_key": key}})
    rc, out, err = run_fab("rollout", "--inventory", str(inventory), "--plan",
                           env=fab_env(drop=("SSH_AUTH_SOCK",)))
    assert rc == 1, out + err
    assert first_error(out, wrong) == f"connect: authentication failed for root@{lab.host(wrong).ip}:22: " \
                                      "Authentication failed."
    assert succeeded(out, good)


def test_dead_dockerd_fails_the_docker_step_of_that_host_only(lab, three, docker_on, tmp_path):
    """dockerd killed by its pid and its restart command failing: the docker step fails, one line."""
    dead, good, _ = three
    restart = "sh -c 'echo Job for docker.service failed because the control process exited >&2; exit 1'"
    inventory = make_inventory(lab, tmp_path / "hosts.ini", [dead, good],
                               host_vars={dead: {"docker_restart": restart}})
    host = lab.host(dead)

    def restart_dockerd():
        # The lab's own script, as the lab starts it (then reset_host finds it running).
        subprocess.run([str(host.restart_dockerd)], check=True, capture_output=True, timeout=180)

    with restored(lab, dead, before={dead: restart_dockerd}) as restorer:
        pid = host.dockerd_pid()
        os.kill(pid, signal.SIGTERM)
        wait_gone(pid)
        assert host.dockerd_pid() is None
        rc, out, err = run_fab("rollout", "--inventory", str(inventory), on_line=restorer)
    assert rc == 1, out + err
    assert recap_line(out, dead) == f"{dead} : ok=1 changed=0 failed=1"
    # The restart command's own words reach the recap, on the host's line, with the step.
    assert first_error(out, dead).startswith("docker: Job for docker.service failed because the control process "
                                             "exited"), out
    assert succeeded(out, good)
    assert container_running(docker_on, good)


def test_fab_dash_h_deploy_runs_every_host_and_a_failed_one_stops_no_other(lab, three, tmp_path):
    """`fab -H a,b deploy` goes through the one host executor (issue 13): both hosts run, a host
    that cannot be reached does not stop the other, and there is one recap for the run."""
    first, second, _ = three
    inventory = make_inventory(lab, tmp_path / "hosts.ini", [first, second])
    with restored(lab, first):
        stop_sshd(lab, first)
        rc, out, err = run_fab("-H", f"{first},{second}", "deploy", "--plan", "--inventory", str(inventory))
    assert rc == 1, out + err
    assert recap_line(out, first) == f"{first} : ok=0 changed=0 failed=1"
    assert re.fullmatch(rf"{re.escape(second)} : ok=\d+ changed=\d+ failed=0", recap_line(out, second)), out
    assert len(re.findall(r"^RECAP ", out, re.M)) == 1  # one recap for the run


