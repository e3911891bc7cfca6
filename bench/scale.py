"""Scale benchmark (issue 15): the lab's memory per host, a `--serial 25%` rollout, the ISO relay to many hosts.

    python bench/scale.py [--hosts lab1,...] [--serial-runs 3] [--relay-n 8] [--relay-mib 1024]
                          [--no-markdown] [--markdown FILE]
    python bench/scale.py --render bench/results/scale-*.json

On the lab (tests/labkit/netns; root), converged beforehand (bench/converge.py
runs first in ``make bench``):

* **memory per lab host**: the resident memory (RSS, and PSS: shared pages
  split between their users) of every process of one lab host — its dockerd,
  containerd, sshd, the containerd shim and the xCAT container's processes —
  found by the host's own paths on their command lines and by the cgroup the
  lab puts its containers in; from it, how many such hosts fit in this
  machine's memory;
* **`fab rollout --serial 25%`** of all the hosts given (no-op, converged),
  against the same rollout all at once and the floor (N parallel ``ssh HOST
  true``), ``--serial-runs`` rounds in rotating order;
* **controller cost per host**: one no-op run of xcatfab (quick and deep) and
  pyinfra at each ``--usage-n``, under GNU time: CPU seconds per host and the
  peak RSS of the run's largest process;
* **ISO relay**: ``fab -H h1..hN iso --no-copycds`` of one new ``--relay-mib``
  file to 1 host and to N hosts (each host's iso_dir emptied first), the
  controller's egress counted by iptables on its OUTPUT chain (bench/iso.py's
  counter), the wall clock of N hosts against one host.

Not a test: nothing here asserts a time. Results: the "Scale" section of
BENCHMARKS.md and JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.converge import (  # noqa: E402  (ROOT is on sys.path now)
    fmt_s,
    log,
    machine_info,
    parse_list,
    replace_section,
    rotate,
    summarize,
    wait_with_usage,
)

MARKDOWN = ROOT / "BENCHMARKS.md"
RESULTS = ROOT / "bench" / "results"
SECTION = "Scale"
FAB = str(Path(sys.executable).parent / "fab")
MIB = 1 << 20
#: The rows of the serial benchmark, in their documented order.
SERIAL_ROWS = ["floor", "all-at-once", "serial-25"]
SERIAL_LABELS = {
    "floor": "floor: N parallel `ssh HOST true`",
    "all-at-once": "`fab rollout` (all hosts at once, forks=N)",
    "serial-25": "`fab rollout --serial 25%` (4 batches)",
}


# ============================================================== pure helpers
def host_processes(name: str, procs: list) -> list:
    """The processes of lab host ``name`` among ``procs`` (dicts: pid, cmdline, cgroup, rss_kib, pss_kib).

    A lab host's processes carry its own paths on their command lines
    (``/var/lib/xcatfab-lab/NAME/``, ``/run/xcatfab-lab/NAME/``), or live in the
    cgroup the lab gives its containers (``/xcatfab-lab/NAME``).
    """
    marks = (f"/xcatfab-lab/{name}/", f"/xcatfab-lab/{name} ")
    found = []
    for proc in procs:
        cmd = proc.get("cmdline", "") + " "
        cgroup = proc.get("cgroup", "")
        if any(m in cmd for m in marks) or cgroup.startswith(f"/xcatfab-lab/{name}/") \
                or cgroup == f"/xcatfab-lab/{name}":
            found.append(proc)
    return found


def memory_summary(per_host: dict, total_kib: int) -> dict:
    """Per host RSS/PSS (MiB) -> the median host, and how many such hosts fit in ``total_kib``."""
    if not per_host:
        return {}
    pss = statistics.median(h["pss_mib"] for h in per_host.values())
    rss = statistics.median(h["rss_mib"] for h in per_host.values())
    total_mib = total_kib / 1024
    return {"pss_mib": pss, "rss_mib": rss, "total_mib": total_mib,
            "fit_pss": int(total_mib * 0.8 // pss) if pss else None,
            "fit_rss": int(total_mib * 0.8 // rss) if rss else None}


def serial_summary(raw: dict) -> dict:
    """Raw rounds (row -> [{"seconds", "rc"}]) -> statistics of the clean ones (rc 0), failures counted."""
    out = {}
    for row, runs in raw.items():
        ok = [r["seconds"] for r in runs if r["rc"] == 0]
        out[row] = dict(summarize(ok), failed=len(runs) - len(ok), runs=runs)
    return out


def markdown(results: dict) -> str:
    m = results["machine"]
    out = [f"Measured {results['date']} with `{results['command']}` on the lab (hosts "
           f"{', '.join(results['hosts'])}). Not a test: nothing asserts a time.", "",
           f"Machine: {m.get('cpu_model')}, {m.get('nproc')} cores, {m.get('memory')}, kernel {m.get('kernel')}; "
           f"{m.get('openssh')}; {m.get('docker')}.", ""]
    out += memory_lines(results.get("memory") or {})
    out += serial_lines(results.get("serial") or {}, len(results["hosts"]))
    out += usage_lines(results.get("usage") or {})
    out += relay_lines(results.get("relay") or [], results.get("relay_mib"))
    return "\n".join(out).rstrip() + "\n"


def memory_lines(memory: dict) -> list:
    if not memory.get("hosts"):
        return []
    s = memory["summary"]
    lines = ["### Memory per lab host", "",
             "| host | processes | RSS | PSS (shared pages split) |", "|---|---|---|---|"]
    for name, h in memory["hosts"].items():
        lines.append(f"| {name} | {h['count']} ({', '.join(h['names'])}) | {h['rss_mib']:.0f} MiB | "
                     f"{h['pss_mib']:.0f} MiB |")
    lines += ["", f"A converged lab host (dockerd, containerd, sshd, the containerd shim and the xCAT "
                  f"container) holds {s['pss_mib']:.0f} MiB PSS ({s['rss_mib']:.0f} MiB RSS, counting shared "
                  f"pages in full); with 80 % of this machine's {s['total_mib'] / 1024:.1f} GiB for the lab, "
                  f"{s['fit_pss']} such hosts fit by PSS ({s['fit_rss']} by RSS). Memory is not what limits "
                  "the lab on this machine: its 2 cores are.", ""]
    return lines


def serial_lines(serial: dict, n: int) -> list:
    if not serial:
        return []
    floor = (serial.get("floor") or {}).get("median")
    lines = [f"### `fab rollout --serial 25%` of {n} hosts (no-op, converged hosts)", "",
             "| row | median [min–max] | × floor | runs ok | what it measures |", "|---|---|---|---|---|"]
    meaning = {"floor": "one `ssh HOST true` per host, all at once",
               "all-at-once": "every host in one batch (forks = N): the no-op converge at this N",
               "serial-25": "batches of 25 % of the hosts, one after another (each batch waits for the last)"}
    for row in SERIAL_ROWS:
        s = serial.get(row)
        if not s:
            continue
        span = "–" if s["median"] is None else f"{fmt_s(s['median'])} [{s['min']:.2f}–{s['max']:.2f}]"
        ratio = "–" if not floor or s["median"] is None else f"{s['median'] / floor:.2f}×"
        lines.append(f"| {SERIAL_LABELS[row]} | {span} | {ratio} | {s['n']}/{s['n'] + s['failed']} | "
                     f"{meaning[row]} |")
    return lines + [""]


def usage_lines(usage: dict) -> list:
    """tool -> N -> {"cpu_seconds", "maxrss_mib", "seconds", "rc"} of one run -> a table."""
    from bench.converge import LABELS

    if not usage:
        return []
    ns = sorted({int(n) for runs in usage.values() for n in runs})
    lines = ["### Controller CPU and memory (one no-op run each, GNU time)", "",
             "| tool | " + " | ".join(f"N={n}: CPU per host, peak RSS" for n in ns) + " |",
             "|---|" + "---|" * len(ns)]
    for tool, runs in usage.items():
        cells = []
        for n in ns:
            r = runs.get(str(n))
            if not r or r.get("maxrss_mib") is None:
                cells.append("–")
                continue
            flag = "" if r["rc"] == 0 else f" (rc={r['rc']})"
            cells.append(f"{r['cpu_seconds'] / n:.3f} s, {r['maxrss_mib']:.0f} MiB{flag}")
        lines.append(f"| {LABELS.get(tool, tool)} | " + " | ".join(cells) + " |")
    return lines + ["", "CPU: user+system of the tool and the children it waited for, divided by N; peak RSS: "
                        "the largest single process (xcatfab is one process for all hosts; pyinfra too).", ""]


def measure_usage(lab, hosts: list, ns: list, tools: list) -> dict:
    from bench.converge import PEERS, Runner, ensure_iso, ensure_venv
    from tests.labkit.common import cache_dir

    venvs = {"pyinfra": ensure_venv("pyinfra", PEERS / "requirements-pyinfra.txt")} if "pyinfra" in tools else {}
    work = cache_dir() / "bench" / "work-scale"
    work.mkdir(parents=True, exist_ok=True)
    runner = Runner(lab, hosts, venvs, ensure_iso(), work)
    out: dict = {}
    for n in ns:
        for tool in tools:
            result = runner.run(tool, hosts[:n])
            out.setdefault(tool, {})[str(n)] = dict(result["usage"], seconds=result["seconds"], rc=result["rc"])
            log(f"usage N={n} {tool}: {result['usage']} rc={result['rc']}")
    return out


def relay_lines(relay: list, size_mib: Optional[int]) -> list:
    if not relay:
        return []
    lines = [f"### ISO relay, `fab -H h1..hN iso --no-copycds` of a new {size_mib} MiB file", "",
             "| N | controller sent (iptables OUTPUT) | × ISO size | wall clock | × wall of N=1 | rc |",
             "|---|---|---|---|---|---|"]
    one = next((r["seconds"] for r in relay if r["n"] == 1), None)
    for r in relay:
        ratio = "–" if not one else f"{r['seconds'] / one:.2f}×"
        lines.append(f"| {r['n']} | {r['total'] / MIB:.1f} MiB | {r['ratio']:.3f} | {r['seconds']:.1f} s | "
                     f"{ratio} | {r['rc']} |")
    big = max(relay, key=lambda r: r["n"])
    if one and big["n"] > 1:
        egress_ok = big["ratio"] <= 1.02
        wall_ok = big["seconds"] <= 1.3 * one
        lines += ["", f"Goals at N={big['n']}: controller egress ≤ 1.02× the ISO: "
                      f"{'met' if egress_ok else 'NOT met'} ({big['ratio']:.3f}×); wall clock within 1.3× of one "
                      f"host: {'met' if wall_ok else 'NOT met'} ({big['seconds'] / one:.2f}×)."]
    return lines + [""]


# ============================================================== measuring
def read_processes() -> list:
    procs = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        base = f"/proc/{entry}"
        try:
            cmdline = Path(base, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            cgroup = Path(base, "cgroup").read_text().strip().splitlines()[-1].split(":", 2)[-1]
            rollup = Path(base, "smaps_rollup").read_text()
        except OSError:
            continue
        values = {}
        for line in rollup.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] in ("Rss:", "Pss:"):
                values[parts[0][:-1].lower()] = int(parts[1])
        comm = Path(base, "comm").read_text().strip() if Path(base, "comm").exists() else "?"
        procs.append({"pid": int(entry), "cmdline": cmdline, "cgroup": cgroup, "comm": comm,
                      "rss_kib": values.get("rss", 0), "pss_kib": values.get("pss", 0)})
    return procs


def measure_memory(hosts: list) -> dict:
    procs = read_processes()
    per_host = {}
    for name in hosts:
        mine = host_processes(name, procs)
        per_host[name] = {"count": len(mine), "names": sorted({p["comm"] for p in mine}),
                          "rss_mib": sum(p["rss_kib"] for p in mine) / 1024,
                          "pss_mib": sum(p["pss_kib"] for p in mine) / 1024}
    total = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            total = int(line.split()[1])
    return {"hosts": per_host, "summary": memory_summary(per_host, total)}


def timed(argv: list) -> dict:
    started = time.perf_counter()
    procs = [subprocess.Popen(a, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                              cwd=str(ROOT)) for a in argv]
    waited = [wait_with_usage(p, started + 900) for p in procs]
    return {"seconds": time.perf_counter() - started, "rc": max(rc for rc, _u in waited),
            "cpu_seconds": sum(u["cpu_seconds"] for _rc, u in waited)}


def measure_serial(lab, hosts: list, runs: int, sets: list) -> dict:
    inv = str(lab.inventory)
    base = [FAB, "rollout", "--inventory", inv, "--limit", ",".join(hosts), "--forks", str(len(hosts)), *sets]
    argvs = {"floor": [["ssh", "-F", str(lab.ssh_config), h, "true"] for h in hosts],
             "all-at-once": [base], "serial-25": [base + ["--serial", "25%"]]}
    raw: dict = {row: [] for row in SERIAL_ROWS}
    for r in range(runs):
        for row in rotate(SERIAL_ROWS, r):
            result = timed(argvs[row])
            raw[row].append(result)
            log(f"serial round {r + 1}/{runs} {row:12s} {result['seconds']:.2f} s rc={result['rc']}")
    return serial_summary(raw)


def measure_relay(lab, hosts: list, ns: list, size_mib: int) -> list:
    import tempfile

    from bench.iso import empty_iso_dir
    from tests.labkit.netns.measure import EgressCounter

    rows = []
    with tempfile.TemporaryDirectory(prefix="xcatfab-scale-", dir="/var/tmp") as tmp:
        path = Path(tmp) / "relay.iso"
        with open(path, "wb") as fh:
            for _ in range(size_mib):
                fh.write(os.urandom(MIB))
        size = path.stat().st_size
        for n in ns:
            chosen = hosts[:n]
            for host in chosen:
                empty_iso_dir(lab, host)
            with EgressCounter(lab, chosen, "xcatfab-scale-bench") as counters:
                started = time.monotonic()
                proc = subprocess.run([FAB, "-H", ",".join(chosen), "iso", "--src", str(path), "--no-copycds",
                                       "--inventory", str(lab.inventory)], capture_output=True, text=True,
                                      cwd=ROOT)
                seconds = time.monotonic() - started
                sent = counters.read()
            total = sum(sent.values())
            rows.append({"n": n, "hosts": chosen, "seconds": seconds, "total": total, "ratio": total / size,
                         "rc": proc.returncode})
            log(f"relay N={n}: sent {total / MIB:.1f} MiB ({total / size:.3f}x) in {seconds:.1f} s "
                f"rc={proc.returncode}")
            if proc.returncode:
                print(proc.stdout[-2000:] + proc.stderr[-1000:], file=sys.stderr)
        for host in hosts[:max(ns)]:
            empty_iso_dir(lab, host)
    return rows


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/scale.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", default=os.environ.get("XCATFAB_BENCH_HOSTS", ""),
                        help="lab hosts (default: every host of the lab)")
    parser.add_argument("--serial-runs", type=int, default=3)
    parser.add_argument("--relay-n", type=int, default=8)
    parser.add_argument("--relay-mib", type=int, default=1024)
    parser.add_argument("--usage-n", default="1,4,8,16", help="N of the controller-cost runs")
    parser.add_argument("--skip", default="", help="phases to skip: memory,serial,usage,relay")
    parser.add_argument("--markdown", default=str(MARKDOWN))
    parser.add_argument("--no-markdown", action="store_true")
    parser.add_argument("--render", metavar="JSON")
    args = parser.parse_args(argv)
    if args.render:
        results = json.loads(Path(args.render).read_text())
    else:
        results = run(args, argv)
    body = markdown(results)
    print(body)
    if not args.no_markdown:
        path = Path(args.markdown)
        path.write_text(replace_section(path.read_text() if path.exists() else "", SECTION, body))
        log(f"wrote the {SECTION} section of {path}")
    return 0


def run(args, argv) -> dict:
    from bench.converge import ensure_iso
    from tests.labkit.netns.lifecycle import current_lab

    lab = current_lab()
    if lab is None:
        raise SystemExit("bench: the lab is not up: run `inv lab.up --hosts N` first")
    hosts = parse_list(args.hosts) or list(lab.names)
    skip = set(parse_list(args.skip))
    iso = ensure_iso()
    sets = ["--set", f"isos={iso['src']} sha256={iso['sha256']} distro=rhels9.4 arch=x86_64"]
    results = {"command": " ".join(["python bench/scale.py", *(argv if argv is not None else sys.argv[1:])]),
               "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "hosts": hosts, "machine": machine_info(), "relay_mib": args.relay_mib}
    if "memory" not in skip:
        results["memory"] = measure_memory(hosts)
        log(f"memory: {results['memory']['summary']}")
    if "serial" not in skip:
        results["serial"] = measure_serial(lab, hosts, args.serial_runs, sets)
    if "usage" not in skip:
        ns = [n for n in sorted({int(x) for x in parse_list(args.usage_n)}) if n <= len(hosts)]
        results["usage"] = measure_usage(lab, hosts, ns, ["xcatfab", "xcatfab-deep", "pyinfra"])
    if "relay" not in skip:
        ns = sorted({1, min(args.relay_n, len(hosts))})
        results["relay"] = measure_relay(lab, hosts, ns, args.relay_mib)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"scale-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    log(f"raw results: {out}")
    return results


if __name__ == "__main__":
    sys.exit(main())
