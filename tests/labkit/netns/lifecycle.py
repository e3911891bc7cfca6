"""Bringing the lab up, checking it, taking it down: :func:`lab_up`, :func:`lab_status`, :func:`lab_down`.

The lab's record is ``STATE/lab.json``, written before anything else is made
(so a crash from there on is cleaned up by the next up or down) and completed
at the end of :func:`lab_up`; :func:`current_lab` reads it back. A warm
``lab.up`` of a healthy lab costs only :func:`healthy` (pids, sockets, SSH
banners, rules and files checked without spawning a process).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Optional

from tasks.runtime.templating import render

from ..common import (
    REPO_KEY_NAME,
    REPO_SUITE,
    LabError,
    build_repos,
    ensure_base_tarball,
    mounts_under,
    run,
    unmount_under,
    write,
)
from .engines import (
    claim_machine_paths,
    engine_answers,
    has_base_image,
    import_base_image,
    remove_created_paths,
    remove_lab_cgroups,
    start_dockerd,
    stop_engine,
)
from .files import host_ctx, remove_etc_dirs, write_host_files
from .hosts import (
    ADMIN_USER,
    BRIDGE,
    CONTROLLER_IP,
    CONTROLLER_NETNS,
    LAB_NETNS_RE,
    MAX_HOSTS,
    NETNS_ETC,
    PREFIX,
    RUN_DIR,
    LabHost,
    make_host,
    state_dir,
)
from .lab import Lab
from .network import (
    add_iptables_rules,
    iptables_rules,
    lab_iptables_rules,
    lab_netns_names,
    link_names,
    make_bridge,
    make_netns,
    make_uts,
    prepare_uts_dir,
    remove_network,
    save_boot_rules,
)
from .processes import sweep
from .services import (
    admin_user_ok,
    create_admin_user,
    registry_pid,
    remove_admin_user,
    repo_server_pid,
    sshd_answers,
    start_registry,
    start_repo_server,
    start_sshd,
    stop_servers,
    stop_sshd,
)

Log = Callable[[str], None]

#: Programs the lab runs; ``lab.up`` names the missing ones (tests/lab/apt-packages.txt has their packages).
TOOLS = ("dockerd", "docker", "sshd", "ssh-keygen", "ip", "iptables", "nsenter", "unshare", "debootstrap",
         "dpkg-scanpackages", "gpg", "visudo", "useradd", "docker-registry")

# --------------------------------------------------------------------------- the record


def _record_path(state: Path) -> Path:
    return state / "lab.json"


def _read_record(state: Path) -> dict:
    try:
        return json.loads(_record_path(state).read_text())
    except (OSError, ValueError):
        return {}


def current_lab() -> Optional[Lab]:
    """The lab recorded in the state directory (running or not), or None."""
    state = state_dir()
    try:
        record = json.loads(_record_path(state).read_text())
    except (OSError, ValueError):
        return None
    return Lab(state_dir=state,
               hosts=[make_host(n, state) for n in record["hosts"]],
               controller=make_host(CONTROLLER_NETNS, state),
               http_pid=record.get("http_pid"),
               has_xcat_package=record.get("has_xcat_package", False),
               timings=record.get("timings", {}))


# --------------------------------------------------------------------------- health


def _engine_problems(host: LabHost, netns: set[str]) -> list[str]:
    """What is wrong with one engine's namespace, dockerd, base image and sshd."""
    if host.netns not in netns:
        return [f"{host.name}: no namespace"]
    problems = []
    if host.dockerd_pid() is None or not engine_answers(host):
        problems.append(f"{host.name}: dockerd not answering")
    elif not has_base_image(host):
        problems.append(f"{host.name}: base image missing")
    if host.has_sshd and not sshd_answers(host):
        problems.append(f"{host.name}: sshd not answering")
    return problems


