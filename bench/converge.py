"""Converge benchmark (issue 7): what a deploy costs when there is nothing to do.

    python bench/converge.py [--n 1,2,4] [--runs 5] [--hosts lab2,lab3,...]
                             [--tools floor,xcatfab,pyinfra,ansible-tuned,ansible-default]
                             [--skip-first] [--skip-counts] [--no-markdown] [--markdown FILE]
    python bench/converge.py --render bench/results/converge-*.json   # section from a saved run

On the lab (tests/labkit/netns; root), for each N, with every tool driving the SAME
target state (docker.io, the xCAT image, mydocker0 holding the host address,
a Docker bridge network on it, the container with its static address and the
full spec, site.master set, one 64 MiB ISO with a checksum in iso_dir):

* **floor**: N parallel ``ssh HOST true`` with OpenSSH and the lab's ssh_config;
* **xcatfab**: ``fab rollout --limit`` when tasks/rollout.py provides it, else N
  parallel ``fab -H HOST deploy`` (the results say which);
* **pyinfra** (bench/peers/pyinfra) and **Ansible** (bench/peers/ansible), tuned
  (pipelining, no facts, forks=N) and default, from their own virtualenvs
  (bench/peers/requirements-*.txt, created once under
  ``~/.cache/xcatfab/bench-venvs``).

Hosts: ``--hosts`` or ``$XCATFAB_BENCH_HOSTS`` (a healthy lab must have them;
it is never touched then), else the first max(N) hosts of a healthy lab,
else ``lab_up(max(N))``.

Phases: (0) the image on every host (xcatfab's ``image`` step, untimed);
(1) first converge by N: every tool from freshly reset hosts
(``Lab.reset_host``; the image is kept, so no image build is timed);
(2) warm-up: each tool once more, so all agree the hosts are converged;
(3) counts on one converged host: SSH connections (the host's sshd.log
"Accepted publickey" lines) and sessions/commands (sshd traced with strace:
every session sshd forks, and the program it runs), besides xcatfab's own
``XCATFAB_COUNTS``; (4) no-op runs: ``--runs`` rounds per N, the tools in
rotating round-robin order so the machine's drift hits them all alike;
median/min/max and the ratio to the floor of the same N, over the runs that
were clean no-ops (exit 0, nothing changed; the others stay in the raw data).

Not a test: nothing here asserts a time. Results: JSON in bench/results/
(git-ignored) and the "Converge" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PEERS = ROOT / "bench" / "peers"
RESULTS = ROOT / "bench" / "results"
MARKDOWN = ROOT / "BENCHMARKS.md"
SECTION = "Converge"
TOOLS = ["floor", "xcatfab", "xcatfab-deep", "pyinfra", "ansible-tuned", "ansible-default"]
LABELS = {
    "floor": "floor: N parallel `ssh HOST true` (OpenSSH)",
    "xcatfab": "xcatfab (quick)",
    "xcatfab-deep": "xcatfab `--verify deep`",
    "pyinfra": "pyinfra (deep)",
    "ansible-tuned": "Ansible, tuned (pipelining, no facts, forks=N; deep)",
    "ansible-default": "Ansible, default (facts, no pipelining; deep)",
}
#: What each tool checks on a no-op run besides the Docker/bridge state: "quick" trusts a record
#: (no table read, no ISO byte read), "deep" reads xCAT's tables and hashes the staged ISO every run.
CHECKS = {
    "floor": ("–", "nothing (one `true`)"),
    "xcatfab": ("quick", "tables: skipped while the controller's stamp of the table files matches; "
                         "ISO: the sha256 recorded on the host at staging, trusted while size/mtime/inode match"),
    "xcatfab-deep": ("deep", "tables: `tabdump site` and `tabdump networks` every run; "
                             "ISO: sha256 of the staged file on the host every run"),
    "pyinfra": ("deep", "tables: `tabdump site` and `tabdump networks` every run; ISO: sha1 of the staged "
                        "file every run (files.put)"),
    "ansible-tuned": ("deep", "tables: `tabdump site` and `tabdump networks` every run; ISO: sha1 of the "
                              "staged file every run (copy with checksum)"),
    "ansible-default": ("deep", "as tuned, plus fact gathering and no pipelining"),
}
#: Tools that are xcatfab (recap parsing, self-reported counts).
XCATFAB_TOOLS = ("xcatfab", "xcatfab-deep")
ISO_NAME = "bench-64m.iso"
ISO_PAYLOAD = 64 * 1024 * 1024 - 512 * 1024  # the ISO's own structures bring it to ~64 MiB
ISO_DISTRO, ISO_ARCH = "rhels9.4", "x86_64"
RUN_TIMEOUT = 900


# ============================================================== pure helpers
def summarize(values: list) -> dict:
    """median/min/max/n of a list of seconds (empty list: all None)."""
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def ratio(value: Optional[float], floor: Optional[float]) -> Optional[float]:
    if value is None or not floor:
        return None
    return value / floor


def rotate(items: list, k: int) -> list:
    """``items`` rotated left by ``k`` (round r of the round-robin starts with tool r)."""
    if not items:
        return []
    k %= len(items)
    return items[k:] + items[:k]


def parse_list(text: str) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def choose_hosts(option: Optional[str], env: Optional[str], lab_names: list[str], need: int) -> list[str]:
    """Hosts to use: ``--hosts``, else ``$XCATFAB_BENCH_HOSTS``, else the lab's first ``need``."""
    chosen = parse_list(option) or parse_list(env) or list(lab_names[:need])
    missing = [h for h in chosen if h not in lab_names]
    if missing:
        raise SystemExit(f"bench: the lab has no host {', '.join(missing)} (it has {', '.join(lab_names)})")
    if len(chosen) < need:
        raise SystemExit(f"bench: N={need} needs {need} hosts, got {len(chosen)}: {', '.join(chosen)}")
    return chosen


_RECAP = re.compile(r"^(?:\S+ \| )?(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)(?:\s+unreachable=(\d+))?\s+failed=(\d+)",
                    re.M)


def parse_recap(text: str) -> dict:
    """``HOST : ok=N changed=N [unreachable=N] failed=N`` lines (xcatfab, Ansible) -> per host."""
    hosts = {}
    for m in _RECAP.finditer(text):
        hosts[m.group(1)] = {"ok": int(m.group(2)), "changed": int(m.group(3)),
                             "unreachable": int(m.group(4) or 0), "failed": int(m.group(5))}
    return hosts


_COUNTS = re.compile(r"^(?:\S+ \| )?(\S+): connections=(\d+) commands=(\d+)", re.M)


def parse_xcatfab_counts(text: str) -> dict:
    """``HOST: connections=N commands=N`` (XCATFAB_COUNTS=1) -> per host."""
    return {m.group(1): {"connections": int(m.group(2)), "commands": int(m.group(3))}
            for m in _COUNTS.finditer(text)}


_PYINFRA_CHANGED = re.compile(r"^\s*\[(\S+)\]\s+(?:Success|Changed)\b", re.M)


