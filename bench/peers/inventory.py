"""The peers' inventories, generated from xcatfab's own inventory.

pyinfra and Ansible must converge the SAME target state as ``fab deploy``, so
nothing here is typed twice: :func:`host_spec` takes a resolved
:class:`tasks.inventory.HostConfig` and asks xcatfab's own step modules for
the container's binds (/etc/hosts and resolv.conf bind-mounted from
data_dir/xcatfab/), its stable MAC, capabilities and device rules (no extra
environment, no extra host), the Docker network's subnet/gateway/ip-range/
options, the content of those two /etc files, the data directories, the xCAT
site values and the networks-table entry xcatfab creates (``usercomment=xcatfab``).
The peers receive that as plain host data:

* :func:`ansible_inventory` -> a YAML (JSON) inventory, group ``xcat_hosts``,
  reaching each host through the lab's OpenSSH ``ssh_config``;
* :func:`pyinfra_inventory` -> a pyinfra inventory module, group
  ``xcat_hosts``, with paramiko given the lab key and known_hosts.

Pure functions (besides reading xcatfab's templates): tests/unit/test_bench.py.
"""

from __future__ import annotations

import json
from typing import Optional


def host_spec(cfg, iso: Optional[dict] = None) -> dict:
    """Everything a peer needs to converge ``cfg``'s host like ``fab deploy`` does.

    ``iso``: ``{"src", "name", "sha1", "sha256", "size"}`` of the ISO to stage
    (see bench/converge.py), or None.
    """
    from tasks.runtime.facts import Facts
    from tasks.steps.container import (
        DEVICE_RULES,
        binds,
        container_ip,
        host_dirs,
        hosts_text,
        mac_address,
        network_spec,
        resolv_text,
    )
    from tasks.steps.container.spec import docker_network_mode
    from tasks.steps.xcat import OWNED_MARK, wanted_networks, wanted_site

    if cfg.network_mode != "bridge":
        raise ValueError(f"{cfg.name}: the benchmark covers network_mode=bridge only")
    facts = Facts()  # the lab inventory sets the gateway, so no host facts are needed
    ip = container_ip(cfg)
    net = network_spec(cfg, facts)
    data = cfg.data_dir.rstrip("/")
    spec = {
        "xf_bridge": {
            "name": cfg.bridge,
            "iface": cfg.mgmt_interface,
            "address": str(cfg.host_ip),
            "gateway": str(cfg.gateway) if cfg.gateway else "",
        },
        "xf_network": {
            "name": cfg.docker_network,
            "driver": net["driver"],
            "subnet": net["subnet"],
            "gateway": net["gateway"],
            "ip_range": net["ip_range"],
            "options": dict(net["options"]),
        },
        "xf_container": {
            "name": cfg.container_name,
            "image": cfg.image,
            "hostname": cfg.container_hostname,
            "fqdn": cfg.container_fqdn,
            "ip": ip,
            "network": docker_network_mode(cfg),
            "restart_policy": cfg.restart_policy,
            "mac_address": mac_address(cfg),
            "binds": binds(cfg),
            "privileged": bool(cfg.privileged),
            "cap_add": list(cfg.cap_add),
            # Docker stores dropped capabilities with the CAP_ prefix; community.docker
            # compares the strings, so the peers ask for the stored form.
            "cap_drop": [c if c.upper().startswith("CAP_") else "CAP_" + c.upper() for c in cfg.cap_drop],
            "device_cgroup_rules": [] if cfg.privileged else list(DEVICE_RULES),
        },
        "xf_dirs": host_dirs(cfg),
        "xf_files": [
            {"dest": f"{data}/xcatfab/hosts", "content": hosts_text(cfg, "")},
            {"dest": f"{data}/xcatfab/resolv.conf", "content": resolv_text(cfg, facts)},
        ],
        "xf_site": dict(wanted_site(cfg)),
        # The container is not running when this is computed: its static address's subnet, on eth0.
        "xf_networks": [dict(entry, usercomment=OWNED_MARK) for entry in wanted_networks(cfg, facts)],
    }
    if iso:
        spec["xf_iso"] = {
            "src": iso["src"],
            "dest": f"{cfg.iso_dir.rstrip('/')}/{iso['name']}",
            "sha1": iso["sha1"],
            "sha256": iso["sha256"],
            "size": iso["size"],
        }
    return spec


