"""The converge benchmark's pure helpers (bench/converge.py, bench/peers/inventory.py).

No lab, no timing: statistics, parsing of the tools' output and of an sshd
trace, the markdown it writes, and the peers' inventories generated from
xcatfab's own inventory.
"""

import ast
import json
import os
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench import converge  # noqa: E402
from bench.peers import inventory as peer_inventory  # noqa: E402
from tasks.runtime.inventory import load_hosts  # noqa: E402


# ------------------------------------------------------------------ statistics
def test_summarize_median_min_max():
    assert converge.summarize([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert converge.summarize([1.0, 2.0, 3.0, 10.0])["median"] == 2.5
    assert converge.summarize([]) == {"median": None, "min": None, "max": None, "n": 0}


def test_ratio_and_formatting():
    assert converge.ratio(0.6, 0.3) == pytest.approx(2.0)
    assert converge.ratio(None, 0.3) is None
    assert converge.ratio(0.6, None) is None
    assert converge.ratio(0.6, 0.0) is None
    assert converge.fmt_s(0.456) == "0.46 s"
    assert converge.fmt_s(None) == "–"
    assert converge.fmt_ratio(1.5) == "1.50×"


def test_rotate_gives_each_tool_each_position():
    tools = ["a", "b", "c"]
    assert converge.rotate(tools, 0) == ["a", "b", "c"]
    assert converge.rotate(tools, 1) == ["b", "c", "a"]
    assert converge.rotate(tools, 4) == ["b", "c", "a"]
    assert {converge.rotate(tools, r)[0] for r in range(3)} == set(tools)
    assert converge.rotate([], 2) == []


def test_choose_hosts_option_env_default():
    names = ["lab1", "lab2", "lab3", "lab4"]
    assert converge.choose_hosts("lab2,lab3", "lab4", names, 2) == ["lab2", "lab3"]
    assert converge.choose_hosts(None, "lab3, lab4", names, 2) == ["lab3", "lab4"]
    assert converge.choose_hosts(None, None, names, 2) == ["lab1", "lab2"]
    with pytest.raises(SystemExit, match="no host lab9"):
        converge.choose_hosts("lab9", None, names, 1)
    with pytest.raises(SystemExit, match="needs 4 hosts"):
        converge.choose_hosts("lab2,lab3", None, names, 4)


# ------------------------------------------------------------------ parsing the tools' output
def test_parse_recap_xcatfab_and_ansible():
    xcatfab = "lab2 | ok: [docker]\n\nRECAP ****\nlab2 : ok=6 changed=0 failed=0\nlab2: connections=1 commands=1\n"
    assert converge.parse_recap(xcatfab) == {"lab2": {"ok": 6, "changed": 0, "unreachable": 0, "failed": 0}}
    assert converge.parse_xcatfab_counts(xcatfab) == {"lab2": {"connections": 1, "commands": 1}}
    ansible = ("PLAY RECAP *********\n"
               "lab2                       : ok=14   changed=0    unreachable=0    failed=0    skipped=2\n"
               "lab3                       : ok=13   changed=1    unreachable=0    failed=0    skipped=2\n")
    parsed = converge.parse_recap(ansible)
    assert parsed["lab2"]["changed"] == 0 and parsed["lab3"]["changed"] == 1
    assert parsed["lab3"]["ok"] == 13


def test_parse_pyinfra_counts_operations_that_ran_commands():
    text = textwrap.dedent("""\
        --> Starting operation: docker.io is installed
            [lab2] No changes
            [lab3] No changes
        --> Starting operation: the host address is on the bridge
            [lab2] Success
            [lab3] No changes
        """)
    assert converge.parse_pyinfra(text) == {"lab2": {"changed": 1}, "lab3": {"changed": 0}}


def test_restat_leaves_out_runs_that_were_no_no_op():
    raw = {"runs": [0.5, 0.4, 3.0, 0.6, 9.9], "rcs": [0, 0, 0, 0, 1],
           "changed": [{"a": 0}, {"a": 0}, {"a": 2}, {"a": 0}, {"a": 0}]}
    s = converge.restat(raw)
    assert (s["median"], s["min"], s["max"], s["n"], s["excluded"]) == (0.5, 0.4, 0.6, 3, 2)
    assert s["changed_total"] == 2 and s["runs"] == raw["runs"]


def test_is_noop():
    assert converge.is_noop({"rc": 0, "changed": {"lab2": 0, "lab3": 0}})
    assert not converge.is_noop({"rc": 0, "changed": {"lab2": 0, "lab3": 2}})
    assert not converge.is_noop({"rc": 1, "changed": {"lab2": 0}})
    assert not converge.is_noop({"rc": 0, "changed": {"lab2": None}})  # output not understood


def test_changed_by_host_floor_is_zero():
    assert converge.changed_by_host("floor", "", ["lab2"]) == {"lab2": 0}
    assert converge.changed_by_host("xcatfab", "", ["lab2"]) == {"lab2": None}


def test_count_accepted():
    log = ("Connection closed by 198.18.0.1 port 35972\n"
           "Accepted publickey for root from 198.18.0.1 port 36264 ssh2: ED25519 SHA256:x\n"
           "Accepted publickey for root from 198.18.0.1 port 36268 ssh2: ED25519 SHA256:x\n")
    assert converge.count_accepted(log) == 2
    assert converge.count_accepted("") == 0


STRACE = """\
100 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|SIGCHLD, child_tidptr=0x7f) = 200
200 execve("/usr/sbin/sshd", ["/usr/sbin/sshd", "-f", "/x/sshd_config", "-R"], 0x55 /* 2 vars */) = 0
200 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|SIGCHLD, child_tidptr=0x7f) = 201
202 execve("/bin/bash", ["bash", "-c", "sh -c 'facts'"], 0x55 /* 9 vars */) = 0
200 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|SIGCHLD <unfinished ...>
200 <... clone resumed>, child_tidptr=0x7f) = 202
202 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|SIGCHLD, child_tidptr=0x7f) = 204
204 execve("/root/.pyenv/bin/pyenv", ["pyenv", "init", "-"], 0x56 /* 13 vars */) = 0
204 execve("/root/.pyenv/bin/bash", ["bash", "/root/.pyenv/bin/pyenv"], 0x7f /* 13 vars */) = -1 ENOENT (No such file)
200 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|SIGCHLD, child_tidptr=0x7f) = 205
200 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|SIGCHLD, child_tidptr=0x7f) = 206
206 execve("/bin/bash", ["bash", "-c", "docker exec xcatmn /opt/xcat/sbin/tabdump site"...], 0x55) = 0
100 clone3({flags=CLONE_VM|CLONE_VFORK, exit_signal=SIGCHLD, stack=0x7f, stack_size=0x9000}, 88) = 300
300 execve("/usr/sbin/sshd", ["/usr/sbin/sshd", "-R"], 0x55 /* 2 vars */) = 0
300 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|SIGCHLD, child_tidptr=0x7f) = 301
300 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|SIGCHLD, child_tidptr=0x7f) = 302
302 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|SIGCHLD, child_tidptr=0x7f) = 303
303 execve("/bin/bash", ["bash", "-c", "true"], 0x55) = 0
"""


def test_parse_strace_counts_connections_sessions_commands():
    parsed = converge.parse_strace(STRACE, root=100)
    # 200: a root login (the monitor forks the sessions); 300: another user (a post-auth child does)
    assert parsed["connections"] == 2
    assert parsed["sessions"] == 4             # 202 (exec), 205 (sftp: no exec), 206 (exec), 303 (exec)
    assert parsed["commands"] == 3
    assert parsed["subsystem_sessions"] == 1
    assert parsed["command_lines"] == ["sh -c 'facts'", "docker exec xcatmn /opt/xcat/sbin/tabdump site...",
                                       "true"]


def test_parse_strace_ignores_processes_outside_the_tree():
    assert converge.parse_strace("999 clone(...) = 1000\n1000 execve(\"/bin/true\", [\"true\"], 0x1) = 0\n",
                                 root=100)["connections"] == 0


# ------------------------------------------------------------------ markdown
RESULTS = {
    "date": "2026-11-29 18:00 UTC", "ns": [1, 2], "runs": 5, "hosts": ["lab2", "lab3"],
    "tools": ["floor", "xcatfab", "pyinfra"],
    "machine": {"cpu_model": "CPU X", "nproc": 2, "memory": "23.4 GiB RAM", "kernel": "6.18",
                "os": "Debian 12", "openssh": "OpenSSH_9.2p1", "docker": "Docker version 20.10.24"},
    "versions": {"pyinfra": "3.10.0"},
    "xcatfab_mode": "N parallel `fab -H`",
    "noop": {
        "1": {"floor": {"median": 0.3, "min": 0.29, "max": 0.35, "n": 5, "changed_total": 0},
              "xcatfab": {"median": 0.45, "min": 0.4, "max": 0.5, "n": 5, "changed_total": 0},
              "pyinfra": {"median": 1.8, "min": 1.7, "max": 2.0, "n": 5, "changed_total": 0}},
        "2": {"floor": {"median": 0.4, "min": 0.38, "max": 0.45, "n": 5, "changed_total": 0},
              "xcatfab": {"median": 0.6, "min": 0.55, "max": 0.7, "n": 5, "changed_total": 0},
              "pyinfra": {"median": 2.8, "min": 2.6, "max": 3.1, "n": 4, "changed_total": 1, "excluded": 1}},
    },
    "first": {"1": {"xcatfab": {"seconds": 4.0, "rc": 0}, "pyinfra": {"seconds": 9.0, "rc": 2}}},
    "counts": {"xcatfab": {"accepted": 1, "sessions": 1, "commands": 1,
                           "self_reported": "connections=1 commands=1"}},
    "notes": ["a note"],
}


def test_noop_table_ratios_to_the_same_n_floor():
    table = converge.noop_table(2, RESULTS["noop"]["2"], RESULTS["tools"])
    rows = table.splitlines()
    assert rows[0].startswith("| N=2, no-op converge | median | min | max | × floor")
    assert "| xcatfab (quick) | 0.60 s | 0.55 s | 0.70 s | 1.50× | 5 | – |" in rows
    assert "| pyinfra (deep) | 2.80 s | 2.60 s | 3.10 s | 7.00× | 4 | 1 |" in rows


def test_summary_table_one_column_per_n():
    table = converge.summary_table([1, 2], RESULTS["noop"], RESULTS["tools"])
    assert "| no-op converge, median | checks | N=1 | N=2 | × floor |" in table
    assert "| xcatfab (quick) | quick | 0.45 s | 0.60 s | 1.50 |" in table
    assert "| pyinfra (deep) | deep | 1.80 s | 2.80 s | 6.00–7.00 |" in table


def test_goal_line():
    line = converge.goal_line([1, 2], RESULTS["noop"])
    assert line.startswith("Goal of issue 7")
    assert "N=1: 1.50× floor (≤ 2×), below pyinfra" in line and "N=2: 1.50× floor (≤ 2×), below pyinfra" in line
    slow = {"1": {"floor": {"median": 0.3}, "xcatfab": {"median": 0.7}, "pyinfra": {"median": 0.6}}}
    assert "N=1: 2.33× floor (MORE than 2×), NOT below pyinfra" in converge.goal_line([1], slow)
    assert converge.goal_line([4], slow) == ""


def test_markdown_section_has_everything():
    body = converge.markdown_section(RESULTS)
    for text in ("2026-11-29 18:00 UTC", "CPU X, 2 cores", "kernel 6.18", "pyinfra 3.10.0",
                 "N parallel `fab -H`", "N=1, no-op converge", "N=2, no-op converge",
                 "| pyinfra (deep) | 9.00 s (FAILED rc=2) | – |",
                 "| xcatfab (quick) | 1 | 1 | 1 | connections=1 commands=1 |", "- a note",
                 "| xcatfab (quick) | quick |", "| pyinfra (deep) | deep |"):
        assert text in body, text


def test_replace_section_keeps_other_sections():
    doc = "# Benchmarks\n\nIntro.\n\n## ISO\n\niso numbers\n\n## Converge\n\nold\n\n## Later\n\nkept\n"
    new = converge.replace_section(doc, "Converge", "new body\n")
    assert "old" not in new
    assert "## ISO\n\niso numbers" in new and "## Later\n\nkept" in new
    assert new.index("## ISO") < new.index("## Converge\n\nnew body") < new.index("## Later")
    assert converge.replace_section(new, "Converge", "new body\n") == new  # idempotent


def test_replace_section_appends_or_creates():
    assert converge.replace_section("", "Converge", "x\n") == "# Benchmarks\n\n## Converge\n\nx\n"
    appended = converge.replace_section("# B\n\n## ISO\n\ny\n", "Converge", "x\n")
    assert appended == "# B\n\n## ISO\n\ny\n\n## Converge\n\nx\n"


# ------------------------------------------------------------------ the peers' inventories
INI = """\
[lab]
lab2 address=198.18.0.12 host_ip=198.18.0.12/24 gateway=198.18.0.1 container_ip=198.18.0.112/24 iso_dir=/s/lab2/iso data_dir=/s/lab2/xcatdata state_dir=/s/lab2/xcatfab docker_restart=/s/lab2/restart-dockerd
lab3 address=198.18.0.13 host_ip=198.18.0.13/24 gateway=198.18.0.1 container_ip=198.18.0.113/24 iso_dir=/s/lab3/iso data_dir=/s/lab3/xcatdata state_dir=/s/lab3/xcatfab docker_restart=/s/lab3/restart-dockerd

[lab:vars]
preset=lab
container_dns=198.18.0.1
"""  # noqa: E501

ISO = {"src": "/cache/bench-64m.iso", "name": "bench-64m.iso", "size": 67108864, "sha1": "a" * 40, "sha256": "b" * 64}


@pytest.fixture
def cfgs(tmp_path):
    path = tmp_path / "hosts.ini"
    path.write_text(INI)
    return {c.name: c for c in load_hosts(str(path), names=["lab2", "lab3"])}


def test_host_spec_is_xcatfabs_own_target_state(cfgs):
    from tasks.steps import container

    cfg = cfgs["lab2"]
    spec = peer_inventory.host_spec(cfg, ISO)
    assert spec["xf_bridge"] == {"name": "mydocker0", "iface": "eth0", "address": "198.18.0.12/24",
                                 "gateway": "198.18.0.1"}
    assert spec["xf_network"] == {"name": "xcatnet", "driver": "bridge", "subnet": "198.18.0.0/24",
                                  "gateway": "198.18.0.1", "ip_range": "198.18.0.112/32",
                                  "options": {"com.docker.network.bridge.name": "mydocker0",
                                              "com.docker.network.bridge.inhibit_ipv4": "true"}}
    ctr = spec["xf_container"]
    assert ctr["image"] == "xcatfab/xcat:standin-lab" and ctr["ip"] == "198.18.0.112"
    assert ctr["binds"] == container.binds(cfg)
    assert ctr["mac_address"] == container.mac_address(cfg)
    assert ctr["cap_add"] == ["ALL"] and ctr["cap_drop"] == ["CAP_SYS_RESOURCE"]
    assert ctr["device_cgroup_rules"] == container.DEVICE_RULES and ctr["privileged"] is False
    assert ctr["restart_policy"] == "unless-stopped" and ctr["hostname"] == "xcatmn"
    assert spec["xf_dirs"] == container.host_dirs(cfg)
    assert [f["dest"] for f in spec["xf_files"]] == ["/s/lab2/xcatdata/xcatfab/hosts",
                                                    "/s/lab2/xcatdata/xcatfab/resolv.conf"]
    assert spec["xf_files"][0]["content"] == container.hosts_text(cfg, "")
    assert spec["xf_site"] == {"master": "198.18.0.112", "nameservers": "198.18.0.112", "domain": "cluster"}
    assert spec["xf_iso"] == {"src": ISO["src"], "dest": "/s/lab2/iso/bench-64m.iso", "sha1": ISO["sha1"],
                              "sha256": ISO["sha256"], "size": ISO["size"]}
    assert "xf_iso" not in peer_inventory.host_spec(cfg, None)


def test_host_spec_matches_xcatfabs_container_diff(cfgs):
    """A container made from the spec is one xcatfab's own comparison calls converged."""
    from tasks.steps.container import container_diff

    cfg = cfgs["lab2"]
    ctr = peer_inventory.host_spec(cfg)["xf_container"]
    inspect = peer_inventory.synthetic_inspect(ctr)
    assert container_diff(cfg, inspect, {"Id": "sha256:bench"}) == []


def test_rw_binds_are_drift_follows_xcatfabs_comparison(cfgs, monkeypatch):
    from tasks.steps import container

    cfg = cfgs["lab2"]
    real = container.container_diff
    # whatever xcatfab does today, the answer must follow its own comparison:
    ctr = peer_inventory.host_spec(cfg)["xf_container"]
    rw = [b if b.count(":") >= 2 else b + ":rw" for b in ctr["binds"]]
    expected = bool(real(cfg, peer_inventory.synthetic_inspect(ctr, rw), {"Id": "sha256:bench"}))
    assert peer_inventory.rw_binds_are_drift(cfg) is expected
    monkeypatch.setattr(container, "container_diff", lambda *a: [])
    assert peer_inventory.rw_binds_are_drift(cfg) is False
    monkeypatch.setattr(container, "container_diff", lambda *a: ["mounts"])
    assert peer_inventory.rw_binds_are_drift(cfg) is True


def test_ansible_inventory(cfgs):
    specs = {n: peer_inventory.host_spec(c) for n, c in cfgs.items()}
    inv = json.loads(peer_inventory.ansible_inventory(specs, "/s/ssh_config"))
    group = inv["all"]["children"]["xcat_hosts"]
    assert sorted(group["hosts"]) == ["lab2", "lab3"]
    assert group["vars"]["ansible_ssh_common_args"] == "-F /s/ssh_config"
    assert group["vars"]["ansible_python_interpreter"] == "/usr/bin/python3"
    assert group["hosts"]["lab3"]["xf_container"]["ip"] == "198.18.0.113"
    assert group["hosts"]["lab3"]["ansible_user"] == "root"


def test_pyinfra_inventory_is_a_python_module(cfgs):
    specs = {n: peer_inventory.host_spec(c) for n, c in cfgs.items()}
    connect = {n: {"address": c.connect_address, "key": "/s/id", "known_hosts": "/s/kh"} for n, c in cfgs.items()}
    source = peer_inventory.pyinfra_inventory(specs, connect)
    tree = ast.parse(source)
    namespace: dict = {}
    exec(compile(tree, "inventory.py", "exec"), namespace)
    hosts = dict(namespace["xcat_hosts"])
    assert sorted(hosts) == ["lab2", "lab3"]
    data = hosts["lab2"]
    assert data["ssh_hostname"] == "198.18.0.12" and data["ssh_key"] == "/s/id"
    assert data["ssh_known_hosts_file"] == "/s/kh" and data["ssh_strict_host_key_checking"] == "yes"
    assert data["xf_container"]["privileged"] is False
    assert data["xf_site"]["master"] == "198.18.0.112"


# ------------------------------------------------------------------ the ISO benchmark (bench/iso.py)
from bench import iso as isobench  # noqa: E402


def test_iso_every_tool_sends_the_same_file_into_the_same_directory():
    """Same bytes, same destination disk: one source path, every copy in the host's iso_dir."""
    cmds = isobench.commands("/s/ssh_config", "lab1", "/s/lab1/iso", "/src/bench.iso")
    assert set(cmds) == {t.name for t in isobench.TOOLS if not t.xcatfab and not t.name.startswith("tcp-limit")}
    for name, argv in cmds.items():
        if name == "ssh-cat-gcm":  # the file goes on stdin (the runner opens the same source)
            assert argv[-1] == "cat > /s/lab1/iso/bench-copy"
        else:
            assert argv[-2:] == ["/src/bench.iso", "lab1:/s/lab1/iso/bench-copy"], name
        assert any("/s/ssh_config" in word for word in argv)  # the lab's host, key and known_hosts, every tool
    for tool in isobench.TOOLS:
        assert isobench.destination(tool.name, "/s/lab1/iso", "bench.iso").startswith("/s/lab1/iso/")
    assert "-c" in cmds["scp-gcm"] and isobench.GCM in cmds["scp-gcm"] and isobench.GCM in cmds["ssh-cat-gcm"]
    assert "-c" not in cmds["scp"]  # the default cipher row stays the default
    x = isobench.xcatfab_argv("lab1", "/src/bench.iso", "/s/hosts.ini", "/t/SUMS", "ssh")
    assert x[x.index("--src") + 1] == "/src/bench.iso" and "--no-copycds" in x
    assert "--checksums" in x and "iso_transport=ssh" in x
    assert "--checksums" not in isobench.xcatfab_argv("lab1", "/src/bench.iso", "/s/hosts.ini", None)


def test_iso_rotation_gives_every_tool_every_position():
    names = isobench.TOOL_NAMES
    firsts = {isobench.rotate(names, r)[0] for r in range(len(names))}
    assert firsts == set(names)
    assert all(sorted(isobench.rotate(names, r)) == sorted(names) for r in range(5))


def test_iso_no_run_is_dropped_silently():
    samples = [{"seconds": 3.0, "ok": True}, {"seconds": 1.0, "ok": False, "error": "exit 1: boom"},
               {"seconds": 2.0, "ok": True}]
    s = isobench.summarize(samples)
    assert (s["median"], s["min"], s["max"], s["n"], s["failed"]) == (2.5, 2.0, 3.0, 2, 1)
    assert s["errors"] == ["exit 1: boom"]
    assert isobench.summarize([{"seconds": 1.0, "ok": False}])["median"] is None


def _block(size_mib, medians, failed=()):
    stats = {}
    for name, median in medians.items():
        samples = [{"seconds": median, "ok": True}] * 3
        samples += [{"seconds": 99.0, "ok": False, "error": f"{name} broke"} for _ in range(failed.count(name))]
        stats[name] = isobench.summarize(samples)
    return {"size_mib": size_mib, "size": size_mib * isobench.MIB, "stats": stats}


ISO_RESULTS = {
    "date": "2026-12-04 20:00 UTC", "hosts": ["lab1", "lab2"], "runs": 3, "load": ["1024 MiB 0.50/0.70"],
    "machine": {"cpu_model": "CPU X", "nproc": 2, "kernel": "6.18", "openssh": "OpenSSH_9.2p1", "python": "3.11"},
    "noop_seconds": 0.5, "egress_mib": 1024, "egress": [],
}


def test_iso_markdown_ratios_against_the_fastest_openssh_of_the_same_run():
    medians = {"xcatfab": 2.0, "xcatfab-cold": 3.0, "xcatfab-ssh": 2.5, "scp": 4.0, "scp-gcm": 2.4,
               "ssh-cat-gcm": 2.2, "rsync": 5.0, "tcp-limit": 1.0, "tcp-limit-sync": 1.5}
    block = _block(1024, medians, failed=["rsync"])
    assert isobench.fastest_openssh(block["stats"]) == "ssh-cat-gcm"
    body = isobench.markdown(dict(ISO_RESULTS, sizes=[block]))
    assert "× fastest OpenSSH (ssh-cat-gcm)" in body
    assert "| xcatfab `fab iso --checksums` (tcp) | 2.00 [2.00–2.00] | 512 | 1.10× | 0.50 | 3/3 |" in body
    assert "**1024 MiB: xcatfab = 1.10× the fastest OpenSSH transfer (ssh-cat-gcm), 0.50 of the limit's speed**" \
        in body and "meets the goal" in body
    assert "| 3/4 |" in body and "- rsync: a run left out: rsync broke" in body  # counted, shown, not dropped
    for tool in isobench.TOOLS:  # every row has its one-line meaning
        assert f"| {tool.label} |" in body and tool.meaning in body
    for text in ("2026-12-04 20:00 UTC", "`date -u`", "CPU X, 2 cores", "Load average", "1024 MiB 0.50/0.70"):
        assert text in body, text


def test_iso_markdown_says_when_the_goal_is_missed_and_when_a_tool_failed():
    medians = {"xcatfab": 3.0, "scp-gcm": 2.0, "ssh-cat-gcm": 2.2, "tcp-limit": 1.0}
    body = isobench.markdown(dict(ISO_RESULTS, sizes=[_block(4096, medians)]))
    assert "xcatfab = 0.67× the fastest OpenSSH transfer (scp-gcm)" in body and "does NOT meet" in body
    block = _block(4096, {"xcatfab": 3.0, "scp-gcm": 2.0})
    block["stats"]["scp"] = isobench.summarize([{"seconds": 1.0, "ok": False, "error": "exit 255"}])
    body = isobench.markdown(dict(ISO_RESULTS, sizes=[block]))
    assert "| `scp` (default cipher) | FAILED | – | – | – | 0/1 |" in body


# ------------------------------------------------------------------ issue 15: quick and deep, scale, make bench
def test_every_tool_has_a_label_and_says_quick_or_deep():
    for tool in converge.TOOLS:
        assert tool in converge.LABELS and tool in converge.CHECKS, tool
        kind, what = converge.CHECKS[tool]
        assert kind in ("quick", "deep", "–") and what
    assert converge.CHECKS["xcatfab"][0] == "quick" and "quick" in converge.LABELS["xcatfab"]
    for tool in ("xcatfab-deep", "pyinfra", "ansible-tuned", "ansible-default"):
        assert converge.CHECKS[tool][0] == "deep" and "deep" in converge.LABELS[tool], tool


def test_checks_table_has_a_row_per_tool():
    table = converge.checks_table(converge.TOOLS)
    assert len(table.splitlines()) == 2 + len(converge.TOOLS)
    assert "| xcatfab `--verify deep` | deep | tables: `tabdump site` and `tabdump networks` every run" in table


def test_deep_row_runs_xcatfab_with_verify_deep(cfgs, tmp_path):
    runner = converge.Runner.__new__(converge.Runner)
    runner.fab, runner.rollout, runner.sets, runner.rollout_args = "fab", True, ["--set", "isos=x"], []
    runner.lab = type("L", (), {"inventory": tmp_path / "hosts.ini", "ssh_config": tmp_path / "ssh_config"})()
    quick = runner.commands("xcatfab", ["lab2", "lab3"])[0][0]
    deep = runner.commands("xcatfab-deep", ["lab2", "lab3"])[0][0]
    assert "--verify" not in quick and quick[quick.index("--forks") + 1] == "2"  # all hosts at once
    assert deep == quick + ["--verify", "deep"]  # the same run, the same ISO, only the check differs
    floor = runner.commands("floor", ["lab2", "lab3"])
    assert [argv[-2:] for argv, _env, _cwd in floor] == [["lab2", "true"], ["lab3", "true"]]


def test_peers_get_xcatfabs_target_state(cfgs):
    """What xcatfab's container step runs (docker run) is what the peers are given, and nothing more."""
    from tasks.runtime.facts import Facts
    from tasks.steps.container.spec import run_args
    from tasks.steps.xcat import OWNED_MARK, wanted_networks

    cfg = cfgs["lab2"]
    spec = peer_inventory.host_spec(cfg, ISO)
    ctr = spec["xf_container"]
    args = run_args(cfg)
    pairs = dict(zip(args[:-1], args[1:]))
    assert pairs["--ip"] == ctr["ip"] and pairs["--mac-address"] == ctr["mac_address"]
    assert pairs["--hostname"] == ctr["hostname"] and pairs["--restart"] == ctr["restart_policy"]
    assert pairs["--network"] == ctr["network"] and args[-1] == ctr["image"]
    assert [args[i + 1] for i, a in enumerate(args) if a == "--volume"] == ctr["binds"]
    assert [args[i + 1] for i, a in enumerate(args) if a == "--device-cgroup-rule"] == ctr["device_cgroup_rules"]
    # no extra environment and no extra host: xcatfab adds none, the peers must not either
    assert not {"-e", "--env", "--add-host"} & set(args)
    assert "env" not in ctr and "etc_hosts" not in ctr
    # /etc/hosts and resolv.conf are the host's files, bind-mounted
    data = cfg.data_dir.rstrip("/")
    assert f"{data}/xcatfab/hosts:/etc/hosts" in ctr["binds"]
    assert f"{data}/xcatfab/resolv.conf:/etc/resolv.conf" in ctr["binds"]
    # the networks entry xcatfab makes
    assert spec["xf_networks"] == [dict(e, usercomment=OWNED_MARK) for e in wanted_networks(cfg, Facts())]
    assert spec["xf_networks"][0]["net"] == "198.18.0.0" and spec["xf_networks"][0]["usercomment"] == "xcatfab"


PEER_FILES = {
    "ansible": converge.PEERS / "ansible" / "converge.yml",
    "pyinfra": converge.PEERS / "pyinfra" / "deploy.py",
}


@pytest.mark.parametrize("peer", sorted(PEER_FILES))
def test_peers_use_every_part_of_the_target_state(cfgs, peer):
    text = PEER_FILES[peer].read_text() + (
        (converge.PEERS / "pyinfra" / "xcat_ops.py").read_text() if peer == "pyinfra" else "")
    spec = peer_inventory.host_spec(cfgs["lab2"], ISO)
    for key in spec:
        assert key in text, f"{peer} never uses {key}"
    for field in spec["xf_container"]:
        if field == "fqdn":
            continue  # in the hosts file's content (xf_files), not a container option
        assert f'["{field}"]' in text or f".{field}" in text, f"{peer} never uses xf_container.{field}"
    for gone in ("xf_container.env", 'ctr["env"]', "etc_hosts", "--add-host"):
        assert gone not in text, f"{peer} still sets {gone}: xcatfab's container has no such thing"
    for word in ("tabdump", "networks", "mkdef", "usercomment", "tabdump site" if peer == "pyinfra" else "site]"):
        assert word in text, f"{peer}: {word}"


def test_capped_tools_are_reported_not_dropped():
    tools = ["floor", "xcatfab", "pyinfra", "ansible-tuned"]
    max_n = converge.parse_max_n("ansible-tuned=4", tools)
    assert converge.tools_at(16, tools, max_n) == ["floor", "xcatfab", "pyinfra"]
    assert converge.tools_at(4, tools, max_n) == tools
    assert converge.skipped_runs([1, 4, 16], tools, max_n) == {"16": ["ansible-tuned"]}
    body = converge.markdown_section(dict(RESULTS, skipped={"2": ["pyinfra"]}))
    assert "Not run at N=2 (`--max-n`, for the run's time): pyinfra (deep)." in body
    with pytest.raises(SystemExit):
        converge.parse_max_n("nosuch=3", tools)
    with pytest.raises(SystemExit):
        converge.parse_max_n("pyinfra=0", tools)


def test_failed_runs_stay_in_the_raw_data():
    s = converge.restat({"runs": [1.0, 2.0, 3.0], "rcs": [0, 1, 0], "changed": [{"h": 0}, {"h": 0}, {"h": 1}]})
    assert s["n"] == 1 and s["excluded"] == 2 and s["runs"] == [1.0, 2.0, 3.0]


def test_wait_with_usage_gives_status_cpu_and_rss():
    import subprocess
    import time

    proc = subprocess.Popen([sys.executable, "-c", "import sys; sum(range(10**6)); sys.exit(3)"])
    rc, usage = converge.wait_with_usage(proc, time.perf_counter() + 60)
    assert rc == 3 and proc.returncode == 3
    assert usage["cpu_seconds"] > 0 and usage["maxrss_mib"] > 1


def test_per_extra_host_and_usage_table():
    first = {"1": {"xcatfab": {"seconds": 5.0, "rc": 0}}, "4": {"xcatfab": {"seconds": 8.0, "rc": 0}},
             "16": {"xcatfab": {"seconds": 20.0, "rc": 0}, "pyinfra": {"seconds": 9.0, "rc": 0}}}
    assert converge.per_extra_host(first, "xcatfab") == pytest.approx(1.0)
    assert converge.per_extra_host(first, "pyinfra") is None  # one point only
    noop = {"4": {"xcatfab": {"usage": [{"cpu_seconds": 0.8, "maxrss_mib": 60.0}, None,
                                        {"cpu_seconds": 1.2, "maxrss_mib": 70.0}]}}}
    table = converge.usage_table([4], noop, ["xcatfab", "pyinfra"])
    assert "| xcatfab (quick) | 0.250 s, 65 MiB |" in table and "| pyinfra (deep) | – |" in table


def test_issue15_goals():
    noop = {"1": {"floor": {"median": 0.30}, "xcatfab": {"median": 0.44}, "xcatfab-deep": {"median": 0.80},
                  "pyinfra": {"median": 3.0}},
            "16": {"floor": {"median": 2.0}, "xcatfab": {"median": 2.8}, "pyinfra": {"median": 2.5}}}
    goals = converge.issue15_goals([1, 16], noop, {"seconds": 0.15})
    assert goals[0] == "N=1: quick no-op 1.47× the floor, goal ≤ 1.5×: met, below pyinfra"
    assert goals[1].startswith("N=1: deep no-op 0.80 s, goal ≤ 2× floor + one hash of the ISO (0.60 + 0.15 = 0.75 s)"
                               ": NOT met (gap 0.05 s)")
    assert goals[2] == "N=16: quick no-op 1.40× the floor, goal ≤ 1.3×: NOT met (gap 0.20 s), NOT below pyinfra"


# ------------------------------------------------------------------ bench/scale.py
from bench import scale  # noqa: E402


def test_scale_finds_a_lab_hosts_processes():
    procs = [
        {"pid": 1, "cmdline": "/usr/sbin/dockerd --data-root /var/lib/xcatfab-lab/lab1/docker", "cgroup": "/"},
        {"pid": 2, "cmdline": "/usr/sbin/dockerd --data-root /var/lib/xcatfab-lab/lab11/docker", "cgroup": "/"},
        {"pid": 3, "cmdline": "containerd --config /run/xcatfab-lab/lab1/containerd/containerd.toml", "cgroup": "/"},
        {"pid": 4, "cmdline": "xcatd", "cgroup": "/xcatfab-lab/lab1/docker-abc.scope"},
        {"pid": 5, "cmdline": "sshd: /usr/sbin/sshd -f /var/lib/xcatfab-lab/lab1/sshd_config", "cgroup": "/"},
        {"pid": 6, "cmdline": "bash", "cgroup": "/user.slice"},
    ]
    assert [p["pid"] for p in scale.host_processes("lab1", procs)] == [1, 3, 4, 5]
    assert [p["pid"] for p in scale.host_processes("lab11", procs)] == [2]


def test_scale_memory_summary_and_lines():
    per_host = {"lab1": {"count": 9, "names": ["dockerd"], "rss_mib": 400.0, "pss_mib": 200.0},
                "lab2": {"count": 9, "names": ["dockerd"], "rss_mib": 420.0, "pss_mib": 220.0}}
    summary = scale.memory_summary(per_host, 24 * 1024 * 1024)
    assert summary["pss_mib"] == 210.0 and summary["fit_pss"] == int(24 * 1024 * 0.8 // 210)
    text = "\n".join(scale.memory_lines({"hosts": per_host, "summary": summary}))
    assert "| lab1 | 9 (dockerd) | 400 MiB | 200 MiB |" in text and f"{summary['fit_pss']} such hosts" in text


def test_scale_serial_keeps_failed_rounds():
    raw = {"floor": [{"seconds": 1.0, "rc": 0}] * 3,
           "all-at-once": [{"seconds": 1.2, "rc": 0}, {"seconds": 9.0, "rc": 1}, {"seconds": 1.4, "rc": 0}],
           "serial-25": [{"seconds": 3.0, "rc": 0}] * 3}
    summary = scale.serial_summary(raw)
    assert summary["all-at-once"]["n"] == 2 and summary["all-at-once"]["failed"] == 1
    text = "\n".join(scale.serial_lines(summary, 16))
    assert "| `fab rollout` (all hosts at once, forks=N) | 1.30 s [1.20–1.40] | 1.30× | 2/3 |" in text
    assert "| `fab rollout --serial 25%` (4 batches) | 3.00 s [3.00–3.00] | 3.00× | 3/3 |" in text


def test_scale_relay_goals():
    relay = [{"n": 1, "seconds": 10.0, "total": 1025 * (1 << 20), "ratio": 1.001, "rc": 0},
             {"n": 8, "seconds": 14.0, "total": 1026 * (1 << 20), "ratio": 1.002, "rc": 0}]
    text = "\n".join(scale.relay_lines(relay, 1024))
    assert "| 8 | 1026.0 MiB | 1.002 | 14.0 s | 1.40× | 0 |" in text
    assert "controller egress ≤ 1.02× the ISO: met (1.002×)" in text
    assert "wall clock within 1.3× of one host: NOT met (1.40×)" in text


# ------------------------------------------------------------------ make bench, make bench-quick
from bench import run as benchrun  # noqa: E402


def test_make_bench_runs_every_benchmark():
    assert set(benchrun.FULL) == set(benchrun.BENCHMARKS)
    converge_args = benchrun.FULL["converge"]
    ns = converge_args[converge_args.index("--n") + 1]
    assert ns == "1,4,8,16"
    assert "--no-markdown" not in " ".join(a for args in benchrun.FULL.values() for a in args)


def test_make_bench_quick_is_a_small_subset_that_writes_no_markdown():
    args = benchrun.QUICK["converge"]
    assert set(benchrun.QUICK) <= set(benchrun.BENCHMARKS)
    assert args[args.index("--n") + 1] == "1,4" and args[args.index("--runs") + 1] == "3"
    assert args[args.index("--tools") + 1].split(",") == ["floor", "xcatfab", "xcatfab-deep", "pyinfra"]
    assert "--no-markdown" in args


def test_makefile_has_both_targets():
    text = (converge.ROOT / "Makefile").read_text()
    assert "\nbench: " in text and "bench/run.py\n" in text
    assert "\nbench-quick: " in text and "bench/run.py --quick" in text


def test_headline_against_the_floor_and_the_fastest_deep_peer():
    noop = {"4": {"floor": {"median": 0.5}, "xcatfab": {"median": 0.6}, "xcatfab-deep": {"median": 1.0},
                  "pyinfra": {"median": 10.0}, "ansible-tuned": {"median": 20.0}}}
    (line,) = converge.headline([4], noop)
    assert line == ("N=4: xcatfab quick 0.60 s = 1.20× the floor; deep 1.00 s = 0.10× the fastest deep peer "
                    "(pyinfra (deep), 10.00 s), 10.0× faster")


def test_parse_pyinfra_with_host_names_padded_to_the_longest():
    text = "    [lab1]  No changes\n    [lab10] No changes\n    [lab2]  Success\n"
    assert converge.parse_pyinfra(text) == {"lab1": {"changed": 0}, "lab10": {"changed": 0},
                                            "lab2": {"changed": 1}}


def test_peak_rss_is_the_childs_not_this_processs(tmp_path):
    import subprocess

    big = bytearray(200 * 1024 * 1024)  # this process: over 200 MiB resident
    big[::4096] = b"x" * len(big[::4096])
    out = tmp_path / "rss"
    argv = converge.with_peak_rss(["true"], out)
    if argv[0] != converge.TIME:
        pytest.skip("no GNU time")
    subprocess.run(argv, check=True)
    assert converge.read_peak_rss(out) < 50  # `true`'s own, not the 200 MiB of its parent
    assert converge.read_peak_rss(tmp_path / "missing") is None


def test_scale_usage_lines():
    usage = {"xcatfab": {"1": {"cpu_seconds": 0.25, "maxrss_mib": 48.0, "seconds": 0.5, "rc": 0},
                         "4": {"cpu_seconds": 0.4, "maxrss_mib": 52.0, "seconds": 1.0, "rc": 0}},
             "pyinfra": {"1": {"cpu_seconds": 0.6, "maxrss_mib": None, "seconds": 5.0, "rc": 0}}}
    text = "\n".join(scale.usage_lines(usage))
    assert "| xcatfab (quick) | 0.250 s, 48 MiB | 0.100 s, 52 MiB |" in text
    assert "| pyinfra (deep) | – | – |" in text


# ------------------------------------------------------------------ bytecode
def test_precompile_leaves_every_xcatfab_module_compiled(tmp_path):
    """make bench times xcatfab as a wheel install runs it: its modules byte-compiled, whatever
    PYTHONDONTWRITEBYTECODE says (pip compiled the peers' packages when it installed them)."""
    import importlib.util

    from bench import run

    (tmp_path / "tasks" / "sub").mkdir(parents=True)
    for rel in ("fabfile.py", "tasks/__init__.py", "tasks/sub/mod.py"):
        (tmp_path / rel).write_text("X = 1\n")
    compiled = run.precompile(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in compiled) == [
        "fabfile.py", "tasks/__init__.py", "tasks/sub/mod.py"]
    for rel in ("fabfile.py", "tasks/__init__.py", "tasks/sub/mod.py"):
        assert os.path.exists(importlib.util.cache_from_source(str(tmp_path / rel)))
