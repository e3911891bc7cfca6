"""ISO staging benchmark (issues 5, 15): xcatfab against the fastest OpenSSH transfers, rsync and the plain TCP limit.

    python bench/iso.py [--hosts lab1,lab2,lab3] [--sizes 1024,4096] [--runs 3] [--no-markdown]

On the lab (tests/labkit/netns; root), for each size, one file of random
bytes sent to the first host's iso_dir by every tool below, ``--runs`` rounds
in rotating order (each tool takes each position), the destination emptied
and every dirty page written back (``sync``) before each run. Every run is
checked: the destination has the source's size (and, in the first round, its
sha256, computed on the host); a run that fails or does not check out is
kept in the results, counted, and left out of the statistics, never dropped
silently. Wall clock of each command (xcatfab's includes starting, connecting,
reading facts, planning and the verification), median with min–max; ratios
against the fastest OpenSSH transfer measured in the same run, and xcatfab as
a fraction of the limit (the same bytes over a plain TCP stream to the same
disk: no cipher, no hash).

Then the controller's egress for N = 1 .. len(hosts): ``fab -H h1,..,hN iso``
with bytes counted by iptables on the controller's OUTPUT chain.

Not a test: nothing asserts a time. Results: the "ISO staging" section of
BENCHMARKS.md (other sections are left alone) and JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MARKDOWN = ROOT / "BENCHMARKS.md"
RESULTS = ROOT / "bench" / "results"
FAB = str(Path(sys.executable).parent / "fab")
MIB = 1 << 20
TITLE = "ISO staging"
COUNTER_TAG = "xcatfab-iso-bench"
GCM = "aes128-gcm@openssh.com"
#: The copy every tool but xcatfab writes, in the same directory as xcatfab's (the host's iso_dir).
COPY = "bench-copy"

from bench.converge import replace_section  # noqa: E402  (ROOT is on sys.path now)


@dataclass(frozen=True)
class Tool:
    name: str
    label: str
    meaning: str
    openssh: bool = False  # one of "the fastest OpenSSH transfer" candidates
    xcatfab: bool = False


TOOLS = [
    Tool("xcatfab", "xcatfab `fab iso --checksums` (tcp)",
         "the default transport; the controller knows the sum (vendor SHA256SUMS, checked against the local "
         "file once and cached); sha256 verified on the host; connect, facts, plan included", xcatfab=True),
    Tool("xcatfab-cold", "xcatfab `fab iso`, empty controller cache (tcp)",
         "first sight of the file: no sum given or cached, so the controller hashes it while sending", xcatfab=True),
    Tool("xcatfab-ssh", "xcatfab `fab iso --checksums`, `iso_transport=ssh`",
         "every byte inside SSH (OpenSSH, AES-GCM); sha256 verified on the host", xcatfab=True),
    Tool("scp", "`scp` (default cipher)", "OpenSSH's scp as configured out of the box (chacha20-poly1305)",
         openssh=True),
    Tool("scp-gcm", f"`scp -c {GCM}`", "scp with the fastest cipher on an AES-NI CPU", openssh=True),
    Tool("ssh-cat-gcm", f"`ssh -c {GCM} host 'cat > f'`", "the file on ssh's stdin: OpenSSH's fastest way",
         openssh=True),
    Tool("rsync", "`rsync` (over ssh, default cipher)", "rsync of a new file (whole file), its own checksum"),
    Tool("tcp-limit", "the limit: plain TCP to the disk", "sendfile on the controller, recv+write on the host: "
         "no cipher, no hash, no fsync (the page cache, as scp and cat leave it)"),
    Tool("tcp-limit-sync", "plain TCP, then fsync", "the limit with the file on disk before it counts as done"),
]
TOOL_NAMES = [t.name for t in TOOLS]

#: The limit's receiver on the host: listen on the host's address, print the port, write what arrives.
RECEIVER = r"""
import os, socket, sys
path, address, durable = sys.argv[1], sys.argv[2], sys.argv[3] == "sync"
listener = socket.create_server((address, 0))
print(listener.getsockname()[1], flush=True)
conn, _ = listener.accept()
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
buf = bytearray(1 << 20)
view = memoryview(buf)
total = 0
while True:
    n = conn.recv_into(buf, len(buf), socket.MSG_WAITALL)
    if not n:
        break
    os.write(fd, view[:n])
    total += n
