"""Host keys, connect timeout and keepalive against real lab sshds (tasks/ssh.py).

Fabric accepts any host key (fabric#1804, #2071); xcatfab must refuse an
unknown or changed key, say how to accept one, and with
``--accept-new-host-keys`` record a new key (OpenSSH's accept-new) but still
refuse a changed one.

Every test runs ``fab`` with a temporary HOME and its own known_hosts files,
so the user's real ~/.ssh is never read or written; lab host keys are never
regenerated: a "changed" key is another lab host's key written for this
host's address. Fingerprints and recorded entries are checked with OpenSSH's
own tools (ssh-keygen, ssh), not with xcatfab's code.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from tests.lab.fabrun import (
    children_of,
    fab_env,
    first_error,
    make_inventory,
    recap_line,
    run_fab,
    sshd_accepted,
    succeeded,
    tcp_answers,
    wait_gone,
)
from tests.labkit.common import wait_for


@pytest.fixture(autouse=True, scope="module")
def real_ssh_dir_untouched():
    """The real user's ~/.ssh must be exactly as it was when these tests end."""
    real = Path(os.path.expanduser("~/.ssh"))

    def state():
        return {str(p): p.read_bytes() for p in real.rglob("*") if p.is_file()} if real.exists() else None

    before = state()
    yield
    assert state() == before, "a host-key test changed the real ~/.ssh"


def fingerprint(public_key: str) -> str:
    """``SHA256:...`` of a public key line, computed by ssh-keygen."""
    proc = subprocess.run(["ssh-keygen", "-l", "-f", "-"], input=public_key + "\n", capture_output=True,
                          text=True, check=True)
    return proc.stdout.split()[1]


@pytest.fixture
def pair(lab, test_hosts):
    """(host, another host): the other one's key stands in for a changed key."""
    return test_hosts[0], test_hosts[1]


@pytest.fixture
def home(tmp_path):
    """A fresh HOME for fab: no ~/.ssh at all unless the test writes one."""
    path = tmp_path / "home"
    path.mkdir()
    return path


def plan(lab, host, tmp_path, home, *flags, known_hosts="", ssh_args=()):
    """``fab [ssh_args] rollout --plan`` on ``host`` with inventory ``known_hosts`` ('' = none)."""
    inventory = make_inventory(lab, tmp_path / "hosts.ini", [host],
                               group_vars={"known_hosts": str(known_hosts) if known_hosts else None})
    return run_fab(*ssh_args, "rollout", "--inventory", str(inventory), "--plan", *flags,
                   env=fab_env({"HOME": str(home)}))


def test_a_changed_key_is_refused_even_with_accept_new(lab, pair, tmp_path, home):
    host, other = pair
    ip = lab.host(host).ip
    known = tmp_path / "known_hosts"
    known.write_text(f"{ip} {lab.host(other).public_key}\n")
    before_text, before_logins = known.read_text(), sshd_accepted(lab, host)
    for flags in ([], ["--accept-new-host-keys"]):
        rc, out, err = plan(lab, host, tmp_path, home, *flags, known_hosts=known)
        assert rc == 1, out + err
        assert first_error(out, host) == (
            f"connect: host key for {ip} CHANGED (now ssh-ed25519 {fingerprint(lab.host(host).public_key)}; "
            f"{known}:1 has ssh-ed25519 {fingerprint(lab.host(other).public_key)}): refusing to connect; "
            f"if the host was reinstalled, remove the old key (ssh-keygen -R '{ip}' -f {known}) "
            f"and verify the new one")
        assert known.read_text() == before_text
    assert sshd_accepted(lab, host) == before_logins  # refused before logging in
    assert not (home / ".ssh").exists()


def test_an_unknown_key_is_refused_saying_how_to_accept_it(lab, pair, tmp_path, home):
    host, _ = pair
    ip = lab.host(host).ip
    known = tmp_path / "known_hosts"
    known.write_text("")
    rc, out, err = plan(lab, host, tmp_path, home, known_hosts=known)
    assert rc == 1, out + err
    assert first_error(out, host) == (
        f"connect: unknown host key ssh-ed25519 {fingerprint(lab.host(host).public_key)} for {ip}: "
        f"verify it, then rerun with --accept-new-host-keys (or add it with: ssh-keyscan {ip} >> {known})")
    assert recap_line(out, host) == f"{host} : ok=0 changed=0 failed=1"
    assert known.read_text() == ""


