"""The recap table without a terminal is plain text, exactly as rich lays it out (rich is not loaded)."""

import io
import subprocess
import sys

import pytest
from rich.console import Console
from rich.table import Table

from tasks.runtime.report import TABLE_COLUMNS, HostReport, Output, plain_table, print_table

ROWS = [
    [("lab1", "7", "0", "0", "0.3", "")],
    [("lab1", "7", "0", "0", "0.3", ""), ("a-much-longer-host-name", "12", "3", "1", "125.4",
                                          "container: docker run failed: no such image xcat:2.17 | pull it first")],
    [("h", "0", "0", "1", "0.0", "connect: timed out after 10 s")],
]


def rich_lines(rows):
    grid = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for column in TABLE_COLUMNS:
        grid.add_column(column)
    for row in rows:
        grid.add_row(*row)
    stream = io.StringIO()
    Console(file=stream, width=200, highlight=False, soft_wrap=True).print(grid)
    return stream.getvalue().splitlines()


@pytest.mark.parametrize("rows", ROWS)
def test_plain_table_is_what_rich_prints_into_a_pipe(rows):
    assert plain_table(TABLE_COLUMNS, rows) == rich_lines(rows)


def test_print_table_into_a_pipe():
    report = HostReport("lab1")
    stream = io.StringIO()
    print_table([report], Output(stream=stream))
    lines = stream.getvalue().splitlines()
    assert lines[0].split() == ["host", "ok", "changed", "failed", "seconds", "first", "error"]
    assert lines[1].split() == ["lab1", "0", "0", "0", f"{report.seconds:.1f}"]


def test_a_converged_rollout_does_not_load_rich_or_the_iso_transfer_machinery():
    code = ("import sys, io; import fabfile; from tasks.runtime.report import HostReport, Output, print_table; "
            "print_table([HostReport('h')], Output(stream=io.StringIO())); "
            "bad = [m for m in sys.modules if m.startswith('rich') or m in ('tasks.steps.iso.delivery', "
            "'tasks.steps.iso.chain', 'tasks.steps.iso.legs', 'tasks.steps.iso.progress')]; print(bad)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=str(__import__("pathlib").Path(__file__).resolve().parents[3]))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
