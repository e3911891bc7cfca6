"""Unit tests of the xCAT TEST STAND-IN (tests/standin), which is NOT xCAT.

The commands run as subprocesses against a temporary root
(XCAT_STANDIN_ROOT), with fake ``ip`` output (XCAT_STANDIN_FAKE_IP), a
fake loop-device directory (XCAT_STANDIN_LOOPDIR) and fake ``mount``,
``umount`` and ``modprobe`` programs (XCAT_STANDIN_MOUNT, _UMOUNT, _MODPROBE)
that log their calls and never touch the kernel.  Each run goes through a
small runner that refuses to import any module Debian's python3-minimal does
not ship, so the package's ``Depends: python3-minimal`` is checked on every
command.  No root, no Docker; xorriso and dpkg-deb tests skip if absent.
"""

import csv
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

STANDIN = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, "standin"))
LIBDIR = os.path.join(STANDIN, "root", "opt", "xcat", "lib", "standin")
HOST = socket.gethostname().split(".")[0]

sys.dont_write_bytecode = True
sys.path.insert(0, STANDIN)
sys.path.insert(0, LIBDIR)
import build_deb  # noqa: E402
import xcatstandin  # noqa: E402

# Top-level modules of Debian bookworm's libpython3.11-minimal, plus the
# modules built into its interpreter.  Anything else is not in python3-minimal.
PYTHON3_MINIMAL = set("""
__future__ _collections_abc _compat_pickle _py_abc _sitebuiltins _strptime
_threading_local _weakrefset abc argparse ast base64 bisect calendar codecs
collections compileall configparser contextlib copy copyreg csv datetime dis
email encodings enum filecmp fnmatch functools genericpath getopt glob hashlib
heapq imp importlib inspect io ipaddress keyword linecache locale logging opcode
operator optparse os pathlib pickle pkgutil platform posixpath py_compile quopri
random re reprlib runpy selectors signal site socket sre_compile sre_constants
sre_parse ssl stat string stringprep struct subprocess sysconfig tempfile
textwrap threading token tokenize traceback tracemalloc types typing urllib uu
warnings weakref zipfile zipimport sitecustomize _hashlib _ssl
_abc _ast _bisect _blake2 _codecs _collections _csv _datetime _elementtree
_functools _heapq _imp _io _locale _md5 _opcode _operator _pickle
_posixsubprocess _random _sha1 _sha256 _sha3 _sha512 _signal _socket _sre _stat
_statistics _string _struct _symtable _thread _tokenize _tracemalloc _warnings
_weakref array atexit binascii builtins cmath errno faulthandler fcntl gc grp
itertools marshal math posix pwd pyexpat select spwd sys syslog time
unicodedata xxsubtype zlib xcatstandin
""".split())

RUNNER = r"""
import sys
allowed = set(sys.argv[1].split(",")) | {"__main__", "_frozen_importlib",
                                         "_frozen_importlib_external"}
for name in list(sys.modules):
    if name.split(".")[0] not in allowed:
        del sys.modules[name]
class OnlyPython3Minimal:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in allowed:
            raise ModuleNotFoundError("%s is not in python3-minimal" % name)
        return None
sys.meta_path.insert(0, OnlyPython3Minimal())
sys.pycache_prefix = sys.argv[2]
sys.path.insert(0, sys.argv[3])
import xcatstandin
sys.exit(xcatstandin.main(sys.argv[4:]))
"""
PYCACHE = os.path.join(tempfile.gettempdir(), "xcat-standin-test-pycache")


def python_minimal(*args):
    """argv running RUNNER in an isolated interpreter (-I -S: no site-packages)."""
    return [sys.executable, "-I", "-S", "-c", RUNNER, ",".join(sorted(PYTHON3_MINIMAL)),
            PYCACHE, LIBDIR] + list(args)


ROUTES = """\
default via 198.18.0.1 dev eth0 
198.18.0.0/24 dev eth0 proto kernel scope link src 198.18.0.111 
172.17.0.0/16 dev docker0 proto kernel scope link src 172.17.0.1 linkdown 
169.254.0.0/16 dev eth0 scope link metric 1000 
224.0.0.0/4 dev eth0 scope link 
10.20.0.0/16 via 198.18.0.254 dev eth0 
"""
ADDRS = """\
1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
7: eth0    inet 198.18.0.111/24 brd 198.18.0.255 scope global eth0\\       valid_lft forever
9: docker0    inet 172.17.0.1/16 brd 172.17.255.255 scope global docker0\\       valid_lft forever
"""
LINKS = """\
1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000
    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00
7: eth0@if8: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default
    link/ether 02:42:c6:12:00:6f brd ff:ff:ff:ff:ff:ff link-netnsid 0
9: docker0: <NO-CARRIER,BROADCAST,MULTICAST,UP> mtu 1450 qdisc noqueue state DOWN mode DEFAULT group default
"""

NET_198 = '"198_18_0_0-255_255_255_0","198.18.0.0","255.255.255.0","eth0","198.18.0.1",,' \
          '"<xcatmaster>",,,,,,,,,,,"1500",,'
NET_172 = '"172_17_0_0-255_255_0_0","172.17.0.0","255.255.0.0","docker0","<xcatmaster>",,' \
          '"<xcatmaster>",,,,,,,,,,,"1450",,'


# Bodies of the fake mount: "$iso" and "$mnt" are its last two arguments.
FAKE_MOUNT = {
    # a loop mount that works: the ISO's files appear, read-only
    "iso": 'xorriso -osirrox on -indev "$iso" -extract / "$mnt" >/dev/null 2>&1 || exit 32',
    # a mount of the directory TREE instead of the ISO: proves where a copy came from
    "tree": 'cp -R TREE/. "$mnt" && chmod -R a-w "$mnt"',
    # util-linux's words when the kernel has no such file system
    "unknown-fs": 'echo "mount: $mnt: unknown filesystem type \'iso9660\'." >&2; exit 32',
    # what an unprivileged container gets
    "denied": 'echo "mount: $mnt: permission denied." >&2; exit 32',
}
# umount empties the mount point again, as a real unmount does.
FAKE_UMOUNT = '[ -d "$1" ] || exit 32; chmod -R u+w "$1"; find "$1" -mindepth 1 -delete'
FAKE_TOOL = """#!/bin/sh
printf '%s\\n' "NAME $*" >> "LOG"
for arg; do iso=$mnt; mnt=$arg; done
BODY
"""


def free_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


class Result:
    def __init__(self, proc):
        self.rc = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def __repr__(self):
        return "rc=%s\n--stdout--\n%s--stderr--\n%s" % (self.rc, self.out, self.err)


