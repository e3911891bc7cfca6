"""`xcat`, `node`, `status` and `teardown` on deployed lab hosts, checked by independent means.

Every check uses plain OpenSSH + ip/docker/iptables on the host (``ssh_run``,
``docker_on``), the lab's own snapshot (``lab.snapshot``), a TCP connection
from the controller, or the machine's process table (lab hosts share it),
never xcatfab's fact code. The first two test hosts are used; each module
run starts them from a clean state (``lab.reset_host``) and deploys them once.
"""

from __future__ import annotations

import json
import secrets

import pytest

from tests.lab.fabrun import CmdlineSampler, fab, normalized, recap, tcp_answers
from tests.labkit.common import process_table

XCAT_PROFILE = ". /etc/profile.d/xcat.sh"


def in_container(docker_on, host, command, check=True):
    """An xCAT command in the host's container, through the docker CLI on its own socket."""
    return docker_on(host, "exec", "xcatmn", "sh", "-c", f"{XCAT_PROFILE}; {command}", check=check)


def lsdef_node(docker_on, host, node):
    proc = in_container(docker_on, host, f"lsdef -t node -o {node} -l", check=False)
    attrs = {}
    for line in proc.stdout.splitlines():
        if line.startswith("    ") and "=" in line:
            key, _sep, value = line.strip().partition("=")
            attrs[key] = value
    return attrs


@pytest.fixture(scope="module")
def two(lab, test_hosts):
    """Two clean hosts, each snapshotted before deploy, then deployed by one `fab -H a,b deploy`."""
    assert len(test_hosts) >= 2, "these tests need two lab hosts (XCATFAB_TEST_HOSTS=a,b)"
    names = test_hosts[:2]
    before = {}
    for name in names:
        lab.reset_host(name, images=True)  # a bare host: no xCAT image either
        before[name] = lab.snapshot(name)
    proc = fab("-H", ",".join(names), "deploy", "--inventory", str(lab.inventory))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    yield names, before
    for name in names:
        lab.reset_host(name)


# ------------------------------------------------------------------ xcat
def test_xcat_returns_the_commands_output_and_status(lab, two, docker_on):
    host = two[0][0]
    inv = str(lab.inventory)
    ip = lab.host(host).container_ip
    proc = fab("-H", host, "xcat", "--inventory", inv, "--", "lsdef", "-t", "site", "-o", "clustersite",
               "-i", "master")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == in_container(docker_on, host, "lsdef -t site -o clustersite -i master").stdout
    assert f"master={ip}" in proc.stdout
    # A failing command: its own status and message.
    proc = fab("-H", host, "xcat", "--inventory", inv, "--", "mkdef", "-t", "node", "-o", "nogroups")
    assert proc.returncode == 1
    assert "Attribute 'groups' is not specified" in proc.stderr
    proc = fab("-H", host, "xcat", "--inventory", inv, "--cmd",
               "lsdef -t site -o clustersite | grep -c master=; exit 7")
    assert (proc.returncode, proc.stdout.strip()) == (7, "1")
    # The words after -- arrive as they were given: no second word splitting or expansion.
    proc = fab("-H", host, "xcat", "--inventory", inv, "--", "printf", "[%s]", "a  b", "$XCATROOT", "x;y")
    assert (proc.returncode, proc.stdout) == (0, "[a  b][$XCATROOT][x;y]\n")  # output goes line by line


