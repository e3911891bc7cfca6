"""Helpers for the lab tests that run the real `fab`.

They build per-test inventories from the lab's, run `fab` and read its recap,
watch the machine's process table while it runs (lab hosts share it), compare
host snapshots, and stop or watch a host's sshd the way a failing host would,
by the lab's own records.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path

from tests.labkit.common import process_table

ROOT = Path(__file__).resolve().parents[2]
FAB = str(ROOT / ".venv" / "bin" / "fab")


# --------------------------------------------------------------------------- shared helpers


def make_inventory(lab, path: Path, hosts, host_vars=None, group_vars=None) -> Path:
    """The lab's inventory with only ``hosts`` (in that order), plus extra settings.

    ``host_vars``: host -> {key: value} set on its line (a host line beats
    group vars); ``group_vars``: key -> value replacing or adding a line of
    ``[lab:vars]`` (None: remove the key).
    """
    host_vars, group_vars = host_vars or {}, dict(group_vars or {})
    lines, section, by_host = [], None, {}
    for raw in lab.inventory.read_text().splitlines():
        text = raw.strip()
        if text.startswith("["):
            section = text
            lines.append(raw)
            continue
        if section == "[lab]" and text and not text.startswith("#"):
            by_host[text.split()[0]] = text
            continue
        if section == "[lab:vars]" and "=" in text and not text.startswith("#"):
            key = text.split("=", 1)[0].strip()
            if key in group_vars:
                value = group_vars.pop(key)
                if value is not None:
                    lines.append(f"{key}={value}")
                continue
        lines.append(raw)
    body = "\n".join(lines) + "\n" + "".join(f"{k}={v}\n" for k, v in group_vars.items() if v is not None)
    host_lines = "".join(_host_line(by_host[h], host_vars.get(h, {})) + "\n" for h in hosts)
    body = body.replace("[lab]\n", "[lab]\n" + host_lines, 1)
    path.write_text(body)
    return path


def _host_line(line: str, settings: dict) -> str:
    """An inventory host line with ``settings`` replacing or adding its key=value tokens."""
    name, *tokens = shlex.split(line)
    values = dict(token.split("=", 1) for token in tokens)
    values.update(settings)
    return " ".join([name] + [f"{k}={shlex.quote(str(v))}" for k, v in values.items()])


def fab_env(extra=None, drop=()):
    """The environment for ``fab``: ours without any XCATFAB_ setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("XCATFAB_") and k not in drop}
    env.update(extra or {})
    return env


def run_fab(*args, env=None, on_line=None, timeout=600):
    """Run ``fab ARGS`` and return (exit status, stdout, stderr); ``on_line(line)`` sees stdout live."""
    proc = subprocess.Popen([FAB, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env if env is not None else fab_env(), cwd=ROOT)
    err_chunks = []
    reader = threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()), daemon=True)
    reader.start()
    out_lines = []
    timer = threading.Timer(timeout, proc.kill)  # a hung rollout fails the test instead of the session
    timer.start()
    try:
        for line in proc.stdout:
            out_lines.append(line)
            if on_line:
                on_line(line.rstrip("\n"))
        rc = proc.wait()
    finally:
        timer.cancel()
    reader.join()
    return rc, "".join(out_lines), "".join(err_chunks)


def fab(*args, env=None, input=None, sampler=None, counts=False, timeout=600) -> subprocess.CompletedProcess:
    """Run the real `fab` to the end, without a controlling terminal (a prompt reads ``input``).

    ``env`` is added to :func:`fab_env`; ``counts`` has the recap end with each
    host's SSH connections and commands; a :class:`CmdlineSampler` given as
    ``sampler`` watches every command line while it runs and must see `fab`'s own.
    """
    env = {**({"XCATFAB_COUNTS": "1"} if counts else {}), **(env or {})}
    proc = subprocess.Popen([FAB, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=fab_env(env), cwd=ROOT, start_new_session=True)
    if sampler is None:
        out, err = proc.communicate(input, timeout=timeout)
    else:
        with sampler:
            out, err = proc.communicate(input, timeout=timeout)
        assert proc.pid in sampler.pids, "the sampler never saw the command run"
    return subprocess.CompletedProcess([FAB, *args], proc.returncode, out, err)


def recap(proc: subprocess.CompletedProcess, host: str) -> tuple[int, int, int]:
    """(ok, changed, failed) from ``host``'s recap line."""
    match = re.search(rf"^{re.escape(host)}\s*: ok=(\d+) changed=(\d+) failed=(\d+)", proc.stdout, re.M)
    assert match, proc.stdout + proc.stderr
    return tuple(int(x) for x in match.groups())


class CmdlineSampler:
    """Reads every process's /proc/PID/cmdline in a loop, as a context manager.

    Lab hosts share the machine's process table, so this sees the hosts'
    processes (sshd sessions, sudo, sh -c scripts, docker exec, the
    container's own) as their `ps` does, and the controller's too.
    """

    def __init__(self):
        self.seen: set[str] = set()
        self.pids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.is_set():
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as fh:
                        raw = fh.read()
                except OSError:
                    continue
                if raw:
                    self.seen.add(raw.replace(b"\0", b" ").decode(errors="replace"))
                    self.pids.add(int(entry))


def tcp_answers(ip: str, port: int = 3001, timeout: float = 10.0) -> bool:
    """A TCP connection from the controller to ``ip:port`` succeeds.

    Tests recreate containers on the same address with other MACs (netns
    mode's veth, macvlan), and the controller's neighbour entry for the
    address may still hold an old one: it is dropped first, so the check
    starts from a fresh ARP resolution instead of waiting out a stale entry.
    """
    subprocess.run(["ip", "neigh", "flush", "to", ip], capture_output=True)
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


def normalized(snap: dict, image_ids=()) -> dict:
    """A lab snapshot without what legitimately changes across a deploy + teardown.

    Kept: every address, link (name, MAC, master, state, flags), route,
    container, network, file, firewall rule and daemon pid. Dropped: interface
    indexes and the peer index of eth0 (a bridge enslaving and releasing eth0
    does not change them, but they are not part of "as before"), and the
    images in ``image_ids`` (the xCAT image stays by design).
    """
    links = sorted((link["ifname"], link.get("address"), link.get("master"), link.get("operstate"),
                    tuple(sorted(link.get("flags", [])))) for link in snap["link"])
    addrs = sorted((a["ifname"], tuple(sorted((i["family"], i["local"], i["prefixlen"])
                                              for i in a.get("addr_info", [])))) for a in snap["addr"])
    routes = sorted(json.dumps(r, sort_keys=True) for r in snap["route"])
    return {
        "links": links, "addrs": addrs, "routes": routes,
        "containers": snap["containers"],
        "networks": sorted(n["Name"] for n in snap["networks"]),
        "images": sorted(i["Id"] for i in snap["images"] if i["Id"] not in set(image_ids)),
        "files": snap["files"], "iptables": snap["iptables"], "pids": snap["pids"],
    }


def recap_line(out: str, host: str) -> str:
    """The ``host : ok=N changed=N failed=N`` line of ``host``."""
    found = re.findall(rf"^{re.escape(host)}\s* : ok=\d+ changed=\d+ failed=\d+$", out, re.M)
    assert len(found) == 1, f"no single recap line for {host} in:\n{out}"
    return found[0]


def succeeded(out: str, host: str) -> bool:
    """``host``'s recap line says it ran every step and none failed."""
    return re.fullmatch(rf"{re.escape(host)}\s* : ok=\d+ changed=\d+ failed=0", recap_line(out, host)) is not None


def first_error(out: str, host: str) -> str:
    """The first-error cell of ``host``'s row in the recap table ('' when none)."""
    table = out.split("first error", 1)[1]
    match = re.search(rf"^{re.escape(host)} +\d+ +\d+ +\d+ +\d+\.\d *(.*?) *$", table, re.M)
    assert match, f"no table row for {host} in:\n{out}"
    return match.group(1)


def children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (sshd's per-connection processes)."""
    return [p["pid"] for p in process_table() if p["ppid"] == pid]


def stop_sshd(lab, host: str, sessions: bool = False) -> int:
    """Stop ``host``'s sshd by the lab's recorded pid; with ``sessions``, its open sessions too.

    Stopping only the listener leaves established connections alive (sshd
    forks one process per connection): a host going down takes those too.
    """
    pid = lab.host(host).sshd_pid()
    assert pid, f"{host}'s sshd is not running"
    victims = [pid] + (children_of(pid) if sessions else [])
    for victim in victims:
        os.kill(victim, signal.SIGTERM)
    return pid


def wait_gone(pid: int, seconds: float = 60) -> None:
    """Wait until process ``pid`` (not our child) has exited."""
    gone = threading.Event()
    for _ in range(int(seconds * 20)):
        if not Path(f"/proc/{pid}").exists():
            return
        gone.wait(0.05)
    raise AssertionError(f"process {pid} still running after {seconds}s")


def sshd_accepted(lab, host: str) -> int:
    """How many logins ``host``'s sshd has logged (its own log: independent of xcatfab)."""
    log = lab.host(host).sshd_log
    return log.read_text(errors="replace").count("Accepted publickey") if log.exists() else 0


class Restorer:
    """Puts broken hosts back as soon as the live output shows their run has ended.

    A stopped sshd or dockerd makes the shared lab look unhealthy to other
    sessions, so the window is kept to the host's own failure: its
    ``HOST | FAILED`` line. ``before`` (host -> callable) runs first, for
    checks that must see the host as the run left it. Whatever was not put
    back during the run is put back when the block ends. Use it as the
    ``on_line`` of :func:`run_fab` (or call it from one).
    """

    def __init__(self, lab, hosts, before=None):
        self.lab, self.pending, self.before = lab, list(hosts), dict(before or {})
        self.lock = threading.Lock()

    def __call__(self, line: str) -> None:
        for host in list(self.pending):
            if line.startswith(f"{host} | FAILED after "):
                self.restore(host)

    def restore(self, host: str) -> None:
        with self.lock:
            if host not in self.pending:
                return
            self.pending.remove(host)
        if host in self.before:
            self.before.pop(host)()
        self.lab.reset_host(host)


@contextmanager
def restored(lab, *hosts, before=None):
    """A :class:`Restorer` for ``hosts``; every host still broken is put back when the block ends."""
    restorer = Restorer(lab, hosts, before)
    try:
        yield restorer
    finally:
        for host in list(restorer.pending):
            restorer.restore(host)


def container_running(docker_on, host: str) -> bool:
    proc = docker_on(host, "inspect", "-f", "{{.State.Running}}", "xcatmn", check=False)
    return proc.returncode == 0 and proc.stdout.strip() == "true"


def container_address(docker_on, host: str) -> str:
    """Every IPv4 address of the container, read with ``docker inspect`` on the host's engine."""
    proc = docker_on(host, "inspect", "-f",
                     "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", "xcatmn")
    return proc.stdout.strip()


# --------------------------------------------------------------------------- tests
