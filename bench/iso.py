"""ISO staging benchmark (issue 5): xcatfab's staging against scp, and what the controller sends for N hosts.

    python bench/iso.py [--hosts lab4,lab5,lab6] [--size-mib 1024] [--runs 3] [--no-markdown]

On the lab (tests/labkit/netns; root), with one file of random bytes:

* **throughput**, one host: ``fab -H H iso --src F --no-copycds`` against
  ``scp`` over the same link (the lab's ssh_config: same host, key and
  known_hosts), ``--runs`` rounds, the tools in rotating order, the host's
  iso_dir emptied and the disk synced before each; MiB/s from the wall-clock time of each command
  (xcatfab's includes connecting, reading facts and planning), plus
  xcatfab's own transfer-phase time. References: ``scp -c aes128-gcm`` (the
  cipher xcatfab's OpenSSH path prefers on AES-capable CPUs), ``scp`` then
  ``sync FILE`` on the host (xcatfab fsyncs the ISO before it records it as
  verified) and xcatfab's paramiko fallback (``XCATFAB_ISO_PARAMIKO=1``).
* **controller egress** for N = 1 .. len(hosts): ``fab -H h1,..,hN iso``;
  bytes the controller sent to each host, from iptables counting rules on the
  controller's OUTPUT chain (one per host address, no target; removed after),
  and bytes each host received from anyone (tx of its veth's root end).

Not a test: nothing asserts a time. Results: the "ISO staging" section of
BENCHMARKS.md (other sections are left alone) and JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
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

from bench.converge import replace_section  # noqa: E402  (ROOT is on sys.path now)
from tests.labkit.netns.measure import EgressCounter, received_bytes  # noqa: E402


def log(msg: str) -> None:
    print(f"[bench iso] {msg}", flush=True)


# ------------------------------------------------------------------ the lab
def lab_hosts(names):
    from tests.labkit.netns.lifecycle import current_lab

    lab = current_lab()
    if lab is None:
        raise SystemExit("the lab is not up: run `inv lab.up --hosts N` first")
    missing = [n for n in names if n not in lab.names]
    if missing:
        raise SystemExit(f"the lab has no {', '.join(missing)} (it has {', '.join(lab.names)})")
    return lab


def ssh(lab, host, command):
    return subprocess.run(["ssh", "-F", str(lab.ssh_config), host, command], capture_output=True, text=True,
                          check=True).stdout


def empty_iso_dir(lab, host):
    """A clean start for the next run: nothing staged, and no run's dirty pages left for the next to write.

    The lab hosts and the controller share one disk: without the sync, a tool
    that leaves its file in the page cache (scp) would have it written back
    during the next tool's run, and xcatfab, which puts the ISO on disk before
    recording it as verified, would pay for both."""
    h = lab.host(host)
    ssh(lab, host, f"rm -rf {h.iso_dir}/* {h.iso_dir}/.[!.]* {h.xcatfab_state_dir}/iso")
    os.sync()


# ------------------------------------------------------------- the runs
def timed(argv, env=None):
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:6])} ... failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return seconds, proc.stdout


def run_xcatfab(lab, hosts, path, paramiko=False):
    env = dict(os.environ)
    if paramiko:
        env["XCATFAB_ISO_PARAMIKO"] = "1"
    argv = [FAB, "-H", ",".join(hosts), "iso", "--src", str(path), "--no-copycds",
            "--inventory", str(lab.inventory)]
    seconds, out = timed(argv, env)
    for line in out.splitlines():
        match = re.search(r"\| staged .* \(data (\d+) MiB/s\), .* via ([^;]+);", line)
        if line.startswith(f"{hosts[0]} |") and match:
            return seconds, float(match.group(1)), match.group(2)
    return seconds, None, ""


def run_scp(lab, host, path, cipher=None, durable=False):
    """scp's wall clock; ``durable``: plus ``sync FILE`` on the host (what xcatfab does before recording)."""
    target = lab.host(host).iso_dir / "scp-copy"
    argv = ["scp", "-q", "-F", str(lab.ssh_config)] + (["-c", cipher] if cipher else [])
    started = time.monotonic()
    timed(argv + [str(path), f"{host}:{target}"])
    if durable:
        ssh(lab, host, f"sync {target}")
    seconds = time.monotonic() - started
    ssh(lab, host, f"rm -f {target}")
    return seconds


