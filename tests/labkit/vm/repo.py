"""The VM lab's HTTP server on 198.18.64.1: its apt repositories and the base-image tarball.

Under STATE/repo, served by ``python3 -m http.server`` bound to the controller's
VM-lab address only:

- ``xcat-core``, ``xcat-dep`` and ``xcat-lab.asc``: the stand-in xCAT
  repositories, made by the netns lab's own :func:`build_repos` (the same
  trees, the same kind of key), so an image build inside a VM works;
- ``debian``: docker.io and its closure (fetched with the base's apt, see
  :mod:`.base`), indexed and signed with that same key;
- ``images/bookworm-minbase.tar``: the netns lab's cached base tarball, the
  ``FROM`` of the lab preset's image (no registry can be reached).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Optional

from ._shared import REPO_KEY_NAME, REPO_SUITE, _live_pid, _run, _start_server, build_repos, render
from .base import BaseImage
from .config import BASE_TARBALL_URL_PATH, CONTROLLER_IP, DEBIAN_REPO, REPO_PORT

SERVER_NAME = "http"


def repo_root(state: Path) -> Path:
    """STATE/repo: everything the server serves, and nothing else."""
    return state / "repo"


def repo_key(state: Path) -> Path:
    """The armored public key that signs every lab repository."""
    return repo_root(state) / REPO_KEY_NAME


def build(state: Path, base: BaseImage, base_tarball: Path, log: Callable[[str], None] = print) -> bool:
    """Make every served tree; True when xcat-core has the stand-in package."""
    has_xcat = build_repos(state, log)
    top = repo_root(state) / DEBIAN_REPO
    pool = top / "pool" / "main"
    pool.mkdir(parents=True, exist_ok=True)
    for deb in sorted(base.debs.glob("*.deb")):
        _link_or_copy(deb, pool / deb.name)
    sign_repo(top, state / "gnupg", DEBIAN_REPO,
              "xcatfab VM lab: Debian bookworm packages (docker.io and its dependencies)")
    _link_or_copy(base_tarball, repo_root(state) / BASE_TARBALL_URL_PATH)
    return has_xcat


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (same filesystem), else copy it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def sign_repo(top: Path, gnupg: Path, label: str, description: str) -> None:
    """Index ``top/pool`` and sign it as suite :data:`REPO_SUITE` with the key in ``gnupg``.

    The same layout and Release template as the netns lab's stand-in
    repositories: dists/SUITE/main/binary-amd64/Packages(.gz), Release,
    Release.gpg and InRelease.
    """
    env = {"GNUPGHOME": str(gnupg)}
    gpg = ["gpg", "--batch", "--quiet", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""]
    dist = top / "dists" / REPO_SUITE
    index_dir = dist / "main" / "binary-amd64"
    index_dir.mkdir(parents=True, exist_ok=True)
    (index_dir / "Packages").write_text(_run(["dpkg-scanpackages", "--multiversion", "pool", "/dev/null"],
                                             cwd=top).stdout)
    _run(["gzip", "-9nkf", index_dir / "Packages"])
    files = []
    for rel in ("main/binary-amd64/Packages", "main/binary-amd64/Packages.gz"):
        data = (dist / rel).read_bytes()
        files.append({"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%a, %d %b %Y %H:%M:%S UTC")
    (dist / "Release").write_text(render("lab/Release.j2", label=label, suite=REPO_SUITE, date=date,
                                         files=files, description=description))
    try:
        _run(gpg + ["--yes", "--digest-algo", "SHA256", "--clearsign", "-o", dist / "InRelease",
                    dist / "Release"], env=env)
        _run(gpg + ["--yes", "--digest-algo", "SHA256", "-abs", "-o", dist / "Release.gpg",
                    dist / "Release"], env=env)
    finally:
        _run(["gpgconf", "--kill", "all"], env=env, check=False)


def _marker(state: Path) -> str:
    return f"--directory {repo_root(state)}"


def start_server(state: Path) -> int:
    """Serve STATE/repo on 198.18.64.1:8089 (and nowhere else); return the pid."""
    return _start_server(state, SERVER_NAME, [sys.executable, "-m", "http.server", REPO_PORT, "--bind",
                                              CONTROLLER_IP, "--directory", repo_root(state)],
                         f"{CONTROLLER_IP}:{REPO_PORT}", repo_root(state))


def server_pid(state: Path) -> Optional[int]:
    """Pid of the running repo server (checked against its command line), or None."""
    return _live_pid(state / f"{SERVER_NAME}.pid", _marker(state))


def server_marker(state: Path) -> str:
    """What the server's command line contains (for stopping it by pid)."""
    return _marker(state)
