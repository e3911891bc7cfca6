"""Every task, driven with malformed input through the real `fab` and `inv` (issue 12).

Each case must end in exit status 2, exactly one line on stderr naming the flag,
file:line or host and the key, no Python traceback, and no connection to the
loopback listener that stands in for every host. Then the flag grammar (one
meaning per short flag, usage errors exit 2), selection (-H, --limit, --set for
the selected hosts only, fab inventory), and the connect timeout's precedence.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.runtime.inventory import load_hosts
from tasks.runtime.ssh import connect_timeout

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
TASKS = ["deploy", "docker", "image", "bridge", "container", "xcat-config", "iso", "rollout", "status",
         "teardown", "inventory"]


def run(tool, *args, env=None, cwd=None, timeout=60):
    full = {k: v for k, v in os.environ.items() if not k.startswith("XCATFAB_")}
    full.update(env or {})
    return subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, env=full,
                          cwd=str(cwd or ROOT), timeout=timeout, stdin=subprocess.DEVNULL, start_new_session=True)


@pytest.fixture
def inventory(tmp_path, listener):
    path = tmp_path / "hosts.ini"
    path.write_text(f"[g]\nh1 address=127.0.0.1 port={listener.port} container_ip=198.51.100.21/24 "
                    "host_ip=198.51.100.11/24 gateway=198.51.100.1\n"
                    f"h2 address=127.0.0.1 port={listener.port} container_ip=198.51.100.22/24 "
                    "host_ip=198.51.100.12/24 gateway=198.51.100.1\n")
    return path


def one_line_exit_2(proc, listener, message=""):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert message in lines[0], lines[0]
    assert listener.accepted == 0


MALFORMED = [
    (["--bogus-flag"], "usage"),
    (["--forks"], "usage"),
    (["--forks", "x"], "--forks"),
    (["--limit", ""], "--limit: empty"),
    (["--limit", "nosuch"], "--limit: 'nosuch' matches no host"),
    (["--set", "nonsense"], "--set: expected KEY=VALUE"),
    (["--set", "port=70000"], "port"),
    (["--set", "container_ip=198.51.100.21"], "needs a prefix length"),
    (["--set", "connect_timeout=0"], "connect_timeout"),
    (["--set", "state_dir=//etc/"], "state_dir"),
    (["--set", "data_dir=/srv/x y"], "data_dir"),
    (["--set", "container_fqdn="], "container_fqdn: may not be empty"),
    (["--set", "container_name=a\tb"], "control character"),
    (["--inventory", "/nonexistent/hosts.ini"], "cannot read inventory"),
]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("args, message", MALFORMED, ids=[" ".join(a) or "-" for a, _m in MALFORMED])
def test_malformed_input_is_one_line_and_exit_2_for_every_task(inventory, listener, task, args, message):
    if task == "inventory" and args[:1] == ["--forks"]:
        message = "usage"  # inventory contacts nothing and has no --forks
    selection = [] if task in ("rollout", "status", "inventory") else ["--limit", "all"]
    if "--limit" in args:
        selection = []
    extra = ["--src", str(inventory)] if task == "iso" else []
    proc = run("fab", task, "--inventory", str(inventory), *selection, *extra, *args)
    if args[:1] == ["--inventory"]:
        proc = run("fab", task, *selection, *args)
    one_line_exit_2(proc, listener, message)


@pytest.mark.parametrize("hosts", ["a@@b", "h1:notaport", "h1:99999", "-x", "h1,,h2!"])
def test_malformed_dash_h_is_one_line(inventory, listener, hosts):
    one_line_exit_2(run("fab", "-H", hosts, "status", "--inventory", str(inventory)), listener, "-H")


def test_an_inventory_that_is_not_utf8_or_empty_is_one_line(tmp_path, listener):
    latin = tmp_path / "latin1.ini"
    latin.write_bytes(b"[g]\nh1 address=127.0.0.1 container_fqdn=caf\xe9.example\n")
    one_line_exit_2(run("fab", "status", "--inventory", str(latin)), listener, "not UTF-8")
    empty = tmp_path / "empty.ini"
    empty.write_text("# nothing here\n[g]\n")
    one_line_exit_2(run("fab", "status", "--inventory", str(empty)), listener, "no hosts")


def test_a_bom_and_crlf_inventory_reads_as_any_other(tmp_path):
    path = tmp_path / "win.ini"
    path.write_bytes("\ufeff[g]\r\nh1 address=127.0.0.1 port=2222 # the first\r\n[g:vars]\r\nuser=ubuntu\r\n"
                     .encode("utf-8"))
    (cfg,) = load_hosts(str(path))
    assert (cfg.name, cfg.port, cfg.user) == ("h1", 2222, "ubuntu")


def test_inv_render_to_a_file_or_an_unwritable_place_is_one_line(tmp_path):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    for out in (afile, afile / "sub"):
        proc = run("inv", "render", "--out", str(out))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "--out" in proc.stderr, proc.stderr


# --------------------------------------------------------------------------- the flag grammar
def task_help(task):
    return run("fab", "--help", task).stdout


@pytest.mark.parametrize("task", TASKS + ["xcat", "node"])
def test_short_flags_mean_one_thing_everywhere(task):
    text = task_help(task)
    shorts = {line.split()[0].rstrip(",") for line in text.splitlines()
              if line.strip().startswith("-") and not line.strip().startswith("--")}
    assert shorts <= {"-v"}, (task, shorts)
    assert "--purge-data" not in text or "-p," not in text


def test_usage_errors_exit_2_not_1(listener, inventory):
    proc = run("fab", "-H", "h1", "deploy", "--inventory", str(inventory), "--no-such-flag")
    one_line_exit_2(proc, listener, "usage")


def test_check_is_plan_and_json_is_one_document(listener, inventory):
    """--check plans (it connects, which the listener counts) and --json prints one document."""
    proc = run("fab", "-H", "h1", "docker", "--check", "--json", "--inventory", str(inventory),
               "--set", "connect_timeout=2")
    document = json.loads(proc.stdout)
    assert document["hosts"][0]["host"] == "h1" and document["exit_code"] == proc.returncode == 1
    assert document["hosts"][0]["steps"][0]["step"] == "connect"
    assert listener.accepted >= 1  # --check did try, as --plan does


# --------------------------------------------------------------------------- selection
def test_set_applies_to_the_selected_hosts_only(inventory):
    """The fix the missing-container_ip error recommends must work for the one host it names."""
    (h1,) = load_hosts(str(inventory), names=["h1"], overrides=["container_ip=198.51.100.31/24"])
    assert str(h1.container_ip) == "198.51.100.31/24" and h1.where("container_ip") == "--set"


def test_fab_inventory_prints_each_value_and_where_it_came_from(inventory, listener):
    proc = run("fab", "inventory", "--inventory", str(inventory), "--set", "rollback_seconds=60", "--limit", "h2")
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()[1:] if line.strip()}
    assert "[--set]" in lines["rollback_seconds"] and f"{inventory}:3" in lines["container_ip"]
    assert "[default]" in lines["bridge"] and "[preset el9]" in lines["base_image"]
    assert "h1" not in proc.stdout and listener.accepted == 0


def test_limit_takes_ansible_patterns(tmp_path):
    path = tmp_path / "hosts.ini"
    path.write_text("[rack1]\nd[01:04] container_fqdn=x.cluster\n[rack2]\ne-[a:c]\n[all:vars]\nbridge=br0\n")
    from tasks.runtime.inventory import Inventory

    inv = Inventory.load(str(path))
    assert inv.hosts() == ["d01", "d02", "d03", "d04", "e-a", "e-b", "e-c"]
    assert inv.select("rack1:!d02") == ["d01", "d03", "d04"]
    assert inv.select("all:&rack2") == ["e-a", "e-b", "e-c"]


def test_an_ansible_inventory_with_its_own_variables_loads_with_the_switch(tmp_path):
    text = "[g]\nh1 ansible_host=127.0.0.1 ntp_server=pool.example\n"
    path = tmp_path / "ansible.ini"
    path.write_text(text)
    with pytest.raises(Exception, match="ntp_server: unknown key"):
        load_hosts(str(path))
    path.write_text(text + "[all:vars]\nxcatfab_unknown_vars=ignore\n")
    assert load_hosts(str(path))[0].address == "127.0.0.1"
    path.write_text(text.replace("ntp_server", "brigde") + "[all:vars]\nxcatfab_unknown_vars=ignore\n")
    with pytest.raises(Exception, match="did you mean 'bridge'"):
        load_hosts(str(path))  # a typo of ours is still caught


# --------------------------------------------------------------------------- timeouts
class Conf(dict):
    def get(self, key, default=None):
        return super().get(key, default)


@pytest.mark.parametrize("sets, config, ssh_config, expected", [
    (["connect_timeout=7"], {"connect_kwargs": {"timeout": 3}}, {"connecttimeout": "5"}, 7),
    ([], {"connect_kwargs": {"timeout": 3}, "timeouts": {"connect": 9}}, {"connecttimeout": "5"}, 3),
    ([], {"timeouts": {"connect": 9}}, {"connecttimeout": "5"}, 5),
    ([], {"timeouts": {"connect": 9}}, {}, 9),
    ([], {}, {}, 10),
])
def test_connect_timeout_precedence(sets, config, ssh_config, expected):
    (cfg,) = load_hosts(None, names=["h1"], overrides=sets)
    assert connect_timeout(cfg, Conf(config), ssh_config)[0] == expected


def test_a_stalled_handshake_is_reported_as_a_timeout(inventory, listener):
    """The listener accepts and never sends a banner: `-t 2` must end it as a timeout, in about 2 s."""
    proc = run("fab", "-t", "2", "-H", "h1", "status", "--inventory", str(inventory), "--json", timeout=30)
    report = json.loads(proc.stdout)["hosts"][0]
    assert "timed out after 2s" in report["steps"][0]["error"], report
