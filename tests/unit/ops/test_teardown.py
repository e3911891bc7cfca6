"""fab teardown: what it removes, and --restore-network from the record of the network before deploy."""

from __future__ import annotations

import pytest

from tasks.ops import teardown
from tasks.runtime.errors import BadInput, StepFailed
from tasks.steps.bridge import forward_rule, recorded_network
from tasks.steps.container import shim_name, veth_names
from tests.unit.factshapes import BARE, BRIDGED, MAC, facts, host_cfg, link
from tests.unit.ops.test_status import DEPLOYED, inspect_objects


def record(c, bridge_existed=False, iface_master=""):
    """network-before.json exactly as the bridge step writes it before its first change."""
    before = {"bridge_existed": bridge_existed, "bridge_addrs": ["10.9.9.1/24"] if bridge_existed else [],
              "bridge_mac": MAC if bridge_existed else "", "iface_master": iface_master,
              "default_dev": "eth0", "default_gateway": "198.18.0.1", "bridge_routes": []}
    return {"address": "198.18.0.20/24", "gateway": "198.18.0.1", "mac": MAC, "iface_addrs": ["198.18.0.20/24"],
            "routes": [], "before": before, "iface": c.mgmt_interface, "bridge": c.bridge}


def test_the_record_of_the_network_before_deploy_reads_back():
    c = host_cfg()
    recorded = teardown.Recorded(recorded_network(facts(bridge__before=record(c))))
    assert recorded.addresses == ["198.18.0.20/24"]
    assert (recorded.before["default_gateway"], recorded.before["default_dev"]) == ("198.18.0.1", "eth0")
    assert not recorded.before["bridge_existed"] and not recorded.before["iface_master"]
    assert recorded.bridge_addresses == []
    existed = teardown.Recorded(record(c, bridge_existed=True, iface_master="br9"))
    assert existed.before["bridge_existed"] and existed.before["iface_master"] == "br9"
    assert existed.bridge_addresses == ["10.9.9.1/24"]
    assert recorded_network(facts(bridge__before="")) is None  # no record: nothing to restore from


def test_a_bridge_that_existed_before_deploy_stays_with_its_own_addresses():
    c = host_cfg()
    recorded = teardown.Recorded(record(c, bridge_existed=True))
    diffs = teardown.restore_diffs(c, facts(**BRIDGED), recorded)
    assert "delete mydocker0" not in diffs and "put 10.9.9.1/24 back on mydocker0" in diffs
    restored = facts(host__links=[link("eth0", ["198.18.0.20/24"]),
                                  link("mydocker0", ["10.9.9.1/24"], kind="bridge")],
                     host__routes=BARE["host__routes"])
    assert teardown.restore_diffs(c, restored, recorded) == []


def test_teardown_plan_of_a_deployed_host_and_of_a_bare_one():
    c = host_cfg()
    deployed = facts(docker__inspect=inspect_objects(c), admin__state="data_dir=yes", **DEPLOYED)
    kinds = [a.kind for a in teardown.teardown_plan(c, deployed, purge=False)]
    assert kinds == ["container", "network"]  # the data stays unless asked
    assert [a.kind for a in teardown.teardown_plan(c, deployed, purge=True)] == ["container", "network", "purge"]
    bare = facts(docker__bin="/usr/bin/docker\n/usr/sbin/dockerd", docker__inspect_err="rc=1\n", **BARE)
    assert teardown.teardown_plan(c, bare, purge=True) == []


def test_teardown_finds_netns_and_macvlan_leftovers_whatever_the_mode_now():
    c = host_cfg()  # network_mode=bridge now, but netns and macvlan leftovers are there
    f = facts(docker__bin="/usr/bin/docker\n/usr/sbin/dockerd", docker__inspect_err="rc=1\n",
              admin__watcher="pidfile=yes\nnetns-watch=yes",
              host__links=BRIDGED["host__links"] + [link(shim_name(c)), link(veth_names(c)[0])],
              host__routes=BRIDGED["host__routes"])
    assert [a.kind for a in teardown.teardown_plan(c, f, purge=False)] == ["watcher", "shim"]


def test_teardown_refuses_to_guess_when_the_engine_is_down():
    f = facts(docker__bin="/usr/bin/docker\n/usr/sbin/dockerd",
              docker__inspect_err="rc=1\nCannot connect to the Docker daemon at unix:///x", **BRIDGED)
    with pytest.raises(StepFailed, match="not answering"):
        teardown.teardown_plan(host_cfg(), f, purge=False)


def test_restore_plan_from_bridged_to_as_before():
    c = host_cfg()
    rules = forward_rule(c) + "\n-A DOCKER-USER -j RETURN"
    bridged = facts(bridge__before=record(c), bridge__docker_user=rules,
                    bridge__netplan_file="network: {}", **BRIDGED)
    actions, note = teardown.restore_plan(c, bridged)
    assert [a.kind for a in actions] == ["forward", "netplan", "restore"] and note is None
    restore = actions[-1].summary
    assert "release eth0 from mydocker0" in restore and "delete mydocker0" in restore
    assert "put 198.18.0.20/24 back on eth0" in restore and "default route via 198.18.0.1 on eth0" in restore
    # restored, but the record is still there: forget it (and nothing else)
    actions, _note = teardown.restore_plan(c, facts(bridge__before=record(c), **BARE))
    assert [a.kind for a in actions] == ["forget"]
    assert teardown.restore_plan(c, facts(**BARE)) == ([], None)  # second run: nothing to do


def test_no_record_means_no_guessing():
    actions, note = teardown.restore_plan(host_cfg(), facts(**BRIDGED))
    assert actions == [] and "no record" in note


def test_the_undo_puts_the_bridge_back_as_it_is_now():
    c = host_cfg()
    undo = teardown.undo_script(c, facts(**BRIDGED))
    assert "ip link set dev eth0 master mydocker0" in undo
    assert "ip addr del 198.18.0.20/24 dev eth0" in undo and "ip addr replace 198.18.0.20/24 dev mydocker0" in undo
    assert "ip route replace default via 198.18.0.1 dev mydocker0" in undo
    assert teardown.undo_script(c, facts(**BARE)) == ""  # no bridge address: nothing to undo


@pytest.mark.parametrize("data_dir", ["/", "/var", "/etc/", "/usr/../etc", "relative/dir"])
def test_purge_refuses_system_directories(data_dir):
    # --purge-data deletes data_dir: the inventory never lets it be a system directory.
    with pytest.raises(BadInput, match="data_dir: .* must be an absolute directory of its own"):
        host_cfg(f"data_dir={data_dir}")


def test_purge_accepts_a_data_directory():
    assert host_cfg("data_dir=/xcatdata").data_dir == "/xcatdata"
    assert host_cfg("data_dir=/srv/xcat/data").data_dir == "/srv/xcat/data"