class StandIn:
    """A temporary root for the stand-in and helpers to run its commands."""

    def __init__(self, tmp):
        self.tmp = str(tmp)
        self.root = os.path.join(self.tmp, "root")
        self.fake_ip = os.path.join(self.tmp, "fake-ip")
        self.loopdir = os.path.join(self.tmp, "loops")
        self.tools = os.path.join(self.tmp, "tools")
        for directory in (self.root, self.fake_ip, self.loopdir, self.tools,
                          os.path.join(self.root, "etc")):
            os.makedirs(directory, exist_ok=True)
        for name, text in (("route", ROUTES), ("addr", ADDRS), ("link", LINKS)):
            with open(os.path.join(self.fake_ip, name), "w") as handle:
                handle.write(text)
        with open(os.path.join(self.root, "etc", "resolv.conf"), "w") as handle:
            handle.write("nameserver 198.18.0.111\nnameserver 127.0.0.11\n")
        self.closed_port = free_port()
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("XCAT", "PYTHON"))}
        self.env.update(XCAT_STANDIN_ROOT=self.root, XCAT_STANDIN_FAKE_IP=self.fake_ip,
                        XCAT_STANDIN_LOOPDIR=self.loopdir, PYTHONDONTWRITEBYTECODE="1",
                        XCATHOST="localhost:%d" % self.closed_port)
        self.fake_kernel("iso")

    def fake_kernel(self, mount, modprobe_rc=1, tree=""):
        """Install fake mount (a FAKE_MOUNT mode), umount and modprobe programs."""
        bodies = {"mount": FAKE_MOUNT[mount].replace("TREE", tree), "umount": FAKE_UMOUNT,
                  "modprobe": "exit %d" % modprobe_rc}
        for name, body in bodies.items():
            program = os.path.join(self.tools, name)
            with open(program, "w") as handle:
                handle.write(FAKE_TOOL.replace("NAME", name).replace("BODY", body)
                             .replace("LOG", os.path.join(self.tools, "calls.log")))
            os.chmod(program, 0o755)
            self.env["XCAT_STANDIN_" + name.upper()] = program

    def tool_calls(self):
        """The fake mount, umount and modprobe calls so far, one line each."""
        path = os.path.join(self.tools, "calls.log")
        return open(path).read().splitlines() if os.path.exists(path) else []

    def path(self, *parts):
        return os.path.join(self.root, *[p.lstrip("/") for p in parts])

    def run(self, command, *args, stdin=None, bypass=True, env=None):
        environment = dict(self.env)
        if bypass:
            environment["XCATBYPASS"] = "1"
        environment.update(env or {})
        proc = subprocess.run(
            python_minimal(command, *args),
            input=stdin or "", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            universal_newlines=True, env=environment, cwd=self.tmp, timeout=60)
        return Result(proc)

    def ok(self, command, *args, **kwargs):
        result = self.run(command, *args, **kwargs)
        assert result.rc == 0, result
        return result

    def read(self, *parts):
        with open(self.path(*parts)) as handle:
            return handle.read()

    def log(self):
        path = self.path("/var/log/xcat/standin-commands.log")
        return open(path).read() if os.path.exists(path) else ""


@pytest.fixture
def xc(tmp_path):
    return StandIn(tmp_path)


def xorriso_or_skip():
    if not shutil.which("xorriso"):
        pytest.skip("xorriso is not installed")


def make_iso(tmp, name, discinfo=None, files=None, label="STANDIN"):
    xorriso_or_skip()
    src = os.path.join(str(tmp), name + ".src")
    os.makedirs(os.path.join(src, "BaseOS", "Packages"))
    if discinfo is not None:
        with open(os.path.join(src, ".discinfo"), "w") as handle:
            handle.write(discinfo)
    for rel, text in (files or {"BaseOS/Packages/a.rpm": "rpm\n", "top.txt": "top\n"}).items():
        with open(os.path.join(src, rel), "w") as handle:
            handle.write(text)
    iso = os.path.join(str(tmp), name + ".iso")
    subprocess.run(["xorriso", "-as", "mkisofs", "-V", label, "-o", iso, src],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return iso


ROCKY = "1715000000.123456\nRocky Linux 9.4\nx86_64\nALL\n"


# ---------------------------------------------------------------------------
# xcatd not running / XCATBYPASS
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["lsdef", "-t", "site"], ["mkdef", "n1", "groups=all"], ["chdef", "-t", "site", "domain=x"],
    ["rmdef", "n1"], ["tabdump", "site"], ["chtab", "key=master", "site.value=1.2.3.4"],
    ["tabprune", "auditlog", "-a"], ["makenetworks"], ["copycds", "/nonexistent.iso"],
    ["lsxcatd", "-a"], ["nodels"], ["rpower", "n1", "stat"],
])
def test_commands_fail_like_xcat_when_xcatd_is_down(xc, argv):
    result = xc.run(*argv, bypass=False)
    assert result.rc == 1, result
    assert result.out == (
        "Unable to open socket connection to xcatd daemon on localhost:%d.\n"
        "Verify that the xcatd daemon is running and that your SSL setup is correct.\n"
        % xc.closed_port)
    assert result.err == ("Connection failure: IO::Socket::INET: connect: Connection "
                          "refused at /opt/xcat/lib/perl/xCAT/Client.pm line 248.\n")
    assert not os.path.exists(xc.path("/etc/xcat/site.csv"))


def test_xcatbypass_zero_is_not_bypass(xc):
    assert xc.run("lsdef", "-t", "site", bypass=False, env={"XCATBYPASS": "0"}).rc == 1
    assert xc.run("lsdef", "-t", "site", bypass=False, env={"XCATBYPASS": "yes"}).rc == 0


# ---------------------------------------------------------------------------
# site
# ---------------------------------------------------------------------------

def test_first_use_initialises_site_like_xcatconfig(xc):
    result = xc.ok("lsdef", "-t", "site", "-i", "master,nameservers,domain,installdir,"
                   "tftpdir,xcatdport,xcatiport,forwarders,dhcpinterfaces,nosuchkey")
    domain = subprocess.run(["hostname", "-d"], stdout=subprocess.PIPE,
                            universal_newlines=True).stdout.strip()
    assert result.out == (
        "Object name: clustersite\n"
        "    dhcpinterfaces=\n"
        "    domain=%s\n"
        "    forwarders=127.0.0.11\n"
        "    installdir=/install\n"
        "    master=198.18.0.111\n"
        "    nameservers=198.18.0.111\n"
        "    tftpdir=/tftpboot\n"
        "    xcatdport=3001\n"
        "    xcatiport=3002\n" % domain)
    dump = xc.ok("tabdump", "site").out.splitlines()
    assert dump[0] == "#key,value,comments,disable"
    assert '"master","198.18.0.111",,' in dump
    assert '"dhcpinterfaces",,,' in dump
    assert xc.read("/etc/xcat/site.csv").splitlines() == dump
    post = xc.ok("tabdump", "postscripts").out
    assert '"xcatdefaults","syslog,remoteshell,syncfiles","otherpkgs",,' in post


def test_site_changes_with_chdef_and_chtab(xc):
    result = xc.ok("chdef", "-t", "site", "master=198.18.0.111", "nameservers=198.18.0.111",
                   "domain=cluster.example")
    assert result.out == "1 object definitions have been created or modified.\n"
    xc.ok("chdef", "-t", "site", "-o", "clustersite", "forwarders=9.9.9.9")
    xc.ok("chtab", "key=master", "site.value=198.18.0.5")
    xc.ok("chtab", "key=newkey", "site.value=v1")
    assert xc.ok("lsdef", "-t", "site", "-i", "master,domain,forwarders,newkey").out == (
        "Object name: clustersite\n    domain=cluster.example\n    forwarders=9.9.9.9\n"
        "    master=198.18.0.5\n    newkey=v1\n")
    assert xc.ok("lsdef", "-t", "site").out == "clustersite  (site)\n"
    long_form = xc.ok("lsdef", "-t", "site", "clustersite").out.splitlines()
    assert long_form[0] == "Object name: clustersite"
    assert "    domain=cluster.example" in long_form
    assert "    dhcpinterfaces=" not in long_form          # empty: not shown without -i
    assert long_form[1:] == sorted(long_form[1:])
    assert '"master","198.18.0.5",,' in xc.ok("tabdump", "site").out
    xc.ok("chtab", "-d", "key=newkey", "site")
    assert "newkey" not in xc.ok("tabdump", "site").out


# ---------------------------------------------------------------------------
# mkdef / chdef / lsdef / rmdef
# ---------------------------------------------------------------------------

def test_mkdef_lsdef_node_and_force(xc):
    result = xc.run("lsdef")
    assert result.rc == 1
    assert result.err == "Error: [%s]: Could not get objects of type 'node'.\n" % HOST

    result = xc.run("mkdef", "n1", "mgt=ipmi")
    assert result.rc == 1
    assert ("Error: [%s]: Attribute 'groups' is not specified for node 'n1', skipping to "
            "the next node.\n" % HOST) in result.err

    result = xc.ok("mkdef", "-t", "node", "-o", "n1", "groups=all,compute", "mgt=ipmi",
                   "bmc=10.0.0.1", "ip=198.18.0.50")
    assert result.out == "1 object definitions have been created or modified.\n"
    assert xc.ok("lsdef", "n1").out == (
        "Object name: n1\n    bmc=10.0.0.1\n    groups=all,compute\n    ip=198.18.0.50\n"
        "    mgt=ipmi\n    postbootscripts=otherpkgs\n"
        "    postscripts=syslog,remoteshell,syncfiles\n")
    assert xc.ok("lsdef").out == "n1  (node)\n"
    assert '"n1","all,compute",' in xc.ok("tabdump", "nodelist").out
    assert '"n1",,"ipmi",' in xc.ok("tabdump", "nodehm").out

    result = xc.run("mkdef", "n1", "groups=all")
    assert result.rc == 1
    assert result.err.startswith("Error: [%s]: \nA definition for 'n1' already exists.\n"
                                 % HOST)
    assert "use the force '-f' option." in result.err
    assert "To change the existing definition use the 'chdef' command." in result.err

    xc.ok("mkdef", "-f", "n1", "groups=compute")
    assert "mgt=" not in xc.ok("lsdef", "n1").out          # -f replaces the definition
    xc.ok("mkdef", "n[02-03]", "groups=all")
    assert xc.ok("lsdef", "-s").out == "n02  (node)\nn03  (node)\nn1  (node)\n"


