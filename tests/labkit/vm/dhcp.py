"""A DHCP server on the VM bridge (dnsmasq), for scenarios where a VM's eth0 takes its address by DHCP.

Each VM's pinned MAC gets its own lab address (198.18.64.(10+N)), so a VM
keeps its name, known_hosts entry and inventory line. Started detached with
its pid in STATE/dnsmasq.pid, stopped by pid (command line checked), and by
``vmlab.down`` too.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

from ._shared import _live_pid, _run, _stop_pid, _wait_for, _write, render
from .config import BRIDGE, CONTROLLER_IP, SUBNET
from .vmlab import VmLab

LEASE = "10m"


def _paths(lab: VmLab) -> dict:
    state = lab.state_dir
    return {"conf": state / "dnsmasq.conf", "pidfile": state / "dnsmasq.pid", "leases": state / "dnsmasq.leases",
            "log": state / "dnsmasq.log"}


def server_pid(lab: VmLab) -> Optional[int]:
    """Pid of the lab's dnsmasq when it runs, else None."""
    paths = _paths(lab)
    return _live_pid(paths["pidfile"], str(paths["conf"]))


def start(lab: VmLab) -> int:
    """Start dnsmasq on the VM bridge (once); return its pid."""
    pid = server_pid(lab)
    if pid:
        return pid
    paths = _paths(lab)
    _write(paths["conf"], render("vmlab/dnsmasq.conf.j2", bridge=BRIDGE, controller_ip=CONTROLLER_IP,
                                 network=str(SUBNET.network_address), netmask=str(SUBNET.netmask), lease=LEASE,
                                 hosts=[h.context() for h in lab.hosts], leases=str(paths["leases"]),
                                 pidfile=str(paths["pidfile"]), log=str(paths["log"])))
    paths["leases"].touch()
    _run(["dnsmasq", f"--conf-file={paths['conf']}"])
    _wait_for(lambda: server_pid(lab) is not None, 10, "dnsmasq's pidfile")
    return server_pid(lab)


def stop(lab: VmLab) -> None:
    """Stop the lab's dnsmasq by its pid."""
    _stop_pid(server_pid(lab), str(_paths(lab)["conf"]), timeout=5)


@contextmanager
def dhcp_server(lab: VmLab) -> Iterator[int]:
    """dnsmasq on the VM bridge for the duration of the block."""
    pid = start(lab)
    try:
        yield pid
    finally:
        stop(lab)


def leases(lab: VmLab) -> list[str]:
    """dnsmasq's lease lines (expiry MAC IP name client-id)."""
    path = _paths(lab)["leases"]
    return [line for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
