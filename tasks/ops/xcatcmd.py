"""``fab xcat``: run one xCAT command in the container, on one host or many.

The words after ``--`` are the command's argv, exactly (each is quoted for
the container's shell); ``--cmd`` takes a command line for the container's
shell instead (pipes, globs). The command runs with ``docker exec`` and xCAT's
profile sourced; its output streams back (prefixed by host when there are
several hosts) and its exit status becomes the host's (255: the host could
not be reached; 125: the container is not running). Password values in its
output (``*password*=`` attributes, ``nodels`` password columns, password
columns of ``tabdump``) and any secret the run knows are masked unless
``--show-passwords``; a command that would put a password on a command line is
refused (use ``fab node``).
"""

from __future__ import annotations

import csv
import re
import shlex
import time
from typing import Callable, Optional

from ..runtime.errors import BadInput, one_line
from ..runtime.report import FAILED, OK, HostReport, Output, StepResult
from ..runtime.secret import MASK, SecretError, lookup, mask_in
from ..runtime.ssh import ConnectError, ConnectOptions, connect
from .node import BMC_PASSWORD_ENV

#: ``xcat``'s exit status for a host that could not be reached (as ssh's).
UNREACHABLE = 255

#: ``key=value`` with "password" in the key: a password on a command line.
PASSWORD_ASSIGNMENT = re.compile(r"[\w.]*password[\w.]*=", re.IGNORECASE)
#: An output line showing a password attribute (lsdef, stanzas).
PASSWORD_LINE = re.compile(r"^(\s*[\w.]*password[\w.]*\s*=).*$", re.IGNORECASE)


def container_command(words: Optional[list], line: Optional[str]) -> str:
    """The command line the container's shell runs.

    ``words`` (after ``--``) keep their exact argv: each is quoted. ``line``
    (``--cmd``) is a shell command line as typed (pipes and all).
    """
    if words and line:
        raise BadInput("--cmd", None, "give the command either after -- or with --cmd, not both")
    if words:
        command = shlex.join(words)
    elif line and line.strip():
        command = line
    else:
        raise BadInput("xcat", None, "no command: fab -H HOST xcat -- lsdef compute1 (or --cmd 'lsdef compute1')")
    if "\0" in command:
        raise BadInput("xcat", None, "the command contains a NUL byte")
    if PASSWORD_ASSIGNMENT.search(command):
        raise BadInput("xcat", None, "the command sets a password on a command line, where `ps` on the host "
                                     "shows it; use `fab node NAME --bmc ... --bmc-user ...` with "
                                     "$XCATFAB_BMC_PASSWORD")
    return command


def output_masker(show_passwords: bool, known: list) -> Callable[[str], str]:
    """A function that hides password values (and any known secret) in the output lines of one host.

    It knows the three shapes xCAT prints a password in: ``attr=value``
    (lsdef), ``node: table.password: value`` (nodels), and a password column
    of a ``tabdump`` CSV (the ``#...`` header line names the columns, so the
    masker keeps state: make one per host's output stream).
    """
    csv_columns: list = []  # password columns of the tabdump being printed

    def mask(line: str) -> str:
        """``line`` with password values and known secrets replaced by the mask."""
        nonlocal csv_columns
        line = mask_in(line, known)
        if show_passwords:
            return line
        if line.startswith("#") and "," in line:
            names = [n.strip().lower() for n in line[1:].split(",")]
            csv_columns = [i for i, n in enumerate(names) if "password" in n]
            return line
        if csv_columns and line.startswith('"'):
            return _mask_csv_columns(line, csv_columns)
        line = NODELS_PASSWORD.sub(lambda m: m.group(1) + MASK, line)
        return PASSWORD_LINE.sub(lambda m: m.group(1) + MASK, line)

    return mask


#: ``nodels NODE ipmi.password`` prints ``NODE: ipmi.password: VALUE``.
NODELS_PASSWORD = re.compile(r"^(\S+:\s*[\w.]*password[\w.]*:\s*)\S.*$", re.IGNORECASE)


def _mask_csv_columns(line: str, columns: list) -> str:
    """A tabdump row (``"a","b",,"c"``) with the non-empty fields at ``columns`` masked."""
    try:
        fields = next(csv.reader([line]))
    except (csv.Error, StopIteration):
        return MASK  # a row that cannot be parsed might hold a password: hide it whole
    if not any(i < len(fields) and fields[i] for i in columns):
        return line
    for i in columns:
        if i < len(fields) and fields[i]:
            fields[i] = MASK
    return ",".join('"' + f.replace('"', '""') + '"' if f else "" for f in fields)


def known_secrets() -> list:
    """Secrets this run may know about (to mask them wherever they would show)."""
    found = []
    for name in (BMC_PASSWORD_ENV, "XCATFAB_SUDO_PASSWORD"):
        try:
            value = lookup(name)
        except SecretError:
            value = None
        if value:
            found.append(value)
    return found


def run_xcat(cfg, command: str, options: ConnectOptions, out: Output, err: Output,
             mask: Callable[[str], str]) -> HostReport:
    """Run ``command`` in ``cfg``'s container; stream its output; its exit status is the report's code."""
    host, report = cfg.name, HostReport(cfg.name)
    # Prefixed output already names the host; a single host's error line names it itself.
    named = "" if err.prefix else f"{host}: "
    try:
        remote = connect(cfg, options)
    except ConnectError as exc:
        err.line(host, f"{named}{exc.step}: {exc.message}")
        return _done(report, "connect", UNREACHABLE, exc.message)
    try:
        result = remote.template("host/admin-xcat.sh.j2", step="xcat", name=cfg.container_name,
                                 command=command, on_line=lambda text: out.line(host, mask(text)))
    except Exception as exc:  # the connection dropped mid-command: one line, never a traceback
        message = mask(f"{type(exc).__name__}: {one_line(exc)}")
        err.line(host, f"{named}xcat: {message}")
        return _done(report, "xcat", UNREACHABLE, message, remote)
    for text in result.err.splitlines():
        err.line(host, mask(text))
    return _done(report, "xcat", result.rc, None if result.ok else f"exit status {result.rc}", remote)


def _done(report: HostReport, step: str, code: int, error: Optional[str], remote=None) -> HostReport:
    report.add(StepResult(step, OK if code == 0 else FAILED, error=error))
    report.code = code
    if remote is not None:
        report.commands, report.connections = remote.commands, 1
        remote.close()
    report.finished = time.monotonic()
    return report
