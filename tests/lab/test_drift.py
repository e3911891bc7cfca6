"""Drift on every managed attribute is seen (`--plan` shows it, changing nothing)
and corrected by the next deploy. Each drift is made the way an admin or a stray
script would make it (docker/ip/iptables/xCAT commands on the host) and each fix
is checked with the same independent tools, never with xcatfab's fact code.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from tasks.runtime.inventory import load_hosts
from tasks.steps.container import run_args
from tests.lab import fabrun


def fab(*args, **kwargs):
    """The real `fab`, its recap followed by each host's connection and command counts."""
    return fabrun.fab(*args, counts=True, **kwargs)


@pytest.fixture(scope="module")
def deployed(lab, test_hosts):
    """One host deployed (bridge mode) by xcatfab, shared by the drift tests in turn."""
    name = test_hosts[0]
    lab.reset_host(name)
    inv = str(lab.inventory)
    sets = ["--set", "network_mode=bridge"]
    proc = fab("-H", name, "deploy", "--inventory", inv, *sets)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    yield name, inv, sets
    lab.reset_host(name)


def settled_snapshot(lab, host, docker_on):
    """The host's state once xcatd answers in the container, without what moves by
    itself or by merely reading: the health-check log, Docker's list of exec sessions
    and xCAT's own command logs (a tabdump read appends to them)."""
    ctr = docker_on(host, "ps", "-q", "--filter", "name=^xcatmn$").stdout.strip()
    if ctr:
        docker_on(host, "exec", "xcatmn", "bash", "-c",
                  "i=0; until (exec 3<>/dev/tcp/127.0.0.1/3001) 2>/dev/null || [ $i -ge 240 ]; "
                  "do sleep 0.5; i=$((i+1)); done")
    snap = lab.snapshot(host)
    for container in snap["containers"]:
        container.get("State", {}).pop("Health", None)
        container.pop("ExecIDs", None)
    logs = str(lab.host(host).data_dir / "log")
    snap["files"] = {path: digest for path, digest in snap["files"].items() if not path.startswith(logs)}
    return snap


def inspect(docker_on, host, obj="xcatmn"):
    return json.loads(docker_on(host, "inspect", obj).stdout)[0]


def rerun(docker_on, host, args):
    """Replace the container by one started by hand with ``args`` (a drifted container)."""
    docker_on(host, "rm", "-f", "xcatmn")
    docker_on(host, "run", "-d", *args)


def site_master(docker_on, host):
    out = docker_on(host, "exec", "xcatmn", "sh", "-c", ". /etc/profile.d/xcat.sh; tabdump site").stdout
    return dict(re.findall(r'^"([^"]+)","([^"]*)"', out, re.M))["master"]


