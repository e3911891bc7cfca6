"""Step ``iso``: OS media staged into the host's iso_dir, verified, then ``copycds``.

* **Plan**: stage an ISO the host lacks or holds with another size or sum;
  hash a same-size file xcatfab has no valid record of; copycds media not yet
  copied (or copied as another distro/arch than the inventory says).
* **Apply**: stage (:mod:`.delivery`, imported only then), then ``copycds`` in the container
  (``-n``/``-a`` from the inventory when given), reporting distro, arch and
  the osimages it created, and recording the media.
"""

from __future__ import annotations

import re
from typing import Optional

from ...runtime.errors import BadInput
from ...runtime.executor import INTERRUPTED
from ...runtime.facts import parse_sections
from ...runtime.guarded import Interrupted
from ..base import Action, Step, StepFailed
from ..docker import inspected
from .hostfacts import copied_media, find_time_ns, host_files, host_parts, is_copied, staged_sum
from .local import SHA256, LocalIso, local_sum, mib, resolve_specs, validate_local
from .sources import SOURCES, IsoOptions


def options_for(run) -> IsoOptions:
    """What the ``iso`` task asked of this host's step (deploy: the defaults)."""
    return run.step_options.get("iso") or IsoOptions()


def wanted(run) -> list[LocalIso]:
    """The ISOs this run stages: the task's, else the inventory's (validated once per run)."""
    opts = options_for(run)
    if opts.isos is not None:
        return opts.isos
    if "iso.local" not in run.shared:
        try:
            run.shared["iso.local"] = validate_local(resolve_specs(run.cfg.isos),
                                                     where=run.cfg.where("isos"))
        except BadInput as exc:
            raise StepFailed(str(exc)) from None
    return run.shared["iso.local"]


class IsoStep(Step):
    """Stage the ISOs into iso_dir (verified, resumable, relayed) and copycds them."""

    name = "iso"
    fragments = ("host", "docker", "iso")

    def plan(self, run) -> list[Action]:
        isos = wanted(run)
        if not isos:
            return []
        opts = options_for(run)
        actions = []
        for iso in isos:
            staging, media_sum = self._staging(run.facts, iso)
            actions.extend(staging)
            if opts.copycds and not (media_sum and is_copied(copied_media(run.facts).get(media_sum), iso)):
                actions.append(Action("copycds", f"copycds {' '.join(iso.copycds_args())}", {"iso": iso}))
        return actions

    @staticmethod
    def _staging(facts, iso: LocalIso) -> tuple[list, Optional[str]]:
        """(what staging ``iso`` takes, the sum of the host's copy when it is the wanted one)."""
        found = host_files(facts).get(iso.name)
        have = staged_sum(facts, iso.name)
        if found is not None and found.size == iso.size and have:
            want = iso.sha256 or local_sum(iso)  # hashed here at most once per local file
            if have == want:
                return [], have
            return [Action("stage", f"stage {iso.name} ({mib(iso.size)}): the host's copy has "
                                    f"sha256 {have[:12]}…, not {want[:12]}…", {"iso": iso})], None
        if found is not None and found.size == iso.size:
            return [Action("check", f"hash {iso.name} on the host (no record of it) and "
                                    "restage it if it differs", {"iso": iso})], None
        why = "missing" if found is None else f"size {found.size} -> {iso.size}"
        part = host_parts(facts).get(iso.name)
        part_file = host_files(facts).get(iso.name + ".part")
        if part and part_file and part[0] == iso.tag and part[1] == iso.size and part_file.size:
            why += f", resume after {mib(part_file.size)}"
        return [Action("stage", f"stage {iso.name} ({mib(iso.size)}, {why})", {"iso": iso})], None

    def apply(self, run, actions) -> None:
        by_kind = {kind: [a.data["iso"] for a in actions if a.kind == kind] for kind in ("check", "stage", "copycds")}
        sums = self._stage_all(run, by_kind["check"], by_kind["stage"])
        for iso in by_kind["copycds"]:
            digest = sums.get(iso.name) or staged_sum(run.facts, iso.name) or local_sum(iso)
            if is_copied(copied_media(run.facts).get(digest), iso):
                continue  # the hash just taken shows this media was copied already
            if INTERRUPTED.is_set():
                raise Interrupted(f"{run.cfg.name}: copycds {iso.name}: interrupted (Ctrl-C) before it ran",
                                  f"interrupted: {iso.name} is staged and verified, copycds not run; to finish: "
                                  f"fab -H {run.cfg.name} iso --src {iso.path}")
            copycds(run, iso, digest)

    def remember(self, run) -> None:
        """The host holds these ISOs, verified: hosts staged after it in this run may pull them from it."""
        for iso in wanted(run):
            have = staged_sum(run.facts, iso.name)
            if have and have == local_sum(iso):
                SOURCES.add(iso.key, run.cfg, have)

    @staticmethod
    def _stage_all(run, checks: list, stages: list) -> dict:
        """Hash the unrecorded same-size copies, stage what is missing; the sums by ISO name."""
        from .delivery import stage  # the transfer machinery: only when something is staged

        opts = options_for(run)
        relay, host = opts.relay, run.cfg.name
        if relay is not None:
            relay.declare(host, {iso.key for iso in checks + stages})
        sums: dict = {}
        try:
            for iso in checks:
                digest = check_on_host(run, iso)
                if digest is None:
                    stages.append(iso)
                    continue
                sums[iso.name] = digest
                if relay is not None:
                    relay.skip(host, iso.key)
            # One global order (the relay's), so hosts waiting for each other never wait in a circle.
            for iso in sorted(stages, key=lambda i: i.key):
                sums[iso.name] = stage(run, iso, opts)
        finally:
            if relay is not None:
                relay.leave(host)
        return sums


