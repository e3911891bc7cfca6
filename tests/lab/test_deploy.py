"""`fab -H host deploy` end to end on lab hosts, checked by independent means.

Every check below uses plain OpenSSH + ip/docker on the host (``ssh_run``,
``docker_on``) or a TCP connection from the controller, never xcatfab's own
fact code.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from tests.lab import fabrun
from tests.lab.fabrun import recap, tcp_answers


def fab(*args, **kwargs):
    """The real `fab`, its recap followed by each host's connection and command counts."""
    return fabrun.fab(*args, counts=True, **kwargs)


def counts(proc, host):
    match = re.search(rf"^{re.escape(host)}: connections=(\d+) commands=(\d+)", proc.stdout, re.M)
    assert match, proc.stdout
    return int(match.group(1)), int(match.group(2))


def wait_for(check, timeout=60, interval=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


def addresses(ssh_run, host):
    """{ifname: [cidr, ...]} of global IPv4 addresses, read with `ip -j addr` over plain ssh."""
    links = json.loads(ssh_run(host, "ip -j -4 addr show").stdout)
    return {link["ifname"]: [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])
                             if a.get("scope") == "global"] for link in links}


def site(docker_on, host, ctr="xcatmn"):
    out = docker_on(host, "exec", ctr, "sh", "-c", ". /etc/profile.d/xcat.sh; tabdump site").stdout
    return dict(re.findall(r'^"([^"]+)","([^"]*)"', out, re.M))


@pytest.fixture
def deploy_host(lab, test_hosts):
    """A clean lab host (the first test host) and its inventory line."""
    name = test_hosts[0]
    lab.reset_host(name)
    yield lab.host(name)
    lab.reset_host(name)


@pytest.mark.parametrize("mode", ["bridge", "netns", "macvlan"])
def test_deploy_from_nothing_each_network_mode(lab, deploy_host, ssh_run, docker_on, mode):
    host, inv = deploy_host.name, str(lab.inventory)
    ip = deploy_host.container_ip
    host_cidr = f"{deploy_host.ip}/24"
    first = fab("-H", host, "deploy", "--inventory", inv, "--set", f"network_mode={mode}")
    assert first.returncode == 0, first.stdout + first.stderr
    ok, changed, failed = recap(first, host)
    assert failed == 0 and f"{host} | changed: [bridge]" in first.stdout
    assert f"{host} | changed: [container]" in first.stdout
    # The SSH session that moved the address survived: one connection for the whole run.
    assert counts(first, host)[0] == 1

    # Reachable from the controller, the host address moved onto the bridge.
    assert wait_for(lambda: tcp_answers(ip, timeout=2.0)), f"{ip}:3001 does not answer ({mode})"
    addrs = addresses(ssh_run, host)
    assert addrs.get("mydocker0") == [host_cidr] and not addrs.get("eth0")
    eth0 = json.loads(ssh_run(host, "ip -j link show eth0").stdout)[0]
    assert eth0.get("master") == "mydocker0"
    assert site(docker_on, host)["master"] == ip
    if mode == "macvlan":
        # The host's shim must not answer the LAN's ARP for the host: the controller
        # still reaches the host at the bridge's pinned MAC.
        ssh_run(host, "true")
        neigh = subprocess.run(["ip", "-j", "neigh", "show", deploy_host.ip], capture_output=True, text=True)
        assert [n.get("lladdr") for n in json.loads(neigh.stdout or "[]")] == [deploy_host.mac], neigh.stdout

    # Converged: nothing changes, one connection, one command.
    second = fab("-H", host, "deploy", "--inventory", inv, "--set", f"network_mode={mode}")
    assert second.returncode == 0, second.stdout + second.stderr
    assert recap(second, host)[1:] == (0, 0)
    assert counts(second, host) == (1, 1)

    # A restart keeps the address (Docker's for bridge/macvlan, the watcher's for netns)
    # and /etc/hosts (a host file, bind-mounted).
    docker_on(host, "restart", "xcatmn")
    assert wait_for(lambda: tcp_answers(ip, timeout=2.0), timeout=90), f"{ip}:3001 gone after restart ({mode})"
    hosts = docker_on(host, "exec", "xcatmn", "cat", "/etc/hosts").stdout
    assert re.search(rf"^{re.escape(ip)}\s+xcatmn\.cluster xcatmn$", hosts, re.M), hosts


def test_plan_changes_nothing(lab, deploy_host):
    host = deploy_host.name
    before = lab.snapshot(host)
    proc = fab("-H", host, "deploy", "--plan", "--inventory", str(lab.inventory))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "would create bridge mydocker0" in proc.stdout or "would mydocker0: create bridge" in proc.stdout
    assert "would docker run xcatmn" in proc.stdout
    assert lab.snapshot(host) == before