def healthy(lab: Lab) -> list[str]:
    """What is wrong with a recorded lab, cheaply checked (empty list: healthy)."""
    problems = []
    if repo_server_pid(lab.state_dir) is None:
        problems.append("repo server not running")
    if registry_pid(lab.state_dir) is None:
        problems.append("registry not running")
    netns = set(lab_netns_names())
    for host in lab.engines():
        problems += _engine_problems(host, netns)
    if len(lab_iptables_rules()) != len(iptables_rules()):
        problems.append("isolation rules missing")
    if not admin_user_ok():
        problems.append(f"sudo test user {ADMIN_USER} or its sudoers file missing")
    problems += [f"{path} missing" for path in (lab.inventory, lab.known_hosts, lab.ssh_config, lab.ssh_key,
                                                lab.env_file) if not path.exists()]
    return problems


def leftovers() -> bool:
    """Whether anything of a lab is on the machine (namespace, link, rule, state, /etc/netns entry)."""
    return bool(lab_netns_names() or state_dir().exists() or RUN_DIR.exists()
                or BRIDGE in link_names() or lab_iptables_rules()
                or any(LAB_NETNS_RE.match(p.name) for p in NETNS_ETC.glob("*")))


# --------------------------------------------------------------------------- up


def _check_tools() -> None:
    missing = [t for t in TOOLS if not shutil.which(t) and not Path("/usr/sbin", t).exists()]
    if missing:
        raise LabError("missing tools: " + ", ".join(missing) + " (apt packages: tests/lab/apt-packages.txt)")


def _preflight(n: int) -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, dockerd, sshd, iptables)")
    if not 1 <= n <= MAX_HOSTS:
        raise LabError(f"--hosts must be between 1 and {MAX_HOSTS}")
    _check_tools()


def _new_lab(n: int) -> tuple[Lab, list[str]]:
    """The state directory and the lab's first record (hosts, machine paths it will make)."""
    state = state_dir()
    state.mkdir(mode=0o755, parents=True, exist_ok=False)
    RUN_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    hosts = [make_host(f"lab{i}", state) for i in range(1, n + 1)]
    lab = Lab(state_dir=state, hosts=hosts, controller=make_host(CONTROLLER_NETNS, state))
    created_paths = claim_machine_paths()
    # Written first, so a crash from here on is cleaned up by the next up or down.
    write(_record_path(state), json.dumps({"hosts": [h.name for h in hosts], "complete": False,
                                           "created_paths": created_paths}, indent=1))
    return lab, created_paths


def lab_up(n: int = 3, log: Log = print) -> Lab:
    """Bring up a lab of ``n`` hosts (lab1..labN) and return it.

    Idempotent: a healthy lab with the same hosts is returned at once. Anything
    else found (a crashed lab, a lab of another size) is taken down first,
    by recorded pids and the lab's own names only.
    """
    _preflight(n)
    started = time.monotonic()
    existing = current_lab()
    if existing and len(existing.hosts) == n:
        problems = healthy(existing)
        if not problems:
            log(f"lab is up with {n} host(s) (checked in {time.monotonic() - started:.2f}s)")
            return existing
        log("lab is not healthy (" + "; ".join(problems) + "): rebuilding it")
    if existing or leftovers():
        lab_down(log=log)
    lab, created_paths = _new_lab(n)
    # The slow parts that need no network run beside the rest.
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=4)
    try:
        return _bring_up(lab, created_paths, pool, started, log)
    finally:
        # On failure too: no debootstrap or import keeps running behind the caller's back.
        pool.shutdown(wait=True, cancel_futures=True)


def _make_network(lab: Lab) -> None:
    """Client key, bridge, rules, and each engine's namespace, hostname and files."""
    state = lab.state_dir
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "xcatfab-lab-client", "-f", lab.ssh_key])
    write(state / "authorized_keys", render("lab/authorized_keys.j2",
                                            public_key=(state / "id_ed25519.pub").read_text().strip()))
    make_bridge()
    add_iptables_rules()
    prepare_uts_dir()
    for host in lab.engines():
        make_netns(host)
        make_uts(host)
        write_host_files(host, lab.hosts, state)


