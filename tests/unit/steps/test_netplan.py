"""The bridge across reboots: the host's own netplan files give up the interface.

Planning is pure (facts -> actions); the apply script runs for real, as root,
in a scratch directory standing in for /etc/netplan, through the bridge step's
own ``_write_netplan`` (a local stand-in for the remote runs the rendered text
with ``sh``), with a stand-in ``netplan`` on PATH that accepts or refuses.
"""

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from tasks.ops import teardown
from tasks.runtime.errors import StepFailed
from tasks.runtime.templating import render
from tasks.steps import bridge, netplan
from tests.unit.factshapes import AFTER, BEFORE, facts, run_for
from tests.unit.factshapes import plan_cfg as cfg

OURS = "/etc/netplan/90-xcatfab-mydocker0.yaml"
INSTALLER = """network:
  version: 2
  renderer: networkd
  ethernets:
    eth0:
      addresses: [198.18.0.11/24]
      routes:
        - to: default
          via: 198.18.0.1
"""
TWO_NICS = """network:
  version: 2
  ethernets:
    eth0:
      addresses: [198.18.0.11/24]
    eth1:
      dhcp4: true
"""
DHCP = """network:
  ethernets:
    eth0:
      dhcp4: true
"""


def files(**by_path):
    """The ``bridge.netplan_files`` section: ``=== path`` then each file's text."""
    return "".join(f"=== {path}\n{text}" for path, text in by_path.items())


def host(sections=None, base=AFTER, **by_path):
    return facts(**base, bridge__netplan="present=yes",
                 bridge__netplan_files=files(**by_path), **(sections or {}))


def test_the_host_files_that_define_the_interface_are_found_and_no_other():
    f = host(**{"/etc/netplan/00-installer-config.yaml": INSTALLER, "/etc/netplan/60-other.yaml":
                "network:\n  ethernets:\n    eth1: {dhcp4: true}\n", OURS: "network: {}\n"})
    assert list(netplan.defining(cfg(), f, OURS)) == ["/etc/netplan/00-installer-config.yaml"]
    assert netplan.host_files(f)["/etc/netplan/00-installer-config.yaml"] == INSTALLER


def test_a_file_that_defined_only_the_interface_is_removed_another_keeps_the_rest():
    assert netplan.without_interface("a.yaml", INSTALLER, "eth0") is None
    rest = yaml.safe_load(netplan.without_interface("b.yaml", TWO_NICS, "eth0"))
    assert rest == {"network": {"version": 2, "ethernets": {"eth1": {"dhcp4": True}}}}


def test_the_plan_names_every_host_file_it_changes_and_shows_the_diff():
    f = host(**{"/etc/netplan/00-installer-config.yaml": INSTALLER, "/etc/netplan/50-cloud-init.yaml": TWO_NICS})
    (action,) = [a for a in bridge.BridgeStep().plan(run_for(cfg(), f)) if a.kind == "netplan"]
    assert "remove /etc/netplan/00-installer-config.yaml" in action.summary
    assert "rewrite /etc/netplan/50-cloud-init.yaml" in action.summary
    assert [d[0] for d in action.diffs] == [OURS, "/etc/netplan/00-installer-config.yaml",
                                           "/etc/netplan/50-cloud-init.yaml"]


def test_a_taken_over_host_is_converged():
    """After the takeover the host's files no longer define eth0: nothing more to do there."""
    first = host(**{"/etc/netplan/00-installer-config.yaml": INSTALLER})
    (action,) = [a for a in bridge.BridgeStep().plan(run_for(cfg(), first)) if a.kind == "netplan"]
    after = host({"bridge__netplan_file": action.data["content"]}, **{OURS: action.data["content"]})
    assert [a for a in bridge.BridgeStep().plan(run_for(cfg(), after)) if a.kind == "netplan"] == []


def test_an_address_from_dhcp_is_refused_before_anything_changes():
    f = host(base=BEFORE, **{"/etc/netplan/50-cloud-init.yaml": DHCP})
    with pytest.raises(StepFailed, match="50-cloud-init.yaml"):
        bridge.BridgeStep().preflight(run_for(cfg(), f))


def test_invalid_yaml_in_a_host_file_is_one_line():
    f = host(**{"/etc/netplan/01-bad.yaml": "network: [\n"})
    with pytest.raises(StepFailed, match="01-bad.yaml is not valid YAML"):
        netplan.defining(cfg(), f, OURS)


def test_teardown_restore_puts_the_host_files_back():
    f = facts(bridge__netplan_backup="/etc/netplan/00-installer-config.yaml\n"
                                     "/etc/netplan/00-installer-config.yaml\n")
    actions, _note = teardown.restore_plan(cfg(), f)
    (action,) = [a for a in actions if a.kind == "host_netplan"]
    assert action.data["paths"] == ["/etc/netplan/00-installer-config.yaml"]