def throughput(lab, host, path, size, runs):
    tools = ["xcatfab", "scp", "scp-sync", "scp-gcm", "xcatfab-paramiko"]
    samples = {t: [] for t in tools}
    phases, paths = [], {}
    for round_no in range(runs):
        order = tools[round_no % len(tools):] + tools[:round_no % len(tools)]
        for tool in order:
            empty_iso_dir(lab, host)
            if tool == "xcatfab":
                seconds, phase, used = run_xcatfab(lab, [host], path)
                phases.append(phase)
                paths.setdefault("xcatfab", set()).add(used)
            elif tool == "xcatfab-paramiko":
                seconds, _phase, used = run_xcatfab(lab, [host], path, paramiko=True)
                paths.setdefault("xcatfab-paramiko", set()).add(used)
            elif tool == "scp":
                seconds = run_scp(lab, host, path)
            elif tool == "scp-sync":
                seconds = run_scp(lab, host, path, durable=True)
            else:
                seconds = run_scp(lab, host, path, "aes128-gcm@openssh.com")
            samples[tool].append(size / MIB / seconds)
            log(f"round {round_no + 1} {tool}: {samples[tool][-1]:.0f} MiB/s")
    # What a run costs besides the bytes (start, connect, facts, plan): the same command once staged.
    run_xcatfab(lab, [host], path)
    noop = [run_xcatfab(lab, [host], path)[0] for _ in range(runs)]
    empty_iso_dir(lab, host)
    result = {tool: {"median": statistics.median(v), "min": min(v), "max": max(v), "samples": v}
              for tool, v in samples.items()}
    result["noop_seconds"] = statistics.median(noop)
    result["xcatfab-transfer-phase"] = {"median": statistics.median(p for p in phases if p)}
    result["paths"] = {tool: sorted(p for p in used if p) for tool, used in paths.items()}
    return result


def egress(lab, hosts, path, size):
    rows = []
    for n in range(1, len(hosts) + 1):
        chosen = hosts[:n]
        for host in chosen:
            empty_iso_dir(lab, host)
        before = {h: received_bytes(lab, h) for h in chosen}
        with EgressCounter(lab, chosen, COUNTER_TAG) as counters:
            seconds, _phase, _used = run_xcatfab(lab, chosen, path)
            sent = counters.read()
        got = {h: received_bytes(lab, h) - before[h] for h in chosen}
        total = sum(sent.values())
        rows.append({"n": n, "hosts": chosen, "seconds": seconds, "sent": sent, "total": total,
                     "ratio": total / size, "received": got})
        log(f"N={n}: controller sent {total / MIB:.1f} MiB ({total / size:.3f} x the ISO) in {seconds:.1f}s")
    for host in hosts:
        empty_iso_dir(lab, host)
    return rows


# ---------------------------------------------------------------- output
def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ssh_version = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    return {"nproc": os.cpu_count(), "cpu_model": model, "kernel": platform.release(), "openssh": ssh_version,
            "python": platform.python_version()}