def test_failed_bridge_change_is_rolled_back_by_the_host(lab, deploy_host, ssh_run):
    """A firewall that drops everything arriving on the new bridge cuts xcatfab off:
    it cannot confirm, so the host's own timer puts the address back on eth0."""
    host = deploy_host.name
    # Installed beforehand by the "site's" firewall; matches the bridge once it exists.
    ssh_run(host, "iptables -I INPUT -i mydocker0 -j DROP")
    try:
        started = time.monotonic()
        proc = fab("-H", host, "bridge", "--inventory", str(lab.inventory), "--set", "rollback_seconds=15")
        took = time.monotonic() - started
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "rolled it back" in proc.stdout, proc.stdout
        assert took >= 15  # the host, not xcatfab, undid it when its timer ran out
        addrs = addresses(ssh_run, host)  # reachable as before
        assert addrs.get("eth0") == [f"{deploy_host.ip}/24"] and "mydocker0" not in addrs
        route = ssh_run(host, "ip -4 route show default").stdout
        assert "dev eth0" in route
    finally:
        ssh_run(host, "iptables -D INPUT -i mydocker0 -j DROP", check=False)


def test_a_rollback_left_armed_by_an_interrupted_run_is_cancelled_by_the_next(lab, deploy_host, ssh_run,
                                                                               monkeypatch):
    """Ctrl-C right after the change applied, before it was confirmed: the host keeps a rollback
    armed. The next run must not call the bridge converged and let it fire: it confirms and
    cancels it, and the address stays on the bridge past the old deadline."""
    from tasks.ops.deploy import DeployOptions, run_host
    from tasks.runtime import guarded
    from tasks.runtime.inventory import load_hosts
    from tasks.runtime.report import Output

    host, seconds = deploy_host.name, 25
    sets = [f"rollback_seconds={seconds}"]
    cfg = load_hosts(str(lab.inventory), names=[host], overrides=sets)[0]

    def interrupted(run, change, deadline):
        raise KeyboardInterrupt  # the admin's Ctrl-C, the moment the change is on the host

    monkeypatch.setattr(guarded, "_confirm", interrupted)
    armed_at = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_host(cfg, ["bridge"], DeployOptions(), Output())
    monkeypatch.undo()
    # Independently: the change is on the host, and its rollback sleeper is waiting.
    assert addresses(ssh_run, host).get("mydocker0") == [f"{deploy_host.ip}/24"]
    sleeper = f"{cfg.state_dir}/run/bridge-rollback.claim"  # in the sleeper's command line
    assert sleeper in ssh_run(host, "ps -eo args").stdout

    proc = fab("-H", host, "bridge", "--inventory", str(lab.inventory), "--set", sets[0])
    assert proc.returncode == 0 and recap(proc, host)[1:] == (1, 0), proc.stdout + proc.stderr
    assert "cancel its pending rollback" in proc.stdout
    assert sleeper not in ssh_run(host, "ps -eo args").stdout
    time.sleep(max(0.0, armed_at + seconds + 3 - time.monotonic()))
    addrs = addresses(ssh_run, host)
    assert addrs.get("mydocker0") == [f"{deploy_host.ip}/24"] and not addrs.get("eth0"), addrs
    again = fab("-H", host, "bridge", "--inventory", str(lab.inventory), "--set", sets[0])
    assert again.returncode == 0 and recap(again, host)[1:] == (0, 0), again.stdout


def test_daemon_json_is_merged_not_clobbered(lab, test_hosts, ssh_run):
    """The docker step merges its keys into the host's daemon.json, keeps the others,
    restarts dockerd with the inventory's docker_restart, and then leaves it alone."""
    host = test_hosts[1]
    lab.reset_host(host)
    ssh_run(host, "echo '{\"max-concurrent-downloads\": 2}' > /etc/docker/daemon.json")
    try:
        sets = ["--set", 'docker_daemon_json={"labels": ["xcatfab=test"]}']
        first = fab("-H", host, "docker", "--inventory", str(lab.inventory), *sets)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "merge labels into /etc/docker/daemon.json" in first.stdout
        merged = json.loads(ssh_run(host, "cat /etc/docker/daemon.json").stdout)
        assert merged == {"max-concurrent-downloads": 2, "labels": ["xcatfab=test"]}
        labels = ssh_run(host, "docker info --format '{{json .Labels}}'").stdout
        assert "xcatfab=test" in labels  # dockerd was restarted with the merged file
        again = fab("-H", host, "docker", "--inventory", str(lab.inventory), *sets)
        assert recap(again, host)[1:] == (0, 0), again.stdout
    finally:
        lab.reset_host(host)


def test_a_daemon_json_dockerd_refuses_is_put_back(lab, test_hosts, ssh_run):
    """A value dockerd rejects must not leave the host without a working engine."""
    host = test_hosts[1]
    lab.reset_host(host)
    ssh_run(host, "echo '{\"max-concurrent-downloads\": 2}' > /etc/docker/daemon.json")
    try:
        bad = fab("-H", host, "docker", "--inventory", str(lab.inventory),
                  "--set", 'docker_daemon_json={"labels": ["not-key-value"]}')
        assert bad.returncode == 1
        assert "dockerd did not start with the merged daemon.json; put the previous one back" in bad.stdout
        assert json.loads(ssh_run(host, "cat /etc/docker/daemon.json").stdout) == {"max-concurrent-downloads": 2}
        ssh_run(host, "docker info --format '{{.Name}}'")  # the engine answers
    finally:
        lab.reset_host(host)
