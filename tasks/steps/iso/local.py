"""The ISOs on the controller: which ones a run stages, checked before anything connects.

``--src`` paths or globs (or the inventory's ``isos``), with the sums from
the inventory or a ``--checksums`` file (sha256sum or BSD format); every
local file is checked (a readable, non-empty regular file with a name that is
safe on a host) and its sha256 is known once hashed: sums are cached by the
file's identity (path, size, mtime, inode) in the controller cache, so a
converged run never reads a local ISO again. A sum the user gives (inventory
``sha256=`` or ``--checksums``) is compared with the local file's before any
host is contacted: a wrong one is bad input, and never costs a host the
verified copy it holds.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import threading
from dataclasses import dataclass, replace
from typing import Optional

from ...runtime.cache import Cache
from ...runtime.config import IsoSpec
from ...runtime.errors import BadInput

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=@,~-]*")
SHA256 = re.compile(r"[0-9a-fA-F]{64}")
MIB = 1 << 20
CHUNK = 1 << 20


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
    ``dir/x.iso``). Raises :class:`BadInput` naming ``file:line``.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not a text file"
        raise BadInput(path, None, f"cannot read checksums file: {why}") from None
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
        if not SHA256.fullmatch(digest) or not name.strip():
            raise BadInput(f"{path}:{lineno}", None,
                                 f"expected '<sha256>  <file>' (sha256sum format), got {raw.strip()[:60]!r}")
        name = os.path.basename(name.strip())
        digest = digest.lower()
        if sums.get(name, digest) != digest:
            raise BadInput(f"{path}:{lineno}", None, f"{name} is listed twice with different sums")
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
                raise BadInput(where, None, f"{pattern}: matches no file")
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
                raise BadInput(checksums, None, f"{spec.name} is not listed")
            if spec.sha256 and spec.sha256 != listed:
                raise BadInput(checksums, None, f"{spec.name}: sha256 {listed} here but "
                                                      f"{spec.sha256} in the inventory")
            resolved.append(replace(spec, sha256=listed))
        specs = resolved
    return specs


def validate_local(specs, where: str = "isos", checksums: Optional[str] = None) -> list[LocalIso]:
    """Check every local ISO (a readable, non-empty regular file with a usable name) before any connection."""
    result, names = [], {}
    for spec in specs:
        name = os.path.basename(spec.path)
        if name in names:
            raise BadInput(where, None, f"{spec.path} and {names[name]} would both be {name} on the host")
        names[name] = spec.path
        result.append(_local(spec, where, checksums))
    return result


def _local(spec: IsoSpec, where: str, checksums: Optional[str]) -> LocalIso:
    """One spec as a :class:`LocalIso`, or :class:`BadInput` naming the file and what is wrong with it."""
    path = spec.path
    name = os.path.basename(path)
    if not NAME_RE.fullmatch(name) or name.endswith(".part"):
        raise BadInput(where, None, f"{path}: file name {name!r} must be letters, digits and "
                                    "._+=@,~- only, and not end in .part")
    st = _readable(path, where)
    if spec.sha256 and not SHA256.fullmatch(spec.sha256):
        raise BadInput(where, None, f"{path}: sha256 must be 64 hex digits")
    for label, value in (("distro", spec.distro), ("arch", spec.arch)):
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
            raise BadInput(where, None, f"{path}: {label} {value!r} is not a valid name")
    if spec.sha256:
        digest, origin = spec.sha256.lower(), f"checksums file {checksums}" if checksums else "inventory"
        actual = file_sum(path, st.st_size, st.st_mtime_ns, st.st_ino)
        if actual != digest:
            # Before anything connects: a wrong sum never reaches a host (nor costs one a verified file).
            said = "the checksums file" if checksums else "the inventory"
            raise BadInput(checksums or where, None, f"{path}: sha256 is {actual}, not {digest} as {said} "
                                                     "says: wrong sum or wrong file; nothing was sent")
    else:
        digest = cached_sum(path, st.st_size, st.st_mtime_ns, st.st_ino)
        origin = "controller cache" if digest else ""
    return LocalIso(path, name, st.st_size, st.st_mtime_ns, st.st_ino, digest, origin, spec.distro, spec.arch)


def _readable(path: str, where: str) -> os.stat_result:
    """``path``'s stat, when it is a readable, non-empty regular file."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise BadInput(where, None, f"{path}: {exc.strerror.lower()}") from None
    if not os.path.isfile(path):
        raise BadInput(where, None, f"{path}: not a regular file")
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise BadInput(where, None, f"{path}: cannot read it: {exc.strerror.lower()}") from None
    if st.st_size == 0:
        raise BadInput(where, None, f"{path}: empty file")
    return st


#: sha256 of local ISO files by identity (see tasks/runtime/cache.py).
SUMS = Cache("iso-sums", max_entries=4096)


def _sum_key(path: str) -> str:
    return hashlib.sha256(os.path.realpath(path).encode()).hexdigest()


def cached_sum(path: str, size: int, mtime_ns: int, ino: int) -> Optional[str]:
    """The cached sum of ``path`` when the file is still what was hashed (same size, mtime, inode)."""
    entry = SUMS.get_json(_sum_key(path))
    if isinstance(entry, dict) and entry.get("id") == [size, mtime_ns, ino]:
        return entry.get("sha256")
    return None


def remember_sum(iso: "LocalIso", digest: str) -> None:
    """Record the sum of a local ISO (computed while sending it, or hashing it here)."""
    _remember(iso.path, iso.size, iso.mtime_ns, iso.ino, digest)


def _remember(path: str, size: int, mtime_ns: int, ino: int, digest: str) -> None:
    SUMS.put_json(_sum_key(path), {"path": os.path.realpath(path), "id": [size, mtime_ns, ino], "sha256": digest})


#: One local file hashed at a time: hosts of one run asking for the same new file wait for one reading.
_HASHING = threading.Lock()


def file_sum(path: str, size: int, mtime_ns: int, ino: int) -> str:
    """The sha256 of the local file ``path`` (with that identity): cached, else hashed here once."""
    with _HASHING:
        cached = cached_sum(path, size, mtime_ns, ino)
        if cached:
            return cached
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(CHUNK), b""):
                digest.update(block)
        value = digest.hexdigest()
        _remember(path, size, mtime_ns, ino, value)
        return value


def local_sum(iso: LocalIso) -> str:
    """The ISO's sha256: the known one, the cached one, else hashed here (and cached)."""
    if iso.sha256:
        return iso.sha256
    return file_sum(iso.path, iso.size, iso.mtime_ns, iso.ino)


def mib(n: int) -> str:
    """A byte count in MiB, for messages."""
    return f"{n / MIB:.1f} MiB"


def parse_bwlimit(value) -> Optional[float]:
    """``--bwlimit``: MiB/s the controller sends at most (None: no limit)."""
    if value in (None, ""):
        return None
    try:
        limit = float(value)
    except (TypeError, ValueError):
        limit = -1.0
    if limit <= 0:
        raise BadInput("--bwlimit", None, f"{value!r} is not a positive number of MiB/s")
    return limit