def test_accept_new_records_the_key_where_openssh_finds_it(lab, pair, tmp_path, home):
    host, _ = pair
    ip = lab.host(host).ip
    known = tmp_path / "known_hosts"
    known.write_text("")
    rc, out, err = plan(lab, host, tmp_path, home, "--accept-new-host-keys", known_hosts=known)
    assert rc == 0, out + err
    # OpenSSH's own lookup finds the entry (hashed or not), with the host's real key.
    found = subprocess.run(["ssh-keygen", "-F", ip, "-f", str(known)], capture_output=True, text=True)
    assert found.returncode == 0 and lab.host(host).public_key.split()[1] in found.stdout
    # And plain ssh, strict, with only that file, accepts the host.
    login = subprocess.run(["ssh", "-o", f"UserKnownHostsFile={known}", "-o", "GlobalKnownHostsFile=/dev/null",
                            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-F", "/dev/null",
                            "-i", str(lab.ssh_key), f"root@{ip}", "hostname"],
                           capture_output=True, text=True, timeout=60)
    assert login.returncode == 0 and login.stdout.strip() == host, login.stderr
    # Known now: the next run needs no flag and records nothing more.
    recorded = known.read_text()
    rc, out, err = plan(lab, host, tmp_path, home, known_hosts=known)
    assert rc == 0, out + err
    assert known.read_text() == recorded and len(recorded.splitlines()) == 1
    assert not (home / ".ssh").exists()  # recorded in the inventory's file, not the user's


def test_the_users_known_hosts_counts_and_bad_lines_do_not_break_it(lab, pair, tmp_path, home):
    """~/.ssh/known_hosts as users have it: a CA line, a corrupt line, a stale key before the right one.

    paramiko's loader raised on the first two (every connection failed) and
    compared with the stale key only (a changed-key refusal).
    """
    host, other = pair
    ip = lab.host(host).ip
    (home / ".ssh").mkdir(mode=0o700)
    (home / ".ssh" / "known_hosts").write_text("\n".join([
        f"@cert-authority *.cluster.example {lab.host(other).public_key}",
        "broken.example ssh-ed25519 AAAA!!!notbase64",
        f"{ip} {lab.host(other).public_key}",
        f"{ip} {lab.host(host).public_key}",
    ]) + "\n")
    rc, out, err = plan(lab, host, tmp_path, home)
    assert rc == 0, out + err
    assert succeeded(out, host)


def test_user_known_hosts_file_from_ssh_config(lab, pair, tmp_path, home):
    """ssh_config's UserKnownHostsFile (two files): keys are read from both, new ones go to the first."""
    host, _ = pair
    ip = lab.host(host).ip
    first, second = tmp_path / "kh-first", tmp_path / "kh-second"
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(f"Host {ip}\n    UserKnownHostsFile {first} {second}\n")
    second.write_text(f"{ip} {lab.host(host).public_key}\n")
    rc, out, err = plan(lab, host, tmp_path, home, ssh_args=("-S", str(ssh_config)))
    assert rc == 0, out + err
    second.unlink()
    rc, out, err = plan(lab, host, tmp_path, home, ssh_args=("-S", str(ssh_config)))
    assert rc == 1 and first_error(out, host).startswith("connect: unknown host key"), out + err
    assert f">> {first})" in first_error(out, host)
    rc, out, err = plan(lab, host, tmp_path, home, "--accept-new-host-keys", ssh_args=("-S", str(ssh_config)))
    assert rc == 0, out + err
    found = subprocess.run(["ssh-keygen", "-F", ip, "-f", str(first)], capture_output=True, text=True)
    assert found.returncode == 0 and lab.host(host).public_key.split()[1] in found.stdout
    assert not second.exists() and not (home / ".ssh").exists()


def in_netns(lab, host, *argv, check=True):
    return subprocess.run(["nsenter", f"--net={lab.host(host).netns_path}", "--", *argv],
                          capture_output=True, text=True, check=check, timeout=60)


def test_connect_timeout_on_a_port_that_never_answers(lab, pair, tmp_path, home):
    """SYNs dropped (a firewall, a dead route): 'timed out after Ns', not a hang.

    Port 2222, dropped inside the host's own namespace: the lab's sshd on
    port 22 stays healthy for everyone else.
    """
    host, _ = pair
    rule = ["INPUT", "-p", "tcp", "--dport", "2222", "-j", "DROP"]
    inventory = make_inventory(lab, tmp_path / "hosts.ini", [host],
                               host_vars={host: {"port": 2222, "connect_timeout": 2}})
    in_netns(lab, host, "iptables", "-w", "-I", *rule)
    try:
        rc, out, err = run_fab("rollout", "--inventory", str(inventory), "--plan", env=fab_env({"HOME": str(home)}))
    finally:
        in_netns(lab, host, "iptables", "-w", "-D", *rule)
    assert rc == 1, out + err
    assert first_error(out, host) == f"connect: cannot reach root@{lab.host(host).ip}:2222: timed out after 2s"