if durable:
    os.fsync(fd)
os.close(fd)
print("done", total, flush=True)
"""


def log(msg: str) -> None:
    print(f"[bench iso] {msg}", flush=True)


# ------------------------------------------------------------------ pure helpers (tests/unit/test_bench.py)
def rotate(names: list, round_no: int) -> list:
    """Round ``round_no``'s order: every tool takes every position over the rounds."""
    if not names:
        return []
    k = round_no % len(names)
    return names[k:] + names[:k]


def summarize(samples: list) -> dict:
    """Median and min–max of the runs that checked out; the others counted, with their reasons."""
    good = [s["seconds"] for s in samples if s["ok"]]
    bad = [s.get("error") or "did not check out" for s in samples if not s["ok"]]
    if not good:
        return {"median": None, "min": None, "max": None, "n": 0, "failed": len(bad), "errors": bad}
    return {"median": statistics.median(good), "min": min(good), "max": max(good), "n": len(good),
            "failed": len(bad), "errors": bad}


def mib_s(size: int, seconds) -> float | None:
    return size / MIB / seconds if seconds else None


def fastest_openssh(stats: dict) -> str | None:
    """The OpenSSH tool with the lowest median wall clock in this run."""
    timed = [(stats[t.name]["median"], t.name) for t in TOOLS if t.openssh and stats.get(t.name, {}).get("median")]
    return min(timed)[1] if timed else None


def commands(ssh_config: str, host: str, iso_dir: str, source: str) -> dict:
    """The argv of every OpenSSH-based tool: the same source file, the same destination directory."""
    dest = f"{iso_dir}/{COPY}"
    return {
        "scp": ["scp", "-q", "-F", ssh_config, source, f"{host}:{dest}"],
        "scp-gcm": ["scp", "-q", "-F", ssh_config, "-c", GCM, source, f"{host}:{dest}"],
        "ssh-cat-gcm": ["ssh", "-F", ssh_config, "-c", GCM, host, f"cat > {shlex.quote(dest)}"],
        "rsync": ["rsync", "--whole-file", "-e", f"ssh -F {ssh_config}", source, f"{host}:{dest}"],
    }


def xcatfab_argv(host: str, source: str, inventory: str, sums: str | None, transport: str = "tcp") -> list:
    argv = [FAB, "-H", host, "iso", "--src", source, "--no-copycds", "--inventory", inventory]
    if sums:
        argv += ["--checksums", sums]
    if transport != "tcp":
        argv += ["--set", f"iso_transport={transport}"]
    return argv


def destination(tool: str, iso_dir: str, name: str) -> str:
    """Where a tool's copy lands: xcatfab's under the ISO's name, the others' as COPY, all in iso_dir."""
    return f"{iso_dir}/{name}" if tool.startswith("xcatfab") else f"{iso_dir}/{COPY}"


def _fmt(value, unit="") -> str:
    return "–" if value is None else f"{value:.2f}{unit}"


def size_table(block: dict) -> str:
    """One size's table: every tool's wall clock, MiB/s, × the fastest OpenSSH, × the limit, meaning."""
    size, stats = block["size"], block["stats"]
    base = fastest_openssh(stats)
    base_s = stats[base]["median"] if base else None
    limit_s = stats.get("tcp-limit", {}).get("median")
    lines = [f"| {block['size_mib']} MiB | seconds, median [min–max] | MiB/s | × fastest OpenSSH ({base}) | "
             "× the limit (speed) | runs ok | what it measures |",
             "|---|---|---|---|---|---|---|"]
    for tool in TOOLS:
        s = stats.get(tool.name)
        if s is None:
            continue
        if s["median"] is None:
            lines.append(f"| {tool.label} | FAILED | – | – | – | 0/{s['failed']} | {tool.meaning} |")
            continue
        speed = f"{base_s / s['median']:.2f}×" if base_s else "–"
        of_limit = f"{limit_s / s['median']:.2f}" if limit_s else "–"
        lines.append(f"| {tool.label} | {s['median']:.2f} [{s['min']:.2f}–{s['max']:.2f}] | "
                     f"{mib_s(size, s['median']):.0f} | {speed} | {of_limit} | {s['n']}/{s['n'] + s['failed']} | "
                     f"{tool.meaning} |")
    return "\n".join(lines)


