"""The ``iso`` fact fragment (templates/host/facts/iso.sh.j2): what a host holds.

The files in ``iso_dir`` (size, mtime, inode), xcatfab's record of each one
it staged (``state_dir/iso/NAME.sha256``: the sha256 computed while the file
was received, with the size, mtime and inode it had then, and the boot id
until the file is known to be on disk: such a record holds in that boot
only), resumable
``.part`` files, and what copycds copied (``state_dir/iso/copied/SHA256``
with the distro and arch, checked against ``data_dir/install/D/A`` and the
osdistro table). No docker exec, no hashing: a converged run reads no ISO —
unless the run asked for ``--verify deep``: then the fragment also hashes every
file it holds a record of (section ``iso.hashed``), and a record counts only
when that fresh hash agrees with it. This module is the fragment's one parser.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .local import SHA256, LocalIso


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
    #: The boot the record holds in, while the file may not be on disk yet (None: it is).
    boot: Optional[str] = None


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
        parts = line.split()
        if len(parts) not in (5, 6) or not parts[-1].endswith(".sha256") or not SHA256.fullmatch(parts[0]):
            continue
        try:
            boot = parts[4] if len(parts) == 6 else None
            record = Record(parts[0], int(parts[1]), int(parts[2]), int(parts[3]), boot)
        except ValueError:
            continue
        records[parts[-1][:-len(".sha256")]] = record
    return records


def boot_id(facts) -> Optional[str]:
    """The host's boot id (None: unknown)."""
    text = facts.text("iso.boot").strip()
    return text or None


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
        if len(fields) == 5 and SHA256.fullmatch(fields[0]):
            media[fields[0]] = Copied(fields[1], fields[2], fields[3] == "yes", fields[4])
    return media


def hashed_sums(facts) -> Optional[dict]:
    """``--verify deep``: the sha256 the fact script just computed, by file name (None: not asked)."""
    if "iso.hashed" not in facts:
        return None
    sums = {}
    for line in facts.lines("iso.hashed"):
        digest, _sep, name = line.partition(" ")
        if SHA256.fullmatch(digest) and name:
            sums[name] = digest
    return sums


def staged_sum(facts, name: str) -> Optional[str]:
    """The sha256 of ``iso_dir/name`` per xcatfab's record, when the record still describes the file.

    Under ``--verify deep`` the file was hashed again by the fact script: the fresh
    sum is the file's sum (a copy changed in place, size, mtime and inode kept, shows).
    """
    found = host_files(facts).get(name)
    record = host_records(facts).get(name)
    if not found or not record or (record.size, record.mtime_ns, record.ino) != (found.size, found.mtime_ns, found.ino):
        return None
    fresh = hashed_sums(facts)
    if fresh is not None:
        return fresh.get(name)  # deep: the file's sum now, whatever the record says
    if record.boot is not None and record.boot != boot_id(facts):
        return None  # written before a restart, and maybe never put on disk: hash the file again
    return record.sha256


def is_copied(copied: Optional[Copied], iso: LocalIso) -> bool:
    """Media counts as copied when copycds' tree and osdistro are still there as the inventory wants them."""
    if copied is None or not copied.install or copied.osdistro == "no":
        return False
    return (iso.distro in (None, copied.distro)) and (iso.arch in (None, copied.arch))
