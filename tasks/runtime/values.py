"""Inventory values: how text on an inventory line becomes a typed setting.

One rule for every line, host lines and ``[group:vars]`` lines alike:

* a ``#`` or ``;`` at the start of a word (after a blank, outside quotes)
  starts a comment that runs to the end of the line;
* a value that begins with a quote is one shell word: its quotes are removed
  as the shell removes them (``'...'``, ``"..."``, and concatenations such as
  ``'it'"'"'s'``); any other value is taken as written, quotes inside it kept
  (so ``docker_daemon_json={"a": 1}`` is JSON on either line); an unbalanced
  quote is an error;
* a host line's words are separated by blanks, so a value with a blank must be
  quoted there; a vars line holds one ``key=value`` and the value is the rest
  of the line.

Then each value is converted to its key's kind (see ``tasks.runtime.config``)
and checked: no control characters anywhere, non-empty unless the key allows
"none", numbers in their bounds, addresses and prefixes a host on a LAN can
use. Every problem is one :class:`~tasks.runtime.errors.BadInput` naming
``file:line`` and the key.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
from typing import Any, Callable

from .config import KEYS, IsoSpec
from .errors import BadInput

#: Any C0 control character or DEL: never part of a setting.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Interface, container, network, user names: what Linux and Docker accept, nothing a shell cares about.
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
#: A Docker image reference (docker/distribution's grammar): [registry[:port]/]path[:tag][@digest].
#: It lands unquoted where nothing can quote it (a Dockerfile's FROM and LABEL), so nothing else is let in.
_ALNUM = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*"
IMAGE_REF = re.compile(rf"(?:{_DOMAIN}(?::[0-9]+)?/)?{_ALNUM}(?:/{_ALNUM})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?"
                       r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?")
#: An xCAT release: it is part of repository URLs, a LABEL and the default image's tag.
VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
#: An address or host name to connect to (an IPv6 literal with its zone too): it travels in
#: command lines and the ISO relay's space-separated protocol lines.
ADDRESS = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:%-]{0,252}")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


# --------------------------------------------------------------------------- lines
def split_words(line: str, where: str, what: str = "line") -> list[str]:
    """The words of an inventory line (``what``: for messages), comments removed, quotes kept as written."""
    words, word, quote = [], "", None
    for index, ch in enumerate(line):
        if quote:
            word += ch
            if ch == quote and not (quote == '"' and _escaped(line, index)):
                quote = None
        elif ch in "'\"":
            word, quote = word + ch, ch
        elif ch.isspace():
            if word:
                words.append(word)
            word = ""
        elif ch in "#;" and not word:
            break
        else:
            word += ch
    if quote:
        raise BadInput(where, None, f"malformed {what}: unbalanced {quote} quote in {line.strip()!r}")
    if word:
        words.append(word)
    return words


def _escaped(line: str, index: int) -> bool:
    """True when the character at ``index`` follows an odd number of backslashes."""
    count = 0
    while index > count and line[index - count - 1] == "\\":
        count += 1
    return count % 2 == 1


def vars_value(line: str, where: str) -> tuple[str, str]:
    """A ``[group:vars]`` line -> (key, raw value): the value is the rest of the line."""
    key, sep, rest = line.partition("=")
    if not sep or not key.strip() or any(c.isspace() for c in key.strip()):
        raise BadInput(where, None, f"expected key=value, got {line.strip()!r}")
    return key.strip(), " ".join(split_words(rest, where, "value"))


def unquote(value: str, where: str) -> str:
    """A value that begins with a quote is one shell word (quotes removed as the shell removes
    them, concatenated parts too: ``'it'"'"'s'``); any other value is taken as written."""
    if not value or value[0] not in "'\"":
        return value
    try:
        parts = shlex.split(value)
    except ValueError:
        raise BadInput(where, None, f"malformed quoted value {value!r}") from None
    if len(parts) != 1:
        raise BadInput(where, None, f"{value!r}: quote the whole value (a blank is outside the quotes)")
    return parts[0]


# --------------------------------------------------------------------------- kinds
def _int(text: str, spec) -> int:
    if not re.fullmatch(r"[0-9]+", text):
        raise ValueError
    number = int(text)
    low, high = spec.bounds or (0, None)
    if number < low or (high is not None and number > high):
        raise BadInput("", spec.name, f"{number} is not between {low} and {high}")
    return number


def _port(text: str, spec) -> int:
    if not re.fullmatch(r"[0-9]+", text) or not 1 <= int(text) <= 65535:
        raise BadInput("", spec.name, f"{text!r} is not a TCP port (1 to 65535)")
    return int(text)


def _bool(text: str, spec) -> bool:
    low = text.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError


def usable_address(ip: ipaddress.IPv4Address, spec) -> ipaddress.IPv4Address:
    """``ip`` if a host on a LAN can have it (not loopback, multicast, link-local, 0.0.0.0, reserved)."""
    if ip.is_loopback or ip.is_multicast or ip.is_link_local or ip.is_unspecified or ip.is_reserved:
        raise BadInput("", spec.name, f"{ip} is not an address a host on a LAN can use")
    return ip


def _ip(text: str, spec) -> ipaddress.IPv4Address:
    return usable_address(ipaddress.IPv4Address(text), spec)


def _cidr(text: str, spec) -> ipaddress.IPv4Interface:
    if "/" not in text:
        raise BadInput("", spec.name, f"{text!r} needs a prefix length, e.g. {text}/24")
    iface = ipaddress.IPv4Interface(text)
    network = iface.network
    if not 8 <= network.prefixlen <= 30 or iface.ip in (network.network_address, network.broadcast_address):
        raise BadInput("", spec.name, f"{text} is not a usable host address (prefix /8 to /30, "
                                      "not the network or broadcast address)")
    usable_address(iface.ip, spec)
    return iface


def _path(text: str, spec) -> str:
    return os.path.expanduser(text)


def _name(text: str, spec) -> str:
    if spec.name == "apt_suite" and re.fullmatch(r"[A-Za-z0-9._/-]+", text):
        return text  # a suite may be a path: ./ for a flat repository, stable/updates
    if not NAME.fullmatch(text):
        raise BadInput("", spec.name, f"{text!r} is not a valid name (letters, digits, _ . -)")
    return text


def _url(text: str, spec) -> str:
    # No '#' either: a fragment means nothing to a package manager, and apt reads it as a comment.
    if not re.fullmatch(r"(https?|ftp|file)://[^\s'\"`$\\#]+", text):
        raise BadInput("", spec.name, f"{text!r} is not a URL (http://, https://, ftp:// or file://, "
                                      "no blanks, quotes or '#')")
    return text


#: Keys of kind "str" with a shape of their own: (pattern, what a value must be).
STR_RULES = {
    "image": (IMAGE_REF, "a Docker image reference (name[:tag][@digest], lower-case name, no blanks or quotes)"),
    "base_image": (IMAGE_REF, "a Docker image reference (name[:tag][@digest], lower-case name, no blanks or "
                              "quotes)"),
    "xcat_version": (VERSION, "an xCAT release (letters, digits and . _ -)"),
    "address": (ADDRESS, "a host name or IP address (letters, digits and . _ : % -)"),
}


def _str(text: str, spec) -> str:
    pattern, what = STR_RULES.get(spec.name, (None, ""))
    if pattern is not None and not pattern.fullmatch(text):
        raise BadInput("", spec.name, f"{text!r} is not {what}")
    return text


def _list(text: str, spec) -> list:
    items = [item.strip() for item in text.split(",")]
    if any(not item for item in items):
        raise BadInput("", spec.name, f"{text!r} has an empty item")
    pattern, what = LIST_ITEMS.get(spec.name, (None, ""))
    for item in items:
        if pattern is not None and not pattern.fullmatch(item):
            raise BadInput("", spec.name, f"{item!r} is not {what}")
    return items


#: What the items of each list key may be.
LIST_ITEMS = {
    "cap_add": (re.compile(r"(CAP_)?[A-Za-z_]+"), "a capability name"),
    "cap_drop": (re.compile(r"(CAP_)?[A-Za-z_]+"), "a capability name"),
    "xcat_packages": (re.compile(r"[A-Za-z0-9][A-Za-z0-9+._:-]*"), "a package name"),
    "apt_components": (re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*"), "an apt component name"),
}


def _json(text: str, spec) -> dict:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError
    return data


def _choice(text: str, spec) -> str:
    if text not in spec.choices:
        raise BadInput("", spec.name, f"{text!r} is not one of {', '.join(spec.choices)}")
    return text


def _isos(text: str, spec) -> list:
    return parse_isos(text, "")


CONVERTERS: dict[str, Callable[[str, Any], Any]] = {
    "str": _str, "command": lambda text, spec: text, "int": _int, "seconds": _int,
    "port": _port, "bool": _bool, "ip": _ip, "cidr": _cidr, "path": _path, "name": _name, "url": _url,
    "list": _list, "json": _json, "choice": _choice, "isos": _isos,
}

EXPECTED = {"int": "a whole number", "seconds": "a whole number of seconds", "bool": "true or false",
            "ip": "an IPv4 address", "cidr": "an IPv4 address/prefix", "json": "a JSON object"}


def convert(key: str, value: Any, where: str) -> Any:
    """Convert one raw (string) value to the type :data:`KEYS` declares; bad input names ``where`` and ``key``."""
    spec = KEYS[key]
    if not isinstance(value, str):
        return value
    if CONTROL.search(value):
        raise BadInput(where, key, f"{value!r} contains a control character (a line break, tab, ...)")
    text = value.strip()
    if not text:
        if spec.empty or spec.kind in ("list", "isos"):
            return [] if spec.kind in ("list", "isos") else None
        raise BadInput(where, key, "may not be empty")
    try:
        return CONVERTERS[spec.kind](text, spec)
    except BadInput as exc:
        raise BadInput(where, exc.key or key, exc.message) from None
    except (ValueError, json.JSONDecodeError):
        raise BadInput(where, key, f"{text!r} is not {EXPECTED.get(spec.kind, spec.kind)}") from None


def parse_isos(text: str, where: str) -> list[IsoSpec]:
    """``path [sha256=HEX] [distro=D] [arch=A]; path ...`` -> :class:`IsoSpec` list."""
    specs = []
    for entry in text.split(";"):
        fields = entry.split()
        if fields:
            specs.append(_iso_entry(fields, where))
    return specs


def _iso_entry(fields: list, where: str) -> IsoSpec:
    path, opts = os.path.expanduser(fields[0]), {}
    for item in fields[1:]:
        name, sep, value = item.partition("=")
        if not sep or name not in ("sha256", "distro", "arch") or not NAME.fullmatch(value or "-"):
            raise BadInput(where, "isos", f"{item!r}: expected sha256=, distro= or arch=")
        opts[name] = value
    if "sha256" in opts:
        if not _SHA256.fullmatch(opts["sha256"]):
            raise BadInput(where, "isos", f"{path}: sha256 must be 64 hex digits")
        opts["sha256"] = opts["sha256"].lower()
    return IsoSpec(path, **opts)
