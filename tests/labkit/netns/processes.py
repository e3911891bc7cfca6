"""Finding the lab's processes without trusting pidfiles, and killing what should not be left.

- :func:`lab_processes`: everything that belongs to the lab (in a lab
  namespace, in a lab container's cgroup, or a lab daemon naming a lab path);
- :func:`sweep`: what ``lab.down`` does with whatever is still alive after
  the lab's daemons were stopped by pid (TERM, then KILL);
- :func:`kill_orphans_in_netns`: what ``reset_host`` does with what SSH
  sessions left running in one host's namespace.

This process and its ancestors are never signalled.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Callable, Optional

from ..common import own_lineage, process_table, wait_gone
from .hosts import CGROUP_PARENT, LAB_DAEMONS, RUN_DIR, LabHost, state_dir
from .network import lab_netns_names, netns_inodes


def _why_lab(proc: dict, inodes: dict[int, str], markers: tuple[str, ...]) -> Optional[str]:
    """Why ``proc`` belongs to the lab, or None when it does not."""
    if proc["netns"] in inodes:
        return f"in netns {inodes[proc['netns']]}"
    if f"/{CGROUP_PARENT}/" in proc["cgroup"]:
        return "in a lab container cgroup"
    if (proc["prog"] in LAB_DAEMONS or proc["prog"].startswith("containerd-shim")) and any(
            m in proc["cmdline"] + "/" for m in markers):
        return "names a lab path"
    return None


def lab_processes(state: Optional[Path] = None) -> list[dict]:
    """Every live process that belongs to the lab, found without trusting pidfiles.

    A process belongs to the lab when it runs in a lab network namespace (sshd,
    dockerd and what they started), or in a lab container's cgroup, or is one
    of the lab's daemons (dockerd, containerd, shims, sshd, gpg-agent, the repo
    server) whose command line names the lab's state or run directory. This
    process and its ancestors are never included.
    """
    state = state or state_dir()
    markers = (str(state) + "/", str(RUN_DIR) + "/")
    inodes = netns_inodes(lab_netns_names())
    mine = own_lineage()
    found = []
    for proc in process_table():
        if proc["pid"] in mine or proc["zombie"]:
            continue
        reason = _why_lab(proc, inodes, markers)
        if reason:
            proc["reason"] = reason
            found.append(proc)
    return found


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def sweep(state: Path, log: Callable[[str], None]) -> None:
    """Whatever of the lab is still alive (a crash leaves shims, sessions, sleepers): TERM, then KILL."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        leftovers = [p["pid"] for p in lab_processes(state)]
        _signal_all(leftovers, sig)
        wait_gone(leftovers, wait)
    still = lab_processes(state)
    if still:
        log("WARNING: lab processes still alive: " + ", ".join(f"{p['pid']} ({p['prog']})" for p in still))


def _descends_from(pid: int, roots: set[int], procs: dict[int, dict]) -> bool:
    """Whether ``pid`` is one of ``roots`` or a descendant of one."""
    seen = set()
    while pid in procs and pid not in seen:
        if pid in roots:
            return True
        seen.add(pid)
        pid = procs[pid]["ppid"]
    return False


def kill_orphans_in_netns(host: LabHost) -> list[int]:
    """Kill what SSH sessions left running in ``host``'s namespace (e.g. rollback sleepers).

    Kept alive: the host's sshd and its session processes, its dockerd and
    everything dockerd started, and containerd shims. What remains in the
    namespace was left behind by a session (a ``sleep N; rollback`` job
    detached with setsid/nohup) and is killed. Returns the pids killed.
    """
    inode = netns_inodes([host.netns])
    if not inode:
        return []
    procs = {p["pid"]: p for p in process_table()}
    keep_roots = {p for p in (host.sshd_pid(), host.dockerd_pid()) if p}
    mine = own_lineage()
    victims = [p["pid"] for p in procs.values()
               if p["netns"] in inode and not p["zombie"] and p["pid"] not in mine
               and not p["prog"].startswith("containerd-shim")
               and not _descends_from(p["pid"], keep_roots, procs)]
    _signal_all(victims, signal.SIGKILL)
    wait_gone(victims, 5)
    return victims
