"""Inventory parsing, precedence and validation (pure logic, no hosts)."""

import ipaddress
import shlex
import textwrap

import pytest

from tasks.runtime.errors import BadInput
from tasks.runtime.inventory import Inventory, load_hosts, parse_overrides


def parse(text, path="hosts.ini"):
    return Inventory.parse(textwrap.dedent(text), path)


def write(tmp_path, text, name="hosts.ini"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_groups_vars_children_and_precedence():
    inv = parse(
        """
        [all:vars]
        bridge=br-all
        container_fqdn=xcat.all.example
        restart_policy=always

        [site:vars]
        bridge=br-site
        container_fqdn=xcat.site.example

        [site:children]
        rack1

        [rack1]
        h1 container_ip=203.0.113.21/24 host_ip=203.0.113.11/24

        [rack1:vars]
        bridge=br-rack
        """
    )
    cfg = inv.host("h1")
    # child group (rack1) beats its parent (site), which beats all; host line beats all groups
    assert cfg.bridge == "br-rack"
    assert cfg.container_fqdn == "xcat.site.example"
    assert cfg.restart_policy == "always"
    assert cfg.container_ip == ipaddress.IPv4Interface("203.0.113.21/24")
    assert cfg.mgmt_interface == "eth0"  # built-in default
    assert set(inv.groups_of("h1")) == {"all", "site", "rack1"}
    assert cfg.where("bridge") == "hosts.ini:18"


def test_host_line_beats_group_and_flags_beat_host_line():
    inv = parse(
        """
        [g]
        h1 bridge=br-host
        [g:vars]
        bridge=br-group
        """
    )
    assert inv.host("h1").bridge == "br-host"
    assert inv.host("h1", parse_overrides(["bridge=br-flag"])).bridge == "br-flag"


def test_ansible_aliases_and_types():
    inv = parse(
        """
        [g]
        h1 ansible_host=203.0.113.5 ansible_user=ubuntu ansible_port=2222 privileged=no cap_add=NET_ADMIN,SYS_ADMIN
        """
    )
    cfg = inv.host("h1")
    assert (cfg.address, cfg.user, cfg.port) == ("203.0.113.5", "ubuntu", 2222)
    assert cfg.become is True
    assert cfg.privileged is False
    assert cfg.cap_add == ["NET_ADMIN", "SYS_ADMIN"]


def test_preset_defaults_yield_to_explicit_values():
    inv = parse(
        """
        [g]
        h1 preset=legacy
        h2 preset=legacy base_image=centos:6.10
        h3 preset=lab
        """
    )
    assert inv.host("h1").base_image == "centos:centos6"
    assert inv.host("h1").xcat_core_repo.endswith("/yum/2.9/xcat-core")
    assert inv.host("h2").base_image == "centos:6.10"
    lab = inv.host("h3")
    assert lab.privileged is False and lab.cap_add == ["ALL"] and lab.cap_drop == ["SYS_RESOURCE"]
    # the default preset is a current release, not the guide's CentOS 6
    assert parse("[g]\nh4\n").host("h4").base_image == "rockylinux:9"


def test_host_not_in_inventory_gets_defaults_plus_flags(tmp_path):
    path = write(tmp_path, "[g]\nh1 bridge=br1\n[all:vars]\nbridge=brall\n")
    (cfg,) = load_hosts(path, names=["other"], overrides=["container_name=x1"])
    assert cfg.name == "other" and cfg.connect_address == "other"
    assert cfg.bridge == "mydocker0"  # inventory group vars do not apply to unknown hosts
    assert cfg.container_name == "x1"


def test_isos_entries(tmp_path):
    iso = tmp_path / "a.iso"
    iso.write_bytes(b"x")
    inv = parse(f'[g]\nh1 isos="{iso} sha256={"ab" * 32} distro=rocky9.4 arch=x86_64; {iso}"\n')
    first, second = inv.host("h1").isos
    assert first.path == str(iso) and first.sha256 == "ab" * 32
    assert (first.distro, first.arch) == ("rocky9.4", "x86_64")
    assert second.sha256 is None


def test_limit_selects_groups_hosts_and_globs():
    inv = parse("[a]\nh1\nh2\n[b]\nx1\n")
    assert inv.select("a") == ["h1", "h2"]
    assert inv.select("x*") == ["x1"]
    assert inv.select("b,h2") == ["x1", "h2"]
    with pytest.raises(BadInput, match="matches no host"):
        inv.select("nope")


# Every bad-input case: one error naming file:line and the key.
BAD = [
    ("state_dir is a system directory", "[g]\nh1 state_dir=/var/lib/\n", "hosts.ini:2: state_dir:",
     "'/var/lib/' must be an absolute directory of its own"),
    ("data_dir is relative", "[g]\nh1 data_dir=xcatdata\n", "hosts.ini:2: data_dir:", "must be an absolute"),
    ("iso_dir is the root", "[g:vars]\niso_dir=/\n[g]\nh1\n", "hosts.ini:2: iso_dir:", "not a system directory"),
    ("rollback too short", "[g]\nh1 rollback_seconds=0\n", "hosts.ini:2: rollback_seconds:",
     "0 is not between 10 and 3600"),
    ("malformed section", "[g\nh1\n", "hosts.ini:1:", "malformed section header"),
    ("malformed vars line", "[g:vars]\nnot a pair\n", "hosts.ini:2:", "expected key=value"),
    ("malformed host token", "[g]\nh1 bridge\n", "hosts.ini:2:", "expected key=value"),
    ("unbalanced quote", '[g]\nh1 bridge="x\n', "hosts.ini:2:", "malformed host line"),
    ("bad ip", "[g]\nh1 container_ip=203.0.113.300/24\n", "hosts.ini:2: container_ip:",
     "not an IPv4 address/prefix"),
    ("cidr without prefix", "[g]\nh1 container_ip=203.0.113.20\n", "hosts.ini:2: container_ip:",
     "needs a prefix length"),
    ("bad gateway", "[g]\nh1 gateway=gw.example\n", "hosts.ini:2: gateway:", "not an IPv4 address"),
    ("container outside subnet",
     "[g]\nh1 host_ip=203.0.113.10/24 container_ip=198.51.100.20/24\n",
     "hosts.ini:2: container_ip:", "outside host h1's subnet 203.0.113.0/24"),
    ("container equals host",
     "[g]\nh1 host_ip=203.0.113.10/24 container_ip=203.0.113.10/24\n",
     "hosts.ini:2: container_ip:", "host h1's own address"),
    ("container equals gateway",
     "[g]\nh1 gateway=203.0.113.1 container_ip=203.0.113.1/24\n",
     "hosts.ini:2: container_ip:", "host h1's gateway"),
    ("duplicate container ip",
     "[g]\nh1 container_ip=203.0.113.20/24\nh2 container_ip=203.0.113.20/24\n",
     "hosts.ini:3: container_ip:", "already the container_ip of host h1"),
    ("container ip is another host's address",
     "[g]\nh1 host_ip=203.0.113.10/24\nh2 container_ip=203.0.113.10/24\n",
     "hosts.ini:3: container_ip:", "already the host_ip of host h1"),
    ("duplicate host", "[g]\nh1\nh1\n", "hosts.ini:3:", "duplicate host 'h1'"),
    ("duplicate host, different vars", "[a]\nh1 bridge=x\n[b]\nh1 bridge=y\n", "hosts.ini:4:",
     "different variables"),
    ("unknown key", "[g]\nh1 contaner_ip=203.0.113.20/24\n", "hosts.ini:2: contaner_ip:",
     "unknown key (did you mean 'container_ip'?)"),
    ("unknown group var", "[g:vars]\nbrige=x\n", "hosts.ini:2: brige:", "did you mean 'bridge'?"),
    ("group cycle", "[a:children]\nb\n[b:children]\na\n", "hosts.ini:", "group cycle"),
    ("missing iso", "[g]\nh1 isos=/nonexistent/x.iso\n", "hosts.ini:2: isos:",
     "/nonexistent/x.iso: no such file"),
    ("bad choice", "[g]\nh1 network_mode=vlan\n", "hosts.ini:2: network_mode:",
     "not one of bridge, netns, macvlan"),
    ("bad bool", "[g:vars]\nprivileged=maybe\n", "hosts.ini:2: privileged:", "not true or false"),
    ("bad json", "[g:vars]\ndocker_daemon_json=[1]\n", "hosts.ini:2: docker_daemon_json:",
     "not a JSON object"),
    ("macvlan without a shim address", "[g]\nh1 network_mode=macvlan\n", "hosts.ini:2: macvlan_shim_ip:",
     "network_mode=macvlan needs macvlan_shim_ip"),
    ("shim on the container address",
     "[g]\nh1 container_ip=203.0.113.20/24 macvlan_shim_ip=203.0.113.20\n", "hosts.ini:2: macvlan_shim_ip:",
     "203.0.113.20 is host h1's container_ip"),
    ("shim outside the subnet", "[g]\nh1 host_ip=203.0.113.10/24 macvlan_shim_ip=198.51.100.7\n",
     "hosts.ini:2: macvlan_shim_ip:", "outside host h1's subnet"),
    ("fqdn without domain", "[g]\nh1 container_fqdn=xcatmn\n", "hosts.ini:2: container_fqdn:",
     "needs a domain"),
    ("bad iso sha", "[g]\nh1 isos='/x.iso sha256=abc'\n", "hosts.ini:2: isos:", "64 hex digits"),
]


@pytest.mark.parametrize("name,text,where,message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_names_file_line_and_key(tmp_path, name, text, where, message):
    path = write(tmp_path, text)
    with pytest.raises(BadInput) as err:
        load_hosts(path)
    line = str(err.value)
    assert line.startswith(str(tmp_path / where)), line
    assert message in line
    assert "\n" not in line


def test_bad_flag_is_named():
    with pytest.raises(BadInput, match=r"^--set: bridg: unknown key \(did you mean 'bridge'\?\)"):
        parse_overrides(["bridg=x"])
    with pytest.raises(BadInput, match=r"^--set: expected KEY=VALUE"):
        parse_overrides(["bridge"])


def test_missing_inventory_file(tmp_path):
    with pytest.raises(BadInput, match="cannot read inventory"):
        load_hosts(str(tmp_path / "none.ini"))


def test_example_inventory_is_valid_and_documents_every_key():
    from tasks.runtime.config import ALIASES, KEYS

    hosts = load_hosts("hosts.ini")
    assert [h.name for h in hosts] == ["dhost1", "dhost2"]
    text = open("hosts.ini").read()
    for key in list(KEYS) + list(ALIASES):
        assert key in text, f"hosts.ini does not document {key}"


@pytest.mark.parametrize("key, value, message", [
    # A Dockerfile's FROM and LABEL cannot quote a value: an image is a Docker reference or nothing.
    ("base_image", "rockylinux:9\nRUN curl evil | sh", "control character"),
    ("base_image", 'rockylinux:9 AS x" \\', "is not a Docker image reference"),
    ("base_image", "Rocky:9", "is not a Docker image reference"),
    ("image", "xcatfab/xcat:latest;reboot", "is not a Docker image reference"),
    ("image", "-oProxyCommand=x", "is not a Docker image reference"),
    ("xcat_version", "2.17 core packages ;x", "is not an xCAT release"),
    ("xcat_version", "../2.17", "is not an xCAT release"),
    ("address", "host name", "is not a host name or IP address"),
    ("address", "-oProxyCommand=x", "is not a host name or IP address"),
    # apt reads a '#' anywhere on a source line as a comment: the suite and components would be cut off.
    ("xcat_core_repo", "http://mirror.example/xcat#frag", "no blanks, quotes or '#'"),
])
def test_values_that_cannot_be_quoted_where_they_land_are_refused_in_one_line(tmp_path, key, value, message):
    with pytest.raises(BadInput) as err:
        load_hosts(None, names=["h1"], overrides=[f"{key}={value}"])
    line = str(err.value)
    assert line.startswith(f"--set: {key}: ") and message in line and "\n" not in line, line
    if "\n" not in value:  # the same from an inventory line, named by file:line
        path = write(tmp_path, f"[g]\nh1 {key}={shlex.quote(value)}\n")
        with pytest.raises(BadInput) as err:
            load_hosts(path)
        assert str(err.value).startswith(f"{path}:2: {key}: ") and message in str(err.value)


@pytest.mark.parametrize("key, value", [
    ("base_image", "rockylinux:9"), ("base_image", "198.18.0.2:5000/xcatfab/bookworm-minbase:bookworm"),
    ("base_image", "registry.example.com/a__b/c--d.e:v1.2-3_x@sha256:" + "0" * 64),
    ("image", "xcatfab/xcat:latest-el9"), ("image", "localhost:5000/site/xcat:flat"),
    ("xcat_version", "2.16.5"), ("xcat_version", "latest"), ("address", "198.18.0.11"),
    ("address", "fe80::1%eth0"), ("address", "dhost1.site.example"), ("address", "my_alias"),
    ("xcat_core_repo", "https://mirror.example/xcat;v=1&x=(2)"),
])
def test_the_values_sites_use_still_pass(key, value):
    (cfg,) = load_hosts(None, names=["h1"], overrides=[f"{key}={value}"])
    assert getattr(cfg, key) == value
