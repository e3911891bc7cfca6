"""Step ``image``: the xCAT image present on the host, from the inventory's source.

``image_source`` decides how:

* ``build`` — render the build context (tasks/buildctx.py), send it to the
  host as a tar stream on stdin and ``docker build`` there. The image carries
  the context hash as a label, so a host whose image has the same hash is
  left alone.
* ``ship`` — build once on the controller's local engine (skipped when that
  image is current), then stream ``docker save`` into the host's
  ``docker load`` over the SSH channel, with no temp file on either side.
  Skipped when the host already has the same image ID.
* ``pull`` — ``docker pull`` from a registry (e.g. ``xcat/xcat2``) when the
  image is missing.
* ``load`` — a ``docker save`` tarball on the controller, streamed into
  ``docker load``; skipped when the host has the tarball's image ID.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile

from .base import Action, Step, StepFailed
from .buildctx import HASH_LABEL, build_local, context_files, context_hash
from .docker import inspected


def context_tar(files) -> bytes:
    """The build context as an uncompressed tar, in memory (it is a few KiB)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for f in files:
            data = f.content.encode()
            info = tarfile.TarInfo(f.name)
            info.size, info.mode, info.mtime = len(data), f.mode, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tarball_image_id(path: str) -> str:
    """The image ID inside a ``docker save`` tarball (from its manifest)."""
    try:
        with tarfile.open(path) as tar:
            manifest = json.load(tar.extractfile("manifest.json"))
    except (OSError, KeyError, tarfile.TarError, ValueError) as exc:
        raise StepFailed(f"{path}: not a docker save tarball ({exc})") from None
    config = manifest[0]["Config"]  # "<hex>.json" or "blobs/sha256/<hex>"
    return "sha256:" + config.rsplit("/", 1)[-1].removesuffix(".json")


def local_image_id(tag: str) -> str:
    """The ID of ``tag`` on the controller's engine, or ''."""
    proc = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", tag],
                          capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else ""


class ImageStep(Step):
    name = "image"
    fragments = ("host", "docker")

    def plan(self, run) -> list[Action]:
        cfg = run.cfg
        image = inspected(run.facts, cfg)["image"]
        have_id = image["Id"] if image else ""
        source = cfg.image_source
        if source == "build":
            digest = context_hash(context_files(cfg))
            labels = (image or {}).get("Config", {}).get("Labels") or {}
            if labels.get(HASH_LABEL) == digest:
                return []
            why = "missing" if not image else f"context {labels.get(HASH_LABEL) or 'unknown'} -> {digest}"
            return [Action("build", f"build {cfg.image} on the host ({why})", {"digest": digest})]
        if source == "ship":
            want = run.shared.get("local_image_id") or local_image_id(cfg.image)
            if want and want == have_id:
                return []
            return [Action("ship", f"ship {cfg.image} from the controller (docker save | docker load)",
                           {"want": want})]
        if source == "pull":
            return [] if image else [Action("pull", f"docker pull {cfg.image}")]
        want = tarball_image_id(cfg.image_tarball)
        if want == have_id:
            return []
        return [Action("load", f"docker load {cfg.image_tarball} ({want[:19]})", {"want": want})]

    def apply(self, run, actions) -> None:
        action = actions[0]
        cfg, remote = run.cfg, run.remote
        if action.kind == "build":
            files = context_files(cfg)
            remote.template("host/image-build.sh.j2", step=self.name, check=True,
                            stdin=context_tar(files), tag=cfg.image, label=HASH_LABEL,
                            digest=action.data["digest"], on_line=run.say)
        elif action.kind == "pull":
            remote.template("host/image-pull.sh.j2", step=self.name, check=True,
                            image=cfg.image, on_line=run.say)
        elif action.kind == "ship":
            self._ship(run)
        elif action.kind == "load":
            with open(cfg.image_tarball, "rb") as fh:
                remote.template("host/image-load.sh.j2", step=self.name, check=True, stdin=fh,
                                tag=cfg.image, on_line=run.say)

    def _ship(self, run) -> None:
        """Build locally if needed, then stream ``docker save`` into ``docker load``."""
        cfg = run.cfg
        built, _digest = build_local(cfg, cfg.image)
        if built:
            run.say(f"built {cfg.image} on the controller")
        run.shared["local_image_id"] = local_image_id(cfg.image)
        save = subprocess.Popen(["docker", "save", cfg.image], stdout=subprocess.PIPE)
        try:
            run.remote.template("host/image-load.sh.j2", step=self.name, check=True,
                                stdin=save.stdout, tag=cfg.image, on_line=run.say)
        except BaseException:
            # The host's own error (say, a full disk in docker load) is the one to report.
            save.kill()
            save.stdout.close()
            save.wait()
            raise
        save.stdout.close()
        if save.wait() != 0:
            raise StepFailed(f"docker save {cfg.image} failed on the controller")
