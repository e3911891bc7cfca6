"""``fab node``: define or change an xCAT node (the guide's mkdef/chdef step).

The BMC password comes from ``$XCATFAB_BMC_PASSWORD``, the chmod-600 file
named by ``$XCATFAB_BMC_PASSWORD_FILE``, or a prompt, and reaches xCAT only
as a ``mkdef -z``/``chdef -z`` stanza on stdin. The node is read with
``lsdef`` first; password values are hashed with a random salt inside the
container, so xcatfab can tell "unchanged" without ever seeing the stored
password, and a run that matches changes nothing.
"""

from __future__ import annotations

import hashlib
import re
import secrets as _random
import time
from dataclasses import dataclass, field
from typing import Optional

from ..runtime.errors import BadInput, StepFailed, one_line
from ..runtime.report import CHANGED, FAILED, OK, HostReport, Output, StepResult
from ..runtime.secret import MASK, Secret, SecretError, lookup, mask_in, prompt_for
from ..runtime.ssh import ConnectError, ConnectOptions, connect

#: Environment variable of the BMC password (``_FILE``: a chmod-600 file holding it).
BMC_PASSWORD_ENV = "XCATFAB_BMC_PASSWORD"
#: Attributes the flags set; --set-attr may not set them twice.
NODE_FLAG_ATTRS = {"bmc": "--bmc", "bmcusername": "--bmc-user", "groups": "--groups", "mgt": "--mgt",
                   "objtype": None, "bmcpassword": "$XCATFAB_BMC_PASSWORD"}
ATTR_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.]*")
NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass
class NodeRequest:
    """What ``node`` is asked for: attributes to enforce, defaults for a new node, the password."""

    name: str
    attrs: dict = field(default_factory=dict)
    create_defaults: dict = field(default_factory=dict)
    password: Optional[Secret] = None


def node_stanza(node: str, attrs: dict) -> str:
    """A ``chdef -z`` stanza: how attributes (passwords too) reach xCAT on stdin."""
    lines = [f"{node}:", "    objtype=node"]
    for key, value in attrs.items():
        text = value.reveal() if hasattr(value, "reveal") else str(value)
        if "\n" in text or "\r" in text:
            raise StepFailed(f"attribute {key} may not contain a line break")
        lines.append(f"    {key}={text}")
    return "\n".join(lines) + "\n"


def stanza_problem(text: str) -> Optional[str]:
    """Why xCAT's stanza reader would not give ``text`` back unchanged as a value, or None.

    The reader (xCAT's ``readFileInput``) splits lines, starts a new object at a line
    ending in ``:``, and trims blanks and double quotes around a value.
    """
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        return "has a line break or another control character"
    if text != text.strip():
        return "has blanks around it"
    if text.startswith('"') or text.endswith('"'):
        return "begins or ends with a double quote"
    if text.endswith(":"):
        return "ends with ':' (xCAT would read a new object)"
    return None


def _value(flag: str, value, pattern: Optional[str] = None) -> str:
    """A required flag value that xCAT reads back as given (and fits ``pattern``), or BadInput."""
    if value is None or not str(value).strip():
        raise BadInput(flag, None, "required")
    value = str(value)
    problem = stanza_problem(value)
    if problem:
        raise BadInput(flag, None, f"{value!r} {problem}")
    if pattern and not re.fullmatch(pattern, value):
        raise BadInput(flag, None, f"{value!r} is not valid")
    return value


def _set_attrs(req: NodeRequest, set_attr) -> None:
    """``--set-attr ATTR=VALUE`` items into ``req`` (no passwords, nothing a flag sets)."""
    for item in set_attr or ():
        key, sep, value = str(item).partition("=")
        if not sep or not ATTR_NAME.fullmatch(key):
            raise BadInput("--set-attr", None, f"expected ATTR=VALUE, got {item!r}")
        if "password" in key.lower():
            raise BadInput("--set-attr", None, f"{key}: a password on the command line shows in `ps`; "
                                               f"BMC passwords come from ${BMC_PASSWORD_ENV}")
        if key in NODE_FLAG_ATTRS:
            raise BadInput("--set-attr", None, f"{key}: set it with {NODE_FLAG_ATTRS[key] or 'nothing (fixed)'}")
        problem = stanza_problem(value) if value else None
        if problem:
            raise BadInput("--set-attr", None, f"{key}: the value {problem}")
        req.attrs[key] = value


def _check_password(password: Optional[Secret]) -> None:
    if password is None:
        return
    text = password.reveal()
    if not text:
        raise BadInput("BMC password", None, "empty")
    problem = stanza_problem(text)
    if problem:
        raise BadInput("BMC password", None, f"{problem} (a stanza cannot carry it)")


def node_request(name, bmc, bmc_user, groups=None, mgt=None, set_attr=(), password=None) -> NodeRequest:
    """Check ``node``'s arguments (raise :class:`BadInput` naming the flag) and build the request."""
    if not NODE_NAME.fullmatch(name or ""):
        raise BadInput("NAME", None, f"{name!r} is not a valid xCAT node name")
    req = NodeRequest(name, password=password)
    req.attrs["bmc"] = _value("--bmc", bmc, r"[A-Za-z0-9][A-Za-z0-9.:_\[\]-]*")
    req.attrs["bmcusername"] = _value("--bmc-user", bmc_user)
    if groups is not None:
        req.attrs["groups"] = _value("--groups", groups, r"[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*")
    else:
        req.create_defaults["groups"] = "all"  # mkdef needs groups; xCAT's own default
    if mgt is not None:
        req.attrs["mgt"] = _value("--mgt", mgt, r"[a-z0-9]+")
    else:
        req.create_defaults["mgt"] = "ipmi"
    _set_attrs(req, set_attr)
    _check_password(password)
    return req