# name -> (make the drift, words --plan must show, independent check after the fix)
def _drifts(lab, host, inv, ssh_run, docker_on):
    ip = lab.host(host).container_ip
    other_image = "xcatfab/drifted:1"

    def wanted_args():
        return run_args(load_hosts(inv, names=[host])[0])

    def image_drift():
        docker_on(host, "commit", "xcatmn", other_image)
        rerun(docker_on, host, [other_image if a == "xcatfab/xcat:standin-lab" else a for a in wanted_args()])

    return {
        "image": (image_drift, "recreate xcatmn: image",
                  lambda: inspect(docker_on, host)["Image"]
                  == inspect(docker_on, host, "xcatfab/xcat:standin-lab")["Id"]),
        "address": (lambda: (docker_on(host, "network", "disconnect", "-f", "xcatnet", "xcatmn"),
                             docker_on(host, "network", "connect", "xcatnet", "xcatmn")),
                    "recreate xcatmn: address",
                    lambda: inspect(docker_on, host)["NetworkSettings"]["Networks"]["xcatnet"]
                    ["IPAMConfig"]["IPv4Address"] == ip),
        "hostname": (lambda: rerun(docker_on, host, _swap_after(wanted_args(), "--hostname", "wronghost")),
                     "recreate xcatmn: hostname",
                     lambda: inspect(docker_on, host)["Config"]["Hostname"] == "xcatmn"),
        "capabilities": (lambda: rerun(docker_on, host, _add_before_image(wanted_args(), "--cap-drop", "NET_RAW")),
                         "recreate xcatmn: cap_drop",
                         lambda: [c.removeprefix("CAP_") for c in inspect(docker_on, host)["HostConfig"]["CapDrop"]]
                         == ["SYS_RESOURCE"]),
        "mounts": (lambda: rerun(docker_on, host, _drop_pair(wanted_args(), "--volume", ":/iso")),
                   "recreate xcatmn: mounts",
                   lambda: any(b.endswith(":/iso") for b in inspect(docker_on, host)["HostConfig"]["Binds"])),
        "restart policy": (lambda: docker_on(host, "update", "--restart", "no", "xcatmn"),
                           "recreate xcatmn: restart policy no -> unless-stopped",
                           lambda: inspect(docker_on, host)["HostConfig"]["RestartPolicy"]["Name"]
                           == "unless-stopped"),
        "stopped": (lambda: docker_on(host, "stop", "xcatmn"), "start xcatmn",
                    lambda: inspect(docker_on, host)["State"]["Running"]),
        # (inhibit_ipv4 stays: without it Docker would put the gateway's address on the
        # bridge and take the whole host off the network.)
        "network ip-range": (lambda: (docker_on(host, "rm", "-f", "xcatmn"),
                                      docker_on(host, "network", "rm", "xcatnet"),
                                      docker_on(host, "network", "create", "--driver", "bridge", "--subnet",
                                                "198.18.0.0/24", "--gateway", "198.18.0.1", "--opt",
                                                "com.docker.network.bridge.name=mydocker0", "--opt",
                                                "com.docker.network.bridge.inhibit_ipv4=true", "xcatnet")),
                             "recreate Docker network xcatnet: ip_range None -> 198.18.0.",
                             lambda: inspect(docker_on, host, "xcatnet")["IPAM"]["Config"][0].get("IPRange")
                             == f"{ip}/32"),
        "bridge stp": (lambda: ssh_run(host, "ip link set mydocker0 type bridge stp_state 1 forward_delay 1500"),
                       "turn STP off",
                       lambda: json.loads(ssh_run(host, "ip -j -d link show mydocker0").stdout)[0]
                       ["linkinfo"]["info_data"]["stp_state"] == 0),
        "bridge mac": (lambda: ssh_run(host, "ip link set mydocker0 address 02:00:00:00:99:99"),
                       "pin mydocker0 MAC",
                       lambda: json.loads(ssh_run(host, "ip -j link show mydocker0").stdout)[0]["address"]
                       == lab.host(host).mac),
        "xcat site": (lambda: docker_on(host, "exec", "xcatmn", "sh", "-c",
                                        ". /etc/profile.d/xcat.sh; chdef -t site master=198.18.0.250"),
                      "site: master 198.18.0.250 -> " + ip,
                      lambda: site_master(docker_on, host) == ip),
        "xcat networks": (lambda: docker_on(host, "exec", "xcatmn", "sh", "-c",
                                            ". /etc/profile.d/xcat.sh; rmdef -t network -o 198_18_0_0-255_255_255_0"),
                          "networks: add 198_18_0_0-255_255_255_0",
                          lambda: '"198.18.0.0","255.255.255.0"' in docker_on(
                              host, "exec", "xcatmn", "sh", "-c", ". /etc/profile.d/xcat.sh; tabdump networks").stdout),
        "etc hosts": (lambda: docker_on(host, "exec", "xcatmn", "sh", "-c", "echo '10.9.9.9 bogus' >/etc/hosts"),
                      "write the container's /etc/hosts",
                      lambda: (lambda text: f"{ip}\txcatmn.cluster xcatmn" in text and "10.9.9.9 bogus" in text)(
                          docker_on(host, "exec", "xcatmn", "cat", "/etc/hosts").stdout)),
    }


def _swap_after(args, flag, value):
    """``args`` with the value after the first ``flag`` replaced (or the pair added)."""
    args = list(args)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args[-1:-1] = [flag, value]
    return args


def _add_before_image(args, flag, value):
    """``args`` with one more ``flag value`` pair (the image stays last)."""
    return list(args[:-1]) + [flag, value, args[-1]]


