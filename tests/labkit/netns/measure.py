"""Measuring what reaches the lab hosts, with the kernel's own counters.

:class:`EgressCounter` counts the bytes the controller sends to each host
(iptables counting rules); :func:`received_bytes` reads what a host received
from anyone (its veth's root-namespace end). Both are independent of what
xcatfab reports about itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ..common import run
from .hosts import BRIDGE
from .lab import Lab


class EgressCounter:
    """Bytes the controller sends to each lab host, counted by the kernel: one
    iptables counting rule (no target) per host address on OUTPUT, tagged so
    that only these rules are removed. Independent of what xcatfab reports.

        with EgressCounter(lab, ["lab1", "lab2"], "my-tag") as egress:
            ...
        sent = egress.read()   # {"lab1": bytes, "lab2": bytes}
    """

    def __init__(self, lab: Lab, hosts: Iterable[str], tag: str):
        self.ips = {name: lab.host(name).ip for name in hosts}
        self.tag = tag

    def _rule(self, ip: str) -> list:
        return ["OUTPUT", "-o", BRIDGE, "-d", ip, "-m", "comment", "--comment", self.tag]

    def __enter__(self) -> "EgressCounter":
        for ip in self.ips.values():
            run(["iptables", "-w", "-I", *self._rule(ip)])
        return self

    def __exit__(self, *exc) -> None:
        for ip in self.ips.values():
            run(["iptables", "-w", "-D", *self._rule(ip)], check=False)

    def read(self) -> dict:
        out = run(["iptables", "-w", "-L", "OUTPUT", "-v", "-x", "-n"]).stdout
        counts = {}
        for line in out.splitlines():
            fields = line.split()  # pkts bytes [target] prot opt in out source destination /* tag */
            if self.tag in fields:
                for ip in self.ips.values():
                    if ip in fields:
                        counts[ip] = int(fields[1])
        return {name: counts.get(ip, 0) for name, ip in self.ips.items()}


def received_bytes(lab: Lab, name: str) -> int:
    """Bytes host ``name`` received from anyone: what its veth's root-namespace end sent."""
    return int(Path(f"/sys/class/net/{lab.host(name).veth}/statistics/tx_bytes").read_text())
