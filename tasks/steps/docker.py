"""Step ``docker``: docker.io installed, /etc/docker/daemon.json merged, dockerd up.

The guide's first line, ``apt-get install docker.io``, made idempotent:
apt runs only when the docker client or daemon is missing (so a host that
has everything never sees ``apt-get update``), daemon.json is merged key by
key and never clobbered (a file that is not valid JSON is an error, not an
overwrite), and dockerd is (re)started with the inventory's
``docker_restart`` command only when it is down or its config changed.

This module also reads the one ``docker inspect`` the fact script makes for
the container, its network and its image; later steps use
:func:`inspected`.
"""

from __future__ import annotations

import json

from .base import Action, Step, StepFailed

ENGINE_DOWN_HINTS = ("Cannot connect to the Docker daemon", "Is the docker daemon running",
                     "error during connect", "permission denied while trying to connect")


def engine_error(facts) -> str:
    """Why the engine did not answer, or '' when it did."""
    err = facts.text("docker.inspect_err")
    for hint in ENGINE_DOWN_HINTS:
        if hint in err:
            for line in err.splitlines():
                if hint in line:
                    return line.strip()
    return ""


def normal_ref(ref: str) -> str:
    """An image reference as Docker Hub's short form: no ``docker.io/`` or ``library/``, a tag unless a digest."""
    for prefix in ("docker.io/", "index.docker.io/", "library/"):
        ref = ref.removeprefix(prefix)
    if "@" not in ref and ":" not in ref.rsplit("/", 1)[-1]:
        ref += ":latest"
    return ref


def is_image(obj: dict, name: str) -> bool:
    """``obj`` (from docker inspect) is the image ``name``: by tag, or by digest for ``repo@sha256:...``."""
    known = (obj.get("RepoDigests") or []) if "@" in name else (obj.get("RepoTags") or [])
    return normal_ref(name) in {normal_ref(ref) for ref in known}


def inspected(facts, cfg) -> dict:
    """The container, network and image objects from the one ``docker inspect``."""
    objects = facts.json("docker.inspect", default=[]) or []
    found = {"container": None, "network": None, "image": None}
    for obj in objects:
        if "State" in obj and obj.get("Name") == "/" + cfg.container_name:
            found["container"] = obj
        elif "IPAM" in obj and obj.get("Name") == cfg.docker_network:
            found["network"] = obj
        elif "RepoTags" in obj and is_image(obj, cfg.image):
            found["image"] = obj
    return found


def merge_json(current: dict, wanted: dict) -> dict:
    """``current`` with ``wanted``'s keys merged in (nested objects merge too)."""
    merged = dict(current)
    for key, value in wanted.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_json(merged[key], value)
        else:
            merged[key] = value
    return merged


class DockerStep(Step):
    name = "docker"
    fragments = ("host", "docker")

    def plan(self, run) -> list[Action]:
        facts, cfg = run.facts, run.cfg
        actions = []
        binaries = facts.text("docker.bin")
        if "/docker\n" not in binaries + "\n" or "dockerd" not in binaries:
            actions.append(Action("install", "install docker.io (apt-get update; apt-get install -y docker.io)"))
        raw = facts.text("docker.daemon_json").strip()
        try:
            current = json.loads(raw) if raw else {}
        except ValueError:
            raise StepFailed("/etc/docker/daemon.json is not valid JSON; fix it by hand "
                             "(xcatfab merges keys, it never overwrites the file)") from None
        if not isinstance(current, dict):
            raise StepFailed("/etc/docker/daemon.json is not a JSON object; fix it by hand")
        merged = merge_json(current, cfg.docker_daemon_json)
        if merged != current:
            keys = ", ".join(sorted(k for k in cfg.docker_daemon_json if current.get(k) != merged[k]))
            actions.append(Action("daemon_json", f"merge {keys} into /etc/docker/daemon.json",
                                  {"content": json.dumps(merged, indent=2, sort_keys=True) + "\n"}))
        down = engine_error(facts)
        if actions or down:
            why = f" (now: {down})" if down and not actions else ""
            actions.append(Action("restart", f"(re)start dockerd with: {cfg.docker_restart}{why}"))
        return actions

    def apply(self, run, actions) -> None:
        kinds = {a.kind for a in actions}
        daemon_json = next((a.data["content"] for a in actions if a.kind == "daemon_json"), "")
        run.remote.template(
            "host/docker-apply.sh.j2", step=self.name, check=True,
            stdin=daemon_json, install="install" in kinds, write_daemon_json=bool(daemon_json),
            restart=run.cfg.docker_restart if "restart" in kinds else "",
        )
