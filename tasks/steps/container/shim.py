"""macvlan mode: the host's shim to its container, and the unit that makes it again at boot.

The shim is a live link only: a reboot takes it away, and until the next deploy the
host could not reach its own container. On a systemd host the shim's script and a
unit (``xcatfab-macvlan-shim.service``) bring it back at every boot; the plan counts
them as part of converged. The ``host.macvlan_shim`` fact section
(templates/host/facts/host.sh.j2) says what is on the host.
"""

from __future__ import annotations

from ...runtime.facts import Facts
from ...runtime.templating import render
from ..base import boot_unit_needed
from .spec import container_ip, shim_name

UNIT = "xcatfab-macvlan-shim.service"


def shim_args(cfg) -> dict:
    """The shim's name, bridge, own address and the container's address."""
    return {"name": shim_name(cfg), "bridge": cfg.bridge, "shim_ip": str(cfg.macvlan_shim_ip),
            "ip": container_ip(cfg)}


def shim_files(cfg) -> tuple[str, str]:
    """(unit, script) that make the shim at every boot."""
    return (render("host/xcatfab-macvlan-shim.service.j2", state_dir=cfg.state_dir, **shim_args(cfg)),
            render("host/macvlan-shim.sh.j2"))


def shim_unit_state(facts: Facts) -> dict:
    return facts.kv("host.macvlan_shim")


def shim_unit_needed(cfg, facts: Facts) -> bool:
    """On a systemd host: the shim's unit is missing, disabled or not xcatfab's current one."""
    return boot_unit_needed(shim_unit_state(facts), *shim_files(cfg))


def shim_unit_left(facts: Facts) -> bool:
    """The unit (or its script) is on the host: something for a mode switch or teardown to remove."""
    state = shim_unit_state(facts)
    return bool(state.get("unit_sha") or state.get("script_sha"))
