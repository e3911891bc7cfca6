"""What happened: step results, per-host reports, recap lines, prefixed output.

Modelled on Ansible's ok/changed/failed and its PLAY RECAP line
(``host : ok=N changed=N failed=N``). Output from several hosts running at
once goes through :class:`Output`, which writes whole lines with a host
prefix under a lock, so lines never interleave.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

OK, CHANGED, FAILED = "ok", "changed", "failed"


@dataclass
class StepResult:
    """The outcome of one step on one host."""

    step: str
    status: str
    changes: list = field(default_factory=list)
    error: Optional[str] = None
    seconds: float = 0.0
    #: ``--diff``: (path, before, after) of each file the step writes (or would write).
    diffs: list = field(default_factory=list)


@dataclass
class HostReport:
    """Every step result of one host, in order."""

    host: str
    results: list = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    finished: Optional[float] = None
    commands: int = 0
    connections: int = 0
    #: Lines printed after the recap: the state a host was left in and what to run next.
    notes: list = field(default_factory=list)
    #: What the host contributes to the exit status (None: 1 when failed, else 0).
    code: Optional[int] = None
    #: What an operation read from the host for its caller (``status``: the table row).
    detail: Any = None

    def add(self, result: StepResult) -> StepResult:
        self.results.append(result)
        return result

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def failed(self) -> bool:
        return self.count(FAILED) > 0

    @property
    def exit_code(self) -> int:
        if self.code is not None:
            return self.code
        return 1 if self.failed else 0

    def as_dict(self) -> dict:
        """The report for ``--json``."""
        return {"host": self.host, "ok": self.count(OK) + self.count(CHANGED), "changed": self.count(CHANGED),
                "failed": self.count(FAILED), "seconds": round(self.seconds, 3), "exit_code": self.exit_code,
                "connections": self.connections, "commands": self.commands, "notes": list(self.notes),
                "steps": [{"step": r.step, "status": r.status, "changes": list(r.changes), "error": r.error,
                           "seconds": round(r.seconds, 3)} for r in self.results]}

    @property
    def changed(self) -> bool:
        return self.count(CHANGED) > 0

    @property
    def first_error(self) -> Optional[str]:
        for r in self.results:
            if r.status == FAILED:
                return f"{r.step}: {r.error}"
        return None

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def recap_line(self, width: int = 0) -> str:
        """``host : ok=N changed=N failed=N`` (ok counts changed steps too, as Ansible)."""
        ok = self.count(OK) + self.count(CHANGED)
        return (f"{self.host:<{width}} : ok={ok} changed={self.count(CHANGED)} "
                f"failed={self.count(FAILED)}")


class Output:
    """Line-oriented, host-prefixed, thread-safe output."""

    def __init__(self, stream=None, prefix: bool = True):
        self.stream = stream or sys.stdout
        self.prefix = prefix
        self.lock = threading.Lock()

    def line(self, host: Optional[str], text: str) -> None:
        with self.lock:
            for part in str(text).splitlines() or [""]:
                self.stream.write(f"{host} | {part}\n" if (self.prefix and host) else part + "\n")
            self.stream.flush()

    def result(self, host: str, result: StepResult) -> None:
        """One line per step, plus one per change, Ansible style."""
        detail = f" ({result.seconds:.1f}s)" if result.seconds >= 0.05 else ""
        if result.status == FAILED:
            self.line(host, f"failed: [{result.step}] {result.error}{detail}")
            return
        self.line(host, f"{result.status}: [{result.step}]{detail}")
        for change in result.changes:
            self.line(host, f"    - {change}")
        for path, before, after in result.diffs:
            for line in unified_diff(path, before, after):
                self.line(host, "      " + line)


def unified_diff(path: str, before: str, after: str) -> list:
    """``--diff``'s lines for one file: what is on the host now, what xcatfab writes."""
    import difflib

    return list(difflib.unified_diff((before or "").splitlines(), (after or "").splitlines(),
                                     f"{path} (on the host)", f"{path} (xcatfab)", lineterm=""))


def print_recap(reports: list, out: Optional[Output] = None, table: bool = True) -> None:
    """The PLAY RECAP lines, then a table with duration and the first error."""
    out = out or Output()
    width = max((len(r.host) for r in reports), default=0)
    out.line(None, "")
    out.line(None, "RECAP " + "*" * 60)
    for report in reports:
        out.line(None, report.recap_line(width))
    if os.environ.get("XCATFAB_COUNTS"):
        # What a run cost each host, for benchmarks and tests of the no-op budget.
        for report in reports:
            out.line(None, f"{report.host}: connections={report.connections} commands={report.commands}")
    if table and reports:
        print_table(reports, out)


#: The recap table's columns.
TABLE_COLUMNS = ("host", "ok", "changed", "failed", "seconds", "first error")


def plain_table(columns, rows) -> list:
    """A table as rich prints it without a terminal (no box, two spaces between columns, cells padded)."""
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)) for line in [columns, *rows]]


def print_table(reports: list, out: Output) -> None:
    """The recap table: one row per host with its counts, duration and first error.

    Into a pipe or a file it is plain text (rich is not loaded: start-up time,
    every ``fab rollout`` prints it); on a terminal rich prints it, header in bold.
    """
    columns = TABLE_COLUMNS
    rows = [(r.host, str(r.count(OK) + r.count(CHANGED)), str(r.count(CHANGED)),
             str(r.count(FAILED)), f"{r.seconds:.1f}", r.first_error or "") for r in reports]
    isatty = getattr(out.stream, "isatty", None)
    if not (isatty and isatty()):
        with out.lock:
            for line in plain_table(columns, rows):
                out.stream.write(line + "\n")
            out.stream.flush()
        return
    from rich.console import Console
    from rich.table import Table

    grid = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for column in columns:
        grid.add_column(column)
    for row in rows:
        grid.add_row(*row)
    # Wide enough for the longest row: a first error wrapped over two lines
    # would no longer be one greppable line naming host and step.
    needed = sum(max(len(c), *(len(row[i]) for row in rows)) + 2 for i, c in enumerate(columns))
    console = Console(file=out.stream, width=max(160, needed), highlight=False, soft_wrap=True)
    with out.lock:
        console.print(grid)
