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

The helpers and the ``lab`` fixture here are shared with test_hostkeys.py and
test_secrets.py.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAB = str(ROOT / ".venv" / "bin" / "fab")
LAB_HOSTS = int(os.environ.get("XCATFAB_LAB_HOSTS", "3"))


# --------------------------------------------------------------------------- shared helpers


@pytest.fixture(scope="session")
def lab():
    """The running lab, never rebuilt from here.

    Overrides conftest's ``lab`` for these modules: that one takes a lab with
    ANY unhealthy host down and brings up a new one, and these tests stop
    sshd and dockerd on their own hosts on purpose; a lab that other people
    share must not be rebuilt because of that (or because of theirs). Only
    when no lab is recorded at all is one brought up (a fresh CI machine).
    """
    from tasks.lab import current_lab, lab_up

    existing = current_lab()
    if existing is None:
        return lab_up(LAB_HOSTS, log=lambda msg: print(f"[lab] {msg}"))
    if len(existing.hosts) < LAB_HOSTS:
        pytest.fail(f"the lab has {len(existing.hosts)} host(s), these tests need {LAB_HOSTS}: "
                    f"not rebuilding a lab others may be using (inv lab.up --hosts N)")
    return existing


def make_inventory(lab, path: Path, hosts, host_vars=None, group_vars=None) -> Path:
    """The lab's inventory with only ``hosts`` (in that order), plus extra settings.

    ``host_vars``: host -> {key: value} set on its line (a host line beats
    group vars); ``group_vars``: key -> value replacing or adding a line of
    ``[lab:vars]`` (None: remove the key).
    """
    host_vars, group_vars = host_vars or {}, dict(group_vars or {})
    lines, section, by_host = [], None, {}
    for raw in lab.inventory.read_text().splitlines():
        text = raw.strip()
        if text.startswith("["):
            section = text
            lines.append(raw)
            continue
        if section == "[lab]" and text and not text.startswith("#"):
            by_host[text.split()[0]] = text
            continue
        if section == "[lab:vars]" and "=" in text and not text.startswith("#"):
            key = text.split("=", 1)[0].strip()
            if key in group_vars:
                value = group_vars.pop(key)
                if value is not None:
                    lines.append(f"{key}={value}")
                continue
        lines.append(raw)
    body = "\n".join(lines) + "\n" + "".join(f"{k}={v}\n" for k, v in group_vars.items() if v is not None)
    host_lines = "".join(_host_line(by_host[h], host_vars.get(h, {})) + "\n" for h in hosts)
    body = body.replace("[lab]\n", "[lab]\n" + host_lines, 1)
    path.write_text(body)
    return path


def _host_line(line: str, settings: dict) -> str:
    """An inventory host line with ``settings`` replacing or adding its key=value tokens."""
    name, *tokens = shlex.split(line)
    values = dict(token.split("=", 1) for token in tokens)
    values.update(settings)
    return " ".join([name] + [f"{k}={shlex.quote(str(v))}" for k, v in values.items()])


def fab_env(extra=None, drop=()):
    """The environment for ``fab``: ours without any XCATFAB_ setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("XCATFAB_") and k not in drop}
    env.update(extra or {})
    return env


def run_fab(*args, env=None, on_line=None, timeout=600):
    """Run ``fab ARGS`` and return (exit status, stdout, stderr); ``on_line(line)`` sees stdout live."""
    proc = subprocess.Popen([FAB, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env if env is not None else fab_env(), cwd=ROOT)
    err_chunks = []
    reader = threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()), daemon=True)
    reader.start()
    out_lines = []
    timer = threading.Timer(timeout, proc.kill)  # a hung rollout fails the test instead of the session
    timer.start()
    try:
        for line in proc.stdout:
            out_lines.append(line)
            if on_line:
                on_line(line.rstrip("\n"))
        rc = proc.wait()
    finally:
        timer.cancel()
    reader.join()
    return rc, "".join(out_lines), "".join(err_chunks)


def recap_line(out: str, host: str) -> str:
    """The ``host : ok=N changed=N failed=N`` line of ``host``."""
    found = re.findall(rf"^{re.escape(host)}\s* : ok=\d+ changed=\d+ failed=\d+$", out, re.M)
    assert len(found) == 1, f"no single recap line for {host} in:\n{out}"
    return found[0]


def succeeded(out: str, host: str) -> bool:
    """``host``'s recap line says it ran every step and none failed."""
    return re.fullmatch(rf"{re.escape(host)}\s* : ok=\d+ changed=\d+ failed=0", recap_line(out, host)) is not None