def _write_client_files(lab: Lab) -> None:
    """known_hosts, ssh_config, the inventory and the controller engine's env file."""
    ctx = {"hosts": [host_ctx(h) for h in lab.hosts], "ssh_key": str(lab.ssh_key),
           "known_hosts": str(lab.known_hosts), "ssh_config": str(lab.ssh_config),
           "inventory": str(lab.inventory), "controller_ip": CONTROLLER_IP, "prefix": PREFIX,
           "controller_docker_host": lab.controller.docker_host,
           "repo": {"core_url": f"{lab.repo_url}/xcat-core", "dep_url": f"{lab.repo_url}/xcat-dep",
                    "key_url": f"{lab.repo_url}/{REPO_KEY_NAME}", "suite": REPO_SUITE}}
    write(lab.known_hosts, render("lab/known_hosts.j2", **ctx))
    write(lab.ssh_config, render("lab/ssh_config.j2", **ctx))
    write(lab.inventory, render("lab/hosts.ini.j2", **ctx))
    write(lab.env_file, render("lab/env.j2", **ctx))


def _bring_up(lab: Lab, created_paths: list[str], pool: concurrent.futures.ThreadPoolExecutor,
              started: float, log: Log) -> Lab:
    """The steps of :func:`lab_up` after the state directory and record exist."""
    state, engines = lab.state_dir, lab.engines()
    timings: dict = {}

    def mark(step: str) -> None:
        timings[step] = round(time.monotonic() - started, 2)

    base = pool.submit(ensure_base_tarball, log)
    _make_network(lab)
    mark("network")
    repos = pool.submit(build_repos, state, log)
    dockerds = [pool.submit(start_dockerd, host) for host in engines]
    admin_created = create_admin_user(state)
    for host in lab.hosts:
        start_sshd(host)
    mark("sshd")
    lab.has_xcat_package = repos.result()
    lab.http_pid = start_repo_server(state)
    start_registry(state, lab.controller)
    for future in dockerds:
        future.result()
    mark("dockerd")
    tarball = base.result()
    mark("base tarball")
    for future in [pool.submit(import_base_image, host, tarball) for host in engines]:
        future.result()
    mark("base image imported")
    for host in engines:
        save_boot_rules(host)
    _write_client_files(lab)
    mark("total")
    lab.timings = timings
    write(_record_path(state), json.dumps({
        "hosts": lab.names, "complete": True, "http_pid": lab.http_pid,
        "admin_user_created": admin_created, "has_xcat_package": lab.has_xcat_package,
        "created_paths": created_paths,
        "timings": timings}, indent=1))
    log(f"lab is up: {len(lab.hosts)} host(s) in {timings['total']:.1f}s; inventory {lab.inventory}")
    return lab


# --------------------------------------------------------------------------- down


def _engines_on_machine(state: Path) -> list[LabHost]:
    """Every lab engine anything is left of: a namespace, a state directory, an /etc/netns entry."""
    names = set(lab_netns_names())
    names.update(p.name for p in state.glob("lab*") if p.is_dir() and LAB_NETNS_RE.match(p.name))
    names.update(p.name for p in NETNS_ETC.glob("*") if LAB_NETNS_RE.match(p.name))
    return [make_host(n, state) for n in sorted(names)]


def _stop_processes(engines: list[LabHost], state: Path, log: Log) -> None:
    """By pid first (sshd, each engine with its containers, the servers), then a sweep of the rest."""
    for host in engines:
        stop_sshd(host)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(engines))) as pool:
        list(pool.map(stop_engine, engines))
    stop_servers(state)
    sweep(state, log)


def _remove_state(paths: tuple[Path, ...]) -> None:
    """``rm -rf`` each of ``paths``, refusing while anything is still mounted under it."""
    for path in paths:
        if path.exists():
            if mounts_under([path]):
                raise LabError(f"still mounted under {path}: " + ", ".join(mounts_under([path])))
            run(["rm", "-rf", "--one-file-system", "--", path])