def test_lsdef_not_found(xc):
    xc.ok("mkdef", "n1", "groups=all")
    result = xc.run("lsdef", "nosuch")
    assert result.rc == 1
    assert result.err == ("Error: [%s]: Could not find an object named 'nosuch' of type "
                          "'node'.\n" % HOST)
    result = xc.run("lsdef", "n1,nosuch")
    assert result.rc == 1 and result.out.startswith("Object name: n1\n")
    result = xc.run("lsdef", "-t", "osimage")
    assert result.rc == 1
    assert result.err == "Error: [%s]: Could not get objects of type 'osimage'.\n" % HOST
    result = xc.run("lsdef", "-t", "bogus")
    assert result.rc == 1
    assert "Type 'bogus' is not a valid xCAT object type." in result.err
    result = xc.run("mkdef", "n2", "groups=all", "notanattr=1")
    assert result.rc == 1
    assert "'notanattr' is not a valid attribute name for an object type of 'node'." \
        in result.err


def test_chdef_creates_modifies_plus_minus(xc):
    result = xc.ok("chdef", "n5", "mgt=ipmi")
    assert result.out == ("1 object definitions have been created or modified.\n"
                          "New object definitions 'n5' have been created.\n")
    assert "    groups=all\n" in xc.ok("lsdef", "n5").out
    xc.ok("chdef", "-p", "n5", "groups=compute")
    assert xc.ok("lsdef", "n5", "-i", "groups").out == "Object name: n5\n    groups=all,compute\n"
    xc.ok("chdef", "-m", "n5", "groups=all")
    assert xc.ok("lsdef", "n5", "-i", "groups").out == "Object name: n5\n    groups=compute\n"
    xc.ok("chdef", "n5", "mgt=")
    assert xc.ok("lsdef", "n5", "-i", "mgt").out == "Object name: n5\n    mgt=\n"
    result = xc.run("chdef", "-f", "n5", "mgt=ipmi")
    assert result.rc == 1 and "The '-f' option is not valid for the chdef command." in result.err
    result = xc.run("chdef", "-t", "node")
    assert result.rc == 1 and "No object names were provided." in result.err


def test_group_attributes_are_inherited(xc):
    xc.ok("mkdef", "n1", "groups=all,compute")
    xc.ok("chdef", "-t", "group", "compute", "mgt=redfish", "bmcusername=ADMIN")
    assert xc.ok("lsdef", "n1", "-i", "mgt,bmcusername").out == \
        "Object name: n1\n    bmcusername=ADMIN\n    mgt=redfish\n"
    xc.ok("chdef", "n1", "mgt=ipmi")
    assert "    mgt=ipmi\n" in xc.ok("lsdef", "n1").out
    assert xc.ok("lsdef", "-t", "group").out == "all  (group)\ncompute  (group)\n"
    assert "    members=n1\n" in xc.ok("lsdef", "-t", "group", "-o", "compute").out
    assert xc.ok("lsdef", "compute", "-s").out == "n1  (node)\n"   # group as noderange


def test_lsdef_where_long_and_stanza_roundtrip(xc):
    xc.ok("mkdef", "n1", "groups=all", "mgt=ipmi", "nicips.eth1=10.1.0.1")
    xc.ok("mkdef", "n2", "groups=all", "mgt=openbmc")
    assert xc.ok("lsdef", "-w", "mgt==ipmi").out == "n1  (node)\n"
    assert xc.ok("lsdef", "-w", "mgt!=ipmi").out == "n2  (node)\n"
    assert xc.ok("lsdef", "-w", "mgt=~bmc").out == "n2  (node)\n"
    assert "    nicips.eth1=10.1.0.1\n" in xc.ok("lsdef", "n1").out
    stanza = xc.ok("lsdef", "-z", "n1,n2").out
    assert stanza.startswith("# <xCAT data object stanza file>\n\nn1:\n    objtype=node\n")
    assert "postscripts" not in stanza
    xc.ok("rmdef", "n1,n2")
    assert xc.ok("mkdef", "-z", stdin=stanza).out == \
        "2 object definitions have been created or modified.\n"
    assert xc.ok("lsdef", "-z", "n1,n2").out == stanza


def test_mkdef_chdef_stanza_passwords_are_stored_not_logged(xc):
    stanzas = ("n1:\n    objtype=node\n    groups=all\n    bmc=10.0.0.9\n"
               "    bmcusername=ADMIN\n    bmcpassword=Sup3rSecret\n\n"
               "n2:\n    objtype=node\n    groups=all\n")
    assert xc.ok("mkdef", "-z", stdin=stanzas).out == \
        "2 object definitions have been created or modified.\n"
    xc.ok("chdef", "-z", stdin="n1:\n    objtype=node\n    bmcpassword=N3wSecret\n")
    assert xc.ok("lsdef", "n1", "-i", "bmcpassword,bmcusername").out == \
        "Object name: n1\n    bmcpassword=N3wSecret\n    bmcusername=ADMIN\n"
    assert '"n1","10.0.0.9",,,,"ADMIN","N3wSecret",,' in xc.ok("tabdump", "ipmi").out
    xc.ok("chtab", "key=system", "passwd.username=root", "passwd.password=R00tPw")
    xc.ok("chdef", "n2", "bmcpassword=ArgvSecret")
    xc.ok("lsdef", "-w", "bmcpassword==ArgvSecret")
    log = xc.log()
    for secret in ("Sup3rSecret", "N3wSecret", "R00tPw", "ArgvSecret"):
        assert secret not in log
    assert "    stdin|     bmcpassword=********\n" in log
    assert "    stdin|     bmcusername=ADMIN\n" in log
    assert "cmd: chtab key=system passwd.username=root 'passwd.password=********'" in log
    assert "'bmcpassword==********'" in log
    lines = [line for line in log.splitlines() if " cmd: mkdef -z" in line]
    assert len(lines) == 1 and " rc=0 " in lines[0] and " bypass=1 " in lines[0]


@pytest.mark.parametrize("cmd", ["mkdef", "chdef"])
def test_def_z_rejects_type_and_noderange(xc, cmd):
    result = xc.run(cmd, "-z", "n1", stdin="n1:\n    objtype=node\n    groups=all\n")
    assert result.rc == 1 and "Cannot use '-z' with '-o' or a noderange." in result.err
    assert f"'cat stanzafile | {cmd} -z'" in result.err
    result = xc.run(cmd, "-t", "node", "-z", stdin="n1:\n    objtype=node\n")
    assert result.rc == 1 and "Cannot combine '-t' and '-a', '-z', or '-x' options." \
        in result.err
    assert result.out.lstrip().startswith(f"Usage: {cmd} ")


def test_rmdef(xc):
    xc.ok("mkdef", "n1", "groups=all", "mgt=ipmi", "bmcpassword=x")
    assert xc.ok("rmdef", "n1").out == "1 object definitions have been removed.\n"
    assert '"n1"' not in xc.ok("tabdump", "ipmi").out
    assert '"n1"' not in xc.ok("tabdump", "nodehm").out
    result = xc.run("rmdef", "-t", "node", "-o", "nosuch")
    assert result.rc == 1
    assert result.err == ("Error: [%s]: Could not find an object named 'nosuch' of type "
                          "'node'.\n" % HOST)
    assert result.out == "No objects have been removed from the xCAT database.\n"
    result = xc.run("rmdef", "-t", "network")
    assert result.rc == 1 and "No object names were provided." in result.err


