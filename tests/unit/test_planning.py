"""Planning is pure: facts + settings -> actions. These tests feed recorded-shape facts."""

import json

import pytest

from tasks import bridge, container, docker, xcat
from tasks import image as image_step
from tasks.inventory import load_hosts
from tasks.step import Run, StepFailed, parse_sections
from tests.unit.factshapes import MAC, facts, link


def cfg(*sets):
    base = ["host_ip=198.18.0.11/24", "gateway=198.18.0.1", "container_ip=198.18.0.111/24",
            "container_fqdn=xcatmn.lab.example", "state_dir=/tmp/st", "data_dir=/d", "iso_dir=/i",
            "macvlan_shim_ip=198.18.0.161"]
    return load_hosts(None, names=["lab1"], overrides=base + list(sets))[0]


def run_for(c, f, plan_only=False):
    return Run(c, None, f, plan_only=plan_only)


BEFORE = dict(host__links=[link("lo"), link("eth0", ["198.18.0.11/24"])],
              host__routes=[{"dst": "default", "gateway": "198.18.0.1", "dev": "eth0"},
                            {"dst": "198.18.0.0/24", "dev": "eth0", "protocol": "kernel"}])
AFTER = dict(host__links=[link("lo"), link("eth0", master="mydocker0", kind="veth"),
                          link("mydocker0", ["198.18.0.11/24"], kind="bridge",
                               info={"stp_state": 0, "forward_delay": 0})],
             host__routes=[{"dst": "default", "gateway": "198.18.0.1", "dev": "mydocker0"}])


def test_parse_sections_splits_on_markers():
    out = "junk\n@@xcatfab:a\n1\n2\n@@xcatfab:b.c\n{\"x\": 1}\n@@xcatfab:end\n"
    f = parse_sections(out)
    assert f.text("a") == "1\n2" and f.json("b.c") == {"x": 1} and "end" in f


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
    pending = facts(**AFTER, bridge__rollback="apply=done\npending=bridge-rollback")
    assert [a.kind for a in bridge.BridgeStep().plan(run_for(cfg(), pending))] == ["disarm"]
    settled = facts(**AFTER, bridge__rollback="apply=done\nrollback=disarmed at 2026-11-29T20:00:00Z")
    assert bridge.BridgeStep().plan(run_for(cfg(), settled)) == []
    # A host that still needs the move: the new launch cancels the old rollback itself.
    moving = facts(**BEFORE, bridge__rollback="pending=bridge-rollback")
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


def test_docker_merges_daemon_json_and_never_clobbers():
    c = cfg('docker_daemon_json={"log-driver": "journald", "log-opts": {"max-size": "10m"}}')
    f = facts(docker__bin="/usr/bin/docker\n/usr/sbin/dockerd",
              docker__daemon_json='{"bip": "198.19.0.1/24", "log-opts": {"max-file": "3"}}')
    actions = docker.DockerStep().plan(run_for(c, f))
    assert [a.kind for a in actions] == ["daemon_json", "restart"]
    merged = json.loads(actions[0].data["content"])
    assert merged == {"bip": "198.19.0.1/24", "log-driver": "journald",
                      "log-opts": {"max-file": "3", "max-size": "10m"}}
    f["docker.daemon_json"] = actions[0].data["content"]
    assert docker.DockerStep().plan(run_for(c, f)) == []
    f["docker.daemon_json"] = "{not json"
    with pytest.raises(StepFailed, match="not valid JSON"):
        docker.DockerStep().plan(run_for(c, f))


def test_docker_install_only_when_missing_and_start_when_down():
    f = facts(docker__bin="", docker__daemon_json="")
    assert [a.kind for a in docker.DockerStep().plan(run_for(cfg(), f))] == ["install", "restart"]
    f = facts(docker__bin="/usr/bin/docker\n/usr/sbin/dockerd",
              docker__inspect_err="rc=1\nCannot connect to the Docker daemon at unix:///x.sock. "
                                  "Is the docker daemon running?")
    assert [a.kind for a in docker.DockerStep().plan(run_for(cfg(), f))] == ["restart"]


