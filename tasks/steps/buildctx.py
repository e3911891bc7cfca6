"""The image build context: render it from templates, hash it, build it.

The guide's build directory (``xCAT-core.repo``, ``xCAT-dep.repo``,
``startservice.sh``, ``Dockerfile``) is rendered from ``templates/image/``
for one host's settings or a bare preset. The context hash — over every
file's name, mode and bytes — is stored as the image label
``io.xcatfab.context-hash``, so an unchanged context is never rebuilt and a
remote host can tell whether its image is current without rebuilding.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Optional

from ..runtime.config import HostConfig
from ..runtime.templating import render

HASH_LABEL = "io.xcatfab.context-hash"


@dataclass(frozen=True)
class ContextFile:
    name: str
    content: str
    mode: int = 0o644


def context_files(cfg: HostConfig) -> list[ContextFile]:
    """The files of ``cfg``'s build context, rendered, in a stable order."""
    tvars = cfg.as_template_vars()
    files = [ContextFile("Dockerfile", render("image/Dockerfile.j2", **tvars))]
    if cfg.family == "el":
        files.append(ContextFile("xCAT-core.repo", render("image/xCAT-core.repo.j2", **tvars)))
        if cfg.xcat_dep_repo or cfg.xcat_dep_mirrorlist:
            files.append(ContextFile("xCAT-dep.repo", render("image/xCAT-dep.repo.j2", **tvars)))
    else:
        files.append(ContextFile("xcat.list", render("image/xcat.list.j2", **tvars)))
    files.append(ContextFile("startservice.sh", render("image/startservice.sh.j2", **tvars), 0o755))
    return files


def context_hash(files: list[ContextFile]) -> str:
    """A stable digest of the context: names, modes and contents."""
    digest = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.name):
        data = f.content.encode()
        digest.update(f"{f.name}\0{f.mode:o}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:16]


def write_context(files: list[ContextFile], out_dir: str) -> list[str]:
    """Write ``files`` into ``out_dir`` (created if needed); return the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for f in files:
        path = os.path.join(out_dir, f.name)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(f.content)
        os.chmod(path, f.mode)
        paths.append(path)
    return paths


def render_build_context(cfg: HostConfig, out_dir: str) -> str:
    """Render ``cfg``'s build context into ``out_dir``; return its hash."""
    files = context_files(cfg)
    write_context(files, out_dir)
    return context_hash(files)


def local_image_hash(tag: str, docker: str = "docker") -> Optional[str]:
    """The context-hash label of ``tag`` on the local engine, or None."""
    proc = subprocess.run(
        [docker, "image", "inspect", "--format", "{{ index .Config.Labels %s }}" % json.dumps(HASH_LABEL), tag],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        return None
    value = proc.stdout.strip()
    return value if value and value != "<no value>" else None


def build_local(cfg: HostConfig, tag: str, no_cache: bool = False, out=None,
                docker: str = "docker") -> tuple[bool, str]:
    """Build ``cfg``'s image on the local engine unless it is current.

    Returns ``(built, context_hash)``. The context is rendered into a
    temporary directory; ``docker build`` output streams to ``out``.
    """

    files = context_files(cfg)
    digest = context_hash(files)
    if not no_cache and local_image_hash(tag, docker) == digest:
        return False, digest
    with tempfile.TemporaryDirectory(prefix="xcatfab-ctx-") as tmp:
        write_context(files, tmp)
        cmd = [docker, "build", "--label", f"{HASH_LABEL}={digest}", "-t", tag]
        if no_cache:
            cmd.append("--no-cache")
        cmd.append(tmp)
        # The classic builder: works with every engine from docker.io 20.10 up, as on hosts.
        env = dict(os.environ, DOCKER_BUILDKIT="0")
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT if out else None, env=env)
    if proc.returncode != 0:
        raise BuildError(f"docker build of {tag} failed (exit {proc.returncode})")
    return True, digest


class BuildError(RuntimeError):
    """``docker build`` failed."""