# ============================================================== copycds
def container_running(run) -> bool:
    ctr = inspected(run.facts, run.cfg)["container"]
    return bool(ctr and (ctr.get("State") or {}).get("Running"))


def osimage_names(text: str) -> list[str]:
    """Names from ``lsdef -t osimage`` (``NAME  (osimage)`` lines)."""
    return [line.split()[0] for line in text.splitlines() if line.strip().endswith("(osimage)")]


NO_LOOP_HINT = ("copycds loop-mounts the ISO: run the container with privileged=true, or keep the loop "
                "device cgroup rules with loop_devices > 0, and check that the host has loop devices "
                "(modprobe loop)")


def copycds(run, iso: LocalIso, digest: str) -> None:
    """Run copycds for one staged ISO in the container, report and record what it copied."""
    cfg = run.cfg
    if not container_running(run):
        raise StepFailed(f"{cfg.name}: copycds {iso.name}: container {cfg.container_name} is not running "
                         "(deploy the host, or stage only with --no-copycds)")
    result = run.remote.template("host/iso-copycds.sh.j2", step="iso", timeout=3600, loops=cfg.loop_devices,
                                 container=cfg.container_name, name=iso.name, args=iso.copycds_args())
    out = parse_sections(result.out)
    text = _copycds_output(cfg, iso, out, result)
    dest = re.findall(r"Copying media to (\S+)", text)
    match = re.fullmatch(r"/install/([^/]+)/([^/]+)/?", dest[-1]) if dest else None
    if not match:
        raise StepFailed(f"{cfg.name}: copycds {iso.name}: copied to {dest[-1] if dest else 'an unknown place'}, "
                         "not /install/<distro>/<arch> (is site.installdir changed?)")
    distro, arch = match.group(1), match.group(2)
    before, after = set(osimage_names(out.get("before", ""))), osimage_names(out.get("after", ""))
    created = [name for name in after if name not in before]
    mine = [name for name in after if name.startswith(f"{distro}-{arch}-")]
    run.shared.setdefault("iso.copied", []).append(
        {"name": iso.name, "distro": distro, "arch": arch, "created": created, "osimages": mine})
    run.say(f"copycds {iso.name}: {distro} {arch} -> /install/{distro}/{arch}; osimages created: "
            f"{', '.join(created) or 'none (already defined: ' + (', '.join(mine) or '-') + ')'}")
    run.remote.write_file(f"{cfg.state_dir}/iso/copied/{digest}", f"{distro} {arch} {iso.name}\n", step="iso")


def _copycds_output(cfg, iso: LocalIso, out, result) -> str:
    """copycds' output when it succeeded; a one-line StepFailed saying why when it did not."""
    text = out.get("copycds", "").strip()
    if "end" in out and out.get("rc", "").strip() == "0":
        return text
    lines = [line for line in (text or result.tail()).splitlines() if line.strip()]
    if re.search(r"find any loop device|unable to mount", text, re.I):
        raise StepFailed(f"{cfg.name}: copycds {iso.name}: no usable loop device in container "
                         f"{cfg.container_name} ({NO_LOOP_HINT})")
    raise StepFailed(f"{cfg.name}: copycds {iso.name} failed: {' | '.join(lines[-2:]) or result.tail()}")


# ================================================ checking a host's copy
def check_on_host(run, iso: LocalIso) -> Optional[str]:
    """Hash a same-size host file xcatfab has no record of; record it when it is the wanted one.

    Returns its sha256 when it matches (the file stays), None when it must be staged.
    """
    cfg = run.cfg
    result = run.remote.template("host/iso-check.sh.j2", step="iso", timeout=3600,
                                 iso_dir=cfg.iso_dir, name=iso.name)
    lines = result.out.split()
    if not result.ok or len(lines) != 4 or not SHA256.fullmatch(lines[3]):
        return None
    size, mtime, ino, digest = int(lines[0]), find_time_ns(lines[1]), int(lines[2]), lines[3]
    if digest != local_sum(iso) or size != iso.size:
        return None
    run.remote.write_file(f"{cfg.state_dir}/iso/{iso.name}.sha256", f"{digest} {size} {mtime} {ino}\n", step="iso")
    run.say(f"{iso.name}: the host's copy has the wanted sha256, recorded it")
    return digest
