"""xCAT TEST STAND-IN -- this is NOT xCAT.

xcatfab installs this module (packaged as ``xcat_2.17.0-standin1_all.deb`` by
``tests/standin/build_deb.py``) in place of real xCAT, because real xCAT
packages cannot be downloaded in the test environment.  It imitates the part
of xCAT's command-line behaviour that xcatfab relies on: the commands, their
options, their output format, their messages and exit codes, and the daemon
on TCP 3001/3002.  It provisions nothing and talks to no hardware.

Every command is one function here; ``/opt/xcat/bin/xcatclient`` calls
:func:`main`, which dispatches on the name the command was invoked under
(``/opt/xcat/bin/lsdef`` and friends are symlinks to ``xcatclient``).

Storage: one CSV file per xCAT table in ``/etc/xcat/<table>.csv``, in the
format ``tabdump`` prints (``#key,value,comments,disable`` then
``"master","10.0.0.1",,``).  All table access happens under an exclusive
``flock`` on ``/etc/xcat/.standin.lock``.

Only modules shipped in Debian's ``python3-minimal`` are imported (no
shutil, json, tempfile, argparse, shlex, pathlib), so the package depends on
``python3-minimal`` alone.

Environment
-----------
``XCATBYPASS``   (real xCAT) work on the tables directly, without xcatd.
``XCATHOST``     (real xCAT) ``host:port`` of xcatd, default ``localhost:3001``.

Test-only hooks, honoured only when ``XCAT_STANDIN_ROOT`` is set:

``XCAT_STANDIN_ROOT``     prefix for every file path the stand-in touches
                          (/etc/xcat, /install, /var/log/xcat, /var/run, ...).
``XCAT_STANDIN_FAKE_IP``  directory with files ``route`` (``ip -4 route``),
                          ``addr`` (``ip -4 -o addr show``) and ``link``
                          (``ip link``) used instead of running ``ip``.
``XCAT_STANDIN_LOOPDIR``  directory searched for ``loop[0-9]*`` instead of
                          /dev; there any file counts (tests cannot mknod).
``XCAT_STANDIN_MOUNT``    program run instead of ``mount`` by copycds.
``XCAT_STANDIN_UMOUNT``   program run instead of ``umount`` by copycds.
``XCAT_STANDIN_MODPROBE`` program run instead of ``modprobe`` by copycds.
"""

import csv
import errno
import fcntl
import getopt
import hashlib
import io
import ipaddress
import os
import re
import select
import signal
import socket
import stat
import subprocess
import sys
import time

XCAT_VERSION = "2.17.0"
PACKAGE_VERSION = "2.17.0-standin1"
VERSION_LINE = ("Version %s (git commit standin, built by xcatfab; "
                "xCAT TEST STAND-IN %s, NOT xCAT)" % (XCAT_VERSION, PACKAGE_VERSION))

# Where the commands live in the package (real xCAT's split).
BIN_COMMANDS = ("lsdef", "mkdef", "chdef", "rmdef", "lsxcatd", "nodels",
                "rpower", "rvitals", "rinv")
SBIN_COMMANDS = ("tabdump", "chtab", "tabprune", "tabrestore", "makenetworks",
                 "copycds", "xcatconfig", "xcatd")

COMMAND_LOG = "/var/log/xcat/standin-commands.log"
XCATD_LOG = "/var/log/xcat/standin-xcatd.log"
XCATD_PIDFILE = "/var/run/xcatd.pid"
TABLE_DIR = "/etc/xcat"
MOUNT_BASE = "/var/run/xcat/mountpoint"
MASK = "********"


# ---------------------------------------------------------------------------
# Paths and test hooks
# ---------------------------------------------------------------------------

def test_root():
    """Return the XCAT_STANDIN_ROOT prefix ('' in production)."""
    return os.environ.get("XCAT_STANDIN_ROOT", "").rstrip("/")


def fs(path):
    """Map an absolute xCAT path (e.g. /etc/xcat) to the real file system."""
    root = test_root()
    return root + path if root else path


def test_hook(name):
    """Value of a test-only variable, or None unless XCAT_STANDIN_ROOT is set."""
    if not test_root():
        return None
    return os.environ.get(name) or None


# ---------------------------------------------------------------------------
# Output in xCAT's client format
# ---------------------------------------------------------------------------

class Run:
    """Per-invocation state: the accumulated exit code (xCAT ORs error codes)."""
    exitcode = 0
    stdin_text = None     # stanza text read for -z, logged (masked)
    notes = []            # lines for the command log only (never printed)


class Abort(Exception):
    """Stop the command; the exit code has already been recorded."""


def shorthost():
    return socket.gethostname().split(".")[0]


def info(*lines):
    """Informational data: plain lines on stdout."""
    for line in lines:
        sys.stdout.write("%s\n" % line)
    sys.stdout.flush()


def error(*lines, code=1):
    """An xCAT error: ``Error: [host]: text`` on stderr, exit code |= code."""
    for line in lines:
        sys.stderr.write("Error: [%s]: %s\n" % (shorthost(), line))
    sys.stderr.flush()
    Run.exitcode |= code


def warning(*lines):
    """An xCAT warning: ``Warning: [host]: text`` on stderr."""
    for line in lines:
        sys.stderr.write("Warning: [%s]: %s\n" % (shorthost(), line))
    sys.stderr.flush()


def fail(*lines, code=1):
    """error() and stop."""
    error(*lines, code=code)
    raise Abort()


def note(text):
    """A line for this invocation's command-log record only: never on stdout or stderr."""
    Run.notes.append(text)


def perl_true(value):
    """Perl truthiness of an environment value ('' and '0' are false)."""
    return bool(value) and value != "0"


# ---------------------------------------------------------------------------
# Command log with password masking
# ---------------------------------------------------------------------------

_ATTR_RE = re.compile(r"^(\s*)([^=!~\s][^=!~]*?)(==|!=|=~|!~|=)(\s*)(.*)$", re.S)


def mask_secret(text):
    """Mask the value of ``attr=value`` (or ==, =~ ...) if attr names a password."""
    m = _ATTR_RE.match(text)
    if m and "password" in m.group(2).lower():
        return m.group(1) + m.group(2) + m.group(3) + m.group(4) + MASK
    return text


def shell_quote(word):
    if word and re.fullmatch(r"[A-Za-z0-9_./:=,@%+^-]+", word):
        return word
    return "'" + word.replace("'", "'\\''") + "'"


def log_invocation(argv, rc):
    """Append one record per invocation to COMMAND_LOG; never fails the command."""
    try:
        path = fs(COMMAND_LOG)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        words = [os.path.basename(argv[0])] + [mask_secret(a) for a in argv[1:]]
        record = "%s pid=%d uid=%d bypass=%d rc=%d cmd: %s\n" % (
            time.strftime("%Y-%m-%dT%H:%M:%S%z"), os.getpid(), os.getuid(),
            1 if perl_true(os.environ.get("XCATBYPASS", "")) else 0, rc,
            " ".join(shell_quote(w) for w in words))
        if Run.stdin_text is not None:
            for line in Run.stdin_text.splitlines():
                record += "    stdin| %s\n" % mask_secret(line)
        for line in Run.notes:
            record += "    note| %s\n" % line
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, record.encode("utf-8", "replace"))
        finally:
            os.close(fd)
    except OSError:
        pass


# ---------------------------------------------------------------------------
# xcatd reachability (the client side of every table command)
# ---------------------------------------------------------------------------

def xcatd_target():
    """(host, port, label) from XCATHOST, like xCAT's Client.pm."""
    label = os.environ.get("XCATHOST") or "localhost:3001"
    host, sep, port = label.rpartition(":")
    if not sep:
        host, port = label, "3001"
    host = host.strip("[]")
    if host in ("", "localhost"):
        host = "127.0.0.1"
    return host, int(port), label


def xcatd_reachable():
    """Return (True, None) if a TCP connect to xcatd works, else (False, reason)."""
    host, port, _label = xcatd_target()
    try:
        sock = socket.create_connection((host, port), timeout=5)
        sock.close()
        return True, None
    except socket.timeout:
        return False, "Connection timed out"
    except OSError as exc:
        return False, os.strerror(exc.errno) if exc.errno else str(exc)


def require_xcatd():
    """Fail like xCAT's client when xcatd is down, unless XCATBYPASS is set."""
    if perl_true(os.environ.get("XCATBYPASS", "")):
        return
    ok, reason = xcatd_reachable()
    if ok:
        return
    label = xcatd_target()[2]
    sys.stdout.write("Unable to open socket connection to xcatd daemon on %s.\n"
                     "Verify that the xcatd daemon is running and that your SSL "
                     "setup is correct.\n" % label)
    sys.stdout.flush()
    sys.stderr.write("Connection failure: IO::Socket::INET: connect: %s at "
                     "/opt/xcat/lib/perl/xCAT/Client.pm line 248.\n" % reason)
    Run.exitcode |= 1
    raise Abort()


# ---------------------------------------------------------------------------
# Table schema (a subset of xCAT's Schema.pm)
# ---------------------------------------------------------------------------

_C, _D = "comments", "disable"

TABLES = {
    "site": ["key", "value", _C, _D],
    "networks": ["netname", "net", "mask", "mgtifname", "gateway", "dhcpserver",
                 "tftpserver", "nameservers", "ntpservers", "logservers",
                 "dynamicrange", "staticrange", "staticrangeincrement",
                 "nodehostname", "ddnsdomain", "vlanid", "domain", "mtu", _C, _D],
    "nodelist": ["node", "groups", "status", "statustime", "appstatus",
                 "appstatustime", "primarysn", "hidden", "updatestatus",
                 "updatestatustime", "zonename", _C, _D],
    "nodegroup": ["groupname", "grouptype", "members", "membergroups",
                  "wherevals", _C, _D],
    "hosts": ["node", "ip", "hostnames", "otherinterfaces", _C, _D],
    "mac": ["node", "interface", "mac", _C, _D],
    "nodehm": ["node", "power", "mgt", "cons", "termserver", "termport",
               "conserver", "serialport", "serialspeed", "serialflow", "getmac",
               "cmdmapping", "consoleondemand", "consoleenabled", _C, _D],
    "ipmi": ["node", "bmc", "bmcport", "taggedvlan", "bmcid", "username",
             "password", _C, _D],
    "noderes": ["node", "servicenode", "netboot", "tftpserver", "tftpdir",
                "nfsserver", "monserver", "nfsdir", "installnic", "primarynic",
                "discoverynics", "cmdinterface", "xcatmaster", "nimserver",
                "routenames", "nameservers", "proxydhcp", "syslog", _C, _D],
    "nodetype": ["node", "os", "arch", "profile", "provmethod", "supportedarchs",
                 "nodetype", _C, _D],
    "chain": ["node", "currstate", "currchain", "chain", "ondiscover", _C, _D],
    "postscripts": ["node", "postscripts", "postbootscripts", _C, _D],
    "vpd": ["node", "serial", "mtm", "side", "asset", "uuid", _C, _D],
    "switch": ["node", "switch", "port", "vlan", "interface", _C, _D],
    "bootparams": ["node", "kernel", "initrd", "kcmdline", "addkcmdline",
                   "dhcpstatements", "adaptermac", _C, _D],
    "nodepos": ["node", "rack", "u", "chassis", "slot", "room", "height", _C, _D],
    "nics": ["node", "nicips", "nichostnamesuffixes", "nichostnameprefixes",
             "nictypes", "niccustomscripts", "nicnetworks", "nicaliases",
             "nicextraparams", "nicdevices", _C, _D],
    "osimage": ["imagename", "groups", "profile", "imagetype", "description",
                "provmethod", "rootfstype", "osdistroname", "osupdatename",
                "cfmdir", "osname", "osvers", "osarch", "synclists",
                "postscripts", "postbootscripts", "serverrole", "isdeletable",
                "kitcomponents", "environvar", _C, _D],
    "linuximage": ["imagename", "template", "boottarget", "addkcmdline",
                   "pkglist", "pkgdir", "otherpkglist", "otherpkgdir", "exlist",
                   "postinstall", "rootimgdir", "kerneldir", "nodebootif",
                   "otherifce", "netdrivers", "kernelver", "krpmver",
                   "permission", "dump", "crashkernelsize", "partitionfile",
                   "driverupdatesrc", _C, _D],
    "osdistro": ["osdistroname", "basename", "majorversion", "minorversion",
                 "arch", "type", "dirpaths", _C, _D],
    "passwd": ["key", "username", "password", "cryptmethod", "authdomain", _C, _D],
    "auditlog": ["recid", "audittime", "userid", "clientname", "clienttype",
                 "command", "noderange", "args", "status", _C, _D],
    "eventlog": ["recid", "eventtime", "eventtype", "monitor", "monnode", "node",
                 "application", "component", "id", "severity", "message",
                 "rawdata", _C, _D],
}

