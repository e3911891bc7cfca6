"""fab rollout through the real `fab`: bad input exits 2 with one line and contacts nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAB = str(Path(sys.executable).with_name("fab"))


# --------------------------------------------------------------------------- bad input contacts nothing


def write_inventory(tmp_path, port, extra=""):
    path = tmp_path / "hosts.ini"
    path.write_text(
        "[docker]\n"
        f"h1 address=127.0.0.1 port={port} host_ip=198.51.100.11/24 container_ip=198.51.100.21/24 "
        f"gateway=198.51.100.1 connect_timeout=2 known_hosts={tmp_path / 'known_hosts'}\n"
        f"h2 address=127.0.0.1 port={port} host_ip=198.51.100.12/24 container_ip=198.51.100.22/24 "
        f"gateway=198.51.100.1 connect_timeout=2 known_hosts={tmp_path / 'known_hosts'}\n" + extra)
    return path


def fab(*args, env=None, cwd=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("XCATFAB_")}
    full_env.update(env or {})
    return subprocess.run([FAB, *args], capture_output=True, text=True, env=full_env, timeout=120,
                          cwd=cwd or ROOT)


def test_control_a_valid_plan_does_contact_the_host(tmp_path, listener):
    """Without this, the 'nothing contacted' checks below could never fail."""
    inventory = write_inventory(tmp_path, listener.port)
    proc = fab("rollout", "--inventory", str(inventory), "--limit", "h1", "--plan")
    assert proc.returncode == 1
    assert listener.contacted()
    assert re.search(r"^h1 : ok=0 changed=0 failed=1$", proc.stdout, re.M)


@pytest.mark.parametrize("flags,message", [
    (["--serial", "0"], r"^xcatfab: --serial: '0': a batch needs at least one host$"),
    (["--serial", "many"], r"^xcatfab: --serial: 'many' is not a host count"),
    (["--max-fail-percent", "150"], r"^xcatfab: --max-fail-percent: '150' is more than 100$"),
    (["--forks", "0"], r"^xcatfab: --forks: '0' is not a number from 1 to 100$"),
    (["--limit", "nosuch*"], r"^xcatfab: --limit: 'nosuch\*' matches no host or group in "),
    (["--set", "contaner_ip=1.2.3.4/24"], r"^xcatfab: --set: contaner_ip: unknown key \(did you mean"),
    (["--set", "container_ip=198.51.100.22/24", "--limit", "h1"],  # cross-host, though only h1 is selected
     r"^xcatfab: --set: container_ip: 198.51.100.22 of host h1 is already the container_ip of host h2$"),
])
def test_bad_flags_exit_2_with_one_line_and_contact_nothing(tmp_path, listener, flags, message):
    inventory = write_inventory(tmp_path, listener.port)
    proc = fab("rollout", "--inventory", str(inventory), *flags)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and re.search(message, proc.stderr.strip()), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not listener.contacted()


@pytest.mark.parametrize("extra,message", [
    ("h3 address=127.0.0.1 colour=blue\n", "{inventory}:4: colour: unknown key"),
    ("h3 address=127.0.0.1 host_ip=198.51.100.13/24 container_ip=198.51.100.21/24\n",
     "{inventory}:4: container_ip: 198.51.100.21 of host h3 is already the container_ip of host h1"),
])
def test_a_bad_line_for_an_unselected_host_still_stops_everything(tmp_path, listener, extra, message):
    inventory = write_inventory(tmp_path, listener.port, extra=extra)
    proc = fab("rollout", "--inventory", str(inventory), "--limit", "h1")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "xcatfab: " + message.format(inventory=inventory)
    assert not listener.contacted()


def test_rollout_refuses_fabric_hosts_and_a_missing_inventory(tmp_path, listener):
    inventory = write_inventory(tmp_path, listener.port)
    proc = fab("-H", "h1,h2", "rollout", "--inventory", str(inventory))
    assert proc.returncode == 2 and "use --limit h1,h2 instead of -H" in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = fab("--search-root", str(ROOT), "rollout", cwd=empty)  # no ./hosts.ini there
    assert proc.returncode == 2 and "no inventory" in proc.stderr
    assert not listener.contacted()


@pytest.mark.parametrize("var", ["XCATFAB_SUDO_PASSWORD_FILE", "XCATFAB_BMC_PASSWORD_FILE"])
def test_a_secret_file_readable_by_others_is_bad_input(tmp_path, listener, var):
    inventory = write_inventory(tmp_path, listener.port)
    secret = tmp_path / "secret"
    secret.write_text("s3cret-value\n")
    secret.chmod(0o644)
    proc = fab("rollout", "--inventory", str(inventory), env={var: str(secret)})
    assert proc.returncode == 2
    assert "readable by others (mode 644); chmod 600 it" in proc.stderr
    assert "s3cret-value" not in proc.stdout + proc.stderr
    assert not listener.contacted()