# ---------------------------------------------------------------------------
# makenetworks / networks
# ---------------------------------------------------------------------------

def test_makenetworks_creates_networks_from_connected_routes(xc):
    result = xc.ok("makenetworks")
    assert result.out == "" and result.err == ""
    dump = xc.ok("tabdump", "networks").out.splitlines()
    assert dump[0].startswith("#netname,net,mask,mgtifname,gateway,")
    assert dump[1:] == [NET_198, NET_172]
    assert xc.ok("lsdef", "-t", "network").out == \
        "172_17_0_0-255_255_0_0  (network)\n198_18_0_0-255_255_255_0  (network)\n"


def test_makenetworks_never_overwrites(xc):
    xc.ok("makenetworks")
    xc.ok("chdef", "-t", "network", "-o", "198_18_0_0-255_255_255_0", "gateway=198.18.0.99")
    before = xc.ok("tabdump", "networks").out
    result = xc.ok("makenetworks")
    assert result.err == (
        "Warning: [{h}]: The network entry '198_18_0_0-255_255_255_0' already exists in xCAT "
        "networks table. Cannot create a definition for '198_18_0_0-255_255_255_0'\n"
        "Warning: [{h}]: The network entry '172_17_0_0-255_255_0_0' already exists in xCAT "
        "networks table. Cannot create a definition for '172_17_0_0-255_255_0_0'\n"
    ).format(h=HOST)
    assert xc.ok("tabdump", "networks").out == before

    # an equivalent net/mask under another name: skipped silently, nothing added
    xc.ok("chtab", "netname=172_17_0_0-255_255_0_0", "networks.netname=dockernet")
    result = xc.ok("makenetworks")
    assert "dockernet" not in result.err and "172_17" not in result.err
    assert len(xc.ok("tabdump", "networks").out.splitlines()) == 3

    # mkdef refuses a second definition of the same net/mask
    result = xc.run("mkdef", "-t", "network", "-o", "copy", "net=172.17.0.0",
                    "mask=255.255.0.0")
    assert result.rc == 1
    assert ("A network definition called 'dockernet' already exists that contains the "
            "same net and mask values. Cannot create a definition for 'copy'.") in result.err


def test_makenetworks_display_writes_nothing(xc):
    result = xc.ok("makenetworks", "-d")
    host = socket.gethostname()
    assert result.out == (
        "\n#From {h}.\n198_18_0_0-255_255_255_0:\n    objtype=network\n    net=198.18.0.0\n"
        "    mask=255.255.255.0\n    gateway=198.18.0.1\n    mgtifname=eth0\n    mtu=1500\n"
        "    tftpserver=198.18.0.111\n"
        "\n#From {h}.\n172_17_0_0-255_255_0_0:\n    objtype=network\n    net=172.17.0.0\n"
        "    mask=255.255.0.0\n    gateway=<xcatmaster>\n    mgtifname=docker0\n"
        "    mtu=1450\n    tftpserver=172.17.0.1\n").format(h=host)
    assert xc.ok("tabdump", "networks").out.count("\n") == 1


def test_makenetworks_default_path_runs_real_ip(xc):
    ip = shutil.which("ip") or next((p for p in ("/sbin/ip", "/usr/sbin/ip")
                                     if os.path.exists(p)), None)
    if not ip:
        pytest.skip("iproute2 is not installed")
    routes = subprocess.run([ip, "-4", "route"], stdout=subprocess.PIPE,
                            universal_newlines=True).stdout
    env = dict(xc.env)
    del env["XCAT_STANDIN_FAKE_IP"]
    xc.env = env
    out = xc.ok("makenetworks", "-d").out
    for line in routes.splitlines():
        ent = line.split()
        if len(ent) > 2 and ent[1] == "dev" and "/" in ent[0] \
                and not ent[0].startswith(("127.", "169.254.")):
            net, bits = ent[0].split("/")
            import ipaddress
            mask = str(ipaddress.IPv4Network(ent[0]).netmask)
            assert "%s-%s:" % (net.replace(".", "_"), mask.replace(".", "_")) in out
            assert "    mgtifname=%s" % ent[2] in out


def test_tabprune_only_supports_logs_like_xcat(xc):
    xc.ok("makenetworks")
    result = xc.run("tabprune", "networks", "-a")
    assert result.rc == 1
    assert result.out == "Table networks not supported, see tabprune -h for supported tables.\n"
    assert len(xc.ok("tabdump", "networks").out.splitlines()) == 3
    assert xc.ok("tabprune", "auditlog", "-a").out == "tabprune of auditlog complete.\n"
    result = xc.run("tabprune", "eventlog")
    assert result.rc == 1 and "One option -p or -i or -n or -a or -d must be supplied." \
        in result.out


def test_emptying_networks_the_ways_real_xcat_allows(xc):
    xc.ok("makenetworks")
    xc.ok("rmdef", "-t", "network", "-o", "198_18_0_0-255_255_255_0,172_17_0_0-255_255_0_0")
    assert xc.ok("tabdump", "networks").out.count("\n") == 1
    xc.ok("makenetworks")
    header = os.path.join(xc.tmp, "networks.csv")
    with open(header, "w") as handle:
        handle.write(xc.ok("tabdump", "networks").out.splitlines()[0] + "\n")
    xc.ok("tabrestore", header)
    assert xc.ok("tabdump", "networks").out.count("\n") == 1
    xc.ok("makenetworks")
    assert len(xc.ok("tabdump", "networks").out.splitlines()) == 3


def network_row(xc, netname):
    """One networks row from tabdump, as {column: value}."""
    lines = xc.ok("tabdump", "networks").out.splitlines()
    header = lines[0].lstrip("#").split(",")
    rows = [dict(zip(header, fields)) for fields in csv.reader(lines[1:])]
    return next(row for row in rows if row["netname"] == netname)


def test_network_definitions_as_the_product_makes_them(xc):
    result = xc.ok("mkdef", "-t", "network", "-o", "xcatfab-mgmt", "net=10.10.0.0",
                   "mask=255.255.0.0", "gateway=10.10.0.1", "mgtifname=eth1",
                   "usercomment=managed by xcatfab")
    assert result.out == "1 object definitions have been created or modified.\n"
    assert xc.ok("chdef", "-t", "network", "-o", "xcatfab-mgmt", "dhcpserver=10.10.0.2",
                 "tftpserver=10.10.0.2").out == \
        "1 object definitions have been created or modified.\n"
    xc.ok("chtab", "netname=xcatfab-mgmt", "networks.dynamicrange=10.10.1.1-10.10.1.254")
    header = xc.ok("tabdump", "networks").out.splitlines()[0]
    for column in ("comments", "dynamicrange", "dhcpserver", "tftpserver"):
        assert column in header.lstrip("#").split(",")
    row = network_row(xc, "xcatfab-mgmt")
    assert (row["net"], row["mask"], row["gateway"], row["mgtifname"]) == \
        ("10.10.0.0", "255.255.0.0", "10.10.0.1", "eth1")
    assert (row["comments"], row["dynamicrange"], row["dhcpserver"], row["tftpserver"]) == \
        ("managed by xcatfab", "10.10.1.1-10.10.1.254", "10.10.0.2", "10.10.0.2")
    assert xc.ok("lsdef", "-t", "network", "-l").out == (
        "Object name: xcatfab-mgmt\n    dhcpserver=10.10.0.2\n"
        "    dynamicrange=10.10.1.1-10.10.1.254\n    gateway=10.10.0.1\n"
        "    mask=255.255.0.0\n    mgtifname=eth1\n    net=10.10.0.0\n"
        "    tftpserver=10.10.0.2\n    usercomment=managed by xcatfab\n")
    assert xc.ok("rmdef", "-t", "network", "-o", "xcatfab-mgmt").out == \
        "1 object definitions have been removed.\n"
    result = xc.run("rmdef", "-t", "network", "-o", "xcatfab-mgmt")
    assert result.rc == 1 and result.err == ("Error: [%s]: Could not find an object named "
                                             "'xcatfab-mgmt' of type 'network'.\n" % HOST)
    result = xc.run("lsdef", "-t", "network", "-l")
    assert result.rc == 1 and "Could not get objects of type 'network'." in result.err