def markdown(results) -> str:
    m, t = results["machine"], results["throughput"]
    size = results["size_mib"]
    x, s = t["xcatfab"]["median"], t["scp"]["median"]
    lines = [
        f"Measured {results['date']} with `python bench/iso.py` on the lab (hosts {', '.join(results['hosts'])}); "
        "one file of random bytes; not a test: nothing asserts a time.",
        "",
        f"Machine: {m['cpu_model']}, {m['nproc']} cores (shared by the controller, every lab host and the other "
        f"engineers' runs: ratios matter, absolutes are noisy), kernel {m['kernel']}; {m['openssh']}; "
        f"Python {m['python']}.",
        "",
        f"### Throughput, one host ({size} MiB, {results['runs']} rounds, rotating order, median [min–max])",
        "",
        "| tool | MiB/s | vs scp |",
        "|---|---|---|",
    ]
    labels = {"xcatfab": "xcatfab `fab iso` (wall clock: connect, facts, plan, transfer, verify)",
              "scp": "OpenSSH `scp` (default cipher)",
              "scp-sync": "`scp`, then `sync FILE` on the host (on disk, as xcatfab leaves it)",
              "scp-gcm": "OpenSSH `scp -c aes128-gcm@openssh.com`",
              "xcatfab-paramiko": "xcatfab, paramiko fallback (`XCATFAB_ISO_PARAMIKO=1`)"}
    for tool in ("xcatfab", "scp", "scp-sync", "scp-gcm", "xcatfab-paramiko"):
        r = t[tool]
        lines.append(f"| {labels[tool]} | {r['median']:.0f} [{r['min']:.0f}–{r['max']:.0f}] | "
                     f"{r['median'] / s:.2f}× |")
    phase = t["xcatfab-transfer-phase"]["median"]
    lines += [
        f"| xcatfab, data phase only (its own report: first byte to last verdict) | {phase:.0f} | "
        f"{phase / s:.2f}× |",
        "",
        f"**xcatfab / scp = {x / s:.2f}×** (wall clock against wall clock; the data phase alone: "
        f"{phase / s:.2f}×; against scp with the file then synced to disk, as xcatfab leaves it before "
        f"recording it verified: {x / t['scp-sync']['median']:.2f}×). A `fab iso` run with nothing to send "
        f"takes {t['noop_seconds']:.2f} s (start, connect, facts, plan): the fixed part of xcatfab's "
        f"wall clock, {t['noop_seconds'] * x / size * 100:.0f}% of "
        f"this size's{_break_even(t)}. Data path: {' / '.join(t['paths'].get('xcatfab', []))} (fallback row: "
        f"{' / '.join(t['paths'].get('xcatfab-paramiko', []))}). Both sides hash (sha256) what passes; "
        "xcatfab's OpenSSH path prefers "
        "AES-GCM where the CPU has AES instructions, scp keeps OpenSSH's default (chacha20-poly1305).",
        "",
        f"### Controller egress, `fab -H h1..hN iso` ({size} MiB; the lab has {len(results['hosts'])} hosts for "
        "this benchmark, so N stops there)",
        "",
        "| N | controller sent (iptables OUTPUT counters) | × ISO size | per host: sent by the controller / "
        "received from anyone (veth) | wall clock |",
        "|---|---|---|---|---|",
    ]
    for row in results["egress"]:
        per_host = ", ".join(f"{h}: {_size(row['sent'][h])} / {_size(row['received'][h])}" for h in row["hosts"])
        lines.append(f"| {row['n']} | {row['total'] / MIB:.1f} MiB | {row['ratio']:.3f} | {per_host} | "
                     f"{row['seconds']:.1f} s |")
    lines += ["", "The first host gets the ISO from the controller; each next one from the host before it "
              "(one-shot token-authenticated TCP stream, every host verifying the sha256 against the "
              "controller's, sent over its own SSH connection)."]
    return "\n".join(lines) + "\n"


def _break_even(t) -> str:
    """From which size on xcatfab's wall clock beats scp's, given its fixed part and both data rates."""
    scp, data = t["scp"]["median"], t["xcatfab-transfer-phase"]["median"]
    if data <= scp:
        return ""
    mib = t["noop_seconds"] / (1 / scp - 1 / data)
    return f"; with its data phase at {data / scp:.2f}× scp, it overtakes scp from about {mib:.0f} MiB up"


def _size(n: int) -> str:
    return f"{n / MIB:.1f} MiB" if n >= MIB else f"{n / 1024:.0f} KiB"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default=os.environ.get("XCATFAB_TEST_HOSTS", ""),
                        help="comma list of lab hosts (default: $XCATFAB_TEST_HOSTS, else the lab's first 3)")
    parser.add_argument("--size-mib", type=int, default=4096)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-markdown", action="store_true")
    args = parser.parse_args(argv)
    names = [h for h in args.hosts.split(",") if h]
    from tests.labkit.netns.lifecycle import current_lab

    lab = current_lab()
    if not names and lab is not None:
        names = lab.names[:3]
    lab = lab_hosts(names)
    with tempfile.TemporaryDirectory(prefix="xcatfab-iso-bench-") as tmp:
        path = Path(tmp) / "bench.iso"
        with open(path, "wb") as fh:
            for _ in range(args.size_mib):
                fh.write(os.urandom(MIB))
        os.sync()  # its own write-back must not run during the first measurements
        size = path.stat().st_size
        log(f"throughput on {names[0]} ({args.size_mib} MiB, {args.runs} rounds)")
        results = {"date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
                   "hosts": names, "size_mib": args.size_mib, "runs": args.runs, "machine": machine()}
        results["throughput"] = throughput(lab, names[0], path, size, args.runs)
        log(f"controller egress for N = 1..{len(names)}")
        results["egress"] = egress(lab, names, path, size)
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
