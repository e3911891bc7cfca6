"""The VM lab's base image: one Debian 12 root disk, kernel and initrd, built once and cached.

``debootstrap --variant=minbase bookworm`` with systemd, udev, dbus, openssh-server,
the Debian kernel, netplan.io, iproute2, sudo, python3, kmod, iptables and
ca-certificates; configured in a chroot (the sudo user, systemd-networkd, sshd
and the first-boot seed unit enabled; no host keys, no machine id, no docker);
turned into a raw ext4 image with ``mkfs.ext4 -d`` (no loop mount), with the
kernel and initrd copied out beside it for direct kernel boot.

The same build fetches, with the base's own apt (in the chroot), docker.io and
every package it needs that the base lacks, so the lab's Debian repository
holds exactly what ``apt-get install docker.io`` on a bare VM asks for.

Everything is keyed by a hash of the recipe (package lists, the templates that
go into the image, :data:`BUILDER_VERSION`), in ``CACHE/vmlab/base-<hash>``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ._shared import DEBIAN_MIRROR, DEBIAN_SUITE, LabError, _remove_tree, _run, _write, cache_dir, render
from .config import ADMIN_USER, DEBIAN_REPO, repo_url

#: Bump when the build steps change in a way the recipe does not show.
BUILDER_VERSION = 1
#: What debootstrap installs besides minbase (lab-facts: about 90 s, about 900 MB).
BASE_PACKAGES = (
    "systemd", "systemd-sysv", "udev", "dbus", "openssh-server", "linux-image-amd64", "netplan.io",
    "iproute2", "sudo", "python3", "kmod", "iptables", "ca-certificates",
)
#: Fetched into the lab's Debian repository (with their whole closure), never installed in the base.
REPO_PACKAGES = ("docker.io",)
#: Size of the sparse root disk; each VM's overlay grows only by what it writes.
DISK_SIZE = "8G"
#: Where the guest keeps the lab repository's signing key (the seed puts it there).
KEYRING = "/etc/apt/keyrings/xcatfab-vmlab.asc"
SEED_SCRIPT = "/usr/local/sbin/xcatfab-vmlab-seed"
SEED_STAMP = "/var/lib/xcatfab-vmlab/seeded"
ADMIN_GECOS = "xcatfab VM lab sudo user"
TEMPLATE_DIR = "vmlab/base"

#: Files put into the base tree: path in the guest -> (template, mode).
BASE_FILES = {
    "etc/fstab": ("fstab.j2", 0o644),
    "etc/ssh/sshd_config.d/xcatfab-vmlab.conf": ("sshd_config.j2", 0o644),
    "etc/systemd/journald.conf.d/xcatfab-vmlab.conf": ("journald.conf.j2", 0o644),
    "etc/systemd/system/xcatfab-vmlab-seed.service": ("xcatfab-vmlab-seed.service.j2", 0o644),
    SEED_SCRIPT.lstrip("/"): ("xcatfab-vmlab-seed.sh.j2", 0o755),
}


@dataclass(frozen=True)
class BaseImage:
    """A built base: the raw root disk, kernel, initrd and the fetched .debs, in one directory."""

    dir: Path

    @property
    def disk(self) -> Path:
        return self.dir / "rootfs.img"

    @property
    def kernel(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.img"

    @property
    def debs(self) -> Path:
        """The .debs of docker.io's closure (what a bare VM lacks for it)."""
        return self.dir / "debs"

    @property
    def recipe_file(self) -> Path:
        """Written last: a directory without it is an interrupted build."""
        return self.dir / "recipe.json"

    @property
    def kernel_version(self) -> str:
        """The guest kernel's release (``6.1.0-NN-amd64``), from the build record."""
        return json.loads(self.recipe_file.read_text()).get("kernel_release", "")

    def complete(self) -> bool:
        """Whether every part of the build is there."""
        return all(p.exists() for p in (self.recipe_file, self.disk, self.kernel, self.initrd, self.debs))


def _template_ctx() -> dict:
    """Variables of the base's templates (the same for every build of one recipe)."""
    return {"admin_user": ADMIN_USER, "admin_gecos": ADMIN_GECOS, "keyring": KEYRING,
            "script": SEED_SCRIPT, "stamp": SEED_STAMP, "mirror": DEBIAN_MIRROR, "suite": DEBIAN_SUITE,
            "packages": list(REPO_PACKAGES), "url": f"{repo_url()}/{DEBIAN_REPO}"}


def recipe() -> dict:
    """What a base is made from: any change to it makes a new base (and a new cache entry)."""
    from ._shared import PROJECT_DIR

    template_root = PROJECT_DIR / "templates" / TEMPLATE_DIR
    templates = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in sorted(template_root.glob("*.j2"))}
    return {"builder_version": BUILDER_VERSION, "suite": DEBIAN_SUITE, "variant": "minbase",
            "mirror": DEBIAN_MIRROR, "include": sorted(BASE_PACKAGES), "repo_packages": sorted(REPO_PACKAGES),
            "disk_size": DISK_SIZE, "context": _template_ctx(), "templates": templates}


def recipe_hash() -> str:
    """Short content hash of :func:`recipe`."""
    return hashlib.sha256(json.dumps(recipe(), sort_keys=True).encode()).hexdigest()[:16]


