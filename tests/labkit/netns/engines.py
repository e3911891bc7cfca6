"""The lab's Docker engines: one dockerd per host, and one for the controller (``labctl``).

Each dockerd runs in its host's network namespace with its own data-root,
exec-root, socket, pidfile and ``--config-file`` (the host's
``/etc/netns/labN/docker/daemon.json``), started by the host's
``restart-dockerd`` script (:func:`start_dockerd`; the flags are
:func:`dockerd_flags`). The controller's engine ``labctl`` is what ``inv
build-image`` uses. Also here: the Docker API probe that keeps the health
check free of subprocesses, the base image import, and the machine paths and
cgroups the engines leave behind.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Iterable, Optional

from tasks.runtime.templating import render

from ..common import DEBIAN_SUITE, LabError, run, stop_pid, wait_for, write
from .hosts import (
    BASE_IMAGE,
    BASE_IMAGE_REPO,
    BASE_IMAGE_TAGS,
    CGROUP_PARENT,
    CONTROLLER_IP,
    CREATED_MARKER,
    ENGINE_ADDRESS_POOL,
    ENGINE_BRIDGE_IP,
    ENGINE_MACHINE_PATHS,
    REGISTRY,
    LabHost,
)

# --------------------------------------------------------------------------- the API probe


def _docker_api(sock_path: Path, path: str, timeout: float = 3.0) -> Optional[tuple[int, bytes]]:
    """GET ``path`` from a Docker engine's unix socket: (status, body), or None if it does not answer.

    A few lines of HTTP/1.0 keep the health check free of subprocesses, so a
    warm ``lab.up`` returns in well under a second.
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(sock_path))
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except OSError:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None
    return status, body


def engine_answers(host: LabHost) -> bool:
    """Whether the host's engine answers ``/_ping``."""
    reply = _docker_api(host.docker_sock, "/_ping")
    return bool(reply and reply[0] == 200)


def has_base_image(host: LabHost) -> bool:
    """Whether the host's engine has the base image."""
    reply = _docker_api(host.docker_sock, f"/images/{BASE_IMAGE}/json")
    return bool(reply and reply[0] == 200)


# --------------------------------------------------------------------------- dockerd


def dockerd_flags(host: LabHost) -> list[tuple[str, str]]:
    """The (flag, value) pairs of ``host``'s dockerd; rendered into its restart-dockerd script.

    Network settings are flags, not daemon.json keys, so the lab's daemon.json
    starts empty as on a fresh host (dockerd refuses a setting given both ways).
    """
    return [
        ("--data-root", str(host.docker_root)),
        ("--exec-root", str(host.exec_root)),
        ("-H", host.docker_host),
        ("--pidfile", str(host.dockerd_pidfile)),
        ("--config-file", str(host.daemon_json)),
        # docker0 and address pools in benchmarking space, not Docker's 172.17/16.
        ("--bip", ENGINE_BRIDGE_IP),
        ("--default-address-pool", ENGINE_ADDRESS_POOL),
        # Containers' DNS goes to the controller's lab address, never off the machine.
        ("--dns", CONTROLLER_IP),
        # The lab's registry speaks plain HTTP (image_source=pull tests).
        ("--insecure-registry", REGISTRY),
        ("--cgroup-parent", f"/{CGROUP_PARENT}/{host.name}"),
    ]


def start_dockerd(host: LabHost) -> int:
    """(Re)start ``host``'s dockerd with its restart-dockerd script; return its pid."""
    run([host.restart_dockerd], timeout=180)
    pid = host.dockerd_pid()
    if pid is None:
        raise LabError(f"dockerd of {host.name} did not stay up; see {host.dockerd_log}")
    return pid


def restore_daemon_json(host: LabHost) -> None:
    """The lab's daemon.json back, and dockerd restarted, when the file was changed or dockerd is down."""
    pristine = render("lab/daemon.json.j2")
    current = host.daemon_json.read_text() if host.daemon_json.is_file() else None
    if current != pristine or host.dockerd_pid() is None:
        write(host.daemon_json, pristine)
        start_dockerd(host)


def stop_engine(host: LabHost) -> None:
    """Remove the engine's containers (so no shim is left), then stop dockerd by pid."""
    pid = host.dockerd_pid()
    if pid is None:
        return
    if engine_answers(host):
        ids = host.docker("ps", "-aq", check=False, timeout=30).stdout.split()
        if ids:
            host.docker("rm", "-f", *ids, check=False, timeout=120)
    stop_pid(pid, f"--pidfile {host.dockerd_pidfile}", timeout=30)


