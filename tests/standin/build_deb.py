#!/usr/bin/env python3
"""Build the xCAT TEST STAND-IN package (NOT xCAT).

    python3 tests/standin/build_deb.py OUTDIR [--name NAME] [--version VERSION]

writes ``OUTDIR/<name>_<version>_all.deb`` and prints its path.  The name is
``xcat`` unless --name gives another (``xcat-site``: an air-gapped site's own
package name); such a package declares ``Provides: xcat`` and ``Conflicts:
xcat``.  The version is PACKAGE_VERSION unless --version gives another; it
changes the package's Version field only.  The build is
reproducible: every file gets a fixed mode and mtime, owners are root:root
(``dpkg-deb --root-owner-group``), the archive members are dated
SOURCE_DATE_EPOCH and compressed with gzip (deterministic, and fast).

Layout of the sources (this directory):

    root/       the installed file tree (/etc/init.d/xcatd, /opt/xcat/...)
    debian/     maintainer scripts (postinst, prerm, postrm)
    README.md   installed as /opt/xcat/share/doc/standin/README.md

The command symlinks (/opt/xcat/bin/lsdef -> xcatclient, ...) and the
version come from ``xcatstandin.py`` (BIN_COMMANDS, SBIN_COMMANDS,
PACKAGE_VERSION), so the module is the single source of truth.
Standard library only, plus ``dpkg-deb``.
"""

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_ROOT = os.path.join(HERE, "root")
LIBDIR = os.path.join(SOURCE_ROOT, "opt", "xcat", "lib", "standin")
MAINTAINER_SCRIPTS = ("postinst", "prerm", "postrm")
CONFFILES = ("/etc/init.d/xcatd", "/etc/profile.d/xcat.sh")
# 2024-11-13, the day xCAT 2.17.0 was released: the date of every file.
SOURCE_DATE_EPOCH = 1731456000

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, LIBDIR)
import xcatstandin  # noqa: E402  (stdlib-only module; gives version + commands)

DEFAULT_NAME = "xcat"
# Debian policy 5.6.1 (Package) and 5.6.12 (Version).
NAME_RE = re.compile(r"[a-z0-9][a-z0-9+.-]+")
VERSION_RE = re.compile(r"(?:[0-9]+:)?[0-9][A-Za-z0-9.+~]*(?:-[A-Za-z0-9.+~]+)*")

CONTROL = """\
Package: {name}
Version: {version}
Architecture: all
Maintainer: xcatfab developers <xcatfab@localhost.invalid>
Installed-Size: {size}
Depends: python3-minimal, iproute2, mount, xorriso
{relations}Section: admin
Priority: optional
Homepage: https://xcat.org/ (this package is NOT xCAT)
Description: TEST STAND-IN for xCAT -- this is NOT xCAT
 This package exists only so that xcatfab can be tested without
 downloading xCAT.  It imitates a small part of xCAT {xcat}'s
 command-line behaviour -- lsdef/mkdef/chdef/rmdef, tabdump/chtab/
 tabprune/tabrestore, makenetworks, copycds, lsxcatd and an xcatd that
 only listens on TCP 3001/3002 -- on top of CSV tables in /etc/xcat.
 .
 It cannot provision, power or manage anything.  Never install it on a
 real management node.
"""


def _copy_file(src, dst):
    shutil.copyfile(src, dst)
    executable = os.stat(src).st_mode & 0o111
    os.chmod(dst, 0o755 if executable else 0o644)


def control_text(name, version, size_kib):
    """DEBIAN/control; a package not named xcat stands in for xcat (Provides, Conflicts)."""
    relations = ""
    if name != DEFAULT_NAME:
        relations = "Provides: {0}\nConflicts: {0}\n".format(DEFAULT_NAME)
    return CONTROL.format(name=name, version=version, relations=relations,
                          xcat=xcatstandin.XCAT_VERSION, size=size_kib)


def check_name_version(name, version):
    """Raise ValueError unless name and version are valid Debian ones."""
    if not NAME_RE.fullmatch(name):
        raise ValueError("invalid package name %r (Debian: [a-z0-9][a-z0-9+.-]+)" % name)
    if not VERSION_RE.fullmatch(version):
        raise ValueError("invalid package version %r (Debian: [epoch:]upstream[-revision], "
                         "upstream starting with a digit)" % version)


