"""Switching network_mode, any mode to any other, repeatedly (issue 11).

bridge -> netns -> bridge -> netns -> macvlan -> bridge: each switch converges in one
run, names and removes the old mode's pieces (the netns watcher and veth, the macvlan
shim, the Docker network), and the container answers from the controller the moment
the task reports success, with the controller's neighbour entry for it left as the
old mode made it (the container keeps its MAC in every mode). Checked with plain
ssh + ip/ps, the docker CLI on the host's engine, and TCP from the controller.
"""

from __future__ import annotations

import json
import socket
import subprocess

from tasks.runtime.inventory import load_hosts
from tasks.steps.container import mac_address, shim_name, veth_names
from tests.lab.fabrun import fab, recap

CYCLE = ["bridge", "netns", "bridge", "netns", "macvlan", "bridge"]
#: What a switch away from a mode must say it removes.
LEFTOVERS = {"netns": "remove the netns watcher and veth of xcatmn", "macvlan": "remove the macvlan shim"}


def neighbour(ip: str) -> str:
    """The controller's neighbour entry's MAC for ``ip`` ('' when it has none)."""
    entries = json.loads(subprocess.run(["ip", "-j", "neigh", "show", ip], capture_output=True,
                                        text=True).stdout or "[]")
    return (entries[0].get("lladdr") or "") if entries else ""


def answers_now(ip: str) -> bool:
    """A TCP connection to xcatd right away, with the neighbour cache as it is (not flushed)."""
    try:
        with socket.create_connection((ip, 3001), timeout=3):
            return True
    except OSError:
        return False


def pieces(lab, host, ssh_run, docker_on, cfg) -> dict:
    """Every mode's pieces on the host, read independently."""
    links = {link["ifname"] for link in json.loads(ssh_run(host, "ip -j link show").stdout)}
    watchers = [p for p in ssh_run(host, "ps -eo args").stdout.splitlines()
                if f"netns-watch-{cfg.container_name}.sh" in p and str(lab.host(host).xcatfab_state_dir) in p]
    networks = docker_on(host, "network", "ls", "--format", "{{.Name}}").stdout.split()
    return {"watcher": bool(watchers), "veth": veth_names(cfg)[0] in links, "shim": shim_name(cfg) in links,
            "network": cfg.docker_network in networks}


def test_any_mode_to_any_other_converges_in_one_run_and_leaves_nothing(lab, test_hosts, ssh_run, docker_on):
    host = test_hosts[0]
    lab.reset_host(host)
    inv, ip = str(lab.inventory), lab.host(host).container_ip
    try:
        previous = None
        for mode in CYCLE:
            sets = ["--set", f"network_mode={mode}"]
            cfg = load_hosts(inv, names=[host], overrides=[f"network_mode={mode}"])[0]
            before = neighbour(ip)
            if previous is not None:
                plan = fab("-H", host, "deploy", "--plan", "--inventory", inv, *sets)
                assert plan.returncode == 0, plan.stdout + plan.stderr
                if previous in LEFTOVERS:
                    assert "would " + LEFTOVERS[previous] in plan.stdout, (previous, mode, plan.stdout)
            proc = fab("-H", host, "deploy", "--inventory", inv, *sets)
            assert proc.returncode == 0, (previous, mode, proc.stdout + proc.stderr)
            assert answers_now(ip), f"{ip}:3001 right after the switch {previous} -> {mode}"
            if previous in LEFTOVERS:
                assert LEFTOVERS[previous] in proc.stdout, (previous, mode, proc.stdout)
            if previous is not None and before:
                # The entry the previous mode's container left is still right: same MAC.
                assert before == mac_address(cfg) and neighbour(ip) in (before, ""), (previous, mode)
            have = pieces(lab, host, ssh_run, docker_on, cfg)
            assert have == {"watcher": mode == "netns", "veth": mode == "netns", "shim": mode == "macvlan",
                            "network": mode != "netns"}, (previous, mode, have)
            again = fab("-H", host, "deploy", "--inventory", inv, *sets)
            assert again.returncode == 0 and recap(again, host)[1:] == (0, 0), (previous, mode, again.stdout)
            previous = mode
    finally:
        lab.reset_host(host)
