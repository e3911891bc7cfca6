"""fab node: its arguments, planning against lsdef, the password never leaving stdin."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest

from tasks.ops import node
from tasks.runtime.errors import BadInput, StepFailed
from tasks.runtime.secret import Secret
from tasks.runtime.templating import render
from tests.unit.factshapes import host_cfg

PASSWORD = "Sup3r s3cret!"


def request(**kw):
    args = dict(name="compute1", bmc="10.0.0.5", bmc_user="ADMIN", password=Secret(PASSWORD))
    args.update(kw)
    return node.node_request(**args)


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
    with pytest.raises(BadInput, match=message) as info:
        request(**kw)
    assert PASSWORD not in str(info.value)


def test_parse_lsdef_reads_objects_and_attributes():
    text = ("Object name: compute1\n    bmc=10.0.0.5\n    groups=all\n    addkcmdline=a=b\n"
            "Object name: compute2\n    mgt=ipmi\n")
    assert node.parse_lsdef(text) == {"compute1": {"bmc": "10.0.0.5", "groups": "all", "addkcmdline": "a=b"},
                                       "compute2": {"mgt": "ipmi"}}


def current(salt="s4lt", password=PASSWORD, **attrs):
    have = {"bmc": "10.0.0.5", "bmcusername": "ADMIN", "groups": "compute", "mgt": "ipmi", "": salt}
    if password is not None:
        have["bmcpassword"] = "sha256:" + hashlib.sha256((salt + password).encode()).hexdigest()
    have.update(attrs)
    return have


def test_an_absent_node_is_created_with_default_groups_and_mgt():
    kind, changes, attrs = node.plan_node(request(), None)
    assert kind == "create"
    assert list(attrs) == ["groups", "mgt", "bmc", "bmcusername", "bmcpassword"]
    assert attrs["groups"] == "all" and attrs["mgt"] == "ipmi"
    assert "bmcpassword=********" in changes[0] and PASSWORD not in changes[0]


def test_a_matching_node_needs_nothing_and_defaults_do_not_override():
    assert node.plan_node(request(), current()) == (None, [], {})  # groups=compute kept


def test_each_difference_is_changed_and_the_password_never_shown():
    kind, changes, attrs = node.plan_node(request(bmc="10.0.0.6", groups="compute,gpu"), current())
    assert kind == "change" and set(attrs) == {"bmc", "groups"}
    assert "bmc: 10.0.0.5 -> 10.0.0.6" in changes[0]
    kind, changes, attrs = node.plan_node(request(), current(password="old"))
    assert set(attrs) == {"bmcpassword"} and attrs["bmcpassword"].reveal() == PASSWORD
    assert changes == ["change node compute1: bmcpassword: changed -> ********"]
    kind, changes, attrs = node.plan_node(request(), current(password=None))
    assert changes == ["change node compute1: bmcpassword: (unset) -> ********"]


def test_the_stanza_carries_the_password_on_stdin_only():
    _kind, _changes, attrs = node.plan_node(request(), None)
    stanza = node.node_stanza("compute1", attrs)
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
    attrs = node.parse_lsdef(proc.stdout)["compute1"]
    assert attrs["bmcpassword"] == node.salted_digest("s4lt", Secret(PASSWORD))
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
        from tasks.runtime.remote import Result

        return Result(0, self.out, "")


def test_read_node_tells_absent_from_failed():
    absent = "Could not find any objects of type 'node'.\n@@xcatfab:lsdef-rc=0\n"
    assert node.read_node(FakeRemote(absent), host_cfg(), "compute1") is None
    other = "Error: [mn]: Could not find an object named 'compute1' of type 'node'.\n@@xcatfab:lsdef-rc=1\n"
    assert node.read_node(FakeRemote(other), host_cfg(), "compute1") is None
    down = "Unable to open socket connection to xcatd daemon on localhost:3001.\n@@xcatfab:lsdef-rc=1\n"
    with pytest.raises(StepFailed, match="xcatd daemon"):
        node.read_node(FakeRemote(down), host_cfg(), "compute1")
    found = node.read_node(FakeRemote("Object name: compute1\n    bmc=1\n@@xcatfab:lsdef-rc=0\n"), host_cfg(),
                           "compute1")
    assert found["bmc"] == "1" and len(found[""]) == 32  # the salt this read used




def test_node_stanza_carries_the_password_only_in_stdin_text():
    secret = Secret("s3cr3t!")
    stanza = node.node_stanza("compute1", {"bmc": "198.18.0.50", "bmcpassword": secret})
    assert stanza == "compute1:\n    objtype=node\n    bmc=198.18.0.50\n    bmcpassword=s3cr3t!\n"
    assert "s3cr3t" not in f"{secret} {secret!r} {[secret]}"
