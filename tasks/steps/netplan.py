"""The bridge across reboots: xcatfab's netplan file, and the host's own netplan files.

netplan reads every ``*.yaml`` of /lib/netplan, /etc/netplan and /run/netplan
in lexical order of file name and merges them: an interface defined in two
files keeps what the first gave it (addresses, routes). Ubuntu Server keeps
eth0's static address and default route in a file of its own
(``00-installer-config.yaml``, cloud-init's ``50-cloud-init.yaml``); xcatfab's
``90-xcatfab-<bridge>.yaml`` alone cannot take them away, and after a reboot
eth0 and the bridge both held the address, with two default routes
(``netplan generate``: "Conflicting default route declarations"), and the host
could stay unreachable.

So the bridge step moves the interface's definition out of the host's files
into its own: each host file that defines the interface is rewritten without
it (a byte-exact copy kept in ``state_dir/netplan-backup/``; a file that
defined nothing else is removed), cloud-init is told not to write its network
file again, and ``netplan generate`` must accept the result, else everything is
put back. ``teardown --restore-network`` restores the copies. The plan names
every host file it changes and how.

This module parses the ``bridge.netplan_files`` and ``bridge.netplan_backup``
fact sections (templates/host/facts/bridge.sh.j2).
"""

from __future__ import annotations

from typing import Optional

from ..runtime.errors import StepFailed
from ..runtime.facts import Facts

#: Where cloud-init is told to leave the network configuration alone.
CLOUD_INIT_CFG = "/etc/cloud/cloud.cfg.d/99-xcatfab-disable-network-config.cfg"
FILE_MARK = "=== "


def host_files(facts: Facts) -> dict:
    """Every netplan file on the host: path -> text (``bridge.netplan_files``: ``=== path`` then the text)."""
    files, path, lines = {}, None, []
    for line in facts.text("bridge.netplan_files").splitlines():
        if line.startswith(FILE_MARK):
            if path is not None:
                files[path] = "\n".join(lines) + "\n"
            path, lines = line[len(FILE_MARK):].strip(), []
        elif path is not None:
            lines.append(line)
    if path is not None:
        files[path] = "\n".join(lines) + "\n"
    return files


def backups(facts: Facts) -> list:
    """The host files xcatfab has a copy of (their original paths)."""
    return facts.lines("bridge.netplan_backup")


def _load(path: str, text: str) -> dict:
    import yaml  # a runtime dependency; imported only where netplan is used

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise StepFailed(f"{path} is not valid YAML ({str(exc).splitlines()[0]}): fix it by hand") from None
    return data if isinstance(data, dict) else {}


def _ethernets(data: dict) -> dict:
    network = data.get("network") if isinstance(data.get("network"), dict) else {}
    found = network.get("ethernets") if isinstance(network, dict) else None
    return found if isinstance(found, dict) else {}


def defining(cfg, facts: Facts, ours: str) -> dict:
    """The host files (not xcatfab's own) that define ``mgmt_interface``: path -> its settings there."""
    found = {}
    for path, text in host_files(facts).items():
        if path == ours:
            continue
        settings = _ethernets(_load(path, text)).get(cfg.mgmt_interface)
        if settings is not None:
            found[path] = settings if isinstance(settings, dict) else {}
    return found


def uses_dhcp(cfg, facts: Facts, ours: str) -> Optional[str]:
    """The host file that gives ``mgmt_interface`` its address by DHCP, if any."""
    for path, settings in defining(cfg, facts, ours).items():
        if settings.get("dhcp4") in (True, "true", "yes", "on"):
            return path
    return None


def without_interface(path: str, text: str, iface: str) -> Optional[str]:
    """``text`` with ``iface`` taken out of its ethernets; None when the file would define nothing else."""
    import yaml

    data = _load(path, text)
    network = data.get("network", {})
    ethernets = dict(network.get("ethernets") or {})
    ethernets.pop(iface, None)
    rest = {k: v for k, v in network.items() if k not in ("ethernets", "version", "renderer")}
    if not ethernets and not rest:
        return None
    network = dict(network)
    if ethernets:
        network["ethernets"] = ethernets
    else:
        network.pop("ethernets", None)
    header = (f"# Rewritten by xcatfab: {iface}'s settings moved to its bridge file; the original is kept\n"
              f"# in xcatfab's state directory (netplan-backup) and put back by `fab teardown --restore-network`.\n")
    return header + yaml.safe_dump({"network": network}, default_flow_style=False, sort_keys=False)


def takeover(cfg, facts: Facts, ours: str) -> dict:
    """What to do with the host's files: path -> new text, or None to remove it (empty: nothing)."""
    return {path: without_interface(path, host_files(facts)[path], cfg.mgmt_interface)
            for path in defining(cfg, facts, ours)}


def describe(changes: dict, cfg) -> list:
    """One line per host file the takeover changes, for the plan."""
    return [f"{'remove' if text is None else 'rewrite'} {path} ({cfg.mgmt_interface} moves to the bridge's file; "
            "a copy is kept)" for path, text in changes.items()]