@pytest.mark.parametrize("wanted, tags, digests, present", [
    ("xcat/xcat2", ["xcat/xcat2:latest"], [], True),
    ("docker.io/xcat/xcat2:latest", ["xcat/xcat2:latest"], [], True),
    ("daniceexi/xcat:centos6_xcat2.9", ["daniceexi/xcat:centos6_xcat2.9"], [], True),
    ("debian", ["debian:latest"], [], True),
    ("docker.io/library/debian:12", ["debian:12"], [], True),
    ("198.18.0.1:5000/xcatfab/xcat", ["198.18.0.1:5000/xcatfab/xcat:latest"], [], True),
    ("198.18.0.1:5000/xcatfab/xcat:t2", ["198.18.0.1:5000/xcatfab/xcat:t1"], [], False),
    ("reg:5000/x@sha256:" + "a" * 64, ["reg:5000/x:t"], ["reg:5000/x@sha256:" + "a" * 64], True),
    ("reg:5000/x@sha256:" + "b" * 64, ["reg:5000/x:t"], ["reg:5000/x@sha256:" + "a" * 64], False),
    ("xcat/xcat2@sha256:" + "a" * 64, [], ["xcat/xcat2@sha256:" + "a" * 64], True),
])
def test_pull_plans_a_pull_only_when_that_tag_or_digest_is_missing(wanted, tags, digests, present):
    image = {"Id": "sha256:" + "c" * 64, "RepoTags": tags, "RepoDigests": digests, "Config": {}}
    f = facts(docker__bin="/usr/bin/docker\n/usr/sbin/dockerd", docker__inspect=[image])
    actions = image_step.ImageStep().plan(run_for(cfg("image_source=pull", f"image={wanted}"), f))
    assert [a.kind for a in actions] == ([] if present else ["pull"])


# --- container: every managed attribute is compared ------------------------
def converged_container(c, image_id="sha256:img"):
    ip = str(c.container_ip.ip)
    return {
        "Name": "/" + c.container_name, "State": {"Running": True, "Status": "running"},
        "Image": image_id,
        "Config": {"Hostname": c.container_hostname,
                   "Env": [f"{k}={v}" for k, v in container.env(c).items()] + ["PATH=/usr/bin"]},
        "HostConfig": {"ExtraHosts": [f"{c.container_fqdn}:{ip}"], "NetworkMode": c.docker_network,
                       "Privileged": c.privileged, "CapAdd": c.cap_add, "CapDrop": c.cap_drop,
                       "DeviceCgroupRules": None if c.privileged else container.DEVICE_RULES,
                       "Binds": container.binds(c), "RestartPolicy": {"Name": c.restart_policy}},
        "NetworkSettings": {"Networks": {c.docker_network: {"IPAMConfig": {"IPv4Address": ip}}}},
    }


@pytest.mark.parametrize("preset", ["el9", "lab"])
def test_container_diff_sees_every_attribute(preset):
    c = cfg(f"preset={preset}")
    image = {"Id": "sha256:img"}
    base = converged_container(c)
    assert container.container_diff(c, base, image) == []
    mutations = {
        "image": lambda d: d.update(Image="sha256:other"),
        "hostname": lambda d: d["Config"].update(Hostname="other"),
        "extra hosts": lambda d: d["HostConfig"].update(ExtraHosts=[]),
        "network": lambda d: d["HostConfig"].update(NetworkMode="bridge"),
        "address": lambda d: d["NetworkSettings"]["Networks"][c.docker_network]["IPAMConfig"].update(
            IPv4Address="198.18.0.99"),
        "privileged": lambda d: d["HostConfig"].update(Privileged=not c.privileged),
        "mounts": lambda d: d["HostConfig"].update(Binds=d["HostConfig"]["Binds"][1:]),
        "env": lambda d: d["Config"].update(Env=["XCATFAB_MGMT_IP=1.2.3.4", "XCATFAB_LOOP_DEVICES=8"]),
        "restart policy": lambda d: d["HostConfig"].update(RestartPolicy={"Name": "no"}),
    }
    if not c.privileged:
        mutations["cap_add"] = lambda d: d["HostConfig"].update(CapAdd=["NET_ADMIN"])
        mutations["cap_drop"] = lambda d: d["HostConfig"].update(CapDrop=[])
        mutations["loop device"] = lambda d: d["HostConfig"].update(DeviceCgroupRules=[])
    for label, mutate in mutations.items():
        drifted = json.loads(json.dumps(base))
        mutate(drifted)
        diffs = container.container_diff(c, drifted, image)
        assert len(diffs) == 1 and diffs[0].startswith(label), (label, diffs)


def test_cap_names_compare_without_prefix():
    c = cfg("preset=lab")
    ctr = converged_container(c)
    ctr["HostConfig"]["CapDrop"] = ["CAP_SYS_RESOURCE"]
    assert container.container_diff(c, ctr, {"Id": "sha256:img"}) == []


