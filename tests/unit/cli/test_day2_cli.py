"""The day-2 tasks through the real `fab`: bad input exits 2 before any connection; unreachable hosts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

BIN = os.path.dirname(sys.executable)
PASSWORD = "Sup3r s3cret!"


def fab(*args, env=None, cwd=None, input=None):
    full = dict(os.environ, **(env or {}))
    full.pop("XCATFAB_BMC_PASSWORD", None)
    full.pop("XCATFAB_BMC_PASSWORD_FILE", None)
    full.update(env or {})
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return subprocess.run([os.path.join(BIN, "fab"), *args], capture_output=True, text=True, env=full,
                          cwd=cwd or root, timeout=60, input=input, start_new_session=True)


@pytest.fixture
def inventory(tmp_path, listener):
    """Two hosts whose 'SSH server' counts connections (never to be reached on bad input)."""
    path = tmp_path / "hosts.ini"
    path.write_text(f"[g]\nh1 address=127.0.0.1 port={listener.port} container_ip=198.18.0.200/24\n"
                    f"h2 address=127.0.0.1 port={listener.port} container_ip=198.18.0.201/24\n")
    return path


@pytest.fixture
def unreachable(tmp_path):
    """Two hosts on a loopback port nothing listens on (connection refused)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    path = tmp_path / "down.ini"
    path.write_text(f"[g]\nh1 address=127.0.0.1 port={port} container_ip=198.18.0.200/24\n"
                    f"h2 address=127.0.0.1 port={port} container_ip=198.18.0.201/24\n")
    return path


BAD_INPUT = [
    (["xcat"], {}, "no command"),
    (["xcat", "--cmd", "lsdef", "--", "lsdef"], {}, "not both"),
    (["xcat", "--", "chdef", "compute1", "bmcpassword=x"], {}, "password on a command line"),
    (["xcat", "--forks", "0", "--", "lsdef"], {}, "--forks"),
    (["node", "compute1", "--bmc-user", "U"], {"XCATFAB_BMC_PASSWORD": "pw"}, "--bmc: required"),
    (["node", "compute1", "--bmc", "A", "--bmc-user", "U"], {}, "BMC password: set $XCATFAB_BMC_PASSWORD"),
    (["node", "compute1", "--bmc", "A", "--bmc-user", "U", "--set-attr", "bmcpassword=x"],
     {"XCATFAB_BMC_PASSWORD": "pw"}, "--set-attr: bmcpassword"),
    (["node", "compute1", "--bmc", "A", "--bmc-user", "U"], {"XCATFAB_BMC_PASSWORD_FILE": "/nonexistent/pw"},
     "/nonexistent/pw"),
    (["teardown", "--purge-data", "--set", "data_dir=/etc"], {}, "data_dir: '/etc' must be an absolute directory"),
    (["status", "--set", "bridgee=x"], {}, "bridgee: unknown key"),
]


@pytest.mark.parametrize("args,env,message", BAD_INPUT, ids=[" ".join(b[0][:3]) for b in BAD_INPUT])
def test_bad_input_exits_2_with_one_line_before_any_connection(listener, inventory, args, env, message):
    task, rest = args[0], args[1:]
    proc = fab("-H", "h1,h2", task, "--inventory", str(inventory), *rest, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert proc.stdout == "" and listener.accepted == 0


@pytest.mark.parametrize("kind, message", [("directory", "not a regular file"), ("latin1", "not UTF-8 text")])
def test_a_password_file_that_cannot_be_read_is_one_line(listener, inventory, tmp_path, kind, message):
    secret = tmp_path / "bmc.pw"
    if kind == "directory":
        secret.mkdir(mode=0o700)
    else:
        secret.write_bytes(b"caf\xe9-" + PASSWORD.encode())
        secret.chmod(0o600)
    proc = fab("-H", "h1", "node", "compute1", "--bmc", "A", "--bmc-user", "U", "--inventory", str(inventory),
               env={"XCATFAB_BMC_PASSWORD_FILE": str(secret)})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{secret}: {message}" in lines[0] and listener.accepted == 0


def test_a_bmc_prompt_with_nothing_to_read_is_one_line(listener, inventory):
    proc = fab("-H", "h1", "node", "compute1", "--bmc", "A", "--bmc-user", "U", "--inventory", str(inventory),
               "--prompt-bmc-password", input="")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == ["xcatfab: BMC password: no terminal to prompt on and nothing on stdin"], proc.stderr
    assert listener.accepted == 0


def test_a_password_file_readable_by_others_is_refused(listener, inventory, tmp_path):
    secret = tmp_path / "bmc.pw"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o644)
    proc = fab("-H", "h1", "node", "compute1", "--bmc", "A", "--bmc-user", "U", "--inventory", str(inventory),
               env={"XCATFAB_BMC_PASSWORD_FILE": str(secret)})
    assert proc.returncode == 2 and "readable by others" in proc.stderr and listener.accepted == 0
    assert PASSWORD not in proc.stdout + proc.stderr


def test_xcat_with_a_remainder_runs_no_anonymous_task_and_exits_255_per_unreachable_host(unreachable):
    """Fabric 3.2 alone raises NothingToDo here (a traceback), or would c.run() the words itself."""
    proc = fab("-H", "h1,h2", "xcat", "--inventory", str(unreachable), "--", "lsdef", "compute1")
    assert proc.returncode == 255, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "NothingToDo" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert sorted(line.split(" | ")[0] for line in lines) == ["h1", "h2"]  # each host once
    assert all("connect: cannot reach root@127.0.0.1" in line for line in lines)


def test_status_of_unreachable_hosts_is_one_table_and_exit_1(unreachable):
    proc = fab("-H", "h1,h2", "status", "--inventory", str(unreachable))
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[0].split()[0] == "host" and len(lines) == 3  # one header, one row per host, once
    assert all("connect: cannot reach" in line for line in lines[1:])


def test_node_recap_names_host_and_step_and_never_the_password(unreachable):
    proc = fab("-H", "h1,h2", "node", "compute1", "--bmc", "A", "--bmc-user", "U", "--inventory", str(unreachable),
               env={"XCATFAB_BMC_PASSWORD": PASSWORD})
    assert proc.returncode == 1
    assert proc.stdout.count("RECAP") == 1  # the second per-host call of Fabric has nothing left to do
    assert "h1 : ok=0 changed=0 failed=1" in proc.stdout and "h1 | failed: [connect]" in proc.stdout
    assert PASSWORD not in proc.stdout + proc.stderr


def test_the_bmc_password_prompt_reads_without_echo_and_never_prints_it(unreachable):
    """--prompt-bmc-password: asked after the input checks, before connecting (no terminal: stdin)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {k: v for k, v in os.environ.items() if not k.startswith("XCATFAB_BMC_PASSWORD")}
    proc = subprocess.run([os.path.join(BIN, "fab"), "-H", "h1", "node", "compute1", "--bmc", "A", "--bmc-user", "U",
                           "--prompt-bmc-password", "--inventory", str(unreachable)], input=PASSWORD + "\n",
                          capture_output=True, text=True, env=env, cwd=root, timeout=60, start_new_session=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "h1 | failed: [connect]" in proc.stdout  # the password was read: the run went on to connect
    assert "Warning" not in proc.stderr  # no terminal: one line of stdin, read quietly
    assert PASSWORD not in proc.stdout + proc.stderr