def parse_pyinfra(text: str) -> dict:
    """Per host ``changed`` operations, from pyinfra's "[host] Success" lines.

    pyinfra prints ``[host] Success`` for an operation that ran commands and
    ``[host] No changes`` for one that had nothing to do.
    """
    hosts: dict = {}
    for m in _PYINFRA_CHANGED.finditer(text):
        hosts.setdefault(m.group(1), {"changed": 0})["changed"] += 1
    for m in re.finditer(r"^\s*\[(\S+)\]\s+No changes\b", text, re.M):  # names padded to the longest
        hosts.setdefault(m.group(1), {"changed": 0})
    return hosts


def count_accepted(log_text: str) -> int:
    """Authenticated SSH connections in an sshd log excerpt."""
    return sum(1 for line in log_text.splitlines() if "Accepted publickey for" in line)


_ST_FORK = re.compile(r"^(\d+)\s+(?:<\.\.\.\s+)?(?:clone3|clone|vfork|fork)\b.*=\s+(\d+)\s*$")
_ST_EXEC = re.compile(r'^(\d+)\s+execve\("([^"]*)",\s*\[(.*?)\](?:,|\s*<unfinished)')
_ST_EXEC_DONE = re.compile(r"^(\d+)\s+(?:<\.\.\.\s+execve resumed>.*|execve\(.*\))\s*=\s+(-?\d+)")
_ST_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"(\.\.\.)?')


def parse_strace(text: str, root: int) -> dict:
    """Connections, sessions and commands from ``strace -f -e trace=execve,clone,clone3,fork,vfork``
    of an OpenSSH listener (pid ``root``).

    The listener forks one process per connection, which re-executes sshd (the
    monitor) and forks the pre-authentication child first. After login the
    monitor (root logins) or its post-authentication child (other users) forks
    one process per session: that process either executes the user's shell with
    the command (``bash -c CMD``) or serves a subsystem in-process
    (internal-sftp, no exec). Lines of concurrent processes interleave (a child
    may exec before its parent's ``clone`` returns in the trace), so the
    process tree is built first.
    """
    children: dict = {}
    execs: dict = {}  # pid -> [(path, argv)] of successful execs, in order
    pending: dict = {}
    for line in text.splitlines():
        m = _ST_FORK.match(line)
        if m:
            children.setdefault(int(m.group(1)), []).append(int(m.group(2)))
            continue
        m = _ST_EXEC.match(line)
        if m:
            argv = [a.group(1) + ("..." if a.group(2) else "") for a in _ST_ARG.finditer(m.group(3))]
            pending[int(m.group(1))] = (m.group(2), argv)
        m = _ST_EXEC_DONE.match(line)
        if m:
            pid = int(m.group(1))
            call = pending.pop(pid, None)
            if call is not None and int(m.group(2)) == 0:
                execs.setdefault(pid, []).append(call)

    def only_sshd(pid: int) -> bool:
        return all(path.endswith(("/sshd", "/sshd-session")) for path, _ in execs.get(pid, []))

    monitors = children.get(root, [])
    sessions = []
    for monitor in monitors:
        for kid in children.get(monitor, [])[1:]:  # [0]: the pre-authentication child
            if not execs.get(kid) and children.get(kid) and only_sshd(kid):
                sessions += children[kid]  # a post-authentication child: its children are the sessions
            else:
                sessions.append(kid)
    commands = [execs[pid][0][1] for pid in sessions if pid in execs]
    return {"connections": len(monitors), "sessions": len(sessions), "commands": len(commands),
            "subsystem_sessions": len(sessions) - len(commands),
            "command_lines": [_command_text(argv) for argv in commands]}


def _command_text(argv: list) -> str:
    if len(argv) >= 3 and argv[1] == "-c":
        return argv[2]
    return " ".join(argv)


def fmt_s(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:.2f} s"


def fmt_ratio(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:.2f}×"


def noop_table(n: int, stats: dict, tools: list) -> str:
    """Markdown table of one N: median/min/max and × floor (floor of the same N)."""
    floor = (stats.get("floor") or {}).get("median")
    lines = [f"| N={n}, no-op converge | median | min | max | × floor (median) | runs | left out |",
             "|---|---|---|---|---|---|---|"]
    for tool in tools:
        s = stats.get(tool)
        if not s:
            continue
        left_out = s.get("excluded") or 0
        lines.append(f"| {LABELS.get(tool, tool)} | {fmt_s(s['median'])} | {fmt_s(s['min'])} | {fmt_s(s['max'])} | "
                     f"{fmt_ratio(ratio(s['median'], floor))} | {s['n']} | "
                     f"{left_out or '–'} |")
    return "\n".join(lines)


def summary_table(ns: list, noop: dict, tools: list) -> str:
    """One row per tool, one column per N (median), plus the × floor range."""
    head = "| no-op converge, median | checks | " + " | ".join(f"N={n}" for n in ns) + " | × floor |"
    lines = [head, "|---|---|" + "---|" * (len(ns) + 1)]
    for tool in tools:
        cells, ratios = [], []
        for n in ns:
            s = (noop.get(str(n)) or {}).get(tool) or {}
            floor = ((noop.get(str(n)) or {}).get("floor") or {}).get("median")
            cells.append(fmt_s(s.get("median")))
            r = ratio(s.get("median"), floor)
            if r is not None:
                ratios.append(r)
        span = "–" if not ratios else (f"{min(ratios):.2f}" if len(ratios) == 1 or round(min(ratios), 2) ==
                                        round(max(ratios), 2) else f"{min(ratios):.2f}–{max(ratios):.2f}")
        check = CHECKS.get(tool, ("?", ""))[0]
        lines.append(f"| {LABELS.get(tool, tool)} | {check} | " + " | ".join(cells) + f" | {span} |")
    return "\n".join(lines)


def checks_table(tools: list) -> str:
    """What each row checks on a no-op run: quick (trusts a record) or deep (reads everything)."""
    lines = ["| row | kind | xCAT tables and staged ISO on a no-op run |", "|---|---|---|"]
    for tool in tools:
        kind, what = CHECKS.get(tool, ("?", "?"))
        lines.append(f"| {LABELS.get(tool, tool)} | {kind} | {what} |")
    return "\n".join(lines)


def per_extra_host(first: dict, tool: str) -> Optional[float]:
    """First converge: the wall time each host beyond the first adds, from the smallest to the largest N."""
    points = sorted((int(n), r[tool]["seconds"]) for n, r in first.items()
                    if tool in r and not r[tool].get("rc"))
    if len(points) < 2 or points[-1][0] == points[0][0]:
        return None
    (n0, t0), (n1, t1) = points[0], points[-1]
    return (t1 - t0) / (n1 - n0)