def stage(dest, package=DEFAULT_NAME, version=xcatstandin.PACKAGE_VERSION):
    """Populate dest with the package tree (DEBIAN/ included); return dest."""
    for top, dirs, files in os.walk(SOURCE_ROOT):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        rel = os.path.relpath(top, SOURCE_ROOT)
        out = dest if rel == "." else os.path.join(dest, rel)
        os.makedirs(out, exist_ok=True)
        for name in sorted(files):
            if name.endswith((".pyc", ".pyo")) or name.startswith("."):
                continue
            _copy_file(os.path.join(top, name), os.path.join(out, name))

    doc = os.path.join(dest, "opt", "xcat", "share", "doc", "standin")
    os.makedirs(doc, exist_ok=True)
    _copy_file(os.path.join(HERE, "README.md"), os.path.join(doc, "README.md"))

    bindir = os.path.join(dest, "opt", "xcat", "bin")
    sbindir = os.path.join(dest, "opt", "xcat", "sbin")
    os.makedirs(sbindir, exist_ok=True)
    for command in xcatstandin.BIN_COMMANDS:
        os.symlink("xcatclient", os.path.join(bindir, command))
    for command in xcatstandin.SBIN_COMMANDS:
        os.symlink("../bin/xcatclient", os.path.join(sbindir, command))

    debian = os.path.join(dest, "DEBIAN")
    os.makedirs(debian)
    for script in MAINTAINER_SCRIPTS:
        _copy_file(os.path.join(HERE, "debian", script), os.path.join(debian, script))
        os.chmod(os.path.join(debian, script), 0o755)
    with open(os.path.join(debian, "conffiles"), "w", encoding="utf-8") as handle:
        handle.write("".join(c + "\n" for c in CONFFILES))

    md5sums, size_kib = [], 0
    for top, dirs, files in os.walk(dest):
        dirs.sort()
        if os.path.relpath(top, dest).split(os.sep)[0] == "DEBIAN":
            continue
        size_kib += 1
        for name in sorted(files):
            path = os.path.join(top, name)
            rel = os.path.relpath(path, dest)
            if os.path.islink(path):
                continue
            size_kib += (os.path.getsize(path) + 1023) // 1024
            if "/" + rel not in CONFFILES:
                with open(path, "rb") as handle:
                    md5sums.append("%s  %s\n" % (hashlib.md5(handle.read()).hexdigest(), rel))
    with open(os.path.join(debian, "md5sums"), "w", encoding="utf-8") as handle:
        handle.write("".join(sorted(md5sums, key=lambda line: line.split("  ", 1)[1])))
    with open(os.path.join(debian, "control"), "w", encoding="utf-8") as handle:
        handle.write(control_text(package, version, size_kib))
    for name in ("conffiles", "md5sums", "control"):
        os.chmod(os.path.join(debian, name), 0o644)

    # fixed dates, children before parents so directory mtimes stick
    for top, dirs, files in os.walk(dest, topdown=False):
        for name in files + dirs:
            os.utime(os.path.join(top, name), (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH),
                     follow_symlinks=False)
        os.chmod(top, 0o755)
    os.utime(dest, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH))
    return dest


def build(outdir, name=DEFAULT_NAME, version=xcatstandin.PACKAGE_VERSION):
    """Build the .deb into outdir; return its path (<name>_<version without epoch>_all.deb)."""
    check_name_version(name, version)
    os.makedirs(outdir, exist_ok=True)
    target = os.path.join(os.path.abspath(outdir),
                          "%s_%s_all.deb" % (name, version.split(":", 1)[-1]))
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(SOURCE_DATE_EPOCH), LC_ALL="C")
    old_umask = os.umask(0o022)
    try:
        with tempfile.TemporaryDirectory(prefix="xcat-standin-") as tmp:
            tree = stage(os.path.join(tmp, "pkg"), name, version)
            subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-z9",
                            "--build", tree, target + ".tmp"],
                           check=True, env=env, stdout=subprocess.DEVNULL)
            os.replace(target + ".tmp", target)
    finally:
        os.umask(old_umask)
    return target


def main(argv):
    """Command line: OUTDIR [--name NAME] [--version VERSION]; exit code 2 on bad input."""
    parser = argparse.ArgumentParser(prog=os.path.basename(argv[0]),
                                     description="Build the xCAT TEST STAND-IN package (NOT xCAT).")
    parser.add_argument("outdir", metavar="OUTDIR")
    parser.add_argument("--name", default=DEFAULT_NAME,
                        help="package name (default xcat; any other name Provides and Conflicts xcat)")
    parser.add_argument("--version", default=xcatstandin.PACKAGE_VERSION,
                        help="package version (default %(default)s)")
    args = parser.parse_args(argv[1:])
    try:
        print(build(args.outdir, args.name, args.version))
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
