"""Image sources end to end: `inv build-image` on the controller's engine, then
`ship` (docker save | docker load over SSH), `load` (a tarball) and `pull`
(from the lab's registry) to lab hosts.

The controller's "local" engine is the lab's `labctl` dockerd (STATE/env).
Image IDs are compared with the docker CLI on each engine's own socket; what
the registry served is read from its own access log.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.lab.fabrun import fab, recap

BIN = os.path.dirname(sys.executable)


def controller_env(lab):
    """The environment of commands run against the controller's engine (`inv build-image`, docker)."""
    return dict(os.environ, DOCKER_HOST=lab.controller_docker_host)


def run(cmd, env, timeout=900):
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def image_id(env, tag):
    proc = run(["docker", "image", "inspect", "--format", "{{.Id}}", tag], env)
    return proc.stdout.strip() if proc.returncode == 0 else ""


@pytest.fixture(scope="module")
def built(lab):
    """`inv build-image --preset lab` on the controller engine; the second call builds nothing."""
    env = controller_env(lab)
    first = run([os.path.join(BIN, "inv"), "build-image", "--preset", "lab", "--no-cache"], env)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr
    assert "built xcatfab/xcat:standin-lab" in first.stdout
    second = run([os.path.join(BIN, "inv"), "build-image", "--preset", "lab"], env)
    assert second.returncode == 0, second.stderr
    assert "is up to date" in second.stdout and "nothing to build" in second.stdout
    labels = run(["docker", "image", "inspect", "--format",
                  '{{ index .Config.Labels "io.xcatfab.context-hash" }}', "xcatfab/xcat:standin-lab"], env)
    digest = re.search(r"context ([0-9a-f]{16})", second.stdout).group(1)
    assert labels.stdout.strip() == digest
    return image_id(env, "xcatfab/xcat:standin-lab")


def test_build_image_help():
    proc = subprocess.run([os.path.join(BIN, "inv"), "--help", "build-image"], capture_output=True, text=True)
    assert "--tag" in proc.stdout and "--no-cache" in proc.stdout


def test_ship_streams_the_controller_image_and_skips_when_current(lab, test_hosts, built, docker_on):
    host = test_hosts[1]
    lab.reset_host(host, images=True)
    args = ["-H", host, "image", "--inventory", str(lab.inventory), "--set", "image_source=ship"]
    # (`ship` builds with, and saves from, the controller's engine.)
    first = fab(*args, env={"DOCKER_HOST": lab.controller_docker_host}, counts=True)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "changed: [image]" in first.stdout and "docker save | docker load" in first.stdout
    on_host = docker_on(host, "image", "inspect", "--format", "{{.Id}}", "xcatfab/xcat:standin-lab").stdout.strip()
    assert on_host == built
    second = fab(*args, env={"DOCKER_HOST": lab.controller_docker_host}, counts=True)
    assert second.returncode == 0 and "ok: [image]" in second.stdout, second.stdout
    assert re.search(rf"^{host}: connections=1 commands=1$", second.stdout, re.M)


def test_load_from_a_tarball(lab, test_hosts, built, docker_on, tmp_path):
    host = test_hosts[2]
    lab.reset_host(host, images=True)
    env = controller_env(lab)
    tarball = tmp_path / "xcat.tar"
    saved = run(["docker", "save", "-o", str(tarball), "xcatfab/xcat:standin-lab"], env)
    assert saved.returncode == 0, saved.stderr
    args = ["-H", host, "image", "--inventory", str(lab.inventory),
            "--set", "image_source=load", "--set", f"image_tarball={tarball}"]
    first = fab(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "changed: [image]" in first.stdout
    on_host = docker_on(host, "image", "inspect", "--format", "{{.Id}}", "xcatfab/xcat:standin-lab").stdout.strip()
    assert on_host == built
    second = fab(*args)
    assert second.returncode == 0 and "ok: [image]" in second.stdout, second.stdout


def manifest_gets(lab, since: int, host: str, tag: str) -> int:
    """How many manifest requests for ``tag`` the registry logged from ``host``'s address after byte ``since``."""
    log = lab.registry_log.read_bytes()[since:].decode(errors="replace")
    ip = re.escape(lab.host(host).ip)
    return len(re.findall(rf"^{ip} .*\"(?:GET|HEAD) /v2/xcatfab/xcat/manifests/{re.escape(tag)} ", log, re.M))


def test_pull_from_a_registry_by_tag_then_digest_and_a_missing_tag_fails_clearly(lab, test_hosts, built, docker_on):
    env = controller_env(lab)
    ref = f"{lab.registry}/xcatfab/xcat:pulled"
    assert run(["docker", "tag", "xcatfab/xcat:standin-lab", ref], env).returncode == 0
    pushed = run(["docker", "push", ref], env)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    digest = re.search(r"digest: (sha256:[0-9a-f]{64})", pushed.stdout).group(1)
    host = test_hosts[0]
    lab.reset_host(host, images=True)
    inv = str(lab.inventory)

    def image(name):
        return fab("-H", host, "image", "--inventory", inv, "--set", "image_source=pull", "--set", f"image={name}",
                   counts=True)

    since = lab.registry_log.stat().st_size
    first = image(ref)
    assert first.returncode == 0 and recap(first, host)[1:] == (1, 0), first.stdout + first.stderr
    assert f"docker pull {ref}" in first.stdout
    on_host = docker_on(host, "image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()
    assert on_host == built
    assert manifest_gets(lab, since, host, "pulled") >= 1, "the registry never served the host"

    # Present: nothing pulled, one connection and one command.
    since = lab.registry_log.stat().st_size
    again = image(ref)
    assert again.returncode == 0 and recap(again, host)[1:] == (0, 0), again.stdout
    assert re.search(rf"^{host}: connections=1 commands=1$", again.stdout, re.M)
    assert manifest_gets(lab, since, host, "pulled") == 0

    # The same image pinned by digest is recognised from the host's RepoDigests.
    pinned = image(f"{lab.registry}/xcatfab/xcat@{digest}")
    assert pinned.returncode == 0 and recap(pinned, host)[1:] == (0, 0), pinned.stdout

    # A tag the registry does not have: one failed step naming the host and docker's reason.
    missing = image(f"{lab.registry}/xcatfab/xcat:no-such-tag")
    assert missing.returncode == 1 and recap(missing, host)[1:] == (0, 1), missing.stdout + missing.stderr
    failed = [line for line in missing.stdout.splitlines() if "failed: [image]" in line]
    assert len(failed) == 1 and "manifest unknown" in missing.stdout, missing.stdout
    images = docker_on(host, "image", "ls", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert f"{lab.registry}/xcatfab/xcat:no-such-tag" not in images
    lab.reset_host(host, images=True)