# Node attribute -> (table, column), keyed by nodename (or group name).
NODE_ATTRS = {"usercomment": ("nodelist", "comments"),
              "bmcvlantag": ("ipmi", "taggedvlan"),
              "bmcusername": ("ipmi", "username"),
              "bmcpassword": ("ipmi", "password"),
              "switchport": ("switch", "port"),
              "switchvlan": ("switch", "vlan"),
              "switchinterface": ("switch", "interface"),
              "unit": ("nodepos", "u")}
for _t, _cols in (
        ("nodelist", "groups status statustime appstatus appstatustime primarysn "
                     "hidden updatestatus updatestatustime zonename"),
        ("hosts", "ip hostnames otherinterfaces"),
        ("mac", "mac"),
        ("nodehm", "power mgt cons termserver termport conserver serialport "
                   "serialspeed serialflow getmac cmdmapping consoleondemand "
                   "consoleenabled"),
        ("ipmi", "bmc bmcport"),
        ("noderes", "servicenode netboot tftpserver tftpdir nfsserver monserver "
                    "nfsdir installnic primarynic discoverynics cmdinterface "
                    "xcatmaster nimserver routenames nameservers proxydhcp syslog"),
        ("nodetype", "os arch profile provmethod supportedarchs nodetype"),
        ("chain", "currstate currchain chain ondiscover"),
        ("postscripts", "postscripts postbootscripts"),
        ("vpd", "serial mtm side asset uuid"),
        ("switch", "switch"),
        ("bootparams", "kernel initrd kcmdline addkcmdline dhcpstatements adaptermac"),
        ("nodepos", "rack chassis slot room height"),
        ("nics", "nicips nichostnamesuffixes nichostnameprefixes nictypes "
                 "niccustomscripts nicnetworks nicaliases nicextraparams nicdevices")):
    for _a in _cols.split():
        NODE_ATTRS[_a] = (_t, _a)
NODE_TABLES = sorted({t for t, _c in NODE_ATTRS.values()})


def _columns_as_attrs(table, skip):
    attrs = {c: (table, c) for c in TABLES[table] if c not in skip}
    attrs.pop(_C, None)
    attrs.pop(_D, None)
    return attrs


NETWORK_ATTRS = _columns_as_attrs("networks", ("netname",))
NETWORK_ATTRS["usercomment"] = ("networks", _C)
OSIMAGE_ATTRS = _columns_as_attrs("linuximage", ("imagename",))
OSIMAGE_ATTRS.update(_columns_as_attrs("osimage", ("imagename",)))
OSIMAGE_ATTRS["usercomment"] = ("osimage", _C)
OSDISTRO_ATTRS = _columns_as_attrs("osdistro", ("osdistroname",))
GROUP_ATTRS = dict(NODE_ATTRS)
GROUP_ATTRS.pop("groups")
GROUP_ATTRS.update({a: ("nodegroup", a)
                    for a in ("grouptype", "members", "membergroups", "wherevals")})

# Object types the stand-in implements: type -> attribute map (None: free-form).
OBJECT_TYPES = {"node": NODE_ATTRS, "group": GROUP_ATTRS, "network": NETWORK_ATTRS,
                "osimage": OSIMAGE_ATTRS, "osdistro": OSDISTRO_ATTRS, "site": None}
# xCAT's other object types: valid in xCAT, not implemented here.
OTHER_XCAT_TYPES = ("auditlog", "boottarget", "eventlog", "firmware", "kit",
                    "kitcomponent", "kitrepo", "monitoring", "notification",
                    "osdistroupdate", "pdu", "policy", "rack", "route",
                    "taskstate", "zone")
# Where each type's object name lives.
OBJECT_KEY = {"network": ("networks", "netname"), "osimage": ("osimage", "imagename"),
              "osdistro": ("osdistro", "osdistroname")}


# ---------------------------------------------------------------------------
# CSV table storage
# ---------------------------------------------------------------------------

def csv_field(value):
    """One field as tabdump writes it: quoted, "" doubled, empty for null."""
    if value is None or value == "":
        return ""
    return '"' + str(value).replace('"', '""') + '"'