def test_network_comments_attribute_is_usercomment_as_in_xcat(xc):
    # Schema.pm maps networks.comments to the attribute usercomment; mkdef refuses
    # comments=, writes the rest of the definition and exits 1.
    result = xc.run("mkdef", "-t", "network", "-o", "n1", "net=10.20.0.0", "mask=255.255.0.0",
                    "comments=x")
    assert result.rc == 1 and result.out == ""
    assert result.err == (
        "Error: [{h}]: 'comments' is not a valid attribute name for an object type of 'network'.\n"
        "Error: [{h}]: Skipping to the next attribute.\n"
        "Error: [{h}]: One or more errors occured when attempting to create or modify xCAT \n"
        "object definitions.\n").format(h=HOST)
    assert network_row(xc, "n1")["net"] == "10.20.0.0"
    assert network_row(xc, "n1")["comments"] == ""
    xc.ok("chtab", "netname=n1", "networks.comments=set by chtab")
    assert "    usercomment=set by chtab\n" in xc.ok("lsdef", "-t", "network", "n1").out


# ---------------------------------------------------------------------------
# copycds
# ---------------------------------------------------------------------------

def mountpoint_of(iso):
    return "/var/run/xcat/mountpoint/" + hashlib.md5(os.path.abspath(iso).encode()).hexdigest()


def test_copycds_needs_a_loop_device(xc, tmp_path):
    iso = make_iso(tmp_path, "rocky", ROCKY)
    result = xc.run("copycds", iso)
    assert result.rc == 1
    assert result.err == ("mount: Could not find any loop device\n"
                          "Error: [%s]: copycds was unable to mount %s to %s.\n"
                          % (HOST, iso, mountpoint_of(iso)))
    assert not os.path.exists(xc.path("/install/rocky9.4"))
    assert os.listdir(xc.path("/var/run/xcat/mountpoint")) == []
    assert not any(call.startswith("mount ") for call in xc.tool_calls())


def test_copycds_identifies_from_discinfo_and_creates_osimages(xc, tmp_path):
    iso = make_iso(tmp_path, "rocky", ROCKY)
    open(os.path.join(xc.loopdir, "loop0"), "w").close()
    assert os.path.dirname(iso) == xc.tmp                  # xc.run's cwd
    result = xc.ok("copycds", os.path.basename(iso))       # relative to the cwd
    assert result.out == ("Copying media to /install/rocky9.4/x86_64\n"
                          "Media copy operation successful\n")
    assert xc.read("/install/rocky9.4/x86_64/BaseOS/Packages/a.rpm") == "rpm\n"
    assert xc.read("/install/rocky9.4/x86_64/.discinfo") == ROCKY
    assert xc.ok("lsdef", "-t", "osimage").out == (
        "rocky9.4-x86_64-install-compute  (osimage)\n"
        "rocky9.4-x86_64-netboot-compute  (osimage)\n"
        "rocky9.4-x86_64-statelite-compute  (osimage)\n")
    install = xc.ok("lsdef", "-t", "osimage", "-o", "rocky9.4-x86_64-install-compute").out
    for line in ("imagetype=linux", "osarch=x86_64", "osdistroname=rocky9.4-x86_64",
                 "osname=Linux", "osvers=rocky9.4", "pkgdir=/install/rocky9.4/x86_64",
                 "profile=compute", "provmethod=install",
                 "otherpkgdir=/install/post/otherpkgs/rocky9.4/x86_64"):
        assert "    %s\n" % line in install
    netboot = xc.ok("lsdef", "-t", "osimage", "rocky9.4-x86_64-netboot-compute").out
    assert "    rootimgdir=/install/netboot/rocky9.4/x86_64/compute\n" in netboot
    assert "    provmethod=statelite\n" in \
        xc.ok("lsdef", "-t", "osimage", "rocky9.4-x86_64-statelite-compute").out
    assert '"rocky9.4-x86_64","rocky","9","4","x86_64","Linux","/install/rocky9.4/x86_64",,' \
        in xc.ok("tabdump", "osdistro").out
    assert os.listdir(xc.path("/var/run/xcat/mountpoint")) == []
    # idempotent: a second run succeeds and leaves the same definitions
    xc.ok("copycds", iso)
    assert len(xc.ok("lsdef", "-t", "osimage").out.splitlines()) == 3


def test_copycds_name_arch_and_unidentified(xc, tmp_path):
    open(os.path.join(xc.loopdir, "loop3"), "w").close()
    bare = make_iso(tmp_path, "bare", discinfo=None)
    result = xc.run("copycds", bare)
    assert result.rc == 1
    assert result.err == ("Error: [%s]: copycds could not identify the ISO supplied, you "
                          "may wish to try -n <osver>\n" % HOST)
    result = xc.ok("copycds", "-n", "alma9.3", "-a", "x86_64", bare)
    assert result.out.startswith("Copying media to /install/alma9.3/x86_64\n")
    rocky = make_iso(tmp_path, "rocky", ROCKY)
    xc.ok("copycds", "--name=rhels9.4", "-a", "aarch64", "-o", rocky)
    assert os.path.exists(xc.path("/install/rhels9.4/aarch64/top.txt"))
    assert "rhels9.4" not in xc.ok("lsdef", "-t", "osimage").out     # -o: no osimages
    assert xc.ok("copycds", "-i", rocky).out == \
        "OS Image:%s\nDISTNAME:rocky9.4\nARCH:x86_64\nDISCNO:ALL\n" % rocky
    result = xc.run("copycds", os.path.join(str(tmp_path), "missing.iso"))
    assert result.rc == 1 and "was unable to find/read" in result.err
    result = xc.run("copycds")
    assert result.rc == 1 and "copycds needs at least one full path to ISO" in result.err


@pytest.mark.parametrize("mount", ["iso", "unknown-fs"])
def test_copycds_nonoverwrite(xc, tmp_path, mount):
    open(os.path.join(xc.loopdir, "loop0"), "w").close()
    xc.fake_kernel(mount)
    iso = make_iso(tmp_path, "rocky", ROCKY)
    xc.ok("copycds", iso)
    with open(xc.path("/install/rocky9.4/x86_64/top.txt"), "w") as handle:
        handle.write("local change\n")
    os.unlink(xc.path("/install/rocky9.4/x86_64/BaseOS/Packages/a.rpm"))
    xc.ok("copycds", "-w", iso)
    assert xc.read("/install/rocky9.4/x86_64/top.txt") == "local change\n"
    assert xc.read("/install/rocky9.4/x86_64/BaseOS/Packages/a.rpm") == "rpm\n"
    assert sorted(os.listdir(xc.path("/install/rocky9.4"))) == ["x86_64"]
    xc.ok("copycds", iso)
    assert xc.read("/install/rocky9.4/x86_64/top.txt") == "top\n"


def log_notes(xc):
    """The note| lines of the command log (what copycds says about its method)."""
    return [line.split("note| ", 1)[1] for line in xc.log().splitlines() if "    note| " in line]


