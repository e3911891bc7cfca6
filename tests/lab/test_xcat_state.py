"""The admin's xCAT is the admin's (issue 11): what survives, what xcatfab sets back, any image, mirrors.

Checked by independent means: ``tabdump`` and ``cat`` run with the docker CLI on
the host's own engine, TCP from the controller, the registry's own log.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import time

import pytest

from tests.lab.fabrun import fab, recap, tcp_answers
from tests.labkit.common import SITE_PACKAGE, SITE_REPO
from tests.labkit.netns.hosts import DOCKER_CLIENT

ASSETS = os.path.join(os.path.dirname(__file__), "assets")


def network_row(docker_on, host, net):
    out = docker_on(host, "exec", "xcatmn", "sh", "-c", ". /etc/profile.d/xcat.sh; tabdump networks").stdout
    header = out.splitlines()[0].lstrip("#").split(",")
    for line in out.splitlines()[1:]:
        fields = next(csv.reader([line]))
        row = dict(zip(header, fields))
        if row.get("net") == net:
            return row
    return None


def site(docker_on, host):
    out = docker_on(host, "exec", "xcatmn", "sh", "-c", ". /etc/profile.d/xcat.sh; tabdump site").stdout
    return dict(re.findall(r'^"([^"]+)","([^"]*)"', out, re.M))


def wait_xcatd(docker_on, host, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = docker_on(host, "exec", "xcatmn", "bash", "-c", "(exec 3<>/dev/tcp/127.0.0.1/3001)", check=False)
        if probe.returncode == 0:
            return True
        time.sleep(0.5)
    return False


@pytest.fixture
def deployed(lab, test_hosts):
    host = test_hosts[0]
    lab.reset_host(host)
    proc = fab("-H", host, "deploy", "--inventory", str(lab.inventory))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    yield host
    lab.reset_host(host)


def test_admin_edits_survive_restarts_redeploys_and_owned_keys_are_set_back(lab, deployed, docker_on, ssh_run):
    host, inv = deployed, str(lab.inventory)
    subnet = "198.18.0.0"
    # The admin's day one: a dynamic range on the container's network, a network of their own,
    # a site key of their own, a node, a hosts line (makehosts writes there).
    docker_on(host, "exec", "xcatmn", "sh", "-c", ". /etc/profile.d/xcat.sh; "
              "chtab netname=198_18_0_0-255_255_255_0 networks.dynamicrange=198.18.0.200-198.18.0.220 "
              "networks.tftpserver=198.18.0.111; "
              "mkdef -t network -o storage net=10.77.0.0 mask=255.255.0.0 mgtifname=eth1; "
              "chdef -t site forwarders=198.18.0.1 dhcpinterfaces=eth0; "
              "mkdef -t node cn01 groups=compute mgt=ipmi; "
              "echo '198.18.0.201 cn01' >>/etc/hosts")

    def admin_state_is_there():
        row = network_row(docker_on, host, subnet)
        assert row and row["dynamicrange"] == "198.18.0.200-198.18.0.220" and row["tftpserver"] == "198.18.0.111"
        assert network_row(docker_on, host, "10.77.0.0") is not None
        values = site(docker_on, host)
        assert values["forwarders"] == "198.18.0.1" and values["dhcpinterfaces"] == "eth0"
        assert "cn01" in docker_on(host, "exec", "xcatmn", "sh", "-c", ". /etc/profile.d/xcat.sh; nodels").stdout
        hosts = docker_on(host, "exec", "xcatmn", "cat", "/etc/hosts").stdout
        assert "198.18.0.201 cn01" in hosts and re.search(r"^198\.18\.0\.\d+\s+xcatmn\.cluster xcatmn$", hosts, re.M)

    admin_state_is_there()
    docker_on(host, "restart", "xcatmn")
    assert wait_xcatd(docker_on, host)
    admin_state_is_there()
    ssh_run(host, f"{lab.host(host).restart_dockerd}")  # dockerd restarted under the container
    assert wait_xcatd(docker_on, host, timeout=180)
    admin_state_is_there()
    again = fab("-H", host, "deploy", "--inventory", inv)
    assert again.returncode == 0 and recap(again, host)[1:] == (0, 0), again.stdout + again.stderr
    admin_state_is_there()

    # A key xcatfab owns, edited by the admin: --plan shows it, deploy sets it back saying so.
    docker_on(host, "exec", "xcatmn", "sh", "-c", ". /etc/profile.d/xcat.sh; chdef -t site master=198.18.0.250")
    plan = fab("-H", host, "deploy", "--plan", "--inventory", inv)
    assert "site: master 198.18.0.250 -> " in plan.stdout and "set back" in plan.stdout, plan.stdout
    fixed = fab("-H", host, "deploy", "--inventory", inv)
    assert fixed.returncode == 0 and "set back: xcatfab owns site master" in fixed.stdout, fixed.stdout
    assert site(docker_on, host)["master"] == lab.host(host).container_ip
    admin_state_is_there()


@pytest.fixture(scope="module")
def foreign_images(lab, tmp_path_factory):
    """An xCAT image xcatfab did not build (the stand-in package, xcatd -f as PID 1, none of
    xcatfab's files), and an image with no xCAT at all: built on the controller's engine,
    saved as tarballs and pushed to the lab's registry."""
    env = dict(os.environ, DOCKER_HOST=lab.controller_docker_host)
    work = tmp_path_factory.mktemp("foreign")
    built = {}
    for name, tag in (("foreign-image", "foreign/xcat:1"), ("not-xcat-image", "foreign/notxcat:1")):
        context = work / name
        shutil.copytree(os.path.join(ASSETS, name), context)
        if name == "foreign-image":
            debs = sorted((lab.state_dir / "repo" / "xcat-core" / "pool" / "main").glob("xcat_*_all.deb"))
            assert debs, "the lab repo has no stand-in package"
            shutil.copy(debs[-1], context / "xcat.deb")
        run = subprocess.run([DOCKER_CLIENT, "build", "-q", "-t", tag, str(context)], capture_output=True,
                             text=True, env=env, timeout=900)
        assert run.returncode == 0, run.stdout + run.stderr
        tarball = work / f"{name}.tar"
        subprocess.run([DOCKER_CLIENT, "save", "-o", str(tarball), tag], check=True, env=env, timeout=600)
        ref = f"{lab.registry}/{tag}"
        subprocess.run([DOCKER_CLIENT, "tag", tag, ref], check=True, env=env)
        pushed = subprocess.run([DOCKER_CLIENT, "push", ref], capture_output=True, text=True, env=env, timeout=600)
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        built[name] = {"tag": tag, "tarball": str(tarball), "ref": ref}
    return built


@pytest.mark.parametrize("source", ["load", "pull"])
def test_an_image_xcatfab_did_not_build_deploys_from_bare(lab, test_hosts, foreign_images, docker_on, source):
    host = test_hosts[1]
    lab.reset_host(host, images=True)
    image = foreign_images["foreign-image"]
    sets = ["--set", f"image_source={source}"]
    sets += (["--set", f"image={image['tag']}", "--set", f"image_tarball={image['tarball']}"] if source == "load"
             else ["--set", f"image={image['ref']}"])
    try:
        started = time.monotonic()
        proc = fab("-H", host, "deploy", "--inventory", str(lab.inventory), *sets)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert time.monotonic() - started < 150  # readiness is xcatd answering, not a file only we write
        ip = lab.host(host).container_ip
        assert tcp_answers(ip), f"{ip}:3001"
        assert site(docker_on, host)["master"] == ip
        row = network_row(docker_on, host, "198.18.0.0")
        assert row and row["comments"] == "xcatfab"
        loops = docker_on(host, "exec", "xcatmn", "sh", "-c", "ls /dev/loop[0-9]* | wc -l").stdout.strip()
        assert int(loops) >= 8  # made from the host: this image makes none
        again = fab("-H", host, "deploy", "--inventory", str(lab.inventory), *sets)
        assert again.returncode == 0 and recap(again, host)[1:] == (0, 0), again.stdout
    finally:
        lab.reset_host(host, images=True)


def test_an_image_without_xcat_fails_in_bounded_time_saying_what_is_missing(lab, test_hosts, foreign_images):
    host = test_hosts[1]
    lab.reset_host(host, images=True)
    image = foreign_images["not-xcat-image"]
    try:
        started = time.monotonic()
        proc = fab("-H", host, "deploy", "--inventory", str(lab.inventory), "--set", "image_source=load",
                   "--set", f"image={image['tag']}", "--set", f"image_tarball={image['tarball']}",
                   "--set", "ready_timeout=20")
        took = time.monotonic() - started
        assert proc.returncode == 1, proc.stdout + proc.stderr
        failed = [line for line in proc.stdout.splitlines() if "failed: [container]" in line]
        assert len(failed) == 1 and "has no xCAT in it" in failed[0] and "ready_timeout" in failed[0], proc.stdout
        assert took < 120
    finally:
        lab.reset_host(host, images=True)


def test_a_site_mirror_build_from_a_flat_repository_with_its_own_package_name(lab, test_hosts, docker_on):
    host = test_hosts[2]
    lab.reset_host(host, images=True)
    try:
        proc = fab("-H", host, "image", "--inventory", str(lab.inventory), "--set", "image=site/xcat:flat",
                   "--set", f"xcat_core_repo=http://198.18.0.1:8089/{SITE_REPO}", "--set", "apt_suite=./",
                   "--set", "xcat_dep_repo=", "--set", f"xcat_packages={SITE_PACKAGE}", "--set", "gpgcheck=false")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        listing = docker_on(host, "run", "--rm", "--entrypoint", "dpkg-query", "site/xcat:flat",
                            "-W", "-f", "${Package} ${Status}\n", SITE_PACKAGE).stdout
        assert listing.strip() == f"{SITE_PACKAGE} install ok installed", listing
        sources = docker_on(host, "run", "--rm", "--entrypoint", "cat", "site/xcat:flat",
                            "/etc/apt/sources.list.d/xcat.list").stdout
        assert f"deb [trusted=yes] http://198.18.0.1:8089/{SITE_REPO} ./" in sources
    finally:
        lab.reset_host(host, images=True)