def headline(block: dict) -> str:
    stats = block["stats"]
    base = fastest_openssh(stats)
    x, limit = stats["xcatfab"]["median"], stats.get("tcp-limit", {}).get("median")
    if x is None or base is None:
        return f"**{block['size_mib']} MiB: xcatfab or every OpenSSH tool failed: no ratio.**"
    ratio = stats[base]["median"] / x
    verdict = "meets" if ratio >= 1.0 else "does NOT meet"
    of_limit = f"{limit / x:.2f} of the limit's speed" if limit else "the limit failed"
    return (f"**{block['size_mib']} MiB: xcatfab = {ratio:.2f}× the fastest OpenSSH transfer ({base}), "
            f"{of_limit}** — {verdict} the goal (≥ 1.0×).")


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        f"Measured {results['date']} (`date -u`) with `python bench/iso.py` on the lab (hosts "
        f"{', '.join(results['hosts'])}; transfers to {results['hosts'][0]}); {results['runs']} runs per tool "
        "and size in rotating order, the destination emptied and `sync` before each run; each run checked "
        "(size; sha256 on the host in the first round). Not a test: nothing asserts a time.",
        "",
        f"Machine: {m['cpu_model']}, {m['nproc']} cores, shared by the controller, every lab host and whatever "
        f"else runs on it; kernel {m['kernel']}; {m['openssh']}; Python {m['python']}. Load average "
        f"(1 min) before/after each size: {', '.join(results['load'])}.",
        "",
        "Times are wall clock of one whole command (ssh/scp/rsync: connect, authenticate, send; xcatfab: start, "
        "connect, facts, plan, send, verify, recap); the limit is timed from its TCP connect to the host's "
        "last write (no process start, no SSH). Speed ratios are medians against the fastest OpenSSH tool of "
        "the same size in the same run (above 1: faster).",
        "",
    ]
    for block in results["sizes"]:
        lines += [size_table(block), "", headline(block), ""]
        for tool, s in block["stats"].items():
            for error in s["errors"]:
                lines.append(f"- {tool}: a run left out: {error}")
    noop = results.get("noop_seconds")
    if noop is not None:
        lines += [f"A `fab iso` with nothing to send takes {noop:.2f} s (start, connect, facts, plan): the fixed "
                  "part of xcatfab's wall clock.", ""]
    lines += egress_lines(results)
    return "\n".join(lines).rstrip() + "\n"


def egress_lines(results: dict) -> list:
    rows = results.get("egress") or []
    if not rows:
        return []
    lines = [f"### Controller egress, `fab -H h1..hN iso` ({results['egress_mib']} MiB)", "",
             "| N | controller sent (iptables OUTPUT) | × ISO size | per host: sent by the controller / received "
             "from anyone (veth) | wall clock |", "|---|---|---|---|---|"]
    for row in rows:
        per_host = ", ".join(f"{h}: {_size(row['sent'][h])} / {_size(row['received'][h])}" for h in row["hosts"])
        lines.append(f"| {row['n']} | {row['total'] / MIB:.1f} MiB | {row['ratio']:.3f} | {per_host} | "
                     f"{row['seconds']:.1f} s |")
    lines += ["", "The first host gets the ISO from the controller; each next one from the host before it "
              "(one-shot token-authenticated TCP stream, every host verifying the sha256 against the "
              "controller's, sent over its own SSH connection)."]
    return lines


def _size(n: int) -> str:
    return f"{n / MIB:.1f} MiB" if n >= MIB else f"{n / 1024:.0f} KiB"


# ------------------------------------------------------------------ the lab
def ssh(lab, host, command, check=True):
    return subprocess.run(["ssh", "-F", str(lab.ssh_config), host, command], capture_output=True, text=True,
                          check=check).stdout


def empty_iso_dir(lab, host):
    """A clean start: nothing staged, and no earlier run's dirty pages left for this one to write."""
    h = lab.host(host)
    ssh(lab, host, f"rm -rf {h.iso_dir}/* {h.iso_dir}/.[!.]* {h.xcatfab_state_dir}/iso")
    os.sync()


def check_copy(lab, host, path, size, digest, deep) -> str | None:
    """Why the copy at ``path`` is not the source (None: it is)."""
    out = ssh(lab, host, f"stat -c %s {path}" + (f" && sha256sum {path}" if deep else ""), check=False).split()
    if not out or int(out[0]) != size:
        return f"{path}: size {out[0] if out else 'missing'}, not {size}"
    if deep and (len(out) < 2 or out[1] != digest):
        return f"{path}: sha256 differs"
    return None