# ------------------------------------------------------------ the script, for real
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the state directory check wants root's directories")


@pytest.fixture
def scratch():
    """A root-owned 0700 directory outside /tmp (the state directory check refuses a 1777 parent)."""
    base = Path("/run") if os.access("/run", os.W_OK) else Path.home()
    path = Path(tempfile.mkdtemp(prefix="xcatfab-netplan-", dir=base))
    path.chmod(0o700)
    (path / "netplan").mkdir()
    (path / "bin").mkdir()
    yield path
    shutil.rmtree(path)


def fake_netplan(scratch: Path, output: str) -> None:
    tool = scratch / "bin" / "netplan"
    tool.write_text(f"#!/bin/sh\nprintf '%s\\n' {output!r}\nexit 0\n")
    tool.chmod(0o755)


class LocalRemote:
    """The remote's ``template`` run here with sh (state and cloud-init directories in the scratch one)."""

    def __init__(self, scratch: Path):
        self.scratch = scratch

    def template(self, name, /, step, check, stdin="", **context):
        cloud = self.scratch / "cloud"
        context.update(cloud_init_cfg=str(cloud / "99.cfg"), cloud_init_dir=str(cloud),
                       state_dir=str(self.scratch / "state"))
        env = dict(os.environ, PATH=f"{self.scratch / 'bin'}:{os.environ['PATH']}")
        done = subprocess.run(["sh", "-c", render(name, **context)], input=stdin, text=True, capture_output=True,
                              env=env)
        if check and done.returncode:
            raise StepFailed(done.stderr.strip())
        return done


def apply(scratch: Path, host_files: dict, monkeypatch):
    """Plan against ``host_files`` (written into the scratch netplan dir), then the step's own write."""
    paths = {}
    for name, text in host_files.items():
        path = scratch / "netplan" / name
        path.write_text(text)
        paths[str(path)] = text
    c = cfg()
    ours = str(scratch / "netplan" / "90-xcatfab-mydocker0.yaml")
    changes = netplan.takeover(c, host({}, **paths), ours)
    content = bridge.render_netplan(c, "198.18.0.11/24", "198.18.0.1", "02:58:46:00:00:0b")
    run = run_for(c, host())
    run.remote = LocalRemote(scratch)
    data = {"content": content, "changes": changes, "fresh": True}
    monkeypatch.setattr(bridge, "netplan_file", lambda _cfg: ours)
    bridge.BridgeStep._write_netplan(run, data)
    return Path(ours), content


@needs_root
def test_the_takeover_rewrites_the_host_files_and_keeps_byte_exact_copies(scratch, monkeypatch):
    fake_netplan(scratch, "")
    ours, content = apply(scratch, {"00-installer-config.yaml": INSTALLER, "50-cloud-init.yaml": TWO_NICS}, monkeypatch)
    assert ours.read_text() == content and stat.S_IMODE(ours.stat().st_mode) == 0o600
    assert not (scratch / "netplan" / "00-installer-config.yaml").exists()
    kept = yaml.safe_load((scratch / "netplan" / "50-cloud-init.yaml").read_text())
    assert kept["network"]["ethernets"] == {"eth1": {"dhcp4": True}}
    backup = scratch / "state" / "netplan-backup"
    assert (backup / str(scratch / "netplan" / "00-installer-config.yaml").replace("/", "_")).read_text() == INSTALLER
    assert (backup / str(scratch / "netplan" / "50-cloud-init.yaml").replace("/", "_")).read_text() == TWO_NICS
    assert (scratch / "cloud" / "99.cfg").read_text() == "network: {config: disabled}\n"
    assert stat.S_IMODE((scratch / "state").stat().st_mode) == 0o700


@needs_root
def test_a_result_netplan_refuses_puts_everything_back(scratch, monkeypatch):
    fake_netplan(scratch, "Error: Conflicting default route declarations for IPv4")
    with pytest.raises(StepFailed, match="netplan generate refused the bridge's file, everything put back"):
        apply(scratch, {"00-installer-config.yaml": INSTALLER, "50-cloud-init.yaml": TWO_NICS}, monkeypatch)
    assert (scratch / "netplan" / "00-installer-config.yaml").read_text() == INSTALLER
    assert (scratch / "netplan" / "50-cloud-init.yaml").read_text() == TWO_NICS
    assert not (scratch / "netplan" / "90-xcatfab-mydocker0.yaml").exists()
    assert not (scratch / "cloud" / "99.cfg").exists()
