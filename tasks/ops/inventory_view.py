"""``fab inventory``: each host's resolved settings, and where each one came from.

Origins: ``default`` (built in), ``preset NAME``, ``file:line`` (a group's
vars or the host's line), ``--set``, ``-H NAME`` (a user or port written in
``-H``), or the key another one defaults to (``container_dns`` <- ``gateway``).
"""

from __future__ import annotations

import json
import sys

from ..runtime.config import KEYS


def _text(value) -> str:
    if isinstance(value, list):
        return ", ".join(str(v.path if hasattr(v, "path") else v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return "-" if value is None else str(value)


def rows(cfg) -> list:
    """(key, value, origin) for every key of one host."""
    return [(key, _text(getattr(cfg, key)), cfg.where(key)) for key in KEYS]


def print_inventory(configs, as_json: bool = False, stream=None) -> None:
    """One block per host (or one JSON document): every key, its value, where it came from."""
    stream = stream or sys.stdout
    if as_json:
        document = {cfg.name: {"groups": list(cfg.groups),
                               "settings": {k: {"value": v, "from": o} for k, v, o in rows(cfg)}}
                    for cfg in configs}
        stream.write(json.dumps(document, indent=2) + "\n")
        return
    for cfg in configs:
        stream.write(f"{cfg.name}  (groups: {', '.join(cfg.groups) or '-'})\n")
        width = max(len(k) for k in KEYS)
        for key, value, origin in rows(cfg):
            stream.write(f"  {key:<{width}}  {value}    [{origin}]\n")