def _drop_pair(args, flag, suffix):
    """``args`` without the ``flag VALUE`` pair whose value ends with ``suffix``."""
    out, skip = [], False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg == flag and i + 1 < len(args) and args[i + 1].endswith(suffix):
            skip = True
            continue
        out.append(arg)
    return out


DRIFTS = ["image", "address", "hostname", "capabilities", "mounts", "restart policy", "stopped",
          "network ip-range", "bridge stp", "bridge mac", "xcat site", "xcat networks", "etc hosts"]


@pytest.mark.parametrize("drift", DRIFTS)
def test_drift_is_shown_by_plan_and_fixed_by_deploy(lab, deployed, ssh_run, docker_on, drift):
    host, inv, sets = deployed
    make, shown, fixed = _drifts(lab, host, inv, ssh_run, docker_on)[drift]
    make()
    before = settled_snapshot(lab, host, docker_on)
    plan = fab("-H", host, "deploy", "--plan", "--inventory", inv, *sets)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert shown in plan.stdout, plan.stdout
    assert settled_snapshot(lab, host, docker_on) == before  # --plan changed nothing
    proc = fab("-H", host, "deploy", "--inventory", inv, *sets)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(rf"^{host}\s*: ok=\d+ changed=[1-9]\d* failed=0", proc.stdout, re.M), proc.stdout
    assert fixed(), proc.stdout
    again = fab("-H", host, "deploy", "--inventory", inv, *sets)
    assert re.search(rf"^{host}\s*: ok=\d+ changed=0 failed=0", again.stdout, re.M), again.stdout


def test_forward_rule_drift_in_netns_mode(lab, deployed, ssh_run):
    """Without the DOCKER-USER accept, br_netfilter + FORWARD DROP cut the netns-mode
    container off; deploy puts the rule back and the container answers again."""
    host, inv, _sets = deployed
    # What the test relies on, set up rather than assumed: bridged frames go through
    # iptables (dockerd loads br_netfilter on a real host; the machine may not have it yet).
    if not os.path.isdir("/proc/sys/net/bridge"):
        modprobe = shutil.which("modprobe", path="/usr/sbin:/sbin:/usr/bin:/bin")
        if modprobe is None:
            pytest.skip("br_netfilter is not loaded and this machine has no modprobe to load it")
        subprocess.run([modprobe, "br_netfilter"], check=True)
    ssh_run(host, "sysctl -q -w net.bridge.bridge-nf-call-iptables=1")
    # ... and FORWARD's policy DROP, as dockerd leaves it on a real host (it sets DROP when it turns
    # forwarding on itself). A namespace inherits the machine's ip_forward: with the machine's own
    # dockerd running it is 1 already, the lab host's dockerd leaves the policy ACCEPT, and nothing
    # would be cut off.
    policy = ssh_run(host, "iptables -S FORWARD | sed -n 's/^-P FORWARD //p'")
    before = policy.stdout.strip()
    assert before in ("ACCEPT", "DROP"), policy.stdout
    ssh_run(host, "iptables -P FORWARD DROP")
    try:
        _forward_rule_comes_back(lab, host, inv, ssh_run)
    finally:
        ssh_run(host, f"iptables -P FORWARD {before}")


def _forward_rule_comes_back(lab, host, inv, ssh_run):
    import socket

    sets = ["--set", "network_mode=netns"]
    # From bridge mode: the unused Docker network goes (its own forwarding rules
    # would otherwise let the traffic through and hide the missing DOCKER-USER rule).
    proc = fab("-H", host, "deploy", "--inventory", inv, *sets)
    assert "remove Docker network xcatnet" in proc.stdout, proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rule = "DOCKER-USER -i mydocker0 -o mydocker0 -j ACCEPT"
    ssh_run(host, f"iptables -D {rule}")
    ip = lab.host(host).container_ip
    with pytest.raises(OSError):
        socket.create_connection((ip, 3001), timeout=2).close()
    proc = fab("-H", host, "deploy", "--inventory", inv, *sets)
    assert "accept forwarding across mydocker0" in proc.stdout, proc.stdout
    assert f"-A {rule}" in ssh_run(host, "iptables -S DOCKER-USER").stdout
    socket.create_connection((ip, 3001), timeout=5).close()