def usage_table(ns: list, noop: dict, tools: list) -> str:
    """Controller CPU seconds per host and the peak RSS of one run (medians over the run's rounds)."""
    head = ("| controller cost of one no-op run | " + " | ".join(f"N={n} CPU/host, peak RSS" for n in ns) + " |")
    lines = [head, "|---|" + "---|" * len(ns)]
    for tool in tools:
        cells = []
        for n in ns:
            usage = [u for u in ((noop.get(str(n)) or {}).get(tool) or {}).get("usage") or [] if u]
            if not usage:
                cells.append("–")
                continue
            cpu = statistics.median(u["cpu_seconds"] for u in usage) / n
            peaks = [u["maxrss_mib"] for u in usage if u.get("maxrss_mib") is not None]
            rss = f"{statistics.median(peaks):.0f} MiB" if peaks else "–"
            cells.append(f"{cpu:.3f} s, {rss}")
        lines.append(f"| {LABELS.get(tool, tool)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def first_table(ns: list, first: dict, tools: list) -> str:
    head = "| first converge from a reset host (wall time) | " + " | ".join(f"N={n}" for n in ns) + " |"
    lines = [head, "|---|" + "---|" * len(ns)]
    for tool in tools:
        if tool == "floor":
            continue
        cells = []
        for n in ns:
            r = (first.get(str(n)) or {}).get(tool)
            if not r:
                cells.append("–")
            elif r.get("rc"):
                cells.append(f"{fmt_s(r['seconds'])} (FAILED rc={r['rc']})")
            else:
                cells.append(fmt_s(r["seconds"]))
        lines.append(f"| {LABELS.get(tool, tool)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def counts_table(counts: dict, tools: list) -> str:
    lines = ["| per converged host, one no-op run | SSH connections (sshd log) | SSH sessions (strace) | "
             "commands run (strace) | tool's own count |",
             "|---|---|---|---|---|"]
    for tool in tools:
        c = counts.get(tool)
        if not c:
            continue
        own = c.get("self_reported") or "–"
        lines.append(f"| {LABELS.get(tool, tool)} | {c.get('accepted', '–')} | {c.get('sessions', '–')} | "
                     f"{c.get('commands', '–')} | {own} |")
    return "\n".join(lines)


def markdown_section(results: dict) -> str:
    """The body of BENCHMARKS.md's "Converge" section (without its heading)."""
    ns = results["ns"]
    tools = results["tools"]
    m = results["machine"]
    v = results["versions"]
    out = [
        f"Measured {results['date']} with `{results.get('command', 'make bench')}` on the lab "
        f"(hosts {', '.join(results['hosts'])}); {results['runs']} no-op runs per tool and N, in rotating "
        "round-robin order; every ratio is to the floor of the same N in the same run. "
        "Not a test: nothing asserts a time. Raw data: bench/results/ (git-ignored).",
        "",
        f"Machine: {m.get('cpu_model')}, {m.get('nproc')} cores, {m.get('memory')}, kernel {m.get('kernel')}, "
        f"{m.get('os')}; {m.get('openssh')}; {m.get('docker')}.",
        "",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        "",
    ]
    if results.get("load_before"):
        out += [f"Contention: before the run {results['load_before']}; after it "
                f"{results.get('load_after', '?')}.", ""]
    out += [
        f"xcatfab was run as: {results['xcatfab_mode']}.",
        "",
        "What each row checks (every tool also checks docker.io, the image, the bridge, the Docker network and "
        "the container; \"quick\" trusts a record, \"deep\" reads the tables and the ISO's bytes every run):",
        "",
        checks_table(tools),
        "",
        summary_table(ns, results["noop"], tools),
        "",
    ]
    for n, left in sorted((results.get("skipped") or {}).items(), key=lambda kv: int(kv[0])):
        out += [f"Not run at N={n} (`--max-n`, for the run's time): " + ", ".join(LABELS.get(t, t) for t in left)
                + ".", ""]
    goal = goal_line(ns, results["noop"])
    if goal:
        out += [goal, ""]
    heads = headline(ns, results["noop"])
    if heads:
        out += ["Headline (medians, same run):", ""] + [f"- {h}" for h in heads] + [""]
    goals = issue15_goals(ns, results["noop"], results.get("hash_seconds"))
    if goals:
        out += ["Goals of issue 15:", ""] + [f"- {g}" for g in goals] + [""]
    for n in ns:
        out += [noop_table(n, results["noop"].get(str(n), {}), tools), ""]
    if results.get("first"):
        out += [first_table(ns, results["first"], results.get("first_tools") or tools), ""]
        extra = [(t, per_extra_host(results["first"], t)) for t in (results.get("first_tools") or tools)]
        extra = [f"{LABELS.get(t, t)} {v:.2f} s" for t, v in extra if v is not None]
        if extra:
            out += ["First converge, wall time added per host beyond the smallest N: " + "; ".join(extra) + ".", ""]
    if any((results["noop"].get(str(n)) or {}).get(t, {}).get("usage") for n in ns for t in tools):
        out += [usage_table(ns, results["noop"], tools), "",
                "CPU: user+system seconds of the tool's process and the children it waited for (ssh, workers), "
                "per host (`wait4`); peak RSS: the largest single process of the run (GNU time `%M`; – where "
                "not measured).", ""]
    if results.get("counts"):
        out += [counts_table(results["counts"], tools), ""]
    out += ["Runs that failed or changed anything are no no-op runs: they are left out of the statistics "
            "(column \"left out\"; the raw data keeps them).", ""]
    notes_all = list(results.get("notes") or []) + list(results.get("notes_extra") or [])
    if notes_all:
        out += ["Notes:", ""] + [f"- {note}" for note in notes_all] + [""]
    return "\n".join(out).rstrip() + "\n"


def goal_line(ns: list, noop: dict) -> str:
    """Issue 7's goal, read off the medians: xcatfab <= 2x the floor and below pyinfra at every N."""
    parts = []
    for n in ns:
        stats = noop.get(str(n)) or {}
        x = (stats.get("xcatfab") or {}).get("median")
        f = (stats.get("floor") or {}).get("median")
        p = (stats.get("pyinfra") or {}).get("median")
        if x is None or f is None:
            continue
        text = f"N={n}: {x / f:.2f}× floor" + (" (≤ 2×)" if x <= 2 * f else " (MORE than 2×)")
        if p is not None:
            text += ", below pyinfra" if x < p else ", NOT below pyinfra"
        parts.append(text)
    return ("Goal of issue 7 (xcatfab's median ≤ 2× the floor and below pyinfra at every N): " + "; ".join(parts)
            + ".") if parts else ""


PEERS_DEEP = ("pyinfra", "ansible-tuned", "ansible-default")


def headline(ns: list, noop: dict) -> list:
    """Per N: xcatfab quick against the floor, and xcatfab deep against the fastest deep peer of the same N."""
    out = []
    for n in ns:
        stats = noop.get(str(n)) or {}
        med = {t: (stats.get(t) or {}).get("median") for t in stats}
        peers = [(med[t], t) for t in PEERS_DEEP if med.get(t) is not None]
        parts = []
        if med.get("xcatfab") is not None and med.get("floor"):
            parts.append(f"quick {med['xcatfab']:.2f} s = {med['xcatfab'] / med['floor']:.2f}× the floor")
        if med.get("xcatfab-deep") is not None and peers:
            best, tool = min(peers)
            parts.append(f"deep {med['xcatfab-deep']:.2f} s = {med['xcatfab-deep'] / best:.2f}× the fastest deep "
                         f"peer ({LABELS[tool]}, {best:.2f} s), {best / med['xcatfab-deep']:.1f}× faster")
        if parts:
            out.append(f"N={n}: xcatfab " + "; ".join(parts))
    return out


def issue15_goals(ns: list, noop: dict, hashed: Optional[dict]) -> list:
    """Issue 15's converge goals read off the medians, each met or the gap."""
    out = []
    for n in ns:
        stats = noop.get(str(n)) or {}
        f = (stats.get("floor") or {}).get("median")
        x = (stats.get("xcatfab") or {}).get("median")
        d = (stats.get("xcatfab-deep") or {}).get("median")
        p = (stats.get("pyinfra") or {}).get("median")
        if f is None:
            continue
        if x is not None:
            limit = 1.5 if n == 1 else 1.3
            verdict = "met" if x <= limit * f else f"NOT met (gap {x - limit * f:.2f} s)"
            out.append(f"N={n}: quick no-op {x / f:.2f}× the floor, goal ≤ {limit}×: {verdict}"
                       + ("" if p is None else (", below pyinfra" if x < p else ", NOT below pyinfra")))
        if d is not None and hashed and hashed.get("seconds") is not None:
            budget = 2 * f + hashed["seconds"]
            verdict = "met" if d <= budget else f"NOT met (gap {d - budget:.2f} s)"
            out.append(f"N={n}: deep no-op {d:.2f} s, goal ≤ 2× floor + one hash of the ISO "
                       f"({2 * f:.2f} + {hashed['seconds']:.2f} = {budget:.2f} s): {verdict}")
    return out


def replace_section(document: str, title: str, body: str) -> str:
    """``document`` with the ``## title`` section's body replaced (appended when absent).

    The section runs to the next ``## `` heading; other sections are kept as they are.
    """
    heading = f"## {title}"
    lines = document.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    block = [heading, ""] + body.rstrip("\n").splitlines() + [""]
    if start is None:
        if not lines:
            lines = ["# Benchmarks", ""]
        elif lines[-1].strip():
            lines.append("")
        return "\n".join(lines + block).rstrip("\n") + "\n"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(lines[:start] + block + lines[end:]).rstrip("\n") + "\n"


# ============================================================== environment
def log(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


def cache_root() -> Path:
    from tests.labkit.common import cache_dir

    return cache_dir()


def ensure_venv(name: str, requirements: Path) -> Path:
    """A virtualenv for a peer, created once and reused while its requirements are unchanged."""
    venv = cache_root() / "bench-venvs" / name
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    stamp = venv / ".bench-requirements"
    if stamp.is_file() and stamp.read_text().strip() == digest and (venv / "bin" / "python").exists():
        return venv
    log(f"creating the {name} virtualenv in {venv} from {requirements.relative_to(ROOT)} (PyPI)")
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    proc = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                           "-r", str(requirements)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench: pip install -r {requirements} failed:\n{proc.stdout}{proc.stderr}")
    stamp.write_text(digest + "\n")
    return venv


def _out(argv: list, **kw) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, **kw)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (proc.stdout + proc.stderr).strip()


def tool_versions(venvs: dict) -> dict:
    versions = {"Python (xcatfab)": platform.python_version()}
    try:
        from importlib.metadata import version

        for pkg in ("fabric", "invoke", "paramiko"):
            versions[pkg] = version(pkg)
    except Exception:
        pass
    if "pyinfra" in venvs:
        versions["pyinfra"] = _out([str(venvs["pyinfra"] / "bin" / "pyinfra"), "--version"]).split()[-1].lstrip("v")
    if "ansible" in venvs:
        py = str(venvs["ansible"] / "bin" / "python")
        code = ("from importlib.metadata import version as v; import json, glob;"
                "m = glob.glob(__import__('sys').prefix + '/lib/python*/site-packages/ansible_collections/"
                "community/docker/MANIFEST.json');"
                "print(v('ansible'), v('ansible-core'), json.load(open(m[0]))['collection_info']['version'])")
        parts = _out([py, "-c", code]).split()
        if len(parts) == 3:
            versions["ansible"] = parts[0]
            versions["ansible-core"] = parts[1]
            versions["community.docker"] = parts[2]
    return versions


def contention() -> str:
    """The machine's load average and the other busy work on it (VMs of other sessions), for the results."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    qemu = sum(1 for pid in os.listdir("/proc") if pid.isdigit() and _comm(pid).startswith("qemu-system"))
    return f"load average {load}" + (f"; {qemu} QEMU VM(s) of another session running" if qemu else "")


def _comm(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def machine_info() -> dict:
    info = {"nproc": os.cpu_count(), "kernel": platform.release()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory"] = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                info["os"] = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    info["openssh"] = _out(["ssh", "-V"]).splitlines()[0] if _out(["ssh", "-V"]) else "ssh ?"
    info["docker"] = _out(["docker", "--version"]) or "docker ?"
    return info


def ensure_iso() -> dict:
    """The benchmark's 64 MiB ISO (deterministic content), built once with xorriso and cached."""
    directory = cache_root() / "bench"
    iso = directory / ISO_NAME
    meta = directory / (ISO_NAME + ".json")
    if iso.is_file() and meta.is_file():
        data = json.loads(meta.read_text())
        if data.get("size") == iso.stat().st_size:
            return data
    log(f"building {iso} (xorriso, {ISO_PAYLOAD // (1024 * 1024)} MiB payload)")
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        payload = Path(tmp) / "payload"
        payload.mkdir()
        rng = random.Random(7)
        with open(payload / "data.bin", "wb") as fh:
            left = ISO_PAYLOAD
            while left:
                chunk = min(left, 1 << 20)
                fh.write(rng.randbytes(chunk))
                left -= chunk
        subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-V", "XCATFAB_BENCH", "-o", str(iso) + ".tmp",
                        str(payload)], check=True, capture_output=True)
    os.replace(str(iso) + ".tmp", iso)
    sha1, sha256 = hashlib.sha1(), hashlib.sha256()
    with open(iso, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha1.update(block)
            sha256.update(block)
    data = {"src": str(iso), "name": ISO_NAME, "size": iso.stat().st_size,
            "sha1": sha1.hexdigest(), "sha256": sha256.hexdigest()}
    meta.write_text(json.dumps(data, indent=1) + "\n")
    return data


def acquire_lab(need: int, explicit_hosts: bool):
    """A healthy lab with at least ``need`` hosts: reused as it is, else brought up.

    With explicit hosts (``--hosts``/``$XCATFAB_BENCH_HOSTS``) an unhealthy or too
    small lab is an error: other people's hosts are never taken down for a benchmark.
    """
    from tests.labkit.netns.lifecycle import current_lab, healthy, lab_up

    lab = current_lab()
    if lab is not None and len(lab.hosts) >= need:
        problems = healthy(lab)
        if not problems:
            return lab
        if explicit_hosts:
            raise SystemExit("bench: the lab is not healthy (" + "; ".join(problems) + "); not touching it "
                             "because hosts were given explicitly")
    elif lab is not None and explicit_hosts:
        raise SystemExit(f"bench: the lab has {len(lab.hosts)} hosts, {need} needed; not touching it")
    log(f"bringing up a lab with {need} hosts (inv lab.up --hosts {need})")
    return lab_up(need, log=lambda msg: log(f"[lab] {msg}"))


# ============================================================== running the tools
class Runner:
    """How each tool is run on a list of hosts; one call = one timed run."""

    def __init__(self, lab, hosts: list, venvs: dict, iso: dict, work: Path):
        self.lab, self.venvs, self.iso, self.work = lab, venvs, iso, work
        self.fab = str(Path(sys.executable).parent / "fab")
        self.rollout = xcatfab_has_rollout()
        self.xcatfab_iso = xcatfab_has_iso_step()
        # copycds cannot identify the benchmark's ISO by itself (it is no distribution's media).
        self.sets = (["--set", f"isos={iso['src']} sha256={iso['sha256']} distro={ISO_DISTRO} arch={ISO_ARCH}"]
                     if self.xcatfab_iso else [])
        self.inventories: dict = {}
        self.seq = 0
        #: More `fab rollout` arguments (the scale benchmark's `--serial 25%`).
        self.rollout_args: list = []
        self.write_inventories(hosts)

    # -- inventories for the peers, one per host list
    def write_inventories(self, hosts: list) -> None:
        from bench.peers.inventory import ansible_inventory, host_spec, pyinfra_inventory, rw_binds_are_drift
        from tasks.runtime.inventory import load_hosts

        cfgs = {c.name: c for c in load_hosts(str(self.lab.inventory), names=hosts)}
        specs = {h: host_spec(cfgs[h], self.iso) for h in hosts}
        connect = {h: {"address": cfgs[h].connect_address, "key": str(self.lab.ssh_key),
                       "known_hosts": str(self.lab.known_hosts)} for h in hosts}
        self.specs, self.connect = specs, connect
        # Ansible and xcatfab must agree on what converged means, or they recreate each
        # other's container on every alternation (see rw_binds_are_drift).
        self.rw_drift = any(rw_binds_are_drift(cfgs[h]) for h in hosts)
        self.volume_comparison = "ignore" if self.rw_drift else "strict"
        self.ansible_inventory, self.pyinfra_inventory = ansible_inventory, pyinfra_inventory

    def inventory_for(self, hosts: list) -> dict:
        key = ",".join(hosts)
        if key not in self.inventories:
            d = self.work / "inventories" / key.replace(",", "_")
            d.mkdir(parents=True, exist_ok=True)
            specs = {h: self.specs[h] for h in hosts}
            (d / "ansible.yml").write_text(self.ansible_inventory(specs, str(self.lab.ssh_config),
                                                                  self.volume_comparison))
            (d / "pyinfra_inventory.py").write_text(self.pyinfra_inventory(specs, self.connect))
            self.inventories[key] = d
        return {"ansible": self.inventories[key] / "ansible.yml",
                "pyinfra": self.inventories[key] / "pyinfra_inventory.py"}

    def xcatfab_mode(self) -> str:
        how = ("`fab rollout --inventory INV --limit H1,H2,... --forks N` (one process)" if self.rollout
               else "N parallel `fab -H HOST deploy --inventory INV` processes (tasks/rollout.py had no "
                    "`fab rollout` yet)")
        iso = ("with the ISO (`--set isos=...`)" if self.xcatfab_iso
               else "WITHOUT the ISO: xcatfab's deploy had no iso step yet, the peers stage it")
        return f"{how}, {iso}"

    def _env(self, venv: Optional[Path] = None, **extra) -> dict:
        env = dict(os.environ)
        env.pop("VIRTUAL_ENV", None)
        # As installed for an admin: Python may cache bytecode (with PYTHONDONTWRITEBYTECODE set,
        # as in some CI shells, xcatfab's editable sources would be recompiled on every run).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        if venv is not None:
            env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def commands(self, tool: str, hosts: list) -> list:
        """[(argv, env, cwd)] started together for one run of ``tool`` on ``hosts``."""
        if tool == "floor":
            return [(["ssh", "-F", str(self.lab.ssh_config), h, "true"], self._env(), None) for h in hosts]
        if tool in XCATFAB_TOOLS:
            env = self._env(XCATFAB_COUNTS="1")
            inv = str(self.lab.inventory)
            extra = ["--verify", "deep"] if tool == "xcatfab-deep" else []
            if self.rollout:
                # --forks N: every host at once, as the floor, pyinfra and Ansible tuned (forks=N) run them.
                return [([self.fab, "rollout", "--inventory", inv, "--limit", ",".join(hosts), "--forks",
                          str(len(hosts)), *self.sets, *extra, *self.rollout_args], env, str(ROOT))]
            return [([self.fab, "-H", h, "deploy", "--inventory", inv, *self.sets, *extra], env, str(ROOT))
                    for h in hosts]
        inv = self.inventory_for(hosts)
        if tool == "pyinfra":
            venv = self.venvs["pyinfra"]
            return [([str(venv / "bin" / "pyinfra"), "-y", str(inv["pyinfra"]), "deploy.py"],
                     self._env(venv), str(PEERS / "pyinfra"))]
        if tool.startswith("ansible-"):
            venv = self.venvs["ansible"]
            profile = tool.split("-", 1)[1]
            extra = {"ANSIBLE_CONFIG": PEERS / "ansible" / f"ansible-{profile}.cfg",
                     "ANSIBLE_SSH_CONTROL_PATH_DIR": self.work / "cp" / tool}
            if profile == "tuned":
                extra["ANSIBLE_FORKS"] = len(hosts)
            return [([str(venv / "bin" / "ansible-playbook"), "-i", str(inv["ansible"]),
                      str(PEERS / "ansible" / "converge.yml")], self._env(venv, **extra), str(PEERS / "ansible"))]
        raise ValueError(tool)

    def run(self, tool: str, hosts: list) -> dict:
        """One timed run; the result has seconds, rc, per-host changed and connections."""
        cmds = self.commands(tool, hosts)
        cp_dir = None
        if tool.startswith("ansible-"):
            cp_dir = Path(cmds[0][1]["ANSIBLE_SSH_CONTROL_PATH_DIR"])
            shutil.rmtree(cp_dir, ignore_errors=True)
            cp_dir.mkdir(parents=True)
        logs = {h: self.lab.host(h).sshd_log for h in hosts}
        offsets = {h: _size(p) for h, p in logs.items()}
        outputs = [tempfile.TemporaryFile() for _ in cmds]
        rss_files = [self.work / f"rss-{i}" for i in range(len(cmds))]
        started = time.perf_counter()
        procs = [subprocess.Popen(with_peak_rss(argv, rss), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
                 for (argv, env, cwd), out, rss in zip(cmds, outputs, rss_files)]
        waited = [wait_with_usage(proc, started + RUN_TIMEOUT) for proc in procs]
        seconds = time.perf_counter() - started
        rcs = [rc for rc, _usage in waited]
        peaks = [read_peak_rss(f) for f in rss_files]
        usage = {"cpu_seconds": sum(u["cpu_seconds"] for _rc, u in waited),
                 "maxrss_mib": None if None in peaks else max(peaks, default=0.0)}
        text = ""
        for out in outputs:
            out.seek(0)
            text += out.read().decode(errors="replace")
            out.close()
        self.seq += 1
        logs_dir = self.work / "logs"
        logs_dir.mkdir(exist_ok=True)
        (logs_dir / f"{self.seq:04d}-{tool}-N{len(hosts)}.log").write_text(text)
        if cp_dir is not None:
            close_control_masters(cp_dir)
        time.sleep(0.05)  # sshd writes its log line before the session starts; this is only margin
        accepted = {h: count_accepted(_read_from(logs[h], offsets[h])) for h in hosts}
        rc = max(rcs) if rcs else 0
        return {"seconds": seconds, "rc": rc, "changed": changed_by_host(tool, text, hosts),
                "connections": accepted,
                "self_counts": parse_xcatfab_counts(text) if tool in XCATFAB_TOOLS else {},
                "usage": usage, "output_tail": text[-3000:] if rc else ""}


def restat(s: dict) -> dict:
    """``s`` (raw ``runs``/``rcs``/``changed`` lists of one tool and N) with its statistics (re)computed.

    A run that failed or changed something was no no-op: it stays in the raw lists, not in the statistics.
    """
    runs = [{"seconds": t, "rc": rc, "changed": ch} for t, rc, ch in zip(s["runs"], s["rcs"], s["changed"])]
    ok = [r["seconds"] for r in runs if is_noop(r)]
    s = dict(s, **summarize(ok))
    s["excluded"] = len(runs) - len(ok)
    s["changed_total"] = sum(sum(v or 0 for v in r["changed"].values()) for r in runs)
    return s


def is_noop(result: dict) -> bool:
    """A clean no-op run: exit status 0 and nothing changed on any host (unknown counts as changed)."""
    return result["rc"] == 0 and all(v == 0 for v in result["changed"].values())


def changed_by_host(tool: str, text: str, hosts: list) -> dict:
    if tool == "floor":
        return {h: 0 for h in hosts}
    parsed = parse_pyinfra(text) if tool == "pyinfra" else parse_recap(text)  # xcatfab and Ansible: a recap
    return {h: (parsed.get(h) or {}).get("changed") for h in hosts}


TIME = "/usr/bin/time"


def with_peak_rss(argv: list, out: Path) -> list:
    """``argv`` under GNU time writing the peak RSS (KiB) of the command and its waited-for children to ``out``.

    Not ``wait4`` from here: a child's ru_maxrss starts at its parent's RSS at fork
    (Linux keeps the old memory's high-water mark across exec), so every tool
    started by this process would show at least this process's own RSS.
    """
    if not os.path.exists(TIME):
        return argv
    out.unlink(missing_ok=True)
    return [TIME, "-f", "%M", "-o", str(out), *argv]


def read_peak_rss(path: Path) -> Optional[float]:
    """MiB from a GNU time ``%M`` file (None: no such measure)."""
    try:
        return int(path.read_text().split()[-1]) / 1024
    except (OSError, ValueError, IndexError):
        return None


def wait_with_usage(proc: subprocess.Popen, deadline: float) -> tuple:
    """Wait for ``proc`` (killed at ``deadline``, a perf_counter value) -> (exit status, its resource usage).

    ``os.wait4`` gives the process's own CPU time and peak RSS together with those of
    the descendants it waited for (a tool's workers and ssh children).
    """
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.005)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, {"cpu_seconds": usage.ru_utime + usage.ru_stime, "maxrss_mib": usage.ru_maxrss / 1024}


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def close_control_masters(cp_dir: Path) -> None:
    """Stop the ControlPersist masters a run left behind, so no run inherits a connection."""
    for sock in cp_dir.iterdir() if cp_dir.is_dir() else []:
        subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "bench-master"],
                       capture_output=True, timeout=10)


