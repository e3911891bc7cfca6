"""Step ``iso``: OS media staged into the host's iso_dir, verified, then ``copycds``.

The guide's last step, done so it can be rerun and scaled:

* **Facts** (templates/host/facts/iso.sh.j2, part of the one fact round trip):
  the files in ``iso_dir`` (size, mtime, inode), xcatfab's record of each one
  it staged (``state_dir/iso/NAME.sha256``: the sha256 computed while the
  file was received, with the size, mtime and inode it had then), resumable
  ``.part`` files, and what copycds copied (``state_dir/iso/copied/SHA256``
  with the distro and arch, checked against ``data_dir/install/D/A`` and the
  osdistro table). No docker exec, no hashing: a converged run reads no ISO.
* **Plan**: stage an ISO the host lacks or holds with another size or sum;
  hash a same-size file xcatfab has no valid record of; copycds media not yet
  copied (or copied as another distro/arch than the inventory says).
* **Apply**: stage (below), then ``copycds`` in the container (``-n``/``-a``
  from the inventory when given), reporting distro, arch and the osimages it
  created, and recording the media.

Staging, correct: the host writes ``NAME.part`` while hashing what it
writes; the controller hashes what it sends while sending (one read of the
local file); the host renames the part into place only when its sum equals
the controller's (sent over SSH at the end) and the expected one (inventory
``sha256=`` or ``--checksums``), and only once the part is on disk (fsync;
flushed along the way, so the end only waits for the tail), so a crash
cannot leave a recorded ISO with holes. A same size+sum file is never sent
again. An interrupted transfer resumes: the part's prefix is kept (its tag
says which source it came from) and counted into both sums. A mismatch
leaves nothing under the ISO's name; a full disk is a clear error (before a
byte is sent when the free space is known short) and removes the part.

Staging, fast: the bytes go through the OpenSSH client when it is installed
(same host, port, user, keys and known_hosts as xcatfab's own connection,
strict host key checking, AES-GCM first when the CPU has AES instructions),
spliced from the page cache into its pipe; hashing runs in a thread of its
own on both sides. Without OpenSSH (or when it cannot log in), a second
paramiko connection negotiating AES-GCM carries them, else a channel of
xcatfab's own transport (``XCATFAB_ISO_PARAMIKO=1`` forces that path, for
measuring it). BENCHMARKS.md ("ISO staging") has the numbers. Progress: a
rich bar per host and ISO on a terminal (``XCATFAB_NO_PROGRESS=1``: none),
else a plain line every few seconds.

Many hosts: the controller sends each ISO once. ``fab -H a,b,c iso`` builds a
chain controller -> a -> b -> c: every host writes while forwarding to the
next over one TCP connection it opens to a one-shot listener the next host
started over xcatfab's SSH connection (token on stdin, never on a command
line; see templates/host/iso-relay.py.j2). Hosts never need each other's SSH
keys. Every host verifies the whole-file sum against the controller's, sent
to it over its own SSH connection. When the chain breaks, the hosts it did
not reach are sent to from the controller, with a warning. In a ``deploy`` of
several hosts, a host pulls an ISO from a host of the same run that already
has it verified, the same way.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import hashlib
import json
import os
import queue
import re
import secrets as token_source
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Optional

from invoke import task
from invoke.exceptions import Exit

from .inventory import InventoryError, IsoSpec
from .step import Action, Step, StepFailed, parse_sections
from .templating import render

#: ISO names xcatfab puts on hosts: no whitespace, quotes or slashes, no leading dot or dash.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=@,~-]*")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
MIB = 1 << 20
CHUNK = 1 << 20
#: Cipher preference for the OpenSSH data path when the CPU has AES instructions
#: (AES-GCM is about twice as fast as OpenSSH's default chacha20-poly1305 there).
AES_FIRST_CIPHERS = ("aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,"
                     "aes128-ctr,aes192-ctr,aes256-ctr")
#: Seconds to wait for a relay program's first lines (it answers at once).
HANDSHAKE_SECONDS = 60


# =============================================================== local side
@dataclass(frozen=True)
class LocalIso:
    """One ISO on the controller, validated: what is sent, and what it must hash to."""

    path: str
    name: str
    size: int
    mtime_ns: int
    ino: int
    sha256: Optional[str] = None  # known before sending: inventory, --checksums or the cache
    origin: str = ""  # where that sum comes from, for messages
    distro: Optional[str] = None
    arch: Optional[str] = None

    @property
    def key(self) -> str:
        """What identifies this ISO across hosts of one run."""
        return self.path

    @property
    def tag(self) -> str:
        """What a host's ``.part`` must have come from to be resumed."""
        return self.sha256 or f"{self.size}:{self.mtime_ns}"

    def copycds_args(self) -> list[str]:
        args = []
        if self.distro:
            args += ["-n", self.distro]
        if self.arch:
            args += ["-a", self.arch]
        return args + [f"/iso/{self.name}"]


