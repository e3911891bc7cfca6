"""A docker host's settings, as declared, typed attributes.

Every key a user may put in ``hosts.ini`` (or pass with ``--set``) is one
field of :class:`Settings`, with its Python type, its built-in default, the
kind of value the inventory parser converts it from, and one line of help.
The parser, the validator, ``hosts.ini``'s documentation, the README and a
type checker all follow this one declaration; :data:`KEYS` is its table form.

:class:`HostConfig` is one host's resolved settings: the fields of
:class:`Settings` plus the host's name, where each explicit value came from
(``file:line``, ``--set``, ``-H``), its groups, and the values derived from
the others.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from .presets import PRESETS

#: Value kinds the inventory parser knows (see tasks/runtime/values.py).
KINDS = ("str", "name", "url", "command", "int", "port", "seconds", "bool", "ip", "cidr", "path",
         "list", "json", "isos", "choice")


def key(kind: str, default: Any, help: str, choices: tuple = (), factory=None, empty: bool = False,
        bounds: Optional[tuple] = None) -> Any:
    """Declare one inventory key (a dataclass field with its metadata).

    ``kind`` is how the text is converted and checked; ``empty`` allows an
    empty value (meaning "none"); ``bounds`` are (low, high) for numbers.
    """
    meta = {"kind": kind, "help": help, "choices": tuple(choices), "empty": empty, "bounds": bounds}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class IsoSpec:
    """One ISO to stage: its local path and what copycds should be told."""

    path: str
    sha256: Optional[str] = None
    distro: Optional[str] = None
    arch: Optional[str] = None

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


@dataclass
class Settings:
    """Every inventory key, in the order hosts.ini documents them."""

    # How to reach the docker host.
    address: Optional[str] = key("str", None, "address or name xcatfab connects to (default: the host name)",
                                 empty=True)
    user: str = key("name", "root", "SSH user; anything but root works through sudo")
    port: int = key("port", 22, "SSH port")
    ssh_key: Optional[str] = key("path", None, "private key file", empty=True)
    known_hosts: Optional[str] = key("path", None, "extra known_hosts file to trust", empty=True)
    connect_timeout: int = key("seconds", 10, "seconds to wait for the TCP/SSH handshake", bounds=(1, 600))
    command_timeout: int = key("seconds", 1800, "seconds any one remote command may run before its step "
                                                "fails (image builds and ISO copies included)",
                               bounds=(10, 86400))
    # The docker host's network.
    mgmt_interface: str = key("name", "eth0", "interface whose address moves onto the bridge")
    host_ip: Optional[ipaddress.IPv4Interface] = key("cidr", None, "the host's address/prefix, checked "
                                                                    "against the host", empty=True)
    gateway: Optional[ipaddress.IPv4Address] = key("ip", None, "default gateway, kept on the bridge", empty=True)
    bridge: str = key("name", "mydocker0", "bridge that takes over the interface's address")
    rollback_seconds: int = key("seconds", 120, "seconds before the host undoes an unconfirmed bridge change",
                                bounds=(10, 3600))
    netplan: str = key("choice", "auto", "persist the bridge in /etc/netplan", ("auto", "yes", "no"))
    docker_daemon_json: dict = key("json", None, "keys merged into /etc/docker/daemon.json", factory=dict)
    docker_restart: str = key("command", "systemctl restart docker", "command that restarts dockerd")
    state_dir: str = key("path", "/var/lib/xcatfab", "host directory for xcatfab's own state and scripts")
    # The xCAT container.
    container_name: str = key("name", "xcatmn", "name of the xCAT container")
    container_ip: Optional[ipaddress.IPv4Interface] = key("cidr", None, "static address/prefix of the "
                                                                         "container on the bridge", empty=True)
    container_fqdn: str = key("str", "xcatmn.cluster", "container hostname with its domain")
    container_dns: Optional[ipaddress.IPv4Address] = key("ip", None, "nameserver for the container's "
                                                                     "resolv.conf (default: gateway)", empty=True)
    network_mode: str = key("choice", "bridge", "how the container gets its static address",
                            ("bridge", "netns", "macvlan"))
    docker_network: str = key("name", "xcatnet", "Docker network for bridge and macvlan modes")
    macvlan_shim_ip: Optional[ipaddress.IPv4Address] = key("ip", None, "a free address for the host's "
                                                                       "macvlan shim (macvlan mode)", empty=True)
    restart_policy: str = key("choice", "unless-stopped", "docker restart policy",
                              ("no", "always", "unless-stopped", "on-failure"))
    privileged: bool = key("bool", True, "run the container --privileged")
    cap_add: list = key("list", None, "capabilities added when privileged=false", factory=list)
    cap_drop: list = key("list", None, "capabilities dropped when privileged=false", factory=list)
    loop_devices: int = key("int", 8, "/dev/loopN nodes made in the container for copycds", bounds=(0, 255))
    ready_timeout: int = key("seconds", 180, "seconds a new container may take until xcatd answers",
                             bounds=(10, 3600))
    iso_dir: str = key("path", "/iso", "host directory bind-mounted at /iso")
    data_dir: str = key("path", "/xcatdata", "host directory for /install, /etc/xcat, /.dbbackup")
    # The image.
    preset: str = key("choice", "el9", "image preset", tuple(PRESETS))
    image: Optional[str] = key("str", None, "tag of the image to run (default from the preset)", empty=True)
    image_source: str = key("choice", "build", "where the image comes from", ("build", "ship", "pull", "load"))
    image_tarball: Optional[str] = key("path", None, "docker save tarball for image_source=load", empty=True)
    base_image: Optional[str] = key("str", None, "FROM image (default from the preset)", empty=True)
    xcat_version: Optional[str] = key("str", None, "xCAT release in the repo URLs (default from the preset)",
                                      empty=True)
    xcat_core_repo: Optional[str] = key("url", None, "xCAT core repository URL", empty=True)
    xcat_dep_repo: Optional[str] = key("url", None, "xCAT dependencies repository URL", empty=True)
    xcat_core_gpgkey: Optional[str] = key("url", None, "signing key URL of the core repository", empty=True)
    xcat_dep_gpgkey: Optional[str] = key("url", None, "signing key URL of the dep repository", empty=True)
    xcat_core_mirrorlist: Optional[str] = key("url", None, "yum/dnf mirrorlist URL for xCAT core (instead of "
                                                           "xcat_core_repo's baseurl)", empty=True)
    xcat_dep_mirrorlist: Optional[str] = key("url", None, "yum/dnf mirrorlist URL for xCAT dep", empty=True)
    apt_suite: Optional[str] = key("name", None, "suite of the xCAT apt repositories (apt presets; ./ for a "
                                                 "flat repository)", empty=True)
    apt_components: list = key("list", None, "components of the xCAT apt repositories (none for a flat one)",
                               factory=list)
    xcat_packages: list = key("list", None, "the xCAT package names to install (default from the preset)",
                              factory=list)
    gpgcheck: bool = key("bool", True, "verify package signatures (false: apt trusted=yes, yum gpgcheck=0)")
    # OS media.
    isos: list = key("isos", None, "ISOs to stage into iso_dir and copycds", factory=list)
    iso_transport: str = key("choice", "tcp", "how ISO bytes travel: tcp (plain TCP with a one-shot token, "
                                              "sha256 verified over SSH, relayed host to host) or ssh "
                                              "(encrypted, controller to each host)", ("tcp", "ssh"))


@dataclass(frozen=True)
class Key:
    """One inventory key in table form: name, kind, default, help and constraints."""

    name: str
    kind: str
    default: Any
    help: str
    choices: tuple = ()
    empty: bool = False
    bounds: Optional[tuple] = None


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


#: Every key understood in hosts.ini, in the order hosts.ini documents them.
KEYS: dict[str, Key] = {
    f.name: Key(f.name, f.metadata["kind"], _default(f), f.metadata["help"], f.metadata["choices"],
                f.metadata["empty"], f.metadata["bounds"])
    for f in dataclasses.fields(Settings)
}

#: Ansible's connection variables, accepted as aliases of ours.
ALIASES = {
    "ansible_host": "address",
    "ansible_user": "user",
    "ansible_port": "port",
    "ansible_ssh_private_key_file": "ssh_key",
}


@dataclass
class HostConfig(Settings):
    """The resolved settings of one docker host.

    Every key is an attribute (``cfg.container_ip``), converted to its type;
    ``origin`` says where each explicitly set value came from, so later
    errors can point at the line to fix.
    """

    name: str = ""
    origin: dict = field(default_factory=dict)
    groups: tuple = ()

    def where(self, key: str) -> str:
        """Where ``key`` was set (``file:line``, ``--set``) or ``default``."""
        return self.origin.get(key, "default")

    def settings(self) -> dict:
        """Every key's value, by name."""
        return {name: getattr(self, name) for name in KEYS}

    # Derived values used across steps.
    @property
    def connect_address(self) -> str:
        return self.address or self.name

    @property
    def become(self) -> bool:
        """True when privileged commands must go through sudo."""
        return self.user != "root"

    @property
    def container_hostname(self) -> str:
        return self.container_fqdn.split(".", 1)[0]

    @property
    def container_domain(self) -> str:
        return self.container_fqdn.partition(".")[2]

    @property
    def preset_data(self) -> dict:
        return PRESETS[self.preset]

    @property
    def family(self) -> str:
        return self.preset_data["family"]

    def as_template_vars(self) -> dict:
        """Every value plus the derived ones, for Jinja2 templates."""
        data = dict(self.preset_data)
        data.update(self.settings())
        data.update(
            host_name=self.name,
            container_hostname=self.container_hostname,
            container_domain=self.container_domain,
            family=self.family,
        )
        return data