class Table:
    """One xCAT table: ordered rows (dicts) kept in /etc/xcat/<name>.csv."""

    def __init__(self, name, directory):
        self.name = name
        self.columns = list(TABLES[name])
        self.path = os.path.join(directory, name + ".csv")
        self.rows = []
        self.dirty = False
        self._load()

    def _load(self):
        if not os.path.exists(self.path):
            return
        with open(self.path, newline="", encoding="utf-8") as handle:
            text = handle.read()
        reader = csv.reader(io.StringIO(text))
        header = None
        for fields in reader:
            if not fields:
                continue
            if header is None:
                fields[0] = fields[0].lstrip("#")
                header = fields
                continue
            row = {c: "" for c in self.columns}
            for col, value in zip(header, fields):
                if col in row:
                    row[col] = value
            self.rows.append(row)

    def dump(self, rows=None):
        """The table in tabdump format, as a list of lines."""
        lines = ["#" + ",".join(self.columns)]
        for row in self.rows if rows is None else rows:
            lines.append(",".join(csv_field(row.get(c, "")) for c in self.columns))
        return lines

    def save(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = "%s.tmp.%d" % (self.path, os.getpid())
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write("\n".join(self.dump()) + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
        self.dirty = False

    def get(self, column, value):
        """First row whose column equals value, or None."""
        for row in self.rows:
            if row.get(column) == value:
                return row
        return None

    def select(self, **criteria):
        return [r for r in self.rows
                if all(r.get(k) == v for k, v in criteria.items())]

    def upsert(self, keys, values):
        """Set values on the rows matching keys; add one row if none match."""
        matches = self.select(**keys)
        if not matches:
            row = {c: "" for c in self.columns}
            row.update(keys)
            self.rows.append(row)
            matches = [row]
        for row in matches:
            row.update(values)
        self.dirty = True
        return matches

    def delete(self, predicate):
        """Delete the rows for which predicate(row) is true; return how many."""
        before = len(self.rows)
        self.rows = [r for r in self.rows if not predicate(r)]
        if len(self.rows) != before:
            self.dirty = True
        return before - len(self.rows)


class DB:
    """All tables of one invocation, under an exclusive lock, saved on commit()."""

    def __init__(self):
        self.directory = fs(TABLE_DIR)
        os.makedirs(self.directory, exist_ok=True)
        self._lockfd = os.open(os.path.join(self.directory, ".standin.lock"),
                               os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lockfd, fcntl.LOCK_EX)
        self._tables = {}

    def table(self, name):
        if name not in self._tables:
            self._tables[name] = Table(name, self.directory)
        return self._tables[name]

    def exists(self, name):
        return os.path.exists(os.path.join(self.directory, name + ".csv"))

    def commit(self):
        for table in self._tables.values():
            if table.dirty:
                table.save()

    def close(self):
        os.close(self._lockfd)

    # -- site helpers -------------------------------------------------------
    def site(self, key, default=""):
        row = self.table("site").get("key", key)
        return row["value"] if row and row["value"] != "" else default

    def set_site(self, key, value):
        self.table("site").upsert({"key": key}, {"value": value})


def open_db():
    """Open (and, on first use, initialise) the tables."""
    db = DB()
    ensure_initialized(db)
    return db


# ---------------------------------------------------------------------------
# Host facts: ip, hostname, resolv.conf
# ---------------------------------------------------------------------------

def system_tool(name, hook=None):
    """Path of a system program (ip, mount, ...): the test hook's program if one
    is set, else the first executable in /sbin, /usr/sbin, /bin, /usr/bin."""
    override = test_hook(hook) if hook else None
    if override:
        return override
    for directory in ("/sbin", "/usr/sbin", "/bin", "/usr/bin"):
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return name


def run_quiet(argv):
    """Run argv with stdout discarded; return (rc, stderr text), rc 127 if it cannot start."""
    try:
        proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              universal_newlines=True, check=False)
    except OSError as exc:
        return 127, "%s: %s\n" % (os.path.basename(argv[0]), exc.strerror)
    return proc.returncode, proc.stderr


def ip_output(args, fake_name):
    """Output of ``ip ARGS`` -- or of the fake file in XCAT_STANDIN_FAKE_IP."""
    fake_dir = test_hook("XCAT_STANDIN_FAKE_IP")
    if fake_dir:
        try:
            with open(os.path.join(fake_dir, fake_name), encoding="utf-8") as handle:
                return handle.read()
        except OSError:
            return ""
    try:
        proc = subprocess.run([system_tool("ip")] + args, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, universal_newlines=True,
                              check=False)
        return proc.stdout
    except OSError:
        return ""


def local_ipv4_addrs():
    """[(device, address, prefixlen)] from ``ip -4 -o addr show``."""
    result = []
    for line in ip_output(["-4", "-o", "addr", "show"], "addr").splitlines():
        m = re.match(r"^\d+:\s+(\S+?)(?:@\S+)?\s+inet\s+(\d+\.\d+\.\d+\.\d+)/(\d+)", line)
        if m:
            result.append((m.group(1), m.group(2), int(m.group(3))))
    return result


def link_mtus():
    """{device: mtu} for BROADCAST links, from ``ip link`` (as networks.pm does)."""
    mtus = {}
    for line in ip_output(["link"], "link").splitlines():
        m = re.match(r"^\d+:\s+([^:@\s]+)(?:@[^:\s]*)?:\s+<([^>]*)>.*?\bmtu\s+(\d+)", line)
        if m and "BROADCAST" in m.group(2).split(","):
            mtus[m.group(1)] = m.group(3)
    return mtus


def dns_domain():
    """``hostname -d`` (what xcatconfig uses for site.domain)."""
    try:
        proc = subprocess.run(["hostname", "-d"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, universal_newlines=True,
                              check=False)
        return proc.stdout.strip()
    except OSError:
        return ""


def resolv_nameservers():
    servers = []
    try:
        with open(fs("/etc/resolv.conf"), encoding="utf-8") as handle:
            for line in handle:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    servers.append(parts[1])
    except OSError:
        pass
    return servers


def system_timezone():
    try:
        with open(fs("/etc/timezone"), encoding="utf-8") as handle:
            zone = handle.read().strip()
            if zone:
                return zone
    except OSError:
        pass
    try:
        target = os.readlink(fs("/etc/localtime"))
        if "zoneinfo/" in target:
            return target.split("zoneinfo/", 1)[1]
    except OSError:
        pass
    return "UTC"


# ---------------------------------------------------------------------------
# Initialisation (what xcatconfig -i does to the database)
# ---------------------------------------------------------------------------

def site_defaults():
    """Initial site table, in the order real xCAT's xcatconfig creates it."""
    addrs = [a for _dev, a, _p in local_ipv4_addrs() if not a.startswith("127.")]
    master = addrs[0] if addrs else ""
    forwarders = [ns for ns in resolv_nameservers() if ns != master]
    return [
        ("blademaxp", "64"), ("fsptimeout", "0"), ("installdir", "/install"),
        ("ipmimaxp", "64"), ("ipmiretries", "3"), ("ipmitimeout", "2"),
        ("consoleondemand", "no"), ("master", master), ("forwarders", ",".join(forwarders)),
        ("nameservers", master), ("maxssh", "8"), ("ppcmaxp", "64"),
        ("ppcretry", "3"), ("ppctimeout", "0"), ("powerinterval", "0"),
        ("syspowerinterval", "0"), ("sharedtftp", "1"),
        ("SNsyncfiledir", "/var/xcat/syncfiles"),
        ("nodesyncfiledir", "/var/xcat/node/syncfiles"), ("tftpdir", "/tftpboot"),
        ("xcatdport", "3001"), ("xcatiport", "3002"), ("xcatconfdir", "/etc/xcat"),
        ("timezone", system_timezone()), ("useNmapfromMN", "no"),
        ("enableASMI", "no"), ("db2installloc", "/mntdb2"),
        ("databaseloc", "/var/lib"), ("sshbetweennodes", "ALLGROUPS"),
        ("dnshandler", "ddns"), ("vsftp", "n"), ("cleanupxcatpost", "no"),
        ("dhcplease", "43200"), ("auditnosyslog", "0"), ("xcatsslversion", "TLSv1"),
        ("auditskipcmds", "ALL"), ("domain", dns_domain()), ("dhcpinterfaces", ""),
    ]


def initialize_site(db, force=False):
    """Write the site defaults (only missing keys unless force)."""
    for key, value in site_defaults():
        if force or db.table("site").get("key", key) is None:
            db.set_site(key, value)
    post = db.table("postscripts")
    if force or post.get("node", "xcatdefaults") is None:
        post.upsert({"node": "xcatdefaults"},
                    {"postscripts": "syslog,remoteshell,syncfiles",
                     "postbootscripts": "otherpkgs"})
    if force or post.get("node", "service") is None:
        post.upsert({"node": "service"}, {"postscripts": "servicenode"})


def ensure_initialized(db):
    """First use: create the site table like ``xcatconfig -i``."""
    if not db.exists("site"):
        initialize_site(db)
        db.commit()


# ---------------------------------------------------------------------------
# The object layer (xCAT's DBobjUtils): types, names and attributes
# ---------------------------------------------------------------------------

def split_list(value):
    return [v for v in (value or "").split(",") if v != ""]


def key_column(objtype, table):
    """The column of ``table`` that holds an object's name (tables keyed per node also hold groups)."""
    if objtype in ("node", "group"):
        return "groupname" if table == "nodegroup" else "node"
    if table == "linuximage":
        return "imagename"
    return OBJECT_KEY[objtype][1]


def node_groups(db, node):
    row = db.table("nodelist").get("node", node)
    return split_list(row["groups"]) if row else []


def objects_of_type(db, objtype):
    """Names of the defined objects of a type (sorted)."""
    if objtype == "site":
        return ["clustersite"] if db.table("site").rows else []
    if objtype == "node":
        return sorted(r["node"] for r in db.table("nodelist").rows if r["node"])
    if objtype == "group":
        names = {r["groupname"] for r in db.table("nodegroup").rows if r["groupname"]}
        for row in db.table("nodelist").rows:
            names.update(split_list(row["groups"]))
        return sorted(names)
    table, column = OBJECT_KEY[objtype]
    return sorted({r[column] for r in db.table(table).rows if r[column]})


def group_members(db, group):
    return [r["node"] for r in db.table("nodelist").rows
            if group in split_list(r["groups"])]


def get_def(db, objtype, name):
    """The attributes of one object as {attr: value} (empty values omitted,
    except for the site, whose every key is returned)."""
    if objtype == "site":
        return {r["key"]: r["value"] for r in db.table("site").rows if r["key"]}
    result = {}
    attrs = OBJECT_TYPES[objtype]
    if objtype == "node":
        inherit = node_groups(db, name)
    else:
        inherit = []
    for attr, (table, column) in attrs.items():
        keycol = key_column(objtype, table)
        tab = db.table(table)
        row = tab.get(keycol, name)
        value = row[column] if row else ""
        if value == "" and table != "nodelist":
            # xCAT inherits node attributes from the node's groups, in order.
            for group in inherit:
                grow = tab.get(keycol, group)
                if grow and grow[column] != "":
                    value = grow[column]
                    break
        if value != "":
            result[attr] = value
    if objtype == "group":
        result.setdefault("grouptype", "static")
        if result["grouptype"] == "static":
            result["members"] = ",".join(group_members(db, name))
    return result


def merge_list(old, new, mode):
    """Apply chdef -p (plus) / -m (minus) to a comma list."""
    if mode == "plus":
        items = split_list(old)
        items += [v for v in split_list(new) if v not in items]
        return ",".join(items)
    if mode == "minus":
        drop = set(split_list(new))
        return ",".join(v for v in split_list(old) if v not in drop)
    return new


def merge_nic_attr(old, nic, value):
    """Set one interface's entry in a nics column ("eth0!1.2.3.4,eth1!...")."""
    entries = [e for e in split_list(old) if e.split("!", 1)[0] != nic]
    if value != "":
        entries.append("%s!%s" % (nic, value))
    return ",".join(entries)


def set_def(db, objtype, name, attrs, mode="set"):
    """Write attributes of one object (creating its rows as needed)."""
    if objtype == "site":
        site = db.table("site")
        for key, value in attrs.items():
            row = site.get("key", key)
            value = merge_list(row["value"] if row else "", value, mode)
            site.upsert({"key": key}, {"value": value})
        return
    amap = OBJECT_TYPES[objtype]
    if objtype == "group" and "members" in attrs:
        set_group_members(db, name, attrs["members"], mode)
    for attr, value in attrs.items():
        nic = None
        if attr not in amap and "." in attr and attr.split(".", 1)[0] in amap:
            attr, nic = attr.split(".", 1)
        if attr in ("objtype", "members") or attr not in amap:
            continue
        table, column = amap[attr]
        keycol = key_column(objtype, table)
        tab = db.table(table)
        row = tab.get(keycol, name)
        old = row[column] if row else ""
        if nic is not None:
            new = merge_nic_attr(old, nic, value)
        else:
            new = merge_list(old, value, mode)
        if row is None and new == "":
            continue
        tab.upsert({keycol: name}, {column: new})
    if objtype == "group":
        db.table("nodegroup").upsert({"groupname": name}, {})
        row = db.table("nodegroup").get("groupname", name)
        if row["grouptype"] == "":
            row["grouptype"] = "static"
        if row["grouptype"] == "static":
            row["members"] = "static"


def set_group_members(db, group, members, mode):
    """Static group membership lives in each member's nodelist.groups."""
    wanted = split_list(members)
    nodelist = db.table("nodelist")
    current = set(group_members(db, group))
    if mode == "set":
        remove = current - set(wanted)
        add = wanted
    elif mode == "plus":
        remove, add = set(), wanted
    else:
        remove, add = set(wanted), []
    for row in nodelist.rows:
        groups = split_list(row["groups"])
        if row["node"] in remove and group in groups:
            groups.remove(group)
        if row["node"] in add and group not in groups:
            groups.append(group)
        if ",".join(groups) != row["groups"]:
            row["groups"] = ",".join(groups)
            nodelist.dirty = True
    for node in wanted:
        if mode != "minus" and nodelist.get("node", node) is None:
            error("Could not find a node named '%s', skipping to the next node." % node)


def rm_def(db, objtype, name):
    """Delete an object and all its table rows."""
    if objtype == "site":
        db.table("site").delete(lambda r: True)
    elif objtype == "node":
        for table in NODE_TABLES:
            db.table(table).delete(lambda r, n=name: r["node"] == n)
    elif objtype == "group":
        nodelist = db.table("nodelist")
        for row in nodelist.rows:
            groups = split_list(row["groups"])
            if name in groups:
                groups.remove(name)
                row["groups"] = ",".join(groups)
                nodelist.dirty = True
        for table in NODE_TABLES:
            if table != "nodelist":
                db.table(table).delete(lambda r, n=name: r["node"] == n)
        db.table("nodegroup").delete(lambda r, n=name: r["groupname"] == n)
    elif objtype == "osimage":
        for table in ("osimage", "linuximage"):
            db.table(table).delete(lambda r, n=name: r["imagename"] == n)
    else:
        table, column = OBJECT_KEY[objtype]
        db.table(table).delete(lambda r, c=column, n=name: r[c] == n)


def xcatdefaults_postscripts(db):
    row = db.table("postscripts").get("node", "xcatdefaults")
    if row is None or row["disable"] not in ("", "0", "no"):
        return "", ""
    return row["postscripts"], row["postbootscripts"]


def attr_lines(attr, value):
    """Lines for one attribute, with nics attributes expanded per interface."""
    if attr.startswith("nic") and "!" in value:
        lines = []
        for entry in split_list(value):
            nic, _sep, val = entry.partition("!")
            lines.append("    %s.%s=%s" % (attr, nic, val))
        return lines
    return ["    %s=%s" % (attr, value)]


# ---------------------------------------------------------------------------
# Noderanges and -w selections
# ---------------------------------------------------------------------------

def _expand_brackets(item):
    m = re.search(r"\[(\d+)-(\d+)\]", item)
    if not m:
        return [item]
    lo, hi = m.group(1), m.group(2)
    width = len(lo) if lo.startswith("0") else 0
    result = []
    for number in range(int(lo), int(hi) + 1):
        text = str(number).zfill(width)
        result.extend(_expand_brackets(item[:m.start()] + text + item[m.end():]))
    return result


def expand_noderange(db, noderange, for_mkdef=False):
    """A small subset of xCAT noderanges: lists, n[1-3], n1-n3, groups, /regex."""
    nodes = objects_of_type(db, "node")
    groups = set(objects_of_type(db, "group"))
    result = []
    for item in noderange.split(","):
        if not item:
            continue
        if item.startswith("/") and not for_mkdef:
            pattern = re.compile(item[1:])
            result.extend(n for n in nodes if pattern.search(n))
        elif item in nodes or for_mkdef and "[" not in item and "-" not in item:
            result.append(item)
        elif "[" in item:
            result.extend(_expand_brackets(item))
        elif not for_mkdef and item in groups:
            result.extend(group_members(db, item))
        else:
            m = re.fullmatch(r"(\D*?)(\d+)(\D*)-(\D*?)(\d+)(\D*)", item)
            if m and m.group(1) == m.group(4) and m.group(3) == m.group(6):
                width = len(m.group(2)) if m.group(2).startswith("0") else 0
                for number in range(int(m.group(2)), int(m.group(5)) + 1):
                    result.append(m.group(1) + str(number).zfill(width) + m.group(3))
            else:
                result.append(item)
    seen = set()
    return [n for n in result if not (n in seen or seen.add(n))]


_SELECT_RE = re.compile(r"^([^=!~<>]+)(==|!=|=~|!~)(.*)$")


def parse_selection(strings):
    """Parse -w strings into [(attr, op, value)]; None if malformed."""
    result = []
    for text in strings:
        m = _SELECT_RE.match(text)
        if not m:
            return None
        value = m.group(3)
        if m.group(2) in ("=~", "!~") and len(value) >= 2 and value[0] == value[-1] == "/":
            value = value[1:-1]
        result.append((m.group(1), m.group(2), value))
    return result


def selection_matches(attrs, selection):
    for attr, op, value in selection:
        actual = attrs.get(attr, "")
        if op == "==" and actual != value:
            return False
        if op == "!=" and actual == value:
            return False
        if op == "=~" and not re.search(value, actual):
            return False
        if op == "!~" and re.search(value, actual):
            return False
    return True


# ---------------------------------------------------------------------------
# Stanza files (mkdef -z / chdef -z / lsdef -z)
# ---------------------------------------------------------------------------

def parse_stanzas(text):
    """[(name, {attr: value})] from xCAT stanza text; None if malformed."""
    objects = []
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "=" in line and current is not None:
            attr, _sep, value = line.partition("=")
            current[attr.strip()] = value.strip()
        elif line.endswith(":") and "=" not in line:
            current = {}
            objects.append((line[:-1].strip(), current))
        else:
            return None
    return objects


# ---------------------------------------------------------------------------
# mkdef / chdef / lsdef / rmdef  (xCAT's DBobjectdefs plugin)
# ---------------------------------------------------------------------------

DEF_SHORT = "acdfi:h?lsmn:o:pt:Vvw:xzSu"
DEF_LONG = ["all", "compress", "dynamic", "force", "help", "long", "short",
            "minus", "plus", "verbose", "version", "xml", "stanza", "nocache",
            "osimage", "nics"]
DEF_FLAGS = {"-a": "all", "--all": "all", "-c": "compress", "--compress": "compress",
             "-d": "dynamic", "--dynamic": "dynamic", "-f": "force", "--force": "force",
             "-h": "help", "-?": "help", "--help": "help", "-l": "long", "--long": "long",
             "-s": "short", "--short": "short", "-m": "minus", "--minus": "minus",
             "-p": "plus", "--plus": "plus", "-V": "verbose", "--verbose": "verbose",
             "-v": "version", "--version": "version", "-x": "xml", "--xml": "xml",
             "-z": "stanza", "--stanza": "stanza", "--nocache": "nocache", "-S": "S",
             "--osimage": "osimage", "--nics": "nics", "-u": "u"}

DEF_USAGE = {
    "lsdef": ["", "Usage: lsdef - List xCAT data object definitions.", "",
              "  lsdef [-h | --help ] [-t object-types]", "",
              "  lsdef [-V | --verbose] [-t object-types] [-o object-names]",
              "    [ -l | --long] [-s | --short] [-a | --all] [-z | --stanza ] [-S]",
              "    [-i attr-list] [-w attr==val [-w attr=~val] ...] [noderange]"],
    "mkdef": ["", "Usage: mkdef - Create xCAT data object definitions.", "",
              "  mkdef [-h | --help ] [-t object-types]", "",
              "  mkdef [-V | --verbose] [-t object-types] [-o object-names] [-z|--stanza ]",
              "      [-d | --dynamic] [-w attr==val [-w attr=~val] ...]",
              "      [-f | --force] [noderange] [attr=val [attr=val...]]"],
    "chdef": ["", "Usage: chdef - Change xCAT data object definitions.", "",
              "  chdef [-h | --help ] [-t object-types]", "",
              "  chdef [-t object-types] [-o object-names] [-n new-name] [node]", "",
              "  chdef [-V | --verbose] [-t object-types] [-o object-names] [-d | --dynamic]",
              "    [-z | --stanza] [-m | --minus] [-p | --plus]",
              "    [-w attr==val [-w attr=~val] ... ] [noderange] [attr=val [attr=val...]]"],
    "rmdef": ["", "Usage: rmdef - Remove xCAT data object definitions.", "",
              "  rmdef [-h | --help ] [-t object-types]", "",
              "  rmdef [-V | --verbose] [-t object-types] [-a | --all] [-f | --force]",
              "    [-o object-names] [-w attr=val,[attr=val...] [noderange]"],
}


def def_usage(command):
    lines = list(DEF_USAGE[command])
    lines += ["", "The following data object types are supported by xCAT.", ""]
    lines += sorted(list(OBJECT_TYPES) + list(OTHER_XCAT_TYPES))
    lines += ["", "Use the '-h' option together with the '-t' option to",
              "get a list of valid attribute names for each object type.", ""]
    info(*lines)


class DefRequest:
    """The parsed command line of mkdef/chdef/lsdef/rmdef (xCAT's processArgs)."""

    def __init__(self):
        self.flags = set()
        self.types = []
        self.opt_t = None
        self.opt_o = None
        self.opt_i = None
        self.opt_n = None
        self.where = []
        self.positional = []
        self.attrs = {}
        self.names = []           # object names from the command line
        self.source = None        # 'args', 'nr', 'opto', 'optt', 'all'
        self.file_objects = []    # [(name, attrs)] from -z stdin

    def has(self, flag):
        return flag in self.flags


def parse_def_request(command, argv, db):
    """Parse like DBobjectdefs::processArgs.  Returns DefRequest or raises Abort.
    A return of None means usage was printed and the command is done."""
    args = list(argv)
    if not args:
        if command != "lsdef":
            def_usage(command)
            return None
        args = ["-t", "node", "-s"]
    if command == "lsdef" and args == ["-S"]:
        args = ["-t", "node", "-s", "-S"]
    if command == "lsdef" and sorted(args) in (["-l"], ["-S", "-l"]):
        args = args + ["-t", "node"]
    try:
        opts, rest = getopt.gnu_getopt(args, DEF_SHORT, DEF_LONG)
    except getopt.GetoptError:
        error("Invalid option..")
        def_usage(command)
        raise Abort() from None
    req = DefRequest()
    for opt, value in opts:
        if opt == "-t":
            req.opt_t = value
        elif opt == "-o":
            req.opt_o = value
        elif opt == "-i":
            req.opt_i = value
        elif opt == "-n":
            req.opt_n = value
        elif opt == "-w":
            req.where.append(value)
        else:
            req.flags.add(DEF_FLAGS[opt])

    if command == "lsdef" and not req.opt_t and not req.has("all") and not req.has("help"):
        req.opt_t = "node"
    if req.has("xml"):
        fail("The '-x' (XML format) option is not yet implemented.")
    if req.has("long") and req.has("short"):
        fail("The flags '-l' and '-s' cannot be used together.")
    if req.opt_i and req.has("short"):
        fail("The flags '-i' and '-s' cannot be used together.")
    if req.has("all") and req.opt_t and command == "lsdef":
        fail("The flags '-a' and '-t' cannot be used together.")
    if req.has("u") or req.has("osimage") or req.has("nics") or req.has("compress"):
        fail("xCAT stand-in: this option is not implemented by the test stand-in.")
    if command == "rmdef" and (req.has("dynamic") or req.opt_i or req.has("long")
                               or req.has("minus") or req.has("plus") or req.where
                               or req.has("stanza") or req.has("short")):
        fail("Invalid flag specified, see rmdef manpage for details.")
    if req.has("help") and not req.opt_t:
        def_usage(command)
        return None
    if req.has("version"):
        info("%s - %s" % (command, VERSION_LINE))
        return None

    # stanza input (mkdef -z / chdef -z read it from stdin)
    if req.has("stanza") and command in ("mkdef", "chdef"):
        Run.stdin_text = sys.stdin.read()
        objects = parse_stanzas(Run.stdin_text)
        if objects is None:
            info("Could not process file input data.")
            raise Abort()
        req.file_objects = objects

    # types
    if req.opt_t:
        types = req.opt_t.split(",")
        for objtype in types:
            if objtype in OTHER_XCAT_TYPES:
                fail("xCAT stand-in: object type '%s' is not implemented by the "
                     "test stand-in." % objtype)
            if objtype not in OBJECT_TYPES:
                fail("\nType '%s' is not a valid xCAT object type." % objtype)
        req.types = types
    elif not req.has("all") and not req.file_objects:
        req.types = ["node"]

    # positional arguments: one noderange/object list and attr=val pairs
    noderange_seen = False
    for word in rest:
        if "=" not in word:
            if noderange_seen:
                fail("noderange can not contain spaces.")
            noderange_seen = True
            if req.opt_t and req.opt_t != "node":
                req.names = [n for n in word.split(",") if n]
                req.source = "args"
            else:
                req.names = expand_noderange(db, word, for_mkdef=(command == "mkdef"))
                if not req.names:
                    fail("No node in '%s', check the noderange syntax." % word)
                req.source = "nr"
        else:
            m = re.match(r"^\s*(.*?)\s*=\s*(\S*.*)$", word, re.S)
            if not m:
                fail("Incorrect 'attr=val' pair - %s." % word)
            req.attrs[m.group(1)] = m.group(2)
    if len(req.types) > 1 and req.attrs:
        fail("Cannot combine multiple types with 'att=val' pairs on the command line.")

    if req.has("help") and req.opt_t:
        for objtype in req.types:
            amap = OBJECT_TYPES[objtype]
            if amap is None:
                info("", "There can only be one xCAT site definition. This definition "
                     "consists of an unlimited list of user-defined attributes and values.")
            else:
                info("The valid attribute names for object type '%s' are:" % objtype,
                     "Attribute          Description", "", *sorted(amap))
        return None

    # object names
    if req.opt_o:
        req.source = "opto"
        if req.opt_t == "site":
            req.names = ["clustersite"]
        elif req.opt_t in (None, "node"):
            req.names = expand_noderange(db, req.opt_o, for_mkdef=(command == "mkdef"))
        else:
            req.names = [n for n in req.opt_o.split(",") if n]
    if req.opt_t == "site":
        req.names = ["clustersite"]
        req.source = req.source or "opto"
    if req.opt_t and not (req.opt_o or req.file_objects or req.has("all") or req.names):
        if command in ("rmdef", "chdef"):
            error("No object names were provided.")
            def_usage(command)
            raise Abort()
        if command != "mkdef":
            req.source = "optt"
            for objtype in req.types:
                names = objects_of_type(db, objtype)
                if not names:
                    fail("Could not get objects of type '%s'." % objtype)
                req.names.extend((n, objtype) for n in names)
    if req.has("all"):
        if req.opt_o or req.file_objects or req.source == "nr":
            fail("Cannot use '-a' with '-o', a noderange or file input.")
        req.source = "all"
        req.names = [(n, t) for t in sorted(OBJECT_TYPES) for n in objects_of_type(db, t)]
    if not req.names and not req.file_objects:
        if command == "mkdef":
            error("No object names were provided.")
            def_usage(command)
            raise Abort()
        fail("No object names were provided.")
    if req.where:
        selection = parse_selection(req.where)
        if selection is None:
            fail("Incorrect selection string specified with -w flag.")
        req.where = selection
    if req.opt_i and command != "lsdef":
        fail("The '-i' option is only valid for the lsdef command.")
    return req


def typed_names(req):
    """[(name, type)] for the objects named on the command line."""
    if req.source in ("optt", "all"):
        return list(req.names)
    return [(n, req.types[0]) for n in req.names]


def check_attr_names(objtype, attrs):
    """Drop and report attributes the type does not have (site is free-form)."""
    amap = OBJECT_TYPES[objtype]
    good, bad = {}, False
    for attr, value in attrs.items():
        base = attr.split(".", 1)[0] if attr.startswith("nic") else attr
        if amap is None or base in amap or attr == "objtype":
            good[attr] = value
        else:
            error("'%s' is not a valid attribute name for an object type of '%s'."
                  % (base, objtype), "Skipping to the next attribute.")
            bad = True
    return good, bad


def final_attrs(req):
    """{(name, type): attrs} combining stanza input and command line (setFINALattrs)."""
    final = {}
    problem = False
    for name, attrs in req.file_objects:
        objtype = attrs.get("objtype")
        if not objtype:
            error("\nNo objtype value was specified for '%s'. Cannot create object "
                  "definition." % name)
            problem = True
            continue
        if objtype not in OBJECT_TYPES:
            fail("\nType '%s' is not a valid xCAT object type." % objtype)
        good, bad = check_attr_names(objtype, {k: v for k, v in attrs.items()
                                               if k != "objtype"})
        problem |= bad
        if objtype == "site":
            name = "clustersite"
        final[(name, objtype)] = good
    if req.names:
        objtype = req.types[0]
        good, bad = check_attr_names(objtype, req.attrs)
        problem |= bad
        for name, _t in typed_names(req):
            final[(name, objtype)] = dict(good)
    return final, problem


def network_conflict(db, attrs):
    """Name of a network with the same net and mask (mkdef refuses those)."""
    if not attrs.get("net") and not attrs.get("mask"):
        return None
    for row in db.table("networks").rows:
        if row["net"] == attrs.get("net", "") and row["mask"] == attrs.get("mask", ""):
            return row["netname"]
    return None


def check_source_options(cmd, req):
    """Refuse the option mixes mkdef and chdef both refuse (-t with -a/-z, -z with -o)."""
    if req.opt_t and (req.has("all") or req.has("stanza")):
        error("Cannot combine '-t' and '-a', '-z', or '-x' options.")
        def_usage(cmd)
        raise Abort()
    if req.has("stanza") and (req.opt_o or req.source == "nr"):
        error("Cannot use '-z' with '-o' or a noderange.",
              "Example of -z usage:\n\t'cat stanzafile | %s -z'" % cmd)
        def_usage(cmd)
        raise Abort()


def cmd_mkdef(argv):
    require_xcatd()
    db = open_db()
    req = parse_def_request("mkdef", argv, db)
    if req is None:
        return
    if req.has("plus") or req.has("minus"):
        error("The '-p' and '-m' options are not valid for the mkdef command.")
        def_usage("mkdef")
        raise Abort()
    check_source_options("mkdef", req)
    capitals = [n for n, _t in typed_names(req) if re.search("[A-Z]", n)
                and (not req.opt_t or req.opt_t == "node")]
    if capitals:
        warning("The node name '%s' contains capital letters which may not be "
                "resolved correctly by the dns server." % ",".join(capitals))
    final, problem = final_attrs(req)
    written = 0
    for (name, objtype), attrs in sorted(final.items()):
        if objtype == "network":
            other = network_conflict(db, attrs)
            if other:
                error("A network definition called '%s' already exists that "
                      "contains the same net and mask values. Cannot create a "
                      "definition for '%s'." % (other, name))
                problem = True
                continue
        if name in objects_of_type(db, objtype):
            if req.has("force"):
                rm_def(db, objtype, name)
            else:
                error("\nA definition for '%s' already exists." % name,
                      "To remove the old definition and replace it with \na new "
                      "definition use the force '-f' option.",
                      "To change the existing definition use the 'chdef' command.")
                problem = True
                continue
        if objtype == "node" and "groups" not in attrs:
            error("Attribute 'groups' is not specified for node '%s', skipping to "
                  "the next node." % name)
            problem = True
            continue
        set_def(db, objtype, name, attrs)
        written += 1
    db.commit()
    if problem:
        fail("One or more errors occured when attempting to create or modify xCAT "
             "\nobject definitions.")
    info("%d object definitions have been created or modified." % written)


def cmd_chdef(argv):
    require_xcatd()
    db = open_db()
    req = parse_def_request("chdef", argv, db)
    if req is None:
        return
    if req.opt_n:
        fail("xCAT stand-in: renaming objects (chdef -n) is not implemented by the "
             "test stand-in.")
    if req.has("force"):
        error("The '-f' option is not valid for the chdef command.")
        def_usage("chdef")
        raise Abort()
    check_source_options("chdef", req)
    mode = "plus" if req.has("plus") else "minus" if req.has("minus") else "set"
    final, problem = final_attrs(req)
    new_objects = []
    written = 0
    for (name, objtype), attrs in sorted(final.items()):
        defined = name in objects_of_type(db, objtype)
        if not defined:
            if req.has("minus"):
                error("The '-m' option is not valid since the '%s' definition does "
                      "not exist." % name)
                problem = True
                continue
            new_objects.append(name)
            if objtype == "node" and "groups" not in attrs:
                attrs["groups"] = "all"
            if objtype == "osimage" and "imagetype" not in attrs:
                attrs["imagetype"] = "NIM"
        set_def(db, objtype, name, attrs, mode)
        written += 1
    db.commit()
    if problem:
        fail("One or more errors occured when attempting to create or modify xCAT "
             "\nobject definitions.")
    info("%d object definitions have been created or modified." % written)
    if new_objects:
        info("New object definitions '%s' have been created." % ",".join(new_objects))


def cmd_rmdef(argv):
    require_xcatd()
    db = open_db()
    req = parse_def_request("rmdef", argv, db)
    if req is None:
        return
    if req.has("all") and not req.has("force"):
        error("You must use the '-f' option when using the '-a' option.")
        def_usage("rmdef")
        raise Abort()
    targets = typed_names(req)
    removed = 0
    for name, objtype in targets:
        if name not in objects_of_type(db, objtype):
            error("Could not find an object named '%s' of type '%s'." % (name, objtype))
            continue
        rm_def(db, objtype, name)
        removed += 1
    db.commit()
    if removed:
        info("%d object definitions have been removed." % len(targets))
    else:
        info("No objects have been removed from the xCAT database.")


def cmd_lsdef(argv):
    require_xcatd()
    db = open_db()
    req = parse_def_request("lsdef", argv, db)
    if req is None:
        return
    long_form = bool(req.has("long") or req.source in ("nr", "args") or req.opt_o
                     or req.opt_i)
    if req.has("short"):
        long_form = False
    wanted = req.opt_i.split(",") if req.opt_i else []
    named = req.source in ("nr", "args", "opto")
    types = req.types if req.types else sorted(OBJECT_TYPES)
    by_type = {}
    for name, objtype in typed_names(req):
        by_type.setdefault(objtype, []).append(name)
    out = []
    if req.has("stanza"):
        out.append("# <xCAT data object stanza file>")
    defaults_ps, defaults_pbs = xcatdefaults_postscripts(db)
    for objtype in types:
        names = by_type.get(objtype, [])
        if not names:
            continue
        existing = objects_of_type(db, objtype)
        if not existing:
            info("Could not find any objects of type '%s'." % objtype)
            continue
        amap = OBJECT_TYPES[objtype]
        show = []
        for attr in wanted:
            base = attr.split(".", 1)[0] if attr.startswith("nic") else attr
            if amap is not None and base not in amap:
                error("'%s' is not a valid attribute name for an object type of '%s'."
                      % (attr, objtype))
            elif base not in show:
                show.append(base)
        for name in sorted(set(names)):
            if named and name not in existing:
                error("Could not find an object named '%s' of type '%s'." % (name, objtype))
                continue
            attrs = get_def(db, objtype, name)
            if objtype == "node" and not req.has("stanza"):
                for attr, default in (("postscripts", defaults_ps),
                                      ("postbootscripts", defaults_pbs)):
                    if default:
                        attrs[attr] = (default + "," + attrs[attr]) if attrs.get(attr) \
                            else default
            if objtype == "node" and attrs.get("hidden") == "1" and not req.has("S"):
                continue
            if req.where and not selection_matches(attrs, req.where):
                continue
            if not long_form:
                if req.has("stanza"):
                    out += ["", "%s:" % name]
                elif req.source == "all":
                    out.append("%s (%s)" % (name, objtype))
                else:
                    out.append("%s  (%s)" % (name, objtype))
                continue
            if req.has("stanza"):
                out += ["", "%s:" % name, "    objtype=%s" % objtype]
            elif len(types) > 1:
                out.append("Object name: %s  (%s)" % (name, objtype))
            else:
                out.append("Object name: %s" % name)
            if wanted:
                for attr in sorted(show):
                    if amap is None and attr not in attrs:
                        continue
                    out += attr_lines(attr, attrs.get(attr, ""))
            else:
                for attr in sorted(attrs):
                    if attrs[attr] != "":
                        out += attr_lines(attr, attrs[attr])
    if out:
        info(*out)


# ---------------------------------------------------------------------------
# Table commands: tabdump, chtab, tabprune, tabrestore, nodels
# ---------------------------------------------------------------------------

def cmd_tabdump(argv):
    require_xcatd()
    usage = ["Usage: tabdump [-d] [table]", "       tabdump [-f filename] [table]",
             "       tabdump [-w attr==val [-w attr=~val] ...] [table]",
             "       tabdump [-?|-h|--help]"]
    try:
        opts, rest = getopt.gnu_getopt(argv, "h?df:w:", ["help"])
    except getopt.GetoptError:
        info(*usage)
        Run.exitcode |= 1
        return
    flags = {o for o, _v in opts}
    where = [v for o, v in opts if o == "-w"]
    outfile = [v for o, v in opts if o == "-f"]
    if flags & {"-h", "-?", "--help"}:
        info(*usage)
        return
    if len(rest) > 1:
        info(*usage)
        Run.exitcode |= 1
        return
    db = open_db()
    if not rest:
        if "-d" in flags:
            info(*["%s:\t(xCAT stand-in table)" % t for t in sorted(TABLES)])
        else:
            info(*sorted(TABLES))
        return
    name = rest[0]
    if name not in TABLES:
        fail("No such table: %s" % name)
    table = db.table(name)
    rows = table.rows
    if where:
        selection = parse_selection(where)
        if selection is None:
            fail("Incorrect selection string specified with -w flag.")
        rows = [r for r in rows if selection_matches(r, selection)]
    lines = table.dump(rows)
    if outfile:
        with open(outfile[0], "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        return
    info(*lines)


def cmd_chtab(argv):
    """chtab [-d] key=value[,key=value] [table.column=value ...] | table"""
    require_xcatd()
    usage = ["Usage: chtab  [keycolname=keyvalue] [tablename.colname=newvalue] "
             "[tablename.colname=newvalue]...",
             "       chtab [keycolname=keyvalue] [tablename.colname+=newvalue] ",
             "       chtab -d [keycolname=keyvalue] [tablename.colname=newvalue] "
             "[tablename.colname=newvalue]...",
             "       chtab [-h|--help]", "       chtab [-v|--version]"]
    try:
        opts, rest = getopt.gnu_getopt(argv, "dh?v", ["help", "version"])
    except getopt.GetoptError:
        info(*usage)
        Run.exitcode |= 1
        return
    flags = {o for o, _v in opts}
    if flags & {"-h", "-?", "--help"} or not rest:
        info(*usage)
        if not rest and not flags & {"-h", "-?", "--help"}:
            Run.exitcode |= 1
        return
    if flags & {"-v", "--version"}:
        info(VERSION_LINE)
        return
    keys = {}
    for pair in rest[0].split(","):
        key, sep, value = pair.partition("=")
        if not sep:
            fail("Malformed key=value pair: %s" % pair)
        keys[key] = value
    db = open_db()
    if "-d" in flags:
        for name in rest[1:]:
            name = name.split(".", 1)[0]
            if name not in TABLES:
                fail("No such table: %s" % name)
            bad = [k for k in keys if k not in TABLES[name]]
            if bad:
                fail("%s is not a valid column of table %s" % (bad[0], name))
            db.table(name).delete(lambda r: all(r.get(k) == v for k, v in keys.items()))
        db.commit()
        return
    updates = {}
    for spec in rest[1:]:
        m = re.match(r"^([^.=]+)\.([^=+]+)(\+?=)(.*)$", spec, re.S)
        if not m:
            fail("Malformed table.column=value: %s" % spec)
        table, column, op, value = m.groups()
        if table not in TABLES:
            fail("No such table: %s" % table)
        if column not in TABLES[table]:
            fail("%s.%s not a valid table.column description" % (table, column))
        bad = [k for k in keys if k not in TABLES[table]]
        if bad:
            fail("Unkown key %s to %s" % (bad[0], table))
        updates.setdefault(table, []).append((column, op, value))
    for table, changes in updates.items():
        tab = db.table(table)
        rows = tab.upsert(keys, {})
        for row in rows:
            for column, op, value in changes:
                row[column] = merge_list(row[column], value, "plus") if op == "+=" else value
    db.commit()


PRUNABLE_TABLES = ("eventlog", "auditlog", "isnm_perf", "isnm_perf_sum")


def cmd_tabprune(argv):
    """Real xCAT prunes only eventlog/auditlog (tabutils.pm); so does the stand-in."""
    require_xcatd()
    usage = ["Usage: tabprune <tablename> [-V] -a",
             "       tabprune <tablename> [-V] -n <# of records>",
             "       tabprune <tablename> [-V] -i <recid>",
             "       tabprune <tablename> [-V] -p <percent>",
             "       tabprune <tablename> [-V] -d <# of days>",
             "       tabprune [-h|--help]", "       tabprune [-v|--version]",
             "       tables supported:eventlog,auditlog",
             "       -d option only supported for eventlog,auditlog"]
    try:
        opts, rest = getopt.gnu_getopt(argv, "h?vVp:d:i:an:",
                                       ["help", "version", "percent=", "days=",
                                        "recid=", "number="])
    except getopt.GetoptError:
        info(*usage)
        Run.exitcode |= 1
        return
    flags = {o for o, _v in opts}
    if flags & {"-h", "-?", "--help"}:
        info(*usage)
        return
    if flags & {"-v", "--version"}:
        info(VERSION_LINE)
        return
    if len(rest) > 1:
        info(*usage)
        Run.exitcode |= 1
        return
    if not rest:
        info("Table name required.")
        Run.exitcode |= 1
        return
    table = rest[0].strip()
    if table not in PRUNABLE_TABLES:
        info("Table %s not supported, see tabprune -h for supported tables." % table)
        Run.exitcode |= 1
        return
    chosen = flags & {"-p", "--percent", "-i", "--recid", "-a", "-n", "--number",
                      "-d", "--days"}
    if not chosen:
        info("One option -p or -i or -n or -a or -d must be supplied.")
        Run.exitcode |= 1
        return
    if len(chosen) > 1:
        info("Only one option -p or -i or -n or -a maybe used at a time.")
        Run.exitcode |= 1
        return
    if table not in TABLES:
        info("tabprune of %s complete." % table)
        return
    db = open_db()
    tab = db.table(table)
    if "-V" in flags:
        info(*tab.dump())
    if "-a" in chosen:
        tab.delete(lambda r: True)
    else:
        fail("xCAT stand-in: only 'tabprune <table> -a' is implemented.")
    db.commit()
    if "-V" not in flags:
        info("tabprune of %s complete." % table)


def cmd_tabrestore(argv):
    """tabrestore [-a] file.csv -- replace (or with -a, add to) a table."""
    require_xcatd()
    usage = ["Usage: tabrestore [-a] <tablename.csv>", "       tabrestore [-?|-h|--help]",
             "       tabrestore [-v|--version]"]
    try:
        opts, rest = getopt.gnu_getopt(argv, "ah?v", ["addrows", "help", "version"])
    except getopt.GetoptError:
        info(*usage)
        Run.exitcode |= 1
        return
    flags = {o for o, _v in opts}
    if flags & {"-h", "-?", "--help"} or len(rest) != 1:
        info(*usage)
        if len(rest) != 1 and not flags & {"-h", "-?", "--help"}:
            Run.exitcode |= 1
        return
    path = rest[0]
    name = os.path.basename(path)
    name = name[:-4] if name.endswith(".csv") else name
    if name not in TABLES:
        fail("No such table: %s" % name)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            lines = list(csv.reader(handle))
    except OSError as exc:
        fail("Error opening file %s: %s" % (path, exc.strerror))
    if not lines or not lines[0] or not lines[0][0].startswith("#"):
        fail("Data missing header line starting with #")
    header = [lines[0][0][1:]] + lines[0][1:]
    for column in header:
        if column not in TABLES[name]:
            fail("The header line indicates that column '%s' should exist, which is "
                 "not defined in the schema for '%s'" % (column, name), code=1)
    db = open_db()
    tab = db.table(name)
    if not ({"-a", "--addrows"} & flags):
        tab.delete(lambda r: True)
    for fields in lines[1:]:
        if not fields:
            continue
        if len(fields) > len(header):
            fail("Too many fields on line: %s" % ",".join(fields), code=4)
        row = {c: "" for c in tab.columns}
        row.update(dict(zip(header, fields)))
        tab.rows.append(row)
    tab.dirty = True
    db.commit()


def cmd_nodels(argv):
    require_xcatd()
    db = open_db()
    rest = [a for a in argv if not a.startswith("-")]
    names = objects_of_type(db, "node")
    if rest:
        names = [n for n in expand_noderange(db, rest[0]) if n in names]
    if names:
        info(*names)


# ---------------------------------------------------------------------------
# makenetworks (networks.pm)
# ---------------------------------------------------------------------------

def connected_routes():
    """([(IPv4Network, dev)], default_gw) from ``ip -4 route`` like networks.pm."""
    routes, gateways = [], {}
    for line in ip_output(["-4", "route"], "route").splitlines():
        ent = line.split()
        if len(ent) < 3:
            continue
        if ent[1] == "via":
            gateways[ent[0]] = ent[2]
            continue
        if ent[1] != "dev" or "/" not in ent[0]:
            continue
        try:
            net = ipaddress.IPv4Network(ent[0], strict=False)
        except ValueError:
            continue
        if net.is_loopback or net.is_link_local or net.is_multicast:
            continue
        routes.append((net, ent[2]))
    return routes, gateways.get("default")


def same_network(row, net):
    try:
        return (ipaddress.IPv4Address(row["net"]) == net.network_address
                and ipaddress.IPv4Address(row["mask"]) == net.netmask)
    except ValueError:
        return False


def cmd_makenetworks(argv):
    require_xcatd()
    usage = ["", "Usage: makenetworks - Gather cluster network information and add it "
             "to the xCAT database.", "", "  makenetworks [-h|--help ]", "",
             "  makenetworks [-v|--version]", "",
             "  makenetworks [-V|--verbose] [-d|--display]", ""]
    try:
        opts, _rest = getopt.gnu_getopt(argv, "h?dVv", ["help", "display", "verbose",
                                                          "version"])
    except getopt.GetoptError:
        opts = []
    flags = {o for o, _v in opts}
    if flags & {"-h", "-?", "--help"}:
        info(*usage)
        return
    if flags & {"-v", "--version"}:
        info("makenetworks - %s" % VERSION_LINE)
        return
    display = bool(flags & {"-d", "--display"})
    db = open_db()
    nettab = db.table("networks")
    routes, default_gw = connected_routes()
    mtus = link_mtus()
    addrs = local_ipv4_addrs()
    host = socket.gethostname()
    for net, dev in routes:
        netname = "%s-%s" % (str(net.network_address).replace(".", "_"),
                             str(net.netmask).replace(".", "_"))
        gateway = "<xcatmaster>"
        if default_gw:
            try:
                if ipaddress.IPv4Address(default_gw) in net:
                    gateway = default_gw
            except ValueError:
                pass
        name_match = nettab.get("netname", netname) is not None
        found_match = any(same_network(r, net) for r in nettab.rows)
        mtu = mtus.get(dev, "")
        mine = [a for d, a, _p in addrs if d == dev and ipaddress.IPv4Address(a) in net]
        if display:
            lines = ["", "#From %s." % host, "%s:" % netname, "    objtype=network",
                     "    net=%s" % net.network_address, "    mask=%s" % net.netmask,
                     "    gateway=%s" % gateway, "    mgtifname=%s" % dev]
            if mtu:
                lines.append("    mtu=%s" % mtu)
            if mine:
                lines.append("    tftpserver=%s" % mine[0])
            if found_match:
                lines += ["# Note: An equivalent xCAT network definition already exists.", ""]
            info(*lines)
            continue
        if name_match:
            warning("The network entry '%s' already exists in xCAT networks table. "
                    "Cannot create a definition for '%s'" % (netname, netname))
            continue
        if found_match:
            continue
        values = {"netname": netname, "mgtifname": dev, "gateway": gateway, "mtu": mtu}
        if mine:
            values["tftpserver"] = "<xcatmaster>"
        nettab.upsert({"net": str(net.network_address), "mask": str(net.netmask)}, values)
    db.commit()


# ---------------------------------------------------------------------------
# copycds (copycds.pm + anaconda.pm): a loop mount as in xCAT, extraction with
# xorriso only where the kernel cannot mount ISO 9660
# ---------------------------------------------------------------------------

# A few .discinfo timestamps from xCAT's discinfo.pm; newer media are
# recognised by their name line instead (see distro_from_name).
KNOWN_DISCINFO = {
    "1404489053.504589": "centos7.0", "1385726732.061157": "centos6.5",
    "1384196515.415715": "rhels6.5", "1359576752.435900": "rhels6.4",
    "1339640147.274118": "rhels6.3", "1305068199.328169": "rhels6.1",
    "1285193176.460470": "rhels6",
}

DISTRO_NAMES = [
    (r"Rocky Linux", "rocky"), (r"AlmaLinux", "alma"),
    (r"Red Hat Enterprise Linux", "rhels"), (r"CentOS Stream", "centos-stream"),
    (r"CentOS( Linux)?", "centos"), (r"Oracle Linux", "ol"), (r"Fedora", "fedora"),
    (r"Scientific Linux", "SL"),
]


def distro_from_name(name):
    """'Rocky Linux 9.4' -> 'rocky9.4'; None if unknown."""
    for pattern, short in DISTRO_NAMES:
        m = re.match(r"^\s*%s\b.*?(\d+(?:\.\d+)*)" % pattern, name)
        if m:
            return short + m.group(m.lastindex)
    return None


def normalize_arch(arch):
    arch = (arch or "").strip()
    if re.fullmatch(r"i.86", arch):
        return "x86"
    return arch


def loop_device_available():
    """Is there a usable loop device (what losetup/mount -o loop needs)?

    Production: a block device /dev/loopN that this process can open (in an
    unprivileged container the node may exist but the device cgroup forbids
    opening it).  Tests (XCAT_STANDIN_LOOPDIR): any loopN entry in that dir."""
    test_dir = test_hook("XCAT_STANDIN_LOOPDIR")
    directory = test_dir or "/dev"
    try:
        entries = sorted(os.listdir(directory))
    except OSError:
        return False
    for entry in entries:
        if not re.fullmatch(r"loop\d+", entry):
            continue
        path = os.path.join(directory, entry)
        if test_dir:
            return True
        try:
            if not stat.S_ISBLK(os.stat(path).st_mode):
                continue
            fd = os.open(path, os.O_RDONLY)
            os.close(fd)
            return True
        except OSError:
            continue
    return False


MOUNT_TYPES = "udf,iso9660"     # copycds.pm: udf first, for media that carry both
PROC_FILESYSTEMS = "/proc/filesystems"
UNIDENTIFIED = "copycds could not identify the ISO supplied, you may wish to try -n <osver>"


def xorriso(args):
    """Run xorriso quietly; return (rc, stderr text)."""
    return run_quiet(["xorriso"] + args)


def discinfo_lines(path):
    """The stripped lines of a .discinfo file, or [] if it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return [line.strip() for line in handle.read().splitlines()]
    except OSError:
        return []


def remove_tree(path):
    """rm -rf (shutil is not in python3-minimal)."""
    if not os.path.lexists(path):
        return
    if os.path.isdir(path) and not os.path.islink(path):
        for top, dirs, files in os.walk(path, topdown=False):
            for name in files:
                os.unlink(os.path.join(top, name))
            for name in dirs:
                sub = os.path.join(top, name)
                if os.path.islink(sub):
                    os.unlink(sub)
                else:
                    os.rmdir(sub)
        os.rmdir(path)
    else:
        os.unlink(path)


def make_writable(path):
    """ISO trees are read-only; copycds leaves the copy owner-writable (0755)."""
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(top, name)
            if not os.path.islink(full):
                mode = os.lstat(full).st_mode
                os.chmod(full, stat.S_IMODE(mode) | stat.S_IWUSR)
    os.chmod(path, 0o755)


def copy_file(src, dst):
    """Copy one regular file: its bytes, its mode (plus owner write) and its mtime."""
    meta = os.stat(src)
    with open(src, "rb") as source, open(dst, "wb") as target:
        while True:
            chunk = source.read(1 << 20)
            if not chunk:
                break
            target.write(chunk)
    os.chmod(dst, stat.S_IMODE(meta.st_mode) | stat.S_IWUSR)
    os.utime(dst, (meta.st_atime, meta.st_mtime))


def place_entry(src, dst, keep_existing, move):
    """Put one file or symlink at dst, replacing what is there unless keep_existing."""
    if os.path.lexists(dst):
        if keep_existing:
            return
        remove_tree(dst)
    if move:
        os.rename(src, dst)
    elif os.path.islink(src):
        os.symlink(os.readlink(src), dst)
    else:
        copy_file(src, dst)


def install_tree(src, dest, keep_existing, move=False):
    """Copy (with move: rename) src's tree into dest, like anaconda.pm's
    ``find . | cpio -dump``; with keep_existing, files already in dest stay."""
    for top, dirs, files in os.walk(src):
        rel = os.path.relpath(top, src)
        out = dest if rel == "." else os.path.join(dest, rel)
        os.makedirs(out, exist_ok=True)
        links = [d for d in dirs if os.path.islink(os.path.join(top, d))]
        for name in files + links:
            place_entry(os.path.join(top, name), os.path.join(out, name), keep_existing, move)


def extract_iso(iso, dest, nonoverwrite):
    """Copy the ISO's content into dest with xorriso; with nonoverwrite keep existing files."""
    os.makedirs(dest, exist_ok=True)
    target = dest
    if nonoverwrite:
        target = "%s.standin-extract.%d" % (dest.rstrip("/"), os.getpid())
        remove_tree(target)
    rc, err = xorriso(["-osirrox", "on", "-indev", iso, "-extract", "/", target])
    if rc == 0:
        make_writable(target)
        if nonoverwrite:
            install_tree(target, dest, keep_existing=True, move=True)
    if nonoverwrite:
        remove_tree(target)
    if rc != 0:
        return rc, err
    os.chmod(dest, 0o755)
    return 0, ""


class MountedMedium:
    """A medium mounted at its copycds mount point, read as xCAT reads it."""

    method = "loop mount"

    def __init__(self, mnt):
        self.mnt = mnt

    def discinfo(self):
        """The medium's /.discinfo lines."""
        return discinfo_lines(os.path.join(self.mnt, ".discinfo"))

    def copy_to(self, dest, nonoverwrite):
        """Copy the mounted tree into dest; return (rc, error text)."""
        try:
            install_tree(self.mnt, dest, keep_existing=nonoverwrite)
        except OSError as exc:
            return 1, "cpio: %s: %s\n" % (exc.filename or dest, exc.strerror)
        os.chmod(dest, 0o755)
        return 0, ""

    def release(self):
        """umount, as copycds.pm does once the copy is over."""
        run_quiet([system_tool("umount", "XCAT_STANDIN_UMOUNT"), self.mnt])


class ExtractedMedium:
    """A medium read with xorriso, where the kernel cannot mount ISO 9660."""

    method = "extraction (no iso9660 in this kernel)"

    def __init__(self, iso, scratch):
        self.iso = iso
        self.scratch = scratch

    def discinfo(self):
        """The medium's /.discinfo lines, extracted into the (empty) mount point."""
        target = os.path.join(self.scratch, ".discinfo")
        xorriso(["-osirrox", "on", "-indev", self.iso, "-extract", "/.discinfo", target])
        lines = discinfo_lines(target)
        remove_tree(target)
        return lines

    def copy_to(self, dest, nonoverwrite):
        """Extract the whole medium into dest; return (rc, error text)."""
        return extract_iso(self.iso, dest, nonoverwrite)

    def release(self):
        """Nothing was mounted."""


def kernel_filesystems():
    """The file system types the kernel offers now (/proc/filesystems)."""
    try:
        with open(fs(PROC_FILESYSTEMS), encoding="utf-8") as handle:
            return {line.split()[-1] for line in handle if line.split()}
    except OSError:
        return set()


def kernel_cannot_mount_iso(mount_error):
    """Did a mount fail because this kernel cannot mount ISO 9660 at all?  Yes
    when mount says so, or when iso9660 is neither present nor loadable."""
    if "unknown filesystem type" in mount_error:
        return True
    if "iso9660" in kernel_filesystems():
        return False
    rc, _err = run_quiet([system_tool("modprobe", "XCAT_STANDIN_MODPROBE"), "-q", "iso9660"])
    return rc != 0


def open_medium(source, mountpoint, is_block):
    """Mount source at mountpoint as copycds.pm does and return the medium to
    read.  Only when the kernel cannot mount ISO 9660 does it fall back to
    xorriso; any other mount failure is copycds' error, as in xCAT."""
    mnt = fs(mountpoint)
    if not is_block and not loop_device_available():
        sys.stderr.write("mount: Could not find any loop device\n")
        fail("copycds was unable to mount %s to %s." % (source, mountpoint))
    run_quiet([system_tool("umount", "XCAT_STANDIN_UMOUNT"), mnt])   # a stale mount, as copycds.pm
    options = "ro" if is_block else "ro,loop"
    rc, err = run_quiet([system_tool("mount", "XCAT_STANDIN_MOUNT"), "-t", MOUNT_TYPES,
                         "-o", options, source, mnt])
    if rc == 0:
        return MountedMedium(mnt)
    if kernel_cannot_mount_iso(err):
        note("copycds: mount failed: %s" % " ".join(err.split()))
        return ExtractedMedium(source, mnt)
    sys.stderr.write(err)
    fail("copycds was unable to mount %s to %s." % (source, mountpoint))


def release_mountpoint(mnt, medium):
    """Unmount and remove the mount point (copycds.pm: umount, rm -rf).  One
    that is still mounted is left alone: its files are the medium's."""
    if medium is not None:
        medium.release()
    if os.path.ismount(mnt):
        note("copycds: %s is still mounted, left in place" % mnt)
        return
    remove_tree(mnt)


def platform_of(distname):
    """xCAT's template directory (share/xcat/install/<platform>) for a distro."""
    for prefix, platform in (("rhel", "rh"), ("rocky", "rh"), ("alma", "rh"),
                             ("ol", "rh"), ("centos", "centos"), ("fedora", "fedora"),
                             ("SL", "SL")):
        if distname.startswith(prefix):
            return platform
    return re.sub(r"[\d.]+$", "", distname)


def copycds_osimages(distname, arch, installdir, pkgdir):
    """The osimage definitions copycds creates (update_tables_with_templates)."""
    platform = platform_of(distname)
    major = re.sub(r"\.\d+$", "", distname)
    share = "/opt/xcat/share/xcat"
    common = {"imagetype": "linux", "osname": "Linux", "osvers": distname,
              "osarch": arch, "osdistroname": "%s-%s" % (distname, arch),
              "profile": "compute", "pkgdir": pkgdir,
              "otherpkgdir": "%s/post/otherpkgs/%s/%s" % (installdir, distname, arch)}
    images = {}
    images["%s-%s-install-compute" % (distname, arch)] = dict(
        common, provmethod="install",
        template="%s/install/%s/compute.%s.tmpl" % (share, platform, major),
        pkglist="%s/install/%s/compute.%s.pkglist" % (share, platform, major))
    for method in ("netboot", "statelite"):
        images["%s-%s-%s-compute" % (distname, arch, method)] = dict(
            common, provmethod=method,
            pkglist="%s/netboot/%s/compute.%s.%s.pkglist" % (share, platform, major, arch),
            exlist="%s/netboot/%s/compute.%s.%s.exlist" % (share, platform, major, arch),
            postinstall="%s/netboot/%s/compute.%s.%s.postinstall"
                        % (share, platform, major, arch),
            rootimgdir="%s/netboot/%s/%s/compute" % (installdir, distname, arch))
    return images


COPYCDS_USAGE = ("copycds [{-p|--path}=path] [{-n|--name|--osver}=distroname] "
                 "[{-a|--arch}=architecture] [-i|--inspection] [{-o|--noosimage}] "
                 "[{-w|--nonoverwrite}] 1st.iso [2nd.iso ...].")


class CopycdsRequest:
    """The parsed copycds command line (copycds.pm's GetOptions)."""

    def __init__(self, isos):
        self.isos = isos
        self.distname = None
        self.arch = None
        self.path = None
        self.flags = set()

    def has(self, *options):
        """Was any of these options given?"""
        return bool(self.flags.intersection(options))


def parse_copycds(argv):
    """The request, or None once the usage has been printed."""
    try:
        opts, isos = getopt.gnu_getopt(argv, "n:a:hip:osw",
                                       ["name=", "osver=", "arch=", "help", "inspection",
                                        "path=", "noosimage", "specific", "nonoverwrite"])
    except getopt.GetoptError:
        opts, isos = [], argv
    req = CopycdsRequest(isos)
    for opt, value in opts:
        if opt in ("-n", "--name", "--osver"):
            req.distname = value
        elif opt in ("-a", "--arch"):
            req.arch = normalize_arch(value)
        elif opt in ("-p", "--path"):
            req.path = value
        else:
            req.flags.add(opt)
    if req.has("-h", "--help"):
        info(COPYCDS_USAGE)
        return None
    if not isos:
        fail("copycds needs at least one full path to ISO currently.")
    return req


def medium_source(arg):
    """The file copycds reads for one argument: absolute (against the cwd), one symlink followed."""
    iso = arg if arg.startswith("/") else os.path.join(os.getcwd(), arg)
    if not os.path.islink(iso):
        return iso
    link = os.readlink(iso)
    return link if link.startswith("/") else os.path.join(os.path.dirname(iso), link)


def is_block_medium(source):
    """True for a readable block device, False for a readable file; fail like copycds.pm otherwise."""
    if os.access(source, os.R_OK):
        mode = os.stat(source).st_mode
        if stat.S_ISBLK(mode) or stat.S_ISREG(mode):
            return stat.S_ISBLK(mode)
    fail("The management server was unable to find/read %s. Ensure that file "
         "exists on the server at the specified location." % source)


def cmd_copycds(argv):
    require_xcatd()
    req = parse_copycds(argv)
    if req is None:
        return
    for arg in req.isos:
        copycds_one(medium_source(arg), req)


def copycds_one(source, req):
    """Mount (or extract) one medium, copy it, then unmount and remove the mount point."""
    is_block = is_block_medium(source)
    mountpoint = "%s/%s" % (MOUNT_BASE, hashlib.md5(
        os.path.abspath(source).encode("utf-8")).hexdigest())
    os.makedirs(fs(mountpoint), exist_ok=True)
    medium = None
    try:
        medium = open_medium(source, mountpoint, is_block)
        copy_one_medium(medium, source, req)
    finally:
        release_mountpoint(fs(mountpoint), medium)


def identify_medium(discinfo):
    """(distname, arch) from .discinfo lines: a discinfo.pm timestamp or the name line."""
    name = arch = None
    if len(discinfo) >= 2:
        name = KNOWN_DISCINFO.get(discinfo[0]) or distro_from_name(discinfo[1])
    if len(discinfo) >= 3:
        arch = normalize_arch(discinfo[2])
    return name, arch


def copy_destination(path, installdir, distname, arch):
    """Where the medium goes: -p, else <installdir>/<distro>/<arch>."""
    if not path:
        return "%s/%s/%s" % (installdir, distname, arch)
    if not (path.startswith("/install/") or path == "/install"):
        warning("copycds: the specified path \"%s\" is not a subdirectory under "
                "/install. Make sure this path is configured for httpd/apache, "
                "otherwise, the provisioning with this iso will fail!" % path)
    return path


def copy_one_medium(medium, iso, req):
    """Identify one medium and copy it; what anaconda.pm's copycd does."""
    discinfo = medium.discinfo()
    found_name, found_arch = identify_medium(discinfo)
    if req.has("-i", "--inspection"):
        note("copycds: inspected via %s" % medium.method)
        info("OS Image:%s" % iso)
        if not found_name:
            error(UNIDENTIFIED)
            return
        info("DISTNAME:%s" % found_name, "ARCH:%s" % (found_arch or ""),
             "DISCNO:%s" % (discinfo[3] if len(discinfo) > 3 else ""))
        return
    distname = req.distname or found_name
    arch = req.arch or found_arch
    if not distname or not arch:
        error(UNIDENTIFIED)
        return
    db = open_db()
    installdir = db.site("installdir", "/install")
    db.close()
    dest = copy_destination(req.path, installdir, distname, arch)
    info("Copying media to %s" % dest)
    rc, err = medium.copy_to(fs(dest), req.has("-w", "--nonoverwrite"))
    if rc != 0:
        note("copycds: copy via %s failed, status %d" % (medium.method, rc))
        sys.stderr.write(err)
        error("Media copy operation failed, status %d" % rc)
        return
    note("copycds: copied via %s" % medium.method)
    info("Media copy operation successful")
    record_medium(distname, arch, installdir, dest, req.has("-o", "--noosimage"))


def record_medium(distname, arch, installdir, dest, noosimage):
    """The osdistro row and (unless -o) the osimages of a copied medium."""
    db = open_db()
    match = re.match(r"^(\D+?)-?(\d+)(?:\.(\d+))?", distname)
    db.table("osdistro").upsert(
        {"osdistroname": "%s-%s" % (distname, arch)},
        {"basename": match.group(1) if match else distname,
         "majorversion": match.group(2) if match else "",
         "minorversion": (match.group(3) or "") if match else "",
         "arch": arch, "type": "Linux", "dirpaths": dest})
    if not noosimage:
        for name, attrs in copycds_osimages(distname, arch, installdir, dest).items():
            set_def(db, "osimage", name, attrs)
    db.commit()
    db.close()


# ---------------------------------------------------------------------------
# lsxcatd, xcatconfig, hardware commands
# ---------------------------------------------------------------------------

def flag_options(argv, short, long, usage):
    """The set of flags given, or None once the usage has been shown (no flag, -h, or a bad one)."""
    try:
        opts, _rest = getopt.gnu_getopt(argv, short, long)
    except getopt.GetoptError:
        info(*usage)
        Run.exitcode |= 1
        return None
    flags = {o for o, _v in opts}
    if not flags or flags & {"-h", "-?", "--help"}:
        info(*usage)
        return None
    return flags


def cmd_lsxcatd(argv):
    require_xcatd()
    usage = ["Usage: lsxcatd [-v|--version] [-h|--help] [-d|--database] [-a|--all]"]
    flags = flag_options(argv, "h?vdat", ["help", "version", "database", "all", "nodetype"], usage)
    if flags is None:
        return
    everything = bool(flags & {"-a", "--all"})
    if everything or flags & {"-v", "--version"}:
        info(VERSION_LINE)
    if everything or flags & {"-t", "--nodetype"}:
        info("This is a Management Node")
    if everything or flags & {"-d", "--database"}:
        info("cfgloc=standin-csv:%s" % TABLE_DIR, "dbengine=standin-csv",
             "dbinstance=", "dbname=", "dbloc=%s" % TABLE_DIR)


def cmd_xcatconfig(argv):
    """The database part of xcatconfig: -i/-d create the tables, -f resets site."""
    usage = ["Usage: xcatconfig [-i|--initinstall] [-d|--database] [-f|--force] "
             "(xCAT stand-in: only the database initialisation is imitated)"]
    flags = flag_options(argv, "h?idfuksmctV",
                         ["help", "initinstall", "database", "force", "updateinstall", "sshkeys",
                          "sshnodehostkeys", "mgtnode", "credentials", "tunables", "verbose"], usage)
    if flags is None:
        return
    db = DB()
    initialize_site(db, force=bool(flags & {"-f", "--force"}))
    db.commit()
    info("xCAT stand-in: tables in %s are initialized." % TABLE_DIR)


def cmd_nohardware(argv):
    require_xcatd()
    fail("stand-in: no hardware")


# ---------------------------------------------------------------------------
# xcatd
# ---------------------------------------------------------------------------

def daemon_log(message):
    try:
        path = fs(XCATD_LOG)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write("%s xcatd[%d]: %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                                os.getpid(), message))
    except OSError:
        pass


def process_alive(pid):
    """True if pid exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    try:
        with open("/proc/%d/stat" % pid, encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def runs_xcatd(pid):
    """Does pid's command line name xcatd (the init script's guard against a recycled pid)?"""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return b"xcatd" in handle.read()
    except OSError:
        return True


def read_pidfile():
    """The pid of another live xcatd from the pid file, or None.  A pid file
    naming this very process is stale: a container whose PID 1 is ``xcatd -f``
    was killed and started again, and its pid file says 1 once more."""
    try:
        with open(fs(XCATD_PIDFILE), encoding="utf-8") as handle:
            pid = int(handle.read().strip())
    except (OSError, ValueError):
        return None
    if pid == os.getpid() or not process_alive(pid) or not runs_xcatd(pid):
        return None
    return pid


def listen_all(port):
    """A listening TCP socket on every address: dual-stack IPv6 if the kernel
    offers IPv6, else IPv4 0.0.0.0.  Raises OSError (e.g. EADDRINUSE)."""
    sock = None
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", port))
    except OSError as exc:
        if sock is not None:
            sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
    sock.listen(64)
    sock.setblocking(False)
    return sock


class _Stop(Exception):
    pass


def _raise_stop(_signum, _frame):
    raise _Stop()


def serve(sockets):
    """Answer each connection with a one-line banner until SIGTERM."""
    banner = {s: ("xcatd: xCAT TEST STAND-IN %s (NOT xCAT) port %d\n"
                  % (PACKAGE_VERSION, s.getsockname()[1])).encode() for s in sockets}
    try:
        while True:
            readable, _w, _x = select.select(sockets, [], [], 5.0)
            for listener in readable:
                try:
                    conn, _addr = listener.accept()
                except OSError:
                    continue
                try:
                    conn.settimeout(2.0)
                    conn.sendall(banner[listener])
                except OSError:
                    pass
                finally:
                    conn.close()
    except _Stop:
        pass


def cmd_xcatd(argv):
    """xcatd [-f]: listen on site.xcatdport/xcatiport; daemonize unless -f."""
    try:
        opts, _rest = getopt.gnu_getopt(argv, "fh", ["foreground", "help"])
    except getopt.GetoptError:
        opts = [("-h", "")]
    flags = {o for o, _v in opts}
    if flags & {"-h", "--help"}:
        info("Usage: xcatd [-f]   (xCAT TEST STAND-IN daemon; use /etc/init.d/xcatd)")
        return
    running = read_pidfile()
    if running:
        fail("xcatd is already running (pid %d)" % running)
    db = open_db()
    ports = [int(db.site("xcatdport", "3001")), int(db.site("xcatiport", "3002"))]
    db.close()
    sockets = []
    for port in ports:
        try:
            sockets.append(listen_all(port))
        except OSError as exc:
            for sock in sockets:
                sock.close()
            fail("xcatd: cannot listen on TCP port %d: %s" % (port, exc.strerror or exc))
    pidfile = fs(XCATD_PIDFILE)
    os.makedirs(os.path.dirname(pidfile), exist_ok=True)
    if flags & {"-f", "--foreground"}:
        return run_daemon(sockets, pidfile, None)
    ready_r, ready_w = os.pipe()
    if os.fork() > 0:
        os.close(ready_w)
        status = os.read(ready_r, 64)
        os.close(ready_r)
        for sock in sockets:
            sock.close()
        if not status.startswith(b"ok"):
            fail("xcatd: failed to start")
        return
    os.close(ready_r)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    os.umask(0o022)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    try:
        run_daemon(sockets, pidfile, ready_w)
    finally:
        os._exit(0)


def run_daemon(sockets, pidfile, ready_fd):
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with open(pidfile + ".tmp", "w", encoding="utf-8") as handle:
        handle.write("%d\n" % os.getpid())
    os.replace(pidfile + ".tmp", pidfile)
    daemon_log("started, listening on TCP %s" %
               ",".join(str(s.getsockname()[1]) for s in sockets))
    if ready_fd is not None:
        os.write(ready_fd, b"ok")
        os.close(ready_fd)
    try:
        serve(sockets)
    except _Stop:
        pass
    finally:
        for sock in sockets:
            sock.close()
        try:
            with open(pidfile, encoding="utf-8") as handle:
                if handle.read().strip() == str(os.getpid()):
                    os.unlink(pidfile)
        except OSError:
            pass
        daemon_log("stopped")


# ---------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------

COMMANDS = {
    "lsdef": cmd_lsdef, "mkdef": cmd_mkdef, "chdef": cmd_chdef, "rmdef": cmd_rmdef,
    "tabdump": cmd_tabdump, "chtab": cmd_chtab, "tabprune": cmd_tabprune,
    "tabrestore": cmd_tabrestore, "nodels": cmd_nodels,
    "makenetworks": cmd_makenetworks, "copycds": cmd_copycds, "lsxcatd": cmd_lsxcatd,
    "xcatconfig": cmd_xcatconfig, "xcatd": cmd_xcatd,
    "rpower": cmd_nohardware, "rvitals": cmd_nohardware, "rinv": cmd_nohardware,
}


def main(argv=None):
    """Run the command named by basename(argv[0]); return its exit code."""
    argv = list(sys.argv if argv is None else argv)
    name = os.path.basename(argv[0])
    handler = COMMANDS.get(name)
    if handler is None:
        sys.stderr.write("xCAT stand-in: unknown command '%s' (known: %s)\n"
                         % (name, " ".join(sorted(COMMANDS))))
        return 1
    Run.exitcode = 0
    Run.stdin_text = None
    Run.notes = []
    try:
        handler(argv[1:])
    except Abort:
        pass
    except KeyboardInterrupt:
        Run.exitcode |= 1
    except BrokenPipeError:
        pass
    except OSError as exc:
        error("%s%s" % (exc.strerror or exc, ": %s" % exc.filename if exc.filename else ""))
    rc = 1 if Run.exitcode else 0
    log_invocation(argv, rc)
    return rc


if __name__ == "__main__":
    sys.exit(main())