def cache_root() -> Path:
    """``CACHE/vmlab``: bases, the KVM verdict (kept by ``vmlab.down``)."""
    return cache_dir() / "vmlab"


def current_base() -> BaseImage:
    """The base for the current recipe (built or not)."""
    return BaseImage(cache_root() / f"base-{recipe_hash()}")


def ensure_base(log: Callable[[str], None] = print) -> BaseImage:
    """The cached base for the current recipe, built first when missing or incomplete."""
    base = current_base()
    if base.complete():
        return base
    started = time.monotonic()
    log(f"building the VM base image {base.dir.name} (once; cached in {base.dir.parent})")
    _remove_tree(base.dir)
    base.dir.mkdir(parents=True)
    tree = base.dir / "tree"
    try:
        _debootstrap(tree, log)
        _configure(tree)
        _fetch_debs(tree, base.debs, log)
        _write_lab_sources(tree)
        kernel_release = _extract_boot_files(tree, base)
        _run(["truncate", "-s", DISK_SIZE, base.disk])
        _run(["mkfs.ext4", "-q", "-F", "-L", "xcfvmroot", "-d", tree, base.disk], timeout=900)
    except BaseException:
        _remove_tree(base.dir)
        raise
    _remove_tree(tree)
    elapsed = round(time.monotonic() - started, 1)
    _write(base.recipe_file, json.dumps({**recipe(), "kernel_release": kernel_release,
                                         "build_seconds": elapsed}, indent=1))
    _prune_other_bases(base)
    log(f"VM base image ready in {elapsed:.0f}s: {base.dir}")
    return base


def _debootstrap(tree: Path, log: Callable[[str], None]) -> None:
    log(f"debootstrap {DEBIAN_SUITE} (minbase + systemd, kernel, sshd, netplan) into {tree}")
    _run(["debootstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES),
          DEBIAN_SUITE, tree, DEBIAN_MIRROR], timeout=1800)


def _configure(tree: Path) -> None:
    """Put the base's files in place and run the configure script in a chroot."""
    ctx = _template_ctx()
    for rel, (template, mode) in BASE_FILES.items():
        _write(tree / rel, render(f"{TEMPLATE_DIR}/{template}", **ctx), mode=mode)
    _run(["chroot", tree, "/bin/sh", "-s"], input=render(f"{TEMPLATE_DIR}/configure.sh.j2", **ctx),
         env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, timeout=300)


def _fetch_debs(tree: Path, out: Path, log: Callable[[str], None]) -> None:
    """docker.io's closure, fetched by the base's own apt in a chroot, moved to ``out``."""
    log(f"fetching {' '.join(REPO_PACKAGES)} and its dependencies with the base's apt")
    resolv = tree / "etc" / "resolv.conf"
    saved = resolv.read_bytes() if resolv.is_file() and not resolv.is_symlink() else None
    resolv.unlink(missing_ok=True)
    shutil.copyfile("/etc/resolv.conf", resolv)
    try:
        _run(["chroot", tree, "/bin/sh", "-s"], input=render(f"{TEMPLATE_DIR}/fetch-debs.sh.j2", **_template_ctx()),
             env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, timeout=1800)
    finally:
        resolv.unlink(missing_ok=True)
        if saved is not None:
            resolv.write_bytes(saved)
    out.mkdir(parents=True, exist_ok=True)
    archives = tree / "var" / "cache" / "apt" / "archives"
    debs = sorted(archives.glob("*.deb"))
    if not any(d.name.startswith("docker.io_") for d in debs):
        raise LabError(f"apt fetched no docker.io package into {archives}")
    for deb in debs:
        shutil.move(str(deb), out / deb.name)


def _write_lab_sources(tree: Path) -> None:
    """The guest's apt sources: the lab's repository and nothing else."""
    _write(tree / "etc" / "apt" / "sources.list", "")
    for old in (tree / "etc" / "apt" / "sources.list.d").glob("*"):
        old.unlink()
    _write(tree / "etc" / "apt" / "sources.list.d" / "xcatfab-vmlab.list",
           render(f"{TEMPLATE_DIR}/sources.list.j2", **_template_ctx()))


def _extract_boot_files(tree: Path, base: BaseImage) -> str:
    """Copy the (only) kernel and its initrd out of the tree; return the kernel release."""
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise LabError(f"expected one kernel in {tree / 'boot'}, found {[k.name for k in kernels]}")
    release = kernels[0].name[len("vmlinuz-"):]
    initrd = tree / "boot" / f"initrd.img-{release}"
    if not initrd.exists():
        raise LabError(f"no initrd for kernel {release} in {tree / 'boot'}")
    shutil.copyfile(kernels[0], base.kernel)
    shutil.copyfile(initrd, base.initrd)
    return release


def _prune_other_bases(keep: BaseImage) -> None:
    """Remove bases of older recipes (each is about 1 GB of disk)."""
    for other in cache_root().glob("base-*"):
        if other != keep.dir and other.is_dir():
            _remove_tree(other)


def base_size_bytes(base: BaseImage) -> int:
    """Bytes the base really takes on disk (the raw image is sparse)."""
    return sum(os.stat(p).st_blocks * 512 for p in base.dir.rglob("*") if p.is_file())
