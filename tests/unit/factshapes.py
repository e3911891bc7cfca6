"""Facts in the shapes the fact scripts print, for the pure planning tests.

``ip -j`` link records and :class:`tasks.step.Facts` sections built from
plain Python values, so a test reads as the host state it stands for.
"""

from __future__ import annotations

import json

from tasks.runtime.facts import Facts
from tasks.runtime.inventory import load_hosts

#: The MAC every made-up link has unless told otherwise (a locally administered one).
MAC = "02:58:46:00:00:0b"


def link(name, addrs=(), mac=MAC, master=None, kind=None, info=None, up=True, **extra):
    """One ``ip -j -d addr`` record: ``addrs`` as CIDR strings, ``kind``/``info`` its linkinfo."""
    data = {"ifname": name, "address": mac, "flags": ["UP"] if up else [],
            "addr_info": [{"family": "inet", "local": a.split("/")[0], "prefixlen": int(a.split("/")[1]),
                           "scope": "global"} for a in addrs]}
    if master:
        data["master"] = master
    if kind:
        data["linkinfo"] = {"info_kind": kind, "info_data": info or {}}
    data.update(extra)
    return data


def facts(**sections):
    """Facts with one section per keyword (``a__b`` names section ``a.b``); non-strings as JSON."""
    f = Facts()
    for key, value in sections.items():
        f[key.replace("__", ".")] = value if isinstance(value, str) else json.dumps(value)
    return f



def host_cfg(*sets):
    """lab10's settings (bridge mode, the lab's paths) plus ``sets``."""
    base = ["host_ip=198.18.0.20/24", "gateway=198.18.0.1", "container_ip=198.18.0.120/24",
            "state_dir=/var/lib/xcatfab", "data_dir=/xcatdata", "iso_dir=/iso", "image=xcatfab/xcat:t"]
    return load_hosts(None, names=["lab10"], overrides=base + list(sets))[0]


BRIDGED = dict(
    host__links=[link("lo"), link("eth0", master="mydocker0"),
                 link("mydocker0", ["198.18.0.20/24"], kind="bridge", info={"stp_state": 0, "forward_delay": 0})],
    host__routes=[{"dst": "default", "gateway": "198.18.0.1", "dev": "mydocker0"}],
)
BARE = dict(
    host__links=[link("lo"), link("eth0", ["198.18.0.20/24"])],
    host__routes=[{"dst": "default", "gateway": "198.18.0.1", "dev": "eth0"}],
)


def tool(name):
    """A test tool installed in the venv (shellcheck, hadolint), or None."""
    import os
    import sys

    path = os.path.join(os.path.dirname(sys.executable), name)
    return path if os.path.exists(path) else None


def plan_cfg(*sets):
    """lab1's settings for the planning tests (every mode's addresses set) plus ``sets``."""
    base = ["host_ip=198.18.0.11/24", "gateway=198.18.0.1", "container_ip=198.18.0.111/24",
            "container_fqdn=xcatmn.lab.example", "state_dir=/st", "data_dir=/d", "iso_dir=/i",
            "macvlan_shim_ip=198.18.0.161"]
    return load_hosts(None, names=["lab1"], overrides=base + list(sets))[0]


def run_for(c, f, plan_only=False, **kw):
    """A host run with no connection: what a step's plan sees."""
    from tasks.runtime.hostrun import HostRun

    return HostRun(c, None, f, plan_only=plan_only, **kw)


#: A host before the bridge step, and after it.
BEFORE = dict(host__links=[link("lo"), link("eth0", ["198.18.0.11/24"])],
              host__routes=[{"dst": "default", "gateway": "198.18.0.1", "dev": "eth0"},
                            {"dst": "198.18.0.0/24", "dev": "eth0", "protocol": "kernel"}])
AFTER = dict(host__links=[link("lo"), link("eth0", master="mydocker0", kind="veth"),
                          link("mydocker0", ["198.18.0.11/24"], kind="bridge",
                               info={"stp_state": 0, "forward_delay": 0})],
             host__routes=[{"dst": "default", "gateway": "198.18.0.1", "dev": "mydocker0"}])