def parse_checksums(path: str) -> dict:
    """A ``sha256sum`` (``HEX  name``, ``HEX *name``) or BSD (``SHA256 (name) = HEX``) file -> {name: sum}.

    Names are reduced to their basename (files list ``./x.iso`` or
    ``dir/x.iso``). Raises :class:`InventoryError` naming ``file:line``.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not a text file"
        raise InventoryError(path, None, f"cannot read checksums file: {why}") from None
    sums: dict = {}
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        bsd = re.fullmatch(r"SHA256 ?\((.+)\) ?= ?([0-9a-fA-F]+)", line)
        if bsd:
            name, digest = bsd.group(1), bsd.group(2)
        else:
            digest, _sep, name = line.partition(" ")
            name = name[1:] if name[:1] in (" ", "*") else name
        if not _SHA256.fullmatch(digest) or not name.strip():
            raise InventoryError(f"{path}:{lineno}", None,
                                 f"expected '<sha256>  <file>' (sha256sum format), got {raw.strip()[:60]!r}")
        name = os.path.basename(name.strip())
        digest = digest.lower()
        if sums.get(name, digest) != digest:
            raise InventoryError(f"{path}:{lineno}", None, f"{name} is listed twice with different sums")
        sums[name] = digest
    return sums


def expand_sources(patterns, where: str = "--src") -> list[str]:
    """``--src`` values (paths or globs) -> absolute paths, in order, each once."""
    paths: list[str] = []
    for pattern in patterns:
        pattern = os.path.expanduser(pattern.strip())
        if not pattern:
            continue
        if glob.has_magic(pattern):
            found = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
            if not found:
                raise InventoryError(where, None, f"{pattern}: matches no file")
        else:
            found = [pattern]
        for path in found:
            path = os.path.abspath(path)
            if path not in paths:
                paths.append(path)
    return paths


def resolve_specs(inventory_isos, src=None, checksums: Optional[str] = None) -> list[IsoSpec]:
    """The ISOs of a run: ``--src`` (with the inventory's options for the same names) or the inventory's.

    ``--checksums`` supplies the sums the specs lack; a sum that disagrees
    with the inventory's, or an ISO the file does not list, is an error.
    """
    by_name = {spec.name: spec for spec in inventory_isos or []}
    if src:
        patterns = [src] if isinstance(src, str) else list(src)
        specs = []
        for path in expand_sources(patterns):
            known = by_name.get(os.path.basename(path))
            specs.append(replace(known, path=path) if known else IsoSpec(path))
    else:
        specs = [replace(spec, path=os.path.abspath(spec.path)) for spec in inventory_isos or []]
    if checksums:
        sums = parse_checksums(checksums)
        resolved = []
        for spec in specs:
            listed = sums.get(spec.name)
            if listed is None:
                raise InventoryError(checksums, None, f"{spec.name} is not listed")
            if spec.sha256 and spec.sha256 != listed:
                raise InventoryError(checksums, None, f"{spec.name}: sha256 {listed} here but "
                                                      f"{spec.sha256} in the inventory")
            resolved.append(replace(spec, sha256=listed))
        specs = resolved
    return specs


def validate_local(specs, where: str = "isos", checksums: Optional[str] = None) -> list[LocalIso]:
    """Check every local ISO (a readable, non-empty regular file with a usable name) before any connection."""
    result, names = [], {}
    for spec in specs:
        path = spec.path
        name = os.path.basename(path)
        if not NAME_RE.fullmatch(name) or name.endswith(".part"):
            raise InventoryError(where, None, f"{path}: file name {name!r} must be letters, digits and "
                                              "._+=@,~- only, and not end in .part")
        if name in names:
            raise InventoryError(where, None, f"{path} and {names[name]} would both be {name} on the host")
        names[name] = path
        try:
            st = os.stat(path)
        except OSError as exc:
            raise InventoryError(where, None, f"{path}: {exc.strerror.lower()}") from None
        if not os.path.isfile(path):
            raise InventoryError(where, None, f"{path}: not a regular file")
        try:
            with open(path, "rb") as fh:
                fh.read(1)
        except OSError as exc:
            raise InventoryError(where, None, f"{path}: cannot read it: {exc.strerror.lower()}") from None
        if st.st_size == 0:
            raise InventoryError(where, None, f"{path}: empty file")
        if spec.sha256 and not _SHA256.fullmatch(spec.sha256):
            raise InventoryError(where, None, f"{path}: sha256 must be 64 hex digits")
        origin = (f"checksums file {checksums}" if checksums else "inventory") if spec.sha256 else ""
        digest = spec.sha256.lower() if spec.sha256 else None
        if digest is None:
            digest = SUMS.lookup(path, st)
            origin = "controller cache" if digest else ""
        for label, value in (("distro", spec.distro), ("arch", spec.arch)):
            if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
                raise InventoryError(where, None, f"{path}: {label} {value!r} is not a valid name")
        result.append(LocalIso(path, name, st.st_size, st.st_mtime_ns, st.st_ino, digest, origin,
                               spec.distro, spec.arch))
    return result


class SumCache:
    """sha256 of local files, keyed by path, size, mtime and inode (``~/.cache/xcatfab/iso-sums.json``).

    Filled by every transfer (the sum computed while sending) and every local
    hash, so a converged run never reads a local ISO again.
    """

    def __init__(self):
        self.lock = threading.Lock()

    @staticmethod
    def path() -> str:
        root = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
        return os.path.join(root, "xcatfab", "iso-sums.json")

    def _load(self) -> dict:
        try:
            with open(self.path(), encoding="utf-8") as fh:
                data = json.load(fh)
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def lookup(self, path: str, st) -> Optional[str]:
        """The cached sum of ``path`` when ``st`` (its stat) is still what was hashed."""
        entry = self._load().get(os.path.realpath(path))
        if entry and entry.get("id") == [st.st_size, st.st_mtime_ns, st.st_ino]:
            return entry.get("sha256")
        return None

    def lookup_iso(self, iso: "LocalIso") -> Optional[str]:
        entry = self._load().get(os.path.realpath(iso.path))
        if entry and entry.get("id") == [iso.size, iso.mtime_ns, iso.ino]:
            return entry.get("sha256")
        return None

    def remember(self, iso: LocalIso, digest: str) -> None:
        with self.lock:
            data = self._load()
            data[os.path.realpath(iso.path)] = {"id": [iso.size, iso.mtime_ns, iso.ino], "sha256": digest}
            target = self.path()
            try:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                tmp = f"{target}.{os.getpid()}.tmp"
                with open(tmp, "w", encoding="utf-8") as fh:
                    json.dump(data, fh)
                os.replace(tmp, target)
            except OSError:
                pass  # a cache that cannot be written is only not used


SUMS = SumCache()


def local_sum(iso: LocalIso) -> str:
    """The ISO's sha256: the known one, the one a transfer of this run computed, else hashed here and cached."""
    if iso.sha256:
        return iso.sha256
    cached = SUMS.lookup_iso(iso)
    if cached:
        return cached
    digest = hashlib.sha256()
    with open(iso.path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    value = digest.hexdigest()
    SUMS.remember(iso, value)
    return value


# ================================================================ facts
@dataclass(frozen=True)
class HostFile:
    size: int
    mtime_ns: int
    ino: int


@dataclass(frozen=True)
class Record:
    sha256: str
    size: int
    mtime_ns: int
    ino: int


@dataclass(frozen=True)
class Copied:
    distro: str
    arch: str
    install: bool
    osdistro: str  # yes | no | unknown (no table readable on the host)


def find_time_ns(text: str) -> int:
    """``find -printf %T@`` (seconds with a fraction) -> integer nanoseconds."""
    seconds, _dot, fraction = text.partition(".")
    return int(seconds) * 1_000_000_000 + int((fraction + "000000000")[:9])


def host_files(facts) -> dict:
    """Regular files in iso_dir: name -> :class:`HostFile`."""
    files = {}
    for line in facts.lines("iso.files"):
        parts = line.split(" ", 3)
        if len(parts) == 4:
            try:
                files[parts[3]] = HostFile(int(parts[0]), find_time_ns(parts[1]), int(parts[2]))
            except ValueError:
                continue
    return files


def host_records(facts) -> dict:
    """xcatfab's records: name -> :class:`Record`."""
    records = {}
    for line in facts.lines("iso.records"):
        parts = line.split(" ", 4)
        if len(parts) == 5 and parts[4].endswith(".sha256") and _SHA256.fullmatch(parts[0]):
            try:
                records[parts[4][:-len(".sha256")]] = Record(parts[0], int(parts[1]), int(parts[2]), int(parts[3]))
            except ValueError:
                continue
    return records


def host_parts(facts) -> dict:
    """Resumable parts: name -> (tag, total size) of the transfer that left it."""
    parts = {}
    for line in facts.lines("iso.parts"):
        fields = line.split(" ", 2)
        if len(fields) == 3 and fields[2].endswith(".part"):
            try:
                parts[fields[2][:-len(".part")]] = (fields[0], int(fields[1]))
            except ValueError:
                continue
    return parts


def copied_media(facts) -> dict:
    """What copycds copied, by the sha256 of the ISO: sha -> :class:`Copied`."""
    media = {}
    for line in facts.lines("iso.copied"):
        fields = line.split()
        if len(fields) == 5 and _SHA256.fullmatch(fields[0]):
            media[fields[0]] = Copied(fields[1], fields[2], fields[3] == "yes", fields[4])
    return media


def staged_sum(facts, name: str) -> Optional[str]:
    """The sha256 of ``iso_dir/name`` per xcatfab's record, when the record still describes the file."""
    found = host_files(facts).get(name)
    record = host_records(facts).get(name)
    if found and record and (record.size, record.mtime_ns, record.ino) == (found.size, found.mtime_ns, found.ino):
        return record.sha256
    return None


def is_copied(copied: Optional[Copied], iso: LocalIso) -> bool:
    """Media counts as copied when copycds' tree and osdistro are still there as the inventory wants them."""
    if copied is None or not copied.install or copied.osdistro == "no":
        return False
    return (iso.distro in (None, copied.distro)) and (iso.arch in (None, copied.arch))


# ====================================================== per-run settings
@dataclass
class IsoOptions:
    """What the ``iso`` task adds to a host's run (deploy uses the defaults)."""

    isos: Optional[list] = None  # LocalIso list; None: the inventory's
    copycds: bool = True
    bwlimit: Optional[float] = None  # MiB/s the controller sends at most
    relay: Optional["RelayGroup"] = None


_SESSION: dict = {}  # host name -> IsoOptions, set by the iso task for its run
_SESSION_LOCK = threading.Lock()


@contextmanager
def session(options_by_host: dict):
    """Give each named host's IsoStep these :class:`IsoOptions` for the duration."""
    with _SESSION_LOCK:
        _SESSION.update(options_by_host)
    try:
        yield
    finally:
        with _SESSION_LOCK:
            for name in options_by_host:
                _SESSION.pop(name, None)


def options_for(cfg) -> IsoOptions:
    with _SESSION_LOCK:
        return _SESSION.get(cfg.name) or IsoOptions()


def wanted(run) -> list[LocalIso]:
    """The ISOs this run stages: the task's, else the inventory's (validated once per run)."""
    opts = options_for(run.cfg)
    if opts.isos is not None:
        return opts.isos
    if "iso.local" not in run.shared:
        try:
            run.shared["iso.local"] = validate_local(resolve_specs(run.cfg.isos),
                                                     where=run.cfg.where("isos"))
        except InventoryError as exc:
            raise StepFailed(str(exc)) from None
    return run.shared["iso.local"]


def _mib(n: int) -> str:
    return f"{n / MIB:.1f} MiB"


# ================================================================= step
class IsoStep(Step):
    """Stage the ISOs into iso_dir (verified, resumable, relayed) and copycds them."""

    name = "iso"
    facts = ("host", "docker", "iso")

    def plan(self, run) -> list[Action]:
        cfg, facts = run.cfg, run.facts
        isos = wanted(run)
        if not isos:
            return []
        opts = options_for(cfg)
        files, parts, media = host_files(facts), host_parts(facts), copied_media(facts)
        actions = []
        for iso in isos:
            found = files.get(iso.name)
            have = staged_sum(facts, iso.name)
            media_sum = None
            if found is not None and found.size == iso.size and have:
                want = iso.sha256 or local_sum(iso)  # hashed here at most once per local file
                if have == want:
                    media_sum = have
                else:
                    actions.append(Action("stage", f"stage {iso.name} ({_mib(iso.size)}): the host's copy has "
                                          f"sha256 {have[:12]}…, not {want[:12]}…", {"iso": iso}))
            elif found is not None and found.size == iso.size:
                actions.append(Action("check", f"hash {iso.name} on the host (no record of it) and "
                                      "restage it if it differs", {"iso": iso}))
            else:
                why = "missing" if found is None else f"size {found.size} -> {iso.size}"
                part = parts.get(iso.name)
                part_file = files.get(iso.name + ".part")
                if part and part_file and part[0] == iso.tag and part[1] == iso.size and part_file.size:
                    why += f", resume after {_mib(part_file.size)}"
                actions.append(Action("stage", f"stage {iso.name} ({_mib(iso.size)}, {why})", {"iso": iso}))
            if opts.copycds:
                if not (media_sum and is_copied(media.get(media_sum), iso)):
                    args = " ".join(iso.copycds_args())
                    actions.append(Action("copycds", f"copycds {args}", {"iso": iso}))
        return actions

    def apply(self, run, actions) -> None:
        cfg = run.cfg
        opts = options_for(cfg)
        checks = [a.data["iso"] for a in actions if a.kind == "check"]
        stages = [a.data["iso"] for a in actions if a.kind == "stage"]
        copies = [a.data["iso"] for a in actions if a.kind == "copycds"]
        sums: dict = {}
        relay = opts.relay
        if relay is not None:
            relay.declare(cfg.name, {iso.key for iso in checks + stages})
        try:
            for iso in checks:
                digest = check_on_host(run, iso)
                if digest is None:
                    stages.append(iso)
                else:
                    sums[iso.name] = digest
                    if relay is not None:
                        relay.skip(cfg.name, iso.key)
            # One global order (the relay's), so hosts waiting for each other never wait in a circle.
            for iso in sorted(stages, key=lambda i: i.key):
                sums[iso.name] = stage(run, iso, opts)
        finally:
            if relay is not None:
                relay.leave(cfg.name)
        for iso in copies:
            digest = sums.get(iso.name) or staged_sum(run.facts, iso.name) or local_sum(iso)
            if is_copied(copied_media(run.facts).get(digest), iso):
                continue  # the hash just taken shows this media was copied already
            copycds(run, iso, digest)


# ============================================================== copycds
def container_running(run) -> bool:
    from .docker import inspected

    ctr = inspected(run.facts, run.cfg)["container"]
    return bool(ctr and (ctr.get("State") or {}).get("Running"))


def osimage_names(text: str) -> list[str]:
    """Names from ``lsdef -t osimage`` (``NAME  (osimage)`` lines)."""
    return [line.split()[0] for line in text.splitlines() if line.strip().endswith("(osimage)")]


NO_LOOP_HINT = ("copycds loop-mounts the ISO: run the container with privileged=true, or keep the loop "
                "device cgroup rules with loop_devices > 0, and check that the host has loop devices "
                "(modprobe loop)")


def copycds(run, iso: LocalIso, digest: str) -> None:
    """Run copycds for one staged ISO in the container, report and record what it copied."""
    cfg = run.cfg
    if not container_running(run):
        raise StepFailed(f"{cfg.name}: copycds {iso.name}: container {cfg.container_name} is not running "
                         "(deploy the host, or stage only with --no-copycds)")
    result = run.remote.template("host/iso-copycds.sh.j2", step="iso", timeout=3600,
                                 container=cfg.container_name, name=iso.name, args=iso.copycds_args())
    out = parse_sections(result.out)
    text = out.get("copycds", "").strip()
    rc = out.get("rc", "").strip()
    if "end" not in out or rc != "0":
        lines = [line for line in (text or result.tail()).splitlines() if line.strip()]
        if re.search(r"find any loop device|unable to mount", text, re.I):
            raise StepFailed(f"{cfg.name}: copycds {iso.name}: no usable loop device in container "
                             f"{cfg.container_name} ({NO_LOOP_HINT})")
        raise StepFailed(f"{cfg.name}: copycds {iso.name} failed: {' | '.join(lines[-2:]) or result.tail()}")
    dest = re.findall(r"Copying media to (\S+)", text)
    match = re.fullmatch(r"/install/([^/]+)/([^/]+)/?", dest[-1]) if dest else None
    if not match:
        raise StepFailed(f"{cfg.name}: copycds {iso.name}: copied to {dest[-1] if dest else 'an unknown place'}, "
                         "not /install/<distro>/<arch> (is site.installdir changed?)")
    distro, arch = match.group(1), match.group(2)
    before, after = set(osimage_names(out.get("before", ""))), osimage_names(out.get("after", ""))
    created = [name for name in after if name not in before]
    mine = [name for name in after if name.startswith(f"{distro}-{arch}-")]
    run.shared.setdefault("iso.copied", []).append(
        {"name": iso.name, "distro": distro, "arch": arch, "created": created, "osimages": mine})
    run.say(f"copycds {iso.name}: {distro} {arch} -> /install/{distro}/{arch}; osimages created: "
            f"{', '.join(created) or 'none (already defined: ' + (', '.join(mine) or '-') + ')'}")
    run.remote.write_file(f"{cfg.state_dir}/iso/copied/{digest}", f"{distro} {arch} {iso.name}\n", step="iso")


# ================================================ checking a host's copy
def check_on_host(run, iso: LocalIso) -> Optional[str]:
    """Hash a same-size host file xcatfab has no record of; record it when it is the wanted one.

    Returns its sha256 when it matches (the file stays), None when it must be staged.
    """
    cfg = run.cfg
    result = run.remote.template("host/iso-check.sh.j2", step="iso", timeout=3600,
                                 iso_dir=cfg.iso_dir, name=iso.name)
    lines = result.out.split()
    if not result.ok or len(lines) != 4 or not _SHA256.fullmatch(lines[3]):
        return None
    size, mtime, ino, digest = int(lines[0]), find_time_ns(lines[1]), int(lines[2]), lines[3]
    if digest != local_sum(iso) or size != iso.size:
        return None
    run.remote.write_file(f"{cfg.state_dir}/iso/{iso.name}.sha256", f"{digest} {size} {mtime} {ino}\n", step="iso")
    run.say(f"{iso.name}: the host's copy has the wanted sha256, recorded it")
    return digest


# ============================================================ transfers
class LegError(Exception):
    """A relay program ended without the answer expected from it."""


class Leg:
    """One relay program on one host: lines to its stdin, lines (and progress) from its stdout."""

    def __init__(self, host: str, on_progress=None):
        self.host = host
        self.on_progress = on_progress
        self.lines: queue.Queue = queue.Queue()
        self.notes: list = []
        self.err = bytearray()
        self.threads: list = []

    def _read_lines(self, stream) -> None:
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").strip()
                if line.startswith("P "):
                    if self.on_progress is not None:
                        try:
                            self.on_progress(int(line[2:]))
                        except ValueError:
                            pass
                elif line.startswith("DOWNLOST "):
                    self.notes.append(line[len("DOWNLOST "):])
                elif line:
                    self.lines.put(line)
        except (OSError, ValueError):
            pass
        finally:
            self.lines.put(None)

    def _read_err(self, stream) -> None:
        try:
            for block in iter(lambda: stream.read(4096), b""):
                self.err += block[: max(0, 65536 - len(self.err))]
        except (OSError, ValueError):
            pass

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self.threads.append(thread)

    def expect(self, *words: str, timeout: Optional[float] = None) -> list:
        """The next answer line, split; raises :class:`LegError` on FAIL, a wrong word or the end."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise LegError(f"no answer within {timeout:.0f}s") from None
        if line is None:
            self.lines.put(None)  # stay at the end for later callers
            raise LegError(self.stderr_tail() or f"the relay program ended (exit {self.exit_code()})")
        fields = line.split()
        if fields[0] in words:
            return fields
        if fields[0] == "FAIL":
            raise LegError(line[len("FAIL "):])
        raise LegError(line)

    def stderr_tail(self) -> str:
        text = [line for line in self.err.decode("utf-8", "replace").splitlines() if line.strip()]
        return " | ".join(text[-2:])

    # implemented by subclasses
    def send(self, data) -> None:
        raise NotImplementedError

    def send_from(self, fd: int, offset: int, data) -> None:
        """Send ``data``, which is the file ``fd``'s bytes at ``offset`` (a leg may take them from the file)."""
        self.send(data)

    def send_line(self, text: str) -> None:
        self.send((text + "\n").encode())

    def close_input(self) -> None:
        raise NotImplementedError

    def exit_code(self) -> Optional[int]:
        raise NotImplementedError

    def finish(self, timeout: float = 30) -> Optional[int]:
        raise NotImplementedError


class ParamikoLeg(Leg):
    """A relay program on a channel of xcatfab's own SSH transport."""

    #: A large receive window and packets: progress lines and answers never stall the channel.
    WINDOW = 64 * MIB
    PACKET = 32768

    def __init__(self, remote, script: str, on_progress=None, owned: bool = False):
        super().__init__(remote.name, on_progress)
        self.remote = remote
        self.owned = owned  # a connection of its own, closed with the leg
        with remote.lock:
            remote.commands += 1
        self.chan = remote.transport.open_session(window_size=self.WINDOW, max_packet_size=self.PACKET,
                                                  timeout=30)
        self.chan.exec_command(remote.command_line(script))
        if remote.become and remote.sudo_needs_password:
            self.chan.sendall((remote.sudo_password.reveal() + "\n").encode())
        self._spawn(self._read_lines, self.chan.makefile("rb"))
        self._spawn(self._read_err, self.chan.makefile_stderr("rb"))

    def send(self, data) -> None:
        try:
            self.chan.sendall(data)
        except OSError as exc:
            raise LegError(f"the host stopped taking data: {exc}") from None

    def close_input(self) -> None:
        try:
            self.chan.shutdown_write()
        except OSError:
            pass

    def exit_code(self) -> Optional[int]:
        return self.chan.recv_exit_status() if self.chan.exit_status_ready() else None

    def finish(self, timeout: float = 30) -> Optional[int]:
        deadline = time.monotonic() + timeout
        while not self.chan.exit_status_ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        code = self.exit_code()
        self.chan.close()
        if self.owned:
            self.remote.close()
        return code


class OpenSSHLeg(Leg):
    """A relay program behind the OpenSSH client: the fast path for the bytes of an ISO."""

    def __init__(self, remote, argv: list, script: str, on_progress=None):
        super().__init__(remote.name, on_progress)
        with remote.lock:
            remote.commands += 1
        self.proc = subprocess.Popen(argv + [remote.command_line(script)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        self.fd = self.proc.stdin.fileno()
        self.splice = hasattr(os, "splice")  # Linux, Python 3.10+
        try:
            # One MiB in flight to ssh instead of the default 64 KiB: fewer wake-ups per MiB on both sides.
            fcntl.fcntl(self.fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), CHUNK)
        except OSError:
            pass
        if remote.become and remote.sudo_needs_password:
            self.send((remote.sudo_password.reveal() + "\n").encode())
        self._spawn(self._read_lines, self.proc.stdout)
        self._spawn(self._read_err, self.proc.stderr)

    def send(self, data) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.EBADF):
                raise LegError("the host stopped taking data") from None
            raise

    def send_from(self, fd: int, offset: int, data) -> None:
        """Splice the file's pages into ssh's pipe (no copy through this process), else write them."""
        if not self.splice:
            self.send(data)
            return
        done = 0
        try:
            while done < len(data):
                done += os.splice(fd, self.fd, len(data) - done, offset_src=offset + done)
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.EBADF):
                raise LegError("the host stopped taking data") from None
            if exc.errno not in (errno.EINVAL, errno.ENOSYS):
                raise
            self.splice = False  # a file system that cannot splice: plain writes from here on
            self.send(data[done:])

    def close_input(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def exit_code(self) -> Optional[int]:
        return self.proc.poll()

    def finish(self, timeout: float = 30) -> Optional[int]:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        for thread in self.threads:
            thread.join(5)
        return code


def _cpu_has_aes() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return "aes" in line.split(":", 1)[1].split()
    except OSError:
        pass
    return False


def openssh_argv(remote, cfg) -> Optional[list]:
    """The ``ssh`` command line that reaches the host exactly as xcatfab's connection does, or None.

    Same address, port and user as the open Fabric connection, its key files
    (IdentitiesOnly) or, like paramiko, the agent and default keys; the same
    known_hosts files (tasks/ssh.py) with strict checking and no global file.
    None when ``ssh`` is missing or the connection goes through a gateway.
    """
    from .ssh import known_hosts_files

    ssh = shutil.which("ssh")
    conn = getattr(remote, "connection", None)
    if not ssh or conn is None or getattr(conn, "gateway", None):
        return None
    files = known_hosts_files(cfg, conn.ssh_config)
    keys = (conn.connect_kwargs or {}).get("key_filename") or conn.ssh_config.get("identityfile") or []
    keys = [keys] if isinstance(keys, str) else list(keys)
    argv = [ssh, "-F", "/dev/null", "-T", "-x", "-a",
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "CheckHostIP=no",
            "-o", "UserKnownHostsFile=" + " ".join(f'"{path}"' for path in files),
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "UpdateHostKeys=no",
            "-o", f"ConnectTimeout={cfg.connect_timeout}", "-o", "ServerAliveInterval=15",
            "-o", "Compression=no", "-o", "LogLevel=ERROR", "-o", "ControlPath=none",
            "-p", str(conn.port), "-l", conn.user]
    if _cpu_has_aes():
        argv += ["-o", "Ciphers=" + AES_FIRST_CIPHERS]
    for key in keys:
        argv += ["-i", os.path.expanduser(key)]
    if keys:
        argv += ["-o", "IdentitiesOnly=yes"]
    return argv + ["--", conn.host]


# ------------------------------------------------------------ progress
class Board:
    """Live progress per host and ISO: rich bars on a terminal, a plain line every few seconds otherwise."""

    PLAIN_EVERY = 5.0

    def __init__(self):
        self.lock = threading.Lock()
        self.users = 0
        self.progress = None
        self.out = None
        self.plain_next: dict = {}

    @staticmethod
    def live() -> bool:
        return sys.stdout.isatty() and not os.environ.get("XCATFAB_NO_PROGRESS")

    def start(self, out) -> None:
        with self.lock:
            self.out = self.out or out
            self.users += 1
            if self.users == 1 and self.live():
                import rich.progress as bars

                self.progress = bars.Progress(bars.TextColumn("{task.description}"), bars.BarColumn(),
                                              bars.DownloadColumn(binary_units=True), bars.TransferSpeedColumn(),
                                              bars.TimeRemainingColumn(), transient=True)
                self.progress.start()

    def stop(self) -> None:
        with self.lock:
            self.users -= 1
            if self.users == 0 and self.progress is not None:
                self.progress.stop()
                self.progress = None

    def track(self, host: str, name: str, size: int, start: int):
        """A callback taking the host's position in the file (bytes)."""
        started, label = time.monotonic(), f"{host}: {name}"
        task = self.progress.add_task(label, total=size, completed=start) if self.progress else None

        def update(position: int) -> None:
            if task is not None:
                self.progress.update(task, completed=position)
                return
            # Every few seconds, and once at the end.
            now, due = time.monotonic(), self.plain_next.get(label, started + self.PLAIN_EVERY)
            if due is None or (position < size and now < due):
                return
            self.plain_next[label] = now + self.PLAIN_EVERY if position < size else None
            rate = (position - start) / max(now - started, 1e-6)
            eta = (size - position) / rate if rate > 0 else 0
            text = (f"iso: {name} {_mib(position)} of {_mib(size)} ({position * 100 // size}%) "
                    f"{rate / MIB:.0f} MiB/s ETA {eta:.0f}s")
            if self.out is not None:
                self.out.line(host, text)

        return update


BOARD = Board()


# -------------------------------------------------------- chain runner
@dataclass
class Receiver:
    """One host taking an ISO in a chain, and how that went."""

    cfg: object
    remote: object
    sha256: Optional[str] = None
    error: Optional[str] = None
    #: True when it failed because of the chain (not of itself): worth sending again from the controller.
    relay_problem: bool = False
    leg: Optional[Leg] = None
    offset: int = 0  # bytes its .part already had (resumed)
    say: Optional[object] = None  # prints a line for this host
    upstream: str = ""  # who fed it: "the controller" or a host name
    connect_options: Optional[object] = None  # how xcatfab connected (for a second, faster connection)


@dataclass
class Holder:
    """A host that has the ISO, verified, and can feed others."""

    cfg: object
    remote: object
    sha256: str


@dataclass
class ChainReport:
    """What one chain run did: bytes the controller sent, seconds, the data path, warnings."""

    sent: int = 0
    seconds: float = 0.0  # the whole chain: start, handshake, data, verdicts
    streaming: float = 0.0  # the data alone: first byte sent to the last host's verdict
    path: str = ""
    warnings: list = field(default_factory=list)


def _relay_script(cfg, mode: str, iso: LocalIso, expected: str, tag: str) -> str:
    return render("host/iso-receive.sh.j2", mode=mode, iso_dir=cfg.iso_dir, state_dir=cfg.state_dir,
                  name=iso.name, size=iso.size, expected=expected, tag=tag)


def _listen_address(cfg) -> str:
    return cfg.connect_address


def _start(receivers, iso, expected, tag, head_takes_stdin, report, progress_for):
    """Start the relay program on every receiver; return {host: offset} of those that answered."""
    offsets = {}
    for index, rcv in enumerate(receivers):
        script = _relay_script(rcv.cfg, "receive", iso, expected, tag)
        on_progress = progress_for(rcv)
        try:
            if index == 0 and head_takes_stdin:
                rcv.leg = _open_data_leg(rcv, script, on_progress, report)
            else:
                rcv.leg = ParamikoLeg(rcv.remote, script, on_progress)
            offsets[rcv.cfg.name] = rcv.offset = int(rcv.leg.expect("OFFSET", timeout=HANDSHAKE_SECONDS)[1])
        except (LegError, OSError, EOFError) as exc:
            rcv.error = str(exc) or type(exc).__name__
            if rcv.leg is not None:
                rcv.leg.finish(5)
    return offsets


def _open_data_leg(rcv, script, on_progress, report) -> Leg:
    """The head's leg: OpenSSH when installed and it connects, else paramiko.

    The first answer line is left for the caller; OpenSSH's exit status 255
    (could not connect or authenticate) means "use paramiko", anything else
    is the relay program's own answer."""
    argv = None if os.environ.get("XCATFAB_ISO_PARAMIKO") else openssh_argv(rcv.remote, rcv.cfg)
    if argv:
        leg = OpenSSHLeg(rcv.remote, argv, script, on_progress)
        try:
            first = leg.lines.get(timeout=HANDSHAKE_SECONDS)
        except queue.Empty:
            first = None
        if first is not None:
            leg.lines.queue.appendleft(first)
            report.path = "openssh"
            return leg
        code = leg.finish(5)
        if code != 255:
            raise LegError(leg.stderr_tail() or f"the relay program ended (exit {code})")
        report.warnings.append(f"{rcv.cfg.name}: OpenSSH could not connect ({leg.stderr_tail() or 'exit 255'}); "
                               "sending through paramiko instead")
    fast = _gcm_connection(rcv)
    report.path = "paramiko, aes128-gcm" if fast else "paramiko"
    return ParamikoLeg(fast or rcv.remote, script, on_progress, owned=fast is not None)


def _gcm_connection(rcv) -> Optional[object]:
    """A second connection to the host that negotiates AES-GCM, or None.

    paramiko prefers aes-ctr with a separate HMAC, which costs it a third of
    its throughput; the connection xcatfab already has keeps its cipher, so
    the bytes get their own connection (same host, user, keys, known_hosts).
    """
    if rcv.connect_options is None or not _cpu_has_aes():
        return None
    import paramiko

    from .ssh import ConnectError, connect

    others = [c for c in paramiko.Transport._preferred_ciphers if "-gcm@" not in c]
    extra = dict(rcv.connect_options.extra_connect_kwargs or {}, disabled_algorithms={"ciphers": others})
    try:
        return connect(rcv.cfg, replace(rcv.connect_options, extra_connect_kwargs=extra))
    except (ConnectError, OSError, paramiko.SSHException):
        return None  # e.g. the server offers no AES-GCM: the open connection carries the bytes


def run_chain(receivers: list, iso: LocalIso, holder: Optional[Holder] = None,
              bwlimit: Optional[float] = None, out=None) -> ChainReport:
    """Send ``iso`` once through ``receivers`` (controller or ``holder`` -> r1 -> r2 ...).

    Fills each :class:`Receiver`'s ``sha256`` (verified and in place) or
    ``error``. Never raises for a host's failure.
    """
    report = ChainReport()
    started = time.monotonic()
    from_controller = holder is None
    expected = iso.sha256 or (holder.sha256 if holder else None) or "-"
    tag = holder.sha256 if holder else iso.tag
    BOARD.start(out)
    trackers = {}

    def progress_for(rcv):
        def update(position):
            tracker = trackers.get(rcv.cfg.name)  # made once the stream's start is known
            if tracker is not None:
                tracker(position)
        return update

    serve = None
    try:
        offsets = _start(receivers, iso, expected, tag, from_controller, report, progress_for)
        alive = [r for r in receivers if r.error is None]
        if not alive:
            return report
        stream = min(offsets[r.cfg.name] for r in alive)
        for rcv in alive:
            trackers[rcv.cfg.name] = BOARD.track(rcv.cfg.name, iso.name, iso.size, stream)
        # Listeners from the tail up, so each host's next one is listening when it is told about it.
        listeners = alive[1:] if from_controller else alive
        down, down_token = "-", "-"
        for rcv in reversed(listeners):
            token = token_source.token_hex(16)
            try:
                rcv.leg.send_line(f"CONFIG stream={stream} listen={_listen_address(rcv.cfg)} token={token} "
                                  f"down={down} down_token={down_token}")
                # (it hashes the part it keeps before it listens: give a long resumed part time)
                port = int(rcv.leg.expect("LISTEN", timeout=HANDSHAKE_SECONDS * 10)[1])
            except (LegError, OSError, ValueError) as exc:
                rcv.error = str(exc)
                continue
            down, down_token = f"{_listen_address(rcv.cfg)}:{port}", token
        if from_controller:
            head = alive[0]
            try:
                head.leg.send_line(f"CONFIG stream={stream} listen=- token=- down={down} down_token={down_token}")
                head.leg.expect("READY", timeout=HANDSHAKE_SECONDS * 10)
            except (LegError, OSError) as exc:
                head.error = str(exc)
                for rcv in alive[1:]:
                    if rcv.error is None:
                        rcv.error, rcv.relay_problem = f"relay head {head.cfg.name} failed", True
                return report
            streaming = time.monotonic()
            digest = _pump(head.leg, iso, stream, bwlimit, report)
            if digest is None:
                head.error = head.error or _final_error(head)
            else:
                SUMS.remember(iso, digest)
                report.sent = iso.size - stream
        else:
            streaming = time.monotonic()
            try:
                serve = ParamikoLeg(holder.remote, _relay_script(holder.cfg, "serve", iso, expected, tag))
                serve.expect("OFFSET", timeout=HANDSHAKE_SECONDS)
                serve.send_line(f"CONFIG stream={stream} listen=- token=- down={down} down_token={down_token}")
                serve.expect("DONE")
            except (LegError, OSError, EOFError) as exc:
                for rcv in alive:
                    if rcv.error is None:
                        rcv.error, rcv.relay_problem = f"{holder.cfg.name} could not serve it: {exc}", True
                return report
            digest = holder.sha256
        # Past a host that lost its next one, no host got the data: those get no END, so they give up
        # at once ("the controller went away", their parts kept) and deliver() sends to them itself.
        broken = f"{holder.cfg.name}: {serve.notes[0]}" if serve is not None and serve.notes else None
        for index, rcv in enumerate(alive):
            if rcv.error is not None or rcv.leg is None:
                continue
            if broken:
                rcv.error, rcv.relay_problem = broken, True
            elif digest is not None and not (from_controller and index == 0):
                try:
                    rcv.leg.send_line(f"END {digest}")  # (the head had it after its data)
                except LegError:
                    pass
            rcv.leg.close_input()
            if rcv.leg.notes and not broken:
                broken = f"{rcv.cfg.name}: {rcv.leg.notes[0]}"
        for rcv in alive:
            if rcv.error is not None:
                continue
            _collect(rcv, iso, expected, digest)
        report.streaming = time.monotonic() - streaming
        return report
    finally:
        for rcv in receivers:
            if rcv.leg is not None:
                rcv.leg.close_input()
                rcv.leg.finish(10)
        if serve is not None:
            serve.close_input()
            serve.finish(10)
        BOARD.stop()
        report.seconds = time.monotonic() - started


def _pump(leg: Leg, iso: LocalIso, stream: int, bwlimit: Optional[float], report: ChainReport) -> Optional[str]:
    """Hash ``[0, stream)``, then send ``[stream, size)`` while hashing it (one read); then END.

    Each block is read once into a buffer and hashed from it in a thread of
    its own (hashlib lets go of the GIL), so hashing one block overlaps
    sending the next; the OpenSSH leg takes the same block's pages straight
    from the page cache (splice) instead of a second copy through this
    process. A buffer is reused only once both are done with it. Returns the
    whole file's sha256, or None when the host stopped taking data.
    """
    digest = hashlib.sha256()
    buffers = [bytearray(CHUNK) for _ in range(4)]
    free: queue.Queue = queue.Queue()
    todo: queue.Queue = queue.Queue()
    for index in range(len(buffers)):
        free.put(index)

    def hasher() -> None:
        while True:
            item = todo.get()
            if item is None:
                return
            index, n = item
            digest.update(memoryview(buffers[index])[:n])
            free.put(index)

    thread = threading.Thread(target=hasher, daemon=True)
    thread.start()
    rate = bwlimit * MIB if bwlimit else None
    stopped = False
    try:
        with open(iso.path, "rb") as fh:
            position, sent, started = 0, 0, time.monotonic()
            while position < iso.size:
                index = free.get()
                view = memoryview(buffers[index])
                n = fh.readinto(view[:min(CHUNK, iso.size - position)])
                if not n:
                    raise StepFailed(f"{iso.path} shrank while it was being sent")
                # The kept prefix on the host is only hashed here, never sent.
                skip = max(0, min(n, stream - position))
                if skip < n:
                    try:
                        leg.send_from(fh.fileno(), position + skip, view[skip:n])
                    except LegError:
                        stopped = True
                        free.put(index)
                        break
                    sent += n - skip
                todo.put((index, n))
                position += n
                if rate and sent:
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
    finally:
        todo.put(None)
        thread.join()
    if stopped:
        return None
    value = digest.hexdigest()
    try:
        leg.send_line(f"END {value}")
    except LegError:
        return None
    return value


def _final_error(rcv: Receiver) -> str:
    try:
        rcv.leg.expect("DONE", timeout=30)
    except LegError as exc:
        return str(exc)
    return "the host stopped taking data"


def _collect(rcv: Receiver, iso: LocalIso, expected: str, digest: Optional[str]) -> None:
    """Read a receiver's verdict into it."""
    name = rcv.cfg.name
    try:
        fields = rcv.leg.expect("DONE", "MISMATCH")
    except LegError as exc:
        text = str(exc)
        rcv.error = f"{name}: {iso.name}: {text}"
        rcv.relay_problem = text.startswith(("upstream", "no upstream", "the controller went away",
                                             "the stream ended"))
        return
    if fields[0] == "DONE":
        rcv.sha256 = fields[1]
        return
    got = fields[1].partition("=")[2]
    want = fields[2].partition("=")[2]
    if expected != "-" and digest is not None and digest != expected:
        rcv.error = (f"{name}: {iso.name}: sha256 mismatch: got {got}, expected {expected} ({iso.origin}); "
                     f"the local file {iso.path} hashes to {digest}{' as well' if got == digest else ''}; "
                     f"nothing left under {iso.name}")
    else:
        source = iso.origin if expected != "-" and want == expected else "sum of the bytes sent"
        rcv.error = (f"{name}: {iso.name}: sha256 mismatch: got {got}, expected {want} ({source}); "
                     f"nothing left under {iso.name}")


# ============================================== one ISO to one or many hosts
def _announce(receivers, iso: LocalIso, report: ChainReport) -> None:
    for rcv in receivers:
        if rcv.sha256 is None or rcv.say is None:
            continue
        rate = (iso.size - rcv.offset) / max(report.streaming or report.seconds, 1e-6) / MIB
        resumed = f", resumed after {_mib(rcv.offset)}" if rcv.offset else ""
        if rcv.upstream == "the controller":
            how = f"{_mib(report.sent)} sent from the controller via {report.path}"
        else:
            how = f"relayed from {rcv.upstream}"
        rcv.say(f"staged {iso.name} ({_mib(iso.size)}) in {report.seconds:.1f}s (data {rate:.0f} MiB/s), "
                f"{how}{resumed}; sha256 {rcv.sha256} verified")


def deliver(receivers: list, iso: LocalIso, bwlimit: Optional[float] = None, out=None,
            holder: Optional[Holder] = None) -> list:
    """Stage ``iso`` on every receiver with one chain; then fan out from the controller to those it missed.

    Returns the warnings (each also printed for the host it concerns, when it happens).
    """
    warnings = []

    def warn(text: str) -> None:
        warnings.append(text)
        if out is not None:
            host, _sep, rest = text.partition(": ")
            out.line(host, "warning: " + rest)

    previous = holder.cfg.name if holder else "the controller"
    for rcv in receivers:
        rcv.upstream, previous = previous, rcv.cfg.name
    report = run_chain(receivers, iso, holder, bwlimit, out)
    for text in report.warnings:
        warn(text)
    _announce(receivers, iso, report)
    # A host the chain did not serve is sent to directly: from a holder, any failure may be the holder's.
    retry = [r for r in receivers if r.error and (r.relay_problem or holder is not None)]
    for rcv in retry:
        source = holder.cfg.name if holder else "the relay"
        reason = rcv.error.removeprefix(f"{rcv.cfg.name}: {iso.name}: ")
        warn(f"{rcv.cfg.name}: {iso.name} did not arrive through {source} ({reason}); sending it from the controller")
        rcv.error, rcv.relay_problem, rcv.leg, rcv.upstream = None, False, None, "the controller"
        rcv.sha256, rcv.offset = None, 0
        single = run_chain([rcv], iso, None, bwlimit, out)
        for text in single.warnings:
            warn(text)
        _announce([rcv], iso, single)
    return warnings


class Sources:
    """Hosts of this process holding a verified ISO, so later hosts pull it from them (deploy of many hosts).

    ``turn(key)`` lets one host at a time stage a given ISO, so hosts deployed
    in parallel wait for the first copy instead of each taking one from the
    controller.
    """

    def __init__(self):
        self.cond = threading.Condition()
        self.holders: dict = {}  # key -> [(cfg, sha256)]
        self.busy: set = set()

    @contextmanager
    def turn(self, key: str):
        with self.cond:
            while key in self.busy:
                self.cond.wait()
            self.busy.add(key)
        try:
            yield
        finally:
            with self.cond:
                self.busy.discard(key)
                self.cond.notify_all()

    def holding(self, key: str, exclude: str) -> list:
        with self.cond:
            return [(cfg, sha) for cfg, sha in self.holders.get(key, []) if cfg.name != exclude]

    def add(self, key: str, cfg, sha256: str) -> None:
        with self.cond:
            entries = [e for e in self.holders.get(key, []) if e[0].name != cfg.name]
            self.holders[key] = entries + [(cfg, sha256)]


SOURCES = Sources()


def _stage_from_peers(run, me: Receiver, iso: LocalIso, opts: IsoOptions) -> None:
    """Deploy path: pull from a host of this run that has the ISO, else from the controller."""
    connect_options = getattr(run.options, "connect", None)
    with SOURCES.turn(iso.key):
        for peer_cfg, digest in SOURCES.holding(iso.key, exclude=run.cfg.name):
            if (iso.sha256 and digest != iso.sha256) or connect_options is None:
                continue
            from .ssh import ConnectError, connect

            try:
                peer = connect(peer_cfg, connect_options)
            except ConnectError as exc:
                run.say(f"warning: cannot reach {peer_cfg.name} to pull {iso.name} from it: {exc.message}")
                continue
            run.shared["connections"] = run.shared.get("connections", 1) + 1
            try:
                deliver([me], iso, opts.bwlimit, run.out, Holder(peer_cfg, peer, digest))
            finally:
                peer.close()
            break
        else:
            deliver([me], iso, opts.bwlimit, run.out)
        if me.sha256:
            SOURCES.add(iso.key, run.cfg, me.sha256)


def stage(run, iso: LocalIso, opts: IsoOptions) -> str:
    """Stage one ISO on the run's host (through the task's relay, a peer, or from the controller)."""
    me = Receiver(run.cfg, run.remote, say=run.say, connect_options=getattr(run.options, "connect", None))
    if opts.relay is not None:
        opts.relay.stage(me, iso)
    else:
        _stage_from_peers(run, me, iso, opts)
    if me.error or not me.sha256:
        error = me.error or f"{run.cfg.name}: {iso.name}: not staged"
        raise StepFailed(error if error.startswith(run.cfg.name + ":") else f"{run.cfg.name}: {iso.name}: {error}")
    return me.sha256


class RelayGroup:
    """The hosts of one ``fab iso`` run, meeting per ISO so the controller sends it once down a chain.

    Each host's step declares the ISOs it may stage, then offers itself for
    each (in one global order); when every host that may need an ISO has
    offered, declined or left, the last one to arrive runs the chain for all
    of them, in the order the hosts were given.
    """

    def __init__(self, hosts, bwlimit: Optional[float] = None, out=None):
        self.order = list(hosts)
        self.bwlimit, self.out = bwlimit, out
        self.cond = threading.Condition()
        self.needs: dict = {}
        self.left: set = set()
        self.offers: dict = {}  # key -> {host: Receiver}
        self.served: dict = {}  # key -> set of hosts the chain ran for
        self.running: set = set()

    def declare(self, host: str, keys) -> None:
        with self.cond:
            self.needs[host] = set(keys)
            self.cond.notify_all()

    def skip(self, host: str, key: str) -> None:
        with self.cond:
            self.needs.setdefault(host, set()).discard(key)
            self.cond.notify_all()

    def leave(self, host: str) -> None:
        with self.cond:
            self.left.add(host)
            self.cond.notify_all()

    def _waiting_for(self, key: str) -> list:
        offered = self.offers.get(key, {})
        return [h for h in self.order if h not in self.left and h not in offered
                and (h not in self.needs or key in self.needs[h])]

    def stage(self, me: Receiver, iso: LocalIso) -> None:
        host, key = me.cfg.name, iso.key
        with self.cond:
            self.offers.setdefault(key, {})[host] = me
            self.cond.notify_all()
            while True:
                if host in self.served.get(key, set()):
                    return
                if key not in self.running and not self._waiting_for(key):
                    self.running.add(key)
                    batch = [self.offers[key][h] for h in self.order if h in self.offers[key]]
                    break
                self.cond.wait()
        try:
            deliver(batch, iso, self.bwlimit, self.out)
        finally:
            with self.cond:
                self.served.setdefault(key, set()).update(r.cfg.name for r in batch)
                self.offers[key] = {}
                self.running.discard(key)
                self.cond.notify_all()


# ================================================================ the task
_TASK_DONE: set = set()

ISO_HELP = {
    "src": "local ISO path or glob (repeatable); default: the inventory's isos",
    "checksums": "a SHA256SUMS file (sha256sum format) the ISOs must match",
    "inventory": "inventory file (default: $XCATFAB_INVENTORY or ./hosts.ini)",
    "set": "override an inventory key for this run, KEY=VALUE (repeatable)",
    "plan": "connect and read facts, print what would change, change nothing",
    "accept_new_host_keys": "record unknown host keys in known_hosts (a changed key is still refused)",
    "copycds": "run copycds after staging (--no-copycds: only stage)",
    "bwlimit": "send at most this many MiB/s from the controller",
}


@task(help=ISO_HELP, iterable=["set", "src"])
def iso(c, src=None, checksums=None, inventory=None, set=None, plan=False, accept_new_host_keys=False,
        copycds=True, bwlimit=None):
    """Stage ISOs into each host's iso_dir (verified, resumable, relayed host to host), then copycds.

    With several -H hosts, the controller sends each ISO once: the hosts
    relay it down a chain, each writing while forwarding, each verifying the
    sha256. Local files and checksums are checked before anything connects.
    """
    from . import bad_input_exits
    from .deploy import DeployOptions, run_host
    from .remote_tasks import cli_host_configs, connect_options, this_host
    from .report import Output, print_recap

    name = this_host(c)
    if name in _TASK_DONE:
        return  # fab calls the task once per -H host; the first call served them all
    configs = cli_host_configs(c, inventory, set)
    names = [cfg.name for cfg in configs]
    with bad_input_exits():
        limit = _parse_bwlimit(bwlimit)
        chosen, validated = {}, {}
        for cfg in configs:
            specs = resolve_specs(cfg.isos, src, checksums)
            where = "--src" if src else cfg.where("isos")
            for local in validate_local(specs, where=where, checksums=checksums):
                validated.setdefault(local.path, local)
                chosen.setdefault(cfg.name, []).append(validated[local.path])
        if not validated:
            raise InventoryError("--src", None, "no ISO to stage: give --src PATH or list isos in the inventory")
    options = DeployOptions(connect=connect_options(c, accept_new_host_keys), plan_only=plan)
    out = Output()
    relay = RelayGroup([cfg.name for cfg in configs], limit, out) if len(configs) > 1 and not plan else None
    per_host = {cfg.name: IsoOptions(isos=chosen.get(cfg.name, []), copycds=copycds, bwlimit=limit, relay=relay)
                for cfg in configs}
    reports: dict = {}

    def one(cfg) -> None:
        try:
            reports[cfg.name] = run_host(cfg, ["iso"], options, out)
        finally:
            if relay is not None:
                relay.leave(cfg.name)

    with session(per_host):
        threads = [threading.Thread(target=one, args=(cfg,), daemon=True) for cfg in configs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    _TASK_DONE.update(names)
    ordered = [reports[cfg.name] for cfg in configs if cfg.name in reports]
    print_recap(ordered, out, table=len(ordered) > 1)
    if len(ordered) < len(configs) or any(r.failed for r in ordered):
        raise Exit(code=1)


def _parse_bwlimit(value) -> Optional[float]:
    if value in (None, ""):
        return None
    try:
        limit = float(value)
    except (TypeError, ValueError):
        limit = -1.0
    if limit <= 0:
        raise InventoryError("--bwlimit", None, f"{value!r} is not a positive number of MiB/s")
    return limit
