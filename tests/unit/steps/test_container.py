"""Planning the container step: every managed attribute is compared, as community.docker does."""

import json

import pytest

from tasks.steps import container
from tasks.steps.base import sha256_text
from tasks.steps.container import shim
from tests.unit.factshapes import AFTER, facts, link
from tests.unit.factshapes import plan_cfg as cfg


# --- container: every managed attribute is compared ------------------------
def converged_container(c, image_id="sha256:img"):
    ip = str(c.container_ip.ip)
    return {
        "Name": "/" + c.container_name, "State": {"Running": True, "Status": "running"},
        "Image": image_id,
        "Config": {"Hostname": c.container_hostname, "Env": ["PATH=/usr/bin"]},
        "HostConfig": {"NetworkMode": c.docker_network,
                       "Privileged": c.privileged, "CapAdd": c.cap_add, "CapDrop": c.cap_drop,
                       "DeviceCgroupRules": None if c.privileged else container.DEVICE_RULES,
                       "Binds": container.binds(c), "RestartPolicy": {"Name": c.restart_policy}},
        "NetworkSettings": {"Networks": {c.docker_network: {"IPAMConfig": {"IPv4Address": ip},
                                                            "MacAddress": container.mac_address(c)}}},
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
        "network": lambda d: d["HostConfig"].update(NetworkMode="bridge"),
        "address": lambda d: d["NetworkSettings"]["Networks"][c.docker_network]["IPAMConfig"].update(
            IPv4Address="198.18.0.99"),
        "MAC": lambda d: d["NetworkSettings"]["Networks"][c.docker_network].update(MacAddress="02:00:00:00:00:01"),
        "privileged": lambda d: d["HostConfig"].update(Privileged=not c.privileged),
        "mounts": lambda d: d["HostConfig"].update(Binds=d["HostConfig"]["Binds"][1:]),
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


def test_binds_compare_with_the_default_rw_dropped():
    c = cfg()
    ctr = converged_container(c)
    ctr["HostConfig"]["Binds"] = [b if b.endswith(":ro") else b + ":rw" for b in container.binds(c)]
    assert container.container_diff(c, ctr, {"Id": "sha256:img"}) == []
    ctr["HostConfig"]["Binds"][0] = ctr["HostConfig"]["Binds"][0].replace(":rw", ":ro")
    assert container.container_diff(c, ctr, {"Id": "sha256:img"})[0].startswith("mounts")


# --- macvlan: the host's shim, and its unit on a systemd host --------------
def shim_facts(c, **shim_section):
    """lab1 after the bridge step with the macvlan shim up (its /32 and its route), plus ``host.macvlan_shim``."""
    name = container.shim_name(c)
    links = AFTER["host__links"] + [link(name, [f"{c.macvlan_shim_ip}/32"], kind="macvlan", link=c.bridge)]
    routes = AFTER["host__routes"] + [{"dst": str(c.container_ip.ip), "dev": name}]
    section = "\n".join(f"{k}={v}" for k, v in shim_section.items())
    return facts(host__links=links, host__routes=routes, host__macvlan_shim=section)


def kinds(actions):
    return [a.kind for a in actions]


def test_on_a_systemd_host_the_shim_s_boot_unit_is_part_of_converged():
    """The shim is a live link: a reboot takes it away unless a unit makes it again."""
    c = cfg("network_mode=macvlan")
    unit, script = shim.shim_files(c)
    kept = dict(systemd="yes", enabled="yes", unit_sha=sha256_text(unit), script_sha=sha256_text(script))
    assert kinds(container.ContainerStep._mode_pieces(c, shim_facts(c, **kept), False)) == []
    assert kinds(container.ContainerStep._mode_pieces(c, shim_facts(c, systemd="yes"), False)) == ["shim"]
    stale = dict(kept, unit_sha="0" * 64)
    (action,) = container.ContainerStep._mode_pieces(c, shim_facts(c, **stale), False)
    assert action.kind == "shim" and "made again at every boot by xcatfab-macvlan-shim.service" in action.summary
    # No systemd: the live shim is all there is to keep.
    assert kinds(container.ContainerStep._mode_pieces(c, shim_facts(c), False)) == []


def test_the_unit_s_command_is_the_shim_script_with_its_values():
    c = cfg("network_mode=macvlan")
    unit, _script = shim.shim_files(c)
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_start == (f"ExecStart=/bin/sh /st/macvlan-shim.sh {container.shim_name(c)} mydocker0 "
                          f"198.18.0.161 {c.container_ip.ip}")


def test_a_shim_unit_left_by_macvlan_mode_is_removed_in_another_mode():
    c = cfg("network_mode=bridge")
    f = facts(**AFTER, host__macvlan_shim="systemd=yes\nenabled=yes\nunit_sha=ab")  # after a reboot: no link
    actions = container.ContainerStep._leftovers(c, f, None)
    assert kinds(actions) == ["unshim"] and "its unit" in actions[0].summary