def test_copycds_copies_from_the_loop_mount_and_cleans_up(xc, tmp_path):
    open(os.path.join(xc.loopdir, "loop0"), "w").close()
    tree = os.path.join(str(tmp_path), "mounted")
    os.makedirs(os.path.join(tree, "Packages"))
    for rel, text in ((".discinfo", ROCKY), ("Packages/from-mount.rpm", "mounted\n")):
        with open(os.path.join(tree, rel), "w") as handle:
            handle.write(text)
    os.symlink("Packages/from-mount.rpm", os.path.join(tree, "link.rpm"))
    xc.fake_kernel("tree", tree=tree)
    iso = os.path.join(str(tmp_path), "any.iso")        # the fake mount never reads it
    open(iso, "w").close()
    result = xc.ok("copycds", iso)
    assert result.out == ("Copying media to /install/rocky9.4/x86_64\n"
                          "Media copy operation successful\n")
    assert result.err == ""
    dest = "/install/rocky9.4/x86_64"
    assert xc.read(dest, "Packages/from-mount.rpm") == "mounted\n"
    assert os.readlink(xc.path(dest, "link.rpm")) == "Packages/from-mount.rpm"
    assert os.stat(xc.path(dest, "Packages/from-mount.rpm")).st_mode & 0o200   # owner-writable
    assert oct(os.stat(xc.path(dest)).st_mode & 0o777) == "0o755"
    mnt = xc.path(mountpoint_of(iso))
    assert xc.tool_calls() == ["umount %s" % mnt,
                               "mount -t udf,iso9660 -o ro,loop %s %s" % (iso, mnt),
                               "umount %s" % mnt]
    assert os.listdir(xc.path("/var/run/xcat/mountpoint")) == []
    assert log_notes(xc) == ["copycds: copied via loop mount"]
    assert "rocky9.4-x86_64-install-compute  (osimage)" in xc.ok("lsdef", "-t", "osimage").out
    result = xc.ok("copycds", "-i", iso)
    assert result.out == "OS Image:%s\nDISTNAME:rocky9.4\nARCH:x86_64\nDISCNO:ALL\n" % iso
    assert log_notes(xc)[-1] == "copycds: inspected via loop mount"


def test_copycds_extracts_when_the_kernel_has_no_iso9660(xc, tmp_path):
    open(os.path.join(xc.loopdir, "loop0"), "w").close()
    xc.fake_kernel("unknown-fs")
    iso = make_iso(tmp_path, "rocky", ROCKY)
    result = xc.ok("copycds", iso)
    assert result.out == ("Copying media to /install/rocky9.4/x86_64\n"
                          "Media copy operation successful\n")
    assert result.err == ""                              # mount's complaint is only logged
    assert xc.read("/install/rocky9.4/x86_64/BaseOS/Packages/a.rpm") == "rpm\n"
    mnt = xc.path(mountpoint_of(iso))
    assert xc.tool_calls() == ["umount %s" % mnt,
                               "mount -t udf,iso9660 -o ro,loop %s %s" % (iso, mnt)]
    assert log_notes(xc) == [
        "copycds: mount failed: mount: %s: unknown filesystem type 'iso9660'." % mnt,
        "copycds: copied via extraction (no iso9660 in this kernel)"]
    assert os.listdir(xc.path("/var/run/xcat/mountpoint")) == []


@pytest.mark.parametrize("filesystems, modprobe_rc, extracted", [
    ("nodev\tproc\n\text4\n", 1, True),             # no iso9660 and cannot load it
    ("nodev\tproc\n\text4\n", 0, False),            # modprobe iso9660 works: not the kernel
    ("nodev\tproc\n\tiso9660\n", 1, False),         # the kernel has it: a real failure
], ids=["no-iso9660", "iso9660-loadable", "iso9660-present"])
def test_copycds_mount_refused(xc, tmp_path, filesystems, modprobe_rc, extracted):
    open(os.path.join(xc.loopdir, "loop0"), "w").close()
    os.makedirs(xc.path("/proc"))
    with open(xc.path("/proc/filesystems"), "w") as handle:
        handle.write(filesystems)
    xc.fake_kernel("denied", modprobe_rc=modprobe_rc)
    iso = make_iso(tmp_path, "rocky", ROCKY)
    result = xc.run("copycds", iso)
    mnt = mountpoint_of(iso)
    probed = "modprobe -q iso9660" in xc.tool_calls()
    assert probed is ("iso9660" not in filesystems)
    assert os.listdir(xc.path("/var/run/xcat/mountpoint")) == []
    if extracted:
        assert result.rc == 0 and result.err == "", result
        assert log_notes(xc)[-1] == "copycds: copied via extraction (no iso9660 in this kernel)"
        return
    assert result.rc == 1 and result.out == ""
    assert result.err == ("mount: %s: permission denied.\n"
                          "Error: [%s]: copycds was unable to mount %s to %s.\n"
                          % (xc.path(mnt), HOST, iso, mnt))
    assert not os.path.exists(xc.path("/install/rocky9.4"))
    assert log_notes(xc) == []


def test_system_tools_ignore_hooks_in_production(monkeypatch):
    monkeypatch.delenv("XCAT_STANDIN_ROOT", raising=False)
    monkeypatch.setenv("XCAT_STANDIN_MOUNT", "/nonexistent/fake-mount")
    assert xcatstandin.system_tool("mount", "XCAT_STANDIN_MOUNT") != "/nonexistent/fake-mount"
    monkeypatch.setenv("XCAT_STANDIN_ROOT", "/tmp/x")
    assert xcatstandin.system_tool("mount", "XCAT_STANDIN_MOUNT") == "/nonexistent/fake-mount"


def test_distro_names():
    assert xcatstandin.distro_from_name("Rocky Linux 9.4") == "rocky9.4"
    assert xcatstandin.distro_from_name("AlmaLinux 8.10") == "alma8.10"
    assert xcatstandin.distro_from_name("Red Hat Enterprise Linux 9.4") == "rhels9.4"
    assert xcatstandin.distro_from_name("CentOS Stream 9") == "centos-stream9"
    assert xcatstandin.distro_from_name("CentOS Linux 7") == "centos7"
    assert xcatstandin.distro_from_name("Something 1.0") is None
    assert xcatstandin.KNOWN_DISCINFO["1404489053.504589"] == "centos7.0"


def test_loop_check_in_production_uses_dev(monkeypatch):
    monkeypatch.delenv("XCAT_STANDIN_ROOT", raising=False)
    monkeypatch.setenv("XCAT_STANDIN_LOOPDIR", "/nonexistent")   # ignored without ROOT
    expected = False
    for name in os.listdir("/dev"):
        if re.fullmatch(r"loop\d+", name):
            try:
                os.close(os.open("/dev/" + name, os.O_RDONLY))
                expected = True
                break
            except OSError:
                pass
    assert xcatstandin.loop_device_available() is expected


# ---------------------------------------------------------------------------
# other commands
# ---------------------------------------------------------------------------

def test_lsxcatd_and_hardware_commands(xc):
    out = xc.ok("lsxcatd", "-a").out.splitlines()
    assert out[0].startswith("Version 2.17.0 (") and "NOT xCAT" in out[0]
    assert "This is a Management Node" in out
    assert xc.ok("lsxcatd", "-v").out.startswith("Version 2.17.0")
    result = xc.run("rpower", "n1", "on")
    assert result.rc == 1 and result.err == "Error: [%s]: stand-in: no hardware\n" % HOST


def test_xcatconfig_nodels_and_chtab_networks(xc):
    assert xc.ok("xcatconfig", "-d").out == \
        "xCAT stand-in: tables in /etc/xcat are initialized.\n"
    xc.ok("chtab", "key=master", "site.value=1.1.1.1")
    xc.ok("xcatconfig", "-d")                                # keeps existing values
    assert '"master","1.1.1.1",,' in xc.ok("tabdump", "site").out
    xc.ok("xcatconfig", "-f")                                # -f resets the defaults
    assert '"master","198.18.0.111",,' in xc.ok("tabdump", "site").out
    assert xc.ok("nodels").out == ""
    xc.ok("mkdef", "cn[1-3]", "groups=compute")
    assert xc.ok("nodels").out == "cn1\ncn2\ncn3\n"
    assert xc.ok("nodels", "cn1-cn2").out == "cn1\ncn2\n"
    xc.ok("chtab", "netname=mgmt", "networks.net=10.0.0.0", "networks.mask=255.0.0.0")
    assert '"mgmt","10.0.0.0","255.0.0.0",' in xc.ok("tabdump", "networks").out
    assert "    net=10.0.0.0\n" in xc.ok("lsdef", "-t", "network", "mgmt").out
    result = xc.run("tabdump", "nosuchtable")
    assert result.rc == 1 and result.err == "Error: [%s]: No such table: nosuchtable\n" % HOST


def test_log_records_every_invocation(xc):
    xc.run("lsdef", "-t", "site", bypass=False)
    xc.ok("tabdump")
    lines = xc.log().splitlines()
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} pid=\d+ uid=\d+ bypass=0 rc=1 "
                    r"cmd: lsdef -t site$", lines[0])
    assert lines[1].endswith(" bypass=1 rc=0 cmd: tabdump")


