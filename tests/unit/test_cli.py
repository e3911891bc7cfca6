"""The CLI refuses bad input before contacting any host: exit 2, one line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest

BIN = os.path.dirname(sys.executable)


def fab(*args, timeout=60):
    return subprocess.run([os.path.join(BIN, "fab"), *args], capture_output=True, text=True, timeout=timeout)


class ConnectionCounter:
    """A TCP listener on loopback that counts connection attempts (an 'SSH server' that
    must never be contacted when the input is bad)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self):
        self.sock.close()


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
def test_bad_input_exits_2_before_any_connection(tmp_path, name, line, message):
    counter = ConnectionCounter()
    try:
        inv = tmp_path / "hosts.ini"
        inv.write_text("[g]\n" + line.format(port=counter.port) + "\n")
        proc = fab("-H", "h1,h2" if "h2" in line else "h1", "deploy", "--inventory", str(inv), timeout=60)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and str(inv) in lines[0], proc.stderr
        assert counter.accepted == 0
    finally:
        counter.close()


from tests.unit.test_inventory import BAD as INVENTORY_CASES  # noqa: E402


@pytest.mark.parametrize("name,text,where,message", INVENTORY_CASES, ids=[c[0] for c in INVENTORY_CASES])
def test_every_inventory_defect_stops_fab_before_any_connection(tmp_path, name, text, where, message):
    """Each defect of the inventory unit tests, through the real `fab` CLI: exit 2, one
    line naming file:line and the key, and the 'host' (a loopback listener) never hears
    from xcatfab."""
    counter = ConnectionCounter()
    try:
        inv = tmp_path / "hosts.ini"
        # Appended, so the defect keeps its line number; every host "lives" on the counter.
        inv.write_text(text + f"\n[all:vars]\naddress=127.0.0.1\nport={counter.port}\n")
        proc = fab("-H", "h1", "deploy", "--inventory", str(inv))
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"xcatfab: {tmp_path / where}"), proc.stderr
        assert message in lines[0]
        assert counter.accepted == 0
    finally:
        counter.close()
