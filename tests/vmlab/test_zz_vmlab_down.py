"""Last test of the VM tier: ``vmlab.down`` leaves nothing behind (checked without the lab's code)."""

from __future__ import annotations

import json
import subprocess

from tests.labkit.vm.base import current_base
from tests.labkit.vm.config import BRIDGE, RULE_COMMENT

from .checks import live_cmdlines, process_dead


def test_down_leaves_nothing(vmlab):
    from tests.labkit.vm import vmlab_down

    state = vmlab.state_dir
    pids = [pid for pid in (vmlab.pid(vm) for vm in vmlab.names) if pid]
    assert pids, "no VM is running: nothing to take down"
    vmlab_down()
    # Every process of the lab names its state directory: QEMU (its pidfile), the HTTP server,
    # dnsmasq, the checks' SSH masters (their control socket).
    survivors = [c for c in live_cmdlines() if str(state) in c]
    assert not survivors, f"processes of the lab survived: {survivors}"
    assert all(process_dead(pid) for pid in pids)
    links = [link["ifname"] for link in json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True,
                                                                   text=True, check=True).stdout)]
    assert BRIDGE not in links
    assert not [name for name in links if name.startswith("xfabvmt")], links
    rules = subprocess.run(["iptables", "-w", "-S"], capture_output=True, text=True, check=True).stdout
    assert RULE_COMMENT not in rules
    assert not state.exists(), "state directory (overlays, seeds, keys) left behind"
    listening = subprocess.run(["ss", "-Hltn", "src", "198.18.64.1"], capture_output=True, text=True).stdout
    assert not listening.strip(), listening
    assert current_base().complete(), "the base-image cache must survive down"