def xcatfab_has_rollout() -> bool:
    try:
        from tasks.cli import fab

        return "rollout" in fab.ns.task_names
    except Exception:
        return False


def xcatfab_has_iso_step() -> bool:
    try:
        from tasks.ops.deploy import step_names

        return "iso" in step_names()
    except Exception:
        return False


# ============================================================== counting
def count_one(runner: Runner, tool: str, host: str) -> dict:
    """One untimed run of ``tool`` on ``host`` with its sshd traced: connections, sessions, commands."""
    lab_host = runner.lab.host(host)
    pid = lab_host.sshd_pid()
    trace = runner.work / f"strace-{tool}.txt"
    st = subprocess.Popen(["strace", "-f", "-qq", "-s", "160", "-e", "trace=execve,clone,clone3,fork,vfork",
                           "-e", "signal=none", "-p", str(pid), "-o", str(trace)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.7)  # strace attaches
    try:
        result = runner.run(tool, [host])
    finally:
        time.sleep(0.5)
        st.send_signal(signal.SIGINT)
        try:
            st.wait(timeout=10)
        except subprocess.TimeoutExpired:
            st.kill()
            st.wait()
    parsed = parse_strace(trace.read_text(errors="replace"), pid)
    counts = {"accepted": result["connections"].get(host), **parsed, "rc": result["rc"],
              "changed": result["changed"].get(host)}
    own = result["self_counts"].get(host)
    if tool in XCATFAB_TOOLS and not own and runner.rollout:
        # `fab rollout` does not print XCATFAB_COUNTS: ask `fab -H` on the same host (untimed, not traced).
        argv = [runner.fab, "-H", host, "deploy", "--inventory", str(runner.lab.inventory), *runner.sets,
                *(["--verify", "deep"] if tool == "xcatfab-deep" else [])]
        proc = subprocess.run(argv, cwd=str(ROOT), capture_output=True, text=True,
                              env=runner._env(XCATFAB_COUNTS="1"))
        own = parse_xcatfab_counts(proc.stdout + proc.stderr).get(host)
        if own:
            own = dict(own, via="fab -H")
    if own:
        counts["self_reported"] = (f"connections={own['connections']} commands={own['commands']}"
                                   + (f" (from `{own['via']}`)" if own.get("via") else ""))
    return counts


# ============================================================== phases
def prepare_images(runner: Runner, hosts: list) -> None:
    """The image on every host (xcatfab's own image step, untimed): resets keep it from here on."""
    log(f"image on {', '.join(hosts)} (fab -H ... image, untimed)")
    proc = subprocess.run([runner.fab, "-H", ",".join(hosts), "image", "--inventory", str(runner.lab.inventory)],
                          cwd=str(ROOT), capture_output=True, text=True, env=runner._env())
    if proc.returncode != 0:
        raise SystemExit(f"bench: the image step failed:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")


def tools_at(n: int, tools: list, max_n: dict) -> list:
    """The tools run at N=``n``: those without a cap (``max_n``: tool -> largest N) or within it."""
    return [t for t in tools if n <= max_n.get(t, n)]


def skipped_runs(ns: list, tools: list, max_n: dict) -> dict:
    """N -> the tools NOT run at that N (by ``--max-n``): said in the results, never dropped silently."""
    out = {}
    for n in ns:
        left = [t for t in tools if t not in tools_at(n, tools, max_n)]
        if left:
            out[str(n)] = left
    return out


def run_first(runner: Runner, ns: list, hosts: list, tools: list, max_n: Optional[dict] = None) -> dict:
    first: dict = {}
    for n in ns:
        chosen = hosts[:n]
        for tool in tools_at(n, tools, max_n or {}):
            if tool in ("floor", "xcatfab-deep"):  # deep changes nothing on a first converge: one xcatfab row
                continue
            log(f"first converge, N={n}, {tool}: resetting {', '.join(chosen)}")
            for h in chosen:
                runner.lab.reset_host(h)
            result = runner.run(tool, chosen)
            state = "ok" if result["rc"] == 0 else f"FAILED rc={result['rc']}"
            log(f"first converge, N={n}, {tool}: {result['seconds']:.2f} s ({state})")
            if result["rc"]:
                print(result["output_tail"], file=sys.stderr)
            first.setdefault(str(n), {})[tool] = {k: result[k] for k in ("seconds", "rc", "changed", "usage")}
    return first


def run_warmup(runner: Runner, hosts: list, tools: list, max_n: Optional[dict] = None) -> list:
    """Each tool once (xcatfab first and last), so every tool sees converged hosts (a capped tool: the
    hosts it runs on)."""
    order = [t for t in tools if t != "floor"]
    if "xcatfab" in order:
        order = ["xcatfab"] + [t for t in order if t != "xcatfab"] + ["xcatfab"]
    log_rows = []
    for tool in order:
        result = runner.run(tool, hosts[:(max_n or {}).get(tool, len(hosts))])
        log(f"warm-up {tool}: {result['seconds']:.2f} s rc={result['rc']} changed={result['changed']}")
        if result["rc"]:
            print(result["output_tail"], file=sys.stderr)
        log_rows.append({"tool": tool, "seconds": result["seconds"], "rc": result["rc"], "changed": result["changed"]})
    return log_rows


def run_noop(runner: Runner, ns: list, hosts: list, tools: list, runs: int, max_n: Optional[dict] = None) -> dict:
    noop: dict = {}
    for n in ns:
        chosen = hosts[:n]
        here = tools_at(n, tools, max_n or {})
        raw: dict = {t: [] for t in here}
        for r in range(runs):
            for tool in rotate(here, r):
                result = runner.run(tool, chosen)
                raw[tool].append(result)
                changed = sum(v or 0 for v in result["changed"].values())
                flag = "" if result["rc"] == 0 and changed == 0 else f"  <- rc={result['rc']} changed={changed}"
                log(f"N={n} round {r + 1}/{runs} {tool:16s} {result['seconds']:.3f} s{flag}")
                if result["rc"]:
                    print(result["output_tail"], file=sys.stderr)
        stats = {}
        for tool, results in raw.items():
            s = {"runs": [round(x["seconds"], 4) for x in results], "rcs": [x["rc"] for x in results],
                 "changed": [x["changed"] for x in results], "connections": [x["connections"] for x in results]}
            s["usage"] = [x.get("usage") for x in results]
            if tool in XCATFAB_TOOLS:
                s["self_counts"] = [x["self_counts"] for x in results]
            stats[tool] = restat(s)
        noop[str(n)] = stats
    return noop


def parse_max_n(text: str, tools: list) -> dict:
    """``TOOL=N,...`` -> {tool: N}; an unknown tool or a bad N is an error."""
    out = {}
    for item in parse_list(text):
        tool, sep, value = item.partition("=")
        if not sep or tool not in TOOLS or not value.isdigit() or int(value) < 1:
            raise SystemExit(f"bench: --max-n: expected TOOL=N with TOOL one of {', '.join(TOOLS)}, got {item!r}")
        if tool in tools:
            out[tool] = int(value)
    return out


def hash_seconds(lab, host: str, iso: dict) -> Optional[dict]:
    """What hashing the staged ISO once costs on a lab host: ``ssh HOST sha256(ISO)`` minus ``ssh HOST true``
    (medians of 3), the page cache warm as in a no-op run."""
    path = f"{lab.host(host).iso_dir}/{iso['name']}"
    code = ("python3 -c 'import hashlib,sys; h=hashlib.sha256(); f=open(sys.argv[1],\"rb\"); "
            "[h.update(b) for b in iter(lambda: f.read(1<<20), b\"\")]; print(h.hexdigest())' " + path)
    hashed, plain = [], []
    for _ in range(3):
        for argv, into in ((["ssh", "-F", str(lab.ssh_config), host, code], hashed),
                           (["ssh", "-F", str(lab.ssh_config), host, "true"], plain)):
            started = time.perf_counter()
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
            if proc.returncode != 0:
                return None
            into.append(time.perf_counter() - started)
    return {"seconds": max(0.0, statistics.median(hashed) - statistics.median(plain)), "bytes": iso["size"]}


def bashrc_overhead(lab, host: str) -> Optional[dict]:
    """How long a non-interactive shell's ~/.bashrc takes on a lab host (sshd runs it for every command)."""
    code = "s=$(date +%s%N); . ~/.bashrc >/dev/null 2>&1; e=$(date +%s%N); echo $(( (e - s) / 1000 ))"
    samples = []
    for _ in range(5):
        out = _out(["ssh", "-F", str(lab.ssh_config), host, code])
        try:
            samples.append(int(out.splitlines()[-1]) / 1e6)
        except (ValueError, IndexError):
            return None
    return summarize(samples)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/converge.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", default=os.environ.get("XCATFAB_BENCH_N", "1,2,4"), help="host counts (default 1,2,4)")
    parser.add_argument("--runs", type=int, default=int(os.environ.get("XCATFAB_BENCH_RUNS", "5")))
    parser.add_argument("--hosts", default=None, help="lab hosts to use (default: $XCATFAB_BENCH_HOSTS or "
                                                      "the lab's first max(N))")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--max-n", default=os.environ.get("XCATFAB_BENCH_MAX_N", ""),
                        help="TOOL=N,...: run TOOL at N up to this only (e.g. ansible-default=4; said in the "
                             "results)")
    parser.add_argument("--first-tools", default=None, help="tools of the first-converge phase (default: --tools)")
    parser.add_argument("--skip-first", action="store_true", help="no first-converge phase (no host reset)")
    parser.add_argument("--skip-counts", action="store_true", help="no strace counting pass")
    parser.add_argument("--markdown", default=str(MARKDOWN), help="file whose Converge section is rewritten")
    parser.add_argument("--no-markdown", action="store_true", help="write the JSON only")
    parser.add_argument("--render", metavar="JSON", help="no run: rewrite the section from a results file")
    args = parser.parse_args(argv)
    if args.render:
        results = json.loads(Path(args.render).read_text())
        for stats in results.get("noop", {}).values():
            for tool in stats:
                stats[tool] = restat(stats[tool])
        write_markdown(Path(args.markdown), markdown_section(results))
        return 0

    if os.geteuid() != 0:
        raise SystemExit("bench: the lab needs root")
    ns = sorted({int(x) for x in parse_list(args.n)})
    tools = [t for t in parse_list(args.tools)]
    unknown = [t for t in tools if t not in TOOLS]
    if unknown or not ns or args.runs < 1:
        raise SystemExit(f"bench: bad --tools/--n/--runs ({', '.join(unknown)})")
    tools = [t for t in TOOLS if t in tools]  # the documented order
    max_n = parse_max_n(args.max_n, tools)
    first_tools = [t for t in tools if t in (parse_list(args.first_tools) if args.first_tools else tools)]
    need = max(ns)
    explicit = bool(parse_list(args.hosts) or parse_list(os.environ.get("XCATFAB_BENCH_HOSTS")))
    lab = acquire_lab(need, explicit)
    hosts = choose_hosts(args.hosts, os.environ.get("XCATFAB_BENCH_HOSTS"), lab.names, need)[:need]
    log(f"hosts: {', '.join(hosts)}; N = {ns}; {args.runs} runs; tools: {', '.join(tools)}")

    venvs = {}
    if "pyinfra" in tools:
        venvs["pyinfra"] = ensure_venv("pyinfra", PEERS / "requirements-pyinfra.txt")
    if any(t.startswith("ansible") for t in tools):
        venvs["ansible"] = ensure_venv("ansible", PEERS / "requirements-ansible.txt")
    iso = ensure_iso()
    work = cache_root() / "bench" / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    runner = Runner(lab, hosts, venvs, iso, work)
    results = {
        "command": " ".join(["python bench/converge.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "ns": ns, "runs": args.runs, "tools": tools, "hosts": hosts, "max_n": max_n,
        "skipped": skipped_runs(ns, tools, max_n), "first_tools": first_tools,
        "machine": machine_info(), "versions": tool_versions(venvs), "load_before": contention(),
        "xcatfab_mode": runner.xcatfab_mode(), "iso": iso,
        "ansible_volume_comparison": runner.volume_comparison,
    }
    log(f"xcatfab: {results['xcatfab_mode']}")
    for k, v in results["versions"].items():
        log(f"version: {k} {v}")
    prepare_images(runner, hosts)
    if not args.skip_first:
        results["first"] = run_first(runner, ns, hosts, first_tools, max_n)
    results["warmup"] = run_warmup(runner, hosts, tools, max_n)
    if not args.skip_counts and shutil.which("strace"):
        results["counts"] = {}
        for tool in tools:
            results["counts"][tool] = count_one(runner, tool, hosts[0])
            c = results["counts"][tool]
            log(f"counts {tool}: connections={c['accepted']} sessions={c['sessions']} commands={c['commands']}"
                + (f" (own: {c['self_reported']})" if c.get("self_reported") else ""))
    results["bashrc"] = bashrc_overhead(lab, hosts[0])
    results["hash_seconds"] = hash_seconds(lab, hosts[0], runner.iso)
    results["noop"] = run_noop(runner, ns, hosts, tools, args.runs, max_n)
    results["load_after"] = contention()
    results["notes"] = notes(results, runner)

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"converge-{stamp}.json"
    out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    log(f"raw results: {out}")
    body = markdown_section(results)
    print()
    print(body)
    if not args.no_markdown:
        write_markdown(Path(args.markdown), body)
    return 0


def write_markdown(path: Path, body: str) -> None:
    doc = path.read_text() if path.exists() else ""
    path.write_text(replace_section(doc, SECTION, body))
    log(f"wrote the {SECTION} section of {path}")


def notes(results: dict, runner: Runner) -> list:
    out = []
    if runner.xcatfab_iso:
        out.append(f"The ISO ({results['iso']['size'] / 2**20:.1f} MiB): xcatfab's iso step records the sha256 it "
                   "computed while staging, so a quick no-op run reads no ISO (`--verify deep` hashes it on the "
                   "host in the same fact round trip); it also runs copycds "
                   f"(`-n {ISO_DISTRO} -a {ISO_ARCH}`: the benchmark's ISO is no distribution's media) on the first "
                   "converge. The peers only stage the file (Ansible: copy with checksum; pyinfra: files.put) and "
                   "re-hash it (sha1) on every run, as those modules do.")
    if not runner.xcatfab_iso:
        out.append("xcatfab's deploy had no ISO step yet: its runs do not stage the ISO, while pyinfra and "
                   "Ansible stage (and on every no-op run re-hash) the 64 MiB ISO.")
    if runner.rw_drift:
        out.append("xcatfab takes a bind spelled `SRC:DST:rw` for drift from its own `SRC:DST` (tasks/container.py "
                   "compares HostConfig.Binds verbatim), and community.docker always spells binds with `:rw`: the "
                   "two would recreate each other's container on every alternation. So Ansible's docker_container "
                   "ran with `comparisons: volumes: ignore` (its binds were NOT compared) in this run.")
    out.append("The image is kept by `Lab.reset_host`, so no first-converge time includes an image build; "
               "the peers only check that the image is present (xcatfab checks its build-context label).")
    out.append("xcatfab's quick no-op run does not read xCAT's tables when their files are unchanged since it "
               "last verified them (a stamp of the table files kept on the controller); `--verify deep` and the "
               "peers run `tabdump site` and `tabdump networks` in the container every time.")
    h = results.get("hash_seconds")
    if h and h.get("seconds") is not None:
        out.append(f"Hashing the staged ISO once on a lab host (python3 hashlib sha256, page cache warm, as in "
                   f"a no-op run) takes {h['seconds']:.2f} s: `ssh HOST <hash>` minus `ssh HOST true`, medians "
                   "of 3; the deep goal's allowance.")
    out.append("pyinfra 3.10's docker.container/docker.network only test that the object exists "
               "(ContainerSpec.diff_from_inspect returns nothing); Ansible's docker_container compares the "
               "full spec, docker_network driver, options and IPAM.")
    out.append("Ansible runs get a fresh ControlPath directory and their ControlPersist masters are closed after "
               "each run, so every run (like every other tool's) opens its connections afresh; a rerun within "
               "60 s would reuse them. Both Ansible profiles set ansible_python_interpreter=/usr/bin/python3 "
               "(root's PATH on the lab starts with pyenv shims).")
    b = results.get("bashrc")
    if b and b.get("median") is not None:
        out.append(f"Every SSH command on the lab pays root's ~/.bashrc (pyenv init), {b['median']:.3f} s "
                   f"median here: bash sources it for commands run by sshd. It is part of the floor too, and "
                   "weighs on a tool in proportion to the commands it runs per host.")
    return out


if __name__ == "__main__":
    sys.exit(main())
