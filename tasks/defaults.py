"""Built-in defaults, the inventory keys they belong to, and the image presets.

Every key a user may put in ``hosts.ini`` (or pass with ``--set``) is declared
once here, in :data:`KEYS`, with its type, default and a one-line description.
The inventory parser, the validator, ``hosts.ini``'s documentation and the
README all follow this table.

A *preset* is a named bundle of defaults for the image: the base image, the
package family (``el`` uses yum repo files, ``apt`` uses an apt source), the
xCAT repository URLs and, for the lab, the container's capability set. Preset
values sit between the built-in defaults and anything the inventory sets
explicitly, so ``preset=legacy`` plus ``base_image=...`` uses that base image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class Key:
    """One inventory key: its value type, built-in default and meaning."""

    name: str
    kind: str  # str | int | bool | ip | cidr | path | list | json | isos | choice
    default: Any
    help: str
    choices: tuple = ()
    secret: bool = False


def _k(name, kind, default, help, choices=(), secret=False) -> Key:
    return Key(name, kind, default, help, tuple(choices), secret)


#: Every key understood in hosts.ini, in the order hosts.ini documents them.
KEYS: dict[str, Key] = {
    k.name: k
    for k in [
        # How to reach the docker host.
        _k("address", "str", None, "address or name xcatfab connects to (default: the host name)"),
        _k("user", "str", "root", "SSH user; anything but root works through sudo"),
        _k("port", "int", 22, "SSH port"),
        _k("ssh_key", "path", None, "private key file"),
        _k("known_hosts", "path", None, "extra known_hosts file to trust"),
        _k("connect_timeout", "int", 10, "seconds to wait for the TCP/SSH handshake"),
        # The docker host's network.
        _k("mgmt_interface", "str", "eth0", "interface whose address moves onto the bridge"),
        _k("host_ip", "cidr", None, "the host's address/prefix, checked against the host"),
        _k("gateway", "ip", None, "default gateway, kept on the bridge"),
        _k("bridge", "str", "mydocker0", "bridge that takes over the interface's address"),
        _k("rollback_seconds", "int", 120, "seconds before the host undoes an unconfirmed bridge change"),
        _k("netplan", "choice", "auto", "persist the bridge in /etc/netplan", ("auto", "yes", "no")),
        _k("docker_daemon_json", "json", {}, "keys merged into /etc/docker/daemon.json"),
        _k("docker_restart", "str", "systemctl restart docker", "command that restarts dockerd"),
        _k("state_dir", "path", "/var/lib/xcatfab", "host directory for xcatfab's own state and scripts"),
        # The xCAT container.
        _k("container_name", "str", "xcatmn", "name of the xCAT container"),
        _k("container_ip", "cidr", None, "static address/prefix of the container on the bridge"),
        _k("container_fqdn", "str", "xcatmn.cluster", "container hostname with its domain"),
        _k("container_dns", "ip", None, "nameserver for the container's resolv.conf (default: gateway)"),
        _k("network_mode", "choice", "bridge", "how the container gets its static address",
           ("bridge", "netns", "macvlan")),
        _k("docker_network", "str", "xcatnet", "Docker network for bridge and macvlan modes"),
        _k("macvlan_shim_ip", "ip", None, "a free address for the host's macvlan shim (macvlan mode)"),
        _k("restart_policy", "choice", "unless-stopped", "docker restart policy",
           ("no", "always", "unless-stopped", "on-failure")),
        _k("privileged", "bool", True, "run the container --privileged"),
        _k("cap_add", "list", [], "capabilities added when privileged=false"),
        _k("cap_drop", "list", [], "capabilities dropped when privileged=false"),
        _k("loop_devices", "int", 8, "/dev/loopN nodes the entrypoint creates for copycds"),
        _k("iso_dir", "path", "/iso", "host directory bind-mounted at /iso"),
        _k("data_dir", "path", "/xcatdata", "host directory for /install, /etc/xcat, /.dbbackup"),
        # The image.
        _k("preset", "choice", "el9", "image preset", ("el9", "el8", "ubuntu", "legacy", "lab")),
        _k("image", "str", None, "tag of the image to run (default from the preset)"),
        _k("image_source", "choice", "build", "where the image comes from",
           ("build", "ship", "pull", "load")),
        _k("image_tarball", "path", None, "docker save tarball for image_source=load"),
        _k("base_image", "str", None, "FROM image (default from the preset)"),
        _k("xcat_version", "str", None, "xCAT release in the repo URLs (default from the preset)"),
        _k("xcat_core_repo", "str", None, "xCAT core repository URL"),
        _k("xcat_dep_repo", "str", None, "xCAT dependencies repository URL"),
        _k("xcat_core_gpgkey", "str", None, "signing key URL of the core repository"),
        _k("xcat_dep_gpgkey", "str", None, "signing key URL of the dep repository"),
        _k("apt_suite", "str", None, "suite of the xCAT apt repositories (apt presets)"),
        _k("gpgcheck", "bool", True, "verify package signatures"),
        # OS media.
        _k("isos", "isos", [], "ISOs to stage into iso_dir and copycds"),
    ]
}

#: Ansible's connection variables, accepted as aliases of ours.
ALIASES = {
    "ansible_host": "address",
    "ansible_user": "user",
    "ansible_port": "port",
    "ansible_ssh_private_key_file": "ssh_key",
}

_XCAT = "https://xcat.org/files/xcat/repos"

#: Image presets. ``family`` picks the package tooling the templates use.
PRESETS: dict[str, dict[str, Any]] = {
    # A current release on an EL9-family base: the default.
    "el9": {
        "family": "el",
        "pkg": "dnf",
        "base_image": "rockylinux:9",
        "xcat_version": "latest",
        "xcat_core_repo": _XCAT + "/yum/{xcat_version}/xcat-core",
        "xcat_dep_repo": _XCAT + "/yum/xcat-dep/rh9/x86_64",
        "xcat_core_gpgkey": _XCAT + "/yum/{xcat_version}/xcat-core/repodata/repomd.xml.key",
        "xcat_dep_gpgkey": _XCAT + "/yum/xcat-dep/rh9/x86_64/repodata/repomd.xml.key",
        "apt_suite": "",
        "vault_url": "",
        "packages": ["xCAT", "openssh-server", "rsyslog", "iproute", "procps-ng", "httpd"],
        "image": "xcatfab/xcat:{xcat_version}-el9",
    },
    "el8": {
        "family": "el",
        "pkg": "dnf",
        "base_image": "rockylinux:8",
        "xcat_version": "latest",
        "xcat_core_repo": _XCAT + "/yum/{xcat_version}/xcat-core",
        "xcat_dep_repo": _XCAT + "/yum/xcat-dep/rh8/x86_64",
        "xcat_core_gpgkey": _XCAT + "/yum/{xcat_version}/xcat-core/repodata/repomd.xml.key",
        "xcat_dep_gpgkey": _XCAT + "/yum/xcat-dep/rh8/x86_64/repodata/repomd.xml.key",
        "apt_suite": "",
        "vault_url": "",
        "packages": ["xCAT", "openssh-server", "rsyslog", "iproute", "procps-ng", "httpd"],
        "image": "xcatfab/xcat:{xcat_version}-el8",
    },
    # xCAT's apt tree on Ubuntu (the package is lowercase `xcat` since 16.04).
    "ubuntu": {
        "family": "apt",
        "pkg": "apt-get",
        "base_image": "ubuntu:20.04",
        "xcat_version": "latest",
        "xcat_core_repo": _XCAT + "/apt/{xcat_version}/xcat-core",
        "xcat_dep_repo": _XCAT + "/apt/xcat-dep",
        "xcat_core_gpgkey": _XCAT + "/apt/apt.key",
        "xcat_dep_gpgkey": _XCAT + "/apt/apt.key",
        "apt_suite": "trusty",
        "vault_url": "",
        "packages": ["xcat", "openssh-server", "rsyslog", "iproute2", "procps", "apache2"],
        "image": "xcatfab/xcat:{xcat_version}-ubuntu",
    },
    # The 2015 guide as written: CentOS 6 (now only on vault.centos.org) and xCAT 2.9.
    "legacy": {
        "family": "el",
        "pkg": "yum",
        "base_image": "centos:centos6",
        "xcat_version": "2.9",
        "xcat_core_repo": "https://sourceforge.net/projects/xcat/files/yum/{xcat_version}/xcat-core",
        "xcat_dep_repo": "https://sourceforge.net/projects/xcat/files/yum/xcat-dep/rh6/x86_64",
        "xcat_core_gpgkey": "https://sourceforge.net/projects/xcat/files/yum/{xcat_version}"
        "/xcat-core/repodata/repomd.xml.key",
        "xcat_dep_gpgkey": "https://sourceforge.net/projects/xcat/files/yum/xcat-dep/rh6/x86_64"
        "/repodata/repomd.xml.key",
        "apt_suite": "",
        "vault_url": "https://vault.centos.org/6.10",
        "packages": ["xCAT", "openssh-server", "rsyslog", "iproute", "procps", "httpd"],
        "image": "xcat:xcat{xcat_version}",
    },
    # The lab: Debian bookworm base imported from debootstrap, the stand-in xCAT
    # from the controller's repo, and this kernel's limits (no --privileged).
    "lab": {
        "family": "apt",
        "pkg": "apt-get",
        "base_image": "xcatfab/bookworm-minbase:bookworm",
        "xcat_version": "standin",
        "xcat_core_repo": "http://198.18.0.1:8089/xcat-core",
        "xcat_dep_repo": "http://198.18.0.1:8089/xcat-dep",
        "xcat_core_gpgkey": "http://198.18.0.1:8089/xcat-lab.asc",
        "xcat_dep_gpgkey": "http://198.18.0.1:8089/xcat-lab.asc",
        "apt_suite": "bookworm",
        "vault_url": "",
        "packages": ["xcat", "openssh-server", "rsyslog", "iproute2", "procps"],
        "image": "xcatfab/xcat:standin-lab",
        "privileged": False,
        "cap_add": ["ALL"],
        "cap_drop": ["SYS_RESOURCE"],
    },
}

#: Preset fields that are also inventory keys (the rest only feed templates).
PRESET_KEYS = [k for k in KEYS if any(k in p for p in PRESETS.values())]


def preset_value(preset: str, key: str, version: Optional[str] = None) -> Any:
    """A preset's value for ``key``, with ``{xcat_version}`` filled in."""
    value = PRESETS[preset].get(key)
    if isinstance(value, str) and "{xcat_version}" in value:
        value = value.format(xcat_version=version or PRESETS[preset]["xcat_version"])
    return value

