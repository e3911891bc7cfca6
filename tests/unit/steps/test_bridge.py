"""Planning the bridge step: facts + settings -> actions (recorded-shape facts)."""


import pytest

from tasks.runtime.errors import StepFailed
from tasks.steps import bridge
from tasks.steps.base import sha256_text
from tests.unit.factshapes import AFTER, BEFORE, MAC, facts, link, run_for
from tests.unit.factshapes import plan_cfg as cfg


def test_bridge_plan_from_bare_host_moves_address_and_route():
    (action,) = bridge.BridgeStep().plan(run_for(cfg(), facts(**BEFORE)))
    assert action.kind == "move"
    assert action.data["address"] == "198.18.0.11/24" and action.data["gateway"] == "198.18.0.1"
    assert action.data["mac"] == MAC and action.data["before"]["bridge_existed"] is False


def test_bridge_converged_is_empty_and_each_drift_is_seen():
    assert bridge.BridgeStep().plan(run_for(cfg(), facts(**AFTER))) == []
    drifts = {
        "stp": dict(info={"stp_state": 1, "forward_delay": 0}),
        "delay": dict(info={"stp_state": 0, "forward_delay": 1500}),
        "mac": dict(mac="02:00:00:00:00:99"),
    }
    for name, change in drifts.items():
        br = link("mydocker0", ["198.18.0.11/24"], kind="bridge",
                  info=change.get("info", {"stp_state": 0, "forward_delay": 0}),
                  mac=change.get("mac", MAC))
        f = facts(host__links=[link("eth0", master="mydocker0"), br], host__routes=AFTER["host__routes"])
        (action,) = bridge.BridgeStep().plan(run_for(cfg(), f))
        assert action.kind == "move", name
    # the address left on eth0 too
    f = facts(host__links=[link("eth0", ["198.18.0.11/24"], master="mydocker0"),
                           AFTER["host__links"][2]], host__routes=AFTER["host__routes"])
    assert "remove 198.18.0.11/24 from eth0" in bridge.BridgeStep().plan(run_for(cfg(), f))[0].summary


def test_bridge_refuses_a_host_ip_that_is_not_there():
    with pytest.raises(StepFailed, match="host_ip 198.18.0.12/24 .* is not on eth0 or mydocker0"):
        bridge.BridgeStep().plan(run_for(cfg("host_ip=198.18.0.12/24"), facts(**BEFORE)))
    with pytest.raises(StepFailed, match="interface eth9 not found"):
        bridge.BridgeStep().plan(run_for(cfg("mgmt_interface=eth9"), facts(**BEFORE)))


def test_bridge_forward_rule_only_when_br_netfilter_would_drop():
    f = facts(**AFTER, bridge__forward="nf_call_iptables=1", bridge__docker_user="-N DOCKER-USER")
    (action,) = bridge.BridgeStep().plan(run_for(cfg(), f))
    assert action.kind == "forward"
    f["bridge.docker_user"] = "-N DOCKER-USER\n-A DOCKER-USER -i mydocker0 -o mydocker0 -j ACCEPT"
    assert bridge.BridgeStep().plan(run_for(cfg(), f)) == []
    f = facts(**AFTER, bridge__forward="nf_call_iptables=0")
    assert bridge.BridgeStep().plan(run_for(cfg(), f)) == []


def test_netplan_file_rendered_when_the_host_uses_netplan():
    f = facts(**AFTER, bridge__netplan="present=yes")
    (action,) = bridge.BridgeStep().plan(run_for(cfg(), f))
    assert action.kind == "netplan"
    text = action.data["content"]
    assert "interfaces: [eth0]" in text and f'macaddress: "{MAC}"' in text
    assert "stp: false" in text and "forward-delay: 0" in text and "via: 198.18.0.1" in text
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load(text)
    assert doc["network"]["bridges"]["mydocker0"]["addresses"] == ["198.18.0.11/24"]
    f["bridge.netplan_file"] = text
    assert bridge.BridgeStep().plan(run_for(cfg(), f)) == []
    assert bridge.BridgeStep().plan(run_for(cfg("netplan=no"), facts(**AFTER, bridge__netplan="present=yes"))) == []


def test_a_rollback_left_armed_on_a_right_bridge_is_confirmed_and_cancelled():
    """An interrupted run applied the change but never confirmed it: the next run must not call the
    bridge converged while the host is about to roll it back."""
    pending = facts(**AFTER, **{"guard__bridge-rollback": "apply=done\npending=bridge-rollback"})
    assert [a.kind for a in bridge.BridgeStep().plan(run_for(cfg(), pending))] == ["disarm"]
    settled = facts(**AFTER, **{"guard__bridge-rollback": "apply=done"})
    assert bridge.BridgeStep().plan(run_for(cfg(), settled)) == []
    # A host that still needs the move: the new launch cancels the old rollback itself.
    moving = facts(**BEFORE, **{"guard__bridge-rollback": "pending=bridge-rollback"})
    assert [a.kind for a in bridge.BridgeStep().plan(run_for(cfg(), moving))] == ["move"]


def test_netplan_file_keeps_every_address_and_static_route_the_move_keeps():
    """A reboot must not cut off a path the live move kept (a second address, a static route)."""
    f = facts(host__links=[link("lo"), link("eth0", ["198.18.0.11/24", "198.18.0.50/24"])],
              host__routes=[{"dst": "default", "gateway": "198.18.0.1", "dev": "eth0"},
                            {"dst": "198.18.0.0/24", "dev": "eth0", "protocol": "kernel"},
                            {"dst": "198.18.7.0/24", "gateway": "198.18.0.254", "dev": "eth0"},
                            {"dst": "198.18.9.9", "gateway": "198.18.0.254", "dev": "eth0"}],
              bridge__netplan="present=yes")
    by_kind = {a.kind: a for a in bridge.BridgeStep().plan(run_for(cfg(), f))}
    assert by_kind["move"].data["iface_addrs"] == ["198.18.0.11/24", "198.18.0.50/24"]
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load(by_kind["netplan"].data["content"])["network"]["bridges"]["mydocker0"]
    assert doc["addresses"] == ["198.18.0.11/24", "198.18.0.50/24"]
    assert doc["routes"] == [{"to": "default", "via": "198.18.0.1"},
                             {"to": "198.18.7.0/24", "via": "198.18.0.254"},
                             {"to": "198.18.9.9/32", "via": "198.18.0.254"}]


def test_on_a_systemd_host_the_forward_rule_is_kept_by_a_unit():
    """Docker makes DOCKER-USER anew at every start: on a systemd host the rule's unit is part of
    converged, and its absence is planned even when the rule itself is there."""
    unit, script = bridge.forward_unit(cfg())
    rule = "-A DOCKER-USER -i mydocker0 -o mydocker0 -j ACCEPT"
    base = dict(AFTER, bridge__forward="nf_call_iptables=1", bridge__docker_user=rule)
    missing = facts(**base, bridge__forward_unit="systemd=yes")
    assert [a.kind for a in bridge.BridgeStep().plan(run_for(cfg(), missing))] == ["forward"]
    kept = facts(**base, bridge__forward_unit="systemd=yes\nenabled=yes\n"
                 f"unit_sha={sha256_text(unit)}\nscript_sha={sha256_text(script)}")
    assert bridge.BridgeStep().plan(run_for(cfg(), kept)) == []
    assert bridge.BridgeStep().plan(run_for(cfg(), facts(**base))) == []  # no systemd: the rule is all
