"""What both labs (the netns lab and the VM lab) share.

- running things: :func:`run` (a subprocess, :class:`LabError` on failure),
  :func:`write` (an atomic file write), :func:`wait_for` (polling);
- processes: :func:`cmdline`, :func:`live_pid` and :func:`stop_pid` (a pid
  is trusted only while its command line carries a marker, so a recycled pid
  is never taken for a lab process), :func:`wait_gone`, :func:`process_table`,
  :func:`own_lineage`; :func:`tcp_banner` for "does it listen";
- mounts: :func:`mounts_under`, :func:`unmount_under`, :func:`remove_tree`;
- the Debian base tarball (:func:`ensure_base_tarball`, made once with
  debootstrap and kept in :func:`cache_dir`);
- the signed stand-in xCAT repositories (:func:`build_repos`) and the way a
  lab server is started and waited for (:func:`start_server`).

Nothing here knows a lab's addresses or names: those are each lab's own.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Optional

from tasks.runtime.templating import render

#: The project's top directory (tests/standin lives there).
PROJECT_DIR = Path(__file__).resolve().parents[2]

DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SUITE = "bookworm"
#: What debootstrap adds to minbase for the base image.
BASE_PACKAGES = (
    "iproute2", "procps", "python3-minimal", "xorriso", "openssh-server",
    "rsyslog", "ca-certificates", "gpgv",
)
#: Suite of the stand-in repositories, and the name their public key is served under.
REPO_SUITE = "bookworm"
REPO_KEY_NAME = "xcat-lab.asc"
#: A site's own flat mirror (``deb URL ./``) holding the stand-in under another package name.
SITE_REPO = "site-flat"
SITE_PACKAGE = "xcat-site"


class LabError(RuntimeError):
    """The lab could not be brought up, checked or taken down."""


def cache_dir() -> Path:
    """The base-image cache: ``$XCATFAB_CACHE_DIR`` or ~/.cache/xcatfab (kept by down)."""
    return Path(os.environ.get("XCATFAB_CACHE_DIR") or Path.home() / ".cache" / "xcatfab")


# --------------------------------------------------------------------------- running things


def run(argv: list, *, check: bool = True, env: Optional[dict] = None, timeout: float = 300,
        input: Optional[str] = None, cwd=None) -> subprocess.CompletedProcess:
    """Run ``argv`` and capture its output; raise :class:`LabError` on failure."""
    full_env = None
    if env:
        full_env = dict(os.environ)
        full_env.update(env)
    try:
        proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=full_env,
                              timeout=timeout, input=input, cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timed out after {timeout}s: {shlex.join(map(str, argv))}") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise LabError(f"failed (exit {proc.returncode}): {shlex.join(map(str, argv))}\n{detail}")
    return proc


def write(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` (parents created) with ``mode``, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    """Poll ``check`` until it is true; raise :class:`LabError` naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def tcp_banner(ip: str, port: int, timeout: float = 2.0) -> str:
    """The first line a TCP server sends (sshd: ``SSH-2.0-...``), or '' if none."""
    try:
        with socket.create_connection((ip, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(256).decode(errors="replace").strip()
    except OSError:
        return ""


# --------------------------------------------------------------------------- processes


def cmdline(pid: int) -> Optional[str]:
    """The process's command line with spaces between arguments, or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip() or None


def live_pid(pidfile: Path, marker: str) -> Optional[int]:
    """The pid in ``pidfile`` when that process is alive and its command line has ``marker``.

    The marker check keeps a recycled pid from ever being taken for a lab process.
    """
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    line = cmdline(pid)
    return pid if line and marker in line else None


def stop_pid(pid: Optional[int], marker: str, timeout: float = 20) -> bool:
    """SIGTERM ``pid`` if its command line has ``marker``, SIGKILL after ``timeout``.

    Returns True when a process was signalled.
    """
    if not pid:
        return False
    line = cmdline(pid)
    if not line or marker not in line:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    if not wait_gone([pid], timeout):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        wait_gone([pid], 5)
    return True


def _is_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is no zombie (a zombie of our own child is reaped first)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        # A zombie that is not our child goes away with its parent; treat it as gone.
        return not Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return False


def wait_gone(pids: Iterable[int], timeout: float) -> bool:
    """Wait until none of ``pids`` exists (zombies of our own children are reaped)."""
    deadline = time.monotonic() + timeout
    pids = list(pids)
    while True:
        if not [pid for pid in pids if _is_alive(pid)]:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def process_table() -> list[dict]:
    """Every process: pid, ppid, argv0 basename, command line, net ns inode, cgroup text."""
    procs = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            stat = Path(f"/proc/{pid}/stat").read_text()
            cgroup = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            continue
        try:
            netns = os.stat(f"/proc/{pid}/ns/net").st_ino
        except OSError:
            netns = None
        argv = raw.split(b"\0")
        procs.append({
            "pid": pid,
            "ppid": int(stat.rsplit(")", 1)[1].split()[1]),
            "prog": os.path.basename(argv[0].decode(errors="replace")) if argv and argv[0] else "",
            "cmdline": raw.replace(b"\0", b" ").decode(errors="replace").strip(),
            "netns": netns,
            "cgroup": cgroup,
            "zombie": stat.rsplit(")", 1)[1].split()[0] == "Z",
        })
    return procs


def own_lineage() -> set[int]:
    """This process and its ancestors: never signalled by a sweep."""
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return pids


# --------------------------------------------------------------------------- mounts


def mounts_under(roots: list[Path]) -> list[str]:
    """Mount points at or under any of ``roots`` in this mount namespace, deepest first."""
    prefixes = [str(r).rstrip("/") for r in roots]
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        target = line.split()[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
        if any(target == p or target.startswith(p + "/") for p in prefixes):
            found.append(target)
    return sorted(set(found), key=lambda t: (-t.count("/"), t))


def unmount_under(roots: list[Path]) -> None:
    """Unmount everything at or under ``roots``, deepest first (lazily when busy)."""
    for _ in range(5):
        targets = mounts_under(roots)
        if not targets:
            return
        for target in targets:
            if run(["umount", target], check=False).returncode != 0:
                run(["umount", "-l", target], check=False)


def remove_tree(path: Path) -> None:
    """Remove ``path`` after unmounting anything a killed debootstrap left mounted in it."""
    if not path.exists():
        return
    unmount_under([path])
    run(["rm", "-rf", "--one-file-system", "--", path])


# --------------------------------------------------------------------------- base tarball


def base_tarball() -> Path:
    """Where the cached base tarball lives."""
    return cache_dir() / f"{DEBIAN_SUITE}-minbase.tar"


def base_recipe() -> dict:
    """What the cached tarball was made from; a change makes it be rebuilt."""
    return {"suite": DEBIAN_SUITE, "variant": "minbase", "include": sorted(BASE_PACKAGES),
            "mirror": DEBIAN_MIRROR, "format": 2}


#: What a base tree sheds before it is packed: apt sources and lists, caches, documentation, logs.
_STRIPPED = ("etc/apt/sources.list.d/*", "var/lib/apt/lists/*", "var/cache/apt/*.bin",
             "var/cache/apt/archives/*.deb", "usr/share/doc/*", "usr/share/man/*",
             "usr/share/info/*", "var/log/*.log", "var/log/apt/*")


def _strip_tree(work: Path) -> None:
    """Empty the tree's apt sources (no mirror is reachable from a lab host) and drop :data:`_STRIPPED`."""
    (work / "etc/apt/sources.list").write_text("")
    for pattern in _STRIPPED:
        for path in work.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()


def _tarball_is_current(tarball: Path, stamp: Path, recipe: dict) -> bool:
    if not (tarball.exists() and stamp.exists()):
        return False
    try:
        return json.loads(stamp.read_text()) == recipe
    except ValueError:
        return False


def ensure_base_tarball(log: Callable[[str], None] = print) -> Path:
    """The cached bookworm minbase tarball, made with debootstrap when missing or stale.

    The tree's apt sources are emptied (no mirror is reachable from the lab
    hosts) and its apt lists, caches and documentation removed. The tarball
    is kept in the cache directory across lab.down, so a warm lab.up never
    runs debootstrap.
    """
    tarball = base_tarball()
    stamp = tarball.with_suffix(".json")
    recipe = base_recipe()
    if _tarball_is_current(tarball, stamp, recipe):
        return tarball
    tarball.parent.mkdir(parents=True, exist_ok=True)
    work = tarball.with_suffix(".tree")
    remove_tree(work)
    log(f"debootstrap {DEBIAN_SUITE} (minbase) into {work} (once; cached in {tarball.parent})")
    started = time.monotonic()
    run(["debootstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES),
         DEBIAN_SUITE, work, DEBIAN_MIRROR], timeout=1800)
    _strip_tree(work)
    partial = tarball.with_suffix(".tar.partial")
    run(["tar", "--numeric-owner", "--xattrs", "-C", work, "-cf", partial, "."], timeout=600)
    os.replace(partial, tarball)
    stamp.write_text(json.dumps(recipe))
    remove_tree(work)
    log(f"base tarball ready in {time.monotonic() - started:.0f}s: {tarball}")
    return tarball


# --------------------------------------------------------------------------- stand-in repositories


def _build_standin_deb(out: Path, log: Callable[[str], None], name: str = "xcat") -> Optional[Path]:
    """Build the stand-in xCAT .deb (package ``name``) with tests/standin/build_deb.py; None if that is missing."""
    builder = PROJECT_DIR / "tests" / "standin" / "build_deb.py"
    if not builder.exists():
        log(f"WARNING: {builder} is missing: the xcat-core repository is served empty")
        return None
    out.mkdir(parents=True, exist_ok=True)
    run([sys.executable, builder, out, "--name", name], cwd=PROJECT_DIR, timeout=300)
    debs = sorted(out.glob(f"{name}_*_all.deb"))
    if not debs:
        raise LabError(f"{builder} made no {name}_*_all.deb in {out}")
    return debs[-1]


def _flat_repo(top: Path, debs: list, gpg: list, env: dict) -> None:
    """A flat repository (``deb URL ./``, as air-gapped sites keep their own builds): the
    packages, Packages(.gz) and a signed Release beside them."""
    top.mkdir(parents=True, exist_ok=True)
    for d in debs:
        shutil.copy2(d, top / d.name)
    (top / "Packages").write_text(run(["dpkg-scanpackages", "--multiversion", ".", "/dev/null"], cwd=top).stdout)
    run(["gzip", "-9nkf", top / "Packages"])
    files = [{"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
             for rel in ("Packages", "Packages.gz") for data in [(top / rel).read_bytes()]]
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%a, %d %b %Y %H:%M:%S UTC")
    (top / "Release").write_text(render("lab/Release.j2", label=SITE_REPO, suite="", date=date, files=files,
                                        description="xcatfab lab: a site's own flat mirror, NOT xCAT"))
    run(gpg + ["--yes", "--digest-algo", "SHA256", "--clearsign", "-o", top / "InRelease", top / "Release"], env=env)
    run(gpg + ["--yes", "--digest-algo", "SHA256", "-abs", "-o", top / "Release.gpg", top / "Release"], env=env)


def _index_repo(top: Path, repo: str, debs: list, gpg: list, env: dict) -> None:
    """Pool, Packages(.gz), Release, InRelease and Release.gpg of one repository under ``top``."""
    pool = top / "pool" / "main"
    pool.mkdir(parents=True, exist_ok=True)
    for d in debs:
        shutil.copy2(d, pool / d.name)
    dist = top / "dists" / REPO_SUITE
    index_dir = dist / "main" / "binary-amd64"
    index_dir.mkdir(parents=True, exist_ok=True)
    packages = run(["dpkg-scanpackages", "--multiversion", "pool", "/dev/null"], cwd=top).stdout
    (index_dir / "Packages").write_text(packages)
    run(["gzip", "-9nkf", index_dir / "Packages"])
    files = []
    for rel in ("main/binary-amd64/Packages", "main/binary-amd64/Packages.gz"):
        data = (dist / rel).read_bytes()
        files.append({"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%a, %d %b %Y %H:%M:%S UTC")
    (dist / "Release").write_text(render(
        "lab/Release.j2", label=repo, suite=REPO_SUITE, date=date, files=files,
        description=f"xcatfab lab {repo}: stand-in packages, NOT xCAT"))
    run(gpg + ["--yes", "--digest-algo", "SHA256", "--clearsign", "-o", dist / "InRelease",
               dist / "Release"], env=env)
    run(gpg + ["--yes", "--digest-algo", "SHA256", "-abs", "-o", dist / "Release.gpg",
               dist / "Release"], env=env)


def build_repos(state: Path, log: Callable[[str], None] = print) -> bool:
    """Make the signed stand-in repositories under STATE/repo; True if xcat-core has the package.

    ``xcat-core`` holds the stand-in xCAT package, ``xcat-dep`` is empty but
    valid; both have dists/<suite>/main/binary-amd64/Packages(.gz), Release,
    Release.gpg and InRelease, signed with a key generated into STATE/gnupg,
    whose armored public key is served as /xcat-lab.asc.
    """
    repo_root = state / "repo"
    gnupg = state / "gnupg"
    gnupg.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = {"GNUPGHOME": str(gnupg)}
    gpg = ["gpg", "--batch", "--quiet", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""]
    try:
        run(gpg + ["--quick-gen-key", "xcatfab lab stand-in repository (NOT xCAT) <lab@xcatfab.invalid>",
                   "ed25519", "sign", "0"], env=env)
        write(repo_root / REPO_KEY_NAME, run(gpg + ["--armor", "--export"], env=env).stdout)
        deb = _build_standin_deb(state / "standin", log)
        for repo, debs in (("xcat-core", [deb] if deb else []), ("xcat-dep", [])):
            _index_repo(repo_root / repo, repo, debs, gpg, env)
        site_deb = _build_standin_deb(state / "standin-site", log, name=SITE_PACKAGE)
        _flat_repo(repo_root / SITE_REPO, [site_deb] if site_deb else [], gpg, env)
    finally:
        # gpg leaves an agent running; it was started by us, so stop it here.
        run(["gpgconf", "--kill", "all"], env=env, check=False)
    return deb is not None


# --------------------------------------------------------------------------- servers


def start_server(state: Path, name: str, argv: list, address: str, cwd: Path) -> int:
    """Start a lab server (STATE/NAME.pid, STATE/NAME.log); wait until it listens on ``address`` (ip:port)."""
    log = open(state / f"{name}.log", "ab")
    proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True, cwd=str(cwd))
    log.close()
    (state / f"{name}.pid").write_text(f"{proc.pid}\n")

    def answers() -> bool:
        if proc.poll() is not None:
            raise LabError(f"the lab's {name} server exited; see {state / (name + '.log')}")
        try:
            with socket.create_connection((ip, int(port)), timeout=1):
                return True
        except OSError:
            return False

    ip, port = address.rsplit(":", 1)
    wait_for(answers, 15, f"the lab's {name} server on {address}")
    return proc.pid
