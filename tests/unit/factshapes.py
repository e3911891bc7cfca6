"""Facts in the shapes the fact scripts print, for the pure planning tests.

``ip -j`` link records and :class:`tasks.step.Facts` sections built from
plain Python values, so a test reads as the host state it stands for.
"""

from __future__ import annotations

import json

from tasks.step import Facts

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