def test_xcat_on_two_hosts_prefixes_lines_and_exits_with_the_worst_status(lab, two, docker_on):
    names = two[0]
    inv = str(lab.inventory)
    in_container(docker_on, names[0], "mkdef -t node -o onlyhere groups=all")
    # (With no node at all, xCAT's lsdef says so and exits 0: give the other host one.)
    in_container(docker_on, names[1], "mkdef -t node -o other groups=all")
    try:
        proc = fab("-H", ",".join(names), "xcat", "--inventory", inv, "--", "lsdef", "-t", "node", "-o",
                   "onlyhere", "-i", "groups")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert f"{names[0]} | Object name: onlyhere" in proc.stdout.splitlines()
        assert f"{names[0]} |     groups=all" in proc.stdout.splitlines()
        assert any(line.startswith(f"{names[1]} | ") and "Could not find" in line
                   for line in proc.stderr.splitlines())
        proc = fab("-H", ",".join(names), "xcat", "--inventory", inv, "--", "lsdef", "-t", "site", "-i", "master")
        assert proc.returncode == 0
        for name in names:
            assert f"{name} |     master={lab.host(name).container_ip}" in proc.stdout.splitlines()
    finally:
        in_container(docker_on, names[0], "rmdef -t node -o onlyhere")
        in_container(docker_on, names[1], "rmdef -t node -o other")


# ------------------------------------------------------------------ node
def test_node_creates_changes_and_converges_without_showing_the_password(lab, two, docker_on):
    host = two[0][0]
    inv = str(lab.inventory)
    password = "bmc-" + secrets.token_urlsafe(12)
    args = ["-H", host, "node", "cn01", "--bmc", "198.18.0.250", "--bmc-user", "ADMIN", "--inventory", inv]
    runs = []
    proc = fab(*args, env={"XCATFAB_BMC_PASSWORD": password}, sampler=(sampler := CmdlineSampler()))
    runs.append((proc, sampler))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert recap(proc, host) == (1, 1, 0)
    assert ("create node cn01: groups=all, mgt=ipmi, bmc=198.18.0.250, bmcusername=ADMIN, bmcpassword=********"
            in proc.stdout)
    have = lsdef_node(docker_on, host, "cn01")
    assert {k: have.get(k) for k in ("groups", "mgt", "bmc", "bmcusername")} == {
        "groups": "all", "mgt": "ipmi", "bmc": "198.18.0.250", "bmcusername": "ADMIN"}
    assert have.get("bmcpassword") == password  # (compared, never printed)
    # The stand-in logs each command and the stanzas read from stdin: the node came as a stanza.
    log = in_container(docker_on, host, "cat /var/log/xcat/standin-commands.log").stdout
    assert "cmd: mkdef -z" in log and "bmcpassword=********" in log and password not in log

    # The same again: nothing to change.
    proc = fab(*args, env={"XCATFAB_BMC_PASSWORD": password}, sampler=(sampler := CmdlineSampler()))
    runs.append((proc, sampler))
    assert proc.returncode == 0 and recap(proc, host) == (1, 0, 0), proc.stdout
    assert "ok: [node]" in proc.stdout

    # A new BMC address and password: both changed, the groups left alone.
    in_container(docker_on, host, "chdef -t node -o cn01 groups=compute")
    new_password = "bmc-" + secrets.token_urlsafe(12)
    args[args.index("198.18.0.250")] = "198.18.0.251"
    proc = fab(*args, env={"XCATFAB_BMC_PASSWORD": new_password}, sampler=(sampler := CmdlineSampler()))
    runs.append((proc, sampler))
    assert proc.returncode == 0 and recap(proc, host) == (1, 1, 0), proc.stdout
    assert "bmc: 198.18.0.250 -> 198.18.0.251" in proc.stdout and "bmcpassword: changed -> ********" in proc.stdout
    have = lsdef_node(docker_on, host, "cn01")
    assert (have.get("bmc"), have.get("groups"), have.get("bmcpassword") == new_password) == (
        "198.18.0.251", "compute", True)
    assert "cmd: chdef -z" in in_container(docker_on, host, "cat /var/log/xcat/standin-commands.log").stdout

    for run_proc, sampled in runs:
        for secret in (password, new_password):
            assert secret not in run_proc.stdout + run_proc.stderr
            assert not [c for c in sampled.seen if secret in c], "a password showed in a process's command line"
    # The samplers did see the hosts' side of the runs: xcatfab's docker exec into the container.
    assert any("docker exec" in c and "xcatmn" in c for _proc, sampled in runs for c in sampled.seen)

    # `xcat` shows the node with the password masked.
    proc = fab("-H", host, "xcat", "--inventory", inv, "--", "lsdef", "cn01",
               env={"XCATFAB_BMC_PASSWORD": new_password})
    assert "    bmcpassword=********" in proc.stdout.splitlines() and new_password not in proc.stdout


