"""``fab status``: one table row per host — docker, image, bridge, container, address, xcatd, ISOs, media.

Each host is read in one round trip: the step fact fragments plus the
``admin`` fragment (templates/host/facts/admin.sh.j2: the engine version, the
netns watcher, the media trees under /install, and a real TCP connection from
the host to xcatd's port on the static address). :func:`status_row` is pure:
it turns those facts into the row, with every problem found spelt out.
"""

from __future__ import annotations

import sys
import time

from ..runtime.errors import StepFailed, one_line
from ..runtime.facts import Facts, gather
from ..runtime.report import FAILED, OK, HostReport, StepResult
from ..runtime.ssh import ConnectError, ConnectOptions, connect
from ..steps.bridge import move_needed
from ..steps.container import container_addresses, container_diff
from ..steps.docker import engine_error, inspected
from ..steps.hostnet import ipv4, links
from ..steps.iso.hostfacts import copied_media, host_files
from .deploy import fact_context

STATUS_COLUMNS = ("host", "docker", "image", "bridge", "container", "address", "xcatd", "ISOs", "media", "problems")
ARCHES = ("x86_64", "ppc64le", "ppc64", "aarch64", "s390x", "armv7l", "i386", "i686")
#: Every fragment status reads, in one round trip.
STATUS_FRAGMENTS = ("host", "docker", "bridge", "container", "iso", "admin")


def read_facts(remote, cfg, fragments=STATUS_FRAGMENTS) -> Facts:
    """The step fragments and the ``admin`` sections, in ONE round trip."""
    return gather(remote, tuple(fragments) + ("admin",), fact_context(cfg))


