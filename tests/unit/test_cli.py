"""The CLI refuses bad input before contacting any host: exit 2, one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

BIN = os.path.dirname(sys.executable)


def fab(*args, timeout=60):
    return subprocess.run([os.path.join(BIN, "fab"), *args], capture_output=True, text=True, timeout=timeout)


BAD = [
    ("unknown key", "h1 address=127.0.0.1 port={port} contaner_ip=198.18.0.200/24", ":2: contaner_ip: unknown key"),
    ("container outside subnet", "h1 address=127.0.0.1 port={port} host_ip=198.18.0.50/24 container_ip=203.0.113.9/24",
     ":2: container_ip: 203.0.113.9/24 is outside host h1's subnet"),
    ("duplicate container ip",
     "h1 address=127.0.0.1 port={port} container_ip=198.18.0.201/24\nh2 address=127.0.0.1 port={port} "
     "container_ip=198.18.0.201/24",
     ":3: container_ip: 198.18.0.201 of host h2 is already the container_ip of host h1"),
    ("missing iso", "h1 address=127.0.0.1 port={port} isos=/nonexistent/a.iso",
     ":2: isos: /nonexistent/a.iso: no such file"),
]


@pytest.mark.parametrize("name,line,message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_exits_2_before_any_connection(tmp_path, listener, name, line, message):
    inv = tmp_path / "hosts.ini"
    inv.write_text("[g]\n" + line.format(port=listener.port) + "\n")
    proc = fab("-H", "h1,h2" if "h2" in line else "h1", "deploy", "--inventory", str(inv), timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and str(inv) in lines[0], proc.stderr
    assert listener.accepted == 0


from tests.unit.test_inventory import BAD as INVENTORY_CASES  # noqa: E402


@pytest.mark.parametrize("name,text,where,message", INVENTORY_CASES, ids=[c[0] for c in INVENTORY_CASES])
def test_every_inventory_defect_stops_fab_before_any_connection(tmp_path, listener, name, text, where, message):
    """Each defect of the inventory unit tests, through the real `fab` CLI: exit 2, one
    line naming file:line and the key, and the 'host' (a loopback listener) never hears
    from xcatfab."""
    inv = tmp_path / "hosts.ini"
    # Appended, so the defect keeps its line number; every host "lives" on the listener.
    inv.write_text(text + f"\n[all:vars]\naddress=127.0.0.1\nport={listener.port}\n")
    proc = fab("-H", "h1", "deploy", "--inventory", str(inv))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"xcatfab: {tmp_path / where}"), proc.stderr
    assert message in lines[0]
    assert listener.accepted == 0