# ------------------------------------------------------------------ status
def test_status_shows_every_host_in_one_table(lab, two, ssh_run):
    names = two[0]
    first = lab.host(names[0])
    ssh_run(names[0], f"truncate -s 1M {first.iso_dir}/Test-9.4-x86_64-dvd.iso && "
                      f"mkdir -p {first.data_dir}/install/test9.4/x86_64")
    try:
        proc = fab("-H", ",".join(names), "status", "--inventory", str(lab.inventory))
    finally:
        ssh_run(names[0], f"rm -rf {first.iso_dir}/Test-9.4-x86_64-dvd.iso {first.data_dir}/install/test9.4")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:9] == ["host", "docker", "image", "bridge", "container", "address", "xcatd", "ISOs",
                                    "media"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert sorted(rows) == sorted(names) and len(lines) == 3
    for name in names:
        h = lab.host(name)
        # Independent truth for what the row says.
        addrs = json.loads(ssh_run(name, "ip -j -4 addr show dev mydocker0").stdout)[0]["addr_info"]
        assert [a["local"] for a in addrs] == [h.ip]
        assert tcp_answers(h.container_ip)
        row = rows[name]
        assert f"mydocker0 (eth0, {h.host_ip})" in row
        assert "xcatmn running" in row and "differs" not in row
        assert f" {h.container_ip}/24 " in row and f"answering on {h.container_ip}:3001" in row
    assert "Test-9.4-x86_64-dvd.iso (1.0M)" in rows[names[0]] and "test9.4/x86_64" in rows[names[0]]
    assert rows[names[1]].split()[-2:] == ["none", "none"]  # no ISOs, no media, no problems


# ------------------------------------------------------------------ teardown
def test_status_then_teardown_restore_network_leaves_the_host_as_before_deploy(lab, two, ssh_run, docker_on):
    host = two[0][0]
    before = two[1][host]
    inv = str(lab.inventory)
    assert fab("-H", host, "status", "--inventory", inv).returncode == 0
    image_id = docker_on(host, "image", "inspect", "--format", "{{.Id}}", "xcatfab/xcat:standin-lab").stdout.strip()
    proc = fab("-H", host, "teardown", "--restore-network", "--purge-data", "--inventory", inv)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert recap(proc, host) == (3, 2, 0)
    assert "restore-network: verified from the controller, undo disarmed" in proc.stdout
    # Independently: the address is back on eth0, no bridge, no container, the image stays.
    eth0 = json.loads(ssh_run(host, "ip -j -4 addr show dev eth0").stdout)[0]
    assert [a["local"] for a in eth0["addr_info"]] == [lab.host(host).ip] and "master" not in eth0
    assert ssh_run(host, "ip link show mydocker0", check=False).returncode != 0
    assert ssh_run(host, "ip route show default").stdout.split()[:5] == ["default", "via", "198.18.0.1", "dev", "eth0"]
    assert docker_on(host, "ps", "-aq").stdout.strip() == ""
    assert "mydocker0" not in ssh_run(host, "iptables -S DOCKER-USER").stdout
    assert docker_on(host, "image", "inspect", image_id).returncode == 0
    after = lab.snapshot(host)
    assert normalized(after, [image_id]) == normalized(before)
    assert image_id in {i["Id"] for i in after["images"]} - {i["Id"] for i in before["images"]}
    # A second run has nothing to do, and changes nothing.
    proc = fab("-H", host, "teardown", "--restore-network", "--purge-data", "--inventory", inv)
    assert proc.returncode == 0 and recap(proc, host) == (3, 0, 0), proc.stdout + proc.stderr
    assert normalized(lab.snapshot(host)) == normalized(after)


def test_teardown_keeps_network_and_data_unless_asked_then_restores_later(lab, two, ssh_run, docker_on):
    host = two[0][1]
    h = lab.host(host)
    before = two[1][host]
    inv = str(lab.inventory)
    plan = fab("-H", host, "teardown", "--plan", "--inventory", inv)
    assert plan.returncode == 0 and "would remove container xcatmn" in plan.stdout
    assert docker_on(host, "ps", "-q").stdout.strip()  # --plan changed nothing
    proc = fab("-H", host, "teardown", "--inventory", inv)
    assert proc.returncode == 0 and recap(proc, host) == (2, 1, 0), proc.stdout + proc.stderr
    assert docker_on(host, "ps", "-aq").stdout.strip() == ""
    assert "xcatnet" not in docker_on(host, "network", "ls", "--format", "{{.Name}}").stdout.split()
    addrs = json.loads(ssh_run(host, "ip -j -4 addr show dev mydocker0").stdout)[0]["addr_info"]
    assert [a["local"] for a in addrs] == [h.ip]  # the bridge and the address stay
    assert ssh_run(host, f"test -f {h.data_dir}/etc-xcat/site.csv", check=False).returncode == 0  # data stays
    proc = fab("-H", host, "teardown", "--inventory", inv)
    assert proc.returncode == 0 and recap(proc, host) == (2, 0, 0)
    # Later: the network back, the data purged; the host as before deploy.
    proc = fab("-H", host, "teardown", "--restore-network", "--purge-data", "--inventory", inv)
    assert proc.returncode == 0 and recap(proc, host) == (3, 2, 0), proc.stdout + proc.stderr
    # Only the xCAT image stays by design: any other image added or removed shows.
    image_ids = [xcat_image_id(docker_on, host)]
    assert normalized(lab.snapshot(host), image_ids) == normalized(before, image_ids)


def xcat_image_id(docker_on, host):
    """The ID of the lab's xCAT image on ``host``'s engine (it must be there)."""
    return docker_on(host, "image", "inspect", "--format", "{{.Id}}", "xcatfab/xcat:standin-lab").stdout.strip()


def processes_mentioning(text):
    """Command lines of live processes containing ``text`` (the machine's table: lab hosts share it)."""
    return [p["cmdline"] for p in process_table() if text in p["cmdline"]]


@pytest.mark.parametrize("mode", ["netns", "macvlan"])
def test_teardown_removes_the_netns_watcher_and_the_macvlan_shim(lab, two, mode, ssh_run, docker_on):
    from tasks.runtime.inventory import load_hosts
    from tasks.steps.container import shim_name

    host = two[0][1]
    before = two[1][host]
    inv = str(lab.inventory)
    lab.reset_host(host)
    proc = fab("-H", host, "deploy", "--inventory", inv, "--set", f"network_mode={mode}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    watch_script = f"{lab.host(host).xcatfab_state_dir}/netns-watch-xcatmn.sh"
    shim = shim_name(load_hosts(inv, names=[host])[0])
    if mode == "netns":
        assert processes_mentioning(watch_script)
    else:
        assert ssh_run(host, f"ip link show {shim}").returncode == 0
    # The inventory says bridge mode now: teardown still finds what the other mode left.
    proc = fab("-H", host, "teardown", "--restore-network", "--purge-data", "--inventory", inv)
    assert proc.returncode == 0 and recap(proc, host) == (3, 2, 0), proc.stdout + proc.stderr
    assert not processes_mentioning(watch_script)
    assert ssh_run(host, f"ip link show {shim}", check=False).returncode != 0
    # Only the xCAT image stays by design: any other image added or removed shows.
    image_ids = [xcat_image_id(docker_on, host)]
    assert normalized(lab.snapshot(host), image_ids) == normalized(before, image_ids)