def run_tool(lab, host, tool, path, sums):
    """(seconds, error or None) of one run of ``tool``."""
    if tool == "xcatfab-cold":
        cache = tempfile.mkdtemp(prefix="xcatfab-bench-cache-")
        try:
            return _run_command(lab, host, tool, path, sums, dict(os.environ, XDG_CACHE_HOME=cache))
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    return _run_command(lab, host, tool, path, sums, dict(os.environ))


def _run_command(lab, host, tool, path, sums, env):
    h = lab.host(host)
    if tool.startswith("tcp-limit"):
        return run_limit(lab, host, path, durable=tool.endswith("sync"))
    if tool.startswith("xcatfab"):
        argv = xcatfab_argv(host, str(path), str(lab.inventory), None if tool == "xcatfab-cold" else str(sums),
                            "ssh" if tool == "xcatfab-ssh" else "tcp")
    else:
        argv = commands(str(lab.ssh_config), host, str(h.iso_dir), str(path))[tool]
    stdin = open(path, "rb") if tool == "ssh-cat-gcm" else subprocess.DEVNULL
    started = time.monotonic()
    proc = subprocess.run(argv, stdin=stdin, capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.monotonic() - started
    if stdin is not subprocess.DEVNULL:
        stdin.close()
    if proc.returncode != 0:
        return seconds, f"exit {proc.returncode}: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}"
    return seconds, None


def run_limit(lab, host, path, durable):
    """The same bytes over a plain TCP stream into the same directory: sendfile here, recv+write there."""
    h = lab.host(host)
    dest = f"{h.iso_dir}/{COPY}"
    receiver = subprocess.Popen(["ssh", "-F", str(lab.ssh_config), host,
                                 f"python3 -c {shlex.quote(RECEIVER)} {dest} {h.ip} {'sync' if durable else '-'}"],
                                stdout=subprocess.PIPE, text=True)
    try:
        port = int(receiver.stdout.readline())
        size = path.stat().st_size
        started = time.monotonic()
        with socket.create_connection((h.ip, port)) as sock, open(path, "rb") as fh:
            offset = 0
            while offset < size:
                offset += os.sendfile(sock.fileno(), fh.fileno(), offset, size - offset)
        done = receiver.stdout.readline().split()
        seconds = time.monotonic() - started
    finally:
        receiver.wait(60)
    if done != ["done", str(size)]:
        return seconds, f"the receiver said {done}"
    return seconds, None


def measure_size(lab, host, size_mib, runs):
    with tempfile.TemporaryDirectory(prefix="xcatfab-iso-bench-", dir="/var/tmp") as tmp:
        path = Path(tmp) / f"bench-{size_mib}m.iso"
        digest = hashlib.sha256()
        with open(path, "wb") as fh:
            for _ in range(size_mib):
                block = os.urandom(MIB)
                digest.update(block)
                fh.write(block)
        digest = digest.hexdigest()
        sums = Path(tmp) / "SHA256SUMS"
        sums.write_text(f"{digest}  {path.name}\n")
        os.sync()
        # The controller learns the sum once, as `fab iso --checksums` does on its first use (not timed).
        subprocess.run(xcatfab_argv(host, str(path), str(lab.inventory), str(sums)) + ["--plan"],
                       capture_output=True, cwd=ROOT)
        samples = {name: [] for name in TOOL_NAMES}
        for round_no in range(runs):
            for tool in rotate(TOOL_NAMES, round_no):
                empty_iso_dir(lab, host)
                seconds, error = run_tool(lab, host, tool, path, sums)
                if error is None:
                    error = check_copy(lab, host, destination(tool, str(lab.host(host).iso_dir), path.name),
                                       size_mib * MIB, digest, deep=round_no == 0)
                samples[tool].append({"seconds": seconds, "ok": error is None, "error": error})
                failed = f" FAILED {error}" if error else ""
                log(f"{size_mib} MiB round {round_no + 1} {tool}: {seconds:.2f}s{failed}")
        empty_iso_dir(lab, host)
    return {"size_mib": size_mib, "size": size_mib * MIB, "samples": samples,
            "stats": {tool: summarize(v) for tool, v in samples.items()}}


def noop_seconds(lab, host, runs):
    with tempfile.TemporaryDirectory(prefix="xcatfab-iso-bench-", dir="/var/tmp") as tmp:
        path = Path(tmp) / "noop.iso"
        path.write_bytes(os.urandom(4 * MIB))
        argv = xcatfab_argv(host, str(path), str(lab.inventory), None)
        subprocess.run(argv, capture_output=True, cwd=ROOT)
        times = []
        for _ in range(runs):
            started = time.monotonic()
            subprocess.run(argv, capture_output=True, cwd=ROOT)
            times.append(time.monotonic() - started)
    empty_iso_dir(lab, host)
    return statistics.median(times)


def egress(lab, hosts, size_mib):
    from tests.labkit.netns.measure import EgressCounter, received_bytes

    rows = []
    with tempfile.TemporaryDirectory(prefix="xcatfab-iso-bench-", dir="/var/tmp") as tmp:
        path = Path(tmp) / "egress.iso"
        with open(path, "wb") as fh:
            for _ in range(size_mib):
                fh.write(os.urandom(MIB))
        size = path.stat().st_size
        for n in range(1, len(hosts) + 1):
            chosen = hosts[:n]
            for host in chosen:
                empty_iso_dir(lab, host)
            before = {h: received_bytes(lab, h) for h in chosen}
            with EgressCounter(lab, chosen, COUNTER_TAG) as counters:
                started = time.monotonic()
                subprocess.run([FAB, "-H", ",".join(chosen), "iso", "--src", str(path), "--no-copycds",
                                "--inventory", str(lab.inventory)], capture_output=True, cwd=ROOT)
                seconds = time.monotonic() - started
                sent = counters.read()
            got = {h: received_bytes(lab, h) - before[h] for h in chosen}
            total = sum(sent.values())
            rows.append({"n": n, "hosts": chosen, "seconds": seconds, "sent": sent, "total": total,
                         "ratio": total / size, "received": got})
            log(f"N={n}: controller sent {total / MIB:.1f} MiB ({total / size:.3f} x the ISO) in {seconds:.1f}s")
    for host in hosts:
        empty_iso_dir(lab, host)
    return rows


def machine() -> dict:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    ssh_version = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    return {"nproc": os.cpu_count(), "cpu_model": model, "kernel": platform.release(), "openssh": ssh_version,
            "python": platform.python_version()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default=os.environ.get("XCATFAB_TEST_HOSTS", ""),
                        help="comma list of lab hosts (default: $XCATFAB_TEST_HOSTS, else the lab's first 3)")
    parser.add_argument("--sizes", default="1024,4096", help="MiB, comma list")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--egress-mib", type=int, default=1024)
    parser.add_argument("--no-markdown", action="store_true")
    args = parser.parse_args(argv)
    from tests.labkit.netns.lifecycle import current_lab

    lab = current_lab()
    if lab is None:
        raise SystemExit("the lab is not up: run `inv lab.up --hosts N` first")
    names = [h for h in args.hosts.split(",") if h] or lab.names[:3]
    missing = [n for n in names if n not in lab.names]
    if missing:
        raise SystemExit(f"the lab has no {', '.join(missing)} (it has {', '.join(lab.names)})")
    date = subprocess.run(["date", "-u", "+%Y-%m-%d %H:%M UTC"], capture_output=True, text=True).stdout.strip()
    results = {"date": date, "hosts": names, "runs": args.runs, "machine": machine(), "sizes": [], "load": []}
    for size_mib in [int(s) for s in args.sizes.split(",") if s]:
        before = os.getloadavg()[0]
        log(f"{size_mib} MiB to {names[0]}, {args.runs} rounds (load {before:.2f})")
        results["sizes"].append(measure_size(lab, names[0], size_mib, args.runs))
        results["load"].append(f"{size_mib} MiB {before:.2f}/{os.getloadavg()[0]:.2f}")
    results["noop_seconds"] = noop_seconds(lab, names[0], args.runs)
    results["egress_mib"] = args.egress_mib
    results["egress"] = egress(lab, names, args.egress_mib)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"iso-{stamp}.json").write_text(json.dumps(results, indent=1))
    body = markdown(results)
    print(body)
    if not args.no_markdown:
        text = MARKDOWN.read_text() if MARKDOWN.exists() else ""
        MARKDOWN.write_text(replace_section(text, TITLE, body))
        log(f"wrote the {TITLE!r} section of {MARKDOWN}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