def test_mask_secret():
    assert xcatstandin.mask_secret("bmcpassword=abc") == "bmcpassword=********"
    assert xcatstandin.mask_secret("    Password = abc") == "    Password = ********"
    assert xcatstandin.mask_secret("passwd.password=a=b") == "passwd.password=********"
    assert xcatstandin.mask_secret("bmcpassword=~^a") == "bmcpassword=~********"
    assert xcatstandin.mask_secret("usercomment=my password is x") == \
        "usercomment=my password is x"
    assert xcatstandin.mask_secret("-t") == "-t"


def test_runner_refuses_modules_outside_python3_minimal(tmp_path):
    argv = python_minimal()
    argv[4] = RUNNER.replace("import xcatstandin\nsys.exit(xcatstandin.main(sys.argv[4:]))",
                             "import shutil")
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True)
    assert proc.returncode != 0 and "shutil is not in python3-minimal" in proc.stderr


# ---------------------------------------------------------------------------
# xcatd, the init script and the installed tree
# ---------------------------------------------------------------------------

@pytest.fixture
def tree(tmp_path):
    return build_deb.stage(os.path.join(str(tmp_path), "tree"))


def test_installed_symlinks_dispatch_on_argv0(xc, tree):
    tabdump = os.path.join(tree, "opt", "xcat", "sbin", "tabdump")
    assert os.readlink(tabdump) == "../bin/xcatclient"
    env = dict(xc.env, XCATBYPASS="1")
    proc = subprocess.run([sys.executable, tabdump], stdout=subprocess.PIPE,
                          universal_newlines=True, env=env)
    assert proc.returncode == 0 and "site\n" in proc.stdout and "networks\n" in proc.stdout


def test_profile_script(tree):
    script = os.path.join(tree, "etc", "profile.d", "xcat.sh")
    out = subprocess.run(["sh", "-c", '. "$0"; . "$0"; echo "$XCATROOT"; echo "$PATH"', script],
                         stdout=subprocess.PIPE, universal_newlines=True,
                         env={"PATH": "/usr/bin:/bin"}).stdout.splitlines()
    assert out[0] == "/opt/xcat"
    assert out[1] == "/opt/xcat/bin:/opt/xcat/sbin:/opt/xcat/share/xcat/tools:/usr/bin:/bin"


def dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def banner(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        return sock.recv(200).decode()


def test_xcatd_init_script_start_status_stop(xc, tree):
    if not os.access("/usr/bin/python3", os.X_OK):
        pytest.skip("the installed scripts need /usr/bin/python3")
    dport, iport = free_port(), free_port()
    xc.ok("chtab", "key=xcatdport", "site.value=%d" % dport)
    xc.ok("chtab", "key=xcatiport", "site.value=%d" % iport)
    init = os.path.join(tree, "etc", "init.d", "xcatd")
    env = dict(xc.env, XCATROOT=os.path.join(tree, "opt", "xcat"),
               XCATHOST="localhost:%d" % dport)
    pidfile = xc.path("/var/run/xcatd.pid")

    def service(action):
        proc = subprocess.run(["sh", init, action], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True, env=env,
                              timeout=30)
        return proc.returncode, proc.stdout

    try:
        assert service("status") == (3, "xcatd service is not running.\n")
        assert service("start") == (0, "Starting xcatd: ok.\n")
        pid = int(open(pidfile).read())
        assert service("status") == (0, "xcatd service is running (pid %d).\n" % pid)
        assert service("start") == (0, "xcatd is already running (pid %d).\n" % pid)
        assert "port %d" % dport in banner(dport) and "NOT xCAT" in banner(dport)
        assert "port %d" % iport in banner(iport)
        # with xcatd up, commands work without XCATBYPASS
        up = xc.run("lsdef", "-t", "site", "-i", "xcatdport", bypass=False,
                    env={"XCATHOST": "localhost:%d" % dport})
        assert up.rc == 0 and up.out == "Object name: clustersite\n    xcatdport=%d\n" % dport
        lsx = xc.run("lsxcatd", "-a", bypass=False, env={"XCATHOST": "localhost:%d" % dport})
        assert lsx.rc == 0 and lsx.out.startswith("Version 2.17.0")
        assert service("stop") == (0, "Stopping xcatd: ok.\n")
        assert not os.path.exists(pidfile)
        assert service("status") == (3, "xcatd service is not running.\n")
        assert service("stop") == (0, "xcatd is not running.\n")
        down = xc.run("lsdef", "-t", "site", bypass=False,
                      env={"XCATHOST": "localhost:%d" % dport})
        assert down.rc == 1 and "Unable to open socket connection" in down.out
        assert service("restart")[0] == 0 and service("status")[0] == 0
        assert service("bogus")[0] == 2
        assert service("stop")[0] == 0
        with open(pidfile, "w") as handle:          # stale pid file: dead process
            handle.write("%d\n" % dead_pid())
        assert service("status") == (1, "xcatd is dead but the pid file exists.\n")
        assert service("start") == (0, "Starting xcatd: ok.\n")
    finally:
        try:
            os.kill(int(open(pidfile).read()), 15)
        except (OSError, ValueError):
            pass
    log = xc.read("/var/log/xcat/standin-xcatd.log")
    assert "started, listening on TCP %d,%d" % (dport, iport) in log and "stopped" in log


def wait_for_port(port, proc, seconds=15):
    """Wait until something listens on port, or fail if proc exits first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("nothing listens on port %d" % port)


def test_lsxcatd_answers_while_xcatd_runs_in_the_foreground(xc):
    dport, iport = free_port(), free_port()
    xc.ok("chtab", "key=xcatdport", "site.value=%d" % dport)
    xc.ok("chtab", "key=xcatiport", "site.value=%d" % iport)
    daemon = subprocess.Popen(python_minimal("xcatd", "-f"), env=xc.env, cwd=xc.tmp,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              universal_newlines=True)
    try:
        wait_for_port(dport, daemon)
        assert xc.read("/var/run/xcatd.pid") == "%d\n" % daemon.pid
        result = xc.run("lsxcatd", "-a", bypass=False, env={"XCATHOST": "localhost:%d" % dport})
        assert result.rc == 0, result
        lines = result.out.splitlines()
        assert lines[0].startswith("Version 2.17.0 (") and "NOT xCAT" in lines[0]
        assert lines[1] == "This is a Management Node"
        assert "dbengine=standin-csv" in lines
    finally:
        daemon.terminate()
        rc = daemon.wait(timeout=15)
    assert rc == 0                                   # SIGTERM stops it cleanly
    assert not os.path.exists(xc.path("/var/run/xcatd.pid"))


def test_xcatd_pid_file_naming_itself_or_another_program_is_stale(xc, monkeypatch):
    monkeypatch.setenv("XCAT_STANDIN_ROOT", xc.root)
    os.makedirs(xc.path("/var/run"))

    def pid_file(pid):
        with open(xc.path("/var/run/xcatd.pid"), "w") as handle:
            handle.write("%d\n" % pid)
        return xcatstandin.read_pidfile()

    assert pid_file(os.getpid()) is None          # PID 1 again after a container restart
    other = subprocess.Popen(["sleep", "30"])
    xcatd = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "xcatd"])
    try:
        assert pid_file(other.pid) is None        # a recycled pid
        assert pid_file(xcatd.pid) == xcatd.pid   # a running xcatd
    finally:
        for proc in (other, xcatd):
            proc.kill()
            proc.wait()


def test_xcatd_refuses_a_busy_port(xc):
    busy = socket.socket()
    busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    busy.bind(("0.0.0.0", 0))
    busy.listen(1)
    try:
        xc.ok("chtab", "key=xcatdport", "site.value=%d" % busy.getsockname()[1])
        result = xc.run("xcatd")
        assert result.rc == 1 and "cannot listen on TCP port %d" % busy.getsockname()[1] \
            in result.err
        assert not os.path.exists(xc.path("/var/run/xcatd.pid"))
    finally:
        busy.close()


# ---------------------------------------------------------------------------
# the package
# ---------------------------------------------------------------------------

def test_build_deb_is_fast_reproducible_and_well_formed(tmp_path):
    if not shutil.which("dpkg-deb"):
        pytest.skip("dpkg-deb is not installed")
    start = time.monotonic()
    first = build_deb.build(os.path.join(str(tmp_path), "a"))
    assert time.monotonic() - start < 2.0
    proc = subprocess.run([sys.executable, os.path.join(STANDIN, "build_deb.py"),
                           os.path.join(str(tmp_path), "b")], stdout=subprocess.PIPE,
                          universal_newlines=True, env=dict(os.environ,
                                                            PYTHONDONTWRITEBYTECODE="1"))
    second = proc.stdout.strip()
    assert os.path.basename(first) == "xcat_2.17.0-standin1_all.deb"
    assert os.path.basename(second) == os.path.basename(first)
    assert open(first, "rb").read() == open(second, "rb").read()

    info = subprocess.run(["dpkg-deb", "-I", first], stdout=subprocess.PIPE,
                          universal_newlines=True, check=True).stdout
    for line in ("Package: xcat", "Version: 2.17.0-standin1", "Architecture: all",
                 "Depends: python3-minimal, iproute2, mount, xorriso",
                 "Description: TEST STAND-IN for xCAT -- this is NOT xCAT"):
        assert " %s\n" % line in info
    for script in ("postinst", "prerm", "postrm", "conffiles", "md5sums"):
        assert re.search(r"\b%s\b" % script, info)

    listing = subprocess.run(["dpkg-deb", "-c", first], stdout=subprocess.PIPE,
                             universal_newlines=True, check=True).stdout
    entries = {}
    for line in listing.splitlines():
        fields = line.split()
        entries[fields[5].lstrip(".")] = (fields[0], fields[1], fields[6:])
    assert all(owner == "root/root" for _mode, owner, _rest in entries.values())
    assert entries["/etc/init.d/xcatd"][0] == "-rwxr-xr-x"
    assert entries["/etc/profile.d/xcat.sh"][0] == "-rw-r--r--"
    assert entries["/opt/xcat/bin/xcatclient"][0] == "-rwxr-xr-x"
    assert entries["/opt/xcat/lib/standin/xcatstandin.py"][0] == "-rw-r--r--"
    assert "/opt/xcat/share/doc/standin/README.md" in entries
    for command in xcatstandin.BIN_COMMANDS:
        assert entries["/opt/xcat/bin/" + command][2] == ["->", "xcatclient"]
    for command in xcatstandin.SBIN_COMMANDS:
        assert entries["/opt/xcat/sbin/" + command][2] == ["->", "../bin/xcatclient"]
    assert not any("__pycache__" in path for path in entries)
    conffiles = subprocess.run(["dpkg-deb", "-I", first, "conffiles"], stdout=subprocess.PIPE,
                               universal_newlines=True, check=True).stdout
    assert conffiles == "/etc/init.d/xcatd\n/etc/profile.d/xcat.sh\n"


def deb_out(*args):
    """stdout of dpkg-deb ARGS."""
    return subprocess.run(["dpkg-deb"] + list(args), stdout=subprocess.PIPE,
                          universal_newlines=True, check=True).stdout


def deb_paths(deb):
    """The paths in a package, from dpkg-deb -c."""
    return sorted(line.split()[5] for line in deb_out("-c", deb).splitlines())


@pytest.mark.parametrize("name, relations", [
    ("xcat", ""),
    ("xcat-site", "Provides: xcat\nConflicts: xcat\n"),
], ids=["xcat", "xcat-site"])
def test_build_deb_under_another_name_and_version(tmp_path, name, relations):
    if not shutil.which("dpkg-deb"):
        pytest.skip("dpkg-deb is not installed")
    debs = []
    for out in ("a", "b"):
        proc = subprocess.run([sys.executable, os.path.join(STANDIN, "build_deb.py"),
                               os.path.join(str(tmp_path), out), "--name", name,
                               "--version", "2.17.0-site1"],
                              stdout=subprocess.PIPE, universal_newlines=True, check=True,
                              env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
        debs.append(proc.stdout.strip())
    assert os.path.basename(debs[0]) == "%s_2.17.0-site1_all.deb" % name
    assert open(debs[0], "rb").read() == open(debs[1], "rb").read()
    assert deb_out("-f", debs[0], "Package", "Version", "Provides", "Conflicts") == \
        "Package: %s\nVersion: 2.17.0-site1\n%s" % (name, relations)
    assert "Depends: python3-minimal, iproute2, mount, xorriso\n" in deb_out("-f", debs[0])
    default = build_deb.build(os.path.join(str(tmp_path), "default"))
    assert deb_paths(debs[0]) == deb_paths(default)
    assert "./opt/xcat/sbin/copycds" in deb_paths(debs[0])


@pytest.mark.parametrize("option, value", [
    ("--name", "Xcat_Site"), ("--name", "-x"), ("--version", "site1"), ("--version", "2.17 rc"),
])
def test_build_deb_refuses_invalid_names_and_versions(tmp_path, capsys, option, value):
    with pytest.raises(SystemExit) as exit_info:
        build_deb.main(["build_deb.py", str(tmp_path / "out"), option + "=" + value])
    assert exit_info.value.code == 2
    assert "invalid package" in capsys.readouterr().err
    assert not os.path.exists(str(tmp_path / "out"))


# ---------------------------------------------------------------------------
# tests/lab/assets: images xcatfab did not build
# ---------------------------------------------------------------------------

ASSETS = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, "lab", "assets"))
XCATFAB_MARKERS = ("xcatfab-ready", "/etc/xcatfab", "startservice")


def dockerfile(name):
    """(text, [(INSTRUCTION, arguments)]) of tests/lab/assets/NAME/Dockerfile."""
    with open(os.path.join(ASSETS, name, "Dockerfile")) as handle:
        text = handle.read()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    logical = re.sub(r"\\\n", " ", "\n".join(lines))      # continuation lines joined
    instructions = [tuple(line.strip().split(None, 1)) for line in logical.splitlines()
                    if line.strip()]
    return text, instructions


def test_foreign_image_is_the_package_and_xcatd_only(tree):
    text, instructions = dockerfile("foreign-image")
    assert instructions == [
        ("FROM", "xcatfab/bookworm-minbase:bookworm"),
        ("COPY", "xcat.deb /tmp/xcat.deb"),
        ("RUN", "dpkg -i /tmp/xcat.deb && rm -f /tmp/xcat.deb"),
        ("EXPOSE", "3001 3002"),
        ("CMD", '["/bin/sh", "-c", ". /etc/profile.d/xcat.sh && exec xcatd -f"]'),
    ]
    for marker in XCATFAB_MARKERS:
        assert marker not in text
    # what the CMD relies on is in the package
    assert os.path.isfile(os.path.join(tree, "etc", "profile.d", "xcat.sh"))
    assert os.readlink(os.path.join(tree, "opt", "xcat", "sbin", "xcatd")) == "../bin/xcatclient"
    with open(os.path.join(ASSETS, "foreign-image", ".gitignore")) as handle:
        assert handle.read().split() == ["xcat.deb"]


def test_not_xcat_image_has_no_xcat():
    text, instructions = dockerfile("not-xcat-image")
    assert instructions == [
        ("FROM", "xcatfab/bookworm-minbase:bookworm"),
        ("STOPSIGNAL", "SIGKILL"),
        ("CMD", '["sleep", "infinity"]'),
    ]
    for marker in XCATFAB_MARKERS:
        assert marker not in text


@pytest.mark.parametrize("name", ["foreign-image", "not-xcat-image"])
def test_lab_asset_dockerfiles_pass_hadolint(name):
    hadolint = shutil.which("hadolint") or os.path.join(os.path.dirname(sys.executable),
                                                       "hadolint")
    if not os.access(hadolint, os.X_OK):
        pytest.skip("hadolint is not installed")
    proc = subprocess.run([hadolint, "--no-color", os.path.join(ASSETS, name, "Dockerfile")],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, cwd=ASSETS)
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout
