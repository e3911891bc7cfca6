"""Bring the VM lab up, check it, take it down.

``vmlab_up(n)`` returns a healthy lab of ``n`` VMs as it is, or takes whatever
is there down and builds one: the cached base (built once), the accelerator
verdict (cached), the repositories and their server, the bridge, taps and
rules, each VM's host key, seed and fresh overlay, the inventory, known_hosts
and ssh_config, then boots every VM and waits for SSH. ``vmlab_down()`` stops
every QEMU the lab started and its servers by recorded pid (command lines
checked), deletes taps, bridge and rules, and the state directory; the base
cache stays.
"""

from __future__ import annotations

import concurrent.futures
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Callable, Optional

from . import net, qemu, repo, seed, sshmux
from ._shared import (
    REPO_SUITE,
    LabError,
    _live_pid,
    _process_table,
    _run,
    _stop_pid,
    _tcp_banner,
    _wait_gone,
    _write,
    ensure_base_tarball,
    render,
)
from .base import ensure_base
from .config import (
    CONTROLLER_IP,
    DEBIAN_REPO,
    MAX_HOSTS,
    PREFIX,
    QEMU_NAME_PREFIX,
    VmHost,
    make_host,
    repo_url,
    state_dir,
)
from .vmlab import BOOT_TIMEOUT, FRESH_SNAPSHOT, VmLab, load

TOOLS = ("qemu-system-x86_64", "qemu-img", "mkfs.ext4", "debootstrap", "dpkg-scanpackages", "gpg",
         "ssh-keygen", "ssh", "openssl", "ip", "iptables", "chroot")


def current_vmlab() -> Optional[VmLab]:
    """The VM lab recorded in the state directory (running or not), or None."""
    return load(state_dir())


def healthy(lab: VmLab) -> list[str]:
    """What is wrong with a recorded VM lab, cheaply checked (empty list: healthy)."""
    problems = []
    if not lab.base.complete():
        problems.append(f"base image {lab.base.dir} missing")
    if repo.server_pid(lab.state_dir) is None:
        problems.append("repo server not running")
    if len(net.present_rules()) != len(net.iptables_rules()):
        problems.append("isolation rules missing")
    links = set(net.link_names())
    for host in lab.hosts:
        if host.tap not in links:
            problems.append(f"{host.name}: no tap")
        if qemu.running_pid(host) is None:
            problems.append(f"{host.name}: QEMU not running")
        elif not _tcp_banner(host.ip, 22, timeout=3).startswith("SSH-"):
            problems.append(f"{host.name}: SSH not answering")
    for path in (lab.inventory, lab.known_hosts, lab.ssh_config, lab.ssh_key, lab.admin_password_file):
        if not path.exists():
            problems.append(f"{path} missing")
    return problems


def _check_tools() -> None:
    missing = [t for t in TOOLS if not shutil.which(t) and not Path("/usr/sbin", t).exists()]
    if missing:
        raise LabError("missing tools: " + ", ".join(missing) + " (apt packages: tests/labkit/vm/apt-packages.txt)")


def leftovers() -> bool:
    """Whether anything of a VM lab is on the machine (state, link, rule, QEMU)."""
    return bool(state_dir().exists() or net.lab_links() or net.present_rules() or _lab_qemus(state_dir()))


def vmlab_up(n: int = 2, log: Callable[[str], None] = print) -> VmLab:
    """Bring up a VM lab of ``n`` VMs (vm1..vmN) and return it; a healthy one of that size is reused."""
    if os.geteuid() != 0:
        raise LabError("the VM lab needs root (taps, a bridge, iptables, QEMU)")
    if not 1 <= n <= MAX_HOSTS:
        raise LabError(f"--hosts must be between 1 and {MAX_HOSTS}")
    _check_tools()
    started = time.monotonic()
    existing = current_vmlab()
    if existing and len(existing.hosts) == n:
        problems = healthy(existing)
        if not problems:
            log(f"VM lab is up with {n} VM(s) ({existing.accel}; checked in {time.monotonic() - started:.2f}s)")
            return existing
        log("VM lab is not healthy (" + "; ".join(problems) + "): rebuilding it")
    if existing or leftovers():
        vmlab_down(log=log)
    state = state_dir()
    state.mkdir(mode=0o755, parents=True, exist_ok=False)
    hosts = [VmHost(i, state) for i in range(1, n + 1)]
    timings: dict = {}

    def mark(step: str) -> None:
        timings[step] = round(time.monotonic() - started, 1)

    base = ensure_base(log)
    lab = VmLab(state_dir=state, hosts=hosts, base=base, accel="tcg", timings=timings)
    lab.save(complete=False)  # from here on, a crash is cleaned up by the next up or down
    mark("base image")
    tarball = ensure_base_tarball(log)
    lab.accel = qemu.accelerator(base, log)
    log(f"accelerator: {lab.accel}" + ("" if lab.accel == "kvm" else
                                       " (KVM absent or its probe boot failed; see the cache's accel.json)"))
    mark("accelerator")
    _make_files(lab, tarball, log)
    mark("files")
    _boot_all(lab, log)
    mark("total")
    lab.save(complete=True)
    log(f"VM lab is up: {n} VM(s) under {lab.accel} in {timings['total']:.1f}s; inventory {lab.inventory}")
    return lab


def _make_files(lab: VmLab, tarball: Path, log: Callable[[str], None]) -> None:
    """Keys, password, repositories and their server, network, seeds, overlays, client files."""
    state = lab.state_dir
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "xcatfab-vmlab-client", "-f", lab.ssh_key])
    password = secrets.token_urlsafe(18)
    _write(lab.admin_password_file, password + "\n", mode=0o600)
    admin_hash = seed.password_hash(password)
    # The bridge first: the server binds the controller's lab address, which lives on it.
    net.make_bridge()
    net.add_rules()
    lab.has_xcat_package = repo.build(state, lab.base, tarball, log)
    repo.start_server(state)
    client_key = Path(f"{lab.ssh_key}.pub").read_text().strip()
    for host in lab.hosts:
        net.make_tap(host)
        seed.make_host_key(host)
        seed.make_seed(host, lab.hosts, client_key, admin_hash, repo.repo_key(state))
        seed.make_overlay(host, lab.base)
        seed.snapshot(host, FRESH_SNAPSHOT)  # instant on an empty overlay; VmLab.reset() goes back to it
    write_client_files(lab)


def write_client_files(lab: VmLab) -> None:
    """The inventory, known_hosts and ssh_config of the lab."""
    hosts = [{**h.context(), "public_key": h.public_key} for h in lab.hosts]
    ctx = {"hosts": hosts, "ssh_key": str(lab.ssh_key), "known_hosts": str(lab.known_hosts),
           "ssh_config": str(lab.ssh_config), "inventory": str(lab.inventory), "controller_ip": CONTROLLER_IP,
           "prefix": PREFIX,
           "repo": {"core_url": f"{repo_url()}/xcat-core", "dep_url": f"{repo_url()}/xcat-dep",
                    "key_url": f"{repo_url()}/{repo.repo_key(lab.state_dir).name}", "suite": REPO_SUITE,
                    "debian_url": f"{repo_url()}/{DEBIAN_REPO}"}}
    _write(lab.known_hosts, render("vmlab/known_hosts.j2", **ctx))
    _write(lab.ssh_config, render("vmlab/ssh_config.j2", **ctx))
    _write(lab.inventory, render("vmlab/hosts.ini.j2", **ctx))


def _boot_all(lab: VmLab, log: Callable[[str], None]) -> None:
    """Start every VM, then wait for SSH on each (they boot side by side)."""
    for host in lab.hosts:
        qemu.start(host, lab.base, lab.accel)
    log(f"booting {', '.join(lab.names)} ({lab.accel}); consoles in {lab.state_dir}/vmN/console.log")
    booted = time.monotonic()

    def boot(name: str) -> None:
        lab.wait_ssh(name, BOOT_TIMEOUT)
        lab.timings[f"{name} boot to ssh"] = round(time.monotonic() - booted, 1)
        lab.settle(name, BOOT_TIMEOUT)
        lab.timings[f"{name} boot to systemd settled"] = round(time.monotonic() - booted, 1)

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(lab.hosts)) as pool:
        for future in [pool.submit(boot, n) for n in lab.names]:
            future.result()


def _lab_qemus(state: Path) -> list[int]:
    """Pids of QEMUs the VM lab started (their command line names the lab and its state)."""
    return [p["pid"] for p in _process_table()
            if p["prog"].startswith("qemu-system") and f"-name {QEMU_NAME_PREFIX}" in p["cmdline"]
            and f"-pidfile {state}/" in p["cmdline"] and not p["zombie"]]


def vmlab_down(log: Callable[[str], None] = print) -> None:
    """Stop every VM and server of the lab by pid; remove taps, bridge, rules and the state directory."""
    if os.geteuid() != 0:
        raise LabError("taking the VM lab down needs root")
    started = time.monotonic()
    state = state_dir()
    hosts = [make_host(p.name, state) for p in sorted(state.glob("vm*")) if p.is_dir() and p.name[2:].isdigit()]
    sshmux.close_all(state)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        list(pool.map(lambda h: qemu.stop(h, timeout=10), hosts))
    for pid in _lab_qemus(state):  # a QEMU whose pidfile was lost: still ours by its command line
        _stop_pid(pid, f"-pidfile {state}/", timeout=10)
    _stop_pid(repo.server_pid(state), repo.server_marker(state), timeout=5)
    for name in ("dnsmasq",):  # servers a scenario started, recorded as STATE/NAME.pid
        _stop_pid(_live_pid(state / f"{name}.pid", str(state)), str(state), timeout=5)
    _run(["gpgconf", "--kill", "all"], env={"GNUPGHOME": str(state / "gnupg")}, check=False)
    _wait_gone(_lab_qemus(state), 10)
    net.remove_links()
    net.remove_rules()
    if state.exists():
        _run(["rm", "-rf", "--one-file-system", "--", state])
    log(f"VM lab is down ({time.monotonic() - started:.1f}s)")


def vmlab_status() -> dict:
    """Per VM: QEMU pid alive, SSH answers, ``systemctl is-system-running``; ``up`` when all is well."""
    lab = current_vmlab()
    if lab is None:
        return {"up": False, "state_dir": str(state_dir()), "hosts": {}, "leftovers": leftovers()}
    status = {"up": True, "state_dir": str(lab.state_dir), "inventory": str(lab.inventory), "accel": lab.accel,
              "repo_server": {"pid": repo.server_pid(lab.state_dir), "url": repo_url()},
              "isolation_rules": len(net.present_rules()), "expected_rules": len(net.iptables_rules()),
              "hosts": {}}
    if status["repo_server"]["pid"] is None or status["isolation_rules"] != status["expected_rules"]:
        status["up"] = False

    def check(host: VmHost) -> dict:
        entry = {"ip": host.ip, "pid": qemu.running_pid(host), "ssh": None, "systemd": None}
        if entry["pid"]:
            proc = lab.ssh(host.name, "hostname; systemctl is-system-running", check=False, timeout=30)
            lines = proc.stdout.split()
            if lines:
                entry["ssh"] = lines[0]
                entry["systemd"] = lines[1] if len(lines) > 1 else None
        entry["ok"] = bool(entry["pid"] and entry["ssh"] == host.name and entry["systemd"] == "running")
        return entry

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(lab.hosts))) as pool:
        for host, entry in zip(lab.hosts, pool.map(check, lab.hosts)):
            status["hosts"][host.name] = entry
            status["up"] = status["up"] and entry["ok"]
    return status