@pytest.fixture
def second_sshd(lab, pair, tmp_path):
    """A private sshd on port 2222 in the first test host's namespace (the lab's own config and keys).

    Lets a test cut a connection silently without touching the lab's sshd;
    stopped by its pid afterwards.
    """
    host, _ = pair
    lab_host = lab.host(host)
    config = tmp_path / "sshd_config"
    text = lab_host.sshd_config.read_text()
    text = re.sub(r"(?m)^ListenAddress .*$", f"ListenAddress {lab_host.ip}:2222", text)
    text = re.sub(r"(?m)^PidFile .*$", f"PidFile {tmp_path / 'sshd.pid'}", text)
    if f"{tmp_path / 'sshd.pid'}" not in text:
        text += f"\nPidFile {tmp_path / 'sshd.pid'}\n"
    config.write_text(text)
    subprocess.run(["ip", "netns", "exec", lab_host.netns, "/usr/sbin/sshd", "-f", str(config),
                    "-E", str(tmp_path / "sshd.log")], check=True, timeout=30)
    # sshd forks into the background before it writes its pid file and listens: wait for both.
    pidfile = tmp_path / "sshd.pid"
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip().isdigit(), 30, "the second sshd's pid file")
    wait_for(lambda: tcp_answers(lab_host.ip, 2222, timeout=1), 30, "the second sshd on port 2222")
    pid = int(pidfile.read_text())
    yield host
    for victim in [pid] + children_of(pid):
        try:
            os.kill(victim, signal.SIGTERM)
        except ProcessLookupError:
            pass
    wait_gone(pid)


def test_keepalive_gives_up_on_a_host_that_goes_silent(lab, second_sshd, tmp_path):
    """Every packet to and from the host dropped mid-command: the run ends with one line, not a hang.

    Only keepalives make the silence visible (the command prints nothing),
    and TCP_USER_TIMEOUT turns their going unanswered into a dropped
    connection after DEAD_PEER_SECONDS, as OpenSSH's ServerAliveCountMax does.
    """
    from tasks.runtime.inventory import load_hosts
    from tasks.runtime.remote import RemoteError
    from tasks.runtime.ssh import DEAD_PEER_SECONDS, KEEPALIVE_SECONDS, connect

    host = second_sshd
    known = tmp_path / "known_hosts"
    known.write_text(f"[{lab.host(host).ip}]:2222 {lab.host(host).public_key}\n")  # same key, other port
    inventory = make_inventory(lab, tmp_path / "hosts.ini", [host],
                               host_vars={host: {"port": 2222, "known_hosts": known}})
    cfg = load_hosts(str(inventory), limit=host)[0]
    remote = connect(cfg)
    sock = remote.transport.sock
    assert sock.getsockopt(6, 18) == DEAD_PEER_SECONDS * 1000  # IPPROTO_TCP, TCP_USER_TIMEOUT
    outcome, running = {}, threading.Event()

    def command():
        try:
            outcome["result"] = remote.run("echo running; sleep 600", step="probe",
                                           on_line=lambda line: running.set())
        except Exception as exc:  # the point of the test: which exception, with which message
            outcome["error"] = exc

    rules = [["INPUT", "-p", "tcp", "--dport", "2222", "-j", "DROP"],
             ["OUTPUT", "-p", "tcp", "--sport", "2222", "-j", "DROP"]]
    worker = threading.Thread(target=command, daemon=True)
    worker.start()
    assert running.wait(60), outcome  # the command runs: from now on the host says nothing
    for rule in rules:
        in_netns(lab, host, "iptables", "-w", "-I", *rule)
    try:
        # A bound for a hung test, not a speed check: keepalive interval + dead-peer time + slack.
        worker.join(KEEPALIVE_SECONDS + DEAD_PEER_SECONDS + 60)
    finally:
        for rule in rules:
            in_netns(lab, host, "iptables", "-w", "-D", *rule, check=False)
        remote.close()
    assert not worker.is_alive(), "the command still waits on a host that went silent"
    error = outcome.get("error")
    assert isinstance(error, RemoteError), outcome
    assert str(error) == (f"{host}: probe: connection lost (SSH transport closed by the host or the network) "
                          f"while the command ran")