def test_network_spec_and_diff():
    c = cfg()
    f = facts(**AFTER)
    spec = container.network_spec(c, f)
    assert spec == {"subnet": "198.18.0.0/24", "gateway": "198.18.0.1", "ip_range": "198.18.0.111/32",
                    "driver": "bridge", "options": {"com.docker.network.bridge.name": "mydocker0",
                                                    "com.docker.network.bridge.inhibit_ipv4": "true"}}
    network = {"Driver": "bridge", "Options": dict(spec["options"]),
               "IPAM": {"Config": [{"Subnet": "198.18.0.0/24", "Gateway": "198.18.0.1",
                                    "IPRange": "198.18.0.111/32"}]}}
    assert container.network_diff(spec, network) == []
    network["Options"].pop("com.docker.network.bridge.inhibit_ipv4")
    assert container.network_diff(spec, network) == ["option com.docker.network.bridge.inhibit_ipv4=None -> true"]
    mac = container.network_spec(cfg("network_mode=macvlan"), f)
    assert mac["driver"] == "macvlan" and mac["options"] == {"parent": "mydocker0"}


def test_run_args_by_mode():
    lab = container.run_args(cfg("preset=lab"))
    assert lab[-1] == "xcatfab/xcat:standin-lab"
    assert "--privileged" not in lab and ["--cap-add", "ALL"] == lab[lab.index("--cap-add"):][:2]
    assert "--ip" in lab and lab[lab.index("--network") + 1] == "xcatnet"
    assert "/i:/iso" in lab  # the host's iso_dir, not an anonymous VOLUME
    netns = container.run_args(cfg("network_mode=netns"))
    assert netns[netns.index("--network") + 1] == "none" and "--ip" not in netns
    assert "--privileged" in netns


def test_veth_and_shim_names_fit_ifnamsiz():
    c = cfg("container_name=a-very-long-container-name")
    host_if, peer = container.veth_names(c)
    assert len(host_if) <= 15 and len(peer) <= 15 and host_if != peer
    assert len(container.shim_name(c)) <= 15


# --- xcat ----------------------------------------------------------------
SITE = '#key,value,comments,disable\n"master","198.18.0.111",,\n"nameservers","198.18.0.111",,\n' \
       '"domain","lab.example",,\n"installdir","/install",,\n'
NETS = '#netname,net,mask,mgtifname,gateway,comments,disable\n' \
       '"198_18_0_0-255_255_255_0","198.18.0.0","255.255.255.0","eth0","198.18.0.1",,\n'
CTR_ADDRS = [link("lo"), link("eth0", ["198.18.0.111/24"])]


def test_xcat_converged_and_drifts():
    c = cfg()
    f = facts(xcat__site=SITE, xcat__networks=NETS, ctr__addrs=CTR_ADDRS)
    assert xcat.XcatConfigStep().plan(run_for(c, f)) == []
    f["xcat.site"] = SITE.replace('"master","198.18.0.111"', '"master","172.17.0.2"')
    (action,) = xcat.XcatConfigStep().plan(run_for(c, f))
    assert action.kind == "site" and action.data["values"] == {"master": "198.18.0.111"}
    f = facts(xcat__site=SITE, ctr__addrs=CTR_ADDRS,
              xcat__networks=NETS + '"172_17_0_0-255_255_0_0","172.17.0.0","255.255.0.0",,,,\n')
    (action,) = xcat.XcatConfigStep().plan(run_for(c, f))
    assert action.kind == "networks" and "drop 172.17.0.0/255.255.0.0" in action.summary


def test_xcat_unreadable_site_fails_or_is_blocked_in_plan():
    f = facts(xcat__site="Error: xcatd not running", ctr__addrs=CTR_ADDRS)
    with pytest.raises(StepFailed, match="cannot read xCAT's site table"):
        xcat.XcatConfigStep().plan(run_for(cfg(), f))
    (action,) = xcat.XcatConfigStep().plan(run_for(cfg(), f, plan_only=True))
    assert action.kind == "blocked"


def test_node_stanza_carries_the_password_only_in_stdin_text():
    from tasks.secret import Secret

    secret = Secret("s3cr3t!")
    stanza = xcat.node_stanza("compute1", {"bmc": "198.18.0.50", "bmcpassword": secret})
    assert stanza == "compute1:\n    objtype=node\n    bmc=198.18.0.50\n    bmcpassword=s3cr3t!\n"
    assert "s3cr3t" not in f"{secret} {secret!r} {[secret]}"


def test_binds_compare_with_the_default_rw_dropped():
    c = cfg()
    ctr = converged_container(c)
    ctr["HostConfig"]["Binds"] = [b if b.endswith(":ro") else b + ":rw" for b in container.binds(c)]
    assert container.container_diff(c, ctr, {"Id": "sha256:img"}) == []
    ctr["HostConfig"]["Binds"][0] = ctr["HostConfig"]["Binds"][0].replace(":rw", ":ro")
    assert container.container_diff(c, ctr, {"Id": "sha256:img"})[0].startswith("mounts")
