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


from tests.unit.runtime.test_inventory import BAD as INVENTORY_CASES  # noqa: E402


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


@pytest.mark.parametrize("task", ["deploy", "container", "xcat-config"])
def test_a_host_without_container_ip_is_refused_before_any_connection(tmp_path, listener, task):
    inv = tmp_path / "hosts.ini"
    inv.write_text(f"[g]\nh1 address=127.0.0.1 port={listener.port}\n")
    proc = fab("-H", "h1", task, "--inventory", str(inv))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xcatfab: h1: container_ip: not set"), proc.stderr
    assert listener.accepted == 0


def test_a_host_only_named_with_dash_h_needs_container_ip_too(tmp_path, listener):
    inv = tmp_path / "hosts.ini"
    inv.write_text(f"[g]\nh1 address=127.0.0.1 port={listener.port} container_ip=198.18.0.201/24\n")
    proc = fab("-H", "h1,stray", "deploy", "--inventory", str(inv), "--set", "address=127.0.0.1",
               "--set", f"port={listener.port}")
    assert proc.returncode == 2 and proc.stderr.startswith("xcatfab: stray: container_ip: not set"), proc.stderr
    assert listener.accepted == 0


def test_rollout_refuses_a_host_without_container_ip(tmp_path, listener):
    inv = tmp_path / "hosts.ini"
    inv.write_text(f"[g]\nh1 address=127.0.0.1 port={listener.port} container_ip=198.18.0.201/24\n"
                   f"h2 address=127.0.0.1 port={listener.port}\n")
    proc = fab("rollout", "--inventory", str(inv))
    assert proc.returncode == 2 and proc.stderr.startswith("xcatfab: h2: container_ip: not set"), proc.stderr
    assert listener.accepted == 0


def test_the_port_in_dash_h_beats_the_inventory(tmp_path, listener):
    """``-H h1:PORT`` connects to PORT: the inventory's port (1, refused at once) is not used."""
    inv = tmp_path / "hosts.ini"
    inv.write_text("[g]\nh1 address=127.0.0.1 port=1 container_ip=198.18.0.201/24\n")
    proc = fab("-H", f"h1:{listener.port}", "docker", "--inventory", str(inv), "--set", "connect_timeout=3")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert listener.accepted == 1
    assert "h1 : ok=0 changed=0 failed=1" in proc.stdout


@pytest.mark.parametrize("entry, host, settings", [
    ("h1", "h1", []),
    ("ubuntu@h1", "h1", ["user=ubuntu"]),
    ("h1:2222", "h1", ["port=2222"]),
    ("ubuntu@h1:2222", "h1", ["user=ubuntu", "port=2222"]),
    ("fe80::1", "fe80::1", []),
    ("admin@[2001:db8::5]:2200", "2001:db8::5", ["user=admin", "port=2200"]),
])
def test_dash_h_entries_split_into_host_and_settings(entry, host, settings):
    from tasks.cli.targets import split_host

    assert split_host(entry) == (host, settings)


def test_dash_h_settings_beat_set_and_say_where_they_came_from(tmp_path):
    from tasks.runtime.inventory import load_hosts

    inv = tmp_path / "hosts.ini"
    inv.write_text("[g]\nh1 user=root port=22\n")
    (cfg,) = load_hosts(str(inv), names=["h1"], overrides=["user=admin"],
                        host_overrides={"h1": ["user=ubuntu", "port=2222"]})
    assert (cfg.user, cfg.port, cfg.where("user")) == ("ubuntu", 2222, "-H h1")