def ansible_inventory(specs: dict, ssh_config: str, volume_comparison: str = "strict") -> str:
    """A YAML inventory (written as JSON, which YAML reads) for ``specs`` (name -> spec).

    Hosts are reached by name through the lab's ssh_config (``-F``), so Ansible's
    OpenSSH uses exactly the floor's client settings; its own ``ssh_args``
    (ControlMaster/ControlPersist) stay Ansible's defaults. ``volume_comparison``
    is docker_container's comparison of the binds (``strict`` or ``ignore``).
    """
    hosts = {}
    for name, spec in specs.items():
        hosts[name] = dict(spec, ansible_user="root")
    inventory = {
        "all": {
            "children": {
                "xcat_hosts": {
                    "hosts": hosts,
                    "vars": {
                        "ansible_ssh_common_args": f"-F {ssh_config}",
                        # Root's PATH on the lab hosts starts with pyenv shims: interpreter
                        # discovery would pick a Python without the Docker SDK and python3-apt.
                        "ansible_python_interpreter": "/usr/bin/python3",
                        "xf_volume_comparison": volume_comparison,
                    },
                }
            }
        }
    }
    return json.dumps(inventory, indent=1, sort_keys=True) + "\n"


def pyinfra_inventory(specs: dict, connect: dict) -> str:
    """A pyinfra inventory module: ``xcat_hosts = [(name, data), ...]``.

    ``connect`` maps each name to ``{"address", "key", "known_hosts"}``.
    """
    entries = []
    for name, spec in specs.items():
        how = connect[name]
        data = dict(spec,
                    ssh_hostname=how["address"],
                    ssh_user="root",
                    ssh_key=how["key"],
                    ssh_known_hosts_file=how["known_hosts"],
                    ssh_strict_host_key_checking="yes")
        entries.append(f"    ({name!r}, {_py(data)}),")
    return ("# Generated by bench/converge.py from xcatfab's inventory: do not edit.\n"
            "xcat_hosts = [\n" + "\n".join(entries) + "\n]\n")


def _py(value) -> str:
    """A Python literal for JSON-like data (sorted keys, stable output)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_py(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_py(v) for v in value) + "]"
    return repr(value)


def synthetic_inspect(ctr: dict, binds: Optional[list] = None) -> dict:
    """A ``docker inspect`` of a container made exactly from ``ctr`` (an ``xf_container`` spec)."""
    return {
        "Image": "sha256:bench",
        "Config": {"Hostname": ctr["hostname"], "Env": []},  # the image's own environment, nothing added
        "HostConfig": {"NetworkMode": ctr["network"],
                       "Privileged": ctr["privileged"], "CapAdd": ctr["cap_add"], "CapDrop": ctr["cap_drop"],
                       "DeviceCgroupRules": ctr["device_cgroup_rules"],
                       "Binds": list(ctr["binds"] if binds is None else binds),
                       "RestartPolicy": {"Name": ctr["restart_policy"]}},
        "NetworkSettings": {"Networks": {ctr["network"]: {"IPAMConfig": {"IPv4Address": ctr["ip"]},
                                                          "MacAddress": ctr["mac_address"]}}},
    }


def rw_binds_are_drift(cfg) -> bool:
    """True when xcatfab takes ``SRC:DST:rw`` for drift from its own ``SRC:DST`` bind.

    community.docker's docker_container always spells a bind without a mode as
    ``SRC:DST:rw`` and compares that string with Docker's ``HostConfig.Binds``:
    it recreates a container made with ``-v SRC:DST`` once, and the container it
    makes carries ``:rw``. If xcatfab compares the strings verbatim too, the two
    tools would recreate each other's container on every alternation.
    """
    from tasks.steps.container import container_diff

    ctr = host_spec(cfg)["xf_container"]
    rw = [b if b.count(":") >= 2 else b + ":rw" for b in ctr["binds"]]
    return bool(container_diff(cfg, synthetic_inspect(ctr, rw), {"Id": "sha256:bench"}))