def _size(n: float) -> str:
    """A byte count as a short human size (``3.6G``)."""
    for unit in ("B", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def staged_isos(facts: Facts) -> list:
    """(name, size) of the ISOs in iso_dir."""
    return [(name, f.size) for name, f in sorted(host_files(facts).items())
            if name.lower().endswith(".iso")]


def media_trees(facts: Facts) -> list:
    """``distro/arch`` trees copycds filled under /install (and those the iso step recorded)."""
    media = [m for m in facts.lines("admin.media") if m.rsplit("/", 1)[-1] in ARCHES]
    for copied in copied_media(facts).values():
        tree = f"{copied.distro}/{copied.arch}"
        if copied.install and tree not in media:
            media.append(tree)
    return sorted(media)


def _docker(cfg, facts: Facts, row: dict, problems: list) -> bool:
    """The docker cell; True when the engine answers."""
    down = engine_error(facts)
    version = facts.text("admin.docker").strip()
    if "dockerd" not in facts.text("docker.bin") and not version:
        row["docker"] = "not installed"
        return False
    if down:
        row["docker"] = "down"
        problems.append(down)
        return False
    row["docker"] = f"{version or '?'} up"
    return True


def _bridge(cfg, facts: Facts, row: dict, problems: list) -> None:
    try:
        diffs = move_needed(cfg, facts)
    except StepFailed as exc:
        diffs = [str(exc)]
    bridge = links(facts).get(cfg.bridge)
    if bridge is None:
        row["bridge"] = f"{cfg.bridge} missing"
        return
    addrs = ", ".join(str(a) for a in ipv4(bridge)) or "no address"
    row["bridge"] = f"{cfg.bridge} ({cfg.mgmt_interface}, {addrs})"
    if diffs:
        row["bridge"] += " differs"
        problems.append("bridge: " + "; ".join(diffs))


def _container(cfg, ctr, image, row: dict, problems: list) -> None:
    if ctr is None:
        row["container"] = f"{cfg.container_name} missing"
        return
    state = ctr.get("State") or {}
    health = (state.get("Health") or {}).get("Status")
    row["container"] = f"{cfg.container_name} {state.get('Status') or '?'}" + (f" ({health})" if health else "")
    drift = container_diff(cfg, ctr, image) if cfg.container_ip else []
    if drift:
        row["container"] += " differs"
        problems.append("container: " + "; ".join(drift))


def _address(cfg, facts: Facts, ctr, row: dict, problems: list) -> None:
    want = cfg.container_ip
    have = container_addresses(facts) if ctr is not None else []
    if want is None:
        row["address"] = "container_ip unset"
    elif want in have:
        row["address"] = str(want)
    else:
        row["address"] = f"missing ({want})"
        if ctr is not None and (ctr.get("State") or {}).get("Running"):
            problems.append(f"address: {want} not in the container (has {', '.join(map(str, have)) or 'none'})")


def _xcatd(cfg, facts: Facts, row: dict, problems: list) -> None:
    port = facts.kv("admin.port")
    listening = facts.kv("ctr.ready").get("xcatd") == "up"
    if port.get("running") != "yes":
        row["xcatd"] = "-"
    elif port.get("connect") == "yes":
        row["xcatd"] = f"answering on {cfg.container_ip.ip if cfg.container_ip else '?'}:3001"
    elif listening:
        row["xcatd"] = "listening, no answer" if port.get("connect") == "no" else "listening"
        if port.get("connect") == "no":
            problems.append("xcatd: listens on 3001 but the host cannot connect to it")
    else:
        row["xcatd"] = "down"
        problems.append("xcatd: nothing listens on 3001 in the container")


def status_row(cfg, facts: Facts) -> dict:
    """One host's status table row from its facts (pure: unit-tested with recorded facts)."""
    row, problems = {"host": cfg.name}, []
    up = _docker(cfg, facts, row, problems)
    objs = inspected(facts, cfg) if up else {"container": None, "image": None, "network": None}
    image, ctr = objs["image"], objs["container"]
    row["image"] = f"{cfg.image} {image['Id'].removeprefix('sha256:')[:12]}" if image else f"{cfg.image} missing"
    _bridge(cfg, facts, row, problems)
    _container(cfg, ctr, image, row, problems)
    _address(cfg, facts, ctr, row, problems)
    _xcatd(cfg, facts, row, problems)
    row["ISOs"] = ", ".join(f"{name} ({_size(size)})" for name, size in staged_isos(facts)) or "none"
    row["media"] = ", ".join(media_trees(facts)) or "none"
    row["problems"] = "; ".join(problems)
    return row


def unread_row(cfg, why: str) -> dict:
    """The row of a host that could not be read: ``?`` everywhere, and why."""
    return dict({c: "?" for c in STATUS_COLUMNS}, host=cfg.name, problems=why)


def read_status(cfg, options: ConnectOptions) -> HostReport:
    """One host's row, in a report (its ``detail``); an unreachable host's row says why. Never raises."""
    report = HostReport(cfg.name)
    started = time.monotonic()
    try:
        remote = connect(cfg, options)
    except ConnectError as exc:
        report.detail = unread_row(cfg, f"{exc.step}: {exc.message}")
        report.add(StepResult("connect", FAILED, error=exc.message))
        report.finished = time.monotonic()
        return report
    try:
        report.detail = status_row(cfg, read_facts(remote, cfg))
        report.add(StepResult("status", OK, seconds=time.monotonic() - started))
    except Exception as exc:
        why = f"{type(exc).__name__}: {one_line(exc)}"
        report.detail = unread_row(cfg, f"facts: {why}")
        report.add(StepResult("facts", FAILED, error=why))
    finally:
        report.commands, report.connections = remote.commands, 1
        remote.close()
    report.finished = time.monotonic()
    return report


def print_status(rows: list, stream=None) -> None:
    """One table, a row per host (rich), wide enough that no cell wraps."""
    from rich.console import Console
    from rich.table import Table

    stream = stream or sys.stdout
    grid = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for column in STATUS_COLUMNS:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*(str(row.get(c, "")) for c in STATUS_COLUMNS))
    needed = sum(max(len(c), *(len(str(r.get(c, ""))) for r in rows)) + 2 for c in STATUS_COLUMNS)
    Console(file=stream, width=max(120, needed), highlight=False, soft_wrap=True).print(grid)