def first_error(out: str, host: str) -> str:
    """The first-error cell of ``host``'s row in the recap table ('' when none)."""
    table = out.split("first error", 1)[1]
    match = re.search(rf"^{re.escape(host)} +\d+ +\d+ +\d+ +\d+\.\d *(.*?) *$", table, re.M)
    assert match, f"no table row for {host} in:\n{out}"
    return match.group(1)


def children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (sshd's per-connection processes)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def stop_sshd(lab, host: str, sessions: bool = False) -> int:
    """Stop ``host``'s sshd by the lab's recorded pid; with ``sessions``, its open sessions too.

    Stopping only the listener leaves established connections alive (sshd
    forks one process per connection): a host going down takes those too.
    """
    pid = lab.host(host).sshd_pid()
    assert pid, f"{host}'s sshd is not running"
    victims = [pid] + (children_of(pid) if sessions else [])
    for victim in victims:
        os.kill(victim, signal.SIGTERM)
    return pid


def wait_gone(pid: int, seconds: float = 60) -> None:
    """Wait until process ``pid`` (not our child) has exited."""
    gone = threading.Event()
    for _ in range(int(seconds * 20)):
        if not Path(f"/proc/{pid}").exists():
            return
        gone.wait(0.05)
    raise AssertionError(f"process {pid} still running after {seconds}s")


def sshd_accepted(lab, host: str) -> int:
    """How many logins ``host``'s sshd has logged (its own log: independent of xcatfab)."""
    log = lab.host(host).sshd_log
    return log.read_text(errors="replace").count("Accepted publickey") if log.exists() else 0


class Restorer:
    """Puts broken hosts back as soon as the live output shows their run has ended.

    A stopped sshd or dockerd makes the shared lab look unhealthy to other
    sessions, so the window is kept to the host's own failure: its
    ``HOST | FAILED`` line. ``before`` (host -> callable) runs first, for
    checks that must see the host as the run left it. Whatever was not put
    back during the run is put back when the block ends. Use it as the
    ``on_line`` of :func:`run_fab` (or call it from one).
    """

    def __init__(self, lab, hosts, before=None):
        self.lab, self.pending, self.before = lab, list(hosts), dict(before or {})
        self.lock = threading.Lock()

    def __call__(self, line: str) -> None:
        for host in list(self.pending):
            if line.startswith(f"{host} | FAILED after "):
                self.restore(host)

    def restore(self, host: str) -> None:
        with self.lock:
            if host not in self.pending:
                return
            self.pending.remove(host)
        if host in self.before:
            self.before.pop(host)()
        self.lab.reset_host(host)


@contextmanager
def restored(lab, *hosts, before=None):
    """A :class:`Restorer` for ``hosts``; every host still broken is put back when the block ends."""
    restorer = Restorer(lab, hosts, before)
    try:
        yield restorer
    finally:
        for host in list(restorer.pending):
            restorer.restore(host)


def container_running(docker_on, host: str) -> bool:
    proc = docker_on(host, "inspect", "-f", "{{.State.Running}}", "xcatmn", check=False)
    return proc.returncode == 0 and proc.stdout.strip() == "true"


def container_address(docker_on, host: str) -> str:
    """Every IPv4 address of the container, read with ``docker inspect`` on the host's engine."""
    proc = docker_on(host, "inspect", "-f",
                     "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", "xcatmn")
    return proc.stdout.strip()


# --------------------------------------------------------------------------- tests


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


def test_fab_dash_h_deploy_still_runs_hosts_one_after_the_other(lab, three, tmp_path):
    """Fabric's own way: `fab -H a,b deploy` (serial, each host's lines before the next's)."""
    first, second, _ = three
    inventory = make_inventory(lab, tmp_path / "hosts.ini", [first, second])
    rc, out, err = run_fab("-H", f"{first},{second}", "deploy", "--plan", "--inventory", str(inventory))
    assert rc == 0, out + err
    lines = out.splitlines()
    last_first = max(i for i, line in enumerate(lines) if line.startswith(f"{first} | "))
    first_second = min(i for i, line in enumerate(lines) if line.startswith(f"{second} | "))
    assert last_first < first_second
    assert len(re.findall(r"^RECAP ", out, re.M)) == 2  # one recap per host, as deploy prints