# --------------------------------------------------------------------------- images and objects


def import_base_image(host: LabHost, tarball: Path) -> bool:
    """``docker import`` the base tarball into ``host``'s engine unless it has it; True if imported."""
    if has_base_image(host):
        return False
    host.docker("import", "--change", 'CMD ["/bin/bash"]', "--message", "debootstrap minbase "
                + DEBIAN_SUITE + " (xcatfab lab)", tarball, BASE_IMAGE, timeout=900)
    for tag in BASE_IMAGE_TAGS[1:]:
        host.docker("tag", BASE_IMAGE, f"{BASE_IMAGE_REPO}:{tag}")
    return True


def _remove_images_but_base(host: LabHost) -> None:
    keep = {f"{BASE_IMAGE_REPO}:{t}" for t in BASE_IMAGE_TAGS}
    rows = host.docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}").stdout.split("\n")
    doomed = [r.split()[0] if not r.startswith("<none>") else r.split()[1]
              for r in rows if r.strip() and r.split()[0] not in keep]
    if doomed:
        host.docker("image", "rm", "-f", *doomed, check=False)


def reset_docker(host: LabHost, images: bool) -> None:
    """Remove the engine's containers, custom networks and volumes (and with ``images``,
    every image but the base image); nothing when dockerd is not answering."""
    if host.dockerd_pid() is None or not engine_answers(host):
        return
    _remove_containers(host)
    custom = host.docker("network", "ls", "-q", "--filter", "type=custom").stdout.split()
    if custom:
        host.docker("network", "rm", *custom)
    volumes = host.docker("volume", "ls", "-q").stdout.split()
    if volumes:
        host.docker("volume", "rm", "-f", *volumes)
    if images:
        _remove_images_but_base(host)


def _remove_containers(host: LabHost) -> None:
    """Every container gone: ``docker rm -f`` fails for one whose removal is already in progress
    (a test's own rm, a restart policy racing it), so remove, then wait until none is listed."""
    def none_left() -> bool:
        ids = host.docker("ps", "-aq").stdout.split()
        if ids:
            host.docker("rm", "-f", "--volumes", *ids, check=False)
        return not host.docker("ps", "-aq").stdout.split()

    wait_for(none_left, 60, f"{host.name}'s containers to be removed", interval=1)


# --------------------------------------------------------------------------- what engines leave behind


def claim_machine_paths() -> list[str]:
    """The :data:`ENGINE_MACHINE_PATHS` this lab will be first to make (to remove on down).

    A directory among them is made now with a marker file in it, so a crash
    that loses the lab's record does not make the next lab take it for the machine's.
    """
    created_paths = [str(p) for p in ENGINE_MACHINE_PATHS
                     if not p.exists() or (p / CREATED_MARKER).exists()]
    for path in ENGINE_MACHINE_PATHS:
        if str(path) in created_paths and path.suffix == "":
            path.mkdir(parents=True, exist_ok=True)
            (path / CREATED_MARKER).touch()
    return created_paths


def _rmdir_empty(top: Path) -> None:
    """rmdir every empty directory at and under ``top``, bottom up."""
    for dirpath, _dirs, _files in os.walk(top, topdown=False):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass


def remove_created_paths(recorded: Iterable[str]) -> None:
    """Remove the machine paths the lab's engines created (``recorded`` ones and marked
    ones): a file, or a directory tree once empty."""
    paths = set(recorded) | {str(p) for p in ENGINE_MACHINE_PATHS if (p / CREATED_MARKER).exists()}
    for name in paths:
        path = Path(name)
        if path.is_file():
            path.unlink()
        elif path.is_dir():
            (path / CREATED_MARKER).unlink(missing_ok=True)
            _rmdir_empty(path)


def remove_lab_cgroups() -> None:
    """rmdir the (empty) cgroups lab containers were put under, in every hierarchy."""
    for top in Path("/sys/fs/cgroup").glob(f"*/{CGROUP_PARENT}"):
        _rmdir_empty(top)
    top = Path("/sys/fs/cgroup") / CGROUP_PARENT
    if top.is_dir():
        _rmdir_empty(top)