def lab_down(log: Log = print) -> None:
    """Take the lab down and remove every trace of it but the base-image cache.

    Stops, by pid, every process the lab started (sshd, containers, dockerd
    and its containerd, the repo server) and then sweeps whatever is still in
    a lab namespace or names a lab path (see :func:`~.processes.lab_processes`);
    unmounts everything under the state and run directories; deletes the namespaces,
    veths, bridge, iptables rules, /etc/netns entries, the sudo test user and
    its sudoers file, lab cgroups, and the state directory. Works on a
    crashed or half-built lab too.
    """
    if os.geteuid() != 0:
        raise LabError("taking the lab down needs root")
    started = time.monotonic()
    state = state_dir()
    engines = _engines_on_machine(state)
    record = _read_record(state)
    # 1. Processes, gracefully and by pid first; then whatever is left.
    _stop_processes(engines, state, log)
    # 2. Mounts, namespaces, links, rules.
    unmount_under([state, RUN_DIR])
    remove_network()
    # 3. Files, user, cgroups, what the engines made on the machine, the state.
    remove_etc_dirs()
    remove_admin_user()
    remove_lab_cgroups()
    remove_created_paths(record.get("created_paths", []))
    _remove_state((state, RUN_DIR))
    log(f"lab is down ({time.monotonic() - started:.1f}s)" + ("" if record else " (no lab record found)"))


# --------------------------------------------------------------------------- status


def _host_status(lab: Lab, host: LabHost) -> dict:
    """One engine's pids, ``docker info`` and (for a host) an SSH round trip."""
    entry = {"ip": host.ip, "dockerd_pid": host.dockerd_pid(), "sshd_pid": host.sshd_pid()}
    info = host.docker("info", "--format", "{{.Name}} {{.ServerVersion}}", check=False, timeout=20)
    entry["docker_info"] = info.stdout.strip() if info.returncode == 0 else None
    if host.has_sshd:
        ssh = run(["ssh", "-F", lab.ssh_config, host.name, "hostname"], check=False, timeout=20)
        entry["ssh"] = ssh.stdout.strip() if ssh.returncode == 0 else None
        entry["ok"] = bool(entry["dockerd_pid"] and entry["sshd_pid"] and entry["docker_info"]
                           and entry["ssh"] == host.name)
    else:
        entry["ok"] = bool(entry["dockerd_pid"] and entry["docker_info"])
    return entry


def lab_status() -> dict:
    """Per host: sshd and dockerd pids and whether they are alive, whether SSH and ``docker info`` answer.

    Returns ``{"up": bool, "state_dir": ..., "repo_server": {...}, "hosts": {name: {...}}}``;
    ``up`` is true only when every check passed. SSH is checked with plain
    OpenSSH and the lab's ssh_config (host key checking on).
    """
    lab = current_lab()
    if lab is None:
        return {"up": False, "state_dir": str(state_dir()), "hosts": {},
                "leftovers": leftovers()}
    repo_pid = repo_server_pid(lab.state_dir)
    reg_pid = registry_pid(lab.state_dir)
    status = {"up": True, "state_dir": str(lab.state_dir), "inventory": str(lab.inventory),
              "controller_docker_host": lab.controller_docker_host,
              "repo_server": {"pid": repo_pid, "url": lab.repo_url},
              "registry": {"pid": reg_pid, "address": lab.registry}, "hosts": {},
              "isolation_rules": len(lab_iptables_rules())}
    if repo_pid is None or reg_pid is None or status["isolation_rules"] != len(iptables_rules()):
        status["up"] = False
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        entries = pool.map(lambda host: _host_status(lab, host), lab.engines())
        for host, entry in zip(lab.engines(), entries):
            status["hosts"][host.name] = entry
            status["up"] = status["up"] and entry["ok"]
    return status
