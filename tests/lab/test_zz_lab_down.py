"""`lab.down` leaves nothing behind. Named to run last: it takes the session's lab down.

Checked independently: the pids recorded before down, a scan of /proc for
dockerd/containerd/sshd/shims naming lab paths, ``ip netns list``, ``ip link``,
``iptables -S``, the mount table, /etc/netns, the passwd database, and the
state directory; the base-image cache must survive.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.labkit.common import base_tarball, process_table
from tests.labkit.netns.hosts import (
    ADMIN_USER,
    BASE_IMAGE,
    BRIDGE,
    CGROUP_PARENT,
    RULE_COMMENT,
    RUN_DIR,
    SUDOERS_FILE,
    VETH_RE,
)
from tests.labkit.netns.lifecycle import lab_down


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(bool(os.environ.get("XCATFAB_TEST_HOSTS")),
                    reason="a shared lab (XCATFAB_TEST_HOSTS) is not this session's to take down")
def test_lab_down_leaves_nothing_behind(lab, docker_on, ssh_run):
    # Leave work behind on purpose: containers (so shims run) and a session's sleeper.
    first, second, third = lab.names[:3]
    for host in (first, third):
        docker_on(host, "run", "-d", BASE_IMAGE, "sleep", "600")
    ssh_run(second, "setsid nohup sleep 777 >/dev/null 2>&1 </dev/null &")
    state, run_dir = lab.state_dir, RUN_DIR
    markers = (str(state) + "/", str(run_dir) + "/")
    recorded = [pid for h in lab.engines() for pid in (h.sshd_pid(), h.dockerd_pid()) if pid]
    recorded.append(lab.http_pid or int((state / "http.pid").read_text()))
    recorded.append(int((state / "registry.pid").read_text()))
    table = process_table()
    children = [p["pid"] for p in table if p["ppid"] in recorded]          # containerd, sessions
    shims = [p["pid"] for p in table if p["prog"].startswith("containerd-shim") and
             any(m in p["cmdline"] for m in markers)]
    assert shims, "the test needs running containers"
    created_paths = json.loads((state / "lab.json").read_text()).get("created_paths", [])
    tarball = base_tarball()
    assert tarball.exists()

    started = time.monotonic()
    lab_down(log=lambda m: print(f"[lab] {m}"))
    print(f"lab.down took {time.monotonic() - started:.1f}s")

    assert subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.strip() == ""
    for pid in recorded + children + shims:
        assert not _alive(pid), f"pid {pid} still alive"
    daemons = ("dockerd", "containerd", "sshd", "docker-proxy", "gpg-agent", "docker-registry")
    for proc in process_table():
        cmdline = proc["cmdline"]
        if proc["prog"].startswith(daemons) or "sleep 777" in cmdline:
            assert not any(m in cmdline for m in markers) and "sleep 777" not in cmdline, cmdline
    links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True,
                                      check=True).stdout)
    names = [link["ifname"] for link in links]
    assert BRIDGE not in names
    assert not [n for n in names if VETH_RE.match(n)]
    rules = subprocess.run(["iptables", "-w", "-S"], capture_output=True, text=True, check=True).stdout
    assert RULE_COMMENT not in rules
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(state) not in mounts and str(run_dir) not in mounts
    assert not list(Path("/etc/netns").glob("lab*"))
    assert subprocess.run(["getent", "passwd", ADMIN_USER], capture_output=True).returncode != 0
    assert not SUDOERS_FILE.exists()
    assert not state.exists() and not run_dir.exists()
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{CGROUP_PARENT}"))
    for path in created_paths:
        assert not Path(path).exists(), f"{path} was made by the lab's engines and is still there"
    assert tarball.exists(), "down keeps the base-image cache"