def bmc_password(prompt: bool) -> Secret:
    """The BMC password: a prompt when asked for, else the environment or its _FILE."""
    try:
        found = prompt_for("BMC password: ") if prompt else lookup(BMC_PASSWORD_ENV)
    except SecretError as exc:
        raise BadInput("BMC password", None, str(exc)) from None
    if not found:
        raise BadInput("BMC password", None, f"set ${BMC_PASSWORD_ENV} (or ${BMC_PASSWORD_ENV}_FILE naming a "
                                             "chmod-600 file), or use --prompt-bmc-password")
    return found


def parse_lsdef(text: str) -> dict:
    """``lsdef -l`` output -> {object name: {attr: value}} (other lines ignored)."""
    objects, current = {}, None
    for line in text.splitlines():
        if line.startswith("Object name: "):
            current = objects.setdefault(line[len("Object name: "):].strip(), {})
        elif current is not None and line.startswith((" ", "\t")) and "=" in line:
            key, _sep, value = line.strip().partition("=")
            current[key] = value
    return objects


def salted_digest(salt: str, secret: Secret) -> str:
    """What the read script prints for a password attribute holding ``secret``."""
    return "sha256:" + hashlib.sha256((salt + secret.reveal()).encode()).hexdigest()


def read_node(remote, cfg, node: str) -> Optional[dict]:
    """The node's attributes (passwords as salted digests, with the salt under ``""``), or None if absent."""
    salt = _random.token_hex(16)
    result = remote.template("host/admin-node-read.sh.j2", step="node", stdin=salt + "\n",
                             name=cfg.container_name, node=node)
    marker = re.search(r"^@@xcatfab:lsdef-rc=(\d+)$", result.out, re.M)
    if not result.ok or not marker:
        raise StepFailed(f"cannot read node {node}: {result.tail()}")
    text = result.out[:marker.start()]
    found = parse_lsdef(text)
    if node in found:
        found[node][""] = salt
        return found[node]
    # xCAT says "Could not find any objects of type 'node'." (exit 0) when there is
    # no node at all, and "Could not find an object named 'X' ..." (exit 1) otherwise.
    if "Could not find any objects of type" in text or "Could not find an object named" in text:
        return None
    lines = text.strip().splitlines()
    raise StepFailed(f"lsdef {node} failed (exit {marker.group(1)}): {lines[-1] if lines else 'no output'}")


def plan_node(req: NodeRequest, current: Optional[dict]):
    """(``"create"``/``"change"``/None, change lines, stanza attributes) for ``req`` against ``current``.

    Change lines never hold a password: a Secret formats as ``********``.
    """
    if current is None:
        attrs = dict(req.create_defaults)
        attrs.update(req.attrs)
        if req.password is not None:
            attrs["bmcpassword"] = req.password
        return "create", [f"create node {req.name}: " + ", ".join(f"{k}={v}" for k, v in attrs.items())], attrs
    changes, attrs = [], {}
    for key, value in req.attrs.items():
        have = current.get(key)
        if have != value:
            attrs[key] = value
            changes.append(f"{key}: {have if have is not None else '(unset)'} -> {value}")
    if req.password is not None:
        have = current.get("bmcpassword")
        if have != salted_digest(current.get("", ""), req.password):
            attrs["bmcpassword"] = req.password
            changes.append(f"bmcpassword: {'(unset)' if not have else 'changed'} -> {MASK}")
    if not attrs:
        return None, [], {}
    return "change", [f"change node {req.name}: " + "; ".join(changes)], attrs


def _apply_node(remote, cfg, req: NodeRequest, plan_only: bool) -> tuple:
    """Plan, apply and verify the node: (status, changes, error)."""
    kind, changes, attrs = plan_node(req, read_node(remote, cfg, req.name))
    if kind is None:
        return OK, [], None
    if plan_only:
        return CHANGED, ["would " + line for line in changes], None
    applied = remote.template("host/admin-node-apply.sh.j2", step="node", stdin=node_stanza(req.name, attrs),
                              name=cfg.container_name, node=req.name, create=kind == "create")
    if not applied.ok:
        return FAILED, changes, f"{'mkdef' if kind == 'create' else 'chdef'} -z failed: {applied.tail()}"
    left, leftover, _attrs = plan_node(req, read_node(remote, cfg, req.name))
    if left is not None:
        return FAILED, changes, "still differs after apply: " + "; ".join(leftover)
    return CHANGED, changes, None


def run_node(cfg, req: NodeRequest, options: ConnectOptions, out: Output, plan_only: bool = False) -> HostReport:
    """Define or change the node on one host; never raises for host failures."""
    report = HostReport(cfg.name)
    started = time.monotonic()
    secrets = [req.password] if req.password else []
    try:
        remote = connect(cfg, options)
    except ConnectError as exc:
        out.result(cfg.name, report.add(StepResult("connect", FAILED, error=exc.message)))
        report.finished = time.monotonic()
        return report
    try:
        status, changes, error = _apply_node(remote, cfg, req, plan_only)
    except Exception as exc:  # StepFailed, RemoteError, a dropped connection: one line, never a traceback
        status, changes, error = FAILED, [], one_line(exc) if isinstance(exc, StepFailed) else (
            f"{type(exc).__name__}: {one_line(exc)}" if not hasattr(exc, "message") else one_line(exc))
    finally:
        report.commands = remote.commands
        report.connections = 1
        remote.close()
    error = mask_in(error, secrets) if error else error
    out.result(cfg.name, report.add(StepResult("node", status, list(changes), error, time.monotonic() - started)))
    report.finished = time.monotonic()
    return report
